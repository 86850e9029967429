//! The store conformance suite: what every backend must do, asserted through the traits
//! only. Each check uses its own tenants and agents, so all of them can share one store.
//! A backend's tests call [`run_all`] and, where it can reopen its data, [`durable_across_reopen`].

use std::collections::HashSet;

use crate::testing::{agent, entry, key_hash, now_ms, unique};
use crate::*;

const DAY: i64 = 24 * 3600 * 1000;

/// Runs every check that needs only one open store.
pub async fn run_all(store: &Store) {
    registry_round_trip(store).await;
    names_unique_per_tenant_and_held_after_deregistration(store).await;
    api_key_rotation_grace_and_revocation(store).await;
    list_agents_pages_searches_and_isolates_tenants(store).await;
    security_list_agents_reads_the_page_not_the_tenant(store).await;
    owners_and_owned_agents(store).await;
    mailbox_enqueue_is_idempotent(store).await;
    mailbox_fifo_cursor_and_remaining(store).await;
    mailbox_ack_is_one_idempotent_transition(store).await;
    mailbox_quota_refuses_never_drops(store).await;
    mailbox_expiry_and_bulk_purge(store).await;
    mailboxes_are_isolated(store).await;
    deregistration_deletes_mailbox_and_keys(store).await;
    receipts_retained_until_dropped(store).await;
    jobs_due_in_order_and_replaced(store).await;
    jobs_by_kind_and_claimed_once(store).await;
    kv_round_trip(store).await;
    super::per_message::idempotency_records_expire(store).await;
    presence_leases(store).await;
    concurrent_writes_all_commit(store).await;
    super::records::records_create_replace_list_take(store).await;
    super::records::operator_records_typed(store).await;
    super::records::operator_usage_rows_sum_replicas(store).await;
    super::suspension::spec_next_suspensions_round_trip(store).await;
    super::risk::spec_next_risk_rows_summed_over_the_window(store).await;
    super::quarantine::spec_next_quarantine_held_once_and_decided_once(store).await;
    super::quarantine::spec_next_quarantine_purge_deletes_expired_entries(store).await;
    attachments_compare_and_set(store).await;
    super::revocation::spec_next_revocation_list(store).await;
    super::purge::purge_agent_removes_everything_about_it(store).await;
    super::purge::tenant_agents_lists_active_and_deregistered(store).await;
    super::purge::tenant_deletion_runs_to_the_end(store).await;
}

/// An attachment record as the upload endpoint creates it.
pub fn attachment_record(now: Millis) -> AttachmentRecord {
    AttachmentRecord {
        id: unique("att_1_"),
        tenant: unique("t"),
        owner_id: unique("agt_"),
        owner_address: "a@t.example.test".into(),
        filename: "a.txt".into(),
        content_type: "text/plain".into(),
        size: 5,
        digest: format!("sha256:{}", "ab".repeat(32)),
        created_at: now,
        upload_token_sha256: Some("cd".repeat(32)),
        upload_expires_at: now + 3_600_000,
        received: None,
        confirmed_at: None,
        scan_status: "pending".into(),
        scanned_at: None,
        scan_flags: Vec::new(),
        used_by: None,
        expires_at: now + 2 * 3_600_000,
        scan_callback_url: None,
    }
}

/// Attachments: created once, read with a revision, replaced only at that revision (so of
/// two racing writers exactly one wins), deleted for good.
pub async fn attachments_compare_and_set(store: &Store) {
    let now = now_ms();
    let rec = attachment_record(now);
    assert_eq!(store.attachment(&rec.id).await.expect("read"), None);
    assert!(store.attachment_create(&rec).await.expect("create"));
    assert!(
        !store.attachment_create(&rec).await.expect("create again"),
        "an id is created once"
    );
    let v = store
        .attachment(&rec.id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(v.value, rec);

    let mut confirmed = rec.clone();
    confirmed.confirmed_at = Some(now + 1);
    assert!(
        store
            .attachment_replace(&confirmed, v.revision)
            .await
            .expect("replace")
    );
    let mut stale = rec.clone();
    stale.scan_status = "clean".into();
    assert!(
        !store
            .attachment_replace(&stale, v.revision)
            .await
            .expect("stale replace"),
        "a write based on an old revision loses"
    );
    let v2 = store
        .attachment(&rec.id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(v2.value, confirmed);
    assert_ne!(v2.revision, v.revision);

    // Two writers from the same revision: exactly one wins.
    let (mut a, mut b) = (confirmed.clone(), confirmed.clone());
    a.scan_status = "clean".into();
    b.scan_status = "rejected".into();
    let (ra, rb) = tokio::join!(
        store.attachment_replace(&a, v2.revision),
        store.attachment_replace(&b, v2.revision)
    );
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    assert!(
        ra ^ rb,
        "exactly one of two racing writers wins ({ra}, {rb})"
    );
    let winner = store
        .attachment(&rec.id)
        .await
        .expect("read")
        .expect("exists");
    assert_eq!(
        winner.value.scan_status,
        if ra { "clean" } else { "rejected" }
    );

    store.attachment_delete(&rec.id).await.expect("delete");
    assert_eq!(store.attachment(&rec.id).await.expect("read"), None);
    assert!(
        !store
            .attachment_replace(&winner.value, winner.revision)
            .await
            .expect("replace deleted"),
        "a deleted record is not brought back by a replace"
    );
    store
        .attachment_delete(&rec.id)
        .await
        .expect("delete twice");
    // The id can be created again after a delete (the store does not remember it).
    assert!(store.attachment_create(&rec).await.expect("recreate"));
    store.attachment_delete(&rec.id).await.expect("cleanup");
}

/// Create, read by id, name and key, update.
pub async fn registry_round_trip(store: &Store) {
    let now = now_ms();
    let t = unique("t");
    let a = agent(&t, "alice", now);
    let k = key_hash(&a.id);
    store.create_agent(a.clone(), k, now).await.expect("create");
    assert_eq!(store.agent(&a.id).await.expect("get"), Some(a.clone()));
    assert_eq!(
        store.agent_by_name(&t, "alice").await.expect("by name"),
        Some(a.clone())
    );
    let (found, key) = store
        .agent_by_api_key(&k)
        .await
        .expect("by key")
        .expect("key known");
    assert_eq!(found.id, a.id);
    assert!(key.is_valid_at(now));
    assert!(
        store
            .agent_by_api_key(&key_hash("nope"))
            .await
            .expect("lookup")
            .is_none()
    );

    let mut b = a.clone();
    b.alias = Some("New".into());
    b.delivery.webhook_url = Some("https://hook.example.test/x".into());
    store.update_agent(b.clone()).await.expect("update");
    assert_eq!(store.agent(&a.id).await.expect("get"), Some(b));

    let ghost = agent(&t, "ghost", now);
    assert!(matches!(
        store.update_agent(ghost).await,
        Err(Error::NotFound)
    ));
}

/// A (tenant, name) is taken once; held after deregistration; free in another tenant.
pub async fn names_unique_per_tenant_and_held_after_deregistration(store: &Store) {
    let now = now_ms();
    let t = unique("t");
    let a = agent(&t, "bob", now);
    store
        .create_agent(a.clone(), key_hash(&a.id), now)
        .await
        .expect("create");
    let dup = agent(&t, "bob", now);
    assert!(matches!(
        store
            .create_agent(dup.clone(), key_hash(&dup.id), now)
            .await,
        Err(Error::NameTaken)
    ));
    // The failed create wrote nothing.
    assert!(store.agent(&dup.id).await.expect("get").is_none());
    assert!(
        store
            .agent_by_api_key(&key_hash(&dup.id))
            .await
            .expect("key")
            .is_none()
    );

    let other_tenant = agent(&unique("t"), "bob", now);
    store
        .create_agent(other_tenant.clone(), key_hash(&other_tenant.id), now)
        .await
        .expect("same name, other tenant");

    let gone = store
        .deregister_agent(&a.id, now, now + 30 * DAY)
        .await
        .expect("deregister");
    assert!(!gone.is_active());
    // A write based on a read from before the deregistration does not undo it.
    assert!(matches!(
        store.update_agent(a.clone()).await,
        Err(Error::NotFound)
    ));
    store.touch_agent(&a.id, now).await.expect("touch");
    assert!(
        !store
            .agent(&a.id)
            .await
            .expect("get")
            .expect("kept")
            .is_active()
    );
    assert!(
        store
            .agent_by_name(&t, "bob")
            .await
            .expect("name")
            .is_none()
    );
    let again = agent(&t, "bob", now);
    assert!(matches!(
        store
            .create_agent(again.clone(), key_hash(&again.id), now + DAY)
            .await,
        Err(Error::NameTaken)
    ));
    store
        .create_agent(again.clone(), key_hash(&again.id), now + 31 * DAY)
        .await
        .expect("free after the hold");
    assert!(matches!(
        store.deregister_agent(&a.id, now, now).await,
        Err(Error::NotFound)
    ));
}

/// The old key works until its grace ends; revocation removes every key at once.
pub async fn api_key_rotation_grace_and_revocation(store: &Store) {
    let now = now_ms();
    let a = agent(&unique("t"), "carol", now);
    let old = key_hash(&format!("{}-old", a.id));
    let new = key_hash(&format!("{}-new", a.id));
    store
        .create_agent(a.clone(), old, now)
        .await
        .expect("create");
    store
        .rotate_api_key(&a.id, new, now, now + DAY)
        .await
        .expect("rotate");
    let (_, old_rec) = store
        .agent_by_api_key(&old)
        .await
        .expect("old")
        .expect("still there");
    assert!(old_rec.is_valid_at(now + DAY - 1));
    assert!(!old_rec.is_valid_at(now + DAY));
    let (_, new_rec) = store
        .agent_by_api_key(&new)
        .await
        .expect("new")
        .expect("there");
    assert!(new_rec.is_valid_at(now + 365 * DAY));

    store.revoke_api_keys(&a.id).await.expect("revoke");
    assert!(store.agent_by_api_key(&old).await.expect("old").is_none());
    assert!(store.agent_by_api_key(&new).await.expect("new").is_none());
    assert!(matches!(
        store.rotate_api_key("agt_missing", new, now, now).await,
        Err(Error::NotFound)
    ));
}

/// Listing is by name, paged, searchable, and never shows another tenant.
pub async fn list_agents_pages_searches_and_isolates_tenants(store: &Store) {
    let now = now_ms();
    let t = unique("t");
    for name in ["delta", "alpha", "charlie", "bravo", "echo"] {
        let a = agent(&t, name, now);
        store
            .create_agent(a.clone(), key_hash(&a.id), now)
            .await
            .expect("create");
    }
    let other = unique("t");
    let o = agent(&other, "alpha", now);
    store
        .create_agent(o.clone(), key_hash(&o.id), now)
        .await
        .expect("create");

    let (page, total) = store.list_agents(&t, None, None, 2).await.expect("list");
    assert_eq!(total, 5);
    let names: Vec<_> = page.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["alpha", "bravo"]);
    let (page, _) = store
        .list_agents(&t, None, Some("bravo"), 10)
        .await
        .expect("list");
    let names: Vec<_> = page.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["charlie", "delta", "echo"]);
    let (page, total) = store
        .list_agents(&t, Some("ARL"), None, 10)
        .await
        .expect("search");
    assert_eq!((page.len(), total), (1, 1));
    assert!(page.iter().all(|a| a.tenant == t));
    let (page, total) = store
        .list_agents(&other, None, None, 10)
        .await
        .expect("other");
    assert_eq!((page.len(), total), (1, 1));
}

/// A listing page reads the page's agent records, not every agent of the tenant (issue 16:
/// any agent could make each `GET /v1/agents` decode its whole tenant); the total stays exact
/// across registrations and deregistrations, and the pages walk the tenant completely.
pub async fn security_list_agents_reads_the_page_not_the_tenant(store: &Store) {
    const AGENTS: usize = 40;
    const PAGE: usize = 5;
    let now = now_ms();
    let t = unique("t");
    let mut ids = Vec::new();
    for i in 0..AGENTS {
        let a = agent(&t, &format!("agent-{i:03}"), now);
        store
            .create_agent(a.clone(), key_hash(&a.id), now)
            .await
            .expect("create");
        ids.push(a.id);
    }
    // Deregistered agents hold their names: neither listed nor counted.
    for id in ids.iter().skip(3).step_by(10) {
        store
            .deregister_agent(id, now, now + DAY)
            .await
            .expect("deregister");
    }
    let active = AGENTS - AGENTS.div_ceil(10);

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (res, cost) =
            list_cost::measure(store.list_agents(&t, None, after.as_deref(), PAGE)).await;
        let (page, total) = res.expect("list");
        assert_eq!(total, active as u64, "the total counts active agents");
        assert!(
            cost.records <= PAGE as u64,
            "a page of {PAGE} read {} agent records (tenant of {AGENTS})",
            cost.records
        );
        assert!(page.len() <= PAGE);
        let Some(last) = page.last() else { break };
        after = Some(last.name.clone());
        seen.extend(page.into_iter().map(|a| a.name));
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen, "pages come in name order, without repeats");
    assert_eq!(seen.len(), active, "the pages cover every active agent");

    // The name of a deregistered agent, taken again once its hold ends, counts once.
    let again = agent(&t, "agent-003", now + 2 * DAY);
    store
        .create_agent(again.clone(), key_hash(&again.id), now + 2 * DAY)
        .await
        .expect("take the freed name");
    let (_, total) = store.list_agents(&t, None, None, 1).await.expect("list");
    assert_eq!(total, active as u64 + 1);
    // Another tenant's count is its own.
    let (page, total) = store
        .list_agents(&unique("t"), None, None, PAGE)
        .await
        .expect("empty tenant");
    assert_eq!((page.len(), total), (0, 0));
}

/// Owners are found by user key; their agents are counted.
pub async fn owners_and_owned_agents(store: &Store) {
    let now = now_ms();
    let owner = OwnerRecord {
        id: unique("usr_"),
        tenant: unique("t"),
        agent_limit: 2,
        suspended: false,
    };
    let uk = key_hash(&owner.id);
    store.put_owner(owner.clone(), uk).await.expect("owner");
    assert_eq!(
        store.owner_by_user_key(&uk).await.expect("by key"),
        Some(owner.clone())
    );
    assert!(
        store
            .owner_by_user_key(&key_hash("x"))
            .await
            .expect("by key")
            .is_none()
    );
    let mut a = agent(&owner.tenant, "owned", now);
    a.owner_id = Some(owner.id.clone());
    store
        .create_agent(a.clone(), key_hash(&a.id), now)
        .await
        .expect("create");
    assert_eq!(store.count_owned_agents(&owner.id).await.expect("count"), 1);
    store
        .deregister_agent(&a.id, now, now)
        .await
        .expect("deregister");
    assert_eq!(store.count_owned_agents(&owner.id).await.expect("count"), 0);
}

/// Same sender, id and signature: one entry; another signature: conflict.
pub async fn mailbox_enqueue_is_idempotent(store: &Store) {
    let now = now_ms();
    let agent_id = unique("agt_");
    let e = entry(&agent_id, "msg_1_a", "s@t.example.test", now, DAY);
    let first = store.enqueue(e.clone()).await.expect("enqueue");
    let Enqueued::New { seq } = first else {
        panic!("first enqueue is new: {first:?}");
    };
    assert_eq!(
        store.enqueue(e.clone()).await.expect("again"),
        Enqueued::Duplicate { seq }
    );
    let mut forged = e.clone();
    forged.signature = "other".into();
    assert_eq!(
        store.enqueue(forged).await.expect("forged"),
        Enqueued::Conflict
    );
    let page = store.fetch(&agent_id, None, 10, now).await.expect("fetch");
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].data, e.data, "data kept byte for byte");
}

/// FIFO, `after` cursors, `remaining`, `head`.
pub async fn mailbox_fifo_cursor_and_remaining(store: &Store) {
    let now = now_ms();
    let agent_id = unique("agt_");
    let mut seqs = Vec::new();
    for i in 0..7 {
        let r = store
            .enqueue(entry(
                &agent_id,
                &format!("msg_{i}_b"),
                "s@t.example.test",
                now + i,
                DAY,
            ))
            .await
            .expect("enqueue");
        let Enqueued::New { seq } = r else {
            panic!("new: {r:?}");
        };
        seqs.push(seq);
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "increasing: {seqs:?}");
    let page = store.fetch(&agent_id, None, 3, now).await.expect("fetch");
    let ids: Vec<_> = page.entries.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["msg_0_b", "msg_1_b", "msg_2_b"]);
    assert_eq!(page.remaining, 4);
    assert_eq!(page.head, seqs[6]);
    let page2 = store
        .fetch(&agent_id, Some(page.entries[2].seq), 3, now)
        .await
        .expect("fetch after");
    let ids: Vec<_> = page2
        .entries
        .iter()
        .map(|e| e.message_id.as_str())
        .collect();
    assert_eq!(ids, ["msg_3_b", "msg_4_b", "msg_5_b"]);
    assert_eq!(page2.remaining, 1);
    let end = store
        .fetch(&agent_id, Some(seqs[6]), 3, now)
        .await
        .expect("at head");
    assert!(end.entries.is_empty());
    assert_eq!(end.remaining, 0);
    let c = store.count(&agent_id, now).await.expect("count");
    assert_eq!(
        (c.count, c.oldest_queued_at, c.head),
        (7, Some(now), seqs[6])
    );
    let empty = store
        .count(&unique("agt_"), now)
        .await
        .expect("empty count");
    assert_eq!((empty.count, empty.oldest_queued_at), (0, None));
}

/// Acked once, already acked after, unknown ids not found; acked never served again. The
/// entry that left the mailbox is returned, as it was queued, for the newly acked ids only.
pub async fn mailbox_ack_is_one_idempotent_transition(store: &Store) {
    let now = now_ms();
    let agent_id = unique("agt_");
    let mut queued = Vec::new();
    for i in 0..3 {
        let e = entry(
            &agent_id,
            &format!("msg_{i}_c"),
            "s@t.example.test",
            now,
            DAY + i,
        );
        let Enqueued::New { seq } = store.enqueue(e.clone()).await.expect("enqueue") else {
            panic!("msg_{i}_c not queued");
        };
        queued.push(MailboxEntry {
            seq,
            message_id: e.message_id,
            sender: e.sender,
            data: e.data,
            queued_at: e.queued_at,
            expires_at: e.expires_at,
        });
    }
    let ids = vec![
        "msg_0_c".to_owned(),
        "msg_9_c".to_owned(),
        "msg_0_c".to_owned(),
    ];
    let out = store.ack(&agent_id, &ids, now).await.expect("ack");
    assert_eq!(
        out.iter().map(|a| a.outcome).collect::<Vec<_>>(),
        [
            AckOutcome::Acked,
            AckOutcome::NotFound,
            AckOutcome::AlreadyAcked
        ]
    );
    assert_eq!(
        out[0].removed.as_ref(),
        Some(&queued[0]),
        "the acked entry, as queued"
    );
    assert_eq!(out[1].removed, None, "not found: nothing removed");
    assert_eq!(
        out[2].removed, None,
        "repeated: removed by its first occurrence"
    );
    let again = store
        .ack(&agent_id, &ids[..1], now)
        .await
        .expect("ack again");
    assert_eq!(again, [Acked::already_acked()]);
    let page = store.fetch(&agent_id, None, 10, now).await.expect("fetch");
    let left: Vec<_> = page.entries.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(left, ["msg_1_c", "msg_2_c"]);
    assert_eq!(store.count(&agent_id, now).await.expect("count").count, 2);
    assert!(matches!(
        store.entry(&agent_id, "msg_0_c", now).await.expect("entry"),
        Some(EntryState::Acked { .. })
    ));
    assert!(matches!(
        store.entry(&agent_id, "msg_1_c", now).await.expect("entry"),
        Some(EntryState::Queued(_))
    ));
    // An acked message re-sent by its sender is recognised, not queued again.
    let resend = entry(&agent_id, "msg_0_c", "s@t.example.test", now, DAY);
    assert!(matches!(
        store.enqueue(resend).await.expect("resend"),
        Enqueued::Duplicate { .. }
    ));
    assert_eq!(store.count(&agent_id, now).await.expect("count").count, 2);
    // Each id of a batch gets its own entry (its own data and expiry), wherever it stands.
    let mixed = ["msg_0_c".to_owned(), "msg_2_c".to_owned()];
    let out = store.ack(&agent_id, &mixed, now).await.expect("ack mixed");
    assert_eq!(
        out,
        [Acked::already_acked(), Acked::newly(queued[2].clone())]
    );
    assert_eq!(
        out[1].removed.as_ref().map(|e| e.expires_at),
        Some(now + DAY + 2)
    );
    assert_eq!(store.count(&agent_id, now).await.expect("count").count, 1);
}

/// A full mailbox refuses the new message and keeps the old ones; an ack makes room.
pub async fn mailbox_quota_refuses_never_drops(store: &Store) {
    let now = now_ms();
    let agent_id = unique("agt_");
    let with_quota = |id: &str| NewMailboxEntry {
        max_queued: Some(3),
        ..entry(&agent_id, id, "s@t.example.test", now, DAY)
    };
    for i in 0..3 {
        let r = store
            .enqueue(with_quota(&format!("msg_{i}_q")))
            .await
            .expect("enqueue");
        assert!(matches!(r, Enqueued::New { .. }), "{r:?}");
    }
    assert_eq!(
        store.enqueue(with_quota("msg_3_q")).await.expect("full"),
        Enqueued::Full
    );
    let page = store.fetch(&agent_id, None, 10, now).await.expect("fetch");
    assert_eq!(page.entries.len(), 3);
    assert_eq!(page.entries[0].message_id, "msg_0_q");
    store
        .ack(&agent_id, &["msg_0_q".into()], now)
        .await
        .expect("ack");
    assert!(matches!(
        store.enqueue(with_quota("msg_3_q")).await.expect("room"),
        Enqueued::New { .. }
    ));
}

/// Expired entries are never served and are purged in bulk, raising the floor.
pub async fn mailbox_expiry_and_bulk_purge(store: &Store) {
    let now = now_ms();
    let agent_id = unique("agt_");
    store
        .enqueue(entry(&agent_id, "msg_1_d", "s@t.example.test", now, 1_000))
        .await
        .expect("short");
    store
        .enqueue(entry(&agent_id, "msg_2_d", "s@t.example.test", now, DAY))
        .await
        .expect("long");
    let later = now + 2_000;
    let page = store
        .fetch(&agent_id, None, 10, later)
        .await
        .expect("fetch");
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].message_id, "msg_2_d");
    assert_eq!(store.count(&agent_id, later).await.expect("count").count, 1);
    assert_eq!(
        store
            .ack(&agent_id, &["msg_1_d".into()], later)
            .await
            .expect("ack"),
        [Acked::not_found()]
    );
    // A backend whose rows expire by TTL purges nothing by hand (0); one that keeps them
    // removes at least this one. Either way the expired entry is gone from every read.
    store.purge_expired(later, 100_000).await.expect("purge");
    assert!(
        store
            .entry(&agent_id, "msg_1_d", later)
            .await
            .expect("entry")
            .is_none()
    );
    assert!(matches!(
        store
            .entry(&agent_id, "msg_2_d", later)
            .await
            .expect("entry"),
        Some(EntryState::Queued(_))
    ));
    let c = store.count(&agent_id, later).await.expect("count");
    assert_eq!(c.count, 1);
    assert!(c.floor >= 1);
}

/// One agent's operations never touch another's mailbox.
pub async fn mailboxes_are_isolated(store: &Store) {
    let now = now_ms();
    let a = unique("agt_");
    let b = unique("agt_");
    store
        .enqueue(entry(&a, "msg_1_e", "s@t.example.test", now, DAY))
        .await
        .expect("enqueue");
    assert_eq!(
        store.ack(&b, &["msg_1_e".into()], now).await.expect("ack"),
        [Acked::not_found()]
    );
    assert!(
        store
            .entry(&b, "msg_1_e", now)
            .await
            .expect("entry")
            .is_none()
    );
    assert!(
        store
            .fetch(&b, None, 10, now)
            .await
            .expect("fetch")
            .entries
            .is_empty()
    );
    assert_eq!(
        store
            .fetch(&a, None, 10, now)
            .await
            .expect("fetch")
            .entries
            .len(),
        1
    );
}

/// Deregistration deletes the agent's pending messages and keys.
pub async fn deregistration_deletes_mailbox_and_keys(store: &Store) {
    let now = now_ms();
    let a = agent(&unique("t"), "dave", now);
    let k = key_hash(&a.id);
    store.create_agent(a.clone(), k, now).await.expect("create");
    store
        .enqueue(entry(&a.id, "msg_1_f", "s@t.example.test", now, DAY))
        .await
        .expect("enqueue");
    store
        .deregister_agent(&a.id, now, now + DAY)
        .await
        .expect("deregister");
    assert!(store.agent_by_api_key(&k).await.expect("key").is_none());
    assert!(
        store
            .fetch(&a.id, None, 10, now)
            .await
            .expect("fetch")
            .entries
            .is_empty()
    );
    assert_eq!(store.count(&a.id, now).await.expect("count").count, 0);
}

/// Receipts come back in order until dropped or expired.
pub async fn receipts_retained_until_dropped(store: &Store) {
    let now = now_ms();
    let agent_id = unique("agt_");
    let mk = |n: u32, exp: i64| Receipt {
        seq: 0,
        data: format!(r#"{{"type":"message.read","n":{n}}}"#),
        created_at: now,
        expires_at: exp,
    };
    let s1 = store
        .put_receipt(&agent_id, mk(1, now + DAY))
        .await
        .expect("put");
    let s2 = store
        .put_receipt(&agent_id, mk(2, now + 1))
        .await
        .expect("put");
    let s3 = store
        .put_receipt(&agent_id, mk(3, now + DAY))
        .await
        .expect("put");
    assert!(s1 < s2 && s2 < s3);
    let got = store
        .receipts(&agent_id, None, 10, now + 10)
        .await
        .expect("list");
    assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), [s1, s3]);
    store.drop_receipts(&agent_id, s1).await.expect("drop");
    let got = store
        .receipts(&agent_id, None, 10, now)
        .await
        .expect("list");
    assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), [s2, s3]);
    assert!(
        store
            .receipts(&unique("agt_"), None, 10, now)
            .await
            .expect("other")
            .is_empty()
    );
}

/// Jobs come due in time order; rescheduling replaces; completing removes.
pub async fn jobs_due_in_order_and_replaced(store: &Store) {
    let now = now_ms();
    // Far in the past so other checks' jobs (due now) sort after these.
    let base = 1_000_000;
    let j = |id: &str, due: i64| Job {
        id: id.to_owned(),
        kind: "test".into(),
        due_at: due,
        attempt: 0,
        data: "{}".into(),
    };
    let a = unique("job");
    let b = unique("job");
    store.schedule(j(&a, base + 20)).await.expect("a");
    store.schedule(j(&b, base + 10)).await.expect("b");
    let due: Vec<_> = store
        .due_jobs("test", base + 30, 1000)
        .await
        .expect("due")
        .into_iter()
        .filter(|x| x.id == a || x.id == b)
        .map(|x| x.id)
        .collect();
    assert_eq!(due, [b.clone(), a.clone()]);
    store.schedule(j(&a, now + DAY)).await.expect("reschedule");
    let due: Vec<_> = store
        .due_jobs("test", base + 30, 1000)
        .await
        .expect("due")
        .into_iter()
        .map(|x| x.id)
        .collect();
    assert!(due.contains(&b) && !due.contains(&a));
    store.complete(&b).await.expect("complete");
    store.complete(&a).await.expect("complete");
    let due: Vec<_> = store
        .due_jobs("test", now + 2 * DAY, 100_000)
        .await
        .expect("due")
        .into_iter()
        .map(|x| x.id)
        .collect();
    assert!(!due.contains(&a) && !due.contains(&b));
}

/// `due_jobs` returns one kind only; of racing claims on the same job exactly one wins, and
/// a claim on a job changed since it was read fails.
pub async fn jobs_by_kind_and_claimed_once(store: &Store) {
    let now = now_ms();
    let kind = unique("kind");
    let job = |id: &str, kind: &str| Job {
        id: id.to_owned(),
        kind: kind.to_owned(),
        due_at: 2_000_000,
        attempt: 3,
        data: "{\"n\":1}".into(),
    };
    let mine = unique("job");
    let other = unique("job");
    store.schedule(job(&mine, &kind)).await.expect("mine");
    store
        .schedule(job(&other, "elsewhere"))
        .await
        .expect("other");
    let due = store.due_jobs(&kind, now, 100_000).await.expect("due");
    assert_eq!(
        due.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [mine.as_str()]
    );
    let read = due.into_iter().next().expect("one job");

    let until = now + DAY;
    let mut claims = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (store, read) = (store.clone(), read.clone());
        claims.spawn(async move { store.claim(&read, until).await });
    }
    let won = claims
        .join_all()
        .await
        .into_iter()
        .filter(|c| matches!(c, Ok(true)))
        .count();
    assert_eq!(won, 1, "exactly one of 8 racing claims wins");
    assert!(
        !store.claim(&read, until).await.expect("late claim"),
        "claimed twice"
    );
    let leased = store.due_jobs(&kind, until, 10).await.expect("leased");
    assert_eq!(leased.len(), 1);
    assert_eq!((leased[0].due_at, leased[0].attempt), (until, 3));
    assert_eq!(leased[0].data, read.data, "a claim keeps the work");
    assert!(
        store
            .due_jobs(&kind, now, 10)
            .await
            .expect("due")
            .is_empty()
    );

    // A claim read before a retry that kept the due time (another attempt) loses, and
    // leaves the job as it is.
    let stale = Job {
        attempt: 2,
        ..leased[0].clone()
    };
    assert!(!store.claim(&stale, until + 1).await.expect("stale claim"));
    let kept = store.due_jobs(&kind, until, 10).await.expect("kept");
    assert_eq!(
        kept.iter()
            .map(|j| (j.due_at, j.attempt))
            .collect::<Vec<_>>(),
        [(until, 3)],
        "a lost claim changed the job"
    );

    store.complete(&mine).await.expect("complete");
    assert!(!store.claim(&leased[0], now).await.expect("claim gone"));
    store.complete(&other).await.expect("complete");
}

/// Small values round-trip; one with an expiry is gone once it has passed, and a purge
/// removes it from a backend that keeps expired rows.
pub async fn kv_round_trip(store: &Store) {
    let k = unique("kv/");
    assert!(store.get(&k).await.expect("get").is_none());
    store.put(&k, b"value".to_vec(), None).await.expect("put");
    assert_eq!(
        store.get(&k).await.expect("get").as_deref(),
        Some(&b"value"[..])
    );
    store.delete(&k).await.expect("delete");
    assert!(store.get(&k).await.expect("get").is_none());

    let live = unique("kv/");
    let gone = unique("kv/");
    store
        .put(&live, b"later".to_vec(), Some(now_ms() + DAY))
        .await
        .expect("put");
    store
        .put(&gone, b"past".to_vec(), Some(now_ms() - 1))
        .await
        .expect("put");
    assert_eq!(
        store.get(&live).await.expect("get").as_deref(),
        Some(&b"later"[..])
    );
    assert!(store.get(&gone).await.expect("get").is_none(), "expired");
    store.purge_expired(now_ms(), 100_000).await.expect("purge");
    assert!(store.get(&gone).await.expect("get").is_none());
    assert!(store.get(&live).await.expect("get").is_some());
    // Written again without an expiry, it is kept for good.
    store
        .put(&gone, b"again".to_vec(), None)
        .await
        .expect("put");
    assert_eq!(
        store.get(&gone).await.expect("get").as_deref(),
        Some(&b"again"[..])
    );
    store.delete(&live).await.expect("delete");
    store.delete(&gone).await.expect("delete");
    assert!(store.get(&gone).await.expect("get").is_none());
}

/// Sessions count while their lease lasts; cleared or expired ones do not.
pub async fn presence_leases(store: &Store) {
    let now = now_ms();
    let a = unique("agt_");
    let b = unique("agt_");
    let before = store.agents_online(now).await.expect("online");
    store
        .presence_set(&a, "s1", now + 1_000)
        .await
        .expect("set");
    store.presence_set(&a, "s2", now + 50).await.expect("set");
    store
        .presence_set(&b, "s1", now + 1_000)
        .await
        .expect("set");
    assert_eq!(store.presence_count(&a, now).await.expect("count"), 2);
    assert_eq!(
        store.presence_count(&a, now + 100).await.expect("count"),
        1,
        "s2 expired"
    );
    assert_eq!(store.agents_online(now).await.expect("online"), before + 2);
    store.presence_clear(&a, "s1").await.expect("clear");
    assert_eq!(store.presence_count(&a, now + 100).await.expect("count"), 0);
    store
        .presence_set(&a, "s1", now + 5_000)
        .await
        .expect("renew");
    assert_eq!(
        store.presence_count(&a, now + 2_000).await.expect("count"),
        1
    );
    assert_eq!(
        store
            .presence_count(&unique("agt_"), now)
            .await
            .expect("count"),
        0
    );
}

/// Many concurrent writers: every write is committed once, sequence numbers unique.
pub async fn concurrent_writes_all_commit(store: &Store) {
    let now = now_ms();
    let agent_id = unique("agt_");
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = store.clone();
        let e = entry(
            &agent_id,
            &format!("msg_{i}_g"),
            "s@t.example.test",
            now,
            DAY,
        );
        tasks.push(tokio::spawn(async move { s.enqueue(e).await }));
    }
    let mut seqs = HashSet::new();
    for t in tasks {
        match t.await.expect("task").expect("enqueue") {
            Enqueued::New { seq } => assert!(seqs.insert(seq), "duplicate seq {seq}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    let page = store
        .fetch(&agent_id, None, 1000, now)
        .await
        .expect("fetch");
    assert_eq!(page.entries.len(), 200);
}

/// What was written before closing is there after reopening. `open` opens the same data.
pub async fn durable_across_reopen(open: impl Fn() -> Store) {
    let now = now_ms();
    let a = agent(&unique("t"), "erin", now);
    let agent_id = a.id.clone();
    {
        let store = open();
        store
            .create_agent(a.clone(), key_hash(&a.id), now)
            .await
            .expect("create");
        store
            .enqueue(entry(&agent_id, "msg_1_h", "s@t.example.test", now, DAY))
            .await
            .expect("enqueue");
        store
            .enqueue(entry(&agent_id, "msg_2_h", "s@t.example.test", now, DAY))
            .await
            .expect("enqueue");
        store
            .ack(&agent_id, &["msg_1_h".into()], now)
            .await
            .expect("ack");
        store.close().await.expect("close");
    }
    let store = open();
    assert_eq!(store.agent(&agent_id).await.expect("get"), Some(a.clone()));
    let page = store.fetch(&agent_id, None, 10, now).await.expect("fetch");
    let ids: Vec<_> = page.entries.iter().map(|e| e.message_id.as_str()).collect();
    assert_eq!(ids, ["msg_2_h"]);
    let next = store
        .enqueue(entry(&agent_id, "msg_3_h", "s@t.example.test", now, DAY))
        .await
        .expect("enqueue");
    assert!(matches!(next, Enqueued::New { seq } if seq > page.entries[0].seq));
    store.close().await.expect("close");
}

/// Runs the checks that need two handles on the same data, as two cluster processes have
/// (two routers writing one mailbox, one reader following it with cursors). For an
/// embedded backend, pass the same store twice.
pub async fn run_two_writers(a: &Store, b: &Store) {
    cursor_never_skips_with_two_writers(a, b).await;
    same_id_other_content_from_two_writers_never_both_accepted(a, b).await;
    same_message_from_two_writers_is_stored_once(a, b).await;
    quota_never_exceeded_by_two_writers(a, b).await;
    super::records::records_created_and_taken_once(a, b).await;
    super::suspension::spec_next_suspension_seen_by_another_writer(a, b).await;
}

/// Two writers append to one mailbox at the same moment while a reader follows it with
/// `after` cursors: the reader sees every message exactly once, in increasing positions —
/// no cursor ever skips one written concurrently below it.
pub async fn cursor_never_skips_with_two_writers(a: &Store, b: &Store) {
    let now = now_ms();
    let agent_id = unique("agt_");
    const PER_WRITER: usize = 60;
    let writer = |store: Store, tag: &'static str| {
        let agent_id = agent_id.clone();
        tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let e = entry(
                    &agent_id,
                    &format!("msg_{i}_{tag}"),
                    "s@t.example.test",
                    now,
                    DAY,
                );
                let r = store.enqueue(e).await.expect("enqueue");
                assert!(matches!(r, Enqueued::New { .. }), "{r:?}");
            }
        })
    };
    let wa = writer(a.clone(), "wa");
    let wb = writer(b.clone(), "wb");
    let reader = {
        let (store, agent_id) = (a.clone(), agent_id.clone());
        tokio::spawn(async move {
            let mut cursor = None;
            let mut seen: Vec<(u64, String)> = Vec::new();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while seen.len() < 2 * PER_WRITER {
                assert!(
                    std::time::Instant::now() < deadline,
                    "reader saw only {} of {}",
                    seen.len(),
                    2 * PER_WRITER
                );
                let page = store.fetch(&agent_id, cursor, 7, now).await.expect("fetch");
                if page.entries.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                }
                for e in page.entries {
                    assert!(cursor.is_none_or(|c| e.seq > c), "positions go back");
                    cursor = Some(e.seq);
                    seen.push((e.seq, e.message_id));
                }
            }
            seen
        })
    };
    wa.await.expect("writer a");
    wb.await.expect("writer b");
    let seen = reader.await.expect("reader");
    let ids: HashSet<&str> = seen.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), 2 * PER_WRITER, "every message seen exactly once");
    // And nothing is left behind the reader's cursor.
    let all = a.fetch(&agent_id, None, 1000, now).await.expect("all");
    assert_eq!(all.entries.len(), 2 * PER_WRITER);
}

/// The same id with different content sent through two writers at the same moment: one is
/// accepted, the other refused as a conflict — zero false accepts over many rounds.
pub async fn same_id_other_content_from_two_writers_never_both_accepted(a: &Store, b: &Store) {
    let now = now_ms();
    let agent_id = unique("agt_");
    for round in 0..40 {
        let id = format!("msg_{round}_x");
        let mut ea = entry(&agent_id, &id, "s@t.example.test", now, DAY);
        let mut eb = ea.clone();
        ea.signature = "sig-a".into();
        eb.signature = "sig-b".into();
        let (ra, rb) = tokio::join!(a.enqueue(ea), b.enqueue(eb));
        let outcomes = [ra.expect("a"), rb.expect("b")];
        let new = outcomes
            .iter()
            .filter(|o| matches!(o, Enqueued::New { .. }))
            .count();
        let conflicts = outcomes
            .iter()
            .filter(|o| matches!(o, Enqueued::Conflict))
            .count();
        assert_eq!((new, conflicts), (1, 1), "round {round}: {outcomes:?}");
    }
    let page = a.fetch(&agent_id, None, 1000, now).await.expect("fetch");
    assert_eq!(page.entries.len(), 40);
}

/// The same message (same id and signature) redelivered to two writers at once: stored
/// once, both answers name the same position.
pub async fn same_message_from_two_writers_is_stored_once(a: &Store, b: &Store) {
    let now = now_ms();
    let agent_id = unique("agt_");
    for round in 0..20 {
        let e = entry(
            &agent_id,
            &format!("msg_{round}_r"),
            "s@t.example.test",
            now,
            DAY,
        );
        let (ra, rb) = tokio::join!(a.enqueue(e.clone()), b.enqueue(e));
        let seqs: Vec<u64> = [ra.expect("a"), rb.expect("b")]
            .iter()
            .map(|r| match r {
                Enqueued::New { seq } | Enqueued::Duplicate { seq } => *seq,
                other => panic!("round {round}: unexpected {other:?}"),
            })
            .collect();
        assert_eq!(seqs[0], seqs[1], "round {round}");
    }
    let page = a.fetch(&agent_id, None, 1000, now).await.expect("fetch");
    assert_eq!(page.entries.len(), 20);
}

/// Two writers racing for the last places of a mailbox with a quota: never more than the
/// quota stored, and nothing refused while there was room.
pub async fn quota_never_exceeded_by_two_writers(a: &Store, b: &Store) {
    let now = now_ms();
    let agent_id = unique("agt_");
    const QUOTA: u64 = 10;
    let writer = |store: Store, tag: &'static str| {
        let agent_id = agent_id.clone();
        tokio::spawn(async move {
            let mut new = 0u64;
            for i in 0..15 {
                let mut e = entry(
                    &agent_id,
                    &format!("msg_{i}_{tag}"),
                    "s@t.example.test",
                    now,
                    DAY,
                );
                e.max_queued = Some(QUOTA);
                match store.enqueue(e).await.expect("enqueue") {
                    Enqueued::New { .. } => new += 1,
                    Enqueued::Full => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            new
        })
    };
    let (na, nb) = tokio::join!(writer(a.clone(), "qa"), writer(b.clone(), "qb"));
    let stored = na.expect("a") + nb.expect("b");
    assert_eq!(stored, QUOTA, "exactly the quota is stored");
    assert_eq!(a.count(&agent_id, now).await.expect("count").count, QUOTA);
}
