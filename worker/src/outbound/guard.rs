//! The SSRF guard: outbound requests never reach a special-purpose address (loopback, private,
//! link-local, shared, documentation, benchmarking, reserved, multicast, translation prefixes and
//! the rest of the IANA special-purpose registries, IPv4 and IPv6) unless
//! `ALLOWED_TARGET_CIDRS` allows it.
//!
//! An IPv6 address that carries an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4,
//! Teredo) is judged twice: as itself, and by the IPv4 address inside it, so allowing a
//! translation prefix never opens the private networks behind it.
//!
//! An IP-literal URL is checked when an endpoint is created or changed and again before every
//! attempt. A host name is checked inside the HTTP client's DNS resolver ([`GuardedResolver`]):
//! the client connects only to the addresses that passed, so a name that resolves differently
//! between the check and the connect (DNS rebinding) cannot slip through.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("the URL must be http or https with a host")]
    BadUrl,
    #[error(
        "destination refused: {0} is a special-purpose address (loopback, private, link-local, \
         reserved, multicast, translated or similar)"
    )]
    Refused(String),
}

/// Which destinations outbound requests may reach.
#[derive(Debug, Clone, Default)]
pub struct TargetGuard {
    allowed: Vec<IpNet>,
}

impl TargetGuard {
    pub fn new(allowed: Vec<IpNet>) -> Self {
        TargetGuard { allowed }
    }

    /// True when `ip`, and every IPv4 address embedded in it, is either outside every
    /// special-purpose range or inside `ALLOWED_TARGET_CIDRS`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.permits_one(ip)
            && match ip {
                IpAddr::V4(_) => true,
                IpAddr::V6(v6) => embedded_ipv4(v6)
                    .into_iter()
                    .all(|inner| self.permits_one(IpAddr::V4(inner))),
            }
    }

    /// The address alone: public, or allowed.
    fn permits_one(&self, ip: IpAddr) -> bool {
        !is_special_purpose(ip) || self.allowed.iter().any(|net| net.contains(&ip))
    }

    /// Checks a URL's scheme and, when its host is an IP literal, the address itself. Host
    /// names pass here; they are checked after resolution, on every attempt.
    pub fn check_url(&self, url: &Url) -> Result<(), GuardError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(GuardError::BadUrl);
        }
        let host = url.host_str().ok_or(GuardError::BadUrl)?;
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let Ok(ip) = literal.parse::<IpAddr>() else {
            return Ok(());
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(GuardError::Refused(ip.to_string()))
        }
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

const fn v6(segments: [u16; 8], prefix: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

/// Every entry of the IANA IPv4 special-purpose address registry, globally reachable or not
/// (none is a place a webhook should go), plus multicast.
const SPECIAL_V4: [Ipv4Net; 18] = [
    v4(0, 0, 0, 0, 8),       // "this network"
    v4(10, 0, 0, 0, 8),      // private
    v4(100, 64, 0, 0, 10),   // shared address space (CGNAT; a cloud metadata address)
    v4(127, 0, 0, 0, 8),     // loopback
    v4(169, 254, 0, 0, 16),  // link-local (cloud metadata at 169.254.169.254)
    v4(172, 16, 0, 0, 12),   // private
    v4(192, 0, 0, 0, 24),    // IETF protocol assignments (DS-Lite, NAT64 discovery, metadata)
    v4(192, 0, 2, 0, 24),    // documentation (TEST-NET-1)
    v4(192, 31, 196, 0, 24), // AS112-v4
    v4(192, 52, 193, 0, 24), // AMT
    v4(192, 88, 99, 0, 24),  // deprecated 6to4 relay anycast
    v4(192, 168, 0, 0, 16),  // private
    v4(192, 175, 48, 0, 24), // direct delegation AS112
    v4(198, 18, 0, 0, 15),   // benchmarking
    v4(198, 51, 100, 0, 24), // documentation (TEST-NET-2)
    v4(203, 0, 113, 0, 24),  // documentation (TEST-NET-3)
    v4(224, 0, 0, 0, 4),     // multicast
    v4(240, 0, 0, 0, 4),     // reserved, with the limited broadcast address 255.255.255.255
];

/// IPv4-compatible addresses (deprecated), `::` and `::1` among them: `::a.b.c.d`.
const IPV4_COMPATIBLE: Ipv6Net = v6([0, 0, 0, 0, 0, 0, 0, 0], 96);
/// The NAT64 well-known prefix: `64:ff9b::a.b.c.d`.
const NAT64: Ipv6Net = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
/// 6to4: `2002:AABB:CCDD::/48` for the IPv4 address `AA.BB.CC.DD`.
const SIX_TO_FOUR: Ipv6Net = v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);
/// Teredo: the server's IPv4 address in bits 32-63, the client's inverted in the last 32.
const TEREDO: Ipv6Net = v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32);

/// Every entry of the IANA IPv6 special-purpose address registry, plus site-local and
/// multicast. Addresses outside global unicast ([`GLOBAL_UNICAST_V6`]) are refused as well;
/// the entries outside it are listed all the same, so this table reads as the registry does.
const SPECIAL_V6: [Ipv6Net; 16] = [
    IPV4_COMPATIBLE,
    v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), // IPv4-mapped (judged as its IPv4 address)
    NAT64,
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), // NAT64 local-use prefix
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),     // discard-only
    v6([0x100, 0, 0, 1, 0, 0, 0, 0], 64),     // dummy prefix
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23),    // IETF protocol assignments (Teredo, ORCHID...)
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    SIX_TO_FOUR,
    v6([0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48), // direct delegation AS112
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),         // documentation
    v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16),         // segment routing (SRv6) SIDs
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),          // unique local
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),         // link-local
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),         // site-local (deprecated)
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),          // multicast
];

/// The only IPv6 block IANA allocates for global unicast; the rest is reserved.
const GLOBAL_UNICAST_V6: Ipv6Net = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);

/// True when `ip` is in a special-purpose range (see [`SPECIAL_V4`] and [`SPECIAL_V6`]).
fn is_special_purpose(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => SPECIAL_V4.iter().any(|net| net.contains(&ip)),
        IpAddr::V6(ip) => {
            !GLOBAL_UNICAST_V6.contains(&ip) || SPECIAL_V6.iter().any(|net| net.contains(&ip))
        }
    }
}

/// The IPv4 addresses an IPv6 address carries: IPv4-compatible, NAT64, 6to4 and Teredo
/// (server and client). IPv4-mapped addresses are turned into IPv4 before this is asked. The
/// NAT64 local-use prefix (`64:ff9b:1::/48`) is not unwrapped: where its IPv4 address sits
/// depends on the operator's prefix length, so it passes only where `ALLOWED_TARGET_CIDRS`
/// allows it.
fn embedded_ipv4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let bits = ip.to_bits();
    let ipv4_at = |shift: u32| Ipv4Addr::from_bits((bits >> shift) as u32);
    if IPV4_COMPATIBLE.contains(&ip) || NAT64.contains(&ip) {
        vec![ipv4_at(0)]
    } else if SIX_TO_FOUR.contains(&ip) {
        vec![ipv4_at(80)]
    } else if TEREDO.contains(&ip) {
        vec![ipv4_at(64), Ipv4Addr::from_bits(!ipv4_at(0).to_bits())]
    } else {
        Vec::new()
    }
}

/// The HTTP client's resolver: resolves, drops every address the guard refuses, and fails
/// (so nothing connects) when none is left.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    pub guard: Arc<TargetGuard>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = resolved
                .iter()
                .copied()
                .filter(|addr| guard.permits(addr.ip()))
                .collect();
            if permitted.is_empty() {
                let refused = format!("{host} ({resolved:?})");
                return Err(Box::new(GuardError::Refused(refused)) as _);
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refuses(guard: &TargetGuard, url: &str) -> bool {
        matches!(
            guard.check_url(&Url::parse(url).unwrap()),
            Err(GuardError::Refused(_))
        )
    }

    fn ip(literal: &str) -> IpAddr {
        literal.parse().unwrap()
    }

    /// One address of every refused range (IP literals: nothing is ever sent to them).
    const REFUSED_BY_DEFAULT: &[&str] = &[
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "100.64.0.1",
        "100.100.100.200",
        "127.0.0.1",
        "127.255.255.254",
        "169.254.169.254",
        "172.16.5.4",
        "172.31.255.255",
        "192.0.0.1",
        "192.0.0.192",
        "192.0.2.1",
        "192.31.196.1",
        "192.52.193.1",
        "192.88.99.1",
        "192.168.1.1",
        "192.175.48.1",
        "198.18.0.1",
        "198.19.255.255",
        "198.51.100.1",
        "203.0.113.1",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::127.0.0.1",
        "::8.8.8.8",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::8.8.8.8",
        "64:ff9b::127.0.0.1",
        "64:ff9b:1::8.8.8.8",
        "100::1",
        "100:0:0:1::1",
        "2001::1",
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        "2001:2::1",
        "2001:db8::1",
        "2002:7f00:1::",
        "2002:808:808::1",
        "2620:4f:8000::1",
        "3fff::1",
        "5f00::1",
        "fc00::1",
        "fd00::1",
        "fe80::1",
        "febf::1",
        "fec0::1",
        "feff::1",
        "ff02::1",
        "ff0e::1",
        "4000::1",
    ];

    #[test]
    fn every_special_purpose_range_is_refused_by_default() {
        let guard = TargetGuard::default();
        for literal in REFUSED_BY_DEFAULT {
            assert!(!guard.permits(ip(literal)), "{literal} was permitted");
        }
    }

    #[test]
    fn public_addresses_are_permitted() {
        let guard = TargetGuard::default();
        for literal in [
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.1",
            "172.32.0.1",
            "192.0.1.1",
            "198.20.0.1",
            "223.255.255.255",
            "::ffff:8.8.8.8",
            "2606:2800:220:1::1",
            "2a00:1450:4001::1",
        ] {
            assert!(guard.permits(ip(literal)), "{literal} was refused");
        }
    }

    #[test]
    fn embedded_ipv4_addresses_are_unwrapped() {
        let unwrapped = |literal| embedded_ipv4(literal_v6(literal));
        let v4 = |literal: &str| literal.parse::<Ipv4Addr>().unwrap();
        assert_eq!(unwrapped("::10.1.2.3"), vec![v4("10.1.2.3")]);
        assert_eq!(unwrapped("64:ff9b::a01:203"), vec![v4("10.1.2.3")]);
        assert_eq!(unwrapped("2002:a01:203:1::5"), vec![v4("10.1.2.3")]);
        assert_eq!(
            unwrapped("2001:0:4136:e378:8000:63bf:3fff:fdd2"),
            vec![v4("65.54.227.120"), v4("192.0.2.45")]
        );
        assert!(unwrapped("2606:2800:220:1::1").is_empty());
    }

    fn literal_v6(literal: &str) -> Ipv6Addr {
        literal.parse().unwrap()
    }

    #[test]
    fn allowing_a_translation_prefix_still_judges_the_ipv4_address_inside() {
        let allowed = ["64:ff9b::/96", "2002::/16", "2001::/32", "::/96"];
        let guard = TargetGuard::new(allowed.iter().map(|net| net.parse().unwrap()).collect());
        for literal in ["64:ff9b::8.8.8.8", "2002:808:808::1", "::8.8.8.8"] {
            assert!(guard.permits(ip(literal)), "{literal} was refused");
        }
        for literal in [
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a00:1::1",
            "2002:c0a8:101::1",
            "::10.0.0.1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(!guard.permits(ip(literal)), "{literal} was permitted");
        }
    }

    #[test]
    fn ip_literal_urls_are_checked_like_addresses() {
        let guard = TargetGuard::default();
        for url in [
            "http://127.0.0.1:8080/",
            "http://169.254.169.254/latest/meta-data",
            "http://192.0.0.192/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://[fec0::1]/",
        ] {
            assert!(refuses(&guard, url), "{url}");
        }
    }

    #[test]
    fn public_addresses_and_host_names_pass_the_url_check() {
        let guard = TargetGuard::default();
        for url in [
            "https://93.184.216.34/",
            "https://[2606:2800:220:1::1]/",
            "https://example.com/x",
        ] {
            assert_eq!(guard.check_url(&Url::parse(url).unwrap()), Ok(()), "{url}");
        }
    }

    #[test]
    fn allowed_cidrs_open_exactly_their_range() {
        let guard = TargetGuard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(!refuses(&guard, "http://127.0.0.1:9/"));
        assert!(!refuses(&guard, "http://[::ffff:127.0.0.1]:9/"));
        assert!(refuses(&guard, "http://[::1]/"));
        assert!(refuses(&guard, "http://10.0.0.1/"));
        assert!(refuses(&guard, "http://[64:ff9b::7f00:1]/"));
    }

    #[test]
    fn other_schemes_are_bad_urls() {
        let guard = TargetGuard::default();
        let url = Url::parse("ftp://example.com/").unwrap();
        assert_eq!(guard.check_url(&url), Err(GuardError::BadUrl));
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_that_resolves_to_loopback() {
        let resolver = GuardedResolver {
            guard: Arc::new(TargetGuard::default()),
        };
        let name: Name = "localhost".parse().unwrap();
        let error = resolver.resolve(name).await.err().expect("refused");
        assert!(error.to_string().contains("refused"), "{error}");
    }
}
