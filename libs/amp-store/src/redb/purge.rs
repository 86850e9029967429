//! [`Purge`] on the embedded store: one write transaction per agent removes every row of
//! it from every table, so a purge is all or nothing and a retry finds either everything or
//! nothing left.

use ::redb::{ReadableTable, WriteTransaction};
use async_trait::async_trait;

use super::*;

#[async_trait]
impl Purge for RedbStore {
    async fn tenant_agents(&self, tenant: &str, limit: usize) -> Result<Vec<String>> {
        let txn = self.read()?;
        // The names index finds the tenant's agents without reading other tenants'...
        let names = txn.open_table(NAMES).map_err(st)?;
        let prefix = format!("{tenant}/");
        let mut ids = Vec::new();
        for row in names.range(prefix.as_str()..).map_err(st)? {
            let (k, v) = row.map_err(st)?;
            if !k.value().starts_with(&prefix) {
                break;
            }
            let holder: NameHolder = from_json(v.value())?;
            ids.push(holder.agent_id);
        }
        if ids.is_empty() {
            // ... but a deregistered agent whose name was later taken by another is no
            // longer in it: once the index is empty, one scan of the agents finds those.
            let agents = txn.open_table(AGENTS).map_err(st)?;
            for row in agents.iter().map_err(st)? {
                let (k, v) = row.map_err(st)?;
                let agent: AgentRecord = from_json(v.value())?;
                if agent.tenant == tenant {
                    ids.push(k.value().to_owned());
                }
            }
        }
        ids.sort();
        ids.dedup();
        ids.truncate(limit);
        Ok(ids)
    }

    async fn purge_agent(&self, agent_id: &str) -> Result<AgentPurge> {
        let agent_id = agent_id.to_owned();
        self.writer.write(move |txn| purge_in(txn, &agent_id)).await
    }
}

fn purge_in(txn: &WriteTransaction, agent_id: &str) -> Result<AgentPurge> {
    let mut out = AgentPurge::default();
    let agent: Option<AgentRecord> = match txn.open_table(AGENTS).map_err(st)?.get(agent_id) {
        Ok(Some(v)) => Some(from_json(v.value())?),
        Ok(None) => None,
        Err(e) => return Err(st(e)),
    };
    if let Some(agent) = &agent {
        let ours = {
            let names = txn.open_table(NAMES).map_err(st)?;
            let key = name_key(&agent.tenant, &agent.name);
            match names.get(key.as_str()).map_err(st)? {
                Some(v) => from_json::<NameHolder>(v.value())?.agent_id == agent_id,
                None => false,
            }
        };
        if ours {
            set_holder(txn, &agent.tenant, &agent.name, None)?;
        }
        if let Some(owner) = &agent.owner_id {
            txn.open_table(OWNED)
                .map_err(st)?
                .remove((owner.as_str(), agent_id))
                .map_err(st)?;
        }
    }
    revoke_keys_in(txn, agent_id)?;

    // The mailbox: every id the index knows (queued or acknowledged) with its markers, then
    // any row left.
    {
        let index = txn.open_table(MSG_INDEX).map_err(st)?;
        for row in index.range((agent_id, "")..).map_err(st)? {
            let (k, _) = row.map_err(st)?;
            if k.value().0 != agent_id {
                break;
            }
            out.messages += 1;
        }
    }
    delete_mailbox_in(txn, agent_id)?;
    out.messages += remove_seq_range(txn, MAILBOX, agent_id)?;
    out.receipts = remove_seq_range(txn, RECEIPTS, agent_id)?;
    txn.open_table(RECEIPT_HEAD)
        .map_err(st)?
        .remove(agent_id)
        .map_err(st)?;

    let mut presence = txn.open_table(PRESENCE).map_err(st)?;
    let mut sessions = Vec::new();
    for row in presence.range((agent_id, "")..).map_err(st)? {
        let (k, _) = row.map_err(st)?;
        let (a, s) = k.value();
        if a != agent_id {
            break;
        }
        sessions.push(s.to_owned());
    }
    for s in sessions {
        presence.remove((agent_id, s.as_str())).map_err(st)?;
    }

    txn.open_table(AGENTS)
        .map_err(st)?
        .remove(agent_id)
        .map_err(st)?;
    Ok(out)
}

/// Removes every `(agent, seq)` row of `table`; returns how many.
fn remove_seq_range(
    txn: &WriteTransaction,
    table: TableDefinition<(&str, u64), &[u8]>,
    agent_id: &str,
) -> Result<u64> {
    let mut t = txn.open_table(table).map_err(st)?;
    let mut seqs = Vec::new();
    for row in t.range((agent_id, 0)..=(agent_id, u64::MAX)).map_err(st)? {
        seqs.push(row.map_err(st)?.0.value().1);
    }
    for s in &seqs {
        t.remove((agent_id, *s)).map_err(st)?;
    }
    Ok(seqs.len() as u64)
}

impl RedbStore {
    /// Every row of every table: what tests that must prove something is gone (a tenant's
    /// deletion) look through, rather than asking the API.
    ///
    /// Fails when the database cannot be read.
    pub fn scan_rows(&self) -> Result<Vec<ScannedRow>> {
        fn text(b: &[u8]) -> String {
            String::from_utf8(b.to_vec()).unwrap_or_else(|_| hex(b))
        }
        fn hex(b: &[u8]) -> String {
            b.iter().map(|x| format!("{x:02x}")).collect()
        }
        let txn = self.read()?;
        let mut out = Vec::new();
        macro_rules! scan {
            ($table:expr, $name:literal, |$k:ident, $v:ident| $key:expr, $value:expr) => {
                match txn.open_table($table) {
                    Ok(t) => {
                        for row in t.iter().map_err(st)? {
                            let (k, v) = row.map_err(st)?;
                            let ($k, $v) = (k.value(), v.value());
                            out.push(ScannedRow {
                                table: $name.to_owned(),
                                key: $key,
                                value: $value,
                            });
                        }
                    }
                    // A table never written does not exist yet.
                    Err(::redb::TableError::TableDoesNotExist(_)) => {}
                    Err(e) => return Err(st(e)),
                }
            };
        }
        scan!(AGENTS, "agents", |k, v| k.to_owned(), text(v));
        scan!(NAMES, "names", |k, v| k.to_owned(), text(v));
        scan!(
            TENANT_ACTIVE,
            "tenant_active",
            |k, v| k.to_owned(),
            v.to_string()
        );
        scan!(OWNED, "owned", |k, v| format!("{k:?}"), format!("{v:?}"));
        scan!(API_KEYS, "api_keys", |k, v| hex(k), text(v));
        scan!(
            AGENT_KEYS,
            "agent_keys",
            |k, v| format!("({}, {})", k.0, hex(k.1)),
            format!("{v:?}")
        );
        scan!(OWNERS, "owners", |k, v| k.to_owned(), text(v));
        scan!(OWNER_KEYS, "owner_keys", |k, v| hex(k), v.to_owned());
        scan!(MAILBOX, "mailbox", |k, v| format!("{k:?}"), text(v));
        scan!(MSG_INDEX, "msg_index", |k, v| format!("{k:?}"), text(v));
        scan!(MBOX_META, "mbox_meta", |k, v| k.to_owned(), text(v));
        scan!(EXPIRY, "expiry", |k, v| format!("{k:?}"), v.to_owned());
        scan!(RECEIPTS, "receipts", |k, v| format!("{k:?}"), text(v));
        scan!(
            RECEIPT_HEAD,
            "receipt_head",
            |k, v| k.to_owned(),
            v.to_string()
        );
        scan!(JOBS, "jobs", |k, v| format!("{k:?}"), text(v));
        scan!(JOB_IDS, "job_ids", |k, v| k.to_owned(), v.to_string());
        scan!(KV, "kv", |k, v| k.to_owned(), text(v));
        scan!(KV_EXPIRES, "kv_expires", |k, v| k.to_owned(), v.to_string());
        scan!(
            KV_EXPIRY,
            "kv_expiry",
            |k, v| format!("{k:?}"),
            format!("{v:?}")
        );
        scan!(PRESENCE, "presence", |k, v| format!("{k:?}"), v.to_string());
        scan!(RECORDS, "records", |k, v| format!("{k:?}"), text(v));
        scan!(
            ATTACHMENTS,
            "attachments",
            |k, v| k.to_owned(),
            text(v.get(8..).unwrap_or_default())
        );
        Ok(out)
    }
}
