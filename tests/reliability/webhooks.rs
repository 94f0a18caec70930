//! SIGKILL between commit and delivery: a webhook whose change was acknowledged but not yet
//! delivered is delivered after the restart, with the `webhook-id` of its first attempt.

use crate::process::Server;
use crate::tls::{Reply, TlsServer};
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn env(receiver: &TlsServer) -> Vec<(&'static str, String)> {
    vec![
        (
            "REGISTRAR_WEBHOOKS",
            format!(
                r#"[{{url="{}",secret="{SECRET}",events=["*"]}}]"#,
                receiver.url("/hook")
            ),
        ),
        (
            "REGISTRAR_FETCH__EXTRA_ROOT_CA_FILE",
            receiver.ca_file().to_owned(),
        ),
        (
            "REGISTRAR_FETCH__ALLOW_PRIVATE_ADDRESSES",
            "true".to_owned(),
        ),
    ]
}

fn start(dir: &std::path::Path, env: &[(&'static str, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start(dir, &env)
}

/// `(client_id, webhook-id)` of each delivery.
fn client_and_id(received: &[crate::tls::Received]) -> Vec<(String, String)> {
    received
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_str(&r.body).unwrap();
            (
                body["data"]["client_id"].as_str().unwrap().to_owned(),
                r.header("webhook-id").unwrap(),
            )
        })
        .collect()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..300 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_pending_at_a_sigkill_is_delivered_after_restart_with_the_same_id() {
    let receiver = TlsServer::start(vec![(
        "/hook",
        Reply::Raw(503, "application/json", "{}".into()),
    )])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let env = env(&receiver);
    let server = start(dir.path(), &env);
    let mut ids = Vec::new();
    for i in 0..3 {
        let created = server.register(&format!("k{i}")).await;
        ids.push(created["client_id"].as_str().unwrap().to_owned());
    }
    // Attempted (and refused) once each, then the process dies before any success.
    wait_until("the first attempts", || receiver.received().len() >= 3).await;
    server.kill();
    let attempted = client_and_id(&receiver.received());
    let before = receiver.received().len();
    receiver.route("/hook", Reply::Json("{}".into()));

    let server = start(dir.path(), &env);
    wait_until("delivery after the restart", || {
        let delivered: HashSet<String> = receiver.received()[before..]
            .iter()
            .filter_map(|r| r.header("webhook-id"))
            .collect();
        attempted.iter().all(|(_, id)| delivered.contains(id))
    })
    .await;
    // Each client's event came with the id of its first attempt; nothing new was invented.
    let after = client_and_id(&receiver.received()[before..]);
    for id in &ids {
        let first = attempted.iter().find(|(c, _)| c == id).map(|(_, w)| w);
        let again = after.iter().find(|(c, _)| c == id).map(|(_, w)| w);
        assert!(first.is_some(), "{id} was never attempted before the kill");
        assert_eq!(first, again, "{id} redelivered under another webhook-id");
    }
    drop(server);
}
