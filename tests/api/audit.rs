//! The audit trail (issue #17 points 1 and 3): every registration, RFC 7592 update and delete,
//! RAT rotation on read and revocation, operator change (create, patch, disable/enable,
//! secret rotation, RAT re-issue, delete), reaping and storm eviction leaves one record, with
//! its actor, source and what changed, never a secret; the stored chain verifies. Read from
//! the store after the server stopped (offline, as `registrar audit verify` does) and through
//! `GET /admin/audit` (keyset pages, filters). CIMD events are in `cimd.rs`.

use crate::admin::{call, id_of, ok_json, with_admin, ALL, READ};
use crate::helpers::*;
use registrar::events::{verify_log, ActorKind, AuditRecord, EventType, Verified};
use reqwest::header::AUTHORIZATION;
use reqwest::Method;
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
    let registered_by = response_id(&created);
    let created: Value = created.json().await.unwrap();
    let client_id = created["client_id"].as_str().unwrap().to_owned();
    let secret = created["client_secret"].as_str().unwrap().to_owned();
    let mut update = created.clone();
    update["client_name"] = json!("Renamed");
    let r = app
        .put_client(&uri(&created), &rat(&created), &update)
        .await;
    assert_eq!(r.status(), 200);
    let updated_by = response_id(&r);
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
    // The server's request id (in the response and the logs), not the untrusted caller's claim.
    assert_eq!(reg.request_id.as_deref(), Some(registered_by.as_str()));
    assert_ne!(registered_by, "req-abc-1");
    assert_eq!(upd.request_id.as_deref(), Some(updated_by.as_str()));
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

// --- operator changes, the admin listing, system events ------------------------------------

/// The `X-Request-Id` the server gave a response.
fn response_id(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"].to_str().unwrap().to_owned()
}

/// An admin call with the `ALL` token (its name is `ops`): the body (null when none) and the
/// request id the server gave it.
async fn ops(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (Value, String) {
    let url = format!("{}{path}", app.admin.as_ref().unwrap());
    let mut r = app
        .client
        .request(method, url)
        .header(AUTHORIZATION, format!("Bearer {ALL}"));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let id = response_id(&r);
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert!((200..300).contains(&status), "{status}: {body}");
    (body, id)
}

/// Every record of `GET /admin/audit?<query>`, following `next_cursor` (pages of `limit`);
/// returns the records and how many pages it took.
async fn listed(app: &TestApp, query: &str, limit: usize) -> (Vec<Value>, usize) {
    let mut records = Vec::new();
    let mut after = 0;
    let mut pages = 0;
    loop {
        let sep = if query.is_empty() { "" } else { "&" };
        let path = format!("/admin/audit?{query}{sep}limit={limit}&after={after}");
        let page = ok_json(call(app, Method::GET, &path, Some(ALL), None).await, 200).await;
        pages += 1;
        let got = page["records"].as_array().unwrap();
        assert!(got.len() <= limit, "{page}");
        records.extend(got.iter().cloned());
        match page["next_cursor"].as_u64() {
            Some(next) => {
                assert!(next > after, "{page}");
                after = next;
            }
            None => {
                assert!(page["next_cursor"].is_null(), "{page}");
                return (records, pages);
            }
        }
        assert!(pages < 100, "the cursor does not advance");
    }
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn operator_changes_are_recorded_with_the_token_name_the_source_and_what_changed() {
    let app = spawn_app_with(with_admin).await;
    let (created, c) = ops(
        &app,
        Method::POST,
        "/admin/clients",
        Some(json!({
            "redirect_uris": ["https://client.example.org/cb"],
            "client_name": "Op",
            "token_endpoint_auth_method": "client_secret_basic",
        })),
    )
    .await;
    let id = id_of(&created);
    let path = format!("/admin/clients/{id}");
    let (_, p1) = ops(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"client_name": "Op2"})),
    )
    .await;
    let (_, p2) = ops(&app, Method::PATCH, &path, Some(json!({"disabled": true}))).await;
    // Both at once: two records of one write, the metadata change first.
    let (_, p3) = ops(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"disabled": false, "client_name": "Op3"})),
    )
    .await;
    // A patch that changes nothing records nothing.
    ops(
        &app,
        Method::PATCH,
        &path,
        Some(json!({"client_name": "Op3"})),
    )
    .await;
    let (rotated, rot) = ops(
        &app,
        Method::POST,
        &format!("{path}/client_secret"),
        Some(json!({})),
    )
    .await;
    let (reissued, reis) = ops(
        &app,
        Method::POST,
        &format!("{path}/registration_access_token"),
        None,
    )
    .await;
    let (_, del) = ops(&app, Method::DELETE, &path, None).await;
    let request_ids = [&c, &p1, &p2, &p3, &p3, &rot, &reis, &del];

    let (records, _) = listed(&app, &format!("client_id={id}"), 100).await;
    let events: Vec<&str> = records
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "client.created",
            "client.updated",
            "client.disabled",
            "client.updated",
            "client.enabled",
            "client.secret_rotated",
            "client.registration_access_token_reissued",
            "client.deleted",
        ]
    );
    let credentials = [
        created["client_secret"].as_str().unwrap(),
        created["registration_access_token"].as_str().unwrap(),
        rotated["client_secret"].as_str().unwrap(),
        reissued["registration_access_token"].as_str().unwrap(),
    ];
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["client_id"], id.as_str(), "{r}");
        assert_eq!(
            r["actor"],
            json!({"kind": "admin", "name": "ops", "iss": null, "token_digest": null})
        );
        assert_eq!(r["source_ip"], "127.0.0.1", "{r}");
        assert_eq!(r["request_id"], request_ids[i].as_str(), "{r}");
        if i > 0 {
            assert_eq!(r["before"], records[i - 1]["after"], "{r}");
        }
        let text = r.to_string();
        for c in credentials {
            assert!(!text.contains(c), "a credential in {text}");
        }
        assert!(!text.contains("argon2") && !text.contains(ALL), "{text}");
    }
    let changed: Vec<Vec<String>> = records.iter().map(|r| names(&r["changed"])).collect();
    assert!(
        changed[0].contains(&"client_name".to_owned()),
        "{changed:?}"
    );
    assert_eq!(changed[1], ["client_name"]);
    assert_eq!(changed[2], ["disabled"]);
    assert_eq!(changed[3], ["client_name"]);
    assert_eq!(changed[4], ["disabled"]);
    assert!(
        changed[5].contains(&"client_secret".to_owned()),
        "{changed:?}"
    );
    assert_eq!(changed[6], ["registration_access_token"]);
    assert!(records[0]["before"].is_null() && records[7]["after"].is_null());
    // `disabled` is named, but the view the digests cover does not carry it.
    assert_eq!(records[2]["before"], records[2]["after"]);
    assert_ne!(records[1]["before"], records[1]["after"]);

    let (verified, stored) = audit_trail(app).await;
    assert_eq!(verified.count, 8);
    assert_eq!(stored[7].hash, records[7]["hash"].as_str().unwrap());
    assert_eq!(stored[4].actor.kind, ActorKind::Admin);
}

#[tokio::test]
async fn the_admin_audit_listing_pages_by_cursor_and_filters_by_client_and_event() {
    let app = spawn_app_with(with_admin).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(app.register(&web_client()).await);
    }
    let second = &clients[1];
    let mut update = second.clone();
    update["client_name"] = json!("Second");
    assert_eq!(
        app.put_client(&uri(second), &rat(second), &update)
            .await
            .status(),
        200
    );

    let (all, pages) = listed(&app, "", 2).await;
    let seqs: Vec<u64> = all.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert!(pages >= 3, "{pages} pages of 2 for 6 records");
    // One page of everything: no cursor.
    let page = ok_json(
        call(&app, Method::GET, "/admin/audit", Some(ALL), None).await,
        200,
    )
    .await;
    assert_eq!(page["records"].as_array().unwrap().len(), 6);
    assert!(page["next_cursor"].is_null(), "{page}");
    assert_eq!(page["records"][5]["prev_hash"], page["records"][4]["hash"]);

    let id = id_of(second);
    let (mine, pages) = listed(&app, &format!("client_id={id}"), 1).await;
    let events: Vec<&str> = mine.iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["client.registered", "client.updated"]);
    assert!(pages >= 2);
    let (updates, _) = listed(&app, "event=client.updated", 10).await;
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0]["client_id"], id.as_str());
    assert_eq!(updates[0]["actor"]["kind"], "registration_access_token");
    let (none, _) = listed(&app, "event=client.deleted", 10).await;
    assert!(none.is_empty());
    let later = ok_json(
        call(&app, Method::GET, "/admin/audit?after=4", Some(ALL), None).await,
        200,
    )
    .await;
    let seqs: Vec<u64> = later["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [5, 6]);

    // The trail needs audit:read; a clients:read token is refused.
    let r = call(&app, Method::GET, "/admin/audit", Some(READ), None).await;
    assert_error(r, 403, "insufficient_scope").await;
    let r = call(&app, Method::GET, "/admin/audit", None, None).await;
    assert_error(r, 401, "invalid_token").await;
}

#[tokio::test]
async fn bad_audit_listing_parameters_are_refused_naming_the_parameter() {
    let app = spawn_app_with(with_admin).await;
    for (query, name) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("after=-1", "after"),
        ("after=1.5", "after"),
        ("after=9223372036854775808", "after"),
        ("event=client.nope", "event"),
        ("event=", "event"),
        ("client_id=", "client_id"),
        ("cursor=abc", "cursor"),
        ("limit=1&limit=2", "limit"),
    ] {
        let r = call(
            &app,
            Method::GET,
            &format!("/admin/audit?{query}"),
            Some(ALL),
            None,
        )
        .await;
        let why = assert_error(r, 400, "invalid_request").await;
        assert!(why.contains(name), "{query}: {why}");
    }
    let r = call(&app, Method::DELETE, "/admin/audit", Some(ALL), None).await;
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn reaping_and_storm_eviction_are_recorded_as_system_events() {
    let clock = std::sync::Arc::new(registrar::clock::FixedClock::new(1_800_000_000));
    let app = spawn_with_clock(clock.clone(), |s| {
        s.with("lifecycle.unused_client_ttl_secs", 100).unwrap()
    })
    .await;
    let reaped = app.register(&web_client()).await;
    clock.advance(101);
    let report = app.sweeper.clone().unwrap().sweep().await.unwrap();
    assert_eq!(report.reaped, 1);
    let (_, records) = audit_trail(app).await;
    let events: Vec<EventType> = records.iter().map(|r| r.event).collect();
    assert_eq!(events, [EventType::Registered, EventType::Reaped]);
    let r = &records[1];
    assert_eq!(r.client_id.as_deref(), reaped["client_id"].as_str());
    assert_eq!(r.actor, registrar::events::Actor::system());
    assert_eq!((&r.before, &r.after), (&records[0].after, &None));

    let app = spawn_app_with(|s| {
        s.with("access.anonymous_policy", "mcp")
            .unwrap()
            .with("policies", json!({"mcp": {"max_clients_per_software": 1}}))
            .unwrap()
    })
    .await;
    let host = json!({
        "redirect_uris": ["http://127.0.0.1:33418/callback"],
        "client_name": "Some MCP host",
        "software_id": "audit-storm",
        "token_endpoint_auth_method": "none",
        "application_type": "native",
    });
    let first = app.register(&host).await;
    let second = app.register(&host).await;
    let (_, records) = audit_trail(app).await;
    let evicted: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.event == EventType::Evicted)
        .collect();
    assert_eq!(evicted.len(), 1, "{records:?}");
    assert_eq!(evicted[0].client_id.as_deref(), first["client_id"].as_str());
    assert_eq!(evicted[0].actor.kind, ActorKind::System);
    assert_eq!(evicted[0].after, None);
    let registered = records
        .iter()
        .filter(|r| r.event == EventType::Registered)
        .count();
    assert_eq!(registered, 2);
    assert!(records
        .iter()
        .any(|r| r.client_id.as_deref() == second["client_id"].as_str()));
}

/// `audit.enabled = false` (issue #17 point 6): a registration, an RFC 7592 PUT and DELETE
/// leave no audit record, while the webhook still hears of all three; the records written
/// before it was switched off still verify and list, and the chain continues after them
/// once it is switched back on.
#[tokio::test]
async fn with_audit_off_changes_leave_no_record_but_webhooks_still_deliver() {
    use crate::tls::{Reply, TlsServer};
    use crate::webhooks::{wait_for, SECRET};
    // One record written with the default (on), before the trail is switched off.
    let app = spawn_app().await;
    app.register(&web_client()).await;
    let dir = app.stop().await;

    let server = TlsServer::start(vec![("/hook", Reply::Json("{}".into()))]).await;
    let hooks = json!([{"url": server.url("/hook"), "secret": SECRET, "events": ["*"]}]);
    let trusting = server.trusting(true);
    let app = spawn_in(dir, move |s| {
        trusting(s)
            .with("webhooks", hooks)
            .unwrap()
            .with("audit.enabled", false)
            .unwrap()
    })
    .await;
    let created = app.register(&web_client()).await;
    let mut update = created.clone();
    update["client_name"] = json!("Renamed while off");
    let r = app
        .put_client(&uri(&created), &rat(&created), &update)
        .await;
    assert_eq!(r.status(), 200);
    let updated: Value = r.json().await.unwrap();
    assert_eq!(
        app.delete_client(&uri(&updated), &rat(&updated))
            .await
            .status(),
        204
    );
    let received = wait_for(&server, 3).await;
    let types: Vec<String> = received
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_str(&r.body).unwrap();
            body["type"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        types,
        ["client.registered", "client.updated", "client.deleted"]
    );
    // The admin listing still answers, over the one record that exists.
    let dir = app.stop().await;
    let app = spawn_in(dir, with_admin).await;
    let listed = ok_json(
        call(&app, Method::GET, "/admin/audit", Some(ALL), None).await,
        200,
    )
    .await;
    assert_eq!(
        listed["records"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    // Back on: the chain continues from the record written before it was off.
    app.register(&web_client()).await;
    let (verified, records) = audit_trail(app).await;
    assert_eq!(verified.count, 2);
    let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(records[1].prev_hash, records[0].hash);
    let off_id = created["client_id"].as_str().unwrap();
    assert!(
        records
            .iter()
            .all(|r| r.client_id.as_deref() != Some(off_id)),
        "a record of a change made while audit was off: {records:?}"
    );
}
