//! Outbound fetches of URLs that clients register (`sector_identifier_uri`, `jwks_uri`), made safe
//! against server-side request forgery.
//!
//! A client's metadata names URLs the registrar must dereference (OpenID Connect Registration §5,
//! OpenID Connect Core §8.1; RFC 7591 §2 `jwks_uri`). Fetching them naively lets anyone make the
//! server probe its own network (Keycloak, MITREid and others shipped that). The rules here:
//!
//! - `https` only, no userinfo; a URL is re-parsed here rather than trusted from the caller.
//! - An IP-literal host is checked before anything is sent: hyper's connector never consults a
//!   resolver for literals, so a resolver-only guard would miss `https://169.254.169.254/`. The
//!   `url` crate has already turned `2130706433`, `0x7f000001` and `0177.0.0.1` into
//!   `Host::Ipv4(127.0.0.1)`, so the parsed host is checked, never the string.
//! - A name is resolved once by `PinningResolver`; if ANY address is reserved the fetch fails
//!   (so a mixed record set cannot be used to probe), else reqwest connects to exactly those
//!   addresses. There is no second lookup, hence no DNS-rebinding window.
//! - No proxy (`no_proxy()`: a proxy would resolve names itself and bypass the check), no
//!   redirects (a 3xx is an error), one total deadline, a streamed body cap, status 200 and a JSON
//!   content type.
//! - Cost control: a semaphore bounds fetches in flight; a host that was unreachable or too slow
//!   is not contacted again for `failure_ttl_ms`, nor is a URL that answered 5xx (by its exact
//!   URL: other documents on the same host are still fetched).

pub mod ip;
mod remote;

pub use remote::RemoteMetadata;

use crate::logsafe::escaped;
use crate::settings::FetchSettings;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::redirect::Policy;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use url::{Host, Url};

/// Most hosts remembered in the negative cache; beyond it, expired entries are pruned and, if
/// still full, the new failure is not remembered (memory stays bounded under a flood).
const MAX_REMEMBERED_FAILURES: usize = 10_000;

/// Why a fetch failed. The `Display` text is safe to return to the client: it never contains the
/// fetched body (or any other remote-controlled text).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    /// The URL is not an absolute `https` URL with a host and without userinfo.
    #[error("must be an https URL with a host and no userinfo")]
    NotHttps,
    /// The host is an IP literal in a reserved range; nothing was sent. The client wrote the
    /// address, so naming its range tells it nothing new.
    #[error("points to a loopback, private, link-local or otherwise reserved address ({0}); the registrar does not fetch such addresses")]
    Reserved(&'static str),
    /// The host name does not resolve, or resolves to at least one reserved address; nothing was
    /// sent. One message (and one negative-cache treatment) for both, so that registering
    /// `https://db.internal/` does not reveal whether that internal name exists.
    #[error("could not be fetched: the host name does not resolve to public addresses only; the registrar does not fetch loopback, private, link-local or otherwise reserved addresses")]
    NoPublicAddress,
    /// Connecting, the TLS handshake or the exchange failed, or the deadline passed. One message
    /// for all of them, so the error does not tell a port scanner which one it was.
    #[error("could not be fetched: no complete HTTPS answer within {0} ms (connection refused, TLS failure or too slow)")]
    Unreachable(u64),
    /// The server answered with a redirect, which is never followed.
    #[error("answered with a redirect (HTTP {0}); redirects are not followed")]
    Redirect(u16),
    /// The server answered with a status other than 200.
    #[error("answered with HTTP status {0}; expected 200")]
    Status(u16),
    /// The response's content type is not JSON.
    #[error("did not answer with a JSON content type (application/json or application/*+json)")]
    NotJsonContentType,
    /// The body is larger than the configured cap.
    #[error("answered with more than {0} bytes")]
    TooLarge(usize),
    /// The body is not valid JSON (UTF-8 included).
    #[error("answered with a body that is not valid JSON")]
    NotJson,
    /// The host (unreachable) or this URL (5xx) failed recently and is in the negative cache.
    #[error("could not be fetched: it failed moments ago; try again in {0} s")]
    RecentlyFailed(u64),
    /// Too many fetches are in flight.
    #[error("too many outbound fetches in progress")]
    Busy,
}

impl FetchError {
    /// A bounded label for the `registrar_fetch_total` metric's `outcome`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotHttps => "not_https",
            Self::Reserved(_) | Self::NoPublicAddress => "reserved_address",
            Self::Unreachable(_) => "unreachable",
            Self::Redirect(_) => "redirect",
            Self::Status(_) => "bad_status",
            Self::NotJsonContentType | Self::NotJson => "not_json",
            Self::TooLarge(_) => "too_large",
            Self::RecentlyFailed(_) => "recently_failed",
            Self::Busy => "busy",
        }
    }
}

/// A fetched JSON document with the response headers that say how long it may be cached
/// (RFC 9111 §5), unparsed: each caller decides what they mean to it.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The parsed body.
    pub json: serde_json::Value,
    /// `Cache-Control`, `Expires`, `Age` and `Date`, as sent.
    pub caching: CachingHeaders,
}

/// The caching headers of a response (RFC 9111 §5.1–5.3, RFC 9110 §6.6.1), verbatim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CachingHeaders {
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// `Expires`.
    pub expires: Option<String>,
    /// `Age`.
    pub age: Option<String>,
    /// `Date`.
    pub date: Option<String>,
}

/// Marker error the resolver returns when a name resolves to a reserved address; found again by
/// walking the reqwest error's source chain.
#[derive(Debug)]
struct ReservedAddress(&'static str);

impl std::fmt::Display for ReservedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "resolves to a reserved address ({})", self.0)
    }
}

impl std::error::Error for ReservedAddress {}

/// Marker error for a name that resolved to no address at all.
#[derive(Debug)]
struct NoAddress;

impl std::fmt::Display for NoAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the name does not resolve")
    }
}

impl std::error::Error for NoAddress {}

/// A reqwest resolver that resolves once with the system resolver and refuses the whole answer if
/// any address is reserved. reqwest connects to exactly the addresses returned here, so the
/// checked address is the connected address.
struct PinningResolver {
    allow_private: bool,
}

impl Resolve for PinningResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|_| NoAddress)?
                .collect();
            if addrs.is_empty() {
                return Err(NoAddress.into());
            }
            if !allow_private {
                if let Some(why) = addrs.iter().find_map(|a| ip::reserved(a.ip())) {
                    return Err(ReservedAddress(why).into());
                }
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The SSRF-safe JSON fetcher. One per server; cheap to share behind an `Arc`.
pub struct Fetcher {
    client: reqwest::Client,
    timeout: Duration,
    max_body: usize,
    allow_private: bool,
    failure_ttl: Duration,
    permits: Semaphore,
    failures: Mutex<HashMap<String, Instant>>,
}

/// Why the fetcher could not be built (a bad `extra_root_ca_file`, mostly).
#[derive(Debug, thiserror::Error)]
#[error("fetch client: {0}")]
pub struct BuildError(pub(crate) String);

impl Fetcher {
    /// Build the client from `[fetch]` settings. Logs a warning when private addresses are
    /// allowed, because that setting turns registration into an SSRF probe if used in production.
    pub fn new(settings: &FetchSettings) -> Result<Self, BuildError> {
        let timeout = Duration::from_millis(settings.timeout_ms);
        let builder = safe_client_builder(settings, timeout)?
            // Every fetch opens its own connection: fetches are rare, and a pooled connection
            // would outlive the negative cache's view of the host.
            .pool_max_idle_per_host(0);
        let client = builder.build().map_err(|e| BuildError(e.to_string()))?;
        if settings.allow_private_addresses {
            tracing::warn!(
                "fetch.allow_private_addresses is ON: sector_identifier_uri and jwks_uri may point \
                 to loopback, private and link-local addresses (cloud metadata included). \
                 Use this only in tests or closed networks"
            );
        }
        Ok(Self {
            client,
            timeout,
            max_body: settings.max_body_bytes,
            allow_private: settings.allow_private_addresses,
            failure_ttl: Duration::from_millis(settings.failure_ttl_ms),
            permits: Semaphore::new(settings.max_concurrent),
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// GET `raw` under the SSRF rules above and parse the body as JSON.
    pub async fn get_json(&self, raw: &str) -> Result<serde_json::Value, FetchError> {
        self.get_document(raw, self.max_body)
            .await
            .map(|fetched| fetched.json)
    }

    /// Like [`Fetcher::get_json`] with a body cap of its own (`max_body`, e.g. the 5 KB of the
    /// client ID metadata document draft §8.7), keeping the response's caching headers.
    pub async fn get_document(&self, raw: &str, max_body: usize) -> Result<Fetched, FetchError> {
        let url = check_url(raw, self.allow_private)?;
        let host = host_key(&url);
        let full = url.as_str().to_owned();
        self.check_negative_cache(&host, Instant::now())?;
        self.check_negative_cache(&full, Instant::now())?;
        // Wait for a slot at most half the deadline, so a queued request still ends within
        // 1.5 × timeout_ms and a flood turns into quick 429s rather than a growing queue.
        let _permit = tokio::time::timeout(self.timeout / 2, self.permits.acquire())
            .await
            .map_err(|_| FetchError::Busy)?
            .map_err(|_| FetchError::Busy)?;
        let result = match tokio::time::timeout(self.timeout, self.exchange(url, max_body)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Unreachable(self.timeout.as_millis() as u64)),
        };
        // Only failures that cost a connection attempt are remembered; a document the client can
        // fix (wrong content, 404) may be retried at once. A host that cannot be reached is
        // remembered by host and port: every URL on it would fail the same way. A 5xx is
        // remembered by its exact URL only, so one registrant's failing path on a shared host
        // cannot block everyone else's documents there (issue #12 item 2).
        match result {
            Err(FetchError::Unreachable(_) | FetchError::NoPublicAddress) => {
                self.remember_failure(host, Instant::now())
            }
            Err(FetchError::Status(500..)) => self.remember_failure(full, Instant::now()),
            _ => {}
        }
        result
    }

    async fn exchange(&self, url: Url, max_body: usize) -> Result<Fetched, FetchError> {
        let host = url.host_str().unwrap_or_default().to_owned();
        let response = self
            .client
            .get(url)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| self.classify(&host, e))?;
        let status = response.status().as_u16();
        if response.status().is_redirection() {
            return Err(FetchError::Redirect(status));
        }
        if status != 200 {
            return Err(FetchError::Status(status));
        }
        if !response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_media_type)
        {
            return Err(FetchError::NotJsonContentType);
        }
        let header = |name: reqwest::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let caching = CachingHeaders {
            cache_control: header(reqwest::header::CACHE_CONTROL),
            expires: header(reqwest::header::EXPIRES),
            age: header(reqwest::header::AGE),
            date: header(reqwest::header::DATE),
        };
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body as u64) {
            return Err(FetchError::TooLarge(max_body));
        }
        let mut response = response;
        let mut body = Vec::with_capacity(declared.unwrap_or(0).min(max_body as u64) as usize);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.classify(&host, e))?
        {
            if body.len() + chunk.len() > max_body {
                return Err(FetchError::TooLarge(max_body));
            }
            body.extend_from_slice(&chunk);
        }
        let json = serde_json::from_slice(&body).map_err(|_| FetchError::NotJson)?;
        Ok(Fetched { json, caching })
    }

    /// Map a transport error; the resolver's verdicts are found in the source chain.
    fn classify(&self, host: &str, e: reqwest::Error) -> FetchError {
        classify(host, self.timeout, e)
    }

    /// `now` is a parameter (monotonic time, never the wall clock) so tests can move it.
    fn check_negative_cache(&self, key: &str, now: Instant) -> Result<(), FetchError> {
        if self.failure_ttl.is_zero() {
            return Ok(());
        }
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failures.get(key) {
            Some(until) if *until > now => {
                let left = until.saturating_duration_since(now);
                Err(FetchError::RecentlyFailed(left.as_secs().max(1)))
            }
            Some(_) => {
                failures.remove(key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn remember_failure(&self, key: String, now: Instant) {
        if self.failure_ttl.is_zero() {
            return;
        }
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_REMEMBERED_FAILURES {
            failures.retain(|_, until| *until > now);
        }
        if failures.len() < MAX_REMEMBERED_FAILURES {
            failures.insert(key, now + self.failure_ttl);
        }
    }
}

/// Map a transport error of the safe client; the resolver's verdicts are found in the source
/// chain. Shared with the webhook sender (`crate::events::worker`).
pub(crate) fn classify(host: &str, timeout: Duration, e: reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(ReservedAddress(why)) = err.downcast_ref::<ReservedAddress>() {
            tracing::warn!(
                host = %escaped(host),
                reason = why,
                "refused to fetch a name that resolves to a reserved address"
            );
            return FetchError::NoPublicAddress;
        }
        if err.downcast_ref::<NoAddress>().is_some() {
            tracing::info!(host = %escaped(host), "outbound fetch: the name does not resolve");
            return FetchError::NoPublicAddress;
        }
        source = err.source();
    }
    // Without the URL: it may carry a client's query parameters.
    tracing::info!(host = %escaped(host), error = %escaped(e.without_url()), "outbound fetch failed");
    FetchError::Unreachable(timeout.as_millis() as u64)
}

/// Parse `raw` and apply the checks made before any I/O: an absolute `https` URL with a host
/// and no userinfo, and (unless `allow_private`) no reserved IP literal. Shared with the
/// webhook sender.
pub(crate) fn check_url(raw: &str, allow_private: bool) -> Result<Url, FetchError> {
    let url = Url::parse(raw).map_err(|_| FetchError::NotHttps)?;
    if url.scheme() != "https"
        || !url.username().is_empty()
        || url.password().is_some()
        || url.host().is_none()
    {
        return Err(FetchError::NotHttps);
    }
    if !allow_private {
        if let Some(why) = literal_reserved(&url) {
            tracing::warn!(
                host = %escaped(url.host_str().unwrap_or_default()),
                reason = why,
                "refused to fetch a reserved address"
            );
            return Err(FetchError::Reserved(why));
        }
    }
    Ok(url)
}

/// The reqwest client builder with the SSRF rules: rustls, https only, no proxy, no
/// redirects, `timeout` for connect and whole exchange, HTTP/1.1, the pinning resolver, and the
/// extra roots of `extra_root_ca_file`. Shared with the webhook sender, which adds its own
/// pool settings.
pub(crate) fn safe_client_builder(
    settings: &FetchSettings,
    timeout: Duration,
) -> Result<reqwest::ClientBuilder, BuildError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .https_only(true)
        .no_proxy()
        .redirect(Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .http1_only()
        .dns_resolver(Arc::new(PinningResolver {
            allow_private: settings.allow_private_addresses,
        }));
    if !settings.extra_root_ca_file.is_empty() {
        let pem = std::fs::read(&settings.extra_root_ca_file)
            .map_err(|e| BuildError(format!("{}: {e}", settings.extra_root_ca_file)))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| BuildError(format!("{}: {e}", settings.extra_root_ca_file)))?;
        if certs.is_empty() {
            return Err(BuildError(format!(
                "{}: no PEM certificate found",
                settings.extra_root_ca_file
            )));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

/// For an IP-literal host, why it is reserved (if it is).
fn literal_reserved(url: &Url) -> Option<&'static str> {
    match url.host()? {
        Host::Ipv4(v4) => ip::reserved(IpAddr::V4(v4)),
        Host::Ipv6(v6) => ip::reserved(IpAddr::V6(v6)),
        Host::Domain(_) => None,
    }
}

/// The negative cache key: host and effective port.
fn host_key(url: &Url) -> String {
    format!(
        "{}:{}",
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or(443)
    )
}

/// `application/json` or any `type/subtype+json` (e.g. `application/jwk-set+json`), parameters
/// ignored, case-insensitive (RFC 9110 §8.3.1).
fn is_json_media_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .split_once('/')
            .is_some_and(|(_, sub)| sub.ends_with("+json") && sub.len() > "+json".len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> FetchSettings {
        FetchSettings {
            timeout_ms: 500,
            max_body_bytes: 1024,
            fetch_jwks_uri: true,
            allow_private_addresses: false,
            max_concurrent: 2,
            failure_ttl_ms: 1000,
            extra_root_ca_file: String::new(),
        }
    }

    #[test]
    fn shipped_defaults_are_the_safe_ones() {
        let f = crate::settings::Settings::defaults().unwrap().fetch;
        assert!(!f.allow_private_addresses);
        assert!(f.fetch_jwks_uri);
        assert_eq!(f.timeout_ms, 3000);
        assert_eq!(f.max_body_bytes, 64 * 1024);
        assert!(f.extra_root_ca_file.is_empty());
        assert!(f.max_concurrent > 0 && f.failure_ttl_ms > 0);
    }

    #[test]
    fn a_missing_or_empty_ca_file_stops_the_start() {
        let mut s = settings();
        s.extra_root_ca_file = "/nonexistent/ca.pem".into();
        assert!(Fetcher::new(&s).is_err());
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "not a certificate").unwrap();
        s.extra_root_ca_file = file.path().to_str().unwrap().into();
        assert!(Fetcher::new(&s).is_err());
    }

    #[test]
    fn json_media_types() {
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/jwk-set+json",
            "application/problem+json ;x=y",
        ] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for bad in [
            "text/html",
            "application/jsonp",
            "text/plain; x=+json",
            "+json",
            "application/+json",
        ] {
            assert!(!is_json_media_type(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn non_https_and_userinfo_are_refused_before_any_io() {
        let f = Fetcher::new(&settings()).unwrap();
        for raw in [
            "http://example.com/s.json",
            "ftp://example.com/",
            "https://user@example.com/",
            "https://u:p@example.com/",
            "not a url",
        ] {
            assert_eq!(f.get_json(raw).await, Err(FetchError::NotHttps), "{raw}");
        }
    }

    #[tokio::test]
    async fn reserved_literals_are_refused_whatever_their_spelling() {
        let f = Fetcher::new(&settings()).unwrap();
        for raw in [
            "https://2130706433/",
            "https://0x7f000001/",
            "https://0177.0.0.1/",
            "https://127.1/",
            "https://169.254.169.254./latest/meta-data/",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:a9fe:a9fe]/",
            "https://[64:ff9b::a9fe:a9fe]/",
            "https://[2002:a9fe:a9fe::]/",
            "https://[fe80::1]/",
            "https://[fd00::1]/",
            "https://0.0.0.0/",
            "https://[::]/",
            "https://100.64.0.1/",
            "https://198.18.0.1/",
            "https://192.0.2.1/",
        ] {
            assert!(
                matches!(f.get_json(raw).await, Err(FetchError::Reserved(_))),
                "{raw}"
            );
        }
    }

    #[tokio::test]
    async fn a_failing_host_is_remembered_for_the_ttl() {
        let f = Fetcher::new(&settings()).unwrap();
        let t0 = Instant::now();
        f.remember_failure("a.example:443".into(), t0);
        assert!(matches!(
            f.check_negative_cache("a.example:443", t0),
            Err(FetchError::RecentlyFailed(1))
        ));
        assert!(matches!(
            f.check_negative_cache("a.example:443", t0 + Duration::from_millis(999)),
            Err(FetchError::RecentlyFailed(1))
        ));
        assert_eq!(f.check_negative_cache("b.example:443", t0), Ok(()));
        assert_eq!(
            f.check_negative_cache("a.example:443", t0 + Duration::from_millis(1000)),
            Ok(())
        );
    }
}
