//! `--mix ws`: hold idle WebSockets (spread over 127.0.0.x source addresses), measure the
//! provider's RSS per socket, then route messages to agents whose first socket times
//! route→frame.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amp_client::{Frame, RouteOptions, SubscribeOptions};
use anyhow::bail;
use futures::StreamExt as _;
use tokio::time::Instant;

use super::mixes::PAYLOAD;
use super::stats::{OpReport, Recorder, Report, SocketReport};
use super::{Ctx, LoadArgs, Phase, source_address};

/// Most sockets one run opens.
const MAX_SOCKETS: u64 = 1_000_000;
/// How long frames of the last pushes may still take to arrive.
const FRAME_GRACE: Duration = Duration::from_secs(3);

/// What the socket tasks share.
struct Shared {
    /// The instant push subjects count from.
    epoch: Instant,
    /// Sockets currently open.
    alive: AtomicU64,
    /// Push frames received by first sockets.
    received: AtomicU64,
    /// route→frame latencies.
    push: Mutex<Recorder>,
}

/// Decrements `alive` when a socket task ends, however it ends.
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The agent socket `j` belongs to: receivers first, then the idle agents in turn.
fn agent_of_socket(j: u64, receivers: u64, n: u64) -> u64 {
    if j < receivers {
        j
    } else {
        receivers + (j - receivers) % (n - receivers)
    }
}

pub(crate) async fn run(ctx: &Ctx, args: &LoadArgs, report: &mut Report) -> anyhow::Result<()> {
    let n = ctx.agents.len() as u64;
    let sockets = args.sockets.unwrap_or(n);
    if sockets > MAX_SOCKETS {
        bail!("--sockets is at most {MAX_SOCKETS}");
    }
    let per_source = args.per_source.max(1);
    let spread = ctx.loopback_v4().is_some();
    let sources = if spread {
        sockets.div_ceil(per_source).max(1)
    } else {
        0
    };
    if spread && source_address(sources.saturating_sub(1)).is_none() {
        bail!("{sockets} sockets at {per_source} per source address need more than 254 addresses");
    }
    if n < 2 {
        bail!("--mix ws needs at least 2 agents (receivers and idle senders)");
    }
    // Agents [0, receivers) hold one socket each and receive the pushes; the other agents
    // hold the idle sockets and send, so idle sockets never get a frame.
    let receivers = (n / 4).clamp(1, 64).min(sockets);
    let pid = ctx.provider_pid(args.pid);
    let rss_before = pid.and_then(super::procinfo::rss_kib);

    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        alive: AtomicU64::new(0),
        received: AtomicU64::new(0),
        push: Mutex::new(Recorder::new()),
    });

    // Open the sockets, `connect_concurrency` at a time, within `open_timeout`.
    let open = Arc::new(Phase::new(
        Duration::from_secs_f64(args.open_timeout.clamp(1.0, 3600.0)),
        Some(sockets),
        None,
    ));
    let bar = ctx.progress.show("open", open.clone(), Some(sockets));
    let holders = Arc::new(Mutex::new(Vec::with_capacity(sockets as usize)));
    let connect_errors = Arc::new(Mutex::new(Recorder::new()));
    let mut openers = Vec::new();
    for _ in 0..args.connect_concurrency.max(1) {
        let (client, agents, shared, open, holders, errors) = (
            ctx.client.clone(),
            ctx.agents.clone(),
            shared.clone(),
            open.clone(),
            holders.clone(),
            connect_errors.clone(),
        );
        openers.push(tokio::spawn(async move {
            let mut rec = Recorder::new();
            while let Some((j, t0)) = open.next().await {
                let agent = &agents[agent_of_socket(j, receivers, n) as usize];
                let local_addr: Option<IpAddr> = if spread {
                    source_address(j / per_source)
                } else {
                    None
                };
                let sub = tokio::time::timeout(
                    Duration::from_secs(30),
                    client.subscribe_with(agent, SubscribeOptions { local_addr }),
                )
                .await;
                let mut sub = match sub {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        open.finished(false);
                        rec.err(e.code());
                        continue;
                    }
                    Err(_) => {
                        open.finished(false);
                        rec.err("timeout");
                        continue;
                    }
                };
                open.finished(true);
                rec.ok(t0.elapsed());
                shared.alive.fetch_add(1, Ordering::Relaxed);
                let primary = j < receivers;
                let shared = shared.clone();
                let task = tokio::spawn(async move {
                    let _alive = AliveGuard(shared.clone());
                    while let Some(frame) = sub.next().await {
                        let Ok(Frame::Message(m)) = frame else {
                            if frame.is_err() {
                                break;
                            }
                            continue;
                        };
                        if !primary {
                            continue;
                        }
                        if let Some(us) = m
                            .envelope
                            .subject
                            .strip_prefix("push ")
                            .and_then(|s| s.parse::<u64>().ok())
                        {
                            let sent = shared.epoch + Duration::from_micros(us);
                            let lat = Instant::now().saturating_duration_since(sent);
                            if let Ok(mut r) = shared.push.lock() {
                                r.ok(lat);
                            }
                            shared.received.fetch_add(1, Ordering::Relaxed);
                        }
                        if sub.ack(m.id()).await.is_err() {
                            break;
                        }
                    }
                });
                if let Ok(mut h) = holders.lock() {
                    h.push(task);
                }
            }
            if let Ok(mut e) = errors.lock() {
                e.merge(&rec);
            }
        }));
    }
    for o in openers {
        let _ = o.await;
    }
    drop(bar);
    let open_seconds = open.start().elapsed().as_secs_f64();
    let opened = shared.alive.load(Ordering::Relaxed);
    // Let the provider settle (allocator, presence writes) before reading its RSS.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss_after = pid.and_then(super::procinfo::rss_kib);
    {
        let e = connect_errors
            .lock()
            .map_err(|_| anyhow::anyhow!("an opener panicked"))?;
        report.ops.insert(
            "connect".into(),
            OpReport::from_recorder(&e, Duration::from_secs_f64(open_seconds)),
        );
    }

    // Pushes: an idle agent → receiver k mod receivers.
    let mut route_rec = Recorder::new();
    let mut sent = 0u64;
    let mut elapsed = Duration::ZERO;
    if receivers > 0 {
        let phase = Arc::new(Phase::new(ctx.duration, ctx.count, ctx.rate));
        let _bar = ctx.progress.show("push", phase.clone(), ctx.count);
        let mut tasks = Vec::new();
        for _ in 0..ctx.concurrency {
            let (client, agents, shared, phase) = (
                ctx.client.clone(),
                ctx.agents.clone(),
                shared.clone(),
                phase.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut rec = Recorder::new();
                while let Some((k, t0)) = phase.next().await {
                    let to = &agents[(k % receivers) as usize];
                    let from = &agents[(receivers + k % (n - receivers)) as usize];
                    let us = t0.saturating_duration_since(shared.epoch).as_micros();
                    let subject = format!("push {us}");
                    let r = client
                        .route(
                            from,
                            to.address(),
                            &subject,
                            PAYLOAD,
                            &RouteOptions::default(),
                        )
                        .await;
                    phase.finished(r.is_ok());
                    match r {
                        Ok(_) => rec.ok(t0.elapsed()),
                        Err(e) => rec.err(e.code()),
                    }
                }
                rec
            }));
        }
        for t in tasks {
            let left = phase
                .hard_deadline()
                .saturating_duration_since(Instant::now());
            let abort = t.abort_handle();
            match tokio::time::timeout(left, t).await {
                Ok(Ok(rec)) => route_rec.merge(&rec),
                _ => {
                    abort.abort();
                    route_rec.err("abandoned");
                }
            }
        }
        elapsed = phase.start().elapsed();
        sent = route_rec.count();
        let grace = Instant::now() + FRAME_GRACE;
        while shared.received.load(Ordering::Relaxed) < sent && Instant::now() < grace {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let held = shared.alive.load(Ordering::Relaxed);
    let received = shared.received.load(Ordering::Relaxed);
    if let Some(h) = holders.lock().ok().map(|mut h| std::mem::take(&mut *h)) {
        for t in h {
            t.abort();
        }
    }
    report.elapsed_seconds = elapsed.as_secs_f64();
    report.primary = "push".into();
    report
        .ops
        .insert("route".into(), OpReport::from_recorder(&route_rec, elapsed));
    if let Ok(p) = shared.push.lock() {
        report
            .ops
            .insert("push".into(), OpReport::from_recorder(&p, elapsed));
    }
    let rss_per_socket_bytes = match (rss_before, rss_after) {
        (Some(b), Some(a)) if opened > 0 => {
            Some(a.saturating_sub(b) as f64 * 1024.0 / opened as f64)
        }
        _ => None,
    };
    report.sockets = Some(SocketReport {
        requested: sockets,
        opened,
        held,
        open_seconds,
        source_addresses: (0..sources)
            .filter_map(source_address)
            .map(|a| a.to_string())
            .collect(),
        provider_pid: pid,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        rss_per_socket_bytes,
        pushes_missing: sent.saturating_sub(received),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receivers_get_one_socket_and_idle_agents_the_rest() {
        let owners: Vec<u64> = (0..7).map(|j| agent_of_socket(j, 2, 5)).collect();
        assert_eq!(owners, vec![0, 1, 2, 3, 4, 2, 3]);
    }
}
