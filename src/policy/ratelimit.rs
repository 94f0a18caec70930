//! Token buckets (security.md §5.2) on the `governor` crate (GCRA): per source on registration and
//! on management calls, per client on management calls.
//!
//! Keyed state is bounded: sources are IPv4 addresses or IPv6 /64 prefixes (one host owns a
//! whole /64, so finer keys would let it mint buckets at will); idle entries are dropped with
//! `retain_recent` every [`SWEEP_EVERY`] checks; and when `max_tracked_sources` entries are live
//! anyway, sources not yet tracked share one overflow bucket instead of growing the map (sources
//! already tracked keep their own).
//!
//! The limiter runs on a monotonic clock, not the injected wall clock: buckets need sub-second
//! precision and must not jump when the wall clock does.

use super::config::RateLimitSettings;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::{HashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use ipnet::IpNet;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Checks between two sweeps of idle sources.
pub const SWEEP_EVERY: u64 = 256;

/// The key shared by sources that arrive while the table is full.
const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// governor's hash-map store behind an `Arc`, so the limiter can ask whether a key is tracked
/// (governor itself has no `contains`).
struct SharedStore<K: Hash + Eq + Clone>(Arc<HashMapStateStore<K>>);

impl<K: Hash + Eq + Clone> StateStore for SharedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for SharedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        self.0.retain_recent(drop_below)
    }

    fn shrink_to_fit(&self) {
        self.0.shrink_to_fit()
    }

    fn len(&self) -> usize {
        ShrinkableKeyedStateStore::len(self.0.as_ref())
    }

    fn is_empty(&self) -> bool {
        ShrinkableKeyedStateStore::is_empty(self.0.as_ref())
    }
}

/// A keyed token bucket with a bounded table (see the module documentation): idle keys are
/// swept every [`SWEEP_EVERY`] checks, and while `max_keys` keys are live, keys not yet tracked
/// share the `overflow` bucket. Keys already tracked keep their own bucket, so a flood of new
/// sources cannot push a known source into the shared (and by then empty) bucket.
pub struct KeyedLimiter<K: Hash + Eq + Clone, C: Clock = DefaultClock> {
    limiter: RateLimiter<K, SharedStore<K>, C, NoOpMiddleware<C::Instant>>,
    table: Arc<HashMapStateStore<K>>,
    clock: C,
    max_keys: usize,
    overflow: K,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// `burst` takes, one more every `period`; `what` names the settings in errors.
    pub fn new(
        burst: u32,
        period_ms: u64,
        max_keys: usize,
        overflow: K,
        what: &str,
    ) -> Result<Self, String> {
        Self::with_clock(
            burst,
            period_ms,
            max_keys,
            overflow,
            what,
            DefaultClock::default(),
        )
    }
}

impl<K: Hash + Eq + Clone, C: Clock + Clone> KeyedLimiter<K, C> {
    /// [`KeyedLimiter::new`] on another monotonic clock (tests move a fake one).
    pub fn with_clock(
        burst: u32,
        period_ms: u64,
        max_keys: usize,
        overflow: K,
        what: &str,
        clock: C,
    ) -> Result<Self, String> {
        let burst = NonZeroU32::new(burst).ok_or(format!("{what}: burst must be > 0"))?;
        let quota = Quota::with_period(Duration::from_millis(period_ms))
            .ok_or(format!("{what}: period_ms must be > 0"))?
            .allow_burst(burst);
        if max_keys == 0 {
            return Err(format!("{what}: max_tracked_sources must be > 0"));
        }
        let table = Arc::new(HashMapStateStore::default());
        Ok(Self {
            limiter: RateLimiter::new(quota, SharedStore(table.clone()), clock.clone()),
            table,
            clock,
            max_keys,
            overflow,
            checks: AtomicU64::new(0),
        })
    }

    /// Take one token for `key`; `Err(seconds)` to wait when its bucket is empty.
    pub fn check(&self, key: K) -> Result<(), u64> {
        let n = self.checks.fetch_add(1, Ordering::Relaxed);
        // A sweep is O(tracked keys); doing one per check while the table is full would let a
        // flood buy a full scan per request, so sweeps stay periodic whatever the load.
        if n % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
        }
        let mut key = key;
        if self.limiter.len() >= self.max_keys && !self.table.lock().contains_key(&key) {
            key = self.overflow.clone();
        }
        self.limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// Number of tracked keys (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

/// The registration rate limiter: a [`KeyedLimiter`] over [`source_key`]s.
pub struct RegistrationLimiter(KeyedLimiter<IpAddr>);

impl std::fmt::Debug for RegistrationLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationLimiter")
            .field("tracked", &self.0.tracked())
            .finish()
    }
}

/// The bucket key of `ip`: IPv4 (IPv4-mapped IPv6 included) as is, IPv6 by its /64.
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl RegistrationLimiter {
    /// A limiter per the settings, or `None` when rate limiting is off.
    pub fn new(settings: &RateLimitSettings) -> Result<Option<Self>, String> {
        Self::with_quota(settings, settings.burst, settings.period_ms, "rate_limit")
    }

    /// The per-source limiter of the management endpoints (`rate_limit.management_*`).
    pub fn management(settings: &RateLimitSettings) -> Result<Option<Self>, String> {
        Self::with_quota(
            settings,
            settings.management_burst,
            settings.management_period_ms,
            "rate_limit.management",
        )
    }

    fn with_quota(
        settings: &RateLimitSettings,
        burst: u32,
        period_ms: u64,
        what: &str,
    ) -> Result<Option<Self>, String> {
        if !settings.enabled {
            return Ok(None);
        }
        KeyedLimiter::new(
            burst,
            period_ms,
            settings.max_tracked_sources,
            OVERFLOW,
            what,
        )
        .map(|l| Some(Self(l)))
    }

    /// Take one token for `ip`; `Err(seconds)` to wait when its bucket is empty.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        self.0.check(source_key(ip))
    }

    /// Number of tracked sources (for tests and metrics).
    pub fn tracked_sources(&self) -> usize {
        self.0.tracked()
    }
}

/// Which address a request comes from: the socket peer, or, when the peer is a trusted proxy,
/// the address the proxy reports in the configured header.
#[derive(Debug, Clone, Default)]
pub struct ClientIpResolver {
    trusted: Vec<IpNet>,
    header: Option<String>,
}

impl ClientIpResolver {
    /// Build from `[rate_limit]`.
    pub fn new(settings: &RateLimitSettings) -> Result<Self, String> {
        let mut trusted = Vec::new();
        for entry in &settings.trusted_proxies {
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!("rate_limit.trusted_proxies: {entry:?} is not an IP address or CIDR")
                })?;
            trusted.push(net);
        }
        let header = settings.client_ip_header.trim().to_ascii_lowercase();
        Ok(Self {
            trusted,
            header: (!header.is_empty()).then_some(header),
        })
    }

    /// The header to read, if the resolver uses one.
    pub fn header(&self) -> Option<&str> {
        self.header.as_deref()
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client address of a request from `peer` carrying `header_values` (every occurrence
    /// of the configured header, in order). Walks the reported chain from the right and takes
    /// the first address that is not itself a trusted proxy, so a client cannot choose its key
    /// by prepending addresses.
    pub fn resolve(&self, peer: IpAddr, header_values: &[&str]) -> IpAddr {
        let Some(header) = &self.header else {
            return peer;
        };
        if !self.is_trusted(peer) {
            return peer;
        }
        let chain: Vec<IpAddr> = header_values
            .iter()
            .flat_map(|v| v.split(','))
            .filter_map(|item| {
                if header == "forwarded" {
                    item.split(';').find_map(|pair| {
                        let (k, v) = pair.split_once('=')?;
                        k.trim()
                            .eq_ignore_ascii_case("for")
                            .then(|| parse_address(v))
                            .flatten()
                    })
                } else {
                    parse_address(item)
                }
            })
            .collect();
        chain
            .iter()
            .rev()
            .find(|ip| !self.is_trusted(**ip))
            .or_else(|| chain.first())
            .copied()
            .unwrap_or(peer)
    }
}

/// `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]:80`, `"[::1]:80"`.
fn parse_address(raw: &str) -> Option<IpAddr> {
    let s = raw.trim().trim_matches('"');
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            s.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| r.parse().ok())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RateLimitSettings {
        RateLimitSettings {
            enabled: true,
            burst: 2,
            period_ms: 60_000,
            max_tracked_sources: 3,
            management_burst: 2,
            management_period_ms: 60_000,
            client_burst: 2,
            client_period_ms: 60_000,
            secret_failures_before_backoff: 5,
            secret_backoff_max_secs: 300,
            trusted_proxies: vec!["10.0.0.0/8".into(), "127.0.0.1".into()],
            client_ip_header: "X-Forwarded-For".into(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn buckets_are_per_source_and_report_the_wait() {
        let limiter = RegistrationLimiter::new(&settings()).unwrap().unwrap();
        assert!(limiter.check(ip("192.0.2.1")).is_ok());
        assert!(limiter.check(ip("192.0.2.1")).is_ok());
        let wait = limiter.check(ip("192.0.2.1")).unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(limiter.check(ip("192.0.2.2")).is_ok());
    }

    #[test]
    fn ipv6_sources_are_keyed_by_their_64_prefix() {
        let limiter = RegistrationLimiter::new(&settings()).unwrap().unwrap();
        assert!(limiter.check(ip("2001:db8::1")).is_ok());
        assert!(limiter.check(ip("2001:db8::2")).is_ok());
        assert!(limiter.check(ip("2001:db8::3")).is_err());
        assert_eq!(source_key(ip("::ffff:192.0.2.9")), ip("192.0.2.9"));
    }

    #[test]
    fn the_table_of_sources_stays_bounded() {
        let limiter = RegistrationLimiter::new(&settings()).unwrap().unwrap();
        for i in 0..50u8 {
            let _ = limiter.check(IpAddr::from([198, 51, 100, i]));
        }
        assert!(
            limiter.tracked_sources() <= 4,
            "{}",
            limiter.tracked_sources()
        );
    }

    #[test]
    fn a_tracked_source_keeps_its_own_bucket_when_the_table_is_full() {
        let mut s = settings();
        s.burst = 3;
        let limiter = RegistrationLimiter::new(&s).unwrap().unwrap();
        assert!(limiter.check(ip("192.0.2.1")).is_ok());
        // Newcomers fill the table, then drain the shared overflow bucket.
        for i in 0..20u8 {
            let _ = limiter.check(IpAddr::from([198, 51, 100, i]));
        }
        assert!(
            limiter.check(ip("198.51.100.200")).is_err(),
            "overflow is drained"
        );
        // The tracked source still has its own two tokens left.
        assert!(limiter.check(ip("192.0.2.1")).is_ok());
        assert!(limiter.check(ip("192.0.2.1")).is_ok());
        assert!(limiter.check(ip("192.0.2.1")).is_err());
    }

    #[test]
    fn a_flood_of_distinct_sources_stays_bounded_and_idle_ones_are_swept() {
        let clock = governor::clock::FakeRelativeClock::default();
        let limiter =
            KeyedLimiter::with_clock(1, 10, 1000, OVERFLOW, "test", clock.clone()).unwrap();
        for i in 0..20_000u32 {
            let _ = limiter.check(IpAddr::from(i.to_be_bytes()));
            assert!(limiter.tracked() <= 1001);
        }
        // Once their buckets have refilled, idle sources are forgotten at the next sweep.
        clock.advance(Duration::from_millis(30));
        for _ in 0..SWEEP_EVERY {
            let _ = limiter.check(ip("203.0.113.1"));
        }
        assert!(limiter.tracked() <= 2, "{}", limiter.tracked());
    }

    #[test]
    fn an_empty_bucket_refills_after_its_period() {
        let clock = governor::clock::FakeRelativeClock::default();
        let limiter =
            KeyedLimiter::with_clock(2, 60_000, 10, OVERFLOW, "test", clock.clone()).unwrap();
        let a = ip("192.0.2.1");
        assert!(limiter.check(a).is_ok());
        assert!(limiter.check(a).is_ok());
        assert_eq!(limiter.check(a), Err(60));
        clock.advance(Duration::from_millis(59_500));
        assert_eq!(limiter.check(a), Err(1));
        clock.advance(Duration::from_millis(500));
        assert!(limiter.check(a).is_ok());
        assert!(limiter.check(a).is_err());
    }

    #[test]
    fn the_proxy_header_is_believed_only_from_trusted_peers() {
        let r = ClientIpResolver::new(&settings()).unwrap();
        assert_eq!(
            r.resolve(ip("10.1.2.3"), &["198.51.100.7"]),
            ip("198.51.100.7")
        );
        assert_eq!(
            r.resolve(ip("192.0.2.1"), &["198.51.100.7"]),
            ip("192.0.2.1")
        );
        // A client-supplied first entry does not win over what the proxy appended.
        assert_eq!(
            r.resolve(ip("10.1.2.3"), &["1.1.1.1, 198.51.100.7, 10.9.9.9"]),
            ip("198.51.100.7")
        );
        assert_eq!(r.resolve(ip("10.1.2.3"), &["garbage"]), ip("10.1.2.3"));
    }

    #[test]
    fn the_forwarded_header_is_understood() {
        let mut s = settings();
        s.client_ip_header = "forwarded".into();
        let r = ClientIpResolver::new(&s).unwrap();
        assert_eq!(
            r.resolve(
                ip("10.0.0.1"),
                &["for=192.0.2.60;proto=http, for=\"[2001:db8::17]:4711\""]
            ),
            ip("2001:db8::17")
        );
    }
}
