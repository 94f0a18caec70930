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

/// A write whose answer never arrived (the server died meanwhile).
#[derive(Debug, Clone, PartialEq)]
enum Pending {
    /// An update to this client_name.
    Update(String),
    Delete,
}

/// What the test (the "clients") knows about one registration.
#[derive(Debug, Clone)]
struct Known {
    /// The token and name of the last acknowledged state.
    rat: String,
    name: String,
    in_flight: Option<Pending>,
}

#[derive(Default)]
struct Ledger {
    live: HashMap<String, Known>,
    /// Acknowledged deletions: client_id and the token it had.
    deleted: Vec<(String, String)>,
}

type Book = Arc<Mutex<Ledger>>;

fn lock(book: &Book) -> std::sync::MutexGuard<'_, Ledger> {
    book.lock().unwrap()
}

/// Send one request; `None` when the server died before the whole answer arrived.
async fn send(request: reqwest::RequestBuilder) -> Option<(u16, Option<Value>)> {
    let r = request.send().await.ok()?;
    let status = r.status().as_u16();
    let bytes = r.bytes().await.ok()?;
    Some((status, serde_json::from_slice(&bytes).ok()))
}

/// The audit trail the killed process left: the chain verifies, and every change has its
/// record and every record its change (one transaction): each stored client's last record
/// describes exactly its stored state (`after` is the digest of its view), and each client whose
/// last record is a deletion is gone.
async fn audit_matches_the_store(store: &registrar::store::SledStore, round: usize) {
    use registrar::events::audit::{client_view, view_digest};
    use registrar::events::{list, verify_log, AuditQuery, EventType};
    let verified = verify_log(store)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("round {round}: audit chain broken: {e}"));
    let mut last: HashMap<String, registrar::events::AuditRecord> = HashMap::new();
    let mut query = AuditQuery {
        limit: 1000,
        ..Default::default()
    };
    loop {
        let page = list(store, &query).await.unwrap();
        for r in page.records {
            if let Some(id) = r.client_id.clone() {
                last.insert(id, r);
            }
        }
        match page.next_cursor {
            Some(after) => query.after = after,
            None => break,
        }
    }
    assert!(verified.count as usize >= last.len());
    let mut after = None;
    loop {
        let clients = store.scan(after.as_deref(), 500).await.unwrap();
        let Some(end) = clients.last() else { break };
        after = Some(end.client_id.clone());
        for c in &clients {
            let record = last
                .get(&c.client_id)
                .unwrap_or_else(|| panic!("round {round}: {} has no audit record", c.client_id));
            assert_eq!(
                record.after.as_deref(),
                Some(view_digest(&client_view(c)).as_str()),
                "round {round}: {}'s last audit record ({}) does not describe its stored state",
                c.client_id,
                record.event
            );
        }
    }
    for (id, r) in &last {
        if r.event == EventType::Deleted {
            assert!(
                store.get(id).await.unwrap().is_none(),
                "round {round}: {id} has a deletion record but is stored"
            );
        }
    }
}

/// One worker: registers clients, and updates and deletes only its own (so no client ever has
/// two writes in flight), until the server dies. Returns the number of acknowledged writes.
///
/// Every name it writes is new to the whole test (round, worker and step are in it): a write in
/// flight at the kill is told apart from the acknowledged state by its name, so an update that
/// repeated a client's current name, applied but unanswered, would look like a lost token.
async fn worker(
    endpoint: String,
    book: Book,
    round: usize,
    id: usize,
    mut own: Vec<String>,
) -> usize {
    let http = reqwest::Client::new();
    let mut acked = 0;
    let mut n = 0usize;
    loop {
        n += 1;
        if own.is_empty() || n.is_multiple_of(3) {
            let name = format!("{round}-w{id}-r{n}");
            let body =
                json!({"redirect_uris": ["https://client.example.org/cb"], "client_name": name});
            let Some((status, body)) = send(http.post(&endpoint).json(&body)).await else {
                return acked;
            };
            let body = body.unwrap_or_default();
            assert_eq!(status, 201, "registration under load: {body}");
            let client_id = body["client_id"].as_str().unwrap().to_owned();
            let rat = body["registration_access_token"]
                .as_str()
                .unwrap()
                .to_owned();
            let known = Known {
                rat,
                name,
                in_flight: None,
            };
            lock(&book).live.insert(client_id.clone(), known);
            own.push(client_id);
            acked += 1;
            continue;
        }
        let client_id = own[n % own.len()].clone();
        let uri = format!("{endpoint}/{client_id}");
        let op = if n.is_multiple_of(7) {
            Pending::Delete
        } else {
            Pending::Update(format!("{round}-w{id}-u{n}"))
        };
        let rat = {
            let mut book = lock(&book);
            let known = book.live.get_mut(&client_id).unwrap();
            known.in_flight = Some(op.clone());
            known.rat.clone()
        };
        let bearer = format!("Bearer {rat}");
        match op {
            Pending::Delete => {
                let Some((status, _)) = send(http.delete(&uri).header(AUTHORIZATION, bearer)).await
                else {
                    return acked;
                };
                assert_eq!(status, 204, "delete under load");
                let mut book = lock(&book);
                book.live.remove(&client_id);
                book.deleted.push((client_id.clone(), rat));
                own.retain(|c| c != &client_id);
            }
            Pending::Update(name) => {
                let body = json!({
                    "client_id": client_id,
                    "redirect_uris": ["https://client.example.org/cb"],
                    "client_name": name,
                });
                let request = http.put(&uri).header(AUTHORIZATION, bearer).json(&body);
                let Some((status, body)) = send(request).await else {
                    return acked;
                };
                let body = body.unwrap_or_default();
                assert_eq!(status, 200, "update under load: {body}");
                let mut book = lock(&book);
                let known = book.live.get_mut(&client_id).unwrap();
                known.rat = body["registration_access_token"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                known.name = name;
                known.in_flight = None;
            }
        }
        acked += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_and_nothing_is_half_written() {
    let dir = tempfile::tempdir().unwrap();
    let book: Book = Arc::default();
    let mut rng = rand::thread_rng();
    let started = Instant::now();
    let mut server = Server::start(dir.path(), &[]);
    let mut total_acked = 0;
    // In-flight writes found applied / not applied after the kill.
    let (mut applied, mut not_applied) = (0, 0);

    for round in 0..ROUNDS {
        // Load, then SIGKILL at a random moment.
        let mut own: Vec<Vec<String>> = vec![Vec::new(); WORKERS];
        for (i, id) in lock(&book).live.keys().enumerate() {
            own[i % WORKERS].push(id.clone());
        }
        let tasks: Vec<_> = own
            .into_iter()
            .enumerate()
            .map(|(i, own)| {
                tokio::spawn(worker(server.endpoint.clone(), book.clone(), round, i, own))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..900))).await;
        server.kill();
        for task in tasks {
            total_acked += task.await.expect("worker did not panic");
        }

        // The store as the killed process left it: every record decodes and the token index
        // matches the records. Each client is in its acknowledged state (name and token), or,
        // for a write in flight at the kill, wholly in the new one: the new name with a new
        // token, or gone for a delete. Acknowledged deletions stay deleted.
        let key_text = std::fs::read_to_string(dir.path().join("server.key")).unwrap();
        let key = RatKey::from_base64(&key_text).unwrap();
        let mut moved_on = Vec::new();
        let mut gone = Vec::new();
        {
            let store = open_store(dir.path());
            let count = store
                .verify()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            audit_matches_the_store(&store, round).await;
            // A copy, so no lock is held across the store's awaits.
            let (book_deleted, book_live) = {
                let book = lock(&book);
                (book.deleted.clone(), book.live.clone())
            };
            for (id, _) in &book_deleted {
                assert!(
                    store.get(id).await.unwrap().is_none(),
                    "round {round}: deleted client {id} came back"
                );
            }
            for (id, known) in &book_live {
                let old_tag = key.tag(&known.rat);
                let Some(record) = store.get(id).await.unwrap() else {
                    assert_eq!(
                        known.in_flight,
                        Some(Pending::Delete),
                        "round {round}: acknowledged client {id} lost"
                    );
                    moved_on.push(id.clone());
                    gone.push(id.clone());
                    continue;
                };
                let name = record.metadata["client_name"].as_str().unwrap();
                if name == known.name {
                    assert_eq!(
                        record.rat_tag, old_tag,
                        "round {round}: {id} has its old name but not its old token"
                    );
                } else {
                    assert_eq!(
                        Some(Pending::Update(name.to_owned())),
                        known.in_flight,
                        "round {round}: {id} lost an acknowledged update"
                    );
                    assert_ne!(
                        record.rat_tag, old_tag,
                        "round {round}: {id} has the new name but the old token"
                    );
                    moved_on.push(id.clone());
                }
            }
            let expected = book_live.len() - moved_on.len();
            assert!(
                count >= expected,
                "round {round}: {count} stored < {expected} acknowledged"
            );
        }

        // Restart on the same directory: every client in its acknowledged state reads back with
        // the token it holds; one whose in-flight write was applied (its new token lost with the
        // response, as RFC 7592 warns) recovers the new token with the old one and leaves the
        // book; deleted clients stay unreachable.
        server = Server::start(dir.path(), &[]);
        let http = reqwest::Client::new();
        let live: Vec<(String, Known)> = lock(&book)
            .live
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let deleted = lock(&book).deleted.clone();
        let get = |id: &str, rat: &str| {
            http.get(format!("{}/{id}", server.endpoint))
                .header(AUTHORIZATION, format!("Bearer {rat}"))
                .send()
        };
        for (id, rat) in &deleted {
            assert_eq!(get(id, rat).await.unwrap().status(), 401, "deleted {id}");
        }
        for (id, known) in live {
            let r = get(&id, &known.rat).await.unwrap();
            if gone.contains(&id) {
                assert_eq!(
                    r.status(),
                    401,
                    "round {round}: {id} after its delete applied"
                );
                lock(&book).live.remove(&id);
                applied += 1;
                continue;
            }
            if moved_on.contains(&id) {
                // The new token was lost with the response; within the RAT grace the old one
                // reads the registration and gets the new token back (README "Client
                // lifecycle").
                assert_eq!(
                    r.status(),
                    200,
                    "round {round}: old token of {id} after its in-flight write applied"
                );
                let read: Value = r.json().await.unwrap();
                assert_ne!(
                    read["registration_access_token"], known.rat,
                    "round {round}: {id} recovers the new token"
                );
                lock(&book).live.remove(&id);
                applied += 1;
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
                not_applied += 1;
            }
            lock(&book).live.get_mut(&id).unwrap().in_flight = None;
        }
    }
    drop(server);
    let book = lock(&book);
    eprintln!(
        "crash test: {ROUNDS} SIGKILLs, {total_acked} acknowledged writes, {} live and {} deleted \
         clients checked at the end, {applied} in-flight writes found applied, {not_applied} not \
         applied, {:.1}s",
        book.live.len(),
        book.deleted.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(total_acked > 0, "the load never got a write acknowledged");
    assert!(
        !book.deleted.is_empty(),
        "no deletion was ever acknowledged"
    );
}
