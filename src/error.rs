//! The one error type of the registrar and its one mapping to HTTP.
//!
//! Variants are the error codes of RFC 7591 §3.2.2 and RFC 7592 §2 (plus the few transport
//! conditions every HTTP service needs). The service returns them; only `ResponseError` below turns
//! them into responses, so status codes, `WWW-Authenticate` and `Cache-Control` are decided here
//! and nowhere else.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// An error the registrar reports to a client.
#[derive(Debug, thiserror::Error)]
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
    /// RFC 6750 §3.1 `invalid_token`: the registration access token (or initial access token) is
    /// missing, malformed, unknown or revoked. RFC 7592 §2 requires the same 401 whether or not
    /// the client exists, so this variant carries no detail about which case it was.
    #[error("the access token is missing, invalid, expired or revoked")]
    InvalidToken,
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

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: String,
}

impl RegistrationError {
    /// The OAuth error code (RFC 7591 §3.2.2, RFC 6749 §5.2, RFC 6750 §3.1).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRedirectUri(_) => "invalid_redirect_uri",
            Self::InvalidClientMetadata(_) => "invalid_client_metadata",
            Self::InvalidSoftwareStatement(_) => "invalid_software_statement",
            Self::UnapprovedSoftwareStatement(_) => "unapproved_software_statement",
            Self::InvalidRequest(_) | Self::BodyTimeout => "invalid_request",
            Self::InvalidToken => "invalid_token",
            Self::PayloadTooLarge(_) => "invalid_request",
            Self::UnsupportedMediaType => "invalid_request",
            Self::MethodNotAllowed(_) => "invalid_request",
            Self::NotFound => "not_found",
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

impl ResponseError for RegistrationError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidRedirectUri(_)
            | Self::InvalidClientMetadata(_)
            | Self::InvalidSoftwareStatement(_)
            | Self::UnapprovedSoftwareStatement(_)
            | Self::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable | Self::Overloaded | Self::CapacityReached(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let description = match self {
            Self::Internal(cause) => {
                tracing::error!(cause = %crate::logsafe::escaped(cause), "internal error");
                "the server could not complete the request".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = HttpResponse::build(self.status_code());
        response
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
            .insert_header((header::PRAGMA, HeaderValue::from_static("no-cache")));
        match self {
            Self::InvalidToken => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer error=\"invalid_token\", error_description=\"the access token is missing, invalid, expired or revoked\"",
                    ),
                ));
            }
            Self::MethodNotAllowed(allow) => {
                response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
            }
            Self::TooManyRequests(secs) => {
                response.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            Self::Unavailable => {
                response.insert_header((header::RETRY_AFTER, "5"));
            }
            Self::Overloaded => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            _ => {}
        }
        response.json(ErrorBody {
            error: self.code(),
            error_description: description,
        })
    }
}
