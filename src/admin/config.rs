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
}

impl Scope {
    /// The scope's name as configured and as sent in `insufficient_scope` challenges.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientsRead => "clients:read",
            Self::ClientsWrite => "clients:write",
            Self::ClientsAuthenticate => "clients:authenticate",
            Self::AuditRead => "audit:read",
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
    /// Privileged (Hydra) fields an operator may set through the admin API.
    #[serde(default)]
    pub allowed_privileged_fields: Vec<String>,
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
