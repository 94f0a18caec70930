//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document-02, "CIMD"): a
//! `client_id` that is an https URL names the client's metadata, published at that URL. The
//! authorization server asks the directory about such a client like about any other
//! (`GET /admin/clients/{client_id}`); the directory resolves it here:
//!
//! 1. the URL rules of §3, before anything is sent ([`check_client_id`]), and the operator's
//!    host lists (`cimd.allowed_hosts`, `cimd.denied_hosts`);
//! 2. a fresh cached resolution answers at once (§5.2, RFC 9111 freshness, clamped);
//! 3. otherwise one fetch per URL however many callers wait (single flight), through the
//!    registrar's SSRF-safe fetcher with the document's own size cap (§8.6, §8.7);
//! 4. the document rules of §4 and §4.1 ([`document_request`]), then the same metadata engine
//!    and policy engine as a registration (`Registrar::judge`, under `cimd.policy`), `jwks_uri`
//!    fetched and checked as for registrations;
//! 5. the result is persisted (`source: "metadata_document"`), so the client shows in the admin
//!    list, records `last_used_at` and can be disabled; a changed document updates the record.
//!    Both writes carry their audit record and webhook rows (`client.resolved` on first sight,
//!    `client.document_changed` after), with the actor `system`: the server fetched the
//!    document, no caller changed it.
//!
//! Failures are `invalid_client` naming the rule; they are never cached here (§5.2: "MUST NOT
//! cache error responses or invalid documents"); the fetcher's own negative cache for
//! unreachable hosts still applies.

use crate::clock::Clock;
use crate::error::{RegistrationError, Result};
use crate::events::{Actor, EventType, Origin};
use crate::fetch::{CachingHeaders, FetchError};
use crate::metadata::uses_client_secret;
use crate::policy::Admission;
use crate::registration::{store_error, Registrar};
use crate::store::{source, Change, ClientRecord, ClientStore, StoreError, WriteBatch};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;
use tokio::sync::OnceCell;
use url::Url;

/// Longest accepted client identifier URL. The draft sets none; a bound keeps a hostile caller
/// from making the directory parse and store megabyte keys.
pub const MAX_CLIENT_ID_LEN: usize = 2048;
/// How many times a write that lost a race is retried.
const MAX_RETRIES: usize = 8;
/// The draft, cited in error descriptions.
const DRAFT: &str = "draft-ietf-oauth-client-id-metadata-document";

/// `[cimd]`: how https `client_id`s are resolved (README "Client ID Metadata Documents").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CimdSettings {
    /// Resolve https `client_id`s at all; off, they are `invalid_client`.
    pub enabled: bool,
    /// Accept a query in the URL (§3 says SHOULD NOT; off by default).
    pub allow_query: bool,
    /// Largest document read, in bytes (§8.7 recommends 5 KB).
    pub max_document_bytes: usize,
    /// Lower bound on how long a resolved document is reused (§5.2 "MAY impose").
    pub cache_min_secs: u64,
    /// Upper bound on the same.
    pub cache_max_secs: u64,
    /// Most documents remembered as fresh at once.
    pub max_cached: usize,
    /// Name of the `[policies.NAME]` documents are judged under; empty = none.
    pub policy: String,
    /// Refuse redirect URIs on another origin than the document (§8.1).
    pub require_same_origin_redirects: bool,
    /// Hosts whose documents are accepted, each exact or `*.suffix`; empty = any host.
    pub allowed_hosts: Vec<String>,
    /// Hosts whose documents are refused, each exact or `*.suffix`; wins over `allowed_hosts`.
    pub denied_hosts: Vec<String>,
}

impl Default for CimdSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_query: false,
            max_document_bytes: 5120,
            cache_min_secs: 30,
            cache_max_secs: 86400,
            max_cached: 1000,
            policy: String::new(),
            require_same_origin_redirects: false,
            allowed_hosts: Vec::new(),
            denied_hosts: Vec::new(),
        }
    }
}

impl CimdSettings {
    /// Refuse settings that cannot work; `policies` are the configured `[policies]`.
    pub fn check<T>(&self, policies: &BTreeMap<String, T>) -> std::result::Result<(), String> {
        if self.max_document_bytes == 0 {
            return Err("cimd.max_document_bytes must be > 0".into());
        }
        if self.cache_min_secs > self.cache_max_secs {
            return Err("cimd.cache_min_secs must not exceed cimd.cache_max_secs".into());
        }
        if !self.policy.is_empty() && !policies.contains_key(&self.policy) {
            return Err(format!(
                "cimd.policy names {:?}, which is not a configured [policies.NAME]",
                self.policy
            ));
        }
        for (key, list) in [
            ("cimd.allowed_hosts", &self.allowed_hosts),
            ("cimd.denied_hosts", &self.denied_hosts),
        ] {
            if let Some(bad) = list.iter().find(|p| !valid_host_pattern(p)) {
                return Err(format!(
                    "{key}: {bad:?} is neither a host name nor *.suffix"
                ));
            }
        }
        Ok(())
    }

    fn policy_name(&self) -> Option<&str> {
        Some(self.policy.as_str()).filter(|p| !p.is_empty())
    }
}

fn valid_host_pattern(p: &str) -> bool {
    let name = p.strip_prefix("*.").unwrap_or(p);
    !name.is_empty()
        && !name.contains('*')
        && name == name.to_ascii_lowercase()
        && url::Host::parse(name).is_ok()
}

/// Whether `host` matches `pattern`: exact, or `*.suffix` for any name below `suffix` (not
/// `suffix` itself).
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        None => pattern == host,
    }
}

/// Whether `client_id` is meant as a metadata document URL. Identifiers the registrar issues are
/// base64url and never contain `:` (§7.1), so anything with an http(s) scheme is one; an
/// `http:` one is then refused by the https rule rather than looked up.
pub fn is_metadata_document_id(client_id: &str) -> bool {
    let lower = |n: usize| client_id.get(..n).map(str::to_ascii_lowercase);
    lower(6).as_deref() == Some("https:") || lower(5).as_deref() == Some("http:")
}

fn invalid(client_id: &str, rule: impl std::fmt::Display) -> RegistrationError {
    let shown: String = client_id.chars().take(200).collect();
    RegistrationError::InvalidClient(format!("client_id {shown:?}: {rule}"))
}

/// The client identifier URL rules of §3, checked on the string as given (identifiers are
/// compared as simple strings, so nothing is normalised first): https, no userinfo, a path, no
/// `.` or `..` segment, no fragment, a query only with `cimd.allow_query`.
pub fn check_client_id(client_id: &str, settings: &CimdSettings) -> Result<Url> {
    let fail = |rule: &str| Err(invalid(client_id, format!("{rule} ({DRAFT} §3)")));
    if client_id.len() > MAX_CLIENT_ID_LEN {
        return fail(&format!(
            "a client identifier URL must not be longer than {MAX_CLIENT_ID_LEN} characters"
        ));
    }
    let Some(rest) = client_id.strip_prefix("https://") else {
        return fail("a client identifier URL must use the https scheme, written \"https://\"");
    };
    // A URL parser would silently rewrite these (a backslash becomes a slash, spaces are
    // trimmed or encoded), so the URL fetched would not be the string compared.
    if client_id
        .chars()
        .any(|c| c == '\\' || c.is_whitespace() || c.is_control())
    {
        return fail(
            "a client identifier URL must not contain backslashes, spaces or control characters",
        );
    }
    if client_id.contains('#') {
        return fail("a client identifier URL must not contain a fragment");
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    if authority.contains('@') {
        return fail("a client identifier URL must not contain a username or password");
    }
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    if path.is_empty() || path == "/" {
        return fail("a client identifier URL must contain a path, e.g. https://host/client.json");
    }
    let dot = |s: &str| {
        let s = s.to_ascii_lowercase().replace("%2e", ".");
        s == "." || s == ".."
    };
    if path.split('/').any(dot) {
        return fail("a client identifier URL must not contain \".\" or \"..\" path segments");
    }
    if query.is_some() && !settings.allow_query {
        return fail("a client identifier URL must not contain a query (cimd.allow_query = false)");
    }
    let url =
        Url::parse(client_id).map_err(|e| invalid(client_id, format!("is not a URL: {e}")))?;
    if url.host_str().is_none_or(str::is_empty) {
        return fail("a client identifier URL must have a host");
    }
    Ok(url)
}

/// The operator's host lists (`cimd.denied_hosts` first, then `cimd.allowed_hosts`).
fn check_host(client_id: &str, url: &Url, settings: &CimdSettings) -> Result<()> {
    let host = url.host_str().unwrap_or_default();
    if settings.denied_hosts.iter().any(|p| host_matches(p, host)) {
        return Err(invalid(
            client_id,
            format!("metadata documents from host {host:?} are refused (cimd.denied_hosts)"),
        ));
    }
    if !settings.allowed_hosts.is_empty()
        && !settings.allowed_hosts.iter().any(|p| host_matches(p, host))
    {
        return Err(invalid(
            client_id,
            format!("metadata documents from host {host:?} are not accepted (cimd.allowed_hosts)"),
        ));
    }
    Ok(())
}

/// The document rules of §4 and §4.1, turning the fetched document into the request the
/// metadata engine judges: a JSON object whose `client_id` equals the URL exactly; no
/// `client_secret`, `client_secret_expires_at` or shared-secret auth method; `redirect_uris`
/// present; no declared method means `none`. Keys in `jwks` are left to the engine, which
/// refuses private and symmetric ones with the registration's own words.
pub fn document_request(client_id: &str, document: Value) -> Result<Map<String, Value>> {
    let Value::Object(mut doc) = document else {
        return Err(invalid(
            client_id,
            format!("the metadata document must be a JSON object ({DRAFT} §4)"),
        ));
    };
    match doc.get("client_id") {
        Some(Value::String(s)) if s == client_id => {}
        Some(Value::String(s)) => {
            let shown: String = s.chars().take(200).collect();
            return Err(invalid(
                client_id,
                format!("the metadata document's client_id {shown:?} is not the URL it was fetched from; they must be equal as strings ({DRAFT} §4)"),
            ));
        }
        _ => {
            return Err(invalid(
                client_id,
                format!(
                "the metadata document must have a client_id string equal to its URL ({DRAFT} §4)"
            ),
            ))
        }
    }
    for member in ["client_secret", "client_secret_expires_at"] {
        if doc.contains_key(member) {
            return Err(invalid(
                client_id,
                format!("the metadata document must not contain {member} ({DRAFT} §4.1)"),
            ));
        }
    }
    match doc.get("token_endpoint_auth_method") {
        None | Some(Value::Null) => {
            doc.insert("token_endpoint_auth_method".into(), Value::from("none"));
        }
        Some(Value::String(m)) if uses_client_secret(m) => {
            return Err(invalid(
                client_id,
                format!("token_endpoint_auth_method {m:?} authenticates with a shared secret, which a metadata document cannot have; use none or private_key_jwt ({DRAFT} §4.1)"),
            ))
        }
        Some(_) => {} // the engine judges it like any registered method
    }
    if !doc.contains_key("redirect_uris") {
        return Err(invalid(
            client_id,
            "redirect_uris is required in a client ID metadata document (the authorization code flow needs it; MCP requires it)",
        ));
    }
    doc.remove("client_id");
    Ok(doc)
}

/// How long a document fetched at `now` stays fresh (RFC 9111 §4.2): `None` with `no-store` or
/// `no-cache` (fetched on every resolution), else `max-age` (or `Expires` − `Date`, RFC 9111
/// §4.2.1) minus `Age` (§4.2.3), clamped to `[min, max]`; with none of them, `min`. An
/// unparsable `max-age` or `Expires` counts as already stale (§4.2.1, §5.3), i.e. `min`.
pub fn freshness(caching: &CachingHeaders, now: i64, min: u64, max: u64) -> Option<u64> {
    let mut max_age: Option<Option<u64>> = None;
    for directive in caching
        .cache_control
        .as_deref()
        .unwrap_or_default()
        .split(',')
    {
        let (name, value) = match directive.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (directive.trim(), None),
        };
        match name.to_ascii_lowercase().as_str() {
            "no-store" | "no-cache" => return None,
            "max-age" if max_age.is_none() => {
                max_age = Some(value.and_then(|v| v.parse::<u64>().ok()));
            }
            _ => {}
        }
    }
    let lifetime = match max_age {
        Some(parsed) => parsed.unwrap_or(0),
        None => match caching.expires.as_deref() {
            Some(expires) => {
                let date = caching.date.as_deref().and_then(http_date).unwrap_or(now);
                http_date(expires).map_or(0, |e| e.saturating_sub(date).max(0) as u64)
            }
            None => min,
        },
    };
    let age = caching
        .age
        .as_deref()
        .and_then(|a| a.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Some(lifetime.saturating_sub(age).clamp(min, max))
}

fn http_date(s: &str) -> Option<i64> {
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    t.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
}

/// Until when each URL's last resolution is fresh; bounded by `cimd.max_cached`.
struct Freshness {
    until: HashMap<String, i64>,
    max: usize,
}

impl Freshness {
    fn is_fresh(&self, url: &str, now: i64) -> bool {
        self.until.get(url).is_some_and(|until| *until > now)
    }

    fn set(&mut self, url: &str, until: Option<i64>, now: i64) {
        let Some(until) = until else {
            self.until.remove(url);
            return;
        };
        if self.max == 0 {
            return;
        }
        if self.until.len() >= self.max && !self.until.contains_key(url) {
            self.until.retain(|_, u| *u > now);
            // Still full: forget the one that would go stale first.
            if self.until.len() >= self.max {
                if let Some(first) = self
                    .until
                    .iter()
                    .min_by_key(|(_, u)| **u)
                    .map(|(k, _)| k.clone())
                {
                    self.until.remove(&first);
                }
            }
        }
        self.until.insert(url.to_owned(), until);
    }
}

type Flight = Arc<OnceCell<Result<ClientRecord>>>;

/// Resolves https `client_id`s: URL rules, cache, single-flight fetch, document rules, the
/// registration engines, persistence.
pub struct Resolver {
    settings: CimdSettings,
    registrar: Arc<Registrar>,
    store: Arc<dyn ClientStore>,
    clock: Arc<dyn Clock>,
    fresh: Mutex<Freshness>,
    flights: Mutex<HashMap<String, Flight>>,
}

impl Resolver {
    /// A resolver over the registrar's engines and fetcher and the directory's store.
    pub fn new(
        settings: CimdSettings,
        registrar: Arc<Registrar>,
        store: Arc<dyn ClientStore>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            fresh: Mutex::new(Freshness {
                until: HashMap::new(),
                max: settings.max_cached,
            }),
            flights: Mutex::new(HashMap::new()),
            settings,
            registrar,
            store,
            clock,
        }
    }

    /// The persisted client for the https `client_id`, fetched and judged again unless its last
    /// resolution is still fresh. Every failure is `invalid_client` naming the rule (or
    /// `too_many_requests` when the fetcher is saturated).
    pub async fn resolve(&self, client_id: &str) -> Result<ClientRecord> {
        if !self.settings.enabled {
            return Err(invalid(
                client_id,
                "client ID metadata documents are not accepted by this server (cimd.enabled = false)",
            ));
        }
        let url = check_client_id(client_id, &self.settings)?;
        check_host(client_id, &url, &self.settings)?;
        let fresh = self
            .fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_fresh(client_id, self.clock.now());
        if fresh {
            // A record deleted by an operator meanwhile is resolved again below.
            if let Some(record) = self.find(client_id).await? {
                return Ok(record);
            }
        }
        let flight = self
            .flights
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(client_id.to_owned())
            .or_default()
            .clone();
        // Landed or abandoned, the flight leaves the table, so later callers start afresh
        // (a result is reused only through `fresh`) and cancelled flights do not pile up.
        let landing = Landing {
            flights: &self.flights,
            client_id,
            flight,
        };
        // Every concurrent caller awaits the same cell: one fetch. If the caller running it is
        // cancelled (its request dropped), the next waiter runs it instead.
        landing
            .flight
            .get_or_init(|| self.fetch_and_store(client_id, url))
            .await
            .clone()
    }

    async fn fetch_and_store(&self, client_id: &str, url: Url) -> Result<ClientRecord> {
        let fetched = self
            .registrar
            .fetcher()
            .get_document(url.as_str(), self.settings.max_document_bytes)
            .await
            .map_err(|e| fetch_error(client_id, e))?;
        let request = document_request(client_id, fetched.json)?;
        let admission = self
            .registrar
            .policy()
            .document_admission(self.settings.policy_name())?;
        let metadata = self
            .registrar
            // No previous metadata: a document's jwks_uri is checked on every fetch of it.
            .judge(admission.policy.as_deref(), None, &request, None, None)
            .await
            .map_err(|e| in_document(client_id, e))?;
        if self.settings.require_same_origin_redirects {
            same_origin(client_id, &url, &metadata)?;
        }
        let record = self.save(client_id, metadata, &admission).await?;
        let now = self.clock.now();
        let until = freshness(
            &fetched.caching,
            now,
            self.settings.cache_min_secs,
            self.settings.cache_max_secs,
        )
        .map(|secs| now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)));
        self.fresh
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set(client_id, until, now);
        Ok(record)
    }

    /// Create or update the persisted client. A new client takes its place in the policy's
    /// quota (`max_clients`) in the same commit, as a registration does; a client moved to
    /// another `cimd.policy` moves its place. An operator's `disabled`, `last_used_at` and the
    /// creation time survive; a change of keys is logged at `warn` (a key swap is what a
    /// document takeover looks like).
    pub(super) async fn save(
        &self,
        client_id: &str,
        metadata: Map<String, Value>,
        admission: &Admission,
    ) -> Result<ClientRecord> {
        let engine = self.registrar.policy();
        let policy = admission.policy.as_ref().map(|p| p.name.clone());
        for _ in 0..MAX_RETRIES {
            let now = self.clock.now();
            let (batch, record) = match self.find(client_id).await? {
                None => {
                    let record = ClientRecord {
                        client_id: client_id.to_owned(),
                        client_id_issued_at: now,
                        metadata: metadata.clone().into(),
                        updated_at: now,
                        created_at: now,
                        policy: policy.clone(),
                        tier: Some(crate::policy::tier::METADATA_DOCUMENT.to_owned()),
                        source: Some(source::METADATA_DOCUMENT.to_owned()),
                        revision: 1,
                        // No registration access token: RFC 7592 management does not apply.
                        ..Default::default()
                    };
                    let events = self.registrar.events_of(
                        EventType::Resolved,
                        Actor::system(),
                        &Origin::default(),
                        None,
                        Some(&record),
                        &[],
                        true,
                    );
                    let batch = WriteBatch::change(Change::Insert(record.clone()))
                        .with_counters(engine.registration_counters(admission))
                        .with_events(events);
                    (batch, record)
                }
                Some(current) => {
                    if current.source.as_deref() != Some(source::METADATA_DOCUMENT) {
                        return Err(RegistrationError::Internal(format!(
                            "a client {client_id:?} exists that did not come from a metadata document"
                        )));
                    }
                    if *current.metadata == metadata && current.policy == policy {
                        return Ok(current);
                    }
                    let keys = |m: &Map<String, Value>| {
                        (m.get("jwks").cloned(), m.get("jwks_uri").cloned())
                    };
                    if keys(&current.metadata) != keys(&metadata) {
                        tracing::warn!(client_id = %client_id, "the client's metadata document changed its keys (jwks or jwks_uri)");
                    }
                    let mut updated = current.clone();
                    updated.metadata = metadata.clone().into();
                    updated.policy = policy.clone();
                    updated.updated_at = now;
                    let events = self.registrar.events_of(
                        EventType::DocumentChanged,
                        Actor::system(),
                        &Origin::default(),
                        Some(&current),
                        Some(&updated),
                        &[],
                        true,
                    );
                    let mut batch = WriteBatch::change(Change::Update {
                        expected_revision: current.revision,
                        record: updated.clone(),
                    })
                    .with_events(events);
                    if current.policy != policy {
                        batch = batch
                            .with_counters(engine.deletion_counters(
                                current.policy.as_deref(),
                                current.tier.as_deref(),
                            ))
                            .with_counters(engine.registration_counters(admission));
                    }
                    updated.revision = current.revision + 1;
                    (batch, updated)
                }
            };
            let created = matches!(batch.change, Some(Change::Insert(_)));
            match self.registrar.commit_with_events(batch).await {
                Ok(()) => {
                    if created {
                        tracing::info!(client_id = %client_id, "client resolved from its metadata document");
                    } else {
                        tracing::info!(client_id = %client_id, "client metadata document changed; client updated");
                    }
                    return Ok(record);
                }
                Err(StoreError::Conflict) => continue,
                Err(StoreError::CounterExhausted(key)) => {
                    return Err(in_document(
                        client_id,
                        engine.counter_refusal(admission, &key),
                    ))
                }
                Err(e) => return Err(store_error(e)),
            }
        }
        Err(RegistrationError::Internal(
            "storing a resolved metadata document kept losing races".into(),
        ))
    }

    async fn find(&self, client_id: &str) -> Result<Option<ClientRecord>> {
        self.store.get(client_id).await.map_err(store_error)
    }
}

/// Removes a flight from the table once it has landed, or when its last caller gave up.
struct Landing<'a> {
    flights: &'a Mutex<HashMap<String, Flight>>,
    client_id: &'a str,
    flight: Flight,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        // An abandoned flight others still wait on stays: one of them runs it. (Two handles
        // are the table's and this guard's.)
        let done = self.flight.initialized() || Arc::strong_count(&self.flight) <= 2;
        if done
            && flights
                .get(self.client_id)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            flights.remove(self.client_id);
        }
    }
}

fn fetch_error(client_id: &str, e: FetchError) -> RegistrationError {
    match e {
        FetchError::Busy => RegistrationError::TooManyRequests(1),
        e => invalid(
            client_id,
            format!("the metadata document could not be used: the URL {e} ({DRAFT} §5)"),
        ),
    }
}

/// A refusal of the metadata or policy engine, reported for the document: the engine's words,
/// the `invalid_client` code (the caller asked about a client, it did not register one).
fn in_document(client_id: &str, e: RegistrationError) -> RegistrationError {
    match e {
        RegistrationError::InvalidClientMetadata(m)
        | RegistrationError::InvalidRedirectUri(m)
        | RegistrationError::InvalidSoftwareStatement(m)
        | RegistrationError::UnapprovedSoftwareStatement(m)
        | RegistrationError::InvalidRequest(m) => {
            invalid(client_id, format!("the metadata document is invalid: {m}"))
        }
        other => other,
    }
}

/// `cimd.require_same_origin_redirects` (§8.1): every redirect URI on the document's origin.
fn same_origin(client_id: &str, url: &Url, metadata: &Map<String, Value>) -> Result<()> {
    let origin = url.origin();
    let uris = metadata
        .get("redirect_uris")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for uri in uris.iter().filter_map(Value::as_str) {
        if Url::parse(uri).map(|u| u.origin()).ok().as_ref() != Some(&origin) {
            return Err(invalid(
                client_id,
                format!("redirect_uris: {uri:?} is not on the document's origin {} (cimd.require_same_origin_redirects; {DRAFT} §8.1)", origin.ascii_serialization()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule_of(id: &str, settings: &CimdSettings) -> String {
        match check_client_id(id, settings) {
            Err(RegistrationError::InvalidClient(m)) => m,
            other => panic!("{id}: {other:?}"),
        }
    }

    #[test]
    fn client_id_urls_that_follow_section_3_are_accepted_as_given() {
        let s = CimdSettings::default();
        for ok in [
            "https://app.example/client.json",
            "https://app.example:8443/oauth/client",
            "https://127.0.0.1:9/c",
            "https://app.example/dir/",
        ] {
            assert!(check_client_id(ok, &s).is_ok(), "{ok}");
        }
    }

    #[test]
    fn each_section_3_rule_is_named_in_its_refusal() {
        let s = CimdSettings::default();
        for (id, words) in [
            ("http://app.example/c", "https scheme"),
            ("HTTPS://app.example/c", "https scheme"),
            ("https://app.example", "must contain a path"),
            ("https://app.example/", "must contain a path"),
            ("https://app.example?x=1", "must contain a path"),
            ("https://u:p@app.example/c", "username or password"),
            ("https://u@app.example/c", "username or password"),
            ("https://app.example/c#f", "fragment"),
            ("https://app.example/a/./c", "path segments"),
            ("https://app.example/a/../c", "path segments"),
            ("https://app.example/a/%2E%2e/c", "path segments"),
            ("https://app.example/..", "path segments"),
            ("https://app.example/c?x=1", "cimd.allow_query"),
            ("https://exa mple/c", "spaces"),
            ("https://app.example\\..\\c", "backslashes"),
            ("https://app.example/c\t", "control characters"),
            ("https://app.example:99999/c", "is not a URL"),
        ] {
            let m = rule_of(id, &s);
            assert!(m.contains(words), "{id}: {m}");
        }
        let long = format!("https://app.example/{}", "a".repeat(MAX_CLIENT_ID_LEN));
        assert!(rule_of(&long, &s).contains("longer than"));
        let with_query = CimdSettings {
            allow_query: true,
            ..CimdSettings::default()
        };
        assert!(check_client_id("https://app.example/c?x=1", &with_query).is_ok());
    }

    #[test]
    fn host_patterns_are_exact_or_strict_suffixes() {
        assert!(host_matches("app.example", "app.example"));
        assert!(!host_matches("app.example", "x.app.example"));
        assert!(host_matches("*.example", "app.example"));
        assert!(host_matches("*.example", "a.b.example"));
        assert!(!host_matches("*.example", "example"));
        assert!(!host_matches("*.example", "badexample"));
        assert!(valid_host_pattern("*.example.com"));
        assert!(!valid_host_pattern("*"));
        assert!(!valid_host_pattern("a.*.com"));
        assert!(!valid_host_pattern("Upper.example"));
    }

    #[test]
    fn denied_hosts_win_over_allowed_hosts() {
        let s = CimdSettings {
            allowed_hosts: vec!["*.example".into()],
            denied_hosts: vec!["evil.example".into()],
            ..CimdSettings::default()
        };
        let check = |id: &str| check_host(id, &Url::parse(id).unwrap(), &s);
        assert!(check("https://good.example/c").is_ok());
        let denied = format!("{:?}", check("https://evil.example/c"));
        assert!(denied.contains("cimd.denied_hosts"), "{denied}");
        let other = format!("{:?}", check("https://other.test/c"));
        assert!(other.contains("cimd.allowed_hosts"), "{other}");
    }

    #[test]
    fn document_rules_of_section_4() {
        let id = "https://app.example/c";
        let base = json!({"client_id": id, "redirect_uris": ["https://app.example/cb"]});
        let req = document_request(id, base.clone()).unwrap();
        assert_eq!(req["token_endpoint_auth_method"], "none");
        assert!(!req.contains_key("client_id"));
        let refused = |doc: Value| match document_request(id, doc) {
            Err(RegistrationError::InvalidClient(m)) => m,
            other => panic!("{other:?}"),
        };
        let with = |k: &str, v: Value| {
            let mut d = base.clone();
            d[k] = v;
            d
        };
        assert!(refused(json!([])).contains("JSON object"));
        assert!(refused(with("client_id", json!(format!("{id}/")))).contains("equal as strings"));
        assert!(refused(with("client_id", json!(1))).contains("client_id string"));
        assert!(refused(with("client_secret", json!("s"))).contains("client_secret"));
        assert!(refused(with("client_secret_expires_at", json!(0)))
            .contains("client_secret_expires_at"));
        for m in [
            "client_secret_basic",
            "client_secret_post",
            "client_secret_jwt",
        ] {
            assert!(refused(with("token_endpoint_auth_method", json!(m))).contains("shared secret"));
        }
        assert!(refused(json!({"client_id": id})).contains("redirect_uris is required"));
        let kept = document_request(
            id,
            with("token_endpoint_auth_method", json!("private_key_jwt")),
        )
        .unwrap();
        assert_eq!(kept["token_endpoint_auth_method"], "private_key_jwt");
    }

    fn headers(
        cache_control: Option<&str>,
        expires: Option<&str>,
        age: Option<&str>,
        date: Option<&str>,
    ) -> CachingHeaders {
        CachingHeaders {
            cache_control: cache_control.map(Into::into),
            expires: expires.map(Into::into),
            age: age.map(Into::into),
            date: date.map(Into::into),
        }
    }

    #[test]
    fn freshness_follows_rfc_9111_within_the_bounds() {
        let f =
            |cc, ex, age, date| freshness(&headers(cc, ex, age, date), 1_800_000_000, 30, 86400);
        assert_eq!(f(Some("max-age=600"), None, None, None), Some(600));
        assert_eq!(
            f(Some("public, max-age=\"600\""), None, None, None),
            Some(600)
        );
        assert_eq!(f(Some("max-age=600"), None, Some("100"), None), Some(500));
        assert_eq!(f(Some("max-age=5"), None, None, None), Some(30));
        assert_eq!(f(Some("max-age=9999999"), None, None, None), Some(86400));
        assert_eq!(f(Some("max-age=oops"), None, None, None), Some(30));
        assert_eq!(f(Some("max-age=600, no-store"), None, None, None), None);
        assert_eq!(f(Some("No-Cache"), None, None, None), None);
        assert_eq!(f(None, None, None, None), Some(30));
        // Expires relative to Date; max-age wins over Expires.
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        let expires = "Sun, 06 Nov 1994 09:49:37 GMT";
        assert_eq!(f(None, Some(expires), None, Some(date)), Some(3600));
        assert_eq!(f(None, Some(expires), Some("600"), Some(date)), Some(3000));
        assert_eq!(
            f(Some("max-age=60"), Some(expires), None, Some(date)),
            Some(60)
        );
        // An Expires in the past (or unparsable, like "0") is stale: the lower bound.
        assert_eq!(f(None, Some(expires), None, None), Some(30));
        assert_eq!(f(None, Some("0"), None, None), Some(30));
    }

    #[test]
    fn the_freshness_table_is_bounded_and_forgets_what_goes_stale_first() {
        let mut t = Freshness {
            until: HashMap::new(),
            max: 2,
        };
        t.set("a", Some(100), 0);
        t.set("b", Some(50), 0);
        t.set("c", Some(200), 0);
        assert_eq!(t.until.len(), 2);
        assert!(t.is_fresh("a", 10) && t.is_fresh("c", 10) && !t.is_fresh("b", 10));
        t.set("a", None, 0);
        assert!(!t.is_fresh("a", 10));
        assert!(!t.is_fresh("c", 200));
    }

    #[test]
    fn settings_are_checked() {
        let none: BTreeMap<String, ()> = BTreeMap::new();
        assert!(CimdSettings::default().check(&none).is_ok());
        let bad = |s: CimdSettings| s.check(&none).unwrap_err();
        assert!(bad(CimdSettings {
            max_document_bytes: 0,
            ..Default::default()
        })
        .contains("max_document_bytes"));
        assert!(bad(CimdSettings {
            cache_min_secs: 10,
            cache_max_secs: 5,
            ..Default::default()
        })
        .contains("cache_min_secs"));
        assert!(bad(CimdSettings {
            policy: "nope".into(),
            ..Default::default()
        })
        .contains("cimd.policy"));
        assert!(bad(CimdSettings {
            denied_hosts: vec!["*".into()],
            ..Default::default()
        })
        .contains("cimd.denied_hosts"));
    }
}
