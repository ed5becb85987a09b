//! What ships to operate the adapters, checked against the adapters themselves: each chart's
//! alerting rules (`deploy/helm/<adapter>/files/alerts.yaml`) and Grafana dashboard
//! (`files/dashboard.json`) may only name metrics, and label values, that the adapter
//! exports. [`assert_exported`] takes a scrape of the running adapter's `/metrics`, so a
//! renamed metric fails the adapter's tests rather than silencing an alert.
//!
//! The rules themselves are checked with Prometheus' own `promtool` (`tests/monitoring.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Where every alert's `runbook_url` points in the files; the charts move it with
/// `prometheusRule.runbookBaseUrl`.
pub const RUNBOOKS: &str = "https://github.com/sre-integration/sre-integration/blob/main/deploy/monitoring/runbooks";

/// The adapters whose charts ship rules and a dashboard: every adapter.
pub use crate::inventory::ADAPTERS;

/// `deploy/monitoring/`.
pub fn monitoring_dir() -> PathBuf {
    crate::workspace_root().join("deploy/monitoring")
}

/// The adapter's rules file.
pub fn rules_file(adapter: &str) -> PathBuf {
    crate::charts_dir().join(adapter).join("files/alerts.yaml")
}

/// One alerting rule as the file has it.
#[derive(Debug, Clone)]
pub struct Alert {
    /// `alert:`.
    pub name: String,
    /// `expr:`.
    pub expr: String,
    /// `labels:`.
    pub labels: BTreeMap<String, String>,
    /// `annotations:`.
    pub annotations: BTreeMap<String, String>,
}

/// Every alerting rule of the adapter's rules file.
pub fn alerts(adapter: &str) -> Vec<Alert> {
    let text = std::fs::read_to_string(rules_file(adapter)).expect("alerts.yaml");
    let doc: serde_norway::Value = serde_norway::from_str(&text).expect("alerts.yaml is YAML");
    let map = |v: &serde_norway::Value| -> BTreeMap<String, String> {
        v.as_mapping()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), v.as_str().unwrap_or_default().to_owned()))
            .collect()
    };
    doc["groups"]
        .as_sequence()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_sequence().cloned().unwrap_or_default())
        .map(|r| Alert {
            name: r["alert"].as_str().expect("alert:").to_owned(),
            expr: r["expr"].as_str().expect("expr:").to_owned(),
            labels: map(&r["labels"]),
            annotations: map(&r["annotations"]),
        })
        .collect()
}

/// The adapter's dashboard.
pub fn dashboard(adapter: &str) -> serde_json::Value {
    let path = crate::charts_dir().join(adapter).join("files/dashboard.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard.json")).expect("dashboard.json is JSON")
}

/// Every panel's queries: (panel title, expression).
pub fn panel_queries(adapter: &str) -> Vec<(String, String)> {
    let dash = dashboard(adapter);
    dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| (title.clone(), t["expr"].as_str().expect("expr").to_owned()))
        })
        .collect()
}

/// A metric an expression names, with the label values its `=` and `=~` matchers need
/// (alternatives of a plain `a|b` regex each count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricRef {
    /// The sample name (`sre_bus_facts_handled_total`, `..._bucket`).
    pub name: String,
    /// `label` → the values it must take.
    pub values: Vec<(String, String)>,
}

/// The adapters' metrics an expression names: identifiers with one of the adapters'
/// prefixes, and their matchers.
pub fn metric_refs(expr: &str) -> Vec<MetricRef> {
    const PREFIXES: [&str; 5] = ["sre_", "alertmanager_ingress_", "argocd_sync_", "ticketing_sink_", "paging_sink_"];
    let bytes = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !ident(bytes[i]) || (i > 0 && (ident(bytes[i - 1]) || bytes[i - 1] == b'"' || bytes[i - 1] == b'$')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && ident(bytes[i]) {
            i += 1;
        }
        let name = &expr[start..i];
        if !PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let mut values = Vec::new();
        if i < bytes.len() && bytes[i] == b'{' {
            let end = expr[i..].find('}').map_or(expr.len(), |e| i + e);
            for matcher in expr[i + 1..end].split(',') {
                let (label, op, value) = if let Some((l, v)) = matcher.split_once("=~") {
                    (l, "=~", v)
                } else if let Some((l, v)) = matcher.split_once("!=") {
                    (l, "!=", v)
                } else if let Some((l, v)) = matcher.split_once('=') {
                    (l, "=", v)
                } else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match op {
                    "=" => values.push((label.trim().to_owned(), value.to_owned())),
                    "=~" if value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '|' || c == '-') => {
                        values.extend(value.split('|').map(|v| (label.trim().to_owned(), v.to_owned())));
                    }
                    _ => {}
                }
            }
            i = end;
        }
        out.push(MetricRef { name: name.to_owned(), values });
    }
    out
}

/// Samples of a scrape: name → the label sets seen.
fn samples(scrape: &str) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let mut out: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for line in scrape.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (name, rest) = match line.find(['{', ' ']) {
            Some(at) => (&line[..at], &line[at..]),
            None => continue,
        };
        let mut labels = BTreeMap::new();
        if let Some(body) = rest.strip_prefix('{').and_then(|r| r.split_once('}')).map(|(b, _)| b) {
            for pair in body.split("\",") {
                if let Some((k, v)) = pair.split_once('=') {
                    labels.insert(k.trim().to_owned(), v.trim_matches('"').to_owned());
                }
            }
        }
        out.entry(name.to_owned()).or_default().push(labels);
    }
    out
}

/// Asserts that every metric the adapter's rules and dashboard name is in `scrape` (its
/// `/metrics`), with every label value their matchers need; panics listing what is not.
pub fn assert_exported(adapter: &str, scrape: &str) {
    let missing = not_exported(adapter, scrape);
    assert!(missing.is_empty(), "{adapter} does not export what its rules and dashboard use:\n{}", missing.join("\n"));
}

/// What the adapter's rules and dashboard use that `scrape` lacks (empty: all there).
pub fn not_exported(adapter: &str, scrape: &str) -> Vec<String> {
    let seen = samples(scrape);
    let mut missing = BTreeSet::new();
    let mut uses: Vec<(String, String)> =
        alerts(adapter).into_iter().map(|a| (format!("alert {}", a.name), a.expr)).collect();
    uses.extend(panel_queries(adapter).into_iter().map(|(t, e)| (format!("panel {t:?}"), e)));
    assert!(uses.len() > 5, "{adapter}: no rules or panels found");
    for (what, expr) in &uses {
        let refs = metric_refs(expr);
        assert!(!refs.is_empty(), "{adapter}: {what} names no metric of the adapters: {expr}");
        for r in refs {
            let Some(sets) = seen.get(&r.name) else {
                missing.insert(format!("{what}: {} is not exported", r.name));
                continue;
            };
            for (label, value) in &r.values {
                if !sets.iter().any(|s| s.get(label) == Some(value)) {
                    missing.insert(format!("{what}: no {}{{{label}=\"{value}\"}} exported", r.name));
                }
            }
        }
    }
    missing.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_refs_read_names_and_the_values_matchers_need() {
        let refs = metric_refs(
            r#"increase(sre_bus_facts_handled_total{outcome="DeadLettered"}[15m]) * on(job, instance) group_left(adapter) sre_build_info{adapter="paging-sink"} > 0"#,
        );
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0].name, "sre_bus_facts_handled_total");
        assert_eq!(refs[0].values, [("outcome".to_owned(), "DeadLettered".to_owned())]);
        assert_eq!(refs[1].values, [("adapter".to_owned(), "paging-sink".to_owned())]);
        let regex = metric_refs(
            r#"rate(alertmanager_ingress_requests_rejected_total{reason=~"Overloaded|Timeout", x!="y"}[5m])"#,
        );
        assert_eq!(regex[0].values.len(), 2, "{regex:?}");
        assert!(
            metric_refs(
                "histogram_quantile(0.5, sum by (le) (rate(paging_sink_vendor_seconds_bucket[$__rate_interval])))"
            )
            .iter()
            .any(|r| r.name == "paging_sink_vendor_seconds_bucket")
        );
        assert!(metric_refs(r#"up{job="sre_x"}"#).is_empty(), "a label value is not a metric");
    }

    #[test]
    fn a_renamed_metric_or_label_value_is_reported() {
        let scrape = "sre_build_info{adapter=\"paging-sink\",version=\"0.1.0\"} 1\nsre_bus_connected 1\n";
        let seen = samples(scrape);
        assert_eq!(seen["sre_build_info"][0]["adapter"], "paging-sink");
        assert!(seen.contains_key("sre_bus_connected"));
        let result = std::panic::catch_unwind(|| assert_exported("paging-sink", scrape));
        assert!(result.is_err(), "a scrape missing most metrics must fail");
    }
}
