//! The value of a `mailbox` row: a small binary header and the stored message's text
//! appended as is.
//!
//! Pickup reads up to a thousand rows per request; as JSON the message text was a string
//! inside the row's JSON and had to be unescaped (and its every `"` escaped again on write)
//! each time. Now it is copied out once, and a row's times can be read without touching the
//! text at all (expiry checks, `count`).
//!
//! Layout (integers little-endian): `TAG` (1 byte), seq (u64), queued_at (i64), expires_at
//! (i64), message id length (u32) and bytes, sender length (u32) and bytes, then the data to
//! the end. Rows written before this layout are JSON objects (first byte `{`) and are still
//! read.

use crate::{Error, MailboxEntry, Millis, Result};

/// First byte of a binary row (never `{`, which starts a legacy JSON row).
const TAG: u8 = 1;
/// Bytes before the message id: tag, seq, queued_at, expires_at.
const FIXED: usize = 1 + 8 + 8 + 8;

fn corrupt(what: &str) -> Error {
    Error::Corrupt(format!("mailbox row: {what}"))
}

/// Encodes an entry as a row value.
pub(crate) fn encode(e: &MailboxEntry) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(FIXED + 8 + e.message_id.len() + e.sender.len() + e.data.len());
    out.push(TAG);
    out.extend_from_slice(&e.seq.to_le_bytes());
    out.extend_from_slice(&e.queued_at.to_le_bytes());
    out.extend_from_slice(&e.expires_at.to_le_bytes());
    for s in [&e.message_id, &e.sender] {
        // Ids and addresses are short (checked at ingest); a length that does not fit u32
        // would be a bug upstream, and is stored truncated to the field rather than panicking.
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&s.as_bytes()[..len as usize]);
    }
    out.extend_from_slice(e.data.as_bytes());
    out
}

fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    b.get(at..at + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| corrupt("truncated header"))
}

fn str_at(b: &[u8], at: usize) -> Result<(&str, usize)> {
    let len = b
        .get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| corrupt("truncated length"))? as usize;
    let end = at + 4 + len;
    let s = b
        .get(at + 4..end)
        .ok_or_else(|| corrupt("truncated field"))?;
    let s = std::str::from_utf8(s).map_err(|_| corrupt("field is not UTF-8"))?;
    Ok((s, end))
}

/// `(queued_at, expires_at)` of a row, without decoding its text.
///
/// Fails when the row is neither layout.
pub(crate) fn times(b: &[u8]) -> Result<(Millis, Millis)> {
    if b.first() == Some(&TAG) {
        // Two's complement round trip: the i64 was written with to_le_bytes.
        let q = u64_at(b, 9)? as i64;
        let x = u64_at(b, 17)? as i64;
        return Ok((q, x));
    }
    let e = legacy(b)?;
    Ok((e.queued_at, e.expires_at))
}

/// Decodes a row.
///
/// Fails when the row is neither layout or its text is not UTF-8.
pub(crate) fn decode(b: &[u8]) -> Result<MailboxEntry> {
    if b.first() != Some(&TAG) {
        return legacy(b);
    }
    let seq = u64_at(b, 1)?;
    let (queued_at, expires_at) = times(b)?;
    let (message_id, at) = str_at(b, FIXED)?;
    let (sender, at) = str_at(b, at)?;
    let data = b.get(at..).ok_or_else(|| corrupt("truncated data"))?;
    let data = std::str::from_utf8(data).map_err(|_| corrupt("data is not UTF-8"))?;
    Ok(MailboxEntry {
        seq,
        message_id: message_id.to_owned(),
        sender: sender.to_owned(),
        data: data.to_owned(),
        queued_at,
        expires_at,
    })
}

fn legacy(b: &[u8]) -> Result<MailboxEntry> {
    serde_json::from_slice(b).map_err(|e| Error::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> MailboxEntry {
        MailboxEntry {
            seq: 42,
            message_id: "msg_01".into(),
            sender: "a@example.com/t".into(),
            data: r#"{"envelope":{"id":"msg_01"},"payload":{"x":"é \" \\ 1.50"}}"#.into(),
            queued_at: -5,
            expires_at: 1_700_000_000_123,
        }
    }

    #[test]
    fn round_trips_and_reads_times_alone() {
        let e = entry();
        let row = encode(&e);
        assert_eq!(decode(&row).expect("decodes"), e);
        assert_eq!(times(&row).expect("reads times"), (-5, 1_700_000_000_123));
    }

    #[test]
    fn reads_legacy_json_rows() {
        let e = entry();
        let row = serde_json::to_vec(&e).expect("serialises");
        assert_eq!(decode(&row).expect("decodes"), e);
        assert_eq!(
            times(&row).expect("reads times"),
            (e.queued_at, e.expires_at)
        );
    }

    #[test]
    fn refuses_truncated_rows() {
        let row = encode(&entry());
        for cut in [0, 1, 10, FIXED + 2, FIXED + 7] {
            assert!(decode(&row[..cut]).is_err(), "cut at {cut}");
        }
    }
}
