//! JWK Set checks for the `jwks` member (RFC 7591 §2; RFC 7517 §4–5): public keys only, the
//! members each key type needs, unique `kid`s.

use jsonwebtoken::jwk::JwkSet;
use serde_json::Value;

/// Members that only private or symmetric keys have (RFC 7518 §6.2.2, §6.3.2, §6.4.1; RFC 8037).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Check a JWK Set value; the error text names the key and the problem.
pub fn check(v: &Value) -> Result<(), String> {
    let obj = v
        .as_object()
        .ok_or("must be a JWK Set object {\"keys\": [...]}")?;
    let keys = obj
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("must have a \"keys\" array")?;
    if keys.is_empty() {
        return Err("\"keys\" must not be empty".into());
    }
    if keys.len() > super::validate::MAX_ITEMS {
        return Err("has too many keys".into());
    }
    let mut kids: Vec<&str> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let key = key
            .as_object()
            .ok_or_else(|| format!("keys[{i}] must be an object"))?;
        let kty = key
            .get("kty")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("keys[{i}] has no \"kty\""))?;
        if let Some(member) = PRIVATE_MEMBERS.iter().find(|m| key.contains_key(**m)) {
            return Err(format!(
                "keys[{i}] contains the private member {member:?}; register public keys only"
            ));
        }
        let required: &[&str] = match kty {
            "RSA" => &["n", "e"],
            "EC" => &["crv", "x", "y"],
            "OKP" => &["crv", "x"],
            "oct" => {
                return Err(format!(
                    "keys[{i}] is a symmetric (\"oct\") key; register public keys only"
                ))
            }
            other => return Err(format!("keys[{i}] has unsupported kty {other:?}")),
        };
        for m in required {
            if !key.get(*m).is_some_and(Value::is_string) {
                return Err(format!("keys[{i}] ({kty}) is missing the member {m:?}"));
            }
        }
        if let Some(crv) = key.get("crv") {
            let allowed: &[&str] = match kty {
                "EC" => &["P-256", "P-384", "P-521", "secp256k1"],
                _ => &["Ed25519", "Ed448", "X25519", "X448"],
            };
            if !crv.as_str().is_some_and(|c| allowed.contains(&c)) {
                return Err(format!(
                    "keys[{i}] ({kty}) has an unsupported crv {crv}; use one of {}",
                    allowed.join(", ")
                ));
            }
        }
        // RFC 7517 §4.2, §4.4: `use` is "sig" or "enc", and `alg` must fit the key type.
        if let Some(u) = key.get("use") {
            if !matches!(u.as_str(), Some("sig" | "enc")) {
                return Err(format!("keys[{i}].use must be \"sig\" or \"enc\", not {u}"));
            }
        }
        if let Some(alg) = key.get("alg") {
            let alg = alg
                .as_str()
                .ok_or_else(|| format!("keys[{i}].alg must be a string"))?;
            let fits = match kty {
                "RSA" => alg.starts_with("RS") || alg.starts_with("PS") || alg.starts_with("RSA"),
                "EC" => alg.starts_with("ES") || alg.starts_with("ECDH-ES"),
                _ => {
                    alg == "EdDSA"
                        || alg == "Ed25519"
                        || alg == "Ed448"
                        || alg.starts_with("ECDH-ES")
                }
            };
            if !fits {
                return Err(format!(
                    "keys[{i}].alg {alg:?} cannot be used with a {kty} key (RFC 7517 §4.4)"
                ));
            }
        }
        if let Some(kid) = key.get("kid") {
            let kid = kid
                .as_str()
                .ok_or_else(|| format!("keys[{i}].kid must be a string"))?;
            if kids.contains(&kid) {
                return Err(format!("kid {kid:?} is used by more than one key"));
            }
            kids.push(kid);
        }
    }
    // Let jsonwebtoken parse it too, so every key we store is one it can later use.
    serde_json::from_value::<JwkSet>(v.clone())
        .map_err(|e| format!("is not a valid JWK Set ({e})"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ec() -> Value {
        json!({"kty":"EC","crv":"P-256","kid":"a","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})
    }

    #[test]
    fn accepts_public_keys() {
        assert_eq!(check(&json!({"keys":[ec()]})), Ok(()));
    }

    #[test]
    fn refuses_private_symmetric_incomplete_and_duplicate_keys() {
        let mut private = ec();
        private["d"] = json!("jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI");
        assert!(check(&json!({"keys":[private]}))
            .unwrap_err()
            .contains("private member"));
        assert!(check(&json!({"keys":[{"kty":"oct","k":"abc"}]})).is_err());
        assert!(check(&json!({"keys":[{"kty":"EC","crv":"P-256","x":"a"}]}))
            .unwrap_err()
            .contains("\"y\""));
        assert!(check(&json!({"keys":[ec(), ec()]}))
            .unwrap_err()
            .contains("more than one"));
        assert!(check(&json!({"keys":[]})).is_err());
        let mut wrong_alg = ec();
        wrong_alg["alg"] = json!("RS256");
        assert!(check(&json!({"keys":[wrong_alg]}))
            .unwrap_err()
            .contains("RS256"));
        let mut wrong_use = ec();
        wrong_use["use"] = json!("both");
        assert!(check(&json!({"keys":[wrong_use]}))
            .unwrap_err()
            .contains("use"));
        let mut wrong_crv = ec();
        wrong_crv["crv"] = json!("P-192");
        assert!(check(&json!({"keys":[wrong_crv]}))
            .unwrap_err()
            .contains("crv"));
        let mut fine = ec();
        fine["alg"] = json!("ES256");
        fine["use"] = json!("sig");
        assert_eq!(check(&json!({"keys":[fine]})), Ok(()));
        assert!(check(&json!([1])).is_err());
    }
}
