//! The OpenAPI 3.1 document of the admin API, served by the admin listener at
//! `GET /admin/v1/openapi.json` (committed as `docs/admin-openapi.json`).
//!
//! Built as the public one is ([`crate::routes::openapi`]): each handler carries its
//! `#[utoipa::path]`, the request bodies and query strings are the handlers' own
//! `ToSchema`/`IntoParams` types, the answers (built with `json!`) are the `*Doc` types
//! below, and every operation's error answers are filled in from [`amp_proto::ErrorCode::ALL`]
//! with the spec's error body. What is not written on a handler is derived, not repeated:
//! the quarantine review is the public API's operations (`/v1/quarantine…`) under
//! `/admin/v1`, `…/unsuspend` is `…/resume`'s operation, and each operation's description
//! names the scope its security requirement gives.
//!
//! Every operation but this document's needs an operator token (`Authorization: Bearer
//! amp_op_…`) of the scope in its security requirement (`read` < `tenant_admin` < `full`).
//! The document itself needs none, as the public one and the console's page: it holds no
//! data, only what `docs/admin-openapi.json` in the source says.
//!
//! Adding an endpoint: put `#[utoipa::path(...)]` on its handler and its name in
//! [`AdminApiDoc`]'s `paths(...)`, then regenerate `docs/admin-openapi.json`
//! (`AMP_UPDATE_OPENAPI=1 cargo test -p ampd --test it openapi`).

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{
    AnyOfBuilder, KnownFormat, Object, ObjectBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, PathItem};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use crate::routes::openapi::{ApiDoc, ErrorDoc, Errors, fix_schemas};

/// The security scheme of every admin operation: the operator token.
pub const OPERATOR: &str = "operator_token";

/// The document's source: every admin operation.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Agent Messaging Protocol provider: admin API",
        description = "The operator plane of an AMP provider, on its own listener (`[ingest.admin] \
            listen`), never the public port. Every operation needs an operator token \
            (`Authorization: Bearer amp_op_…`) of the scope its security requirement names: \
            `read` < `tenant_admin` < `full`, each including the ones before it (a token of too \
            small a scope is `403 forbidden`). Every change is written to the audit log. Errors \
            are `{\"error\": code, \"message\": text, \"field\"?: name, \"details\"?: {}}`; each \
            error answer lists the codes it can carry.",
        license(name = "Apache-2.0"),
    ),
    paths(
        openapi_json,
        super::tenants::list,
        super::tenants::create,
        super::tenants::get,
        super::tenants::update,
        super::tenants::suspend,
        super::tenants::resume,
        super::notify::set,
        super::notify::delete,
        super::notify::test,
        super::deletion::delete,
        super::deletion::status,
        super::owner_keys::list,
        super::owner_keys::issue,
        super::owner_keys::rotate,
        super::owner_keys::revoke,
        super::owner_keys::invite,
        super::agents::list,
        super::suspension::admin_suspend,
        super::suspension::admin_resume,
        super::agent_keys::revoke_key,
        super::agent_keys::deregister,
        super::usage::tenant_json,
        super::usage::tenant_csv,
        super::usage::all_csv,
        super::audit::list,
        super::tokens::list,
        super::tokens::create,
        super::tokens::revoke,
    ),
    components(schemas(ErrorDoc)),
    modifiers(&Derived, &Errors, &Security),
    tags(
        (name = "discovery", description = "This document"),
        (name = "tenants", description = "Create, list, change, suspend, resume, delete"),
        (name = "owner keys", description = "Owner keys (`uk_…`) and invite codes for registration"),
        (name = "agents", description = "A tenant's agents: list, suspend, revoke a key, deregister (spec-next 07)"),
        (name = "quarantine", description = "The review of quarantined messages (spec-next 08)"),
        (name = "usage", description = "Usage per tenant and hour or day, for billing"),
        (name = "audit", description = "The audit log"),
        (name = "operator tokens", description = "Operator tokens (scope `full`)"),
    ),
)]
pub struct AdminApiDoc;

/// The document as served, as JSON.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(AdminApiDoc::openapi()).unwrap_or_default();
    fix_schemas(&mut doc);
    optional_bodies(&mut doc);
    describe_scopes(&mut doc);
    doc
}

/// An optional body (`request_body = Option<T>`) is an absent body, not a JSON `null`: utoipa
/// writes `oneOf: [T, null]`, the handlers (`optional_json`) take an empty body or a `T`.
fn optional_bodies(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for op in paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
    {
        let Some(schema) = op.pointer_mut("/requestBody/content/application~1json/schema") else {
            continue;
        };
        let Some(one_of) = schema.get("oneOf").and_then(Value::as_array) else {
            continue;
        };
        let null = Value::from("null");
        let mut kinds = one_of.iter().filter(|s| s.get("type") != Some(&null));
        if let (Some(only), None) = (kinds.next(), kinds.next()) {
            *schema = only.clone();
            op["requestBody"]["required"] = Value::Bool(false);
        }
    }
}

/// The document as JSON text, pretty-printed with a final newline (the committed copy).
pub fn document_json() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}

/// `GET /admin/v1/openapi.json`: this document (no token).
#[utoipa::path(get, path = "/admin/v1/openapi.json", tag = "discovery", operation_id = "admin_openapi",
    description = "This document. Needs no token: it holds no data.",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub(crate) async fn openapi_json() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
        .into_response()
}

/// Each operation's description starts with the scope its security requirement names (the
/// requirement is the machine-readable form; the description the one people read).
fn describe_scopes(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            let Some(scope) = op
                .pointer(&format!("/security/0/{OPERATOR}/0"))
                .and_then(Value::as_str)
                .map(str::to_owned)
            else {
                continue;
            };
            let line = format!("Needs an operator token of scope `{scope}` or above.");
            let text = match op.get("description").and_then(Value::as_str) {
                Some(d) if !d.is_empty() => format!("{line}\n\n{d}"),
                _ => line,
            };
            op["description"] = Value::String(text);
        }
    }
}

/// The operations not written on a handler of their own: the quarantine review (the public
/// API's operations, with their scopes, served under `/admin/v1` too), and `…/unsuspend`, an
/// alias of `…/resume`.
struct Derived;

impl Modify for Derived {
    fn modify(&self, doc: &mut Document) {
        let public = ApiDoc::openapi();
        for (path, item) in &public.paths.paths {
            let Some(rest) = path.strip_prefix("/v1/quarantine") else {
                continue;
            };
            let mut item = item.clone();
            for op in [&mut item.get, &mut item.post].into_iter().flatten() {
                op.operation_id = op.operation_id.take().map(|id| format!("admin_{id}"));
                op.tags = Some(vec!["quarantine".into()]);
            }
            doc.paths
                .paths
                .insert(format!("/admin/v1/quarantine{rest}"), item);
        }
        let resume = "/admin/v1/tenants/{name}/agents/{agent}/resume";
        if let Some(item) = doc.paths.paths.get(resume) {
            let mut alias: PathItem = item.clone();
            if let Some(op) = alias.post.as_mut() {
                op.operation_id = Some("admin_unsuspend_agent".into());
                op.description = Some(format!("The same as `POST {resume}`."));
            }
            doc.paths.paths.insert(
                "/admin/v1/tenants/{name}/agents/{agent}/unsuspend".into(),
                alias,
            );
        }
    }
}

/// The operator token's scheme.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            OPERATOR,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("amp_op_…")
                    .description(Some(
                        "An operator token (`amp_op_…`): the bootstrap token of the \
                         configuration (`[ingest.admin] bootstrap_token`, scope `full`) or one \
                         created with `POST /admin/v1/tokens`. Its scope is `read` (tenants, \
                         owner-key metadata, agents, usage, quarantine, the audit log), \
                         `tenant_admin` (also create, change, suspend, resume tenants; owner \
                         keys, invites; suspend, revoke, deregister agents; quarantine \
                         verdicts) or `full` (also operator tokens, tenant deletion); each \
                         operation's security requirement names the least it needs.",
                    ))
                    .build(),
            ),
        );
    }
}

// Path parameters shared by several operations.

/// `{name}`: a tenant.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct TenantName {
    /// The tenant's label (1-63 characters of a-z, 0-9 and `-`; case-insensitive).
    #[param(pattern = "^[A-Za-z0-9-]{1,63}$")]
    name: String,
}

/// `{name}` and `{agent}`: an agent of a tenant.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct TenantAgent {
    /// The tenant's label (1-63 characters of a-z, 0-9 and `-`; case-insensitive).
    #[param(pattern = "^[A-Za-z0-9-]{1,63}$")]
    name: String,
    /// The agent's name in the tenant, or its id (`agt_…`).
    agent: String,
}

/// `{name}` and `{id}`: an owner key of a tenant.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct OwnerKeyPath {
    /// The tenant's label (1-63 characters of a-z, 0-9 and `-`; case-insensitive).
    #[param(pattern = "^[A-Za-z0-9-]{1,63}$")]
    name: String,
    /// The key's public id (`ok_…`).
    id: String,
}

// Enumerations as the API writes them.

/// Who may register agents into a tenant.
#[derive(Serialize, ToSchema)]
#[schema(as = Registration)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum RegistrationDoc {
    /// Anyone (rate limited per source address).
    Open,
    /// With one of the tenant's owner keys.
    OwnerKey,
    /// With an owner key or a single-use invite code.
    Invite,
}

/// A tenant's status.
#[derive(Serialize, ToSchema)]
#[schema(as = TenantStatus)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum TenantStatusDoc {
    Active,
    Suspended,
    Deleting,
}

/// An operator token's scope; each includes the ones before it.
#[derive(Serialize, ToSchema)]
#[schema(as = Scope)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum ScopeDoc {
    Read,
    TenantAdmin,
    Full,
}

/// A usage period's query value: `hour`, `day`, or empty (the default, `hour`).
pub(crate) fn period_or_empty() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["hour", "day", ""]))
        .description(Some("`hour` (default) or `day`; empty is the default"))
        .build()
}

/// A time of the usage query: RFC 3339, or empty (the default).
pub(crate) fn time_or_empty() -> Schema {
    AnyOfBuilder::new()
        .description(Some(
            "RFC 3339; empty is the default (`from`: `to` less 24 hours; `to`: now). At most \
             744 hours or 366 days from `from` to `to`",
        ))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(0)),
        )
        .build()
        .into()
}

/// A usage period.
#[derive(Serialize, ToSchema)]
#[schema(as = Period)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum PeriodDoc {
    Hour,
    Day,
}

/// Where a tenant's deletion stands.
#[derive(Serialize, ToSchema)]
#[schema(as = DeletionStatus)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum DeletionStatusDoc {
    /// Asked for; no process has started it yet.
    Pending,
    /// Being purged.
    Running,
    /// Everything is gone; the tenant's name is free.
    Done,
    /// Stopped on an error (in `error`); asking again resumes it.
    Failed,
}

// The answers' shapes (the handlers build them with `json!`; Schemathesis checks them).
// Members the handlers write as `null` when unset are nullable; those they omit are not.

/// A plan: a tenant's quotas. On a tenant's own plan, an absent limit is the default plan's;
/// in the limits in force, no limit.
#[derive(Serialize, ToSchema)]
#[schema(as = Plan)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct PlanDoc {
    /// Most active agents.
    agents: Option<u64>,
    /// Messages sent by the tenant's agents per minute, all together.
    messages_per_minute: Option<u32>,
    /// Messages sent by the tenant's agents per day, all together.
    messages_per_day: Option<u32>,
    /// Most bytes of messages held in the tenant's mailboxes.
    stored_bytes: Option<u64>,
    /// Largest message, bytes.
    message_bytes: Option<u64>,
    /// Most WebSocket connections of the tenant's agents at once.
    connections: Option<u32>,
    /// Whether the tenant's agents may send to other providers.
    federation: Option<bool>,
}

/// A tenant.
#[derive(Serialize, ToSchema)]
#[schema(as = Tenant)]
#[allow(dead_code)]
pub(crate) struct TenantDoc {
    name: String,
    status: TenantStatusDoc,
    registration: RegistrationDoc,
    /// Why it was suspended.
    suspended_reason: Option<String>,
    /// Its own limits.
    plan: PlanDoc,
    /// The limits in force (its own over the default plan's).
    limits: PlanDoc,
    /// Its notification webhook, when set (never the secret).
    notify: Option<TenantNotifyDoc>,
    created_at: String,
    updated_at: String,
}

/// A tenant's notification webhook.
#[derive(Serialize, ToSchema)]
#[schema(as = TenantNotify)]
#[allow(dead_code)]
pub(crate) struct TenantNotifyDoc {
    /// Where events are POSTed.
    url: String,
    /// Set or last changed.
    updated_at: String,
    /// The signing secret (`whsec_…`): only in the answer that made it.
    secret: Option<String>,
}

/// A scheduled test event.
#[derive(Serialize, ToSchema)]
#[schema(as = TenantNotifyTest)]
#[allow(dead_code)]
pub(crate) struct TenantNotifyTestDoc {
    /// The event's id (`evt_…`), as the receiver will see it.
    event_id: String,
}

/// A page of tenants.
#[derive(Serialize, ToSchema)]
#[schema(as = TenantList)]
#[allow(dead_code)]
pub(crate) struct TenantListDoc {
    tenants: Vec<TenantDoc>,
    /// The next page's `after`; `null` on the last page.
    next_cursor: Option<String>,
}

/// An owner key's record (never the key).
#[derive(Serialize, ToSchema)]
#[schema(as = OwnerKey)]
#[allow(dead_code)]
pub(crate) struct OwnerKeyDoc {
    /// Its public id (`ok_…`).
    id: String,
    tenant: String,
    owner_id: String,
    /// The key's first characters, to tell keys apart.
    prefix: String,
    agent_limit: Option<u32>,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    /// The id of the key that replaced it (rotation).
    replaced_by: Option<String>,
    /// Whether it is valid now.
    valid: bool,
}

/// A key just issued: its record and the key, shown once.
#[derive(Serialize, ToSchema)]
#[schema(as = OwnerKeyIssued)]
#[allow(dead_code)]
pub(crate) struct OwnerKeyIssuedDoc {
    #[serde(flatten)]
    record: OwnerKeyDoc,
    /// The key (`uk_…`): shown once.
    key: String,
}

/// A rotation: the new key (shown once) and the previous one as it is now.
#[derive(Serialize, ToSchema)]
#[schema(as = OwnerKeyRotated)]
#[allow(dead_code)]
pub(crate) struct OwnerKeyRotatedDoc {
    #[serde(flatten)]
    record: OwnerKeyDoc,
    /// The new key (`uk_…`): shown once.
    key: String,
    previous: OwnerKeyDoc,
}

/// A tenant's owner keys.
#[derive(Serialize, ToSchema)]
#[schema(as = OwnerKeyList)]
#[allow(dead_code)]
pub(crate) struct OwnerKeyListDoc {
    owner_keys: Vec<OwnerKeyDoc>,
}

/// An invite code, shown once.
#[derive(Serialize, ToSchema)]
#[schema(as = Invite)]
#[allow(dead_code)]
pub(crate) struct InviteDoc {
    id: String,
    tenant: String,
    /// The code (`amp_inv_…`): shown once.
    code: String,
    expires_at: String,
}

/// An operator token's record (never the token).
#[derive(Serialize, ToSchema)]
#[schema(as = OperatorToken)]
#[allow(dead_code)]
pub(crate) struct TokenDoc {
    /// Its public id (`opt_…`).
    id: String,
    name: String,
    scope: ScopeDoc,
    created_at: String,
    revoked_at: Option<String>,
}

/// A token just created: its record and the token, shown once.
#[derive(Serialize, ToSchema)]
#[schema(as = OperatorTokenCreated)]
#[allow(dead_code)]
pub(crate) struct TokenCreatedDoc {
    #[serde(flatten)]
    record: TokenDoc,
    /// The token (`amp_op_…`): shown once.
    token: String,
}

/// Every operator token.
#[derive(Serialize, ToSchema)]
#[schema(as = OperatorTokenList)]
#[allow(dead_code)]
pub(crate) struct TokenListDoc {
    tokens: Vec<TokenDoc>,
}

/// One entry of the audit log.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditEntry)]
#[allow(dead_code)]
pub(crate) struct AuditEntryDoc {
    id: String,
    at: String,
    /// The operator token's id (`opt_…`), or `bootstrap`.
    actor: String,
    /// `tenant.create`, `owner_key.issue`, `agent.suspend`, …
    action: String,
    /// What it acted on: a tenant, a token id, an address, …
    target: String,
    /// The request's `x-request-id`.
    request_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    details: Option<Value>,
}

/// A page of the audit log.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditPage)]
#[allow(dead_code)]
pub(crate) struct AuditPageDoc {
    entries: Vec<AuditEntryDoc>,
    /// The next page's `after`; `null` on the last page.
    next_cursor: Option<String>,
}

/// One period of a tenant's usage.
#[derive(Serialize, ToSchema)]
#[schema(as = UsageRow)]
#[allow(dead_code)]
pub(crate) struct UsageRowDoc {
    /// The period's start, RFC 3339.
    start: String,
    messages_in: u64,
    messages_out: u64,
    federated_in: u64,
    federated_out: u64,
    bytes_stored: u64,
    agents: u64,
    connections: u64,
    bytes_held: u64,
}

/// A tenant's usage.
#[derive(Serialize, ToSchema)]
#[schema(as = Usage)]
#[allow(dead_code)]
pub(crate) struct UsageDoc {
    tenant: String,
    period: PeriodDoc,
    rows: Vec<UsageRowDoc>,
}

/// What a deletion removed so far, per kind.
#[derive(Serialize, ToSchema)]
#[schema(as = PurgeCounts)]
#[allow(dead_code)]
pub(crate) struct PurgedDoc {
    agents: u64,
    messages: u64,
    receipts: u64,
    jobs: u64,
    owner_keys: u64,
    invites: u64,
}

/// A tenant's deletion.
#[derive(Serialize, ToSchema)]
#[schema(as = Deletion)]
#[allow(dead_code)]
pub(crate) struct DeletionDoc {
    /// Its id (`del_…`).
    id: String,
    tenant: String,
    status: DeletionStatusDoc,
    /// The operator token's id.
    requested_by: String,
    requested_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    purged: PurgedDoc,
    /// Why it failed.
    error: Option<String>,
}

/// An agent's status on the admin API.
#[derive(Serialize, ToSchema)]
#[schema(as = AgentStatus)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum AgentStatusDoc {
    Active,
    Deregistered,
}

/// An agent as the admin API shows it (no key).
#[derive(Serialize, ToSchema)]
#[schema(as = TenantAgent)]
#[allow(dead_code)]
pub(crate) struct AgentDoc {
    address: String,
    name: String,
    alias: Option<String>,
    owner_id: Option<String>,
    created_at: String,
    last_seen_at: Option<String>,
    status: AgentStatusDoc,
}

/// A page of a tenant's agents.
#[derive(Serialize, ToSchema)]
#[schema(as = TenantAgentList)]
#[allow(dead_code)]
pub(crate) struct AgentListDoc {
    tenant: String,
    agents: Vec<AgentDoc>,
    /// The tenant's agents in all.
    total: u64,
    /// The next page's `after`; `null` on the last page.
    next_cursor: Option<String>,
}

/// An agent suspended.
#[derive(Serialize, ToSchema)]
#[schema(as = AgentSuspended)]
#[allow(dead_code)]
pub(crate) struct AgentSuspendedDoc {
    agent_id: String,
    address: String,
    suspended: bool,
    suspended_at: String,
    reason: String,
    /// The operator token's id.
    suspended_by: String,
    /// When it ends; absent: until unsuspended.
    #[schema(nullable = false)]
    expires_at: Option<String>,
}

/// An agent no longer suspended.
#[derive(Serialize, ToSchema)]
#[schema(as = AgentUnsuspended)]
#[allow(dead_code)]
pub(crate) struct AgentUnsuspendedDoc {
    agent_id: String,
    address: String,
    suspended: bool,
    unsuspended_at: String,
}

/// An agent's key revoked.
#[derive(Serialize, ToSchema)]
#[schema(as = AgentKeyRevoked)]
#[allow(dead_code)]
pub(crate) struct AgentKeyRevokedDoc {
    agent_id: String,
    address: String,
    /// The revoked key's fingerprint.
    fingerprint: String,
    revoked: bool,
    revoked_at: String,
    /// `admin_action`.
    reason: String,
}

/// An agent deregistered.
#[derive(Serialize, ToSchema)]
#[schema(as = AgentDeregistered)]
#[allow(dead_code)]
pub(crate) struct AgentDeregisteredDoc {
    deregistered: bool,
    agent_id: String,
    address: String,
    deregistered_at: String,
}
