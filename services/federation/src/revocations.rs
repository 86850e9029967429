//! `X-AMP-Key-Revoked` (spec-next 07 "Federation Propagation"): the keys this provider
//! revoked are announced to its peers on the federation requests that follow, and what a
//! peer announces is added to our list, scoped to that peer.
//!
//! - Outbound ([`Revocations::announced`]): every `POST /federation/deliver` carries one
//!   header line per fingerprint this provider revoked within `key_revoked_announce_secs`,
//!   newest first, at most [`MAX_ANNOUNCED`] (the store's feed, read at most once per
//!   [`REFRESH`] per process).
//! - Inbound ([`Revocations::learn`]): once the request's provider signature verified, each
//!   well-formed fingerprint (one per line, or comma-separated; at most [`MAX_ANNOUNCED`]
//!   per request) is recorded as reported by that provider. It refuses that key in messages
//!   the same provider federates, never elsewhere: a peer cannot revoke a key of ours or of
//!   a third provider. Each (provider, fingerprint) is written once per process per
//!   [`RELEARN`], not once per request.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use amp_proto::Timestamp;
use amp_store::revocation::{self, Reason, Revocation};
use axum::http::HeaderMap;
use parking_lot::Mutex;

use crate::Inner;

/// The header (spec-next 07).
pub const KEY_REVOKED_HEADER: &str = "X-AMP-Key-Revoked";
/// Most fingerprints announced per request, and read from one.
pub const MAX_ANNOUNCED: usize = 32;
/// How long the announced list is reused before the store is read again.
const REFRESH: Duration = Duration::from_secs(2);
/// How long a learned (provider, fingerprint) is not written again.
const RELEARN: Duration = Duration::from_secs(3600);
/// Most (provider, fingerprint) pairs remembered as written.
const MAX_LEARNED: usize = 10_000;

/// The per-process state of both directions.
#[derive(Default)]
pub(crate) struct Revocations {
    announced: Mutex<Option<(Instant, Vec<String>)>>,
    learned: Mutex<HashMap<(String, String), Instant>>,
}

/// `SHA256:` and 43 characters of standard base64 with its one `=`: the only fingerprint
/// form this provider (and the spec's examples) uses.
fn well_formed(fp: &str) -> bool {
    fp.strip_prefix("SHA256:").is_some_and(|b| {
        (43..=44).contains(&b.len())
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='))
    })
}

impl Revocations {
    /// The fingerprints to announce on an outbound request. A store failure announces what
    /// was last read (nothing at first): the header is a SHOULD and never holds a delivery.
    pub(crate) async fn announced(&self, inner: &Inner) -> Vec<String> {
        if let Some((at, list)) = &*self.announced.lock()
            && at.elapsed() < REFRESH
        {
            return list.clone();
        }
        let window = revocation::secs_to_millis(inner.config.key_revoked_announce_secs);
        let since = Timestamp::now().unix_millis().saturating_sub(window);
        match revocation::recent(&inner.store, since, MAX_ANNOUNCED).await {
            Ok(entries) => {
                let list: Vec<String> = entries.into_iter().map(|r| r.fingerprint).collect();
                *self.announced.lock() = Some((Instant::now(), list.clone()));
                list
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the revocations to announce");
                self.announced
                    .lock()
                    .as_ref()
                    .map(|(_, l)| l.clone())
                    .unwrap_or_default()
            }
        }
    }

    /// Records the fingerprints `provider` announced in `headers`. Call only once the
    /// request's provider signature verified. A store failure is logged and skipped (the
    /// peer announces again on its next request).
    pub(crate) async fn learn(&self, inner: &Inner, provider: &str, headers: &HeaderMap) {
        let fingerprints: Vec<&str> = headers
            .get_all(KEY_REVOKED_HEADER)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|f| well_formed(f))
            .take(MAX_ANNOUNCED)
            .collect();
        if fingerprints.is_empty() {
            return;
        }
        let retention = revocation::secs_to_millis(inner.config.key_revocation_retention_secs);
        let now = Timestamp::now().unix_millis();
        for fp in fingerprints {
            let pair = (provider.to_owned(), fp.to_owned());
            {
                let mut learned = self.learned.lock();
                if learned.get(&pair).is_some_and(|at| at.elapsed() < RELEARN) {
                    continue;
                }
                if learned.len() >= MAX_LEARNED {
                    learned.retain(|_, at| at.elapsed() < RELEARN);
                    if learned.len() >= MAX_LEARNED {
                        learned.clear();
                    }
                }
            }
            let entry = Revocation {
                fingerprint: fp.to_owned(),
                agent_address: String::new(),
                revoked_at: now,
                // The header says no more; a key its provider revoked is treated as
                // compromised.
                reason: Reason::KeyCompromise,
                superseded_by: None,
                reported_by: Some(provider.to_owned()),
            };
            match revocation::revoke(&inner.store, &entry, retention).await {
                Ok(()) => {
                    tracing::info!(provider = %provider, fingerprint = %fp, "a peer revoked a key");
                    self.learned.lock().insert(pair, Instant::now());
                }
                Err(e) => {
                    tracing::warn!(provider = %provider, error = %e, "cannot record a peer's key revocation");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::well_formed;

    #[test]
    fn spec_next_only_fingerprints_are_learned() {
        let fp = amp_proto::SecretKey::generate().public().fingerprint();
        assert!(well_formed(&fp), "{fp}");
        assert!(!well_formed("SHA256:short"));
        assert!(!well_formed(&format!("{fp}x")));
        assert!(!well_formed(&fp.replace("SHA256:", "sha1:")));
        assert!(!well_formed(&format!("{}\u{7f}", &fp[..fp.len() - 1])));
    }
}
