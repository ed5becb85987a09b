//! The alert rules and dashboards the charts ship, checked with Prometheus' own promtool:
//! the rules load, their unit tests (deploy/monitoring/tests/) fire what they should when they
//! should, every dashboard query is valid PromQL, and every alert links a runbook that exists.
//! That they name only what the adapters export is checked by each adapter's tests against
//! a scrape of the running adapter (`sre_testkit::monitoring::assert_exported`).

use std::path::PathBuf;
use std::process::Command;

use sre_testkit::monitoring::{ADAPTERS, RUNBOOKS, alerts, dashboard, monitoring_dir, panel_queries, rules_file};

/// promtool: `SRE_PROMTOOL`, or on PATH (Debian's `prometheus` package, which
/// `cargo xtask setup` installs).
fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("SRE_PROMTOOL") {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|d| d.join("promtool")).find(|p| p.is_file()))
        .expect("promtool not found: run `cargo xtask setup` (it installs Debian's prometheus package)")
}

fn run(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let out = Command::new(promtool()).args(args).output().expect("runs promtool");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn every_rules_file_loads_in_promtool() {
    for adapter in ADAPTERS {
        let file = rules_file(adapter);
        let (ok, out) = run(&["check".as_ref(), "rules".as_ref(), file.as_os_str()]);
        assert!(ok, "{adapter}: promtool check rules:\n{out}");
        assert!(out.contains(&format!("SUCCESS: {} rules found", alerts(adapter).len())), "{out}");
    }
}

#[test]
fn the_rules_fire_as_their_unit_tests_say() {
    for adapter in ADAPTERS {
        let tests = monitoring_dir().join("tests").join(format!("{adapter}.test.yaml"));
        let (ok, out) = run(&["test".as_ref(), "rules".as_ref(), tests.as_os_str()]);
        assert!(ok, "{adapter}: promtool test rules:\n{out}");
        // Every alert is exercised, firing at least once.
        let text = std::fs::read_to_string(&tests).expect("test file");
        for alert in alerts(adapter) {
            let firing = text
                .split("- eval_time:")
                .any(|case| case.contains(&format!("alertname: {}\n", alert.name)) && case.contains("- exp_labels:"));
            assert!(firing, "{adapter}: no promtool test sees {} fire", alert.name);
        }
    }
}

#[test]
fn a_broken_rule_fails_its_unit_test() {
    // The unit tests can fail: the same tests against rules whose join names another
    // adapter see nothing fire.
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = std::fs::read_to_string(rules_file("paging-sink"))
        .expect("rules")
        .replace("adapter=\"paging-sink\"", "adapter=\"ticketing-sink\"");
    std::fs::create_dir_all(dir.path().join("helm/paging-sink/files")).expect("dirs");
    std::fs::create_dir_all(dir.path().join("monitoring/tests")).expect("dirs");
    std::fs::write(dir.path().join("helm/paging-sink/files/alerts.yaml"), broken).expect("write");
    let tests = dir.path().join("monitoring/tests/paging-sink.test.yaml");
    std::fs::copy(monitoring_dir().join("tests/paging-sink.test.yaml"), &tests).expect("copy");
    let (ok, out) = run(&["test".as_ref(), "rules".as_ref(), tests.as_os_str()]);
    assert!(!ok && out.contains("SreAdapterBusDisconnected"), "{out}");
}

#[test]
fn every_alert_has_a_severity_a_summary_and_a_runbook_that_exists() {
    let runbooks = monitoring_dir().join("runbooks");
    let mut linked = std::collections::BTreeSet::new();
    for adapter in ADAPTERS {
        for alert in alerts(adapter) {
            let what = format!("{adapter}: {}", alert.name);
            let severity = alert.labels.get("severity").map(String::as_str);
            assert!(matches!(severity, Some("critical" | "warning")), "{what}: severity {severity:?}");
            for key in ["summary", "description", "runbook_url"] {
                assert!(alert.annotations.get(key).is_some_and(|v| !v.is_empty()), "{what}: no {key}");
            }
            let url = &alert.annotations["runbook_url"];
            let page = url.strip_prefix(&format!("{RUNBOOKS}/")).unwrap_or_else(|| panic!("{what}: {url}"));
            let text = std::fs::read_to_string(runbooks.join(page)).unwrap_or_else(|e| panic!("{what}: {page}: {e}"));
            assert!(text.starts_with(&format!("# {}\n", alert.name)), "{what}: {page} is not its runbook");
            for section in ["## What it means", "## Confirm", "## What to do"] {
                assert!(text.contains(section), "{what}: {page} lacks {section:?}");
            }
            linked.insert(page.to_owned());
        }
    }
    let pages: std::collections::BTreeSet<String> = std::fs::read_dir(&runbooks)
        .expect("runbooks")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md") && n != "README.md")
        .collect();
    assert_eq!(pages, linked, "every runbook page belongs to an alert, and every alert has one");
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    // promtool checks PromQL in rule files: each panel query becomes a recording rule,
    // with Grafana's $__rate_interval as a duration.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut uids = std::collections::BTreeSet::new();
    for adapter in ADAPTERS {
        let dash = dashboard(adapter);
        assert!(uids.insert(dash["uid"].as_str().expect("uid").to_owned()), "{adapter}: uid taken");
        let queries = panel_queries(adapter);
        assert!(queries.len() >= 8, "{adapter}: {} queries", queries.len());
        let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
        for (i, (_, expr)) in queries.iter().enumerate() {
            let expr = expr.replace("$__rate_interval", "5m");
            file.push_str(&format!(
                "      - record: dashboard:query:{i}\n        expr: {}\n",
                serde_json::to_string(&expr).expect("json")
            ));
        }
        let path = dir.path().join(format!("{adapter}.yaml"));
        std::fs::write(&path, file).expect("write");
        let (ok, out) = run(&["check".as_ref(), "rules".as_ref(), path.as_os_str()]);
        assert!(ok, "{adapter}: a dashboard query is not valid PromQL:\n{out}");
        for panel in dash["panels"].as_array().expect("panels") {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{adapter}: {}", panel["title"]);
        }
    }
}
