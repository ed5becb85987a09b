//! Checks that an adapter's Helm chart (`deploy/helm/<adapter>/`) cannot drift from its code:
//! the chart's default values are a configuration the adapter's `--check-config` accepts,
//! every `secret_ref` in them is mounted, and the templates are the shared ones.
//!
//! Helm itself renders and lints each chart: no Helm binary is offered by the registries
//! this project installs from, so `cargo xtask setup` installs Helm v4 as a library
//! (PyPI `helm-python-sdk`, pinned) and [`render`] drives it. The configuration the rendered
//! ConfigMap carries is checked by the adapter's own `--check-config`; the rendered
//! Deployment is checked for what the adapters rely on (probes, mounts, non-root,
//! read-only root filesystem, the bus user's secret).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_norway::Value;

pub use crate::charts_dir;

/// The configuration in the chart's default values, as the ConfigMap carries it (YAML),
/// with `edit` applied to it first (e.g. to leave out a key).
pub fn values_config(name: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut values = read_yaml(&charts_dir().join(name).join("values.yaml"));
    let config = values.get_mut("config").unwrap_or_else(|| panic!("{name}: values.yaml has no `config:`"));
    edit(config);
    serde_norway::to_string(config).expect("yaml")
}

/// Renders and lints with Helm: runs in `.tools/venv`'s Python (or `SRE_HELM_PYTHON`).
const RENDER: &str = r#"
import json, sys
from helm_python import _native
from helm_python.chart import Chart, lint
path, name, values, apis = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]) or None, json.loads(sys.argv[4])
report = lint(path, values, strict=True, kube_version="v1.30.0")
opts = {"name": name, "namespace": "sre", "is_install": True}
if apis:
    # As `helm template --api-versions`: optional objects gated on the cluster's APIs.
    opts["api_versions"] = apis
chart = Chart.load(path)
manifests = json.loads(_native.call_string("helm_render", chart._raw(), json.dumps(values) if values else None, json.dumps(opts)))
print(json.dumps({"lint": report, "manifests": manifests}))
"#;

/// A chart as Helm renders it.
#[derive(Debug)]
pub struct Rendered {
    /// Lint findings at warning level or above, and lint errors (strict mode).
    pub lint: Vec<String>,
    /// Each non-empty manifest, by kind (the first of a kind a template renders several of).
    pub objects: std::collections::BTreeMap<String, Value>,
    /// Every object rendered, in order.
    pub all: Vec<Value>,
    /// The manifests as Helm rendered them, one YAML stream (what `helm template` prints,
    /// NOTES.txt aside). The `schema` module validates this text, not [`Rendered::all`]: parsed
    /// as Kubernetes parses it (YAML 1.1), `defaultMode: 0440` is the number 288, while the
    /// YAML 1.2 parser behind `all` reads it as the string `"0440"`.
    pub yaml: String,
}

impl Rendered {
    /// Every object of `kind`.
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.all.iter().filter(|o| o["kind"].as_str() == Some(kind)).collect()
    }
}

/// Helm's rendering and strict lint of chart `name` with `values` (JSON; merged over the
/// chart's defaults as `--set` would).
pub fn render(name: &str, values: &serde_json::Value) -> Rendered {
    try_render(name, values).unwrap_or_else(|e| panic!("helm could not render {name}: {e}"))
}

/// [`render`] on a cluster that serves `api_versions` besides the built-in ones (e.g.
/// `jetstream.nats.io/v1beta2`, `monitoring.coreos.com/v1`), as `helm template
/// --api-versions`.
pub fn render_on(name: &str, values: &serde_json::Value, api_versions: &[&str]) -> Rendered {
    try_render_on(name, values, api_versions).unwrap_or_else(|e| panic!("helm could not render {name}: {e}"))
}

/// [`render`], with Helm's refusal (a template's `fail`, say) as the error.
pub fn try_render(name: &str, values: &serde_json::Value) -> Result<Rendered, String> {
    try_render_on(name, values, &[])
}

/// [`render_on`], with Helm's refusal as the error.
pub fn try_render_on(name: &str, values: &serde_json::Value, api_versions: &[&str]) -> Result<Rendered, String> {
    let python = python();
    let out = std::process::Command::new(&python)
        .args(["-c", RENDER])
        .arg(charts_dir().join(name))
        .arg(name)
        .arg(values.to_string())
        .arg(serde_json::json!(api_versions).to_string())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask setup`: it installs Helm)", python.display()));
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the renderer's JSON");
    let mut lint: Vec<String> = answer["lint"]["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e.as_str().unwrap_or_default().to_owned())
        .collect();
    for m in answer["lint"]["messages"].as_array().into_iter().flatten() {
        if m["severity"].as_u64().unwrap_or(0) >= 2 {
            lint.push(format!(
                "{}: {}",
                m["path"].as_str().unwrap_or_default(),
                m["error"].as_str().unwrap_or_default()
            ));
        }
    }
    let mut objects = std::collections::BTreeMap::new();
    let mut all = Vec::new();
    let mut yaml = String::new();
    for (path, text) in answer["manifests"].as_object().expect("manifests") {
        if path.ends_with("NOTES.txt") || text.as_str().unwrap_or_default().trim().is_empty() {
            continue;
        }
        yaml.push_str(&format!("---\n# Source: {path}\n{}\n", text.as_str().unwrap_or_default().trim_end()));
        let docs: Vec<Value> = serde_norway::Deserializer::from_str(text.as_str().unwrap_or_default())
            .map(|d| {
                serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{path} is not YAML as rendered: {e}"))
            })
            .filter(|d: &Value| !d.is_null())
            .collect();
        let several = docs.len() > 1;
        for doc in docs {
            let mut kind = doc["kind"].as_str().unwrap_or_else(|| panic!("{path}: no kind")).to_owned();
            if path.ends_with("/dashboard.yaml") {
                // The second ConfigMap: the Grafana dashboard.
                kind = "Dashboard".to_owned();
            }
            all.push(doc.clone());
            if several {
                objects.entry(kind).or_insert(doc);
            } else {
                assert!(objects.insert(kind.clone(), doc).is_none(), "{name}: two {kind}s");
            }
        }
    }
    Ok(Rendered { lint, objects, all, yaml })
}

/// The Python that has Helm (and the schema validator) installed: `SRE_HELM_PYTHON`, or
/// `.tools/venv`'s, where `cargo xtask setup` installs them.
pub(crate) fn python() -> PathBuf {
    std::env::var_os("SRE_HELM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join(".tools/venv/bin/python"))
}

/// Packages with Helm, as `helm package <chart> -d <destination>`.
const PACKAGE: &str = r#"
import json, sys
from helm_python.chart import Chart, package
archive = package(sys.argv[1], destination=sys.argv[2])
chart = Chart.load(archive)
print(json.dumps({"archive": archive, "metadata": chart.metadata,
                  "files": sorted([t["name"] for t in chart.templates] + [f["name"] for f in chart.files])}))
"#;

/// A chart archive as `helm package` wrote it, and what Helm reads back from it.
#[derive(Debug)]
pub struct Packaged {
    /// The `.tgz` written.
    pub archive: PathBuf,
    /// The archive's `Chart.yaml` (name, version, appVersion, kubeVersion, ...).
    pub metadata: serde_json::Value,
    /// The templates and files in the archive (`templates/deployment.yaml`, `files/alerts.yaml`).
    pub files: Vec<String>,
}

/// Packages chart `name` into `destination` with Helm (`helm package`), as a release does,
/// and reads the archive back, so a test can check what ships.
pub fn package(name: &str, destination: &Path) -> Result<Packaged, String> {
    let python = python();
    let out = std::process::Command::new(&python)
        .args(["-c", PACKAGE])
        .arg(charts_dir().join(name))
        .arg(destination)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask setup`: it installs Helm)", python.display()));
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the packager's JSON");
    Ok(Packaged {
        archive: PathBuf::from(answer["archive"].as_str().expect("archive")),
        metadata: answer["metadata"].clone(),
        files: answer["files"].as_array().into_iter().flatten().filter_map(|f| f.as_str().map(str::to_owned)).collect(),
    })
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

    // As Helm renders it: the ConfigMap carries exactly that configuration, and the
    // Deployment runs the adapter the way it expects to run.
    let rendered = render(name, &serde_json::json!({}));
    assert!(rendered.lint.is_empty(), "{name}: helm lint --strict: {:?}", rendered.lint);
    let map = &rendered.objects["ConfigMap"];
    let carried: Value =
        serde_norway::from_str(map["data"]["config.yaml"].as_str().expect("data.config.yaml")).expect("yaml");
    assert_eq!(&carried, config, "{name}: the ConfigMap carries the values' config");
    std::fs::write(&file, map["data"]["config.yaml"].as_str().expect("config")).expect("write");
    let (status, stderr) = crate::service::check_config(bin, &file).expect("runs --check-config");
    assert!(status.success(), "{name}: the rendered ConfigMap is not a valid configuration: {stderr}");
    assert_deployment(name, &rendered.objects["Deployment"], &values);
    for kind in ["Service", "ServiceAccount", "PodDisruptionBudget"] {
        assert!(rendered.objects.contains_key(kind), "{name}: no {kind} rendered");
    }
    let autoscaled = values["autoscaling"]["enabled"].as_bool().unwrap_or(false);
    assert_eq!(
        rendered.objects.contains_key("HorizontalPodAutoscaler"),
        autoscaled,
        "{name}: HPA iff autoscaling.enabled"
    );
    // The bus user's URL comes from its Secret when one is named.
    let with_user = render(name, &serde_json::json!({"nats": {"urlSecret": {"name": "bus-user", "key": "url"}}}));
    let env = &with_user.objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"];
    let nats = env.as_sequence().into_iter().flatten().find(|e| e["name"] == "NATS_URL").expect("NATS_URL set");
    assert_eq!(nats["valueFrom"]["secretKeyRef"]["name"].as_str(), Some("bus-user"));
    // Or the user and password from their own Secret, beside a seed list in the config.
    let with_auth = render(name, &serde_json::json!({"nats": {"auth": {"secretName": "bus-login"}}}));
    let env = &with_auth.objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"];
    for (var, key) in [("NATS_USER", "user"), ("NATS_PASSWORD", "password")] {
        let e = env.as_sequence().into_iter().flatten().find(|e| e["name"] == var).expect("bus login set");
        assert_eq!(e["valueFrom"]["secretKeyRef"]["name"].as_str(), Some("bus-login"), "{var}");
        assert_eq!(e["valueFrom"]["secretKeyRef"]["key"].as_str(), Some(key), "{var}");
    }
    // The bus settings say how state is replicated on the cluster the chart is for.
    assert_eq!(values["config"]["runtime"]["bus"]["streams"]["replicas"].as_str(), Some("auto"), "{name}");

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

    assert_monitoring(name, &chart, &rendered);
    assert_ingress(name, &rendered);
    assert_bus_options(bin, name);
    assert_shared_templates(&chart);
}

/// Each way the chart connects to a secured bus (TLS from a cert-manager Secret, mTLS, TLS
/// first, a `.creds` file, an NKey seed): the Deployment mounts the named Secret and points
/// the adapter at the files in it, and the adapter's `--check-config`, run with the
/// Deployment's environment and those files in place, accepts it without a note. Two ways to
/// log in at once are refused by Helm.
fn assert_bus_options(bin: &Path, name: &str) {
    // What is set, the `nats` values, and each file variable with the `<Secret>/<key>` it names.
    type Case<'a> = (&'a str, serde_json::Value, &'a [(&'a str, &'a str)]);
    let cases: [Case; 4] = [
        ("tls", serde_json::json!({"tls": {"secretName": "bus-tls"}}), &[("NATS_CA", "bus-tls/ca.crt")]),
        (
            "mtls, tls first",
            serde_json::json!({"tls": {"secretName": "bus-tls", "clientCertificate": true, "handshakeFirst": true}}),
            &[("NATS_CA", "bus-tls/ca.crt"), ("NATS_CERT", "bus-tls/tls.crt"), ("NATS_KEY", "bus-tls/tls.key")],
        ),
        (
            "creds",
            serde_json::json!({"credsSecret": {"name": "bus-creds", "key": "adapter.creds"}}),
            &[("NATS_CREDS", "bus-creds/adapter.creds")],
        ),
        ("nkey", serde_json::json!({"nkeySecret": {"name": "bus-nkey"}}), &[("NATS_NKEY", "bus-nkey/seed")]),
    ];
    for (what, nats, files) in cases {
        let rendered = render(name, &serde_json::json!({ "nats": nats }));
        assert!(rendered.lint.is_empty(), "{name} ({what}): helm lint --strict: {:?}", rendered.lint);
        let pod = &rendered.objects["Deployment"]["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let env: Vec<(String, String)> = c["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_str()?.to_owned())))
            .collect();
        let value = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        // Each file is in a mount of the Secret it comes from.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut moved: Vec<(String, String)> = Vec::new();
        for (var, secret_file) in files {
            let (secret, key) = secret_file.split_once('/').expect("secret/key");
            let path = value(var).unwrap_or_else(|| panic!("{name} ({what}): {var} not set: {env:?}"));
            let (mount_path, file) = path.rsplit_once('/').expect("a file path");
            assert_eq!(file, key, "{name} ({what}): {var} names the Secret's key");
            let mount = c["volumeMounts"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|m| m["mountPath"].as_str() == Some(mount_path))
                .unwrap_or_else(|| panic!("{name} ({what}): nothing mounted at {mount_path}"));
            assert!(mount["subPath"].is_null(), "{name} ({what}): the whole Secret, so rotation reaches the file");
            let volume = pod["volumes"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == mount["name"])
                .expect("the mount's volume");
            assert_eq!(volume["secret"]["secretName"].as_str(), Some(secret), "{name} ({what}): {var}'s Secret");
            let local = dir.path().join(secret);
            std::fs::create_dir_all(&local).expect("mkdir");
            std::fs::write(local.join(key), "-").expect("write");
            moved.push((var.to_string(), local.join(key).display().to_string()));
        }
        assert_eq!(value("NATS_TLS_FIRST"), nats["tls"]["handshakeFirst"].as_bool().filter(|f| *f).map(|_| "true"));
        // The adapter accepts the configuration with that environment, files in place.
        let config = dir.path().join("config.yaml");
        let map = &rendered.objects["ConfigMap"];
        std::fs::write(&config, map["data"]["config.yaml"].as_str().expect("config")).expect("write");
        let mut run = std::process::Command::new(bin);
        run.arg("--check-config").arg("--config").arg(&config);
        for (k, v) in &env {
            if k.starts_with("NATS_") {
                run.env(k, v);
            }
        }
        for (k, v) in &moved {
            run.env(k, v);
        }
        let out = run.output().expect("runs --check-config");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name} ({what}): refused with the chart's environment: {stderr}");
        assert!(!stderr.contains("runtime.bus"), "{name} ({what}): {stderr}");
    }
    // One way to log in, not two.
    for (a, b) in [
        ("credsSecret", serde_json::json!({"auth": {"secretName": "bus-login"}})),
        ("nkeySecret", serde_json::json!({"credsSecret": {"name": "bus-creds"}})),
    ] {
        let mut nats = b;
        nats[a] = serde_json::json!({"name": "another"});
        let refused = try_render(name, &serde_json::json!({ "nats": nats }));
        assert!(
            refused.as_ref().is_err_and(|e| e.contains("give the bus user one way")),
            "{name}: {nats} must be refused: {:?}",
            refused.map(|r| r.objects.keys().cloned().collect::<Vec<_>>())
        );
    }
}

/// No Ingress unless asked for; asked, it exposes exactly the webhook paths given (never
/// health or metrics) on the Service's http port, and refuses any other path.
fn assert_ingress(name: &str, rendered: &Rendered) {
    assert!(!rendered.objects.contains_key("Ingress"), "{name}: an Ingress by default");
    let exposed = ingress_paths(name, &render(name, &serde_json::json!({"ingress": ingress(&["/webhooks/test"])})));
    assert_eq!(exposed, ["/webhooks/test"], "{name}");
    let refused = try_render(name, &serde_json::json!({"ingress": ingress(&["/webhooks/test", "/metrics"])}));
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("/metrics is not a webhook path")),
        "{name}: /metrics must never be exposed: {:?}",
        refused.map(|r| r.objects.keys().cloned().collect::<Vec<_>>())
    );
}

/// The `ingress` values exposing `paths` on a test host.
pub fn ingress(paths: &[&str]) -> serde_json::Value {
    serde_json::json!({"enabled": true, "className": "nginx", "host": "sre-hooks.example.com",
        "tls": [{"secretName": "sre-hooks-tls", "hosts": ["sre-hooks.example.com"]}], "paths": paths})
}

/// The paths the rendered Ingress exposes, each checked to be exact and to reach the
/// Service's http port.
fn ingress_paths(name: &str, rendered: &Rendered) -> Vec<String> {
    assert!(rendered.lint.is_empty(), "{name}: helm lint --strict: {:?}", rendered.lint);
    let ingress = &rendered.objects.get("Ingress").unwrap_or_else(|| panic!("{name}: no Ingress rendered"));
    let rule = &ingress["spec"]["rules"][0];
    assert_eq!(rule["host"].as_str(), Some("sre-hooks.example.com"), "{name}: host");
    let service = rendered.objects["Service"]["metadata"]["name"].as_str().expect("the Service's name");
    rule["http"]["paths"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|p| {
            assert_eq!(p["pathType"].as_str(), Some("Exact"), "{name}: each path exactly");
            assert_eq!(p["backend"]["service"]["name"].as_str(), Some(service), "{name}: to the adapter's Service");
            assert_eq!(p["backend"]["service"]["port"]["name"].as_str(), Some("http"), "{name}: its http port");
            p["path"].as_str().expect("path").to_owned()
        })
        .collect()
}

/// The chart with its receivers turned on as its README says (`values`: the `config`
/// additions and the `secrets` mounts): the ConfigMap is a configuration the adapter
/// accepts, every webhook secret it names is mounted, and the Ingress exposes exactly
/// `paths`.
pub fn assert_receivers(bin: &Path, name: &str, values: serde_json::Value, paths: &[&str]) {
    let mut values = values;
    values["ingress"] = ingress(paths);
    let rendered = render(name, &values);
    assert_eq!(ingress_paths(name, &rendered), paths, "{name}: the receivers' paths, and nothing else");
    let map = &rendered.objects["ConfigMap"];
    let text = map["data"]["config.yaml"].as_str().expect("config");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, text).expect("write");
    let (status, stderr) = crate::service::check_config(bin, &file).expect("runs --check-config");
    assert!(status.success(), "{name}: the receivers' configuration is refused: {stderr}");
    let config: Value = serde_norway::from_str(text).expect("yaml");
    let mut used = BTreeSet::new();
    collect_refs(&config, &mut used);
    let mounts: BTreeSet<String> =
        rendered.objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|m| m["mountPath"].as_str()?.strip_prefix("/var/run/secrets/sre/").map(str::to_owned))
            .collect();
    assert!(used.iter().any(|r| r.contains("webhook")), "{name}: the receivers name their secrets: {used:?}");
    assert_eq!(used, mounts, "{name}: every secret the receivers name is mounted");
}

/// The alerting rules and the dashboard ship as the chart renders them: the PrometheusRule
/// only where its CRD exists (or with `requireCrd: false`) and carrying `files/alerts.yaml`
/// with the runbook links moved to `runbookBaseUrl`; the dashboard ConfigMap with the
/// Grafana sidecar's label, carrying `files/dashboard.json`.
fn assert_monitoring(name: &str, chart: &Path, rendered: &Rendered) {
    assert!(!rendered.objects.contains_key("PrometheusRule"), "{name}: a PrometheusRule without its CRD");
    let base = "https://git.example.com/sre/runbooks";
    let forced = render(name, &serde_json::json!({"prometheusRule": {"requireCrd": false, "runbookBaseUrl": base}}));
    assert!(forced.lint.is_empty(), "{name}: helm lint --strict: {:?}", forced.lint);
    let rule = &forced.objects["PrometheusRule"];
    let file = std::fs::read_to_string(chart.join("files/alerts.yaml")).expect("files/alerts.yaml");
    let moved = file.replace(crate::monitoring::RUNBOOKS, base);
    let expected: Value = serde_norway::from_str(&moved).expect("alerts.yaml is YAML");
    assert_eq!(rule["spec"], expected, "{name}: the PrometheusRule carries files/alerts.yaml");
    assert!(moved.contains(&format!("{base}/")), "{name}: runbook links follow runbookBaseUrl");

    let dashboard = &rendered.objects["Dashboard"];
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"].as_str(), Some("1"), "{name}: sidecar label");
    let carried = dashboard["data"][format!("{name}.json").as_str()].as_str().expect("the dashboard's JSON");
    let json: serde_json::Value = serde_json::from_str(carried).expect("the dashboard is JSON");
    assert_eq!(json, crate::monitoring::dashboard(name), "{name}: the ConfigMap carries files/dashboard.json");
    let off = render(
        name,
        &serde_json::json!({"dashboard": {"enabled": false}, "prometheusRule": {"enabled": false, "requireCrd": false}}),
    );
    assert!(
        !off.objects.contains_key("Dashboard") && !off.objects.contains_key("PrometheusRule"),
        "{name}: both can be turned off"
    );
}

/// The rendered Deployment: probes, config and secret mounts, non-root, read-only root.
fn assert_deployment(name: &str, deployment: &Value, values: &Value) {
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true), "{name}: runAsNonRoot");
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false), "{name}: no API token");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true), "{name}: read-only root");
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"].as_bool(), Some(false), "{name}: no escalation");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"), "{name}: liveness");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"), "{name}: readiness");
    let port = values["port"].as_u64().expect("port");
    assert_eq!(c["ports"][0]["containerPort"].as_u64(), Some(port), "{name}: container port");
    let env = |k: &str| {
        c["env"].as_sequence().into_iter().flatten().find(|e| e["name"] == k).and_then(|e| e["value"].as_str())
    };
    assert_eq!(env("HTTP_ADDR"), Some(format!("0.0.0.0:{port}").as_str()), "{name}: listens on the pod's port");
    assert_eq!(env("SECRETS_DIR"), Some("/var/run/secrets/sre"), "{name}: secrets dir");
    let args: Vec<&str> = c["args"].as_sequence().into_iter().flatten().filter_map(Value::as_str).collect();
    assert_eq!(args, ["--config", "/etc/sre/config/config.yaml"], "{name}: args");
    let mounts: Vec<&str> =
        c["volumeMounts"].as_sequence().into_iter().flatten().filter_map(|m| m["mountPath"].as_str()).collect();
    assert!(mounts.contains(&"/etc/sre/config"), "{name}: config mount {mounts:?}");
    for s in values["secrets"].as_sequence().into_iter().flatten() {
        let at = format!("/var/run/secrets/sre/{}", s["ref"].as_str().expect("ref"));
        assert!(mounts.contains(&at.as_str()), "{name}: secret {at} not mounted: {mounts:?}");
    }
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
        "kind: PrometheusRule",
        ".Values.dashboard.labels",
        ".Files.Get \"files/alerts.yaml\"",
        ".Files.Get \"files/dashboard.json\"",
        "kind: PodDisruptionBudget",
        "kind: HorizontalPodAutoscaler",
        "kind: Ingress",
        "pathType: Exact",
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

/// Secret references in a configuration: `secret_ref`, `*_ref`, the lists `*_refs` (a
/// receiver's secrets, several while one rotates), and the webhook auth keys that take a
/// ref (`bearer`, `basic`).
fn collect_refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                let key = k.as_str().unwrap_or_default();
                let is_ref = key == "secret_ref" || key.ends_with("_ref") || key == "bearer" || key == "basic";
                match (v.as_str(), v.as_sequence()) {
                    (Some(s), _) if is_ref => {
                        out.insert(s.to_owned());
                    }
                    (_, Some(refs)) if key.ends_with("_refs") => {
                        out.extend(refs.iter().filter_map(|r| r.as_str().map(str::to_owned)));
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

/// `path` (from the workspace root) holds exactly `expected` text (written with
/// `SRE_BLESS=1`).
pub fn assert_text_file(path: &str, expected: &str) {
    let file = crate::workspace_root().join(path);
    if std::env::var_os("SRE_BLESS").is_some() {
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(&file, expected).expect("write");
        return;
    }
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{path}: {e} (generate it with SRE_BLESS=1 cargo test)"));
    assert!(text == expected, "{path} differs from what it is generated from (regenerate with SRE_BLESS=1 cargo test)");
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
