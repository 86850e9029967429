//! Stream and consumer definitions (the same as `deploy/nats/`), and prefixed names.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};

use super::JetStreamConfig;
use crate::StreamName;

/// The dead-letter stream's name.
pub(crate) const DEAD_LETTER_STREAM: &str = "AMP_DEAD_LETTER";
/// The dead-letter stream's subjects.
pub(crate) const DEAD_LETTER_FILTER: &str = "amp.dlq.>";

/// Stream names and subjects under the configured prefix.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    prefix: String,
}

impl Names {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    /// `AMP_INGRESS`, or `<prefix>_AMP_INGRESS`.
    pub(crate) fn stream(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}_{name}", self.prefix)
        }
    }

    /// A subject as sent to NATS: `<prefix>.<subject>`.
    pub(crate) fn subject(&self, subject: &str) -> String {
        if self.prefix.is_empty() {
            subject.to_owned()
        } else {
            format!("{}.{subject}", self.prefix)
        }
    }

    /// A subject as callers see it: the prefix removed, and an ingress partition's
    /// `amp.ingress-<k>.` back to `amp.ingress.`.
    pub(crate) fn unprefixed(&self, subject: &str) -> String {
        let rest = if self.prefix.is_empty() {
            subject
        } else {
            subject
                .strip_prefix(&self.prefix)
                .and_then(|rest| rest.strip_prefix('.'))
                .unwrap_or(subject)
        };
        if let Some(tail) = rest.strip_prefix("amp.ingress-")
            && let Some((k, after)) = tail.split_once('.')
            && !k.is_empty()
            && k.bytes().all(|b| b.is_ascii_digit())
        {
            return format!("amp.ingress.{after}");
        }
        rest.to_owned()
    }

    /// The stream of ingress partition `k`: `AMP_INGRESS` for 0, `AMP_INGRESS_<k>` after.
    pub(crate) fn ingress_stream(&self, k: usize) -> String {
        if k == 0 {
            self.stream(StreamName::Ingress.as_str())
        } else {
            self.stream(&format!("{}_{k}", StreamName::Ingress.as_str()))
        }
    }

    /// The partition of a stream name made by [`ingress_stream`](Self::ingress_stream).
    pub(crate) fn ingress_partition_of(&self, stream: &str) -> Option<usize> {
        let base = self.stream(StreamName::Ingress.as_str());
        if stream == base {
            return Some(0);
        }
        stream
            .strip_prefix(&base)?
            .strip_prefix('_')?
            .parse()
            .ok()
            .filter(|k| *k > 0)
    }

    /// The subject as sent to NATS of a message on `stream`: prefixed and, for the ingress
    /// stream split into `partitions`, moved to its partition (`amp.ingress-<k>.…` for
    /// k > 0), chosen by a stable hash of the subject, so one mailbox's messages (one
    /// subject) always share a partition and its dedup window.
    pub(crate) fn physical_subject(
        &self,
        stream: StreamName,
        subject: &str,
        partitions: usize,
    ) -> String {
        if stream != StreamName::Ingress || partitions <= 1 {
            return self.subject(subject);
        }
        let k = partition(subject, partitions);
        match (k, subject.strip_prefix("amp.ingress.")) {
            (0, _) | (_, None) => self.subject(subject),
            (k, Some(rest)) => self.subject(&format!("amp.ingress-{k}.{rest}")),
        }
    }

    /// The stream a message on `subject` lands in: the one [`physical_subject`] picks.
    ///
    /// [`physical_subject`]: Self::physical_subject
    pub(crate) fn physical_stream(
        &self,
        stream: StreamName,
        subject: &str,
        partitions: usize,
    ) -> String {
        if stream != StreamName::Ingress {
            return self.stream(stream.as_str());
        }
        match subject.strip_prefix("amp.ingress.") {
            Some(_) if partitions > 1 => self.ingress_stream(partition(subject, partitions)),
            _ => self.ingress_stream(0),
        }
    }

    /// The root of every reply inbox: `<prefix>.amp.reply`.
    pub(crate) fn reply_root(&self) -> String {
        self.subject("amp.reply")
    }

    /// Where a dead letter of a message on `subject` (unprefixed) goes:
    /// `amp.dlq.<subject without "amp.">`, e.g. `amp.dlq.ingress.acme`.
    pub(crate) fn dead_letter_subject(&self, subject: &str) -> String {
        let rest = subject.strip_prefix("amp.").unwrap_or(subject);
        self.subject(&format!("amp.dlq.{rest}"))
    }
}

/// The partition of `subject` among `n`: FNV-1a, stable across processes and versions (every
/// replica must agree).
pub(crate) fn partition(subject: &str, n: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in subject.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    usize::try_from(hash % n.max(1) as u64).unwrap_or(0)
}

/// The streams: `AMP_INGRESS` (and `AMP_INGRESS_<k>` for each further ingress partition,
/// purged below their consumers' ack floor), `AMP_FEDERATION` (a work queue) and
/// `AMP_DEAD_LETTER`.
pub(crate) fn stream_configs(config: &JetStreamConfig) -> Vec<stream::Config> {
    let names = Names::new(&config.prefix);
    let work_queue = |stream: StreamName, max_age: Duration, description: &str| stream::Config {
        name: names.stream(stream.as_str()),
        description: Some(description.to_owned()),
        subjects: vec![names.subject(stream.subject_filter())],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        duplicate_window: config.dedup_window,
        max_age,
        discard: stream::DiscardPolicy::Old,
        // Atomic batches of concurrent publishes when `publish_batch` is raised
        // (`amp_nats::BatchPublisher`).
        allow_atomic_publish: true,
        ..unlimited()
    };
    // Ingress: kept by limits and purged below the consumers' ack floor (`purge`), which
    // saves the work queue's disk write per ack.
    let ingress = |description: &str| stream::Config {
        retention: stream::RetentionPolicy::Limits,
        ..work_queue(StreamName::Ingress, Duration::ZERO, description)
    };
    let partitions = (1..config.ingress_partitions).map(|k| stream::Config {
        name: names.ingress_stream(k),
        subjects: vec![names.subject(&format!("amp.ingress-{k}.>"))],
        ..ingress("Accepted messages on their way to the router (one partition)")
    });
    let mut all = vec![
        ingress("Accepted messages on their way to the router"),
        work_queue(
            StreamName::Federation,
            config.federation_max_age,
            "Messages on their way to other providers",
        ),
        stream::Config {
            name: names.stream(DEAD_LETTER_STREAM),
            description: Some(
                "Messages terminated by a consumer or out of delivery attempts".to_owned(),
            ),
            subjects: vec![names.subject(DEAD_LETTER_FILTER)],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            duplicate_window: config.dedup_window,
            max_age: config.dead_letter_max_age,
            discard: stream::DiscardPolicy::Old,
            ..unlimited()
        },
    ];
    all.extend(partitions);
    all
}

/// No count or size limits, spelled out (-1) as the server reports them and as
/// `deploy/nats/` has them.
fn unlimited() -> stream::Config {
    stream::Config {
        max_bytes: -1,
        max_messages: -1,
        max_messages_per_subject: -1,
        max_consumers: -1,
        max_message_size: -1,
        ..Default::default()
    }
}

/// JetStream's own `max_deliver`: two more than ours. The bus dead-letters a message itself
/// when it is nak'ed or dropped on its last delivery, or when it comes back once more after
/// its last delivery timed out (`ack_wait`, e.g. the consumer died); the spare delivery lets
/// that last step be retried once before JetStream would stop delivering it for good.
pub(crate) fn server_max_deliver(max_deliveries: i64) -> i64 {
    max_deliveries + 2
}

/// The durable pull consumer `name`, shared by every replica that consumes the stream.
pub(crate) fn consumer_config(config: &JetStreamConfig, name: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_owned()),
        name: Some(name.to_owned()),
        description: Some("AMP bus consumer, shared by all replicas".to_owned()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_deliver: server_max_deliver(config.max_deliveries),
        deliver_policy: jetstream::consumer::DeliverPolicy::All,
        replay_policy: jetstream::consumer::ReplayPolicy::Instant,
        num_replicas: 0,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_names_and_subjects() {
        let names = Names::new("t1");
        assert_eq!(names.stream("AMP_INGRESS"), "t1_AMP_INGRESS");
        assert_eq!(names.subject("amp.ingress.acme"), "t1.amp.ingress.acme");
        assert_eq!(names.unprefixed("t1.amp.ingress.acme"), "amp.ingress.acme");
        assert_eq!(
            names.dead_letter_subject("amp.ingress.acme"),
            "t1.amp.dlq.ingress.acme"
        );
        let plain = Names::new("");
        assert_eq!(plain.stream("AMP_INGRESS"), "AMP_INGRESS");
        assert_eq!(plain.unprefixed("amp.x"), "amp.x");
    }

    #[test]
    fn ingress_partitions_round_trip() {
        let names = Names::new("t1");
        assert_eq!(names.ingress_stream(0), "t1_AMP_INGRESS");
        assert_eq!(names.ingress_stream(3), "t1_AMP_INGRESS_3");
        assert_eq!(names.ingress_partition_of("t1_AMP_INGRESS"), Some(0));
        assert_eq!(names.ingress_partition_of("t1_AMP_INGRESS_3"), Some(3));
        assert_eq!(names.ingress_partition_of("t1_AMP_INGRESS_0"), None);
        assert_eq!(names.ingress_partition_of("t1_AMP_FEDERATION"), None);
        assert_eq!(names.ingress_partition_of("AMP_INGRESS_3"), None);
        let mut seen = [0usize; 4];
        for i in 0..400 {
            let subject = format!("amp.ingress.acme.agent-{i}");
            let physical = names.physical_subject(StreamName::Ingress, &subject, 4);
            let k = partition(&subject, 4);
            seen[k] += 1;
            if k == 0 {
                assert_eq!(physical, format!("t1.{subject}"));
            } else {
                assert_eq!(physical, format!("t1.amp.ingress-{k}.acme.agent-{i}"));
            }
            assert_eq!(names.unprefixed(&physical), subject);
            // Stable: the same subject, the same partition.
            assert_eq!(
                names.physical_subject(StreamName::Ingress, &subject, 4),
                physical
            );
        }
        assert!(seen.iter().all(|n| *n > 50), "spread: {seen:?}");
        assert_eq!(
            names.physical_subject(StreamName::Federation, "amp.federation.x", 4),
            "t1.amp.federation.x"
        );
        assert_eq!(
            names.physical_subject(StreamName::Ingress, "amp.ingress.x", 1),
            "t1.amp.ingress.x"
        );
    }

    /// The operator definitions in `deploy/nats/` are the ones the code creates in
    /// production.
    #[test]
    fn deploy_definitions_match_the_code() {
        let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nats");
        let production = JetStreamConfig::production(vec!["nats://127.0.0.1:4222".into()]);
        for expected in stream_configs(&production) {
            let path = deploy.join(format!("streams/{}.json", expected.name));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let got: stream::Config =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(got, expected, "{}", path.display());
        }
        let path = deploy.join("consumers/AMP_INGRESS-router.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let got: pull::Config =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(got, consumer_config(&production, "router"));
    }
}
