//! Operability: metrics after a known workload, request ids, native TLS with certificate reload,
//! and the `check-config` / `--version` commands of the binary.

use crate::helpers::*;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::Method;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The value of the one sample of `metrics` that starts with `series` (name and labels).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// GET /metrics on the admin listener.
async fn scrape(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    crate::admin::call(app, Method::GET, "/metrics", token, None).await
}

#[tokio::test]
async fn metrics_count_a_known_workload() {
    let app = crate::admin::admin_app().await;
    let a = app.register(&web_client()).await;
    app.register(&web_client()).await;
    let bad = json!({"redirect_uris": ["https://client.example.org/cb#fragment"]});
    assert_error(app.post(&bad).await, 400, "invalid_redirect_uri").await;
    let uri = a["registration_client_uri"].as_str().unwrap();
    let rat = a["registration_access_token"].as_str().unwrap();
    assert_eq!(app.get_client(uri, rat).await.status(), 200);
    assert_eq!(app.get_client(uri, "wrong-token").await.status(), 401);
    let other = format!("{}/nope", app.address);
    assert_eq!(app.client.get(other).send().await.unwrap().status(), 404);
    // The authorization server checks a client secret twice: once right, once wrong.
    let id = a["client_id"].as_str().unwrap();
    let path = format!("/admin/clients/{id}/authenticate");
    for (secret, status) in [
        (a["client_secret"].as_str().unwrap(), 200),
        ("not-the-secret", 401),
    ] {
        let body = json!({"client_secret": secret});
        let r = crate::admin::call(
            &app,
            Method::POST,
            &path,
            Some(crate::admin::AUTHN),
            Some(body),
        );
        assert_eq!(r.await.status(), status);
    }

    // No token needed by default (admin.metrics_require_token = false).
    let r = scrape(&app, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()[CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let m = r.text().await.unwrap();
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&m, series), Some(value), "{series} in:\n{m}");
    };
    expect(
        r#"registrar_registrations_total{outcome="created",tier="anonymous"}"#,
        2.0,
    );
    expect(
        r#"registrar_registrations_total{outcome="invalid_redirect_uri",tier="anonymous"}"#,
        1.0,
    );
    expect(r#"registrar_authentications_total{outcome="success"}"#, 1.0);
    expect(
        r#"registrar_authentications_total{outcome="invalid_client"}"#,
        1.0,
    );
    expect("registrar_clients", 2.0);
    expect("registrar_hash_queue_depth", 0.0);
    // Route patterns, never the client_id of the path; each listener under its own label.
    expect(
        r#"registrar_http_requests_total{listener="public",method="POST",route="/register",status="201"}"#,
        2.0,
    );
    expect(
        r#"registrar_http_requests_total{listener="public",method="GET",route="/register/{client_id}",status="200"}"#,
        1.0,
    );
    expect(
        r#"registrar_http_requests_total{listener="public",method="GET",route="/register/{client_id}",status="401"}"#,
        1.0,
    );
    expect(
        r#"registrar_http_requests_total{listener="public",method="GET",route="unmatched",status="404"}"#,
        1.0,
    );
    expect(
        r#"registrar_http_requests_total{listener="admin",method="POST",route="/admin/clients/{client_id}/authenticate",status="401"}"#,
        1.0,
    );
    assert!(!m.contains(id), "{m}");
    expect(
        r#"registrar_http_request_duration_seconds_count{listener="public",method="POST",route="/register"}"#,
        3.0,
    );
    // Two registrations and one last_used_at write of the successful authentication, each
    // durable, whatever the group commit batched.
    expect("registrar_store_write_duration_seconds_count", 3.0);
    // Both stores group-commit (sled: one flush; PostgreSQL: one transaction) and report each
    // group's size: the three writes, whatever groups they shared.
    expect("registrar_store_commit_batch_size_sum", 3.0);
    // The sled store's record cache: the token reads looked up their index entries and the
    // record (none cached yet after the registrations); PostgreSQL has no such cache.
    let lookups = |tree: &str, outcome: &str| {
        let series = format!(
            r#"registrar_store_record_cache_lookups_total{{outcome="{outcome}",tree="{tree}"}}"#
        );
        sample(&m, &series).unwrap_or_else(|| panic!("{series} in:\n{m}"))
    };
    if crate::POSTGRES {
        let all = ["clients", "rat"]
            .iter()
            .flat_map(|t| [lookups(t, "hit"), lookups(t, "miss")])
            .sum::<f64>();
        assert_eq!(all, 0.0, "{m}");
    } else {
        assert!(lookups("rat", "miss") >= 1.0, "{m}");
        assert!(lookups("clients", "miss") >= 1.0, "{m}");
    }
    #[cfg(target_os = "linux")]
    assert!(sample(&m, "process_resident_memory_bytes").is_some(), "{m}");
}

#[tokio::test]
async fn metrics_can_demand_a_token_with_the_metrics_scope() {
    let app = spawn_app_with(|s| {
        crate::admin::with_admin(s)
            .with("admin.metrics_require_token", true)
            .unwrap()
            .with(
                "admin.tokens",
                json!([
                    {"name": "prometheus", "token": "metrics-scrape-token-01", "scopes": ["metrics"]},
                    {"name": "reader", "token": crate::admin::READ, "scopes": ["clients:read"]},
                ]),
            )
            .unwrap()
    })
    .await;
    let r = scrape(&app, None).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()[WWW_AUTHENTICATE],
        "Bearer realm=\"registrar-admin\""
    );
    assert_eq!(scrape(&app, Some(crate::admin::READ)).await.status(), 403);
    let r = scrape(&app, Some("metrics-scrape-token-01")).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("registrar_clients 0"));
}

#[tokio::test]
async fn the_admin_listener_serves_the_checked_in_openapi_document() {
    let app = crate::admin::admin_app().await;
    let r = crate::admin::call(&app, Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    let served = r.text().await.unwrap();
    let file = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json"),
    )
    .unwrap();
    assert!(
        served == file,
        "the served document differs from openapi.json"
    );
    // Never on the public listener (Hydra's split).
    let public = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await;
    assert_eq!(public.unwrap().status(), 404);
}

#[tokio::test]
async fn a_refused_rate_limited_registration_is_counted_without_a_tier() {
    let app = spawn_app_with(|s| {
        s.with("rate_limit.enabled", true)
            .unwrap()
            .with("rate_limit.burst", 1)
            .unwrap()
            .with("rate_limit.period_ms", 3_600_000)
            .unwrap()
    })
    .await;
    app.register(&web_client()).await;
    assert_eq!(app.post(&web_client()).await.status(), 429);
    let m = app.scrape.render().await;
    assert_eq!(
        sample(
            &m,
            r#"registrar_registrations_total{outcome="too_many_requests",tier="none"}"#
        ),
        Some(1.0),
        "{m}"
    );
}

fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_an_untrusted_one_is_replaced() {
    let app = spawn_app().await;
    let first = app.post(&web_client()).await;
    let second = app.healthz().await;
    let (a, b) = (request_id(&first), request_id(&second));
    assert_eq!(a.len(), 32);
    assert!(a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
    assert_ne!(a, b);
    // No trusted proxies configured: the client's own id is not taken.
    let r = app
        .client
        .get(format!("{}/register/x", app.address))
        .header("x-request-id", "chosen-by-client")
        .send()
        .await
        .unwrap();
    assert_ne!(request_id(&r), "chosen-by-client");
}

#[tokio::test]
async fn a_trusted_proxy_s_request_id_is_kept_on_success_and_on_errors() {
    let app =
        spawn_app_with(|s| s.with("rate_limit.trusted_proxies", ["127.0.0.1"]).unwrap()).await;
    let r = app
        .client
        .post(&app.endpoint)
        .header("x-request-id", "edge-1")
        .json(&web_client())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(request_id(&r), "edge-1");
    let r = app
        .client
        .get(format!("{}/x", app.endpoint))
        .header("x-request-id", "edge-2")
        .header(AUTHORIZATION, "Bearer nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(request_id(&r), "edge-2");
}

/// A CA and a server certificate for 127.0.0.1 it signed, as PEM files in `dir`.
struct Pki {
    ca_pem: String,
    cert_file: String,
    key_file: String,
}

fn issue(dir: &std::path::Path, name: &str) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("registrar test CA {name}"),
    );
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let cert_file = dir.join(format!("{name}.crt"));
    let key_file = dir.join(format!("{name}.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_file: cert_file.to_str().unwrap().to_owned(),
        key_file: key_file.to_str().unwrap().to_owned(),
    }
}

async fn tls_app(pki: &Pki) -> TestApp {
    let (cert, key) = (pki.cert_file.clone(), pki.key_file.clone());
    spawn_app_with(move |s| {
        s.with(
            "server.tls",
            json!({"cert_file": cert, "key_file": key, "client_ca_file": ""}),
        )
        .unwrap()
    })
    .await
}

fn https_client(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn native_tls_serves_https_and_the_issued_uris_say_https() {
    let dir = tempfile::tempdir().unwrap();
    let pki = issue(dir.path(), "a");
    let app = tls_app(&pki).await;
    assert!(
        app.endpoint.starts_with("https://127.0.0.1:"),
        "{}",
        app.endpoint
    );
    let client = https_client(&pki.ca_pem);
    let r = client
        .post(&app.endpoint)
        .json(&web_client())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    let uri = body["registration_client_uri"].as_str().unwrap();
    assert!(uri.starts_with("https://"), "{uri}");
    let discovery: Value = client
        .get(
            app.endpoint
                .replace("/register", "/.well-known/oauth-authorization-server"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(discovery["issuer"]
        .as_str()
        .unwrap()
        .starts_with("https://"));
    // Plain HTTP on the TLS port gets no answer.
    let plain = app.endpoint.replace("https://", "http://");
    assert!(app
        .client
        .post(plain)
        .json(&web_client())
        .send()
        .await
        .is_err());
}

/// An HTTP/1.1 keep-alive connection over rustls that trusts `ca_pem`.
async fn connect(
    port: u16,
    ca_pem: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(ca_pem.as_bytes()).unwrap();
    roots.add(CertificateDer::clone(&der)).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    connector.connect(name, tcp).await.unwrap()
}

/// GET /healthz on an open connection; the status line of the answer.
async fn healthz_on(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The body is {"status":"ok"}: read until it has arrived.
    while !answer.ends_with(b"}") {
        let n = tls.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed");
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    // Handle SIGHUP in this process before sending one, so that it can never terminate the
    // test binary even if the server's handler were not yet installed.
    let mut own = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let old = issue(dir.path(), "old");
    let app = tls_app(&old).await;
    let port: u16 = app
        .endpoint
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut kept = connect(port, &old.ca_pem).await;
    assert_eq!(healthz_on(&mut kept).await, "HTTP/1.1 200 OK");

    // Renew: new files in place of the old ones, then SIGHUP.
    let new = issue(dir.path(), "new");
    std::fs::copy(&new.cert_file, &old.cert_file).unwrap();
    std::fs::copy(&new.key_file, &old.key_file).unwrap();
    // SAFETY: kill(2) on our own pid with a signal this process handles.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    own.recv().await;
    let fresh = https_client(&new.ca_pem);
    let mut served_new = false;
    for _ in 0..100 {
        let url = format!("https://127.0.0.1:{port}/healthz");
        if fresh.get(url).send().await.is_ok_and(|r| r.status() == 200) {
            served_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served_new, "new handshakes never got the new certificate");
    // A client that trusts only the old CA now fails the handshake...
    let stale = https_client(&old.ca_pem);
    assert!(stale
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_err());
    // ...while the connection opened before the reload still works.
    assert_eq!(healthz_on(&mut kept).await, "HTTP/1.1 200 OK");
}

fn registrar(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_registrar"));
    command.args(args);
    // Only this test's variables: a REGISTRAR_* of the environment would change the outcome.
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("REGISTRAR_")) {
        command.env_remove(k);
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

#[test]
fn check_config_lists_every_problem_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "registration_path = \"no-slash\"\n[server]\nbody_limit_bytes = 0\n[fetch]\ntimeout_ms = 0\n",
    )
    .unwrap();
    let out = registrar(
        &["check-config", "--config", file.to_str().unwrap()],
        &[("REGISTRAR_CREDENTIALS__SERVER_KEY", "short")],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "registration_path",
        "server.body_limit_bytes",
        "fetch.timeout_ms",
        "credentials.server_key",
    ] {
        assert!(stderr.contains(needle), "{needle} missing: {stderr}");
    }
    assert!(!stderr.contains("short\""), "{stderr}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["registration_path"], "no-slash");
    assert_eq!(printed["credentials"]["server_key"], "[redacted]");
}

#[test]
fn check_config_accepts_a_good_file_and_redacts_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("good.toml");
    let key = "c2VjcmV0LXNlcnZlci1rZXktMDEyMzQ1Njc4OWFiY2RlZg";
    std::fs::write(
        &file,
        format!("[credentials]\nserver_key = \"{key}\"\n[[access.static_tokens]]\ntoken = \"static-initial-access-token-0123456789\"\n"),
    )
    .unwrap();
    let out = registrar(&["check-config", "-c", file.to_str().unwrap()], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("configuration OK"), "{stderr}");
    assert!(!stdout.contains(key), "{stdout}");
    assert!(!stdout.contains("static-initial-access-token"), "{stdout}");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["access"]["static_tokens"][0]["token"], "[redacted]");
}

/// `storage.record_cache_percent` (the sled record cache's share of `cache_capacity_bytes`)
/// comes from the file or its environment variable, and more than 100 is refused by name.
#[test]
fn check_config_takes_the_record_cache_share_from_the_environment_and_bounds_it() {
    let out = registrar(
        &["check-config"],
        &[("REGISTRAR_STORAGE__RECORD_CACHE_PERCENT", "40")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["storage"]["record_cache_percent"], 40);
    let out = registrar(&["check-config"], &[]);
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed["storage"]["record_cache_percent"], 75,
        "the default"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("share.toml");
    std::fs::write(&file, "[storage]\nrecord_cache_percent = 101\n").unwrap();
    let out = registrar(&["check-config", "-c", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("storage.record_cache_percent"), "{stderr}");
}

#[test]
fn check_config_reports_an_unparsable_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.toml");
    std::fs::write(&file, "[server]\nprot = 80\n").unwrap();
    let out = registrar(&["check-config", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("prot"), "{stderr}");
}

#[test]
fn version_prints_the_package_version() {
    let out = registrar(&["--version"], &[]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        format!("registrar {}", env!("CARGO_PKG_VERSION"))
    );
}
