//! Four replicas and a storm on one Jira account: one sender per credential at any
//! replica count, the storm never holding back a ticket on another credential (GitHub),
//! GitHub's secondary limit (403 with `retry-after`) pausing its token on every replica,
//! and the sender's SIGKILL mid-storm. The figures are printed (`--no-capture`).
#![allow(clippy::print_stdout)]

use std::time::Duration;

use sre_testkit::bus::eventually;
use sre_testkit::github::{FakeGithub, Fault};
use sre_testkit::jira::{FakeJira, Flavor};
use sre_testkit::service::ServiceProcess;
use tokio::time::Instant;

use crate::tickets::{GITHUB_TOKEN, basic, stack};

/// The configured limit of the Jira account: 300 tickets take two windows.
const LIMIT: usize = 150;

fn config(jira: &FakeJira, gh: &FakeGithub) -> String {
    format!(
        "ticketing_integration:\n  default_provider: jira\n  jira:\n    base_url: {}\n    deployment: cloud\n    \
         project_key: OPS\n    secret_ref: platform/jira\n    requests_per_minute: {LIMIT}\n  github:\n    \
         repo: acme/incidents\n    secret_ref: platform/github\n    base_url: {}\n  routes:\n    \
         - match: {{service: payments-db}}\n      provider: github\n",
        jira.url(),
        gh.url()
    )
}

/// The most of `times` in any window of 60 s.
fn busiest_minute(times: &[Instant]) -> usize {
    (0..times.len())
        .map(|i| times[i..].iter().take_while(|t| **t < times[i] + Duration::from_secs(60)).count())
        .max()
        .unwrap_or(0)
}

fn sender(replicas: &[ServiceProcess]) -> Option<usize> {
    let senders: Vec<usize> =
        (0..replicas.len()).filter(|i| replicas[*i].metric("ticketing_sink_sender", &[]) == 1.0).collect();
    (senders.len() == 1).then(|| senders[0])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_hold_the_jira_limit_through_a_storm_a_pause_and_the_senders_sigkill() {
    let jira = FakeJira::start(Flavor::Cloud, &basic(), &["OPS"]).await.expect("jira");
    let gh = FakeGithub::start(GITHUB_TOKEN, &["acme/incidents"]).await.expect("github");
    let s = stack(&config(&jira, &gh));
    let mut replicas: Vec<ServiceProcess> = (0..4).map(|i| s.sink(&format!("ticketing-{i}"))).collect();
    eventually("one sender among four", Duration::from_secs(15), || async { sender(&replicas).is_some() }).await;
    // Every replica checked the account as it started (a rollout stops on a bad one):
    // Jira's limit is counted from here, where only the sender calls.
    jira.set_rate_limit(LIMIT);
    let started = Instant::now();
    // 200 now, 100 after the failover.
    for i in 0..200 {
        s.created(&format!("storm-{i}"), "checkout-api", &format!("storm-{i}")).await;
    }
    eventually("the first window's worth of requests", Duration::from_secs(30), || async {
        jira.call_times().iter().filter(|t| **t >= started).count() >= LIMIT
    })
    .await;
    println!(
        "first window: {} Jira requests made {} tickets",
        jira.call_times().iter().filter(|t| **t >= started).count(),
        jira.issues().len()
    );

    // Meanwhile a ticket on another credential is made at once.
    let other = Instant::now();
    s.created("other-1", "payments-db", "other-1").await;
    eventually("the GitHub issue at once", Duration::from_secs(5), || async { gh.issues().len() == 1 }).await;
    println!("a ticket on another credential during the storm: {:?} after its fact", other.elapsed());

    // GitHub's secondary limit: 403 with retry-after: 20.
    gh.fail_next(&[Fault::SecondaryRateLimit(20)]);
    let calls_before = gh.calls();
    let refused = Instant::now();
    s.created("other-2", "payments-db", "other-2").await;
    eventually("the 403 answered", Duration::from_secs(5), || async { gh.calls() > calls_before }).await;

    // The sender dies mid-storm.
    let leader = sender(&replicas).expect("a sender");
    let killed = Instant::now();
    replicas[leader].kill();
    let mut standbys: Vec<ServiceProcess> =
        replicas.drain(..).enumerate().filter(|(i, _)| *i != leader).map(|(_, p)| p).collect();
    eventually("a new sender", Duration::from_secs(30), || async { sender(&standbys).is_some() }).await;
    let failover = killed.elapsed();
    println!("failover after the sender's SIGKILL: {failover:?}");
    assert!(failover < Duration::from_secs(15), "within the lease TTL and a renewal: {failover:?}");
    // The storm goes on; the new sender holds the window its predecessor began.
    for i in 200..300 {
        s.created(&format!("storm-{i}"), "checkout-api", &format!("storm-{i}")).await;
    }

    // The pause holds on the new sender too.
    s.created("other-3", "payments-db", "other-3").await;
    eventually("both paused issues made", Duration::from_secs(40), || async { gh.issues().len() == 3 }).await;
    let after_refusal: Vec<Duration> =
        gh.call_times().into_iter().filter(|t| *t > refused).map(|t| t.duration_since(refused)).collect();
    assert!(
        after_refusal.iter().skip(1).all(|d| *d >= Duration::from_secs(19)),
        "no GitHub call from any replica before retry-after ran out: {after_refusal:?}"
    );

    eventually("the whole storm ticketed", Duration::from_secs(120), || async { jira.issues().len() == 300 }).await;
    println!("storm of 300 at {LIMIT}/min ticketed in {:?}", started.elapsed());
    let calls: Vec<Instant> = jira.call_times().into_iter().filter(|t| *t >= started).collect();
    let busiest = busiest_minute(&calls);
    println!("Jira requests since the storm began: {}; busiest rolling minute: {busiest} (limit {LIMIT})", calls.len());
    assert!(busiest <= LIMIT, "{busiest} requests in one rolling minute");
    assert_eq!(jira.throttled(), 0, "Jira never refused a request for its limit");
    let markers: Vec<String> = jira
        .issues()
        .iter()
        .flat_map(|i| i.labels.iter().filter(|l| l.starts_with("sre-incident-storm-")).cloned().collect::<Vec<_>>())
        .collect();
    let distinct: std::collections::BTreeSet<&String> = markers.iter().collect();
    assert_eq!((markers.len(), distinct.len()), (300, 300), "one ticket per incident");
    for p in &mut standbys {
        p.terminate(Duration::from_secs(30)).expect("stops");
    }
}
