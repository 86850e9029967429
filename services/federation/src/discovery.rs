//! Finding a peer provider's endpoint and key (spec 06 "Provider Discovery"), in order:
//! static peers from the configuration, the DNS TXT record `_amp._tcp.<domain>`, then the
//! well-known document `https://<domain>/.well-known/agent-messaging.json`. Answers are
//! cached with the spec's TTLs (DNS: the record's TTL, at least 5 min; well-known: 1 h).
//!
//! A key learnt from a document must match the fingerprint pinned by the configuration or
//! published in DNS, when there is one.
//!
//! Inbound requests name the provider to look up themselves, so lookups are bounded: one at
//! a time per domain (concurrent requests for it wait for that one answer), at most
//! `discoveries_per_source_per_minute` cache misses per client address (so one sender of
//! bogus names spends its own allowance, not everyone's), at most `discoveries_per_minute`
//! in all, and at most `discovery_cache_entries` answers kept. Configured peers need no
//! lookup and are never limited.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amp_proto::PublicKey;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use parking_lot::Mutex;
use serde::Deserialize;

use amp_runtime::ratelimit::{RateLimit, RateLimiter};

use crate::config::Config;
use crate::net;

/// A discovered peer provider.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its domain.
    pub domain: String,
    /// Its API base URL (with `/v1`), without a trailing slash.
    pub endpoint: String,
    /// Its Ed25519 key (verifies its `X-AMP-Signature`).
    pub key: PublicKey,
    /// Where it was found: `static`, `dns` or `well-known`.
    pub source: &'static str,
}

/// Why discovery failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DiscoveryError {
    /// No method found the provider.
    #[error("no AMP provider found for {0}")]
    NotFound(String),
    /// A key did not match the pinned or published fingerprint, or a document was invalid.
    #[error("discovery of {domain} failed: {reason}")]
    Invalid {
        /// The domain looked up.
        domain: String,
        /// What was wrong.
        reason: String,
    },
    /// Too many discoveries this minute: not looked up (and not remembered as failed).
    #[error("too many provider discoveries; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a discovery is allowed again.
        retry_after_secs: u64,
    },
}

enum Cached {
    Found(Arc<Peer>),
    Failed(DiscoveryError),
}

struct Entry {
    value: Cached,
    until: Instant,
    at: Instant,
}

/// Discovery with its cache.
pub struct Discovery {
    config: Arc<Config>,
    http: reqwest::Client,
    dns: Option<TokioResolver>,
    cache: Mutex<HashMap<String, Entry>>,
    /// One lock per domain being discovered now: a second request for it waits for the
    /// first one's answer instead of looking it up again.
    in_flight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Cache misses allowed, all domains and sources together.
    limiter: RateLimiter,
    /// Cache misses allowed per client address (inbound requests), within `limiter`.
    per_source: RateLimiter,
}

/// Most client addresses `per_source` remembers (about 64 bytes each); past it the ones
/// nearest to a full allowance are forgotten, which only ever gives back what they had.
const MAX_SOURCES: usize = 10_000;

/// The record `_amp._tcp.<domain>` TXT `v=AMP1; endpoint=…; pubkey=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxtRecord {
    /// The endpoint.
    pub endpoint: String,
    /// The key fingerprint.
    pub pubkey: String,
}

/// Parses a TXT record's text; `None` unless it is `v=AMP1` with an endpoint and a key.
pub fn parse_txt(text: &str) -> Option<TxtRecord> {
    let mut version = None;
    let mut endpoint = None;
    let mut pubkey = None;
    for part in text.split(';') {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim().to_ascii_lowercase().as_str() {
            "v" => version = Some(v),
            "endpoint" => endpoint = Some(v),
            "pubkey" => pubkey = Some(v),
            _ => {}
        }
    }
    (version.as_deref() == Some("AMP1")).then_some(())?;
    Some(TxtRecord {
        endpoint: endpoint.filter(|e| !e.is_empty())?,
        pubkey: pubkey.filter(|p| !p.is_empty())?,
    })
}

/// Whether two fingerprints name the same key (`SHA256:` prefix and base64 padding
/// optional).
pub fn same_fingerprint(a: &str, b: &str) -> bool {
    fn norm(s: &str) -> &str {
        let s = s.trim();
        let s = s
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("sha256:"))
            .map_or(s, |_| &s[7..]);
        s.trim_end_matches('=')
    }
    let (a, b) = (norm(a), norm(b));
    !a.is_empty() && a == b
}

/// The provider domains an address's domain may belong to, longest first, never below two
/// labels (SPEC-CHECKLIST §4.7): `team.agents.corp.io` → `agents.corp.io`, `corp.io`. The
/// first label is always the tenant, so it is never a candidate itself.
pub fn provider_candidates(address_domain: &str) -> Vec<String> {
    let labels: Vec<&str> = address_domain
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
        .collect();
    (1..labels.len())
        .filter(|i| labels.len() - i >= 2)
        .map(|i| labels[i..].join(".").to_ascii_lowercase())
        .collect()
}

#[derive(Deserialize)]
struct Document {
    endpoint: Option<String>,
    public_key: Option<String>,
    fingerprint: Option<String>,
}

impl Discovery {
    /// Discovery for `config`, using `http` for documents.
    pub fn new(config: Arc<Config>, http: reqwest::Client) -> Self {
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_millis(config.request_timeout_ms.min(5_000));
        opts.attempts = 1;
        let dns = match config.dns_nameserver {
            Some(addr) => {
                let group = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
                Some(
                    TokioResolver::builder_with_config(
                        ResolverConfig::from_parts(None, vec![], group),
                        TokioConnectionProvider::default(),
                    )
                    .with_options(opts)
                    .build(),
                )
            }
            None => match TokioResolver::builder_tokio() {
                Ok(b) => Some(b.with_options(opts).build()),
                Err(e) => {
                    tracing::warn!(error = %e, "no system DNS configuration; DNS discovery is off");
                    None
                }
            },
        };
        let limiter = RateLimiter::new(RateLimit {
            limit: config.discoveries_per_minute.max(1),
            window: Duration::from_secs(60),
        });
        let per_source = RateLimiter::with_max_keys(
            RateLimit {
                limit: config.discoveries_per_source_per_minute.max(1),
                window: Duration::from_secs(60),
            },
            MAX_SOURCES,
        );
        Self {
            config,
            http,
            dns,
            cache: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            limiter,
            per_source,
        }
    }

    fn cached(&self, domain: &str) -> Option<Result<Arc<Peer>, DiscoveryError>> {
        let cache = self.cache.lock();
        let e = cache.get(domain).filter(|e| e.until > Instant::now())?;
        Some(match &e.value {
            Cached::Found(p) => Ok(p.clone()),
            Cached::Failed(err) => Err(err.clone()),
        })
    }

    /// The provider an address's domain belongs to: the first candidate (§4.7) found.
    ///
    /// Fails with the error of the last candidate tried.
    pub async fn for_address_domain(
        &self,
        address_domain: &str,
    ) -> Result<Arc<Peer>, DiscoveryError> {
        let mut last = DiscoveryError::NotFound(address_domain.to_owned());
        for candidate in provider_candidates(address_domain) {
            match self.provider(&candidate).await {
                Ok(p) => return Ok(p),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The provider `domain`, from the cache or discovered now (on our own behalf: only the
    /// overall limit applies).
    ///
    /// Fails when no method finds it or what is found is inconsistent.
    pub async fn provider(&self, domain: &str) -> Result<Arc<Peer>, DiscoveryError> {
        self.provider_for(domain, None).await
    }

    /// The provider `domain`, from the cache or discovered now on behalf of the client
    /// address `source` (an inbound request), which a cache miss charges.
    ///
    /// Fails when no method finds it, what is found is inconsistent, or `source` or everyone
    /// together has used up this minute's discoveries.
    pub async fn provider_for(
        &self,
        domain: &str,
        source: Option<&str>,
    ) -> Result<Arc<Peer>, DiscoveryError> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if let Some(answer) = self.cached(&domain) {
            return answer;
        }
        // Single flight: whoever holds the domain's lock looks it up; the others find the
        // answer in the cache once they get the lock.
        let lock = self
            .in_flight
            .lock()
            .entry(domain.clone())
            .or_default()
            .clone();
        let answer = {
            let _turn = lock.lock().await;
            match self.cached(&domain) {
                Some(answer) => answer,
                None => self.discover_and_cache(&domain, source).await,
            }
        };
        {
            // The last one out removes the lock (the map holds one reference, `lock` another).
            let mut in_flight = self.in_flight.lock();
            if Arc::strong_count(&lock) <= 2 {
                in_flight.remove(&domain);
            }
        }
        answer
    }

    /// A cache miss: looks `domain` up (if the rates allow) and remembers the answer.
    async fn discover_and_cache(
        &self,
        domain: &str,
        source: Option<&str>,
    ) -> Result<Arc<Peer>, DiscoveryError> {
        let configured = self
            .config
            .peers
            .iter()
            .any(|p| p.domain.eq_ignore_ascii_case(domain));
        if !configured {
            // The source's own allowance first: a source over it spends nothing of the
            // overall one.
            if let Some(source) = source {
                let decision = self.per_source.check(source);
                if !decision.allowed {
                    tracing::warn!(provider = %domain, source = %source, "provider discovery rate limit reached for one client address");
                    return Err(DiscoveryError::RateLimited {
                        retry_after_secs: decision.retry_after_secs,
                    });
                }
            }
            let decision = self.limiter.check("*");
            if !decision.allowed {
                tracing::warn!(provider = %domain, "provider discovery rate limit reached");
                return Err(DiscoveryError::RateLimited {
                    retry_after_secs: decision.retry_after_secs,
                });
            }
        }
        let domain = domain.to_owned();
        let (value, ttl) = match self.discover(&domain).await {
            Ok((peer, ttl)) => (Cached::Found(Arc::new(peer)), ttl),
            Err(e) => (
                Cached::Failed(e),
                Duration::from_secs(self.config.negative_ttl_secs),
            ),
        };
        let now = Instant::now();
        let out = match &value {
            Cached::Found(p) => Ok(p.clone()),
            Cached::Failed(e) => Err(e.clone()),
        };
        match &out {
            Ok(p) => tracing::info!(
                provider = %domain, endpoint = %p.endpoint, source = p.source,
                fingerprint = %p.key.fingerprint(), "federation peer discovered"
            ),
            Err(e) => tracing::warn!(provider = %domain, error = %e, "federation discovery failed"),
        }
        let mut cache = self.cache.lock();
        let max = self.config.discovery_cache_entries.max(1);
        if cache.len() >= max && !cache.contains_key(&domain) {
            cache.retain(|_, e| e.until > now);
            if cache.len() >= max {
                // Still full of live answers: the older half goes (O(n), once per half).
                let mut ages: Vec<Instant> = cache.values().map(|e| e.at).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                cache.retain(|_, e| e.at > cut);
            }
        }
        cache.insert(
            domain,
            Entry {
                value,
                until: now + ttl,
                at: now,
            },
        );
        out
    }

    /// Answers held in the cache (found and failed).
    pub fn cached_count(&self) -> usize {
        self.cache.lock().len()
    }

    /// Forgets a cached answer older than `min_age` (a peer's key may have changed), and
    /// says whether it did.
    pub fn invalidate_older_than(&self, domain: &str, min_age: Duration) -> bool {
        let mut cache = self.cache.lock();
        let stale = cache.get(domain).is_some_and(|e| e.at.elapsed() >= min_age);
        if stale {
            cache.remove(domain);
        }
        stale
    }

    async fn discover(&self, domain: &str) -> Result<(Peer, Duration), DiscoveryError> {
        let invalid = |reason: String| DiscoveryError::Invalid {
            domain: domain.to_owned(),
            reason,
        };
        // 1. Static peers: pinned by the operator, never expire.
        if let Some(p) = self
            .config
            .peers
            .iter()
            .find(|p| p.domain.eq_ignore_ascii_case(domain))
        {
            let endpoint = self.endpoint(&p.endpoint).map_err(invalid)?;
            let key = match &p.public_key {
                Some(k) => PublicKey::parse(k).map_err(|e| invalid(format!("public_key: {e}")))?,
                None => {
                    let fp = p.fingerprint.clone().unwrap_or_default();
                    self.fetch_key(domain, &endpoint, &fp).await?
                }
            };
            if let Some(fp) = &p.fingerprint
                && !same_fingerprint(fp, &key.fingerprint())
            {
                return Err(invalid("configured key and fingerprint differ".into()));
            }
            let peer = Peer {
                domain: domain.to_owned(),
                endpoint,
                key,
                source: "static",
            };
            return Ok((peer, Duration::from_secs(365 * 24 * 3600)));
        }

        // 2. DNS TXT.
        let min_ttl = Duration::from_secs(self.config.dns_min_ttl_secs);
        if let Some((txt, ttl)) = self.lookup_txt(domain).await {
            let endpoint = self.endpoint(&txt.endpoint).map_err(invalid)?;
            let key = self.fetch_key(domain, &endpoint, &txt.pubkey).await?;
            let peer = Peer {
                domain: domain.to_owned(),
                endpoint,
                key,
                source: "dns",
            };
            return Ok((peer, ttl.max(min_ttl)));
        }

        // 3. The well-known document.
        let doc = self.well_known(domain).await?;
        let endpoint = doc
            .endpoint
            .as_deref()
            .ok_or_else(|| invalid("well-known document without endpoint".into()))?;
        let endpoint = self.endpoint(endpoint).map_err(invalid)?;
        let key = doc_key(&doc, None).map_err(invalid)?;
        let peer = Peer {
            domain: domain.to_owned(),
            endpoint,
            key,
            source: "well-known",
        };
        Ok((peer, Duration::from_secs(self.config.well_known_ttl_secs)))
    }

    fn endpoint(&self, text: &str) -> Result<String, String> {
        net::check_url(text, &self.config)
            .map(|u| u.as_str().trim_end_matches('/').to_owned())
            .map_err(|e| format!("endpoint {text}: {e}"))
    }

    /// The key whose fingerprint is `fingerprint`: from the peer's `<endpoint>/info`, else
    /// from its well-known document.
    async fn fetch_key(
        &self,
        domain: &str,
        endpoint: &str,
        fingerprint: &str,
    ) -> Result<PublicKey, DiscoveryError> {
        let mut reasons = Vec::new();
        match self.get_document(&format!("{endpoint}/info")).await {
            Ok(doc) => match doc_key(&doc, Some(fingerprint)) {
                Ok(k) => return Ok(k),
                Err(e) => reasons.push(format!("info: {e}")),
            },
            Err(e) => reasons.push(format!("info: {e}")),
        }
        match self.well_known(domain).await {
            Ok(doc) => match doc_key(&doc, Some(fingerprint)) {
                Ok(k) => return Ok(k),
                Err(e) => reasons.push(format!("well-known: {e}")),
            },
            Err(e) => reasons.push(e.to_string()),
        }
        Err(DiscoveryError::Invalid {
            domain: domain.to_owned(),
            reason: format!("no key matching {fingerprint}: {}", reasons.join("; ")),
        })
    }

    async fn lookup_txt(&self, domain: &str) -> Option<(TxtRecord, Duration)> {
        let dns = self.dns.as_ref()?;
        let name = format!("_amp._tcp.{domain}.");
        let lookup = match dns.txt_lookup(name.as_str()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(name = %name, error = %e, "no AMP TXT record");
                return None;
            }
        };
        let ttl = lookup
            .valid_until()
            .saturating_duration_since(Instant::now());
        lookup.iter().find_map(|txt| {
            let text: String = txt
                .txt_data()
                .iter()
                .map(|part| String::from_utf8_lossy(part))
                .collect();
            parse_txt(&text).map(|r| (r, ttl))
        })
    }

    async fn well_known(&self, domain: &str) -> Result<Document, DiscoveryError> {
        let base = self
            .config
            .well_known_overrides
            .iter()
            .find(|(d, _)| d.eq_ignore_ascii_case(domain))
            .map_or_else(|| format!("https://{domain}"), |(_, b)| b.clone());
        let url = format!(
            "{}/.well-known/agent-messaging.json",
            base.trim_end_matches('/')
        );
        self.get_document(&url)
            .await
            .map_err(|reason| DiscoveryError::Invalid {
                domain: domain.to_owned(),
                reason: format!("{url}: {reason}"),
            })
    }

    async fn get_document(&self, url: &str) -> Result<Document, String> {
        let url = net::check_url(url, &self.config).map_err(|e| e.to_string())?;
        let resp = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status().as_u16()));
        }
        let body = net::read_capped(resp, self.config.max_response_bytes).await?;
        serde_json::from_slice(&body).map_err(|e| format!("not a discovery document: {e}"))
    }
}

/// The key of a discovery document, checked against its own fingerprint and `expected`.
fn doc_key(doc: &Document, expected: Option<&str>) -> Result<PublicKey, String> {
    let pem = doc.public_key.as_deref().ok_or("no public_key")?;
    let key = PublicKey::parse(pem).map_err(|e| format!("public_key: {e}"))?;
    let actual = key.fingerprint();
    if let Some(fp) = &doc.fingerprint
        && !same_fingerprint(fp, &actual)
    {
        return Err("public_key does not match its fingerprint".into());
    }
    if let Some(fp) = expected
        && !same_fingerprint(fp, &actual)
    {
        return Err(format!("key {actual} does not match the pinned {fp}"));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_records() {
        assert_eq!(
            parse_txt(
                "v=AMP1; endpoint=https://api.b.test/v1; pubkey=SHA256:abc; capabilities=e2ee"
            ),
            Some(TxtRecord {
                endpoint: "https://api.b.test/v1".into(),
                pubkey: "SHA256:abc".into()
            })
        );
        assert_eq!(
            parse_txt("v=AMP2; endpoint=https://x/v1; pubkey=SHA256:a"),
            None
        );
        assert_eq!(parse_txt("v=AMP1; pubkey=SHA256:a"), None);
        assert_eq!(parse_txt("v=spf1 -all"), None);
    }

    #[test]
    fn candidates_walk_suffixes_down_to_two_labels() {
        assert_eq!(
            provider_candidates("team.agents.corp.io"),
            vec!["agents.corp.io", "corp.io"]
        );
        assert_eq!(provider_candidates("acme.beta.test"), vec!["beta.test"]);
        assert!(provider_candidates("beta.test").is_empty());
    }

    #[tokio::test]
    async fn security_the_cache_is_bounded() {
        let peers = (0..5)
            .map(|i| crate::config::StaticPeer {
                domain: format!("p{i}.test"),
                endpoint: format!("https://p{i}.test/v1"),
                public_key: Some(amp_proto::SecretKey::generate().public().to_pem()),
                fingerprint: None,
            })
            .collect();
        let config = Arc::new(Config {
            peers,
            discovery_cache_entries: 2,
            ..Config::default()
        });
        let d = Discovery::new(config, reqwest::Client::new());
        for i in 0..5 {
            assert!(d.provider(&format!("p{i}.test")).await.is_ok());
            assert!(d.cached_count() <= 2, "{} cached", d.cached_count());
        }
        // What was evicted is looked up again.
        assert!(d.provider("p0.test").await.is_ok());
    }

    #[test]
    fn fingerprints_compare_loosely() {
        assert!(same_fingerprint("SHA256:abc=", "sha256:abc"));
        assert!(same_fingerprint("abc", "SHA256:abc"));
        assert!(!same_fingerprint("SHA256:abd", "SHA256:abc"));
        assert!(!same_fingerprint("", "SHA256:"));
    }
}
