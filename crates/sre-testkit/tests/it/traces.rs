//! One trace from an Alertmanager webhook to the vendor call, received by a real OTLP/gRPC
//! receiver: the ingress's `webhook` span (linked, not parented, to the `traceparent`
//! Alertmanager 0.28+ sends), its intent through JetStream to the domain stand-in (which
//! carries the trace context on to the facts it publishes), the paging sink's `fact` span
//! for `IncidentCreated` as the webhook span's child, and its `vendor call` to PagerDuty as
//! the fact span's child. Span names, parent links and the link are asserted.
//!
//! Alertmanager 0.25 (Debian's) sends no `traceparent`: the test posts its webhook body as
//! Alertmanager does, with the header 0.28+ adds.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use sre_contracts::spans::{FACT, VENDOR_CALL, WEBHOOK};
use sre_testkit::NatsServer;
use sre_testkit::bus::eventually;
use sre_testkit::domain::Domain;
use sre_testkit::jira::{FakeJira, Flavor};
use sre_testkit::otlp::{Receiver, Span, render_tree};
use sre_testkit::pagerduty::FakePagerDuty;
use sre_testkit::service::http_request;
use sre_testkit::stack::{Adapter, password};

const JIRA_TOKEN: &str = "jira-pat-0123456789";
const ROUTING_KEY: &str = "R0UT1NGKEY0123456789ABCDEFGHIJKL";
/// The trace and span of Alertmanager's notification, as its `traceparent` carries them.
const AM_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const AM_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_alert_is_one_trace_from_the_webhook_to_the_vendor_call() {
    let receiver = Receiver::start().await.expect("otlp receiver");
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("nats.conf");
    std::fs::write(&conf, sre_testkit::stack::deploy_accounts()).expect("nats.conf");
    let nats = NatsServer::start_with_config(&conf).expect("nats-server from deploy/nats");
    let client = async_nats::ConnectOptions::with_user_and_password("sre-domain".into(), password("sre-domain"))
        .connect(nats.url())
        .await
        .expect("the domain connects");
    let js = async_nats::jetstream::new(client);
    assert_eq!(sre_testkit::domain::provision(&js).await, Ok(3));
    let _domain = Domain::start(js, false, std::sync::Arc::new(|_: &str| {}));
    let pagerduty = FakePagerDuty::start().await.expect("pagerduty");
    let no_streams = "runtime:\n  bus:\n    manage_streams: false\n";
    let otel = [("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())];
    let ingress = Adapter::start(
        "alertmanager-ingress",
        "alertmanager-ingress-0",
        dir.path(),
        &format!(
            "alertmanager_integration:\n  auto_create_incident: {{enabled: true, min_severity: high}}\n{no_streams}"
        ),
        &nats.url(),
        &otel,
    );
    let jira = FakeJira::start(Flavor::DataCenter, &format!("Bearer {JIRA_TOKEN}"), &["OPS"]).await.expect("jira");
    let _ticketing = Adapter::start(
        "ticketing-sink",
        "ticketing-sink-0",
        dir.path(),
        &format!(
            "ticketing_integration:\n  default_provider: jira\n  jira:\n    base_url: {}\n    deployment: data_center\n    \
             project_key: OPS\n    secret_ref: sys/jira\n{no_streams}",
            jira.url()
        ),
        &nats.url(),
        &[otel[0], ("SECRET_SYS_JIRA_TOKEN", JIRA_TOKEN)],
    );
    let _paging = Adapter::start(
        "paging-sink",
        "paging-sink-0",
        dir.path(),
        &format!(
            "paging_integration:\n  default_provider: pagerduty\n  pagerduty:\n    routing_key_ref: sys/pagerduty\n    \
             base_url: {}\n{no_streams}",
            pagerduty.url()
        ),
        &nats.url(),
        // A quiet log must not cut the trace.
        &[otel[0], ("SECRET_SYS_PAGERDUTY_ROUTING_KEY", ROUTING_KEY), ("LOG_LEVEL", "warn")],
    );

    let (_, body) = sre_testkit::stack::load_webhook(0, true);
    let port = ingress.process.port();
    let traceparent = format!("00-{AM_TRACE}-{AM_SPAN}-01");
    let answer = tokio::task::spawn_blocking(move || {
        http_request(
            port,
            "POST",
            "/webhooks/alertmanager",
            &[("Content-Type", "application/json"), (sre_contracts::headers::TRACEPARENT, &traceparent)],
            body.as_bytes(),
        )
    })
    .await
    .expect("join");
    assert_eq!(answer.as_ref().map(|a| a.0), Some(200), "{answer:?}");
    eventually("PagerDuty paged and a Jira issue opened", Duration::from_secs(30), || async {
        pagerduty.alerts().len() == 1 && jira.issues().len() == 1
    })
    .await;

    // Exporters batch (every 5 s by default): wait for the three spans to arrive.
    let find = |spans: &[Span], service: &str, name: &str| {
        spans.iter().find(|s| s.service == service && s.name == name).cloned()
    };
    let mut spans = Vec::new();
    eventually("the webhook, fact and vendor call spans at the receiver", Duration::from_secs(30), || {
        spans = receiver.spans();
        let ok = find(&spans, "alertmanager-ingress", WEBHOOK).is_some_and(|w| {
            spans.iter().any(|s| s.service == "paging-sink" && s.name == FACT && s.parent_span_id == w.span_id)
        }) && find(&spans, "alertmanager-ingress", WEBHOOK).is_some_and(|w| {
            ["paging-sink", "ticketing-sink"].iter().all(|sink| {
                spans.iter().any(|s| s.service == *sink && s.name == VENDOR_CALL && s.trace_id == w.trace_id)
            })
        });
        async move { ok }
    })
    .await;
    let spans = receiver.spans();
    let webhook = find(&spans, "alertmanager-ingress", WEBHOOK).expect("webhook span");
    assert_ne!(webhook.trace_id, AM_TRACE, "Alertmanager's traceparent is not trusted as parent by default");
    assert_eq!(webhook.links, [(AM_TRACE.to_owned(), AM_SPAN.to_owned())], "the webhook links to Alertmanager's span");
    let trace = receiver.trace(&webhook.trace_id);
    let fact = trace
        .iter()
        .find(|s| s.service == "paging-sink" && s.name == FACT && s.parent_span_id == webhook.span_id)
        .expect("the sink's fact span is the webhook's child");
    assert!(fact.attributes.get("subject").is_some_and(|s| s.ends_with("IncidentCreated")), "{fact:?}");
    let call = trace
        .iter()
        .find(|s| s.name == VENDOR_CALL && s.parent_span_id == fact.span_id)
        .expect("the PagerDuty call is the fact span's child");
    assert_eq!(call.attributes.get("http.request.method").map(String::as_str), Some("POST"));
    assert_eq!(call.attributes.get("url.path").map(String::as_str), Some("/v2/enqueue"));
    assert_eq!(call.attributes.get("http.response.status_code").map(String::as_str), Some("202"));
    // And Jira's create, under ticketing-sink's fact span, in the same trace.
    let jira_fact = trace
        .iter()
        .find(|s| s.service == "ticketing-sink" && s.name == FACT && s.parent_span_id == webhook.span_id)
        .expect("ticketing-sink's fact span is the webhook's child");
    let create = trace
        .iter()
        .find(|s| s.name == VENDOR_CALL && s.parent_span_id == jira_fact.span_id)
        .expect("the Jira create is the fact span's child");
    assert_eq!(create.attributes.get("url.path").map(String::as_str), Some("/rest/api/2/issue"));
    println!(
        "trace {} (linked to Alertmanager's {AM_TRACE}):\n{}",
        webhook.trace_id,
        render_tree(
            &trace,
            &["subject", "correlation_id", "http.request.method", "url.path", "http.response.status_code"]
        )
    );
}
