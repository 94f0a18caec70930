//! Persistence of client registrations behind one trait. Only `sled.rs` knows the embedded
//! store exists; the service sees `ClientStore`.

mod memory;
mod sled;

pub use self::memory::MemoryStore;
pub use self::sled::{OpenError, SledStore};

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

/// A boxed future, so `ClientStore` stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Format version written in front of every stored record.
const RECORD_VERSION: u8 = 1;

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
    /// The registered metadata with defaults applied, in schema order.
    pub metadata: serde_json::Map<String, serde_json::Value>,
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
    /// How the client arrived: `registration` (RFC 7591) or `admin`; `None` (older records)
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
    /// What storm control counts the client as (`policy:software_id`, else
    /// `policy:client_name`), fixed at registration; `None` without a policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_key: Option<String>,
}

impl ClientRecord {
    /// Versioned byte form.
    pub fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let mut out = vec![RECORD_VERSION];
        serde_json::to_writer(&mut out, self).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(out)
    }

    /// Parse the versioned byte form; an unknown version or bad JSON is `Corrupt`.
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        match bytes.split_first() {
            Some((&RECORD_VERSION, json)) => {
                serde_json::from_slice(json).map_err(|e| StoreError::Corrupt(e.to_string()))
            }
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
}

/// What can go wrong in a store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The record changed (or appeared, or vanished) since it was read: another writer won.
    #[error("conflicting concurrent write")]
    Conflict,
    /// A stored value could not be read back.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The storage medium failed (I/O error, disk full); writes are refused until it recovers.
    #[error("storage I/O error: {0}")]
    Io(String),
}

/// Storage of client registrations.
///
/// Writes are atomic. They are durable once `durable()` resolves: callers write, then await
/// `durable()` before acknowledging, and concurrent callers share one flush (group commit).
pub trait ClientStore: Send + Sync + 'static {
    /// The client with this `client_id`, if any.
    fn get(&self, client_id: &str) -> Result<Option<ClientRecord>, StoreError>;
    /// The `client_id` whose current registration access token has this tag, if any.
    fn client_for_rat(&self, rat_tag: &[u8]) -> Result<Option<String>, StoreError>;
    /// Store a new client; `Conflict` if the `client_id` is taken.
    fn insert(&self, record: &ClientRecord) -> Result<(), StoreError>;
    /// Replace `old` with `new` (same `client_id`); `Conflict` if the stored record is not `old`.
    fn replace(&self, old: &ClientRecord, new: &ClientRecord) -> Result<(), StoreError>;
    /// Delete `old`; `Conflict` if the stored record is not `old`.
    fn remove(&self, old: &ClientRecord) -> Result<(), StoreError>;
    /// Resolves when every write that returned before the call is on stable storage.
    fn durable(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Number of stored clients.
    fn len(&self) -> usize;
    /// Add one to the counter `key` unless it has already reached `limit`; `Ok(true)` when it
    /// was added. Atomic, so concurrent callers cannot overshoot `limit`; durable like any write
    /// (await `durable()`). Used for initial access token use counts, software statement `jti`
    /// replay and per-policy client quotas.
    fn increment_counter(&self, key: &str, limit: u64) -> Result<bool, StoreError>;
    /// Subtract one from the counter `key`, never below zero.
    fn decrement_counter(&self, key: &str) -> Result<(), StoreError>;
    /// The value of the counter `key` (0 when it was never incremented).
    fn counter(&self, key: &str) -> Result<u64, StoreError>;
    /// Up to `limit` clients in `client_id` order, starting after `after` (keyset pagination:
    /// a client present for a whole walk is returned exactly once, whatever is inserted or
    /// deleted meanwhile). `WHERE client_id > $1 ORDER BY client_id LIMIT $2` in SQL.
    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<ClientRecord>, StoreError>;
    /// Up to `limit` clients with this `software_key` that were never used, oldest
    /// (`created_at`, then `client_id`) first: storm control's eviction candidates
    /// (`crate::lifecycle`). `WHERE software_key = $1 AND last_used_at IS NULL ORDER BY
    /// created_at, client_id LIMIT $2` in SQL, over an index on `software_key`. This default
    /// walks every client with `scan`; it runs only when a software is at its limit.
    fn unused_clients_of_software(
        &self,
        software_key: &str,
        limit: usize,
    ) -> Result<Vec<ClientRecord>, StoreError> {
        let mut found = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let batch = self.scan(after.as_deref(), 1024)?;
            let Some(last) = batch.last() else { break };
            after = Some(last.client_id.clone());
            found.extend(batch.into_iter().filter(|r| {
                r.last_used_at.is_none() && r.software_key.as_deref() == Some(software_key)
            }));
        }
        found.sort_by(|a, b| (a.created_at, &a.client_id).cmp(&(b.created_at, &b.client_id)));
        found.truncate(limit);
        Ok(found)
    }
    /// Whether the store accepts writes. False after a storage failure (disk full, I/O error)
    /// until the store has recovered; reads keep working meanwhile.
    fn writable(&self) -> bool {
        true
    }
    /// Whether no client is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
pub(crate) mod contract {
    //! The behaviour every `ClientStore` must show; run against each implementation.
    use super::*;

    pub fn record(id: &str, tag: u8) -> ClientRecord {
        let mut metadata = serde_json::Map::new();
        metadata.insert("client_name".into(), "x".into());
        ClientRecord {
            client_id: id.into(),
            client_id_issued_at: 1,
            client_secret_hash: None,
            client_secret_expires_at: None,
            rat_tag: vec![tag; 32],
            metadata,
            updated_at: 1,
            policy: None,
            tier: None,
            software_statement: None,
            created_at: 1,
            ..Default::default()
        }
    }

    pub async fn scans(store: &dyn ClientStore) {
        for id in ["c", "a", "e", "b", "d"] {
            store.insert(&record(id, id.as_bytes()[0])).unwrap();
        }
        let ids = |v: Vec<ClientRecord>| v.into_iter().map(|r| r.client_id).collect::<Vec<_>>();
        assert_eq!(ids(store.scan(None, 2).unwrap()), ["a", "b"]);
        assert_eq!(ids(store.scan(Some("b"), 2).unwrap()), ["c", "d"]);
        // The cursor need not exist any more.
        assert_eq!(ids(store.scan(Some("bb"), 10).unwrap()), ["c", "d", "e"]);
        assert!(store.scan(Some("e"), 10).unwrap().is_empty());
        assert!(store.scan(None, 0).unwrap().is_empty());
        store.durable().await.unwrap();
    }

    pub async fn holds(store: &dyn ClientStore) {
        let a = record("a", 1);
        store.insert(&a).unwrap();
        assert!(matches!(store.insert(&a), Err(StoreError::Conflict)));
        store.durable().await.unwrap();
        assert_eq!(store.get("a").unwrap(), Some(a.clone()));
        assert_eq!(
            store.client_for_rat(&[1; 32]).unwrap().as_deref(),
            Some("a")
        );
        assert_eq!(store.len(), 1);

        let mut b = a.clone();
        b.rat_tag = vec![2; 32];
        store.replace(&a, &b).unwrap();
        assert!(matches!(store.replace(&a, &b), Err(StoreError::Conflict)));
        assert_eq!(store.client_for_rat(&[1; 32]).unwrap(), None);
        assert_eq!(
            store.client_for_rat(&[2; 32]).unwrap().as_deref(),
            Some("a")
        );

        assert!(matches!(store.remove(&a), Err(StoreError::Conflict)));
        store.remove(&b).unwrap();
        store.durable().await.unwrap();
        assert_eq!(store.get("a").unwrap(), None);
        assert_eq!(store.client_for_rat(&[2; 32]).unwrap(), None);
        assert!(store.is_empty());
    }

    pub async fn counts(store: &dyn ClientStore) {
        assert_eq!(store.counter("k").unwrap(), 0);
        assert!(store.increment_counter("k", 2).unwrap());
        assert!(store.increment_counter("k", 2).unwrap());
        assert!(!store.increment_counter("k", 2).unwrap());
        assert_eq!(store.counter("k").unwrap(), 2);
        store.decrement_counter("k").unwrap();
        assert_eq!(store.counter("k").unwrap(), 1);
        store.decrement_counter("k").unwrap();
        store.decrement_counter("k").unwrap();
        assert_eq!(store.counter("k").unwrap(), 0);
        assert_eq!(store.counter("other").unwrap(), 0);
        assert!(!store.increment_counter("zero", 0).unwrap());
        store.durable().await.unwrap();
    }

    pub async fn finds_unused_clients_of_a_software(store: &dyn ClientStore) {
        for (id, created, key, used) in [
            ("a", 5, "s", None),
            ("b", 3, "s", None),
            ("c", 1, "s", Some(9)),
            ("d", 2, "t", None),
            ("e", 3, "s", None),
        ] {
            let mut r = record(id, id.as_bytes()[0]);
            r.created_at = created;
            r.software_key = Some(key.into());
            r.last_used_at = used;
            store.insert(&r).unwrap();
        }
        let ids = |v: Vec<ClientRecord>| v.into_iter().map(|r| r.client_id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.unused_clients_of_software("s", 10).unwrap()),
            ["b", "e", "a"]
        );
        assert_eq!(
            ids(store.unused_clients_of_software("s", 1).unwrap()),
            ["b"]
        );
        assert!(store
            .unused_clients_of_software("u", 10)
            .unwrap()
            .is_empty());
        store.durable().await.unwrap();
    }

    #[test]
    fn records_written_before_policies_still_decode() {
        let old = br#"{"client_id":"a","client_id_issued_at":1,"rat_tag":[],"metadata":{},"updated_at":1}"#;
        let mut bytes = vec![RECORD_VERSION];
        bytes.extend_from_slice(old);
        let record = ClientRecord::decode(&bytes).unwrap();
        assert_eq!(record.policy, None);
        assert_eq!(record.software_statement, None);
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
