//! [`Purge`] on JetStream: the agent's subjects purged from the mailbox and receipt streams,
//! its keys deleted from the buckets (each subject purged, so no history is left), the agent
//! record last. Every step is idempotent, so a purge cut short is finished by the next.

use async_trait::async_trait;

use super::JetStreamStore;
use super::conn::tok;
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
        let messages = self
            .conn
            .purge(
                &self.mailbox,
                &self.conn.subject(&format!("amp.mbox.{agent}.>")),
                None,
            )
            .await?;
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
