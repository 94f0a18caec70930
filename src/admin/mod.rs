//! The admin API: routes and thin handlers on their own listener (Hydra's public/admin split).
//! Each handler checks the admin token's scope, extracts, calls one `Directory` method and
//! builds the response; decisions live in `crate::directory`, error mapping in `error.rs`.
//! No route here is mounted on the public listener, and this listener sends no CORS headers.

pub mod auth;
pub mod config;
pub mod error;

use crate::directory::{DeadQuery, Directory, ListQuery, Operator, Purpose};
use crate::error::RegistrationError;
use crate::http::{body, json, BodyLimits};
use crate::logsafe::escaped;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use auth::AdminTokens;
use config::Scope;
use error::AdminError;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Shared state of the admin handlers.
pub struct AdminState {
    /// The service.
    pub directory: Arc<Directory>,
    /// Who may call.
    pub tokens: AdminTokens,
    /// Body limits (those of the public listener).
    pub limits: BodyLimits,
    /// `admin.metrics_require_token`: `GET /metrics` needs the scope `metrics`.
    pub metrics_require_token: bool,
    /// The proxies whose client address header is believed (`rate_limit.trusted_proxies`),
    /// for the source address of audit records.
    pub proxies: crate::policy::ratelimit::ClientIpResolver,
}

impl AdminState {
    /// The holder of the request's token, if it has `scope`, as the operator of a change:
    /// the token's name and the request's source address and request id (audit records).
    fn operator(&self, req: &HttpRequest, scope: Scope) -> Result<Operator, AdminError> {
        let name = self.tokens.authorize(req, scope)?;
        Ok(Operator::new(
            name,
            crate::http::request_origin(&self.proxies, req),
        ))
    }
}

type State = web::Data<AdminState>;
type Response = Result<HttpResponse, AdminError>;

fn query_pairs(req: &HttpRequest) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect()
}

/// The JSON object body of a request that is not client metadata (authenticate, rotation), or
/// `{}` when it has none and `optional`. A malformed body is `invalid_request` here: the
/// `invalid_client_metadata` of the body parser belongs to metadata bodies.
async fn request_body(
    req: &HttpRequest,
    payload: web::Payload,
    limits: BodyLimits,
    optional: bool,
) -> Result<Map<String, Value>, RegistrationError> {
    let empty = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0")
        || (!req.headers().contains_key(header::CONTENT_LENGTH)
            && !req.headers().contains_key(header::TRANSFER_ENCODING));
    if empty && optional {
        return Ok(Map::new());
    }
    body::json_object(req, payload, limits)
        .await
        .map_err(|e| match e {
            RegistrationError::InvalidClientMetadata(why) => RegistrationError::InvalidRequest(why),
            other => other,
        })
}

/// GET /admin/clients: list with filters and keyset pagination.
async fn list(state: State, req: HttpRequest) -> Response {
    state.tokens.authorize(&req, Scope::ClientsRead)?;
    let query = ListQuery::parse(&query_pairs(&req), Purpose::List)?;
    let page = state.directory.list(&query).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"clients": page.clients, "next_cursor": page.next_cursor}),
    ))
}

/// POST /admin/clients: create a pre-registered client.
async fn create(state: State, req: HttpRequest, payload: web::Payload) -> Response {
    let admin = state.operator(&req, Scope::ClientsWrite)?;
    let request = body::json_object(&req, payload, state.limits).await?;
    let client = state.directory.create(&request, &admin).await?;
    let id = client.get("client_id").and_then(Value::as_str);
    tracing::info!(admin = %admin.name, client_id = %escaped(id.unwrap_or_default()), "admin: create");
    Ok(json(StatusCode::CREATED, &client))
}

/// DELETE /admin/clients?<filters>: delete (or with `dry_run=true` count) every match.
async fn delete_matching(state: State, req: HttpRequest) -> Response {
    let admin = state.operator(&req, Scope::ClientsWrite)?;
    let query = ListQuery::parse(&query_pairs(&req), Purpose::Delete)?;
    let n = state
        .directory
        .delete_matching(&query.filter, query.dry_run, &admin)
        .await?;
    tracing::info!(admin = %admin.name, deleted = n, dry_run = query.dry_run, "admin: bulk delete");
    let member = if query.dry_run { "matched" } else { "deleted" };
    Ok(json(StatusCode::OK, &serde_json::json!({ member: n })))
}

/// GET /admin/clients/{client_id}: the client view.
async fn show(state: State, req: HttpRequest, client_id: web::Path<String>) -> Response {
    state.tokens.authorize(&req, Scope::ClientsRead)?;
    Ok(json(
        StatusCode::OK,
        &state.directory.get(&client_id).await?,
    ))
}

/// PATCH /admin/clients/{client_id}: RFC 7396 merge patch of the metadata and `disabled`.
async fn patch(
    state: State,
    req: HttpRequest,
    client_id: web::Path<String>,
    payload: web::Payload,
) -> Response {
    let admin = state.operator(&req, Scope::ClientsWrite)?;
    let request = body::json_object(&req, payload, state.limits).await?;
    let client = state.directory.patch(&client_id, &request, &admin).await?;
    tracing::info!(admin = %admin.name, client_id = %escaped(&*client_id), "admin: patch");
    Ok(json(StatusCode::OK, &client))
}

/// DELETE /admin/clients/{client_id}.
async fn delete(state: State, req: HttpRequest, client_id: web::Path<String>) -> Response {
    let admin = state.operator(&req, Scope::ClientsWrite)?;
    state.directory.delete(&client_id, &admin).await?;
    tracing::info!(admin = %admin.name, client_id = %escaped(&*client_id), "admin: delete");
    Ok(crate::http::error::no_store(StatusCode::NO_CONTENT).finish())
}

/// POST /admin/clients/{client_id}/authenticate: check a client secret for the AS.
async fn authenticate(
    state: State,
    req: HttpRequest,
    client_id: web::Path<String>,
    payload: web::Payload,
) -> Response {
    state.tokens.authorize(&req, Scope::ClientsAuthenticate)?;
    let request = request_body(&req, payload, state.limits, false).await?;
    let secret = match request.get("client_secret") {
        Some(Value::String(s)) => s,
        _ => {
            return Err(RegistrationError::InvalidRequest(
                "client_secret (a string) is required".into(),
            )
            .into())
        }
    };
    let client = state.directory.authenticate(&client_id, secret).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "client": client }),
    ))
}

/// POST /admin/clients/{client_id}/client_secret: a new secret, optionally with grace.
async fn rotate_secret(
    state: State,
    req: HttpRequest,
    client_id: web::Path<String>,
    payload: web::Payload,
) -> Response {
    let admin = state.operator(&req, Scope::ClientsWrite)?;
    let request = request_body(&req, payload, state.limits, true).await?;
    let issued = state
        .directory
        .rotate_secret(&client_id, &request, &admin)
        .await?;
    tracing::info!(admin = %admin.name, client_id = %escaped(&*client_id), "admin: rotate client_secret");
    Ok(json(StatusCode::OK, &issued))
}

/// POST /admin/clients/{client_id}/registration_access_token: a new RFC 7592 token.
async fn reissue_token(state: State, req: HttpRequest, client_id: web::Path<String>) -> Response {
    let admin = state.operator(&req, Scope::ClientsWrite)?;
    let issued = state
        .directory
        .reissue_registration_token(&client_id, &admin)
        .await?;
    tracing::info!(admin = %admin.name, client_id = %escaped(&*client_id), "admin: reissue registration_access_token");
    Ok(json(StatusCode::OK, &issued))
}

/// GET /admin/audit?after=&limit=&client_id=&event=: one page of the audit trail, keyset
/// paginated by `seq` (issue #17 point 3; scope `audit:read`).
async fn audit(state: State, req: HttpRequest) -> Response {
    state.tokens.authorize(&req, Scope::AuditRead)?;
    let query = crate::directory::audit_query(&query_pairs(&req))?;
    Ok(json(StatusCode::OK, &state.directory.audit(&query).await?))
}

/// GET /admin/webhooks/dead?after=&limit=: the dead-lettered deliveries (scope
/// `webhooks:write`).
async fn dead_letters(state: State, req: HttpRequest) -> Response {
    state.tokens.authorize(&req, Scope::WebhooksWrite)?;
    let query = DeadQuery::parse(&query_pairs(&req))?;
    Ok(json(
        StatusCode::OK,
        &state.directory.dead_letters(&query).await?,
    ))
}

/// POST /admin/webhooks/dead/{id}/redeliver: back in the queue, due now, same `webhook-id`.
async fn redeliver(state: State, req: HttpRequest, id: web::Path<String>) -> Response {
    let admin = state.operator(&req, Scope::WebhooksWrite)?;
    state.directory.redeliver(&id).await?;
    tracing::info!(admin = %admin.name, webhook_id = %escaped(&id), "admin: redeliver webhook");
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({"id": *id, "redelivery": "queued"}),
    ))
}

/// GET /metrics: the Prometheus text format (README "Metrics"); a token with scope `metrics`
/// only when `admin.metrics_require_token` is set.
async fn metrics(
    state: State,
    req: HttpRequest,
    scrape: web::Data<crate::telemetry::Scrape>,
) -> Response {
    if state.metrics_require_token {
        state.tokens.authorize(&req, Scope::Metrics)?;
    }
    Ok(crate::telemetry::metrics_handler(scrape).await)
}

fn method_not_allowed(allow: &'static str) -> impl Fn() -> std::future::Ready<Response> + Clone {
    crate::http::method_not_allowed::<AdminError>(allow)
}

/// A path that takes only POST.
fn post_only(path: &str, route: actix_web::Route) -> actix_web::Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(method_not_allowed("POST")))
}

/// Mount the admin routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/admin/clients")
            .route(web::get().to(list))
            .route(web::post().to(create))
            .route(web::delete().to(delete_matching))
            .default_service(web::to(method_not_allowed("GET, POST, DELETE"))),
    )
    .service(
        web::resource("/admin/clients/{client_id}")
            .route(web::get().to(show))
            .route(web::patch().to(patch))
            .route(web::delete().to(delete))
            .default_service(web::to(method_not_allowed("GET, PATCH, DELETE"))),
    )
    .service(post_only(
        "/admin/clients/{client_id}/authenticate",
        web::post().to(authenticate),
    ))
    .service(post_only(
        "/admin/clients/{client_id}/client_secret",
        web::post().to(rotate_secret),
    ))
    .service(post_only(
        "/admin/clients/{client_id}/registration_access_token",
        web::post().to(reissue_token),
    ))
    .service(
        web::resource("/admin/audit")
            .route(web::get().to(audit))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource("/admin/webhooks/dead")
            .route(web::get().to(dead_letters))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(post_only(
        "/admin/webhooks/dead/{id}/redeliver",
        web::post().to(redeliver),
    ))
    .service(
        web::resource("/metrics")
            .route(web::get().to(metrics))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .service(
        web::resource("/openapi.json")
            .route(web::get().to(crate::telemetry::openapi_handler))
            .default_service(web::to(method_not_allowed("GET"))),
    )
    .default_service(web::to(crate::http::not_found::<AdminError>));
}
