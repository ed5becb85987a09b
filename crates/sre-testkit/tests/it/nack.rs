//! The bus resources as NACK declares them agree with what the code would create, field for
//! field (all from `deploy/nats/jetstream/`, which the code generates): the domain streams in
//! `deploy/nats/nack/streams.yaml`, and each chart's own Consumer and KeyValue templates,
//! rendered only where the CRDs are served and `nack.enabled`, which makes the adapter bind
//! only. And `deploy/nats/sre-bind-only.conf` is `sre.conf` without a right to create.

use serde_json::{Value, json};
use sre_testkit::chart::{assert_text_file, render, render_on};
use sre_testkit::inventory::ADAPTERS;
use sre_testkit::nack::{consumer_spec, definitions, key_value_spec, streams_yaml};

const NACK_API: &str = "jetstream.nats.io/v1beta2";

#[test]
fn the_nack_streams_are_the_jetstream_definitions() {
    assert_text_file("deploy/nats/nack/streams.yaml", &streams_yaml());
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(&streams_yaml())
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .collect();
    assert_eq!(docs.len(), 3);
    for doc in &docs {
        assert_eq!((doc["apiVersion"].as_str(), doc["kind"].as_str()), (Some(NACK_API), Some("Stream")));
        assert_eq!(doc["spec"]["replicas"], 3, "R3, as on the cluster the charts are made for");
        assert_eq!(doc["spec"]["preventDelete"], true);
        assert_eq!(doc["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
    }
    let facts = docs.iter().find(|d| d["spec"]["name"] == "SRE_DOMAIN_FACTS").expect("the facts stream");
    assert_eq!(facts["spec"]["maxAge"], "168h");
    assert_eq!(facts["spec"]["duplicateWindow"], "5m");
    assert_eq!(facts["spec"]["subjects"], json!(["sre.domain.facts.v1.>"]));
}

/// Each adapter's own resources, as its chart's values declare them for NACK.
fn declared(adapter: &str) -> (Option<Value>, Vec<Value>) {
    let consumer = definitions("consumers")
        .into_iter()
        .find(|(name, _)| name == adapter)
        .map(|(_, def)| Value::Object(consumer_spec(&def, "SRE_DOMAIN_FACTS")));
    let prefix = format!("sre_{}_", adapter.replace('-', "_"));
    let buckets = definitions("buckets")
        .into_iter()
        .filter(|(name, _)| name.starts_with(&prefix))
        .map(|(_, def)| Value::Object(key_value_spec(&def)))
        .collect();
    (consumer, buckets)
}

#[test]
fn each_chart_declares_its_consumer_and_buckets_as_the_adapter_creates_them() {
    for adapter in ADAPTERS {
        let values: Value = serde_norway::from_str(
            &std::fs::read_to_string(sre_testkit::charts_dir().join(adapter).join("values.yaml")).expect("values"),
        )
        .expect("yaml");
        let (consumer, buckets) = declared(adapter);
        assert_eq!(values["nack"]["consumer"], consumer.clone().unwrap_or(Value::Null), "{adapter}: nack.consumer");
        assert_eq!(values["nack"]["keyValues"], json!(buckets), "{adapter}: nack.keyValues");
        assert_eq!(values["nack"]["enabled"], false, "{adapter}: off by default");

        // Rendered only where NACK's CRDs are served, when on.
        let on = json!({"nack": {"enabled": true}});
        let without = render(adapter, &on);
        assert!(
            without.of_kind("KeyValue").is_empty() && without.of_kind("Consumer").is_empty(),
            "{adapter}: no CRD, nothing"
        );
        let rendered = render_on(adapter, &on, &[NACK_API]);
        assert!(rendered.lint.is_empty(), "{adapter}: {:?}", rendered.lint);
        let json = |o: &serde_norway::Value| serde_json::to_value(o).expect("json");
        let kv: Vec<Value> = rendered.of_kind("KeyValue").into_iter().map(|o| json(&o["spec"])).collect();
        assert_eq!(kv, buckets, "{adapter}: the KeyValue specs rendered");
        let consumers: Vec<Value> = rendered.of_kind("Consumer").into_iter().map(|o| json(&o["spec"])).collect();
        assert_eq!(consumers, consumer.into_iter().collect::<Vec<_>>(), "{adapter}: the Consumer spec rendered");
        for object in rendered.of_kind("KeyValue").into_iter().chain(rendered.of_kind("Consumer")).map(json) {
            assert_eq!(object["apiVersion"], NACK_API);
            assert_eq!(object["metadata"]["annotations"]["helm.sh/resource-policy"], "keep", "{adapter}");
            assert_eq!(object["spec"]["preventDelete"], true, "{adapter}");
        }
        // With its resources declared, the adapter only binds to them.
        let env = json(&rendered.objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]["env"]);
        let bind = env.as_array().into_iter().flatten().find(|e| e["name"] == "NATS_BIND_ONLY");
        assert_eq!(bind.map(|e| e["value"].clone()), Some(json!("true")), "{adapter}: NATS_BIND_ONLY");
        // requireCrd: false renders them anyway (`helm template` without a cluster).
        let anyway = render(adapter, &json!({"nack": {"enabled": true, "requireCrd": false}}));
        assert_eq!(anyway.of_kind("KeyValue").len(), kv.len(), "{adapter}");
    }
}

#[test]
fn the_bind_only_configuration_is_sre_conf_without_a_right_to_create() {
    let sre = std::fs::read_to_string(sre_testkit::workspace_root().join("deploy/nats/sre.conf")).expect("sre.conf");
    let bind_only = sre_testkit::stack::bind_only_conf(&sre);
    assert_text_file("deploy/nats/sre-bind-only.conf", &bind_only);
    for forbidden in ["CONSUMER.CREATE.SRE_DOMAIN_FACTS", "STREAM.CREATE.KV_", "STREAM.UPDATE.KV_"] {
        assert!(sre.contains(forbidden), "sre.conf grants {forbidden}");
        assert!(!bind_only.contains(forbidden), "sre-bind-only.conf does not");
    }
    // nats-server accepts it.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("nats.conf");
    std::fs::write(&file, sre_testkit::stack::deploy_accounts_from("sre-bind-only.conf")).expect("write");
    let out = std::process::Command::new(sre_testkit::nats_server_binary().expect("nats-server"))
        .arg("-c")
        .arg(&file)
        .arg("-t")
        .output()
        .expect("nats-server -t");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
