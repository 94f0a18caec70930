//! Admin bearer tokens (RFC 6750 §2.1) and their scopes.

use super::config::{AdminToken, Scope};
use super::error::AdminError;
use crate::credentials::{find_token_digest, token_digest};
use actix_web::http::header;
use actix_web::HttpRequest;

/// The configured admin tokens, kept only as SHA-256 digests.
#[derive(Debug, Clone, Default)]
pub struct AdminTokens {
    digests: Vec<[u8; 32]>,
    holders: Vec<(String, Vec<Scope>)>,
}

impl AdminTokens {
    /// Digest the configured tokens (`AdminSettings::check` has validated them).
    pub fn compile(tokens: &[AdminToken]) -> Result<Self, String> {
        let mut out = Self::default();
        for (i, t) in tokens.iter().enumerate() {
            let digest = if t.token.is_empty() {
                crate::policy::unhex(&t.sha256)
                    .ok_or_else(|| format!("admin.tokens[{i}]: sha256 must be 64 hex digits"))?
            } else {
                token_digest(&t.token)
            };
            let name = if t.name.is_empty() {
                format!("admin-token-{i}")
            } else {
                t.name.clone()
            };
            out.digests.push(digest);
            out.holders.push((name, t.scopes.clone()));
        }
        Ok(out)
    }

    /// Whether any token is configured (else the admin listener does not run).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The name of the holder of the request's token, if it has `scope`. The token is compared
    /// against every configured digest in constant time.
    pub fn authorize(&self, req: &HttpRequest, scope: Scope) -> Result<&str, AdminError> {
        let presented = req.headers().contains_key(header::AUTHORIZATION);
        let token = crate::http::auth::bearer(req)?;
        let found = token
            .as_deref()
            .and_then(|t| find_token_digest(t, &self.digests));
        let Some(i) = found else {
            return Err(AdminError::Unauthorized { presented });
        };
        let (name, scopes) = &self.holders[i];
        if !scopes.contains(&scope) {
            tracing::info!(admin = %name, scope = scope.as_str(), "admin request without the scope");
            return Err(AdminError::InsufficientScope(scope));
        }
        Ok(name)
    }
}
