//! Semantics of the in-process backend beyond the shared contract: publish waits for the
//! consumer's ack and carries its reply, times out, remembers dedup ids for a bounded time,
//! dead-letters loudly, and shuts down cleanly.

use std::time::Duration;

use amp_bus::subjects::{ingress_subject, notify_subject};
use amp_bus::{
    Acceptance, Bus, BusMessage, Error, InProcessBus, InProcessConfig, PublishAck, Result,
    StreamName,
};
use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

const CONSUMER: &str = "router";

fn config() -> InProcessConfig {
    InProcessConfig {
        dedup_window: Duration::from_secs(60),
        max_deliveries: 3,
        publish_timeout: Duration::from_secs(5),
        notify_buffer: 4,
    }
}

fn buses(config: InProcessConfig) -> (InProcessBus, Bus) {
    let backend = InProcessBus::new(config);
    (backend.clone(), Bus::new(backend))
}

fn message(tenant: &str, payload: &'static str) -> BusMessage {
    BusMessage::new(
        ingress_subject(tenant),
        Bytes::from_static(payload.as_bytes()),
    )
}

fn spawn_publish(bus: &Bus, dedup_id: &str, msg: BusMessage) -> JoinHandle<Result<PublishAck>> {
    let bus = bus.clone();
    let dedup_id = dedup_id.to_owned();
    tokio::spawn(async move { bus.publish(StreamName::Ingress, &dedup_id, msg).await })
}

async fn settle_tasks() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[test]
fn defaults_match_the_contract() {
    let config = InProcessConfig::default();
    assert_eq!(config.dedup_window, Duration::from_secs(120));
    assert_eq!(config.max_deliveries, 8);
    assert_eq!(config.publish_timeout, Duration::from_secs(10));
    assert_eq!(StreamName::Ingress.as_str(), "AMP_INGRESS");
    assert_eq!(StreamName::Federation.to_string(), "AMP_FEDERATION");
}

#[tokio::test(start_paused = true)]
async fn publish_waits_for_ack_and_carries_reply() {
    let (_, bus) = buses(config());
    let mut consumer = bus
        .consume(StreamName::Ingress, CONSUMER)
        .await
        .expect("consume");
    let publish = spawn_publish(&bus, "wait-1", message("t-wait", "m"));
    let delivery = consumer.next().await.expect("delivery");

    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!publish.is_finished(), "publish returned before the ack");

    delivery
        .ack_with(Bytes::from_static(b"stored"))
        .await
        .expect("ack");
    let ack = publish.await.expect("join").expect("publish");
    assert_eq!(
        ack,
        PublishAck {
            duplicate: false,
            acceptance: Acceptance::Processed,
            reply: Some(Bytes::from_static(b"stored")),
        }
    );
}

#[tokio::test(start_paused = true)]
async fn messages_wait_for_a_consumer_in_fifo_order() {
    let (backend, bus) = buses(config());
    let publishes: Vec<_> = ["1", "2", "3"]
        .into_iter()
        .map(|id| spawn_publish(&bus, id, message("t-fifo", "m").with_header("Seq", id)))
        .collect();
    settle_tasks().await;
    assert_eq!(backend.queued(StreamName::Ingress), 3);

    let mut consumer = bus
        .consume(StreamName::Ingress, CONSUMER)
        .await
        .expect("consume");
    for expected in ["1", "2", "3"] {
        let delivery = consumer.next().await.expect("delivery");
        assert_eq!(delivery.message().header("seq"), Some(expected));
        delivery.ack().await.expect("ack");
    }
    for publish in publishes {
        publish.await.expect("join").expect("publish");
    }
}

#[tokio::test(start_paused = true)]
async fn publish_times_out_but_the_message_is_kept() {
    let (backend, bus) = buses(config());
    let started = Instant::now();
    let result = bus
        .publish(StreamName::Ingress, "slow-1", message("t-timeout", "m"))
        .await;
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert_eq!(started.elapsed(), config().publish_timeout);
    assert_eq!(backend.queued(StreamName::Ingress), 1);

    // A retry of the same publish waits for the same message instead of enqueuing another.
    let retry = spawn_publish(&bus, "slow-1", message("t-timeout", "m"));
    let mut consumer = bus
        .consume(StreamName::Ingress, CONSUMER)
        .await
        .expect("consume");
    let delivery = consumer.next().await.expect("delivery");
    assert_eq!(delivery.attempt(), 1);
    delivery
        .ack_with(Bytes::from_static(b"late"))
        .await
        .expect("ack");
    let ack = retry.await.expect("join").expect("retry");
    assert!(ack.duplicate);
    assert_eq!(ack.reply, Some(Bytes::from_static(b"late")));
    assert_eq!(backend.queued(StreamName::Ingress), 0);
}

#[tokio::test(start_paused = true)]
async fn duplicate_of_a_dead_letter_is_dead_lettered() {
    let (_, bus) = buses(config());
    let mut consumer = bus
        .consume(StreamName::Ingress, CONSUMER)
        .await
        .expect("consume");
    let publish = spawn_publish(&bus, "poison-1", message("t-dup-dlq", "m"));
    consumer
        .next()
        .await
        .expect("delivery")
        .term("bad signature")
        .await
        .expect("term");
    let first = publish.await.expect("join");
    assert!(
        matches!(&first, Err(Error::DeadLettered(r)) if r == "bad signature"),
        "{first:?}"
    );
    let again = bus
        .publish(StreamName::Ingress, "poison-1", message("t-dup-dlq", "m"))
        .await;
    assert!(matches!(again, Err(Error::DeadLettered(_))), "{again:?}");
}

#[tokio::test(start_paused = true)]
async fn dedup_ids_expire_after_the_window_and_are_pruned() {
    let (backend, bus) = buses(config());
    let mut consumer = bus
        .consume(StreamName::Ingress, CONSUMER)
        .await
        .expect("consume");
    let worker = tokio::spawn(async move {
        let mut delivered = 0;
        while let Ok(delivery) = consumer.next().await {
            delivered += 1;
            delivery.ack().await.expect("ack");
        }
        delivered
    });

    for i in 0..10 {
        let ack = bus
            .publish(
                StreamName::Ingress,
                &format!("win-{i}"),
                message("t-window", "m"),
            )
            .await
            .expect("publish");
        assert!(!ack.duplicate);
    }
    assert_eq!(backend.remembered_dedup_ids(StreamName::Ingress), 10);
    let ack = bus
        .publish(StreamName::Ingress, "win-0", message("t-window", "m"))
        .await
        .expect("publish");
    assert!(ack.duplicate, "within the window");

    tokio::time::advance(config().dedup_window).await;
    assert_eq!(
        backend.remembered_dedup_ids(StreamName::Ingress),
        0,
        "not pruned"
    );
    let ack = bus
        .publish(StreamName::Ingress, "win-0", message("t-window", "m"))
        .await
        .expect("publish");
    assert!(!ack.duplicate, "after the window the id is new again");

    // An empty dedup id opts out of dedup.
    for _ in 0..2 {
        let ack = bus
            .publish(StreamName::Ingress, "", message("t-window", "m"))
            .await
            .expect("publish");
        assert!(!ack.duplicate);
    }

    bus.shutdown().await;
    assert_eq!(worker.await.expect("join"), 13);
}

#[tokio::test(start_paused = true)]
async fn delayed_nak_does_not_block_the_queue() {
    let (_, bus) = buses(config());
    let mut consumer = bus
        .consume(StreamName::Ingress, CONSUMER)
        .await
        .expect("consume");
    let first = spawn_publish(&bus, "nak-a", message("t-nak", "a"));
    let delivery = consumer.next().await.expect("delivery");
    let naked_at = Instant::now();
    delivery.nak(Duration::from_secs(30)).await.expect("nak");

    let second = spawn_publish(&bus, "nak-b", message("t-nak", "b"));
    let delivery = consumer.next().await.expect("delivery");
    assert_eq!(delivery.message().payload, "b");
    assert_eq!(naked_at.elapsed(), Duration::ZERO);
    delivery.ack().await.expect("ack");
    second.await.expect("join").expect("publish");

    let delivery = consumer.next().await.expect("redelivery");
    assert_eq!(delivery.message().payload, "a");
    assert_eq!(delivery.attempt(), 2);
    assert_eq!(naked_at.elapsed(), Duration::from_secs(30));
    delivery.ack().await.expect("ack");
    // The publisher gave up long ago; the message was processed anyway.
    assert!(matches!(first.await.expect("join"), Err(Error::Timeout)));
}

#[tokio::test(start_paused = true)]
async fn drops_count_towards_max_deliveries() {
    let (_, bus) = buses(config());
    let mut consumer = bus
        .consume(StreamName::Ingress, CONSUMER)
        .await
        .expect("consume");
    let publish = spawn_publish(&bus, "drop-1", message("t-drop", "m"));
    for attempt in 1..=config().max_deliveries {
        let delivery = consumer.next().await.expect("delivery");
        assert_eq!(delivery.attempt(), attempt);
        drop(delivery);
    }
    let result = publish.await.expect("join");
    assert!(matches!(result, Err(Error::DeadLettered(_))), "{result:?}");
}

#[tokio::test(start_paused = true)]
async fn dead_letters_increment_the_counter() {
    crate::recorder::install();
    let labels = [("stream", "AMP_FEDERATION")];
    let before = crate::recorder::counter("amp_bus_dead_letters_total", &labels);

    let (_, bus) = buses(config());
    let mut consumer = bus
        .consume(StreamName::Federation, CONSUMER)
        .await
        .expect("consume");
    let bus2 = bus.clone();
    let publish = tokio::spawn(async move {
        bus2.publish(StreamName::Federation, "fed-1", message("t-metric", "m"))
            .await
    });
    consumer
        .next()
        .await
        .expect("delivery")
        .term("unroutable")
        .await
        .expect("term");
    assert!(matches!(
        publish.await.expect("join"),
        Err(Error::DeadLettered(_))
    ));

    let after = crate::recorder::counter("amp_bus_dead_letters_total", &labels);
    assert_eq!(after - before, 1);
}

#[tokio::test(start_paused = true)]
async fn a_work_queue_has_one_consumer_name() {
    let (_, bus) = buses(config());
    let _router = bus
        .consume(StreamName::Ingress, "router")
        .await
        .expect("consume");
    let _same = bus
        .consume(StreamName::Ingress, "router")
        .await
        .expect("same name shares");
    assert!(matches!(
        bus.consume(StreamName::Ingress, "other").await,
        Err(Error::Backend(_))
    ));
    assert!(bus.consume(StreamName::Federation, "other").await.is_ok());
    assert!(bus.consume(StreamName::Federation, "").await.is_err());
}

#[tokio::test(start_paused = true)]
async fn cancelled_next_loses_nothing() {
    let (_, bus) = buses(config());
    let mut first = bus
        .consume(StreamName::Ingress, CONSUMER)
        .await
        .expect("consume");
    let mut second = bus
        .consume(StreamName::Ingress, CONSUMER)
        .await
        .expect("consume");
    assert!(timeout(Duration::from_secs(1), first.next()).await.is_err());

    // `first` waits (first in line), then `second` waits too.
    let mut first_next = first.next();
    assert!(timeout(Duration::ZERO, &mut first_next).await.is_err());
    let second_next = tokio::spawn(async move { second.next().await.map(|d| d.attempt()) });
    settle_tasks().await;

    // The message wakes `first`, which is cancelled before it looks: `second` must get it.
    let publish = spawn_publish(&bus, "cancel-1", message("t-cancel", "m"));
    settle_tasks().await;
    drop(first_next);
    let attempt = timeout(Duration::from_secs(1), second_next)
        .await
        .expect("the wake-up was lost")
        .expect("join")
        .expect("delivery");
    assert_eq!(attempt, 1);
    // `second`'s delivery was dropped in its task, so the message is redelivered.
    let delivery = first.next().await.expect("redelivery");
    assert_eq!(delivery.attempt(), 2);
    delivery.ack().await.expect("ack");
    publish.await.expect("join").expect("publish");
}

#[tokio::test(start_paused = true)]
async fn shutdown_fails_settlement_of_held_deliveries() {
    let (backend, bus) = buses(config());
    let mut consumer = bus
        .consume(StreamName::Ingress, CONSUMER)
        .await
        .expect("consume");
    let publish = spawn_publish(&bus, "held-1", message("t-held", "m"));
    let held = consumer.next().await.expect("delivery");
    let queued = spawn_publish(&bus, "held-2", message("t-held", "m"));
    settle_tasks().await;
    assert_eq!(backend.queued(StreamName::Ingress), 1);

    bus.shutdown().await;
    assert!(matches!(publish.await.expect("join"), Err(Error::Closed)));
    assert!(matches!(queued.await.expect("join"), Err(Error::Closed)));
    assert!(matches!(held.ack().await, Err(Error::Closed)));
    assert_eq!(backend.queued(StreamName::Ingress), 0);
    assert!(matches!(consumer.next().await, Err(Error::Closed)));
    assert!(matches!(
        bus.notify(&notify_subject("t", "a"), Bytes::new()).await,
        Err(Error::Closed)
    ));
    assert_eq!(backend.subscriptions(), 0);
}

#[tokio::test(start_paused = true)]
async fn slow_subscriber_loses_hints_without_blocking() {
    let (_, bus) = buses(config());
    let subject = notify_subject("t-slow", "agent");
    let mut slow = bus.subscribe(&subject).await.expect("subscribe");
    for i in 0..(config().notify_buffer * 3) {
        bus.notify(&subject, Bytes::from(i.to_string()))
            .await
            .expect("notify never blocks");
    }
    for i in 0..config().notify_buffer {
        let msg = slow.next().await.expect("buffered hint");
        assert_eq!(msg.payload, Bytes::from(i.to_string()));
    }
    bus.notify(&subject, Bytes::from_static(b"later"))
        .await
        .expect("notify");
    assert_eq!(slow.next().await.expect("hint").payload, "later");
}

#[tokio::test(start_paused = true)]
async fn subscriptions_are_removed_on_drop() {
    let (backend, bus) = buses(config());
    let exact = bus.subscribe("amp.notify.t.a").await.expect("subscribe");
    let exact2 = bus.subscribe("amp.notify.t.a").await.expect("subscribe");
    let wild = bus.subscribe("amp.notify.>").await.expect("subscribe");
    assert_eq!(backend.subscriptions(), 3);
    drop(exact);
    assert_eq!(backend.subscriptions(), 2);
    drop(wild);
    assert_eq!(backend.subscriptions(), 1);
    drop(exact2);
    assert_eq!(backend.subscriptions(), 0);
}
