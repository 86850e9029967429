//! Agents and messages for the cluster tests.

use std::time::Duration;

use amp_client::{Client, Identity, RouteOptions};
use amp_proto::{MessageId, SecretKey, Timestamp};

/// A client of `url` with a short timeout (a killed replica must not hang a test).
pub(crate) fn client(url: &str) -> Client {
    Client::new(url)
        .expect("client")
        .with_timeout(Duration::from_secs(10))
}

/// Registers `name` in `tenant` through `url`.
pub(crate) async fn agent(url: &str, tenant: &str, name: &str) -> Identity {
    client(url)
        .register(Some(tenant), name, &SecretKey::generate(), None)
        .await
        .unwrap_or_else(|e| panic!("register {name}@{tenant}: {e}"))
}

/// A fresh client-chosen message id.
pub(crate) fn message_id() -> String {
    MessageId::generate(Timestamp::now()).to_string()
}

/// Sends a text message with id `id`; the error is the provider's code or the transport's.
pub(crate) async fn send(
    client: &Client,
    from: &Identity,
    to: &str,
    id: &str,
    text: &str,
) -> Result<amp_client::RouteResult, String> {
    let payload = serde_json_payload(text);
    client
        .route(
            from,
            to,
            "cluster test",
            &payload,
            &RouteOptions {
                id: Some(id),
                ..RouteOptions::default()
            },
        )
        .await
        .map_err(|e| e.code().to_owned())
}

fn serde_json_payload(text: &str) -> String {
    let escaped: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .collect();
    format!(r#"{{"type":"notification","message":"{escaped}"}}"#)
}

/// Every message id in `identity`'s mailbox, oldest first, read page by page through `url`
/// (not acknowledged).
pub(crate) async fn mailbox_ids(url: &str, identity: &Identity) -> Vec<String> {
    let client = client(url);
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = client
            .pending(identity, Some(100), after.as_deref(), None)
            .await
            .expect("pending page");
        if page.messages.is_empty() {
            return ids;
        }
        ids.extend(page.messages.iter().map(|m| m.id().to_owned()));
        after = page.next_cursor.clone();
        if after.is_none() {
            return ids;
        }
    }
}

/// A webhook receiver on 127.0.0.1 for the tests of what delivery POSTs (scan callbacks,
/// tenant notifications): records every request, answers the queued statuses in order,
/// then 200. Stops when dropped.
pub(crate) struct Receiver {
    /// Its URL (`http://127.0.0.1:<port>/hook`).
    pub(crate) url: String,
    state: std::sync::Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ReceiverState {
    got: std::sync::Mutex<Vec<(axum::http::HeaderMap, axum::body::Bytes)>>,
    answers: std::sync::Mutex<std::collections::VecDeque<u16>>,
}

impl Receiver {
    /// Starts one that answers `answers` first.
    pub(crate) async fn start(answers: &[u16]) -> Self {
        use axum::extract::State;
        async fn receive(
            State(r): State<std::sync::Arc<ReceiverState>>,
            headers: axum::http::HeaderMap,
            body: axum::body::Bytes,
        ) -> axum::http::StatusCode {
            r.got.lock().expect("lock").push((headers, body));
            let code = r.answers.lock().expect("lock").pop_front().unwrap_or(200);
            axum::http::StatusCode::from_u16(code).expect("status")
        }
        let state = std::sync::Arc::new(ReceiverState::default());
        state
            .answers
            .lock()
            .expect("lock")
            .extend(answers.iter().copied());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url, state, task }
    }

    /// The requests so far: headers and body.
    pub(crate) fn got(&self) -> Vec<(axum::http::HeaderMap, axum::body::Bytes)> {
        self.state.got.lock().expect("lock").clone()
    }

    /// Waits until `n` requests arrived, at most `limit`; `logs` goes in the panic message.
    pub(crate) async fn wait_for(&self, n: usize, limit: Duration, logs: impl Fn() -> String) {
        let start = std::time::Instant::now();
        while self.state.got.lock().expect("lock").len() < n {
            assert!(
                start.elapsed() < limit,
                "{} of {n} requests within {limit:?}\n{}",
                self.state.got.lock().expect("lock").len(),
                logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A request header's value; panics naming it when absent.
pub(crate) fn header<'a>(h: &'a axum::http::HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name}: {h:?}"))
}

/// Whether the request carries the webhook signature of `body` made with `secret`
/// (`X-AMP-Signature: sha256=<HMAC-SHA256(secret, "{X-AMP-Timestamp}.{body}")>`).
pub(crate) fn signed_with(secret: &str, h: &axum::http::HeaderMap, body: &[u8]) -> bool {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(header(h, "x-amp-timestamp").as_bytes());
    mac.update(b".");
    mac.update(body);
    header(h, "x-amp-signature") == format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A call with an operator token (the admin API, or the spec's operator endpoints on the
/// public API): the status and the body (`null` when it is not JSON).
pub(crate) async fn call_with(
    method: reqwest::Method,
    token: &str,
    url: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("operator call");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}
