//! Regression tests for the attack review of issue #12: one block per finding.

use crate::helpers::*;
#[allow(unused_imports)]
use serde_json::{json, Value};

// Item 14: the data directory is private to the server's user.

#[cfg(unix)]
#[tokio::test]
async fn the_data_directory_is_0700_and_its_files_0600() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let app = spawn_app_with(|s| s.with("storage.data_dir", data.to_str().unwrap()).unwrap()).await;
    app.register(&web_client()).await;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "{}", data.display());
    let mut files = 0;
    let mut stack = vec![data.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                stack.push(path);
            } else {
                files += 1;
                assert_eq!(mode(&path), 0o600, "{}", path.display());
            }
        }
    }
    assert!(
        files >= 2,
        "expected sled's files and server.key, found {files}"
    );
}
