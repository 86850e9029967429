//! The cluster topology with real processes: `cargo test -p cluster-tests`.
//! `cargo test --workspace chaos` runs the chaos tests alone; `… federation` the federation one;
//! `… parity` the parity suite (`ampd` and the cluster behind nginx, the same checks);
//! `… security` the NATS login and Helm chart tests (`security_chart_*` need `helm`;
//! `security_chart_bundled_nats_*` also run the chart's NATS config on a real nats-server);
//! `… operator` the operator plane across ingest replicas, and the chart's alert rules and
//! dashboard (`operator_dashboard_chart_*`, needs `helm`), tenant plans shared by ingest
//! replicas and usage summed across them (`operator_cluster_plan_*`); `… security_shared_limits` the
//! rate limits shared by replicas; `… spec_next_cluster` agent suspension, quarantine and risk
//! across replicas, and tenant notifications (`spec_next_cluster_tenant_notify_*`).

mod attachments_s3;
mod chaos;
mod chart;
mod chart_nats;
mod common;
mod config;
mod exchange;
mod federation_cluster;
mod operator;
mod operator_quota;
mod parity;
mod scan_callbacks;
mod security;
mod shared_limits;
mod spec_next_revocation;
mod spec_next_suspension;
mod storage_faults;
mod tenant_notify;
