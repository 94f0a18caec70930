//! The HTTP side of telemetry: request ids, the request span, the access log line and the
//! request metrics, in one middleware that wraps each listener outermost.

use super::Metrics;
use crate::policy::ratelimit::ClientIpResolver;
use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;

/// The request id header, accepted from trusted proxies and always returned.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest request id accepted from a proxy; longer ones are replaced by a generated id.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The id of the request being served: the one a trusted proxy sent in `x-request-id`, or a
/// generated one. It is in the response header, in every log line of the request (through the
/// `request` span) and, through the services' contexts, in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// The id [`middleware`] gave `req`, if it ran.
    pub fn of(req: &HttpRequest) -> Option<String> {
        req.extensions().get::<RequestId>().map(|id| id.0.clone())
    }
}

impl FromRequest for RequestId {
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    /// The id set by [`middleware`]; without that middleware (unit tests of handlers), a new one.
    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let id = req
            .extensions()
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(|| RequestId(generate()));
        std::future::ready(Ok(id))
    }
}

/// What the middleware of one listener needs; put into the listener's `App` as `web::Data`.
#[derive(Debug, Clone)]
pub struct HttpTelemetry {
    /// Where the request metrics go.
    pub metrics: Arc<Metrics>,
    /// The `listener` label: `public` or `admin`.
    pub listener: &'static str,
    /// Peers whose `x-request-id` is believed: the trusted proxies of `[rate_limit]`.
    pub proxies: ClientIpResolver,
}

/// 128 random bits in hex. Drawn from the OS generator rather than the injected
/// `TokenGenerator`: tests pin the sequence of that one (client ids, tokens), and request ids
/// must not shift it.
fn generate() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A proxy's id is kept only if it is short and made of visible, header- and log-safe ASCII.
fn acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b))
}

fn request_id(req: &ServiceRequest, telemetry: &HttpTelemetry) -> String {
    let from_proxy = req
        .peer_addr()
        .is_some_and(|peer| telemetry.proxies.is_trusted(peer.ip()));
    if from_proxy {
        let mut values = req.headers().get_all(REQUEST_ID_HEADER);
        if let (Some(value), None) = (values.next(), values.next()) {
            if let Some(id) = value.to_str().ok().filter(|id| acceptable(id)) {
                return id.to_owned();
            }
        }
    }
    generate()
}

/// The middleware (`actix_web::middleware::from_fn(telemetry::http::middleware)`): assigns the
/// request id, runs the request inside a `request` span carrying it, writes the access log line
/// (target `registrar::access`, not for the health probes) and counts the request by route
/// pattern. An error of an inner middleware (a CORS refusal) is counted under its status and
/// passed on; actix renders it, without the request id header.
pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(telemetry) = req.app_data::<web::Data<HttpTelemetry>>().cloned() else {
        return next.call(req).await;
    };
    let started = Instant::now();
    let id = request_id(&req, &telemetry);
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", request_id = %id);
    let method = req.method().clone();
    // The path only for the access log line, and only when that line is written.
    let path = tracing::enabled!(target: "registrar::access", tracing::Level::INFO)
        .then(|| req.path().to_owned());
    // The route pattern: after the call, actix knows which resource it routed to and returns
    // its pattern without matching the path again (before routing, `match_pattern` runs the
    // router's regex over the path: BENCHMARKS.md, issue #19). The one exception: an inner
    // middleware's error comes back without the request (the request cannot be cloned before
    // routing), and the only inner middleware that refuses requests is CORS, which looks only
    // at requests with an Origin header; for those the pattern is taken before the call.
    let early = req
        .headers()
        .contains_key(actix_web::http::header::ORIGIN)
        .then(|| req.match_pattern());
    let result = next.call(req).instrument(span.clone()).await;
    let (status, routed) = match &result {
        Ok(response) => (
            response.status(),
            early.is_none().then(|| response.request().match_pattern()),
        ),
        Err(e) => (e.as_response_error().status_code(), None),
    };
    let route = early.flatten().or(routed.flatten());
    let route = route.as_deref().unwrap_or("unmatched");
    let elapsed = started.elapsed();
    telemetry.metrics.http_request(
        telemetry.listener,
        route,
        method.as_str(),
        status.as_u16(),
        elapsed.as_secs_f64(),
    );
    if let (Some(path), true) = (path, route != "/healthz" && route != "/readyz") {
        span.in_scope(|| {
            tracing::info!(
                target: "registrar::access",
                method = %method,
                // The client's text: through the one log escape, so a path cannot end the line.
                path = %crate::logsafe::escaped(&path),
                status = status.as_u16(),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                "request served"
            )
        });
    }
    let mut response = result?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use actix_web::{test, App, HttpResponse};

    fn telemetry(trusted: &[&str]) -> HttpTelemetry {
        let mut rate_limit = Settings::defaults().unwrap().rate_limit;
        rate_limit.trusted_proxies = trusted.iter().map(|s| s.to_string()).collect();
        HttpTelemetry {
            metrics: Arc::new(Metrics::new()),
            listener: "public",
            proxies: ClientIpResolver::new(&rate_limit).unwrap(),
        }
    }

    async fn echo(id: RequestId) -> HttpResponse {
        tracing::info!("inside the handler");
        HttpResponse::Ok().body(id.0)
    }

    async fn call(trusted: &[&str], sent: Option<&str>) -> (String, String) {
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(telemetry(trusted)))
                .wrap(actix_web::middleware::from_fn(middleware))
                .route("/c/{id}", web::get().to(echo)),
        )
        .await;
        let mut req = test::TestRequest::get()
            .uri("/c/abc")
            .peer_addr("10.1.2.3:4000".parse().unwrap());
        if let Some(sent) = sent {
            req = req.insert_header((REQUEST_ID_HEADER, sent));
        }
        let resp = test::call_service(&app, req.to_request()).await;
        let header = resp
            .headers()
            .get(REQUEST_ID_HEADER)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let body = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
        (header, body)
    }

    #[actix_web::test]
    async fn a_trusted_proxy_s_request_id_is_kept_and_returned() {
        let (header, body) = call(&["10.0.0.0/8"], Some("edge-42")).await;
        assert_eq!(header, "edge-42");
        assert_eq!(body, "edge-42");
    }

    #[actix_web::test]
    async fn an_untrusted_peer_s_request_id_is_replaced() {
        let (header, body) = call(&[], Some("edge-42")).await;
        assert_ne!(header, "edge-42");
        assert_eq!(header.len(), 32);
        assert_eq!(header, body);
    }

    #[actix_web::test]
    async fn a_malformed_request_id_from_a_trusted_proxy_is_replaced() {
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for bad in ["with space", "quote\"", long.as_str()] {
            let (header, _) = call(&["10.0.0.0/8"], Some(bad)).await;
            assert_ne!(header, bad);
            assert_eq!(header.len(), 32);
        }
    }

    #[actix_web::test]
    async fn requests_are_counted_by_route_pattern_not_path() {
        let t = telemetry(&[]);
        let metrics = t.metrics.clone();
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(t))
                .wrap(actix_web::middleware::from_fn(middleware))
                .route("/c/{id}", web::get().to(echo)),
        )
        .await;
        for path in ["/c/one", "/c/two", "/nowhere"] {
            test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        }
        let text = metrics.render();
        assert!(text.contains(r#"registrar_http_requests_total{listener="public",method="GET",route="/c/{id}",status="200"} 2"#), "{text}");
        assert!(
            text.contains(r#"route="unmatched",status="404"} 1"#),
            "{text}"
        );
        assert!(!text.contains("/c/one"), "{text}");
    }
}
