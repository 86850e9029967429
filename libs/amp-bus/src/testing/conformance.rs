//! The conformance suite: the bus contract, checked against any backend.
//!
//! Every backend's tests call [`run_all`] with a factory that returns a fresh [`Bus`] with
//! empty streams and a `max_deliveries` of at least 3; the single checks are public too, so a
//! backend can run them one by one. The assertions are about the contract only; where
//! backends legitimately differ they branch on [`Acceptance`]: an in-process bus answers a
//! publish after the consumer's ack ([`Acceptance::Processed`], carrying the ack's reply), a
//! broker after storing ([`Acceptance::Persisted`]). A publish may only claim `Processed` if
//! it returned after the ack.
//!
//! Waits for something that must happen are bounded by [`WAIT`]; "nothing more arrives" is
//! checked by [`QUIET`] of silence. Under tokio's paused clock both cost no wall time.
//! Failures panic, like any test assertion.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use crate::subjects::{ingress_subject, notify_subject};
use crate::{
    Acceptance, Bus, BusMessage, Consumer, Delivery, Error, PublishAck, Result, StreamName,
    Subscription,
};

/// The longest the suite waits for something that must happen.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long nothing must arrive for the suite to conclude nothing will.
pub const QUIET: Duration = Duration::from_millis(500);
/// The nak delay the suite uses.
pub const NAK_DELAY: Duration = Duration::from_millis(200);
/// The consumer name the suite uses on every stream.
pub const CONSUMER: &str = "conformance";

/// Runs every check, each on a fresh bus from `factory`, shutting each bus down afterwards.
pub async fn run_all<F, Fut>(factory: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Bus>,
{
    macro_rules! run {
        ($($check:ident),* $(,)?) => {$(
            tracing::info!(check = stringify!($check), "bus conformance check");
            let bus = factory().await;
            $check(bus.clone()).await;
            bus.shutdown().await;
        )*};
    }
    run!(
        publish_consume_ack,
        publish_for_reply_outcome,
        streams_are_independent,
        dedup_within_window,
        nak_redelivers_with_attempt_count,
        drop_redelivers,
        competing_consumers_each_message_once,
        dead_letter_after_max_deliveries,
        term_dead_letters,
        notify_fans_out_to_all_subscribers,
        trace_context_round_trips,
        wildcard_subscriptions,
        unsubscribed_on_drop,
        invalid_subjects_rejected,
        shutdown_closes_everything,
    );
}

/// A published message is delivered once with its subject, headers and payload; after the ack
/// it is never redelivered; the publish reports the ack's reply when `Processed`.
pub async fn publish_consume_ack(bus: Bus) {
    let mut consumer = consume(&bus, StreamName::Ingress).await;
    let msg = BusMessage::new(ingress_subject("conf-basic"), "hello")
        .with_header("Amp-Id", "conf-basic-1")
        .with_header("X-Repeat", "a")
        .with_header("X-Repeat", "b");
    let publish = spawn_publish(&bus, StreamName::Ingress, "conf-basic-1", msg.clone());

    let delivery = next_delivery(&mut consumer, "the published message").await;
    assert_eq!(delivery.message(), &msg, "delivered message differs");
    assert_eq!(delivery.attempt(), 1, "first delivery must be attempt 1");
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let early = if publish.is_finished() {
        let ack = join_publish(publish).await.expect("publish failed");
        assert_eq!(
            ack.acceptance,
            Acceptance::Persisted,
            "publish returned before the ack, so it cannot claim Processed"
        );
        None
    } else {
        Some(publish)
    };
    delivery
        .ack_with(Bytes::from_static(b"committed"))
        .await
        .expect("ack failed");
    if let Some(publish) = early {
        let ack = join_publish(publish).await.expect("publish failed");
        check_accepted(&ack, false, Some(b"committed"));
    }

    // A plain ack gives no reply.
    let msg2 = BusMessage::new(ingress_subject("conf-basic"), "second");
    let publish = spawn_publish(&bus, StreamName::Ingress, "conf-basic-2", msg2.clone());
    let delivery = next_delivery(&mut consumer, "the second message").await;
    assert_eq!(delivery.message(), &msg2);
    delivery.ack().await.expect("ack failed");
    let ack = join_publish(publish).await.expect("publish failed");
    check_accepted(&ack, false, None);

    assert_quiet(&mut consumer, "acked messages must not be redelivered").await;
}

/// A message published to one stream never reaches the other stream's consumers.
pub async fn streams_are_independent(bus: Bus) {
    let mut ingress = consume(&bus, StreamName::Ingress).await;
    let mut federation = consume(&bus, StreamName::Federation).await;
    let msg = BusMessage::new(crate::subjects::federation_subject("conf-streams"), "out");
    let publish = spawn_publish(&bus, StreamName::Federation, "conf-streams-1", msg.clone());
    let delivery = next_delivery(&mut federation, "the federation message").await;
    assert_eq!(delivery.message(), &msg);
    delivery.ack().await.expect("ack failed");
    join_publish(publish).await.expect("publish failed");
    assert_quiet(&mut ingress, "ingress must not see federation messages").await;
}

/// A second publish with the same dedup id is not delivered again and reports
/// `duplicate: true` with the first's outcome, both while the first is in flight and after.
pub async fn dedup_within_window(bus: Bus) {
    let mut consumer = consume(&bus, StreamName::Ingress).await;
    let subject = ingress_subject("conf-dedup");
    let first = spawn_publish(
        &bus,
        StreamName::Ingress,
        "conf-dedup-1",
        BusMessage::new(subject.clone(), "first"),
    );
    let delivery = next_delivery(&mut consumer, "the first publish").await;
    assert_eq!(delivery.message().payload, "first");

    // While the first is still unacked.
    let second = spawn_publish(
        &bus,
        StreamName::Ingress,
        "conf-dedup-1",
        BusMessage::new(subject.clone(), "second"),
    );
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    delivery
        .ack_with(Bytes::from_static(b"r1"))
        .await
        .expect("ack failed");
    let ack = join_publish(first).await.expect("first publish failed");
    check_accepted(&ack, false, Some(b"r1"));
    let ack = join_publish(second)
        .await
        .expect("duplicate publish failed");
    check_accepted(&ack, true, Some(b"r1"));

    // After the first was acked.
    let third = spawn_publish(
        &bus,
        StreamName::Ingress,
        "conf-dedup-1",
        BusMessage::new(subject.clone(), "third"),
    );
    let ack = join_publish(third).await.expect("late duplicate failed");
    check_accepted(&ack, true, Some(b"r1"));
    assert_quiet(&mut consumer, "a duplicate must not be delivered").await;

    // A different id still flows.
    let other = spawn_publish(
        &bus,
        StreamName::Ingress,
        "conf-dedup-2",
        BusMessage::new(subject, "other"),
    );
    let delivery = next_delivery(&mut consumer, "a message with a new id").await;
    assert_eq!(delivery.message().payload, "other");
    delivery.ack().await.expect("ack failed");
    let ack = join_publish(other).await.expect("publish failed");
    check_accepted(&ack, false, None);
}

/// A nak'ed message comes back after its delay with the attempt count incremented, and the
/// publish reports the final ack.
pub async fn nak_redelivers_with_attempt_count(bus: Bus) {
    assert!(
        bus.max_deliveries() >= 3,
        "the suite needs max_deliveries >= 3"
    );
    let mut consumer = consume(&bus, StreamName::Ingress).await;
    let msg = BusMessage::new(ingress_subject("conf-nak"), "retry me");
    let publish = spawn_publish(&bus, StreamName::Ingress, "conf-nak-1", msg.clone());

    let first = next_delivery(&mut consumer, "the first delivery").await;
    assert_eq!(first.attempt(), 1);
    let naked_at = Instant::now();
    first.nak(NAK_DELAY).await.expect("nak failed");
    let second = next_delivery(&mut consumer, "the redelivery after a delayed nak").await;
    assert!(
        naked_at.elapsed() >= NAK_DELAY,
        "redelivered after {:?}, before the nak delay of {NAK_DELAY:?}",
        naked_at.elapsed()
    );
    assert_eq!(second.message(), &msg);
    assert_eq!(second.attempt(), 2, "attempt must count deliveries");
    second.nak(Duration::ZERO).await.expect("nak failed");

    let third = next_delivery(&mut consumer, "the redelivery after an immediate nak").await;
    assert_eq!(third.message(), &msg);
    assert_eq!(third.attempt(), 3);
    third
        .ack_with(Bytes::from_static(b"third time"))
        .await
        .expect("ack failed");
    let ack = join_publish(publish).await.expect("publish failed");
    check_accepted(&ack, false, Some(b"third time"));
    assert_quiet(&mut consumer, "an acked message must not come back").await;
}

/// Dropping a delivery without settling it redelivers it.
pub async fn drop_redelivers(bus: Bus) {
    let mut consumer = consume(&bus, StreamName::Ingress).await;
    let msg = BusMessage::new(ingress_subject("conf-drop"), "dropped");
    let publish = spawn_publish(&bus, StreamName::Ingress, "conf-drop-1", msg.clone());
    let first = next_delivery(&mut consumer, "the first delivery").await;
    assert_eq!(first.attempt(), 1);
    drop(first);
    let second = next_delivery(&mut consumer, "the redelivery after a drop").await;
    assert_eq!(second.message(), &msg);
    assert_eq!(second.attempt(), 2);
    second.ack().await.expect("ack failed");
    join_publish(publish).await.expect("publish failed");
}

/// Consumers with the same name share the work: an unacked message held by one does not stop
/// another, and 200 messages over 3 consumers are each delivered exactly once.
pub async fn competing_consumers_each_message_once(bus: Bus) {
    const MESSAGES: usize = 200;
    const CONSUMERS: usize = 3;
    let mut consumers = Vec::new();
    for _ in 0..CONSUMERS {
        consumers.push(consume(&bus, StreamName::Ingress).await);
    }
    let subject = ingress_subject("conf-compete");

    // A held message does not block the next consumer.
    let held_publishes = [
        spawn_publish(
            &bus,
            StreamName::Ingress,
            "conf-hold-a",
            BusMessage::new(subject.clone(), "a"),
        ),
        spawn_publish(
            &bus,
            StreamName::Ingress,
            "conf-hold-b",
            BusMessage::new(subject.clone(), "b"),
        ),
    ];
    let held = next_delivery(&mut consumers[0], "a message for consumer 0").await;
    let other = next_delivery(
        &mut consumers[1],
        "a message for consumer 1 while 0 holds one",
    )
    .await;
    assert_ne!(
        held.message(),
        other.message(),
        "both consumers got the same message"
    );
    held.ack().await.expect("ack failed");
    other.ack().await.expect("ack failed");
    for publish in held_publishes {
        join_publish(publish).await.expect("publish failed");
    }

    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<String>();
    let workers: Vec<JoinHandle<()>> = consumers
        .into_iter()
        .map(|mut consumer| {
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                while let Ok(delivery) = consumer.next().await {
                    let id = delivery
                        .message()
                        .header("Conf-Id")
                        .unwrap_or("")
                        .to_owned();
                    if delivery.ack().await.is_err() {
                        break;
                    }
                    if seen_tx.send(id).is_err() {
                        break;
                    }
                    // Give the other consumers a turn.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    drop(seen_tx);

    let publishes: Vec<_> = (0..MESSAGES)
        .map(|i| {
            let id = format!("conf-compete-{i}");
            let msg = BusMessage::new(subject.clone(), format!("message {i}"))
                .with_header("Conf-Id", id.clone());
            spawn_publish(&bus, StreamName::Ingress, &id, msg)
        })
        .collect();

    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    while seen.len() < MESSAGES {
        let id = within("all messages to be consumed", seen_rx.recv())
            .await
            .expect("every consumer stopped");
        *seen.entry(id).or_default() += 1;
    }
    for publish in publishes {
        let ack = join_publish(publish).await.expect("publish failed");
        check_accepted(&ack, false, None);
    }
    if let Ok(Some(id)) = timeout(QUIET, seen_rx.recv()).await {
        *seen.entry(id).or_default() += 1;
    }
    for worker in &workers {
        worker.abort();
    }
    let expected: BTreeSet<String> = (0..MESSAGES).map(|i| format!("conf-compete-{i}")).collect();
    let got: BTreeSet<String> = seen.keys().cloned().collect();
    assert_eq!(got, expected, "delivered ids differ from published ids");
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "delivered more than once: {repeated:?}"
    );
}

/// A message nak'ed on every one of its `max_deliveries` deliveries is dead-lettered: never
/// delivered again, and a waiting publish learns it; the stream keeps flowing.
pub async fn dead_letter_after_max_deliveries(bus: Bus) {
    let max = bus.max_deliveries();
    let mut consumer = consume(&bus, StreamName::Ingress).await;
    let msg = BusMessage::new(ingress_subject("conf-dlq"), "always fails");
    let publish = spawn_publish(&bus, StreamName::Ingress, "conf-dlq-1", msg.clone());
    for attempt in 1..=max {
        let delivery = next_delivery(&mut consumer, "a delivery before dead-lettering").await;
        assert_eq!(delivery.message(), &msg);
        assert_eq!(delivery.attempt(), attempt);
        delivery.nak(Duration::ZERO).await.expect("nak failed");
    }
    check_dead_lettered(join_publish(publish).await, None);
    assert_quiet(
        &mut consumer,
        "a dead-lettered message must not be redelivered",
    )
    .await;
    still_flows(&bus, &mut consumer, "conf-dlq-2").await;
}

/// `term` dead-letters at once with its reason; the stream keeps flowing.
pub async fn term_dead_letters(bus: Bus) {
    let mut consumer = consume(&bus, StreamName::Ingress).await;
    let msg = BusMessage::new(ingress_subject("conf-term"), "poison");
    let publish = spawn_publish(&bus, StreamName::Ingress, "conf-term-1", msg);
    let delivery = next_delivery(&mut consumer, "the poison message").await;
    delivery
        .term("conformance poison")
        .await
        .expect("term failed");
    check_dead_lettered(join_publish(publish).await, Some("conformance poison"));
    assert_quiet(
        &mut consumer,
        "a terminated message must not be redelivered",
    )
    .await;
    still_flows(&bus, &mut consumer, "conf-term-2").await;
}

/// `notify` reaches every subscriber of the subject, and no subscriber of another subject.
pub async fn notify_fans_out_to_all_subscribers(bus: Bus) {
    let subject = notify_subject("conf-fanout", "agent-1");
    let other_subject = notify_subject("conf-fanout", "agent-2");
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        subscribers.push(subscribe(&bus, &subject).await);
    }
    let mut other = subscribe(&bus, &other_subject).await;
    notify(&bus, &subject, "hint").await;
    for subscriber in &mut subscribers {
        let msg = next_message(subscriber.as_mut()).await;
        assert_eq!(msg.subject, subject);
        assert_eq!(msg.payload, "hint");
    }
    notify(&bus, &other_subject, "sentinel").await;
    let msg = next_message(other.as_mut()).await;
    assert_eq!(
        msg.payload, "sentinel",
        "a subscriber of another subject got the hint"
    );
}

/// W3C trace context (`traceparent`, `tracestate`) reaches the consumer of a publish, and
/// the subscribers of a notify, exactly as attached, beside the message's other headers.
pub async fn trace_context_round_trips(bus: Bus) {
    let trace = [
        (
            "traceparent".to_owned(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
        ),
        ("tracestate".to_owned(), "amp=1,other=x".to_owned()),
    ];
    let mut consumer = consume(&bus, StreamName::Ingress).await;
    let msg = BusMessage::new(ingress_subject("conf-trace"), "traced")
        .with_header("Amp-Id", "conf-trace-1")
        .with_trace_context(trace.clone());
    let publish = spawn_publish(&bus, StreamName::Ingress, "conf-trace-1", msg.clone());
    let delivery = next_delivery(&mut consumer, "the traced message").await;
    assert_eq!(delivery.message(), &msg, "delivered message differs");
    let got: Vec<(String, String)> = delivery
        .message()
        .trace_context()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(got, trace, "trace context lost on the stream");
    assert_eq!(delivery.message().header("Amp-Id"), Some("conf-trace-1"));
    delivery.ack().await.expect("ack failed");
    join_publish(publish).await.expect("publish failed");

    let subject = notify_subject("conf-trace", "agent-1");
    let mut subscriber = subscribe(&bus, &subject).await;
    let hint = BusMessage::new(subject.clone(), "hint").with_trace_context(trace.clone());
    bus.notify_message(hint.clone())
        .await
        .expect("notify failed");
    let got = next_message(subscriber.as_mut()).await;
    assert_eq!(got, hint, "notified message differs");
    // A plain notify still arrives with no headers.
    notify(&bus, &subject, "plain").await;
    let got = next_message(subscriber.as_mut()).await;
    assert_eq!(got.payload, "plain");
    assert!(
        got.headers.is_empty(),
        "unexpected headers {:?}",
        got.headers
    );
}

/// `*` matches one token, `>` one or more trailing tokens, literals match exactly.
pub async fn wildcard_subscriptions(bus: Bus) {
    let base = "amp.notify.conf-wild";
    let mut star = subscribe(&bus, &format!("{base}.*")).await;
    let mut rest = subscribe(&bus, &format!("{base}.>")).await;
    let mut exact = subscribe(&bus, &format!("{base}.a")).await;
    let mut middle = subscribe(&bus, "amp.*.conf-wild.a").await;

    for (suffix, payload) in [
        (".a", "1"),
        (".a.b", "2"),
        (".b", "3"),
        ("", "4"),
        (".a", "end"),
    ] {
        notify(&bus, &format!("{base}{suffix}"), payload).await;
    }
    notify(&bus, "amp.notify.conf-other.a", "never").await;

    let expect = |subs: &[(&str, &str)]| -> Vec<(String, String)> {
        subs.iter()
            .map(|(suffix, payload)| (format!("{base}{suffix}"), (*payload).to_owned()))
            .collect()
    };
    assert_eq!(
        collect_until_end(star.as_mut()).await,
        expect(&[(".a", "1"), (".b", "3"), (".a", "end")]),
        "`*` must match exactly one token"
    );
    assert_eq!(
        collect_until_end(rest.as_mut()).await,
        expect(&[(".a", "1"), (".a.b", "2"), (".b", "3"), (".a", "end")]),
        "`>` must match one or more trailing tokens"
    );
    assert_eq!(
        collect_until_end(exact.as_mut()).await,
        expect(&[(".a", "1"), (".a", "end")]),
        "a literal subject must match only itself"
    );
    assert_eq!(
        collect_until_end(middle.as_mut()).await,
        expect(&[(".a", "1"), (".a", "end")]),
        "`*` must work in the middle of a pattern"
    );
}

/// Dropping a subscription unsubscribes: others keep receiving, notify never stalls on the
/// dropped one, and a new subscription sees only what comes after it.
pub async fn unsubscribed_on_drop(bus: Bus) {
    let subject = notify_subject("conf-unsub", "agent-1");
    let mut kept = subscribe(&bus, &subject).await;
    let dropped = subscribe(&bus, &subject).await;
    drop(dropped);
    notify(&bus, &subject, "one").await;
    assert_eq!(next_message(kept.as_mut()).await.payload, "one");
    drop(kept);

    within("notify with no subscribers", async {
        for _ in 0..10_000 {
            bus.notify(&subject, Bytes::from_static(b"into the void"))
                .await
                .expect("notify failed");
        }
    })
    .await;

    let mut fresh = subscribe(&bus, &subject).await;
    notify(&bus, &subject, "fresh").await;
    assert_eq!(
        next_message(fresh.as_mut()).await.payload,
        "fresh",
        "a new subscription must not see earlier hints"
    );
}

/// Malformed subjects are refused, not silently mis-routed.
pub async fn invalid_subjects_rejected(bus: Bus) {
    for pattern in ["", "amp..notify", "amp.>.x", "amp.no tify"] {
        assert!(
            bus.subscribe(pattern).await.is_err(),
            "subscribe({pattern:?}) must fail"
        );
    }
    for subject in ["", "amp.notify.*", "amp.notify.>", "amp..x", "amp.x "] {
        assert!(
            bus.notify(subject, Bytes::new()).await.is_err(),
            "notify({subject:?}) must fail"
        );
    }
    let result = bus
        .publish(
            StreamName::Ingress,
            "conf-invalid-1",
            BusMessage::new("amp.ingress.*", "x"),
        )
        .await;
    assert!(result.is_err(), "publish to a wildcard subject must fail");
}

/// Shutdown ends pending `next` calls with `Closed`, fails a publish still waiting with
/// `Closed`, ends subscriptions, and refuses later calls.
pub async fn shutdown_closes_everything(bus: Bus) {
    let mut consumer = consume(&bus, StreamName::Federation).await;
    let waiting = tokio::spawn(async move { consumer.next().await.map(|d| d.attempt()) });
    let mut subscription = subscribe(&bus, &notify_subject("conf-close", "agent-1")).await;
    let subscription_waiting = tokio::spawn(async move { subscription.next().await });
    // Nobody consumes ingress, so a publish that waits for processing is still waiting.
    let publish = spawn_publish(
        &bus,
        StreamName::Ingress,
        "conf-close-1",
        BusMessage::new(ingress_subject("conf-close"), "late"),
    );
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    bus.shutdown().await;

    let next = within("next() to end", waiting)
        .await
        .expect("task panicked");
    assert!(
        matches!(next, Err(Error::Closed)),
        "next() after shutdown: {next:?}"
    );
    let message = within("the subscription to end", subscription_waiting)
        .await
        .expect("task panicked");
    assert!(
        message.is_none(),
        "subscription after shutdown: {message:?}"
    );
    match join_publish(publish).await {
        Err(Error::Closed) => {}
        Ok(ack) => assert_eq!(
            ack.acceptance,
            Acceptance::Persisted,
            "nothing consumed the message, so it cannot be Processed"
        ),
        Err(other) => panic!("pending publish after shutdown: {other:?}"),
    }

    let late = bus
        .publish(
            StreamName::Ingress,
            "conf-close-2",
            BusMessage::new(ingress_subject("conf-close"), "after"),
        )
        .await;
    assert!(
        matches!(late, Err(Error::Closed)),
        "publish after shutdown: {late:?}"
    );
    assert!(matches!(
        bus.consume(StreamName::Ingress, CONSUMER).await,
        Err(Error::Closed)
    ));
    assert!(matches!(
        bus.subscribe("amp.notify.>").await,
        Err(Error::Closed)
    ));
    bus.shutdown().await;
}

// --- helpers -------------------------------------------------------------------------------

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

async fn consume(bus: &Bus, stream: StreamName) -> Box<dyn Consumer> {
    bus.consume(stream, CONSUMER).await.expect("consume failed")
}

async fn subscribe(bus: &Bus, subject: &str) -> Box<dyn Subscription> {
    bus.subscribe(subject).await.expect("subscribe failed")
}

async fn notify(bus: &Bus, subject: &str, payload: &'static str) {
    bus.notify(subject, Bytes::from_static(payload.as_bytes()))
        .await
        .expect("notify failed");
}

/// [`publish_for_reply`](crate::BusBackend::publish_for_reply): a consumer that offers its
/// reply while the publisher waits gets `true` for a confirmed offer, and the publish returns
/// `Processed` with that reply; a consumer too late for the publisher's wait gets `false`,
/// and the publish returned what the broker proved. Never both taken and untaken.
pub async fn publish_for_reply_outcome(bus: Bus) {
    let mut consumer = consume(&bus, StreamName::Ingress).await;
    let subject = ingress_subject("conf-reply");

    // In time: taken.
    let msg = BusMessage::new(subject.clone(), "prompt").with_header("X-Kind", "prompt");
    let publish = spawn_publish_for_reply(&bus, "conf-reply-1", msg.clone(), WAIT);
    let mut delivery = next_delivery(&mut consumer, "the message waited for").await;
    assert_eq!(
        delivery.message(),
        &msg,
        "the reply subject must not show in the delivered headers"
    );
    let taken = delivery
        .offer_reply(Bytes::from_static(b"outcome-1"), true)
        .await;
    delivery.ack().await.expect("ack failed");
    let ack = join_publish(publish).await.expect("publish failed");
    assert!(taken, "the publisher was waiting: the reply must be taken");
    assert_eq!(ack.acceptance, Acceptance::Processed, "{ack:?}");
    assert_eq!(ack.reply.as_deref(), Some(&b"outcome-1"[..]), "{ack:?}");
    assert!(!ack.duplicate);

    // Too late (a broker): not taken, and the publish said only what the broker proved.
    let short = Duration::from_millis(200);
    let msg = BusMessage::new(subject, "late");
    let publish = spawn_publish_for_reply(&bus, "conf-reply-2", msg, short);
    let mut delivery = next_delivery(&mut consumer, "the late message").await;
    tokio::time::sleep(short * 3).await;
    let finished_early = publish.is_finished();
    let taken = delivery
        .offer_reply(Bytes::from_static(b"outcome-2"), true)
        .await;
    delivery.ack().await.expect("ack failed");
    let ack = join_publish(publish).await.expect("publish failed");
    if finished_early {
        assert!(
            !taken,
            "nobody waited any more: the reply must not count as taken"
        );
        assert_eq!(ack.acceptance, Acceptance::Persisted, "{ack:?}");
        assert_eq!(ack.reply, None);
    } else {
        // A backend whose publish waits for processing whatever `wait` says.
        assert!(taken);
        assert_eq!(ack.acceptance, Acceptance::Processed, "{ack:?}");
        assert_eq!(ack.reply.as_deref(), Some(&b"outcome-2"[..]), "{ack:?}");
    }
}

fn spawn_publish_for_reply(
    bus: &Bus,
    dedup_id: &str,
    msg: BusMessage,
    wait: Duration,
) -> JoinHandle<Result<PublishAck>> {
    let bus = bus.clone();
    let dedup_id = dedup_id.to_owned();
    tokio::spawn(async move {
        bus.publish_for_reply(StreamName::Ingress, &dedup_id, msg, wait)
            .await
    })
}

/// Publishes in a task: a backend that waits for processing returns only after the ack.
fn spawn_publish(
    bus: &Bus,
    stream: StreamName,
    dedup_id: &str,
    msg: BusMessage,
) -> JoinHandle<Result<PublishAck>> {
    let bus = bus.clone();
    let dedup_id = dedup_id.to_owned();
    tokio::spawn(async move { bus.publish(stream, &dedup_id, msg).await })
}

async fn join_publish(publish: JoinHandle<Result<PublishAck>>) -> Result<PublishAck> {
    within("publish to return", publish)
        .await
        .expect("publish task panicked")
}

async fn next_delivery(consumer: &mut Box<dyn Consumer>, what: &str) -> Delivery {
    within(what, consumer.next())
        .await
        .unwrap_or_else(|e| panic!("consumer failed waiting for {what}: {e}"))
}

async fn next_message(subscription: &mut dyn Subscription) -> BusMessage {
    within("a notify hint", subscription.next())
        .await
        .expect("subscription ended")
}

async fn collect_until_end(subscription: &mut dyn Subscription) -> Vec<(String, String)> {
    let mut got = Vec::new();
    loop {
        let msg = next_message(subscription).await;
        let payload = String::from_utf8_lossy(&msg.payload).into_owned();
        let end = payload == "end";
        got.push((msg.subject, payload));
        if end {
            return got;
        }
    }
}

async fn assert_quiet(consumer: &mut Box<dyn Consumer>, what: &str) {
    if let Ok(next) = timeout(QUIET, consumer.next()).await {
        panic!("{what}; got {next:?}");
    }
}

/// Checks an ack against the contract: `Processed` acks carry the consumer's reply.
fn check_accepted(ack: &PublishAck, duplicate: bool, reply: Option<&[u8]>) {
    assert_eq!(ack.duplicate, duplicate, "wrong duplicate flag in {ack:?}");
    if ack.acceptance == Acceptance::Processed {
        assert_eq!(ack.reply.as_deref(), reply, "wrong reply in {ack:?}");
    }
}

fn check_dead_lettered(result: Result<PublishAck>, reason: Option<&str>) {
    match result {
        Err(Error::DeadLettered(got)) => {
            if let Some(reason) = reason {
                assert!(
                    got.contains(reason),
                    "dead-letter reason {got:?} lacks {reason:?}"
                );
            }
        }
        Ok(ack) => assert_eq!(
            ack.acceptance,
            Acceptance::Persisted,
            "a dead-lettered message cannot have been Processed"
        ),
        Err(other) => panic!("expected a dead letter, got {other:?}"),
    }
}

async fn still_flows(bus: &Bus, consumer: &mut Box<dyn Consumer>, dedup_id: &str) {
    let msg = BusMessage::new(ingress_subject("conf-flow"), dedup_id.to_owned());
    let publish = spawn_publish(bus, StreamName::Ingress, dedup_id, msg.clone());
    let delivery = next_delivery(consumer, "a later message").await;
    assert_eq!(delivery.message(), &msg, "the stream is stuck");
    assert_eq!(delivery.attempt(), 1);
    delivery.ack().await.expect("ack failed");
    join_publish(publish).await.expect("publish failed");
}
