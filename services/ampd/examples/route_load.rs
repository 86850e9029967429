//! A simple load client for a running provider: signed routes per second with latency
//! percentiles, then pickup pages per second. Loopback or the URL given only; bounded in time.
//!
//! ```sh
//! AMP__INGEST__LIMITS__MESSAGES_PER_MINUTE=10000000 AMP__INGEST__LIMITS__API_REQUESTS_PER_MINUTE=10000000 \
//! AMP__INGEST__LIMITS__TENANT_REQUESTS_PER_MINUTE=10000000 AMP__INGEST__LIMITS__PENDING_PER_MINUTE=10000000 \
//! AMP__INGEST__LIMITS__MAILBOX_QUOTA=10000000 cargo run --release -p ampd -- --data-dir /tmp/amp-load &
//! cargo run --release -p ampd --example route_load -- http://127.0.0.1:8080 64 10
//! ```
//! Arguments: base URL, concurrency, seconds per phase.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use amp_proto::SecretKey;
use amp_proto::signing::{SignedFields, sign_message};
use serde_json::{Value, json};

struct Agent {
    address: String,
    api_key: String,
    key: SecretKey,
}

async fn register(
    http: &reqwest::Client,
    base: &str,
    tenant: &str,
    name: &str,
) -> anyhow::Result<Agent> {
    let key = SecretKey::generate();
    let body = json!({"tenant": tenant, "name": name, "public_key": key.public().to_pem(), "key_algorithm": "Ed25519"});
    let r: Value = http
        .post(format!("{base}/v1/register"))
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(Agent {
        address: r["address"].as_str().unwrap_or_default().to_owned(),
        api_key: r["api_key"].as_str().unwrap_or_default().to_owned(),
        key,
    })
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let concurrency: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let secs: u64 = args
        .get(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .min(120);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let tenant = format!("load{:x}", rand::random::<u32>());
    // One sender per task (per-agent limits stay realistic), one recipient.
    let to = register(&http, &base, &tenant, "sink").await?;
    let mut senders = Vec::new();
    for i in 0..concurrency {
        senders.push(Arc::new(
            register(&http, &base, &tenant, &format!("src{i}")).await?,
        ));
    }
    let payload = r#"{"type":"request","message":"Please review the OAuth changes in lib/auth.ts before Friday.","context":{"repo":"agents-web","pr":42,"score":0.75}}"#;

    // Phase 1: routes.
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for s in &senders {
        let (http, base, to, s, ok, failed) = (
            http.clone(),
            base.clone(),
            to.address.clone(),
            s.clone(),
            ok.clone(),
            failed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let subject = format!("load {n}");
                let f = SignedFields { from: &s.address, to: &to, subject: &subject, priority: "normal", in_reply_to: "" };
                let sig = sign_message(&s.key, &f, payload).unwrap_or_default();
                let body = format!(r#"{{"to":"{to}","subject":"{subject}","payload":{payload},"signature":"{sig}"}}"#);
                let t = Instant::now();
                let r = http
                    .post(format!("{base}/v1/route"))
                    .bearer_auth(&s.api_key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                lat.push(t.elapsed().as_micros() as u64);
                match r {
                    Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let routed = ok.load(Ordering::Relaxed);
    println!(
        "route: {routed} ok, {} failed in {elapsed:.1}s = {:.0} msgs/s; latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        failed.load(Ordering::Relaxed),
        routed as f64 / elapsed,
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        percentile(&lat, 1.0),
    );

    // Phase 2: pickup pages of 100 (no acks, so every page is full).
    let pages = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, base, key, pages) = (
            http.clone(),
            base.clone(),
            to.api_key.clone(),
            pages.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let r = http
                    .get(format!("{base}/v1/messages/pending?limit=100"))
                    .bearer_auth(&key)
                    .send()
                    .await;
                if let Ok(r) = r
                    && r.status().is_success()
                    && r.bytes().await.is_ok()
                {
                    pages.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let p = pages.load(Ordering::Relaxed);
    println!(
        "pickup: {p} pages of 100 in {elapsed:.1}s = {:.0} pages/s",
        p as f64 / elapsed
    );
    Ok(())
}
