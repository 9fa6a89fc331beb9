//! Who is on the other end of a connection: client IP and user agent.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, header};

use crate::auth::service::DeviceInfo;

/// The client's device info. `X-Forwarded-For` is believed only when the
/// peer is a trusted proxy; then the client is the right-most address that
/// is not itself a trusted proxy.
pub fn device_info(
    peer: SocketAddr,
    headers: &HeaderMap,
    trusted_proxies: &[IpAddr],
) -> DeviceInfo {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(512).collect());
    DeviceInfo {
        ip: Some(client_ip(peer.ip(), headers, trusted_proxies).to_string()),
        user_agent,
    }
}

fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[IpAddr]) -> IpAddr {
    if !trusted_proxies.contains(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| part.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted_proxies.contains(ip))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn forwarded_for_from_an_untrusted_peer_is_ignored() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(peer, &forwarded("198.51.100.1"), &[]), peer);
    }

    #[test]
    fn a_trusted_proxy_names_the_client_right_of_any_spoofed_entries() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let ip = client_ip(proxy, &forwarded("1.2.3.4, 198.51.100.1"), &[proxy]);
        assert_eq!(ip, "198.51.100.1".parse::<IpAddr>().unwrap());
    }
}
