//! Messages (spec 04): ids, priorities, timestamps, the envelope, the payload and its limits.
//!
//! The payload is kept as the raw JSON text it arrived as ([`RawPayload`]): its hash is
//! signed, and `payload.context` must reach the recipient unchanged in meaning (spec 04), so
//! nothing here rebuilds it from a struct.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::json;

/// Current protocol version written into envelopes.
pub const PROTOCOL_VERSION: &str = "amp/0.1";

/// Size limits of spec 04, in the units the team decided (SPEC-CHECKLIST §4.22).
pub mod limits {
    /// Subject: Unicode scalar values.
    pub const SUBJECT_CHARS: usize = 256;
    /// `payload.message`: UTF-8 bytes.
    pub const MESSAGE_BYTES: usize = 64 * 1024;
    /// `payload.context`: bytes of its compact serialisation.
    pub const CONTEXT_BYTES: usize = 256 * 1024;
    /// A whole message (envelope and payload, as the one JSON document
    /// `{"envelope":…,"payload":…}`): bytes. Enforced on every path a message arrives by
    /// ([`super::validate_total`]), so nothing downstream (mailbox, pickup pages, pushes,
    /// webhooks) ever holds a larger one.
    pub const TOTAL_BYTES: usize = 512 * 1024;
    /// A message id, `in_reply_to` and `thread_id`: bytes, so ids stay usable as store keys
    /// (and acknowledgeable: the ack endpoints take ids of at most this length).
    pub const ID_BYTES: usize = 128;
    /// A whole request body: the message plus slack for the envelope and JSON framing.
    pub const BODY_BYTES: usize = TOTAL_BYTES + 8 * 1024;
    /// Default and longest relay lifetime: 7 days, in seconds.
    pub const DEFAULT_TTL_SECS: i64 = 7 * 24 * 3600;
    /// An `idempotency_key`: bytes (the spec's `idk_` + UUID is 40).
    pub const IDEMPOTENCY_KEY_BYTES: usize = 128;
}

/// A message identifier, `msg_<digits>_<lowercase hex>` when the provider makes it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(String);

impl MessageId {
    /// A fresh id: `msg_<unix millis>_<16 hex digits of randomness>`.
    pub fn generate(now: Timestamp) -> Self {
        let millis = now.unix_millis();
        let r: u64 = rand::random();
        Self(format!("msg_{millis}_{r:016x}"))
    }

    /// Whether `s` matches `^msg_[0-9]+_[a-f0-9]+$` (the test vectors' validator), with a
    /// length cap of [`limits::ID_BYTES`] so ids stay usable as keys.
    pub fn is_valid(s: &str) -> bool {
        let Some(rest) = s.strip_prefix("msg_") else {
            return false;
        };
        let Some((digits, hex)) = rest.split_once('_') else {
            return false;
        };
        s.len() <= limits::ID_BYTES
            && !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !hex.is_empty()
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    /// Parses a well-formed id; `None` for anything [`MessageId::is_valid`] rejects.
    pub fn parse(s: &str) -> Option<Self> {
        Self::is_valid(s).then(|| Self(s.to_owned()))
    }

    /// Wraps a string already known to be an id (e.g. read back from our own store).
    pub fn from_trusted(s: String) -> Self {
        Self(s)
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0)
    }
}

/// Message priority; informational, it never reorders a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Critical alerts.
    Urgent,
    /// Important.
    High,
    /// The default.
    #[default]
    Normal,
    /// FYI.
    Low,
}

impl Priority {
    /// Parses one of `urgent`, `high`, `normal`, `low` (exact, lowercase).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "urgent" => Self::Urgent,
            "high" => Self::High,
            "normal" => Self::Normal,
            "low" => Self::Low,
            _ => return None,
        })
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Urgent => "urgent",
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }
}

/// An attachment's content-scan state: exactly the values of the test vectors
/// (`text_clean`, `unknown`, `safe` are never emitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanStatus {
    /// Not yet scanned.
    Pending,
    /// Scanned, nothing suspicious.
    Clean,
    /// Passed the basic checks.
    BasicClean,
    /// Not scanned (scanning unavailable).
    Unscanned,
    /// Patterns that may indicate prompt injection.
    Suspicious,
    /// Rejected as malicious.
    Rejected,
}

impl ScanStatus {
    /// Parses one of the valid values; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "clean" => Self::Clean,
            "basic_clean" => Self::BasicClean,
            "unscanned" => Self::Unscanned,
            "suspicious" => Self::Suspicious,
            "rejected" => Self::Rejected,
            _ => return None,
        })
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Clean => "clean",
            Self::BasicClean => "basic_clean",
            Self::Unscanned => "unscanned",
            Self::Suspicious => "suspicious",
            Self::Rejected => "rejected",
        }
    }
}

/// A UTC instant, written as RFC 3339 with millisecond precision and `Z`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self(OffsetDateTime::now_utc())
    }

    /// From unix milliseconds; `None` when out of range.
    pub fn from_unix_millis(ms: i64) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .map(Self)
    }

    /// Unix milliseconds.
    pub fn unix_millis(self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// Unix seconds.
    pub fn unix_secs(self) -> i64 {
        self.0.unix_timestamp()
    }

    /// Parses any RFC 3339 timestamp, converting it to UTC.
    pub fn parse(s: &str) -> Option<Self> {
        OffsetDateTime::parse(s, &Rfc3339)
            .ok()
            .map(|t| Self(t.to_offset(time::UtcOffset::UTC)))
    }

    /// This instant plus `secs` seconds (saturating at the representable range).
    pub fn plus_secs(self, secs: i64) -> Self {
        Self(
            self.0
                .checked_add(time::Duration::seconds(secs))
                .unwrap_or(self.0),
        )
    }

    /// RFC 3339 text, e.g. `2025-01-30T10:00:00.123Z`.
    pub fn to_rfc3339(self) -> String {
        let t = self.0;
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({})", self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom("not an RFC 3339 timestamp"))
    }
}

/// The routing metadata of a message as the provider stores and emits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version, `amp/0.1`.
    pub version: String,
    /// Message id.
    pub id: MessageId,
    /// Sender's full address.
    pub from: String,
    /// Recipient's address exactly as the sender signed it.
    pub to: String,
    /// Subject.
    pub subject: String,
    /// Priority.
    pub priority: Priority,
    /// When the provider accepted the message.
    pub timestamp: Timestamp,
    /// When the message stops being deliverable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// The sender's signature (standard base64), unchanged.
    pub signature: String,
    /// The message this one replies to; omitted when none (spec 04 JSON profile: no `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_reply_to: Option<String>,
    /// The first message of the thread.
    pub thread_id: String,
    /// The sender's deduplication key (spec-next 04 "Idempotency"): routing metadata, not
    /// signed, kept across federation so every provider on the way applies it. Omitted when
    /// none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl Envelope {
    /// The fields covered by the sender's signature.
    pub fn signed_fields(&self) -> crate::signing::SignedFields<'_> {
        crate::signing::SignedFields {
            from: &self.from,
            to: &self.to,
            subject: &self.subject,
            priority: self.priority.as_str(),
            in_reply_to: self.in_reply_to.as_deref().unwrap_or(""),
        }
    }
}

/// A payload exactly as received: raw JSON text of an object.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawPayload(Box<RawValue>);

impl PartialEq for RawPayload {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

impl RawPayload {
    /// Wraps raw JSON text, checking it is JSON.
    ///
    /// Fails when `text` is not valid JSON.
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self)
    }

    /// The raw JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// As a raw JSON value, for embedding unchanged in a serialised answer.
    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }

    /// Checks the payload's shape and limits (spec 04 as decided in SPEC-CHECKLIST §4.22):
    /// an object with a non-empty string `type` and a string `message` of at most 64 KiB,
    /// `context` (any JSON, unvalidated) at most 256 KiB compact.
    ///
    /// Fails with the first problem found.
    pub fn validate(&self) -> Result<PayloadInfo, ValidationError> {
        // The payload alone over the whole message's bound can never fit: refused before it
        // is parsed. The exact bound, envelope included, is [`validate_total`].
        if self.get().len() > limits::TOTAL_BYTES {
            return Err(ValidationError::MessageTooLarge {
                limit: limits::TOTAL_BYTES,
            });
        }
        let v = json::parse_strict(self.get()).map_err(|e| ValidationError::Invalid {
            field: "payload",
            reason: if e.reason == json::DUPLICATE_KEY {
                "payload repeats a key in one of its objects (spec 04: no duplicate keys)".into()
            } else {
                "payload is not valid JSON".into()
            },
        })?;
        let json::Value::Object(members) = &v else {
            return Err(ValidationError::Invalid {
                field: "payload",
                reason: "payload must be a JSON object".into(),
            });
        };
        let get = |k: &str| members.iter().find(|(key, _)| key == k).map(|(_, v)| v);
        match get("type") {
            None | Some(json::Value::Null) => {
                return Err(ValidationError::Missing("payload.type"));
            }
            Some(json::Value::String(s)) if !s.is_empty() && s.len() <= 128 => {}
            Some(_) => {
                return Err(ValidationError::Invalid {
                    field: "payload.type",
                    reason: "payload.type must be a non-empty string of at most 128 bytes".into(),
                });
            }
        }
        let message_len = match get("message") {
            None | Some(json::Value::Null) => {
                return Err(ValidationError::Missing("payload.message"));
            }
            Some(json::Value::String(s)) => s.len(),
            Some(_) => {
                return Err(ValidationError::Invalid {
                    field: "payload.message",
                    reason: "payload.message must be a string".into(),
                });
            }
        };
        if message_len > limits::MESSAGE_BYTES {
            return Err(ValidationError::TooLarge {
                field: "payload.message",
                limit: limits::MESSAGE_BYTES,
                unit: "bytes",
            });
        }
        if let Some(ctx) = get("context") {
            let mut compact = String::new();
            ctx.write(json::CanonicalForm::AS_RECEIVED, &mut compact);
            let len = compact.len();
            if len > limits::CONTEXT_BYTES {
                return Err(ValidationError::TooLarge {
                    field: "payload.context",
                    limit: limits::CONTEXT_BYTES,
                    unit: "bytes",
                });
            }
        }
        Ok(PayloadInfo {
            message_bytes: message_len,
        })
    }
}

/// What validation learnt about a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadInfo {
    /// UTF-8 length of `payload.message`.
    pub message_bytes: usize,
}

/// A message that fails spec 04's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A required field is absent.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A field has the wrong type or form.
    #[error("{reason}")]
    Invalid {
        /// The field, dotted.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The whole message (envelope and payload) is over [`limits::TOTAL_BYTES`].
    #[error("the message (envelope and payload) exceeds {limit} bytes")]
    MessageTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A field is over its size limit.
    #[error("{field} exceeds {limit} {unit}")]
    TooLarge {
        /// The field, dotted.
        field: &'static str,
        /// The limit.
        limit: usize,
        /// The unit of the limit.
        unit: &'static str,
    },
}

impl ValidationError {
    /// The field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Missing(f) => f,
            Self::MessageTooLarge { .. } => "payload",
            Self::Invalid { field, .. } | Self::TooLarge { field, .. } => field,
        }
    }
}

/// Checks a subject: at most [`limits::SUBJECT_CHARS`] Unicode scalar values.
///
/// Fails with [`ValidationError::TooLarge`].
pub fn validate_subject(subject: &str) -> Result<(), ValidationError> {
    if subject.chars().count() > limits::SUBJECT_CHARS {
        return Err(ValidationError::TooLarge {
            field: "subject",
            limit: limits::SUBJECT_CHARS,
            unit: "characters",
        });
    }
    Ok(())
}

/// Checks a reference to another message (`in_reply_to`, `thread_id`): at most
/// [`limits::ID_BYTES`] bytes and no control characters. Not necessarily one of our ids: other
/// providers and clients make their own.
///
/// Fails with [`ValidationError::Invalid`] naming `field`.
pub fn validate_reference(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.len() > limits::ID_BYTES || value.chars().any(char::is_control) {
        return Err(ValidationError::Invalid {
            field,
            reason: format!(
                "{field} must be a message id of at most {} characters",
                limits::ID_BYTES
            ),
        });
    }
    Ok(())
}

/// Checks an `idempotency_key`: 1 to [`limits::IDEMPOTENCY_KEY_BYTES`] bytes of printable
/// ASCII without spaces (`idk_<uuid>` as the spec suggests, or any other token of that shape).
///
/// Fails with [`ValidationError::Invalid`] naming `idempotency_key`.
pub fn validate_idempotency_key(value: &str) -> Result<(), ValidationError> {
    if value.is_empty()
        || value.len() > limits::IDEMPOTENCY_KEY_BYTES
        || !value.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ValidationError::Invalid {
            field: "idempotency_key",
            reason: format!(
                "idempotency_key must be 1 to {} printable ASCII characters without spaces",
                limits::IDEMPOTENCY_KEY_BYTES
            ),
        });
    }
    Ok(())
}

/// Checks the envelope fields a sender or another provider chose: a well-formed id, the
/// subject, the references and the idempotency key. The same rules whichever way the message
/// arrived.
///
/// Fails with the first problem found.
pub fn validate_envelope(envelope: &Envelope) -> Result<(), ValidationError> {
    if !MessageId::is_valid(envelope.id.as_str()) {
        return Err(ValidationError::Invalid {
            field: "id",
            reason: format!(
                "id must be msg_<digits>_<lowercase hex> of at most {} characters",
                limits::ID_BYTES
            ),
        });
    }
    validate_subject(&envelope.subject)?;
    if let Some(r) = &envelope.in_reply_to {
        validate_reference("in_reply_to", r)?;
    }
    validate_reference("thread_id", &envelope.thread_id)?;
    if let Some(k) = &envelope.idempotency_key {
        validate_idempotency_key(k)?;
    }
    Ok(())
}

/// Bytes of the message as the one JSON document `{"envelope":…,"payload":…}`: what the
/// spec's total bound counts.
pub fn message_bytes(envelope: &Envelope, payload: &RawPayload) -> usize {
    /// Counts what serde writes without keeping it.
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // Serialising an envelope (strings, a timestamp) cannot fail; if it did, the message
    // counts as too large rather than as small.
    if serde_json::to_writer(&mut n, envelope).is_err() {
        return usize::MAX;
    }
    n.0 + payload.get().len() + r#"{"envelope":,"payload":}"#.len()
}

/// Checks the spec's bound on a whole message ([`limits::TOTAL_BYTES`]).
///
/// Fails with [`ValidationError::MessageTooLarge`].
pub fn validate_total(envelope: &Envelope, payload: &RawPayload) -> Result<(), ValidationError> {
    if message_bytes(envelope, payload) > limits::TOTAL_BYTES {
        return Err(ValidationError::MessageTooLarge {
            limit: limits::TOTAL_BYTES,
        });
    }
    Ok(())
}

/// The relay expiry of a message accepted at `now`: `expires_at` when given, capped at the
/// default TTL (SPEC-CHECKLIST §4.23).
///
/// Fails when `expires_at` is not after `now`.
pub fn effective_expiry(
    now: Timestamp,
    expires_at: Option<Timestamp>,
) -> Result<Timestamp, ValidationError> {
    let cap = now.plus_secs(limits::DEFAULT_TTL_SECS);
    match expires_at {
        None => Ok(cap),
        Some(t) if t <= now => Err(ValidationError::Invalid {
            field: "expires_at",
            reason: "expires_at is in the past".into(),
        }),
        Some(t) => Ok(t.min(cap)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let now = Timestamp::now();
        let a = MessageId::generate(now);
        let b = MessageId::generate(now);
        assert!(MessageId::is_valid(a.as_str()), "{a}");
        assert_ne!(a, b);
        assert!(
            a.as_str()
                .starts_with(&format!("msg_{}_", now.unix_millis()))
        );
    }

    #[test]
    fn timestamps_round_trip() {
        let t = Timestamp::parse("2025-01-30T11:00:00.5+01:00").expect("rfc3339");
        assert_eq!(t.to_rfc3339(), "2025-01-30T10:00:00.500Z");
        assert_eq!(Timestamp::parse(&t.to_rfc3339()), Some(t));
        assert_eq!(Timestamp::parse("yesterday"), None);
        assert_eq!(
            Timestamp::from_unix_millis(t.unix_millis()).map(|x| x.unix_millis()),
            Some(t.unix_millis())
        );
    }

    #[test]
    fn payload_limits_exact_and_over() {
        let at = |n: usize| format!(r#"{{"type":"t","message":"{}"}}"#, "x".repeat(n));
        let ok = RawPayload::from_json(at(limits::MESSAGE_BYTES)).expect("json");
        assert!(ok.validate().is_ok());
        let over = RawPayload::from_json(at(limits::MESSAGE_BYTES + 1)).expect("json");
        assert_eq!(
            over.validate().map_err(|e| e.field()),
            Err("payload.message")
        );

        let ctx = |n: usize| {
            format!(
                r#"{{"type":"t","message":"m","context":"{}"}}"#,
                "y".repeat(n - 2)
            )
        };
        let ok = RawPayload::from_json(ctx(limits::CONTEXT_BYTES)).expect("json");
        assert!(ok.validate().is_ok());
        let over = RawPayload::from_json(ctx(limits::CONTEXT_BYTES + 1)).expect("json");
        assert_eq!(
            over.validate().map_err(|e| e.field()),
            Err("payload.context")
        );
    }

    #[test]
    fn payload_shape() {
        let check = |s: &str| {
            RawPayload::from_json(s.to_owned())
                .expect("json")
                .validate()
                .map_err(|e| e.field())
        };
        assert!(check(r#"{"type":"github:pull_request","message":"m","context":null}"#).is_ok());
        assert_eq!(check(r#"{"message":"m"}"#), Err("payload.type"));
        assert_eq!(check(r#"{"type":"","message":"m"}"#), Err("payload.type"));
        assert_eq!(check(r#"{"type":"t"}"#), Err("payload.message"));
        assert_eq!(check(r#"{"type":"t","message":5}"#), Err("payload.message"));
        assert_eq!(check(r#"[1]"#), Err("payload"));
    }

    fn envelope(id: &str) -> Envelope {
        let now = Timestamp::now();
        Envelope {
            version: PROTOCOL_VERSION.into(),
            id: MessageId::from_trusted(id.into()),
            from: "a@t.x.test".into(),
            to: "b@t.x.test".into(),
            subject: "s".into(),
            priority: Priority::Normal,
            timestamp: now,
            expires_at: None,
            signature: String::new(),
            in_reply_to: None,
            thread_id: id.into(),
            idempotency_key: None,
        }
    }

    #[test]
    fn the_whole_message_is_bounded_not_only_its_fields() {
        // A short message beside a large unknown member: every field within its limit.
        let big = |n: usize| {
            RawPayload::from_json(format!(
                r#"{{"type":"t","message":"m","blob":"{}"}}"#,
                "x".repeat(n)
            ))
            .expect("json")
        };
        let env = envelope("msg_1_ab");
        let fixed = message_bytes(&env, &big(0));
        let at = big(limits::TOTAL_BYTES - fixed);
        assert_eq!(message_bytes(&env, &at), limits::TOTAL_BYTES);
        assert!(at.validate().is_ok());
        assert!(validate_total(&env, &at).is_ok());
        let over = big(limits::TOTAL_BYTES - fixed + 1);
        assert_eq!(
            validate_total(&env, &over),
            Err(ValidationError::MessageTooLarge {
                limit: limits::TOTAL_BYTES
            })
        );
        // A payload that alone exceeds the bound is refused before it is parsed.
        assert!(matches!(
            big(limits::TOTAL_BYTES).validate(),
            Err(ValidationError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn payload_keys_may_not_repeat() {
        let p = RawPayload::from_json(r#"{"type":"t","message":"hi","message":"evil"}"#.into())
            .expect("json");
        assert_eq!(p.validate().map_err(|e| e.field()), Err("payload"));
    }

    #[test]
    fn envelope_fields_from_anyone_are_checked() {
        assert!(validate_envelope(&envelope("msg_1_ab")).is_ok());
        let long = format!("msg_1_{}", "a".repeat(200));
        let field = |e: Envelope| validate_envelope(&e).map_err(|e| e.field());
        assert_eq!(field(envelope(&long)), Err("id"));
        assert_eq!(field(envelope("not-an-id")), Err("id"));
        let mut e = envelope("msg_1_ab");
        e.subject = "s".repeat(257);
        assert_eq!(field(e), Err("subject"));
        let mut e = envelope("msg_1_ab");
        e.in_reply_to = Some("r".repeat(129));
        assert_eq!(field(e), Err("in_reply_to"));
        let mut e = envelope("msg_1_ab");
        e.thread_id = "t\nx".into();
        assert_eq!(field(e), Err("thread_id"));
    }

    #[test]
    fn subject_counts_characters_not_bytes() {
        assert!(validate_subject(&"é".repeat(256)).is_ok());
        assert!(validate_subject(&"é".repeat(257)).is_err());
    }

    #[test]
    fn expiry_capped_and_past_refused() {
        let now = Timestamp::now();
        assert_eq!(
            effective_expiry(now, None),
            Ok(now.plus_secs(limits::DEFAULT_TTL_SECS))
        );
        let later = now.plus_secs(60);
        assert_eq!(effective_expiry(now, Some(later)), Ok(later));
        let far = now.plus_secs(limits::DEFAULT_TTL_SECS * 2);
        assert_eq!(
            effective_expiry(now, Some(far)),
            Ok(now.plus_secs(limits::DEFAULT_TTL_SECS))
        );
        assert!(effective_expiry(now, Some(now.plus_secs(-1))).is_err());
    }
}
