//! Attachments across providers (spec-next 06 "Capability Negotiation"): before forwarding
//! a message with `provider` attachments, the peer's `/v1/info` must list `attachments`, and
//! the attachments must fit its `attachment_limits` (the spec's defaults when it publishes
//! none). Otherwise the message is refused whole — never forwarded with its attachments
//! stripped — and the sender gets a bounce with `attachments_not_supported` or
//! `attachment_too_large`. Attachment URLs are forwarded as signed (never rewritten), and
//! `afp` references pass through untouched.

use amp_proto::attachment::{self, PayloadAttachment};
use amp_proto::relay::Accepted;
use serde_json::Value;

use crate::discovery::Peer;
use crate::{Inner, net};

/// Why a message cannot go to a peer, or `Retry` when the peer could not be asked.
pub(crate) enum Refusal {
    /// Try again later (the peer's info did not answer).
    Retry(String),
    /// Never: the error code and the reason for the bounce.
    Permanent(&'static str, String),
}

/// The sizes of the message's `provider` attachments (none for most messages).
fn provider_sizes(a: &Accepted) -> Vec<u64> {
    let raw = a.message.payload.get();
    if !raw.contains("\"attachments\"") {
        return Vec::new();
    }
    let Ok(value) = serde_json::from_str::<Value>(raw) else {
        return Vec::new();
    };
    // Shape and our own limits were checked on acceptance; only the sizes matter here.
    attachment::payload_attachments(&value)
        .map(|list| {
            list.into_iter()
                .filter_map(|x| match x {
                    PayloadAttachment::Provider { size, .. } => Some(size),
                    PayloadAttachment::Afp { .. } => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Checks that `peer` takes the message's attachments; `None` when it does (or there are
/// none).
pub(crate) async fn check(inner: &Inner, peer: &Peer, a: &Accepted) -> Option<Refusal> {
    let sizes = provider_sizes(a);
    if sizes.is_empty() {
        return None;
    }
    let url = format!("{}/info", peer.endpoint);
    if let Err(e) = net::check_url(&url, &inner.config) {
        return Some(Refusal::Permanent(
            "attachments_not_supported",
            format!("the peer's info URL is refused: {e}"),
        ));
    }
    let info: Value = match inner.http.get(&url).send().await {
        Ok(r) if r.status().is_success() => match r.json().await {
            Ok(v) => v,
            Err(e) => return Some(Refusal::Retry(format!("{url}: {e}"))),
        },
        Ok(r) => return Some(Refusal::Retry(format!("{url}: HTTP {}", r.status()))),
        Err(e) => return Some(Refusal::Retry(format!("{url}: {e}"))),
    };
    decide(&peer.domain, &info, &sizes)
}

/// The decision, from the peer's info document.
fn decide(domain: &str, info: &Value, sizes: &[u64]) -> Option<Refusal> {
    let supported = info["capabilities"]
        .as_array()
        .is_some_and(|c| c.iter().any(|t| t == "attachments"));
    if !supported {
        return Some(Refusal::Permanent(
            "attachments_not_supported",
            format!("{domain} does not accept attachments"),
        ));
    }
    let limits = &info["attachment_limits"];
    let limit = |k: &str, default: u64| limits[k].as_u64().unwrap_or(default);
    let max_one = limit("max_attachment_size", attachment::MAX_ATTACHMENT_SIZE);
    let max_total = limit(
        "max_total_attachment_size",
        attachment::MAX_TOTAL_ATTACHMENT_SIZE,
    );
    let max_count = limit(
        "max_attachments_per_message",
        attachment::MAX_ATTACHMENTS_PER_MESSAGE as u64,
    );
    if sizes.len() as u64 > max_count {
        return Some(Refusal::Permanent(
            "attachment_too_large",
            format!("{domain} accepts at most {max_count} attachments per message"),
        ));
    }
    if sizes.iter().any(|s| *s > max_one) || sizes.iter().sum::<u64>() > max_total {
        return Some(Refusal::Permanent(
            "attachment_too_large",
            format!("{domain} accepts attachments up to {max_one} bytes each, {max_total} in all"),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(r: Option<Refusal>) -> Option<&'static str> {
        match r {
            None => None,
            Some(Refusal::Permanent(c, _)) => Some(c),
            Some(Refusal::Retry(_)) => Some("retry"),
        }
    }

    #[test]
    fn spec_next_federated_attachments_need_the_capability_and_fit_the_limits() {
        let with = json!({"capabilities": ["federation", "attachments"]});
        assert_eq!(code(decide("b", &with, &[10])), None);
        let without = json!({"capabilities": ["federation"]});
        assert_eq!(
            code(decide("b", &without, &[10])),
            Some("attachments_not_supported")
        );
        assert_eq!(
            code(decide("b", &json!({}), &[10])),
            Some("attachments_not_supported")
        );
        // The spec's defaults when no limits are published.
        assert_eq!(
            code(decide("b", &with, &[attachment::MAX_ATTACHMENT_SIZE + 1])),
            Some("attachment_too_large")
        );
        let small = json!({"capabilities": ["attachments"], "attachment_limits":
            {"max_attachment_size": 100, "max_total_attachment_size": 150, "max_attachments_per_message": 2}});
        assert_eq!(code(decide("b", &small, &[100, 50])), None);
        assert_eq!(
            code(decide("b", &small, &[101])),
            Some("attachment_too_large")
        );
        assert_eq!(
            code(decide("b", &small, &[100, 51])),
            Some("attachment_too_large")
        );
        assert_eq!(
            code(decide("b", &small, &[1, 1, 1])),
            Some("attachment_too_large")
        );
    }
}
