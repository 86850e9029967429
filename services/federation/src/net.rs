//! Outbound HTTP to peers: https only (plain http to loopback when the operator allows it),
//! an SSRF guard on every resolved address, timeouts, no redirects and a response size cap.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use amp_runtime::outbound::is_internal;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

use crate::config::Config;

/// Why a peer URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    /// Not an absolute http(s) URL, or it carries credentials.
    #[error("not a usable URL: {0}")]
    Malformed(String),
    /// `http://` where https is required.
    #[error("federation requires https (plain http only to loopback, when allowed)")]
    Insecure,
    /// An internal address literal the policy does not allow.
    #[error("the peer address is internal (loopback, private, link-local or metadata)")]
    Internal,
}

/// Checks a peer endpoint or discovery URL against the transport policy.
///
/// Fails when the URL is malformed, uses plain http where that is not allowed, or names an
/// internal address literal the policy does not allow. Host names are checked again at
/// connection time, after resolution.
pub fn check_url(text: &str, config: &Config) -> Result<Url, UrlRefusal> {
    let url = Url::parse(text).map_err(|e| UrlRefusal::Malformed(e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRefusal::Malformed("credentials in the URL".into()));
    }
    let loopback = is_loopback_host(&url);
    match url.scheme() {
        "https" => {}
        "http" if config.allow_insecure_http && loopback => {}
        "http" => return Err(UrlRefusal::Insecure),
        other => return Err(UrlRefusal::Malformed(format!("scheme {other}"))),
    }
    let literal = match url.host() {
        None => return Err(UrlRefusal::Malformed("no host".into())),
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        Some(url::Host::Domain(_)) => None,
    };
    if let Some(ip) = literal
        && !address_allowed(ip, config)
    {
        return Err(UrlRefusal::Internal);
    }
    Ok(url)
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        None => false,
    }
}

/// Whether a (resolved) peer address may be connected to.
fn address_allowed(ip: IpAddr, config: &Config) -> bool {
    !is_internal(ip)
        || config.allow_private_targets
        || (config.allow_insecure_http && ip.is_loopback())
}

/// Resolves host names with the system resolver and drops addresses the policy refuses, so
/// a name that points at an internal address cannot be used to reach it.
struct GuardedResolver {
    config: Arc<Config>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let config = self.config.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| address_allowed(a.ip(), &config))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no allowed address").into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// The client every peer request goes through.
///
/// Fails when the TLS backend cannot be initialised.
pub fn client(config: &Arc<Config>) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        // A proxy from the environment would resolve peer names itself, past the guard.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
        .timeout(Duration::from_millis(config.request_timeout_ms))
        .dns_resolver(Arc::new(GuardedResolver {
            config: config.clone(),
        }))
        .user_agent(concat!("amp-federation/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Reads a response body, at most `cap` bytes.
///
/// Fails on a transport error or a body over the cap.
pub async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(format!("response larger than {cap} bytes"));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + chunk.len() > cap {
            return Err(format!("response larger than {cap} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_required_unless_loopback_http_is_allowed() {
        let strict = Config::default();
        assert!(check_url("https://peer.example/v1", &strict).is_ok());
        assert_eq!(
            check_url("http://peer.example/v1", &strict),
            Err(UrlRefusal::Insecure)
        );
        assert_eq!(
            check_url("http://127.0.0.1:8080/v1", &strict),
            Err(UrlRefusal::Insecure)
        );
        assert_eq!(
            check_url("https://10.1.2.3/v1", &strict),
            Err(UrlRefusal::Internal)
        );
        assert!(check_url("https://u:p@peer.example/", &strict).is_err());
        let lax = Config {
            allow_insecure_http: true,
            ..Config::default()
        };
        assert!(check_url("http://127.0.0.1:8080/v1", &lax).is_ok());
        assert!(check_url("http://localhost:8080/v1", &lax).is_ok());
        // Only loopback, never plain http across a network.
        assert_eq!(
            check_url("http://peer.example/v1", &lax),
            Err(UrlRefusal::Insecure)
        );
        assert_eq!(
            check_url("https://192.168.1.1/v1", &lax),
            Err(UrlRefusal::Internal)
        );
    }
}
