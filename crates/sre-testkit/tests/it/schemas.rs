//! Every chart, rendered with its defaults and with every option on, is what a Kubernetes API
//! server of each version the chart claims would accept: strictly valid against the schemas
//! of the oldest version in Chart.yaml's `kubeVersion` and of the newest the validator knows,
//! the Prometheus Operator's objects against its models, NACK's by their metadata only
//! (`sre_testkit::schema` says why). A wrong field is reported by name, and `helm package`
//! makes a versioned archive of each.

use serde_json::{Value, json};
use sre_testkit::chart::{Rendered, ingress, package, render, render_on};
use sre_testkit::inventory::ADAPTERS;
use sre_testkit::schema::{Violation, kube_versions, violations};

/// What a cluster with the Prometheus Operator and NACK installed serves, as
/// `helm template --api-versions` names it.
const OPERATORS: [&str; 3] =
    ["monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule", "jetstream.nats.io/v1beta2"];

fn chart_yaml(name: &str) -> serde_norway::Value {
    let text = std::fs::read_to_string(sre_testkit::charts_dir().join(name).join("Chart.yaml")).expect("Chart.yaml");
    serde_norway::from_str(&text).expect("Chart.yaml is YAML")
}

/// The Kubernetes versions chart `name` is checked for: the oldest its `kubeVersion` admits
/// (`>=1.25.0-0` gives 1.25) and the newest the validator has.
fn claimed_versions(name: &str) -> Vec<String> {
    let claim = chart_yaml(name)["kubeVersion"].as_str().expect("Chart.yaml kubeVersion").to_owned();
    let floor = claim.strip_prefix(">=").unwrap_or_else(|| panic!("{name}: kubeVersion `{claim}` is not `>=x.y`"));
    let oldest: Vec<&str> = floor.split(['.', '-']).take(2).collect();
    let oldest = oldest.join(".");
    let known = kube_versions();
    assert!(known.contains(&oldest), "{name}: the validator has no schemas for Kubernetes {oldest}: {known:?}");
    let newest = known.last().expect("some versions").clone();
    vec![oldest, newest]
}

/// The chart's receivers turned on as its README says (`config` additions, the `secrets`
/// mounting what they name) and the webhook paths the Ingress then exposes.
fn receivers(name: &str) -> (Value, Vec<&'static str>) {
    match name {
        "alertmanager-ingress" => (
            json!({
                "config": {"alertmanager_integration": {"auth": {"bearer": "platform/alertmanager-webhook"}}},
                "secrets": [{"ref": "platform/alertmanager-webhook", "secretName": "alertmanager-webhook"}],
            }),
            vec!["/webhooks/alertmanager"],
        ),
        "paging-sink" => (
            json!({
                "config": {"paging_integration": {
                    "pagerduty": {"webhook": {"enabled": true, "secret_refs": ["platform/pagerduty-webhook"]}},
                    "jsm": {"api_key_ref": "platform/jsm-api-key", "default_team": "sre",
                            "webhook": {"enabled": true, "secret_refs": ["platform/jsm-webhook"]}}}},
                "secrets": [
                    {"ref": "platform/pagerduty-routing-key", "secretName": "pagerduty-routing-key"},
                    {"ref": "platform/pagerduty-webhook", "secretName": "pagerduty-webhook"},
                    {"ref": "platform/jsm-api-key", "secretName": "jsm-api-key"},
                    {"ref": "platform/jsm-webhook", "secretName": "jsm-webhook"},
                ],
            }),
            vec!["/webhooks/pagerduty", "/webhooks/jsm"],
        ),
        "ticketing-sink" => (
            json!({
                "config": {"ticketing_integration": {
                    "jira": {"webhook": {"enabled": true, "secret_refs": ["platform/jira-webhook"]}},
                    "github": {"webhook": {"enabled": true, "secret_refs": ["platform/github-webhook"]}}}},
                "secrets": [
                    {"ref": "platform/jira-credentials", "secretName": "jira-credentials"},
                    {"ref": "platform/github-token", "secretName": "github-token"},
                    {"ref": "platform/jira-webhook", "secretName": "jira-webhook"},
                    {"ref": "platform/github-webhook", "secretName": "github-webhook"},
                ],
            }),
            vec!["/webhooks/jira", "/webhooks/github"],
        ),
        // argocd-sync serves no webhook: no receivers, no Ingress.
        _ => (json!({}), vec![]),
    }
}

/// Chart `name` with every option on, logging in to the bus the way `login` says (the ways
/// exclude each other: the chart refuses two).
fn every_option_on(name: &str, login: Value) -> Value {
    let (mut values, paths) = receivers(name);
    if !paths.is_empty() {
        values["ingress"] = ingress(&paths);
        values["ingress"]["annotations"] = json!({"nginx.ingress.kubernetes.io/proxy-body-size": "4m"});
    }
    let mut nats = json!({"tls": {"secretName": "bus-tls", "clientCertificate": true, "handshakeFirst": true}});
    nats.as_object_mut().expect("object").extend(login.as_object().expect("object").clone());
    let more = json!({
        "nats": nats,
        "autoscaling": {"enabled": true, "minReplicas": 2, "maxReplicas": 6, "targetCPUUtilizationPercentage": 70},
        "serviceMonitor": {"labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"labels": {"release": "kube-prometheus-stack"},
                           "runbookBaseUrl": "https://git.example.com/sre/runbooks"},
        "dashboard": {"namespace": "monitoring", "annotations": {"grafana_folder": "SRE"}},
        "nack": {"enabled": true, "connection": {"account": "sre"}},
        "otlpEndpoint": "http://otel-collector.observability:4317",
        "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
        "podAnnotations": {"example.com/team": "sre"},
        "imagePullSecrets": [{"name": "ghcr-pull"}],
        "serviceAccount": {"create": true, "name": format!("{name}-sa")},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app.kubernetes.io/name": name}}}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100,
            "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": name}}}}]}},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "sre", "effect": "NoSchedule"}],
    });
    values.as_object_mut().expect("object").extend(more.as_object().expect("object").clone());
    values
}

/// Each way to render chart `name` a user can choose: its defaults on a bare cluster and on
/// one with the operators, and every option on with each way to log in to the bus.
fn combinations(name: &str) -> Vec<(String, Rendered)> {
    let mut all = vec![
        (format!("{name}, defaults"), render(name, &json!({}))),
        (format!("{name}, defaults, with the operators"), render_on(name, &json!({}), &OPERATORS)),
    ];
    for (way, login) in [
        ("urlSecret", json!({"urlSecret": {"name": "bus-user", "key": "url"}})),
        ("auth", json!({"auth": {"secretName": "bus-login"}})),
        ("credsSecret", json!({"credsSecret": {"name": "bus-creds", "key": "adapter.creds"}})),
        ("nkeySecret", json!({"nkeySecret": {"name": "bus-nkey"}})),
    ] {
        let label = format!("{name}, every option on, nats.{way}");
        all.push((label, render_on(name, &every_option_on(name, login), &OPERATORS)));
    }
    all
}

fn assert_chart_validates(name: &str) {
    let versions = claimed_versions(name);
    let rendered = combinations(name);
    for (label, r) in &rendered {
        assert!(r.lint.is_empty(), "{label}: helm lint --strict: {:?}", r.lint);
    }
    // Every option on renders every kind the templates have, so all of them are checked.
    let (label, on) = rendered.last().expect("combinations");
    let mut kinds: Vec<&str> = on.all.iter().filter_map(|o| o["kind"].as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut expected = vec![
        "ConfigMap",
        "Consumer",
        "Deployment",
        "HorizontalPodAutoscaler",
        "Ingress",
        "KeyValue",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ];
    if receivers(name).1.is_empty() {
        expected.retain(|k| *k != "Ingress");
    }
    if on.of_kind("Consumer").is_empty() {
        // alertmanager-ingress and argocd-sync consume no facts: KV buckets only, if any.
        expected.retain(|k| *k != "Consumer");
    }
    if on.of_kind("KeyValue").is_empty() {
        expected.retain(|k| *k != "KeyValue");
    }
    assert_eq!(kinds, expected, "{label}: the kinds rendered");

    let manifests: Vec<(&str, &str)> = rendered.iter().map(|(l, r)| (l.as_str(), r.yaml.as_str())).collect();
    let versions: Vec<&str> = versions.iter().map(String::as_str).collect();
    let found = violations(&manifests, &versions);
    let report: Vec<String> = found.iter().map(Violation::to_string).collect();
    assert!(found.is_empty(), "{name}: {} schema violations:\n{}", found.len(), report.join("\n"));
}

#[test]
fn alertmanager_ingress_validates_against_the_kubernetes_schemas() {
    assert_chart_validates("alertmanager-ingress");
}

#[test]
fn argocd_sync_validates_against_the_kubernetes_schemas() {
    assert_chart_validates("argocd-sync");
}

#[test]
fn paging_sink_validates_against_the_kubernetes_schemas() {
    assert_chart_validates("paging-sink");
}

#[test]
fn ticketing_sink_validates_against_the_kubernetes_schemas() {
    assert_chart_validates("ticketing-sink");
}

#[test]
fn every_chart_is_checked() {
    let mut charts: Vec<String> = std::fs::read_dir(sre_testkit::charts_dir())
        .expect("deploy/helm")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.join("Chart.yaml").is_file())
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    charts.sort();
    let mut checked = ADAPTERS.map(str::to_owned).to_vec();
    checked.sort();
    assert_eq!(charts, checked, "a chart without its schema test above");
}

/// What a user gets wrong is reported against the field, in the version that refuses it:
/// a number for the pull policy, a misspelt env field, a misspelt Deployment field, a scrape
/// interval Prometheus cannot parse, a number for the ServiceMonitor's port name, a misspelt
/// alert rule field, and an API version newer clusters no longer serve. NACK's KeyValue
/// renders too, and passes: its spec is not validated.
#[test]
fn a_wrong_field_is_reported_by_name() {
    let name = "paging-sink";
    let versions = claimed_versions(name);
    let (oldest, newest) = (versions[0].as_str(), versions[1].as_str());
    let mut values = json!({
        "image": {"pullPolicy": 7},
        "extraEnv": [{"name": "RUST_LOG", "valu": "debug"}],
        "serviceMonitor": {"interval": "30 seconds"},
        "nack": {"enabled": true},
        "autoscaling": {"enabled": true},
    });
    let rendered = render_on(name, &values, &OPERATORS);
    let edited = rendered
        .yaml
        .replace("revisionHistoryLimit: 5", "revisionHistoryLimit: 5\n  replica: 3")
        .replacen("    - port: http\n", "    - port: 7\n", 1)
        .replacen("for: 2m\n", "fro: 2m\n", 1)
        .replace("apiVersion: autoscaling/v2\n", "apiVersion: autoscaling/v2beta2\n");
    assert_ne!(edited, rendered.yaml);
    let found = violations(&[("edited", &edited)], &[oldest, newest]);
    let mut seen: Vec<(String, String, String, String)> =
        found.iter().map(|v| (v.kube_version.clone(), v.kind.clone(), v.path.clone(), v.reason.clone())).collect();
    seen.sort();
    let mut expected = Vec::new();
    for kube in [oldest, newest] {
        let env = "spec.template.spec.containers[0].env";
        let extra = rendered.objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_sequence()
            .expect("env")
            .iter()
            .position(|e| e["name"] == "RUST_LOG")
            .expect("extraEnv rendered");
        for (kind, path, reason) in [
            ("Deployment", "spec.replica".to_owned(), "unknown field".to_owned()),
            (
                "Deployment",
                "spec.template.spec.containers[0].imagePullPolicy".to_owned(),
                "7 is not of type 'string', 'null'".to_owned(),
            ),
            ("Deployment", format!("{env}[{extra}].valu"), "unknown field".to_owned()),
            ("ServiceMonitor", "spec.endpoints[0].port".to_owned(), "Input should be a valid string, got 7".to_owned()),
            ("PrometheusRule", "spec.groups[0].rules[0].fro".to_owned(), "unknown field".to_owned()),
        ] {
            expected.push((kube.to_owned(), kind.to_owned(), path, reason));
        }
        // The reason spells out the operator's duration pattern.
        let interval = found
            .iter()
            .find(|v| v.kube_version == kube && v.path == "spec.endpoints[0].interval")
            .expect("the interval is reported");
        expected.push((kube.to_owned(), "ServiceMonitor".to_owned(), interval.path.clone(), interval.reason.clone()));
        assert_eq!(interval.kind, "ServiceMonitor");
        assert!(interval.reason.starts_with("String should match pattern"), "{interval}");
        assert!(interval.reason.ends_with(r#"got "30 seconds""#), "{interval}");
    }
    // autoscaling/v2beta2 is served by 1.25 and gone from 1.26 on.
    expected.push((
        newest.to_owned(),
        "HorizontalPodAutoscaler".to_owned(),
        "apiVersion".to_owned(),
        format!(
            "no schema for autoscaling/v2beta2 HorizontalPodAutoscaler in Kubernetes {newest} nor among the operators' kinds"
        ),
    ));
    expected.sort();
    assert_eq!(seen, expected, "{}", found.iter().map(Violation::to_string).collect::<Vec<_>>().join("\n"));

    // Set right again, nothing is reported.
    values["image"]["pullPolicy"] = json!("IfNotPresent");
    values["extraEnv"][0] = json!({"name": "RUST_LOG", "value": "debug"});
    values["serviceMonitor"]["interval"] = json!("30s");
    let fixed = render_on(name, &values, &OPERATORS);
    assert_eq!(violations(&[("fixed", &fixed.yaml)], &[oldest, newest]), vec![]);
}

/// The domain streams NACK declares (`deploy/nats/nack/streams.yaml`) are NACK Streams with
/// their metadata valid in every version the charts claim. Their spec is not validated (no
/// package ships NACK's schema): a retention NACK would refuse passes here, and a misspelt
/// metadata field does not.
#[test]
fn the_nack_streams_metadata_validates() {
    let streams =
        std::fs::read_to_string(sre_testkit::workspace_root().join("deploy/nats/nack/streams.yaml")).expect("streams");
    let versions = claimed_versions("paging-sink");
    let versions: Vec<&str> = versions.iter().map(String::as_str).collect();
    assert_eq!(violations(&[("deploy/nats/nack/streams.yaml", &streams)], &versions), vec![]);
    let wrong = streams.replacen("retention: limits", "retention: forever", 1).replacen(
        "  name: sre-dead-letter\n",
        "  nmae: sre-dead-letter\n",
        1,
    );
    assert_ne!(wrong, streams);
    let found = violations(&[("edited", &wrong)], &versions[..1]);
    let found: Vec<(&str, &str, &str, &str)> =
        found.iter().map(|v| (v.kind.as_str(), v.name.as_str(), v.path.as_str(), v.reason.as_str())).collect();
    assert_eq!(found, vec![("Stream", "", "metadata.nmae", "unknown field")]);
}

/// `helm package` makes `<chart>-<version>.tgz` of every chart, at Chart.yaml's version, with
/// every template and file in it.
#[test]
fn helm_package_makes_a_versioned_archive_of_every_chart() {
    let out = tempfile::tempdir().expect("tempdir");
    for name in ADAPTERS {
        let chart = chart_yaml(name);
        let version = chart["version"].as_str().expect("Chart.yaml version");
        let packaged = package(name, out.path()).unwrap_or_else(|e| panic!("{name}: helm package: {e}"));
        assert_eq!(packaged.archive, out.path().join(format!("{name}-{version}.tgz")), "{name}");
        assert!(packaged.archive.is_file(), "{name}: {} written", packaged.archive.display());
        for key in ["name", "version", "appVersion", "kubeVersion"] {
            assert_eq!(packaged.metadata[key].as_str(), chart[key].as_str(), "{name}: the archive's Chart.yaml {key}");
        }
        let dir = sre_testkit::charts_dir().join(name);
        let mut files: Vec<String> = ["templates", "files"]
            .iter()
            .flat_map(|sub| {
                std::fs::read_dir(dir.join(sub))
                    .expect("read_dir")
                    .map(move |e| format!("{sub}/{}", e.expect("entry").file_name().to_string_lossy()))
            })
            .collect();
        files.sort();
        assert_eq!(packaged.files, files, "{name}: the archive's templates and files");
    }
}
