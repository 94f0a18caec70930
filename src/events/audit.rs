//! The audit record, its hash chain and retention.
//!
//! Every state change of a client produces one [`AuditRecord`]. The service fills in what
//! happened ([`AuditEntry`]); the store, inside the atomic write of the change, appends it to the
//! one chain with [`seal`]: `seq = head.seq + 1`, `prev_hash = head.hash`, and
//! `hash = SHA-256(prev_hash ‖ canonical record)` (32 raw bytes of `prev_hash`, then the
//! canonical JSON of every other member). The first record's `prev_hash` is 64 zeros.
//!
//! A record names what changed (member names, SHA-256 of the client view before and after) but
//! never a secret, a token or a hash of one: the digests are over [`client_view`], which has no
//! credential material.
//!
//! Retention (`audit.retention_days`) removes a prefix of the chain and appends, in the same
//! write, a checkpoint record carrying the removed head (`pruned_through`, `pruned_head`); the
//! rest still verifies because the first remaining record's `prev_hash` must equal the
//! checkpoint's `pruned_head`, and the checkpoint itself is inside the chain.

use super::hex;
use crate::store::ClientRecord;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened (issue #17 point 1). The wire names are the `event` member and the webhook
/// `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// RFC 7591 §3.1 registration.
    #[serde(rename = "client.registered")]
    Registered,
    /// Created by an operator through the admin API.
    #[serde(rename = "client.created")]
    Created,
    /// RFC 7592 §2.2 PUT or admin PATCH.
    #[serde(rename = "client.updated")]
    Updated,
    /// RFC 7592 §2.3 DELETE or admin delete.
    #[serde(rename = "client.deleted")]
    Deleted,
    /// Disabled by an operator.
    #[serde(rename = "client.disabled")]
    Disabled,
    /// Enabled again by an operator.
    #[serde(rename = "client.enabled")]
    Enabled,
    /// A new `client_secret` was issued.
    #[serde(rename = "client.secret_rotated")]
    SecretRotated,
    /// A new registration access token was issued by an operator.
    #[serde(rename = "client.registration_access_token_reissued")]
    RatReissued,
    /// Removed by the sweeper (expired or unused).
    #[serde(rename = "client.reaped")]
    Reaped,
    /// Removed by storm protection.
    #[serde(rename = "client.evicted")]
    Evicted,
    /// A Client ID Metadata Document client seen for the first time.
    #[serde(rename = "client.resolved")]
    Resolved,
    /// A Client ID Metadata Document changed.
    #[serde(rename = "client.document_changed")]
    DocumentChanged,
    /// Retention removed the records before this one; never sent to webhooks.
    #[serde(rename = "audit.checkpoint")]
    Checkpoint,
}

impl EventType {
    /// Every client event (the ones webhooks may subscribe to).
    pub const CLIENT_EVENTS: [EventType; 12] = [
        EventType::Registered,
        EventType::Created,
        EventType::Updated,
        EventType::Deleted,
        EventType::Disabled,
        EventType::Enabled,
        EventType::SecretRotated,
        EventType::RatReissued,
        EventType::Reaped,
        EventType::Evicted,
        EventType::Resolved,
        EventType::DocumentChanged,
    ];

    /// The wire name, e.g. `client.registered`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Registered => "client.registered",
            EventType::Created => "client.created",
            EventType::Updated => "client.updated",
            EventType::Deleted => "client.deleted",
            EventType::Disabled => "client.disabled",
            EventType::Enabled => "client.enabled",
            EventType::SecretRotated => "client.secret_rotated",
            EventType::RatReissued => "client.registration_access_token_reissued",
            EventType::Reaped => "client.reaped",
            EventType::Evicted => "client.evicted",
            EventType::Resolved => "client.resolved",
            EventType::DocumentChanged => "client.document_changed",
            EventType::Checkpoint => "audit.checkpoint",
        }
    }

    /// Parse a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::CLIENT_EVENTS
            .into_iter()
            .chain([EventType::Checkpoint])
            .find(|e| e.as_str() == name)
    }

    /// Whether the client is gone after this event (the webhook `data` is then `{client_id}`).
    pub fn removes_client(self) -> bool {
        matches!(
            self,
            EventType::Deleted | EventType::Reaped | EventType::Evicted
        )
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who caused a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// RFC 7591 registration without credentials.
    Anonymous,
    /// RFC 7591 §3 registration with an initial access token.
    InitialAccessToken,
    /// RFC 7591 §2.3 registration with a software statement (and no token).
    SoftwareStatement,
    /// RFC 7592 management with the client's registration access token.
    RegistrationAccessToken,
    /// An operator through the admin API.
    Admin,
    /// The server itself (sweeper, storm protection, CIMD resolution, retention).
    System,
}

/// The actor of a record: its kind plus what identifies it without revealing a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    /// The admin token's configured `name`.
    pub name: Option<String>,
    /// The software statement's `iss`.
    pub iss: Option<String>,
    /// A short digest of the initial access token ([`Actor::token_digest`]), enough to tell
    /// tokens apart in the configuration, far too short to stand in for the token.
    pub token_digest: Option<String>,
}

impl Actor {
    /// An actor of `kind` with nothing else known.
    pub fn new(kind: ActorKind) -> Self {
        Self {
            kind,
            name: None,
            iss: None,
            token_digest: None,
        }
    }

    /// The server itself.
    pub fn system() -> Self {
        Self::new(ActorKind::System)
    }

    /// An operator with the admin token named `name`.
    pub fn admin(name: &str) -> Self {
        Self {
            name: Some(name.to_owned()),
            ..Self::new(ActorKind::Admin)
        }
    }

    /// The first 12 hex digits (48 bits) of SHA-256 of an initial access token: the prefix of
    /// the `sha256` an operator configures for a static token, so it names the token, while
    /// 48 bits of a 256-bit token's hash say nothing useful about the token.
    pub fn token_digest(token: &str) -> String {
        let digest = Sha256::digest(token.as_bytes());
        hex(&digest[..6])
    }
}

/// What retention removed, carried by the `audit.checkpoint` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last removed `seq`; the first remaining record is `pruned_through + 1`.
    pub pruned_through: u64,
    /// The `hash` of the record `pruned_through`: the first remaining record's `prev_hash`.
    pub pruned_head: String,
    /// How many records this pruning removed.
    pub pruned_count: u64,
}

/// A change as the service describes it, before the store puts it in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Seconds since the epoch, from the injected clock.
    pub time: i64,
    pub event: EventType,
    /// The client concerned (`None` only for checkpoints).
    pub client_id: Option<String>,
    pub actor: Actor,
    /// The caller's address (socket peer, or from a trusted proxy's header).
    pub source_ip: Option<String>,
    /// The request id of the call, when there is one.
    pub request_id: Option<String>,
    /// Names of the members that changed, sorted.
    pub changed: Vec<String>,
    /// SHA-256 (hex) of the client view before the change; `None` when the client was new.
    pub before: Option<String>,
    /// SHA-256 (hex) of the client view after the change; `None` when it was removed.
    pub after: Option<String>,
    pub checkpoint: Option<Checkpoint>,
}

impl AuditEntry {
    /// An entry for a change of one client from `before` to `after` (either may be absent):
    /// the changed member names and both digests are computed here. `extra_changed` names
    /// credential members that changed without showing in the view (`client_secret`,
    /// `registration_access_token`).
    pub fn for_change(
        time: i64,
        event: EventType,
        client_id: &str,
        actor: Actor,
        before: Option<&ClientRecord>,
        after: Option<&ClientRecord>,
        extra_changed: &[&str],
    ) -> Self {
        let before = before.map(client_view);
        let after = after.map(client_view);
        let mut changed = changed_members(before.as_ref(), after.as_ref());
        changed.extend(extra_changed.iter().map(|s| (*s).to_owned()));
        changed.sort();
        changed.dedup();
        Self {
            time,
            event,
            client_id: Some(client_id.to_owned()),
            actor,
            source_ip: None,
            request_id: None,
            changed,
            before: before.as_ref().map(view_digest),
            after: after.as_ref().map(view_digest),
            checkpoint: None,
        }
    }

    /// Set the source address and request id.
    pub fn from_request(mut self, source_ip: Option<String>, request_id: Option<String>) -> Self {
        self.source_ip = source_ip;
        self.request_id = request_id;
        self
    }

    /// The checkpoint entry of a pruning.
    pub fn checkpoint(time: i64, checkpoint: Checkpoint) -> Self {
        Self {
            time,
            event: EventType::Checkpoint,
            client_id: None,
            actor: Actor::system(),
            source_ip: None,
            request_id: None,
            changed: Vec::new(),
            before: None,
            after: None,
            checkpoint: Some(checkpoint),
        }
    }
}

/// One stored, chained audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub time: i64,
    pub event: EventType,
    pub client_id: Option<String>,
    pub actor: Actor,
    pub source_ip: Option<String>,
    pub request_id: Option<String>,
    pub changed: Vec<String>,
    pub before: Option<String>,
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
    pub prev_hash: String,
    pub hash: String,
}

/// The hashed part of a record: every member but `prev_hash` and `hash`, in this order, absent
/// values as `null` (so the form does not depend on how the record was stored).
#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    time: i64,
    event: EventType,
    client_id: &'a Option<String>,
    actor: &'a Actor,
    source_ip: &'a Option<String>,
    request_id: &'a Option<String>,
    changed: &'a [String],
    before: &'a Option<String>,
    after: &'a Option<String>,
    checkpoint: &'a Option<Checkpoint>,
}

impl AuditRecord {
    /// The canonical bytes that are hashed: compact JSON of [`Canonical`]. serde_json writes
    /// struct members in declaration order and escapes strings one way only, so a record read
    /// back from any store yields the same bytes.
    pub fn canonical(&self) -> Vec<u8> {
        let view = Canonical {
            seq: self.seq,
            time: self.time,
            event: self.event,
            client_id: &self.client_id,
            actor: &self.actor,
            source_ip: &self.source_ip,
            request_id: &self.request_id,
            changed: &self.changed,
            before: &self.before,
            after: &self.after,
            checkpoint: &self.checkpoint,
        };
        // Serialising plain strings, integers and enums cannot fail.
        serde_json::to_vec(&view).unwrap_or_default()
    }

    /// `SHA-256(prev_hash ‖ canonical)` as hex, or `None` when `prev_hash` is not 64 hex digits.
    pub fn compute_hash(&self) -> Option<String> {
        let prev = unhex32(&self.prev_hash)?;
        let mut h = Sha256::new();
        h.update(prev);
        h.update(self.canonical());
        Some(hex(&h.finalize()))
    }

    /// The chain head this record makes.
    pub fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}

/// The end of the chain: the last `seq` and its `hash` (`0` and [`GENESIS_HASH`] when empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

impl Default for ChainHead {
    fn default() -> Self {
        Self {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }
}

/// Append `entry` after `head`. Called by the store inside the write that carries the change,
/// with the head read in the same transaction, so concurrent writes cannot fork the chain.
pub fn seal(head: &ChainHead, entry: AuditEntry) -> AuditRecord {
    let mut record = AuditRecord {
        seq: head.seq + 1,
        time: entry.time,
        event: entry.event,
        client_id: entry.client_id,
        actor: entry.actor,
        source_ip: entry.source_ip,
        request_id: entry.request_id,
        changed: entry.changed,
        before: entry.before,
        after: entry.after,
        checkpoint: entry.checkpoint,
        prev_hash: head.hash.clone(),
        hash: String::new(),
    };
    record.hash = record.compute_hash().unwrap_or_default();
    record
}

/// Why a stored trail does not verify: the first bad `seq` and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seq {seq}: {reason}")]
pub struct ChainError {
    pub seq: u64,
    pub reason: String,
}

/// A trail that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records checked.
    pub count: u64,
    /// The last record's `seq` and `hash`: publish it elsewhere to detect removal of the tail,
    /// which no chain can show by itself.
    pub head: ChainHead,
}

impl std::fmt::Display for Verified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records, chain intact, head {}",
            self.count, self.head.hash
        )
    }
}

/// Checks a trail fed in stored (key) order, in one pass and constant memory.
///
/// Detects an edited record (its hash no longer matches), a deleted one (a gap in `seq`, or a
/// `prev_hash` that is not its predecessor's hash), reordered ones (a `seq` out of order), and
/// a removed prefix without a checkpoint that accounts for it.
#[derive(Debug, Default)]
pub struct ChainVerifier {
    count: u64,
    last: Option<ChainHead>,
    /// The first record when its `seq` is not 1: some checkpoint must account for what is
    /// missing before it.
    pending_prefix: Option<(u64, String)>,
    prefix_accounted: bool,
}

impl ChainVerifier {
    /// A verifier that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Check the next stored record.
    pub fn push(&mut self, record: &AuditRecord) -> Result<(), ChainError> {
        let bad = |reason: String| ChainError {
            seq: record.seq,
            reason,
        };
        match &self.last {
            None if record.seq == 1 => {
                if record.prev_hash != GENESIS_HASH {
                    return Err(bad(
                        "the first record's prev_hash is not the genesis hash".into()
                    ));
                }
            }
            None => {
                if record.seq == 0 {
                    return Err(bad("seq 0 is not a valid sequence number".into()));
                }
                self.pending_prefix = Some((record.seq, record.prev_hash.clone()));
            }
            Some(last) => {
                if record.seq <= last.seq {
                    return Err(ChainError {
                        seq: record.seq,
                        reason: format!("out of order: follows seq {}", last.seq),
                    });
                }
                if record.seq != last.seq + 1 {
                    return Err(ChainError {
                        seq: last.seq + 1,
                        reason: format!("missing: the next stored record is seq {}", record.seq),
                    });
                }
                if record.prev_hash != last.hash {
                    return Err(bad(format!(
                        "prev_hash does not match the hash of seq {}",
                        last.seq
                    )));
                }
            }
        }
        match record.compute_hash() {
            Some(hash) if hash == record.hash => {}
            _ => return Err(bad("the record does not match its hash (edited)".into())),
        }
        if let (Some(cp), Some((first, prev))) = (&record.checkpoint, &self.pending_prefix) {
            if cp.pruned_through + 1 == *first && &cp.pruned_head == prev {
                self.prefix_accounted = true;
            }
        }
        self.count += 1;
        self.last = Some(record.head());
        Ok(())
    }

    /// The verdict once every record was pushed.
    pub fn finish(self) -> Result<Verified, ChainError> {
        if let Some((first, _)) = self.pending_prefix {
            if !self.prefix_accounted {
                return Err(ChainError {
                    seq: first,
                    reason: format!(
                        "records before seq {first} are missing and no checkpoint accounts for them"
                    ),
                });
            }
        }
        Ok(Verified {
            count: self.count,
            head: self.last.unwrap_or_default(),
        })
    }
}

/// Verify a whole trail given in stored order.
pub fn verify<'a>(
    records: impl IntoIterator<Item = &'a AuditRecord>,
) -> Result<Verified, ChainError> {
    let mut v = ChainVerifier::new();
    for r in records {
        v.push(r)?;
    }
    v.finish()
}

/// `[audit]` settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// Whether changes write audit records (default true). Off, a change writes no record
    /// (its webhook outbox rows still are written) and the chain has no entry for it; the
    /// records that exist stay listable and verifiable (issue #17 point 6).
    #[serde(default = "audit_enabled_default")]
    pub enabled: bool,
    /// Records older than this many days are pruned (a checkpoint keeps the rest verifiable);
    /// 0 = keep everything.
    #[serde(default)]
    pub retention_days: u32,
}

fn audit_enabled_default() -> bool {
    true
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            retention_days: 0,
        }
    }
}

impl AuditSettings {
    /// Records with `time` before this are due for pruning, if retention is on.
    pub fn cutoff(&self, now: i64) -> Option<i64> {
        (self.retention_days > 0).then(|| now - i64::from(self.retention_days) * 86_400)
    }
}

/// The checkpoint for pruning the oldest records (fed in `seq` order) whose `time` is before
/// `cutoff`; `None` when none is. Pruning stops at the first newer record, so only a prefix of
/// the chain is ever removed.
pub fn plan_prune<'a>(
    oldest_first: impl IntoIterator<Item = &'a AuditRecord>,
    cutoff: i64,
) -> Option<Checkpoint> {
    let mut plan: Option<Checkpoint> = None;
    for r in oldest_first {
        if r.time >= cutoff {
            break;
        }
        let count = plan.as_ref().map_or(0, |p| p.pruned_count) + 1;
        plan = Some(Checkpoint {
            pruned_through: r.seq,
            pruned_head: r.hash.clone(),
            pruned_count: count,
        });
    }
    plan
}

/// The client as events show it: `client_id`, `client_id_issued_at`,
/// `client_secret_expires_at` and the registered metadata, without any credential material
/// (no secret hash, no token tag). The webhook `data` and the digests of audit records.
pub fn client_view(record: &ClientRecord) -> Map<String, Value> {
    // One definition of the view's members and their order: [`ClientViewRef`]. Serialising
    // it into a `Value` cannot fail (string keys, JSON values).
    match serde_json::to_value(ClientViewRef(record)) {
        Ok(Value::Object(view)) => view,
        _ => Map::new(),
    }
}

/// The view ([`client_view`]) serialised straight from the record, without building the map
/// (the webhook payload of every change writes it this way). A metadata member named like one
/// of the view's own members is skipped; the metadata engine never stores one.
pub struct ClientViewRef<'a>(pub &'a ClientRecord);

impl Serialize for ClientViewRef<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        const OWN: [&str; 4] = [
            "client_id",
            "client_id_issued_at",
            "client_secret_expires_at",
            "software_statement",
        ];
        let record = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("client_id", &record.client_id)?;
        map.serialize_entry("client_id_issued_at", &record.client_id_issued_at)?;
        if let Some(expires) = record.client_secret_expires_at {
            map.serialize_entry("client_secret_expires_at", &expires)?;
        }
        for (k, v) in record.metadata.iter() {
            if !OWN.contains(&k.as_str()) {
                map.serialize_entry(k, v)?;
            }
        }
        if let Some(statement) = &record.software_statement {
            map.serialize_entry("software_statement", statement)?;
        }
        map.end()
    }
}

/// SHA-256 (hex) of the view's canonical JSON (object members sorted by name at every level).
pub fn view_digest(view: &Map<String, Value>) -> String {
    let mut bytes = Vec::with_capacity(1024);
    write_sorted_map(view, &mut bytes);
    hex(&Sha256::digest(&bytes))
}

/// Names of the members whose value differs between two views, sorted.
pub fn changed_members(
    before: Option<&Map<String, Value>>,
    after: Option<&Map<String, Value>>,
) -> Vec<String> {
    let empty = Map::new();
    let (b, a) = (before.unwrap_or(&empty), after.unwrap_or(&empty));
    let mut names: Vec<String> = b
        .keys()
        .chain(a.keys())
        .filter(|k| b.get(*k) != a.get(*k))
        .cloned()
        .collect();
    names.sort();
    names.dedup();
    names
}

fn write_sorted(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => write_sorted_map(map, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_sorted(v, out);
            }
            out.push(b']');
        }
        // Writing a scalar into a Vec cannot fail.
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}

/// An object's members sorted by name (byte order), each value canonical in turn.
fn write_sorted_map(map: &Map<String, Value>, out: &mut Vec<u8>) {
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (k, v)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // A string always serialises.
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        write_sorted(v, out);
    }
    out.push(b'}');
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::contract::named as client_named;
    use crate::store::event_log::contract::entry;

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut head = ChainHead::default();
        (0..n)
            .map(|i| {
                let r = seal(
                    &head,
                    entry(100 + i as i64, &format!("c{i}"), EventType::Registered),
                );
                head = r.head();
                r
            })
            .collect()
    }

    #[test]
    fn event_names_round_trip_and_match_the_issue() {
        for e in EventType::CLIENT_EVENTS
            .into_iter()
            .chain([EventType::Checkpoint])
        {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(json, format!("\"{}\"", e.as_str()));
            assert_eq!(EventType::parse(e.as_str()), Some(e));
        }
        assert_eq!(
            EventType::RatReissued.as_str(),
            "client.registration_access_token_reissued"
        );
        assert_eq!(EventType::parse("client.nope"), None);
        assert_eq!(
            serde_json::to_string(&ActorKind::InitialAccessToken).unwrap(),
            "\"initial_access_token\""
        );
    }

    #[test]
    fn hash_is_sha256_of_prev_hash_then_canonical_record() {
        let records = chain(2);
        let r = &records[1];
        let mut h = Sha256::new();
        h.update(unhex32(&records[0].hash).unwrap());
        h.update(r.canonical());
        assert_eq!(r.hash, hex(&h.finalize()));
        assert_eq!(records[0].prev_hash, GENESIS_HASH);
        assert_eq!(r.prev_hash, records[0].hash);
        assert_eq!(r.seq, 2);
        // The canonical form leaves out prev_hash and hash and keeps nulls.
        let text = String::from_utf8(r.canonical()).unwrap();
        assert!(text.starts_with(r#"{"seq":2,"time":101,"event":"client.registered","client_id":"c1","actor":{"kind":"anonymous","name":null"#), "{text}");
        assert!(text.contains(r#""checkpoint":null"#));
        assert!(!text.contains("prev_hash") && !text.contains(&r.hash));
    }

    #[test]
    fn a_stored_record_read_back_hashes_the_same() {
        for r in chain(3) {
            let json = serde_json::to_vec(&r).unwrap();
            let back: AuditRecord = serde_json::from_slice(&json).unwrap();
            assert_eq!(back.compute_hash().as_deref(), Some(r.hash.as_str()));
        }
    }

    #[test]
    fn an_intact_chain_verifies_and_names_its_head() {
        let records = chain(5);
        let v = verify(&records).unwrap();
        assert_eq!(v.count, 5);
        assert_eq!(v.head, records[4].head());
        assert_eq!(
            v.to_string(),
            format!("5 records, chain intact, head {}", records[4].hash)
        );
        assert_eq!(verify(&[]).unwrap().count, 0);
    }

    #[test]
    fn an_edited_record_is_detected_at_its_seq() {
        let mut records = chain(5);
        records[2].source_ip = Some("203.0.113.1".into());
        assert_eq!(verify(&records).unwrap_err().seq, 3);
        // Re-hashing the edited record does not help: the next one no longer links to it.
        records[2].hash = records[2].compute_hash().unwrap();
        let e = verify(&records).unwrap_err();
        assert_eq!(e.seq, 4, "{e}");
    }

    #[test]
    fn a_deleted_record_is_detected() {
        let mut records = chain(5);
        records.remove(2);
        let e = verify(&records).unwrap_err();
        assert_eq!(e.seq, 3, "{e}");
        // Renumbering the rest does not help either.
        for r in records.iter_mut().skip(2) {
            r.seq -= 1;
        }
        assert_eq!(verify(&records).unwrap_err().seq, 3);
    }

    #[test]
    fn reordered_records_are_detected() {
        let mut records = chain(5);
        records.swap(1, 3);
        // Stored order 1, 4, 3, 2, 5: seq 2 is where the trail stops making sense.
        let e = verify(&records).unwrap_err();
        assert_eq!(e.seq, 2, "{e}");
        records.swap(1, 3);
        records.swap(2, 3);
        // 1, 2, 4, 3, 5.
        assert_eq!(verify(&records).unwrap_err().seq, 3);
        // Swapping the contents but keeping the seqs in place breaks the hashes.
        let mut records = chain(5);
        let (a, b) = (records[1].clone(), records[3].clone());
        records[1] = AuditRecord { seq: 2, ..b };
        records[3] = AuditRecord { seq: 4, ..a };
        assert_eq!(verify(&records).unwrap_err().seq, 2);
    }

    #[test]
    fn a_removed_prefix_needs_a_checkpoint() {
        let records = chain(5);
        let e = verify(&records[2..]).unwrap_err();
        assert_eq!(e.seq, 3);
        assert!(e.reason.contains("no checkpoint"), "{e}");
        assert_eq!(verify(&records[1..]).unwrap_err().seq, 2);
    }

    #[test]
    fn retention_prunes_a_prefix_and_the_rest_still_verifies() {
        let mut records = chain(6); // times 100..=105
        let plan = plan_prune(&records, 103).unwrap();
        assert_eq!(plan.pruned_through, 3);
        assert_eq!(plan.pruned_count, 3);
        assert_eq!(plan.pruned_head, records[2].hash);
        let cp = seal(&records[5].head(), AuditEntry::checkpoint(200, plan));
        records.push(cp);
        let kept: Vec<_> = records.split_off(3);
        let v = verify(&kept).unwrap();
        assert_eq!(v.count, 4);
        assert_eq!(v.head.seq, 7);

        // A second pruning removes the first checkpoint too; the new one accounts for all.
        let mut kept = kept;
        let plan = plan_prune(&kept, 10_000).unwrap();
        assert_eq!(plan.pruned_through, 7);
        let cp = seal(
            &kept.last().unwrap().head(),
            AuditEntry::checkpoint(300, plan),
        );
        kept.clear();
        kept.push(cp);
        assert_eq!(verify(&kept).unwrap().count, 1);

        assert_eq!(plan_prune(&chain(2), 50), None);
    }

    #[test]
    fn a_forged_checkpoint_does_not_cover_a_deletion() {
        let mut records = chain(5);
        let mut cp = seal(
            &records[4].head(),
            AuditEntry::checkpoint(
                200,
                Checkpoint {
                    pruned_through: 2,
                    pruned_head: records[1].hash.clone(),
                    pruned_count: 2,
                },
            ),
        );
        records.push(cp.clone());
        assert!(verify(&records[2..]).is_ok());
        // Pointing it at another head changes its hash.
        cp.checkpoint.as_mut().unwrap().pruned_head = records[0].hash.clone();
        records[5] = cp;
        assert_eq!(verify(&records[2..]).unwrap_err().seq, 6);
    }

    #[test]
    fn retention_cutoff() {
        assert_eq!(AuditSettings::default().cutoff(1_000_000), None);
        let s = AuditSettings {
            retention_days: 2,
            ..AuditSettings::default()
        };
        assert_eq!(s.cutoff(1_000_000), Some(1_000_000 - 172_800));
    }

    fn client(name: &str) -> ClientRecord {
        client_named("c1", name)
    }

    #[test]
    fn entries_name_changed_members_and_digest_views_without_credentials() {
        let (a, b) = (client("A"), client("B"));
        let e = AuditEntry::for_change(
            9,
            EventType::Updated,
            "c1",
            Actor::new(ActorKind::RegistrationAccessToken),
            Some(&a),
            Some(&b),
            &["registration_access_token"],
        );
        assert_eq!(e.changed, vec!["client_name", "registration_access_token"]);
        assert_ne!(e.before, e.after);
        // Credentials do not reach the digest: a new secret hash or token tag keeps it.
        let mut a2 = a.clone();
        a2.client_secret_hash = Some("other".into());
        a2.rat_tag = vec![1; 32];
        assert_eq!(
            view_digest(&client_view(&a)),
            view_digest(&client_view(&a2))
        );
        let view = serde_json::to_string(&client_view(&a)).unwrap();
        assert!(
            !view.contains("argon2") && !view.contains("rat_tag"),
            "{view}"
        );
        // Member order does not change the digest.
        let mut reordered = Map::new();
        for (k, v) in client_view(&a).into_iter().rev() {
            reordered.insert(k, v);
        }
        assert_eq!(view_digest(&reordered), view_digest(&client_view(&a)));

        let created = AuditEntry::for_change(
            1,
            EventType::Registered,
            "c1",
            Actor::system(),
            None,
            Some(&a),
            &[],
        );
        assert_eq!(created.before, None);
        assert!(created.changed.contains(&"client_name".to_owned()));
        let deleted = AuditEntry::for_change(
            1,
            EventType::Deleted,
            "c1",
            Actor::system(),
            Some(&a),
            None,
            &[],
        );
        assert_eq!(deleted.after, None);
    }

    /// The canonical form is on disk (every record's `before`/`after`): members sorted by name
    /// at every level, compact. The expected digest was computed independently (Python:
    /// `json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`, SHA-256).
    #[test]
    fn a_view_digest_is_the_sha256_of_its_sorted_compact_json() {
        let view = serde_json::json!({
            "client_id": "c1",
            "b": [1, {"z": true, "a": null}, 2.5],
            "a": "x\"y",
            "é": "ü",
            "A": {"y": [], "x": {}}
        });
        assert_eq!(
            view_digest(view.as_object().unwrap()),
            "d4c2679eeddb95e25ca7a37be353a2340492882c55ef63f8a295067bfd570839"
        );
    }

    #[test]
    fn token_digest_is_short_and_stable() {
        let d = Actor::token_digest("secret-token");
        assert_eq!(d.len(), 12);
        assert_eq!(d, Actor::token_digest("secret-token"));
        assert_ne!(d, Actor::token_digest("other"));
        // The prefix of the sha256 an operator configures for a static token.
        assert!(hex(&Sha256::digest(b"secret-token")).starts_with(&d));
    }
}
