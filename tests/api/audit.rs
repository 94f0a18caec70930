//! The audit trail of the public API (issue #17 point 1): every registration, RFC 7592 update
//! and delete, RAT rotation on read and revocation leaves one record, with its actor, source
//! and what changed, never a secret; the stored chain verifies. Read from the store after the
//! server stopped (offline, as `registrar audit verify` does).

use crate::helpers::*;
use registrar::events::{verify_log, ActorKind, AuditRecord, EventType, Verified};
use reqwest::header::AUTHORIZATION;
use serde_json::{json, Value};

/// Stop the app and read its whole trail; panics unless the chain verifies.
pub(crate) async fn audit_trail(app: TestApp) -> (Verified, Vec<AuditRecord>) {
    let dir = app.stop().await;
    let store = open_store(dir.path()).await;
    let verified = verify_log(store.as_ref())
        .await
        .unwrap()
        .expect("chain intact");
    let page = registrar::events::list(
        store.as_ref(),
        &registrar::events::AuditQuery {
            limit: 1000,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    (verified, page.records)
}

fn uri(body: &Value) -> String {
    body["registration_client_uri"].as_str().unwrap().to_owned()
}

fn rat(body: &Value) -> String {
    body["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn registration_update_and_delete_each_leave_one_record_without_secrets() {
    let app = spawn_app().await;
    let created = app
        .client
        .post(&app.endpoint)
        .header("x-request-id", "req-abc-1")
        .json(&json!({
            "redirect_uris": ["https://client.example.org/cb"],
            "client_name": "Audited",
            "token_endpoint_auth_method": "client_secret_basic",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let client_id = created["client_id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    let mut update = created.clone();
    update["client_name"] = json!("Renamed");
    let r = app
        .put_client(&uri(&created), &rat(&created), &update)
        .await;
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    // A refused update changes nothing and records nothing.
    let mut bad = updated.clone();
    bad["redirect_uris"] = json!(["https://client.example.org/cb#frag"]);
    assert_eq!(
        app.put_client(&uri(&updated), &rat(&updated), &bad)
            .await
            .status(),
        400
    );
    assert_eq!(
        app.delete_client(&uri(&updated), &rat(&updated))
            .await
            .status(),
        204
    );
    let tokens = [rat(&created), rat(&updated), secret];

    let (verified, records) = audit_trail(app).await;
    assert_eq!(verified.count, 3);
    let events: Vec<EventType> = records.iter().map(|r| r.event).collect();
    assert_eq!(
        events,
        [
            EventType::Registered,
            EventType::Updated,
            EventType::Deleted
        ]
    );
    let (reg, upd, del) = (&records[0], &records[1], &records[2]);
    for r in &records {
        assert_eq!(r.client_id.as_deref(), Some(client_id.as_str()));
        assert_eq!(r.source_ip.as_deref(), Some("127.0.0.1"));
        let text = serde_json::to_string(r).unwrap();
        for t in &tokens {
            assert!(!text.contains(t.as_str()), "a credential in {text}");
        }
        assert!(!text.contains("argon2"), "{text}");
    }
    assert_eq!(reg.request_id.as_deref(), Some("req-abc-1"));
    assert_eq!(upd.request_id, None);
    assert_eq!(reg.actor.kind, ActorKind::Anonymous);
    assert_eq!(upd.actor.kind, ActorKind::RegistrationAccessToken);
    assert_eq!(del.actor.kind, ActorKind::RegistrationAccessToken);
    assert_eq!((reg.before.as_ref(), reg.after.is_some()), (None, true));
    assert!(reg.changed.contains(&"client_name".to_owned()));
    assert!(reg.changed.contains(&"redirect_uris".to_owned()));
    assert_eq!(upd.before, reg.after);
    assert_eq!(upd.changed, ["client_name", "registration_access_token"]);
    assert_eq!(del.before, upd.after);
    assert_eq!(del.after, None);
    assert_eq!((reg.seq, upd.prev_hash.as_str()), (1, reg.hash.as_str()));
    assert_eq!(verified.head.hash, del.hash);
}

#[tokio::test]
async fn rotation_on_read_and_revocation_are_recorded_as_token_changes() {
    let app = spawn_app_with(|s| s.with("registration.rotate_rat_on_read", true).unwrap()).await;
    let a = app.register(&web_client()).await;
    let b = app.register(&web_client()).await;
    let read: Value = app
        .get_client(&uri(&a), &rat(&a))
        .await
        .json()
        .await
        .unwrap();
    // b's token presented for a: b's token is revoked (RFC 7592 §2.1).
    let r = app
        .client
        .get(uri(&read))
        .header(AUTHORIZATION, format!("Bearer {}", rat(&b)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (verified, records) = audit_trail(app).await;
    assert_eq!(verified.count, 4);
    let rotated = &records[2];
    assert_eq!(rotated.event, EventType::Updated);
    assert_eq!(
        rotated.client_id,
        a["client_id"].as_str().map(str::to_owned)
    );
    assert_eq!(rotated.changed, ["registration_access_token"]);
    assert_eq!(
        rotated.before, rotated.after,
        "the client view did not change"
    );
    let revoked = &records[3];
    assert_eq!(
        revoked.client_id,
        b["client_id"].as_str().map(str::to_owned)
    );
    assert_eq!(revoked.changed, ["registration_access_token"]);
}

#[tokio::test]
async fn an_initial_access_token_registration_names_the_token_by_a_short_digest_only() {
    const TOKEN: &str = "audit-initial-access-token-0123456789abcdef";
    let app = spawn_app_with(|s| {
        s.with("access.mode", "token")
            .unwrap()
            .with("access.static_tokens", json!([{ "token": TOKEN }]))
            .unwrap()
    })
    .await;
    let r = app
        .client
        .post(&app.endpoint)
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .json(&web_client())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, records) = audit_trail(app).await;
    let actor = &records[0].actor;
    assert_eq!(actor.kind, ActorKind::InitialAccessToken);
    assert_eq!(
        actor.token_digest.as_deref(),
        Some(registrar::events::Actor::token_digest(TOKEN).as_str())
    );
    let text = serde_json::to_string(&records[0]).unwrap();
    assert!(!text.contains(TOKEN), "{text}");
}

#[tokio::test]
async fn the_trail_survives_a_restart_and_the_chain_continues() {
    let app = spawn_app().await;
    app.register(&web_client()).await;
    let dir = app.stop().await;
    let app = spawn_in(dir, |s| s).await;
    app.register(&web_client()).await;
    let (verified, records) = audit_trail(app).await;
    assert_eq!(verified.count, 2);
    assert_eq!(records[1].seq, 2);
    assert_eq!(records[1].prev_hash, records[0].hash);
}

#[tokio::test]
async fn retention_prunes_old_records_behind_a_checkpoint_and_the_rest_still_verifies() {
    let day = 86_400;
    let clock = std::sync::Arc::new(registrar::clock::FixedClock::new(100 * day));
    let keep_one_day =
        |s: registrar::settings::Settings| s.with("audit.retention_days", 1).unwrap();
    let app = spawn_with_clock(clock.clone(), keep_one_day).await;
    app.register(&web_client()).await;
    app.register(&web_client()).await;
    let dir = app.stop().await;
    // Two days later the server starts again: retention runs once at start (before any stop).
    clock.advance(2 * day);
    let app = spawn_in_with_clock(dir, clock.clone(), keep_one_day).await;
    let dir = app.stop().await;
    let app = spawn_in_with_clock(dir, clock.clone(), keep_one_day).await;
    app.register(&web_client()).await;
    let (verified, records) = audit_trail(app).await;
    let events: Vec<EventType> = records.iter().map(|r| r.event).collect();
    assert_eq!(events, [EventType::Checkpoint, EventType::Registered]);
    let checkpoint = records[0].checkpoint.as_ref().unwrap();
    assert_eq!((checkpoint.pruned_through, checkpoint.pruned_count), (2, 2));
    assert_eq!(records[0].seq, 3);
    assert_eq!(records[0].prev_hash, checkpoint.pruned_head);
    assert_eq!(verified.count, 2);
    assert_eq!(verified.head.seq, 4);
}
