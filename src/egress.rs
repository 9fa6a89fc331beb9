//! Which addresses HTTP steps may reach.
//!
//! A workflow author chooses the URL, so an HTTP step could be pointed at
//! the server's own network: its loopback, a cloud metadata endpoint, a
//! database on a private subnet. FlowPilot refuses every address that is not
//! public unless `FLOWPILOT_HTTP_ALLOW_PRIVATE` allows it. The check runs on
//! the addresses a name resolves to (so a public name pointing at a private
//! address is refused) and again for every redirect.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Non-public addresses HTTP steps may reach anyway.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PrivateAccess {
    /// None: only public addresses (the default).
    #[default]
    Refused,
    /// Every address.
    All,
    /// Only these networks.
    Networks(Vec<Network>),
}

impl PrivateAccess {
    /// Parses the setting: `false`, `true`, or comma-separated addresses and
    /// CIDR networks (`10.1.0.0/16,fd00::/8,127.0.0.1`).
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim() {
            "" | "false" => Ok(Self::Refused),
            "true" => Ok(Self::All),
            list => list
                .split(',')
                .map(|part| Network::parse(part.trim()))
                .collect::<Result<Vec<_>, _>>()
                .map(Self::Networks),
        }
    }

    /// Whether an HTTP step may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        is_public(ip)
            || match self {
                Self::Refused => false,
                Self::All => true,
                Self::Networks(networks) => networks.iter().any(|n| n.contains(ip)),
            }
    }
}

/// Why `ip` (which `host` names) was refused, for the step's error.
fn refusal(host: &str, ip: IpAddr) -> String {
    format!(
        "refused to connect to `{host}` ({ip}): it is not a public address; \
         FLOWPILOT_HTTP_ALLOW_PRIVATE can allow it"
    )
}

/// An address range in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("`{text}` is neither an IP address nor a CIDR network");
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let address = canonical(address);
        let max = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { address, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv6 address that carries an IPv4 one (mapped `::ffff:a.b.c.d`,
/// NAT64 `64:ff9b::a.b.c.d`) as that IPv4 address, so it is judged by it.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b, c, d] = [s[6] >> 8, s[6] & 0xff, s[7] >> 8, s[7] & 0xff];
                return IpAddr::V4(Ipv4Addr::new(a as u8, b as u8, c as u8, d as u8));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

/// Whether `ip` (canonical) is a public unicast address.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            !(ip.is_unspecified()
                || ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_broadcast()
                || ip.is_multicast()
                || ip.is_documentation()
                || a == 0
                // Shared address space (carrier-grade NAT), 100.64.0.0/10.
                || (a == 100 && (64..128).contains(&b))
                // IETF protocol assignments, 192.0.0.0/24.
                || (a == 192 && b == 0 && ip.octets()[2] == 0)
                // Benchmarking, 198.18.0.0/15.
                || (a == 198 && (18..20).contains(&b))
                // Reserved, 240.0.0.0/4.
                || a >= 240)
        }
        IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            !(ip.is_unspecified()
                || ip.is_loopback()
                || ip.is_multicast()
                // Unique local, fc00::/7.
                || (first & 0xfe00) == 0xfc00
                // Link-local, fe80::/10, and the old site-local, fec0::/10.
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                // IPv4-compatible (deprecated) addresses, ::/96.
                || ip.segments()[..6] == [0; 6]
                // Documentation, 2001:db8::/32.
                || (first == 0x2001 && ip.segments()[1] == 0x0db8))
        }
    }
}

/// Checks an address written in a URL (no DNS involved).
pub fn check_literal(access: &PrivateAccess, url: &url::Url) -> Result<(), String> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(url::Host::Domain(_)) => return Ok(()),
        None => return Err(format!("`{url}` has no host")),
    };
    if access.permits(ip) {
        Ok(())
    } else {
        Err(refusal(&ip.to_string(), ip))
    }
}

/// Resolves names with the system resolver and refuses the whole name when
/// any address it resolves to is not permitted, so a connection can never be
/// made to one.
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    access: Arc<PrivateAccess>,
}

impl GuardedResolver {
    pub fn new(access: Arc<PrivateAccess>) -> Self {
        Self { access }
    }
}

/// The error a refused name resolves to.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let access = self.access.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(refused) = addrs.iter().find(|a| !access.permits(a.ip())) {
                return Err(Box::new(Refused(refusal(&host, refused.ip())))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn private_loopback_link_local_and_mapped_addresses_are_refused_by_default() {
        let access = PrivateAccess::Refused;
        for refused in [
            "127.0.0.1",
            "10.2.3.4",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!access.permits(ip(refused)), "{refused} was permitted");
        }
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(access.permits(ip(public)), "{public} was refused");
        }
    }

    #[test]
    fn the_setting_allows_everything_or_only_the_networks_it_lists() {
        assert_eq!(PrivateAccess::parse("false"), Ok(PrivateAccess::Refused));
        assert!(
            PrivateAccess::parse("true")
                .unwrap()
                .permits(ip("10.0.0.1"))
        );
        let some = PrivateAccess::parse("10.1.0.0/16, 127.0.0.1, fd00::/8").unwrap();
        assert!(some.permits(ip("10.1.200.3")));
        assert!(!some.permits(ip("10.2.0.1")));
        assert!(some.permits(ip("127.0.0.1")));
        assert!(
            some.permits(ip("::ffff:127.0.0.1")),
            "mapped addresses match their IPv4 network"
        );
        assert!(!some.permits(ip("127.0.0.2")));
        assert!(some.permits(ip("fd12::1")));
        assert!(PrivateAccess::parse("10.0.0.0/33").is_err());
        assert!(PrivateAccess::parse("localhost").is_err());
    }

    #[test]
    fn addresses_written_in_urls_are_checked_without_dns() {
        let access = PrivateAccess::Refused;
        let check = |url: &str| check_literal(&access, &url::Url::parse(url).unwrap());
        assert!(check("http://127.0.0.1:8080/").is_err());
        assert!(check("http://[::ffff:7f00:1]/").is_err());
        assert!(
            check("http://2130706433/").is_err(),
            "a decimal IPv4 address is parsed as one"
        );
        assert!(check("https://example.com/").is_ok());
        assert!(check("https://1.1.1.1/").is_ok());
    }
}
