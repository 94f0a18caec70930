//! `registrar export` / `registrar import`: a populated sled store moved to PostgreSQL and back,
//! through the binary; every client still reads with its token and its secret still verifies.

use crate::helpers::*;
use crate::pg;
use serde_json::{json, Value};
use std::process::{Command, Output, Stdio};

const TOKEN: &str = "static-initial-access-token-transfer-0123";

fn tokens_mode(s: registrar::settings::Settings) -> registrar::settings::Settings {
    s.with("access.mode", "token")
        .unwrap()
        .with(
            "access.static_tokens",
            json!([{"token": TOKEN, "max_uses": 4}]),
        )
        .unwrap()
}

/// The binary on a sled directory or (with `url`) a PostgreSQL database.
fn registrar(
    args: &[&str],
    dir: &std::path::Path,
    url: Option<&str>,
    stdin: Option<&[u8]>,
) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_registrar"));
    cmd.args(args)
        .env("REGISTRAR_STORAGE__DATA_DIR", dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(url) = url {
        cmd.env("REGISTRAR_STORAGE__BACKEND", "postgres")
            .env("REGISTRAR_STORAGE__POSTGRES__URL", url);
    }
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            input.write_all(bytes).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "registrar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

async fn post(app: &TestApp, body: &Value) -> reqwest::Response {
    app.client
        .post(&app.endpoint)
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Every client reads back whole with its token; a PUT that sends the secret back proves the
/// secret's hash moved intact (RFC 7592 §2.2: a wrong secret is refused).
async fn all_read_back(app: &TestApp, clients: &[Value]) {
    for c in clients {
        let uri = format!("{}/{}", app.endpoint, c["client_id"].as_str().unwrap());
        let token = c["registration_access_token"].as_str().unwrap();
        let r = app.get_client(&uri, token).await;
        assert_eq!(r.status(), 200, "{}", c["client_id"]);
        let read: Value = r.json().await.unwrap();
        assert_eq!(read["client_name"], c["client_name"]);
        assert_eq!(read["client_id_issued_at"], c["client_id_issued_at"]);
        if let Some(secret) = c.get("client_secret") {
            let mut body = web_client();
            body["client_id"] = c["client_id"].clone();
            body["client_name"] = c["client_name"].clone();
            body["client_secret"] = secret.clone();
            let r = app.put_client(&uri, token, &body).await;
            assert_eq!(r.status(), 200, "secret of {}", c["client_id"]);
        }
    }
}

#[tokio::test]
async fn a_sled_store_moves_to_postgres_and_back_with_every_token_and_counter() {
    // Rotation off, so the secret check above leaves each client's token as it was.
    let tweak = |s: registrar::settings::Settings| {
        tokens_mode(s)
            .with("registration.rotate_rat_on_update", false)
            .unwrap()
    };
    let sled_app = spawn_on_sled_in(tempfile::tempdir().unwrap(), tweak).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut body = web_client();
        body["client_name"] = format!("client {i}").into();
        if i == 0 {
            body["token_endpoint_auth_method"] = "client_secret_basic".into();
        }
        let r = post(&sled_app, &body).await;
        assert_eq!(r.status(), 201);
        clients.push(r.json::<Value>().await.unwrap());
    }
    assert!(clients[0].get("client_secret").is_some());
    let sled_dir = sled_app.stop().await;

    // sled -> PostgreSQL
    let exported = registrar(&["export"], sled_dir.path(), None, None).stdout;
    let text = String::from_utf8(exported.clone()).unwrap();
    assert!(
        text.lines().next().unwrap().contains("\"server_key\""),
        "{text}"
    );
    assert_eq!(text.matches("\"type\":\"client\"").count(), 3);
    let url = pg::shared().new_database();
    let pg_dir = tempfile::tempdir().unwrap();
    registrar(&["migrate"], pg_dir.path(), Some(&url), None);
    registrar(&["import"], pg_dir.path(), Some(&url), Some(&exported));
    // Idempotent: the same import again changes nothing and succeeds.
    let again = registrar(&["import"], pg_dir.path(), Some(&url), Some(&exported));
    assert!(String::from_utf8_lossy(&again.stderr).contains("3 unchanged"));

    std::fs::write(pg_dir.path().join("test-database-url"), &url).unwrap();
    let pg_app = spawn_in(pg_dir, tweak).await;
    all_read_back(&pg_app, &clients).await;
    // The token's use count came along: 3 of 4 uses were spent on sled.
    assert_eq!(post(&pg_app, &web_client()).await.status(), 201);
    assert_eq!(post(&pg_app, &web_client()).await.status(), 401);
    let pg_dir = pg_app.stop().await;

    // PostgreSQL -> a new sled store
    let exported = registrar(&["export"], pg_dir.path(), Some(&url), None).stdout;
    let back_dir = tempfile::tempdir().unwrap();
    registrar(&["import"], back_dir.path(), None, Some(&exported));
    let back = spawn_on_sled_in(back_dir, tweak).await;
    all_read_back(&back, &clients).await;
    assert_eq!(
        post(&back, &web_client()).await.status(),
        401,
        "uses still spent"
    );
}

#[tokio::test]
async fn import_refuses_a_changed_client_unless_replace_is_given() {
    let app = spawn_on_sled_in(tempfile::tempdir().unwrap(), |s| s).await;
    let c = app.register(&web_client()).await;
    let dir = app.stop().await;
    let exported = registrar(&["export"], dir.path(), None, None).stdout;
    let mut changed = String::from_utf8(exported.clone()).unwrap();
    changed = changed.replace("\"client_name\":\"Example\"", "\"client_name\":\"Changed\"");
    assert_ne!(changed.as_bytes(), exported.as_slice());

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_registrar"));
    let file = dir.path().join("changed.jsonl");
    std::fs::write(&file, &changed).unwrap();
    let out = cmd
        .args(["import", file.to_str().unwrap()])
        .env("REGISTRAR_STORAGE__DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "a changed client must be refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--replace"), "{stderr}");

    registrar(
        &["import", "--replace", file.to_str().unwrap()],
        dir.path(),
        None,
        None,
    );
    let app = spawn_on_sled_in(dir, |s| s).await;
    let uri = format!("{}/{}", app.endpoint, c["client_id"].as_str().unwrap());
    let read: Value = app
        .get_client(&uri, c["registration_access_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read["client_name"], "Changed");
}
