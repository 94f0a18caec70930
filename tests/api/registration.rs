//! RFC 7591 §3: registration.

use crate::helpers::*;
use reqwest::header::CACHE_CONTROL;
use serde_json::{json, Value};

#[tokio::test]
async fn register_returns_201_with_credentials_and_defaults() {
    let app = spawn_app().await;
    let r = app.post(&web_client()).await;
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().await.unwrap();
    let client_id = body["client_id"].as_str().unwrap();
    assert!(client_id.len() >= 22, "128 bits base64url");
    assert!(body["client_id_issued_at"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(body["client_secret"].as_str().unwrap().len(), 43);
    assert_eq!(body["client_secret_expires_at"], 0);
    assert_eq!(
        body["registration_access_token"].as_str().unwrap().len(),
        43
    );
    assert_eq!(
        body["registration_client_uri"],
        format!("{}/{client_id}", app.endpoint)
    );
    assert!(body["registration_client_uri"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert_eq!(body["grant_types"], json!(["authorization_code"]));
    assert_eq!(body["response_types"], json!(["code"]));
    assert_eq!(body["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(
        body["redirect_uris"],
        json!(["https://client.example.org/cb"])
    );
    assert_eq!(body["client_name"], "Example");
}

#[tokio::test]
async fn register_issues_no_secret_to_a_public_client() {
    let app = spawn_app().await;
    let mut req = web_client();
    req["token_endpoint_auth_method"] = json!("none");
    let body = app.register(&req).await;
    assert!(body.get("client_secret").is_none());
    assert!(body.get("client_secret_expires_at").is_none());
    assert_eq!(body["token_endpoint_auth_method"], "none");
}

#[tokio::test]
async fn register_ignores_a_client_chosen_client_id_and_secret() {
    let app = spawn_app().await;
    let mut req = web_client();
    req["client_id"] = json!("admin");
    req["client_secret"] = json!("chosen");
    let body = app.register(&req).await;
    assert_ne!(body["client_id"], "admin");
    assert_ne!(body["client_secret"], "chosen");
}

#[tokio::test]
async fn register_gives_every_client_distinct_credentials() {
    let app = spawn_app().await;
    let a = app.register(&web_client()).await;
    let b = app.register(&web_client()).await;
    for k in ["client_id", "client_secret", "registration_access_token"] {
        assert_ne!(a[k], b[k], "{k}");
    }
}

#[tokio::test]
async fn register_drops_unknown_members() {
    let app = spawn_app().await;
    let mut req = web_client();
    req["resource"] = json!("https://mcp.example.com");
    req["<img onerror=x>"] = json!(1);
    let body = app.register(&req).await;
    assert!(body.get("resource").is_none());
    assert!(body.get("<img onerror=x>").is_none());
}

#[tokio::test]
async fn register_sets_client_secret_expires_at_from_the_configured_lifetime() {
    let app = spawn_app_with(|s| {
        s.with("credentials.client_secret_lifetime_secs", 3600)
            .unwrap()
    })
    .await;
    let body = app.register(&web_client()).await;
    let issued = body["client_id_issued_at"].as_i64().unwrap();
    assert_eq!(
        body["client_secret_expires_at"].as_i64().unwrap(),
        issued + 3600
    );
}

#[tokio::test]
async fn register_stores_the_secret_as_argon2id_with_the_default_parameters() {
    // Default cost (m=19456, t=2, p=1) on purpose: the record must carry exactly these.
    let app = spawn_app_with(|s| {
        s.with("credentials.argon2_memory_kib", 19456)
            .unwrap()
            .with("credentials.argon2_iterations", 2)
            .unwrap()
    })
    .await;
    let body = app.register(&web_client()).await;
    let secret = body["client_secret"].as_str().unwrap().to_owned();
    let token = body["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = app.stop().await;
    let store = open_store(dir.path()).await;
    let record = store
        .get(body["client_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let phc = record.client_secret_hash.clone().unwrap();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    let raw = String::from_utf8_lossy(&record.encode().unwrap()).into_owned();
    assert!(!raw.contains(&secret), "plaintext secret stored");
    assert!(!raw.contains(&token), "plaintext token stored");
}

#[tokio::test]
async fn register_requires_redirect_uris_for_redirect_based_grants() {
    let app = spawn_app().await;
    let d = assert_error(
        app.post(&json!({"client_name": "x"})).await,
        400,
        "invalid_redirect_uri",
    )
    .await;
    assert!(d.contains("redirect_uris"), "{d}");
}

#[tokio::test]
async fn register_accepts_a_client_credentials_client_without_redirect_uris() {
    let app = spawn_app().await;
    let body = app
        .register(&json!({"grant_types": ["client_credentials"], "response_types": []}))
        .await;
    assert_eq!(body["grant_types"], json!(["client_credentials"]));
    assert_eq!(body["response_types"], json!([]));
    let body = app
        .register(&json!({"grant_types": ["client_credentials"]}))
        .await;
    assert_eq!(
        body["response_types"],
        json!([]),
        "derived from grant_types"
    );
}

#[tokio::test]
async fn register_rejects_a_fragment_in_redirect_uri() {
    let app = spawn_app().await;
    for uri in [
        "https://client.example.org/cb#x",
        "https://client.example.org/cb#",
    ] {
        let d = assert_error(
            app.post(&json!({"redirect_uris": [uri]})).await,
            400,
            "invalid_redirect_uri",
        )
        .await;
        assert!(d.contains("fragment") && d.contains("redirect_uris"), "{d}");
    }
}

#[tokio::test]
async fn register_rejects_relative_and_non_string_redirect_uris() {
    let app = spawn_app().await;
    for bad in [
        json!(["/cb"]),
        json!("https://a.example/cb"),
        json!([123]),
        json!([""]),
        json!(["https://a.example/cb", null]),
    ] {
        let r = app.post(&json!({"redirect_uris": bad})).await;
        let d = assert_error(r, 400, "invalid_redirect_uri").await;
        assert!(d.contains("redirect_uris"), "{d}");
    }
}

#[tokio::test]
async fn register_rejects_inconsistent_grant_and_response_types() {
    let app = spawn_app().await;
    let r = app.post(&json!({"redirect_uris": ["https://a.example/cb"], "grant_types": ["client_credentials"], "response_types": ["code"]})).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(
        d.contains("grant_types") && d.contains("authorization_code"),
        "{d}"
    );
}

#[tokio::test]
async fn register_rejects_an_unsupported_auth_method_naming_the_field() {
    let app = spawn_app().await;
    let mut req = web_client();
    req["token_endpoint_auth_method"] = json!("magic");
    let d = assert_error(app.post(&req).await, 400, "invalid_client_metadata").await;
    assert!(d.contains("token_endpoint_auth_method"), "{d}");
}
