//! Agents exchange messages across replicas: registered on one ingest, sending through the
//! other, a WebSocket on a delivery replica that neither ingest knows about.

use std::time::Duration;

use amp_client::Frame;
use amp_testkit::NatsServer;
use amp_testkit::cluster::{Deployment, HEAVY, Topology};
use futures::StreamExt;

use crate::common::{agent, client, mailbox_ids, message_id, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_messages_cross_every_replica() {
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start();
    let d = Deployment::start(&Topology::new("cluster.test", nats.url(), 1)).await;
    let (a, b) = (d.ingest[0].url(), d.ingest[1].url());

    let alice = agent(&a, "acme", "alice").await;
    let bob = agent(&a, "acme", "bob").await;
    let carol = agent(&b, "acme", "carol").await;

    // Bob holds a WebSocket on delivery replica 1; Alice sends through ingest replica 2.
    let mut socket = client(&d.delivery[0].url())
        .subscribe(&bob)
        .await
        .expect("bob subscribes on delivery-1");
    let id = message_id();
    let answer = send(&client(&b), &alice, bob.address(), &id, "over the wire")
        .await
        .expect("route through ingest-2");
    assert_eq!(answer.id, id);
    // The router's outcome is in the answer (the push, or at least the mailbox write).
    assert!(
        matches!(
            answer.basis.as_deref(),
            Some("mailbox_written" | "socket_written")
        ),
        "{answer:?}"
    );
    let frame = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match socket.next().await {
                Some(Ok(Frame::Message(m))) => return m,
                Some(Ok(_)) => {}
                other => panic!("socket ended: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no push within 15 s\n{}", d.logs()));
    assert_eq!(frame.id(), id);
    assert!(!frame.replay, "a live push is not a replay");
    assert_eq!(frame.envelope.from, alice.address());

    // The same message is in Bob's mailbox as seen from either ingest, once.
    for url in [&a, &b] {
        assert_eq!(mailbox_ids(url, &bob).await, std::slice::from_ref(&id));
    }

    // A second socket on the other delivery replica gets it as a replay from the store.
    let mut other = client(&d.delivery[1].url())
        .subscribe(&bob)
        .await
        .expect("bob subscribes on delivery-2");
    match tokio::time::timeout(Duration::from_secs(10), other.next()).await {
        Ok(Some(Ok(Frame::Message(m)))) => {
            assert_eq!(m.id(), id);
            assert!(m.replay, "queued before the socket connected: a replay");
        }
        other => panic!("expected the replay, got {other:?}"),
    }
    socket.ack(&id).await.expect("ack over the socket");

    // Carol is relay-only: 20 messages through both ingests reach her mailbox once each,
    // whichever router wrote them.
    let mut sent = Vec::new();
    for i in 0..20 {
        let id = message_id();
        let via = if i % 2 == 0 { &a } else { &b };
        send(&client(via), &alice, carol.address(), &id, "relay")
            .await
            .expect("route");
        sent.push(id);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = mailbox_ids(&b, &carol).await;
        if got.len() >= sent.len() || tokio::time::Instant::now() > deadline {
            let mut got = got;
            got.sort();
            sent.sort();
            assert_eq!(got, sent, "carol's mailbox\n{}", d.logs());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Bob's ack went through delivery-1 to the shared store: his mailbox is empty everywhere.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !mailbox_ids(&a, &bob).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ack never landed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// In a cluster the sender is answered with the router's outcome: a full mailbox is `507`
/// at once, like `ampd`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_full_mailbox_is_answered_507() {
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start();
    let mut topology = Topology::new("cluster.test", nats.url(), 1);
    topology.replicas = [1, 1, 1, 0];
    topology.mailbox_quota = 3;
    let d = Deployment::start(&topology).await;
    let url = d.ingest[0].url();
    let alice = agent(&url, "acme", "alice").await;
    let dave = agent(&url, "acme", "dave").await;
    let mut sent = Vec::new();
    for _ in 0..3 {
        let id = message_id();
        let answer = send(&client(&url), &alice, dave.address(), &id, "fill")
            .await
            .expect("stored");
        assert_eq!(
            answer.basis.as_deref(),
            Some("mailbox_written"),
            "{answer:?}"
        );
        sent.push(id);
    }
    let err = send(
        &client(&url),
        &alice,
        dave.address(),
        &message_id(),
        "one too many",
    )
    .await
    .expect_err("the mailbox is full");
    assert_eq!(err, "mailbox_full");
    // Read your writes: the 200s are in the mailbox now, nothing else.
    let mut stored = mailbox_ids(&url, &dave).await;
    stored.sort();
    sent.sort();
    assert_eq!(stored, sent);
    // Nothing was bounced: the sender learnt it from the answer.
    let page = client(&url)
        .pending(&alice, Some(100), None, None)
        .await
        .expect("alice's mailbox");
    assert!(page.messages.is_empty(), "{:?}", page.messages);
}

/// Past the outcome wait (0 here) the sender is answered `202 queued`; a message the router
/// then cannot store (full mailbox) comes back to its sender as a `system` bounce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_full_mailbox_bounces_to_the_sender_after_a_queued_answer() {
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start();
    let mut topology = Topology::new("cluster.test", nats.url(), 1);
    topology.replicas = [1, 1, 1, 0];
    topology.mailbox_quota = 3;
    topology.outcome_wait_ms = Some(0);
    let d = Deployment::start(&topology).await;
    let url = d.ingest[0].url();
    let alice = agent(&url, "acme", "alice").await;
    let dave = agent(&url, "acme", "dave").await;
    let mut sent = Vec::new();
    for _ in 0..5 {
        let id = message_id();
        let answer = send(&client(&url), &alice, dave.address(), &id, "fill")
            .await
            .expect("queued");
        assert_eq!(answer.basis.as_deref(), Some("queued"));
        sent.push(id);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let bounces = loop {
        let page = client(&url)
            .pending(&alice, Some(100), None, None)
            .await
            .expect("alice's mailbox");
        if page.messages.len() >= 2 || tokio::time::Instant::now() > deadline {
            break page.messages;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stored = mailbox_ids(&url, &dave).await;
    assert_eq!(stored.len(), 3, "the quota holds: {stored:?}");
    assert_eq!(
        bounces.len(),
        2,
        "one bounce per message that did not fit\n{}",
        d.logs()
    );
    let mut bounced: Vec<String> = Vec::new();
    for b in &bounces {
        assert_eq!(b.envelope.from, "postmaster@system.cluster.test");
        assert_eq!(b.payload_type().as_deref(), Some("system"));
        let payload: serde_json::Value =
            serde_json::from_str(b.payload.get()).expect("payload JSON");
        assert_eq!(payload["context"]["error"], "mailbox_full");
        assert_eq!(payload["context"]["recipient"], dave.address());
        let original = b.envelope.in_reply_to.clone().expect("in_reply_to");
        assert_eq!(payload["context"]["original_id"], original.as_str());
        bounced.push(original);
    }
    // Exactly the messages not stored were bounced.
    let mut expected: Vec<String> = sent.into_iter().filter(|id| !stored.contains(id)).collect();
    expected.sort();
    bounced.sort();
    assert_eq!(bounced, expected);
    // The bounces verify against the provider key.
    let key = d.provider_key.public();
    for b in &bounces {
        b.verify(Some(&key)).expect("bounce signed by the provider");
    }
}

/// Partitioned ingress (4 streams, 2 routers): three senders each send 40 messages one after
/// the other to their own recipient while a router is killed with SIGKILL and restarted.
/// Every 2xx is stored exactly once, nothing else is, and the messages answered
/// `mailbox_written` are in their mailbox in the order they were sent (a `202 queued`
/// answer, possible while the killed router's delivery waits out the ack wait, promises no
/// order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_partitioned_ingress_keeps_order_and_loses_nothing_when_a_router_dies() {
    const PAIRS: usize = 3;
    const EACH: usize = 40;
    let _heavy = HEAVY.lock().await;
    let nats = NatsServer::start();
    let mut topology = Topology::new("cluster.test", nats.url(), 1);
    topology.replicas = [1, 2, 1, 0];
    topology.ingress_partitions = 4;
    topology.ack_wait_ms = 2_000;
    let mut d = Deployment::start(&topology).await;
    let url = d.ingest[0].url();
    let mut pairs = Vec::new();
    for i in 0..PAIRS {
        let from = agent(&url, "acme", &format!("sender{i}")).await;
        let to = agent(&url, "acme", &format!("recipient{i}")).await;
        pairs.push((from, to));
    }
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::new();
    for (from, to) in pairs.clone() {
        let url = url.clone();
        let progress = progress.clone();
        senders.push(tokio::spawn(async move {
            // (id, answered mailbox_written) for every 2xx, in send order.
            let mut stored = Vec::new();
            for n in 0..EACH {
                let id = message_id();
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    match send(&client(&url), &from, to.address(), &id, &format!("n{n}")).await {
                        Ok(answer) => {
                            let written = answer.basis.as_deref() == Some("mailbox_written");
                            stored.push((id.clone(), written));
                            break;
                        }
                        // The router died under this message: the same id again is safe.
                        Err(code) if attempt < 10 => {
                            assert!(
                                ["service_unavailable", "transport"].contains(&code.as_str()),
                                "{code}"
                            );
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Err(code) => panic!("message {n} never accepted: {code}"),
                    }
                }
                progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            stored
        }));
    }
    while progress.load(std::sync::atomic::Ordering::Relaxed) < PAIRS * EACH / 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.router[0].kill9().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.router[0].restart().await;
    let mut results = Vec::new();
    for s in senders {
        results.push(s.await.expect("sender task"));
    }
    for ((_, to), stored) in pairs.iter().zip(results) {
        assert_eq!(stored.len(), EACH);
        // Anything answered `queued` may still be on its way (a redelivery after the ack wait).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let have = loop {
            let have = mailbox_ids(&url, to).await;
            if have.len() >= EACH || tokio::time::Instant::now() > deadline {
                break have;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut sorted_have = have.clone();
        sorted_have.sort();
        let mut sent: Vec<String> = stored.iter().map(|(id, _)| id.clone()).collect();
        sent.sort();
        assert_eq!(
            sorted_have,
            sent,
            "every 2xx exactly once, nothing else\n{}",
            d.logs()
        );
        let written_in_send_order: Vec<&String> = stored
            .iter()
            .filter(|(_, w)| *w)
            .map(|(id, _)| id)
            .collect();
        let written_in_mailbox_order: Vec<&String> = have
            .iter()
            .filter(|id| written_in_send_order.contains(id))
            .collect();
        assert_eq!(
            written_in_mailbox_order, written_in_send_order,
            "mailbox_written answers are in send order"
        );
        assert!(
            written_in_send_order.len() >= EACH / 2,
            "most answers carry the outcome: {}",
            written_in_send_order.len()
        );
    }
}
