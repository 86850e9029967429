//! [`Purge`] on CQL: the agent's mailbox buckets, id rows and positions, its receipt and
//! session partitions, then its registry rows, the agent row last. Deletes are plain
//! (idempotent) writes but the name's, which is conditional on still naming the agent.

use async_trait::async_trait;

use super::CqlStore;
use crate::*;

#[async_trait]
impl Purge for CqlStore {
    async fn tenant_agents(&self, tenant: &str, limit: usize) -> Result<Vec<String>> {
        let mut ids = self.tenant_agent_ids(tenant).await?;
        ids.sort();
        ids.dedup();
        ids.truncate(limit);
        Ok(ids)
    }

    async fn purge_agent(&self, agent_id: &str) -> Result<AgentPurge> {
        let messages = self.purge_mailbox(agent_id).await?;
        let receipts = self.purge_receipts(agent_id).await?;
        self.purge_presence(agent_id).await?;
        self.purge_registry(agent_id).await?;
        Ok(AgentPurge { messages, receipts })
    }
}

/// Every table of the schema (`migrations/`), for [`CqlStore::scan`].
const TABLES: &[&str] = &[
    "agents",
    "agent_names",
    "api_keys",
    "owners",
    "owner_keys",
    "owned_agents",
    "mailbox_entries",
    "mailbox_ids",
    "mailbox_meta",
    "receipts",
    "jobs",
    "jobs_due",
    "presence",
    "presence_online",
    "kv",
    "records",
    "attachments",
];

impl CqlStore {
    /// Every row of every table of the keyspace, as text (blobs decoded as UTF-8 where they
    /// are): what tests that must prove something is gone (a tenant's deletion) look
    /// through, rather than asking the API. Unpaged: for test keyspaces.
    ///
    /// Fails when a table cannot be read.
    pub async fn scan_rows(&self) -> Result<Vec<ScannedRow>> {
        use scylla::value::{CqlValue, Row};
        fn text(v: &CqlValue) -> String {
            match v {
                CqlValue::Text(s) | CqlValue::Ascii(s) => s.clone(),
                CqlValue::Blob(b) => String::from_utf8_lossy(b).into_owned(),
                CqlValue::Set(xs) | CqlValue::List(xs) => {
                    xs.iter().map(text).collect::<Vec<_>>().join(", ")
                }
                other => format!("{other:?}"),
            }
        }
        let mut out = Vec::new();
        for table in TABLES {
            let res = self
                .conn
                .session
                .query_unpaged(format!("SELECT * FROM {table}"), ())
                .await
                .map_err(|e| super::conn::unavailable(&format!("scan {table}"), e))?;
            let rows = super::conn::rows(res)?;
            for row in rows.rows::<Row>().map_err(super::conn::corrupt)? {
                let row = row.map_err(super::conn::corrupt)?;
                let cells: Vec<String> = row
                    .columns
                    .iter()
                    .map(|c| c.as_ref().map_or_else(|| "null".to_owned(), text))
                    .collect();
                out.push(ScannedRow {
                    table: (*table).to_owned(),
                    key: cells.first().cloned().unwrap_or_default(),
                    value: cells.join(" | "),
                });
            }
        }
        Ok(out)
    }
}
