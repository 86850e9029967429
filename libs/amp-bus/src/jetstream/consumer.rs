//! The durable pull consumer, its acker, and dead letters.
//!
//! Dead-lettering is done by the bus, not left to JetStream's `max_deliver` (which would only
//! stop delivering and leave the message in the work queue for ever): a message is published
//! to `AMP_DEAD_LETTER` (subject `amp.dlq.<rest of its subject>`, its headers plus the reason)
//! and then terminated (`+TERM`, which a work-queue stream treats as an ack and removes), with
//! an error log line and `amp_bus_dead_letters_total{stream}`. That happens when
//! - a consumer calls `term(reason)`;
//! - a consumer naks or drops the delivery whose attempt is `max_deliveries`;
//! - a message comes back with a delivered count above `max_deliveries` (its last delivery
//!   was neither acked nor nak'ed within `ack_wait`, e.g. its consumer was killed): the bus
//!   dead-letters it before handing it out. JetStream's own `max_deliver` is set two higher
//!   so this step always gets its delivery.
//!
//! The dead-letter publish carries `Nats-Msg-Id = <stream>:<sequence>`, so a retry after a
//! crash between publishing and terminating does not store the dead letter twice.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::streams::{self, DEAD_LETTER_STREAM};
use super::{Shared, headers, reply};
use crate::{Acker, BusMessage, Consumer, Delivery, Error, Result, Settlement, StreamName};

/// How long one pull request waits at the server for a message before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Pause after a failed pull before the next (server restarting, leader changing, ...).
const PULL_BACKOFF: Duration = Duration::from_millis(250);

/// Headers added to a dead letter.
pub(crate) const REASON_HEADER: &str = "Amp-Dead-Letter-Reason";
const STREAM_HEADER: &str = "Amp-Dead-Letter-Stream";
const SUBJECT_HEADER: &str = "Amp-Dead-Letter-Subject";
const DELIVERIES_HEADER: &str = "Amp-Dead-Letter-Deliveries";
const MSG_ID_HEADER: &str = "Amp-Dead-Letter-Msg-Id";

/// A consumer of one stream under one durable name.
pub(crate) struct JetStreamConsumer {
    shared: Arc<Shared>,
    stream: StreamName,
    consumer: PullConsumer,
    /// The current pull request; kept across cancelled `next` calls so nothing it brings is
    /// lost.
    batch: Option<jetstream::consumer::pull::Batch>,
}

impl JetStreamConsumer {
    /// Creates (or updates, or binds to) the durable consumer `name` on the broker stream
    /// `stream_name` (of kind `stream`).
    pub(crate) async fn bind(
        shared: Arc<Shared>,
        stream: StreamName,
        stream_name: String,
        name: &str,
    ) -> Result<Self> {
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(Error::Backend(format!(
                "consumer name {name:?} must be non-empty letters, digits, '-' or '_'"
            )));
        }
        let handle = shared
            .js
            .get_stream(&stream_name)
            .await
            .map_err(|e| shared.error(&format!("get stream {stream_name}"), e))?;
        // Create-or-update: idempotent for every replica; a second name on a work queue is
        // refused by the server.
        let consumer = handle
            .create_consumer(streams::consumer_config(&shared.config, name))
            .await
            .map_err(|e| shared.error(&format!("consumer {name:?} on {stream_name}"), e))?;
        tracing::debug!(stream = %stream_name, consumer = name, "consumer bound");
        Ok(Self {
            shared,
            stream,
            consumer,
            batch: None,
        })
    }

    /// Turns a fetched message into a delivery, or dead-letters it if it is past its last
    /// allowed delivery.
    async fn deliver(&self, message: jetstream::Message) -> Option<Delivery> {
        let delivered = match message.info() {
            Ok(info) => info.delivered,
            Err(e) => {
                tracing::warn!(stream = %self.stream, error = %e, "message without JetStream info");
                return None;
            }
        };
        let attempt = u32::try_from(delivered).unwrap_or(u32::MAX);
        if delivered > self.shared.config.max_deliveries {
            let reason = format!(
                "not settled after {} deliveries",
                self.shared.config.max_deliveries
            );
            // On failure the message stays unsettled and comes back after ack_wait.
            let _ = dead_letter(&self.shared, self.stream, &message, attempt, &reason).await;
            return None;
        }
        let bus_message = BusMessage {
            subject: self.shared.names.unprefixed(message.subject.as_str()),
            headers: headers::from_nats(message.headers.as_ref()),
            payload: message.payload.clone(),
        };
        let reply_to = message
            .headers
            .as_ref()
            .and_then(|h| h.get(reply::REPLY_HEADER))
            .map(|v| v.as_str().to_owned());
        let acker = JetStreamAcker {
            shared: Arc::clone(&self.shared),
            stream: self.stream,
            message,
            attempt,
            reply_to,
        };
        Some(Delivery::new(bus_message, attempt, Box::new(acker)))
    }

    async fn pause(&self) -> Result<()> {
        tokio::select! {
            () = self.shared.closed.cancelled() => Err(Error::Closed),
            () = tokio::time::sleep(PULL_BACKOFF) => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl Consumer for JetStreamConsumer {
    async fn next(&mut self) -> Result<Delivery> {
        loop {
            self.shared.ensure_open()?;
            let Some(batch) = self.batch.as_mut() else {
                let request = self
                    .consumer
                    .batch()
                    .max_messages(self.shared.config.fetch_batch)
                    .expires(PULL_EXPIRES)
                    .messages();
                let batch = tokio::select! {
                    () = self.shared.closed.cancelled() => return Err(Error::Closed),
                    batch = request => batch,
                };
                match batch {
                    Ok(batch) => self.batch = Some(batch),
                    Err(e) => {
                        tracing::warn!(stream = %self.stream, error = %e, "pull request failed");
                        self.pause().await?;
                    }
                }
                continue;
            };
            let item = tokio::select! {
                () = self.shared.closed.cancelled() => return Err(Error::Closed),
                item = batch.next() => item,
            };
            match item {
                // The request expired or was filled: ask again.
                None => self.batch = None,
                Some(Err(e)) => {
                    tracing::warn!(stream = %self.stream, error = %e, "pull failed");
                    self.batch = None;
                    self.pause().await?;
                }
                Some(Ok(message)) => {
                    if let Some(delivery) = self.deliver(message).await {
                        return Ok(delivery);
                    }
                }
            }
        }
    }
}

/// One consumer over every partition of the ingress stream: the next message of whichever
/// partition has one, starting the search at a rotating partition so none is starved.
/// Cancel-safe like each part.
pub(crate) struct Partitioned {
    parts: Vec<JetStreamConsumer>,
    turn: usize,
}

impl Partitioned {
    pub(crate) fn new(parts: Vec<JetStreamConsumer>) -> Self {
        Self { parts, turn: 0 }
    }
}

#[async_trait::async_trait]
impl Consumer for Partitioned {
    async fn next(&mut self) -> Result<Delivery> {
        let n = self.parts.len();
        let start = self.turn % n.max(1);
        self.turn = self.turn.wrapping_add(1);
        let (before, after) = self.parts.split_at_mut(start);
        let waiting = after
            .iter_mut()
            .chain(before.iter_mut())
            .map(|part| part.next());
        let (first, _, _) = futures::future::select_all(waiting).await;
        first
    }
}

/// Settles one delivery with JetStream.
struct JetStreamAcker {
    shared: Arc<Shared>,
    stream: StreamName,
    message: jetstream::Message,
    attempt: u32,
    /// Where a publisher waits for the outcome (`Amp-Reply-To`), if one does.
    reply_to: Option<String>,
}

#[async_trait::async_trait]
impl Acker for JetStreamAcker {
    async fn settle(self: Box<Self>, settlement: Settlement) -> Result<()> {
        let JetStreamAcker {
            shared,
            stream,
            message,
            attempt,
            ..
        } = *self;
        shared.ensure_open()?;
        match settlement {
            // A double ack: the server confirms it recorded the ack, so "acked" means the
            // message will not come back.
            Settlement::Ack => message
                .double_ack()
                .await
                .map_err(|e| shared.error("ack", e)),
            Settlement::Nak { .. } if attempt >= shared.max_deliveries() => {
                let reason = format!("nak'ed on the last of {attempt} deliveries");
                dead_letter(&shared, stream, &message, attempt, &reason).await
            }
            Settlement::Nak { delay } => {
                let delay = (!delay.is_zero()).then_some(delay);
                message
                    .ack_with(AckKind::Nak(delay))
                    .await
                    .map_err(|e| shared.error("nak", e))
            }
            Settlement::Term { reason } => {
                dead_letter(&shared, stream, &message, attempt, &reason).await
            }
        }
    }

    async fn offer_reply(&mut self, reply: Bytes, confirm: bool) -> bool {
        let Some(to) = self.reply_to.take() else {
            return false;
        };
        // Only into this bus's reply inboxes, whatever a publisher put in the header.
        let root = self.shared.names.reply_root();
        let inside = to
            .strip_prefix(root.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|rest| rest.split('.').count() == 2 && !rest.contains(['*', '>', ' ']));
        if !inside {
            tracing::warn!(stream = %self.stream, "reply subject outside the reply inbox; ignored");
            return false;
        }
        let client = &self.shared.client;
        if confirm {
            match tokio::time::timeout(reply::CONFIRM_TIMEOUT, client.request(to, reply)).await {
                Ok(Ok(answer)) => answer.payload.as_ref() == b"1",
                _ => false,
            }
        } else {
            client.publish(to, reply).await.is_ok()
        }
    }

    fn dropped(self: Box<Self>) {
        let JetStreamAcker {
            shared,
            stream,
            message,
            attempt,
            ..
        } = *self;
        if shared.closed.is_cancelled() {
            // JetStream redelivers it after ack_wait.
            return;
        }
        let _ = shared.dropped.send(Dropped {
            stream,
            message,
            attempt,
        });
    }
}

/// A delivery dropped unsettled, for [`settle_dropped`].
pub(crate) struct Dropped {
    stream: StreamName,
    message: jetstream::Message,
    attempt: u32,
}

/// Settles dropped deliveries: nak(0), or dead-letter one on its last attempt. Ends when the
/// bus is gone.
pub(crate) async fn settle_dropped(shared: Weak<Shared>, mut rx: mpsc::UnboundedReceiver<Dropped>) {
    while let Some(dropped) = rx.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.closed.is_cancelled() {
            continue;
        }
        let result = if dropped.attempt >= shared.max_deliveries() {
            let reason = format!(
                "dropped unsettled on the last of {} deliveries",
                dropped.attempt
            );
            dead_letter(
                &shared,
                dropped.stream,
                &dropped.message,
                dropped.attempt,
                &reason,
            )
            .await
        } else {
            dropped
                .message
                .ack_with(AckKind::Nak(None))
                .await
                .map_err(|e| shared.error("nak", e))
        };
        if let Err(e) = result {
            tracing::warn!(stream = %dropped.stream, error = %e, "settling a dropped delivery failed; it comes back after ack_wait");
        }
    }
}

/// Publishes `message` to the dead-letter stream, then terminates it.
async fn dead_letter(
    shared: &Shared,
    stream: StreamName,
    message: &jetstream::Message,
    attempt: u32,
    reason: &str,
) -> Result<()> {
    let subject = shared.names.unprefixed(message.subject.as_str());
    let msg_id = headers::message_id(message.headers.as_ref()).unwrap_or_default();
    let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
    // Header values cannot hold line breaks.
    let clean_reason = reason.replace(['\r', '\n'], " ");
    let mut dlq_headers = headers::without_nats(message.headers.as_ref());
    dlq_headers.insert(REASON_HEADER, clean_reason.as_str());
    dlq_headers.insert(STREAM_HEADER, stream.as_str());
    dlq_headers.insert(SUBJECT_HEADER, subject.as_str());
    dlq_headers.insert(DELIVERIES_HEADER, attempt.to_string().as_str());
    if !msg_id.is_empty() {
        dlq_headers.insert(MSG_ID_HEADER, msg_id.as_str());
    }
    let publish = jetstream::message::PublishMessage::build()
        .payload(message.payload.clone())
        .headers(dlq_headers)
        .message_id(format!("{}:{sequence}", stream.as_str()));
    let stored = async {
        shared
            .js
            .send_publish(shared.names.dead_letter_subject(&subject), publish)
            .await?
            .await
    }
    .await;
    if let Err(e) = stored {
        tracing::error!(
            %stream, %subject, dedup_id = %msg_id, attempt, reason, error = %e,
            "dead-letter publish failed; the message comes back after ack_wait"
        );
        return Err(shared.error(&format!("publish to {DEAD_LETTER_STREAM}"), e));
    }
    tracing::error!(
        %stream, %subject, dedup_id = %msg_id, attempt, reason,
        "message dead-lettered"
    );
    metrics::counter!("amp_bus_dead_letters_total", "stream" => stream.as_str()).increment(1);
    message
        .double_ack_with(AckKind::Term)
        .await
        .map_err(|e| shared.error("term", e))
}
