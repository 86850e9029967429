//! Durable commits per second of the embedded store, with and without group commit.
//! Each iteration enqueues `CONCURRENCY` messages from concurrent tasks and waits for all of
//! them to be durable. Run with `cargo bench -p amp-store`.

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

criterion_group!(commits, bench);
criterion_main!(commits);
