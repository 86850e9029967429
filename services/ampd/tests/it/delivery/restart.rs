//! Webhook retries survive `kill -9` (their state is in the store): the built `ampd` binary
//! is killed after a failed first attempt and restarted on the same data directory.

use std::path::Path;

use amp_testkit::ampd::AmpdProcess;

use super::*;

/// Starts the binary with `config` on a free port.
async fn spawn_ampd(config: &Path, data_dir: &Path) -> AmpdProcess {
    AmpdProcess::start_in(data_dir, &["--config".as_ref(), config.as_ref()], &[]).await
}

/// NTF-14, issue: with a webhook answering 500 first and retries after 1.5 s and 3 s,
/// `ampd` is killed with SIGKILL after the first failed attempt; restarted on the same
/// data directory, it sends the retry: attempt 2, same message id, valid signature.
#[tokio::test]
async fn a_webhook_retry_survives_kill_9() {
    let hook = start_hook(&[500], 200).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let config = dir.path().join("ampd.toml");
    std::fs::write(
        &config,
        "[server]\n\
         domain = \"amp.test\"\n\
         shutdown_grace_secs = 1\n\
         [ingest.registration]\n\
         per_ip_per_minute = 1000\n\
         [ingest.outbound]\n\
         allow_private = true\n\
         [ingest.messaging]\n\
         webhook_wait_ms = 300\n\
         [delivery.webhook]\n\
         retry_delays_ms = [0, 1500, 3000]\n\
         poll_interval_ms = 50\n",
    )
    .expect("write config");

    let mut ampd = spawn_ampd(&config, &data).await;
    let base = ampd.url().to_owned();
    let http = reqwest::Client::new();
    let alice = register(&http, &base, "acme", "alice", None).await;
    let carol = register(&http, &base, "acme", "carol", Some(hooked(&hook.url))).await;
    let body = signed_body(
        &alice,
        &carol.address,
        "survive",
        &payload_with("x"),
        json!({}),
    );
    let v = call(
        &http,
        &base,
        reqwest::Method::POST,
        "/v1/route",
        Some(&alice.api_key),
        Some(body),
    )
    .await
    .ok();
    let id = id_of(&v);

    let got = hook.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].attempt(), 1);
    assert_eq!(got[0].message_id(), id);
    // Let the failed attempt's retry be written, then kill well before it is due.
    tokio::time::sleep(Duration::from_millis(250)).await;
    ampd.kill9().await;
    let killed_at = std::time::Instant::now();
    assert_eq!(hook.requests().len(), 1, "the retry came before the kill");

    ampd.restart().await;
    let base = ampd.url().to_owned();
    eprintln!("restart took {:?}", killed_at.elapsed());
    // Upper bounds only (they return as soon as the requests arrive): a loaded CI machine
    // restarts and polls far slower than the retry schedule says.
    let got = hook.wait_for(2, Duration::from_secs(30)).await;
    let r = &got[1];
    assert_eq!(r.attempt(), 2, "{got:?}");
    assert_eq!(r.message_id(), id);
    let ts = r.header("x-amp-timestamp");
    assert_eq!(
        r.header("x-amp-signature"),
        expected_signature(SECRET, ts, &r.body)
    );
    // Delivered now (2xx): no third attempt, and the message still waits for its ack.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.requests().len(), 2);
    let pending = call(
        &http,
        &base,
        reqwest::Method::GET,
        "/v1/messages/pending",
        Some(&carol.api_key),
        None,
    )
    .await
    .ok();
    assert_eq!(pending["messages"][0]["id"], id.as_str(), "{pending}");
    drop(ampd);
}
