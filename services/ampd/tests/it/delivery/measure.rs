//! Measurements printed with `eprintln!` (run with `--nocapture` to see them); only loose
//! sanity is asserted.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::*;

/// This process's resident set (`VmRSS`), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Push latency: from the start of `POST /v1/route` to the `message.new` frame read by the
/// recipient's client, for 200 sequential messages over one socket.
#[tokio::test]
async fn push_latency_over_one_socket() {
    const N: usize = 200;
    let s = start().await;
    let alice = s.register("acme", "alice").await;
    let bob = s.register("acme", "bob").await;
    let (ws, _) = s.connect(&bob).await;

    // The reader stamps every frame as it arrives.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    let reader = tokio::spawn(async move {
        let mut ws = ws;
        let mut seen = 0;
        while seen < N {
            let Ok(Some(Ok(Message::Text(t)))) =
                tokio::time::timeout(Duration::from_secs(10), ws.next()).await
            else {
                break;
            };
            let at = Instant::now();
            let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("json");
            if v["type"] != "message.new" {
                continue;
            }
            let i: usize = v["data"]["payload"]["message"]
                .as_str()
                .and_then(|m| m.strip_prefix("lat "))
                .and_then(|n| n.parse().ok())
                .expect("index");
            let _ = tx.send((i, at));
            seen += 1;
        }
        ws
    });

    let mut started = HashMap::new();
    let mut answers = Vec::new();
    let all = Instant::now();
    for i in 0..N {
        let t0 = Instant::now();
        started.insert(i, t0);
        let v = s
            .route(
                &alice,
                &bob.address,
                &payload_with(&format!("lat {i}")),
                json!({}),
            )
            .await
            .ok();
        answers.push((
            Instant::now() - t0,
            v["basis"].as_str().unwrap_or("").to_owned(),
        ));
    }
    let elapsed = all.elapsed();
    let _ws = reader.await.expect("reader");
    let mut lat = Vec::new();
    while let Ok((i, at)) = rx.try_recv() {
        lat.push(at - started[&i]);
    }
    assert_eq!(lat.len(), N, "every message pushed once");
    lat.sort();
    let mut route: Vec<Duration> = answers.iter().map(|(d, _)| *d).collect();
    route.sort();
    let written = answers
        .iter()
        .filter(|(_, b)| b == "socket_written")
        .count();
    eprintln!(
        "push latency (route start → frame received), {N} msgs: p50 {:?}, p99 {:?}, max {:?}; \
         route answer p50 {:?}, p99 {:?}; {written}/{N} answers socket_written; {:.0} msg/s sequential",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat[N - 1],
        percentile(&route, 0.5),
        percentile(&route, 0.99),
        N as f64 / elapsed.as_secs_f64(),
    );
    assert_eq!(written, N, "an open socket: every answer socket_written");
    assert!(percentile(&lat, 0.5) < Duration::from_secs(1));
    s.stop().await;
}

/// Idle sockets: how many one in-process `ampd` holds, and that pushes still work among
/// them. Client and server ends both live in this process, so the RSS growth covers both;
/// the clients use 4 KiB read buffers so that most of it is the server's.
#[tokio::test]
async fn many_idle_sockets() {
    const AGENTS: usize = 50;
    const PER_AGENT: usize = 40;
    // More sockets per agent than the default cap (16), which is not what is measured here.
    // All 2,000 come from 127.0.0.1: past the default per-address connection cap (1,024).
    let s = start_with(|c| {
        c.delivery.max_sockets_per_agent = PER_AGENT;
        c.server.connections.max_connections_per_address = 0;
    })
    .await;
    let alice = s.register("acme", "alice").await;
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        agents.push(s.register("idle", &format!("idle{i}")).await);
    }
    let rss_before = rss_kib();
    let opened = Instant::now();
    let url = s.ws_url("/v1/ws");
    let mut sockets = Vec::new();
    for a in &agents {
        let batch = (0..PER_AGENT).map(|_| {
            let (url, key) = (url.clone(), a.api_key.clone());
            async move {
                // Small client buffers, so the growth measured is mostly the server's.
                let config = WebSocketConfig::default()
                    .read_buffer_size(4096)
                    .write_buffer_size(0);
                let (mut ws, _) =
                    tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true)
                        .await
                        .expect("connect");
                auth(&mut ws, &key).await;
                ws
            }
        });
        sockets.extend(futures::future::join_all(batch).await);
    }
    let open_time = opened.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = rss_kib();
    let n = sockets.len();
    eprintln!(
        "idle sockets: {n} open in {open_time:?}; process RSS {} MiB → {} MiB (+{} KiB, {:.1} KiB per socket, client side included)",
        rss_before / 1024,
        rss_after / 1024,
        rss_after.saturating_sub(rss_before),
        rss_after.saturating_sub(rss_before) as f64 / n as f64
    );
    let health = s
        .call(reqwest::Method::GET, "/v1/health", None, None)
        .await
        .ok();
    assert_eq!(health["agents_online"], AGENTS, "{health}");

    // A push still reaches every socket of its recipient.
    let target = &agents[AGENTS / 2];
    let id = id_of(&s.send(&alice, &target.address, "still there?").await);
    let base = (AGENTS / 2) * PER_AGENT;
    for ws in &mut sockets[base..base + PER_AGENT] {
        assert_message_new(&recv(ws).await, &id, false);
    }
    drop(sockets);
    s.stop().await;
}
