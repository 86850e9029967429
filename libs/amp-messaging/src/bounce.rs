//! Bounces: when a message that was already answered `queued` can never arrive (the
//! recipient's mailbox is full, the recipient is gone, a peer provider refused it), its sender
//! gets a `system` message from `postmaster@system.<domain>` saying why, signed with the
//! provider key, threaded under the original. Nothing accepted is dropped silently.

use amp_proto::message::{PROTOCOL_VERSION, limits};
use amp_proto::relay::{Accepted, StoredMessage};
use amp_proto::signing::{SignedFields, sign_message};
use amp_proto::{Address, Envelope, MessageId, Priority, RawPayload, SecretKey, Timestamp};
use amp_store::{AgentRecord, Store};
use serde_json::json;

/// The bounce of `original` to its sender, ready to be routed to the sender's mailbox, with
/// the sender's record, when the sender is an agent of this provider (`domain`) that still
/// exists; `None` otherwise
/// (a sender on another provider, a system address, a deleted agent: nobody to tell here).
/// `code` is the error code (`mailbox_full`, `recipient_not_found`, …), `why` a sentence
/// for humans.
///
/// Fails when the store cannot be read or the notice cannot be signed or encoded.
pub async fn to_sender(
    store: &Store,
    domain: &str,
    provider_key: &SecretKey,
    original: &Accepted,
    code: &str,
    why: &str,
) -> amp_store::Result<Option<(AgentRecord, Accepted)>> {
    let sender = match Address::parse_full(&original.sender_address, domain) {
        Ok(a) if a.provider() == domain && a.tenant() != "system" => a,
        _ => return Ok(None),
    };
    let Some(agent) = store
        .agent_by_name(sender.tenant(), sender.name())
        .await?
        .filter(|r| r.address == sender.as_str())
    else {
        return Ok(None);
    };
    let notice = notice(domain, provider_key, &agent, original, code, why)
        .map_err(amp_store::Error::Corrupt)?;
    Ok(Some((agent, notice)))
}

/// The bounce of `original` to its (local) sender `sender`.
fn notice(
    domain: &str,
    provider_key: &SecretKey,
    sender: &AgentRecord,
    original: &Accepted,
    code: &str,
    why: &str,
) -> Result<Accepted, String> {
    let orig = &original.message.envelope;
    let now = Timestamp::now();
    let postmaster = format!("postmaster@system.{domain}");
    let payload = json!({
        "type": "system",
        "message": why,
        "context": {
            "original_id": orig.id,
            "recipient": original.recipient_address,
            "error": code,
        },
    })
    .to_string();
    let subject: String = format!("Undeliverable: {}", orig.subject)
        .chars()
        .take(limits::SUBJECT_CHARS)
        .collect();
    let in_reply_to = orig.id.to_string();
    let signature = sign_message(
        provider_key,
        &SignedFields {
            from: &postmaster,
            to: &sender.address,
            subject: &subject,
            priority: Priority::Normal.as_str(),
            in_reply_to: &in_reply_to,
        },
        &payload,
    )
    .map_err(|e| e.to_string())?;
    let envelope = Envelope {
        version: PROTOCOL_VERSION.to_owned(),
        id: MessageId::generate(now),
        from: postmaster.clone(),
        to: sender.address.clone(),
        subject,
        priority: Priority::Normal,
        timestamp: now,
        expires_at: Some(now.plus_secs(limits::DEFAULT_TTL_SECS)),
        signature,
        in_reply_to: Some(in_reply_to),
        thread_id: orig.thread_id.clone(),
        idempotency_key: None,
    };
    Ok(Accepted {
        v: 1,
        message: StoredMessage {
            envelope,
            payload: RawPayload::from_json(payload).map_err(|e| e.to_string())?,
            sender_public_key: Some(provider_key.public().to_pem()),
            security: None,
            receipt: false,
        },
        recipient_id: sender.id.clone(),
        recipient_address: sender.address.clone(),
        sender_address: postmaster,
        signature_valid: true,
        verified_at: Some(now),
        max_queued: None,
        remote_provider: None,
        via_provider: None,
        accepted_at: Some(now),
    })
}
