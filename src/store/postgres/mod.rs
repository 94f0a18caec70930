//! The PostgreSQL-wire `ClientStore` (PostgreSQL; written to the subset CockroachDB and
//! YugabyteDB accept): the only code that knows SQL.
//!
//! Table `clients` keeps each record as one JSON document plus the columns that are indexed or
//! compared (`revision` for compare-and-swap, `rat_tag` unique for the token index); `counters`
//! and `registrar_keys` hold the counters and the server key (`migrations/postgres/`).
//!
//! A commit is one transaction: the counter statements (in key order, so no two commits lock
//! counter rows in opposite orders), then the record statement, then the audit chain head; each
//! a single atomic statement whose "0 rows" means "exhausted" or "lost the race" (PostgreSQL
//! re-checks the `WHERE` of an `UPDATE` against the newest row version under READ COMMITTED). SQLSTATE
//! 40001/40P01 retries the transaction with bounded exponential backoff; an ambiguous outcome
//! (40003, or the connection lost during `COMMIT`) is settled by re-reading the row, never
//! reported as success without knowing. A database that cannot be reached is
//! `StoreError::Unavailable` (503 upstream); a probe task notices when it is back.

mod events;
mod group;
pub mod migrate;

use super::{
    BoxFuture, Change, ClientRecord, ClientStore, CounterOp, OpenError, StoreError, WriteBatch,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

pub(crate) type Client = tokio_postgres::Client;

/// How often a transaction that hit a serialization failure is tried in all.
const MAX_ATTEMPTS: u32 = 6;
/// First and longest backoff between those attempts.
const RETRY_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_millis(200));
/// How often the health probe runs.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// `[storage.postgres]`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresSettings {
    /// libpq-style URL; `sslmode=require|verify-full|verify-ca` connect with TLS.
    pub url: String,
    /// Connections in this replica's pool.
    pub pool_size: usize,
    /// Time to connect, or to wait for a pooled connection, in milliseconds.
    pub connect_timeout_ms: u64,
    /// `statement_timeout` of every session in milliseconds (0: none).
    pub statement_timeout_ms: u64,
    /// Apply pending migrations at start.
    pub migrate_on_start: bool,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            pool_size: 16,
            connect_timeout_ms: 3000,
            statement_timeout_ms: 5000,
            migrate_on_start: false,
        }
    }
}

impl std::fmt::Debug for PostgresSettings {
    // The URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &redacted(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

/// The URL without its password, for messages.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(unparseable URL)".into(),
    }
}

/// A message for a driver error: the server's own message and SQLSTATE when there is one.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        // The driver's own text is only the kind ("error connecting to server"): add the cause.
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// The one mapping of driver errors to `StoreError`.
fn store_error(e: &tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => StoreError::Conflict,
        Some(c) if c.code().starts_with("22") => StoreError::Corrupt(describe(e)),
        _ => StoreError::Unavailable(describe(e)),
    }
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

struct Inner {
    pool: Pool,
    healthy: AtomicBool,
    /// Told of each retried transaction (`registrar_db_retries_total`).
    events: std::sync::OnceLock<Arc<crate::store::StoreEvents>>,
    /// Batches waiting for a committer (`group`).
    queue: tokio::sync::mpsc::UnboundedSender<group::Queued>,
    /// Groups still to apply with savepoints straight away, after a bulk had to be redone.
    bulk_pause: std::sync::atomic::AtomicU32,
}

/// A `ClientStore` on a PostgreSQL-wire database; clones share one pool.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

/// How one attempt at a commit ended, when not with success.
enum Attempt {
    /// Rolled back by the database (serialization failure, deadlock): try again.
    Retry(String),
    /// The outcome is unknown (40003, connection lost during COMMIT): re-read to settle it.
    Ambiguous(String),
    /// Known not applied.
    Failed(StoreError),
}

/// An error before COMMIT was sent: nothing was committed, so a lost connection (a pooled one
/// that died, or the database restarting) is as safe to retry as a serialization failure.
fn attempt_error(e: tokio_postgres::Error) -> Attempt {
    if retryable(&e) || e.code().is_none() {
        Attempt::Retry(describe(&e))
    } else {
        Attempt::Failed(store_error(&e))
    }
}

/// A batch with its record encoded once, for every attempt and the re-read.
struct Prepared<'a> {
    batch: &'a WriteBatch,
    /// The JSON stored for an insert or update, and the revision it is stored with.
    written: Option<(String, i64)>,
}

fn encode(record: &ClientRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn revision(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("revision {v} out of range")))
}

/// The JSON stored for the batch's insert or update, and the revision it is stored with.
fn written(batch: &WriteBatch) -> Result<Option<(String, i64)>, StoreError> {
    Ok(match &batch.change {
        Some(Change::Insert(record)) => Some((encode(record)?, revision(record.revision)?)),
        Some(Change::Update {
            expected_revision,
            record,
        }) => {
            let mut stored = record.clone();
            stored.revision = expected_revision + 1;
            Some((encode(&stored)?, revision(stored.revision)?))
        }
        _ => None,
    })
}

fn tag(record: &ClientRecord) -> Option<&[u8]> {
    (!record.rat_tag.is_empty()).then_some(record.rat_tag.as_slice())
}

/// The previous token's tag during a RAT grace (`crate::lifecycle`), indexed like the current.
fn previous_tag(record: &ClientRecord) -> Option<&[u8]> {
    record.previous_rat_tag.as_deref().filter(|t| !t.is_empty())
}

/// A row of `SELECT revision, rat_tag, record`: the document, with the columns authoritative.
fn decode(row: &Row) -> Result<ClientRecord, StoreError> {
    let revision: i64 = row.get(0);
    let rat_tag: Option<Vec<u8>> = row.get(1);
    let json: &str = row.get(2);
    let mut record: ClientRecord =
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    record.revision = u64::try_from(revision).unwrap_or_default();
    record.rat_tag = rat_tag.unwrap_or_default();
    Ok(record)
}

/// The key a counter operation changes.
fn counter_key(op: &CounterOp) -> &str {
    match op {
        CounterOp::Take { key, .. } | CounterOp::Release { key } | CounterOp::Set { key, .. } => {
            key
        }
    }
}

/// The statement of one counter operation and the value it binds after the key; `None` for a
/// take with a limit of 0, exhausted without asking.
fn counter_statement(op: &CounterOp) -> Option<(&'static str, Option<i64>)> {
    Some(match op {
        CounterOp::Take { limit: 0, .. } => return None,
        CounterOp::Take { limit, .. } => (
            TAKE_COUNTER,
            Some(i64::try_from(*limit).unwrap_or(i64::MAX)),
        ),
        CounterOp::Release { .. } => (RELEASE_COUNTER, None),
        CounterOp::Set { value, .. } => {
            (SET_COUNTER, Some(i64::try_from(*value).unwrap_or(i64::MAX)))
        }
    })
}

/// A counter operation's index in its batch, its statement and its bound value.
type CounterStep = (usize, &'static str, Option<i64>);

/// The counter operations of `batch` in the order their rows are locked, each with its
/// statement and bound value, and the first operation in batch order that is exhausted without
/// asking (a limit of 0). Counter rows are locked in key order, whatever the order of the
/// batch: a registration takes the anonymous, policy and software counters, the storm eviction
/// it causes releases the policy and anonymous ones, and in batch order those two deadlock
/// (each detected only after `deadlock_timeout`, with every writer of the policy queued behind,
/// until `statement_timeout` cancels them). Every transaction then locks counters (in key
/// order), then the client row, then the audit head. Shared by the single-batch path and
/// group commit (`group.rs`).
fn counter_plan(batch: &WriteBatch) -> (Vec<CounterStep>, Option<usize>) {
    let mut order: Vec<usize> = (0..batch.counters.len()).collect();
    // Stable: ops on one key keep their batch order.
    order.sort_by(|&a, &b| counter_key(&batch.counters[a]).cmp(counter_key(&batch.counters[b])));
    let mut exhausted: Option<usize> = None;
    let mut steps = Vec::with_capacity(order.len());
    for i in order {
        let Some((sql, value)) = counter_statement(&batch.counters[i]) else {
            exhausted = Some(exhausted.map_or(i, |e| e.min(i)));
            continue;
        };
        steps.push((i, sql, value));
    }
    (steps, exhausted)
}

const SELECT_CLIENT: &str = "SELECT revision, rat_tag, record FROM clients WHERE client_id = $1";
const TAKE_COUNTER: &str = "INSERT INTO counters (key, value) VALUES ($1, 1) ON CONFLICT (key) \
     DO UPDATE SET value = counters.value + 1 WHERE counters.value < $2";
const RELEASE_COUNTER: &str = "UPDATE counters SET value = value - 1 WHERE key = $1 AND value > 0";
const SET_COUNTER: &str = "INSERT INTO counters (key, value) VALUES ($1, $2) ON CONFLICT (key) \
     DO UPDATE SET value = EXCLUDED.value";
const INSERT_CLIENT: &str = "INSERT INTO clients \
     (client_id, revision, rat_tag, record, created_at, updated_at, previous_rat_tag) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (client_id) DO NOTHING";
const UPDATE_CLIENT: &str = "UPDATE clients SET revision = $3, rat_tag = $4, record = $5, \
     updated_at = $6, previous_rat_tag = $7 WHERE client_id = $1 AND revision = $2";
const DELETE_CLIENT: &str = "DELETE FROM clients WHERE client_id = $1 AND revision = $2";

impl PostgresStore {
    /// Build the pool and make one connection, so a wrong URL or an unreachable database is
    /// one clear error at start.
    pub async fn connect(settings: &PostgresSettings) -> Result<Self, OpenError> {
        let shown = redacted(&settings.url);
        if settings.url.is_empty() {
            return Err(OpenError::Database(
                "storage.backend is \"postgres\" but storage.postgres.url is empty (env REGISTRAR_STORAGE__POSTGRES__URL)".into(),
            ));
        }
        let (url, root_cert) = tls_options(&settings.url);
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| OpenError::Database(format!("storage.postgres.url {shown}: {e}")))?;
        let timeout = Duration::from_millis(settings.connect_timeout_ms.max(1));
        config.connect_timeout(timeout);
        config.application_name("registrar");
        if settings.statement_timeout_ms > 0 {
            config.options(format!(
                "-c statement_timeout={}",
                settings.statement_timeout_ms
            ));
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            Manager::from_config(config, tls_connector(root_cert.as_deref())?, manager_config)
        } else {
            Manager::from_config(config, tokio_postgres::NoTls, manager_config)
        };
        let pool = Pool::builder(manager)
            .max_size(settings.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| OpenError::Database(format!("{shown}: {e}")))?;
        let (queue, queued) = tokio::sync::mpsc::unbounded_channel();
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                healthy: AtomicBool::new(true),
                events: std::sync::OnceLock::new(),
                queue,
                bulk_pause: std::sync::atomic::AtomicU32::new(0),
            }),
        };
        group::spawn(
            Arc::downgrade(&store.inner),
            queued,
            group::committers(settings.pool_size),
        );
        drop(
            store
                .client()
                .await
                .map_err(|e| OpenError::Database(format!("cannot connect to {shown}: {e}")))?,
        );
        store.spawn_probe();
        Ok(store)
    }

    /// Apply pending migrations (`registrar migrate`); the names of those applied.
    pub async fn migrate(&self, now: i64) -> Result<Vec<&'static str>, OpenError> {
        let client = self
            .client()
            .await
            .map_err(|e| OpenError::Database(e.to_string()))?;
        migrate::apply(&client, now).await
    }

    /// Refuse a schema that is missing, behind or ahead of this build.
    pub async fn check_schema(&self) -> Result<(), OpenError> {
        let client = self
            .client()
            .await
            .map_err(|e| OpenError::Database(e.to_string()))?;
        migrate::check(&client).await
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.inner.pool.get().await.map_err(|e| {
            StoreError::Unavailable(match &e {
                deadpool_postgres::PoolError::Backend(b) => describe(b),
                other => other.to_string(),
            })
        })
    }

    /// Record the database's health from an operation's outcome (readiness).
    fn note<T>(&self, result: &Result<T, StoreError>) {
        let healthy = !matches!(result, Err(StoreError::Unavailable(_)));
        if self.inner.healthy.swap(healthy, Ordering::AcqRel) != healthy {
            if healthy {
                tracing::warn!("database reachable again");
            } else if let Err(e) = result {
                tracing::error!(cause = %e, "database unavailable; answering 503 until it is back");
            }
        }
    }

    /// Check the database every `PROBE_EVERY`, so readiness follows it without traffic; ends
    /// with the store.
    fn spawn_probe(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                let store = PostgresStore { inner };
                let result = async {
                    let client = store.client().await?;
                    client
                        .simple_query("SELECT 1")
                        .await
                        .map_err(|e| store_error(&e))
                }
                .await;
                store.note(&result);
            }
        });
    }

    /// Run a read. A pooled connection found dead (the database restarted, a proxy cut it) is
    /// dropped from the pool and the read tried once more on a fresh one, so one broken
    /// connection does not cost a request its answer.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let mut last = None;
        for _ in 0..2 {
            let client = self.client().await?;
            let result = async {
                let statement = client.prepare_cached(sql).await?;
                client.query(&statement, params).await
            }
            .await;
            match result {
                Ok(rows) => return Ok(rows),
                Err(e) if e.code().is_none() && client.is_closed() => {
                    drop(deadpool_postgres::Object::take(client));
                    last = Some(e);
                }
                Err(e) => return Err(store_error(&e)),
            }
        }
        Err(last.map_or_else(
            || StoreError::Unavailable("no connection".into()),
            |e| store_error(&e),
        ))
    }

    /// The first row, for queries on a unique key.
    async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Commit one batch in a transaction of its own, retried and settled as needed: the path
    /// of a group's batches after the group transaction failed (`group`).
    async fn commit_alone(&self, prepared: &Prepared<'_>) -> Result<(), StoreError> {
        let mut backoff = RETRY_BACKOFF.0;
        let mut attempt = 1;
        loop {
            let cause = match self.try_commit(prepared).await {
                Ok(()) => return Ok(()),
                Err(Attempt::Failed(e)) => return Err(e),
                Err(Attempt::Retry(cause)) => cause,
                Err(Attempt::Ambiguous(cause)) => {
                    tracing::warn!(%cause, "commit outcome unknown; re-reading");
                    match self.settle(prepared).await? {
                        true => return Ok(()),
                        false => cause,
                    }
                }
            };
            if attempt >= MAX_ATTEMPTS {
                return Err(StoreError::Unavailable(format!(
                    "transaction kept failing: {cause}"
                )));
            }
            tracing::debug!(%cause, attempt, "retrying the transaction");
            if let Some(events) = self.inner.events.get() {
                (events.retry)();
            }
            attempt += 1;
            // Jitter, so that the writers that collided do not collide again.
            let jitter = Duration::from_micros(rand::random::<u64>() % 1000);
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(RETRY_BACKOFF.1);
        }
    }

    async fn try_commit(&self, p: &Prepared<'_>) -> Result<(), Attempt> {
        let mut client = self.client().await.map_err(Attempt::Failed)?;
        let result = Self::transaction(&mut client, p).await;
        if client.is_closed() {
            // Not back into the pool: the next caller would only find it dead.
            drop(deadpool_postgres::Object::take(client));
        }
        result
    }

    async fn transaction(
        client: &mut deadpool_postgres::Client,
        p: &Prepared<'_>,
    ) -> Result<(), Attempt> {
        let tx = client.transaction().await.map_err(attempt_error)?;
        // Counters in key order, then the client row, then the audit head (`counter_plan`).
        let (steps, mut exhausted) = counter_plan(p.batch);
        for (i, sql, value) in steps {
            let op = &p.batch.counters[i];
            let statement = tx.prepare_cached(sql).await.map_err(attempt_error)?;
            let k = counter_key(op).as_bytes();
            let rows = match &value {
                Some(v) => tx.execute(&statement, &[&k, v]).await,
                None => tx.execute(&statement, &[&k]).await,
            }
            .map_err(attempt_error)?;
            if rows == 0 && matches!(op, CounterOp::Take { .. }) {
                exhausted = Some(exhausted.map_or(i, |e| e.min(i)));
            }
        }
        if let Some(i) = exhausted {
            // Rolled back when `tx` is dropped: nothing of the batch is applied.
            let key = counter_key(&p.batch.counters[i]).to_owned();
            return Err(Attempt::Failed(StoreError::CounterExhausted(key)));
        }
        if let Some(change) = &p.batch.change {
            let rows = match (change, &p.written) {
                (Change::Insert(r), Some((json, rev))) => {
                    let statement = tx
                        .prepare_cached(INSERT_CLIENT)
                        .await
                        .map_err(attempt_error)?;
                    let params: [&(dyn ToSql + Sync); 7] = [
                        &r.client_id,
                        rev,
                        &tag(r),
                        json,
                        &r.client_id_issued_at,
                        &r.updated_at,
                        &previous_tag(r),
                    ];
                    tx.execute(&statement, &params).await
                }
                (
                    Change::Update {
                        expected_revision,
                        record: r,
                    },
                    Some((json, rev)),
                ) => {
                    let statement = tx
                        .prepare_cached(UPDATE_CLIENT)
                        .await
                        .map_err(attempt_error)?;
                    let expected = revision(*expected_revision).map_err(Attempt::Failed)?;
                    let params: [&(dyn ToSql + Sync); 7] = [
                        &r.client_id,
                        &expected,
                        rev,
                        &tag(r),
                        json,
                        &r.updated_at,
                        &previous_tag(r),
                    ];
                    tx.execute(&statement, &params).await
                }
                (
                    Change::Delete {
                        client_id,
                        expected_revision,
                    },
                    _,
                ) => {
                    let statement = tx
                        .prepare_cached(DELETE_CLIENT)
                        .await
                        .map_err(attempt_error)?;
                    let expected = revision(*expected_revision).map_err(Attempt::Failed)?;
                    tx.execute(&statement, &[client_id, &expected]).await
                }
                _ => {
                    return Err(Attempt::Failed(StoreError::Corrupt(
                        "record change without its encoding".into(),
                    )))
                }
            }
            .map_err(attempt_error)?;
            if rows == 0 {
                return Err(Attempt::Failed(StoreError::Conflict));
            }
        }
        // The audit entries and outbox rows of the change, in its transaction.
        events::write(&tx, p.batch).await?;
        match tx.commit().await {
            Ok(()) => Ok(()),
            Err(e) if retryable(&e) => Err(Attempt::Retry(describe(&e))),
            Err(e)
                if e.code().is_none()
                    || e.code() == Some(&SqlState::T_R_STATEMENT_COMPLETION_UNKNOWN) =>
            {
                Err(Attempt::Ambiguous(describe(&e)))
            }
            Err(e) => Err(Attempt::Failed(store_error(&e))),
        }
    }

    /// After an ambiguous COMMIT: was the batch applied? Decided by the record row (the
    /// counters were in the same transaction). `Err(Conflict)` when another writer has moved
    /// the row on since (the caller re-reads, as after any lost race); `Unavailable` when the
    /// database cannot be asked, or the batch has no record change to tell by.
    async fn settle(&self, p: &Prepared<'_>) -> Result<bool, StoreError> {
        let Some(change) = &p.batch.change else {
            return Err(StoreError::Unavailable(
                "commit outcome unknown (connection lost during COMMIT)".into(),
            ));
        };
        let id = match change {
            Change::Insert(r) | Change::Update { record: r, .. } => &r.client_id,
            Change::Delete { client_id, .. } => client_id,
        };
        let row = self.query_opt(SELECT_CLIENT, &[id]).await?;
        let stored = row.as_ref().map(|r| {
            let rev: i64 = r.get(0);
            let json: String = r.get(2);
            (rev, json)
        });
        match (change, stored, &p.written) {
            (Change::Insert(_), None, _) => Ok(false),
            (Change::Insert(_), Some((_, json)), Some((ours, _))) => Ok(json == *ours),
            (Change::Update { .. }, Some((rev, json)), Some((ours, our_rev)))
                if rev == *our_rev && json == *ours =>
            {
                Ok(true)
            }
            (
                Change::Update {
                    expected_revision, ..
                }
                | Change::Delete {
                    expected_revision, ..
                },
                Some((rev, _)),
                _,
            ) if Ok(rev) == revision(*expected_revision) => Ok(false),
            (Change::Delete { .. }, None, _) => Ok(true),
            _ => Err(StoreError::Conflict),
        }
    }
}

/// The URL as tokio-postgres reads it, and the `sslrootcert` file if one is named.
/// tokio-postgres knows `sslmode` disable/prefer/require only: `verify-full` and `verify-ca` are
/// `require` with the certificate verified, which rustls always does; `sslrootcert` (libpq's
/// name) is read here, since tokio-postgres does not know it.
fn tls_options(url: &str) -> (String, Option<std::path::PathBuf>) {
    let verified = url
        .replace("sslmode=verify-full", "sslmode=require")
        .replace("sslmode=verify-ca", "sslmode=require");
    let Ok(mut parsed) = url::Url::parse(&verified) else {
        return (verified, None);
    };
    let mut root = None;
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter_map(|(k, v)| {
            if k == "sslrootcert" {
                root = Some(std::path::PathBuf::from(v.as_ref()));
                None
            } else {
                Some((k.into_owned(), v.into_owned()))
            }
        })
        .collect();
    if root.is_none() {
        return (verified, None);
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    (parsed.to_string(), root)
}

/// rustls with the webpki roots, or only the certificates of `root_cert` (a PEM file) when
/// given, as libpq's `sslrootcert` replaces the default roots.
fn tls_connector(
    root_cert: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, OpenError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let roots = match root_cert {
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
        Some(path) => {
            let failed = |e: &dyn std::fmt::Display| {
                OpenError::Database(format!("sslrootcert {}: {e}", path.display()))
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| failed(&e))? {
                roots
                    .add(cert.map_err(|e| failed(&e))?)
                    .map_err(|e| failed(&e))?;
            }
            if roots.is_empty() {
                return Err(failed(&"no certificate in the file"));
            }
            roots
        }
    };
    // The ring provider explicitly: the process may hold more than one rustls provider.
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    config
        .map(tokio_postgres_rustls::MakeRustlsConnect::new)
        .map_err(|e| OpenError::Database(format!("TLS configuration: {e}")))
}

impl ClientStore for PostgresStore {
    fn observe(&self, events: Arc<crate::store::StoreEvents>) {
        let _ = self.inner.events.set(events);
    }

    fn get(&self, client_id: &str) -> BoxFuture<'_, Result<Option<ClientRecord>, StoreError>> {
        let id = client_id.to_owned();
        Box::pin(async move {
            // TEXT cannot hold NUL, so no stored client_id has one (ids are generated); asking
            // would be an error, not "not found".
            if id.contains('\0') {
                return Ok(None);
            }
            let result = self.query_opt(SELECT_CLIENT, &[&id]).await;
            self.note(&result);
            result?.map(|row| decode(&row)).transpose()
        })
    }

    fn get_by_rat(
        &self,
        rat_tag: &[u8],
    ) -> BoxFuture<'_, Result<Option<ClientRecord>, StoreError>> {
        let tag = rat_tag.to_vec();
        Box::pin(async move {
            if tag.is_empty() {
                return Ok(None);
            }
            let result = self
                .query_opt(
                    "SELECT revision, rat_tag, record FROM clients \
                     WHERE rat_tag = $1 OR previous_rat_tag = $1",
                    &[&tag],
                )
                .await;
            self.note(&result);
            result?.map(|row| decode(&row)).transpose()
        })
    }

    fn commit(&self, batch: WriteBatch) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            // Outbox edits other than enqueues (client commits carry none): alone.
            if batch
                .outbox
                .iter()
                .any(|op| !matches!(op, crate::events::OutboxOp::Enqueue(_)))
            {
                let result = match written(&batch) {
                    Ok(written) => {
                        self.commit_alone(&Prepared {
                            batch: &batch,
                            written,
                        })
                        .await
                    }
                    Err(e) => Err(e),
                };
                self.note(&result);
                return result;
            }
            // Queued for a committer, which applies it with the others waiting (`group`).
            let (reply, outcome) = tokio::sync::oneshot::channel();
            let result = match self.inner.queue.send(group::Queued { batch, reply }) {
                Ok(()) => outcome.await.unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(
                        "the store's committer ended".into(),
                    ))
                }),
                Err(_) => Err(StoreError::Unavailable(
                    "the store's committer ended".into(),
                )),
            };
            self.note(&result);
            result
        })
    }

    fn counter(&self, key: &str) -> BoxFuture<'_, Result<u64, StoreError>> {
        let key = key.as_bytes().to_vec();
        Box::pin(async move {
            let result = self
                .query_opt("SELECT value FROM counters WHERE key = $1", &[&key])
                .await;
            self.note(&result);
            Ok(result?
                .map(|row| u64::try_from(row.get::<_, i64>(0)).unwrap_or_default())
                .unwrap_or(0))
        })
    }

    fn count(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let result = self.query_opt("SELECT count(*) FROM clients", &[]).await;
            self.note(&result);
            Ok(result?
                .map(|row| u64::try_from(row.get::<_, i64>(0)).unwrap_or_default())
                .unwrap_or(0))
        })
    }

    fn scan(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ClientRecord>, StoreError>> {
        let after = after.map(str::to_owned);
        Box::pin(async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let result = match &after {
                Some(a) => {
                    self.query(
                        "SELECT revision, rat_tag, record FROM clients WHERE client_id > $1 \
                         ORDER BY client_id LIMIT $2",
                        &[a, &limit],
                    )
                    .await
                }
                None => {
                    self.query(
                        "SELECT revision, rat_tag, record FROM clients \
                         ORDER BY client_id LIMIT $1",
                        &[&limit],
                    )
                    .await
                }
            };
            self.note(&result);
            result?.iter().map(decode).collect()
        })
    }

    fn scan_counters(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>> {
        let after = after.map(|a| a.as_bytes().to_vec()).unwrap_or_default();
        Box::pin(async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            // The empty key sorts first, so "after nothing" is "after ''" (keys are not empty).
            let result = self
                .query(
                    "SELECT key, value FROM counters WHERE key > $1 ORDER BY key LIMIT $2",
                    &[&after, &limit],
                )
                .await;
            self.note(&result);
            Ok(result?
                .iter()
                .map(|row| {
                    let key: Vec<u8> = row.get(0);
                    let value: i64 = row.get(1);
                    (
                        String::from_utf8_lossy(&key).into_owned(),
                        u64::try_from(value).unwrap_or_default(),
                    )
                })
                .collect())
        })
    }

    fn server_key(&self, proposed: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, StoreError>> {
        Box::pin(async move {
            let result = async {
                // Whichever replica comes first stores its proposal; every one reads the winner.
                let client = self.client().await?;
                client
                    .execute(
                        "INSERT INTO registrar_keys (name, value) VALUES ('rat', $1) \
                         ON CONFLICT (name) DO NOTHING",
                        &[&proposed],
                    )
                    .await
                    .map_err(|e| store_error(&e))?;
                let row = client
                    .query_one("SELECT value FROM registrar_keys WHERE name = 'rat'", &[])
                    .await
                    .map_err(|e| store_error(&e))?;
                Ok(row.get::<_, Vec<u8>>(0))
            }
            .await;
            self.note(&result);
            result
        })
    }

    fn writable(&self) -> bool {
        self.inner.healthy.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_become_require_and_sslrootcert_is_taken_out_of_the_url() {
        let (url, root) = tls_options("postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem");
        assert_eq!(url, "postgres://u@h/db?sslmode=require");
        assert_eq!(root.as_deref(), Some(std::path::Path::new("/ca.pem")));
        let (url, root) = tls_options("postgres://u@h/db?sslrootcert=/ca.pem");
        assert_eq!((url.as_str(), root.is_some()), ("postgres://u@h/db", true));
        let (url, root) = tls_options("host=h sslmode=verify-ca");
        assert_eq!((url.as_str(), root), ("host=h sslmode=require", None));
    }

    #[test]
    fn the_password_is_never_shown() {
        let shown = redacted("postgres://user:s3cret@db:5432/x");
        assert!(
            !shown.contains("s3cret") && shown.contains("user"),
            "{shown}"
        );
        assert!(!format!(
            "{:?}",
            PostgresSettings {
                url: "postgres://user:s3cret@db/x".into(),
                ..PostgresSettings::default()
            }
        )
        .contains("s3cret"));
    }
}
