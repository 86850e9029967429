//! The conformance checks of [`Purge`] and of tenant deletion ([`crate::deletion`]);
//! [`super::conformance::run_all`] calls them.

use crate::deletion::{self, DeletionStatus, TenantDeletion};
use crate::operator::*;
use crate::testing::{agent, entry, key_hash, now_ms, unique};
use crate::usage::Usage as _;
use crate::*;

const DAY: i64 = 86_400_000;

/// An agent with two keys, an owner, three messages (one acknowledged), two receipts and a
/// session.
async fn populated(
    store: &Store,
    tenant: &str,
    name: &str,
    now: Millis,
) -> (AgentRecord, Vec<KeyHash>) {
    let mut a = agent(tenant, name, now);
    a.owner_id = Some(unique("own_"));
    let (k1, k2) = (key_hash(&unique("k")), key_hash(&unique("k")));
    store
        .create_agent(a.clone(), k1, now)
        .await
        .expect("create");
    store
        .rotate_api_key(&a.id, k2, now, now + DAY)
        .await
        .expect("second key");
    for i in 0..3 {
        store
            .enqueue(entry(
                &a.id,
                &format!("msg_{i}_{name}"),
                "s@x.example.test",
                now,
                DAY,
            ))
            .await
            .expect("enqueue");
    }
    store
        .ack(&a.id, &[format!("msg_0_{name}")], now)
        .await
        .expect("ack");
    for i in 0..2 {
        store
            .put_receipt(
                &a.id,
                Receipt {
                    seq: 0,
                    data: format!("r{i}"),
                    created_at: now,
                    expires_at: now + DAY,
                },
            )
            .await
            .expect("receipt");
    }
    store
        .presence_set(&a.id, "s1", now + 60_000)
        .await
        .expect("presence");
    for (i, kind) in MESSAGE_MARKERS.iter().enumerate() {
        let key = message_marker(kind, &a.id, &format!("msg_{i}_{name}"));
        store
            .put(&key, b"1".to_vec(), Some(now + DAY))
            .await
            .expect("marker");
    }
    (a, vec![k1, k2])
}

/// A purge removes the agent's record, name (free at once, no hold), keys, owner link,
/// mailbox (acknowledged ids too: the id is new again), receipts and sessions; is
/// idempotent; and leaves another agent's data as it was.
pub async fn purge_agent_removes_everything_about_it(store: &Store) {
    let now = now_ms();
    let tenant = unique("t");
    let (a, keys) = populated(store, &tenant, "gone", now).await;
    let (c, c_keys) = populated(store, &unique("t"), "kept", now).await;

    let listed = store.tenant_agents(&tenant, 100).await.expect("list");
    assert_eq!(listed, std::slice::from_ref(&a.id));

    let p = store.purge_agent(&a.id).await.expect("purge");
    assert!(p.messages >= 2, "queued messages counted: {p:?}");
    assert_eq!(p.receipts, 2);

    assert!(store.agent(&a.id).await.expect("agent").is_none());
    assert!(
        store
            .agent_by_name(&tenant, "gone")
            .await
            .expect("name")
            .is_none()
    );
    for k in &keys {
        assert!(store.agent_by_api_key(k).await.expect("key").is_none());
    }
    assert_eq!(
        store
            .count_owned_agents(a.owner_id.as_deref().unwrap_or_default())
            .await
            .expect("owned"),
        0
    );
    assert!(
        store
            .fetch(&a.id, None, 10, now)
            .await
            .expect("fetch")
            .entries
            .is_empty()
    );
    assert_eq!(store.count(&a.id, now).await.expect("count").count, 0);
    assert!(
        store
            .entry(&a.id, "msg_0_gone", now)
            .await
            .expect("acked id")
            .is_none()
    );
    assert!(
        store
            .receipts(&a.id, None, 10, now)
            .await
            .expect("receipts")
            .is_empty()
    );
    assert_eq!(store.presence_count(&a.id, now).await.expect("presence"), 0);
    for (i, kind) in MESSAGE_MARKERS.iter().enumerate() {
        let key = message_marker(kind, &a.id, &format!("msg_{i}_gone"));
        assert_eq!(store.get(&key).await.expect("marker"), None, "{key}");
    }
    assert!(
        store
            .tenant_agents(&tenant, 100)
            .await
            .expect("list")
            .is_empty()
    );

    // Idempotent, and nothing is held: the name and a once-acknowledged id are free.
    assert_eq!(
        store.purge_agent(&a.id).await.expect("again"),
        AgentPurge::default()
    );
    let again = agent(&tenant, "gone", now);
    store
        .create_agent(again.clone(), key_hash(&unique("k")), now)
        .await
        .expect("the name is free at once");
    assert!(matches!(
        store
            .enqueue(entry(&a.id, "msg_0_gone", "s@x.example.test", now, DAY))
            .await
            .expect("enqueue"),
        Enqueued::New { .. }
    ));
    store.purge_agent(&a.id).await.expect("clean up");
    store.purge_agent(&again.id).await.expect("clean up");

    // The other agent is untouched.
    assert_eq!(store.agent(&c.id).await.expect("c"), Some(c.clone()));
    for k in &c_keys {
        assert!(store.agent_by_api_key(k).await.expect("c key").is_some());
    }
    assert_eq!(store.count(&c.id, now).await.expect("c count").count, 2);
    assert!(
        store
            .entry(&c.id, "msg_0_kept", now)
            .await
            .expect("c acked")
            .is_some()
    );
    assert_eq!(
        store
            .receipts(&c.id, None, 10, now)
            .await
            .expect("c receipts")
            .len(),
        2
    );
    assert_eq!(
        store.presence_count(&c.id, now).await.expect("c presence"),
        1
    );
    assert_eq!(
        store
            .count_owned_agents(c.owner_id.as_deref().unwrap_or_default())
            .await
            .expect("owned"),
        1
    );
}

/// A tenant's agents are listed whether active or deregistered, and only its own.
pub async fn tenant_agents_lists_active_and_deregistered(store: &Store) {
    let now = now_ms();
    let tenant = unique("t");
    let a = agent(&tenant, "a", now);
    let b = agent(&tenant, "b", now);
    let other = agent(&unique("t"), "a", now);
    for x in [&a, &b, &other] {
        store
            .create_agent(x.clone(), key_hash(&unique("k")), now)
            .await
            .expect("create");
    }
    store
        .deregister_agent(&b.id, now, now + DAY)
        .await
        .expect("deregister");
    let mut want = vec![a.id.clone(), b.id.clone()];
    want.sort();
    assert_eq!(store.tenant_agents(&tenant, 100).await.expect("list"), want);
    assert_eq!(
        store.tenant_agents(&tenant, 1).await.expect("page"),
        want[..1]
    );
    for id in &want {
        store.purge_agent(id).await.expect("purge");
    }
    assert!(
        store
            .tenant_agents(&tenant, 100)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(store.agent(&other.id).await.expect("other").is_some());
}

/// A deletion run purges the tenant's agents, their jobs, owner keys, invites and the
/// tenant record, and leaves another tenant's; run again, it finds nothing more to do.
pub async fn tenant_deletion_runs_to_the_end(store: &Store) {
    let now = now_ms();
    let (tenant, other) = (unique("t"), unique("t"));
    let kind = unique("kind");
    let record = |name: &str| TenantRecord {
        name: name.into(),
        status: TenantStatus::Deleting,
        registration: TenantRegistration::OwnerKey,
        suspended_reason: None,
        notify: None,
        plan: Default::default(),
        created_at: now,
        updated_at: now,
    };
    store.create_tenant(&record(&tenant)).await.expect("tenant");
    store.create_tenant(&record(&other)).await.expect("other");
    let (a, _) = populated(store, &tenant, "a", now).await;
    let (c, _) = populated(store, &other, "c", now).await;
    let job = |agent: &str| Job {
        id: unique("webhook/"),
        kind: kind.clone(),
        due_at: now,
        attempt: 0,
        data: format!(r#"{{"agent_id":"{agent}","message_id":"m"}}"#),
    };
    let (ja, jc) = (job(&a.id), job(&c.id));
    store.schedule(ja.clone()).await.expect("job a");
    store.schedule(jc.clone()).await.expect("job c");
    let ok = |tenant: &str| OwnerKey {
        id: unique("ok_"),
        tenant: tenant.into(),
        owner_id: "o".into(),
        prefix: "uk_x".into(),
        agent_limit: None,
        created_at: now,
        expires_at: None,
        revoked_at: None,
        replaced_by: None,
    };
    let inv = |tenant: &str| Invite {
        id: unique("inv_"),
        tenant: tenant.into(),
        created_at: now,
        expires_at: now + DAY,
        created_by: "opt_x".into(),
    };
    for t in [&tenant, &other] {
        store
            .put_owner_key(&key_hash(&unique("uk")), &ok(t), PutMode::Create)
            .await
            .expect("owner key");
        store
            .put_invite(&key_hash(&unique("inv")), &inv(t))
            .await
            .expect("invite");
    }

    let d = TenantDeletion {
        id: unique("del_"),
        tenant: tenant.clone(),
        status: DeletionStatus::Pending,
        requested_by: "opt_test".into(),
        requested_at: now,
        started_at: None,
        finished_at: None,
        purged: Default::default(),
        error: None,
    };
    deletion::save(store, &d).await.expect("save");
    assert!(
        deletion::unfinished(store)
            .await
            .expect("unfinished")
            .iter()
            .any(|u| u.id == d.id)
    );
    let done = deletion::run(store, d.clone(), &[kind.as_str()], now_ms)
        .await
        .expect("run");
    assert_eq!(done.status, DeletionStatus::Done);
    assert_eq!(done.purged.agents, 1);
    assert_eq!(done.purged.receipts, 2);
    assert_eq!(done.purged.jobs, 1);
    assert_eq!(done.purged.owner_keys, 1);
    assert_eq!(done.purged.invites, 1);
    assert!(done.finished_at.is_some());
    assert_eq!(
        deletion::get(store, &tenant).await.expect("get"),
        Some(done.clone())
    );
    assert!(
        !deletion::unfinished(store)
            .await
            .expect("unfinished")
            .iter()
            .any(|u| u.id == d.id)
    );

    assert!(store.tenant(&tenant).await.expect("tenant").is_none());
    assert!(store.agent(&a.id).await.expect("a").is_none());
    assert!(store.owner_keys(&tenant).await.expect("keys").is_empty());
    let due: Vec<String> = store
        .due_jobs(&kind, Millis::MAX, 100)
        .await
        .expect("jobs")
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(due, std::slice::from_ref(&jc.id));
    let invites = store
        .record_list(INVITES, None, 100_000)
        .await
        .expect("invites");
    assert!(
        !invites
            .iter()
            .any(|(_, b)| serde_json::from_slice::<Invite>(b).is_ok_and(|i| i.tenant == tenant))
    );
    assert!(
        invites
            .iter()
            .any(|(_, b)| serde_json::from_slice::<Invite>(b).is_ok_and(|i| i.tenant == other))
    );

    // The other tenant is whole.
    assert!(store.tenant(&other).await.expect("other").is_some());
    assert!(store.agent(&c.id).await.expect("c").is_some());
    assert_eq!(store.count(&c.id, now).await.expect("c count").count, 2);
    assert_eq!(store.owner_keys(&other).await.expect("keys").len(), 1);

    // Resuming a finished run is harmless.
    let again = deletion::run(store, done, &[kind.as_str()], now_ms)
        .await
        .expect("again");
    assert_eq!(again.purged.agents, 1);
    store.complete(&jc.id).await.expect("clean up");
}

/// Fills a tenant (agents with keys, owner links, queued and acknowledged messages,
/// receipts, sessions, markers, a job, an owner key, an invite, a deregistered agent) and
/// another one the same way, deletes the first with [`deletion::run`], and returns what
/// must be found nowhere in a scan of the store now (the tenant's name and its agents' ids)
/// and what must still be there (the other tenant's agent ids). A backend's test scans its
/// store and calls [`assert_gone`].
pub async fn delete_a_tenant_for_a_scan(store: &Store) -> (Vec<String>, Vec<String>) {
    let now = now_ms();
    let (tenant, other) = (unique("gone"), unique("kept"));
    let kind = unique("kind");
    let federation_kind = unique("fed");
    let mut gone = vec![tenant.clone()];
    let mut kept = Vec::new();
    for (t, ids) in [(&tenant, &mut gone), (&other, &mut kept)] {
        store
            .create_tenant(&TenantRecord {
                name: t.clone(),
                status: TenantStatus::Active,
                registration: TenantRegistration::Open,
                suspended_reason: None,
                notify: None,
                plan: Default::default(),
                created_at: now,
                updated_at: now,
            })
            .await
            .expect("tenant");
        let (a, _) = populated(store, t, "a", now).await;
        let (b, _) = populated(store, t, "b", now).await;
        store
            .deregister_agent(&b.id, now, now + DAY)
            .await
            .expect("deregister");
        store
            .schedule(Job {
                id: format!("webhook/{}/m", a.id),
                kind: kind.clone(),
                due_at: now,
                attempt: 0,
                data: format!(r#"{{"agent_id":"{}","message_id":"m"}}"#, a.id),
            })
            .await
            .expect("job");
        // What a process counted of the tenant's held bytes.
        store
            .put_held(
                t,
                "r1",
                &crate::usage::HeldLedger {
                    at: now,
                    buckets: vec![(crate::usage::held_bucket(now + DAY), 10)],
                },
            )
            .await
            .expect("held");
        // Federation jobs: one naming its sender's tenant, one written before jobs did
        // (told by its sender's address).
        for (id, tenant_field) in [
            ("new", format!(r#""tenant":"{t}","#)),
            ("old", String::new()),
        ] {
            store
                .schedule(Job {
                    id: format!("federation:{}-{id}", a.id),
                    kind: federation_kind.clone(),
                    due_at: now,
                    attempt: 0,
                    data: format!(
                        r#"{{{tenant_field}"accepted":{{"sender_address":"{}","recipient_address":"r@peer.example.org"}}}}"#,
                        a.address
                    ),
                })
                .await
                .expect("federation job");
        }
        store
            .put_owner_key(
                &key_hash(&unique("uk")),
                &OwnerKey {
                    id: unique("ok_"),
                    tenant: t.clone(),
                    owner_id: "o".into(),
                    prefix: "uk_x".into(),
                    agent_limit: None,
                    created_at: now,
                    expires_at: None,
                    revoked_at: None,
                    replaced_by: None,
                },
                PutMode::Create,
            )
            .await
            .expect("owner key");
        store
            .put_invite(
                &key_hash(&unique("inv")),
                &Invite {
                    id: unique("inv_"),
                    tenant: t.clone(),
                    created_at: now,
                    expires_at: now + DAY,
                    created_by: "opt_x".into(),
                },
            )
            .await
            .expect("invite");
        ids.extend([a.id, b.id]);
    }
    let d = TenantDeletion {
        id: unique("del_"),
        tenant: tenant.clone(),
        status: DeletionStatus::Pending,
        requested_by: "opt_test".into(),
        requested_at: now,
        started_at: None,
        finished_at: None,
        purged: Default::default(),
        error: None,
    };
    let done = deletion::run(store, d, &[kind.as_str(), federation_kind.as_str()], now_ms)
        .await
        .expect("run");
    assert_eq!(done.purged.agents, 2);
    assert_eq!(
        done.purged.jobs, 3,
        "the webhook job and both federation jobs"
    );
    let federation_left: Vec<String> = store
        .due_jobs(&federation_kind, Millis::MAX, 100)
        .await
        .expect("federation jobs")
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(
        federation_left.len(),
        2,
        "the other tenant's: {federation_left:?}"
    );
    assert!(
        federation_left
            .iter()
            .all(|id| kept.iter().any(|k| id.contains(k.as_str())))
    );
    // The deletion's own record names the tenant: kept, like the audit log.
    store
        .record_take(deletion::DELETIONS, &tenant)
        .await
        .expect("forget the deletion record");
    (gone, kept)
}

/// No row of `rows` mentions any of `gone`; each of `kept` is still mentioned.
#[track_caller]
pub fn assert_gone(rows: &[ScannedRow], gone: &[String], kept: &[String]) {
    for needle in gone {
        let left: Vec<&ScannedRow> = rows
            .iter()
            .filter(|r| r.key.contains(needle.as_str()) || r.value.contains(needle.as_str()))
            .collect();
        assert!(left.is_empty(), "{needle} is still in the store: {left:#?}");
    }
    for needle in kept {
        assert!(
            rows.iter()
                .any(|r| r.key.contains(needle.as_str()) || r.value.contains(needle.as_str())),
            "{needle} is gone too"
        );
    }
}
