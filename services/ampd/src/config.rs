//! `ampd`'s configuration: its own `[server]`, `[store]` and `[provider]` sections, plus the
//! `[log]` section of `amp-runtime` and each composed service's section (`[ingest]`).
//!
//! Every key has a default, so an empty file (or none) is a working single-node setup;
//! `deploy/ampd.example.toml` lists them all.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use amp_runtime::telemetry::LogConfig;
use serde::Deserialize;

/// The whole configuration of `ampd`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where and as whom the server listens, where it keeps its data.
    pub server: ServerConfig,
    /// Log filter and format.
    pub log: LogConfig,
    /// The embedded store.
    pub store: StoreConfig,
    /// The public API service: registration policy, owners, limits.
    pub ingest: ingest::Config,
    /// The router: consumers, prompt-injection pattern database.
    pub router: router::Config,
    /// The delivery service: WebSocket sessions and webhooks. Its `outbound` policy and its
    /// `route` frame rate are taken from `[ingest.outbound]` and `[ingest.limits]`.
    pub delivery: delivery::Config,
    /// Federation with other providers (spec 06): off by default.
    pub federation: federation::Config,
    /// Where the provider's identity (signing key, API-key pepper) is kept.
    pub provider: ProviderConfig,
}

/// The `[server]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The address to listen on (`127.0.0.1:8080`; port 0 picks a free port).
    pub listen: SocketAddr,
    /// The provider domain in agent addresses (`name@tenant.<domain>`); clients need at
    /// least two labels, so not `localhost` (nor names under the reserved `.local`).
    pub domain: String,
    /// The base URL clients reach this server at, without a trailing slash; by default
    /// `http://<listen>` (with `127.0.0.1` for an unspecified address such as `0.0.0.0`).
    pub public_url: Option<String>,
    /// The directory holding the database and, by default, the provider's identity files.
    pub data_dir: PathBuf,
    /// Seconds in-flight requests get to finish after a shutdown signal.
    pub shutdown_grace_secs: u64,
    /// Largest request body accepted, in bytes (larger ones get 413).
    pub body_limit_bytes: usize,
    /// `[server.connections]`: header, body and idle timeouts and connection caps of the
    /// listener (and of the admin API's).
    pub connections: amp_runtime::listener::ConnectionLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            domain: "amp.test".to_owned(),
            public_url: None,
            data_dir: PathBuf::from("./amp-data"),
            shutdown_grace_secs: 10,
            // The spec's 512 KiB message limit plus room for the envelope.
            body_limit_bytes: 532_480,
            connections: amp_runtime::listener::ConnectionLimits::default(),
        }
    }
}

impl ServerConfig {
    /// The configured public URL (trailing slashes removed), or one derived from the address
    /// actually bound (`bound` rather than `listen`, so that port 0 yields the real port).
    pub fn public_url(&self, bound: SocketAddr) -> String {
        if let Some(url) = &self.public_url {
            return url.trim_end_matches('/').to_owned();
        }
        let ip = match bound.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, bound.port()))
    }
}

/// Which store `ampd` keeps its state in (`[store] backend`, `AMP__STORE__BACKEND`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    /// The embedded store, zero setup (the default): fjall, unless the data directory holds
    /// a redb store (`amp.redb`) and no fjall one, which is kept (see
    /// [`Config::embedded_backend`]).
    #[default]
    Embedded,
    /// The embedded fjall database (an LSM tree) in the directory `<data_dir>/amp.fjall`:
    /// one journal `fdatasync` per group commit, recovery replays the journal's tail.
    Fjall,
    /// The embedded redb database, the file `<data_dir>/amp.redb` (ampd's store before
    /// fjall).
    Redb,
    /// NATS JetStream (`[store.jetstream]`).
    Jetstream,
    /// ScyllaDB or Cassandra over CQL (`[store.cql]`).
    Cql,
}

/// The redb store's file in the data directory.
pub(crate) const REDB_FILE: &str = amp_store::redb::FILE;
/// The fjall store's directory in the data directory.
pub(crate) const FJALL_DIR: &str = amp_store::fjall::DIR;

/// The `[store.jetstream]` section: where NATS is, when `backend = "jetstream"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JetStreamSection {
    /// Server URLs, comma-separated.
    pub urls: String,
    /// Stream and bucket replicas.
    pub replicas: usize,
    /// Prefix of every stream and bucket name.
    pub prefix: String,
    /// `[store.jetstream.auth]`: `user` and `password_file`, `nkey_seed_file` or
    /// `credentials_file` (secrets in files). Unset: no credentials.
    pub auth: amp_nats::NatsAuth,
    /// `[store.jetstream.tls]`: `ca_file`, `cert_file` and `key_file`, `required`.
    pub tls: amp_nats::NatsTls,
}

impl Default for JetStreamSection {
    fn default() -> Self {
        Self {
            urls: "nats://127.0.0.1:4222".into(),
            replicas: 1,
            prefix: String::new(),
            auth: amp_nats::NatsAuth::default(),
            tls: amp_nats::NatsTls::default(),
        }
    }
}

/// The `[store]` section: by default the embedded store in the data directory (fjall, or
/// redb where a redb store was kept); `backend` picks one of them, JetStream or CQL
/// instead.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `embedded` (default: fjall, or an existing redb store), `fjall`, `redb`,
    /// `jetstream` or `cql`.
    pub backend: StoreBackend,
    /// The NATS servers, when `backend = "jetstream"`.
    pub jetstream: JetStreamSection,
    /// The CQL cluster, when `backend = "cql"`.
    pub cql: amp_store::cql::CqlStoreConfig,
    /// Share one fsync between all writes queued while the previous commit ran (redb and
    /// fjall).
    pub group_commit: bool,
    /// Most write operations in one commit (redb and fjall).
    pub max_batch: usize,
    /// Seconds between sweeps that delete expired mailbox entries.
    pub purge_interval_secs: u64,
    /// Keep the allocator state in every commit, so a restart after a crash is near instant
    /// whatever the size of the store (a second fsync per commit, shared by group commit).
    /// redb only: fjall replays its journal on open.
    pub quick_repair: bool,
    /// fjall's block cache in MiB (decompressed blocks of every keyspace, for reads).
    pub cache_mib: u64,
    /// Most MiB of fjall journal kept (at least 64): a restart after a crash replays it,
    /// so this bounds recovery; past it the oldest journal's memtables are flushed.
    pub journal_mib: u64,
    /// fjall's background threads (memtable flushes, compaction); 0 for half the cores, 1
    /// to 4.
    pub background_threads: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Embedded,
            jetstream: JetStreamSection::default(),
            cql: amp_store::cql::CqlStoreConfig::default(),
            group_commit: true,
            max_batch: 1024,
            purge_interval_secs: 30,
            quick_repair: true,
            cache_mib: 64,
            journal_mib: 64,
            background_threads: 0,
        }
    }
}

/// The `[provider]` section: files holding the provider's identity, created on first start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// The provider's Ed25519 signing key, PKCS#8 PEM; `<data_dir>/provider-key.pem` by
    /// default.
    pub key_file: Option<PathBuf>,
    /// The secret mixed into stored API-key hashes, hex; `<data_dir>/key-pepper` by
    /// default. Losing it invalidates every issued API key.
    pub pepper_file: Option<PathBuf>,
}

impl Config {
    /// The embedded store `backend = "embedded"` stands for in this data directory: redb
    /// when the directory holds a redb store (`amp.redb`) and no fjall one (an `ampd` from
    /// before fjall, kept as it is), fjall otherwise. Any other backend is itself.
    pub fn embedded_backend(&self) -> StoreBackend {
        match self.store.backend {
            StoreBackend::Embedded => {
                let dir = &self.server.data_dir;
                if dir.join(REDB_FILE).exists() && !dir.join(FJALL_DIR).exists() {
                    StoreBackend::Redb
                } else {
                    StoreBackend::Fjall
                }
            }
            other => other,
        }
    }

    /// The embedded database: the directory `amp.fjall` or the file `amp.redb` in the data
    /// directory, whichever [`Self::embedded_backend`] picks.
    pub fn store_path(&self) -> PathBuf {
        match self.embedded_backend() {
            StoreBackend::Redb => self.server.data_dir.join(REDB_FILE),
            _ => self.server.data_dir.join(FJALL_DIR),
        }
    }

    /// The provider key file, configured or defaulted.
    pub fn key_file(&self) -> PathBuf {
        self.provider
            .key_file
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("provider-key.pem"))
    }

    /// The pepper file, configured or defaulted.
    pub fn pepper_file(&self) -> PathBuf {
        self.provider
            .pepper_file
            .clone()
            .unwrap_or_else(|| self.server.data_dir.join("key-pepper"))
    }

    /// Checks what serde cannot: the domain and the public URL.
    ///
    /// # Errors
    /// A message naming the key at fault.
    pub fn validate(&self) -> Result<(), String> {
        let domain = &self.server.domain;
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
            return Err(format!(
                "server.domain `{domain}` must have at least two non-empty labels (e.g. amp.test)"
            ));
        }
        if let Some(url) = &self.server.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(format!(
                "server.public_url `{url}` must start with http:// or https://"
            ));
        }
        if self.store.purge_interval_secs == 0 {
            return Err("store.purge_interval_secs must be at least 1".to_owned());
        }
        if self.store.cache_mib == 0 {
            return Err("store.cache_mib must be at least 1".to_owned());
        }
        let least_journal_mib = amp_store::fjall::MIN_JOURNAL_BYTES / (1024 * 1024);
        if self.store.journal_mib < least_journal_mib {
            return Err(format!(
                "store.journal_mib is {}; fjall keeps at least {least_journal_mib}",
                self.store.journal_mib
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_is_derived_from_the_bound_address() {
        let server = ServerConfig::default();
        assert_eq!(
            server.public_url("127.0.0.1:4000".parse().expect("addr")),
            "http://127.0.0.1:4000"
        );
        assert_eq!(
            server.public_url("0.0.0.0:8080".parse().expect("addr")),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            server.public_url("[::]:8080".parse().expect("addr")),
            "http://[::1]:8080"
        );
        let server = ServerConfig {
            public_url: Some("https://api.example.com/".into()),
            ..ServerConfig::default()
        };
        assert_eq!(
            server.public_url("0.0.0.0:8080".parse().expect("addr")),
            "https://api.example.com"
        );
    }

    #[test]
    fn identity_files_default_to_the_data_dir() {
        let mut cfg = Config::default();
        cfg.server.data_dir = PathBuf::from("/var/lib/amp");
        assert_eq!(
            cfg.key_file(),
            PathBuf::from("/var/lib/amp/provider-key.pem")
        );
        assert_eq!(cfg.pepper_file(), PathBuf::from("/var/lib/amp/key-pepper"));
        assert_eq!(cfg.store_path(), PathBuf::from("/var/lib/amp/amp.fjall"));
        cfg.store.backend = StoreBackend::Redb;
        assert_eq!(cfg.store_path(), PathBuf::from("/var/lib/amp/amp.redb"));
        cfg.provider.key_file = Some(PathBuf::from("/run/secrets/key.pem"));
        assert_eq!(cfg.key_file(), PathBuf::from("/run/secrets/key.pem"));
    }

    /// `embedded` keeps a data directory's redb store, and starts fjall anywhere else.
    #[test]
    fn the_embedded_store_keeps_an_existing_redb_file() {
        let dir = tempfile::tempdir().expect("dir");
        let mut cfg = Config::default();
        cfg.server.data_dir = dir.path().to_owned();
        assert_eq!(
            cfg.embedded_backend(),
            StoreBackend::Fjall,
            "a new directory"
        );
        std::fs::write(dir.path().join("amp.redb"), b"").expect("redb file");
        assert_eq!(cfg.embedded_backend(), StoreBackend::Redb, "redb kept");
        assert_eq!(cfg.store_path(), dir.path().join("amp.redb"));
        std::fs::create_dir(dir.path().join("amp.fjall")).expect("fjall dir");
        assert_eq!(cfg.embedded_backend(), StoreBackend::Fjall, "both: fjall");
        cfg.store.backend = StoreBackend::Redb;
        assert_eq!(cfg.embedded_backend(), StoreBackend::Redb, "named");
        cfg.store.backend = StoreBackend::Cql;
        assert_eq!(cfg.embedded_backend(), StoreBackend::Cql);
    }

    #[test]
    fn validation() {
        assert!(Config::default().validate().is_ok());
        let mut cfg = Config::default();
        cfg.server.domain = "localhost".into();
        assert!(
            cfg.validate()
                .expect_err("one label")
                .contains("server.domain")
        );
        cfg.server.domain = "amp.test".into();
        cfg.server.public_url = Some("api.example.com".into());
        assert!(
            cfg.validate()
                .expect_err("no scheme")
                .contains("server.public_url")
        );
        cfg.server.public_url = None;
        cfg.store.journal_mib = 63;
        assert!(
            cfg.validate()
                .expect_err("fjall's least journal")
                .contains("store.journal_mib")
        );
        cfg.store.journal_mib = 64;
        cfg.store.cache_mib = 0;
        assert!(
            cfg.validate()
                .expect_err("no cache")
                .contains("store.cache_mib")
        );
    }
}
