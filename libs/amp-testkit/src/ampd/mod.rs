//! `ampd` for the end-to-end suites (feature `ampd`).
//!
//! - [`Ampd`]: the whole provider in this process ([`ampd::run`] on a loopback port), with
//!   [`test_config`] (the one "every limit at 100,000" setup) and a test's tweak applied,
//!   waited for until `/readyz` answers; requests and registration through it.
//! - [`AmpdHome`]: what an in-process `ampd` keeps across restarts: a loopback port held from
//!   the start (so peers can be configured with it first) and a data directory, optionally a
//!   provider key fixed in advance.
//! - [`AmpdProcess`]: the built `ampd` binary as a child process: started, killed with
//!   SIGKILL, restarted on the same data, stopped with SIGTERM.

mod embedded;
mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use amp_proto::SecretKey;
use amp_runtime::Shutdown;
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::Value;
use tempfile::TempDir;
use tokio::task::JoinHandle;

use crate::agent::{self, Agent};
use crate::http::{Resp, call};

pub use ::ampd::{Config, StoreBackend};
pub use embedded::Embedded;
pub use process::{AmpdProcess, GRACE_SECS, ampd_command};

/// How long `ampd` may take to become ready: generous, a loaded CI machine runs many at once.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `ampd` may take to return after its shutdown is triggered.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The suites' configuration: a 1 s shutdown grace period and every per-minute limit and the
/// mailbox quota at 100,000, so that the abuse limits are never what a test measures; and
/// the embedded store [`embedded_backend`] names.
pub fn test_config(config: &mut ::ampd::Config) {
    config.server.shutdown_grace_secs = 1;
    if let Some(backend) = embedded_backend() {
        config.store.backend = backend;
    }
    config.ingest.registration.per_ip_per_minute = 100_000;
    let limits = &mut config.ingest.limits;
    limits.api_requests_per_minute = 100_000;
    limits.tenant_requests_per_minute = 100_000;
    limits.messages_per_minute = 100_000;
    limits.pending_per_minute = 100_000;
    limits.mailbox_quota = 100_000;
}

/// The embedded store the suites run on when the caller's environment names one
/// (`AMP__STORE__BACKEND=redb` or `fjall`, as for `ampd` itself), so one suite proves both;
/// `None` (ampd's default: fjall in a new data directory) otherwise. A test that picks a backend itself still does.
pub fn embedded_backend() -> Option<::ampd::StoreBackend> {
    match std::env::var("AMP__STORE__BACKEND").ok()?.as_str() {
        "redb" => Some(::ampd::StoreBackend::Redb),
        "fjall" => Some(::ampd::StoreBackend::Fjall),
        _ => None,
    }
}

/// A port and a data directory for an in-process `ampd`, kept across its restarts. Cheap to
/// clone: clones share the port, the directory and the key.
#[derive(Clone)]
pub struct AmpdHome {
    addr: SocketAddr,
    dir: Arc<TempDir>,
    /// The port's listener, held from [`AmpdHome::new`] until the first start takes it (a
    /// released port can be taken by another socket before it is bound again).
    reserved: Arc<Mutex<Option<std::net::TcpListener>>>,
    key: Option<SecretKey>,
}

impl AmpdHome {
    /// A free loopback port, held until the first start, and a fresh data directory.
    ///
    /// # Panics
    /// When no port can be bound or no directory made.
    pub fn new() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("addr");
        Self {
            addr,
            dir: Arc::new(tempfile::tempdir().expect("tempdir")),
            reserved: Arc::new(Mutex::new(Some(listener))),
            key: None,
        }
    }

    /// The provider signs with `key` (written to the data directory at each start), so peers
    /// can pin it before it starts.
    pub fn with_key(mut self, key: SecretKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The provider key fixed with [`with_key`](Self::with_key).
    pub fn key(&self) -> Option<&SecretKey> {
        self.key.as_ref()
    }

    /// The loopback address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the provider key is written when one is fixed.
    fn key_file(&self) -> PathBuf {
        self.dir.path().join("provider-key.pem")
    }

    /// The configuration a start uses before its tweak: the defaults, this data directory,
    /// [`test_config`] and the fixed key's file.
    fn config(&self) -> ::ampd::Config {
        let mut config = ::ampd::Config::default();
        config.server.data_dir = self.dir.path().to_owned();
        test_config(&mut config);
        if self.key.is_some() {
            config.provider.key_file = Some(self.key_file());
        }
        config
    }

    /// Starts `ampd` here with [`test_config`], then `tweak` applied, and waits until it is
    /// ready.
    ///
    /// # Panics
    /// When it does not become ready (the panic says why).
    pub async fn start_with(&self, tweak: impl FnOnce(&mut ::ampd::Config)) -> Ampd {
        match self.try_start_with(tweak).await {
            Ok(ampd) => ampd,
            Err(why) => panic!("ampd did not become ready: {why}"),
        }
    }

    /// [`start_with`](Self::start_with), answering why `ampd` did not start instead of
    /// panicking (a port it was told to listen on taken meanwhile, for example), so a caller
    /// can retry.
    ///
    /// # Errors
    /// When the port cannot be bound again, `ampd::run` ends during the start (its error), or
    /// `/readyz` does not answer 200 within [`READY_TIMEOUT`].
    pub async fn try_start_with(
        &self,
        tweak: impl FnOnce(&mut ::ampd::Config),
    ) -> Result<Ampd, String> {
        if let Some(key) = &self.key
            && !self.key_file().exists()
        {
            write_key(&self.key_file(), key)?;
        }
        let mut config = self.config();
        tweak(&mut config);
        let held = self.reserved.lock().take();
        let listener = match held {
            Some(l) => {
                l.set_nonblocking(true)
                    .map_err(|e| format!("nonblocking: {e}"))?;
                tokio::net::TcpListener::from_std(l)
                    .map_err(|e| format!("the reserved listener: {e}"))?
            }
            // A restart: the port was released when the last run stopped.
            None => tokio::net::TcpListener::bind(self.addr)
                .await
                .map_err(|e| format!("bind {} again: {e}", self.addr))?,
        };
        let shutdown = Shutdown::new();
        let run = ::ampd::run(config, listener, shutdown.clone());
        let task = tokio::spawn(async move { run.await.map_err(|e| format!("{e:#}")) });
        let mut ampd = Ampd {
            home: self.clone(),
            url: self.url(),
            http: reqwest::Client::new(),
            shutdown,
            task: Some(task),
        };
        ampd.wait_ready().await?;
        Ok(ampd)
    }
}

impl Default for AmpdHome {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes `key` as a PKCS#8 PEM file readable by its owner only.
fn write_key(path: &Path, key: &SecretKey) -> Result<(), String> {
    std::fs::write(path, key.to_pkcs8_pem()).map_err(|e| format!("write the key file: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod the key file: {e}"))?;
    }
    Ok(())
}

/// A running in-process `ampd`; its shutdown is triggered when dropped.
pub struct Ampd {
    home: AmpdHome,
    url: String,
    /// A client for requests to it.
    pub http: reqwest::Client,
    shutdown: Shutdown,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl Drop for Ampd {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

impl Ampd {
    /// Starts `ampd` in a fresh [`AmpdHome`] with [`test_config`].
    ///
    /// # Panics
    /// When it does not become ready.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts `ampd` in a fresh [`AmpdHome`] with [`test_config`], then `tweak` applied.
    ///
    /// # Panics
    /// When it does not become ready (the panic says why).
    pub async fn start_with(tweak: impl FnOnce(&mut ::ampd::Config)) -> Self {
        AmpdHome::new().start_with(tweak).await
    }

    /// [`start_with`](Self::start_with), answering why `ampd` did not start instead of
    /// panicking.
    ///
    /// # Errors
    /// As [`AmpdHome::try_start_with`].
    pub async fn try_start_with(tweak: impl FnOnce(&mut ::ampd::Config)) -> Result<Self, String> {
        AmpdHome::new().try_start_with(tweak).await
    }

    /// Waits until `/readyz` answers 200, at most [`READY_TIMEOUT`]; the probe keeps no
    /// connection open.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let probe = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("probe client: {e}"))?;
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            if let Some(task) = self.task.take_if(|t| t.is_finished()) {
                let ended = task.await;
                return Err(format!("ampd ended at start: {ended:?}"));
            }
            if let Ok(r) = probe.get(format!("{}/readyz", self.url)).send().await
                && r.status() == 200
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("not ready within {READY_TIMEOUT:?}"))
    }

    /// Triggers the shutdown and waits for `run` to return.
    ///
    /// # Panics
    /// When it does not return within [`STOP_TIMEOUT`], or returns an error.
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        let task = self.task.take().expect("ampd runs");
        tokio::time::timeout(STOP_TIMEOUT, task)
            .await
            .expect("run returns after shutdown")
            .expect("join")
            .expect("run succeeds");
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The loopback address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.home.addr()
    }

    /// Where it lives: its port and data directory, to start it again after [`stop`](Self::stop).
    pub fn home(&self) -> &AmpdHome {
        &self.home
    }

    /// `method path` with an optional bearer key and an optional JSON body.
    ///
    /// # Panics
    /// When the request fails.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<String>,
    ) -> Resp {
        call(&self.http, &self.url, method, path, bearer, body).await
    }

    /// `GET path` as `who`.
    ///
    /// # Panics
    /// When the request fails.
    pub async fn get(&self, who: &Agent, path: &str) -> Resp {
        self.call(Method::GET, path, Some(&who.api_key), None).await
    }

    /// `POST path` as `who`, with a JSON body when given.
    ///
    /// # Panics
    /// When the request fails.
    pub async fn post(&self, who: &Agent, path: &str, body: Option<String>) -> Resp {
        self.call(Method::POST, path, Some(&who.api_key), body)
            .await
    }

    /// `DELETE path` as `who`.
    ///
    /// # Panics
    /// When the request fails.
    pub async fn delete(&self, who: &Agent, path: &str) -> Resp {
        self.call(Method::DELETE, path, Some(&who.api_key), None)
            .await
    }

    /// Registers `name` in `tenant` with a fresh key.
    ///
    /// # Panics
    /// Unless the answer is `201` with an address and a key.
    pub async fn register(&self, tenant: &str, name: &str) -> Agent {
        agent::register(&self.http, &self.url, tenant, name, None).await
    }

    /// Registers `name` in `tenant` with a fresh key and the members of `extra` (an object)
    /// added to the body.
    ///
    /// # Panics
    /// Unless the answer is `201` with an address and a key.
    pub async fn register_with(&self, tenant: &str, name: &str, extra: Value) -> Agent {
        agent::register(&self.http, &self.url, tenant, name, Some(extra)).await
    }
}
