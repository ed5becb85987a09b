//! Checks that an adapter's Helm chart (`deploy/helm/<adapter>/`) cannot drift from its code:
//! the chart's default values are a configuration the adapter's `--check-config` accepts,
//! every `secret_ref` in them is mounted, and the templates are the shared ones.
//!
//! No Helm binary is available where the tests run, so templates are checked as text (the
//! same files in every chart, with the probes and security settings the adapters rely on);
//! values are checked by the adapter itself.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_norway::Value;

/// The folder holding every adapter chart.
pub fn charts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/helm")
}

/// The configuration in the chart's default values, as the ConfigMap carries it (YAML),
/// with `edit` applied to it first (e.g. to leave out a key).
pub fn values_config(name: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut values = read_yaml(&charts_dir().join(name).join("values.yaml"));
    let config = values.get_mut("config").unwrap_or_else(|| panic!("{name}: values.yaml has no `config:`"));
    edit(config);
    serde_norway::to_string(config).expect("yaml")
}

/// Asserts everything this module promises about the chart of the adapter `bin` (whose
/// crate version is `version`); panics with the reason otherwise.
pub fn assert_chart(bin: &Path, name: &str, version: &str) {
    let chart = charts_dir().join(name);
    let chart_yaml = read_yaml(&chart.join("Chart.yaml"));
    assert_eq!(chart_yaml["name"].as_str(), Some(name), "Chart.yaml name");
    assert_eq!(chart_yaml["appVersion"].as_str(), Some(version), "Chart.yaml appVersion follows the crate");
    assert_eq!(chart_yaml["version"].as_str(), Some(version), "Chart.yaml version follows the crate");

    let values = read_yaml(&chart.join("values.yaml"));
    let config = values.get("config").unwrap_or_else(|| panic!("{name}: values.yaml has no `config:`"));

    // The values' configuration is one the adapter accepts, exactly as the ConfigMap carries it.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, serde_norway::to_string(config).expect("yaml")).expect("write");
    let (status, stderr) = crate::service::check_config(bin, &file).expect("runs --check-config");
    assert!(status.success(), "{name}: the chart's values are not a valid configuration: {stderr}");

    // Every secret the configuration names is mounted, and nothing else is.
    let mut used = BTreeSet::new();
    collect_refs(config, &mut used);
    let mounted: BTreeSet<String> = values["secrets"]
        .as_sequence()
        .map(|s| s.iter().map(|m| m["ref"].as_str().expect("secrets[].ref").to_owned()).collect())
        .unwrap_or_default();
    assert_eq!(used, mounted, "{name}: the config's secret refs and values.secrets differ");
    for mount in values["secrets"].as_sequence().into_iter().flatten() {
        assert!(mount["secretName"].as_str().is_some_and(|s| !s.is_empty()), "{name}: secrets[].secretName");
    }

    // The pod outlives the adapter's own shutdown grace.
    let grace = config["runtime"]["shutdown_grace"]
        .as_str()
        .map(|s| humantime::parse_duration(s).expect("shutdown_grace"))
        .unwrap_or(Duration::from_secs(25));
    let pod_grace = values["terminationGracePeriodSeconds"].as_u64().expect("terminationGracePeriodSeconds");
    assert!(Duration::from_secs(pod_grace) > grace, "{name}: terminationGracePeriodSeconds must exceed shutdown_grace");

    assert_shared_templates(&chart);
}

/// The chart's templates are byte for byte those of every other adapter chart, and carry the
/// objects and settings every adapter needs.
fn assert_shared_templates(chart: &Path) {
    let templates = chart.join("templates");
    let files = list(&templates);
    for other in std::fs::read_dir(charts_dir()).expect("deploy/helm").map(|e| e.expect("entry").path()) {
        if other == chart || !other.join("Chart.yaml").exists() {
            continue;
        }
        assert_eq!(
            files,
            list(&other.join("templates")),
            "{} and {} have different templates",
            chart.display(),
            other.display()
        );
        for f in &files {
            let a = std::fs::read(templates.join(f)).expect("read");
            let b = std::fs::read(other.join("templates").join(f)).expect("read");
            assert!(a == b, "templates/{f} differs between {} and {}", chart.display(), other.display());
        }
    }
    let all: String = files.iter().map(|f| std::fs::read_to_string(templates.join(f)).expect("read")).collect();
    for needle in [
        "kind: Deployment",
        "kind: Service\n",
        "kind: ConfigMap",
        "kind: ServiceMonitor",
        "kind: PodDisruptionBudget",
        "kind: HorizontalPodAutoscaler",
        "path: /healthz",
        "path: /readyz",
        "path: /metrics",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "toYaml .Values.config",
        "secretName: {{ $s.secretName }}",
        "mountPath: /var/run/secrets/sre/{{ $s.ref }}",
        "value: /var/run/secrets/sre",
    ] {
        assert!(all.contains(needle), "{}: templates lack `{needle}`", chart.display());
    }
}

/// Secret references in a configuration: `secret_ref`, `*_ref`, and the webhook auth keys
/// that take a ref (`bearer`, `basic`).
fn collect_refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                let key = k.as_str().unwrap_or_default();
                let is_ref = key == "secret_ref" || key.ends_with("_ref") || key == "bearer" || key == "basic";
                match v.as_str() {
                    Some(s) if is_ref => {
                        out.insert(s.to_owned());
                    }
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Sequence(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn list(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// Asserts that `path` (relative to the workspace root) holds `expected` as JSON. With
/// `SRE_BLESS=1` it writes the file instead: generated deploy files stay checked in and
/// reviewable, and cannot drift from the code that generates them.
pub fn assert_json_file(path: &str, expected: &serde_json::Value) {
    let file = crate::workspace_root().join(path);
    if std::env::var_os("SRE_BLESS").is_some() {
        let text = serde_json::to_string_pretty(expected).expect("json") + "\n";
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(&file, text).expect("write");
        return;
    }
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{path}: {e} (generate it with SRE_BLESS=1 cargo test)"));
    let actual: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(&actual, expected, "{path} differs from what the code creates (regenerate with SRE_BLESS=1 cargo test)");
}
