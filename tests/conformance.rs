//! The conformance suite (conformance/cases) against the registrar started on a free port: every
//! MUST case passes (except the ones listed in `WAITING_ON_METADATA`, which must fail until fixed), SHOULD cases are reported. Regenerates conformance/MATRIX.md.

/// The backend `helpers` starts apps on.
pub const POSTGRES: bool = false;
#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;
#[path = "support/postgres.rs"]
mod pg;
#[allow(dead_code)]
#[path = "api/tls.rs"]
mod tls;

use registrar::conformance::{self, report, DocumentHost, Level, Outcome, Target};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// MUST cases the registrar is known to fail (empty: every MUST passes). Each entry would be a bug
/// to fix, not an exemption: the test fails as soon as a listed case passes, so the list cannot
/// go stale.
const WAITING_ON_METADATA: &[&str] = &[];

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Run every case against `endpoint`; panics if a MUST case fails that is not waiting on
/// metadata, or if a waiting one passes.
async fn run_suite(endpoint: &str) -> Vec<conformance::CaseResult> {
    let target = Target {
        registration_endpoint: endpoint.to_owned(),
        ..Target::default()
    };
    run_cases(&target, |_| true).await
}

/// Run the cases `select` picks against `target`, with the same assertions as `run_suite`.
async fn run_cases(
    target: &Target,
    select: impl Fn(&conformance::Case) -> bool,
) -> Vec<conformance::CaseResult> {
    let cases = conformance::load_dir(&manifest().join("conformance/cases")).expect("cases load");
    assert!(
        cases.len() >= 80,
        "the suite must cover at least 80 requirements, has {}",
        cases.len()
    );
    let cases: Vec<conformance::Case> = cases.into_iter().filter(|c| select(c)).collect();
    let results = conformance::run(target, &cases)
        .await
        .expect("runner starts");
    for r in &results {
        println!("{}", report::line(r, true));
    }
    let summary = conformance::Summary::of(&results);
    println!("\n{}", summary.lines());

    let failing_musts: Vec<&str> = results
        .iter()
        .filter(|r| r.case.level == Level::Must && matches!(r.outcome, Outcome::Fail(_)))
        .map(|r| r.case.id.as_str())
        .collect();
    let unexpected: Vec<&&str> = failing_musts
        .iter()
        .filter(|id| !WAITING_ON_METADATA.contains(id))
        .collect();
    assert!(
        unexpected.is_empty(),
        "MUST cases failed (see the lines above): {unexpected:?}"
    );
    let now_passing: Vec<&&str> = WAITING_ON_METADATA
        .iter()
        .filter(|id| !failing_musts.contains(id))
        .collect();
    assert!(
        now_passing.is_empty(),
        "these cases pass now; remove them from WAITING_ON_METADATA in tests/conformance.rs: {now_passing:?}"
    );
    results
}

/// The local HTTPS server as the runner's document host (client ID metadata documents).
struct Documents(tls::TlsServer);

impl DocumentHost for Documents {
    fn base_url(&self) -> String {
        self.0.url("")
    }

    fn publish(&self, path: &str, body: String) {
        self.0
            .route(path, tls::Reply::Live(Arc::new(Mutex::new(body))));
    }
}

/// The admin token the CIMD cases look clients up with.
const ADMIN_TOKEN: &str = "conformance-admin-token-0001";

/// Whether a case is about client ID metadata documents (run against [`cimd_target`]).
fn is_cimd(case: &conformance::Case) -> bool {
    case.requires.iter().any(|r| r == "metadata_documents")
}

/// A registrar with default settings plus what the CIMD cases need: an admin token, and trust
/// in (and reach to, on loopback) a local HTTPS server that serves the cases' documents.
async fn cimd_target() -> (helpers::TestApp, Target) {
    let documents = Documents(tls::TlsServer::start(vec![]).await);
    let app = documents
        .0
        .app_with(true, |s| {
            s.with("admin.port", 0)
                .unwrap()
                .with(
                    "admin.tokens",
                    vec![serde_json::json!({"name": "conformance", "token": ADMIN_TOKEN, "scopes": ["clients:read"]})],
                )
                .unwrap()
        })
        .await;
    let mut target = Target {
        registration_endpoint: app.endpoint.clone(),
        documents: Some(Arc::new(documents)),
        ..Target::default()
    };
    target.provided.insert(
        "admin".into(),
        app.admin.clone().expect("admin listener runs"),
    );
    target
        .provided
        .insert("admin_token".into(), ADMIN_TOKEN.into());
    (app, target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_must_case_passes_at_the_hydra_sdk_path() {
    let app = helpers::spawn_app().await;
    run_suite(&format!("{}/oauth2/register", app.address)).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_must_case_passes_against_the_registrar() {
    let app = helpers::spawn_app().await;
    let mut results = run_suite(&app.endpoint).await;
    // The CIMD cases need a document host and the admin API: their results replace the skips.
    let (cimd_app, cimd) = cimd_target().await;
    let resolved = run_cases(&cimd, is_cimd).await;
    for r in &mut results {
        if let Some(better) = resolved.iter().find(|c| c.case.id == r.case.id) {
            *r = better.clone();
        }
    }
    cimd_app.stop().await;

    // The matrix only changes when a result changes (no ports, times or random values in it),
    // so rewriting it here leaves the committed file untouched unless something really moved.
    let matrix = conformance::markdown(
        "Conformance matrix: registrar",
        "Every requirement of `conformance/cases/` replayed against the registrar with its default \
         configuration (`config/default.toml`) plus the settings of every black-box test \
         (`tests/api/helpers.rs`: minimum argon2 cost, rate limits off, `fetch.fetch_jwks_uri = \
         false`), started on a free port by `tests/conformance.rs`, \
         which rewrites this file when a result changes. Cases that need a capability the test \
         does not provide (an https sector document, an initial access token) are skipped. \
         The client ID metadata document cases run against the same configuration plus an admin \
         token and a local HTTPS server that serves their documents (`fetch.extra_root_ca_file`, \
         `fetch.allow_private_addresses` for its loopback address). \
         Run the same cases against any server with \
         `cargo run --bin conformance -- --registration-endpoint URL`.",
        &results,
    );
    let path = manifest().join("conformance/MATRIX.md");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(matrix.as_str()) {
        // A read-only checkout must not fail the suite: the results were asserted above.
        match std::fs::write(&path, &matrix) {
            Ok(()) => println!("conformance/MATRIX.md updated"),
            Err(e) => eprintln!("conformance/MATRIX.md is stale and cannot be rewritten: {e}"),
        }
    }
    app.stop().await;
}

/// The suite with the whole client lifecycle switched on: RAT grace (the default), a sweeper
/// running every second (with TTLs far longer than the run, so it only competes for the store),
/// and secret renewal on every PUT (`client_secret_renew_before_secs` = the lifetime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_must_case_passes_with_the_lifecycle_on() {
    let app = helpers::spawn_app_with(|s| {
        s.with("lifecycle.unused_client_ttl_secs", 86_400)
            .unwrap()
            .with("lifecycle.inactive_client_ttl_secs", 86_400)
            .unwrap()
            .with("lifecycle.sweep_interval_secs", 1)
            .unwrap()
            .with("credentials.client_secret_lifetime_secs", 3600)
            .unwrap()
            .with("credentials.client_secret_renew_before_secs", 3600)
            .unwrap()
    })
    .await;
    assert!(app.sweeper.is_some());
    let results = run_suite(&app.endpoint).await;
    let renewal = results
        .iter()
        .find(|r| r.case.id == "update-new-secret-comes-with-expiry")
        .expect("the renewal case runs");
    assert!(
        matches!(renewal.outcome, Outcome::Pass),
        "{:?}",
        renewal.outcome
    );
    app.stop().await;
}

/// The same cases on the PostgreSQL backend (a database of the private test cluster).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_must_case_passes_on_postgres() {
    let url = pg::shared().new_database();
    let app = helpers::spawn_app_with(|s| helpers::with_postgres(s, &url)).await;
    run_suite(&app.endpoint).await;
    app.stop().await;
}

/// The cases the default run skips (they need an initial access token or an https sector
/// document), against a registrar set up to provide both: `access.mode = "token"` with a static
/// token, and a local HTTPS server (CA trusted through `fetch.extra_root_ca_file`) serving one
/// sector document that lists the cases' redirect URI and one that does not.
/// Every client ID metadata document case runs (none skipped) and its MUSTs pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_document_cases_pass_with_a_document_host() {
    let (app, target) = cimd_target().await;
    let results = run_cases(&target, is_cimd).await;
    assert!(results.len() >= 15, "{} CIMD cases", results.len());
    let not_passed: Vec<(&str, &Outcome)> = results
        .iter()
        .filter(|r| r.outcome != Outcome::Pass)
        .map(|r| (r.case.id.as_str(), &r.outcome))
        .collect();
    assert!(not_passed.is_empty(), "{not_passed:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_that_need_setup_pass_when_it_is_provided() {
    const TOKEN: &str = "conformance-initial-access-token";
    let sector = tls::TlsServer::start(vec![
        (
            "/sector.json",
            tls::Reply::Json(r#"["https://client.example.org/cb"]"#.into()),
        ),
        (
            "/mismatch.json",
            tls::Reply::Json(r#"["https://other.example.org/cb"]"#.into()),
        ),
    ])
    .await;
    let app = sector
        .app_with(true, |s| {
            s.with("access.mode", "token")
                .unwrap()
                .with(
                    "access.static_tokens",
                    vec![serde_json::json!({"token": TOKEN})],
                )
                .unwrap()
        })
        .await;
    let mut target = Target {
        registration_endpoint: app.endpoint.clone(),
        initial_access_token: Some(TOKEN.into()),
        ..Target::default()
    };
    target
        .provided
        .insert("sector_identifier_uri".into(), sector.url("/sector.json"));
    target.provided.insert(
        "sector_identifier_uri_mismatch".into(),
        sector.url("/mismatch.json"),
    );
    let results = run_cases(&target, |c| !c.requires.is_empty() && !is_cimd(c)).await;
    assert!(results.len() >= 5, "{} cases need setup", results.len());
    let skipped: Vec<&str> = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Skip(_)))
        .map(|r| r.case.id.as_str())
        .collect();
    assert!(skipped.is_empty(), "still skipped: {skipped:?}");
    app.stop().await;
}
