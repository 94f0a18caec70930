//! Webhook delivery over real HTTPS to a local receiver (`tls::TlsServer`), with signatures
//! checked by the reference Standard Webhooks library (PyPI `standardwebhooks`, pinned in
//! tests/webhooks/requirements.txt and installed under target/ by the test itself, see
//! tests/support/python.rs),
//! so the registrar's signing is not checked against itself.

use crate::tls::{Received, Reply, TlsServer};
use registrar::clock::{Clock, FixedClock, SystemClock};
use registrar::events::webhook::{rows_for, OutboxOp, WebhookSettings};
use registrar::events::worker::HttpsTransport;
use registrar::events::{DeliveryWorker, EventType, OutboxQueue};
use registrar::store::{ClientRecord, MemoryStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn webhooks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhooks")
}

/// Run the reference verifier over `deliveries`; returns its output.
pub(crate) fn verify_with_reference(secret: &str, deliveries: &[Received]) -> String {
    let python = crate::python::install("webhooks", &webhooks_dir().join("requirements.txt"))
        .expect("installing standardwebhooks (venv and pip --target both failed)");
    let json: Vec<serde_json::Value> = deliveries
        .iter()
        .map(|d| {
            let h = |n: &str| d.header(n).unwrap_or_default();
            serde_json::json!({
                "headers": {
                    "webhook-id": h("webhook-id"),
                    "webhook-timestamp": h("webhook-timestamp"),
                    "webhook-signature": h("webhook-signature"),
                },
                "body": d.body,
            })
        })
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&json).unwrap()).unwrap();
    let mut cmd = python.command();
    cmd.arg(webhooks_dir().join("verify.py"))
        .arg(secret)
        .arg(file.path());
    crate::python::run(cmd, std::time::Duration::from_secs(60)).unwrap()
}

pub(crate) fn hook(server: &TlsServer) -> WebhookSettings {
    WebhookSettings {
        url: server.url("/hook"),
        secret: SECRET.into(),
        events: vec!["*".into()],
        max_attempts: 5,
    }
}

fn client(id: &str, name: &str) -> ClientRecord {
    // Carries a secret hash and a token tag, which no delivery may show.
    registrar::store::contract::named(id, name)
}

struct Rig {
    server: TlsServer,
    store: Arc<MemoryStore>,
    clock: Arc<FixedClock>,
    worker: DeliveryWorker,
    next_id: u32,
}

impl Rig {
    async fn new() -> Self {
        let server = TlsServer::start(vec![("/hook", Reply::Json("{}".into()))]).await;
        let fetch = registrar::settings::Settings::defaults()
            .unwrap()
            .with("fetch.extra_root_ca_file", server.ca_file())
            .unwrap()
            .with("fetch.allow_private_addresses", true)
            .unwrap()
            .with("fetch.timeout_ms", 2000)
            .unwrap()
            .fetch;
        let store = Arc::new(MemoryStore::new());
        // The reference library refuses timestamps more than 5 minutes off the real clock.
        let clock = Arc::new(FixedClock::new(SystemClock.now()));
        let worker = DeliveryWorker::new(
            store.clone(),
            Arc::new(HttpsTransport::new(&fetch).unwrap()),
            clock.clone(),
            &[hook(&server)],
        )
        .unwrap();
        Self {
            server,
            store,
            clock,
            worker,
            next_id: 0,
        }
    }

    async fn enqueue(&mut self, event: EventType, record: &ClientRecord) {
        let hooks = [hook(&self.server)];
        let mut ids = Vec::new();
        let rows = rows_for(
            &hooks,
            event,
            self.clock.now(),
            &record.client_id,
            Some(record),
            || {
                self.next_id += 1;
                let id = format!("msg_test{}", self.next_id);
                ids.push(id.clone());
                id
            },
        );
        self.store
            .outbox_apply(rows.into_iter().map(OutboxOp::Enqueue).collect())
            .await
            .unwrap();
    }

    fn delivered_ids(&self) -> Vec<String> {
        self.server
            .received()
            .iter()
            .map(|r| r.header("webhook-id").unwrap_or_default())
            .collect()
    }
}

#[tokio::test]
async fn deliveries_verify_with_the_reference_standard_webhooks_library() {
    let mut rig = Rig::new().await;
    let (a, b) = (client("client-a", "A"), client("client-b", "B"));
    rig.enqueue(EventType::Registered, &a).await;
    rig.enqueue(EventType::Updated, &b).await;
    rig.enqueue(EventType::Deleted, &a).await;
    while rig.worker.run_once().await.unwrap().delivered > 0 {}
    let received = rig.server.received();
    assert_eq!(received.len(), 3);
    assert!(rig.store.outbox_pending(10).await.unwrap().is_empty());
    for r in &received {
        assert!(r.head.starts_with("POST /hook "), "{}", r.head);
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        assert!(
            !r.body.contains("argon2") && !r.body.contains("rat_tag"),
            "{}",
            r.body
        );
    }
    let first: serde_json::Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(first["type"], "client.registered");
    assert_eq!(first["data"]["client_name"], "A");
    let deleted: serde_json::Value = serde_json::from_str(&received[2].body).unwrap();
    assert_eq!(
        deleted["data"],
        serde_json::json!({"client_id": "client-a"})
    );

    let out = verify_with_reference(SECRET, &received);
    assert!(out.contains("[standardwebhooks] PASS"), "{out}");
    assert!(out.contains("OK msg_test1 client.registered"), "{out}");
    // The verifier is not a rubber stamp: an edited body or another key is refused.
    let mut forged = received[0].clone();
    forged.body = forged.body.replace("\"A\"", "\"Z\"");
    let out = verify_with_reference(SECRET, &[forged]);
    assert!(out.contains("REJECTED") && !out.contains("PASS"), "{out}");
    let out = verify_with_reference(
        "whsec_c2VjcmV0LWtleS1vZi10d2VudHktZm91ci1ieXRlcw==",
        &received[..1],
    );
    assert!(out.contains("REJECTED"), "{out}");
}

#[tokio::test]
async fn a_receiver_down_then_up_gets_everything_in_order_per_client() {
    let mut rig = Rig::new().await;
    rig.server
        .route("/hook", Reply::Raw(503, "application/json", "{}".into()));
    let (a, b) = (client("client-a", "A"), client("client-b", "B"));
    for i in 0..3 {
        let mut a = a.clone();
        a.metadata
            .insert("client_name".into(), format!("A{i}").into());
        rig.enqueue(EventType::Updated, &a).await;
        rig.enqueue(EventType::Updated, &b).await;
    }
    // Down: only the head of each client's line is tried, and retried with backoff.
    rig.worker.run_once().await.unwrap();
    assert_eq!(rig.delivered_ids(), ["msg_test1", "msg_test2"]);
    rig.worker.run_once().await.unwrap();
    assert_eq!(rig.server.received().len(), 2, "retried before its backoff");
    rig.clock.advance(2);
    rig.worker.run_once().await.unwrap();
    assert_eq!(rig.server.received().len(), 4);
    let pending = rig.store.outbox_pending(10).await.unwrap();
    assert_eq!(pending.len(), 6);
    assert_eq!(pending[0].attempts, 2);
    assert_eq!(pending[0].last_error.as_deref(), Some("HTTP 503"));

    // Up again: everything arrives, each client's events in commit order, none twice after
    // its 2xx.
    rig.server.route("/hook", Reply::Json("{}".into()));
    rig.clock.advance(4);
    for _ in 0..10 {
        rig.worker.run_once().await.unwrap();
    }
    assert!(rig.store.outbox_pending(10).await.unwrap().is_empty());
    let received = rig.server.received();
    let ok: Vec<&Received> = received[4..].iter().collect();
    let names: Vec<String> = ok
        .iter()
        .filter(|r| r.body.contains("client-a"))
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            v["data"]["client_name"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(names, ["A0", "A1", "A2"]);
    let ids: Vec<String> = ok.iter().map(|r| r.header("webhook-id").unwrap()).collect();
    assert_eq!(ids.len(), 6, "{ids:?}");
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "a delivered event was sent again: {ids:?}");
    // The failed attempts carried the same webhook-id as the successful one.
    assert_eq!(
        received[0].header("webhook-id"),
        received[2].header("webhook-id")
    );
}

#[tokio::test]
async fn a_receiver_that_never_answers_2xx_gets_the_event_dead_lettered() {
    let mut rig = Rig::new().await;
    rig.server
        .route("/hook", Reply::Raw(500, "application/json", "{}".into()));
    rig.enqueue(EventType::Registered, &client("client-a", "A"))
        .await;
    for _ in 0..5 {
        rig.worker.run_once().await.unwrap();
        rig.clock.advance(3600);
    }
    assert_eq!(rig.server.received().len(), 5);
    assert!(rig.store.outbox_pending(10).await.unwrap().is_empty());
    let dead = rig.store.outbox_dead(0, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].attempts, dead[0].last_error.as_deref()),
        (5, Some("HTTP 500"))
    );
}

/// Wait (at most 15 s) until the receiver has `n` requests.
pub(crate) async fn wait_for(server: &TlsServer, n: usize) -> Vec<Received> {
    for _ in 0..300 {
        let got = server.received();
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "expected {n} deliveries, got {:?}",
        server
            .received()
            .iter()
            .map(|r| r.body.clone())
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn the_server_delivers_each_change_to_its_webhook_signed_and_in_order() {
    let server = TlsServer::start(vec![("/hook", Reply::Json("{}".into()))]).await;
    let hooks =
        serde_json::json!([{"url": server.url("/hook"), "secret": SECRET, "events": ["*"]}]);
    let app = server
        .app_with(true, move |s| s.with("webhooks", hooks).unwrap())
        .await;
    let created = app
        .register(&serde_json::json!({
            "redirect_uris": ["https://client.example.org/cb"],
            "client_name": "Hooked",
            "token_endpoint_auth_method": "client_secret_basic",
        }))
        .await;
    let uri = created["registration_client_uri"].as_str().unwrap();
    let mut update = created.clone();
    update["client_name"] = "Renamed".into();
    let r = app
        .put_client(
            uri,
            created["registration_access_token"].as_str().unwrap(),
            &update,
        )
        .await;
    let updated: serde_json::Value = r.json().await.unwrap();
    let r = app
        .delete_client(uri, updated["registration_access_token"].as_str().unwrap())
        .await;
    assert_eq!(r.status(), 204);

    let received = wait_for(&server, 3).await;
    let bodies: Vec<serde_json::Value> = received
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    let types: Vec<&str> = bodies.iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["client.registered", "client.updated", "client.deleted"]
    );
    assert_eq!(bodies[0]["data"]["client_name"], "Hooked");
    assert_eq!(bodies[0]["data"]["client_id"], created["client_id"]);
    assert_eq!(bodies[1]["data"]["client_name"], "Renamed");
    assert_eq!(
        bodies[2]["data"],
        serde_json::json!({"client_id": created["client_id"]})
    );
    for (r, body) in received.iter().zip(&bodies) {
        for secret in ["client_secret", "registration_access_token"] {
            assert!(body["data"].get(secret).is_none(), "{body}");
        }
        assert!(!r.body.contains(created["client_secret"].as_str().unwrap()));
    }
    let out = verify_with_reference(SECRET, &received);
    assert!(out.contains("[standardwebhooks] PASS"), "{out}");
    app.stop().await;
}

#[tokio::test]
async fn a_webhook_with_a_bad_secret_or_url_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let base = || crate::helpers::test_settings(dir.path());
    let hook = |url: &str, secret: &str| serde_json::json!([{"url": url, "secret": secret, "events": ["*"]}]);
    let e = base()
        .with("webhooks", hook("https://as.example/h", "not-whsec"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("whsec_") && !e.contains("not-whsec"), "{e}");
    let e = base()
        .with("webhooks", hook("http://as.example/h", SECRET))
        .unwrap_err()
        .to_string();
    assert!(e.contains("https"), "{e}");
    let e = base()
        .with(
            "webhooks",
            serde_json::json!([{"url": "https://as.example/h", "secret": SECRET, "events": ["client.nope"]}]),
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("client.nope"), "{e}");
}

/// `GET /admin/webhooks/dead` with the all-scopes token, asserting 200.
async fn dead_list(app: &crate::helpers::TestApp, query: &str) -> serde_json::Value {
    let r = crate::admin::call(
        app,
        reqwest::Method::GET,
        &format!("/admin/webhooks/dead{query}"),
        Some(crate::admin::ALL),
        None,
    )
    .await;
    crate::admin::ok_json(r, 200).await
}

#[tokio::test]
async fn a_dead_lettered_delivery_is_listed_and_redelivered_with_its_webhook_id() {
    use crate::admin::{call, ok_json, with_admin, ALL, WRITE};
    use reqwest::Method;
    let server = TlsServer::start(vec![(
        "/hook",
        Reply::Raw(500, "application/json", "{}".into()),
    )])
    .await;
    let hooks = serde_json::json!([{"url": server.url("/hook"), "secret": SECRET,
        "events": ["client.registered"], "max_attempts": 1}]);
    let app = server
        .app_with(true, move |s| {
            with_admin(s).with("webhooks", hooks).unwrap()
        })
        .await;
    let a = app.register(&crate::helpers::web_client()).await;
    let b = app.register(&crate::helpers::web_client()).await;
    wait_for(&server, 2).await;
    // Dead after its one attempt; the worker marks it right after the answer.
    let mut page = dead_list(&app, "").await;
    for _ in 0..100 {
        if page["deliveries"].as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        page = dead_list(&app, "").await;
    }
    let dead = page["deliveries"].as_array().unwrap().clone();
    assert_eq!(dead.len(), 2, "{page}");
    assert!(page["next_cursor"].is_null(), "{page}");
    let first = &dead[0];
    assert_eq!(first["client_id"], a["client_id"]);
    assert_eq!(first["event"], "client.registered");
    assert_eq!(first["hook"], server.url("/hook").as_str());
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["last_error"], "HTTP 500");
    assert_eq!(first["payload"]["type"], "client.registered");
    assert_eq!(first["payload"]["data"]["client_id"], a["client_id"]);
    let text = page.to_string();
    for c in [&a, &b] {
        assert!(!text.contains(c["registration_access_token"].as_str().unwrap()));
    }
    // Keyset pages of one.
    let one = dead_list(&app, "?limit=1").await;
    assert_eq!(one["deliveries"].as_array().unwrap().len(), 1);
    let cursor = one["next_cursor"].as_u64().expect("a cursor");
    let rest = dead_list(&app, &format!("?limit=1&after={cursor}")).await;
    assert_eq!(rest["deliveries"][0]["client_id"], b["client_id"]);

    // The receiver is back; an operator redelivers the first one.
    server.route("/hook", Reply::Json("{}".into()));
    let id = first["id"].as_str().unwrap();
    let path = format!("/admin/webhooks/dead/{id}/redeliver");
    let r = call(&app, Method::POST, &path, Some(WRITE), None).await;
    crate::helpers::assert_error(r, 403, "insufficient_scope").await;
    let r = call(&app, Method::POST, &path, Some(ALL), None).await;
    let answer = ok_json(r, 202).await;
    assert_eq!(answer["id"], id);
    let received = wait_for(&server, 3).await;
    let again = &received[2];
    assert_eq!(again.header("webhook-id").as_deref(), Some(id));
    assert_eq!(again.body, received[0].body, "the same signed body");
    let out = verify_with_reference(SECRET, &received[2..]);
    assert!(out.contains("[standardwebhooks] PASS"), "{out}");
    // Delivered: no longer dead; the other one still is.
    let mut left = dead_list(&app, "").await;
    for _ in 0..100 {
        if left["deliveries"].as_array().unwrap().len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        left = dead_list(&app, "").await;
    }
    assert_eq!(left["deliveries"].as_array().unwrap().len(), 1, "{left}");
    assert_eq!(left["deliveries"][0]["client_id"], b["client_id"]);
    // Unknown (or no longer dead) ids are 404 naming the id; bad parameters are 400.
    let r = call(&app, Method::POST, &path, Some(ALL), None).await;
    let why = crate::helpers::assert_error(r, 404, "not_found").await;
    assert!(why.contains(id), "{why}");
    for (query, name) in [
        ("?limit=0", "limit"),
        ("?after=x", "after"),
        ("?nope=1", "nope"),
    ] {
        let r = call(
            &app,
            Method::GET,
            &format!("/admin/webhooks/dead{query}"),
            Some(ALL),
            None,
        )
        .await;
        let why = crate::helpers::assert_error(r, 400, "invalid_request").await;
        assert!(why.contains(name), "{query}: {why}");
    }
    app.stop().await;
}
