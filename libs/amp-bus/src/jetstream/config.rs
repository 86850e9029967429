//! [`JetStreamConfig`]: the settings of the JetStream backend, with their defaults.

use std::time::Duration;

use crate::{Error, Result};

/// The shortest dedup window allowed: a publisher retrying within it never enqueues twice.
pub const MIN_DEDUP_WINDOW: Duration = Duration::from_secs(120);

/// Settings of [`super::JetStreamBus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamConfig {
    /// NATS server URLs (`nats://host:port`); the client picks one and fails over to the
    /// others. Default `["nats://127.0.0.1:4222"]`.
    pub urls: Vec<String>,
    /// Stream replicas: 3 in production (across failure domains), 1 in tests and on a single
    /// node. Default 1.
    pub replicas: usize,
    /// The streams' `duplicate_window`: a publish whose `Nats-Msg-Id` was seen within it is
    /// not stored again. At least [`MIN_DEDUP_WINDOW`]. Default 2 min.
    pub dedup_window: Duration,
    /// How long a delivery may stay unsettled before JetStream redelivers it to any consumer
    /// of the same name. Default 30 s.
    pub ack_wait: Duration,
    /// Deliveries (first included) before a message is dead-lettered. At least 1. Default 8.
    pub max_deliveries: i64,
    /// Max age of `AMP_FEDERATION` messages (a remote provider unreachable that long is given
    /// up on). Default 7 days.
    pub federation_max_age: Duration,
    /// Max age of dead letters in `AMP_DEAD_LETTER`. Default 7 days.
    pub dead_letter_max_age: Duration,
    /// Namespace for isolation (parallel tests, several deployments on one NATS): when not
    /// empty, stream names become `<prefix>_AMP_INGRESS` and every subject (streams, dead
    /// letters, notify) `<prefix>.<subject>`. Letters, digits, `-` and `_` only. Callers
    /// always see unprefixed subjects. Default empty.
    pub prefix: String,
    /// Messages requested per pull. 1 (the default) keeps the contract that a message is
    /// never held by a consumer that is not asking for one; more raises throughput, but up to
    /// that many messages wait in a busy consumer (for at most `ack_wait`) instead of going
    /// to an idle one.
    pub fetch_batch: usize,
    /// How long `publish` waits for the stream's ack before failing with
    /// [`Error::Timeout`] (republishing with the same dedup id is then safe). Default 5 s.
    pub publish_timeout: Duration,
    /// How long `connect` waits for a server. Default 5 s.
    pub connect_timeout: Duration,
    /// Ingress partitions: the ingress stream is split into this many streams
    /// (`AMP_INGRESS`, `AMP_INGRESS_1`, …), each with its own leader, so routing throughput
    /// is not capped by one stream leader. A message's partition is a stable hash of its
    /// subject (one mailbox, one partition). Every replica must use the same value; a
    /// consumer also drains partitions above it that still exist. 1 to 64. Default 1.
    pub ingress_partitions: usize,
    /// Credentials and TLS (files read at connect). Default: none, plain TCP.
    pub security: amp_nats::NatsSecurity,
    /// Most publishes to one stream committed together as one atomic batch (one request and
    /// one acknowledgement; on a replicated stream one Raft proposal) when many are under way
    /// at once; a lone publish is never delayed. Default 1, no batching: on a single-replica
    /// file stream the server stages each atomic batch in a file store of its own and still
    /// fsyncs each message (see `ingress_pack` for what does share a flush). On replicated
    /// streams measure before raising it.
    pub publish_batch: usize,
    /// Most ingress publishes without a dedup id carried by one stream message (a pack: one
    /// write, one fsync, one delivery and one ack for all of them) when many are under way
    /// at once; a lone publish is never delayed. Consumers of the ingress stream must be
    /// idempotent: a nak brings a whole pack back. 1 turns packing off. Default 128.
    pub ingress_pack: usize,
    /// How often each replica tells the others what its rate limiters counted (see
    /// [`crate::BusBackend::limits_sync`]): the replicas share every limit, over-allowing by
    /// at most what the others allowed in one such interval. Zero: each process limits
    /// alone. Default 100 ms.
    pub limits_sync: Duration,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            urls: vec!["nats://127.0.0.1:4222".to_owned()],
            replicas: 1,
            dedup_window: MIN_DEDUP_WINDOW,
            ack_wait: Duration::from_secs(30),
            max_deliveries: 8,
            federation_max_age: Duration::from_secs(7 * 24 * 3600),
            dead_letter_max_age: Duration::from_secs(7 * 24 * 3600),
            prefix: String::new(),
            fetch_batch: 1,
            publish_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            ingress_partitions: 1,
            security: amp_nats::NatsSecurity::default(),
            publish_batch: 1,
            ingress_pack: 128,
            limits_sync: Duration::from_millis(100),
        }
    }
}

impl JetStreamConfig {
    /// The production values: [`Default`] with 3 replicas.
    pub fn production(urls: Vec<String>) -> Self {
        Self {
            urls,
            replicas: 3,
            ..Self::default()
        }
    }

    /// Checks the settings; fails with [`Error::Backend`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Backend(format!("invalid JetStream config: {what}")));
        if self.urls.is_empty() {
            return bad("urls is empty");
        }
        if !(1..=5).contains(&self.replicas) {
            return bad("replicas must be 1 to 5");
        }
        if self.dedup_window < MIN_DEDUP_WINDOW {
            return bad("dedup_window must be at least 2 minutes");
        }
        if self.ack_wait.is_zero() {
            return bad("ack_wait must not be zero");
        }
        if self.max_deliveries < 1 || self.max_deliveries > i64::from(u32::MAX) - 2 {
            return bad("max_deliveries must be at least 1");
        }
        if self.federation_max_age < self.dedup_window
            || self.dead_letter_max_age < self.dedup_window
        {
            return bad("max ages must be at least dedup_window");
        }
        let token_ok = self
            .prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !token_ok {
            return bad("prefix may hold only letters, digits, '-' and '_'");
        }
        if self.fetch_batch == 0 {
            return bad("fetch_batch must be at least 1");
        }
        if self.ingress_pack == 0 {
            return bad("ingress_pack must be at least 1");
        }
        if !(1..=64).contains(&self.ingress_partitions) {
            return bad("ingress_partitions must be 1 to 64");
        }
        if self.publish_timeout.is_zero() {
            return bad("publish_timeout must not be zero");
        }
        amp_nats::check_urls(&self.urls).map_err(|e| Error::Backend(e.to_string()))?;
        self.security
            .validate()
            .map_err(|e| Error::Backend(e.to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_production_has_three_replicas() {
        assert!(JetStreamConfig::default().validate().is_ok());
        let prod = JetStreamConfig::production(vec!["nats://a:4222".into()]);
        assert_eq!(prod.replicas, 3);
        assert!(prod.validate().is_ok());
    }

    #[test]
    fn rejects_bad_settings() {
        let bad = [
            JetStreamConfig {
                dedup_window: Duration::from_secs(60),
                ..JetStreamConfig::default()
            },
            JetStreamConfig {
                max_deliveries: 0,
                ..JetStreamConfig::default()
            },
            JetStreamConfig {
                prefix: "a.b".into(),
                ..JetStreamConfig::default()
            },
            JetStreamConfig {
                urls: vec![],
                ..JetStreamConfig::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }
}
