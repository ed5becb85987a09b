//! The adapters on a real three-node JetStream cluster (loopback, temporary stores), the
//! bus a platform team runs: seed lists with a seed down, replication by default, existing
//! streams never lowered, readiness that tells the truth while the bus has no leader, and
//! quiet, short leaderless moments.
//!
//! The adapter binaries are the workspace's own (`target/<profile>/`), built by the same
//! test run.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use prost::Message;
use sre_contracts::BusMessage;
use sre_contracts::domain::v1::{IncidentCreated, Severity};
use sre_contracts::streams;
use sre_testkit::bus::eventually;
use sre_testkit::cluster::NatsCluster;
use sre_testkit::pagerduty::FakePagerDuty;
use sre_testkit::service::{ServiceProcess, http_exchange};
use sre_testkit::stack::adapter_bin;

const WAIT: Duration = Duration::from_secs(30);

/// One cluster test at a time within this binary too (`cargo test` runs a binary's tests
/// on threads; nextest runs them one by one through `.config/nextest.toml`).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const ROUTING_KEY: &str = "R0UT1NGKEY0123456789ABCDEFGHIJKL";

fn spawn(name: &str, dir: &Path, config: &str, envs: &[(&str, &str)]) -> ServiceProcess {
    let path = dir.join(format!("{name}-{}.yaml", sre_testkit::free_port().expect("port")));
    std::fs::write(&path, config).expect("config");
    ServiceProcess::spawn(&adapter_bin(name), &["--config", path.to_str().expect("utf-8")], envs).expect("spawns")
}

fn ready(p: &mut ServiceProcess, what: &str) {
    if let Err(e) = p.wait_for_status("/readyz", 200, WAIT) {
        panic!("{what} not ready: {e}\n{}", p.logs());
    }
}

/// A paging-sink on the seed list `urls` as pod `pod`, with `extra` configuration after
/// its section, started (not yet ready).
fn paging_sink(dir: &Path, pd: &FakePagerDuty, urls: &str, pod: &str, extra: &str) -> ServiceProcess {
    spawn(
        "paging-sink",
        dir,
        &format!("{}{extra}", paging_config(pd)),
        &[("NATS_URL", urls), ("POD_NAME", pod), ("SECRET_PLATFORM_PAGERDUTY_ROUTING_KEY", ROUTING_KEY)],
    )
}

fn paging_config(pd: &FakePagerDuty) -> String {
    format!(
        "paging_integration:\n  default_provider: pagerduty\n  pagerduty:\n    routing_key_ref: platform/pagerduty\n    \
         base_url: {}\n  escalation:\n    critical: immediate\n    high: immediate\n",
        pd.url()
    )
}

async fn client(url: &str) -> (async_nats::Client, async_nats::jetstream::Context) {
    let client = async_nats::connect(url).await.expect("nats client");
    (client.clone(), async_nats::jetstream::new(client))
}

async fn publish_created(js: &async_nats::jetstream::Context, id: &str) {
    let fact = IncidentCreated {
        incident_id: id.into(),
        title: "checkout-api: error rate above 5%".into(),
        severity: Severity::Critical as i32,
        service: "checkout-api".into(),
        ..Default::default()
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(sre_contracts::headers::MSG_ID, format!("created:{id}").as_str());
    // As the domain publishes: again while the stream has no one to answer (a leader
    // moving), at most for 5 s; the message id keeps a retry from storing it twice.
    let mut last = None;
    for _ in 0..50 {
        let ack = js.publish_with_headers(IncidentCreated::SUBJECT, headers.clone(), fact.encode_to_vec().into()).await;
        match ack {
            Ok(ack) => match ack.await {
                Ok(_) => return,
                Err(e) => last = Some(e.to_string()),
            },
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not stored: {last:?}");
}

/// `NATS_URL` as a list of every node, the first of them down, with the credentials
/// given once in either spelling a platform team writes: in the first URL (an adapter
/// once exited 1 on it, "invalid port number"), or as `NATS_USER` / `NATS_PASSWORD`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_list_with_the_first_seed_down_and_credentials_given_once() {
    let _serial = SERIAL.lock().await;
    let accounts = "authorization {\n  users: [ { user: paging-sink, password: \"p@ss:w0rd\" } ]\n}\n";
    let mut cluster = NatsCluster::start_with_accounts(3, Some(accounts)).expect("cluster");
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let dir = tempfile::tempdir().expect("tempdir");
    let (p0, p1, p2) = (cluster.port(0), cluster.port(1), cluster.port(2));
    let in_url = format!("nats://paging-sink:p%40ss%3Aw0rd@127.0.0.1:{p0},nats://127.0.0.1:{p1},nats://127.0.0.1:{p2}");
    let envs = |pod: &'static str, url: &str| -> Vec<(String, String)> {
        vec![
            ("NATS_URL".into(), url.into()),
            ("POD_NAME".into(), pod.into()),
            ("SECRET_PLATFORM_PAGERDUTY_ROUTING_KEY".into(), ROUTING_KEY.into()),
        ]
    };
    let start = |pod: &'static str, url: &str, extra: &[(&str, &str)]| {
        let mut all = envs(pod, url);
        all.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let refs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        spawn("paging-sink", dir.path(), &paging_config(&pd), &refs)
    };
    // A first deployment while every node is up puts the streams and the bucket in place.
    let mut first = start("paging-first", &in_url, &[]);
    ready(&mut first, "the first deployment");
    // It made the streams itself, at once on connecting: R3, never R1 because the
    // server's INFO had not arrived yet (once the case: they were lost with one node).
    for stream in [streams::INTENTS, streams::FACTS, streams::DEAD_LETTER, "KV_sre_paging_sink_pages"] {
        assert_eq!(cluster.placement(stream).map(|p| p.1), Some(3), "{stream}");
    }
    assert!(first.terminate(WAIT).expect("stops").success());

    // Then the first seed's node goes down, and replicas (re)start on the seed list.
    cluster.wait_streams_current().expect("replicas caught up");
    cluster.kill(0);
    cluster.wait_settled().expect("the survivors agree on a meta leader");
    let mut a = start("paging-a", &in_url, &[]);
    ready(&mut a, "credentials in the first URL");
    let bare = format!("127.0.0.1:{p0}, 127.0.0.1:{p1}, 127.0.0.1:{p2}");
    let mut b = start("paging-b", &bare, &[("NATS_USER", "paging-sink"), ("NATS_PASSWORD", "p@ss:w0rd")]);
    ready(&mut b, "credentials given separately");
    assert_eq!(cluster.placement("KV_sre_paging_sink_pages").map(|p| p.1), Some(3), "R3 by default");
    for logs in [a.logs(), b.logs()] {
        assert!(!logs.contains("p@ss:w0rd") && !logs.contains("p%40ss"), "the password never reaches the logs");
    }

    // The same credentials twice, or different ones per seed: a clear refusal at start.
    let twice = format!("nats://paging-sink:other@127.0.0.1:{p1},nats://paging-sink:p%40ss%3Aw0rd@127.0.0.1:{p2}");
    let out = std::process::Command::new(adapter_bin("paging-sink"))
        .arg("--check-config")
        .env("NATS_URL", &twice)
        .output()
        .expect("runs");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("NATS_URL") && said.contains("seed 2") && !said.contains("other"), "{said}");
}

/// On a cluster, what adapters create is replicated by default (min(3, cluster size)),
/// and an adapter, on defaults or told one replica, never lowers the operator's R3 streams
/// (an adapter with no `runtime:` section once made them R1 within 0.2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_are_replicated_by_default_and_existing_streams_never_lowered() {
    let _serial = SERIAL.lock().await;
    let cluster = NatsCluster::start(3).expect("cluster");
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, js) = client(&cluster.url(1)).await;
    assert_eq!(sre_testkit::domain::provision_replicated(&js, 3).await, Ok(3), "the operator's R3 streams");

    let urls = cluster.urls();
    // No runtime section at all: manage_streams and replicas on their defaults.
    let mut sink = paging_sink(dir.path(), &pd, &urls, "paging-0", "");
    ready(&mut sink, "paging-sink on defaults");
    // Told one replica, explicitly.
    let one = "alertmanager_integration:\n  enabled: true\nruntime:\n  bus:\n    streams:\n      replicas: 1\n";
    let mut ingress = spawn("alertmanager-ingress", dir.path(), one, &[("NATS_URL", &urls), ("POD_NAME", "ingress-0")]);
    ready(&mut ingress, "ingress told one replica");

    let bucket = cluster.placement("KV_sre_paging_sink_pages").expect("the sink's bucket");
    assert_eq!(bucket.1, 3, "the bucket is R3 on a three-node cluster by default");
    for stream in [streams::INTENTS, streams::FACTS, streams::DEAD_LETTER] {
        let (_, replicas) = cluster.placement(stream).expect("the stream");
        assert_eq!(replicas, 3, "{stream} left at the operator's 3 replicas");
    }
    assert_eq!(sink.metric("sre_bus_under_replicated_streams", &[]), 0.0);
    drop((sink, ingress));
}

/// A consumer leader change costs the sink moments, not a missed-heartbeat timeout (it
/// once sat ~11 s idle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_resumes_right_after_its_consumer_leader_changes() {
    let _serial = SERIAL.lock().await;
    let cluster = NatsCluster::start(3).expect("cluster");
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let dir = tempfile::tempdir().expect("tempdir");
    let urls = cluster.urls();
    let mut sink = paging_sink(dir.path(), &pd, &urls, "paging-0", "");
    ready(&mut sink, "paging-sink");
    let (raw, js) = client(&cluster.url(0)).await;
    for round in 0..3 {
        let stepdown = format!("$JS.API.CONSUMER.LEADER.STEPDOWN.{}.paging-sink", streams::FACTS);
        let answer = raw.request(stepdown, "".into()).await.expect("stepdown answered");
        assert!(String::from_utf8_lossy(&answer.payload).contains("\"success\":true"), "{answer:?}");
        publish_created(&js, &format!("inc-after-stepdown-{round}")).await;
        eventually("paged right after the consumer leader changed", Duration::from_secs(5), || async {
            pd.alerts().len() == round + 1
        })
        .await;
    }
}

/// The sink's bucket, and the intents stream, with no leader at all (one replica, as the
/// charts' defaults once made them, on a node that is down): the sink says it is not
/// ready and why, warns once rather than per attempt, and the ingress answers 503 with
/// Retry-After naming the missing leader; with the node back, both are ready by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_leader_readiness_says_so_the_logs_stay_quiet_and_it_comes_back() {
    let _serial = SERIAL.lock().await;
    let mut cluster = NatsCluster::start(3).expect("cluster");
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let dir = tempfile::tempdir().expect("tempdir");
    let urls = cluster.urls();
    let r1 = "runtime:\n  bus:\n    streams:\n      replicas: 1\n";
    let mut sink = paging_sink(dir.path(), &pd, &urls, "paging-0", r1);
    ready(&mut sink, "paging-sink");
    let ingress_config = format!("alertmanager_integration:\n  enabled: true\n{r1}");
    let mut ingress =
        spawn("alertmanager-ingress", dir.path(), &ingress_config, &[("NATS_URL", &urls), ("POD_NAME", "ingress-0")]);
    ready(&mut ingress, "ingress");

    // Down goes the node holding the bucket (and the intents stream's, if another).
    cluster.wait_streams_current().expect("replicas caught up");
    let bucket_node = cluster.placement("KV_sre_paging_sink_pages").and_then(|p| p.0).expect("bucket leader");
    let intents_node = cluster.placement(streams::INTENTS).and_then(|p| p.0).expect("intents leader");
    cluster.kill(bucket_node);
    if intents_node != bucket_node {
        cluster.kill(intents_node);
    }
    let said = std::sync::Mutex::new(String::new());
    let told = tokio::time::timeout(WAIT, async {
        loop {
            if let Some((s, b)) = sink.get("/readyz") {
                *said.lock().expect("lock") = b.clone();
                if s == 503 && b.contains("KV bucket sre_paging_sink_pages unreachable for") {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(told.is_ok(), "not ready, naming the bucket; it said {}\n{}", said.lock().expect("lock"), sink.logs());
    let body =
        std::fs::read(sre_testkit::workspace_root().join("tests/fixtures/alertmanager/webhook-v4-firing-single.json"))
            .expect("fixture");
    let post = || {
        http_exchange(ingress.port(), "POST", "/webhooks/alertmanager", &[("Content-Type", "application/json")], &body)
    };
    let (status, head, answer) = post().expect("the ingress answers");
    assert_eq!(status, 503, "{answer}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    eventually("the ingress logs the missing leader", WAIT, || async {
        ingress.logs().contains("no stream leader answered")
    })
    .await;
    assert!(!ingress.logs().contains("no stream found"), "not a missing stream");

    // Back: ready by itself, the webhook stored, one warning per episode.
    cluster.start_node(bucket_node).expect("node back");
    if intents_node != bucket_node {
        cluster.start_node(intents_node).expect("node back");
    }
    ready(&mut sink, "the sink after the outage");
    eventually("the ingress stores again", WAIT, || async { post().is_some_and(|(s, _, _)| s == 200) }).await;
    let logs = sink.logs();
    let kv_warnings = logs.lines().filter(|l| l.contains("KV bucket not answering")).count();
    assert!(kv_warnings <= 2, "a warning per episode, not per attempt: {kv_warnings}");
    assert!(logs.contains("KV bucket answering again"), "recovery is logged");
    let pulls = logs.lines().filter(|l| l.contains("pulling facts failed")).count();
    let attempts = sink.metric("sre_bus_pull_errors_total", &[]);
    eprintln!("while down: {kv_warnings} KV warnings, {pulls} pull warnings for {attempts} failed pulls");
    assert!(pulls <= 2, "a warning per episode, not per attempt: {pulls} for {attempts} failed pulls");
}

/// Two of three nodes down: the sink's R3 bucket has no quorum, so no claim can be written,
/// although the surviving replica still answers reads. The sink says it is not ready for
/// the whole outage (its readiness writes to the bucket, it does not only read), and is
/// ready again by itself once a quorum is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_the_sink_stays_not_ready_until_it_is_back() {
    let _serial = SERIAL.lock().await;
    let mut cluster = NatsCluster::start(3).expect("cluster");
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let dir = tempfile::tempdir().expect("tempdir");
    // Connected to the node that stays up.
    let survivor = cluster.url(0);
    let mut sink = paging_sink(dir.path(), &pd, &survivor, "paging-0", "");
    ready(&mut sink, "paging-sink");
    cluster.wait_streams_current().expect("replicas caught up");
    assert_eq!(cluster.placement("KV_sre_paging_sink_pages").map(|p| p.1), Some(3), "R3");
    cluster.kill(1);
    cluster.kill(2);
    eventually("not ready, naming the bucket", WAIT, || async {
        sink.get("/readyz").is_some_and(|(s, b)| s == 503 && b.contains("KV bucket sre_paging_sink_pages"))
    })
    .await;
    // The outage goes on: readiness must not come back while no claim can be written
    // (a read-only probe answered by the survivor came back 10-15 s in).
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(20) {
        let (status, body) = sink.get("/readyz").expect("answers");
        assert_eq!(status, 503, "ready without a quorum, {:?} into the outage: {body}", outage.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await; // sampling the outage, not waiting for a state
    }
    cluster.start_node(1).expect("node back");
    cluster.start_node(2).expect("node back");
    ready(&mut sink, "the sink once a quorum is back");
}

/// An upgrade on the cluster as deployed: the operator provisioned the R3 streams and the
/// ticketing-sink consumer as the previous release listed it (without
/// `IncidentAcknowledged`); the new sink, on the charts' bus settings, widens that consumer
/// in place (still R3, nothing lost) and comments the acknowledge on the ticket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_ticketing_sink_widens_the_operators_consumer_in_place() {
    use sre_contracts::domain::v1::{
        IncidentAcknowledged, IncidentAnnotated, IncidentClosed, IncidentReopened, IncidentResolved,
        IncidentSeverityChanged,
    };
    let _serial = SERIAL.lock().await;
    let cluster = NatsCluster::start(3).expect("cluster");
    // The operator provisions a cluster whose meta group has settled (a just-formed one can
    // time out creating R3 streams for a while on a loaded machine).
    cluster.wait_settled().expect("settled");
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, js) = client(&cluster.url(0)).await;
    assert_eq!(sre_testkit::domain::provision_replicated(&js, 3).await, Ok(3), "the operator's R3 streams");
    let previous = [IncidentCreated::SUBJECT, IncidentResolved::SUBJECT, IncidentClosed::SUBJECT];
    let facts = js.get_stream(streams::FACTS).await.expect("facts stream");
    facts
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("ticketing-sink".into()),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            filter_subjects: previous.iter().map(|s| (*s).to_owned()).collect(),
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .expect("the previous release's consumer");

    let jira = sre_testkit::jira::FakeJira::start(sre_testkit::jira::Flavor::DataCenter, "Bearer t0ken", &["OPS"])
        .await
        .expect("jira");
    let config = format!(
        "ticketing_integration:\n  default_provider: jira\n  jira:\n    base_url: {}\n    deployment: data_center\n    \
         project_key: OPS\n    secret_ref: platform/jira\nruntime:\n  bus:\n    manage_streams: false\n    streams:\n      \
         replicas: auto\n",
        jira.url()
    );
    let urls = cluster.urls();
    let mut sink = spawn(
        "ticketing-sink",
        dir.path(),
        &config,
        &[("NATS_URL", &urls), ("POD_NAME", "ticketing-0"), ("SECRET_PLATFORM_JIRA_TOKEN", "t0ken")],
    );
    ready(&mut sink, "ticketing-sink after the upgrade");
    let mut consumer =
        facts.get_consumer::<async_nats::jetstream::consumer::pull::Config>("ticketing-sink").await.expect("consumer");
    let info = consumer.info().await.expect("info").clone();
    assert_eq!(
        info.config.filter_subjects,
        [
            IncidentCreated::SUBJECT,
            IncidentAcknowledged::SUBJECT,
            IncidentResolved::SUBJECT,
            IncidentClosed::SUBJECT,
            IncidentReopened::SUBJECT,
            IncidentSeverityChanged::SUBJECT,
            IncidentAnnotated::SUBJECT
        ],
        "widened in place"
    );
    let replicas = info.cluster.as_ref().map_or(0, |c| c.replicas.len() + 1);
    assert_eq!(replicas, 3, "still three replicas: {:?}", info.cluster);

    publish_created(&js, "inc-upgraded").await;
    eventually("the ticket", WAIT, || async { !jira.issues().is_empty() }).await;
    let ack = IncidentAcknowledged {
        incident_id: "inc-upgraded".into(),
        by: "Dana in pagerduty".into(),
        ..Default::default()
    };
    js.publish(IncidentAcknowledged::SUBJECT, ack.encode_to_vec().into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    eventually("the acknowledge commented", WAIT, || async { jira.issues()[0].comments.len() == 1 }).await;
    assert_eq!(jira.issues()[0].comments[0], serde_json::json!("Incident acknowledged by Dana in pagerduty."));
}
