//! [`Registry`] on `agents`, `agent_names`, `api_keys`, `owners`, `owner_keys` and
//! `owned_agents`.
//!
//! - **create_agent**: the name claim (`IF NOT EXISTS`, or a compare-and-set taking over a
//!   name whose hold ended) is the commit point; the agent row, its key and the owner link
//!   are written after it. A crash in between leaves a claim pointing at no agent: readers
//!   treat it as free, and a registration takes it over once it is a minute old (younger,
//!   it may be a registration still writing).
//! - **Lookups by key** read the key row and the agent row and answer only for an active
//!   agent, so a key whose deletion was interrupted never authenticates a deregistered one.
//! - **update / deregister** are compare-and-sets on `active = true`: a write based on a
//!   read from before a deregistration cannot undo it.

use std::collections::HashSet;

use async_trait::async_trait;

use super::CqlStore;
use super::conn::corrupt;
use crate::*;

/// A name claim older than this that points at no agent row is an abandoned registration.
const ORPHAN_CLAIM_MS: Millis = 60_000;

/// An agent row: the record and the cells kept beside it.
struct AgentRow {
    record: AgentRecord,
    keys: Vec<Vec<u8>>,
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| Error::Corrupt(e.to_string()))
}

impl CqlStore {
    async fn agent_row(&self, id: &str) -> Result<Option<AgentRow>> {
        let rows = self
            .conn
            .query("read an agent", &self.conn.st.agent_get, (id,))
            .await?;
        type R = (
            Option<String>,
            Option<bool>,
            Option<Vec<Vec<u8>>>,
            Option<i64>,
        );
        let Some((record, _active, keys, last_seen)) =
            rows.maybe_first_row::<R>().map_err(corrupt)?
        else {
            return Ok(None);
        };
        // A row holding only a touch (an unknown id was touched) is no agent.
        let Some(record) = record else {
            return Ok(None);
        };
        let mut record: AgentRecord = from_json(&record)?;
        if let Some(t) = last_seen {
            record.last_seen_at = Some(record.last_seen_at.map_or(t, |r| r.max(t)));
        }
        Ok(Some(AgentRow {
            record,
            keys: keys.unwrap_or_default(),
        }))
    }

    /// The holder of a name, with the end of its hold (for a deregistered holder).
    async fn name_holder(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<(String, Option<Millis>, Option<Millis>)>> {
        let rows = self
            .conn
            .query("read a name", &self.conn.st.name_get, (tenant, name))
            .await?;
        Ok(rows
            .maybe_first_row::<(Option<String>, Option<i64>, Option<i64>)>()
            .map_err(corrupt)?
            .and_then(|(id, hold, claimed)| id.map(|id| (id, hold, claimed))))
    }

    /// Claims `(tenant, name)` for `agent`; `Err(NameTaken)` when another holds it.
    async fn claim_name(&self, agent: &AgentRecord, now: Millis) -> Result<()> {
        let st = &self.conn.st;
        let claim = self
            .conn
            .lwt(
                "claim a name",
                &st.name_claim,
                (
                    &agent.tenant,
                    &agent.name,
                    &agent.id,
                    now,
                    &agent.address,
                    &agent.alias,
                ),
            )
            .await?;
        if claim.applied {
            return Ok(());
        }
        let Some(holder) = claim.text("agent_id") else {
            return Err(Error::NameTaken);
        };
        if holder == agent.id {
            return Ok(()); // our own retry
        }
        let free = match claim.bigint("hold_until") {
            // Held after a deregistration: free once the hold ends.
            Some(until) => now >= until,
            None => match self.agent_row(&holder).await? {
                Some(row) => match row.record.status {
                    AgentStatus::Active => false,
                    // Deregistered and the hold marker was not written: held for good
                    // until an operator frees it (never observed; the safe answer).
                    AgentStatus::Deregistered { .. } => false,
                },
                // An abandoned claim (a registration that died before writing its agent).
                None => claim
                    .bigint("claimed_at")
                    .is_some_and(|t| now.saturating_sub(t) > ORPHAN_CLAIM_MS),
            },
        };
        if !free {
            return Err(Error::NameTaken);
        }
        let take = self
            .conn
            .lwt(
                "take over a name",
                &st.name_take,
                (
                    &agent.id,
                    now,
                    &agent.address,
                    &agent.alias,
                    &agent.tenant,
                    &agent.name,
                    &holder,
                ),
            )
            .await?;
        if take.applied {
            Ok(())
        } else {
            Err(Error::NameTaken)
        }
    }

    async fn key_row(&self, key: &[u8]) -> Result<Option<ApiKeyRecord>> {
        let rows = self
            .conn
            .query("read an API key", &self.conn.st.key_get, (key,))
            .await?;
        Ok(rows
            .maybe_first_row::<(Option<String>, Option<i64>, Option<i64>)>()
            .map_err(corrupt)?
            .and_then(|(agent_id, created, until)| {
                // A row with no agent is what is left of a deleted key updated after.
                Some(ApiKeyRecord {
                    agent_id: agent_id?,
                    created_at: created.unwrap_or(0),
                    valid_until: until,
                })
            }))
    }
}

#[async_trait]
impl Registry for CqlStore {
    async fn create_agent(&self, agent: AgentRecord, api_key: KeyHash, now: Millis) -> Result<()> {
        self.claim_name(&agent, now).await?;
        let st = &self.conn.st;
        let key = api_key.to_vec();
        self.conn
            .exec(
                "write an API key",
                &st.key_put,
                (&key, &agent.id, now, None::<i64>),
            )
            .await?;
        if let Some(owner) = &agent.owner_id {
            self.conn
                .exec("link an owned agent", &st.owned_put, (owner, &agent.id))
                .await?;
        }
        // Last: the agent row makes the claim and the key count.
        self.conn
            .exec(
                "write an agent",
                &st.agent_put,
                (&agent.id, to_json(&agent)?, vec![key]),
            )
            .await?;
        Ok(())
    }

    async fn agent(&self, id: &str) -> Result<Option<AgentRecord>> {
        Ok(self.agent_row(id).await?.map(|r| r.record))
    }

    async fn agent_by_name(&self, tenant: &str, name: &str) -> Result<Option<AgentRecord>> {
        let Some((id, hold, _)) = self.name_holder(tenant, name).await? else {
            return Ok(None);
        };
        if hold.is_some() {
            return Ok(None);
        }
        Ok(self
            .agent(&id)
            .await?
            .filter(|a| a.is_active() && a.tenant == tenant && a.name == name))
    }

    async fn agent_by_api_key(&self, key: &KeyHash) -> Result<Option<(AgentRecord, ApiKeyRecord)>> {
        let Some(rec) = self.key_row(key).await? else {
            return Ok(None);
        };
        let Some(row) = self.agent_row(&rec.agent_id).await? else {
            return Ok(None);
        };
        if !row.record.is_active() || !row.keys.iter().any(|k| k.as_slice() == key) {
            return Ok(None);
        }
        Ok(Some((row.record, rec)))
    }

    async fn update_agent(&self, agent: AgentRecord) -> Result<()> {
        let st = &self.conn.st;
        let Some(current) = self.agent(&agent.id).await? else {
            return Err(Error::NotFound);
        };
        let res = self
            .conn
            .lwt(
                "update an agent",
                &st.agent_update,
                (to_json(&agent)?, &agent.id),
            )
            .await?;
        if !res.applied {
            return Err(Error::NotFound);
        }
        if current.alias != agent.alias {
            // The copy listings search; a lost race here only delays the new alias in
            // searches until the next update.
            self.conn
                .lwt(
                    "update a listed alias",
                    &st.name_alias,
                    (&agent.alias, &agent.tenant, &agent.name, &agent.id),
                )
                .await?;
        }
        Ok(())
    }

    async fn touch_agent(&self, id: &str, now: Millis) -> Result<()> {
        self.conn
            .exec("touch an agent", &self.conn.st.agent_touch, (now, id))
            .await?;
        Ok(())
    }

    async fn rotate_api_key(
        &self,
        agent_id: &str,
        new_key: KeyHash,
        now: Millis,
        old_valid_until: Millis,
    ) -> Result<()> {
        let st = &self.conn.st;
        let Some(row) = self.agent_row(agent_id).await? else {
            return Err(Error::NotFound);
        };
        if !row.record.is_active() {
            return Err(Error::NotFound);
        }
        for k in &row.keys {
            if let Some(rec) = self.key_row(k).await? {
                let until = rec
                    .valid_until
                    .map_or(old_valid_until, |t| t.min(old_valid_until));
                self.conn
                    .exec("limit an API key", &st.key_limit, (until, k))
                    .await?;
            }
        }
        let key = new_key.to_vec();
        self.conn
            .exec(
                "write an API key",
                &st.key_put,
                (&key, agent_id, now, None::<i64>),
            )
            .await?;
        self.conn
            .exec(
                "add an API key",
                &st.agent_add_key,
                (HashSet::from([key]), agent_id),
            )
            .await?;
        Ok(())
    }

    async fn revoke_api_keys(&self, agent_id: &str) -> Result<()> {
        let st = &self.conn.st;
        let Some(row) = self.agent_row(agent_id).await? else {
            return Ok(());
        };
        // The agent's list first: once it is empty no key authenticates, whatever happens
        // to the key rows after.
        self.conn
            .exec("clear API keys", &st.agent_clear_keys, (agent_id,))
            .await?;
        for k in &row.keys {
            self.conn
                .exec("delete an API key", &st.key_delete, (k,))
                .await?;
        }
        Ok(())
    }

    async fn deregister_agent(
        &self,
        agent_id: &str,
        now: Millis,
        name_hold_until: Millis,
    ) -> Result<AgentRecord> {
        let st = &self.conn.st;
        let Some(row) = self.agent_row(agent_id).await? else {
            return Err(Error::NotFound);
        };
        if !row.record.is_active() {
            return Err(Error::NotFound);
        }
        let mut gone = row.record.clone();
        gone.status = AgentStatus::Deregistered { at: now };
        let res = self
            .conn
            .lwt(
                "deregister an agent",
                &st.agent_deregister,
                (to_json(&gone)?, agent_id),
            )
            .await?;
        if !res.applied {
            return Err(Error::NotFound);
        }
        self.conn
            .lwt(
                "hold a name",
                &st.name_hold,
                (name_hold_until, &gone.tenant, &gone.name, agent_id),
            )
            .await?;
        self.revoke_api_keys(agent_id).await?;
        if let Some(owner) = &gone.owner_id {
            self.conn
                .exec("unlink an owned agent", &st.owned_delete, (owner, agent_id))
                .await?;
        }
        self.delete_mailbox(agent_id).await?;
        Ok(gone)
    }

    async fn list_agents(
        &self,
        tenant: &str,
        search: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AgentRecord>, u64)> {
        // One slice of the tenant's partition, reading only names, addresses and aliases;
        // agent records are read for the page alone.
        let rows = self
            .conn
            .query("list a tenant", &self.conn.st.names_list, (tenant, ""))
            .await?;
        let search = search.map(str::to_lowercase);
        let mut total = 0u64;
        let mut page_ids = Vec::new();
        type R = (
            String,
            Option<String>,
            Option<i64>,
            Option<String>,
            Option<String>,
        );
        for row in rows.rows::<R>().map_err(corrupt)? {
            let (name, agent_id, hold, address, alias) = row.map_err(corrupt)?;
            list_cost::names(1);
            let Some(agent_id) = agent_id else { continue };
            if hold.is_some() {
                continue;
            }
            if let Some(s) = &search {
                let hit = name.contains(s.as_str())
                    || address.as_deref().is_some_and(|a| a.contains(s.as_str()))
                    || alias
                        .as_deref()
                        .is_some_and(|a| a.to_lowercase().contains(s.as_str()));
                if !hit {
                    continue;
                }
            }
            total += 1;
            if after.is_none_or(|c| name.as_str() > c) && page_ids.len() < limit {
                page_ids.push(agent_id);
            }
        }
        let mut page = Vec::with_capacity(page_ids.len());
        list_cost::records(page_ids.len() as u64);
        for id in page_ids {
            match self.agent(&id).await? {
                Some(a) if a.is_active() => page.push(a),
                // An abandoned claim or a deregistration half-written: not listed.
                _ => total = total.saturating_sub(1),
            }
        }
        Ok((page, total))
    }

    async fn put_owner(&self, owner: OwnerRecord, user_key: KeyHash) -> Result<()> {
        let st = &self.conn.st;
        self.conn
            .exec(
                "write an owner",
                &st.owner_put,
                (&owner.id, to_json(&owner)?),
            )
            .await?;
        self.conn
            .exec(
                "write an owner key",
                &st.owner_key_put,
                (user_key.to_vec(), &owner.id),
            )
            .await?;
        Ok(())
    }

    async fn owner_by_user_key(&self, key: &KeyHash) -> Result<Option<OwnerRecord>> {
        let st = &self.conn.st;
        let rows = self
            .conn
            .query("read an owner key", &st.owner_key_get, (key.to_vec(),))
            .await?;
        let Some((Some(owner_id),)) = rows
            .maybe_first_row::<(Option<String>,)>()
            .map_err(corrupt)?
        else {
            return Ok(None);
        };
        let rows = self
            .conn
            .query("read an owner", &st.owner_get, (&owner_id,))
            .await?;
        match rows
            .maybe_first_row::<(Option<String>,)>()
            .map_err(corrupt)?
        {
            Some((Some(r),)) => Ok(Some(from_json(&r)?)),
            _ => Ok(None),
        }
    }

    async fn count_owned_agents(&self, owner_id: &str) -> Result<u64> {
        let rows = self
            .conn
            .query("count owned agents", &self.conn.st.owned_count, (owner_id,))
            .await?;
        let (n,) = rows.single_row::<(i64,)>().map_err(corrupt)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// The registry's part of a purge ([`Purge`], in `purge`).
impl CqlStore {
    /// Every agent holding a name of the tenant (active or held after a deregistration).
    pub(super) async fn tenant_agent_ids(&self, tenant: &str) -> Result<Vec<String>> {
        let rows = self
            .conn
            .query("list a tenant", &self.conn.st.names_list, (tenant, ""))
            .await?;
        type R = (
            String,
            Option<String>,
            Option<i64>,
            Option<String>,
            Option<String>,
        );
        let mut ids = Vec::new();
        for row in rows.rows::<R>().map_err(corrupt)? {
            if let (_, Some(agent_id), ..) = row.map_err(corrupt)? {
                ids.push(agent_id);
            }
        }
        Ok(ids)
    }

    /// Deletes the agent's keys, name (if still its) and owner link, then its row: until
    /// the row goes, a retry finds the rest through it.
    pub(super) async fn purge_registry(&self, agent_id: &str) -> Result<()> {
        let st = &self.conn.st;
        let Some(row) = self.agent_row(agent_id).await? else {
            // A row holding only a touch, or nothing.
            self.conn
                .exec("delete an agent", &st.agent_delete, (agent_id,))
                .await?;
            return Ok(());
        };
        for hash in &row.keys {
            self.conn
                .exec("delete an API key", &st.key_delete, (hash.as_slice(),))
                .await?;
        }
        let agent = &row.record;
        self.conn
            .lwt(
                "delete a name",
                &st.name_delete,
                (agent.tenant.as_str(), agent.name.as_str(), agent_id),
            )
            .await?;
        if let Some(owner) = &agent.owner_id {
            self.conn
                .exec(
                    "delete an owner link",
                    &st.owned_delete,
                    (owner.as_str(), agent_id),
                )
                .await?;
        }
        self.conn
            .exec("delete an agent", &st.agent_delete, (agent_id,))
            .await?;
        Ok(())
    }
}
