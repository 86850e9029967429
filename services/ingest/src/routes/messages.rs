//! The mailbox as the recipient sees it (spec 05, 08, 12): pickup with cursors and
//! long-poll, the count, acknowledgements in every path form clients use (one idempotent
//! transition), read receipts, and the receipts retained for senders.

use std::sync::Arc;
use std::time::Duration;

use amp_bus::subjects;
use amp_messaging::events;
use amp_messaging::mailbox::{PageBudget, entry_cost, fetch_page};
use amp_messaging::render::{cursor, push_u64, rfc3339 as ts, write_item};
use amp_proto::{ApiError, ErrorCode, Timestamp};
use amp_runtime::{ApiJson, ApiPath, ApiQuery, ApiResult, HttpError};
use amp_store::{AckOutcome, AgentRecord, EntryState, MailboxPage};
use axum::Json;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Caller, store_error};
use crate::state::Inner;

/// Page size when the client names none (SPEC-CHECKLIST §4.25; the shell client sends none).
const DEFAULT_LIMIT: usize = 100;
/// Largest page.
const MAX_LIMIT: usize = 1000;
/// Longest long-poll (spec 12.3).
const MAX_WAIT_SECS: u64 = 30;
/// Most ids in one batch ack.
const MAX_BATCH: usize = 1000;
/// Longest id accepted by the ack endpoints (SPEC-CHECKLIST §4.15).
const MAX_ID_LEN: usize = 128;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct PendingQuery {
    limit: Option<usize>,
    after: Option<String>,
    wait: Option<u64>,
}

fn cursor_expired() -> HttpError {
    ApiError::new(
        ErrorCode::CursorExpired,
        "cursor is not recognised or has expired; restart without `after`",
    )
    .into()
}

#[utoipa::path(get, path = "/v1/messages/pending", tag = "messaging", operation_id = "get_pending_messages", security(("api_key" = [])),
    params(PendingQuery), responses((status = 200, body = crate::routes::openapi::PendingDoc), (status = 410)))]
pub(super) async fn pending(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
    ApiQuery(q): ApiQuery<PendingQuery>,
) -> ApiResult<Response> {
    let limit_decision = inner.pending_limiter.check(&agent.id);
    if !limit_decision.allowed {
        return Err(limit_decision.into_error());
    }
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    // A page ends at `limit` messages or at the byte budget, whichever comes first: a
    // thousand messages at the spec's 512 KiB would otherwise be half a gigabyte in memory
    // for one request. `remaining` and `next_cursor` stay exact; the client reads on.
    let budget = PageBudget {
        entries: limit,
        bytes: inner.config.limits.pickup_page_bytes,
    };
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let now = || Timestamp::now().unix_millis();
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(c) => {
            let seq = c
                .strip_prefix("c_")
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(cursor_expired)?;
            let state = inner
                .store
                .count(&agent.id, now())
                .await
                .map_err(store_error)?;
            if seq > state.head || seq < state.floor {
                return Err(cursor_expired());
            }
            Some(seq)
        }
    };
    // Subscribe before reading, so a message committed in between still wakes us.
    let mut wake = if wait.is_zero() {
        None
    } else {
        inner
            .bus
            .subscribe(&subjects::notify_subject(&agent.tenant, &agent.id))
            .await
            .ok()
    };
    let mut page = fetch_page(&inner.store, &agent.id, after, budget, now())
        .await
        .map_err(store_error)?;
    if page.entries.is_empty()
        && let Some(sub) = wake.as_mut()
    {
        let deadline = tokio::time::Instant::now() + wait;
        while page.entries.is_empty() {
            match tokio::time::timeout_at(deadline, sub.next()).await {
                Ok(Some(_)) => {
                    page = fetch_page(&inner.store, &agent.id, after, budget, now())
                        .await
                        .map_err(store_error)?;
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
    let mut resp = render_page(&page, after)?;
    limit_decision.apply_headers(resp.headers_mut());
    Ok(resp)
}

/// Serialises the page straight from the stored text: envelopes and payloads (and their
/// number literals) are spliced byte for byte, never re-parsed into types or a
/// `serde_json::Value` (see [`write_item`]). The body is `{messages, count, remaining,
/// next_cursor}` in that order, as `Page` would serialise it.
fn render_page(page: &MailboxPage, after: Option<u64>) -> ApiResult<Response> {
    let next = page
        .entries
        .last()
        .map(|e| e.seq)
        .or(after)
        .unwrap_or(page.head);
    // One allocation for the whole body: the stored text plus each item's fixed fields.
    let size = page.entries.iter().map(entry_cost).sum::<usize>() + 96;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(b"{\"messages\":[");
    for (i, e) in page.entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_item(&mut out, e, None).map_err(HttpError::internal)?;
    }
    out.extend_from_slice(b"],\"count\":");
    push_u64(&mut out, page.entries.len() as u64);
    out.extend_from_slice(b",\"remaining\":");
    push_u64(&mut out, page.remaining);
    out.extend_from_slice(b",\"next_cursor\":\"c_");
    push_u64(&mut out, next);
    out.extend_from_slice(b"\"}");
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        out,
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/messages/pending/count", tag = "messaging", operation_id = "count_pending_messages", security(("api_key" = [])),
    responses((status = 200, body = crate::routes::openapi::CountDoc)))]
pub(super) async fn count(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
) -> ApiResult<Json<Value>> {
    let c = inner
        .store
        .count(&agent.id, Timestamp::now().unix_millis())
        .await
        .map_err(store_error)?;
    Ok(Json(super::no_nulls(json!({
        "count": c.count,
        "oldest_queued_at": c.oldest_queued_at.map(ts),
        "cursor": cursor(c.head),
    }))))
}

/// 1-128 characters (code points, as the OpenAPI document's `maxLength` counts them; an id
/// that was never a message's is then simply not found).
fn check_id(id: &str) -> Result<(), HttpError> {
    if id.is_empty() || id.chars().count() > MAX_ID_LEN {
        return Err(ApiError::invalid("id", "message id must be 1-128 characters").into());
    }
    Ok(())
}

async fn ack_one(inner: &Inner, agent: &AgentRecord, id: &str) -> ApiResult<Json<Value>> {
    check_id(id)?;
    let out = amp_messaging::mailbox::ack(
        &inner.store,
        &inner.bus,
        inner.acceptor.meter(),
        &inner.identity.domain,
        agent,
        &[id.to_owned()],
        Timestamp::now().unix_millis(),
    )
    .await
    .map_err(store_error)?;
    match out.first() {
        Some(AckOutcome::Acked) => Ok(Json(
            json!({ "acknowledged": true, "already_acked": false }),
        )),
        Some(AckOutcome::AlreadyAcked) => {
            Ok(Json(json!({ "acknowledged": true, "already_acked": true })))
        }
        _ => Err(ApiError::not_found("no such message in this mailbox").into()),
    }
}

#[utoipa::path(delete, path = "/v1/messages/pending/{id}", tag = "messaging", operation_id = "ack_message", security(("api_key" = [])),
    params(("id" = String, Path, description = "The message id", max_length = 128)),
    responses((status = 200, body = crate::routes::openapi::AckedDoc), (status = 404)))]
pub(super) async fn ack_path(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    ack_one(&inner, &agent, &id).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct IdQuery {
    #[param(required = true, nullable = false, min_length = 1, max_length = 128)]
    id: Option<String>,
}

#[utoipa::path(delete, path = "/v1/messages/pending", tag = "messaging", operation_id = "ack_message_by_query", security(("api_key" = [])),
    params(IdQuery), responses((status = 200, body = crate::routes::openapi::AckedDoc), (status = 404)))]
pub(super) async fn ack_query(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
    ApiQuery(q): ApiQuery<IdQuery>,
) -> ApiResult<Json<Value>> {
    let id = q.id.ok_or_else(|| ApiError::missing("id"))?;
    ack_one(&inner, &agent, &id).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = BatchAck)]
pub(super) struct BatchBody {
    #[schema(required = true, nullable = false, schema_with = super::openapi::message_ids)]
    ids: Option<Vec<String>>,
}

#[utoipa::path(post, path = "/v1/messages/pending", tag = "messaging", operation_id = "ack_messages", security(("api_key" = [])),
    request_body = BatchBody, responses((status = 200, body = crate::routes::openapi::BatchAckedDoc)))]
pub(super) async fn ack_batch(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
    ApiJson(body): ApiJson<BatchBody>,
) -> ApiResult<Json<Value>> {
    let ids = body.ids.ok_or_else(|| ApiError::missing("ids"))?;
    if ids.len() > MAX_BATCH {
        return Err(
            ApiError::invalid("ids", format!("at most {MAX_BATCH} ids per request")).into(),
        );
    }
    for id in &ids {
        check_id(id).map_err(|_| ApiError::invalid("ids", "every id must be 1-128 characters"))?;
    }
    let out = amp_messaging::mailbox::ack(
        &inner.store,
        &inner.bus,
        inner.acceptor.meter(),
        &inner.identity.domain,
        &agent,
        &ids,
        Timestamp::now().unix_millis(),
    )
    .await
    .map_err(store_error)?;
    let mut acked = 0;
    let mut already = Vec::new();
    let mut missing = Vec::new();
    for (id, o) in ids.iter().zip(out) {
        match o {
            AckOutcome::Acked => acked += 1,
            AckOutcome::AlreadyAcked => already.push(id.clone()),
            AckOutcome::NotFound => missing.push(id.clone()),
        }
    }
    Ok(Json(json!({
        "acknowledged": acked,
        "already_acked": already,
        "not_found": missing,
    })))
}

/// `POST /v1/messages/{id}/read`: a receipt to the sender, retained for it; never an ack.
/// Only the recipient may send it (anyone else gets 404); repeating it sends nothing new.
#[utoipa::path(post, path = "/v1/messages/{id}/read", tag = "messaging", operation_id = "send_read_receipt", security(("api_key" = [])),
    params(("id" = String, Path, description = "The message id", max_length = 128)),
    responses((status = 200, body = crate::routes::openapi::ReadDoc), (status = 404)))]
pub(super) async fn read(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    check_id(&id)?;
    let sender_address = match inner
        .store
        .entry(&agent.id, &id, Timestamp::now().unix_millis())
        .await
        .map_err(store_error)?
    {
        Some(EntryState::Queued(e)) => e.sender,
        Some(EntryState::Acked { sender }) => sender,
        None => return Err(ApiError::not_found("no such message in this mailbox").into()),
    };
    let marker = amp_store::message_marker("read", &agent.id, &id);
    if inner
        .store
        .get(&marker)
        .await
        .map_err(store_error)?
        .is_some()
    {
        return Ok(Json(json!({ "read_receipt_sent": true })));
    }
    let Some(sender) = events::local_agent(&inner.store, &inner.identity.domain, &sender_address)
        .await
        .map_err(store_error)?
    else {
        // The sender is gone (or, later, on another provider): nothing retains the receipt.
        return Ok(Json(json!({ "read_receipt_sent": false })));
    };
    let now = Timestamp::now();
    let frame = json!({
        "type": "message.read",
        "data": { "id": id, "read_at": now.to_rfc3339(), "by": agent.address },
    });
    events::send_receipt(&inner.store, &inner.bus, &sender, &frame)
        .await
        .map_err(store_error)?;
    inner
        .store
        .put(
            &marker,
            now.unix_millis().to_string().into_bytes(),
            Some(now.unix_millis() + events::MARKER_LIFETIME_MS),
        )
        .await
        .map_err(store_error)?;
    Ok(Json(json!({ "read_receipt_sent": true })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ReceiptsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

/// `GET /v1/messages/receipts`: receipts retained for the caller as sender, oldest first,
/// each the frame a WebSocket would have carried plus its `seq`.
#[utoipa::path(get, path = "/v1/messages/receipts", tag = "messaging", operation_id = "get_receipts", security(("api_key" = [])),
    params(ReceiptsQuery), responses((status = 200, body = crate::routes::openapi::ReceiptsDoc)))]
pub(super) async fn receipts(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
    ApiQuery(q): ApiQuery<ReceiptsQuery>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let list = inner
        .store
        .receipts(&agent.id, q.after, limit, Timestamp::now().unix_millis())
        .await
        .map_err(store_error)?;
    let items: Vec<Value> = list
        .iter()
        .map(|r| {
            let mut v: Value = serde_json::from_str(&r.data).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut v {
                m.insert("seq".into(), json!(r.seq));
            }
            v
        })
        .collect();
    let next = list.last().map(|r| r.seq).or(q.after);
    // `next_after` omitted when there is nothing to read after (no null: spec-next 04).
    let mut body = json!({ "receipts": items, "count": items.len() });
    if let Some(n) = next {
        body["next_after"] = json!(n);
    }
    Ok(Json(body))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReceiptsAck)]
pub(super) struct ReceiptsAck {
    #[schema(required = true, nullable = false)]
    upto: Option<u64>,
}

/// `POST /v1/messages/receipts/ack {upto}`: drops the caller's receipts up to `upto`.
#[utoipa::path(post, path = "/v1/messages/receipts/ack", tag = "messaging", operation_id = "ack_receipts", security(("api_key" = [])),
    request_body = ReceiptsAck, responses((status = 200, body = crate::routes::openapi::ReceiptsAckedDoc)))]
pub(super) async fn receipts_ack(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
    ApiJson(body): ApiJson<ReceiptsAck>,
) -> ApiResult<Json<Value>> {
    let upto = body.upto.ok_or_else(|| ApiError::missing("upto"))?;
    inner
        .store
        .drop_receipts(&agent.id, upto)
        .await
        .map_err(store_error)?;
    Ok(Json(json!({ "acknowledged": true, "upto": upto })))
}
