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
    // sled's files, on whichever backend the target runs the rest on.
    let app = spawn_on_sled_in(tempfile::tempdir().unwrap(), |s| {
        s.with("storage.data_dir", data.to_str().unwrap()).unwrap()
    })
    .await;
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
    let app = spawn_app_with(|s| s.with("metadata.max_client_bytes", 0).unwrap()).await;
    // A large record makes the decode that only the existing-client path used to do visible
    // above the noise of an HTTP round trip.
    let contacts: Vec<String> = (0..28)
        .map(|i| format!("{}{i}@example.org", "a".repeat(1900)))
        .collect();
    let mut body = web_client();
    body["contacts"] = json!(contacts);
    let c = app.register(&body).await;
    let existing = client_uri(&c);
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
    let uri = &client_uri(&c);
    let rat = &client_rat(&c);
    for typo in [format!("{uri}%20"), format!("{uri}x"), format!("{uri}%0a")] {
        assert_error(app.get_client(&typo, rat).await, 401, "invalid_token").await;
    }
    assert_eq!(app.get_client(uri, rat).await.status(), 200);
    // Presented for another existing client, it is still revoked (RFC 7592 §2.1).
    let other = app.register(&web_client()).await;
    let other_uri = &client_uri(&other);
    assert_error(app.get_client(other_uri, rat).await, 401, "invalid_token").await;
    assert_error(app.get_client(uri, rat).await, 401, "invalid_token").await;
}

// Test debt: every bad token gets the same 401, byte for byte.

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
    // Its first use ends the old token's GET-only grace (README "Client lifecycle").
    let used = app
        .get_client(&uri_a, &s(&a_now, "registration_access_token"))
        .await;
    assert_eq!(used.status(), 200);
    // deleted: d's token after d is gone
    let uri_d = s(&d, "registration_client_uri");
    assert_eq!(
        app.delete_client(&uri_d, &s(&d, "registration_access_token"))
            .await
            .status(),
        204
    );

    // No Authorization header at all: RFC 6750 §3.1's bare challenge, decided before any
    // lookup, so byte-identical for an existing and an unknown client.
    let missing = snapshot(app.client.get(&uri_a).send().await.unwrap()).await;
    let missing_unknown = app.client.get(format!("{}/nope", app.endpoint));
    assert_eq!(
        snapshot(missing_unknown.send().await.unwrap()).await,
        missing
    );
    assert_eq!(missing.0, 401);
    assert!(missing
        .1
        .contains(&("www-authenticate".into(), b"Bearer".to_vec())));
    let malformed = app
        .client
        .get(&uri_a)
        .header("Authorization", "Bearer a b")
        .send()
        .await
        .unwrap();
    let reference = snapshot(malformed).await;
    assert_eq!(reference.0, 401);
    let cases = [
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
    let uri = &client_uri(&c);
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
    let rat = &client_rat(&c);
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
    let (uri, rat) = (&client_uri(&a), &client_rat(&a));
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
    let (uri_b, rat_b) = (&client_uri(&b), &client_rat(&b));
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
    let uri = &client_uri(&c);
    let rat = &client_rat(&c);
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
        .put_client(&client_uri(&other), &client_rat(&other), &other_update)
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

// Item 7: the overflow bucket only takes sources the limiter does not track yet.

#[tokio::test]
async fn a_tracked_source_keeps_its_own_bucket_when_the_table_is_full() {
    let app = spawn_app_with(|s| {
        s.with("rate_limit.enabled", true)
            .unwrap()
            .with("rate_limit.burst", 2)
            .unwrap()
            .with("rate_limit.period_ms", 600_000)
            .unwrap()
            .with("rate_limit.max_tracked_sources", 2)
            .unwrap()
            .with("rate_limit.trusted_proxies", vec!["127.0.0.1"])
            .unwrap()
            .with("rate_limit.client_ip_header", "x-forwarded-for")
            .unwrap()
    })
    .await;
    let from = |ip: &str| {
        app.client
            .post(&app.endpoint)
            .header("X-Forwarded-For", ip)
            .json(&web_client())
            .send()
    };
    assert_eq!(from("198.51.100.1").await.unwrap().status(), 201);
    assert_eq!(from("198.51.100.2").await.unwrap().status(), 201);
    // The table is full: newcomers share the overflow bucket and drain it.
    assert_eq!(from("198.51.100.3").await.unwrap().status(), 201);
    assert_eq!(from("198.51.100.4").await.unwrap().status(), 201);
    assert_eq!(from("198.51.100.5").await.unwrap().status(), 429);
    // The first source still has its own second token.
    assert_eq!(from("198.51.100.1").await.unwrap().status(), 201);
    assert_eq!(from("198.51.100.1").await.unwrap().status(), 429);
}

// Item 3: open registration is bounded by default.

#[test]
fn the_shipped_defaults_bound_open_registration() {
    let s = registrar::settings::Settings::defaults().unwrap();
    assert!(s.rate_limit.enabled);
    assert!(s.rate_limit.burst > 0 && s.rate_limit.period_ms > 0);
    assert!(s.metadata.max_client_bytes > 0);
    assert!(s.access.max_anonymous_clients > 0);
}

#[tokio::test]
async fn with_the_shipped_limits_one_source_cannot_stream_registrations() {
    // The test helpers switch the limit off; this test runs the shipped numbers.
    let shipped = registrar::settings::Settings::defaults()
        .unwrap()
        .rate_limit;
    let app = spawn_app_with(|s| s.with("rate_limit.enabled", true).unwrap()).await;
    let body = json!({"redirect_uris": ["https://client.example.org/cb"], "token_endpoint_auth_method": "none"});
    let attempts = shipped.burst as usize + 20;
    let results = futures_util::future::join_all((0..attempts).map(|_| app.post(&body))).await;
    let created = results.iter().filter(|r| r.status() == 201).count();
    let limited = results.iter().filter(|r| r.status() == 429).count();
    assert_eq!(created + limited, attempts);
    // The burst, plus at most the few refills that fall within the run.
    assert!(created >= shipped.burst as usize, "{created}");
    assert!(
        created < attempts,
        "nothing was limited: {created} of {attempts} created"
    );
}

#[tokio::test]
async fn the_stored_size_of_one_client_is_bounded() {
    let app = spawn_app_with(|s| s.with("metadata.max_client_bytes", 4096).unwrap()).await;
    let mut body = web_client();
    body["contacts"] = json!((0..4)
        .map(|i| format!("{}{i}@example.org", "a".repeat(1000)))
        .collect::<Vec<_>>());
    let d = assert_error(app.post(&body).await, 400, "invalid_client_metadata").await;
    assert!(d.contains("metadata.max_client_bytes"), "{d}");
    // The same bound holds on update.
    let c = app.register(&web_client()).await;
    body["client_id"] = c["client_id"].clone();
    let r = app
        .put_client(&client_uri(&c), &client_rat(&c), &body)
        .await;
    assert_error(r, 400, "invalid_client_metadata").await;
}

#[tokio::test]
async fn anonymous_clients_have_a_global_ceiling_freed_by_deletion() {
    let app = spawn_app_with(|s| s.with("access.max_anonymous_clients", 2).unwrap()).await;
    let a = app.register(&web_client()).await;
    app.register(&web_client()).await;
    let r = app.post(&web_client()).await;
    assert_eq!(r.status(), 503);
    let d = assert_error(r, 503, "temporarily_unavailable").await;
    assert!(d.contains("without an initial access token"), "{d}");
    // On PostgreSQL the refusal was decided by redoing its group commit with savepoints
    // (the bulk found the counter full); sled has no bulk.
    let redos = || async {
        let m = app.scrape.render().await;
        m.lines()
            .find_map(|l| l.strip_prefix("registrar_db_group_redos_total "))
            .unwrap_or_else(|| panic!("registrar_db_group_redos_total in:\n{m}"))
            .parse::<f64>()
            .unwrap()
    };
    assert_eq!(redos().await, if crate::POSTGRES { 1.0 } else { 0.0 });
    let r = app.delete_client(&client_uri(&a), &client_rat(&a)).await;
    assert_eq!(r.status(), 204);
    app.register(&web_client()).await;
}

// Item 4: URIs the AS or a browser dereferences may not name reserved IP literals.

#[tokio::test]
async fn dereferenced_uris_refuse_reserved_ip_literals_unless_private_addresses_are_allowed() {
    let app = spawn_app().await;
    let cases = [
        (
            "backchannel_logout_uri",
            json!("https://169.254.169.254/latest/meta-data/"),
        ),
        ("request_uris", json!(["https://127.0.0.1:9200/r"])),
        ("frontchannel_logout_uri", json!("https://10.0.0.1/logout")),
        ("logo_uri", json!("http://[::1]:6379/")),
        ("client_uri", json!("http://192.168.1.1/")),
        ("policy_uri", json!("https://[::ffff:127.0.0.1]/p")),
        ("tos_uri", json!("https://0x7f000001/tos")),
        ("initiate_login_uri", json!("https://100.64.0.1/login")),
    ];
    for (field, value) in &cases {
        let mut body = web_client();
        body[*field] = value.clone();
        let d = assert_error(app.post(&body).await, 400, "invalid_client_metadata").await;
        assert!(
            d.contains(field) && d.contains("reserved address"),
            "{field}: {d}"
        );
    }
    // A public address is fine, and loopback redirect URIs (RFC 8252) are not affected.
    let mut body = web_client();
    body["logo_uri"] = json!("https://93.184.216.34/logo.png");
    app.register(&body).await;
    app.register(&json!({
        "redirect_uris": ["http://127.0.0.1:5000/cb"],
        "application_type": "native",
        "token_endpoint_auth_method": "none",
    }))
    .await;
    let open = spawn_app_with(|s| s.with("fetch.allow_private_addresses", true).unwrap()).await;
    for (field, value) in &cases {
        let mut body = web_client();
        body[*field] = value.clone();
        open.register(&body).await;
    }
}

#[tokio::test]
async fn logout_and_ciba_notification_endpoints_must_be_https() {
    let app = spawn_app().await;
    for (field, extra) in [
        ("backchannel_logout_uri", json!({})),
        (
            "backchannel_client_notification_endpoint",
            json!({"grant_types": ["urn:openid:params:grant-type:ciba"], "backchannel_token_delivery_mode": "ping"}),
        ),
    ] {
        let mut body = web_client();
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body[field] = json!("http://rp.example.org/endpoint");
        let d = assert_error(app.post(&body).await, 400, "invalid_client_metadata").await;
        assert!(d.contains(field) && d.contains("https"), "{field}: {d}");
    }
}

// Item 8: Unicode spoofing.

#[tokio::test]
async fn client_name_refuses_invisible_characters_and_blank_names() {
    let app = spawn_app().await;
    for name in [
        "Photos\u{202E}gpj.exe",
        "Good\u{2067}App\u{2069}",
        "zero\u{200B}width",
        "\u{FEFF}BOM",
        "tag\u{E0041}s",
        "line\u{2028}break",
        "para\u{2029}graph",
        "   ",
        "\u{3000}\u{00A0}",
    ] {
        let mut body = web_client();
        body["client_name"] = json!(name);
        let d = assert_error(app.post(&body).await, 400, "invalid_client_metadata").await;
        assert!(d.contains("client_name"), "{name:?}: {d}");
        let mut body = web_client();
        body["client_name#fr"] = json!(name);
        assert_error(app.post(&body).await, 400, "invalid_client_metadata").await;
    }
    let mut body = web_client();
    body["client_name"] = json!("Приложение 写真 café");
    app.register(&body).await;
}

#[tokio::test]
async fn uris_are_ascii_and_internationalized_hosts_are_refused_by_default() {
    let app = spawn_app().await;
    for (uri, hint) in [
        (
            "https://accounts.google.com\u{2044}.evil.com/cb",
            "accounts.google.xn--com-qt0a.evil.com",
        ),
        ("https://\u{0430}pple.com/cb", "xn--pple-43d.com"),
        ("https://client.example.org/caf\u{e9}", "caf%C3%A9"),
    ] {
        let d = assert_error(
            app.post(&json!({"redirect_uris": [uri]})).await,
            400,
            "invalid_redirect_uri",
        )
        .await;
        assert!(d.contains("non-ASCII") && d.contains(hint), "{uri}: {d}");
        let mut body = web_client();
        body["client_uri"] = json!(uri);
        assert_error(app.post(&body).await, 400, "invalid_client_metadata").await;
    }
    // The punycode form is refused too unless IDN hosts are allowed...
    for uri in [
        "https://accounts.google.xn--com-qt0a.evil.com/cb",
        "https://xn--mnchen-3ya.de/cb",
    ] {
        let d = assert_error(
            app.post(&json!({"redirect_uris": [uri]})).await,
            400,
            "invalid_redirect_uri",
        )
        .await;
        assert!(d.contains("allow_idn_hosts"), "{d}");
    }
    // ...and then only single-script labels without delimiter look-alikes get through.
    let idn = spawn_app_with(|s| s.with("metadata.allow_idn_hosts", true).unwrap()).await;
    for (uri, why) in [
        (
            "https://accounts.google.xn--com-qt0a.evil.com/cb",
            "delimiter",
        ),
        ("https://xn--pple-43d.com/cb", "mixes scripts"),
    ] {
        let d = assert_error(
            idn.post(&json!({"redirect_uris": [uri]})).await,
            400,
            "invalid_redirect_uri",
        )
        .await;
        assert!(d.contains(why), "{uri}: {d}");
    }
    let c = idn
        .register(&json!({"redirect_uris": ["https://xn--mnchen-3ya.de/cb"]}))
        .await;
    assert_eq!(c["redirect_uris"][0], "https://xn--mnchen-3ya.de/cb");
}

// Item 13: localized variants are capped per field.

#[tokio::test]
async fn localized_variants_are_capped_per_field() {
    let app = spawn_app_with(|s| {
        s.with("server.body_limit_bytes", 1 << 20)
            .unwrap()
            .with("metadata.max_client_bytes", 0)
            .unwrap()
    })
    .await;
    let tags: Vec<String> = (0..2400).map(|i| format!("x-v{i}")).collect();
    let mut body = web_client();
    for t in &tags {
        body[format!("client_name#{t}")] = json!("n");
    }
    let start = std::time::Instant::now();
    let d = assert_error(app.post(&body).await, 400, "invalid_client_metadata").await;
    assert!(d.contains("more than 100 localized variants"), "{d}");
    eprintln!("2400 variants refused in {:?}", start.elapsed());
    let mut body = web_client();
    for t in tags.iter().take(100) {
        body[format!("client_name#{t}")] = json!("n");
    }
    app.register(&body).await;
}

// Item 5: request data never forges a log line.

/// Run the real binary with `config` (TOML) at log level info, call `drive` with its
/// `host:port`, stop it and return its log lines.
fn log_of_a_server_run(config: &str, drive: impl FnOnce(&str)) -> Vec<String> {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_registrar"))
        .args(["--config", path.to_str().unwrap()])
        .env("REGISTRAR_SERVER__PORT", "0")
        .env("REGISTRAR_ISSUER", "")
        .env("REGISTRAR_STORAGE__DATA_DIR", dir.path().join("data"))
        .env("REGISTRAR_SERVER__LOG", "info")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut endpoint = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some((_, e)) = line.split_once("registration endpoint: ") {
            endpoint = Some(e.trim().to_owned());
            break;
        }
    }
    let endpoint = endpoint.expect("the server announces its endpoint");
    let authority = endpoint
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    drive(&authority);
    // Lines are logged before the response is sent; stop the server and read the rest.
    child.kill().unwrap();
    child.wait().unwrap();
    lines.map_while(Result::ok).collect()
}

/// Send raw bytes as one HTTP/1.1 exchange and return the response.
fn exchange(authority: &str, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn a_jwt_header_with_a_newline_cannot_forge_a_log_line() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    let config = format!(
        "[access]\nmode = \"token\"\n[[access.token_issuers]]\nissuer = \"https://iss.example\"\njwks = {{ keys = [{{ kty = \"OKP\", crv = \"Ed25519\", x = \"{x}\" }}] }}\n"
    );
    let log = log_of_a_server_run(&config, |authority| {
        let forged = "EdDSA\n2026-12-01T09:00:00.000000Z  INFO client registered client_id=forged";
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": forged}).to_string());
        let payload = URL_SAFE_NO_PAD
            .encode(json!({"iss": "https://iss.example", "exp": 4_000_000_000u64}).to_string());
        let token = format!("{header}.{payload}.c2ln");
        let body = web_client().to_string();
        let response = exchange(
            authority,
            format!(
                "POST /register HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    });
    assert!(
        log.iter()
            .any(|l| l.contains("initial access token refused")),
        "{log:#?}"
    );
    // The attacker's text may appear (escaped) inside the refusal's own line, never as a line.
    assert!(
        !log.iter().any(|l| l.contains("client registered")
            && !l.contains("initial access token refused")),
        "a forged line reached the log: {log:#?}"
    );
}

#[test]
fn the_access_log_keeps_every_request_on_one_line() {
    let log = log_of_a_server_run("", |authority| {
        // A raw U+2028 (LINE SEPARATOR, which log viewers may break on) never reaches a
        // handler: the HTTP parser refuses non-ASCII request targets.
        let mut request = b"GET /nothing-here/a".to_vec();
        request.extend_from_slice("\u{2028}".as_bytes());
        request.extend_from_slice(
            format!("b HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let response = exchange(authority, &request);
        assert!(response.starts_with("HTTP/1.1 400"), "{response}");
        // An encoded line break stays encoded in the access log.
        let response = exchange(
            authority,
            format!("GET /nothing-here/a%0D%0AINFO%20forged HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    });
    let line = log
        .iter()
        .find(|l| l.contains("/nothing-here/a%0D%0AINFO%20forged"))
        .unwrap_or_else(|| panic!("no access log line: {log:#?}"));
    assert!(line.contains("404"), "{line}");
    assert!(
        !log.iter()
            .any(|l| l.contains('\u{2028}') || l.starts_with("INFO forged")),
        "{log:#?}"
    );
}
