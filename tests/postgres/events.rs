//! The audit trail and webhooks with two replicas on one database: one chain, and each event
//! delivered once (the replicas claim deliveries with `FOR UPDATE SKIP LOCKED`), in order per
//! client.

use crate::helpers::*;
use crate::pg;
use crate::receiver::{Reply, TlsServer};
use registrar::events::{verify_log, EventType};
use serde_json::{json, Value};
use std::collections::HashMap;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_write_one_chain_and_deliver_each_event_once_in_order() {
    let receiver = TlsServer::start(vec![("/hook", Reply::Json("{}".into()))]).await;
    let url = pg::shared().new_database();
    let hooks = json!([{"url": receiver.url("/hook"), "secret": SECRET, "events": ["*"]}]);
    let mut apps = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test-database-url"), &url).unwrap();
        let (hooks, ca) = (hooks.clone(), receiver.ca_file().to_owned());
        apps.push(
            spawn_in(dir, move |s| {
                s.with("webhooks", hooks)
                    .unwrap()
                    .with("fetch.extra_root_ca_file", ca)
                    .unwrap()
                    .with("fetch.allow_private_addresses", true)
                    .unwrap()
            })
            .await,
        );
    }
    let (a, b) = (&apps[0], &apps[1]);
    let mut clients = Vec::new();
    for i in 0..8 {
        let (on, other) = if i % 2 == 0 { (a, b) } else { (b, a) };
        let c = on.register(&web_client()).await;
        let mut update = web_client();
        update["client_id"] = c["client_id"].clone();
        update["client_name"] = json!(format!("renamed {i}"));
        let uri = format!("{}/{}", other.endpoint, c["client_id"].as_str().unwrap());
        let token = c["registration_access_token"].as_str().unwrap();
        assert_eq!(other.put_client(&uri, token, &update).await.status(), 200);
        clients.push(c["client_id"].as_str().unwrap().to_owned());
    }
    for _ in 0..300 {
        if receiver.received().len() >= 16 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A moment more, so a duplicate delivery by the second replica would show.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let received = receiver.received();
    assert_eq!(received.len(), 16, "each event once");
    let mut per_client: HashMap<String, Vec<String>> = HashMap::new();
    for r in &received {
        let body: Value = serde_json::from_str(&r.body).unwrap();
        per_client
            .entry(body["data"]["client_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(body["type"].as_str().unwrap().to_owned());
    }
    for id in &clients {
        assert_eq!(
            per_client[id],
            ["client.registered", "client.updated"],
            "{id}"
        );
    }
    let mut ids: Vec<String> = received
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 16);

    let dir = apps.pop().unwrap().stop().await;
    apps.pop().unwrap().stop().await;
    let store = open_store(dir.path()).await;
    let verified = verify_log(store.as_ref()).await.unwrap().unwrap();
    assert_eq!(verified.count, 16, "one chain, both replicas' records");
    let page = registrar::events::list(store.as_ref(), &Default::default())
        .await
        .unwrap();
    assert_eq!(
        page.records
            .iter()
            .filter(|r| r.event == EventType::Registered)
            .count(),
        8
    );
}

/// A replica that claimed a delivery and died before settling it (no `Delivered`, no `Retry`)
/// holds the row only for its lease (`LEASE_SECS`, database time): until then the other
/// replica does not send it (no duplicate while the first may still be sending), after it the
/// other replica claims the same row and delivers it with the same `webhook-id`, and the row is
/// then gone for both. The lease's passing is simulated by moving `locked_until` back in the
/// database, the clock the lease is kept by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_claimed_by_a_replica_that_died_is_sent_by_the_other_once_its_lease_ends() {
    use registrar::clock::SystemClock;
    use registrar::events::webhook::{rows_for, OutboxOp, WebhookSettings};
    use registrar::events::worker::HttpsTransport;
    use registrar::events::{DeliveryWorker, OutboxQueue};
    use registrar::store::PostgresStore;
    use std::sync::Arc;

    let receiver = TlsServer::start(vec![("/hook", Reply::Json("{}".into()))]).await;
    let (dead, url) = crate::fresh_store().await;
    let survivor = Arc::new(
        PostgresStore::connect(&crate::pg_settings(&url))
            .await
            .unwrap(),
    );
    let hook = WebhookSettings {
        url: receiver.url("/hook"),
        secret: SECRET.into(),
        events: vec!["*".into()],
        max_attempts: 5,
    };
    let record = registrar::store::contract::named("client-a", "A");
    let now = registrar::clock::Clock::now(&SystemClock);
    let rows = rows_for(
        std::slice::from_ref(&hook),
        EventType::Registered,
        now,
        "client-a",
        Some(&record),
        || "msg_handover".into(),
    );
    dead.outbox_apply(rows.into_iter().map(OutboxOp::Enqueue).collect())
        .await
        .unwrap();

    // The replica about to die claims the row, then never settles it.
    let claimed = dead.outbox_pending(10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, "msg_handover");
    drop(dead);

    let fetch = registrar::settings::Settings::defaults()
        .unwrap()
        .with("fetch.extra_root_ca_file", receiver.ca_file())
        .unwrap()
        .with("fetch.allow_private_addresses", true)
        .unwrap()
        .fetch;
    let worker = DeliveryWorker::new(
        survivor.clone(),
        Arc::new(HttpsTransport::new(&fetch).unwrap()),
        Arc::new(SystemClock),
        &[hook],
    )
    .unwrap();
    // Within the lease: the survivor neither lists nor sends it.
    assert!(survivor.outbox_pending(10).await.unwrap().is_empty());
    assert_eq!(worker.run_once().await.unwrap().delivered, 0);
    assert!(receiver.received().is_empty());

    let (sql, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let moved = sql
        .execute(
            "UPDATE webhook_outbox SET locked_until = locked_until - 61 WHERE NOT dead",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(moved, 1, "the dead replica's claim is still on the row");

    assert_eq!(worker.run_once().await.unwrap().delivered, 1);
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].header("webhook-id").as_deref(),
        Some("msg_handover")
    );
    assert!(survivor.outbox_pending(10).await.unwrap().is_empty());
    assert_eq!(worker.run_once().await.unwrap().delivered, 0);
    assert_eq!(receiver.received().len(), 1, "sent once");
}
