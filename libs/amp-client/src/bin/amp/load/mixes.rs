//! The `route`, `pickup` and `health` mixes.

use std::sync::Arc;
use std::time::Duration;

use amp_client::{Client, Identity, RouteOptions};
use tokio::time::Instant;

use super::stats::{OpReport, Recorder, Report};
use super::{Ctx, LoadArgs, Phase};

/// The payload every generated message carries (about 200 bytes, with a nested context).
pub(crate) const PAYLOAD: &str = r#"{"type":"request","message":"Please review the OAuth changes in lib/auth.ts before Friday.","context":{"repo":"agents-web","pr":42,"files":["lib/auth.ts","app/api/auth/callback/route.ts"],"score":0.75}}"#;

/// Routes one signed message from agent `k` to agent `k + 1`.
pub(crate) async fn route_one(
    client: &Client,
    agents: &[Identity],
    k: u64,
    subject: &str,
) -> amp_client::Result<()> {
    let n = agents.len() as u64;
    let from = &agents[(k % n) as usize];
    let to = &agents[((k + 1) % n) as usize];
    client
        .route(
            from,
            to.address(),
            subject,
            PAYLOAD,
            &RouteOptions::default(),
        )
        .await
        .map(drop)
}

/// Runs `workers` tasks of `op` over `phase`, merging their recorders; tasks still busy at
/// the phase's hard deadline are abandoned.
async fn drive<F, Fut>(phase: &Arc<Phase>, workers: usize, op: F) -> (Recorder, Duration)
where
    F: Fn(usize, Arc<Phase>) -> Fut,
    Fut: std::future::Future<Output = Recorder> + Send + 'static,
{
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        tasks.push(tokio::spawn(op(w, phase.clone())));
    }
    let mut total = Recorder::new();
    for t in tasks {
        let left = phase
            .hard_deadline()
            .saturating_duration_since(Instant::now());
        let abort = t.abort_handle();
        match tokio::time::timeout(left, t).await {
            Ok(Ok(rec)) => total.merge(&rec),
            Ok(Err(_)) => total.err("task_failed"),
            Err(_) => {
                abort.abort();
                total.err("abandoned");
            }
        }
    }
    let elapsed = phase.start().elapsed();
    (total, elapsed)
}

/// `--mix route`.
pub(crate) async fn route(ctx: &Ctx, report: &mut Report) {
    let rec = route_phase(
        ctx,
        ctx.duration,
        ctx.count,
        ctx.rate,
        ctx.concurrency,
        report,
    )
    .await;
    report.primary = "route".into();
    report.ops.insert("route".into(), rec);
}

/// `--mix health`: `GET /v1/health` closed or open loop, the yardstick a route's cost is
/// read against (issue 20: routes/s against the provider's own health requests/s).
pub(crate) async fn health(ctx: &Ctx, report: &mut Report) {
    let phase = Arc::new(Phase::new(ctx.duration, ctx.count, ctx.rate));
    let _bar = ctx.progress.show("health", phase.clone(), ctx.count);
    let (rec, elapsed) = drive(&phase, ctx.concurrency, |_, phase| {
        let client = ctx.client.clone();
        async move {
            let mut rec = Recorder::new();
            while let Some((_, t0)) = phase.next().await {
                let r = client.health().await;
                phase.finished(r.is_ok());
                match r {
                    Ok(_) => rec.ok(t0.elapsed()),
                    Err(e) => rec.err(e.code()),
                }
            }
            rec
        }
    })
    .await;
    report.elapsed_seconds = elapsed.as_secs_f64();
    report.primary = "health".into();
    report
        .ops
        .insert("health".into(), OpReport::from_recorder(&rec, elapsed));
}

/// A measured phase of routes (also the prefill of `pickup`).
async fn route_phase(
    ctx: &Ctx,
    duration: Duration,
    count: Option<u64>,
    rate: Option<f64>,
    workers: usize,
    report: &mut Report,
) -> OpReport {
    let phase = Arc::new(Phase::new(duration, count, rate));
    let _bar = ctx.progress.show("route", phase.clone(), count);
    let (rec, elapsed) = drive(&phase, workers, |_, phase| {
        let client = ctx.client.clone();
        let agents = ctx.agents.clone();
        async move {
            let mut rec = Recorder::new();
            let mut subject = String::with_capacity(32);
            while let Some((k, t0)) = phase.next().await {
                subject.clear();
                subject.push_str("load ");
                subject.push_str(&k.to_string());
                let r = route_one(&client, &agents, k, &subject).await;
                phase.finished(r.is_ok());
                match r {
                    Ok(()) => rec.ok(t0.elapsed()),
                    Err(e) => rec.err(e.code()),
                }
            }
            rec
        }
    })
    .await;
    report.elapsed_seconds = elapsed.as_secs_f64();
    OpReport::from_recorder(&rec, elapsed)
}

/// A page of pending messages as the pickup mix reads it: each message's id and nothing
/// else. The generator shares the provider's cores, and building every message whole (the
/// provider's annotations as JSON values) took about half of its CPU, for ids it only acks.
#[derive(serde::Deserialize)]
struct IdsPage {
    #[serde(default)]
    messages: Vec<IdOnly>,
}

/// One message of an [`IdsPage`]: its id, top level or in the envelope.
#[derive(serde::Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: String,
    envelope: IdEnvelope,
}

/// The envelope of an [`IdOnly`].
#[derive(serde::Deserialize)]
struct IdEnvelope {
    id: String,
}

impl IdOnly {
    /// The message's id (`envelope.id` when the top-level one is absent).
    fn id(&self) -> &str {
        if self.id.is_empty() {
            &self.envelope.id
        } else {
            &self.id
        }
    }
}

/// `--mix pickup`: optional prefill, then pages (+ batch acks).
pub(crate) async fn pickup(ctx: &Ctx, args: &LoadArgs, report: &mut Report) -> anyhow::Result<()> {
    if args.prefill > 0 {
        let total = args.prefill.saturating_mul(ctx.agents.len() as u64);
        let fill = route_phase(
            ctx,
            Duration::from_secs(600),
            Some(total),
            None,
            ctx.concurrency.max(32),
            report,
        )
        .await;
        report.ops.insert("prefill".into(), fill);
    }
    let ack = !args.no_ack;
    let limit = args.page;
    let n = ctx.agents.len();
    // Acking: each agent belongs to one worker, so pages never overlap.
    let workers = if ack {
        ctx.concurrency.min(n)
    } else {
        ctx.concurrency
    };
    let phase = Arc::new(Phase::new(ctx.duration, ctx.count, ctx.rate));
    let _bar = ctx.progress.show("pickup", phase.clone(), ctx.count);
    let pages_rec = Arc::new(std::sync::Mutex::new((Recorder::new(), 0u64, 0u64)));
    let (acks, elapsed) = drive(&phase, workers, |w, phase| {
        let client = ctx.client.clone();
        let agents = ctx.agents.clone();
        let out = pages_rec.clone();
        async move {
            let mut pages = Recorder::new();
            let mut acks = Recorder::new();
            let (mut messages, mut acked) = (0u64, 0u64);
            let mut mine: Vec<usize> = if ack {
                (w..agents.len()).step_by(workers).collect()
            } else {
                Vec::new()
            };
            let mut turn = 0usize;
            loop {
                if ack && mine.is_empty() {
                    break;
                }
                let Some((k, t0)) = phase.next().await else {
                    break;
                };
                let slot = if ack { turn % mine.len() } else { 0 };
                let agent = if ack {
                    &agents[mine[slot]]
                } else {
                    &agents[(k as usize) % agents.len()]
                };
                turn = turn.wrapping_add(1);
                match client
                    .pending_as::<IdsPage>(agent, Some(limit), None, None)
                    .await
                {
                    Ok(page) => {
                        phase.finished(true);
                        pages.ok(t0.elapsed());
                        messages += page.messages.len() as u64;
                        if !ack {
                            continue;
                        }
                        if page.messages.is_empty() {
                            mine.swap_remove(slot);
                            continue;
                        }
                        let ids: Vec<&str> = page.messages.iter().map(IdOnly::id).collect();
                        let t1 = Instant::now();
                        match client.ack(agent, &ids).await {
                            Ok(r) => {
                                acks.ok(t1.elapsed());
                                acked += r.acknowledged;
                            }
                            Err(e) => acks.err(e.code()),
                        }
                    }
                    Err(e) => {
                        phase.finished(false);
                        pages.err(e.code());
                    }
                }
            }
            if let Ok(mut g) = out.lock() {
                g.0.merge(&pages);
                g.1 += messages;
                g.2 += acked;
            }
            acks
        }
    })
    .await;
    let (pages, messages, acked) = {
        let g = pages_rec
            .lock()
            .map_err(|_| anyhow::anyhow!("a pickup worker panicked"))?;
        (g.0.count(), g.1, g.2)
    };
    let secs = elapsed.as_secs_f64().max(1e-9);
    report.elapsed_seconds = secs;
    report.primary = "page".into();
    {
        let g = pages_rec
            .lock()
            .map_err(|_| anyhow::anyhow!("a pickup worker panicked"))?;
        report
            .ops
            .insert("page".into(), OpReport::from_recorder(&g.0, elapsed));
    }
    if ack {
        report
            .ops
            .insert("ack".into(), OpReport::from_recorder(&acks, elapsed));
        report
            .rates
            .insert("acked_messages_per_second".into(), acked as f64 / secs);
    }
    report
        .rates
        .insert("messages_per_second".into(), messages as f64 / secs);
    report.rates.insert(
        "messages_per_page".into(),
        if pages > 0 {
            messages as f64 / pages as f64
        } else {
            0.0
        },
    );
    Ok(())
}
