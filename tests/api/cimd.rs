//! Client ID Metadata Documents (README "Client ID Metadata Documents"): https client_ids
//! resolved through the admin API against the local HTTPS test server, whose connection count
//! proves which refusals happen before anything is sent.

use crate::admin::{call, with_admin, ALL, AUTHN, READ, WRITE};
use crate::helpers::{assert_error, spawn_app_with, spawn_with_clock, TestApp};
use crate::tls::{Reply, TlsServer};
use registrar::clock::FixedClock;
use registrar::settings::Settings;
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Percent-encode everything but RFC 3986 unreserved characters (a client_id in a path segment).
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A document the test can change while the registrar runs.
type Doc = Arc<Mutex<String>>;

fn doc() -> Doc {
    Arc::default()
}

fn set(doc: &Doc, value: &Value) {
    *doc.lock().unwrap() = value.to_string();
}

fn served(headers: &'static str, body: &Doc) -> Reply {
    Reply::Document {
        headers,
        delay: Duration::ZERO,
        body: body.clone(),
    }
}

/// The smallest valid document for `id`.
fn minimal(id: &str) -> Value {
    json!({"client_id": id, "client_name": "Doc client", "redirect_uris": ["https://app.example/cb"]})
}

/// The registrar with the admin API, trusting `server` and allowed to reach it (loopback).
async fn app(server: &TlsServer, tweak: impl FnOnce(Settings) -> Settings) -> TestApp {
    server.app_with(true, |s| tweak(with_admin(s))).await
}

/// One document at `/c` (the minimal one, served with the extra `headers`), its URL as the
/// client_id, and the registrar (`tweak`ed) that resolves it.
struct Fixture {
    body: Doc,
    server: TlsServer,
    id: String,
    app: TestApp,
}

async fn fixture(headers: &'static str, tweak: impl FnOnce(Settings) -> Settings) -> Fixture {
    fixture_at("/c", headers, tweak).await
}

/// Like `fixture`, with the document at `path`.
async fn fixture_at(
    path: &str,
    headers: &'static str,
    tweak: impl FnOnce(Settings) -> Settings,
) -> Fixture {
    let body = doc();
    let server = TlsServer::start(vec![(path, served(headers, &body))]).await;
    let id = server.url(path);
    set(&body, &minimal(&id));
    let app = app(&server, tweak).await;
    Fixture {
        body,
        server,
        id,
        app,
    }
}

async fn lookup(app: &TestApp, id: &str) -> reqwest::Response {
    call(
        app,
        Method::GET,
        &format!("/admin/clients/{}", enc(id)),
        Some(READ),
        None,
    )
    .await
}

/// The client view, asserting 200.
async fn resolved(app: &TestApp, id: &str) -> Value {
    let r = lookup(app, id).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

/// The description of a 400 invalid_client.
async fn refused(app: &TestApp, id: &str) -> String {
    assert_error(lookup(app, id).await, 400, "invalid_client").await
}

fn fetches(server: &TlsServer, path: &str) -> usize {
    server.requested().iter().filter(|p| *p == path).count()
}

#[tokio::test]
async fn an_https_client_id_is_resolved_into_a_persisted_client_view() {
    let Fixture {
        body: _body,
        server: _server,
        id,
        app,
    } = fixture_at("/client.json", "", |s| s).await;
    let v = resolved(&app, &id).await;
    assert_eq!(v["client_id"], id.as_str());
    assert_eq!(v["source"], "metadata_document");
    assert_eq!(v["tier"], "metadata_document");
    assert_eq!(v["client_name"], "Doc client");
    // No declared method means none (draft §4.1); the engine's defaults are applied.
    assert_eq!(v["token_endpoint_auth_method"], "none");
    assert_eq!(v["grant_types"], json!(["authorization_code"]));
    assert_eq!(v["disabled"], false);
    assert!(v["last_used_at"].is_i64(), "a lookup is a use: {v}");
    assert!(v.get("client_secret").is_none() && v.get("registration_access_token").is_none());
    // Persisted: it shows in the admin list, filtered by its source.
    let r = call(
        &app,
        Method::GET,
        "/admin/clients?source=metadata_document",
        Some(READ),
        None,
    )
    .await;
    let list: Value = r.json().await.unwrap();
    let ids: Vec<&str> = list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);
}

#[tokio::test]
async fn every_client_id_url_rule_is_refused_by_name_without_a_connection() {
    let server = TlsServer::start(vec![]).await;
    let app = app(&server, |s| s).await;
    let host = format!("127.0.0.1:{}", server.port);
    for (id, rule) in [
        (format!("http://{host}/c"), "https scheme"),
        (format!("https://{host}"), "must contain a path"),
        (format!("https://{host}/"), "must contain a path"),
        (format!("https://user:pw@{host}/c"), "username or password"),
        (format!("https://{host}/c#frag"), "fragment"),
        (format!("https://{host}/a/../c"), "path segments"),
        (format!("https://{host}/a/./c"), "path segments"),
        (format!("https://{host}/c?x=1"), "cimd.allow_query"),
    ] {
        let description = refused(&app, &id).await;
        assert!(description.contains(rule), "{id}: {description}");
        assert!(description.contains("client_id"), "{description}");
        assert!(description.contains("§3"), "{description}");
    }
    assert_eq!(
        server.connections(),
        0,
        "no rule of §3 may cost a connection"
    );
}

#[tokio::test]
async fn a_query_is_accepted_with_allow_query() {
    let Fixture {
        body: _body,
        server: _server,
        id,
        app,
    } = fixture_at("/c?v=1", "", |s| s.with("cimd.allow_query", true).unwrap()).await;
    assert_eq!(resolved(&app, &id).await["client_id"], id.as_str());
}

#[tokio::test]
async fn each_document_rule_is_refused_with_its_message() {
    let Fixture {
        body,
        server: _server,
        id,
        app,
    } = fixture("", |s| s).await;
    let with = |k: &str, v: Value| {
        let mut d = minimal(&id);
        d[k] = v;
        d
    };
    let mut without_redirects = minimal(&id);
    without_redirects
        .as_object_mut()
        .unwrap()
        .remove("redirect_uris");
    for (document, words) in [
        (
            with("client_id", json!(format!("{id}/"))),
            "equal as strings",
        ),
        (
            with("client_secret", json!("s3cret")),
            "must not contain client_secret",
        ),
        (
            with("client_secret_expires_at", json!(0)),
            "must not contain client_secret_expires_at",
        ),
        (
            with("token_endpoint_auth_method", json!("client_secret_basic")),
            "shared secret",
        ),
        (
            with("token_endpoint_auth_method", json!("client_secret_post")),
            "shared secret",
        ),
        (
            with("token_endpoint_auth_method", json!("client_secret_jwt")),
            "shared secret",
        ),
        (
            with("jwks", json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})),
            "private member",
        ),
        (
            with(
                "jwks",
                json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "d": "AA"}]}),
            ),
            "private member",
        ),
        (without_redirects, "redirect_uris is required"),
        (json!([id]), "JSON object"),
        // The metadata engine's own words, as for a registration.
        (
            with("redirect_uris", json!(["https://app.example/cb#frag"])),
            "fragment",
        ),
    ] {
        set(&body, &document);
        let description = refused(&app, &id).await;
        assert!(description.contains(words), "{document}: {description}");
    }
    // Nothing of the refused documents was persisted.
    let r = call(&app, Method::GET, "/admin/clients", Some(READ), None).await;
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["clients"], json!([]));
}

#[tokio::test]
async fn fetch_failures_are_refused_redirects_size_and_content_type() {
    let id_padding = |id: &str, total: usize| {
        let mut d = minimal(id);
        let base = d.to_string().len() + r#","x":"""#.len();
        d["x"] = json!("a".repeat(total - base));
        let s = d.to_string();
        assert_eq!(s.len(), total);
        s
    };
    let exact = doc();
    let over = doc();
    let server = TlsServer::start(vec![
        ("/moved", Reply::Redirect("https://127.0.0.1:1/c".into())),
        ("/html", Reply::Raw(200, "text/html", "{}".into())),
        ("/gone", Reply::Raw(404, "application/json", "{}".into())),
        ("/exact", served("", &exact)),
        ("/over", served("", &over)),
    ])
    .await;
    *exact.lock().unwrap() = id_padding(&server.url("/exact"), 5120);
    *over.lock().unwrap() = id_padding(&server.url("/over"), 5121);
    let app = app(&server, |s| s).await;
    for (path, words) in [
        ("/moved", "redirect (HTTP 302)"),
        ("/html", "JSON content type"),
        ("/gone", "HTTP status 404"),
        ("/over", "more than 5120 bytes"),
    ] {
        let description = refused(&app, &server.url(path)).await;
        assert!(description.contains(words), "{path}: {description}");
    }
    // The redirect was not followed.
    assert!(!server.requested().iter().any(|p| p == "/c"));
    // 5120 bytes is the cap itself: accepted.
    resolved(&app, &server.url("/exact")).await;
}

#[tokio::test]
async fn a_reserved_address_is_refused_with_zero_connections() {
    let body = doc();
    let server = TlsServer::start(vec![("/c", served("", &body))]).await;
    let id = server.url("/c");
    set(&body, &minimal(&id));
    // fetch.allow_private_addresses off: loopback is a reserved address (draft §8.6).
    let app = server.app_with(false, with_admin).await;
    let description = refused(&app, &id).await;
    assert!(description.contains("reserved address"), "{description}");
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn denied_and_unlisted_hosts_are_refused_before_fetching() {
    let server = TlsServer::start(vec![]).await;
    let id = server.url("/c");
    let denied = app(&server, |s| {
        s.with("cimd.denied_hosts", ["127.0.0.1"]).unwrap()
    })
    .await;
    assert!(refused(&denied, &id).await.contains("cimd.denied_hosts"));
    let unlisted = app(&server, |s| {
        s.with("cimd.allowed_hosts", ["*.example.com"]).unwrap()
    })
    .await;
    assert!(refused(&unlisted, &id).await.contains("cimd.allowed_hosts"));
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn max_age_is_honoured_and_clamped_on_the_injected_clock() {
    let long = doc();
    let short = doc();
    let server = TlsServer::start(vec![
        ("/long", served("Cache-Control: max-age=600\r\n", &long)),
        (
            "/short",
            served("Cache-Control: public, max-age=5\r\n", &short),
        ),
    ])
    .await;
    let (long_id, short_id) = (server.url("/long"), server.url("/short"));
    set(&long, &minimal(&long_id));
    set(&short, &minimal(&short_id));
    let clock = Arc::new(FixedClock::new(1_800_000_000));
    let trusting = server.trusting(true);
    let app = spawn_with_clock(clock.clone(), |s| {
        with_admin(trusting(s))
            .with("cimd.cache_max_secs", 300)
            .unwrap()
    })
    .await;
    resolved(&app, &long_id).await;
    resolved(&app, &short_id).await;
    // max-age=5 is raised to cimd.cache_min_secs (30); 600 is capped at cache_max_secs (300).
    clock.advance(29);
    resolved(&app, &short_id).await;
    assert_eq!(fetches(&server, "/short"), 1);
    clock.advance(2);
    resolved(&app, &short_id).await;
    assert_eq!(fetches(&server, "/short"), 2);
    clock.advance(299 - 31);
    resolved(&app, &long_id).await;
    assert_eq!(fetches(&server, "/long"), 1, "fresh for 300 s");
    clock.advance(2);
    resolved(&app, &long_id).await;
    assert_eq!(fetches(&server, "/long"), 2, "stale after 300 s, not 600");
}

#[tokio::test]
async fn fifty_concurrent_resolutions_of_one_url_share_one_fetch() {
    let body = doc();
    let server = TlsServer::start(vec![(
        "/c",
        Reply::Document {
            headers: "Cache-Control: no-store\r\n",
            delay: Duration::from_millis(300),
            body: body.clone(),
        },
    )])
    .await;
    let id = server.url("/c");
    set(&body, &minimal(&id));
    let app = Arc::new(app(&server, |s| s).await);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (app, id) = (app.clone(), id.clone());
            tokio::spawn(async move { lookup(&app, &id).await.status().as_u16() })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    // no-store: nothing is reused afterwards, so the single fetch is the shared flight's.
    assert_eq!(fetches(&server, "/c"), 1);
}

#[tokio::test]
async fn no_store_fetches_on_every_resolution_and_a_changed_document_updates_the_client() {
    let Fixture {
        body,
        server,
        id,
        app,
    } = fixture("Cache-Control: no-store\r\n", |s| s).await;
    let first = resolved(&app, &id).await;
    resolved(&app, &id).await;
    resolved(&app, &id).await;
    assert_eq!(fetches(&server, "/c"), 3);
    let mut changed = minimal(&id);
    changed["client_name"] = json!("Renamed");
    changed["redirect_uris"] = json!(["https://app.example/cb2"]);
    set(&body, &changed);
    let second = resolved(&app, &id).await;
    assert_eq!(second["client_name"], "Renamed");
    assert_eq!(second["redirect_uris"], json!(["https://app.example/cb2"]));
    assert_eq!(second["created_at"], first["created_at"]);
    assert_eq!(second["client_id_issued_at"], first["client_id_issued_at"]);
}

#[tokio::test]
async fn a_disabled_client_stays_disabled_across_refetches_and_keeps_its_document_metadata() {
    let Fixture {
        body,
        server: _server,
        id,
        app,
    } = fixture("Cache-Control: no-cache\r\n", |s| s).await;
    resolved(&app, &id).await;
    let path = format!("/admin/clients/{}", enc(&id));
    let r = call(
        &app,
        Method::PATCH,
        &path,
        Some(WRITE),
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(r.status(), 200);
    // Its metadata comes from the document: an operator cannot patch it.
    let r = call(
        &app,
        Method::PATCH,
        &path,
        Some(WRITE),
        Some(json!({"client_name": "mine"})),
    )
    .await;
    assert!(assert_error(r, 400, "invalid_request")
        .await
        .contains("only disabled"));
    let mut changed = minimal(&id);
    changed["client_name"] = json!("Changed");
    set(&body, &changed);
    let v = resolved(&app, &id).await;
    assert_eq!(v["client_name"], "Changed");
    assert_eq!(v["disabled"], true);
    // No RFC 7592 token to reissue for a document's client.
    let r = call(
        &app,
        Method::POST,
        &format!("{path}/registration_access_token"),
        Some(WRITE),
        None,
    )
    .await;
    assert_error(r, 400, "invalid_request").await;
}

#[tokio::test]
async fn a_document_that_turns_invalid_is_refused_and_not_served_from_the_cache() {
    let Fixture {
        body,
        server,
        id,
        app,
    } = fixture("Cache-Control: no-store\r\n", |s| s).await;
    resolved(&app, &id).await;
    set(
        &body,
        &json!({"client_id": id, "client_secret": "x", "redirect_uris": []}),
    );
    assert!(refused(&app, &id).await.contains("client_secret"));
    // The failure is not remembered: the fixed document is fetched and accepted at once.
    set(&body, &minimal(&id));
    resolved(&app, &id).await;
    assert_eq!(fetches(&server, "/c"), 3);
}

#[tokio::test]
async fn a_jwks_uri_in_the_document_is_fetched_and_checked_as_for_registrations() {
    let body = doc();
    let server = TlsServer::start(vec![("/c", served("", &body))]).await;
    server.route("/jwks", Reply::Json(r#"{"keys": []}"#.into()));
    let id = server.url("/c");
    let mut d = minimal(&id);
    d["token_endpoint_auth_method"] = json!("private_key_jwt");
    d["jwks_uri"] = json!(server.url("/jwks"));
    set(&body, &d);
    let app = app(&server, |s| s).await;
    let description = refused(&app, &id).await;
    assert!(description.contains("jwks_uri"), "{description}");
    assert!(server.requested().iter().any(|p| p == "/jwks"));
}

#[tokio::test]
async fn same_origin_redirects_are_required_when_configured() {
    let Fixture {
        body,
        server,
        id,
        app,
    } = fixture("", |s| {
        s.with("cimd.require_same_origin_redirects", true).unwrap()
    })
    .await;
    let description = refused(&app, &id).await;
    assert!(
        description.contains("cimd.require_same_origin_redirects"),
        "{description}"
    );
    let mut same = minimal(&id);
    same["redirect_uris"] = json!([server.url("/cb")]);
    set(&body, &same);
    resolved(&app, &id).await;
}

#[tokio::test]
async fn authenticate_resolves_the_document_and_names_its_method() {
    let Fixture {
        body: _body,
        server,
        id,
        app,
    } = fixture("", |s| s).await;
    let path = format!("/admin/clients/{}/authenticate", enc(&id));
    let secret = json!({"client_secret": "whatever"});
    let r = call(&app, Method::POST, &path, Some(AUTHN), Some(secret.clone())).await;
    assert!(assert_error(r, 400, "invalid_request")
        .await
        .contains("\"none\""));
    assert_eq!(fetches(&server, "/c"), 1);
    let bad = format!("/admin/clients/{}/authenticate", enc("https://app.example"));
    let r = call(&app, Method::POST, &bad, Some(AUTHN), Some(secret)).await;
    assert!(assert_error(r, 400, "invalid_client")
        .await
        .contains("path"));
}

#[tokio::test]
async fn discovery_publishes_cimd_support_and_none_only_when_enabled() {
    for enabled in [true, false] {
        let app = spawn_app_with(|s| {
            with_admin(s)
                .with("cimd.enabled", enabled)
                .unwrap()
                .with(
                    "metadata.token_endpoint_auth_methods_supported",
                    ["client_secret_basic", "private_key_jwt"],
                )
                .unwrap()
        })
        .await;
        for path in [
            "/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server",
        ] {
            let d: Value = app
                .client
                .get(format!("{}{path}", app.address))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let methods = d["token_endpoint_auth_methods_supported"]
                .as_array()
                .unwrap();
            if enabled {
                assert_eq!(d["client_id_metadata_document_supported"], true, "{path}");
                assert!(methods.contains(&json!("none")), "{path}: {methods:?}");
                assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
            } else {
                assert!(d.get("client_id_metadata_document_supported").is_none());
                assert!(!methods.contains(&json!("none")));
            }
        }
        if !enabled {
            let description = refused(&app, "https://app.example/c").await;
            assert!(description.contains("cimd.enabled"), "{description}");
        }
    }
}

#[tokio::test]
async fn rfc_7591_never_issues_an_https_client_id_and_operators_cannot_create_one() {
    let app = spawn_app_with(with_admin).await;
    let mut body = crate::helpers::web_client();
    body["client_id"] = json!("https://app.example/c");
    let issued = app.register(&body).await;
    let id = issued["client_id"].as_str().unwrap();
    assert!(!id.contains(':'), "{id}");
    let r = call(&app, Method::POST, "/admin/clients", Some(ALL), Some(body)).await;
    assert!(assert_error(r, 400, "invalid_request")
        .await
        .contains("client_id"));
}

/// The shape the MCP TypeScript SDK's `clientMetadataUrl` flow expects a host to publish: a
/// public client (`none`) with a loopback callback, the code and refresh grants, a name, a
/// homepage and a scope.
#[tokio::test]
async fn a_document_shaped_like_the_mcp_typescript_sdks_resolves() {
    let body = doc();
    let server = TlsServer::start(vec![(
        "/oauth/client-metadata.json",
        served("Cache-Control: public, max-age=3600\r\n", &body),
    )])
    .await;
    let id = server.url("/oauth/client-metadata.json");
    set(
        &body,
        &json!({
            "client_id": id,
            "client_name": "Example MCP Client",
            "client_uri": "https://mcp-client.example",
            "redirect_uris": ["http://localhost:3000/callback", "http://127.0.0.1:3000/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "scope": "mcp:tools",
        }),
    );
    let app = app(&server, |s| s).await;
    let v = resolved(&app, &id).await;
    assert_eq!(v["token_endpoint_auth_method"], "none");
    assert_eq!(
        v["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(
        v["redirect_uris"],
        json!([
            "http://localhost:3000/callback",
            "http://127.0.0.1:3000/callback"
        ])
    );
    assert_eq!(v["scope"], "mcp:tools");
}

#[tokio::test]
async fn documents_are_judged_under_cimd_policy() {
    let Fixture {
        body,
        server: _server,
        id,
        app,
    } = fixture("Cache-Control: no-store\r\n", |s| {
        s.with(
            "policies.documents",
            json!({"allowed_scopes": ["mcp"], "force": {"client_uri": "https://forced.example"}}),
        )
        .unwrap()
        .with("cimd.policy", "documents")
        .unwrap()
    })
    .await;
    let v = resolved(&app, &id).await;
    assert_eq!(v["policy"], "documents");
    assert_eq!(v["client_uri"], "https://forced.example");
    let mut wide = minimal(&id);
    wide["scope"] = json!("mcp admin");
    set(&body, &wide);
    let description = refused(&app, &id).await;
    assert!(description.contains("admin"), "{description}");
}

#[test]
fn settings_naming_an_unknown_cimd_policy_are_refused() {
    let err = Settings::defaults()
        .unwrap()
        .with("cimd.policy", "missing")
        .unwrap_err();
    assert!(err.to_string().contains("cimd.policy"), "{err}");
    let err = Settings::defaults()
        .unwrap()
        .with("cimd.cache_min_secs", 100_000)
        .unwrap_err();
    assert!(err.to_string().contains("cache_min_secs"), "{err}");
}

#[tokio::test]
async fn documents_count_in_their_policys_max_clients_and_deletion_frees_the_place() {
    let (a, b) = (doc(), doc());
    let server = TlsServer::start(vec![("/a", served("", &a)), ("/b", served("", &b))]).await;
    let (id_a, id_b) = (server.url("/a"), server.url("/b"));
    set(&a, &minimal(&id_a));
    set(&b, &minimal(&id_b));
    let app = app(&server, |s| {
        s.with("policies.documents", json!({"max_clients": 1}))
            .unwrap()
            .with("cimd.policy", "documents")
            .unwrap()
    })
    .await;
    resolved(&app, &id_a).await;
    // Resolving the same client again takes no second place.
    resolved(&app, &id_a).await;
    let description = refused(&app, &id_b).await;
    assert!(
        description.contains("maximum number of clients"),
        "{description}"
    );
    let r = call(
        &app,
        Method::DELETE,
        &format!("/admin/clients/{}", enc(&id_a)),
        Some(WRITE),
        None,
    )
    .await;
    assert_eq!(r.status(), 204);
    resolved(&app, &id_b).await;
}

#[tokio::test]
async fn first_resolution_and_each_document_change_are_audited_as_system_events() {
    let Fixture {
        body,
        server: _server,
        id,
        app,
    } = fixture("Cache-Control: no-store\r\n", |s| s).await;
    resolved(&app, &id).await;
    // Fetched again, unchanged: nothing to record.
    resolved(&app, &id).await;
    let mut changed = minimal(&id);
    changed["client_name"] = json!("Renamed");
    set(&body, &changed);
    resolved(&app, &id).await;
    let r = call(
        &app,
        Method::GET,
        &format!("/admin/audit?client_id={}", enc(&id)),
        Some(ALL),
        None,
    )
    .await;
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    let records = page["records"].as_array().unwrap();
    let events: Vec<&str> = records
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["client.resolved", "client.document_changed"]);
    for r in records {
        assert_eq!(r["client_id"], id.as_str());
        assert_eq!(r["actor"]["kind"], "system", "{r}");
        assert!(r["actor"]["name"].is_null(), "{r}");
    }
    assert!(records[0]["before"].is_null());
    let first_changed = records[0]["changed"].as_array().unwrap();
    assert!(
        first_changed.contains(&json!("client_name")),
        "{first_changed:?}"
    );
    assert_eq!(records[1]["changed"], json!(["client_name"]));
    assert_eq!(records[1]["before"], records[0]["after"]);
    assert_ne!(records[1]["before"], records[1]["after"]);
}
