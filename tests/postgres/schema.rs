//! `registrar migrate` and the schema check at start.

use crate::helpers::*;
use crate::{pg, pg_settings};
use registrar::store::PostgresStore;

#[tokio::test]
async fn migrate_is_idempotent_and_records_what_it_applied() {
    let url = pg::shared().new_database();
    let store = PostgresStore::connect(&pg_settings(&url)).await.unwrap();
    let first = store.migrate(7).await.unwrap();
    assert_eq!(
        first.len(),
        registrar::store::postgres::migrate::MIGRATIONS.len()
    );
    assert!(store.migrate(8).await.unwrap().is_empty(), "second run");
    store.check_schema().await.unwrap();
}

#[tokio::test]
async fn the_server_refuses_an_unmigrated_database_naming_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let url = pg::shared().new_database();
    let settings = with_postgres(test_settings(dir.path()), &url)
        .with("storage.postgres.migrate_on_start", false)
        .unwrap();
    let err = registrar::startup::Application::build(settings)
        .await
        .err()
        .expect("must not start");
    assert!(err.to_string().contains("registrar migrate"), "{err}");
}

#[tokio::test]
async fn the_server_refuses_a_schema_newer_than_it_knows() {
    let url = pg::shared().new_database();
    let store = PostgresStore::connect(&pg_settings(&url)).await.unwrap();
    store.migrate(0).await.unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "INSERT INTO registrar_schema_migrations (version, name, applied_at) \
             VALUES (9999, '9999_future.sql', 0)",
        )
        .await
        .unwrap();
    let err = store.check_schema().await.unwrap_err().to_string();
    assert!(err.contains("newer than this registrar knows"), "{err}");
    assert!(store.migrate(0).await.is_err(), "migrate refuses too");
}

#[test]
fn the_binary_fails_with_one_clear_line_when_the_database_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_registrar"))
        .env("REGISTRAR_SERVER__PORT", "0")
        .env("REGISTRAR_STORAGE__DATA_DIR", dir.path())
        .env("REGISTRAR_STORAGE__BACKEND", "postgres")
        .env(
            "REGISTRAR_STORAGE__POSTGRES__URL",
            format!("postgres://u:secret-pw@127.0.0.1:{port}/db"),
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert!(!stderr.contains("secret-pw"), "password leaked: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn migrate_without_a_database_backend_says_so() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_registrar"))
        .arg("migrate")
        .env("REGISTRAR_STORAGE__BACKEND", "sled")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("postgres"), "{stderr}");
}

#[test]
fn the_migrate_command_migrates() {
    let url = pg::shared().new_database();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_registrar"))
            .arg("migrate")
            .env("REGISTRAR_STORAGE__BACKEND", "postgres")
            .env("REGISTRAR_STORAGE__POSTGRES__URL", &url)
            .output()
            .unwrap()
    };
    let first = run();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stderr).contains("applied"));
    let second = run();
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already current"));
}
