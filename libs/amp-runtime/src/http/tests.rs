//! Handler tests through `oneshot`: every failure answers the spec body.

use amp_proto::{ApiError, ErrorCode};
use axum::Router;
use axum::body::Body;
use axum::http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Create {
    name: String,
    count: u32,
    inner: Inner,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Inner {
    flag: bool,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct Page {
    limit: u32,
    cursor: Option<String>,
}

async fn create(ApiJson(body): ApiJson<Create>) -> ApiJson<Value> {
    ApiJson(json!({"name": body.name}))
}

async fn list(ApiQuery(page): ApiQuery<Page>) -> ApiJson<Value> {
    ApiJson(json!({"limit": page.limit}))
}

async fn item(ApiPath(id): ApiPath<u32>) -> ApiResult<ApiJson<Value>> {
    if id == 0 {
        return Err(ApiError::unavailable()
            .with_extra("retry_after", json!(7))
            .into());
    }
    Ok(ApiJson(json!({"id": id})))
}

async fn boom() -> &'static str {
    panic!("kaboom")
}

fn api() -> Router {
    Router::new()
        .route("/items", post(create).get(list))
        .route("/items/{id}", get(item))
        .route("/panic", get(boom))
        .route("/teapot", get(|| async { StatusCode::IM_A_TEAPOT }))
        .route(
            "/plain-json",
            post(|axum::Json(v): axum::Json<Value>| async move { axum::Json(v) }),
        )
}

fn app() -> Router {
    harden(Router::new().nest("/v1", api()).nest("/api/v1", api()), 256)
}

const VALID: &str = r#"{"name":"a","count":1,"inner":{"flag":true}}"#;

async fn send(req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = app().oneshot(req).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let body: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    if status.is_client_error() || status.is_server_error() {
        assert!(body["error"].is_string(), "{body}");
        assert!(body["message"].is_string(), "{body}");
        assert_eq!(headers[CONTENT_TYPE], "application/json");
    }
    (status, headers, body)
}

fn post_json(uri: &str, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut req = Request::post(uri);
    if let Some(ct) = content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    req.body(body.into()).expect("request")
}

fn get_req(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

#[tokio::test]
async fn valid_json_under_both_prefixes() {
    for prefix in ["/v1", "/api/v1"] {
        for ct in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=\"UTF-8\"",
            "application/vnd.amp+json",
        ] {
            let (status, headers, body) =
                send(post_json(&format!("{prefix}/items"), Some(ct), VALID)).await;
            assert_eq!(status, StatusCode::OK, "{prefix} {ct}: {body}");
            assert_eq!(headers[CONTENT_TYPE], "application/json");
            assert_eq!(body, json!({"name": "a"}));
        }
    }
}

#[tokio::test]
async fn wrong_or_missing_content_type_is_415() {
    for ct in [
        None,
        Some("text/plain"),
        Some("application/json; charset=latin1"),
    ] {
        let (status, _, body) = send(post_json("/v1/items", ct, VALID)).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(body["error"], "invalid_request");
    }
}

#[tokio::test]
async fn malformed_json_is_invalid_request() {
    let huge = format!(r#"{{"name":"{}"#, "x".repeat(200));
    let trailing = format!("{VALID} trailing");
    for input in [r#"{"name":"#, "", trailing.as_str(), "nul", huge.as_str()] {
        let (status, _, body) = send(post_json(
            "/v1/items",
            Some("application/json"),
            input.to_owned(),
        ))
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{input}");
        assert_eq!(body["error"], "invalid_request", "{input}");
        let message = body["message"].as_str().expect("message");
        assert!(message.starts_with("malformed JSON: "), "{message}");
        assert!(message.len() < 260, "{message}");
    }
}

#[tokio::test]
async fn missing_fields_are_named() {
    let cases = [
        (r#"{"count":1,"inner":{"flag":true}}"#, "name"),
        (r#"{"name":"a","count":1,"inner":{}}"#, "inner.flag"),
    ];
    for (input, field) in cases {
        let (status, _, body) = send(post_json("/v1/items", Some("application/json"), input)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "missing_field", "{body}");
        assert_eq!(body["field"], field, "{body}");
    }
}

#[tokio::test]
async fn unknown_fields_and_wrong_types_are_invalid_field() {
    let long = "y".repeat(180);
    let wrong_type = format!(r#"{{"name":"a","count":"{long}","inner":{{"flag":true}}}}"#);
    let cases = [
        (
            r#"{"name":"a","count":1,"inner":{"flag":true},"extra":1}"#.to_owned(),
            "extra",
        ),
        (
            r#"{"name":"a","count":1,"inner":{"flag":true,"zzz":1}}"#.to_owned(),
            "inner.zzz",
        ),
        (wrong_type, "count"),
        (
            r#"{"name":"a","count":1,"inner":{"flag":"yes"}}"#.to_owned(),
            "inner.flag",
        ),
    ];
    for (input, field) in cases {
        let (status, _, body) = send(post_json(
            "/api/v1/items",
            Some("application/json"),
            input.clone(),
        ))
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"], "invalid_field", "{body}");
        assert_eq!(body["field"], field, "{body}");
        let message = body["message"].as_str().expect("message");
        assert!(!message.contains(&long), "{message}");
    }
}

#[tokio::test]
async fn oversize_body_is_413() {
    let big = format!(
        r#"{{"name":"{}","count":1,"inner":{{"flag":true}}}}"#,
        "x".repeat(1000)
    );
    let (status, _, body) = send(post_json(
        "/v1/items",
        Some("application/json"),
        big.clone(),
    ))
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "request_too_large");
    // Even axum's own extractor answers JSON behind `harden`.
    let (status, _, body) = send(post_json("/v1/plain-json", Some("application/json"), big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["error"], "request_too_large");
}

#[tokio::test]
async fn query_rejections() {
    let (status, _, body) = send(get_req("/v1/items?limit=5&cursor=c")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"limit": 5})));
    let (status, _, body) = send(get_req("/v1/items?limit=abc")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_field");
    assert_eq!(body["field"], "limit");
    let (status, _, body) = send(get_req("/v1/items?cursor=c")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "missing_field");
    assert_eq!(body["field"], "limit");
}

#[tokio::test]
async fn path_rejections() {
    let (status, _, body) = send(get_req("/api/v1/items/42")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"id": 42})));
    let (status, _, body) = send(get_req("/v1/items/abc")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_field");
}

#[tokio::test]
async fn unknown_path_is_json_404() {
    let (status, _, body) = send(get_req("/v1/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_found");
    assert_eq!(body["message"], "no route for GET /v1/nope");
    let long = format!("/{}", "a".repeat(10_000));
    let (status, _, body) = send(get_req(&long)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["message"].as_str().expect("message").len() < 200);
}

#[tokio::test]
async fn wrong_method_is_json_405() {
    for uri in ["/v1/items/1", "/api/v1/items/1"] {
        let req = Request::delete(uri).body(Body::empty()).expect("request");
        let (status, headers, body) = send(req).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{uri}");
        assert_eq!(body["error"], "method_not_allowed");
        assert_eq!(
            body["message"],
            format!("method DELETE is not allowed for {uri}")
        );
        if let Some(allow) = headers.get(ALLOW) {
            assert!(allow.to_str().expect("ascii").contains("GET"));
        }
    }
}

#[tokio::test]
async fn panicking_handler_is_json_500() {
    let (status, _, body) = send(get_req("/v1/panic")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body,
        json!({"error": "internal_error", "message": "internal error"})
    );
}

#[tokio::test]
async fn bare_status_is_rewritten_to_json() {
    let (status, _, body) = send(get_req("/v1/teapot")).await;
    assert_eq!(status, StatusCode::IM_A_TEAPOT);
    assert_eq!(body["error"], "invalid_request");
}

#[tokio::test]
async fn retry_after_comes_from_the_error() {
    let (status, headers, body) = send(get_req("/v1/items/0")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[RETRY_AFTER], "7");
    assert_eq!(body["error"], "service_unavailable");
    assert_eq!(body["retry_after"], 7);
}

#[tokio::test]
async fn http_error_carries_extra_headers() {
    let err = HttpError::from(ApiError::new(ErrorCode::Forbidden, "no")).with_header(
        axum::http::HeaderName::from_static("x-extra"),
        HeaderValue::from_static("1"),
    );
    assert_eq!(err.status(), StatusCode::FORBIDDEN);
    let response = axum::response::IntoResponse::into_response(err);
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.headers()["x-extra"], "1");
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
}

#[test]
fn bearer_tokens() {
    let token = |value: &str| {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
        bearer_token(&headers).map(str::to_owned)
    };
    assert_eq!(token("Bearer abc"), Some("abc".into()));
    assert_eq!(token("bearer   abc  "), Some("abc".into()));
    assert_eq!(token("BEARER abc"), Some("abc".into()));
    assert_eq!(token("Basic abc"), None);
    assert_eq!(token("Bearer"), None);
    assert_eq!(token("Bearer   "), None);
    assert_eq!(token("Bearerabc"), None);
    assert_eq!(bearer_token(&HeaderMap::new()), None);
}

#[test]
fn truncation_respects_char_boundaries() {
    assert_eq!(truncate("héllo", 2), "h…");
    assert_eq!(truncate("abc", 3), "abc");
}

/// Every answer is counted by route template (never the raw path), method and status, and
/// timed; unknown paths, extension methods and panics included.
#[tokio::test]
async fn operator_dashboard_http_requests_are_counted_by_route_template_and_status() {
    let _ = crate::metrics::install();
    let get = |path: &str| Request::get(path).body(Body::empty()).expect("request");
    for req in [
        get("/v1/items/42"),
        get("/v1/items/0"),
        get("/v1/panic"),
        get("/v1/no/such/metrics-path"),
        Request::builder()
            .method("BREW")
            .uri("/v1/teapot")
            .body(Body::empty())
            .expect("request"),
    ] {
        let _ = app().oneshot(req).await.expect("infallible");
    }
    let text = crate::metrics::render();
    let series = |labels: &str| {
        text.lines()
            .any(|l| l.starts_with(&format!("amp_http_requests_total{{{labels}}} ")))
    };
    assert!(
        series(r#"method="GET",route="/v1/items/{id}",status="200""#),
        "{text}"
    );
    assert!(
        series(r#"method="GET",route="/v1/items/{id}",status="503""#),
        "{text}"
    );
    assert!(
        series(r#"method="GET",route="/v1/panic",status="500""#),
        "{text}"
    );
    assert!(
        series(r#"method="GET",route="unmatched",status="404""#),
        "{text}"
    );
    assert!(
        series(r#"method="other",route="/v1/teapot",status="405""#),
        "{text}"
    );
    assert!(!text.contains("/v1/items/42"), "{text}");
    assert!(!text.contains("metrics-path"), "{text}");
    assert!(
        text.contains(r#"amp_http_request_duration_seconds_bucket{method="GET",route="/v1/items/{id}",le="0.001"}"#),
        "{text}"
    );
}
