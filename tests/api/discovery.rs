//! RFC 8414 / OpenID Connect Discovery documents.

use crate::helpers::*;
use crate::tls::{Reply, TlsServer};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

#[tokio::test]
async fn both_discovery_documents_publish_the_registration_endpoint_and_enforced_lists() {
    let app = spawn_app_with(|s| {
        s.with(
            "discovery.authorization_endpoint",
            "https://as.example/authorize",
        )
        .unwrap()
        .with(
            "metadata.token_endpoint_auth_methods_supported",
            vec!["private_key_jwt", "none"],
        )
        .unwrap()
    })
    .await;
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let doc = document(&app, path).await;
        assert_eq!(doc["issuer"], app.address);
        assert_eq!(doc["registration_endpoint"], app.endpoint);
        assert_eq!(
            doc["authorization_endpoint"],
            "https://as.example/authorize"
        );
        assert_eq!(
            doc["token_endpoint_auth_methods_supported"],
            json!(["private_key_jwt", "none"])
        );
        assert!(doc["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("authorization_code")));
        assert!(
            doc.get("scopes_supported").is_none(),
            "empty lists are left out"
        );
    }
    // and the same list is what validation enforces
    let mut req = web_client();
    req["token_endpoint_auth_method"] = json!("client_secret_basic");
    assert_error(app.post(&req).await, 400, "invalid_client_metadata").await;
}

#[tokio::test]
async fn operator_additions_cannot_override_enforced_members() {
    let app = spawn_app_with(|s| {
        s.with(
            "discovery.registration_endpoint",
            "https://elsewhere.example/reg",
        )
        .unwrap()
    })
    .await;
    let doc = document(&app, "/.well-known/openid-configuration").await;
    assert_eq!(doc["registration_endpoint"], app.endpoint);
}

#[tokio::test]
async fn head_is_served_where_allow_says_so() {
    let app = spawn_app().await;
    for path in ["/.well-known/openid-configuration", "/healthz"] {
        let r = app
            .client
            .head(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.bytes().await.unwrap().is_empty(),
            "{path}: HEAD has no body"
        );
    }
}

async fn document(app: &TestApp, path: &str) -> Value {
    let r = app
        .client
        .get(format!("{}{path}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// Poll the discovery document until `done` holds (the refresh task runs on its own schedule).
async fn document_once(app: &TestApp, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let doc = document(app, "/.well-known/oauth-authorization-server").await;
        if done(&doc) {
            return doc;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "discovery never reached the expected state: {doc}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn as_metadata(token_endpoint: &str) -> String {
    json!({
        "issuer": "https://as.example",
        "authorization_endpoint": "https://as.example/authorize",
        "token_endpoint": token_endpoint,
        "jwks_uri": "https://as.example/jwks",
        "userinfo_endpoint": "https://as.example/userinfo",
        "registration_endpoint": "https://as.example/not-this-one",
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": ["sub"]
    })
    .to_string()
}

#[tokio::test]
async fn pkce_methods_are_advertised_by_default() {
    let app = spawn_app().await;
    let doc = document(&app, "/.well-known/openid-configuration").await;
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
}

#[tokio::test]
async fn an_issuer_with_a_path_is_served_at_the_rfc_8414_locations() {
    let app = spawn_app_with(|s| s.with("issuer", "https://id.example/tenant").unwrap()).await;
    for path in [
        "/.well-known/oauth-authorization-server/tenant",
        "/.well-known/openid-configuration/tenant",
        "/tenant/.well-known/openid-configuration",
        "/.well-known/openid-configuration",
    ] {
        let doc = document(&app, path).await;
        assert_eq!(doc["issuer"], "https://id.example/tenant", "{path}");
        assert_eq!(
            doc["registration_endpoint"], "https://id.example/tenant/register",
            "{path}"
        );
    }
    let r = app
        .client
        .get(format!(
            "{}/.well-known/oauth-authorization-server/other",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn the_authorization_servers_metadata_is_fetched_and_published() {
    let doc = Arc::new(Mutex::new(as_metadata("https://as.example/token")));
    let server = TlsServer::start(vec![(
        "/.well-known/openid-configuration",
        Reply::Live(doc.clone()),
    )])
    .await;
    let url = server.url("/.well-known/openid-configuration");
    let app = server
        .app_with(true, |s| {
            s.with("discovery.authorization_server_metadata_url", url)
                .unwrap()
                .with("discovery.authorization_server_metadata_refresh_secs", 1)
                .unwrap()
                .with("discovery.jwks_uri", "https://keys.example/jwks")
                .unwrap()
        })
        .await;
    let published = document_once(&app, |d| d.get("token_endpoint").is_some()).await;
    assert_eq!(
        published["authorization_endpoint"],
        "https://as.example/authorize"
    );
    assert_eq!(
        published["userinfo_endpoint"],
        "https://as.example/userinfo"
    );
    assert_eq!(published["claims_supported"], json!(["sub"]));
    // The registrar's own issuer, endpoint and lists; an explicit [discovery] member wins.
    assert_eq!(published["issuer"], app.address);
    assert_eq!(published["registration_endpoint"], app.endpoint);
    assert_eq!(published["jwks_uri"], "https://keys.example/jwks");
    assert!(published["grant_types_supported"]
        .as_array()
        .unwrap()
        .contains(&json!("refresh_token")));
    // Refreshed: a changed document shows up without a restart.
    *doc.lock().unwrap() = as_metadata("https://as.example/token2");
    document_once(&app, |d| d["token_endpoint"] == "https://as.example/token2").await;
    // An authorization server that goes away: the last metadata stays.
    doc.lock().unwrap().clear();
    let before = server.requested().len();
    document_once(&app, |_| server.requested().len() > before).await;
    let kept = document(&app, "/.well-known/openid-configuration").await;
    assert_eq!(kept["token_endpoint"], "https://as.example/token2");
    // Stopped on shutdown: no fetch after the server has stopped.
    app.stop().await;
    let after_stop = server.requested().len();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        server.requested().len(),
        after_stop,
        "the refresh task outlived the server"
    );
}

#[tokio::test]
async fn an_unreachable_authorization_server_is_retried_not_fatal() {
    let doc = Arc::new(Mutex::new(String::new()));
    let server = TlsServer::start(vec![("/as", Reply::Live(doc.clone()))]).await;
    let url = server.url("/as");
    let app = server
        .app_with(true, |s| {
            s.with("discovery.authorization_server_metadata_url", url)
                .unwrap()
        })
        .await;
    assert_eq!(app.healthz().await.status(), 200);
    app.register(&web_client()).await;
    let first = document(&app, "/.well-known/openid-configuration").await;
    assert!(first.get("token_endpoint").is_none(), "{first}");
    *doc.lock().unwrap() = as_metadata("https://as.example/token");
    // Retried after a failure (1 s, then 2 s, ...), long before the hourly refresh.
    document_once(&app, |d| d["token_endpoint"] == "https://as.example/token").await;
}

#[tokio::test]
async fn the_authorization_server_metadata_fetch_obeys_the_ssrf_rules() {
    let server = TlsServer::start(vec![(
        "/as",
        Reply::Json(as_metadata("https://as.example/t")),
    )])
    .await;
    let url = server.url("/as");
    // Loopback without fetch.allow_private_addresses: never contacted, and the server still runs.
    let app = server
        .app_with(false, |s| {
            s.with("discovery.authorization_server_metadata_url", url)
                .unwrap()
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let doc = document(&app, "/.well-known/openid-configuration").await;
    assert!(doc.get("token_endpoint").is_none(), "{doc}");
    assert_eq!(server.connections(), 0);
    assert_eq!(app.healthz().await.status(), 200);
}

#[test]
fn the_authorization_server_metadata_url_must_be_https() {
    let s = registrar::settings::Settings::defaults().unwrap();
    let e = s
        .with(
            "discovery.authorization_server_metadata_url",
            "http://as.example/.well-known/openid-configuration",
        )
        .unwrap_err();
    assert!(e.to_string().contains("must be an https URL"), "{e}");
}
