//! The whole system on the bus platform teams run: a three-node JetStream cluster (R3
//! streams from `deploy/nats/jetstream/`, every component on its own user from
//! `deploy/nats/sre.conf`), every adapter at two replicas on the seed list with the
//! charts' bus settings (replicas `auto`, streams not managed), the SRE-domain stand-in
//! and the test vendors. While alerts flow, the cluster goes through what an upgrade and a
//! bad day do to it: a rolling restart of every node, a stream leader SIGKILLed, a node
//! down for 20 s, and one node's disk lost. Afterwards every accepted alert has exactly one
//! intent, every incident one ticket and one page, every acknowledge and close applied,
//! nothing dead-lettered; the counts and timings are printed.
//!
//! `SRE_FAULT_ALERTS` sets how many alerts flow (`cargo xtask faults --alerts N`); CI keeps
//! the default, which fits its time.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use prost::Message;
use sre_contracts::domain::v1::{
    AppHealth, CreateIncidentRequested, IngestAlertRequested, RecordFleetStateRequested, RecordHealthCheckRequested,
};
use sre_contracts::{BusMessage, streams};
use sre_testkit::argocd::{App, FakeArgoCd};
use sre_testkit::bus::eventually;
use sre_testkit::cluster::NatsCluster;
use sre_testkit::domain::Domain;
use sre_testkit::jira::{FakeJira, Flavor};
use sre_testkit::pagerduty::{AlertStatus, FakePagerDuty};
use sre_testkit::stack::{Adapter, Sent, deploy_accounts, password, send_alerts};

const DEFAULT_ALERTS: usize = 200;
const JIRA_TOKEN: &str = "jira-pat-0123456789";
const ROUTING_KEY: &str = "R0UT1NGKEY0123456789ABCDEFGHIJKL";
const ARGOCD_TOKEN: &str = "argocd-token-0123456789";
/// How long the disruptions take, roughly: the alert flow is paced to span them.
const DISRUPTIONS: Duration = Duration::from_secs(95);
/// How long a node stays frozen.
const FROZEN_FOR: Duration = Duration::from_secs(30);

/// Whether a connection name is an adapter's (`<service>/<instance>`).
fn is_adapter(name: &str) -> bool {
    sre_testkit::inventory::ADAPTERS.iter().any(|a| name.starts_with(&format!("{a}/")))
}

/// The 503s the senders were answered so far.
fn answered_503(sent: &Mutex<Sent>) -> u64 {
    sent.lock().unwrap_or_else(PoisonError::into_inner).unavailable
}

async fn domain_client(seeds: &str) -> async_nats::jetstream::Context {
    let client = async_nats::ConnectOptions::with_user_and_password("sre-domain".into(), password("sre-domain"))
        .retry_on_initial_connect()
        .connect(seeds.split(',').collect::<Vec<_>>())
        .await
        .expect("the domain connects");
    async_nats::jetstream::ContextBuilder::new().timeout(Duration::from_secs(5)).build(client)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The load alert number in a title or summary ("load alert 17").
fn alert_number(text: &str) -> Option<usize> {
    text.split("load alert ").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("join")
}

/// Runs `step` on the cluster off the async threads; returns the cluster and how long the
/// bus took to be whole again (every node healthy, every replica current).
async fn disrupt(
    cluster: NatsCluster,
    step: impl FnOnce(&mut NatsCluster) + Send + 'static,
) -> (NatsCluster, Duration) {
    blocking(move || {
        let mut c = cluster;
        let started = Instant::now();
        step(&mut c);
        for i in 0..c.len() {
            c.start_node(i).expect("node back");
        }
        c.wait_settled().expect("meta group settled");
        c.wait_streams_current().expect("replicas current");
        (c, started.elapsed())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_node_cluster_alerts_reach_the_vendors_once_through_restarts_leader_kills_and_lost_disks() {
    let total: usize = std::env::var("SRE_FAULT_ALERTS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_ALERTS);
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = NatsCluster::start_with_accounts(3, Some(&deploy_accounts())).expect("cluster");
    let seeds = cluster.urls();
    let js = domain_client(&seeds).await;
    assert_eq!(sre_testkit::domain::provision_replicated(&js, 3).await, Ok(3), "R3 domain streams");
    let domain = Domain::start(js.clone(), false, Arc::new(|_: &str| {}));
    let jira = FakeJira::start(Flavor::DataCenter, &format!("Bearer {JIRA_TOKEN}"), &["OPS"]).await.expect("jira");
    let pagerduty = FakePagerDuty::start().await.expect("pagerduty");
    let argo =
        FakeArgoCd::start(ARGOCD_TOKEN, vec![App::new("checkout", "production"), App::new("payments", "production")])
            .await
            .expect("argo cd");

    // The charts' bus settings: streams provisioned, replicas auto.
    let bus = "runtime:\n  bus:\n    manage_streams: false\n    streams:\n      replicas: auto\n";
    let d = dir.path();
    let ingress_config =
        format!("alertmanager_integration:\n  auto_create_incident: {{enabled: true, min_severity: high}}\n{bus}");
    let ticketing_config = format!(
        "ticketing_integration:\n  default_provider: jira\n  jira:\n    base_url: {}\n    deployment: data_center\n    \
         project_key: OPS\n    secret_ref: sys/jira\n    requests_per_minute: 60000\n{bus}",
        jira.url()
    );
    let paging_config = format!(
        "paging_integration:\n  default_provider: pagerduty\n  pagerduty:\n    routing_key_ref: sys/pagerduty\n    \
         base_url: {}\n    events_per_minute: 60000\n  escalation: {{critical: immediate, high: immediate}}\n{bus}",
        pagerduty.url()
    );
    let argocd_config = format!(
        "argocd_integration:\n  poll_interval: 1s\n  argocd_server:\n    - url: {}\n      secret_ref: sys/argocd\n  \
         environments: [production]\n{bus}",
        argo.url()
    );
    let jira_secret = [("SECRET_SYS_JIRA_TOKEN", JIRA_TOKEN)];
    let pd_secret = [("SECRET_SYS_PAGERDUTY_ROUTING_KEY", ROUTING_KEY)];
    let argo_secret = [("SECRET_SYS_ARGOCD_TOKEN", ARGOCD_TOKEN)];
    let mut adapters = Vec::new();
    for n in 0..2 {
        adapters.push(Adapter::start("alertmanager-ingress", &format!("ingress-{n}"), d, &ingress_config, &seeds, &[]));
        adapters.push(Adapter::start(
            "ticketing-sink",
            &format!("ticketing-{n}"),
            d,
            &ticketing_config,
            &seeds,
            &jira_secret,
        ));
        adapters.push(Adapter::start("paging-sink", &format!("paging-{n}"), d, &paging_config, &seeds, &pd_secret));
        adapters.push(Adapter::start("argocd-sync", &format!("argocd-{n}"), d, &argocd_config, &seeds, &argo_secret));
    }
    for bucket in ["KV_sre_ticketing_sink_tickets", "KV_sre_paging_sink_pages", "KV_sre_argocd_sync_state"] {
        assert_eq!(cluster.placement(bucket).map(|p| p.1), Some(3), "{bucket} is R3 on the charts' settings");
    }
    let ports: Vec<u16> =
        adapters.iter().filter(|a| a.name == "alertmanager-ingress").map(|a| a.process.port()).collect();

    // The flow, paced to span the disruptions.
    let sent = Arc::new(Mutex::new(Sent::default()));
    let pace = (DISRUPTIONS / total.max(1) as u32).saturating_sub(Duration::from_millis(3));
    let sender = {
        let (sent, ports) = (sent.clone(), ports.clone());
        std::thread::spawn(move || send_alerts(&ports, total, pace, sent))
    };
    let started = Instant::now();
    let mut recoveries: Vec<(String, Duration)> = Vec::new();

    // 1. A rolling restart, node by node, as every upgrade does it.
    let (mut cluster, took) = disrupt(cluster, |c| {
        for i in 0..c.len() {
            c.stop(i);
            c.start_node(i).expect("restarted");
            c.wait_streams_current().expect("replicas current");
        }
    })
    .await;
    recoveries.push(("rolling restart of 3 nodes".into(), took));

    // 2. An Argo CD application degrades; then the intents stream's leader is SIGKILLed.
    argo.set_health("payments", "Degraded", "Deployment has minimum availability");
    let leader = cluster.placement(streams::INTENTS).and_then(|p| p.0).expect("intents leader");
    let took;
    (cluster, took) = disrupt(cluster, move |c| c.kill(leader)).await;
    recoveries.push((format!("SIGKILL of n{leader}, the intents stream's leader"), took));

    // 3. A node down for 20 s.
    let took;
    (cluster, took) = disrupt(cluster, |c| {
        c.kill(1);
        std::thread::sleep(Duration::from_secs(20)); // the outage itself, not a synchronisation
    })
    .await;
    recoveries.push(("n1 down for 20 s".into(), took));

    // 4. A node's disk lost: it comes back empty and the cluster gives it its replicas.
    let took;
    (cluster, took) = disrupt(cluster, |c| c.wipe_and_start(2).expect("n2 back empty")).await;
    recoveries.push(("n2's disk lost".into(), took));

    // 5. An upgrade as the NATS Helm chart does it: each node in turn put in lame-duck mode
    //    (`nats-server --signal ldm=<pid>`), exited, restarted. The adapters move off the
    //    node at the notice, before it closes them.
    let mut moves: Vec<(String, u64, Duration)> = Vec::new();
    for i in 0..cluster.len() {
        let before = answered_503(&sent);
        let (c, moved) = blocking(move || {
            let mut c = cluster;
            let signalled = Instant::now();
            c.signal_lame_duck(i).expect("lame-duck mode");
            // The node still answers its monitor while it drains: every adapter gone from it.
            let mut moved = None;
            while signalled.elapsed() < Duration::from_secs(30) {
                if c.client_names(i).is_some_and(|names| !names.iter().any(|n| is_adapter(n))) {
                    moved = Some(signalled.elapsed());
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            c.wait_exit(i).expect("the node exits");
            c.start_node(i).expect("upgraded node back");
            c.wait_settled().expect("meta group settled");
            c.wait_streams_current().expect("replicas current");
            (c, moved.expect("every adapter moved off the node in lame-duck mode"))
        })
        .await;
        cluster = c;
        moves.push((format!("lame-duck upgrade of n{i}"), answered_503(&sent) - before, moved));
    }

    // 6. A node frozen for 30 s (SIGSTOP: its sockets stay open, nothing answers), then
    //    thawed: the adapters connected to it notice within seconds and move.
    let before = answered_503(&sent);
    let frozen = 0;
    let (c, moved) = blocking(move || {
        let mut c = cluster;
        let adapters_on_frozen = c.client_names(frozen).unwrap_or_default().iter().filter(|n| is_adapter(n)).count();
        let total_adapters: usize =
            (0..c.len()).filter_map(|i| c.client_names(i)).map(|n| n.iter().filter(|n| is_adapter(n)).count()).sum();
        let froze = Instant::now();
        c.freeze(frozen);
        let mut moved = None;
        while froze.elapsed() < FROZEN_FOR {
            let elsewhere: usize = (0..c.len())
                .filter(|i| *i != frozen)
                .filter_map(|i| c.client_names(i))
                .map(|n| n.iter().filter(|n| is_adapter(n)).count())
                .sum();
            if moved.is_none() && elsewhere >= total_adapters {
                moved = Some(froze.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        c.thaw(frozen);
        c.wait_settled().expect("meta group settled");
        c.wait_streams_current().expect("replicas current");
        (c, (moved, adapters_on_frozen))
    })
    .await;
    cluster = c;
    let (moved, on_frozen) = moved;
    let moved = moved.expect("every adapter moved off the frozen node");
    moves.push((
        format!("n{frozen} frozen for 30 s ({on_frozen} adapter connections on it)"),
        answered_503(&sent) - before,
        moved,
    ));

    blocking(move || sender.join().expect("sender")).await;
    let send_time = started.elapsed();

    // Converge: every critical alert an incident, every incident a ticket and a page.
    let critical = total.div_ceil(5);
    let (domain_ref, jira_ref, pd_ref) = (&domain, &jira, &pagerduty);
    eventually("every incident has its ticket and its page", Duration::from_secs(120), || async move {
        domain_ref.incidents().len() == critical
            && jira_ref.issues().len() >= critical
            && pd_ref.alerts().len() >= critical
    })
    .await;

    // Poll cycles argocd-sync completed (published, acked and saved), read before the
    // intents so none completes in between: each must have its fleet state on the bus.
    let cycles_ok: f64 = adapters
        .iter()
        .filter(|a| a.name == "argocd-sync")
        .map(|a| a.process.metric("argocd_sync_polls_total", &["outcome=\"Ok\""]))
        .sum();

    // What the user sees.
    let intents = sre_testkit::bus::read_stream(&js, streams::INTENTS).await;
    let mut ingest: HashMap<String, u32> = HashMap::new();
    let mut by_key: HashMap<String, u32> = HashMap::new();
    let (mut creates, mut degraded, mut fleet_states) = (0, 0, 0);
    for (subject, _, payload) in &intents {
        if subject == IngestAlertRequested::SUBJECT {
            let i = IngestAlertRequested::decode(payload.clone()).expect("intent");
            *ingest.entry(i.fingerprint).or_default() += 1;
            *by_key.entry(i.meta.map(|m| m.idempotency_key).unwrap_or_default()).or_default() += 1;
        } else if subject == CreateIncidentRequested::SUBJECT {
            creates += 1;
        } else if subject == RecordFleetStateRequested::SUBJECT {
            let f = RecordFleetStateRequested::decode(payload.clone()).expect("intent");
            if f.environment == "production" && f.observation_ok {
                fleet_states += 1;
            }
        } else if subject == RecordHealthCheckRequested::SUBJECT {
            let h = RecordHealthCheckRequested::decode(payload.clone()).expect("intent");
            if h.app.ends_with("payments") && h.health == AppHealth::Degraded as i32 {
                degraded += 1;
            }
        }
    }
    let sent = std::mem::take(&mut *sent.lock().unwrap_or_else(PoisonError::into_inner));
    let accepted: Vec<&String> = sent.alerts.iter().filter(|(_, (_, ok))| *ok).map(|(f, _)| f).collect();
    let lost_intents = accepted.iter().filter(|f| !ingest.contains_key(**f)).count();
    let duplicate_intents = by_key.values().filter(|n| **n > 1).count();
    let incidents = domain.incidents();
    let mut tickets: HashMap<String, u32> = HashMap::new();
    for issue in jira.issues() {
        let id = issue.labels.iter().find_map(|l| l.strip_prefix("sre-incident-")).expect("marker").to_owned();
        *tickets.entry(id).or_default() += 1;
    }
    let lost_tickets = incidents.iter().filter(|i| !tickets.contains_key(*i)).count();
    let duplicate_tickets = tickets.values().filter(|n| **n > 1).count();
    let alerts = pagerduty.alerts();
    let pages: HashMap<&str, u32> = alerts.iter().map(|a| (a.dedup_key.as_str(), a.merged)).collect();
    let lost_pages = incidents.iter().filter(|i| !pages.contains_key(i.as_str())).count();
    let dead_letters = sre_testkit::bus::read_stream(&js, streams::DEAD_LETTER).await.len();
    let fingerprint_of = |n: usize| sre_testkit::stack::load_webhook(n, n.is_multiple_of(5)).0;
    let latency = |n: Option<usize>, at: Instant| {
        n.and_then(|n| sent.first_sent.get(&fingerprint_of(n))).map(|first| at.saturating_duration_since(*first))
    };
    let mut to_ticket: Vec<Duration> =
        jira.issues().iter().filter_map(|i| latency(alert_number(&i.summary), i.created)).collect();
    let mut to_page: Vec<Duration> = alerts
        .iter()
        .filter_map(|a| latency(a.trigger["payload"]["summary"].as_str().and_then(alert_number), a.created))
        .collect();
    to_ticket.sort();
    to_page.sort();
    let leaders: f64 =
        adapters.iter().filter(|a| a.name == "argocd-sync").map(|a| a.process.metric("argocd_sync_leader", &[])).sum();

    println!(
        "cluster faults, in order, with the time until the bus was whole again (all nodes healthy, replicas current):"
    );
    for (what, took) in &recoveries {
        println!("  {what}: {took:.1?}");
    }
    println!("moves off a node, with the 503s answered meanwhile and the time until every adapter had moved:");
    for (what, answered, moved) in &moves {
        println!("  {what}: {answered} answered 503, every adapter moved in {moved:.1?}");
    }
    println!(
        "sent {} alerts in {:.1?} to 2 ingress replicas ({} attempts: {} answered 503, {} refused)",
        sent.alerts.len(),
        send_time,
        sent.attempts,
        sent.unavailable,
        sent.refused
    );
    println!(
        "accepted {} | intents: {} IngestAlertRequested for {} alerts, {} CreateIncidentRequested | incidents {} | \
         tickets {} | pages {} | duplicates: {} intents, {} tickets | lost: {} intents, {} tickets, {} pages | \
         dead letters {} | argocd-sync pollers {} of 2 replicas, payments going Degraded published {} time(s), \
         {} fleet states for {} completed poll cycles",
        accepted.len(),
        ingest.values().sum::<u32>(),
        ingest.len(),
        creates,
        incidents.len(),
        tickets.len(),
        pages.len(),
        duplicate_intents,
        duplicate_tickets,
        lost_intents,
        lost_tickets,
        lost_pages,
        dead_letters,
        leaders,
        degraded,
        fleet_states,
        cycles_ok
    );
    println!(
        "alert to ticket p50 {:.1?} p99 {:.1?}; alert to page p50 {:.1?} p99 {:.1?}",
        percentile(&to_ticket, 0.5),
        percentile(&to_ticket, 0.99),
        percentile(&to_page, 0.5),
        percentile(&to_page, 0.99)
    );

    assert_eq!(accepted.len(), total, "Alertmanager's retries get every alert in");
    assert_eq!((lost_intents, duplicate_intents), (0, 0), "each accepted alert has exactly one intent");
    assert_eq!(creates, critical, "one CreateIncidentRequested per critical alert");
    assert_eq!(incidents.len(), critical);
    assert_eq!((lost_tickets, duplicate_tickets), (0, 0), "exactly one ticket per incident");
    assert_eq!((lost_pages, pages.len()), (0, incidents.len()), "exactly one page per incident");
    assert_eq!(dead_letters, 0, "nothing given up on: every disruption was survivable");
    for (what, answered, moved) in &moves {
        if what.starts_with("lame-duck") {
            assert_eq!(*answered, 0, "{what}: a lame-duck upgrade is invisible to Alertmanager");
            assert!(*moved < Duration::from_secs(3), "{what}: the adapters move at the notice: {moved:?}");
        } else {
            assert!(
                *moved < Duration::from_secs(10),
                "{what}: the adapters leave a frozen node within 10 s: {moved:?}"
            );
        }
    }
    assert_eq!(degraded, 1, "the application's change published once, by one poller");
    assert_eq!(leaders, 1.0, "one argocd-sync replica polls");
    // Every completed cycle's fleet state is stored, each under its own key (the lease
    // renewal's revision): 1 s polls with jitter once shared time slots and lost reports.
    assert!(cycles_ok >= 10.0, "argocd-sync polled through the run: {cycles_ok}");
    assert!(fleet_states as f64 >= cycles_ok, "a fleet state for every completed cycle: {fleet_states} < {cycles_ok}");

    // The on-call acknowledges and closes every incident.
    let lifecycle = Instant::now();
    for id in &incidents {
        assert!(domain.acknowledge(id, "oncall").await && domain.close(id, "oncall").await);
    }
    // A close ends the page too (resolved), whether the acknowledge got there first or not.
    eventually("every page ended and every ticket closed", Duration::from_secs(60), || async {
        pagerduty.alerts().iter().all(|a| a.status == AlertStatus::Resolved)
            && jira.issues().iter().all(|i| i.status == "Closed")
    })
    .await;
    let dead_letters = sre_testkit::bus::read_stream(&js, streams::DEAD_LETTER).await.len();
    println!(
        "then {} incidents acknowledged and closed in {:.1?}: pages resolved {}, tickets closed {}, dead letters {}",
        incidents.len(),
        lifecycle.elapsed(),
        pagerduty.alerts().iter().filter(|a| a.status == AlertStatus::Resolved).count(),
        jira.issues().iter().filter(|i| i.status == "Closed").count(),
        dead_letters
    );
    assert_eq!(dead_letters, 0, "no acknowledge or close was given up on");
    drop(adapters);
    drop(cluster);
}

/// Two-way sync on the cluster platform teams run: paging-sink as its own bus user
/// (`deploy/nats/sre.conf`) with the charts' bus settings, R3 streams. A person acknowledges
/// in PagerDuty while the intents stream's leader has just been SIGKILLed: PagerDuty's
/// signed webhook is answered 200 only once a leader has stored it (503 before, which
/// PagerDuty retries), and the intent is stored once, on an R3 stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_node_cluster_a_persons_acknowledge_is_one_intent_through_a_stream_leader_kill() {
    use sre_contracts::domain::v1::{AcknowledgeIncidentRequested, IncidentCreated, Severity};
    const SECRET: &str = "pd-webhook-secret";
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cluster = NatsCluster::start_with_accounts(3, Some(&deploy_accounts())).expect("cluster");
    let seeds = cluster.urls();
    let js = domain_client(&seeds).await;
    assert_eq!(sre_testkit::domain::provision_replicated(&js, 3).await, Ok(3), "R3 domain streams");
    let pagerduty = FakePagerDuty::start().await.expect("pagerduty");
    let config = format!(
        "paging_integration:\n  default_provider: pagerduty\n  pagerduty:\n    routing_key_ref: sys/pagerduty\n    \
         base_url: {}\n    webhook:\n      enabled: true\n      secret_refs: [sys/pd-webhook]\n  \
         escalation: {{critical: immediate, high: immediate}}\n\
         runtime:\n  bus:\n    manage_streams: false\n    streams:\n      replicas: auto\n",
        pagerduty.url()
    );
    let secrets = [("SECRET_SYS_PAGERDUTY_ROUTING_KEY", ROUTING_KEY), ("SECRET_SYS_PD_WEBHOOK_SECRET", SECRET)];
    let sink = Adapter::start("paging-sink", "paging-0", dir.path(), &config, &seeds, &secrets);
    pagerduty.subscribe(&format!("http://127.0.0.1:{}/webhooks/pagerduty", sink.process.port()), SECRET);

    let fact = IncidentCreated {
        incident_id: "inc-r3-1".into(),
        title: "checkout: error rate above 5%".into(),
        severity: Severity::Critical as i32,
        ..Default::default()
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(sre_contracts::headers::MSG_ID, "created-inc-r3-1");
    js.publish_with_headers(IncidentCreated::SUBJECT, headers, fact.encode_to_vec().into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    eventually("paged", Duration::from_secs(30), || async { !pagerduty.alerts().is_empty() }).await;

    let (leader, replicas) = cluster.placement(streams::INTENTS).expect("placement");
    assert_eq!(replicas, 3, "the intents stream is R3");
    let leader = leader.expect("a leader");
    cluster.kill(leader);
    assert!(pagerduty.acknowledge_as("inc-r3-1", "Ada Lovelace"));
    eventually("PagerDuty's webhook stored", Duration::from_secs(60), || async {
        pagerduty.webhooks().iter().any(|(t, _, status)| t == "incident.acknowledged" && *status == 200)
    })
    .await;
    let (cluster, healed) = disrupt(cluster, move |c| drop(c.start_node(leader))).await;
    let acks: Vec<AcknowledgeIncidentRequested> = sre_testkit::bus::read_stream(&js, streams::INTENTS)
        .await
        .into_iter()
        .filter(|(s, _, _)| s == AcknowledgeIncidentRequested::SUBJECT)
        .map(|(_, _, b)| AcknowledgeIncidentRequested::decode(b).expect("decodes"))
        .collect();
    assert_eq!(acks.len(), 1, "stored once on the cluster");
    assert_eq!(acks[0].incident_id, "inc-r3-1");
    assert_eq!(cluster.placement(streams::INTENTS).map(|p| p.1), Some(3), "still R3 after the node returned");
    println!(
        "leader killed, webhook stored once; cluster whole again in {healed:?}; webhooks {:?}",
        pagerduty.webhooks()
    );
}
