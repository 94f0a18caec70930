//! Many idle connections do not starve real clients. Runs against the binary so that the
//! server's sockets and the test's sockets live in different processes (each stays well under
//! the usual 1024 open-file limit).

use crate::process::Server;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SILENT: usize = 400;
const KEPT_ALIVE: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_succeeds_while_800_idle_connections_are_open() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let host = server.address.trim_start_matches("http://").to_owned();

    // Connections that never send a byte.
    let mut idle = Vec::new();
    for _ in 0..SILENT {
        idle.push(TcpStream::connect(&host).await.expect("connect"));
    }
    // Keep-alive connections that made one request and then went quiet.
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n");
    for _ in 0..KEPT_ALIVE {
        let mut s = TcpStream::connect(&host).await.expect("connect");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        idle.push(s);
    }

    let started = Instant::now();
    let r = reqwest::Client::new()
        .post(&server.endpoint)
        .json(&json!({"redirect_uris": ["https://client.example.org/cb"]}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("a registration gets through");
    let took = started.elapsed();
    assert_eq!(r.status(), 201);
    eprintln!(
        "registration with {} idle connections open took {took:?}",
        idle.len()
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    drop(idle);
}
