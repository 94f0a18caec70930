//! Configuration of who may register (`[access]`), the registration policies (`[policies.NAME]`)
//! and the registration rate limit (`[rate_limit]`). Plain data, checked and compiled into a
//! [`super::PolicyEngine`] at start-up.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a registration request must present (RFC 7591 §3: "the authorization server MAY require
/// an initial access token"; §3.1.1 software statements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    /// Anyone may register. A presented token or statement is still verified (a bad one is
    /// refused, never ignored) and selects its policy.
    Open,
    /// An initial access token is required.
    Token,
    /// A software statement is required.
    Statement,
    /// Either an initial access token or a software statement.
    TokenOrStatement,
    /// Both an initial access token and a software statement.
    TokenAndStatement,
}

/// Kinds of request admitted without credentials even when the mode asks for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnonymousKind {
    /// `application_type: "native"` with `token_endpoint_auth_method: "none"`, both sent
    /// explicitly (RFC 8252 native apps, which cannot keep a token secret anyway).
    PublicNative,
    /// Any request with `token_endpoint_auth_method: "none"` sent explicitly.
    Public,
}

/// `[access]`: who may register.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSettings {
    /// The registration mode.
    pub mode: AccessMode,
    /// Requests admitted anonymously in every mode (e.g. `["public_native"]`).
    #[serde(default)]
    pub anonymous_allowed_for: Vec<AnonymousKind>,
    /// Policy applied to anonymous registrations; empty = none.
    #[serde(default)]
    pub anonymous_policy: String,
    /// Static initial access tokens.
    #[serde(default)]
    pub static_tokens: Vec<StaticToken>,
    /// Issuers whose signed JWTs are accepted as initial access tokens.
    #[serde(default)]
    pub token_issuers: Vec<TrustedIssuer>,
    /// Issuers whose software statements are accepted.
    #[serde(default)]
    pub statement_issuers: Vec<TrustedIssuer>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
    /// Most clients registered without any credential (tiers `anonymous` and
    /// `anonymous_exception`) that may exist at once; past it registration answers 503. Counted
    /// durably from the first start of a version that has this setting. 0 = unlimited.
    pub max_anonymous_clients: u64,
    /// Longest accepted software statement, in bytes.
    pub max_statement_bytes: usize,
}

/// One static initial access token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticToken {
    /// Hex SHA-256 of the token (preferred: the configuration never holds the token).
    #[serde(default)]
    pub sha256: String,
    /// The token itself (hashed at start-up, then dropped); use `sha256` where possible.
    #[serde(default)]
    pub token: String,
    /// Policy applied to clients registered with this token; empty = none.
    #[serde(default)]
    pub policy: String,
    /// Registrations allowed with this token, counted durably; 0 = unlimited.
    #[serde(default)]
    pub max_uses: u64,
}

/// A trusted JWT issuer (initial access tokens or software statements).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// The exact `iss` value.
    pub issuer: String,
    /// Inline public JWK Set (RFC 7517 §5).
    #[serde(default)]
    pub jwks: Map<String, Value>,
    /// File holding the public JWK Set, read at start-up (used when `jwks` is empty).
    #[serde(default)]
    pub jwks_file: String,
    /// Accepted `alg` values; asymmetric only (`none` and HS* are refused at start-up).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Required `aud` value; empty = `aud` not checked.
    #[serde(default)]
    pub audience: String,
    /// Policy applied to clients admitted by this issuer; empty = none. A JWT initial access
    /// token may name another configured policy in its `policy` claim.
    #[serde(default)]
    pub policy: String,
    /// Required JWT header `typ` (RFC 7515 §4.1.9, compared case-insensitively, `application/`
    /// optional); empty = not checked. An issuer listed both for tokens and for statements must
    /// set two different values, so one kind of JWT cannot be used as the other.
    #[serde(default)]
    pub typ: String,
    /// Software statements: require a `jti` and refuse one seen before (durable replay cache).
    #[serde(default)]
    pub reject_replayed_jti: bool,
}

fn default_algorithms() -> Vec<String> {
    ["RS256", "PS256", "ES256", "EdDSA"]
        .map(String::from)
        .to_vec()
}

/// `[policies.NAME]`: what a tier may register. Allow-lists that are empty do not restrict.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySettings {
    /// Scope tokens a client may register; empty = any supported scope.
    #[serde(default)]
    pub allowed_scopes: Vec<String>,
    /// Scope registered when the client sends none (RFC 7591 §2 lets the server choose);
    /// empty = the global `metadata.default_scope`.
    #[serde(default)]
    pub default_scope: String,
    /// Grant types a client may register; empty = any supported.
    #[serde(default)]
    pub allowed_grant_types: Vec<String>,
    /// `token_endpoint_auth_method` values a client may register; empty = any supported.
    #[serde(default)]
    pub allowed_auth_methods: Vec<String>,
    /// Hosts that `http`/`https` `redirect_uris` (and `post_logout_redirect_uris`) may use; a
    /// leading `*.` matches any subdomain. Empty = any host.
    #[serde(default)]
    pub allowed_redirect_hosts: Vec<String>,
    /// Schemes other than `http`/`https` (private-use schemes of native apps, RFC 8252 §7.1)
    /// that those URIs may use. When either list is set, a URI with another scheme is refused.
    #[serde(default)]
    pub allowed_redirect_schemes: Vec<String>,
    /// Metadata values set by the server whatever the client sent (RFC 7591 §3.2.1 allows
    /// substitution); they appear in the response.
    #[serde(default)]
    pub force: Map<String, Value>,
    /// Privileged (Hydra extension) fields this tier may set; replaces the global
    /// `metadata.allowed_privileged_fields`. Empty = none.
    #[serde(default)]
    pub allowed_privileged_fields: Vec<String>,
    /// Most clients that may exist under this policy at once; 0 = unlimited.
    #[serde(default)]
    pub max_clients: u64,
}

/// `[rate_limit]`: per-source token buckets on POST /register and on management calls, and a
/// per-client one on management calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Whether registrations are rate limited.
    pub enabled: bool,
    /// Registrations a source may make in a burst.
    pub burst: u32,
    /// One more registration is allowed every `period_ms` milliseconds.
    pub period_ms: u64,
    /// Most sources tracked at once; beyond it, sources not yet tracked share one bucket.
    pub max_tracked_sources: usize,
    /// PUT/DELETE on a registration a source may make in a burst (RFC 7592 §2.2, §2.3).
    pub management_burst: u32,
    /// One more management call per source every `management_period_ms` milliseconds.
    pub management_period_ms: u64,
    /// PUT/DELETE one client may make in a burst, counted once its token is verified.
    pub client_burst: u32,
    /// One more management call per client every `client_period_ms` milliseconds.
    pub client_period_ms: u64,
    /// Wrong `client_secret` values a client may send back on PUT before its secret checks are
    /// blocked for a doubling time (1 s, 2 s, ...); 0 = no back-off. Applies even when
    /// `enabled` is false: it only ever slows down wrong secrets.
    pub secret_failures_before_backoff: u32,
    /// Longest such block, in seconds.
    pub secret_backoff_max_secs: u64,
    /// Peers (IP addresses or CIDR ranges) whose `client_ip_header` is believed.
    pub trusted_proxies: Vec<String>,
    /// Header naming the client address when the peer is a trusted proxy
    /// (`x-forwarded-for`, `x-real-ip` or `forwarded`); empty = always the socket peer.
    pub client_ip_header: String,
}
