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
