//! The reconciler, for Jira (Cloud, its search lagging behind writes by a minute) and
//! GitHub, with their webhooks held back (a receiver outage): a person resolving in Jira or
//! closing in GitHub reaches the domain within a few intervals as one intent (Jira's issues
//! are named in `reconcileIssues`, read after the write, not after the lag); the
//! webhooks delivered late add nothing; a resolve Jira's workflow refused (dead-lettered)
//! is sent again once.

use std::path::Path;
use std::time::Duration;

use prost::Message;
use sre_contracts::domain::v1::{
    CloseIncidentRequested, IncidentCreated, IncidentResolved, ResolveIncidentRequested, Severity,
};
use sre_contracts::{BusMessage, streams};
use sre_testkit::NatsServer;
use sre_testkit::bus::{eventually, publish, stream_messages, stream_records};
use sre_testkit::github::FakeGithub;
use sre_testkit::jira::{FakeJira, Flavor};
use sre_testkit::service::ServiceProcess;

use crate::tickets::{GITHUB_TOKEN, JIRA_EMAIL, JIRA_TOKEN, basic};

const WAIT: Duration = Duration::from_secs(40);
const INTERVAL: Duration = Duration::from_secs(2);
/// Longer than the test waits for a repair: only a read-after-write search sees it in time.
const LAG: Duration = Duration::from_secs(60);
const SECRET: &str = "hook-secret";

async fn intents(nats: &NatsServer, subject: &str) -> Vec<String> {
    stream_messages(&nats.url(), streams::INTENTS)
        .await
        .into_iter()
        .filter(|(s, _)| s == subject)
        .map(|(_, b)| {
            if subject == CloseIncidentRequested::SUBJECT {
                CloseIncidentRequested::decode(b).map(|i| i.incident_id).unwrap_or_default()
            } else {
                ResolveIncidentRequested::decode(b).map(|i| i.incident_id).unwrap_or_default()
            }
        })
        .collect()
}

fn repairs(sink: &ServiceProcess, provider: &str, kind: &str) -> f64 {
    sink.metric(
        "ticketing_sink_reconcile_repairs_total{",
        &[&format!("provider=\"{provider}\""), &format!("kind=\"{kind}\"")],
    )
}

async fn created(nats: &NatsServer, id: &str, service: &str) {
    let fact = IncidentCreated {
        incident_id: id.into(),
        title: format!("{service}: error rate above 5%"),
        severity: Severity::Critical as i32,
        service: service.into(),
        ..Default::default()
    };
    publish(&nats.url(), IncidentCreated::SUBJECT, &format!("created-{id}"), fact.encode_to_vec()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jira_and_github_changes_whose_webhooks_were_lost_are_repaired_once_and_a_refused_resolve_is_sent_again() {
    let nats = NatsServer::start().expect("nats");
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("connects"));
    sre_testkit::domain::provision(&js).await.expect("streams");
    let domain = sre_testkit::domain::Domain::start(js, false, std::sync::Arc::new(|_: &str| {}));
    let jira = FakeJira::start(Flavor::Cloud, &basic(), &["OPS"]).await.expect("jira");
    let gh = FakeGithub::start(GITHUB_TOKEN, &["acme/incidents"]).await.expect("github");
    jira.set_search_lag(LAG);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("ticketing-sink.yaml");
    std::fs::write(
        &config,
        format!(
            "ticketing_integration:\n  default_provider: jira\n  jira:\n    base_url: {}\n    deployment: cloud\n    \
             project_key: OPS\n    secret_ref: platform/jira\n    webhook: {{enabled: true, secret_refs: [platform/hook]}}\n  \
             github:\n    repo: acme/incidents\n    secret_ref: platform/github\n    base_url: {}\n    \
             webhook: {{enabled: true, secret_refs: [platform/hook]}}\n  \
             routes:\n    - match: {{service: payments-db}}\n      provider: github\n  reconcile: {{interval: {}s}}\n",
            jira.url(),
            gh.url(),
            INTERVAL.as_secs()
        ),
    )
    .expect("config");
    let url = nats.url();
    let mut sink = ServiceProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_ticketing-sink")),
        &["--config", config.to_str().expect("utf-8")],
        &[
            ("NATS_URL", url.as_str()),
            ("SECRET_PLATFORM_JIRA_TOKEN", JIRA_TOKEN),
            ("SECRET_PLATFORM_JIRA_EMAIL", JIRA_EMAIL),
            ("SECRET_PLATFORM_GITHUB_TOKEN", GITHUB_TOKEN),
            ("SECRET_PLATFORM_HOOK_SECRET", SECRET),
        ],
    )
    .expect("spawns");
    sink.wait_for_status("/readyz", 200, WAIT).expect("ready");
    jira.subscribe(&format!("http://127.0.0.1:{}/webhooks/jira", sink.port()), SECRET);
    gh.subscribe(&format!("http://127.0.0.1:{}/webhooks/github", sink.port()), SECRET);
    jira.hold_webhooks();
    gh.hold_webhooks();
    for (id, service) in [("inc-jira", "checkout"), ("inc-refused", "checkout"), ("inc-gh", "payments-db")] {
        created(&nats, id, service).await;
    }
    eventually("three tickets", WAIT, || async { jira.issues().len() == 2 && gh.issues().len() == 1 }).await;
    let key = |id: &str| {
        jira.issues()
            .into_iter()
            .find(|i| i.labels.contains(&format!("sre-incident-{id}")))
            .map(|i| i.key)
            .expect("ticket")
    };

    // People act; their webhooks are lost. Jira's search shows the change only after its lag,
    // but for the issues a search names in `reconcileIssues`.
    assert!(jira.transition_as(&key("inc-jira"), "Resolved", "Grace Hopper"));
    assert!(gh.close_as("acme/incidents", gh.issues()[0].number, "octocat"));
    let acted = tokio::time::Instant::now();
    eventually("both reach the domain", WAIT, || async {
        intents(&nats, ResolveIncidentRequested::SUBJECT).await == ["inc-jira"]
            && intents(&nats, CloseIncidentRequested::SUBJECT).await == ["inc-gh"]
    })
    .await;
    assert!(
        acted.elapsed() < Duration::from_secs(20),
        "within a few intervals, long before the search's lag ran out: {:?}",
        acted.elapsed()
    );
    assert!(jira.reconciled_searches() >= 1, "the issues named by id in reconcileIssues");
    assert_eq!(repairs(&sink, "jira", "Resolved"), 1.0);
    assert_eq!(repairs(&sink, "github", "Closed"), 1.0);
    // The domain decided: the sink follows up on each ticket (its comment says so), and a
    // ticket the person resolved stays resolved.
    eventually("the domain's facts reached the tickets", WAIT, || async {
        let jira_done = jira.issues().iter().any(|i| i.key == key("inc-jira") && !i.comments.is_empty());
        let gh_done = gh.issues().iter().any(|i| !i.comments.is_empty());
        jira_done && gh_done
    })
    .await;
    let resolved = jira.issues().into_iter().find(|i| i.key == key("inc-jira")).expect("ticket");
    assert_eq!(resolved.status, "Resolved", "resolving a resolved ticket again leaves it resolved");

    // The webhooks arrive late: echoes, no second intent.
    let late = jira.release_webhooks() + gh.release_webhooks();
    eventually("the late webhooks answered", WAIT, || async { jira.webhooks().len() + gh.webhooks().len() >= late })
        .await;
    assert_eq!(intents(&nats, ResolveIncidentRequested::SUBJECT).await, ["inc-jira"]);
    assert_eq!(intents(&nats, CloseIncidentRequested::SUBJECT).await, ["inc-gh"]);

    // The domain resolves inc-refused; Jira's workflow refuses the transition (400):
    // dead-lettered, then sent again by the reconciler.
    jira.refuse_transitions(1);
    let resolved = IncidentResolved { incident_id: "inc-refused".into(), by: "auto".into(), ..Default::default() };
    publish(&nats.url(), IncidentResolved::SUBJECT, "resolved-inc-refused", resolved.encode_to_vec()).await;
    eventually("sent again by the reconciler", WAIT, || async {
        jira.issues().iter().any(|i| i.key == key("inc-refused") && i.status == "Resolved")
    })
    .await;
    let dead = stream_records(&nats.url(), streams::DEAD_LETTER).await;
    assert_eq!(dead.len(), 1, "the refused resolve was dead-lettered");
    assert_eq!(repairs(&sink, "jira", "Reasserted"), 1.0);
    let passes = sink.metric("ticketing_sink_reconcile_last_complete_timestamp_seconds", &[]);
    eventually("two more passes", WAIT, || async {
        sink.metric("ticketing_sink_reconcile_last_complete_timestamp_seconds", &[])
            >= passes + 2.0 * INTERVAL.as_secs_f64()
    })
    .await;
    for (provider, kind, n) in
        [("jira", "Resolved", 1.0), ("jira", "Reasserted", 1.0), ("github", "Closed", 1.0), ("jira", "Reopened", 0.0)]
    {
        assert_eq!(repairs(&sink, provider, kind), n, "{provider} {kind}");
    }
    assert_eq!(domain.external().len(), 2, "two intents from the trackers in all");
    assert!(gh.conditional_hits() >= 1, "an unchanged issue list is a 304");
    sink.terminate(WAIT).expect("stops");
}
