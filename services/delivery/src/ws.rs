//! WebSocket sessions (spec 05, 08, 12.5; SPEC-CHECKLIST §4.8).
//!
//! The first frame must be `auth` with an API key within the auth timeout (never a key in the
//! URL). Then `connected`, the replay of every unacknowledged message oldest first (each
//! `message.new` with `replay: true`), the receipts retained for the agent, and live pushes as
//! messages are committed (`replay: false`). One socket never gets the same message twice
//! (except as a replay on a new connection). Close codes: 4001 unauthorized, 4008 auth
//! timeout, 1008 first frame not `auth` or slow consumer, 1009 frame over `max_frame_bytes`,
//! 1001 idle or shutting down.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use amp_bus::{Subscription, subjects};
use amp_messaging::RouteRequest;
use amp_messaging::events::{self, ChangeKind, Hint, Pushed};
use amp_messaging::mailbox::{PageBudget, fetch_page};
use amp_messaging::render::write_item;
use amp_proto::relay::StoredMessage;
use amp_proto::{ApiError, ErrorCode, Timestamp};
use amp_store::{AckOutcome, AgentRecord, EntryState, MailboxEntry};
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc, oneshot};

use crate::Inner;

/// Close codes (SPEC-CHECKLIST §4.8).
const CLOSE_UNAUTHORIZED: u16 = 4001;
/// Spec-next 07: a suspended agent's socket (or its tenant's) closes with 4003.
const CLOSE_SUSPENDED: u16 = 4003;
const CLOSE_AUTH_TIMEOUT: u16 = 4008;
const CLOSE_POLICY: u16 = 1008;
const CLOSE_GOING_AWAY: u16 = 1001;
/// RFC 6455: a frame or message over `max_frame_bytes`.
const CLOSE_TOO_BIG: u16 = 1009;
/// Pushed positions remembered per socket to avoid pushing a message twice.
const REMEMBERED_PUSHES: usize = 10_000;
/// Mailbox page size during replay, in messages (its bytes are bounded by the send queue's).
const REPLAY_PAGE: usize = 500;
/// How long replay and receipts wait for room in the send queue before the client counts as
/// a slow consumer (a reading client makes room continuously).
const QUEUE_WAIT: Duration = Duration::from_secs(10);
/// When the second sweep after a hint gap runs.
const RESWEEP_AFTER: Duration = Duration::from_secs(2);
/// When a sweep is tried again after the store did not answer.
const RETRY_SWEEP: Duration = Duration::from_secs(1);

/// Resolves when the bus reports that hints may have been lost; never on a bus that cannot
/// lose them.
pub(crate) async fn hint_gap(gaps: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    if let Some(rx) = gaps
        && rx.changed().await.is_ok()
    {
        return;
    }
    std::future::pending::<()>().await;
}

/// The WebSocket subprotocol of spec 08.
const SUBPROTOCOL: &str = "amp.v1";
/// How long one frame may take to reach the socket before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Socket buffers: small, so idle sockets stay cheap (larger frames still work: the buffers
/// grow for them). The read buffer is allocated up front and held for the socket's life
/// (client frames are mostly small acks); the write buffer only fills while a frame is out.
const READ_BUFFER: usize = 1024;
const WRITE_BUFFER: usize = 4 * 1024;

pub(crate) async fn upgrade(State(inner): State<Arc<Inner>>, ws: WebSocketUpgrade) -> Response {
    let max = inner.config.max_frame_bytes;
    // Spec 08: `amp.v1` is confirmed when the client offers it; a client that offers no
    // subprotocol (or only others) is served as before, without one.
    ws.protocols([SUBPROTOCOL])
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| session(inner, socket))
}

/// A failed read ends the session; a frame over the size cap is answered 1009 (the socket
/// can still take the close), anything else was the connection going away.
fn read_failed(e: axum::Error) -> Result<(), (u16, String)> {
    use tokio_tungstenite::tungstenite::Error;
    match e.into_inner().downcast_ref::<Error>() {
        Some(Error::Capacity(_)) => Err((CLOSE_TOO_BIG, "frame too large".into())),
        _ => Ok(()),
    }
}

/// A frame for the writer task; a pushed message carries its mailbox entry, which the
/// writer hands back once the frame is really written (only then is it `socket_written`).
enum Out {
    Text(String),
    Push(String, Box<MailboxEntry>),
    /// A WebSocket ping frame (the server's liveness probe).
    Ping,
}

impl Out {
    fn len(&self) -> usize {
        match self {
            Out::Text(t) | Out::Push(t, _) => t.len(),
            Out::Ping => 0,
        }
    }
}

/// A queued frame with its share of the socket's byte budget, given back when the writer is
/// done with it (written or dropped).
struct Queued {
    out: Out,
    _room: OwnedSemaphorePermit,
}

/// A frame to a client: `{"type":"error","error":code,"message":…}` (+ `ref`).
fn error_frame(code: &str, message: &str, reference: Option<&Value>) -> String {
    let mut f = json!({ "type": "error", "error": code, "message": message });
    if let Some(r) = reference {
        f["ref"] = r.clone();
    }
    f.to_string()
}

fn api_error_frame(e: &ApiError, reference: Option<&Value>) -> String {
    let mut f = e.body();
    if let Value::Object(m) = &mut f {
        m.insert("type".into(), json!("error"));
        if let Some(r) = reference {
            m.insert("ref".into(), r.clone());
        }
    }
    f.to_string()
}

async fn close_with(socket: &mut WebSocket, frame: Option<String>, code: u16, reason: &str) {
    if let Some(f) = frame {
        let _ = socket.send(Message::Text(f.into())).await;
    }
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason.to_owned()),
        })))
        .await;
}

#[derive(Deserialize)]
struct ClientFrame {
    #[serde(rename = "type")]
    kind: Option<String>,
    token: Option<String>,
    id: Option<Value>,
    #[serde(rename = "ref")]
    reference: Option<Value>,
    data: Option<Box<serde_json::value::RawValue>>,
}

/// A client's text frame; `None` when it is not a JSON object of the frame's shape.
fn parse_frame(text: &str) -> Option<ClientFrame> {
    serde_json::from_str(text).ok()
}

/// The `data` of a `route` frame as a route request (the same body as `POST /v1/route`).
fn parse_route(data: &serde_json::value::RawValue) -> serde_json::Result<RouteRequest> {
    serde_json::from_str(data.get())
}

/// What a client's text frame decodes to, through the same parsing the session uses. For the
/// fuzz targets (`tests/fuzz`).
#[doc(hidden)]
#[derive(Debug)]
pub struct DecodedFrame {
    /// The frame's `type`.
    pub kind: Option<String>,
    /// For a `route` frame with `data`: whether that reads as a route request (or why not).
    pub route: Option<Result<(), String>>,
}

/// Decodes a client's text frame; `None` when it is not a JSON object of the frame's shape.
#[doc(hidden)]
pub fn decode_client_frame(text: &str) -> Option<DecodedFrame> {
    let frame = parse_frame(text)?;
    let route = match (frame.kind.as_deref(), &frame.data) {
        (Some("route"), Some(data)) => {
            Some(parse_route(data).map(|_| ()).map_err(|e| e.to_string()))
        }
        _ => None,
    };
    Some(DecodedFrame {
        kind: frame.kind,
        route,
    })
}

async fn session(inner: Arc<Inner>, mut socket: WebSocket) {
    // Boxed (here and below): an `.await` inlines the callee's state into the caller's
    // future, and the session's future is held for every idle socket; one-off and per-frame
    // work lives on the heap only while it runs.
    let Some((agent, key)) = Box::pin(authenticate(&inner, &mut socket)).await else {
        return;
    };
    let Some(registered) = inner.sockets.open(&agent.id, &agent.tenant) else {
        metrics::counter!("amp_ws_socket_cap_closes_total").increment(1);
        let max = inner.sockets.max_per_agent();
        let message = format!("this agent already has {max} open sockets, the most allowed");
        let f = error_frame("rate_limited", &message, None);
        close_with(
            &mut socket,
            Some(f),
            CLOSE_POLICY,
            "too many sockets for this agent",
        )
        .await;
        return;
    };
    // The tenant's plan: most WebSocket connections of its agents at once.
    if let Err(e) = amp_messaging::quota::open_connection(&inner.acceptor, &agent.tenant).await {
        let f = error_frame(e.code.as_str(), &e.message, None);
        let code = if e.code == amp_proto::ErrorCode::RateLimited {
            CLOSE_POLICY
        } else {
            1011
        };
        close_with(&mut socket, Some(f), code, e.code.as_str()).await;
        drop(registered);
        return;
    }
    metrics::gauge!("amp_ws_sessions").increment(1.0);
    let (sink, stream) = socket.split();
    let (tx, rx) = mpsc::channel::<Queued>(inner.config.send_queue_frames.max(1));
    // The queue is bounded in bytes as well as frames: a frame may be a whole 512 KiB
    // message, and a thousand of them queued for a socket that does not read would be half a
    // gigabyte.
    let queue_bytes = inner.config.send_queue_bytes.clamp(1, u32::MAX as usize);
    let (close_tx, close_rx) = oneshot::channel::<(u16, String)>();
    let (written_tx, written_rx) = mpsc::unbounded_channel::<Box<MailboxEntry>>();
    let writer = tokio::spawn(write_loop(sink, rx, close_rx, written_tx));
    let mut s = Session {
        inner: inner.clone(),
        agent,
        tx,
        room: Arc::new(Semaphore::new(queue_bytes)),
        queue_bytes,
        pushed: BTreeSet::new(),
        swept: None,
        session_id: format!("{:016x}", rand::random::<u64>()),
        written: written_rx,
        key,
        registered,
    };
    let reason = s.run(stream).await;
    // Opened by `open_connection` above (the plan's `connections`, and usage metering).
    inner.acceptor.meter().closed(&s.agent.tenant);
    // Offline first: the agent must not count as reachable while the close is flushed.
    let _ = Box::pin(inner.store.presence_clear(&s.agent.id, &s.session_id)).await;
    amp_messaging::events::registry_changed(
        &inner.bus,
        inner.acceptor.registry(),
        &s.agent.id,
        ChangeKind::Presence,
    )
    .await;
    let _ = close_tx.send(reason);
    let mut writer = writer;
    if tokio::time::timeout(WRITE_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    metrics::gauge!("amp_ws_sessions").decrement(1.0);
}

/// The API key a session authenticated with, to re-check it while the socket is open.
struct SessionKey {
    hash: [u8; 32],
    /// The end of a rotated-out key's grace period.
    valid_until: Option<i64>,
}

/// Waits for the `auth` frame and resolves its key; answers and closes on failure.
async fn authenticate(inner: &Inner, socket: &mut WebSocket) -> Option<(AgentRecord, SessionKey)> {
    let wait = Duration::from_secs(inner.config.auth_timeout_secs);
    let first = match tokio::time::timeout(wait, socket.recv()).await {
        Err(_) => {
            let f = error_frame(
                "unauthorized",
                "no auth frame within the auth timeout",
                None,
            );
            close_with(socket, Some(f), CLOSE_AUTH_TIMEOUT, "auth timeout").await;
            return None;
        }
        Ok(None | Some(Err(_))) => return None,
        Ok(Some(Ok(m))) => m,
    };
    let text = match first {
        Message::Text(t) => t,
        Message::Close(_) => return None,
        _ => {
            let f = error_frame(
                "invalid_request",
                "the first frame must be a JSON auth frame",
                None,
            );
            close_with(socket, Some(f), CLOSE_POLICY, "first frame must be auth").await;
            return None;
        }
    };
    let frame: Option<ClientFrame> = serde_json::from_str(text.as_str()).ok();
    let token = match frame {
        Some(ClientFrame {
            kind: Some(k),
            token: Some(t),
            ..
        }) if k == "auth" => t,
        _ => {
            let f = error_frame(
                "invalid_request",
                "the first frame must be {\"type\":\"auth\",\"token\":…}",
                None,
            );
            close_with(socket, Some(f), CLOSE_POLICY, "first frame must be auth").await;
            return None;
        }
    };
    let now = Timestamp::now().unix_millis();
    match amp_messaging::auth::agent_and_key(&inner.store, &inner.identity.key_pepper, &token, now)
        .await
    {
        Ok(Some((agent, key, hash))) => {
            let checked = match inner.acceptor.tenants().check_caller(&agent.tenant).await {
                Ok(()) => {
                    amp_messaging::suspension::check_caller(
                        inner.acceptor.registry(),
                        &agent.id,
                        now,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            match checked {
                Ok(()) => Some((
                    agent,
                    SessionKey {
                        hash,
                        valid_until: key.valid_until,
                    },
                )),
                Err(e) => {
                    let f = error_frame(e.code.as_str(), &e.message, None);
                    let code = if e.code == amp_proto::ErrorCode::AgentSuspended {
                        CLOSE_SUSPENDED
                    } else {
                        1011
                    };
                    close_with(socket, Some(f), code, e.code.as_str()).await;
                    None
                }
            }
        }
        Ok(None) => {
            let f = error_frame("unauthorized", "Invalid or expired API key", None);
            close_with(socket, Some(f), CLOSE_UNAUTHORIZED, "unauthorized").await;
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "store unavailable during websocket auth");
            let f = error_frame(
                "service_unavailable",
                "service temporarily unavailable",
                None,
            );
            close_with(socket, Some(f), 1011, "unavailable").await;
            None
        }
    }
}

/// Drains the session's queue into the socket; a close request wins over queued frames.
async fn write_loop(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Queued>,
    mut close_rx: oneshot::Receiver<(u16, String)>,
    written: mpsc::UnboundedSender<Box<MailboxEntry>>,
) {
    // One frame to the socket, bounded in time: a client that stops reading cannot hold the
    // session (or its presence) forever.
    async fn write(
        sink: &mut futures::stream::SplitSink<WebSocket, Message>,
        frame: Message,
    ) -> bool {
        // Boxed: the idle writer task then holds only its two receivers.
        matches!(
            Box::pin(tokio::time::timeout(WRITE_TIMEOUT, sink.send(frame))).await,
            Ok(Ok(()))
        )
    }
    loop {
        tokio::select! {
            biased;
            close = &mut close_rx => {
                let (code, reason) = close.unwrap_or((CLOSE_GOING_AWAY, String::new()));
                // Frames already queued (an error frame explaining the close) go first, except
                // for a slow consumer, whose backlog is dropped (never confirmed as written).
                while let Ok(queued) = rx.try_recv() {
                    if code == CLOSE_POLICY {
                        continue;
                    }
                    let (frame, entry) = match queued.out {
                        Out::Text(t) => (t, None),
                        Out::Push(t, e) => (t, Some(e)),
                        Out::Ping => continue,
                    };
                    if !write(&mut sink, Message::Text(frame.into())).await {
                        return;
                    }
                    if let Some(e) = entry {
                        let _ = written.send(e);
                    }
                }
                let reason = Utf8Bytes::from(reason);
                let _ = write(&mut sink, Message::Close(Some(CloseFrame { code, reason }))).await;
                let _ = Box::pin(sink.close()).await;
                return;
            }
            queued = rx.recv() => match queued.map(|q| q.out) {
                Some(Out::Text(t)) => {
                    if !write(&mut sink, Message::Text(t.into())).await {
                        return;
                    }
                }
                Some(Out::Push(t, entry)) => {
                    if !write(&mut sink, Message::Text(t.into())).await {
                        return;
                    }
                    let _ = written.send(entry);
                }
                Some(Out::Ping) => {
                    if !write(&mut sink, Message::Ping(Default::default())).await {
                        return;
                    }
                }
                None => return,
            }
        }
    }
}

struct Session {
    inner: Arc<Inner>,
    agent: AgentRecord,
    tx: mpsc::Sender<Queued>,
    /// Bytes the send queue may still take.
    room: Arc<Semaphore>,
    /// The send queue's byte budget.
    queue_bytes: usize,
    /// Mailbox positions pushed on this socket (bounded).
    pushed: BTreeSet<u64>,
    /// The mailbox has been read in full up to this position (replay and sweeps; live
    /// pushes do not move it): what a sweep reads after.
    swept: Option<u64>,
    session_id: String,
    /// Live pushes the writer has really written, to be confirmed.
    written: mpsc::UnboundedReceiver<Box<MailboxEntry>>,
    /// The key this socket authenticated with.
    key: SessionKey,
    /// This socket's place among the agent's (the cap), and its registry changes.
    registered: crate::sockets::Socket,
}

/// Why a session ended: the close code and reason sent.
type Ended = (u16, String);

impl Session {
    /// Queues a frame; a full queue means a slow consumer, which is disconnected.
    fn send(&self, frame: String) -> Result<(), Ended> {
        self.enqueue(Out::Text(frame))
    }

    /// The share of the byte budget a frame takes (a frame larger than the whole budget
    /// takes all of it, so it still goes, alone).
    fn cost(&self, out: &Out) -> u32 {
        u32::try_from(out.len().clamp(1, self.queue_bytes)).unwrap_or(u32::MAX)
    }

    /// Queues a frame, waiting (bounded) for room: for replay and receipts, which may be
    /// larger than the queue; a client that reads makes room as they go.
    async fn send_waiting(&self, out: Out) -> Result<(), Ended> {
        let deadline = tokio::time::Instant::now() + QUEUE_WAIT;
        let room = self.room.clone().acquire_many_owned(self.cost(&out));
        let queued = match tokio::time::timeout_at(deadline, room).await {
            Ok(Ok(permit)) => Queued { out, _room: permit },
            Ok(Err(_)) => return Err((CLOSE_GOING_AWAY, String::new())),
            Err(_) => return Err(self.slow_consumer()),
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match self.tx.send_timeout(queued, left).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(self.slow_consumer()),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err((CLOSE_GOING_AWAY, String::new())),
        }
    }

    /// Queues a frame without waiting; a full queue (in frames or bytes) means a slow
    /// consumer.
    fn enqueue(&self, out: Out) -> Result<(), Ended> {
        let queued = match self.room.clone().try_acquire_many_owned(self.cost(&out)) {
            Ok(permit) => Queued { out, _room: permit },
            Err(TryAcquireError::NoPermits) => return Err(self.slow_consumer()),
            Err(TryAcquireError::Closed) => return Err((CLOSE_GOING_AWAY, String::new())),
        };
        match self.tx.try_send(queued) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(self.slow_consumer()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err((CLOSE_GOING_AWAY, String::new())),
        }
    }

    fn slow_consumer(&self) -> Ended {
        metrics::counter!("amp_ws_slow_consumer_closes_total").increment(1);
        tracing::info!(agent = %self.agent.id, "closing a slow websocket consumer");
        (CLOSE_POLICY, "slow consumer: send queue overflow".into())
    }

    async fn run(&mut self, mut stream: futures::stream::SplitStream<WebSocket>) -> Ended {
        match Box::pin(self.start()).await {
            Ok(notify) => self
                .serve(&mut stream, notify)
                .await
                .err()
                .unwrap_or((CLOSE_GOING_AWAY, String::new())),
            Err(e) => e,
        }
    }

    /// Presence, subscriptions, `connected`, replay, retained receipts.
    async fn start(&mut self) -> Result<Box<dyn Subscription>, Ended> {
        let inner = self.inner.clone();
        let unavailable = || (1011, "unavailable".to_owned());
        let lease = Duration::from_secs(inner.config.presence_lease_secs);
        let now = Timestamp::now().unix_millis();
        inner
            .store
            .presence_set(
                &self.agent.id,
                &self.session_id,
                now + lease.as_millis() as i64,
            )
            .await
            .map_err(|_| unavailable())?;
        // Routes on every replica stop answering from a cached "offline" before this socket
        // can see its first frame (a client that connects and then sends gets `delivered`).
        amp_messaging::events::registry_changed(
            &inner.bus,
            inner.acceptor.registry(),
            &self.agent.id,
            ChangeKind::Presence,
        )
        .await;
        // Subscribe before reading the mailbox, so nothing committed in between is missed.
        let notify = inner
            .bus
            .subscribe(&subjects::notify_subject(
                &self.agent.tenant,
                &self.agent.id,
            ))
            .await
            .map_err(|_| unavailable())?;
        let count = inner
            .store
            .count(&self.agent.id, now)
            .await
            .map_err(|_| unavailable())?;
        self.send(
            json!({
                "type": "connected",
                "data": { "address": self.agent.address, "pending_count": count.count },
            })
            .to_string(),
        )?;
        self.replay().await?;
        self.push_receipts().await?;
        Ok(notify)
    }

    /// Every unacknowledged message, oldest first, marked `replay: true` (spec 12.5).
    async fn replay(&mut self) -> Result<(), Ended> {
        if self.push_mailbox(None, true).await? {
            Ok(())
        } else {
            Err((1011, "unavailable".to_owned()))
        }
    }

    /// After hints may have been lost (the bus reconnected, the store did not answer for a
    /// hint): pushes, as live messages, what was queued after the last full read of the
    /// mailbox and never pushed here. Not after the earliest live push: two routers write one
    /// mailbox concurrently, so a message whose hint was lost can sit below a later one's
    /// position that was pushed. `false` when the store could not be read (try again later).
    async fn sweep(&mut self) -> Result<bool, Ended> {
        self.push_mailbox(self.swept, false).await
    }

    /// Pushes the mailbox after `after`, page by page, waiting for room in the queue, each
    /// message marked `replay` or not. `false` when the store could not be read.
    async fn push_mailbox(&mut self, mut after: Option<u64>, replay: bool) -> Result<bool, Ended> {
        // A page holds no more than the send queue can: together they bound what one socket
        // keeps in memory however large its mailbox.
        let budget = PageBudget {
            entries: REPLAY_PAGE,
            bytes: self.queue_bytes,
        };
        loop {
            let page = fetch_page(
                &self.inner.store,
                &self.agent.id,
                after,
                budget,
                Timestamp::now().unix_millis(),
            )
            .await;
            let Ok(page) = page else {
                return Ok(false);
            };
            for e in &page.entries {
                self.push_as(e, replay, true).await?;
                after = Some(e.seq);
                // A read sees a prefix of the mailbox (redb and JetStream commit positions
                // in order; a lagging NATS replica answers with an older prefix), so what
                // was read is complete up to here.
                self.swept = self.swept.max(after);
            }
            if page.remaining == 0 || page.entries.is_empty() {
                return Ok(true);
            }
        }
    }

    /// Pushes one entry unless this socket already had it: a replay waits for room in the
    /// queue, a live push does not (overflow closes a slow consumer).
    async fn push(&mut self, entry: &MailboxEntry, replay: bool) -> Result<bool, Ended> {
        self.push_as(entry, replay, replay).await
    }

    /// [`push`](Self::push), choosing separately whether to wait for room in the queue.
    async fn push_as(
        &mut self,
        entry: &MailboxEntry,
        replay: bool,
        wait: bool,
    ) -> Result<bool, Ended> {
        if self.pushed.contains(&entry.seq) {
            return Ok(false);
        }
        // The item is spliced from the stored text (see `write_item`), straight into the frame.
        let mut frame = Vec::with_capacity(entry.data.len() + 256);
        frame.extend_from_slice(br#"{"type":"message.new","replay":"#);
        frame.extend_from_slice(if replay { b"true" } else { b"false" });
        frame.extend_from_slice(br#","data":"#);
        if write_item(&mut frame, entry, Some(replay)).is_err() {
            tracing::error!(agent = %self.agent.id, seq = entry.seq, "unreadable mailbox entry");
            return Ok(false);
        }
        frame.push(b'}');
        let Ok(frame) = String::from_utf8(frame) else {
            return Ok(false);
        };
        if wait {
            self.send_waiting(Out::Text(frame)).await?;
        } else {
            self.enqueue(Out::Push(frame, Box::new(entry.clone())))?;
        }
        self.pushed.insert(entry.seq);
        while self.pushed.len() > REMEMBERED_PUSHES {
            self.pushed.pop_first();
        }
        metrics::counter!("amp_ws_pushes_total").increment(1);
        if !replay {
            // The mailbox-to-socket hop of a live push (a replay's wait is the agent's absence).
            let waited = Timestamp::now().unix_millis() - entry.queued_at;
            metrics::histogram!("amp_ws_push_delay_seconds").record(waited.max(0) as f64 / 1000.0);
        }
        Ok(true)
    }

    /// Receipts retained for this agent as a sender: pushed, then dropped from the store.
    async fn push_receipts(&mut self) -> Result<(), Ended> {
        let now = Timestamp::now().unix_millis();
        let Ok(list) = self
            .inner
            .store
            .receipts(&self.agent.id, None, 1000, now)
            .await
        else {
            return Ok(());
        };
        let mut upto = None;
        for r in &list {
            self.send_waiting(Out::Text(r.data.clone())).await?;
            upto = Some(r.seq);
        }
        if let Some(upto) = upto {
            // Written to the socket's queue: the receipt counts as delivered (spec 12.2's
            // retention ends when it reaches the sender).
            let _ = self.inner.store.drop_receipts(&self.agent.id, upto).await;
        }
        Ok(())
    }

    async fn serve(
        &mut self,
        stream: &mut futures::stream::SplitStream<WebSocket>,
        mut notify: Box<dyn Subscription>,
    ) -> Result<(), Ended> {
        let inner = self.inner.clone();
        let idle = Duration::from_secs(inner.config.idle_timeout_secs);
        let mut idle_deadline = tokio::time::Instant::now() + idle;
        // The server's pings: the next one, and when the peer must have answered one sent.
        let ping_every = Duration::from_secs(inner.config.ping_interval_secs);
        let ping_timeout = Duration::from_secs(inner.config.ping_timeout_secs.max(1));
        let mut ping_at = (!ping_every.is_zero()).then(|| tokio::time::Instant::now() + ping_every);
        let mut pong_due: Option<tokio::time::Instant> = None;
        let lease = Duration::from_secs(inner.config.presence_lease_secs.max(3));
        let resync = Duration::from_secs(inner.config.resync_secs);
        // One ticker for both chores: the presence renewal and the periodic mailbox sweep.
        let period = if resync.is_zero() {
            lease / 3
        } else {
            (lease / 3).min(resync)
        };
        let mut renew = tokio::time::interval(period);
        renew.tick().await;
        let started = tokio::time::Instant::now();
        let (mut renew_at, mut sweep_at) = (started + lease / 3, started + resync);
        let mut gaps = inner.bus.hint_gaps();
        // A second sweep a little after a gap: interest in the notify subject takes a moment
        // to reach every node of a NATS cluster after a reconnect.
        let mut resweep: Option<tokio::time::Instant> = None;
        // The key is re-checked on every registry change of the agent, after possibly lost
        // changes, periodically, and when a rotated-out key's grace ends.
        let mut recheck_at = self.next_recheck();
        // A suspension of the agent's tenant closes the socket within the gate's bound (the
        // process's one watch of its sockets' tenants, `sockets::watch_tenants`).
        loop {
            tokio::select! {
                Ok(()) = self.registered.suspended.changed() => {
                    if *self.registered.suspended.borrow_and_update() {
                        tracing::info!(tenant = %self.agent.tenant, agent = %self.agent.id, "socket closed: tenant suspended");
                        let _ = self.send(error_frame("agent_suspended", &format!("this agent's tenant '{}' is suspended by the provider", self.agent.tenant), None));
                        return Err((CLOSE_SUSPENDED, "agent_suspended".into()));
                    }
                }
                () = hint_gap(&mut gaps) => {
                    let done = Box::pin(self.sweep()).await?;
                    let after = if done { RESWEEP_AFTER } else { RETRY_SWEEP };
                    resweep = Some(tokio::time::Instant::now() + after);
                }
                () = tokio::time::sleep_until(resweep.unwrap_or_else(tokio::time::Instant::now)), if resweep.is_some() => {
                    resweep = None;
                    if !Box::pin(self.sweep()).await? {
                        resweep = Some(tokio::time::Instant::now() + RETRY_SWEEP);
                    }
                }
                () = inner.shutdown.wait() => {
                    return Err((CLOSE_GOING_AWAY, "server shutting down".into()));
                }
                () = tokio::time::sleep_until(idle_deadline) => {
                    return Err((CLOSE_GOING_AWAY, "idle timeout".into()));
                }
                () = tokio::time::sleep_until(ping_at.unwrap_or_else(tokio::time::Instant::now)), if ping_at.is_some() => {
                    let now = tokio::time::Instant::now();
                    ping_at = Some(now + ping_every);
                    pong_due.get_or_insert(now + ping_timeout);
                    self.enqueue(Out::Ping)?;
                }
                () = tokio::time::sleep_until(pong_due.unwrap_or_else(tokio::time::Instant::now)), if pong_due.is_some() => {
                    metrics::counter!("amp_ws_ping_timeout_closes_total").increment(1);
                    tracing::info!(agent = %self.agent.id, "closing a websocket whose peer stopped answering pings");
                    return Err((CLOSE_GOING_AWAY, "ping timeout".into()));
                }
                now = renew.tick() => {
                    if now >= renew_at {
                        renew_at = now + lease / 3;
                        let until = Timestamp::now().unix_millis() + lease.as_millis() as i64;
                        let _ = Box::pin(inner.store.presence_set(&self.agent.id, &self.session_id, until)).await;
                    }
                    if !resync.is_zero() && now >= sweep_at {
                        sweep_at = now + resync;
                        let _ = Box::pin(self.sweep()).await?;
                    }
                }
                frame = stream.next() => {
                    pong_due = None;
                    match frame {
                        None => return Ok(()),
                        Some(Err(e)) => return read_failed(e),
                        Some(Ok(Message::Close(_))) => return Ok(()),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                            idle_deadline = tokio::time::Instant::now() + idle;
                        }
                        Some(Ok(Message::Binary(_))) => {
                            idle_deadline = tokio::time::Instant::now() + idle;
                            self.send(error_frame("invalid_request", "binary frames are not supported; send JSON text frames", None))?;
                        }
                        Some(Ok(Message::Text(t))) => {
                            idle_deadline = tokio::time::Instant::now() + idle;
                            Box::pin(self.client_frame(t.as_str())).await?;
                        }
                    }
                }
                Some(entry) = self.written.recv() => {
                    Box::pin(self.confirm_push(&entry)).await;
                }
                hint = notify.next() => match hint {
                    Some(m) => {
                        // The push continues the trace of the message the router hinted at.
                        let span = tracing::debug_span!(
                            target: amp_runtime::telemetry::TRACE_TARGET,
                            "amp.delivery.push",
                            otel.kind = "consumer",
                            tenant = %self.agent.tenant,
                            agent = %self.agent.id,
                        );
                        amp_runtime::telemetry::set_parent(&span, m.trace_context());
                        if Box::pin(tracing::Instrument::instrument(self.on_hint(&m.payload), span)).await? {
                            resweep.get_or_insert_with(|| tokio::time::Instant::now() + RETRY_SWEEP);
                        }
                    }
                    None => return Err((1011, "notify stream ended".into())),
                },
                Ok(()) = self.registered.changed.changed() => {
                    Box::pin(self.recheck()).await?;
                    recheck_at = self.next_recheck();
                }
                Ok(()) = self.registered.everyone.changed() => {
                    Box::pin(self.recheck()).await?;
                    recheck_at = self.next_recheck();
                }
                () = tokio::time::sleep_until(recheck_at) => {
                    Box::pin(self.recheck()).await?;
                    recheck_at = self.next_recheck();
                }
            }
        }
    }

    /// Handles a hint; `true` when the store could not be read, so the mailbox must be swept
    /// shortly (the hint itself is gone).
    async fn on_hint(&mut self, payload: &Bytes) -> Result<bool, Ended> {
        match serde_json::from_slice::<Hint>(payload) {
            Ok(Hint::Message { id, seq }) => {
                if self.pushed.contains(&seq) {
                    return Ok(false);
                }
                // The mailbox is the truth: push only what is still queued.
                let entry = match self
                    .inner
                    .store
                    .entry(&self.agent.id, &id, Timestamp::now().unix_millis())
                    .await
                {
                    Ok(Some(EntryState::Queued(e))) => e,
                    Ok(_) => return Ok(false),
                    Err(_) => return Ok(true),
                };
                // Confirmed (socket_written, receipts) once the writer has written it.
                self.push(&entry, false).await?;
                Ok(false)
            }
            Ok(Hint::Receipts) => self.push_receipts().await.map(|()| false),
            Err(_) => Ok(false),
        }
    }

    /// Tells a route answer waiting for it, and the sender if it asked for a receipt.
    async fn confirm_push(&self, entry: &MailboxEntry) {
        let inner = &self.inner;
        let at = Timestamp::now().to_rfc3339();
        let pushed = Pushed {
            id: entry.message_id.clone(),
            method: "websocket".into(),
            basis: "socket_written".into(),
            at,
        };
        if let Ok(body) = serde_json::to_vec(&pushed) {
            let subject = events::delivered_subject(&self.agent.tenant, &self.agent.id);
            let _ = inner.bus.notify(&subject, Bytes::from(body)).await;
        }
        if let Ok(message) = serde_json::from_str::<StoredMessage>(&entry.data)
            && let Err(e) = events::delivered_receipt(
                &inner.store,
                &inner.bus,
                &inner.identity.domain,
                &self.agent,
                &message,
                "websocket",
                "socket_written",
            )
            .await
        {
            tracing::warn!(error = %e, "delivery receipt not retained");
        }
    }

    /// When the key is next re-checked: after `reauth_secs`, or when a rotated-out key's
    /// grace ends, whichever is first.
    fn next_recheck(&self) -> tokio::time::Instant {
        let period = Duration::from_secs(self.inner.config.reauth_secs.max(1));
        let mut at = tokio::time::Instant::now() + period;
        if let Some(until) = self.key.valid_until {
            let left = until.saturating_sub(Timestamp::now().unix_millis()).max(0);
            at = at.min(tokio::time::Instant::now() + Duration::from_millis(left as u64));
        }
        at
    }

    /// Closes the socket with 4003 `agent_suspended` when the agent is suspended (spec-next
    /// 07), read from the store itself: this runs on the agent's suspension event, which may
    /// arrive here before the process's cache has dropped its entry. A store that does not
    /// answer keeps the socket until the next check.
    async fn recheck_suspension(&mut self, now: i64) -> Result<(), Ended> {
        use amp_store::suspension::Suspensions as _;
        match self.inner.store.suspension(&self.agent.id).await {
            Ok(Some(s)) if s.active_at(now) => {
                let e = amp_messaging::suspension::refusal(ErrorCode::AgentSuspended, &s);
                tracing::info!(tenant = %self.agent.tenant, agent = %self.agent.id, "socket closed: agent suspended");
                let _ = self.send(error_frame(e.code.as_str(), &e.message, None));
                Err((CLOSE_SUSPENDED, "agent_suspended".into()))
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "cannot re-check a websocket's suspension");
                Ok(())
            }
        }
    }

    /// Whether the key still authenticates this agent: a revoked key, a rotated-out one past
    /// its grace, or a deregistered agent closes the socket (4001). A store that does not
    /// answer keeps the socket until the next check.
    async fn recheck(&mut self) -> Result<(), Ended> {
        let now = Timestamp::now().unix_millis();
        self.recheck_suspension(now).await?;
        match self.inner.store.agent_by_api_key(&self.key.hash).await {
            Ok(Some((agent, key)))
                if agent.id == self.agent.id && agent.is_active() && key.is_valid_at(now) =>
            {
                self.key.valid_until = key.valid_until;
                self.agent = agent;
                Ok(())
            }
            Ok(_) => {
                metrics::counter!("amp_ws_revoked_closes_total").increment(1);
                let _ = self.send(error_frame(
                    "unauthorized",
                    "the API key was revoked or rotated out, or the agent deregistered",
                    None,
                ));
                Err((CLOSE_UNAUTHORIZED, "unauthorized".into()))
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot re-check a websocket's key");
                Ok(())
            }
        }
    }

    async fn client_frame(&mut self, text: &str) -> Result<(), Ended> {
        let frame = match parse_frame(text) {
            Some(f) => f,
            None => {
                return self.send(error_frame(
                    "invalid_request",
                    "frame is not a JSON object",
                    None,
                ));
            }
        };
        let reference = frame
            .reference
            .clone()
            .or_else(|| match frame.kind.as_deref() {
                Some("route") => frame.id.clone(),
                _ => None,
            });
        match frame.kind.as_deref() {
            Some("ping") => self.send(
                json!({ "type": "pong", "timestamp": Timestamp::now().to_rfc3339() }).to_string(),
            ),
            Some("ack" | "message.ack") => {
                let id = match frame.id {
                    Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => s,
                    _ => {
                        return self.send(error_frame(
                            "invalid_field",
                            "ack needs an id of 1-128 characters",
                            reference.as_ref(),
                        ));
                    }
                };
                self.ack(id, reference.as_ref()).await
            }
            Some("route") => self.route(frame.data, reference.as_ref()).await,
            Some("auth") => self.send(error_frame(
                "invalid_request",
                "already authenticated",
                reference.as_ref(),
            )),
            _ => self.send(error_frame(
                "invalid_request",
                "unknown frame type; expected ping, ack, message.ack or route",
                reference.as_ref(),
            )),
        }
    }

    /// The same idempotent transition as the REST acks.
    async fn ack(&mut self, id: String, reference: Option<&Value>) -> Result<(), Ended> {
        let inner = &self.inner;
        let out = amp_messaging::mailbox::ack(
            &inner.store,
            &inner.bus,
            inner.acceptor.meter(),
            &inner.identity.domain,
            &self.agent,
            std::slice::from_ref(&id),
            Timestamp::now().unix_millis(),
        )
        .await;
        let frame = match out.as_deref() {
            Ok([AckOutcome::Acked]) => ack_frame(&id, false, reference),
            Ok([AckOutcome::AlreadyAcked]) => ack_frame(&id, true, reference),
            Ok(_) => error_frame("not_found", "no such message in this mailbox", reference),
            Err(_) => error_frame(
                "service_unavailable",
                "service temporarily unavailable",
                reference,
            ),
        };
        self.send(frame)
    }

    /// The same validation and answer as `POST /v1/route`.
    async fn route(
        &mut self,
        data: Option<Box<serde_json::value::RawValue>>,
        reference: Option<&Value>,
    ) -> Result<(), Ended> {
        let inner = self.inner.clone();
        let Some(data) = data else {
            return self.send(api_error_frame(&ApiError::missing("data"), reference));
        };
        let limit = inner.acceptor.check_rate(&self.agent.id).await;
        if !limit.allowed {
            let e = ApiError::new(ErrorCode::RateLimited, "too many messages; slow down")
                .with_extra("retry_after", json!(limit.retry_after_secs));
            return self.send(api_error_frame(&e, reference));
        }
        let request = match parse_route(&data) {
            Ok(r) => r,
            Err(e) => {
                let e = ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("invalid route data: {e}"),
                );
                return self.send(api_error_frame(&e, reference));
            }
        };
        // Acceptance waits for the durable write; the session keeps serving meanwhile only
        // through its queue, which is fine for a request the client is waiting on.
        let frame = match inner.acceptor.accept(&self.agent, request).await {
            Ok(answer) => {
                let mut f = json!({ "type": "route.result", "data": answer.body });
                if let Some(r) = reference {
                    f["ref"] = r.clone();
                }
                f.to_string()
            }
            Err(e) => {
                let mut e = e;
                if e.code == ErrorCode::NotFound && e.field.as_deref() == Some("to") {
                    // The WebSocket's name for an unknown recipient (spec 08).
                    e.code = ErrorCode::InvalidRecipient;
                }
                api_error_frame(&e, reference)
            }
        };
        self.send(frame)
    }
}

fn ack_frame(id: &str, already: bool, reference: Option<&Value>) -> String {
    let mut f = json!({
        "type": "message.acked",
        "data": { "id": id, "acknowledged": true, "already_acked": already },
    });
    if let Some(r) = reference {
        f["ref"] = r.clone();
    }
    f.to_string()
}
