//! Issue 16: one tenant's tarpit cannot stall everyone's webhooks. A real HTTP server on
//! 127.0.0.1 accepts every request and never answers (the attempt runs into the whole
//! timeout); its tenant has more messages queued for it than the shared pool has slots. A
//! webhook of another tenant must still arrive promptly: each tenant holds at most
//! `per_tenant_concurrency` of the pool. Test names start with `security_`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use super::{DeliveryExt, start_hook, start_with};

/// A server that reads requests and never answers; counts the connections it holds open
/// (an attempt that timed out and was retried is one connection closed and one opened, so a
/// slow machine that reaches the timeout does not count it twice).
async fn tarpit() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let held = Arc::new(AtomicUsize::new(0));
    let count = held.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                // Read whatever comes, answer nothing, keep the connection until it closes.
                while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                count.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (url, held, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_tarpit_tenant_does_not_stall_other_tenants_webhooks() {
    let s = start_with(|c| {
        // Route answers do not wait for webhooks (the tarpit would make each one wait).
        c.ingest.messaging.webhook_wait_ms = 0;
        let w = &mut c.delivery.webhook;
        w.timeout_ms = 10_000;
        w.concurrency = 8;
        w.per_tenant_concurrency = 2;
    })
    .await;
    let (slow_url, held, slow_task) = tarpit().await;
    let sender = s.register("sec-tarpit-x", "sender").await;
    let victim = s.register_hooked("sec-tarpit-slow", "pit", &slow_url).await;
    // More messages for the tarpit than the pool has slots.
    for i in 0..20 {
        s.send(&sender, &victim.address, &format!("into the pit {i}"))
            .await;
    }
    // The tarpit holds its share of the pool.
    let deadline = Instant::now() + Duration::from_secs(5);
    while held.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the tarpit was never called");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        held.load(Ordering::SeqCst) <= 2,
        "the tarpit tenant holds {} connections, more than its share",
        held.load(Ordering::SeqCst)
    );

    // Another tenant's webhook arrives promptly, not after the tarpit's 10 s timeouts.
    let hook = start_hook(&[], 200).await;
    let other = s.register_hooked("sec-tarpit-ok", "fine", &hook.url).await;
    let sent = Instant::now();
    s.send(&sender, &other.address, "not stuck behind the pit")
        .await;
    let got = hook.wait_for(1, Duration::from_secs(8)).await;
    assert_eq!(got.len(), 1, "the other tenant's webhook never arrived");
    let took = got[0].at.saturating_duration_since(sent);
    assert!(
        took < Duration::from_secs(3),
        "the other tenant's webhook waited {took:?} behind the tarpit"
    );
    slow_task.abort();
    s.stop().await;
}
