//! The PostgreSQL backend on a real server (a private cluster, see `tests/support/postgres.rs`):
//! the store contract, the migrator and schema check, the shared server key, several replicas
//! on one database, the database failing under load, and moving clients between backends.

/// The backend `helpers` starts apps on.
pub const POSTGRES: bool = true;
#[path = "../support/postgres.rs"]
mod pg;

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

#[allow(dead_code)]
#[path = "../reliability/process.rs"]
mod process;

mod ambiguous;
mod events;
mod faults;
mod group;
mod lifecycle;
#[allow(dead_code)]
#[path = "../api/tls.rs"]
mod receiver;
mod replicas;
mod schema;
mod tls;
mod transfer;

use registrar::store::{PostgresSettings, PostgresStore};

/// Settings for the database `url`.
pub fn pg_settings(url: &str) -> PostgresSettings {
    PostgresSettings {
        url: url.to_owned(),
        pool_size: 4,
        connect_timeout_ms: 2000,
        ..PostgresSettings::default()
    }
}

/// A migrated store on a new database of the shared cluster.
pub async fn fresh_store() -> (PostgresStore, String) {
    let url = pg::shared().new_database();
    let store = PostgresStore::connect(&pg_settings(&url)).await.unwrap();
    store.migrate(0).await.unwrap();
    (store, url)
}

#[tokio::test]
async fn the_postgres_store_meets_the_contract() {
    let (store, _) = fresh_store().await;
    registrar::store::contract::all(&store).await;
}

/// Commits whose batches name the same counters in opposite orders (a registration takes the
/// anonymous and the policy counter, the storm eviction it causes releases them the other way
/// round) never wait on each other in a cycle: the store locks counter rows in key order, so
/// not one of them is rolled back as a deadlock and retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_naming_counters_in_opposite_orders_never_deadlock() {
    use registrar::store::{ClientStore, CounterOp, StoreEvents, WriteBatch};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let (store, _) = fresh_store().await;
    let retries = Arc::new(AtomicU64::new(0));
    let seen = retries.clone();
    store.observe(Arc::new(StoreEvents {
        commit_batch: Box::new(|_| {}),
        retry: Box::new(move || {
            seen.fetch_add(1, Ordering::Relaxed);
        }),
        group_redo: Box::new(|| {}),
        record_cache: Box::new(|_, _| {}),
    }));
    let take = |key: &str| CounterOp::Take {
        key: key.into(),
        limit: u64::MAX,
    };
    let release = |key: &str| CounterOp::Release { key: key.into() };
    let batch = |counters| WriteBatch {
        counters,
        ..WriteBatch::default()
    };
    // Both rows exist, so every commit below updates (locks) both.
    store
        .commit(batch(vec![take("anonymous"), take("policy:mcp")]))
        .await
        .unwrap();
    let mut writers = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        let ops = if w % 2 == 0 {
            vec![take("anonymous"), take("policy:mcp")]
        } else {
            vec![release("policy:mcp"), release("anonymous")]
        };
        writers.push(tokio::spawn(async move {
            for _ in 0..50 {
                store.commit(batch(ops.clone())).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(retries.load(Ordering::Relaxed), 0, "transactions retried");
    // Each commit moved both counters together, so they are still equal.
    assert_eq!(
        store.counter("anonymous").await.unwrap(),
        store.counter("policy:mcp").await.unwrap()
    );
}
