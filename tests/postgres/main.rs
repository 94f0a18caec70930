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
