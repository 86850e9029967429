//! `federation`: provider-to-provider delivery as one of N cluster replicas over NATS
//! JetStream. Consumes `AMP_FEDERATION` (outbound, durable jobs leased so one replica runs
//! each) and serves `POST /v1/federation/deliver` (inbound; route `/v1/federation/*` here).

/// mimalloc, as in ampd: glibc malloc/free were a sixth of the CPU under route load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use amp_cluster::{IngestView, NatsConfig, OtherSection, ServerConfig, StoreConfig};
use amp_runtime::identity;
use amp_runtime::telemetry::LogConfig;
use clap::Parser;
use serde::Deserialize;

/// AMP federation: signed delivery to and from other providers.
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
    /// Trust policy, peers, discovery, retries and limits (`enabled` is implied here).
    federation: federation::Config,
    /// Inbound messages are held to ingest's mailbox quota.
    ingest: IngestView,
    /// Ingest's; not read here.
    capabilities: OtherSection,
    // The other services' sections of the shared file.
    router: OtherSection,
    delivery: OtherSection,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    amp_cluster::exit(run().await)
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut cfg: Config = cli.flags.load()?;
    if cli.flags.migrate {
        return amp_cluster::migrate(&cfg.store).await;
    }
    cfg.federation.enabled = true;
    cfg.federation
        .mailbox_quota
        .get_or_insert(cfg.ingest.limits.mailbox_quota);
    cfg.federation.outcome_wait_ms = cfg.ingest.messaging.outcome_wait_ms;
    let shutdown = amp_cluster::start(&cfg.log);
    let (bus, store) = amp_cluster::connect(&cfg.nats, &cfg.store).await?;
    let service = federation::Federation::new(
        cfg.federation,
        federation::Identity {
            domain: cfg.server.domain.clone(),
            provider_key: identity::load_or_create_key(&cfg.server.key_file)?,
        },
        store.clone(),
        bus.clone(),
    )?;
    let meter = amp_messaging::usage::Meter::new(
        store.clone(),
        std::time::Duration::from_millis(cfg.ingest.messaging.usage_flush_ms),
        cfg.ingest.messaging.usage_metrics_per_tenant,
    );
    service.meter_usage(meter.clone());
    service.enforce_plans(
        amp_messaging::TenantGate::new(store.clone()),
        cfg.ingest.plan,
    );
    let worker = tokio::spawn(service.clone().run(shutdown.clone()));
    let meter_task = tokio::spawn(meter.flush_at(shutdown.clone()));
    let listener = tokio::net::TcpListener::bind(cfg.server.listen).await?;
    let app = service.router();
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
