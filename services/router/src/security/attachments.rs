//! `local.security.attachments` (spec 07 and the attachment guide "Attachment Security
//! Metadata"): one entry per `provider` attachment of a delivered message, from what this
//! provider's scan recorded.
//!
//! - A local sender's attachment was uploaded here, scanned here, and bound to this message
//!   at acceptance: its recorded `scan_status`, `scanned_at` and `digest_verified: true` (the
//!   scan's first, required step compared size and SHA-256 with the declaration).
//! - A peer's attachment lives on the sender's provider and is never fetched (spec 06: URLs
//!   are not rewritten or proxied): its `scan_status` is the sender's provider's word (spec 06:
//!   not to be trusted), so `digest_verified: false` and no `scanned_at`.
//! - `afp` references are never fetched or scanned by any provider (spec 04): no entry.
//!
//! `injection_flags`: the categories the attachment scan's injection stage found in a text
//! attachment's content (its `injection:` finding in `scan_flags`); empty for a peer's
//! attachment and for formats that stage does not read. An extra stage's own findings are in
//! `scan_flags`.

use amp_proto::Timestamp;
use amp_proto::attachment::{self, PayloadAttachment};
use amp_store::Store;
use serde::{Deserialize, Serialize};

use super::Origin;

/// One attachment's entry in `local.security.attachments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachmentSecurity {
    /// The attachment id.
    pub id: String,
    /// `clean`, `basic_clean` or `suspicious` (a `rejected` one is never routed).
    pub scan_status: String,
    /// When this provider's scan completed (RFC 3339); absent for a peer's attachment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanned_at: Option<String>,
    /// Whether this provider checked size and SHA-256 against the declaration.
    pub digest_verified: bool,
    /// Appendix A categories found in the content by this provider's scan.
    pub injection_flags: Vec<String>,
    /// What an operator's extra scan stage reported (`stage:finding`), when anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scan_flags: Vec<String>,
}

/// The entries for the `provider` attachments of `payload` (raw JSON) sent by `sender`.
///
/// Fails only when the store is unavailable (the router retries the message).
pub async fn assess_attachments(
    store: &Store,
    payload: &str,
    sender: &str,
    origin: Origin,
) -> amp_store::Result<Vec<AttachmentSecurity>> {
    // Most messages have none: skip the parse.
    if !payload.contains("\"attachments\"") {
        return Ok(Vec::new());
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(payload) else {
        return Ok(Vec::new());
    };
    // Acceptance checked the shape already; a list that no longer parses has no entries.
    let list = attachment::payload_attachments(&value).unwrap_or_default();
    let mut out = Vec::with_capacity(list.len());
    for a in list {
        let PayloadAttachment::Provider {
            id, scan_status, ..
        } = a
        else {
            continue;
        };
        let declared = AttachmentSecurity {
            id: id.clone(),
            scan_status: scan_status.as_str().to_owned(),
            scanned_at: None,
            digest_verified: false,
            injection_flags: Vec::new(),
            scan_flags: Vec::new(),
        };
        if origin == Origin::Peer || !attachment::is_valid_id(&id) {
            out.push(declared);
            continue;
        }
        let entry = match store.attachment(&id).await? {
            // Bound to this sender's message at acceptance; anything else is not ours to
            // vouch for.
            Some(v) if v.value.owner_address.eq_ignore_ascii_case(sender) => {
                let rec = v.value;
                AttachmentSecurity {
                    id,
                    scan_status: rec.scan_status,
                    scanned_at: rec
                        .scanned_at
                        .and_then(Timestamp::from_unix_millis)
                        .map(Timestamp::to_rfc3339),
                    digest_verified: rec.received.is_some_and(|r| r.digest == rec.digest),
                    injection_flags: amp_messaging::attachments::scan::injection_flags(
                        &rec.scan_flags,
                    ),
                    scan_flags: rec.scan_flags,
                }
            }
            _ => declared,
        };
        out.push(entry);
    }
    Ok(out)
}
