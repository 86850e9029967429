//! The durable pull consumer, its acker, and dead letters.
//!
//! Dead-lettering is done by the bus, not left to JetStream's `max_deliver` (which would only
//! stop delivering and leave the message in the work queue for ever): a message is published
//! to `AMP_DEAD_LETTER` (subject `amp.dlq.<rest of its subject>`, its headers plus the reason)
//! and then terminated (`+TERM`, which counts as settled: a work queue removes the message,
//! an ingress stream's purge does), with
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

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::pack::{self, Member};
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
    /// Deliveries fetched and not handed out yet: the members of a pack.
    ready: VecDeque<Delivery>,
    /// Stops this consumer's purge of settled messages (ingress streams) when dropped.
    _purge: Option<tokio_util::sync::DropGuard>,
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
        let purge = (stream == StreamName::Ingress).then(|| {
            let stop = tokio_util::sync::CancellationToken::new();
            tokio::spawn(super::purge::purge_settled(
                Arc::downgrade(&shared),
                stream_name.clone(),
                stop.clone(),
            ));
            stop.drop_guard()
        });
        Ok(Self {
            shared,
            stream,
            consumer,
            batch: None,
            ready: VecDeque::new(),
            _purge: purge,
        })
    }

    /// Turns a fetched message into deliveries (one, or one per member of a pack) in
    /// `ready`, or dead-letters it if it is past its last allowed delivery.
    async fn deliver(&mut self, message: jetstream::Message) {
        let delivered = match message.info() {
            Ok(info) => info.delivered,
            Err(e) => {
                tracing::warn!(stream = %self.stream, error = %e, "message without JetStream info");
                return;
            }
        };
        let attempt = u32::try_from(delivered).unwrap_or(u32::MAX);
        let packed = message
            .headers
            .as_ref()
            .is_some_and(|h| h.get(pack::PACK_HEADER).is_some());
        if packed {
            return self.deliver_pack(message, attempt).await;
        }
        if delivered > self.shared.config.max_deliveries {
            let reason = format!(
                "not settled after {} deliveries",
                self.shared.config.max_deliveries
            );
            // On failure the message stays unsettled and comes back after ack_wait.
            let _ = dead_letter(&self.shared, self.stream, &message, attempt, &reason).await;
            return;
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
        self.ready
            .push_back(Delivery::new(bus_message, attempt, Box::new(acker)));
    }

    /// A pack's members as deliveries sharing the pack's settlement; a damaged pack, or one
    /// past its last allowed delivery, is dead-lettered (member by member when readable).
    async fn deliver_pack(&mut self, message: jetstream::Message, attempt: u32) {
        let shared = &self.shared;
        let members = match pack::decode(&message.payload) {
            Ok(members) => members,
            Err(e) => {
                let _ = dead_letter(shared, self.stream, &message, attempt, &e.to_string()).await;
                return;
            }
        };
        if i64::from(attempt) > shared.config.max_deliveries {
            let reason = format!(
                "not settled after {} deliveries",
                shared.config.max_deliveries
            );
            for (index, member) in members.iter().enumerate() {
                if dead_letter_member(
                    shared,
                    self.stream,
                    &message,
                    index,
                    member,
                    attempt,
                    &reason,
                )
                .await
                .is_err()
                {
                    // The pack comes back after ack_wait; the members already dead-lettered
                    // are recognised by their dead letter's id.
                    return;
                }
            }
            if let Err(e) = message.double_ack_with(AckKind::Term).await {
                tracing::warn!(stream = %self.stream, error = %e, "terminating a dead-lettered pack failed");
            }
            return;
        }
        let state = Arc::new(PackState {
            shared: Arc::clone(shared),
            stream: self.stream,
            message,
            attempt,
            progress: parking_lot::Mutex::new(Progress {
                open: members.len(),
                nak: None,
            }),
        });
        metrics::counter!("amp_bus_packs_delivered_total", "stream" => self.stream.as_str())
            .increment(1);
        for (index, member) in members.into_iter().enumerate() {
            let bus_message = BusMessage {
                subject: member.subject.clone(),
                headers: member.headers.clone(),
                payload: member.payload.clone(),
            };
            let acker = PackAcker {
                state: Arc::clone(&state),
                index,
                member,
            };
            self.ready
                .push_back(Delivery::new(bus_message, attempt, Box::new(acker)));
        }
    }
}

#[async_trait::async_trait]
impl Consumer for JetStreamConsumer {
    async fn next(&mut self) -> Result<Delivery> {
        loop {
            self.shared.ensure_open()?;
            if let Some(ready) = self.ready.pop_front() {
                return Ok(ready);
            }
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
                        pause(&self.shared).await?;
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
                    pause(&self.shared).await?;
                }
                Some(Ok(message)) => self.deliver(message).await,
            }
        }
    }
}

/// Waits [`PULL_BACKOFF`] after a failed pull (or until the bus closes).
async fn pause(shared: &Shared) -> Result<()> {
    tokio::select! {
        () = shared.closed.cancelled() => Err(Error::Closed),
        () = tokio::time::sleep(PULL_BACKOFF) => Ok(()),
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
        offer(
            &self.shared,
            self.stream,
            self.reply_to.take(),
            reply,
            confirm,
        )
        .await
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

/// Offers `reply` to the publisher waiting at `to` (see [`crate::Delivery::offer_reply`]).
async fn offer(
    shared: &Shared,
    stream: StreamName,
    to: Option<String>,
    reply: Bytes,
    confirm: bool,
) -> bool {
    let Some(to) = to else {
        return false;
    };
    // Only into this bus's reply inboxes, whatever a publisher put in the header.
    let root = shared.names.reply_root();
    let inside = to
        .strip_prefix(root.as_str())
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|rest| rest.split('.').count() == 2 && !rest.contains(['*', '>', ' ']));
    if !inside {
        tracing::warn!(%stream, "reply subject outside the reply inbox; ignored");
        return false;
    }
    let client = &shared.client;
    if confirm {
        match tokio::time::timeout(reply::CONFIRM_TIMEOUT, client.request(to, reply)).await {
            Ok(Ok(answer)) => answer.payload.as_ref() == b"1",
            _ => false,
        }
    } else {
        client.publish(to, reply).await.is_ok()
    }
}

/// What a pack's members share: the stream message, settled when the last member is.
struct PackState {
    shared: Arc<Shared>,
    stream: StreamName,
    message: jetstream::Message,
    attempt: u32,
    progress: parking_lot::Mutex<Progress>,
}

/// Members not settled yet, and the longest nak delay asked for so far (`None`: no member
/// was nak'ed).
struct Progress {
    open: usize,
    nak: Option<Duration>,
}

/// How one member was settled, as far as its pack is concerned.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// Done with: acked, or dead-lettered on its own.
    Done,
    /// To be delivered again after at least this long.
    Again(Duration),
}

impl PackState {
    /// Records one member's verdict; the last one settles the stream message: acked when
    /// no member asked for another delivery, nak'ed with the longest delay asked for
    /// otherwise (every member comes back).
    ///
    /// Fails only for the last member, when the stream message could not be settled (it
    /// then comes back after ack_wait).
    async fn settle_one(&self, verdict: Verdict) -> Result<()> {
        let nak = {
            let mut p = self.progress.lock();
            if let Verdict::Again(delay) = verdict {
                p.nak = Some(p.nak.map_or(delay, |d| d.max(delay)));
            }
            p.open = p.open.saturating_sub(1);
            if p.open > 0 {
                return Ok(());
            }
            p.nak
        };
        let shared = &self.shared;
        shared.ensure_open()?;
        match nak {
            None => self
                .message
                .double_ack()
                .await
                .map_err(|e| shared.error("ack", e)),
            Some(delay) => {
                let delay = (!delay.is_zero()).then_some(delay);
                self.message
                    .ack_with(AckKind::Nak(delay))
                    .await
                    .map_err(|e| shared.error("nak", e))
            }
        }
    }

    /// The verdict for a member that is not done: dead-lettered on its own when this was
    /// its last allowed delivery (or `term` asked for it), else delivered again.
    async fn retry_or_dead_letter(
        &self,
        index: usize,
        member: &Member,
        delay: Duration,
        term: Option<&str>,
    ) -> Verdict {
        let last = self.attempt >= self.shared.max_deliveries();
        let reason = match term {
            Some(reason) => reason.to_owned(),
            None if last => format!("nak'ed on the last of {} deliveries", self.attempt),
            None => return Verdict::Again(delay),
        };
        match dead_letter_member(
            &self.shared,
            self.stream,
            &self.message,
            index,
            member,
            self.attempt,
            &reason,
        )
        .await
        {
            Ok(()) => Verdict::Done,
            // Not stored as a dead letter: the pack comes back and this is tried again.
            Err(_) => Verdict::Again(Duration::ZERO),
        }
    }
}

/// Settles one member of a pack.
struct PackAcker {
    state: Arc<PackState>,
    index: usize,
    member: Member,
}

#[async_trait::async_trait]
impl Acker for PackAcker {
    async fn settle(self: Box<Self>, settlement: Settlement) -> Result<()> {
        let PackAcker {
            state,
            index,
            member,
        } = *self;
        state.shared.ensure_open()?;
        let verdict = match settlement {
            Settlement::Ack => Verdict::Done,
            Settlement::Nak { delay } => {
                state
                    .retry_or_dead_letter(index, &member, delay, None)
                    .await
            }
            Settlement::Term { reason } => {
                state
                    .retry_or_dead_letter(index, &member, Duration::ZERO, Some(&reason))
                    .await
            }
        };
        state.settle_one(verdict).await
    }

    async fn offer_reply(&mut self, reply: Bytes, confirm: bool) -> bool {
        let to = self.member.reply_to.take();
        offer(&self.state.shared, self.state.stream, to, reply, confirm).await
    }

    fn dropped(self: Box<Self>) {
        if self.state.shared.closed.is_cancelled() {
            // JetStream redelivers the pack after ack_wait.
            return;
        }
        // Like a nak(0), which may dead-letter this member: that needs the runtime.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let PackAcker {
                    state,
                    index,
                    member,
                } = *self;
                let verdict = state
                    .retry_or_dead_letter(index, &member, Duration::ZERO, None)
                    .await;
                if let Err(e) = state.settle_one(verdict).await {
                    tracing::warn!(stream = %state.stream, error = %e, "settling a dropped pack member failed; the pack comes back after ack_wait");
                }
            });
        }
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
    let letter = Letter {
        subject: &subject,
        headers: headers::without_nats(message.headers.as_ref()),
        payload: message.payload.clone(),
        msg_id: &msg_id,
        id: format!("{}:{sequence}", stream.as_str()),
    };
    publish_dead_letter(shared, stream, letter, attempt, reason).await?;
    message
        .double_ack_with(AckKind::Term)
        .await
        .map_err(|e| shared.error("term", e))
}

/// Publishes member `index` of the pack `message` to the dead-letter stream on its own (its
/// subject, headers and payload, as if it had been published alone). The pack is settled
/// by its caller.
async fn dead_letter_member(
    shared: &Shared,
    stream: StreamName,
    message: &jetstream::Message,
    index: usize,
    member: &Member,
    attempt: u32,
    reason: &str,
) -> Result<()> {
    let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
    // Checked when the member was published; a damaged header is dropped, not the letter.
    let member_headers = headers::to_nats(&member.headers).unwrap_or_default();
    let letter = Letter {
        subject: &member.subject,
        headers: member_headers,
        payload: member.payload.clone(),
        msg_id: "",
        id: format!("{}:{sequence}:{index}", stream.as_str()),
    };
    publish_dead_letter(shared, stream, letter, attempt, reason).await
}

/// A dead letter to publish.
struct Letter<'a> {
    /// The subject it was published on (unprefixed).
    subject: &'a str,
    /// Its headers, without NATS's own.
    headers: async_nats::HeaderMap,
    payload: Bytes,
    /// The dedup id it was published with (empty: none).
    msg_id: &'a str,
    /// The dead letter's own dedup id: a retry after a crash does not store it twice.
    id: String,
}

/// Stores `letter` in the dead-letter stream with the reason headers, logged and counted.
async fn publish_dead_letter(
    shared: &Shared,
    stream: StreamName,
    letter: Letter<'_>,
    attempt: u32,
    reason: &str,
) -> Result<()> {
    let Letter {
        subject,
        headers: mut dlq_headers,
        payload,
        msg_id,
        id,
    } = letter;
    // Header values cannot hold line breaks.
    let clean_reason = reason.replace(['\r', '\n'], " ");
    dlq_headers.insert(REASON_HEADER, clean_reason.as_str());
    dlq_headers.insert(STREAM_HEADER, stream.as_str());
    dlq_headers.insert(SUBJECT_HEADER, subject);
    dlq_headers.insert(DELIVERIES_HEADER, attempt.to_string().as_str());
    if !msg_id.is_empty() {
        dlq_headers.insert(MSG_ID_HEADER, msg_id);
    }
    let publish = jetstream::message::PublishMessage::build()
        .payload(payload)
        .headers(dlq_headers)
        .message_id(id);
    let stored = async {
        shared
            .js
            .send_publish(shared.names.dead_letter_subject(subject), publish)
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
    Ok(())
}
