//! [`Registry`] on the `amp_registry` bucket.
//!
//! The agent record `agent.<id>` carries the agent's API keys, so every decision about an
//! agent (update, touch, key rotation, revocation, deregistration) is one compare-and-set of
//! that one record, retried on a revision conflict: a deregistration can never be undone by a
//! write based on an older read, and a rotation never loses a concurrent revocation.
//!
//! The other keys are indexes written around that commit point, in an order that leaves only
//! states the readers already handle:
//! - `create_agent` checks the name, writes `key.<hash>`, then `agent.<id>` (create-only),
//!   then `owned.<owner>.<id>`, and claims `name.<tenant>.<name>` **last**, by compare-and-set
//!   against the revision it found free. Until the name points at it, the agent is invisible:
//!   readers ignore an active agent whose name record names another (or none), so a crash
//!   before the claim leaves an orphan nobody sees (its id and key were never handed out).
//!   After the claim the record is marked `named` (an optimisation: readers then skip the
//!   name lookup). A claim lost to a concurrent create removes what was written.
//! - `agent_by_api_key` trusts `key.<hash>` only when the agent's own record lists the hash:
//!   a key index written before a crash, or left after a revocation, leads nowhere.
//! - `deregister_agent` commits by marking the record deregistered (with the name hold and no
//!   keys), then holds the name, deletes key indexes, the owned entry and the mailbox. A
//!   crash in between leaves an inactive agent behind an index that readers filter out; a name
//!   record still showing the agent as holder is judged by the agent record's hold.
//!
//! Costs: a lookup by id, name or key is 1 to 3 direct gets; `list_agents` reads every name
//! key of the tenant (a bucket has no ordered range) but the agent records of the page only,
//! unless it searches; `count_owned_agents` reads every owned entry of the owner, fetching
//! the agent records concurrently.

use std::collections::HashSet;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::JetStreamStore;
use super::conn::{Conflict, Expect, hex, tok, untok};
use crate::*;

/// Compare-and-set attempts before giving up with [`Error::Unavailable`].
pub(super) const MAX_RETRIES: usize = 100;

pub(super) fn contention(what: &str) -> Error {
    Error::Unavailable(format!("{what}: too many concurrent writers, retry"))
}

/// The agent record as stored: the record, its API keys, and how far registration went.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredAgent {
    record: AgentRecord,
    keys: Vec<StoredKey>,
    /// The name record was seen pointing at this agent (readers may skip checking it).
    named: bool,
    /// Set on deregistration: the name is free from then on.
    name_hold_until: Option<Millis>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    hash: String,
    record: ApiKeyRecord,
}

/// The holder of a (tenant, name).
#[derive(Debug, Serialize, Deserialize)]
struct NameHolder {
    agent_id: String,
    /// Set once the agent is deregistered.
    held_until: Option<Millis>,
}

fn agent_key(id: &str) -> String {
    format!("agent.{}", tok(id))
}

fn name_key(tenant: &str, name: &str) -> String {
    format!("name.{}.{}", tok(tenant), tok(name))
}

fn key_key(hash: &str) -> String {
    format!("key.{hash}")
}

fn owner_key(id: &str) -> String {
    format!("owner.{}", tok(id))
}

fn owner_key_key(hash: &str) -> String {
    format!("ownerkey.{hash}")
}

fn owned_key(owner: &str, agent: &str) -> String {
    format!("owned.{}.{}", tok(owner), tok(agent))
}

impl JetStreamStore {
    /// The agent and its revision, if it is visible (see the module docs).
    async fn load_agent(&self, id: &str) -> Result<Option<(StoredAgent, u64)>> {
        let (stored, rev) = self
            .conn
            .kv_get_json::<StoredAgent>(&self.registry, &agent_key(id))
            .await?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        if stored.named || !stored.record.is_active() {
            return Ok(Some((stored, rev)));
        }
        let (holder, _) = self
            .conn
            .kv_get_json::<NameHolder>(
                &self.registry,
                &name_key(&stored.record.tenant, &stored.record.name),
            )
            .await?;
        Ok(holder.filter(|h| h.agent_id == id).map(|_| (stored, rev)))
    }

    /// Reads the visible agent, applies `change` and writes it back if its revision did not
    /// move, retrying on conflict. `None` when the agent is not visible; `change` aborts
    /// with an error (e.g. [`Error::NotFound`] for an inactive agent).
    async fn modify_agent(
        &self,
        id: &str,
        mut change: impl FnMut(&mut StoredAgent) -> Result<()>,
    ) -> Result<Option<StoredAgent>> {
        for _ in 0..MAX_RETRIES {
            let Some((mut stored, rev)) = self.load_agent(id).await? else {
                return Ok(None);
            };
            change(&mut stored)?;
            match self
                .conn
                .kv_put_json(
                    &self.registry,
                    &agent_key(id),
                    &stored,
                    Expect::Revision(rev),
                    None,
                )
                .await?
            {
                Ok(_) => return Ok(Some(stored)),
                Err(Conflict) => continue,
            }
        }
        Err(contention("agent update"))
    }

    /// Whether the name under `key` is free at `now`, and the revision to claim it against.
    async fn name_free(&self, key: &str, now: Millis) -> Result<(bool, u64)> {
        let (holder, rev) = self
            .conn
            .kv_get_json::<NameHolder>(&self.registry, key)
            .await?;
        let Some(holder) = holder else {
            return Ok((true, rev));
        };
        if let Some(until) = holder.held_until {
            return Ok((now >= until, rev));
        }
        // Held by an active agent, unless a deregistration stopped before updating the name
        // record: the agent record decides.
        let (agent, _) = self
            .conn
            .kv_get_json::<StoredAgent>(&self.registry, &agent_key(&holder.agent_id))
            .await?;
        let free = match agent {
            None => true,
            Some(a) if a.record.is_active() => false,
            Some(a) => a.name_hold_until.is_some_and(|t| now >= t),
        };
        Ok((free, rev))
    }

    async fn delete_key_indexes(&self, hashes: &[String]) -> Result<()> {
        for h in hashes {
            self.conn.kv_delete(&self.registry, &key_key(h)).await?;
        }
        Ok(())
    }

    /// The active agents among `ids`, read concurrently.
    async fn active_agents(&self, ids: &[String]) -> Result<Vec<AgentRecord>> {
        let loaded =
            futures::future::try_join_all(ids.iter().map(|id| self.load_agent(id))).await?;
        Ok(loaded
            .into_iter()
            .flatten()
            .map(|(s, _)| s.record)
            .filter(AgentRecord::is_active)
            .collect())
    }
}

#[async_trait]
impl Registry for JetStreamStore {
    async fn create_agent(&self, agent: AgentRecord, api_key: KeyHash, now: Millis) -> Result<()> {
        let name = name_key(&agent.tenant, &agent.name);
        if !self.name_free(&name, now).await?.0 {
            return Err(Error::NameTaken);
        }
        let c = &self.conn;
        let hash = hex(&api_key);
        c.kv_put_json(
            &self.registry,
            &key_key(&hash),
            &agent.id,
            Expect::Any,
            None,
        )
        .await?
        .map_err(|Conflict| Error::Corrupt("unconditional put refused".into()))?;
        let mut stored = StoredAgent {
            record: agent.clone(),
            keys: vec![StoredKey {
                hash: hash.clone(),
                record: ApiKeyRecord {
                    agent_id: agent.id.clone(),
                    created_at: now,
                    valid_until: None,
                },
            }],
            named: false,
            name_hold_until: None,
        };
        let agent_rev = c
            .kv_put_json(
                &self.registry,
                &agent_key(&agent.id),
                &stored,
                Expect::Revision(0),
                None,
            )
            .await?
            .map_err(|Conflict| Error::Corrupt(format!("agent id {} reused", agent.id)))?;
        let owned = agent.owner_id.as_deref().map(|o| owned_key(o, &agent.id));
        if let Some(k) = &owned {
            c.kv_put(&self.registry, k, bytes::Bytes::new(), Expect::Any, None)
                .await?
                .map_err(|Conflict| Error::Corrupt("unconditional put refused".into()))?;
        }
        let holder = NameHolder {
            agent_id: agent.id.clone(),
            held_until: None,
        };
        let mut claimed = false;
        for _ in 0..MAX_RETRIES {
            let (free, rev) = self.name_free(&name, now).await?;
            if !free {
                break;
            }
            match c
                .kv_put_json(&self.registry, &name, &holder, Expect::Revision(rev), None)
                .await?
            {
                Ok(_) => {
                    claimed = true;
                    break;
                }
                Err(Conflict) => continue,
            }
        }
        if !claimed {
            // Lost the name to a concurrent create: take back what this attempt wrote.
            c.kv_delete(&self.registry, &agent_key(&agent.id)).await?;
            c.kv_delete(&self.registry, &key_key(&hash)).await?;
            if let Some(k) = &owned {
                c.kv_delete(&self.registry, k).await?;
            }
            return Err(Error::NameTaken);
        }
        // Committed. Mark it named so readers skip the name lookup; losing this race to an
        // update is harmless (the name record says the same).
        stored.named = true;
        let _ = c
            .kv_put_json(
                &self.registry,
                &agent_key(&agent.id),
                &stored,
                Expect::Revision(agent_rev),
                None,
            )
            .await?;
        Ok(())
    }

    async fn agent(&self, id: &str) -> Result<Option<AgentRecord>> {
        Ok(self.load_agent(id).await?.map(|(s, _)| s.record))
    }

    async fn agent_by_name(&self, tenant: &str, name: &str) -> Result<Option<AgentRecord>> {
        let (holder, _) = self
            .conn
            .kv_get_json::<NameHolder>(&self.registry, &name_key(tenant, name))
            .await?;
        let Some(holder) = holder.filter(|h| h.held_until.is_none()) else {
            return Ok(None);
        };
        Ok(self
            .load_agent(&holder.agent_id)
            .await?
            .map(|(s, _)| s.record)
            .filter(AgentRecord::is_active))
    }

    async fn agent_by_api_key(&self, key: &KeyHash) -> Result<Option<(AgentRecord, ApiKeyRecord)>> {
        let hash = hex(key);
        let (id, _) = self
            .conn
            .kv_get_json::<String>(&self.registry, &key_key(&hash))
            .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        let Some((stored, _)) = self.load_agent(&id).await? else {
            return Ok(None);
        };
        if !stored.record.is_active() {
            return Ok(None);
        }
        let key = stored.keys.iter().find(|k| k.hash == hash).cloned();
        Ok(key.map(|k| (stored.record, k.record)))
    }

    async fn update_agent(&self, agent: AgentRecord) -> Result<()> {
        let id = agent.id.clone();
        self.modify_agent(&id, |s| {
            if !s.record.is_active() {
                return Err(Error::NotFound);
            }
            s.record = agent.clone();
            Ok(())
        })
        .await?
        .map(|_| ())
        .ok_or(Error::NotFound)
    }

    async fn touch_agent(&self, id: &str, now: Millis) -> Result<()> {
        let r = self
            .modify_agent(id, |s| {
                if !s.record.is_active() {
                    return Err(Error::NotFound);
                }
                s.record.last_seen_at = Some(now);
                Ok(())
            })
            .await;
        match r {
            Ok(_) | Err(Error::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn rotate_api_key(
        &self,
        agent_id: &str,
        new_key: KeyHash,
        now: Millis,
        old_valid_until: Millis,
    ) -> Result<()> {
        let hash = hex(&new_key);
        // The index first: it leads nowhere until the agent's record lists the key.
        self.conn
            .kv_put_json(
                &self.registry,
                &key_key(&hash),
                &agent_id,
                Expect::Any,
                None,
            )
            .await?
            .map_err(|Conflict| Error::Corrupt("unconditional put refused".into()))?;
        let mut dropped = Vec::new();
        let changed = self
            .modify_agent(agent_id, |s| {
                if !s.record.is_active() {
                    return Err(Error::NotFound);
                }
                dropped.clear();
                s.keys.retain(|k| k.hash != hash);
                for k in &mut s.keys {
                    k.record.valid_until = Some(
                        k.record
                            .valid_until
                            .map_or(old_valid_until, |t| t.min(old_valid_until)),
                    );
                }
                // Keys past their grace are forgotten here (and their index below).
                s.keys.retain(|k| {
                    let keep = k.record.is_valid_at(now);
                    if !keep {
                        dropped.push(k.hash.clone());
                    }
                    keep
                });
                s.keys.push(StoredKey {
                    hash: hash.clone(),
                    record: ApiKeyRecord {
                        agent_id: agent_id.to_owned(),
                        created_at: now,
                        valid_until: None,
                    },
                });
                Ok(())
            })
            .await?;
        if changed.is_none() {
            return Err(Error::NotFound);
        }
        self.delete_key_indexes(&dropped).await
    }

    async fn revoke_api_keys(&self, agent_id: &str) -> Result<()> {
        let mut revoked = Vec::new();
        self.modify_agent(agent_id, |s| {
            revoked = s.keys.drain(..).map(|k| k.hash).collect();
            Ok(())
        })
        .await?;
        self.delete_key_indexes(&revoked).await
    }

    async fn deregister_agent(
        &self,
        agent_id: &str,
        now: Millis,
        name_hold_until: Millis,
    ) -> Result<AgentRecord> {
        let mut revoked = Vec::new();
        let stored = self
            .modify_agent(agent_id, |s| {
                if !s.record.is_active() {
                    return Err(Error::NotFound);
                }
                revoked = s.keys.drain(..).map(|k| k.hash).collect();
                s.record.status = AgentStatus::Deregistered { at: now };
                s.record.delivery.webhook_secret = None;
                s.name_hold_until = Some(name_hold_until);
                Ok(())
            })
            .await?
            .ok_or(Error::NotFound)?;
        // Committed: every reader now sees the agent deregistered. The rest is cleanup that
        // a crash may cut short without changing any answer.
        let agent = stored.record;
        let name = name_key(&agent.tenant, &agent.name);
        for _ in 0..MAX_RETRIES {
            let (holder, rev) = self
                .conn
                .kv_get_json::<NameHolder>(&self.registry, &name)
                .await?;
            if !holder.is_some_and(|h| h.agent_id == agent.id && h.held_until.is_none()) {
                break;
            }
            let held = NameHolder {
                agent_id: agent.id.clone(),
                held_until: Some(name_hold_until),
            };
            if self
                .conn
                .kv_put_json(&self.registry, &name, &held, Expect::Revision(rev), None)
                .await?
                .is_ok()
            {
                break;
            }
        }
        self.delete_key_indexes(&revoked).await?;
        if let Some(owner) = &agent.owner_id {
            self.conn
                .kv_delete(&self.registry, &owned_key(owner, &agent.id))
                .await?;
        }
        self.delete_mailbox(&agent.id).await?;
        Ok(agent)
    }

    async fn list_agents(
        &self,
        tenant: &str,
        search: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AgentRecord>, u64)> {
        // A KV bucket has no ordered range: the tenant's name keys are read (small values),
        // and agent records only for the page.
        let prefix = format!("name.{}", tok(tenant));
        let mut named = Vec::new();
        for (key, value) in self.conn.kv_scan(&self.registry, &prefix).await? {
            list_cost::names(1);
            let holder: NameHolder = super::conn::from_json(&value)?;
            if holder.held_until.is_some() {
                continue;
            }
            let Some(name) = key.rsplit('.').next() else {
                continue;
            };
            named.push((untok(name)?, holder.agent_id));
        }
        named.sort();
        let Some(search) = search.map(str::to_lowercase) else {
            // The total counts active names; an agent whose deregistration stopped before its
            // name record was updated is counted until a reader or the purge tidies it.
            let total = named.len() as u64;
            let mut rest = named
                .into_iter()
                .filter(|(name, _)| after.is_none_or(|c| name.as_str() > c))
                .map(|(_, id)| id);
            let mut page = Vec::new();
            while page.len() < limit {
                let ids: Vec<String> = rest.by_ref().take(limit - page.len()).collect();
                if ids.is_empty() {
                    break;
                }
                list_cost::records(ids.len() as u64);
                page.extend(
                    self.active_agents(&ids)
                        .await?
                        .into_iter()
                        .filter(|a| a.tenant == tenant),
                );
            }
            return Ok((page, total));
        };
        // A search filters the whole tenant (its total is the number of matches).
        let ids: Vec<String> = named.into_iter().map(|(_, id)| id).collect();
        list_cost::records(ids.len() as u64);
        let mut agents: Vec<AgentRecord> = self
            .active_agents(&ids)
            .await?
            .into_iter()
            .filter(|a| a.tenant == tenant)
            .filter(|a| {
                a.name.contains(&search)
                    || a.address.contains(&search)
                    || a.alias
                        .as_deref()
                        .is_some_and(|x| x.to_lowercase().contains(&search))
            })
            .collect();
        agents.sort_by(|a, b| a.name.cmp(&b.name));
        let total = agents.len() as u64;
        let page = agents
            .into_iter()
            .filter(|a| after.is_none_or(|c| a.name.as_str() > c))
            .take(limit)
            .collect();
        Ok((page, total))
    }

    async fn put_owner(&self, owner: OwnerRecord, user_key: KeyHash) -> Result<()> {
        let c = &self.conn;
        c.kv_put_json(
            &self.registry,
            &owner_key(&owner.id),
            &owner,
            Expect::Any,
            None,
        )
        .await?
        .map_err(|Conflict| Error::Corrupt("unconditional put refused".into()))?;
        c.kv_put_json(
            &self.registry,
            &owner_key_key(&hex(&user_key)),
            &owner.id,
            Expect::Any,
            None,
        )
        .await?
        .map_err(|Conflict| Error::Corrupt("unconditional put refused".into()))?;
        Ok(())
    }

    async fn owner_by_user_key(&self, key: &KeyHash) -> Result<Option<OwnerRecord>> {
        let (id, _) = self
            .conn
            .kv_get_json::<String>(&self.registry, &owner_key_key(&hex(key)))
            .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        Ok(self
            .conn
            .kv_get_json::<OwnerRecord>(&self.registry, &owner_key(&id))
            .await?
            .0)
    }

    async fn count_owned_agents(&self, owner_id: &str) -> Result<u64> {
        let prefix = format!("owned.{}", tok(owner_id));
        let mut ids = HashSet::new();
        for (key, _) in self.conn.kv_scan(&self.registry, &prefix).await? {
            if let Some(agent) = key.rsplit('.').next() {
                ids.insert(untok(agent)?);
            }
        }
        let ids: Vec<String> = ids.into_iter().collect();
        Ok(self
            .active_agents(&ids)
            .await?
            .iter()
            .filter(|a| a.owner_id.as_deref() == Some(owner_id))
            .count() as u64)
    }
}

/// The registry's part of a purge ([`Purge`], in `purge`).
impl JetStreamStore {
    /// Agents of a tenant by its names; when none is left, by a scan of every agent record
    /// (a deregistered agent whose name was taken by another is only found that way).
    pub(super) async fn tenant_agent_ids(&self, tenant: &str) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let prefix = format!("name.{}", tok(tenant));
        for (_, value) in self.conn.kv_scan(&self.registry, &prefix).await? {
            let holder: NameHolder = super::conn::from_json(&value)?;
            ids.push(holder.agent_id);
        }
        if ids.is_empty() {
            for (_, value) in self.conn.kv_scan(&self.registry, "agent").await? {
                let stored: StoredAgent = super::conn::from_json(&value)?;
                if stored.record.tenant == tenant {
                    ids.push(stored.record.id);
                }
            }
        }
        Ok(ids)
    }

    /// Deletes the agent's indexes (keys, name, owner link), then its record: until the
    /// record goes, the agent is listed and a retry finds the indexes through it.
    pub(super) async fn purge_registry(&self, agent_id: &str) -> Result<()> {
        let (stored, _) = self
            .conn
            .kv_get_json::<StoredAgent>(&self.registry, &agent_key(agent_id))
            .await?;
        let Some(stored) = stored else {
            return Ok(());
        };
        let hashes: Vec<String> = stored.keys.iter().map(|k| k.hash.clone()).collect();
        self.delete_key_indexes(&hashes).await?;
        let agent = &stored.record;
        let name = name_key(&agent.tenant, &agent.name);
        let (holder, rev) = self
            .conn
            .kv_get_json::<NameHolder>(&self.registry, &name)
            .await?;
        if holder.is_some_and(|h| h.agent_id == agent.id) {
            // Against its revision: a name another agent claimed meanwhile stays its.
            let _ = self.conn.kv_delete_if(&self.registry, &name, rev).await?;
        }
        if let Some(owner) = &agent.owner_id {
            self.conn
                .kv_delete(&self.registry, &owned_key(owner, &agent.id))
                .await?;
        }
        self.conn
            .kv_delete(&self.registry, &agent_key(agent_id))
            .await
    }
}
