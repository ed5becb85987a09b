//! The reconciler, for each paging vendor, with its webhooks held back (a receiver outage:
//! nothing reaches the sink): a person acknowledging or resolving in the vendor's tool
//! reaches the domain within one interval as one intent; the same change delivered late by
//! webhook adds nothing; a dead-lettered resolve is sent again once.

use std::path::Path;
use std::time::Duration;

use prost::Message;
use sre_contracts::domain::v1::{
    AcknowledgeIncidentRequested, IncidentCreated, IncidentResolved, ResolveIncidentRequested, Severity,
};
use sre_contracts::{BusMessage, streams};
use sre_testkit::NatsServer;
use sre_testkit::bus::{eventually, publish, stream_messages, stream_records};
use sre_testkit::domain::Domain;
use sre_testkit::opsgenie::FakeOpsgenie;
use sre_testkit::pagerduty::{AlertStatus, FakePagerDuty, REST_KEY};
use sre_testkit::service::ServiceProcess;

use crate::paging::ROUTING_KEY;

const WAIT: Duration = Duration::from_secs(30);
/// The reconcile interval of these tests: a repair must come within it (and the time to
/// read every page back).
const INTERVAL: Duration = Duration::from_secs(2);
const SECRET: &str = "our-subscription-secret";
const GENIE_KEY: &str = "eb243592-faa2-4ba2-a551q-1afdf565c889";

struct Bus {
    nats: NatsServer,
    domain: Domain,
}

async fn bus() -> Bus {
    let nats = NatsServer::start().expect("nats");
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("connects"));
    sre_testkit::domain::provision(&js).await.expect("streams");
    let domain = Domain::start(js, false, std::sync::Arc::new(|_: &str| {}));
    Bus { nats, domain }
}

impl Bus {
    fn sink(&self, dir: &Path, paging: &str, secrets: &[(&str, &str)]) -> ServiceProcess {
        let config = dir.join("paging-sink.yaml");
        std::fs::write(
            &config,
            format!(
                "paging_integration:\n{paging}  escalation: {{critical: immediate}}\n  reconcile: {{interval: {}s}}\n",
                INTERVAL.as_secs()
            ),
        )
        .expect("config");
        let url = self.nats.url();
        let mut envs = vec![("NATS_URL", url.as_str())];
        envs.extend_from_slice(secrets);
        let mut sink = ServiceProcess::spawn(
            Path::new(env!("CARGO_BIN_EXE_paging-sink")),
            &["--config", config.to_str().expect("utf-8")],
            &envs,
        )
        .expect("spawns");
        sink.wait_for_status("/readyz", 200, WAIT).expect("ready");
        sink
    }

    async fn incident(&self, id: &str) {
        let fact = IncidentCreated {
            incident_id: id.into(),
            title: "checkout: error rate above 5%".into(),
            severity: Severity::Critical as i32,
            service: "checkout".into(),
            ..Default::default()
        };
        publish(&self.nats.url(), IncidentCreated::SUBJECT, &format!("created-{id}"), fact.encode_to_vec()).await;
    }

    async fn resolved(&self, id: &str) {
        let fact = IncidentResolved { incident_id: id.into(), by: "auto".into(), ..Default::default() };
        publish(&self.nats.url(), IncidentResolved::SUBJECT, &format!("resolved-{id}"), fact.encode_to_vec()).await;
    }

    /// The intents of `subject` on the bus, by incident.
    async fn intents(&self, subject: &str) -> Vec<String> {
        let decode = |b: bytes::Bytes| -> String {
            if subject == AcknowledgeIncidentRequested::SUBJECT {
                AcknowledgeIncidentRequested::decode(b).map(|i| i.incident_id).unwrap_or_default()
            } else {
                ResolveIncidentRequested::decode(b).map(|i| i.incident_id).unwrap_or_default()
            }
        };
        stream_messages(&self.nats.url(), streams::INTENTS)
            .await
            .into_iter()
            .filter(|(s, _)| s == subject)
            .map(|(_, b)| decode(b))
            .collect()
    }
}

fn repairs(sink: &ServiceProcess, provider: &str, kind: &str) -> f64 {
    sink.metric(
        "paging_sink_reconcile_repairs_total{",
        &[&format!("provider=\"{provider}\""), &format!("kind=\"{kind}\"")],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagerduty_changes_whose_webhooks_were_lost_are_repaired_once_and_a_dead_lettered_resolve_is_sent_again() {
    let bus = bus().await;
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let dir = tempfile::tempdir().expect("tempdir");
    let paging = format!(
        "  default_provider: pagerduty\n  pagerduty:\n    routing_key_ref: platform/pagerduty\n    base_url: {url}\n    \
         api_key_ref: pd/rest\n    from: sre-bot@example.com\n    api_url: {url}\n    \
         webhook:\n      enabled: true\n      secret_refs: [pd/ours]\n",
        url = pd.url()
    );
    let sink = bus.sink(
        dir.path(),
        &paging,
        &[
            ("SECRET_PLATFORM_PAGERDUTY_ROUTING_KEY", ROUTING_KEY),
            ("SECRET_PD_REST_API_KEY", REST_KEY),
            ("SECRET_PD_OURS_SECRET", SECRET),
        ],
    );
    pd.subscribe(&format!("http://127.0.0.1:{}/webhooks/pagerduty", sink.port()), SECRET);
    // The receiver is cut off: nothing PagerDuty sends from now on reaches it.
    pd.hold_webhooks();
    for id in ["inc-ack", "inc-resolve", "inc-dead"] {
        bus.incident(id).await;
    }
    eventually("three pages", WAIT, || async { pd.alerts().len() == 3 }).await;

    // People act in PagerDuty; their webhooks are lost.
    assert!(pd.acknowledge_as("inc-ack", "Ada Lovelace"));
    assert!(pd.resolve_as("inc-resolve", "Grace Hopper"));
    let acted = tokio::time::Instant::now();
    eventually("both reach the domain", WAIT, || async {
        bus.intents(AcknowledgeIncidentRequested::SUBJECT).await == ["inc-ack"]
            && bus.intents(ResolveIncidentRequested::SUBJECT).await == ["inc-resolve"]
    })
    .await;
    assert!(acted.elapsed() < INTERVAL * 3, "within an interval (and a pass): {:?}", acted.elapsed());
    assert_eq!(repairs(&sink, "pagerduty", "Acknowledged"), 1.0);
    assert_eq!(repairs(&sink, "pagerduty", "Resolved"), 1.0);
    // The domain decided; the records follow (its facts came back to the sink).
    eventually("the domain's facts handled", WAIT, || async {
        sink.metric("paging_sink_follow_ups_total{", &["action=\"Acknowledge\""]) >= 1.0
            && sink.metric("paging_sink_follow_ups_total{", &["action=\"Resolve\""]) >= 1.0
    })
    .await;

    // The webhooks arrive late: echoes of what the records now hold, no second intent.
    let late = pd.release_webhooks();
    assert!(late >= 5, "three pages opened, an acknowledge and a resolve: {late}");
    eventually("the late webhooks answered", WAIT, || async { pd.webhooks().len() >= late }).await;
    assert!(pd.webhooks().iter().all(|w| w.2 == 200), "{:?}", pd.webhooks());
    assert_eq!(bus.intents(AcknowledgeIncidentRequested::SUBJECT).await, ["inc-ack"]);
    assert_eq!(bus.intents(ResolveIncidentRequested::SUBJECT).await, ["inc-resolve"]);
    assert!(sink.metric("paging_sink_webhook_events_total{", &["outcome=\"Echo\""]) >= 2.0);

    // The sink's own follow-ups of the repaired changes are done (the fault below must
    // meet inc-dead's resolve, not one of them).
    eventually("the follow-ups sent", WAIT, || async {
        let events = pd.events();
        let sent = |key: &str, action: &str| events.iter().any(|e| e.dedup_key == key && e.action == action);
        sent("inc-ack", "acknowledge") && sent("inc-resolve", "resolve")
    })
    .await;
    // The domain resolves inc-dead; PagerDuty refuses that resolve (400): dead-lettered.
    pd.fail_next(&[(400, None)]);
    bus.resolved("inc-dead").await;
    eventually("sent again by the reconciler", WAIT, || async {
        pd.alerts().iter().any(|a| a.dedup_key == "inc-dead" && a.status == AlertStatus::Resolved)
    })
    .await;
    assert_eq!(repairs(&sink, "pagerduty", "Reasserted"), 1.0);
    // Passes go on; nothing is repaired twice.
    let passes = sink.metric("paging_sink_reconcile_last_complete_timestamp_seconds", &[]);
    eventually("two more passes", WAIT, || async {
        sink.metric("paging_sink_reconcile_last_complete_timestamp_seconds", &[])
            >= passes + 2.0 * INTERVAL.as_secs_f64()
    })
    .await;
    let dead = stream_records(&bus.nats.url(), streams::DEAD_LETTER).await;
    assert_eq!(dead.len(), 1, "the refused resolve was dead-lettered");
    assert_eq!(IncidentResolved::decode(dead[0].2.clone()).map(|f| f.incident_id).ok().as_deref(), Some("inc-dead"));
    let resolves = pd.events().iter().filter(|e| e.dedup_key == "inc-dead" && e.action == "resolve").count();
    assert_eq!(resolves, 1, "accepted once: the one sent again (the refused one was not applied)");
    for (kind, n) in [("Acknowledged", 1.0), ("Resolved", 1.0), ("Reasserted", 1.0), ("Reopened", 0.0)] {
        assert_eq!(repairs(&sink, "pagerduty", kind), n, "{kind}");
    }
    assert_eq!(bus.domain.external().len(), 2, "two intents from PagerDuty in all");
    assert!(pd.incident_lists().0 >= 2, "a pass lists PagerDuty's incidents (open, and resolved within a day)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opsgenie_and_jsm_changes_whose_webhooks_were_lost_are_repaired_once() {
    let bus = bus().await;
    let opsgenie = FakeOpsgenie::start(GENIE_KEY).await.expect("opsgenie");
    let dir = tempfile::tempdir().expect("tempdir");
    // Incidents on service `jsm` page through JSM Operations, the rest through Opsgenie.
    let paging = format!(
        "  default_provider: opsgenie\n  opsgenie:\n    api_key_ref: platform/opsgenie\n    base_url: {}\n    \
         default_team: sre\n    webhook:\n      enabled: true\n      secret_refs: [platform/hook]\n  \
         jsm:\n    api_key_ref: platform/opsgenie\n    base_url: {}\n    default_team: sre\n    \
         webhook:\n      enabled: true\n      secret_refs: [platform/hook]\n  \
         routes:\n    - match: {{service: jsm}}\n      provider: jsm\n",
        opsgenie.url(),
        opsgenie.jsm_url()
    );
    let sink = bus.sink(
        dir.path(),
        &paging,
        &[("SECRET_PLATFORM_OPSGENIE_API_KEY", GENIE_KEY), ("SECRET_PLATFORM_HOOK_SECRET", SECRET)],
    );
    opsgenie.subscribe(&format!("http://127.0.0.1:{}/webhooks/opsgenie", sink.port()), "X-Sre-Webhook-Secret", SECRET);
    opsgenie.hold_webhooks();
    bus.incident("og-1").await;
    let jsm = IncidentCreated {
        incident_id: "jsm-1".into(),
        title: "ledger: lag".into(),
        severity: Severity::Critical as i32,
        service: "jsm".into(),
        ..Default::default()
    };
    publish(&bus.nats.url(), IncidentCreated::SUBJECT, "created-jsm-1", jsm.encode_to_vec()).await;
    eventually("two alerts", WAIT, || async { opsgenie.alerts().len() == 2 }).await;
    assert!(opsgenie.alerts().iter().any(|a| a.alias == "jsm-1" && a.api == "jsm"));

    assert!(opsgenie.act_as("og-1", "acknowledged", "Grace Hopper"));
    assert!(opsgenie.act_as("jsm-1", "closed", "Ada Lovelace"));
    eventually("both reach the domain", WAIT, || async {
        bus.intents(AcknowledgeIncidentRequested::SUBJECT).await == ["og-1"]
            && bus.intents(ResolveIncidentRequested::SUBJECT).await == ["jsm-1"]
    })
    .await;
    assert_eq!(repairs(&sink, "opsgenie", "Acknowledged"), 1.0);
    assert_eq!(repairs(&sink, "jsm", "Resolved"), 1.0);
    eventually("the domain's facts handled", WAIT, || async {
        sink.metric("paging_sink_follow_ups_total{", &["action=\"Acknowledge\""]) >= 1.0
            && sink.metric("paging_sink_follow_ups_total{", &["action=\"Resolve\""]) >= 1.0
    })
    .await;
    let late = opsgenie.release_webhooks();
    eventually("the late webhooks answered", WAIT, || async { opsgenie.webhooks().len() >= late }).await;
    let passes = sink.metric("paging_sink_reconcile_last_complete_timestamp_seconds", &[]);
    eventually("two more passes", WAIT, || async {
        sink.metric("paging_sink_reconcile_last_complete_timestamp_seconds", &[])
            >= passes + 2.0 * INTERVAL.as_secs_f64()
    })
    .await;
    assert_eq!(bus.intents(AcknowledgeIncidentRequested::SUBJECT).await, ["og-1"], "the late webhook added nothing");
    assert_eq!(bus.intents(ResolveIncidentRequested::SUBJECT).await, ["jsm-1"]);
    assert_eq!(repairs(&sink, "opsgenie", "Acknowledged"), 1.0, "not repaired twice");
    assert_eq!(repairs(&sink, "jsm", "Resolved"), 1.0);
}
