//! [`HttpError`]: an [`ApiError`] plus response headers, rendered as the spec body.

use amp_proto::{ApiError, ErrorCode};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The error every handler returns: the spec error plus optional extra response headers
/// (for example the `X-RateLimit-*` headers of a 429).
///
/// Build it from an [`ApiError`] with `?`, `.into()` or [`HttpError::new`]. 5xx errors are
/// logged at error level when rendered; their bodies carry only the generic message of the
/// [`ApiError`], so put causes in the log (see [`HttpError::internal`]), never in the message.
#[derive(Debug, Clone)]
pub struct HttpError(pub ApiError, HeaderMap);

/// The result type of handlers.
pub type ApiResult<T> = Result<T, HttpError>;

impl HttpError {
    /// Wraps `error` with no extra headers.
    pub fn new(error: ApiError) -> Self {
        Self(error, HeaderMap::new())
    }

    /// Adds a response header (replacing one of the same name).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.1.insert(name, value);
        self
    }

    /// Adds every header of `headers` (replacing ones of the same name).
    pub fn with_headers(mut self, headers: HeaderMap) -> Self {
        for (name, value) in headers {
            if let Some(name) = name {
                self.1.insert(name, value);
            }
        }
        self
    }

    /// The wrapped error.
    pub fn error(&self) -> &ApiError {
        &self.0
    }

    /// The extra response headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.1
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// `500 internal_error`, logging `cause` at error level; the body reveals nothing.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(cause = %cause, "internal error");
        Self::new(ApiError::internal())
    }

    /// `503 service_unavailable` with `Retry-After: retry_after_secs`, logging `cause` at
    /// warn level (a dependency such as the store or the bus is down).
    pub fn unavailable(cause: impl std::fmt::Display, retry_after_secs: u64) -> Self {
        tracing::warn!(cause = %cause, retry_after_secs, "dependency unavailable");
        Self::new(
            ApiError::unavailable()
                .with_extra("retry_after", serde_json::Value::from(retry_after_secs)),
        )
    }
}

impl From<ApiError> for HttpError {
    fn from(error: ApiError) -> Self {
        Self::new(error)
    }
}

impl From<amp_proto::message::ValidationError> for HttpError {
    fn from(error: amp_proto::message::ValidationError) -> Self {
        Self::new(error.into())
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for HttpError {}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let HttpError(error, headers) = self;
        let status =
            StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(
                status = status.as_u16(),
                code = error.code.as_str(),
                message = %error.message,
                "request failed"
            );
        }
        let body = match serde_json::to_vec(&error.body()) {
            Ok(body) => body,
            // A `Value` always serializes; keep a valid body if that ever changes.
            Err(_) => br#"{"error":"internal_error","message":"internal error"}"#.to_vec(),
        };
        let mut response = (status, body).into_response();
        let out = response.headers_mut();
        out.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(secs) = retry_after(&error) {
            out.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        for (name, value) in headers {
            if let Some(name) = name {
                out.insert(name, value);
            }
        }
        response
    }
}

/// The `retry_after` member of the error's extras, in whole seconds.
fn retry_after(error: &ApiError) -> Option<u64> {
    let v = error.extra.get("retry_after")?;
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f.ceil() as u64))
}

/// The error for a bare status (used where a framework answered without our body).
pub(crate) fn error_for_status(status: StatusCode, message: String) -> ApiError {
    let code = match status.as_u16() {
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        413 => ErrorCode::RequestTooLarge,
        415 => ErrorCode::UnsupportedMediaType,
        429 => ErrorCode::RateLimited,
        501 => ErrorCode::NotImplemented,
        502 => ErrorCode::BadGateway,
        503 | 504 => ErrorCode::Unavailable,
        s if s >= 500 => ErrorCode::Internal,
        _ => ErrorCode::InvalidRequest,
    };
    ApiError::new(code, message)
}
