//! Storage faults of the embedded store: the data directory on a small tmpfs this test
//! mounts (the tests run as root; a failed mount fails the test, it never skips).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

use amp_testkit::tmpfs::Tmpfs;

async fn start_on(data: PathBuf) -> Ampd {
    start_with(move |c| c.server.data_dir = data).await
}

/// Every id in `who`'s mailbox, page by page.
async fn mailbox_ids(s: &Ampd, who: &Agent) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(c) => format!("/v1/messages/pending?limit=100&after={c}"),
            None => "/v1/messages/pending?limit=100".to_owned(),
        };
        let page = s.get(who, &path).await.ok();
        let messages = page["messages"].as_array().expect("messages").clone();
        ids.extend(
            messages
                .iter()
                .map(|m| m["id"].as_str().expect("id").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) if !messages.is_empty() => after = Some(c.to_owned()),
            _ => return ids,
        }
    }
}

/// `n` letters that do not compress.
fn noise(n: usize) -> String {
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

async fn readyz(s: &Ampd) -> StatusCode {
    s.http
        .get(format!("{}/readyz", s.url()))
        .send()
        .await
        .expect("readyz")
        .status()
}

/// Waits (at most `within`) until `/readyz` answers `want`; how long it took.
async fn wait_readyz(s: &Ampd, want: StatusCode, within: Duration) -> Duration {
    let started = Instant::now();
    while readyz(s).await != want {
        assert!(
            started.elapsed() < within,
            "/readyz did not turn {want} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// A full disk: writes are refused with 503 + Retry-After at once (the first one too),
/// `/readyz` turns 503 while the store cannot write, and when space returns the store
/// reopens by itself and every acknowledged message is still there.
#[tokio::test]
async fn hardening_disk_full_is_refused_fast_turns_unready_and_recovers() {
    let fs = Tmpfs::mount("12m");
    let s = start_on(fs.path().to_owned()).await;
    let alice = s.register("acme", "alice").await;
    let bob = s.register("acme", "bob").await;
    // Text that does not compress: fjall's journal compresses what it writes.
    let filler = noise(50_000);
    let mut acked = Vec::new();
    let first_failure = loop {
        assert!(
            acked.len() < 1_000,
            "a 12 MB disk took 1,000 messages of 50 KB"
        );
        let body = signed_body(
            &alice,
            &bob.address,
            "fill",
            &payload_with(&format!("{} {filler}", acked.len())),
            json!({}),
        );
        let started = Instant::now();
        let r = s.post(&alice, "/v1/route", Some(body)).await;
        if r.status == StatusCode::OK {
            acked.push(r.json()["id"].as_str().expect("id").to_owned());
            continue;
        }
        r.assert_error(503, "service_unavailable");
        break started.elapsed();
    };
    eprintln!(
        "disk full after {} messages; the first refusal took {first_failure:?}",
        acked.len()
    );
    assert!(
        !acked.is_empty(),
        "nothing was accepted before the disk filled"
    );
    // The first refusal too: the router tells the waiting ingest at once (the in-process bus
    // holds nothing to retry), not after the route timeout. Issue 19 asks for 100 ms; the
    // bound here leaves room for a loaded CI machine.
    assert!(
        first_failure < Duration::from_millis(1_000),
        "the first refusal took {first_failure:?}"
    );

    // The store knows now: refusals are immediate, and the server is not ready.
    let unready = wait_readyz(&s, StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(5)).await;
    eprintln!("/readyz turned 503 {unready:?} after the first refusal");
    for i in 0..5 {
        let body = signed_body(
            &alice,
            &bob.address,
            "full",
            &payload_with(&format!("full {i}")),
            json!({}),
        );
        let started = Instant::now();
        let r = s.post(&alice, "/v1/route", Some(body)).await;
        let took = started.elapsed();
        eprintln!("while full: {} in {took:?}", r.status);
        r.assert_error(503, "service_unavailable");
        assert!(r.json()["retry_after"].is_number(), "{}", r.text);
        assert!(
            took < Duration::from_millis(250),
            "a refusal while full took {took:?}"
        );
    }

    // Space returns: the store reopens by itself.
    fs.resize("64m");
    let recovered = wait_readyz(&s, StatusCode::OK, Duration::from_secs(15)).await;
    eprintln!("/readyz back to 200 {recovered:?} after space returned");
    let after = s
        .send(&alice, &bob.address, "after the disk was grown")
        .await;
    acked.push(after["id"].as_str().expect("id").to_owned());
    let stored = mailbox_ids(&s, &bob).await;
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged messages lost: {missing:?}"
    );
    s.stop().await;
}
