//! The service from the outside: flags, configuration, health, metrics, logs, SIGTERM.

use std::path::Path;

#[test]
fn starts_serves_health_and_stops_cleanly() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config/argocd-sync.yaml");
    sre_testkit::service::assert_service_lifecycle_with_env(
        Path::new(env!("CARGO_BIN_EXE_argocd-sync")),
        &example,
        "argocd_integration",
        &[("SECRET_PLATFORM_ARGOCD_TOKEN_TOKEN", "eyJhbGciOiJIUzI1NiJ9.e30.c2ln")],
    );
}

#[test]
fn the_helm_chart_values_are_a_configuration_this_version_accepts() {
    sre_testkit::chart::assert_chart(
        Path::new(env!("CARGO_BIN_EXE_argocd-sync")),
        "argocd-sync",
        env!("CARGO_PKG_VERSION"),
    );
}

/// The specification's `argocd_integration` block, verbatim (`tests/fixtures/spec/`): accepted
/// by `--check-config`, and the adapter starts on it against a real nats-server.
#[test]
fn the_specification_block_works_as_written() {
    let bin = Path::new(env!("CARGO_BIN_EXE_argocd-sync"));
    let block =
        std::fs::read_to_string(sre_testkit::workspace_root().join("tests/fixtures/spec/argocd_integration.yaml"))
            .expect("the spec's block");
    let run = sre_testkit::service::assert_starts_on_block(bin, &block, &[]);
    // No token is configured in the block: --check-config and the service say where it is
    // looked for, instead of failing or polling silently.
    assert!(run.check_config.contains("note:") && run.check_config.contains("argocd-token"), "{}", run.check_config);
    assert!(run.logs.contains("ARGOCD_AUTH_TOKEN"), "{}", run.logs);
    assert!(run.logs.contains("https://argocd-server.argocd.svc.cluster.local"), "{}", run.logs);
}

/// `deploy/nats/jetstream/buckets/` holds argocd-sync's lease and state buckets exactly as it
/// creates them on a cluster with its chart's configuration (the lease's age from its
/// `lease_ttl`).
#[test]
fn the_documented_buckets_are_the_ones_the_chart_configuration_creates() {
    let text = sre_testkit::chart::values_config("argocd-sync", |_| {});
    let config =
        sre_runtime::load_config::<argocd_sync::Config>(&text, &Default::default()).expect("the chart's config");
    let ttl = config.argocd_integration.lease_ttl();
    for bucket in argocd_sync::state::buckets(ttl, sre_bus::Replicas::Auto) {
        sre_testkit::chart::assert_json_file(
            &format!("deploy/nats/jetstream/buckets/{}.json", bucket.bucket),
            &sre_bus::bucket_definition(&bucket, 3),
        );
    }
}
