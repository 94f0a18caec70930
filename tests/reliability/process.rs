//! Starting the real binary and learning its port from its start-up log line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `registrar` process.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:{port}`.
    pub address: String,
    /// The registration endpoint.
    pub endpoint: String,
}

impl Server {
    /// Start the binary on `dir` with port 0 and cheap argon2; extra `REGISTRAR_*` settings in
    /// `env`. Waits for the "registration endpoint:" log line, which carries the bound port.
    pub fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_registrar"));
        command
            .env("REGISTRAR_SERVER__PORT", "0")
            .env("REGISTRAR_ISSUER", "")
            .env("REGISTRAR_STORAGE__DATA_DIR", dir)
            .env("REGISTRAR_CREDENTIALS__ARGON2_MEMORY_KIB", "64")
            .env("REGISTRAR_CREDENTIALS__ARGON2_ITERATIONS", "1")
            .env("REGISTRAR_SERVER__LOG", "info")
            // Load from one loopback source: the default per-source limit would answer 429.
            .env("REGISTRAR_RATE_LIMIT__ENABLED", "false")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("the registrar binary starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Keep draining stderr for the life of the process, or its log writes would block.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("registration endpoint: ") {
                    let rest = &line[at + "registration endpoint: ".len()..];
                    let url: String = rest
                        .chars()
                        .take_while(|c| !c.is_whitespace() && !c.is_control())
                        .collect();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url);
                    }
                } else if line.contains("cannot start") || line.contains("panicked") {
                    eprintln!("registrar: {line}");
                }
            }
        });
        let endpoint = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                panic!("the registrar did not report its endpoint (exit: {status:?})");
            }
        };
        let address = endpoint
            .rsplit_once("/register")
            .map(|(a, _)| a.to_owned())
            .expect("endpoint ends in /register");
        Server {
            child,
            address,
            endpoint,
        }
    }

    /// Register a web client named `name`, asserting 201; returns the response body.
    pub async fn register(&self, name: &str) -> serde_json::Value {
        let body = serde_json::json!({
            "redirect_uris": ["https://client.example.org/cb"],
            "client_name": name,
        });
        let r = reqwest::Client::new()
            .post(&self.endpoint)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        r.json().await.unwrap()
    }

    /// SIGKILL: no shutdown hook, no final flush.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Open the store of a stopped server directly, retrying while the lock is released.
pub fn open_store(dir: &Path) -> registrar::store::SledStore {
    let mut last = None;
    for _ in 0..200 {
        match registrar::store::SledStore::open(dir, 1 << 20) {
            Ok(store) => return store,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("cannot open the store after the kill: {last:?}")
}
