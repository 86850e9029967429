//! The embedded backend: one redb file in the data directory, written through a single
//! group-commit writer thread ([`writer`]) so many operations share one fsync; reads run
//! directly on read transactions (MVCC snapshots, never blocked by the writer).
//!
//! Layout (all values JSON unless noted):
//! - `agents` id → [`AgentRecord`]; `names` `tenant/name` → holder; `owned` (owner, agent) → ();
//! - `api_keys` hash → [`ApiKeyRecord`]; `agent_keys` (agent, hash) → ();
//! - `owners` id → [`OwnerRecord`]; `owner_keys` hash → owner id;
//! - `mailbox` (agent, seq) → [`MailboxEntry`]; `msg_index` (agent, message id) → index entry
//!   (kept after an ack as a tombstone until the message's expiry, so a late retry is still
//!   recognised); `mbox_meta` agent → head, count, floor; `expiry` (expires_at, agent, seq) →
//!   message id, which drives bulk purging;
//! - `receipts` (agent, seq) → [`Receipt`]; `receipt_head` agent → u64;
//! - `jobs` (due_at, id) → [`Job`]; `job_ids` id → due_at; `kv` key → bytes;
//! - `records` (collection, id) → bytes: the operator plane ([`records`]).
//! - `attachments` id → revision and [`AttachmentRecord`] (see `attachments`).
//!
//! [`Purge`] (`purge`) removes an agent's rows from every table in one transaction;
//! [`RedbStore::scan_rows`] reads every row of every table (a new table is added there too,
//! and to `export`, which reads a store out for [`crate::migrate`]; a table it does not
//! know fails a migration).
//!
//! Acknowledged messages leave `mailbox` at once (in the same group commit as every other
//! write); their tombstones and expired entries are reclaimed in bulk by `purge_expired`.

mod attachments;
#[cfg(feature = "fjall")]
pub(crate) mod export;
mod purge;
mod records;
mod writer;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::redb::{
    Database, ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
    WriteTransaction,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::embedded::{from_json, queued_id_without_row, st, to_json};
use crate::mailbox_row;
use crate::*;
use writer::Writer;

const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
const NAMES: TableDefinition<&str, &[u8]> = TableDefinition::new("names");
/// Active (not held) names per tenant, kept with `NAMES` in the same transactions, so a
/// listing's total costs one row (issue 16).
const TENANT_ACTIVE: TableDefinition<&str, u64> = TableDefinition::new("tenant_active");
const OWNED: TableDefinition<(&str, &str), ()> = TableDefinition::new("owned");
const API_KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("api_keys");
const AGENT_KEYS: TableDefinition<(&str, &[u8]), ()> = TableDefinition::new("agent_keys");
const OWNERS: TableDefinition<&str, &[u8]> = TableDefinition::new("owners");
const OWNER_KEYS: TableDefinition<&[u8], &str> = TableDefinition::new("owner_keys");
const MAILBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("mailbox");
const MSG_INDEX: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("msg_index");
const MBOX_META: TableDefinition<&str, &[u8]> = TableDefinition::new("mbox_meta");
const EXPIRY: TableDefinition<(i64, &str, u64), &str> = TableDefinition::new("expiry");
const RECEIPTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("receipts");
const RECEIPT_HEAD: TableDefinition<&str, u64> = TableDefinition::new("receipt_head");
const JOBS: TableDefinition<(i64, &str), &[u8]> = TableDefinition::new("jobs");
const JOB_IDS: TableDefinition<&str, i64> = TableDefinition::new("job_ids");
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Expiry of the kv entries that have one, and the same by time for the purge.
const KV_EXPIRES: TableDefinition<&str, i64> = TableDefinition::new("kv_expires");
const KV_EXPIRY: TableDefinition<(i64, &str), ()> = TableDefinition::new("kv_expiry");
const PRESENCE: TableDefinition<(&str, &str), i64> = TableDefinition::new("presence");
const RECORDS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("records");
/// Attachment id → revision (8 bytes, big-endian) and the record's JSON.
const ATTACHMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("attachments");

/// The store's file in a data directory ([`RedbConfig::in_dir`]).
pub const FILE: &str = "amp.redb";

/// Options of the embedded store.
#[derive(Debug, Clone)]
pub struct RedbConfig {
    /// The database file.
    pub path: PathBuf,
    /// Share one fsync between all writes queued while the previous commit ran.
    pub group_commit: bool,
    /// Most operations in one commit.
    pub max_batch: usize,
    /// Save the allocator state with every commit (two-phase commit), so reopening after a
    /// crash takes milliseconds instead of a walk of the whole file; costs a second fsync
    /// per commit, which group commit shares.
    pub quick_repair: bool,
}

impl RedbConfig {
    /// Group commit on, up to 1024 operations per commit, the file `amp.redb` in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join(FILE),
            group_commit: true,
            max_batch: 1024,
            quick_repair: true,
        }
    }
}

/// The embedded store.
pub struct RedbStore {
    db: Arc<writer::Shared>,
    writer: Writer,
}

/// The holder of a (tenant, name).
#[derive(Debug, Serialize, Deserialize)]
struct NameHolder {
    agent_id: String,
    /// Set once the agent is deregistered: the name is free from then on.
    held_until: Option<Millis>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct MailboxMeta {
    head: u64,
    count: u64,
    floor: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexEntry {
    seq: u64,
    sender: String,
    signature: String,
    acked: bool,
    expires_at: Millis,
}

fn name_key(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

/// Writes (`Some`) or removes (`None`) the holder of a name, keeping the tenant's count of
/// active names in the same transaction.
fn set_holder(
    txn: &WriteTransaction,
    tenant: &str,
    name: &str,
    holder: Option<&NameHolder>,
) -> Result<()> {
    let key = name_key(tenant, name);
    let mut names = txn.open_table(NAMES).map_err(st)?;
    let was_active = match names.get(key.as_str()).map_err(st)? {
        Some(v) => from_json::<NameHolder>(v.value())?.held_until.is_none(),
        None => false,
    };
    match holder {
        Some(h) => names.insert(key.as_str(), to_json(h)?.as_slice()).map(drop),
        None => names.remove(key.as_str()).map(drop),
    }
    .map_err(st)?;
    let is_active = holder.is_some_and(|h| h.held_until.is_none());
    if was_active != is_active {
        let mut counts = txn.open_table(TENANT_ACTIVE).map_err(st)?;
        let n = counts.get(tenant).map_err(st)?.map_or(0, |v| v.value());
        let n = if is_active {
            n + 1
        } else {
            n.saturating_sub(1)
        };
        if n == 0 {
            counts.remove(tenant).map_err(st)?;
        } else {
            counts.insert(tenant, n).map_err(st)?;
        }
    }
    Ok(())
}

/// Fills `TENANT_ACTIVE` from `NAMES` (a database written before the counts existed).
fn count_active_names(txn: &WriteTransaction) -> Result<()> {
    let mut per_tenant = std::collections::BTreeMap::<String, u64>::new();
    {
        let names = txn.open_table(NAMES).map_err(st)?;
        for row in names.iter().map_err(st)? {
            let (k, v) = row.map_err(st)?;
            let holder: NameHolder = from_json(v.value())?;
            if holder.held_until.is_some() {
                continue;
            }
            // Tenants never contain '/': the key is "tenant/name".
            if let Some((tenant, _)) = k.value().split_once('/') {
                *per_tenant.entry(tenant.to_owned()).or_default() += 1;
            }
        }
    }
    let mut counts = txn.open_table(TENANT_ACTIVE).map_err(st)?;
    for (tenant, n) in per_tenant {
        counts.insert(tenant.as_str(), n).map_err(st)?;
    }
    Ok(())
}

/// Creates every table the store has (so read transactions can always open them) and
/// counts the active names of a database from before the counts, in one transaction.
fn prepare(db: &Database, quick_repair: bool) -> Result<()> {
    // Create every table once so read transactions can always open them.
    let mut txn = db.begin_write().map_err(st)?;
    txn.set_quick_repair(quick_repair);
    let counted = txn
        .list_tables()
        .map_err(st)?
        .any(|t| t.name() == TENANT_ACTIVE.name());
    if !counted {
        // A database from before the counts: count once, in the opening transaction.
        count_active_names(&txn)?;
    }
    {
        txn.open_table(TENANT_ACTIVE).map_err(st)?;
        txn.open_table(AGENTS).map_err(st)?;
        txn.open_table(NAMES).map_err(st)?;
        txn.open_table(OWNED).map_err(st)?;
        txn.open_table(API_KEYS).map_err(st)?;
        txn.open_table(AGENT_KEYS).map_err(st)?;
        txn.open_table(OWNERS).map_err(st)?;
        txn.open_table(OWNER_KEYS).map_err(st)?;
        txn.open_table(MAILBOX).map_err(st)?;
        txn.open_table(MSG_INDEX).map_err(st)?;
        txn.open_table(MBOX_META).map_err(st)?;
        txn.open_table(EXPIRY).map_err(st)?;
        txn.open_table(RECEIPTS).map_err(st)?;
        txn.open_table(RECEIPT_HEAD).map_err(st)?;
        txn.open_table(JOBS).map_err(st)?;
        txn.open_table(JOB_IDS).map_err(st)?;
        txn.open_table(KV).map_err(st)?;
        txn.open_table(KV_EXPIRES).map_err(st)?;
        txn.open_table(KV_EXPIRY).map_err(st)?;
        txn.open_table(PRESENCE).map_err(st)?;
        txn.open_table(RECORDS).map_err(st)?;
        txn.open_table(ATTACHMENTS).map_err(st)?;
    }
    txn.commit().map_err(st)?;
    Ok(())
}

impl RedbStore {
    /// Opens (creating if needed) the database and starts the writer thread.
    ///
    /// Fails when the file cannot be opened or is not a redb database, or is already open
    /// in another process.
    pub fn open(cfg: &RedbConfig) -> Result<Self> {
        if let Some(dir) = cfg.path.parent() {
            std::fs::create_dir_all(dir).map_err(st)?;
        }
        let db = Database::create(&cfg.path).map_err(st)?;
        prepare(&db, cfg.quick_repair)?;
        let db = Arc::new(writer::Shared::new(db, cfg.path.clone()));
        let writer = Writer::start(
            db.clone(),
            cfg.group_commit,
            cfg.max_batch,
            cfg.quick_repair,
        );
        Ok(Self { db, writer })
    }

    fn read(&self) -> Result<ReadTransaction> {
        self.db.current()?.begin_read().map_err(st)
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        self.writer.close();
    }
}

/// Deletes every mailbox row, index entry, expiry entry and message marker of an agent.
fn delete_mailbox_in(txn: &WriteTransaction, agent_id: &str) -> Result<()> {
    let mut index = txn.open_table(MSG_INDEX).map_err(st)?;
    let mut expiry = txn.open_table(EXPIRY).map_err(st)?;
    let mut mailbox = txn.open_table(MAILBOX).map_err(st)?;
    let mut keys = Vec::new();
    for row in index.range((agent_id, "")..).map_err(st)? {
        let (k, v) = row.map_err(st)?;
        let (a, id) = k.value();
        if a != agent_id {
            break;
        }
        let e: IndexEntry = from_json(v.value())?;
        keys.push((id.to_owned(), e.seq, e.expires_at));
    }
    for (id, seq, exp) in &keys {
        index.remove((agent_id, id.as_str())).map_err(st)?;
        expiry.remove((*exp, agent_id, *seq)).map_err(st)?;
        mailbox.remove((agent_id, *seq)).map_err(st)?;
    }
    for (id, ..) in &keys {
        for kind in MESSAGE_MARKERS {
            kv_delete_in(txn, &message_marker(kind, agent_id, id))?;
        }
    }
    txn.open_table(MBOX_META)
        .map_err(st)?
        .remove(agent_id)
        .map_err(st)?;
    Ok(())
}

/// Deletes a kv entry and its expiry rows.
fn kv_delete_in(txn: &WriteTransaction, key: &str) -> Result<()> {
    txn.open_table(KV).map_err(st)?.remove(key).map_err(st)?;
    let old = txn
        .open_table(KV_EXPIRES)
        .map_err(st)?
        .remove(key)
        .map_err(st)?
        .map(|t| t.value());
    if let Some(t) = old {
        txn.open_table(KV_EXPIRY)
            .map_err(st)?
            .remove((t, key))
            .map_err(st)?;
    }
    Ok(())
}

fn read_agent(txn: &ReadTransaction, id: &str) -> Result<Option<AgentRecord>> {
    let t = txn.open_table(AGENTS).map_err(st)?;
    match t.get(id).map_err(st)? {
        Some(v) => Ok(Some(from_json(v.value())?)),
        None => Ok(None),
    }
}

#[async_trait]
impl Registry for RedbStore {
    async fn create_agent(&self, agent: AgentRecord, api_key: KeyHash, now: Millis) -> Result<()> {
        self.writer
            .write(move |txn| {
                {
                    let names = txn.open_table(NAMES).map_err(st)?;
                    let key = name_key(&agent.tenant, &agent.name);
                    if let Some(v) = names.get(key.as_str()).map_err(st)? {
                        let holder: NameHolder = from_json(v.value())?;
                        if holder.held_until.is_none_or(|t| now < t) {
                            return Err(Error::NameTaken);
                        }
                    }
                }
                let holder = NameHolder {
                    agent_id: agent.id.clone(),
                    held_until: None,
                };
                set_holder(txn, &agent.tenant, &agent.name, Some(&holder))?;
                txn.open_table(AGENTS)
                    .map_err(st)?
                    .insert(agent.id.as_str(), to_json(&agent)?.as_slice())
                    .map_err(st)?;
                let rec = ApiKeyRecord {
                    agent_id: agent.id.clone(),
                    created_at: now,
                    valid_until: None,
                };
                txn.open_table(API_KEYS)
                    .map_err(st)?
                    .insert(api_key.as_slice(), to_json(&rec)?.as_slice())
                    .map_err(st)?;
                txn.open_table(AGENT_KEYS)
                    .map_err(st)?
                    .insert((agent.id.as_str(), api_key.as_slice()), ())
                    .map_err(st)?;
                if let Some(owner) = &agent.owner_id {
                    txn.open_table(OWNED)
                        .map_err(st)?
                        .insert((owner.as_str(), agent.id.as_str()), ())
                        .map_err(st)?;
                }
                Ok(())
            })
            .await
    }

    async fn agent(&self, id: &str) -> Result<Option<AgentRecord>> {
        read_agent(&self.read()?, id)
    }

    async fn agent_by_name(&self, tenant: &str, name: &str) -> Result<Option<AgentRecord>> {
        let txn = self.read()?;
        let names = txn.open_table(NAMES).map_err(st)?;
        let Some(v) = names.get(name_key(tenant, name).as_str()).map_err(st)? else {
            return Ok(None);
        };
        let holder: NameHolder = from_json(v.value())?;
        Ok(read_agent(&txn, &holder.agent_id)?.filter(AgentRecord::is_active))
    }

    async fn agent_by_api_key(&self, key: &KeyHash) -> Result<Option<(AgentRecord, ApiKeyRecord)>> {
        let txn = self.read()?;
        let keys = txn.open_table(API_KEYS).map_err(st)?;
        let Some(v) = keys.get(key.as_slice()).map_err(st)? else {
            return Ok(None);
        };
        let rec: ApiKeyRecord = from_json(v.value())?;
        Ok(read_agent(&txn, &rec.agent_id)?
            .filter(AgentRecord::is_active)
            .map(|a| (a, rec)))
    }

    async fn update_agent(&self, agent: AgentRecord) -> Result<()> {
        self.writer
            .write(move |txn| {
                let mut t = txn.open_table(AGENTS).map_err(st)?;
                let active = match t.get(agent.id.as_str()).map_err(st)? {
                    Some(v) => from_json::<AgentRecord>(v.value())?.is_active(),
                    None => false,
                };
                if !active {
                    return Err(Error::NotFound);
                }
                t.insert(agent.id.as_str(), to_json(&agent)?.as_slice())
                    .map_err(st)?;
                Ok(())
            })
            .await
    }

    async fn touch_agent(&self, id: &str, now: Millis) -> Result<()> {
        let id = id.to_owned();
        self.writer
            .write(move |txn| {
                let mut t = txn.open_table(AGENTS).map_err(st)?;
                let current = match t.get(id.as_str()).map_err(st)? {
                    Some(v) => from_json::<AgentRecord>(v.value())?,
                    None => return Ok(()),
                };
                if current.is_active() {
                    let mut a = current;
                    a.last_seen_at = Some(now);
                    t.insert(id.as_str(), to_json(&a)?.as_slice()).map_err(st)?;
                }
                Ok(())
            })
            .await
    }

    async fn rotate_api_key(
        &self,
        agent_id: &str,
        new_key: KeyHash,
        now: Millis,
        old_valid_until: Millis,
    ) -> Result<()> {
        let agent_id = agent_id.to_owned();
        self.writer
            .write(move |txn| {
                let agents = txn.open_table(AGENTS).map_err(st)?;
                let active = match agents.get(agent_id.as_str()).map_err(st)? {
                    Some(v) => from_json::<AgentRecord>(v.value())?.is_active(),
                    None => false,
                };
                if !active {
                    return Err(Error::NotFound);
                }
                let mut agent_keys = txn.open_table(AGENT_KEYS).map_err(st)?;
                let mut api_keys = txn.open_table(API_KEYS).map_err(st)?;
                let mut old = Vec::new();
                for row in agent_keys
                    .range((agent_id.as_str(), &[][..])..)
                    .map_err(st)?
                {
                    let (k, _) = row.map_err(st)?;
                    let (a, h) = k.value();
                    if a != agent_id {
                        break;
                    }
                    old.push(h.to_vec());
                }
                for h in &old {
                    let rec = match api_keys.get(h.as_slice()).map_err(st)? {
                        Some(v) => Some(from_json::<ApiKeyRecord>(v.value())?),
                        None => None,
                    };
                    if let Some(mut rec) = rec {
                        rec.valid_until = Some(
                            rec.valid_until
                                .map_or(old_valid_until, |t| t.min(old_valid_until)),
                        );
                        api_keys
                            .insert(h.as_slice(), to_json(&rec)?.as_slice())
                            .map_err(st)?;
                    }
                }
                let rec = ApiKeyRecord {
                    agent_id: agent_id.clone(),
                    created_at: now,
                    valid_until: None,
                };
                api_keys
                    .insert(new_key.as_slice(), to_json(&rec)?.as_slice())
                    .map_err(st)?;
                agent_keys
                    .insert((agent_id.as_str(), new_key.as_slice()), ())
                    .map_err(st)?;
                Ok(())
            })
            .await
    }

    async fn revoke_api_keys(&self, agent_id: &str) -> Result<()> {
        let agent_id = agent_id.to_owned();
        self.writer
            .write(move |txn| revoke_keys_in(txn, &agent_id))
            .await
    }

    async fn deregister_agent(
        &self,
        agent_id: &str,
        now: Millis,
        name_hold_until: Millis,
    ) -> Result<AgentRecord> {
        let agent_id = agent_id.to_owned();
        self.writer
            .write(move |txn| {
                let mut agents = txn.open_table(AGENTS).map_err(st)?;
                let mut agent: AgentRecord = match agents.get(agent_id.as_str()).map_err(st)? {
                    Some(v) => from_json(v.value())?,
                    None => return Err(Error::NotFound),
                };
                if !agent.is_active() {
                    return Err(Error::NotFound);
                }
                agent.status = AgentStatus::Deregistered { at: now };
                agent.delivery.webhook_secret = None;
                agents
                    .insert(agent_id.as_str(), to_json(&agent)?.as_slice())
                    .map_err(st)?;
                let holder = NameHolder {
                    agent_id: agent_id.clone(),
                    held_until: Some(name_hold_until),
                };
                set_holder(txn, &agent.tenant, &agent.name, Some(&holder))?;
                if let Some(owner) = &agent.owner_id {
                    txn.open_table(OWNED)
                        .map_err(st)?
                        .remove((owner.as_str(), agent_id.as_str()))
                        .map_err(st)?;
                }
                revoke_keys_in(txn, &agent_id)?;
                delete_mailbox_in(txn, &agent_id)?;
                Ok(agent)
            })
            .await
    }

    async fn list_agents(
        &self,
        tenant: &str,
        search: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AgentRecord>, u64)> {
        let txn = self.read()?;
        let names = txn.open_table(NAMES).map_err(st)?;
        let agents = txn.open_table(AGENTS).map_err(st)?;
        let prefix = format!("{tenant}/");
        // The page starts right after the cursor's key: a page reads its own rows (and the
        // held names between them), not the tenant.
        let start = match after {
            Some(c) => Bound::Excluded(name_key(tenant, c)),
            None => Bound::Included(prefix.clone()),
        };
        let range = (start.as_ref().map(String::as_str), Bound::Unbounded);
        let Some(search) = search.map(str::to_lowercase) else {
            let mut page = Vec::new();
            for row in names.range::<&str>(range).map_err(st)? {
                if page.len() >= limit {
                    break;
                }
                let (k, v) = row.map_err(st)?;
                if !k.value().starts_with(prefix.as_str()) {
                    break;
                }
                list_cost::names(1);
                let holder: NameHolder = from_json(v.value())?;
                if holder.held_until.is_some() {
                    continue;
                }
                if let Some(a) = agents.get(holder.agent_id.as_str()).map_err(st)? {
                    list_cost::records(1);
                    let agent: AgentRecord = from_json(a.value())?;
                    if agent.is_active() {
                        page.push(agent);
                    }
                }
            }
            let total = txn
                .open_table(TENANT_ACTIVE)
                .map_err(st)?
                .get(tenant)
                .map_err(st)?
                .map_or(0, |v| v.value());
            return Ok((page, total));
        };
        // A search filters the whole tenant (its total is the number of matches).
        let mut page = Vec::new();
        let mut total = 0u64;
        for row in names.range(prefix.as_str()..).map_err(st)? {
            let (k, v) = row.map_err(st)?;
            let Some(name) = k.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            list_cost::names(1);
            let holder: NameHolder = from_json(v.value())?;
            if holder.held_until.is_some() {
                continue;
            }
            let Some(a) = agents.get(holder.agent_id.as_str()).map_err(st)? else {
                continue;
            };
            list_cost::records(1);
            let agent: AgentRecord = from_json(a.value())?;
            if !agent.is_active() {
                continue;
            }
            let hit = agent.name.contains(search.as_str())
                || agent.address.contains(search.as_str())
                || agent
                    .alias
                    .as_deref()
                    .is_some_and(|x| x.to_lowercase().contains(search.as_str()));
            if !hit {
                continue;
            }
            total += 1;
            if after.is_none_or(|c| name > c) && page.len() < limit {
                page.push(agent);
            }
        }
        Ok((page, total))
    }

    async fn put_owner(&self, owner: OwnerRecord, user_key: KeyHash) -> Result<()> {
        self.writer
            .write(move |txn| {
                txn.open_table(OWNERS)
                    .map_err(st)?
                    .insert(owner.id.as_str(), to_json(&owner)?.as_slice())
                    .map_err(st)?;
                txn.open_table(OWNER_KEYS)
                    .map_err(st)?
                    .insert(user_key.as_slice(), owner.id.as_str())
                    .map_err(st)?;
                Ok(())
            })
            .await
    }

    async fn owner_by_user_key(&self, key: &KeyHash) -> Result<Option<OwnerRecord>> {
        let txn = self.read()?;
        let keys = txn.open_table(OWNER_KEYS).map_err(st)?;
        let Some(id) = keys.get(key.as_slice()).map_err(st)? else {
            return Ok(None);
        };
        let owners = txn.open_table(OWNERS).map_err(st)?;
        match owners.get(id.value()).map_err(st)? {
            Some(v) => Ok(Some(from_json(v.value())?)),
            None => Ok(None),
        }
    }

    async fn count_owned_agents(&self, owner_id: &str) -> Result<u64> {
        let txn = self.read()?;
        let owned = txn.open_table(OWNED).map_err(st)?;
        let mut n = 0;
        for row in owned.range((owner_id, "")..).map_err(st)? {
            let (k, _) = row.map_err(st)?;
            if k.value().0 != owner_id {
                break;
            }
            n += 1;
        }
        Ok(n)
    }
}

fn revoke_keys_in(txn: &WriteTransaction, agent_id: &str) -> Result<()> {
    let mut agent_keys = txn.open_table(AGENT_KEYS).map_err(st)?;
    let mut api_keys = txn.open_table(API_KEYS).map_err(st)?;
    let mut hashes = Vec::new();
    for row in agent_keys.range((agent_id, &[][..])..).map_err(st)? {
        let (k, _) = row.map_err(st)?;
        let (a, h) = k.value();
        if a != agent_id {
            break;
        }
        hashes.push(h.to_vec());
    }
    for h in hashes {
        api_keys.remove(h.as_slice()).map_err(st)?;
        agent_keys.remove((agent_id, h.as_slice())).map_err(st)?;
    }
    Ok(())
}

fn read_meta(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    agent: &str,
) -> Result<MailboxMeta> {
    match t.get(agent).map_err(st)? {
        Some(v) => from_json(v.value()),
        None => Ok(MailboxMeta::default()),
    }
}

#[async_trait]
impl Mailboxes for RedbStore {
    async fn enqueue(&self, e: NewMailboxEntry) -> Result<Enqueued> {
        self.writer
            .write(move |txn| {
                let mut index = txn.open_table(MSG_INDEX).map_err(st)?;
                let key = (e.agent_id.as_str(), e.message_id.as_str());
                if let Some(v) = index.get(key).map_err(st)? {
                    let i: IndexEntry = from_json(v.value())?;
                    return Ok(if i.sender == e.sender && i.signature == e.signature {
                        Enqueued::Duplicate { seq: i.seq }
                    } else {
                        Enqueued::Conflict
                    });
                }
                let mut metas = txn.open_table(MBOX_META).map_err(st)?;
                let mut meta = read_meta(&metas, &e.agent_id)?;
                if e.max_queued.is_some_and(|max| meta.count >= max) {
                    return Ok(Enqueued::Full);
                }
                meta.head += 1;
                meta.count += 1;
                let seq = meta.head;
                let entry = MailboxEntry {
                    seq,
                    message_id: e.message_id.clone(),
                    sender: e.sender.clone(),
                    data: e.data,
                    queued_at: e.queued_at,
                    expires_at: e.expires_at,
                };
                let ie = IndexEntry {
                    seq,
                    sender: e.sender,
                    signature: e.signature,
                    acked: false,
                    expires_at: e.expires_at,
                };
                index.insert(key, to_json(&ie)?.as_slice()).map_err(st)?;
                txn.open_table(MAILBOX)
                    .map_err(st)?
                    .insert(
                        (e.agent_id.as_str(), seq),
                        mailbox_row::encode(&entry).as_slice(),
                    )
                    .map_err(st)?;
                txn.open_table(EXPIRY)
                    .map_err(st)?
                    .insert(
                        (e.expires_at, e.agent_id.as_str(), seq),
                        e.message_id.as_str(),
                    )
                    .map_err(st)?;
                metas
                    .insert(e.agent_id.as_str(), to_json(&meta)?.as_slice())
                    .map_err(st)?;
                Ok(Enqueued::New { seq })
            })
            .await
    }

    async fn entry(
        &self,
        agent_id: &str,
        message_id: &str,
        now: Millis,
    ) -> Result<Option<EntryState>> {
        let txn = self.read()?;
        let index = txn.open_table(MSG_INDEX).map_err(st)?;
        let Some(v) = index.get((agent_id, message_id)).map_err(st)? else {
            return Ok(None);
        };
        let i: IndexEntry = from_json(v.value())?;
        if i.acked {
            return Ok(Some(EntryState::Acked { sender: i.sender }));
        }
        let mailbox = txn.open_table(MAILBOX).map_err(st)?;
        match mailbox.get((agent_id, i.seq)).map_err(st)? {
            Some(v) => {
                let e = mailbox_row::decode(v.value())?;
                Ok((e.expires_at > now).then_some(EntryState::Queued(e)))
            }
            None => Ok(None),
        }
    }

    async fn fetch(
        &self,
        agent_id: &str,
        after: Option<u64>,
        limit: usize,
        now: Millis,
    ) -> Result<MailboxPage> {
        // O(page), not O(mailbox): `remaining` comes from the mailbox's queued count, less what
        // lies at or before the page's end (rows behind a cursor are counted by key only, and
        // are few when the client acknowledges as it goes). Expired rows not yet purged are
        // skipped, and counted out where the scan meets them.
        let txn = self.read()?;
        let meta = read_meta(&txn.open_table(MBOX_META).map_err(st)?, agent_id)?;
        let mailbox = txn.open_table(MAILBOX).map_err(st)?;
        let mut behind = 0u64;
        if let Some(a) = after {
            for row in mailbox.range((agent_id, 0)..=(agent_id, a)).map_err(st)? {
                row.map_err(st)?;
                behind += 1;
            }
        }
        let start = after.unwrap_or(0).saturating_add(1);
        let mut entries = Vec::with_capacity(limit.min(1024));
        let mut expired = 0u64;
        let mut more = false;
        for row in mailbox
            .range((agent_id, start)..=(agent_id, u64::MAX))
            .map_err(st)?
        {
            let (_, v) = row.map_err(st)?;
            if entries.len() >= limit {
                more = true;
                break;
            }
            // Expiry is read from the row's header: an expired row is never decoded.
            let (_, expires_at) = mailbox_row::times(v.value())?;
            if expires_at > now {
                entries.push(mailbox_row::decode(v.value())?);
            } else {
                expired += 1;
            }
        }
        let remaining = if more {
            meta.count
                .saturating_sub(behind + entries.len() as u64 + expired)
                .max(1)
        } else {
            0
        };
        Ok(MailboxPage {
            entries,
            remaining,
            head: meta.head,
        })
    }

    async fn count(&self, agent_id: &str, now: Millis) -> Result<MailboxCount> {
        // O(1) in the common case: the queued count, less expired rows at the front (with the
        // default TTL, expiry follows queue order) until the first live one.
        let txn = self.read()?;
        let meta = read_meta(&txn.open_table(MBOX_META).map_err(st)?, agent_id)?;
        let mailbox = txn.open_table(MAILBOX).map_err(st)?;
        let mut expired = 0u64;
        let mut oldest = None;
        for row in mailbox
            .range((agent_id, 0)..=(agent_id, u64::MAX))
            .map_err(st)?
        {
            let (_, v) = row.map_err(st)?;
            let (queued_at, expires_at) = mailbox_row::times(v.value())?;
            if expires_at > now {
                oldest = Some(queued_at);
                break;
            }
            expired += 1;
        }
        Ok(MailboxCount {
            count: if oldest.is_some() {
                meta.count.saturating_sub(expired)
            } else {
                0
            },
            oldest_queued_at: oldest,
            head: meta.head,
            floor: meta.floor,
        })
    }

    async fn ack(&self, agent_id: &str, message_ids: &[String], now: Millis) -> Result<Vec<Acked>> {
        let agent_id = agent_id.to_owned();
        let ids = message_ids.to_vec();
        self.writer
            .write(move |txn| {
                let mut index = txn.open_table(MSG_INDEX).map_err(st)?;
                let mut mailbox = txn.open_table(MAILBOX).map_err(st)?;
                let mut metas = txn.open_table(MBOX_META).map_err(st)?;
                let mut meta = read_meta(&metas, &agent_id)?;
                let mut out = Vec::with_capacity(ids.len());
                let mut changed = false;
                for id in &ids {
                    let key = (agent_id.as_str(), id.as_str());
                    let found = match index.get(key).map_err(st)? {
                        Some(v) => Some(from_json::<IndexEntry>(v.value())?),
                        None => None,
                    };
                    let acked = match found {
                        None => Acked::not_found(),
                        Some(i) if i.acked => Acked::already_acked(),
                        Some(i) if i.expires_at <= now => Acked::not_found(),
                        Some(mut i) => {
                            // The removed row is the entry the caller is told about.
                            let removed =
                                match mailbox.remove((agent_id.as_str(), i.seq)).map_err(st)? {
                                    Some(row) => mailbox_row::decode(row.value())?,
                                    None => {
                                        out.push(queued_id_without_row(&agent_id, id, i.seq));
                                        continue;
                                    }
                                };
                            i.acked = true;
                            index.insert(key, to_json(&i)?.as_slice()).map_err(st)?;
                            meta.count = meta.count.saturating_sub(1);
                            changed = true;
                            Acked::newly(removed)
                        }
                    };
                    out.push(acked);
                }
                if changed {
                    metas
                        .insert(agent_id.as_str(), to_json(&meta)?.as_slice())
                        .map_err(st)?;
                }
                Ok(out)
            })
            .await
    }

    async fn purge_expired(&self, now: Millis, max: usize) -> Result<usize> {
        self.writer
            .write(move |txn| {
                let mut expiry = txn.open_table(EXPIRY).map_err(st)?;
                let mut due = Vec::new();
                for row in expiry.range(..=(now, "\u{10FFFF}", u64::MAX)).map_err(st)? {
                    let (k, v) = row.map_err(st)?;
                    let (t, agent, seq) = k.value();
                    if t > now || due.len() >= max {
                        break;
                    }
                    due.push((t, agent.to_owned(), seq, v.value().to_owned()));
                }
                let mut index = txn.open_table(MSG_INDEX).map_err(st)?;
                let mut mailbox = txn.open_table(MAILBOX).map_err(st)?;
                let mut metas = txn.open_table(MBOX_META).map_err(st)?;
                for (t, agent, seq, id) in &due {
                    expiry.remove((*t, agent.as_str(), *seq)).map_err(st)?;
                    index.remove((agent.as_str(), id.as_str())).map_err(st)?;
                    let was_queued = mailbox
                        .remove((agent.as_str(), *seq))
                        .map_err(st)?
                        .is_some();
                    let mut meta = read_meta(&metas, agent)?;
                    if was_queued {
                        meta.count = meta.count.saturating_sub(1);
                    }
                    meta.floor = meta.floor.max(*seq);
                    metas
                        .insert(agent.as_str(), to_json(&meta)?.as_slice())
                        .map_err(st)?;
                }
                // Expired kv entries (per-message markers), in the same bounded sweep.
                let mut kv_due = Vec::new();
                {
                    let by_time = txn.open_table(KV_EXPIRY).map_err(st)?;
                    for row in by_time.range(..=(now, "\u{10FFFF}")).map_err(st)? {
                        let (k, _) = row.map_err(st)?;
                        let (t, key) = k.value();
                        if t > now || due.len() + kv_due.len() >= max {
                            break;
                        }
                        kv_due.push((t, key.to_owned()));
                    }
                }
                let mut by_time = txn.open_table(KV_EXPIRY).map_err(st)?;
                let mut expires = txn.open_table(KV_EXPIRES).map_err(st)?;
                let mut kv = txn.open_table(KV).map_err(st)?;
                for (t, key) in &kv_due {
                    by_time.remove((*t, key.as_str())).map_err(st)?;
                    expires.remove(key.as_str()).map_err(st)?;
                    kv.remove(key.as_str()).map_err(st)?;
                }
                Ok(due.len() + kv_due.len())
            })
            .await
    }

    async fn delete_mailbox(&self, agent_id: &str) -> Result<()> {
        let agent_id = agent_id.to_owned();
        self.writer
            .write(move |txn| delete_mailbox_in(txn, &agent_id))
            .await
    }
}

#[async_trait]
impl Receipts for RedbStore {
    async fn put_receipt(&self, agent_id: &str, receipt: Receipt) -> Result<u64> {
        let agent_id = agent_id.to_owned();
        self.writer
            .write(move |txn| {
                let mut heads = txn.open_table(RECEIPT_HEAD).map_err(st)?;
                let seq = heads
                    .get(agent_id.as_str())
                    .map_err(st)?
                    .map_or(0, |v| v.value())
                    + 1;
                heads.insert(agent_id.as_str(), seq).map_err(st)?;
                let r = Receipt { seq, ..receipt };
                txn.open_table(RECEIPTS)
                    .map_err(st)?
                    .insert((agent_id.as_str(), seq), to_json(&r)?.as_slice())
                    .map_err(st)?;
                Ok(seq)
            })
            .await
    }

    async fn receipts(
        &self,
        agent_id: &str,
        after: Option<u64>,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<Receipt>> {
        let txn = self.read()?;
        let t = txn.open_table(RECEIPTS).map_err(st)?;
        let mut out = Vec::new();
        let start = after.unwrap_or(0).saturating_add(1);
        for row in t
            .range((agent_id, start)..=(agent_id, u64::MAX))
            .map_err(st)?
        {
            let (_, v) = row.map_err(st)?;
            let r: Receipt = from_json(v.value())?;
            if r.expires_at > now {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn drop_receipts(&self, agent_id: &str, upto: u64) -> Result<()> {
        let agent_id = agent_id.to_owned();
        self.writer
            .write(move |txn| {
                let mut t = txn.open_table(RECEIPTS).map_err(st)?;
                let mut seqs = Vec::new();
                for row in t
                    .range((agent_id.as_str(), 0)..=(agent_id.as_str(), upto))
                    .map_err(st)?
                {
                    seqs.push(row.map_err(st)?.0.value().1);
                }
                for s in seqs {
                    t.remove((agent_id.as_str(), s)).map_err(st)?;
                }
                Ok(())
            })
            .await
    }
}

#[async_trait]
impl Jobs for RedbStore {
    async fn schedule(&self, job: Job) -> Result<()> {
        self.writer
            .write(move |txn| {
                let mut ids = txn.open_table(JOB_IDS).map_err(st)?;
                let mut jobs = txn.open_table(JOBS).map_err(st)?;
                let old = ids.get(job.id.as_str()).map_err(st)?.map(|v| v.value());
                if let Some(due) = old {
                    jobs.remove((due, job.id.as_str())).map_err(st)?;
                }
                ids.insert(job.id.as_str(), job.due_at).map_err(st)?;
                jobs.insert((job.due_at, job.id.as_str()), to_json(&job)?.as_slice())
                    .map_err(st)?;
                Ok(())
            })
            .await
    }

    async fn due_jobs(&self, kind: &str, now: Millis, limit: usize) -> Result<Vec<Job>> {
        let txn = self.read()?;
        let jobs = txn.open_table(JOBS).map_err(st)?;
        let mut out = Vec::new();
        for row in jobs.range(..=(now, "\u{10FFFF}")).map_err(st)? {
            let (k, v) = row.map_err(st)?;
            if k.value().0 > now || out.len() >= limit {
                break;
            }
            let job: Job = from_json(v.value())?;
            if job.kind == kind {
                out.push(job);
            }
        }
        Ok(out)
    }

    async fn claim(&self, job: &Job, until: Millis) -> Result<bool> {
        let job = job.clone();
        self.writer
            .write(move |txn| {
                let mut ids = txn.open_table(JOB_IDS).map_err(st)?;
                let mut jobs = txn.open_table(JOBS).map_err(st)?;
                if ids.get(job.id.as_str()).map_err(st)?.map(|v| v.value()) != Some(job.due_at) {
                    return Ok(false);
                }
                // Read, compare, and only then remove: the batch commits whatever an
                // operation did before it answered, so a lost claim must change nothing.
                let stored: Option<Job> =
                    match jobs.get((job.due_at, job.id.as_str())).map_err(st)? {
                        Some(v) => Some(from_json(v.value())?),
                        None => None,
                    };
                let Some(stored) = stored.filter(|s| s.attempt == job.attempt) else {
                    return Ok(false);
                };
                jobs.remove((job.due_at, job.id.as_str())).map_err(st)?;
                let leased = Job {
                    due_at: until,
                    ..stored
                };
                ids.insert(leased.id.as_str(), until).map_err(st)?;
                jobs.insert((until, leased.id.as_str()), to_json(&leased)?.as_slice())
                    .map_err(st)?;
                Ok(true)
            })
            .await
    }

    async fn complete(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.writer
            .write(move |txn| {
                let mut ids = txn.open_table(JOB_IDS).map_err(st)?;
                let due = ids.remove(id.as_str()).map_err(st)?.map(|v| v.value());
                if let Some(due) = due {
                    txn.open_table(JOBS)
                        .map_err(st)?
                        .remove((due, id.as_str()))
                        .map_err(st)?;
                }
                Ok(())
            })
            .await
    }
}

#[async_trait]
impl Kv for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.read()?;
        let expires = txn.open_table(KV_EXPIRES).map_err(st)?;
        if let Some(t) = expires.get(key).map_err(st)?
            && t.value() <= wall_ms()
        {
            return Ok(None);
        }
        let t = txn.open_table(KV).map_err(st)?;
        Ok(t.get(key).map_err(st)?.map(|v| v.value().to_vec()))
    }

    async fn put(&self, key: &str, value: Vec<u8>, expires_at: Option<Millis>) -> Result<()> {
        let key = key.to_owned();
        self.writer
            .write(move |txn| {
                txn.open_table(KV)
                    .map_err(st)?
                    .insert(key.as_str(), value.as_slice())
                    .map_err(st)?;
                let mut expires = txn.open_table(KV_EXPIRES).map_err(st)?;
                let mut by_time = txn.open_table(KV_EXPIRY).map_err(st)?;
                let old = expires.remove(key.as_str()).map_err(st)?.map(|t| t.value());
                if let Some(t) = old {
                    by_time.remove((t, key.as_str())).map_err(st)?;
                }
                if let Some(t) = expires_at {
                    expires.insert(key.as_str(), t).map_err(st)?;
                    by_time.insert((t, key.as_str()), ()).map_err(st)?;
                }
                Ok(())
            })
            .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let key = key.to_owned();
        self.writer.write(move |txn| kv_delete_in(txn, &key)).await
    }
}

/// The wall clock in unix milliseconds (kv expiry is wall-clock time).
fn wall_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

#[async_trait]
impl Presence for RedbStore {
    async fn presence_set(&self, agent_id: &str, session: &str, until: Millis) -> Result<()> {
        let (agent_id, session) = (agent_id.to_owned(), session.to_owned());
        self.writer
            .write(move |txn| {
                txn.open_table(PRESENCE)
                    .map_err(st)?
                    .insert((agent_id.as_str(), session.as_str()), until)
                    .map_err(st)?;
                Ok(())
            })
            .await
    }

    async fn presence_clear(&self, agent_id: &str, session: &str) -> Result<()> {
        let (agent_id, session) = (agent_id.to_owned(), session.to_owned());
        self.writer
            .write(move |txn| {
                txn.open_table(PRESENCE)
                    .map_err(st)?
                    .remove((agent_id.as_str(), session.as_str()))
                    .map_err(st)?;
                Ok(())
            })
            .await
    }

    async fn presence_count(&self, agent_id: &str, now: Millis) -> Result<u32> {
        let txn = self.read()?;
        let t = txn.open_table(PRESENCE).map_err(st)?;
        let mut n = 0;
        for row in t.range((agent_id, "")..).map_err(st)? {
            let (k, v) = row.map_err(st)?;
            if k.value().0 != agent_id {
                break;
            }
            if v.value() > now {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn agents_online(&self, now: Millis) -> Result<u64> {
        let txn = self.read()?;
        let t = txn.open_table(PRESENCE).map_err(st)?;
        let mut n = 0;
        let mut last: Option<String> = None;
        for row in t.iter().map_err(st)? {
            let (k, v) = row.map_err(st)?;
            let agent = k.value().0;
            if v.value() > now && last.as_deref() != Some(agent) {
                n += 1;
                last = Some(agent.to_owned());
            }
        }
        Ok(n)
    }
}

#[async_trait]
impl StoreBackend for RedbStore {
    async fn ready(&self) -> bool {
        // Not ready while writes cannot commit (a full disk), even though reads may.
        if !self.db.writable() {
            return false;
        }
        let Ok(txn) = self.read() else {
            return false;
        };
        txn.open_table(KV).is_ok_and(|t| t.len().is_ok())
    }

    async fn close(&self) -> Result<()> {
        self.writer.close();
        Ok(())
    }
}
