//! A damaged data directory stops start-up with a clear message, never a panic or a silent start.

use crate::process::Server;
use std::process::Command;

#[tokio::test]
async fn a_corrupted_store_configuration_stops_startup_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let r = reqwest::Client::new()
        .post(&server.endpoint)
        .json(&serde_json::json!({"redirect_uris": ["https://client.example.org/cb"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    server.kill();

    // Overwrite the start of the store's configuration file (its checksum no longer matches).
    let conf = dir.path().join("conf");
    let mut bytes = std::fs::read(&conf).expect("the store has a conf file");
    for b in bytes.iter_mut().take(8) {
        *b ^= 0xff;
    }
    std::fs::write(&conf, bytes).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_registrar"))
        .env("REGISTRAR_SERVER__PORT", "0")
        .env("REGISTRAR_ISSUER", "")
        .env("REGISTRAR_STORAGE__DATA_DIR", dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "started on a corrupted store");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot open the store"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
