//! What the provider answers, as typed values. Every type is lenient on input (unknown
//! members ignored, most members optional) so the SDK works with other providers, and
//! serialisable so the CLI can print it with `--json`.
//!
//! Payloads stay raw JSON text ([`RawValue`]): what was signed is hashed from those bytes,
//! and numbers such as `1.0` or `1e400` survive a round trip unchanged.

use amp_proto::signing::{SignedFields, verify_message};
use amp_proto::{PublicKey, Verified, VerifyError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// The `provider` object of a registration answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRef {
    /// The provider's domain.
    #[serde(default)]
    pub name: String,
    /// The API base, with its version path (`https://api.example.test/v1`).
    #[serde(default)]
    pub endpoint: String,
    /// Where to `POST` messages.
    #[serde(default)]
    pub route_url: String,
}

/// A successful registration (spec 03). Providers send `agent_id`/`api_key`, some the
/// camel-case `agentId`/`apiKey`, ours both: either is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RegistrationWire")]
pub struct Registration {
    /// The agent's full address.
    pub address: String,
    /// The address without scope.
    pub short_address: Option<String>,
    /// The provider's id for the agent.
    pub agent_id: String,
    /// The tenant the agent belongs to.
    pub tenant: Option<String>,
    /// The agent's API key (`amp_…`), sent as `Authorization: Bearer`.
    pub api_key: String,
    /// The public-key fingerprint the provider registered.
    pub fingerprint: Option<String>,
    /// Where the provider says it lives.
    pub provider: ProviderRef,
}

#[derive(Deserialize)]
struct RegistrationWire {
    address: String,
    #[serde(default)]
    short_address: Option<String>,
    #[serde(default)]
    agent_id: Option<String>,
    #[serde(default, rename = "agentId")]
    agent_id_camel: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default, rename = "apiKey")]
    api_key_camel: Option<String>,
    #[serde(default)]
    fingerprint: Option<String>,
    #[serde(default)]
    provider: ProviderRef,
}

impl TryFrom<RegistrationWire> for Registration {
    type Error = String;

    fn try_from(w: RegistrationWire) -> Result<Self, String> {
        Ok(Self {
            address: w.address,
            short_address: w.short_address,
            agent_id: w
                .agent_id
                .or(w.agent_id_camel)
                .ok_or("missing field `agent_id`")?,
            tenant: w.tenant,
            api_key: w
                .api_key
                .or(w.api_key_camel)
                .ok_or("missing field `api_key`")?,
            fingerprint: w.fingerprint,
            provider: w.provider,
        })
    }
}

/// Per-message options of [`crate::Client::route`]. Borrowed, so a load generator can reuse
/// its strings; `Default` is a normal-priority message with a provider-assigned id.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteOptions<'a> {
    /// Priority; signed and sent as `normal` when `None`.
    pub priority: Option<amp_proto::Priority>,
    /// The id of the message this one answers (signed).
    pub in_reply_to: Option<&'a str>,
    /// The thread to file the message in (the provider derives one otherwise).
    pub thread_id: Option<&'a str>,
    /// A client-chosen id (`msg_<millis>_<hex>`): retries with the same id and signature are
    /// idempotent.
    pub id: Option<&'a str>,
    /// Ask for a delivery receipt (`options.receipt`).
    pub receipt: bool,
}

/// The answer to `POST /v1/route`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteResult {
    /// The message id.
    pub id: String,
    /// `queued`, `delivered`, …
    #[serde(default)]
    pub status: String,
    /// `relay`, `websocket`, `webhook`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// What the provider proved (`mailbox_written`, `socket_written`, …; spec 12.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<String>,
    /// The thread the message was filed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// When it was queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<String>,
    /// When it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// How a requested receipt will reach the sender (`websocket`, `retained`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
}

/// A message's envelope as delivered. Strings rather than the strict `amp_proto` types so
/// that a message from any provider can be shown and verified.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEnvelope {
    /// Protocol version.
    #[serde(default)]
    pub version: String,
    /// Message id.
    #[serde(default)]
    pub id: String,
    /// Sender address.
    #[serde(default)]
    pub from: String,
    /// Recipient address as the sender signed it.
    #[serde(default)]
    pub to: String,
    /// Subject.
    #[serde(default)]
    pub subject: String,
    /// Priority name.
    #[serde(default)]
    pub priority: Option<String>,
    /// When the provider accepted it.
    #[serde(default)]
    pub timestamp: Option<String>,
    /// When it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The sender's signature (base64).
    #[serde(default)]
    pub signature: String,
    /// The message this one answers.
    #[serde(default)]
    pub in_reply_to: Option<String>,
    /// Its thread.
    #[serde(default)]
    pub thread_id: Option<String>,
}

/// A delivered message: an item of a pending page, or the `data` of a `message.new` frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Message {
    /// The message id (also `envelope.id`).
    #[serde(default)]
    pub id: String,
    /// Routing metadata.
    pub envelope: MessageEnvelope,
    /// The payload exactly as the sender sent it.
    pub payload: Box<RawValue>,
    /// When it was queued for this recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_at: Option<String>,
    /// When it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The sender's public key (PEM), when the provider includes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_public_key: Option<String>,
    /// The per-message pickup cursor (`c_<seq>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Provider annotations (`local.security`: trust, injection flags, wrapped content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<Value>,
    /// A replay of a message queued before the socket connected (spec 12.5).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
}

impl Message {
    /// The message id: `id`, else `envelope.id`.
    pub fn id(&self) -> &str {
        if self.id.is_empty() {
            &self.envelope.id
        } else {
            &self.id
        }
    }

    /// `payload.message` as text, when it is a string.
    pub fn text(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct P {
            message: Option<String>,
        }
        serde_json::from_str::<P>(self.payload.get())
            .ok()
            .and_then(|p| p.message)
    }

    /// `payload.type`, when present.
    pub fn payload_type(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct P {
            #[serde(rename = "type")]
            kind: Option<String>,
        }
        serde_json::from_str::<P>(self.payload.get())
            .ok()
            .and_then(|p| p.kind)
    }

    /// Verifies the sender's signature with `key` (or, when `None`, with the
    /// `sender_public_key` the provider delivered) over the envelope and the raw payload.
    ///
    /// Fails when there is no usable key, or the signature does not verify.
    pub fn verify(&self, key: Option<&PublicKey>) -> Result<Verified, VerifyError> {
        let parsed;
        let key = match key {
            Some(k) => k,
            None => {
                parsed = self
                    .sender_public_key
                    .as_deref()
                    .and_then(|pem| PublicKey::parse(pem).ok())
                    .ok_or(VerifyError::Invalid)?;
                &parsed
            }
        };
        let e = &self.envelope;
        let fields = SignedFields {
            from: &e.from,
            to: &e.to,
            subject: &e.subject,
            priority: e.priority.as_deref().unwrap_or("normal"),
            in_reply_to: e.in_reply_to.as_deref().unwrap_or(""),
        };
        verify_message(key, &fields, self.payload.get(), &e.signature)
    }
}

/// A page of `GET /v1/messages/pending`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingPage {
    /// Oldest first.
    #[serde(default)]
    pub messages: Vec<Message>,
    /// Messages in this page.
    #[serde(default)]
    pub count: usize,
    /// Messages still queued beyond this page.
    #[serde(default)]
    pub remaining: u64,
    /// Pass as `after` to get only what is queued after this page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `GET /v1/messages/pending/count`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCount {
    /// Messages queued.
    pub count: u64,
    /// When the oldest was queued (`None` on an empty queue).
    #[serde(default)]
    pub oldest_queued_at: Option<String>,
    /// The head cursor.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// The answer to a single ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckResult {
    /// Always `true` on success.
    pub acknowledged: bool,
    /// The message had been acked before (acks are idempotent).
    #[serde(default)]
    pub already_acked: bool,
}

/// The answer to a batch ack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchAckResult {
    /// Messages newly acknowledged by this call.
    pub acknowledged: u64,
    /// Ids that were acked before.
    #[serde(default)]
    pub already_acked: Vec<String>,
    /// Ids not in the caller's mailbox.
    #[serde(default)]
    pub not_found: Vec<String>,
}

/// The answer to `POST /v1/messages/{id}/read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadResult {
    /// The receipt was delivered to the sender or retained for it.
    pub read_receipt_sent: bool,
}

/// A receipt retained for the caller as sender: the frame a WebSocket would have carried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    /// `message.read` or `message.delivered`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `{id, read_at, by}` or `{id, to, delivered_at, method, basis}`.
    #[serde(default)]
    pub data: Value,
    /// Its position; pass the last one as `after` (or to the receipts ack).
    #[serde(default)]
    pub seq: u64,
}

impl Receipt {
    /// The id of the message the receipt is about.
    pub fn message_id(&self) -> Option<&str> {
        self.data.get("id").and_then(Value::as_str)
    }
}

/// `GET /v1/messages/receipts`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Receipts {
    /// Oldest first.
    #[serde(default)]
    pub receipts: Vec<Receipt>,
    /// How many in this page.
    #[serde(default)]
    pub count: usize,
    /// Pass as `after` for the next page.
    #[serde(default)]
    pub next_after: Option<u64>,
}

/// `GET /v1/info`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// The provider's domain.
    #[serde(default)]
    pub provider: String,
    /// Protocol version (`amp/0.1`).
    #[serde(default)]
    pub version: String,
    /// The server's own version, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// The API base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The provider's public key (PEM).
    #[serde(default)]
    pub public_key: String,
    /// Its fingerprint.
    #[serde(default)]
    pub fingerprint: String,
    /// Capabilities (`notify:v1`, `websocket`, …).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// `open`, `owner`.
    #[serde(default)]
    pub registration_modes: Vec<String>,
    /// Advertised limits.
    #[serde(default)]
    pub rate_limits: Option<Value>,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `healthy` or `unhealthy`.
    #[serde(default)]
    pub status: String,
    /// Server version.
    #[serde(default)]
    pub version: String,
    /// The provider's domain.
    #[serde(default)]
    pub provider: String,
    /// Seconds since start.
    #[serde(default)]
    pub uptime_seconds: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_accepts_camel_case_aliases() {
        let r: Registration = serde_json::from_str(
            r#"{"address":"a@t.x.test","agentId":"agt_1","apiKey":"amp_k","provider":{"route_url":"http://x/v1/route"}}"#,
        )
        .expect("parse");
        assert_eq!(r.agent_id, "agt_1");
        assert_eq!(r.api_key, "amp_k");
        assert_eq!(r.provider.route_url, "http://x/v1/route");
        let both: Registration = serde_json::from_str(
            r#"{"address":"a@t.x.test","agent_id":"agt_1","agentId":"agt_1","api_key":"amp_k","apiKey":"amp_k"}"#,
        )
        .expect("both spellings");
        assert_eq!(both.api_key, "amp_k");
        assert!(serde_json::from_str::<Registration>(r#"{"address":"a","agent_id":"x"}"#).is_err());
    }

    #[test]
    fn message_keeps_the_payload_bytes_and_finds_its_id() {
        let m: Message = serde_json::from_str(
            r#"{"envelope":{"id":"msg_1_ab","from":"a","to":"b","subject":"s","signature":""},"payload":{"message":"hi","n":1.0e2}}"#,
        )
        .expect("parse");
        assert_eq!(m.id(), "msg_1_ab");
        assert_eq!(m.payload.get(), r#"{"message":"hi","n":1.0e2}"#);
        assert_eq!(m.text().as_deref(), Some("hi"));
        assert!(m.verify(None).is_err());
    }
}
