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
//! - `engines --dir D --messages N`: the write path of a stored message (a 1,200-byte mailbox
//!   row and three 80-byte index rows in one atomic, durable commit), in batches of 1, 4 and
//!   20 messages per commit, on redb (with quick repair, as the provider runs it, and without)
//!   and on fjall (an LSM tree: one journal append and `fdatasync` per commit); messages per
//!   second and CPU microseconds per message, one JSON line per configuration. It is the
//!   measurement that chooses the embedded store's engine (issue 20).
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
    /// A stored message's writes on redb and on fjall, in batches per durable commit.
    Engines {
        /// Directory for the databases (on the filesystem of the provider's data dir).
        #[arg(long)]
        dir: PathBuf,
        /// Messages written per configuration (at most 1,000,000).
        #[arg(long, default_value_t = 20_000)]
        messages: u64,
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
        Command::Engines { dir, messages } => engines(&dir, messages.clamp(100, 1_000_000)),
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

/// The rows one stored message writes: a mailbox row and three index rows.
const ENGINE_TABLES: [&str; 4] = ["mailbox", "msg_index", "mbox_meta", "expiry"];
/// Messages per durable commit, from one at a time to a busy group commit.
const ENGINE_BATCHES: [u64; 3] = [1, 4, 20];

fn engines(dir: &Path, messages: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let body = vec![0x5au8; 1200];
    let index = vec![0x33u8; 80];
    for batch in ENGINE_BATCHES {
        let runs: [(&str, Option<bool>); 3] = [
            ("redb quick_repair", Some(true)),
            ("redb", Some(false)),
            ("fjall", None),
        ];
        for (engine, quick_repair) in runs {
            let path = dir.join(format!("engines-{}-{batch}", std::process::id()));
            let (cpu0, start) = (cpu_seconds(), Instant::now());
            let r = match quick_repair {
                Some(qr) => engine_redb(&path, messages, batch, qr, &body, &index),
                None => engine_fjall(&path, messages, batch, &body, &index),
            };
            let (secs, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
            let _ = std::fs::remove_dir_all(&path);
            r?;
            print(json!({
                "baseline": "engines", "engine": engine, "batch": batch, "messages": messages,
                "per_second": messages as f64 / secs,
                "cpu_us_per_message": 1e6 * cpu / messages as f64,
            }));
        }
    }
    Ok(())
}

/// This process's user + system CPU seconds (`/proc/self/stat`; 0 where it cannot be read).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime, in clock ticks of 1/100 s on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn engine_redb(
    dir: &Path,
    messages: u64,
    batch: u64,
    quick_repair: bool,
    body: &[u8],
    index: &[u8],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let db = redb::Database::create(dir.join("engine.redb"))?;
    let defs = ENGINE_TABLES.map(redb::TableDefinition::<(&str, u64), &[u8]>::new);
    let mut n = 0u64;
    while n < messages {
        let mut tx = db.begin_write()?;
        tx.set_durability(redb::Durability::Immediate);
        tx.set_quick_repair(quick_repair);
        {
            let mut tables = defs
                .iter()
                .map(|d| tx.open_table(*d))
                .collect::<Result<Vec<_>, _>>()?;
            for _ in 0..batch {
                let agent = format!("agt_{:04}", n % 200);
                for (i, t) in tables.iter_mut().enumerate() {
                    t.insert((agent.as_str(), n), if i == 0 { body } else { index })?;
                }
                n += 1;
            }
        }
        tx.commit()?;
    }
    Ok(())
}

fn engine_fjall(
    dir: &Path,
    messages: u64,
    batch: u64,
    body: &[u8],
    index: &[u8],
) -> anyhow::Result<()> {
    let db = fjall::Database::builder(dir).open()?;
    let keyspaces = ENGINE_TABLES
        .iter()
        .map(|name| db.keyspace(name, fjall::KeyspaceCreateOptions::default))
        .collect::<Result<Vec<_>, _>>()?;
    let mut n = 0u64;
    while n < messages {
        let mut b = db.batch();
        for _ in 0..batch {
            let key = format!("agt_{:04}/{n:016x}", n % 200);
            for (i, ks) in keyspaces.iter().enumerate() {
                b.insert(ks, key.as_bytes(), if i == 0 { body } else { index });
            }
            n += 1;
        }
        b.commit()?;
        db.persist(fjall::PersistMode::SyncData)?;
    }
    Ok(())
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
