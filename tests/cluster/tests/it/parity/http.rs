//! A black-box client for the parity checks: raw HTTP with the body kept as text (so raw
//! payload bytes can be looked for), agents registered over HTTP, messages signed exactly as
//! a client signs them, and the spec error body asserted on every refusal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use amp_proto::{MessageId, Timestamp};
pub(crate) use amp_testkit::agent::Agent;
pub(crate) use amp_testkit::http::Resp;
pub(crate) use amp_testkit::message::{
    CLIENT_TIMESTAMP, Msg, assert_payload_verbatim, assert_recipient_can_verify,
    assert_route_answer, assert_server_id, find, ids_of, payload_with,
};
use reqwest::Method;
use serde_json::Value;

/// The whole-body limit both targets enforce (512 KiB + 8 KiB).
pub(crate) const BODY_LIMIT: usize = 532_480;

/// A tenant no other check uses.
pub(crate) fn tenant(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A fresh client-chosen message id.
pub(crate) fn fresh_id() -> String {
    MessageId::generate(Timestamp::now()).to_string()
}

/// What the parity checks read off an answer besides the kit's checks.
pub(crate) trait UpstreamExt {
    /// The replica nginx sent the request to (`ip:port`).
    fn upstream(&self) -> String;
}

impl UpstreamExt for Resp {
    fn upstream(&self) -> String {
        self.header("x-amp-upstream").unwrap_or_default().to_owned()
    }
}

/// Raw HTTP against one base URL (the proxy, or one replica).
#[derive(Clone)]
pub(crate) struct Http {
    pub(crate) base: String,
    client: reqwest::Client,
}

impl Http {
    pub(crate) fn new(base: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("http client");
        Self {
            base: base.to_owned(),
            client,
        }
    }

    /// `method path` with an optional bearer key and an optional JSON body.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<String>,
    ) -> Resp {
        amp_testkit::http::call(&self.client, &self.base, method, path, key, body).await
    }

    /// Sends a prepared request.
    pub(crate) async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        amp_testkit::http::send(req).await
    }

    /// `GET path` with a bearer key: the status and the raw body bytes.
    pub(crate) async fn client_get(&self, path: &str, key: &str) -> (u16, Vec<u8>) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.bytes().await.expect("body").to_vec())
    }

    /// A request builder on `path`.
    pub(crate) fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    pub(crate) async fn get(&self, who: &Agent, path: &str) -> Resp {
        self.call(Method::GET, path, Some(&who.api_key), None).await
    }

    pub(crate) async fn post(&self, who: &Agent, path: &str, body: Option<String>) -> Resp {
        self.call(Method::POST, path, Some(&who.api_key), body)
            .await
    }

    pub(crate) async fn delete(&self, who: &Agent, path: &str) -> Resp {
        self.call(Method::DELETE, path, Some(&who.api_key), None)
            .await
    }

    /// `POST /v1/register` with `body`.
    pub(crate) async fn register_raw(&self, body: &Value) -> Resp {
        self.call(Method::POST, "/v1/register", None, Some(body.to_string()))
            .await
    }

    /// Registers `name` in `tenant` with a fresh key; panics unless 201.
    pub(crate) async fn register(&self, tenant: &str, name: &str) -> Agent {
        amp_testkit::agent::register(&self.client, &self.base, tenant, name, None).await
    }

    /// `POST /v1/route` with a raw body.
    pub(crate) async fn route(&self, from: &Agent, body: String) -> Resp {
        self.post(from, "/v1/route", Some(body)).await
    }

    /// Routes `m` signed by `from` (flat body).
    pub(crate) async fn send_msg(&self, from: &Agent, m: &Msg) -> Resp {
        self.route(from, m.flat(Some(&m.sign(from)))).await
    }

    /// `GET /v1/messages/pending<query>`, expecting 200: the page and its text.
    pub(crate) async fn pending(&self, who: &Agent, query: &str) -> (Value, String) {
        let r = self.get(who, &format!("/v1/messages/pending{query}")).await;
        let v = r.ok();
        (v, r.text)
    }

    /// The ids of `who`'s first 1000 pending messages, oldest first.
    pub(crate) async fn pending_ids(&self, who: &Agent) -> Vec<String> {
        ids_of(&self.pending(who, "?limit=1000").await.0)
    }
}

/// Asserts `ampd`'s answer to a route into a mailbox nobody is connected to: 200 `{id,
/// status: "queued", method: "relay", basis: "mailbox_written", thread_id, queued_at,
/// expires_at}`; returns the body.
#[track_caller]
pub(crate) fn assert_mailbox_written(r: &Resp) -> Value {
    let v = r.ok();
    assert_route_answer(&v);
    v
}
