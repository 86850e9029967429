//! What an agent declares about itself beyond its key (spec 02, 03, 08): `capabilities`,
//! `communication_policy` and its signed Agent Card, as registration and
//! `PATCH /v1/agents/me` take them, and `GET /v1/agents/me/card`.
//!
//! The card is the one the agent signed with its own key (spec 02); the provider checks it
//! before storing it and serves it unchanged. The provider never signs a card in the agent's
//! name: without a submitted card there is none to serve; it vouches for a card it serves
//! with its own signature in a header (README, Protocol decisions).

use amp_proto::card::{self, Expected};
use amp_proto::{Address, ApiError, ErrorCode, PublicKey, Timestamp};
use amp_runtime::{ApiResult, HttpError};
use amp_store::{AgentRecord, CommunicationPolicy};
use axum::Json;
use axum::extract::{Extension, State};
use serde_json::Value;
use std::sync::Arc;

use super::Caller;
use crate::state::Inner;

/// The most capabilities an agent may declare.
const MAX_CAPABILITIES: usize = 32;
/// The longest capability token (`github:code_review` is 18).
const MAX_CAPABILITY_LEN: usize = 64;

/// `capabilities` (spec 08): an array of tokens, kept verbatim and in order. `null` or absent
/// is `None` (unchanged on update).
///
/// Fails (`400 invalid_field`) on anything but an array of at most [`MAX_CAPABILITIES`]
/// distinct printable tokens of at most [`MAX_CAPABILITY_LEN`] characters without spaces.
pub(crate) fn check_capabilities(v: Option<&Value>) -> Result<Option<Vec<String>>, HttpError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let bad = || {
        HttpError::from(ApiError::invalid(
            "capabilities",
            format!(
                "capabilities must be an array of at most {MAX_CAPABILITIES} distinct tokens of 1-{MAX_CAPABILITY_LEN} printable characters without spaces"
            ),
        ))
    };
    let items = v.as_array().ok_or_else(bad)?;
    if items.len() > MAX_CAPABILITIES {
        return Err(bad());
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let token = item.as_str().ok_or_else(bad)?;
        let fits = !token.is_empty()
            && token.chars().count() <= MAX_CAPABILITY_LEN
            && token.chars().all(|c| c.is_ascii_graphic());
        if !fits || out.iter().any(|t| t == token) {
            return Err(bad());
        }
        out.push(token.to_owned());
    }
    Ok(Some(out))
}

/// `communication_policy` (spec 03); `None` when absent. `Some(None)` means `open`.
///
/// Fails as [`amp_messaging::policy::parse`] does.
pub(crate) fn check_policy(
    v: Option<&Value>,
) -> Result<Option<Option<CommunicationPolicy>>, HttpError> {
    match v.filter(|v| !v.is_null()) {
        None => Ok(None),
        Some(v) => Ok(Some(amp_messaging::policy::parse(v)?)),
    }
}

/// `agent_card`: the card the agent signed, verified against `key` and `address` (spec 02);
/// returned as the compact JSON stored.
///
/// Fails (`400 invalid_field`, field `agent_card`) when it is larger than
/// [`card::MAX_CARD_BYTES`] or any check of spec 02 fails.
pub(crate) fn check_card(
    v: Option<&Value>,
    key: &PublicKey,
    address: &Address,
) -> Result<Option<String>, HttpError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let short = address.short_address();
    let addresses = [address.as_str(), short.as_str()];
    let expected = Expected {
        key,
        addresses: &addresses,
        now: Timestamp::now(),
    };
    card::verify(v, expected)
        .map(Some)
        .map_err(|e| ApiError::invalid("agent_card", format!("Agent Card refused: {e}")).into())
}

/// The stored card of `agent` when it still holds: signed with the agent's current key and
/// not expired. A key rotation or the passing of `expires_at` retires it.
fn current_card(agent: &AgentRecord, domain: &str) -> Option<Value> {
    let text = agent.agent_card.as_deref()?;
    let card: Value = serde_json::from_str(text).ok()?;
    let key = amp_messaging::auth::agent_key(agent).ok()?;
    let address = Address::parse_full(&agent.address, domain).ok()?;
    let short = address.short_address();
    let addresses = [address.as_str(), short.as_str()];
    let expected = Expected {
        key: &key,
        addresses: &addresses,
        now: Timestamp::now(),
    };
    card::verify(&card, expected).ok().map(|_| card)
}

/// `GET /v1/agents/me/card` (spec 02, 08): the caller's Agent Card as the agent signed it.
///
/// 404 `not_found` when the agent has submitted none, or its card no longer holds (expired,
/// or signed with a key since rotated). The provider's own signature over the card travels
/// in the `X-AMP-Provider-Signature` header (README, Protocol decisions).
#[utoipa::path(get, path = "/v1/agents/me/card", tag = "agents", operation_id = "get_own_agent_card", security(("api_key" = [])),
    responses((status = 200, description = "The Agent Card as the agent signed it (spec 02); the provider's signature in `X-AMP-Provider-Signature`", body = Object), (status = 404)))]
pub(super) async fn my_card(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
) -> ApiResult<([(&'static str, String); 2], Json<Value>)> {
    // Re-read: the record in the request may be a moment older than a PATCH just answered.
    let agent = inner
        .store
        .agent(&agent.id)
        .await
        .map_err(super::store_error)?
        .filter(AgentRecord::is_active)
        .ok_or_else(ApiError::unauthorized)?;
    let card = current_card(&agent, &inner.identity.domain).ok_or_else(|| {
        ApiError::new(
            ErrorCode::NotFound,
            "no current Agent Card: sign one with the agent's key (spec 02) and submit it as agent_card at registration or with PATCH /v1/agents/me",
        )
    })?;
    // The provider vouches for the card beside it, never inside it: the card's `signature`
    // stays the agent's own.
    let attestation = card::attestation_input(&card).map_err(|_| ApiError::internal())?;
    let headers = [
        (
            PROVIDER_SIGNATURE,
            inner.identity.provider_key.sign_b64(&attestation),
        ),
        (PROVIDER_FINGERPRINT, inner.fingerprint.clone()),
    ];
    Ok((headers, Json(card)))
}

/// The provider's signature over [`card::attestation_input`] of the served card.
pub(crate) const PROVIDER_SIGNATURE: &str = "x-amp-provider-signature";
/// The fingerprint of the key that made [`PROVIDER_SIGNATURE`] (the one in `/v1/info`).
pub(crate) const PROVIDER_FINGERPRINT: &str = "x-amp-provider-fingerprint";
