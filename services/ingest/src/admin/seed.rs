//! The bootstrap import, at start: the configured owners (`[[ingest.owners]]`) and the
//! bootstrap operator token go into the store if absent. Never overwrites what the admin
//! API changed since (a revoked key or token stays revoked); a configured owner marked
//! `suspended` revokes its key (the safe direction).

use amp_runtime::config::Secret;
use amp_store::operator::{
    AuditEntry, Operator as _, OperatorToken, OwnerKey, TenantRecord, TenantRegistration,
    TenantStatus, TokenScope,
};
use amp_store::{PutMode, Store, operator::hash_id};

use super::TOKEN_PREFIX;
use super::owner_keys::prefix_of;
use crate::StartError;
use crate::auth::hash_key;
use crate::config::Config;

/// Imports the seed.
///
/// Fails when the store cannot be written, the bootstrap token file cannot be read, or the
/// bootstrap token is malformed.
pub(crate) async fn import(
    config: &Config,
    pepper: &[u8],
    store: &Store,
) -> Result<(), StartError> {
    let now = amp_proto::Timestamp::now().unix_millis();
    for o in &config.owners {
        let tenant = o.tenant.to_ascii_lowercase();
        let created = store
            .create_tenant(&TenantRecord {
                name: tenant.clone(),
                status: TenantStatus::Active,
                registration: TenantRegistration::OwnerKey,
                suspended_reason: None,
                notify: None,
                plan: Default::default(),
                created_at: now,
                updated_at: now,
            })
            .await?;
        let hash = hash_key(pepper, o.user_key.expose());
        let key = OwnerKey {
            id: format!("ok_{}", &hash_id(&hash)[..16]),
            tenant: tenant.clone(),
            owner_id: o.id.clone(),
            prefix: prefix_of(o.user_key.expose()),
            agent_limit: Some(o.agent_limit),
            created_at: now,
            expires_at: None,
            revoked_at: o.suspended.then_some(now),
            replaced_by: None,
        };
        let imported = store.put_owner_key(&hash, &key, PutMode::Create).await?;
        if !imported
            && o.suspended
            && let Some(mut stored) = store.owner_key_by_hash(&hash).await?
            && stored.revoked_at.is_none()
        {
            stored.revoked_at = Some(now);
            store.update_owner_key(&hash_id(&hash), &stored).await?;
        }
        if created || imported {
            let e = AuditEntry::new(now, "bootstrap", "owner_key.import", &tenant);
            store.append_audit(&e).await?;
            tracing::info!(tenant = %tenant, key = %key.id, "owner key imported from the configuration");
        }
    }
    let admin = &config.admin;
    let token = Secret::resolve(
        admin.bootstrap_token.clone(),
        admin.bootstrap_token_file.as_deref(),
    )
    .map_err(|e| StartError::Config(e.to_string()))?;
    if let Some(token) = token {
        let t = token.expose();
        if !t.starts_with(TOKEN_PREFIX) || t.len() < TOKEN_PREFIX.len() + 32 {
            return Err(StartError::Config(format!(
                "ingest.admin.bootstrap_token must start with {TOKEN_PREFIX} and carry at least 32 characters after it"
            )));
        }
        let hash = hash_key(pepper, t);
        let record = OperatorToken {
            id: format!("opt_{}", &hash_id(&hash)[..16]),
            name: "bootstrap".into(),
            scope: TokenScope::Full,
            tenant: None,
            created_at: now,
            revoked_at: None,
        };
        if store.put_token(&hash, &record, PutMode::Create).await? {
            let e = AuditEntry::new(now, "bootstrap", "token.import", &record.id);
            store.append_audit(&e).await?;
            tracing::info!(token = %record.id, "bootstrap operator token imported");
        }
    }
    Ok(())
}
