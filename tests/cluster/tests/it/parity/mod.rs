//! The parity suite (issue 15): the black-box HTTP checks `ampd`'s tests make, run against
//! `ampd` and against the cluster (one `nats-server`, 2 ingest, 2 router, 1 delivery), both
//! behind the same nginx. `ampd`'s answers are the expected values; nothing sleeps or
//! retries for visibility. `cargo test -p cluster-tests parity` runs these alone.
//!
//! - `http`: the raw HTTP client, agents, signed messages, answer assertions.
//! - `checks`: the checks, each run against both targets by [`run_checks`].
//! - `concurrency`: the duplicate rule and read-your-writes across replicas, under load.
//!
//! Without nginx the tests print `PARITY TEST SKIPPED: no nginx` and pass, except in CI
//! (`AMP_REQUIRE_NATS=1`), where a missing nginx is a failure.

mod checks;
mod concurrency;
pub(crate) mod http;

use std::sync::Arc;
use std::time::{Duration, Instant};

use amp_testkit::cluster::HEAVY;
use amp_testkit::cluster::parity::Target;

/// How long one check may take before it counts as failed (a hung request is a failure,
/// not a hung test run).
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs every check against `t`, each in its own task so a failing one does not hide the
/// others, then fails listing every failed check with its message.
async fn run_checks(t: Target) {
    let t = Arc::new(t);
    let mut failed = Vec::new();
    let checks = checks::all();
    for (name, check) in &checks {
        let started = Instant::now();
        let task = {
            let (t, check) = (t.clone(), *check);
            tokio::spawn(async move { check(&t).await })
        };
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, task).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(panic_text(e)),
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        };
        match outcome {
            Ok(()) => eprintln!("parity {} {name}: ok ({:?})", t.name, started.elapsed()),
            Err(why) => {
                eprintln!("parity {} {name}: FAILED: {why}", t.name);
                failed.push(format!("- {name}: {why}"));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} parity checks failed on {}:\n{}\n{}",
        failed.len(),
        checks.len(),
        t.name,
        failed.join("\n"),
        t.logs()
    );
}

/// Runs one check against `t` with the logs on failure.
async fn run_one(t: Target, check: checks::Check) {
    let t = Arc::new(t);
    let task = {
        let t = t.clone();
        tokio::spawn(async move { check(&t).await })
    };
    if let Err(e) = task.await {
        panic!("{} on {}\n{}", panic_text(e), t.name, t.logs());
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parity_checks_on_ampd() {
    let _heavy = HEAVY.lock().await;
    let Some(t) = Target::ampd("parity_checks_on_ampd").await else {
        return;
    };
    run_checks(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parity_checks_on_the_cluster() {
    let _heavy = HEAVY.lock().await;
    let Some(t) = Target::cluster("parity_checks_on_the_cluster").await else {
        return;
    };
    run_checks(t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parity_simultaneous_duplicates_on_ampd() {
    let _heavy = HEAVY.lock().await;
    let Some(t) = Target::ampd("parity_simultaneous_duplicates_on_ampd").await else {
        return;
    };
    run_one(t, |t| Box::pin(concurrency::simultaneous_duplicates(t))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parity_simultaneous_duplicates_on_the_cluster() {
    let _heavy = HEAVY.lock().await;
    let Some(t) = Target::cluster("parity_simultaneous_duplicates_on_the_cluster").await else {
        return;
    };
    run_one(t, |t| Box::pin(concurrency::simultaneous_duplicates(t))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parity_spec_next_simultaneous_idempotency_keys_on_ampd() {
    let _heavy = HEAVY.lock().await;
    let Some(t) = Target::ampd("parity_spec_next_simultaneous_idempotency_keys_on_ampd").await
    else {
        return;
    };
    run_one(t, |t| {
        Box::pin(concurrency::spec_next_simultaneous_idempotency_keys(t))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parity_spec_next_simultaneous_idempotency_keys_on_the_cluster() {
    let _heavy = HEAVY.lock().await;
    let Some(t) =
        Target::cluster("parity_spec_next_simultaneous_idempotency_keys_on_the_cluster").await
    else {
        return;
    };
    run_one(t, |t| {
        Box::pin(concurrency::spec_next_simultaneous_idempotency_keys(t))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parity_read_your_writes_on_ampd() {
    let _heavy = HEAVY.lock().await;
    let Some(t) = Target::ampd("parity_read_your_writes_on_ampd").await else {
        return;
    };
    run_one(t, |t| Box::pin(concurrency::route_then_pickup_elsewhere(t))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parity_read_your_writes_on_the_cluster() {
    let _heavy = HEAVY.lock().await;
    let Some(t) = Target::cluster("parity_read_your_writes_on_the_cluster").await else {
        return;
    };
    run_one(t, |t| Box::pin(concurrency::route_then_pickup_elsewhere(t))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_attachments_on_ampd() {
    let _heavy = HEAVY.lock().await;
    let Some(t) = Target::ampd("spec_next_attachments_on_ampd").await else {
        return;
    };
    run_one(t, |t| Box::pin(checks::attachments::attachments(t))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_attachments_on_the_cluster() {
    let _heavy = HEAVY.lock().await;
    let Some(t) = Target::cluster("spec_next_attachments_on_the_cluster").await else {
        return;
    };
    run_one(t, |t| Box::pin(checks::attachments::attachments(t))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_agent_profile_on_ampd() {
    let _heavy = HEAVY.lock().await;
    let Some(t) = Target::ampd("spec_next_agent_profile_on_ampd").await else {
        return;
    };
    run_one(t, |t| Box::pin(checks::profile::agent_profile(t))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_next_agent_profile_on_the_cluster() {
    let _heavy = HEAVY.lock().await;
    let Some(t) = Target::cluster("spec_next_agent_profile_on_the_cluster").await else {
        return;
    };
    run_one(t, |t| Box::pin(checks::profile::agent_profile(t))).await;
}
