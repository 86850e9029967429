//! The router's work loop: accepted messages from the ingress stream, each routed by a task
//! of its own and acked only once its effect is durable.

use std::sync::Arc;
use std::time::Duration;

use amp_bus::{Bus, Delivery, StreamName, subjects};
use amp_messaging::events::{self, Hint};
use amp_proto::json::{self, Value as Json};
use amp_proto::relay::{Accepted, RouteOutcome};
use amp_proto::{Address, SecretKey};
use amp_runtime::Shutdown;
use amp_store::{Enqueued, Job, NewMailboxEntry, Store};
use bytes::Bytes;
use serde_json::value::RawValue;
use tracing::Instrument as _;

use crate::config::{Action, Config};
use crate::security::{
    Delivered, InjectionScanner, Origin, SecurityMeta, assess, assess_attachments, verdict, window,
};

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The injection pattern database is invalid or unreadable.
    #[error("injection patterns: {0}")]
    Patterns(String),
}

/// Consumers of the ingress stream per router process (at least one per partition): they
/// only take deliveries and hand them to tasks, so a few keep `workers` busy.
const PULLERS: usize = 4;
/// How long a stopping router waits for the messages it is routing.
const FINISH_ON_SHUTDOWN: Duration = Duration::from_secs(5);

/// The router service.
#[derive(Clone)]
pub struct RouterService {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    domain: String,
    store: Store,
    bus: Bus,
    /// The recipient records of the messages routed (kept briefly, dropped on change).
    registry: amp_messaging::RegistryCache,
    scanner: InjectionScanner,
    /// Signs bounces (`postmaster@system.<domain>`).
    provider_key: SecretKey,
    /// Counts the bytes written to each tenant's mailboxes (plans' `stored_bytes`).
    meter: std::sync::OnceLock<amp_messaging::usage::Meter>,
    /// Counts local senders' messages and injection flags (spec-next 07 risk scoring).
    risk: amp_messaging::risk::RiskMeter,
    /// The multi-message windows (spec-next 07), when `window_scan` is on.
    windows: Option<window::Windows>,
}

impl RouterService {
    /// Builds the service for the provider `domain` (whose key signs bounces), loading the
    /// injection pattern database.
    ///
    /// Fails when a configured pattern file cannot be read or compiled.
    pub fn new(
        config: Config,
        domain: &str,
        provider_key: SecretKey,
        store: Store,
        bus: Bus,
    ) -> Result<Self, StartError> {
        let scanner = match &config.injection_patterns_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| StartError::Patterns(format!("{}: {e}", path.display())))?;
                InjectionScanner::from_toml(&text)
                    .map_err(|e| StartError::Patterns(format!("{}: {e}", path.display())))?
            }
            None => InjectionScanner::builtin().map_err(|e| StartError::Patterns(e.to_string()))?,
        };
        let registry = amp_messaging::RegistryCache::new(
            store.clone(),
            Duration::from_millis(config.registry_cache_ms),
        );
        registry.follow(&bus);
        let risk = amp_messaging::risk::RiskMeter::new(
            config.risk.clone(),
            store.clone(),
            bus.clone(),
            registry.clone(),
        );
        let qc = &config.quarantine;
        let windows = qc.window_scan.then(|| {
            window::Windows::new(
                qc.window_messages,
                Duration::from_secs(qc.window_secs.max(1)),
            )
        });
        Ok(Self {
            inner: Arc::new(Inner {
                windows,
                risk,
                registry,
                config,
                domain: domain.to_ascii_lowercase(),
                store,
                bus,
                scanner,
                provider_key,
                meter: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Counts the bytes of every new mailbox entry in `meter` (the tenants' held bytes,
    /// which plans' `stored_bytes` limit); without it nothing is counted. Set once; later
    /// calls are ignored.
    pub fn meter_held(&self, meter: amp_messaging::usage::Meter) {
        let _ = self.inner.meter.set(meter);
    }

    /// Consumes the ingress stream until `shutdown`, routing up to `workers` messages at
    /// once: a few pullers (at least one per partition, round robin) take deliveries as
    /// slots free up and hand each to a task of its own, so the members of a pack (see
    /// `amp-bus`) are routed side by side, not one after the other. On shutdown, what is
    /// being routed is finished (for a few seconds at most; the rest comes back to another
    /// replica after the ack wait).
    pub async fn run(self, shutdown: Shutdown) {
        let shards = match self.inner.bus.shards(StreamName::Ingress).await {
            Ok(n) => n.max(1),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the ingress partitions; consuming them all in every puller");
                0
            }
        };
        let workers = self.inner.config.workers.max(1);
        let risk = tokio::spawn(self.inner.risk.clone().run(shutdown.clone()));
        let purge = tokio::spawn(self.clone().purge_quarantine(shutdown.clone()));
        let slots = Arc::new(tokio::sync::Semaphore::new(workers));
        let mut tasks = Vec::new();
        for i in 0..PULLERS.max(shards) {
            let this = self.clone();
            let shutdown = shutdown.clone();
            let slots = Arc::clone(&slots);
            let shard = (shards > 0).then_some(i);
            tasks.push(tokio::spawn(async move {
                this.consume(shard, shutdown, slots).await;
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let _ = risk.await;
        let _ = purge.await;
        let all = u32::try_from(workers).unwrap_or(u32::MAX);
        if tokio::time::timeout(FINISH_ON_SHUTDOWN, slots.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                "messages still being routed at shutdown; they come back after the ack wait"
            );
        }
    }

    async fn consume(
        &self,
        shard: Option<usize>,
        shutdown: Shutdown,
        slots: Arc<tokio::sync::Semaphore>,
    ) {
        let bus = &self.inner.bus;
        let name = &self.inner.config.consumer_name;
        let consumer = match shard {
            Some(k) => bus.consume_shard(StreamName::Ingress, name, k).await,
            None => bus.consume(StreamName::Ingress, name).await,
        };
        let mut consumer = match consumer {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "router cannot consume the ingress stream");
                return;
            }
        };
        loop {
            // A slot first: nothing is taken from the stream that cannot be routed now.
            let slot = tokio::select! {
                () = shutdown.wait() => return,
                slot = Arc::clone(&slots).acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => return,
                },
            };
            let delivery = tokio::select! {
                () = shutdown.wait() => return,
                d = consumer.next() => d,
            };
            match delivery {
                Ok(d) => {
                    let this = self.clone();
                    tokio::spawn(async move {
                        this.handle_delivery(d).await;
                        drop(slot);
                    });
                }
                Err(amp_bus::Error::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "ingress consumer error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn handle_delivery(&self, d: Delivery) {
        let accepted: Accepted = match serde_json::from_slice(&d.message().payload) {
            Ok(a) => a,
            Err(e) => {
                // Poison: it can never succeed. Dead-lettered, logged and counted by the bus.
                let _ = d.term(&format!("undecodable accepted message: {e}")).await;
                return;
            }
        };
        // A child of the message's trace, continued from the publisher's headers.
        let span = tracing::debug_span!(
            target: amp_runtime::telemetry::TRACE_TARGET,
            "amp.router.route",
            otel.kind = "consumer",
            message.id = %accepted.message.envelope.id,
            attempt = d.attempt(),
        );
        amp_runtime::telemetry::set_parent(&span, d.message().trace_context());
        match self.route(accepted).instrument(span).await {
            Ok(outcome) => {
                let reply = serde_json::to_vec(&outcome).unwrap_or_default();
                // A failure must reach the sender: in the answer to its route when the
                // publisher still waits for it, as a bounce otherwise (it was answered
                // `queued`). Decoded again for the bounce: rare, and the happy path keeps no
                // copy.
                let failed = matches!(
                    outcome,
                    RouteOutcome::MailboxFull
                        | RouteOutcome::RecipientGone
                        | RouteOutcome::Conflict
                        | RouteOutcome::Blocked
                );
                let mut d = d;
                let taken = d.offer_reply(Bytes::from(reply), failed).await;
                if failed
                    && !taken
                    && let Ok(original) = serde_json::from_slice::<Accepted>(&d.message().payload)
                    && let Err(e) = self.bounce(&original, &outcome).await
                {
                    tracing::warn!(error = %e, "bounce not stored, will retry");
                    let _ = d.nak(Duration::from_millis(500)).await;
                    return;
                }
                if let Err(e) = d.ack().await {
                    tracing::warn!(error = %e, "ack of a routed message failed");
                }
            }
            Err(e) => {
                // Nothing but this delivery holds the message (the in-process bus): its
                // publisher still waits, so it is told now (`503`, retry) rather than after
                // its route timeout, and nothing is left to retry behind its back.
                let mut d = d;
                if !d.durable() {
                    let reply = serde_json::to_vec(&RouteOutcome::Unavailable).unwrap_or_default();
                    if d.offer_reply(Bytes::from(reply), true).await {
                        tracing::warn!(error = %e, "routing failed; the sender is told to retry");
                        metrics::counter!("amp_router_refused_unavailable_total").increment(1);
                        if let Err(e) = d.ack().await {
                            tracing::warn!(error = %e, "ack of a refused message failed");
                        }
                        return;
                    }
                }
                // Transient (store unavailable): try again shortly; the bus dead-letters after
                // its bounded redeliveries.
                // Exponential, so a store failover of seconds (a NATS node restarting) is
                // outlasted before the bounded redeliveries run out.
                let attempt = d.attempt();
                tracing::warn!(error = %e, attempt, "routing failed, will retry");
                let delay = (200u64 << attempt.saturating_sub(1).min(5)).min(5_000);
                let _ = d.nak(Duration::from_millis(delay)).await;
            }
        }
    }

    /// Routes one accepted message: re-checks the recipient, classifies the content, writes
    /// the mailbox and emits the notify event.
    ///
    /// Fails only on store errors (the caller retries).
    pub async fn route(&self, accepted: Accepted) -> Result<RouteOutcome, amp_store::Error> {
        let inner = &self.inner;
        // Borrows only these fields: the message is moved out below.
        let sender = RiskSender {
            address: &accepted.sender_address,
            id: accepted.sender_id.as_deref(),
            via_peer: accepted.via_provider.is_some(),
        };
        if let Some(provider) = &accepted.remote_provider {
            return self.forward(provider, &accepted).await;
        }
        let Some(recipient) = inner
            .registry
            .agent(&accepted.recipient_id)
            .await?
            .filter(amp_store::AgentRecord::is_active)
        else {
            return Ok(RouteOutcome::RecipientGone);
        };
        let recipient_address = Address::parse_full(&recipient.address, &inner.domain)
            .map_err(|e| amp_store::Error::Corrupt(format!("recipient address: {e}")))?;
        let (security, flags) = security_of(inner, &accepted, &recipient_address).await?;
        let security = security.map_err(|e| amp_store::Error::Corrupt(e.to_string()))?;
        // What the findings do to it (spec-next 07): flag, quarantine, block; a sender's
        // repeated flags escalate its next message to quarantine.
        let qc = &inner.config.quarantine;
        let mut decision = verdict::decide(&inner.scanner, qc, &flags);
        let flagged = decision.action == Action::Flag;
        let mut reason = "injection_detected";
        if decision.action < Action::Quarantine
            && verdict::escalate(
                &inner.store,
                qc,
                &accepted.sender_address,
                amp_proto::Timestamp::now().unix_millis(),
                flagged,
            )
            .await?
        {
            decision.action = Action::Quarantine;
            reason = "repeated_flags";
        }
        if decision.action == Action::Block {
            self.count_risk(sender, amp_messaging::risk::Verdict::Blocked)
                .await;
            metrics::counter!("amp_router_messages_total", "outcome" => "blocked").increment(1);
            tracing::info!(tenant = %recipient.tenant, agent = %recipient.id, id = %accepted.message.envelope.id,
                rules = ?decision.rules, severity = decision.severity.as_str(), "message blocked by a security rule");
            return Ok(RouteOutcome::Blocked);
        }
        let mut message = accepted.message;
        message.security = Some(security);

        // Queued at acceptance, so ingest's answer and the mailbox agree on it, also for a
        // retry answered from the mailbox. Records from before `accepted_at` existed were
        // all local: their envelope's timestamp is ours. A peer's timestamp never is.
        let accepted_at = accepted.accepted_at.unwrap_or(message.envelope.timestamp);
        // Never longer than the relay lifetime after our acceptance, whatever the record says.
        let longest = accepted_at.plus_secs(amp_proto::message::limits::DEFAULT_TTL_SECS);
        let expires_at = message
            .envelope
            .expires_at
            .map_or(longest, |t| t.min(longest));
        let data = serde_json::to_string(&message)
            .map_err(|e| amp_store::Error::Corrupt(e.to_string()))?;
        let entry = NewMailboxEntry {
            agent_id: recipient.id.clone(),
            message_id: message.envelope.id.to_string(),
            sender: accepted.sender_address.clone(),
            signature: message.envelope.signature.clone(),
            data,
            queued_at: accepted_at.unix_millis(),
            expires_at: expires_at.unix_millis(),
            max_queued: accepted.max_queued,
        };
        if decision.action == Action::Quarantine {
            return self
                .hold(
                    sender,
                    &message.envelope.subject,
                    &recipient,
                    entry,
                    reason,
                    decision,
                )
                .await;
        }
        let held = (entry.data.len() as u64, entry.expires_at);
        let outcome = match inner.store.enqueue(entry).await? {
            Enqueued::New { seq } => {
                let verdict = if flagged {
                    amp_messaging::risk::Verdict::Flagged
                } else {
                    amp_messaging::risk::Verdict::Clean
                };
                self.count_risk(sender, verdict).await;
                if let Some(meter) = inner.meter.get() {
                    meter.held_added(&recipient.tenant, held.0, held.1);
                }
                if recipient.delivery.webhook_url.is_some() {
                    // Durable, so webhook attempts and their retries survive a restart; the
                    // delivery service re-reads the mailbox before every attempt.
                    let mut data = amp_proto::relay::WebhookJob {
                        agent_id: recipient.id.clone(),
                        message_id: message.envelope.id.to_string(),
                        ..Default::default()
                    };
                    // `traceparent` / `tracestate`: the attempts continue the message's trace.
                    for (name, value) in
                        amp_runtime::telemetry::trace_headers(&tracing::Span::current())
                    {
                        match name.as_str() {
                            amp_runtime::telemetry::TRACEPARENT => data.traceparent = Some(value),
                            amp_runtime::telemetry::TRACESTATE => data.tracestate = Some(value),
                            _ => {}
                        }
                    }
                    let job = Job {
                        id: webhook_job_id(&recipient.id, message.envelope.id.as_str()),
                        kind: amp_proto::relay::WebhookJob::KIND.into(),
                        due_at: accepted_at.unix_millis(),
                        attempt: 0,
                        data: serde_json::to_string(&data)
                            .map_err(|e| amp_store::Error::Corrupt(e.to_string()))?,
                    };
                    if let Err(e) = inner.store.schedule(job).await {
                        tracing::warn!(error = %e, "webhook job not scheduled; the message stays in the mailbox");
                    }
                }
                // A hint only: the mailbox is the truth, replay and polling still find it.
                let hint = Hint::Message {
                    id: message.envelope.id.to_string(),
                    seq,
                };
                events::hint(&inner.bus, &recipient.tenant, &recipient.id, &hint).await;
                metrics::counter!("amp_router_messages_total", "outcome" => "written").increment(1);
                // The bus hop: from our acceptance to the mailbox write (replicas' clocks may
                // differ a little: never below zero).
                let waited = amp_proto::Timestamp::now().unix_millis() - accepted_at.unix_millis();
                metrics::histogram!("amp_router_accept_to_mailbox_seconds")
                    .record(waited.max(0) as f64 / 1000.0);
                tracing::debug!(
                    tenant = %recipient.tenant, agent = %recipient.id, id = %message.envelope.id, seq,
                    "message written to mailbox"
                );
                RouteOutcome::MailboxWritten { seq }
            }
            Enqueued::Duplicate { seq } => {
                // A redelivery: the router that wrote it may have died before its hint went
                // out, and a socket would then only see the message on reconnect. Sessions
                // never push one message twice, so hinting again is harmless.
                let hint = Hint::Message {
                    id: message.envelope.id.to_string(),
                    seq,
                };
                events::hint(&inner.bus, &recipient.tenant, &recipient.id, &hint).await;
                RouteOutcome::Duplicate { seq }
            }
            Enqueued::Conflict => RouteOutcome::Conflict,
            Enqueued::Full => {
                metrics::counter!("amp_router_messages_total", "outcome" => "mailbox_full")
                    .increment(1);
                RouteOutcome::MailboxFull
            }
        };
        Ok(outcome)
    }
}

/// Whose message is being routed, as the risk score needs it.
#[derive(Clone, Copy)]
struct RiskSender<'a> {
    /// The sender's canonical address.
    address: &'a str,
    /// Its agent id, when the accepted record carries one.
    id: Option<&'a str>,
    /// A peer provider delivered the message (its senders are not ours to score).
    via_peer: bool,
}

impl RouterService {
    /// Holds a message for review instead of writing the mailbox (spec-next 07): one entry
    /// per (recipient, message id), so a redelivery holds nothing twice. The sender is told
    /// `quarantined`, never why; the recipient nothing until an operator approves it.
    async fn hold(
        &self,
        sender: RiskSender<'_>,
        subject: &str,
        recipient: &amp_store::AgentRecord,
        entry: NewMailboxEntry,
        reason: &str,
        decision: verdict::Decision,
    ) -> Result<RouteOutcome, amp_store::Error> {
        use amp_store::quarantine::{Quarantine as _, QuarantineEntry};
        let inner = &self.inner;
        let queued = entry.queued_at;
        let digest = amp_proto::signing::sha256_b64(
            format!("{}\n{}", recipient.id, entry.message_id).as_bytes(),
        );
        let tag: String = digest
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(16)
            .collect();
        let id = format!("qtn_{:010}_{tag}", queued.div_euclid(1000));
        let ttl = i64::try_from(inner.config.quarantine.ttl_hours.max(1))
            .unwrap_or(72)
            .saturating_mul(3_600_000);
        let held = QuarantineEntry {
            quarantine_id: id.clone(),
            from: sender.address.to_owned(),
            to: recipient.address.clone(),
            recipient_id: recipient.id.clone(),
            tenant: recipient.tenant.clone(),
            subject: subject.to_owned(),
            reason: reason.into(),
            rules_triggered: decision.rules,
            // A message escalated on its sender's history alone has no rule of its own:
            // 07's quarantine row.
            severity: if reason == "injection_detected" {
                decision.severity.as_str()
            } else {
                "high"
            }
            .into(),
            quarantined_at: queued,
            expires_at: queued.saturating_add(ttl),
            message_id: entry.message_id.clone(),
            data: entry.data,
            mailbox_expires_at: entry.expires_at,
            max_queued: entry.max_queued,
            signature: entry.signature,
        };
        if inner.store.put_quarantine(&held).await? {
            self.count_risk(sender, amp_messaging::risk::Verdict::Quarantined)
                .await;
            metrics::counter!("amp_router_messages_total", "outcome" => "quarantined").increment(1);
            tracing::info!(tenant = %recipient.tenant, agent = %recipient.id, id = %held.message_id, quarantine = %id, "message quarantined");
            if inner.config.quarantine.notify_recipient {
                self.notify_held(recipient, &held).await;
            }
        }
        Ok(RouteOutcome::Quarantined)
    }

    /// Tells `recipient` that a message for it is held for review (spec-next 07
    /// "Notifications"): a `system` message from `postmaster@system.<domain>` naming the
    /// sender and the message's id, never its subject or content. Written once, with the
    /// entry (a redelivery holds nothing again); a notice that cannot be written is logged,
    /// the message stays held.
    async fn notify_held(
        &self,
        recipient: &amp_store::AgentRecord,
        held: &amp_store::quarantine::QuarantineEntry,
    ) {
        let inner = &self.inner;
        let payload = serde_json::json!({
            "type": "system",
            "message": format!(
                "A message for you from {} is held for a security review. It is delivered \
                 if a reviewer releases it, and dropped otherwise.",
                held.from
            ),
            "context": {
                "held_message_id": held.message_id,
                "sender": held.from,
                "status": "quarantined",
            },
        });
        let notice = match amp_messaging::bounce::system_notice(
            &inner.domain,
            &inner.provider_key,
            recipient,
            "Message held for review",
            &payload,
            None,
            None,
        ) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "held-message notice not built");
                return;
            }
        };
        match Box::pin(self.route(notice)).await {
            Ok(outcome) => {
                tracing::debug!(agent = %recipient.id, id = %held.message_id, outcome = ?outcome, "recipient told of a held message")
            }
            Err(e) => {
                tracing::warn!(agent = %recipient.id, id = %held.message_id, error = %e, "recipient not told of a held message")
            }
        }
    }

    /// Deletes quarantine entries `keep_expired_hours` past their expiry, every
    /// `purge_interval_secs`, until `shutdown` (every replica does; deleting twice is
    /// harmless). An entry that expired unreviewed is logged as it goes (07: the expiration
    /// SHOULD be logged for audit; the message was never delivered).
    async fn purge_quarantine(self, shutdown: Shutdown) {
        let qc = &self.inner.config.quarantine;
        let keep =
            amp_store::revocation::secs_to_millis(qc.keep_expired_hours.saturating_mul(3600));
        let mut tick = tokio::time::interval(Duration::from_secs(qc.purge_interval_secs.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; start-up does not wait on a sweep.
        tick.tick().await;
        loop {
            tokio::select! {
                () = shutdown.wait() => return,
                _ = tick.tick() => {}
            }
            let cutoff = amp_proto::Timestamp::now()
                .unix_millis()
                .saturating_sub(keep);
            use amp_store::quarantine::Quarantine as _;
            match self
                .inner
                .store
                .purge_quarantine(cutoff, QUARANTINE_PURGE_SCAN)
                .await
            {
                Ok(gone) => {
                    for (e, decision) in gone {
                        match decision {
                            None => {
                                tracing::info!(quarantine = %e.quarantine_id, tenant = %e.tenant,
                                agent = %e.recipient_id, id = %e.message_id,
                                "quarantined message expired unreviewed and was not delivered; entry deleted")
                            }
                            Some(d) => {
                                tracing::debug!(quarantine = %e.quarantine_id, status = %d.status,
                                "reviewed quarantine entry deleted")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "purging expired quarantine entries failed"),
            }
        }
    }

    /// Counts a message newly written for the risk score of its sender, when the sender is
    /// one of this provider's agents (a peer's senders are the peer's to score). The id
    /// comes from the accepted record; only a record without it (written before it existed)
    /// costs a registry read.
    async fn count_risk(&self, sender: RiskSender<'_>, verdict: amp_messaging::risk::Verdict) {
        let inner = &self.inner;
        if sender.via_peer || !inner.risk.enabled() {
            return;
        }
        let Ok(from) = Address::parse_full(sender.address, &inner.domain) else {
            return;
        };
        let now = amp_proto::Timestamp::now().unix_millis();
        match sender.id {
            Some(id) => inner.risk.record(id, from.tenant(), now, verdict),
            None => {
                if let Ok(Some(agent)) = inner
                    .registry
                    .agent_by_name(from.tenant(), from.name())
                    .await
                {
                    inner.risk.record(&agent.id, &agent.tenant, now, verdict);
                }
            }
        }
    }

    /// Tells the local sender of `original` that it cannot arrive (`outcome`), with a
    /// `system` message in the sender's mailbox. A bounce is never bounced, and a sender on
    /// another provider cannot be reached from here (logged).
    ///
    /// Fails on store errors (the caller retries).
    async fn bounce(
        &self,
        original: &Accepted,
        outcome: &RouteOutcome,
    ) -> Result<(), amp_store::Error> {
        let inner = &self.inner;
        let (code, why) = match outcome {
            RouteOutcome::MailboxFull => (
                "mailbox_full",
                "the recipient's mailbox was full; the message was not delivered",
            ),
            RouteOutcome::RecipientGone => (
                "recipient_not_found",
                "the recipient no longer exists on this provider; the message was not delivered",
            ),
            // Which rule matched is never said (07).
            RouteOutcome::Blocked => (
                "forbidden",
                "the message was refused by the provider's content security policy; it was not delivered",
            ),
            RouteOutcome::Conflict => (
                "duplicate_message",
                "a different message with this id had already been sent to the recipient; this one was not delivered",
            ),
            _ => return Ok(()),
        };
        let id = &original.message.envelope.id;
        metrics::counter!("amp_router_bounces_total", "reason" => code).increment(1);
        let Some((sender, notice)) = amp_messaging::bounce::to_sender(
            &inner.store,
            &inner.domain,
            &inner.provider_key,
            original,
            code,
            why,
        )
        .await?
        else {
            tracing::warn!(sender = %original.sender_address, id = %id, error = code,
                "message not delivered; its sender is not a local agent (or is gone), nobody to bounce to");
            return Ok(());
        };
        let written = Box::pin(self.route(notice)).await?;
        tracing::info!(sender = %sender.address, id = %id, recipient = %original.recipient_address,
            error = code, outcome = ?written, "message not delivered, bounced to its sender");
        Ok(())
    }

    /// Hands a message for another provider to the federation stream (durable there before
    /// the ingress message is acked).
    async fn forward(
        &self,
        provider: &str,
        accepted: &Accepted,
    ) -> Result<RouteOutcome, amp_store::Error> {
        let payload =
            serde_json::to_vec(accepted).map_err(|e| amp_store::Error::Corrupt(e.to_string()))?;
        let msg =
            amp_bus::BusMessage::new(subjects::federation_subject(provider), Bytes::from(payload))
                .with_trace_context(amp_runtime::telemetry::trace_headers(
                    &tracing::Span::current(),
                ));
        let dedup = format!(
            "{}:{}:{}",
            accepted.sender_address, accepted.message.envelope.id, accepted.recipient_address
        );
        self.inner
            .bus
            .publish(StreamName::Federation, &dedup, msg)
            .await
            .map_err(|e| amp_store::Error::Unavailable(format!("federation stream: {e}")))?;
        metrics::counter!("amp_router_messages_total", "outcome" => "forwarded").increment(1);
        Ok(RouteOutcome::Forwarded)
    }
}

/// Most quarantine entries one purge sweep looks at.
const QUARANTINE_PURGE_SCAN: usize = 10_000;

/// The id of the webhook job for one message (one job per recipient and message).
pub fn webhook_job_id(agent_id: &str, message_id: &str) -> String {
    format!("webhook/{agent_id}/{message_id}")
}

/// The `local.security` annotation (spec 07, SPEC-CHECKLIST §4.5) as raw JSON. Every
/// delivered message has one: what cannot be classified (a sender address that does not
/// parse) is `untrusted`, never left without a decision.
///
/// Also gives the message's injection flags (the sender's risk score, the quarantine).
///
/// Fails when the store is unavailable (its attachments' scan results are read from it), or
/// (the inner result) if the annotation cannot be serialised: then the message is not
/// written without one.
async fn security_of(
    inner: &Inner,
    accepted: &Accepted,
    recipient: &Address,
) -> amp_store::Result<(serde_json::Result<Box<RawValue>>, Vec<String>)> {
    let message = &accepted.message;
    let sender = Address::parse_full(&accepted.sender_address, &inner.domain).ok();
    let origin = if accepted.via_provider.is_some() {
        Origin::Peer
    } else {
        Origin::Local
    };
    let (text, context) = payload_texts(message.payload.get());
    let verified_at = accepted.verified_at.map(|t| t.to_rfc3339());
    let meta = assess(
        &inner.scanner,
        &Delivered {
            sender: sender.as_ref(),
            recipient,
            origin,
            signature_valid: accepted.signature_valid,
            verified_at: verified_at.as_deref(),
            subject: &message.envelope.subject,
            message: &text,
            context: context.as_deref(),
        },
    );
    let mut meta = SecurityMeta {
        attachments: assess_attachments(
            &inner.store,
            message.payload.get(),
            &accepted.sender_address,
            origin,
        )
        .await?,
        ..meta
    };
    // The sender's recent messages to this recipient, scanned together (07): what only
    // the window shows is added, marked `window_scan`.
    if let Some(windows) = &inner.windows {
        let extra = windows.scan(
            &inner.scanner,
            &accepted.sender_address,
            recipient.as_str(),
            &text,
            std::time::Instant::now(),
            &meta.injection_flags,
        );
        if !extra.is_empty() {
            tracing::info!(recipient = %recipient, categories = ?extra, "injection found by the multi-message window scan");
            meta.injection_flags.extend(extra);
            meta.injection_flags.push(window::WINDOW_SCAN.to_owned());
        }
    }
    // An `ignore` action: not a finding at all (07), so not in the delivered metadata.
    meta.injection_flags
        .retain(|f| !verdict::ignored(&inner.config.quarantine, f));
    let raw = serde_json::value::to_raw_value(&meta);
    Ok((raw, meta.injection_flags))
}

/// Longest context text scanned for injection patterns.
const MAX_SCANNED_CONTEXT: usize = 256 * 1024;

/// `payload.message`, and the string values of `payload.context` joined by newlines.
fn payload_texts(raw: &str) -> (String, Option<String>) {
    let Ok(Json::Object(members)) = json::parse(raw) else {
        return (String::new(), None);
    };
    let mut message = String::new();
    let mut context = None;
    for (k, v) in &members {
        match (k.as_ref(), v) {
            ("message", Json::String(s)) => message = s.to_string(),
            ("context", v) => {
                let mut out = String::new();
                collect_strings(v, &mut out);
                if !out.is_empty() {
                    context = Some(out);
                }
            }
            _ => {}
        }
    }
    (message, context)
}

fn collect_strings(v: &Json<'_>, out: &mut String) {
    if out.len() >= MAX_SCANNED_CONTEXT {
        return;
    }
    match v {
        Json::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Json::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Json::Object(members) => members.iter().for_each(|(_, i)| collect_strings(i, out)),
        _ => {}
    }
}
