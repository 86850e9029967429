//! [`JetStreamStoreConfig`]: the settings of the JetStream store, with their defaults.

use std::time::Duration;

use crate::{Error, Result};

/// Most mailbox streams ([`JetStreamStoreConfig::mailbox_partitions`]).
pub(super) const MAX_MAILBOX_PARTITIONS: usize = 64;

/// Mailbox streams of a store created without [`JetStreamStoreConfig::mailbox_partitions`]:
/// on one node about 15 % more mailbox writes per second than one stream
/// (`deploy/CAPACITY.md`), and room for the leaders to spread over three or four nodes.
pub const DEFAULT_MAILBOX_PARTITIONS: usize = 4;

/// Settings of [`super::JetStreamStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamStoreConfig {
    /// NATS server URLs (`nats://host:port`); the client picks one and fails over to the
    /// others. Default `["nats://127.0.0.1:4222"]`.
    pub urls: Vec<String>,
    /// Replicas of every stream and bucket: 3 in production (across failure domains), 1 in
    /// tests and on a single node. Default 1.
    pub replicas: usize,
    /// Namespace for isolation (parallel tests, several deployments on one NATS): when not
    /// empty, every stream and bucket name starts with `<prefix>_` and every mailbox and
    /// receipt subject with `<prefix>.`. Letters, digits, `-` and `_` only. Default empty.
    pub prefix: String,
    /// How long one NATS round trip (a publish ack, a get, an API call) may take before the
    /// operation fails with [`Error::Unavailable`]. Default 5 s.
    pub op_timeout: Duration,
    /// How long `connect` waits for a server. Default 5 s.
    pub connect_timeout: Duration,
    /// Credentials and TLS (files read at connect). Default: none, plain TCP.
    pub security: amp_nats::NatsSecurity,
    /// Most mailbox writes committed together as one atomic batch (one request and one
    /// acknowledgement; on a replicated stream one Raft proposal) when many are under way at
    /// once. Default 1, no batching: on a single-replica file stream the server stages every
    /// atomic batch in a file store of its own and still fsyncs each message, which cost
    /// more than the round trips it saves (parity bench: 1.75 against 2.67 × ampd's CPU per
    /// message, `deploy/CAPACITY.md`). On replicated streams measure before raising it.
    pub publish_batch: usize,
    /// Streams the mailboxes are spread over (`AMP_MAILBOX`, `AMP_MAILBOX_1`, …; an agent's
    /// mailbox lives whole in one, chosen by a stable hash of its id). Each stream has its own
    /// leader, write queue and fsync: one stream takes every mailbox write of the cluster in
    /// turn, so it caps the write rate at one disk's fsync rate (and, replicated, at one
    /// leader). Fixed when the store is first created (recorded in the store): unset, a
    /// process uses what the store has ([`DEFAULT_MAILBOX_PARTITIONS`] for a new store, 1 for
    /// one from before partitions); set, it must be what the store has, or the process
    /// refuses to start. 1 to 64.
    pub mailbox_partitions: Option<usize>,
}

impl Default for JetStreamStoreConfig {
    fn default() -> Self {
        Self {
            urls: vec!["nats://127.0.0.1:4222".to_owned()],
            replicas: 1,
            prefix: String::new(),
            op_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            security: amp_nats::NatsSecurity::default(),
            publish_batch: 1,
            mailbox_partitions: None,
        }
    }
}

impl JetStreamStoreConfig {
    /// The production values: [`Default`] with 3 replicas.
    pub fn production(urls: Vec<String>) -> Self {
        Self {
            urls,
            replicas: 3,
            ..Self::default()
        }
    }

    /// Checks the settings; fails with [`Error::Unavailable`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| {
            Err(Error::Unavailable(format!(
                "invalid JetStream store config: {what}"
            )))
        };
        if self.urls.is_empty() {
            return bad("urls is empty");
        }
        if !(1..=5).contains(&self.replicas) {
            return bad("replicas must be 1 to 5");
        }
        let token_ok = self
            .prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !token_ok {
            return bad("prefix may hold only letters, digits, '-' and '_'");
        }
        if self
            .mailbox_partitions
            .is_some_and(|n| !(1..=MAX_MAILBOX_PARTITIONS).contains(&n))
        {
            return bad("mailbox_partitions must be 1 to 64");
        }
        if self.op_timeout.is_zero() {
            return bad("op_timeout must not be zero");
        }
        amp_nats::check_urls(&self.urls).map_err(|e| Error::Unavailable(e.to_string()))?;
        self.security
            .validate()
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_refused() {
        assert!(JetStreamStoreConfig::default().validate().is_ok());
        assert_eq!(
            JetStreamStoreConfig::production(vec!["x".into()]).replicas,
            3
        );
        for bad in [
            JetStreamStoreConfig {
                prefix: "a.b".into(),
                ..Default::default()
            },
            JetStreamStoreConfig {
                urls: vec![],
                ..Default::default()
            },
            JetStreamStoreConfig {
                replicas: 0,
                ..Default::default()
            },
            JetStreamStoreConfig {
                mailbox_partitions: Some(0),
                ..Default::default()
            },
            JetStreamStoreConfig {
                mailbox_partitions: Some(65),
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
