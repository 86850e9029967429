//! `POST /v1/route`: the per-agent message rate limit, then the shared acceptance pipeline
//! (`amp_messaging`), whose answer is only given once the message is durable: `200` with the
//! router's outcome, or `202` (`basis: "queued"`) when a cluster's router did not report
//! within `outcome_wait_ms`.

use std::sync::Arc;

use amp_messaging::RouteRequest;
use amp_runtime::{ApiJson, ApiResult, HttpError};
use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::Caller;
use crate::state::Inner;

#[utoipa::path(post, path = "/v1/route", tag = "messaging", operation_id = "route_message", security(("api_key" = [])),
    description = "Sends a message signed by the sender (spec 04, 05): the flat body of spec 08 or `{envelope, payload}`. Answered only once the message is durable.",
    request_body = RouteRequest,
    responses((status = 200, body = crate::routes::openapi::RouteAnswerDoc), (status = 202, description = "Durable, the router's outcome not yet known (`basis: queued`)", body = crate::routes::openapi::RouteAnswerDoc),
        (status = 404), (status = 409), (status = 422), (status = 507)))]
pub(super) async fn route(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(sender)): Extension<Caller>,
    ApiJson(body): ApiJson<RouteRequest>,
) -> ApiResult<Response> {
    let limit = inner.acceptor.check_rate(&sender.id).await;
    if !limit.allowed {
        return Err(limit.into_error());
    }
    let answer = inner
        .acceptor
        .accept(&sender, body)
        .await
        .map_err(HttpError::from)?;
    // 202 only when the cluster's router did not report in time: durable, outcome pending.
    let status = if answer.outcome_known {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut resp = (status, Json(answer.body)).into_response();
    limit.apply_headers(resp.headers_mut());
    Ok(resp)
}
