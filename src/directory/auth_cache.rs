//! In-memory cache of recently verified client secrets for `Directory::authenticate`
//! (RFC 6749 §2.3.1 client authentication on behalf of the authorization server), so a busy
//! token endpoint does not pay one argon2id verification per request.
//!
//! An entry is keyed by HMAC-SHA-256 under a random per-process key of
//! `len(client_id) ‖ client_id ‖ secret`: neither the secret nor an unkeyed digest of it is kept.
//! It remembers that this secret verified against the client's record at one `revision`, and a
//! SHA-256 fingerprint of the stored hash it matched (the current or the previous secret). A
//! lookup answers only when the freshly read record still has that revision and that hash and
//! the entry is younger than the TTL; any change of the record (rotation, disable, patch,
//! delete and re-create) therefore misses. The caller still applies every other rule (expiry,
//! grace, disabled) to the fresh record, and on anything but a success does the full work, so
//! a hit only ever short-cuts a success that would have succeeded.
//!
//! Bounded: at most `max_entries`; when full, expired entries are dropped first, then an
//! arbitrary one.

use crate::store::ClientRecord;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Which of the record's secrets a cached secret verified against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    /// `client_secret_hash`.
    Current,
    /// `previous_secret_hash` (a rotation's grace).
    Previous,
}

/// One cache hit: which secret matched, and when it was verified with argon2id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hit {
    pub which: Which,
    pub verified_at: i64,
}

struct Entry {
    revision: u64,
    fingerprint: [u8; 32],
    which: Which,
    verified_at: i64,
}

/// The cache; `Directory` holds one when `admin.authenticate_cache_ttl_secs` > 0.
pub(crate) struct AuthCache {
    key: [u8; 32],
    ttl: i64,
    max_entries: usize,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    hits: AtomicU64,
}

fn fingerprint(hash: &str) -> [u8; 32] {
    Sha256::digest(hash.as_bytes()).into()
}

impl AuthCache {
    /// A cache keeping entries `ttl_secs` seconds, at most `max_entries` (both > 0), under a
    /// fresh random key.
    pub(crate) fn new(ttl_secs: u64, max_entries: usize) -> Self {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        Self {
            key,
            ttl: i64::try_from(ttl_secs).unwrap_or(i64::MAX),
            max_entries: max_entries.max(1),
            entries: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
        }
    }

    fn digest(&self, client_id: &str, secret: &str) -> [u8; 32] {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(&(client_id.len() as u64).to_be_bytes());
        mac.update(client_id.as_bytes());
        mac.update(secret.as_bytes());
        mac.finalize().into_bytes().into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // The map holds no invariant a panicking holder could break half-way.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stored_hash(record: &ClientRecord, which: Which) -> Option<&str> {
        match which {
            Which::Current => record.client_secret_hash.as_deref(),
            Which::Previous => record.previous_secret_hash.as_deref(),
        }
    }

    /// Whether `secret` verified against `record` as it is now (same revision, same stored
    /// hash) less than the TTL before `now`.
    pub(crate) fn lookup(
        &self,
        client_id: &str,
        secret: &str,
        record: &ClientRecord,
        now: i64,
    ) -> Option<Hit> {
        let digest = self.digest(client_id, secret);
        let mut entries = self.lock();
        let entry = entries.get(&digest)?;
        let fresh = now >= entry.verified_at && now - entry.verified_at < self.ttl;
        let same = entry.revision == record.revision
            && Self::stored_hash(record, entry.which).map(fingerprint) == Some(entry.fingerprint);
        if !(fresh && same) {
            entries.remove(&digest);
            return None;
        }
        Some(Hit {
            which: entry.which,
            verified_at: entry.verified_at,
        })
    }

    /// Remember that `secret` verified (at `verified_at`) against `record`'s `which` secret.
    pub(crate) fn insert(
        &self,
        client_id: &str,
        secret: &str,
        record: &ClientRecord,
        which: Which,
        verified_at: i64,
    ) {
        let Some(hash) = Self::stored_hash(record, which) else {
            return;
        };
        let digest = self.digest(client_id, secret);
        let entry = Entry {
            revision: record.revision,
            fingerprint: fingerprint(hash),
            which,
            verified_at,
        };
        let mut entries = self.lock();
        if entries.len() >= self.max_entries && !entries.contains_key(&digest) {
            let (ttl, now) = (self.ttl, verified_at);
            entries.retain(|_, e| now >= e.verified_at && now - e.verified_at < ttl);
            if entries.len() >= self.max_entries {
                if let Some(victim) = entries.keys().next().copied() {
                    entries.remove(&victim);
                }
            }
        }
        entries.insert(digest, entry);
    }

    /// Count a hit that answered a request (it was a success).
    pub(crate) fn count_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Hits that answered a request so far (tests).
    #[cfg(test)]
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Entries held (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}
