//! The web console: one static page (HTML, CSS and a script, no build step, nothing fetched
//! from elsewhere) built into the binary and served by the admin listener at `/console/`.
//!
//! The page holds no data and needs no token to load: it asks the operator for a token, keeps
//! it in the tab's `sessionStorage` and sends it as `Authorization: Bearer` to `/admin/v1`,
//! the same API `amp admin` uses. Its responses carry a strict policy: scripts, styles and
//! requests only from this origin, no inline script, never framed, no referrer.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("../../console/index.html");
const APP_JS: &str = include_str!("../../console/app.js");
const APP_CSS: &str = include_str!("../../console/app.css");

/// The policy of every console response. `img-src data:` is not needed (the charts are SVG
/// drawn into the page); nothing but this origin is allowed anywhere.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'none'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's routes, outside `/admin/v1` (no token: the assets are public).
pub(crate) fn router() -> Router {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/console/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Built into the binary: an upgrade changes them, so the browser asks every time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page loads its script and style from files: an inline script would be refused by
    /// the policy, and nothing may come from another origin.
    #[test]
    fn operator_console_page_has_no_inline_script_and_no_foreign_url() {
        let scripts: Vec<&str> = INDEX_HTML.split("<script").skip(1).collect();
        assert_eq!(scripts.len(), 1, "one script tag");
        assert!(
            scripts[0].trim_start().starts_with("src=\"app.js\""),
            "{}",
            scripts[0]
        );
        assert!(scripts[0].contains("></script>"));
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("app.css", APP_CSS),
        ] {
            for bad in [
                "http://",
                "https://",
                "//fonts",
                "@import",
                "eval(",
                "new Function",
            ] {
                // The SVG namespace is a name, not a fetch.
                let hits = text
                    .match_indices(bad)
                    .filter(|(i, _)| !text[*i..].starts_with("http://www.w3.org/2000/svg"))
                    .count();
                assert_eq!(hits, 0, "{name} contains {bad}");
            }
            assert!(
                !text.contains(" style=\""),
                "{name}: inline style attribute"
            );
        }
        assert!(
            !APP_JS.contains("innerHTML"),
            "data goes in with textContent"
        );
        assert!(
            !APP_JS.contains("localStorage"),
            "the token stays in sessionStorage"
        );
    }
}
