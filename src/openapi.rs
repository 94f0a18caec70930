//! The OpenAPI 3.1 document of the HTTP API, generated from the code it describes: the client
//! metadata field table ([`crate::metadata::schema::FIELDS`], so a new field appears here with
//! its row), the configured registration path and `*_supported` lists (the same ones validation
//! and discovery use) and the error codes of [`crate::error::RegistrationError`] (a unit test
//! ties the two). The paths mirror [`crate::http::routes`]; schemathesis fails on a documented
//! path the server does not serve (an undocumented 404) or a status it does not document.
//!
//! `openapi.json` at the repository root is this document for the default configuration;
//! `tests/api/openapi.rs` fails when the two differ, and the schemathesis test
//! (`tests/contract.rs`) fuzzes a live server against it.

use crate::http::HYDRA_REGISTRATION_PATH;
use crate::metadata::schema::{Field, Ty, FIELDS};
use crate::metadata::uri::UriRule;
use crate::settings::{MetadataSettings, Settings};
use serde_json::{json, Map, Value};

/// Every `error` code the public API returns (RFC 7591 §3.2.2, RFC 7592 §2, RFC 6750 §3.1,
/// RFC 6749 §5.2 and the transport conditions), as `RegistrationError::code` spells them.
pub const ERROR_CODES: &[&str] = &[
    "invalid_redirect_uri",
    "invalid_client_metadata",
    "invalid_software_statement",
    "unapproved_software_statement",
    "invalid_request",
    "invalid_token",
    "access_denied",
    "not_found",
    "too_many_requests",
    "temporarily_unavailable",
    "server_error",
];

/// The largest integer a JSON number carries exactly (I-JSON, RFC 7493 §2.2).
const MAX_SAFE_INTEGER: u64 = 9_007_199_254_740_991;

fn uri_schema(rule: UriRule) -> Value {
    let pattern = match rule {
        UriRule::Https | UriRule::HttpsWithFragment => Some("^https://"),
        UriRule::Web | UriRule::Origin => Some("^https?://"),
        UriRule::Redirect => None,
    };
    let mut schema = json!({"type": "string", "format": "uri", "minLength": 1});
    if let Some(p) = pattern {
        schema["pattern"] = json!(p);
    }
    schema
}

fn one_of(list: &[String]) -> Value {
    if list.is_empty() {
        json!({"type": "string", "minLength": 1})
    } else {
        json!({"type": "string", "enum": list})
    }
}

fn strings() -> Value {
    json!({"type": "array", "items": {"type": "string", "minLength": 1}})
}

/// The JSON Schema of one field, from its row.
fn field_schema(field: &Field, supported: &MetadataSettings) -> Value {
    let mut schema = match field.ty {
        Ty::Text => json!({"type": "string", "minLength": 1}),
        Ty::Name => json!({"type": "string", "minLength": 1, "pattern": "\\S"}),
        Ty::AnyText => json!({"type": "string"}),
        Ty::Bool => json!({"type": "boolean"}),
        Ty::NullableBool => json!({"type": ["boolean", "null"]}),
        Ty::Seconds => json!({"type": "integer", "minimum": 0, "maximum": MAX_SAFE_INTEGER}),
        Ty::TextList | Ty::TokenList | Ty::ResponseTypes => strings(),
        Ty::Contacts => {
            json!({"type": "array", "items": {"type": "string", "format": "email"}})
        }
        Ty::Email => json!({"type": "string", "format": "email"}),
        Ty::Ip => json!({"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}),
        Ty::Uri(rule) => uri_schema(rule),
        Ty::UriList(rule) => json!({"type": "array", "items": uri_schema(rule)}),
        Ty::OneOf(list) => one_of(list(supported)),
        Ty::Enum(values) => json!({"type": "string", "enum": values}),
        Ty::ListOf(list) | Ty::ListOfIfListed(list) => {
            json!({"type": "array", "items": one_of(list(supported))})
        }
        Ty::Scope => json!({"type": "string"}),
        Ty::Jwks => json!({
            "type": "object",
            "required": ["keys"],
            "properties": {"keys": {"type": "array", "items": {"type": "object"}}}
        }),
        Ty::Object => json!({"type": "object"}),
        Ty::Duration => json!({"type": ["string", "null"]}),
    };
    schema["description"] = json!(format!("{} ({})", field.name, field.spec));
    schema
}

/// `ClientMetadata`: every field of the table. Unknown members are allowed (RFC 7591 §2: the
/// server ignores what it does not understand) and so are `name#lang` variants (§2.2).
fn client_metadata(supported: &MetadataSettings) -> Value {
    let properties: Map<String, Value> = FIELDS
        .iter()
        .map(|f| (f.name.to_owned(), field_schema(f, supported)))
        .collect();
    json!({
        "type": "object",
        "description": "Client metadata (RFC 7591 §2, OpenID Connect Registration 1.0 §2). Cross-field rules (RFC 7591 §2.1 and the ones the README lists) are checked by the server and answered with 400.",
        "properties": properties,
        "additionalProperties": true
    })
}

fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "RFC 7591 §3.2.2 error response.",
        "required": ["error", "error_description"],
        "properties": {
            "error": {"type": "string", "enum": ERROR_CODES},
            "error_description": {"type": "string", "minLength": 1}
        }
    })
}

fn client_information() -> Value {
    json!({
        "description": "RFC 7591 §3.2.1 / RFC 7592 §3 client information response: the registered metadata with defaults applied, plus the credentials.",
        "allOf": [
            {"$ref": "#/components/schemas/ClientMetadata"},
            {
                "type": "object",
                "required": ["client_id", "client_id_issued_at", "registration_access_token", "registration_client_uri"],
                "properties": {
                    "client_id": {"type": "string", "minLength": 1},
                    "client_secret": {"type": "string", "minLength": 1},
                    "client_id_issued_at": {"type": "integer", "minimum": 0},
                    "client_secret_expires_at": {"type": "integer", "minimum": 0},
                    "registration_access_token": {"type": "string", "minLength": 1},
                    "registration_client_uri": {"type": "string", "format": "uri"},
                    "software_statement": {"type": "string"}
                }
            }
        ]
    })
}

fn header(description: &str) -> Value {
    json!({"description": description, "schema": {"type": "string"}})
}

/// Headers every response carries.
fn common_headers() -> Map<String, Value> {
    let mut h = Map::new();
    h.insert(
        "x-request-id".into(),
        header("The request id (a trusted proxy's, or generated); also in the server's log lines."),
    );
    h
}

fn json_response(description: &str, schema: Value, extra: &[(&str, &str)]) -> Value {
    let mut headers = common_headers();
    for (name, text) in extra {
        headers.insert((*name).into(), header(text));
    }
    json!({
        "description": description,
        "headers": headers,
        "content": {"application/json": {"schema": schema}}
    })
}

fn error(description: &str, extra: &[(&str, &str)]) -> Value {
    json_response(
        description,
        json!({"$ref": "#/components/schemas/Error"}),
        extra,
    )
}

const NO_STORE: (&str, &str) = ("Cache-Control", "no-store");

/// The refusals an operation can answer: the body errors when it takes a JSON body, 401, 405,
/// 429 (with its cause) where a rate limit applies, 503.
fn refusals(responses: &mut Map<String, Value>, body: bool, too_many: Option<&str>) {
    if body {
        body_errors(responses);
    }
    responses.insert("401".into(), unauthorized());
    responses.insert("405".into(), method_not_allowed());
    if let Some(cause) = too_many {
        responses.insert(
            "429".into(),
            error(cause, &[("Retry-After", "Seconds to wait."), NO_STORE]),
        );
    }
    responses.insert("503".into(), unavailable());
}

/// Error responses shared by the operations with a JSON body.
fn body_errors(responses: &mut Map<String, Value>) {
    responses.insert(
        "400".into(),
        error(
            "invalid_client_metadata, invalid_redirect_uri, invalid_software_statement, unapproved_software_statement or invalid_request (RFC 7591 §3.2.2).",
            &[NO_STORE],
        ),
    );
    responses.insert(
        "408".into(),
        error("The body did not arrive in time.", &[NO_STORE]),
    );
    responses.insert(
        "413".into(),
        error("The body exceeds server.body_limit_bytes.", &[NO_STORE]),
    );
    responses.insert(
        "415".into(),
        error("The body is not application/json.", &[NO_STORE]),
    );
}

fn unauthorized() -> Value {
    error(
        "invalid_token: no Authorization header (bare `Bearer` challenge, RFC 6750 §3.1), or a token that is malformed, unknown, revoked or not this client's (`error=\"invalid_token\"`). The same answer whether or not the client exists (RFC 7592 §2.1).",
        &[
            ("WWW-Authenticate", "Bearer challenge (RFC 6750 §3)."),
            NO_STORE,
        ],
    )
}

fn unavailable() -> Value {
    error(
        "The store cannot accept writes or the hashing queue is full (retry after Retry-After seconds), or a configured ceiling is reached (access.max_anonymous_clients; no Retry-After).",
        &[("Retry-After", "Seconds to wait."), NO_STORE],
    )
}

fn method_not_allowed() -> Value {
    error(
        "The path exists, not with this method.",
        &[("Allow", "The methods the path serves."), NO_STORE],
    )
}

/// OpenAPI links from a response carrying client information to the management operations,
/// with the client's id and registration access token, so stateful testing (schemathesis) can
/// walk register -> read -> update -> delete.
fn management_links(suffix: &str) -> Value {
    let parameters = json!({
        "path.client_id": "$response.body#/client_id",
        "header.Authorization": "Bearer {$response.body#/registration_access_token}"
    });
    json!({
        "ReadClient": {"operationId": format!("readClient{suffix}"), "parameters": parameters},
        "UpdateClient": {
            "operationId": format!("updateClient{suffix}"),
            "parameters": parameters,
            "requestBody": "$response.body"
        },
        "DeleteClient": {"operationId": format!("deleteClient{suffix}"), "parameters": parameters}
    })
}

fn with_links(mut response: Value, suffix: &str) -> Value {
    response["links"] = management_links(suffix);
    response
}

fn client_id_parameter() -> Value {
    json!({
        "name": "client_id",
        "in": "path",
        "required": true,
        "description": "The client_id issued at registration.",
        "schema": {"type": "string", "minLength": 1}
    })
}

/// The registration and management operations under `path` (`suffix` keeps operation ids
/// unique between the configured path and the Hydra alias).
fn registration_paths(paths: &mut Map<String, Value>, path: &str, suffix: &str) {
    let mut post_responses = Map::new();
    post_responses.insert(
        "201".into(),
        with_links(
            json_response(
                "Registered (RFC 7591 §3.2.1).",
                json!({"$ref": "#/components/schemas/ClientInformation"}),
                &[NO_STORE],
            ),
            suffix,
        ),
    );
    refusals(
        &mut post_responses,
        true,
        Some(
            "Too many registrations from this source (rate_limit), or outbound fetches saturated.",
        ),
    );
    paths.insert(
        path.to_owned(),
        json!({
            "post": {
                "operationId": format!("registerClient{suffix}"),
                "summary": "Register a client (RFC 7591 §3.1)",
                "tags": ["registration"],
                "security": [{}, {"initialAccessToken": []}],
                "requestBody": {
                    "required": true,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ClientMetadata"}}}
                },
                "responses": post_responses
            }
        }),
    );
    let read = |what: &str| {
        let response = json_response(
            what,
            json!({"$ref": "#/components/schemas/ClientInformation"}),
            &[NO_STORE],
        );
        Map::from_iter([("200".to_owned(), with_links(response, suffix))])
    };
    let mut get_responses = read("The current registration (RFC 7592 §2.1).");
    refusals(&mut get_responses, false, None);
    let mut put_responses = read("Updated (RFC 7592 §2.2).");
    refusals(
        &mut put_responses,
        true,
        Some("Too many management calls from this source (rate_limit), or outbound fetches saturated."),
    );
    let mut delete_responses = Map::new();
    delete_responses.insert(
        "204".into(),
        json!({"description": "Deleted (RFC 7592 §2.3); the token dies with the client.", "headers": common_headers()}),
    );
    refusals(
        &mut delete_responses,
        false,
        Some("Too many management calls from this source (rate_limit)."),
    );
    for responses in [&mut put_responses, &mut delete_responses] {
        responses.insert(
            "403".into(),
            error(
                "access_denied: an operator disabled this client; it may read, not change or delete itself (RFC 7592 §2.2, §2.3).",
                &[NO_STORE],
            ),
        );
    }
    let security = json!([{"registrationAccessToken": []}]);
    paths.insert(
        format!("{path}/{{client_id}}"),
        json!({
            "parameters": [client_id_parameter()],
            "get": {
                "operationId": format!("readClient{suffix}"),
                "summary": "Read a registration (RFC 7592 §2.1)",
                "tags": ["management"],
                "security": security,
                "responses": get_responses
            },
            "put": {
                "operationId": format!("updateClient{suffix}"),
                "summary": "Replace a registration (RFC 7592 §2.2); the body must repeat client_id",
                "tags": ["management"],
                "security": security,
                "requestBody": {
                    "required": true,
                    "content": {"application/json": {"schema": {
                        "allOf": [
                            {"$ref": "#/components/schemas/ClientMetadata"},
                            {"type": "object", "required": ["client_id"], "properties": {"client_id": {"type": "string"}}}
                        ]
                    }}}
                },
                "responses": put_responses
            },
            "delete": {
                "operationId": format!("deleteClient{suffix}"),
                "summary": "Delete a registration (RFC 7592 §2.3)",
                "tags": ["management"],
                "security": security,
                "responses": delete_responses
            }
        }),
    );
}

fn get_and_head(id: &str, summary: &str, tag: &str, responses: Value) -> Value {
    let mut head_responses = responses.clone();
    if let Some(map) = head_responses.as_object_mut() {
        for response in map.values_mut() {
            if let Some(r) = response.as_object_mut() {
                r.remove("content");
            }
        }
    }
    json!({
        "get": {"operationId": id, "summary": summary, "tags": [tag], "responses": responses},
        "head": {"operationId": format!("{id}Head"), "summary": summary, "tags": [tag], "responses": head_responses}
    })
}

/// The codes the admin listener adds to the public ones (RFC 6749 §5.2, RFC 6750 §3.1).
pub const ADMIN_ERROR_CODES: &[&str] = &["invalid_client", "insufficient_scope"];

fn admin_error(description: &str, extra: &[(&str, &str)]) -> Value {
    json_response(
        description,
        json!({"$ref": "#/components/schemas/AdminError"}),
        extra,
    )
}

/// The refusals of an admin operation needing `scope`: 401 (no or unknown admin token), 403 (a
/// token without the scope), 405, 503; with a body the body errors; `client` adds 404.
fn admin_refusals(responses: &mut Map<String, Value>, scope: &str, body: bool, client: bool) {
    if body {
        body_errors(responses);
        for status in ["400", "408", "413", "415"] {
            if let Some(r) = responses.get_mut(status) {
                r["content"]["application/json"]["schema"] =
                    json!({"$ref": "#/components/schemas/AdminError"});
            }
        }
    } else {
        responses.insert(
            "400".into(),
            admin_error("invalid_request: a query parameter is unknown, repeated or malformed (it is named).", &[NO_STORE]),
        );
    }
    let challenge = (
        "WWW-Authenticate",
        "Bearer realm=\"registrar-admin\" challenge (RFC 6750 §3).",
    );
    responses.insert(
        "401".into(),
        admin_error(
            "invalid_token: no admin token, or one that is not configured.",
            &[challenge, NO_STORE],
        ),
    );
    responses.insert(
        "403".into(),
        admin_error(
            &format!("insufficient_scope: the admin token lacks the scope {scope}."),
            &[challenge, NO_STORE],
        ),
    );
    if client {
        responses.insert(
            "404".into(),
            admin_error("not_found: no client with this client_id.", &[NO_STORE]),
        );
    }
    responses.insert(
        "405".into(),
        admin_error(
            "The path exists, not with this method.",
            &[("Allow", "The methods the path serves."), NO_STORE],
        ),
    );
    responses.insert(
        "503".into(),
        admin_error(
            "The store cannot accept writes, or the hashing queue is full.",
            &[("Retry-After", "Seconds to wait."), NO_STORE],
        ),
    );
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

/// The listing filters of `GET` and `DELETE /admin/clients`.
fn filters() -> Vec<Value> {
    let text = json!({"type": "string", "minLength": 1});
    // A query parameter is not a JSON number: the server takes any non-negative i64 here (the
    // first schemathesis run of the admin API caught a 2^53 limit written in this document).
    let seconds = json!({"type": "integer", "minimum": 0, "maximum": i64::MAX});
    vec![
        query("software_id", "Exact software_id.", text.clone()),
        query("client_name", "Exact client_name.", text.clone()),
        query("policy", "Exact policy name.", text.clone()),
        query("tier", "Admitting tier.", text.clone()),
        query(
            "source",
            "How the client arrived (registration, admin).",
            text,
        ),
        query(
            "disabled",
            "Disabled by an operator.",
            json!({"type": "boolean"}),
        ),
        query(
            "created_before",
            "Created before this Unix time.",
            seconds.clone(),
        ),
        query(
            "created_after",
            "Created after this Unix time.",
            seconds.clone(),
        ),
        query(
            "unused_for_secs",
            "Not authenticated for this many seconds.",
            seconds,
        ),
    ]
}

fn operation(id: &str, summary: &str, scope: &str, responses: Map<String, Value>) -> Value {
    json!({
        "operationId": id,
        "summary": summary,
        "tags": ["admin"],
        "security": [{"adminToken": []}],
        "description": format!("Admin token scope: `{scope}`."),
        "responses": responses
    })
}

fn with_body(mut op: Value, schema: Value, required: bool) -> Value {
    op["requestBody"] =
        json!({"required": required, "content": {"application/json": {"schema": schema}}});
    op
}

fn ok(status: &str, description: &str, schema: Value) -> Map<String, Value> {
    Map::from_iter([(
        status.to_owned(),
        json_response(description, schema, &[NO_STORE]),
    )])
}

/// The admin listener's operations (README "Admin API"); served there with `/metrics` and
/// `/openapi.json`, never on the public port.
fn admin_paths(paths: &mut Map<String, Value>) {
    let view = json!({"$ref": "#/components/schemas/ClientView"});
    let client =
        |id: &str, summary: &str, scope: &str, mut r: Map<String, Value>, body: Option<Value>| {
            admin_refusals(&mut r, scope, body.is_some(), true);
            let op = operation(id, summary, scope, r);
            match body {
                Some(schema) => with_body(op, schema, id != "rotateClientSecret"),
                None => op,
            }
        };

    let mut list = ok(
        "200",
        "One page of client views in client_id order; next_cursor is null on the last page.",
        json!({
            "type": "object",
            "required": ["clients", "next_cursor"],
            "properties": {
                "clients": {"type": "array", "items": view.clone()},
                "next_cursor": {"type": ["string", "null"]}
            }
        }),
    );
    admin_refusals(&mut list, "clients:read", false, false);
    let mut list_op = operation(
        "listClients",
        "List clients, keyset-paginated",
        "clients:read",
        list,
    );
    let mut params = filters();
    params.push(query(
        "limit",
        "Page size (default 100).",
        json!({"type": "integer", "minimum": 1, "maximum": crate::directory::MAX_LIMIT}),
    ));
    params.push(query(
        "cursor",
        "next_cursor of the previous page.",
        json!({"type": "string", "minLength": 1}),
    ));
    list_op["parameters"] = json!(params);

    let mut created = ok(
        "201",
        "Created (source: admin), with its credentials, shown once.",
        json!({"$ref": "#/components/schemas/ClientInformation"}),
    );
    admin_refusals(&mut created, "clients:write", true, false);
    let create_op = with_body(
        operation(
            "createClient",
            "Create a pre-registered client through the registration path",
            "clients:write",
            created,
        ),
        json!({"allOf": [
            {"$ref": "#/components/schemas/ClientMetadata"},
            {"type": "object", "properties": {"policy": {"type": "string", "description": "A configured policy name."}}}
        ]}),
        true,
    );

    let mut bulk = ok(
        "200",
        "How many clients were deleted (or, with dry_run, matched).",
        json!({"type": "object", "minProperties": 1, "maxProperties": 1, "properties": {
            "deleted": {"type": "integer", "minimum": 0},
            "matched": {"type": "integer", "minimum": 0}
        }}),
    );
    admin_refusals(&mut bulk, "clients:write", false, false);
    let mut bulk_op = operation(
        "deleteMatchingClients",
        "Delete every client matching the filters (at least one)",
        "clients:write",
        bulk,
    );
    let mut params = filters();
    params.push(query(
        "dry_run",
        "Count instead of deleting.",
        json!({"type": "boolean"}),
    ));
    bulk_op["parameters"] = json!(params);

    paths.insert(
        "/admin/clients".into(),
        json!({"get": list_op, "post": create_op, "delete": bulk_op}),
    );

    let mut deleted = Map::new();
    deleted.insert(
        "204".into(),
        json!({"description": "Deleted.", "headers": common_headers()}),
    );
    let patch_schema = json!({
        "type": "object",
        "description": "RFC 7396 merge patch of the client metadata, plus disabled.",
        "properties": {"disabled": {"type": "boolean"}}
    });
    paths.insert(
        "/admin/clients/{client_id}".into(),
        json!({
            "parameters": [client_id_parameter()],
            "get": client("getClient", "The client view", "clients:read", ok("200", "The client view.", view.clone()), None),
            "patch": client("patchClient", "Merge-patch the metadata and disabled", "clients:write",
                ok("200", "The new view (with client_secret when the new auth method needed one).", view.clone()), Some(patch_schema)),
            "delete": client("deleteClient", "Delete the client", "clients:write", deleted, None)
        }),
    );
    let mut authn = ok(
        "200",
        "The secret is the client's current one (or the previous one within its grace).",
        json!({"type": "object", "required": ["client"], "properties": {"client": view}}),
    );
    admin_refusals(&mut authn, "clients:authenticate", true, false);
    authn.insert(
        "401".into(),
        admin_error(
            "invalid_token (the admin token, with a challenge) or invalid_client: unknown client, wrong, expired or disabled: byte-identical (RFC 6749 §5.2).",
            &[("WWW-Authenticate", "Only for a refused admin token."), NO_STORE],
        ),
    );
    paths.insert(
        "/admin/clients/{client_id}/authenticate".into(),
        json!({
            "parameters": [client_id_parameter()],
            "post": with_body(
                operation("authenticateClient", "Check a client secret for the authorization server (RFC 6749 §2.3.1)", "clients:authenticate", authn),
                json!({"type": "object", "required": ["client_secret"], "properties": {"client_secret": {"type": "string"}}}),
                true,
            )
        }),
    );
    let secret = json!({
        "type": "object",
        "required": ["client_id", "client_secret", "client_secret_expires_at"],
        "properties": {
            "client_id": {"type": "string"},
            "client_secret": {"type": "string", "minLength": 1},
            "client_secret_expires_at": {"type": "integer", "minimum": 0},
            "previous_secret_expires_at": {"type": "integer", "minimum": 0}
        }
    });
    paths.insert(
        "/admin/clients/{client_id}/client_secret".into(),
        json!({
            "parameters": [client_id_parameter()],
            "post": client("rotateClientSecret", "Issue a new client secret, optionally keeping the old one for grace_secs", "clients:write",
                ok("200", "The new secret, shown once.", secret),
                Some(json!({"type": "object", "additionalProperties": false, "properties": {
                    "grace_secs": {"type": "integer", "minimum": 0, "maximum": crate::directory::MAX_GRACE_SECS}
                }})))
        }),
    );
    paths.insert(
        "/admin/clients/{client_id}/registration_access_token".into(),
        json!({
            "parameters": [client_id_parameter()],
            "post": client("reissueRegistrationAccessToken", "Issue a new RFC 7592 registration access token", "clients:write",
                ok("200", "The new token, shown once.", json!({
                    "type": "object",
                    "required": ["client_id", "registration_access_token"],
                    "properties": {
                        "client_id": {"type": "string"},
                        "registration_access_token": {"type": "string", "minLength": 1},
                        "registration_client_uri": {"type": "string", "format": "uri"}
                    }
                })), None)
        }),
    );
    events_paths(paths);
    let mut metrics = Map::new();
    metrics.insert(
        "200".into(),
        json!({
            "description": "Prometheus text format 0.0.4 (README \"Metrics\").",
            "headers": common_headers(),
            "content": {crate::telemetry::TEXT_CONTENT_TYPE: {"schema": {"type": "string"}}}
        }),
    );
    admin_refusals(&mut metrics, "metrics", false, false);
    metrics.remove("400");
    metrics.remove("503");
    let mut metrics_op = operation(
        "metrics",
        "Prometheus metrics",
        "metrics (only with admin.metrics_require_token)",
        metrics,
    );
    metrics_op["security"] = json!([{}, {"adminToken": []}]);
    let mut doc = Map::new();
    doc.insert(
        "200".into(),
        json!({"description": "This document.", "headers": common_headers(), "content": {"application/json": {"schema": {"type": "object"}}}}),
    );
    doc.insert(
        "405".into(),
        admin_error("Only GET.", &[("Allow", "GET"), NO_STORE]),
    );
    paths.insert("/metrics".into(), json!({"get": metrics_op}));
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {"operationId": "openapi", "summary": "The OpenAPI document of both listeners", "tags": ["admin"], "security": [{}], "responses": doc}}),
    );
}

/// `GET /admin/audit`, `GET /admin/webhooks/dead` and its redelivery (README "Audit trail",
/// "Webhooks").
fn events_paths(paths: &mut Map<String, Value>) {
    use crate::events::{ActorKind, EventType};
    let nullable = json!({"type": ["string", "null"]});
    let mut names: Vec<&str> = EventType::CLIENT_EVENTS
        .iter()
        .map(|e| e.as_str())
        .collect();
    let client_events = json!({"type": "string", "enum": names.clone()});
    names.push(EventType::Checkpoint.as_str());
    let all_events = json!({"type": "string", "enum": names});
    let kinds: Vec<Value> = [
        ActorKind::Anonymous,
        ActorKind::InitialAccessToken,
        ActorKind::SoftwareStatement,
        ActorKind::RegistrationAccessToken,
        ActorKind::Admin,
        ActorKind::System,
    ]
    .iter()
    .filter_map(|k| serde_json::to_value(k).ok())
    .collect();
    let cursor = json!({"type": ["integer", "null"], "minimum": 0});
    let record = json!({
        "type": "object",
        "description": "One chained audit record: hash = SHA-256(prev_hash || canonical record). Never a secret, token or hash of one.",
        "required": ["seq", "time", "event", "client_id", "actor", "changed", "before", "after", "prev_hash", "hash"],
        "properties": {
            "seq": {"type": "integer", "minimum": 1},
            "time": {"type": "integer"},
            "event": all_events.clone(),
            "client_id": nullable.clone(),
            "actor": {
                "type": "object",
                "required": ["kind"],
                "properties": {
                    "kind": {"type": "string", "enum": kinds},
                    "name": nullable.clone(),
                    "iss": nullable.clone(),
                    "token_digest": nullable.clone()
                }
            },
            "source_ip": nullable.clone(),
            "request_id": nullable.clone(),
            "changed": {"type": "array", "items": {"type": "string"}},
            "before": nullable.clone(),
            "after": nullable.clone(),
            "checkpoint": {
                "type": "object",
                "required": ["pruned_through", "pruned_head", "pruned_count"],
                "properties": {
                    "pruned_through": {"type": "integer", "minimum": 0},
                    "pruned_head": {"type": "string"},
                    "pruned_count": {"type": "integer", "minimum": 0}
                }
            },
            "prev_hash": {"type": "string"},
            "hash": {"type": "string"}
        }
    });
    let after = query(
        "after",
        "Only entries after this seq: the next_cursor of the previous page.",
        json!({"type": "integer", "minimum": 0, "maximum": i64::MAX}),
    );
    let limit = query(
        "limit",
        "Page size (default 100).",
        json!({"type": "integer", "minimum": 1, "maximum": crate::directory::MAX_EVENTS_LIMIT}),
    );

    let mut audit = ok(
        "200",
        "One page of records in seq order; next_cursor is null once the trail is exhausted (a full page always has one).",
        json!({
            "type": "object",
            "required": ["records", "next_cursor"],
            "properties": {
                "records": {"type": "array", "items": record},
                "next_cursor": cursor.clone()
            }
        }),
    );
    admin_refusals(&mut audit, "audit:read", false, false);
    let mut audit_op = operation(
        "listAuditRecords",
        "The audit trail, keyset-paginated by seq",
        "audit:read",
        audit,
    );
    audit_op["parameters"] = json!([
        after.clone(),
        limit.clone(),
        query(
            "client_id",
            "Only this client's records.",
            json!({"type": "string", "minLength": 1}),
        ),
        query("event", "Only this event.", all_events),
    ]);
    paths.insert("/admin/audit".into(), json!({ "get": audit_op }));

    let dead = json!({
        "type": "object",
        "required": ["seq", "id", "hook", "client_id", "event", "attempts", "last_error", "payload"],
        "properties": {
            "seq": {"type": "integer", "minimum": 0},
            "id": {"type": "string", "description": "The webhook-id, kept on redelivery."},
            "hook": {"type": "string"},
            "client_id": {"type": "string"},
            "event": client_events,
            "attempts": {"type": "integer", "minimum": 0},
            "last_error": nullable,
            "payload": {"type": "object", "description": "The signed body: {type, timestamp, data}."}
        }
    });
    let mut list = ok(
        "200",
        "Dead-lettered deliveries in outbox order; next_cursor is null once exhausted (a full page always has one).",
        json!({
            "type": "object",
            "required": ["deliveries", "next_cursor"],
            "properties": {
                "deliveries": {"type": "array", "items": dead},
                "next_cursor": cursor
            }
        }),
    );
    admin_refusals(&mut list, "webhooks:write", false, false);
    let mut list_op = operation(
        "listDeadWebhooks",
        "Webhook deliveries that exhausted max_attempts",
        "webhooks:write",
        list,
    );
    list_op["parameters"] = json!([after, limit]);
    paths.insert("/admin/webhooks/dead".into(), json!({ "get": list_op }));

    let mut again = ok(
        "202",
        "Back in the queue, due now, attempts counted afresh, same webhook-id and body.",
        json!({
            "type": "object",
            "required": ["id", "redelivery"],
            "properties": {"id": {"type": "string"}, "redelivery": {"const": "queued"}}
        }),
    );
    admin_refusals(&mut again, "webhooks:write", false, false);
    again.insert(
        "404".into(),
        admin_error(
            "not_found: no dead-lettered delivery with this webhook-id.",
            &[NO_STORE],
        ),
    );
    paths.insert(
        "/admin/webhooks/dead/{id}/redeliver".into(),
        json!({
            "parameters": [{
                "name": "id", "in": "path", "required": true,
                "description": "The webhook-id of a dead-lettered delivery.",
                "schema": {"type": "string", "minLength": 1}
            }],
            "post": operation(
                "redeliverDeadWebhook",
                "Put a dead-lettered delivery back in the queue",
                "webhooks:write",
                again,
            )
        }),
    );
}

/// The whole document for `settings` (the served one uses the running configuration; the
/// checked-in `openapi.json` is the default configuration's).
pub fn document(settings: &Settings) -> Value {
    let mut paths = Map::new();
    registration_paths(&mut paths, &settings.registration_path, "");
    if settings.registration_path != HYDRA_REGISTRATION_PATH {
        registration_paths(&mut paths, HYDRA_REGISTRATION_PATH, "HydraAlias");
    }
    let discovery = json!({"200": json_response(
        "The discovery document (RFC 8414 §3.2 / OpenID Connect Discovery 1.0 §4.2).",
        json!({"$ref": "#/components/schemas/Discovery"}),
        &[],
    ), "405": method_not_allowed()});
    paths.insert(
        "/.well-known/openid-configuration".into(),
        get_and_head(
            "openidConfiguration",
            "OpenID Connect Discovery 1.0 §4",
            "discovery",
            discovery.clone(),
        ),
    );
    paths.insert(
        "/.well-known/oauth-authorization-server".into(),
        get_and_head(
            "oauthAuthorizationServer",
            "RFC 8414 §3",
            "discovery",
            discovery,
        ),
    );
    let health = |status: &str| json!({"type": "object", "required": ["status"], "properties": {"status": {"const": status}}});
    paths.insert(
        "/healthz".into(),
        get_and_head(
            "healthz",
            "Liveness: 200 while the process serves requests",
            "health",
            json!({"200": json_response("Alive.", health("ok"), &[NO_STORE]), "405": method_not_allowed()}),
        ),
    );
    admin_paths(&mut paths);
    paths.insert(
        "/readyz".into(),
        get_and_head(
            "readyz",
            "Readiness: 200 while the store accepts writes, 503 while it recovers",
            "health",
            json!({"200": json_response("Ready.", health("ready"), &[NO_STORE]), "405": method_not_allowed(), "503": unavailable()}),
        ),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "registrar",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "OAuth 2.0 Dynamic Client Registration (RFC 7591) and Management (RFC 7592), OpenID Connect Dynamic Client Registration 1.0. Every error is a JSON object with `error` and `error_description`.",
            "license": {"name": "MIT OR Apache-2.0", "identifier": "MIT OR Apache-2.0"}
        },
        "tags": [
            {"name": "registration", "description": "RFC 7591"},
            {"name": "management", "description": "RFC 7592"},
            {"name": "discovery", "description": "RFC 8414, OpenID Connect Discovery 1.0"},
            {"name": "health", "description": "Probes"},
            {"name": "admin", "description": "The admin listener (admin.host, admin.port): never the public port"}
        ],
        "paths": paths,
        "components": {
            "schemas": {
                "ClientMetadata": client_metadata(&settings.metadata),
                "ClientInformation": client_information(),
                "Error": error_schema(),
                "AdminError": {
                    "type": "object",
                    "required": ["error", "error_description"],
                    "properties": {
                        "error": {"type": "string", "enum": ERROR_CODES.iter().chain(ADMIN_ERROR_CODES).collect::<Vec<_>>()},
                        "error_description": {"type": "string", "minLength": 1}
                    }
                },
                "ClientView": {
                    "description": "The admin view of a client: its metadata and the directory's fields; never a hash, tag or plaintext credential.",
                    "allOf": [
                        {"$ref": "#/components/schemas/ClientMetadata"},
                        {
                            "type": "object",
                            "required": ["client_id", "client_id_issued_at", "created_at", "updated_at", "last_used_at", "disabled", "policy", "tier", "source"],
                            "properties": {
                                "client_id": {"type": "string", "minLength": 1},
                                "client_id_issued_at": {"type": "integer"},
                                "client_secret_expires_at": {"type": "integer", "minimum": 0},
                                "software_statement": {"type": "string"},
                                "created_at": {"type": "integer"},
                                "updated_at": {"type": "integer"},
                                "last_used_at": {"type": ["integer", "null"]},
                                "disabled": {"type": "boolean"},
                                "policy": {"type": ["string", "null"]},
                                "tier": {"type": ["string", "null"]},
                                "source": {"type": "string"}
                            }
                        }
                    ]
                },
                "Discovery": {
                    "type": "object",
                    "required": ["issuer", "registration_endpoint"],
                    "properties": {
                        "issuer": {"type": "string", "format": "uri"},
                        "registration_endpoint": {"type": "string", "format": "uri"}
                    },
                    "additionalProperties": true
                }
            },
            "securitySchemes": {
                "initialAccessToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "RFC 7591 §3 initial access token: optional in access.mode = \"open\", required otherwise (except anonymous_allowed_for)."
                },
                "registrationAccessToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "RFC 7592 §1 registration access token, issued in the registration response."
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An [[admin.tokens]] token; each operation names the scope it needs."
                }
            }
        }
    })
}

/// The document as checked in: pretty JSON with a final newline.
pub fn render(settings: &Settings) -> String {
    let mut text = serde_json::to_string_pretty(&document(settings)).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_of_the_table_is_in_the_schema() {
        let doc = document(&Settings::defaults().unwrap());
        let props = doc["components"]["schemas"]["ClientMetadata"]["properties"]
            .as_object()
            .unwrap();
        assert_eq!(props.len(), FIELDS.len());
        for f in FIELDS {
            assert!(props.contains_key(f.name), "{}", f.name);
        }
        assert_eq!(
            props["token_endpoint_auth_method"]["enum"],
            json!(
                Settings::defaults()
                    .unwrap()
                    .metadata
                    .token_endpoint_auth_methods_supported
            )
        );
    }

    #[test]
    fn the_error_codes_match_the_error_enum() {
        use crate::error::RegistrationError as E;
        let all = [
            E::InvalidRedirectUri(String::new()),
            E::InvalidClientMetadata(String::new()),
            E::InvalidSoftwareStatement(String::new()),
            E::UnapprovedSoftwareStatement(String::new()),
            E::InvalidRequest(String::new()),
            E::InvalidToken,
            E::MissingToken,
            E::PayloadTooLarge(0),
            E::UnsupportedMediaType,
            E::BodyTimeout,
            E::MethodNotAllowed(""),
            E::NotFound,
            E::TooManyRequests(0),
            E::Unavailable,
            E::Overloaded,
            E::CapacityReached(String::new()),
            E::ClientDisabled,
            E::ClientNotFound(String::new()),
            E::DeliveryNotFound(String::new()),
            E::InvalidClient(String::new()),
            E::Internal(String::new()),
        ];
        // Exhaustive on purpose: a new variant fails to compile here until it is listed above.
        for e in &all {
            match e {
                E::InvalidRedirectUri(_)
                | E::InvalidClientMetadata(_)
                | E::InvalidSoftwareStatement(_)
                | E::UnapprovedSoftwareStatement(_)
                | E::InvalidRequest(_)
                | E::InvalidToken
                | E::MissingToken
                | E::PayloadTooLarge(_)
                | E::UnsupportedMediaType
                | E::BodyTimeout
                | E::MethodNotAllowed(_)
                | E::NotFound
                | E::TooManyRequests(_)
                | E::Unavailable
                | E::Overloaded
                | E::CapacityReached(_)
                | E::ClientDisabled
                | E::ClientNotFound(_)
                | E::DeliveryNotFound(_)
                | E::InvalidClient(_)
                | E::Internal(_) => {}
            }
        }
        for e in &all {
            assert!(
                ERROR_CODES.contains(&e.code()) || ADMIN_ERROR_CODES.contains(&e.code()),
                "{} not documented",
                e.code()
            );
        }
        // insufficient_scope is the admin token's own refusal, not a service error.
        for code in ERROR_CODES.iter().chain(&["invalid_client"]) {
            assert!(
                all.iter().any(|e| e.code() == *code),
                "{code} is never returned"
            );
        }
    }
}
