//! The admin listener's mapping of errors to HTTP. Service errors keep the public listener's
//! status table and headers (`crate::http::error`), with one difference: a refused credential
//! is the client's (`invalid_client`, RFC 6749 §5.2), not a registration access token's. The
//! admin token's own failures are RFC 6750 §3.1 challenges.

use super::config::Scope;
use crate::error::RegistrationError;
use crate::http::error::{builder, finish, no_store, status};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The service refused it.
    #[error(transparent)]
    Service(#[from] RegistrationError),
    /// No usable admin token, or one that is not configured.
    #[error("a valid admin token is required (Authorization: Bearer ...)")]
    Unauthorized {
        /// Whether a token was presented (then the challenge says `invalid_token`).
        presented: bool,
    },
    /// The token is valid but lacks the scope.
    #[error("this admin token lacks the scope {}", .0.as_str())]
    InsufficientScope(Scope),
}

/// The description of every failed client authentication: one constant, so the four causes
/// (unknown client, wrong secret, expired secret, disabled client) give identical bytes.
const INVALID_CLIENT: &str = "client authentication failed";

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Service(e) => status(e),
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope(_) => StatusCode::FORBIDDEN,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        match self {
            // RFC 6749 §5.2: the client did not authenticate with an Authorization header here
            // (the admin token in it was accepted), so no challenge is sent for it.
            Self::Service(e @ RegistrationError::InvalidToken) => builder(e, status).json(
                serde_json::json!({"error": "invalid_client", "error_description": INVALID_CLIENT}),
            ),
            Self::Service(e) => finish(builder(e, status), e.code(), e),
            Self::Unauthorized { presented } => {
                let mut response = no_store(status);
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(if *presented {
                        "Bearer realm=\"registrar-admin\", error=\"invalid_token\""
                    } else {
                        // RFC 6750 §3.1: no error code when the request had no token.
                        "Bearer realm=\"registrar-admin\""
                    }),
                ));
                response.json(serde_json::json!({
                    "error": "invalid_token",
                    "error_description": self.to_string(),
                }))
            }
            Self::InsufficientScope(scope) => {
                let mut response = no_store(status);
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    format!(
                        "Bearer realm=\"registrar-admin\", error=\"insufficient_scope\", scope=\"{}\"",
                        scope.as_str()
                    ),
                ));
                response.json(serde_json::json!({
                    "error": "insufficient_scope",
                    "error_description": self.to_string(),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_client_secret_is_invalid_client_without_a_challenge() {
        let r = AdminError::Service(RegistrationError::InvalidToken).error_response();
        assert_eq!(r.status(), 401);
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
        assert_eq!(r.headers().get(header::CACHE_CONTROL).unwrap(), "no-store");
    }

    #[test]
    fn admin_token_failures_are_bearer_challenges() {
        let r = AdminError::Unauthorized { presented: false }.error_response();
        assert_eq!(r.status(), 401);
        let c = r.headers().get(header::WWW_AUTHENTICATE).unwrap();
        assert!(c.to_str().unwrap().starts_with("Bearer"));
        assert!(!c.to_str().unwrap().contains("error="));
        let r = AdminError::InsufficientScope(Scope::ClientsWrite).error_response();
        assert_eq!(r.status(), 403);
        let c = r.headers().get(header::WWW_AUTHENTICATE).unwrap();
        assert!(c.to_str().unwrap().contains("scope=\"clients:write\""));
    }
}
