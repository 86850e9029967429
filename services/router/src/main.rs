//! `router`: consumes the ingress stream as one of N cluster replicas over NATS JetStream.

/// mimalloc, as in ampd: glibc malloc/free were a sixth of the CPU under route load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use amp_cluster::{NatsConfig, OtherSection, ServerConfig, StoreConfig};
use amp_runtime::telemetry::LogConfig;
use clap::Parser;
use serde::Deserialize;

/// AMP router: resolves recipients, writes mailboxes, hands remote mail to federation.
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
    router: router::Config,
    /// Of `[ingest]`, how often usage counts are written (the held bytes of `stored_bytes`).
    ingest: amp_cluster::IngestView,
    // The other services' sections of the shared file.
    delivery: OtherSection,
    federation: OtherSection,
    capabilities: OtherSection,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    amp_cluster::exit(run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let cfg: Config = cli.flags.load()?;
    if cli.flags.migrate {
        return amp_cluster::migrate(&cfg.store).await;
    }
    let shutdown = amp_cluster::start(&cfg.log);
    let (bus, store) = amp_cluster::connect(&cfg.nats, &cfg.store).await?;
    let service = router::RouterService::new(
        cfg.router,
        &cfg.server.domain,
        amp_runtime::identity::load_or_create_key(&cfg.server.key_file)?,
        store.clone(),
        bus.clone(),
    )?;
    // The bytes this replica writes to each tenant's mailboxes, shared with the others
    // through the store every usage flush (plans' `stored_bytes`).
    let meter = amp_messaging::usage::Meter::new(
        store.clone(),
        std::time::Duration::from_millis(cfg.ingest.messaging.usage_flush_ms),
        false,
    );
    service.meter_held(meter.clone());
    let worker = tokio::spawn(service.run(shutdown.clone()));
    let meter_task = tokio::spawn(meter.flush_at(shutdown.clone()));
    let listener = tokio::net::TcpListener::bind(cfg.server.listen).await?;
    let app = axum::Router::new();
    amp_cluster::serve(
        listener,
        app,
        store,
        bus,
        &cfg.server,
        shutdown,
        vec![worker, meter_task],
    )
    .await
}
