//! Interop with the real client libraries, pinned with lockfiles: openid-client v6,
//! oauth4webapi v3 and the MCP TypeScript SDK (tests/interop/js, installed with `npm ci`), Ory
//! Hydra's Python SDK ory-hydra-client (tests/interop/python/requirements.txt) and the MCP Python
//! SDK `mcp` (tests/interop/python/mcp-requirements.txt), each installed into its own venv under
//! target/, and openidconnect-rs (a dev-dependency pinned in Cargo.toml). Each drives the
//! registrar through registration, RFC 7592 read, update and delete, and a refused registration,
//! and fails on any deviation; the MCP SDKs also run their `auth()` / `OAuthClientProvider` flow up
//! to the authorization redirect against a registrar configured as the README's MCP recipe says.
//!
//! The installs run once and are reused while the lockfiles are unchanged (a copy of the
//! lockfile is kept next to the installed packages as a stamp).

/// The backend `helpers` starts apps on.
pub const POSTGRES: bool = false;
#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;
#[path = "support/postgres.rs"]
mod pg;
#[path = "support/python.rs"]
mod python;
#[allow(dead_code)]
#[path = "api/tls.rs"]
mod tls;

use python::{installed, run};
use registrar::settings::Settings;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// One install at a time per tool: the two JavaScript tests share one node_modules.
static NPM: Mutex<()> = Mutex::new(());

/// How long one npm install or one driver may take before it is killed.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);
const DRIVER_TIMEOUT: Duration = Duration::from_secs(60);

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// `npm ci` in tests/interop/js unless node_modules already matches package-lock.json.
fn npm_install() -> Result<PathBuf, String> {
    let _guard = NPM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = interop_dir().join("js");
    let lock = dir.join("package-lock.json");
    let stamp = dir.join("node_modules/.registrar-installed-lock.json");
    if !installed(&lock, &stamp) {
        let mut cmd = Command::new("npm");
        cmd.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir);
        run(cmd, INSTALL_TIMEOUT)?;
        std::fs::copy(&lock, &stamp).map_err(|e| format!("stamp: {e}"))?;
    }
    Ok(dir)
}

/// Start the registrar, run `driver` (a command taking the issuer as last argument), and return
/// the driver's output; panics with the output on any failure.
async fn drive(
    name: &str,
    driver: impl FnOnce(&str) -> Result<Command, String> + Send + 'static,
) -> String {
    drive_with(name, |s| s, driver).await
}

/// The README's "Using it with an MCP server" recipe with the endpoints written under
/// `[discovery]` (the other way, `discovery.authorization_server_metadata_url`, is covered in
/// tests/api/discovery.rs): the registrar publishes discovery on behalf of an authorization server
/// at `authorization_server`, whose endpoints the client libraries need to accept it.
fn mcp_recipe(s: Settings, authorization_server: &str) -> Settings {
    s.with(
        "discovery.authorization_endpoint",
        format!("{authorization_server}/authorize"),
    )
    .and_then(|s| {
        s.with(
            "discovery.token_endpoint",
            format!("{authorization_server}/token"),
        )
    })
    .and_then(|s| s.with("discovery.jwks_uri", format!("{authorization_server}/jwks")))
    .and_then(|s| {
        s.with(
            "discovery.userinfo_endpoint",
            format!("{authorization_server}/userinfo"),
        )
    })
    .expect("recipe settings")
}

/// `drive` with the settings changed by `tweak`.
async fn drive_with(
    name: &str,
    tweak: impl FnOnce(Settings) -> Settings,
    driver: impl FnOnce(&str) -> Result<Command, String> + Send + 'static,
) -> String {
    let app = helpers::spawn_app_with(tweak).await;
    let issuer = app.address.clone();
    // Installing and driving block; keep them off the runtime's workers.
    let result = tokio::task::spawn_blocking(move || run(driver(&issuer)?, DRIVER_TIMEOUT))
        .await
        .expect("driver thread");
    app.stop().await;
    match result {
        Ok(output) => {
            println!("{output}");
            assert!(
                output.contains(&format!("[{name}] PASS")),
                "{name} did not report PASS:\n{output}"
            );
            output
        }
        Err(e) => panic!("{name} deviated:\n{e}"),
    }
}

fn node_driver(script: &'static str) -> impl FnOnce(&str) -> Result<Command, String> {
    move |issuer| {
        let dir = npm_install()?;
        let mut cmd = Command::new("node");
        cmd.arg(dir.join(script)).arg(issuer).current_dir(dir);
        Ok(cmd)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_client_v6_registers_reads_updates_and_deletes() {
    let out = drive("openid-client", node_driver("openid-client.mjs")).await;
    assert!(out.contains("read after delete refused"), "{out}");
    assert!(out.contains("invalid registration refused"), "{out}");
}

/// One client library against the PostgreSQL backend: the store is invisible to clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_client_v6_works_against_the_postgres_backend() {
    let url = pg::shared().new_database();
    let out = drive_with(
        "openid-client",
        move |s| helpers::with_postgres(s, &url),
        node_driver("openid-client.mjs"),
    )
    .await;
    assert!(out.contains("read after delete refused"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth4webapi_v3_registers_reads_updates_and_deletes() {
    let out = drive("oauth4webapi", node_driver("oauth4webapi.mjs")).await;
    assert!(out.contains("read after delete refused"), "{out}");
    assert!(out.contains("invalid registration refused"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ory_hydra_python_sdk_registers_reads_updates_and_deletes() {
    let out = drive(
        "ory-hydra-client",
        python_driver("requirements.txt", "interop", "hydra_client.py"),
    )
    .await;
    assert!(out.contains("read after delete refused"), "{out}");
    assert!(out.contains("invalid registration refused"), "{out}");
}

fn python_driver(
    requirements: &'static str,
    venv: &'static str,
    script: &'static str,
) -> impl FnOnce(&str) -> Result<Command, String> {
    move |issuer| {
        let requirements = interop_dir().join("python").join(requirements);
        let mut cmd = python::install(venv, &requirements)?.command();
        cmd.arg(interop_dir().join("python").join(script))
            .arg(issuer);
        Ok(cmd)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_typescript_sdk_discovers_registers_and_reaches_the_authorization_redirect() {
    let out = drive_with(
        "mcp-sdk",
        |s| mcp_recipe(s, "https://as.example"),
        node_driver("mcp-sdk.mjs"),
    )
    .await;
    assert!(out.contains("discovery accepted"), "{out}");
    assert!(out.contains("registerClient ok"), "{out}");
    assert!(
        out.contains("auth() redirected to the authorization endpoint"),
        "{out}"
    );
    assert_eq!(out.matches("read after delete refused").count(), 2, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_python_sdk_discovers_registers_and_reaches_the_authorization_redirect() {
    let out = drive_with(
        "mcp-python",
        |s| mcp_recipe(s, "https://as.example"),
        python_driver("mcp-requirements.txt", "interop-mcp", "mcp_client.py"),
    )
    .await;
    assert!(out.contains("discovery accepted"), "{out}");
    assert!(out.contains("invalid registration refused"), "{out}");
    assert!(
        out.contains("OAuthClientProvider redirected to the authorization endpoint"),
        "{out}"
    );
    assert_eq!(out.matches("read after delete refused").count(), 2, "{out}");
}

/// The MCP TypeScript SDK with a `clientMetadataUrl` (tests/interop/js/mcp-sdk-cimd.mjs): the
/// registrar's discovery makes it choose the Client ID Metadata Document, it reaches the
/// authorization redirect without registering, and the client_id it sends resolves through the
/// admin API from the document the test serves (README "Client ID Metadata Documents").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_typescript_sdk_uses_a_client_id_metadata_document_the_registrar_resolves() {
    const ADMIN: &str = "interop-admin-token-0001";
    const REDIRECT: &str = "http://localhost:47011/callback";
    let body = std::sync::Arc::new(Mutex::new(String::new()));
    let documents =
        tls::TlsServer::start(vec![("/mcp-host.json", tls::Reply::Live(body.clone()))]).await;
    let url = documents.url("/mcp-host.json");
    *body.lock().unwrap() = json!({
        "client_id": url,
        "client_name": "MCP interop CIMD host",
        "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    })
    .to_string();
    let trusting = documents.trusting(true);
    let app = helpers::spawn_app_with(|s| {
        mcp_recipe(trusting(s), "https://as.example")
            .with("admin.port", 0)
            .and_then(|s| {
                s.with(
                    "admin.tokens",
                    json!([{"name": "as", "token": ADMIN, "scopes": ["clients:read"]}]),
                )
            })
            .expect("admin settings")
    })
    .await;
    let (issuer, admin) = (app.address.clone(), app.admin.clone().expect("admin runs"));
    let document = url.clone();
    let result = tokio::task::spawn_blocking(move || {
        let dir = npm_install()?;
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("mcp-sdk-cimd.mjs"))
            .arg(&issuer)
            .current_dir(&dir)
            .env("CIMD_URL", &document)
            .env("CIMD_REDIRECT", REDIRECT)
            .env("ADMIN_URL", &admin)
            .env("ADMIN_TOKEN", ADMIN);
        run(cmd, DRIVER_TIMEOUT)
    })
    .await
    .expect("driver thread");
    app.stop().await;
    let out = result.unwrap_or_else(|e| panic!("mcp-sdk-cimd deviated:\n{e}"));
    println!("{out}");
    assert!(out.contains("[mcp-sdk-cimd] PASS"), "{out}");
    assert!(out.contains("without registering"), "{out}");
    assert_eq!(
        documents.requested(),
        vec!["/mcp-host.json".to_owned()],
        "the registrar fetches the document once"
    );
}

/// A JWK Set server for openidconnect-rs, which fetches `jwks_uri` during discovery; answers
/// every request with an empty set until the test ends.
async fn jwks_server() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let body = r#"{"keys":[]}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tcp.write_all(reply.as_bytes()).await;
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openidconnect_rs_discovers_registers_and_manages() {
    use openidconnect::core::{
        CoreApplicationType, CoreClientAuthMethod, CoreClientRegistrationRequest, CoreGrantType,
        CoreProviderMetadata, CoreRegisterErrorResponseType, CoreResponseType,
    };
    use openidconnect::registration::{ClientRegistrationError, EmptyAdditionalClientMetadata};
    use openidconnect::{ClientName, IssuerUrl, RedirectUrl, ResponseTypes};

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // What the start-up warning says: the default documents lack the authorization server's
    // members, and the library refuses them.
    let bare = helpers::spawn_app().await;
    let refused =
        CoreProviderMetadata::discover_async(IssuerUrl::new(bare.address.clone()).unwrap(), &http)
            .await;
    assert!(refused.is_err(), "discovery without AS endpoints accepted");
    bare.stop().await;

    let authorization_server = jwks_server().await;
    let app = helpers::spawn_app_with(|s| mcp_recipe(s, &authorization_server)).await;
    let issuer = IssuerUrl::new(app.address.clone()).unwrap();
    let provider = CoreProviderMetadata::discover_async(issuer, &http)
        .await
        .unwrap_or_else(|e| panic!("discover_async refused the discovery document: {e:?}"));
    let endpoint = provider
        .registration_endpoint()
        .expect("registration_endpoint in discovery")
        .clone();
    assert_eq!(endpoint.as_str(), app.endpoint);
    assert_eq!(
        provider.token_endpoint().map(|u| u.to_string()),
        Some(format!("{authorization_server}/token"))
    );

    let redirect = RedirectUrl::new("http://127.0.0.1:8765/callback".into()).unwrap();
    let registered = CoreClientRegistrationRequest::new(
        vec![redirect.clone()],
        EmptyAdditionalClientMetadata::default(),
    )
    .set_application_type(Some(CoreApplicationType::Native))
    .set_client_name(Some(
        vec![(None, ClientName::new("openidconnect-rs interop".into()))]
            .into_iter()
            .collect(),
    ))
    .set_grant_types(Some(vec![
        CoreGrantType::AuthorizationCode,
        CoreGrantType::RefreshToken,
    ]))
    .set_response_types(Some(vec![ResponseTypes::new(vec![CoreResponseType::Code])]))
    .set_token_endpoint_auth_method(Some(CoreClientAuthMethod::None))
    .register_async(&endpoint, &http)
    .await
    .unwrap_or_else(|e| panic!("register_async: {e:?}"));
    assert!(
        registered.client_secret().is_none(),
        "a public client got a secret"
    );
    assert_eq!(registered.redirect_uris(), &vec![redirect]);
    let uri = registered
        .registration_client_uri()
        .expect("registration_client_uri")
        .to_string();
    let token = registered
        .registration_access_token()
        .expect("registration_access_token")
        .secret()
        .clone();

    // RFC 7592 with plain HTTP: read, update sending back what GET returned, delete.
    let read = app.get_client(&uri, &token).await;
    assert_eq!(read.status(), 200);
    let mut body: Value = read.json().await.unwrap();
    assert_eq!(body["client_id"], registered.client_id().as_str());
    body["client_name"] = json!("openidconnect-rs interop (updated)");
    let token = body["registration_access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let updated = app.put_client(&uri, &token, &body).await;
    assert_eq!(updated.status(), 200);
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(updated["client_name"], "openidconnect-rs interop (updated)");
    let token = updated["registration_access_token"].as_str().unwrap();
    assert_eq!(app.delete_client(&uri, token).await.status(), 204);
    assert_eq!(app.get_client(&uri, token).await.status(), 401);

    // A refusal arrives as the library's typed error.
    let refused = CoreClientRegistrationRequest::new(
        vec![RedirectUrl::new("https://client.example.org/cb#fragment".into()).unwrap()],
        EmptyAdditionalClientMetadata::default(),
    )
    .register_async(&endpoint, &http)
    .await;
    match refused {
        Err(ClientRegistrationError::ServerResponse(e)) => {
            assert_eq!(
                *e.error(),
                CoreRegisterErrorResponseType::InvalidRedirectUri
            );
            assert!(e
                .error_description()
                .is_some_and(|d| d.contains("fragment")));
        }
        other => panic!("expected a typed invalid_redirect_uri error, got {other:?}"),
    }
    app.stop().await;
}
