//! [`Composed`]: a store made of one backend per concern, so a deployment can keep, say,
//! mailboxes in ScyllaDB and presence (short leases) in JetStream. Each trait's calls go to
//! the backend chosen for it; `ready` asks every backend, `close` closes each once.
//!
//! The one call that crosses concerns is a deregistration, which deletes the agent's
//! mailbox: when mailboxes live elsewhere than the registry, the mailbox backend's mailbox
//! is deleted too.

use std::sync::Arc;

use async_trait::async_trait;

use crate::*;

/// The backend of each concern. Build it with [`Composed::new`] (everything on one
/// backend) and the `with_…` methods, then wrap it in a [`Store`].
#[derive(Clone)]
pub struct Composed {
    registry: Arc<dyn StoreBackend>,
    mailboxes: Arc<dyn StoreBackend>,
    receipts: Arc<dyn StoreBackend>,
    jobs: Arc<dyn StoreBackend>,
    presence: Arc<dyn StoreBackend>,
    kv: Arc<dyn StoreBackend>,
}

impl Composed {
    /// Every concern on `backend`.
    pub fn new(backend: Arc<dyn StoreBackend>) -> Self {
        Self {
            registry: backend.clone(),
            mailboxes: backend.clone(),
            receipts: backend.clone(),
            jobs: backend.clone(),
            presence: backend.clone(),
            kv: backend,
        }
    }

    /// Agents, names, keys and owners on `backend`.
    pub fn with_registry(mut self, backend: Arc<dyn StoreBackend>) -> Self {
        self.registry = backend;
        self
    }

    /// Mailboxes on `backend`.
    pub fn with_mailboxes(mut self, backend: Arc<dyn StoreBackend>) -> Self {
        self.mailboxes = backend;
        self
    }

    /// Receipts on `backend`.
    pub fn with_receipts(mut self, backend: Arc<dyn StoreBackend>) -> Self {
        self.receipts = backend;
        self
    }

    /// Jobs on `backend`.
    pub fn with_jobs(mut self, backend: Arc<dyn StoreBackend>) -> Self {
        self.jobs = backend;
        self
    }

    /// Presence on `backend`.
    pub fn with_presence(mut self, backend: Arc<dyn StoreBackend>) -> Self {
        self.presence = backend;
        self
    }

    /// Small values on `backend`.
    pub fn with_kv(mut self, backend: Arc<dyn StoreBackend>) -> Self {
        self.kv = backend;
        self
    }

    /// Each distinct backend once.
    fn backends(&self) -> Vec<&Arc<dyn StoreBackend>> {
        let mut out: Vec<&Arc<dyn StoreBackend>> = Vec::new();
        for b in [
            &self.registry,
            &self.mailboxes,
            &self.receipts,
            &self.jobs,
            &self.presence,
            &self.kv,
        ] {
            if !out.iter().any(|o| Arc::ptr_eq(o, b)) {
                out.push(b);
            }
        }
        out
    }
}

#[async_trait]
impl Registry for Composed {
    async fn create_agent(&self, agent: AgentRecord, api_key: KeyHash, now: Millis) -> Result<()> {
        self.registry.create_agent(agent, api_key, now).await
    }
    async fn agent(&self, id: &str) -> Result<Option<AgentRecord>> {
        self.registry.agent(id).await
    }
    async fn agent_by_name(&self, tenant: &str, name: &str) -> Result<Option<AgentRecord>> {
        self.registry.agent_by_name(tenant, name).await
    }
    async fn agent_by_api_key(&self, key: &KeyHash) -> Result<Option<(AgentRecord, ApiKeyRecord)>> {
        self.registry.agent_by_api_key(key).await
    }
    async fn update_agent(&self, agent: AgentRecord) -> Result<()> {
        self.registry.update_agent(agent).await
    }
    async fn touch_agent(&self, id: &str, now: Millis) -> Result<()> {
        self.registry.touch_agent(id, now).await
    }
    async fn rotate_api_key(
        &self,
        agent_id: &str,
        new_key: KeyHash,
        now: Millis,
        old_valid_until: Millis,
    ) -> Result<()> {
        self.registry
            .rotate_api_key(agent_id, new_key, now, old_valid_until)
            .await
    }
    async fn revoke_api_keys(&self, agent_id: &str) -> Result<()> {
        self.registry.revoke_api_keys(agent_id).await
    }
    async fn deregister_agent(
        &self,
        agent_id: &str,
        now: Millis,
        name_hold_until: Millis,
    ) -> Result<AgentRecord> {
        let gone = self
            .registry
            .deregister_agent(agent_id, now, name_hold_until)
            .await?;
        if !Arc::ptr_eq(&self.registry, &self.mailboxes) {
            self.mailboxes.delete_mailbox(agent_id).await?;
        }
        Ok(gone)
    }
    async fn list_agents(
        &self,
        tenant: &str,
        search: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<AgentRecord>, u64)> {
        self.registry
            .list_agents(tenant, search, after, limit)
            .await
    }
    async fn put_owner(&self, owner: OwnerRecord, user_key: KeyHash) -> Result<()> {
        self.registry.put_owner(owner, user_key).await
    }
    async fn owner_by_user_key(&self, key: &KeyHash) -> Result<Option<OwnerRecord>> {
        self.registry.owner_by_user_key(key).await
    }
    async fn count_owned_agents(&self, owner_id: &str) -> Result<u64> {
        self.registry.count_owned_agents(owner_id).await
    }
}

#[async_trait]
impl Mailboxes for Composed {
    async fn enqueue(&self, entry: NewMailboxEntry) -> Result<Enqueued> {
        self.mailboxes.enqueue(entry).await
    }
    async fn entry(
        &self,
        agent_id: &str,
        message_id: &str,
        now: Millis,
    ) -> Result<Option<EntryState>> {
        self.mailboxes.entry(agent_id, message_id, now).await
    }
    async fn fetch(
        &self,
        agent_id: &str,
        after: Option<u64>,
        limit: usize,
        now: Millis,
    ) -> Result<MailboxPage> {
        self.mailboxes.fetch(agent_id, after, limit, now).await
    }
    async fn count(&self, agent_id: &str, now: Millis) -> Result<MailboxCount> {
        self.mailboxes.count(agent_id, now).await
    }
    async fn ack(&self, agent_id: &str, message_ids: &[String], now: Millis) -> Result<Vec<Acked>> {
        self.mailboxes.ack(agent_id, message_ids, now).await
    }
    async fn purge_expired(&self, now: Millis, max: usize) -> Result<usize> {
        let mut n = 0;
        for b in self.backends() {
            n += b.purge_expired(now, max).await?;
        }
        Ok(n)
    }
    async fn delete_mailbox(&self, agent_id: &str) -> Result<()> {
        self.mailboxes.delete_mailbox(agent_id).await
    }
}

#[async_trait]
impl Receipts for Composed {
    async fn put_receipt(&self, agent_id: &str, receipt: Receipt) -> Result<u64> {
        self.receipts.put_receipt(agent_id, receipt).await
    }
    async fn receipts(
        &self,
        agent_id: &str,
        after: Option<u64>,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<Receipt>> {
        self.receipts.receipts(agent_id, after, limit, now).await
    }
    async fn drop_receipts(&self, agent_id: &str, upto: u64) -> Result<()> {
        self.receipts.drop_receipts(agent_id, upto).await
    }
}

#[async_trait]
impl Jobs for Composed {
    async fn schedule(&self, job: Job) -> Result<()> {
        self.jobs.schedule(job).await
    }
    async fn due_jobs(&self, kind: &str, now: Millis, limit: usize) -> Result<Vec<Job>> {
        self.jobs.due_jobs(kind, now, limit).await
    }
    async fn claim(&self, job: &Job, until: Millis) -> Result<bool> {
        self.jobs.claim(job, until).await
    }
    async fn complete(&self, id: &str) -> Result<()> {
        self.jobs.complete(id).await
    }
}

#[async_trait]
impl Presence for Composed {
    async fn presence_set(&self, agent_id: &str, session: &str, until: Millis) -> Result<()> {
        self.presence.presence_set(agent_id, session, until).await
    }
    async fn presence_clear(&self, agent_id: &str, session: &str) -> Result<()> {
        self.presence.presence_clear(agent_id, session).await
    }
    async fn presence_count(&self, agent_id: &str, now: Millis) -> Result<u32> {
        self.presence.presence_count(agent_id, now).await
    }
    async fn agents_online(&self, now: Millis) -> Result<u64> {
        self.presence.agents_online(now).await
    }
}

#[async_trait]
impl Kv for Composed {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.kv_of(key).get(key).await
    }
    async fn put(&self, key: &str, value: Vec<u8>, expires_at: Option<Millis>) -> Result<()> {
        self.kv_of(key).put(key, value, expires_at).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.kv_of(key).delete(key).await
    }
}

impl Composed {
    /// Where `key` lives: a per-message marker ([`crate::message_marker`]) with its
    /// mailbox, whose purge removes it with the messages, and a per-message idempotency
    /// record ([`crate::PER_MESSAGE_VALUES`]) with the mailboxes too (their volume is the
    /// messages'); anything else with the small values.
    fn kv_of(&self, key: &str) -> &Arc<dyn StoreBackend> {
        let marker = crate::MESSAGE_MARKERS
            .iter()
            .chain(crate::PER_MESSAGE_VALUES)
            .any(|kind| {
                key.strip_prefix(kind)
                    .is_some_and(|rest| rest.starts_with('/'))
            });
        if marker { &self.mailboxes } else { &self.kv }
    }
}

/// The operator plane's records live with the registry (tenants and owners are registry
/// concerns).
#[async_trait]
impl Records for Composed {
    async fn record_put(
        &self,
        collection: &str,
        id: &str,
        value: Vec<u8>,
        mode: PutMode,
    ) -> Result<bool> {
        self.registry.record_put(collection, id, value, mode).await
    }
    async fn record_get(&self, collection: &str, id: &str) -> Result<Option<Vec<u8>>> {
        self.registry.record_get(collection, id).await
    }
    async fn record_list(
        &self,
        collection: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>> {
        self.registry.record_list(collection, after, limit).await
    }
    async fn record_take(&self, collection: &str, id: &str) -> Result<bool> {
        self.registry.record_take(collection, id).await
    }
}

/// Attachment metadata lives with the small values.
#[async_trait]
impl Attachments for Composed {
    async fn attachment_create(&self, record: &AttachmentRecord) -> Result<bool> {
        self.kv.attachment_create(record).await
    }
    async fn attachment(&self, id: &str) -> Result<Option<Versioned<AttachmentRecord>>> {
        self.kv.attachment(id).await
    }
    async fn attachment_replace(&self, record: &AttachmentRecord, revision: u64) -> Result<bool> {
        self.kv.attachment_replace(record, revision).await
    }
    async fn attachment_delete(&self, id: &str) -> Result<()> {
        self.kv.attachment_delete(id).await
    }
}

/// Each backend purges what it holds; the registry's last, since its agent record is what
/// lists the agent for a purge that must be resumed.
#[async_trait]
impl Purge for Composed {
    async fn tenant_agents(&self, tenant: &str, limit: usize) -> Result<Vec<String>> {
        self.registry.tenant_agents(tenant, limit).await
    }
    async fn purge_agent(&self, agent_id: &str) -> Result<AgentPurge> {
        let mut total = AgentPurge::default();
        for b in self.backends() {
            if !Arc::ptr_eq(b, &self.registry) {
                let p = b.purge_agent(agent_id).await?;
                total.messages += p.messages;
                total.receipts += p.receipts;
            }
        }
        let p = self.registry.purge_agent(agent_id).await?;
        total.messages += p.messages;
        total.receipts += p.receipts;
        Ok(total)
    }
}

#[async_trait]
impl StoreBackend for Composed {
    async fn ready(&self) -> bool {
        for b in self.backends() {
            if !b.ready().await {
                return false;
            }
        }
        true
    }

    async fn close(&self) -> Result<()> {
        for b in self.backends() {
            b.close().await?;
        }
        Ok(())
    }
}
