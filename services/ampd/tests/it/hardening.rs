//! Connection limits of the listener (`[server.connections]`), against a real `ampd` on
//! 127.0.0.1 spoken to over raw TCP: slowloris heads, slow bodies, idle keep-alive
//! connections, and the caps on connections in total and per client address.
//!
//! The WebSocket limits (auth deadline, send queue, frame size) are in
//! `delivery::hardening`.

use std::time::{Duration, Instant};

use amp_runtime::listener::ConnectionLimits;
use amp_testkit::ampd::Ampd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts `ampd` (the kit's test configuration) with `limits` on its listener.
async fn start(limits: ConnectionLimits) -> Ampd {
    Ampd::start_with(|c| c.server.connections = limits).await
}

/// A raw TCP connection to `s`.
async fn open(s: &Ampd) -> TcpStream {
    TcpStream::connect(s.addr()).await.expect("connect")
}

/// Limits with everything long or off, for a test to shorten the one it is about.
fn relaxed() -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout_ms: 60_000,
        body_read_timeout_ms: 60_000,
        max_connections: 0,
        max_connections_per_address: 0,
        ..ConnectionLimits::default()
    }
}

/// A keep-alive `GET path` on `c`; the whole response (head and `content-length` body).
async fn get(c: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
    c.write_all(request.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(
            n > 0,
            "closed mid-answer: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().expect("length"))
                })
                .expect("a content-length");
            if body.len() >= length {
                return text;
            }
        }
    }
}

/// Reads until the server closes `c` (EOF or reset); what it sent and when it closed.
/// Panics when it is still open after `within`.
async fn until_closed(c: &mut TcpStream, within: Duration) -> (String, Instant) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
            Err(_) => panic!(
                "still open after {within:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0) | Err(_)) => {
                return (String::from_utf8_lossy(&got).into_owned(), Instant::now());
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// The reproduction, scaled down: connections that send half a request head (or
/// nothing) are closed at the header timeout, not kept open.
#[tokio::test]
async fn hardening_slowloris_heads_are_closed_at_the_header_timeout() {
    let s = start(ConnectionLimits {
        header_read_timeout_ms: 700,
        ..relaxed()
    })
    .await;
    let started = Instant::now();
    let mut conns = Vec::new();
    for i in 0..50 {
        let mut c = open(&s).await;
        if i % 5 != 0 {
            c.write_all(b"GET /v1/info HTTP/1.1\r\nhost: test\r\nx-slow: ")
                .await
                .expect("write half a head");
        }
        conns.push(c);
    }
    let mut last = started;
    for c in &mut conns {
        let (_, closed) = until_closed(c, Duration::from_secs(5)).await;
        last = last.max(closed);
    }
    let took = last - started;
    eprintln!("slowloris: 50 connections all closed {took:?} after the first opened");
    assert!(
        took >= Duration::from_millis(600),
        "closed after {took:?}, before the 700 ms header timeout"
    );
    assert!(
        took < Duration::from_secs(3),
        "the last closed after {took:?}"
    );
    // The server still serves.
    let mut c = open(&s).await;
    assert!(get(&mut c, "/healthz").await.starts_with("HTTP/1.1 200"));
    s.stop().await;
}

/// A body that trickles in (a byte every 100 ms of a declared 2,000) is cut at the body
/// timeout: the request fails and the connection closes, long before the body could end.
#[tokio::test]
async fn hardening_a_slow_body_is_cut_at_the_body_timeout() {
    let s = start(ConnectionLimits {
        body_read_timeout_ms: 800,
        ..relaxed()
    })
    .await;
    let c = open(&s).await;
    let (mut reader, mut writer) = c.into_split();
    let head = "POST /v1/register HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
                content-length: 2000\r\n\r\n{\"tenant\":";
    writer.write_all(head.as_bytes()).await.expect("write head");
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for _ in 0..2000 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf)).await {
            Err(_) => panic!("the slow body was not cut within 10 s"),
            Ok(Ok(0) | Err(_)) => break started.elapsed(),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    };
    trickle.abort();
    let answer = String::from_utf8_lossy(&got);
    eprintln!("slow body: closed after {closed:?} with {answer:?}");
    assert!(
        closed >= Duration::from_millis(700),
        "cut after {closed:?}, before the 800 ms body timeout"
    );
    assert!(closed < Duration::from_secs(5), "cut only after {closed:?}");
    // If an answer came, it is a client error in the spec's shape.
    if !answer.is_empty() {
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("\"error\":"), "{answer}");
    }
    s.stop().await;
}

/// A kept-alive connection left idle after a response is closed at the header timeout.
#[tokio::test]
async fn hardening_an_idle_keep_alive_connection_is_closed() {
    let s = start(ConnectionLimits {
        header_read_timeout_ms: 700,
        ..relaxed()
    })
    .await;
    let mut c = open(&s).await;
    // Two requests on one connection: it is kept alive while used.
    for i in 0..2 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let answer = get(&mut c, "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    let idle_from = Instant::now();
    let (rest, closed) = until_closed(&mut c, Duration::from_secs(5)).await;
    let idle = closed - idle_from;
    eprintln!("idle keep-alive: closed {idle:?} after the last response");
    assert!(
        idle >= Duration::from_millis(600),
        "closed {idle:?} after going idle, before the 700 ms timeout; {rest:?}"
    );
    assert!(
        idle < Duration::from_secs(3),
        "closed only {idle:?} after going idle"
    );
    s.stop().await;
}

/// Reads a shed connection's answer: a 503 with `Retry-After` and the spec error body, sent
/// at once.
async fn expect_shed(c: &mut TcpStream) {
    let (answer, _) = until_closed(c, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nretry-after: 1\r\n"),
        "{answer}"
    );
    let body = answer.split_once("\r\n\r\n").expect("a body").1;
    let v: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(v["error"], "service_unavailable", "{v}");
    assert!(v["message"].is_string(), "{v}");
}

/// The per-address cap: the N+1-th connection from one address is shed with 503; once one
/// closes, a new one is served.
#[tokio::test]
async fn hardening_the_per_address_cap_sheds_the_next_connection() {
    let s = start(ConnectionLimits {
        max_connections_per_address: 4,
        ..relaxed()
    })
    .await;
    // `start` probed readiness on connections it then dropped: wait until they are gone.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = open(&s).await;
        assert!(get(&mut c, "/healthz").await.starts_with("HTTP/1.1 200"));
        held.push(c);
    }
    let mut extra = open(&s).await;
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
        .await;
    expect_shed(&mut extra).await;
    // A half-open connection that sends nothing is shed too (nothing is read before).
    let mut silent = open(&s).await;
    expect_shed(&mut silent).await;

    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = open(&s).await;
    let answer = get(&mut again, "/healthz").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    s.stop().await;
}

/// The total cap sheds the same way whatever the address.
#[tokio::test]
async fn hardening_the_total_cap_sheds_the_next_connection() {
    let s = start(ConnectionLimits {
        max_connections: 3,
        ..relaxed()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = open(&s).await;
        assert!(get(&mut c, "/healthz").await.starts_with("HTTP/1.1 200"));
        held.push(c);
    }
    let mut extra = open(&s).await;
    expect_shed(&mut extra).await;
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = open(&s).await;
    assert!(
        get(&mut again, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    s.stop().await;
}

/// `[server.connections]` loads from a file and from `AMP__SERVER__CONNECTIONS__…` (the
/// bench scripts turn the caps off that way), with unknown keys refused.
#[test]
fn hardening_connection_limits_load_from_file_and_environment() {
    use std::io::Write;
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(
        b"[server.connections]\nheader_read_timeout_ms = 5000\nuncapped_addresses = [\"10.0.0.0/8\"]\n",
    )
    .expect("write");
    let env = vec![(
        "AMP__SERVER__CONNECTIONS__MAX_CONNECTIONS_PER_ADDRESS".to_owned(),
        "0".to_owned(),
    )];
    let cfg: ampd::Config =
        amp_runtime::config::load_with_env(Some(file.path()), "AMP", env, &[]).expect("loads");
    let c = &cfg.server.connections;
    assert_eq!(c.header_read_timeout_ms, 5000);
    assert_eq!(c.max_connections_per_address, 0);
    assert_eq!(
        c.max_connections,
        ConnectionLimits::default().max_connections
    );
    assert!(c.uncapped_addresses[0].contains("10.1.2.3".parse().expect("ip")));

    file.write_all(b"slowloris = 1\n").expect("write");
    let refused: Result<ampd::Config, _> =
        amp_runtime::config::load_with_env(Some(file.path()), "AMP", vec![], &[]);
    assert!(refused.is_err(), "an unknown key is refused");
}
