//! The public listener's mapping of [`RegistrationError`] to HTTP: status, JSON body,
//! `WWW-Authenticate`, `Cache-Control`. Decided here and nowhere else for this listener; the
//! admin listener has its own mapping (`crate::admin::error`) built from the same pieces.

use crate::error::RegistrationError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, HttpResponseBuilder, ResponseError};
use serde::Serialize;

/// The `WWW-Authenticate` value of the public 401 (RFC 6750 §3, §3.1).
const INVALID_TOKEN_CHALLENGE: &str = "Bearer error=\"invalid_token\", error_description=\"the access token is missing, invalid, expired or revoked\"";

/// A service error as the public listener answers it.
#[derive(Debug)]
pub struct PublicError(pub RegistrationError);

impl From<RegistrationError> for PublicError {
    fn from(e: RegistrationError) -> Self {
        Self(e)
    }
}

impl std::fmt::Display for PublicError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for PublicError {
    fn status_code(&self) -> StatusCode {
        status(&self.0)
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = builder(&self.0, status(&self.0));
        match self.0 {
            RegistrationError::InvalidToken => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(INVALID_TOKEN_CHALLENGE),
                ));
            }
            // RFC 6750 §3.1: no credentials at all, so no error code in the challenge.
            RegistrationError::MissingToken => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            _ => {}
        }
        finish(response, self.0.code(), &self.0)
    }
}

/// The status every listener gives a service error unless it words it differently.
pub fn status(e: &RegistrationError) -> StatusCode {
    use RegistrationError as E;
    match e {
        E::InvalidRedirectUri(_)
        | E::InvalidClientMetadata(_)
        | E::InvalidSoftwareStatement(_)
        | E::UnapprovedSoftwareStatement(_)
        | E::InvalidRequest(_)
        | E::InvalidClient(_) => StatusCode::BAD_REQUEST,
        E::InvalidToken | E::MissingToken => StatusCode::UNAUTHORIZED,
        E::ClientDisabled => StatusCode::FORBIDDEN,
        E::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        E::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        E::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        E::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        E::NotFound | E::ClientNotFound(_) | E::DeliveryNotFound(_) => StatusCode::NOT_FOUND,
        E::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
        E::Unavailable | E::Overloaded | E::CapacityReached(_) => StatusCode::SERVICE_UNAVAILABLE,
        E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A response builder with the headers every error carries: `no-store` (RFC 6749 §5.1), and
/// `Allow` / `Retry-After` where the error calls for them.
pub fn builder(e: &RegistrationError, status: StatusCode) -> HttpResponseBuilder {
    let mut response = no_store(status);
    match e {
        RegistrationError::MethodNotAllowed(allow) => {
            response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
        }
        RegistrationError::TooManyRequests(secs) => {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        RegistrationError::Unavailable => {
            response.insert_header((header::RETRY_AFTER, "5"));
        }
        RegistrationError::Overloaded => {
            response.insert_header((header::RETRY_AFTER, "1"));
        }
        _ => {}
    }
    response
}

/// A response builder with `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1).
pub fn no_store(status: StatusCode) -> HttpResponseBuilder {
    let mut response = HttpResponse::build(status);
    response
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .insert_header((header::PRAGMA, HeaderValue::from_static("no-cache")));
    response
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: String,
}

/// The JSON error body (RFC 7591 §3.2.2). An internal cause is logged, never returned.
pub fn finish(
    mut response: HttpResponseBuilder,
    code: &str,
    e: &RegistrationError,
) -> HttpResponse {
    let description = match e {
        RegistrationError::Internal(cause) => {
            tracing::error!(cause = %crate::logsafe::escaped(cause), "internal error");
            "the server could not complete the request".to_owned()
        }
        other => other.to_string(),
    };
    response.json(ErrorBody {
        error: code,
        error_description: description,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_token_is_a_bearer_challenge_on_the_public_listener() {
        let r = PublicError(RegistrationError::InvalidToken).error_response();
        assert_eq!(r.status(), 401);
        let challenge = r.headers().get(header::WWW_AUTHENTICATE).unwrap();
        assert!(challenge
            .to_str()
            .unwrap()
            .starts_with("Bearer error=\"invalid_token\""));
        assert_eq!(r.headers().get(header::CACHE_CONTROL).unwrap(), "no-store");
    }

    #[test]
    fn a_disabled_client_is_forbidden() {
        let r = PublicError(RegistrationError::ClientDisabled).error_response();
        assert_eq!(r.status(), 403);
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
