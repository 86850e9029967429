//! [`Registry`] on the embedded fjall store: agents, their names (held after a
//! deregistration), API keys and owners, each change in one write transaction.

use std::ops::Bound;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::keys::{self, Key};
use super::writer::Tx;
use super::{FjallStore, Reads, from_json, row, st, to_json};
use crate::*;

/// The holder of a (tenant, name).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct NameHolder {
    pub(super) agent_id: String,
    /// Set once the agent is deregistered: the name is free from then on.
    pub(super) held_until: Option<Millis>,
}

/// The `names` key of a (tenant, name).
pub(super) fn name_key(tenant: &str, name: &str) -> Vec<u8> {
    Key::new().str(tenant).str(name).done()
}

/// The `agent_keys` key of an agent's key hash.
fn agent_key(agent_id: &str, hash: &[u8]) -> Vec<u8> {
    Key::new().str(agent_id).bytes(hash).done()
}

/// The `owned` key of an owner's agent.
pub(super) fn owned_key(owner_id: &str, agent_id: &str) -> Vec<u8> {
    Key::new().str(owner_id).str(agent_id).done()
}

/// An agent by id, active or not.
pub(super) fn read_agent(r: &impl Reads, id: &str) -> Result<Option<AgentRecord>> {
    match r.get(&r.ks().agents, &keys::one(id))? {
        Some(v) => Ok(Some(from_json(&v)?)),
        None => Ok(None),
    }
}

/// The holder of a name.
pub(super) fn read_holder(r: &impl Reads, tenant: &str, name: &str) -> Result<Option<NameHolder>> {
    match r.get(&r.ks().names, &name_key(tenant, name))? {
        Some(v) => Ok(Some(from_json(&v)?)),
        None => Ok(None),
    }
}

/// Writes (`Some`) or removes (`None`) the holder of a name, keeping the tenant's count of
/// active names in the same transaction.
pub(super) fn set_holder(
    txn: &mut Tx<'_>,
    tenant: &str,
    name: &str,
    holder: Option<&NameHolder>,
) -> Result<()> {
    let key = name_key(tenant, name);
    let was_active = read_holder(txn, tenant, name)?.is_some_and(|h| h.held_until.is_none());
    match holder {
        Some(h) => txn.insert(&txn.ks.names, &key, &to_json(h)?)?,
        None => txn.remove(&txn.ks.names, &key)?,
    }
    let is_active = holder.is_some_and(|h| h.held_until.is_none());
    if was_active != is_active {
        let tkey = keys::one(tenant);
        let n = match txn.get(&txn.ks.tenant_active, &tkey)? {
            Some(v) => keys::u64_value(&v)?,
            None => 0,
        };
        let n = if is_active {
            n + 1
        } else {
            n.saturating_sub(1)
        };
        if n == 0 {
            txn.remove(&txn.ks.tenant_active, &tkey)?;
        } else {
            txn.insert(&txn.ks.tenant_active, &tkey, &n.to_be_bytes())?;
        }
    }
    Ok(())
}

/// Deletes every API key of an agent.
pub(super) fn revoke_keys_in(txn: &mut Tx<'_>, agent_id: &str) -> Result<()> {
    let mut hashes = Vec::new();
    for g in txn.prefix(&txn.ks.agent_keys, &keys::one(agent_id)) {
        let (k, _) = row(g)?;
        hashes.push((k.to_vec(), agent_key_hash(&k)?));
    }
    for (k, h) in hashes {
        txn.remove(&txn.ks.api_keys, &h)?;
        txn.remove(&txn.ks.agent_keys, &k)?;
    }
    Ok(())
}

/// The key hash of an `agent_keys` key.
fn agent_key_hash(k: &[u8]) -> Result<Vec<u8>> {
    let mut r = keys::Reader::new(k);
    r.bytes()?;
    r.bytes()
}

/// Whether the agent exists and is active.
fn agent_is_active(txn: &Tx<'_>, id: &str) -> Result<bool> {
    Ok(read_agent(txn, id)?.is_some_and(|a| a.is_active()))
}

#[async_trait]
impl Registry for FjallStore {
    async fn create_agent(&self, agent: AgentRecord, api_key: KeyHash, now: Millis) -> Result<()> {
        self.writer
            .write(move |txn| {
                if let Some(holder) = read_holder(txn, &agent.tenant, &agent.name)?
                    && holder.held_until.is_none_or(|t| now < t)
                {
                    return Err(Error::NameTaken);
                }
                let holder = NameHolder {
                    agent_id: agent.id.clone(),
                    held_until: None,
                };
                set_holder(txn, &agent.tenant, &agent.name, Some(&holder))?;
                txn.insert(&txn.ks.agents, &keys::one(&agent.id), &to_json(&agent)?)?;
                let rec = ApiKeyRecord {
                    agent_id: agent.id.clone(),
                    created_at: now,
                    valid_until: None,
                };
                txn.insert(&txn.ks.api_keys, &api_key, &to_json(&rec)?)?;
                txn.insert(&txn.ks.agent_keys, &agent_key(&agent.id, &api_key), &[])?;
                if let Some(owner) = &agent.owner_id {
                    txn.insert(&txn.ks.owned, &owned_key(owner, &agent.id), &[])?;
                }
                Ok(())
            })
            .await
    }

    async fn agent(&self, id: &str) -> Result<Option<AgentRecord>> {
        read_agent(&self.read()?, id)
    }

    async fn agent_by_name(&self, tenant: &str, name: &str) -> Result<Option<AgentRecord>> {
        let r = self.read()?;
        let Some(holder) = read_holder(&r, tenant, name)? else {
            return Ok(None);
        };
        Ok(read_agent(&r, &holder.agent_id)?.filter(AgentRecord::is_active))
    }

    async fn agent_by_api_key(&self, key: &KeyHash) -> Result<Option<(AgentRecord, ApiKeyRecord)>> {
        let r = self.read()?;
        let Some(v) = r.get(&r.ks().api_keys, key)? else {
            return Ok(None);
        };
        let rec: ApiKeyRecord = from_json(&v)?;
        Ok(read_agent(&r, &rec.agent_id)?
            .filter(AgentRecord::is_active)
            .map(|a| (a, rec)))
    }

    async fn update_agent(&self, agent: AgentRecord) -> Result<()> {
        self.writer
            .write(move |txn| {
                if !agent_is_active(txn, &agent.id)? {
                    return Err(Error::NotFound);
                }
                txn.insert(&txn.ks.agents, &keys::one(&agent.id), &to_json(&agent)?)
            })
            .await
    }

    async fn touch_agent(&self, id: &str, now: Millis) -> Result<()> {
        let id = id.to_owned();
        self.writer
            .write(move |txn| {
                let Some(mut a) = read_agent(txn, &id)? else {
                    return Ok(());
                };
                if a.is_active() {
                    a.last_seen_at = Some(now);
                    txn.insert(&txn.ks.agents, &keys::one(&id), &to_json(&a)?)?;
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
                if !agent_is_active(txn, &agent_id)? {
                    return Err(Error::NotFound);
                }
                let mut old = Vec::new();
                for g in txn.prefix(&txn.ks.agent_keys, &keys::one(&agent_id)) {
                    let (k, _) = row(g)?;
                    old.push(agent_key_hash(&k)?);
                }
                for h in &old {
                    let rec = match txn.get(&txn.ks.api_keys, h)? {
                        Some(v) => Some(from_json::<ApiKeyRecord>(&v)?),
                        None => None,
                    };
                    if let Some(mut rec) = rec {
                        rec.valid_until = Some(
                            rec.valid_until
                                .map_or(old_valid_until, |t| t.min(old_valid_until)),
                        );
                        txn.insert(&txn.ks.api_keys, h, &to_json(&rec)?)?;
                    }
                }
                let rec = ApiKeyRecord {
                    agent_id: agent_id.clone(),
                    created_at: now,
                    valid_until: None,
                };
                txn.insert(&txn.ks.api_keys, &new_key, &to_json(&rec)?)?;
                txn.insert(&txn.ks.agent_keys, &agent_key(&agent_id, &new_key), &[])
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
                let Some(mut agent) = read_agent(txn, &agent_id)? else {
                    return Err(Error::NotFound);
                };
                if !agent.is_active() {
                    return Err(Error::NotFound);
                }
                agent.status = AgentStatus::Deregistered { at: now };
                agent.delivery.webhook_secret = None;
                txn.insert(&txn.ks.agents, &keys::one(&agent_id), &to_json(&agent)?)?;
                let holder = NameHolder {
                    agent_id: agent_id.clone(),
                    held_until: Some(name_hold_until),
                };
                set_holder(txn, &agent.tenant, &agent.name, Some(&holder))?;
                if let Some(owner) = &agent.owner_id {
                    txn.remove(&txn.ks.owned, &owned_key(owner, &agent_id))?;
                }
                revoke_keys_in(txn, &agent_id)?;
                super::mailboxes::delete_mailbox_in(txn, &agent_id)?;
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
        let r = self.read()?;
        let ks = r.ks();
        let prefix = keys::one(tenant);
        let Some(search) = search.map(str::to_lowercase) else {
            // The page starts right after the cursor's key: a page reads its own rows (and
            // the held names between them), not the tenant.
            let start = match after {
                Some(c) => Bound::Excluded(name_key(tenant, c)),
                None => Bound::Included(prefix.clone()),
            };
            let mut page = Vec::new();
            for g in r.range(&ks.names, (start, Bound::Unbounded)) {
                if page.len() >= limit {
                    break;
                }
                let (k, v) = row(g)?;
                if !k.starts_with(&prefix) {
                    break;
                }
                list_cost::names(1);
                let holder: NameHolder = from_json(&v)?;
                if holder.held_until.is_some() {
                    continue;
                }
                if let Some(a) = r.get(&ks.agents, &keys::one(&holder.agent_id))? {
                    list_cost::records(1);
                    let agent: AgentRecord = from_json(&a)?;
                    if agent.is_active() {
                        page.push(agent);
                    }
                }
            }
            let total = match r.get(&ks.tenant_active, &prefix)? {
                Some(v) => keys::u64_value(&v)?,
                None => 0,
            };
            return Ok((page, total));
        };
        // A search filters the whole tenant (its total is the number of matches).
        let mut page = Vec::new();
        let mut total = 0u64;
        for g in r.prefix(&ks.names, &prefix) {
            let (k, v) = row(g)?;
            let mut key = keys::Reader::new(&k);
            key.str()?;
            let name = key.str()?;
            list_cost::names(1);
            let holder: NameHolder = from_json(&v)?;
            if holder.held_until.is_some() {
                continue;
            }
            let Some(a) = r.get(&ks.agents, &keys::one(&holder.agent_id))? else {
                continue;
            };
            list_cost::records(1);
            let agent: AgentRecord = from_json(&a)?;
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
            if after.is_none_or(|c| name.as_str() > c) && page.len() < limit {
                page.push(agent);
            }
        }
        Ok((page, total))
    }

    async fn put_owner(&self, owner: OwnerRecord, user_key: KeyHash) -> Result<()> {
        self.writer
            .write(move |txn| {
                txn.insert(&txn.ks.owners, &keys::one(&owner.id), &to_json(&owner)?)?;
                txn.insert(&txn.ks.owner_keys, &user_key, owner.id.as_bytes())
            })
            .await
    }

    async fn owner_by_user_key(&self, key: &KeyHash) -> Result<Option<OwnerRecord>> {
        let r = self.read()?;
        let Some(id) = r.get(&r.ks().owner_keys, key)? else {
            return Ok(None);
        };
        let id = std::str::from_utf8(&id).map_err(|e| Error::Corrupt(e.to_string()))?;
        match r.get(&r.ks().owners, &keys::one(id))? {
            Some(v) => Ok(Some(from_json(&v)?)),
            None => Ok(None),
        }
    }

    async fn count_owned_agents(&self, owner_id: &str) -> Result<u64> {
        let r = self.read()?;
        let mut n = 0;
        for g in r.prefix(&r.ks().owned, &keys::one(owner_id)) {
            g.key().map_err(st)?;
            n += 1;
        }
        Ok(n)
    }
}
