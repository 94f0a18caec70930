//! Client lifecycle (README "Client lifecycle"): RAT grace after rotation, secret renewal on
//! PUT, reaping of abandoned clients, storm control. Time moves on an injected clock.

use crate::admin::{authenticate, call, id_of, ok_json, with_admin, WRITE};
use crate::helpers::*;
use registrar::clock::FixedClock;
use registrar::settings::Settings;
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::Arc;

const T0: i64 = 1_800_000_000;

fn uri(c: &Value) -> String {
    client_uri(c)
}
fn rat(c: &Value) -> String {
    client_rat(c)
}

/// Assert the RFC 7592 401 every bad, dead or reaped token gets.
async fn refused(r: reqwest::Response) {
    assert_error(r, 401, "invalid_token").await;
}

/// The JSON body of a response.
async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.unwrap()
}

async fn status(r: reqwest::Response) -> u16 {
    r.status().as_u16()
}

// --- RAT grace ------------------------------------------------------------------------------

#[tokio::test]
async fn a_client_that_lost_the_put_response_recovers_the_new_token_with_the_old_one() {
    let clock = Arc::new(FixedClock::new(T0));
    let app = spawn_with_clock(clock.clone(), |s| s).await;
    let c = app.register(&web_client()).await;
    let mut body = put_body(&c);
    body["client_name"] = json!("Renamed");
    // The response of this PUT is "lost": the client still holds only the old token.
    let lost: Value = json_of(app.put_client(&uri(&c), &rat(&c), &body).await).await;
    assert_ne!(rat(&lost), rat(&c));
    clock.advance(60);

    let r = app.get_client(&uri(&c), &rat(&c)).await;
    assert_eq!(r.status(), 200);
    let recovered: Value = r.json().await.unwrap();
    assert_eq!(
        recovered["registration_access_token"],
        lost["registration_access_token"]
    );
    assert_eq!(recovered["client_name"], "Renamed");
    // Reading again with the old token gives the same new token (no second rotation).
    let again: Value = json_of(app.get_client(&uri(&c), &rat(&c)).await).await;
    assert_eq!(
        again["registration_access_token"],
        lost["registration_access_token"]
    );

    // The old token may only read.
    refused(app.put_client(&uri(&c), &rat(&c), &body).await).await;
    refused(app.delete_client(&uri(&c), &rat(&c)).await).await;
    // The recovered token is a full one.
    assert_eq!(
        status(app.put_client(&uri(&c), &rat(&recovered), &body).await).await,
        200
    );
}

#[tokio::test]
async fn the_first_use_of_the_new_token_ends_the_grace() {
    let app = spawn_app().await;
    let c = app.register(&web_client()).await;
    let new: Value = json_of(app.put_client(&uri(&c), &rat(&c), &put_body(&c)).await).await;
    assert_eq!(
        status(app.get_client(&uri(&c), &rat(&new)).await).await,
        200
    );
    refused(app.get_client(&uri(&c), &rat(&c)).await).await;
}

#[tokio::test]
async fn the_grace_ends_after_rat_grace_secs() {
    let clock = Arc::new(FixedClock::new(T0));
    let app = spawn_with_clock(clock.clone(), |s| {
        s.with("registration.rat_grace_secs", 100).unwrap()
    })
    .await;
    let c = app.register(&web_client()).await;
    app.put_client(&uri(&c), &rat(&c), &put_body(&c)).await;
    clock.advance(99);
    assert_eq!(status(app.get_client(&uri(&c), &rat(&c)).await).await, 200);
    clock.advance(1);
    refused(app.get_client(&uri(&c), &rat(&c)).await).await;
}

#[tokio::test]
async fn without_grace_the_old_token_dies_at_once() {
    let app = spawn_app_with(|s| s.with("registration.rat_grace_secs", 0).unwrap()).await;
    let c = app.register(&web_client()).await;
    let r = app.put_client(&uri(&c), &rat(&c), &put_body(&c)).await;
    assert_eq!(r.status(), 200);
    refused(app.get_client(&uri(&c), &rat(&c)).await).await;
}

#[tokio::test]
async fn rotation_on_read_keeps_a_grace_for_the_token_it_replaced() {
    let app = spawn_app_with(|s| s.with("registration.rotate_rat_on_read", true).unwrap()).await;
    let c = app.register(&web_client()).await;
    let first: Value = json_of(app.get_client(&uri(&c), &rat(&c)).await).await;
    assert_ne!(rat(&first), rat(&c));
    // The response was lost: the old token reads the registration with the token it rotated to.
    let recovered: Value = json_of(app.get_client(&uri(&c), &rat(&c)).await).await;
    assert_eq!(rat(&recovered), rat(&first));
    // Using it rotates again; the grace now belongs to `first`, and `c`'s token is dead.
    let second: Value = json_of(app.get_client(&uri(&c), &rat(&first)).await).await;
    assert_ne!(rat(&second), rat(&first));
    refused(app.get_client(&uri(&c), &rat(&c)).await).await;
    let via_first: Value = json_of(app.get_client(&uri(&c), &rat(&first)).await).await;
    assert_eq!(rat(&via_first), rat(&second));
}

#[tokio::test]
async fn the_grace_holds_across_a_restart() {
    let clock = Arc::new(FixedClock::new(T0));
    let app = spawn_with_clock(clock.clone(), |s| s).await;
    let c = app.register(&web_client()).await;
    let new: Value = json_of(app.put_client(&uri(&c), &rat(&c), &put_body(&c)).await).await;
    let dir = app.stop().await;
    clock.advance(30);
    let app = spawn_in_with_clock(dir, clock.clone(), |s| s).await;
    // The client URI names the old listener's port; the path is what matters.
    let path = uri(&c).split_once("/register").unwrap().1.to_owned();
    let here = format!("{}{path}", app.endpoint);
    let recovered: Value = json_of(app.get_client(&here, &rat(&c)).await).await;
    assert_eq!(rat(&recovered), rat(&new));
    refused(app.delete_client(&here, &rat(&c)).await).await;
    app.stop().await;
}

// --- secret renewal -------------------------------------------------------------------------

fn renewing(s: Settings) -> Settings {
    with_admin(s)
        .with("credentials.client_secret_lifetime_secs", 1000)
        .unwrap()
        .with("credentials.client_secret_expired_grace_secs", 50)
        .unwrap()
}

#[tokio::test]
async fn a_put_renews_the_secret_only_inside_the_windows() {
    let clock = Arc::new(FixedClock::new(T0));
    let app = spawn_with_clock(clock.clone(), renewing).await;
    let c = app.register(&web_client()).await;
    assert_eq!(c["client_secret_expires_at"], T0 + 1000);

    // Long before the expiry: no new secret.
    clock.advance(899);
    let u: Value = json_of(app.put_client(&uri(&c), &rat(&c), &put_body(&c)).await).await;
    assert!(u.get("client_secret").is_none(), "{u}");
    assert_eq!(u["client_secret_expires_at"], T0 + 1000);

    // Within the last tenth of the lifetime (the default renew_before): a new secret.
    clock.advance(1);
    let now = T0 + 900;
    let r: Value = json_of(app.put_client(&uri(&c), &rat(&u), &put_body(&u)).await).await;
    let renewed = r["client_secret"].as_str().expect("renewed secret");
    assert_ne!(renewed, c["client_secret"].as_str().unwrap());
    assert_eq!(r["client_secret_expires_at"], now + 1000);
    // The old secret stops at once (no overlap configured); the new one authenticates.
    let id = id_of(&c);
    assert_error(
        authenticate(&app, &id, c["client_secret"].as_str().unwrap()).await,
        401,
        "invalid_client",
    )
    .await;
    ok_json(authenticate(&app, &id, renewed).await, 200).await;

    // Expired less than client_secret_expired_grace_secs ago: renewed; it never authenticated
    // meanwhile.
    clock.advance(1000 + 49);
    assert_error(
        authenticate(&app, &id, renewed).await,
        401,
        "invalid_client",
    )
    .await;
    let late: Value = json_of(app.put_client(&uri(&c), &rat(&r), &put_body(&r)).await).await;
    let third = late["client_secret"]
        .as_str()
        .expect("renewed after expiry");
    ok_json(authenticate(&app, &id, third).await, 200).await;

    // Expired longer ago than the grace: no renewal.
    clock.advance(1000 + 50);
    let too_late: Value = json_of(
        app.put_client(&uri(&c), &rat(&late), &put_body(&late))
            .await,
    )
    .await;
    assert!(too_late.get("client_secret").is_none(), "{too_late}");
    assert_error(authenticate(&app, &id, third).await, 401, "invalid_client").await;
}

#[tokio::test]
async fn the_old_secret_overlaps_the_renewed_one_when_configured() {
    let clock = Arc::new(FixedClock::new(T0));
    let app = spawn_with_clock(clock.clone(), |s| {
        renewing(s)
            .with("credentials.client_secret_renew_before_secs", 500)
            .unwrap()
            .with("credentials.client_secret_renewal_overlap_secs", 30)
            .unwrap()
    })
    .await;
    let c = app.register(&web_client()).await;
    clock.advance(500);
    let r: Value = json_of(app.put_client(&uri(&c), &rat(&c), &put_body(&c)).await).await;
    assert!(r["client_secret"].is_string(), "{r}");
    let (id, old) = (id_of(&c), c["client_secret"].as_str().unwrap());
    clock.advance(29);
    ok_json(authenticate(&app, &id, old).await, 200).await;
    clock.advance(1);
    assert_error(authenticate(&app, &id, old).await, 401, "invalid_client").await;
}

// --- reaping --------------------------------------------------------------------------------

fn reaping(s: Settings) -> Settings {
    with_admin(s)
        .with("lifecycle.unused_client_ttl_secs", 100)
        .unwrap()
        .with("lifecycle.inactive_client_ttl_secs", 1000)
        .unwrap()
        .with("rate_limit.enabled", false)
        .unwrap()
}

#[tokio::test]
async fn the_sweeper_reaps_never_used_then_inactive_clients_and_spares_the_exempt() {
    let clock = Arc::new(FixedClock::new(T0));
    let app = spawn_with_clock(clock.clone(), |s| {
        reaping(s)
            .with("policies", json!({"kept": {"lifecycle_exempt": true}}))
            .unwrap()
    })
    .await;
    let sweeper = app.sweeper.clone().expect("sweeper runs when a TTL is set");
    let unused = app.register(&web_client()).await;
    let used = app.register(&web_client()).await;
    let r = call(
        &app,
        Method::POST,
        "/admin/clients",
        Some(WRITE),
        Some(web_client()),
    )
    .await;
    let by_operator = ok_json(r, 201).await;
    let r = call(
        &app,
        Method::POST,
        "/admin/clients",
        Some(WRITE),
        Some(json!({"policy": "kept", "redirect_uris": ["https://client.example.org/cb"]})),
    )
    .await;
    let exempt = ok_json(r, 201).await;
    assert_eq!(sweeper.sweep().await.unwrap().reaped, 0);

    clock.advance(50);
    // An RFC 7592 read is a use.
    assert_eq!(
        status(app.get_client(&uri(&used), &rat(&used)).await).await,
        200
    );
    clock.advance(50);
    let report = sweeper.sweep().await.unwrap();
    assert_eq!((report.examined, report.reaped), (4, 1));
    refused(app.get_client(&uri(&unused), &rat(&unused)).await).await;
    assert_eq!(
        status(app.get_client(&uri(&used), &rat(&used)).await).await,
        200
    );

    // Inactive: last used (at T0 + 50; the read above fell within last_used_resolution_secs)
    // 1000 s ago.
    clock.advance(949);
    assert_eq!(sweeper.sweep().await.unwrap().reaped, 0);
    clock.advance(1);
    assert_eq!(sweeper.sweep().await.unwrap().reaped, 1);
    refused(app.get_client(&uri(&used), &rat(&used)).await).await;
    assert_eq!(sweeper.reaped_total(), 2);

    // Operator-created clients and exempt policies live on.
    clock.advance(100_000);
    assert_eq!(sweeper.sweep().await.unwrap().reaped, 0);
    for c in [&by_operator, &exempt] {
        let r = call(
            &app,
            Method::GET,
            &format!("/admin/clients/{}", id_of(c)),
            Some(crate::admin::READ),
            None,
        )
        .await;
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test]
async fn an_authentication_keeps_a_client_from_being_reaped_as_unused() {
    let clock = Arc::new(FixedClock::new(T0));
    let app = spawn_with_clock(clock.clone(), reaping).await;
    let c = app.register(&web_client()).await;
    ok_json(
        authenticate(&app, &id_of(&c), c["client_secret"].as_str().unwrap()).await,
        200,
    )
    .await;
    clock.advance(500);
    assert_eq!(
        app.sweeper.as_ref().unwrap().sweep().await.unwrap().reaped,
        0
    );
    assert_eq!(status(app.get_client(&uri(&c), &rat(&c)).await).await, 200);
}

#[tokio::test]
async fn the_background_sweeper_runs_on_its_interval() {
    // Real time here: this checks that startup runs the task, not the decisions.
    let clock = Arc::new(FixedClock::new(T0));
    let app = spawn_with_clock(clock.clone(), |s| {
        reaping(s).with("lifecycle.sweep_interval_secs", 1).unwrap()
    })
    .await;
    let c = app.register(&web_client()).await;
    clock.advance(100);
    let sweeper = app.sweeper.clone().unwrap();
    for _ in 0..50 {
        if sweeper.reaped_total() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(sweeper.reaped_total(), 1);
    refused(app.get_client(&uri(&c), &rat(&c)).await).await;
    // The sweeper holds the store: let go of it, so that stopping releases the data directory.
    drop(sweeper);
    app.stop().await;
}

// --- storm control --------------------------------------------------------------------------

fn storm(max: u64) -> impl FnOnce(Settings) -> Settings {
    move |s| {
        s.with("rate_limit.enabled", false)
            .unwrap()
            .with("access.anonymous_policy", "mcp")
            .unwrap()
            .with(
                "policies",
                json!({"mcp": {"max_clients_per_software": max}}),
            )
            .unwrap()
    }
}

fn mcp_host(software_id: &str) -> Value {
    json!({
        "redirect_uris": ["http://127.0.0.1:33418/callback"],
        "client_name": "Some MCP host",
        "software_id": software_id,
        "token_endpoint_auth_method": "none",
        "application_type": "native",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_registrations_stays_bounded_and_spares_the_clients_in_use() {
    let app = spawn_app_with(storm(20)).await;
    let mut all = Vec::new();
    let mut in_use = Vec::new();
    // In waves of 10 at once, as hosts reconnecting through one egress address would.
    let body = mcp_host("storm-host");
    for wave in 0..100 {
        let waves = (0..10).map(|_| app.post(&body));
        let mut this_wave = Vec::new();
        for r in futures_util::future::join_all(waves).await {
            let status = r.status();
            let answer = r.json::<Value>().await.unwrap();
            assert_eq!(status, 201, "wave {wave}: {answer}");
            this_wave.push(answer);
        }
        if wave % 10 == 3 {
            // A client of this wave that is still there starts being used (its GET is the use;
            // the clock has one-second resolution, so the wave's own registrations may already
            // have evicted some of it).
            let mut used = None;
            for c in &this_wave {
                if status(app.get_client(&uri(c), &rat(c)).await).await == 200 {
                    used = Some(c.clone());
                    break;
                }
            }
            in_use.push(used.expect("some client of the wave survives it"));
        }
        all.extend(this_wave);
    }
    assert_eq!(all.len(), 1000);
    // Another software is not affected by this one's storm.
    let other = app.register(&mcp_host("other-host")).await;

    let mut alive = 0;
    for c in &all {
        if status(app.get_client(&uri(c), &rat(c)).await).await == 200 {
            alive += 1;
        }
    }
    assert!(
        alive <= 20 + in_use.len(),
        "{alive} clients of one software survive"
    );
    assert!(alive >= 20, "the newest clients survive: {alive}");
    for c in &in_use {
        assert_eq!(
            status(app.get_client(&uri(c), &rat(c)).await).await,
            200,
            "used clients survive"
        );
    }
    assert_eq!(
        status(app.get_client(&uri(&other), &rat(&other)).await).await,
        200
    );
}

#[tokio::test]
async fn a_software_whose_clients_are_all_in_use_is_refused_naming_the_policy() {
    let app = spawn_app_with(storm(2)).await;
    for _ in 0..2 {
        let c = app.register(&mcp_host("busy")).await;
        assert_eq!(status(app.get_client(&uri(&c), &rat(&c)).await).await, 200);
    }
    let d = assert_error(
        app.post(&mcp_host("busy")).await,
        400,
        "invalid_client_metadata",
    )
    .await;
    assert!(
        d.contains("policy 'mcp'") && d.contains("max_clients_per_software"),
        "{d}"
    );
    // Deleting one frees its place.
    let c = app.register(&mcp_host("busy-2")).await;
    assert_eq!(app.delete_client(&uri(&c), &rat(&c)).await.status(), 204);
    app.register(&mcp_host("busy-2")).await;
}

#[tokio::test]
async fn without_software_id_clients_are_counted_by_client_name() {
    let app = spawn_app_with(storm(1)).await;
    let mut body = mcp_host("x");
    body.as_object_mut().unwrap().remove("software_id");
    let first = app.register(&body).await;
    let second = app.register(&body).await;
    refused(app.get_client(&uri(&first), &rat(&first)).await).await;
    assert_eq!(
        status(app.get_client(&uri(&second), &rat(&second)).await).await,
        200
    );
    body["client_name"] = json!("Another name");
    let third = app.register(&body).await;
    assert_eq!(
        status(app.get_client(&uri(&second), &rat(&second)).await).await,
        200
    );
    assert_eq!(
        status(app.get_client(&uri(&third), &rat(&third)).await).await,
        200
    );
}

#[tokio::test]
async fn discovery_says_how_secrets_are_renewed_when_they_expire() {
    let doc = |app: &TestApp| {
        let url = format!("{}/.well-known/openid-configuration", app.address);
        let client = app.client.clone();
        async move {
            client
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let plain = spawn_app().await;
    assert!(doc(&plain)
        .await
        .get("registrar_client_secret_renewal")
        .is_none());
    let app = spawn_app_with(renewing).await;
    assert_eq!(
        doc(&app).await["registrar_client_secret_renewal"],
        json!({
            "method": "rfc7592_put",
            "client_secret_lifetime_secs": 1000,
            "renew_before_secs": 100,
            "expired_grace_secs": 50,
            "overlap_secs": 0,
        })
    );
}
