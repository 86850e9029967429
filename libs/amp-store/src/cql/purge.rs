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
