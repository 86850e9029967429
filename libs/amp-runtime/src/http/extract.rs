//! Extractors whose every rejection is the spec error body.

use amp_proto::{ApiError, ErrorCode};
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::{CONTENT_TYPE, HeaderValue};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{HttpError, truncate};

/// Longest piece of client-controlled text an error message may quote.
const MAX_QUOTE: usize = 200;

/// A JSON request body or response, like [`axum::Json`], whose rejections are spec errors:
///
/// - `Content-Type` missing or not `application/json` / `application/*+json` (an optional
///   `charset=utf-8` is fine) → 415;
/// - body over the limit (see [`super::harden`]) → 413;
/// - malformed JSON → 400 `invalid_request`;
/// - a missing field → 400 `missing_field` naming the (dotted) field;
/// - an unknown field or a value of the wrong type → 400 `invalid_field` naming the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "expected a request body with Content-Type: application/json",
            )
            .into());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::RequestTooLarge, "request body is too large")
            } else {
                ApiError::new(ErrorCode::InvalidRequest, "failed to read the request body")
            }
        })?;
        Ok(ApiJson(parse_json(&bytes)?))
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => (
                [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                body,
            )
                .into_response(),
            Err(e) => HttpError::internal(format_args!("response serialization failed: {e}"))
                .into_response(),
        }
    }
}

/// Whether the headers declare a JSON body: `application/json` or `application/*+json`,
/// with no charset or UTF-8.
pub(crate) fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let json = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    json && parts.all(|param| match param.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            let value = value.trim().trim_matches('"');
            value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    })
}

/// Parses a JSON body into `T`, mapping failures to spec errors with the field path.
///
/// # Errors
/// `invalid_request` for malformed JSON (or trailing data), `missing_field` or
/// `invalid_field` for data that does not fit `T`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = json_message(&inner);
        match inner.classify() {
            serde_json::error::Category::Data => data_error(&path, &message),
            _ => malformed(&message),
        }
    })?;
    de.end().map_err(|e| malformed(&json_message(&e)))?;
    Ok(value)
}

fn malformed(message: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidRequest,
        format!("malformed JSON: {}", truncate(message, MAX_QUOTE)),
    )
}

/// serde_json's message without its ` at line L column C` suffix.
fn json_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match full.strip_suffix(&suffix) {
        Some(message) => message.to_owned(),
        None => full,
    }
}

/// Maps a serde data error (`missing field`, `unknown field`, type mismatch) at `path`
/// (serde_path_to_error's rendering, `.` for the root) to the spec error.
fn data_error(path: &str, message: &str) -> ApiError {
    let parent = (path != ".").then_some(path);
    if let Some(name) = quoted_after(message, "missing field `") {
        return ApiError::missing(&join(parent, name));
    }
    if let Some(name) = quoted_after(message, "unknown field `") {
        let field = join(parent, name);
        return ApiError::invalid(&field, format!("unknown field `{field}`"));
    }
    let message = truncate(message, MAX_QUOTE);
    match parent {
        Some(field) => {
            let field = truncate(field, MAX_QUOTE);
            ApiError::invalid(&field, format!("invalid value for `{field}`: {message}"))
        }
        None => ApiError::new(
            ErrorCode::InvalidField,
            format!("invalid request body: {message}"),
        ),
    }
}

/// The text between `prefix` and the next backtick, bounded in length.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    let end = rest.find('`')?;
    let name = &rest[..end];
    (name.len() <= MAX_QUOTE).then_some(name)
}

fn join(parent: Option<&str>, name: &str) -> String {
    match parent {
        // serde_path_to_error may already have recorded the key itself.
        Some(p) if p == name || p.ends_with(&format!(".{name}")) => p.to_owned(),
        Some(p) => format!("{p}.{name}"),
        None => name.to_owned(),
    }
}

/// A query string deserialized into `T`, like [`axum::extract::Query`], whose rejections
/// are 400 `missing_field` / `invalid_field` naming the parameter.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                let error = data_error(&path, &message);
                if error.code == ErrorCode::MissingField {
                    return error.into();
                }
                match error.field {
                    Some(field) => ApiError::invalid(
                        &field,
                        format!(
                            "invalid query parameter `{field}`: {}",
                            truncate(&message, MAX_QUOTE)
                        ),
                    ),
                    None => ApiError::new(
                        ErrorCode::InvalidRequest,
                        format!("invalid query string: {}", truncate(&message, MAX_QUOTE)),
                    ),
                }
                .into()
            })
    }
}

/// Path parameters deserialized into `T`, like [`axum::extract::Path`], whose rejections
/// are 400 `invalid_field` naming the parameter (a route/type mismatch, a programming
/// error, is a logged 500).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> HttpError {
    let PathRejection::FailedToDeserializePathParams(e) = rejection else {
        // `MissingPathParams`: the extractor is used on a route without parameters.
        return HttpError::internal(rejection.body_text());
    };
    let error = match e.into_kind() {
        ErrorKind::ParseErrorAtKey {
            key, expected_type, ..
        } => {
            let key = truncate(&key, MAX_QUOTE);
            ApiError::invalid(
                &key,
                format!("invalid path parameter `{key}`: expected {expected_type}"),
            )
        }
        ErrorKind::InvalidUtf8InPathParam { key } => {
            let key = truncate(&key, MAX_QUOTE);
            ApiError::invalid(&key, format!("path parameter `{key}` is not valid UTF-8"))
        }
        ErrorKind::DeserializeError { key, message, .. } => {
            let key = truncate(&key, MAX_QUOTE);
            ApiError::invalid(
                &key,
                format!(
                    "invalid path parameter `{key}`: {}",
                    truncate(&message, MAX_QUOTE)
                ),
            )
        }
        ErrorKind::ParseErrorAtIndex { expected_type, .. }
        | ErrorKind::ParseError { expected_type, .. } => ApiError::new(
            ErrorCode::InvalidField,
            format!("invalid path parameter: expected {expected_type}"),
        ),
        kind @ (ErrorKind::WrongNumberOfParameters { .. } | ErrorKind::UnsupportedType { .. }) => {
            return HttpError::internal(format_args!("path extractor mismatch: {kind}"));
        }
        other => ApiError::new(
            ErrorCode::InvalidRequest,
            format!("invalid path: {}", truncate(&other.to_string(), MAX_QUOTE)),
        ),
    };
    error.into()
}
