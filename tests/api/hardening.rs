//! Regression tests for the attack review of issue #12: one block per finding.

use crate::helpers::*;
#[allow(unused_imports)]
use serde_json::{json, Value};

// Item 14: the data directory is private to the server's user.

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_is_0700_and_its_files_0600() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let app = spawn_app_with(|s| s.with("storage.data_dir", data.to_str().unwrap()).unwrap()).await;
    app.register(&web_client()).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "{}", data.display());
    let mut files = 0;
    let mut stack = vec![data.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                stack.push(path);
            } else {
                files += 1;
                assert_eq!(mode(&path), 0o600, "{}", path.display());
            }
        }
    }
    assert!(
        files >= 2,
        "expected sled's files and server.key, found {files}"
    );
}

// Item 10: a wrong token costs the same whether the client exists or not.

/// Median of `samples` in microseconds.
fn median(samples: &mut [u128]) -> u128 {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

#[tokio::test]
async fn a_wrong_token_takes_as_long_for_an_existing_client_as_for_a_missing_one() {
    let app = spawn_app().await;
    // A large record makes the decode that only the existing-client path used to do visible
    // above the noise of an HTTP round trip.
    let contacts: Vec<String> = (0..28)
        .map(|i| format!("{}{i}@example.org", "a".repeat(1900)))
        .collect();
    let mut body = web_client();
    body["contacts"] = json!(contacts);
    let c = app.register(&body).await;
    let existing = c["registration_client_uri"].as_str().unwrap().to_owned();
    let missing = format!("{}/{}", app.endpoint, "A".repeat(22));
    let wrong = "wrong-token-wrong-token-wrong-token-xx";
    let (mut hit, mut miss) = (Vec::new(), Vec::new());
    for i in 0..600 {
        // Interleaved, so load changes on the machine hit both series alike.
        for (uri, out) in [(&existing, &mut hit), (&missing, &mut miss)] {
            let start = std::time::Instant::now();
            let r = app.get_client(uri, wrong).await;
            let elapsed = start.elapsed().as_micros();
            assert_eq!(r.status(), 401);
            if i >= 50 {
                out.push(elapsed); // the first requests warm caches and connections
            }
        }
    }
    let (hit, miss) = (median(&mut hit), median(&mut miss));
    eprintln!("wrong-token GET median: existing client {hit} µs, missing client {miss} µs");
    // Loose on purpose: the bound is the noise of a shared CI machine, not the 8 µs the review
    // measured; before the fix the large record's decode made the gap far wider.
    let allowed = (miss / 5).max(150);
    assert!(
        hit <= miss + allowed,
        "existing {hit} µs vs missing {miss} µs (allowed gap {allowed} µs)"
    );
}

// Item 12: a token presented at a mistyped path is not revoked.

#[tokio::test]
async fn a_token_presented_at_a_mistyped_client_path_keeps_working() {
    let app = spawn_app().await;
    let c = app.register(&web_client()).await;
    let uri = c["registration_client_uri"].as_str().unwrap();
    let rat = c["registration_access_token"].as_str().unwrap();
    for typo in [format!("{uri}%20"), format!("{uri}x"), format!("{uri}%0a")] {
        assert_error(app.get_client(&typo, rat).await, 401, "invalid_token").await;
    }
    assert_eq!(app.get_client(uri, rat).await.status(), 200);
    // Presented for another existing client, it is still revoked (RFC 7592 §2.1).
    let other = app.register(&web_client()).await;
    let other_uri = other["registration_client_uri"].as_str().unwrap();
    assert_error(app.get_client(other_uri, rat).await, 401, "invalid_token").await;
    assert_error(app.get_client(uri, rat).await, 401, "invalid_token").await;
}

// Test debt: every bad token gets the same 401, byte for byte.

/// Status, every header but `date`, and the body bytes of a response.
async fn snapshot(r: reqwest::Response) -> (u16, Vec<(String, Vec<u8>)>, Vec<u8>) {
    let status = r.status().as_u16();
    let mut headers: Vec<(String, Vec<u8>)> = r
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str() != "date")
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    headers.sort();
    (status, headers, r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn every_bad_token_gets_a_byte_identical_401() {
    let app = spawn_app().await;
    let a = app.register(&web_client()).await;
    let b = app.register(&web_client()).await;
    let d = app.register(&web_client()).await;
    let s = |v: &Value, k: &str| v[k].as_str().unwrap().to_owned();
    let uri_a = s(&a, "registration_client_uri");
    // rotated: a's token before an update
    let mut update = a.clone();
    update
        .as_object_mut()
        .unwrap()
        .remove("registration_access_token");
    update.as_object_mut().unwrap().remove("client_secret");
    let r = app
        .put_client(&uri_a, &s(&a, "registration_access_token"), &update)
        .await;
    assert_eq!(r.status(), 200);
    let a_now: Value = r.json().await.unwrap();
    // deleted: d's token after d is gone
    let uri_d = s(&d, "registration_client_uri");
    assert_eq!(
        app.delete_client(&uri_d, &s(&d, "registration_access_token"))
            .await
            .status(),
        204
    );

    let missing = app.client.get(&uri_a).send().await.unwrap();
    let reference = snapshot(missing).await;
    assert_eq!(reference.0, 401);
    let cases = [
        (
            "malformed",
            app.client
                .get(&uri_a)
                .header("Authorization", "Bearer a b")
                .send()
                .await
                .unwrap(),
        ),
        (
            "wrong",
            app.get_client(&uri_a, "not-a-token-of-anyone").await,
        ),
        (
            "rotated",
            app.get_client(&uri_a, &s(&a, "registration_access_token"))
                .await,
        ),
        (
            "deleted client",
            app.get_client(&uri_d, &s(&d, "registration_access_token"))
                .await,
        ),
        (
            "unknown client",
            app.get_client(&format!("{}/nope", app.endpoint), "x").await,
        ),
        (
            "other client",
            app.get_client(&uri_a, &s(&b, "registration_access_token"))
                .await,
        ),
    ];
    for (name, r) in cases {
        assert_eq!(snapshot(r).await, reference, "{name}");
    }
    // a's current token still works (only b's was revoked).
    assert_eq!(
        app.get_client(&uri_a, &s(&a_now, "registration_access_token"))
            .await
            .status(),
        200
    );
}

// Item 1: management calls have a cost bound.

fn management_limited(s: registrar::settings::Settings) -> registrar::settings::Settings {
    s.with("rate_limit.enabled", true)
        .unwrap()
        .with("rate_limit.burst", 100)
        .unwrap()
        .with("rate_limit.management_burst", 3)
        .unwrap()
        .with("rate_limit.management_period_ms", 60_000)
        .unwrap()
}

#[tokio::test]
async fn put_and_delete_are_rate_limited_per_source_before_the_token_is_checked() {
    let app = spawn_app_with(management_limited).await;
    let c = app.register(&web_client()).await;
    let uri = c["registration_client_uri"].as_str().unwrap();
    for _ in 0..2 {
        let r = app.put_client(uri, "wrong", &web_client()).await;
        assert_error(r, 401, "invalid_token").await;
    }
    assert_error(app.delete_client(uri, "wrong").await, 401, "invalid_token").await;
    for r in [
        app.put_client(uri, "wrong", &web_client()).await,
        app.delete_client(uri, "wrong").await,
    ] {
        assert!(r.headers().get("retry-after").is_some());
        let d = assert_error(r, 429, "too_many_requests").await;
        assert!(d.contains("retry after"), "{d}");
    }
    // Registration and reads have their own budgets.
    app.register(&web_client()).await;
    let rat = c["registration_access_token"].as_str().unwrap();
    assert_eq!(app.get_client(uri, rat).await.status(), 200);
}

#[tokio::test]
async fn put_and_delete_are_rate_limited_per_client_once_authenticated() {
    let app = spawn_app_with(|s| {
        management_limited(s)
            .with("rate_limit.management_burst", 100)
            .unwrap()
            .with("rate_limit.client_burst", 2)
            .unwrap()
            .with("rate_limit.client_period_ms", 60_000)
            .unwrap()
            .with("registration.rotate_rat_on_update", false)
            .unwrap()
    })
    .await;
    let a = app.register(&web_client()).await;
    let b = app.register(&web_client()).await;
    let (uri, rat) = (
        a["registration_client_uri"].as_str().unwrap(),
        a["registration_access_token"].as_str().unwrap(),
    );
    let mut update = web_client();
    update["client_id"] = a["client_id"].clone();
    for _ in 0..2 {
        assert_eq!(app.put_client(uri, rat, &update).await.status(), 200);
    }
    assert_error(
        app.put_client(uri, rat, &update).await,
        429,
        "too_many_requests",
    )
    .await;
    assert_error(app.delete_client(uri, rat).await, 429, "too_many_requests").await;
    // Wrong tokens for a's URI do not count against a: they never got past authentication.
    // Another client has its own bucket.
    let (uri_b, rat_b) = (
        b["registration_client_uri"].as_str().unwrap(),
        b["registration_access_token"].as_str().unwrap(),
    );
    assert_eq!(app.delete_client(uri_b, rat_b).await.status(), 204);
}

#[tokio::test]
async fn wrong_client_secrets_on_put_back_off_per_client_on_the_injected_clock() {
    let clock = std::sync::Arc::new(registrar::clock::FixedClock::new(1_700_000_000));
    let app = spawn_with_clock(clock.clone(), |s| {
        s.with("rate_limit.secret_failures_before_backoff", 2)
            .unwrap()
            .with("registration.rotate_rat_on_update", false)
            .unwrap()
    })
    .await;
    let c = app.register(&web_client()).await;
    let uri = c["registration_client_uri"].as_str().unwrap();
    let rat = c["registration_access_token"].as_str().unwrap();
    let mut update = web_client();
    update["client_id"] = c["client_id"].clone();
    update["client_secret"] = json!("wrong-secret");
    // Two free failures, then the third blocks for 1 s.
    for _ in 0..3 {
        let d = assert_error(
            app.put_client(uri, rat, &update).await,
            400,
            "invalid_request",
        )
        .await;
        assert!(d.contains("client_secret"), "{d}");
    }
    // Blocked: refused before any hashing, even with the right secret.
    let mut right = update.clone();
    right["client_secret"] = c["client_secret"].clone();
    let r = app.put_client(uri, rat, &right).await;
    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    assert_error(r, 429, "too_many_requests").await;
    // Another client is not affected.
    let other = app.register(&web_client()).await;
    let mut other_update = web_client();
    other_update["client_id"] = other["client_id"].clone();
    other_update["client_secret"] = other["client_secret"].clone();
    let r = app
        .put_client(
            other["registration_client_uri"].as_str().unwrap(),
            other["registration_access_token"].as_str().unwrap(),
            &other_update,
        )
        .await;
    assert_eq!(r.status(), 200);
    // One failure later the block doubles.
    clock.advance(1);
    assert_error(
        app.put_client(uri, rat, &update).await,
        400,
        "invalid_request",
    )
    .await;
    let r = app.put_client(uri, rat, &right).await;
    assert_eq!(r.headers().get("retry-after").unwrap(), "2");
    clock.advance(2);
    assert_eq!(app.put_client(uri, rat, &right).await.status(), 200);
}
