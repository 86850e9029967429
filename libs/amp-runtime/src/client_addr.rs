//! The client's address behind reverse proxies: the direct peer, unless it is a configured
//! trusted proxy, in which case the rightmost hop of the forwarding header that is not itself
//! a trusted proxy. Hops to the left of that one were written by the client and prove
//! nothing; hops are never believed from a peer that is not trusted.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;
use serde::Deserialize;

/// Which header the trusted proxies append the client's address to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, …` (ingress-nginx, most load balancers).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for=proxy1` (only its `for=` parameters are read).
    Forwarded,
}

/// Where the client address of a request comes from; [`ClientAddressConfig::client_ip`]
/// applies it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientAddressConfig {
    /// The reverse proxies (load balancer, Ingress controller) in front of the service, as
    /// CIDRs (`10.0.0.0/8`) or single addresses. Empty (the default): the direct peer is the
    /// client, whatever a forwarding header says. A request from one of these has its client
    /// address read from `header`.
    pub trusted_proxies: Vec<ProxyRange>,
    /// The header the trusted proxies write: `x-forwarded-for` (default) or `forwarded`. Only
    /// that one is read: a client can send the other one, and a proxy passes it on unchanged.
    pub header: ForwardedHeader,
}

/// A trusted proxy's address or range: a CIDR or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ProxyRange(IpNet);

impl std::str::FromStr for ProxyRange {
    type Err = InvalidProxy;
    fn from_str(s: &str) -> Result<Self, InvalidProxy> {
        let t = s.trim();
        t.parse::<IpNet>()
            .or_else(|_| t.parse::<IpAddr>().map(IpNet::from))
            .map(|n| Self(n.trunc()))
            .map_err(|_| InvalidProxy(s.to_owned()))
    }
}

impl ProxyRange {
    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl TryFrom<String> for ProxyRange {
    type Error = InvalidProxy;
    fn try_from(s: String) -> Result<Self, InvalidProxy> {
        s.parse()
    }
}

/// A trusted-proxy address or range that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("trusted_proxies: {0:?} is not an IP address or CIDR")]
pub struct InvalidProxy(pub String);

impl ClientAddressConfig {
    fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted_proxies.iter().any(|n| n.0.contains(&ip))
    }

    /// The client address of a request that arrived from `peer` with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        let name = match self.header {
            ForwardedHeader::XForwardedFor => "x-forwarded-for",
            ForwardedHeader::Forwarded => "forwarded",
        };
        // Several header lines are one list, in order.
        let mut hops: Vec<&str> = Vec::new();
        for value in headers.get_all(name) {
            let Ok(value) = value.to_str() else {
                return peer;
            };
            hops.extend(value.split(','));
        }
        let mut client = peer;
        for hop in hops.iter().rev() {
            let parsed = match self.header {
                ForwardedHeader::XForwardedFor => parse_hop(hop),
                ForwardedHeader::Forwarded => forwarded_for(hop).and_then(parse_hop),
            };
            // A hop that is not an address (`unknown`, an obfuscated name) was written by a
            // trusted proxy: the proxy that wrote it is the best we know.
            let Some(ip) = parsed else {
                return client;
            };
            client = ip;
            if !self.is_trusted(ip) {
                return ip;
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, from a dual-stack listener) as IPv4, so a
/// v4 range matches them.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The `for=` parameter of one `Forwarded` element.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("for")
            .then(|| v.trim().trim_matches('"'))
    })
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:5678`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (inside, _) = rest.split_once(']')?;
        return inside.parse().ok().map(canonical);
    }
    let (host, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(trusted: &[&str], header: ForwardedHeader) -> ClientAddressConfig {
        ClientAddressConfig {
            trusted_proxies: trusted.iter().map(|s| s.parse().expect("valid")).collect(),
            header,
        }
    }

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(name, v.parse().expect("header value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_header_says() {
        let a = addr(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(a.client_ip(ip("198.51.100.1"), &h), ip("198.51.100.1"));
        let none = addr(&[], ForwardedHeader::XForwardedFor);
        assert_eq!(none.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn rightmost_untrusted_hop_wins_over_what_the_client_wrote() {
        let a = addr(&["10.0.0.0/8", "192.0.2.7"], ForwardedHeader::XForwardedFor);
        // The client wrote "1.1.1.1"; the outer proxy appended the client's real address,
        // then an inner trusted proxy its own.
        let h = headers("x-forwarded-for", &["1.1.1.1, 203.0.113.9", "192.0.2.7"]);
        assert_eq!(a.client_ip(ip("10.1.2.3"), &h), ip("203.0.113.9"));
        // Ports and brackets.
        let h = headers("x-forwarded-for", &["203.0.113.9:4711"]);
        assert_eq!(a.client_ip(ip("10.1.2.3"), &h), ip("203.0.113.9"));
        let h = headers("x-forwarded-for", &["[2001:db8::5]:4711"]);
        assert_eq!(a.client_ip(ip("10.1.2.3"), &h), ip("2001:db8::5"));
        // No header: the proxy itself.
        assert_eq!(
            a.client_ip(ip("10.1.2.3"), &HeaderMap::new()),
            ip("10.1.2.3")
        );
        // Garbage written by a trusted proxy: the proxy that wrote it.
        let h = headers("x-forwarded-for", &["unknown, 10.9.9.9"]);
        assert_eq!(a.client_ip(ip("10.1.2.3"), &h), ip("10.9.9.9"));
        // A v4-mapped peer matches a v4 range.
        let h = headers("x-forwarded-for", &["203.0.113.9"]);
        assert_eq!(a.client_ip(ip("::ffff:10.1.2.3"), &h), ip("203.0.113.9"));
    }

    #[test]
    fn forwarded_header_is_read_only_when_configured() {
        let a = addr(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        let mut h = headers(
            "forwarded",
            &[r#"for=1.1.1.1, for="[2001:db8::5]:80";proto=https"#],
        );
        h.append("x-forwarded-for", "198.51.100.77".parse().expect("value"));
        assert_eq!(a.client_ip(ip("10.0.0.2"), &h), ip("2001:db8::5"));
        let xff = addr(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        assert_eq!(xff.client_ip(ip("10.0.0.2"), &h), ip("198.51.100.77"));
    }

    #[test]
    fn invalid_ranges_are_refused() {
        assert!("10.0.0.0/33".parse::<ProxyRange>().is_err());
        assert!("proxy.local".parse::<ProxyRange>().is_err());
        assert_eq!(
            "10.1.2.3/8".parse::<ProxyRange>().expect("range"),
            "10.0.0.0/8".parse().expect("range")
        );
        assert_eq!(
            "2001:db8::1".parse::<ProxyRange>().expect("address"),
            "2001:db8::1/128".parse().expect("range")
        );
    }
}
