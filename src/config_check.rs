//! `registrar check-config [--config FILE]`: load the configuration exactly as `serve` would
//! (embedded defaults, FILE, `REGISTRAR_*` variables), run every check that start-up runs without
//! binding a port or opening the store, print the effective settings with every secret redacted,
//! and list every problem found (not only the first).

use crate::credentials::{RatKey, SecretHasher};
use crate::fetch::Fetcher;
use crate::policy::PolicyEngine;
use crate::settings::Settings;
use serde_json::Value;
use std::path::Path;

/// What replaces a secret in the printed settings.
pub const REDACTED: &str = "[redacted]";

/// The outcome of a check.
#[derive(Debug)]
pub struct Report {
    /// The effective settings, secrets redacted; `None` when they could not even be parsed.
    pub effective: Option<Value>,
    /// Every problem found, each naming its setting.
    pub errors: Vec<String>,
    /// Valid settings an operator should know about (printed, exit status unchanged).
    pub warnings: Vec<String>,
}

/// Load and check the configuration `serve` would use with `file`.
pub fn check(file: Option<&Path>) -> Report {
    match Settings::load_unchecked(file) {
        Err(e) => Report {
            effective: None,
            errors: vec![e.to_string()],
            warnings: Vec::new(),
        },
        Ok(settings) => Report {
            effective: Some(redacted(&settings)),
            errors: problems(&settings),
            warnings: warnings(&settings),
        },
    }
}

/// Every problem of `settings`: the consistency rules of `Settings`, then each part start-up
/// builds from them (policies, argon2 parameters, the fetcher and its CA file, the server key,
/// the TLS files), each tried on its own so one error does not hide the next.
pub fn problems(settings: &Settings) -> Vec<String> {
    let mut errors = settings.problems();
    if let Err(e) = PolicyEngine::from_settings(settings) {
        errors.push(format!("access/policies/rate_limit: {e}"));
    }
    let c = &settings.credentials;
    if let Err(e) = SecretHasher::new(
        c.argon2_memory_kib,
        c.argon2_iterations,
        c.argon2_parallelism,
        1,
    )
    .and_then(|h| h.with_derivation_key(&c.client_secret_derivation_key))
    {
        errors.push(format!("credentials: {e}"));
    }
    if !c.server_key.is_empty() {
        if let Err(e) = RatKey::from_base64(&c.server_key) {
            errors.push(format!("credentials.server_key: {e}"));
        }
    }
    if let Err(e) = Fetcher::new(&settings.fetch) {
        errors.push(format!("fetch: {e}"));
    }
    for (name, tls) in [
        ("server.tls", &settings.server.tls),
        ("admin.tls", &settings.admin.tls),
    ] {
        if tls.enabled() && !tls.key_file.is_empty() {
            if let Err(e) = crate::tls::server_config(tls) {
                errors.push(format!("{name}: {e}"));
            }
        }
    }
    let dir = &settings.storage.data_dir;
    if dir.exists() && !dir.is_dir() {
        errors.push(format!(
            "storage.data_dir {} exists and is not a directory",
            dir.display()
        ));
    }
    errors
}

/// Valid settings worth a warning, each naming its setting: the audit trail switched off
/// (issue #17 point 6: the changes made meanwhile are not recorded).
pub fn warnings(settings: &Settings) -> Vec<String> {
    let mut warnings = Vec::new();
    if !settings.audit.enabled {
        warnings.push(
            "audit.enabled = false: changes made while it is off leave no audit record".into(),
        );
    }
    warnings
}

/// Whether a setting of this name holds a secret: the known ones (`server_key`,
/// `client_secret_derivation_key`, static `token`s) and, so that settings added later are covered
/// without a list to keep in step, any `token`, `secret`, `password` or `*_key` name (a `*_file`
/// holds a path, not the secret, and stays visible).
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if name.ends_with("_file") {
        return false;
    }
    ["token", "secret", "password", "key"]
        .iter()
        .any(|word| name == *word || name.ends_with(&format!("_{word}")))
}

/// The settings as JSON with every secret value replaced by [`REDACTED`] (empty ones stay empty,
/// so the output still shows which are unset) and passwords removed from URLs.
pub fn redacted(settings: &Settings) -> Value {
    let mut value = serde_json::to_value(settings).unwrap_or(Value::Null);
    redact(&mut value);
    value
}

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (name, v) in map.iter_mut() {
                let empty = matches!(v, Value::Null) || v.as_str().is_some_and(str::is_empty);
                // A flag or a number under a secret-sounding name (`metrics_require_token`) is
                // a setting, not a secret: the operator needs to see it.
                let plain = v.is_boolean() || v.is_number();
                if is_secret_name(name) && !empty && !plain {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) => {
            if let Ok(mut url) = url::Url::parse(s) {
                if url.password().is_some() && url.set_password(Some(REDACTED)).is_ok() {
                    *s = url.to_string();
                }
            }
        }
        _ => {}
    }
}

/// The command: settings on stdout, problems on stderr; exit status 1 when there is any.
pub fn run(file: Option<&Path>) -> std::process::ExitCode {
    let report = check(file);
    if let Some(effective) = &report.effective {
        match serde_json::to_string_pretty(effective) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("registrar: cannot print the settings: {e}"),
        }
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if report.errors.is_empty() {
        eprintln!("configuration OK");
        return std::process::ExitCode::SUCCESS;
    }
    eprintln!("configuration has {} problem(s):", report.errors.len());
    for e in &report.errors {
        eprintln!("  - {e}");
    }
    std::process::ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(pairs: &[(&str, Value)]) -> Settings {
        pairs
            .iter()
            .fold(Settings::defaults().unwrap(), |s, (k, v)| {
                // `with` runs the checks; build invalid values through JSON instead.
                let mut all = serde_json::to_value(&s).unwrap();
                let mut slot = &mut all;
                for part in k.split('.') {
                    slot = &mut slot[part];
                }
                *slot = v.clone();
                serde_json::from_value(all).unwrap()
            })
    }

    #[test]
    fn the_audit_trail_switched_off_is_a_warning_not_an_error() {
        assert!(warnings(&settings(&[])).is_empty());
        let off = settings(&[("audit.enabled", json!(false))]);
        assert!(problems(&off).is_empty());
        let w = warnings(&off);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("audit.enabled"), "{w:?}");
    }

    #[test]
    fn every_secret_is_redacted_and_paths_stay_visible() {
        let s = settings(&[
            (
                "credentials.server_key",
                json!("c2VjcmV0LXNlcnZlci1rZXktMDEyMzQ1Njc4OWFiY2RlZg"),
            ),
            (
                "credentials.client_secret_derivation_key",
                json!("ZGVyaXZhdGlvbi1rZXktMDEyMzQ1Njc4OWFiY2RlZmdoaWo"),
            ),
            (
                "credentials.server_key_file",
                json!("/etc/registrar/server.key"),
            ),
            (
                "access.static_tokens",
                json!([{"token": "static-initial-access-token-0123456789", "sha256": "", "policy": "", "max_uses": 0}]),
            ),
            ("issuer", json!("https://user:hunter2@id.example.com")),
        ]);
        let out = redacted(&s);
        let text = out.to_string();
        for secret in [
            "c2VjcmV0LXNlcnZlci1rZXktMDEyMzQ1Njc4OWFiY2RlZg",
            "ZGVyaXZhdGlvbi1rZXktMDEyMzQ1Njc4OWFiY2RlZmdoaWo",
            "static-initial-access-token-0123456789",
            "hunter2",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(out["credentials"]["server_key"], REDACTED);
        assert_eq!(
            out["credentials"]["server_key_file"],
            "/etc/registrar/server.key"
        );
        assert_eq!(out["access"]["static_tokens"][0]["token"], REDACTED);
        // Unset secrets stay visibly unset.
        let defaults = redacted(&Settings::defaults().unwrap());
        assert_eq!(defaults["credentials"]["server_key"], "");
    }

    #[test]
    fn a_flag_under_a_secret_sounding_name_is_shown() {
        for flag in [true, false] {
            let s = settings(&[("admin.metrics_require_token", json!(flag))]);
            assert_eq!(redacted(&s)["admin"]["metrics_require_token"], json!(flag));
        }
    }

    #[test]
    fn every_problem_is_listed_not_only_the_first() {
        let s = settings(&[
            ("registration_path", json!("no-slash")),
            ("server.body_limit_bytes", json!(0)),
            ("fetch.timeout_ms", json!(0)),
            ("credentials.argon2_memory_kib", json!(1)),
            ("credentials.server_key", json!("too-short")),
            ("server.tls.cert_file", json!("/nonexistent/cert.pem")),
            ("server.tls.key_file", json!("/nonexistent/key.pem")),
            ("rate_limit.trusted_proxies", json!(["not-an-ip"])),
        ]);
        let errors = problems(&s);
        for needle in [
            "registration_path",
            "server.body_limit_bytes",
            "fetch.timeout_ms",
            "credentials:",
            "credentials.server_key",
            "cert_file",
            "trusted_proxies",
            // The default issuer is http, which TLS does not allow.
            "must use https",
        ] {
            assert!(
                errors.iter().any(|e| e.contains(needle)),
                "{needle} missing from {errors:#?}"
            );
        }
    }

    #[test]
    fn the_default_configuration_has_no_problem() {
        assert_eq!(
            problems(&Settings::defaults().unwrap()),
            Vec::<String>::new()
        );
    }
}
