//! The provider request signature (spec 06 "Provider Authentication", SPEC-CHECKLIST §4.9):
//! `X-AMP-Signature` = base64(Ed25519(provider key, `"<X-AMP-Timestamp>.<exact body bytes>"`)).

use amp_proto::{PublicKey, SecretKey};

/// The header naming the sending provider.
pub const PROVIDER_HEADER: &str = "x-amp-provider";
/// The header carrying the unix time of signing, in seconds.
pub const TIMESTAMP_HEADER: &str = "x-amp-timestamp";
/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-amp-signature";

fn signed_bytes(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(timestamp.len() + 1 + body.len());
    m.extend_from_slice(timestamp.as_bytes());
    m.push(b'.');
    m.extend_from_slice(body);
    m
}

/// Signs a request body at `timestamp` (the header's text).
pub fn sign(key: &SecretKey, timestamp: &str, body: &[u8]) -> String {
    key.sign_b64(&signed_bytes(timestamp, body))
}

/// Whether `signature_b64` is `key`'s signature of `body` at `timestamp`.
pub fn verify(key: &PublicKey, timestamp: &str, body: &[u8], signature_b64: &str) -> bool {
    key.verify_b64(&signed_bytes(timestamp, body), signature_b64.trim())
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = SecretKey::generate();
        let body = br#"{"envelope":{},"payload":{"a":1}}"#;
        let sig = sign(&key, "1706648400", body);
        assert!(verify(&key.public(), "1706648400", body, &sig));
        assert!(!verify(&key.public(), "1706648401", body, &sig));
        assert!(!verify(
            &key.public(),
            "1706648400",
            br#"{"envelope":{}}"#,
            &sig
        ));
        assert!(!verify(
            &SecretKey::generate().public(),
            "1706648400",
            body,
            &sig
        ));
        assert!(!verify(&key.public(), "1706648400", body, "not base64"));
    }
}
