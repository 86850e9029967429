//! One in-memory work queue per stream: dedup, FIFO delivery to competing consumers,
//! redelivery with attempt counts, and dead letters.
//!
//! A message is owned by exactly one place at a time: the ready queue, a [`Delivery`] being
//! processed, or a nak-delay timer. Its publisher (and any duplicate publishers) wait on a
//! `watch` channel that the message carries and settles exactly once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::InProcessConfig;
use crate::{
    Acceptance, Acker, BusMessage, Consumer, Delivery, Error, PublishAck, Result, Settlement,
    StreamName,
};

/// How a message ended, as its publishers see it.
#[derive(Debug, Clone)]
enum Outcome {
    Processed(Option<Bytes>),
    DeadLettered(String),
}

type OutcomeTx = watch::Sender<Option<Outcome>>;
type OutcomeRx = watch::Receiver<Option<Outcome>>;

/// A message not yet settled.
struct Pending {
    dedup_id: String,
    message: BusMessage,
    /// Deliveries so far.
    attempt: u32,
    outcome: OutcomeTx,
}

struct DedupEntry {
    outcome: OutcomeRx,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<Pending>,
    dedup: HashMap<String, DedupEntry>,
    /// Dedup ids in first-publish order, for pruning by age.
    dedup_order: VecDeque<(Instant, String)>,
    /// The consumer name bound to this stream (a work queue has one).
    group: Option<String>,
}

impl QueueState {
    fn prune(&mut self, now: Instant, window: Duration) {
        while let Some((first_seen, _)) = self.dedup_order.front() {
            if now.saturating_duration_since(*first_seen) < window {
                break;
            }
            if let Some((_, id)) = self.dedup_order.pop_front() {
                self.dedup.remove(&id);
            }
        }
    }
}

/// The work queue of one stream.
pub(super) struct WorkQueue {
    name: StreamName,
    config: InProcessConfig,
    closed: CancellationToken,
    state: Mutex<QueueState>,
    /// Wakes a waiting consumer when a message becomes ready.
    ready: Notify,
}

impl WorkQueue {
    pub(super) fn new(
        name: StreamName,
        config: InProcessConfig,
        closed: CancellationToken,
    ) -> Self {
        Self {
            name,
            config,
            closed,
            state: Mutex::new(QueueState::default()),
            ready: Notify::new(),
        }
    }

    pub(super) fn queued(&self) -> usize {
        self.state.lock().ready.len()
    }

    pub(super) fn remembered_dedup_ids(&self) -> usize {
        let mut state = self.state.lock();
        state.prune(Instant::now(), self.config.dedup_window);
        state.dedup.len()
    }

    /// Enqueues (unless a duplicate) and waits for the outcome.
    pub(super) async fn publish(&self, dedup_id: &str, message: BusMessage) -> Result<PublishAck> {
        let (duplicate, mut outcome) = self.enqueue_new(dedup_id, message)?;
        let settled = async {
            outcome
                .wait_for(Option::is_some)
                .await
                .map(|settled| settled.clone())
        };
        let result = tokio::select! {
            biased;
            () = self.closed.cancelled() => return Err(Error::Closed),
            result = tokio::time::timeout(self.config.publish_timeout, settled) => result,
        };
        match result {
            Err(_elapsed) => Err(Error::Timeout),
            // The message was dropped unsettled: only happens when the bus closes.
            Ok(Err(_)) | Ok(Ok(None)) => Err(Error::Closed),
            Ok(Ok(Some(Outcome::Processed(reply)))) => Ok(PublishAck {
                duplicate,
                acceptance: Acceptance::Processed,
                reply,
            }),
            Ok(Ok(Some(Outcome::DeadLettered(reason)))) => Err(Error::DeadLettered(reason)),
        }
    }

    /// Returns whether `dedup_id` is a duplicate, and the outcome to wait for.
    fn enqueue_new(&self, dedup_id: &str, message: BusMessage) -> Result<(bool, OutcomeRx)> {
        let mut state = self.state.lock();
        // Checked under the lock so that close() (which clears the queue under it) cannot
        // miss this message.
        if self.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        let now = Instant::now();
        state.prune(now, self.config.dedup_window);
        if let Some(entry) = state.dedup.get(dedup_id) {
            tracing::debug!(stream = %self.name, dedup_id, "duplicate publish");
            return Ok((true, entry.outcome.clone()));
        }
        let (tx, rx) = watch::channel(None);
        // An empty dedup id opts out of dedup, as a missing Nats-Msg-Id does in JetStream.
        if !dedup_id.is_empty() {
            state.dedup.insert(
                dedup_id.to_owned(),
                DedupEntry {
                    outcome: rx.clone(),
                },
            );
            state.dedup_order.push_back((now, dedup_id.to_owned()));
        }
        state.ready.push_back(Pending {
            dedup_id: dedup_id.to_owned(),
            message,
            attempt: 0,
            outcome: tx,
        });
        drop(state);
        self.ready.notify_one();
        Ok((false, rx))
    }

    pub(super) fn consumer(self: &Arc<Self>, name: &str) -> Result<InProcessConsumer> {
        if name.is_empty() {
            return Err(Error::Backend("consumer name must not be empty".to_owned()));
        }
        let mut state = self.state.lock();
        match &state.group {
            Some(group) if group != name => {
                return Err(Error::Backend(format!(
                    "stream {} is a work queue already consumed by {group:?}; \
                     it cannot have a second consumer {name:?}",
                    self.name
                )));
            }
            Some(_) => {}
            None => state.group = Some(name.to_owned()),
        }
        Ok(InProcessConsumer {
            queue: Arc::clone(self),
        })
    }

    /// Puts a message back at the end of the ready queue.
    fn requeue(&self, pending: Pending) {
        let mut state = self.state.lock();
        if self.closed.is_cancelled() {
            return;
        }
        state.ready.push_back(pending);
        drop(state);
        self.ready.notify_one();
    }

    /// Redelivers after `delay`, or dead-letters a message out of attempts.
    fn retry(self: &Arc<Self>, pending: Pending, delay: Duration) {
        if pending.attempt >= self.config.max_deliveries {
            let reason = format!("not acked after {} deliveries", pending.attempt);
            self.dead_letter(pending, reason);
            return;
        }
        if delay.is_zero() {
            self.requeue(pending);
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let queue = Arc::clone(self);
                runtime.spawn(async move {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => queue.requeue(pending),
                        () = queue.closed.cancelled() => {}
                    }
                });
            }
            // Without a runtime there is no timer; redelivering early beats losing it.
            Err(_) => self.requeue(pending),
        }
    }

    fn dead_letter(&self, pending: Pending, reason: String) {
        tracing::error!(
            stream = %self.name,
            dedup_id = %pending.dedup_id,
            subject = %pending.message.subject,
            attempt = pending.attempt,
            reason = %reason,
            "message dead-lettered"
        );
        metrics::counter!("amp_bus_dead_letters_total", "stream" => self.name.as_str())
            .increment(1);
        pending
            .outcome
            .send_replace(Some(Outcome::DeadLettered(reason)));
    }

    /// Drops every queued message; their publishers see `Closed`.
    pub(super) fn close(&self) {
        let mut state = self.state.lock();
        state.ready.clear();
        state.dedup.clear();
        state.dedup_order.clear();
    }

    fn try_take(self: &Arc<Self>) -> Result<Option<Delivery>> {
        let mut state = self.state.lock();
        if self.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        let Some(mut pending) = state.ready.pop_front() else {
            return Ok(None);
        };
        drop(state);
        pending.attempt = pending.attempt.saturating_add(1);
        let message = pending.message.clone();
        let attempt = pending.attempt;
        let acker = InProcessAcker {
            queue: Arc::clone(self),
            pending,
            reply: None,
        };
        Ok(Some(Delivery::new(message, attempt, Box::new(acker))))
    }
}

/// A consumer of one in-process stream.
pub(super) struct InProcessConsumer {
    queue: Arc<WorkQueue>,
}

#[async_trait::async_trait]
impl Consumer for InProcessConsumer {
    async fn next(&mut self) -> Result<Delivery> {
        loop {
            // Register interest before looking, so a message enqueued in between still
            // wakes us.
            let notified = self.queue.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(delivery) = self.queue.try_take()? {
                return Ok(delivery);
            }
            tokio::select! {
                () = notified => {}
                () = self.queue.closed.cancelled() => return Err(Error::Closed),
            }
        }
    }
}

struct InProcessAcker {
    queue: Arc<WorkQueue>,
    pending: Pending,
    /// The reply offered before the ack, handed to the publisher with it.
    reply: Option<Bytes>,
}

#[async_trait::async_trait]
impl Acker for InProcessAcker {
    async fn settle(self: Box<Self>, settlement: Settlement) -> Result<()> {
        let InProcessAcker {
            queue,
            pending,
            reply,
        } = *self;
        if queue.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        match settlement {
            Settlement::Ack => {
                pending
                    .outcome
                    .send_replace(Some(Outcome::Processed(reply)));
            }
            Settlement::Nak { delay } => queue.retry(pending, delay),
            Settlement::Term { reason } => queue.dead_letter(pending, reason),
        }
        Ok(())
    }

    async fn offer_reply(&mut self, reply: Bytes, _confirm: bool) -> bool {
        // The publisher waits for the outcome, given with the ack; a retry of it reads the
        // same outcome.
        self.reply = Some(reply);
        true
    }

    fn durable(&self) -> bool {
        false
    }

    fn dropped(self: Box<Self>) {
        let InProcessAcker { queue, pending, .. } = *self;
        if !queue.closed.is_cancelled() {
            queue.retry(pending, Duration::ZERO);
        }
    }
}
