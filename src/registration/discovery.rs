//! Discovery documents (RFC 8414 §2; OpenID Connect Discovery 1.0 §3). Built from the same
//! settings the metadata engine validates against, so what is published is what is enforced.

use crate::settings::Settings;
use serde_json::{Map, Value};

/// The document served at both `/.well-known/openid-configuration` and
/// `/.well-known/oauth-authorization-server`.
pub fn document(settings: &Settings, registration_endpoint: &str) -> Map<String, Value> {
    let mut doc = Map::new();
    doc.insert("issuer".into(), Value::from(settings.issuer.clone()));
    doc.insert(
        "registration_endpoint".into(),
        Value::from(registration_endpoint),
    );
    if let Ok(Value::Object(lists)) = serde_json::to_value(&settings.metadata) {
        for (name, value) in lists {
            let is_published =
                name.ends_with("_supported") && value.as_array().is_some_and(|a| !a.is_empty());
            if is_published {
                doc.insert(name, value);
            }
        }
    }
    // Operator additions (authorization_endpoint, ...) never override what the registrar enforces.
    for (name, value) in &settings.discovery {
        doc.entry(name.clone()).or_insert_with(|| value.clone());
    }
    doc
}
