//! What the parity suite runs its checks against: the single binary `ampd` (the reference)
//! or the cluster (one `nats-server`, two ingest, two router, one delivery), each behind the
//! same nginx ([`super::proxy`]), with the same domain, limits and advertised public URL.
//! A client sees one base URL; a test that must cross replicas also gets each ingest
//! replica's own URL.

use crate::NatsServer;
use amp_proto::{PublicKey, SecretKey};
use tempfile::TempDir;

use super::proxy::{Proxy, nginx_or_skip};
use super::{Deployment, Kind, Service, Topology, free_port};

/// The provider domain of every parity target.
pub const DOMAIN: &str = "parity.test";
/// The per-minute limits of every parity target: the checks send from one address, and the
/// abuse limits would be the test.
pub const LIMIT: u64 = 10_000_000;

/// What runs behind the proxy.
enum Backend {
    Ampd {
        service: Service,
        _dir: TempDir,
    },
    Cluster {
        deployment: Box<Deployment>,
        _nats: NatsServer,
    },
}

/// A provider under test, reached through nginx.
pub struct Target {
    /// `ampd` or `cluster`, for messages.
    pub name: &'static str,
    /// The proxy's base URL, `http://127.0.0.1:<port>` (also the advertised public URL).
    pub base: String,
    /// Each ingest replica's own base URL (`ampd`: its one URL, twice, so a check written
    /// for "replica A then replica B" runs unchanged).
    pub ingest: [String; 2],
    /// The provider's public key.
    pub provider_key: PublicKey,
    // Field order: the proxy stops before what it fronts.
    proxy: Proxy,
    backend: Backend,
}

impl Target {
    /// `ampd` behind nginx; `None` (after a loud line) when nginx is missing outside CI.
    ///
    /// # Panics
    /// When nginx is missing with `AMP_REQUIRE_NATS=1`, or anything fails to start.
    pub async fn ampd(test: &str) -> Option<Self> {
        let nginx = nginx_or_skip(test)?;
        let dir = tempfile::Builder::new()
            .prefix("amp-parity-ampd-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let key = SecretKey::generate();
        let key_file = dir.path().join("provider-key.pem");
        std::fs::write(&key_file, key.to_pkcs8_pem()).expect("write the provider key");
        let config = format!(
            "[server]\ndomain = {DOMAIN:?}\npublic_url = {base:?}\ndata_dir = {data:?}\n\
             shutdown_grace_secs = 2\n\n[log]\nfilter = \"info\"\nformat = \"json\"\n\n\
             [provider]\nkey_file = {key:?}\npepper_file = {pepper:?}\n\n{limits}",
            data = dir.path().join("data").display().to_string(),
            key = key_file.display().to_string(),
            pepper = dir.path().join("key-pepper").display().to_string(),
            limits = limits_toml(),
        );
        let config_file = dir.path().join("ampd.toml");
        std::fs::write(&config_file, config).expect("write ampd.toml");
        let service = Service::start(
            Kind::Ampd,
            "ampd".to_owned(),
            config_file,
            dir.path().join("ampd.log"),
            ([127, 0, 0, 1], 0).into(),
        )
        .await;
        let url = service.url();
        let proxy = Proxy::start(&nginx, port, std::slice::from_ref(&url), None);
        Some(Self {
            name: "ampd",
            base,
            ingest: [url.clone(), url],
            provider_key: key.public(),
            proxy,
            backend: Backend::Ampd { service, _dir: dir },
        })
    }

    /// The cluster behind nginx: one `nats-server`, 2 ingest, 2 router, 1 delivery; `None`
    /// (after a loud line) when nginx is missing outside CI.
    ///
    /// # Panics
    /// When nginx is missing with `AMP_REQUIRE_NATS=1`, no `nats-server` is found, or anything
    /// fails to start.
    pub async fn cluster(test: &str) -> Option<Self> {
        let nginx = nginx_or_skip(test)?;
        let nats = NatsServer::start();
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let key = SecretKey::generate();
        let mut topology = Topology::new(DOMAIN, nats.url(), 1);
        topology.replicas = [2, 2, 1, 0];
        topology.public_url = Some(base.clone());
        topology.provider_key = Some(key.clone());
        topology.mailbox_quota = 1_000_000;
        let deployment = Deployment::start(&topology).await;
        let ingest: Vec<String> = deployment.ingest.iter().map(Service::url).collect();
        let delivery = deployment.delivery[0].url();
        let proxy = Proxy::start(&nginx, port, &ingest, Some(&delivery));
        Some(Self {
            name: "cluster",
            base,
            ingest: [ingest[0].clone(), ingest[1].clone()],
            provider_key: key.public(),
            proxy,
            backend: Backend::Cluster {
                deployment: Box::new(deployment),
                _nats: nats,
            },
        })
    }

    /// Whether the two ingest URLs are different processes (the cluster).
    pub fn has_replicas(&self) -> bool {
        self.ingest[0] != self.ingest[1]
    }

    /// The tails of every log (the provider's processes and nginx), for a failure message.
    pub fn logs(&self) -> String {
        let backend = match &self.backend {
            Backend::Ampd { service, .. } => {
                let log = service.log();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                let mut out = "==== ampd (last lines)\n".to_owned();
                for line in tail.into_iter().rev() {
                    out.push_str(line);
                    out.push('\n');
                }
                out
            }
            Backend::Cluster { deployment, .. } => deployment.logs(),
        };
        format!("{backend}==== nginx\n{}", self.proxy.log())
    }
}

/// The `[ingest]` limits shared by both targets (the cluster's `Deployment` writes the same).
fn limits_toml() -> String {
    format!(
        "[ingest.registration]\nper_ip_per_minute = 100000\n\n[ingest.limits]\n\
         api_requests_per_minute = {LIMIT}\ntenant_requests_per_minute = {LIMIT}\n\
         messages_per_minute = {LIMIT}\npending_per_minute = {LIMIT}\nmailbox_quota = 1000000\n"
    )
}
