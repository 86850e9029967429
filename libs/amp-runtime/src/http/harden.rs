//! [`harden`]: the layers that make a service's router answer every failure with the spec
//! body.

use std::any::Any;
use std::time::Instant;

use amp_proto::{ApiError, ErrorCode};
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, Request, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::{DefaultOnRequest, DefaultOnResponse, TraceLayer};
use tracing::Level;

use super::error::error_for_status;
use super::{HttpError, truncate};

/// Longest path an error message quotes.
const MAX_PATH: usize = 100;
/// Largest framework-written plain-text error body that is reused as a message.
const MAX_PLAIN_BODY: usize = 1024;

/// Wraps a service's router so that nothing ever answers plain text:
///
/// - unknown path → 404 `not_found` ("no route for METHOD PATH");
/// - known path, wrong method → 405 `method_not_allowed` (keeping `Allow`);
/// - bodies over `body_limit` bytes → 413 (through [`super::ApiJson`]'s rejection; any other
///   extractor's plain-text rejection is rewritten to the spec body too);
/// - a panicking handler → 500 `internal_error`, the panic logged at error level;
/// - every request traced at debug level (method and path only: no headers, so never
///   `Authorization`, and no query string);
/// - every request counted and timed in `amp_http_requests_total{method, route, status}` and
///   `amp_http_request_duration_seconds{method, route}`, where `route` is the matched route
///   template (`/v1/messages/{id}`, never the raw path) or `unmatched`, so the series stay
///   bounded whatever clients send.
///
/// Call it on the fully assembled router (after `nest`/`merge`), since fallbacks and layers
/// apply to the routes present when it is called.
pub fn harden(app: Router, body_limit: usize) -> Router {
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::map_response(json_errors))
        .layer(CatchPanicLayer::custom(panic_response))
        // Outside the panic catcher, so a panicking handler counts as the 500 it answers.
        .layer(axum::middleware::from_fn(record))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<Body>| {
                    tracing::debug_span!("http", method = %req.method(), path = %req.uri().path())
                })
                .on_request(DefaultOnRequest::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
}

async fn not_found(method: Method, uri: Uri) -> HttpError {
    ApiError::not_found(format!(
        "no route for {method} {}",
        truncate(uri.path(), MAX_PATH)
    ))
    .into()
}

async fn method_not_allowed(method: Method, uri: Uri) -> HttpError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "method {method} is not allowed for {}",
            truncate(uri.path(), MAX_PATH)
        ),
    )
    .into()
}

/// Rewrites any error response that is not JSON (axum's own rejections, a bare 405, a
/// handler returning a bare `StatusCode`) into the spec body, keeping status and headers.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let reason = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase();
    let message = if status.is_server_error() {
        tracing::error!(status = status.as_u16(), "request failed");
        reason
    } else {
        axum::body::to_bytes(body, MAX_PLAIN_BODY)
            .await
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .filter(|text| !text.is_empty())
            .map(|text| truncate(&text, 200))
            .unwrap_or(reason)
    };
    let body = error_for_status(status, message).body();
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(body.to_string()))
}

/// Counts and times one request (see [`harden`]). Route-level layers run after routing, so
/// the matched template is in the request's extensions.
async fn record(req: Request<Body>, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(
        "amp_http_request_duration_seconds",
        "method" => method,
        "route" => route.clone()
    )
    .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        "amp_http_requests_total",
        "method" => method,
        "route" => route,
        "status" => status
    )
    .increment(1);
    response
}

/// The method as a label: the standard ones by name, anything else (extension methods a
/// client may invent) as `other`, to keep the label bounded.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned());
    tracing::error!(panic = %message, "handler panicked");
    HttpError::new(ApiError::internal()).into_response()
}
