//! [`patiently`]: the bus's and the store's stream setup, retried while JetStream cannot
//! answer yet.

use std::future::Future;
use std::time::Duration;

/// How long [`patiently`] keeps trying: a JetStream meta leader election after a NATS node
/// restarts takes seconds, and a process that starts meanwhile should wait for it rather
/// than exit.
pub const SETUP_PATIENCE: Duration = Duration::from_secs(30);

/// Runs `op` until it succeeds, fails with an error `transient` does not accept, or
/// [`SETUP_PATIENCE`] has passed (then the last error); 400 ms, 800 ms, … 3.2 s between
/// attempts, each failure logged with `what`.
///
/// Fails like `op`.
pub async fn patiently<T, E, Fut>(
    what: &str,
    transient: impl Fn(&E) -> bool,
    mut op: impl FnMut() -> Fut,
) -> Result<T, E>
where
    E: std::fmt::Debug,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + SETUP_PATIENCE;
    let mut attempt = 0u32;
    loop {
        match op().await {
            Err(e) if tokio::time::Instant::now() < deadline && transient(&e) => {
                attempt += 1;
                tracing::warn!(what, error = ?e, attempt, "JetStream setup failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(4))).await;
            }
            done => return done,
        }
    }
}
