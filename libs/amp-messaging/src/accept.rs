//! Accepting a message from an authenticated local agent: the one implementation behind
//! `POST /v1/route` (ingest) and the WebSocket `route` frame (delivery).
//!
//! The flat body of the spec and the `{envelope, payload}` body of real clients are both
//! accepted; the sender's signature is verified against its registered key over the payload
//! as received; the message is handed to the router over the bus and the answer is given only
//! once the router's durable outcome is known (or the broker persisted it).

use std::time::Duration;

use amp_proto::relay::{Accepted, RouteOutcome, StoredMessage};
use amp_proto::signing::{SignedFields, VerifyError, verify_message};
use amp_proto::{
    Address, AddressContext, ApiError, Envelope, ErrorCode, MessageId, Priority, RawPayload,
    Timestamp,
};
use amp_store::{AgentRecord, EntryState};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::idempotency::{self, Key, Kind};
use crate::{Acceptor, store_err};

/// Both body forms: flat fields, or `envelope` + `payload`. Unknown members (`_forwarded`,
/// …) are ignored (spec 06a).
#[derive(Deserialize, Default, utoipa::ToSchema)]
pub struct RouteRequest {
    envelope: Option<EnvelopeBody>,
    #[schema(value_type = Option<Object>)]
    payload: Option<Box<RawValue>>,
    to: Option<String>,
    from: Option<String>,
    subject: Option<String>,
    priority: Option<String>,
    #[serde(default)]
    in_reply_to: Option<String>,
    #[serde(default)]
    thread_id: Option<String>,
    id: Option<String>,
    expires_at: Option<String>,
    signature: Option<String>,
    options: Option<RouteOptions>,
    /// The spec's first place for it (08); the envelope's wins when both are given (04).
    idempotency_key: Option<String>,
    /// The client's clock; ours replaces it, but one far ahead is refused (spec-next 07).
    /// Any JSON (a value that is not RFC 3339 text is ignored, as before).
    timestamp: Option<Value>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[schema(as = RouteEnvelope)]
struct EnvelopeBody {
    id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    subject: Option<String>,
    priority: Option<String>,
    #[serde(default)]
    in_reply_to: Option<String>,
    #[serde(default)]
    thread_id: Option<String>,
    expires_at: Option<String>,
    signature: Option<String>,
    idempotency_key: Option<String>,
    timestamp: Option<Value>,
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
struct RouteOptions {
    receipt: Option<bool>,
}

/// The answer to a route: spec 05's body, and whether the router's outcome is in it.
#[derive(Debug, Clone)]
pub struct RouteAnswer {
    /// `id`, `status`, `method`, `basis`, `thread_id`, `queued_at`, `expires_at`, …
    pub body: Value,
    /// `false` when a local recipient's outcome did not come within `outcome_wait_ms` (a
    /// broker-backed bus under load): the message is durable, `basis` is `queued`, and REST
    /// answers `202 Accepted` instead of `200`.
    pub outcome_known: bool,
}

/// The validated, verified message, before the hand-off.
pub(crate) async fn accept(
    acc: &Acceptor,
    sender: &AgentRecord,
    body: RouteRequest,
) -> Result<RouteAnswer, ApiError> {
    let env = body.envelope.unwrap_or_default();
    let pick = |a: Option<String>, b: Option<String>| a.or(b);
    let to_text = pick(env.to, body.to).ok_or_else(|| ApiError::missing("to"))?;
    let subject = pick(env.subject, body.subject).ok_or_else(|| ApiError::missing("subject"))?;
    let priority_text = pick(env.priority, body.priority);
    let from_text = pick(env.from, body.from);
    let in_reply_to = pick(env.in_reply_to, body.in_reply_to).filter(|s| !s.is_empty());
    let thread_id = pick(env.thread_id, body.thread_id).filter(|s| !s.is_empty());
    let client_id = pick(env.id, body.id);
    let expires_text = pick(env.expires_at, body.expires_at);
    let signature = pick(env.signature, body.signature).filter(|s| !s.is_empty());
    let want_receipt = body.options.and_then(|o| o.receipt).unwrap_or(false);
    let explicit_key = pick(env.idempotency_key, body.idempotency_key);
    crate::revocation::refuse_future_client_timestamp(
        env.timestamp
            .or(body.timestamp)
            .as_ref()
            .and_then(Value::as_str),
        Timestamp::now(),
    )?;

    let payload_raw = body.payload.ok_or_else(|| ApiError::missing("payload"))?;

    // Idempotency (spec-next 04, 08): a key names one message of this sender; a request
    // with a known key is answered from its record, before anything else is checked or
    // taken (quota, attachments), and never routed again.
    if let Some(k) = &explicit_key {
        amp_proto::message::validate_idempotency_key(k)?;
    }
    let client_id_ok = client_id.as_deref().filter(|c| MessageId::is_valid(c));
    let keep_client_id = acc.config.keep_client_ids && client_id_ok.is_some();
    let idem = match (&explicit_key, client_id_ok) {
        (Some(k), _) => Some(Key::new(Kind::Explicit, &sender.id, k)),
        // A client's id that is replaced still names the message. A kept one is the
        // message's id, and the mailbox's duplicate rule is its idempotency (as before).
        (None, Some(c)) if !keep_client_id => Some(Key::new(Kind::ClientId, &sender.id, c)),
        _ => None,
    };
    // "The same request": the fields the sender chose, the payload by its canonical hash (a
    // retry that re-serialised it is still the same), computed only for keyed requests.
    let fp = match &idem {
        Some(_) => idempotency::fingerprint(&[
            to_text.trim(),
            &subject,
            priority_text.as_deref().unwrap_or("normal"),
            in_reply_to.as_deref().unwrap_or(""),
            thread_id.as_deref().unwrap_or(""),
            expires_text.as_deref().unwrap_or(""),
            if want_receipt { "receipt" } else { "" },
            signature.as_deref().unwrap_or(""),
            &amp_proto::signing::payload_hash(payload_raw.get())
                .map_err(|_| ApiError::invalid("payload", "payload is not valid JSON"))?,
        ]),
        None => String::new(),
    };
    if let Some(k) = &idem
        && let Some(record) = idempotency::lookup(&acc.store, k)
            .await
            .map_err(store_err)?
    {
        let first = idempotency::replay(k, record, &fp)?;
        tracing::debug!(tenant = %sender.tenant, agent = %sender.id, "idempotent retry answered from its record");
        return Ok(RouteAnswer {
            outcome_known: first.status == 200,
            body: first.body,
        });
    }
    let payload = RawPayload::from_json(payload_raw.get().to_owned())
        .map_err(|_| ApiError::invalid("payload", "payload is not valid JSON"))?;
    payload.validate()?;
    let attachments = crate::attachments::route::parse(acc, &payload)?;
    amp_proto::message::validate_subject(&subject)?;
    let priority = match priority_text.as_deref() {
        None => Priority::Normal,
        Some(p) => Priority::parse(p).ok_or_else(|| {
            ApiError::invalid(
                "priority",
                "priority must be one of urgent, high, normal, low",
            )
        })?,
    };
    for (field, v) in [("in_reply_to", &in_reply_to), ("thread_id", &thread_id)] {
        if let Some(v) = v {
            amp_proto::message::validate_reference(field, v)?;
        }
    }

    // A suspended tenant's agents send nothing (spec-next 07 `agent_suspended`); the others
    // within their plan (`quota`).
    let plan = crate::quota::caller(acc, &sender.tenant).await?;

    // Sender: `from`, when given, must be the authenticated agent (spec 04, 07).
    if let Some(f) = &from_text
        && !f.trim().eq_ignore_ascii_case(&sender.address)
    {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "from does not match the authenticated agent's address",
        )
        .with_field("from"));
    }

    // Recipient.
    if to_text.chars().count() > amp_proto::address::MAX_ADDRESS_LEN {
        return Err(ApiError::invalid(
            "to",
            "recipient address is longer than 254 characters",
        ));
    }
    let ctx = AddressContext {
        local_domain: &acc.domain,
        default_tenant: Some(&sender.tenant),
    };
    let to = Address::parse(&to_text, ctx)
        .map_err(|e| ApiError::invalid("to", format!("invalid recipient address: {e}")))?;
    crate::policy::check_recipient(sender, &to)?;
    if to.provider() != acc.domain {
        if to.is_local_network() {
            return Err(ApiError::invalid(
                "to",
                "local-network addresses (*.local, *.internal, *.localhost) are not routable from this provider",
            ));
        }
        if !acc.federation {
            return Err(ApiError::new(
                ErrorCode::NotImplemented,
                format!(
                    "federation to other providers ({}) is not enabled on this provider; the message was not accepted",
                    to.provider()
                ),
            )
            .with_field("to"));
        }
        crate::quota::check_federation(&plan, &sender.tenant)?;
    }
    let recipient = if to.provider() == acc.domain {
        Some(
            acc.cache
                .agent_by_name(to.tenant(), to.name())
                .await
                .map_err(store_err)?
                .filter(|a| a.address == to.as_str() || !to.is_scoped())
                .ok_or_else(|| {
                    ApiError::not_found("recipient not found on this provider").with_field("to")
                })?,
        )
    } else {
        // On another provider: handed to federation; a signature is required (spec 04).
        None
    };

    // Nor does anyone reach them (`recipient_suspended`); their mailbox is left as it is.
    if let Some(r) = &recipient
        && r.tenant != sender.tenant
    {
        acc.tenants.check_recipient(&r.tenant).await?;
    }
    // Nor a suspended agent, nor anyone a suspended agent (spec-next 07).
    crate::suspension::check_route(acc, sender, recipient.as_ref()).await?;

    // Expiry.
    let now = Timestamp::now();
    let expires_at = match expires_text.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(Timestamp::parse(s).ok_or_else(|| {
            ApiError::invalid("expires_at", "expires_at must be an RFC 3339 timestamp")
        })?),
    };
    let expires_at = amp_proto::message::effective_expiry(now, expires_at)?;

    // Signature, over the fields as the sender sent them and the payload as received.
    let sender_key = crate::auth::agent_key(sender)?;
    let from_signed = from_text
        .as_deref()
        .map_or(sender.address.as_str(), str::trim);
    let (signature, verified) = match signature {
        Some(sig) => {
            let fields = SignedFields {
                from: from_signed,
                to: &to_text,
                subject: &subject,
                priority: priority_text.as_deref().unwrap_or("normal"),
                in_reply_to: in_reply_to.as_deref().unwrap_or(""),
            };
            // The fingerprint of the key that verified, when it is not the cached record's.
            let mut fresh_fingerprint = None;
            let checked = match verify_message(&sender_key, &fields, payload.get(), &sig) {
                Err(VerifyError::Invalid) => {
                    // The sender's record may be a cached copy from before a key rotation
                    // made on another replica whose event has not arrived yet: a new key
                    // works everywhere as soon as its rotation is answered.
                    match acc.store.agent(&sender.id).await.map_err(store_err)? {
                        Some(fresh) if fresh.public_key_hex != sender.public_key_hex => {
                            acc.cache.forget(&sender.id);
                            let key = crate::auth::agent_key(&fresh)?;
                            fresh_fingerprint = Some(fresh.fingerprint);
                            verify_message(&key, &fields, payload.get(), &sig)
                        }
                        _ => Err(VerifyError::Invalid),
                    }
                }
                other => other,
            };
            match checked {
                Ok(v) => {
                    // A current key an operator revoked (spec-next 07) signs nothing either.
                    crate::revocation::refuse_revoked_current(
                        &acc.cache,
                        &sender.id,
                        fresh_fingerprint.as_deref().unwrap_or(&sender.fingerprint),
                    )
                    .await?;
                    metrics::counter!("amp_signatures_verified_total", "form" => v.hash_form.as_str())
                        .increment(1);
                    (sig, true)
                }
                Err(e) => {
                    metrics::counter!("amp_signatures_rejected_total").increment(1);
                    if matches!(e, VerifyError::Invalid) {
                        crate::revocation::refuse_revoked_signer(
                            &acc.store,
                            sender,
                            &fields,
                            payload.get(),
                            &sig,
                        )
                        .await?;
                    }
                    let msg = match e {
                        VerifyError::Malformed => "signature is not base64 of 64 bytes",
                        VerifyError::Invalid => {
                            "signature does not verify against the sender's registered key"
                        }
                        VerifyError::PayloadNotJson => "payload is not valid JSON",
                    };
                    return Err(
                        ApiError::new(ErrorCode::SignatureInvalid, msg).with_field("signature")
                    );
                }
            }
        }
        None if acc.config.allow_unsigned_local && recipient.is_some() => (String::new(), false),
        None => {
            return Err(ApiError::new(
                ErrorCode::SignatureMissing,
                "messages must be signed by the sender (spec 04)",
            )
            .with_field("signature"));
        }
    };

    // Id: a well-formed client id when they are kept (`keep_client_ids`), else ours (spec-next
    // 04; ids are not signed either way). Ours is derived from sender and key when there is
    // one, so a retry on any replica lands on the same mailbox key (one copy, and no read for
    // it), else fresh (64 random bits).
    let ours = || {
        idem.as_ref()
            .map_or_else(|| MessageId::generate(now), Key::message_id)
    };
    let mut id = match client_id_ok.filter(|_| keep_client_id) {
        Some(c) => MessageId::from_trusted(c.to_owned()),
        None => ours(),
    };
    // A kept client id may be another sender's in this mailbox: that sender's message keeps
    // it, this one gets ours.
    if keep_client_id && let Some(r) = &recipient {
        // Expired entries count too (`Millis::MIN`): their ids stay taken until purged.
        let existing = acc
            .store
            .entry(&r.id, id.as_str(), amp_store::Millis::MIN)
            .await
            .map_err(store_err)?;
        let owner = match existing {
            Some(EntryState::Queued(e)) => Some(e.sender),
            Some(EntryState::Acked { sender }) => Some(sender),
            None => None,
        };
        if owner.is_some_and(|o| o != sender.address) {
            id = ours();
        }
    }
    let thread_id = match (thread_id, &in_reply_to) {
        // An older client names its first message's thread by the id it chose: ours now.
        (Some(t), _) if client_id.as_deref() == Some(t.as_str()) => id.to_string(),
        (Some(t), _) => t,
        (None, Some(parent)) => parent_thread(acc, sender, parent)
            .await
            .unwrap_or_else(|| id.to_string()),
        (None, None) => id.to_string(),
    };

    tracing::Span::current().record("message.id", id.as_str());
    let envelope = Envelope {
        version: amp_proto::message::PROTOCOL_VERSION.to_owned(),
        id: id.clone(),
        from: sender.address.clone(),
        to: to_text.trim().to_owned(),
        subject,
        priority,
        timestamp: now,
        expires_at: Some(expires_at),
        signature,
        in_reply_to,
        thread_id,
        idempotency_key: explicit_key,
    };
    // Every field is within its limit by now; the whole may still not be (a short `message`
    // beside a large member of its own). The same check as federation's inbound path.
    amp_proto::message::validate_total(&envelope, &payload)?;
    let bytes = amp_proto::message::message_bytes(&envelope, &payload);
    crate::quota::check_size(&plan, bytes)?;
    if let Some(r) = &recipient {
        crate::quota::check_stored(acc, &sender.tenant, &plan, &r.tenant, bytes).await?;
    }
    acc.quotas.take_message(&sender.tenant, &plan)?;
    // Attachments are checked and bound to this message last, once nothing else can refuse
    // it here (spec 05: before delivery).
    let warnings = crate::attachments::route::claim(
        acc,
        sender,
        &attachments,
        &envelope,
        &payload,
        recipient
            .as_ref()
            .map_or(to.as_str(), |r| r.address.as_str()),
    )
    .await?;
    let accepted = Accepted {
        v: 1,
        message: StoredMessage {
            envelope,
            payload,
            sender_public_key: Some(sender_key.to_pem()),
            security: None,
            receipt: want_receipt,
        },
        recipient_id: recipient.as_ref().map(|r| r.id.clone()).unwrap_or_default(),
        recipient_address: recipient
            .as_ref()
            .map_or_else(|| to.to_string(), |r| r.address.clone()),
        sender_address: sender.address.clone(),
        sender_id: Some(sender.id.clone()),
        signature_valid: verified,
        verified_at: verified.then_some(now),
        max_queued: recipient.as_ref().map(|_| acc.config.mailbox_quota),
        remote_provider: recipient.is_none().then(|| to.provider().to_owned()),
        via_provider: None,
        accepted_at: Some(now),
    };
    let subject_tenant = recipient
        .as_ref()
        .map_or(sender.tenant.as_str(), |r| r.tenant.as_str());
    // A push can only be reported if we listen for it before the message can be pushed.
    let mut watch = match &recipient {
        Some(r) => watch_pushes(acc, r, now).await,
        None => None,
    };
    let waits = crate::handoff::Waits {
        route_timeout: Duration::from_millis(acc.config.route_timeout_ms),
        outcome_wait: Duration::from_millis(acc.config.outcome_wait_ms),
    };
    let handed = crate::handoff::hand_off(&acc.bus, subject_tenant, &accepted, waits).await?;
    // A retry the broker recognised gets no outcome of its own: the mailbox says what became
    // of the first publish (`None`: still on its way).
    let (outcome, prior) = crate::handoff::settle_retry(&acc.store, &accepted, handed).await?;
    // The key's message is another one (two attempts raced past the record, or the record
    // was lost): the mailbox kept the first. (A kept client id's conflict is the id's:
    // `duplicate_message`, below.)
    if let (Some(RouteOutcome::Conflict), Some(k)) = (outcome, &idem)
        && !keep_client_id
    {
        return Err(k.conflict());
    }
    // A racing attempt the broker recognised before the router wrote the first: the first
    // attempt's answer is moments away; give that one rather than a weaker `queued`.
    if let Some(k) = &idem
        && handed.retried
        && outcome.is_none()
        && prior.is_none()
        && let Some(first) = wait_for_record(acc, k, &fp).await?
    {
        return Ok(RouteAnswer {
            outcome_known: first.status == 200,
            body: first.body,
        });
    }
    if let Some(e) = outcome.and_then(crate::handoff::refusal) {
        return Err(e);
    }
    if prior.is_none() && !matches!(outcome, Some(RouteOutcome::Duplicate { .. })) {
        crate::usage::count_accepted(&acc.meter, sender, recipient.as_ref(), bytes);
    }
    // What was proven: the router's mailbox commit, or (past the outcome wait on a broker,
    // or a message for another provider) only the broker's durable acceptance.
    let basis = match outcome {
        Some(RouteOutcome::MailboxWritten { .. } | RouteOutcome::Duplicate { .. }) => {
            "mailbox_written"
        }
        _ => "queued",
    };
    // A retry gets the first answer again: the times of the copy already in the mailbox.
    let (mut queued_at, mut expires) = (now.unix_millis(), expires_at.unix_millis());
    let mut thread = accepted.message.envelope.thread_id.clone();
    if let Some(EntryState::Queued(e)) = &prior {
        queued_at = e.queued_at;
        expires = e.expires_at;
        if let Ok(m) = serde_json::from_str::<StoredMessage>(&e.data) {
            thread = m.envelope.thread_id;
        }
    }
    let ts = |ms: i64| Timestamp::from_unix_millis(ms).map(Timestamp::to_rfc3339);
    let pushed = match (&mut watch, outcome) {
        (Some((sub, wait)), Some(RouteOutcome::MailboxWritten { .. })) => {
            wait_for_push(sub.as_mut(), *wait, id.as_str()).await
        }
        _ => None,
    };
    let mut answer = json!({
        "id": id,
        "status": "queued",
        "method": "relay",
        "basis": basis,
        "thread_id": thread,
        "queued_at": ts(queued_at),
        "expires_at": ts(expires),
    });
    if let Some(p) = pushed {
        answer["status"] = json!("delivered");
        answer["method"] = json!(p.method);
        answer["basis"] = json!(p.basis);
        answer["delivered_at"] = json!(p.at);
    }
    // Held for review (spec-next 07): `202 quarantined`, nothing more said.
    let held = crate::quarantine::answer(&mut answer, outcome);
    if !warnings.is_empty() {
        answer["warnings"] = json!(warnings);
    }
    if want_receipt {
        // Pushed on the sender's sockets, and retained until fetched or pushed
        // (GET /v1/messages/receipts, or the next WebSocket `connected`).
        let online = acc
            .store
            .presence_count(&sender.id, now.unix_millis())
            .await
            .unwrap_or(0);
        answer["receipt"] = json!(if online > 0 { "websocket" } else { "retained" });
    }
    tracing::debug!(tenant = %sender.tenant, agent = %sender.id, id = %id, "message accepted");
    let outcome_known = (recipient.is_none() || outcome.is_some()) && !held;
    if let Some(k) = &idem {
        let record = idempotency::Record {
            fp,
            status: if outcome_known { 200 } else { 202 },
            body: answer.clone(),
        };
        idempotency::remember(&acc.store, k, &record, now.unix_millis()).await;
    }
    Ok(RouteAnswer {
        body: answer,
        outcome_known,
    })
}

/// The record of `key` once the attempt that holds it writes it, within the outcome wait.
async fn wait_for_record(
    acc: &Acceptor,
    key: &Key,
    fp: &str,
) -> Result<Option<idempotency::Record>, ApiError> {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(acc.config.outcome_wait_ms);
    loop {
        if let Some(record) = idempotency::lookup(&acc.store, key)
            .await
            .map_err(store_err)?
        {
            return idempotency::replay(key, record, fp).map(Some);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Subscribes to push confirmations for `recipient` when one can happen: it has a live
/// WebSocket session or a webhook. Returns the subscription and how long to wait.
async fn watch_pushes(
    acc: &Acceptor,
    recipient: &AgentRecord,
    now: Timestamp,
) -> Option<(Box<dyn amp_bus::Subscription>, Duration)> {
    let online = acc
        .cache
        .presence_count(&recipient.id, now.unix_millis())
        .await
        .unwrap_or(0)
        > 0;
    let webhook = recipient.delivery.webhook_url.is_some();
    let wait = match (online, webhook) {
        (false, false) => return None,
        (true, false) => acc.config.push_wait_ms,
        (true, true) if recipient.delivery.prefer_websocket => acc.config.push_wait_ms,
        _ => acc.config.webhook_wait_ms,
    };
    let subject = crate::events::delivered_subject(&recipient.tenant, &recipient.id);
    let sub = acc.bus.subscribe(&subject).await.ok()?;
    Some((sub, Duration::from_millis(wait)))
}

/// Waits up to `wait` for the confirmation that message `id` was pushed.
async fn wait_for_push(
    sub: &mut dyn amp_bus::Subscription,
    wait: Duration,
    id: &str,
) -> Option<crate::events::Pushed> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let msg = tokio::time::timeout_at(deadline, sub.next()).await.ok()??;
        if let Ok(p) = serde_json::from_slice::<crate::events::Pushed>(&msg.payload)
            && p.id == id
        {
            return Some(p);
        }
    }
}

/// The thread of the message `parent`, when the sender received it and it is still queued.
async fn parent_thread(acc: &Acceptor, sender: &AgentRecord, parent: &str) -> Option<String> {
    let now = amp_proto::Timestamp::now().unix_millis();
    match acc.store.entry(&sender.id, parent, now).await.ok()?? {
        EntryState::Queued(e) => serde_json::from_str::<StoredMessage>(&e.data)
            .ok()
            .map(|m| m.envelope.thread_id),
        EntryState::Acked { .. } => None,
    }
}
