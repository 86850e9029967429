//! Test support for backends: the conformance suite ([`conformance`]) and record builders.

pub mod conformance;
pub mod per_message;
pub mod purge;
pub mod quarantine;
pub mod records;
pub mod revocation;
pub mod risk;
pub mod suspension;

use crate::{AgentRecord, AgentStatus, DeliveryPrefs, KeyHash, Millis, NewMailboxEntry};

/// A fresh, unique-ish id suffix so tests sharing one store do not collide.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}{:x}{n:x}", t % 0xffff_ffff)
}

/// A key hash derived from a label (tests only: real hashes are keyed HMACs).
pub fn key_hash(label: &str) -> KeyHash {
    let mut h = [0u8; 32];
    for (i, b) in label.bytes().enumerate() {
        h[i % 32] = h[i % 32].wrapping_mul(31).wrapping_add(b);
    }
    h[31] ^= label.len() as u8;
    h
}

/// An active agent record in `tenant` named `name`.
pub fn agent(tenant: &str, name: &str, now: Millis) -> AgentRecord {
    AgentRecord {
        id: unique("agt_"),
        address: format!("{name}@{tenant}.example.test"),
        tenant: tenant.to_owned(),
        name: name.to_owned(),
        scope: tenant.to_owned(),
        alias: Some(format!("Alias of {name}")),
        public_key_hex: "00".repeat(32),
        key_algorithm: "Ed25519".into(),
        fingerprint: "SHA256:test".into(),
        past_keys: Vec::new(),
        delivery: DeliveryPrefs {
            webhook_url: None,
            webhook_secret: None,
            prefer_websocket: true,
        },
        metadata: None,
        owner_id: None,
        registered_at: now,
        last_seen_at: None,
        status: AgentStatus::Active,
        capabilities: Vec::new(),
        communication_policy: None,
        agent_card: None,
    }
}

/// A mailbox entry for `agent_id` from `sender`, expiring `ttl_ms` after `now`.
pub fn entry(
    agent_id: &str,
    message_id: &str,
    sender: &str,
    now: Millis,
    ttl_ms: i64,
) -> NewMailboxEntry {
    NewMailboxEntry {
        agent_id: agent_id.to_owned(),
        message_id: message_id.to_owned(),
        sender: sender.to_owned(),
        signature: format!("sig-of-{message_id}"),
        data: format!(
            r#"{{"envelope":{{"id":"{message_id}"}},"payload":{{"context":{{"n":1.0}}}}}}"#
        ),
        queued_at: now,
        expires_at: now + ttl_ms,
        max_queued: None,
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}
