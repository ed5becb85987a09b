//! The lists kept once in `sre_testkit::inventory` are the ones the deployed files use: the
//! bus users of `deploy/nats/sre.conf` (and the password variables it reads), and the demo
//! configurations' stand-in ports.

use sre_testkit::inventory::{ADAPTERS, BUS_USERS, demo, password_var};

#[test]
fn the_bus_users_are_the_users_of_the_deployed_nats_configuration() {
    let conf = std::fs::read_to_string(sre_testkit::workspace_root().join("deploy/nats/sre.conf")).expect("sre.conf");
    let users: Vec<&str> = conf.split("user: ").skip(1).filter_map(|rest| rest.split([',', ' ', '}']).next()).collect();
    assert_eq!(users, BUS_USERS, "deploy/nats/sre.conf declares exactly these users, in this order");
    for user in BUS_USERS {
        assert!(conf.contains(&format!("password: ${}", password_var(user))), "{user}: password variable");
    }
    assert_eq!(&BUS_USERS[1..], ADAPTERS, "one bus user per adapter");
}

#[test]
fn the_demo_configurations_name_the_stand_ins_ports() {
    let read = |adapter: &str| {
        std::fs::read_to_string(sre_testkit::workspace_root().join(format!("deploy/demo/{adapter}.yaml")))
            .expect("demo config")
    };
    let at = |port: u16| format!("http://127.0.0.1:{port}");
    assert!(read("argocd-sync").contains(&at(demo::ARGOCD)));
    assert!(read("ticketing-sink").contains(&at(demo::JIRA)));
    assert!(read("ticketing-sink").contains(&at(demo::GITHUB)));
    assert!(read("paging-sink").contains(&at(demo::PAGERDUTY)));
    assert!(read("paging-sink").contains(&at(demo::OPSGENIE)));
    assert_eq!(demo::adapter_port("paging-sink"), Some(demo::ADAPTER_PORTS + 3));
}
