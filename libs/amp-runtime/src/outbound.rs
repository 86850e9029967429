//! Guarding outbound requests (webhooks, federation) against SSRF: only `https`, no
//! credentials in the URL, and no loopback, private, link-local, shared, benchmarking,
//! multicast or metadata addresses, nor IPv6 addresses that embed an IPv4 one for a
//! translator or tunnel (NAT64, 6to4, Teredo, IPv4-compatible) — unless the operator allows
//! private targets (tests and single-host setups do). A URL is checked when it is registered
//! and its resolved addresses again at connection time by whoever connects, on a client that
//! ignores `HTTP(S)_PROXY` (a proxy would resolve the name again, past the check).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Deserialize;

/// The operator's outbound policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundPolicy {
    /// Allow `http://` and loopback/private/link-local targets. Off in production.
    pub allow_private: bool,
}

/// The longest URL [`check_url`] accepts, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// Why a URL or address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not an absolute URL.
    #[error("not an absolute URL")]
    Malformed,
    /// Not `https` (or `http` where allowed).
    #[error("only https URLs are allowed")]
    Scheme,
    /// `user:password@` in the URL.
    #[error("credentials in the URL are not allowed")]
    Credentials,
    /// A private, loopback, link-local or otherwise internal address.
    #[error("the target address is internal (loopback, private, link-local or metadata)")]
    Internal,
}

/// Checks a URL given by a client (webhook) or a peer (federation endpoint).
///
/// Fails with the reason the URL is refused. Host names are not resolved here; the caller
/// checks the resolved addresses with [`check_ip`] before connecting.
pub fn check_url(text: &str, policy: OutboundPolicy) -> Result<url::Url, Refusal> {
    if text.len() > MAX_URL_BYTES || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Refusal::Malformed);
    }
    let url = url::Url::parse(text).map_err(|_| Refusal::Malformed)?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_private => {}
        _ => return Err(Refusal::Scheme),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Refusal::Credentials);
    }
    match url.host() {
        None => return Err(Refusal::Malformed),
        Some(url::Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), policy)?,
        Some(url::Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), policy)?,
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            let internal = d == "localhost"
                || d.ends_with(".localhost")
                || d.ends_with(".local")
                || d.ends_with(".internal")
                || d == "metadata.google.internal";
            if internal && !policy.allow_private {
                return Err(Refusal::Internal);
            }
        }
    }
    Ok(url)
}

/// Checks one (resolved) address against the policy.
///
/// Fails with [`Refusal::Internal`] for an internal address the policy does not allow.
pub fn check_ip(ip: IpAddr, policy: OutboundPolicy) -> Result<(), Refusal> {
    if is_internal(ip) && !policy.allow_private {
        return Err(Refusal::Internal);
    }
    Ok(())
}

/// Whether an address is not on the public internet.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let seg = v6.segments();
            let seg0 = seg[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg0 & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg0 == 0x2001 && seg[1] == 0x0db8) // documentation
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) // AWS metadata (IPv6)
                // Addresses that carry an IPv4 address to a gateway or tunnel, which then
                // reaches it for us (10.0.0.1 as 64:ff9b::a00:1): refused whatever they
                // embed, as no webhook or peer needs them.
                || seg[..6] == [0; 6] // IPv4-compatible ::/96 (deprecated)
                || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] // NAT64 64:ff9b::/96
                || (seg0 == 0x64 && seg[1] == 0xff9b && seg[2] == 1) // local NAT64 64:ff9b:1::/48
                || seg0 == 0x2002 // 6to4 2002::/16
                || (seg0 == 0x2001 && seg[1] == 0) // Teredo 2001::/32
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254, the cloud metadata address
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space 100.64/10
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || a >= 240 // reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: OutboundPolicy = OutboundPolicy {
        allow_private: false,
    };
    const LAX: OutboundPolicy = OutboundPolicy {
        allow_private: true,
    };

    #[test]
    fn public_https_is_allowed() {
        assert!(check_url("https://hooks.example.com/amp", STRICT).is_ok());
        assert!(check_url("https://93.184.215.14:8443/x", STRICT).is_ok());
        assert!(check_url("https://[2606:4700::1]/x", STRICT).is_ok());
        assert!(check_url("https://198.20.0.1/x", STRICT).is_ok());
        assert!(check_url("https://[2001:4860::8888]/x", STRICT).is_ok());
    }

    #[test]
    fn internal_and_odd_targets_are_refused() {
        for (url, why) in [
            ("http://hooks.example.com/amp", Refusal::Scheme),
            ("ftp://hooks.example.com/amp", Refusal::Scheme),
            ("not a url", Refusal::Malformed),
            ("https://user:pw@hooks.example.com/", Refusal::Credentials),
            ("https://127.0.0.1/hook", Refusal::Internal),
            ("https://localhost/hook", Refusal::Internal),
            ("https://10.0.0.1/hook", Refusal::Internal),
            ("https://172.16.5.4/hook", Refusal::Internal),
            ("https://192.168.1.1/hook", Refusal::Internal),
            (
                "https://169.254.169.254/latest/meta-data",
                Refusal::Internal,
            ),
            ("https://100.64.0.1/", Refusal::Internal),
            ("https://0.0.0.0/", Refusal::Internal),
            ("https://[::1]/", Refusal::Internal),
            ("https://[fe80::1]/", Refusal::Internal),
            ("https://[fd00::1]/", Refusal::Internal),
            ("https://[::ffff:127.0.0.1]/", Refusal::Internal),
            ("https://metadata.google.internal/", Refusal::Internal),
            // Translated, tunnelled and benchmarking ranges.
            ("https://[64:ff9b::a00:1]/", Refusal::Internal),
            ("https://[64:ff9b::808:808]/", Refusal::Internal),
            ("https://[64:ff9b:1::a00:1]/", Refusal::Internal),
            ("https://[2002:a00:1::]/", Refusal::Internal),
            ("https://[2001:0:4136:e378::1]/", Refusal::Internal),
            ("https://[::a00:1]/", Refusal::Internal),
            ("https://198.18.0.1/", Refusal::Internal),
            ("https://198.19.255.254/", Refusal::Internal),
        ] {
            assert_eq!(check_url(url, STRICT).err(), Some(why), "{url}");
        }
    }

    #[test]
    fn operator_may_allow_private_targets() {
        assert!(check_url("http://127.0.0.1:9000/hook", LAX).is_ok());
        assert!(check_url("https://10.0.0.1/hook", LAX).is_ok());
        // Never other schemes or credentials.
        assert!(check_url("ftp://127.0.0.1/", LAX).is_err());
        assert!(check_url("http://u:p@127.0.0.1/", LAX).is_err());
    }
}
