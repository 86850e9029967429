//! [`TenantGate`]: whether a tenant is suspended, as every replica sees it within a second.
//!
//! The operator suspends a tenant by writing its record in the store (any replica's admin
//! API); each process reads a tenant's record at most once per [`TenantGate::TTL`] and
//! answers from memory in between, so a suspension reaches every replica of every service
//! within that bound without a broadcast that could be lost, and a route costs no store read
//! on the hot path (one read per tenant per half second per process).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amp_proto::{ApiError, ErrorCode};
use amp_store::Store;
use amp_store::operator::{Operator as _, TenantRecord};
use parking_lot::Mutex;

/// Cached tenant records; cheap to clone (shared).
#[derive(Clone)]
pub struct TenantGate {
    store: Store,
    cache: Arc<Mutex<Cache>>,
}

/// Each tenant's record (or its absence) and when it was read.
type Cache = HashMap<String, (Instant, Option<TenantRecord>)>;

/// Most tenants remembered; past it the cache starts afresh (a read each per TTL).
const MAX_CACHED: usize = 100_000;

impl TenantGate {
    /// How stale a tenant's record may be: a suspension applies everywhere within it.
    pub const TTL: Duration = Duration::from_millis(500);

    /// A gate over the store's tenant records.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The tenant's record, at most [`Self::TTL`] old; `None`: no record (a tenant that
    /// only exists through its agents, governed by the configuration's defaults).
    ///
    /// Fails when the store cannot be read and nothing fresh is cached.
    pub async fn tenant(&self, name: &str) -> amp_store::Result<Option<TenantRecord>> {
        if let Some((at, rec)) = self.cache.lock().get(name)
            && at.elapsed() < Self::TTL
        {
            return Ok(rec.clone());
        }
        let rec = self.store.tenant(name).await?;
        let mut cache = self.cache.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(name.to_owned(), (Instant::now(), rec.clone()));
        Ok(rec)
    }

    /// Forgets a tenant, so this process sees a change it made at once.
    pub fn forget(&self, name: &str) {
        self.cache.lock().remove(name);
    }

    /// Whether the tenant is suspended (or being deleted) now (at most [`Self::TTL`] ago).
    ///
    /// Fails when the store cannot be read.
    pub async fn is_suspended(&self, name: &str) -> amp_store::Result<bool> {
        Ok(self.tenant(name).await?.is_some_and(|t| t.status.refused()))
    }

    /// `403 agent_suspended` when the caller's tenant is suspended.
    ///
    /// Fails with that error, or the store's (503) when it cannot be read.
    pub async fn check_caller(&self, tenant: &str) -> Result<(), ApiError> {
        match self.is_suspended(tenant).await {
            Ok(false) => Ok(()),
            Ok(true) => Err(suspended(ErrorCode::AgentSuspended, tenant)),
            Err(e) => Err(crate::store_err(e)),
        }
    }

    /// `403 recipient_suspended` when the recipient's tenant is suspended.
    ///
    /// Fails with that error, or the store's (503) when it cannot be read.
    pub async fn check_recipient(&self, tenant: &str) -> Result<(), ApiError> {
        match self.is_suspended(tenant).await {
            Ok(false) => Ok(()),
            Ok(true) => Err(suspended(ErrorCode::RecipientSuspended, tenant)),
            Err(e) => Err(crate::store_err(e)),
        }
    }
}

pub(crate) fn suspended(code: ErrorCode, tenant: &str) -> ApiError {
    let who = if code == ErrorCode::AgentSuspended {
        "this agent's"
    } else {
        "the recipient's"
    };
    ApiError::new(
        code,
        format!("{who} tenant '{tenant}' is suspended by the provider"),
    )
}
