//! The service from the outside: flags, configuration, health, metrics, logs, SIGTERM.

use std::path::Path;

#[test]
fn starts_serves_health_and_stops_cleanly() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config/paging-sink.yaml");
    sre_testkit::service::assert_service_lifecycle_with_env(
        Path::new(env!("CARGO_BIN_EXE_paging-sink")),
        &example,
        "paging_integration",
        &[
            ("SECRET_PLATFORM_PAGERDUTY_ROUTING_KEY_ROUTING_KEY", "R0UT1NGKEY0123456789ABCDEFGHIJKL"),
            ("SECRET_PLATFORM_PAGERDUTY_WEBHOOK_SECRET", "whsec-example"),
        ],
    );
}

#[test]
fn the_helm_chart_values_are_a_configuration_this_version_accepts() {
    sre_testkit::chart::assert_chart(
        Path::new(env!("CARGO_BIN_EXE_paging-sink")),
        "paging-sink",
        env!("CARGO_PKG_VERSION"),
    );
}

#[test]
fn the_documented_consumer_is_the_one_the_chart_configuration_creates() {
    let text = sre_testkit::chart::values_config("paging-sink", |_| {});
    let config =
        sre_runtime::load_config::<paging_sink::Config>(&text, &Default::default()).expect("the chart's config");
    let consumer = paging_sink::consumer_config(&config.config.paging_integration);
    sre_testkit::chart::assert_json_file(
        "deploy/nats/jetstream/consumers/paging-sink.json",
        &sre_bus::consumer_definition(&consumer),
    );
}

#[test]
fn a_consumer_section_without_a_durable_name_keeps_the_sinks_name() {
    let text = sre_testkit::chart::values_config("paging-sink", |c| {
        c["paging_integration"]["consumer"] = serde_norway::from_str("ack_wait: 10s").expect("yaml");
    });
    let config = sre_runtime::load_config::<paging_sink::Config>(&text, &Default::default()).expect("parses");
    let consumer = paging_sink::consumer_config(&config.config.paging_integration);
    assert_eq!(consumer.durable_name, "paging-sink");
    assert_eq!(consumer.ack_wait, std::time::Duration::from_secs(10));
}

/// The specification's `paging_integration` block, verbatim (`tests/fixtures/spec/`): accepted
/// by `--check-config`, and the adapter starts on it against a real nats-server.
#[test]
fn the_specification_block_works_as_written() {
    let bin = Path::new(env!("CARGO_BIN_EXE_paging-sink"));
    let block =
        std::fs::read_to_string(sre_testkit::workspace_root().join("tests/fixtures/spec/paging_integration.yaml"))
            .expect("the spec's block");
    sre_testkit::service::assert_starts_on_block(
        bin,
        &block,
        &[("SECRET_PLATFORM_PAGERDUTY_ROUTING_KEY_ROUTING_KEY", "R0UT1NGKEY0123456789ABCDEFGHIJKL")],
    );
}

/// The receivers as the README and the chart's values tell a team to turn them on: the
/// chart renders a configuration this version accepts, mounts their secrets, and exposes
/// their paths alone.
#[test]
fn the_chart_turns_the_receivers_on_as_documented() {
    sre_testkit::chart::assert_receivers(
        Path::new(env!("CARGO_BIN_EXE_paging-sink")),
        "paging-sink",
        serde_json::json!({
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
        &["/webhooks/pagerduty", "/webhooks/jsm"],
    );
}

/// What start would refuse, `--check-config` refuses, naming the key and the reason: a
/// receiver switched on with no secret, and business hours that do not parse.
#[test]
fn check_config_refuses_what_start_would() {
    let bin = Path::new(env!("CARGO_BIN_EXE_paging-sink"));
    type Edit = fn(&mut serde_norway::Value);
    let cases: [(&str, Edit, &str); 4] = [
        (
            "paging_integration.pagerduty.client_url: unknown placeholder `{titel}`",
            |c| c["paging_integration"]["pagerduty"]["client_url"] = "https://sre.example/{titel}".into(),
            "a misspelt placeholder",
        ),
        (
            "paging_integration.pagerduty.images[0].src: PagerDuty shows only https:// images",
            |c| {
                c["paging_integration"]["pagerduty"]["images"] =
                    serde_norway::from_str("[{src: 'http://grafana.example/x.png'}]").expect("yaml");
            },
            "a plain-http image",
        ),
        (
            "paging_integration.pagerduty.webhook.secret_refs: list at least one secret",
            |c| {
                c["paging_integration"]["pagerduty"]["webhook"] =
                    serde_norway::from_str("{enabled: true, secret_refs: []}").expect("yaml");
            },
            "a receiver on with no secret",
        ),
        (
            "paging_integration.escalation.business_hours.timezone: `Europe/Berlni` is not an IANA time zone",
            |c| c["paging_integration"]["escalation"]["business_hours"]["timezone"] = "Europe/Berlni".into(),
            "a misspelt time zone",
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    for (expected, edit, what) in cases {
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, sre_testkit::chart::values_config("paging-sink", edit)).expect("write");
        let (status, stderr) = sre_testkit::service::check_config(bin, &file).expect("runs --check-config");
        assert_eq!(status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.contains(expected), "{what}: {stderr}");
    }
}

/// `deploy/nats/jetstream/buckets/` holds the sink's records bucket exactly as it creates it
/// on a cluster: what a platform declares (`nats kv add`, the chart's NACK KeyValue).
#[test]
fn the_documented_bucket_is_the_one_the_sink_creates() {
    let bucket = paging_sink::state::BUCKET;
    sre_testkit::chart::assert_json_file(
        &format!("deploy/nats/jetstream/buckets/{}.json", bucket.name),
        &bucket.definition(),
    );
}
