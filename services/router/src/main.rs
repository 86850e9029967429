//! `router`: consumes the ingress stream as one of N cluster replicas over NATS JetStream.

use std::path::PathBuf;
use std::time::Duration;

use amp_cluster::{NatsConfig, ServerConfig};
use amp_runtime::telemetry::LogConfig;
use clap::Parser;
use serde::Deserialize;

/// AMP router: resolves recipients, writes mailboxes, hands remote mail to federation.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// TOML config file (sections server, log, nats, router); `AMP__…` env overrides it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address of the ops endpoints (/healthz, /readyz, /metrics) (server.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// NATS URLs, comma-separated (nats.urls, AMP__NATS__URLS).
    #[arg(long, value_name = "URLS")]
    nats: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    server: ServerConfig,
    log: LogConfig,
    nats: NatsConfig,
    router: router::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut overrides = Vec::new();
    if let Some(v) = cli.listen {
        overrides.push(("server.listen".to_owned(), v));
    }
    if let Some(v) = cli.nats {
        overrides.push(("nats.urls".to_owned(), v));
    }
    let cfg: Config = amp_runtime::config::load(cli.config.as_deref(), "AMP", &overrides)?;
    let shutdown = amp_cluster::start(&cfg.log);
    let (bus, store) = amp_cluster::connect(&cfg.nats).await?;
    let service =
        router::RouterService::new(cfg.router, &cfg.server.domain, store.clone(), bus.clone())?;
    let worker = tokio::spawn(service.run(shutdown.clone()));
    let listener = tokio::net::TcpListener::bind(cfg.server.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let served = amp_cluster::serve(
        listener,
        axum::Router::new(),
        store,
        bus,
        cfg.server.body_limit_bytes,
        Duration::from_secs(cfg.server.shutdown_grace_secs),
        shutdown,
    )
    .await;
    let _ = worker.await;
    served
}
