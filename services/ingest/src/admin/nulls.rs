//! Spec-next 04's JSON profile on the admin API's answers: an absent optional member is
//! omitted, never `null` (as on the public API, whose handlers build their answers without
//! them). Here one layer strips them from every JSON answer of the admin API's own routes,
//! rather than each of its handlers: the answers are small and rare, and a field added later
//! cannot forget it. The quarantine review's routes are left out: they answer the held
//! message's payload, which is served as sent (`null`s included; its hash is signed).

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

/// Whether `v` holds a `null` anywhere.
fn has_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().any(has_null),
        Value::Object(m) => m.values().any(has_null),
        _ => false,
    }
}

/// The layer: a JSON answer holding `null` members is answered without them (a `null` in an
/// array is left: an array has no absent members).
pub(super) async fn strip(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let json = resp
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // The handler's answer is already in memory: collecting it costs no I/O.
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "admin answer not read");
            return Response::from_parts(parts, Body::empty());
        }
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if has_null(&v) => match serde_json::to_vec(&crate::routes::no_nulls(v)) {
            Ok(out) => {
                parts.headers.remove(CONTENT_LENGTH);
                Response::from_parts(parts, Body::from(out))
            }
            Err(_) => Response::from_parts(parts, Body::from(bytes)),
        },
        _ => Response::from_parts(parts, Body::from(bytes)),
    }
}
