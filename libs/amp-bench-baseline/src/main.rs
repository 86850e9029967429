//! `amp-bench-baseline`: the ceilings `deploy/bench/run.sh` compares the provider with, each
//! measured on this machine in the same run.
//!
//! - `http --listen ADDR`: a no-op axum server answering `POST /v1/register` and
//!   `POST /v1/route` with fixed JSON, so that `amp load --mix route` drives it exactly as it
//!   drives `ampd` (B_http, the HTTP ceiling of generator + server).
//! - `verify --secs S`: ed25519 strict verifies per second on one core (B_verify).
//! - `fsync --dir D --secs S`: 1 KiB appends each followed by `fdatasync` (B_fsync).
//! - `store --dir D --secs S`: raw redb transactions of one 1 KiB insert each, committed
//!   durably (B_store).
//!
//! The measuring commands print one JSON line; every loop is bounded by `--secs`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::post;
use clap::{Parser, Subcommand};
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::json;

/// Longest measurement accepted, in seconds.
const MAX_SECS: f64 = 120.0;

/// Baselines for the provider benchmark.
#[derive(Parser)]
#[command(name = "amp-bench-baseline", about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the no-op JSON endpoints until killed (prints `listening on ADDR`).
    Http {
        /// Address to listen on (port 0 picks one).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Runtime worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// ed25519 `verify_strict` per second on one core.
    Verify {
        /// Seconds to measure.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
    /// 1 KiB appends + fdatasync per second in a directory.
    Fsync {
        /// Directory (on the filesystem of the provider's data dir).
        #[arg(long)]
        dir: PathBuf,
        /// Seconds to measure.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
    /// Raw redb commits of one 1 KiB insert per second.
    Store {
        /// Directory for the database file.
        #[arg(long)]
        dir: PathBuf,
        /// Seconds to measure.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Http { listen, threads } => serve(listen, threads),
        Command::Verify { secs } => {
            let (n, s) = verify(bounded(secs))?;
            print(
                json!({ "baseline": "verify", "ops": n, "seconds": s, "per_second": n as f64 / s }),
            );
            Ok(())
        }
        Command::Fsync { dir, secs } => {
            let (n, s) = fsync(&dir, bounded(secs))?;
            print(
                json!({ "baseline": "fsync", "ops": n, "seconds": s, "per_second": n as f64 / s }),
            );
            Ok(())
        }
        Command::Store { dir, secs } => {
            let (n, s) = store(&dir, bounded(secs))?;
            print(
                json!({ "baseline": "store", "ops": n, "seconds": s, "per_second": n as f64 / s }),
            );
            Ok(())
        }
    }
}

fn bounded(secs: f64) -> Duration {
    Duration::from_secs_f64(if secs.is_finite() {
        secs.clamp(0.1, MAX_SECS)
    } else {
        3.0
    })
}

fn print(v: serde_json::Value) {
    println!("{v}");
}

/// Runs `step` until `d` has passed, checking the clock every 64 steps.
fn timed(
    d: Duration,
    mut step: impl FnMut(u64) -> anyhow::Result<()>,
) -> anyhow::Result<(u64, f64)> {
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        for _ in 0..64 {
            step(n)?;
            n += 1;
        }
        if start.elapsed() >= d {
            return Ok((n, start.elapsed().as_secs_f64()));
        }
    }
}

fn verify(d: Duration) -> anyhow::Result<(u64, f64)> {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let public = key.verifying_key();
    // About the size of the canonical string the provider verifies.
    let msg = "alice@acme.amp.test|bob@acme.amp.test|Code review request|normal||\
               Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXU="
        .as_bytes();
    let sig = key.sign(msg);
    timed(d, |_| {
        public
            .verify_strict(std::hint::black_box(msg), &sig)
            .context("the signature does not verify")
    })
}

fn fsync(dir: &Path, d: Duration) -> anyhow::Result<(u64, f64)> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("fsync-baseline-{}.log", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let block = [0x5au8; 1024];
    let r = timed(d, |_| {
        f.write_all(&block)?;
        f.sync_data()?;
        Ok(())
    });
    let _ = std::fs::remove_file(&path);
    r
}

fn store(dir: &Path, d: Duration) -> anyhow::Result<(u64, f64)> {
    const TABLE: redb::TableDefinition<'_, u64, &[u8]> = redb::TableDefinition::new("baseline");
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("store-baseline-{}.redb", std::process::id()));
    let db =
        redb::Database::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let value = [0x5au8; 1024];
    let r = timed(d, |k| {
        let tx = db.begin_write()?;
        {
            let mut t = tx.open_table(TABLE)?;
            t.insert(k, value.as_slice())?;
        }
        tx.commit()?;
        Ok(())
    });
    drop(db);
    let _ = std::fs::remove_file(&path);
    r
}

fn serve(listen: SocketAddr, threads: Option<usize>) -> anyhow::Result<()> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(t) = threads {
        rt.worker_threads(t.max(1));
    }
    rt.build()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        println!("listening on {addr}");
        let base = format!("http://{addr}/v1");
        let registration = json!({
            "address": "noop@bench.noop.test",
            "agent_id": "agt_noop",
            "tenant": "bench",
            "api_key": "amp_live_sk_noop",
            "provider": { "name": "noop.test", "endpoint": base, "route_url": format!("{base}/route") },
        })
        .to_string();
        let app = Router::new()
            .route(
                "/v1/register",
                post(move |_body: Bytes| {
                    let r = registration.clone();
                    async move { (axum::http::StatusCode::CREATED, [(CONTENT_TYPE, "application/json")], r) }
                }),
            )
            .route("/v1/route", post(route));
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// Reads the body and answers like a provider that accepted the message.
async fn route(body: Bytes) -> impl IntoResponse {
    std::hint::black_box(body.len());
    (
        axum::http::StatusCode::CREATED,
        [(CONTENT_TYPE, "application/json")],
        r#"{"id":"msg_0_noop","status":"queued","method":"local"}"#,
    )
}
