//! RFC 7592: read, update, delete with the registration access token.

use crate::helpers::*;
use reqwest::header::{AUTHORIZATION, CACHE_CONTROL, WWW_AUTHENTICATE};
use serde_json::{json, Value};

async fn assert_invalid_token(r: reqwest::Response) {
    assert_eq!(r.status(), 401);
    let challenge = r.headers()[WWW_AUTHENTICATE].to_str().unwrap().to_owned();
    assert!(
        challenge.starts_with("Bearer error=\"invalid_token\""),
        "{challenge}"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");
}

fn uri(c: &Value) -> String {
    c["registration_client_uri"].as_str().unwrap().to_owned()
}
fn rat(c: &Value) -> String {
    c["registration_access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn register_read_update_delete_round_trip() {
    let app = spawn_app().await;
    let created = app.register(&web_client()).await;

    let r = app.get_client(&uri(&created), &rat(&created)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
    let read: Value = r.json().await.unwrap();
    assert_eq!(read["client_id"], created["client_id"]);
    assert_eq!(
        read["registration_access_token"],
        created["registration_access_token"]
    );
    assert_eq!(
        read["registration_client_uri"],
        created["registration_client_uri"]
    );
    assert!(
        read.get("client_secret").is_none(),
        "only the hash is stored"
    );
    assert_eq!(read["client_secret_expires_at"], 0);

    let mut update = read.clone();
    update["client_name"] = json!("Renamed");
    update["redirect_uris"] = json!(["https://client.example.org/cb2"]);
    let r = app
        .put_client(&uri(&created), &rat(&created), &update)
        .await;
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    assert_eq!(updated["client_name"], "Renamed");
    assert_eq!(
        updated["redirect_uris"],
        json!(["https://client.example.org/cb2"])
    );
    assert_ne!(
        updated["registration_access_token"], created["registration_access_token"],
        "rotated"
    );

    // the old token can no longer write (it may only read during the RAT grace, which the
    // first use of the new token ends); the new one works
    assert_invalid_token(
        app.put_client(&uri(&created), &rat(&created), &update)
            .await,
    )
    .await;
    let reread: Value = app
        .get_client(&uri(&created), &rat(&updated))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reread["client_name"], "Renamed");
    assert_invalid_token(app.get_client(&uri(&created), &rat(&created)).await).await;

    let r = app.delete_client(&uri(&created), &rat(&updated)).await;
    assert_eq!(r.status(), 204);
    assert_invalid_token(app.get_client(&uri(&created), &rat(&updated)).await).await;
    assert_invalid_token(
        app.put_client(&uri(&created), &rat(&updated), &update)
            .await,
    )
    .await;
    assert_invalid_token(app.delete_client(&uri(&created), &rat(&updated)).await).await;
}

/// The read response splices the stored metadata in as its stored text (issue #19): it must
/// carry exactly the members of the registration response but `client_secret`, each once, and
/// be valid JSON with the metadata's values unchanged.
#[tokio::test]
async fn the_read_response_has_every_registered_member_once() {
    let app = spawn_app().await;
    let mut body = web_client();
    body["client_name"] = json!("Spliced \"quoted\" \u{e9}");
    body["contacts"] = json!(["ops@client.example.org"]);
    let created = app.register(&body).await;
    let r = app.get_client(&uri(&created), &rat(&created)).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let read: Value = serde_json::from_str(&text).unwrap();
    let mut expected = created.clone();
    expected.as_object_mut().unwrap().remove("client_secret");
    assert_eq!(read, expected);
    for key in read.as_object().unwrap().keys() {
        assert_eq!(
            text.matches(&format!("\"{key}\":")).count(),
            1,
            "{key} once in {text}"
        );
    }
}

#[tokio::test]
async fn a_request_without_credentials_gets_a_bare_bearer_challenge() {
    let app = spawn_app().await;
    let a = app.register(&web_client()).await;
    let no_such_client = format!("{}/does-not-exist", app.endpoint);
    // RFC 6750 §3.1, and the same answer for a client that does not exist (RFC 7592 §2.1).
    for target in [uri(&a), no_such_client] {
        assert_token_required(app.client.get(&target).send().await.unwrap()).await;
        let put = app.client.put(&target).json(&web_client()).send().await;
        assert_token_required(put.unwrap()).await;
        assert_token_required(app.client.delete(&target).send().await.unwrap()).await;
    }
    // The client is still there: the refused DELETE did nothing.
    assert_eq!(app.get_client(&uri(&a), &rat(&a)).await.status(), 200);
}

#[tokio::test]
async fn every_bad_token_gets_the_same_401() {
    let app = spawn_app().await;
    let a = app.register(&web_client()).await;
    let b = app.register(&web_client()).await;
    let no_such_client = format!("{}/does-not-exist", app.endpoint);

    for header in [
        "Bearer",
        "Bearer ",
        "Bearer  ",
        "bearer a b",
        "Basic Zm9vOmJhcg==",
        "Token abc",
    ] {
        let r = app
            .client
            .get(uri(&a))
            .header(AUTHORIZATION, header)
            .send()
            .await
            .unwrap();
        assert_invalid_token(r).await;
    }
    let huge = "a".repeat(16 * 1024);
    assert_invalid_token(app.get_client(&uri(&a), &huge).await).await;
    assert_invalid_token(app.get_client(&uri(&a), "wrong-token").await).await;
    assert_invalid_token(app.get_client(&no_such_client, "wrong-token").await).await;
    let two = app
        .client
        .get(uri(&a))
        .header(AUTHORIZATION, format!("Bearer {}", rat(&a)))
        .header(AUTHORIZATION, format!("Bearer {}", rat(&a)))
        .send()
        .await
        .unwrap();
    assert_invalid_token(two).await;
    // b's token on a's URI: refused, and b's token is revoked (RFC 7592 §2.1)
    assert_invalid_token(app.get_client(&uri(&a), &rat(&b)).await).await;
    assert_invalid_token(app.get_client(&uri(&b), &rat(&b)).await).await;
    // a is untouched
    assert_eq!(app.get_client(&uri(&a), &rat(&a)).await.status(), 200);
}

#[tokio::test]
async fn a_dpop_scheme_token_is_refused_explicitly() {
    let app = spawn_app().await;
    let a = app.register(&web_client()).await;
    let r = app
        .client
        .get(uri(&a))
        .header(AUTHORIZATION, format!("DPoP {}", rat(&a)))
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid_request").await;
    let r = app
        .client
        .post(&app.endpoint)
        .header(AUTHORIZATION, "DPoP abc")
        .json(&web_client())
        .send()
        .await
        .unwrap();
    assert_error(r, 400, "invalid_request").await;
}

#[tokio::test]
async fn update_accepts_the_read_response_sent_back_unchanged() {
    let app = spawn_app().await;
    let created = app.register(&web_client()).await;
    let read: Value = app
        .get_client(&uri(&created), &rat(&created))
        .await
        .json()
        .await
        .unwrap();
    let r = app.put_client(&uri(&created), &rat(&created), &read).await;
    assert_eq!(r.status(), 200);
    // including the issued secret
    let mut with_secret = read.clone();
    with_secret["client_secret"] = created["client_secret"].clone();
    with_secret["registration_access_token"] = Value::Null;
    with_secret
        .as_object_mut()
        .unwrap()
        .remove("registration_access_token");
    let updated: Value = r.json().await.unwrap();
    let r = app
        .put_client(&uri(&created), &rat(&updated), &with_secret)
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn update_rejects_changed_read_only_members() {
    let app = spawn_app_with(|s| s.with("registration.rotate_rat_on_update", false).unwrap()).await;
    let c = app.register(&web_client()).await;
    let base: Value = app
        .get_client(&uri(&c), &rat(&c))
        .await
        .json()
        .await
        .unwrap();
    let cases = [
        ("client_id_issued_at", json!(1)),
        ("client_secret_expires_at", json!(5)),
        (
            "registration_client_uri",
            json!("https://evil.example/register/x"),
        ),
        ("registration_access_token", json!("another")),
    ];
    for (member, value) in cases {
        let mut body = base.clone();
        body[member] = value;
        let d = assert_error(
            app.put_client(&uri(&c), &rat(&c), &body).await,
            400,
            "invalid_request",
        )
        .await;
        assert!(d.contains(member), "{d}");
    }
}

#[tokio::test]
async fn update_requires_the_matching_client_id() {
    let app = spawn_app().await;
    let c = app.register(&web_client()).await;
    let mut body = web_client();
    let d = assert_error(
        app.put_client(&uri(&c), &rat(&c), &body).await,
        400,
        "invalid_request",
    )
    .await;
    assert!(d.contains("client_id"));
    body["client_id"] = json!("someone-else");
    assert_error(
        app.put_client(&uri(&c), &rat(&c), &body).await,
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn update_rejects_a_wrong_client_secret() {
    let app = spawn_app().await;
    let c = app.register(&web_client()).await;
    let mut body = web_client();
    body["client_id"] = c["client_id"].clone();
    body["client_secret"] = json!("chosen-by-client");
    let d = assert_error(
        app.put_client(&uri(&c), &rat(&c), &body).await,
        400,
        "invalid_request",
    )
    .await;
    assert!(d.contains("client_secret"));
}

#[tokio::test]
async fn update_is_a_full_replacement_validated_like_registration() {
    let app = spawn_app().await;
    let mut req = web_client();
    req["logo_uri"] = json!("https://client.example.org/logo.png");
    let c = app.register(&req).await;
    let mut body = web_client();
    body["client_id"] = c["client_id"].clone();
    let updated: Value = app
        .put_client(&uri(&c), &rat(&c), &body)
        .await
        .json()
        .await
        .unwrap();
    assert!(
        updated.get("logo_uri").is_none(),
        "omitted member is deleted"
    );
    body["redirect_uris"] = json!(["https://client.example.org/cb#frag"]);
    assert_error(
        app.put_client(&uri(&c), &rat(&updated), &body).await,
        400,
        "invalid_redirect_uri",
    )
    .await;
}

#[tokio::test]
async fn update_to_a_secret_method_issues_a_secret_and_to_none_drops_it() {
    let app = spawn_app().await;
    let mut req = web_client();
    req["token_endpoint_auth_method"] = json!("none");
    let c = app.register(&req).await;
    let mut body = req.clone();
    body["client_id"] = c["client_id"].clone();
    body["token_endpoint_auth_method"] = json!("client_secret_post");
    let u: Value = app
        .put_client(&uri(&c), &rat(&c), &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(u["client_secret"].as_str().unwrap().len(), 43);
    assert_eq!(u["client_secret_expires_at"], 0);
    body["token_endpoint_auth_method"] = json!("none");
    let u2: Value = app
        .put_client(&uri(&c), &rat(&u), &body)
        .await
        .json()
        .await
        .unwrap();
    assert!(u2.get("client_secret").is_none() && u2.get("client_secret_expires_at").is_none());
}

#[tokio::test]
async fn rotation_can_be_turned_off_on_update_and_on_for_read() {
    let app = spawn_app_with(|s| {
        s.with("registration.rotate_rat_on_update", false)
            .unwrap()
            .with("registration.rotate_rat_on_read", true)
            .unwrap()
    })
    .await;
    let c = app.register(&web_client()).await;
    let mut body = web_client();
    body["client_id"] = c["client_id"].clone();
    let u: Value = app
        .put_client(&uri(&c), &rat(&c), &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        u["registration_access_token"],
        c["registration_access_token"]
    );
    let read: Value = app
        .get_client(&uri(&c), &rat(&c))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(
        read["registration_access_token"],
        c["registration_access_token"]
    );
    assert_eq!(app.get_client(&uri(&c), &rat(&read)).await.status(), 200);
    // The new token was used: the grace of the old one is over.
    assert_invalid_token(app.get_client(&uri(&c), &rat(&c)).await).await;
}

#[tokio::test]
async fn hydra_sdk_paths_work() {
    let app = spawn_app().await;
    let r = app
        .client
        .post(format!("{}/oauth2/register", app.address))
        .json(&web_client())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let c: Value = r.json().await.unwrap();
    let alias = format!(
        "{}/oauth2/register/{}",
        app.address,
        c["client_id"].as_str().unwrap()
    );
    assert_eq!(app.get_client(&alias, &rat(&c)).await.status(), 200);
    assert_eq!(app.delete_client(&alias, &rat(&c)).await.status(), 204);
}
