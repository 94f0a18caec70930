//! Verification of JWTs from trusted issuers: JWT initial access tokens and software statements
//! (RFC 7591 §2.3). jsonwebtoken checks only the signature; every time claim is checked here
//! against the injected clock, because jsonwebtoken would read the system clock.

use super::config::TrustedIssuer;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::str::FromStr;

/// Why a JWT was refused. The variants decide between "invalid" and "unapproved" errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtError {
    /// Not a compact JWS with a JSON object payload, or a claim of the wrong type.
    Malformed(String),
    /// `iss` missing or not a configured issuer.
    UntrustedIssuer(String),
    /// The signature did not verify, or the algorithm is not allowed.
    Signature(String),
    /// `exp`, `nbf` or `iat` out of range.
    Time(String),
    /// `aud` does not name us.
    Audience(String),
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(m)
            | Self::UntrustedIssuer(m)
            | Self::Signature(m)
            | Self::Time(m)
            | Self::Audience(m) => f.write_str(m),
        }
    }
}

struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// A trusted issuer with its keys parsed and algorithms checked.
pub struct Issuer {
    /// The exact `iss` value.
    pub issuer: String,
    /// Policy of the tier this issuer admits; `None` = no policy.
    pub policy: Option<String>,
    /// Refuse a `jti` seen before.
    pub reject_replayed_jti: bool,
    keys: Vec<Key>,
    algorithms: Vec<Algorithm>,
    audience: Option<String>,
    typ: Option<String>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.issuer)
            .field("keys", &self.keys.len())
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

impl Issuer {
    /// Compile a configured issuer. Refuses `none`, every HS* algorithm (a public key must never
    /// be usable as an HMAC secret) and symmetric (`oct`) keys.
    pub fn compile(config: &TrustedIssuer) -> Result<Self, String> {
        let name = &config.issuer;
        if name.is_empty() {
            return Err("a trusted issuer has an empty `issuer`".into());
        }
        let mut algorithms = Vec::new();
        for alg in &config.algorithms {
            let parsed = Algorithm::from_str(alg)
                .ok()
                .filter(|a| ASYMMETRIC.contains(a))
                .ok_or_else(|| {
                    format!("issuer {name}: algorithm {alg:?} is not allowed (asymmetric JWS algorithms only)")
                })?;
            algorithms.push(parsed);
        }
        if algorithms.is_empty() {
            return Err(format!("issuer {name}: no algorithms"));
        }
        let jwks = if !config.jwks.is_empty() {
            Value::Object(config.jwks.clone())
        } else if !config.jwks_file.is_empty() {
            let text = std::fs::read_to_string(&config.jwks_file)
                .map_err(|e| format!("issuer {name}: jwks_file {}: {e}", config.jwks_file))?;
            serde_json::from_str(&text)
                .map_err(|e| format!("issuer {name}: jwks_file {}: {e}", config.jwks_file))?
        } else {
            return Err(format!("issuer {name}: set `jwks` or `jwks_file`"));
        };
        let set: JwkSet = serde_json::from_value(jwks)
            .map_err(|e| format!("issuer {name}: not a JWK Set: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                return Err(format!(
                    "issuer {name}: symmetric (oct) keys are not accepted"
                ));
            }
            if jwk.common.public_key_use == Some(jsonwebtoken::jwk::PublicKeyUse::Encryption) {
                continue; // encryption keys never verify signatures
            }
            let alg = match jwk.common.key_algorithm {
                Some(ka) => match Algorithm::from_str(&format!("{ka:?}")) {
                    Ok(a) => Some(a),
                    Err(_) => continue, // e.g. RSA-OAEP: not a signing key
                },
                None => None,
            };
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| format!("issuer {name}: unusable key: {e}"))?;
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            });
        }
        if keys.is_empty() {
            return Err(format!("issuer {name}: the JWK Set has no keys"));
        }
        Ok(Self {
            issuer: name.clone(),
            policy: (!config.policy.is_empty()).then(|| config.policy.clone()),
            reject_replayed_jti: config.reject_replayed_jti,
            keys,
            algorithms,
            audience: (!config.audience.is_empty()).then(|| config.audience.clone()),
            typ: (!config.typ.is_empty()).then(|| config.typ.clone()),
        })
    }

    /// Verify `token`'s signature with this issuer's keys and its claims at time `now`.
    /// `require_exp`: initial access tokens must expire; software statements may not.
    pub fn verify(
        &self,
        token: &str,
        now: i64,
        leeway: i64,
        require_exp: bool,
    ) -> Result<Map<String, Value>, JwtError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| JwtError::Malformed("malformed JWT header".into()))?;
        refuse_critical_extensions(token)?;
        if let Some(expected) = &self.typ {
            let matches = header.typ.as_deref().is_some_and(|t| same_typ(t, expected));
            if !matches {
                return Err(JwtError::Malformed(format!(
                    "the JWT header typ must be {expected:?} for issuer {}",
                    self.issuer
                )));
            }
        }
        if !self.algorithms.contains(&header.alg) {
            return Err(JwtError::Signature(format!(
                "algorithm {:?} is not accepted from issuer {}",
                header.alg, self.issuer
            )));
        }
        let mut validation = Validation::new(header.alg);
        // Claims are checked below against the injected clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        let candidates = self
            .keys
            .iter()
            .filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid);
        let mut claims = None;
        for key in candidates {
            if key.alg.is_some_and(|a| a != header.alg) {
                continue;
            }
            if let Ok(data) =
                jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            {
                claims = Some(data.claims);
                break;
            }
        }
        let claims = claims.ok_or_else(|| {
            JwtError::Signature(format!(
                "the signature does not verify with any key of issuer {}",
                self.issuer
            ))
        })?;
        check_claims(&claims, now, leeway, require_exp, self.audience.as_deref())?;
        Ok(claims)
    }
}

/// RFC 7515 §4.1.11: a recipient MUST reject a JWS whose `crit` lists an extension it does not
/// understand, and this one understands none (RFC 7797 `b64` included: an unencoded payload
/// would be verified as if it were encoded). A `b64` member outside `crit` is refused too,
/// rather than guessing what the signer meant.
fn refuse_critical_extensions(token: &str) -> Result<(), JwtError> {
    let header = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwtError::Malformed("malformed JWT header".into()))?;
    let header: Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|_| JwtError::Malformed("malformed JWT header".into()))?;
    if header.contains_key("crit") {
        return Err(JwtError::Malformed(
            "the JWT header lists critical extensions (crit), none of which this server understands (RFC 7515 §4.1.11)".into(),
        ));
    }
    if header.contains_key("b64") {
        return Err(JwtError::Malformed(
            "the JWT header carries b64 (RFC 7797), which this server does not support".into(),
        ));
    }
    Ok(())
}

/// RFC 7515 §4.1.9: `typ` is compared case-insensitively, and `application/` may be omitted.
fn same_typ(presented: &str, expected: &str) -> bool {
    let bare = |t: &str| {
        let lower = t.to_ascii_lowercase();
        lower
            .strip_prefix("application/")
            .map(str::to_owned)
            .unwrap_or(lower)
    };
    bare(presented) == bare(expected)
}

fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| JwtError::Malformed(format!("claim {name} must be a number"))),
    }
}

/// RFC 7519 §4.1.3–4.1.6 with `leeway` seconds of tolerance.
fn check_claims(
    claims: &Map<String, Value>,
    now: i64,
    leeway: i64,
    require_exp: bool,
    audience: Option<&str>,
) -> Result<(), JwtError> {
    match time_claim(claims, "exp")? {
        Some(exp) if exp.saturating_add(leeway) <= now => {
            return Err(JwtError::Time("the JWT has expired (exp)".into()))
        }
        None if require_exp => return Err(JwtError::Time("the JWT has no exp claim".into())),
        _ => {}
    }
    if let Some(nbf) = time_claim(claims, "nbf")? {
        if nbf > now.saturating_add(leeway) {
            return Err(JwtError::Time("the JWT is not valid yet (nbf)".into()));
        }
    }
    if let Some(iat) = time_claim(claims, "iat")? {
        if iat > now.saturating_add(leeway) {
            return Err(JwtError::Time(
                "the JWT was issued in the future (iat)".into(),
            ));
        }
    }
    if let Some(expected) = audience {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => a == expected,
            Some(Value::Array(items)) => items.iter().any(|a| a.as_str() == Some(expected)),
            _ => false,
        };
        if !ok {
            return Err(JwtError::Audience(format!(
                "the JWT's aud does not include {expected}"
            )));
        }
    }
    Ok(())
}

/// The unverified `iss` of a compact JWS, to pick the issuer whose keys verify it. Nothing else
/// is read before the signature is checked.
pub fn peek_issuer(token: &str) -> Result<String, JwtError> {
    let malformed = || JwtError::Malformed("not a compact JWS (header.payload.signature)".into());
    let mut parts = token.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| malformed())?;
    let claims: Map<String, Value> = serde_json::from_slice(&bytes)
        .map_err(|_| JwtError::Malformed("the JWT payload is not a JSON object".into()))?;
    match claims.get("iss") {
        Some(Value::String(iss)) if !iss.is_empty() => Ok(iss.clone()),
        _ => Err(JwtError::UntrustedIssuer("the JWT has no iss claim".into())),
    }
}

/// The claims of a JWT verified earlier and kept server-side (a stored software statement).
pub fn unverified_claims(token: &str) -> crate::error::Result<Map<String, Value>> {
    let payload = token.split('.').nth(1).unwrap_or_default();
    URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            crate::error::RegistrationError::Internal("stored statement unreadable".into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn time_claims_use_the_given_clock_and_leeway() {
        let c = claims(serde_json::json!({"exp": 1000, "nbf": 900, "iat": 900}));
        assert!(check_claims(&c, 950, 0, true, None).is_ok());
        assert!(check_claims(&c, 1000, 0, true, None).is_err());
        assert!(check_claims(&c, 1005, 10, true, None).is_ok());
        assert!(check_claims(&c, 880, 0, true, None).is_err());
        assert!(check_claims(&c, 880, 30, true, None).is_ok());
        let no_exp = claims(serde_json::json!({}));
        assert!(check_claims(&no_exp, 1, 0, true, None).is_err());
        assert!(check_claims(&no_exp, 1, 0, false, None).is_ok());
    }

    #[test]
    fn audience_may_be_a_string_or_an_array() {
        let one = claims(serde_json::json!({"aud": "https://as"}));
        let many = claims(serde_json::json!({"aud": ["x", "https://as"]}));
        let other = claims(serde_json::json!({"aud": "https://other"}));
        assert!(check_claims(&one, 0, 0, false, Some("https://as")).is_ok());
        assert!(check_claims(&many, 0, 0, false, Some("https://as")).is_ok());
        assert!(check_claims(&other, 0, 0, false, Some("https://as")).is_err());
        assert!(check_claims(&other, 0, 0, false, None).is_ok());
    }

    #[test]
    fn hmac_and_none_are_refused_in_configuration() {
        for alg in ["HS256", "none", "HS512"] {
            let config = TrustedIssuer {
                issuer: "https://iss".into(),
                algorithms: vec![alg.into()],
                ..TrustedIssuer::default()
            };
            let err = Issuer::compile(&config).unwrap_err();
            assert!(err.contains("not allowed"), "{err}");
        }
    }

    #[test]
    fn symmetric_keys_are_refused_in_configuration() {
        let jwks = serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]});
        let config = TrustedIssuer {
            issuer: "https://iss".into(),
            jwks: jwks.as_object().unwrap().clone(),
            algorithms: vec!["ES256".into()],
            ..TrustedIssuer::default()
        };
        assert!(Issuer::compile(&config).unwrap_err().contains("symmetric"));
    }

    #[test]
    fn critical_extensions_are_refused() {
        let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let token = |h: Value| format!("{}.{}.sig", enc(h), enc(serde_json::json!({})));
        assert!(refuse_critical_extensions(&token(serde_json::json!({"alg": "ES256"}))).is_ok());
        for h in [
            serde_json::json!({"alg": "ES256", "crit": ["exp"], "exp": 1}),
            serde_json::json!({"alg": "ES256", "crit": ["b64"], "b64": false}),
            serde_json::json!({"alg": "ES256", "b64": false}),
        ] {
            assert!(
                matches!(
                    refuse_critical_extensions(&token(h.clone())),
                    Err(JwtError::Malformed(_))
                ),
                "{h}"
            );
        }
    }

    #[test]
    fn typ_compares_like_a_media_type() {
        assert!(same_typ("IAT+jwt", "iat+jwt"));
        assert!(same_typ("application/iat+jwt", "iat+jwt"));
        assert!(!same_typ("JWT", "iat+jwt"));
    }

    #[test]
    fn peek_reads_only_iss() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"iss":"https://a"}"#);
        assert_eq!(
            peek_issuer(&format!("e30.{payload}.sig")).unwrap(),
            "https://a"
        );
        assert!(matches!(peek_issuer("a.b"), Err(JwtError::Malformed(_))));
        let no_iss = URL_SAFE_NO_PAD.encode(b"{}");
        assert!(matches!(
            peek_issuer(&format!("e30.{no_iss}.sig")),
            Err(JwtError::UntrustedIssuer(_))
        ));
    }
}
