//! HTTP for the end-to-end suites: one answer type, [`Resp`], with the body kept as text (so
//! raw payload bytes can be looked for) and the checks every suite makes on it (a 200 with a
//! JSON body, the spec error body `{error, message, field?}`, the rate-limit headers), and
//! [`call`], one request with an optional bearer key and an optional JSON body.

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

/// One HTTP answer: status, headers and the body as text.
#[derive(Debug)]
pub struct Resp {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The raw body text (lossy UTF-8).
    pub text: String,
}

impl Resp {
    /// Reads a whole answer.
    ///
    /// # Panics
    /// When the body cannot be read.
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("response body");
        Self {
            status,
            headers,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// The body as JSON.
    ///
    /// # Panics
    /// When it is not JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }

    /// The body as JSON, `Value::Null` when it is not JSON.
    pub fn json_or_null(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// A header as text; `None` when absent or not text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a 200 and returns the JSON body.
    ///
    /// # Panics
    /// When the status is not 200 or the body is not JSON.
    #[track_caller]
    pub fn ok(&self) -> Value {
        self.json_with(200)
    }

    /// Asserts `status` and returns the JSON body.
    ///
    /// # Panics
    /// When the status differs or the body is not JSON.
    #[track_caller]
    pub fn json_with(&self, status: u16) -> Value {
        self.expect_status(status);
        self.json()
    }

    /// Asserts the spec error: `status`, a JSON content type, `{error: code, message:
    /// <non-empty>}` and, when present, a string `field`; returns the body.
    ///
    /// # Panics
    /// When any of that does not hold.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        self.expect_status(status);
        self.expect_error_shape();
        let v = self.json();
        assert_eq!(v["error"], code, "expected {status} {code}: {}", self.text);
        v
    }

    /// [`assert_error`](Self::assert_error), and `field` names `field`.
    ///
    /// # Panics
    /// When any of that does not hold.
    #[track_caller]
    pub fn assert_error_field(&self, status: u16, code: &str, field: &str) -> Value {
        let v = self.assert_error(status, code);
        assert_eq!(v["field"], field, "field in {}", self.text);
        v
    }

    /// Asserts the status, printing the body otherwise; returns `self` for chaining.
    ///
    /// # Panics
    /// When the status differs.
    #[track_caller]
    pub fn expect_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status, status,
            "expected {status}, got {} with body {}",
            self.status, self.text
        );
        self
    }

    /// Asserts a spec error with `status` and `code` (as [`assert_error`](Self::assert_error));
    /// returns `self` for chaining.
    ///
    /// # Panics
    /// When it is not that error.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Self {
        self.assert_error(status, code);
        self
    }

    /// Asserts the body is the spec error shape (any code): a JSON content type, a non-empty
    /// `error` and `message`, and a string `field` when there is one.
    ///
    /// # Panics
    /// When it is not.
    #[track_caller]
    pub fn expect_error_shape(&self) -> &Self {
        let ct = self.header("content-type").unwrap_or_default();
        assert!(
            ct.contains("json"),
            "content-type {ct:?}, body {}",
            self.text
        );
        let body = self.json();
        assert!(
            body["error"].as_str().is_some_and(|s| !s.is_empty()),
            "no `error` string in {}",
            self.text
        );
        assert!(
            body["message"].as_str().is_some_and(|s| !s.is_empty()),
            "no `message` string in {}",
            self.text
        );
        if let Some(field) = body.get("field") {
            assert!(
                field.is_string(),
                "`field` is not a string in {}",
                self.text
            );
        }
        self
    }

    /// Asserts `field` equals `name`.
    ///
    /// # Panics
    /// When it does not.
    #[track_caller]
    pub fn expect_field(&self, name: &str) -> &Self {
        assert_eq!(self.json_or_null()["field"], name, "field in {}", self.text);
        self
    }

    /// Asserts the three `X-RateLimit-*` headers are present and numeric.
    ///
    /// # Panics
    /// When one is missing or not a number.
    #[track_caller]
    pub fn expect_rate_headers(&self) -> &Self {
        for h in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            let v = self
                .header(h)
                .unwrap_or_else(|| panic!("missing {h}; headers {:?}", self.headers));
            assert!(v.parse::<u64>().is_ok(), "{h}: {v:?} is not a number");
        }
        self
    }
}

/// `method base_url+path`, with `bearer` as the bearer key and `body` as a JSON body when
/// given; the whole answer.
///
/// # Panics
/// When the request cannot be sent or the body read.
pub async fn call(
    http: &reqwest::Client,
    base_url: &str,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<String>,
) -> Resp {
    let mut req = http.request(method, format!("{base_url}{path}"));
    if let Some(key) = bearer {
        req = req.bearer_auth(key);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    send(req).await
}

/// Sends a prepared request; the whole answer.
///
/// # Panics
/// When the request cannot be sent or the body read.
pub async fn send(req: RequestBuilder) -> Resp {
    Resp::read(req.send().await.expect("request")).await
}
