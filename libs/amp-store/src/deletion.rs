//! Tenant deletion: a job that purges everything the store holds about a tenant, through
//! the traits, so every backend runs the same steps.
//!
//! The job's state is a record ([`DELETIONS`], by tenant name): written `pending` when the
//! operator asks, `running` and its counts after every page, `done` or `failed` at the
//! end. Every step is idempotent and finds its own work again (purged agents are no longer
//! listed, taken records are gone), so a process that dies mid-way loses nothing: the next
//! start finds the unfinished record ([`unfinished`]) and [`run`]s it again to the end.
//!
//! The steps, in an order that keeps each one findable until it is done:
//! 0. the tenant is marked `deleting` (if it is not yet): refused service from then on;
//! 1. jobs of the given kinds whose data names the tenant (`tenant`: federation jobs), an
//!    agent of the tenant (`agent_id`: webhook jobs) or an agent no longer in the registry
//!    (one purged by an earlier run that stopped), or whose sender
//!    (`accepted.sender_address`: federation jobs written before they carried `tenant`) is
//!    an active agent of the tenant;
//! 2. agents, a page at a time ([`Purge::purge_agent`]: record, name, keys, mailbox,
//!    receipts, presence);
//! 3. the tenant's owner keys and invite codes;
//! 4. the held-bytes ledgers of its mailboxes ([`crate::usage::held_collection`]), then
//!    the tenant record, last: from then on the name can be created afresh.
//!
//! The audit log is append-only and kept.

use serde::{Deserialize, Serialize};

use crate::operator::{INVITES, Invite, Operator as _, TENANTS, TenantStatus};
use crate::{Error, Millis, PutMode, Result, Store};

/// Collection of [`TenantDeletion`]s, by tenant name.
pub const DELETIONS: &str = "tenant_deletions";

/// Agents purged per page (progress is saved after each).
const PAGE: usize = 100;
/// Most jobs of one kind read in one scan (jobs are retry timers: few at any moment).
const JOB_SCAN: usize = 100_000;

/// Where a deletion stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionStatus {
    /// Asked for; no process has started it yet.
    Pending,
    /// Being purged (or was, by a process that stopped: resumed at the next start).
    Running,
    /// Everything is gone; the tenant's name is free.
    Done,
    /// Stopped on an error (in `error`); asking for the deletion again resumes it.
    Failed,
}

impl DeletionStatus {
    /// Whether a process still has to run it.
    pub fn unfinished(self) -> bool {
        matches!(self, Self::Pending | Self::Running)
    }
}

/// What a deletion removed so far, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeCounts {
    /// Agents (record, name, keys, presence).
    pub agents: u64,
    /// Mailbox entries, queued or acknowledged.
    pub messages: u64,
    /// Receipts.
    pub receipts: u64,
    /// Jobs (webhook and federation deliveries).
    pub jobs: u64,
    /// Owner keys.
    pub owner_keys: u64,
    /// Invite codes.
    pub invites: u64,
}

/// A tenant deletion and its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantDeletion {
    /// Public id (`del_…`).
    pub id: String,
    /// The tenant.
    pub tenant: String,
    /// Where it stands.
    pub status: DeletionStatus,
    /// Who asked (an operator token id).
    pub requested_by: String,
    /// Asked at, unix ms.
    pub requested_at: Millis,
    /// First started at, unix ms.
    #[serde(default)]
    pub started_at: Option<Millis>,
    /// Done or failed at, unix ms.
    #[serde(default)]
    pub finished_at: Option<Millis>,
    /// What is gone so far.
    #[serde(default)]
    pub purged: PurgeCounts,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<String>,
}

fn to_vec<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Corrupt(e.to_string()))
}

/// Writes a deletion's record.
///
/// Fails when the store cannot be written.
pub async fn save(store: &Store, d: &TenantDeletion) -> Result<()> {
    store
        .record_put(DELETIONS, &d.tenant, to_vec(d)?, PutMode::Replace)
        .await
        .map(|_| ())
}

/// The latest deletion of a tenant.
///
/// Fails when the store cannot be read or the record is not a deletion.
pub async fn get(store: &Store, tenant: &str) -> Result<Option<TenantDeletion>> {
    match store.record_get(DELETIONS, tenant).await? {
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Corrupt(e.to_string())),
        None => Ok(None),
    }
}

/// Every deletion still to run (`pending` or `running`), to resume at start.
///
/// Fails when the store cannot be read.
pub async fn unfinished(store: &Store) -> Result<Vec<TenantDeletion>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let rows = store.record_list(DELETIONS, after.as_deref(), 500).await?;
        let n = rows.len();
        for (id, b) in rows {
            let d: TenantDeletion =
                serde_json::from_slice(&b).map_err(|e| Error::Corrupt(e.to_string()))?;
            if d.status.unfinished() {
                out.push(d);
            }
            after = Some(id);
        }
        if n < 500 {
            return Ok(out);
        }
    }
}

/// Whether `job` belongs to `tenant`, by its data: its `tenant` field; else its
/// `agent_id`, an agent of the tenant or one no longer in the registry (purged by an earlier
/// run that stopped); else its `accepted.sender_address` (a federation job written before
/// jobs carried their tenant), the address of an active agent of the tenant. A job whose
/// data names none of them is nobody's.
///
/// Fails when the registry cannot be read.
async fn job_of_tenant(store: &Store, job: &crate::Job, tenant: &str) -> Result<bool> {
    let Ok(data) = serde_json::from_str::<serde_json::Value>(&job.data) else {
        return Ok(false);
    };
    if let Some(t) = data.get("tenant").and_then(serde_json::Value::as_str) {
        return Ok(t == tenant);
    }
    if let Some(agent) = data.get("agent_id").and_then(serde_json::Value::as_str) {
        return Ok(match store.agent(agent).await? {
            Some(a) => a.tenant == tenant,
            None => true,
        });
    }
    let sender = data
        .get("accepted")
        .and_then(|a| a.get("sender_address"))
        .and_then(serde_json::Value::as_str);
    if let Some(address) = sender
        && let Some((name, _)) = address.split_once('@')
        && let Some(a) = store
            .agent_by_name(tenant, &name.to_ascii_lowercase())
            .await?
    {
        return Ok(a.address.eq_ignore_ascii_case(address));
    }
    Ok(false)
}

/// Runs (or resumes) a deletion to its end: `job_kinds` are the kinds of job to look
/// through for the tenant's (their data names the tenant, an agent of it by `agent_id`, or
/// a sender of it by `accepted.sender_address`: [`job_of_tenant`]). Saves progress after every step; returns the record marked
/// `done`. The caller marks it `failed` on an error (or retries: running again is safe).
///
/// Fails when the store fails; what was purged stays purged.
pub async fn run(
    store: &Store,
    d: TenantDeletion,
    job_kinds: &[&str],
    now: impl Fn() -> Millis,
) -> Result<TenantDeletion> {
    run_with(store, d, job_kinds, now, || async {}).await
}

/// [`run`], calling `purged` once every agent, key and invite of the tenant is gone and
/// before the deletion is marked `done`: where caches of agent records must drop them (so
/// that nothing purged is still served once the status says `done`), and where a process
/// forgets what it counted of the tenant's held bytes before their ledgers are deleted.
///
/// Fails when the store fails; what was purged stays purged.
pub async fn run_with<F, Fut>(
    store: &Store,
    mut d: TenantDeletion,
    job_kinds: &[&str],
    now: impl Fn() -> Millis,
    purged: F,
) -> Result<TenantDeletion>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    d.status = DeletionStatus::Running;
    d.started_at.get_or_insert_with(&now);
    d.error = None;
    save(store, &d).await?;
    let tenant = d.tenant.clone();

    // 0. Refused service while its data goes (the caller marks it too; a job resumed at
    //    start makes sure).
    if let Some(mut t) = store.tenant(&tenant).await?
        && t.status != TenantStatus::Deleting
    {
        t.status = TenantStatus::Deleting;
        t.updated_at = now();
        store.put_tenant(&t).await?;
    }

    // 1. Jobs, while their agents can still be told apart by tenant.
    for kind in job_kinds {
        for job in store.due_jobs(kind, Millis::MAX, JOB_SCAN).await? {
            if job_of_tenant(store, &job, &tenant).await? {
                store.complete(&job.id).await?;
                d.purged.jobs += 1;
            }
        }
    }
    save(store, &d).await?;

    // 2. Agents: purge the first page, ask again.
    let mut last_page: Vec<String> = Vec::new();
    loop {
        let page = store.tenant_agents(&tenant, PAGE).await?;
        if page.is_empty() {
            break;
        }
        if page == last_page {
            return Err(Error::Corrupt(format!(
                "tenant '{tenant}': agents still listed after their purge"
            )));
        }
        for id in &page {
            // Its suspension and risk rows (spec-next 07) first: the agent stays listed
            // until its purge completes, so a resumed deletion gets here again.
            crate::suspension::Suspensions::clear_suspension(&**store, id).await?;
            crate::risk::Risk::drop_risk(&**store, id).await?;
            let p = store.purge_agent(id).await?;
            d.purged.agents += 1;
            d.purged.messages += p.messages;
            d.purged.receipts += p.receipts;
        }
        save(store, &d).await?;
        last_page = page;
    }

    // 3. Owner keys and invite codes.
    for (hash_hex, _) in store.owner_keys(&tenant).await? {
        if store
            .record_take(crate::operator::OWNER_KEYS, &hash_hex)
            .await?
        {
            d.purged.owner_keys += 1;
        }
    }
    let mut after: Option<String> = None;
    loop {
        let rows = store.record_list(INVITES, after.as_deref(), 500).await?;
        let n = rows.len();
        for (id, b) in rows {
            let invite: Invite =
                serde_json::from_slice(&b).map_err(|e| Error::Corrupt(e.to_string()))?;
            if invite.tenant == tenant && store.record_take(INVITES, &id).await? {
                d.purged.invites += 1;
            }
            after = Some(id);
        }
        if n < 500 {
            break;
        }
    }

    // 3b. Messages held for review for its agents (spec-next 07 quarantine).
    crate::quarantine::Quarantine::drop_tenant_quarantine(&**store, &tenant).await?;

    // 4. The held-bytes ledgers (its mailboxes hold nothing now), then the tenant record,
    //    last.
    purged().await;
    let held = crate::usage::held_collection(&tenant);
    loop {
        let rows = store.record_list(&held, None, 500).await?;
        let n = rows.len();
        for (id, _) in rows {
            store.record_take(&held, &id).await?;
        }
        if n < 500 {
            break;
        }
    }
    store.record_take(TENANTS, &tenant).await?;
    d.status = DeletionStatus::Done;
    d.finished_at = Some(now());
    save(store, &d).await?;
    Ok(d)
}
