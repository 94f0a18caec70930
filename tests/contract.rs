//! Contract fuzzing: schemathesis (PyPI, pinned with its dependencies in
//! tests/contract/requirements.txt, installed under target/ on first use by tests/support/python.rs) runs
//! against a live registrar with the checked-in `openapi.json`, `--checks all` and a fixed seed.
//! Any finding fails the test with schemathesis' report (the failing request as a curl line).
//!
//! The management operations need a client and its registration access token, which random
//! data never has; the test registers one client per operation and hands each operation its
//! `client_id` and token through schemathesis' per-operation configuration, so every operation
//! is exercised past the 401. The install is fatal when it fails: nothing is skipped.

/// The backend `helpers` starts apps on.
pub const POSTGRES: bool = false;
#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;
#[path = "support/postgres.rs"]
mod pg;
#[path = "support/python.rs"]
mod python;

use serde_json::Value;
use std::path::{Path, PathBuf};

/// The seed of every run, so a finding reproduces.
const SEED: &str = "42";
/// Examples per operation and phase: enough to reach every documented status of every
/// operation while the run stays well under a minute.
const MAX_EXAMPLES: &str = "30";

fn contract_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/contract")
}

/// schemathesis from tests/contract/requirements.txt (tests/support/python.rs); the two tests
/// share one install.
fn install() -> python::Python {
    python::install("contract", &contract_dir().join("requirements.txt"))
        .unwrap_or_else(|e| panic!("installing schemathesis: {e}"))
}

/// The schemathesis configuration: tests/contract/schemathesis.toml, plus one section per
/// operation that names a client, with a registered client's id (and, on the public side, its
/// registration access token).
async fn config(app: &helpers::TestApp, operations: &[&str], with_token: bool) -> String {
    let mut toml = std::fs::read_to_string(contract_dir().join("schemathesis.toml"))
        .expect("tests/contract/schemathesis.toml");
    for operation in operations {
        let client: Value = app.register(&helpers::web_client()).await;
        let id = client["client_id"].as_str().unwrap();
        toml.push_str(&format!(
            "\n[[operations]]\ninclude-operation-id = \"{operation}\"\nparameters = {{ client_id = \"{id}\" }}\n"
        ));
        if with_token {
            let token = client["registration_access_token"].as_str().unwrap();
            toml.push_str(&format!(
                "headers = {{ Authorization = \"Bearer {token}\" }}\n"
            ));
        }
    }
    toml
}

/// Run schemathesis on the operations `filter` selects, against `url`; returns its report and
/// whether it passed.
async fn schemathesis(
    python: python::Python,
    toml: String,
    url: String,
    filter: Vec<String>,
) -> (bool, String) {
    let work = tempfile::tempdir().unwrap();
    let config_file = work.path().join("schemathesis.toml");
    std::fs::write(&config_file, toml).unwrap();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let out = tokio::task::spawn_blocking(move || {
        python
            .script("st")
            .arg("--config-file")
            .arg(&config_file)
            .arg("run")
            .arg(&schema)
            .args(["--url", &url, "--checks", "all", "--seed", SEED])
            .args(["--max-examples", MAX_EXAMPLES, "--request-timeout", "10"])
            .args(["--no-color", "--workers", "1"])
            .args(&filter)
            // Its cache and reports stay out of the source tree.
            .current_dir(work.path())
            .output()
            .expect("schemathesis runs")
    })
    .await
    .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    (out.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_api_keeps_its_openapi_contract_under_schemathesis() {
    let st = tokio::task::spawn_blocking(install).await.expect("install");
    let app = helpers::spawn_app().await;
    let operations: Vec<String> = ["", "HydraAlias"]
        .iter()
        .flat_map(|suffix| {
            ["readClient", "updateClient", "deleteClient"].map(|op| format!("{op}{suffix}"))
        })
        .collect();
    let ops: Vec<&str> = operations.iter().map(String::as_str).collect();
    let toml = config(&app, &ops, true).await;
    let filter = vec!["--exclude-tag".to_owned(), "admin".to_owned()];
    let (passed, report) = schemathesis(st, toml, app.address.clone(), filter).await;
    app.stop().await;
    assert!(passed, "schemathesis found problems:\n{report}");
    // Every operation was reached past the 401 (see the per-operation credentials above).
    assert!(!report.contains("Authentication failed"), "{report}");
    assert!(report.contains("Tested: 16"), "{report}");
}

/// An admin token with every scope, for the admin run.
const ADMIN_TOKEN: &str = "contract-admin-token-0001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_keeps_its_openapi_contract_under_schemathesis() {
    let st = tokio::task::spawn_blocking(install).await.expect("install");
    let app = helpers::spawn_app_with(|s| {
        s.with("admin.port", 0)
            .unwrap()
            .with(
                "admin.tokens",
                serde_json::json!([{"name": "contract", "token": ADMIN_TOKEN, "scopes":
                    ["clients:read", "clients:write", "clients:authenticate", "audit:read", "webhooks:write", "metrics"]}]),
            )
            .unwrap()
    })
    .await;
    let ops = [
        "getClient",
        "patchClient",
        "deleteClient",
        "authenticateClient",
        "rotateClientSecret",
        "reissueRegistrationAccessToken",
    ];
    let mut toml = config(&app, &ops, false).await;
    toml.push_str(&format!(
        "\n[headers]\nAuthorization = \"Bearer {ADMIN_TOKEN}\"\n"
    ));
    let url = app.admin.clone().expect("admin listener");
    let filter = vec!["--include-tag".to_owned(), "admin".to_owned()];
    let (passed, report) = schemathesis(st, toml, url, filter).await;
    app.stop().await;
    assert!(passed, "schemathesis found problems:\n{report}");
    assert!(!report.contains("Authentication failed"), "{report}");
    assert!(report.contains("Tested: 14"), "{report}");
}
