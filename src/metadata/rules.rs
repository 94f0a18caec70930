//! The cross-field rules named in `schema::RULES`. Each takes the metadata after per-field checks
//! and defaults, and either completes it (where a spec defines a derived default) or refuses it
//! with an error that names the fields and the rule.

use super::uri;
use super::validate::response_type_words;
use crate::error::{RegistrationError, Result};
use crate::settings::MetadataSettings;
use serde_json::{Map, Value};

/// The strings of an array member (empty when absent).
pub fn list<'a>(m: &'a Map<String, Value>, name: &str) -> Vec<&'a str> {
    m.get(name)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A string member.
pub fn text<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    m.get(name).and_then(Value::as_str)
}

fn needs_authorization_code(rt: &str) -> bool {
    response_type_words(rt).contains(&"code")
}

fn needs_implicit(rt: &str) -> bool {
    let w = response_type_words(rt);
    w.contains(&"token") || w.contains(&"id_token")
}

/// RFC 7591 §2.1: `grant_types` and `response_types` must agree. When one is absent it is derived
/// from the other (the RFC defaults, `["authorization_code"]` and `["code"]`, when both are).
pub fn grant_and_response_types(m: &mut Map<String, Value>, _: &MetadataSettings) -> Result<()> {
    let has_gt = m.contains_key("grant_types");
    let has_rt = m.contains_key("response_types");
    match (has_gt, has_rt) {
        (false, false) => {
            m.insert(
                "grant_types".into(),
                Value::from(vec!["authorization_code"]),
            );
            m.insert("response_types".into(), Value::from(vec!["code"]));
        }
        (false, true) => {
            let rts = list(m, "response_types");
            let mut gts = Vec::new();
            if rts.iter().any(|r| needs_authorization_code(r)) {
                gts.push("authorization_code");
            }
            if rts.iter().any(|r| needs_implicit(r)) {
                gts.push("implicit");
            }
            if gts.is_empty() {
                gts.push("authorization_code");
            }
            m.insert("grant_types".into(), Value::from(gts));
        }
        (true, false) => {
            let rt: Vec<&str> = if list(m, "grant_types").contains(&"authorization_code") {
                vec!["code"]
            } else {
                vec![]
            };
            m.insert("response_types".into(), Value::from(rt));
        }
        (true, true) => {}
    }
    let gts = list(m, "grant_types");
    let rts = list(m, "response_types");
    for rt in &rts {
        if needs_authorization_code(rt) && !gts.contains(&"authorization_code") {
            return Err(RegistrationError::metadata(format!(
                "grant_types must include \"authorization_code\" because response_types includes {rt:?} (RFC 7591 §2.1)"
            )));
        }
        if needs_implicit(rt) && !gts.contains(&"implicit") {
            return Err(RegistrationError::metadata(format!(
                "grant_types must include \"implicit\" because response_types includes {rt:?} (RFC 7591 §2.1)"
            )));
        }
    }
    if gts.contains(&"authorization_code") && !rts.iter().any(|r| needs_authorization_code(r)) {
        return Err(RegistrationError::metadata(
            "response_types must include a type with \"code\" because grant_types includes \"authorization_code\" (RFC 7591 §2.1)",
        ));
    }
    if gts.contains(&"implicit") && !rts.iter().any(|r| needs_implicit(r)) {
        return Err(RegistrationError::metadata(
            "response_types must include a type with \"token\" or \"id_token\" because grant_types includes \"implicit\" (RFC 7591 §2.1)",
        ));
    }
    Ok(())
}

/// Redirect-based flows need `redirect_uris` (RFC 7591 §2; OIDC Registration §2 REQUIRED).
pub fn redirect_uris_required(m: &mut Map<String, Value>, _: &MetadataSettings) -> Result<()> {
    if !list(m, "response_types").is_empty() && list(m, "redirect_uris").is_empty() {
        return Err(RegistrationError::redirect(
            "redirect_uris is required (and must not be empty) when response_types is not empty",
        ));
    }
    Ok(())
}

/// OIDC Registration §2 `application_type` and RFC 8252 §7: where each kind of client may
/// receive responses. Applied to `redirect_uris` and `post_logout_redirect_uris`.
pub fn redirect_uris_by_application_type(
    m: &mut Map<String, Value>,
    s: &MetadataSettings,
) -> Result<()> {
    let native = text(m, "application_type") == Some("native");
    let implicit = list(m, "grant_types").contains(&"implicit");
    for (member, redirect) in [
        ("redirect_uris", true),
        ("post_logout_redirect_uris", false),
    ] {
        for raw in list(m, member) {
            let problem = redirect_problem(raw, native, implicit && redirect, s);
            if let Some(problem) = problem {
                let msg = format!("{member}: {raw:?} {problem}");
                return Err(if redirect {
                    RegistrationError::redirect(msg)
                } else {
                    RegistrationError::metadata(msg)
                });
            }
        }
    }
    Ok(())
}

fn redirect_problem(
    raw: &str,
    native: bool,
    implicit: bool,
    s: &MetadataSettings,
) -> Option<&'static str> {
    let url = match url::Url::parse(raw) {
        Ok(u) => u,
        Err(_) => return Some("is not an absolute URI"),
    };
    let scheme = url.scheme();
    if native {
        return match scheme {
            "http" if uri::is_local(&url) => None,
            "http" => Some(
                "is http, which native clients may use only on a loopback address (RFC 8252 §7.3)",
            ),
            "https" => None,
            _ => None, // private-use URI scheme (RFC 8252 §7.1)
        };
    }
    match scheme {
        "https" if implicit && uri::is_local(&url) => {
            Some("must not be localhost for web clients using the implicit grant (OIDC Registration §2)")
        }
        "https" => None,
        "http" if !implicit && s.allow_http_loopback_redirects_for_web && uri::is_loopback_ip(&url) => None,
        "http" => Some("must use https for web clients (OIDC Registration §2)"),
        _ => Some("uses a custom scheme, which only native clients may register (application_type \"native\")"),
    }
}

/// `jwks` and `jwks_uri` are mutually exclusive (RFC 7591 §2).
pub fn jwks_xor_jwks_uri(m: &mut Map<String, Value>, _: &MetadataSettings) -> Result<()> {
    if m.contains_key("jwks") && m.contains_key("jwks_uri") {
        return Err(RegistrationError::metadata(
            "jwks and jwks_uri must not both be present (RFC 7591 §2)",
        ));
    }
    Ok(())
}

/// Response encryption pairs: `*_enc` needs `*_alg`; a present `*_alg` gets `*_enc`
/// `A128CBC-HS256` by default (OIDC Registration §2, JARM §3, RFC 9701 §6).
pub fn encryption_enc_needs_alg(m: &mut Map<String, Value>, _: &MetadataSettings) -> Result<()> {
    const PAIRS: &[(&str, &str)] = &[
        (
            "id_token_encrypted_response_alg",
            "id_token_encrypted_response_enc",
        ),
        (
            "userinfo_encrypted_response_alg",
            "userinfo_encrypted_response_enc",
        ),
        (
            "request_object_encryption_alg",
            "request_object_encryption_enc",
        ),
        (
            "authorization_encrypted_response_alg",
            "authorization_encrypted_response_enc",
        ),
        (
            "introspection_encrypted_response_alg",
            "introspection_encrypted_response_enc",
        ),
    ];
    for (alg, enc) in PAIRS {
        match (m.contains_key(*alg), m.contains_key(*enc)) {
            (false, true) => {
                return Err(RegistrationError::metadata(format!("{enc} requires {alg}")));
            }
            (true, false) => {
                m.insert((*enc).to_owned(), Value::from("A128CBC-HS256"));
            }
            _ => {}
        }
    }
    Ok(())
}
