//! Client lifecycle: what happens to a registration after RFC 7591 created it.
//!
//! - **RAT grace** (`registration.rat_grace_secs`): after a rotation of the registration access
//!   token (RFC 7592 §3 lets the server rotate on any call) the previous token still answers
//!   GET, with the registration and the *new* token, until the grace ends or the new token is
//!   first used. PUT and DELETE with it are refused (401), so it grants nothing its holder did
//!   not already have, and a client that lost the rotating response can recover.
//! - **Secret renewal** (`credentials.client_secret_*`): an RFC 7592 §2.2 PUT near or shortly
//!   after `client_secret_expires_at` returns a new `client_secret`.
//! - **Reaping** (`[lifecycle]`): the [`Sweeper`] deletes clients never used, or unused for
//!   too long.
//! - **Storm control** (a policy's `max_clients_per_software`): a new registration beyond the
//!   limit evicts the oldest never-used client of the same software.
//!
//! The decisions are plain functions over a `ClientRecord` here; the registration service
//! calls them and does the writes.

mod sweeper;

pub use self::sweeper::{SweepReport, Sweeper, SweeperHandle};

use crate::credentials::{Plaintext, RatKey, SealKey};
use crate::settings::CredentialSettings;
use crate::store::{source, ClientRecord, ClientStore, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};

/// `[lifecycle]`: reaping of abandoned registrations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleSettings {
    /// Delete clients never used this many seconds after registration; 0 = off.
    pub unused_client_ttl_secs: u64,
    /// Delete clients whose last use (registration if never used) is older; 0 = off.
    pub inactive_client_ttl_secs: u64,
    /// Seconds between sweeps.
    pub sweep_interval_secs: u64,
    /// Clients read per store scan.
    pub sweep_batch: usize,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        Self {
            unused_client_ttl_secs: 0,
            inactive_client_ttl_secs: 0,
            sweep_interval_secs: 3600,
            sweep_batch: 500,
        }
    }
}

impl LifecycleSettings {
    /// Whether any reaping is configured (the sweeper runs only then).
    pub fn reaps(&self) -> bool {
        self.unused_client_ttl_secs > 0 || self.inactive_client_ttl_secs > 0
    }

    /// Check what serde cannot.
    pub fn check(&self) -> Result<(), String> {
        if self.reaps() && self.sweep_interval_secs == 0 {
            return Err("lifecycle.sweep_interval_secs must be at least 1".into());
        }
        if self.sweep_batch == 0 {
            return Err("lifecycle.sweep_batch must be at least 1".into());
        }
        Ok(())
    }
}

fn secs(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

// --- RAT grace ------------------------------------------------------------------------------

/// Which token of `record` the presented one is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatMatch {
    /// The current registration access token.
    Current,
    /// The token replaced by the last rotation, within its grace: good for GET only.
    Previous,
    /// Neither.
    None,
}

/// Compare `presented` with the current token and, within the grace, the previous one (both in
/// constant time, RFC 7592 §2 token check).
pub fn match_rat(record: &ClientRecord, key: &RatKey, presented: &str, now: i64) -> RatMatch {
    if key.matches(presented, &record.rat_tag) {
        return RatMatch::Current;
    }
    match (&record.previous_rat_tag, record.previous_rat_expires_at) {
        (Some(tag), Some(until)) if now < until && key.matches(presented, tag) => {
            RatMatch::Previous
        }
        _ => RatMatch::None,
    }
}

/// Make `new` the current token of `record`. With `grace_secs` > 0 the replaced token stays
/// good for GET until `now + grace_secs`, and `new` is sealed to it so that GET can return it:
/// keyed with the replaced token itself when the caller presented it (`previous`), else with
/// its tag (the admin API's reissue).
pub fn rotate_rat(
    record: &mut ClientRecord,
    key: &RatKey,
    new: &Plaintext,
    now: i64,
    grace_secs: u64,
    previous: Option<&str>,
) {
    let old = std::mem::replace(&mut record.rat_tag, key.tag(new.expose()).to_vec());
    if grace_secs == 0 || old.is_empty() {
        end_grace(record);
        return;
    }
    let source = match previous {
        Some(token) => SealKey::PreviousToken(token),
        None => SealKey::PreviousTag(&old),
    };
    record.sealed_rat = Some(key.seal(source, new));
    record.previous_rat_tag = Some(old);
    record.previous_rat_expires_at = Some(now.saturating_add(secs(grace_secs)));
}

/// End the grace of the previous token (the current one was used, or the token revoked);
/// true when there was one.
pub fn end_grace(record: &mut ClientRecord) -> bool {
    let had = record.previous_rat_tag.is_some();
    record.previous_rat_tag = None;
    record.previous_rat_expires_at = None;
    record.sealed_rat = None;
    had
}

/// The current token, opened from its seal with the `presented` previous token; for a GET in
/// its grace.
pub fn sealed_token(record: &ClientRecord, key: &RatKey, presented: &str) -> Option<Plaintext> {
    key.unseal(presented, record.sealed_rat.as_deref()?, &record.rat_tag)
}

// --- use ------------------------------------------------------------------------------------

/// Record a use of the client at `now` (authentication, RFC 7592 call), at most once per
/// `resolution` seconds so a busy client does not write on every request; true when
/// `record.last_used_at` changed and needs writing.
pub fn mark_used(record: &mut ClientRecord, now: i64, resolution: i64) -> bool {
    if !use_due(record, now, resolution) {
        return false;
    }
    record.last_used_at = Some(now);
    true
}

/// Whether a use at `now` is to be written (see [`mark_used`]): never used, or last recorded
/// `resolution` seconds ago or more.
pub fn use_due(record: &ClientRecord, now: i64, resolution: i64) -> bool {
    record
        .last_used_at
        .is_none_or(|at| now.saturating_sub(at) >= resolution)
}

// --- secret renewal -------------------------------------------------------------------------

/// Whether an RFC 7592 §2.2 PUT at `now` renews a secret expiring at `expires_at`: with a
/// lifetime configured, from `client_secret_renew_before_secs` (default a tenth of the
/// lifetime) before the expiry until `client_secret_expired_grace_secs` after it.
pub fn secret_due_for_renewal(
    expires_at: Option<i64>,
    now: i64,
    settings: &CredentialSettings,
) -> bool {
    let lifetime = settings.client_secret_lifetime_secs;
    let Some(at) = expires_at.filter(|&at| at != 0) else {
        return false;
    };
    if lifetime == 0 {
        return false;
    }
    let before = settings
        .client_secret_renew_before_secs
        .unwrap_or(lifetime / 10);
    let opens = at.saturating_sub(secs(before));
    let closes = at.saturating_add(secs(settings.client_secret_expired_grace_secs));
    now >= opens && now < closes
}

/// Until when the secret replaced by a renewal at `now` still authenticates: the configured
/// overlap, never past its own expiry; `None` when it stops at once.
pub fn renewal_overlap_until(
    old_expires_at: Option<i64>,
    now: i64,
    settings: &CredentialSettings,
) -> Option<i64> {
    let overlap = settings.client_secret_renewal_overlap_secs;
    if overlap == 0 {
        return None;
    }
    let until = now.saturating_add(secs(overlap));
    let until = match old_expires_at {
        Some(at) if at != 0 => until.min(at),
        _ => until,
    };
    (until > now).then_some(until)
}

/// Discovery member (an RFC 8414 §2 extension) telling clients how secret renewal works.
pub const RENEWAL_MEMBER: &str = "registrar_client_secret_renewal";

/// The value of [`RENEWAL_MEMBER`]: present only when secrets expire. `method` says a client
/// renews with an RFC 7592 §2.2 PUT of its registration inside `[expires_at - renew_before_secs,
/// expires_at + expired_grace_secs)`; the response then carries the new `client_secret`.
pub fn renewal_discovery(settings: &CredentialSettings) -> Option<Value> {
    let lifetime = settings.client_secret_lifetime_secs;
    if lifetime == 0 {
        return None;
    }
    Some(serde_json::json!({
        "method": "rfc7592_put",
        "client_secret_lifetime_secs": lifetime,
        "renew_before_secs": settings.client_secret_renew_before_secs.unwrap_or(lifetime / 10),
        "expired_grace_secs": settings.client_secret_expired_grace_secs,
        "overlap_secs": settings.client_secret_renewal_overlap_secs,
    }))
}

// --- reaping --------------------------------------------------------------------------------

/// Why the sweeper deletes a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReapReason {
    /// Never used, `unused_client_ttl_secs` after registration.
    Unused,
    /// Last used (or registered) more than `inactive_client_ttl_secs` ago.
    Inactive,
}

impl ReapReason {
    /// Name in logs and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unused => "unused",
            Self::Inactive => "inactive",
        }
    }
}

/// Whether the sweeper deletes `record` at `now`. Admin-created clients and clients of a
/// policy for which `exempt` says true are never reaped.
pub fn reap_reason(
    record: &ClientRecord,
    now: i64,
    settings: &LifecycleSettings,
    exempt: impl Fn(&str) -> bool,
) -> Option<ReapReason> {
    if record.source.as_deref() == Some(source::ADMIN)
        || record.policy.as_deref().is_some_and(exempt)
    {
        return None;
    }
    let created = if record.created_at != 0 {
        record.created_at
    } else {
        record.client_id_issued_at
    };
    let older = |at: i64, ttl: u64| ttl > 0 && now.saturating_sub(at) >= secs(ttl);
    if record.last_used_at.is_none() && older(created, settings.unused_client_ttl_secs) {
        return Some(ReapReason::Unused);
    }
    if older(
        record.last_used_at.unwrap_or(created),
        settings.inactive_client_ttl_secs,
    ) {
        return Some(ReapReason::Inactive);
    }
    None
}

// --- storm control --------------------------------------------------------------------------

/// What storm control counts a client of `policy` as: its `software_id` (RFC 7591 §2), else
/// its `client_name`, else one bucket for unnamed clients.
pub fn software_key(policy: &str, metadata: &Map<String, Value>) -> String {
    let (kind, name) = match (
        metadata.get("software_id").and_then(Value::as_str),
        metadata.get("client_name").and_then(Value::as_str),
    ) {
        (Some(id), _) => ("id", id),
        (None, Some(name)) => ("name", name),
        (None, None) => ("none", ""),
    };
    format!("{policy}\u{1f}{kind}\u{1f}{name}")
}

/// The store counter holding the number of clients with `software_key`.
pub fn software_counter(software_key: &str) -> String {
    format!("software-clients:{software_key}")
}

/// How many of the oldest never-used clients one store query fetches for storm control.
const EVICTION_BATCH: usize = 64;

/// Most software keys with queued candidates; past it the queues start over (they are only a
/// cache of the store).
const MAX_QUEUED_SOFTWARE: usize = 1024;

/// Storm control's eviction candidates, oldest first, per software key: fetched from the store
/// [`EVICTION_BATCH`] at a time, so a storm costs one store query per that many evictions, and
/// concurrent registrations take different candidates. A queued record may be stale (used,
/// changed or deleted since); the compare-and-delete of the eviction then fails and the next
/// one is taken, so a client used meanwhile is never evicted.
#[derive(Default)]
pub struct EvictionQueue(std::sync::Mutex<HashMap<String, VecDeque<ClientRecord>>>);

impl EvictionQueue {
    /// The next candidate for `software_key`; `None` when the store has no never-used client
    /// of it.
    pub async fn next(
        &self,
        store: &dyn ClientStore,
        software_key: &str,
    ) -> Result<Option<ClientRecord>, StoreError> {
        if let Some(next) = self
            .lock()
            .get_mut(software_key)
            .and_then(VecDeque::pop_front)
        {
            return Ok(Some(next));
        }
        let mut fetched: VecDeque<ClientRecord> = store
            .unused_clients_of_software(software_key, EVICTION_BATCH)
            .await?
            .into();
        let next = fetched.pop_front();
        let mut queues = self.lock();
        if queues.len() >= MAX_QUEUED_SOFTWARE {
            queues.clear();
        }
        // Concurrent refills of one key: the last one wins; the candidates are the same.
        queues.insert(software_key.to_owned(), fetched);
        Ok(next)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<ClientRecord>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

// --- audit call sites -----------------------------------------------------------------------

/// A client was deleted by the sweeper. The one place the audit trail hooks in for reaping.
pub fn audit_reaped(record: &ClientRecord, reason: ReapReason) {
    tracing::info!(client_id = %record.client_id, reason = reason.as_str(), "client reaped");
}

/// A never-used client was evicted by storm control to make room for a new registration of
/// the same software. The one place the audit trail hooks in for eviction.
pub fn audit_evicted(record: &ClientRecord, policy: &str) {
    tracing::info!(client_id = %record.client_id, policy = %policy, "client evicted by storm control");
}

#[cfg(test)]
mod tests;
