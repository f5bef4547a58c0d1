//! The SSRF guard: outbound requests never reach loopback, private, link-local, unspecified or
//! multicast addresses (IPv4 and IPv6) unless `ALLOWED_TARGET_CIDRS` allows them.
//!
//! An IP-literal URL is checked when an endpoint is created or changed and again before every
//! attempt. A host name is checked inside the HTTP client's DNS resolver ([`GuardedResolver`]):
//! the client connects only to the addresses that passed, so a name that resolves differently
//! between the check and the connect (DNS rebinding) cannot slip through.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("the URL must be http or https with a host")]
    BadUrl,
    #[error("destination refused: {0} is a loopback, private, link-local or multicast address")]
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

    /// True when `ip` is public, or inside `ALLOWED_TARGET_CIDRS`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        !is_internal(ip) || self.allowed.iter().any(|net| net.contains(&ip))
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

/// Loopback, private, link-local, shared (CGNAT), unspecified, broadcast or multicast.
fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_internal_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => is_internal_v4(v4),
            None => is_internal_v6(ip),
        },
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
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

    #[test]
    fn internal_literals_are_refused_by_default() {
        let guard = TargetGuard::default();
        for url in [
            "http://127.0.0.1:8080/",
            "http://10.0.0.1/",
            "http://172.16.5.4/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://0.0.0.0/",
            "http://224.0.0.1/",
            "http://100.64.0.1/",
            "http://[::1]/",
            "http://[::]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[ff02::1]/",
            "http://[::ffff:127.0.0.1]/",
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
        assert!(refuses(&guard, "http://[::1]/"));
        assert!(refuses(&guard, "http://10.0.0.1/"));
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
