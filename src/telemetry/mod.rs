//! Operability: the metrics registry ([`Metrics`]), the HTTP middleware that assigns request ids
//! and counts requests ([`http`]), the log format ([`logging`]) and the `/metrics` handler.

pub mod http;
pub mod logging;
mod metrics;

pub use http::{HttpTelemetry, RequestId};
pub use metrics::{Metrics, TEXT_CONTENT_TYPE};

use crate::registration::Registrar;
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use std::sync::Arc;

/// What `GET /metrics` renders: the registry, and the service whose gauges are read at scrape
/// time (client count, hash queue depth) rather than tracked on every change.
#[derive(Clone)]
pub struct Scrape {
    metrics: Arc<Metrics>,
    registrar: Arc<Registrar>,
}

impl Scrape {
    /// Scrape `metrics`, reading the gauges from `registrar`.
    pub fn new(metrics: Arc<Metrics>, registrar: Arc<Registrar>) -> Self {
        Self { metrics, registrar }
    }

    /// Everything in the Prometheus text format, gauges refreshed.
    pub fn render(&self) -> String {
        self.metrics.set_gauges(
            self.registrar.client_count(),
            self.registrar.hash_queue_depth(),
        );
        self.metrics.render()
    }
}

/// `GET /metrics` (mount on the admin listener with `web::Data<Scrape>`).
pub async fn metrics_handler(scrape: web::Data<Scrape>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, TEXT_CONTENT_TYPE))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(scrape.render())
}
