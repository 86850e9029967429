//! The in-process backend: the bus of the single-process binary `ampd`.
//!
//! Messages live in memory only, so durability comes from the consumer: `publish` returns
//! when a consumer has **acked** the message ([`Acceptance::Processed`], carrying the reply
//! given to [`crate::Delivery::ack_with`]), and a 2xx built on it means the consumer's effect
//! (a store commit) happened. A publish whose future is dropped leaves the message queued.
//!
//! - `queue`: one work queue per stream (dedup, FIFO, redelivery, dead letters).
//! - `fanout`: subject subscriptions for `notify`.
//!
//! [`Acceptance::Processed`]: crate::Acceptance::Processed

mod fanout;
mod queue;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use self::fanout::Fanout;
use self::queue::WorkQueue;
use crate::{
    BusBackend, BusMessage, Consumer, Error, PublishAck, Result, StreamName, Subscription,
};

/// Settings of the in-process bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InProcessConfig {
    /// How long a dedup id is remembered after its first publish (default 2 min). Ids older
    /// than this are forgotten, so memory stays bounded by the publish rate times the window.
    pub dedup_window: Duration,
    /// Deliveries (first delivery included) before a message that keeps being nak'ed or
    /// dropped is dead-lettered (default 8).
    pub max_deliveries: u32,
    /// How long `publish` waits for a consumer's ack before failing with
    /// [`Error::Timeout`] (default 10 s).
    pub publish_timeout: Duration,
    /// Messages buffered per subscription before further notify hints to it are dropped
    /// (default 1024).
    pub notify_buffer: usize,
}

impl Default for InProcessConfig {
    fn default() -> Self {
        Self {
            dedup_window: Duration::from_secs(120),
            max_deliveries: 8,
            publish_timeout: Duration::from_secs(10),
            notify_buffer: 1024,
        }
    }
}

/// The in-process bus. Cheap to clone; clones share the same queues and subscriptions.
#[derive(Clone)]
pub struct InProcessBus {
    inner: Arc<Inner>,
}

struct Inner {
    config: InProcessConfig,
    closed: CancellationToken,
    ingress: Arc<WorkQueue>,
    federation: Arc<WorkQueue>,
    fanout: Arc<Fanout>,
}

impl InProcessBus {
    /// A fresh, empty bus. A `max_deliveries` of 0 is treated as 1.
    pub fn new(mut config: InProcessConfig) -> Self {
        config.max_deliveries = config.max_deliveries.max(1);
        let closed = CancellationToken::new();
        let queue = |name| Arc::new(WorkQueue::new(name, config.clone(), closed.clone()));
        Self {
            inner: Arc::new(Inner {
                ingress: queue(StreamName::Ingress),
                federation: queue(StreamName::Federation),
                fanout: Arc::new(Fanout::new(config.notify_buffer.max(1), closed.clone())),
                config,
                closed,
            }),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &InProcessConfig {
        &self.inner.config
    }

    /// Messages of `stream` waiting for a consumer (not counting ones being processed or
    /// waiting out a nak delay).
    pub fn queued(&self, stream: StreamName) -> usize {
        self.queue(stream).queued()
    }

    /// Dedup ids of `stream` currently remembered (after pruning expired ones).
    pub fn remembered_dedup_ids(&self, stream: StreamName) -> usize {
        self.queue(stream).remembered_dedup_ids()
    }

    /// Live subscriptions, across all subjects.
    pub fn subscriptions(&self) -> usize {
        self.inner.fanout.subscriptions()
    }

    fn queue(&self, stream: StreamName) -> &Arc<WorkQueue> {
        match stream {
            StreamName::Ingress => &self.inner.ingress,
            StreamName::Federation => &self.inner.federation,
        }
    }

    fn ensure_open(&self) -> Result<()> {
        if self.inner.closed.is_cancelled() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

impl std::fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessBus")
            .field("config", &self.inner.config)
            .field("closed", &self.inner.closed.is_cancelled())
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl BusBackend for InProcessBus {
    async fn publish(
        &self,
        stream: StreamName,
        dedup_id: &str,
        msg: BusMessage,
    ) -> Result<PublishAck> {
        self.ensure_open()?;
        crate::subjects::validate_subject(&msg.subject)?;
        self.queue(stream).publish(dedup_id, msg).await
    }

    async fn consume(&self, stream: StreamName, name: &str) -> Result<Box<dyn Consumer>> {
        self.ensure_open()?;
        let consumer = self.queue(stream).consumer(name)?;
        Ok(Box::new(consumer))
    }

    async fn notify_message(&self, msg: BusMessage) -> Result<()> {
        self.ensure_open()?;
        crate::subjects::validate_subject(&msg.subject)?;
        self.inner.fanout.notify(msg);
        Ok(())
    }

    async fn subscribe(&self, subject: &str) -> Result<Box<dyn Subscription>> {
        self.ensure_open()?;
        crate::subjects::validate_pattern(subject)?;
        Ok(Box::new(self.inner.fanout.subscribe(subject)))
    }

    fn max_deliveries(&self) -> u32 {
        self.inner.config.max_deliveries
    }

    async fn close(&self) {
        if self.inner.closed.is_cancelled() {
            return;
        }
        tracing::info!("in-process bus shutting down");
        self.inner.closed.cancel();
        self.inner.ingress.close();
        self.inner.federation.close();
        self.inner.fanout.close();
    }
}
