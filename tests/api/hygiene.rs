//! Input hygiene: content type, body limits, JSON shape, methods, unknown paths, CORS.

use crate::helpers::*;
use reqwest::header::{ALLOW, CONTENT_TYPE};
use serde_json::{json, Value};

#[tokio::test]
async fn a_body_over_the_limit_gets_413_with_a_json_error() {
    let app = spawn_app().await;
    let big = format!("{{\"client_name\":\"{}\"}}", "a".repeat(70 * 1024));
    assert_error(
        app.post_raw("application/json", big.clone()).await,
        413,
        "invalid_request",
    )
    .await;
    // without Content-Length (chunked)
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(big.into_bytes())]);
    let r = app
        .client
        .post(&app.endpoint)
        .header(CONTENT_TYPE, "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_error(r, 413, "invalid_request").await;
}

#[tokio::test]
async fn a_wrong_content_type_gets_415() {
    let app = spawn_app().await;
    let body = web_client().to_string();
    assert_error(
        app.post_raw("text/plain", body.clone()).await,
        415,
        "invalid_request",
    )
    .await;
    let r = app
        .client
        .post(&app.endpoint)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_error(r, 415, "invalid_request").await;
    // parameters and +json are fine
    assert_eq!(
        app.post_raw("application/json; charset=utf-8", web_client().to_string())
            .await
            .status(),
        201
    );
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_get_invalid_client_metadata() {
    let app = spawn_app().await;
    for body in [
        "null",
        "[]",
        "\"x\"",
        "1",
        "{",
        "not json",
        "{\"a\":1,\"a\":2}",
    ] {
        let d = assert_error(
            app.post_raw("application/json", body).await,
            400,
            "invalid_client_metadata",
        )
        .await;
        assert!(d.contains("JSON"), "{body}: {d}");
    }
    let d = assert_error(
        app.post_raw("application/json", vec![0xff, 0xfe]).await,
        400,
        "invalid_client_metadata",
    )
    .await;
    assert!(d.contains("JSON"));
    let deep = "[".repeat(5000) + &"]".repeat(5000);
    assert_error(
        app.post_raw("application/json", deep).await,
        400,
        "invalid_client_metadata",
    )
    .await;
}

#[tokio::test]
async fn duplicate_members_are_refused() {
    let app = spawn_app().await;
    let body = r#"{"redirect_uris":["https://good.example/cb"],"redirect_uris":["https://evil.example/cb"]}"#;
    let d = assert_error(
        app.post_raw("application/json", body).await,
        400,
        "invalid_client_metadata",
    )
    .await;
    assert!(d.contains("duplicate"), "{d}");
}

#[tokio::test]
async fn unknown_methods_get_405_with_allow() {
    let app = spawn_app().await;
    let r = app.client.get(&app.endpoint).send().await.unwrap();
    assert_eq!(r.headers()[ALLOW], "POST, OPTIONS");
    assert_error(r, 405, "invalid_request").await;
    let r = app
        .client
        .post(format!("{}/some-id", app.endpoint))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[ALLOW], "GET, PUT, DELETE, OPTIONS");
    assert_error(r, 405, "invalid_request").await;
}

#[tokio::test]
async fn unknown_paths_get_a_json_404() {
    let app = spawn_app().await;
    let r = app
        .client
        .get(format!("{}/nope", app.address))
        .send()
        .await
        .unwrap();
    assert_error(r, 404, "not_found").await;
}

#[tokio::test]
async fn errors_are_never_html_and_say_nosniff() {
    let app = spawn_app().await;
    let r = app
        .post_raw(
            "application/json",
            r#"{"<img onerror=confirm(1337) src/>":1}"#,
        )
        .await;
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_error(r, 400, "invalid_redirect_uri").await;
}

#[tokio::test]
async fn cors_preflight_and_simple_requests_are_answered() {
    let app = spawn_app().await;
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, &app.endpoint)
        .header("Origin", "https://inspector.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type, authorization",
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let methods = r.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        methods.contains("POST") && methods.contains("PUT"),
        "{methods}"
    );
    let r = app
        .client
        .post(&app.endpoint)
        .header("Origin", "https://inspector.example")
        .json(&web_client())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(r
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
}

#[tokio::test]
async fn cors_can_be_limited_to_configured_origins() {
    let app = spawn_app_with(|s| {
        s.with("cors.allowed_origins", vec!["https://app.example"])
            .unwrap()
    })
    .await;
    let r = app
        .client
        .get(format!("{}/.well-known/openid-configuration", app.address))
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let r = app
        .client
        .get(format!("{}/.well-known/openid-configuration", app.address))
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn healthz_answers() {
    let app = spawn_app().await;
    let r = app.healthz().await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({"status": "ok"}));
}
