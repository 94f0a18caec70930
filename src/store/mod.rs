//! Persistence of client registrations behind one asynchronous trait. Only `sled.rs` knows the
//! embedded store exists; the service sees `ClientStore`.
//!
//! Every write is one [`WriteBatch`] handed to [`ClientStore::commit`]: the record change with
//! the revision it expects, plus the counter operations that go with it, applied atomically and
//! acknowledged only once durable. Nothing downstream may act on a change before that.

#[doc(hidden)]
pub mod event_log;
mod filter;
mod memory;
mod packed_record;
pub mod postgres;
pub mod server_key;
mod sled;
mod sled_cache;
mod sled_events;
mod stored_metadata;
pub mod transfer;

pub use self::filter::{ClientFilter, Listing};
pub use self::memory::MemoryStore;
pub use self::postgres::{PostgresSettings, PostgresStore};
pub use self::sled::{SledStore, DEFAULT_RECORD_CACHE_PERCENT};
pub use self::stored_metadata::StoredMetadata;

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

/// A boxed future, so `ClientStore` stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Format version written in front of every stored record: 3 is the binary form
/// (`packed_record`); 2 (the common metadata members coded, `StoredMetadata::compact`, then the
/// JSON form) and 1 (the JSON form alone) are still read.
const RECORD_VERSION: u8 = 3;
/// The second format: coded metadata members, then the JSON form.
const RECORD_VERSION_CODED_JSON: u8 = 2;
/// The first format: the JSON form after the version byte.
const RECORD_VERSION_JSON: u8 = 1;

/// One registered client as stored: its validated metadata plus the server-side credential
/// material. Plaintext secrets are never part of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// RFC 7591 §3.2.1 `client_id`.
    pub client_id: String,
    /// RFC 7591 §3.2.1 `client_id_issued_at` (seconds since the epoch).
    pub client_id_issued_at: i64,
    /// argon2id PHC string of the `client_secret`, when one was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_hash: Option<String>,
    /// RFC 7591 §3.2.1 `client_secret_expires_at` (0 = never), when a secret was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<i64>,
    /// HMAC-SHA-256 tag of the current registration access token; empty when revoked.
    pub rat_tag: Vec<u8>,
    /// The registered metadata with defaults applied, in schema order; kept as the stored JSON
    /// text until a member is read ([`StoredMetadata`]).
    pub metadata: StoredMetadata,
    /// Seconds since the epoch of the last change.
    pub updated_at: i64,
    /// Name of the registration policy that admitted the client; re-applied on every update
    /// (security.md B34). Absent in records written before policies existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// How the client was admitted (`crate::policy::tier`); absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The software statement (RFC 7591 §2.3) the client registered with, kept verbatim so it
    /// is echoed unmodified and its claims keep precedence on update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_statement: Option<String>,
    /// Number of committed changes to this record: 1 when inserted, +1 per update. Compared by
    /// [`Change::Update`] and [`Change::Delete`] instead of the stored bytes, so a change of the
    /// record format never turns into a permanent conflict. Records written before revisions
    /// existed read as 0.
    #[serde(default)]
    pub revision: u64,
    /// Seconds since the epoch of the creation; 0 in records written before it was kept (the
    /// directory then reports `client_id_issued_at`).
    #[serde(default)]
    pub created_at: i64,
    /// Seconds since the epoch of the last successful client authentication through the admin
    /// API, coarsened to `admin.last_used_resolution_secs`; `None` until first used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
    /// Disabled by the operator: cannot authenticate, cannot change or delete itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    /// How the client arrived: `registration` (RFC 7591), `admin` or `metadata_document`; `None` (older records)
    /// means `registration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The secret replaced by a rotation with grace, still accepted until
    /// `previous_secret_expires_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_hash: Option<String>,
    /// End of the grace period of `previous_secret_hash` (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<i64>,
    /// Tag of the registration access token replaced by the last rotation, still accepted for
    /// RFC 7592 GET (only) until `previous_rat_expires_at` or the first use of the current
    /// token (`registration.rat_grace_secs`, see `crate::lifecycle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_rat_tag: Option<Vec<u8>>,
    /// End of the grace of `previous_rat_tag` (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_rat_expires_at: Option<i64>,
    /// The current registration access token sealed to the previous one
    /// (`RatKey::seal`), so a GET with the previous token can hand it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_rat: Option<Vec<u8>>,
    /// What storm control counts the client as (policy and `software_id`, else
    /// `client_name`), fixed at registration; `None` without a policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_key: Option<String>,
}

impl ClientRecord {
    /// The registration access token tags [`ClientStore::get_by_rat`] finds this client by: the
    /// current one and, during a rotation's grace, the previous one (`crate::lifecycle`), so
    /// either costs one index lookup like any other token.
    pub fn rat_tags(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.rat_tag.as_slice())
            .chain(self.previous_rat_tag.as_deref())
            .filter(|t| !t.is_empty())
    }

    /// The creation time: `created_at`, or `client_id_issued_at` for records written before
    /// it was kept.
    pub fn created(&self) -> i64 {
        if self.created_at == 0 {
            self.client_id_issued_at
        } else {
            self.created_at
        }
    }

    /// Versioned byte form (the embedded store's): format 3, the binary form of
    /// `packed_record`, whose metadata is the JSON text lacking the coded common members. The
    /// JSON form elsewhere (PostgreSQL, exports) keeps every member.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        self.encode_at(self.revision)
    }

    /// [`ClientRecord::encode`] of this record with `revision` in place of its own (an update
    /// stores the next revision without copying the record first).
    pub(crate) fn encode_at(&self, revision: u64) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity(384);
        out.push(RECORD_VERSION);
        packed_record::write(self, revision, &mut out)?;
        Ok(out)
    }

    /// Parse the versioned byte form (formats 1 to 3); an unknown version or a malformed body
    /// is `Corrupt`.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let json = |json: &[u8]| {
            serde_json::from_slice::<Self>(json).map_err(|e| StoreError::Corrupt(e.to_string()))
        };
        match bytes.split_first() {
            Some((&RECORD_VERSION, rest)) => packed_record::read(rest),
            Some((&RECORD_VERSION_CODED_JSON, rest)) => {
                let (coded, rest) = stored_metadata::read_coded(rest, false)?;
                let mut record = json(rest)?;
                record.metadata.attach(coded)?;
                Ok(record)
            }
            Some((&RECORD_VERSION_JSON, rest)) => json(rest),
            Some((v, _)) => Err(StoreError::Corrupt(format!("unknown record version {v}"))),
            None => Err(StoreError::Corrupt("empty record".into())),
        }
    }
}

/// Values of [`ClientRecord::source`]: how a client arrived.
pub mod source {
    /// RFC 7591 dynamic registration.
    pub const REGISTRATION: &str = "registration";
    /// Created by an operator through the admin API.
    pub const ADMIN: &str = "admin";
    /// Resolved from its client ID metadata document (`crate::directory::cimd`).
    pub const METADATA_DOCUMENT: &str = "metadata_document";
}

/// `storage.backend`: where clients are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The embedded store in `storage.data_dir` (one process).
    #[default]
    Sled,
    /// A PostgreSQL-wire database (`[storage.postgres]`), shareable by replicas.
    Postgres,
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the data directory.
    #[error("the data directory {0} is in use by another registrar process (its lock is held); stop that process or choose another storage.data_dir")]
    Locked(String),
    /// Anything else about the data directory (permissions, corruption, ...).
    #[error("cannot open the store in {0}: {1}")]
    Other(String, String),
    /// The database cannot be reached or used (URL, network, credentials).
    #[error("database: {0}")]
    Database(String),
    /// The database schema is missing or of another version.
    #[error("database schema: {0}")]
    Schema(String),
}

/// Open the configured backend, ready to serve: for PostgreSQL, connected, migrated when
/// `migrate_on_start` is set, and with its schema version checked.
pub async fn open(
    settings: &crate::settings::StorageSettings,
    now: i64,
) -> Result<std::sync::Arc<dyn ClientStore>, OpenError> {
    match settings.backend {
        Backend::Sled => Ok(std::sync::Arc::new(SledStore::open_with(
            &settings.data_dir,
            settings.cache_capacity_bytes,
            settings.record_cache_percent,
        )?)),
        Backend::Postgres => {
            let store = PostgresStore::connect(&settings.postgres).await?;
            if settings.postgres.migrate_on_start {
                store.migrate(now).await?;
            }
            store.check_schema().await?;
            Ok(std::sync::Arc::new(store))
        }
    }
}

/// `registrar migrate`: bring the configured database's schema to this build's version; the
/// names of the migrations applied now (empty when it was current). The embedded store has no
/// schema to migrate: an error says so.
pub async fn migrate(
    settings: &crate::settings::StorageSettings,
    now: i64,
) -> Result<Vec<&'static str>, OpenError> {
    match settings.backend {
        Backend::Sled => Err(OpenError::Schema(
            "migrate applies to storage.backend = \"postgres\"; the sled store needs no migration"
                .into(),
        )),
        Backend::Postgres => {
            PostgresStore::connect(&settings.postgres)
                .await?
                .migrate(now)
                .await
        }
    }
}

/// What can go wrong in a store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The record changed (or appeared, or vanished) since it was read: another writer won.
    /// The batch was not applied.
    #[error("conflicting concurrent write")]
    Conflict,
    /// A `CounterOp::Take` found the counter (named here) at its limit. The batch was not applied.
    #[error("counter {0} is exhausted")]
    CounterExhausted(String),
    /// A stored value could not be read back.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The storage is out of service for now (disk full, I/O error, database unreachable);
    /// writes are refused until it recovers. Whether a failed commit was applied is unknown to
    /// the caller only if the store says so; stores resolve that themselves where they can.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// The record change of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Store a new client (its `revision` as given, 1 for a fresh registration); `Conflict` if
    /// the `client_id` exists.
    Insert(ClientRecord),
    /// Replace the stored client with `record` (same `client_id`), stored with revision
    /// `expected_revision + 1`; `Conflict` if the stored revision differs or the client is absent.
    Update {
        expected_revision: u64,
        record: ClientRecord,
    },
    /// Delete the client and its token index entry; `Conflict` if the stored revision differs
    /// or the client is absent.
    Delete {
        client_id: String,
        expected_revision: u64,
    },
}

/// A counter operation of a [`WriteBatch`] (initial access token uses, software statement
/// `jti` replay, per-policy client quotas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterOp {
    /// Add one unless the counter has already reached `limit`; else the whole batch fails with
    /// `CounterExhausted(key)`.
    Take { key: String, limit: u64 },
    /// Subtract one, never below zero.
    Release { key: String },
    /// Set the counter to `value` (`registrar import`).
    Set { key: String, value: u64 },
}

/// Everything one write changes, applied all or nothing by [`ClientStore::commit`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    /// The record change, if any (a batch of counters alone is allowed).
    pub change: Option<Change>,
    /// Counter operations, applied in order.
    pub counters: Vec<CounterOp>,
    /// Audit entries describing the change, sealed onto the chain by the store inside the
    /// same write (`crate::events::audit::seal`), in order.
    pub audit: Vec<crate::events::AuditEntry>,
    /// Webhook outbox operations of the change (enqueued deliveries), in the same write.
    pub outbox: Vec<crate::events::OutboxOp>,
}

impl WriteBatch {
    /// A batch with this change and no counters.
    pub fn change(change: Change) -> Self {
        Self {
            change: Some(change),
            ..Self::default()
        }
    }

    /// Add the events of the change: its audit entry and outbox rows.
    pub fn with_events(mut self, events: crate::events::EventBatch) -> Self {
        self.audit.extend(events.audit);
        self.outbox.extend(events.outbox);
        self
    }

    /// Add counter operations.
    pub fn with_counters(mut self, counters: impl IntoIterator<Item = CounterOp>) -> Self {
        self.counters.extend(counters);
        self
    }
}

/// Storage of client registrations (RFC 7591 §3.2.1 records, RFC 7592 access tokens).
///
/// Every method is asynchronous: no implementation waits on disk or the network on the
/// caller's (actix worker) thread.
/// What a store reports about its own work, for the metrics (`crate::telemetry`): the store
/// calls these and knows nothing of metrics.
pub struct StoreEvents {
    /// One group commit made this many writers durable (sled; PostgreSQL: one transaction).
    pub commit_batch: Box<dyn Fn(usize) + Send + Sync>,
    /// One transaction is retried after a serialization failure or deadlock (PostgreSQL).
    pub retry: Box<dyn Fn() + Send + Sync>,
    /// A group commit's bulk met a batch it would refuse, and the group was applied again
    /// with a savepoint per batch (PostgreSQL, `store::postgres` group commit).
    pub group_redo: Box<dyn Fn() + Send + Sync>,
    /// One lookup answered from the sled store's record cache (`true`) or from sled (`false`),
    /// with the tree it was in: `clients` (a record) or `rat` (a token's index entry).
    pub record_cache: Box<dyn Fn(&'static str, bool) + Send + Sync>,
}

///
/// Every store also keeps the audit trail and the webhook outbox (`AuditLog`, `OutboxQueue`),
/// written by `commit` together with the change they describe.
pub trait ClientStore:
    crate::events::AuditLog + crate::events::OutboxQueue + Send + Sync + 'static
{
    /// Report internal events to `events` from now on (set once; later calls are ignored).
    fn observe(&self, events: std::sync::Arc<StoreEvents>) {
        let _ = events;
    }
    /// The client with this `client_id`, if any.
    fn get(&self, client_id: &str) -> BoxFuture<'_, Result<Option<ClientRecord>, StoreError>>;
    /// The client one of whose [`ClientRecord::rat_tags`] is this tag (the RAT index): its
    /// current registration access token, or the previous one in its grace.
    fn get_by_rat(&self, rat_tag: &[u8])
        -> BoxFuture<'_, Result<Option<ClientRecord>, StoreError>>;
    /// Apply the batch atomically. Resolves `Ok` only once everything in it is durable;
    /// `Conflict` or `CounterExhausted` leave the store unchanged.
    fn commit(&self, batch: WriteBatch) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The value of the counter `key` (0 when never taken).
    fn counter(&self, key: &str) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Number of stored clients.
    fn count(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    /// Keyset scan in `client_id` order: up to `limit` records with ids after `after`
    /// (exclusive). For export, admin listing (a client present for a whole walk is returned
    /// exactly once, whatever is inserted or deleted meanwhile) and the sweeper.
    fn scan(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<ClientRecord>, StoreError>>;
    /// Keyset scan of the counters in key order, after `after` (exclusive), at most `limit`
    /// (`registrar export`).
    fn scan_counters(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>>;
    /// The key the registration access token tags are made with: the stored one, or `proposed`
    /// stored atomically (and durably) if none is. Replicas sharing a database share the key.
    fn server_key(&self, proposed: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, StoreError>>;
    /// Whether the store accepts writes right now (readiness; cheap, no I/O). False after a
    /// storage failure until the store has recovered; reads may keep working meanwhile.
    fn writable(&self) -> bool;
    /// Up to `limit` clients with this `software_key` that were never used, oldest
    /// (`created_at`, then `client_id`) first: storm control's eviction candidates
    /// (`crate::lifecycle`). A SQL store overrides it with `WHERE software_key = $1 AND
    /// last_used_at IS NULL ORDER BY created_at, client_id LIMIT $2` over an index on
    /// `software_key`; this default walks every client with `scan`. It runs only when a
    /// software is at its limit, once per that many evictions.
    fn unused_clients_of_software<'a>(
        &'a self,
        software_key: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<ClientRecord>, StoreError>> {
        Box::pin(async move {
            let mut found = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let batch = self.scan(after.as_deref(), 1024).await?;
                let Some(last) = batch.last() else { break };
                after = Some(last.client_id.clone());
                found.extend(batch.into_iter().filter(|r| {
                    r.last_used_at.is_none() && r.software_key.as_deref() == Some(software_key)
                }));
            }
            found.sort_by(|a, b| (a.created_at, &a.client_id).cmp(&(b.created_at, &b.client_id)));
            found.truncate(limit);
            Ok(found)
        })
    }
    /// Up to `limit` clients after `after` (exclusive) that match `filter` at time `now`, in
    /// `client_id` order: the admin API's listing and bulk deletion. Keyset pagination, so a
    /// client present for a whole walk is returned exactly once whatever else changes.
    ///
    /// The default filters pages of [`ClientStore::scan`] in memory and examines at most
    /// [`LIST_MAX_EXAMINED`] records per call (then `next` is where it stopped, and the page
    /// may be short). A SQL store overrides it with
    /// `WHERE client_id > $after AND <filter> ORDER BY client_id LIMIT $limit`.
    fn list<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
        filter: &'a ClientFilter,
        now: i64,
    ) -> BoxFuture<'a, Result<Listing, StoreError>> {
        Box::pin(async move {
            let mut listing = Listing::default();
            if limit == 0 {
                return Ok(listing);
            }
            let mut cursor = after.map(str::to_owned);
            let mut examined = 0;
            while listing.records.len() < limit {
                let want = (limit - listing.records.len()).max(64);
                let page = self.scan(cursor.as_deref(), want).await?;
                let exhausted = page.len() < want;
                for record in page {
                    examined += 1;
                    cursor = Some(record.client_id.clone());
                    if filter.matches(&record, now) {
                        listing.records.push(record);
                        if listing.records.len() == limit {
                            listing.next = cursor;
                            return Ok(listing);
                        }
                    }
                }
                if exhausted {
                    return Ok(listing);
                }
                if examined >= LIST_MAX_EXAMINED {
                    break;
                }
            }
            listing.next = cursor;
            Ok(listing)
        })
    }
}

/// Records the default [`ClientStore::list`] examines per call at most, so a filter matching
/// little cannot make one request walk the whole store.
pub const LIST_MAX_EXAMINED: usize = 10_000;

/// The behaviour every `ClientStore` must show; each backend's tests run all of it
/// (`contract::all`). Public (but hidden) so the PostgreSQL integration tests run it too.
#[doc(hidden)]
pub mod contract {
    use super::*;

    /// A minimal record with id `id` and a RAT tag of 32 bytes `tag`, at revision 1.
    pub fn record(id: &str, tag: u8) -> ClientRecord {
        let mut metadata = serde_json::Map::new();
        metadata.insert("client_name".into(), "x".into());
        ClientRecord {
            client_id: id.into(),
            client_id_issued_at: 1,
            client_secret_hash: None,
            client_secret_expires_at: None,
            rat_tag: vec![tag; 32],
            metadata: metadata.into(),
            updated_at: 1,
            policy: None,
            tier: None,
            software_statement: None,
            revision: 1,
            created_at: 1,
            ..Default::default()
        }
    }

    /// A client named `name` with a secret hash and a token tag (credential material that
    /// events must never show).
    pub fn named(id: &str, name: &str) -> ClientRecord {
        let mut r = record(id, 7);
        r.metadata.insert("client_name".into(), name.into());
        r.client_secret_hash = Some("$argon2id$v=19$secret-hash".into());
        r.client_secret_expires_at = Some(0);
        r
    }

    fn insert(r: &ClientRecord) -> WriteBatch {
        WriteBatch::change(Change::Insert(r.clone()))
    }

    fn update(expected_revision: u64, record: &ClientRecord) -> WriteBatch {
        WriteBatch::change(Change::Update {
            expected_revision,
            record: record.clone(),
        })
    }

    fn delete(id: &str, expected_revision: u64) -> WriteBatch {
        WriteBatch::change(Change::Delete {
            client_id: id.into(),
            expected_revision,
        })
    }

    fn take(key: &str, limit: u64) -> CounterOp {
        CounterOp::Take {
            key: key.into(),
            limit,
        }
    }

    fn release(key: &str) -> CounterOp {
        CounterOp::Release { key: key.into() }
    }

    /// Every contract case, in turn, on one fresh store.
    pub async fn all(store: &dyn ClientStore) {
        holds(store).await;
        counts(store).await;
        batches_are_all_or_nothing(store).await;
        races(store).await;
        scans(store).await;
        lists(store).await;
        keeps_one_server_key(store).await;
        finds_unused_clients_of_a_software(store).await;
        finds_a_client_by_its_previous_token(store).await;
        events_go_with_their_change(store).await;
    }

    /// During a RAT grace the previous token's tag finds the client too, until the grace ends.
    pub async fn finds_a_client_by_its_previous_token(store: &dyn ClientStore) {
        let mut r = record("grace", 0x61);
        r.previous_rat_tag = Some(vec![0x62; 32]);
        store.commit(insert(&r)).await.unwrap();
        let by = |tag: u8| async move {
            let found = store.get_by_rat(&[tag; 32]).await.unwrap();
            found.map(|r| r.client_id)
        };
        assert_eq!(by(0x61).await.as_deref(), Some("grace"));
        assert_eq!(by(0x62).await.as_deref(), Some("grace"));
        // Rotate again: the current tag becomes the previous one, the old previous one goes.
        let mut next = r.clone();
        next.rat_tag = vec![0x63; 32];
        next.previous_rat_tag = Some(vec![0x61; 32]);
        store.commit(update(1, &next)).await.unwrap();
        assert_eq!(by(0x62).await, None);
        assert_eq!(by(0x61).await.as_deref(), Some("grace"));
        assert_eq!(by(0x63).await.as_deref(), Some("grace"));
        let mut ended = next.clone();
        ended.previous_rat_tag = None;
        store.commit(update(2, &ended)).await.unwrap();
        assert_eq!(by(0x61).await, None);
        store.commit(delete("grace", 3)).await.unwrap();
        assert_eq!(by(0x63).await, None);
    }

    /// Storm control's candidates: never used, of one software key, oldest first.
    pub async fn finds_unused_clients_of_a_software(store: &dyn ClientStore) {
        for (id, created, key, used) in [
            ("sw-a", 5, "s", None),
            ("sw-b", 3, "s", None),
            ("sw-c", 1, "s", Some(9)),
            ("sw-d", 2, "t", None),
            ("sw-e", 3, "s", None),
        ] {
            let mut r = record(id, 0x80 + id.as_bytes()[3]);
            r.created_at = created;
            r.software_key = Some(key.into());
            r.last_used_at = used;
            store.commit(insert(&r)).await.unwrap();
        }
        let ids = |v: Vec<ClientRecord>| v.into_iter().map(|r| r.client_id).collect::<Vec<_>>();
        let found = store.unused_clients_of_software("s", 10).await.unwrap();
        assert_eq!(ids(found), ["sw-b", "sw-e", "sw-a"]);
        let found = store.unused_clients_of_software("s", 1).await.unwrap();
        assert_eq!(ids(found), ["sw-b"]);
        assert!(store
            .unused_clients_of_software("u", 10)
            .await
            .unwrap()
            .is_empty());
        for id in ["sw-a", "sw-b", "sw-c", "sw-d", "sw-e"] {
            store.commit(delete(id, 1)).await.unwrap();
        }
    }

    /// The audit entries and outbox rows of a batch are written with its change, or not at
    /// all when the change is refused; the chain stays one chain across commits.
    pub async fn events_go_with_their_change(store: &dyn ClientStore) {
        use crate::events::audit::EventType;
        use crate::events::{verify_log, OutboxOp};
        use crate::store::event_log::contract::{entry, row};
        let before = verify_log(store).await.unwrap().unwrap().count;
        let r = record("ev", 40);
        let with = |batch: WriteBatch, id: &str, event| {
            batch.with_events(crate::events::EventBatch {
                audit: vec![entry(1, id, event)],
                outbox: vec![OutboxOp::Enqueue(row(id, &format!("msg_{id}_{event}")))],
            })
        };
        store
            .commit(with(insert(&r), "ev", EventType::Registered))
            .await
            .unwrap();
        // A conflicting change takes its events with it.
        assert_eq!(
            store
                .commit(with(insert(&r), "ev", EventType::Registered))
                .await,
            Err(StoreError::Conflict)
        );
        assert_eq!(
            store
                .commit(with(update(7, &r), "ev", EventType::Updated))
                .await,
            Err(StoreError::Conflict)
        );
        store
            .commit(with(delete("ev", 1), "ev", EventType::Deleted))
            .await
            .unwrap();
        let v = verify_log(store).await.unwrap().unwrap();
        assert_eq!(v.count, before + 2);
        let page = store.audit_scan(v.head.seq - 2, 10).await.unwrap();
        let events: Vec<_> = page
            .into_iter()
            .map(|row| row.record.unwrap().event)
            .collect();
        assert_eq!(events, [EventType::Registered, EventType::Deleted]);
        // One line (hook, client): its rows come out one after the other, in commit order.
        let head =
            |rows: Vec<crate::events::OutboxRow>| rows.into_iter().find(|r| r.client_id == "ev");
        let first = head(store.outbox_pending(100).await.unwrap()).unwrap();
        assert_eq!(first.id, "msg_ev_client.registered");
        store
            .outbox_apply(vec![OutboxOp::Delivered { seq: first.seq }])
            .await
            .unwrap();
        let second = head(store.outbox_pending(100).await.unwrap()).unwrap();
        assert_eq!(second.id, "msg_ev_client.deleted");
        store
            .outbox_apply(vec![OutboxOp::Delivered { seq: second.seq }])
            .await
            .unwrap();
    }

    /// Insert, read by id and by token, update by revision, delete by revision.
    pub async fn holds(store: &dyn ClientStore) {
        assert!(store.writable());
        let a = record("a", 1);
        store.commit(insert(&a)).await.unwrap();
        assert_eq!(
            store.commit(insert(&a)).await,
            Err(StoreError::Conflict),
            "insert of a taken id"
        );
        assert_eq!(store.get("a").await.unwrap(), Some(a.clone()));
        assert_eq!(store.get_by_rat(&[1; 32]).await.unwrap(), Some(a.clone()));
        assert_eq!(store.get_by_rat(&[7; 32]).await.unwrap(), None);
        assert_eq!(
            store.get("a\0").await.unwrap(),
            None,
            "any id may be asked for"
        );
        assert_eq!(store.count().await.unwrap(), 1);

        let mut b = a.clone();
        b.rat_tag = vec![2; 32];
        b.metadata.insert("client_name".into(), "b".into());
        store.commit(update(1, &b)).await.unwrap();
        let stored = store.get("a").await.unwrap().unwrap();
        assert_eq!(stored.revision, 2, "the store sets expected + 1");
        assert_eq!(stored.metadata["client_name"], "b");
        assert_eq!(
            store.commit(update(1, &b)).await,
            Err(StoreError::Conflict),
            "a stale revision"
        );
        assert_eq!(
            store.commit(update(1, &record("nobody", 9))).await,
            Err(StoreError::Conflict),
            "an absent client"
        );
        assert_eq!(store.get_by_rat(&[1; 32]).await.unwrap(), None, "old tag");
        assert_eq!(
            store
                .get_by_rat(&[2; 32])
                .await
                .unwrap()
                .map(|r| r.client_id),
            Some("a".into())
        );

        // Revoking the token (empty tag) removes it from the index.
        let mut revoked = stored.clone();
        revoked.rat_tag = Vec::new();
        store.commit(update(2, &revoked)).await.unwrap();
        assert_eq!(store.get_by_rat(&[2; 32]).await.unwrap(), None);
        assert_eq!(store.get_by_rat(&[]).await.unwrap(), None);

        assert_eq!(
            store.commit(delete("a", 2)).await,
            Err(StoreError::Conflict)
        );
        assert_eq!(
            store.commit(delete("nobody", 0)).await,
            Err(StoreError::Conflict)
        );
        store.commit(delete("a", 3)).await.unwrap();
        assert_eq!(store.get("a").await.unwrap(), None);
        assert_eq!(store.count().await.unwrap(), 0);

        // A deleted client's token is gone from the index too.
        let c = record("c", 3);
        store.commit(insert(&c)).await.unwrap();
        store.commit(delete("c", 1)).await.unwrap();
        assert_eq!(store.get_by_rat(&[3; 32]).await.unwrap(), None);
    }

    /// Counters: bounded takes, releases never below zero.
    pub async fn counts(store: &dyn ClientStore) {
        let only = |op| WriteBatch {
            counters: vec![op],
            ..WriteBatch::default()
        };
        assert_eq!(store.counter("k").await.unwrap(), 0);
        store.commit(only(take("k", 2))).await.unwrap();
        store.commit(only(take("k", 2))).await.unwrap();
        assert_eq!(
            store.commit(only(take("k", 2))).await,
            Err(StoreError::CounterExhausted("k".into()))
        );
        assert_eq!(store.counter("k").await.unwrap(), 2);
        store.commit(only(release("k"))).await.unwrap();
        assert_eq!(store.counter("k").await.unwrap(), 1);
        store.commit(only(release("k"))).await.unwrap();
        store.commit(only(release("k"))).await.unwrap();
        assert_eq!(store.counter("k").await.unwrap(), 0);
        store.commit(only(release("never"))).await.unwrap();
        assert_eq!(store.counter("never").await.unwrap(), 0);
        assert_eq!(
            store.commit(only(take("zero", 0))).await,
            Err(StoreError::CounterExhausted("zero".into()))
        );
        store
            .commit(only(CounterOp::Set {
                key: "set".into(),
                value: 7,
            }))
            .await
            .unwrap();
        assert_eq!(store.counter("set").await.unwrap(), 7);
        let keys = store.scan_counters(None, 10).await.unwrap();
        assert!(keys.contains(&("set".into(), 7)), "{keys:?}");
        let after = store.scan_counters(Some("k"), 10).await.unwrap();
        assert!(after.iter().all(|(k, _)| k.as_str() > "k"), "{after:?}");
        assert_eq!(store.scan_counters(None, 1).await.unwrap().len(), 1);
        // Keys embed claims of presented JWTs: any character, NUL included.
        let odd = "ssa-jti:iss:\0\u{ff}'";
        store.commit(only(take(odd, 1))).await.unwrap();
        assert_eq!(store.counter(odd).await.unwrap(), 1);
        // Of several exhausted counters, the first in batch order is reported, whatever order
        // a store locks them in (PostgreSQL: key order).
        let both = WriteBatch {
            counters: vec![take("z-first", 0), take("a-second", 0)],
            ..WriteBatch::default()
        };
        assert_eq!(
            store.commit(both).await,
            Err(StoreError::CounterExhausted("z-first".into()))
        );
        store.commit(only(take("a-full", 1))).await.unwrap();
        let later = WriteBatch {
            counters: vec![take("z-free", 5), take("a-full", 1)],
            ..WriteBatch::default()
        };
        assert_eq!(
            store.commit(later).await,
            Err(StoreError::CounterExhausted("a-full".into()))
        );
        assert_eq!(store.counter("z-free").await.unwrap(), 0, "rolled back");
    }

    /// A failing part (exhausted counter, lost compare-and-swap) leaves nothing applied.
    pub async fn batches_are_all_or_nothing(store: &dyn ClientStore) {
        let a = record("batch-a", 4);
        let exhausted = insert(&a).with_counters([take("uses", 5), take("quota", 0)]);
        assert_eq!(
            store.commit(exhausted).await,
            Err(StoreError::CounterExhausted("quota".into()))
        );
        assert_eq!(
            store.get("batch-a").await.unwrap(),
            None,
            "insert rolled back"
        );
        assert_eq!(store.counter("uses").await.unwrap(), 0, "take rolled back");

        store
            .commit(insert(&a).with_counters([take("uses", 5), take("quota", 1)]))
            .await
            .unwrap();
        assert_eq!(store.counter("uses").await.unwrap(), 1);
        assert_eq!(store.counter("quota").await.unwrap(), 1);

        // A duplicate insert with counters: the counters are not taken.
        assert_eq!(
            store
                .commit(insert(&a).with_counters([take("uses", 5)]))
                .await,
            Err(StoreError::Conflict)
        );
        assert_eq!(store.counter("uses").await.unwrap(), 1);

        // Delete with its release in one batch; a stale delete releases nothing.
        assert_eq!(
            store
                .commit(delete("batch-a", 7).with_counters([release("quota")]))
                .await,
            Err(StoreError::Conflict)
        );
        assert_eq!(store.counter("quota").await.unwrap(), 1);
        store
            .commit(delete("batch-a", 1).with_counters([release("quota")]))
            .await
            .unwrap();
        assert_eq!(store.counter("quota").await.unwrap(), 0);
        assert_eq!(store.get("batch-a").await.unwrap(), None);
    }

    /// Concurrent writers: one compare-and-swap per revision wins; bounded counters never
    /// overshoot.
    pub async fn races(store: &dyn ClientStore) {
        let r = record("race", 20);
        store.commit(insert(&r)).await.unwrap();
        let updates = (0..8u8).map(|i| {
            let mut next = r.clone();
            next.rat_tag = vec![21 + i; 32];
            store.commit(update(1, &next))
        });
        let results = futures_util::future::join_all(updates).await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{results:?}");
        assert!(results
            .iter()
            .all(|r| r.is_ok() || *r == Err(StoreError::Conflict)));
        assert_eq!(store.get("race").await.unwrap().unwrap().revision, 2);
        store.commit(delete("race", 2)).await.unwrap();

        let takes = (0..8).map(|_| {
            store.commit(WriteBatch {
                change: None,
                counters: vec![take("raced", 3)],
                ..WriteBatch::default()
            })
        });
        let results = futures_util::future::join_all(takes).await;
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            3,
            "{results:?}"
        );
        assert_eq!(store.counter("raced").await.unwrap(), 3);
    }

    /// Keyset scan in `client_id` order.
    pub async fn scans(store: &dyn ClientStore) {
        for (i, id) in ["s3", "s1", "s4", "s2"].iter().enumerate() {
            store
                .commit(insert(&record(id, 10 + i as u8)))
                .await
                .unwrap();
        }
        let ids = |v: Vec<ClientRecord>| v.into_iter().map(|r| r.client_id).collect::<Vec<_>>();
        assert_eq!(ids(store.scan(None, 3).await.unwrap()), ["s1", "s2", "s3"]);
        assert_eq!(ids(store.scan(Some("s2"), 10).await.unwrap()), ["s3", "s4"]);
        assert_eq!(
            ids(store.scan(Some("s4"), 10).await.unwrap()),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(store.scan(None, 0).await.unwrap()),
            Vec::<String>::new()
        );
        for id in ["s1", "s2", "s3", "s4"] {
            store.commit(delete(id, 1)).await.unwrap();
        }
    }

    /// Filtered keyset listing: matches only, in order, `next` where the page stopped.
    pub async fn lists(store: &dyn ClientStore) {
        for (i, id) in ["l1", "l2", "l3", "l4", "l5"].iter().enumerate() {
            let mut r = record(id, 20 + i as u8);
            r.disabled = i % 2 == 0;
            r.last_used_at = (i == 4).then_some(100);
            store.commit(insert(&r)).await.unwrap();
        }
        let ids = |l: &Listing| {
            l.records
                .iter()
                .map(|r| r.client_id.clone())
                .collect::<Vec<_>>()
        };
        let disabled = ClientFilter {
            disabled: Some(true),
            ..Default::default()
        };
        let first = store.list(None, 2, &disabled, 0).await.unwrap();
        assert_eq!(ids(&first), ["l1", "l3"]);
        assert_eq!(first.next.as_deref(), Some("l3"));
        let rest = store
            .list(first.next.as_deref(), 2, &disabled, 0)
            .await
            .unwrap();
        assert_eq!(ids(&rest), ["l5"]);
        assert_eq!(rest.next, None);
        let idle = ClientFilter {
            unused_for_secs: Some(50),
            ..Default::default()
        };
        // l5 was used at 100: idle for 50 s at 150, not at 149.
        assert_eq!(
            store
                .list(None, 10, &idle, 149)
                .await
                .unwrap()
                .records
                .len(),
            4
        );
        assert_eq!(
            store
                .list(None, 10, &idle, 150)
                .await
                .unwrap()
                .records
                .len(),
            5
        );
        let all = store
            .list(None, 10, &ClientFilter::default(), 0)
            .await
            .unwrap();
        assert_eq!(ids(&all), ["l1", "l2", "l3", "l4", "l5"]);
        for id in ["l1", "l2", "l3", "l4", "l5"] {
            store.commit(delete(id, 1)).await.unwrap();
        }
    }

    /// The first proposed server key is kept; later proposals get it back.
    pub async fn keeps_one_server_key(store: &dyn ClientStore) {
        let first = store.server_key(vec![1; 32]).await.unwrap();
        assert_eq!(first, vec![1; 32]);
        assert_eq!(store.server_key(vec![2; 32]).await.unwrap(), vec![1; 32]);
    }

    #[test]
    fn records_written_before_policies_and_revisions_still_decode() {
        let old = br#"{"client_id":"a","client_id_issued_at":1,"rat_tag":[],"metadata":{},"updated_at":1}"#;
        let mut bytes = vec![RECORD_VERSION_JSON];
        bytes.extend_from_slice(old);
        let record = ClientRecord::decode(&bytes).unwrap();
        assert_eq!(record.policy, None);
        assert_eq!(record.software_statement, None);
        assert_eq!(record.revision, 0);
    }

    /// A record with every member set (and metadata with coded and uncoded members).
    #[cfg(test)]
    fn every_member() -> ClientRecord {
        let mut a = record("a", 1);
        a.metadata.insert("require_auth_time".into(), false.into());
        a.metadata.insert(
            "redirect_uris".into(),
            serde_json::json!(["https://a.example/cb"]),
        );
        a.metadata.insert(
            "grant_types".into(),
            serde_json::json!(["authorization_code"]),
        );
        let phc = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        ClientRecord {
            client_id_issued_at: -5,
            client_secret_hash: Some(phc.into()),
            client_secret_expires_at: Some(0),
            updated_at: 1_764_000_000,
            policy: Some("mcp".into()),
            tier: Some("anonymous".into()),
            software_statement: Some("eyJ.a.b".into()),
            revision: u64::MAX,
            created_at: i64::MIN,
            last_used_at: Some(i64::MAX),
            disabled: true,
            source: Some(source::ADMIN.into()),
            previous_secret_hash: Some("$argon2id$v=19$not-canonical".into()),
            previous_secret_expires_at: Some(9),
            previous_rat_tag: Some(vec![2; 32]),
            previous_rat_expires_at: Some(10),
            sealed_rat: Some(vec![0, 255, 7]),
            software_key: Some("mcp|x".into()),
            ..a
        }
    }

    #[test]
    fn format_3_keeps_every_member_and_is_smaller_than_format_2() {
        for a in [every_member(), record("b", 3), ClientRecord::default()] {
            let v3 = a.encode().unwrap();
            assert_eq!(v3[0], RECORD_VERSION);
            let back = ClientRecord::decode(&v3).unwrap();
            assert_eq!(back, a);
            assert_eq!(
                serde_json::to_string(&back).unwrap(),
                serde_json::to_string(&a).unwrap()
            );
            // Written again unchanged: the same bytes.
            assert_eq!(back.encode().unwrap(), v3);
            // What format 2 wrote for the same record.
            let (coded, text) = a.metadata.compact().unwrap();
            let mut v2 = vec![RECORD_VERSION_CODED_JSON];
            stored_metadata::write_coded(&coded, &mut v2, false);
            let mut view = a.clone();
            view.metadata = StoredMetadata::from_text(text);
            serde_json::to_writer(&mut v2, &view).unwrap();
            assert_eq!(ClientRecord::decode(&v2).unwrap(), a);
            assert!(v3.len() * 2 < v2.len(), "{} vs {}", v3.len(), v2.len());
        }
    }

    #[test]
    fn a_damaged_format_3_record_is_corrupt_not_a_panic() {
        let bytes = every_member().encode().unwrap();
        for len in 1..bytes.len() {
            assert!(
                matches!(
                    ClientRecord::decode(&bytes[..len]),
                    Err(StoreError::Corrupt(_))
                ),
                "truncated to {len}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            ClientRecord::decode(&longer),
            Err(StoreError::Corrupt(_))
        ));
        // Every single-byte change either fails cleanly or decodes to some record.
        for i in 1..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0xa5;
            let _ = ClientRecord::decode(&bad);
        }
    }

    /// Pins format 2 on disk: a record written by an earlier version reads the same forever.
    #[test]
    fn a_stored_format_2_record_still_reads() {
        let mut bytes = vec![RECORD_VERSION_CODED_JSON, 2, 14, 0, 4, 0];
        bytes.extend_from_slice(
            br#"{"client_id":"a","client_id_issued_at":1,"rat_tag":[1,2],"metadata":{"client_name":"x"},"updated_at":1,"revision":4}"#,
        );
        let record = ClientRecord::decode(&bytes).unwrap();
        assert_eq!(record.client_id, "a");
        assert_eq!(record.rat_tag, [1, 2]);
        assert_eq!(record.revision, 4);
        assert_eq!(
            serde_json::to_string(&record.metadata).unwrap(),
            r#"{"require_auth_time":false,"grant_types":["authorization_code"],"client_name":"x"}"#
        );
        assert_eq!(
            ClientRecord::decode(&record.encode().unwrap()).unwrap(),
            record
        );
    }

    #[test]
    fn format_1_records_still_decode_and_are_written_again_as_format_3() {
        let mut a = record("a", 1);
        a.metadata.insert("require_auth_time".into(), false.into());
        a.metadata.insert(
            "grant_types".into(),
            serde_json::json!(["authorization_code"]),
        );
        let mut v1 = vec![RECORD_VERSION_JSON];
        serde_json::to_writer(&mut v1, &a).unwrap();
        let read = ClientRecord::decode(&v1).unwrap();
        assert_eq!(read, a);
        let v3 = read.encode().unwrap();
        assert_eq!(v3[0], RECORD_VERSION);
        assert!(v3.len() < v1.len(), "{} vs {}", v3.len(), v1.len());
        let again = ClientRecord::decode(&v3).unwrap();
        assert_eq!(again, a);
        // What PostgreSQL and exports see is the whole record either way.
        assert_eq!(
            serde_json::to_string(&again).unwrap(),
            serde_json::to_string(&a).unwrap()
        );
    }

    #[test]
    fn records_round_trip_and_reject_unknown_versions() {
        let a = record("a", 1);
        let bytes = a.encode().unwrap();
        assert_eq!(ClientRecord::decode(&bytes).unwrap(), a);
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(matches!(
            ClientRecord::decode(&bad),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            ClientRecord::decode(&bytes[..5]),
            Err(StoreError::Corrupt(_))
        ));
    }
}
