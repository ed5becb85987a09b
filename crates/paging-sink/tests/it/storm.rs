//! Four replicas and a storm: one sender per credential at any replica count, a storm on
//! one routing key never holding back another key's page, a vendor's 429 with
//! `Retry-After` pausing that key on every replica, and the sender's SIGKILL mid-storm
//! with the storm going on after it.
//! The figures are printed (`--no-capture`).
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use sre_contracts::domain::v1::Severity;
use sre_testkit::bus::eventually;
use sre_testkit::pagerduty::{Event, FakePagerDuty};
use sre_testkit::service::ServiceProcess;

use crate::paging::{OTHER_KEY, ROUTING_KEY, stack};

/// The configured limit per routing key: 300 incidents take two windows.
const LIMIT: usize = 150;

fn config(pd: &FakePagerDuty) -> String {
    format!(
        "paging_integration:\n  default_provider: pagerduty\n  pagerduty:\n    routing_key_ref: platform/pagerduty\n    \
         base_url: {}\n    events_per_minute: {LIMIT}\n  routes:\n    - match: {{service: payments-db}}\n      \
         routing_key_ref: platform/pd-other\n  escalation:\n    critical: immediate\n",
        pd.url()
    )
}

/// The most events on `key` in any window of 60 s.
fn busiest_minute(events: &[Event], key: &str) -> usize {
    let at: Vec<_> = events.iter().filter(|e| e.routing_key == key).map(|e| e.at).collect();
    (0..at.len())
        .map(|i| at[i..].iter().take_while(|t| **t < at[i] + Duration::from_secs(60)).count())
        .max()
        .unwrap_or(0)
}

fn sender(replicas: &[ServiceProcess]) -> Option<usize> {
    let senders: Vec<usize> =
        (0..replicas.len()).filter(|i| replicas[*i].metric("paging_sink_sender", &[]) == 1.0).collect();
    (senders.len() == 1).then(|| senders[0])
}

fn triggers(pd: &FakePagerDuty, key: &str) -> usize {
    pd.events().iter().filter(|e| e.routing_key == key && e.action == "trigger").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_replicas_hold_the_limit_through_a_storm_a_pause_and_the_senders_sigkill() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    pd.set_rate_limit(120.max(LIMIT));
    let s = stack(&config(&pd));
    let mut replicas: Vec<ServiceProcess> = (0..4).map(|i| s.sink(&format!("paging-{i}"))).collect();
    eventually("one sender among four", Duration::from_secs(15), || async { sender(&replicas).is_some() }).await;

    // A storm of 300 critical incidents on one routing key: 200 now, 100 after a failover.
    let started = Instant::now();
    for i in 0..200 {
        s.created(&format!("storm-{i}"), Severity::Critical, "checkout-api", &format!("storm-{i}")).await;
    }
    eventually("the first window's worth paged", Duration::from_secs(30), || async {
        triggers(&pd, ROUTING_KEY) >= LIMIT
    })
    .await;

    // A person resolves a storm incident whose page waits for the next window (handed back
    // to the bus): nobody is paged for it, rather than paged and then resolved.
    let first = sender(&replicas).expect("a sender");
    eventually("the rest handed back until the next window", Duration::from_secs(30), || async {
        replicas[first].metric("paging_sink_pages_total", &["Retried"]) >= 50.0
    })
    .await;
    let paged: Vec<String> = pd.alerts().into_iter().map(|a| a.dedup_key).collect();
    let waiting = (0..200).map(|i| format!("storm-{i}")).rev().find(|id| !paged.contains(id)).expect("one waits");
    s.resolved(&waiting).await;
    eventually("the waiting page cancelled", Duration::from_secs(10), || async {
        replicas[first].metric("paging_sink_follow_ups_total", &["Cancelled"]) == 1.0
    })
    .await;

    // Meanwhile another team's critical incident, on another key, is paged at once.
    let other = Instant::now();
    s.created("other-1", Severity::Critical, "payments-db", "other-1").await;
    eventually("the other key paged at once", Duration::from_secs(5), || async { triggers(&pd, OTHER_KEY) == 1 }).await;
    println!("another key's critical page during the storm: {:?} after its fact", other.elapsed());
    assert_eq!(triggers(&pd, ROUTING_KEY), LIMIT, "the storm's key waits for its window");

    // PagerDuty answers the other key 429 with Retry-After: 20.
    pd.fail_next(&[(429, Some(20))]);
    let refused = Instant::now();
    s.created("other-2", Severity::Critical, "payments-db", "other-2").await;
    eventually("the 429 answered", Duration::from_secs(5), || async {
        pd.requests() as usize > triggers(&pd, ROUTING_KEY) + 1
    })
    .await;

    // The sender dies mid-storm: one of the other three takes over.
    let leader = sender(&replicas).expect("a sender");
    let killed = Instant::now();
    replicas[leader].kill();
    let mut standbys: Vec<ServiceProcess> =
        replicas.drain(..).enumerate().filter(|(i, _)| *i != leader).map(|(_, p)| p).collect();
    eventually("a new sender", Duration::from_secs(30), || async { sender(&standbys).is_some() }).await;
    let failover = killed.elapsed();
    println!("failover after the sender's SIGKILL: {failover:?}");
    assert!(failover < Duration::from_secs(15), "within the lease TTL and a renewal: {failover:?}");
    // The storm goes on: the new sender took on its predecessor's window, so these wait
    // for the next one instead of doubling this one.
    for i in 200..300 {
        s.created(&format!("storm-{i}"), Severity::Critical, "checkout-api", &format!("storm-{i}")).await;
    }

    // The pause holds on the new sender: an incident for the paused key waits for it.
    s.created("other-3", Severity::Critical, "payments-db", "other-3").await;
    eventually("the paused key paged again", Duration::from_secs(40), || async { triggers(&pd, OTHER_KEY) == 3 }).await;
    let other_events: Vec<_> = pd.events().into_iter().filter(|e| e.routing_key == OTHER_KEY).collect();
    let first_after_pause = other_events[1].at;
    assert!(
        first_after_pause.duration_since(refused) >= Duration::from_secs(19),
        "nothing on the paused key before Retry-After ran out, on any replica: {:?}",
        first_after_pause.duration_since(refused)
    );

    // Every storm incident paged once, and no rolling minute over the limit.
    eventually("the whole storm paged but the one resolved", Duration::from_secs(120), || async {
        pd.alerts().iter().filter(|a| a.routing_key == ROUTING_KEY).count() == 299
    })
    .await;
    println!("storm of 300 at {LIMIT}/min paged in {:?}", started.elapsed());
    let events = pd.events();
    let busiest = busiest_minute(&events, ROUTING_KEY);
    println!("busiest rolling minute: {busiest} events (limit {LIMIT})");
    assert!(busiest <= LIMIT, "{busiest} events in one rolling minute");
    let refused: Vec<String> = pd
        .refused()
        .iter()
        .map(|(key, dedup, at)| {
            let before: Vec<_> = events.iter().filter(|e| e.routing_key == *key && e.at <= *at).collect();
            let in_minute = before.iter().filter(|e| at.duration_since(e.at) < Duration::from_secs(60)).count();
            let first = before
                .iter()
                .filter(|e| at.duration_since(e.at) < Duration::from_secs(60))
                .map(|e| e.at.duration_since(started))
                .next();
            format!(
                "{dedup} at {:?}: {in_minute} accepted in the minute before, the first at {first:?}; kill at {:?}",
                at.duration_since(started),
                killed.duration_since(started)
            )
        })
        .collect();
    assert_eq!(pd.throttled(), 0, "PagerDuty never refused an event for its limit: {refused:?}");
    let mut per_incident: BTreeMap<String, usize> = BTreeMap::new();
    for a in pd.alerts().iter().filter(|a| a.routing_key == ROUTING_KEY) {
        *per_incident.entry(a.dedup_key.clone()).or_default() += 1 + a.merged as usize;
    }
    assert_eq!(per_incident.len(), 299);
    assert!(!per_incident.contains_key(&waiting), "{waiting}, resolved while it waited, never paged");
    assert!(pd.events().iter().all(|e| e.dedup_key != waiting), "nothing sent for {waiting}");
    let twice: Vec<String> = per_incident
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| {
            let at: Vec<_> = events
                .iter()
                .filter(|e| &e.dedup_key == id)
                .map(|e| (e.action.clone(), e.at.duration_since(started)))
                .collect();
            format!("{id}: {at:?}")
        })
        .collect();
    assert!(twice.is_empty(), "no trigger sent twice (kill at {:?}): {twice:?}", killed.duration_since(started));
    for p in &mut standbys {
        p.terminate(Duration::from_secs(30)).expect("stops");
    }
}
