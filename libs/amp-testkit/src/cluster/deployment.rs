//! [`Topology`] (what to start) and [`Deployment`] (the replicas of every service sharing one
//! provider identity and one shared configuration file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::{Kind, Service};

/// What to start.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The provider domain.
    pub domain: String,
    /// The NATS URLs, comma-separated.
    pub nats_urls: String,
    /// Stream and bucket replicas (the NATS node count, at most 3).
    pub nats_replicas: usize,
    /// Prefix of every stream and bucket (several deployments on one NATS).
    pub prefix: String,
    /// JetStream ack wait of the consumers, in milliseconds.
    pub ack_wait_ms: u64,
    /// The base URL clients reach the deployment at (a proxy in front), when not the
    /// replica's own address.
    pub public_url: Option<String>,
    /// Replicas of ingest, router, delivery, federation.
    pub replicas: [usize; 4],
    /// Extra TOML appended to the federation service's config (and `[federation]` ones
    /// elsewhere), for peers and trust.
    pub federation_toml: String,
    /// A fixed port for each federation replica (0: any), so peers can be configured first.
    pub federation_ports: Vec<u16>,
    /// Messages a mailbox may hold.
    pub mailbox_quota: u64,
    /// The provider key to use (so peers can pin it before this deployment starts); a new
    /// one when `None`.
    pub provider_key: Option<amp_proto::SecretKey>,
    /// The `[store]` section of every service (empty: the JetStream store on `nats_urls`).
    pub store_toml: String,
    /// How long a test may wait for the routers to store what was accepted (a CQL store on
    /// one local Cassandra node stores far slower than JetStream).
    pub drain_timeout: Duration,
    /// Ingest's `[ingest.messaging] outcome_wait_ms` (`None`: its default). 0 makes every
    /// route answer `202 queued` at once, so what happens after is a bounce.
    pub outcome_wait_ms: Option<u64>,
    /// `[nats] ingress_partitions`: streams the ingress work is split into.
    pub ingress_partitions: usize,
    /// A directory holding `<service>.password` files: each service then logs in to NATS as
    /// the user named like it, through `AMP__NATS__AUTH__USER` and
    /// `AMP__NATS__AUTH__PASSWORD_FILE` (as the chart sets them). `None`: no credentials.
    pub nats_passwords: Option<PathBuf>,
    /// `[ingest.limits] messages_per_minute` (the tests' default: high enough never to be
    /// the test).
    pub messages_per_minute: u32,
    /// `[nats] limits_sync_ms` (`None`: its default): how often replicas share their rate
    /// limiters' counts; 0 turns the sharing off.
    pub limits_sync_ms: Option<u64>,
    /// `[delivery] reauth_secs` (`None`: its default): how often each socket re-checks its
    /// key whatever the registry events said.
    pub reauth_secs: Option<u64>,
    /// TOML appended to the shared file (tables the file does not have already, e.g.
    /// `[router.risk]`).
    pub extra_toml: String,
}

impl Topology {
    /// 2 ingest, 2 router, 2 delivery, no federation, on `nats_urls`.
    pub fn new(domain: &str, nats_urls: String, nats_replicas: usize) -> Self {
        Self {
            domain: domain.to_owned(),
            nats_urls,
            nats_replicas,
            prefix: String::new(),
            ack_wait_ms: 30_000,
            public_url: None,
            replicas: [2, 2, 2, 0],
            federation_toml: String::new(),
            federation_ports: Vec::new(),
            mailbox_quota: 1_000_000,
            outcome_wait_ms: None,
            ingress_partitions: 1,
            provider_key: None,
            store_toml: String::new(),
            drain_timeout: Duration::from_secs(30),
            nats_passwords: None,
            messages_per_minute: 10_000_000,
            limits_sync_ms: None,
            reauth_secs: None,
            extra_toml: String::new(),
        }
    }

    /// Every service on the CQL store at `contact_point`, in `keyspace` (created at start).
    pub fn with_cql_store(mut self, contact_point: &str, keyspace: &str) -> Self {
        self.store_toml = format!(
            "[store]\nbackend = \"cql\"\n\n[store.cql]\ncontact_points = [{contact_point:?}]\n\
             keyspace = {keyspace:?}\nreplication_factor = 1\n\n"
        );
        self.drain_timeout = Duration::from_secs(180);
        self
    }
}

/// Replicas of every service sharing one provider identity.
pub struct Deployment {
    /// Ingest replicas.
    pub ingest: Vec<Service>,
    /// Router replicas.
    pub router: Vec<Service>,
    /// Delivery replicas.
    pub delivery: Vec<Service>,
    /// Federation replicas.
    pub federation: Vec<Service>,
    /// The provider key (PKCS#8 PEM) every replica signs with.
    pub provider_key: amp_proto::SecretKey,
    /// The provider domain.
    pub domain: String,
    /// [`Topology::drain_timeout`].
    pub drain_timeout: Duration,
    // Last: the processes are killed (on drop) before their files go.
    dir: TempDir,
}

impl Deployment {
    /// Writes the configs and the shared key and pepper, then starts every replica (routers
    /// and delivery first, so ingest never publishes into a stream nobody consumes yet).
    ///
    /// # Panics
    /// When a replica does not start.
    pub async fn start(t: &Topology) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("amp-cluster-")
            .tempdir()
            .expect("temp dir");
        let key_file = dir.path().join("provider-key.pem");
        let pepper_file = dir.path().join("key-pepper");
        if let Some(key) = &t.provider_key {
            std::fs::write(&key_file, key.to_pkcs8_pem()).expect("write the provider key");
        }
        let provider_key =
            amp_runtime::identity::load_or_create_key(&key_file).expect("provider key");
        amp_runtime::identity::load_or_create_pepper(&pepper_file).expect("pepper");
        let federation = t.replicas[3] > 0;
        let capabilities = if federation {
            "capabilities = [\"registration\", \"relay-queue\", \"websockets\", \"webhooks\", \"federation\"]\n"
        } else {
            ""
        };
        // One file for every binary, as one ConfigMap in Kubernetes: each reads its own
        // sections. The tests are floods from one address: the abuse limits would be the
        // test. A short resync: a hint lost with a killed NATS node reaches its socket in
        // seconds, not the production minute.
        let text = format!(
            "{capabilities}\n[server]\ndomain = {domain:?}\nkey_file = {key:?}\npepper_file = {pepper:?}\n\
             shutdown_grace_secs = 2\n{public_url}\n[log]\nfilter = \"info\"\n\n\
             [nats]\nurls = {urls:?}\nreplicas = {replicas}\nprefix = {prefix:?}\nack_wait_ms = {ack}\n\
             ingress_partitions = {partitions}\n{sync}\n\
             {store}\n\
             [ingest.registration]\nper_ip_per_minute = 100000\n\n\
             [ingest.limits]\napi_requests_per_minute = 10000000\n\
             tenant_requests_per_minute = 10000000\nmessages_per_minute = {messages}\n\
             pending_per_minute = 10000000\nmailbox_quota = {quota}\n{outcome}\n\
             [delivery]\nresync_secs = 3\n{reauth}\n[federation]\n{federation_toml}\n\n{extra}\n",
            domain = t.domain,
            public_url = t
                .public_url
                .as_ref()
                .map(|u| format!("public_url = {u:?}\n"))
                .unwrap_or_default(),
            key = key_file.display().to_string(),
            pepper = pepper_file.display().to_string(),
            urls = t.nats_urls,
            replicas = t.nats_replicas,
            prefix = t.prefix,
            ack = t.ack_wait_ms,
            partitions = t.ingress_partitions,
            sync = t
                .limits_sync_ms
                .map_or_else(String::new, |ms| format!("limits_sync_ms = {ms}\n")),
            messages = t.messages_per_minute,
            store = t.store_toml,
            quota = t.mailbox_quota,
            outcome = t.outcome_wait_ms.map_or_else(String::new, |ms| format!(
                "\n[ingest.messaging]\noutcome_wait_ms = {ms}\n"
            )),
            federation_toml = t.federation_toml,
            reauth = t
                .reauth_secs
                .map_or_else(String::new, |s| format!("reauth_secs = {s}\n")),
            extra = t.extra_toml,
        );
        let config_path = dir.path().join("cluster.toml");
        std::fs::write(&config_path, text).expect("write the config");
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        let start = async |kind: Kind, n: usize, ports: &[u16]| {
            let mut out = Vec::new();
            let path = &config_path;
            for i in 0..n {
                let name = format!("{}-{}", kind.name(), i + 1);
                let listen = ports
                    .get(i)
                    .map_or(any, |p| SocketAddr::from(([127, 0, 0, 1], *p)));
                let log = dir.path().join(format!("{name}.log"));
                let env = t
                    .nats_passwords
                    .as_ref()
                    .map(|dir| {
                        let file = dir.join(format!("{}.password", kind.name()));
                        vec![
                            ("AMP__NATS__AUTH__USER".to_owned(), kind.name().to_owned()),
                            (
                                "AMP__NATS__AUTH__PASSWORD_FILE".to_owned(),
                                file.display().to_string(),
                            ),
                        ]
                    })
                    .unwrap_or_default();
                out.push(Service::start_with_env(kind, name, path.clone(), log, listen, env).await);
            }
            out
        };
        let router = start(Kind::Router, t.replicas[1], &[]).await;
        let federation = start(Kind::Federation, t.replicas[3], &t.federation_ports).await;
        let delivery = start(Kind::Delivery, t.replicas[2], &[]).await;
        let ingest = start(Kind::Ingest, t.replicas[0], &[]).await;
        Self {
            ingest,
            router,
            delivery,
            federation,
            provider_key,
            domain: t.domain.clone(),
            drain_timeout: t.drain_timeout,
            dir,
        }
    }

    /// Every replica's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for s in self
            .ingest
            .iter()
            .chain(&self.router)
            .chain(&self.delivery)
            .chain(&self.federation)
        {
            let log = s.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            out.push_str(&format!("==== {} (last lines)\n", s.name));
            for line in tail.into_iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The directory holding configs, keys and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
