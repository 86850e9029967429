//! Read your writes across the ingest replicas: pickup, cursors, count and acks, key
//! rotation and revocation, long-poll and read receipts, each written on one replica and
//! read on the other with no wait in between; a revoked key only within the registry
//! cache's documented bound.

use std::collections::BTreeSet;
use std::time::Duration;

use amp_proto::{SecretKey, Timestamp};
use amp_testkit::cluster::parity::Target;
use serde_json::json;

use crate::parity::http::{
    Http, Msg, UpstreamExt, assert_mailbox_written, ids_of, payload_with, tenant,
};

/// How long a change made on one replica may take to reach another's registry cache: its
/// registry-change event (milliseconds), with room for a loaded machine. The cache's TTL
/// (`[ingest.messaging] registry_cache_ms`, 30 s) only bounds a lost event, so a revocation
/// seen within this bound was carried by the event.
const REGISTRY_CACHE_BOUND: Duration = Duration::from_millis(1_500);

/// Read your writes: each 2xx route through the proxy is followed at once by a pickup
/// through the proxy (round robin: the other replica), then route on replica A and pickup on
/// replica B directly.
pub(crate) async fn read_your_writes(t: &Target) {
    let h = Http::new(&t.base);
    let tn = tenant("ryw");
    let alice = h.register(&tn, "alice").await;
    let bob = h.register(&tn, "bob").await;
    let mut crossed = 0;
    let mut upstreams = BTreeSet::new();
    for i in 0..10 {
        let m = Msg::new(&bob.address, &format!("ryw {i}"));
        let r = h.send_msg(&alice, &m).await;
        let id = assert_mailbox_written(&r)["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let p = h.get(&bob, "/v1/messages/pending?limit=1000").await;
        let ids = ids_of(&p.ok());
        assert!(
            ids.contains(&id),
            "route via {} then pickup via {}: {id} not yet visible",
            r.upstream(),
            p.upstream()
        );
        crossed += usize::from(r.upstream() != p.upstream());
        upstreams.insert(r.upstream());
        upstreams.insert(p.upstream());
    }
    assert_eq!(
        upstreams.len(),
        if t.has_replicas() { 2 } else { 1 },
        "the proxy round robin reaches every ingest replica: {upstreams:?}"
    );
    if t.has_replicas() {
        assert!(crossed > 0, "no route/pickup pair crossed replicas");
    }

    let (a, b) = (Http::new(&t.ingest[0]), Http::new(&t.ingest[1]));
    for i in 0..5 {
        let m = Msg::new(&bob.address, &format!("direct {i}"));
        let id = assert_mailbox_written(&a.send_msg(&alice, &m).await)["id"]
            .as_str()
            .expect("id")
            .to_owned();
        assert!(
            b.pending_ids(&bob).await.contains(&id),
            "routed on {}, {id} not visible on {}",
            t.ingest[0],
            t.ingest[1]
        );
    }
}

/// Cursors, count, acks: written on one replica, paged, counted and acknowledged on the
/// other; an acknowledged message is gone at once everywhere.
pub(crate) async fn cursors_count_ack(t: &Target) {
    let (a, b) = (Http::new(&t.ingest[0]), Http::new(&t.ingest[1]));
    let tn = tenant("cursor");
    let alice = a.register(&tn, "alice").await;
    let bob = a.register(&tn, "bob").await;
    let empty = b.get(&bob, "/v1/messages/pending/count").await.ok();
    assert_eq!(empty["count"], 0, "{empty}");
    assert!(empty["oldest_queued_at"].is_null(), "{empty}");
    let c0 = empty["cursor"].as_str().expect("cursor").to_owned();
    let mut ids = Vec::new();
    for i in 0..5 {
        let m = Msg::new(&bob.address, &format!("c{i}")).payload(&payload_with(&format!("c{i}")));
        let v = assert_mailbox_written(&a.send_msg(&alice, &m).await);
        ids.push(v["id"].as_str().expect("id").to_owned());
    }
    let v = b.get(&bob, "/v1/messages/pending/count").await.ok();
    assert_eq!(v["count"], 5, "{v}");
    assert!(
        v["oldest_queued_at"]
            .as_str()
            .and_then(Timestamp::parse)
            .is_some(),
        "{v}"
    );
    let (page, _) = b.pending(&bob, "?limit=2").await;
    assert_eq!(page["count"], 2, "{page}");
    assert_eq!(page["remaining"], 3, "{page}");
    assert_eq!(ids_of(&page), ids[..2]);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("next_cursor")
        .to_owned();
    let (rest, _) = a.pending(&bob, &format!("?after={cursor}")).await;
    assert_eq!(ids_of(&rest), ids[2..], "{rest}");
    assert_eq!(rest["remaining"], 0, "{rest}");
    let (all, _) = a.pending(&bob, &format!("?after={c0}")).await;
    assert_eq!(ids_of(&all), ids, "{all}");
    for bad in ["c_999999", "garbage"] {
        b.get(&bob, &format!("/v1/messages/pending?after={bad}"))
            .await
            .assert_error(410, "cursor_expired");
    }

    // Ack on A; gone on B at once.
    let p = format!("/v1/messages/pending/{}", ids[0]);
    let v = a.delete(&bob, &p).await.ok();
    assert_eq!(v, json!({ "acknowledged": true, "already_acked": false }));
    assert!(!b.pending_ids(&bob).await.contains(&ids[0]));
    let v = b.delete(&bob, &p).await.ok();
    assert_eq!(v, json!({ "acknowledged": true, "already_acked": true }));
    let unknown = "msg_1700000000000_0000dead";
    let body = json!({ "ids": [ids[1], ids[0], unknown] }).to_string();
    let v = b
        .post(&bob, "/v1/messages/pending/ack", Some(body))
        .await
        .ok();
    assert_eq!(
        v,
        json!({ "acknowledged": 1, "already_acked": [ids[0]], "not_found": [unknown] })
    );
    assert_eq!(a.pending_ids(&bob).await, ids[2..]);
    let v = a.get(&bob, "/v1/messages/pending/count").await.ok();
    assert_eq!(v["count"], 3, "{v}");
    b.delete(&bob, &format!("/v1/messages/pending/{unknown}"))
        .await
        .assert_error(404, "not_found");
}

/// Key rotation on replica A, the new API key and the new signing key used at once on B;
/// revocation on A effective at once on B.
pub(crate) async fn keys_across_replicas(t: &Target) {
    let (a, b) = (Http::new(&t.ingest[0]), Http::new(&t.ingest[1]));
    let tn = tenant("keys");
    let mut alice = a.register(&tn, "alice").await;
    let bob = a.register(&tn, "bob").await;

    // API key: the new one works on B at once, and the old one still does (24 h overlap).
    let v = a.post(&alice, "/v1/auth/rotate-key", None).await.ok();
    let new_api_key = v["api_key"].as_str().expect("api_key").to_owned();
    assert_ne!(new_api_key, alice.api_key);
    let old = alice.clone();
    alice.api_key = new_api_key;
    for who in [&alice, &old] {
        let v = b.get(who, "/v1/agents/me").await.ok();
        assert_eq!(v["address"], alice.address.as_str(), "{v}");
    }

    // Signing key: rotated on A, a message signed with the new key routes on B at once,
    // one signed with the old key is refused there: it is on the revocation list
    // (spec-next 07, `key_revoked`).
    let new_key = SecretKey::generate();
    let new_pem = new_key.public().to_pem();
    let proof = alice.key.sign_b64(new_pem.as_bytes());
    let v = a
        .post(
            &alice,
            "/v1/auth/rotate-keys",
            Some(
                json!({"new_public_key": new_pem, "key_algorithm": "Ed25519", "proof": proof})
                    .to_string(),
            ),
        )
        .await
        .ok();
    assert_eq!(v["rotated"], true, "{v}");
    assert_eq!(v["fingerprint"], new_key.public().fingerprint(), "{v}");
    let old_key = std::mem::replace(&mut alice.key, new_key);
    let m = Msg::new(&bob.address, "new key");
    let v = assert_mailbox_written(&b.send_msg(&alice, &m).await);
    let signed_new = v["id"].as_str().expect("id").to_owned();
    let stale = Msg::new(&bob.address, "old key");
    b.route(
        &alice,
        stale.flat(Some(&stale.sign_with(&old_key, &alice.address))),
    )
    .await
    .assert_error_field(403, "key_revoked", "signature");
    let v = b
        .get(&bob, &format!("/v1/agents/resolve/{}", alice.address))
        .await
        .ok();
    assert_eq!(v["fingerprint"], alice.key.public().fingerprint(), "{v}");

    // Revocation on A: both keys refused on B within the bound. Each process keeps API-key
    // lookups for `registry_cache_ms` (30 s), dropped when the revoking replica's
    // registry-change event arrives (milliseconds); the TTL bounds only a lost event
    // (README, "The cluster"). ampd refuses at once.
    let v = a.delete(&alice, "/v1/auth/revoke-key").await.ok();
    assert_eq!(v["revoked"], true, "{v}");
    let revoked_at = std::time::Instant::now();
    for who in [&alice, &old] {
        while b.get(who, "/v1/agents/me").await.status != 401 {
            assert!(
                revoked_at.elapsed() < REGISTRY_CACHE_BOUND,
                "a revoked key still works on the other replica after {:?}",
                revoked_at.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for who in [&alice, &old] {
        b.get(who, "/v1/agents/me")
            .await
            .assert_error(401, "unauthorized");
        let m = Msg::new(&bob.address, "after revocation");
        b.send_msg(who, &m).await.assert_error(401, "unauthorized");
    }
    assert_eq!(
        a.pending_ids(&bob).await,
        [signed_new],
        "only the message signed with the new key, in the pickup right after"
    );
}

/// A long-poll on replica A is answered with a message routed on replica B: whether the
/// poll was waiting when the route landed or came after it, it returns the message, promptly.
/// An empty long-poll answers after its `wait`.
pub(crate) async fn long_poll_across_replicas(t: &Target) {
    let (a, b) = (Http::new(&t.ingest[0]), Http::new(&t.ingest[1]));
    let tn = tenant("poll");
    let alice = a.register(&tn, "alice").await;
    let bob = a.register(&tn, "bob").await;
    let started = std::time::Instant::now();
    let (page, _) = a.pending(&bob, "?wait=1").await;
    let took = started.elapsed();
    assert_eq!(page["count"], 0, "{page}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "an empty long-poll of 1 s took {took:?}"
    );
    let poll = {
        let (a, bob) = (a.clone(), bob.clone());
        tokio::spawn(async move { a.pending(&bob, "?wait=10").await.0 })
    };
    let v = assert_mailbox_written(&b.send_msg(&alice, &Msg::new(&bob.address, "wake")).await);
    let answered = std::time::Instant::now();
    let page = poll.await.expect("the poll");
    assert_eq!(ids_of(&page), [v["id"].as_str().expect("id")], "{page}");
    assert!(
        answered.elapsed() < Duration::from_secs(3),
        "the poll on A answered {:?} after the route on B",
        answered.elapsed()
    );
}

/// A read receipt sent on replica B is in the sender's receipts on replica A at once, once
/// however often `/read` is called; reading is not acknowledging.
pub(crate) async fn read_receipts_across_replicas(t: &Target) {
    let (a, b) = (Http::new(&t.ingest[0]), Http::new(&t.ingest[1]));
    let tn = tenant("receipt");
    let alice = a.register(&tn, "alice").await;
    let bob = a.register(&tn, "bob").await;
    let v = assert_mailbox_written(&a.send_msg(&alice, &Msg::new(&bob.address, "read me")).await);
    let id = v["id"].as_str().expect("id").to_owned();
    let v = a.get(&alice, "/v1/messages/receipts").await.ok();
    assert_eq!(v["receipts"], json!([]), "{v}");
    let path = format!("/v1/messages/{id}/read");
    for h in [&b, &a] {
        let v = h.post(&bob, &path, None).await.ok();
        assert_eq!(v, json!({ "read_receipt_sent": true }));
    }
    assert_eq!(
        b.pending_ids(&bob).await,
        std::slice::from_ref(&id),
        "read is not an ack"
    );
    a.post(&alice, &path, None)
        .await
        .assert_error(404, "not_found");
    let v = a.get(&alice, "/v1/messages/receipts").await.ok();
    let list = v["receipts"].as_array().expect("receipts");
    assert_eq!(
        list.len(),
        1,
        "one receipt however often /read is called: {v}"
    );
    assert_eq!(list[0]["type"], "message.read", "{v}");
    assert_eq!(list[0]["data"]["id"], id.as_str(), "{v}");
    let seq = list[0]["seq"].as_u64().expect("seq");
    b.post(
        &alice,
        "/v1/messages/receipts/ack",
        Some(json!({ "upto": seq }).to_string()),
    )
    .await
    .ok();
    let v = a.get(&alice, "/v1/messages/receipts").await.ok();
    assert_eq!(
        v["receipts"],
        json!([]),
        "acknowledged on B, gone on A: {v}"
    );
}
