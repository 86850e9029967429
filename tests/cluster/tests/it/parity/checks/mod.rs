//! The black-box checks, each written once and run against every [`Target`]: what `ampd`
//! answers is the expected value, exactly. Each check registers its own tenant. Nothing
//! waits or retries for visibility: a write answered 2xx must be readable by the very next
//! request, on whichever replica it lands.
//!
//! - `discovery`: health, info, well-known, registration, agents/me, resolve.
//! - `messages`: route answers, duplicates, refusals, size limits.
//! - `replicas`: read your writes, cursors, acks, keys, long-poll, receipts across replicas.
//! - `websocket`: connect, auth, replay and live push through the proxy.
//! - `attachments`: upload, confirm, route checks and downloads across replicas.
//! - `profile`: the Agent Card, capabilities and communication policy (spec-next 02, 03, 08).

pub(crate) mod attachments;
mod discovery;
mod messages;
pub(crate) mod profile;
mod replicas;
mod websocket;

use amp_testkit::cluster::parity::Target;
use futures::future::BoxFuture;

use discovery::{agents_me_and_resolve, discovery, registration};
use messages::{duplicates, refusals, route_answers, size_limits};
use replicas::{
    cursors_count_ack, keys_across_replicas, long_poll_across_replicas,
    read_receipts_across_replicas, read_your_writes,
};
use websocket::websocket_push;

/// Every check, by name.
pub(crate) fn all() -> Vec<(&'static str, Check)> {
    vec![
        ("discovery", |t| Box::pin(discovery(t))),
        ("registration", |t| Box::pin(registration(t))),
        ("agents_me_and_resolve", |t| {
            Box::pin(agents_me_and_resolve(t))
        }),
        ("route_answers", |t| Box::pin(route_answers(t))),
        ("duplicates", |t| Box::pin(duplicates(t))),
        ("refusals", |t| Box::pin(refusals(t))),
        ("size_limits", |t| Box::pin(size_limits(t))),
        ("read_your_writes", |t| Box::pin(read_your_writes(t))),
        ("cursors_count_ack", |t| Box::pin(cursors_count_ack(t))),
        ("keys_across_replicas", |t| {
            Box::pin(keys_across_replicas(t))
        }),
        ("long_poll_across_replicas", |t| {
            Box::pin(long_poll_across_replicas(t))
        }),
        ("read_receipts_across_replicas", |t| {
            Box::pin(read_receipts_across_replicas(t))
        }),
        ("websocket_push", |t| Box::pin(websocket_push(t))),
        ("attachments", |t| Box::pin(attachments::attachments(t))),
        ("agent_profile", |t| Box::pin(profile::agent_profile(t))),
    ]
}

/// One check: borrows the target, returns its future.
pub(crate) type Check = for<'a> fn(&'a Target) -> BoxFuture<'a, ()>;
