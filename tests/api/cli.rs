//! `registrar clients ...` against a running server's admin API.

use crate::admin::{admin_app, ALL, READ};
use crate::helpers::{web_client, TestApp};
use serde_json::{json, Value};

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Run the binary off the runtime's thread (the server under test runs on it).
async fn registrar(app: &TestApp, token: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let admin = app.admin.clone().unwrap();
    let token = token.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_registrar"))
            .args(&args)
            .env("REGISTRAR_ADMIN_URL", admin)
            .env("REGISTRAR_ADMIN_TOKEN", token)
            .env_remove("REGISTRAR_CLIENT_SECRET")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

async fn authenticate(app: &TestApp, id: &str, secret: &str) -> Output {
    let args = ["clients", "authenticate", id, "--secret", secret];
    registrar(app, ALL, &args, None).await
}

async fn registrar_json(app: &TestApp, token: &str, args: &[&str]) -> Value {
    json_of(&registrar(app, token, args, None).await)
}

fn json_of(out: &Output) -> Value {
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// `registrar audit --help | head -c 0`: a printing command whose reader has gone ends quietly
/// (SIGPIPE, as Unix tools do), never with a panic and a backtrace.
#[test]
fn a_printing_command_ends_quietly_when_its_reader_goes_away() {
    use std::os::unix::process::ExitStatusExt;
    for args in [&["audit", "--help"][..], &["clients", "--help"][..]] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_registrar"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Close the read end before the child has printed anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
        assert!(
            out.status.success() || out.status.signal() == Some(libc_sigpipe()),
            "{args:?}: {:?} {stderr}",
            out.status
        );
    }
}

/// SIGPIPE's number on Linux (13), without a libc dependency in the tests.
fn libc_sigpipe() -> i32 {
    13
}

#[test]
fn help_lists_every_subcommand() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_registrar"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["serve", "clients"] {
        assert!(text.contains(sub), "{sub} in {text}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_registrar"))
        .args(["clients", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in [
        "list",
        "show",
        "create",
        "disable",
        "enable",
        "delete",
        "prune",
        "authenticate",
    ] {
        assert!(text.contains(sub), "{sub} in {text}");
    }
}

#[tokio::test]
async fn list_and_show_print_a_table_or_json() {
    let app = admin_app().await;
    let a = app.register(&web_client()).await;
    let b = app
        .register(&json!({"redirect_uris": ["https://a.example/cb"], "client_name": "Other"}))
        .await;
    let out = registrar(&app, READ, &["clients", "list"], None).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("CLIENT_ID"), "{}", out.stdout);
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    for c in [&a, &b] {
        assert!(out.stdout.contains(c["client_id"].as_str().unwrap()));
    }
    assert!(out.stdout.contains("Example") && out.stdout.contains("anonymous"));

    let listed = registrar_json(
        &app,
        READ,
        &["clients", "list", "--json", "--client-name", "Oth"],
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["client_id"], b["client_id"]);
    // --limit caps the total the CLI pages through.
    let limited = registrar_json(&app, READ, &["clients", "list", "--json", "--limit", "1"]).await;
    assert_eq!(limited.as_array().unwrap().len(), 1);

    let id = a["client_id"].as_str().unwrap();
    let shown = registrar_json(&app, READ, &["clients", "show", id, "--json"]).await;
    assert_eq!(shown["client_id"], id);
    let out = registrar(&app, READ, &["clients", "show", id], None).await;
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("client_name") && l.ends_with("Example")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("last_used_at") && l.ends_with('-')),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn create_disable_enable_authenticate_delete() {
    let app = admin_app().await;
    let created = json_of(
        &registrar(
            &app,
            ALL,
            &[
                "clients",
                "create",
                "--json",
                r#"{"redirect_uris": ["https://a.example/cb"], "client_name": "CLI"}"#,
            ],
            None,
        )
        .await,
    );
    assert_eq!(created["source"], "admin");
    let id = created["client_id"].as_str().unwrap();
    let secret = created["client_secret"].as_str().unwrap();

    let out = registrar(&app, ALL, &["clients", "authenticate", id], Some(secret)).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("authenticated"));
    let out = authenticate(&app, id, "wrong").await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("invalid_client"), "{}", out.stderr);

    let out = registrar(&app, ALL, &["clients", "disable", id], None).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = authenticate(&app, id, secret).await;
    assert_eq!(out.code, 1, "a disabled client does not authenticate");
    let view = registrar_json(&app, ALL, &["clients", "enable", id, "--json"]).await;
    assert_eq!(view["disabled"], false);
    let out = authenticate(&app, id, secret).await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    let out = registrar(&app, ALL, &["clients", "delete", id], None).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = registrar(&app, ALL, &["clients", "show", id], None).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("not_found"), "{}", out.stderr);
}

#[tokio::test]
async fn prune_counts_with_dry_run_then_deletes_the_matches() {
    let app = admin_app().await;
    for _ in 0..3 {
        app.register(&json!({"redirect_uris": ["https://a.example/cb"], "client_name": "stale"}))
            .await;
    }
    let keep = app.register(&web_client()).await;
    let out = registrar(
        &app,
        ALL,
        &["clients", "prune", "--client-name", "stale", "--dry-run"],
        None,
    )
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "would delete 3");
    let out = registrar(
        &app,
        ALL,
        &[
            "clients",
            "prune",
            "--client-name",
            "stale",
            "--unused-for-secs",
            "0",
        ],
        None,
    )
    .await;
    assert_eq!(out.stdout.trim(), "deleted 3", "{}", out.stderr);
    let left = registrar_json(&app, ALL, &["clients", "list", "--json"]).await;
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["client_id"], keep["client_id"]);
    let out = registrar(&app, ALL, &["clients", "prune"], None).await;
    assert_eq!(out.code, 2, "prune without a filter is a usage error");
}

#[tokio::test]
async fn a_token_without_the_scope_is_reported() {
    let app = admin_app().await;
    let out = registrar(
        &app,
        READ,
        &["clients", "prune", "--tier", "anonymous"],
        None,
    )
    .await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("insufficient_scope"), "{}", out.stderr);
    let out = registrar(&app, "not-a-token", &["clients", "list"], None).await;
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("401"), "{}", out.stderr);
}

#[tokio::test]
async fn audit_verify_checks_a_running_servers_chain_through_the_admin_api() {
    let app = admin_app().await;
    for _ in 0..3 {
        app.register(&web_client()).await;
    }
    let admin = app.admin.clone().unwrap();
    let args = ["audit", "verify", "--admin-url", admin.as_str()];
    let out = registrar(&app, ALL, &args, None).await;
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    let r = crate::admin::call(&app, reqwest::Method::GET, "/admin/audit", Some(ALL), None).await;
    let page: Value = r.json().await.unwrap();
    let head = page["records"][2]["hash"].as_str().unwrap();
    assert_eq!(
        out.stdout.trim(),
        format!("3 records, chain intact, head {head}")
    );
    // A token without audit:read: exit 1 with the API's refusal.
    let out = registrar(&app, READ, &args, None).await;
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains("insufficient_scope"), "{}", out.stderr);
    // No token at all: a usage error.
    let out = registrar(&app, "", &args, None).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("REGISTRAR_ADMIN_TOKEN"),
        "{}",
        out.stderr
    );
}
