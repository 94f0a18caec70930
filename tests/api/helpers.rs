//! `spawn_app()`: the registrar on port 0 with a temporary data directory.

use registrar::settings::Settings;
use registrar::startup::Application;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{json, Value};
use std::path::PathBuf;
use tempfile::TempDir;

pub struct TestApp {
    pub address: String,
    pub endpoint: String,
    pub client: reqwest::Client,
    pub dir: TempDir,
    handle: actix_web::dev::ServerHandle,
}

/// Test defaults: port 0, a fresh data directory, cheap argon2 (the default parameters are
/// covered by their own test), no `jwks_uri` fetching.
pub fn test_settings(dir: &std::path::Path) -> Settings {
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

/// Like `spawn_app_with`, on an injected clock the test moves instead of sleeping.
pub async fn spawn_with_clock(
    clock: std::sync::Arc<registrar::clock::FixedClock>,
    tweak: impl FnOnce(Settings) -> Settings,
) -> TestApp {
    spawn_in_with_clock(tempfile::tempdir().unwrap(), clock, tweak).await
}

/// Like `spawn_with_clock`, on a given data directory (a restart).
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
    let endpoint = app.registration_endpoint();
    let handle = app.handle();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        endpoint,
        client: reqwest::Client::new(),
        dir,
        handle,
    }
}

impl TestApp {
    /// Stop the server and wait until it has released its data directory.
    pub async fn stop(self) -> TempDir {
        self.handle.stop(true).await;
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
