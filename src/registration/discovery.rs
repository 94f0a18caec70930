//! Discovery documents (RFC 8414 §2; OpenID Connect Discovery 1.0 §3). Built from the same
//! settings the metadata engine validates against, so what is published is what is enforced.
//!
//! The registrar is not the authorization server: the endpoints and keys that client libraries
//! require (`authorization_endpoint`, `token_endpoint`, `jwks_uri`, ...) come either from the
//! authorization server's own metadata (`discovery.authorization_server_metadata_url`, fetched
//! by [`super::upstream`]) or from members listed under `[discovery]`. Precedence, member by
//! member: what the registrar enforces (`issuer`, `registration_endpoint`, its `*_supported`
//! lists) > explicit `[discovery]` members > the fetched metadata.

use crate::settings::Settings;
use serde_json::{Map, Value};
use std::sync::{Arc, RwLock};

/// Fetched members never copied: the registrar's own `issuer` stays the documents' issuer, its
/// `registration_endpoint` is the one that registers, and a `signed_metadata` JWT (RFC 8414
/// §2.1) would assert values the documents no longer carry.
const NEVER_COPIED: &[&str] = &["issuer", "registration_endpoint", "signed_metadata"];

/// Lists where an empty `metadata.*_supported` means "any value" rather than "none": the
/// authorization server's list may be published for them (it restricts nothing the registrar
/// enforces).
const OPEN_WHEN_EMPTY: &[&str] = &[
    "scopes_supported",
    "acr_values_supported",
    "authorization_details_types_supported",
];

/// The PKCE member (RFC 8414 §2; RFC 7636). MCP requires it of the authorization server.
const PKCE: &str = "code_challenge_methods_supported";

/// RFC 8414 §2 defaults for lists an authorization server may omit.
const UPSTREAM_DEFAULTS: &[(&str, &[&str])] = &[
    ("grant_types_supported", &["authorization_code", "implicit"]),
    (
        "token_endpoint_auth_methods_supported",
        &["client_secret_basic"],
    ),
];

/// The paths both documents are served at for `issuer`: the root locations, and for an issuer
/// with a path (`https://host/tenant`) also the RFC 8414 §3.1 locations
/// (`/.well-known/oauth-authorization-server/tenant`, `/.well-known/openid-configuration/tenant`)
/// and the OpenID Connect Discovery §4.1 one (`/tenant/.well-known/openid-configuration`), which
/// are the three the MCP SDKs try in that order.
pub fn paths(issuer: &str) -> Vec<String> {
    let mut paths = vec![
        "/.well-known/openid-configuration".to_owned(),
        "/.well-known/oauth-authorization-server".to_owned(),
    ];
    let path = url::Url::parse(issuer)
        .map(|u| u.path().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    if !path.is_empty() {
        paths.extend([
            format!("/.well-known/oauth-authorization-server{path}"),
            format!("/.well-known/openid-configuration{path}"),
            format!("{path}/.well-known/openid-configuration"),
            format!("{path}/.well-known/oauth-authorization-server"),
        ]);
    }
    paths
}

/// Every `metadata.*_supported` list, empty ones included: the registrar decides those members.
fn enforced_lists(settings: &Settings) -> Map<String, Value> {
    match serde_json::to_value(&settings.metadata) {
        Ok(Value::Object(all)) => all
            .into_iter()
            .filter(|(name, value)| name.ends_with("_supported") && value.is_array())
            .collect(),
        _ => Map::new(),
    }
}

/// The document served at every path of [`paths`], with the authorization server's metadata
/// `upstream` when it has been fetched.
pub fn document(
    settings: &Settings,
    registration_endpoint: &str,
    upstream: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut doc = Map::new();
    doc.insert("issuer".into(), Value::from(settings.issuer.clone()));
    doc.insert(
        "registration_endpoint".into(),
        Value::from(registration_endpoint),
    );
    let enforced = enforced_lists(settings);
    for (name, value) in &enforced {
        if value.as_array().is_some_and(|a| !a.is_empty()) {
            doc.insert(name.clone(), value.clone());
        }
    }
    // The authorization server knows which PKCE methods its token endpoint verifies; the
    // configured list stands in until it says.
    let configured_pkce = &settings.discovery.code_challenge_methods_supported;
    match upstream.and_then(|u| u.get(PKCE)).filter(|v| v.is_array()) {
        Some(theirs) => {
            doc.insert(PKCE.into(), theirs.clone());
        }
        None if !configured_pkce.is_empty() => {
            doc.insert(PKCE.into(), Value::from(configured_pkce.clone()));
        }
        None => {}
    }
    let mut added = Map::new();
    for (name, value) in upstream.into_iter().flatten() {
        let open = OPEN_WHEN_EMPTY.contains(&name.as_str())
            && enforced
                .get(name)
                .and_then(Value::as_array)
                .is_some_and(|a| a.is_empty());
        let ours = NEVER_COPIED.contains(&name.as_str())
            || (enforced.contains_key(name) && !open)
            || doc.contains_key(name);
        if !ours {
            added.insert(name.clone(), value.clone());
        }
    }
    for (name, value) in &settings.discovery.members {
        added.insert(name.clone(), value.clone());
    }
    // Additions (fetched or configured) never override what the registrar enforces.
    for (name, value) in added {
        doc.entry(name).or_insert(value);
    }
    if settings.cimd.enabled {
        publish_cimd(&mut doc);
    }
    doc
}

/// Client ID Metadata Documents on (draft-ietf-oauth-client-id-metadata-document §6): say so,
/// and list `none`, the method of a document that declares none. MCP clients check both (with
/// `code_challenge_methods_supported`) before choosing a URL as `client_id`; Keycloak's
/// omission of `none` (keycloak#49730) made its CIMD unusable for them.
fn publish_cimd(doc: &mut Map<String, Value>) {
    doc.insert(
        "client_id_metadata_document_supported".into(),
        Value::Bool(true),
    );
    let methods = doc
        .entry("token_endpoint_auth_methods_supported")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = methods {
        if !list.iter().any(|m| m == "none") {
            list.push(Value::from("none"));
        }
    }
}

/// The members RFC 8414 §2, OpenID Connect Discovery §3 or MCP require that `doc` lacks, each
/// with the rule that requires it.
pub fn missing_members(doc: &Map<String, Value>) -> Vec<String> {
    let grants: Vec<&str> = doc
        .get("grant_types_supported")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_else(|| vec!["authorization_code", "implicit"]);
    let uses_authorization_endpoint = grants
        .iter()
        .any(|g| matches!(*g, "authorization_code" | "implicit"));
    let uses_token_endpoint = grants.iter().any(|g| *g != "implicit");
    let required: [(&str, bool, &str); 7] = [
        (
            "authorization_endpoint",
            uses_authorization_endpoint,
            "RFC 8414 §2; OIDC Discovery §3",
        ),
        (
            "token_endpoint",
            uses_token_endpoint,
            "RFC 8414 §2; OIDC Discovery §3",
        ),
        ("jwks_uri", true, "OIDC Discovery §3"),
        (
            "response_types_supported",
            true,
            "RFC 8414 §2; OIDC Discovery §3",
        ),
        ("subject_types_supported", true, "OIDC Discovery §3"),
        (
            "id_token_signing_alg_values_supported",
            true,
            "OIDC Discovery §3",
        ),
        (PKCE, true, "MCP authorization, RFC 8414 §2"),
    ];
    required
        .iter()
        .filter(|(name, needed, _)| *needed && !doc.contains_key(*name))
        .map(|(name, _, rule)| format!("{name} ({rule})"))
        .collect()
}

/// The start-up warning for an incomplete `doc`, if it is.
pub fn incomplete_warning(doc: &Map<String, Value>) -> Option<String> {
    let missing = missing_members(doc);
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "the discovery documents lack {}: client libraries that validate discovery — MCP SDKs, \
         openidconnect-rs — will refuse them; set discovery.authorization_server_metadata_url to \
         the authorization server's metadata, or add the members under [discovery]",
        missing.join(", ")
    ))
}

/// Warnings about fetched metadata: an issuer that differs from the registrar's, and each list
/// where the authorization server supports less than the registrar lets clients register.
pub fn upstream_warnings(settings: &Settings, upstream: &Map<String, Value>) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(theirs) = upstream.get("issuer").and_then(Value::as_str) {
        if theirs != settings.issuer {
            warnings.push(format!(
                "the authorization server's metadata has issuer {theirs:?}, the documents publish \
                 issuer {:?} (setting `issuer`); clients compare the issuer with the URL they \
                 fetched (RFC 8414 §3.3), so an operator publishing on the authorization server's \
                 behalf sets `issuer` to its issuer",
                settings.issuer
            ));
        }
    }
    for (name, ours) in enforced_lists(settings) {
        let ours: Vec<&str> = ours
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if ours.is_empty() {
            continue;
        }
        let theirs: Vec<&str> = match upstream.get(&name).and_then(Value::as_array) {
            Some(list) => list.iter().filter_map(Value::as_str).collect(),
            None => match UPSTREAM_DEFAULTS.iter().find(|(n, _)| *n == name) {
                Some((_, defaults)) => defaults.to_vec(),
                None => continue,
            },
        };
        let unusable: Vec<&str> = ours.into_iter().filter(|v| !theirs.contains(v)).collect();
        if !unusable.is_empty() {
            warnings.push(format!(
                "metadata.{name} allows {unusable:?}, which the authorization server's {name} \
                 does not list: clients could register them but never use them"
            ));
        }
    }
    warnings
}

/// The current documents, rebuilt whenever fresh authorization server metadata arrives.
pub struct Discovery {
    settings: Arc<Settings>,
    registration_endpoint: String,
    current: RwLock<Arc<Map<String, Value>>>,
}

impl Discovery {
    /// The documents before (or without) any fetched metadata.
    pub fn new(settings: Arc<Settings>, registration_endpoint: String) -> Self {
        let doc = document(&settings, &registration_endpoint, None);
        Self {
            settings,
            registration_endpoint,
            current: RwLock::new(Arc::new(doc)),
        }
    }

    /// The document to serve now.
    pub fn document(&self) -> Arc<Map<String, Value>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Publish the authorization server's metadata `upstream`; returns the warnings it gives
    /// rise to (issuer mismatch, narrower lists, members still missing).
    pub fn apply_upstream(&self, upstream: &Map<String, Value>) -> Vec<String> {
        let doc = document(&self.settings, &self.registration_endpoint, Some(upstream));
        let mut warnings = upstream_warnings(&self.settings, upstream);
        warnings.extend(incomplete_warning(&doc));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(doc);
        warnings
    }

    /// The warning for the current document, if it lacks required members.
    pub fn incomplete_warning(&self) -> Option<String> {
        incomplete_warning(&self.document())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> Settings {
        Settings::defaults()
            .unwrap()
            .with("issuer", "https://reg.example")
            .unwrap()
    }

    fn upstream() -> Map<String, Value> {
        json!({
            "issuer": "https://reg.example",
            "authorization_endpoint": "https://as.example/authorize",
            "token_endpoint": "https://as.example/token",
            "jwks_uri": "https://as.example/jwks",
            "userinfo_endpoint": "https://as.example/userinfo",
            "registration_endpoint": "https://as.example/register",
            "signed_metadata": "eyJ...",
            "response_types_supported": ["code", "id_token"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic"],
            "claims_supported": ["sub", "email"],
            "scopes_supported": ["openid", "mcp"],
            "id_token_encryption_alg_values_supported": ["RSA-OAEP"],
            "code_challenge_methods_supported": ["S256", "plain"]
        })
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn fetched_endpoints_are_published_with_the_registrars_own_lists() {
        let s = settings();
        let doc = document(&s, "https://reg.example/register", Some(&upstream()));
        assert_eq!(doc["issuer"], "https://reg.example");
        assert_eq!(doc["registration_endpoint"], "https://reg.example/register");
        assert_eq!(
            doc["authorization_endpoint"],
            "https://as.example/authorize"
        );
        assert_eq!(doc["userinfo_endpoint"], "https://as.example/userinfo");
        assert_eq!(doc["claims_supported"], json!(["sub", "email"]));
        assert_eq!(
            doc[PKCE],
            json!(["S256", "plain"]),
            "the AS's PKCE list wins"
        );
        assert!(!doc.contains_key("signed_metadata"));
        // An empty scope list restricts nothing, so the AS's is published; an alg list is
        // the registrar's (the default one here).
        assert_eq!(doc["scopes_supported"], json!(["openid", "mcp"]));
        assert_eq!(
            doc["id_token_encryption_alg_values_supported"],
            json!(s.metadata.id_token_encryption_alg_values_supported)
        );
        assert_eq!(
            doc["token_endpoint_auth_methods_supported"],
            json!(s.metadata.token_endpoint_auth_methods_supported),
            "the registrar's enforced list, not the AS's"
        );
        assert!(
            missing_members(&doc).is_empty(),
            "{:?}",
            missing_members(&doc)
        );
    }

    #[test]
    fn explicit_members_override_fetched_ones_but_not_enforced_ones() {
        let s = settings()
            .with("discovery.token_endpoint", "https://edge.example/token")
            .unwrap()
            .with("discovery.registration_endpoint", "https://x.example/")
            .unwrap()
            .with(
                "discovery.code_challenge_methods_supported",
                Vec::<String>::new(),
            )
            .unwrap();
        let doc = document(&s, "https://reg.example/register", Some(&upstream()));
        assert_eq!(doc["token_endpoint"], "https://edge.example/token");
        assert_eq!(doc["registration_endpoint"], "https://reg.example/register");
        let alone = document(&s, "https://reg.example/register", None);
        assert!(!alone.contains_key(PKCE), "an empty list is not published");
    }

    #[test]
    fn pkce_is_advertised_by_default() {
        let doc = document(&settings(), "https://reg.example/register", None);
        assert_eq!(doc[PKCE], json!(["S256"]));
    }

    #[test]
    fn an_incomplete_document_is_named_member_by_member() {
        let doc = document(&settings(), "https://reg.example/register", None);
        let w = incomplete_warning(&doc).unwrap();
        for needle in [
            "authorization_endpoint (RFC 8414 §2; OIDC Discovery §3)",
            "token_endpoint (RFC 8414 §2",
            "jwks_uri (OIDC Discovery §3)",
            "MCP SDKs, openidconnect-rs",
        ] {
            assert!(w.contains(needle), "{needle}: {w}");
        }
        assert!(!w.contains("response_types_supported"), "{w}");
        // A client-credentials-only deployment needs no authorization endpoint.
        let cc = settings()
            .with("metadata.grant_types_supported", vec!["client_credentials"])
            .unwrap();
        let doc = document(&cc, "https://reg.example/register", None);
        let missing = missing_members(&doc);
        assert!(!missing
            .iter()
            .any(|m| m.starts_with("authorization_endpoint")));
        assert!(missing.iter().any(|m| m.starts_with("token_endpoint")));
    }

    #[test]
    fn narrower_upstream_lists_and_a_different_issuer_are_warned_about() {
        let s = settings()
            .with(
                "metadata.token_endpoint_auth_methods_supported",
                vec!["none", "client_secret_basic", "private_key_jwt"],
            )
            .unwrap();
        let mut up = upstream();
        up.insert("issuer".into(), json!("https://as.example"));
        let w = upstream_warnings(&s, &up);
        assert!(
            w.iter()
                .any(|w| w.contains("https://as.example") && w.contains("RFC 8414 §3.3")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|w| w.contains("token_endpoint_auth_methods_supported")
                    && w.contains("[\"none\", \"private_key_jwt\"]")),
            "{w:?}"
        );
        // grant_types_supported omitted: RFC 8414's default (code, implicit) applies.
        assert!(
            w.iter()
                .any(|w| w.starts_with("metadata.grant_types_supported")
                    && w.contains("refresh_token")),
            "{w:?}"
        );
        let mut same = upstream();
        same.insert(
            "token_endpoint_auth_methods_supported".into(),
            json!([
                "none",
                "client_secret_basic",
                "private_key_jwt",
                "tls_client_auth"
            ]),
        );
        same.insert(
            "grant_types_supported".into(),
            json!(s.metadata.grant_types_supported),
        );
        same.insert(
            "response_types_supported".into(),
            json!(s.metadata.response_types_supported),
        );
        let w = upstream_warnings(&s, &same);
        assert!(
            !w.iter()
                .any(|w| w.contains("token_endpoint_auth_methods_supported")
                    || w.contains("grant_types_supported")
                    || w.contains("issuer")),
            "{w:?}"
        );
    }

    #[test]
    fn an_issuer_with_a_path_is_served_at_the_rfc_8414_locations() {
        assert_eq!(paths("http://127.0.0.1:8080").len(), 2);
        let p = paths("https://id.example/tenant/");
        for expected in [
            "/.well-known/openid-configuration",
            "/.well-known/oauth-authorization-server/tenant",
            "/.well-known/openid-configuration/tenant",
            "/tenant/.well-known/openid-configuration",
        ] {
            assert!(p.iter().any(|x| x == expected), "{expected}: {p:?}");
        }
    }
}
