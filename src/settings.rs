//! Typed configuration, read once at start from `config/default.toml` (or `--config FILE`) and
//! `REGISTRAR_*` environment variables, then passed down. No globals.
//!
//! Environment variables name a key path with `__` between levels:
//! `REGISTRAR_SERVER__PORT=9000`, `REGISTRAR_ISSUER=https://id.example.com`,
//! `REGISTRAR_STORAGE__DATA_DIR=/var/lib/registrar`.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The embedded default configuration; the same file as `config/default.toml`, so a binary run
/// from any directory still has every key.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// All settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The issuer identifier published in discovery. Empty: `http://{host}:{port}` of the bound
    /// listener (useful with port 0).
    pub issuer: String,
    /// Path of the RFC 7591 registration endpoint; management URIs are `{path}/{client_id}`.
    pub registration_path: String,
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub credentials: CredentialSettings,
    pub registration: RegistrationSettings,
    pub cors: CorsSettings,
    pub metadata: MetadataSettings,
    pub fetch: FetchSettings,
    /// Who may register (RFC 7591 §3): mode, initial access tokens, software statement issuers.
    pub access: crate::policy::config::AccessSettings,
    /// Named registration policies (`[policies.NAME]`), chosen by the admitting tier.
    #[serde(default)]
    pub policies: std::collections::BTreeMap<String, crate::policy::config::PolicySettings>,
    /// Per-source rate limit on registration.
    pub rate_limit: crate::policy::config::RateLimitSettings,
    /// Both discovery documents: where the authorization server's own metadata comes from, and
    /// extra members (e.g. `authorization_endpoint`).
    #[serde(default)]
    pub discovery: DiscoverySettings,
    /// The audit trail (`crate::events::audit`).
    #[serde(default)]
    pub audit: crate::events::audit::AuditSettings,
    /// Webhook subscriptions (`[[webhooks]]`, `crate::events::webhook`).
    #[serde(default)]
    pub webhooks: Vec<crate::events::WebhookSettings>,
    /// The admin listener (`crate::admin`).
    pub admin: crate::admin::config::AdminSettings,
    /// Reaping of abandoned registrations (`crate::lifecycle`).
    #[serde(default)]
    pub lifecycle: crate::lifecycle::LifecycleSettings,
    /// Client ID Metadata Documents: https `client_id`s (`crate::directory::cimd`).
    #[serde(default)]
    pub cimd: crate::directory::cimd::CimdSettings,
}

/// `[discovery]`: what the registrar publishes besides its own `registration_endpoint` and
/// `*_supported` lists (RFC 8414 §2; OpenID Connect Discovery 1.0 §3).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiscoverySettings {
    /// The authorization server's own RFC 8414 or OpenID Connect metadata URL (https), fetched
    /// at start and every `authorization_server_metadata_refresh_secs`; its endpoints and keys
    /// are published. Empty: none.
    #[serde(default)]
    pub authorization_server_metadata_url: String,
    /// Seconds between two fetches of `authorization_server_metadata_url`.
    #[serde(default = "default_refresh_secs")]
    pub authorization_server_metadata_refresh_secs: u64,
    /// Published `code_challenge_methods_supported` (RFC 8414 §2; the MCP authorization spec
    /// requires it) unless the authorization server's metadata has its own. Empty: not published.
    #[serde(default = "default_code_challenge_methods")]
    pub code_challenge_methods_supported: Vec<String>,
    /// Every other key: a member copied into both documents; it overrides a fetched member but
    /// never what the registrar enforces (`issuer`, `registration_endpoint`, its lists).
    #[serde(flatten)]
    pub members: serde_json::Map<String, serde_json::Value>,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        Self {
            authorization_server_metadata_url: String::new(),
            authorization_server_metadata_refresh_secs: default_refresh_secs(),
            code_challenge_methods_supported: default_code_challenge_methods(),
            members: serde_json::Map::new(),
        }
    }
}

fn default_refresh_secs() -> u64 {
    3600
}

fn default_code_challenge_methods() -> Vec<String> {
    vec!["S256".to_owned()]
}

impl DiscoverySettings {
    fn check(&self) -> Result<(), SettingsError> {
        let raw = &self.authorization_server_metadata_url;
        if !raw.is_empty() {
            let url = url::Url::parse(raw).map_err(|e| {
                SettingsError(format!(
                    "discovery.authorization_server_metadata_url {raw:?}: {e}"
                ))
            })?;
            if url.scheme() != "https" || url.host().is_none() {
                return Err(SettingsError(format!(
                    "discovery.authorization_server_metadata_url {raw:?} must be an https URL (RFC 8414 §3)"
                )));
            }
        }
        if self.authorization_server_metadata_refresh_secs == 0 {
            return Err(SettingsError(
                "discovery.authorization_server_metadata_refresh_secs must be > 0".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
    /// Largest accepted request body in bytes.
    pub body_limit_bytes: usize,
    /// Time allowed to receive a whole request body, in milliseconds.
    pub body_timeout_ms: u64,
    /// Time allowed to receive the request head, in milliseconds.
    pub head_timeout_ms: u64,
    /// Maximum concurrent connections per worker.
    pub max_connections: usize,
    /// Log filter (tracing `EnvFilter` syntax) used when `RUST_LOG` is not set.
    pub log: String,
    /// Log line format: human-readable text or one JSON object per line.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Native TLS of the public listener; off while `cert_file` is empty.
    #[serde(default)]
    pub tls: TlsSettings,
}

/// `server.log_format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// tracing's default text lines, span fields (the request id) in front of the message.
    #[default]
    Text,
    /// One JSON object per line, with the fields of the enclosing request span.
    Json,
}

/// `[server.tls]` and `[admin.tls]`: PEM files of a rustls listener (TLS 1.2 and 1.3).
/// Re-read on SIGHUP without dropping connections.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first. Empty = plain HTTP.
    #[serde(default)]
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    #[serde(default)]
    pub key_file: String,
    /// PEM CA certificates; when set, clients must present a certificate they issued (mutual
    /// TLS). Meant for the admin listener.
    #[serde(default)]
    pub client_ca_file: String,
}

impl TlsSettings {
    /// Whether TLS is configured.
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }

    /// What is inconsistent in the section called `name` (the files are read by `crate::tls`).
    pub fn problems(&self, name: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            problems.push(format!(
                "{name}.cert_file and {name}.key_file must be set together"
            ));
        }
        if !self.enabled() && !self.client_ca_file.is_empty() {
            problems.push(format!("{name}.client_ca_file needs {name}.cert_file"));
        }
        problems
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// Which store holds the clients: the embedded sled store (default) or a PostgreSQL-wire
    /// database shared by any number of replicas.
    #[serde(default)]
    pub backend: crate::store::Backend,
    /// Directory of the embedded store; created when missing.
    pub data_dir: PathBuf,
    /// Caches of the sled store in bytes: the record cache's share and sled's page cache.
    pub cache_capacity_bytes: u64,
    /// Percent (0–100) of `cache_capacity_bytes` for the sled store's record cache of single
    /// client records and token index entries (the rest is sled's page cache); 0 = none.
    #[serde(default = "default_record_cache_percent")]
    pub record_cache_percent: u8,
    /// `[storage.postgres]`, used when `backend = "postgres"`.
    #[serde(default)]
    pub postgres: crate::store::PostgresSettings,
}

fn default_record_cache_percent() -> u8 {
    crate::store::DEFAULT_RECORD_CACHE_PERCENT
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSettings {
    /// HMAC key for registration access tokens, base64url (≥ 32 bytes). Empty: read from
    /// `server_key_file`, generating it on first start.
    pub server_key: String,
    /// File holding the generated server key. Empty: `{data_dir}/server.key`.
    pub server_key_file: String,
    /// argon2id memory cost in KiB (OWASP minimum: 19456).
    pub argon2_memory_kib: u32,
    /// argon2id iterations.
    pub argon2_iterations: u32,
    /// argon2id lanes.
    pub argon2_parallelism: u32,
    /// Hashes computed at once; 0 = number of cores.
    pub hash_concurrency: usize,
    /// Requests allowed to wait for a hash beyond those running; more get 503 at once.
    /// 0 = wait without bound.
    pub hash_queue_limit: usize,
    /// `client_secret` lifetime in seconds; 0 = never expires (`client_secret_expires_at` 0).
    pub client_secret_lifetime_secs: u64,
    /// Key (base64url, ≥ 32 bytes) for recoverable client secrets, which `client_secret_jwt` and
    /// secret-keyed algorithms (HS*, `dir`, `A*KW`) need. Empty = off: secrets are only argon2id
    /// hashes and those values may not appear in the `metadata.*_supported` lists.
    #[serde(default)]
    pub client_secret_derivation_key: String,
    /// With a lifetime, a PUT (RFC 7592 §2.2) renews a secret expiring within this many
    /// seconds; absent = a tenth of `client_secret_lifetime_secs` (`crate::lifecycle`).
    #[serde(default)]
    pub client_secret_renew_before_secs: Option<u64>,
    /// A PUT still renews a secret that expired less than this many seconds ago.
    #[serde(default)]
    pub client_secret_expired_grace_secs: u64,
    /// How long the replaced secret keeps authenticating after a renewal (never past its own
    /// expiry); 0 = it stops at once.
    #[serde(default)]
    pub client_secret_renewal_overlap_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationSettings {
    /// Issue a new registration access token on every successful PUT (RFC 7592 §3 allows it).
    pub rotate_rat_on_update: bool,
    /// Issue a new registration access token on every GET.
    pub rotate_rat_on_read: bool,
    /// After a rotation the previous token still answers GET (with the new token) for this
    /// many seconds or until the new one is used; 0 = off (`crate::lifecycle`).
    #[serde(default)]
    pub rat_grace_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSettings {
    /// Origins allowed to call discovery, registration and management from a browser.
    /// `["*"]` = any origin (never with credentials).
    pub allowed_origins: Vec<String>,
    /// Preflight cache lifetime in seconds.
    pub max_age_secs: usize,
}

/// The values the server accepts. Discovery publishes exactly these lists (non-empty ones), and
/// the metadata engine validates against the same lists, so the two cannot drift apart.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataSettings {
    /// Discovery member `grant_types_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub grant_types_supported: Vec<String>,
    /// Discovery member `response_types_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub response_types_supported: Vec<String>,
    /// Discovery member `response_modes_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub response_modes_supported: Vec<String>,
    /// Discovery member `token_endpoint_auth_methods_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// Discovery member `token_endpoint_auth_signing_alg_values_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub token_endpoint_auth_signing_alg_values_supported: Vec<String>,
    /// Discovery member `subject_types_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub subject_types_supported: Vec<String>,
    /// Discovery member `scopes_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub scopes_supported: Vec<String>,
    /// Discovery member `acr_values_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub acr_values_supported: Vec<String>,
    /// Discovery member `id_token_signing_alg_values_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub id_token_signing_alg_values_supported: Vec<String>,
    /// Discovery member `id_token_encryption_alg_values_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub id_token_encryption_alg_values_supported: Vec<String>,
    /// Discovery member `id_token_encryption_enc_values_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub id_token_encryption_enc_values_supported: Vec<String>,
    /// Discovery member `userinfo_signing_alg_values_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub userinfo_signing_alg_values_supported: Vec<String>,
    /// Discovery member `userinfo_encryption_alg_values_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub userinfo_encryption_alg_values_supported: Vec<String>,
    /// Discovery member `userinfo_encryption_enc_values_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub userinfo_encryption_enc_values_supported: Vec<String>,
    /// Discovery member `request_object_signing_alg_values_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub request_object_signing_alg_values_supported: Vec<String>,
    /// Discovery member `request_object_encryption_alg_values_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub request_object_encryption_alg_values_supported: Vec<String>,
    /// Discovery member `request_object_encryption_enc_values_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub request_object_encryption_enc_values_supported: Vec<String>,
    /// Discovery member `authorization_signing_alg_values_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub authorization_signing_alg_values_supported: Vec<String>,
    /// Discovery member `authorization_encryption_alg_values_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub authorization_encryption_alg_values_supported: Vec<String>,
    /// Discovery member `authorization_encryption_enc_values_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub authorization_encryption_enc_values_supported: Vec<String>,
    /// Discovery member `introspection_signing_alg_values_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub introspection_signing_alg_values_supported: Vec<String>,
    /// Discovery member `introspection_encryption_alg_values_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub introspection_encryption_alg_values_supported: Vec<String>,
    /// Discovery member `introspection_encryption_enc_values_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub introspection_encryption_enc_values_supported: Vec<String>,
    /// Discovery member `backchannel_token_delivery_modes_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub backchannel_token_delivery_modes_supported: Vec<String>,
    /// Discovery member `backchannel_authentication_request_signing_alg_values_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub backchannel_authentication_request_signing_alg_values_supported: Vec<String>,
    /// Discovery member `authorization_details_types_supported` (RFC 8414 §2 / OpenID Connect Discovery §3 and extensions).
    pub authorization_details_types_supported: Vec<String>,
    /// Scope registered when the client sends none. Empty: no `scope` member.
    pub default_scope: String,
    /// Allow `http` redirect URIs on `localhost`, `127.0.0.0/8` and `[::1]` (any port) for `web`
    /// clients that do not use the implicit grant (OIDC Registration §2 leaves them to the
    /// server; RFC 8252 §7.3). MCP hosts register this way without `application_type`.
    pub allow_http_loopback_redirects_for_web: bool,
    /// Allow private-use URI schemes (RFC 8252 §7.1, `cursor://…`) for `web` clients that do not
    /// use the implicit grant. The forbidden schemes stay refused either way.
    pub allow_private_use_schemes_for_web: bool,
    /// Unknown metadata names kept and echoed (all other unknown names are dropped, RFC 7591 §2).
    pub extension_fields: Vec<String>,
    /// Hydra extension fields (`metadata`, `skip_consent`, lifespans, ...) that an anonymous
    /// registrant may set to non-default values.
    pub allowed_privileged_fields: Vec<String>,
    /// Largest stored metadata of one client, bytes (serialized JSON); 0 = unbounded.
    pub max_client_bytes: usize,
    /// Accept internationalized (punycode) host names in URIs, checked for mixed scripts and
    /// delimiter look-alikes (UTS #39). Off: ASCII host names only.
    pub allow_idn_hosts: bool,
    /// Copied from `fetch.allow_private_addresses` when settings are loaded: URIs the AS or a
    /// browser dereferences may then name reserved IP literals.
    #[serde(skip)]
    pub allow_private_address_uris: bool,
}

/// Outbound fetches of `sector_identifier_uri` and `jwks_uri` (src/fetch). Every default is the
/// safe one; see the README section "Outbound fetches and SSRF".
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchSettings {
    /// Total time for one fetch (connect, TLS, headers and body), in milliseconds.
    pub timeout_ms: u64,
    /// Largest accepted response body, in bytes (checked on `Content-Length` and while streaming).
    pub max_body_bytes: usize,
    /// Fetch `jwks_uri` at registration and update and require a public JWK Set there.
    pub fetch_jwks_uri: bool,
    /// Allow loopback, private and other reserved addresses. For tests and closed networks only.
    pub allow_private_addresses: bool,
    /// Fetches in flight at once, across all requests.
    pub max_concurrent: usize,
    /// After a host fails (unreachable, too slow, 5xx), refuse to contact it again for this many
    /// milliseconds; 0 = no negative cache.
    pub failure_ttl_ms: u64,
    /// PEM file with extra trusted root certificates (a test CA or a private CA). Empty = only
    /// the built-in web PKI roots.
    pub extra_root_ca_file: String,
}

impl FetchSettings {
    fn check(&self) -> Result<(), SettingsError> {
        if self.timeout_ms == 0 || self.max_body_bytes == 0 || self.max_concurrent == 0 {
            return Err(SettingsError(
                "fetch.timeout_ms, fetch.max_body_bytes and fetch.max_concurrent must be > 0"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct SettingsError(pub String);

impl Settings {
    /// Load settings: embedded defaults, then `file` (if given), then `REGISTRAR_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::load_with_env(file, true)
    }

    /// The embedded defaults only, with no file or environment; the base for tests.
    pub fn defaults() -> Result<Self, SettingsError> {
        Self::load_with_env(None, false)
    }

    /// Like [`Settings::load`] but without the consistency checks, which `check-config` runs
    /// itself to list every problem ([`Settings::problems`]).
    pub fn load_unchecked(file: Option<&Path>) -> Result<Self, SettingsError> {
        Self::extract(file, true)
    }

    fn load_with_env(file: Option<&Path>, env: bool) -> Result<Self, SettingsError> {
        let settings = Self::extract(file, env)?;
        settings.check()?;
        Ok(settings)
    }

    fn extract(file: Option<&Path>, env: bool) -> Result<Self, SettingsError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.exists() {
                return Err(SettingsError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        if env {
            figment = figment.merge(Env::prefixed("REGISTRAR_").split("__"));
        }
        let settings: Settings = figment.extract().map_err(|e| {
            // figment collects every error it met; report them all, not just the first.
            SettingsError(
                e.into_iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        Ok(settings.derive())
    }

    /// Replace values by path, e.g. `("server.port", 0)`; used by tests and embedders.
    pub fn with(self, key: &str, value: impl Serialize) -> Result<Self, SettingsError> {
        let settings: Settings = Figment::from(Serialized::defaults(self))
            .merge(Serialized::default(key, value))
            .extract()
            .map_err(|e| SettingsError(e.to_string()))?;
        settings.check()?;
        Ok(settings.derive())
    }

    /// Values one section takes from another, so each engine reads only its own section.
    fn derive(mut self) -> Self {
        self.metadata.allow_private_address_uris = self.fetch.allow_private_addresses;
        self
    }

    fn check(&self) -> Result<(), SettingsError> {
        match self.problems().as_slice() {
            [] => Ok(()),
            problems => Err(SettingsError(problems.join("; "))),
        }
    }

    /// Every inconsistency of these settings (not only the first), for `check-config`.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.registration_path.starts_with('/') || self.registration_path.ends_with('/') {
            problems.push(format!(
                "registration_path must start with '/' and not end with '/': {:?}",
                self.registration_path
            ));
        }
        if !self.issuer.is_empty() {
            match url::Url::parse(&self.issuer) {
                Err(e) => problems.push(format!("issuer {:?}: {e}", self.issuer)),
                Ok(url) if url.query().is_some() || url.fragment().is_some() => problems
                    .push("issuer must not have a query or fragment (RFC 8414 §2)".into()),
                Ok(url) if self.server.tls.enabled() && url.scheme() != "https" => {
                    problems.push(format!(
                        "issuer {:?} must use https when server.tls is set (or leave it empty to derive it from the listener)",
                        self.issuer
                    ))
                }
                Ok(_) => {}
            }
        }
        problems.extend(self.server.tls.problems("server.tls"));
        problems.extend(self.admin.tls.problems("admin.tls"));
        if let Err(e) = self.lifecycle.check() {
            problems.push(e);
        }
        if self
            .credentials
            .client_secret_derivation_key
            .trim()
            .is_empty()
        {
            // client_secret_jwt and HS*/dir/A*KW need the plaintext secret; without recoverable
            // secrets they could never work, so they may not be offered (or advertised).
            if let Ok(serde_json::Value::Object(lists)) = serde_json::to_value(&self.metadata) {
                // Only the algorithm and auth method lists: a scope or ACR value may well
                // start with "HS".
                let jose_lists = lists.into_iter().filter(|(name, _)| {
                    name.ends_with("_alg_values_supported")
                        || name == "token_endpoint_auth_methods_supported"
                });
                for (name, value) in jose_lists {
                    let listed = value.as_array().into_iter().flatten();
                    if let Some(v) = listed
                        .filter_map(serde_json::Value::as_str)
                        .find(|v| crate::metadata::schema::is_secret_keyed(v))
                    {
                        problems.push(format!(
                            "metadata.{name} contains {v:?}, which needs the plaintext client_secret; set credentials.client_secret_derivation_key to enable recoverable secrets, or remove it"
                        ));
                    }
                }
            }
        }
        if self.server.body_limit_bytes == 0 {
            problems.push("server.body_limit_bytes must be > 0".into());
        }
        if self.storage.record_cache_percent > 100 {
            problems.push(format!(
                "storage.record_cache_percent must be 0 to 100: {}",
                self.storage.record_cache_percent
            ));
        }
        for check in [self.fetch.check(), self.discovery.check()] {
            if let Err(e) = check {
                problems.push(e.0);
            }
        }
        if let Err(e) = self.admin.check(&self.server.host, self.server.port) {
            problems.push(e);
        }
        if let Err(e) = self.cimd.check(&self.policies) {
            problems.push(e);
        }
        for hook in &self.webhooks {
            if let Err(e) = hook.check() {
                problems.push(e);
            }
        }
        problems
    }
}
