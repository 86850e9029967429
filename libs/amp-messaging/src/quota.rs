//! Tenant plans on the acceptance path: a tenant's quotas are its record's
//! ([`amp_store::operator::PlanLimits`]) over the configuration's default plan
//! (`[ingest.plan]`), read through the [`crate::TenantGate`]'s cache, so resolving them
//! costs no store read. A limit neither sets costs nothing: no limiter is touched.
//!
//! - `messages_per_minute`, `messages_per_day`: two [`shared_limits`](crate::shared_limits)
//!   limiters keyed by tenant (`plan_minute`, `plan_day`), so every ingest and delivery
//!   replica draws on one budget: `429 rate_limited` with `Retry-After`. The day's budget is
//!   the same smooth bucket as the minute's (refilled one message every `86400 s / limit`,
//!   bursts up to the limit), not a calendar day that resets at midnight.
//! - `message_bytes`: `413 request_too_large`.
//! - `federation = false`: a recipient on another provider is `403 forbidden`.
//! - `agents`: checked by registration (ingest), `403 forbidden`.
//! - `stored_bytes` (of the recipient's tenant): `507 storage_quota_exceeded`
//!   ([`check_stored`]), against [`crate::usage::Meter::held`], an estimate kept in memory
//!   and shared through the store every `usage_flush_ms` (its error bound is there).
//! - `connections`: checked when a WebSocket authenticates ([`open_connection`]): this
//!   process's open connections of the tenant, exact, plus the other processes' as they
//!   last reported them to the store (every `usage_flush_ms`): a cluster over-admits by at
//!   most the connections other replicas opened since their last report.
//!
//! The error bound of the shared counts is `amp_runtime::ratelimit`'s: over any stretch of
//! time a tenant gets at most what one process would allow, plus, per other replica, what
//! that replica allowed within one `[nats] limits_sync_ms` (plus the bus's latency) that
//! this one has not heard of yet — at the sustained rate one message per other replica when
//! the sync interval is shorter than `60 s / messages_per_minute`; for a burst on a fresh
//! bucket split across replicas within one interval, up to the limit on each.

use std::sync::Arc;
use std::time::Duration;

use amp_bus::Bus;
use amp_proto::{ApiError, ErrorCode};
use amp_runtime::ratelimit::{RateLimit, RateLimiter};
use amp_store::operator::PlanLimits;
use serde_json::Value;

/// The plan limiters and the default plan; cheap to clone.
#[derive(Clone)]
pub struct Quotas {
    defaults: PlanLimits,
    per_minute: Arc<RateLimiter>,
    per_day: Arc<RateLimiter>,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl Quotas {
    /// The limiters, shared over `bus` with the other replicas, and the default plan.
    ///
    /// Must be called within a tokio runtime when the bus shares limits.
    pub fn new(bus: &Bus, defaults: PlanLimits) -> Self {
        // The limiters' own rates are never used: every check passes the tenant's.
        let placeholder = |window| RateLimit { limit: 1, window };
        Self {
            defaults,
            per_minute: crate::shared_limits::limiter(
                bus,
                "plan_minute",
                placeholder(Duration::from_secs(60)),
            ),
            per_day: crate::shared_limits::limiter(bus, "plan_day", placeholder(DAY)),
        }
    }

    /// The configuration's default plan.
    pub fn defaults(&self) -> &PlanLimits {
        &self.defaults
    }

    /// A tenant's plan: its own limits over the defaults (`None`: a tenant without a record).
    pub fn resolve(&self, own: Option<&PlanLimits>) -> PlanLimits {
        own.map_or(self.defaults, |p| p.over(&self.defaults))
    }

    /// Takes one message from the tenant's minute and day budgets.
    ///
    /// Fails with `429 rate_limited` (`retry_after`, so `Retry-After`) when either is spent.
    /// The day's is checked first: a message it refuses takes nothing from the minute's (one
    /// the minute's refuses has taken one of the day's, a bound of the same kind).
    pub fn take_message(&self, tenant: &str, plan: &PlanLimits) -> Result<(), ApiError> {
        if let Some(limit) = plan.messages_per_day {
            let d = self
                .per_day
                .check_with(tenant, RateLimit { limit, window: DAY });
            if !d.allowed {
                return Err(rate_limited(tenant, "day", limit, d.retry_after_secs));
            }
        }
        if let Some(limit) = plan.messages_per_minute {
            let d = self.per_minute.check_with(
                tenant,
                RateLimit {
                    limit,
                    window: Duration::from_secs(60),
                },
            );
            if !d.allowed {
                return Err(rate_limited(tenant, "minute", limit, d.retry_after_secs));
            }
        }
        Ok(())
    }
}

fn rate_limited(tenant: &str, per: &str, limit: u32, retry_after: u64) -> ApiError {
    metrics::counter!("amp_plan_refusals_total", "quota" => if per == "day" { "messages_per_day" } else { "messages_per_minute" })
        .increment(1);
    let secs = retry_after.max(1);
    ApiError::new(
        ErrorCode::RateLimited,
        format!(
            "tenant '{tenant}' has sent its plan's {limit} messages per {per}; retry in {secs} s"
        ),
    )
    .with_extra("retry_after", Value::from(secs))
}

/// The plan of a sender's tenant, from the one cached read of its record that also refuses a
/// suspended tenant (`403 agent_suspended`).
///
/// Fails with that error, or `503` when the store cannot be read.
pub(crate) async fn caller(acc: &crate::Acceptor, tenant: &str) -> Result<PlanLimits, ApiError> {
    let record = acc.tenants.tenant(tenant).await.map_err(crate::store_err)?;
    match &record {
        Some(r) if r.status.refused() => {
            Err(crate::tenants::suspended(ErrorCode::AgentSuspended, tenant))
        }
        _ => Ok(acc.quotas.resolve(record.as_ref().map(|r| &r.plan))),
    }
}

/// Opens a WebSocket connection of a `tenant`'s agent within its plan's `connections`
/// (counted by the acceptor's meter; close it with [`crate::usage::Meter::closed`]). A
/// tenant whose plan has no such limit is counted, never refused, and costs no store read.
///
/// Fails with `429 rate_limited` at the limit, or `503` when the store cannot be read.
pub async fn open_connection(acc: &crate::Acceptor, tenant: &str) -> Result<(), ApiError> {
    let record = acc.tenants.tenant(tenant).await.map_err(crate::store_err)?;
    let limit = acc
        .quotas
        .resolve(record.as_ref().map(|r| &r.plan))
        .connections
        .map(u64::from);
    let here = match limit {
        None => None,
        Some(l) => {
            let elsewhere = acc
                .meter
                .connections_elsewhere(tenant)
                .await
                .map_err(crate::store_err)?;
            Some(l.saturating_sub(elsewhere))
        }
    };
    if acc.meter.try_open(tenant, here) {
        return Ok(());
    }
    metrics::counter!("amp_plan_refusals_total", "quota" => "connections").increment(1);
    Err(ApiError::new(
        ErrorCode::RateLimited,
        format!(
            "tenant '{tenant}' has its plan's {} WebSocket connections open",
            limit.unwrap_or(0)
        ),
    )
    .with_extra("retry_after", Value::from(60)))
}

/// `507 storage_quota_exceeded` when a message of `bytes` for an agent of
/// `recipient_tenant` would take the bytes its mailboxes hold past its plan's
/// `stored_bytes` (the sender's `sender_plan` when it is the sender's tenant; otherwise read
/// through the tenant gate's cache). The bytes held are this process's estimate
/// ([`crate::usage::Meter::held`]): no store read per message.
///
/// Fails with that error, or `503` when the store cannot be read.
pub(crate) async fn check_stored(
    acc: &crate::Acceptor,
    sender_tenant: &str,
    sender_plan: &PlanLimits,
    recipient_tenant: &str,
    bytes: usize,
) -> Result<(), ApiError> {
    let plan = if recipient_tenant == sender_tenant {
        *sender_plan
    } else {
        let record = acc
            .tenants
            .tenant(recipient_tenant)
            .await
            .map_err(crate::store_err)?;
        acc.quotas.resolve(record.as_ref().map(|r| &r.plan))
    };
    check_held(&acc.meter, &plan, recipient_tenant, bytes).await
}

/// `507 storage_quota_exceeded` when a message of `bytes` would take the bytes `tenant`'s
/// mailboxes hold (as `meter` estimates them) past `plan`'s `stored_bytes`; nothing to do
/// (and nothing read) when the plan sets none. Federation's inbound path checks with it.
///
/// Fails with that error, or `503` when the store cannot be read.
pub async fn check_held(
    meter: &crate::usage::Meter,
    plan: &PlanLimits,
    recipient_tenant: &str,
    bytes: usize,
) -> Result<(), ApiError> {
    let Some(limit) = plan.stored_bytes else {
        return Ok(());
    };
    let held = meter
        .held(recipient_tenant)
        .await
        .map_err(crate::store_err)?;
    if held.saturating_add(bytes as u64) <= limit {
        return Ok(());
    }
    metrics::counter!("amp_plan_refusals_total", "quota" => "stored_bytes").increment(1);
    Err(ApiError::new(
        ErrorCode::StorageQuotaExceeded,
        format!(
            "the recipient's tenant '{recipient_tenant}' holds {held} bytes of messages, its plan's limit is {limit}; the message was not accepted"
        ),
    )
    .with_field("to"))
}

/// `403 forbidden` when the plan does not allow sending to other providers.
///
/// Fails with that error.
pub fn check_federation(plan: &PlanLimits, tenant: &str) -> Result<(), ApiError> {
    if plan.federation == Some(false) {
        metrics::counter!("amp_plan_refusals_total", "quota" => "federation").increment(1);
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("tenant '{tenant}''s plan does not allow messages to other providers"),
        )
        .with_field("to"));
    }
    Ok(())
}

/// `413 request_too_large` when a message of `bytes` is over the plan's `message_bytes`.
///
/// Fails with that error.
pub fn check_size(plan: &PlanLimits, bytes: usize) -> Result<(), ApiError> {
    if let Some(max) = plan.message_bytes
        && bytes as u64 > max
    {
        metrics::counter!("amp_plan_refusals_total", "quota" => "message_bytes").increment(1);
        return Err(ApiError::new(
            ErrorCode::RequestTooLarge,
            format!("the message is {bytes} bytes; this tenant's plan allows {max}"),
        ));
    }
    Ok(())
}

/// `403 forbidden` when a tenant with `agents` active agents may register no more.
///
/// Fails with that error.
pub fn check_agents(plan: &PlanLimits, tenant: &str, agents: u64) -> Result<(), ApiError> {
    if let Some(max) = plan.agents
        && agents >= max
    {
        metrics::counter!("amp_plan_refusals_total", "quota" => "agents").increment(1);
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("tenant '{tenant}' has its plan's {max} agents; no more can register"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn operator_plan_overrides_the_defaults_and_limits_per_tenant() {
        let bus = Bus::in_process(amp_bus::InProcessConfig::default());
        let q = Quotas::new(
            &bus,
            PlanLimits {
                messages_per_minute: Some(2),
                federation: Some(false),
                ..Default::default()
            },
        );
        let own = PlanLimits {
            messages_per_minute: Some(3),
            ..Default::default()
        };
        let plan = q.resolve(Some(&own));
        assert_eq!(plan.messages_per_minute, Some(3));
        assert_eq!(plan.federation, Some(false), "inherited");
        for _ in 0..3 {
            q.take_message("a", &plan).expect("within the plan");
        }
        let e = q.take_message("a", &plan).expect_err("the fourth");
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert!(e.extra["retry_after"].as_u64().is_some_and(|s| s >= 1));
        q.take_message("b", &plan).expect("another tenant's budget");
        assert!(check_federation(&plan, "a").is_err());
        assert!(check_size(&PlanLimits::default(), 1 << 30).is_ok());
        let small = PlanLimits {
            message_bytes: Some(10),
            agents: Some(1),
            ..Default::default()
        };
        assert_eq!(
            check_size(&small, 11).map_err(|e| e.code),
            Err(ErrorCode::RequestTooLarge)
        );
        assert!(check_agents(&small, "a", 0).is_ok());
        assert!(check_agents(&small, "a", 1).is_err());
        bus.shutdown().await;
    }
}
