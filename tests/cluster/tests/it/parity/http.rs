//! A black-box client for the parity checks: raw HTTP with the body kept as text (so raw
//! payload bytes can be looked for), agents registered over HTTP, messages signed exactly as
//! a client signs them, and the spec error body asserted on every refusal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use amp_proto::signing::{SignedFields, canonical_string, payload_hash, sign_message};
use amp_proto::{MessageId, PublicKey, SecretKey, Timestamp};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

/// A payload with nothing special about it.
pub(crate) const PLAIN: &str = r#"{"type":"notification","message":"Hello"}"#;
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

/// One HTTP answer.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) text: String,
}

impl Resp {
    /// The body as JSON.
    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }

    /// The replica nginx sent the request to (`ip:port`).
    pub(crate) fn upstream(&self) -> String {
        self.headers
            .get("x-amp-upstream")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    /// Asserts `status` and returns the JSON body.
    #[track_caller]
    pub(crate) fn ok(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        self.json()
    }

    /// Asserts the spec error: `status`, a JSON content type, `{error: code, message:
    /// <non-empty>}`, and `field` when given.
    #[track_caller]
    pub(crate) fn error(&self, status: u16, code: &str, field: Option<&str>) -> Value {
        assert_eq!(
            self.status, status,
            "expected {status} {code}: {}",
            self.text
        );
        let ct = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(ct.contains("json"), "content-type {ct:?}: {}", self.text);
        let v = self.json();
        assert_eq!(v["error"], code, "{}", self.text);
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "no message: {}",
            self.text
        );
        if let Some(f) = field {
            assert_eq!(v["field"], f, "{}", self.text);
        }
        v
    }
}

/// A registered agent.
#[derive(Clone)]
pub(crate) struct Agent {
    pub(crate) address: String,
    pub(crate) api_key: String,
    pub(crate) key: SecretKey,
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
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        self.send(req).await
    }

    /// Sends a prepared request.
    pub(crate) async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.expect("body");
        Resp {
            status,
            headers,
            text,
        }
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
        let key = SecretKey::generate();
        let r = self
            .register_raw(&json!({
                "tenant": tenant,
                "name": name,
                "public_key": key.public().to_pem(),
                "key_algorithm": "Ed25519",
            }))
            .await;
        let v = r.ok(201);
        Agent {
            address: v["address"].as_str().expect("address").to_owned(),
            api_key: v["api_key"].as_str().expect("api_key").to_owned(),
            key,
        }
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
        let v = r.ok(200);
        (v, r.text)
    }

    /// The ids of `who`'s first 1000 pending messages, oldest first.
    pub(crate) async fn pending_ids(&self, who: &Agent) -> Vec<String> {
        ids_of(&self.pending(who, "?limit=1000").await.0)
    }
}

/// The ids of a pending page.
pub(crate) fn ids_of(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("messages array: {page}"))
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect()
}

/// The item with `id` in a page.
#[track_caller]
pub(crate) fn find<'a>(page: &'a Value, id: &str) -> &'a Value {
    page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {page}"))
}

/// `{"type":"notification","message":<text>}` with `text` JSON-escaped.
pub(crate) fn payload_with(text: &str) -> String {
    format!(
        r#"{{"type":"notification","message":{}}}"#,
        serde_json::to_string(text).expect("string")
    )
}

/// Appends `,"payload":<raw>` to a serialised JSON object.
fn with_payload(obj: &Value, raw_payload: &str) -> String {
    let s = obj.to_string();
    let head = s.strip_suffix('}').expect("object");
    if head.ends_with('{') {
        format!(r#"{head}"payload":{raw_payload}}}"#)
    } else {
        format!(r#"{head},"payload":{raw_payload}}}"#)
    }
}

/// A message to send: the signed fields, the raw payload text and the unsigned extras.
#[derive(Clone)]
pub(crate) struct Msg {
    pub(crate) to: String,
    pub(crate) subject: String,
    pub(crate) priority: Option<String>,
    pub(crate) payload: String,
    pub(crate) id: Option<String>,
    pub(crate) idempotency_key: Option<String>,
}

/// A client timestamp the server must override.
pub(crate) const CLIENT_TIMESTAMP: &str = "2021-02-03T04:05:06Z";

impl Msg {
    pub(crate) fn new(to: &str, subject: &str) -> Self {
        Self {
            to: to.to_owned(),
            subject: subject.to_owned(),
            priority: None,
            payload: PLAIN.to_owned(),
            id: None,
            idempotency_key: None,
        }
    }

    /// An `idempotency_key` (spec-next 04, 08), top level in the flat body.
    pub(crate) fn key(mut self, key: &str) -> Self {
        self.idempotency_key = Some(key.to_owned());
        self
    }

    pub(crate) fn payload(mut self, raw: &str) -> Self {
        self.payload = raw.to_owned();
        self
    }

    pub(crate) fn priority(mut self, p: &str) -> Self {
        self.priority = Some(p.to_owned());
        self
    }

    pub(crate) fn id(mut self, id: &str) -> Self {
        self.id = Some(id.to_owned());
        self
    }

    /// The client signature by `from`'s key over `from`'s address.
    pub(crate) fn sign(&self, from: &Agent) -> String {
        self.sign_with(&from.key, &from.address)
    }

    /// The signature by `key` with `from` as the signed sender address.
    pub(crate) fn sign_with(&self, key: &SecretKey, from: &str) -> String {
        sign_message(
            key,
            &SignedFields {
                from,
                to: &self.to,
                subject: &self.subject,
                priority: self.priority.as_deref().unwrap_or("normal"),
                in_reply_to: "",
            },
            &self.payload,
        )
        .expect("payload is JSON")
    }

    /// The flat body: `from` derived from the key.
    pub(crate) fn flat(&self, signature: Option<&str>) -> String {
        let mut o = json!({ "to": self.to, "subject": self.subject });
        if let Some(p) = &self.priority {
            o["priority"] = json!(p);
        }
        if let Some(i) = &self.id {
            o["id"] = json!(i);
        }
        if let Some(k) = &self.idempotency_key {
            o["idempotency_key"] = json!(k);
        }
        if let Some(s) = signature {
            o["signature"] = json!(s);
        }
        with_payload(&o, &self.payload)
    }

    /// The envelope body, with a client timestamp the server must override.
    pub(crate) fn envelope(&self, from: &str, signature: Option<&str>) -> String {
        let mut env = json!({
            "version": "amp/0.1",
            "from": from,
            "to": self.to,
            "subject": self.subject,
            "priority": self.priority.as_deref().unwrap_or("normal"),
            "timestamp": CLIENT_TIMESTAMP,
            "thread_id": null,
            "in_reply_to": null,
            "expires_at": null,
        });
        if let Some(i) = &self.id {
            env["id"] = json!(i);
        }
        if let Some(s) = signature {
            env["signature"] = json!(s);
        }
        with_payload(&json!({ "envelope": env }), &self.payload)
    }
}

/// Asserts a server-generated id, `msg_<millis>_<lowercase hex>`.
#[track_caller]
pub(crate) fn assert_server_id(id: &str) {
    let (ms, hex) = id
        .strip_prefix("msg_")
        .and_then(|r| r.split_once('_'))
        .unwrap_or_else(|| panic!("id {id} is not msg_<n>_<hex>"));
    assert!(
        !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()),
        "id {id}"
    );
    assert!(
        !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "id {id}"
    );
}

/// Asserts `ampd`'s answer to a route into a mailbox nobody is connected to: 200 `{id,
/// status: "queued", method: "relay", basis: "mailbox_written", thread_id, queued_at,
/// expires_at}`; returns the body.
#[track_caller]
pub(crate) fn assert_mailbox_written(r: &Resp) -> Value {
    let v = r.ok(200);
    assert_eq!(v["status"], "queued", "{v}");
    assert_eq!(v["method"], "relay", "{v}");
    assert_eq!(v["basis"], "mailbox_written", "{v}");
    assert!(v["id"].is_string(), "{v}");
    assert!(v["thread_id"].is_string(), "{v}");
    for f in ["queued_at", "expires_at"] {
        let t = v[f].as_str().unwrap_or_else(|| panic!("{f} missing: {v}"));
        assert!(Timestamp::parse(t).is_some(), "{f} not RFC 3339: {v}");
    }
    v
}

/// The raw `payload` is in the fetched text byte for byte.
#[track_caller]
pub(crate) fn assert_payload_verbatim(page_text: &str, raw_payload: &str) {
    assert!(
        page_text.contains(&format!(r#""payload":{raw_payload}"#)),
        "payload not preserved byte for byte.\nsent: {raw_payload}\ngot: {page_text}"
    );
}

/// Verifies a fetched item's signature as a recipient does, with `sender_public_key`.
#[track_caller]
pub(crate) fn assert_recipient_can_verify(item: &Value, raw_payload: &str) {
    let env = &item["envelope"];
    let pem = item["sender_public_key"]
        .as_str()
        .unwrap_or_else(|| panic!("no sender_public_key: {item}"));
    let key = PublicKey::parse(pem).expect("sender_public_key parses");
    let s = |k: &str| env[k].as_str().unwrap_or("").to_owned();
    let fields = SignedFields {
        from: &s("from"),
        to: &s("to"),
        subject: &s("subject"),
        priority: &s("priority"),
        in_reply_to: &s("in_reply_to"),
    };
    let hash = payload_hash(raw_payload).expect("payload");
    key.verify_b64(canonical_string(&fields, &hash).as_bytes(), &s("signature"))
        .unwrap_or_else(|e| panic!("recipient cannot verify ({e:?}): {item}"));
}
