//! The NATS JetStream backend: the bus of the cluster binaries.
//!
//! - `publish` is a JetStream publish with `Nats-Msg-Id = dedup_id` to a stream
//!   (`AMP_INGRESS`, kept by limits and purged below its consumers' ack floor, and
//!   `AMP_FEDERATION`, a work queue: file storage, `duplicate_window`, configurable
//!   replicas); it returns once the stream acked it, as [`Acceptance::Persisted`]. Ingress
//!   publishes without a dedup id are packed: those under way at once share one stream
//!   message (`pack`). With the
//!   server's `sync_interval: always` (see `deploy/nats/nats-server.conf`) that ack survives
//!   a kill -9 or power loss.
//! - `consume` binds one durable pull consumer per (stream, name), shared by every replica
//!   (explicit ack, `ack_wait`, `max_deliver`). Acks are double acks: `ack` returns once the
//!   server recorded it. Nak with a delay is JetStream's; term and exhausted deliveries
//!   dead-letter (see `consumer`).
//! - `notify` / `subscribe` are core NATS publish / subscribe: fan-out, lossy, native
//!   wildcards.
//! - Streams (and `AMP_DEAD_LETTER`) are created or updated idempotently at
//!   [`JetStreamBus::connect`]; the same definitions are in `deploy/nats/`.
//!
//! Modules: `config` ([`JetStreamConfig`]), `streams` (definitions and prefixed names),
//! `headers` (header mapping), `consumer` (pull consumer, acker, dead letters), `purge`
//! (removing what the ingress consumers settled), `subscription` (notify fan-out).
//!
//! [`Acceptance::Persisted`]: crate::Acceptance::Persisted

mod config;
mod consumer;
mod headers;
mod pack;
mod purge;
mod reply;
mod streams;
mod subscription;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use self::config::{JetStreamConfig, MIN_DEDUP_WINDOW};
use self::consumer::{Dropped, JetStreamConsumer};
use self::streams::Names;
use self::subscription::JetStreamSubscription;
use crate::subjects::{matches, validate_pattern, validate_subject};
use crate::{
    Acceptance, Bus, BusBackend, BusMessage, Consumer, Error, PublishAck, Result, StreamName,
    Subscription,
};

/// How long `close` waits for the connection to drain.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The JetStream bus. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct JetStreamBus {
    shared: Arc<Shared>,
}

/// What every consumer, acker and subscription of one bus shares.
pub(crate) struct Shared {
    pub(crate) config: JetStreamConfig,
    pub(crate) names: Names,
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    /// Stream publishes, group-committed.
    batches: amp_nats::BatchPublisher,
    /// Ingress publishes without a dedup id, packed.
    packer: pack::Packer,
    pub(crate) closed: CancellationToken,
    /// Deliveries dropped unsettled, settled by a background task (drop cannot await).
    pub(crate) dropped: mpsc::UnboundedSender<Dropped>,
    /// Moves on every reconnect and slow-consumer event (see `BusBackend::hint_gaps`).
    pub(crate) gaps: Arc<tokio::sync::watch::Sender<u64>>,
    /// The reply inbox, made on the first `publish_for_reply`.
    inbox: tokio::sync::OnceCell<Arc<reply::Inbox>>,
}

impl Shared {
    pub(crate) fn ensure_open(&self) -> Result<()> {
        if self.closed.is_cancelled() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// The error to report for a failed NATS call: `Closed` once the bus is shut down.
    pub(crate) fn error(&self, what: &str, err: impl std::fmt::Display) -> Error {
        if self.closed.is_cancelled() {
            Error::Closed
        } else {
            Error::Backend(format!("{what}: {err}"))
        }
    }

    pub(crate) fn max_deliveries(&self) -> u32 {
        u32::try_from(self.config.max_deliveries).unwrap_or(u32::MAX)
    }
}

impl JetStreamBus {
    /// Connects, and creates or updates the streams `AMP_INGRESS`, `AMP_FEDERATION` and
    /// `AMP_DEAD_LETTER` (under the prefix). Must be called within a tokio runtime.
    ///
    /// Fails with [`Error::Backend`] when the config is invalid, no server answers within
    /// `connect_timeout`, or a stream cannot be created or updated (e.g. JetStream is off, or
    /// an existing stream has a retention or storage that cannot be changed in place).
    pub async fn connect(config: JetStreamConfig) -> Result<Self> {
        config.validate()?;
        let (gaps, _) = tokio::sync::watch::channel(0u64);
        let gaps = Arc::new(gaps);
        let gap = gaps.clone();
        let options = async_nats::ConnectOptions::new()
            .connection_timeout(config.connect_timeout)
            .name("amp-bus")
            .event_callback(move |event| {
                let gap = gap.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            metrics::gauge!("amp_nats_connected", "client" => "bus").set(1.0);
                            tracing::info!("NATS connected");
                            // Hints sent while we were away are gone: subscribers re-read.
                            gap.send_modify(|n| *n += 1);
                        }
                        async_nats::Event::Disconnected => {
                            metrics::gauge!("amp_nats_connected", "client" => "bus").set(0.0);
                            metrics::counter!("amp_nats_disconnects_total", "client" => "bus")
                                .increment(1);
                            tracing::warn!("NATS disconnected");
                        }
                        async_nats::Event::SlowConsumer(_) => {
                            tracing::warn!("NATS subscription fell behind; hints dropped");
                            gap.send_modify(|n| *n += 1);
                        }
                        other => tracing::debug!(event = %other, "NATS client event"),
                    }
                }
            });
        let client = amp_nats::connect(&config.urls, &config.security, options)
            .await
            .map_err(|e| Error::Backend(e.to_string()))?;
        // Connected from here on until a Disconnected event says otherwise.
        metrics::gauge!("amp_nats_connected", "client" => "bus").set(1.0);
        let js = jetstream::ContextBuilder::new()
            .timeout(config.publish_timeout)
            .build(client.clone());

        // Patiently: a process that starts while JetStream elects a leader (a NATS node just
        // restarted) waits for it rather than exit; a refusal of the config fails at once.
        let streams = streams::stream_configs(&config);
        let transient = |(_, e): &(String, async_nats::jetstream::context::CreateStreamError)| {
            use async_nats::jetstream::context::CreateStreamErrorKind as Kind;
            match e.kind() {
                Kind::TimedOut | Kind::JetStreamUnavailable => true,
                Kind::JetStream(api) => api.code() == 503,
                _ => false,
            }
        };
        amp_nats::patiently("the bus's streams", transient, || async {
            for stream in &streams {
                let name = stream.name.clone();
                let mut stream = stream.clone();
                // An ingress stream made as a work queue by an earlier version stays one:
                // JetStream cannot change a retention in place (see `purge`).
                // (`get_stream` answers with the stream's info: no second request.)
                if let Ok(existing) = js.get_stream(&name).await
                    && let kept = existing.cached_info().config.retention
                    && kept == jetstream::stream::RetentionPolicy::WorkQueue
                    && stream.retention != kept
                {
                    tracing::info!(stream = %name, "stream kept as a work queue (made by an earlier version); recreate it when drained to save a disk write per ack");
                    stream.retention = kept;
                }
                js.create_or_update_stream(stream)
                    .await
                    .map_err(|e| (name.clone(), e))?;
                tracing::debug!(stream = %name, "stream ready");
            }
            Ok(())
        })
        .await
        .map_err(|(name, e)| Error::Backend(format!("create or update stream {name}: {e}")))?;

        let (dropped_tx, dropped_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            names: Names::new(&config.prefix),
            batches: amp_nats::BatchPublisher::new(client.clone(), config.publish_batch),
            packer: pack::Packer::new(client.clone(), config.ingress_pack),
            config,
            client,
            js,
            closed: CancellationToken::new(),
            dropped: dropped_tx,
            gaps,
            inbox: tokio::sync::OnceCell::new(),
        });
        tokio::spawn(consumer::settle_dropped(
            Arc::downgrade(&shared),
            dropped_rx,
        ));
        tracing::info!(
            urls = ?shared.config.urls,
            prefix = %shared.config.prefix,
            replicas = shared.config.replicas,
            "JetStream bus connected"
        );
        Ok(Self { shared })
    }

    /// [`connect`](Self::connect), wrapped as a [`Bus`].
    ///
    /// Fails like [`connect`](Self::connect).
    pub async fn connect_bus(config: JetStreamConfig) -> Result<Bus> {
        Ok(Bus::new(Self::connect(config).await?))
    }

    /// The settings in force.
    pub fn config(&self) -> &JetStreamConfig {
        &self.shared.config
    }

    /// Every ingress partition, in order: the configured ones, and any higher one left from a
    /// larger setting (drained, never stranded).
    async fn ingress_partitions_present(&self) -> Result<Vec<usize>> {
        let shared = &self.shared;
        let mut partitions: Vec<usize> = (0..shared.config.ingress_partitions).collect();
        let mut names = shared.js.stream_names();
        while let Some(found) = futures::StreamExt::next(&mut names).await {
            let found = found.map_err(|e| shared.error("list streams", e))?;
            if let Some(k) = shared.names.ingress_partition_of(&found)
                && !partitions.contains(&k)
            {
                partitions.push(k);
            }
        }
        partitions.sort_unstable();
        Ok(partitions)
    }

    /// A JetStream publish, with the reply subject of a waiting publisher if any.
    async fn publish_with(
        &self,
        stream: StreamName,
        dedup_id: &str,
        msg: BusMessage,
        reply_to: Option<&str>,
    ) -> Result<PublishAck> {
        let shared = &self.shared;
        shared.ensure_open()?;
        validate_subject(&msg.subject)?;
        // In NATS the subject picks the stream; refuse one that would land elsewhere.
        if !matches(stream.subject_filter(), &msg.subject) {
            return Err(Error::InvalidSubject(format!(
                "{} is not a subject of {stream}",
                msg.subject
            )));
        }
        let mut nats_headers = headers::to_nats(&msg.headers)?;
        let partitions = shared.config.ingress_partitions;
        let subject = shared
            .names
            .physical_subject(stream, &msg.subject, partitions);
        // Batches and packs never span streams: the ingress partition's stream, or the
        // stream itself.
        let stream_name = shared
            .names
            .physical_stream(stream, &msg.subject, partitions);
        let packed =
            stream == StreamName::Ingress && dedup_id.is_empty() && shared.config.ingress_pack > 1;
        let stored = if packed {
            let member = pack::Member {
                subject: msg.subject,
                reply_to: reply_to.map(str::to_owned),
                headers: msg.headers,
                payload: msg.payload,
            };
            futures::future::Either::Left(shared.packer.publish(&stream_name, subject, member))
        } else {
            if let Some(to) = reply_to {
                nats_headers.insert(reply::REPLY_HEADER, to);
            }
            if !dedup_id.is_empty() {
                nats_headers.insert("Nats-Msg-Id", dedup_id);
            }
            futures::future::Either::Right(shared.batches.publish(
                &stream_name,
                subject,
                nats_headers,
                msg.payload,
            ))
        };
        let ack = tokio::time::timeout(shared.config.publish_timeout, stored);
        let ack = tokio::select! {
            biased;
            () = shared.closed.cancelled() => return Err(Error::Closed),
            ack = ack => ack,
        };
        match ack {
            Ok(Ok(ack)) => Ok(PublishAck {
                duplicate: ack.duplicate,
                acceptance: Acceptance::Persisted,
                reply: None,
            }),
            Err(_) | Ok(Err(amp_nats::PublishError::TimedOut)) if !shared.closed.is_cancelled() => {
                tracing::warn!(%stream, dedup_id, "JetStream publish not acked in time");
                Err(Error::Timeout)
            }
            Ok(Err(e)) => Err(shared.error("JetStream publish", e)),
            Err(_) => Err(Error::Closed),
        }
    }
}

impl std::fmt::Debug for JetStreamBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamBus")
            .field("config", &self.shared.config)
            .field("closed", &self.shared.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl BusBackend for JetStreamBus {
    async fn publish(
        &self,
        stream: StreamName,
        dedup_id: &str,
        msg: BusMessage,
    ) -> Result<PublishAck> {
        self.publish_with(stream, dedup_id, msg, None).await
    }

    async fn publish_for_reply(
        &self,
        stream: StreamName,
        dedup_id: &str,
        msg: BusMessage,
        wait: Duration,
    ) -> Result<PublishAck> {
        if wait.is_zero() {
            return self.publish(stream, dedup_id, msg).await;
        }
        let shared = &self.shared;
        shared.ensure_open()?;
        let inbox = shared
            .inbox
            .get_or_try_init(|| reply::Inbox::start(&shared.client, shared.names.reply_root()))
            .await?;
        let (reply_to, waiter) = inbox.register();
        let ack = self
            .publish_with(stream, dedup_id, msg, Some(&reply_to))
            .await?;
        if ack.duplicate {
            // The first publish's consumer replies to the first publisher only.
            return Ok(ack);
        }
        let reply = tokio::select! {
            biased;
            () = shared.closed.cancelled() => return Err(Error::Closed),
            reply = waiter.wait(wait) => reply,
        };
        Ok(match reply {
            Some(reply) => PublishAck {
                duplicate: false,
                acceptance: Acceptance::Processed,
                reply: Some(reply),
            },
            None => ack,
        })
    }

    async fn consume(&self, stream: StreamName, name: &str) -> Result<Box<dyn Consumer>> {
        self.shared.ensure_open()?;
        if stream != StreamName::Ingress {
            let stream_name = self.shared.names.stream(stream.as_str());
            let consumer =
                JetStreamConsumer::bind(Arc::clone(&self.shared), stream, stream_name, name)
                    .await?;
            return Ok(Box::new(consumer));
        }
        let partitions = self.ingress_partitions_present().await?;
        let mut parts = Vec::with_capacity(partitions.len());
        for k in partitions {
            let stream_name = self.shared.names.ingress_stream(k);
            parts.push(
                JetStreamConsumer::bind(Arc::clone(&self.shared), stream, stream_name, name)
                    .await?,
            );
        }
        if parts.len() == 1
            && let Some(only) = parts.pop()
        {
            return Ok(Box::new(only));
        }
        Ok(Box::new(consumer::Partitioned::new(parts)))
    }

    async fn shards(&self, stream: StreamName) -> Result<usize> {
        self.shared.ensure_open()?;
        if stream != StreamName::Ingress {
            return Ok(1);
        }
        Ok(self.ingress_partitions_present().await?.len())
    }

    async fn consume_shard(
        &self,
        stream: StreamName,
        name: &str,
        shard: usize,
    ) -> Result<Box<dyn Consumer>> {
        self.shared.ensure_open()?;
        if stream != StreamName::Ingress {
            return self.consume(stream, name).await;
        }
        let partitions = self.ingress_partitions_present().await?;
        let k = partitions
            .get(shard % partitions.len().max(1))
            .copied()
            .unwrap_or(0);
        let stream_name = self.shared.names.ingress_stream(k);
        let consumer =
            JetStreamConsumer::bind(Arc::clone(&self.shared), stream, stream_name, name).await?;
        Ok(Box::new(consumer))
    }

    async fn notify_message(&self, msg: BusMessage) -> Result<()> {
        let shared = &self.shared;
        shared.ensure_open()?;
        validate_subject(&msg.subject)?;
        let subject = shared.names.subject(&msg.subject);
        let sent = if msg.headers.is_empty() {
            shared.client.publish(subject, msg.payload).await
        } else {
            let headers = headers::to_nats(&msg.headers)?;
            shared
                .client
                .publish_with_headers(subject, headers, msg.payload)
                .await
        };
        sent.map_err(|e| shared.error("notify", e))
    }

    async fn subscribe(&self, subject: &str) -> Result<Box<dyn Subscription>> {
        self.shared.ensure_open()?;
        validate_pattern(subject)?;
        let subscription = JetStreamSubscription::new(Arc::clone(&self.shared), subject).await?;
        Ok(Box::new(subscription))
    }

    fn max_deliveries(&self) -> u32 {
        self.shared.max_deliveries()
    }

    fn hint_gaps(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.shared.gaps.subscribe())
    }

    fn limits_sync(&self) -> Option<Duration> {
        let every = self.shared.config.limits_sync;
        (!every.is_zero()).then_some(every)
    }

    async fn close(&self) {
        let shared = &self.shared;
        if shared.closed.is_cancelled() {
            return;
        }
        tracing::info!("JetStream bus shutting down");
        shared.closed.cancel();
        // Drain: unsubscribe, deliver what is in flight, flush pending acks, close.
        match tokio::time::timeout(DRAIN_TIMEOUT, shared.client.drain()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "NATS drain failed"),
            Err(_) => tracing::warn!("NATS drain timed out"),
        }
    }
}
