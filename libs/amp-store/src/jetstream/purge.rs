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
        // The markers of every id the mailbox knows first: the ids are read off the
        // subjects, which the purge below removes.
        let filter = self.conn.subject(&format!("amp.mbox.{agent}.>"));
        let mut ids = Vec::new();
        let mut start = 0;
        loop {
            let batch = self
                .conn
                .batch(&self.mailbox, &filter, start, MAX_BATCH)
                .await?;
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
        let messages = self.conn.purge(&self.mailbox, &filter, None).await?;
        self.conn
            .kv_delete(&self.index, &format!("meta.{agent}"))
            .await?;
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
