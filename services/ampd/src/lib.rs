//! `ampd`, the all-in-one AMP provider: every service in one process, on one port, with the
//! embedded store (fjall; a data directory's existing redb store is kept) and the in-process bus,
//! and nothing to set up.
//!
//! It holds no business logic; it composes the service crates. [`run`] does everything
//! after the listener is bound, so tests run the whole provider in-process on `127.0.0.1:0`;
//! `main.rs` only parses flags, loads the [`Config`], starts telemetry and binds.
//!
//! - [`config`]: [`Config`] and its sections.
//! - [`migrate`]: `ampd --migrate-store`, a data directory's redb store copied onto fjall.

pub mod config;
pub mod migrate;

use std::net::SocketAddr;
use std::time::Duration;

use amp_bus::{Bus, InProcessConfig};
use amp_runtime::http::harden;
use amp_runtime::ops::{Readiness, ops_router};
use amp_runtime::{Shutdown, identity};
use amp_store::Store;
use amp_store::cql::CqlStore;
use amp_store::fjall::{FjallConfig, FjallStore};
use amp_store::jetstream::{JetStreamStore, JetStreamStoreConfig};
use amp_store::redb::{RedbConfig, RedbStore};
use anyhow::Context;
use axum::Router;
use futures::FutureExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::{Config, StoreBackend};

/// How often expired attachments are looked for (spec 04 bounds an unreferenced upload's
/// life at 2 h after confirmation; a minute late is well within it).
const ATTACHMENT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Most expired mailbox entries removed per purge sweep (bounds one write transaction).
const PURGE_BATCH: usize = 10_000;

/// Runs the provider on `listener` until `shutdown` triggers: opens the store, loads or
/// creates the provider identity, builds the services, serves, then drains in-flight
/// requests for at most `server.shutdown_grace_secs` and closes the bus and the store.
///
/// # Errors
/// When the configuration is invalid, the store cannot be opened (bad file, or already
/// open in another process), the identity files are unreadable or invalid, the services
/// cannot be built, or serving fails.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let local_addr = listener
        .local_addr()
        .context("cannot read the listener's address")?;

    let store = open_store(&config).await?;

    let result = serve_with(&config, listener, local_addr, store.clone(), shutdown).await;
    if let Err(e) = store.close().await {
        tracing::warn!(error = %e, "store did not close cleanly");
    }
    // A task may still hold the store for a moment after shutdown (a connection's last
    // request, a `last_seen_at` write): wait for it, so the data directory is free (its
    // file lock released) when `run` returns.
    if !store.release(STORE_RELEASE).await {
        tracing::warn!("the store is still held by a task after shutdown");
    }
    result
}

/// How long `run` waits at the end for the last holders of the store to let it go.
const STORE_RELEASE: Duration = Duration::from_secs(5);

/// Opens the configured store. The embedded one first of all: its file lock keeps a second
/// ampd off the same data directory, and so also off the identity files created next to it.
async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let backend = config.embedded_backend();
    if config.store.backend == StoreBackend::Embedded && backend == StoreBackend::Redb {
        tracing::info!(path = %config.store_path().display(),
            "the data directory holds a redb store: kept (backend = \"redb\" says so; a new directory starts on fjall)");
    }
    Ok(match backend {
        StoreBackend::Redb => {
            let store_path = config.store_path();
            Store::new(
                RedbStore::open(&RedbConfig {
                    path: store_path.clone(),
                    group_commit: config.store.group_commit,
                    max_batch: config.store.max_batch,
                    quick_repair: config.store.quick_repair,
                })
                .with_context(|| format!("cannot open the store at {}", store_path.display()))?,
            )
        }
        StoreBackend::Fjall | StoreBackend::Embedded => {
            let store_path = config.store_path();
            Store::new(
                FjallStore::open(&FjallConfig {
                    path: store_path.clone(),
                    group_commit: config.store.group_commit,
                    max_batch: config.store.max_batch,
                    cache_bytes: config.store.cache_mib.saturating_mul(1024 * 1024),
                    journal_bytes: config.store.journal_mib.saturating_mul(1024 * 1024),
                    workers: config.store.background_threads,
                })
                .with_context(|| format!("cannot open the store at {}", store_path.display()))?,
            )
        }
        StoreBackend::Jetstream => {
            let js = &config.store.jetstream;
            Store::new(
                JetStreamStore::connect(JetStreamStoreConfig {
                    urls: js
                        .urls
                        .split(',')
                        .map(|u| u.trim().to_owned())
                        .filter(|u| !u.is_empty())
                        .collect(),
                    replicas: js.replicas,
                    prefix: js.prefix.clone(),
                    security: amp_nats::NatsSecurity {
                        auth: js.auth.clone(),
                        tls: js.tls.clone(),
                    },
                    ..JetStreamStoreConfig::default()
                })
                .await
                .context("cannot connect the JetStream store")?,
            )
        }
        StoreBackend::Cql => Store::new(
            CqlStore::connect(config.store.cql.clone())
                .await
                .context("cannot connect the CQL store")?,
        ),
    })
}

/// Everything between opening and closing the store.
async fn serve_with(
    config: &Config,
    listener: TcpListener,
    local_addr: SocketAddr,
    store: Store,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let pepper = identity::load_or_create_pepper(&config.pepper_file())?;
    let provider_key = identity::load_or_create_key(&config.key_file())?;
    let mut capabilities: Vec<String> = ingest::CAPABILITIES
        .iter()
        .map(|c| (*c).to_owned())
        .collect();
    if config.federation.enabled {
        // Ingest accepts remote recipients, and /v1/info advertises it, only then.
        capabilities.push("federation".to_owned());
    }
    let identity = ingest::Identity {
        domain: config.server.domain.clone(),
        public_url: config.server.public_url(local_addr),
        provider_key: provider_key.clone(),
        key_pepper: pepper.clone(),
        capabilities,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let public_url = identity.public_url.clone();
    let domain = identity.domain.clone();
    let fingerprint = identity.provider_key.public().fingerprint();

    // Attachment bytes in the data directory, content-addressed and fsynced (spec 08).
    let blobs = amp_store::blob::FsBlobs::open(&config.server.data_dir.join("attachments"))
        .context("cannot open the attachment directory")?;
    let bus = Bus::in_process(InProcessConfig::default());
    let ingest = match ingest::Ingest::new(
        config.ingest.clone(),
        identity,
        store.clone(),
        bus.clone(),
        Some(amp_store::blob::Blobs::new(blobs)),
    )
    .await
    {
        Ok(ingest) => ingest,
        Err(e) => {
            bus.shutdown().await;
            return Err(e).context("cannot start the ingest service");
        }
    };

    // The proxies in front carry many clients each: not capped per address.
    let mut connections = config.server.connections.clone();
    if connections.uncapped_addresses.is_empty() {
        connections.uncapped_addresses = config.ingest.client_address.trusted_proxies.clone();
    }
    let admin = match ingest
        .serve_admin(
            local_addr,
            config.server.body_limit_bytes,
            shutdown.clone(),
            Duration::from_secs(config.server.shutdown_grace_secs),
            &connections,
        )
        .await
    {
        Ok(a) => a,
        Err(e) => {
            bus.shutdown().await;
            return Err(e).context("cannot start the admin API");
        }
    };

    let router = match router::RouterService::new(
        config.router.clone(),
        &domain,
        provider_key.clone(),
        store.clone(),
        bus.clone(),
    ) {
        Ok(r) => r,
        Err(e) => {
            bus.shutdown().await;
            return Err(e).context("cannot start the router service");
        }
    };
    let federation = match config.federation.enabled.then(|| {
        let mut federation_config = config.federation.clone();
        federation_config.mailbox_quota = Some(config.ingest.limits.mailbox_quota);
        // One listener: the proxies in front of it are the ingest ones unless set apart.
        if federation_config.client_address.trusted_proxies.is_empty() {
            federation_config.client_address = config.ingest.client_address.clone();
        }
        federation::Federation::new(
            federation_config,
            federation::Identity {
                domain: domain.clone(),
                provider_key,
            },
            store.clone(),
            bus.clone(),
        )
    }) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => {
            bus.shutdown().await;
            return Err(e).context("cannot start the federation service");
        }
    };
    // Held bytes are counted in the acceptor's meter: exact in one process.
    router.meter_held(ingest.acceptor().meter().clone());
    let router_task = tokio::spawn(router.run(shutdown.clone()));
    let federation_routes = federation
        .as_ref()
        .map_or_else(Router::new, federation::Federation::router);
    // Inbound federated messages are metered with the rest of this process's usage.
    if let Some(f) = &federation {
        f.meter_usage(ingest.acceptor().meter().clone());
        f.enforce_plans(ingest.acceptor().tenants().clone(), config.ingest.plan);
    }
    let federation_task = federation.map(|f| tokio::spawn(f.run(shutdown.clone())));

    // WebSocket route frames are accepted exactly as POST /v1/route: same acceptor.
    let mut delivery_config = config.delivery.clone();
    delivery_config.outbound = config.ingest.outbound;
    let delivery = delivery::DeliveryService::new(
        delivery_config,
        delivery::Identity {
            domain: domain.clone(),
            key_pepper: pepper,
        },
        store.clone(),
        bus.clone(),
        ingest.acceptor(),
        shutdown.clone(),
    );
    let delivery_task = tokio::spawn(delivery.clone().run());
    // The usage counts of the last flush interval, written when serving has stopped.
    let meter_task = tokio::spawn(ingest.acceptor().meter().clone().flush_at(shutdown.clone()));

    let readiness = Readiness::new();
    let ready_store = store.clone();
    readiness.add("store", move || {
        let store = ready_store.clone();
        async move { store.ready().await }.boxed()
    });
    readiness.follow(&shutdown);

    let app: Router = harden(
        ingest
            .router()
            .merge(delivery.router())
            .merge(federation_routes)
            .merge(ops_router(readiness)),
        config.server.body_limit_bytes,
    );

    let usage_sweep = tokio::spawn(ingest.clone().expire_usage_at(shutdown.clone()));
    let attachment_sweep = ingest
        .attachments()
        .map(|a| tokio::spawn(a.run_sweeper(ATTACHMENT_SWEEP_INTERVAL, shutdown.clone())));
    let purge = spawn_purge(
        store,
        Duration::from_secs(config.store.purge_interval_secs),
        shutdown.clone(),
    );

    tracing::info!(
        addr = %local_addr,
        public_url = %public_url,
        domain = %domain,
        fingerprint = %fingerprint,
        "ampd listening"
    );
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let served =
        amp_runtime::shutdown::serve(listener, app, &connections, shutdown.clone(), grace).await;

    // Serving can also end on its own (an I/O error); stop everything else either way.
    shutdown.trigger();
    if let Some(Err(e)) = match admin {
        Some(t) => Some(t.await),
        None => None,
    } {
        tracing::warn!(error = %e, "admin API task failed");
    }
    if let Some(Err(e)) = match attachment_sweep {
        Some(t) => Some(t.await),
        None => None,
    } {
        tracing::warn!(error = %e, "attachment sweep task failed");
    }
    if let Err(e) = usage_sweep.await {
        tracing::warn!(error = %e, "usage sweep task failed");
    }
    if let Err(e) = purge.await {
        tracing::warn!(error = %e, "purge task failed");
    }
    if let Err(e) = router_task.await {
        tracing::warn!(error = %e, "router task failed");
    }
    if let Err(e) = delivery_task.await {
        tracing::warn!(error = %e, "delivery task failed");
    }
    if let Some(Err(e)) = match federation_task {
        Some(t) => Some(t.await),
        None => None,
    } {
        tracing::warn!(error = %e, "federation task failed");
    }
    if let Err(e) = meter_task.await {
        tracing::warn!(error = %e, "usage flush task failed");
    }
    bus.shutdown().await;
    tracing::info!("ampd stopped");
    served.context("serving HTTP failed")
}

/// Deletes expired mailbox entries every `interval` until `shutdown` triggers.
fn spawn_purge(store: Store, interval: Duration, shutdown: Shutdown) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; skip it so start-up does not wait on a sweep.
        ticks.tick().await;
        loop {
            tokio::select! {
                () = shutdown.wait() => return,
                _ = ticks.tick() => {}
            }
            let now = amp_proto::Timestamp::now().unix_millis();
            // A sweep is one bounded write; cancelling it midway on shutdown would only
            // waste it, so it runs to completion.
            match store.purge_expired(now, PURGE_BATCH).await {
                Ok(0) => {}
                Ok(removed) => {
                    metrics::counter!("amp_mailbox_purged_total").increment(removed as u64);
                    tracing::debug!(removed, "purged expired mailbox entries");
                }
                Err(e) => tracing::warn!(error = %e, "purging expired mailbox entries failed"),
            }
        }
    })
}
