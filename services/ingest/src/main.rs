//! `ingest`: the public HTTP API as one of N cluster replicas over NATS JetStream.

use std::path::PathBuf;
use std::time::Duration;

use amp_cluster::{NatsConfig, ServerConfig};
use amp_runtime::identity;
use amp_runtime::telemetry::LogConfig;
use clap::Parser;
use serde::Deserialize;

/// AMP ingest: registration, identity, routing and pickup, one replica of many.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// TOML config file (sections server, log, nats, ingest); `AMP__…` env overrides it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (server.listen, AMP__SERVER__LISTEN).
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
    ingest: ingest::Config,
    /// Capability tokens of the deployment (what its delivery and federation replicas offer).
    capabilities: Option<Vec<String>>,
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
    let listener = tokio::net::TcpListener::bind(cfg.server.listen).await?;
    let addr = listener.local_addr()?;
    let identity = ingest::Identity {
        domain: cfg.server.domain.clone(),
        public_url: cfg.server.public_url(addr),
        provider_key: identity::load_or_create_key(&cfg.server.key_file)?,
        key_pepper: identity::load_or_create_pepper(&cfg.server.pepper_file)?,
        capabilities: cfg.capabilities.clone().unwrap_or_else(|| {
            [
                "registration",
                "relay-queue",
                "websockets",
                "webhooks",
                "notify:v1",
                "notify:longpoll",
            ]
            .map(String::from)
            .to_vec()
        }),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let ingest = ingest::Ingest::new(cfg.ingest, identity, store.clone(), bus.clone()).await?;
    println!("listening on {addr}");
    tracing::info!(addr = %addr, "ingest listening");
    amp_cluster::serve(
        listener,
        ingest.router(),
        store,
        bus,
        cfg.server.body_limit_bytes,
        Duration::from_secs(cfg.server.shutdown_grace_secs),
        shutdown,
    )
    .await
}
