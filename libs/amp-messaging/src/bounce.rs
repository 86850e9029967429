//! Bounces: when a message that was already answered `queued` can never arrive (the
//! recipient's mailbox is full, the recipient is gone, a peer provider refused it), its sender
//! gets a `system` message from `postmaster@system.<domain>` saying why, signed with the
//! provider key, threaded under the original. Nothing accepted is dropped silently.
//! [`system_notice`] builds the provider's other notices the same way (spec-next 07
//! "Notifications": a message held for review, a held message rejected).

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
    let payload = json!({
        "type": "system",
        "message": why,
        "context": {
            "original_id": orig.id,
            "recipient": original.recipient_address,
            "error": code,
        },
    });
    let subject = format!("Undeliverable: {}", orig.subject);
    system_notice(
        domain,
        provider_key,
        sender,
        &subject,
        &payload,
        Some(orig.id.as_str()),
        Some(orig.thread_id.clone()),
    )
}

/// A `system` message from `postmaster@system.<domain>` to the local agent `to`, signed
/// with the provider key, ready to be routed to its mailbox: the provider's notices (a
/// bounce, a held message, a rejected one). `subject` is cut to the subject limit;
/// `payload` is the message's payload (`type: "system"`); `thread_id` `None` starts a
/// thread of its own.
///
/// Fails when the notice cannot be signed or encoded.
pub fn system_notice(
    domain: &str,
    provider_key: &SecretKey,
    to: &AgentRecord,
    subject: &str,
    payload: &serde_json::Value,
    in_reply_to: Option<&str>,
    thread_id: Option<String>,
) -> Result<Accepted, String> {
    let now = Timestamp::now();
    let postmaster = format!("postmaster@system.{domain}");
    let payload = payload.to_string();
    let subject: String = subject.chars().take(limits::SUBJECT_CHARS).collect();
    let signature = sign_message(
        provider_key,
        &SignedFields {
            from: &postmaster,
            to: &to.address,
            subject: &subject,
            priority: Priority::Normal.as_str(),
            in_reply_to: in_reply_to.unwrap_or(""),
        },
        &payload,
    )
    .map_err(|e| e.to_string())?;
    let id = MessageId::generate(now);
    // A notice about nothing the agent has starts its own thread.
    let thread_id = thread_id.unwrap_or_else(|| id.to_string());
    let envelope = Envelope {
        version: PROTOCOL_VERSION.to_owned(),
        id,
        from: postmaster.clone(),
        to: to.address.clone(),
        subject,
        priority: Priority::Normal,
        timestamp: now,
        expires_at: Some(now.plus_secs(limits::DEFAULT_TTL_SECS)),
        signature,
        in_reply_to: in_reply_to.map(str::to_owned),
        thread_id,
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
        recipient_id: to.id.clone(),
        recipient_address: to.address.clone(),
        sender_address: postmaster,
        sender_id: None,
        signature_valid: true,
        verified_at: Some(now),
        max_queued: None,
        remote_provider: None,
        via_provider: None,
        accepted_at: Some(now),
    })
}
