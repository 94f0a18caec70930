//! Who may register, and with what (RFC 7591 §3, §2.3, §3.1.1; security.md §5).
//!
//! Framework-free. The engine decides admission (open, initial access token, software statement,
//! or combinations), picks the policy of the admitting tier, applies it around the metadata
//! engine, and decides which durable counters (token use counts, `jti` replay, client quotas) a
//! registration takes; the registration service commits them with the new client, so a refused
//! or failed request does not burn a use.

pub mod backoff;
pub mod config;
pub mod jwt;
pub mod ratelimit;
pub mod rules;

use crate::credentials::{find_token_digest, token_digest};
use crate::error::{RegistrationError, Result};
use crate::logsafe::escaped;
use crate::settings::{MetadataSettings, Settings};
use crate::store::CounterOp;
use backoff::FailureBackoff;
use config::{AccessMode, AnonymousKind};
use jwt::{Issuer, JwtError};
use ratelimit::{ClientIpResolver, KeyedLimiter, RegistrationLimiter};
use rules::{Policy, Violation, ViolationKind};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// What the HTTP layer hands the service about a registration request besides its body.
#[derive(Debug, Clone, Default)]
pub struct RegistrationContext {
    /// The bearer token of the request (RFC 7591 §3 initial access token), if any.
    pub initial_access_token: Option<String>,
    /// The client address (socket peer, or from a trusted proxy's header).
    pub client_ip: Option<IpAddr>,
}

/// The tier that admitted a client; stored with it so updates are judged the same way.
pub mod tier {
    /// No credential, in open mode.
    pub const ANONYMOUS: &str = "anonymous";
    /// No credential, let in by `access.anonymous_allowed_for` although the mode wants one;
    /// updates must keep fitting that exception.
    pub const ANONYMOUS_EXCEPTION: &str = "anonymous_exception";
    /// An initial access token (static or JWT).
    pub const INITIAL_ACCESS_TOKEN: &str = "initial_access_token";
    /// A software statement without a token.
    pub const SOFTWARE_STATEMENT: &str = "software_statement";
    /// Created by an operator through the admin API.
    pub const ADMIN: &str = "admin";
    /// An https `client_id` resolved from its metadata document (`crate::directory::cimd`).
    pub const METADATA_DOCUMENT: &str = "metadata_document";
}

/// A software statement whose signature and claims verified (RFC 7591 §2.3).
#[derive(Debug, Clone)]
pub struct VerifiedStatement {
    /// The statement exactly as presented; echoed unmodified in responses.
    pub raw: String,
    /// Its claims.
    pub claims: Map<String, Value>,
}

/// The outcome of admission: who came in, under which policy, with which counters to consume.
#[derive(Debug, Clone)]
pub struct Admission {
    /// One of the [`tier`] names.
    pub tier: &'static str,
    /// The policy to apply, if any.
    pub policy: Option<Arc<Policy>>,
    /// The verified software statement, if one was presented.
    pub statement: Option<VerifiedStatement>,
    /// Durable counters to take one from once the request is valid: (key, limit, error).
    counters: Vec<(String, u64, CounterRefusal)>,
}

#[derive(Debug, Clone, Copy)]
enum CounterRefusal {
    TokenUsedUp,
    StatementReplayed,
}

/// The durable count of clients registered without credentials (`access.max_anonymous_clients`).
const ANONYMOUS_COUNTER: &str = "anonymous-clients";

fn is_anonymous(tier: Option<&str>) -> bool {
    matches!(tier, Some(tier::ANONYMOUS | tier::ANONYMOUS_EXCEPTION))
}

struct StaticToken {
    policy: Option<String>,
    max_uses: u64,
    key: String,
}

/// The compiled `[access]`, `[policies]` and `[rate_limit]` configuration.
pub struct PolicyEngine {
    mode: AccessMode,
    anonymous_allowed_for: Vec<AnonymousKind>,
    anonymous_policy: Option<Arc<Policy>>,
    digests: Vec<[u8; 32]>,
    static_tokens: Vec<StaticToken>,
    token_issuers: Vec<Issuer>,
    statement_issuers: Vec<Issuer>,
    policies: BTreeMap<String, Arc<Policy>>,
    leeway: i64,
    max_statement_bytes: usize,
    max_anonymous_clients: u64,
    limiter: Option<RegistrationLimiter>,
    management_limiter: Option<RegistrationLimiter>,
    client_limiter: Option<KeyedLimiter<String>>,
    secret_backoff: FailureBackoff,
    resolver: ClientIpResolver,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("mode", &self.mode)
            .field("static_tokens", &self.static_tokens.len())
            .field("token_issuers", &self.token_issuers)
            .field("statement_issuers", &self.statement_issuers)
            .field("policies", &self.policies.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Claims of a software statement that describe the JWT, not the client.
const JWT_CLAIMS: &[&str] = &["iss", "sub", "aud", "exp", "iat", "nbf", "jti"];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 32 bytes of a 64-digit hex SHA-256 digest (configured token digests).
pub(crate) fn unhex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl PolicyEngine {
    /// Compile the settings; any mistake is reported at start-up, not at the first request.
    pub fn from_settings(settings: &Settings) -> std::result::Result<Self, String> {
        let access = &settings.access;
        let mut policies = BTreeMap::new();
        for (name, p) in &settings.policies {
            policies.insert(
                name.clone(),
                Arc::new(Policy::compile(name, p, &settings.metadata)?),
            );
        }
        let lookup =
            |name: &str, place: &str| -> std::result::Result<Option<Arc<Policy>>, String> {
                if name.is_empty() {
                    return Ok(None);
                }
                policies
                    .get(name)
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| format!("{place}: no policy named {name:?} in [policies]"))
            };
        let anonymous_policy = lookup(&access.anonymous_policy, "access.anonymous_policy")?;
        let mut digests = Vec::new();
        let mut static_tokens = Vec::new();
        for (i, t) in access.static_tokens.iter().enumerate() {
            let digest = match (t.sha256.is_empty(), t.token.is_empty()) {
                (false, true) => unhex(&t.sha256).ok_or_else(|| {
                    format!("access.static_tokens[{i}].sha256 must be 64 hex digits")
                })?,
                (true, false) if t.token.len() >= 16 => token_digest(&t.token),
                (true, false) => {
                    return Err(format!(
                        "access.static_tokens[{i}].token is too short (at least 16 characters; use 32 random bytes)"
                    ))
                }
                _ => {
                    return Err(format!(
                        "access.static_tokens[{i}]: set exactly one of `sha256` and `token`"
                    ))
                }
            };
            lookup(&t.policy, &format!("access.static_tokens[{i}].policy"))?;
            static_tokens.push(StaticToken {
                policy: (!t.policy.is_empty()).then(|| t.policy.clone()),
                max_uses: t.max_uses,
                key: format!("iat:static:{}", hex(&digest)),
            });
            digests.push(digest);
        }
        let compile = |list: &[config::TrustedIssuer], place: &str| {
            list.iter()
                .map(|c| {
                    lookup(&c.policy, &format!("{place} {}", c.issuer))?;
                    Issuer::compile(c).map_err(|e| format!("{place}: {e}"))
                })
                .collect::<std::result::Result<Vec<_>, String>>()
        };
        let token_issuers = compile(&access.token_issuers, "access.token_issuers")?;
        let statement_issuers = compile(&access.statement_issuers, "access.statement_issuers")?;
        separate_token_and_statement_issuers(access)?;
        let needs_token = matches!(
            access.mode,
            AccessMode::Token | AccessMode::TokenAndStatement
        );
        if needs_token && digests.is_empty() && token_issuers.is_empty() {
            return Err("access.mode requires an initial access token, but no static_tokens or token_issuers are configured".into());
        }
        let needs_statement = matches!(
            access.mode,
            AccessMode::Statement | AccessMode::TokenAndStatement
        );
        if needs_statement && statement_issuers.is_empty() {
            return Err("access.mode requires a software statement, but no statement_issuers are configured".into());
        }
        Ok(Self {
            mode: access.mode,
            anonymous_allowed_for: access.anonymous_allowed_for.clone(),
            anonymous_policy,
            digests,
            static_tokens,
            token_issuers,
            statement_issuers,
            policies,
            leeway: i64::try_from(access.leeway_secs).unwrap_or(i64::MAX),
            max_statement_bytes: access.max_statement_bytes,
            max_anonymous_clients: access.max_anonymous_clients,
            limiter: RegistrationLimiter::new(&settings.rate_limit)?,
            management_limiter: RegistrationLimiter::management(&settings.rate_limit)?,
            client_limiter: match settings.rate_limit.enabled {
                true => Some(KeyedLimiter::new(
                    settings.rate_limit.client_burst,
                    settings.rate_limit.client_period_ms,
                    settings.rate_limit.max_tracked_sources,
                    String::new(),
                    "rate_limit.client",
                )?),
                false => None,
            },
            secret_backoff: FailureBackoff::new(
                settings.rate_limit.secret_failures_before_backoff,
                settings.rate_limit.secret_backoff_max_secs,
            ),
            resolver: ClientIpResolver::new(&settings.rate_limit)?,
        })
    }

    /// How client addresses are found.
    pub fn client_ip_resolver(&self) -> &ClientIpResolver {
        &self.resolver
    }

    /// Take one registration from `ip`'s bucket; `TooManyRequests` when it is empty.
    pub fn check_rate_limit(&self, ip: Option<IpAddr>) -> Result<()> {
        take(self.limiter.as_ref().zip(ip).map(|(l, ip)| l.check(ip)))
    }

    /// Take one management call (PUT/DELETE, RFC 7592 §2.2–2.3) from `ip`'s bucket; call before
    /// reading the body.
    pub fn check_management_rate_limit(&self, ip: Option<IpAddr>) -> Result<()> {
        take(
            self.management_limiter
                .as_ref()
                .zip(ip)
                .map(|(l, ip)| l.check(ip)),
        )
    }

    /// Take one management call from the bucket of `client_id`, whose token was verified (so a
    /// stranger who knows a `client_id` cannot drain it).
    pub fn check_client_rate_limit(&self, client_id: &str) -> Result<()> {
        take(
            self.client_limiter
                .as_ref()
                .map(|l| l.check(client_id.to_owned())),
        )
    }

    /// The per-client back-off of failed `client_secret` checks.
    pub fn secret_backoff(&self) -> &FailureBackoff {
        &self.secret_backoff
    }

    /// The policy called `name` (`None` = no policy). A stored client naming a policy that was
    /// since removed from the configuration cannot be judged, so its updates are refused.
    pub fn policy_named(&self, name: Option<&str>) -> Result<Option<Arc<Policy>>> {
        match name {
            None => Ok(None),
            Some(n) => self.policies.get(n).cloned().map(Some).ok_or_else(|| {
                RegistrationError::InvalidRequest(format!(
                    "this client was registered under policy '{n}', which is no longer configured; ask the operator"
                ))
            }),
        }
    }

    fn anonymous_allowed(&self, request: &Map<String, Value>) -> bool {
        let auth_none = request.get("token_endpoint_auth_method") == Some(&Value::from("none"));
        let native = request.get("application_type") == Some(&Value::from("native"));
        self.anonymous_allowed_for.iter().any(|k| match k {
            AnonymousKind::Public => auth_none,
            AnonymousKind::PublicNative => auth_none && native,
        })
    }

    /// Whether a client admitted under `tier` may be updated with `request` in the current mode:
    /// one admitted anonymously by an exception (e.g. public native) must still fit it, so a
    /// PUT cannot turn it into a client the mode would have refused (security.md B34).
    pub fn check_update_tier(
        &self,
        tier: Option<&str>,
        request: &Map<String, Value>,
    ) -> Result<()> {
        if tier == Some(tier::ANONYMOUS_EXCEPTION)
            && self.mode != AccessMode::Open
            && !self.anonymous_allowed(request)
        {
            return Err(RegistrationError::InvalidClientMetadata(
                "this client was registered without credentials as a public client and must stay one (token_endpoint_auth_method 'none'; see access.anonymous_allowed_for)".into(),
            ));
        }
        Ok(())
    }

    /// The admission of a client an operator creates through the admin API (a pre-registered
    /// client): no credential to check, under the policy the operator names (or none), counted
    /// in that policy's quota like any other.
    pub fn operator_admission(&self, policy: Option<&str>) -> Result<Admission> {
        self.named_admission(tier::ADMIN, policy)
    }

    /// The admission of a client resolved from its metadata document
    /// (`crate::directory::cimd`), under `cimd.policy`: its quota counts these clients too.
    pub fn document_admission(&self, policy: Option<&str>) -> Result<Admission> {
        self.named_admission(tier::METADATA_DOCUMENT, policy)
    }

    fn named_admission(&self, tier: &'static str, policy: Option<&str>) -> Result<Admission> {
        let policy = match policy {
            None => None,
            Some(name) => Some(self.policies.get(name).cloned().ok_or_else(|| {
                RegistrationError::InvalidRequest(format!(
                    "policy: no policy named {name:?} is configured"
                ))
            })?),
        };
        Ok(Admission {
            tier,
            policy,
            statement: None,
            counters: Vec::new(),
        })
    }

    /// RFC 7591 §3: decide whether the request may register, verifying every credential it
    /// presents (a bad one is refused even where none is required).
    pub fn admit(
        &self,
        initial_access_token: Option<&str>,
        request: &Map<String, Value>,
        now: i64,
    ) -> Result<Admission> {
        let mut counters = Vec::new();
        let statement = match request.get("software_statement") {
            None | Some(Value::Null) => None,
            // RFC 7591 §3.1.1: a server that does not support software statements MAY ignore
            // them; with no trusted issuer configured, this one does (it is then dropped like
            // any unknown member, and not echoed).
            Some(_) if self.statement_issuers.is_empty() => None,
            Some(Value::String(s)) => Some(self.verify_statement(s, now, &mut counters)?),
            Some(_) => {
                return Err(RegistrationError::InvalidSoftwareStatement(
                    "software_statement must be a string (a JWT, RFC 7591 §2.3)".into(),
                ))
            }
        };
        let token_policy = match initial_access_token {
            Some(t) => Some(self.verify_token(t, now, &mut counters)?),
            None => None,
        };
        let has_token = token_policy.is_some();
        let has_statement = statement.is_some();
        let exempt = self.anonymous_allowed(request);
        let missing_token = || {
            tracing::info!("registration refused: initial access token required");
            RegistrationError::InvalidToken
        };
        let missing_statement = || {
            RegistrationError::InvalidSoftwareStatement(
                "software_statement is required by this server (RFC 7591 §3.1.1)".into(),
            )
        };
        // An exempt request (e.g. a public native app) needs nothing; credentials it does send
        // were verified above and still choose its tier and policy.
        if !exempt {
            match self.mode {
                AccessMode::Open => {}
                AccessMode::Token if !has_token => return Err(missing_token()),
                AccessMode::Statement if !has_statement => return Err(missing_statement()),
                AccessMode::TokenOrStatement if !has_token && !has_statement => {
                    return Err(missing_token())
                }
                AccessMode::TokenAndStatement if !has_token => return Err(missing_token()),
                AccessMode::TokenAndStatement if !has_statement => return Err(missing_statement()),
                _ => {}
            }
        }
        let statement_policy = statement.as_ref().and_then(|s| {
            let iss = s.claims.get("iss").and_then(Value::as_str)?;
            self.statement_issuers
                .iter()
                .find(|i| i.issuer == iss)
                .and_then(|i| i.policy.clone())
        });
        let (tier, policy_name) = match (token_policy, &statement) {
            // A token's policy wins: the operator issued it for this registrant specifically.
            (Some(p), _) => (tier::INITIAL_ACCESS_TOKEN, p.or(statement_policy)),
            (None, Some(_)) => (tier::SOFTWARE_STATEMENT, statement_policy),
            (None, None) => (
                if self.mode == AccessMode::Open {
                    tier::ANONYMOUS
                } else {
                    tier::ANONYMOUS_EXCEPTION
                },
                self.anonymous_policy.as_ref().map(|p| p.name.clone()),
            ),
        };
        let policy =
            match policy_name {
                Some(name) => Some(self.policies.get(&name).cloned().ok_or_else(|| {
                    RegistrationError::Internal(format!("policy {name} vanished"))
                })?),
                None => None,
            };
        Ok(Admission {
            tier,
            policy,
            statement,
            counters,
        })
    }

    /// Static token (hash compare) or JWT from a trusted issuer. Returns the token's policy.
    fn verify_token(
        &self,
        token: &str,
        now: i64,
        counters: &mut Vec<(String, u64, CounterRefusal)>,
    ) -> Result<Option<String>> {
        if let Some(i) = find_token_digest(token, &self.digests) {
            let t = &self.static_tokens[i];
            if t.max_uses > 0 {
                counters.push((t.key.clone(), t.max_uses, CounterRefusal::TokenUsedUp));
            }
            return Ok(t.policy.clone());
        }
        let refuse = |why: &dyn std::fmt::Display| {
            tracing::info!(reason = %escaped(why), "initial access token refused");
            RegistrationError::InvalidToken
        };
        let iss = jwt::peek_issuer(token).map_err(|e| refuse(&e))?;
        let issuer = self
            .token_issuers
            .iter()
            .find(|i| i.issuer == iss)
            .ok_or_else(|| refuse(&"unknown issuer"))?;
        let claims = issuer
            .verify(token, now, self.leeway, true)
            .map_err(|e| refuse(&e))?;
        let policy = match claims.get("policy") {
            None => issuer.policy.clone(),
            Some(Value::String(p)) if self.policies.contains_key(p) => Some(p.clone()),
            Some(_) => return Err(refuse(&"policy claim names no configured policy")),
        };
        if let Some(max) = claims.get("max_uses") {
            let max = max
                .as_u64()
                .ok_or_else(|| refuse(&"max_uses is not a non-negative integer"))?;
            let jti = claims
                .get("jti")
                .and_then(Value::as_str)
                .filter(|j| !j.is_empty())
                .ok_or_else(|| refuse(&"max_uses needs a jti"))?;
            counters.push((
                format!("iat:jwt:{}:{jti}", issuer.issuer),
                max,
                CounterRefusal::TokenUsedUp,
            ));
        }
        Ok(policy)
    }

    /// RFC 7591 §2.3 / §3.1.1: a signed JWT from a trusted issuer.
    fn verify_statement(
        &self,
        raw: &str,
        now: i64,
        counters: &mut Vec<(String, u64, CounterRefusal)>,
    ) -> Result<VerifiedStatement> {
        let invalid = |m: String| RegistrationError::InvalidSoftwareStatement(m);
        if raw.len() > self.max_statement_bytes {
            return Err(invalid(format!(
                "software_statement is longer than {} bytes",
                self.max_statement_bytes
            )));
        }
        let iss = jwt::peek_issuer(raw).map_err(|e| match e {
            JwtError::UntrustedIssuer(m) => invalid(format!("software_statement: {m}")),
            other => invalid(format!("software_statement: {other}")),
        })?;
        let Some(issuer) = self.statement_issuers.iter().find(|i| i.issuer == iss) else {
            return Err(RegistrationError::UnapprovedSoftwareStatement(format!(
                "software_statement issuer '{iss}' is not trusted by this server"
            )));
        };
        let claims = issuer
            .verify(raw, now, self.leeway, false)
            .map_err(|e| invalid(format!("software_statement: {e}")))?;
        if issuer.reject_replayed_jti {
            let jti = claims
                .get("jti")
                .and_then(Value::as_str)
                .filter(|j| !j.is_empty())
                .ok_or_else(|| invalid("software_statement: a jti claim is required".into()))?;
            counters.push((
                format!("ssa-jti:{iss}:{jti}"),
                1,
                CounterRefusal::StatementReplayed,
            ));
        }
        Ok(VerifiedStatement {
            raw: raw.to_owned(),
            claims,
        })
    }

    /// Claims of a statement stored with a client at registration (verified then), for updates.
    /// A statement different from the stored one is refused: the tier and policy of a client
    /// are bound to the statement it registered with.
    pub fn stored_statement_claims(
        &self,
        stored: Option<&str>,
        request: &Map<String, Value>,
    ) -> Result<Option<Map<String, Value>>> {
        let presented = match request.get("software_statement") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        };
        match (presented, stored) {
            (None, None) => Ok(None),
            (Some(Value::String(p)), Some(s)) if p == s => jwt::unverified_claims(s).map(Some),
            (None, Some(s)) => jwt::unverified_claims(s).map(Some),
            // Statements are not supported (no trusted issuer): ignored, as on registration.
            (Some(_), None) if self.statement_issuers.is_empty() => Ok(None),
            (Some(_), _) => Err(RegistrationError::InvalidRequest(
                "software_statement cannot be added or changed by an update; register again with the new statement".into(),
            )),
        }
    }

    /// The request the metadata engine sees, and the metadata settings it runs with:
    /// statement claims over the JSON members (RFC 7591 §2.3: the statement takes precedence),
    /// then the policy's forced values.
    pub fn prepare<'a>(
        &'a self,
        policy: Option<&'a Policy>,
        statement_claims: Option<&Map<String, Value>>,
        request: &Map<String, Value>,
        global: &'a MetadataSettings,
    ) -> Result<(Map<String, Value>, &'a MetadataSettings)> {
        let mut merged = request.clone();
        merged.remove("software_statement");
        if let Some(claims) = statement_claims {
            for (k, v) in claims {
                if !JWT_CLAIMS.contains(&k.as_str()) {
                    merged.insert(k.clone(), v.clone());
                }
            }
        }
        match policy {
            Some(p) => {
                p.prepare(&mut merged)
                    .map_err(|v| violation_error(v, statement_claims))?;
                Ok((merged, p.metadata_settings()))
            }
            None => Ok((merged, global)),
        }
    }

    /// The policy's allow-lists on validated metadata.
    pub fn check(
        &self,
        policy: Option<&Policy>,
        statement_claims: Option<&Map<String, Value>>,
        metadata: &Map<String, Value>,
    ) -> Result<()> {
        match policy {
            Some(p) => p
                .check(metadata)
                .map_err(|v| violation_error(v, statement_claims)),
            None => Ok(()),
        }
    }

    /// The counter operations a registration under this admission needs (token uses, `jti`,
    /// a place in the policy's quota), for the service to commit together with the new client:
    /// the policy decides, only the service writes (so no counter is taken for a client that is
    /// not stored, and none leaks when a write fails).
    pub fn registration_counters(&self, admission: &Admission) -> Vec<CounterOp> {
        let mut ops: Vec<CounterOp> = admission
            .counters
            .iter()
            .map(|(key, limit, _)| CounterOp::Take {
                key: key.clone(),
                limit: *limit,
            })
            .collect();
        if is_anonymous(Some(admission.tier)) {
            // A global ceiling on clients nobody vouched for (issue #12 item 3); counted even
            // when unlimited, like the policy quota below.
            let limit = match self.max_anonymous_clients {
                0 => u64::MAX,
                n => n,
            };
            ops.push(CounterOp::Take {
                key: ANONYMOUS_COUNTER.to_owned(),
                limit,
            });
        }
        if let Some(p) = &admission.policy {
            // Counted even when unlimited, so a quota added later starts from the true number.
            let limit = match p.max_clients() {
                0 => u64::MAX,
                n => n,
            };
            ops.push(CounterOp::Take {
                key: policy_counter(&p.name),
                limit,
            });
        }
        ops
    }

    /// The error for a registration whose commit found the counter `key` exhausted
    /// (`StoreError::CounterExhausted`): a used-up initial access token, a replayed statement,
    /// or a full policy quota.
    pub fn counter_refusal(&self, admission: &Admission, key: &str) -> RegistrationError {
        let refusal = admission
            .counters
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, _, r)| *r);
        match (refusal, &admission.policy) {
            (Some(CounterRefusal::TokenUsedUp), _) => {
                tracing::info!("initial access token used up");
                RegistrationError::InvalidToken
            }
            (Some(CounterRefusal::StatementReplayed), _) => {
                RegistrationError::InvalidSoftwareStatement(
                    "software_statement: this jti was already used (replay)".into(),
                )
            }
            _ if key == ANONYMOUS_COUNTER => {
                tracing::warn!(
                    limit = self.max_anonymous_clients,
                    "registration refused: access.max_anonymous_clients reached"
                );
                RegistrationError::CapacityReached(format!(
                    "this server holds the most clients it accepts without an initial access token or software statement ({}); register with a credential or ask the operator",
                    self.max_anonymous_clients
                ))
            }
            (None, Some(p)) if key == policy_counter(&p.name) => violation_error(
                p.quota_exceeded(),
                admission.statement.as_ref().map(|s| &s.claims),
            ),
            _ => RegistrationError::Internal(format!("unexpected exhausted counter {key}")),
        }
    }

    /// The counter operations that go with deleting a client under `policy`, admitted as
    /// `tier`: its places in the quotas are freed in the same commit as the deletion.
    pub fn deletion_counters(&self, policy: Option<&str>, tier: Option<&str>) -> Vec<CounterOp> {
        let mut ops: Vec<CounterOp> = policy
            .map(|name| CounterOp::Release {
                key: policy_counter(name),
            })
            .into_iter()
            .collect();
        if is_anonymous(tier) {
            ops.push(CounterOp::Release {
                key: ANONYMOUS_COUNTER.to_owned(),
            });
        }
        ops
    }
}

/// An issuer trusted for both initial access tokens and software statements signs both with the
/// same keys, so without a distinguishing `typ` a public statement would work as a bearer token
/// (and pick the token tier's policy). Refused at start-up unless both entries require `typ`
/// values that differ (issue #12 item 6).
fn separate_token_and_statement_issuers(
    access: &config::AccessSettings,
) -> std::result::Result<(), String> {
    for t in &access.token_issuers {
        for s in access
            .statement_issuers
            .iter()
            .filter(|s| s.issuer == t.issuer)
        {
            let distinct =
                !t.typ.is_empty() && !s.typ.is_empty() && !t.typ.eq_ignore_ascii_case(&s.typ);
            if !distinct {
                return Err(format!(
                    "issuer {:?} is in both access.token_issuers and access.statement_issuers; give the two entries different `typ` values (e.g. \"iat+jwt\" and \"software-statement+jwt\") so a software statement cannot be used as an initial access token",
                    t.issuer
                ));
            }
        }
    }
    Ok(())
}

/// A bucket's verdict (`None`: no limiter applies) as the service's error: 429 with the wait.
fn take(verdict: Option<std::result::Result<(), u64>>) -> Result<()> {
    match verdict {
        Some(Err(secs)) => Err(RegistrationError::TooManyRequests(secs.max(1))),
        _ => Ok(()),
    }
}

fn policy_counter(name: &str) -> String {
    format!("policy-clients:{name}")
}

/// A policy refusal as an RFC 7591 error. A refusal of a value the software statement asserted
/// is `unapproved_software_statement` (RFC 7591 §3.2.2: "not approved for use"); others keep
/// the code of the member at fault.
fn violation_error(
    v: Violation,
    statement_claims: Option<&Map<String, Value>>,
) -> RegistrationError {
    let from_statement = match (&v.member, statement_claims) {
        (Some(member), Some(claims)) => claims.contains_key(member),
        (None, Some(_)) => true,
        _ => false,
    };
    if from_statement {
        return RegistrationError::UnapprovedSoftwareStatement(v.message);
    }
    match v.kind {
        ViolationKind::RedirectUri => RegistrationError::InvalidRedirectUri(v.message),
        ViolationKind::Metadata => RegistrationError::InvalidClientMetadata(v.message),
        ViolationKind::Quota => RegistrationError::InvalidRequest(v.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let d = token_digest("x");
        assert_eq!(unhex(&hex(&d)), Some(d));
        assert_eq!(unhex("zz"), None);
    }

    /// An Ed25519 key pair made for the test: (signing key, public JWK Set).
    fn key_pair() -> (jsonwebtoken::EncodingKey, Value) {
        use ring::signature::{Ed25519KeyPair, KeyPair};
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            pair.public_key().as_ref(),
        );
        (
            jsonwebtoken::EncodingKey::from_ed_der(pkcs8.as_ref()),
            serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x}]}),
        )
    }

    #[test]
    fn token_expiry_is_judged_by_the_injected_clock_not_the_system_clock() {
        let (key, jwks) = key_pair();
        let s = Settings::defaults()
            .unwrap()
            .with("access.mode", "token")
            .unwrap()
            .with(
                "access.token_issuers",
                serde_json::json!([{"issuer": "https://iss", "jwks": jwks}]),
            )
            .unwrap()
            .with("access.leeway_secs", 0)
            .unwrap();
        let engine = PolicyEngine::from_settings(&s).unwrap();
        // exp = 1000: long past by the system clock, in the future at "now" = 900.
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
            &serde_json::json!({"iss": "https://iss", "exp": 1000, "nbf": 800}),
            &key,
        )
        .unwrap();
        let request = Map::new();
        let admitted = engine.admit(Some(&token), &request, 900).unwrap();
        assert_eq!(admitted.tier, tier::INITIAL_ACCESS_TOKEN);
        assert!(matches!(
            engine.admit(Some(&token), &request, 1000),
            Err(RegistrationError::InvalidToken)
        ));
        assert!(matches!(
            engine.admit(Some(&token), &request, 700),
            Err(RegistrationError::InvalidToken)
        ));
        assert!(matches!(
            engine.admit(None, &request, 900),
            Err(RegistrationError::InvalidToken)
        ));
    }

    #[test]
    fn modes_that_need_credentials_need_them_configured() {
        let s = Settings::defaults()
            .unwrap()
            .with("access.mode", "token")
            .unwrap();
        assert!(PolicyEngine::from_settings(&s)
            .unwrap_err()
            .contains("initial access token"));
        let s = Settings::defaults()
            .unwrap()
            .with("access.anonymous_policy", "nope")
            .unwrap();
        assert!(PolicyEngine::from_settings(&s)
            .unwrap_err()
            .contains("nope"));
    }
}
