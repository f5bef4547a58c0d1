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
        "destination refused: {target} is a special-purpose address ({reason}; loopback, \
         private, link-local, reserved, multicast, translated or similar)",
        reason = reason.name()
    )]
    Refused { target: String, reason: Refusal },
}

impl GuardError {
    /// A refusal, counted in `outbound_ssrf_refusals_total{reason}`.
    fn refused(target: String, reason: Refusal) -> Self {
        super::metrics::ssrf_refused(reason);
        GuardError::Refused { target, reason }
    }
}

/// The kind of special-purpose address a destination is: the `reason` label of
/// `outbound_ssrf_refusals_total`. An address that carries an IPv4 address is named by the
/// refused IPv4 address inside it when there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `0.0.0.0/8`, `::`.
    ThisNetwork,
    /// RFC 1918, IPv6 unique local and site-local.
    Private,
    /// `100.64.0.0/10` (carrier-grade NAT; some clouds' metadata).
    Shared,
    Loopback,
    /// `169.254.0.0/16` (cloud metadata), `fe80::/10`.
    LinkLocal,
    Documentation,
    Multicast,
    /// IPv6 translation and tunnelling prefixes (NAT64, 6to4, IPv4-compatible) not allowed.
    Translated,
    /// Everything else of the registries: protocol assignments, benchmarking, AS112, future use.
    Reserved,
}

impl Refusal {
    pub const ALL: [Refusal; 9] = [
        Refusal::ThisNetwork,
        Refusal::Private,
        Refusal::Shared,
        Refusal::Loopback,
        Refusal::LinkLocal,
        Refusal::Documentation,
        Refusal::Multicast,
        Refusal::Translated,
        Refusal::Reserved,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Refusal::ThisNetwork => "this_network",
            Refusal::Private => "private",
            Refusal::Shared => "shared",
            Refusal::Loopback => "loopback",
            Refusal::LinkLocal => "link_local",
            Refusal::Documentation => "documentation",
            Refusal::Multicast => "multicast",
            Refusal::Translated => "translated",
            Refusal::Reserved => "reserved",
        }
    }
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
        self.refusal(ip).is_none()
    }

    /// Why `ip` is refused: an IPv4 address embedded in it that is refused, else the address
    /// itself when it is special-purpose and not allowed; `None` when it may be reached.
    pub fn refusal(&self, ip: IpAddr) -> Option<Refusal> {
        let ip = ip.to_canonical();
        let inner = match ip {
            IpAddr::V4(_) => None,
            IpAddr::V6(v6) => embedded_ipv4(v6)
                .into_iter()
                .find_map(|inner| self.refusal_one(IpAddr::V4(inner))),
        };
        let own = self.refusal_one(ip);
        match ip {
            // IPv4-compatible in form only: named as themselves.
            IpAddr::V6(v6) if v6.is_loopback() || v6.is_unspecified() => own.or(inner),
            _ => inner.or(own),
        }
    }

    /// The address alone: refused when special-purpose and not allowed.
    fn refusal_one(&self, ip: IpAddr) -> Option<Refusal> {
        let reason = special_purpose(ip)?;
        (!self.allowed.iter().any(|net| net.contains(&ip))).then_some(reason)
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
        match self.refusal(ip) {
            None => Ok(()),
            Some(reason) => Err(GuardError::refused(ip.to_string(), reason)),
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
const SPECIAL_V4: [(Ipv4Net, Refusal); 18] = [
    (v4(0, 0, 0, 0, 8), Refusal::ThisNetwork), // "this network"
    (v4(10, 0, 0, 0, 8), Refusal::Private),    // private
    (v4(100, 64, 0, 0, 10), Refusal::Shared),  // shared address space (CGNAT; cloud metadata)
    (v4(127, 0, 0, 0, 8), Refusal::Loopback),  // loopback
    (v4(169, 254, 0, 0, 16), Refusal::LinkLocal), // link-local (cloud metadata at 169.254.169.254)
    (v4(172, 16, 0, 0, 12), Refusal::Private), // private
    (v4(192, 0, 0, 0, 24), Refusal::Reserved), // IETF protocol assignments
    (v4(192, 0, 2, 0, 24), Refusal::Documentation), // documentation (TEST-NET-1)
    (v4(192, 31, 196, 0, 24), Refusal::Reserved), // AS112-v4
    (v4(192, 52, 193, 0, 24), Refusal::Reserved), // AMT
    (v4(192, 88, 99, 0, 24), Refusal::Reserved), // deprecated 6to4 relay anycast
    (v4(192, 168, 0, 0, 16), Refusal::Private), // private
    (v4(192, 175, 48, 0, 24), Refusal::Reserved), // direct delegation AS112
    (v4(198, 18, 0, 0, 15), Refusal::Reserved), // benchmarking
    (v4(198, 51, 100, 0, 24), Refusal::Documentation), // documentation (TEST-NET-2)
    (v4(203, 0, 113, 0, 24), Refusal::Documentation), // documentation (TEST-NET-3)
    (v4(224, 0, 0, 0, 4), Refusal::Multicast), // multicast
    (v4(240, 0, 0, 0, 4), Refusal::Reserved),  // reserved, and broadcast
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
const SPECIAL_V6: [(Ipv6Net, Refusal); 16] = [
    (IPV4_COMPATIBLE, Refusal::Translated),
    (v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), Refusal::Translated), // IPv4-mapped (judged as IPv4)
    (NAT64, Refusal::Translated),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        Refusal::Translated,
    ), // NAT64 local-use prefix
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), Refusal::Reserved), // discard-only
    (v6([0x100, 0, 0, 1, 0, 0, 0, 0], 64), Refusal::Reserved), // dummy prefix
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), Refusal::Reserved), // IETF (Teredo, ORCHID...)
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        Refusal::Documentation,
    ), // documentation
    (SIX_TO_FOUR, Refusal::Translated),
    (
        v6([0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0], 48),
        Refusal::Reserved,
    ), // direct delegation AS112
    (
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        Refusal::Documentation,
    ), // documentation
    (v6([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16), Refusal::Reserved), // segment routing (SRv6) SIDs
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), Refusal::Private),   // unique local
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), Refusal::LinkLocal), // link-local
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), Refusal::Private),  // site-local (deprecated)
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), Refusal::Multicast), // multicast
];

/// The only IPv6 block IANA allocates for global unicast; the rest is reserved.
const GLOBAL_UNICAST_V6: Ipv6Net = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);

/// The kind of special-purpose range `ip` is in (see [`SPECIAL_V4`] and [`SPECIAL_V6`]), or
/// `None` for an address a webhook may go to.
fn special_purpose(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(ip) => SPECIAL_V4
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, reason)| *reason),
        IpAddr::V6(ip) if ip.is_loopback() => Some(Refusal::Loopback),
        IpAddr::V6(ip) if ip.is_unspecified() => Some(Refusal::ThisNetwork),
        IpAddr::V6(ip) => SPECIAL_V6
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, reason)| *reason)
            .or_else(|| (!GLOBAL_UNICAST_V6.contains(&ip)).then_some(Refusal::Reserved)),
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
                let reason = resolved
                    .iter()
                    .find_map(|addr| guard.refusal(addr.ip()))
                    .unwrap_or(Refusal::Reserved);
                let refused = format!("{host} ({resolved:?})");
                return Err(Box::new(GuardError::refused(refused, reason)) as _);
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
            Err(GuardError::Refused { .. })
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
    fn a_refusal_names_the_kind_of_address() {
        use Refusal::*;
        let guard = TargetGuard::default();
        for (literal, reason) in [
            ("0.0.0.0", ThisNetwork),
            ("::", ThisNetwork),
            ("10.0.0.1", Private),
            ("::ffff:10.0.0.1", Private),
            ("fd00::1", Private),
            ("100.64.0.1", Shared),
            ("127.0.0.1", Loopback),
            ("::1", Loopback),
            ("64:ff9b::127.0.0.1", Loopback),
            ("169.254.169.254", LinkLocal),
            ("fe80::1", LinkLocal),
            ("192.0.2.1", Documentation),
            ("2001:db8::1", Documentation),
            ("224.0.0.1", Multicast),
            ("ff02::1", Multicast),
            ("64:ff9b::8.8.8.8", Translated),
            ("198.18.0.1", Reserved),
            ("4000::1", Reserved),
        ] {
            assert_eq!(guard.refusal(ip(literal)), Some(reason), "{literal}");
        }
        assert_eq!(guard.refusal(ip("8.8.8.8")), None);
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
