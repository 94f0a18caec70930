//! Per-source token bucket on registration (security.md §5.2), on the `governor` crate (GCRA).
//!
//! Keyed state is bounded: sources are IPv4 addresses or IPv6 /64 prefixes (one host owns a
//! whole /64, so finer keys would let it mint buckets at will); idle entries are dropped with
//! `retain_recent` every [`SWEEP_EVERY`] checks; and when `max_tracked_sources` entries are live
//! anyway, further sources share one overflow bucket instead of growing the map.
//!
//! The limiter runs on a monotonic clock, not the injected wall clock: buckets need sub-second
//! precision and must not jump when the wall clock does.

use super::config::RateLimitSettings;
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};
use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Checks between two sweeps of idle sources.
pub const SWEEP_EVERY: u64 = 256;

/// The key shared by sources that arrive while the table is full.
const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// The registration rate limiter.
pub struct RegistrationLimiter {
    limiter: RateLimiter<IpAddr, HashMapStateStore<IpAddr>, DefaultClock>,
    clock: DefaultClock,
    max_sources: usize,
    checks: AtomicU64,
}

impl std::fmt::Debug for RegistrationLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrationLimiter")
            .field("tracked", &self.limiter.len())
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
        if !settings.enabled {
            return Ok(None);
        }
        let burst = NonZeroU32::new(settings.burst).ok_or("rate_limit.burst must be > 0")?;
        let quota = Quota::with_period(Duration::from_millis(settings.period_ms))
            .ok_or("rate_limit.period_ms must be > 0")?
            .allow_burst(burst);
        if settings.max_tracked_sources == 0 {
            return Err("rate_limit.max_tracked_sources must be > 0".into());
        }
        let clock = DefaultClock::default();
        Ok(Some(Self {
            limiter: RateLimiter::new(quota, HashMapStateStore::default(), clock.clone()),
            clock,
            max_sources: settings.max_tracked_sources,
            checks: AtomicU64::new(0),
        }))
    }

    /// Take one token for `ip`; `Err(seconds)` to wait when its bucket is empty.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        let n = self.checks.fetch_add(1, Ordering::Relaxed);
        // A sweep is O(tracked sources); doing one per check while the table is full would let
        // a flood buy a full scan per request, so sweeps stay periodic whatever the load.
        if n % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
        }
        let mut key = source_key(ip);
        if self.limiter.len() >= self.max_sources {
            // Full of live sources (a spread-out flood): newcomers share one bucket rather
            // than grow the table. Sources already tracked may land there too; the table
            // stays bounded either way.
            key = OVERFLOW;
        }
        self.limiter.check_key(&key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }

    /// Number of tracked sources (for tests and metrics).
    pub fn tracked_sources(&self) -> usize {
        self.limiter.len()
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

    /// Whether `ip` is one of `trusted_proxies` (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
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
    fn a_flood_of_distinct_sources_stays_bounded_and_idle_ones_are_swept() {
        let mut s = settings();
        s.burst = 1;
        s.period_ms = 10;
        s.max_tracked_sources = 1000;
        let limiter = RegistrationLimiter::new(&s).unwrap().unwrap();
        for i in 0..20_000u32 {
            let _ = limiter.check(IpAddr::from(i.to_be_bytes()));
            assert!(limiter.tracked_sources() <= 1001);
        }
        // Once their buckets have refilled, idle sources are forgotten at the next sweep.
        std::thread::sleep(Duration::from_millis(30));
        for _ in 0..SWEEP_EVERY {
            let _ = limiter.check(ip("203.0.113.1"));
        }
        assert!(
            limiter.tracked_sources() <= 2,
            "{}",
            limiter.tracked_sources()
        );
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
