#![allow(clippy::unwrap_used)]
//! The monitoring files under `ops/` agree with the code: every metric a Prometheus rule, a
//! rule test or a Grafana dashboard names is one the code exports, and `promtool` accepts the
//! scrape config, the rules, the rule unit tests and every dashboard expression.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use lienthong_telemetry::catalog;

fn repo() -> PathBuf {
    lienthong_contract::repo_root()
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no *.{ext} in {}", dir.display());
    out
}

/// The `lienthong_*` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while let Some(found) = expr[i..].find("lienthong_") {
        let start = i + found;
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        if start == 0 || !ident(bytes[start - 1]) {
            names.insert(expr[start..end].to_string());
        }
        i = end.max(start + 1);
    }
    names
}

/// Every string under an `expr`, `query` or `definition` key of a dashboard.
fn dashboard_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// The values of `key:` in a Prometheus YAML file: inline, or a `|`/`>` block of more indented
/// lines. (Rule files and rule tests use only these two forms.)
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start().trim_start_matches("- ");
        let indent = line.len() - line.trim_start().len();
        if let Some(rest) = trimmed.strip_prefix(&format!("{key}:")) {
            let rest = rest.trim();
            if rest.starts_with('|') || rest.starts_with('>') {
                let mut block = String::new();
                i += 1;
                while i < lines.len()
                    && (lines[i].trim().is_empty()
                        || lines[i].len() - lines[i].trim_start().len() > indent)
                {
                    block.push_str(lines[i].trim());
                    block.push('\n');
                    i += 1;
                }
                out.push(block);
                continue;
            }
            out.push(rest.trim_matches(|c| c == '\'' || c == '"').to_string());
        }
        i += 1;
    }
    out
}

/// The expressions of the monitoring files: (file, expression).
fn exprs_of(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => {
            let json: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mut out = Vec::new();
            dashboard_exprs(&json, &mut out);
            out
        }
        _ => {
            let mut out = yaml_values(&text, "expr");
            out.extend(yaml_values(&text, "series"));
            out
        }
    }
}

/// Metric names the files use that the code does not export: (file, name).
fn unknown_metrics(paths: &[PathBuf]) -> Vec<(String, String)> {
    let exported: BTreeSet<String> = catalog::exported_series_names().into_iter().collect();
    let mut unknown = Vec::new();
    for path in paths {
        for expr in exprs_of(path) {
            for name in metric_names(&expr) {
                if !exported.contains(&name) {
                    unknown.push((path.display().to_string(), name));
                }
            }
        }
    }
    unknown
}

fn monitoring_files() -> Vec<PathBuf> {
    let mut all = files(&repo().join("ops/prometheus/rules"), "yml");
    all.extend(files(&repo().join("ops/prometheus/tests"), "yml"));
    all.extend(files(&repo().join("ops/grafana/dashboards"), "json"));
    all
}

#[test]
fn dashboards_and_rules_name_only_exported_metrics() {
    let paths = monitoring_files();
    let unknown = unknown_metrics(&paths);
    assert!(
        unknown.is_empty(),
        "metrics named under ops/ that the code does not export (see crates/telemetry/src/catalog.rs):\n{unknown:#?}"
    );
    // The check looked at something: every family of each subsystem is used somewhere.
    let mut used = BTreeSet::new();
    for path in &paths {
        for expr in exprs_of(path) {
            used.extend(metric_names(&expr));
        }
    }
    for must in [
        "lienthong_connector_consumer_lag_records",
        "lienthong_connector_events_dead_lettered_total",
        "lienthong_connector_up",
        "lienthong_gateway_requests_total",
        "lienthong_kpi_unit_open_overdue_ratio",
        "lienthong_kpi_unit_cases_open",
        "lienthong_kpi_anomalies_total",
    ] {
        assert!(
            used.contains(must),
            "{must} is not used by any rule or dashboard"
        );
    }
    assert!(
        used.len() > 40,
        "only {} metric names found: {used:?}",
        used.len()
    );
}

#[test]
fn the_check_fails_on_a_wrong_name() {
    let dir = lienthong_contract::repo_root().join("crates/telemetry/tests/fixtures");
    let unknown: Vec<String> = unknown_metrics(&[
        dir.join("wrong-names-dashboard.json"),
        dir.join("wrong-names-rules.yml"),
    ])
    .into_iter()
    .map(|(_, name)| name)
    .collect();
    assert_eq!(
        unknown,
        vec![
            "lienthong_connector_events_aplied_total".to_string(),
            "lienthong_gateway_requests_totl".to_string(),
        ]
    );
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = metric_names(
        "sum by (le) (rate(lienthong_a_bucket{job=\"lienthong-kpi\"}[5m])) / on() xlienthong_b + lienthong_c",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["lienthong_a_bucket", "lienthong_c"]
    );
    let yaml =
        "x:\n  - expr: a\n    expr: |\n      b\n      c\n    for: 1m\n  - series: 'd{x=\"y\"}'\n";
    assert_eq!(yaml_values(yaml, "expr"), vec!["a", "b\nc\n"]);
    assert_eq!(yaml_values(yaml, "series"), vec!["d{x=\"y\"}"]);
}

fn promtool() -> PathBuf {
    match std::env::var_os("LIENTHONG_PROMTOOL") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => panic!(
            "LIENTHONG_PROMTOOL is not set: this test runs promtool (Debian package `prometheus`). \
             Run the suite with `ops/test`, or `eval \"$(ops/services.sh up)\"` first."
        ),
    }
}

fn run_promtool(args: &[&str], files: &[PathBuf]) -> String {
    let out = Command::new(promtool())
        .args(args)
        .args(files)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("cannot run promtool: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {args:?} {files:?} failed:\n{text}"
    );
    text
}

#[test]
fn promtool_accepts_the_config_the_rules_and_their_unit_tests() {
    let config = repo().join("ops/prometheus/prometheus.yml");
    let out = run_promtool(&["check", "config"], &[config]);
    assert!(out.contains("1 rule files found"), "{out}");
    let rules = files(&repo().join("ops/prometheus/rules"), "yml");
    let out = run_promtool(&["check", "rules"], &rules);
    assert!(out.contains("SUCCESS"), "{out}");
    let tests = files(&repo().join("ops/prometheus/tests"), "yml");
    let out = run_promtool(&["test", "rules"], &tests);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_has_a_unit_test_that_fires_and_one_that_does_not() {
    let mut alerts = BTreeSet::new();
    for path in files(&repo().join("ops/prometheus/rules"), "yml") {
        let text = std::fs::read_to_string(path).unwrap();
        alerts.extend(yaml_values(&text, "alert"));
    }
    assert!(alerts.len() >= 6, "{alerts:?}");
    let mut tests = String::new();
    for path in files(&repo().join("ops/prometheus/tests"), "yml") {
        tests.push_str(&std::fs::read_to_string(path).unwrap());
    }
    for alert in &alerts {
        // Each alertname block in the tests, and whether it expects alerts.
        let blocks: Vec<&str> = tests
            .split("alertname: ")
            .skip(1)
            .filter(|b| b.starts_with(&format!("{alert}\n")))
            .collect();
        let quiet = blocks
            .iter()
            .filter(|b| {
                b.lines()
                    .nth(1)
                    .is_some_and(|l| l.trim() == "exp_alerts: []")
            })
            .count();
        assert!(quiet >= 1, "{alert}: no test case where it must not fire");
        assert!(blocks.len() > quiet, "{alert}: no test case where it fires");
    }
}

/// Every `title` (the dashboard's, its rows' and panels') of a dashboard.
fn titles(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("title", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => titles(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| titles(v, out)),
        _ => {}
    }
}

/// The city's officials read the dashboards in Vietnamese: every title is "Vietnamese ·
/// English", the Vietnamese part written with its diacritics.
#[test]
fn every_dashboard_title_is_in_vietnamese_then_english() {
    let mut checked = 0;
    for path in files(&repo().join("ops/grafana/dashboards"), "json") {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut all = Vec::new();
        titles(&json, &mut all);
        assert!(all.len() > 10, "{}: {} titles", path.display(), all.len());
        for t in all {
            let (vi, en) = t
                .split_once(" · ")
                .unwrap_or_else(|| panic!("{}: {t:?} has no Vietnamese part", path.display()));
            assert!(
                !vi.is_ascii() && !en.trim().is_empty(),
                "{}: {t:?} is not \"Vietnamese · English\"",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "{checked} titles");
}

#[test]
fn promtool_accepts_every_dashboard_expression() {
    // Wrap each dashboard query in a recording rule so promtool parses it.
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    let mut n = 0;
    for path in files(&repo().join("ops/grafana/dashboards"), "json") {
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut exprs = Vec::new();
        dashboard_exprs(&json, &mut exprs);
        for expr in exprs.iter().filter(|e| !e.starts_with("label_values(")) {
            let expr = expr
                .replace("$unit", ".*")
                .replace("$__rate_interval", "5m")
                .replace("$__range", "1d");
            n += 1;
            rules.push_str(&format!(
                "      - record: dashboard:expr_{n}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            ));
        }
    }
    assert!(n > 30, "only {n} dashboard expressions");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboards.yml");
    std::fs::write(&file, rules).unwrap();
    let out = run_promtool(&["check", "rules"], &[file]);
    assert!(out.contains(&format!("SUCCESS: {n} rules found")), "{out}");
}
