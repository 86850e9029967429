//! Usage per tenant, per hour or day (`amp_store::usage`: every replica's rows summed):
//! `GET /admin/v1/tenants/{name}/usage` (JSON), `…/usage.csv`, and `GET /admin/v1/usage.csv`
//! (every tenant with usage in the range), for billing.
//!
//! `?period=hour|day` (default `hour`), `from` and `to` (RFC 3339; default the last 24 hours
//! up to now). Rows are every period whose start is in `[from, to)` (`from` rounded down to
//! its period), in time order, periods without traffic as zeros; at most
//! [`MAX_ROWS`] periods, more is `400 invalid_field`.

use std::fmt::Write as _;
use std::sync::Arc;

use amp_proto::{ApiError, Timestamp};
use amp_runtime::{ApiPath, ApiQuery, ApiResult};
use amp_store::Millis;
use amp_store::usage::{DAY_MS, Period, Usage as _, UsageCounts, UsageRow};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::tenant_name;
use crate::routes::store_error;
use crate::state::Inner;

/// Most periods one answer covers (31 days of hours; a year and a day of days).
pub(crate) const MAX_ROWS: i64 = 31 * 24;
const MAX_DAYS: i64 = 366;

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct UsageQuery {
    /// `hour` (default) or `day`; empty is the default.
    #[param(schema_with = super::openapi::period_or_empty)]
    period: Option<String>,
    /// The first period's start, RFC 3339, rounded down to its period (default, or empty:
    /// `to` less 24 hours).
    #[param(schema_with = super::openapi::time_or_empty)]
    from: Option<String>,
    /// The end, RFC 3339, excluded (default, or empty: now). At most 744 hours or 366 days
    /// from `from`.
    #[param(schema_with = super::openapi::time_or_empty)]
    to: Option<String>,
}

/// The checked query: period and `[from, to)`, `from` on a period boundary.
struct Range {
    period: Period,
    from: Millis,
    to: Millis,
}

fn range(q: &UsageQuery) -> ApiResult<Range> {
    let period = match q.period.as_deref() {
        None | Some("") => Period::Hour,
        Some(p) => Period::parse(p)
            .ok_or_else(|| ApiError::invalid("period", "period must be 'hour' or 'day'"))?,
    };
    let time = |field: &'static str, v: &Option<String>| -> ApiResult<Option<Millis>> {
        match v.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => Timestamp::parse(s)
                .map(|t| Some(t.unix_millis()))
                .ok_or_else(|| {
                    ApiError::invalid(field, format!("{field} must be an RFC 3339 timestamp"))
                        .into()
                }),
        }
    };
    let to = time("to", &q.to)?.unwrap_or_else(Inner::now_ms);
    let from = period.start_of(time("from", &q.from)?.unwrap_or(to - DAY_MS));
    if to <= from {
        return Err(ApiError::invalid("to", "to must be after from").into());
    }
    let max = match period {
        Period::Hour => MAX_ROWS,
        Period::Day => MAX_DAYS,
    };
    if (to - from + period.millis() - 1) / period.millis() > max {
        return Err(ApiError::invalid(
            "to",
            format!(
                "at most {max} {}s per request; narrow from/to",
                period.as_str()
            ),
        )
        .into());
    }
    Ok(Range { period, from, to })
}

/// Every period of the range for `tenant`, zeros where no row is.
fn filled(tenant: &str, r: &Range, rows: &[UsageRow]) -> Vec<(Millis, UsageCounts)> {
    let mut rows = rows.iter().filter(|row| row.tenant == tenant).peekable();
    let mut out = Vec::new();
    let mut start = r.from;
    while start < r.to {
        let counts = match rows.peek() {
            Some(row) if row.start == start => rows.next().map(|row| row.counts),
            _ => None,
        };
        out.push((start, counts.unwrap_or_default()));
        start += r.period.millis();
    }
    out
}

fn start_text(ms: Millis) -> String {
    Timestamp::from_unix_millis(ms)
        .map(|t| t.to_rfc3339().replace(".000Z", "Z"))
        .unwrap_or_default()
}

async fn load(inner: &Inner, tenant: Option<&str>, r: &Range) -> ApiResult<Vec<UsageRow>> {
    inner
        .store
        .usage(tenant, r.period, r.from, r.to)
        .await
        .map_err(store_error)
}

#[utoipa::path(get, path = "/admin/v1/tenants/{name}/usage", tag = "usage", operation_id = "tenant_usage",
    description = "The tenant's usage per period in `[from, to)`, periods without traffic as zeros.",
    params(super::openapi::TenantName, UsageQuery),
    security(("operator_token" = ["read"])),
    responses((status = 200, description = "One row per period, in time order", body = super::openapi::UsageDoc)))]
pub(super) async fn tenant_json(
    State(inner): State<Arc<Inner>>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Response> {
    let name = tenant_name(&name, "name")?;
    let r = range(&q)?;
    let rows = load(&inner, Some(&name), &r).await?;
    let rows: Vec<_> = filled(&name, &r, &rows)
        .into_iter()
        .map(|(start, c)| {
            json!({
                "start": start_text(start),
                "messages_in": c.messages_in,
                "messages_out": c.messages_out,
                "federated_in": c.federated_in,
                "federated_out": c.federated_out,
                "bytes_stored": c.bytes_stored,
                "agents": c.agents,
                "connections": c.connections,
                "bytes_held": c.bytes_held,
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "tenant": name,
        "period": r.period.as_str(),
        "rows": rows,
    }))
    .into_response())
}

#[utoipa::path(get, path = "/admin/v1/tenants/{name}/usage.csv", tag = "usage", operation_id = "tenant_usage_csv",
    description = "The tenant's usage as CSV, one line per period (header: `tenant,period,start,messages_in,messages_out,federated_in,federated_out,bytes_stored,agents,connections,bytes_held`).",
    params(super::openapi::TenantName, UsageQuery),
    security(("operator_token" = ["read"])),
    responses((status = 200, description = "CSV", content_type = "text/csv; charset=utf-8", body = String)))]
pub(super) async fn tenant_csv(
    State(inner): State<Arc<Inner>>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Response> {
    let name = tenant_name(&name, "name")?;
    let r = range(&q)?;
    let rows = load(&inner, Some(&name), &r).await?;
    Ok(csv(&r, &[name], &rows))
}

#[utoipa::path(get, path = "/admin/v1/usage.csv", tag = "usage", operation_id = "usage_csv",
    description = "Every tenant's usage with traffic in the range, as CSV (the header of the tenant's).",
    params(UsageQuery),
    security(("operator_token" = ["read"])),
    responses((status = 200, description = "CSV", content_type = "text/csv; charset=utf-8", body = String)))]
pub(super) async fn all_csv(
    State(inner): State<Arc<Inner>>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> ApiResult<Response> {
    let r = range(&q)?;
    let rows = load(&inner, None, &r).await?;
    let mut tenants: Vec<String> = rows.iter().map(|row| row.tenant.clone()).collect();
    tenants.dedup();
    Ok(csv(&r, &tenants, &rows))
}

/// The CSV header line.
pub(crate) const CSV_HEADER: &str = "tenant,period,start,messages_in,messages_out,federated_in,federated_out,bytes_stored,agents,connections,bytes_held";

/// One line per tenant per period. Tenant names are DNS labels and times RFC 3339: nothing
/// needs quoting.
fn csv(r: &Range, tenants: &[String], rows: &[UsageRow]) -> Response {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for t in tenants {
        for (start, c) in filled(t, r, rows) {
            let _ = writeln!(
                out,
                "{t},{},{},{},{},{},{},{},{},{},{}",
                r.period.as_str(),
                start_text(start),
                c.messages_in,
                c.messages_out,
                c.federated_in,
                c.federated_out,
                c.bytes_stored,
                c.agents,
                c.connections,
                c.bytes_held
            );
        }
    }
    ([(CONTENT_TYPE, "text/csv; charset=utf-8")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(period: Option<&str>, from: Option<&str>, to: Option<&str>) -> UsageQuery {
        UsageQuery {
            period: period.map(str::to_owned),
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
        }
    }

    #[test]
    fn operator_usage_ranges_are_checked_and_rounded() {
        let r = range(&q(
            Some("hour"),
            Some("2026-12-06T10:30:00Z"),
            Some("2026-12-06T12:00:00Z"),
        ))
        .expect("valid");
        assert_eq!(start_text(r.from), "2026-12-06T10:00:00Z");
        assert_eq!(filled("a", &r, &[]).len(), 2);
        assert!(range(&q(Some("week"), None, None)).is_err());
        assert!(range(&q(None, Some("yesterday"), None)).is_err());
        assert!(
            range(&q(
                None,
                Some("2026-12-06T12:00:00Z"),
                Some("2026-12-06T11:00:00Z")
            ))
            .is_err()
        );
        assert!(
            range(&q(
                Some("hour"),
                Some("2026-01-01T00:00:00Z"),
                Some("2026-12-06T00:00:00Z")
            ))
            .is_err(),
            "too many hours"
        );
        assert!(
            range(&q(
                Some("day"),
                Some("2026-01-01T00:00:00Z"),
                Some("2026-12-06T00:00:00Z")
            ))
            .is_ok()
        );
    }
}
