//! Issue 17, tenant deletion, against a whole `ampd`: `DELETE /admin/v1/tenants/{name}`
//! suspends at once and purges in the background; the status is polled to `done`; then the
//! store itself (the redb file, every row of every table, read after `ampd` stopped) holds
//! nothing of the tenant but its audit entries, the deletion's record and its usage rows
//! (billing), while another tenant's data is whole; restarted, the name can be created
//! afresh. Every test name starts with `operator_`.

use std::time::Duration;

use amp_testkit::ampd::Embedded;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::operator::{BOOTSTRAP, admin, owner_key, start_admin, tenant, token, within};
use super::{Agent, Ampd, MessagingExt};

/// The webhook secret of the hooked agent.
const SECRET: &str = "a-webhook-secret-of-at-least-32-characters";

/// The agent id of a registered agent (`GET /v1/agents/me`).
async fn agent_id(s: &Ampd, who: &Agent) -> String {
    let v = s.get(who, "/v1/agents/me").await.ok();
    v["agent_id"]
        .as_str()
        .or_else(|| v["id"].as_str())
        .unwrap_or_else(|| panic!("no agent id in {v}"))
        .to_owned()
}

async fn deletion(s: &Ampd, base: &str, name: &str) -> Value {
    let r = admin(
        &s.http,
        base,
        Some(BOOTSTRAP),
        Method::GET,
        &format!("/tenants/{name}/deletion"),
        None,
    )
    .await;
    r.ok()
}

/// A tenant with agents, pending and acknowledged messages, receipts, a webhook job, an
/// owner key and an invite is deleted; a scan of the store finds nothing of it left, and
/// another tenant's data intact; its API keys are refused; its name can be created again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_tenant_delete_purges_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_owned();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let config = |c: &mut ampd::Config| {
        c.server.data_dir = data.clone();
        c.ingest.outbound.allow_private = true;
        // The webhook's first attempt fails (a closed port); the retry waits: a stored job.
        c.delivery.webhook.retry_delays_ms = vec![0, 600_000];
    };
    let (s, base) = start_admin(config).await;
    tenant(&s, &base, "doomed", "open").await;
    tenant(&s, &base, "kept", "open").await;
    owner_key(&s, &base, "doomed").await;
    owner_key(&s, &base, "kept").await;
    for t in ["doomed", "kept"] {
        let r = admin(
            &s.http,
            &base,
            Some(BOOTSTRAP),
            Method::POST,
            &format!("/tenants/{t}/invites"),
            None,
        )
        .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    }

    let d1 = s.register("doomed", "dora").await;
    let d2 = s.register("doomed", "dan").await;
    let k1 = s.register("kept", "kim").await;
    let k2 = s.register("kept", "ken").await;
    let hook = json!({ "delivery": { "webhook_url": format!("http://127.0.0.1:{closed}/hook"), "webhook_secret": SECRET } });
    s.call(
        Method::PATCH,
        "/v1/agents/me",
        Some(&d2.api_key),
        Some(hook.to_string()),
    )
    .await
    .ok();
    let doomed_ids = [agent_id(&s, &d1).await, agent_id(&s, &d2).await];
    let kept_ids = [agent_id(&s, &k1).await, agent_id(&s, &k2).await];

    // Mailboxes: some pending, some acknowledged; receipts; a webhook job (to d2).
    let mut to_d1 = Vec::new();
    for i in 0..3 {
        to_d1.push(
            s.send_text(&k1, &d1.address, &format!("k1 to d1 {i}"))
                .await,
        );
    }
    s.delete(&d1, &format!("/v1/messages/pending/{}", to_d1[0]))
        .await
        .ok();
    let d2_to_d1 = s.send_text(&d2, &d1.address, "d2 to d1").await;
    s.post(&d1, &format!("/v1/messages/{d2_to_d1}/read"), None)
        .await
        .ok();
    s.send_text(&d1, &d2.address, "d1 to d2, hooked").await;
    let mut to_k2 = Vec::new();
    for i in 0..3 {
        to_k2.push(
            s.send_text(&k1, &k2.address, &format!("k1 to k2 {i}"))
                .await,
        );
    }
    s.delete(&k2, &format!("/v1/messages/pending/{}", to_k2[0]))
        .await
        .ok();
    s.post(&k2, &format!("/v1/messages/{}/read", to_k2[1]), None)
        .await
        .ok();

    // Bad input first: spec errors, nothing started.
    let (_, tadmin) = token(&s, &base, "tenant_admin").await;
    let del = |tok: String, name: &'static str| {
        let (http, base) = (s.http.clone(), base.clone());
        async move {
            admin(
                &http,
                &base,
                Some(&tok),
                Method::DELETE,
                &format!("/tenants/{name}"),
                None,
            )
            .await
        }
    };
    del(tadmin, "doomed").await.assert_error(403, "forbidden");
    del(BOOTSTRAP.into(), "nope")
        .await
        .assert_error(404, "not_found");
    del(BOOTSTRAP.into(), "system")
        .await
        .assert_error(403, "forbidden");
    del(BOOTSTRAP.into(), "Bad_Name")
        .await
        .assert_error_field(400, "invalid_field", "name");
    let r = admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::GET,
        "/tenants/doomed/deletion",
        None,
    )
    .await;
    r.assert_error(404, "not_found");

    // The deletion: 202, suspended at once, a second one refused.
    let r = del(BOOTSTRAP.into(), "doomed").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(
        r.headers.get("location").and_then(|v| v.to_str().ok()),
        Some("/admin/v1/tenants/doomed/deletion")
    );
    let v = r.json();
    assert_eq!(v["status"], "pending", "{v}");
    assert!(v["id"].as_str().is_some_and(|i| i.starts_with("del_")));
    within(Duration::from_secs(1), || async {
        s.get(&d1, "/v1/agents/me").await.status != StatusCode::OK
    })
    .await;
    del(BOOTSTRAP.into(), "doomed")
        .await
        .assert_error(409, "conflict");
    let r = admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::POST,
        "/tenants/doomed/resume",
        None,
    )
    .await;
    r.assert_error(409, "conflict");

    // Polled to done.
    let started = std::time::Instant::now();
    let done = loop {
        let d = deletion(&s, &base, "doomed").await;
        if d["status"] == "done" {
            break d;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20) && d["status"] != "failed",
            "{d}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let purged = &done["purged"];
    assert_eq!(purged["agents"], 2, "{done}");
    assert!(purged["messages"].as_u64() >= Some(4), "{done}");
    assert!(purged["receipts"].as_u64() >= Some(1), "{done}");
    assert!(purged["jobs"].as_u64() >= Some(1), "{done}");
    assert_eq!(purged["owner_keys"], 1, "{done}");
    assert_eq!(purged["invites"], 1, "{done}");
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
    assert!(done["error"].is_null());

    // The public API refuses the tenant's keys; the other tenant works as before.
    for who in [&d1, &d2] {
        s.get(who, "/v1/agents/me")
            .await
            .assert_error(401, "unauthorized");
    }
    s.get(&k1, "/v1/agents/me").await.ok();
    assert_eq!(s.pending_ids(&k2).await, to_k2[1..]);
    admin(
        &s.http,
        &base,
        Some(BOOTSTRAP),
        Method::GET,
        "/tenants/doomed",
        None,
    )
    .await
    .assert_error(404, "not_found");
    let audit = admin(&s.http, &base, Some(BOOTSTRAP), Method::GET, "/audit", None).await;
    assert!(audit.text.contains("tenant.delete"), "{}", audit.text);
    s.stop().await;

    // The store itself: every row of every table.
    let rows = Embedded::open(&data).scan_rows();
    let mentions = |needle: &str| {
        rows.iter()
            .filter(|r| r.key.contains(needle) || r.value.contains(needle))
            .filter(|r| {
                // Kept on purpose: the append-only audit log, the deletion's own record and
                // the usage rows (billing).
                !(r.table == "records"
                    && (r.key.contains("\"audit\"")
                        || r.key.contains("\"tenant_deletions\"")
                        || is_usage(&r.key)))
            })
            .map(|r| format!("{} {} {}", r.table, r.key, r.value))
            .collect::<Vec<_>>()
    };
    for needle in doomed_ids
        .iter()
        .map(String::as_str)
        .chain(["doomed", &d1.address, &d2.address])
    {
        let left = mentions(needle);
        assert!(left.is_empty(), "{needle} is still in the store: {left:#?}");
    }
    for id in &kept_ids {
        assert!(
            rows.iter().any(|r| r.table == "agents" && &r.key == id),
            "kept agent {id} is whole"
        );
    }
    let kept_rows = |table: &str, id: &str| {
        rows.iter()
            .filter(|r| r.table == table && r.key.contains(id))
            .count()
    };
    assert_eq!(
        kept_rows("mailbox", &kept_ids[1]),
        2,
        "k2's pending messages"
    );
    assert_eq!(
        kept_rows("msg_index", &kept_ids[1]),
        3,
        "k2's ids, the acked one too"
    );
    assert_eq!(kept_rows("receipts", &kept_ids[0]), 1, "k1's receipt");
    assert!(mentions("kept").iter().any(|r| r.starts_with("records")));
    assert!(
        rows.iter().any(|r| r.table == "records"
            && r.key.contains("tenant_deletions")
            && r.value.contains("\"done\"")),
        "the deletion's record is kept"
    );

    // Restarted on the same data: the name is free, the tenant fresh.
    let (s, base) = start_admin(config).await;
    tenant(&s, &base, "doomed", "open").await;
    let again = s.register("doomed", "dora").await;
    let v = s.get(&again, "/v1/agents").await.ok();
    let names: Vec<&str> = v["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .filter_map(|a| a["address"].as_str())
        .collect();
    assert_eq!(names, ["dora@doomed.amp.test"], "{v}");
    assert!(s.pending_ids(&again).await.is_empty());
    assert_eq!(deletion(&s, &base, "doomed").await["status"], "done");
    s.get(&k1, "/v1/agents/me").await.ok();
    s.stop().await;
}

/// A deletion whose process stopped before it finished is resumed by the next start: here
/// the store is left as a crash right after `DELETE` answered leaves it (the job's record
/// `running`, the tenant marked `deleting`, nothing purged yet), and the restarted `ampd`
/// runs it to `done`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_tenant_delete_resumes_after_a_restart() {
    use amp_store::deletion::{self, DeletionStatus, TenantDeletion};
    use amp_store::operator::{Operator as _, TenantStatus};

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_owned();
    let config = |c: &mut ampd::Config| c.server.data_dir = data.clone();
    let (s, base) = start_admin(config).await;
    tenant(&s, &base, "halfway", "open").await;
    let a = s.register("halfway", "ann").await;
    let b = s.register("halfway", "bob").await;
    let other = s.register("elsewhere", "olga").await;
    s.send_text(&a, &b.address, "one").await;
    s.send_text(&b, &a.address, "two").await;
    let ids = [agent_id(&s, &a).await, agent_id(&s, &b).await];
    s.stop().await;

    {
        let store = Embedded::open(&data).into_store();
        let now = amp_proto::Timestamp::now().unix_millis();
        let mut t = store
            .tenant("halfway")
            .await
            .expect("read")
            .expect("tenant");
        t.status = TenantStatus::Deleting;
        store.put_tenant(&t).await.expect("mark");
        let d = TenantDeletion {
            id: "del_crashed".into(),
            tenant: "halfway".into(),
            status: DeletionStatus::Running,
            requested_by: "opt_test".into(),
            requested_at: now,
            started_at: Some(now),
            finished_at: None,
            purged: Default::default(),
            error: None,
        };
        deletion::save(&store, &d).await.expect("save");
        store.close().await.expect("close");
    }

    let (s, base) = start_admin(config).await;
    // Refused while the resumed job runs, as for any deleting tenant.
    assert_ne!(s.get(&a, "/v1/agents/me").await.status, StatusCode::OK);
    let started = std::time::Instant::now();
    let done = loop {
        let d = deletion(&s, &base, "halfway").await;
        if d["status"] == "done" {
            break d;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(done["id"], "del_crashed", "{done}");
    assert_eq!(done["purged"]["agents"], 2, "{done}");
    s.get(&a, "/v1/agents/me")
        .await
        .assert_error(401, "unauthorized");
    s.get(&other, "/v1/agents/me").await.ok();
    s.stop().await;

    let rows = Embedded::open(&data).scan_rows();
    for needle in ids.iter().map(String::as_str).chain(["halfway"]) {
        let left: Vec<_> = rows
            .iter()
            .filter(|r| r.key.contains(needle) || r.value.contains(needle))
            .filter(|r| {
                !(r.table == "records"
                    && (r.key.contains("\"audit\"")
                        || r.key.contains("\"tenant_deletions\"")
                        || is_usage(&r.key)))
            })
            .collect();
        assert!(left.is_empty(), "{needle} is still in the store: {left:#?}");
    }
}

/// Usage rows and their tenant index (`amp_store::usage`): kept on purpose, like the audit
/// log, for the tenant's last invoice.
fn is_usage(key: &str) -> bool {
    key.starts_with("(\"usage.") || key.starts_with("(\"usage_tenants\"")
}
