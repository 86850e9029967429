//! Signed download URLs: `…/v1/attachments/{id}/content?expires=<unix s>&signature=<hex>`,
//! the signature an HMAC-SHA-256 of `id` and `expires` under a key derived from the
//! provider's secret. Anyone holding the URL may download until `expires` (spec 08: a
//! cross-provider recipient has no account here); the URL is never logged (request logs
//! carry the path only).

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The URL-signing key, derived so it is never the secret itself.
pub(super) fn derive_key(secret: &[u8]) -> [u8; 32] {
    #[allow(clippy::expect_used)]
    let mut mac =
        HmacSha256::new_from_slice(secret).expect("HMAC-SHA-256 accepts keys of any length");
    mac.update(b"amp-attachment-url-v1");
    mac.finalize().into_bytes().into()
}

fn mac(key: &[u8; 32], id: &str, expires: i64) -> HmacSha256 {
    #[allow(clippy::expect_used)]
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC-SHA-256 accepts keys of any length");
    mac.update(id.as_bytes());
    mac.update(b"\n");
    mac.update(expires.to_string().as_bytes());
    mac
}

/// The signature, hex.
pub(super) fn sign(key: &[u8; 32], id: &str, expires: i64) -> String {
    hex::encode(mac(key, id, expires).finalize().into_bytes())
}

/// Whether `signature` is this URL's, compared in constant time.
pub(super) fn verify(key: &[u8; 32], id: &str, expires: i64, signature: &str) -> bool {
    let Ok(raw) = hex::decode(signature) else {
        return false;
    };
    mac(key, id, expires).verify_slice(&raw).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_next_signed_urls_verify_only_unchanged() {
        let key = derive_key(b"pepper");
        let sig = sign(&key, "att_1_abcdef01", 1_900_000_000);
        assert!(verify(&key, "att_1_abcdef01", 1_900_000_000, &sig));
        assert!(!verify(&key, "att_1_abcdef02", 1_900_000_000, &sig));
        assert!(!verify(&key, "att_1_abcdef01", 1_900_000_001, &sig));
        assert!(!verify(
            &derive_key(b"other"),
            "att_1_abcdef01",
            1_900_000_000,
            &sig
        ));
        assert!(!verify(&key, "att_1_abcdef01", 1_900_000_000, "zz"));
    }
}
