//! The HTTP listener every service serves on: HTTP/1.1 (hyper) with bounded time and
//! bounded connections, so slow or greedy clients cost a bounded amount of memory.
//!
//! - A request head must arrive within `header_read_timeout_ms` of the server starting to wait
//!   for it: when the connection opens, and after each response on a kept-alive connection
//!   (hyper runs one timer for both), so the same limit closes slowloris connections and
//!   idle keep-alive connections.
//! - A request body must arrive whole within `body_read_timeout_ms` of its head; a body
//!   still arriving then fails to read (the handler answers 400 and the connection closes).
//!   A whole-body deadline rather than an inactivity timeout: a client sending a byte every
//!   few seconds would pass any inactivity timeout.
//! - At most `max_connections` connections at once and `max_connections_per_address` from
//!   one client address (IPv6 counted per /64, which one client usually holds). A WebSocket
//!   keeps its place until it closes. A connection over a cap is not read: it gets a canned
//!   `503` with `Retry-After` and the spec error body, and is closed.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use amp_proto::{ApiError, ErrorCode};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::Shutdown;
use crate::client_addr::ProxyRange;

/// Connection limits of one listener (`[server.connections]`). Every limit is on by
/// default; 0 turns one off.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Milliseconds a connection has to deliver a complete request head, counted from when
    /// the server starts waiting for one: when the connection opens, and after each response
    /// on a kept-alive connection (so it is also the idle keep-alive timeout). A connection
    /// past it is closed.
    pub header_read_timeout_ms: u64,
    /// Milliseconds a request body has to arrive in whole, counted from its head (at the
    /// default body limit of 520 KiB, 30 s asks for at least ~18 KB/s).
    pub body_read_timeout_ms: u64,
    /// Connections open at once on this listener, WebSockets included; one more is answered
    /// 503 and closed.
    pub max_connections: usize,
    /// Connections open at once from one client address (IPv6: one /64); one more is
    /// answered 503 and closed. Counted on the TCP peer: behind a reverse proxy list it in
    /// `uncapped_addresses`.
    pub max_connections_per_address: usize,
    /// Peers exempt from the per-address cap, as CIDRs or addresses: the reverse proxies in
    /// front, which carry many clients on their connections. Empty: ampd and the cluster's
    /// ingest take `ingest.client_address.trusted_proxies`.
    pub uncapped_addresses: Vec<ProxyRange>,
    /// Seconds a shed client is told to wait (`Retry-After`).
    pub retry_after_secs: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: 20_000,
            body_read_timeout_ms: 30_000,
            max_connections: 50_000,
            max_connections_per_address: 1_024,
            uncapped_addresses: Vec::new(),
            retry_after_secs: 1,
        }
    }
}

fn millis(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// Shed connections being answered at once; past it a shed connection is closed unanswered
/// (a flood must not turn into a task per connection).
const MAX_SHEDDING: usize = 256;
/// How long a shed connection gets to take its 503, and how much of its request is drained
/// (so that closing does not reset the connection before the client read the answer).
const SHED_WAIT: Duration = Duration::from_secs(1);
const SHED_DRAIN: usize = 64 * 1024;

/// Serves `app` on `listener` with `limits` until `shutdown`, then stops accepting and
/// gives open connections `grace` to finish (see [`crate::shutdown::serve`]).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ConnectionLimits,
    shutdown: Shutdown,
    grace: Duration,
) -> io::Result<()> {
    let gate = Arc::new(Gate::new(limits));
    let shedding = Arc::new(Semaphore::new(MAX_SHEDDING));
    let shed_body = Bytes::from(shed_response(limits.retry_after_secs));
    let header_timeout = millis(limits.header_read_timeout_ms);
    let body_timeout = millis(limits.body_read_timeout_ms);
    // Every connection task holds a receiver; the sender sees them all gone when every
    // connection has finished.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, mostly: wait for some to be given back
                    // rather than spin.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        let place = match gate.admit(peer.ip()) {
            Ok(place) => place,
            Err(cap) => {
                metrics::counter!("amp_http_connections_shed_total", "cap" => cap).increment(1);
                if let Ok(permit) = shedding.clone().try_acquire_owned() {
                    let answer = shed_body.clone();
                    tokio::spawn(async move {
                        shed(stream, &answer).await;
                        drop(permit);
                    });
                }
                continue;
            }
        };
        no_delay(&stream);
        let app = app.clone();
        let shutdown = shutdown.clone();
        let open = open_rx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let req = req.map(|body| match body_timeout {
                    Some(t) => Body::new(DeadlineBody::new(body, t)),
                    None => Body::new(body),
                });
                app.clone().oneshot(req)
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let io = TokioIo::new(Counted {
                io: stream,
                _place: place,
            });
            let conn = builder.serve_connection(io, service).with_upgrades();
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::trace!(error = %e, "connection ended with an error");
                    }
                }
                () = shutdown.wait() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(open);
        });
    }
    drop(listener);
    drop(open_rx);
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "draining in-flight requests"
    );
    if tokio::time::timeout(grace, open_tx.closed()).await.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "grace period over with requests still in flight; giving up on them"
        );
    }
    Ok(())
}

/// Sends every frame and answer when it is written. With Nagle's algorithm a WebSocket frame
/// written while the previous one is unacknowledged waits in the kernel for the peer's
/// delayed ACK (up to 40 ms on Linux), after the session counted it as written: push p50 at
/// 2,000/s was 25 ms with it and 2 ms without.
fn no_delay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// Errors of one incoming connection (not of the listener): skip it and accept the next.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The canned answer to a connection over a cap: never read, so the same bytes for all.
fn shed_response(retry_after_secs: u64) -> Vec<u8> {
    let body = ApiError::new(ErrorCode::Unavailable, "too many connections; retry later")
        .body()
        .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: {retry_after_secs}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers a shed connection and closes it, reading (and discarding) a little of what the
/// client sent first: closing a socket with unread data resets it, and the client might
/// then lose the answer.
async fn shed(mut stream: TcpStream, answer: &[u8]) {
    let _ = tokio::time::timeout(SHED_WAIT, async {
        stream.write_all(answer).await?;
        stream.shutdown().await?;
        let mut buf = [0u8; 4096];
        let mut drained = 0;
        while drained < SHED_DRAIN {
            match stream.read(&mut buf).await? {
                0 => break,
                n => drained += n,
            }
        }
        io::Result::Ok(())
    })
    .await;
}

/// The connection counts: in total and per client address.
struct Gate {
    max_total: usize,
    max_per_address: usize,
    uncapped: Vec<ProxyRange>,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    /// Only addresses with open connections: at most `total` entries.
    by_address: HashMap<IpAddr, usize>,
}

impl Gate {
    fn new(limits: &ConnectionLimits) -> Self {
        Self {
            max_total: limits.max_connections,
            max_per_address: limits.max_connections_per_address,
            uncapped: limits.uncapped_addresses.clone(),
            open: Mutex::new(Open::default()),
        }
    }

    /// A place for a connection from `ip`, or the cap it would break.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Place, &'static str> {
        let ip = crate::client_addr::canonical(ip);
        let key = (self.max_per_address > 0 && !self.uncapped.iter().any(|r| r.contains(ip)))
            .then(|| address_key(ip));
        let mut open = self.open.lock();
        if self.max_total > 0 && open.total >= self.max_total {
            return Err("total");
        }
        if let Some(key) = key {
            let n = open.by_address.entry(key).or_default();
            if *n >= self.max_per_address {
                if *n == 0 {
                    open.by_address.remove(&key);
                }
                return Err("per_address");
            }
            *n += 1;
        }
        open.total += 1;
        metrics::gauge!("amp_http_connections_open").increment(1.0);
        Ok(Place {
            gate: self.clone(),
            key,
        })
    }
}

/// The address a connection counts against: IPv4 as is, IPv6 by its /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

/// A connection's place in the counts, given back on drop.
struct Place {
    gate: Arc<Gate>,
    key: Option<IpAddr>,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(key) = self.key
            && let Some(n) = open.by_address.get_mut(&key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.by_address.remove(&key);
            }
        }
        metrics::gauge!("amp_http_connections_open").decrement(1.0);
    }
}

/// The TCP stream with its place: an upgraded connection (a WebSocket) carries the stream
/// away from hyper, and its place goes with it.
struct Counted {
    io: TcpStream,
    _place: Place,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A request body that fails once its deadline passes with data still to come.
struct DeadlineBody {
    body: Incoming,
    deadline: Instant,
    /// Armed on the first wait for data (most bodies are read at once, or are empty).
    sleep: Option<Pin<Box<Sleep>>>,
}

impl DeadlineBody {
    fn new(body: Incoming, timeout: Duration) -> Self {
        Self {
            body,
            deadline: Instant::now() + timeout,
            sleep: None,
        }
    }
}

/// The request body did not arrive within the body read timeout.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within the body read timeout")]
pub struct BodyReadTimeout;

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyReadTimeout.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_address: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: total,
            max_connections_per_address: per_address,
            ..ConnectionLimits::default()
        }
    }

    #[tokio::test]
    async fn accepted_connections_send_without_delay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        assert!(
            !server.nodelay().expect("nodelay"),
            "Nagle is on by default"
        );
        no_delay(&server);
        assert!(server.nodelay().expect("nodelay"));
    }

    #[test]
    fn hardening_gate_caps_per_address_and_in_total_and_gives_places_back() {
        let gate = Arc::new(Gate::new(&limits(3, 2)));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let a1 = gate.admit(a).expect("first");
        let a2 = gate.admit(a).expect("second");
        assert_eq!(gate.admit(a).err(), Some("per_address"));
        let b1 = gate.admit(b).expect("other address");
        assert_eq!(gate.admit(b).err(), Some("total"));
        drop(a1);
        let _a3 = gate.admit(a).expect("a place was given back");
        drop((a2, b1));
        assert_eq!(gate.open.lock().by_address.len(), 1);
    }

    #[test]
    fn hardening_gate_counts_ipv6_per_64_and_skips_uncapped_peers() {
        let mut l = limits(0, 1);
        l.uncapped_addresses = vec!["10.1.0.0/16".parse().expect("range")];
        let gate = Arc::new(Gate::new(&l));
        let _x = gate
            .admit("2001:db8::1".parse().expect("ip"))
            .expect("first");
        assert!(gate.admit("2001:db8::2".parse().expect("ip")).is_err());
        let _y = gate
            .admit("2001:db8:0:1::2".parse().expect("ip"))
            .expect("another /64");
        let proxy: IpAddr = "10.1.2.3".parse().expect("ip");
        let _p: Vec<Place> = (0..10)
            .map(|_| gate.admit(proxy).expect("uncapped"))
            .collect();
        // An IPv4-mapped peer counts as its IPv4 address.
        let _m = gate
            .admit("::ffff:10.9.9.9".parse().expect("ip"))
            .expect("v4");
        assert!(gate.admit("10.9.9.9".parse().expect("ip")).is_err());
    }

    #[test]
    fn hardening_shed_response_is_a_complete_503_with_the_spec_body() {
        let text = String::from_utf8(shed_response(3)).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains("\r\nretry-after: 3\r\n"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["error"], "service_unavailable");
        assert!(v["message"].is_string());
    }
}
