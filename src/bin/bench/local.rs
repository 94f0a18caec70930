//! Servers the bench runs inside its own process, each on its own actix system thread:
//!
//! - the **loopback ceiling**: a static-JSON actix handler that answers every request with the
//!   exact bytes of one client read, so `read ÷ ceiling` says how close the registrar's read path
//!   comes to what actix and the loopback cost on these cores, measured with the same wrk
//!   settings in the same round;
//! - the **webhook receiver** of `--audit`: HTTPS (the webhook rules demand it) with a leaf
//!   certificate from a throwaway CA made with `openssl`, which the registrar trusts through
//!   `fetch.extra_root_ca_file`; it answers 204 to every delivery and counts them.

use crate::tools::Res;
use actix_web::{web, App, HttpResponse, HttpServer};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A server running on its own actix system thread; stopped by [`LocalServer::stop`].
pub struct LocalServer {
    pub port: u16,
    /// Requests answered (the receiver: deliveries).
    pub count: Arc<AtomicU64>,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalServer {
    pub fn answered(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Whether the server's thread has ended (actix stops the server on SIGTERM or SIGINT).
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Graceful stop, then join the thread.
    pub fn stop(mut self) {
        let handle = self.handle.clone();
        actix_web::rt::System::new().block_on(handle.stop(true));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Run `build` (which binds and returns an unstarted server) on a new actix system thread.
fn spawn<F>(what: &str, build: F) -> Res<LocalServer>
where
    F: FnOnce(Arc<AtomicU64>) -> std::io::Result<actix_web::dev::Server> + Send + 'static,
{
    let count = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel();
    let counter = count.clone();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            match build(counter) {
                Ok(server) => {
                    let _ = tx.send(Ok(server.handle()));
                    let _ = server.await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                }
            }
        })
    });
    let handle = rx
        .recv()
        .map_err(|_| format!("{what}: the server thread died"))?
        .map_err(|e| format!("{what}: {e}"))?;
    Ok(LocalServer {
        port: 0,
        count,
        handle,
        thread: Some(thread),
    })
}

/// The loopback ceiling: every request gets 200 with `body` as `application/json` and
/// `Cache-Control: no-store`, as a client read does. Worker count: actix's default, as the
/// registrar's (`server.workers = 0`).
pub fn ceiling(body: Vec<u8>) -> Res<LocalServer> {
    let port = crate::tools::free_port()?;
    let body = web::Bytes::from(body);
    let mut server = spawn("loopback ceiling", move |count| {
        Ok(HttpServer::new(move || {
            let body = body.clone();
            let count = count.clone();
            App::new().default_service(web::to(move || {
                count.fetch_add(1, Ordering::Relaxed);
                let body = body.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .insert_header(("cache-control", "no-store"))
                        .body(body)
                }
            }))
        })
        .bind(("127.0.0.1", port))?
        .run())
    })?;
    server.port = port;
    Ok(server)
}

/// A throwaway CA and a leaf for 127.0.0.1 in `dir` (openssl CLI): (ca.pem, leaf.pem, leaf.key).
fn make_certs(dir: &Path) -> Res<(PathBuf, PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n",
    )
    .map_err(|e| e.to_string())?;
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    crate::tools::sh(&format!(
        "cd '{}' && openssl req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-webhook-ca \
         -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>&1 && \
         openssl req -new {ec} -keyout leaf.key -out leaf.csr -subj /CN=127.0.0.1 2>&1 && \
         openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out leaf.pem \
         -days 2 -extfile leaf.ext 2>&1",
        dir.display()
    ))
    .map_err(|e| format!("making the webhook receiver's certificate with openssl: {e}"))?;
    Ok((
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    ))
}

/// The HTTPS webhook receiver (answers 204, counts deliveries) and the CA file to trust.
pub fn webhook_receiver(dir: &Path) -> Res<(LocalServer, PathBuf)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (ca, leaf, key) = make_certs(dir)?;
    let certs = CertificateDer::pem_file_iter(&leaf)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", leaf.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key).map_err(|e| format!("{}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("webhook receiver certificate: {e}"))?;
    let port = crate::tools::free_port()?;
    let mut server = spawn("webhook receiver", move |count| {
        Ok(HttpServer::new(move || {
            let count = count.clone();
            App::new().default_service(web::to(move |_body: web::Bytes| {
                count.fetch_add(1, Ordering::Relaxed);
                async { HttpResponse::NoContent().finish() }
            }))
        })
        .workers(1)
        .bind_rustls_0_23(("127.0.0.1", port), config)?
        .run())
    })?;
    server.port = port;
    Ok((server, ca))
}
