//! The operator plane's records, typed over [`Records`]: tenants, operator tokens, owner
//! keys (`uk_…`), invite codes and the audit log. Every backend stores them through the four
//! calls of [`Records`]; the [`Operator`] extension trait (implemented for every
//! [`Records`]) gives them their types, once for all backends.
//!
//! Secrets (operator tokens, owner keys, invite codes) are stored under the hex of their
//! keyed hash only: a read of the store yields no usable credential.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Error, KeyHash, Millis, PutMode, Records, Result};

/// Collection of [`TenantRecord`]s, by name.
pub const TENANTS: &str = "tenants";
/// Collection of [`OperatorToken`]s, by hex of the token's keyed hash.
pub const TOKENS: &str = "op_tokens";
/// Collection of [`OwnerKey`]s, by hex of the key's keyed hash.
pub const OWNER_KEYS: &str = "owner_keys";
/// Collection of [`Invite`]s, by hex of the code's keyed hash.
pub const INVITES: &str = "invites";
/// Collection of [`AuditEntry`]s, by `<unix ms, 15 digits>-<16 hex>` (time order).
pub const AUDIT: &str = "audit";

/// Whether a tenant's agents may use the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// In service.
    Active,
    /// Its agents' requests and routes from and to them are refused; its sockets closed.
    Suspended,
    /// Being deleted ([`crate::deletion`]): refused as if suspended, until the record goes.
    Deleting,
}

impl TenantStatus {
    /// Whether the tenant's agents are refused service (suspended, or being deleted).
    pub fn refused(self) -> bool {
        self != TenantStatus::Active
    }
}

/// Who may register agents into a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantRegistration {
    /// Anyone (rate limited per source address).
    Open,
    /// Only with one of the tenant's owner keys (`Authorization: Bearer uk_…`).
    OwnerKey,
    /// With an owner key, or a single-use invite code (`invite_code`).
    Invite,
}

/// A tenant as the operator manages it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// The tenant label (`acme` in `alice@acme.crabmail.ai`), lowercase.
    pub name: String,
    /// Active or suspended.
    pub status: TenantStatus,
    /// Who may register agents.
    pub registration: TenantRegistration,
    /// Why it was suspended, as the operator said.
    #[serde(default)]
    pub suspended_reason: Option<String>,
    /// Its own quotas; a limit it leaves unset is the configuration's default plan's.
    #[serde(default, skip_serializing_if = "PlanLimits::is_empty")]
    pub plan: PlanLimits,
    /// Where its admins are told of events about its agents (spec-next 07's "notify tenant
    /// admins"), if they asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<TenantNotify>,
    /// Created, unix ms.
    pub created_at: Millis,
    /// Last changed, unix ms.
    pub updated_at: Millis,
}

/// A tenant's notification webhook: events about its agents (risk level changes,
/// automatic suspensions) are POSTed to `url`, signed with `secret` as agents' webhooks are
/// (`X-AMP-Signature: sha256=<HMAC-SHA256(secret, "{timestamp}.{body}")>`). The secret
/// must be kept to sign with, so it is stored as it is (like agents' webhook secrets); it
/// is shown once, when made, and never in `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantNotify {
    /// Where to POST (checked against the outbound policy when set, and again at each
    /// attempt).
    pub url: String,
    /// The signing secret (`whsec_…`).
    pub secret: String,
    /// Set or last changed, unix ms.
    pub updated_at: Millis,
}

impl std::fmt::Debug for TenantNotify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantNotify")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// A plan: a tenant's quotas. Every limit is optional: on a tenant's record, unset means
/// "the default plan's" ([`PlanLimits::over`]); in the resolved plan, unset means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanLimits {
    /// Most active agents (registration refuses more: `403 forbidden`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agents: Option<u64>,
    /// Messages sent by the tenant's agents per minute, all together (`429 rate_limited`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_per_minute: Option<u32>,
    /// Messages sent by the tenant's agents per day, all together (`429 rate_limited`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_per_day: Option<u32>,
    /// Most bytes of messages held in the tenant's mailboxes (`507 storage_quota_exceeded`
    /// for a message to any of its agents past it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    /// Largest message (envelope and payload as JSON), bytes (`413`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_bytes: Option<u64>,
    /// Most WebSocket connections of the tenant's agents at once (an error frame
    /// `rate_limited` and close 1008 past it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u32>,
    /// Whether the tenant's agents may send to other providers (`403 forbidden` if not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub federation: Option<bool>,
}

impl PlanLimits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// This plan, with `defaults` for every limit it leaves unset.
    pub fn over(&self, defaults: &PlanLimits) -> PlanLimits {
        PlanLimits {
            agents: self.agents.or(defaults.agents),
            messages_per_minute: self.messages_per_minute.or(defaults.messages_per_minute),
            messages_per_day: self.messages_per_day.or(defaults.messages_per_day),
            stored_bytes: self.stored_bytes.or(defaults.stored_bytes),
            message_bytes: self.message_bytes.or(defaults.message_bytes),
            connections: self.connections.or(defaults.connections),
            federation: self.federation.or(defaults.federation),
        }
    }
}

/// What an operator token may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenScope {
    /// Read tenants, owner-key metadata and the audit log.
    Read,
    /// Also create, change, suspend and resume tenants; issue, rotate and revoke owner keys;
    /// create invite codes.
    TenantAdmin,
    /// Also create, list and revoke operator tokens.
    Full,
}

impl TokenScope {
    /// Whether a token of this scope may do what `needed` allows.
    pub fn allows(self, needed: TokenScope) -> bool {
        self >= needed
    }

    /// The scope's name (`read`, `tenant_admin`, `full`).
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::TenantAdmin => "tenant_admin",
            TokenScope::Full => "full",
        }
    }

    /// Parses a scope's name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(TokenScope::Read),
            "tenant_admin" => Some(TokenScope::TenantAdmin),
            "full" => Some(TokenScope::Full),
            _ => None,
        }
    }
}

/// An operator token's metadata (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorToken {
    /// Public id (`opt_…`), for listing and revoking.
    pub id: String,
    /// What the operator called it.
    pub name: String,
    /// What it may do.
    pub scope: TokenScope,
    /// The one tenant it is limited to (a tenant admin's token, spec-next 08), or `None`
    /// for the whole provider. Such a token only works while the tenant's record is the one
    /// it was made for (created before the token), never on a later tenant of that name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Created, unix ms.
    pub created_at: Millis,
    /// Revoked at, unix ms: it no longer authenticates.
    #[serde(default)]
    pub revoked_at: Option<Millis>,
}

/// An owner key's metadata (the key itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerKey {
    /// Public id (`ok_…`), for listing, rotating and revoking.
    pub id: String,
    /// The tenant its agents register into.
    pub tenant: String,
    /// The owner its agents belong to (kept across rotations, so the owner may re-key them).
    pub owner_id: String,
    /// The key's first characters (`uk_3fQa…`), to tell keys apart.
    pub prefix: String,
    /// Most agents the owner may have with its keys; `None`: no limit of its own.
    #[serde(default)]
    pub agent_limit: Option<u32>,
    /// Created, unix ms.
    pub created_at: Millis,
    /// Valid until, unix ms (set by a rotation's overlap, or at issue).
    #[serde(default)]
    pub expires_at: Option<Millis>,
    /// Revoked at, unix ms: refused from then on.
    #[serde(default)]
    pub revoked_at: Option<Millis>,
    /// The key that replaced it in a rotation.
    #[serde(default)]
    pub replaced_by: Option<String>,
}

impl OwnerKey {
    /// Whether the key registers agents at `now`.
    pub fn valid_at(&self, now: Millis) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|t| now < t)
    }
}

/// A single-use invite code's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    /// Public id (`inv_…`).
    pub id: String,
    /// The tenant it registers one agent into.
    pub tenant: String,
    /// Created, unix ms.
    pub created_at: Millis,
    /// Refused from then on, unix ms.
    pub expires_at: Millis,
    /// Who created it (an operator token id).
    pub created_by: String,
}

/// One line of the audit log: append-only, listed in time order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its position (`<unix ms>-<random>`), the paging cursor.
    pub id: String,
    /// When, unix ms.
    pub at: Millis,
    /// Who: an operator token id (`opt_…`), an owner key id (`ok_…`), or `bootstrap`.
    pub actor: String,
    /// What (`tenant.create`, `tenant.suspend`, `owner_key.use`, …).
    pub action: String,
    /// On what (a tenant, a key id, an agent id).
    pub target: String,
    /// The request it came from (`x-request-id`), when there was one.
    #[serde(default)]
    pub request_id: Option<String>,
    /// More, action-specific (never a secret).
    #[serde(default)]
    pub details: Option<serde_json::Value>,
}

impl AuditEntry {
    /// An entry at `at`, with a fresh time-ordered id.
    pub fn new(
        at: Millis,
        actor: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
    ) -> Self {
        Self {
            id: format!("{:015}-{:016x}", at.max(0), rand_u64()),
            at,
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            request_id: None,
            details: None,
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // A process-random, call-unique value (no `rand` dependency in the store): the hasher's
    // random keys, fed with a counter and the time.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

fn to_vec<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Corrupt(e.to_string()))
}

fn from_slice<T: for<'a> Deserialize<'a>>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Corrupt(e.to_string()))
}

/// The id a secret's keyed hash is stored under.
pub fn hash_id(hash: &KeyHash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The operator plane's records with their types, over any [`Records`].
#[async_trait]
pub trait Operator: Records {
    /// Creates a tenant; `false` when the name is taken.
    async fn create_tenant(&self, tenant: &TenantRecord) -> Result<bool> {
        self.record_put(TENANTS, &tenant.name, to_vec(tenant)?, PutMode::Create)
            .await
    }

    /// Replaces a tenant's record.
    async fn put_tenant(&self, tenant: &TenantRecord) -> Result<()> {
        self.record_put(TENANTS, &tenant.name, to_vec(tenant)?, PutMode::Replace)
            .await
            .map(|_| ())
    }

    /// A tenant by name.
    async fn tenant(&self, name: &str) -> Result<Option<TenantRecord>> {
        match self.record_get(TENANTS, name).await? {
            Some(b) => from_slice(&b).map(Some),
            None => Ok(None),
        }
    }

    /// Tenants after the name `after`, by name, at most `limit`.
    async fn list_tenants(&self, after: Option<&str>, limit: usize) -> Result<Vec<TenantRecord>> {
        let rows = self.record_list(TENANTS, after, limit).await?;
        rows.iter().map(|(_, b)| from_slice(b)).collect()
    }

    /// Writes an operator token's record under its hash; with [`PutMode::Create`], `false`
    /// when that hash is already stored (a revoked token stays revoked).
    async fn put_token(
        &self,
        hash: &KeyHash,
        token: &OperatorToken,
        mode: PutMode,
    ) -> Result<bool> {
        self.record_put(TOKENS, &hash_id(hash), to_vec(token)?, mode)
            .await
    }

    /// The token record a hash belongs to.
    async fn token_by_hash(&self, hash: &KeyHash) -> Result<Option<OperatorToken>> {
        match self.record_get(TOKENS, &hash_id(hash)).await? {
            Some(b) => from_slice(&b).map(Some),
            None => Ok(None),
        }
    }

    /// Replaces a token's record found by [`list_tokens`](Self::list_tokens).
    async fn update_token(&self, hash_hex: &str, token: &OperatorToken) -> Result<()> {
        self.record_put(TOKENS, hash_hex, to_vec(token)?, PutMode::Replace)
            .await
            .map(|_| ())
    }

    /// Every operator token with the hex of its hash (a handful: read whole).
    async fn list_tokens(&self) -> Result<Vec<(String, OperatorToken)>> {
        scan(self, TOKENS).await
    }

    /// Writes an owner key's record under its hash; with [`PutMode::Create`], `false` when
    /// that hash is already stored (a revoked key stays revoked across a re-import).
    async fn put_owner_key(&self, hash: &KeyHash, key: &OwnerKey, mode: PutMode) -> Result<bool> {
        self.record_put(OWNER_KEYS, &hash_id(hash), to_vec(key)?, mode)
            .await
    }

    /// Replaces an owner key's record found by [`owner_keys`](Self::owner_keys).
    async fn update_owner_key(&self, hash_hex: &str, key: &OwnerKey) -> Result<()> {
        self.record_put(OWNER_KEYS, hash_hex, to_vec(key)?, PutMode::Replace)
            .await
            .map(|_| ())
    }

    /// The owner key a hash belongs to.
    async fn owner_key_by_hash(&self, hash: &KeyHash) -> Result<Option<OwnerKey>> {
        match self.record_get(OWNER_KEYS, &hash_id(hash)).await? {
            Some(b) => from_slice(&b).map(Some),
            None => Ok(None),
        }
    }

    /// The owner keys of a tenant, with the hex of their hash, oldest first. Reads every
    /// owner key (a few per tenant; an index per tenant comes when it matters).
    async fn owner_keys(&self, tenant: &str) -> Result<Vec<(String, OwnerKey)>> {
        let mut keys: Vec<(String, OwnerKey)> = scan(self, OWNER_KEYS)
            .await?
            .into_iter()
            .filter(|(_, k): &(String, OwnerKey)| k.tenant == tenant)
            .collect();
        keys.sort_by(|a, b| (a.1.created_at, &a.1.id).cmp(&(b.1.created_at, &b.1.id)));
        Ok(keys)
    }

    /// Stores an invite code's record under its hash.
    async fn put_invite(&self, hash: &KeyHash, invite: &Invite) -> Result<()> {
        self.record_put(INVITES, &hash_id(hash), to_vec(invite)?, PutMode::Create)
            .await
            .map(|_| ())
    }

    /// Consumes an invite code of `tenant` valid at `now`: `Some` once, to one caller alone;
    /// `None` for an unknown, used, expired or other tenant's code (which is left alone).
    async fn take_invite(
        &self,
        hash: &KeyHash,
        tenant: &str,
        now: Millis,
    ) -> Result<Option<Invite>> {
        let id = hash_id(hash);
        let Some(b) = self.record_get(INVITES, &id).await? else {
            return Ok(None);
        };
        let invite: Invite = from_slice(&b)?;
        if invite.tenant != tenant || now >= invite.expires_at {
            return Ok(None);
        }
        Ok(self.record_take(INVITES, &id).await?.then_some(invite))
    }

    /// Appends to the audit log.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        self.record_put(AUDIT, &entry.id, to_vec(entry)?, PutMode::Create)
            .await
            .map(|_| ())
    }

    /// The audit log after the entry `after`, oldest first, at most `limit`.
    async fn audit(&self, after: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>> {
        let rows = self.record_list(AUDIT, after, limit).await?;
        rows.iter().map(|(_, b)| from_slice(b)).collect()
    }
}

impl<T: Records + ?Sized> Operator for T {}

/// Every record of a small collection.
async fn scan<S: Records + ?Sized, T: for<'a> Deserialize<'a>>(
    store: &S,
    collection: &str,
) -> Result<Vec<(String, T)>> {
    const PAGE: usize = 500;
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let rows = store
            .record_list(collection, after.as_deref(), PAGE)
            .await?;
        let n = rows.len();
        for (id, b) in rows {
            let v = from_slice(&b)?;
            after = Some(id.clone());
            out.push((id, v));
        }
        if n < PAGE {
            return Ok(out);
        }
    }
}
