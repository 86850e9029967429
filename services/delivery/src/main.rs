//! `delivery`: WebSocket sessions and webhooks as one of N cluster replicas over NATS.

/// mimalloc, as in ampd: glibc malloc/free were a sixth of the CPU under route load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use amp_cluster::{IngestView, NatsConfig, OtherSection, ServerConfig, StoreConfig};
use amp_messaging::Acceptor;
use amp_runtime::identity;
use amp_runtime::telemetry::LogConfig;
use clap::Parser;
use serde::Deserialize;

/// AMP delivery: WebSocket sessions, signed webhooks with retries, receipts.
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
    delivery: delivery::Config,
    /// How `route` frames are accepted: ingest's `[ingest.messaging]` and quota.
    ingest: IngestView,
    /// Capability tokens of the deployment, as ingest advertises them: with `federation`,
    /// remote recipients are accepted.
    capabilities: Option<Vec<String>>,
    // The other services' sections of the shared file.
    router: OtherSection,
    federation: OtherSection,
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
    let domain = cfg.server.domain.clone();
    let acceptor = Acceptor::new(
        store.clone(),
        bus.clone(),
        &domain,
        amp_messaging::MessagingConfig {
            // Route frames on this process draw on its own budget (ingest's replicas hold
            // theirs): a cluster's limits are per process.
            messages_per_minute: cfg.delivery.messages_per_minute,
            ..cfg.ingest.messaging()
        },
        amp_cluster::federates(cfg.capabilities.as_deref()),
    );
    let acceptor_meter = acceptor.meter().clone();
    let service = delivery::DeliveryService::new(
        cfg.delivery,
        delivery::Identity {
            domain,
            key_pepper: identity::load_or_create_pepper(&cfg.server.pepper_file)?,
        },
        store.clone(),
        bus.clone(),
        acceptor,
        shutdown.clone(),
    );
    let worker = tokio::spawn(service.clone().run());
    // This replica's last usage counts (its sockets, its route frames), written at shutdown.
    let meter = tokio::spawn(acceptor_meter.flush_at(shutdown.clone()));
    let listener = tokio::net::TcpListener::bind(cfg.server.listen).await?;
    let app = service.router();
    amp_cluster::serve(
        listener,
        app,
        store,
        bus,
        &cfg.server,
        shutdown,
        vec![worker, meter],
    )
    .await
}
