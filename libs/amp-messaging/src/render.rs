//! A mailbox entry as agents receive it, in a pickup page or a WebSocket `message.new` frame:
//! serialised straight from the stored text, so payloads (and their number literals) are
//! copied byte for byte, never re-parsed into a `serde_json::Value`.
//!
//! [`write_item`] is the hot path (pickup renders up to a thousand items per request): it
//! splices the stored JSON of the envelope, payload, key and security decision into the
//! output without parsing them into types, and writes times and cursors without `format!`.
//! [`Item`] is the same item as a serde type; a test holds the two byte for byte equal.

use amp_proto::relay::StoredMessage;
use amp_proto::{Envelope, Timestamp};
use amp_store::MailboxEntry;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One message as delivered (spec 05 pickup item, spec 08 `message.new` data).
#[derive(Serialize)]
pub struct Item<'a> {
    /// The message id.
    pub id: &'a str,
    /// The envelope.
    pub envelope: &'a Envelope,
    /// The payload, byte for byte.
    pub payload: &'a RawValue,
    /// When it was queued.
    pub queued_at: String,
    /// When it expires.
    pub expires_at: String,
    /// The sender's key (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_public_key: Option<&'a str>,
    /// The mailbox cursor of this message.
    pub cursor: String,
    /// Provider annotations (spec 07 `local.security`).
    pub local: Local<'a>,
    /// Set on WebSocket pushes: whether this is a replay (spec 12.5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<bool>,
}

/// Provider annotations.
#[derive(Serialize)]
pub struct Local<'a> {
    /// The content-security decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security: Option<&'a RawValue>,
}

impl<'a> Item<'a> {
    /// The item of a stored entry.
    pub fn new(entry: &MailboxEntry, message: &'a StoredMessage, replay: Option<bool>) -> Self {
        Item {
            id: message.envelope.id.as_str(),
            envelope: &message.envelope,
            payload: message.payload.as_raw(),
            queued_at: rfc3339(entry.queued_at),
            expires_at: rfc3339(entry.expires_at),
            sender_public_key: message.sender_public_key.as_deref(),
            cursor: cursor(entry.seq),
            local: Local {
                security: message.security.as_deref(),
            },
            replay,
        }
    }
}

/// The opaque cursor of a mailbox position (SPEC-CHECKLIST §4.37).
pub fn cursor(seq: u64) -> String {
    format!("c_{seq}")
}

/// Unix milliseconds as RFC 3339 (empty when out of range).
pub fn rfc3339(ms: i64) -> String {
    Timestamp::from_unix_millis(ms).map_or_else(String::new, Timestamp::to_rfc3339)
}

/// A stored message ([`StoredMessage`]'s JSON) read without copying or parsing its parts:
/// each is the stored JSON text of that field, borrowed.
///
/// The stored text is what `serde_json` made of a [`StoredMessage`] (the router writes it),
/// so writing these parts back unchanged gives exactly what re-serialising the parsed
/// message would.
#[derive(Deserialize)]
pub struct StoredView<'a> {
    /// The envelope's JSON.
    #[serde(borrow)]
    pub envelope: &'a RawValue,
    /// The payload's JSON.
    #[serde(borrow)]
    pub payload: &'a RawValue,
    /// The sender's key as a JSON string literal.
    #[serde(default, borrow)]
    pub sender_public_key: Option<&'a RawValue>,
    /// The content-security decision's JSON.
    #[serde(default, borrow)]
    pub security: Option<&'a RawValue>,
    /// The sender asked for a delivery receipt.
    #[serde(default)]
    pub receipt: bool,
}

impl<'a> StoredView<'a> {
    /// Reads the stored text of a mailbox entry.
    ///
    /// Fails when the text is not a stored message's JSON.
    pub fn parse(data: &'a str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(data)
    }
}

/// Appends the JSON of `entry` as a delivered item to `out`: the same bytes as serialising
/// `Item::new(entry, &message, replay)` with `message` parsed from `entry.data`. The id is
/// `entry.message_id` (the store keeps `envelope.id` there).
///
/// Fails when `entry.data` is not a stored message's JSON; `out` may then hold a partial item.
pub fn write_item(
    out: &mut Vec<u8>,
    entry: &MailboxEntry,
    replay: Option<bool>,
) -> Result<(), serde_json::Error> {
    let m = StoredView::parse(&entry.data)?;
    out.extend_from_slice(b"{\"id\":");
    serde_json::to_writer(&mut *out, entry.message_id.as_str())?;
    out.extend_from_slice(b",\"envelope\":");
    push_envelope(out, m.envelope.get());
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(m.payload.get().as_bytes());
    out.extend_from_slice(b",\"queued_at\":");
    push_time(out, entry.queued_at);
    out.extend_from_slice(b",\"expires_at\":");
    push_time(out, entry.expires_at);
    if let Some(key) = m.sender_public_key {
        out.extend_from_slice(b",\"sender_public_key\":");
        out.extend_from_slice(key.get().as_bytes());
    }
    out.extend_from_slice(b",\"cursor\":\"c_");
    push_u64(out, entry.seq);
    out.extend_from_slice(b"\",\"local\":{");
    if let Some(security) = m.security {
        out.extend_from_slice(b"\"security\":");
        out.extend_from_slice(security.get().as_bytes());
    }
    out.push(b'}');
    match replay {
        Some(true) => out.extend_from_slice(b",\"replay\":true"),
        Some(false) => out.extend_from_slice(b",\"replay\":false"),
        None => {}
    }
    out.push(b'}');
    Ok(())
}

/// What messages stored before the JSON profile (spec-next 04) hold for an absent
/// `in_reply_to`, exactly as serde wrote it: the envelope is flat (strings only), so this
/// sequence, unescaped quotes and all, can only be the member itself, never string content.
const NULL_REPLY: &str = ",\"in_reply_to\":null";

/// Appends a stored envelope's JSON, without the `"in_reply_to":null` of messages stored
/// before the JSON profile (one scan of a few hundred bytes; nothing else changes).
fn push_envelope(out: &mut Vec<u8>, envelope: &str) {
    match envelope.find(NULL_REPLY) {
        Some(at) => {
            out.extend_from_slice(&envelope.as_bytes()[..at]);
            out.extend_from_slice(&envelope.as_bytes()[at + NULL_REPLY.len()..]);
        }
        None => out.extend_from_slice(envelope.as_bytes()),
    }
}

/// Appends a decimal number.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Milliseconds of 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z: the span written
/// directly; times outside it (never stored in practice) go through [`rfc3339`].
const FAST_TIME: std::ops::RangeInclusive<i64> = -62_167_219_200_000..=253_402_300_799_999;

/// Appends `rfc3339(ms)` as a JSON string, without allocating.
fn push_time(out: &mut Vec<u8>, ms: i64) {
    if !FAST_TIME.contains(&ms) {
        out.push(b'"');
        out.extend_from_slice(rfc3339(ms).as_bytes());
        out.push(b'"');
        return;
    }
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    let mut b = *b"\"0000-00-00T00:00:00.000Z\"";
    let digits = |b: &mut [u8], v: i64| {
        let mut v = v;
        for c in b.iter_mut().rev() {
            *c = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    digits(&mut b[1..5], y);
    digits(&mut b[6..8], m);
    digits(&mut b[9..11], d);
    digits(&mut b[12..14], h);
    digits(&mut b[15..17], min);
    digits(&mut b[18..20], s);
    digits(&mut b[21..24], milli);
    out.extend_from_slice(&b);
}

/// (year, month, day) of days since 1970-01-01 in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use amp_proto::relay::StoredMessage;

    fn stored(key: bool, security: bool, receipt: bool, reply: bool, expiry: bool) -> String {
        let expires = if expiry {
            r#""expires_at":"2023-11-14T22:14:20.123Z","#
        } else {
            ""
        };
        let reply = if reply { r#""msg_1_ab""# } else { "null" };
        let mut text = format!(
            r#"{{"envelope":{{"version":"amp/0.1","id":"msg_1700000000123_00ff","from":"alice@example.com","to":"bob@example.com","subject":"h\u00e9llo \"quoted\" \\ \u0001 \/","priority":"high","timestamp":"2023-11-14T22:13:20.123Z",{expires}"signature":"c2ln","in_reply_to":{reply},"thread_id":"msg_1_ab"}},"payload":{{ "n": 1.50, "big": 123456789012345678901234567890, "s": "\u00e9\n" }}"#
        );
        if key {
            text.push_str(r#","sender_public_key":"-----BEGIN PUBLIC KEY-----\nMCow\u002f\n-----END PUBLIC KEY-----\n""#);
        }
        if security {
            text.push_str(r#","security":{"verdict":"allow","score":0.25}"#);
        }
        if receipt {
            text.push_str(r#","receipt":true"#);
        }
        text.push('}');
        // As the router stores it: parsed into the type, serialised by serde_json.
        let typed: StoredMessage = serde_json::from_str(&text).expect("a stored message");
        serde_json::to_string(&typed).expect("serialises")
    }

    #[test]
    fn write_item_matches_the_serde_item_byte_for_byte() {
        for bits in 0..32u8 {
            let data = stored(
                bits & 1 != 0,
                bits & 2 != 0,
                bits & 4 != 0,
                bits & 8 != 0,
                bits & 16 != 0,
            );
            let entry = MailboxEntry {
                seq: 18_446_744_073_709_551_615 - u64::from(bits),
                message_id: "msg_1700000000123_00ff".into(),
                sender: "alice@example.com".into(),
                data,
                queued_at: 1_700_000_000_123 + i64::from(bits) * 86_399_999,
                expires_at: 1_700_604_800_123,
            };
            let message: StoredMessage = serde_json::from_str(&entry.data).expect("parses");
            for replay in [None, Some(true), Some(false)] {
                let want =
                    serde_json::to_vec(&Item::new(&entry, &message, replay)).expect("serialises");
                let mut got = Vec::new();
                write_item(&mut got, &entry, replay).expect("writes");
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want),
                    "bits {bits:05b}, replay {replay:?}"
                );
                assert_eq!(
                    StoredView::parse(&entry.data).expect("view").receipt,
                    message.receipt
                );
            }
        }
    }

    /// Messages stored before the JSON profile hold `"in_reply_to":null`; pickup serves
    /// them without it (as `Item` would), and everything else byte for byte.
    #[test]
    fn spec_next_stored_null_in_reply_to_is_stripped_on_pickup() {
        let old = r#"{"envelope":{"version":"amp/0.1","id":"msg_1_ab","from":"a@x.test","to":"b@x.test","subject":"s \"in_reply_to\":null","priority":"normal","timestamp":"2023-11-14T22:13:20.123Z","signature":"c2ln","in_reply_to":null,"thread_id":"msg_1_ab"},"payload":{"type":"t","message":"m","context":{"in_reply_to":null}}}"#;
        let entry = MailboxEntry {
            seq: 7,
            message_id: "msg_1_ab".into(),
            sender: "a@x.test".into(),
            data: old.into(),
            queued_at: 1_700_000_000_123,
            expires_at: 1_700_604_800_123,
        };
        let mut got = Vec::new();
        write_item(&mut got, &entry, None).expect("writes");
        let got = String::from_utf8(got).expect("utf-8");
        let message: StoredMessage = serde_json::from_str(old).expect("parses");
        let want = serde_json::to_string(&Item::new(&entry, &message, None)).expect("json");
        assert_eq!(got, want);
        assert!(!got.contains(r#","in_reply_to":null,"#), "{got}");
        assert!(
            got.contains(r#""context":{"in_reply_to":null}"#),
            "payload untouched: {got}"
        );
        assert!(
            got.contains(r#""subject":"s \"in_reply_to\":null""#),
            "{got}"
        );
    }

    #[test]
    fn push_time_matches_rfc3339() {
        let mut samples = vec![
            0,
            -1,
            1,
            951_782_400_000,   // 2000-02-29
            4_107_542_399_999, // 2100-02-28T23:59:59.999
            *FAST_TIME.start(),
            *FAST_TIME.end(),
            *FAST_TIME.start() - 1,
            *FAST_TIME.end() + 1,
            i64::MIN,
            i64::MAX,
        ];
        // A cheap deterministic spread over the whole fast range.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let span = (FAST_TIME.end() - FAST_TIME.start()) as u64;
            samples.push(FAST_TIME.start() + (x % span) as i64);
        }
        for ms in samples {
            let mut got = Vec::new();
            push_time(&mut got, ms);
            assert_eq!(
                String::from_utf8_lossy(&got),
                format!("\"{}\"", rfc3339(ms)),
                "{ms}"
            );
        }
    }

    #[test]
    fn push_u64_writes_decimals() {
        for n in [0, 7, 10, 99, 12_345, u64::MAX] {
            let mut got = Vec::new();
            push_u64(&mut got, n);
            assert_eq!(got, n.to_string().into_bytes());
        }
    }
}
