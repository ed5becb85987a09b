//! The service from the outside: flags, configuration, health, metrics, logs, SIGTERM.

use std::path::Path;

#[test]
fn starts_serves_health_and_stops_cleanly() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config/ticketing-sink.yaml");
    sre_testkit::service::assert_service_lifecycle_with_env(
        Path::new(env!("CARGO_BIN_EXE_ticketing-sink")),
        &example,
        "ticketing_integration",
        &[("SECRET_PLATFORM_JIRA_CREDENTIALS_TOKEN", "t0ken"), ("SECRET_PLATFORM_GITHUB_TOKEN_TOKEN", "ghs_t0ken")],
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
