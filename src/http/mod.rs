//! HTTP: routes and thin handlers. Each handler extracts, calls one `Registrar` method and builds
//! the response; decisions live in the service, error mapping in `error.rs`.

pub(crate) mod auth;
pub(crate) mod body;
pub mod error;

pub use body::{parse_object, BodyLimits};
pub use error::PublicError;

use crate::error::RegistrationError;
use crate::events::Origin;
use crate::policy::RegistrationContext;
use crate::registration::Registrar;
use crate::settings::CorsSettings;
use crate::telemetry::RequestId;
use actix_cors::Cors;
use actix_web::http::{header, Method};
use actix_web::{web, HttpRequest, HttpResponse};

use std::sync::Arc;

/// The fixed registration path of Ory Hydra's SDK (`OidcApi`), always served as an alias.
pub const HYDRA_REGISTRATION_PATH: &str = "/oauth2/register";

/// Shared state of the handlers.
pub struct AppState {
    /// The service.
    pub registrar: Arc<Registrar>,
    /// Body limits.
    pub limits: BodyLimits,
}

type State = web::Data<AppState>;
type Response = Result<HttpResponse, PublicError>;

/// A JSON response that no cache may keep (it may carry credentials).
pub(crate) fn json(
    status: actix_web::http::StatusCode,
    body: &impl serde::Serialize,
) -> HttpResponse {
    error::no_store(status).json(body)
}

/// POST {registration_path}: RFC 7591 §3.1.
async fn register(state: State, req: HttpRequest, payload: web::Payload) -> Response {
    // A DPoP-scheme or malformed initial access token is refused, never ignored.
    let context = RegistrationContext {
        initial_access_token: auth::initial_access_token(&req)?,
        client_ip: client_ip(&state, &req),
        request_id: RequestId::of(&req),
    };
    // Before the body is read, so a flood costs no body reads.
    state.registrar.check_rate_limit(&context)?;
    let request = body::json_object(&req, payload, state.limits).await?;
    let origin = origin(&state, &req);
    let response = state
        .registrar
        .register_client(&request, &context, &origin)
        .await?;
    Ok(json(actix_web::http::StatusCode::CREATED, &response))
}

/// A management request's context: only its source address matters there.
fn source(state: &State, req: &HttpRequest) -> RegistrationContext {
    RegistrationContext {
        initial_access_token: None,
        client_ip: client_ip(state, req),
        request_id: RequestId::of(req),
    }
}

/// The socket peer, or the address a trusted proxy reports (the decision is the resolver's).
fn client_ip(state: &State, req: &HttpRequest) -> Option<std::net::IpAddr> {
    client_ip_by(state.registrar.policy().client_ip_resolver(), req)
}

/// The socket peer, or the address a trusted proxy of `resolver` reports.
fn client_ip_by(
    resolver: &crate::policy::ratelimit::ClientIpResolver,
    req: &HttpRequest,
) -> Option<std::net::IpAddr> {
    let peer = req.peer_addr()?.ip();
    let values: Vec<&str> = match resolver.header() {
        Some(name) => req
            .headers()
            .get_all(name)
            .filter_map(|v| v.to_str().ok())
            .collect(),
        None => Vec::new(),
    };
    Some(resolver.resolve(peer, &values))
}

/// Where the request came from, for the audit trail: the client address as the rate limiter
/// sees it, and the request id of [`RequestId`].
fn origin(state: &State, req: &HttpRequest) -> Origin {
    request_origin(state.registrar.policy().client_ip_resolver(), req)
}

/// [`origin`] for any listener (the admin one too), with the proxies `resolver` trusts.
pub(crate) fn request_origin(
    resolver: &crate::policy::ratelimit::ClientIpResolver,
    req: &HttpRequest,
) -> Origin {
    Origin {
        source_ip: client_ip_by(resolver, req).map(|ip| ip.to_string()),
        // The id the telemetry middleware gave the request (a trusted proxy's, or a fresh
        // one): the one in the response header and the log lines, never a caller's own claim.
        request_id: RequestId::of(req),
    }
}

/// GET {registration_path}/{client_id}: RFC 7592 §2.1.
async fn read(state: State, req: HttpRequest, client_id: web::Path<String>) -> Response {
    let token = auth::management_token(&req)?;
    let response = state
        .registrar
        .read_client(&client_id, token.as_deref(), &origin(&state, &req))
        .await?;
    // Already the JSON text (the stored metadata spliced in): sent as is.
    Ok(error::no_store(actix_web::http::StatusCode::OK)
        .content_type(actix_web::http::header::ContentType::json())
        .body(response.into_string()))
}

/// PUT {registration_path}/{client_id}: RFC 7592 §2.2.
async fn update(
    state: State,
    req: HttpRequest,
    client_id: web::Path<String>,
    payload: web::Payload,
) -> Response {
    let token = auth::management_token(&req)?;
    state
        .registrar
        .check_management_rate_limit(&source(&state, &req))?;
    // Authenticate before reading the body would leak nothing more; reading first keeps one path.
    let request = body::json_object(&req, payload, state.limits).await?;
    let response = state
        .registrar
        .update_client(
            &client_id,
            token.as_deref(),
            &request,
            &origin(&state, &req),
        )
        .await?;
    Ok(json(actix_web::http::StatusCode::OK, &response))
}

/// DELETE {registration_path}/{client_id}: RFC 7592 §2.3.
async fn delete(state: State, req: HttpRequest, client_id: web::Path<String>) -> Response {
    let token = auth::management_token(&req)?;
    state
        .registrar
        .check_management_rate_limit(&source(&state, &req))?;
    state
        .registrar
        .delete_client(&client_id, token.as_deref(), &origin(&state, &req))
        .await?;
    Ok(HttpResponse::NoContent()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

/// GET /.well-known/openid-configuration and /.well-known/oauth-authorization-server.
async fn discovery(state: State) -> HttpResponse {
    HttpResponse::Ok().json(&*state.registrar.discovery())
}

/// GET /healthz.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({"status": "ok"}))
}

/// GET /readyz: 200 while the store accepts writes; 503 while it is recovering from a storage
/// failure (disk full). Liveness stays on /healthz: restarting a server whose disk is full would
/// not help and would stop the reads it still serves.
async fn readyz(state: State) -> Response {
    if !state.registrar.store_writable() {
        return Err(RegistrationError::Unavailable.into());
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({"status": "ready"})))
}

/// The handler of unknown paths, for either listener's error type.
pub(crate) async fn not_found<E: From<RegistrationError>>() -> Result<HttpResponse, E> {
    Err(RegistrationError::NotFound.into())
}

/// The handler of a known path with another method, for either listener's error type.
pub(crate) fn method_not_allowed<E: From<RegistrationError> + 'static>(
    allow: &'static str,
) -> impl Fn() -> std::future::Ready<Result<HttpResponse, E>> + Clone {
    move || std::future::ready(Err(RegistrationError::MethodNotAllowed(allow).into()))
}

/// The CORS policy for browser-based registrants (e.g. MCP inspectors).
pub fn cors(settings: &CorsSettings) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            header::HeaderName::from_static("dpop"),
        ])
        .expose_headers([
            header::WWW_AUTHENTICATE,
            header::RETRY_AFTER,
            header::LOCATION,
            header::HeaderName::from_static(crate::telemetry::http::REQUEST_ID_HEADER),
        ])
        .max_age(settings.max_age_secs);
    if settings.allowed_origins.iter().any(|o| o == "*") {
        cors = cors.allow_any_origin().send_wildcard();
    } else {
        for origin in &settings.allowed_origins {
            cors = cors.allowed_origin(origin);
        }
    }
    cors
}

/// Mount every route on `cfg`.
pub fn routes<'a>(
    registration_path: &'a str,
    issuer: &'a str,
) -> impl FnOnce(&mut web::ServiceConfig) + 'a {
    move |cfg: &mut web::ServiceConfig| {
        let mut paths = vec![registration_path.to_owned()];
        if registration_path != HYDRA_REGISTRATION_PATH {
            paths.push(HYDRA_REGISTRATION_PATH.to_owned());
        }
        for path in paths {
            cfg.service(
                web::resource(path.clone())
                    .route(web::post().to(register))
                    .default_service(web::to(method_not_allowed::<PublicError>("POST, OPTIONS"))),
            )
            .service(
                web::resource(format!("{path}/{{client_id}}"))
                    .route(web::get().to(read))
                    .route(web::put().to(update))
                    .route(web::delete().to(delete))
                    .default_service(web::to(method_not_allowed::<PublicError>(
                        "GET, PUT, DELETE, OPTIONS",
                    ))),
            );
        }
        for path in crate::registration::discovery::paths(issuer) {
            cfg.service(
                web::resource(path)
                    .route(web::get().to(discovery))
                    .route(web::head().to(discovery))
                    .default_service(web::to(method_not_allowed::<PublicError>(
                        "GET, HEAD, OPTIONS",
                    ))),
            );
        }
        cfg.service(
            web::resource("/healthz")
                .route(web::get().to(healthz))
                .route(web::head().to(healthz))
                .default_service(web::to(method_not_allowed::<PublicError>("GET, HEAD"))),
        )
        .service(
            web::resource("/readyz")
                .route(web::get().to(readyz))
                .route(web::head().to(readyz))
                .default_service(web::to(method_not_allowed::<PublicError>("GET, HEAD"))),
        );
    }
}

/// The handler for every unknown path.
pub fn default_service() -> actix_web::Route {
    web::to(not_found::<PublicError>)
}
