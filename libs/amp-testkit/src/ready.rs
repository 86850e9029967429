//! Waiting for a started process (the `ampd` binary, a cluster service) to answer `/readyz`.

use std::time::Duration;

/// Polls `GET <url>/readyz` every 50 ms until it answers 2xx, at most `timeout`; each probe
/// gets `probe_timeout` and a fresh connection (a hung process must not hold a pooled one).
///
/// # Panics
/// When it is not ready in time; the panic names `what` and carries `log()`.
pub(crate) async fn wait_ready(
    url: &str,
    timeout: Duration,
    probe_timeout: Duration,
    what: &str,
    log: impl Fn() -> String,
) {
    let probe = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(probe_timeout)
        .build()
        .expect("probe client");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(r) = probe.get(format!("{url}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} not ready in time; its log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
