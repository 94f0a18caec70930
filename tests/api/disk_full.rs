//! Disk full: the data directory on a tiny tmpfs. Writes get 503 with a JSON error, reads keep
//! showing the last durable state, and once space returns the store reopens itself.
//!
//! Mounting needs root (or CAP_SYS_ADMIN); where it is refused the test fails and says why,
//! rather than passing without having run (the suite runs as root in CI).

use crate::helpers::*;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A tmpfs mounted on a temporary directory; unmounted (lazily, in case something still holds a
/// file) on drop.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        Ok(Self {
            path: dir.path().to_path_buf(),
            _dir: dir,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Write zeros into `path` until the filesystem refuses; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let mut written = 0u64;
    for chunk in [1 << 20, 64 << 10, 4 << 10, 512] {
        let buf = vec![0u8; chunk];
        while file.write_all(&buf).is_ok() {
            written += chunk as u64;
        }
    }
    let _ = file.sync_all();
    written
}

fn uri(c: &Value) -> String {
    c["registration_client_uri"].as_str().unwrap().to_owned()
}
fn rat(c: &Value) -> String {
    c["registration_access_token"].as_str().unwrap().to_owned()
}

async fn readyz(app: &TestApp) -> reqwest::Response {
    app.client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_healthy_store_reports_ready() {
    let app = spawn_app().await;
    let r = readyz(&app).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, json!({"status": "ready"}));
}

#[tokio::test]
async fn a_full_disk_refuses_writes_with_503_serves_reads_and_recovers_when_space_returns() {
    let fs = match Tmpfs::mount("24m") {
        Ok(fs) => fs,
        Err(why) => panic!(
            "the disk-full test needs a tmpfs and could not mount one ({why}); run the tests as root or with CAP_SYS_ADMIN"
        ),
    };
    let data = fs.path.join("data");
    let data_str = data.to_str().unwrap().to_owned();
    let app = spawn_app_with(|s| s.with("storage.data_dir", data_str.clone()).unwrap()).await;
    assert_eq!(readyz(&app).await.status(), 200);

    // Acknowledged state before the disk fills: (client, its current token, its name).
    let mut clients: Vec<(Value, String, String)> = Vec::new();
    for i in 0..5 {
        let mut body = web_client();
        body["client_name"] = json!(format!("before-{i}"));
        let c = app.register(&body).await;
        let token = rat(&c);
        clients.push((c, token, format!("before-{i}")));
    }

    let filler = fs.path.join("filler");
    let filled = fill(&filler);
    assert!(filled > 0, "the filler wrote nothing");

    // Update the first client until the store notices the disk is full. Updates acknowledged
    // before that are durable and move the client's state forward.
    let mut refused = None;
    for attempt in 0..200 {
        let (c, token, _) = &clients[0];
        let mut update = app
            .get_client(&uri(c), token)
            .await
            .json::<Value>()
            .await
            .unwrap();
        let name = format!("during-{attempt}");
        update["client_name"] = json!(name);
        let r = app.put_client(&uri(c), token, &update).await;
        match r.status().as_u16() {
            200 => {
                let body: Value = r.json().await.unwrap();
                clients[0].1 = rat(&body);
                clients[0].2 = name;
            }
            503 => {
                assert_eq!(r.headers()["retry-after"], "5");
                refused = Some(assert_error(r, 503, "temporarily_unavailable").await);
                break;
            }
            other => panic!(
                "update answered {other} on a full disk: {}",
                r.text().await.unwrap()
            ),
        }
    }
    let description = refused.expect("no write was ever refused on a full disk");
    assert!(description.contains("unavailable"), "{description}");

    // While full: every kind of write is refused with the same JSON 503 ...
    assert_error(
        app.post(&web_client()).await,
        503,
        "temporarily_unavailable",
    )
    .await;
    let (c1, t1, _) = &clients[1];
    let mut update = app
        .get_client(&uri(c1), t1)
        .await
        .json::<Value>()
        .await
        .unwrap();
    update["client_name"] = json!("never-stored");
    assert_error(
        app.put_client(&uri(c1), t1, &update).await,
        503,
        "temporarily_unavailable",
    )
    .await;
    assert_error(
        app.delete_client(&uri(c1), t1).await,
        503,
        "temporarily_unavailable",
    )
    .await;
    // ... readiness says so, liveness does not ...
    let r = readyz(&app).await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "temporarily_unavailable");
    let r = app.healthz().await;
    assert_eq!(r.status(), 200);
    // ... and reads show the last acknowledged state, including for the client whose update was
    // refused after it reached sled's memory: its old token still works, its old name is shown.
    for (c, token, name) in &clients {
        let r = app.get_client(&uri(c), token).await;
        assert_eq!(
            r.status(),
            200,
            "read of {} while the disk is full",
            c["client_id"]
        );
        let read: Value = r.json().await.unwrap();
        assert_eq!(read["client_name"], json!(name));
    }

    // Space returns: the store reopens by itself, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while readyz(&app).await.status() != 200 {
        assert!(
            Instant::now() < deadline,
            "the store did not recover after space returned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh = app.register(&web_client()).await;
    assert_eq!(
        app.get_client(&uri(&fresh), &rat(&fresh)).await.status(),
        200
    );
    for (i, (c, token, name)) in clients.iter().enumerate() {
        let r = app.get_client(&uri(c), token).await;
        if i == 0 && r.status() == 401 {
            // The refused update's bytes may have reached the disk before the failure (like a
            // request in flight at a crash): then the new state is whole and the old token dead.
            continue;
        }
        assert_eq!(r.status(), 200, "read of {} after recovery", c["client_id"]);
        let read: Value = r.json().await.unwrap();
        assert_eq!(read["client_name"], json!(name));
        let mut update = read.clone();
        update["client_name"] = json!(format!("after-{i}"));
        let r = app.put_client(&uri(c), token, &update).await;
        assert_eq!(r.status(), 200, "update after recovery");
    }

    // Nothing half-written: every record decodes and the token index agrees with the records.
    app.stop().await;
    let mut opened = registrar::store::SledStore::open(&data, 1 << 20);
    for _ in 0..100 {
        if opened.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        opened = registrar::store::SledStore::open(&data, 1 << 20);
    }
    let store = opened.unwrap();
    assert_eq!(store.verify().unwrap(), clients.len() + 1);
}
