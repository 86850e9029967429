//! What every cluster binary (`ingest`, `router`, `delivery`) shares, so each `main.rs` stays
//! a screenful: the NATS section (with its credentials and TLS, `[nats.auth]` and
//! `[nats.tls]`, see `amp-nats`) and the connection to the JetStream bus and store, the
//! server section, and serving a router with the ops endpoints until a signal.
//!
//! Every replica of every service is stateless apart from NATS: any may be killed at any
//! moment (ARCHITECTURE §2).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use amp_bus::Bus;
use amp_bus::jetstream::{JetStreamBus, JetStreamConfig};
use amp_runtime::Shutdown;
use amp_runtime::http::harden;
use amp_runtime::ops::{Readiness, ops_router};
use amp_store::cql::{CqlStore, CqlStoreConfig};
use amp_store::jetstream::{JetStreamStore, JetStreamStoreConfig};
use amp_store::{Composed, Store};
use anyhow::Context;
use axum::Router;
use futures::FutureExt;
use serde::Deserialize;

/// The flags every cluster binary takes; anything else goes in the config file or `AMP__…`
/// environment variables (defaults < file < environment < flags).
#[derive(Debug, clap::Args)]
pub struct Flags {
    /// TOML config file; `AMP__SECTION__KEY` environment variables override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (server.listen, AMP__SERVER__LISTEN).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// NATS URLs, comma-separated (nats.urls, AMP__NATS__URLS).
    #[arg(long, value_name = "URLS")]
    pub nats: Option<String>,
    /// Apply the store's schema migrations (the CQL store) and exit, without serving.
    #[arg(long)]
    pub migrate: bool,
}

impl Flags {
    /// Loads the binary's configuration, the flags given winning over everything else.
    ///
    /// Fails when the file cannot be read or a value does not fit its key.
    pub fn load<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        let mut overrides = Vec::new();
        if let Some(v) = &self.listen {
            overrides.push(("server.listen".to_owned(), v.clone()));
        }
        if let Some(v) = &self.nats {
            overrides.push(("nats.urls".to_owned(), v.clone()));
        }
        Ok(amp_runtime::config::load(
            self.config.as_deref(),
            "AMP",
            &overrides,
        )?)
    }
}

/// Another service's section of the one configuration file every binary of a deployment
/// reads (one ConfigMap): accepted whole and not looked at. The owner checks it, so a
/// misspelt key inside still fails there, and a misspelt section name fails everywhere
/// (every binary lists every section).
pub type OtherSection = serde::de::IgnoredAny;

/// What delivery (its WebSocket `route` frames) and federation (inbound messages) read of
/// `[ingest]`: the acceptance policy and the mailbox quota, so a message is accepted the
/// same way whichever service takes it. Ingest checks the whole section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct IngestView {
    /// `[ingest.messaging]`.
    pub messaging: amp_messaging::MessagingConfig,
    /// `[ingest.limits]`, of which only the quota.
    pub limits: LimitsView,
    /// `[ingest.plan]`: the default tenant plan.
    pub plan: amp_store::operator::PlanLimits,
}

/// `[ingest.limits]` as other services see it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LimitsView {
    /// Messages a mailbox holds (ingest's default: 1000).
    pub mailbox_quota: u64,
}

impl Default for LimitsView {
    fn default() -> Self {
        Self {
            mailbox_quota: 1000,
        }
    }
}

impl IngestView {
    /// The acceptance policy with the quota in it.
    pub fn messaging(&self) -> amp_messaging::MessagingConfig {
        let mut m = self.messaging.clone();
        m.mailbox_quota = self.limits.mailbox_quota;
        m.plan = self.plan;
        m
    }
}

/// Whether the deployment's `capabilities` (top level, as ingest advertises them) include
/// `federation`: then remote recipients are accepted.
pub fn federates(capabilities: Option<&[String]>) -> bool {
    capabilities.is_some_and(|c| c.iter().any(|c| c == "federation"))
}

/// The end of a binary's `main`: `Ok` exits 0; an error prints one line, `error: ` and the
/// chain of causes (never a backtrace, whatever `RUST_BACKTRACE` says), and exits 2 for a
/// configuration error, 1 for any other.
pub fn exit(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let config = e.is::<amp_runtime::config::ConfigError>();
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(if config { 2 } else { 1 })
        }
    }
}

/// Where NATS is and how its streams and buckets are laid out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URLs (`nats://host:4222`), any of the cluster's nodes, comma-separated.
    pub urls: String,
    /// Stream and bucket replicas: 3 in production, 1 for a single node.
    pub replicas: usize,
    /// Prefix of every stream, bucket and subject (to run several deployments on one NATS).
    pub prefix: String,
    /// How long a consumed message may stay unacknowledged before JetStream hands it to
    /// another replica (a router that hangs), in milliseconds.
    pub ack_wait_ms: u64,
    /// Streams the ingress work is split into (`AMP_INGRESS`, `AMP_INGRESS_1`, …), each with
    /// its own leader placed by JetStream across the NATS nodes, so routing grows past what
    /// one stream leader can take. One mailbox's messages always share a partition. The
    /// same value in every binary; lowering it drains the higher partitions first. 1 to 64.
    pub ingress_partitions: usize,
    /// Messages a router worker pulls at once from a stream (1: a message never waits in a
    /// busy worker while another is idle).
    pub fetch_batch: usize,
    /// Most writes to one stream committed together (JetStream atomic batches: one request
    /// and one acknowledgement for all of them; one Raft proposal on a replicated stream)
    /// when many are under way at once: federation hand-offs and mailbox writes. A lone write
    /// is never delayed. Default 1, no batching: on a single-replica file stream the server
    /// stages each batch in a file store of its own and still fsyncs every message, which
    /// cost more than it saved (`deploy/CAPACITY.md`); measure before raising it on
    /// replicated streams.
    pub publish_batch: usize,
    /// Most routed messages carried by one ingress stream message (a pack: one write and one
    /// fsync on the server, one delivery and one ack for all of them) when many are under
    /// way at once. A lone message is never delayed. 1 turns packing off. Every binary reads
    /// packs whatever this is.
    pub ingress_pack: usize,
    /// Streams the JetStream store spreads the mailboxes over (`AMP_MAILBOX`,
    /// `AMP_MAILBOX_1`, …; an agent's mailbox lives whole in one, by a stable hash of its
    /// id). Each has its own leader, write queue and fsync, so mailbox writes are not capped
    /// by one stream's (with `sync_interval: always`, one disk flush per write in turn).
    /// Fixed when the store is created: unset, a binary uses what the store has (4 for a new
    /// store, 1 for one from before partitions); set, a binary with another value than the
    /// store's refuses to start. 1 to 64. The CQL store ignores it.
    pub mailbox_partitions: Option<usize>,
    /// `[nats.auth]`: this service's NATS user: `user` and `password_file`, or
    /// `nkey_seed_file`, or `credentials_file` (secrets in files, never inline). Unset:
    /// no credentials.
    pub auth: amp_nats::NatsAuth,
    /// How often, in milliseconds, each replica tells the others what its rate limiters
    /// counted, so every limit (per agent, per tenant, per address, federation) holds for the
    /// cluster as a whole rather than per replica: the cluster over-allows a key by at most
    /// what the other replicas allowed it in one interval (`amp_runtime::ratelimit` has the
    /// exact bound). 0: each replica limits alone (N replicas give N times the limits).
    pub limits_sync_ms: u64,
    /// `[nats.tls]`: `ca_file` (the CA the servers' certificates chain to), `cert_file` and
    /// `key_file` (a client certificate), `required`. Any of them makes TLS required.
    pub tls: amp_nats::NatsTls,
}

impl NatsConfig {
    /// The credentials and TLS settings, as the bus and store take them.
    pub fn security(&self) -> amp_nats::NatsSecurity {
        amp_nats::NatsSecurity {
            auth: self.auth.clone(),
            tls: self.tls.clone(),
        }
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            urls: "nats://127.0.0.1:4222".into(),
            replicas: 1,
            prefix: String::new(),
            ack_wait_ms: 30_000,
            ingress_partitions: 1,
            fetch_batch: 1,
            publish_batch: 1,
            ingress_pack: 128,
            mailbox_partitions: None,
            limits_sync_ms: 100,
            auth: amp_nats::NatsAuth::default(),
            tls: amp_nats::NatsTls::default(),
        }
    }
}

/// Which store the cluster keeps its state in (`[store] backend`, `AMP__STORE__BACKEND`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// NATS JetStream (streams and KV buckets): nothing to run but NATS. The default.
    #[default]
    Jetstream,
    /// ScyllaDB (or Cassandra) over CQL: mailboxes at scale (`[store.cql]`).
    Cql,
    /// The embedded single-process store: only `ampd` can use it.
    Redb,
}

/// The `[store]` section of every cluster binary.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `jetstream` (default) or `cql`.
    pub backend: StoreBackend,
    /// The CQL cluster, when a concern is on `cql`.
    pub cql: CqlStoreConfig,
    /// Another backend for one concern (`presence = "jetstream"` keeps the short-lived
    /// session leases in NATS while mailboxes are in ScyllaDB); unset: `backend`.
    pub registry: Option<StoreBackend>,
    /// See `registry`.
    pub mailboxes: Option<StoreBackend>,
    /// See `registry`.
    pub receipts: Option<StoreBackend>,
    /// See `registry`.
    pub jobs: Option<StoreBackend>,
    /// See `registry`.
    pub presence: Option<StoreBackend>,
    /// See `registry`.
    pub kv: Option<StoreBackend>,
    /// Where attachment bytes live (`[store.blobs]`).
    pub blobs: BlobsConfig,
}

/// Where the cluster keeps attachment bytes (`[store.blobs]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobsConfig {
    /// `jetstream` (default: the object store `amp_attachments` on the deployment's NATS)
    /// or `s3` (`[store.blobs.s3]`).
    pub backend: BlobsBackend,
    /// The S3-compatible bucket, when `backend = "s3"`.
    pub s3: amp_store::s3::S3BlobsConfig,
}

/// The attachment blob backends of the cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobsBackend {
    /// The NATS JetStream object store. The default.
    #[default]
    Jetstream,
    /// S3-compatible object storage.
    S3,
}

/// The HTTP side of a service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The provider domain.
    pub domain: String,
    /// The public base URL clients call (required behind a load balancer).
    pub public_url: Option<String>,
    /// Seconds to drain in-flight requests after a signal.
    pub shutdown_grace_secs: u64,
    /// Largest request body, in bytes.
    pub body_limit_bytes: usize,
    /// `[server.connections]`: header, body and idle timeouts and connection caps of the
    /// listener (and of ingest's admin API).
    pub connections: amp_runtime::listener::ConnectionLimits,
    /// The provider key file (PKCS#8 PEM), shared by every replica (a mounted secret).
    pub key_file: PathBuf,
    /// The API-key pepper file (hex), shared by every replica (a mounted secret).
    pub pepper_file: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            domain: "amp.test".into(),
            public_url: None,
            shutdown_grace_secs: 10,
            body_limit_bytes: 532_480,
            connections: amp_runtime::listener::ConnectionLimits::default(),
            key_file: PathBuf::from("/var/lib/amp/provider-key.pem"),
            pepper_file: PathBuf::from("/var/lib/amp/key-pepper"),
        }
    }
}

impl ServerConfig {
    /// The public URL, or one derived from the bound address.
    pub fn public_url(&self, bound: SocketAddr) -> String {
        self.public_url
            .clone()
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("http://{bound}"))
    }
}

/// Connects the JetStream bus and the configured store.
///
/// Fails when NATS or the store cannot be reached, their streams, buckets or schema cannot
/// be created, or the backend is one a cluster cannot share (`redb`).
pub async fn connect(nats: &NatsConfig, config: &StoreConfig) -> anyhow::Result<(Bus, Store)> {
    let urls = nats_urls(nats);
    let bus = JetStreamBus::connect_bus(JetStreamConfig {
        urls: urls.clone(),
        replicas: nats.replicas,
        prefix: nats.prefix.clone(),
        ack_wait: Duration::from_millis(nats.ack_wait_ms.max(100)),
        ingress_partitions: nats.ingress_partitions,
        fetch_batch: nats.fetch_batch,
        publish_batch: nats.publish_batch,
        ingress_pack: nats.ingress_pack,
        security: nats.security(),
        limits_sync: Duration::from_millis(nats.limits_sync_ms),
        ..JetStreamConfig::default()
    })
    .await
    .context("cannot connect the JetStream bus")?;
    // Each backend a concern names is connected once and shared by its concerns.
    let mut opened: Vec<(StoreBackend, Arc<dyn amp_store::StoreBackend>)> = Vec::new();
    let mut open = async |kind: StoreBackend| -> anyhow::Result<Arc<dyn amp_store::StoreBackend>> {
        if let Some((_, b)) = opened.iter().find(|(k, _)| *k == kind) {
            return Ok(b.clone());
        }
        let backend: Arc<dyn amp_store::StoreBackend> = match kind {
            StoreBackend::Jetstream => Arc::new(
                JetStreamStore::connect(JetStreamStoreConfig {
                    urls: urls.clone(),
                    replicas: nats.replicas,
                    prefix: nats.prefix.clone(),
                    security: nats.security(),
                    publish_batch: nats.publish_batch,
                    mailbox_partitions: nats.mailbox_partitions,
                    ..JetStreamStoreConfig::default()
                })
                .await
                .context("cannot connect the JetStream store")?,
            ),
            StoreBackend::Cql => Arc::new(
                CqlStore::connect(config.cql.clone())
                    .await
                    .context("cannot connect the CQL store")?,
            ),
            StoreBackend::Redb => anyhow::bail!(
                "store backend \"redb\" is the single-process store of ampd; a cluster needs \"jetstream\" or \"cql\""
            ),
        };
        opened.push((kind, backend.clone()));
        Ok(backend)
    };
    let pick = |c: Option<StoreBackend>| c.unwrap_or(config.backend);
    let store = Store::new(
        Composed::new(open(config.backend).await?)
            .with_registry(open(pick(config.registry)).await?)
            .with_mailboxes(open(pick(config.mailboxes)).await?)
            .with_receipts(open(pick(config.receipts)).await?)
            .with_jobs(open(pick(config.jobs)).await?)
            .with_presence(open(pick(config.presence)).await?)
            .with_kv(open(pick(config.kv)).await?),
    );
    tracing::info!(backend = ?config.backend, "store connected");
    Ok((bus, store))
}

/// Connects the blob store of attachment bytes: the JetStream object store on the
/// deployment's NATS (bucket `amp_attachments` under the prefix), or the S3-compatible bucket
/// of `[store.blobs.s3]`.
///
/// Fails when NATS cannot be reached or the bucket cannot be created, or when the S3 settings
/// are invalid.
pub async fn connect_blobs(
    nats: &NatsConfig,
    blobs: &BlobsConfig,
) -> anyhow::Result<amp_store::blob::Blobs> {
    if blobs.backend == BlobsBackend::S3 {
        let s3 = amp_store::s3::S3Blobs::open(&blobs.s3).map_err(anyhow::Error::msg)?;
        tracing::info!(bucket = %blobs.s3.bucket, prefix = %blobs.s3.prefix, "attachment bytes in S3-compatible storage");
        return Ok(amp_store::blob::Blobs::new(s3));
    }
    let blobs = amp_store::jetstream::JetStreamBlobs::connect(&JetStreamStoreConfig {
        urls: nats_urls(nats),
        replicas: nats.replicas,
        prefix: nats.prefix.clone(),
        security: nats.security(),
        ..JetStreamStoreConfig::default()
    })
    .await
    .context("cannot connect the attachment object store")?;
    Ok(amp_store::blob::Blobs::new(blobs))
}

fn nats_urls(nats: &NatsConfig) -> Vec<String> {
    nats.urls
        .split(',')
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect()
}

/// What `--migrate` does: applies the store's schema migrations and returns. Only the CQL
/// store has a schema; for JetStream the streams and buckets are created at start-up.
///
/// Fails when the store cannot be reached or a migration is refused.
pub async fn migrate(store: &StoreConfig) -> anyhow::Result<()> {
    match store.backend {
        StoreBackend::Cql => {
            let version = CqlStore::migrate(&store.cql)
                .await
                .context("cannot migrate the CQL store")?;
            println!(
                "CQL schema of keyspace {} is at version {version}",
                store.cql.keyspace
            );
        }
        other => println!("the {other:?} store has no schema to migrate"),
    }
    Ok(())
}

/// Prints `listening on <addr>` (the first stdout line, which scripts and tests read), then
/// serves `app` (hardened, with `/healthz`, `/readyz` checking the store, `/metrics`) on
/// `listener` until `shutdown`. Then, in this order: the service's `workers` finish their
/// current work (at most the grace period), the bus and store close, the last spans are
/// flushed — so no worker writes to a closed store and no span of it is lost.
///
/// Fails when the address cannot be read or serving fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    store: Store,
    bus: Bus,
    server: &ServerConfig,
    shutdown: Shutdown,
    workers: Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("cannot read the listener's address")?;
    println!("listening on {addr}");
    tracing::info!(addr = %addr, "listening");
    let readiness = Readiness::new();
    let ready_store = store.clone();
    readiness.add("store", move || {
        let store = ready_store.clone();
        async move { store.ready().await }.boxed()
    });
    readiness.follow(&shutdown);
    let app = harden(app.merge(ops_router(readiness)), server.body_limit_bytes);
    let grace = Duration::from_secs(server.shutdown_grace_secs);
    let served =
        amp_runtime::shutdown::serve(listener, app, &server.connections, shutdown.clone(), grace)
            .await;
    shutdown.trigger();
    let drained = tokio::time::timeout(grace, futures::future::join_all(workers)).await;
    if drained.is_err() {
        tracing::warn!("workers still busy after the grace period; closing anyway");
    }
    bus.shutdown().await;
    let _ = store.close().await;
    // The last spans, before the process exits (a no-op with tracing off).
    amp_runtime::telemetry::flush().await;
    served.context("serving HTTP failed")
}

/// The common start of a binary: logs, metrics, signals.
pub fn start(log: &amp_runtime::telemetry::LogConfig) -> Shutdown {
    amp_runtime::telemetry::init(log);
    amp_runtime::metrics::install();
    let shutdown = Shutdown::new();
    shutdown.listen_for_signals();
    shutdown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_section_names_a_backend_per_concern() {
        let c: StoreConfig = toml::from_str(
            "backend = \"cql\"\npresence = \"jetstream\"\n[cql]\ncontact_points = \"a:9042,b:9042\"\n",
        )
        .expect("parse");
        assert_eq!(c.backend, StoreBackend::Cql);
        assert_eq!(c.presence, Some(StoreBackend::Jetstream));
        assert_eq!(c.mailboxes, None);
        assert_eq!(c.cql.contact_points, ["a:9042", "b:9042"]);
        assert!(toml::from_str::<StoreConfig>("backend = \"sqlite\"").is_err());
        assert!(toml::from_str::<StoreConfig>("mailbox = \"cql\"").is_err());
    }

    #[derive(Debug, Deserialize)]
    struct WithNats {
        #[serde(default)]
        nats: NatsConfig,
    }

    #[test]
    fn security_nats_login_comes_from_the_file_and_env_as_deployments_set_it() {
        // The chart puts [nats.tls] in the shared file and each service's login in its env.
        let dir = std::env::temp_dir().join(format!("amp-cluster-nats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("cluster.toml");
        std::fs::write(
            &file,
            "[nats]\nurls = \"tls://n:4222\"\n[nats.tls]\nca_file = \"/ca.crt\"\n",
        )
        .expect("write");
        let env = [
            ("AMP__NATS__AUTH__USER", "router"),
            (
                "AMP__NATS__AUTH__PASSWORD_FILE",
                "/run/amp/nats-auth/credential",
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let c: WithNats =
            amp_runtime::config::load_with_env(Some(&file), "AMP", env, &[]).expect("load");
        let _ = std::fs::remove_dir_all(&dir);
        let s = c.nats.security();
        assert_eq!(s.auth.user.as_deref(), Some("router"));
        assert_eq!(
            s.auth.password_file.as_deref(),
            Some(std::path::Path::new("/run/amp/nats-auth/credential"))
        );
        assert!(s.tls.is_required());
        assert!(s.validate().is_ok());
        // A password inline is not a key: secrets come from files.
        assert!(toml::from_str::<WithNats>("[nats.auth]\npassword = \"x\"").is_err());
        assert!(NatsConfig::default().security() == amp_nats::NatsSecurity::default());
    }
}
