//! The engine that runs the field table and the cross-field rules of `schema.rs`.

use super::schema::{self, Code, DefaultRule, Field, Ty, FIELDS, RULES, SERVER_MANAGED};
use super::uri;
use crate::error::{RegistrationError, Result};
use crate::settings::MetadataSettings;
use serde_json::{Map, Value};

/// Longest accepted string value, in bytes.
pub const MAX_STRING_LEN: usize = 2048;
/// Most items accepted in one array member.
pub const MAX_ITEMS: usize = 100;
/// Longest accepted member name (a localized name included), in bytes.
pub const MAX_NAME_LEN: usize = 128;
/// Most `name#tag` variants of one localizable field (RFC 7591 §2.2). More languages than any
/// consent screen offers; without a cap, thousands of variants made one request cost 15× more
/// (issue #12 item 13).
pub const MAX_LOCALIZED_VARIANTS: usize = 100;

/// Validate a registration or update request body (RFC 7591 §2, §3.1; RFC 7592 §2.2) and
/// return the metadata to register: unknown members dropped (RFC 7591 §2 "MUST ignore"),
/// configured extension members kept, known members checked, defaults applied, cross-field rules
/// satisfied, in table order.
///
/// Members in `SERVER_MANAGED` are skipped: the service decides what they mean.
pub fn validate(
    input: &Map<String, Value>,
    settings: &MetadataSettings,
) -> Result<Map<String, Value>> {
    let mut known: Map<String, Value> = Map::new();
    let mut extensions: Map<String, Value> = Map::new();

    for (name, value) in input {
        if SERVER_MANAGED.contains(&name.as_str()) {
            continue;
        }
        let (base, tag) = match name.split_once('#') {
            Some((base, tag)) => (base, Some(tag)),
            None => (name.as_str(), None),
        };
        // A known field is always checked by its row, even if an operator also listed its name
        // as an extension: the extension list must not become a way around validation.
        let Some(field) = schema::field(base) else {
            if settings.extension_fields.iter().any(|e| e == name) && !value.is_null() {
                extensions.insert(name.clone(), value.clone());
            }
            continue; // RFC 7591 §2: unknown metadata is ignored, and not stored.
        };
        if let Some(tag) = tag {
            if !field.localizable {
                continue; // e.g. `redirect_uris#en` is not a member anyone defined
            }
            if name.len() > MAX_NAME_LEN || !is_language_tag(tag) {
                return Err(RegistrationError::metadata(format!(
                    "{name}: {tag:?} is not a valid BCP 47 language tag (RFC 7591 §2.2)"
                )));
            }
        }
        if value.is_null() && !matches!(field.ty, Ty::NullableBool | Ty::Duration) {
            continue; // null means absent
        }
        let value = check_value(field, name, value, settings)?;
        if field.privileged
            && !value.is_null()
            && value != Value::Bool(false) // the unprivileged setting of every privileged flag
            && Some(&value) != default_value(field, settings).as_ref()
            && !settings
                .allowed_privileged_fields
                .iter()
                .any(|p| p == field.name)
        {
            return Err(RegistrationError::metadata(format!(
                "{name}: this field is privileged and cannot be set by dynamic registration (allowed_privileged_fields)"
            )));
        }
        known.insert(name.clone(), value);
    }

    check_localized(&known)?;

    for field in FIELDS {
        if !known.contains_key(field.name) {
            if let Some(value) = default_value(field, settings) {
                known.insert(field.name.to_owned(), value);
            }
        }
    }

    for rule in RULES {
        (rule.apply)(&mut known, settings)?;
    }

    let metadata = ordered(known, extensions);
    check_size(&metadata, settings)?;
    Ok(metadata)
}

/// RFC 7591 §2.2 localized variants (`client_name#ja-Jpan-JP`): language tags are
/// case-insensitive (RFC 5646 §2.1.1), so two variants whose tags differ only in case are one
/// language given twice and refused. And, as matrix-authentication-service does, a tagged variant
/// needs the untagged base value: RFC 7591 §2.2 RECOMMENDS sending it, and without it there is
/// nothing to show a user whose language has no variant.
fn check_localized(known: &Map<String, Value>) -> Result<()> {
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut per_field: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for name in known.keys() {
        let Some((base, tag)) = name.split_once('#') else {
            continue;
        };
        if !known.contains_key(base) {
            return Err(RegistrationError::metadata(format!(
                "{name} requires the untagged {base} as well: a localized variant needs the default value (RFC 7591 §2.2)"
            )));
        }
        let count = per_field.entry(base).or_default();
        *count += 1;
        if *count > MAX_LOCALIZED_VARIANTS {
            return Err(RegistrationError::metadata(format!(
                "{base} has more than {MAX_LOCALIZED_VARIANTS} localized variants (RFC 7591 §2.2)"
            )));
        }
        let key = format!("{base}#{}", tag.to_ascii_lowercase());
        if !seen.insert(key) {
            return Err(RegistrationError::metadata(format!(
                "{name}: the language tag {tag:?} is given twice (tags are case-insensitive, RFC 5646 §2.1.1; RFC 7591 §2.2)"
            )));
        }
    }
    Ok(())
}

/// `metadata.max_client_bytes`: the stored metadata of one client is bounded (issue #12 item 3),
/// so the disk a registrant can take is bounded per registration, not only per request body.
fn check_size(metadata: &Map<String, Value>, settings: &MetadataSettings) -> Result<()> {
    if settings.max_client_bytes == 0 {
        return Ok(());
    }
    let size = serde_json::to_vec(metadata)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > settings.max_client_bytes {
        return Err(RegistrationError::metadata(format!(
            "the client metadata takes {size} bytes as stored; this server stores at most {} bytes per client (metadata.max_client_bytes)",
            settings.max_client_bytes
        )));
    }
    Ok(())
}

/// A plain `local@domain` address: one `@`, both sides non-empty, no whitespace, a domain of
/// dot-separated labels (node-oidc-provider checks contacts the same way).
fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@')
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-'))
}

/// Table order; localized variants after their base, by tag; extensions last.
fn ordered(mut known: Map<String, Value>, extensions: Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for field in FIELDS {
        if let Some(v) = known.remove(field.name) {
            out.insert(field.name.to_owned(), v);
        }
        if field.localizable {
            let prefix = format!("{}#", field.name);
            let mut variants: Vec<String> = known
                .keys()
                .filter(|k| k.starts_with(&prefix))
                .cloned()
                .collect();
            variants.sort();
            for k in variants {
                if let Some(v) = known.remove(&k) {
                    out.insert(k, v);
                }
            }
        }
    }
    out.extend(known);
    out.extend(extensions);
    out
}

/// The default of `field` under `settings`, if it has a static one.
pub fn default_value(field: &Field, settings: &MetadataSettings) -> Option<Value> {
    match field.default {
        DefaultRule::None | DefaultRule::Derived => None,
        DefaultRule::Bool(b) => Some(Value::Bool(b)),
        DefaultRule::Text(s) => Some(Value::String(s.to_owned())),
        DefaultRule::List(items) => Some(Value::Array(
            items
                .iter()
                .map(|s| Value::String((*s).to_owned()))
                .collect(),
        )),
        DefaultRule::EmptyObject => Some(Value::Object(Map::new())),
        DefaultRule::FirstOf(list) => list(settings).first().map(|s| Value::String(s.clone())),
        DefaultRule::ConfiguredScope => (!settings.default_scope.is_empty())
            .then(|| Value::String(settings.default_scope.clone())),
    }
}

fn fail(field: &Field, msg: String) -> RegistrationError {
    match field.code {
        Code::RedirectUri => RegistrationError::InvalidRedirectUri(msg),
        Code::ClientMetadata => RegistrationError::InvalidClientMetadata(msg),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn text<'v>(field: &Field, name: &str, v: &'v Value, allow_empty: bool) -> Result<&'v str> {
    let s = v.as_str().ok_or_else(|| {
        fail(
            field,
            format!("{name} must be a string, not {}", type_name(v)),
        )
    })?;
    if s.is_empty() && !allow_empty {
        return Err(fail(field, format!("{name} must not be empty")));
    }
    if s.len() > MAX_STRING_LEN {
        return Err(fail(
            field,
            format!("{name} is longer than {MAX_STRING_LEN} bytes"),
        ));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(fail(
            field,
            format!("{name} must not contain control characters"),
        ));
    }
    if let Some(c) = super::unicode::invisible_char(s) {
        return Err(fail(
            field,
            format!(
                "{name} must not contain invisible formatting characters or separators (found U+{:04X}: bidi controls, zero-width characters, BOM, tag characters and line/paragraph separators change what users see)",
                c as u32
            ),
        ));
    }
    Ok(s)
}

fn array<'v>(field: &Field, name: &str, v: &'v Value) -> Result<&'v Vec<Value>> {
    let items = v.as_array().ok_or_else(|| {
        fail(
            field,
            format!("{name} must be an array, not {}", type_name(v)),
        )
    })?;
    if items.len() > MAX_ITEMS {
        return Err(fail(
            field,
            format!("{name} has more than {MAX_ITEMS} items"),
        ));
    }
    Ok(items)
}

fn strings<'v>(field: &Field, name: &str, v: &'v Value) -> Result<Vec<&'v str>> {
    let items = array(field, name, v)?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let s = item.as_str().ok_or_else(|| {
            fail(
                field,
                format!(
                    "{name} must contain only strings, found {}",
                    type_name(item)
                ),
            )
        })?;
        out.push(text(field, name, item, false).map(|_| s)?);
    }
    Ok(out)
}

fn one_of(field: &Field, name: &str, value: &str, allowed: &[String]) -> Result<()> {
    if allowed.iter().any(|a| a == value) {
        Ok(())
    } else if (name.ends_with("_alg") || name == "token_endpoint_auth_method")
        && schema::is_secret_keyed(value)
    {
        // The common case: secrets are stored only as argon2id hashes, so nothing keyed with
        // the plaintext secret can work. Say so rather than "not supported".
        Err(fail(
            field,
            format!(
                "{name}: {value:?} needs the plaintext client_secret, but this server stores client secrets only as argon2id hashes; it is available only when the operator enables recoverable secrets (credentials.client_secret_derivation_key)"
            ),
        ))
    } else {
        Err(fail(
            field,
            format!(
                "{name}: {value:?} is not supported; supported values: {}",
                allowed.join(", ")
            ),
        ))
    }
}

/// The URI rules of `uri::check`, then the ones that depend on settings: internationalized hosts
/// (`metadata.allow_idn_hosts`), and for every URI the authorization server or a browser
/// dereferences (all but redirect URIs, where RFC 8252 §7.3 needs loopback, and CORS origins) no
/// IP literal in a reserved range unless `fetch.allow_private_addresses` (issue #12 item 4).
fn check_uri(
    raw: &str,
    rule: uri::UriRule,
    settings: &MetadataSettings,
) -> std::result::Result<(), String> {
    let url = uri::check(raw, rule)?;
    super::unicode::idn_host(&url, settings.allow_idn_hosts)?;
    let dereferenced = !matches!(rule, uri::UriRule::Redirect | uri::UriRule::Origin);
    if dereferenced && !settings.allow_private_address_uris {
        if let Some(why) = uri::reserved_literal(&url) {
            return Err(format!(
                "{raw:?} points to a reserved address ({why}); the authorization server would call it or show it to browsers (fetch.allow_private_addresses)"
            ));
        }
    }
    Ok(())
}

/// Check one member against its row; returns the value to store.
fn check_value(field: &Field, name: &str, v: &Value, settings: &MetadataSettings) -> Result<Value> {
    match field.ty {
        Ty::Text => text(field, name, v, false).map(|_| v.clone()),
        Ty::Name => {
            let s = text(field, name, v, false)?;
            if s.trim().is_empty() {
                return Err(fail(field, format!("{name} must contain something other than whitespace")));
            }
            Ok(v.clone())
        }
        Ty::AnyText => text(field, name, v, true).map(|_| v.clone()),
        Ty::Bool => match v {
            Value::Bool(_) => Ok(v.clone()),
            _ => Err(fail(field, format!("{name} must be a boolean, not {}", type_name(v)))),
        },
        Ty::NullableBool => match v {
            Value::Bool(_) | Value::Null => Ok(v.clone()),
            _ => Err(fail(field, format!("{name} must be a boolean or null, not {}", type_name(v)))),
        },
        Ty::Seconds => match v.as_u64() {
            Some(n) if n < (1u64 << 53) => Ok(v.clone()),
            _ => Err(fail(field, format!("{name} must be a non-negative integer number of seconds"))),
        },
        Ty::TextList => strings(field, name, v).map(|_| v.clone()),
        Ty::Contacts => {
            for s in strings(field, name, v)? {
                if !is_email(s) {
                    return Err(fail(field, format!("{name}: {s:?} is not an e-mail address (RFC 7591 §2)")));
                }
            }
            Ok(v.clone())
        }
        Ty::Email => {
            let s = text(field, name, v, false)?;
            if !is_email(s) {
                return Err(fail(field, format!("{name}: {s:?} is not an e-mail address")));
            }
            Ok(v.clone())
        }
        Ty::Ip => {
            let s = text(field, name, v, false)?;
            if s.parse::<std::net::IpAddr>().is_err() {
                return Err(fail(field, format!("{name}: {s:?} is not an IPv4 or IPv6 address (RFC 8705 §2.1.2)")));
            }
            Ok(v.clone())
        }
        Ty::ListOfIfListed(list) => {
            let allowed = list(settings);
            for s in strings(field, name, v)? {
                if !allowed.is_empty() {
                    one_of(field, name, s, allowed)?;
                }
            }
            Ok(v.clone())
        }
        Ty::TokenList => {
            for s in strings(field, name, v)? {
                if s.chars().any(char::is_whitespace) {
                    return Err(fail(field, format!("{name}: {s:?} must not contain whitespace")));
                }
            }
            Ok(v.clone())
        }
        Ty::Uri(rule) => {
            let s = text(field, name, v, false)?;
            check_uri(s, rule, settings).map_err(|e| fail(field, format!("{name}: {e}")))?;
            Ok(v.clone())
        }
        Ty::UriList(rule) => {
            for s in strings(field, name, v)? {
                check_uri(s, rule, settings).map_err(|e| fail(field, format!("{name}: {e}")))?;
            }
            Ok(v.clone())
        }
        Ty::OneOf(list) => {
            let s = text(field, name, v, false)?;
            one_of(field, name, s, list(settings))?;
            Ok(v.clone())
        }
        Ty::Enum(allowed) => {
            let s = text(field, name, v, false)?;
            if allowed.contains(&s) {
                Ok(v.clone())
            } else {
                Err(fail(field, format!("{name}: {s:?} is not one of {}", allowed.join(", "))))
            }
        }
        Ty::ListOf(list) => {
            let items = strings(field, name, v)?;
            let mut seen = Vec::new();
            for s in &items {
                one_of(field, name, s, list(settings))?;
                if !seen.contains(s) {
                    seen.push(*s);
                }
            }
            Ok(Value::from(seen))
        }
        Ty::ResponseTypes => {
            let items = strings(field, name, v)?;
            let mut out: Vec<String> = Vec::new();
            for s in items {
                let words = response_type_words(s);
                // Stored in the configured spelling ("id_token code" → "code id_token"), so equal
                // sets compare equal as strings downstream (OAuth 2.0 Multiple Response Types §2).
                let supported = settings.response_types_supported.iter().find(|r| response_type_words(r) == words);
                let Some(canonical) = supported.filter(|_| !words.is_empty()) else {
                    return Err(fail(field, format!("{name}: {s:?} is not supported; supported values: {}", settings.response_types_supported.join(", "))));
                };
                if !out.contains(canonical) {
                    out.push(canonical.clone());
                }
            }
            Ok(Value::from(out))
        }
        Ty::Scope => {
            let s = text(field, name, v, true)?;
            let mut tokens: Vec<&str> = Vec::new();
            for token in s.split(' ').filter(|t| !t.is_empty()) {
                if !token.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b)) {
                    return Err(fail(field, format!("scope: {token:?} is not a valid scope token (RFC 6749 §3.3)")));
                }
                if !settings.scopes_supported.is_empty() && !settings.scopes_supported.iter().any(|x| x == token) {
                    return Err(fail(field, format!("scope: {token:?} is not supported; supported scopes: {}", settings.scopes_supported.join(" "))));
                }
                if !tokens.contains(&token) {
                    tokens.push(token);
                }
            }
            Ok(Value::String(tokens.join(" ")))
        }
        Ty::Jwks => super::jwks::check(v).map_err(|e| fail(field, format!("{name}: {e}"))).map(|_| v.clone()),
        Ty::Object => match v {
            Value::Object(_) => Ok(v.clone()),
            _ => Err(fail(field, format!("{name} must be a JSON object, not {}", type_name(v)))),
        },
        Ty::Duration => match v {
            Value::Null => Ok(Value::Null),
            Value::String(s) if is_duration(s) => Ok(v.clone()),
            _ => Err(fail(field, format!("{name} must be a duration such as \"1h30m\" (units ns, us, ms, s, m, h) or null"))),
        },
    }
}

/// The set of words of a response type (`"code id_token"` = `"id_token code"`, OAuth 2.0
/// Multiple Response Type Encoding Practices §2); empty when a word repeats.
pub fn response_type_words(s: &str) -> Vec<&str> {
    let mut words: Vec<&str> = s.split(' ').collect();
    if words.iter().any(|w| w.is_empty()) {
        return Vec::new();
    }
    words.sort_unstable();
    let n = words.len();
    words.dedup();
    if words.len() != n {
        return Vec::new();
    }
    words
}

/// Go-style duration, as Hydra validates `*_token_lifespan`: `^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$`.
fn is_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() || rest.len() > 64 {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        if let Some(frac) = rest.strip_prefix('.') {
            let d = frac.bytes().take_while(u8::is_ascii_digit).count();
            if d == 0 {
                return false;
            }
            rest = &frac[d..];
        }
        let unit = ["ns", "us", "µs", "ms", "s", "m", "h"]
            .iter()
            .find(|u| rest.starts_with(**u));
        match unit {
            // "ms" must win over "m": the list is ordered so two-letter units come first.
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

/// BCP 47 language tag syntax (RFC 5646 §2.1), checked structurally, case-insensitively:
/// `language ["-" script] ["-" region] *("-" variant) *("-" extension) ["-" privateuse]`, or a
/// private-use tag (`x-...`), or an `i-` grandfathered tag.
pub fn is_language_tag(tag: &str) -> bool {
    if tag.is_empty() || tag.len() > 64 {
        return false;
    }
    let alpha = |p: &str| p.bytes().all(|b| b.is_ascii_alphabetic());
    let digit = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let alnum = |p: &str| p.bytes().all(|b| b.is_ascii_alphanumeric());
    let parts: Vec<&str> = tag.split('-').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || p.len() > 8 || !alnum(p))
    {
        return false;
    }
    let first = parts[0].to_ascii_lowercase();
    if first == "x" || first == "i" {
        // privateuse = "x" 1*("-" 1*8alphanum); irregular grandfathered tags start with "i-".
        return parts.len() > 1;
    }
    let mut i = 1;
    // language = 2*3ALPHA ["-" extlang] / 4ALPHA / 5*8ALPHA
    if !alpha(parts[0]) || parts[0].len() < 2 {
        return false;
    }
    if parts[0].len() <= 3 {
        // extlang = 3ALPHA *2("-" 3ALPHA)
        let mut ext = 0;
        while i < parts.len() && ext < 3 && parts[i].len() == 3 && alpha(parts[i]) {
            i += 1;
            ext += 1;
        }
    }
    // script = 4ALPHA
    if i < parts.len() && parts[i].len() == 4 && alpha(parts[i]) {
        i += 1;
    }
    // region = 2ALPHA / 3DIGIT
    if i < parts.len()
        && ((parts[i].len() == 2 && alpha(parts[i])) || (parts[i].len() == 3 && digit(parts[i])))
    {
        i += 1;
    }
    // variant = 5*8alphanum / (DIGIT 3alphanum)
    while i < parts.len()
        && (parts[i].len() >= 5 || (parts[i].len() == 4 && parts[i].as_bytes()[0].is_ascii_digit()))
    {
        i += 1;
    }
    // extension = singleton 1*("-" (2*8alphanum)); privateuse = "x" 1*("-" (1*8alphanum))
    while i < parts.len() {
        let singleton = parts[i].to_ascii_lowercase();
        if singleton.len() != 1 {
            return false;
        }
        i += 1;
        let start = i;
        if singleton == "x" {
            i = parts.len();
        } else {
            while i < parts.len() && parts[i].len() >= 2 {
                i += 1;
            }
        }
        if i == start {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for ok in ["1h", "1h30m", "0.5s", "10ms", "3µs", "1h2m3s4ms5us6ns"] {
            assert!(is_duration(ok), "{ok}");
        }
        for bad in ["", "h", "1", "1d", "1.h", "-1h", "1h ", "1 h"] {
            assert!(!is_duration(bad), "{bad}");
        }
    }

    #[test]
    fn language_tags() {
        for ok in [
            "en",
            "ja-Jpan-JP",
            "de-CH-1996",
            "zh-Hant",
            "x-private",
            "sr-Latn-RS",
            "EN-us",
            "zh-yue-HK",
            "es-419",
            "en-US-x-twain",
            "de-DE-u-co-phonebk",
            "i-klingon",
        ] {
            assert!(is_language_tag(ok), "{ok}");
        }
        for bad in [
            "",
            "e",
            "en_US",
            "toolonglanguage",
            "en--US",
            "en-",
            "-en",
            "ja-Jpan-JP-toolongsubtag",
            "x",
            "en-US-x",
            "en-a",
            "12",
            "en-US-US",
            "ja-Jpan-Jpan",
            "en-ü",
        ] {
            assert!(!is_language_tag(bad), "{bad}");
        }
    }

    #[test]
    fn emails() {
        assert!(is_email("ops@example.com"));
        assert!(is_email("a.b+c@mail.example"));
        for bad in [
            "",
            "ops",
            "@example.com",
            "ops@",
            "a@b@c",
            "o ps@example.com",
            "ops@exa..mple",
        ] {
            assert!(!is_email(bad), "{bad}");
        }
    }

    #[test]
    fn response_type_words_are_sets() {
        assert_eq!(
            response_type_words("code id_token"),
            response_type_words("id_token code")
        );
        assert!(response_type_words("code  id_token").is_empty());
        assert!(response_type_words("code code").is_empty());
    }
}
