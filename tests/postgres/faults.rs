//! The database failing under load: `pg_ctl stop -m immediate` (a crash, no shutdown
//! checkpoint) while registrations and updates run, then the database back.

use crate::helpers::*;
use crate::pg::Cluster;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Ledger {
    /// Acknowledged registrations: client_id, token, last acknowledged client_name.
    clients: Vec<(String, String, String)>,
    /// Names sent in updates that were not acknowledged, per client: they may or may not
    /// have been applied (the answer was a 503), so the stored name may be one of them.
    unacknowledged: Vec<(String, String)>,
    statuses: Vec<u16>,
}

async fn readyz(app: &TestApp) -> u16 {
    app.client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn worker(
    app: Arc<TestApp>,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut own: Option<(String, String)> = None;
    let mut i = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        i += 1;
        let status = match &own {
            Some((id, token)) if i % 2 == 0 => {
                let name = format!("n{i}");
                let body = json!({
                    "client_id": id,
                    "redirect_uris": ["https://client.example.org/cb"],
                    "client_name": name,
                });
                let uri = format!("{}/{id}", app.endpoint);
                let r = app.put_client(&uri, token, &body).await;
                let status = r.status().as_u16();
                let mut l = ledger.lock().unwrap();
                if status == 200 {
                    if let Some(c) = l.clients.iter_mut().find(|c| &c.0 == id) {
                        c.2 = name;
                    }
                } else {
                    l.unacknowledged.push((id.clone(), name));
                }
                status
            }
            _ => {
                let r = app.post(&web_client()).await;
                let status = r.status().as_u16();
                if status == 201 {
                    let c: Value = r.json().await.unwrap();
                    let id = c["client_id"].as_str().unwrap().to_owned();
                    let token = c["registration_access_token"].as_str().unwrap().to_owned();
                    ledger.lock().unwrap().clients.push((
                        id.clone(),
                        token.clone(),
                        "Example".into(),
                    ));
                    own = Some((id, token));
                }
                status
            }
        };
        ledger.lock().unwrap().statuses.push(status);
        if status == 503 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_crash_under_load_loses_nothing_acknowledged_and_the_registrar_recovers() {
    let cluster = Cluster::private(true);
    let url = cluster.new_database();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("test-database-url"), &url).unwrap();
    // Rotation off: an update whose answer was lost leaves the token valid, so the check
    // after the restart can read every client.
    let app = Arc::new(
        spawn_in(dir, |s| {
            s.with("registration.rotate_rat_on_update", false)
                .unwrap()
                .with("storage.postgres.connect_timeout_ms", 500)
                .unwrap()
        })
        .await,
    );
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..6)
        .map(|_| tokio::spawn(worker(app.clone(), ledger.clone(), stop.clone())))
        .collect();

    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = ledger.lock().unwrap().clients.len();
    assert!(before > 0, "no registration succeeded before the crash");
    cluster.stop_immediate();

    // Down: writes get 503 and readiness says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    while readyz(&app).await != 503 {
        assert!(
            Instant::now() < deadline,
            "/readyz stayed ready with the database down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = app.post(&web_client()).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_error(r, 503, "temporarily_unavailable").await;

    // Back: the registrar notices by itself (no restart) and serves again.
    cluster.start(true);
    let deadline = Instant::now() + Duration::from_secs(20);
    while readyz(&app).await != 200 {
        assert!(Instant::now() < deadline, "the registrar did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let unexpected: Vec<_> = ledger
        .statuses
        .iter()
        .filter(|s| ![200, 201, 503].contains(*s))
        .collect();
    assert!(
        unexpected.is_empty(),
        "only acknowledgements and 503s: {unexpected:?}"
    );
    assert!(ledger.statuses.contains(&503), "the crash was not noticed");
    for (id, token, name) in &ledger.clients {
        let r = app
            .get_client(&format!("{}/{id}", app.endpoint), token)
            .await;
        assert_eq!(r.status(), 200, "acknowledged client {id} lost");
        let read: Value = r.json().await.unwrap();
        let stored = read["client_name"].as_str().unwrap();
        let later_attempt = ledger
            .unacknowledged
            .iter()
            .any(|(i, n)| i == id && n == stored);
        assert!(
            stored == name || later_attempt,
            "{id}: stored {stored}, last acknowledged {name}"
        );
    }
    assert_eq!(app.post(&web_client()).await.status(), 201);
    cluster.stop_immediate();
}

/// Two replica processes on one database under registration load through both; one is
/// SIGKILLed mid-load. Every registration acknowledged by either reads back on the survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_loses_nothing_acknowledged() {
    let url = crate::pg::shared().new_database();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let env = [
        ("REGISTRAR_STORAGE__BACKEND", "postgres"),
        ("REGISTRAR_STORAGE__POSTGRES__URL", url.as_str()),
        ("REGISTRAR_STORAGE__POSTGRES__MIGRATE_ON_START", "true"),
    ];
    let victim = crate::process::Server::start(dirs[0].path(), &env);
    let survivor = crate::process::Server::start(dirs[1].path(), &env);
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let http = reqwest::Client::new();
    let load = |endpoint: String| {
        let (acked, http) = (acked.clone(), http.clone());
        tokio::spawn(async move {
            let mut refused = 0;
            for _ in 0..200 {
                match http.post(&endpoint).json(&web_client()).send().await {
                    Ok(r) if r.status() == 201 => {
                        // A body cut off by the kill is no acknowledgement.
                        if let Ok(c) = r.json::<Value>().await {
                            let id = c["client_id"].as_str().unwrap().to_owned();
                            let rat = c["registration_access_token"].as_str().unwrap().to_owned();
                            acked.lock().unwrap().push((id, rat));
                        }
                    }
                    Ok(r) => panic!("unexpected {}", r.status()),
                    // The victim is gone: connection refused or reset.
                    Err(_) => {
                        refused += 1;
                        if refused > 3 {
                            return;
                        }
                    }
                }
            }
        })
    };
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            load(if i % 2 == 0 {
                victim.endpoint.clone()
            } else {
                survivor.endpoint.clone()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    victim.kill();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.len() > 10, "too little load: {}", acked.len());
    for (id, rat) in &acked {
        let r = http
            .get(format!("{}/{id}", survivor.endpoint))
            .bearer_auth(rat)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "acknowledged client {id} lost");
    }
}
