//! The Helm chart (`helm/amp`) rendered by the real `helm` (on PATH, or `$HELM`; the nats
//! chart is vendored in `helm/amp/charts/nats`, so every render is offline): the Ingress
//! publishes only the protocol's paths, and the provider identity is never regenerated behind
//! the operator's back. The bundled NATS's users: `chart_nats.rs`. A missing `helm` fails these
//! tests; it never skips them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The chart's directory in the repository.
fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../helm/amp")
}

fn helm() -> String {
    std::env::var("HELM").unwrap_or_else(|_| "helm".to_owned())
}

/// `helm template` with `args`: the manifests, or helm's error.
pub(crate) fn render(args: &[&str]) -> Result<String, String> {
    let helm = helm();
    let out = Command::new(&helm)
        .args(["template", "r"])
        .arg(chart())
        .args(["--namespace", "amp", "--kube-version", "1.30.0"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {helm} (install helm or set HELM): {e}"));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `helm lint --strict` with `args`; panics with helm's output when it fails.
pub(crate) fn lint(args: &[&str]) {
    let helm = helm();
    let out = Command::new(&helm)
        .args(["lint", "--strict"])
        .arg(chart())
        .args(["--namespace", "amp", "--kube-version", "1.30.0"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {helm} (install helm or set HELM): {e}"));
    assert!(
        out.status.success(),
        "helm lint --strict {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The documents of a rendered release whose `kind:` is `kind`.
fn documents<'a>(manifests: &'a str, kind: &str) -> Vec<&'a str> {
    let line = format!("\nkind: {kind}\n");
    manifests
        .split("\n---")
        .filter(|d| d.contains(&line))
        .collect()
}

/// The `path:` values of the Ingress rules.
fn ingress_paths(manifests: &str) -> Vec<String> {
    let ingress = documents(manifests, "Ingress");
    assert_eq!(ingress.len(), 1, "one Ingress:\n{manifests}");
    ingress[0]
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- path: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn security_chart_ingress_routes_only_the_protocol_paths() {
    for mode in ["cluster", "single"] {
        let manifests = render(&[
            "--set",
            &format!("mode={mode}"),
            "--set",
            "ingress.enabled=true",
            "--set",
            "ingress.host=amp.example.com",
            "--set",
            "federation.enabled=true",
            "--set",
            "identity.existingSecret=amp-identity",
        ])
        .unwrap_or_else(|e| panic!("render ({mode}): {e}"));
        let paths = ingress_paths(&manifests);
        assert!(!paths.is_empty(), "{mode}: no paths");
        // `/metrics`, `/healthz` and `/readyz` share the services' port: a `/` prefix (or any
        // prefix they fall under) would publish them.
        for ops in ["/metrics", "/healthz", "/readyz"] {
            for path in &paths {
                assert!(
                    !ops.starts_with(path.as_str()),
                    "{mode}: {ops} is published by the Ingress path {path}"
                );
            }
        }
        for public in ["/v1", "/api/v1", "/.well-known/agent-messaging.json"] {
            assert!(
                paths.iter().any(|p| p == public),
                "{mode}: {public} not routed: {paths:?}"
            );
        }
    }
}

#[test]
fn security_chart_existing_identity_secret_is_used_and_never_generated() {
    for mode in ["cluster", "single"] {
        let manifests = render(&[
            "--set",
            &format!("mode={mode}"),
            "--set",
            "identity.existingSecret=amp-identity",
        ])
        .unwrap_or_else(|e| panic!("render ({mode}): {e}"));
        assert!(
            !manifests.contains("provider-key.pem: "),
            "{mode}: a key was generated despite existingSecret:\n{manifests}"
        );
        let mounts = manifests.matches("secretName: amp-identity\n").count();
        let workloads =
            documents(&manifests, "Deployment").len() + documents(&manifests, "StatefulSet").len();
        assert!(workloads > 0, "{mode}: no workloads");
        assert_eq!(
            mounts, workloads,
            "{mode}: every workload mounts the existing Secret"
        );
    }
}

#[test]
fn security_chart_upgrade_without_the_identity_secret_fails_instead_of_regenerating() {
    // Offline (`helm template`, `helm upgrade --dry-run`, GitOps tools) nothing can be looked
    // up: an upgrade must refuse rather than replace the identity and every API key with it.
    let err = render(&["--is-upgrade"]).expect_err("an upgrade generated a new identity");
    assert!(
        err.contains("refusing to generate a new provider identity")
            && err.contains("identity.existingSecret"),
        "{err}"
    );
    // With the operator's own Secret an upgrade renders.
    render(&[
        "--is-upgrade",
        "--set",
        "identity.existingSecret=amp-identity",
    ])
    .unwrap_or_else(|e| panic!("upgrade with existingSecret: {e}"));
    // A first install generates one when asked to (and the release notes say to back it up).
    let first =
        render(&["--set", "identity.generate=true"]).unwrap_or_else(|e| panic!("install: {e}"));
    assert_eq!(documents(&first, "Secret").len(), 1, "{first}");
}

/// Issue 16: without the operator's own Secret a render (`helm template`, Argo CD: no cluster
/// to look an earlier Secret up in) used to generate a new provider identity every time,
/// invalidating every API key at each sync. Now it fails and says what to set; generating
/// needs `identity.generate=true`, and then yields a new key on each offline render, which is
/// why it is not the default.
#[test]
fn security_chart_without_an_identity_secret_generates_only_when_asked() {
    for mode in ["cluster", "single"] {
        let mode = format!("mode={mode}");
        let err = render(&["--set", &mode]).expect_err("generated an identity unasked");
        assert!(
            err.contains("identity.existingSecret") && err.contains("identity.generate=true"),
            "{mode}: {err}"
        );
        let key_of = |manifests: &str| {
            let secret = documents(manifests, "Secret");
            assert_eq!(secret.len(), 1, "{mode}: one Secret:\n{manifests}");
            secret[0]
                .lines()
                .find_map(|l| l.trim().strip_prefix("provider-key.pem: "))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("{mode}: no key in {}", secret[0]))
        };
        let args = ["--set", mode.as_str(), "--set", "identity.generate=true"];
        let one = render(&args).unwrap_or_else(|e| panic!("{mode}: {e}"));
        let two = render(&args).unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_ne!(key_of(&one), key_of(&two), "{mode}: offline renders differ");
    }
}

/// Owner keys are secrets: `[[ingest.owners]]` in the chart's config would put them in a
/// ConfigMap in plain text, so the chart refuses it (in either mode, under any config key).
#[test]
fn security_chart_refuses_owner_keys_in_config() {
    let owners = r#"{"ingest":{"owners":[{"id":"usr_a","tenant":"acme","user_key":"uk_secret_0123456789abcdef"}]}}"#;
    for (mode, key) in [
        ("cluster", "config.cluster"),
        ("cluster", "config.ingest"),
        ("single", "config.ampd"),
    ] {
        let set = format!("{key}={owners}");
        let err = render(&[
            "--set",
            &format!("mode={mode}"),
            "--set",
            "identity.existingSecret=amp-identity",
            "--set-json",
            &set,
        ])
        .expect_err("owner keys rendered into a ConfigMap");
        assert!(
            err.contains("[[ingest.owners]]") && err.contains("admin API"),
            "{mode} {key}: {err}"
        );
        assert!(
            !err.contains("uk_secret_0123456789abcdef"),
            "the key is echoed: {err}"
        );
    }
    // The same config without owners renders.
    render(&[
        "--set",
        "identity.existingSecret=amp-identity",
        "--set-json",
        r#"config.ingest={"ingest":{"limits":{"mailbox_quota":5000}}}"#,
    ])
    .unwrap_or_else(|e| panic!("config without owners: {e}"));
}

#[test]
fn security_chart_nats_routes_require_authentication() {
    let base = [
        "--set",
        "nats.enabled=true",
        "--set",
        "identity.existingSecret=amp-identity",
        "--set",
        "nats.auth.existingSecret=amp-nats-users",
    ];
    let err = render(&base).expect_err("a NATS cluster with open routes rendered");
    assert!(err.contains("routes need authentication"), "{err}");
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        render(&args)
    };
    with(&[
        "--set",
        "nats.config.cluster.routeURLs.user=route",
        "--set",
        "nats.config.cluster.routeURLs.password=secret",
    ])
    .unwrap_or_else(|e| panic!("route credentials: {e}"));
    with(&["--set", "nats.config.cluster.tls.enabled=true"])
        .unwrap_or_else(|e| panic!("route TLS: {e}"));
    // A user without a password is no authentication.
    assert!(with(&["--set", "nats.config.cluster.routeURLs.user=route"]).is_err());
}

/// Issue 17: the PrometheusRule and the Grafana dashboard ConfigMap are off by default, and
/// when enabled carry the files of `deploy/` unchanged (the dashboard labelled for the Grafana
/// sidecar). The chart's copies equal `deploy/`'s (`operator_dashboard_chart_copies_are_identical`
/// in `ampd`'s tests), so comparing with the chart's copies here compares with both.
#[test]
fn operator_dashboard_chart_ships_rules_and_dashboard_when_enabled() {
    let chart_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../helm/amp");
    let dashboard =
        std::fs::read_to_string(chart_dir.join("dashboards/amp.json")).expect("read dashboard");
    let rules =
        std::fs::read_to_string(chart_dir.join("rules/amp-rules.yaml")).expect("read rules");
    for mode in ["cluster", "single"] {
        let mode = format!("mode={mode}");
        let off = render(&[
            "--set",
            &mode,
            "--set",
            "identity.existingSecret=amp-identity",
        ])
        .expect("renders");
        assert!(documents(&off, "PrometheusRule").is_empty(), "{off}");
        assert!(!off.contains("grafana_dashboard"), "{off}");

        let on = render(&[
            "--set",
            &mode,
            "--set",
            "identity.existingSecret=amp-identity",
            "--set",
            "metrics.prometheusRule.enabled=true",
            "--set",
            "metrics.prometheusRule.labels.release=kube-prometheus",
            "--set",
            "metrics.grafanaDashboard.enabled=true",
            "--set",
            "metrics.grafanaDashboard.annotations.grafana_folder=AMP",
        ])
        .expect("renders");
        let rule = documents(&on, "PrometheusRule");
        assert_eq!(rule.len(), 1, "{on}");
        assert!(rule[0].contains("apiVersion: monitoring.coreos.com/v1"));
        assert!(rule[0].contains("release: kube-prometheus"), "{}", rule[0]);
        // Every alert of the file, in the rule's spec.
        let alerts: Vec<&str> = rules
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- alert: "))
            .collect();
        assert!(alerts.len() >= 5, "{rules}");
        for alert in &alerts {
            assert!(
                rule[0].contains(&format!("- alert: {alert}\n")),
                "{alert} missing:\n{}",
                rule[0]
            );
        }
        // Prometheus's own templates are left for Prometheus, not eaten by helm.
        assert!(rule[0].contains("{{ $labels.job }}"), "{}", rule[0]);

        let maps: Vec<&str> = documents(&on, "ConfigMap")
            .into_iter()
            .filter(|d| d.contains("grafana_dashboard: \"1\""))
            .collect();
        assert_eq!(maps.len(), 1, "{on}");
        assert!(maps[0].contains("grafana_folder: AMP"), "{}", maps[0]);
        // The JSON is the data block, indented four spaces: unindent and compare.
        let (_, block) = maps[0].split_once("amp.json: |-\n").expect("data key");
        let body: String = block
            .lines()
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(body.trim_end(), dashboard.trim_end(), "dashboard differs");
    }
}

/// The NetworkPolicy document of `component` (by its `app.kubernetes.io/component` label).
fn network_policy<'a>(manifests: &'a str, component: &str) -> &'a str {
    let label = format!("app.kubernetes.io/component: {component}\n");
    let found: Vec<&str> = documents(manifests, "NetworkPolicy")
        .into_iter()
        .filter(|d| d.contains(&label))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one NetworkPolicy for {component}:\n{manifests}"
    );
    found[0]
}

/// Only the proxy reaches the HTTP services and nothing reaches the router (issue 16): a
/// NetworkPolicy per component, on by default, each admitting the configured `ingressFrom`
/// on the `http` port (or nobody), never open to the whole cluster.
#[test]
fn security_chart_network_policies_admit_only_the_proxy() {
    let manifests = render(&[
        "--set",
        "mode=cluster",
        "--set",
        "federation.enabled=true",
        "--set",
        "identity.existingSecret=amp-identity",
    ])
    .unwrap_or_else(|e| panic!("render: {e}"));
    let deployments = documents(&manifests, "Deployment").len();
    assert!(
        deployments >= 4,
        "ingest, router, delivery, federation:\n{manifests}"
    );
    assert_eq!(
        documents(&manifests, "NetworkPolicy").len(),
        deployments,
        "one NetworkPolicy per component"
    );
    for component in ["ingest", "delivery", "federation"] {
        let np = network_policy(&manifests, component);
        assert!(np.contains("policyTypes: [Ingress]"), "{np}");
        assert!(
            np.contains("kubernetes.io/metadata.name: ingress-nginx"),
            "{component} admits the ingress controller's namespace:\n{np}"
        );
        assert!(
            np.contains("port: http"),
            "{component}: the http port only:\n{np}"
        );
        assert!(
            !np.contains("namespaceSelector: {}") && !np.contains("- {}"),
            "{component} is open to every pod:\n{np}"
        );
    }
    let router = network_policy(&manifests, "router");
    assert!(
        router.contains("ingress: []"),
        "nothing may connect to the router:\n{router}"
    );

    // Single mode: one policy, for ampd; and none at all when turned off.
    let single = render(&[
        "--set",
        "mode=single",
        "--set",
        "identity.existingSecret=amp-identity",
    ])
    .unwrap_or_else(|e| panic!("render single: {e}"));
    let np = network_policy(&single, "ampd");
    assert!(
        np.contains("kubernetes.io/metadata.name: ingress-nginx"),
        "{np}"
    );
    let off = render(&[
        "--set",
        "mode=single",
        "--set",
        "networkPolicy.enabled=false",
        "--set",
        "identity.existingSecret=amp-identity",
    ])
    .unwrap_or_else(|e| panic!("render off: {e}"));
    assert!(documents(&off, "NetworkPolicy").is_empty(), "{off}");
}

/// Issue 17: usage rows' retention is a chart value rendered into `[ingest.messaging]` of
/// both modes' config, and a value set in `config` wins over it.
#[test]
fn operator_chart_renders_usage_retention() {
    let cluster = render(&[
        "--set",
        "identity.existingSecret=amp-identity",
        "--set",
        "usage.hourlyRetentionDays=10",
    ])
    .expect("renders");
    assert!(
        cluster.contains("usage_hourly_retention_days = 10\n")
            && cluster.contains("usage_daily_retention_days = 400\n"),
        "{cluster}"
    );
    let single = render(&[
        "--set",
        "mode=single",
        "--set",
        "identity.existingSecret=amp-identity",
        "--set-json",
        r#"config.ampd={"ingest":{"messaging":{"usage_daily_retention_days":7}}}"#,
    ])
    .expect("renders");
    assert!(
        single.contains("usage_hourly_retention_days = 35\n")
            && single.contains("usage_daily_retention_days = 7\n"),
        "{single}"
    );
    let err = render(&[
        "--set",
        "identity.existingSecret=amp-identity",
        "--set",
        "usage.hourlyRetentionDays=-1",
    ])
    .expect_err("a negative retention is refused by the schema");
    assert!(err.contains("hourlyRetentionDays"), "{err}");
}
