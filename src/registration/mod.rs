//! The registration service: RFC 7591 registration and RFC 7592 read, update and delete.
//! Framework-free: it takes parsed JSON and tokens, returns JSON maps or `RegistrationError`.

pub mod discovery;
pub mod upstream;

use crate::clock::Clock;
use crate::credentials::{is_recoverable, Plaintext, RatKey, SecretHasher};
use crate::error::{RegistrationError, Result};
use crate::events::emit::registration_actor;
use crate::events::{Actor, ActorKind, ChangeEvent, EventBatch, EventType, Events, Origin};
use crate::fetch::RemoteMetadata;
use crate::lifecycle::{self, RatMatch};
use crate::logsafe::escaped;
use crate::metadata::{self, uses_client_secret};
use crate::policy::{PolicyEngine, RegistrationContext};
use crate::settings::{MetadataSettings, Settings};
use crate::store::{source, Change, ClientRecord, ClientStore, CounterOp, StoreError, WriteBatch};
use crate::telemetry::Metrics;
use crate::tokens::{TokenGenerator, CLIENT_ID_BYTES, SECRET_BYTES};
use serde_json::{Map, Value};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// How many times a write that lost a race is retried before giving up. Each round of a race
/// has one winner, so N concurrent writers of one client need up to N rounds; a retry is only
/// a re-read and a compare-and-swap (the expensive work is done once, before the loop).
const MAX_RETRIES: usize = 64;

/// Stale eviction candidates one registration at its software's limit may skip.
const MAX_EVICTION_ATTEMPTS: usize = 256;

/// The service behind every registration endpoint.
pub struct Registrar {
    store: Arc<dyn ClientStore>,
    clock: Arc<dyn Clock>,
    tokens: Arc<dyn TokenGenerator>,
    hasher: SecretHasher,
    rat_key: RatKey,
    settings: Arc<Settings>,
    remote: Arc<RemoteMetadata>,
    policy: Arc<PolicyEngine>,
    metrics: Arc<Metrics>,
    registration_endpoint: String,
    discovery: Arc<discovery::Discovery>,
    /// Storm control's eviction candidates (`crate::lifecycle`).
    evictions: lifecycle::EvictionQueue,
    events: Arc<Events>,
}

/// The pieces a `Registrar` is built from; `settings.issuer` must already be resolved.
#[derive(Clone)]
pub struct Parts {
    pub store: Arc<dyn ClientStore>,
    pub clock: Arc<dyn Clock>,
    pub tokens: Arc<dyn TokenGenerator>,
    pub hasher: SecretHasher,
    pub rat_key: RatKey,
    pub settings: Arc<Settings>,
    /// Network checks (`sector_identifier_uri`, `jwks_uri`), see `crate::fetch`.
    pub remote: Arc<RemoteMetadata>,
    /// Who may register and with what (`[access]`, `[policies]`, `[rate_limit]`).
    pub policy: Arc<PolicyEngine>,
    /// Where registrations, store writes and fetches are counted.
    pub metrics: Arc<Metrics>,
    /// Audit entries and webhook rows for each change (`crate::events`).
    pub events: Arc<Events>,
}

/// The one mapping of store failures to the RFC error the caller sees. `Conflict` and
/// `CounterExhausted` are handled where they can happen; reaching here they are bugs.
pub(crate) fn store_error(e: StoreError) -> RegistrationError {
    match e {
        StoreError::Unavailable(cause) => {
            tracing::error!(cause = %escaped(&cause), "store unavailable");
            RegistrationError::Unavailable
        }
        other => RegistrationError::Internal(format!("store: {other}")),
    }
}

/// The metadata engine, with the allowed privileged fields replaced when `privileged` is given
/// (the admin API's `admin.allowed_privileged_fields`).
fn validate_with(
    prepared: &Map<String, Value>,
    settings: &MetadataSettings,
    privileged: Option<&[String]>,
) -> Result<Map<String, Value>> {
    match privileged {
        None => metadata::validate(prepared, settings),
        Some(fields) => {
            let mut settings = settings.clone();
            settings.allowed_privileged_fields = fields.to_vec();
            metadata::validate(prepared, &settings)
        }
    }
}

/// What an update changes, decided once (validation, outbound fetches, argon2) before the
/// compare-and-swap loop, which only re-applies it to a fresher read of the record. RFC 7592
/// PUT and the admin API's PATCH both make one.
pub(crate) struct UpdatePlan {
    metadata: Map<String, Value>,
    secret: SecretChange,
    /// The registration access token after the update; `None` keeps the stored one (admin).
    /// Some only for RFC 7592 PUT, which also counts as a use of the client.
    token: Option<Plaintext>,
    /// The token the PUT presented, which a rotation's grace seal is keyed with.
    presented: Option<Plaintext>,
    /// `registration.rat_grace_secs` for the token a rotation replaces.
    rat_grace_secs: u64,
    now: i64,
}

enum SecretChange {
    Keep,
    Clear,
    Issue {
        secret: Plaintext,
        hash: String,
        expires_at: i64,
    },
    /// Secret renewal (`crate::lifecycle`): a new secret; the old one keeps authenticating
    /// until `overlap_until`, if set.
    Renew {
        secret: Plaintext,
        hash: String,
        expires_at: i64,
        overlap_until: Option<i64>,
    },
}

impl UpdatePlan {
    pub(crate) fn apply_to(&self, current: &ClientRecord, rat_key: &RatKey) -> ClientRecord {
        let mut updated = current.clone();
        match &self.secret {
            SecretChange::Keep => {}
            SecretChange::Clear => {
                updated.client_secret_hash = None;
                updated.client_secret_expires_at = None;
                updated.previous_secret_hash = None;
                updated.previous_secret_expires_at = None;
            }
            SecretChange::Issue {
                hash, expires_at, ..
            } => {
                updated.client_secret_hash = Some(hash.clone());
                updated.client_secret_expires_at = Some(*expires_at);
            }
            SecretChange::Renew {
                hash,
                expires_at,
                overlap_until,
                ..
            } => {
                updated.previous_secret_hash =
                    overlap_until.and(current.client_secret_hash.clone());
                updated.previous_secret_expires_at = *overlap_until;
                updated.client_secret_hash = Some(hash.clone());
                updated.client_secret_expires_at = Some(*expires_at);
            }
        }
        if let Some(token) = &self.token {
            if rat_key.matches(token.expose(), &current.rat_tag) {
                // The current token was used: the previous one's grace ends.
                lifecycle::end_grace(&mut updated);
            } else {
                lifecycle::rotate_rat(
                    &mut updated,
                    rat_key,
                    token,
                    self.now,
                    self.rat_grace_secs,
                    self.presented.as_ref().map(Plaintext::expose),
                );
            }
            updated.last_used_at = Some(self.now);
        }
        updated.metadata = self.metadata.clone().into();
        updated.updated_at = self.now;
        updated
    }

    pub(crate) fn issued_secret(&self) -> Option<&Plaintext> {
        match &self.secret {
            SecretChange::Issue { secret, .. } | SecretChange::Renew { secret, .. } => Some(secret),
            _ => None,
        }
    }
}

impl Registrar {
    /// Assemble the service.
    pub fn new(parts: Parts) -> Self {
        let registration_endpoint = format!(
            "{}{}",
            parts.settings.issuer.trim_end_matches('/'),
            parts.settings.registration_path
        );
        let discovery = Arc::new(discovery::Discovery::new(
            parts.settings.clone(),
            registration_endpoint.clone(),
        ));
        Self {
            discovery,
            store: parts.store,
            clock: parts.clock,
            tokens: parts.tokens,
            hasher: parts.hasher,
            rat_key: parts.rat_key,
            settings: parts.settings,
            remote: parts.remote,
            policy: parts.policy,
            metrics: parts.metrics,
            events: parts.events,
            registration_endpoint,
            evictions: lifecycle::EvictionQueue::default(),
        }
    }

    /// The absolute URL of the registration endpoint (RFC 8414 `registration_endpoint`).
    pub fn registration_endpoint(&self) -> &str {
        &self.registration_endpoint
    }

    /// The settings the service runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The registration policy engine.
    pub fn policy(&self) -> &PolicyEngine {
        &self.policy
    }

    /// The store (the sweeper scans it).
    pub(crate) fn store(&self) -> &dyn ClientStore {
        self.store.as_ref()
    }

    /// The injected clock.
    pub(crate) fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// Take one registration from the client address's bucket (security.md §5.2); call before
    /// reading the body of a registration request.
    pub fn check_rate_limit(&self, context: &RegistrationContext) -> Result<()> {
        let result = self.policy.check_rate_limit(context.client_ip);
        if let Err(e) = &result {
            self.metrics.registration(e.code(), "none");
        }
        result
    }

    /// Requests waiting for an argon2id hashing slot (the `registrar_hash_queue_depth` gauge).
    pub fn hash_queue_depth(&self) -> usize {
        self.hasher.queue_depth()
    }

    /// The metrics of this service (shared with the directory and the listeners).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Commit `batch`, timing it until durable (`registrar_store_write_duration_seconds`).
    pub(crate) async fn commit(&self, batch: WriteBatch) -> std::result::Result<(), StoreError> {
        let started = std::time::Instant::now();
        let result = self.store.commit(batch).await;
        self.metrics.store_write(started.elapsed().as_secs_f64());
        result
    }

    /// Commit `batch` (with its events) and, once it is durable, wake the webhook worker if
    /// it enqueued deliveries: for writers outside this service (`directory::cimd`).
    pub(crate) async fn commit_with_events(
        &self,
        batch: WriteBatch,
    ) -> std::result::Result<(), StoreError> {
        let deliveries = !batch.outbox.is_empty();
        self.commit(batch).await?;
        self.events.committed(deliveries);
        Ok(())
    }

    /// Wake the webhook worker: deliveries were put back in the queue (a redelivery).
    pub(crate) fn deliveries_enqueued(&self) {
        self.events.committed(true);
    }

    /// Take one management call (PUT/DELETE) from the client address's bucket; call before
    /// reading the body (issue #12 item 1).
    pub fn check_management_rate_limit(&self, context: &RegistrationContext) -> Result<()> {
        self.policy.check_management_rate_limit(context.client_ip)
    }

    /// Number of registered clients.
    pub async fn client_count(&self) -> Result<u64> {
        self.store.count().await.map_err(store_error)
    }

    /// Whether registrations, updates and deletions can be stored right now. False while the
    /// store is recovering from a storage failure (disk full); reads keep working meanwhile.
    pub fn store_writable(&self) -> bool {
        self.store.writable()
    }

    /// The events of one change of a client from `before` to `after`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn events_of(
        &self,
        event: EventType,
        actor: Actor,
        origin: &Origin,
        before: Option<&ClientRecord>,
        after: Option<&ClientRecord>,
        credentials_changed: &[&str],
        with_webhooks: bool,
    ) -> EventBatch {
        let client_id = after.or(before).map_or("", |r| r.client_id.as_str());
        let change = ChangeEvent {
            time: self.clock.now(),
            event,
            client_id,
            actor,
            origin,
            before,
            after,
            credentials_changed,
        };
        if with_webhooks {
            self.events.change(change)
        } else {
            self.events.audit_only(change)
        }
    }

    /// The RFC 7592 registration client URI of `client_id`.
    pub(crate) fn client_uri(&self, client_id: &str) -> String {
        format!("{}/{}", self.registration_endpoint, client_id)
    }

    /// RFC 7591 §3.1–3.2: register a client. Returns the client information response (§3.2.1):
    /// credentials plus every registered metadata value with defaults applied.
    ///
    /// Admission first (initial access token, software statement; RFC 7591 §3, §3.1.1), then the
    /// admitting tier's policy around the metadata engine; the durable counters the policy asks
    /// for (token uses, `jti`, policy quota) are taken in the same commit as the new client, so
    /// they are taken only for a valid request that is stored.
    pub async fn register_client(
        &self,
        request: &Map<String, Value>,
        context: &RegistrationContext,
        origin: &Origin,
    ) -> Result<Map<String, Value>> {
        let now = self.clock.now();
        let admission =
            match self
                .policy
                .admit(context.initial_access_token.as_deref(), request, now)
            {
                Ok(admission) => admission,
                Err(e) => {
                    self.metrics.registration(e.code(), "none");
                    return Err(e);
                }
            };
        let actor = registration_actor(
            admission.tier,
            context.initial_access_token.as_deref(),
            admission
                .statement
                .as_ref()
                .and_then(|s| s.claims.get("iss"))
                .and_then(Value::as_str),
        );
        let who = (EventType::Registered, actor, origin.clone());
        let result = self
            .register_admitted(request, &admission, None, source::REGISTRATION, &who)
            .await;
        let outcome = result.as_ref().map_or_else(|e| e.code(), |_| "created");
        self.metrics.registration(outcome, admission.tier);
        result
    }

    /// Everything of a registration after admission: the policy around the metadata engine,
    /// the counters, the credentials and the store. Registration and operator creation (the
    /// admin API) both come through here, so they obey the same rules. `privileged` replaces
    /// the allowed privileged fields (the admin API's `admin.allowed_privileged_fields`).
    pub(crate) async fn register_admitted(
        &self,
        request: &Map<String, Value>,
        admission: &crate::policy::Admission,
        privileged: Option<&[String]>,
        source: &str,
        who: &(EventType, Actor, Origin),
    ) -> Result<Map<String, Value>> {
        let now = self.clock.now();
        let claims = admission.statement.as_ref().map(|s| &s.claims);
        let policy = admission.policy.as_deref();
        let metadata = self
            .judge(policy, claims, request, privileged, None)
            .await?;
        let counters = self.policy.registration_counters(admission);
        // Operator-created clients are neither counted nor evicted by storm control.
        let Some(policy) = policy.filter(|_| source == source::REGISTRATION) else {
            let stored = self
                .store_new_client(metadata, admission, counters, now, source, None, who)
                .await?;
            return stored.map_err(|key| self.policy.counter_refusal(admission, &key));
        };
        let counter_limit = match policy.max_clients_per_software() {
            0 => u64::MAX,
            n => n,
        };
        for _ in 0..MAX_RETRIES {
            let (key, held) = self.make_room(policy, &metadata, &who.2).await?;
            let counter = lifecycle::software_counter(&key);
            let mut ops = counters.clone();
            if !held {
                // Counted even without a limit, so one set later starts from the true number.
                ops.push(CounterOp::Take {
                    key: counter.clone(),
                    limit: counter_limit,
                });
            }
            let stored = self
                .store_new_client(
                    metadata.clone(),
                    admission,
                    ops,
                    now,
                    source,
                    Some(key),
                    who,
                )
                .await;
            if held && !matches!(stored, Ok(Ok(_))) {
                self.release_counter(&counter).await;
            }
            match stored? {
                Ok(response) => return Ok(response),
                // Another registration took the last place meanwhile: make room again.
                Err(exhausted) if exhausted == counter => continue,
                Err(exhausted) => return Err(self.policy.counter_refusal(admission, &exhausted)),
            }
        }
        Err(storm_refusal(policy, &metadata, true))
    }

    /// The one path from a request to registered metadata: the policy's preparation
    /// (statement claims, forced values), the metadata engine (`metadata::validate`), the
    /// network checks (`sector_identifier_uri`, `jwks_uri`) and the policy's allow-lists.
    /// Registration, RFC 7592 updates, operator writes and client ID metadata documents
    /// (`crate::directory::cimd`) all end here; only their admission differs. With `previous`
    /// (an update), the network checks fetch only what changed
    /// (`RemoteMetadata::check_changes`).
    pub(crate) async fn judge(
        &self,
        policy: Option<&crate::policy::rules::Policy>,
        claims: Option<&Map<String, Value>>,
        request: &Map<String, Value>,
        privileged: Option<&[String]>,
        previous: Option<&Map<String, Value>>,
    ) -> Result<Map<String, Value>> {
        let (prepared, metadata_settings) =
            self.policy
                .prepare(policy, claims, request, &self.settings.metadata)?;
        let metadata = validate_with(&prepared, metadata_settings, privileged)?;
        self.remote.check_changes(&metadata, previous).await?;
        self.policy.check(policy, claims, &metadata)?;
        Ok(metadata)
    }

    /// The network checks' fetcher (`crate::fetch`), shared with client ID metadata documents.
    pub(crate) fn fetcher(&self) -> &crate::fetch::Fetcher {
        self.remote.fetcher()
    }

    /// Storm control (a policy's `max_clients_per_software`, see `crate::lifecycle`): the
    /// client's software key, and whether a place among that software's clients is already
    /// held for it (true after evicting the oldest never-used client, whose place it takes, so
    /// no other registration can take it in between). Refused with `invalid_client_metadata`
    /// naming the policy when every client of that software has been used.
    async fn make_room(
        &self,
        policy: &crate::policy::rules::Policy,
        metadata: &Map<String, Value>,
        origin: &Origin,
    ) -> Result<(String, bool)> {
        let key = lifecycle::software_key(&policy.name, metadata);
        let max = policy.max_clients_per_software();
        if max == 0 {
            return Ok((key, false));
        }
        let counter = lifecycle::software_counter(&key);
        let taken = self.store.counter(&counter).await.map_err(store_error)?;
        if taken < max {
            return Ok((key, false));
        }
        // A candidate used, changed or evicted by another replica since it was queued fails the
        // compare-and-delete: take the next.
        let mut found = false;
        for _ in 0..MAX_EVICTION_ATTEMPTS {
            let next = self
                .evictions
                .next(self.store.as_ref(), &key)
                .await
                .map_err(store_error)?;
            let Some(victim) = next else { break };
            found = true;
            let who = (EventType::Evicted, Actor::system(), origin.clone());
            if self.remove_keeping(&victim, true, &who).await? {
                lifecycle::audit_evicted(&victim, &policy.name);
                return Ok((key, true));
            }
        }
        Err(storm_refusal(policy, metadata, found))
    }

    /// Give back a counter place taken outside a client's own commit.
    async fn release_counter(&self, key: &str) {
        let batch = WriteBatch {
            counters: vec![CounterOp::Release {
                key: key.to_owned(),
            }],
            ..WriteBatch::default()
        };
        if let Err(e) = self.commit(batch).await {
            tracing::warn!(error = %e, "could not give back a storm control place");
        }
    }

    /// Insert the new client with its counters in one commit. `Ok(Err(key))` when the counter
    /// `key` was exhausted (nothing was stored).
    // Private, two callers; each argument is a distinct part of the one insert (record fields,
    // counters, audit) and a struct for them would only move the list.
    #[allow(clippy::too_many_arguments)]
    async fn store_new_client(
        &self,
        metadata: Map<String, Value>,
        admission: &crate::policy::Admission,
        counters: Vec<CounterOp>,
        now: i64,
        source: &str,
        software_key: Option<String>,
        who: &(EventType, Actor, Origin),
    ) -> Result<std::result::Result<Map<String, Value>, String>> {
        let client_id = self.tokens.token(CLIENT_ID_BYTES);
        // A derived (recoverable) secret is bound to the client_id, so it is issued after it.
        let mut secret = self.new_secret(&metadata, &client_id).await?;
        let rat = Plaintext::new(self.tokens.token(SECRET_BYTES));
        let mut record = ClientRecord {
            client_id,
            client_id_issued_at: now,
            client_secret_hash: secret.as_ref().map(|(_, hash)| hash.clone()),
            client_secret_expires_at: secret.as_ref().map(|_| self.secret_expiry(now)),
            rat_tag: self.rat_key.tag(rat.expose()).to_vec(),
            metadata: metadata.into(),
            updated_at: now,
            policy: admission.policy.as_ref().map(|p| p.name.clone()),
            tier: Some(admission.tier.to_owned()),
            software_statement: admission.statement.as_ref().map(|s| s.raw.clone()),
            revision: 1,
            created_at: now,
            source: Some(source.to_owned()),
            software_key,
            ..Default::default()
        };
        let mut attempts = 0;
        loop {
            let events =
                self.events_of(who.0, who.1.clone(), &who.2, None, Some(&record), &[], true);
            let deliveries = events.has_deliveries();
            let batch = WriteBatch::change(Change::Insert(record.clone()))
                .with_counters(counters.iter().cloned())
                .with_events(events);
            match self.commit(batch).await {
                Ok(()) => {
                    self.events.committed(deliveries);
                    break;
                }
                // 128 random bits do not collide in practice; if they do, draw again.
                Err(StoreError::Conflict) if attempts < MAX_RETRIES => {
                    attempts += 1;
                    record.client_id = self.tokens.token(CLIENT_ID_BYTES);
                    if secret.is_some() {
                        secret = self.new_secret(&record.metadata, &record.client_id).await?;
                        record.client_secret_hash = secret.as_ref().map(|(_, h)| h.clone());
                    }
                }
                Err(StoreError::CounterExhausted(key)) => return Ok(Err(key)),
                Err(e) => return Err(store_error(e)),
            }
        }
        tracing::info!(client_id = %escaped(&record.client_id), "client registered");
        Ok(Ok(self.response(
            record,
            &rat,
            secret.as_ref().map(|(s, _)| s),
        )))
    }

    /// RFC 7592 §2.1: read the current registration.
    pub async fn read_client(
        &self,
        client_id: &str,
        rat: Option<&str>,
        origin: &Origin,
    ) -> Result<ClientInformation> {
        let (record, matched) = self.authenticate(client_id, rat, origin).await?;
        let now = self.clock.now();
        let use_due = lifecycle::use_due(&record, now, self.last_used_resolution());
        let rotate = self.settings.registration.rotate_rat_on_read;
        if matched == RatMatch::Previous {
            // RAT grace: the caller lost the response that rotated its token; hand back the
            // current one (it grants nothing the previous one did not).
            let token = lifecycle::sealed_token(&record, &self.rat_key, rat.unwrap_or_default())
                .ok_or(RegistrationError::InvalidToken)?;
            let shown = if use_due {
                let mut used = record.clone();
                used.last_used_at = Some(now);
                self.bookkeep(record, used).await
            } else {
                record
            };
            return Ok(self.information(shown, &token, None));
        }
        let presented = Plaintext::new(rat.unwrap_or_default().to_owned());
        // The common read: nothing to write, and no copy of the record (cloning its metadata
        // was a tenth of the read path's CPU, BENCHMARKS.md).
        if !rotate && !use_due && record.previous_rat_tag.is_none() {
            return Ok(self.information(record, &presented, None));
        }
        let mut updated = record.clone();
        if use_due {
            updated.last_used_at = Some(now);
        }
        // First use of the current token: the previous one's grace ends.
        lifecycle::end_grace(&mut updated);
        if !rotate {
            let shown = self.bookkeep(record, updated).await;
            return Ok(self.information(shown, &presented, None));
        }
        let new_rat = Plaintext::new(self.tokens.token(SECRET_BYTES));
        lifecycle::rotate_rat(
            &mut updated,
            &self.rat_key,
            &new_rat,
            now,
            self.settings.registration.rat_grace_secs,
            rat,
        );
        let events = self.events_of(
            EventType::Updated,
            Actor::new(ActorKind::RegistrationAccessToken),
            origin,
            Some(&record),
            Some(&updated),
            &["registration_access_token"],
            false,
        );
        // If someone else changed the client (and maybe the token) meanwhile, the token the
        // caller holds may be dead now, so answer as for any invalid token.
        let Some(updated) = self.save_with(&record, updated, events).await? else {
            return Err(RegistrationError::InvalidToken);
        };
        Ok(self.information(updated, &new_rat, None))
    }

    /// Store what a read changed only for bookkeeping (`last_used_at`, the end of a grace); the
    /// stored record. Another writer winning, or a store that cannot write now (a full disk),
    /// must not fail the read: the bookkeeping waits for the next call.
    pub(crate) async fn bookkeep(
        &self,
        record: ClientRecord,
        updated: ClientRecord,
    ) -> ClientRecord {
        match self.save(&record, updated).await {
            Ok(Some(stored)) => stored,
            Ok(None) => record,
            Err(e) => {
                tracing::warn!(error = %e, "could not record the use of a client");
                record
            }
        }
    }

    /// `admin.last_used_resolution_secs`: how coarsely `last_used_at` is kept.
    fn last_used_resolution(&self) -> i64 {
        i64::try_from(self.settings.admin.last_used_resolution_secs).unwrap_or(i64::MAX)
    }

    /// Replace `current` with `updated` if `current` is still the stored revision, durably;
    /// the stored record, or `None` if another writer won.
    pub(crate) async fn save(
        &self,
        current: &ClientRecord,
        updated: ClientRecord,
    ) -> Result<Option<ClientRecord>> {
        self.save_with(current, updated, EventBatch::default())
            .await
    }

    /// `save`, with the audit entries and webhook rows of the change in the same commit.
    pub(crate) async fn save_with(
        &self,
        current: &ClientRecord,
        mut updated: ClientRecord,
        events: EventBatch,
    ) -> Result<Option<ClientRecord>> {
        let deliveries = events.has_deliveries();
        let batch = WriteBatch::change(Change::Update {
            expected_revision: current.revision,
            record: updated.clone(),
        })
        .with_events(events);
        match self.commit(batch).await {
            Ok(()) => {
                self.events.committed(deliveries);
                updated.revision = current.revision + 1;
                Ok(Some(updated))
            }
            Err(StoreError::Conflict) => Ok(None),
            Err(e) => Err(store_error(e)),
        }
    }

    /// RFC 7592 §2.2: replace the registration with the request's metadata.
    pub async fn update_client(
        &self,
        client_id: &str,
        rat: Option<&str>,
        request: &Map<String, Value>,
        origin: &Origin,
    ) -> Result<Map<String, Value>> {
        let mut current = self.authenticate_enabled(client_id, rat, origin).await?;
        self.policy.check_client_rate_limit(client_id)?;
        let mut plan = self.plan_update(&current, rat, request).await?;
        let token = plan
            .token
            .clone()
            .unwrap_or_else(|| Plaintext::new(rat.unwrap_or_default().to_owned()));
        for _ in 0..MAX_RETRIES {
            let updated = plan.apply_to(&current, &self.rat_key);
            let mut credentials = vec![];
            if updated.rat_tag != current.rat_tag {
                credentials.push("registration_access_token");
            }
            if updated.client_secret_hash != current.client_secret_hash {
                credentials.push("client_secret");
            }
            let events = self.events_of(
                EventType::Updated,
                Actor::new(ActorKind::RegistrationAccessToken),
                origin,
                Some(&current),
                Some(&updated),
                &credentials,
                true,
            );
            let deliveries = events.has_deliveries();
            let batch = WriteBatch::change(Change::Update {
                expected_revision: current.revision,
                record: updated.clone(),
            })
            .with_events(events);
            match self.commit(batch).await {
                Ok(()) => {
                    self.events.committed(deliveries);
                    tracing::info!(client_id = %escaped(client_id), "client updated");
                    let mut updated = updated;
                    updated.revision = current.revision + 1;
                    let secret = plan.issued_secret();
                    return Ok(self.response(updated, &token, secret));
                }
                Err(StoreError::Conflict) => {
                    // Lost a race: re-read. A concurrent update that rotated the token (or a
                    // delete) leaves the caller's token dead, as for any invalid token.
                    let fresh = self.authenticate_enabled(client_id, rat, origin).await?;
                    if fresh.client_secret_hash != current.client_secret_hash
                        || fresh.client_secret_expires_at != current.client_secret_expires_at
                    {
                        // The plan's secret checks were made against the old secret.
                        plan = self.plan_update(&fresh, rat, request).await?;
                    }
                    current = fresh;
                }
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(RegistrationError::Internal(
            "update kept losing races".into(),
        ))
    }

    /// The expensive, race-independent part of an update (RFC 7592 §2.2): the request's
    /// read-only members, the admitting tier's policy, the metadata engine, the outbound
    /// checks, and the secret to issue, if any.
    async fn plan_update(
        &self,
        current: &ClientRecord,
        rat: Option<&str>,
        request: &Map<String, Value>,
    ) -> Result<UpdatePlan> {
        self.check_update_request(current, rat.unwrap_or_default(), request)
            .await?;
        let mut plan = self.plan_change(current, request, None).await?;
        if matches!(plan.secret, SecretChange::Keep) {
            plan.secret = self.renewal(current, &plan.metadata, plan.now).await?;
        }
        plan.presented = rat.map(|t| Plaintext::new(t.to_owned()));
        plan.token = Some(if self.settings.registration.rotate_rat_on_update {
            Plaintext::new(self.tokens.token(SECRET_BYTES))
        } else {
            Plaintext::new(rat.unwrap_or_default().to_owned())
        });
        Ok(plan)
    }

    /// Secret renewal (`crate::lifecycle`; RFC 7592 §2.2 lets the server issue a new secret on
    /// update): a new secret when `current`'s is due, else `Keep`.
    async fn renewal(
        &self,
        current: &ClientRecord,
        metadata: &Map<String, Value>,
        now: i64,
    ) -> Result<SecretChange> {
        let credentials = &self.settings.credentials;
        if current.client_secret_hash.is_none()
            || !lifecycle::secret_due_for_renewal(
                current.client_secret_expires_at,
                now,
                credentials,
            )
        {
            return Ok(SecretChange::Keep);
        }
        let Some((secret, hash)) = self.new_secret(metadata, &current.client_id).await? else {
            return Ok(SecretChange::Keep);
        };
        tracing::info!(client_id = %escaped(&current.client_id), "client secret renewed");
        Ok(SecretChange::Renew {
            secret,
            hash,
            expires_at: self.secret_expiry(now),
            overlap_until: lifecycle::renewal_overlap_until(
                current.client_secret_expires_at,
                now,
                credentials,
            ),
        })
    }

    /// The metadata of `request` judged as an update of `current` (RFC 7592 §2.2: the same
    /// validation as registration, under the policy and tier the client was admitted with), and
    /// the secret change its auth method calls for; the token is left as it is. Used by RFC 7592
    /// PUT (through `plan_update`) and by the admin API's PATCH; `privileged` as in
    /// `register_admitted`.
    pub(crate) async fn plan_change(
        &self,
        current: &ClientRecord,
        request: &Map<String, Value>,
        privileged: Option<&[String]>,
    ) -> Result<UpdatePlan> {
        // The admitting tier's policy is re-applied on every update (security.md B34).
        let policy = self.policy.policy_named(current.policy.as_deref())?;
        self.policy
            .check_update_tier(current.tier.as_deref(), request)?;
        let claims = self
            .policy
            .stored_statement_claims(current.software_statement.as_deref(), request)?;
        // Only what changed is fetched again, so replaying an update cannot buy fetches.
        let metadata = self
            .judge(
                policy.as_deref(),
                claims.as_ref(),
                request,
                privileged,
                Some(&current.metadata),
            )
            .await?;
        let now = self.clock.now();
        let method = metadata
            .get("token_endpoint_auth_method")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let secret = if !uses_client_secret(method) {
            SecretChange::Clear
        } else if current.client_secret_hash.as_deref().is_none_or(|stored| {
            metadata::needs_recoverable_secret(&metadata) && !is_recoverable(stored)
        }) {
            // Changing to a secret-based method, or to one that needs a recoverable secret
            // while the current one is only a hash: issue a new secret, shown in this
            // response only.
            match self.new_secret(&metadata, &current.client_id).await? {
                Some((secret, hash)) => SecretChange::Issue {
                    secret,
                    hash,
                    expires_at: self.secret_expiry(now),
                },
                None => SecretChange::Keep,
            }
        } else {
            SecretChange::Keep
        };
        Ok(UpdatePlan {
            metadata,
            secret,
            token: None,
            presented: None,
            rat_grace_secs: self.settings.registration.rat_grace_secs,
            now,
        })
    }

    /// RFC 7592 §2.3: delete the registration; its token dies with it, and its place in its
    /// policy's quota is freed in the same commit.
    pub async fn delete_client(
        &self,
        client_id: &str,
        rat: Option<&str>,
        origin: &Origin,
    ) -> Result<()> {
        let who = (
            EventType::Deleted,
            Actor::new(ActorKind::RegistrationAccessToken),
            origin.clone(),
        );
        for attempt in 0..MAX_RETRIES {
            let current = self.authenticate_enabled(client_id, rat, origin).await?;
            if attempt == 0 {
                self.policy.check_client_rate_limit(client_id)?;
            }
            if self.remove_record(&current, &who).await? {
                return Ok(());
            }
        }
        Err(RegistrationError::Internal(
            "delete kept losing races".into(),
        ))
    }

    /// Delete `current` if it is still at its revision, freeing its place in its policy's
    /// quota in the same commit; `Ok(false)` when another writer changed it first (re-read and
    /// decide again). RFC 7592 DELETE and the admin API both delete through here.
    pub(crate) async fn remove_record(
        &self,
        current: &ClientRecord,
        who: &(EventType, Actor, Origin),
    ) -> Result<bool> {
        self.remove_keeping(current, false, who).await
    }

    /// `remove_record`; with `keep_software_place` the client's place among its software's
    /// clients is not given back but handed to the registration that evicted it.
    async fn remove_keeping(
        &self,
        current: &ClientRecord,
        keep_software_place: bool,
        who: &(EventType, Actor, Origin),
    ) -> Result<bool> {
        let software = current
            .software_key
            .as_deref()
            .filter(|_| !keep_software_place)
            .map(|key| CounterOp::Release {
                key: lifecycle::software_counter(key),
            });
        let events = self.events_of(who.0, who.1.clone(), &who.2, Some(current), None, &[], true);
        let deliveries = events.has_deliveries();
        let batch = WriteBatch::change(Change::Delete {
            client_id: current.client_id.clone(),
            expected_revision: current.revision,
        })
        .with_counters(
            self.policy
                .deletion_counters(current.policy.as_deref(), current.tier.as_deref()),
        )
        .with_counters(software)
        .with_events(events);
        match self.commit(batch).await {
            Ok(()) => {
                self.events.committed(deliveries);
                tracing::info!(client_id = %escaped(&current.client_id), "client deleted");
                Ok(true)
            }
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(store_error(e)),
        }
    }

    /// The discovery document (RFC 8414 §2 / OpenID Connect Discovery §3).
    pub fn discovery(&self) -> Arc<Map<String, Value>> {
        self.discovery.document()
    }

    /// The discovery documents' state, which the authorization server metadata task updates.
    pub fn discovery_service(&self) -> &Arc<discovery::Discovery> {
        &self.discovery
    }

    /// `authenticate`, then refuse a client an operator disabled: it may read itself but not
    /// change or delete itself (RFC 7592 §2.2, §2.3: 403).
    async fn authenticate_enabled(
        &self,
        client_id: &str,
        rat: Option<&str>,
        origin: &Origin,
    ) -> Result<ClientRecord> {
        // The previous token in its grace may only read: the same 401 as any invalid token.
        let (record, RatMatch::Current) = self.authenticate(client_id, rat, origin).await? else {
            return Err(RegistrationError::InvalidToken);
        };
        if record.disabled {
            return Err(RegistrationError::ClientDisabled);
        }
        Ok(record)
    }

    /// RFC 7592 §2: the client must exist and the token must be its current registration access
    /// token. Every failure is the same `InvalidToken`, so a caller cannot learn whether a
    /// `client_id` exists.
    ///
    /// The token's tag is looked up first: a token that belongs to no client ends here, having
    /// done the same work whether `client_id` exists or not (no record is read or decoded, which
    /// made the existing-client path measurably slower, issue #12 item 10).
    ///
    /// A valid token presented for another *existing* client is revoked (RFC 7592 §2.1 SHOULD;
    /// node-oidc-provider does the same). One presented at a path that names no client (a typo,
    /// `/register/<id>%20`) only gets the 401: revoking it would lock its client out for good
    /// over a mistyped URL (item 12).
    ///
    /// Within a rotation's grace (`registration.rat_grace_secs`) the previous token matches too,
    /// as `RatMatch::Previous`; only GET accepts it. The store indexes it like the current one,
    /// so it costs the same one lookup.
    async fn authenticate(
        &self,
        client_id: &str,
        rat: Option<&str>,
        origin: &Origin,
    ) -> Result<(ClientRecord, RatMatch)> {
        let rat = rat.ok_or(RegistrationError::InvalidToken)?;
        let tag = self.rat_key.tag(rat);
        let Some(owner) = self.store.get_by_rat(&tag).await.map_err(store_error)? else {
            return Err(RegistrationError::InvalidToken);
        };
        if owner.client_id == client_id {
            return match lifecycle::match_rat(&owner, &self.rat_key, rat, self.clock.now()) {
                RatMatch::None => Err(RegistrationError::InvalidToken),
                matched => Ok((owner, matched)),
            };
        }
        if self
            .store
            .get(client_id)
            .await
            .map_err(store_error)?
            .is_some()
        {
            self.revoke(owner, &tag, origin).await?;
        }
        Err(RegistrationError::InvalidToken)
    }

    /// Revoke `record`'s token (RFC 7592 §2.1 SHOULD) if it still carries `tag`; a concurrent
    /// change (a new token already) makes the revocation moot.
    /// A previous token in its grace (`crate::lifecycle`) presented elsewhere only loses its
    /// grace; the client's current token stays.
    async fn revoke(&self, record: ClientRecord, tag: &[u8], origin: &Origin) -> Result<()> {
        let current = bool::from(record.rat_tag.as_slice().ct_eq(tag));
        let previous = record
            .previous_rat_tag
            .as_deref()
            .is_some_and(|p| bool::from(p.ct_eq(tag)));
        if !current && !previous {
            return Ok(());
        }
        let client_id = record.client_id.clone();
        let expected_revision = record.revision;
        let mut revoked = record.clone();
        if current {
            revoked.rat_tag = Vec::new();
        }
        lifecycle::end_grace(&mut revoked);
        // The presenter holds this client's token, so it acts as its registration access token.
        let events = self.events_of(
            EventType::Updated,
            Actor::new(ActorKind::RegistrationAccessToken),
            origin,
            Some(&record),
            Some(&revoked),
            &["registration_access_token"],
            false,
        );
        let batch = WriteBatch::change(Change::Update {
            expected_revision,
            record: revoked,
        })
        .with_events(events);
        match self.commit(batch).await {
            Ok(()) => {
                tracing::warn!(client_id = %escaped(&client_id), "registration access token used for another client; revoked");
                Ok(())
            }
            Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    /// RFC 7592 §2.2 rules on the members of an update request that the server owns.
    async fn check_update_request(
        &self,
        current: &ClientRecord,
        rat: &str,
        request: &Map<String, Value>,
    ) -> Result<()> {
        match request.get("client_id") {
            Some(Value::String(id)) if id == &current.client_id => {}
            Some(_) => {
                return Err(RegistrationError::InvalidRequest(
                    "client_id does not match the client being updated (RFC 7592 §2.2)".into(),
                ))
            }
            None => {
                return Err(RegistrationError::InvalidRequest(
                    "client_id is required in an update request (RFC 7592 §2.2)".into(),
                ))
            }
        }
        let differs = |name: &str, current: Option<Value>| -> Result<()> {
            match request.get(name) {
                None => Ok(()),
                Some(v) if Some(v) == current.as_ref() => Ok(()),
                Some(_) => Err(RegistrationError::InvalidRequest(format!(
                    "{name} is read-only and may only be sent back unchanged (RFC 7592 §2.2)"
                ))),
            }
        };
        differs(
            "client_id_issued_at",
            Some(Value::from(current.client_id_issued_at)),
        )?;
        differs(
            "client_secret_expires_at",
            current.client_secret_expires_at.map(Value::from),
        )?;
        differs(
            "registration_client_uri",
            Some(Value::from(self.client_uri(&current.client_id))),
        )?;
        match request.get("registration_access_token") {
            None => {}
            Some(Value::String(t)) if t.as_bytes().ct_eq(rat.as_bytes()).into() => {}
            Some(_) => {
                return Err(RegistrationError::InvalidRequest(
                    "registration_access_token is read-only and may only be sent back unchanged (RFC 7592 §2.2)".into(),
                ))
            }
        }
        let mismatch = || {
            RegistrationError::InvalidRequest(
                "client_secret does not match the current secret; a client cannot choose its secret (RFC 7592 §2.2)".into(),
            )
        };
        match (request.get("client_secret"), &current.client_secret_hash) {
            (None, _) => Ok(()),
            (Some(Value::String(s)), Some(hash)) => {
                // Failed checks back off per client before any argon2 work (issue #12 item 1).
                let backoff = self.policy.secret_backoff();
                let now = self.clock.now();
                backoff
                    .check(&current.client_id, now)
                    .map_err(|secs| RegistrationError::TooManyRequests(secs.max(1)))?;
                if self
                    .hasher
                    .verify_client_secret(&current.client_id, s, hash)
                    .await?
                {
                    backoff.succeeded(&current.client_id);
                    Ok(())
                } else {
                    backoff.failed(&current.client_id, now);
                    Err(mismatch())
                }
            }
            (Some(_), _) => Err(mismatch()),
        }
    }

    /// A new `client_secret` and its stored form, if the auth method uses one: an argon2id hash,
    /// or, for `client_secret_jwt` and secret-keyed algorithms, a recoverable derived secret
    /// (refused unless the operator enabled them; see `credentials`).
    pub(crate) async fn new_secret(
        &self,
        metadata: &Map<String, Value>,
        client_id: &str,
    ) -> Result<Option<(Plaintext, String)>> {
        let method = metadata
            .get("token_endpoint_auth_method")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !uses_client_secret(method) {
            return Ok(None);
        }
        if metadata::needs_recoverable_secret(metadata) {
            let nonce = self.tokens.token(SECRET_BYTES);
            return self.hasher.derive(client_id, &nonce).map(Some);
        }
        let secret = Plaintext::new(self.tokens.token(SECRET_BYTES));
        let hash = self.hasher.hash(&secret).await?;
        Ok(Some((secret, hash)))
    }

    pub(crate) fn secret_expiry(&self, now: i64) -> i64 {
        match self.settings.credentials.client_secret_lifetime_secs {
            0 => 0,
            secs => now.saturating_add(secs as i64),
        }
    }

    /// RFC 7591 §3.2.1 / RFC 7592 §3 client information response.
    ///
    /// Takes the record by value and moves its metadata into the response: on the read path,
    /// cloning every member was about a tenth of the server's CPU time (BENCHMARKS.md profile).
    /// The RFC 7592 §2.1 read response: [`Self::response`]'s members, with the stored metadata
    /// spliced in as the text it was stored as when nothing changed it, instead of decoded
    /// into a map and encoded again (issue #19). The metadata never holds a server-managed
    /// member (`metadata::schema::SERVER_MANAGED`, refused by the engine), so the splice cannot
    /// repeat one.
    fn information(
        &self,
        mut record: ClientRecord,
        rat: &Plaintext,
        secret: Option<&Plaintext>,
    ) -> ClientInformation {
        let splice = record.metadata.stored_text().is_some_and(|m| {
            record.software_statement.is_none() || !m.contains("\"software_statement\"")
        });
        if !splice {
            return ClientInformation::from_map(self.response(record, rat, secret));
        }
        debug_assert!(metadata::schema::SERVER_MANAGED
            .iter()
            .all(|k| !record.metadata.contains_key(*k)));
        let stored = std::mem::take(&mut record.metadata);
        let statement = record.software_statement.take();
        let mut out = ClientInformation::from_map(self.response(record, rat, secret)).0;
        // `out` is `{...}` with at least `client_id`; the stored members follow it.
        out.pop();
        stored.write_members(&mut out);
        out.push('}');
        if let Some(statement) = statement {
            out.pop();
            out.push_str(",\"software_statement\":");
            out.push_str(&Value::from(statement).to_string());
            out.push('}');
        }
        ClientInformation(out)
    }

    fn response(
        &self,
        record: ClientRecord,
        rat: &Plaintext,
        secret: Option<&Plaintext>,
    ) -> Map<String, Value> {
        let uri = self.client_uri(&record.client_id);
        let mut out = Map::with_capacity(record.metadata.len() + 6);
        out.insert("client_id".into(), Value::from(record.client_id));
        if let Some(secret) = secret {
            out.insert("client_secret".into(), Value::from(secret.expose()));
        }
        out.insert(
            "client_id_issued_at".into(),
            Value::from(record.client_id_issued_at),
        );
        if let Some(expires) = record.client_secret_expires_at {
            out.insert("client_secret_expires_at".into(), Value::from(expires));
        }
        out.insert(
            "registration_access_token".into(),
            Value::from(rat.expose()),
        );
        out.insert("registration_client_uri".into(), Value::from(uri));
        out.extend(record.metadata.into_map());
        if let Some(statement) = record.software_statement {
            // RFC 7591 §3.2.1: the statement is returned unmodified.
            out.insert("software_statement".into(), Value::from(statement));
        }
        out
    }
}

/// A client information response (RFC 7591 §3.2.1, RFC 7592 §2.1) as the JSON object text
/// that is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientInformation(String);

impl ClientInformation {
    fn from_map(map: Map<String, Value>) -> Self {
        Self(Value::Object(map).to_string())
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The JSON text, for the response body.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The members, parsed.
    pub fn to_map(&self) -> Map<String, Value> {
        serde_json::from_str(&self.0).unwrap_or_default()
    }
}

/// Storm control's refusal, naming the policy (`invalid_client_metadata`, RFC 7591 §3.2.2).
fn storm_refusal(
    policy: &crate::policy::rules::Policy,
    metadata: &Map<String, Value>,
    raced: bool,
) -> RegistrationError {
    let software = match metadata.get("software_id") {
        Some(_) => "software_id",
        None => "client_name",
    };
    let why = if raced {
        "too many registrations of it at once; try again"
    } else {
        "every registered client of it has been used"
    };
    RegistrationError::InvalidClientMetadata(format!(
        "policy '{}': max_clients_per_software ({}) reached for this {software}, and {why}",
        policy.name,
        policy.max_clients_per_software()
    ))
}

#[cfg(test)]
impl Parts {
    /// Parts for unit tests: `store` and `clock`, seeded tokens, cheap argon2, a fixed RAT key,
    /// no `jwks_uri` fetching.
    pub(crate) fn for_tests(
        settings: Settings,
        store: Arc<dyn ClientStore>,
        clock: Arc<dyn Clock>,
        seed: u64,
    ) -> Self {
        Self {
            store,
            clock,
            tokens: Arc::new(crate::tokens::SeededTokens::new(seed)),
            hasher: SecretHasher::new(64, 1, 1, 2).unwrap(),
            rat_key: RatKey::new(vec![9; 32]).unwrap(),
            remote: Arc::new(RemoteMetadata::new(
                crate::fetch::Fetcher::new(&settings.fetch).unwrap(),
                false,
            )),
            policy: Arc::new(PolicyEngine::from_settings(&settings).unwrap()),
            metrics: Arc::new(crate::telemetry::Metrics::new()),
            events: Arc::new(crate::events::Events::new(
                Vec::new(),
                Arc::new(crate::tokens::SeededTokens::new(seed + 1)),
            )),
            settings: Arc::new(settings),
        }
    }
}
