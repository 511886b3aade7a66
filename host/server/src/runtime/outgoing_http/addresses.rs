//! Which addresses are on the public internet. Everything else (loopback, private, link-local,
//! shared, documentation, benchmarking, multicast, reserved, and the IPv6 forms that carry or
//! translate to IPv4: NAT64, 6to4, Teredo, IPv4-compatible) is reachable from a plugin only
//! through an allow entry that grants it (see the module above).
//!
//! A table of IANA special-purpose ranges (RFC 6890 and its updates) rather than the standard
//! library's helpers: `Ipv4Addr::is_global` is unstable, and the stable helpers miss most of
//! these. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are judged by their IPv4 address.

use ipnet::IpNet;
use std::net::IpAddr;
use std::sync::LazyLock;

/// Special-purpose ranges that are not on the public internet.
const NON_PUBLIC: &[&str] = &[
    // IPv4
    "0.0.0.0/8",       // "this network"
    "10.0.0.0/8",      // private
    "100.64.0.0/10",   // shared address space (carrier-grade NAT)
    "127.0.0.0/8",     // loopback
    "169.254.0.0/16",  // link-local, cloud metadata (169.254.169.254)
    "172.16.0.0/12",   // private
    "192.0.0.0/24",    // IETF protocol assignments
    "192.0.2.0/24",    // documentation
    "192.88.99.0/24",  // 6to4 relay anycast
    "192.168.0.0/16",  // private
    "198.18.0.0/15",   // benchmarking
    "198.51.100.0/24", // documentation
    "203.0.113.0/24",  // documentation
    "224.0.0.0/4",     // multicast
    "240.0.0.0/4",     // reserved, and the broadcast address
    // IPv6
    "::/96",          // unspecified, loopback and IPv4-compatible (deprecated)
    "64:ff9b::/96",   // NAT64: reaches whatever IPv4 address it embeds
    "64:ff9b:1::/48", // local-use NAT64
    "100::/64",       // discard
    "2001::/32",      // Teredo
    "2001:db8::/32",  // documentation
    "2002::/16",      // 6to4: reaches whatever IPv4 address it embeds
    "3fff::/20",      // documentation
    "fc00::/7",       // unique local
    "fe80::/10",      // link-local
    "fec0::/10",      // site-local (deprecated)
    "ff00::/8",       // multicast
];

static RANGES: LazyLock<Vec<IpNet>> = LazyLock::new(|| {
    NON_PUBLIC
        .iter()
        .filter_map(|range| range.parse().ok())
        .collect()
});

/// Whether `ip` is on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    };
    !RANGES.iter().any(|range| range.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_in_the_table_parses() {
        assert_eq!(RANGES.len(), NON_PUBLIC.len());
    }

    #[test]
    fn private_special_and_translated_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "::1",
            "::",
            "::127.0.0.1",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "fec0::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2001:0:4136:e378::1",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "8.8.8.8",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
