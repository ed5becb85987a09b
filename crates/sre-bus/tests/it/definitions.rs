//! `deploy/nats/jetstream/streams/` holds exactly the streams the bus creates, with three
//! replicas for a JetStream cluster, so provisioning them ahead of the adapters (whose users
//! may not manage streams) gives the same bus.

use sre_bus::{StreamSettings, stream_definitions};

#[test]
fn the_cluster_stream_definitions_are_the_streams_the_bus_creates() {
    // The default (`auto`) on the three-node cluster the charts are made for.
    let definitions = stream_definitions(&StreamSettings::default(), true);
    assert_eq!(definitions.len(), 3);
    for (name, definition) in definitions {
        assert_eq!(definition["num_replicas"], 3, "{name}");
        sre_testkit::chart::assert_json_file(&format!("deploy/nats/jetstream/streams/{name}.json"), &definition);
    }
}

#[test]
fn the_cluster_configuration_is_one_nats_server_accepts() {
    let dir = sre_testkit::workspace_root().join("deploy/nats");
    let out = std::process::Command::new(sre_testkit::nats_server_binary().expect("nats-server"))
        .args(["-c", "cluster.conf", "-t"])
        .current_dir(&dir)
        .env("SERVER_NAME", "nats-0")
        .envs(
            ["SRE_DOMAIN", "ALERTMANAGER_INGRESS", "ARGOCD_SYNC", "TICKETING_SINK", "PAGING_SINK"]
                .map(|u| (format!("{u}_PASSWORD"), "pw")),
        )
        .output()
        .expect("runs nats-server -t");
    let said = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "nats-server rejects deploy/nats/cluster.conf: {said}");
    assert!(said.contains("configuration file cluster.conf is valid"), "{said}");
}
