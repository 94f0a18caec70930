//! `spawn_app()`: the registrar on port 0 with a temporary data directory, on the backend the
//! including test target chooses (`crate::POSTGRES`): the same tests run on sled (`api`) and
//! on PostgreSQL (`api_postgres`, a database per test in `crate::pg`'s cluster).

use registrar::settings::Settings;
use registrar::startup::Application;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{json, Value};
use std::path::PathBuf;
use tempfile::TempDir;

pub struct TestApp {
    pub address: String,
    /// Base URL of the admin listener, when it runs (admin tokens configured).
    pub admin: Option<String>,
    pub endpoint: String,
    pub client: reqwest::Client,
    pub dir: TempDir,
    /// What `GET /metrics` would render for this server.
    pub scrape: registrar::telemetry::Scrape,
    /// The lifecycle sweeper, when `[lifecycle]` reaps; tests call `sweep()` on their clock.
    pub sweeper: Option<std::sync::Arc<registrar::lifecycle::Sweeper>>,
    handle: actix_web::dev::ServerHandle,
}

/// Test defaults: port 0, a fresh data directory, cheap argon2 (the default parameters are
/// covered by their own test), no `jwks_uri` fetching.
pub fn test_settings(dir: &std::path::Path) -> Settings {
    let settings = base_settings(dir);
    if crate::POSTGRES {
        with_postgres(settings, &database_for(dir))
    } else {
        settings
    }
}

/// `settings` on the PostgreSQL database `url`, migrated at start.
pub fn with_postgres(settings: Settings, url: &str) -> Settings {
    settings
        .with("storage.backend", "postgres")
        .unwrap()
        .with("storage.postgres.url", url)
        .unwrap()
        .with("storage.postgres.migrate_on_start", true)
        .unwrap()
}

/// The test database of a data directory: made on first use and remembered in the directory,
/// so a restart on the same directory finds the same clients, as with sled.
pub fn database_for(dir: &std::path::Path) -> String {
    let file = dir.join("test-database-url");
    if let Ok(url) = std::fs::read_to_string(&file) {
        return url;
    }
    let url = crate::pg::shared().new_database();
    std::fs::write(&file, &url).unwrap();
    url
}

/// The store of a stopped app's data directory, opened directly (fault injection, checks
/// below the API).
pub async fn open_store(
    dir: &std::path::Path,
) -> std::sync::Arc<dyn registrar::store::ClientStore> {
    registrar::store::open(&test_settings(dir).storage, 0)
        .await
        .expect("the store opens")
}

/// The test settings on the embedded sled store, whatever the target's backend.
pub fn base_settings(dir: &std::path::Path) -> Settings {
    Settings::defaults()
        .unwrap()
        .with("server.port", 0)
        .unwrap()
        .with("issuer", "")
        .unwrap()
        .with("storage.data_dir", dir.to_str().unwrap())
        .unwrap()
        .with("credentials.argon2_memory_kib", 64)
        .unwrap()
        .with("credentials.argon2_iterations", 1)
        .unwrap()
        // Hermetic: a test that registers a jwks_uri must not dial the internet. The fetch tests
        // (tests/api/fetch.rs) switch it back on against their local HTTPS server.
        .with("fetch.fetch_jwks_uri", false)
        .unwrap()
        // Every test registers from 127.0.0.1, many of them hundreds of clients; the rate limit
        // tests (tests/api/policy.rs, hardening.rs) switch it back on with small numbers.
        .with("rate_limit.enabled", false)
        .unwrap()
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|s| s).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(Settings) -> Settings) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    spawn_in(dir, tweak).await
}

pub async fn spawn_in(dir: TempDir, tweak: impl FnOnce(Settings) -> Settings) -> TestApp {
    let settings = tweak(test_settings(dir.path()));
    start(dir, Application::build(settings).await.expect("app builds"))
}

/// An app on the embedded sled store in `dir`, whatever the target's backend.
#[allow(dead_code)] // used by the targets that mix backends
pub async fn spawn_on_sled_in(dir: TempDir, tweak: impl FnOnce(Settings) -> Settings) -> TestApp {
    let settings = tweak(base_settings(dir.path()));
    start(dir, Application::build(settings).await.expect("app builds"))
}

/// Like `spawn_app_with`, on an injected clock the test moves instead of sleeping.
pub async fn spawn_with_clock(
    clock: std::sync::Arc<registrar::clock::FixedClock>,
    tweak: impl FnOnce(Settings) -> Settings,
) -> TestApp {
    spawn_in_with_clock(tempfile::tempdir().unwrap(), clock, tweak).await
}

/// Like `spawn_in` (an existing data directory, e.g. after `stop`), on an injected clock.
pub async fn spawn_in_with_clock(
    dir: TempDir,
    clock: std::sync::Arc<registrar::clock::FixedClock>,
    tweak: impl FnOnce(Settings) -> Settings,
) -> TestApp {
    let settings = tweak(test_settings(dir.path()));
    let app = Application::build_with(
        settings,
        clock,
        std::sync::Arc::new(registrar::tokens::OsTokens),
    )
    .await
    .expect("app builds");
    start(dir, app)
}

fn start(dir: TempDir, app: Application) -> TestApp {
    let address = format!("http://127.0.0.1:{}", app.port());
    let admin = app.admin_port().map(|p| format!("http://127.0.0.1:{p}"));
    let endpoint = app.registration_endpoint();
    let sweeper = app.sweeper();
    let handle = app.handle();
    let scrape = app.scrape();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        admin,
        endpoint,
        // A pooled connection idle for longer than the server's keep-alive (actix: 5 s) may be
        // closed by the server just as the client reuses it (hyper: `IncompleteMessage`); tests
        // that wait on a background worker between calls must not hit that race.
        client: reqwest::Client::builder()
            .pool_idle_timeout(std::time::Duration::from_secs(2))
            .build()
            .expect("a reqwest client"),
        dir,
        scrape,
        sweeper,
        handle,
    }
}

impl TestApp {
    /// Stop the server and wait until it has released its data directory.
    pub async fn stop(self) -> TempDir {
        // The sweeper and the metrics scrape hold the store open; the server's own copy goes
        // with its task. (Holding the scrape kept sled locked, so every stop used to wait out
        // the whole unlock loop below: about 50 s.)
        drop(self.sweeper);
        drop(self.scrape);
        self.handle.stop(true).await;
        if self.dir.path().join("test-database-url").exists() {
            return self.dir;
        }
        // The store is dropped (and its lock released) when the server task finishes.
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            if sled_unlocked(self.dir.path().to_path_buf()) {
                break;
            }
        }
        self.dir
    }

    /// GET /healthz (liveness).
    pub async fn healthz(&self) -> reqwest::Response {
        self.client
            .get(format!("{}/healthz", self.address))
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(&self.endpoint)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_raw(
        &self,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(&self.endpoint)
            .header(CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Register, asserting 201; returns the client information response.
    pub async fn register(&self, body: &Value) -> Value {
        let r = self.post(body).await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 201, "registration failed: {body}");
        body
    }

    pub async fn get_client(&self, uri: &str, token: &str) -> reqwest::Response {
        self.client
            .get(uri)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .send()
            .await
            .unwrap()
    }

    pub async fn put_client(&self, uri: &str, token: &str, body: &Value) -> reqwest::Response {
        self.client
            .put(uri)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete_client(&self, uri: &str, token: &str) -> reqwest::Response {
        self.client
            .delete(uri)
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .send()
            .await
            .unwrap()
    }
}

fn sled_unlocked(dir: PathBuf) -> bool {
    // A fresh open succeeds only once the previous holder has closed the database.
    registrar::store::SledStore::open(&dir, 1 << 20).is_ok()
}

/// The `registration_client_uri` of a client information response.
pub fn client_uri(c: &Value) -> String {
    c["registration_client_uri"].as_str().unwrap().to_owned()
}

/// The `registration_access_token` of a client information response.
pub fn client_rat(c: &Value) -> String {
    c["registration_access_token"].as_str().unwrap().to_owned()
}

pub fn web_client() -> Value {
    json!({"redirect_uris": ["https://client.example.org/cb"], "client_name": "Example"})
}

/// Assert an RFC 7591 JSON error and return its description.
pub async fn assert_error(r: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(r.status().as_u16(), status);
    let ct = r
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(ct.as_deref(), Some("application/json"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    let description = body["error_description"]
        .as_str()
        .expect("error_description")
        .to_owned();
    assert!(!description.is_empty());
    description
}

/// Assert the RFC 6750 §3.1 answer to a request with no credentials at all: 401, a bare
/// `WWW-Authenticate: Bearer` challenge (no `error` attribute), and the JSON error body.
pub async fn assert_token_required(r: reqwest::Response) {
    let challenge = r
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(challenge.as_deref(), Some("Bearer"), "{:?}", r.headers());
    assert_error(r, 401, "invalid_token").await;
}

/// Status, every header but `date` (the second it was sent) and `x-request-id` (one per request
/// by design), and the body bytes of a response: what "byte-identical responses" compares.
pub async fn snapshot(r: reqwest::Response) -> (u16, Vec<(String, Vec<u8>)>, Vec<u8>) {
    let status = r.status().as_u16();
    let mut headers: Vec<(String, Vec<u8>)> = r
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str() != "date" && k.as_str() != "x-request-id")
        .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    headers.sort();
    (status, headers, r.bytes().await.unwrap().to_vec())
}

/// The body of an RFC 7592 PUT that keeps `current`'s metadata: the registration response
/// without the members the server issues (RFC 7592 §2.2).
pub fn put_body(current: &Value) -> Value {
    let mut body = current.clone();
    for member in [
        "registration_access_token",
        "registration_client_uri",
        "client_secret",
        "client_secret_expires_at",
        "client_id_issued_at",
    ] {
        body.as_object_mut().unwrap().remove(member);
    }
    body
}
