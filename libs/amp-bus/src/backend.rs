//! The backend contract: the traits every bus backend implements, and [`Delivery`].

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

use crate::{BusMessage, PublishAck, Result, StreamName};

/// A bus backend (JetStream, in-process). Object-safe; services hold it as a [`crate::Bus`].
#[async_trait::async_trait]
pub trait BusBackend: Send + Sync + 'static {
    /// Durable publish to a work-queue stream, deduplicated by `dedup_id` within the dedup
    /// window. An `Ok` means the message will not be lost; [`PublishAck::acceptance`] says
    /// whether it was stored by a broker or already processed by a consumer.
    ///
    /// An empty `dedup_id` is no dedup: for a consumer that is idempotent by itself. A
    /// broker may then carry several such ingress publishes in one stream message (a pack,
    /// see the JetStream backend): each is still its own delivery, but when one of them is
    /// nak'ed the others come back with it, so each is delivered at least once.
    ///
    /// Fails with [`crate::Error::Closed`] after shutdown, [`crate::Error::InvalidSubject`] for a
    /// malformed subject, [`crate::Error::Timeout`] when not accepted in time (the message may
    /// still be processed; republishing with the same `dedup_id` is safe), and
    /// [`crate::Error::DeadLettered`] when a backend that waits for processing sees the
    /// message dead-lettered.
    async fn publish(
        &self,
        stream: StreamName,
        dedup_id: &str,
        msg: BusMessage,
    ) -> Result<PublishAck>;

    /// [`publish`](Self::publish), then wait up to `wait` for the consumer's outcome: the
    /// reply it offers with [`Delivery::offer_reply`] (or gives to
    /// [`Delivery::ack_with`]) comes back as [`Acceptance::Processed`] with that reply. Past
    /// `wait` the answer is what `publish` proves ([`Acceptance::Persisted`] on a broker),
    /// and the consumer learns, if it asks for confirmation, that nobody took its reply. A
    /// duplicate publish (`duplicate: true`) gets no reply of its own.
    ///
    /// The default (a backend whose publish already waits for processing, like the
    /// in-process bus) is `publish`. Fails like `publish`.
    ///
    /// [`Acceptance::Processed`]: crate::Acceptance::Processed
    /// [`Acceptance::Persisted`]: crate::Acceptance::Persisted
    async fn publish_for_reply(
        &self,
        stream: StreamName,
        dedup_id: &str,
        msg: BusMessage,
        wait: Duration,
    ) -> Result<PublishAck> {
        let _ = wait;
        self.publish(stream, dedup_id, msg).await
    }

    /// A pull consumer; all consumers with the same (stream, name) share the work: each
    /// message goes to one of them. A work-queue stream has one consumer name; fails with
    /// [`crate::Error::Backend`] if another name is used on the same stream, and with
    /// [`crate::Error::Closed`] after shutdown.
    async fn consume(&self, stream: StreamName, name: &str) -> Result<Box<dyn Consumer>>;

    /// How many shards the work of `stream` is split into (a partitioned JetStream ingress:
    /// its partitions, including higher ones left from a larger setting). 1 for unsplit
    /// streams and backends. Fails like `consume`.
    async fn shards(&self, stream: StreamName) -> Result<usize> {
        let _ = stream;
        Ok(1)
    }

    /// A pull consumer that takes only shard `shard` (modulo [`shards`](Self::shards)) of
    /// `stream`'s work, so N workers cover N shards with one outstanding request each rather
    /// than N. The default (one shard) is [`consume`](Self::consume). Fails like `consume`.
    async fn consume_shard(
        &self,
        stream: StreamName,
        name: &str,
        shard: usize,
    ) -> Result<Box<dyn Consumer>> {
        let _ = shard;
        self.consume(stream, name).await
    }

    /// Best-effort fan-out (a hint; may be lost) to every current subscriber of `subject`.
    /// Fails with [`crate::Error::InvalidSubject`] if `subject` has wildcards or empty tokens,
    /// and with [`crate::Error::Closed`] after shutdown.
    async fn notify(&self, subject: &str, payload: Bytes) -> Result<()> {
        self.notify_message(BusMessage::new(subject, payload)).await
    }

    /// [`notify`](Self::notify) with headers (e.g. trace context): subscribers receive
    /// `msg` with its subject, headers and payload. Fails like `notify`, and with
    /// [`crate::Error::Backend`] for headers the backend cannot carry.
    async fn notify_message(&self, msg: BusMessage) -> Result<()>;

    /// Subscribe to a subject; NATS-style wildcards: `*` one token, `>` the rest (tokens split
    /// on '.'). Dropping the subscription unsubscribes. Fails with
    /// [`crate::Error::InvalidSubject`] for a malformed pattern and with
    /// [`crate::Error::Closed`] after shutdown.
    async fn subscribe(&self, subject: &str) -> Result<Box<dyn Subscription>>;

    /// How many times a message is delivered before it is dead-lettered.
    fn max_deliveries(&self) -> u32;

    /// A counter that moves whenever notify hints may have been lost wholesale (the
    /// connection to the broker dropped and came back, or a subscription fell behind), so
    /// subscribers re-read the state their hints point at. `None`: hints are never lost that
    /// way (the in-process bus).
    fn hint_gaps(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// When the bus joins several processes (replicas) that must share their rate limits:
    /// how often each tells the others what it counted, on [`crate::subjects::limits_subject`].
    /// `None` (the default, and the in-process bus): one process, nothing to share.
    fn limits_sync(&self) -> Option<Duration> {
        None
    }

    /// Shuts the bus down: pending and later [`Consumer::next`] calls return
    /// [`crate::Error::Closed`], pending and later publishes fail with it, and subscriptions
    /// end. Idempotent.
    async fn close(&self);
}

/// A pull consumer on a work-queue stream.
#[async_trait::async_trait]
pub trait Consumer: Send {
    /// Waits for the next message. Cancel-safe: dropping the future loses nothing. Returns
    /// [`crate::Error::Closed`] after bus shutdown.
    async fn next(&mut self) -> Result<Delivery>;
}

/// A subscription to a subject pattern.
#[async_trait::async_trait]
pub trait Subscription: Send {
    /// The next matching message, or `None` once the bus is shut down. Hints may be lost
    /// (e.g. when the subscriber falls behind).
    async fn next(&mut self) -> Option<BusMessage>;
}

/// How a consumer settled a delivery; passed to the backend's [`Acker`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Processed; never redeliver. (A reply for the publisher was offered before, with
    /// [`Acker::offer_reply`].)
    Ack,
    /// Transient failure: redeliver after `delay` (or dead-letter if out of attempts).
    Nak {
        /// How long to wait before redelivering.
        delay: Duration,
    },
    /// Poison: dead-letter now.
    Term {
        /// Why, for the dead-letter log.
        reason: String,
    },
}

/// The backend half of a [`Delivery`]: settles it with the backend.
#[async_trait::async_trait]
pub trait Acker: Send {
    /// Settles the delivery. Fails with [`crate::Error::Closed`] if the bus is shut down.
    async fn settle(self: Box<Self>, settlement: Settlement) -> Result<()>;

    /// The delivery was dropped unsettled: treat it as a nak with zero delay. Must not block
    /// and must not need a runtime (drops happen anywhere).
    fn dropped(self: Box<Self>);

    /// Offers `reply` to the publisher (see [`Delivery::offer_reply`]). The default: nobody
    /// waits for a reply (`false`).
    async fn offer_reply(&mut self, reply: Bytes, confirm: bool) -> bool {
        let _ = (reply, confirm);
        false
    }

    /// Whether a broker holds the message durably until it is settled (JetStream: it was
    /// persisted before the publisher's ack). The in-process bus holds it only in memory,
    /// for a publisher that waits for the outcome: `false`.
    fn durable(&self) -> bool {
        true
    }
}

/// One delivery of a message to a consumer. Settle it with [`ack`](Self::ack),
/// [`ack_with`](Self::ack_with), [`nak`](Self::nak) or [`term`](Self::term); dropping it
/// unsettled is a nak with zero delay (it is redelivered).
pub struct Delivery {
    message: BusMessage,
    attempt: u32,
    acker: Option<Box<dyn Acker>>,
}

impl Delivery {
    /// A delivery; for backends. `attempt` is the 1-based delivery count.
    pub fn new(message: BusMessage, attempt: u32, acker: Box<dyn Acker>) -> Self {
        Self {
            message,
            attempt,
            acker: Some(acker),
        }
    }

    /// The message.
    pub fn message(&self) -> &BusMessage {
        &self.message
    }

    /// The 1-based delivery count: 1 on first delivery, 2 on the first redelivery, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Offers the outcome `reply` to the publisher, before settling. With `confirm`, returns
    /// whether the publisher took it, i.e. it is still waiting (see
    /// [`BusBackend::publish_for_reply`]) and will answer its caller with it; a consumer
    /// whose failure nobody took must report it some other way (a bounce). Without
    /// `confirm`, the reply is sent without waiting for that answer and the result says only
    /// whether it could be sent. On the in-process bus the publisher always waits: `true`.
    pub async fn offer_reply(&mut self, reply: Bytes, confirm: bool) -> bool {
        match self.acker.as_mut() {
            Some(acker) => acker.offer_reply(reply, confirm).await,
            None => false,
        }
    }

    /// Whether a broker holds the message durably until this delivery is settled (see
    /// [`Acker::durable`]). When it does not, a consumer that cannot process the message now
    /// may answer its waiting publisher with the failure rather than retry behind its back.
    pub fn durable(&self) -> bool {
        self.acker.as_ref().is_some_and(|a| a.durable())
    }

    /// Acks: the effect is durable; never redeliver. Fails with [`crate::Error::Closed`] if
    /// the bus is shut down (the message may then be redelivered by a durable backend).
    pub async fn ack(self) -> Result<()> {
        self.settle(Settlement::Ack).await
    }

    /// Acks with a reply: [`offer_reply`](Self::offer_reply) without confirmation, then
    /// [`ack`](Self::ack). Fails like `ack`.
    pub async fn ack_with(mut self, reply: Bytes) -> Result<()> {
        self.offer_reply(reply, false).await;
        self.ack().await
    }

    /// Transient failure: redeliver after `delay` with the attempt count incremented, or
    /// dead-letter if this was the last allowed attempt. Fails with [`crate::Error::Closed`]
    /// if the bus is shut down.
    pub async fn nak(self, delay: Duration) -> Result<()> {
        self.settle(Settlement::Nak { delay }).await
    }

    /// Poison: dead-letter now, logging `reason`. Fails with [`crate::Error::Closed`] if the
    /// bus is shut down.
    pub async fn term(self, reason: &str) -> Result<()> {
        self.settle(Settlement::Term {
            reason: reason.to_owned(),
        })
        .await
    }

    async fn settle(mut self, settlement: Settlement) -> Result<()> {
        match self.acker.take() {
            Some(acker) => acker.settle(settlement).await,
            // Unreachable: the acker is only taken here and in Drop, and both consume self.
            None => Ok(()),
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(acker) = self.acker.take() {
            acker.dropped();
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("attempt", &self.attempt)
            .field("settled", &self.acker.is_none())
            .finish()
    }
}
