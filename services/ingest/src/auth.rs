//! Credentials: API keys (`amp_live_sk_…`) and user keys (`uk_…`), hashed with a server
//! secret (HMAC-SHA-256) for O(1) lookup. The spec suggests bcrypt, which exists to slow down
//! guessing of low-entropy passwords and would cost tens of milliseconds per request; our keys
//! carry 256 random bits, so a keyed fast hash is as safe and keeps lookups O(1). Keys are
//! never logged, and never accepted in URLs.

use base64::Engine as _;

pub(crate) use amp_messaging::auth::hash_key;

/// A fresh API key: `amp_live_sk_` + 43 base64url characters (256 random bits).
pub(crate) fn new_api_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "amp_live_sk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}
