//! SIGKILL during concurrent registrations and updates, restart on the same directory, and check
//! that every acknowledged write survived whole and nothing half-written is left.

use crate::process::{open_store, Server};
use rand::Rng;
use registrar::credentials::RatKey;
use registrar::store::ClientStore;
use reqwest::header::AUTHORIZATION;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROUNDS: usize = 6;
const WORKERS: usize = 8;

/// What the test (the "clients") knows about one registration.
#[derive(Debug, Clone)]
struct Known {
    /// The token and name of the last acknowledged state.
    rat: String,
    name: String,
    /// The name sent in an update whose answer never arrived (the server died meanwhile).
    in_flight: Option<String>,
}

type Book = Arc<Mutex<HashMap<String, Known>>>;

fn lock(book: &Book) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
    book.lock().unwrap()
}

/// One worker: register a client, then keep updating its own clients (so no client has two
/// updates in flight), until the server dies. Returns the number of acknowledged writes.
async fn worker(endpoint: String, book: Book, id: usize, mut own: Vec<String>) -> usize {
    let http = reqwest::Client::new();
    let mut acked = 0;
    let mut n = 0usize;
    loop {
        n += 1;
        if own.is_empty() || n.is_multiple_of(3) {
            let name = format!("w{id}-r{n}");
            let body =
                json!({"redirect_uris": ["https://client.example.org/cb"], "client_name": name});
            let Ok(r) = http.post(&endpoint).json(&body).send().await else {
                return acked;
            };
            let status = r.status();
            let Ok(body) = r.json::<Value>().await else {
                return acked;
            };
            assert_eq!(status, 201, "registration under load: {body}");
            let client_id = body["client_id"].as_str().unwrap().to_owned();
            lock(&book).insert(
                client_id.clone(),
                Known {
                    rat: body["registration_access_token"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    name,
                    in_flight: None,
                },
            );
            own.push(client_id);
            acked += 1;
        } else {
            let client_id = own[n % own.len()].clone();
            let name = format!("w{id}-u{n}");
            let (uri, rat) = {
                let mut book = lock(&book);
                let known = book.get_mut(&client_id).unwrap();
                known.in_flight = Some(name.clone());
                (format!("{endpoint}/{client_id}"), known.rat.clone())
            };
            let body = json!({
                "client_id": client_id,
                "redirect_uris": ["https://client.example.org/cb"],
                "client_name": name,
            });
            let sent = http
                .put(&uri)
                .header(AUTHORIZATION, format!("Bearer {rat}"))
                .json(&body)
                .send()
                .await;
            let Ok(r) = sent else { return acked };
            let status = r.status();
            let Ok(body) = r.json::<Value>().await else {
                return acked;
            };
            assert_eq!(status, 200, "update under load: {body}");
            let mut book = lock(&book);
            let known = book.get_mut(&client_id).unwrap();
            known.rat = body["registration_access_token"]
                .as_str()
                .unwrap()
                .to_owned();
            known.name = name;
            known.in_flight = None;
            acked += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_and_nothing_is_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let book: Book = Arc::default();
    let mut rng = rand::thread_rng();
    let started = Instant::now();
    let mut server = Server::start(dir.path(), &[]);
    let (mut total_acked, mut rolled_forward, mut kept_old) = (0, 0, 0);

    for round in 0..ROUNDS {
        // Load, then SIGKILL at a random moment.
        let mut own: Vec<Vec<String>> = vec![Vec::new(); WORKERS];
        for (i, id) in lock(&book).keys().enumerate() {
            own[i % WORKERS].push(id.clone());
        }
        let tasks: Vec<_> = own
            .into_iter()
            .enumerate()
            .map(|(i, own)| tokio::spawn(worker(server.endpoint.clone(), book.clone(), i, own)))
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..900))).await;
        server.kill();
        for task in tasks {
            total_acked += task.await.expect("worker did not panic");
        }

        // The store as the killed process left it: every record decodes and the token index
        // matches the records; each client is in its acknowledged state, or, for an update in
        // flight at the kill, wholly in the new one (name and token changed together).
        let key_text = std::fs::read_to_string(dir.path().join("server.key")).unwrap();
        let key = RatKey::from_base64(&key_text).unwrap();
        let mut rolled = Vec::new();
        {
            let store = open_store(dir.path());
            let count = store
                .verify()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            let book = lock(&book);
            assert!(
                count >= book.len(),
                "round {round}: {count} stored < {} acknowledged",
                book.len()
            );
            for (id, known) in book.iter() {
                let record = store
                    .get(id)
                    .unwrap()
                    .unwrap_or_else(|| panic!("round {round}: acknowledged client {id} lost"));
                let name = record.metadata["client_name"].as_str().unwrap();
                let old_tag = key.tag(&known.rat);
                if name == known.name {
                    assert_eq!(
                        record.rat_tag, old_tag,
                        "round {round}: {id} has its old name but not its old token"
                    );
                } else {
                    assert_eq!(
                        Some(name),
                        known.in_flight.as_deref(),
                        "round {round}: {id} lost an acknowledged update"
                    );
                    assert_ne!(
                        record.rat_tag, old_tag,
                        "round {round}: {id} has the new name but the old token"
                    );
                    rolled.push(id.clone());
                }
            }
        }

        // Restart on the same directory: every client in its acknowledged state reads back with
        // the token it holds; a rolled-forward one refuses the old token (its new token was lost
        // with the response, as RFC 7592 warns) and leaves the book.
        server = Server::start(dir.path(), &[]);
        let http = reqwest::Client::new();
        let snapshot: Vec<(String, Known)> = lock(&book)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, known) in snapshot {
            let r = http
                .get(format!("{}/{id}", server.endpoint))
                .header(AUTHORIZATION, format!("Bearer {}", known.rat))
                .send()
                .await
                .unwrap();
            if rolled.contains(&id) {
                assert_eq!(
                    r.status(),
                    401,
                    "round {round}: old token of rolled-forward {id}"
                );
                lock(&book).remove(&id);
                rolled_forward += 1;
                continue;
            }
            assert_eq!(r.status(), 200, "round {round}: {id} after restart");
            let read: Value = r.json().await.unwrap();
            assert_eq!(
                read["client_name"],
                json!(known.name),
                "round {round}: {id}"
            );
            if known.in_flight.is_some() {
                kept_old += 1;
            }
            lock(&book).get_mut(&id).unwrap().in_flight = None;
        }
    }
    drop(server);
    eprintln!(
        "crash test: {ROUNDS} SIGKILLs, {total_acked} acknowledged writes, {} clients checked at the end, \
         {rolled_forward} in-flight updates found applied, {kept_old} found not applied, {:.1}s",
        lock(&book).len(),
        started.elapsed().as_secs_f64()
    );
    assert!(total_acked > 0, "the load never got a write acknowledged");
}
