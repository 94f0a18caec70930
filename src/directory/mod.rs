//! The client directory: what the authorization server and the operator see of the registered
//! clients through the admin API. Lookup, client authentication, listing with filters and
//! keyset pagination, and operator writes. Framework-free like `registration`: it takes parsed
//! JSON and query pairs, returns JSON maps or `RegistrationError`.
//!
//! Operator creation, changes and deletions go through the registration service's own paths
//! (`Registrar::register_admitted`, `Registrar::plan_change`, `Registrar::remove_record`), so a
//! client an operator creates obeys the same metadata table and policies as one that
//! registered itself, and its quota counters move the same way.
//!
//! Every client store access is in the small functions at the end of `impl Directory`
//! (`find`, `load`, `save_with`, `matching`), so another store interface touches only them;
//! the audit trail and the dead letters are read through `crate::events` (`audit`,
//! `dead_letters`, `redeliver`).
//!
//! Every operator write carries an [`Operator`] (the admin token's name and the request's
//! origin) into its audit record, written in the same store commit as the change.

mod auth_cache;
pub mod cimd;
mod query;

pub use crate::events::EventType;
use crate::events::{Actor, AuditPage, AuditQuery, EventBatch, Origin, OutboxRow};
use crate::store::ClientFilter;
pub use query::{audit_query, DeadQuery, ListQuery, Purpose, MAX_EVENTS_LIMIT, MAX_LIMIT};
use serde::Serialize;

use crate::clock::Clock;
use crate::credentials::{Plaintext, SecretHasher};
use crate::error::{RegistrationError, Result};
use crate::metadata::uses_client_secret;
use crate::registration::{store_error, Parts, Registrar};
use crate::store::{source, ClientRecord, ClientStore};
use crate::tokens::{TokenGenerator, SECRET_BYTES};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// How many times a write that lost a race is retried before giving up.
const MAX_RETRIES: usize = 8;
/// Longest grace period of a rotated secret: 90 days.
pub const MAX_GRACE_SECS: i64 = 90 * 24 * 3600;
/// Members of a PATCH or create body that the directory owns, besides the server-managed
/// metadata of RFC 7591 §3.2.1 (`metadata::schema::SERVER_MANAGED`).
const DIRECTORY_MANAGED: &[&str] = &[
    "software_statement",
    "created_at",
    "updated_at",
    "last_used_at",
    "tier",
    "source",
];

/// The first member of `body` among the read-only ones and `extra`.
fn read_only_member<'a>(body: &Map<String, Value>, extra: &'a str) -> Option<&'a str> {
    crate::metadata::schema::SERVER_MANAGED
        .iter()
        .chain(DIRECTORY_MANAGED)
        .copied()
        .chain([extra])
        .find(|n| body.contains_key(*n))
}

/// The client directory service behind the admin API.
pub struct Directory {
    registrar: Arc<Registrar>,
    store: Arc<dyn ClientStore>,
    clock: Arc<dyn Clock>,
    tokens: Arc<dyn TokenGenerator>,
    hasher: SecretHasher,
    rat_key: crate::credentials::RatKey,
    /// argon2id hash of a random secret nobody knows: verified against when the client is
    /// unknown, so that case costs the same work as a wrong secret.
    dummy_hash: OnceCell<String>,
    last_used_resolution: i64,
    privileged: Vec<String>,
    rat_grace_secs: u64,
    /// Resolves https `client_id`s (client ID metadata documents).
    cimd: cimd::Resolver,
    /// Recently verified secrets (`admin.authenticate_cache_ttl_secs`); `None` when off.
    auth_cache: Option<auth_cache::AuthCache>,
}

/// One page of dead-lettered webhook deliveries.
#[derive(Debug, Serialize)]
pub struct DeadPage {
    pub deliveries: Vec<DeadLetter>,
    /// The `after` of the next page; `None` on the last page.
    pub next_cursor: Option<u64>,
}

/// A dead-lettered delivery as the admin API shows it: which event, to which hook, how often
/// it failed and why. The body is the signed payload (a client view, no credential).
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    /// Outbox order (the listing's cursor).
    pub seq: u64,
    /// The `webhook-id`, kept on redelivery.
    pub id: String,
    /// The hook's `url`.
    pub hook: String,
    pub client_id: String,
    pub event: EventType,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// The JSON payload that was sent.
    pub payload: Value,
}

impl From<OutboxRow> for DeadLetter {
    fn from(row: OutboxRow) -> Self {
        Self {
            payload: serde_json::from_str(&row.body).unwrap_or(Value::String(row.body)),
            seq: row.seq,
            id: row.id,
            hook: row.hook,
            client_id: row.client_id,
            event: row.event,
            attempts: row.attempts,
            last_error: row.last_error,
        }
    }
}

/// One page of a listing.
#[derive(Debug)]
pub struct Page {
    /// The client views, in `client_id` order.
    pub clients: Vec<Map<String, Value>>,
    /// Where the next page starts; `None` at the end.
    pub next_cursor: Option<String>,
}

impl Directory {
    /// The directory over the same parts (store, clock, hasher, keys) as `registrar`.
    pub fn new(parts: Parts, registrar: Arc<Registrar>) -> Self {
        let admin = &parts.settings.admin;
        let cimd = cimd::Resolver::new(
            parts.settings.cimd.clone(),
            registrar.clone(),
            parts.store.clone(),
            parts.clock.clone(),
        );
        let auth_cache = (admin.authenticate_cache_ttl_secs > 0).then(|| {
            auth_cache::AuthCache::new(
                admin.authenticate_cache_ttl_secs,
                admin.authenticate_cache_max_entries,
            )
        });
        Self {
            cimd,
            auth_cache,
            last_used_resolution: admin.last_used_resolution_secs.min(i64::MAX as u64) as i64,
            privileged: admin.allowed_privileged_fields.clone(),
            rat_grace_secs: parts.settings.registration.rat_grace_secs,
            registrar,
            store: parts.store,
            clock: parts.clock,
            tokens: parts.tokens,
            hasher: parts.hasher,
            rat_key: parts.rat_key,
            dummy_hash: OnceCell::new(),
        }
    }

    /// `GET /admin/clients/{client_id}`: the client view. An https `client_id` is resolved from
    /// its metadata document first (`cimd`), and the lookup counts as a use (`last_used_at`):
    /// such a client has no secret to authenticate with.
    pub async fn get(&self, client_id: &str) -> Result<Map<String, Value>> {
        if cimd::is_metadata_document_id(client_id) {
            let record = self.cimd.resolve(client_id).await?;
            return Ok(view(self.touch(record, self.clock.now()).await));
        }
        Ok(view(self.load(client_id).await?))
    }

    /// `POST /admin/clients/{client_id}/authenticate` (RFC 6749 §2.3.1 on behalf of the
    /// authorization server): the view when `secret` is the client's current secret (or its
    /// previous one within a rotation's grace), else `InvalidToken` (answered as
    /// `invalid_client`). Unknown client, wrong secret, expired secret and disabled client are
    /// the same error after the same work (one argon2id verification, on the hashing pool).
    /// A client whose auth method uses no secret is `invalid_request` naming its method.
    pub async fn authenticate(&self, client_id: &str, secret: &str) -> Result<Map<String, Value>> {
        let result = self.authenticate_uncounted(client_id, secret).await;
        // `registrar_authentications_total{outcome}`: success, invalid_client (the four refusals
        // that look alike on the wire) or the error code of anything else.
        let outcome = match &result {
            Ok(_) => "success",
            Err(RegistrationError::InvalidToken) => "invalid_client",
            Err(e) => e.code(),
        };
        self.registrar.metrics().authentication(outcome);
        result
    }

    async fn authenticate_uncounted(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<Map<String, Value>> {
        if cimd::is_metadata_document_id(client_id) {
            // Resolved (and its document judged) first; it then has no secret, so the answer
            // names its method like for any public or private_key_jwt client.
            self.cimd.resolve(client_id).await?;
        }
        let now = self.clock.now();
        let Some(record) = self.find(client_id).await? else {
            self.verify_dummy(secret).await?;
            return Err(RegistrationError::InvalidToken);
        };
        let method = auth_method(&record);
        if !uses_client_secret(&method) {
            return Err(RegistrationError::InvalidRequest(format!(
                "client {client_id:?} uses token_endpoint_auth_method {method:?}, which does not authenticate with a client_secret; check it by that method (for private_key_jwt, with the jwks or jwks_uri of the client view)"
            )));
        }
        // A secret verified against this very record (same revision, same stored hash) within
        // the cache's TTL skips argon2id, but only when the answer is a success; anything else
        // falls through to the full work below, so refusals cost what they always did.
        if let Some(hit) = self
            .auth_cache
            .as_ref()
            .and_then(|cache| cache.lookup(client_id, secret, &record, now))
        {
            let (current, previous) = match hit.which {
                auth_cache::Which::Current => (true, false),
                auth_cache::Which::Previous => (false, previous_in_grace(&record, now)),
            };
            if accepted(&record, now, current, previous) {
                if let Some(cache) = &self.auth_cache {
                    cache.count_hit();
                }
                self.registrar.metrics().authentication_cache_hit();
                return Ok(view(
                    self.touched(client_id, secret, record, hit.which, hit.verified_at, now)
                        .await,
                ));
            }
        }
        let current = match &record.client_secret_hash {
            Some(hash) => {
                self.hasher
                    .verify_client_secret(client_id, secret, hash)
                    .await?
            }
            None => {
                self.verify_dummy(secret).await?;
                false
            }
        };
        let previous = !current
            && previous_in_grace(&record, now)
            && match &record.previous_secret_hash {
                Some(hash) => {
                    self.hasher
                        .verify_client_secret(client_id, secret, hash)
                        .await?
                }
                None => false,
            };
        if !accepted(&record, now, current, previous) {
            return Err(RegistrationError::InvalidToken);
        }
        let which = if current && !secret_expired(&record, now) {
            auth_cache::Which::Current
        } else {
            auth_cache::Which::Previous
        };
        Ok(view(
            self.touched(client_id, secret, record, which, now, now)
                .await,
        ))
    }

    /// `touch` after a successful authentication, then remember (or keep remembering) that
    /// `secret` verified at `verified_at` against the record as stored after the touch.
    async fn touched(
        &self,
        client_id: &str,
        secret: &str,
        record: ClientRecord,
        which: auth_cache::Which,
        verified_at: i64,
        now: i64,
    ) -> ClientRecord {
        let record = self.touch(record, now).await;
        if let Some(cache) = &self.auth_cache {
            cache.insert(client_id, secret, &record, which, verified_at);
        }
        record
    }

    /// `GET /admin/clients`: one page of the clients matching `query`.
    pub async fn list(&self, query: &ListQuery) -> Result<Page> {
        let now = self.clock.now();
        let listing = self
            .matching(query.cursor.as_deref(), query.limit, &query.filter, now)
            .await?;
        Ok(Page {
            clients: listing.records.into_iter().map(view).collect(),
            next_cursor: listing.next.as_deref().map(encode_cursor),
        })
    }

    /// `DELETE /admin/clients/{client_id}`.
    pub async fn delete(&self, client_id: &str, by: &Operator) -> Result<()> {
        for _ in 0..MAX_RETRIES {
            let current = self.load(client_id).await?;
            if self
                .registrar
                .remove_record(&current, &by.change(EventType::Deleted))
                .await?
            {
                return Ok(());
            }
        }
        Err(RegistrationError::Internal(
            "delete kept losing races".into(),
        ))
    }

    /// `DELETE /admin/clients?<filters>`: delete every client matching `filter` (or only count
    /// them with `dry_run`). A client changed meanwhile is judged again on its new state.
    pub async fn delete_matching(
        &self,
        filter: &ClientFilter,
        dry_run: bool,
        by: &Operator,
    ) -> Result<u64> {
        let now = self.clock.now();
        let mut after: Option<String> = None;
        let mut count = 0;
        loop {
            let listing = self.matching(after.as_deref(), 500, filter, now).await?;
            for mut record in listing.records {
                for _ in 0..MAX_RETRIES {
                    if dry_run
                        || self
                            .registrar
                            .remove_record(&record, &by.change(EventType::Deleted))
                            .await?
                    {
                        count += 1;
                        break;
                    }
                    // Changed meanwhile: judged again on its new state.
                    match self.find(&record.client_id).await? {
                        Some(newer) if filter.matches(&newer, now) => record = newer,
                        _ => break,
                    }
                }
            }
            match listing.next {
                Some(next) => after = Some(next),
                None => return Ok(count),
            }
        }
    }

    /// `POST /admin/clients`: create a pre-registered client (`source: admin`) through the
    /// registration path, under the policy named by the body's `policy` member (or none). The
    /// response carries its credentials, once (RFC 7591 §3.2.1).
    pub async fn create(
        &self,
        body: &Map<String, Value>,
        by: &Operator,
    ) -> Result<Map<String, Value>> {
        let mut request = body.clone();
        let policy = match request.remove("policy") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name),
            Some(_) => {
                return Err(RegistrationError::InvalidRequest(
                    "policy must be a string naming a configured policy".into(),
                ))
            }
        };
        if let Some(name) = read_only_member(&request, "disabled") {
            return Err(RegistrationError::InvalidRequest(format!(
                "{name} cannot be set when creating a client{}",
                if name == "disabled" {
                    "; disable it afterwards with PATCH"
                } else {
                    ""
                }
            )));
        }
        let admission = self
            .registrar
            .policy()
            .operator_admission(policy.as_deref())?;
        let issued = self
            .registrar
            .register_admitted(
                &request,
                &admission,
                Some(&self.privileged),
                source::ADMIN,
                &by.change(EventType::Created),
            )
            .await?;
        let client_id = issued
            .get("client_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut out = view(self.load(client_id).await?);
        for name in [
            "client_secret",
            "registration_access_token",
            "registration_client_uri",
        ] {
            if let Some(v) = issued.get(name) {
                out.insert(name.into(), v.clone());
            }
        }
        Ok(out)
    }

    /// `PATCH /admin/clients/{client_id}`: an RFC 7396 merge patch of the metadata, plus
    /// `disabled`. The patched metadata is validated like an RFC 7592 PUT; a patch of `disabled`
    /// alone changes nothing else. A new `client_secret`, if the new auth method needs one, is
    /// in this response only.
    ///
    /// Audited as `client.updated` when the metadata (or the secret) changed and as
    /// `client.disabled` / `client.enabled` when `disabled` flipped: both records, in that
    /// order, in the same write as the change.
    pub async fn patch(
        &self,
        client_id: &str,
        patch: &Map<String, Value>,
        by: &Operator,
    ) -> Result<Map<String, Value>> {
        let mut metadata_patch = patch.clone();
        let disabled = match metadata_patch.remove("disabled") {
            None => None,
            Some(Value::Bool(b)) => Some(b),
            Some(_) => {
                return Err(RegistrationError::InvalidRequest(
                    "disabled must be true or false".into(),
                ))
            }
        };
        if let Some(name) = read_only_member(&metadata_patch, "policy") {
            return Err(RegistrationError::InvalidRequest(format!(
                "{name} is read-only and cannot be patched{}",
                match name {
                    "client_secret" => "; rotate it with POST /admin/clients/{client_id}/client_secret",
                    "registration_access_token" => "; issue a new one with POST /admin/clients/{client_id}/registration_access_token",
                    _ => "",
                }
            )));
        }
        for _ in 0..MAX_RETRIES {
            let current = self.load(client_id).await?;
            if from_document(&current) && !metadata_patch.is_empty() {
                return Err(RegistrationError::InvalidRequest(format!(
                    "the metadata of {client_id:?} comes from its client ID metadata document and is replaced on every fetch; only disabled can be patched"
                )));
            }
            let (mut edited, secret) = if metadata_patch.is_empty() {
                (current.clone(), None)
            } else {
                let mut merged = Value::Object((*current.metadata).clone());
                merge_patch(&mut merged, &Value::Object(metadata_patch.clone()));
                let Value::Object(request) = merged else {
                    unreachable!("a merge patch of an object with an object is an object")
                };
                let plan = self
                    .registrar
                    .plan_change(&current, &request, Some(&self.privileged))
                    .await?;
                (
                    plan.apply_to(&current, &self.rat_key),
                    plan.issued_secret().cloned(),
                )
            };
            // `apply_to` stamps `updated_at` with the plan's time: a patch is a change only if
            // something else differs (a patch repeating the current values, a second after the
            // last change, was recorded as an update with nothing changed).
            edited.updated_at = current.updated_at;
            let mut updated = edited.clone();
            if let Some(d) = disabled {
                updated.disabled = d;
            }
            if updated == current {
                return Ok(view(current));
            }
            let metadata_changed = edited != current;
            let now = self.clock.now();
            edited.updated_at = now;
            updated.updated_at = now;
            let mut events = EventBatch::default();
            if metadata_changed {
                let credentials: &[&str] =
                    if edited.client_secret_hash != current.client_secret_hash {
                        &["client_secret"]
                    } else {
                        &[]
                    };
                let (event, actor, origin) = by.change(EventType::Updated);
                events.extend(self.registrar.events_of(
                    event,
                    actor,
                    &origin,
                    Some(&current),
                    Some(&edited),
                    credentials,
                    true,
                ));
            }
            if updated.disabled != current.disabled {
                let (event, actor, origin) = by.change(if updated.disabled {
                    EventType::Disabled
                } else {
                    EventType::Enabled
                });
                // `disabled` is not part of the client view the digests cover; it is named.
                events.extend(self.registrar.events_of(
                    event,
                    actor,
                    &origin,
                    Some(&edited),
                    Some(&updated),
                    &["disabled"],
                    true,
                ));
            }
            if let Some(stored) = self.save_with(&current, updated, events).await? {
                let mut out = view(stored);
                if let Some(secret) = secret {
                    out.insert("client_secret".into(), Value::from(secret.expose()));
                }
                return Ok(out);
            }
        }
        Err(RegistrationError::Internal(
            "patch kept losing races".into(),
        ))
    }

    /// `POST /admin/clients/{client_id}/client_secret`: a new secret, shown once. With
    /// `grace_secs` > 0 the old one stays valid that long (for rolling it out to the client).
    ///
    /// Audited as `client.secret_rotated` (the member `client_secret` named, never its value).
    pub async fn rotate_secret(
        &self,
        client_id: &str,
        body: &Map<String, Value>,
        by: &Operator,
    ) -> Result<Map<String, Value>> {
        if let Some(name) = body.keys().find(|k| *k != "grace_secs") {
            return Err(RegistrationError::InvalidRequest(format!(
                "unknown member {name:?}; only grace_secs is accepted"
            )));
        }
        let grace = match body.get("grace_secs") {
            None => 0,
            Some(v) => v
                .as_i64()
                .filter(|g| (0..=MAX_GRACE_SECS).contains(g))
                .ok_or_else(|| {
                    RegistrationError::InvalidRequest(format!(
                        "grace_secs must be an integer from 0 to {MAX_GRACE_SECS}"
                    ))
                })?,
        };
        for _ in 0..MAX_RETRIES {
            let current = self.load(client_id).await?;
            let method = auth_method(&current);
            let Some((secret, hash)) = self
                .registrar
                .new_secret(&current.metadata, client_id)
                .await?
            else {
                return Err(RegistrationError::InvalidRequest(format!(
                    "client {client_id:?} uses token_endpoint_auth_method {method:?}, which has no client_secret"
                )));
            };
            let now = self.clock.now();
            let mut updated = current.clone();
            (
                updated.previous_secret_hash,
                updated.previous_secret_expires_at,
            ) = if grace > 0 {
                (current.client_secret_hash.clone(), Some(now + grace))
            } else {
                (None, None)
            };
            updated.client_secret_hash = Some(hash);
            updated.client_secret_expires_at = Some(self.registrar.secret_expiry(now));
            updated.updated_at = now;
            let expires_at = updated.client_secret_expires_at;
            let (event, actor, origin) = by.change(EventType::SecretRotated);
            let events = self.registrar.events_of(
                event,
                actor,
                &origin,
                Some(&current),
                Some(&updated),
                &["client_secret"],
                true,
            );
            if self.save_with(&current, updated, events).await?.is_some() {
                let mut out = Map::new();
                out.insert("client_id".into(), Value::from(client_id));
                out.insert("client_secret".into(), Value::from(secret.expose()));
                out.insert("client_secret_expires_at".into(), Value::from(expires_at));
                if grace > 0 {
                    out.insert(
                        "previous_secret_expires_at".into(),
                        Value::from(now + grace),
                    );
                }
                return Ok(out);
            }
        }
        Err(RegistrationError::Internal(
            "rotation kept losing races".into(),
        ))
    }

    /// `POST /admin/clients/{client_id}/registration_access_token`: a new RFC 7592 token for a
    /// client that lost its own. The old one can no longer change or delete the client; within
    /// `registration.rat_grace_secs` it may still read it (and so learn the new one).
    ///
    /// Audited as `client.registration_access_token_reissued`.
    pub async fn reissue_registration_token(
        &self,
        client_id: &str,
        by: &Operator,
    ) -> Result<Map<String, Value>> {
        for _ in 0..MAX_RETRIES {
            let current = self.load(client_id).await?;
            if from_document(&current) {
                // RFC 7592 manages what RFC 7591 registered; a document is managed by its host.
                return Err(RegistrationError::InvalidRequest(format!(
                    "{client_id:?} comes from a client ID metadata document and has no registration access token"
                )));
            }
            let token = Plaintext::new(self.tokens.token(SECRET_BYTES));
            let mut updated = current.clone();
            let now = self.clock.now();
            // The client's old token keeps its GET-only grace (`crate::lifecycle`), so a client
            // still holding it can fetch the new one.
            crate::lifecycle::rotate_rat(
                &mut updated,
                &self.rat_key,
                &token,
                now,
                self.rat_grace_secs,
                None,
            );
            updated.updated_at = now;
            let (event, actor, origin) = by.change(EventType::RatReissued);
            let events = self.registrar.events_of(
                event,
                actor,
                &origin,
                Some(&current),
                Some(&updated),
                &["registration_access_token"],
                true,
            );
            if self.save_with(&current, updated, events).await?.is_some() {
                let mut out = Map::new();
                out.insert("client_id".into(), Value::from(client_id));
                out.insert(
                    "registration_access_token".into(),
                    Value::from(token.expose()),
                );
                out.insert(
                    "registration_client_uri".into(),
                    Value::from(self.registrar.client_uri(client_id)),
                );
                return Ok(out);
            }
        }
        Err(RegistrationError::Internal(
            "reissue kept losing races".into(),
        ))
    }

    /// `GET /admin/audit`: one page of the audit trail matching `query`, keyset paginated by
    /// `seq` (issue #17 point 3).
    pub async fn audit(&self, query: &AuditQuery) -> Result<AuditPage> {
        crate::events::list(self.store.as_ref(), query)
            .await
            .map_err(store_error)
    }

    /// `GET /admin/webhooks/dead`: dead-lettered deliveries in outbox order, with the cursor
    /// of the next page (`None` on the last).
    pub async fn dead_letters(&self, query: &DeadQuery) -> Result<DeadPage> {
        let rows = self
            .store
            .outbox_dead(query.after, query.limit)
            .await
            .map_err(store_error)?;
        let next_cursor = (rows.len() == query.limit)
            .then(|| rows.last().map(|r| r.seq))
            .flatten();
        Ok(DeadPage {
            deliveries: rows.into_iter().map(DeadLetter::from).collect(),
            next_cursor,
        })
    }

    /// `POST /admin/webhooks/dead/{id}/redeliver`: the dead-lettered delivery with this
    /// `webhook-id` back in the queue, due now, attempts counted afresh, same `webhook-id` and
    /// body; the worker is woken.
    pub async fn redeliver(&self, webhook_id: &str) -> Result<()> {
        let found = crate::events::redeliver(self.store.as_ref(), webhook_id, self.clock.now())
            .await
            .map_err(store_error)?;
        if !found {
            return Err(RegistrationError::DeliveryNotFound(webhook_id.to_owned()));
        }
        self.registrar.deliveries_enqueued();
        Ok(())
    }

    /// Compute the dummy hash now (at start-up), so that even the first unknown client costs
    /// only one verification like every other failure.
    pub async fn warm(&self) -> Result<()> {
        self.dummy().await.map(|_| ())
    }

    async fn dummy(&self) -> Result<&String> {
        self.dummy_hash
            .get_or_try_init(|| async {
                let unknowable = Plaintext::new(self.tokens.token(SECRET_BYTES));
                self.hasher.hash(&unknowable).await
            })
            .await
    }

    async fn verify_dummy(&self, secret: &str) -> Result<()> {
        let dummy = self.dummy().await?;
        // The result is always false (nobody knows the dummy secret); only the work matters.
        self.hasher.verify(secret, dummy).await.map(|_| ())
    }

    /// Record `last_used_at`, at most once per `admin.last_used_resolution_secs`, so a busy
    /// token endpoint costs one write per client per resolution, not one per request.
    async fn touch(&self, record: ClientRecord, now: i64) -> ClientRecord {
        let mut used = record.clone();
        if !crate::lifecycle::mark_used(&mut used, now, self.last_used_resolution) {
            return record;
        }
        // The authentication itself succeeded; failing to record the use must not undo it.
        self.registrar.bookkeep(record, used).await
    }

    // --- store access -----------------------------------------------------------------------

    async fn find(&self, client_id: &str) -> Result<Option<ClientRecord>> {
        self.store.get(client_id).await.map_err(store_error)
    }

    async fn load(&self, client_id: &str) -> Result<ClientRecord> {
        self.find(client_id)
            .await?
            .ok_or_else(|| RegistrationError::ClientNotFound(client_id.to_owned()))
    }

    /// Replace `current` with `updated` if `current` is still the stored revision, durably,
    /// with the change's audit records and webhook rows in the same write; the stored record,
    /// or `None` if another writer won.
    async fn save_with(
        &self,
        current: &ClientRecord,
        updated: ClientRecord,
        events: EventBatch,
    ) -> Result<Option<ClientRecord>> {
        self.registrar.save_with(current, updated, events).await
    }

    async fn matching(
        &self,
        after: Option<&str>,
        limit: usize,
        filter: &ClientFilter,
        now: i64,
    ) -> Result<crate::store::Listing> {
        self.store
            .list(after, limit, filter, now)
            .await
            .map_err(store_error)
    }
}

/// Whether the client was resolved from its metadata document (`cimd`).
/// The current secret's `client_secret_expires_at` (RFC 7591 §3.2.1; 0 = never) has passed.
fn secret_expired(record: &ClientRecord, now: i64) -> bool {
    record
        .client_secret_expires_at
        .is_some_and(|at| at != 0 && at <= now)
}

/// A rotation's previous secret is still within its grace period.
fn previous_in_grace(record: &ClientRecord, now: i64) -> bool {
    record.previous_secret_expires_at.is_some_and(|at| at > now)
}

/// The outcome of `authenticate` given which secrets the presented one matched.
fn accepted(record: &ClientRecord, now: i64, current: bool, previous: bool) -> bool {
    let valid = (current && !secret_expired(record, now)) || previous;
    valid && !record.disabled
}

fn from_document(record: &ClientRecord) -> bool {
    record.source.as_deref() == Some(source::METADATA_DOCUMENT)
}

fn auth_method(record: &ClientRecord) -> String {
    record
        .metadata
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The admin view of a client: its registered metadata and the directory's own fields. Never a
/// hash, a tag or a plaintext credential.
pub fn view(record: ClientRecord) -> Map<String, Value> {
    let mut out = Map::with_capacity(record.metadata.len() + 11);
    let created = record.created();
    out.insert("client_id".into(), Value::from(record.client_id));
    out.extend(record.metadata.into_map());
    out.insert(
        "client_id_issued_at".into(),
        Value::from(record.client_id_issued_at),
    );
    if let Some(at) = record.client_secret_expires_at {
        out.insert("client_secret_expires_at".into(), Value::from(at));
    }
    if let Some(statement) = record.software_statement {
        out.insert("software_statement".into(), Value::from(statement));
    }
    out.insert("created_at".into(), Value::from(created));
    out.insert("updated_at".into(), Value::from(record.updated_at));
    out.insert("last_used_at".into(), Value::from(record.last_used_at));
    out.insert("disabled".into(), Value::from(record.disabled));
    out.insert("policy".into(), Value::from(record.policy));
    out.insert("tier".into(), Value::from(record.tier));
    out.insert(
        "source".into(),
        Value::from(
            record
                .source
                .unwrap_or_else(|| source::REGISTRATION.to_owned()),
        ),
    );
    out
}

/// RFC 7396 §2 MergePatch: members of `patch` replace those of `target`, `null` removes,
/// objects merge recursively, anything else replaces the whole value.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (name, value) in patch {
            if value.is_null() {
                map.remove(name);
            } else {
                merge_patch(map.entry(name.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The opaque form of a keyset cursor (the last `client_id` of a page).
pub fn encode_cursor(client_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(client_id.as_bytes())
}

/// Who makes an operator change, for its audit record (issue #17 point 1): the admin token's
/// configured `name` (never the token) and where the request came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Operator {
    /// The admin token's `name` (`admin.tokens[].name`).
    pub name: String,
    /// Source address and request id of the admin request.
    pub origin: Origin,
}

impl Operator {
    /// The operator named `name`, calling from `origin`.
    pub fn new(name: &str, origin: Origin) -> Self {
        Self {
            name: name.to_owned(),
            origin,
        }
    }

    /// The event, actor and origin of one of this operator's changes.
    fn change(&self, event: EventType) -> (EventType, Actor, Origin) {
        (event, Actor::admin(&self.name), self.origin.clone())
    }
}

#[cfg(test)]
mod tests;
