//! The attachment endpoints of spec 08, over `amp_messaging::attachments`:
//!
//! - `POST /attachments/upload` (agent): the single-use upload URL;
//! - `POST /attachments/upload/direct` (agent): metadata and file in one multipart request,
//!   upload and confirm in one step (spec 08 "Direct Upload");
//! - `PUT /attachments/{id}/upload?token=…` (the upload URL; no API key, the token is the
//!   credential);
//! - `POST /attachments/{id}/confirm`, `GET /attachments/{id}` (the uploader; the status
//!   also for the recipient of the message that references it);
//! - `GET /attachments/{id}/download` (uploader or recipient): the bytes, streamed
//!   directly with `Content-Disposition: attachment` (spec 08 allows a stream or a 302);
//! - `GET /attachments/{id}/content?expires=…&signature=…` (the signed URL put in payloads).
//!
//! Served under `/v1`, `/api/v1` and, for the Claude Code plugin, at the root
//! (`{base}/attachments/…`).

use std::sync::Arc;

use amp_messaging::attachments::{AttachmentService, UploadRequest};
use amp_proto::{ApiError, ErrorCode};
use amp_runtime::{ApiJson, ApiResult, HttpError};
use amp_store::AttachmentRecord;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::Caller;
use crate::state::Inner;

fn service(inner: &Inner) -> Result<&AttachmentService, HttpError> {
    inner.attachments.as_ref().ok_or_else(|| {
        HttpError::from(ApiError::new(
            ErrorCode::AttachmentsNotSupported,
            "this provider does not store attachments",
        ))
    })
}

#[utoipa::path(post, path = "/v1/attachments/upload", tag = "attachments", operation_id = "request_upload_url", security(("api_key" = [])),
    request_body = UploadRequest,
    responses((status = 201, description = "The upload URL and attachment id (spec 08)", body = Object), (status = 404), (status = 422)))]
pub(super) async fn init(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
    ApiJson(req): ApiJson<UploadRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body = service(&inner)?.init(&agent, req).await?;
    Ok((StatusCode::CREATED, Json(body)))
}

/// Longest `metadata` part: four short fields.
const MAX_METADATA: usize = 8 * 1024;

#[utoipa::path(post, path = "/v1/attachments/upload/direct", tag = "attachments", operation_id = "upload_attachment_direct", security(("api_key" = [])),
    request_body(content_type = "multipart/form-data", content = Object, description = "`metadata` (JSON) and `file` parts"),
    responses((status = 201, description = "The stored attachment (spec 08)", body = Object), (status = 404), (status = 422)))]
pub(super) async fn direct(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let svc = service(&inner)?;
    let mut multipart = multipart.map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "send multipart/form-data with a `metadata` part (JSON) and a `file` part",
        )
    })?;
    let mut metadata: Option<UploadRequest> = None;
    let mut file: Option<Bytes> = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("metadata") if metadata.is_none() => {
                let bytes = field.bytes().await.map_err(multipart_error)?;
                if bytes.len() > MAX_METADATA {
                    return Err(
                        ApiError::invalid("metadata", "the metadata part is too long").into(),
                    );
                }
                let req = serde_json::from_slice::<UploadRequest>(&bytes).map_err(|_| {
                    ApiError::invalid(
                        "metadata",
                        "metadata must be a JSON object with filename, content_type, size and digest",
                    )
                })?;
                metadata = Some(req);
            }
            Some("file") if file.is_none() => {
                file = Some(field.bytes().await.map_err(multipart_error)?);
            }
            Some(name @ ("metadata" | "file")) => {
                return Err(
                    ApiError::invalid(name, format!("only one `{name}` part may be sent")).into(),
                );
            }
            _ => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "only the `metadata` and `file` parts may be sent",
                )
                .into());
            }
        }
    }
    let metadata = metadata.ok_or_else(|| ApiError::missing("metadata"))?;
    let file = file.ok_or_else(|| ApiError::missing("file"))?;
    let body = svc.direct(&agent, metadata, file).await?;
    Ok((StatusCode::CREATED, Json(body)))
}

/// A multipart body that could not be read: over the size limit is `413
/// attachment_too_large`, anything else `400 invalid_request`.
fn multipart_error(e: MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorCode::AttachmentTooLarge,
            "the upload is larger than this provider's attachment limit",
        )
    } else {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "the multipart body could not be read",
        )
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct UploadQuery {
    token: Option<String>,
}

#[utoipa::path(put, path = "/v1/attachments/{id}/upload", tag = "attachments", operation_id = "upload_attachment",
    description = "The upload URL returned by `POST /v1/attachments/upload`: its `token` is the credential.",
    params(("id" = String, Path, description = "The attachment id"), UploadQuery),
    request_body(content_type = "application/octet-stream", content = Vec<u8>),
    responses((status = 200, description = "Uploaded", body = Object), (status = 404), (status = 413), (status = 422)))]
pub(super) async fn upload(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> ApiResult<Json<Value>> {
    let svc = service(&inner)?;
    let token = q
        .token
        .ok_or_else(|| ApiError::not_found("no upload is waiting at this URL"))?;
    // The body is read here, up to the largest attachment (+1 %), not by the API's 1 MB
    // limit for JSON bodies.
    let bytes = axum::body::to_bytes(body, svc.max_upload_body())
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::AttachmentTooLarge,
                "the upload is larger than this provider's attachment limit",
            )
        })?;
    Ok(Json(svc.upload(&id, &token, bytes).await?))
}

#[utoipa::path(post, path = "/v1/attachments/{id}/confirm", tag = "attachments", operation_id = "confirm_upload", security(("api_key" = [])),
    params(("id" = String, Path, description = "The attachment id")),
    responses((status = 200, description = "The attachment's state (spec 08)", body = Object), (status = 404), (status = 409), (status = 410), (status = 422)))]
pub(super) async fn confirm(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(service(&inner)?.confirm(&agent, &id).await?))
}

#[utoipa::path(get, path = "/v1/attachments/{id}", tag = "attachments", operation_id = "get_attachment_status", security(("api_key" = [])),
    params(("id" = String, Path, description = "The attachment id")),
    responses((status = 200, description = "The attachment's scan state (spec 08)", body = Object), (status = 404), (status = 410)))]
pub(super) async fn status(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(service(&inner)?.status_body(&agent, &id).await?))
}

#[utoipa::path(get, path = "/v1/attachments/{id}/download", tag = "attachments", operation_id = "download_attachment", security(("api_key" = [])),
    params(("id" = String, Path, description = "The attachment id")),
    responses((status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "A range of the file", content_type = "application/octet-stream", body = Vec<u8>), (status = 404), (status = 409), (status = 410), (status = 416)))]
pub(super) async fn download(
    State(inner): State<Arc<Inner>>,
    Extension(Caller(agent)): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (rec, bytes) = service(&inner)?.download(&agent, &id).await?;
    Ok(file_response(&rec, bytes, &headers, false))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SignedQuery {
    expires: Option<String>,
    signature: Option<String>,
}

#[utoipa::path(get, path = "/v1/attachments/{id}/content", tag = "attachments", operation_id = "download_attachment_signed",
    description = "The signed download URL: `expires` and `signature` are the credential.",
    params(("id" = String, Path, description = "The attachment id"), SignedQuery),
    responses((status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "A range of the file", content_type = "application/octet-stream", body = Vec<u8>), (status = 404), (status = 410), (status = 416)))]
pub(super) async fn content(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    Query(q): Query<SignedQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (Some(expires), Some(signature)) = (q.expires, q.signature) else {
        return Err(
            ApiError::new(ErrorCode::AttachmentNotFound, "no attachment has this id").into(),
        );
    };
    let (rec, bytes) = service(&inner)?
        .download_signed(&id, &expires, &signature)
        .await?;
    Ok(file_response(&rec, bytes, &headers, true))
}

/// The bytes with spec 08's download headers, honouring one `Range: bytes=a-b`.
fn file_response(rec: &AttachmentRecord, bytes: Bytes, req: &HeaderMap, signed: bool) -> Response {
    let total = bytes.len() as u64;
    let mut h = HeaderMap::new();
    let content_type = HeaderValue::from_str(&rec.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, content_type);
    // The sanitised filename has only [a-zA-Z0-9._-]: no quoting issues.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", rec.filename)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, immutable, max-age=604800"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let hex = rec.digest.strip_prefix("sha256:").unwrap_or(&rec.digest);
    if let Ok(v) = HeaderValue::from_str(&format!("\"{hex}\"")) {
        h.insert(header::ETAG, v);
    }
    if signed {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
    }
    let range = req
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|r| parse_range(r, total));
    match range {
        None => (StatusCode::OK, h, bytes).into_response(),
        Some(Some((start, end))) => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{total}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
            let part = bytes.slice(start as usize..=end as usize);
            (StatusCode::PARTIAL_CONTENT, h, part).into_response()
        }
        Some(None) => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{total}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
            let err = HttpError::from(ApiError::new(
                ErrorCode::InvalidRequest,
                "the requested range is not satisfiable",
            ));
            let mut resp = err.into_response();
            *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            resp.headers_mut().extend(h);
            resp
        }
    }
}

/// One `bytes=a-b`, `bytes=a-` or `bytes=-n` range within `total`; `None` when it cannot
/// be satisfied (or is not a single byte range).
fn parse_range(header: &str, total: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || total == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (total.saturating_sub(n), total - 1)
        }
        (a, "") => (a.parse().ok()?, total - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(total - 1)),
    };
    (start <= end && start < total).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn spec_next_ranges() {
        assert_eq!(parse_range("bytes=0-4", 10), Some((0, 4)));
        assert_eq!(parse_range("bytes=5-", 10), Some((5, 9)));
        assert_eq!(parse_range("bytes=-3", 10), Some((7, 9)));
        assert_eq!(parse_range("bytes=8-100", 10), Some((8, 9)));
        assert_eq!(parse_range("bytes=10-", 10), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 10), None);
        assert_eq!(parse_range("items=0-1", 10), None);
        assert_eq!(parse_range("bytes=0-0", 0), None);
    }
}
