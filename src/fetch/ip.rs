//! Which IP addresses the registrar may connect to when it fetches a URL a client submitted.
//!
//! The lists follow the IANA special-purpose address registries (RFC 6890 and its updates), the
//! same set node-oidc-provider blocks in `lib/helpers/fetch_request.js`. `std` cannot do this
//! alone: `Ipv4Addr::is_shared` (CGNAT) and `IpAddr::is_global` are unstable, and
//! `Ipv4Addr::is_private` misses 100.64/10, 198.18/15 and others.
//!
//! IPv6 is handled as an allowlist of global unicast (`2000::/3`) minus its special-purpose
//! blocks, so ULA, link-local, site-local, multicast, discard and anything IANA assigns later
//! outside `2000::/3` is refused without needing a row here. IPv6 forms that carry an IPv4
//! address (IPv4-mapped, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged by that IPv4 address,
//! so `[::ffff:127.0.0.1]` and `[64:ff9b::a9fe:a9fe]` are loopback and link-local here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4 special-purpose blocks, `(network, prefix length, what it is)`.
const V4_BLOCKED: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\" (RFC 791)"),
    (Ipv4Addr::new(10, 0, 0, 0), 8, "private (RFC 1918)"),
    (
        Ipv4Addr::new(100, 64, 0, 0),
        10,
        "shared address space / CGNAT (RFC 6598)",
    ),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback (RFC 1122)"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local, incl. cloud metadata 169.254.169.254 (RFC 3927)",
    ),
    (Ipv4Addr::new(172, 16, 0, 0), 12, "private (RFC 1918)"),
    (
        Ipv4Addr::new(192, 0, 0, 0),
        24,
        "IETF protocol assignments (RFC 6890)",
    ),
    (Ipv4Addr::new(192, 0, 2, 0), 24, "documentation (RFC 5737)"),
    (Ipv4Addr::new(192, 31, 196, 0), 24, "AS112-v4 (RFC 7535)"),
    (Ipv4Addr::new(192, 52, 193, 0), 24, "AMT (RFC 7450)"),
    (
        Ipv4Addr::new(192, 88, 99, 0),
        24,
        "6to4 relay anycast (RFC 7526)",
    ),
    (Ipv4Addr::new(192, 168, 0, 0), 16, "private (RFC 1918)"),
    (
        Ipv4Addr::new(192, 175, 48, 0),
        24,
        "direct delegation AS112 (RFC 7534)",
    ),
    (Ipv4Addr::new(198, 18, 0, 0), 15, "benchmarking (RFC 2544)"),
    (
        Ipv4Addr::new(198, 51, 100, 0),
        24,
        "documentation (RFC 5737)",
    ),
    (
        Ipv4Addr::new(203, 0, 113, 0),
        24,
        "documentation (RFC 5737)",
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast (RFC 5771)"),
    (
        Ipv4Addr::new(240, 0, 0, 0),
        4,
        "reserved, incl. broadcast 255.255.255.255 (RFC 1112, RFC 919)",
    ),
];

/// Special-purpose blocks inside IPv6 global unicast `2000::/3`.
const V6_BLOCKED_IN_GLOBAL: &[(Ipv6Addr, u8, &str)] = &[
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        "IETF protocol assignments, incl. Teredo and benchmarking (RFC 2928)",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation (RFC 3849)",
    ),
    (
        Ipv6Addr::new(0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0),
        48,
        "direct delegation AS112 (RFC 7534)",
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation (RFC 9637)",
    ),
];

fn v4_in(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn v6_in(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// The IPv4 address an IPv6 address stands for, when it is one of the forms that route to (or
/// translate into) IPv4: IPv4-mapped `::ffff:0:0/96` (RFC 4291 §2.5.5.2), NAT64 well-known
/// prefix `64:ff9b::/96` (RFC 6052), 6to4 `2002::/16` (RFC 3056; the address is bits 16–47).
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if v6_in(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return Some(low32);
    }
    if v6_in(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    None
}

/// Why `ip` must not be contacted, or `None` when it is an ordinary public address.
pub fn reserved(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => V4_BLOCKED
            .iter()
            .find(|(net, len, _)| v4_in(v4, *net, *len))
            .map(|(_, _, why)| *why),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return reserved(IpAddr::V4(v4));
            }
            if v6_in(v6, Ipv6Addr::UNSPECIFIED, 96) {
                // ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d (RFC 4291 §2.5.5.1).
                return Some("unspecified, loopback or IPv4-compatible IPv6");
            }
            if !v6_in(v6, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3) {
                return Some(
                    "not IPv6 global unicast (ULA, link-local, multicast or special-purpose)",
                );
            }
            V6_BLOCKED_IN_GLOBAL
                .iter()
                .find(|(net, len, _)| v6_in(v6, *net, *len))
                .map(|(_, _, why)| *why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(s: &str) -> bool {
        reserved(s.parse().unwrap()).is_some()
    }

    #[test]
    fn ipv4_block_boundaries() {
        // (last address before the block, first in it, last in it, first after it)
        for (before, first, last, after) in [
            ("9.255.255.255", "10.0.0.0", "10.255.255.255", "11.0.0.0"),
            (
                "100.63.255.255",
                "100.64.0.0",
                "100.127.255.255",
                "100.128.0.0",
            ),
            (
                "126.255.255.255",
                "127.0.0.0",
                "127.255.255.255",
                "128.0.0.0",
            ),
            (
                "169.253.255.255",
                "169.254.0.0",
                "169.254.255.255",
                "169.255.0.0",
            ),
            (
                "172.15.255.255",
                "172.16.0.0",
                "172.31.255.255",
                "172.32.0.0",
            ),
            (
                "192.167.255.255",
                "192.168.0.0",
                "192.168.255.255",
                "192.169.0.0",
            ),
            (
                "198.17.255.255",
                "198.18.0.0",
                "198.19.255.255",
                "198.20.0.0",
            ),
            ("192.0.1.255", "192.0.2.0", "192.0.2.255", "192.0.3.0"),
            (
                "198.51.99.255",
                "198.51.100.0",
                "198.51.100.255",
                "198.51.101.0",
            ),
            (
                "203.0.112.255",
                "203.0.113.0",
                "203.0.113.255",
                "203.0.114.0",
            ),
        ] {
            assert!(!blocked(before), "{before} is public");
            assert!(blocked(first), "{first} is reserved");
            assert!(blocked(last), "{last} is reserved");
            assert!(!blocked(after), "{after} is public");
        }
    }

    #[test]
    fn ipv4_special_addresses() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "192.0.0.8",
            "224.0.0.1",
            "239.255.255.255",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(blocked(ip), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "93.184.215.14", "223.255.255.255"] {
            assert!(!blocked(ip), "{ip}");
        }
    }

    #[test]
    fn ipv6_reserved_and_embedded_forms() {
        for ip in [
            "::",
            "::1",
            "::127.0.0.1",
            "::ffff:127.0.0.1",
            "::ffff:a9fe:a9fe",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "2002:a9fe:a9fe::",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "fe80::1",
            "febf:ffff::1",
            "fec0::1",
            "fc00::1",
            "fd00::1",
            "ff02::1",
            "100::1",
            "2001::1",
            "2001:1ff:ffff::1",
            "2001:db8::1",
            "2620:4f:8000::1",
            "3fff::1",
            "5f00::1",
        ] {
            assert!(blocked(ip), "{ip} is reserved");
        }
        for ip in [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2001:200::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2620:4f:7fff::1",
            "3fff:1000::1",
        ] {
            assert!(!blocked(ip), "{ip} is public");
        }
    }

    #[test]
    fn embedded_addresses_are_extracted() {
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert_eq!(
            embedded_v4(v6("2002:a9fe:a9fe::")),
            Some(Ipv4Addr::new(169, 254, 169, 254))
        );
        assert_eq!(
            embedded_v4(v6("64:ff9b::a9fe:a9fe")),
            Some(Ipv4Addr::new(169, 254, 169, 254))
        );
        assert_eq!(
            embedded_v4(v6("::ffff:127.0.0.1")),
            Some(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(embedded_v4(v6("2606:4700::1")), None);
    }
}
