//! `amp load`: a load generator against a provider URL (loopback unless `--allow-remote`).
//!
//! It registers (or reuses) agents, then runs one mix, bounded by `--duration` and
//! `--count`:
//! - `route`: signed messages, agent k → agent k+1, open loop at `--rate` (latency counted
//!   from each message's scheduled time, so a stalled server cannot hide its queue) or
//!   closed loop at `--concurrency`;
//! - `pickup`: pages of 100 and a batch ack of each (each agent drained by one worker), or
//!   with `--no-ack` the same pages read again and again;
//! - `ws`: `--sockets` idle WebSockets spread over 127.0.0.x source addresses, then routes
//!   to the agents' first sockets measuring route→frame latency.
//!
//! A progress bar on a terminal; a human summary at the end and a JSON one with `--json`.

mod agents;
mod mixes;
mod procinfo;
mod stats;
mod ws;

use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use amp_client::{Client, Identity};
use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use tokio::time::Instant;

use crate::config::Paths;
use stats::Report;

/// Longest run accepted, in seconds.
const MAX_DURATION_SECS: f64 = 3600.0;
/// Seconds a run lasts when neither `--duration` nor `--count` is given.
const DEFAULT_DURATION_SECS: f64 = 10.0;
/// How long in-flight operations may still take once the run's time is up.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// Generate load against a provider: register agents, then run a mix and report throughput,
/// latency percentiles and errors by code.
#[derive(Debug, Parser)]
#[command(name = "amp load", about, long_about = None)]
pub(crate) struct LoadArgs {
    /// The provider's base URL; by default the one the CLI registered with.
    #[arg(long, env = "AMP_PROVIDER")]
    provider: Option<String>,
    /// The CLI's config directory (only used to find the default provider).
    #[arg(long, env = "AMP_CONFIG_DIR", hide = true)]
    config_dir: Option<PathBuf>,
    /// Agents to register (or reuse).
    #[arg(long, default_value_t = 64)]
    agents: usize,
    /// Tenants the agents are spread over (new registrations only).
    #[arg(long, default_value_t = 1)]
    tenants: usize,
    /// Keep the agents (keys and API keys, 0600) in this file and reuse them next time.
    #[arg(long, value_name = "FILE")]
    reuse: Option<PathBuf>,
    /// What to run.
    #[arg(long, value_enum)]
    mix: Mix,
    /// Open loop: operations per second (token bucket; latency counted from the scheduled time).
    #[arg(long)]
    rate: Option<f64>,
    /// Closed loop: operations in flight (for `--rate`, the workers; default 64).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Seconds to run (default 10 when --count is not given; at most 3600).
    #[arg(long)]
    duration: Option<f64>,
    /// Operations to run (routes, pages, or pushes), also bounded by --duration.
    #[arg(long)]
    count: Option<u64>,
    /// Write the machine-readable summary to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// `ws`: idle sockets to open (default: one per agent).
    #[arg(long)]
    sockets: Option<u64>,
    /// `ws`: sockets per 127.0.0.x source address (one address has ~28k ephemeral ports).
    #[arg(long, default_value_t = 20_000)]
    per_source: u64,
    /// `ws`: sockets being opened at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// `ws`: seconds allowed for opening the sockets.
    #[arg(long, default_value_t = 120.0)]
    open_timeout: f64,
    /// `pickup`: read pages without acking them (the same messages again and again).
    #[arg(long)]
    no_ack: bool,
    /// `pickup`: messages per page.
    #[arg(long, default_value_t = 100)]
    page: usize,
    /// `pickup`: route this many messages to each agent first (not measured as pickup).
    #[arg(long, default_value_t = 0)]
    prefill: u64,
    /// The provider's pid, for its RSS (found from the listening port when local).
    #[arg(long)]
    pid: Option<u32>,
    /// Accept a provider URL that is not loopback.
    #[arg(long)]
    allow_remote: bool,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// The mixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mix {
    /// Signed routes.
    Route,
    /// Pages of pending messages plus batch acks.
    Pickup,
    /// Idle WebSockets plus pushes (route→frame latency).
    Ws,
    /// `GET /v1/health` on the same connections: the provider's HTTP ceiling under this
    /// generator (no agents registered).
    Health,
}

impl Mix {
    fn name(self) -> &'static str {
        match self {
            Self::Route => "route",
            Self::Pickup => "pickup",
            Self::Ws => "ws",
            Self::Health => "health",
        }
    }
}

/// `amp [--provider URL] [--config-dir DIR] load ARGS…` as the argument list of
/// [`LoadArgs`], or `None` when the command is not `load`. `load` has its own parser because
/// its `--json FILE` takes a value where the other commands' `--json` is a switch.
pub(crate) fn split_args(args: &[OsString]) -> Option<Vec<OsString>> {
    let mut carried = Vec::new();
    let mut i = 1;
    while let Some(a) = args.get(i) {
        let s = a.to_str()?;
        match s {
            "--provider" | "--config-dir" => {
                carried.push(a.clone());
                carried.push(args.get(i + 1)?.clone());
                i += 2;
            }
            _ if s.starts_with("--provider=") || s.starts_with("--config-dir=") => {
                carried.push(a.clone());
                i += 1;
            }
            "load" => {
                let mut out = vec![OsString::from("amp load")];
                out.extend(carried);
                out.extend(args[i + 1..].iter().cloned());
                return Some(out);
            }
            _ => return None,
        }
    }
    None
}

/// Parses the `load` arguments, runs on a multi-threaded runtime, prints the summary.
pub(crate) fn main(args: Vec<OsString>) -> anyhow::Result<()> {
    let args = LoadArgs::parse_from(args);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(t) = args.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt.build().context("starting the runtime")?;
    let report = rt.block_on(run(args.clone_paths(), &args))?;
    // Sockets and connections held by tasks are dropped with the runtime, without waiting.
    rt.shutdown_timeout(Duration::from_millis(500));
    report.print();
    if let Some(path) = &args.json {
        let mut text = serde_json::to_vec_pretty(&report)?;
        text.push(b'\n');
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

impl LoadArgs {
    fn clone_paths(&self) -> Option<PathBuf> {
        self.config_dir.clone()
    }
}

/// Refuses URLs whose host is not loopback, unless allowed.
fn check_loopback(url: &url::Url, allow_remote: bool) -> anyhow::Result<()> {
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    if !loopback && !allow_remote {
        bail!(
            "{url} is not a loopback address: load only a provider you run, and pass --allow-remote to confirm"
        );
    }
    Ok(())
}

async fn run(config_dir: Option<PathBuf>, args: &LoadArgs) -> anyhow::Result<Report> {
    let provider = match &args.provider {
        Some(p) => p.clone(),
        None => Paths::resolve(config_dir)?.provider(None)?,
    };
    let url = url::Url::parse(&provider).with_context(|| format!("provider URL {provider:?}"))?;
    check_loopback(&url, args.allow_remote)?;
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    if args.mix == Mix::Route && args.agents < 2 {
        bail!("--mix route needs at least 2 agents (each sends to the next)");
    }
    if args.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be a positive number");
    }
    if args.page == 0 || args.page > 1000 {
        bail!("--page must be between 1 and 1000");
    }
    let duration = match (args.duration, args.count) {
        (Some(d), _) if !(d > 0.0 && d <= MAX_DURATION_SECS) => {
            bail!("--duration must be in (0, {MAX_DURATION_SECS}] seconds")
        }
        (Some(d), _) => d,
        (None, Some(_)) => MAX_DURATION_SECS.min(600.0),
        (None, None) => DEFAULT_DURATION_SECS,
    };
    let concurrency = args.concurrency.unwrap_or(64).clamp(1, 100_000);
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(concurrency.max(64))
        .user_agent(concat!("amp-load/", env!("CARGO_PKG_VERSION")))
        .build()?;
    let client = Client::with_http(&provider, http)?.with_timeout(Duration::from_secs(30));

    let setup = Instant::now();
    let agents = if args.mix == Mix::Health {
        Vec::new()
    } else {
        agents::obtain(
            &client,
            &provider,
            args.agents,
            args.tenants,
            args.reuse.as_deref(),
        )
        .await?
    };
    let setup_seconds = setup.elapsed().as_secs_f64();

    let ctx = Ctx {
        client,
        agents: Arc::new(agents),
        url,
        duration: Duration::from_secs_f64(duration),
        count: args.count,
        rate: args.rate,
        concurrency,
        progress: Progress::new(!args.quiet && std::io::stderr().is_terminal()),
    };
    let mut report = Report {
        mix: args.mix.name().to_owned(),
        provider: provider.clone(),
        agents: ctx.agents.len(),
        tenants: agents::tenant_count(&ctx.agents),
        mode: if args.rate.is_some() {
            "rate"
        } else {
            "concurrency"
        }
        .to_owned(),
        target_rate: args.rate,
        concurrency,
        elapsed_seconds: 0.0,
        setup_seconds,
        primary: String::new(),
        ops: Default::default(),
        rates: Default::default(),
        sockets: None,
    };
    match args.mix {
        Mix::Route => mixes::route(&ctx, &mut report).await,
        Mix::Pickup => mixes::pickup(&ctx, args, &mut report).await?,
        Mix::Ws => ws::run(&ctx, args, &mut report).await?,
        Mix::Health => mixes::health(&ctx, &mut report).await,
    }
    Ok(report)
}

/// What every mix shares.
pub(crate) struct Ctx {
    pub(crate) client: Client,
    pub(crate) agents: Arc<Vec<Identity>>,
    pub(crate) url: url::Url,
    pub(crate) duration: Duration,
    pub(crate) count: Option<u64>,
    pub(crate) rate: Option<f64>,
    pub(crate) concurrency: usize,
    pub(crate) progress: Progress,
}

impl Ctx {
    /// The provider's IPv4 loopback address, when it is one (sockets then spread over
    /// 127.0.0.x source addresses).
    pub(crate) fn loopback_v4(&self) -> Option<std::net::Ipv4Addr> {
        match self.url.host() {
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => Some(ip),
            Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => {
                Some(std::net::Ipv4Addr::LOCALHOST)
            }
            _ => None,
        }
    }

    /// The provider's pid for RSS: `--pid`, else the local process listening on its port.
    pub(crate) fn provider_pid(&self, flag: Option<u32>) -> Option<u32> {
        flag.or_else(|| {
            let host_is_local = matches!(self.url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
                || matches!(self.url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
                || matches!(self.url.host(), Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost"));
            if !host_is_local {
                return None;
            }
            procinfo::pid_listening_on(self.url.port_or_known_default()?)
        })
    }
}

/// The schedule of one measured phase: tickets handed out up to the count and the deadline,
/// paced by the rate when open loop.
pub(crate) struct Phase {
    start: Instant,
    deadline: Instant,
    count: Option<u64>,
    rate: Option<f64>,
    issued: AtomicU64,
    /// Operations finished (ok or not), for the progress bar.
    pub(crate) done: AtomicU64,
    /// Operations failed, for the progress bar.
    pub(crate) failed: AtomicU64,
}

impl Phase {
    pub(crate) fn new(duration: Duration, count: Option<u64>, rate: Option<f64>) -> Self {
        let start = Instant::now();
        Self {
            start,
            deadline: start + duration,
            count,
            rate,
            issued: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// The next operation's number and the instant it counts from (its scheduled time when
    /// open loop, after waiting for it), or `None` when the phase is over.
    pub(crate) async fn next(&self) -> Option<(u64, Instant)> {
        let now = Instant::now();
        if now >= self.deadline {
            return None;
        }
        let k = self.issued.fetch_add(1, Ordering::Relaxed);
        if self.count.is_some_and(|c| k >= c) {
            return None;
        }
        match self.rate {
            None => Some((k, now)),
            Some(r) => {
                let at = self.start + Duration::from_secs_f64(k as f64 / r);
                if at >= self.deadline {
                    return None;
                }
                tokio::time::sleep_until(at).await;
                Some((k, at))
            }
        }
    }

    /// Whether the phase's time is up.
    pub(crate) fn over(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The instant the phase started.
    pub(crate) fn start(&self) -> Instant {
        self.start
    }

    /// The deadline after which in-flight work is abandoned.
    pub(crate) fn hard_deadline(&self) -> Instant {
        self.deadline + DRAIN_GRACE
    }

    pub(crate) fn finished(&self, ok: bool) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The progress bar (stderr, terminals only).
pub(crate) struct Progress {
    enabled: bool,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        Self { enabled }
    }

    /// Shows `phase` as `label` until the returned guard is dropped.
    pub(crate) fn show(
        &self,
        label: &'static str,
        phase: Arc<Phase>,
        total: Option<u64>,
    ) -> ProgressGuard {
        if !self.enabled {
            return ProgressGuard { task: None };
        }
        let (len, by_count) = match total {
            Some(n) => (n, true),
            None => (
                (phase.deadline - phase.start).as_millis().max(1) as u64,
                false,
            ),
        };
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix:>8} [{elapsed_precise}] {wide_bar} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix(label);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                let done = phase.done.load(Ordering::Relaxed);
                let failed = phase.failed.load(Ordering::Relaxed);
                let secs = phase.start.elapsed().as_secs_f64().max(1e-3);
                if by_count {
                    bar.set_position(done.min(len));
                } else {
                    bar.set_position((phase.start.elapsed().as_millis() as u64).min(len));
                }
                bar.set_message(format!(
                    "{done} done, {:.0}/s, {failed} errors",
                    done as f64 / secs
                ));
                if phase.over() && by_count {
                    bar.finish_and_clear();
                }
            }
        });
        ProgressGuard { task: Some(task) }
    }
}

/// Stops the progress bar when dropped.
pub(crate) struct ProgressGuard {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            eprint!("\r\x1b[2K");
        }
    }
}

/// The `i`-th source address for spreading sockets: 127.0.0.1, 127.0.0.2, … (loopback only).
pub(crate) fn source_address(i: u64) -> Option<IpAddr> {
    let n = u8::try_from(i + 1).ok().filter(|n| *n < 255)?;
    Some(IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn load_arguments_are_split_off() {
        assert_eq!(
            split_args(&os(&[
                "amp",
                "--provider",
                "http://x",
                "load",
                "--json",
                "f"
            ])),
            Some(os(&["amp load", "--provider", "http://x", "--json", "f"]))
        );
        assert_eq!(
            split_args(&os(&["amp", "load", "--mix", "route"])),
            Some(os(&["amp load", "--mix", "route"]))
        );
        assert_eq!(split_args(&os(&["amp", "--json", "load"])), None);
        assert_eq!(split_args(&os(&["amp", "send", "load"])), None);
        assert_eq!(split_args(&os(&["amp"])), None);
    }

    #[test]
    fn remote_urls_need_a_flag() {
        let ok = |u: &str, allow| check_loopback(&url::Url::parse(u).expect("url"), allow).is_ok();
        assert!(ok("http://127.0.0.1:8080", false));
        assert!(ok("http://127.3.4.5:1", false));
        assert!(ok("http://localhost:1", false));
        assert!(ok("http://[::1]:1", false));
        assert!(!ok("http://10.0.0.1:8080", false));
        assert!(!ok("https://amp.example.com", false));
        assert!(ok("https://amp.example.com", true));
    }

    #[test]
    fn source_addresses_stay_in_127_0_0() {
        assert_eq!(source_address(0), "127.0.0.1".parse().ok());
        assert_eq!(source_address(253), "127.0.0.254".parse().ok());
        assert_eq!(source_address(254), None);
    }

    #[test]
    fn the_arguments_parse() {
        let a = LoadArgs::try_parse_from(os(&[
            "amp load", "--mix", "route", "--rate", "100", "--count", "5",
        ]))
        .expect("parse");
        assert_eq!(a.mix, Mix::Route);
        assert!(LoadArgs::try_parse_from(os(&["amp load", "--mix", "nope"])).is_err());
        assert!(LoadArgs::try_parse_from(os(&["amp load", "--rate", "1"])).is_err());
    }
}
