//! The OpenAPI 3.1 document of the public API (spec 08's appendix), served at
//! `GET /v1/openapi.json` (and `/api/v1/openapi.json`).
//!
//! Built by `utoipa` from the handlers themselves: each handler carries its
//! `#[utoipa::path]` (method, path, parameters, request body, answers), the request bodies and
//! query strings are the handlers' own `ToSchema`/`IntoParams` types, so a changed field or
//! route changes the document. The answers are built with `json!` in the handlers; their
//! shapes are the `*Doc` types below, checked against the live server by the Schemathesis run
//! (`deploy/schemathesis/run.sh`), which fails on any answer that does not conform.
//!
//! The error answers of every operation are filled in here from [`ErrorCode::ALL`]: each 4xx
//! and 5xx names the codes with that status, all in the spec's body (`{"error", "message",
//! "field"?, "details"?}`).
//!
//! Adding an endpoint: put `#[utoipa::path(...)]` on its handler and its name in
//! [`ApiDoc`]'s `paths(...)`, then regenerate `docs/openapi.json`
//! (`AMP_UPDATE_OPENAPI=1 cargo test -p ampd --test it openapi`).

use std::collections::BTreeMap;

use amp_proto::ErrorCode;
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

/// The security scheme of agent operations: `Authorization: Bearer <api_key>` (spec 08).
pub const BEARER: &str = "api_key";

/// The document's source: every public operation.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Agent Messaging Protocol provider API",
        description = "The public API of an AMP provider (spec 08). Every `/v1/...` path is \
            also served under `/api/v1/...`. Errors are `{\"error\": code, \"message\": text, \
            \"field\"?: name, \"details\"?: {}}`; each error answer lists the codes it can carry. \
            Messages are signed by the sending agent inside the body (`signature`, spec 04/07); \
            provider-to-provider requests carry the provider signature headers (spec 06).",
        license(name = "Apache-2.0"),
    ),
    paths(
        super::meta::health,
        super::meta::info,
        super::meta::well_known,
        openapi_json,
        super::register::register,
        super::agents::me,
        super::agents::update_me,
        super::agents::delete_me,
        super::profile::my_card,
        super::agents::list,
        super::agents::resolve,
        resolve_short,
        super::keys::rotate_key,
        super::keys::rotate_keys,
        super::keys::revoke_key,
        super::route::route,
        super::messages::pending,
        super::messages::ack_query,
        super::messages::ack_batch,
        super::messages::count,
        ack_batch_alias,
        super::messages::ack_path,
        super::messages::receipts,
        super::messages::receipts_ack,
        super::messages::read,
        inbox,
        inbox_ack,
        super::attachments::init,
        super::attachments::direct,
        super::attachments::confirm,
        super::attachments::status,
        super::attachments::download,
        super::attachments::upload,
        super::attachments::content,
        websocket,
        federation_deliver,
        crate::admin::suspension::public_suspend,
        crate::admin::suspension::public_unsuspend,
        crate::admin::risk::agent_risk,
        crate::admin::quarantine::list,
        crate::admin::quarantine::show,
        crate::admin::quarantine::approve,
        crate::admin::quarantine::reject,
    ),
    components(schemas(ErrorDoc)),
    modifiers(&Errors, &Security),
    tags(
        (name = "discovery", description = "Health, provider info, this document"),
        (name = "registration", description = "Spec 03"),
        (name = "agents", description = "The caller's own record, the tenant's directory"),
        (name = "keys", description = "API key and keypair rotation, revocation (spec 07)"),
        (name = "messaging", description = "Route, pickup, acknowledge, receipts (spec 05, 08, 12)"),
        (name = "attachments", description = "Spec 08 attachments, where a blob store is configured (else 404)"),
        (name = "federation", description = "Provider to provider (spec 06)"),
        (name = "operator", description = "Agent suspension, risk and quarantine review (spec-next 07, 08), with an operator token"),
    ),
)]
pub struct ApiDoc;

/// The document as served, as JSON (utoipa's types do not read back what they write, so the
/// final touches of [`fix_schemas`] are made on the JSON).
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    fix_schemas(&mut doc);
    doc
}

/// What utoipa cannot say by itself: an unsigned 64-bit integer (`u64`, `usize`) is `uint64`
/// within its whole range, a `u32` `uint32` within its own (utoipa writes `u-int64`,
/// `u-int32` or nothing, and no upper bound; the handlers take any such integer and refuse
/// more; bounds written on a field are kept), and a body of bytes (`Vec<u8>`) is a binary
/// string, not an array of integers.
pub(crate) fn fix_schemas(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let bytes = m.get("type") == Some(&Value::from("array"))
                && m.get("items").and_then(|i| i.get("format")) == Some(&Value::from("u-int8"));
            if bytes {
                m.clear();
                m.insert("type".into(), Value::from("string"));
                m.insert("format".into(), Value::from("binary"));
                return;
            }
            // `usize` comes without a format: on our 64-bit targets it is a u64.
            let usize_like = m.get("type") == Some(&Value::from("integer"))
                && m.get("minimum") == Some(&Value::from(0))
                && !m.contains_key("format");
            if usize_like || m.get("format") == Some(&Value::from("u-int64")) {
                m.insert("format".into(), Value::from("uint64"));
                m.entry("minimum").or_insert_with(|| Value::from(0));
                m.entry("maximum").or_insert_with(|| Value::from(u64::MAX));
            }
            if m.get("format") == Some(&Value::from("u-int32")) {
                m.insert("format".into(), Value::from("uint32"));
                m.entry("minimum").or_insert_with(|| Value::from(0));
                m.entry("maximum").or_insert_with(|| Value::from(u32::MAX));
            }
            m.values_mut().for_each(fix_schemas);
        }
        Value::Array(a) => a.iter_mut().for_each(fix_schemas),
        _ => {}
    }
}

/// The document as JSON text, pretty-printed with a final newline (the committed copy).
pub fn document_json() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}

/// `GET /v1/openapi.json`: this document.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "discovery",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub(crate) async fn openapi_json() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
        .into_response()
}

/// The WebSocket (served by the delivery service): documented here so the public API is one
/// document. The frames are spec 08's; OpenAPI describes only the upgrade.
#[utoipa::path(get, path = "/v1/ws", tag = "messaging",
    description = "Upgrades to the WebSocket of spec 08 (subprotocol `amp.v1`); the first frame \
        authenticates with the API key. Without upgrade headers the request is refused.",
    responses(
        (status = 101, description = "Switching protocols"),
        (status = 400, description = "Not a WebSocket upgrade request"),
        (status = 426, description = "The connection cannot be upgraded", body = ErrorDoc),
    ))]
#[allow(dead_code)]
fn websocket() {}

/// Federation inbound (served by the federation service, where federation is enabled).
#[utoipa::path(post, path = "/v1/federation/deliver", tag = "federation",
    description = "A message forwarded by another provider (spec 06), signed with that \
        provider's key over the request (`X-AMP-Provider`, `X-AMP-Timestamp`, `X-AMP-Signature`). \
        Served only where federation is enabled (else 404).",
    request_body(content = FederatedDoc, description = "`{envelope, payload, sender_public_key}` as spec 06 forwards it"),
    params(
        ("X-AMP-Provider" = String, Header, description = "The sending provider's domain"),
        ("X-AMP-Timestamp" = String, Header, description = "Unix seconds, within the replay window"),
        ("X-AMP-Signature" = String, Header, description = "The provider's Ed25519 signature (base64)"),
    ),
    security(("provider_signature" = [])),
    responses(
        (status = 200, description = "Accepted", body = Object),
        (status = 401), (status = 403), (status = 404), (status = 409), (status = 507),
    ))]
#[allow(dead_code)]
fn federation_deliver() {}

/// A message as a peer provider forwards it (spec 06): the envelope its agent signed, the
/// payload, and the agent's public key (without it the message is `400 key_not_found`).
#[derive(Serialize, ToSchema)]
#[schema(as = FederatedMessage)]
#[allow(dead_code)]
pub(crate) struct FederatedDoc {
    envelope: FederatedEnvelopeDoc,
    /// The payload as the sender signed it (`type` and `message`, spec 04).
    #[schema(value_type = Object)]
    payload: Value,
    /// The sending agent's Ed25519 public key (PEM or 64 hex characters).
    sender_public_key: Option<String>,
}

/// The envelope of a federated message (spec 04), complete: the sending provider assigned
/// its id and timestamp.
#[derive(Serialize, ToSchema)]
#[schema(as = FederatedEnvelope)]
#[allow(dead_code)]
pub(crate) struct FederatedEnvelopeDoc {
    /// `amp/0.1`.
    version: String,
    /// `msg_<unix ms>_<hex>`.
    id: String,
    /// The sending agent, under the calling provider's domain.
    from: String,
    /// The recipient, one of ours.
    to: String,
    subject: String,
    /// `low`, `normal`, `high` or `urgent`.
    priority: String,
    /// When the sender sent it (RFC 3339), at most 60 s ahead.
    timestamp: String,
    /// The sender's Ed25519 signature (base64) of spec 04's canonical string.
    signature: String,
    /// The thread (the first message's id).
    thread_id: String,
    in_reply_to: Option<String>,
    expires_at: Option<String>,
    idempotency_key: Option<String>,
}

/// The spec's error body. `error` is one of the codes listed on each answer.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorDoc {
    /// The error code.
    pub error: String,
    /// A human-readable sentence.
    pub message: String,
    /// The request field at fault, dotted (`payload.message`).
    #[schema(nullable = false)]
    pub field: Option<String>,
    /// Structured details.
    #[schema(nullable = false, value_type = Option<Object>)]
    pub details: Option<Value>,
}

/// Fills in every operation's error answers: their codes (from [`ErrorCode::ALL`], by
/// status), the spec's body, and the answers every operation can give (400, 413 and 415 with
/// a body, 401 and 429 where authenticated, 500 and 503 everywhere).
pub(crate) struct Errors;

impl Modify for Errors {
    fn modify(&self, doc: &mut Document) {
        let mut by_status: BTreeMap<u16, Vec<&'static str>> = BTreeMap::new();
        for c in ErrorCode::ALL {
            let codes = by_status.entry(c.status()).or_default();
            if !codes.contains(&c.as_str()) {
                codes.push(c.as_str());
            }
        }
        let all_codes: Vec<&str> = {
            let mut v: Vec<&str> = by_status.values().flatten().copied().collect();
            v.sort_unstable();
            v.dedup();
            v
        };
        if let Some(components) = doc.components.as_mut()
            && let Some(RefOr::T(utoipa::openapi::schema::Schema::Object(o))) =
                components.schemas.get_mut("Error")
            && let Some(RefOr::T(utoipa::openapi::schema::Schema::Object(e))) =
                o.properties.get_mut("error")
        {
            e.enum_values = Some(all_codes.iter().map(|c| Value::from(*c)).collect());
        }
        let error_response = |status: u16| {
            let codes = by_status.get(&status).map_or(String::new(), |c| {
                c.iter()
                    .map(|c| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            });
            ResponseBuilder::new()
                .description(format!("Error: {codes}"))
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "Error",
                        ))))
                        .build(),
                )
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let authed = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let mut statuses = vec![500, 503];
                if op.request_body.is_some() {
                    statuses.extend([400, 413, 415]);
                }
                if op.parameters.as_ref().is_some_and(|p| !p.is_empty()) {
                    statuses.push(400);
                }
                if authed {
                    statuses.extend([401, 403, 429]);
                }
                for s in statuses {
                    op.responses
                        .responses
                        .entry(s.to_string())
                        .or_insert_with(|| RefOr::T(error_response(s)));
                }
                // Every error answer (those the handler listed too) carries the spec body.
                for (status, resp) in op.responses.responses.iter_mut() {
                    let Ok(s) = status.parse::<u16>() else {
                        continue;
                    };
                    if s < 400 || !by_status.contains_key(&s) {
                        continue;
                    }
                    if let RefOr::T(r) = resp
                        && r.content.is_empty()
                    {
                        *r = error_response(s);
                    }
                }
            }
        }
    }
}

/// The security schemes: the agent's API key, and the provider signature of federation.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("amp_live_sk_…")
                    .description(Some(
                        "The agent's API key, returned by registration and key rotation",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "operator_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("amp_op_…")
                    .description(Some(
                        "An operator token of the admin API (`amp admin tokens`), with the \
                         scope the operation's security requirement names (`read` < \
                         `tenant_admin` < `full`)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "provider_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-AMP-Signature",
                "The sending provider's signature (spec 06), with X-AMP-Provider and \
                 X-AMP-Timestamp",
            ))),
        );
    }
}

// Aliases served by the same handler as another path: an operation of their own here.

/// `GET /v1/agents/{address}`: the short form of `GET /v1/agents/resolve/{address}`.
#[utoipa::path(get, path = "/v1/agents/{address}", tag = "agents", operation_id = "resolve_agent_short",
    params(("address" = String, Path, description = "The agent's address, or its name in the caller's tenant")),
    security(("api_key" = [])),
    responses((status = 200, body = ResolvedAgentDoc), (status = 404)))]
#[allow(dead_code)]
fn resolve_short() {}

/// `POST /v1/messages/pending/ack`: the batch acknowledgement's own path.
#[utoipa::path(post, path = "/v1/messages/pending/ack", tag = "messaging", operation_id = "ack_messages_batch",
    request_body = super::messages::BatchBody,
    security(("api_key" = [])),
    responses((status = 200, body = BatchAckedDoc)))]
#[allow(dead_code)]
fn ack_batch_alias() {}

/// `GET /v1/inbox`: the pickup under the name some clients use.
#[utoipa::path(get, path = "/v1/inbox", tag = "messaging", operation_id = "get_inbox",
    params(super::messages::PendingQuery),
    security(("api_key" = [])),
    responses((status = 200, body = PendingDoc), (status = 410)))]
#[allow(dead_code)]
fn inbox() {}

/// `POST /v1/inbox/{id}/ack`: one acknowledgement under the inbox name.
#[utoipa::path(post, path = "/v1/inbox/{id}/ack", tag = "messaging", operation_id = "ack_inbox_message",
    params(("id" = String, Path, description = "The message id", max_length = 128)),
    security(("api_key" = [])),
    responses((status = 200, body = AckedDoc), (status = 404)))]
#[allow(dead_code)]
fn inbox_ack() {}

// The answers' shapes (the handlers build them with `json!`; Schemathesis checks them).
// Absent values are omitted, never `null` (spec-next 04): optional members are not nullable.

/// `GET /v1/health`.
#[derive(ToSchema)]
#[schema(as = Health)]
#[allow(dead_code)]
pub(crate) struct HealthDoc {
    /// `healthy`, or `unhealthy` (with 503) when the store is not ready.
    status: String,
    version: String,
    provider: String,
    federation: bool,
    agents_online: u64,
    uptime_seconds: u64,
}

/// The rate limits `/v1/info` advertises.
#[derive(ToSchema)]
#[schema(as = RateLimits)]
#[allow(dead_code)]
pub(crate) struct RateLimitsDoc {
    messages_per_minute: u64,
    api_requests_per_minute: u64,
}

/// `GET /v1/info`.
#[derive(ToSchema)]
#[schema(as = ProviderInfo)]
#[allow(dead_code)]
pub(crate) struct InfoDoc {
    provider: String,
    /// The protocol version (`amp/0.1`).
    version: String,
    server_version: String,
    endpoint: String,
    /// PEM (SPKI) of the provider's Ed25519 key.
    public_key: String,
    fingerprint: String,
    capabilities: Vec<String>,
    registration_modes: Vec<String>,
    rate_limits: RateLimitsDoc,
    /// Where attachments are served.
    #[schema(nullable = false, value_type = Option<Object>)]
    attachment_limits: Option<Value>,
}

/// `GET /.well-known/agent-messaging.json`.
#[derive(ToSchema)]
#[schema(as = WellKnown)]
#[allow(dead_code)]
pub(crate) struct WellKnownDoc {
    /// `AMP1`.
    version: String,
    provider: String,
    endpoint: String,
    public_key: String,
    fingerprint: String,
    capabilities: Vec<String>,
}

/// The provider block of a registration answer.
#[derive(ToSchema)]
#[schema(as = RegisteredProvider)]
#[allow(dead_code)]
pub(crate) struct RegisteredProviderDoc {
    name: String,
    endpoint: String,
    route_url: String,
}

/// `201` of `POST /v1/register` (spec 03), with the aliases clients read.
#[derive(ToSchema)]
#[schema(as = Registered)]
#[allow(dead_code, non_snake_case)]
pub(crate) struct RegisteredDoc {
    address: String,
    short_address: String,
    local_name: String,
    agent_id: String,
    agentId: String,
    tenant: String,
    tenant_id: String,
    /// The API key: shown once.
    api_key: String,
    apiKey: String,
    provider: RegisteredProviderDoc,
    fingerprint: String,
    key_algorithm: String,
    registered_at: String,
    #[schema(nullable = false)]
    owner_id: Option<String>,
}

/// An agent's delivery preferences as `GET /v1/agents/me` shows them.
#[derive(ToSchema)]
#[schema(as = DeliveryPrefs)]
#[allow(dead_code)]
pub(crate) struct DeliveryDoc {
    #[schema(nullable = false)]
    webhook_url: Option<String>,
    prefer_websocket: bool,
}

/// An agent's communication policy (spec 03).
#[derive(ToSchema)]
#[schema(as = CommunicationPolicy)]
#[allow(dead_code)]
pub(crate) struct PolicyDoc {
    /// `open`, `allowlist`, …
    mode: String,
    #[schema(nullable = false)]
    allowed_recipients: Option<Vec<String>>,
}

/// `GET /v1/agents/me`.
#[derive(ToSchema)]
#[schema(as = AgentSelf)]
#[allow(dead_code)]
pub(crate) struct AgentSelfDoc {
    address: String,
    agent_id: String,
    name: String,
    tenant: String,
    #[schema(nullable = false)]
    alias: Option<String>,
    delivery: DeliveryDoc,
    #[schema(nullable = false)]
    public_key: Option<String>,
    key_algorithm: String,
    fingerprint: String,
    #[schema(nullable = false, value_type = Option<Object>)]
    metadata: Option<Value>,
    #[schema(nullable = false)]
    capabilities: Option<Vec<String>>,
    communication_policy: PolicyDoc,
    registered_at: String,
    #[schema(nullable = false)]
    last_seen_at: Option<String>,
}

/// `PATCH /v1/agents/me`.
#[derive(ToSchema)]
#[schema(as = AgentUpdated)]
#[allow(dead_code)]
pub(crate) struct UpdatedDoc {
    updated: bool,
    address: String,
}

/// `DELETE /v1/agents/me`.
#[derive(ToSchema)]
#[schema(as = AgentDeregistered)]
#[allow(dead_code)]
pub(crate) struct DeregisteredDoc {
    deregistered: bool,
    address: String,
    deregistered_at: String,
}

/// One agent of `GET /v1/agents`.
#[derive(ToSchema)]
#[schema(as = AgentListItem)]
#[allow(dead_code)]
pub(crate) struct AgentListItemDoc {
    address: String,
    #[schema(nullable = false)]
    alias: Option<String>,
    online: bool,
}

/// `GET /v1/agents` (spec 08 pagination).
#[derive(ToSchema)]
#[schema(as = AgentList)]
#[allow(dead_code)]
pub(crate) struct AgentListDoc {
    agents: Vec<AgentListItemDoc>,
    total: u64,
    #[schema(nullable = false)]
    cursor: Option<String>,
    has_more: bool,
}

/// `GET /v1/agents/resolve/{address}`.
#[derive(ToSchema)]
#[schema(as = ResolvedAgent)]
#[allow(dead_code)]
pub(crate) struct ResolvedAgentDoc {
    address: String,
    #[schema(nullable = false)]
    alias: Option<String>,
    #[schema(nullable = false)]
    public_key: Option<String>,
    key_algorithm: String,
    fingerprint: String,
    online: bool,
    #[schema(nullable = false)]
    capabilities: Option<Vec<String>>,
}

/// `POST /v1/auth/rotate-key`.
#[derive(ToSchema)]
#[schema(as = ApiKeyRotated)]
#[allow(dead_code)]
pub(crate) struct KeyRotatedDoc {
    /// The new API key: shown once.
    api_key: String,
    previous_key_valid_until: String,
}

/// `DELETE /v1/auth/revoke-key`.
#[derive(ToSchema)]
#[schema(as = ApiKeysRevoked)]
#[allow(dead_code)]
pub(crate) struct KeysRevokedDoc {
    revoked: bool,
    revoked_at: String,
}

/// `POST /v1/auth/rotate-keys`.
#[derive(ToSchema)]
#[schema(as = KeypairRotated)]
#[allow(dead_code)]
pub(crate) struct KeypairRotatedDoc {
    rotated: bool,
    fingerprint: String,
}

/// The answer to `POST /v1/route` (spec 05).
#[derive(ToSchema)]
#[schema(as = RouteAnswer)]
#[allow(dead_code)]
pub(crate) struct RouteAnswerDoc {
    /// The message id.
    id: String,
    /// `queued` or `delivered`.
    status: String,
    /// `relay`, `websocket`, `webhook`, …
    method: String,
    /// What was proven: `mailbox_written`, `socket_written`, `webhook_2xx`, `queued`.
    basis: String,
    #[schema(nullable = false)]
    thread_id: Option<String>,
    queued_at: String,
    expires_at: String,
    #[schema(nullable = false)]
    delivered_at: Option<String>,
    #[schema(nullable = false)]
    warnings: Option<Vec<String>>,
    /// `websocket` or `retained`, when a receipt was asked for.
    #[schema(nullable = false)]
    receipt: Option<String>,
}

/// One message of a pickup page (spec 05, 12).
#[derive(ToSchema)]
#[schema(as = PendingMessage)]
#[allow(dead_code)]
pub(crate) struct PendingMessageDoc {
    id: String,
    #[schema(value_type = Object)]
    envelope: Value,
    #[schema(value_type = Object)]
    payload: Value,
    queued_at: String,
    expires_at: String,
    #[schema(nullable = false, value_type = Option<Object>)]
    sender_public_key: Option<Value>,
    cursor: String,
    #[schema(value_type = Object)]
    local: Value,
}

/// `GET /v1/messages/pending`.
#[derive(ToSchema)]
#[schema(as = PendingPage)]
#[allow(dead_code)]
pub(crate) struct PendingDoc {
    messages: Vec<PendingMessageDoc>,
    count: u64,
    remaining: u64,
    next_cursor: String,
}

/// `GET /v1/messages/pending/count`.
#[derive(ToSchema)]
#[schema(as = PendingCount)]
#[allow(dead_code)]
pub(crate) struct CountDoc {
    count: u64,
    #[schema(nullable = false)]
    oldest_queued_at: Option<String>,
    cursor: String,
}

/// One acknowledgement.
#[derive(ToSchema)]
#[schema(as = Acked)]
#[allow(dead_code)]
pub(crate) struct AckedDoc {
    acknowledged: bool,
    already_acked: bool,
}

/// A batch acknowledgement.
#[derive(ToSchema)]
#[schema(as = BatchAcked)]
#[allow(dead_code)]
pub(crate) struct BatchAckedDoc {
    /// How many were acknowledged now.
    acknowledged: u64,
    already_acked: Vec<String>,
    not_found: Vec<String>,
}

/// `POST /v1/messages/{id}/read`.
#[derive(ToSchema)]
#[schema(as = ReadReceiptSent)]
#[allow(dead_code)]
pub(crate) struct ReadDoc {
    read_receipt_sent: bool,
}

/// `GET /v1/messages/receipts`.
#[derive(ToSchema)]
#[schema(as = Receipts)]
#[allow(dead_code)]
pub(crate) struct ReceiptsDoc {
    /// Each the frame a WebSocket would have carried, plus its `seq`.
    #[schema(value_type = Vec<Object>)]
    receipts: Vec<Value>,
    count: u64,
    #[schema(nullable = false)]
    next_after: Option<u64>,
}

/// `POST /v1/messages/receipts/ack`.
#[derive(ToSchema)]
#[schema(as = ReceiptsAcked)]
#[allow(dead_code)]
pub(crate) struct ReceiptsAckedDoc {
    acknowledged: bool,
    upto: u64,
}

/// `ids` of a batch acknowledgement: 1 to 1000 message ids of 1 to 128 characters.
pub(crate) fn message_ids() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(128)),
        )
        .max_items(Some(1000))
        .build()
}
