//! The conformance suite on the in-process backend, check by check and all at once.

use amp_bus::testing::conformance;
use amp_bus::{Bus, InProcessConfig};

fn bus() -> Bus {
    Bus::in_process(InProcessConfig::default())
}

macro_rules! checks {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(start_paused = true)]
        async fn $check() {
            conformance::$check(bus()).await;
        }
    )*};
}

checks!(
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

#[tokio::test(start_paused = true)]
async fn run_all_in_process() {
    conformance::run_all(|| async { bus() }).await;
}

/// The suite must not depend on the paused clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_in_process_real_time() {
    conformance::run_all(|| async {
        Bus::in_process(InProcessConfig {
            max_deliveries: 3,
            ..InProcessConfig::default()
        })
    })
    .await;
}
