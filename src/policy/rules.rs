//! One declarative registration policy (`[policies.NAME]`), compiled and applied around the
//! metadata engine: forced values and privileged-field checks before it, allow-lists after it.
//! Every refusal names the policy and the rule (`policy 'anonymous': scope 'admin' is not
//! allowed`), the explainability Keycloak's opaque policy errors lack (features.md §3 item 6).

use super::config::PolicySettings;
use crate::metadata::schema;
use crate::metadata::validate::default_value;
use crate::settings::MetadataSettings;
use serde_json::{Map, Value};

/// Which error a violation is reported as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    /// `invalid_redirect_uri`.
    RedirectUri,
    /// `invalid_client_metadata`.
    Metadata,
    /// The policy's client quota is used up.
    Quota,
}

/// A rule of a policy that the request breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The metadata member at fault, if one is.
    pub member: Option<String>,
    /// Error class.
    pub kind: ViolationKind,
    /// `policy 'NAME': ...`.
    pub message: String,
}

/// A compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Its name in the configuration.
    pub name: String,
    settings: PolicySettings,
    metadata: MetadataSettings,
}

impl Policy {
    /// Compile `[policies.NAME]` over the global metadata settings.
    pub fn compile(
        name: &str,
        settings: &PolicySettings,
        global: &MetadataSettings,
    ) -> Result<Self, String> {
        for field in settings.allowed_privileged_fields.iter() {
            if !schema::field(field).is_some_and(|f| f.privileged) {
                return Err(format!(
                    "policies.{name}.allowed_privileged_fields: {field:?} is not a privileged field"
                ));
            }
        }
        for member in settings.force.keys() {
            if schema::SERVER_MANAGED.contains(&member.as_str()) {
                return Err(format!(
                    "policies.{name}.force: {member:?} is set by the server and cannot be forced"
                ));
            }
        }
        let mut metadata = global.clone();
        // The policy's list replaces the global one; forced members are the server's own
        // choice, so they pass the privileged check too.
        metadata.allowed_privileged_fields = settings
            .allowed_privileged_fields
            .iter()
            .chain(settings.force.keys())
            .cloned()
            .collect();
        if !settings.default_scope.is_empty() {
            metadata.default_scope = settings.default_scope.clone();
        }
        Ok(Self {
            name: name.to_owned(),
            settings: settings.clone(),
            metadata,
        })
    }

    /// Most clients under this policy; 0 = unlimited.
    pub fn max_clients(&self) -> u64 {
        self.settings.max_clients
    }

    /// The metadata settings the engine runs with under this policy.
    pub fn metadata_settings(&self) -> &MetadataSettings {
        &self.metadata
    }

    fn violation(&self, member: &str, kind: ViolationKind, rule: String) -> Violation {
        Violation {
            member: Some(member.to_owned()),
            kind,
            message: format!("policy '{}': {rule}", self.name),
        }
    }

    /// Before validation: refuse privileged fields this tier may not set, then overwrite forced
    /// members (RFC 7591 §3.2.1: the server may replace requested values).
    pub fn prepare(&self, request: &mut Map<String, Value>) -> Result<(), Violation> {
        for (name, value) in request.iter() {
            let Some(field) = schema::field(name) else {
                continue;
            };
            if !field.privileged || value.is_null() || self.settings.force.contains_key(name) {
                continue;
            }
            if Some(value) == default_value(field, &self.metadata).as_ref() {
                continue;
            }
            if !self
                .settings
                .allowed_privileged_fields
                .iter()
                .any(|p| p == name)
            {
                return Err(self.violation(
                    name,
                    ViolationKind::Metadata,
                    format!("field '{name}' may not be set"),
                ));
            }
        }
        for (name, value) in &self.settings.force {
            request.insert(name.clone(), value.clone());
        }
        Ok(())
    }

    /// After validation: the allow-lists, on the metadata that would be registered (defaults
    /// included, so a default outside the allow-list is refused too).
    pub fn check(&self, metadata: &Map<String, Value>) -> Result<(), Violation> {
        let s = &self.settings;
        if !s.allowed_scopes.is_empty() {
            if let Some(scope) = metadata.get("scope").and_then(Value::as_str) {
                for token in scope.split(' ').filter(|t| !t.is_empty()) {
                    if !s.allowed_scopes.iter().any(|a| a == token) {
                        return Err(self.violation(
                            "scope",
                            ViolationKind::Metadata,
                            format!("scope '{token}' is not allowed"),
                        ));
                    }
                }
            }
        }
        if !s.allowed_grant_types.is_empty() {
            for grant in strings(metadata.get("grant_types")) {
                if !s.allowed_grant_types.iter().any(|a| a == grant) {
                    return Err(self.violation(
                        "grant_types",
                        ViolationKind::Metadata,
                        format!("grant type '{grant}' is not allowed"),
                    ));
                }
            }
        }
        if !s.allowed_auth_methods.is_empty() {
            if let Some(method) = metadata
                .get("token_endpoint_auth_method")
                .and_then(Value::as_str)
            {
                if !s.allowed_auth_methods.iter().any(|a| a == method) {
                    return Err(self.violation(
                        "token_endpoint_auth_method",
                        ViolationKind::Metadata,
                        format!("token_endpoint_auth_method '{method}' is not allowed"),
                    ));
                }
            }
        }
        if !s.allowed_redirect_hosts.is_empty() || !s.allowed_redirect_schemes.is_empty() {
            for member in ["redirect_uris", "post_logout_redirect_uris"] {
                for uri in strings(metadata.get(member)) {
                    if let Err(why) = self.redirect_allowed(uri) {
                        let kind = if member == "redirect_uris" {
                            ViolationKind::RedirectUri
                        } else {
                            ViolationKind::Metadata
                        };
                        return Err(self.violation(member, kind, format!("{member}: {why}")));
                    }
                }
            }
        }
        Ok(())
    }

    /// Host allow-lists speak of web hosts, so they judge `http`/`https` URIs only; any other
    /// scheme (`com.example.app:/cb`, and `com.evil.app://localhost/cb`, whose "host" means
    /// nothing) must be in `allowed_redirect_schemes`, which is empty unless configured (issue
    /// #12 item 9).
    fn redirect_allowed(&self, uri: &str) -> Result<(), String> {
        let s = &self.settings;
        let url = url::Url::parse(uri).map_err(|_| "not a URI".to_owned())?;
        let scheme = url.scheme();
        if matches!(scheme, "http" | "https") {
            if s.allowed_redirect_hosts.is_empty() {
                return Ok(());
            }
            let host = url.host_str().map(str::to_ascii_lowercase);
            return match host.as_deref() {
                Some(h) if s.allowed_redirect_hosts.iter().any(|a| host_matches(a, h)) => Ok(()),
                other => Err(format!(
                    "host '{}' is not allowed",
                    other.unwrap_or("(none)")
                )),
            };
        }
        if s.allowed_redirect_schemes
            .iter()
            .any(|a| a.eq_ignore_ascii_case(scheme))
        {
            return Ok(());
        }
        Err(format!(
            "scheme '{scheme}' is not allowed (allowed_redirect_hosts applies to http and https URIs; other schemes need allowed_redirect_schemes)"
        ))
    }

    /// The refusal when the quota is used up.
    pub fn quota_exceeded(&self) -> Violation {
        Violation {
            member: None,
            kind: ViolationKind::Quota,
            message: format!(
                "policy '{}': the maximum number of clients ({}) has been reached",
                self.name, self.settings.max_clients
            ),
        }
    }
}

fn strings(v: Option<&Value>) -> impl Iterator<Item = &str> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// `example.com` matches itself; `*.example.com` matches every subdomain (not the apex).
fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;
    use serde_json::json;

    fn policy(v: Value) -> Policy {
        let settings: PolicySettings = serde_json::from_value(v).unwrap();
        Policy::compile("p", &settings, &Settings::defaults().unwrap().metadata).unwrap()
    }

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn wildcard_hosts_match_subdomains_only() {
        assert!(host_matches("*.example.com", "app.example.com"));
        assert!(host_matches("*.EXAMPLE.com", "a.b.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "evilexample.com"));
        assert!(host_matches("example.com", "example.com"));
    }

    #[test]
    fn refusals_name_the_policy_and_the_rule() {
        let p = policy(
            json!({"allowed_scopes": ["openid"], "allowed_grant_types": ["authorization_code"]}),
        );
        let e = p.check(&map(json!({"scope": "openid admin"}))).unwrap_err();
        assert_eq!(e.message, "policy 'p': scope 'admin' is not allowed");
        let e = p
            .check(&map(json!({"grant_types": ["client_credentials"]})))
            .unwrap_err();
        assert_eq!(
            e.message,
            "policy 'p': grant type 'client_credentials' is not allowed"
        );
        assert!(p.check(&map(json!({"scope": "openid"}))).is_ok());
    }

    #[test]
    fn forced_values_overwrite_the_request() {
        let p = policy(json!({"force": {"skip_consent": false, "client_name": "forced"}}));
        let mut req = map(json!({"client_name": "mine"}));
        p.prepare(&mut req).unwrap();
        assert_eq!(req["client_name"], "forced");
        assert!(p
            .metadata_settings()
            .allowed_privileged_fields
            .contains(&"skip_consent".to_owned()));
    }

    #[test]
    fn privileged_fields_need_the_policy_s_permission() {
        let p = policy(json!({"allowed_privileged_fields": ["audience"]}));
        let mut req = map(json!({"skip_consent": true}));
        assert_eq!(
            p.prepare(&mut req).unwrap_err().message,
            "policy 'p': field 'skip_consent' may not be set"
        );
        let mut req = map(json!({"audience": ["https://api"]}));
        assert!(p.prepare(&mut req).is_ok());
    }

    #[test]
    fn configuration_mistakes_are_caught_at_start_up() {
        let global = Settings::defaults().unwrap().metadata;
        let bad: PolicySettings =
            serde_json::from_value(json!({"allowed_privileged_fields": ["client_name"]})).unwrap();
        assert!(Policy::compile("p", &bad, &global).is_err());
        let bad: PolicySettings =
            serde_json::from_value(json!({"force": {"client_id": "x"}})).unwrap();
        assert!(Policy::compile("p", &bad, &global).is_err());
    }
}
