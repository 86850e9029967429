//! The attachment stage of acceptance (spec 05 "Messages with Attachments"): the payload's
//! `attachments` parsed and shape-checked, then each `provider` attachment checked against
//! its upload and bound to the message. `afp` attachments are shape-checked only and passed
//! through untouched (spec 04).

use amp_proto::attachment::PayloadAttachment;
use amp_proto::{ApiError, Envelope, ErrorCode, RawPayload};
use amp_store::AgentRecord;
use sha2::{Digest as _, Sha256};

use crate::Acceptor;

/// The payload's attachments (none for most messages: the payload is only parsed again
/// when it names `attachments`).
///
/// Fails with the shape and limit errors of [`amp_proto::attachment::payload_attachments`],
/// or `422 attachments_not_supported` when the message carries `provider` attachments and
/// this provider does not take them.
pub(crate) fn parse(
    acc: &Acceptor,
    payload: &RawPayload,
) -> Result<Vec<PayloadAttachment>, ApiError> {
    if !payload.get().contains("\"attachments\"") {
        return Ok(Vec::new());
    }
    let value: serde_json::Value = serde_json::from_str(payload.get())
        .map_err(|_| ApiError::invalid("payload", "payload is not valid JSON"))?;
    let list = amp_proto::attachment::payload_attachments(&value)?;
    let provider = list
        .iter()
        .any(|a| matches!(a, PayloadAttachment::Provider { .. }));
    if provider && acc.attachments.is_none() {
        return Err(ApiError::new(
            ErrorCode::AttachmentsNotSupported,
            "this provider does not store attachments",
        )
        .with_field("payload.attachments"));
    }
    Ok(list)
}

/// Checks and binds the `provider` attachments to this message; returns the warnings of
/// the route answer.
pub(crate) async fn claim(
    acc: &Acceptor,
    sender: &AgentRecord,
    list: &[PayloadAttachment],
    envelope: &Envelope,
    payload: &RawPayload,
    recipient: &str,
) -> Result<Vec<&'static str>, ApiError> {
    let Some(service) = &acc.attachments else {
        return Ok(Vec::new());
    };
    if !list
        .iter()
        .any(|a| matches!(a, PayloadAttachment::Provider { .. }))
    {
        return Ok(Vec::new());
    }
    service
        .claim_for_message(sender, &fingerprint(envelope, payload), recipient, list)
        .await
}

/// What identifies "the same message" across retries: the signature (which covers the
/// payload), the recipient and the payload itself; never the provider-assigned id.
fn fingerprint(envelope: &Envelope, payload: &RawPayload) -> String {
    let mut h = Sha256::new();
    for part in [
        envelope.signature.as_str(),
        envelope.to.as_str(),
        envelope.subject.as_str(),
        payload.get(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}
