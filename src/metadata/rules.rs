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

/// Response types served by the authorization code grant: those with `code`, and `none`
/// (OAuth 2.0 Multiple Response Type Encoding Practices §4: the code flow without a code).
fn needs_authorization_code(rt: &str) -> bool {
    let w = response_type_words(rt);
    w.contains(&"code") || w == ["none"]
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
            "response_types must include a type with \"code\" (or \"none\") because grant_types includes \"authorization_code\" (RFC 7591 §2.1)",
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
            "redirect_uris is required (and must not be empty) when response_types is not empty (RFC 7591 §2)",
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
    if !matches!(scheme, "http" | "https") && url.path().trim_start_matches('/').is_empty() {
        // `cursor:` or `com.example.app://` alone: nothing identifies the handler's endpoint, and
        // RFC 8252 §7.1's form is `scheme:/path`.
        return Some(
            "uses a private-use URI scheme with no path; register scheme:/path (RFC 8252 §7.1)",
        );
    }
    if native {
        return match scheme {
            "http" if uri::is_local(&url) => None,
            "http" => Some(
                "is http, which native clients may use only on a loopback address (RFC 8252 §7.3)",
            ),
            "https" if uri::is_local(&url) => Some(
                "is https on a loopback host; native clients use http there, and claimed https URIs name a real host (RFC 8252 §7.2, §7.3)",
            ),
            "https" => None,
            _ => None, // private-use URI scheme (RFC 8252 §7.1)
        };
    }
    // Web clients. OIDC Registration §2 demands https and no localhost only of implicit web
    // clients (their tokens travel in the redirect itself); for code-flow web clients it leaves
    // http on loopback and private-use schemes to the server, and MCP hosts rely on both.
    match scheme {
        "https" if implicit && uri::is_local(&url) => Some(
            "must not be localhost for web clients using the implicit grant (OIDC Registration §2)",
        ),
        "https" => None,
        "http" if implicit => {
            Some("must use https for web clients using the implicit grant (OIDC Registration §2)")
        }
        "http" if uri::is_loopback_host(&url) => {
            if s.allow_http_loopback_redirects_for_web {
                None
            } else {
                Some("is http on a loopback host, which web clients may use only when metadata.allow_http_loopback_redirects_for_web is on (RFC 8252 §7.3)")
            }
        }
        "http" => Some(
            "is http on a host that is not loopback; web clients must use https there (RFC 6749 §3.1.2.1; RFC 9700 §2.1)",
        ),
        _ if implicit => Some(
            "uses a private-use URI scheme; web clients using the implicit grant must use https (OIDC Registration §2)",
        ),
        _ if s.allow_private_use_schemes_for_web => None,
        _ => Some(
            "uses a private-use URI scheme, which only native clients may register while metadata.allow_private_use_schemes_for_web is off (RFC 8252 §7.1; application_type \"native\")",
        ),
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

/// `(alg, enc)` members of the responses encrypted *to the client* (OIDC Registration §2,
/// JARM §3, RFC 9701 §6): RSA/ECDH algorithms there need the client's keys (`keys_required`).
const RESPONSE_ENCRYPTION: &[(&str, &str)] = &[
    (
        "id_token_encrypted_response_alg",
        "id_token_encrypted_response_enc",
    ),
    (
        "userinfo_encrypted_response_alg",
        "userinfo_encrypted_response_enc",
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

/// The request object is encrypted *to the server* (OIDC Registration §2), so it has the same
/// `alg`/`enc` pairing but needs no client keys.
const REQUEST_OBJECT_ENCRYPTION: (&str, &str) = (
    "request_object_encryption_alg",
    "request_object_encryption_enc",
);

/// Encryption pairs: `*_enc` needs `*_alg`; a present `*_alg` gets `*_enc` `A128CBC-HS256` by
/// default (OIDC Registration §2, JARM §3, RFC 9701 §6).
pub fn encryption_enc_needs_alg(m: &mut Map<String, Value>, _: &MetadataSettings) -> Result<()> {
    for (alg, enc) in RESPONSE_ENCRYPTION
        .iter()
        .chain(std::iter::once(&REQUEST_OBJECT_ENCRYPTION))
    {
        match (m.contains_key(*alg), m.contains_key(*enc)) {
            (false, true) => {
                return Err(RegistrationError::metadata(format!(
                    "{enc} requires {alg} (encryption enc needs alg, OIDC Registration §2)"
                )));
            }
            (true, false) => {
                m.insert((*enc).to_owned(), Value::from("A128CBC-HS256"));
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_hmac_alg(alg: &str) -> bool {
    alg.starts_with("HS")
}

/// Asymmetric JWS algorithms (RFC 7518 §3.1, RFC 8037): verified with the client's public keys.
fn is_asymmetric_alg(alg: &str) -> bool {
    alg != "none" && !is_hmac_alg(alg)
}

/// JWE key management algorithms that encrypt to the client's public key (RFC 7518 §4.2–4.3,
/// §4.6): node-oidc-provider's `encAlgRequiringJwks`.
fn is_public_key_enc_alg(alg: &str) -> bool {
    alg.starts_with("RSA") || alg.starts_with("ECDH")
}

/// Keys are required where the server must verify the client's signatures or encrypt to it:
/// `private_key_jwt` and `self_signed_tls_client_auth` (RFC 8705 §2.2), asymmetric
/// `request_object_signing_alg` and `backchannel_authentication_request_signing_alg`, and
/// RSA/ECDH response encryption (OIDC Registration §2; node-oidc-provider `needsJwks`).
pub fn keys_required(m: &mut Map<String, Value>, _: &MetadataSettings) -> Result<()> {
    if m.contains_key("jwks") || m.contains_key("jwks_uri") {
        return Ok(());
    }
    let need = |why: String| {
        Err(RegistrationError::metadata(format!(
            "jwks or jwks_uri is required because {why} (keys required, OIDC Registration §2)"
        )))
    };
    if let Some(method @ ("private_key_jwt" | "self_signed_tls_client_auth")) =
        text(m, "token_endpoint_auth_method")
    {
        return need(format!("token_endpoint_auth_method is {method:?}"));
    }
    for field in [
        "request_object_signing_alg",
        "backchannel_authentication_request_signing_alg",
    ] {
        if let Some(alg) = text(m, field).filter(|a| is_asymmetric_alg(a)) {
            return need(format!("{field} is the asymmetric algorithm {alg:?}"));
        }
    }
    for (field, _) in RESPONSE_ENCRYPTION {
        if let Some(alg) = text(m, field).filter(|a| is_public_key_enc_alg(a)) {
            return need(format!(
                "{field} {alg:?} encrypts to the client's public key"
            ));
        }
    }
    Ok(())
}

/// The `tls_client_auth_*` members (RFC 8705 §2.1.2).
pub const TLS_CLIENT_AUTH_FIELDS: &[&str] = &[
    "tls_client_auth_subject_dn",
    "tls_client_auth_san_dns",
    "tls_client_auth_san_uri",
    "tls_client_auth_san_ip",
    "tls_client_auth_san_email",
];

/// RFC 8705 §2.1.2: `tls_client_auth` needs exactly one certificate subject member; for any
/// other method those members mean nothing and are dropped (as node-oidc-provider does).
pub fn tls_client_auth_subject(m: &mut Map<String, Value>, _: &MetadataSettings) -> Result<()> {
    if text(m, "token_endpoint_auth_method") != Some("tls_client_auth") {
        for f in TLS_CLIENT_AUTH_FIELDS {
            m.remove(*f);
        }
        return Ok(());
    }
    let present: Vec<&str> = TLS_CLIENT_AUTH_FIELDS
        .iter()
        .copied()
        .filter(|f| m.contains_key(*f))
        .collect();
    match present.len() {
        1 => Ok(()),
        0 => Err(RegistrationError::metadata(format!(
            "token_endpoint_auth_method \"tls_client_auth\" requires exactly one of {} (RFC 8705 §2.1.2)",
            TLS_CLIENT_AUTH_FIELDS.join(", ")
        ))),
        _ => Err(RegistrationError::metadata(format!(
            "token_endpoint_auth_method \"tls_client_auth\" allows only one certificate subject member, got {} (RFC 8705 §2.1.2)",
            present.join(", ")
        ))),
    }
}

/// OIDC Registration §2: `id_token_signed_response_alg` `none` only when no ID token is
/// returned from the authorization endpoint (no response type contains `id_token`).
pub fn id_token_alg_none(m: &mut Map<String, Value>, _: &MetadataSettings) -> Result<()> {
    if text(m, "id_token_signed_response_alg") != Some("none") {
        return Ok(());
    }
    if let Some(rt) = list(m, "response_types")
        .into_iter()
        .find(|rt| response_type_words(rt).contains(&"id_token"))
    {
        return Err(RegistrationError::metadata(format!(
            "id_token_signed_response_alg \"none\" is not allowed because response_types includes {rt:?}, which returns an ID token from the authorization endpoint (OIDC Registration §2)"
        )));
    }
    Ok(())
}

/// OIDC Registration §2 `token_endpoint_auth_signing_alg`: never `none`; HS* only with
/// `client_secret_jwt`, asymmetric only with `private_key_jwt`, and meaningless (refused) with
/// any other method (node-oidc-provider).
pub fn token_endpoint_auth_signing_alg(
    m: &mut Map<String, Value>,
    _: &MetadataSettings,
) -> Result<()> {
    let Some(alg) = text(m, "token_endpoint_auth_signing_alg") else {
        return Ok(());
    };
    let method = text(m, "token_endpoint_auth_method").unwrap_or_default();
    let problem = match (alg, method) {
        ("none", _) => Some("must never be \"none\"".to_owned()),
        (a, "client_secret_jwt") if !is_hmac_alg(a) => Some(format!(
            "{a:?} is not an HMAC (HS*) algorithm, which token_endpoint_auth_method \"client_secret_jwt\" requires"
        )),
        (a, "private_key_jwt") if !is_asymmetric_alg(a) => Some(format!(
            "{a:?} is not an asymmetric algorithm, which token_endpoint_auth_method \"private_key_jwt\" requires"
        )),
        (_, "client_secret_jwt" | "private_key_jwt") => None,
        (_, other) => Some(format!(
            "applies only to client_secret_jwt and private_key_jwt, not to token_endpoint_auth_method {other:?}"
        )),
    };
    match problem {
        Some(p) => Err(RegistrationError::metadata(format!(
            "token_endpoint_auth_signing_alg {p} (OIDC Registration §2)"
        ))),
        None => Ok(()),
    }
}

/// At most one proof-of-possession binding (RFC 8705 §3.4 or RFC 9449 §5.2), and none when an
/// access token comes from the authorization endpoint (response type `token`), which cannot be
/// bound (node-oidc-provider).
pub fn one_proof_of_possession(m: &mut Map<String, Value>, _: &MetadataSettings) -> Result<()> {
    let flag = |name: &str| m.get(name).and_then(Value::as_bool).unwrap_or(false);
    let mtls = flag("tls_client_certificate_bound_access_tokens");
    let dpop = flag("dpop_bound_access_tokens");
    if mtls && dpop {
        return Err(RegistrationError::metadata(
            "tls_client_certificate_bound_access_tokens and dpop_bound_access_tokens must not both be true: at most one proof-of-possession binding (RFC 8705 §3.4; RFC 9449 §5.2)",
        ));
    }
    if mtls || dpop {
        let member = if mtls {
            "tls_client_certificate_bound_access_tokens"
        } else {
            "dpop_bound_access_tokens"
        };
        if let Some(rt) = list(m, "response_types")
            .into_iter()
            .find(|rt| response_type_words(rt).contains(&"token"))
        {
            return Err(RegistrationError::metadata(format!(
                "{member} is true, but response_types includes {rt:?}: an access token issued by the authorization endpoint cannot be sender-constrained (RFC 8705 §3.4; RFC 9449 §5.2)"
            )));
        }
    }
    Ok(())
}

/// The hosts of `redirect_uris`, distinct, in order.
fn redirect_hosts(m: &Map<String, Value>) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for raw in list(m, "redirect_uris") {
        if let Some(h) = url::Url::parse(raw)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        {
            if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
    }
    hosts
}

/// OIDC Core §8.1, OIDC Registration §5: a pairwise client's sector is the host of its redirect
/// URIs; when they span several hosts, a `sector_identifier_uri` must name the sector. A pairwise
/// CIBA or device client without redirect URIs takes its sector from `jwks_uri` (CIBA Core §4,
/// node-oidc-provider), so it needs one of the two. (Fetching and checking the sector document
/// is a separate step.)
pub fn pairwise_sector_identifier(m: &mut Map<String, Value>, _: &MetadataSettings) -> Result<()> {
    if text(m, "subject_type") != Some("pairwise") || m.contains_key("sector_identifier_uri") {
        return Ok(());
    }
    let hosts = redirect_hosts(m);
    let backchannel = list(m, "grant_types")
        .into_iter()
        .find(|g| *g == CIBA_GRANT || *g == DEVICE_GRANT);
    if let Some(grant) = backchannel.filter(|_| hosts.is_empty()) {
        // No redirect URI to take the sector from: CIBA Core §4 uses the host of jwks_uri.
        if !m.contains_key("jwks_uri") {
            return Err(RegistrationError::metadata(format!(
                "sector_identifier_uri or jwks_uri is required for a pairwise client using {grant:?} without redirect_uris: its sector is taken from one of them (OIDC Core §8.1; CIBA Core §4)"
            )));
        }
    }
    if hosts.len() > 1 {
        return Err(RegistrationError::metadata(format!(
            "sector_identifier_uri is required for a pairwise client whose redirect_uris span several hosts ({}) (OIDC Core §8.1; OIDC Registration §5)",
            hosts.join(", ")
        )));
    }
    Ok(())
}

/// The device authorization grant type (RFC 8628 §3.4).
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The CIBA grant type (CIBA Core §4).
pub const CIBA_GRANT: &str = "urn:openid:params:grant-type:ciba";

/// CIBA Core §4: `backchannel_token_delivery_mode` is required with the CIBA grant;
/// `backchannel_client_notification_endpoint` is required for `ping` and `push`; a signed
/// authentication request uses an asymmetric algorithm.
pub fn ciba(m: &mut Map<String, Value>, _: &MetadataSettings) -> Result<()> {
    if let Some(alg) = text(m, "backchannel_authentication_request_signing_alg") {
        if !is_asymmetric_alg(alg) {
            return Err(RegistrationError::metadata(format!(
                "backchannel_authentication_request_signing_alg {alg:?} is not allowed: CIBA requires an asymmetric algorithm (CIBA Core §4)"
            )));
        }
    }
    if !list(m, "grant_types").contains(&CIBA_GRANT) {
        return Ok(());
    }
    match text(m, "backchannel_token_delivery_mode") {
        None => Err(RegistrationError::metadata(format!(
            "backchannel_token_delivery_mode is required because grant_types includes {CIBA_GRANT:?} (CIBA Core §4)"
        ))),
        Some(mode @ ("ping" | "push"))
            if !m.contains_key("backchannel_client_notification_endpoint") =>
        {
            Err(RegistrationError::metadata(format!(
                "backchannel_client_notification_endpoint is required because backchannel_token_delivery_mode is {mode:?} (CIBA Core §4)"
            )))
        }
        Some(_) => Ok(()),
    }
}

/// JARM §3 (node-oidc-provider): an encrypted authorization response is a signed one, encrypted;
/// `authorization_encrypted_response_alg` therefore needs `authorization_signed_response_alg`.
pub fn jarm_encryption_needs_signing(
    m: &mut Map<String, Value>,
    _: &MetadataSettings,
) -> Result<()> {
    if m.contains_key("authorization_encrypted_response_alg")
        && !m.contains_key("authorization_signed_response_alg")
    {
        return Err(RegistrationError::metadata(
            "authorization_encrypted_response_alg requires authorization_signed_response_alg: JARM responses are signed, then encrypted (JARM §3)",
        ));
    }
    Ok(())
}

/// Every member whose value is a JOSE algorithm that needs the plaintext `client_secret`
/// (HS* signatures, `dir`/`A*KW`/`A*GCMKW`/`PBES2-*` encryption; OIDC Core §10.1, §10.2).
pub const SECRET_KEYED_ALG_FIELDS: &[&str] = &[
    "id_token_signed_response_alg",
    "id_token_encrypted_response_alg",
    "userinfo_signed_response_alg",
    "userinfo_encrypted_response_alg",
    "request_object_signing_alg",
    "request_object_encryption_alg",
    "token_endpoint_auth_signing_alg",
    "authorization_signed_response_alg",
    "authorization_encrypted_response_alg",
    "introspection_signed_response_alg",
    "introspection_encrypted_response_alg",
];

/// Symmetric algorithms (HS*, `dir`, `A*KW`, `A*GCMKW`, `PBES2-*`) are keyed with the client
/// secret (OIDC Core §10.1, §10.2), so they need a method that issues one. (Whether the server
/// can recover secrets at all is settled by configuration: these values are only in the
/// supported lists when recoverable secrets are enabled.)
pub fn symmetric_algs_need_secret(m: &mut Map<String, Value>, _: &MetadataSettings) -> Result<()> {
    let method = text(m, "token_endpoint_auth_method").unwrap_or_default();
    if super::schema::uses_client_secret(method) {
        return Ok(());
    }
    for field in SECRET_KEYED_ALG_FIELDS {
        if let Some(alg) = text(m, field).filter(|a| super::schema::is_secret_keyed(a)) {
            return Err(RegistrationError::metadata(format!(
                "{field} {alg:?} is keyed with the client_secret, but token_endpoint_auth_method {method:?} issues none (OIDC Core §10.1, §10.2)"
            )));
        }
    }
    Ok(())
}

/// Whether the registered metadata needs a `client_secret` the server can recover in plaintext
/// (`client_secret_jwt`, or any secret-keyed algorithm).
pub fn needs_recoverable_secret(m: &Map<String, Value>) -> bool {
    text(m, "token_endpoint_auth_method") == Some("client_secret_jwt")
        || SECRET_KEYED_ALG_FIELDS
            .iter()
            .any(|f| text(m, f).is_some_and(super::schema::is_secret_keyed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RegistrationError as E;
    use crate::settings::Settings;
    use serde_json::json;

    fn settings() -> MetadataSettings {
        Settings::defaults().unwrap().metadata
    }

    fn run(
        rule: fn(&mut Map<String, Value>, &MetadataSettings) -> Result<()>,
        v: Value,
    ) -> std::result::Result<Map<String, Value>, String> {
        let mut m = v.as_object().unwrap().clone();
        match rule(&mut m, &settings()) {
            Ok(()) => Ok(m),
            Err(E::InvalidClientMetadata(d)) => Err(format!("metadata: {d}")),
            Err(E::InvalidRedirectUri(d)) => Err(format!("redirect: {d}")),
            Err(e) => Err(format!("other: {e}")),
        }
    }

    const JWKS: &str = r#"{"keys":[]}"#;

    #[test]
    fn grant_types_are_derived_from_response_types_and_back() {
        let m = run(
            grant_and_response_types,
            json!({"response_types":["code id_token"]}),
        )
        .unwrap();
        assert_eq!(m["grant_types"], json!(["authorization_code", "implicit"]));
        let m = run(
            grant_and_response_types,
            json!({"grant_types":["client_credentials"]}),
        )
        .unwrap();
        assert_eq!(m["response_types"], json!([]));
        let m = run(grant_and_response_types, json!({"response_types":["none"]})).unwrap();
        assert_eq!(m["grant_types"], json!(["authorization_code"]));
        let e = run(
            grant_and_response_types,
            json!({"grant_types":["authorization_code"],"response_types":["token"]}),
        )
        .unwrap_err();
        assert!(e.contains("implicit") && e.contains("RFC 7591 §2.1"), "{e}");
    }

    #[test]
    fn redirect_uris_are_required_for_redirect_based_response_types() {
        let e = run(redirect_uris_required, json!({"response_types":["code"]})).unwrap_err();
        assert!(e.starts_with("redirect: redirect_uris is required"), "{e}");
        assert!(run(
            redirect_uris_required,
            json!({"response_types":["code"],"redirect_uris":[]})
        )
        .is_err());
        assert!(run(redirect_uris_required, json!({"response_types":[]})).is_ok());
        assert!(run(
            redirect_uris_required,
            json!({"response_types":["code"],"redirect_uris":["https://c.example/cb"]})
        )
        .is_ok());
    }

    #[test]
    fn jwks_and_jwks_uri_are_exclusive() {
        let e = run(
            jwks_xor_jwks_uri,
            json!({"jwks":{"keys":[]},"jwks_uri":"https://c.example/jwks"}),
        )
        .unwrap_err();
        assert!(e.contains("jwks and jwks_uri"), "{e}");
        assert!(run(
            jwks_xor_jwks_uri,
            json!({"jwks_uri":"https://c.example/jwks"})
        )
        .is_ok());
    }

    #[test]
    fn keys_are_required_for_key_based_methods_and_algs() {
        for v in [
            json!({"token_endpoint_auth_method":"private_key_jwt"}),
            json!({"token_endpoint_auth_method":"self_signed_tls_client_auth"}),
            json!({"request_object_signing_alg":"ES256"}),
            json!({"backchannel_authentication_request_signing_alg":"PS256"}),
            json!({"id_token_encrypted_response_alg":"RSA-OAEP"}),
            json!({"userinfo_encrypted_response_alg":"ECDH-ES+A128KW"}),
            json!({"authorization_encrypted_response_alg":"RSA-OAEP-256"}),
            json!({"introspection_encrypted_response_alg":"ECDH-ES"}),
        ] {
            let e = run(keys_required, v.clone()).unwrap_err();
            assert!(
                e.starts_with("metadata: jwks or jwks_uri is required"),
                "{e}"
            );
            let mut with_keys = v.clone();
            with_keys["jwks_uri"] = json!("https://c.example/jwks");
            assert!(run(keys_required, with_keys).is_ok(), "{v}");
            let mut with_jwks = v;
            with_jwks["jwks"] = serde_json::from_str(JWKS).unwrap();
            assert!(run(keys_required, with_jwks).is_ok());
        }
        // Symmetric request objects and server-side request object decryption need no keys.
        assert!(run(keys_required, json!({"request_object_signing_alg":"HS256"})).is_ok());
        assert!(run(
            keys_required,
            json!({"request_object_encryption_alg":"RSA-OAEP"})
        )
        .is_ok());
        assert!(run(
            keys_required,
            json!({"id_token_encrypted_response_alg":"A128KW"})
        )
        .is_ok());
    }

    #[test]
    fn tls_client_auth_needs_exactly_one_subject_and_others_drop_them() {
        let e = run(
            tls_client_auth_subject,
            json!({"token_endpoint_auth_method":"tls_client_auth"}),
        )
        .unwrap_err();
        assert!(e.contains("exactly one"), "{e}");
        let e = run(
            tls_client_auth_subject,
            json!({"token_endpoint_auth_method":"tls_client_auth","tls_client_auth_san_dns":"a","tls_client_auth_san_ip":"1.2.3.4"}),
        )
        .unwrap_err();
        assert!(
            e.contains("tls_client_auth_san_dns, tls_client_auth_san_ip"),
            "{e}"
        );
        let m = run(
            tls_client_auth_subject,
            json!({"token_endpoint_auth_method":"tls_client_auth","tls_client_auth_subject_dn":"CN=a"}),
        )
        .unwrap();
        assert_eq!(m["tls_client_auth_subject_dn"], "CN=a");
        let m = run(
            tls_client_auth_subject,
            json!({"token_endpoint_auth_method":"private_key_jwt","tls_client_auth_subject_dn":"CN=a"}),
        )
        .unwrap();
        assert!(!m.contains_key("tls_client_auth_subject_dn"));
    }

    #[test]
    fn id_token_none_only_without_id_token_from_the_authorization_endpoint() {
        assert!(run(
            id_token_alg_none,
            json!({"id_token_signed_response_alg":"none","response_types":["code"]})
        )
        .is_ok());
        let e = run(id_token_alg_none, json!({"id_token_signed_response_alg":"none","response_types":["code","code id_token"]})).unwrap_err();
        assert!(e.contains("\"code id_token\""), "{e}");
        assert!(run(
            id_token_alg_none,
            json!({"id_token_signed_response_alg":"RS256","response_types":["id_token"]})
        )
        .is_ok());
    }

    #[test]
    fn token_endpoint_auth_signing_alg_matches_the_method() {
        let ok = |method: &str, alg: &str| {
            run(
                token_endpoint_auth_signing_alg,
                json!({"token_endpoint_auth_method":method,"token_endpoint_auth_signing_alg":alg}),
            )
            .is_ok()
        };
        assert!(ok("private_key_jwt", "ES256"));
        assert!(ok("client_secret_jwt", "HS256"));
        assert!(!ok("private_key_jwt", "HS256"));
        assert!(!ok("client_secret_jwt", "RS256"));
        assert!(!ok("private_key_jwt", "none"));
        assert!(!ok("client_secret_basic", "RS256"));
        assert!(run(
            token_endpoint_auth_signing_alg,
            json!({"token_endpoint_auth_method":"none"})
        )
        .is_ok());
    }

    #[test]
    fn at_most_one_proof_of_possession_and_never_with_token() {
        let e = run(
            one_proof_of_possession,
            json!({"tls_client_certificate_bound_access_tokens":true,"dpop_bound_access_tokens":true}),
        )
        .unwrap_err();
        assert!(e.contains("at most one"), "{e}");
        let e = run(
            one_proof_of_possession,
            json!({"dpop_bound_access_tokens":true,"response_types":["code token"]}),
        )
        .unwrap_err();
        assert!(
            e.contains("dpop_bound_access_tokens") && e.contains("\"code token\""),
            "{e}"
        );
        assert!(run(
            one_proof_of_possession,
            json!({"dpop_bound_access_tokens":true,"tls_client_certificate_bound_access_tokens":false,"response_types":["code id_token"]})
        )
        .is_ok());
        assert!(run(one_proof_of_possession, json!({"response_types":["token"]})).is_ok());
    }

    #[test]
    fn pairwise_clients_on_several_hosts_need_a_sector_identifier_uri() {
        let two = json!({"subject_type":"pairwise","redirect_uris":["https://a.example/cb","https://B.example/cb"]});
        let e = run(pairwise_sector_identifier, two.clone()).unwrap_err();
        assert!(e.contains("a.example, b.example"), "{e}");
        let mut with = two.clone();
        with["sector_identifier_uri"] = json!("https://a.example/sector.json");
        assert!(run(pairwise_sector_identifier, with).is_ok());
        let mut public = two;
        public["subject_type"] = json!("public");
        assert!(run(pairwise_sector_identifier, public).is_ok());
        assert!(run(
            pairwise_sector_identifier,
            json!({"subject_type":"pairwise","redirect_uris":["https://a.example/1","https://a.example:444/2"]})
        )
        .is_ok());
        let device = json!({"subject_type":"pairwise","grant_types":[DEVICE_GRANT]});
        let e = run(pairwise_sector_identifier, device.clone()).unwrap_err();
        assert!(e.contains("jwks_uri"), "{e}");
        let mut with_jwks_uri = device;
        with_jwks_uri["jwks_uri"] = json!("https://a.example/jwks");
        assert!(run(pairwise_sector_identifier, with_jwks_uri).is_ok());
    }

    #[test]
    fn ciba_needs_a_delivery_mode_and_an_endpoint_for_ping_and_push() {
        let e = run(ciba, json!({"grant_types":[CIBA_GRANT]})).unwrap_err();
        assert!(
            e.contains("backchannel_token_delivery_mode is required"),
            "{e}"
        );
        assert!(run(
            ciba,
            json!({"grant_types":[CIBA_GRANT],"backchannel_token_delivery_mode":"poll"})
        )
        .is_ok());
        for mode in ["ping", "push"] {
            let e = run(
                ciba,
                json!({"grant_types":[CIBA_GRANT],"backchannel_token_delivery_mode":mode}),
            )
            .unwrap_err();
            assert!(
                e.contains("backchannel_client_notification_endpoint is required"),
                "{e}"
            );
            assert!(run(
                ciba,
                json!({"grant_types":[CIBA_GRANT],"backchannel_token_delivery_mode":mode,"backchannel_client_notification_endpoint":"https://c.example/n"})
            )
            .is_ok());
        }
        assert!(run(
            ciba,
            json!({"backchannel_authentication_request_signing_alg":"HS256"})
        )
        .is_err());
    }

    #[test]
    fn jarm_encryption_needs_the_signed_alg() {
        assert!(run(
            jarm_encryption_needs_signing,
            json!({"authorization_encrypted_response_alg":"RSA-OAEP"})
        )
        .is_err());
        assert!(run(
            jarm_encryption_needs_signing,
            json!({"authorization_encrypted_response_alg":"RSA-OAEP","authorization_signed_response_alg":"RS256"})
        )
        .is_ok());
    }

    #[test]
    fn enc_needs_alg_and_defaults_to_a128cbc_hs256() {
        let m = run(
            encryption_enc_needs_alg,
            json!({"userinfo_encrypted_response_alg":"RSA-OAEP"}),
        )
        .unwrap();
        assert_eq!(m["userinfo_encrypted_response_enc"], "A128CBC-HS256");
        assert!(run(
            encryption_enc_needs_alg,
            json!({"id_token_encrypted_response_enc":"A256GCM"})
        )
        .is_err());
    }

    #[test]
    fn symmetric_algs_need_a_secret_based_method() {
        let e = run(
            symmetric_algs_need_secret,
            json!({"token_endpoint_auth_method":"none","id_token_signed_response_alg":"HS256"}),
        )
        .unwrap_err();
        assert!(e.contains("id_token_signed_response_alg"), "{e}");
        assert!(run(
            symmetric_algs_need_secret,
            json!({"token_endpoint_auth_method":"private_key_jwt","userinfo_encrypted_response_alg":"A128KW"})
        )
        .is_err());
        assert!(run(
            symmetric_algs_need_secret,
            json!({"token_endpoint_auth_method":"client_secret_basic","id_token_signed_response_alg":"HS256"})
        )
        .is_ok());
        assert!(needs_recoverable_secret(
            json!({"token_endpoint_auth_method":"client_secret_basic","id_token_signed_response_alg":"HS256"}).as_object().unwrap()
        ));
        assert!(needs_recoverable_secret(
            json!({"token_endpoint_auth_method":"client_secret_jwt"})
                .as_object()
                .unwrap()
        ));
        assert!(!needs_recoverable_secret(
            json!({"token_endpoint_auth_method":"client_secret_basic","id_token_encrypted_response_alg":"ECDH-ES+A128KW"}).as_object().unwrap()
        ));
    }

    #[test]
    fn redirect_uris_follow_the_application_type() {
        let check = |app: &str, uri: &str, grants: Value| {
            run(
                redirect_uris_by_application_type,
                json!({"application_type":app,"grant_types":grants,"redirect_uris":[uri]}),
            )
        };
        let code = json!(["authorization_code"]);
        let implicit = json!(["implicit"]);
        assert!(check("web", "https://c.example/cb", code.clone()).is_ok());
        let e = check("web", "http://c.example/cb", code.clone()).unwrap_err();
        assert!(
            e.starts_with("redirect:") && e.contains("not loopback"),
            "{e}"
        );
        // Code-flow web clients on loopback, any port or none (MCP hosts, Claude Code).
        for uri in [
            "http://127.0.0.1:8080/cb",
            "http://localhost:8080/callback",
            "http://localhost/callback",
            "http://[::1]:3000/cb",
        ] {
            assert!(check("web", uri, code.clone()).is_ok(), "{uri}");
        }
        let e = check("web", "http://a.localhost/cb", code.clone()).unwrap_err();
        assert!(e.contains("not loopback"), "{e}");
        // Private-use schemes for code-flow web clients (Cursor, Windsurf).
        assert!(check("web", "com.example.app:/cb", code.clone()).is_ok());
        assert!(check(
            "web",
            "cursor://anysphere.cursor-retrieval/oauth/callback",
            code.clone()
        )
        .is_ok());
        let e = check("web", "cursor:", code.clone()).unwrap_err();
        assert!(e.contains("no path") && e.contains("RFC 8252 §7.1"), "{e}");
        let e = check("native", "com.example.app://", code.clone()).unwrap_err();
        assert!(e.contains("no path"), "{e}");
        // Implicit web clients: https only, never localhost, each refusal citing OIDC Reg §2.
        for uri in [
            "https://localhost/cb",
            "http://127.0.0.1/cb",
            "http://localhost/cb",
            "com.example.app:/cb",
        ] {
            let e = check("web", uri, implicit.clone()).unwrap_err();
            assert!(
                e.contains("implicit grant") && e.contains("(OIDC Registration §2"),
                "{uri}: {e}"
            );
        }
        assert!(check("native", "http://127.0.0.1:51004/cb", code.clone()).is_ok());
        assert!(check("native", "http://[::1]/cb", code.clone()).is_ok());
        assert!(check("native", "http://localhost/cb", code.clone()).is_ok());
        assert!(check("native", "http://c.example/cb", code.clone()).is_err());
        assert!(check("native", "https://c.example/cb", code.clone()).is_ok());
        assert!(check("native", "https://127.0.0.1/cb", code.clone()).is_err());
        assert!(check("native", "com.example.app:/cb", code).is_ok());
    }

    #[test]
    fn stricter_web_redirect_rules_when_the_operator_switches_them_off() {
        let mut s = settings();
        s.allow_http_loopback_redirects_for_web = false;
        s.allow_private_use_schemes_for_web = false;
        let check = |uri: &str| {
            let mut m = json!({"grant_types":["authorization_code"],"redirect_uris":[uri]})
                .as_object()
                .unwrap()
                .clone();
            redirect_uris_by_application_type(&mut m, &s).map_err(|e| e.to_string())
        };
        let e = check("http://localhost:3000/cb").unwrap_err();
        assert!(e.contains("allow_http_loopback_redirects_for_web"), "{e}");
        let e = check("cursor://oauth/callback").unwrap_err();
        assert!(
            e.contains("allow_private_use_schemes_for_web") && e.contains("native"),
            "{e}"
        );
        assert!(check("https://c.example/cb").is_ok());
    }
}
