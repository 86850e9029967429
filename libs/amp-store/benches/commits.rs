//! The embedded stores' hot paths, on redb and on fjall (its ids prefixed `fjall_`): durable
//! commits per second, with and without group commit (each iteration enqueues `CONCURRENCY`
//! messages from concurrent tasks and waits for all of them to be durable), and the read of
//! one pickup page of 100 messages. Run with `cargo bench -p amp-store`; CI runs it in
//! Criterion's quick mode (`deploy/test.sh`).

use std::path::Path;

use amp_store::Store;
use amp_store::fjall::{FjallConfig, FjallStore};
use amp_store::redb::{RedbConfig, RedbStore};
use amp_store::testing::{entry, now_ms};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const CONCURRENCY: usize = 256;

/// The embedded engines, by the prefix of their benchmark ids.
const ENGINES: [&str; 2] = ["", "fjall_"];

/// The store of `engine` in `dir`.
fn open(engine: &str, dir: &Path, group_commit: bool) -> Store {
    if engine == "fjall_" {
        let cfg = FjallConfig {
            group_commit,
            ..FjallConfig::in_dir(dir)
        };
        Store::new(FjallStore::open(&cfg).expect("open fjall"))
    } else {
        let cfg = RedbConfig {
            group_commit,
            ..RedbConfig::in_dir(dir)
        };
        Store::new(RedbStore::open(&cfg).expect("open redb"))
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("store_enqueue");
    g.throughput(Throughput::Elements(CONCURRENCY as u64));
    g.sample_size(10);
    for (engine, group_commit) in ENGINES.into_iter().flat_map(|e| [(e, true), (e, false)]) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(engine, dir.path(), group_commit);
        let mut n = 0u64;
        let name = if group_commit {
            "group_commit"
        } else {
            "commit_per_write"
        };
        g.bench_function(format!("{engine}{name}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let now = now_ms();
                    let mut tasks = Vec::with_capacity(CONCURRENCY);
                    for _ in 0..CONCURRENCY {
                        n += 1;
                        let s = store.clone();
                        let e = entry(
                            &format!("agt_{}", n % 64),
                            &format!("msg_{n}_a"),
                            "s@x.test",
                            now,
                            3_600_000,
                        );
                        tasks.push(tokio::spawn(async move { s.enqueue(e).await }));
                    }
                    for t in tasks {
                        t.await.expect("task").expect("enqueue");
                    }
                })
            })
        });
    }
    g.finish();
}

/// Messages in the mailbox the page is read from.
const STORED: u64 = 1_000;
/// One pickup page.
const PAGE: usize = 100;

fn page_read(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("store_fetch");
    g.throughput(Throughput::Elements(PAGE as u64));
    for engine in ENGINES {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(engine, dir.path(), true);
        fill_and_read(&rt, &mut g, engine, &store);
    }
    g.finish();
}

/// Fills one mailbox with `STORED` messages and benches the read of its first page.
fn fill_and_read(
    rt: &tokio::runtime::Runtime,
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    engine: &str,
    store: &Store,
) {
    let now = now_ms();
    rt.block_on(async {
        for n in 0..STORED {
            let e = entry(
                "agt_reader",
                &format!("msg_{n}_a"),
                "s@x.test",
                now,
                3_600_000,
            );
            store.enqueue(e).await.expect("enqueue");
        }
    });
    g.bench_function(format!("{engine}page_of_100"), |b| {
        b.iter(|| {
            let page = rt
                .block_on(store.fetch("agt_reader", None, PAGE, now))
                .expect("fetch");
            assert_eq!(page.entries.len(), PAGE);
            page
        })
    });
}

criterion_group!(commits, bench, page_read);
criterion_main!(commits);
