//! `ingest`: the public HTTP API as one of N cluster replicas over NATS JetStream.

/// mimalloc, as in ampd: glibc malloc/free were a sixth of the CPU under route load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use amp_cluster::{NatsConfig, OtherSection, ServerConfig, StoreConfig};
use amp_runtime::identity;
use amp_runtime::telemetry::LogConfig;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// AMP ingest: registration, identity, routing and pickup, one replica of many.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    flags: amp_cluster::Flags,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    server: ServerConfig,
    log: LogConfig,
    nats: NatsConfig,
    store: StoreConfig,
    ingest: ingest::Config,
    /// Capability tokens of the deployment (what its delivery and federation replicas offer).
    capabilities: Option<Vec<String>>,
    // The other services' sections of the shared file.
    router: OtherSection,
    delivery: OtherSection,
    federation: OtherSection,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    amp_cluster::exit(run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut cfg: Config = cli.flags.load()?;
    // The proxies in front carry many clients each: not capped per address.
    if cfg.server.connections.uncapped_addresses.is_empty() {
        cfg.server.connections.uncapped_addresses =
            cfg.ingest.client_address.trusted_proxies.clone();
    }
    if cli.flags.migrate {
        return amp_cluster::migrate(&cfg.store).await;
    }
    let shutdown = amp_cluster::start(&cfg.log);
    let (bus, store) = amp_cluster::connect(&cfg.nats, &cfg.store).await?;
    let listener = tokio::net::TcpListener::bind(cfg.server.listen).await?;
    let addr = listener.local_addr()?;
    let identity = ingest::Identity {
        domain: cfg.server.domain.clone(),
        public_url: cfg.server.public_url(addr),
        provider_key: identity::load_or_create_key(&cfg.server.key_file)?,
        key_pepper: identity::load_or_create_pepper(&cfg.server.pepper_file)?,
        capabilities: cfg.capabilities.clone().unwrap_or_else(|| {
            ingest::CAPABILITIES
                .iter()
                .map(|c| (*c).to_owned())
                .collect()
        }),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    // Attachment bytes in the JetStream object store (or an S3-compatible bucket), shared
    // by every replica.
    let blobs = match cfg.ingest.attachments.enabled {
        true => Some(amp_cluster::connect_blobs(&cfg.nats, &cfg.store.blobs).await?),
        false => None,
    };
    let ingest =
        ingest::Ingest::new(cfg.ingest, identity, store.clone(), bus.clone(), blobs).await?;
    let grace = std::time::Duration::from_secs(cfg.server.shutdown_grace_secs);
    let admin = ingest
        .serve_admin(
            addr,
            cfg.server.body_limit_bytes,
            shutdown.clone(),
            grace,
            &cfg.server.connections,
        )
        .await?;
    // The admin server drains with the others (a worker joined after serving ends).
    let mut workers: Vec<_> = admin
        .map(|t| {
            tokio::spawn(async move {
                if let Ok(Err(e)) = t.await {
                    tracing::warn!(error = %e, "admin API failed");
                }
            })
        })
        .into_iter()
        .collect();
    // This replica's last usage counts, written once serving has stopped.
    workers.push(tokio::spawn(
        ingest.acceptor().meter().clone().flush_at(shutdown.clone()),
    ));
    // Usage rows past their retention (idempotent deletions: every replica may sweep).
    workers.push(tokio::spawn(
        ingest.clone().expire_usage_at(shutdown.clone()),
    ));
    // Every replica sweeps expired attachments; each deletion is claimed by one.
    workers.extend(
        ingest
            .attachments()
            .map(|a| tokio::spawn(a.run_sweeper(Duration::from_secs(60), shutdown.clone()))),
    );
    amp_cluster::serve(
        listener,
        ingest.router(),
        store,
        bus,
        &cfg.server,
        shutdown,
        workers,
    )
    .await
}
