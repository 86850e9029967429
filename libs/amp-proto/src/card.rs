//! The Agent Card (spec 02): a portable identity document the agent signs with its own key.
//!
//! The signed bytes are `"amp-agent-card-v1\n"` followed by the card without `signature`
//! in JSON Canonicalization Scheme form (RFC 8785). [`canonical`] writes that form for the
//! JSON a card holds (strings, arrays, objects, booleans and integers); a card with a
//! fractional number is refused rather than canonicalised by guess.

use serde_json::{Map, Value};

use crate::keys::PublicKey;
use crate::message::Timestamp;

/// The domain separator prepended to the canonical card before signing (spec 02).
pub const DOMAIN_SEPARATOR: &[u8] = b"amp-agent-card-v1\n";
/// The domain separator of a provider's attestation of a card, distinct from the agent's so
/// that neither signature can stand for the other.
pub const PROVIDER_DOMAIN_SEPARATOR: &[u8] = b"amp-provider-card-attestation-v1\n";
/// The card format version this provider understands.
pub const CARD_VERSION: &str = "1.0";
/// The largest card accepted, as compact JSON. The spec's fields fit in well under 2 KB.
pub const MAX_CARD_BYTES: usize = 8 * 1024;

/// Why a card was refused: a message naming the failed check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CardError(pub String);

fn refuse(msg: impl Into<String>) -> CardError {
    CardError(msg.into())
}

/// Appends the RFC 8785 form of `value` to `out`: object keys sorted by UTF-16 code units,
/// no whitespace, strings with the minimal escapes of ECMAScript's `JSON.stringify`.
///
/// Fails for a number that is not an integer within ±2^53 (its ECMAScript form is not
/// reproduced here).
pub fn canonical(value: &Value, out: &mut String) -> Result<(), CardError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            const SAFE: u64 = 1 << 53;
            if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= SAFE) {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64().filter(|u| *u <= SAFE) {
                out.push_str(&u.to_string());
            } else {
                return Err(refuse(
                    "cards may hold integers up to 2^53 only, not fractions or larger numbers",
                ));
            }
        }
        Value::String(s) => push_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_string(k, out);
                out.push(':');
                if let Some(v) = map.get(k) {
                    canonical(v, out)?;
                }
            }
            out.push('}');
        }
    }
    Ok(())
}

fn push_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The bytes an agent signs for `card` (its `signature` member, if any, left out).
///
/// Fails when `card` is not an object or holds a number [`canonical`] refuses.
pub fn signing_input(card: &Value) -> Result<Vec<u8>, CardError> {
    let Value::Object(map) = card else {
        return Err(refuse("an Agent Card is a JSON object"));
    };
    let mut unsigned: Map<String, Value> = map.clone();
    unsigned.remove("signature");
    let mut text = String::new();
    canonical(&Value::Object(unsigned), &mut text)?;
    let mut bytes = DOMAIN_SEPARATOR.to_vec();
    bytes.extend_from_slice(text.as_bytes());
    Ok(bytes)
}

/// Signs `card` with `key`, setting its `signature` (what an agent does; used by tests and
/// clients).
///
/// Fails as [`signing_input`] does.
pub fn sign(card: &mut Value, key: &crate::keys::SecretKey) -> Result<(), CardError> {
    let input = signing_input(card)?;
    if let Value::Object(map) = card {
        map.insert("signature".into(), Value::String(key.sign_b64(&input)));
    }
    Ok(())
}

/// The bytes a provider signs to vouch for a card it verified: `"amp-provider-card-attestation-v1\n"`
/// and the JCS form of the whole card, the agent's `signature` included.
///
/// Fails when `card` holds a number [`canonical`] refuses.
pub fn attestation_input(card: &Value) -> Result<Vec<u8>, CardError> {
    let mut text = String::new();
    canonical(card, &mut text)?;
    let mut bytes = PROVIDER_DOMAIN_SEPARATOR.to_vec();
    bytes.extend_from_slice(text.as_bytes());
    Ok(bytes)
}

/// What the card must be about: the agent as the provider knows it.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The agent's registered key.
    pub key: &'a PublicKey,
    /// The addresses the card may name (the full address and the short one).
    pub addresses: &'a [&'a str],
    /// Now.
    pub now: Timestamp,
}

/// Verifies a card as spec 02 says (signature under the domain separator, not expired,
/// fingerprint matching the key) and that it is about `expected`'s agent and key. Returns the
/// card as compact JSON, the form the provider stores and serves.
///
/// Fails, naming the check, when any step fails (spec 02: the card MUST then be rejected).
pub fn verify(card: &Value, expected: Expected<'_>) -> Result<String, CardError> {
    let Value::Object(map) = card else {
        return Err(refuse("an Agent Card is a JSON object"));
    };
    let text_field = |name: &str| -> Result<&str, CardError> {
        match map.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(_) => Err(refuse(format!(
                "card field {name} must be a non-empty string"
            ))),
            None => Err(refuse(format!("card field {name} is required"))),
        }
    };
    if text_field("amp_agent_card")? != CARD_VERSION {
        return Err(refuse(format!("amp_agent_card must be \"{CARD_VERSION}\"")));
    }
    let address = text_field("address")?;
    if !expected
        .addresses
        .iter()
        .any(|a| a.eq_ignore_ascii_case(address))
    {
        return Err(refuse("the card's address is not this agent's address"));
    }
    if !text_field("key_algorithm")?.eq_ignore_ascii_case("Ed25519") {
        return Err(refuse("key_algorithm must be Ed25519"));
    }
    let key = PublicKey::parse(text_field("public_key")?)
        .map_err(|e| refuse(format!("public_key: {e}")))?;
    if key.to_bytes() != expected.key.to_bytes() {
        return Err(refuse(
            "the card's public_key is not the agent's registered key",
        ));
    }
    if text_field("fingerprint")? != key.fingerprint() {
        return Err(refuse(
            "the card's fingerprint does not match its public_key",
        ));
    }
    let time = |name: &str| -> Result<Timestamp, CardError> {
        Timestamp::parse(text_field(name)?)
            .ok_or_else(|| refuse(format!("{name} must be an RFC 3339 timestamp")))
    };
    let issued_at = time("issued_at")?;
    let expires_at = time("expires_at")?;
    if expires_at.unix_millis() <= expected.now.unix_millis() {
        return Err(refuse("the card has expired"));
    }
    if expires_at.unix_millis() <= issued_at.unix_millis() {
        return Err(refuse("expires_at must be after issued_at"));
    }
    for optional in ["alias", "id", "provider_endpoint"] {
        if map.get(optional).is_some_and(|v| !v.is_string()) {
            return Err(refuse(format!("card field {optional} must be a string")));
        }
    }
    if let Some(caps) = map.get("capabilities")
        && !caps
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string))
    {
        return Err(refuse("capabilities must be an array of strings"));
    }
    let signature = text_field("signature")?;
    let input = signing_input(card)?;
    key.verify_b64(&input, signature).map_err(|_| {
        refuse("the signature does not verify: sign \"amp-agent-card-v1\\n\" + the JCS (RFC 8785) form of the card without signature, with the agent's key")
    })?;
    let compact = serde_json::to_string(card).map_err(|e| refuse(e.to_string()))?;
    if compact.len() > MAX_CARD_BYTES {
        return Err(refuse(format!(
            "the card is larger than {MAX_CARD_BYTES} bytes"
        )));
    }
    Ok(compact)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use serde_json::json;

    #[test]
    fn canonical_form_is_rfc_8785_for_card_values() {
        let v: Value = serde_json::from_str(
            r#"{"b":[1,true,null],"a":"\u00e9\n\"\u001f","\u20ac":{},"A":-3}"#,
        )
        .expect("json");
        let mut out = String::new();
        canonical(&v, &mut out).expect("canonical");
        assert_eq!(
            out,
            "{\"A\":-3,\"a\":\"\u{e9}\\n\\\"\\u001f\",\"b\":[1,true,null],\"\u{20ac}\":{}}"
        );
        let mut out = String::new();
        assert!(canonical(&json!({"x": 1.5}), &mut out).is_err());
    }

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // U+1F600 is a surrogate pair (0xD83D…) and sorts before U+FB01 in UTF-16, after it in
        // UTF-8 or by code point.
        let v = json!({"\u{fb01}": 1, "\u{1f600}": 2});
        let mut out = String::new();
        canonical(&v, &mut out).expect("canonical");
        assert_eq!(out, "{\"\u{1f600}\":2,\"\u{fb01}\":1}");
    }

    fn card_for(key: &SecretKey, address: &str) -> Value {
        let public = key.public();
        json!({
            "amp_agent_card": "1.0",
            "address": address,
            "public_key": public.to_pem(),
            "key_algorithm": "Ed25519",
            "fingerprint": public.fingerprint(),
            "capabilities": ["threading"],
            "issued_at": "2026-01-01T00:00:00Z",
            "expires_at": "2099-01-01T00:00:00Z",
        })
    }

    #[test]
    fn a_signed_card_verifies_and_any_change_does_not() {
        let key = SecretKey::generate();
        let public = key.public();
        let mut card = card_for(&key, "a@t.example");
        sign(&mut card, &key).expect("sign");
        let now = Timestamp::now();
        let expected = Expected {
            key: &public,
            addresses: &["a@t.example"],
            now,
        };
        verify(&card, expected).expect("verifies");
        let mut changed = card.clone();
        changed["capabilities"] = json!(["threading", "attachments"]);
        assert!(verify(&changed, expected).is_err());
        let other = SecretKey::generate();
        let mut foreign = card_for(&other, "a@t.example");
        sign(&mut foreign, &other).expect("sign");
        assert!(verify(&foreign, expected).is_err(), "another key");
        let mut elsewhere = card_for(&key, "b@t.example");
        sign(&mut elsewhere, &key).expect("sign");
        assert!(verify(&elsewhere, expected).is_err(), "another address");
    }
}
