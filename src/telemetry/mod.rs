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

    /// Everything in the Prometheus text format, gauges refreshed. A store that cannot count
    /// leaves `registrar_clients` at its last value (and logs why) rather than failing the scrape.
    pub async fn render(&self) -> String {
        match self.registrar.client_count().await {
            Ok(clients) => self.metrics.set_clients(clients),
            Err(e) => tracing::warn!(error = %e, "metrics: cannot count clients"),
        }
        self.metrics
            .set_hash_queue_depth(self.registrar.hash_queue_depth());
        self.metrics.render()
    }
}

/// The `GET /metrics` response (the admin listener's handler checks the token first).
pub async fn metrics_handler(scrape: web::Data<Scrape>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, TEXT_CONTENT_TYPE))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(scrape.render().await)
}

/// The OpenAPI document of the running configuration, rendered once at start.
#[derive(Debug, Clone)]
pub struct OpenApiDocument(pub Arc<str>);

impl OpenApiDocument {
    /// Render the document for `settings` ([`crate::openapi::render`]).
    pub fn new(settings: &crate::settings::Settings) -> Self {
        Self(crate::openapi::render(settings).into())
    }
}

/// `GET /openapi.json` on the admin listener (`web::Data<OpenApiDocument>` in its `App`).
pub async fn openapi_handler(doc: web::Data<OpenApiDocument>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.0.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use actix_web::{test, App};

    #[actix_web::test]
    async fn the_served_openapi_document_is_the_checked_in_file() {
        let settings = Settings::defaults().unwrap();
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(OpenApiDocument::new(&settings)))
                .route("/openapi.json", web::get().to(openapi_handler)),
        )
        .await;
        let resp = test::call_service(
            &app,
            test::TestRequest::get().uri("/openapi.json").to_request(),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        let served = test::read_body(resp).await;
        let file = include_str!("../../openapi.json");
        assert!(
            served == file.as_bytes(),
            "the served document differs from openapi.json"
        );
    }
}
