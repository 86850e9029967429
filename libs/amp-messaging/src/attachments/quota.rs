//! Attachment quotas per agent and per tenant (issue 18; the spec names none): how many
//! attachments, and how many bytes of them, one agent and the agents of one tenant may hold
//! at once. An attachment counts from its upload request (or direct upload) until it is
//! deleted — 2 h after confirmation when no message references it, 7 days after its latest
//! routing time when one does — or its scan rejects it (its bytes are deleted then).
//!
//! One small record per held attachment, in the tenant's collection
//! `attachment_quota.<tenant>` (id: the attachment id; value: owner and size), written after
//! the attachment record and removed with it. A check lists the tenant's collection, at most
//! `tenant_max_attachments` records, so its cost is bounded by the quota and reads nothing of
//! other tenants. The check and the write are not one transaction: concurrent uploads of one
//! tenant can overshoot a quota by the number in flight (the per-agent rate limit of spec 08,
//! 20 upload requests a minute, bounds that).
//!
//! Refusals: a count over its quota is `403 forbidden`, bytes over their quota `413
//! attachment_too_large` (as the plan quotas answer for agents and message size), each
//! with `quota` naming which (`agent_attachments`, `agent_bytes`, `tenant_attachments`,
//! `tenant_bytes`).

use amp_proto::{ApiError, ErrorCode};
use amp_store::{AgentRecord, AttachmentRecord, PutMode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AttachmentService;
use crate::store_err;

/// Records listed per call.
const PAGE: usize = 500;

/// One held attachment.
#[derive(Serialize, Deserialize)]
struct Held {
    owner: String,
    size: u64,
}

/// The collection of a tenant's held attachments.
fn collection(tenant: &str) -> String {
    format!("attachment_quota.{tenant}")
}

/// What one agent and its tenant hold now.
#[derive(Debug, Default, PartialEq, Eq)]
struct Holding {
    agent_count: u64,
    agent_bytes: u64,
    tenant_count: u64,
    tenant_bytes: u64,
}

fn refusal(code: ErrorCode, quota: &'static str, message: String) -> ApiError {
    metrics::counter!("amp_attachment_quota_refusals_total", "quota" => quota).increment(1);
    ApiError::new(code, message).with_extra("quota", Value::from(quota))
}

impl AttachmentService {
    /// Whether `owner` may hold one more attachment of `size` bytes.
    ///
    /// Fails with `403 forbidden` or `413 attachment_too_large` (see the module), `503`.
    pub(super) async fn check_quota(&self, owner: &AgentRecord, size: u64) -> Result<(), ApiError> {
        let c = &self.0.config;
        if c.agent_max_attachments == 0
            && c.agent_max_bytes == 0
            && c.tenant_max_attachments == 0
            && c.tenant_max_bytes == 0
        {
            return Ok(());
        }
        let h = self.holding(owner).await?;
        if c.agent_max_attachments > 0 && h.agent_count >= c.agent_max_attachments {
            return Err(refusal(
                ErrorCode::Forbidden,
                "agent_attachments",
                format!(
                    "this agent holds its quota of {} attachments; they free up as they expire",
                    c.agent_max_attachments
                ),
            ));
        }
        if c.tenant_max_attachments > 0 && h.tenant_count >= c.tenant_max_attachments {
            return Err(refusal(
                ErrorCode::Forbidden,
                "tenant_attachments",
                format!(
                    "tenant '{}' holds its quota of {} attachments; they free up as they expire",
                    owner.tenant, c.tenant_max_attachments
                ),
            ));
        }
        if c.agent_max_bytes > 0 && h.agent_bytes.saturating_add(size) > c.agent_max_bytes {
            return Err(refusal(
                ErrorCode::AttachmentTooLarge,
                "agent_bytes",
                format!(
                    "this agent holds {} bytes of attachments; {size} more would pass its quota of {}",
                    h.agent_bytes, c.agent_max_bytes
                ),
            )
            .with_field("size"));
        }
        if c.tenant_max_bytes > 0 && h.tenant_bytes.saturating_add(size) > c.tenant_max_bytes {
            return Err(refusal(
                ErrorCode::AttachmentTooLarge,
                "tenant_bytes",
                format!(
                    "tenant '{}' holds {} bytes of attachments; {size} more would pass its quota of {}",
                    owner.tenant, h.tenant_bytes, c.tenant_max_bytes
                ),
            )
            .with_field("size"));
        }
        Ok(())
    }

    /// What `owner` and its tenant hold, listing no more than the tenant's count quota.
    async fn holding(&self, owner: &AgentRecord) -> Result<Holding, ApiError> {
        let coll = collection(&owner.tenant);
        let cap = match self.0.config.tenant_max_attachments {
            0 => u64::MAX,
            n => n,
        };
        let mut h = Holding::default();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .0
                .store
                .record_list(&coll, after.as_deref(), PAGE)
                .await
                .map_err(store_err)?;
            for (_, value) in &page {
                let Ok(held) = serde_json::from_slice::<Held>(value) else {
                    continue;
                };
                h.tenant_count += 1;
                h.tenant_bytes = h.tenant_bytes.saturating_add(held.size);
                if held.owner == owner.id {
                    h.agent_count += 1;
                    h.agent_bytes = h.agent_bytes.saturating_add(held.size);
                }
            }
            if page.len() < PAGE || h.tenant_count >= cap {
                return Ok(h);
            }
            after = page.last().map(|(id, _)| id.clone());
        }
    }

    /// Counts `rec` against its owner's and tenant's quotas.
    pub(super) async fn note_quota(&self, rec: &AttachmentRecord) -> Result<(), ApiError> {
        let held = serde_json::to_vec(&Held {
            owner: rec.owner_id.clone(),
            size: rec.size,
        })
        .map_err(|e| crate::internal(format!("quota record: {e}")))?;
        self.0
            .store
            .record_put(&collection(&rec.tenant), &rec.id, held, PutMode::Replace)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    /// Stops counting `rec` (idempotent).
    pub(super) async fn release_quota(&self, rec: &AttachmentRecord) -> amp_store::Result<()> {
        self.0
            .store
            .record_take(&collection(&rec.tenant), &rec.id)
            .await?;
        Ok(())
    }
}
