//! The registration service: RFC 7591 registration and RFC 7592 read, update and delete.
//! Framework-free: it takes parsed JSON and tokens, returns JSON maps or `RegistrationError`.

pub mod discovery;
pub mod upstream;

use crate::clock::Clock;
use crate::credentials::{is_recoverable, Plaintext, RatKey, SecretHasher};
use crate::error::{RegistrationError, Result};
use crate::fetch::RemoteMetadata;
use crate::metadata::{self, uses_client_secret};
use crate::policy::{PolicyEngine, RegistrationContext};
use crate::settings::Settings;
use crate::store::{ClientRecord, ClientStore, StoreError};
use crate::tokens::{TokenGenerator, CLIENT_ID_BYTES, SECRET_BYTES};
use serde_json::{Map, Value};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// How many times a write that lost a race is retried before giving up.
const MAX_RETRIES: usize = 8;

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
    registration_endpoint: String,
    discovery: Arc<discovery::Discovery>,
}

/// The pieces a `Registrar` is built from; `settings.issuer` must already be resolved.
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
}

fn store_error(e: StoreError) -> RegistrationError {
    match e {
        StoreError::Io(cause) => {
            tracing::error!(%cause, "store write failed");
            RegistrationError::Unavailable
        }
        StoreError::Corrupt(cause) => RegistrationError::Internal(format!("store: {cause}")),
        StoreError::Conflict => {
            RegistrationError::Internal("store: unresolved write conflict".into())
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
            registration_endpoint,
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

    /// Take one registration from the client address's bucket (security.md §5.2); call before
    /// reading the body of a registration request.
    pub fn check_rate_limit(&self, context: &RegistrationContext) -> Result<()> {
        self.policy.check_rate_limit(context.client_ip)
    }

    /// Number of registered clients.
    pub fn client_count(&self) -> usize {
        self.store.len()
    }

    /// Whether registrations, updates and deletions can be stored right now. False while the
    /// store is recovering from a storage failure (disk full); reads keep working meanwhile.
    pub fn store_writable(&self) -> bool {
        self.store.writable()
    }

    fn client_uri(&self, client_id: &str) -> String {
        format!("{}/{}", self.registration_endpoint, client_id)
    }

    /// RFC 7591 §3.1–3.2: register a client. Returns the client information response (§3.2.1):
    /// credentials plus every registered metadata value with defaults applied.
    ///
    /// Admission first (initial access token, software statement; RFC 7591 §3, §3.1.1), then the
    /// admitting tier's policy around the metadata engine; durable counters (token uses, `jti`,
    /// policy quota) are taken only once the request is valid, and given back if storing fails.
    pub async fn register_client(
        &self,
        request: &Map<String, Value>,
        context: &RegistrationContext,
    ) -> Result<Map<String, Value>> {
        let now = self.clock.now();
        let admission = self
            .policy
            .admit(context.initial_access_token.as_deref(), request, now)?;
        let claims = admission.statement.as_ref().map(|s| &s.claims);
        let policy = admission.policy.as_deref();
        let (prepared, metadata_settings) =
            self.policy
                .prepare(policy, claims, request, &self.settings.metadata)?;
        let metadata = metadata::validate(&prepared, metadata_settings)?;
        self.remote.check(&metadata).await?;
        self.policy.check(policy, claims, &metadata)?;
        let counters = self.policy.consume(self.store.as_ref(), &admission)?;
        let result = self.store_new_client(metadata, &admission, now).await;
        if result.is_err() {
            self.policy.release(self.store.as_ref(), &counters);
        }
        result
    }

    async fn store_new_client(
        &self,
        metadata: Map<String, Value>,
        admission: &crate::policy::Admission,
        now: i64,
    ) -> Result<Map<String, Value>> {
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
            metadata,
            updated_at: now,
            policy: admission.policy.as_ref().map(|p| p.name.clone()),
            tier: Some(admission.tier.to_owned()),
            software_statement: admission.statement.as_ref().map(|s| s.raw.clone()),
        };
        let mut attempts = 0;
        loop {
            match self.store.insert(&record) {
                Ok(()) => break,
                // 128 random bits do not collide in practice; if they do, draw again.
                Err(StoreError::Conflict) if attempts < MAX_RETRIES => {
                    attempts += 1;
                    record.client_id = self.tokens.token(CLIENT_ID_BYTES);
                    if secret.is_some() {
                        secret = self.new_secret(&record.metadata, &record.client_id).await?;
                        record.client_secret_hash = secret.as_ref().map(|(_, h)| h.clone());
                    }
                }
                Err(e) => return Err(store_error(e)),
            }
        }
        self.store.durable().await.map_err(store_error)?;
        tracing::info!(client_id = %record.client_id, "client registered");
        Ok(self.response(record, &rat, secret.as_ref().map(|(s, _)| s)))
    }

    /// RFC 7592 §2.1: read the current registration.
    pub async fn read_client(
        &self,
        client_id: &str,
        rat: Option<&str>,
    ) -> Result<Map<String, Value>> {
        let record = self.authenticate(client_id, rat).await?;
        let presented = Plaintext::new(rat.unwrap_or_default().to_owned());
        if !self.settings.registration.rotate_rat_on_read {
            return Ok(self.response(record, &presented, None));
        }
        let new_rat = Plaintext::new(self.tokens.token(SECRET_BYTES));
        let mut updated = record.clone();
        updated.rat_tag = self.rat_key.tag(new_rat.expose()).to_vec();
        match self.store.replace(&record, &updated) {
            Ok(()) => {}
            // Someone else changed the client (and maybe the token) meanwhile: the token the
            // caller holds may be dead now, so answer as for any invalid token.
            Err(StoreError::Conflict) => return Err(RegistrationError::InvalidToken),
            Err(e) => return Err(store_error(e)),
        }
        self.store.durable().await.map_err(store_error)?;
        Ok(self.response(updated, &new_rat, None))
    }

    /// RFC 7592 §2.2: replace the registration with the request's metadata.
    pub async fn update_client(
        &self,
        client_id: &str,
        rat: Option<&str>,
        request: &Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        for _ in 0..MAX_RETRIES {
            let current = self.authenticate(client_id, rat).await?;
            self.check_update_request(&current, rat.unwrap_or_default(), request)
                .await?;
            // The admitting tier's policy is re-applied on every update (security.md B34).
            let policy = self.policy.policy_named(current.policy.as_deref())?;
            self.policy
                .check_update_tier(current.tier.as_deref(), request)?;
            let claims = self
                .policy
                .stored_statement_claims(current.software_statement.as_deref(), request)?;
            let (prepared, metadata_settings) = self.policy.prepare(
                policy.as_deref(),
                claims.as_ref(),
                request,
                &self.settings.metadata,
            )?;
            let metadata = metadata::validate(&prepared, metadata_settings)?;
            self.remote.check(&metadata).await?;
            self.policy
                .check(policy.as_deref(), claims.as_ref(), &metadata)?;
            let now = self.clock.now();
            let mut updated = current.clone();
            let mut issued_secret = None;
            let method = metadata
                .get("token_endpoint_auth_method")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !uses_client_secret(method) {
                updated.client_secret_hash = None;
                updated.client_secret_expires_at = None;
            } else if current.client_secret_hash.as_deref().is_none_or(|stored| {
                metadata::needs_recoverable_secret(&metadata) && !is_recoverable(stored)
            }) {
                // Changing to a secret-based method, or to one that needs a recoverable secret
                // while the current one is only a hash: issue a new secret, shown in this
                // response only.
                if let Some((secret, hash)) = self.new_secret(&metadata, client_id).await? {
                    updated.client_secret_hash = Some(hash);
                    updated.client_secret_expires_at = Some(self.secret_expiry(now));
                    issued_secret = Some(secret);
                }
            }
            let token = if self.settings.registration.rotate_rat_on_update {
                Plaintext::new(self.tokens.token(SECRET_BYTES))
            } else {
                Plaintext::new(rat.unwrap_or_default().to_owned())
            };
            updated.rat_tag = self.rat_key.tag(token.expose()).to_vec();
            updated.metadata = metadata;
            updated.updated_at = now;
            match self.store.replace(&current, &updated) {
                Ok(()) => {
                    self.store.durable().await.map_err(store_error)?;
                    tracing::info!(client_id = %client_id, "client updated");
                    return Ok(self.response(updated, &token, issued_secret.as_ref()));
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(RegistrationError::Internal(
            "update kept losing races".into(),
        ))
    }

    /// RFC 7592 §2.3: delete the registration; its token dies with it.
    pub async fn delete_client(&self, client_id: &str, rat: Option<&str>) -> Result<()> {
        for _ in 0..MAX_RETRIES {
            let current = self.authenticate(client_id, rat).await?;
            match self.store.remove(&current) {
                Ok(()) => {
                    self.policy
                        .client_deleted(self.store.as_ref(), current.policy.as_deref());
                    self.store.durable().await.map_err(store_error)?;
                    tracing::info!(client_id = %client_id, "client deleted");
                    return Ok(());
                }
                Err(StoreError::Conflict) => continue,
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(RegistrationError::Internal(
            "delete kept losing races".into(),
        ))
    }

    /// The discovery document (RFC 8414 §2 / OpenID Connect Discovery §3).
    pub fn discovery(&self) -> Arc<Map<String, Value>> {
        self.discovery.document()
    }

    /// The discovery documents' state, which the authorization server metadata task updates.
    pub fn discovery_service(&self) -> &Arc<discovery::Discovery> {
        &self.discovery
    }

    /// RFC 7592 §2: the client must exist and the token must be its current registration access
    /// token. Every failure is the same `InvalidToken`, so a caller cannot learn whether a
    /// `client_id` exists. A valid token presented for another (or an unknown) client is revoked
    /// (RFC 7592 §2.1 SHOULD; node-oidc-provider does the same).
    async fn authenticate(&self, client_id: &str, rat: Option<&str>) -> Result<ClientRecord> {
        let rat = rat.ok_or(RegistrationError::InvalidToken)?;
        let tag = self.rat_key.tag(rat);
        let record = self.store.get(client_id).map_err(store_error)?;
        if let Some(record) = record {
            if self.rat_key.matches(rat, &record.rat_tag) {
                return Ok(record);
            }
        }
        if let Some(owner) = self.store.client_for_rat(&tag).map_err(store_error)? {
            if owner != client_id {
                self.revoke(&owner, &tag).await?;
            }
        }
        Err(RegistrationError::InvalidToken)
    }

    async fn revoke(&self, client_id: &str, tag: &[u8]) -> Result<()> {
        if let Some(record) = self.store.get(client_id).map_err(store_error)? {
            if bool::from(record.rat_tag.as_slice().ct_eq(tag)) {
                let mut revoked = record.clone();
                revoked.rat_tag = Vec::new();
                match self.store.replace(&record, &revoked) {
                    Ok(()) | Err(StoreError::Conflict) => {}
                    Err(e) => return Err(store_error(e)),
                }
                self.store.durable().await.map_err(store_error)?;
                tracing::warn!(client_id = %client_id, "registration access token used for another client; revoked");
            }
        }
        Ok(())
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
        match (request.get("client_secret"), &current.client_secret_hash) {
            (None, _) => Ok(()),
            (Some(Value::String(s)), Some(hash))
                if self
                    .hasher
                    .verify_client_secret(&current.client_id, s, hash)
                    .await? =>
            {
                Ok(())
            }
            (Some(_), _) => Err(RegistrationError::InvalidRequest(
                "client_secret does not match the current secret; a client cannot choose its secret (RFC 7592 §2.2)".into(),
            )),
        }
    }

    /// A new `client_secret` and its stored form, if the auth method uses one: an argon2id hash,
    /// or, for `client_secret_jwt` and secret-keyed algorithms, a recoverable derived secret
    /// (refused unless the operator enabled them; see `credentials`).
    async fn new_secret(
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

    fn secret_expiry(&self, now: i64) -> i64 {
        match self.settings.credentials.client_secret_lifetime_secs {
            0 => 0,
            secs => now.saturating_add(secs as i64),
        }
    }

    /// RFC 7591 §3.2.1 / RFC 7592 §3 client information response.
    ///
    /// Takes the record by value and moves its metadata into the response: on the read path,
    /// cloning every member was about a tenth of the server's CPU time (BENCHMARKS.md profile).
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
        out.extend(record.metadata);
        if let Some(statement) = record.software_statement {
            // RFC 7591 §3.2.1: the statement is returned unmodified.
            out.insert("software_statement".into(), Value::from(statement));
        }
        out
    }
}
