//! What services hand each other about a message: the accepted message on the ingress stream
//! (ingest → router), the router's outcome, the message as stored in a mailbox (router →
//! pickup, delivery), and the webhook job (router → delivery). Internal to the provider, never sent to agents as such; versioned so a
//! rolling upgrade can tell old records from new.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::message::{Envelope, RawPayload, Timestamp};

/// A message as stored in a recipient's mailbox.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The envelope as emitted to the recipient (server id and timestamp).
    pub envelope: Envelope,
    /// The payload exactly as the sender sent it.
    pub payload: RawPayload,
    /// The sender's public key (PEM) at acceptance, so recipients can verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_public_key: Option<String>,
    /// The content-security decision (spec 07 `local.security`), opaque here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Box<RawValue>>,
    /// The sender asked for a delivery receipt (`options.receipt`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub receipt: bool,
}

/// An accepted message on the ingress stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accepted {
    /// Schema version, 1.
    pub v: u32,
    /// The message (without `security`: the router decides it).
    pub message: StoredMessage,
    /// The recipient agent's id, as resolved by ingest.
    pub recipient_id: String,
    /// The recipient's canonical address (`envelope.to` may be a short form of it).
    pub recipient_address: String,
    /// The sender's canonical address.
    pub sender_address: String,
    /// The sender agent's id, when it is one of this provider's agents: the router counts
    /// the sender's risk under it without reading the registry again. Absent for a peer's
    /// senders, bounces, and records written before it existed (the router then finds the
    /// sender by its address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<String>,
    /// Whether the sender's signature verified.
    pub signature_valid: bool,
    /// When it was verified.
    pub verified_at: Option<Timestamp>,
    /// Refuse when the mailbox already holds this many messages.
    pub max_queued: Option<u64>,
    /// Set when the recipient is on another provider: the router hands the message to the
    /// federation stream instead of a mailbox (`recipient_id` is then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_provider: Option<String>,
    /// The peer provider that delivered the message (federation inbound); `None` for a
    /// sender on this provider. The router never classifies such a message above
    /// `external`, whatever its addresses look like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via_provider: Option<String>,
    /// When this provider accepted the message: the mailbox's `queued_at`, from which the
    /// relay lifetime runs. Absent in records written before it existed (all local, whose
    /// envelope timestamp was ours); a peer's envelope timestamp is never used for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_at: Option<Timestamp>,
}

/// What the router did with an accepted message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum RouteOutcome {
    /// Written to the recipient's mailbox at this position.
    MailboxWritten {
        /// Mailbox position.
        seq: u64,
    },
    /// Already in the mailbox (same sender, id and signature): nothing written.
    Duplicate {
        /// Mailbox position of the earlier copy.
        seq: u64,
    },
    /// The same sender and id were accepted earlier with another signature.
    Conflict,
    /// The mailbox is full; nothing written, nothing dropped.
    MailboxFull,
    /// The recipient no longer exists.
    RecipientGone,
    /// The recipient is on another provider; the message is on the federation stream.
    Forwarded,
    /// Held for review (spec-next 07 quarantine), not in the mailbox: an operator approves
    /// (then it is written) or rejects it, else it expires.
    Quarantined,
    /// The store could not take the message now (a full disk, a store being reopened):
    /// nothing was written and nothing holds the message; the sender is told to retry
    /// (`503`). Only given to a publisher that waits for it on a bus that does not hold the
    /// message durably (the in-process bus); on a broker the router retries instead.
    Unavailable,
    /// Refused by a content-security rule (spec-next 07's `block` verdict): not stored.
    Blocked,
}

/// The data of a durable `webhook` job: which mailbox entry to deliver (delivery re-reads it
/// before every attempt), and the message's W3C trace context so the attempts continue its
/// trace. Written by the router, read by delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookJob {
    /// The recipient agent's id.
    pub agent_id: String,
    /// The message's id.
    pub message_id: String,
    /// `traceparent`, when the message was traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// `tracestate`, when the message was traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracestate: Option<String>,
}

impl WebhookJob {
    /// The job kind in the store.
    pub const KIND: &'static str = "webhook";
}

/// The data of a durable `scan_callback` job (spec-next 08 "Scan Notification
/// Alternatives"): POST `{"attachment_id", "scan_status"}` to the URL the uploader gave,
/// signed with its webhook secret when it has one. Written where the scan ran (ingest, or
/// `ampd`), run by delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanCallbackJob {
    /// The uploading agent's id (its webhook secret signs the callback).
    pub agent_id: String,
    /// The attachment's id.
    pub attachment_id: String,
    /// The scan's final status.
    pub scan_status: String,
    /// Where to POST it (checked against the outbound policy when given, and again before
    /// every attempt).
    pub url: String,
}

impl ScanCallbackJob {
    /// The job kind in the store.
    pub const KIND: &'static str = "scan_callback";

    /// The job's id: one callback per attachment.
    pub fn job_id(attachment_id: &str) -> String {
        format!("scan_callback/{attachment_id}")
    }
}

/// The data of a durable `tenant_notify` job: one event about a tenant's agents (spec-next
/// 07's "notify tenant admins when an agent's risk level changes", an automatic
/// suspension), POSTed to the tenant's notification webhook, signed with its secret. The
/// URL and secret are read from the tenant's record at each attempt, so a webhook removed
/// or changed in between takes effect. Written by the router (risk) and ingest (the admin
/// API's test event), run by delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantNotifyJob {
    /// The tenant whose webhook is told (a tenant's deletion finds its jobs by it).
    pub tenant: String,
    /// The event's unique id (`evt_…`), also in the body: receivers deduplicate by it.
    pub event_id: String,
    /// The event's name (`agent.risk_level`, `agent.suspended`, `ping`).
    pub event: String,
    /// The body to POST, JSON, made when the event happened.
    pub body: String,
}

impl TenantNotifyJob {
    /// The job kind in the store.
    pub const KIND: &'static str = "tenant_notify";

    /// The job's id: one per event.
    pub fn job_id(event_id: &str) -> String {
        format!("tenant_notify/{event_id}")
    }
}

/// The job kind of an outbound federation delivery (written and run by the federation
/// service). Its data carries `tenant`, the sending agent's tenant, so that a tenant's
/// deletion finds its jobs; jobs written before that field existed are told by their
/// `accepted.sender_address`.
pub const FEDERATION_JOB_KIND: &str = "federation";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{MessageId, Priority};

    fn accepted(sender_id: Option<&str>) -> Accepted {
        let now = Timestamp::now();
        let id = MessageId::generate(now);
        Accepted {
            v: 1,
            message: StoredMessage {
                envelope: Envelope {
                    version: crate::message::PROTOCOL_VERSION.to_owned(),
                    thread_id: id.to_string(),
                    id,
                    from: "alice@acme.example.test".into(),
                    to: "bob@acme.example.test".into(),
                    subject: "hi".into(),
                    priority: Priority::Normal,
                    timestamp: now,
                    expires_at: None,
                    signature: "sig".into(),
                    in_reply_to: None,
                    idempotency_key: None,
                },
                payload: RawPayload::from_json(
                    r#"{"type":"notification","message":"x"}"#.to_owned(),
                )
                .expect("payload"),
                sender_public_key: None,
                security: None,
                receipt: false,
            },
            recipient_id: "agt_b".into(),
            recipient_address: "bob@acme.example.test".into(),
            sender_address: "alice@acme.example.test".into(),
            sender_id: sender_id.map(str::to_owned),
            signature_valid: true,
            verified_at: Some(now),
            max_queued: Some(10),
            remote_provider: None,
            via_provider: None,
            accepted_at: Some(now),
        }
    }

    /// The sender's id travels with a local sender's record, and a record without it (a
    /// peer's sender, a bounce, or one written before the field existed) still reads.
    #[test]
    fn the_sender_id_is_optional_on_the_wire() {
        let with = serde_json::to_value(accepted(Some("agt_a"))).expect("encode");
        assert_eq!(with["sender_id"], "agt_a");
        let back: Accepted = serde_json::from_value(with).expect("decode");
        assert_eq!(back.sender_id.as_deref(), Some("agt_a"));

        let without = serde_json::to_value(accepted(None)).expect("encode");
        assert!(without.get("sender_id").is_none(), "{without}");
        let back: Accepted = serde_json::from_value(without).expect("decode an older record");
        assert_eq!(back.sender_id, None);
    }
}
