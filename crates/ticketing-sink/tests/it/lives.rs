//! The rest of an incident's life on its ticket, with the real binary, a real nats-server
//! and the test Jira and GitHub: reopens within and after the window, a "Won't Fix" left
//! alone, a severity change, notes posted once and together, and a SIGKILL mid-comment.

use std::time::Duration;

use prost::Message;
use sre_contracts::BusMessage;
use sre_contracts::domain::v1::{
    ExternalOrigin, IncidentAnnotated, IncidentReopened, IncidentResolved, IncidentSeverityChanged, MessageMeta,
    Severity,
};
use sre_testkit::bus::{eventually, publish};
use sre_testkit::github::FakeGithub;
use sre_testkit::jira::{FakeJira, Flavor, Issue};

use crate::tickets::{GITHUB_TOKEN, Stack, WAIT, basic, jira_config, stack};

impl Stack {
    async fn reopened(&self, id: &str, n: u32, msg_id: &str) {
        let fact = IncidentReopened {
            meta: Some(MessageMeta { idempotency_key: format!("reopened:{id}:{n}"), ..Default::default() }),
            incident_id: id.into(),
            by: "auto".into(),
            reason: "its alert fired again".into(),
            reopen_count: n,
            ..Default::default()
        };
        publish(&self.nats.url(), IncidentReopened::SUBJECT, msg_id, fact.encode_to_vec()).await;
    }

    async fn resolved_in(&self, id: &str, n: u32) {
        let fact = IncidentResolved {
            incident_id: id.into(),
            by: "auto".into(),
            reason: "alerts resolved".into(),
            reopen_count: n,
            ..Default::default()
        };
        publish(&self.nats.url(), IncidentResolved::SUBJECT, &format!("resolve-{id}-{n}"), fact.encode_to_vec()).await;
    }

    pub(crate) async fn note(&self, id: &str, key: &str, text: &str, vendor: &str, msg_id: &str) {
        let fact = IncidentAnnotated {
            meta: Some(MessageMeta { idempotency_key: key.into(), ..Default::default() }),
            incident_id: id.into(),
            note: text.into(),
            author: "Ada Lovelace".into(),
            origin: Some(ExternalOrigin { vendor: vendor.into(), object_id: "P000001".into(), ..Default::default() }),
            ..Default::default()
        };
        publish(&self.nats.url(), IncidentAnnotated::SUBJECT, msg_id, fact.encode_to_vec()).await;
    }
}

pub(crate) fn issue(jira: &FakeJira, key: &str) -> Issue {
    jira.issues().into_iter().find(|i| i.key == key).expect("the issue")
}

pub(crate) fn texts(issue: &Issue) -> Vec<String> {
    issue.comments.iter().map(|c| c.to_string()).collect()
}

/// Within the window a reopened incident moves its ticket back (once, however often the
/// reopen is delivered), and the second life resolves it again; a "Won't Fix" a person
/// chose is left alone, and no new ticket is opened for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopen_moves_the_ticket_back_once_and_leaves_a_wont_fix_alone() {
    let jira = FakeJira::start(Flavor::Cloud, &basic(), &["OPS"]).await.expect("jira");
    let s = stack(&(jira_config(&jira, "cloud") + "  ticket_write_interval: 200ms\n"));
    let sink = s.sink("ticketing-0");
    s.created("inc-1", "checkout-api", "f-1").await;
    s.created("inc-2", "checkout-api", "f-2").await;
    eventually("two tickets", WAIT, || async { jira.issues().len() == 2 }).await;
    let (one, two) = {
        let issues = jira.issues();
        let key = |id: &str| {
            issues.iter().find(|i| i.labels.contains(&format!("sre-incident-{id}"))).expect("ticket").key.clone()
        };
        (key("inc-1"), key("inc-2"))
    };
    s.resolved_in("inc-1", 0).await;
    eventually("resolved", WAIT, || async { issue(&jira, &one).status == "Resolved" }).await;
    assert!(jira.resolve_as_with(&two, "Resolved", "Won't Fix", "Grace Hopper"));

    for id in ["inc-1", "inc-2"] {
        s.reopened(id, 1, &format!("r-{id}")).await;
        s.reopened(id, 1, &format!("r-{id}-again")).await;
    }
    eventually("moved back, saying so; the Won't Fix left alone", WAIT, || async {
        let moved = issue(&jira, &one);
        moved.status == "To Do"
            && texts(&moved).iter().any(|c| c.contains("Incident reopened"))
            && sink.metric("ticketing_sink_facts_total", &["Reopen", "LeftAlone"]) == 1.0
    })
    .await;
    eventually("the redeliveries seen", WAIT, || async {
        sink.metric("ticketing_sink_facts_total", &["Reopen", "Duplicate"]) >= 2.0
    })
    .await;
    let reopened = issue(&jira, &one);
    assert_eq!(reopened.resolution, None);
    let comments = texts(&reopened);
    assert_eq!(
        comments.iter().filter(|c| c.contains("Incident reopened: its alert fired again")).count(),
        1,
        "{comments:?}"
    );
    let left = issue(&jira, &two);
    assert_eq!((left.status.as_str(), left.resolution.as_deref()), ("Resolved", Some("Won't Fix")));
    assert_eq!(left.comments.len(), 0, "nothing written to it");
    assert_eq!(jira.issues().len(), 2, "no new ticket");

    // The second life resolves it again; a late resolve of the first life does nothing.
    s.resolved_in("inc-1", 1).await;
    eventually("resolved again", WAIT, || async { issue(&jira, &one).status == "Resolved" }).await;
    assert_eq!(texts(&issue(&jira, &one)).iter().filter(|c| c.contains("Incident resolved")).count(), 2);
}

/// After the window, a reopened incident gets a new ticket linked to its ended one (a
/// redelivery makes no second), on GitHub as in Jira; a GitHub issue closed as not planned
/// is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopen_after_the_window_opens_one_new_linked_ticket() {
    let jira = FakeJira::start(Flavor::Cloud, &basic(), &["OPS"]).await.expect("jira");
    let s = stack(&(jira_config(&jira, "cloud") + "  reopen:\n    window: 0s\n"));
    let sink = s.sink("ticketing-0");
    s.created("inc-1", "checkout-api", "f-1").await;
    eventually("a ticket", WAIT, || async { jira.issues().len() == 1 }).await;
    let first = jira.issues()[0].key.clone();
    s.resolved_in("inc-1", 0).await;
    eventually("resolved", WAIT, || async { issue(&jira, &first).status == "Resolved" }).await;
    s.reopened("inc-1", 1, "r-1").await;
    s.reopened("inc-1", 1, "r-1-again").await;
    eventually("a new ticket", WAIT, || async {
        sink.metric("ticketing_sink_facts_total", &["Reopen", "NewTicket"]) == 1.0
            && sink.metric("ticketing_sink_facts_total", &["Reopen", "Duplicate"]) >= 1.0
    })
    .await;
    let issues = jira.issues();
    assert_eq!(issues.len(), 2, "{issues:?}");
    let new = &issues[1];
    assert_eq!(new.links, std::slice::from_ref(&first), "linked to the ended one");
    assert_eq!(new.status, "To Do");
    assert!(new.summary.contains("checkout-api"), "made like the first: {}", new.summary);
    eventually("its comment on the new ticket", WAIT, || async {
        texts(&issue(&jira, &new.key)).iter().any(|c| c.contains("Incident reopened"))
    })
    .await;
    assert_eq!(issue(&jira, &first).status, "Resolved", "the ended one stays ended");

    // GitHub: closed as not planned by a person, then reopened: left alone.
    let gh = FakeGithub::start(GITHUB_TOKEN, &["acme/incidents"]).await.expect("github");
    let yaml = format!(
        "ticketing_integration:\n  default_provider: github\n  github:\n    repo: acme/incidents\n    \
         secret_ref: platform/github\n    base_url: {}\n",
        gh.url()
    );
    let g = stack(&yaml);
    let gsink = g.sink("ticketing-gh");
    g.created("inc-gh", "checkout-api", "f-gh").await;
    g.created("inc-gh2", "checkout-api", "f-gh2").await;
    eventually("two issues", WAIT, || async { gh.issues().len() == 2 }).await;
    let numbers: Vec<u64> = gh.issues().iter().map(|i| i.number).collect();
    g.resolved_in("inc-gh", 0).await;
    eventually("resolved (labelled)", WAIT, || async {
        gh.issues().iter().any(|i| i.labels.contains(&"resolved".to_owned()))
    })
    .await;
    let resolved = gh.issues().into_iter().find(|i| i.labels.contains(&"resolved".to_owned())).expect("issue").number;
    let other = *numbers.iter().find(|n| **n != resolved).expect("the other");
    assert!(gh.close_as_with("acme/incidents", other, "not_planned", "Grace Hopper"));
    let other_id = if resolved == numbers[0] { "inc-gh2" } else { "inc-gh" };
    let resolved_id = if other_id == "inc-gh" { "inc-gh2" } else { "inc-gh" };
    g.reopened(resolved_id, 1, "r-gh").await;
    g.reopened(other_id, 1, "r-gh2").await;
    eventually("reopened on GitHub; not planned left alone", WAIT, || async {
        gh.issues().iter().any(|i| i.number == resolved && !i.labels.contains(&"resolved".to_owned()))
            && gsink.metric("ticketing_sink_facts_total", &["Reopen", "LeftAlone"]) == 1.0
    })
    .await;
    let left = gh.issues().into_iter().find(|i| i.number == other).expect("issue");
    assert_eq!((left.state.as_str(), left.state_reason.as_deref()), ("closed", Some("not_planned")));
    assert_eq!(gh.issues().len(), 2);
}

/// A severity change sets the Jira priority and says so once; an older change arriving
/// later changes nothing. Notes from elsewhere become comments, several at once posted
/// together within Jira's per-issue write limit; a note written in Jira is not sent back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn severity_changes_and_notes_reach_the_ticket_once_and_within_its_write_limit() {
    let jira = FakeJira::start(Flavor::Cloud, &basic(), &["OPS"]).await.expect("jira");
    let s = stack(&(jira_config(&jira, "cloud") + "  ticket_write_interval: 1s\n"));
    let sink = s.sink("ticketing-0");
    s.created("inc-1", "checkout-api", "f-1").await;
    eventually("a ticket", WAIT, || async { jira.issues().len() == 1 }).await;
    let key = jira.issues()[0].key.clone();
    assert_eq!(issue(&jira, &key).priority.as_deref(), Some("Highest"));

    let change = |to: Severity, minute: i64, msg: &'static str| {
        let fact = IncidentSeverityChanged {
            // (a redelivery keeps the change's key; `msg` only gets it past the bus's dedup)
            meta: Some(MessageMeta { idempotency_key: format!("severity:{minute}"), ..Default::default() }),
            incident_id: "inc-1".into(),
            from: Severity::Critical as i32,
            to: to as i32,
            by: "dana".into(),
            why: "fewer customers affected".into(),
            at: Some(prost_types::Timestamp { seconds: 1_796_000_000 + minute * 60, nanos: 0 }),
        };
        let url = s.nats.url();
        async move { publish(&url, IncidentSeverityChanged::SUBJECT, msg, fact.encode_to_vec()).await }
    };
    change(Severity::Medium, 2, "sev-2").await;
    change(Severity::Medium, 2, "sev-2-again").await;
    eventually("priority follows, and a comment says so", WAIT, || async {
        let t = issue(&jira, &key);
        t.priority.as_deref() == Some("Medium") && texts(&t).iter().any(|c| c.contains("Severity lowered"))
    })
    .await;
    change(Severity::High, 1, "sev-1-late").await;
    eventually("the older change is stale, the same one again done once", WAIT, || async {
        sink.metric("ticketing_sink_facts_total", &["Severity", "Duplicate"]) >= 1.0
            && sink.metric("ticketing_sink_facts_total", &["Severity", "Done"]) >= 2.0
    })
    .await;
    assert_eq!(issue(&jira, &key).priority.as_deref(), Some("Medium"));
    let said = texts(&issue(&jira, &key));
    assert_eq!(said.iter().filter(|c| c.contains("Severity lowered from critical to medium")).count(), 1, "{said:?}");

    // A burst of notes from PagerDuty, each delivered twice, and one written in Jira.
    for n in 0..8 {
        s.note("inc-1", &format!("note:{n}"), &format!("note number {n}"), "pagerduty", &format!("n-{n}")).await;
        s.note("inc-1", &format!("note:{n}"), &format!("note number {n}"), "pagerduty", &format!("n-{n}-again")).await;
    }
    s.note("inc-1", "note:jira", "written in Jira", "jira", "n-jira").await;
    eventually("every note on the ticket", WAIT, || async {
        let said = texts(&issue(&jira, &key)).join("\n");
        (0..8).all(|n| said.contains(&format!("note number {n}")))
    })
    .await;
    eventually("every delivery settled", WAIT, || async {
        sink.metric("ticketing_sink_facts_total", &["Note", "Skipped"]) == 1.0
    })
    .await;
    let said = texts(&issue(&jira, &key));
    for n in 0..8 {
        let needle = format!("note number {n}");
        assert_eq!(said.iter().map(|c| c.matches(&needle).count()).sum::<usize>(), 1, "note {n} once: {said:?}");
    }
    assert!(said.iter().all(|c| !c.contains("written in Jira")), "not sent back to Jira");
    let comments_with_notes = said.iter().filter(|c| c.contains("note number")).count();
    assert!(comments_with_notes < 8, "posted together: {comments_with_notes} comments for 8 notes");
    assert!(said.iter().any(|c| c.contains("— Ada Lovelace, in PagerDuty P000001 [sre-note ")), "{said:?}");
    assert_eq!(jira.per_issue_refusals(), 0, "never over Jira's per-issue write limit");
}

/// SIGKILL after Jira took the queued comments but before the sink heard back: the next
/// delivery finds them by their marks and does not post them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_posted_by_a_sink_killed_before_the_answer_are_not_posted_twice() {
    let jira = FakeJira::start(Flavor::Cloud, &basic(), &["OPS"]).await.expect("jira");
    let s = stack(&(jira_config(&jira, "cloud") + "  consumer:\n    ack_wait: 3s\n"));
    let mut sink = s.sink("ticketing-0");
    s.created("inc-1", "checkout-api", "f-1").await;
    eventually("a ticket", WAIT, || async { jira.issues().len() == 1 }).await;
    let key = jira.issues()[0].key.clone();
    jira.set_write_answer_delay(Duration::from_secs(120));
    s.note("inc-1", "note:crash", "checking the database", "pagerduty", "n-crash").await;
    eventually("Jira took the comment; its answer is held", WAIT, || async {
        issue(&jira, &key).comments.len() == 1 && jira.answers_held() >= 1
    })
    .await;
    sink.kill();
    jira.set_write_answer_delay(Duration::ZERO);
    let sink = s.sink("ticketing-1");
    eventually("found by its mark", WAIT, || async {
        sink.metric("ticketing_sink_facts_total", &["Note", "Done"]) == 1.0
    })
    .await;
    assert_eq!(issue(&jira, &key).comments.len(), 1, "{:?}", texts(&issue(&jira, &key)));
}
