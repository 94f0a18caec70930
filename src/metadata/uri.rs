//! URI checks shared by every URI-valued metadata field.
//!
//! A URI is kept exactly as the client sent it (RFC 9700 §2.1: redirect URIs are compared as exact
//! strings), after checking that it parses and carries nothing a browser or a later comparison
//! could misread: no whitespace or control characters, no fragment (an empty `#` included), no
//! userinfo, no wildcard, and never a scheme that executes or reads locally.

use url::{Host, Url};

/// Schemes never accepted in any URI field, compared case-insensitively (Keycloak CVE-2026-9086,
/// Windmill GHSA-q9xg-f2v2-695g, node-oidc-provider `FORBIDDEN_SCHEMES`).
pub const FORBIDDEN_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "vbscript",
    "file",
    "blob",
    "about",
    "mailto",
    "filesystem",
    "view-source",
];

/// Authorization response parameters (RFC 6749 §4.1.2, §4.1.2.1, §4.2.2; RFC 9207 `iss`; OIDC
/// Core `id_token`, `session_state`; JARM `response`). A redirect URI whose query already carries
/// one lets an attacker pre-set it in the response (Keycloak CVE-2026-9689/CVE-2026-18209).
pub const RESPONSE_PARAMETERS: &[&str] = &[
    "code",
    "state",
    "iss",
    "error",
    "error_description",
    "error_uri",
    "access_token",
    "token_type",
    "expires_in",
    "id_token",
    "session_state",
    "response",
];

/// What a URI field allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriRule {
    /// A redirect URI: any non-forbidden scheme here; the scheme and host rules that depend on
    /// `application_type` and the grant types are a cross-field rule.
    Redirect,
    /// An `http` or `https` URL (web pages shown to users: `client_uri`, `logo_uri`, ...).
    Web,
    /// An `https` URL only (`jwks_uri`, `sector_identifier_uri`, `initiate_login_uri`, ...).
    Https,
    /// `https`, where the fragment is allowed (OIDC Registration §2 `request_uris` carry a hash).
    HttpsWithFragment,
    /// `scheme://host[:port]` with http or https and nothing else (Hydra `allowed_cors_origins`).
    Origin,
}

/// Check `raw` under `rule`; the error text names the problem (the caller adds the field).
pub fn check(raw: &str, rule: UriRule) -> Result<Url, String> {
    if raw.is_empty() {
        return Err("must not be empty".into());
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{raw:?} contains whitespace or control characters"));
    }
    if raw.contains('\\') {
        return Err(format!("{raw:?} contains a backslash"));
    }
    // Stored and echoed as sent, so only an ASCII URI is its own ASCII serialization (issue #12
    // item 8: `https://accounts.google.com⁄.evil.com/` is a host under evil.com).
    super::unicode::ascii_uri(raw)?;
    let url = Url::parse(raw).map_err(|e| format!("{raw:?} is not an absolute URI ({e})"))?;
    let scheme = url.scheme().to_ascii_lowercase();
    if FORBIDDEN_SCHEMES.contains(&scheme.as_str()) {
        return Err(format!("{raw:?} uses the forbidden scheme {scheme:?}"));
    }
    if rule != UriRule::HttpsWithFragment && (url.fragment().is_some() || raw.contains('#')) {
        return Err(format!("{raw:?} must not contain a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{raw:?} must not contain userinfo"));
    }
    if raw.contains('*') {
        return Err(format!("{raw:?} must not contain wildcards"));
    }
    if let Some(segment) = dot_segment(raw) {
        // Stored verbatim but matched byte-exactly later; a path that a parser would rewrite
        // (`/a/../b`, `%2e%2e`, Tomcat's `..;`) is how validation bypasses start (Keycloak
        // CVE-2026-3872).
        return Err(format!(
            "{raw:?} contains the dot segment {segment:?}; register the resolved path"
        ));
    }
    match rule {
        UriRule::Redirect => {
            // Private-use schemes (com.example.app:/cb) have no host; http(s) must have one.
            if matches!(scheme.as_str(), "http" | "https") && url.host().is_none() {
                return Err(format!("{raw:?} has no host"));
            }
            // Response parameters pre-set in the redirect URI would be mixed with the real ones
            // (response parameter pollution, Keycloak CVE-2026-9689).
            if let Some((k, _)) = url
                .query_pairs()
                .find(|(k, _)| RESPONSE_PARAMETERS.contains(&k.as_ref()))
            {
                return Err(format!(
                    "{raw:?} carries the authorization response parameter {k:?} in its query"
                ));
            }
        }
        UriRule::Web => require_scheme(raw, &url, &["http", "https"])?,
        UriRule::Https | UriRule::HttpsWithFragment => require_scheme(raw, &url, &["https"])?,
        UriRule::Origin => {
            require_scheme(raw, &url, &["http", "https"])?;
            let bare = url.path() == "/" && !raw.ends_with('/');
            if !bare || url.query().is_some() {
                return Err(format!(
                    "{raw:?} must be an origin (scheme://host[:port]) without path, query or fragment"
                ));
            }
        }
    }
    Ok(url)
}

/// The first path segment of `raw` that is `.`, `..` (also percent-encoded) or starts with
/// `..;`, if any.
fn dot_segment(raw: &str) -> Option<String> {
    let after_scheme = raw.split_once(':').map_or(raw, |(_, rest)| rest);
    let path_and_more = match after_scheme.strip_prefix("//") {
        Some(authority_and_path) => authority_and_path
            .find('/')
            .map_or("", |i| &authority_and_path[i..]),
        None => after_scheme,
    };
    let path = path_and_more.split(['?', '#']).next().unwrap_or_default();
    path.split('/')
        .find(|seg| {
            let decoded = seg.to_ascii_lowercase().replace("%2e", ".");
            decoded == "." || decoded == ".." || decoded.starts_with("..;")
        })
        .map(str::to_owned)
}

fn require_scheme(raw: &str, url: &Url, allowed: &[&str]) -> Result<(), String> {
    if !allowed.contains(&url.scheme()) {
        return Err(format!("{raw:?} must use {}", allowed.join(" or ")));
    }
    if url.host().is_none() {
        return Err(format!("{raw:?} has no host"));
    }
    Ok(())
}

/// For a URL whose host is an IP literal in a reserved range (loopback, private, link-local,
/// cloud metadata, ...; the fetcher's list, `crate::fetch::ip`), why it is reserved. Such a URL
/// in a field the authorization server or a browser dereferences hands the SSRF downstream.
pub fn reserved_literal(url: &Url) -> Option<&'static str> {
    match url.host()? {
        Host::Ipv4(v4) => crate::fetch::ip::reserved(std::net::IpAddr::V4(v4)),
        Host::Ipv6(v6) => crate::fetch::ip::reserved(std::net::IpAddr::V6(v6)),
        Host::Domain(_) => None,
    }
}

/// Whether the URL's host is a loopback IP literal (`127.0.0.0/8` or `[::1]`). The name
/// `localhost` is not: RFC 8252 §8.3 says it is NOT RECOMMENDED, and string prefix checks on it
/// were Keycloak CVE-2026-18211.
pub fn is_loopback_ip(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// Whether the host is a loopback IP literal or exactly `localhost` (any letter case): the hosts
/// of RFC 8252 §7.3 loopback redirects. Subdomains of `localhost` are not: the name was spelled
/// out by the client, and exact names are what the authorization endpoint will compare.
pub fn is_loopback_host(url: &Url) -> bool {
    is_loopback_ip(url)
        || matches!(url.host(), Some(Host::Domain(d)) if d.eq_ignore_ascii_case("localhost"))
}

/// Whether the host is `localhost` or a loopback IP literal.
pub fn is_local(url: &Url) -> bool {
    is_loopback_ip(url)
        || matches!(url.host(), Some(Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_schemes_are_refused_in_any_case() {
        for raw in [
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "javascript://example.com/%0aalert(1)",
            "data:text/html,<script>",
            "vbscript:x",
            "file:///etc/passwd",
            "blob:https://a/b",
            "about:blank",
            "mailto:x@y",
        ] {
            assert!(check(raw, UriRule::Redirect).is_err(), "{raw}");
        }
    }

    #[test]
    fn hygiene() {
        for raw in [
            " https://a.example/cb",
            "java\tscript:alert(1)",
            "https://exa\tmple.com/cb",
            "https://client.example/cb\u{0}",
            "https://client.example/cb#",
            "https://client.example/cb#x",
            "https://legit.example@evil.example/cb",
            "https://a@b@evil.example/cb",
            "https://*.example.com/cb",
            "https://client.example/*",
            "/relative/cb",
            "",
        ] {
            assert!(check(raw, UriRule::Redirect).is_err(), "{raw:?}");
        }
        assert!(check("https://client.example/cb", UriRule::Redirect).is_ok());
        for raw in [
            "https://client.example/a/../b",
            "https://client.example/a/%2E%2e/b",
            "https://client.example/a/..;/b",
            "https://client.example/./cb",
            "https://client.example/cb/..",
            "com.example.app:/a/../cb",
            "https://client.example/cb?code=evil",
            "https://client.example/cb?x=1&state=s",
            "https://client.example/cb?iss=https://evil",
        ] {
            assert!(check(raw, UriRule::Redirect).is_err(), "{raw:?}");
        }
        assert!(check(
            "https://client.example/a..b/c.d?next=/x/../y",
            UriRule::Redirect
        )
        .is_ok());
        assert!(check(
            "https://client.example/cb?codes=1&tenant=a",
            UriRule::Redirect
        )
        .is_ok());
        assert!(check("https://client.example/cb?code=1", UriRule::Web).is_ok());
        assert!(check("com.example.app:/cb", UriRule::Redirect).is_ok());
        assert!(check("http://127.0.0.1:5000/cb", UriRule::Redirect).is_ok());
    }

    #[test]
    fn rules() {
        assert!(check("http://a.example/", UriRule::Web).is_ok());
        assert!(check("ftp://a.example/", UriRule::Web).is_err());
        assert!(check("http://a.example/", UriRule::Https).is_err());
        assert!(check("https://a.example/r#hash", UriRule::HttpsWithFragment).is_ok());
        assert!(check("https://a.example:8443", UriRule::Origin).is_ok());
        assert!(check("https://a.example/", UriRule::Origin).is_err());
        assert!(check("https://a.example/p", UriRule::Origin).is_err());
    }

    #[test]
    fn loopback_is_an_ip_literal() {
        let u = |s| Url::parse(s).unwrap();
        assert!(is_loopback_ip(&u("http://127.0.0.1/cb")));
        assert!(is_loopback_ip(&u("http://[::1]:99/cb")));
        assert!(!is_loopback_ip(&u("http://localhost/cb")));
        assert!(!is_loopback_ip(&u("http://127.0.0.1.evil.test/cb")));
        assert!(!is_loopback_ip(&u("http://localhost.evil.test/cb")));
        assert!(is_local(&u("http://localhost/cb")));
        assert!(is_loopback_host(&u("http://LOCALHOST:3000/cb")));
        assert!(is_loopback_host(&u("http://127.0.0.1/cb")));
        assert!(is_loopback_host(&u("http://[::1]/cb")));
        assert!(!is_loopback_host(&u("http://a.localhost/cb")));
        assert!(!is_loopback_host(&u("http://localhost.evil.test/cb")));
    }
}
