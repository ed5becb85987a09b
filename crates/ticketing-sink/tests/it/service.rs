//! The service from the outside: flags, configuration, health, metrics, logs, SIGTERM.

use std::path::Path;

#[test]
fn starts_serves_health_and_stops_cleanly() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config/ticketing-sink.yaml");
    sre_testkit::service::assert_service_lifecycle_with_env(
        Path::new(env!("CARGO_BIN_EXE_ticketing-sink")),
        &example,
        "ticketing_integration",
        &[
            ("SECRET_PLATFORM_JIRA_CREDENTIALS_TOKEN", "t0ken"),
            ("SECRET_PLATFORM_GITHUB_TOKEN_TOKEN", "ghs_t0ken"),
            ("SECRET_PLATFORM_JIRA_WEBHOOK_SECRET", "jira-webhook-secret"),
        ],
    );
}

#[test]
fn the_helm_chart_values_are_a_configuration_this_version_accepts() {
    sre_testkit::chart::assert_chart(
        Path::new(env!("CARGO_BIN_EXE_ticketing-sink")),
        "ticketing-sink",
        env!("CARGO_PKG_VERSION"),
    );
}

#[test]
fn the_documented_consumer_is_the_one_the_chart_configuration_creates() {
    let text = sre_testkit::chart::values_config("ticketing-sink", |_| {});
    let config =
        sre_runtime::load_config::<ticketing_sink::Config>(&text, &Default::default()).expect("the chart's config");
    let consumer = ticketing_sink::consumer_config(&config.config.ticketing_integration);
    sre_testkit::chart::assert_json_file(
        "deploy/nats/jetstream/consumers/ticketing-sink.json",
        &sre_bus::consumer_definition(&consumer),
    );
}

#[test]
fn a_consumer_section_without_a_durable_name_keeps_the_sinks_name() {
    let text = sre_testkit::chart::values_config("ticketing-sink", |c| {
        c["ticketing_integration"]["consumer"] = serde_norway::from_str("ack_wait: 10s").expect("yaml");
    });
    let config = sre_runtime::load_config::<ticketing_sink::Config>(&text, &Default::default()).expect("parses");
    let consumer = ticketing_sink::consumer_config(&config.config.ticketing_integration);
    assert_eq!(consumer.durable_name, "ticketing-sink");
    assert_eq!(consumer.ack_wait, std::time::Duration::from_secs(10));
}

/// The specification's `ticketing_integration` block, verbatim (`tests/fixtures/spec/`): accepted
/// by `--check-config`, and the adapter starts on it against a real nats-server.
#[test]
fn the_specification_block_works_as_written() {
    let bin = Path::new(env!("CARGO_BIN_EXE_ticketing-sink"));
    let block =
        std::fs::read_to_string(sre_testkit::workspace_root().join("tests/fixtures/spec/ticketing_integration.yaml"))
            .expect("the spec's block");
    sre_testkit::service::assert_starts_on_block(
        bin,
        &block,
        &[
            ("SECRET_PLATFORM_JIRA_CREDENTIALS_EMAIL", "sre-bot@company.example"),
            ("SECRET_PLATFORM_JIRA_CREDENTIALS_TOKEN", "t0ken"),
            ("SECRET_PLATFORM_GITHUB_TOKEN_TOKEN", "ghs_t0ken"),
        ],
    );
}

/// The receivers as the README and the chart's values tell a team to turn them on: the
/// chart renders a configuration this version accepts, mounts their secrets, and exposes
/// their paths alone.
#[test]
fn the_chart_turns_the_receivers_on_as_documented() {
    sre_testkit::chart::assert_receivers(
        Path::new(env!("CARGO_BIN_EXE_ticketing-sink")),
        "ticketing-sink",
        serde_json::json!({
            "config": {"ticketing_integration": {
                "jira": {"webhook": {"enabled": true, "secret_refs": ["platform/jira-webhook"],
                                     "ignore_users": ["5b10a2844c20165700ede21g"]}},
                "github": {"webhook": {"enabled": true, "secret_refs": ["platform/github-webhook"]}}}},
            "secrets": [
                {"ref": "platform/jira-credentials", "secretName": "jira-credentials"},
                {"ref": "platform/github-token", "secretName": "github-token"},
                {"ref": "platform/jira-webhook", "secretName": "jira-webhook"},
                {"ref": "platform/github-webhook", "secretName": "github-webhook"},
            ],
        }),
        &["/webhooks/jira", "/webhooks/github"],
    );
}

/// What start would refuse, `--check-config` refuses, naming the key and the reason: a
/// misspelt template placeholder, and a receiver switched on with no secret.
#[test]
fn check_config_refuses_what_start_would() {
    let bin = Path::new(env!("CARGO_BIN_EXE_ticketing-sink"));
    type Edit = fn(&mut serde_norway::Value);
    let cases: [(&str, Edit, &str); 2] = [
        (
            "ticketing_integration.templates.title: unknown placeholder `{titel}`",
            |c| {
                c["ticketing_integration"]["templates"] =
                    serde_norway::from_str("title: '[{severity}] {titel}'").expect("yaml")
            },
            "a misspelt placeholder",
        ),
        (
            "ticketing_integration.jira.webhook.secret_refs: list at least one secret",
            |c| {
                c["ticketing_integration"]["jira"]["webhook"] =
                    serde_norway::from_str("{enabled: true, secret_refs: []}").expect("yaml");
            },
            "a receiver on with no secret",
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    for (expected, edit, what) in cases {
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, sre_testkit::chart::values_config("ticketing-sink", edit)).expect("write");
        let (status, stderr) = sre_testkit::service::check_config(bin, &file).expect("runs --check-config");
        assert_eq!(status.code(), Some(2), "{what}: {stderr}");
        assert!(stderr.contains(expected), "{what}: {stderr}");
    }
}

/// `deploy/nats/jetstream/buckets/` holds the sink's records bucket exactly as it creates it
/// on a cluster: what a platform declares (`nats kv add`, the chart's NACK KeyValue).
#[test]
fn the_documented_bucket_is_the_one_the_sink_creates() {
    let bucket = ticketing_sink::state::BUCKET;
    sre_testkit::chart::assert_json_file(
        &format!("deploy/nats/jetstream/buckets/{}.json", bucket.name),
        &bucket.definition(),
    );
}
