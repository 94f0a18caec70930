//! The admin API (README "Admin API"): its own listener, admin tokens and scopes, the client
//! view, authentication for the authorization server, listing, operator writes.

use crate::helpers::{
    assert_error, snapshot, spawn_app, spawn_app_with, spawn_with_clock, web_client, TestApp,
};
use registrar::clock::FixedClock;
use registrar::settings::Settings;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;

pub const READ: &str = "admin-read-token-0001";
pub const WRITE: &str = "admin-write-token-0002";
pub const AUTHN: &str = "admin-authn-token-0003";
pub const ALL: &str = "admin-all-token-00004";

/// Admin listener on port 0 with one token per scope and one with all of them.
pub fn with_admin(s: Settings) -> Settings {
    s.with("admin.port", 0)
        .unwrap()
        .with(
            "admin.tokens",
            json!([
                {"name": "reader", "token": READ, "scopes": ["clients:read"]},
                // The same kind of token, configured by its digest only.
                {"name": "writer", "sha256": sha256_hex(WRITE), "scopes": ["clients:write"]},
                {"name": "as", "token": AUTHN, "scopes": ["clients:authenticate"]},
                {"name": "ops", "token": ALL,
                 "scopes": ["clients:read", "clients:write", "clients:authenticate", "audit:read", "webhooks:write"]},
            ]),
        )
        .unwrap()
}

fn sha256_hex(token: &str) -> String {
    registrar::credentials::token_digest(token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub async fn admin_app() -> TestApp {
    spawn_app_with(with_admin).await
}

pub async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> reqwest::Response {
    let url = format!("{}{path}", app.admin.as_ref().expect("admin listener runs"));
    let mut r = app.client.request(method, url);
    if let Some(t) = token {
        r = r.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.unwrap()
}

pub async fn ok_json(r: reqwest::Response, status: u16) -> Value {
    let got = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{body}");
    body
}

pub async fn authenticate(app: &TestApp, id: &str, secret: &str) -> reqwest::Response {
    call(
        app,
        Method::POST,
        &format!("/admin/clients/{id}/authenticate"),
        Some(AUTHN),
        Some(json!({"client_secret": secret})),
    )
    .await
}

/// The client view, asserting 200.
async fn view(app: &TestApp, id: &str) -> Value {
    let r = call(
        app,
        Method::GET,
        &format!("/admin/clients/{id}"),
        Some(READ),
        None,
    )
    .await;
    ok_json(r, 200).await
}

/// PATCH with a raw body and content type.
async fn patch_raw(
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: &'static str,
) -> reqwest::Response {
    app.client
        .patch(format!("{}{path}", app.admin.as_ref().unwrap()))
        .header(AUTHORIZATION, format!("Bearer {WRITE}"))
        .header(CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

pub fn id_of(v: &Value) -> String {
    v["client_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_admin_listener_runs_only_with_tokens_and_never_on_the_public_port() {
    let plain = spawn_app().await;
    assert!(plain.admin.is_none());
    let app = admin_app().await;
    assert_ne!(app.admin.as_deref(), Some(app.address.as_str()));
    let public = app
        .client
        .get(format!("{}/admin/clients", app.address))
        .header(AUTHORIZATION, format!("Bearer {ALL}"))
        .send()
        .await
        .unwrap();
    assert_error(public, 404, "not_found").await;
    // And the public routes are not on the admin listener.
    let r = call(
        &app,
        Method::POST,
        "/register",
        Some(ALL),
        Some(web_client()),
    )
    .await;
    assert_error(r, 404, "not_found").await;
}

#[tokio::test]
async fn the_admin_listener_sends_no_cors_headers() {
    let app = admin_app().await;
    for method in [Method::GET, Method::OPTIONS] {
        let r = app
            .client
            .request(
                method,
                format!("{}/admin/clients", app.admin.as_ref().unwrap()),
            )
            .header(AUTHORIZATION, format!("Bearer {READ}"))
            .header("Origin", "https://evil.example")
            .header("Access-Control-Request-Method", "GET")
            .send()
            .await
            .unwrap();
        assert!(r
            .headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")));
    }
}

#[tokio::test]
async fn a_missing_or_unknown_admin_token_is_a_bearer_challenge() {
    let app = admin_app().await;
    let r = call(&app, Method::GET, "/admin/clients", None, None).await;
    let challenge = r.headers()[WWW_AUTHENTICATE].to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(
        !challenge.contains("error="),
        "no error code without a token: {challenge}"
    );
    assert_error(r, 401, "invalid_token").await;
    for bad in ["Bearer not-a-configured-token", "Basic YTpi", "Bearer"] {
        let r = app
            .client
            .get(format!("{}/admin/clients", app.admin.as_ref().unwrap()))
            .header(AUTHORIZATION, bad)
            .send()
            .await
            .unwrap();
        let challenge = r.headers()[WWW_AUTHENTICATE].to_str().unwrap().to_owned();
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{bad}: {challenge}"
        );
        assert_error(r, 401, "invalid_token").await;
    }
}

#[tokio::test]
async fn every_endpoint_demands_its_scope() {
    let app = admin_app().await;
    let client = app.register(&web_client()).await;
    let id = id_of(&client);
    let cases: Vec<(Method, String, &str, Option<Value>)> = vec![
        (Method::GET, "/admin/clients".into(), "clients:read", None),
        (
            Method::GET,
            format!("/admin/clients/{id}"),
            "clients:read",
            None,
        ),
        (
            Method::POST,
            "/admin/clients".into(),
            "clients:write",
            Some(web_client()),
        ),
        (
            Method::PATCH,
            format!("/admin/clients/{id}"),
            "clients:write",
            Some(json!({"disabled": false})),
        ),
        (
            Method::DELETE,
            format!("/admin/clients/{id}"),
            "clients:write",
            None,
        ),
        (
            Method::DELETE,
            "/admin/clients?tier=anonymous".into(),
            "clients:write",
            None,
        ),
        (
            Method::POST,
            format!("/admin/clients/{id}/client_secret"),
            "clients:write",
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/admin/clients/{id}/registration_access_token"),
            "clients:write",
            None,
        ),
        (
            Method::POST,
            format!("/admin/clients/{id}/authenticate"),
            "clients:authenticate",
            Some(json!({"client_secret": "x"})),
        ),
    ];
    for (method, path, scope, body) in cases {
        for token in [READ, WRITE, AUTHN] {
            let holds = match token {
                READ => scope == "clients:read",
                WRITE => scope == "clients:write",
                _ => scope == "clients:authenticate",
            };
            if holds {
                continue;
            }
            let r = call(&app, method.clone(), &path, Some(token), body.clone()).await;
            let challenge = r.headers()[WWW_AUTHENTICATE].to_str().unwrap().to_owned();
            assert!(
                challenge.contains("error=\"insufficient_scope\"")
                    && challenge.contains(&format!("scope=\"{scope}\"")),
                "{method} {path}: {challenge}"
            );
            let d = assert_error(r, 403, "insufficient_scope").await;
            assert!(d.contains(scope), "{d}");
        }
    }
    // Nothing was changed by the refused calls.
    let view = view(&app, &id).await;
    assert_eq!(view["client_id"], id.as_str());
}

#[tokio::test]
async fn the_client_view_has_the_directory_fields_and_no_credentials() {
    let app = admin_app().await;
    let client = app.register(&web_client()).await;
    let id = id_of(&client);
    let r = call(
        &app,
        Method::GET,
        &format!("/admin/clients/{id}"),
        Some(READ),
        None,
    )
    .await;
    assert_eq!(r.headers()["cache-control"], "no-store");
    let text = r.text().await.unwrap();
    for secret in [
        "client_secret\"",
        "registration_access_token",
        "argon2",
        "rat_tag",
    ] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(!text.contains(client["client_secret"].as_str().unwrap()));
    let view: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(view["client_id"], id.as_str());
    assert_eq!(view["client_name"], "Example");
    assert_eq!(
        view["redirect_uris"],
        json!(["https://client.example.org/cb"])
    );
    assert_eq!(view["client_id_issued_at"], client["client_id_issued_at"]);
    assert_eq!(view["client_secret_expires_at"], 0);
    assert_eq!(view["created_at"], client["client_id_issued_at"]);
    assert!(view["updated_at"].is_i64());
    assert_eq!(view["last_used_at"], Value::Null);
    assert_eq!(view["disabled"], false);
    assert_eq!(view["policy"], Value::Null);
    assert_eq!(view["tier"], "anonymous");
    assert_eq!(view["source"], "registration");

    let r = call(
        &app,
        Method::GET,
        "/admin/clients/no-such-client",
        Some(READ),
        None,
    )
    .await;
    let d = assert_error(r, 404, "not_found").await;
    assert!(d.contains("no-such-client"), "{d}");
}

#[tokio::test]
async fn authentication_returns_the_view_and_records_the_use() {
    let app = admin_app().await;
    let client = app.register(&web_client()).await;
    let id = id_of(&client);
    let r = authenticate(&app, &id, client["client_secret"].as_str().unwrap()).await;
    let body = ok_json(r, 200).await;
    assert_eq!(body["client"]["client_id"], id.as_str());
    assert!(body["client"]["last_used_at"].is_i64());
    assert!(body["client"].get("client_secret").is_none());
    let view = view(&app, &id).await;
    assert_eq!(view["last_used_at"], body["client"]["last_used_at"]);
}

#[tokio::test]
async fn the_four_authentication_failures_are_byte_identical() {
    four_authentication_failures_are_byte_identical(0).await;
}

/// With `admin.authenticate_cache_ttl_secs` on and every secret cached by a success first, the
/// expired and disabled clients still get the same 401 as the unknown one and the wrong secret.
#[tokio::test]
async fn the_four_authentication_failures_are_byte_identical_with_the_cache_on() {
    four_authentication_failures_are_byte_identical(3600).await;
}

async fn four_authentication_failures_are_byte_identical(cache_ttl_secs: u64) {
    let clock = Arc::new(FixedClock::new(1_700_000_000));
    let app = spawn_with_clock(clock.clone(), |s| {
        with_admin(s)
            .with("credentials.client_secret_lifetime_secs", 100)
            .unwrap()
            .with("admin.authenticate_cache_ttl_secs", cache_ttl_secs)
            .unwrap()
    })
    .await;
    let expired = app.register(&web_client()).await;
    if cache_ttl_secs > 0 {
        ok_json(
            authenticate(
                &app,
                &id_of(&expired),
                expired["client_secret"].as_str().unwrap(),
            )
            .await,
            200,
        )
        .await;
    }
    clock.advance(100);
    let live = app.register(&web_client()).await;
    let disabled = app.register(&web_client()).await;
    if cache_ttl_secs > 0 {
        ok_json(
            authenticate(
                &app,
                &id_of(&disabled),
                disabled["client_secret"].as_str().unwrap(),
            )
            .await,
            200,
        )
        .await;
    }
    let r = call(
        &app,
        Method::PATCH,
        &format!("/admin/clients/{}", id_of(&disabled)),
        Some(WRITE),
        Some(json!({"disabled": true})),
    )
    .await;
    ok_json(r, 200).await;
    // The live client's own secret works (twice: the second a cache hit when it is on), so the
    // refusals below are about their cases.
    for _ in 0..2 {
        ok_json(
            authenticate(&app, &id_of(&live), live["client_secret"].as_str().unwrap()).await,
            200,
        )
        .await;
    }

    let unknown = snapshot(authenticate(&app, "no-such-client", "whatever-secret").await).await;
    let wrong = snapshot(authenticate(&app, &id_of(&live), "whatever-secret").await).await;
    let late = snapshot(
        authenticate(
            &app,
            &id_of(&expired),
            expired["client_secret"].as_str().unwrap(),
        )
        .await,
    )
    .await;
    let off = snapshot(
        authenticate(
            &app,
            &id_of(&disabled),
            disabled["client_secret"].as_str().unwrap(),
        )
        .await,
    )
    .await;
    assert_eq!(unknown.0, 401);
    let body: Value = serde_json::from_slice(&unknown.2).unwrap();
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(unknown, wrong);
    assert_eq!(unknown, late);
    assert_eq!(unknown, off);
}

#[tokio::test]
async fn a_client_without_a_secret_is_told_which_method_it_uses() {
    let app = admin_app().await;
    let client = app
        .register(&json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "none"}))
        .await;
    let r = authenticate(&app, &id_of(&client), "anything").await;
    let d = assert_error(r, 400, "invalid_request").await;
    assert!(d.contains("\"none\""), "{d}");
    let r = call(
        &app,
        Method::POST,
        &format!("/admin/clients/{}/authenticate", id_of(&client)),
        Some(AUTHN),
        Some(json!({})),
    )
    .await;
    let d = assert_error(r, 400, "invalid_request").await;
    assert!(d.contains("client_secret"), "{d}");
    for body in ["{", "[]", "{\"client_secret\": 1}"] {
        let r = app
            .client
            .post(format!(
                "{}/admin/clients/{}/authenticate",
                app.admin.as_ref().unwrap(),
                id_of(&client)
            ))
            .header(AUTHORIZATION, format!("Bearer {AUTHN}"))
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_error(r, 400, "invalid_request").await;
    }
}

async fn list(app: &TestApp, query: &str) -> reqwest::Response {
    call(
        app,
        Method::GET,
        &format!("/admin/clients?{query}"),
        Some(READ),
        None,
    )
    .await
}

fn ids(page: &Value) -> Vec<String> {
    page["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect()
}

#[tokio::test]
async fn listing_filters_and_pages() {
    let app = admin_app().await;
    let mut all = BTreeSet::new();
    for i in 0..5 {
        let c = app
            .register(&json!({"redirect_uris": ["https://a.example/cb"], "client_name": format!("mcp-host-{i}"), "software_id": "mcp"}))
            .await;
        all.insert(id_of(&c));
    }
    let other = app.register(&web_client()).await;
    all.insert(id_of(&other));

    let page = ok_json(list(&app, "").await, 200).await;
    assert_eq!(ids(&page), all.iter().cloned().collect::<Vec<_>>());
    assert_eq!(page["next_cursor"], Value::Null);

    let mut walked = Vec::new();
    let mut query = "limit=4".to_owned();
    loop {
        let page = ok_json(list(&app, &query).await, 200).await;
        assert!(page["clients"].as_array().unwrap().len() <= 4);
        walked.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("limit=4&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(walked, all.iter().cloned().collect::<Vec<_>>());

    let mcp = ok_json(list(&app, "software_id=mcp").await, 200).await;
    assert_eq!(ids(&mcp).len(), 5);
    let prefix = ok_json(list(&app, "client_name=mcp-host-").await, 200).await;
    assert_eq!(ids(&prefix).len(), 5);
    let named = ok_json(list(&app, "client_name=Exam").await, 200).await;
    assert_eq!(ids(&named), [id_of(&other)]);
    let anonymous = ok_json(
        list(&app, "tier=anonymous&source=registration&disabled=false").await,
        200,
    )
    .await;
    assert_eq!(ids(&anonymous).len(), 6);
    let none = ok_json(list(&app, "source=admin").await, 200).await;
    assert!(ids(&none).is_empty());
    let issued = other["client_id_issued_at"].as_i64().unwrap();
    let later = ok_json(
        list(&app, &format!("created_after={}", issued + 10)).await,
        200,
    )
    .await;
    assert!(ids(&later).is_empty());
    let earlier = ok_json(
        list(&app, &format!("created_before={}", issued + 10)).await,
        200,
    )
    .await;
    assert_eq!(ids(&earlier).len(), 6);
    let idle = ok_json(list(&app, "unused_for_secs=3600").await, 200).await;
    assert_eq!(ids(&idle).len(), 6, "never used counts as unused");
    ok_json(
        authenticate(
            &app,
            &id_of(&other),
            other["client_secret"].as_str().unwrap(),
        )
        .await,
        200,
    )
    .await;
    let idle = ok_json(list(&app, "unused_for_secs=3600").await, 200).await;
    assert_eq!(ids(&idle).len(), 5);
}

#[tokio::test]
async fn bad_list_queries_name_the_parameter() {
    let app = admin_app().await;
    for (query, name) in [
        ("cursor=%%%", "cursor"),
        ("cursor=!!", "cursor"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("colour=blue", "colour"),
        ("disabled=maybe", "disabled"),
        ("created_after=yesterday", "created_after"),
        ("unused_for_secs=-5", "unused_for_secs"),
        ("tier=a&tier=b", "tier"),
        ("dry_run=true", "dry_run"),
    ] {
        let d = assert_error(list(&app, query).await, 400, "invalid_request").await;
        assert!(d.contains(name), "{query}: {d}");
    }
}

#[tokio::test]
async fn pagination_returns_each_stable_client_once_while_others_come_and_go() {
    let app = admin_app().await;
    let mut stable = BTreeSet::new();
    let mut doomed = Vec::new();
    for i in 0..40 {
        let c = app.register(&web_client()).await;
        if i % 2 == 0 {
            stable.insert(id_of(&c));
        } else {
            doomed.push(c);
        }
    }
    // Between every two pages one client is deleted (alternately from the low and the high end
    // of the id space, so both before and after the cursor) and one is registered.
    doomed.sort_by_key(id_of);
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut changes = 0;
    loop {
        let query = match &cursor {
            Some(c) => format!("limit=3&cursor={c}"),
            None => "limit=3".into(),
        };
        let page = ok_json(list(&app, &query).await, 200).await;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        let victim = if changes % 2 == 0 {
            doomed.pop()
        } else {
            (!doomed.is_empty()).then(|| doomed.remove(0))
        };
        if let Some(c) = victim {
            let r = app
                .delete_client(
                    c["registration_client_uri"].as_str().unwrap(),
                    c["registration_access_token"].as_str().unwrap(),
                )
                .await;
            assert_eq!(r.status(), 204);
        }
        app.register(&web_client()).await;
        changes += 1;
    }
    assert!(changes >= 10, "the walk saw churn: {changes} changes");
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no client twice");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, seen, "in client_id order");
    for id in &stable {
        assert!(unique.contains(id), "stable client {id} missing");
    }
}

#[tokio::test]
async fn an_operator_creates_a_client_through_the_same_rules() {
    let app = admin_app().await;
    let r = call(
        &app,
        Method::POST,
        "/admin/clients",
        Some(WRITE),
        Some(json!({"redirect_uris": ["https://a.example/cb"], "client_name": "Pre", "skip_consent": true})),
    )
    .await;
    assert_eq!(r.headers()["cache-control"], "no-store");
    let created = ok_json(r, 201).await;
    assert_eq!(created["source"], "admin");
    assert_eq!(created["tier"], "admin");
    assert_eq!(
        created["skip_consent"], true,
        "admin.allowed_privileged_fields"
    );
    let secret = created["client_secret"].as_str().unwrap();
    let token = created["registration_access_token"].as_str().unwrap();
    let uri = created["registration_client_uri"].as_str().unwrap();
    // The credentials work, and are not shown again.
    ok_json(authenticate(&app, &id_of(&created), secret).await, 200).await;
    let public = app.get_client(uri, token).await;
    assert_eq!(public.status(), 200);
    let view = call(
        &app,
        Method::GET,
        &format!("/admin/clients/{}", id_of(&created)),
        Some(READ),
        None,
    )
    .await;
    let text = view.text().await.unwrap();
    assert!(!text.contains(secret) && !text.contains(token));
    let sourced = ok_json(list(&app, "source=admin").await, 200).await;
    assert_eq!(ids(&sourced), [id_of(&created)]);

    // The metadata table and the policy lookup apply.
    let r = call(
        &app,
        Method::POST,
        "/admin/clients",
        Some(WRITE),
        Some(json!({"redirect_uris": ["https://a.example/cb#frag"]})),
    )
    .await;
    assert_error(r, 400, "invalid_redirect_uri").await;
    let r = call(
        &app,
        Method::POST,
        "/admin/clients",
        Some(WRITE),
        Some(json!({"redirect_uris": ["https://a.example/cb"], "policy": "nope"})),
    )
    .await;
    let d = assert_error(r, 400, "invalid_request").await;
    assert!(d.contains("policy"), "{d}");
    let r = call(
        &app,
        Method::POST,
        "/admin/clients",
        Some(WRITE),
        Some(json!({"redirect_uris": ["https://a.example/cb"], "client_id": "mine"})),
    )
    .await;
    let d = assert_error(r, 400, "invalid_request").await;
    assert!(d.contains("client_id"), "{d}");
}

#[tokio::test]
async fn an_operator_creates_under_a_named_policy() {
    let app = spawn_app_with(|s| {
        with_admin(s)
            .with(
                "policies.partners",
                json!({"allowed_scopes": ["openid"], "max_clients": 1}),
            )
            .unwrap()
    })
    .await;
    let body =
        json!({"redirect_uris": ["https://a.example/cb"], "scope": "openid", "policy": "partners"});
    let created = ok_json(
        call(
            &app,
            Method::POST,
            "/admin/clients",
            Some(WRITE),
            Some(body.clone()),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(created["policy"], "partners");
    let create = |body: Value| {
        call(
            &app,
            Method::POST,
            "/admin/clients",
            Some(WRITE),
            Some(body),
        )
    };
    let d = assert_error(create(body.clone()).await, 400, "invalid_request").await;
    assert!(d.contains("partners"), "the policy's quota: {d}");
    // Deleting through the admin API frees the place in the quota.
    let path = format!("/admin/clients/{}", id_of(&created));
    assert_eq!(
        call(&app, Method::DELETE, &path, Some(WRITE), None)
            .await
            .status(),
        204
    );
    let email =
        json!({"redirect_uris": ["https://a.example/cb"], "scope": "email", "policy": "partners"});
    let d = assert_error(create(email).await, 400, "invalid_client_metadata").await;
    assert!(d.contains("scope"), "the policy's rules: {d}");
    ok_json(create(body).await, 201).await;
}

#[tokio::test]
async fn a_merge_patch_changes_metadata_and_is_validated_like_a_put() {
    let app = admin_app().await;
    let client = app.register(&json!({"redirect_uris": ["https://a.example/cb"], "client_name": "Old", "client_uri": "https://a.example"})).await;
    let path = format!("/admin/clients/{}", id_of(&client));
    let r = patch_raw(
        &app,
        &path,
        "application/merge-patch+json",
        r#"{"client_name": "New", "client_uri": null}"#,
    )
    .await;
    let view = ok_json(r, 200).await;
    assert_eq!(view["client_name"], "New");
    assert!(view.get("client_uri").is_none());
    assert_eq!(view["redirect_uris"], json!(["https://a.example/cb"]));
    // The client's own token still reads the change.
    let public: Value = app
        .get_client(
            client["registration_client_uri"].as_str().unwrap(),
            client["registration_access_token"].as_str().unwrap(),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(public["client_name"], "New");

    for (patch, status, code, names) in [
        (
            json!({"redirect_uris": ["http://a.example/cb"]}),
            400,
            "invalid_redirect_uri",
            "redirect_uris",
        ),
        (
            json!({"client_secret": "mine"}),
            400,
            "invalid_request",
            "client_secret",
        ),
        (
            json!({"registration_access_token": "t"}),
            400,
            "invalid_request",
            "registration_access_token",
        ),
        (
            json!({"disabled": "yes"}),
            400,
            "invalid_request",
            "disabled",
        ),
        (
            json!({"skip_consent": "yes"}),
            400,
            "invalid_client_metadata",
            "skip_consent",
        ),
    ] {
        let r = call(&app, Method::PATCH, &path, Some(WRITE), Some(patch.clone())).await;
        let d = assert_error(r, status, code).await;
        assert!(d.contains(names), "{patch}: {d}");
    }
    let r = patch_raw(&app, &path, "text/plain", "{}").await;
    assert_error(r, 415, "invalid_request").await;
    let r = patch_raw(&app, &path, "application/json", "[1]").await;
    assert_error(r, 400, "invalid_client_metadata").await;
    let r = call(
        &app,
        Method::PATCH,
        "/admin/clients/nobody",
        Some(WRITE),
        Some(json!({"client_name": "x"})),
    )
    .await;
    assert_error(r, 404, "not_found").await;
    let view = ok_json(call(&app, Method::GET, &path, Some(READ), None).await, 200).await;
    assert_eq!(
        view["client_name"], "New",
        "refused patches changed nothing"
    );
}

#[tokio::test]
async fn an_oversized_admin_body_is_a_json_413() {
    let app =
        spawn_app_with(|s| with_admin(s).with("server.body_limit_bytes", 1024).unwrap()).await;
    let big = json!({"redirect_uris": ["https://a.example/cb"], "client_name": "x".repeat(2000)});
    let r = call(&app, Method::POST, "/admin/clients", Some(WRITE), Some(big)).await;
    assert_error(r, 413, "invalid_request").await;
}

#[tokio::test]
async fn a_disabled_client_reads_itself_but_cannot_change_or_delete_itself() {
    let app = admin_app().await;
    let client = app.register(&web_client()).await;
    let (uri, token) = (
        client["registration_client_uri"].as_str().unwrap(),
        client["registration_access_token"].as_str().unwrap(),
    );
    let path = format!("/admin/clients/{}", id_of(&client));
    let view = ok_json(
        call(
            &app,
            Method::PATCH,
            &path,
            Some(WRITE),
            Some(json!({"disabled": true})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(view["disabled"], true);
    let read = app.get_client(uri, token).await;
    assert_eq!(read.status(), 200);
    let read: Value = read.json().await.unwrap();
    assert!(
        read.get("disabled").is_none(),
        "not a standard member: {read}"
    );
    let mut put = web_client();
    put["client_id"] = client["client_id"].clone();
    assert_error(app.put_client(uri, token, &put).await, 403, "access_denied").await;
    assert_error(app.delete_client(uri, token).await, 403, "access_denied").await;
    // An unknown token is still the 401 it always was.
    assert_error(
        app.delete_client(uri, "not-the-token").await,
        401,
        "invalid_token",
    )
    .await;
    let disabled = ok_json(list(&app, "disabled=true").await, 200).await;
    assert_eq!(ids(&disabled), [id_of(&client)]);
    ok_json(
        call(
            &app,
            Method::PATCH,
            &path,
            Some(WRITE),
            Some(json!({"disabled": false})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(app.put_client(uri, token, &put).await.status(), 200);
}

#[tokio::test]
async fn operators_delete_one_client_or_every_match() {
    let app = admin_app().await;
    let one = app.register(&web_client()).await;
    let path = format!("/admin/clients/{}", id_of(&one));
    let r = call(&app, Method::DELETE, &path, Some(WRITE), None).await;
    assert_eq!(r.status(), 204);
    assert_error(
        call(&app, Method::GET, &path, Some(READ), None).await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        call(&app, Method::DELETE, &path, Some(WRITE), None).await,
        404,
        "not_found",
    )
    .await;

    for i in 0..4 {
        app.register(
            &json!({"redirect_uris": ["https://a.example/cb"], "client_name": format!("dead-{i}")}),
        )
        .await;
    }
    let keep = app.register(&web_client()).await;
    let r = call(
        &app,
        Method::DELETE,
        "/admin/clients?client_name=dead-&dry_run=true",
        Some(WRITE),
        None,
    )
    .await;
    assert_eq!(ok_json(r, 200).await, json!({"matched": 4}));
    assert_eq!(
        ids(&ok_json(list(&app, "").await, 200).await).len(),
        5,
        "a dry run deletes nothing"
    );
    let r = call(
        &app,
        Method::DELETE,
        "/admin/clients?client_name=dead-",
        Some(WRITE),
        None,
    )
    .await;
    assert_eq!(ok_json(r, 200).await, json!({"deleted": 4}));
    assert_eq!(
        ids(&ok_json(list(&app, "").await, 200).await),
        [id_of(&keep)]
    );
    let d = assert_error(
        call(&app, Method::DELETE, "/admin/clients", Some(WRITE), None).await,
        400,
        "invalid_request",
    )
    .await;
    assert!(d.contains("filter"), "{d}");
    let d = assert_error(
        call(
            &app,
            Method::DELETE,
            "/admin/clients?limit=3",
            Some(WRITE),
            None,
        )
        .await,
        400,
        "invalid_request",
    )
    .await;
    assert!(d.contains("limit"), "{d}");
}

#[tokio::test]
async fn a_new_secret_is_shown_once_and_the_old_one_lives_through_the_grace() {
    let app = admin_app().await;
    let client = app.register(&web_client()).await;
    let id = id_of(&client);
    let old = client["client_secret"].as_str().unwrap();
    let path = format!("/admin/clients/{id}/client_secret");
    let r = ok_json(
        call(
            &app,
            Method::POST,
            &path,
            Some(WRITE),
            Some(json!({"grace_secs": 3600})),
        )
        .await,
        200,
    )
    .await;
    let new = r["client_secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(r["previous_secret_expires_at"].is_i64());
    ok_json(authenticate(&app, &id, &new).await, 200).await;
    ok_json(authenticate(&app, &id, old).await, 200).await;
    // Without a body: no grace, the previous secret dies at once.
    let r = ok_json(
        call(&app, Method::POST, &path, Some(WRITE), None).await,
        200,
    )
    .await;
    assert_eq!(authenticate(&app, &id, &new).await.status(), 401);
    assert_eq!(authenticate(&app, &id, old).await.status(), 401);
    ok_json(
        authenticate(&app, &id, r["client_secret"].as_str().unwrap()).await,
        200,
    )
    .await;

    for body in [
        json!({"grace_secs": -1}),
        json!({"grace_secs": "1h"}),
        json!({"grace": 1}),
    ] {
        let d = assert_error(
            call(&app, Method::POST, &path, Some(WRITE), Some(body)).await,
            400,
            "invalid_request",
        )
        .await;
        assert!(d.contains("grace"), "{d}");
    }
    let public = app.register(&json!({"redirect_uris": ["https://a.example/cb"], "token_endpoint_auth_method": "none"})).await;
    let r = call(
        &app,
        Method::POST,
        &format!("/admin/clients/{}/client_secret", id_of(&public)),
        Some(WRITE),
        None,
    )
    .await;
    assert_error(r, 400, "invalid_request").await;
}

#[tokio::test]
async fn a_reissued_registration_access_token_replaces_the_old_one_for_writes_at_once() {
    let app = admin_app().await;
    let client = app.register(&web_client()).await;
    let uri = client["registration_client_uri"].as_str().unwrap();
    let old = client["registration_access_token"].as_str().unwrap();
    let r = call(
        &app,
        Method::POST,
        &format!(
            "/admin/clients/{}/registration_access_token",
            id_of(&client)
        ),
        Some(WRITE),
        None,
    )
    .await;
    let issued = ok_json(r, 200).await;
    assert_eq!(issued["registration_client_uri"], uri);
    let new = issued["registration_access_token"].as_str().unwrap();
    assert_ne!(new, old);
    assert_error(app.delete_client(uri, old).await, 401, "invalid_token").await;
    // Within the RAT grace the old token reads the client and learns the new token, until
    // the new one is used.
    let read = ok_json(app.get_client(uri, old).await, 200).await;
    assert_eq!(read["registration_access_token"], new);
    assert_eq!(app.get_client(uri, new).await.status(), 200);
    assert_error(app.get_client(uri, old).await, 401, "invalid_token").await;
    let r = call(
        &app,
        Method::POST,
        "/admin/clients/nobody/registration_access_token",
        Some(WRITE),
        None,
    )
    .await;
    assert_error(r, 404, "not_found").await;
}

#[tokio::test]
async fn last_used_at_is_coalesced_to_the_resolution() {
    let clock = Arc::new(FixedClock::new(1_700_000_000));
    let app = spawn_with_clock(clock.clone(), with_admin).await;
    let client = app.register(&web_client()).await;
    let (id, secret) = (id_of(&client), client["client_secret"].as_str().unwrap());
    let first = ok_json(authenticate(&app, &id, secret).await, 200).await;
    assert_eq!(first["client"]["last_used_at"], 1_700_000_000);
    clock.advance(30);
    let second = ok_json(authenticate(&app, &id, secret).await, 200).await;
    assert_eq!(second["client"]["last_used_at"], 1_700_000_000);
    clock.advance(30);
    let third = ok_json(authenticate(&app, &id, secret).await, 200).await;
    assert_eq!(third["client"]["last_used_at"], 1_700_000_060);
}

#[tokio::test]
async fn wrong_methods_and_paths_are_json_errors() {
    let app = admin_app().await;
    let r = call(&app, Method::PUT, "/admin/clients", Some(ALL), None).await;
    assert_eq!(r.headers()["allow"], "GET, POST, DELETE");
    assert_error(r, 405, "invalid_request").await;
    let r = call(
        &app,
        Method::GET,
        "/admin/clients/x/authenticate",
        Some(ALL),
        None,
    )
    .await;
    assert_error(r, 405, "invalid_request").await;
    let r = call(&app, Method::GET, "/admin/nothing", Some(ALL), None).await;
    assert_error(r, 404, "not_found").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_stays_exact_while_another_task_inserts_and_deletes() {
    let app = admin_app().await;
    let mut stable = BTreeSet::new();
    let mut doomed = std::collections::VecDeque::new();
    for i in 0..30 {
        let c = app.register(&web_client()).await;
        if i % 3 == 0 {
            doomed.push_back(c);
        } else {
            stable.insert(id_of(&c));
        }
    }
    // The churn runs from before the first page until after the last one.
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    let stop = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(AtomicUsize::new(0));
    let churn = {
        let (stop, changes, endpoint) = (stop.clone(), changes.clone(), app.endpoint.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            while !stop.load(SeqCst) {
                let r = http
                    .post(&endpoint)
                    .json(&web_client())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                doomed.push_back(r.json::<Value>().await.unwrap());
                let victim = doomed.pop_front().unwrap();
                let r = http
                    .delete(victim["registration_client_uri"].as_str().unwrap())
                    .bearer_auth(victim["registration_access_token"].as_str().unwrap())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 204);
                changes.fetch_add(1, SeqCst);
            }
        })
    };
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("limit=2&cursor={c}"),
            None => "limit=2".into(),
        };
        let before = changes.load(SeqCst);
        let page = ok_json(list(&app, &query).await, 200).await;
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        if cursor.is_some() && seen.len() == 2 {
            // Make sure at least one insert and delete land between two pages of this walk.
            while changes.load(SeqCst) == before && !churn.is_finished() {
                tokio::task::yield_now().await;
            }
        }
    }
    stop.store(true, SeqCst);
    churn.await.unwrap();
    assert!(changes.load(SeqCst) > 0);
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no client twice");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in client_id order");
    let missing: Vec<&String> = stable.difference(&unique).collect();
    assert!(missing.is_empty(), "stable clients missing: {missing:?}");
}
