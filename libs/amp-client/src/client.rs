//! [`Client`]: one provider, one pooled HTTP client, every REST call of the protocol.

use std::sync::Arc;
use std::time::Duration;

use amp_proto::SecretKey;
use amp_proto::signing::{SignedFields, sign_message};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use url::Url;

use crate::error::{ClientError, Result};
use crate::identity::Identity;
use crate::types::{
    AckResult, BatchAckResult, Health, PendingCount, PendingPage, ProviderInfo, ReadResult,
    Receipts, Registration, RouteOptions, RouteResult,
};

/// How long a call may take by default (a long-poll gets its `wait` on top).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of one provider. Cloning is cheap (two `Arc`s) and clones share the connection
/// pool, so a load generator makes one and hands clones to its tasks; identities are passed
/// per call, so one client serves any number of agents.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    urls: Arc<Urls>,
    timeout: Duration,
}

/// The fixed endpoints, resolved once.
#[derive(Debug)]
struct Urls {
    /// The API root, `<base>/v1` (or `<base>/api/v1` when given so).
    api: Url,
    register: Url,
    route: Url,
    pending: Url,
    count: Url,
    ack: Url,
    receipts: Url,
    receipts_ack: Url,
    info: Url,
    health: Url,
    ws: Url,
}

impl Client {
    /// A client of the provider at `base_url` (`http://127.0.0.1:8080`, or an API root such
    /// as `https://api.example.test/v1` or `…/api/v1`, as registrations report it).
    ///
    /// Fails when the URL is not an absolute `http(s)` URL.
    pub fn new(base_url: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .user_agent(concat!("amp-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::transport)?;
        Self::with_http(base_url, http)
    }

    /// Like [`Client::new`] with a `reqwest::Client` of the caller's (pool sizes, proxies,
    /// local address for spreading sockets).
    ///
    /// Fails when the URL is not an absolute `http(s)` URL.
    pub fn with_http(base_url: &str, http: reqwest::Client) -> Result<Self> {
        Ok(Self {
            http,
            urls: Arc::new(Urls::new(base_url)?),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same client with another per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The API root all paths are resolved against (`…/v1`).
    pub fn api_url(&self) -> &Url {
        &self.urls.api
    }

    /// The WebSocket URL (`ws(s)://…/v1/ws`).
    pub fn ws_url(&self) -> &Url {
        &self.urls.ws
    }

    /// `GET /v1/health`.
    ///
    /// Fails when the provider is unreachable or answers non-2xx (503 when unhealthy).
    pub async fn health(&self) -> Result<Health> {
        self.call(self.get(&self.urls.health), "health answer")
            .await
    }

    /// `GET /v1/info`.
    ///
    /// Fails when the provider is unreachable or answers non-2xx.
    pub async fn info(&self) -> Result<ProviderInfo> {
        self.call(self.get(&self.urls.info), "info answer").await
    }

    /// `POST /v1/register`: registers `name` with `key`'s public key, in `tenant` (open
    /// mode) or in the user key's tenant (`user_key` = `uk_…`; `tenant` may then be `None`).
    /// Returns the identity to use for every later call.
    ///
    /// Fails with [`ClientError::Api`] on refusal (`name_taken` 409 with suggestions,
    /// `invalid_field`, `unauthorized` for a bad user key, `rate_limited`), or when the
    /// provider is unreachable.
    pub async fn register(
        &self,
        tenant: Option<&str>,
        name: &str,
        key: &SecretKey,
        user_key: Option<&str>,
    ) -> Result<Identity> {
        #[derive(Serialize)]
        struct Body<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            tenant: Option<&'a str>,
            name: &'a str,
            public_key: String,
            key_algorithm: &'static str,
        }
        let body = Body {
            tenant,
            name,
            public_key: key.public().to_pem(),
            key_algorithm: "Ed25519",
        };
        let mut req = self
            .http
            .request(Method::POST, self.urls.register.clone())
            .json(&body);
        if let Some(uk) = user_key {
            req = req.bearer_auth(uk);
        }
        let reg: Registration = self.call(req, "registration answer").await?;
        Identity::new(key.clone(), reg)
    }

    /// `POST /v1/route`: signs and sends a message from `identity` to `to`.
    ///
    /// `payload` is the payload as JSON text (`{"type":…,"message":…,"context":…}`); it is
    /// sent byte for byte as given, and the signature covers `to` exactly as given, so what
    /// the recipient fetches verifies against what was signed.
    ///
    /// Fails with [`ClientError::Invalid`] when `payload` is not JSON, with
    /// [`ClientError::Api`] on refusal (404 `not_found` for an unknown recipient, 400
    /// `signature_invalid`, 409 `duplicate_message`, 429, 507 `mailbox_full`), or when the
    /// provider is unreachable.
    pub async fn route(
        &self,
        identity: &Identity,
        to: &str,
        subject: &str,
        payload: &str,
        opts: &RouteOptions<'_>,
    ) -> Result<RouteResult> {
        let body = signed_route(identity, to, subject, payload, opts)?;
        let bytes = serde_json::to_vec(&body).map_err(|e| ClientError::decode("route body", e))?;
        let req = self
            .authed(Method::POST, &self.urls.route, identity)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(bytes);
        self.call(req, "route answer").await
    }

    /// `GET /v1/messages/pending`: up to `limit` messages (provider default 100), only those
    /// queued after the cursor `after` when given, held up to `wait` (≤ 30 s) for a new one
    /// when the page would be empty. Messages stay pending until acked.
    ///
    /// Fails with [`ClientError::Api`] (410 `cursor_expired`, 429) or when unreachable.
    pub async fn pending(
        &self,
        identity: &Identity,
        limit: Option<usize>,
        after: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<PendingPage> {
        self.pending_as(identity, limit, after, wait).await
    }

    /// [`Client::pending`], the page decoded into the caller's own type: a client that needs
    /// only some of each message (its id, say) declares just those fields, and serde skips
    /// the rest without building it (the provider's `local` annotations, above all).
    ///
    /// Fails as [`Client::pending`] does, and with [`ClientError::Decode`] when the page does
    /// not fit `T`.
    pub async fn pending_as<T: DeserializeOwned>(
        &self,
        identity: &Identity,
        limit: Option<usize>,
        after: Option<&str>,
        wait: Option<Duration>,
    ) -> Result<T> {
        let mut req = self.authed(Method::GET, &self.urls.pending, identity);
        if let Some(l) = limit {
            req = req.query(&[("limit", l)]);
        }
        if let Some(a) = after {
            req = req.query(&[("after", a)]);
        }
        if let Some(w) = wait {
            req = req
                .query(&[("wait", w.as_secs())])
                .timeout(self.timeout + w);
        }
        self.call(req, "pending page").await
    }

    /// `GET /v1/messages/pending/count`: how many messages wait, without their bodies.
    ///
    /// Fails with [`ClientError::Api`] or when unreachable.
    pub async fn count(&self, identity: &Identity) -> Result<PendingCount> {
        self.call(
            self.authed(Method::GET, &self.urls.count, identity),
            "count answer",
        )
        .await
    }

    /// `POST /v1/messages/pending/ack {ids}`: acknowledges (removes) messages; ids not in
    /// the mailbox are reported in `not_found`, ids acked before in `already_acked`.
    ///
    /// Fails with [`ClientError::Api`] (400 for more than 1000 ids) or when unreachable.
    pub async fn ack(&self, identity: &Identity, ids: &[&str]) -> Result<BatchAckResult> {
        #[derive(Serialize)]
        struct Body<'a> {
            ids: &'a [&'a str],
        }
        let req = self
            .authed(Method::POST, &self.urls.ack, identity)
            .json(&Body { ids });
        self.call(req, "ack answer").await
    }

    /// `DELETE /v1/messages/pending/{id}`: acknowledges one message (idempotent).
    ///
    /// Fails with [`ClientError::Api`] (404 `not_found` for an id not in the mailbox) or
    /// when unreachable.
    pub async fn ack_one(&self, identity: &Identity, id: &str) -> Result<AckResult> {
        let url = self.urls.with_segments(&["messages", "pending", id]);
        self.call(self.authed(Method::DELETE, &url, identity), "ack answer")
            .await
    }

    /// `POST /v1/messages/{id}/read`: sends the sender a read receipt. Does not ack.
    ///
    /// Fails with [`ClientError::Api`] (404 when the message is not the caller's) or when
    /// unreachable.
    pub async fn read(&self, identity: &Identity, id: &str) -> Result<ReadResult> {
        let url = self.urls.with_segments(&["messages", id, "read"]);
        self.call(self.authed(Method::POST, &url, identity), "read answer")
            .await
    }

    /// `GET /v1/messages/receipts`: the delivery and read receipts retained for the caller
    /// as sender, after `after` (a `seq`) when given.
    ///
    /// Fails with [`ClientError::Api`] or when unreachable.
    pub async fn receipts(
        &self,
        identity: &Identity,
        after: Option<u64>,
        limit: Option<usize>,
    ) -> Result<Receipts> {
        let mut req = self.authed(Method::GET, &self.urls.receipts, identity);
        if let Some(a) = after {
            req = req.query(&[("after", a)]);
        }
        if let Some(l) = limit {
            req = req.query(&[("limit", l)]);
        }
        self.call(req, "receipts").await
    }

    /// `POST /v1/messages/receipts/ack {upto}`: drops the caller's receipts up to `upto`.
    ///
    /// Fails with [`ClientError::Api`] or when unreachable.
    pub async fn ack_receipts(&self, identity: &Identity, upto: u64) -> Result<()> {
        let req = self
            .authed(Method::POST, &self.urls.receipts_ack, identity)
            .json(&serde_json::json!({ "upto": upto }));
        let _: serde_json::Value = self.call(req, "receipts ack answer").await?;
        Ok(())
    }

    /// Any other call, authenticated as `identity`, answered as JSON: `path` is relative to
    /// the API root (`agents/me`).
    ///
    /// Fails with [`ClientError::Api`] on a non-2xx answer or when unreachable.
    pub async fn call_json<T: DeserializeOwned>(
        &self,
        identity: &Identity,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let url = self.urls.with_segments(&segments);
        let mut req = self.authed(method, &url, identity);
        if let Some(b) = body {
            req = req.json(b);
        }
        self.call(req, "answer").await
    }

    fn get(&self, url: &Url) -> RequestBuilder {
        self.http.get(url.clone()).timeout(self.timeout)
    }

    fn authed(&self, method: Method, url: &Url, identity: &Identity) -> RequestBuilder {
        self.http
            .request(method, url.clone())
            .timeout(self.timeout)
            .header(AUTHORIZATION, identity.bearer().clone())
    }

    /// Sends, and decodes a 2xx JSON body as `T` or any other answer as an API error.
    async fn call<T: DeserializeOwned>(
        &self,
        req: RequestBuilder,
        what: &'static str,
    ) -> Result<T> {
        let resp = req.send().await?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = resp.bytes().await?;
        if status.is_success() {
            serde_json::from_slice(&body).map_err(|e| ClientError::decode(what, e))
        } else {
            Err(api_error(status, retry_after, &body))
        }
    }
}

/// The error of a non-2xx answer: the spec body when there is one, else the status.
pub(crate) fn api_error(status: StatusCode, retry_after: Option<u64>, body: &[u8]) -> ClientError {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Option<serde_json::Value>,
        message: Option<String>,
        field: Option<String>,
    }
    let parsed = serde_json::from_slice::<Body>(body).ok();
    let (error, message, field) = match parsed {
        Some(b) => (
            // `error` is a code string in the spec; some providers put an object there.
            b.error.map(|e| match e {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            }),
            b.message,
            b.field,
        ),
        None => (None, None, None),
    };
    let text = || {
        let t = String::from_utf8_lossy(body);
        let t = t.trim();
        if t.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            t.chars().take(200).collect()
        }
    };
    ClientError::Api {
        status: status.as_u16(),
        message: message.unwrap_or_else(text),
        error: error.unwrap_or_else(|| format!("http_{}", status.as_u16())),
        field,
        retry_after,
    }
}

impl Urls {
    fn new(base: &str) -> Result<Self> {
        let mut api = Url::parse(base.trim())
            .map_err(|e| ClientError::Invalid(format!("provider URL {base:?}: {e}")))?;
        if !matches!(api.scheme(), "http" | "https") || api.cannot_be_a_base() {
            return Err(ClientError::Invalid(format!(
                "provider URL {base:?} must be an http:// or https:// URL"
            )));
        }
        api.set_query(None);
        api.set_fragment(None);
        let path = api.path().trim_end_matches('/').to_owned();
        if path.ends_with("/v1") {
            api.set_path(&path);
        } else {
            api.set_path(&format!("{path}/v1"));
        }
        let mut ws = api.clone();
        let scheme = if api.scheme() == "https" { "wss" } else { "ws" };
        // http→ws and https→wss are both allowed by `Url::set_scheme` (special schemes).
        ws.set_scheme(scheme).map_err(|()| {
            ClientError::Invalid(format!("cannot derive a WebSocket URL from {base:?}"))
        })?;
        let ws = join(&ws, &["ws"]);
        Ok(Self {
            register: join(&api, &["register"]),
            route: join(&api, &["route"]),
            pending: join(&api, &["messages", "pending"]),
            count: join(&api, &["messages", "pending", "count"]),
            ack: join(&api, &["messages", "pending", "ack"]),
            receipts: join(&api, &["messages", "receipts"]),
            receipts_ack: join(&api, &["messages", "receipts", "ack"]),
            info: join(&api, &["info"]),
            health: join(&api, &["health"]),
            ws,
            api,
        })
    }

    fn with_segments(&self, segments: &[&str]) -> Url {
        join(&self.api, segments)
    }
}

/// `base` with path segments appended, each percent-encoded (ids cannot escape the path).
fn join(base: &Url, segments: &[&str]) -> Url {
    let mut u = base.clone();
    if let Ok(mut p) = u.path_segments_mut() {
        p.pop_if_empty().extend(segments);
    }
    u
}

/// The flat route body of spec 08, signed.
#[derive(Serialize)]
pub(crate) struct RouteBody<'a> {
    to: &'a str,
    subject: &'a str,
    priority: &'static str,
    payload: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    in_reply_to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thread_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    signature: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    options: Option<RouteBodyOptions>,
}

#[derive(Serialize)]
struct RouteBodyOptions {
    receipt: bool,
}

/// Validates the payload and signs `from|to|subject|priority|in_reply_to|payload_hash`
/// over exactly the strings that go into the body.
pub(crate) fn signed_route<'a>(
    identity: &Identity,
    to: &'a str,
    subject: &'a str,
    payload: &'a str,
    opts: &RouteOptions<'a>,
) -> Result<RouteBody<'a>> {
    let raw: &RawValue = serde_json::from_str(payload)
        .map_err(|e| ClientError::Invalid(format!("payload is not JSON: {e}")))?;
    let priority = opts.priority.unwrap_or_default().as_str();
    let in_reply_to = opts.in_reply_to.filter(|s| !s.is_empty());
    let fields = SignedFields {
        from: identity.address(),
        to,
        subject,
        priority,
        in_reply_to: in_reply_to.unwrap_or(""),
    };
    let signature = sign_message(identity.key(), &fields, raw.get())
        .map_err(|e| ClientError::Invalid(format!("payload is not JSON: {e}")))?;
    Ok(RouteBody {
        to,
        subject,
        priority,
        payload: raw,
        in_reply_to,
        thread_id: opts.thread_id.filter(|s| !s.is_empty()),
        id: opts.id,
        signature,
        options: opts.receipt.then_some(RouteBodyOptions { receipt: true }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_resolve_to_the_api_root() {
        for (base, api, ws) in [
            (
                "http://127.0.0.1:8080",
                "http://127.0.0.1:8080/v1",
                "ws://127.0.0.1:8080/v1/ws",
            ),
            ("http://h:1/", "http://h:1/v1", "ws://h:1/v1/ws"),
            (
                "https://api.x.test/v1/",
                "https://api.x.test/v1",
                "wss://api.x.test/v1/ws",
            ),
            (
                "https://x.test/api/v1",
                "https://x.test/api/v1",
                "wss://x.test/api/v1/ws",
            ),
            (
                "http://x.test/prefix",
                "http://x.test/prefix/v1",
                "ws://x.test/prefix/v1/ws",
            ),
        ] {
            let u = Urls::new(base).expect(base);
            assert_eq!(u.api.as_str(), api);
            assert_eq!(u.ws.as_str(), ws);
        }
        let u = Urls::new("http://h").expect("url");
        assert_eq!(u.route.as_str(), "http://h/v1/route");
        assert_eq!(u.count.as_str(), "http://h/v1/messages/pending/count");
        assert_eq!(
            u.with_segments(&["messages", "a/b?c", "read"]).as_str(),
            "http://h/v1/messages/a%2Fb%3Fc/read"
        );
        assert!(Urls::new("ftp://h").is_err());
        assert!(Urls::new("not a url").is_err());
    }

    #[test]
    fn error_bodies_map_to_api_errors() {
        let e = api_error(
            StatusCode::NOT_FOUND,
            None,
            br#"{"error":"not_found","message":"recipient not found","field":"to"}"#,
        );
        match e {
            ClientError::Api {
                status,
                error,
                message,
                field,
                ..
            } => {
                assert_eq!(status, 404);
                assert_eq!(error, "not_found");
                assert_eq!(message, "recipient not found");
                assert_eq!(field.as_deref(), Some("to"));
            }
            other => panic!("{other:?}"),
        }
        let e = api_error(
            StatusCode::BAD_GATEWAY,
            Some(3),
            b"<html>bad gateway</html>",
        );
        assert_eq!(e.code(), "http_502");
        assert_eq!(e.message(), "<html>bad gateway</html>");
        let e = api_error(StatusCode::SERVICE_UNAVAILABLE, None, b"");
        assert_eq!(e.message(), "Service Unavailable");
    }
}
