//! The conformance checks of [`Records`] and of the operator plane's typed records
//! ([`crate::operator`]); [`super::conformance::run_all`] and
//! [`super::conformance::run_two_writers`] call them.

use crate::operator::*;
use crate::testing::{key_hash, now_ms, unique};
use crate::*;

/// Create-if-absent, replace, ordered listing with a cursor, take.
pub async fn records_create_replace_list_take(store: &Store) {
    let c = unique("col");
    for id in ["b", "a", "c.d", "a-1"] {
        assert!(
            store
                .record_put(&c, id, id.as_bytes().to_vec(), PutMode::Create)
                .await
                .expect("create"),
            "{id} is new"
        );
    }
    assert!(
        !store
            .record_put(&c, "a", b"again".to_vec(), PutMode::Create)
            .await
            .expect("create a taken id"),
        "a taken id is not created again"
    );
    assert_eq!(
        store.record_get(&c, "a").await.expect("get"),
        Some(b"a".to_vec())
    );
    assert!(
        store
            .record_put(&c, "a", b"new".to_vec(), PutMode::Replace)
            .await
            .expect("replace")
    );
    assert_eq!(
        store.record_get(&c, "a").await.expect("get"),
        Some(b"new".to_vec())
    );
    assert_eq!(store.record_get(&c, "zz").await.expect("get"), None);
    assert_eq!(
        store.record_get(&unique("col"), "a").await.expect("get"),
        None
    );

    let ids = |rows: Vec<(String, Vec<u8>)>| rows.into_iter().map(|r| r.0).collect::<Vec<_>>();
    assert_eq!(
        ids(store.record_list(&c, None, 10).await.expect("list")),
        ["a", "a-1", "b", "c.d"]
    );
    assert_eq!(
        ids(store.record_list(&c, Some("a"), 2).await.expect("page")),
        ["a-1", "b"]
    );
    assert_eq!(
        ids(store.record_list(&c, Some("b"), 10).await.expect("page")),
        ["c.d"]
    );
    assert!(
        store
            .record_list(&c, None, 0)
            .await
            .expect("empty page")
            .is_empty()
    );

    assert!(store.record_take(&c, "a").await.expect("take"));
    assert!(!store.record_take(&c, "a").await.expect("take again"));
    assert!(!store.record_take(&c, "never").await.expect("take unknown"));
    assert_eq!(store.record_get(&c, "a").await.expect("get"), None);
    assert_eq!(
        ids(store.record_list(&c, None, 10).await.expect("list")),
        ["a-1", "b", "c.d"]
    );
    // A taken id can be created again.
    assert!(
        store
            .record_put(&c, "a", b"back".to_vec(), PutMode::Create)
            .await
            .expect("create again")
    );
}

/// Of concurrent creators of one id, and of concurrent takers of one record, exactly one
/// wins (across two handles: two processes of a cluster).
pub async fn records_created_and_taken_once(a: &Store, b: &Store) {
    let c = unique("col");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            s.record_put(&c, "one", vec![i], PutMode::Create).await
        }));
    }
    let mut created = 0;
    for t in tasks {
        created += usize::from(t.await.expect("join").expect("create"));
    }
    assert_eq!(created, 1, "one creator wins");

    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        let c = c.clone();
        tasks.push(tokio::spawn(async move { s.record_take(&c, "one").await }));
    }
    let mut taken = 0;
    for t in tasks {
        taken += usize::from(t.await.expect("join").expect("take"));
    }
    assert_eq!(taken, 1, "one taker wins");
}

/// Tenants, owner keys by tenant, invites used once and not after expiry, the audit log
/// in time order with a cursor.
pub async fn operator_records_typed(store: &Store) {
    let now = now_ms();
    let name = unique("t");
    let t = TenantRecord {
        name: name.clone(),
        status: TenantStatus::Active,
        registration: TenantRegistration::OwnerKey,
        suspended_reason: None,
        notify: None,
        plan: Default::default(),
        created_at: now,
        updated_at: now,
    };
    assert!(store.create_tenant(&t).await.expect("create tenant"));
    assert!(!store.create_tenant(&t).await.expect("create again"));
    let mut s = t.clone();
    s.status = TenantStatus::Suspended;
    s.plan.messages_per_minute = Some(5);
    s.plan.federation = Some(false);
    store.put_tenant(&s).await.expect("suspend");
    assert_eq!(store.tenant(&name).await.expect("get"), Some(s));
    let page = store
        .list_tenants(Some(&name[..name.len() - 1]), 1000)
        .await
        .expect("list");
    assert!(page.iter().any(|x| x.name == name));

    // Owner keys: listed per tenant only.
    let other = unique("t");
    let key = |tenant: &str, id: &str, at: Millis| OwnerKey {
        id: id.into(),
        tenant: tenant.into(),
        owner_id: format!("owner-{tenant}"),
        prefix: "uk_abc".into(),
        agent_limit: None,
        created_at: at,
        expires_at: None,
        revoked_at: None,
        replaced_by: None,
    };
    let (h1, h2, h3) = (
        key_hash(&unique("k")),
        key_hash(&unique("k")),
        key_hash(&unique("k")),
    );
    assert!(
        store
            .put_owner_key(&h1, &key(&name, "ok_1", now), PutMode::Create)
            .await
            .expect("k1")
    );
    assert!(
        store
            .put_owner_key(&h2, &key(&name, "ok_2", now + 1), PutMode::Create)
            .await
            .expect("k2")
    );
    assert!(
        store
            .put_owner_key(&h3, &key(&other, "ok_3", now), PutMode::Create)
            .await
            .expect("k3")
    );
    assert!(
        !store
            .put_owner_key(&h1, &key(&name, "ok_9", now), PutMode::Create)
            .await
            .expect("k1 again")
    );
    let keys = store.owner_keys(&name).await.expect("keys");
    assert_eq!(
        keys.iter().map(|k| k.1.id.as_str()).collect::<Vec<_>>(),
        ["ok_1", "ok_2"]
    );
    let (hex1, mut k1) = keys[0].clone();
    assert_eq!(hex1, hash_id(&h1));
    k1.revoked_at = Some(now);
    store.update_owner_key(&hex1, &k1).await.expect("revoke");
    let found = store
        .owner_key_by_hash(&h1)
        .await
        .expect("by hash")
        .expect("known");
    assert!(!found.valid_at(now + 1));
    assert!(
        store
            .owner_key_by_hash(&key_hash("unknown"))
            .await
            .expect("by hash")
            .is_none()
    );

    // Invites: once, for their tenant, before expiry.
    let inv = |tenant: &str, expires_at: Millis| Invite {
        id: unique("inv_"),
        tenant: tenant.into(),
        created_at: now,
        expires_at,
        created_by: "opt_x".into(),
    };
    let (i1, i2) = (key_hash(&unique("i")), key_hash(&unique("i")));
    store
        .put_invite(&i1, &inv(&name, now + 60_000))
        .await
        .expect("invite");
    store
        .put_invite(&i2, &inv(&name, now - 1))
        .await
        .expect("expired invite");
    assert!(
        store
            .take_invite(&i1, &other, now)
            .await
            .expect("other tenant")
            .is_none()
    );
    assert!(
        store
            .take_invite(&i1, &name, now)
            .await
            .expect("take")
            .is_some()
    );
    assert!(
        store
            .take_invite(&i1, &name, now)
            .await
            .expect("take again")
            .is_none()
    );
    assert!(
        store
            .take_invite(&i2, &name, now)
            .await
            .expect("expired")
            .is_none()
    );

    // Audit: time order and a cursor (entries of other checks may interleave: filter).
    let target = unique("target");
    let mut ids = Vec::new();
    for i in 0..5 {
        let e = AuditEntry::new(now + i, "opt_test", "tenant.update", target.clone());
        ids.push(e.id.clone());
        store.append_audit(&e).await.expect("append");
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = Some(format!("{:015}", now - 1));
    loop {
        let page = store.audit(after.as_deref(), 2).await.expect("audit page");
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        seen.extend(
            page.into_iter()
                .filter(|e| e.target == target)
                .map(|e| e.id),
        );
    }
    assert_eq!(seen, ids, "every entry once, in time order");
}

/// Usage rows: each replica's row replaced by its running totals, rows summed per period at
/// read, in time order, bounded by the range, one tenant's never mixed with another's (a
/// tenant whose name extends another's included), hour and day rows apart; the every-tenant
/// read lists the noted tenants by name.
pub async fn operator_usage_rows_sum_replicas(store: &Store) {
    use crate::usage::*;
    let a = unique("u");
    let longer = format!("{a}-x");
    let counts = |n: u64| UsageCounts {
        messages_in: n,
        messages_out: 2 * n,
        federated_in: 3,
        federated_out: 0,
        bytes_stored: 100 * n,
        agents: n,
        connections: 1,
        bytes_held: 10 * n,
    };
    store.note_usage_tenant(&a).await.expect("note");
    store.note_usage_tenant(&longer).await.expect("note");
    store
        .note_usage_tenant(&a)
        .await
        .expect("noted twice is once");
    let h0 = Period::Hour.start_of(now_ms()) - 5 * HOUR_MS;
    let h = |i: i64| h0 + i * HOUR_MS;
    // Replica r1 writes twice for hour 1 (the second replaces the first).
    store
        .put_usage(&a, Period::Hour, h(1), "r1", &counts(1))
        .await
        .expect("put");
    store
        .put_usage(&a, Period::Hour, h(1), "r1", &counts(4))
        .await
        .expect("put");
    store
        .put_usage(&a, Period::Hour, h(1), "r2", &counts(2))
        .await
        .expect("put");
    store
        .put_usage(&a, Period::Hour, h(0), "r2", &counts(7))
        .await
        .expect("put");
    store
        .put_usage(&a, Period::Hour, h(3), "r1", &counts(1))
        .await
        .expect("put");
    store
        .put_usage(
            &a,
            Period::Day,
            Period::Day.start_of(h(1)),
            "r1",
            &counts(9),
        )
        .await
        .expect("put");
    store
        .put_usage(&longer, Period::Hour, h(1), "r1", &counts(50))
        .await
        .expect("put");

    let rows = store
        .usage(Some(&a), Period::Hour, h(0), h(5))
        .await
        .expect("usage");
    let got: Vec<(Millis, u64, u64, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r.start,
                r.counts.messages_in,
                r.counts.messages_out,
                r.counts.agents,
                r.counts.connections,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![(h(0), 7, 14, 7, 1), (h(1), 6, 12, 4, 2), (h(3), 1, 2, 1, 1)],
        "replicas summed (agents: the largest sample), in time order"
    );
    assert!(rows.iter().all(|r| r.tenant == a));
    assert_eq!(rows[1].counts.federated_in, 6);
    assert_eq!(rows[1].counts.bytes_stored, 600);
    assert_eq!(rows[1].counts.bytes_held, 40, "the largest sample");

    // The range is [from, to).
    let rows = store
        .usage(Some(&a), Period::Hour, h(1), h(3))
        .await
        .expect("usage");
    assert_eq!(rows.iter().map(|r| r.start).collect::<Vec<_>>(), vec![h(1)]);

    let days = store
        .usage(
            Some(&a),
            Period::Day,
            Period::Day.start_of(h(0)) - DAY_MS,
            h(5) + DAY_MS,
        )
        .await
        .expect("days");
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].counts.messages_in, 9);

    // Every tenant: both (by name), each with its own rows, hour rows only.
    let all = store
        .usage(None, Period::Hour, h(1), h(2))
        .await
        .expect("all");
    let mine: Vec<(&str, u64)> = all
        .iter()
        .filter(|r| r.tenant == a || r.tenant == longer)
        .map(|r| (r.tenant.as_str(), r.counts.messages_in))
        .collect();
    assert_eq!(mine, vec![(a.as_str(), 6), (longer.as_str(), 50)]);

    // Open connections: per replica, the latest report each, stale ones left out.
    let now = now_ms();
    store.put_connections(&a, "r1", 5, now).await.expect("put");
    store
        .put_connections(&a, "r1", 2, now)
        .await
        .expect("replace");
    store.put_connections(&a, "r2", 3, now).await.expect("put");
    store
        .put_connections(&a, "r3", 7, now - 60_000)
        .await
        .expect("put");
    store
        .put_connections(&longer, "r2", 11, now)
        .await
        .expect("put");
    let since = now - 1000;
    assert_eq!(
        store
            .connections_elsewhere(&a, "r9", since)
            .await
            .expect("sum"),
        5
    );
    assert_eq!(
        store
            .connections_elsewhere(&a, "r1", since)
            .await
            .expect("sum"),
        3
    );
    assert_eq!(
        store
            .connections_elsewhere(&longer, "r1", since)
            .await
            .expect("sum"),
        11
    );
    store
        .put_connections(&a, "r2", 0, now)
        .await
        .expect("none open");
    assert_eq!(
        store
            .connections_elsewhere(&a, "r1", since)
            .await
            .expect("sum"),
        0
    );
    assert!(
        store
            .record_list(&connections_collection(&a), None, 10)
            .await
            .expect("list")
            .iter()
            .all(|(r, _)| r != "r2"),
        "no report left for a replica with nothing open"
    );
}

/// Usage rows older than their period's retention are deleted, the others kept, for one
/// tenant and for every tenant; a second sweep finds nothing (`operator` runs it alone).
pub async fn operator_usage_rows_expire_after_retention(store: &Store) {
    use crate::usage::*;
    let (a, b) = (unique("ur"), unique("ur"));
    let now = now_ms();
    let retention = UsageRetention::days(35, 400);
    let hour = |days_ago: i64| Period::Hour.start_of(now - days_ago * DAY_MS);
    let day = |days_ago: i64| Period::Day.start_of(now - days_ago * DAY_MS);
    let one = UsageCounts {
        messages_in: 1,
        ..Default::default()
    };
    for t in [&a, &b] {
        store.note_usage_tenant(t).await.expect("note");
        for (period, start) in [
            (Period::Hour, hour(40)),
            (Period::Hour, hour(36)),
            (Period::Hour, hour(34)),
            (Period::Hour, hour(0)),
            (Period::Day, day(500)),
            (Period::Day, day(401)),
            (Period::Day, day(399)),
            (Period::Day, day(0)),
        ] {
            for replica in ["r1", "r2"] {
                store
                    .put_usage(t, period, start, replica, &one)
                    .await
                    .expect("put");
            }
        }
    }
    let starts = |rows: Vec<UsageRow>| rows.iter().map(|r| r.start).collect::<Vec<_>>();
    let read = |t: String, period: Period| async move {
        store
            .usage(Some(&t), period, 0, now + DAY_MS)
            .await
            .expect("usage")
    };

    assert_eq!(
        store
            .expire_usage_of(&a, now, retention)
            .await
            .expect("expire"),
        8,
        "two old hours and two old days, of two replicas"
    );
    assert_eq!(
        starts(read(a.clone(), Period::Hour).await),
        vec![hour(34), hour(0)]
    );
    assert_eq!(
        starts(read(a.clone(), Period::Day).await),
        vec![day(399), day(0)]
    );
    assert!(read(a.clone(), Period::Hour).await[0].counts.messages_in == 2);
    assert_eq!(
        read(b.clone(), Period::Hour).await.len(),
        4,
        "another tenant's rows are its own"
    );

    // Every tenant; the other's rows go too, and nothing of what is kept.
    let removed = store
        .expire_usage(now, retention)
        .await
        .expect("expire all");
    assert!(removed >= 8, "{removed}");
    for t in [&a, &b] {
        assert_eq!(
            starts(read(t.clone(), Period::Hour).await),
            vec![hour(34), hour(0)]
        );
        assert_eq!(
            starts(read(t.clone(), Period::Day).await),
            vec![day(399), day(0)]
        );
    }
    assert_eq!(
        store
            .expire_usage_of(&a, now, retention)
            .await
            .expect("again"),
        0
    );
    // Kept for good: nothing to do.
    assert_eq!(
        store
            .expire_usage_of(&a, now + 10_000 * DAY_MS, UsageRetention::days(0, 0))
            .await
            .expect("never"),
        0
    );
}

/// Held-bytes ledgers of several replicas: summed per bucket without the asking replica's,
/// ended buckets left out, a ledger with nothing live deleted on the way, an empty ledger
/// written as none (`operator` runs it alone).
pub async fn operator_held_ledgers_sum_replicas(store: &Store) {
    use crate::usage::*;
    let t = unique("held");
    let now = now_ms();
    let b = |hours: i64| held_bucket(now) + hours * HELD_BUCKET_MS;
    let ledger = |buckets: Vec<(Millis, i64)>| HeldLedger { at: now, buckets };
    store
        .put_held(&t, "r1", &ledger(vec![(b(1), 100), (b(2), 50)]))
        .await
        .expect("put");
    store
        .put_held(&t, "r1", &ledger(vec![(b(1), 300), (b(3), 7)]))
        .await
        .expect("replace");
    store
        .put_held(&t, "r2", &ledger(vec![(b(1), -40), (b(-2), 1000)]))
        .await
        .expect("put");
    // A stopped replica's ledger, every bucket ended.
    store
        .put_held(&t, "r3", &ledger(vec![(b(-3), 9), (b(-1), 9)]))
        .await
        .expect("put");
    store
        .put_held(&unique("held"), "r1", &ledger(vec![(b(1), 5)]))
        .await
        .expect("another tenant");

    let all = store.held_elsewhere(&t, "r9", now).await.expect("sum");
    assert_eq!(
        all.into_iter().collect::<Vec<_>>(),
        vec![(b(1), 260), (b(3), 7)],
        "replicas summed per bucket, ended buckets left out"
    );
    let others = store.held_elsewhere(&t, "r1", now).await.expect("sum");
    assert_eq!(others.into_iter().collect::<Vec<_>>(), vec![(b(1), -40)]);
    let ids: Vec<String> = store
        .record_list(&held_collection(&t), None, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, vec!["r1", "r2"], "the ended ledger went");
    store
        .put_held(&t, "r2", &HeldLedger::default())
        .await
        .expect("empty");
    let others = store.held_elsewhere(&t, "r1", now).await.expect("sum");
    assert!(others.is_empty(), "{others:?}");
}
