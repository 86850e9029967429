//! Issue 17's dashboards and alerts against the code: every metric that a query of the Grafana
//! dashboard (`deploy/grafana/amp.json`) or an alert rule (`deploy/prometheus/amp-rules.yaml`)
//! names is one the services export, the rule file is well formed and every alert has its
//! runbook section, and the Helm chart's copies of both files are the same bytes.
//!
//! "Exported" means: on the real `/metrics` of a built `ampd` after one signed route, one
//! pickup and one acknowledgement; or, for metrics only emitted on rarer events (a dead letter,
//! a webhook attempt, federation), declared by a `counter!`/`gauge!`/`histogram!` call in the
//! sources under `libs/` and `services/`. Every test name starts with `operator_dashboard_`, so
//! `cargo test --workspace operator` runs them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::{Msg, agent, ids_of};
use amp_testkit::ampd::AmpdProcess;

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    let p = repo().join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

// ---- PromQL: the metric names an expression uses ----

/// Words of PromQL that are never metric names when they stand outside a function call.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "atan2",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names in a PromQL expression (Grafana's `$variables` allowed): identifiers
/// that stand as a vector selector, bare or followed by `{…}` or `[…]`; not function or
/// aggregation names (followed by `(`), keywords, label names (inside `{…}` or after `by`,
/// `on` and the like), string contents or numbers. Grafana's `label_values(metric, label)`
/// yields the metric of its first argument.
fn metric_names(expr: &str) -> BTreeSet<String> {
    if let Some(inner) = expr
        .trim()
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
    {
        let selector = inner
            .rsplit_once(',')
            .map_or(inner, |(metric, _label)| metric);
        return metric_names(selector);
    }
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // After `offset` the next word is a duration (`5m`), not a metric.
    let mut after_offset = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_group(&chars, i, '{', '}');
        } else if c == '[' {
            i = skip_group(&chars, i, '[', ']');
        } else if c == '$' {
            // A Grafana variable ($job, $__rate_interval, ${datasource}).
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_group(&chars, i, '{', '}');
            } else {
                while i < chars.len() && is_word(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number, or a duration after `offset` (digits then unit letters).
            while i < chars.len() && (is_word(chars[i]) || chars[i] == '.') {
                i += 1;
            }
            after_offset = false;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && is_word(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let lower = word.to_ascii_lowercase();
            if LABEL_LISTS.contains(&lower.as_str()) {
                if chars.get(next) == Some(&'(') {
                    i = skip_group(&chars, next, '(', ')');
                }
            } else if lower == "offset" {
                after_offset = true;
            } else if after_offset {
                after_offset = false;
            } else if chars.get(next) == Some(&'(')
                || modifier_follows(&chars, next)
                || KEYWORDS.contains(&lower.as_str())
            {
                // A function or aggregation (`sum by (le) (…)` too), or an operator word.
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Whether the word at `at` is `by` or `without`: what stands before it is an aggregation.
fn modifier_follows(chars: &[char], at: usize) -> bool {
    let word: String = chars[at.min(chars.len())..]
        .iter()
        .take_while(|c| is_word(**c))
        .collect::<String>()
        .to_ascii_lowercase();
    word == "by" || word == "without"
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index after the string literal starting at `start` (escapes honoured; raw in backticks).
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == '\\' && quote != '`' {
            i += 2;
            continue;
        }
        if chars[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    panic!(
        "unterminated string in {:?}",
        chars.iter().collect::<String>()
    );
}

/// The index after the group opened at `start`, nested groups and strings skipped.
fn skip_group(chars: &[char], start: usize, open: char, close: char) -> usize {
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(chars, i);
            continue;
        }
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return i + 1;
            }
        }
        i += 1;
    }
    panic!(
        "unbalanced {open}{close} in {:?}",
        chars.iter().collect::<String>()
    );
}

/// Whether the brackets of `expr` balance and close in order (strings skipped): the syntax
/// error an edit most often leaves behind.
fn brackets_balance(expr: &str) -> bool {
    let chars: Vec<char> = expr.chars().collect();
    let mut stack = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(&chars, i);
                continue;
            }
            c @ ('(' | '{' | '[') => stack.push(c),
            ')' if stack.pop() != Some('(') => return false,
            '}' if stack.pop() != Some('{') => return false,
            ']' if stack.pop() != Some('[') => return false,
            _ => {}
        }
        i += 1;
    }
    stack.is_empty()
}

// ---- What the code exports ----

/// The kind of a metric as declared in the sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric name declared by a `counter!("…")`, `gauge!("…")` or `histogram!("…")` call
/// in the `.rs` files under `libs/` and `services/`, with its kind.
fn declared_metrics() -> BTreeMap<String, Kind> {
    let mut out = BTreeMap::new();
    for dir in ["libs", "services"] {
        scan(&repo().join(dir), &mut out);
    }
    out
}

fn scan(dir: &Path, out: &mut BTreeMap<String, Kind>) {
    for entry in std::fs::read_dir(dir).expect("read source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            if !path.ends_with("target") && !path.ends_with("node_modules") {
                scan(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read source");
            declarations(&text, out);
        }
    }
}

/// The metric declarations in one source text.
fn declarations(text: &str, out: &mut BTreeMap<String, Kind>) {
    for (mac, kind) in [
        ("counter!(", Kind::Counter),
        ("gauge!(", Kind::Gauge),
        ("histogram!(", Kind::Histogram),
    ] {
        for (at, _) in text.match_indices(mac) {
            let rest = text[at + mac.len()..].trim_start();
            if let Some(name) = rest
                .strip_prefix('"')
                .and_then(|r| r.split_once('"'))
                .map(|(name, _)| name)
            {
                out.insert(name.to_owned(), kind);
            }
        }
    }
}

/// The metric names in a Prometheus text exposition.
fn scraped_metrics(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            l.split(['{', ' '])
                .next()
                .expect("split yields one part")
                .to_owned()
        })
        .collect()
}

/// The names among `used` that are neither scraped nor declared (a histogram's `_bucket`,
/// `_sum` and `_count` series count as declared with it).
fn unknown_metrics(
    used: &BTreeSet<String>,
    scraped: &BTreeSet<String>,
    declared: &BTreeMap<String, Kind>,
) -> Vec<String> {
    used.iter()
        .filter(|name| {
            if scraped.contains(*name) || declared.contains_key(*name) {
                return false;
            }
            let histogram_series = ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .is_some_and(|base| declared.get(base) == Some(&Kind::Histogram))
            });
            !histogram_series
        })
        .cloned()
        .collect()
}

// ---- The files under test ----

/// Every PromQL expression of the dashboard: panel targets (rows' nested panels too) and the
/// template variables' queries, each with where it comes from.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?");
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((format!("panel {title:?}"), expr.to_owned()));
                }
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] != "query" {
            continue;
        }
        let query = v["query"]["query"].as_str().or(v["query"].as_str());
        if let Some(q) = query {
            out.push((format!("variable {}", v["name"]), q.to_owned()));
        }
    }
    out
}

/// A Prometheus rule file, as strictly as Prometheus reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    #[serde(default)]
    alert: Option<String>,
    #[serde(default)]
    record: Option<String>,
    expr: String,
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    keep_firing_for: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Whether `s` is a Prometheus duration (`30s`, `1h30m`, `0m`).
fn is_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let Some(unit) = ["ms", "s", "m", "h", "d", "w", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u))
        else {
            return false;
        };
        rest = &rest[unit.len()..];
    }
    true
}

/// The rule file parsed and checked (names, durations, severity, runbook section), with every
/// expression and where it comes from.
fn rule_queries(text: &str, runbook: &str) -> Vec<(String, String)> {
    let file: RuleFile = serde_yaml::from_str(text).expect("the rule file parses");
    assert!(!file.groups.is_empty(), "no rule groups");
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_ascii_lowercase().replace(' ', "-"))
        .collect();
    let mut alerts = BTreeSet::new();
    let mut out = Vec::new();
    for g in &file.groups {
        assert!(!g.name.is_empty(), "a group without a name");
        if let Some(i) = &g.interval {
            assert!(is_duration(i), "group {}: interval {i:?}", g.name);
        }
        assert!(!g.rules.is_empty(), "group {} has no rules", g.name);
        for r in &g.rules {
            let name = match (&r.alert, &r.record) {
                (Some(a), None) => a.clone(),
                (None, Some(r)) => r.clone(),
                _ => panic!("a rule needs exactly one of alert and record: {r:?}"),
            };
            for d in [&r.for_, &r.keep_firing_for].into_iter().flatten() {
                assert!(is_duration(d), "{name}: duration {d:?}");
            }
            assert!(brackets_balance(&r.expr), "{name}: unbalanced {:?}", r.expr);
            if r.alert.is_some() {
                assert!(alerts.insert(name.clone()), "alert {name} twice");
                assert!(
                    ["critical", "warning", "info"].contains(&r.labels["severity"].as_str()),
                    "{name}: severity {:?}",
                    r.labels.get("severity")
                );
                for a in ["summary", "description", "runbook"] {
                    assert!(r.annotations.contains_key(a), "{name}: no {a} annotation");
                }
                let anchor = r.annotations["runbook"]
                    .strip_prefix("deploy/RUNBOOK.md#")
                    .and_then(|s| s.split_whitespace().next())
                    .unwrap_or_else(|| panic!("{name}: runbook names no section"));
                assert_eq!(anchor, name.to_ascii_lowercase(), "{name}: runbook anchor");
                assert!(
                    anchors.contains(anchor),
                    "{name}: no section {anchor} in deploy/RUNBOOK.md"
                );
            }
            out.push((format!("rule {name}"), r.expr.clone()));
        }
    }
    out
}

/// Checks that every query names at least one metric and only metrics in `scraped` or
/// `declared`; the failures, one line each.
fn check_queries(
    queries: &[(String, String)],
    scraped: &BTreeSet<String>,
    declared: &BTreeMap<String, Kind>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (source, expr) in queries {
        if !brackets_balance(expr) {
            failures.push(format!("{source}: unbalanced brackets in {expr:?}"));
            continue;
        }
        let used = metric_names(expr);
        if used.is_empty() {
            failures.push(format!("{source}: names no metric: {expr:?}"));
        }
        for name in unknown_metrics(&used, scraped, declared) {
            failures.push(format!("{source}: {name} is not exported: {expr:?}"));
        }
    }
    failures
}

// ---- Tests ----

#[test]
fn operator_dashboard_extractor_finds_metrics_and_nothing_else() {
    let cases: &[(&str, &[&str])] = &[
        (
            r#"sum by (job, route) (rate(foo_total{job=~"$job", route=~"(/api)?/v1/x"}[$__rate_interval]))"#,
            &["foo_total"],
        ),
        (
            r#"histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket{a="b"}[5m]))) > 1"#,
            &["x_seconds_bucket"],
        ),
        (
            "a_total / on (job) group_left (instance) b_info * ignoring(x) c offset 5m",
            &["a_total", "b_info", "c"],
        ),
        (
            r#"topk(10, sum without (pod) (up_total{s="rate(not_a_metric[1m])"})) unless bool d"#,
            &["up_total", "d"],
        ),
        ("label_values(amp_ready, job)", &["amp_ready"]),
        (
            "sum(rate(z:recorded:rate5m[1h])) + 0.5 - .25e3",
            &["z:recorded:rate5m"],
        ),
    ];
    for (expr, want) in cases {
        let got = metric_names(expr);
        let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(got, want, "{expr}");
    }
    assert!(brackets_balance(r#"sum(rate(a{b="}"}[5m]))"#));
    assert!(!brackets_balance("sum(rate(a[5m])"));
    assert!(!brackets_balance("sum(rate(a[5m)])"));
    assert!(is_duration("1h30m") && is_duration("0m") && !is_duration("5") && !is_duration("m"));
}

#[test]
fn operator_dashboard_check_rejects_a_metric_the_code_does_not_export() {
    let mut declared = BTreeMap::new();
    declarations(
        r#"metrics::counter!("amp_x_total", "k" => "v").increment(1);
           metrics::histogram!( "amp_y_seconds").record(1.0);
           metrics::gauge!("amp_z").set(1.0);"#,
        &mut declared,
    );
    assert_eq!(declared.get("amp_y_seconds"), Some(&Kind::Histogram));
    let scraped = scraped_metrics("# TYPE amp_s_total counter\namp_s_total{a=\"b\"} 3\namp_t 1\n");
    assert_eq!(
        scraped,
        BTreeSet::from(["amp_s_total".to_owned(), "amp_t".to_owned()])
    );
    let q = |e: &str| vec![("q".to_owned(), e.to_owned())];
    let ok = [
        "rate(amp_x_total[5m]) + amp_z + amp_s_total",
        "histogram_quantile(0.9, rate(amp_y_seconds_bucket[5m]))",
        "rate(amp_y_seconds_sum[5m]) / rate(amp_y_seconds_count[5m])",
    ];
    for e in ok {
        assert_eq!(
            check_queries(&q(e), &scraped, &declared),
            Vec::<String>::new()
        );
    }
    let bad = [
        "rate(amp_no_such_metric_total[5m])",
        // Only histograms have buckets.
        "rate(amp_x_total_bucket[5m])",
        "sum(rate(amp_x_total[5m])",
        "vector(1)",
    ];
    for e in bad {
        assert_eq!(
            check_queries(&q(e), &scraped, &declared).len(),
            1,
            "{e} must fail"
        );
    }
}

#[test]
fn operator_dashboard_chart_copies_are_identical() {
    for (deploy, chart) in [
        ("deploy/grafana/amp.json", "helm/amp/dashboards/amp.json"),
        (
            "deploy/prometheus/amp-rules.yaml",
            "helm/amp/rules/amp-rules.yaml",
        ),
    ] {
        assert!(
            read(deploy) == read(chart),
            "{chart} differs from {deploy}: copy it (cp {deploy} {chart})"
        );
    }
}

/// The real thing: a built `ampd`, one signed route picked up and acknowledged, its
/// `/metrics` scraped; every dashboard and rule query checked against that and the sources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_dashboard_queries_name_only_exported_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ampd = AmpdProcess::start(dir.path(), &[]).await;
    let url = ampd.url().to_owned();
    let http = reqwest::Client::new();
    let alice = agent::register(&http, &url, "opdash", "alice", None).await;
    let bob = agent::register(&http, &url, "opdash", "bob", None).await;

    let m = Msg::new(&bob.address, "metrics");
    let r = http
        .post(format!("{url}/v1/route"))
        .bearer_auth(&alice.api_key)
        .header("content-type", "application/json")
        .body(m.flat(Some(&m.sign(&alice))))
        .send()
        .await
        .expect("route");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().await.unwrap_or_default()
    );

    // The router writes the mailbox after the answer: wait for it, then acknowledge.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let ids = loop {
        let page: Value = http
            .get(format!("{url}/v1/messages/pending"))
            .bearer_auth(&bob.api_key)
            .send()
            .await
            .expect("pending")
            .json()
            .await
            .expect("json");
        let ids = ids_of(&page);
        if !ids.is_empty() {
            break ids;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "message never queued"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let acked = http
        .delete(format!("{url}/v1/messages/pending/{}", ids[0]))
        .bearer_auth(&bob.api_key)
        .send()
        .await
        .expect("ack");
    assert_eq!(acked.status(), StatusCode::OK);

    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    ampd.stop().await;
    let scraped = scraped_metrics(&text);
    // What one route makes exist, so the dashboard's core panels are never empty.
    for name in [
        "amp_http_requests_total",
        "amp_http_request_duration_seconds_bucket",
        "amp_ready",
        "amp_readiness_check",
        "amp_registrations_total",
        "amp_signatures_verified_total",
        "amp_router_messages_total",
        "amp_mailbox_acked_total",
        "amp_router_accept_to_mailbox_seconds_bucket",
        "amp_store_commits_total",
        "amp_store_commit_batch_size_bucket",
        "amp_store_commit_seconds_bucket",
    ] {
        assert!(scraped.contains(name), "{name} not on /metrics:\n{text}");
    }
    // Labelled by route template and readiness check, never by raw path.
    for series in [
        r#"route="/v1/route""#,
        r#"route="/v1/messages/pending/{id}""#,
        r#"amp_readiness_check{check="store"} 1"#,
        "amp_ready 1",
    ] {
        assert!(text.contains(series), "{series} not on /metrics:\n{text}");
    }
    assert!(!text.contains(&ids[0]), "a message id in a label:\n{text}");

    let declared = declared_metrics();
    let dashboard: Value =
        serde_json::from_str(&read("deploy/grafana/amp.json")).expect("the dashboard is JSON");
    let mut queries = dashboard_queries(&dashboard);
    let panels = queries.len();
    assert!(panels >= 20, "only {panels} dashboard queries found");
    queries.extend(rule_queries(
        &read("deploy/prometheus/amp-rules.yaml"),
        &read("deploy/RUNBOOK.md"),
    ));
    assert!(queries.len() > panels, "no alert rules found");
    let failures = check_queries(&queries, &scraped, &declared);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
