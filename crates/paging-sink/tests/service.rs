//! The service from the outside: flags, configuration, health, metrics, logs, SIGTERM.

use std::path::Path;

#[test]
fn starts_serves_health_and_stops_cleanly() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config/paging-sink.yaml");
    sre_testkit::service::assert_service_lifecycle_with_env(
        Path::new(env!("CARGO_BIN_EXE_paging-sink")),
        &example,
        "paging_integration",
        &[("SECRET_PLATFORM_PAGERDUTY_ROUTING_KEY_ROUTING_KEY", "R0UT1NGKEY0123456789ABCDEFGHIJKL")],
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
