//! An in-process `ampd` on a free port with its own data directory and raised limits.

use std::time::Duration;

use amp_client::{Client, Identity};
use amp_proto::SecretKey;
use amp_runtime::Shutdown;

/// The default provider domain of `ampd::Config`.
pub(crate) const DOMAIN: &str = "amp.test";

pub(crate) struct Provider {
    pub(crate) url: String,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Provider {
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with `tweak` applied to the configuration last.
    pub(crate) async fn start_with(tweak: impl FnOnce(&mut ampd::Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = ampd::Config::default();
        config.server.data_dir = dir.path().to_owned();
        config.server.shutdown_grace_secs = 1;
        config.ingest.registration.per_ip_per_minute = 100_000;
        let limits = &mut config.ingest.limits;
        limits.api_requests_per_minute = 100_000;
        limits.tenant_requests_per_minute = 100_000;
        limits.messages_per_minute = 100_000;
        limits.pending_per_minute = 100_000;
        limits.mailbox_quota = 100_000;
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = Shutdown::new();
        let task = tokio::spawn(ampd::run(config, listener, shutdown.clone()));
        let provider = Self {
            url,
            shutdown,
            task,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{}/readyz", provider.url)).send().await
                && r.status() == 200
            {
                return provider;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("ampd did not become ready");
    }

    pub(crate) fn client(&self) -> Client {
        Client::new(&self.url).expect("client")
    }

    pub(crate) async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("run returns after shutdown")
            .expect("join")
            .expect("run succeeds");
    }
}

/// A tenant name no other test uses.
pub(crate) fn tenant(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand_suffix())
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

pub(crate) async fn register(client: &Client, tenant: &str, name: &str) -> Identity {
    client
        .register(Some(tenant), name, &SecretKey::generate(), None)
        .await
        .expect("register")
}
