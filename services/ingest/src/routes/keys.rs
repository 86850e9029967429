//! Key management (spec 03/08): rotate the API key (old one valid 24 h), rotate the keypair
//! (proof signed by the old key), revoke the API key (immediately). A keypair rotation and a
//! revocation put the agent's old public key on the revocation list (spec-next 07).

use std::sync::Arc;

use amp_proto::{ApiError, ErrorCode, Timestamp};
use amp_runtime::{ApiJson, ApiResult};
use amp_store::revocation::{self, Reason, Revocation};
use amp_store::{AgentRecord, PastKey};
use axum::Json;
use axum::extract::{Extension, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::register::parse_key;
use super::{Caller, store_error};
use crate::auth::{hash_key, new_api_key};
use crate::state::Inner;
use amp_messaging::events::ChangeKind;

#[utoipa::path(post, path = "/v1/auth/rotate-key", tag = "keys", operation_id = "rotate_api_key", security(("api_key" = [])),
    responses((status = 200, body = crate::routes::openapi::KeyRotatedDoc)))]
pub(super) async fn rotate_key(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    let now = Timestamp::now();
    let key = new_api_key();
    let grace = i64::try_from(inner.config.key_rotation_grace_secs).unwrap_or(i64::MAX);
    let until = now.plus_secs(grace);
    inner
        .store
        .rotate_api_key(
            &agent.id,
            hash_key(&inner.identity.key_pepper, &key),
            now.unix_millis(),
            until.unix_millis(),
        )
        .await
        .map_err(store_error)?;
    // Open sockets re-check their key: one on the old key closes when its grace ends.
    amp_messaging::events::registry_changed(
        &inner.bus,
        inner.acceptor.registry(),
        &agent.id,
        ChangeKind::Rotated,
    )
    .await;
    tracing::info!(tenant = %agent.tenant, agent = %agent.id, "api key rotated");
    // 03's example shows `"expires_at": null` (the new key does not expire); omitted, as
    // every absent value we emit (spec-next 04 JSON profile).
    Ok(Json(json!({
        "api_key": key,
        "previous_key_valid_until": until.to_rfc3339(),
    })))
}

/// Puts `fingerprint`, the agent's key until now, on the revocation list (spec-next 07).
/// Also used by the operator's revocation and by deregistration.
pub(crate) async fn revoke_public_key(
    inner: &Inner,
    agent: &AgentRecord,
    fingerprint: &str,
    reason: Reason,
    superseded_by: Option<String>,
    now: Timestamp,
) -> Result<(), amp_runtime::HttpError> {
    let retention = revocation::secs_to_millis(inner.config.key_revocation_retention_secs);
    let entry = Revocation {
        fingerprint: fingerprint.to_owned(),
        agent_address: agent.address.clone(),
        revoked_at: now.unix_millis(),
        reason,
        superseded_by,
        reported_by: None,
    };
    revocation::revoke(&inner.store, &entry, retention)
        .await
        .map_err(store_error)?;
    tracing::info!(tenant = %agent.tenant, agent = %agent.id, fingerprint = %fingerprint, reason = ?reason, "public key revoked");
    Ok(())
}

#[utoipa::path(delete, path = "/v1/auth/revoke-key", tag = "keys", operation_id = "revoke_api_keys", security(("api_key" = [])),
    responses((status = 200, body = crate::routes::openapi::KeysRevokedDoc)))]
pub(super) async fn revoke_key(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    let now = Timestamp::now();
    // On the list before the keys go: a failure leaves the agent able to retry.
    revoke_public_key(
        &inner,
        &agent,
        &agent.fingerprint,
        Reason::KeyCompromise,
        None,
        now,
    )
    .await?;
    inner
        .store
        .revoke_api_keys(&agent.id)
        .await
        .map_err(store_error)?;
    amp_messaging::events::registry_changed(
        &inner.bus,
        inner.acceptor.registry(),
        &agent.id,
        ChangeKind::Revoked,
    )
    .await;
    tracing::info!(tenant = %agent.tenant, agent = %agent.id, "api keys revoked");
    Ok(Json(
        json!({ "revoked": true, "revoked_at": now.to_rfc3339() }),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = KeypairRotation)]
pub(super) struct RotateKeysBody {
    #[schema(required = true, nullable = false)]
    new_public_key: Option<String>,
    key_algorithm: Option<String>,
    #[schema(required = true, nullable = false)]
    proof: Option<String>,
}

#[utoipa::path(post, path = "/v1/auth/rotate-keys", tag = "keys", operation_id = "rotate_keypair", security(("api_key" = [])),
    request_body = RotateKeysBody, responses((status = 200, body = crate::routes::openapi::KeypairRotatedDoc)))]
pub(super) async fn rotate_keys(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
    ApiJson(body): ApiJson<RotateKeysBody>,
) -> ApiResult<Json<Value>> {
    let text = body
        .new_public_key
        .as_deref()
        .ok_or_else(|| ApiError::missing("new_public_key"))?;
    let proof = body
        .proof
        .as_deref()
        .ok_or_else(|| ApiError::missing("proof"))?;
    let algorithm = body.key_algorithm.as_deref().unwrap_or("Ed25519");
    let new_key = parse_key(algorithm, text).map_err(|mut e| {
        if e.0.field.as_deref() == Some("public_key") {
            e.0.field = Some("new_public_key".into());
        }
        e
    })?;
    let old = amp_messaging::auth::agent_key(&agent)?;
    // A revoked key proves nothing: whoever took it could otherwise rotate it to their own
    // (an operator's revocation is lifted by the owner's re-registration with a new key).
    if let Some(entry) = revocation::revoked(&inner.store, &agent.fingerprint)
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::new(
            ErrorCode::KeyRevoked,
            format!(
                "the current public key ({}) is revoked and cannot sign a rotation",
                entry.fingerprint
            ),
        )
        .with_field("proof")
        .into());
    }
    // SPEC-CHECKLIST §4.20: the proof signs the new key exactly as sent; its DER SPKI and
    // its raw 32 bytes are accepted too.
    let signed_forms: [Vec<u8>; 3] = [
        text.as_bytes().to_vec(),
        new_key.to_spki_der(),
        new_key.to_bytes().to_vec(),
    ];
    if !signed_forms
        .iter()
        .any(|m| old.verify_b64(m, proof).is_ok())
    {
        return Err(ApiError::invalid(
            "proof",
            "proof must be the new public key signed with the current private key",
        )
        .into());
    }
    let at = Timestamp::now();
    let now = at.unix_millis();
    let mut current: AgentRecord = inner
        .store
        .agent(&agent.id)
        .await
        .map_err(store_error)?
        .filter(AgentRecord::is_active)
        .ok_or_else(ApiError::unauthorized)?;
    let old_fingerprint = current.fingerprint.clone();
    current.past_keys.push(PastKey {
        public_key_hex: current.public_key_hex.clone(),
        replaced_at: now,
    });
    current.public_key_hex = hex::encode(new_key.to_bytes());
    current.fingerprint = new_key.fingerprint();
    let fingerprint = current.fingerprint.clone();
    if old_fingerprint == fingerprint {
        return Err(
            ApiError::invalid("new_public_key", "the new public key is the current one").into(),
        );
    }
    // A revoked key does not come back (spec-next 07).
    if revocation::revoked(&inner.store, &fingerprint)
        .await
        .map_err(store_error)?
        .is_some()
    {
        return Err(
            ApiError::new(ErrorCode::KeyRevoked, "the new public key is revoked")
                .with_field("new_public_key")
                .into(),
        );
    }
    inner
        .store
        .update_agent(current)
        .await
        .map_err(store_error)?;
    // The old key is superseded at once: 07 gives a keypair rotation no grace (the 24 h of
    // 03 are the API key's).
    revoke_public_key(
        &inner,
        &agent,
        &old_fingerprint,
        Reason::KeyRotation,
        Some(fingerprint.clone()),
        at,
    )
    .await?;
    amp_messaging::events::registry_changed(
        &inner.bus,
        inner.acceptor.registry(),
        &agent.id,
        ChangeKind::Rotated,
    )
    .await;
    tracing::info!(tenant = %agent.tenant, agent = %agent.id, "keypair rotated");
    Ok(Json(json!({ "rotated": true, "fingerprint": fingerprint })))
}
