//! A redb store copied onto fjall ([`amp_store::migrate`]): every row of every table the
//! same afterwards, and the copy usable through the API; a non-empty target, a store in use
//! and a table fjall does not know refused.

use amp_store::fjall::{FjallConfig, FjallStore};
use amp_store::migrate::{self, Batch, MigrateError};
use amp_store::redb::{RedbConfig, RedbStore};
use amp_store::testing::{self, agent, entry, key_hash, now_ms, unique};
use amp_store::*;

const DAY: i64 = 86_400_000;

/// What the filled store holds that the checks after the copy look for.
struct Filled {
    /// An agent with two pending messages and one acknowledged.
    agent: AgentRecord,
    /// Its API key.
    key: KeyHash,
    /// Its pending messages' ids, in order.
    pending: Vec<String>,
    /// The acknowledged one.
    acked: String,
    /// A job due now, of this kind.
    job_kind: String,
    /// A kv key without expiry and its value.
    kv: (String, Vec<u8>),
    /// An owner's user key.
    owner_key: KeyHash,
    /// An attachment's id (at revision 2).
    attachment: String,
}

/// Something in every table: a deleted tenant and a kept one (agents with keys, owners,
/// messages queued and acknowledged, receipts, sessions, markers, jobs, tenants, owner keys,
/// invites, held ledgers), suspensions, risk rows, a quarantined message, an owner, an
/// attachment, kv with and without expiry, an idempotency record, a deregistered agent's
/// held name.
async fn fill(store: &Store) -> Filled {
    let now = now_ms();
    testing::purge::delete_a_tenant_for_a_scan(store).await;
    testing::suspension::spec_next_suspensions_round_trip(store).await;
    testing::risk::spec_next_risk_rows_summed_over_the_window(store).await;
    testing::quarantine::spec_next_quarantine_held_once_and_decided_once(store).await;

    let t = unique("mig");
    let a = agent(&t, "alice", now);
    let key = key_hash(&unique("k"));
    store
        .create_agent(a.clone(), key, now)
        .await
        .expect("agent");
    let ids: Vec<String> = (0..3).map(|i| format!("msg_{i}_{}", a.id)).collect();
    for id in &ids {
        store
            .enqueue(entry(&a.id, id, "s@x.example.test", now, DAY))
            .await
            .expect("enqueue");
    }
    store.ack(&a.id, &ids[..1], now).await.expect("ack");
    let gone = agent(&t, "bob", now);
    store
        .create_agent(gone.clone(), key_hash(&unique("k")), now)
        .await
        .expect("bob");
    store
        .deregister_agent(&gone.id, now, now + DAY)
        .await
        .expect("deregister");

    let job_kind = unique("kind");
    store
        .schedule(Job {
            id: unique("job_"),
            kind: job_kind.clone(),
            due_at: now - 1,
            attempt: 0,
            data: "{}".into(),
        })
        .await
        .expect("job");
    let kv = (unique("state/"), b"forever".to_vec());
    store.put(&kv.0, kv.1.clone(), None).await.expect("kv");
    store
        .put(
            &format!("idem/{}", unique("r")),
            b"{}".to_vec(),
            Some(now + DAY),
        )
        .await
        .expect("idempotency record");

    let owner_key = key_hash(&unique("uk"));
    store
        .put_owner(
            OwnerRecord {
                id: unique("usr_"),
                tenant: t.clone(),
                agent_limit: 5,
                suspended: false,
            },
            owner_key,
        )
        .await
        .expect("owner");

    let att = testing::conformance::attachment_record(now);
    assert!(store.attachment_create(&att).await.expect("attachment"));
    assert!(
        store
            .attachment_replace(&att, 1)
            .await
            .expect("attachment replace")
    );
    store
        .presence_set(&a.id, "s1", now + DAY)
        .await
        .expect("session");

    Filled {
        agent: a,
        key,
        pending: ids[1..].to_vec(),
        acked: ids[0].clone(),
        job_kind,
        kv,
        owner_key,
        attachment: att.id,
    }
}

/// The two scanners print some tables differently; this brings a redb row to fjall's text:
/// redb keys `names` by the string `tenant/name` (fjall by the pair), prints `agent_keys`'
/// agent unquoted and the unit value as `()` (fjall: empty), and a value that is not UTF-8
/// (a mailbox row's binary header) as hex where fjall prints it lossily.
fn as_fjall_prints(mut row: ScannedRow) -> ScannedRow {
    match row.table.as_str() {
        "names" => {
            if let Some((t, n)) = row.key.split_once('/') {
                row.key = format!("({t:?}, {n:?})");
            }
        }
        "agent_keys" => {
            if let Some((a, h)) = row
                .key
                .strip_prefix('(')
                .and_then(|k| k.strip_suffix(')'))
                .and_then(|k| k.split_once(", "))
            {
                row.key = format!("({a:?}, {h})");
            }
        }
        _ => {}
    }
    if row.value == "()" {
        row.value.clear();
    }
    if let Some(bytes) = unhex(&row.value)
        && std::str::from_utf8(&bytes).is_err()
    {
        // redb printed hex only because the bytes are not UTF-8.
        row.value = String::from_utf8_lossy(&bytes).into_owned();
    }
    row
}

/// Bytes from lowercase hex (none when it is not).
fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Rows as sortable tuples.
fn sorted(rows: Vec<ScannedRow>) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = rows
        .into_iter()
        .map(|r| (r.table, r.key, r.value))
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_every_row_and_the_copy_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redb_cfg = RedbConfig::in_dir(dir.path());
    let redb = RedbStore::open(&redb_cfg).expect("open redb");
    let store = Store::new(redb);
    let filled = fill(&store).await;
    store.close().await.expect("close");
    drop(store);

    let redb = RedbStore::open(&redb_cfg).expect("reopen redb");
    let before = redb.scan_rows().expect("scan redb");
    drop(redb);
    let tables: std::collections::BTreeSet<&str> =
        before.iter().map(|r| r.table.as_str()).collect();
    let empty: Vec<&str> = migrate_tables()
        .into_iter()
        .filter(|t| !tables.contains(t))
        .collect();
    assert!(empty.is_empty(), "tables with no row to copy: {empty:?}");

    let fjall_dir = dir.path().join("amp.fjall");
    // Small batches: many commits, one ending mid-table.
    let batch = Batch {
        rows: 7,
        bytes: 1 << 20,
    };
    let counts = migrate::redb_to_fjall(&redb_cfg.path, &fjall_dir, batch).expect("migrate");
    let total: u64 = counts.iter().map(|c| c.rows).sum();
    assert_eq!(total, before.len() as u64, "counts: {counts:?}");
    for c in &counts {
        let n = before.iter().filter(|r| r.table == c.table).count() as u64;
        assert_eq!(c.rows, n, "rows of {}", c.table);
    }

    let fjall = FjallStore::open(&FjallConfig {
        path: fjall_dir.clone(),
        ..FjallConfig::in_dir(dir.path())
    })
    .expect("open fjall");
    let after = fjall.scan_rows().expect("scan fjall");
    let want = sorted(before.into_iter().map(as_fjall_prints).collect());
    let got = sorted(after);
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }

    // Usable, not only equal: through the API.
    let store = Store::new(fjall);
    let now = now_ms();
    let a = &filled.agent;
    let (found, _) = store
        .agent_by_api_key(&filled.key)
        .await
        .expect("by key")
        .expect("the key still works");
    assert_eq!(found.id, a.id);
    assert_eq!(
        store
            .agent_by_name(&a.tenant, &a.name)
            .await
            .expect("by name")
            .map(|x| x.id),
        Some(a.id.clone())
    );
    let (_, active) = store
        .list_agents(&a.tenant, None, None, 10)
        .await
        .expect("list");
    assert_eq!(active, 1, "the tenant's count of active names");
    let page = store.fetch(&a.id, None, 100, now).await.expect("fetch");
    let ids: Vec<&str> = page.entries.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, filled.pending);
    assert_eq!(page.head, 3);
    let acks = store
        .ack(
            &a.id,
            &[filled.pending[0].clone(), filled.acked.clone()],
            now,
        )
        .await
        .expect("ack");
    assert_eq!(
        acks.iter().map(|a| a.outcome).collect::<Vec<_>>(),
        [AckOutcome::Acked, AckOutcome::AlreadyAcked]
    );
    assert_eq!(
        acks[0].removed.as_ref().map(|e| e.message_id.as_str()),
        Some(filled.pending[0].as_str()),
        "the migrated entry is the one removed"
    );
    let again = store
        .enqueue(entry(&a.id, &filled.acked, "s@x.example.test", now, DAY))
        .await
        .expect("retry of an acknowledged message");
    assert_eq!(again, Enqueued::Duplicate { seq: 1 });
    let next = store
        .enqueue(entry(&a.id, &unique("msg_"), "s@x.example.test", now, DAY))
        .await
        .expect("enqueue");
    assert_eq!(next, Enqueued::New { seq: 4 });
    assert_eq!(store.count(&a.id, now).await.expect("count").count, 2);

    let due = store
        .due_jobs(&filled.job_kind, now, 10)
        .await
        .expect("due jobs");
    assert_eq!(due.len(), 1);
    assert!(store.claim(&due[0], now + DAY).await.expect("claim"));
    assert!(
        store
            .due_jobs(&filled.job_kind, now, 10)
            .await
            .expect("due jobs")
            .is_empty(),
        "claimed"
    );
    assert_eq!(
        store.get(&filled.kv.0).await.expect("kv"),
        Some(filled.kv.1.clone())
    );
    assert!(
        store
            .owner_by_user_key(&filled.owner_key)
            .await
            .expect("owner")
            .is_some()
    );
    let att = store
        .attachment(&filled.attachment)
        .await
        .expect("attachment")
        .expect("there");
    assert_eq!(att.revision, 2);
    assert_eq!(store.presence_count(&a.id, now).await.expect("presence"), 1);
    store.close().await.expect("close");
}

/// Every table an embedded store has, as a fresh redb file lists them.
fn migrate_tables() -> Vec<&'static str> {
    vec![
        "agents",
        "names",
        "tenant_active",
        "owned",
        "api_keys",
        "agent_keys",
        "owners",
        "owner_keys",
        "mailbox",
        "msg_index",
        "mbox_meta",
        "expiry",
        "receipts",
        "receipt_head",
        "jobs",
        "job_ids",
        "kv",
        "kv_expires",
        "kv_expiry",
        "presence",
        "records",
        "attachments",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_of_an_empty_store_gives_every_table_and_no_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redb_cfg = RedbConfig::in_dir(dir.path());
    drop(RedbStore::open(&redb_cfg).expect("create redb"));
    let counts = migrate::redb_to_fjall(
        &redb_cfg.path,
        &dir.path().join("amp.fjall"),
        Batch::default(),
    )
    .expect("migrate");
    let names: Vec<&str> = counts.iter().map(|c| c.table.as_str()).collect();
    assert_eq!(names, migrate_tables());
    assert!(counts.iter().all(|c| c.rows == 0), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_a_target_that_is_not_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redb_cfg = RedbConfig::in_dir(dir.path());
    drop(RedbStore::open(&redb_cfg).expect("create redb"));
    let target = dir.path().join("amp.fjall");
    std::fs::create_dir_all(&target).expect("target dir");
    std::fs::write(target.join("something"), b"x").expect("a file");
    let e = migrate::redb_to_fjall(&redb_cfg.path, &target, Batch::default()).expect_err("refused");
    assert!(matches!(e, MigrateError::TargetNotEmpty(_)), "{e}");

    // An existing fjall store with a row is not empty either.
    let other = tempfile::tempdir().expect("tempdir");
    let fjall = testing_fjall(other.path());
    fjall.put("k", b"v".to_vec(), None).await.expect("put");
    fjall.close().await.expect("close");
    drop(fjall);
    let e = migrate::redb_to_fjall(
        &redb_cfg.path,
        &other.path().join("amp.fjall"),
        Batch::default(),
    )
    .expect_err("refused");
    assert!(matches!(e, MigrateError::TargetNotEmpty(_)), "{e}");
}

/// A fjall store in `dir`.
fn testing_fjall(dir: &std::path::Path) -> Store {
    Store::new(FjallStore::open(&FjallConfig::in_dir(dir)).expect("open fjall"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_a_store_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redb_cfg = RedbConfig::in_dir(dir.path());
    let open = RedbStore::open(&redb_cfg).expect("open redb");
    let target = dir.path().join("amp.fjall");
    let e = migrate::redb_to_fjall(&redb_cfg.path, &target, Batch::default())
        .expect_err("refused while open");
    assert!(matches!(e, MigrateError::SourceInUse(_)), "{e}");
    assert!(e.to_string().contains("in use"), "{e}");
    assert!(!target.exists(), "nothing written");
    drop(open);
    migrate::redb_to_fjall(&redb_cfg.path, &target, Batch::default()).expect("once closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_refuses_a_table_fjall_does_not_know() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redb_cfg = RedbConfig::in_dir(dir.path());
    drop(RedbStore::open(&redb_cfg).expect("create redb"));
    {
        // What a later version might add.
        let db = ::redb::Database::create(&redb_cfg.path).expect("raw open");
        let txn = db.begin_write().expect("write");
        txn.open_table(::redb::TableDefinition::<&str, &[u8]>::new("future"))
            .expect("table")
            .insert("k", b"v".as_slice())
            .expect("row");
        txn.commit().expect("commit");
    }
    let target = dir.path().join("amp.fjall");
    let e = migrate::redb_to_fjall(&redb_cfg.path, &target, Batch::default()).expect_err("refused");
    assert!(
        matches!(&e, MigrateError::UnknownTable(t) if t == "future"),
        "{e}"
    );
}
