//! The service from the outside: flags, configuration, health, metrics, logs, SIGTERM.

use std::path::Path;

#[test]
fn starts_serves_health_and_stops_cleanly() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config/alertmanager-ingress.yaml");
    sre_testkit::service::assert_service_lifecycle(
        Path::new(env!("CARGO_BIN_EXE_alertmanager-ingress")),
        &example,
        "alertmanager_integration",
    );
}

#[test]
fn the_helm_chart_values_are_a_configuration_this_version_accepts() {
    sre_testkit::chart::assert_chart(
        Path::new(env!("CARGO_BIN_EXE_alertmanager-ingress")),
        "alertmanager-ingress",
        env!("CARGO_PKG_VERSION"),
    );
}

/// The specification's `alertmanager_integration` block, verbatim (`tests/fixtures/spec/`): accepted
/// by `--check-config`, and the adapter starts on it against a real nats-server.
#[test]
fn the_specification_block_works_as_written() {
    let bin = Path::new(env!("CARGO_BIN_EXE_alertmanager-ingress"));
    let block = std::fs::read_to_string(
        sre_testkit::workspace_root().join("tests/fixtures/spec/alertmanager_integration.yaml"),
    )
    .expect("the spec's block");
    sre_testkit::service::assert_starts_on_block(bin, &block, &[]);
}
