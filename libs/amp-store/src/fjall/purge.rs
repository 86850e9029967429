//! [`Purge`] on the embedded fjall store: one write transaction per agent removes every row
//! of it from every keyspace, so a purge is all or nothing and a retry finds either
//! everything or nothing left. [`FjallStore::scan_rows`] reads every row of every keyspace.

use async_trait::async_trait;

use super::keys::{self, Reader};
use super::kv::sessions_of;
use super::mailboxes::{delete_mailbox_in, index_of, seq_keys_upto};
use super::registry::{NameHolder, owned_key, read_agent, read_holder, revoke_keys_in, set_holder};
use super::writer::Tx;
use super::{FjallStore, Reads, from_json, row, st};
use crate::*;

#[async_trait]
impl Purge for FjallStore {
    async fn tenant_agents(&self, tenant: &str, limit: usize) -> Result<Vec<String>> {
        let r = self.read()?;
        // The names index finds the tenant's agents without reading other tenants'...
        let mut ids = Vec::new();
        for g in r.prefix(&r.ks().names, &keys::one(tenant)) {
            let (_, v) = row(g)?;
            let holder: NameHolder = from_json(&v)?;
            ids.push(holder.agent_id);
        }
        if ids.is_empty() {
            // ... but a deregistered agent whose name was later taken by another is no
            // longer in it: once the index is empty, one scan of the agents finds those.
            for g in r.range::<std::ops::RangeFull>(&r.ks().agents, ..) {
                let (_, v) = row(g)?;
                let agent: AgentRecord = from_json(&v)?;
                if agent.tenant == tenant {
                    ids.push(agent.id);
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

/// Removes every row of an agent, in the writer's transaction.
fn purge_in(txn: &mut Tx<'_>, agent_id: &str) -> Result<AgentPurge> {
    let mut out = AgentPurge::default();
    if let Some(agent) = read_agent(txn, agent_id)? {
        let ours =
            read_holder(txn, &agent.tenant, &agent.name)?.is_some_and(|h| h.agent_id == agent_id);
        if ours {
            set_holder(txn, &agent.tenant, &agent.name, None)?;
        }
        if let Some(owner) = &agent.owner_id {
            txn.remove(&txn.ks.owned, &owned_key(owner, agent_id))?;
        }
    }
    revoke_keys_in(txn, agent_id)?;

    // The mailbox: every id the index knows (queued or acknowledged) with its markers, then
    // any row left.
    out.messages += index_of(txn, agent_id)?.len() as u64;
    delete_mailbox_in(txn, agent_id)?;
    for k in seq_keys_upto(txn, &txn.ks.mailbox, agent_id, u64::MAX)? {
        txn.remove(&txn.ks.mailbox, &k)?;
        out.messages += 1;
    }
    for k in seq_keys_upto(txn, &txn.ks.receipts, agent_id, u64::MAX)? {
        txn.remove(&txn.ks.receipts, &k)?;
        out.receipts += 1;
    }
    txn.remove(&txn.ks.receipt_head, &keys::one(agent_id))?;

    for k in sessions_of(txn, agent_id)? {
        txn.remove(&txn.ks.presence, &k)?;
    }

    txn.remove(&txn.ks.agents, &keys::one(agent_id))?;
    Ok(out)
}

/// A key component, for [`FjallStore::scan_rows`] and the import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    /// A string ([`keys::Key::str`]).
    Str,
    /// A byte string ([`keys::Key::bytes`]).
    Bytes,
    /// A `u64` ([`keys::Key::u64`]).
    U64,
    /// An `i64` ([`keys::Key::i64`]).
    I64,
}

/// How a keyspace's keys and values are laid out (the import writes keys by it too).
pub(super) fn layout(table: &str) -> (&'static [Part], Value) {
    use Part::*;
    match table {
        "names" | "owned" | "msg_index" | "presence" | "records" => (&[Str, Str], value_of(table)),
        "agent_keys" => (&[Str, Bytes], Value::Text),
        "mailbox" | "receipts" => (&[Str, U64], Value::Text),
        "expiry" => (&[I64, Str, U64], Value::Text),
        "jobs" | "kv_expiry" => (&[I64, Str], Value::Text),
        // Raw 32-byte hashes (no parts: the key is the hash itself).
        "api_keys" | "owner_keys" => (&[], Value::Text),
        _ => (&[Str], value_of(table)),
    }
}

/// How a value is stored (and reads as text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Value {
    /// Bytes as they are (JSON, text, a mailbox row, empty).
    Text,
    /// A `u64`, 8 bytes big-endian.
    U64,
    /// An `i64`, 8 bytes big-endian.
    I64,
    /// A revision (8 bytes), then text.
    Revised,
}

/// How a single-key keyspace's values read as text.
fn value_of(table: &str) -> Value {
    match table {
        "tenant_active" | "receipt_head" => Value::U64,
        "job_ids" | "kv_expires" | "presence" => Value::I64,
        "attachments" => Value::Revised,
        _ => Value::Text,
    }
}

/// Bytes as lowercase hex.
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A key as its components, `(a, b, 3)`; raw keys as hex.
fn key_text(parts: &[Part], k: &[u8]) -> Result<String> {
    if parts.is_empty() {
        return Ok(hex(k));
    }
    let mut r = Reader::new(k);
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        out.push(match p {
            Part::Str => format!("{:?}", r.str()?),
            Part::Bytes => hex(&r.bytes()?),
            Part::U64 => r.u64()?.to_string(),
            Part::I64 => r.i64()?.to_string(),
        });
    }
    Ok(if out.len() == 1 {
        out.swap_remove(0).trim_matches('"').to_owned()
    } else {
        format!("({})", out.join(", "))
    })
}

/// A value as text, per its layout.
///
/// Fails when an integer value is not 8 bytes.
fn value_text(how: Value, v: &[u8]) -> Result<String> {
    Ok(match how {
        Value::Text => String::from_utf8_lossy(v).into_owned(),
        Value::U64 => keys::u64_value(v)?.to_string(),
        Value::I64 => keys::i64_value(v)?.to_string(),
        Value::Revised => String::from_utf8_lossy(v.get(8..).unwrap_or_default()).into_owned(),
    })
}

impl FjallStore {
    /// Every row of every keyspace: what tests that must prove something is gone (a
    /// tenant's deletion) look through, rather than asking the API.
    ///
    /// Fails when the database cannot be read or a key does not decode.
    pub fn scan_rows(&self) -> Result<Vec<ScannedRow>> {
        let r = self.read()?;
        let mut out = Vec::new();
        for (name, ks) in r.ks().all() {
            let (parts, how) = layout(name);
            for g in r.range::<std::ops::RangeFull>(ks, ..) {
                let (k, v) = g.into_inner().map_err(st)?;
                out.push(ScannedRow {
                    table: name.to_owned(),
                    key: key_text(parts, &k)?,
                    value: value_text(how, &v)?,
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_as_their_components() {
        let k = keys::Key::new().i64(-3).str("agt_1").u64(9).done();
        assert_eq!(
            key_text(&[Part::I64, Part::Str, Part::U64], &k).expect("decodes"),
            r#"(-3, "agt_1", 9)"#
        );
        assert_eq!(
            key_text(&[Part::Str], &keys::one("agt_1")).expect("decodes"),
            "agt_1"
        );
        let n = super::super::registry::name_key("t", "n");
        assert_eq!(
            key_text(&[Part::Str, Part::Str], &n).expect("decodes"),
            r#"("t", "n")"#
        );
    }
}
