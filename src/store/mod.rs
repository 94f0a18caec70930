//! Persistence of client registrations behind one trait. Only `sled.rs` knows the embedded
//! store exists; the service sees `ClientStore`.

pub(crate) mod event_log;
mod memory;
mod sled;
mod sled_events;

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
