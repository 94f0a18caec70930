//! `registrar audit verify` and `registrar audit list` on the data directory a SIGKILLed server
//! left behind, and `verify` failing, naming the first bad seq, on each kind of tampering.

use crate::process::Server;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

fn audit(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_registrar"))
        .arg("audit")
        .args(args)
        .env("REGISTRAR_STORAGE__DATA_DIR", dir)
        .env("REGISTRAR_SERVER__LOG", "warn")
        .env_remove("RUST_LOG")
        .output()
        .expect("the registrar binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Edit the stored trail directly, as someone with write access to the files could.
fn tamper(dir: &Path, edit: impl FnOnce(&sled::Tree)) {
    let db = sled::open(dir).unwrap();
    let tree = db.open_tree("audit").unwrap();
    edit(&tree);
    db.flush().unwrap();
}

/// One way of tampering with the audit tree.
type Edit = Box<dyn FnOnce(&sled::Tree)>;

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_passes_after_a_sigkill_and_fails_on_each_kind_of_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    for i in 0..4 {
        server.register(&format!("a{i}")).await;
    }
    server.kill();

    let (code, out, err) = audit(dir.path(), &["verify"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("4 records, chain intact, head "),
        "{out}{err}"
    );
    let (code, out, err) = audit(dir.path(), &["list", "--json", "--limit", "3"]);
    assert_eq!(code, 0, "{err}");
    let records: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["event"], "client.registered");
    assert_eq!(records[0]["source_ip"], "127.0.0.1");
    assert!(err.contains("--after 3"), "{err}");
    let (code, table, _) = audit(dir.path(), &["list", "--after", "3"]);
    assert_eq!(code, 0);
    assert_eq!(table.lines().count(), 2, "{table}");

    // Each kind of tampering, on its own copy of the store.
    let cases: Vec<(&str, u64, Edit)> = vec![
        (
            "edit",
            2,
            Box::new(|t: &sled::Tree| {
                let key = 2u64.to_be_bytes();
                let mut r: Value = serde_json::from_slice(&t.get(key).unwrap().unwrap()).unwrap();
                r["source_ip"] = json!("203.0.113.9");
                t.insert(key, serde_json::to_vec(&r).unwrap()).unwrap();
            }),
        ),
        (
            "delete",
            2,
            Box::new(|t: &sled::Tree| {
                t.remove(2u64.to_be_bytes()).unwrap();
            }),
        ),
        (
            "reorder",
            2,
            Box::new(|t: &sled::Tree| {
                let (a, b) = (2u64.to_be_bytes(), 3u64.to_be_bytes());
                let (va, vb) = (t.get(a).unwrap().unwrap(), t.get(b).unwrap().unwrap());
                t.insert(a, vb).unwrap();
                t.insert(b, va).unwrap();
            }),
        ),
        (
            "remove the oldest",
            2,
            Box::new(|t: &sled::Tree| {
                t.remove(1u64.to_be_bytes()).unwrap();
            }),
        ),
    ];
    for (what, seq, edit) in cases {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(dir.path(), copy.path());
        tamper(copy.path(), edit);
        let (code, out, err) = audit(copy.path(), &["verify"]);
        assert_eq!(code, 1, "{what}: {out}{err}");
        assert!(
            err.contains(&format!("audit chain broken at seq {seq}")),
            "{what}: {err}"
        );
    }
    let (code, _, err) = audit(dir.path(), &["list", "--limit", "0"]);
    assert_eq!(code, 2, "{err}");
}
