//! The JetStream backend against real `nats-server` processes (from `amp-testkit`): the
//! conformance suite, and what only a broker can show: acks survive kill -9, dedup survives a
//! reconnect, replicas on separate connections compete, and ack_wait redelivers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use amp_bus::subjects::ingress_subject;
use amp_bus::testing::conformance;
use amp_bus::{Acceptance, Bus, BusMessage, JetStreamBus, JetStreamConfig, StreamName};
use amp_testkit::NatsServer;
use futures::StreamExt;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// A prefix no other bus in this test binary uses, so each bus has its own empty streams.
fn fresh_prefix() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn config(url: &str, prefix: &str) -> JetStreamConfig {
    JetStreamConfig {
        urls: vec![url.to_owned()],
        ack_wait: Duration::from_secs(5),
        max_deliveries: 3,
        prefix: prefix.to_owned(),
        ..JetStreamConfig::default()
    }
}

async fn connect(config: JetStreamConfig) -> Bus {
    JetStreamBus::connect_bus(config)
        .await
        .expect("connect the JetStream bus")
}

fn message(tenant: &str, id: &str) -> BusMessage {
    BusMessage::new(ingress_subject(tenant), id.to_owned()).with_header("Amp-Id", id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_run_all() {
    let server = NatsServer::start();
    let url = server.url();
    conformance::run_all(|| {
        let config = config(&url, &fresh_prefix());
        async move { connect(config).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_acked_before_kill_9_is_consumed_after_restart() {
    let mut server = NatsServer::start();
    let prefix = fresh_prefix();
    let bus = connect(config(&server.url(), &prefix)).await;
    for i in 0..20 {
        let id = format!("kill-{i}");
        let ack = bus
            .publish(StreamName::Ingress, &id, message("t-kill", &id))
            .await
            .expect("publish");
        assert_eq!(ack.acceptance, Acceptance::Persisted);
    }
    bus.shutdown().await;

    server.kill();
    server.restart();

    let bus = connect(config(&server.url(), &prefix)).await;
    let mut consumer = bus
        .consume(StreamName::Ingress, "router")
        .await
        .expect("consume");
    for i in 0..20 {
        let delivery = timeout(WAIT, consumer.next())
            .await
            .expect("a message acked before the kill")
            .expect("delivery");
        assert_eq!(
            delivery.message().header("Amp-Id"),
            Some(&*format!("kill-{i}"))
        );
        delivery.ack().await.expect("ack");
    }
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_holds_across_a_reconnect() {
    let mut server = NatsServer::start();
    let prefix = fresh_prefix();
    let first = connect(config(&server.url(), &prefix)).await;
    let ack = first
        .publish(StreamName::Ingress, "dup-1", message("t-dup", "dup-1"))
        .await
        .expect("publish");
    assert!(!ack.duplicate);

    // The same bus after the server died and came back (the client reconnects) ...
    let mut gaps = first.hint_gaps().expect("JetStream hints can be lost");
    server.kill();
    server.restart();
    timeout(WAIT, gaps.changed())
        .await
        .expect("a reconnect is reported as a hint gap")
        .expect("the bus is open");
    let again = timeout(WAIT, async {
        loop {
            match first
                .publish(StreamName::Ingress, "dup-1", message("t-dup", "dup-1"))
                .await
            {
                Ok(ack) => return ack,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("republish after reconnect");
    assert!(again.duplicate, "a retry after reconnect was stored twice");

    // ... and a fresh connection (another replica).
    let second = connect(config(&server.url(), &prefix)).await;
    let ack = second
        .publish(StreamName::Ingress, "dup-1", message("t-dup", "dup-1"))
        .await
        .expect("publish");
    assert!(ack.duplicate, "another connection's retry was stored twice");

    let mut consumer = second
        .consume(StreamName::Ingress, "router")
        .await
        .expect("consume");
    let delivery = timeout(WAIT, consumer.next())
        .await
        .expect("the message")
        .expect("delivery");
    delivery.ack().await.expect("ack");
    assert!(
        timeout(Duration::from_millis(500), consumer.next())
            .await
            .is_err(),
        "a duplicate was delivered"
    );
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_separate_connections_compete() {
    const MESSAGES: usize = 200;
    let server = NatsServer::start();
    let prefix = fresh_prefix();
    let replicas = [
        connect(config(&server.url(), &prefix)).await,
        connect(config(&server.url(), &prefix)).await,
    ];
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
    let mut workers = Vec::new();
    for (replica, bus) in replicas.iter().enumerate() {
        let mut consumer = bus
            .consume(StreamName::Ingress, "router")
            .await
            .expect("consume");
        let seen_tx = seen_tx.clone();
        workers.push(tokio::spawn(async move {
            while let Ok(delivery) = consumer.next().await {
                let id = delivery.message().header("Amp-Id").unwrap_or("").to_owned();
                if delivery.ack().await.is_err() || seen_tx.send((replica, id)).is_err() {
                    break;
                }
            }
        }));
    }
    drop(seen_tx);
    let publisher = &replicas[0];
    for i in 0..MESSAGES {
        let id = format!("compete-{i}");
        publisher
            .publish(StreamName::Ingress, &id, message("t-compete", &id))
            .await
            .expect("publish");
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_replica = [0_usize; 2];
    while seen.len() < MESSAGES {
        let (replica, id) = timeout(WAIT, seen_rx.recv())
            .await
            .expect("all messages consumed")
            .expect("workers alive");
        per_replica[replica] += 1;
        *seen.entry(id).or_default() += 1;
    }
    while let Ok(Some((replica, id))) = timeout(Duration::from_millis(500), seen_rx.recv()).await {
        per_replica[replica] += 1;
        *seen.entry(id).or_default() += 1;
    }
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "delivered twice: {repeated:?}");
    assert_eq!(per_replica.iter().sum::<usize>(), MESSAGES);
    assert!(
        per_replica.iter().all(|n| *n > 0),
        "one replica did all the work: {per_replica:?}"
    );
    for bus in &replicas {
        bus.shutdown().await;
    }
    for worker in workers {
        worker.await.expect("worker");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_message_goes_to_the_other_replica_after_ack_wait() {
    let server = NatsServer::start();
    let prefix = fresh_prefix();
    let ack_wait = Duration::from_secs(1);
    let short = |prefix: &str| JetStreamConfig {
        ack_wait,
        ..config(&server.url(), prefix)
    };
    let stalled = connect(short(&prefix)).await;
    let healthy = connect(short(&prefix)).await;
    let mut stalled_consumer = stalled
        .consume(StreamName::Ingress, "router")
        .await
        .expect("consume");
    healthy
        .publish(
            StreamName::Ingress,
            "stall-1",
            message("t-stall", "stall-1"),
        )
        .await
        .expect("publish");
    // The stalled replica takes the message and never settles it (as if SIGSTOPped).
    let held = timeout(WAIT, stalled_consumer.next())
        .await
        .expect("first delivery")
        .expect("delivery");
    assert_eq!(held.attempt(), 1);
    let taken_at = tokio::time::Instant::now();

    let mut healthy_consumer = healthy
        .consume(StreamName::Ingress, "router")
        .await
        .expect("consume");
    let redelivered = timeout(WAIT, healthy_consumer.next())
        .await
        .expect("redelivery to the other replica")
        .expect("delivery");
    assert!(
        taken_at.elapsed() >= ack_wait,
        "redelivered before ack_wait"
    );
    assert_eq!(redelivered.attempt(), 2);
    assert_eq!(redelivered.message().header("Amp-Id"), Some("stall-1"));
    redelivered.ack().await.expect("ack");
    // The stalled replica wakes up and is gone before it settles; nothing comes back.
    stalled.shutdown().await;
    drop(held);
    assert!(
        timeout(Duration::from_secs(2), healthy_consumer.next())
            .await
            .is_err(),
        "an acked message came back"
    );
    healthy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_and_terminated_messages_reach_the_dead_letter_stream() {
    crate::recorder::install();
    let labels = [("stream", "AMP_INGRESS")];
    let before = crate::recorder::counter("amp_bus_dead_letters_total", &labels);
    let server = NatsServer::start();
    let prefix = fresh_prefix();
    let bus = connect(JetStreamConfig {
        ack_wait: Duration::from_millis(500),
        max_deliveries: 2,
        ..config(&server.url(), &prefix)
    })
    .await;
    let mut consumer = bus
        .consume(StreamName::Ingress, "router")
        .await
        .expect("consume");
    bus.publish(
        StreamName::Ingress,
        "dl-timeout",
        message("t-dl", "dl-timeout"),
    )
    .await
    .expect("publish");
    // Both deliveries time out unsettled (the consumer "crashes" each time); the third
    // comes back to the bus, which dead-letters it instead of handing it out.
    let mut held = Vec::new();
    for attempt in 1..=2 {
        let delivery = timeout(WAIT, consumer.next())
            .await
            .expect("delivery")
            .expect("delivery");
        assert_eq!(delivery.attempt(), attempt);
        held.push(delivery);
    }
    bus.publish(StreamName::Ingress, "dl-term", message("t-dl", "dl-term"))
        .await
        .expect("publish");
    let poison = timeout(WAIT, consumer.next())
        .await
        .expect("delivery")
        .expect("delivery");
    assert_eq!(poison.message().header("Amp-Id"), Some("dl-term"));
    poison.term("bad signature").await.expect("term");
    // The bus dead-letters the timed-out message on its third delivery while pulling; it is
    // never handed out.
    assert!(
        timeout(Duration::from_secs(2), consumer.next())
            .await
            .is_err(),
        "a message past max_deliveries was handed out"
    );

    // Read the dead-letter stream directly.
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(format!("{prefix}_AMP_DEAD_LETTER"))
        .await
        .expect("dead-letter stream");
    let dlq = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            ..Default::default()
        })
        .await
        .expect("dlq consumer");
    let mut reasons = BTreeMap::new();
    let mut messages = dlq
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(3))
        .messages()
        .await
        .expect("fetch");
    let deadline = tokio::time::Instant::now() + WAIT;
    while reasons.len() < 2 && tokio::time::Instant::now() < deadline {
        match timeout(WAIT, messages.next()).await {
            Ok(Some(Ok(m))) => {
                let headers = m.headers.clone().unwrap_or_default();
                assert_eq!(m.subject.as_str(), format!("{prefix}.amp.dlq.ingress.t-dl"));
                let id = headers
                    .get("Amp-Id")
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                let reason = headers
                    .get("Amp-Dead-Letter-Reason")
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                reasons.insert(id, reason);
            }
            _ => {
                messages = dlq
                    .fetch()
                    .max_messages(10)
                    .expires(Duration::from_secs(3))
                    .messages()
                    .await
                    .expect("fetch");
            }
        }
    }
    assert!(
        reasons.get("dl-term").is_some_and(|r| r == "bad signature"),
        "{reasons:?}"
    );
    assert!(
        reasons
            .get("dl-timeout")
            .is_some_and(|r| r.contains("2 deliveries")),
        "{reasons:?}"
    );
    // Other tests dead-letter on AMP_INGRESS concurrently, hence at least.
    let after = crate::recorder::counter("amp_bus_dead_letters_total", &labels);
    assert!(after - before >= 2, "dead letters not counted");
    // Nothing is left in the work queue.
    assert_ingress_drains(&js, &prefix, "dead letters left in the work queue").await;
    bus.shutdown().await;
    drop(held);
}

/// A partitioned ingress: messages spread over every partition stream, each one delivered
/// once with its subject as published, one mailbox's messages in publish order on one
/// partition, the conformance suite holds, and lowering the partition count drains what
/// the higher partitions still hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_ingress_spreads_delivers_and_drains() {
    use amp_bus::subjects::mailbox_ingress_subject;
    let server = NatsServer::start();
    let url = server.url();
    conformance::run_all(|| {
        let config = JetStreamConfig {
            ingress_partitions: 3,
            ..config(&url, &fresh_prefix())
        };
        async move { connect(config).await }
    })
    .await;

    let prefix = fresh_prefix();
    let four = JetStreamConfig {
        ingress_partitions: 4,
        ..config(&url, &prefix)
    };
    let bus = connect(four).await;
    const MAILBOXES: usize = 40;
    const EACH: usize = 5;
    for n in 0..EACH {
        for m in 0..MAILBOXES {
            let id = format!("m{m}-{n}");
            let msg = BusMessage::new(
                mailbox_ingress_subject("acme", &format!("agent-{m}")),
                id.clone(),
            )
            .with_header("Amp-Id", id.as_str());
            bus.publish(StreamName::Ingress, &id, msg)
                .await
                .expect("publish");
        }
    }
    // Every partition stream holds some of them.
    let client = async_nats::connect(url.as_str()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    for k in 0..4 {
        let name = if k == 0 {
            format!("{prefix}_AMP_INGRESS")
        } else {
            format!("{prefix}_AMP_INGRESS_{k}")
        };
        let mut stream = js.get_stream(&name).await.expect("partition stream");
        let info = stream.info().await.expect("stream info");
        assert!(info.state.messages > 0, "{name} is empty");
    }
    // A consumer of a bus configured with ONE partition still gets everything (drain).
    let one = connect(config(&url, &prefix)).await;
    let mut consumer = one
        .consume(StreamName::Ingress, "router")
        .await
        .expect("consume");
    let mut per_mailbox: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..MAILBOXES * EACH {
        let delivery = timeout(WAIT, consumer.next())
            .await
            .expect("a message within the wait")
            .expect("delivery");
        let subject = delivery.message().subject.clone();
        assert!(subject.starts_with("amp.ingress.acme.agent-"), "{subject}");
        let id = delivery.message().header("Amp-Id").unwrap_or("").to_owned();
        per_mailbox.entry(subject).or_default().push(id);
        delivery.ack().await.expect("ack");
    }
    assert_eq!(per_mailbox.len(), MAILBOXES);
    for (subject, ids) in &per_mailbox {
        let m = subject.rsplit('-').next().unwrap_or_default();
        let expected: Vec<String> = (0..EACH).map(|n| format!("m{m}-{n}")).collect();
        assert_eq!(ids, &expected, "{subject}: one mailbox, in publish order");
    }
    assert!(
        timeout(Duration::from_millis(500), consumer.next())
            .await
            .is_err(),
        "nothing more"
    );
    bus.shutdown().await;
    one.shutdown().await;
}

/// One consumer per shard of a partitioned ingress: `shards` counts the partitions, and the
/// consumer of shard k takes exactly the messages of partition k; together they take all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_ingress_one_consumer_per_shard() {
    use amp_bus::subjects::mailbox_ingress_subject;
    let server = NatsServer::start();
    let config = JetStreamConfig {
        ingress_partitions: 3,
        ..config(&server.url(), &fresh_prefix())
    };
    let bus = connect(config).await;
    assert_eq!(bus.shards(StreamName::Ingress).await.expect("shards"), 3);
    assert_eq!(bus.shards(StreamName::Federation).await.expect("shards"), 1);
    const N: usize = 60;
    for m in 0..N {
        let id = format!("s{m}");
        let msg = BusMessage::new(
            mailbox_ingress_subject("acme", &format!("agent-{m}")),
            id.clone(),
        )
        .with_header("Amp-Id", id.as_str());
        bus.publish(StreamName::Ingress, &id, msg)
            .await
            .expect("publish");
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_shard = [0usize; 3];
    for (k, count) in per_shard.iter_mut().enumerate() {
        let mut consumer = bus
            .consume_shard(StreamName::Ingress, "router", k)
            .await
            .expect("consume a shard");
        while let Ok(next) = timeout(Duration::from_millis(700), consumer.next()).await {
            let delivery = next.expect("delivery");
            let id = delivery.message().header("Amp-Id").unwrap_or("").to_owned();
            *seen.entry(id).or_default() += 1;
            *count += 1;
            delivery.ack().await.expect("ack");
        }
    }
    assert_eq!(seen.len(), N, "every message, once: {per_shard:?}");
    assert!(seen.values().all(|n| *n == 1));
    assert!(per_shard.iter().all(|n| *n > 0), "spread: {per_shard:?}");
    bus.shutdown().await;
}

/// Fails with `why` unless the ingress work queue under `prefix` is empty within [`WAIT`].
async fn assert_ingress_drains(js: &async_nats::jetstream::Context, prefix: &str, why: &str) {
    let mut ingress = js
        .get_stream(format!("{prefix}_AMP_INGRESS"))
        .await
        .expect("ingress");
    let left = timeout(WAIT, async {
        loop {
            let n = ingress.info().await.expect("info").state.messages;
            if n == 0 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(left.ok(), Some(0), "{why}");
}

/// Publishes `n` ingress messages without a dedup id at once (so they are packed), each
/// with its own `Amp-Id` header, and returns the stream's last sequence afterwards.
async fn publish_packed(bus: &Bus, server: &NatsServer, prefix: &str, n: usize) -> u64 {
    let sends = (0..n).map(|i| {
        let bus = bus.clone();
        async move {
            let id = format!("p-{i}");
            let msg = BusMessage::new(ingress_subject("t-pack"), id.clone())
                .with_header("Amp-Id", &id)
                .with_header("traceparent", format!("00-{i:032x}-{i:016x}-01"));
            bus.publish(StreamName::Ingress, "", msg).await
        }
    });
    for ack in futures::future::join_all(sends).await {
        let ack = ack.expect("packed publish");
        assert_eq!(ack.acceptance, Acceptance::Persisted);
        assert!(!ack.duplicate);
    }
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(format!("{prefix}_AMP_INGRESS"))
        .await
        .expect("ingress");
    stream.info().await.expect("info").state.last_sequence
}

/// Ingress publishes without a dedup id, made at once, share stream messages (packs): far
/// fewer stream messages than publishes, and each publish is delivered once, as its own
/// delivery, with its own subject, headers and payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_publishes_share_stream_messages_and_arrive_one_by_one() {
    const N: usize = 200;
    let server = NatsServer::start();
    let prefix = fresh_prefix();
    let bus = connect(config(&server.url(), &prefix)).await;
    let stored = publish_packed(&bus, &server, &prefix, N).await;
    assert!(
        stored <= (N / 4) as u64,
        "{N} concurrent publishes took {stored} stream messages"
    );
    let mut consumer = bus
        .consume(StreamName::Ingress, "router")
        .await
        .expect("consume");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..N {
        let d = timeout(WAIT, consumer.next())
            .await
            .expect("a member")
            .expect("delivery");
        let id = d.message().header("Amp-Id").expect("Amp-Id").to_owned();
        let n: usize = id.trim_start_matches("p-").parse().expect("number");
        assert_eq!(d.message().subject, ingress_subject("t-pack"));
        assert_eq!(d.message().payload.as_ref(), id.as_bytes());
        assert_eq!(
            d.message().header("traceparent"),
            Some(&*format!("00-{n:032x}-{n:016x}-01"))
        );
        assert_eq!(d.attempt(), 1);
        assert!(seen.insert(id), "a member delivered twice");
        d.ack().await.expect("ack");
    }
    assert!(
        timeout(Duration::from_secs(1), consumer.next())
            .await
            .is_err(),
        "more deliveries than publishes"
    );
    bus.shutdown().await;
}

/// A pack is settled by its last member: a nak of one member brings every member back (the
/// consumer is idempotent); once all are acked nothing comes back; a member that is
/// terminated is dead-lettered alone, under its own subject and headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packs_members_settle_together_and_dead_letter_alone() {
    const N: usize = 40;
    let server = NatsServer::start();
    let prefix = fresh_prefix();
    let bus = connect(config(&server.url(), &prefix)).await;
    let stored = publish_packed(&bus, &server, &prefix, N).await;
    assert!(stored < N as u64, "nothing was packed");
    let mut consumer = bus
        .consume(StreamName::Ingress, "router")
        .await
        .expect("consume");
    // First round: nak p-7, term p-9, ack the rest. Second round: the pack that held p-7
    // comes back whole (its other members were acked or dead-lettered, and come back too: at
    // least once per member), attempt 2. The nak has no delay, so on a loaded machine the
    // redelivery can overtake the first round's last members: both rounds are read from
    // the one stream, told apart by their attempt.
    let mut again = Vec::new();
    let redelivered = |d: amp_bus::Delivery, again: &mut Vec<String>| {
        assert_eq!(d.attempt(), 2);
        let id = d.message().header("Amp-Id").expect("Amp-Id").to_owned();
        assert!(!again.contains(&id), "{id} twice in one redelivery");
        again.push(id);
        d
    };
    let mut first = 0;
    while first < N {
        let d = timeout(WAIT, consumer.next())
            .await
            .expect("a member")
            .expect("delivery");
        if d.attempt() > 1 {
            redelivered(d, &mut again).ack().await.expect("ack");
            continue;
        }
        first += 1;
        match d.message().header("Amp-Id") {
            Some("p-7") => d.nak(Duration::ZERO).await.expect("nak"),
            Some("p-9") => d.term("poison member").await.expect("term"),
            _ => d.ack().await.expect("ack"),
        }
    }
    while let Ok(d) = timeout(Duration::from_secs(2), consumer.next()).await {
        let d = d.expect("delivery");
        redelivered(d, &mut again).ack().await.expect("ack");
    }
    assert!(
        again.contains(&"p-7".to_owned()),
        "the nak'ed member came back: {again:?}"
    );
    // After everything was acked the work queue is empty.
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    assert_ingress_drains(&js, &prefix, "settled packs left in the work queue").await;
    // The dead letter is p-9 alone, as published.
    let dlq = js
        .get_stream(format!("{prefix}_AMP_DEAD_LETTER"))
        .await
        .expect("dead-letter stream")
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .expect("dlq consumer");
    let mut letters = dlq
        .fetch()
        .max_messages(10)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch");
    let mut found = Vec::new();
    while let Ok(Some(Ok(m))) = timeout(WAIT, letters.next()).await {
        let h = m.headers.clone().unwrap_or_default();
        found.push((
            m.subject.to_string(),
            h.get("Amp-Id").map(|v| v.to_string()),
            h.get("Amp-Dead-Letter-Reason").map(|v| v.to_string()),
            String::from_utf8_lossy(&m.payload).into_owned(),
        ));
    }
    let p9 = found
        .iter()
        .find(|f| f.1.as_deref() == Some("p-9"))
        .unwrap_or_else(|| panic!("p-9 not dead-lettered: {found:?}"));
    assert_eq!(p9.0, format!("{prefix}.amp.dlq.ingress.t-pack"));
    assert_eq!(p9.2.as_deref(), Some("poison member"));
    assert_eq!(p9.3, "p-9");
    assert!(
        found.iter().all(|f| f.1.as_deref() == Some("p-9")),
        "only p-9 is a dead letter: {found:?}"
    );
    bus.shutdown().await;
}

/// The ingress stream's message count under `prefix`.
async fn ingress_messages(js: &async_nats::jetstream::Context, prefix: &str) -> u64 {
    let mut ingress = js
        .get_stream(format!("{prefix}_AMP_INGRESS"))
        .await
        .expect("ingress");
    ingress.info().await.expect("info").state.messages
}

/// The ingress stream is kept by limits and purged below its consumers' ack floor: settled
/// messages go within a few purge intervals; an unsettled one, and everything after it,
/// stays (and is delivered again after `ack_wait`); a second consumer that has settled
/// nothing holds everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_is_purged_below_the_lowest_ack_floor_only() {
    let server = NatsServer::start();
    let prefix = fresh_prefix();
    let bus = connect(JetStreamConfig {
        ack_wait: Duration::from_secs(3),
        ..config(&server.url(), &prefix)
    })
    .await;
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(format!("{prefix}_AMP_INGRESS"))
        .await
        .expect("ingress");
    assert_eq!(
        stream.info().await.expect("info").config.retention,
        async_nats::jetstream::stream::RetentionPolicy::Limits
    );
    for i in 0..10 {
        let id = format!("pg-{i}");
        bus.publish(StreamName::Ingress, &id, message("t-purge", &id))
            .await
            .expect("publish");
    }
    let mut consumer = bus
        .consume(StreamName::Ingress, "router")
        .await
        .expect("consume");
    // Settle the first four; hold the fifth; settle the rest.
    let mut held = None;
    for i in 0..10 {
        let delivery = timeout(WAIT, consumer.next())
            .await
            .expect("a message within the wait")
            .expect("delivery");
        assert_eq!(
            delivery.message().header("Amp-Id"),
            Some(format!("pg-{i}").as_str())
        );
        if i == 4 {
            held = Some(delivery);
        } else {
            delivery.ack().await.expect("ack");
        }
    }
    // The first four go; pg-4 and after stay while pg-4 is unsettled.
    let left = timeout(WAIT, async {
        loop {
            let n = ingress_messages(&js, &prefix).await;
            if n <= 6 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(left.ok(), Some(6), "the settled head is purged");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        ingress_messages(&js, &prefix).await,
        6,
        "nothing from the unsettled message on is purged"
    );
    // Dropped unsettled: it comes back (the bus naks a dropped delivery), then is settled.
    drop(held);
    let again = timeout(WAIT, consumer.next())
        .await
        .expect("redelivered within the wait")
        .expect("delivery");
    assert_eq!(again.message().header("Amp-Id"), Some("pg-4"));
    again.ack().await.expect("ack");
    assert_ingress_drains(&js, &prefix, "everything settled is purged").await;

    // A second consumer name (allowed on a limits stream) that has settled nothing holds
    // every new message, even when the first settles them.
    let mut lazy = bus
        .consume(StreamName::Ingress, "audit")
        .await
        .expect("a second consumer");
    for i in 0..3 {
        let id = format!("pg2-{i}");
        bus.publish(StreamName::Ingress, &id, message("t-purge", &id))
            .await
            .expect("publish");
    }
    for _ in 0..3 {
        let delivery = timeout(WAIT, consumer.next())
            .await
            .expect("a message within the wait")
            .expect("delivery");
        delivery.ack().await.expect("ack");
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        ingress_messages(&js, &prefix).await,
        3,
        "held by the consumer that settled nothing"
    );
    for _ in 0..3 {
        let delivery = timeout(WAIT, lazy.next())
            .await
            .expect("a message within the wait")
            .expect("delivery");
        delivery.ack().await.expect("ack");
    }
    assert_ingress_drains(&js, &prefix, "purged once both settled").await;
    bus.shutdown().await;
}

/// An ingress stream made as a work queue (by an earlier version) is kept as one: the bus
/// starts on it, messages flow, and acks remove them as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingress_work_queue_from_an_earlier_version_is_kept() {
    use async_nats::jetstream::stream;
    let server = NatsServer::start();
    let prefix = fresh_prefix();
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    js.create_stream(stream::Config {
        name: format!("{prefix}_AMP_INGRESS"),
        subjects: vec![format!("{prefix}.amp.ingress.>")],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("an old work queue");
    let bus = connect(config(&server.url(), &prefix)).await;
    let mut old = js
        .get_stream(format!("{prefix}_AMP_INGRESS"))
        .await
        .expect("ingress");
    let info = old.info().await.expect("info");
    assert_eq!(info.config.retention, stream::RetentionPolicy::WorkQueue);
    assert!(info.config.allow_atomic_publish, "the rest was updated");
    for i in 0..5 {
        let id = format!("wq-{i}");
        bus.publish(StreamName::Ingress, &id, message("t-wq", &id))
            .await
            .expect("publish");
    }
    let mut consumer = bus
        .consume(StreamName::Ingress, "router")
        .await
        .expect("consume");
    for _ in 0..5 {
        let delivery = timeout(WAIT, consumer.next())
            .await
            .expect("a message within the wait")
            .expect("delivery");
        delivery.ack().await.expect("ack");
    }
    assert_ingress_drains(&js, &prefix, "acks remove the work queue's messages").await;
    bus.shutdown().await;
}
