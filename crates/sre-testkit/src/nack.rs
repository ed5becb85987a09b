//! The bus resources as NACK declares them (`jetstream.nats.io/v1beta2` `Stream`, `Consumer`,
//! `KeyValue`), converted from the JetStream definitions `deploy/nats/jetstream/` holds (which
//! the code generates): one source, so the NACK manifests and the charts' NACK templates
//! agree with what the adapters would create, field for field. A JetStream field with no
//! NACK counterpart here panics, so a new one cannot be left out silently.
//!
//! NACK takes durations as Go duration strings (`168h`, `30s`; no `d` unit) and its
//! `ackWait` defaults to 1 ns, so every duration is written out.

use serde_json::{Map, Value, json};

/// A Go duration string for `nanos` (`168h`, `5m`, `30s`, `250ms`).
pub fn go_duration(nanos: u64) -> String {
    const S: u64 = 1_000_000_000;
    match nanos {
        n if n % (3600 * S) == 0 => format!("{}h", n / (3600 * S)),
        n if n % (60 * S) == 0 => format!("{}m", n / (60 * S)),
        n if n % S == 0 => format!("{}s", n / S),
        n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
        n => format!("{n}ns"),
    }
}

fn nanos(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("a duration in nanoseconds, not {v}"))
}

/// Converts the keys of `def` with `rename` (JetStream name → NACK name and value);
/// a key `rename` does not know panics.
fn convert(
    def: &Value,
    kind: &str,
    rename: impl Fn(&str, &Value) -> Option<Option<(&'static str, Value)>>,
) -> Map<String, Value> {
    let mut spec = Map::new();
    for (key, value) in def.as_object().unwrap_or_else(|| panic!("{kind}: an object")) {
        match rename(key, value) {
            Some(Some((name, v))) => {
                spec.insert(name.to_owned(), v);
            }
            Some(None) => {}
            None => {
                panic!("{kind}: the JetStream field `{key}` has no NACK counterpart here; add it to sre_testkit::nack")
            }
        }
    }
    spec
}

/// 0 means "no limit" in the definitions; NACK's default (-1) says the same.
fn limit(name: &'static str, v: &Value) -> Option<Option<(&'static str, Value)>> {
    Some((v.as_i64() != Some(0)).then(|| (name, v.clone())))
}

/// A stream definition (`jetstream/streams/*.json`) as a NACK `Stream` spec.
pub fn stream_spec(def: &Value) -> Map<String, Value> {
    let mut spec = convert(def, "stream", |key, v| match key {
        "name" => Some(Some(("name", v.clone()))),
        "description" => Some(Some(("description", v.clone()))),
        "subjects" => Some(Some(("subjects", v.clone()))),
        "retention" => Some(Some(("retention", v.clone()))),
        "storage" => Some(Some(("storage", v.clone()))),
        "discard" => Some(Some(("discard", v.clone()))),
        "num_replicas" => Some(Some(("replicas", v.clone()))),
        "max_age" => Some(Some(("maxAge", json!(go_duration(nanos(v)))))),
        "duplicate_window" => Some(Some(("duplicateWindow", json!(go_duration(nanos(v)))))),
        "max_bytes" => limit("maxBytes", v),
        "max_msgs" => limit("maxMsgs", v),
        "max_consumers" => limit("maxConsumers", v),
        "max_msgs_per_subject" => limit("maxMsgsPerSubject", v),
        "max_msg_size" => limit("maxMsgSize", v),
        "consumer_limits" if v.is_null() => Some(None),
        _ => None,
    });
    spec.insert("preventDelete".into(), json!(true));
    spec
}

/// A consumer definition (`jetstream/consumers/*.json`) as a NACK `Consumer` spec on
/// `stream`.
pub fn consumer_spec(def: &Value, stream: &str) -> Map<String, Value> {
    let mut spec = convert(def, "consumer", |key, v| match key {
        "durable_name" => Some(Some(("durableName", v.clone()))),
        "description" => Some(Some(("description", v.clone()))),
        "ack_policy" => Some(Some(("ackPolicy", v.clone()))),
        "ack_wait" => Some(Some(("ackWait", json!(go_duration(nanos(v)))))),
        "deliver_policy" => Some(Some(("deliverPolicy", v.clone()))),
        "replay_policy" => Some(Some(("replayPolicy", v.clone()))),
        "filter_subjects" => Some(Some(("filterSubjects", v.clone()))),
        "max_ack_pending" => Some(Some(("maxAckPending", v.clone()))),
        "max_deliver" => Some(Some(("maxDeliver", v.clone()))),
        _ => None,
    });
    spec.insert("streamName".into(), json!(stream));
    spec.insert("preventDelete".into(), json!(true));
    spec
}

/// A bucket definition (`jetstream/buckets/*.json`) as a NACK `KeyValue` spec.
pub fn key_value_spec(def: &Value) -> Map<String, Value> {
    let mut spec = convert(def, "bucket", |key, v| match key {
        "bucket" => Some(Some(("bucket", v.clone()))),
        "description" => Some(Some(("description", v.clone()))),
        "history" => Some(Some(("history", v.clone()))),
        "storage" => Some(Some(("storage", v.clone()))),
        "num_replicas" => Some(Some(("replicas", v.clone()))),
        "max_age" if nanos(v) == 0 => Some(None),
        "max_age" => Some(Some(("ttl", json!(go_duration(nanos(v)))))),
        _ => None,
    });
    spec.insert("preventDelete".into(), json!(true));
    spec
}

/// A Kubernetes name for a JetStream one (`SRE_DOMAIN_FACTS` → `sre-domain-facts`).
pub fn resource_name(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// A NACK resource of `kind` named after `name`, kept by Helm when its release goes
/// (`helm.sh/resource-policy: keep`) and never deleted from NATS by NACK (`preventDelete`).
pub fn manifest(kind: &str, name: &str, spec: Map<String, Value>) -> Value {
    json!({
        "apiVersion": "jetstream.nats.io/v1beta2",
        "kind": kind,
        "metadata": {"name": resource_name(name), "annotations": {"helm.sh/resource-policy": "keep"}},
        "spec": spec,
    })
}

/// The JSON files of `deploy/nats/jetstream/<folder>/`, by file stem.
pub fn definitions(folder: &str) -> Vec<(String, Value)> {
    let dir = crate::workspace_root().join("deploy/nats/jetstream").join(folder);
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("definition");
            let stem = p.file_stem().expect("stem").to_string_lossy().into_owned();
            (stem, serde_json::from_str(&text).expect("json"))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `deploy/nats/nack/streams.yaml` as it must be: the three domain streams, from
/// `jetstream/streams/`.
pub fn streams_yaml() -> String {
    let docs: Vec<String> = definitions("streams")
        .into_iter()
        .map(|(name, def)| serde_norway::to_string(&manifest("Stream", &name, stream_spec(&def))).expect("yaml"))
        .collect();
    format!(
        "# The SRE domain streams as NACK declares them (jetstream.nats.io/v1beta2), for platforms\n\
         # that manage JetStream with NACK: apply once, in the namespace NACK watches. Shared by\n\
         # every adapter, so they are here and not in an adapter's chart. Generated from\n\
         # deploy/nats/jetstream/streams/ (a test checks it; SRE_BLESS=1 rewrites it).\n---\n{}",
        docs.join("---\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_go_durations() {
        let s = 1_000_000_000;
        assert_eq!(go_duration(7 * 24 * 3600 * s), "168h");
        assert_eq!(go_duration(300 * s), "5m");
        assert_eq!(go_duration(30 * s), "30s");
        assert_eq!(go_duration(90 * s), "90s");
        assert_eq!(go_duration(250_000_000), "250ms");
    }

    #[test]
    #[should_panic(expected = "`max_deliver_new` has no NACK counterpart")]
    fn an_unknown_field_is_not_left_out_silently() {
        let _ = consumer_spec(&json!({"durable_name": "x", "max_deliver_new": 3}), "S");
    }
}
