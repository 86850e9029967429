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
    /// A whole message (envelope and payload): bytes.
    pub const TOTAL_BYTES: usize = 512 * 1024;
    /// A whole request body: the message plus slack for the envelope and JSON framing.
    pub const BODY_BYTES: usize = TOTAL_BYTES + 8 * 1024;
    /// Default and longest relay lifetime: 7 days, in seconds.
    pub const DEFAULT_TTL_SECS: i64 = 7 * 24 * 3600;
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
    /// length cap of 128 so ids stay usable as keys.
    pub fn is_valid(s: &str) -> bool {
        let Some(rest) = s.strip_prefix("msg_") else {
            return false;
        };
        let Some((digits, hex)) = rest.split_once('_') else {
            return false;
        };
        s.len() <= 128
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
    /// The message this one replies to.
    #[serde(default)]
    pub in_reply_to: Option<String>,
    /// The first message of the thread.
    pub thread_id: String,
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
        let v = json::parse(self.get()).map_err(|_| ValidationError::Invalid {
            field: "payload",
            reason: "payload is not valid JSON".into(),
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
