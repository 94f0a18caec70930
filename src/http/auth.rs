//! The `Authorization` header: RFC 6750 §2.1 bearer tokens.

use crate::error::{RegistrationError, Result};
use actix_web::http::header;
use actix_web::HttpRequest;

/// The bearer token of the request, if it has a well-formed one.
///
/// `Ok(None)` covers every way of not presenting a usable bearer token (no header, two headers,
/// another scheme, an empty or malformed token): management endpoints answer all of them with the
/// same 401. The `DPoP` scheme is refused explicitly, never downgraded to anonymous (the trap
/// Keycloak fell into with oauth4webapi's DPoP-bound initial access tokens).
pub fn bearer(req: &HttpRequest) -> Result<Option<String>> {
    bearer_up_to(req, crate::credentials::MAX_PRESENTED_LEN)
}

/// Longest initial access token accepted: JWTs signed with RSA keys run past the 512 bytes
/// allowed for the server's own opaque tokens.
pub const MAX_INITIAL_ACCESS_TOKEN_LEN: usize = 4096;

/// Like [`bearer`], for tokens up to `max_len` bytes.
pub fn bearer_up_to(req: &HttpRequest, max_len: usize) -> Result<Option<String>> {
    let mut values = req.headers().get_all(header::AUTHORIZATION);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Ok(None);
    }
    let Ok(value) = value.to_str() else {
        return Ok(None);
    };
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("dpop") {
        return Err(RegistrationError::InvalidRequest(
            "the DPoP authorization scheme is not supported here; send the token with the Bearer scheme".into(),
        ));
    }
    let is_token68 = !token.is_empty()
        && token.len() <= max_len
        && token
            .trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    Ok((scheme.eq_ignore_ascii_case("bearer") && is_token68).then(|| token.to_owned()))
}

/// The initial access token of a registration request (RFC 7591 §3). Unlike [`bearer`], an
/// `Authorization` header that is present but unusable is refused with `invalid_token`
/// rather than treated as anonymous: a registrant that meant to authenticate must learn that
/// it did not.
pub fn initial_access_token(req: &HttpRequest) -> Result<Option<String>> {
    match bearer_up_to(req, MAX_INITIAL_ACCESS_TOKEN_LEN)? {
        Some(token) => Ok(Some(token)),
        None if req.headers().contains_key(header::AUTHORIZATION) => {
            Err(RegistrationError::InvalidToken)
        }
        None => Ok(None),
    }
}

/// The registration access token of a management request (RFC 7592 §2). No `Authorization`
/// header at all is [`RegistrationError::MissingToken`] (RFC 6750 §3.1: a challenge without an
/// error code); a present but unusable one is `Ok(None)`, which the service refuses with
/// `invalid_token` like any wrong token.
pub fn management_token(req: &HttpRequest) -> Result<Option<String>> {
    if !req.headers().contains_key(header::AUTHORIZATION) {
        return Err(RegistrationError::MissingToken);
    }
    bearer(req)
}
