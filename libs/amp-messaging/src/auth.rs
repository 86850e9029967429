//! Agent credentials, as every service checks them: API keys (`amp_live_sk_…`) are looked up
//! by their HMAC-SHA-256 under the server secret (the pepper). The spec suggests bcrypt,
//! which exists to slow down guessing of low-entropy passwords and would cost tens of
//! milliseconds per request; these keys carry 256 random bits, so a keyed fast hash is as
//! safe and keeps lookups O(1). Keys are never logged and never accepted in URLs.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use amp_proto::{ApiError, PublicKey};
use amp_store::{AgentRecord, ApiKeyRecord, Store};

/// The keyed hash the store indexes credentials by.
pub fn hash_key(pepper: &[u8], token: &str) -> [u8; 32] {
    #[allow(clippy::expect_used)]
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(pepper)
        .expect("HMAC-SHA-256 accepts keys of any length");
    mac.update(token.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The lookup hash of `token` when it is shaped like an API key (`amp_…`, at most 256
/// bytes); user keys (`uk_…`) and anything else never authenticate.
fn api_key_hash(pepper: &[u8], token: &str) -> Option<[u8; 32]> {
    (token.starts_with("amp_") && token.len() <= 256).then(|| hash_key(pepper, token))
}

/// [`agent_for_key`], reading through the process's [`RegistryCache`] (a route's hot path).
///
/// Fails only on store errors.
pub async fn agent_for_key_cached(
    cache: &crate::RegistryCache,
    pepper: &[u8],
    token: &str,
    now: i64,
) -> Result<Option<AgentRecord>, amp_store::Error> {
    let Some(hash) = api_key_hash(pepper, token) else {
        return Ok(None);
    };
    Ok(cache
        .agent_by_api_key(&hash)
        .await?
        .filter(|(_, key)| key.is_valid_at(now))
        .map(|(agent, _)| agent))
}

/// The active agent an API key belongs to, when the key is valid at `now`. User keys
/// (`uk_…`) and anything not shaped like an API key never authenticate.
///
/// Fails only on store errors.
pub async fn agent_for_key(
    store: &Store,
    pepper: &[u8],
    token: &str,
    now: i64,
) -> Result<Option<AgentRecord>, amp_store::Error> {
    Ok(agent_and_key(store, pepper, token, now)
        .await?
        .map(|(agent, _, _)| agent))
}

/// As [`agent_for_key`], with the key's record and hash: for a session that re-checks its
/// key while it lasts (a WebSocket).
///
/// Fails only on store errors.
pub async fn agent_and_key(
    store: &Store,
    pepper: &[u8],
    token: &str,
    now: i64,
) -> Result<Option<(AgentRecord, ApiKeyRecord, [u8; 32])>, amp_store::Error> {
    let Some(hash) = api_key_hash(pepper, token) else {
        return Ok(None);
    };
    Ok(store
        .agent_by_api_key(&hash)
        .await?
        .filter(|(_, key)| key.is_valid_at(now))
        .map(|(agent, key)| (agent, key, hash)))
}

/// An agent's registered public key, from its stored form (hex of the raw 32 bytes).
///
/// Fails with a logged `500` when the stored record is broken (an invariant, never input).
///
/// Parsed keys are remembered (see [`KEY_CACHE_MAX`]): a key's point decompression is a
/// square root, about a fifth of a signature check, and the same few senders' keys are
/// parsed again on every route.
pub fn agent_key(agent: &AgentRecord) -> Result<PublicKey, ApiError> {
    let mut raw = [0u8; 32];
    hex::decode_to_slice(&agent.public_key_hex, &mut raw)
        .map_err(|_| crate::internal("stored public key is not hex"))?;
    let cache = KEYS.get_or_init(Default::default);
    if let Some(key) = cache.lock().get(&raw) {
        return Ok(*key);
    }
    let key =
        PublicKey::from_bytes(&raw).map_err(|_| crate::internal("stored public key is invalid"))?;
    let mut keys = cache.lock();
    if keys.len() >= KEY_CACHE_MAX {
        keys.clear();
    }
    keys.insert(raw, key);
    Ok(key)
}

/// Most parsed public keys [`agent_key`] remembers (about 200 bytes each); past it, it starts
/// over. The cache is keyed by the key's own bytes, so it can never answer with another key.
const KEY_CACHE_MAX: usize = 16_384;

/// The keys [`agent_key`] parsed, by their raw bytes.
static KEYS: std::sync::OnceLock<
    parking_lot::Mutex<std::collections::HashMap<[u8; 32], PublicKey>>,
> = std::sync::OnceLock::new();
