//! `[admin]`: the admin listener and its bearer tokens.

use serde::{Deserialize, Serialize};

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Look up and list clients.
    #[serde(rename = "clients:read")]
    ClientsRead,
    /// Create, change, disable and delete clients; rotate their credentials.
    #[serde(rename = "clients:write")]
    ClientsWrite,
    /// Check a client's secret (the authorization server's token endpoint).
    #[serde(rename = "clients:authenticate")]
    ClientsAuthenticate,
    /// Read the audit trail.
    #[serde(rename = "audit:read")]
    AuditRead,
    /// List dead-lettered webhook deliveries and redeliver them.
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    /// Scrape `GET /metrics` when `admin.metrics_require_token` is set.
    #[serde(rename = "metrics")]
    Metrics,
}

impl Scope {
    /// The scope's name as configured and as sent in `insufficient_scope` challenges.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientsRead => "clients:read",
            Self::ClientsWrite => "clients:write",
            Self::ClientsAuthenticate => "clients:authenticate",
            Self::AuditRead => "audit:read",
            Self::WebhooksWrite => "webhooks:write",
            Self::Metrics => "metrics",
        }
    }
}

/// One admin token: `{sha256 = "<hex>"}` (preferred: the configuration holds no secret) or
/// `{token = "..."}` (hashed at start), with a `name` for logs and its `scopes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Hex SHA-256 of the token.
    #[serde(default)]
    pub sha256: String,
    /// The token itself.
    #[serde(default)]
    pub token: String,
    /// Who holds it (logged with each admin request, never the token).
    #[serde(default)]
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

/// The admin listener (Hydra's public/admin split): its own address, never the public port,
/// no CORS. It runs only when at least one token is configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 = any free port.
    pub port: u16,
    /// Bearer tokens; none = no admin listener.
    #[serde(default)]
    pub tokens: Vec<AdminToken>,
    /// `last_used_at` is written at most once per client per this many seconds.
    pub last_used_resolution_secs: u64,
    /// How long, in seconds, `POST /admin/clients/{client_id}/authenticate` remembers a secret
    /// that verified (a keyed digest, in memory only), so repeating it against the unchanged
    /// record skips argon2id; 0 (the default) = no cache. Any change of the record ends it.
    #[serde(default)]
    pub authenticate_cache_ttl_secs: u64,
    /// Most secrets that cache holds at once.
    #[serde(default = "default_authenticate_cache_max_entries")]
    pub authenticate_cache_max_entries: usize,
    /// Privileged (Hydra) fields an operator may set through the admin API.
    #[serde(default)]
    pub allowed_privileged_fields: Vec<String>,
    /// `GET /metrics` demands an admin token with scope `metrics` (default: no token).
    #[serde(default)]
    pub metrics_require_token: bool,
    /// Native TLS of the admin listener, with optional client certificates (`client_ca_file`).
    #[serde(default)]
    pub tls: crate::settings::TlsSettings,
}

fn default_authenticate_cache_max_entries() -> usize {
    10_000
}

impl AdminSettings {
    /// Check what serde cannot: every token has exactly one of `sha256` and `token`, valid
    /// hex, at least one scope; the admin port is not the public one.
    pub fn check(&self, public_host: &str, public_port: u16) -> Result<(), String> {
        for (i, t) in self.tokens.iter().enumerate() {
            let which = if t.name.is_empty() {
                format!("admin.tokens[{i}]")
            } else {
                format!("admin.tokens[{i}] ({})", t.name)
            };
            match (t.sha256.trim().is_empty(), t.token.is_empty()) {
                (true, true) | (false, false) => {
                    return Err(format!("{which}: give exactly one of sha256 and token"))
                }
                (false, true) if crate::policy::unhex(&t.sha256).is_none() => {
                    return Err(format!("{which}: sha256 must be 64 hex digits"))
                }
                (true, false) if t.token.len() < 16 => {
                    return Err(format!("{which}: token must be at least 16 characters"))
                }
                _ => {}
            }
            if t.scopes.is_empty() {
                return Err(format!("{which}: scopes must not be empty"));
            }
        }
        if !self.tokens.is_empty()
            && self.port != 0
            && self.port == public_port
            && (self.host == public_host || self.host == "0.0.0.0" || public_host == "0.0.0.0")
        {
            return Err("admin.port must differ from server.port: the admin API never shares the public listener".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::Settings;
    use serde_json::json;

    fn with_tokens(tokens: serde_json::Value) -> Result<Settings, String> {
        Settings::defaults()
            .unwrap()
            .with("admin.tokens", tokens)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn tokens_are_checked_at_start() {
        let ok = with_tokens(json!([{"token": "0123456789abcdef", "scopes": ["clients:read"]}]));
        assert!(ok.is_ok(), "{ok:?}");
        let digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        assert!(with_tokens(json!([{"sha256": digest, "scopes": ["audit:read"]}])).is_ok());
        for (bad, why) in [
            (json!([{"scopes": ["clients:read"]}]), "exactly one"),
            (
                json!([{"token": "0123456789abcdef", "sha256": digest, "scopes": ["clients:read"]}]),
                "exactly one",
            ),
            (
                json!([{"sha256": "abc", "scopes": ["clients:read"]}]),
                "64 hex",
            ),
            (
                json!([{"token": "short", "scopes": ["clients:read"]}]),
                "16 characters",
            ),
            (
                json!([{"token": "0123456789abcdef", "scopes": []}]),
                "scopes",
            ),
            (
                json!([{"token": "0123456789abcdef", "scopes": ["clients:delete"]}]),
                "clients:delete",
            ),
        ] {
            let err = with_tokens(bad.clone()).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn the_admin_port_is_never_the_public_port() {
        let err = Settings::defaults()
            .unwrap()
            .with("admin.port", 8080)
            .and_then(|s| {
                s.with(
                    "admin.tokens",
                    json!([{"token": "0123456789abcdef", "scopes": ["clients:read"]}]),
                )
            })
            .unwrap_err();
        assert!(err.to_string().contains("admin.port"), "{err}");
    }
}
