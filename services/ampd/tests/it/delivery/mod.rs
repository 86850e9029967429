//! Real-time delivery against a whole in-process `ampd` (SPEC-CHECKLIST RT-05..RT-13, RT-20,
//! RT-21, NTF-01..NTF-14, Part 2.2, §4.8, §4.16, §4.17, §4.29, §4.30): a real WebSocket
//! client (tokio-tungstenite) on `ws://127.0.0.1:<port>/v1/ws` and a real webhook receiver
//! (an axum server on `127.0.0.1:0`) that records every request and answers with a
//! programmable status sequence.
//!
//! Delays are configured short so the module runs in seconds: a 1 s auth timeout, webhook
//! retries after 0, 300 and 600 ms, a 50 ms job poll.

mod attachments;
mod hardening;
mod hardening_disk;
mod measure;
mod receipts;
mod restart;
mod revocation;
mod security;
mod spec_next;
mod spec_next_idempotency;
mod spec_next_revocation;
mod tarpit;
mod webhook;
mod ws;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amp_proto::Timestamp;
pub(crate) use amp_testkit::agent::{Agent, register};
use amp_testkit::ampd::Ampd;
pub(crate) use amp_testkit::http::{Resp, call};
pub(crate) use amp_testkit::message::{payload_with, signed_body};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use futures::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client WebSocket.
type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The webhook secret every test agent registers.
const SECRET: &str = "whsec_delivery_test_secret";

/// How long a frame the test waits for may take on a loaded machine.
const FRAME_WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// the server

/// This module's delays, on top of the kit's test configuration: short ones, and loopback
/// webhooks allowed.
fn delivery_config(config: &mut ampd::Config) {
    config.ingest.messaging.webhook_wait_ms = 1_500;
    config.ingest.outbound.allow_private = true;
    let d = &mut config.delivery;
    d.auth_timeout_secs = 1;
    d.webhook.retry_delays_ms = vec![0, 300, 600];
    d.webhook.poll_interval_ms = 50;
}

/// Starts `ampd` with the kit's test configuration and [`delivery_config`].
async fn start() -> Ampd {
    start_with(|_| {}).await
}

/// Starts `ampd` with the kit's test configuration and [`delivery_config`], then `tweak`.
async fn start_with(tweak: impl FnOnce(&mut ampd::Config)) -> Ampd {
    Ampd::start_with(|c| {
        delivery_config(c);
        tweak(c);
    })
    .await
}

/// What the delivery tests do through an [`Ampd`], on top of the kit's requests.
trait DeliveryExt {
    /// `ws://127.0.0.1:<port><path>`.
    fn ws_url(&self, path: &str) -> String;
    /// Registers with a webhook at `hook_url` signed with [`SECRET`].
    async fn register_hooked(&self, tenant: &str, name: &str, hook_url: &str) -> Agent;
    /// `POST /v1/route` of a signed message; the answer as it came.
    async fn route(&self, from: &Agent, to: &str, payload: &str, extra: Value) -> Resp;
    /// Routes a plain message and expects 200; returns the answer.
    async fn send(&self, from: &Agent, to: &str, text: &str) -> Value;
    /// `GET /v1/messages/pending?limit=1000` ids.
    async fn pending_ids(&self, who: &Agent) -> Vec<String>;
    /// Acknowledges `id` over REST (`DELETE /v1/messages/pending/{id}`).
    async fn ack(&self, who: &Agent, id: &str);
    /// Connects and authenticates `who` on `/v1/ws`; returns the socket and `connected`.
    async fn connect(&self, who: &Agent) -> (Ws, Value);
}

impl DeliveryExt for Ampd {
    fn ws_url(&self, path: &str) -> String {
        ws_url(self.url(), path)
    }

    async fn register_hooked(&self, tenant: &str, name: &str, hook_url: &str) -> Agent {
        self.register_with(tenant, name, hooked(hook_url)).await
    }

    async fn route(&self, from: &Agent, to: &str, payload: &str, extra: Value) -> Resp {
        let body = signed_body(from, to, "delivery test", payload, extra);
        self.post(from, "/v1/route", Some(body)).await
    }

    async fn send(&self, from: &Agent, to: &str, text: &str) -> Value {
        self.route(from, to, &payload_with(text), json!({}))
            .await
            .ok()
    }

    async fn pending_ids(&self, who: &Agent) -> Vec<String> {
        let v = self.get(who, "/v1/messages/pending?limit=1000").await.ok();
        amp_testkit::message::ids_of(&v)
    }

    async fn ack(&self, who: &Agent, id: &str) {
        self.delete(who, &format!("/v1/messages/pending/{id}"))
            .await
            .ok();
    }

    async fn connect(&self, who: &Agent) -> (Ws, Value) {
        let mut ws = connect(&self.ws_url("/v1/ws")).await;
        let connected = auth(&mut ws, &who.api_key).await;
        assert_eq!(
            connected["data"]["address"],
            who.address.as_str(),
            "{connected}"
        );
        (ws, connected)
    }
}

fn ws_url(http_url: &str, path: &str) -> String {
    format!(
        "ws://{}{path}",
        http_url.strip_prefix("http://").expect("http URL")
    )
}

/// The body of a registration's `delivery` member: a webhook at `hook_url` signed with
/// [`SECRET`].
fn hooked(hook_url: &str) -> Value {
    json!({ "delivery": { "webhook_url": hook_url, "webhook_secret": SECRET } })
}

// ---------------------------------------------------------------------------------------
// the WebSocket client

async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(FRAME_WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    ws
}

/// Sends a text frame.
async fn send_text(ws: &mut Ws, text: impl Into<String>) {
    ws.send(Message::text(text.into()))
        .await
        .expect("send frame");
}

/// Sends the auth frame and expects `connected`.
async fn auth(ws: &mut Ws, key: &str) -> Value {
    send_text(ws, json!({ "type": "auth", "token": key }).to_string()).await;
    let connected = recv(ws).await;
    assert_eq!(connected["type"], "connected", "{connected}");
    assert!(connected["data"]["address"].is_string(), "{connected}");
    assert!(connected["data"]["pending_count"].is_u64(), "{connected}");
    connected
}

/// What the client saw next.
#[derive(Debug)]
enum Frame {
    Json(Value),
    /// A text frame that is not JSON, or a binary frame.
    Other(String),
    /// A close frame: code and reason.
    Close(Option<(u16, String)>),
    /// The stream ended or failed without a close frame.
    End(String),
}

/// The next frame within `within` (ping/pong skipped); `None` when nothing came.
async fn next_frame(ws: &mut Ws, within: Duration) -> Option<Frame> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let m = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(None) => return Some(Frame::End("stream ended".into())),
            Ok(Some(Err(e))) => return Some(Frame::End(e.to_string())),
            Ok(Some(Ok(m))) => m,
        };
        return Some(match m {
            Message::Text(t) => match serde_json::from_str::<Value>(t.as_str()) {
                Ok(v) => Frame::Json(v),
                Err(_) => Frame::Other(t.to_string()),
            },
            Message::Binary(b) => Frame::Other(format!("binary frame of {} bytes", b.len())),
            Message::Close(c) => Frame::Close(c.map(|c| (u16::from(c.code), c.reason.to_string()))),
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
        });
    }
}

/// The next frame, which must be a JSON text frame.
#[track_caller]
fn must_json(f: Option<Frame>) -> Value {
    match f {
        Some(Frame::Json(v)) => v,
        other => panic!("expected a JSON frame, got {other:?}"),
    }
}

async fn recv(ws: &mut Ws) -> Value {
    must_json(next_frame(ws, FRAME_WAIT).await)
}

/// The next frame, which must be JSON of type `kind`.
async fn recv_type(ws: &mut Ws, kind: &str) -> Value {
    let v = recv(ws).await;
    assert_eq!(v["type"], kind, "{v}");
    v
}

/// A short description of frames for failure messages (payloads can be large).
fn brief(frames: &[Value]) -> String {
    let list: Vec<String> = frames
        .iter()
        .map(|f| match f["data"]["id"].as_str() {
            Some(id) => format!("{}({id})", f["type"]),
            None => {
                let mut s = f.to_string();
                s.truncate(200);
                s
            }
        })
        .collect();
    format!("{} frames: [{}]", frames.len(), list.join(", "))
}

/// Reads until the server's close frame (at most `within`); returns the JSON frames seen
/// before it and the close code and reason.
async fn expect_close(ws: &mut Ws, within: Duration) -> (Vec<Value>, u16, String) {
    let deadline = tokio::time::Instant::now() + within;
    let mut frames = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_frame(ws, left).await {
            None => panic!("no close within {within:?}; {}", brief(&frames)),
            Some(Frame::Json(v)) => frames.push(v),
            Some(Frame::Other(mut o)) => {
                o.truncate(200);
                panic!("unexpected frame {o}")
            }
            Some(Frame::Close(Some((code, reason)))) => return (frames, code, reason),
            Some(Frame::Close(None)) => {
                panic!("close frame without a code; {}", brief(&frames))
            }
            Some(Frame::End(e)) => {
                panic!(
                    "socket ended without a close frame ({e}); {}",
                    brief(&frames)
                )
            }
        }
    }
}

/// Every JSON frame arriving within `within` (the socket must stay open).
async fn frames_within(ws: &mut Ws, within: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    let mut frames = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_frame(ws, left).await {
            None => return frames,
            Some(Frame::Json(v)) => frames.push(v),
            Some(other) => {
                let mut o = format!("{other:?}");
                o.truncate(300);
                panic!("unexpected {o} after {}", brief(&frames))
            }
        }
    }
}

/// Asserts a `message.new` frame for `id` with the given replay flag (top level and in data).
#[track_caller]
fn assert_message_new(f: &Value, id: &str, replay: bool) {
    assert_eq!(f["type"], "message.new", "{f}");
    assert_eq!(f["data"]["id"], id, "{f}");
    assert_eq!(f["data"]["envelope"]["id"], id, "{f}");
    assert!(f["data"]["payload"].is_object(), "{f}");
    assert_eq!(f["replay"], replay, "top-level replay: {f}");
    assert_eq!(f["data"]["replay"], replay, "data.replay: {f}");
}

/// Sends `ping` and expects `pong` with an RFC 3339 timestamp.
async fn ping_pong(ws: &mut Ws) {
    send_text(ws, r#"{"type":"ping"}"#).await;
    let pong = recv_type(ws, "pong").await;
    let ts = pong["timestamp"].as_str().unwrap_or_default();
    assert!(Timestamp::parse(ts).is_some(), "pong timestamp: {pong}");
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {v}"))
        .to_owned()
}

// ---------------------------------------------------------------------------------------
// the webhook receiver

/// One request the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct HookRequest {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    at: Instant,
}

impl HookRequest {
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers))
    }

    fn attempt(&self) -> u32 {
        self.header("x-amp-delivery-attempt")
            .parse()
            .expect("attempt number")
    }

    fn message_id(&self) -> &str {
        self.header("x-amp-message-id")
    }
}

struct HookState {
    requests: Mutex<Vec<HookRequest>>,
    /// Statuses to answer, in order; then `fallback`.
    script: Mutex<VecDeque<u16>>,
    fallback: u16,
    arrived: tokio::sync::Notify,
}

/// An axum server on `127.0.0.1:0` recording every `POST /hook`.
pub(crate) struct Hook {
    pub(crate) url: String,
    state: Arc<HookState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn hook_handler(
    State(s): State<Arc<HookState>>,
    headers: HeaderMap,
    body: Bytes,
) -> AxumStatus {
    let status = s
        .script
        .lock()
        .expect("lock")
        .pop_front()
        .unwrap_or(s.fallback);
    s.requests.lock().expect("lock").push(HookRequest {
        headers,
        body,
        at: Instant::now(),
    });
    s.arrived.notify_waiters();
    AxumStatus::from_u16(status).expect("status")
}

/// Starts a receiver answering `script` in order, then `fallback`.
pub(crate) async fn start_hook(script: &[u16], fallback: u16) -> Hook {
    let state = Arc::new(HookState {
        requests: Mutex::new(Vec::new()),
        script: Mutex::new(script.iter().copied().collect()),
        fallback,
        arrived: tokio::sync::Notify::new(),
    });
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook_handler))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind hook");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Hook { url, state, task }
}

impl Hook {
    pub(crate) fn requests(&self) -> Vec<HookRequest> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// Waits until at least `n` requests arrived (at most `within`); returns them all.
    pub(crate) async fn wait_for(&self, n: usize, within: Duration) -> Vec<HookRequest> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.state.arrived.notified();
            let got = self.requests();
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let got = self.requests();
                assert!(
                    got.len() >= n,
                    "webhook got {} of {n} requests within {within:?}: {got:?}",
                    got.len()
                );
                return got;
            }
        }
    }
}

/// `sha256=<lowercase hex HMAC-SHA256(secret, "{timestamp}.{raw body}")>` (spec 05/07).
pub(crate) fn expected_signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
