//! [`CqlStoreConfig`]: the settings of the CQL store, with their defaults.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

pub use super::tls::CqlTlsConfig;
use crate::{Error, Result};

/// The consistency of reads and writes (the `[store.cql] consistency` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CqlConsistency {
    /// A majority of the replicas in the local datacenter (the default).
    LocalQuorum,
    /// A majority of all replicas.
    Quorum,
    /// One replica: only for a single test node; loses read-your-writes with RF > 1.
    One,
}

/// Settings of [`super::CqlStore`]: the `[store.cql]` section of every binary's config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CqlStoreConfig {
    /// Contact points, `host:port` (any nodes of the cluster; the driver discovers the
    /// others). Default `["127.0.0.1:9042"]`. A comma-separated string is taken too (an
    /// environment variable: `AMP__STORE__CQL__CONTACT_POINTS=a:9042,b:9042`).
    #[serde(deserialize_with = "list_or_csv")]
    pub contact_points: Vec<String>,
    /// The keyspace holding every table. Letters, digits and `_`, at most 48. Default `amp`.
    pub keyspace: String,
    /// The local datacenter: requests go to its nodes first, and the keyspace is replicated
    /// there (`NetworkTopologyStrategy`). Default `datacenter1` (Cassandra's and ScyllaDB's
    /// default name).
    pub datacenter: String,
    /// Replicas in the local datacenter when the keyspace is created: 3 in production, 1 on
    /// a single node. Default 1. An existing keyspace is never altered.
    pub replication_factor: u32,
    /// Create the keyspace when missing (with `replication_factor`) and apply pending schema
    /// migrations at start-up. Off where an operator runs `migrate` by hand. Default true.
    pub migrate_on_start: bool,
    /// Consistency of reads and writes. Default `local_quorum`.
    pub consistency: CqlConsistency,
    /// User name for password authentication, if the cluster requires it.
    pub username: Option<String>,
    /// Password (prefer `password_file`; never logged).
    pub password: Option<String>,
    /// A file holding the password (a mounted Secret), read at start-up.
    pub password_file: Option<PathBuf>,
    /// How long one request may take before it fails with [`Error::Unavailable`], in
    /// milliseconds. Default 5000.
    pub request_timeout_ms: u64,
    /// How long `connect` may take, in milliseconds. Default 10000.
    pub connect_timeout_ms: u64,
    /// Send a second copy of an idempotent read to another replica when the first has not
    /// answered after this many milliseconds (0: never). Default 50.
    pub speculative_after_ms: u64,
    /// TLS to the cluster (`[store.cql.tls]`): off by default.
    pub tls: CqlTlsConfig,
}

/// A list of strings, or one string of comma-separated items.
fn list_or_csv<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(d)? {
        ListOrCsv::List(v) => v,
        ListOrCsv::Csv(s) => s
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect(),
    })
}

impl Default for CqlStoreConfig {
    fn default() -> Self {
        Self {
            contact_points: vec!["127.0.0.1:9042".to_owned()],
            keyspace: "amp".to_owned(),
            datacenter: "datacenter1".to_owned(),
            replication_factor: 1,
            migrate_on_start: true,
            consistency: CqlConsistency::LocalQuorum,
            username: None,
            password: None,
            password_file: None,
            request_timeout_ms: 5_000,
            connect_timeout_ms: 10_000,
            speculative_after_ms: 50,
            tls: CqlTlsConfig::default(),
        }
    }
}

impl CqlStoreConfig {
    /// The settings for a test node: one contact point, a keyspace of its own.
    pub fn for_test(contact_point: &str, keyspace: &str) -> Self {
        Self {
            contact_points: vec![contact_point.to_owned()],
            keyspace: keyspace.to_owned(),
            ..Self::default()
        }
    }

    /// Checks the settings; fails with [`Error::Unavailable`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| {
            Err(Error::Unavailable(format!(
                "invalid CQL store config: {what}"
            )))
        };
        if self.contact_points.iter().all(|c| c.trim().is_empty()) {
            return bad("contact_points is empty");
        }
        let ks_ok = !self.keyspace.is_empty()
            && self.keyspace.len() <= 48
            && self
                .keyspace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && self
                .keyspace
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic());
        if !ks_ok {
            return bad(
                "keyspace must start with a letter and hold only letters, digits and '_' (48 at most)",
            );
        }
        if self.datacenter.is_empty()
            || !self
                .datacenter
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return bad("datacenter must hold only letters, digits, '-' and '_'");
        }
        if !(1..=9).contains(&self.replication_factor) {
            return bad("replication_factor must be 1 to 9");
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms must not be zero");
        }
        if self.password.is_some() && self.password_file.is_some() {
            return bad("give password or password_file, not both");
        }
        if self.username.is_none() && (self.password.is_some() || self.password_file.is_some()) {
            return bad("a password needs a username");
        }
        self.tls.validate()
    }

    /// The password, from the file when one is named.
    ///
    /// Fails when the file cannot be read.
    pub(crate) fn resolved_password(&self) -> Result<Option<String>> {
        match (&self.password, &self.password_file) {
            (Some(p), _) => Ok(Some(p.clone())),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|e| {
                    Error::Unavailable(format!(
                        "cannot read the CQL password file {}: {e}",
                        f.display()
                    ))
                }),
            (None, None) => Ok(None),
        }
    }

    /// [`Self::request_timeout_ms`] as a duration.
    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(CqlStoreConfig::default().validate().is_ok());
        let err = |c: CqlStoreConfig| c.validate().expect_err("invalid").to_string();
        assert!(
            err(CqlStoreConfig {
                keyspace: "amp; DROP".into(),
                ..Default::default()
            })
            .contains("keyspace")
        );
        assert!(
            err(CqlStoreConfig {
                contact_points: vec![],
                ..Default::default()
            })
            .contains("contact_points")
        );
        assert!(
            err(CqlStoreConfig {
                password: Some("x".into()),
                ..Default::default()
            })
            .contains("username")
        );
    }

    #[test]
    fn parses_from_toml_with_defaults() {
        let c: CqlStoreConfig = toml::from_str(
            "contact_points = [\"10.0.0.5:9042\"]\nkeyspace = \"amp_prod\"\nreplication_factor = 3\nconsistency = \"quorum\"\n",
        )
        .expect("parse");
        assert_eq!(c.replication_factor, 3);
        assert_eq!(c.consistency, CqlConsistency::Quorum);
        assert_eq!(c.datacenter, "datacenter1");
        assert!(toml::from_str::<CqlStoreConfig>("keyspac = \"x\"").is_err());
        let tls: CqlStoreConfig = toml::from_str(
            "[tls]\nenabled = true\nca_file = \"/run/secrets/cql-tls/ca.crt\"\nserver_name = \"scylla.internal\"\n",
        )
        .expect("tls");
        assert!(tls.tls.enabled && tls.tls.verify_hostname);
        assert_eq!(tls.tls.server_name.as_deref(), Some("scylla.internal"));
        assert!(toml::from_str::<CqlStoreConfig>("[tls]\nenable = true\n").is_err());
        let csv: CqlStoreConfig =
            toml::from_str("contact_points = \"a:9042, b:9042\"").expect("csv");
        assert_eq!(csv.contact_points, ["a:9042", "b:9042"]);
    }

    /// The `[store.cql]` section of the example config (TLS included) is what this parses.
    #[test]
    fn example_config_section_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/ampd.example.toml"
        );
        let text = std::fs::read_to_string(path).expect("deploy/ampd.example.toml");
        let file: toml::Table = toml::from_str(&text).expect("toml");
        let cql = file
            .get("store")
            .and_then(|s| s.get("cql"))
            .cloned()
            .expect("[store.cql]");
        let c: CqlStoreConfig = cql.try_into().expect("[store.cql] parses");
        assert!(c.validate().is_ok());
        assert!(!c.tls.enabled && c.tls.verify_hostname);
    }
}
