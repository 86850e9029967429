//! Notifications to a tenant's admins (spec-next 07 "Risk Scoring": "notify tenant admins
//! when an agent's risk level changes"; the `medium` level's "log + webhook notification to
//! tenant admin"; `high`'s "temporary suspension, notify admin").
//!
//! A tenant admin sets a notification webhook on the tenant (admin API,
//! `PUT /admin/v1/tenants/{name}/notify`). Each event about one of its agents is scheduled
//! here as a durable `tenant_notify` job ([`TenantNotifyJob`]) that delivery POSTs with the
//! webhooks' retries, signed with the tenant's secret. The operator plane's audit log keeps
//! every event as well, webhook or not. A tenant without a webhook costs one read of its
//! record per event (events are rare: a level change, a suspension).

use amp_proto::relay::TenantNotifyJob;
use amp_store::Store;
use amp_store::operator::Operator as _;
use serde_json::{Value, json};

/// An event's subject: the agent it is about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The agent's id.
    pub id: &'a str,
    /// The agent's address.
    pub address: &'a str,
}

/// A new event id: `evt_` and 32 hex digits.
fn event_id() -> String {
    format!("evt_{}", hex::encode(rand::random::<[u8; 16]>()))
}

/// The body POSTed for an event: `event`, `event_id`, `tenant`, `agent` (`id`, `address`;
/// absent for a tenant-wide event), `occurred_at` (RFC 3339) and the event's `data`.
fn body(
    event: &str,
    event_id: &str,
    tenant: &str,
    agent: Option<Subject<'_>>,
    data: Value,
    now: i64,
) -> String {
    let mut v = json!({
        "event": event,
        "event_id": event_id,
        "tenant": tenant,
        "occurred_at": crate::render::rfc3339(now),
        "data": data,
    });
    if let Some(a) = agent {
        v["agent"] = json!({ "id": a.id, "address": a.address });
    }
    v.to_string()
}

/// Schedules `event` for `tenant`'s notification webhook, if it has one; returns whether a
/// job was written.
///
/// Fails when the tenant cannot be read or the job not written; the caller logs it (the
/// audit log has the event either way).
pub async fn notify(
    store: &Store,
    tenant: &str,
    event: &str,
    agent: Option<Subject<'_>>,
    data: Value,
    now: i64,
) -> amp_store::Result<bool> {
    let Some(record) = store.tenant(tenant).await? else {
        return Ok(false);
    };
    if record.notify.is_none() {
        return Ok(false);
    }
    schedule(store, tenant, event, agent, data, now).await?;
    Ok(true)
}

/// Writes the job of one event for `tenant`'s webhook, due now, without reading the tenant
/// (the caller knows it has a webhook; one removed since is seen by delivery, which drops
/// the job); returns the event's id.
///
/// Fails when the job is not written.
pub async fn schedule(
    store: &Store,
    tenant: &str,
    event: &str,
    agent: Option<Subject<'_>>,
    data: Value,
    now: i64,
) -> amp_store::Result<String> {
    let id = event_id();
    let job = TenantNotifyJob {
        tenant: tenant.to_owned(),
        body: body(event, &id, tenant, agent, data, now),
        event: event.to_owned(),
        event_id: id.clone(),
    };
    let data = serde_json::to_string(&job)
        .map_err(|e| amp_store::Error::Corrupt(format!("tenant notification: {e}")))?;
    store
        .schedule(amp_store::Job {
            id: TenantNotifyJob::job_id(&id),
            kind: TenantNotifyJob::KIND.to_owned(),
            due_at: now,
            attempt: 0,
            data,
        })
        .await?;
    metrics::counter!("amp_tenant_notifications_total", "event" => event.to_owned()).increment(1);
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_names_the_event_the_tenant_and_the_agent() {
        let v: Value = serde_json::from_str(&body(
            "agent.risk_level",
            "evt_1",
            "acme",
            Some(Subject {
                id: "agt_1",
                address: "mal@acme.example",
            }),
            json!({"from": "low", "to": "medium"}),
            0,
        ))
        .expect("json");
        assert_eq!(
            v,
            json!({
                "event": "agent.risk_level",
                "event_id": "evt_1",
                "tenant": "acme",
                "occurred_at": "1970-01-01T00:00:00.000Z",
                "data": {"from": "low", "to": "medium"},
                "agent": {"id": "agt_1", "address": "mal@acme.example"},
            })
        );
        let id = event_id();
        assert!(id.starts_with("evt_") && id.len() == 36, "{id}");
        assert_ne!(id, event_id());
    }
}
