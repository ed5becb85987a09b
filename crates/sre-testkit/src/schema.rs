//! Validates rendered manifests against Kubernetes' own schemas, offline: no API server is
//! needed, so every chart combination can be checked in the tests.
//!
//! Built-in kinds (Deployment, Service, Ingress, ...) are checked against the OpenAPI schemas
//! of a given Kubernetes version, strictly: an unknown field is a violation, as
//! `kubectl apply` (strict field validation) refuses it. The schemas come with PyPI
//! `kubernetes-validate` (pinned; 1.25 to 1.37), which `cargo xtask setup` installs in
//! `.tools/venv`.
//!
//! The Prometheus Operator's ServiceMonitor and PrometheusRule (`monitoring.coreos.com/v1`)
//! are checked against the pydantic models PyPI `cloudcoil-models-prometheus-operator`
//! generates from the operator's CRDs (pinned, also installed by `cargo xtask setup`; its
//! 0.80.1.0 is the operator's v0.80.1 and the newest release for the Python 3.11 the
//! machines have). They are validated strictly, as JSON and by the CRD's field names:
//! unknown fields anywhere in the object, wrong types (no coercion: `port: 7` where a port
//! name goes, `"30"` where a number goes), missing required fields, the CRD's patterns (a
//! scrape `interval` of `30 seconds`) and enums (`scheme: ftp`). Their `apiVersion`, `kind`
//! and `metadata` are checked as a built-in object's, against the Kubernetes version's
//! ObjectMeta. A field the operator added after v0.80.1 is reported as unknown.
//!
//! NACK's objects (`jetstream.nats.io/v1beta2`: Stream, Consumer, KeyValue, ObjectStore,
//! Account) have only their `apiVersion`, `kind` and `metadata` checked: no PyPI or npm
//! package ships NACK's CRD schema or models, and the project does not copy the CRDs from
//! NACK's repository. Their `spec` is not validated here (a misspelt or mistyped spec field
//! passes); the chart and NACK tests check the fields the charts and
//! `deploy/nats/nack/streams.yaml` set.
//!
//! Not checked either: the API server's own validation code beyond the schemas (a name's DNS
//! syntax, a selector that matches the pod labels, immutable fields), the CRDs' CEL rules
//! (`x-kubernetes-validations`), and enums the built-in schemas do not spell out
//! (`imagePullPolicy: Sometimes` passes; `imagePullPolicy: 7` does not).

use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};

/// Validates in `.tools/venv`'s Python: reads `{"versions", "manifests"}` as JSON on stdin,
/// prints the violations as JSON. Each YAML stream is parsed with PyYAML's YAML 1.1, as
/// Kubernetes' own decoder reads manifests (timestamps stay strings there, too).
const VALIDATE: &str = r##"
import json, sys
import importlib.resources
import jsonschema, yaml
from referencing import Registry, Resource

request = json.load(sys.stdin)
root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
if request.get("list"):
    found = [p.name[1:].split("-")[0] for p in root.iterdir() if p.name.endswith("-local-strict")]
    versions = sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))
    print(json.dumps([".".join(v.split(".")[:2]) for v in versions]))
    sys.exit()
DEFS = "https://kubernetes.io/api/_definitions.json"
OBJECT_META = DEFS + "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
# Kinds whose body the Prometheus Operator's models check, and kinds (NACK's) whose body
# nothing checks: both have their apiVersion, kind and metadata checked as built-ins do.
MODELS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}
BODY_UNCHECKED = {("jetstream.nats.io/v1beta2", k) for k in ("Stream", "Consumer", "KeyValue", "ObjectStore", "Account")}

class Loader(yaml.SafeLoader):
    pass
Loader.yaml_implicit_resolvers = {
    k: [(tag, r) for tag, r in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}

def envelope(api, kind):
    return {"type": "object", "required": ["apiVersion", "kind", "metadata"], "properties": {
        "apiVersion": {"const": api}, "kind": {"const": kind}, "metadata": {"$ref": OBJECT_META}}}

def where(path):
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        elif not p or any(c in p for c in "./[]\" "):
            out += "[" + json.dumps(p) + "]"
        else:
            out += ("." if out else "") + p
    return out

models = None
def model_errors(api, kind, doc):
    # The object less its metadata, validated by the operator's model as the API server
    # reads it: JSON, no coercion, the CRD's field names only, no unknown field.
    global models
    if models is None:
        import pydantic
        from cloudcoil.models.prometheus_operator import v1
        models = (pydantic, v1)
    pydantic, v1 = models
    body = {k: v for k, v in doc.items() if k != "metadata"}
    try:
        getattr(v1, kind).model_validate_json(json.dumps(body), strict=True, extra="forbid", by_alias=True, by_name=False)
        return []
    except pydantic.ValidationError as e:
        errors = e.errors(include_url=False)
    found = {}
    for err in errors:
        # The error's location is the path in the object, with the union member tried
        # ('int', 'str', a model's name) where a field takes one of several types: keep what
        # the object has, and the last key for a missing or unknown field.
        path, at = [], body
        for i, p in enumerate(err["loc"]):
            if isinstance(at, dict) and p in at:
                path.append(p); at = at[p]
            elif isinstance(at, list) and isinstance(p, int) and 0 <= p < len(at):
                path.append(p); at = at[p]
            elif i == len(err["loc"]) - 1 and err["type"] in ("missing", "extra_forbidden"):
                path.append(p)
        if err["type"] == "extra_forbidden":
            reason, got = "unknown field", ""
        elif err["type"] == "missing":
            reason, got = "required field missing", ""
        else:
            reason, got = err["msg"], f", got {json.dumps(err.get('input'))[:80]}"
        reasons, _ = found.setdefault(where(path), ([], got))
        if reason not in reasons:
            reasons.append(reason)
    return [(p, (" or ".join(r) + got)[:300]) for p, (r, got) in found.items()]

manifests = [(source, [d for d in yaml.load_all(text, Loader=Loader) if d]) for source, text in request["manifests"]]
violations = []
def violation(source, kube, kind, name, path, reason):
    violations.append({"source": source, "kube": kube, "kind": kind, "name": name, "path": path, "reason": reason})

bodies = {}
for kube in request["versions"]:
    folder = root / f"v{kube}.0-local-strict"
    if not folder.is_dir():
        violation("", kube, "", "", "", f"kubernetes-validate has no schemas for Kubernetes {kube}")
        continue
    definitions = json.loads((folder / "_definitions.json").read_text())
    registry = Registry().with_resource(DEFS, Resource.from_contents(definitions))
    builtins = {}
    for source, docs in manifests:
        for index, doc in enumerate(docs):
            if not isinstance(doc, dict):
                violation(source, kube, "", "", "", f"not an object: {str(doc)[:80]}")
                continue
            api, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
            name = str((doc.get("metadata") or {}).get("name", ""))
            if (api, kind) in MODELS or (api, kind) in BODY_UNCHECKED:
                schema = envelope(api, kind)
                if (api, kind) in MODELS:
                    if (source, index) not in bodies:
                        bodies[(source, index)] = model_errors(api, kind, doc)
                    for path, reason in bodies[(source, index)]:
                        violation(source, kube, kind, name, path, reason)
            else:
                group, _, version = api.rpartition("/")
                short = (group.split(".")[0] + "-" if group else "") + version
                file = folder / f"{kind.lower()}-{short}.json"
                if not file.is_file():
                    violation(source, kube, kind, name, "apiVersion",
                              f"no schema for {api} {kind} in Kubernetes {kube} nor among the operators' kinds")
                    continue
                if file.name not in builtins:
                    builtins[file.name] = json.loads(file.read_text())
                schema = builtins[file.name]
            validator = jsonschema.Draft202012Validator(schema, registry=registry)
            for e in validator.iter_errors(doc):
                path = list(e.absolute_path)
                if e.validator == "additionalProperties" and isinstance(e.instance, dict):
                    known = set((e.schema or {}).get("properties", {}))
                    for extra in sorted(k for k in e.instance if k not in known):
                        violation(source, kube, kind, name, where(path + [extra]), "unknown field")
                    continue
                reason = e.message if len(e.message) <= 300 else e.message[:300] + "..."
                violation(source, kube, kind, name, where(path), reason)
print(json.dumps(violations))
"##;

/// One place where a manifest breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// What was validated, as the caller labelled it (e.g. `paging-sink, every option on`).
    pub source: String,
    /// The Kubernetes version whose schemas it breaks (`1.25`).
    pub kube_version: String,
    /// The object's kind.
    pub kind: String,
    /// The object's `metadata.name`.
    pub name: String,
    /// The field, as kubectl names it: `spec.template.spec.containers[0].imagePullPolicy`.
    pub path: String,
    /// Why: `unknown field`, `7 is not of type 'string', 'null'`, ...
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (Kubernetes {}): {}/{}: {}: {}",
            self.source, self.kube_version, self.kind, self.name, self.path, self.reason
        )
    }
}

/// The Kubernetes versions (`major.minor`, oldest first) whose schemas the validator has.
pub fn kube_versions() -> Vec<String> {
    let answer = run(&serde_json::json!({"list": true}));
    serde_json::from_value(answer).expect("a list of versions")
}

/// Every schema violation in `manifests` (each a label and a YAML stream of Kubernetes
/// objects, such as [`crate::chart::Rendered::yaml`]) for each of `kube_versions`
/// (`1.25`, ...). One Python process validates them all. An object whose kind has no schema
/// in that version, built in or among the operators' (see the module doc), is a violation too: it
/// would not apply.
pub fn violations(manifests: &[(&str, &str)], kube_versions: &[&str]) -> Vec<Violation> {
    let answer = run(&serde_json::json!({"versions": kube_versions, "manifests": manifests}));
    let field = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
    answer
        .as_array()
        .expect("a list of violations")
        .iter()
        .map(|v| Violation {
            source: field(v, "source"),
            kube_version: field(v, "kube"),
            kind: field(v, "kind"),
            name: field(v, "name"),
            path: field(v, "path"),
            reason: field(v, "reason"),
        })
        .collect()
}

fn run(request: &serde_json::Value) -> serde_json::Value {
    let python = crate::chart::python();
    let mut child = Command::new(&python)
        .args(["-c", VALIDATE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask setup`: it installs the validator)", python.display()));
    // The script reads all of stdin before it writes, so writing first cannot block on it.
    child.stdin.take().expect("stdin").write_all(request.to_string().as_bytes()).expect("writing to the validator");
    let out = child.wait_with_output().expect("the validator runs");
    assert!(
        out.status.success(),
        "the schema validator failed (run `cargo xtask setup`: it installs kubernetes-validate and the operator's models): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the validator's JSON")
}
