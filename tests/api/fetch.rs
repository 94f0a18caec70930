//! Outbound fetches (`sector_identifier_uri`, `jwks_uri`) against a real local HTTPS server.
//!
//! Each test starts its own TLS server on 127.0.0.1 with a CA generated in the test and trusted
//! through `fetch.extra_root_ca_file`. The server counts TCP connections before the TLS handshake,
//! so "refused without a connection" is proven by a count of zero. Happy paths must switch on
//! `fetch.allow_private_addresses` (the server is on loopback); SSRF cases run with it off, and the
//! CA is still trusted, so a refusal can only come from the address check, not from TLS.

use crate::helpers::{assert_error, spawn_app_with, TestApp};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const REDIRECT: &str = "https://client.example.org/cb";

/// What the test server answers on one path.
#[derive(Clone)]
pub(crate) enum Reply {
    /// 200 with `Content-Type: application/json`.
    Json(String),
    /// Any status, content type and body.
    Raw(u16, &'static str, String),
    /// 302 to another URL.
    Redirect(String),
    /// Wait, then answer like `Json`.
    Slow(Duration, String),
    /// A JSON content type and `n` bytes of body with no `Content-Length` (read until close).
    Endless(usize),
    /// A `Content-Length` far above any cap, and a tiny body.
    HugeLength,
}

pub(crate) struct TlsServer {
    port: u16,
    ca_file: String,
    connections: Arc<AtomicUsize>,
    requested: Arc<Mutex<Vec<String>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    pub(crate) async fn start(routes: Vec<(&str, Reply)>) -> Self {
        let routes: Arc<HashMap<String, Reply>> =
            Arc::new(routes.into_iter().map(|(p, r)| (p.to_owned(), r)).collect());
        // A CA, and a server certificate for 127.0.0.1 and localhost signed by it.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "registrar test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();

        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = Self {
            port,
            ca_file: ca_path.to_str().unwrap().to_owned(),
            connections: Arc::default(),
            requested: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            _dir: dir,
        };
        let (connections, requested) = (server.connections.clone(), server.requested.clone());
        let (in_flight, max_in_flight) = (server.in_flight.clone(), server.max_in_flight.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                connections.fetch_add(1, Ordering::SeqCst);
                let (acceptor, routes, requested) =
                    (acceptor.clone(), routes.clone(), requested.clone());
                let (in_flight, max_in_flight) = (in_flight.clone(), max_in_flight.clone());
                tokio::spawn(async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    max_in_flight.fetch_max(now, Ordering::SeqCst);
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls, &routes, &requested).await;
                    }
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        server
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requested(&self) -> Vec<String> {
        self.requested.lock().unwrap().clone()
    }

    /// The registrar, trusting this server's CA; `allow_private` decides whether loopback (this
    /// server) may be contacted.
    async fn app(&self, allow_private: bool) -> TestApp {
        self.app_with(allow_private, |s| s).await
    }

    pub(crate) async fn app_with(
        &self,
        allow_private: bool,
        tweak: impl FnOnce(registrar::settings::Settings) -> registrar::settings::Settings,
    ) -> TestApp {
        let ca = self.ca_file.clone();
        spawn_app_with(move |s| {
            tweak(
                s.with("fetch.extra_root_ca_file", ca)
                    .unwrap()
                    .with("fetch.allow_private_addresses", allow_private)
                    .unwrap()
                    .with("fetch.timeout_ms", 1000)
                    .unwrap()
                    .with("fetch.max_body_bytes", 4096)
                    .unwrap()
                    .with("fetch.failure_ttl_ms", 0)
                    .unwrap()
                    .with("fetch.fetch_jwks_uri", true)
                    .unwrap(),
            )
        })
        .await
    }
}

async fn serve(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    routes: &HashMap<String, Reply>,
    requested: &Mutex<Vec<String>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
    requested.lock().unwrap().push(path.clone());
    let reply =
        routes
            .get(&path)
            .cloned()
            .unwrap_or(Reply::Raw(404, "application/json", "{}".into()));
    let respond = |status: u16, ct: &str, extra: &str, body: &str| {
        format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let out = match reply {
        Reply::Json(body) => respond(200, "application/json", "", &body),
        Reply::Raw(status, ct, body) => respond(status, ct, "", &body),
        Reply::Redirect(to) => respond(
            302,
            "application/json",
            &format!("Location: {to}\r\n"),
            "[]",
        ),
        Reply::Slow(delay, body) => {
            tokio::time::sleep(delay).await;
            respond(200, "application/json", "", &body)
        }
        Reply::HugeLength => "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\nConnection: close\r\n\r\n[]".to_owned(),
        Reply::Endless(n) => {
            let _ = tls
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[\"")
                .await;
            let chunk = vec![b'a'; 1024];
            for _ in 0..n / 1024 {
                if tls.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            let _ = tls.write_all(b"\"]").await;
            let _ = tls.shutdown().await;
            return;
        }
    };
    let _ = tls.write_all(out.as_bytes()).await;
    let _ = tls.shutdown().await;
}

fn sector_client(sector: &str) -> Value {
    json!({
        "redirect_uris": [REDIRECT],
        "sector_identifier_uri": sector,
        "subject_type": "pairwise",
    })
}

fn good_sector() -> String {
    json!([REDIRECT, "https://other.example.org/cb"]).to_string()
}

fn ec_jwks() -> Value {
    json!({"keys":[{"kty":"EC","crv":"P-256","kid":"a","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]})
}

#[tokio::test]
async fn register_accepts_a_sector_document_listing_every_redirect_uri() {
    let server = TlsServer::start(vec![("/sector.json", Reply::Json(good_sector()))]).await;
    let app = server.app(true).await;
    let body = app
        .register(&sector_client(&server.url("/sector.json")))
        .await;
    assert_eq!(body["sector_identifier_uri"], server.url("/sector.json"));
    assert_eq!(server.requested(), vec!["/sector.json"]);
}

#[tokio::test]
async fn register_rejects_a_sector_document_missing_a_redirect_uri() {
    let doc = json!(["https://other.example.org/cb"]).to_string();
    let server = TlsServer::start(vec![("/sector.json", Reply::Json(doc))]).await;
    let app = server.app(true).await;
    let r = app.post(&sector_client(&server.url("/sector.json"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("sector_identifier_uri"), "{d}");
    assert!(
        d.contains(&format!("does not list the redirect URI \"{REDIRECT}\"")),
        "{d}"
    );
    // The fetched document is not echoed.
    assert!(!d.contains("other.example.org"), "{d}");
}

#[tokio::test]
async fn register_rejects_a_sector_document_that_is_not_an_array() {
    let doc = json!({"redirect_uris": [REDIRECT], "secret": "internal-detail"}).to_string();
    let server = TlsServer::start(vec![("/sector.json", Reply::Json(doc))]).await;
    let app = server.app(true).await;
    let r = app.post(&sector_client(&server.url("/sector.json"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("must be a JSON array"), "{d}");
    assert!(!d.contains("internal-detail"), "{d}");
}

#[tokio::test]
async fn register_rejects_a_sector_array_with_a_non_string() {
    let doc = json!([REDIRECT, 5]).to_string();
    let server = TlsServer::start(vec![("/sector.json", Reply::Json(doc))]).await;
    let app = server.app(true).await;
    let r = app.post(&sector_client(&server.url("/sector.json"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("item 1 is not a string"), "{d}");
}

#[tokio::test]
async fn register_rejects_a_sector_document_that_is_not_json() {
    let server = TlsServer::start(vec![
        (
            "/html",
            Reply::Raw(200, "text/html", "<html>secret</html>".into()),
        ),
        (
            "/broken",
            Reply::Json("[\"https://client.example.org/cb\"".into()),
        ),
    ])
    .await;
    let app = server.app(true).await;
    let r = app.post(&sector_client(&server.url("/html"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("JSON content type"), "{d}");
    assert!(!d.contains("secret"), "{d}");
    let r = app.post(&sector_client(&server.url("/broken"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("not valid JSON"), "{d}");
}

#[tokio::test]
async fn register_rejects_a_sector_document_above_the_size_cap() {
    let server = TlsServer::start(vec![
        ("/endless", Reply::Endless(1024 * 1024)),
        ("/declared", Reply::HugeLength),
    ])
    .await;
    let app = server.app(true).await;
    for path in ["/endless", "/declared"] {
        let r = app.post(&sector_client(&server.url(path))).await;
        let d = assert_error(r, 400, "invalid_client_metadata").await;
        assert!(d.contains("more than 4096 bytes"), "{path}: {d}");
    }
}

#[tokio::test]
async fn register_rejects_a_sector_server_that_is_too_slow() {
    let server = TlsServer::start(vec![(
        "/slow",
        Reply::Slow(Duration::from_secs(5), good_sector()),
    )])
    .await;
    let app = server.app(true).await;
    let started = std::time::Instant::now();
    let r = app.post(&sector_client(&server.url("/slow"))).await;
    let elapsed = started.elapsed();
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("within 1000 ms"), "{d}");
    assert!(elapsed < Duration::from_millis(2500), "took {elapsed:?}");
}

#[tokio::test]
async fn register_does_not_follow_a_redirect_from_the_sector_uri() {
    // The redirect target is a valid document on the same (trusted) server, so following the
    // redirect would succeed: only the no-redirect rule can make this fail.
    let server = TlsServer::start(vec![
        ("/moved", Reply::Redirect("/good".into())),
        ("/good", Reply::Json(good_sector())),
    ])
    .await;
    let app = server.app(true).await;
    let r = app.post(&sector_client(&server.url("/moved"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("redirect (HTTP 302)"), "{d}");
    assert_eq!(
        server.requested(),
        vec!["/moved"],
        "the redirect was followed"
    );
}

#[tokio::test]
async fn register_rejects_a_sector_uri_answering_404() {
    let server = TlsServer::start(vec![]).await;
    let app = server.app(true).await;
    let r = app.post(&sector_client(&server.url("/missing.json"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("HTTP status 404"), "{d}");
}

#[tokio::test]
async fn register_refuses_reserved_addresses_without_connecting() {
    let server = TlsServer::start(vec![("/sector.json", Reply::Json(good_sector()))]).await;
    let app = server.app(false).await;
    let port = server.port;
    for host in [
        "2130706433".to_owned(),
        "0x7f000001".to_owned(),
        "0177.0.0.1".to_owned(),
        "127.1".to_owned(),
        "[::1]".to_owned(),
        "[::ffff:127.0.0.1]".to_owned(),
        "localhost".to_owned(),
    ] {
        let url = format!("https://{host}:{port}/sector.json");
        let r = app.post(&sector_client(&url)).await;
        let d = assert_error(r, 400, "invalid_client_metadata").await;
        // A name gets the same text whether it resolves to loopback or not at all.
        assert!(d.contains("reserved address"), "{url}: {d}");
        assert_eq!(server.connections(), 0, "{url} was contacted");
    }
    // Cloud metadata, on its real port: refused before any socket is opened.
    for url in [
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:a9fe:a9fe]/",
        "https://[64:ff9b::a9fe:a9fe]/",
        "https://[2002:a9fe:a9fe::]/",
        "https://100.64.0.1/",
        "https://198.18.0.1/",
        "https://0.0.0.0/",
    ] {
        let r = app.post(&sector_client(url)).await;
        let d = assert_error(r, 400, "invalid_client_metadata").await;
        assert!(d.contains("reserved address"), "{url}: {d}");
    }
    assert_eq!(server.connections(), 0);
    // The same server is reachable once private addresses are allowed: the refusals above were
    // the address check, not a broken test server.
    let open = server.app(true).await;
    open.register(&sector_client(&server.url("/sector.json")))
        .await;
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn register_refuses_an_http_sector_uri_without_connecting() {
    let server = TlsServer::start(vec![("/sector.json", Reply::Json(good_sector()))]).await;
    let app = server.app(true).await;
    let url = format!("http://127.0.0.1:{}/sector.json", server.port);
    let r = app.post(&sector_client(&url)).await;
    assert_error(r, 400, "invalid_client_metadata").await;
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn update_runs_the_sector_check_again() {
    let server = TlsServer::start(vec![("/sector.json", Reply::Json(good_sector()))]).await;
    let app = server.app(true).await;
    let mut client = app
        .register(&sector_client(&server.url("/sector.json")))
        .await;
    let uri = client["registration_client_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = client["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    client["redirect_uris"] = json!([REDIRECT, "https://client.example.org/unlisted"]);
    let r = app.put_client(&uri, &token, &client).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("https://client.example.org/unlisted"), "{d}");
    assert_eq!(server.requested().len(), 2);
    client["redirect_uris"] = json!(["https://other.example.org/cb"]);
    let r = app.put_client(&uri, &token, &client).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn register_checks_the_jwk_set_at_jwks_uri() {
    let mut private = ec_jwks();
    private["keys"][0]["d"] = json!("jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI");
    let server = TlsServer::start(vec![
        ("/jwks.json", Reply::Json(ec_jwks().to_string())),
        ("/private.json", Reply::Json(private.to_string())),
        (
            "/jwk-set",
            Reply::Raw(200, "application/jwk-set+json", ec_jwks().to_string()),
        ),
    ])
    .await;
    let app = server.app(true).await;
    let with = |uri: String| json!({"redirect_uris": [REDIRECT], "jwks_uri": uri});
    app.register(&with(server.url("/jwks.json"))).await;
    app.register(&with(server.url("/jwk-set"))).await;
    let r = app.post(&with(server.url("/private.json"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(
        d.contains("jwks_uri") && d.contains("private member"),
        "{d}"
    );
    let r = app.post(&with(server.url("/nothing-here"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("jwks_uri: answered with HTTP status 404"), "{d}");
}

#[tokio::test]
async fn jwks_uri_is_not_fetched_when_switched_off() {
    let server = TlsServer::start(vec![]).await;
    let app = server
        .app_with(true, |s| s.with("fetch.fetch_jwks_uri", false).unwrap())
        .await;
    app.register(&json!({"redirect_uris": [REDIRECT], "jwks_uri": server.url("/jwks.json")}))
        .await;
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn a_host_that_failed_is_not_contacted_again_within_the_ttl() {
    // A port with nothing listening: connection refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = TlsServer::start(vec![(
        "/boom",
        Reply::Raw(500, "application/json", "{}".into()),
    )])
    .await;
    let app = server
        .app_with(true, |s| s.with("fetch.failure_ttl_ms", 60_000).unwrap())
        .await;
    let url = format!("https://127.0.0.1:{port}/sector.json");
    let r = app.post(&sector_client(&url)).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("could not be fetched"), "{d}");
    let r = app.post(&sector_client(&url)).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("failed moments ago"), "{d}");
    // A document problem is not a host failure: a 404 can be fixed and retried at once.
    for _ in 0..2 {
        let r = app.post(&sector_client(&server.url("/missing"))).await;
        let d = assert_error(r, 400, "invalid_client_metadata").await;
        assert!(d.contains("HTTP status 404"), "{d}");
    }
    assert_eq!(server.connections(), 2);
    // A 5xx is: the second attempt does not reach the server, and neither does any other path
    // on that host.
    let r = app.post(&sector_client(&server.url("/boom"))).await;
    let d = assert_error(r, 400, "invalid_client_metadata").await;
    assert!(d.contains("HTTP status 500"), "{d}");
    for path in ["/boom", "/missing"] {
        let r = app.post(&sector_client(&server.url(path))).await;
        let d = assert_error(r, 400, "invalid_client_metadata").await;
        assert!(d.contains("failed moments ago"), "{d}");
    }
    assert_eq!(server.connections(), 3);
}

#[tokio::test]
async fn concurrent_fetches_are_bounded() {
    let server = TlsServer::start(vec![(
        "/sector.json",
        Reply::Slow(Duration::from_millis(150), good_sector()),
    )])
    .await;
    let app = server
        .app_with(true, |s| {
            s.with("fetch.max_concurrent", 1)
                .unwrap()
                .with("fetch.timeout_ms", 3000)
                .unwrap()
        })
        .await;
    let body = sector_client(&server.url("/sector.json"));
    let results = futures_util::future::join_all((0..4).map(|_| app.post(&body))).await;
    for r in results {
        assert_eq!(r.status(), 201);
    }
    assert_eq!(server.connections(), 4);
    assert_eq!(server.max_in_flight.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_fetch_that_cannot_get_a_slot_in_time_is_answered_429() {
    let server = TlsServer::start(vec![(
        "/sector.json",
        Reply::Slow(Duration::from_secs(3), good_sector()),
    )])
    .await;
    // One slot; the first request holds it for the whole 1000 ms deadline, the second may wait
    // for it only 500 ms.
    let app = server
        .app_with(true, |s| s.with("fetch.max_concurrent", 1).unwrap())
        .await;
    let body = sector_client(&server.url("/sector.json"));
    let (first, second) = tokio::join!(app.post(&body), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.post(&body).await
    });
    assert_eq!(
        second.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert_error(second, 429, "too_many_requests").await;
    let d = assert_error(first, 400, "invalid_client_metadata").await;
    assert!(d.contains("within 1000 ms"), "{d}");
    assert_eq!(server.connections(), 1);
}
