//! Usage metering's records, typed over [`Records`] like [`crate::operator`]: one row per
//! (tenant, period, period start, replica), holding what that replica counted in that
//! period. Replicas never write each other's rows, so no backend needs an atomic increment:
//! a replica replaces its own row with its running totals, and a read sums the replicas'
//! rows of each period ([`Usage::usage`]).
//!
//! Each tenant's rows are a collection of their own (`usage.<tenant>`, ids `<h or d>|<period
//! start, unix ms, 15 digits>|<replica>`: bytewise order is period kind, then time), so a
//! tenant's range is one listing that reads nothing of other tenants' rows, on every
//! backend (the JetStream one scans a collection's keys). The tenants that have rows are
//! listed in [`USAGE_TENANTS`], written once per tenant per process
//! ([`Usage::note_usage_tenant`]), for the every-tenant export. Rows past their retention
//! ([`UsageRetention`]) are deleted by [`Usage::expire_usage`], a sweep every backend runs
//! the same way through [`Records`].

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Error, Millis, PutMode, Records, Result};

/// The collection of a tenant's usage rows.
pub fn usage_collection(tenant: &str) -> String {
    format!("usage.{tenant}")
}

/// The collection of a tenant's open WebSocket connections, one record per replica.
pub fn connections_collection(tenant: &str) -> String {
    format!("connections.{tenant}")
}

/// A replica's open connections of one tenant, as it last reported them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct ConnectionsReport {
    /// Open now.
    n: u64,
    /// When reported, unix ms.
    at: Millis,
}

/// The collection of a tenant's held-bytes ledgers, one record per replica
/// ([`HeldLedger`]).
pub fn held_collection(tenant: &str) -> String {
    format!("held.{tenant}")
}

/// Width of a held-bytes bucket: a message counts in the bucket that ends at the first
/// multiple of this at or after its expiry, so it is counted at most this long after it
/// expired.
pub const HELD_BUCKET_MS: Millis = HOUR_MS;

/// The end of the held-bytes bucket of a message expiring at `expires_at`.
pub fn held_bucket(expires_at: Millis) -> Millis {
    expires_at.div_euclid(HELD_BUCKET_MS) * HELD_BUCKET_MS
        + if expires_at.rem_euclid(HELD_BUCKET_MS) == 0 {
            0
        } else {
            HELD_BUCKET_MS
        }
}

/// What one replica added to and removed from a tenant's mailboxes since it started, by
/// the end of the bucket of the messages' expiry: bytes written (router) less bytes
/// acknowledged or deleted (ingest, delivery). Replicas' ledgers add up; a bucket that ended
/// counts for nothing (its messages expired), so expiry needs no event. A net may be
/// negative (a replica that only acknowledges).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldLedger {
    /// When written, unix ms.
    pub at: Millis,
    /// `(bucket end, net bytes)`, by bucket.
    pub buckets: Vec<(Millis, i64)>,
}

/// Collection of the tenants that have usage rows, by name (empty values).
pub const USAGE_TENANTS: &str = "usage_tenants";

/// One hour, in ms.
pub const HOUR_MS: Millis = 3_600_000;
/// One day, in ms.
pub const DAY_MS: Millis = 24 * HOUR_MS;

/// The granularity of a usage row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// An hour (UTC).
    Hour,
    /// A day (UTC).
    Day,
}

impl Period {
    /// Both, in the order rows are written.
    pub const ALL: [Period; 2] = [Period::Hour, Period::Day];

    /// Its length in ms.
    pub fn millis(self) -> Millis {
        match self {
            Period::Hour => HOUR_MS,
            Period::Day => DAY_MS,
        }
    }

    /// The start of the period holding `at`.
    pub fn start_of(self, at: Millis) -> Millis {
        at.div_euclid(self.millis()) * self.millis()
    }

    /// `hour` or `day`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
        }
    }

    /// Parses `hour` or `day`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hour" => Some(Period::Hour),
            "day" => Some(Period::Day),
            _ => None,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Period::Hour => "h",
            Period::Day => "d",
        }
    }
}

/// What was counted for a tenant in one period. Counters (`messages_*`, `federated_*`,
/// `bytes_stored`) add up across replicas; `connections` is each replica's peak, summed;
/// `agents` and `bytes_held` describe the whole tenant, so the largest replica's sample is
/// kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UsageCounts {
    /// Messages the tenant's agents sent (accepted by the provider).
    pub messages_in: u64,
    /// Messages written to the tenant's agents' mailboxes.
    pub messages_out: u64,
    /// Messages from other providers to the tenant's agents.
    pub federated_in: u64,
    /// Messages the tenant's agents sent to other providers.
    pub federated_out: u64,
    /// Bytes of messages written to the tenant's mailboxes in the period.
    pub bytes_stored: u64,
    /// Active agents (sampled).
    pub agents: u64,
    /// Peak WebSocket connections.
    pub connections: u64,
    /// Bytes the tenant's mailboxes held (sampled: the largest sample of the period; the
    /// level plans' `stored_bytes` limits).
    pub bytes_held: u64,
}

impl UsageCounts {
    /// Adds another replica's row of the same period.
    pub fn merge(&mut self, other: &UsageCounts) {
        self.messages_in += other.messages_in;
        self.messages_out += other.messages_out;
        self.federated_in += other.federated_in;
        self.federated_out += other.federated_out;
        self.bytes_stored += other.bytes_stored;
        self.connections += other.connections;
        self.agents = self.agents.max(other.agents);
        self.bytes_held = self.bytes_held.max(other.bytes_held);
    }
}

/// A tenant's usage in one period, all replicas together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The tenant.
    pub tenant: String,
    /// The period's start, unix ms.
    pub start: Millis,
    /// The counts.
    pub counts: UsageCounts,
}

/// How long usage rows are kept, per period: a row whose period started more than this
/// long ago is deleted by [`Usage::expire_usage`]. `None`: kept for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRetention {
    /// Hourly rows.
    pub hourly: Option<Millis>,
    /// Daily rows.
    pub daily: Option<Millis>,
}

impl UsageRetention {
    /// From days (0: kept for good).
    pub fn days(hourly: u32, daily: u32) -> Self {
        let ms = |d: u32| (d > 0).then(|| Millis::from(d) * DAY_MS);
        Self {
            hourly: ms(hourly),
            daily: ms(daily),
        }
    }

    fn of(&self, period: Period) -> Option<Millis> {
        match period {
            Period::Hour => self.hourly,
            Period::Day => self.daily,
        }
    }
}

fn row_id(period: Period, start: Millis, replica: &str) -> String {
    format!("{}|{:015}|{replica}", period.tag(), start.max(0))
}

/// Replaces `key` of `collection` with `value` as JSON, or removes it when there is none.
async fn replace_or_take<R: Records + ?Sized, V: Serialize + Sync>(
    records: &R,
    collection: &str,
    key: &str,
    value: Option<&V>,
) -> Result<()> {
    match value {
        None => records.record_take(collection, key).await.map(|_| ()),
        Some(v) => {
            let value = serde_json::to_vec(v).map_err(|e| Error::Corrupt(e.to_string()))?;
            records
                .record_put(collection, key, value, PutMode::Replace)
                .await
                .map(|_| ())
        }
    }
}

/// Usage rows with their types, over any [`Records`].
#[async_trait]
pub trait Usage: Records {
    /// Lists `tenant` among those with usage rows (idempotent; once per process is enough).
    async fn note_usage_tenant(&self, tenant: &str) -> Result<()> {
        self.record_put(USAGE_TENANTS, tenant, b"{}".to_vec(), PutMode::Replace)
            .await
            .map(|_| ())
    }

    /// Reports `replica`'s `open` WebSocket connections of `tenant` at `at`; none open
    /// removes its report (nothing of a tenant without sockets stays behind).
    async fn put_connections(
        &self,
        tenant: &str,
        replica: &str,
        open: u64,
        at: Millis,
    ) -> Result<()> {
        let report = (open > 0).then_some(ConnectionsReport { n: open, at });
        replace_or_take(
            self,
            &connections_collection(tenant),
            replica,
            report.as_ref(),
        )
        .await
    }

    /// The open connections of `tenant` the replicas other than `except` reported at or
    /// after `since` (a replica that stopped reporting counts for nothing after that).
    async fn connections_elsewhere(
        &self,
        tenant: &str,
        except: &str,
        since: Millis,
    ) -> Result<u64> {
        let rows = self
            .record_list(&connections_collection(tenant), None, 1000)
            .await?;
        let mut sum = 0;
        for (replica, value) in rows {
            let r: ConnectionsReport =
                serde_json::from_slice(&value).map_err(|e| Error::Corrupt(e.to_string()))?;
            if replica != except && r.at >= since {
                sum += r.n;
            }
        }
        Ok(sum)
    }

    /// Writes `replica`'s held-bytes ledger of `tenant` (replacing its previous one); an
    /// empty ledger removes it.
    async fn put_held(&self, tenant: &str, replica: &str, ledger: &HeldLedger) -> Result<()> {
        let ledger = (!ledger.buckets.is_empty()).then_some(ledger);
        replace_or_take(self, &held_collection(tenant), replica, ledger).await
    }

    /// The held-bytes ledgers of `tenant` of the replicas other than `except`, summed per
    /// bucket, keeping the buckets that end after `now`. A ledger with none left (a stopped
    /// replica's, all expired) is deleted on the way.
    async fn held_elsewhere(
        &self,
        tenant: &str,
        except: &str,
        now: Millis,
    ) -> Result<std::collections::BTreeMap<Millis, i64>> {
        let collection = held_collection(tenant);
        let mut sum = std::collections::BTreeMap::new();
        let mut after: Option<String> = None;
        loop {
            let rows = self
                .record_list(&collection, after.as_deref(), 1000)
                .await?;
            let n = rows.len();
            for (replica, value) in rows {
                let ledger: HeldLedger =
                    serde_json::from_slice(&value).map_err(|e| Error::Corrupt(e.to_string()))?;
                let live: Vec<_> = ledger.buckets.iter().filter(|(b, _)| *b > now).collect();
                if live.is_empty() {
                    self.record_take(&collection, &replica).await?;
                } else if replica != except {
                    for (b, net) in live {
                        *sum.entry(*b).or_insert(0) += net;
                    }
                }
                after = Some(replica);
            }
            if n < 1000 {
                return Ok(sum);
            }
        }
    }

    /// Writes `replica`'s counts of `tenant` for the period starting at `start` (its running
    /// totals for that period: each write replaces the previous one).
    async fn put_usage(
        &self,
        tenant: &str,
        period: Period,
        start: Millis,
        replica: &str,
        counts: &UsageCounts,
    ) -> Result<()> {
        let value = serde_json::to_vec(counts).map_err(|e| Error::Corrupt(e.to_string()))?;
        self.record_put(
            &usage_collection(tenant),
            &row_id(period, start, replica),
            value,
            PutMode::Replace,
        )
        .await
        .map(|_| ())
    }

    /// The usage of `tenant` (every tenant listed by [`note_usage_tenant`]
    /// (Self::note_usage_tenant) when `None`, by name) per `period` starting in `[from, to)`,
    /// replicas summed, by tenant then time. Periods without a row are absent.
    async fn usage(
        &self,
        tenant: Option<&str>,
        period: Period,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<UsageRow>> {
        const PAGE: usize = 500;
        let Some(tenant) = tenant else {
            let mut out = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let names = self
                    .record_list(USAGE_TENANTS, after.as_deref(), PAGE)
                    .await?;
                let n = names.len();
                for (name, _) in names {
                    out.extend(self.usage(Some(&name), period, from, to).await?);
                    after = Some(name);
                }
                if n < PAGE {
                    return Ok(out);
                }
            }
        };
        let collection = usage_collection(tenant);
        let mut out: Vec<UsageRow> = Vec::new();
        let mut after = format!("{}|{:015}", period.tag(), from.max(0));
        'list: loop {
            let rows = self.record_list(&collection, Some(&after), PAGE).await?;
            let n = rows.len();
            for (id, value) in rows {
                let corrupt = || Error::Corrupt(format!("usage row id '{id}'"));
                let mut parts = id.splitn(3, '|');
                let (Some(tag), Some(start), Some(_replica)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(corrupt());
                };
                let start: Millis = start.parse().map_err(|_| corrupt())?;
                if tag != period.tag() || start >= to {
                    break 'list;
                }
                let counts: UsageCounts =
                    serde_json::from_slice(&value).map_err(|e| Error::Corrupt(e.to_string()))?;
                match out.last_mut() {
                    Some(last) if last.start == start => last.counts.merge(&counts),
                    _ => out.push(UsageRow {
                        tenant: tenant.to_owned(),
                        start,
                        counts,
                    }),
                }
                after = id;
            }
            if n < PAGE {
                break;
            }
        }
        Ok(out)
    }

    /// Deletes the usage rows of `tenant` whose period started before `now` less the
    /// period's retention; returns how many. Reads only those rows (they lead the tenant's
    /// collection for each period).
    ///
    /// Fails when the store fails (what was deleted stays deleted; a later call goes on).
    async fn expire_usage_of(
        &self,
        tenant: &str,
        now: Millis,
        retention: UsageRetention,
    ) -> Result<u64> {
        const PAGE: usize = 500;
        let collection = usage_collection(tenant);
        let mut removed = 0;
        for period in Period::ALL {
            let Some(keep) = retention.of(period) else {
                continue;
            };
            let cutoff = now.saturating_sub(keep);
            // Ids of a period are `<tag>|…`: the first is after `<tag>|` (`|` < digits).
            let mut after = format!("{}|", period.tag());
            'list: loop {
                let rows = self.record_list(&collection, Some(&after), PAGE).await?;
                let n = rows.len();
                for (id, _) in rows {
                    let mut parts = id.splitn(3, '|');
                    let (Some(tag), Some(start)) = (parts.next(), parts.next()) else {
                        return Err(Error::Corrupt(format!("usage row id '{id}'")));
                    };
                    let start: Millis = start
                        .parse()
                        .map_err(|_| Error::Corrupt(format!("usage row id '{id}'")))?;
                    if tag != period.tag() || start >= cutoff {
                        break 'list;
                    }
                    if self.record_take(&collection, &id).await? {
                        removed += 1;
                    }
                    after = id;
                }
                if n < PAGE {
                    break;
                }
            }
        }
        Ok(removed)
    }

    /// [`expire_usage_of`](Self::expire_usage_of) for every tenant with usage rows; returns
    /// how many rows went. Tenants stay listed (a name each; a tenant's rows may come back).
    ///
    /// Fails when the store fails (a later call goes on where it stopped).
    async fn expire_usage(&self, now: Millis, retention: UsageRetention) -> Result<u64> {
        const PAGE: usize = 500;
        if retention.hourly.is_none() && retention.daily.is_none() {
            return Ok(0);
        }
        let mut removed = 0;
        let mut after: Option<String> = None;
        loop {
            let names = self
                .record_list(USAGE_TENANTS, after.as_deref(), PAGE)
                .await?;
            let n = names.len();
            for (name, _) in names {
                removed += self.expire_usage_of(&name, now, retention).await?;
                after = Some(name);
            }
            if n < PAGE {
                return Ok(removed);
            }
        }
    }
}

impl<T: Records + ?Sized> Usage for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_usage_periods_start_on_utc_boundaries() {
        let t = 1_796_554_800_000 + 1234; // 2026-12-06T11:00:01.234Z
        assert_eq!(Period::Hour.start_of(t), 1_796_554_800_000);
        assert_eq!(Period::Day.start_of(t), 1_796_515_200_000);
        assert_eq!(Period::parse("day"), Some(Period::Day));
        assert_eq!(Period::parse("week"), None);
    }

    #[test]
    fn operator_usage_merge_sums_counters_and_keeps_the_largest_sample() {
        let mut a = UsageCounts {
            messages_in: 2,
            agents: 5,
            connections: 1,
            ..Default::default()
        };
        a.merge(&UsageCounts {
            messages_in: 3,
            agents: 4,
            connections: 2,
            ..Default::default()
        });
        assert_eq!((a.messages_in, a.agents, a.connections), (5, 5, 3));
    }
}
