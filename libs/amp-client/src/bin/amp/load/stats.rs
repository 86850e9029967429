//! What a load run measures: per-task recorders (an HDR histogram of latencies in
//! microseconds plus errors by code) merged at the end, and the report printed for people
//! and written as JSON for scripts.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded, in microseconds (larger values are clamped to it).
const MAX_US: u64 = 300_000_000;

/// Latencies and errors of one kind of operation, owned by one task.
pub(crate) struct Recorder {
    hist: Histogram<u64>,
    /// Operations that failed, by error code.
    pub(crate) errors: BTreeMap<String, u64>,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        Self {
            // Three significant digits from 1 µs to 300 s: a few tens of KiB per recorder.
            hist: Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds"),
            errors: BTreeMap::new(),
        }
    }

    /// A success that took `d`.
    pub(crate) fn ok(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(MAX_US);
        self.hist.saturating_record(us.clamp(1, MAX_US));
    }

    /// A failure with the error code `code`.
    pub(crate) fn err(&mut self, code: &str) {
        match self.errors.get_mut(code) {
            Some(n) => *n += 1,
            None => {
                self.errors.insert(code.to_owned(), 1);
            }
        }
    }

    /// Adds another recorder's observations to this one.
    pub(crate) fn merge(&mut self, other: &Self) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
    }

    /// Successes recorded.
    pub(crate) fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Failures recorded.
    pub(crate) fn failures(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The latency summary, `None` when nothing succeeded.
    pub(crate) fn latency(&self) -> Option<Latency> {
        if self.hist.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Latency {
            count: self.hist.len(),
            mean_ms: self.hist.mean() / 1000.0,
            p50_ms: ms(self.hist.value_at_quantile(0.50)),
            p90_ms: ms(self.hist.value_at_quantile(0.90)),
            p99_ms: ms(self.hist.value_at_quantile(0.99)),
            p99_9_ms: ms(self.hist.value_at_quantile(0.999)),
            max_ms: ms(self.hist.max()),
        })
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Latency {
    pub(crate) count: u64,
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p99_9_ms: f64,
    pub(crate) max_ms: f64,
}

/// One measured operation of a run: how many, how fast, how long each took.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OpReport {
    /// Successful operations.
    pub(crate) ok: u64,
    /// Failed operations.
    pub(crate) errors: u64,
    /// Successful operations per second of the measured phase.
    pub(crate) per_second: f64,
    /// Latency of the successful ones.
    pub(crate) latency: Option<Latency>,
    /// Failures by error code.
    pub(crate) errors_by_code: BTreeMap<String, u64>,
}

impl OpReport {
    pub(crate) fn from_recorder(rec: &Recorder, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Self {
            ok: rec.count(),
            errors: rec.failures(),
            per_second: rec.count() as f64 / secs,
            latency: rec.latency(),
            errors_by_code: rec.errors.clone(),
        }
    }
}

/// The WebSocket part of a `ws` run.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct SocketReport {
    /// Sockets asked for.
    pub(crate) requested: u64,
    /// Sockets authenticated (`connected` received).
    pub(crate) opened: u64,
    /// Sockets still open at the end of the run.
    pub(crate) held: u64,
    /// Seconds the opening took.
    pub(crate) open_seconds: f64,
    /// Source addresses the client bound to.
    pub(crate) source_addresses: Vec<String>,
    /// The provider's pid, when it is local and was found.
    pub(crate) provider_pid: Option<u32>,
    /// Its resident set before opening the sockets, in KiB.
    pub(crate) rss_before_kib: Option<u64>,
    /// Its resident set with the sockets open, in KiB.
    pub(crate) rss_after_kib: Option<u64>,
    /// (after − before) / sockets opened, in bytes.
    pub(crate) rss_per_socket_bytes: Option<f64>,
    /// Pushes routed whose frame never arrived within the grace period.
    pub(crate) pushes_missing: u64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) mix: String,
    pub(crate) provider: String,
    pub(crate) agents: usize,
    pub(crate) tenants: usize,
    /// `rate` (open loop, with the target in `target_rate`) or `concurrency` (closed loop).
    pub(crate) mode: String,
    pub(crate) target_rate: Option<f64>,
    pub(crate) concurrency: usize,
    /// Seconds of the measured phase.
    pub(crate) elapsed_seconds: f64,
    /// Seconds registering (or loading) the agents took.
    pub(crate) setup_seconds: f64,
    /// The main operation (`route`, `pickup` page, or `push` route→frame for `ws`).
    pub(crate) primary: String,
    /// Measured operations by name (`route`, `page`, `ack`, `push`, `prefill`).
    pub(crate) ops: BTreeMap<String, OpReport>,
    /// Derived rates (`messages_per_second`, `acks_per_second`, …).
    pub(crate) rates: BTreeMap<String, f64>,
    /// For `ws`: the sockets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sockets: Option<SocketReport>,
}

impl Report {
    /// The human summary.
    pub(crate) fn print(&self) {
        let mode = match self.target_rate {
            Some(r) => format!("open loop at {r:.0}/s ({} workers)", self.concurrency),
            None => format!("closed loop, concurrency {}", self.concurrency),
        };
        println!(
            "amp load: mix {} against {} — {} agents in {} tenant(s), {mode}, {:.1} s (setup {:.1} s)",
            self.mix,
            self.provider,
            self.agents,
            self.tenants,
            self.elapsed_seconds,
            self.setup_seconds
        );
        for (name, op) in &self.ops {
            let mark = if *name == self.primary { "*" } else { " " };
            println!(
                "{mark} {name:<8} {:>10} ok {:>8} err {:>12.1} /s",
                op.ok, op.errors, op.per_second
            );
            if let Some(l) = &op.latency {
                println!(
                    "           latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}  (mean {:.2})",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.p99_9_ms, l.max_ms, l.mean_ms
                );
            }
            if !op.errors_by_code.is_empty() {
                let list: Vec<String> = op
                    .errors_by_code
                    .iter()
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect();
                println!("           errors: {}", list.join(", "));
            }
        }
        for (name, v) in &self.rates {
            println!("  {name}: {v:.1}");
        }
        if let Some(s) = &self.sockets {
            println!(
                "  sockets: {} requested, {} opened in {:.1} s, {} held at the end, over {} source address(es)",
                s.requested,
                s.opened,
                s.open_seconds,
                s.held,
                s.source_addresses.len()
            );
            match (s.provider_pid, s.rss_before_kib, s.rss_after_kib) {
                (Some(pid), Some(b), Some(a)) => println!(
                    "  provider pid {pid}: RSS {b} KiB → {a} KiB, {:.0} bytes per socket",
                    s.rss_per_socket_bytes.unwrap_or(0.0)
                ),
                _ => println!("  provider RSS: not measured (not local, or pid not found)"),
            }
            if s.pushes_missing > 0 {
                println!("  pushes without a frame: {}", s.pushes_missing);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorders_merge_latencies_and_errors() {
        let mut a = Recorder::new();
        let mut b = Recorder::new();
        for ms in 1..=100u64 {
            a.ok(Duration::from_millis(ms));
        }
        b.ok(Duration::from_secs(1));
        b.err("rate_limited");
        b.err("rate_limited");
        a.err("transport");
        a.merge(&b);
        assert_eq!(a.count(), 101);
        assert_eq!(a.failures(), 3);
        assert_eq!(a.errors.get("rate_limited"), Some(&2));
        let l = a.latency().expect("latency");
        assert!((l.p50_ms - 51.0).abs() < 1.0, "{l:?}");
        assert!((l.max_ms - 1000.0).abs() < 2.0, "{l:?}");
        let r = OpReport::from_recorder(&a, Duration::from_secs(2));
        assert!((r.per_second - 50.5).abs() < 1e-9);
    }
}
