//! A local HTTPS server for tests that make the registrar fetch documents (sector identifier
//! documents, JWK Sets): a CA generated per server, trusted by the registrar through
//! `fetch.extra_root_ca_file`; it counts TCP connections before the TLS handshake, so "refused
//! without a connection" can be proven by a count of zero.

use crate::helpers::{spawn_app_with, TestApp};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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
    /// 200 with the JSON the test holds at the moment of the request; 503 while it is empty
    /// (documents that change while the registrar runs).
    Live(Arc<Mutex<String>>),
    /// Like `Live`, with extra header lines (each ending in `\r\n`, e.g. `Cache-Control`) and
    /// an optional delay before answering (client ID metadata documents).
    Document {
        headers: &'static str,
        delay: Duration,
        body: Arc<Mutex<String>>,
    },
}

/// One request as received: the head (request line and headers) and the body.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) head: String,
    pub(crate) body: String,
}

impl Received {
    /// The value of header `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

type Routes = Arc<Mutex<HashMap<String, Reply>>>;

pub(crate) struct TlsServer {
    pub(crate) port: u16,
    ca_file: String,
    connections: Arc<AtomicUsize>,
    requested: Arc<Mutex<Vec<String>>>,
    received: Arc<Mutex<Vec<Received>>>,
    routes: Routes,
    in_flight: Arc<AtomicUsize>,
    pub(crate) max_in_flight: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    pub(crate) async fn start(routes: Vec<(&str, Reply)>) -> Self {
        let routes: Routes = Arc::new(Mutex::new(
            routes.into_iter().map(|(p, r)| (p.to_owned(), r)).collect(),
        ));
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
            received: Arc::default(),
            routes: routes.clone(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            _dir: dir,
        };
        let (connections, requested) = (server.connections.clone(), server.requested.clone());
        let received = server.received.clone();
        let (in_flight, max_in_flight) = (server.in_flight.clone(), server.max_in_flight.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                connections.fetch_add(1, Ordering::SeqCst);
                let (acceptor, routes, requested) =
                    (acceptor.clone(), routes.clone(), requested.clone());
                let received = received.clone();
                let (in_flight, max_in_flight) = (in_flight.clone(), max_in_flight.clone());
                tokio::spawn(async move {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    max_in_flight.fetch_max(now, Ordering::SeqCst);
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls, &routes, &requested, &received).await;
                    }
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        server
    }

    /// Answer `path` with `reply` from now on (replacing what it answered before).
    pub(crate) fn route(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.to_owned(), reply);
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub(crate) fn requested(&self) -> Vec<String> {
        self.requested.lock().unwrap().clone()
    }

    /// Every request received so far, with its body.
    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The PEM file of this server's CA.
    pub(crate) fn ca_file(&self) -> &str {
        &self.ca_file
    }

    /// The registrar, trusting this server's CA; `allow_private` decides whether loopback (this
    /// server) may be contacted.
    pub(crate) async fn app(&self, allow_private: bool) -> TestApp {
        self.app_with(allow_private, |s| s).await
    }

    pub(crate) async fn app_with(
        &self,
        allow_private: bool,
        tweak: impl FnOnce(registrar::settings::Settings) -> registrar::settings::Settings,
    ) -> TestApp {
        let trusting = self.trusting(allow_private);
        spawn_app_with(move |s| tweak(trusting(s))).await
    }

    /// The `[fetch]` settings that make the registrar trust (and, with `allow_private`, reach)
    /// this server, for apps built some other way (an injected clock).
    pub(crate) fn trusting(
        &self,
        allow_private: bool,
    ) -> impl FnOnce(registrar::settings::Settings) -> registrar::settings::Settings {
        let ca = self.ca_file.clone();
        move |s| {
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
                .unwrap()
        }
    }
}

async fn serve(
    mut tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    routes: &Mutex<HashMap<String, Reply>>,
    requested: &Mutex<Vec<String>>,
    received: &Mutex<Vec<Received>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let split = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(head.len(), |i| i + 4);
    let mut body = head.split_off(split);
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut request = Received {
        head,
        body: String::new(),
    };
    let length: usize = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while body.len() < length.min(1 << 20) {
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    request.body = String::from_utf8_lossy(&body).into_owned();
    let path = request.head.split(' ').nth(1).unwrap_or("/").to_owned();
    requested.lock().unwrap().push(path.clone());
    received.lock().unwrap().push(request);
    let reply = routes
        .lock()
        .unwrap()
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
        Reply::Live(doc) => {
            let body = doc.lock().unwrap().clone();
            if body.is_empty() {
                respond(503, "application/json", "", "{}")
            } else {
                respond(200, "application/json", "", &body)
            }
        }
        Reply::Document {
            headers,
            delay,
            body,
        } => {
            tokio::time::sleep(delay).await;
            let body = body.lock().unwrap().clone();
            respond(200, "application/json", headers, &body)
        }
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
