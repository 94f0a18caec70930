//! The lifecycle decisions, and two sweepers racing over one store.

use super::*;
use crate::clock::FixedClock;
use crate::events::Origin;
use crate::policy::RegistrationContext;
use crate::registration::{Parts, Registrar};
use crate::settings::Settings;
use crate::store::MemoryStore;
use std::sync::Arc;

const NOW: i64 = 1_700_000_000;

fn record(created: i64, last_used: Option<i64>) -> ClientRecord {
    ClientRecord {
        client_id: "c".into(),
        created_at: created,
        client_id_issued_at: created,
        last_used_at: last_used,
        rat_tag: vec![1; 32],
        ..Default::default()
    }
}

fn ttls(unused: u64, inactive: u64) -> LifecycleSettings {
    LifecycleSettings {
        unused_client_ttl_secs: unused,
        inactive_client_ttl_secs: inactive,
        ..Default::default()
    }
}

#[test]
fn reaping_needs_a_ttl_and_its_age() {
    let never = |_: &str| false;
    let r = record(NOW - 100, None);
    assert_eq!(reap_reason(&r, NOW, &ttls(0, 0), never), None);
    assert_eq!(reap_reason(&r, NOW, &ttls(101, 0), never), None);
    assert_eq!(
        reap_reason(&r, NOW, &ttls(100, 0), never),
        Some(ReapReason::Unused)
    );
    // Never used and only an inactivity TTL: judged from the registration.
    assert_eq!(
        reap_reason(&r, NOW, &ttls(0, 100), never),
        Some(ReapReason::Inactive)
    );
    let used = record(NOW - 1000, Some(NOW - 10));
    assert_eq!(reap_reason(&used, NOW, &ttls(100, 0), never), None);
    assert_eq!(reap_reason(&used, NOW, &ttls(100, 11), never), None);
    assert_eq!(
        reap_reason(&used, NOW, &ttls(100, 10), never),
        Some(ReapReason::Inactive)
    );
    // Records from before created_at was kept fall back to client_id_issued_at.
    let mut old = record(0, None);
    old.client_id_issued_at = NOW - 100;
    assert_eq!(
        reap_reason(&old, NOW, &ttls(100, 0), never),
        Some(ReapReason::Unused)
    );
    old.client_id_issued_at = NOW - 99;
    assert_eq!(reap_reason(&old, NOW, &ttls(100, 0), never), None);
}

#[test]
fn admin_created_and_exempt_clients_are_never_reaped() {
    let mut r = record(0, None);
    r.source = Some(source::ADMIN.into());
    assert_eq!(reap_reason(&r, NOW, &ttls(1, 1), |_| false), None);
    let mut r = record(0, None);
    r.policy = Some("kept".into());
    assert_eq!(reap_reason(&r, NOW, &ttls(1, 1), |p| p == "kept"), None);
    r.policy = Some("other".into());
    assert!(reap_reason(&r, NOW, &ttls(1, 1), |p| p == "kept").is_some());
}

fn credentials(lifetime: u64, before: Option<u64>, grace: u64) -> CredentialSettings {
    let mut c = Settings::defaults().unwrap().credentials;
    c.client_secret_lifetime_secs = lifetime;
    c.client_secret_renew_before_secs = before;
    c.client_secret_expired_grace_secs = grace;
    c
}

#[test]
fn renewal_windows() {
    let at = NOW + 100;
    let c = credentials(1000, None, 0);
    // Default window: the last tenth of the lifetime.
    assert!(!secret_due_for_renewal(Some(at), at - 101, &c));
    assert!(secret_due_for_renewal(Some(at), at - 100, &c));
    assert!(secret_due_for_renewal(Some(at), at - 1, &c));
    assert!(
        !secret_due_for_renewal(Some(at), at, &c),
        "expired, no grace"
    );
    let c = credentials(1000, Some(10), 5);
    assert!(!secret_due_for_renewal(Some(at), at - 11, &c));
    assert!(secret_due_for_renewal(Some(at), at - 10, &c));
    assert!(secret_due_for_renewal(Some(at), at + 4, &c));
    assert!(!secret_due_for_renewal(Some(at), at + 5, &c));
    // Secrets that never expire, or no lifetime configured: never renewed.
    assert!(!secret_due_for_renewal(Some(0), NOW, &c));
    assert!(!secret_due_for_renewal(None, NOW, &c));
    assert!(!secret_due_for_renewal(
        Some(at),
        at - 1,
        &credentials(0, Some(10), 5)
    ));
}

#[test]
fn the_renewal_overlap_never_outlives_the_old_secret() {
    let mut c = credentials(1000, None, 0);
    assert_eq!(renewal_overlap_until(Some(NOW + 50), NOW, &c), None);
    c.client_secret_renewal_overlap_secs = 30;
    assert_eq!(
        renewal_overlap_until(Some(NOW + 50), NOW, &c),
        Some(NOW + 30)
    );
    assert_eq!(
        renewal_overlap_until(Some(NOW + 10), NOW, &c),
        Some(NOW + 10)
    );
    assert_eq!(
        renewal_overlap_until(Some(NOW - 1), NOW, &c),
        None,
        "already expired"
    );
}

#[test]
fn a_rotation_with_grace_keeps_the_old_token_for_reads_until_it_ends() {
    let key = RatKey::new(vec![3; 32]).unwrap();
    let mut r = record(NOW, None);
    r.rat_tag = key.tag("old").to_vec();
    let new = Plaintext::new("new".into());
    rotate_rat(&mut r, &key, &new, NOW, 60, Some("old"));
    assert_eq!(match_rat(&r, &key, "new", NOW), RatMatch::Current);
    assert_eq!(match_rat(&r, &key, "old", NOW + 59), RatMatch::Previous);
    assert_eq!(match_rat(&r, &key, "old", NOW + 60), RatMatch::None);
    assert_eq!(match_rat(&r, &key, "other", NOW), RatMatch::None);
    assert_eq!(sealed_token(&r, &key, "old").unwrap().expose(), "new");
    assert!(end_grace(&mut r));
    assert_eq!(match_rat(&r, &key, "old", NOW), RatMatch::None);
    assert!(sealed_token(&r, &key, "old").is_none());
    // Without grace nothing of the old token is kept.
    rotate_rat(&mut r, &key, &Plaintext::new("newer".into()), NOW, 0, None);
    assert_eq!(match_rat(&r, &key, "new", NOW), RatMatch::None);
    assert!(r.previous_rat_tag.is_none() && r.sealed_rat.is_none());
}

#[test]
fn use_is_recorded_at_the_resolution() {
    let mut r = record(NOW, None);
    assert!(mark_used(&mut r, NOW, 60));
    assert!(!mark_used(&mut r, NOW + 59, 60));
    assert_eq!(r.last_used_at, Some(NOW));
    assert!(mark_used(&mut r, NOW + 60, 60));
    assert_eq!(r.last_used_at, Some(NOW + 60));
}

#[test]
fn software_keys_prefer_software_id_and_are_per_policy() {
    let m = |v: serde_json::Value| v.as_object().unwrap().clone();
    let a = software_key(
        "p",
        &m(serde_json::json!({"software_id": "s", "client_name": "n"})),
    );
    assert_eq!(
        a,
        software_key("p", &m(serde_json::json!({"software_id": "s"})))
    );
    assert_ne!(
        a,
        software_key("q", &m(serde_json::json!({"software_id": "s"})))
    );
    // A client_name cannot pose as a software_id.
    assert_ne!(
        a,
        software_key("p", &m(serde_json::json!({"client_name": "s"})))
    );
}

/// A registrar over `store` with its own clock: what one replica is.
fn replica(store: Arc<dyn ClientStore>, clock: Arc<FixedClock>, seed: u64) -> Arc<Registrar> {
    replica_with(store, clock, seed, |s| s)
}

fn replica_with(
    store: Arc<dyn ClientStore>,
    clock: Arc<FixedClock>,
    seed: u64,
    tweak: impl FnOnce(Settings) -> Settings,
) -> Arc<Registrar> {
    let settings = tweak(
        Settings::defaults()
            .unwrap()
            .with("issuer", "https://id.example.com")
            .unwrap()
            .with("fetch.fetch_jwks_uri", false)
            .unwrap(),
    );
    Arc::new(Registrar::new(Parts::for_tests(
        settings, store, clock, seed,
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sweeping_at_once_delete_each_client_once() {
    two_replicas_sweep(Arc::new(MemoryStore::new())).await;
    let dir = tempfile::tempdir().unwrap();
    two_replicas_sweep(Arc::new(
        crate::store::SledStore::open(dir.path(), 1 << 20).unwrap(),
    ))
    .await;
}

/// Two registrars over one store, as two replicas over one database are.
async fn two_replicas_sweep(store: Arc<dyn ClientStore>) {
    let clock = Arc::new(FixedClock::new(NOW));
    let a = replica(store.clone(), clock.clone(), 1);
    let b = replica(store.clone(), clock.clone(), 2);
    let body = serde_json::json!({
        "redirect_uris": ["https://client.example.org/cb"],
        "token_endpoint_auth_method": "none",
    });
    let body = body.as_object().unwrap();
    for _ in 0..300 {
        a.register_client(body, &RegistrationContext::default(), &Origin::default())
            .await
            .unwrap();
    }
    clock.advance(100);
    let settings = LifecycleSettings {
        unused_client_ttl_secs: 100,
        sweep_batch: 7,
        ..Default::default()
    };
    let one = Arc::new(Sweeper::new(a, settings.clone()));
    let two = Arc::new(Sweeper::new(b, settings));
    let (r1, r2) = tokio::join!(
        tokio::spawn({
            let one = one.clone();
            async move { one.sweep().await.unwrap() }
        }),
        tokio::spawn({
            let two = two.clone();
            async move { two.sweep().await.unwrap() }
        }),
    );
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!(r1.reaped + r2.reaped, 300, "{r1:?} {r2:?}");
    assert_eq!(store.count().await.unwrap(), 0);
    assert_eq!(one.reaped_total() + two.reaped_total(), 300);
}

#[tokio::test]
async fn a_queued_candidate_used_since_is_skipped_not_evicted() {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(FixedClock::new(NOW));
    let registrar = replica_with(
        store.clone() as Arc<dyn ClientStore>,
        clock.clone(),
        3,
        |s| {
            s.with("access.anonymous_policy", "mcp")
                .unwrap()
                .with(
                    "policies",
                    serde_json::json!({"mcp": {"max_clients_per_software": 2}}),
                )
                .unwrap()
        },
    );
    let body = serde_json::json!({
        "redirect_uris": ["https://client.example.org/cb"],
        "token_endpoint_auth_method": "none",
        "software_id": "host",
    });
    let mut ids: Vec<(String, String)> = Vec::new();
    for _ in 0..4 {
        if ids.len() == 3 {
            // B was queued as the next candidate when C evicted A; now it is used.
            let (b, rat) = &ids[1];
            registrar
                .read_client(b, Some(rat.as_str()), &Origin::default())
                .await
                .unwrap();
        }
        let r = registrar
            .register_client(
                body.as_object().unwrap(),
                &RegistrationContext::default(),
                &Origin::default(),
            )
            .await
            .unwrap();
        let id = r["client_id"].as_str().unwrap().to_owned();
        let rat = r["registration_access_token"].as_str().unwrap().to_owned();
        ids.push((id, rat));
        clock.advance(1);
    }
    let mut alive = Vec::new();
    for (id, _) in &ids {
        alive.push(store.get(id).await.unwrap().is_some());
    }
    // A evicted by C, C (not the used B) by D.
    assert_eq!(alive, [false, true, false, true]);
}

#[tokio::test]
async fn the_grace_holds_on_another_replica_and_ends_there_on_first_use() {
    let store: Arc<dyn ClientStore> = Arc::new(MemoryStore::new());
    let clock = Arc::new(FixedClock::new(NOW));
    let (a, b) = (
        replica(store.clone(), clock.clone(), 4),
        replica(store, clock, 5),
    );
    let body = serde_json::json!({"redirect_uris": ["https://client.example.org/cb"]});
    let body = body.as_object().unwrap();
    let c = a
        .register_client(body, &RegistrationContext::default(), &Origin::default())
        .await
        .unwrap();
    let id = c["client_id"].as_str().unwrap();
    let old = c["registration_access_token"].as_str().unwrap();
    let mut update = body.clone();
    update.insert("client_id".into(), id.into());
    // Replica A rotates; its response is lost.
    let lost = a
        .update_client(id, Some(old), &update, &Origin::default())
        .await
        .unwrap();
    let new = lost["registration_access_token"].as_str().unwrap();
    assert_ne!(new, old);
    // Replica B hands the new token to the old one's holder, for reading only.
    let read = b
        .read_client(id, Some(old), &Origin::default())
        .await
        .unwrap();
    assert_eq!(read.to_map()["registration_access_token"], new);
    assert!(matches!(
        b.update_client(id, Some(old), &update, &Origin::default())
            .await,
        Err(crate::error::RegistrationError::InvalidToken)
    ));
    // The first use of the new token, on B, ends the grace for A too.
    b.read_client(id, Some(new), &Origin::default())
        .await
        .unwrap();
    assert!(matches!(
        a.read_client(id, Some(old), &Origin::default()).await,
        Err(crate::error::RegistrationError::InvalidToken)
    ));
}
