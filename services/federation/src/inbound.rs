//! `POST /v1/federation/deliver`: a message from an agent on another provider.
//!
//! Checks, in order (cheap and unauthenticated ones first, nothing on the network before the
//! request could be valid): the headers and timestamp window (401; `X-AMP-Provider`
//! normalised, so `evil.com.` is `evil.com`), the trust policy (403), the body (400/413:
//! the same envelope and payload rules as a local sender's, the peer's timestamp at most 60 s
//! ahead (`timestamp_future`, spec-next 07) and not older than a relay keeps a message, the
//! expiry capped, the sender an agent under the calling provider's own domain and never one
//! of ours, 403), the sending provider's key through discovery (rate limited, single-flight,
//! bounded cache) and its signature over `"<ts>.<raw body>"` (401), replay of the same signed
//! request (401), then the peer's `X-AMP-Key-Revoked` announcements are recorded
//! (`revocations`), rate limits (429), the sender's signature over the payload as received
//! (400), a revoked sender key (403 `key_revoked`, spec-next 07), the recipient (404). Then
//! the message goes to the router marked as delivered by the peer, so it is classified
//! `external` at best. Every error body carries `accepted: false`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amp_messaging::handoff;
use amp_messaging::idempotency::{self, Key, Kind};
use amp_proto::message::{self, ValidationError};
use amp_proto::relay::{Accepted, RouteOutcome, StoredMessage};
use amp_proto::signing::{VerifyError, verify_message};
use amp_proto::{Address, ApiError, Envelope, ErrorCode, PublicKey, RawPayload, Timestamp};
use amp_runtime::HttpError;
use amp_runtime::ratelimit::Decision;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::connect_info::ConnectInfo;
use axum::http::{Extensions, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::config::normalize_domain;
use crate::discovery::DiscoveryError;
use crate::signature::{PROVIDER_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::{Inner, signature};

/// Most remembered (provider, signature) pairs; beyond it the oldest half is forgotten.
const MAX_SEEN: usize = 200_000;
/// A cached peer key older than this is looked up again when a signature fails against it
/// (the peer may have rotated its key); younger ones are not, so forged requests cannot
/// force a lookup each.
const REFRESH_AFTER: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct DeliverBody {
    envelope: Envelope,
    payload: Box<RawValue>,
    sender_public_key: Option<String>,
}

fn refused(code: ErrorCode, message: impl Into<String>) -> HttpError {
    HttpError::new(ApiError::new(code, message).with_extra("accepted", Value::Bool(false)))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// A request body that passed every check needing no network: the envelope as validated
/// (expiry capped, thread filled in), the payload, the sender's key and canonical address.
struct Checked {
    envelope: Envelope,
    payload: RawPayload,
    sender_key: PublicKey,
    from: Address,
}

/// The handler.
pub(crate) async fn deliver(
    State(inner): State<Arc<Inner>>,
    ext: Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, HttpError> {
    // 1. The headers: no I/O.
    let provider = header(&headers, PROVIDER_HEADER)
        .ok_or_else(|| refused(ErrorCode::Unauthorized, "X-AMP-Provider is missing"))?;
    // One spelling per provider (`evil.com.` is `evil.com`), before any policy looks at it.
    let provider = normalize_domain(provider).ok_or_else(|| {
        refused(
            ErrorCode::Unauthorized,
            "X-AMP-Provider is not a provider domain name",
        )
    })?;
    let ts_text = header(&headers, TIMESTAMP_HEADER)
        .ok_or_else(|| refused(ErrorCode::Unauthorized, "X-AMP-Timestamp is missing"))?;
    let sig = header(&headers, SIGNATURE_HEADER)
        .ok_or_else(|| refused(ErrorCode::Unauthorized, "X-AMP-Signature is missing"))?;
    let ts: i64 = ts_text.parse().map_err(|_| {
        refused(
            ErrorCode::Unauthorized,
            "X-AMP-Timestamp must be unix seconds",
        )
    })?;
    let now = Timestamp::now();
    let window = i64::try_from(inner.config.timestamp_window_secs).unwrap_or(300);
    if (now.unix_secs() - ts).abs() > window {
        return Err(refused(
            ErrorCode::Unauthorized,
            format!("X-AMP-Timestamp is outside the ±{window} s window"),
        ));
    }
    if !inner.config.trusts(&provider) {
        return Err(refused(
            ErrorCode::ProviderNotTrusted,
            format!("Provider '{provider}' is not in our trust list"),
        ));
    }
    if provider == inner.identity.domain {
        return Err(refused(
            ErrorCode::ProviderNotTrusted,
            "a provider does not federate with itself",
        ));
    }

    // 2. The body, before any network lookup: a request refused anyway costs no DNS or HTTPS
    // query on its behalf.
    let checked = check_body(&inner, &provider, &body, now)?;

    // 3. The provider's key, by discovery (cached, single-flight, rate limited), and its
    // signature.
    // The client address a discovery is charged to: the direct peer, or behind trusted
    // proxies the address they forward.
    let source = ext.get::<ConnectInfo<SocketAddr>>().map(|c| {
        inner
            .config
            .client_address
            .client_ip(c.0.ip(), &headers)
            .to_string()
    });
    let peer = inner
        .discovery
        .provider_for(&provider, Some(source.as_deref().unwrap_or("unknown")))
        .await
        .map_err(|e| match e {
            DiscoveryError::RateLimited { retry_after_secs } => {
                let secs = retry_after_secs.max(1);
                let mut headers = HeaderMap::new();
                headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
                HttpError::new(
                    ApiError::new(
                        ErrorCode::RateLimited,
                        "Too many providers not seen before; retry later",
                    )
                    .with_extra("retry_after", json!(secs))
                    .with_extra("accepted", Value::Bool(false)),
                )
                .with_headers(headers)
            }
            e => {
                tracing::info!(provider = %provider, error = %e, "inbound federation from an undiscoverable provider");
                refused(
                    ErrorCode::Unauthorized,
                    format!("cannot discover the key of provider '{provider}'"),
                )
            }
        })?;
    let mut verified = signature::verify(&peer.key, ts_text, &body, sig);
    if !verified
        && inner
            .discovery
            .invalidate_older_than(&provider, REFRESH_AFTER)
        && let Ok(fresh) = inner
            .discovery
            .provider_for(&provider, Some(source.as_deref().unwrap_or("unknown")))
            .await
    {
        verified = signature::verify(&fresh.key, ts_text, &body, sig);
    }
    if !verified {
        return Err(refused(
            ErrorCode::Unauthorized,
            "X-AMP-Signature does not verify against the provider's key",
        ));
    }
    if !first_sighting(&inner, &provider, sig) {
        return Err(refused(
            ErrorCode::Unauthorized,
            "this signed request was already received (replay)",
        ));
    }
    // The peer's own key revocations (spec-next 07), trusted now that its signature is.
    inner.revocations.learn(&inner, &provider, &headers).await;
    let decision = inner.inbound_provider_limiter.check(&provider);
    if !decision.allowed {
        return Err(rate_limited(
            decision,
            format!("Too many messages from {provider}"),
        ));
    }
    let decision = inner.inbound_total_limiter.check("*");
    if !decision.allowed {
        return Err(rate_limited(decision, "Too many federated messages".into()));
    }

    // 4. The sender's signature: trusted because the home provider vouches for the key
    // (SPEC-CHECKLIST §4.12).
    let Checked {
        envelope: env,
        payload,
        sender_key,
        from,
    } = checked;
    if let Err(e) = verify_message(
        &sender_key,
        &env.signed_fields(),
        payload.get(),
        &env.signature,
    ) {
        let msg = match e {
            VerifyError::Malformed => "signature is not base64 of 64 bytes",
            VerifyError::Invalid => "signature does not verify against sender_public_key",
            VerifyError::PayloadNotJson => "payload is not valid JSON",
        };
        return Err(refused(ErrorCode::SignatureInvalid, msg));
    }
    // A key on our list, or on what this peer reported, signs nothing (spec-next 07).
    amp_messaging::revocation::refuse_revoked_key(&inner.store, &provider, &sender_key)
        .await
        .map_err(|e| HttpError::new(e.with_extra("accepted", Value::Bool(false))))?;
    let from = from.as_str().to_owned();
    pin_sender_key(&inner, &from, &sender_key).await;

    // The sender's idempotency key (spec-next 04): kept by its provider in the envelope; a
    // message under a key this sender used before is answered as the first was, or refused
    // (409) when it is another message. Scoped to the sender's address (its provider is
    // authenticated by now, and the address is under that provider's domain).
    let idem = env
        .idempotency_key
        .as_deref()
        .map(|k| Key::new(Kind::Explicit, &format!("fed:{from}"), k));
    // The same message: its signed fields, signature and payload (by canonical hash; the
    // payload parsed as JSON already). Ids differ between two messages of the sender's
    // provider under one key, so they are not part of it.
    let fp = match &idem {
        Some(_) => idempotency::fingerprint(&[
            &env.to,
            &env.subject,
            env.priority.as_str(),
            env.in_reply_to.as_deref().unwrap_or(""),
            &env.signature,
            &amp_proto::signing::payload_hash(payload.get()).unwrap_or_default(),
        ]),
        None => String::new(),
    };
    if let Some(k) = &idem
        && let Some(record) = idempotency::lookup(&inner.store, k)
            .await
            .map_err(store_err)?
    {
        let first = idempotency::replay(k, record, &fp)
            .map_err(|e| HttpError::new(e.with_extra("accepted", Value::Bool(false))))?;
        return Ok(Json(first.body));
    }

    // 5. The recipient.
    let to_text = env.to.clone();
    let not_found = || {
        refused(
            ErrorCode::RecipientNotFound,
            format!("Agent '{to_text}' does not exist"),
        )
    };
    let to = Address::parse_full(&env.to, &inner.identity.domain).map_err(|_| not_found())?;
    if to.provider() != inner.identity.domain {
        return Err(not_found());
    }
    let recipient = inner
        .store
        .agent_by_name(to.tenant(), to.name())
        .await
        .map_err(store_err)?
        .filter(|a| a.is_active() && (a.address == to.as_str() || !to.is_scoped()))
        .ok_or_else(not_found)?;
    // A suspended recipient receives nothing, from anywhere (spec-next 07); its mailbox is
    // kept as it is.
    if let Some(s) = amp_store::suspension::Suspensions::suspension(&*inner.store, &recipient.id)
        .await
        .map_err(store_err)?
        .filter(|s| s.active_at(now.unix_millis()))
    {
        let e = amp_messaging::suspension::refusal(ErrorCode::RecipientSuspended, &s);
        return Err(HttpError::new(e.with_extra("accepted", Value::Bool(false))));
    }
    let decision = inner.inbound_recipient_limiter.check(&recipient.id);
    if !decision.allowed {
        return Err(rate_limited(
            decision,
            format!("Too many messages for {}", recipient.address),
        ));
    }

    // Within the recipient's tenant plan's `stored_bytes` (no store read per message: the
    // gate's cached record and the meter's estimate).
    if let (Some(meter), Some((gate, defaults))) = (inner.meter.get(), inner.plans.get()) {
        let record = gate.tenant(&recipient.tenant).await.map_err(store_err)?;
        let plan = record.map_or(*defaults, |r| r.plan.over(defaults));
        let bytes = amp_proto::message::message_bytes(&env, &payload);
        amp_messaging::quota::check_held(meter, &plan, &recipient.tenant, bytes)
            .await
            .map_err(|e| HttpError::new(e.with_extra("accepted", Value::Bool(false))))?;
    }

    // To the router, which classifies it (`external` at best: it came from a peer) and
    // writes the mailbox: the same hand-off as a local sender's message.
    let id = env.id.clone();
    let accepted = Accepted {
        v: 1,
        message: StoredMessage {
            envelope: env,
            payload,
            sender_public_key: Some(sender_key.to_pem()),
            security: None,
            receipt: false,
        },
        recipient_id: recipient.id.clone(),
        recipient_address: recipient.address.clone(),
        sender_address: from.clone(),
        sender_id: None,
        signature_valid: true,
        verified_at: Some(now),
        max_queued: inner.config.mailbox_quota,
        remote_provider: None,
        via_provider: Some(provider.clone()),
        accepted_at: Some(now),
    };
    let waits = handoff::Waits {
        route_timeout: Duration::from_millis(inner.config.route_timeout_ms),
        outcome_wait: Duration::from_millis(inner.config.outcome_wait_ms),
    };
    let refused_by_peer_rules = |e: ApiError| {
        // Every error body of this endpoint says `accepted: false`; an unknown recipient is
        // spec 06's `recipient_not_found`, worded as above.
        if e.code == ErrorCode::NotFound {
            not_found()
        } else {
            HttpError::new(e.with_extra("accepted", Value::Bool(false)))
        }
    };
    let handed = handoff::hand_off(&inner.bus, &recipient.tenant, &accepted, waits)
        .await
        .map_err(refused_by_peer_rules)?;
    let (outcome, prior) = handoff::settle_retry(&inner.store, &accepted, handed)
        .await
        .map_err(refused_by_peer_rules)?;
    if let Some(RouteOutcome::Forwarded) = outcome {
        return Err(HttpError::internal("router forwarded an inbound message"));
    }
    if let Some(e) = outcome.and_then(handoff::refusal) {
        return Err(refused_by_peer_rules(e));
    }
    // `false`: a broker holds it durably and the router had not reported within the wait,
    // or it is held for review (spec-next 07 quarantine).
    let delivered = outcome.is_some() && outcome != Some(RouteOutcome::Quarantined);
    tracing::info!(
        event = "federation.received",
        timestamp = %now,
        from_provider = %provider,
        message_id = %id,
        sender = %from,
        recipient = %recipient.address,
        delivered,
        "federated message received"
    );
    metrics::counter!("amp_federation_received_total").increment(1);
    if let Some(meter) = inner.meter.get()
        && prior.is_none()
        && !matches!(outcome, Some(RouteOutcome::Duplicate { .. }))
    {
        let bytes = amp_proto::message::message_bytes(
            &accepted.message.envelope,
            &accepted.message.payload,
        );
        meter.record(&recipient.tenant, amp_messaging::usage::Event::FederatedIn);
        meter.record(
            &recipient.tenant,
            amp_messaging::usage::Event::MessageOut {
                bytes: bytes as u64,
            },
        );
    }
    let answer = json!({
        "accepted": true,
        "id": id,
        "delivered": delivered,
        "method": "relay",
    });
    if let Some(k) = &idem {
        let record = idempotency::Record {
            fp,
            status: 200,
            body: answer.clone(),
        };
        idempotency::remember(&inner.store, k, &record, now.unix_millis()).await;
    }
    Ok(Json(answer))
}

/// The checks of a request body that need no network: its shape, the envelope's fields (the
/// same rules as a local sender's, with the peer's timestamp bounded and the expiry capped),
/// the sender under the calling provider's own domain, the payload and the whole message's
/// size, and the sender's key.
fn check_body(
    inner: &Inner,
    provider: &str,
    body: &[u8],
    now: Timestamp,
) -> Result<Checked, HttpError> {
    // The local sender's error, field included, plus `accepted: false`.
    let invalid = |e: ValidationError| {
        HttpError::new(ApiError::from(e).with_extra("accepted", Value::Bool(false)))
    };
    let body: DeliverBody = serde_json::from_slice(body).map_err(|e| {
        refused(
            ErrorCode::InvalidRequest,
            format!("body is not {{envelope, payload, sender_public_key}}: {e}"),
        )
    })?;
    let mut env = body.envelope;
    let from = sender_of(&env.from, provider, &inner.identity.domain)?;
    message::validate_envelope(&env).map_err(invalid)?;
    // The peer's clock says when its agent sent it: shown to the recipient, never trusted
    // for our own times (queued_at, expiry), and bounded so it cannot claim the far future
    // or a message older than any relay keeps one.
    // More than 60 s ahead is `timestamp_future` (spec-next 07).
    amp_messaging::revocation::refuse_future(env.timestamp, now).map_err(|mut e| {
        e.field = Some("envelope.timestamp".into());
        HttpError::new(e.with_extra("accepted", Value::Bool(false)))
    })?;
    let window = i64::try_from(inner.config.timestamp_window_secs).unwrap_or(300);
    if env.timestamp < now.plus_secs(-(message::limits::DEFAULT_TTL_SECS + window)) {
        return Err(refused(
            ErrorCode::InvalidField,
            "envelope.timestamp is older than the relay lifetime (7 days)",
        ));
    }
    env.expires_at = Some(
        message::effective_expiry(now, env.expires_at)
            .map_err(|_| refused(ErrorCode::InvalidField, "the message has expired"))?,
    );
    if env.in_reply_to.as_deref().is_some_and(str::is_empty) {
        env.in_reply_to = None;
    }
    if env.thread_id.is_empty() {
        env.thread_id = env.id.to_string();
    }
    let payload = RawPayload::from_json(body.payload.get().to_owned())
        .map_err(|_| refused(ErrorCode::InvalidRequest, "payload is not valid JSON"))?;
    payload.validate().map_err(invalid)?;
    message::validate_total(&env, &payload).map_err(invalid)?;
    let key_text = body.sender_public_key.unwrap_or_default();
    let sender_key = PublicKey::parse(&key_text).map_err(|e| {
        refused(
            ErrorCode::KeyNotFound,
            format!("sender_public_key is missing or not an Ed25519 key: {e}"),
        )
    })?;
    if env.signature.trim().is_empty() {
        return Err(refused(
            ErrorCode::SignatureMissing,
            "federated messages must be signed by the sender (spec 04)",
        ));
    }
    Ok(Checked {
        envelope: env,
        payload,
        sender_key,
        from,
    })
}

/// The sender of a federated message: an agent address under the calling provider's own
/// domain, cut at a label boundary (`a@t.alpha.test` for `alpha.test`, never
/// `a@t.evilalpha.test`), and never one of ours, even when the peer's domain is a parent of
/// ours (`example.com` sending for `x@t.amp.example.com`).
fn sender_of(from: &str, provider: &str, ours: &str) -> Result<Address, HttpError> {
    let from = Address::parse_full(from.trim(), provider).map_err(|e| {
        refused(
            ErrorCode::InvalidField,
            format!("envelope.from is not an agent address: {e}"),
        )
    })?;
    if from.provider() != provider {
        return Err(refused(
            ErrorCode::ProviderNotTrusted,
            "from domain does not match X-AMP-Provider",
        ));
    }
    let domain = &from.as_str()[from.name().len() + 1..];
    if domain == ours || domain.ends_with(&format!(".{ours}")) {
        return Err(refused(
            ErrorCode::ProviderNotTrusted,
            "a peer cannot send as an agent of this provider",
        ));
    }
    Ok(from)
}

/// Records (provider, signature); false when it was already seen within the window.
///
/// Per process on purpose (no store write per federated message): a replay sent to another
/// replica passes this check but has no effect there either. The message id is the shared
/// mailbox's idempotency key: `Mailboxes::enqueue` on (recipient, id) makes the same
/// signature `Enqueued::Duplicate`, and an acknowledged id, or an expired one not yet purged,
/// stays taken (`amp_messaging::handoff::settle_retry`), so the replay is answered like a
/// retry and nothing is stored or delivered twice (and a message past its expiry is never
/// delivered at all). What the replay still costs is one draw on the rate limits, which the
/// replicas share (`amp_messaging::shared_limits`).
fn first_sighting(inner: &Inner, provider: &str, sig: &str) -> bool {
    let window = Duration::from_secs(inner.config.timestamp_window_secs.saturating_mul(2));
    let now = Instant::now();
    let mut seen = inner.seen.lock();
    if seen.len() >= MAX_SEEN {
        seen.retain(|_, at| now.duration_since(*at) < window);
        if seen.len() >= MAX_SEEN {
            let mut ages: Vec<Instant> = seen.values().copied().collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            seen.retain(|_, at| *at > cut);
        }
    }
    let key = (provider.to_owned(), sig.to_owned());
    match seen.get(&key) {
        Some(at) if now.duration_since(*at) < window => false,
        _ => {
            seen.insert(key, now);
            true
        }
    }
}

/// How long a pinned remote key is kept after the sender was last seen: long enough to flag
/// a key change between a sender's regular messages, bounded so that every address a peer
/// ever named (it names as many as it likes) does not stay in the store for good.
pub const PIN_LIFETIME_MS: i64 = 90 * 24 * 3600 * 1000;

/// The key a sender's pin is stored under.
pub fn pin_key(address: &str) -> String {
    format!("federation:pin:{address}")
}

/// What to do with a sender's pin, given the stored value (`"<fingerprint> <pinned_until>"`,
/// or a bare fingerprint written before pins expired): whether the key changed, and the
/// value and expiry to write, if any. A pin is renewed once less than half its lifetime is
/// left, so a regular sender keeps its pin at one write per 45 days.
fn pin_update(stored: Option<&[u8]>, fp: &str, now: i64) -> (bool, Option<(Vec<u8>, i64)>) {
    let until = now + PIN_LIFETIME_MS;
    let write = Some((format!("{fp} {until}").into_bytes(), until));
    let Some(stored) = stored else {
        return (false, write);
    };
    let stored = String::from_utf8_lossy(stored);
    let (old_fp, old_until) = match stored.split_once(' ') {
        Some((f, t)) => (f, t.parse::<i64>().ok()),
        None => (stored.as_ref(), None),
    };
    if old_fp != fp {
        return (true, write);
    }
    match old_until {
        Some(t) if t - now > PIN_LIFETIME_MS / 2 => (false, None),
        _ => (false, write),
    }
}

/// Pins the first key seen for a remote address and flags a change (SPEC-CHECKLIST §4.12).
/// The new key is still accepted: its home provider vouched for it, and agents rotate keys.
/// The pin expires [`PIN_LIFETIME_MS`] after the sender was last seen.
async fn pin_sender_key(inner: &Inner, address: &str, key: &PublicKey) {
    let kv_key = pin_key(address);
    let fp = key.fingerprint();
    let stored = match inner.store.get(&kv_key).await {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read a pinned sender key");
            return;
        }
    };
    let (changed, write) = pin_update(stored.as_deref(), &fp, Timestamp::now().unix_millis());
    if changed {
        let old = stored
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        tracing::warn!(
            event = "federation.key_changed",
            sender = %address,
            old = %old.split(' ').next().unwrap_or_default(),
            new = %fp,
            "a remote sender's key changed"
        );
    }
    if let Some((value, until)) = write
        && let Err(e) = inner.store.put(&kv_key, value, Some(until)).await
    {
        tracing::debug!(error = %e, "cannot pin a sender key");
    }
}

fn rate_limited(decision: Decision, message: String) -> HttpError {
    let secs = decision.retry_after_secs.max(1);
    let mut headers = HeaderMap::new();
    decision.apply_headers(&mut headers);
    headers.insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
    HttpError::new(
        ApiError::new(ErrorCode::RateLimited, message)
            .with_extra("retry_after", json!(secs))
            .with_extra("accepted", Value::Bool(false)),
    )
    .with_headers(headers)
}

fn store_err(e: amp_store::Error) -> HttpError {
    HttpError::new(handoff::store_error(e).with_extra("accepted", Value::Bool(false)))
}

#[cfg(test)]
mod pin_tests {
    use super::{PIN_LIFETIME_MS, pin_update};

    #[test]
    fn security_pin_markers_expire_and_renew_at_half_life() {
        let now = 1_000_000;
        let (changed, write) = pin_update(None, "fp1", now);
        assert!(!changed);
        let (value, until) = write.expect("a first pin is written");
        assert_eq!(until, now + PIN_LIFETIME_MS, "bounded lifetime");
        // Seen again soon: nothing to write.
        assert_eq!(pin_update(Some(&value), "fp1", now + 1), (false, None));
        // Past half its life: renewed, from now.
        let later = now + PIN_LIFETIME_MS / 2 + 1;
        let (changed, write) = pin_update(Some(&value), "fp1", later);
        assert!(!changed);
        assert_eq!(write.map(|w| w.1), Some(later + PIN_LIFETIME_MS));
        // Another key: flagged and pinned anew.
        let (changed, write) = pin_update(Some(&value), "fp2", now + 1);
        assert!(changed);
        assert!(write.is_some());
        // A pin written before pins expired (a bare fingerprint) gets an expiry.
        let (changed, write) = pin_update(Some(b"fp1"), "fp1", now);
        assert!(!changed);
        assert_eq!(write.map(|w| w.1), Some(now + PIN_LIFETIME_MS));
    }
}
