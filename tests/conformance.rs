//! The conformance suite (conformance/cases) against the registrar started on a free port: every
//! MUST case passes (except the ones listed in `WAITING_ON_METADATA`, which must fail until fixed), SHOULD cases are reported. Regenerates conformance/MATRIX.md.

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "api/tls.rs"]
mod tls;

use registrar::conformance::{self, report, Level, Outcome, Target};
use std::path::Path;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_must_case_passes_at_the_hydra_sdk_path() {
    let app = helpers::spawn_app().await;
    run_suite(&format!("{}/oauth2/register", app.address)).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_must_case_passes_against_the_registrar() {
    let app = helpers::spawn_app().await;
    let results = run_suite(&app.endpoint).await;

    // The matrix only changes when a result changes (no ports, times or random values in it),
    // so rewriting it here leaves the committed file untouched unless something really moved.
    let matrix = conformance::markdown(
        "Conformance matrix: registrar",
        "Every requirement of `conformance/cases/` replayed against the registrar with its default \
         configuration (`config/default.toml`), started on a free port by `tests/conformance.rs`, \
         which rewrites this file when a result changes. Cases that need a capability the test \
         does not provide (an https sector document, an initial access token) are skipped. \
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

/// The cases the default run skips (they need an initial access token or an https sector
/// document), against a registrar set up to provide both: `access.mode = "token"` with a static
/// token, and a local HTTPS server (CA trusted through `fetch.extra_root_ca_file`) serving one
/// sector document that lists the cases' redirect URI and one that does not.
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
    let results = run_cases(&target, |c| !c.requires.is_empty()).await;
    assert!(results.len() >= 5, "{} cases need setup", results.len());
    let skipped: Vec<&str> = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Skip(_)))
        .map(|r| r.case.id.as_str())
        .collect();
    assert!(skipped.is_empty(), "still skipped: {skipped:?}");
    app.stop().await;
}
