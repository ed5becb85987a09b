//! The adapters, as processes, on the buses platform teams run:
//!
//! - TLS from a private CA and decentralized JWT accounts (`.creds` files), set as the
//!   charts set them (`NATS_CA`, `NATS_CREDS`): an alert through the ingress becomes an
//!   incident and its ticket;
//! - the least-privilege bind-only users (`deploy/nats/sre-bind-only.conf`) against streams,
//!   consumers and buckets a platform declared beforehand with its own tuned values: every
//!   adapter starts twice, works, names what is missing, and leaves each declaration exactly
//!   as it was.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use sre_testkit::argocd::{App, FakeArgoCd};
use sre_testkit::bus::eventually;
use sre_testkit::domain::{Domain, provision};
use sre_testkit::jira::{FakeJira, Flavor};
use sre_testkit::pagerduty::FakePagerDuty;
use sre_testkit::secure::{Operator, Pki};
use sre_testkit::service::{ServiceProcess, http_request};
use sre_testkit::stack::{adapter_bin, load_webhook, password};
use sre_testkit::{NatsServer, nack};

const JIRA_TOKEN: &str = "jira-pat-0123456789";
const ROUTING_KEY: &str = "R0UT1NGKEY0123456789ABCDEFGHIJKL";
const ARGOCD_TOKEN: &str = "argocd-token-0123456789";

fn spawn(name: &str, dir: &Path, config: &str, envs: &[(&str, &str)]) -> ServiceProcess {
    let file = dir.join(format!("{name}.yaml"));
    std::fs::write(&file, config).expect("config");
    let mut p =
        ServiceProcess::spawn(&adapter_bin(name), &["--config", file.to_str().expect("utf-8")], envs).expect("spawns");
    if let Err(e) = p.wait_for_status("/readyz", 200, Duration::from_secs(30)) {
        panic!("{name} not ready: {e}\n{}", p.logs());
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapters_on_a_bus_with_tls_and_jwt_accounts() {
    let pki = Pki::new().expect("ca");
    let cert = pki.issue("nats", &[IpAddr::V4(Ipv4Addr::LOCALHOST)]).expect("server certificate");
    let operator = Operator::new();
    let conf = pki.dir().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n{}",
            cert.cert.display().to_string(),
            cert.key.display().to_string(),
            operator.server_config()
        ),
    )
    .expect("config");
    let nats = NatsServer::start_with_config(&conf).expect("nats-server with TLS and JWT accounts");
    let creds = |user: &str| {
        let path = pki.dir().join(format!("{user}.creds"));
        std::fs::write(&path, operator.user_creds(user, None, None)).expect("creds");
        path.display().to_string()
    };
    let domain = async_nats::ConnectOptions::with_credentials_file(creds("sre-domain"))
        .await
        .expect("creds")
        .add_root_certificates(pki.ca_file())
        .require_tls(true)
        .connect(nats.url())
        .await
        .expect("the domain connects over TLS with its JWT");
    let js = jetstream::new(domain);
    assert_eq!(provision(&js).await, Ok(3));
    let _domain = Domain::start(js, true, Arc::new(|_: &str| {}));
    let jira = FakeJira::start(Flavor::DataCenter, &format!("Bearer {JIRA_TOKEN}"), &["OPS"]).await.expect("jira");

    // As the charts run them: the CA and the .creds file mounted, named by NATS_CA and
    // NATS_CREDS; streams provisioned by the domain.
    let ca = pki.ca_file().display().to_string();
    let bus = "runtime:\n  bus:\n    manage_streams: false\n";
    let url = nats.url();
    let (ingress_creds, ticketing_creds) = (creds("alertmanager-ingress"), creds("ticketing-sink"));
    let ingress = spawn(
        "alertmanager-ingress",
        pki.dir(),
        &format!("alertmanager_integration:\n  auto_create_incident: {{enabled: true, min_severity: high}}\n{bus}"),
        &[("NATS_URL", &url), ("NATS_CA", &ca), ("NATS_CREDS", &ingress_creds)],
    );
    let _ticketing = spawn(
        "ticketing-sink",
        pki.dir(),
        &format!(
            "ticketing_integration:\n  jira:\n    base_url: {}\n    deployment: data_center\n    project_key: OPS\n    \
             secret_ref: sys/jira\n{bus}",
            jira.url()
        ),
        &[
            ("NATS_URL", &url),
            ("NATS_CA", &ca),
            ("NATS_CREDS", &ticketing_creds),
            ("SECRET_SYS_JIRA_TOKEN", JIRA_TOKEN),
        ],
    );
    let (_, body) = load_webhook(1, true);
    let (status, answer) = http_request(
        ingress.port(),
        "POST",
        "/webhooks/alertmanager",
        &[("content-type", "application/json")],
        body.as_bytes(),
    )
    .expect("answered");
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"intents_stored\":2"), "the alert and its incident request are stored: {answer}");
    eventually("the incident's ticket", Duration::from_secs(30), || async { jira.issues().len() == 1 }).await;
}

/// What the platform declared, as read back from the bus.
async fn declared(js: &jetstream::Context) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for name in ["ticketing-sink", "paging-sink"] {
        let info =
            js.get_consumer_from_stream::<jetstream::consumer::pull::Config, _, _>(name, "SRE_DOMAIN_FACTS").await;
        let config = info.expect("declared consumer").cached_info().config.clone();
        out.push((name.to_owned(), serde_json::to_value(config).expect("json")));
    }
    for bucket in
        ["sre_ticketing_sink_tickets", "sre_paging_sink_pages", "sre_argocd_sync_lease", "sre_argocd_sync_state"]
    {
        let mut stream = js.get_stream(format!("KV_{bucket}")).await.expect("declared bucket");
        let config = stream.info().await.expect("info").config.clone();
        out.push((bucket.to_owned(), serde_json::to_value(config).expect("json")));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_only_adapters_use_declared_resources_exactly_as_declared() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("nats.conf");
    std::fs::write(&conf, sre_testkit::stack::deploy_accounts_from("sre-bind-only.conf")).expect("config");
    let nats = NatsServer::start_with_config(&conf).expect("nats-server with the bind-only users");
    let user_url = |user: &str| format!("nats://{user}:{}@127.0.0.1:{}", password(user), nats.port());
    let domain = async_nats::ConnectOptions::with_user_and_password("sre-domain".into(), password("sre-domain"))
        .connect(nats.url())
        .await
        .expect("domain");
    let js = jetstream::new(domain);
    assert_eq!(provision(&js).await, Ok(3));

    // The platform declares each consumer and bucket from deploy/nats/jetstream, tuned.
    for (name, mut def) in nack::definitions("consumers") {
        def["max_ack_pending"] = 77.into();
        def["ack_wait"] = 45_000_000_000_u64.into();
        def["description"] = format!("{name}: declared by the platform").into();
        let config: jetstream::consumer::pull::Config = serde_json::from_value(def).expect("consumer config");
        js.create_consumer_on_stream(config, "SRE_DOMAIN_FACTS").await.expect("declared");
    }
    // paging-sink's bucket comes later: its absence is named first.
    for (name, def) in nack::definitions("buckets").into_iter().filter(|(n, _)| n != "sre_paging_sink_pages") {
        js.create_key_value(jetstream::kv::Config {
            bucket: name.clone(),
            description: format!("{name}: declared by the platform"),
            history: 5,
            max_age: Duration::from_nanos(def["max_age"].as_u64().unwrap_or(0)),
            ..Default::default()
        })
        .await
        .expect("declared");
    }

    let jira = FakeJira::start(Flavor::DataCenter, &format!("Bearer {JIRA_TOKEN}"), &["OPS"]).await.expect("jira");
    let pagerduty = FakePagerDuty::start().await.expect("pagerduty");
    let argo = FakeArgoCd::start(ARGOCD_TOKEN, vec![App::new("checkout", "production")]).await.expect("argo cd");
    let bind = "runtime:\n  bus:\n    bind_only: true\n    manage_streams: false\n";
    let configs = [
        (
            "alertmanager-ingress",
            format!("alertmanager_integration:\n  auto_create_incident: {{enabled: true}}\n{bind}"),
            vec![],
        ),
        (
            "ticketing-sink",
            format!(
                "ticketing_integration:\n  jira:\n    base_url: {}\n    deployment: data_center\n    project_key: OPS\n    \
                 secret_ref: sys/jira\n{bind}",
                jira.url()
            ),
            vec![("SECRET_SYS_JIRA_TOKEN", JIRA_TOKEN)],
        ),
        (
            "paging-sink",
            format!(
                "paging_integration:\n  pagerduty:\n    routing_key_ref: sys/pd\n    base_url: {}\n  escalation: {{high: immediate}}\n{bind}",
                pagerduty.url()
            ),
            vec![("SECRET_SYS_PD_ROUTING_KEY", ROUTING_KEY)],
        ),
        (
            "argocd-sync",
            format!(
                "argocd_integration:\n  poll_interval: 1s\n  argocd_server:\n    - url: {}\n      secret_ref: sys/argocd\n  \
                 environments: [production]\n{bind}",
                argo.url()
            ),
            vec![("SECRET_SYS_ARGOCD_TOKEN", ARGOCD_TOKEN)],
        ),
    ];

    // paging-sink before its bucket exists: not ready, and it says what to declare.
    let (_, paging_config, paging_env) = &configs[2];
    let file = dir.path().join("paging-first.yaml");
    std::fs::write(&file, paging_config).expect("config");
    let url = user_url("paging-sink");
    let mut env: Vec<(&str, &str)> = vec![("NATS_URL", &url)];
    env.extend(paging_env.iter().copied());
    let early = ServiceProcess::spawn(&adapter_bin("paging-sink"), &["--config", file.to_str().expect("utf-8")], &env)
        .expect("spawns");
    eventually("paging-sink names the missing bucket", Duration::from_secs(20), || async {
        early.get("/readyz").is_some_and(|(code, body)| {
            code == 503 && body.contains("sre_paging_sink_pages does not exist") && body.contains("declare it")
        })
    })
    .await;
    drop(early);
    let def = nack::definitions("buckets").into_iter().find(|(n, _)| n == "sre_paging_sink_pages").expect("def").1;
    js.create_key_value(jetstream::kv::Config {
        bucket: "sre_paging_sink_pages".into(),
        description: "sre_paging_sink_pages: declared by the platform".into(),
        history: 5,
        max_age: Duration::from_nanos(def["max_age"].as_u64().unwrap_or(0)),
        ..Default::default()
    })
    .await
    .expect("declared");
    let before = declared(&js).await;

    // Every adapter, twice, on its bind-only user.
    for round in 0..2 {
        let mut running = Vec::new();
        for (name, config, secrets) in &configs {
            let url = user_url(name);
            let mut env: Vec<(&str, &str)> = vec![("NATS_URL", &url)];
            env.extend(secrets.iter().copied());
            running.push(spawn(name, dir.path(), config, &env));
        }
        if round == 0 {
            // They work: an alert becomes an incident, its ticket and its page.
            let _domain = Domain::start(js.clone(), true, Arc::new(|_: &str| {}));
            let (_, body) = load_webhook(7, true);
            let (status, answer) = http_request(
                running[0].port(),
                "POST",
                "/webhooks/alertmanager",
                &[("content-type", "application/json")],
                body.as_bytes(),
            )
            .expect("answered");
            assert_eq!(status, 200, "{answer}");
            eventually("the ticket and the page", Duration::from_secs(30), || async {
                jira.issues().len() == 1 && pagerduty.alerts().len() == 1
            })
            .await;
        }
    }

    assert_eq!(declared(&js).await, before, "every declared consumer and bucket is exactly as declared");
    let log = nats.log();
    assert!(!log.contains("Violation"), "no adapter was refused anything it needed:\n{log}");
    let (ticketing, _) = &before[0];
    assert_eq!(ticketing, "ticketing-sink");
    assert_eq!(before[0].1["max_ack_pending"], 77, "the tuned value held");
}
