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
