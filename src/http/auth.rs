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
        && token.len() <= crate::credentials::MAX_PRESENTED_LEN
        && token
            .trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    Ok((scheme.eq_ignore_ascii_case("bearer") && is_token68).then(|| token.to_owned()))
}
