//! Whatever an incident carries, it pages: on a bus that takes 8 MB messages, a 3 MB
//! description would make a PagerDuty event over its 512 KB limit (refused, as the stand-in
//! refuses it) and a page record over a bus message. The record keeps the incident cut
//! down (the description to 32,000 characters, with a note saying so), and the page is sent
//! from it, at once or when a deferred page is raised. (An event still over the limit goes
//! with its custom details left out: `provider::pagerduty`'s tests.)

use prost::Message;
use sre_contracts::BusMessage;
use sre_contracts::domain::v1::{IncidentCreated, Severity};
use sre_sink::limits::BODY_MAX;
use sre_testkit::NatsServer;
use sre_testkit::bus::{eventually, publish};
use sre_testkit::pagerduty::FakePagerDuty;

use crate::paging::{WAIT, config, opening_in, stack_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_megabyte_incident_pages_at_once_and_after_waiting() {
    let nats = NatsServer::start_with_max_payload(8 * 1024 * 1024).expect("nats");
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let (hours, _) = opening_in(3600);
    let s = stack_on(nats, &config(&pd, None, &hours));
    let sink = s.sink("paging-0");
    let big = |id: &str, severity: Severity| IncidentCreated {
        incident_id: id.into(),
        title: "checkout-api: a stack trace for every request".into(),
        description: "Traceback (most recent call last): ".repeat(90_000), // ~3 MB
        severity: severity as i32,
        service: "checkout-api".into(),
        ..Default::default()
    };
    for (id, severity) in [("inc-now", Severity::Critical), ("inc-night", Severity::High)] {
        let fact = big(id, severity);
        assert!(fact.encoded_len() > 3_000_000);
        publish(&s.nats.url(), IncidentCreated::SUBJECT, id, fact.encode_to_vec()).await;
    }
    eventually("paged, and the other deferred", WAIT, || async {
        pd.alerts().len() == 1 && sink.metric("paging_sink_deferred", &[]) == 1.0
    })
    .await;
    let cut = |n: usize| {
        let d =
            pd.alerts()[n].trigger["payload"]["custom_details"]["description"].as_str().unwrap_or_default().to_owned();
        (d.chars().count(), d.contains("[… cut: the first"))
    };
    let (length, said) = cut(0);
    assert!(said && length <= BODY_MAX, "cut with a note: {length} characters");

    s.severity("inc-night", Severity::High, Severity::Critical, 1, "sev-night").await;
    eventually("the deferred one paged when raised", WAIT, || async { pd.alerts().len() == 2 }).await;
    let (length, said) = cut(1);
    assert!(said && length <= BODY_MAX, "kept cut down: {length} characters");
    assert_eq!(sink.metric("paging_sink_pages_total", &["Failed"]), 0.0, "{}", sink.logs());
}
