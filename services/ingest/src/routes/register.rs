//! `POST /v1/register` (spec 03): open mode, rate limited per source address; owner mode with
//! an owner key (`uk_…`, issued by the admin API or seeded from the configuration, checked
//! against the stored hashes: revoked or expired keys are refused); invite mode with a
//! single-use code. The tenant's record (admin API) decides which applies.

use std::net::SocketAddr;
use std::sync::Arc;

use amp_proto::address::{is_valid_label, is_valid_name};
use amp_proto::keys::KeyError;
use amp_proto::{Address, ApiError, ErrorCode, PublicKey, Timestamp};
use amp_runtime::http::bearer_token;
use amp_runtime::{ApiJson, ApiResult, HttpError};
use amp_store::operator::{AuditEntry, Operator as _, OwnerKey, TenantRecord, TenantRegistration};
use amp_store::{AgentRecord, AgentStatus, DeliveryPrefs};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{OriginalUri, State};
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::{profile, store_error};
use crate::auth::{hash_key, new_api_key};
use crate::state::Inner;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RegisterRequest)]
pub(super) struct RegisterBody {
    tenant: Option<String>,
    #[schema(required = true, nullable = false)]
    name: Option<String>,
    #[schema(required = true, nullable = false)]
    public_key: Option<String>,
    #[schema(required = true, nullable = false)]
    key_algorithm: Option<String>,
    alias: Option<String>,
    scope: Option<ScopeBody>,
    pub(super) delivery: Option<DeliveryBody>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Box<RawValue>>,
    invite_code: Option<String>,
    #[schema(value_type = Option<Vec<String>>)]
    capabilities: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    communication_policy: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    agent_card: Option<serde_json::Value>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RegisterScope)]
struct ScopeBody {
    platform: Option<String>,
    repo: Option<String>,
}

/// `delivery` in registration and `PATCH /v1/agents/me`.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DeliveryUpdate)]
pub(crate) struct DeliveryBody {
    /// `None`: unchanged; `Some(None)`: removed.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub(crate) webhook_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub(crate) webhook_secret: Option<Option<String>>,
    pub(crate) prefer_websocket: Option<bool>,
}

/// Tells an explicit `null` (`Some(None)`) from an absent field (`None`).
fn some<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Longest alias accepted.
const MAX_ALIAS: usize = 128;
/// Largest metadata object accepted, in bytes.
pub(crate) const MAX_METADATA: usize = 16 * 1024;

#[utoipa::path(post, path = "/v1/register", tag = "registration", operation_id = "register_agent",
    description = "Registers an agent (spec 03). `Authorization: Bearer uk_…` (an owner key) where the tenant requires one.",
    request_body = RegisterBody,
    responses((status = 201, body = crate::routes::openapi::RegisteredDoc), (status = 401), (status = 403), (status = 409), (status = 429)))]
pub(super) async fn register(
    State(inner): State<Arc<Inner>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    ext: Extensions,
    ApiJson(body): ApiJson<RegisterBody>,
) -> ApiResult<Response> {
    // The client's address: the direct peer, or behind a trusted proxy the address it saw.
    let peer = ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| {
            inner
                .config
                .client_address
                .client_ip(c.0.ip(), &headers)
                .to_string()
        })
        .unwrap_or_else(|| "unknown".into());
    let limit = inner.register_limiter.check(&peer);
    if !limit.allowed {
        return Err(limit.into_error());
    }

    // Owner authentication, when an owner key is presented.
    let now_ms = Inner::now_ms();
    let owner: Option<OwnerKey> = match bearer_token(&headers) {
        Some(t) if t.starts_with("uk_") => {
            let hash = hash_key(&inner.identity.key_pepper, t);
            match inner
                .store
                .owner_key_by_hash(&hash)
                .await
                .map_err(store_error)?
            {
                Some(k) if k.valid_at(now_ms) => Some(k),
                _ => {
                    return Err(ApiError::new(
                        ErrorCode::Unauthorized,
                        "unknown, expired, revoked or suspended user key",
                    )
                    .into());
                }
            }
        }
        _ => None,
    };
    let name = required(body.name.as_deref(), "name")?.to_ascii_lowercase();
    let public_key_text = required(body.public_key.as_deref(), "public_key")?;
    let algorithm = required(body.key_algorithm.as_deref(), "key_algorithm")?;
    let tenant = match (&owner, body.tenant.as_deref()) {
        (Some(o), None) => o.tenant.clone(),
        (Some(o), Some(t)) if t.eq_ignore_ascii_case(&o.tenant) => o.tenant.clone(),
        (Some(o), Some(t)) => {
            return Err(ApiError::new(
                ErrorCode::TenantAccessDenied,
                format!(
                    "this user key registers into tenant '{}', not '{}'",
                    o.tenant,
                    truncate(t, 64)
                ),
            )
            .into());
        }
        (None, t) => required(t, "tenant")?.to_ascii_lowercase(),
    };

    if !is_valid_name(&name) {
        return Err(ApiError::invalid(
            "name",
            "name must be 1-63 characters of a-z, 0-9, '-' and '_'",
        )
        .into());
    }
    if !is_valid_label(&tenant) {
        return Err(ApiError::invalid(
            "tenant",
            "tenant must be 1-63 characters of a-z, 0-9 and '-'",
        )
        .into());
    }
    let record = inner.store.tenant(&tenant).await.map_err(store_error)?;
    let by_invite = check_policy(
        &inner.config,
        record.as_ref(),
        &tenant,
        &name,
        owner.is_some(),
        body.invite_code.as_deref(),
    )?;
    let key = parse_key(algorithm, public_key_text)?;
    // Spec-next 07 over 03 (issue 18): a revoked key stays refused for its retention, the
    // owner's re-registration of its own agent included.
    if let Some(entry) = amp_store::revocation::revoked(&inner.store, &key.fingerprint())
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::new(
            ErrorCode::KeyRevoked,
            format!(
                "this public key ({}) was revoked and cannot register again",
                entry.fingerprint
            ),
        )
        .with_field("public_key")
        .into());
    }

    let mut scope = Vec::new();
    if let Some(s) = &body.scope {
        for (field, v) in [("scope.repo", &s.repo), ("scope.platform", &s.platform)] {
            if let Some(v) = v {
                let v = v.to_ascii_lowercase();
                if !is_valid_label(&v) {
                    return Err(ApiError::invalid(
                        field,
                        format!("{field} must be 1-63 characters of a-z, 0-9 and '-'"),
                    )
                    .into());
                }
                scope.push(v);
            }
        }
    }
    scope.push(tenant.clone());
    let address = Address::build(&name, &scope, &inner.identity.domain)
        .map_err(|e| ApiError::invalid("name", format!("address is invalid: {e}")))?;

    let alias = check_alias(body.alias)?;
    let metadata = check_metadata(body.metadata)?;
    let capabilities = profile::check_capabilities(body.capabilities.as_ref())?.unwrap_or_default();
    let communication_policy = profile::check_policy(body.communication_policy.as_ref())?.flatten();
    let agent_card = profile::check_card(body.agent_card.as_ref(), &key, &address)?;
    let delivery = delivery_prefs(
        body.delivery.unwrap_or_default(),
        DeliveryPrefs {
            prefer_websocket: true,
            ..DeliveryPrefs::default()
        },
        inner.config.outbound,
    )?;

    if let Some(o) = &owner
        && let Some(limit) = o.agent_limit
    {
        let count = inner
            .store
            .count_owned_agents(&o.owner_id)
            .await
            .map_err(store_error)?;
        if count >= u64::from(limit) {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("agent limit reached ({limit} agents)"),
            )
            .into());
        }
    }

    // The tenant's plan: counted in the store, so every replica agrees (two registrations
    // at the same moment may both pass the last free place).
    let plan = inner
        .acceptor
        .quotas()
        .resolve(record.as_ref().map(|r| &r.plan));
    if plan.agents.is_some() {
        let (_, agents) = inner
            .store
            .list_agents(&tenant, None, None, 1)
            .await
            .map_err(store_error)?;
        amp_messaging::quota::check_agents(&plan, &tenant, agents)?;
    }

    // An invite is used up only by a registration that passed every other check.
    let mut taken_invite = None;
    if let Some(code) = by_invite {
        let hash = hash_key(&inner.identity.key_pepper, code);
        match inner
            .store
            .take_invite(&hash, &tenant, now_ms)
            .await
            .map_err(store_error)?
        {
            Some(invite) => {
                taken_invite = Some((hash, invite.clone()));
                let mut e = AuditEntry::new(now_ms, &invite.id, "invite.use", &tenant);
                e.details = Some(json!({ "name": name }));
                audit_best_effort(&inner, e).await;
            }
            None => {
                return Err(ApiError::new(
                    ErrorCode::TenantAccessDenied,
                    "unknown, used or expired invite code",
                )
                .with_field("invite_code")
                .into());
            }
        }
    }

    let now = Timestamp::now();
    let api_key = new_api_key();
    let agent = AgentRecord {
        id: format!("agt_{:016x}", rand::random::<u64>()),
        address: address.to_string(),
        tenant: tenant.clone(),
        name: name.clone(),
        scope: address.scope().to_owned(),
        alias,
        public_key_hex: hex::encode(key.to_bytes()),
        key_algorithm: "Ed25519".into(),
        fingerprint: key.fingerprint(),
        past_keys: Vec::new(),
        delivery,
        metadata,
        owner_id: owner.as_ref().map(|o| o.owner_id.clone()),
        registered_at: now.unix_millis(),
        last_seen_at: None,
        status: AgentStatus::Active,
        capabilities,
        communication_policy,
        agent_card,
    };
    match inner
        .store
        .create_agent(
            agent.clone(),
            hash_key(&inner.identity.key_pepper, &api_key),
            now.unix_millis(),
        )
        .await
    {
        Ok(()) => {}
        Err(amp_store::Error::NameTaken) if owner.is_some() => {
            // SPEC-CHECKLIST §4.21: the owner may re-key its own agent (after a revocation)
            // by registering the same name with the same public key. Spec-next 07 refuses
            // a revoked key (above), so once the agent's key is revoked the owner brings a
            // new one, which replaces it.
            let o = owner.as_ref().map(|o| o.owner_id.clone());
            if let Some(mut existing) = inner
                .store
                .agent_by_name(&tenant, &name)
                .await
                .map_err(store_error)?
                && existing.owner_id == o
                && (existing.public_key_hex == agent.public_key_hex
                    || amp_store::revocation::revoked(&inner.store, &existing.fingerprint)
                        .await
                        .map_err(store_error)?
                        .is_some())
            {
                if existing.public_key_hex != agent.public_key_hex {
                    existing.past_keys.push(amp_store::PastKey {
                        public_key_hex: existing.public_key_hex.clone(),
                        replaced_at: now.unix_millis(),
                    });
                    existing.public_key_hex = agent.public_key_hex.clone();
                    existing.fingerprint = agent.fingerprint.clone();
                    inner
                        .store
                        .update_agent(existing.clone())
                        .await
                        .map_err(store_error)?;
                    amp_messaging::events::registry_changed(
                        &inner.bus,
                        inner.acceptor.registry(),
                        &existing.id,
                        amp_messaging::events::ChangeKind::Rotated,
                    )
                    .await;
                }
                inner
                    .store
                    .rotate_api_key(
                        &existing.id,
                        hash_key(&inner.identity.key_pepper, &api_key),
                        now.unix_millis(),
                        now.unix_millis(),
                    )
                    .await
                    .map_err(store_error)?;
                tracing::info!(tenant = %tenant, agent = %existing.id, "agent re-keyed by its owner");
                return Ok(registered(
                    &inner,
                    &uri,
                    &existing,
                    &api_key,
                    owner.as_ref(),
                    limit,
                ));
            }
            return Err(name_taken(&inner, &tenant, &name).await);
        }
        Err(amp_store::Error::NameTaken) => {
            restore_invite(&inner, taken_invite).await;
            return Err(name_taken(&inner, &tenant, &name).await);
        }
        Err(e) => return Err(store_error(e)),
    }
    if let Some(o) = &owner {
        let mut e = AuditEntry::new(now_ms, &o.id, "owner_key.use", &tenant);
        e.details = Some(json!({ "agent_id": agent.id, "name": agent.name }));
        audit_best_effort(&inner, e).await;
    }
    tracing::info!(tenant = %tenant, agent = %agent.id, address = %agent.address, "agent registered");
    metrics::counter!("amp_registrations_total").increment(1);
    Ok(registered(
        &inner,
        &uri,
        &agent,
        &api_key,
        owner.as_ref(),
        limit,
    ))
}

async fn name_taken(inner: &Inner, tenant: &str, name: &str) -> HttpError {
    let suggestions = suggestions(inner, tenant, name).await;
    ApiError::new(
        ErrorCode::NameTaken,
        format!("agent name '{name}' is already registered in tenant '{tenant}'"),
    )
    .with_extra("suggestions", json!(suggestions))
    .into()
}

/// The 201 answer of spec 03, with the aliases clients read.
fn registered(
    inner: &Inner,
    uri: &axum::http::Uri,
    agent: &AgentRecord,
    api_key: &str,
    owner: Option<&OwnerKey>,
    limit: amp_runtime::ratelimit::Decision,
) -> Response {
    let short_address = format!("{}@{}.{}", agent.name, agent.tenant, inner.identity.domain);
    let tenant = &agent.tenant;
    let prefix = if uri.path().starts_with("/api/v1") {
        "/api/v1"
    } else {
        "/v1"
    };
    let endpoint = format!("{}{prefix}", inner.identity.public_url);
    let mut out = json!({
        "address": agent.address,
        "short_address": short_address,
        "local_name": agent.name,
        "agent_id": agent.id,
        "agentId": agent.id,
        "tenant": tenant,
        "tenant_id": tenant,
        "api_key": api_key,
        "apiKey": api_key,
        "provider": {
            "name": inner.identity.domain,
            "endpoint": endpoint,
            "route_url": format!("{endpoint}/route"),
        },
        "fingerprint": agent.fingerprint,
        "key_algorithm": "Ed25519",
        "registered_at": Timestamp::from_unix_millis(agent.registered_at).map(Timestamp::to_rfc3339),
    });
    if let Some(o) = owner {
        out["owner_id"] = json!(o.owner_id);
    }
    let mut resp = (StatusCode::CREATED, axum::Json(out)).into_response();
    limit.apply_headers(resp.headers_mut());
    resp
}

/// The tenant's registration policy (see [`RegistrationConfig`]): `record` is the tenant's
/// record in the store, if the operator plane knows it; `with_owner_key`: the request carries
/// a valid owner key of this tenant. Returns the invite code to consume, when the tenant
/// admits by invite and no owner key was given.
///
/// [`RegistrationConfig`]: crate::config::RegistrationConfig
fn check_policy<'a>(
    config: &crate::Config,
    record: Option<&TenantRecord>,
    tenant: &str,
    name: &str,
    with_owner_key: bool,
    invite_code: Option<&'a str>,
) -> Result<Option<&'a str>, HttpError> {
    let policy = &config.registration;
    if policy.is_reserved_tenant(tenant) {
        return Err(ApiError::new(
            ErrorCode::TenantAccessDenied,
            format!("tenant '{tenant}' is reserved by this provider"),
        )
        .with_field("tenant")
        .into());
    }
    if policy.is_reserved_name(name) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("agent name '{name}' is reserved by this provider"),
        )
        .with_field("name")
        .into());
    }
    if let Some(r) = record
        && r.status.refused()
    {
        return Err(ApiError::new(
            ErrorCode::TenantAccessDenied,
            format!("tenant '{tenant}' is suspended by the provider"),
        )
        .with_field("tenant")
        .into());
    }
    if with_owner_key {
        return Ok(None);
    }
    // No credentials for a tenant that needs them: 401, so the client knows to present a user
    // key (a key for another tenant is 403 `tenant_access_denied`, above).
    match record.map(|r| r.registration) {
        Some(TenantRegistration::Open) => Ok(None),
        Some(TenantRegistration::Invite) => match invite_code.map(str::trim) {
            Some(code) if !code.is_empty() => Ok(Some(code)),
            _ => Err(ApiError::new(
                ErrorCode::Unauthorized,
                format!(
                    "tenant '{tenant}' registers agents with an invite code (invite_code) or the owner's user key (Authorization: Bearer uk_…)"
                ),
            )
            .into()),
        },
        Some(TenantRegistration::OwnerKey) => Err(ApiError::new(
            ErrorCode::Unauthorized,
            format!(
                "tenant '{tenant}' has an owner: its agents register only with the owner's user key (Authorization: Bearer uk_…)"
            ),
        )
        .into()),
        None if policy.is_open(tenant) => Ok(None),
        None => Err(ApiError::new(
            ErrorCode::Unauthorized,
            format!(
                "this provider registers agents into tenant '{tenant}' only with a user key (Authorization: Bearer uk_…)"
            ),
        )
        .into()),
    }
}

/// Appends to the audit log; a failure is logged (the registration itself succeeded).
async fn audit_best_effort(inner: &Inner, entry: AuditEntry) {
    if let Err(e) = inner.store.append_audit(&entry).await {
        tracing::warn!(error = %e, action = %entry.action, "audit entry not written");
    }
}

/// Puts back an invite consumed by a registration that then failed (the name was taken).
async fn restore_invite(
    inner: &Inner,
    taken: Option<(amp_store::KeyHash, amp_store::operator::Invite)>,
) {
    let Some((hash, invite)) = taken else { return };
    if let Err(e) = inner.store.put_invite(&hash, &invite).await {
        tracing::warn!(error = %e, "invite not restored after a failed registration");
    }
}

fn required<'a>(v: Option<&'a str>, field: &str) -> Result<&'a str, HttpError> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s.trim()),
        _ => Err(ApiError::missing(field).into()),
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Parses a public key of the declared algorithm (Ed25519 only, SPEC-CHECKLIST §4.2).
pub(crate) fn parse_key(algorithm: &str, text: &str) -> Result<PublicKey, HttpError> {
    match algorithm.to_ascii_lowercase().as_str() {
        "ed25519" => {}
        "rsa" | "ecdsa" => {
            return Err(ApiError::invalid(
                "key_algorithm",
                "only Ed25519 keys are supported by this provider",
            )
            .into());
        }
        _ => {
            return Err(ApiError::invalid("key_algorithm", "key_algorithm must be Ed25519").into());
        }
    }
    PublicKey::parse(text).map_err(|e| {
        let msg = match e {
            KeyError::UnsupportedAlgorithm(a) => {
                format!("public_key is an {a} key, but key_algorithm says Ed25519")
            }
            other => other.to_string(),
        };
        ApiError::invalid("public_key", msg).into()
    })
}

pub(crate) fn check_alias(alias: Option<String>) -> Result<Option<String>, HttpError> {
    match alias {
        Some(a) if a.chars().count() > MAX_ALIAS || a.chars().any(char::is_control) => {
            Err(ApiError::invalid(
                "alias",
                format!("alias must be at most {MAX_ALIAS} printable characters"),
            )
            .into())
        }
        Some(a) if a.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

pub(crate) fn check_metadata(m: Option<Box<RawValue>>) -> Result<Option<String>, HttpError> {
    let Some(raw) = m else { return Ok(None) };
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    if text.len() > MAX_METADATA || !text.trim_start().starts_with('{') {
        return Err(ApiError::invalid(
            "metadata",
            format!("metadata must be a JSON object of at most {MAX_METADATA} bytes"),
        )
        .into());
    }
    Ok(Some(text.to_owned()))
}

/// Applies a `delivery` body to existing preferences; a webhook URL needs a secret and must be
/// an absolute http(s) URL. (Outbound safety checks of the URL come with webhook delivery.)
pub(crate) fn delivery_prefs(
    body: DeliveryBody,
    mut prefs: DeliveryPrefs,
    policy: amp_runtime::outbound::OutboundPolicy,
) -> Result<DeliveryPrefs, HttpError> {
    if let Some(url) = body.webhook_url {
        prefs.webhook_url = url.filter(|u| !u.trim().is_empty());
    }
    if let Some(secret) = body.webhook_secret {
        prefs.webhook_secret = secret.filter(|s| !s.is_empty());
    }
    if let Some(p) = body.prefer_websocket {
        prefs.prefer_websocket = p;
    }
    if let Some(url) = &prefs.webhook_url {
        if let Err(why) = amp_runtime::outbound::check_url(url, policy) {
            return Err(ApiError::invalid(
                "delivery.webhook_url",
                format!("webhook_url is not allowed: {why}"),
            )
            .into());
        }
        if prefs.webhook_secret.is_none() {
            return Err(ApiError::new(
                ErrorCode::MissingField,
                "a webhook_url needs a webhook_secret to sign deliveries",
            )
            .with_field("delivery.webhook_secret")
            .into());
        }
    }
    if let Some(s) = &prefs.webhook_secret
        && s.len() > 256
    {
        return Err(
            ApiError::invalid("delivery.webhook_secret", "webhook_secret is too long").into(),
        );
    }
    Ok(prefs)
}

const ADJECTIVES: [&str; 12] = [
    "cosmic", "stellar", "quantum", "crystal", "neon", "amber", "swift", "silent", "lunar",
    "solar", "brave", "clever",
];
const NOUNS: [&str; 12] = [
    "panda", "falcon", "phoenix", "wolf", "dragon", "otter", "heron", "lynx", "comet", "maple",
    "badger", "orca",
];

/// Up to three free names close to `name` (spec 02: human-memorable suffixes).
async fn suggestions(inner: &Inner, tenant: &str, name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut candidates = Vec::new();
    for _ in 0..6 {
        let adj = ADJECTIVES[rand::random::<usize>() % ADJECTIVES.len()];
        let noun = NOUNS[rand::random::<usize>() % NOUNS.len()];
        candidates.push((adj, noun));
    }
    let mut names: Vec<String> = candidates
        .into_iter()
        .map(|(a, n)| {
            let suffix = format!("-{a}-{n}");
            let base: String = name.chars().take(63 - suffix.len()).collect();
            format!("{base}{suffix}")
        })
        .collect();
    for i in 2..5 {
        let suffix = format!("-{i}");
        let base: String = name.chars().take(63 - suffix.len()).collect();
        names.push(format!("{base}{suffix}"));
    }
    for n in names {
        if out.len() >= 3 || out.contains(&n) {
            continue;
        }
        if matches!(inner.store.agent_by_name(tenant, &n).await, Ok(None)) {
            out.push(n);
        }
    }
    out
}
