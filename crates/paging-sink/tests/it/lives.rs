//! The rest of an incident's life, with the real binary, a real nats-server and the test
//! PagerDuty and Opsgenie: a severity raised or lowered while a page waits, and a reopen
//! after the page was resolved.

use std::time::Duration;

use prost::Message;
use sre_contracts::BusMessage;
use sre_contracts::domain::v1::{
    ExternalOrigin, IncidentAcknowledged, IncidentAnnotated, IncidentClosed, IncidentReopened, IncidentSeverityChanged,
    MessageMeta, Severity,
};
use sre_testkit::bus::{eventually, publish};
use sre_testkit::opsgenie::FakeOpsgenie;
use sre_testkit::pagerduty::{AlertStatus, FakePagerDuty};

use crate::paging::{ALWAYS, GENIE_KEY, Stack, WAIT, config, opening_in, stack};

fn at(minute: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: 1_796_000_000 + minute * 60, nanos: 0 })
}

impl Stack {
    pub(crate) async fn severity(&self, id: &str, from: Severity, to: Severity, minute: i64, msg_id: &str) {
        let fact = IncidentSeverityChanged {
            incident_id: id.into(),
            from: from as i32,
            to: to as i32,
            by: "dana".into(),
            why: "customers affected".into(),
            at: at(minute),
            ..Default::default()
        };
        publish(&self.nats.url(), IncidentSeverityChanged::SUBJECT, msg_id, fact.encode_to_vec()).await;
    }

    async fn reopened(&self, id: &str, n: u32, msg_id: &str) {
        let fact = IncidentReopened {
            incident_id: id.into(),
            by: "auto".into(),
            reason: "its alert fired again".into(),
            reopen_count: n,
            ..Default::default()
        };
        publish(&self.nats.url(), IncidentReopened::SUBJECT, msg_id, fact.encode_to_vec()).await;
    }

    async fn note(&self, id: &str, key: &str, vendor: &str, msg_id: &str) {
        let fact = IncidentAnnotated {
            meta: Some(MessageMeta { idempotency_key: key.into(), ..Default::default() }),
            incident_id: id.into(),
            note: "failover to the replica started".into(),
            author: "Grace Hopper".into(),
            origin: Some(ExternalOrigin { vendor: vendor.into(), object_id: "OPS-7".into(), ..Default::default() }),
            ..Default::default()
        };
        publish(&self.nats.url(), IncidentAnnotated::SUBJECT, msg_id, fact.encode_to_vec()).await;
    }

    async fn closed(&self, id: &str, msg_id: &str) {
        let fact = IncidentClosed { incident_id: id.into(), by: "Grace Hopper in jira".into(), ..Default::default() };
        publish(&self.nats.url(), IncidentClosed::SUBJECT, msg_id, fact.encode_to_vec()).await;
    }

    async fn acknowledged_in(&self, id: &str, n: u32, msg_id: &str) {
        let fact =
            IncidentAcknowledged { incident_id: id.into(), by: "alice".into(), reopen_count: n, ..Default::default() };
        publish(&self.nats.url(), IncidentAcknowledged::SUBJECT, msg_id, fact.encode_to_vec()).await;
    }
}

/// A `high` incident deferred at night is raised to `critical` while the sink restarts: it
/// pages at once, long before the opening, once; the same change delivered again pages
/// nobody again. A `medium` one raised to `critical` pages too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_page_raised_to_critical_while_the_sink_restarts_pages_at_once_and_once() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let (hours, opening) = opening_in(3600);
    let s = stack(&config(&pd, None, &hours));
    let mut sink = s.sink("paging-0");
    s.created("inc-night", Severity::High, "checkout-api", "f-night").await;
    s.created("inc-low", Severity::Medium, "checkout-api", "f-low").await;
    eventually("deferred, and held below the threshold", WAIT, || async {
        sink.metric("paging_sink_pages_total", &["Deferred"]) >= 1.0
            && sink.metric("paging_sink_pages_total", &["NotPaged"]) >= 1.0
    })
    .await;
    assert!(pd.events().is_empty());

    let exit = sink.terminate(WAIT).expect("stops");
    assert!(exit.success(), "{}", sink.logs());
    s.severity("inc-night", Severity::High, Severity::Critical, 1, "sev-1").await;
    let sink = s.sink("paging-1");
    eventually("paged at once", WAIT, || async { pd.alerts().len() == 1 }).await;
    assert!(jiff::Timestamp::now() < opening, "paged before the opening, not by it");
    let alert = &pd.alerts()[0];
    assert_eq!((alert.dedup_key.as_str(), &alert.trigger["payload"]["severity"]), ("inc-night", &"critical".into()));

    s.severity("inc-low", Severity::Medium, Severity::Critical, 2, "sev-2").await;
    eventually("the raised medium incident paged", WAIT, || async { pd.alerts().len() == 2 }).await;
    // The same changes again (a redelivery), and the deferred-page scan meanwhile.
    s.severity("inc-night", Severity::High, Severity::Critical, 1, "sev-1-again").await;
    s.severity("inc-low", Severity::Medium, Severity::Critical, 2, "sev-2-again").await;
    eventually("both redeliveries seen", WAIT, || async {
        sink.metric("paging_sink_changes_total", &["Severity", "Duplicate"]) >= 2.0
    })
    .await;
    assert_eq!(pd.events().len(), 2, "one trigger each: {:?}", pd.events());
    assert_eq!(sink.metric("paging_sink_deferred", &[]), 0.0, "nothing waits any more");
}

/// Lowered below paging: a waiting page is dropped (and a later raise pages it after all);
/// an open page is left to the people on call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowered_severity_drops_a_waiting_page_and_leaves_an_open_one() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let (hours, _) = opening_in(3600);
    let s = stack(&config(&pd, None, &hours));
    let sink = s.sink("paging-0");
    s.created("inc-wait", Severity::High, "checkout-api", "f-wait").await;
    s.created("inc-open", Severity::Critical, "checkout-api", "f-open").await;
    eventually("deferred and paged", WAIT, || async {
        sink.metric("paging_sink_deferred", &[]) == 1.0 && pd.alerts().len() == 1
    })
    .await;
    s.severity("inc-wait", Severity::High, Severity::Medium, 1, "sev-1").await;
    s.severity("inc-open", Severity::Critical, Severity::Low, 2, "sev-2").await;
    eventually("dropped and recorded", WAIT, || async {
        sink.metric("paging_sink_changes_total", &["Severity", "Dropped"]) == 1.0
            && sink.metric("paging_sink_changes_total", &["Severity", "Recorded"]) == 1.0
            && sink.metric("paging_sink_deferred", &[]) == 0.0
    })
    .await;
    assert_eq!(pd.events().len(), 1, "nothing sent for either: {:?}", pd.events());
    assert_eq!(pd.alerts()[0].status, AlertStatus::Triggered, "the open page stays open");
    // An older change arriving late does not undo the newer one; a newer raise pages.
    s.severity("inc-wait", Severity::Medium, Severity::Critical, 0, "sev-old").await;
    eventually("the older change is stale", WAIT, || async {
        sink.metric("paging_sink_changes_total", &["Severity", "Duplicate"]) == 1.0
    })
    .await;
    assert_eq!(pd.alerts().len(), 1);
    s.severity("inc-wait", Severity::Medium, Severity::Critical, 3, "sev-3").await;
    eventually("raised again: paged", WAIT, || async { pd.alerts().len() == 2 }).await;
}

/// Resolved, then reopened: a new page, as each vendor makes one (PagerDuty: a trigger
/// after a resolve opens a new alert; Opsgenie: a create by the closed alert's alias), once
/// however often the reopen is delivered; the first life's acknowledge, delivered late,
/// does not touch the new page, and the second life's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_incident_pages_again_once_in_pagerduty_and_opsgenie() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let og = FakeOpsgenie::start(GENIE_KEY).await.expect("opsgenie");
    let s = stack(&config(&pd, Some(&og), ALWAYS));
    let sink = s.sink("paging-0");
    for (id, service) in [("inc-pd", "checkout-api"), ("inc-og", "etl")] {
        s.created(id, Severity::Critical, service, &format!("f-{id}")).await;
    }
    eventually("paged", WAIT, || async { pd.alerts().len() == 1 && og.alerts().len() == 1 }).await;
    s.resolved("inc-pd").await;
    s.resolved("inc-og").await;
    eventually("resolved", WAIT, || async {
        pd.alerts()[0].status == AlertStatus::Resolved && og.alerts()[0].status == "closed"
    })
    .await;

    for id in ["inc-pd", "inc-og"] {
        s.reopened(id, 1, &format!("reopen-{id}")).await;
        s.reopened(id, 1, &format!("reopen-{id}-again")).await;
    }
    eventually("paged again, once each", WAIT, || async {
        pd.alerts().len() == 2
            && og.alerts().len() == 2
            && sink.metric("paging_sink_changes_total", &["Reopen", "Duplicate"]) >= 2.0
    })
    .await;
    let pd_alerts = pd.alerts();
    assert_eq!(pd_alerts[1].dedup_key, "inc-pd", "the same dedup key opens a new alert");
    assert_eq!(pd_alerts[1].status, AlertStatus::Triggered);
    assert_eq!(og.alerts()[1].alias, "inc-og");

    // The first life's acknowledge, late: stale. The second life's: the new page.
    s.acknowledged_in("inc-pd", 0, "ack-0").await;
    eventually("stale", WAIT, || async {
        sink.metric("paging_sink_follow_ups_total", &["Acknowledge", "Duplicate"]) >= 1.0
    })
    .await;
    assert_eq!(pd.alerts()[1].status, AlertStatus::Triggered);
    s.acknowledged_in("inc-pd", 1, "ack-1").await;
    eventually("the new page acknowledged", WAIT, || async { pd.alerts()[1].status == AlertStatus::Acknowledged })
        .await;
    let triggers = pd.events().iter().filter(|e| e.action == "trigger").count();
    assert_eq!(triggers, 2, "{:?}", pd.events());
}

/// A note from Jira goes on an Opsgenie alert once; PagerDuty without a REST key skips it
/// (counted), and pages nothing for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_goes_on_an_opsgenie_alert_once_and_a_pagerduty_page_needs_its_rest_key() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let og = FakeOpsgenie::start(GENIE_KEY).await.expect("opsgenie");
    let s = stack(&config(&pd, Some(&og), ALWAYS));
    let sink = s.sink("paging-0");
    s.created("inc-og", Severity::Critical, "etl", "f-og").await;
    s.created("inc-pd", Severity::Critical, "checkout-api", "f-pd").await;
    eventually("paged", WAIT, || async { og.alerts().len() == 1 && pd.alerts().len() == 1 }).await;
    s.note("inc-og", "note:1", "jira", "n-1").await;
    s.note("inc-og", "note:1", "jira", "n-1-again").await;
    s.note("inc-pd", "note:2", "jira", "n-2").await;
    eventually("noted in Opsgenie, skipped for PagerDuty", WAIT, || async {
        sink.metric("paging_sink_changes_total", &["opsgenie", "Note", "Noted"]) == 1.0
            && sink.metric("paging_sink_changes_total", &["opsgenie", "Note", "Duplicate"]) == 1.0
            && sink.metric("paging_sink_changes_total", &["pagerduty", "Note", "Skipped"]) == 1.0
    })
    .await;
    let notes = og.alerts()[0].notes.clone();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].0.contains("— Grace Hopper, in Jira OPS-7 [sre-note "), "{notes:?}");
    assert!(pd.alerts()[0].notes.is_empty());
    assert_eq!(pd.events().len(), 1, "only the trigger");
}

/// SIGKILL after PagerDuty took a note but before the sink heard back: the next delivery
/// finds the note by its mark on the incident and does not add it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_added_by_a_sink_killed_before_the_answer_is_not_added_twice() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let yaml = config(&pd, None, ALWAYS).replace(
        "  pagerduty:\n",
        &format!("  pagerduty:\n    api_key_ref: pd/rest\n    from: sre-bot@example.com\n    api_url: {}\n", pd.url()),
    ) + "  consumer:\n    ack_wait: 3s\n";
    let s = stack(&yaml);
    let envs = [("SECRET_PD_REST_API_KEY", sre_testkit::pagerduty::REST_KEY)];
    let mut sink = s.sink_with("paging-0", &envs);
    s.created("inc-1", Severity::Critical, "checkout-api", "f-1").await;
    eventually("paged", WAIT, || async { pd.alerts().len() == 1 }).await;

    pd.set_write_answer_delay(Duration::from_secs(120));
    s.note("inc-1", "note:crash", "jira", "n-crash").await;
    eventually("PagerDuty took the note; its answer is held", WAIT, || async {
        pd.alerts()[0].notes.len() == 1 && pd.answers_held() >= 1
    })
    .await;
    sink.kill();
    pd.set_write_answer_delay(Duration::ZERO);

    let sink = s.sink_with("paging-1", &envs);
    eventually("the note found by its mark, not added again", WAIT, || async {
        sink.metric("paging_sink_changes_total", &["Note", "Noted"]) == 1.0
    })
    .await;
    assert_eq!(pd.alerts()[0].notes.len(), 1, "{:?}", pd.alerts()[0].notes);
}

/// Closed without a resolve (a person closed the ticket): the open page is resolved, the
/// waiting one never fires; a close after a resolve sends nothing; a reopen then pages again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_without_a_resolve_ends_the_page_and_the_waiting_one() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let (hours, _) = opening_in(3600);
    let s = stack(&config(&pd, None, &hours));
    let sink = s.sink("paging-0");
    s.created("inc-open", Severity::Critical, "checkout-api", "f-open").await;
    s.created("inc-wait", Severity::High, "checkout-api", "f-wait").await;
    s.created("inc-done", Severity::Critical, "checkout-api", "f-done").await;
    eventually("paged and deferred", WAIT, || async {
        pd.alerts().len() == 2 && sink.metric("paging_sink_deferred", &[]) == 1.0
    })
    .await;
    s.resolved("inc-done").await;
    eventually("resolved", WAIT, || async {
        pd.alerts().iter().any(|a| a.dedup_key == "inc-done" && a.status == AlertStatus::Resolved)
    })
    .await;
    for id in ["inc-open", "inc-wait", "inc-done"] {
        s.closed(id, &format!("close-{id}")).await;
    }
    eventually("the open page resolved, the waiting one cancelled", WAIT, || async {
        pd.alerts().iter().all(|a| a.status == AlertStatus::Resolved)
            && sink.metric("paging_sink_deferred", &[]) == 0.0
            && sink.metric("paging_sink_follow_ups_total", &["Resolve", "Duplicate"]) >= 1.0
    })
    .await;
    let resolves = pd.events().iter().filter(|e| e.action == "resolve").count();
    assert_eq!(resolves, 2, "inc-done resolved once, inc-open by its close: {:?}", pd.events());
    s.reopened("inc-open", 1, "reopen-open").await;
    eventually("paged again", WAIT, || async { pd.alerts().len() == 3 }).await;
}

/// A reopen whose trigger PagerDuty refuses for a while (503 until the delivery gives up
/// and hands the fact back) still pages, once, when PagerDuty is back: the claim it left is
/// finished by the redelivery (or the scan), never taken for a reopen already handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopen_whose_trigger_failed_for_a_while_still_pages_once() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let s = stack(&config(&pd, None, ALWAYS));
    let sink = s.sink("paging-0");
    s.created("inc-1", Severity::Critical, "checkout-api", "f-1").await;
    eventually("paged", WAIT, || async { pd.alerts().len() == 1 }).await;
    s.resolved("inc-1").await;
    eventually("resolved", WAIT, || async { pd.alerts()[0].status == AlertStatus::Resolved }).await;

    pd.fail_next(&[(503, None); 6]);
    s.reopened("inc-1", 1, "reopen-1").await;
    eventually("the reopen handed back after PagerDuty's 503s", WAIT, || async {
        sink.metric("paging_sink_changes_total", &["Reopen", "Retried"]) >= 1.0
    })
    .await;
    eventually("paged again once PagerDuty is back", Duration::from_secs(90), || async { pd.alerts().len() == 2 })
        .await;
    assert_eq!(pd.alerts()[1].status, AlertStatus::Triggered);
    let triggers = pd.events().iter().filter(|e| e.action == "trigger").count();
    assert_eq!(triggers, 2, "{:?}", pd.events());
}
