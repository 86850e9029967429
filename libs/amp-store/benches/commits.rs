//! The embedded store's hot paths: durable commits per second, with and without group
//! commit (each iteration enqueues `CONCURRENCY` messages from concurrent tasks and waits for
//! all of them to be durable), and the read of one pickup page of 100 messages. Run with
//! `cargo bench -p amp-store`; CI runs it in Criterion's quick mode (`deploy/test.sh`).

use amp_store::Store;
use amp_store::redb::{RedbConfig, RedbStore};
use amp_store::testing::{entry, now_ms};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const CONCURRENCY: usize = 256;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("store_enqueue");
    g.throughput(Throughput::Elements(CONCURRENCY as u64));
    g.sample_size(10);
    for group_commit in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = RedbConfig {
            group_commit,
            ..RedbConfig::in_dir(dir.path())
        };
        let store = Store::new(RedbStore::open(&cfg).expect("open"));
        let mut n = 0u64;
        let name = if group_commit {
            "group_commit"
        } else {
            "commit_per_write"
        };
        g.bench_function(name, |b| {
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
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::new(RedbStore::open(&RedbConfig::in_dir(dir.path())).expect("open"));
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
    let mut g = c.benchmark_group("store_fetch");
    g.throughput(Throughput::Elements(PAGE as u64));
    g.bench_function("page_of_100", |b| {
        b.iter(|| {
            let page = rt
                .block_on(store.fetch("agt_reader", None, PAGE, now))
                .expect("fetch");
            assert_eq!(page.entries.len(), PAGE);
            page
        })
    });
    g.finish();
}

criterion_group!(commits, bench, page_read);
criterion_main!(commits);
