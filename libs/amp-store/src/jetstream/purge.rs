//! [`Purge`] on JetStream: the agent's subjects purged from the mailbox and receipt streams,
//! its keys deleted from the buckets (each subject purged, so no history is left), the agent
//! record last. Every step is idempotent, so a purge cut short is finished by the next.

use async_trait::async_trait;

use super::JetStreamStore;
use super::conn::{MAX_BATCH, tok, untok};
use crate::*;

#[async_trait]
impl Purge for JetStreamStore {
    async fn tenant_agents(&self, tenant: &str, limit: usize) -> Result<Vec<String>> {
        let mut ids = self.tenant_agent_ids(tenant).await?;
        ids.sort();
        ids.dedup();
        ids.truncate(limit);
        Ok(ids)
    }

    async fn purge_agent(&self, agent_id: &str) -> Result<AgentPurge> {
        let agent = tok(agent_id);
        let messages = self.purge_mailbox(agent_id).await?;
        let receipts = self
            .conn
            .purge(&self.receipts, &self.receipt_subject(agent_id), None)
            .await?;
        for (key, _) in self
            .conn
            .kv_scan(&self.state, &format!("pres.{agent}"))
            .await?
        {
            self.conn.kv_delete(&self.state, &key).await?;
        }
        self.purge_registry(agent_id).await?;
        Ok(AgentPurge { messages, receipts })
    }
}

impl JetStreamStore {
    /// Deletes the markers of every id the mailbox knows, then its messages and tombstones
    /// (nothing can be served after), then its positions; returns how many messages went.
    pub(super) async fn purge_mailbox(&self, agent_id: &str) -> Result<u64> {
        let agent = tok(agent_id);
        // The markers of every id the mailbox knows first: the ids are read off the
        // subjects, which the purge below removes.
        let filter = self.agent_filter(agent_id);
        let stream = self.mailbox_of(agent_id);
        let mut ids = Vec::new();
        let mut start = 0;
        loop {
            let batch = self.conn.batch(stream, &filter, start, MAX_BATCH).await?;
            let Some(last) = batch.messages.last() else {
                break;
            };
            start = last.seq + 1;
            for raw in &batch.messages {
                if let Some(id) = raw.subject.rsplit('.').next() {
                    ids.push(untok(id)?);
                }
            }
            if batch.pending == 0 {
                break;
            }
        }
        ids.sort();
        ids.dedup();
        for id in &ids {
            for kind in MESSAGE_MARKERS {
                Kv::delete(self, &message_marker(kind, agent_id, id)).await?;
            }
        }
        let messages = self.conn.purge(stream, &filter, None).await?;
        self.conn
            .kv_delete(&self.index, &format!("meta.{agent}"))
            .await?;
        Ok(messages)
    }

    /// Every live key of every bucket and every message of every stream of the store, keys
    /// and subjects with their tokens decoded: what tests that must prove something is gone
    /// (a tenant's deletion) look through, rather than asking the API.
    ///
    /// Fails when the server cannot be read.
    pub async fn scan_rows(&self) -> Result<Vec<ScannedRow>> {
        let decode = |key: &str| -> String {
            key.split('.')
                .map(|t| untok(t).unwrap_or_else(|_| t.to_owned()))
                .collect::<Vec<_>>()
                .join(".")
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut out = Vec::new();
        for bucket in [&self.registry, &self.index, &self.state] {
            for (key, value) in self.conn.kv_scan(bucket, "").await? {
                out.push(ScannedRow {
                    table: bucket.clone(),
                    key: decode(&key),
                    value: text(&value),
                });
            }
        }
        let streams = self.mailboxes.iter().map(|p| &p.stream);
        for stream in streams.chain([&self.receipts]) {
            let mut start = 0;
            loop {
                let batch = self.conn.batch(stream, ">", start, MAX_BATCH).await?;
                let Some(last) = batch.messages.last() else {
                    break;
                };
                start = last.seq + 1;
                for raw in &batch.messages {
                    let headers = raw
                        .headers
                        .iter()
                        .map(|(k, v)| format!("{k}: {v:?}"))
                        .collect::<Vec<_>>()
                        .join("; ");
                    out.push(ScannedRow {
                        table: stream.clone(),
                        key: decode(&raw.subject),
                        value: format!("{headers} | {}", text(&raw.payload)),
                    });
                }
                if batch.pending == 0 {
                    break;
                }
            }
        }
        Ok(out)
    }
}
