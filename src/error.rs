//! The one error type of the registrar's services.
//!
//! Variants are the error codes of RFC 7591 §3.2.2 and RFC 7592 §2 (plus the few transport
//! conditions every HTTP service needs). The services return them and know nothing of HTTP; each
//! listener maps them to responses in one place (`crate::http::error` for the public listener,
//! `crate::admin::error` for the admin listener), so the same failure can be worded for its
//! audience: a rejected credential is `invalid_token` to a registrant and `invalid_client` to the
//! authorization server asking the admin API.

/// An error the registrar reports to a client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistrationError {
    /// RFC 7591 §3.2.2 `invalid_redirect_uri`.
    #[error("{0}")]
    InvalidRedirectUri(String),
    /// RFC 7591 §3.2.2 `invalid_client_metadata`.
    #[error("{0}")]
    InvalidClientMetadata(String),
    /// RFC 7591 §3.2.2 `invalid_software_statement`.
    #[error("{0}")]
    InvalidSoftwareStatement(String),
    /// RFC 7591 §3.2.2 `unapproved_software_statement`.
    #[error("{0}")]
    UnapprovedSoftwareStatement(String),
    /// RFC 6749 §5.2 / RFC 7592 §2.2 `invalid_request` (e.g. a read-only field changed on PUT).
    #[error("{0}")]
    InvalidRequest(String),
    /// RFC 6749 §5.2 `invalid_client`: a client identifier that cannot name a client, e.g. an
    /// https `client_id` that breaks a rule of the client ID metadata document draft (§3), or
    /// whose document could not be fetched or is invalid (§4, §5). Answered 400: the caller (the
    /// authorization server) sent a client_id, not a credential.
    #[error("{0}")]
    InvalidClient(String),
    /// A presented credential was refused: on the public listener the registration access token
    /// (or initial access token) is missing, malformed, unknown or revoked (RFC 6750 §3.1
    /// `invalid_token`); on the admin listener the client secret did not authenticate the client
    /// (RFC 6749 §5.2 `invalid_client`). RFC 7592 §2 requires the same 401 whether or not the
    /// client exists, so this variant carries no detail about which case it was.
    #[error("the access token is missing, invalid, expired or revoked")]
    InvalidToken,
    /// RFC 6750 §3.1: the request carried no credentials at all (no `Authorization` header). Still
    /// 401 `invalid_token` in the body, but the challenge is a bare `Bearer` with no `error`
    /// attribute, as §3.1 asks of a request that "lacks any authentication information". It is
    /// decided from the request alone, before any lookup, so it says nothing about whether a
    /// client exists.
    #[error("this request needs a bearer access token (RFC 6750 §2.1)")]
    MissingToken,
    /// The client is disabled by the operator and may not change itself (RFC 7592 §2.2, §2.3:
    /// 403 when the client is not allowed to update or delete its registration).
    #[error("this client is disabled by the operator; it cannot be changed or deleted through the registration endpoint")]
    ClientDisabled,
    /// No client with this `client_id` (admin API only: the public endpoints never reveal
    /// existence, RFC 7592 §2.1).
    #[error("no client with client_id {0:?}")]
    ClientNotFound(String),
    /// No dead-lettered webhook delivery with this `webhook-id` (admin API only).
    #[error("no dead-lettered delivery with webhook-id {0:?}")]
    DeliveryNotFound(String),
    /// The request body exceeded the configured limit.
    #[error("request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// The request did not declare `Content-Type: application/json`.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// The request body did not arrive within the configured time.
    #[error("request body was not received in time")]
    BodyTimeout,
    /// The route exists but not with this method; carries the `Allow` value.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// No such route.
    #[error("not found")]
    NotFound,
    /// Too many requests from one source; carries the seconds to wait.
    #[error("too many requests; retry after {0} seconds")]
    TooManyRequests(u64),
    /// The store cannot accept writes (disk full, I/O error); reads may still work.
    #[error("the registration store is temporarily unavailable")]
    Unavailable,
    /// Too much work is queued (e.g. the argon2 queue is full); retry shortly.
    #[error("the server is busy; retry shortly")]
    Overloaded,
    /// A configured ceiling is reached (`access.max_anonymous_clients`); the message says which.
    /// Not a retry-shortly condition, so no `Retry-After`.
    #[error("{0}")]
    CapacityReached(String),
    /// A bug or an unexpected condition. The cause is logged, never returned.
    #[error("internal error")]
    Internal(String),
}

/// Result alias used across the service.
pub type Result<T, E = RegistrationError> = std::result::Result<T, E>;

impl RegistrationError {
    /// The OAuth error code (RFC 7591 §3.2.2, RFC 6749 §5.2, RFC 6750 §3.1).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRedirectUri(_) => "invalid_redirect_uri",
            Self::InvalidClientMetadata(_) => "invalid_client_metadata",
            Self::InvalidSoftwareStatement(_) => "invalid_software_statement",
            Self::UnapprovedSoftwareStatement(_) => "unapproved_software_statement",
            Self::InvalidRequest(_) | Self::BodyTimeout => "invalid_request",
            Self::InvalidToken | Self::MissingToken => "invalid_token",
            Self::InvalidClient(_) => "invalid_client",
            Self::PayloadTooLarge(_) => "invalid_request",
            Self::UnsupportedMediaType => "invalid_request",
            Self::MethodNotAllowed(_) => "invalid_request",
            Self::NotFound | Self::ClientNotFound(_) | Self::DeliveryNotFound(_) => "not_found",
            Self::ClientDisabled => "access_denied",
            Self::TooManyRequests(_) => "too_many_requests",
            Self::Unavailable | Self::Overloaded | Self::CapacityReached(_) => {
                "temporarily_unavailable"
            }
            Self::Internal(_) => "server_error",
        }
    }

    /// Shorthand for `invalid_client_metadata`.
    pub fn metadata(msg: impl Into<String>) -> Self {
        Self::InvalidClientMetadata(msg.into())
    }

    /// Shorthand for `invalid_redirect_uri`.
    pub fn redirect(msg: impl Into<String>) -> Self {
        Self::InvalidRedirectUri(msg.into())
    }
}
