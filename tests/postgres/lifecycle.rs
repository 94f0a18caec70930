//! The client lifecycle (README "Client lifecycle") with two replicas on one database, on one
//! injected clock: the RAT grace is a property of the stored record, not of the replica that
//! rotated, and concurrent sweeps delete (and audit) each expired client once. The admin
//! authentication cache of one replica never outlives a rotation or a disable on the other.

use crate::helpers::*;
use crate::pg;
use registrar::clock::FixedClock;
use registrar::events::{AuditQuery, EventType};
use registrar::settings::Settings;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;

const T0: i64 = 1_800_000_000;

/// Two apps on one new database and one clock (own data directories, so nothing is shared but
/// the database), started one after the other (the first migrates).
async fn two_replicas(
    clock: &Arc<FixedClock>,
    tweak: impl Fn(Settings) -> Settings,
) -> (TestApp, TestApp) {
    let url = pg::shared().new_database();
    let mut apps = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("test-database-url"), &url).unwrap();
        apps.push(spawn_in_with_clock(dir, clock.clone(), &tweak).await);
    }
    let b = apps.pop().unwrap();
    let a = apps.pop().unwrap();
    (a, b)
}

fn uri_on(app: &TestApp, c: &Value) -> String {
    format!("{}/{}", app.endpoint, c["client_id"].as_str().unwrap())
}

fn rat(c: &Value) -> String {
    c["registration_access_token"].as_str().unwrap().to_owned()
}

/// The body of an RFC 7592 PUT that keeps `current`'s metadata, renamed.
fn renamed(current: &Value, name: &str) -> Value {
    let mut body = put_body(current);
    body["client_name"] = json!(name);
    body
}

/// The RFC 7592 401 every bad, dead or reaped token gets.
async fn refused(r: reqwest::Response) {
    assert_error(r, 401, "invalid_token").await;
}

const AUTHN: &str = "admin-authn-token-0003";
const WRITE: &str = "admin-write-token-0002";

/// `POST` (or `PATCH`) `body` to `path` on `app`'s admin listener with `token`.
async fn admin_call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Value,
) -> reqwest::Response {
    let url = format!("{}{path}", app.admin.as_ref().expect("admin listener runs"));
    app.client
        .request(method, url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn authenticate_status(app: &TestApp, id: &str, secret: &str) -> u16 {
    let path = format!("/admin/clients/{id}/authenticate");
    admin_call(
        app,
        reqwest::Method::POST,
        &path,
        AUTHN,
        json!({"client_secret": secret}),
    )
    .await
    .status()
    .as_u16()
}

async fn cache_hits(app: &TestApp) -> f64 {
    let m = app.scrape.render().await;
    m.lines()
        .find_map(|l| l.strip_prefix("registrar_authentication_cache_hits_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no cache hit counter in:\n{m}"))
}

#[tokio::test]
async fn a_rotation_or_disable_on_one_replica_ends_the_other_replicas_cached_secret() {
    let clock = Arc::new(FixedClock::new(T0));
    let (a, b) = two_replicas(&clock, |s| {
        s.with("admin.port", 0)
            .unwrap()
            .with(
                "admin.tokens",
                json!([
                    {"name": "as", "token": AUTHN, "scopes": ["clients:authenticate"]},
                    {"name": "writer", "token": WRITE, "scopes": ["clients:write"]},
                ]),
            )
            .unwrap()
            .with("admin.authenticate_cache_ttl_secs", 3600)
            .unwrap()
    })
    .await;
    let c = a.register(&web_client()).await;
    let id = c["client_id"].as_str().unwrap().to_owned();
    let old = c["client_secret"].as_str().unwrap().to_owned();
    // B verifies the secret once, then answers from its cache.
    for _ in 0..2 {
        assert_eq!(authenticate_status(&b, &id, &old).await, 200);
    }
    assert_eq!(cache_hits(&b).await, 1.0);
    // Rotated on A without grace: B refuses the old secret at its next call.
    let r = admin_call(
        &a,
        reqwest::Method::POST,
        &format!("/admin/clients/{id}/client_secret"),
        WRITE,
        json!({}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let new = r.json::<Value>().await.unwrap()["client_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(authenticate_status(&b, &id, &old).await, 401);
    assert_eq!(cache_hits(&b).await, 1.0, "the old secret did not hit");
    for _ in 0..2 {
        assert_eq!(authenticate_status(&b, &id, &new).await, 200);
    }
    assert_eq!(cache_hits(&b).await, 2.0);
    // Disabled on A: B refuses at once too.
    let r = admin_call(
        &a,
        reqwest::Method::PATCH,
        &format!("/admin/clients/{id}"),
        WRITE,
        json!({"disabled": true}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(authenticate_status(&b, &id, &new).await, 401);
    assert_eq!(cache_hits(&b).await, 2.0);
}

#[tokio::test]
async fn the_rat_grace_holds_across_replicas_and_only_for_reading() {
    let clock = Arc::new(FixedClock::new(T0));
    let (a, b) = two_replicas(&clock, |s| {
        s.with("registration.rat_grace_secs", 100).unwrap()
    })
    .await;
    let c = a.register(&web_client()).await;
    let old = rat(&c);
    // Rotate on A; the client "loses" the response and keeps only the old token.
    let r = a
        .put_client(&uri_on(&a, &c), &old, &renamed(&c, "rotated on A"))
        .await;
    assert_eq!(r.status(), 200);
    let lost: Value = r.json().await.unwrap();
    let new = rat(&lost);
    assert_ne!(new, old, "the PUT rotated the token");
    clock.advance(60);

    // Within the grace the old token reads, on B, the current registration with A's new token;
    // reading again (on either replica) hands over the same token, with no second rotation.
    for app in [&b, &b, &a] {
        let r = app.get_client(&uri_on(app, &c), &old).await;
        assert_eq!(r.status(), 200);
        let read: Value = r.json().await.unwrap();
        assert_eq!(rat(&read), new, "the grace hands over the token A issued");
        assert_eq!(read["client_name"], "rotated on A");
    }
    // The old token may only read, on both replicas.
    for app in [&a, &b] {
        refused(
            app.put_client(&uri_on(app, &c), &old, &renamed(&c, "by the old token"))
                .await,
        )
        .await;
        refused(app.delete_client(&uri_on(app, &c), &old).await).await;
    }
    // The first use of the new token (on B) ends the grace on both.
    assert_eq!(b.get_client(&uri_on(&b, &c), &new).await.status(), 200);
    for app in [&a, &b] {
        refused(app.get_client(&uri_on(app, &c), &old).await).await;
    }
    let read: Value = a
        .get_client(&uri_on(&a, &c), &new)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        read["client_name"], "rotated on A",
        "nothing the old token sent was kept"
    );

    // Unused, the grace ends after rat_grace_secs, wherever the rotation was.
    let d = b.register(&web_client()).await;
    let r = b
        .put_client(&uri_on(&b, &d), &rat(&d), &renamed(&d, "rotated on B"))
        .await;
    assert_eq!(r.status(), 200);
    clock.advance(99);
    assert_eq!(a.get_client(&uri_on(&a, &d), &rat(&d)).await.status(), 200);
    clock.advance(1);
    for app in [&a, &b] {
        refused(app.get_client(&uri_on(app, &d), &rat(&d)).await).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sweeps_on_two_replicas_reap_and_audit_each_client_once() {
    let clock = Arc::new(FixedClock::new(T0));
    let (a, b) = two_replicas(&clock, |s| {
        s.with("lifecycle.unused_client_ttl_secs", 100)
            .unwrap()
            // Small pages, so that the two sweeps interleave over many scans.
            .with("lifecycle.sweep_batch", 7)
            .unwrap()
    })
    .await;
    let mut unused = Vec::new();
    let mut used = Vec::new();
    for i in 0..48 {
        let on = if i % 2 == 0 { &a } else { &b };
        let c = on.register(&web_client()).await;
        if i % 8 == 0 {
            used.push(c);
        } else {
            unused.push(c);
        }
    }
    clock.advance(50);
    // An RFC 7592 read is a use, seen by the other replica's sweeper.
    for (i, c) in used.iter().enumerate() {
        let on = if i % 2 == 0 { &b } else { &a };
        assert_eq!(on.get_client(&uri_on(on, c), &rat(c)).await.status(), 200);
    }
    clock.advance(50);

    let (sa, sb) = (a.sweeper.clone().unwrap(), b.sweeper.clone().unwrap());
    let (ra, rb) = tokio::join!(
        tokio::spawn(async move { sa.sweep().await.unwrap() }),
        tokio::spawn(async move { sb.sweep().await.unwrap() }),
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(
        ra.reaped + rb.reaped,
        unused.len() as u64,
        "each expired client reaped by exactly one replica: {ra:?} {rb:?}"
    );
    for c in &unused {
        for app in [&a, &b] {
            refused(app.get_client(&uri_on(app, c), &rat(c)).await).await;
        }
    }
    for c in &used {
        assert_eq!(a.get_client(&uri_on(&a, c), &rat(c)).await.status(), 200);
    }

    // One `client.reaped` record per reaped client, whichever replica wrote it.
    let store = open_store(a.dir.path()).await;
    let page = registrar::events::list(
        store.as_ref(),
        &AuditQuery {
            limit: 1000,
            event: Some(EventType::Reaped),
            ..AuditQuery::default()
        },
    )
    .await
    .unwrap();
    let reaped: Vec<String> = page
        .records
        .iter()
        .map(|r| r.client_id.clone().unwrap())
        .collect();
    assert_eq!(reaped.len(), unused.len(), "one audit record per client");
    let distinct: HashSet<&String> = reaped.iter().collect();
    let expected: HashSet<String> = unused
        .iter()
        .map(|c| c["client_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(distinct, expected.iter().collect());

    // A second round on both finds nothing left to reap.
    assert_eq!(a.sweeper.as_ref().unwrap().sweep().await.unwrap().reaped, 0);
    assert_eq!(b.sweeper.as_ref().unwrap().sweep().await.unwrap().reaped, 0);
}
