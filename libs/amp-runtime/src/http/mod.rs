//! The HTTP plumbing every service shares: one error type that renders the spec body
//! (`{"error", "message", "field"?, "details"?}`), extractors whose rejections use that body,
//! and [`harden`], which makes sure nothing ever answers plain text.
//!
//! - [`HttpError`] / [`ApiResult`]: the handler error type.
//! - [`ApiJson`], [`ApiQuery`], [`ApiPath`]: extractors with spec-shaped rejections.
//! - [`harden`]: JSON 404/405/413/500, body limit, panic catcher, request tracing.
//! - [`bearer_token`]: the token of an `Authorization: Bearer …` header.

mod error;
mod extract;
mod harden;
#[cfg(test)]
mod tests;

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

pub use error::{ApiResult, HttpError};
pub use extract::{ApiJson, ApiPath, ApiQuery, parse_json};
pub use harden::harden;

/// The token of an `Authorization: Bearer <token>` header: the scheme is matched
/// case-insensitively and the token trimmed. `None` when the header is absent, not valid
/// UTF-8, uses another scheme or carries an empty token.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(|c: char| c.is_ascii_whitespace())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// Cuts `s` to at most `max` bytes on a char boundary, adding `…` when it cut, so that
/// error messages never echo large client input.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
