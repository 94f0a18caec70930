//! Outbound fetches (`sector_identifier_uri`, `jwks_uri`) against a real local HTTPS server.
//!
//! Each test starts its own TLS server on 127.0.0.1 with a CA generated in the test and trusted
//! through `fetch.extra_root_ca_file`. The server counts TCP connections before the TLS handshake,
//! so "refused without a connection" is proven by a count of zero. Happy paths must switch on
//! `fetch.allow_private_addresses` (the server is on loopback); SSRF cases run with it off, and the
//! CA is still trusted, so a refusal can only come from the address check, not from TLS.

use crate::helpers::assert_error;
use crate::tls::{Reply, TlsServer};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

const REDIRECT: &str = "https://client.example.org/cb";

fn sector_client(sector: &str) -> Value {
    json!({
        "redirect_uris": [REDIRECT],
        "sector_identifier_uri": sector,
        "subject_type": "pairwise",
    })
}

fn good_sector() -> String {
    json!([REDIRECT, "https://other.example.org/cb"]).to_string()
}

fn ec_jwks() -> Value {
    json!({"keys":[{"kty":"EC","crv":"P-256","kid":"a","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]})
}

#[tokio::test]
async fn register_accepts_a_sector_document_listing_every_redirect_uri() {
    let server = TlsServer::start(vec![("/sector.json", Reply::Json(good_sector()))]).await;
    let app = server.app(true).await;
    let body = app
        .register(&sector_client(&server.url("/sector.json")))
        .await;
    assert_eq!(body["sector_identifier_uri"], server.url("/sector.json"));
    assert_eq!(server.requested(), vec!["/sector.json"]);
}

#[tokio::test]
async fn register_rejects_a_sector_document_missing_a_redirect_uri() {
    let doc = json!(["https://other.example.org/cb"]).to_string();
    let server = TlsServer::start(vec![("/sector.json", Reply::Json(doc))]).await;
    let app = server.app(true).await;
    let r = app.post(&sector_client(&server.url("/sector.json"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("sector_identifier_uri"), "{d}");
    assert!(
        d.contains(&format!("does not list the redirect URI \"{REDIRECT}\"")),
        "{d}"
    );
    // The fetched document is not echoed.
    assert!(!d.contains("other.example.org"), "{d}");
}

#[tokio::test]
async fn register_rejects_a_sector_document_that_is_not_an_array() {
    let doc = json!({"redirect_uris": [REDIRECT], "secret": "internal-detail"}).to_string();
    let server = TlsServer::start(vec![("/sector.json", Reply::Json(doc))]).await;
    let app = server.app(true).await;
    let r = app.post(&sector_client(&server.url("/sector.json"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("must be a JSON array"), "{d}");
    assert!(!d.contains("internal-detail"), "{d}");
}

#[tokio::test]
async fn register_rejects_a_sector_array_with_a_non_string() {
    let doc = json!([REDIRECT, 5]).to_string();
    let server = TlsServer::start(vec![("/sector.json", Reply::Json(doc))]).await;
    let app = server.app(true).await;
    let r = app.post(&sector_client(&server.url("/sector.json"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("item 1 is not a string"), "{d}");
}

#[tokio::test]
async fn register_rejects_a_sector_document_that_is_not_json() {
    let server = TlsServer::start(vec![
        (
            "/html",
            Reply::Raw(200, "text/html", "<html>secret</html>".into()),
        ),
        (
            "/broken",
            Reply::Json("[\"https://client.example.org/cb\"".into()),
        ),
    ])
    .await;
    let app = server.app(true).await;
    let r = app.post(&sector_client(&server.url("/html"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("JSON content type"), "{d}");
    assert!(!d.contains("secret"), "{d}");
    let r = app.post(&sector_client(&server.url("/broken"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("not valid JSON"), "{d}");
}

#[tokio::test]
async fn register_rejects_a_sector_document_above_the_size_cap() {
    let server = TlsServer::start(vec![
        ("/endless", Reply::Endless(1024 * 1024)),
        ("/declared", Reply::HugeLength),
    ])
    .await;
    let app = server.app(true).await;
    for path in ["/endless", "/declared"] {
        let r = app.post(&sector_client(&server.url(path))).await;
        let d = assert_error(r, 400, "invalid_client_metadata").await;
        assert!(d.contains("more than 4096 bytes"), "{path}: {d}");
    }
}

#[tokio::test]
async fn register_rejects_a_sector_server_that_is_too_slow() {
    let server = TlsServer::start(vec![(
        "/slow",
        Reply::Slow(Duration::from_secs(5), good_sector()),
    )])
    .await;
    let app = server.app(true).await;
    let started = std::time::Instant::now();
    let r = app.post(&sector_client(&server.url("/slow"))).await;
    let elapsed = started.elapsed();
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("within 1000 ms"), "{d}");
    assert!(elapsed < Duration::from_millis(2500), "took {elapsed:?}");
}

#[tokio::test]
async fn register_does_not_follow_a_redirect_from_the_sector_uri() {
    // The redirect target is a valid document on the same (trusted) server, so following the
    // redirect would succeed: only the no-redirect rule can make this fail.
    let server = TlsServer::start(vec![
        ("/moved", Reply::Redirect("/good".into())),
        ("/good", Reply::Json(good_sector())),
    ])
    .await;
    let app = server.app(true).await;
    let r = app.post(&sector_client(&server.url("/moved"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("redirect (HTTP 302)"), "{d}");
    assert_eq!(
        server.requested(),
        vec!["/moved"],
        "the redirect was followed"
    );
}

#[tokio::test]
async fn register_rejects_a_sector_uri_answering_404() {
    let server = TlsServer::start(vec![]).await;
    let app = server.app(true).await;
    let r = app.post(&sector_client(&server.url("/missing.json"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("HTTP status 404"), "{d}");
}

#[tokio::test]
async fn register_refuses_reserved_addresses_without_connecting() {
    let server = TlsServer::start(vec![("/sector.json", Reply::Json(good_sector()))]).await;
    let app = server.app(false).await;
    let port = server.port;
    for host in [
        "2130706433".to_owned(),
        "0x7f000001".to_owned(),
        "0177.0.0.1".to_owned(),
        "127.1".to_owned(),
        "[::1]".to_owned(),
        "[::ffff:127.0.0.1]".to_owned(),
        "localhost".to_owned(),
    ] {
        let url = format!("https://{host}:{port}/sector.json");
        let r = app.post(&sector_client(&url)).await;
        let d = assert_error(r, 400, "invalid_client_metadata").await;
        // A name gets the same text whether it resolves to loopback or not at all.
        assert!(d.contains("reserved address"), "{url}: {d}");
        assert_eq!(server.connections(), 0, "{url} was contacted");
    }
    // Cloud metadata, on its real port: refused before any socket is opened.
    for url in [
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:a9fe:a9fe]/",
        "https://[64:ff9b::a9fe:a9fe]/",
        "https://[2002:a9fe:a9fe::]/",
        "https://100.64.0.1/",
        "https://198.18.0.1/",
        "https://0.0.0.0/",
    ] {
        let r = app.post(&sector_client(url)).await;
        let d = assert_error(r, 400, "invalid_client_metadata").await;
        assert!(d.contains("reserved address"), "{url}: {d}");
    }
    assert_eq!(server.connections(), 0);
    // The same server is reachable once private addresses are allowed: the refusals above were
    // the address check, not a broken test server.
    let open = server.app(true).await;
    open.register(&sector_client(&server.url("/sector.json")))
        .await;
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn register_refuses_an_http_sector_uri_without_connecting() {
    let server = TlsServer::start(vec![("/sector.json", Reply::Json(good_sector()))]).await;
    let app = server.app(true).await;
    let url = format!("http://127.0.0.1:{}/sector.json", server.port);
    let r = app.post(&sector_client(&url)).await;
    assert_error(r, 400, "invalid_client_metadata").await;
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn update_runs_the_sector_check_again() {
    let server = TlsServer::start(vec![("/sector.json", Reply::Json(good_sector()))]).await;
    let app = server.app(true).await;
    let mut client = app
        .register(&sector_client(&server.url("/sector.json")))
        .await;
    let uri = client["registration_client_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = client["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    client["redirect_uris"] = json!([REDIRECT, "https://client.example.org/unlisted"]);
    let r = app.put_client(&uri, &token, &client).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("https://client.example.org/unlisted"), "{d}");
    assert_eq!(server.requested().len(), 2);
    client["redirect_uris"] = json!(["https://other.example.org/cb"]);
    let r = app.put_client(&uri, &token, &client).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn register_checks_the_jwk_set_at_jwks_uri() {
    let mut private = ec_jwks();
    private["keys"][0]["d"] = json!("jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI");
    let server = TlsServer::start(vec![
        ("/jwks.json", Reply::Json(ec_jwks().to_string())),
        ("/private.json", Reply::Json(private.to_string())),
        (
            "/jwk-set",
            Reply::Raw(200, "application/jwk-set+json", ec_jwks().to_string()),
        ),
    ])
    .await;
    let app = server.app(true).await;
    let with = |uri: String| json!({"redirect_uris": [REDIRECT], "jwks_uri": uri});
    app.register(&with(server.url("/jwks.json"))).await;
    app.register(&with(server.url("/jwk-set"))).await;
    let r = app.post(&with(server.url("/private.json"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(
        d.contains("jwks_uri") && d.contains("private member"),
        "{d}"
    );
    let r = app.post(&with(server.url("/nothing-here"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("jwks_uri: answered with HTTP status 404"), "{d}");
}

#[tokio::test]
async fn jwks_uri_is_not_fetched_when_switched_off() {
    let server = TlsServer::start(vec![]).await;
    let app = server
        .app_with(true, |s| s.with("fetch.fetch_jwks_uri", false).unwrap())
        .await;
    app.register(&json!({"redirect_uris": [REDIRECT], "jwks_uri": server.url("/jwks.json")}))
        .await;
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn a_host_that_failed_is_not_contacted_again_within_the_ttl() {
    // A port with nothing listening: connection refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = TlsServer::start(vec![(
        "/boom",
        Reply::Raw(500, "application/json", "{}".into()),
    )])
    .await;
    let app = server
        .app_with(true, |s| s.with("fetch.failure_ttl_ms", 60_000).unwrap())
        .await;
    let url = format!("https://127.0.0.1:{port}/sector.json");
    let r = app.post(&sector_client(&url)).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("could not be fetched"), "{d}");
    let r = app.post(&sector_client(&url)).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("failed moments ago"), "{d}");
    // A document problem is not a host failure: a 404 can be fixed and retried at once.
    for _ in 0..2 {
        let r = app.post(&sector_client(&server.url("/missing"))).await;
        let d = assert_error(r, 400, "invalid_client_metadata").await;
        assert!(d.contains("HTTP status 404"), "{d}");
    }
    assert_eq!(server.connections(), 2);
    // A 5xx is: the second attempt at that URL does not reach the server...
    let r = app.post(&sector_client(&server.url("/boom"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("HTTP status 500"), "{d}");
    let r = app.post(&sector_client(&server.url("/boom"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("failed moments ago"), "{d}");
    assert_eq!(server.connections(), 3);
    // ...but it is remembered by URL, not by host: one registrant's failing path must not block
    // other documents on a shared host (issue #12 item 2).
    let r = app.post(&sector_client(&server.url("/missing"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("HTTP status 404"), "{d}");
    assert_eq!(server.connections(), 4);
}

#[tokio::test]
async fn concurrent_fetches_are_bounded() {
    let server = TlsServer::start(vec![(
        "/sector.json",
        Reply::Slow(Duration::from_millis(150), good_sector()),
    )])
    .await;
    let app = server
        .app_with(true, |s| {
            s.with("fetch.max_concurrent", 1)
                .unwrap()
                .with("fetch.timeout_ms", 3000)
                .unwrap()
        })
        .await;
    let body = sector_client(&server.url("/sector.json"));
    let results = futures_util::future::join_all((0..4).map(|_| app.post(&body))).await;
    for r in results {
        assert_eq!(r.status(), 201);
    }
    assert_eq!(server.connections(), 4);
    assert_eq!(server.max_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_fetch_that_cannot_get_a_slot_in_time_is_answered_429() {
    let server = TlsServer::start(vec![(
        "/sector.json",
        Reply::Slow(Duration::from_secs(3), good_sector()),
    )])
    .await;
    // One slot; the first request holds it for the whole 1000 ms deadline, the second may wait
    // for it only 500 ms.
    let app = server
        .app_with(true, |s| s.with("fetch.max_concurrent", 1).unwrap())
        .await;
    let body = sector_client(&server.url("/sector.json"));
    let (first, second) = tokio::join!(app.post(&body), async {
        // Wait until the first fetch holds the slot (its connection is counted) rather than
        // guessing a delay.
        while server.connections() == 0 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        app.post(&body).await
    });
    assert_eq!(
        second.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert_error(second, 429, "too_many_requests").await;
    let d = assert_error(first, 400, "invalid_client_metadata").await;
    assert!(d.contains("within 1000 ms"), "{d}");
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn an_update_fetches_only_the_documents_whose_urls_changed() {
    // Issue #12 item 1: a replayed PUT must not buy outbound fetches.
    let jwks = ec_jwks().to_string();
    let server = TlsServer::start(vec![
        ("/sector.json", Reply::Json(good_sector())),
        ("/jwks.json", Reply::Json(jwks.clone())),
        ("/jwks2.json", Reply::Json(jwks)),
    ])
    .await;
    let app = server
        .app_with(true, |s| {
            s.with("registration.rotate_rat_on_update", false).unwrap()
        })
        .await;
    let mut body = sector_client(&server.url("/sector.json"));
    body["jwks_uri"] = json!(server.url("/jwks.json"));
    body["token_endpoint_auth_method"] = json!("private_key_jwt");
    let c = app.register(&body).await;
    assert_eq!(server.connections(), 2);
    let uri = c["registration_client_uri"].as_str().unwrap();
    let rat = c["registration_access_token"].as_str().unwrap();
    let mut update = body.clone();
    update["client_id"] = c["client_id"].clone();
    update["client_name"] = json!("renamed");
    for _ in 0..3 {
        assert_eq!(app.put_client(uri, rat, &update).await.status(), 200);
    }
    assert_eq!(
        server.connections(),
        2,
        "nothing changed that a document is checked against"
    );
    update["jwks_uri"] = json!(server.url("/jwks2.json"));
    assert_eq!(app.put_client(uri, rat, &update).await.status(), 200);
    assert_eq!(server.requested().last().unwrap(), "/jwks2.json");
    assert_eq!(server.connections(), 3);
    update["redirect_uris"] = json!(["https://other.example.org/cb"]);
    assert_eq!(app.put_client(uri, rat, &update).await.status(), 200);
    assert_eq!(server.requested().last().unwrap(), "/sector.json");
    assert_eq!(server.connections(), 4);
}
