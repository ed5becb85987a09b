//! Whatever an incident carries, the ticket is made and nothing is lost: a bus that takes
//! 8 MB messages delivers a 3 MB description and 20,000-character notes; Jira (which
//! refuses a field over 32,767 characters, as the stand-in does) gets them cut with a note
//! saying so, in as many comments as they need, each once.

use prost::Message;
use sre_contracts::BusMessage;
use sre_contracts::domain::v1::{IncidentCreated, Severity};
use sre_testkit::NatsServer;
use sre_testkit::bus::{eventually, publish};
use sre_testkit::jira::{FakeJira, Flavor};

use crate::lives::{issue, texts};
use crate::tickets::{WAIT, basic, jira_config, stack_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_megabyte_incident_gets_its_ticket_and_long_notes_their_comments() {
    let nats = NatsServer::start_with_max_payload(8 * 1024 * 1024).expect("nats");
    let jira = FakeJira::start(Flavor::Cloud, &basic(), &["OPS"]).await.expect("jira");
    let s = stack_on(nats, &(jira_config(&jira, "cloud") + "  ticket_write_interval: 200ms\n"));
    let sink = s.sink("ticketing-0");
    let fact = IncidentCreated {
        incident_id: "inc-big".into(),
        title: "checkout-api: a stack trace for every request".into(),
        description: "Traceback (most recent call last): ".repeat(90_000), // ~3 MB
        severity: Severity::Critical as i32,
        service: "checkout-api".into(),
        ..Default::default()
    };
    assert!(fact.encoded_len() > 3_000_000);
    publish(&s.nats.url(), IncidentCreated::SUBJECT, "created-big", fact.encode_to_vec()).await;
    eventually("its ticket", WAIT, || async { jira.issues().len() == 1 }).await;
    let ticket = jira.issues().remove(0);
    let description = ticket.fields["description"].to_string();
    assert!(description.contains("[… cut: the first"), "cut with a note: {}", &description[description.len() - 300..]);

    let long = |n: usize| format!("note {n}: {}", "the replica lag is back under a second. ".repeat(500)); // ~20,000
    for n in 0..3 {
        s.note("inc-big", &format!("note:{n}"), &long(n), "pagerduty", &format!("n-{n}")).await;
    }
    eventually("every note on the ticket", WAIT, || async {
        let said = texts(&issue(&jira, &ticket.key)).join("\n");
        (0..3).all(|n| said.contains(&format!("note {n}: ")))
    })
    .await;
    let said = texts(&issue(&jira, &ticket.key));
    for n in 0..3 {
        let needle = format!("note {n}: ");
        assert_eq!(said.iter().map(|c| c.matches(&needle).count()).sum::<usize>(), 1, "note {n} once");
    }
    assert!(said.len() >= 2, "too long for one comment together: {} comments", said.len());
    let dead = sink.metric("ticketing_sink_facts_total", &["Failed"]);
    assert_eq!(dead, 0.0, "nothing dead-lettered\n{}", sink.logs());
}
