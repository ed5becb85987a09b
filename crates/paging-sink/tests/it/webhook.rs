//! The PagerDuty Webhooks v3 receiver: the real paging-sink binary, a real nats-server and
//! the test PagerDuty. The vendor's own signature vectors; then a person acknowledging in
//! PagerDuty becomes one `AcknowledgeIncidentRequested`, and everything that must not
//! (a redelivery, a wrong signature, this sink's own echo, someone else's incident, a bus
//! outage until PagerDuty's retry) does not.

use std::path::Path;
use std::time::Duration;

use hmac::{Hmac, Mac};
use prost::Message;
use sre_contracts::domain::v1::{AcknowledgeIncidentRequested, IncidentCreated, Severity};
use sre_contracts::{BusMessage, streams};
use sre_testkit::NatsServer;
use sre_testkit::bus::{eventually, publish, stream_messages};
use sre_testkit::pagerduty::FakePagerDuty;
use sre_testkit::service::{ServiceProcess, http_request};

const WAIT: Duration = Duration::from_secs(30);
const ROUTING_KEY: &str = "R0UT1NGKEY0123456789ABCDEFGHIJKL";
const VENDOR: &str = include_str!("../../../../tests/fixtures/pagerduty/signature-vector.go-pagerduty.json");
const ROTATION: &str = include_str!("../../../../tests/fixtures/pagerduty/signature-vector.rotation.json");
const SECRET: &str = "our-subscription-secret";
const JSM_KEY: &str = "0f2c6a4e-9d1b-4c7e-8a35-5b6f7e8d9c01";

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn post(sink: &ServiceProcess, signature: Option<&str>, webhook_id: &str, body: &[u8]) -> (u16, String) {
    let mut headers = vec![("Content-Type", "application/json"), ("X-Webhook-Id", webhook_id)];
    if let Some(s) = signature {
        headers.push(("X-PagerDuty-Signature", s));
    }
    http_request(sink.port(), "POST", "/webhooks/pagerduty", &headers, body).expect("answers")
}

/// An `incident.acknowledged` for `incident_key`, by a person or (`agent`) something else.
fn acknowledged(event: &str, incident_key: &str, agent: &str) -> Vec<u8> {
    serde_json::json!({"event": {
        "id": event, "event_type": "incident.acknowledged", "resource_type": "incident",
        "occurred_at": "2026-12-02T04:00:00.000Z",
        "agent": {"id": "PLH1HKV", "type": agent, "summary": "Ada Lovelace",
                  "html_url": "https://acme.pagerduty.com/users/PLH1HKV"},
        "client": null,
        "data": {"id": "PGR0VU2", "type": "incident", "status": "acknowledged", "incident_key": incident_key,
                 "html_url": "https://acme.pagerduty.com/incidents/PGR0VU2", "title": "checkout: error rate"}}})
    .to_string()
    .into_bytes()
}

async fn acks(nats: &NatsServer) -> Vec<AcknowledgeIncidentRequested> {
    stream_messages(&nats.url(), streams::INTENTS)
        .await
        .into_iter()
        .filter(|(s, _)| s == AcknowledgeIncidentRequested::SUBJECT)
        .map(|(_, b)| AcknowledgeIncidentRequested::decode(b).expect("decodes"))
        .collect()
}

/// The paging-sink binary on `paging` (the `paging_integration` body after its first line)
/// with `secrets` as environment, ready.
fn start_sink(dir: &Path, nats: &NatsServer, paging: &str, secrets: &[(&str, &str)]) -> ServiceProcess {
    let config = dir.join("paging-sink.yaml");
    std::fs::write(
        &config,
        format!("paging_integration:\n{paging}  escalation: {{critical: immediate, high: immediate}}\n"),
    )
    .expect("config");
    let url = nats.url();
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

/// The domain's `IncidentCreated` for a critical incident `id`.
async fn incident(nats: &NatsServer, id: &str) {
    let fact = IncidentCreated {
        incident_id: id.into(),
        title: "checkout: error rate above 5%".into(),
        severity: Severity::Critical as i32,
        service: "checkout".into(),
        ..Default::default()
    };
    publish(&nats.url(), IncidentCreated::SUBJECT, &format!("created-{id}"), fact.encode_to_vec()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_acknowledging_in_pagerduty_is_one_intent_and_nothing_else_is() {
    let mut nats = NatsServer::start().expect("nats");
    let pagerduty = FakePagerDuty::start().await.expect("pagerduty");
    let vendor: serde_json::Value = serde_json::from_str(VENDOR).expect("vector");
    let rotation: serde_json::Value = serde_json::from_str(ROTATION).expect("vector");
    let dir = tempfile::tempdir().expect("tempdir");
    let paging = format!(
        "  default_provider: pagerduty\n  pagerduty:\n    routing_key_ref: platform/pagerduty\n    \
         base_url: {}\n    webhook:\n      enabled: true\n      secret_refs: [pd/ours, pd/vendor, pd/rotated]\n",
        pagerduty.url()
    );
    let sink = start_sink(
        dir.path(),
        &nats,
        &paging,
        &[
            ("SECRET_PLATFORM_PAGERDUTY_ROUTING_KEY", ROUTING_KEY),
            ("SECRET_PD_OURS_SECRET", SECRET),
            ("SECRET_PD_VENDOR_SECRET", vendor["secret"].as_str().expect("secret")),
            ("SECRET_PD_ROTATED_SECRET", rotation["secrets"]["new"].as_str().expect("secret")),
        ],
    );

    // The vendor's vectors: valid is let in (a priority change: 200, nothing to do);
    // mismatched or missing is 401.
    let body = vendor["body"].as_str().expect("body").as_bytes();
    let cases = vendor["cases"].as_array().expect("cases");
    assert_eq!(post(&sink, cases[0]["header"].as_str(), "v-1", body).0, 200, "{}", sink.logs());
    assert_eq!(post(&sink, cases[1]["header"].as_str(), "v-2", body).0, 401);
    assert_eq!(post(&sink, None, "v-3", body).0, 401);
    // Rotation: two signatures, one by a secret we hold; one by a secret we do not; v2 only.
    let body = rotation["body_utf8"].as_str().expect("body").as_bytes();
    for (case, status) in rotation["cases"].as_array().expect("cases").iter().zip([200, 200, 401, 401]) {
        if case["receiver_secret"] == rotation["secrets"]["old"] {
            continue; // we hold `new` only
        }
        assert_eq!(post(&sink, case["header"].as_str(), "r", body).0, status, "{}", case["name"]);
    }

    // An incident paged through PagerDuty, then a person acknowledges it there.
    incident(&nats, "inc-pd-1").await;
    eventually("paged", WAIT, || async { !pagerduty.events().is_empty() }).await;
    let body = acknowledged("evt-1", "inc-pd-1", "user_reference");
    let (status, answer) = post(&sink, Some(&sign(SECRET, &body)), "wh-1", &body);
    assert_eq!(status, 200, "{answer}");
    let stored = acks(&nats).await;
    assert_eq!(stored.len(), 1, "stored before the 200");
    let origin = stored[0].origin.clone().unwrap_or_default();
    assert_eq!(
        (stored[0].incident_id.as_str(), origin.vendor.as_str(), origin.event_id.as_str()),
        ("inc-pd-1", "pagerduty", "wh-1")
    );
    assert_eq!(origin.actor.map(|a| a.name), Some("Ada Lovelace".to_owned()));
    assert_eq!(origin.object_id, "PGR0VU2");

    // PagerDuty delivers it again: 200, no second intent.
    let (status, answer) = post(&sink, Some(&sign(SECRET, &body)), "wh-1", &body);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"intents_duplicate\":1"), "{answer}");
    // Wrongly signed: 401, nothing.
    assert_eq!(post(&sink, Some(&sign("not-the-secret", &body)), "wh-2", &body).0, 401);
    // Our own acknowledge through the Events API coming back: not a person. 200, nothing.
    let echo = acknowledged("evt-3", "inc-pd-1", "service_reference");
    assert_eq!(post(&sink, Some(&sign(SECRET, &echo)), "wh-3", &echo).0, 200);
    // An incident this sink never paged: 200 (a 4xx would disable the subscription), nothing.
    let other = acknowledged("evt-4", "someone-elses-incident", "user_reference");
    assert_eq!(post(&sink, Some(&sign(SECRET, &other)), "wh-4", &other).0, 200);
    // Malformed: 400 naming the field.
    let bad = br#"{"event": {"id": "x"}}"#;
    let (status, answer) = post(&sink, Some(&sign(SECRET, bad)), "wh-5", bad);
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("\"field\""), "{answer}");
    assert_eq!(acks(&nats).await.len(), 1);

    // The bus away: 503, so PagerDuty retries; its retry is stored once. (A second
    // acknowledge of the same incident's life would be a duplicate: the change is the
    // key, so here the person resolves.)
    nats.kill();
    let again = String::from_utf8(acknowledged("evt-6", "inc-pd-1", "user_reference"))
        .expect("utf-8")
        .replace("incident.acknowledged", "incident.resolved")
        .into_bytes();
    let signature = sign(SECRET, &again);
    assert_eq!(post(&sink, Some(&signature), "wh-6", &again).0, 503);
    nats.restart().expect("restarts");
    eventually("PagerDuty's retry is stored", WAIT, || async {
        post(&sink, Some(&signature), "wh-6", &again).0 == 200
    })
    .await;
    let resolves = stream_messages(&nats.url(), streams::INTENTS)
        .await
        .into_iter()
        .filter(|(s, _)| s == sre_contracts::domain::v1::ResolveIncidentRequested::SUBJECT)
        .count();
    assert_eq!(resolves, 1, "the retried webhook once");
    assert_eq!(acks(&nats).await.len(), 1);
    let metrics = sink.get("/metrics").map(|(_, m)| m).unwrap_or_default();
    for line in [
        "paging_sink_webhook_events_total{provider=\"pagerduty\",outcome=\"Echo\"} 1",
        "paging_sink_webhook_events_total{provider=\"pagerduty\",outcome=\"Unknown\"} 2",
        "paging_sink_webhook_refused_total{provider=\"pagerduty\",reason=\"BadSignature\"} 5",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert!(!sink.logs().contains(SECRET), "the secret never reaches the logs");
}

const GENIE_KEY: &str = "eb243592-faa2-4ba2-a551q-1afdf565c889";
const OG_SECRET: &str = "opsgenie-shared-secret";
const OG_ACK: &str = include_str!("../../../../tests/fixtures/opsgenie/webhook-acknowledge.docs-example.json");
const OG_NOTE: &str = include_str!("../../../../tests/fixtures/opsgenie/webhook-addnote.docs-example.json");

/// The docs example of `action`, about `alias`, done through `source_type`.
fn opsgenie_event(example: &str, alias: &str, source_type: &str, updated_at: i64) -> Vec<u8> {
    let mut event: serde_json::Value = serde_json::from_str(example).expect("example");
    event["alert"]["alias"] = serde_json::json!(alias);
    event["alert"]["updatedAt"] = serde_json::json!(updated_at);
    event["source"]["type"] = serde_json::json!(source_type);
    event.to_string().into_bytes()
}

fn og_post(sink: &ServiceProcess, secret: Option<&str>, body: &[u8]) -> (u16, String) {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(s) = secret {
        headers.push(("X-Sre-Webhook-Secret", s));
    }
    http_request(sink.port(), "POST", "/webhooks/opsgenie", &headers, body).expect("answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_acknowledging_in_opsgenie_is_one_intent_and_nothing_else_is() {
    use sre_contracts::domain::v1::AnnotateIncidentRequested;
    let nats = NatsServer::start().expect("nats");
    let opsgenie = sre_testkit::opsgenie::FakeOpsgenie::start(GENIE_KEY).await.expect("opsgenie");
    let dir = tempfile::tempdir().expect("tempdir");
    let paging = format!(
        "  default_provider: opsgenie\n  opsgenie:\n    api_key_ref: platform/opsgenie\n    \
         base_url: {}\n    default_team: sre\n    webhook:\n      enabled: true\n      secret_refs: [platform/opsgenie-webhook]\n",
        opsgenie.url()
    );
    let sink = start_sink(
        dir.path(),
        &nats,
        &paging,
        &[("SECRET_PLATFORM_OPSGENIE_API_KEY", GENIE_KEY), ("SECRET_PLATFORM_OPSGENIE_WEBHOOK_SECRET", OG_SECRET)],
    );
    incident(&nats, "inc-og-1").await;
    eventually("the alert", WAIT, || async { !opsgenie.alerts().is_empty() }).await;
    assert_eq!(opsgenie.alerts()[0].alias, "inc-og-1");

    // A person acknowledges in the Opsgenie app (`source.type: web`): one intent.
    let ack = opsgenie_event(OG_ACK, "inc-og-1", "web", 1_764_650_000_000_000_001);
    let (status, answer) = og_post(&sink, Some(OG_SECRET), &ack);
    assert_eq!(status, 200, "{answer}\n{}", sink.logs());
    let stored = acks(&nats).await;
    assert_eq!(stored.len(), 1);
    let origin = stored[0].origin.clone().unwrap_or_default();
    assert_eq!((stored[0].incident_id.as_str(), origin.vendor.as_str()), ("inc-og-1", "opsgenie"));
    assert_eq!(origin.actor.map(|a| a.email), Some("fili@ifountain.com".to_owned()));
    // Posted again (Opsgenie has no delivery id; the same alert, action and updatedAt):
    // 200, no second intent. No secret, or a wrong one: 401.
    assert!(og_post(&sink, Some(OG_SECRET), &ack).1.contains("\"intents_duplicate\":1"));
    assert_eq!(og_post(&sink, None, &ack).0, 401);
    assert_eq!(og_post(&sink, Some("guess"), &ack).0, 401);
    // This sink's own acknowledge through the API: an echo. Another alias: not ours.
    let echo = opsgenie_event(OG_ACK, "inc-og-1", "API", 1_764_650_000_000_000_002);
    assert_eq!(og_post(&sink, Some(OG_SECRET), &echo).0, 200);
    let other = opsgenie_event(OG_ACK, "someone-elses-alert", "web", 1_764_650_000_000_000_003);
    assert_eq!(og_post(&sink, Some(OG_SECRET), &other).0, 200);
    // A person's note is a note.
    let note = opsgenie_event(OG_NOTE, "inc-og-1", "web", 1_764_650_000_000_000_004);
    assert_eq!(og_post(&sink, Some(OG_SECRET), &note).0, 200);
    assert_eq!(acks(&nats).await.len(), 1);
    let notes: Vec<AnnotateIncidentRequested> = stream_messages(&nats.url(), streams::INTENTS)
        .await
        .into_iter()
        .filter(|(s, _)| s == AnnotateIncidentRequested::SUBJECT)
        .map(|(_, b)| AnnotateIncidentRequested::decode(b).expect("decodes"))
        .collect();
    assert_eq!(notes.len(), 1);
    assert!(!notes[0].note.is_empty(), "the note's text: {:?}", notes[0]);
    let metrics = sink.get("/metrics").map(|(_, m)| m).unwrap_or_default();
    for line in [
        "paging_sink_webhook_events_total{provider=\"opsgenie\",outcome=\"Echo\"} 1",
        "paging_sink_webhook_events_total{provider=\"opsgenie\",outcome=\"Unknown\"} 1",
        "paging_sink_webhook_refused_total{provider=\"opsgenie\",reason=\"Unauthorized\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert!(!sink.logs().contains(OG_SECRET), "the secret never reaches the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_closes_once_a_person_acknowledges_in_pagerduty_and_nothing_loops() {
    use sre_contracts::domain::v1::{IncidentAcknowledged, IncidentResolved, ResolveIncidentRequested};
    let nats = NatsServer::start().expect("nats");
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("connects"));
    sre_testkit::domain::provision(&js).await.expect("streams");
    let domain = sre_testkit::domain::Domain::start(js, false, std::sync::Arc::new(|_: &str| {}));
    let pagerduty = FakePagerDuty::start().await.expect("pagerduty");
    let dir = tempfile::tempdir().expect("tempdir");
    let paging = format!(
        "  default_provider: pagerduty\n  pagerduty:\n    routing_key_ref: platform/pagerduty\n    \
         base_url: {}\n    webhook:\n      enabled: true\n      secret_refs: [pd/ours]\n",
        pagerduty.url()
    );
    let sink = start_sink(
        dir.path(),
        &nats,
        &paging,
        &[("SECRET_PLATFORM_PAGERDUTY_ROUTING_KEY", ROUTING_KEY), ("SECRET_PD_OURS_SECRET", SECRET)],
    );
    pagerduty.subscribe(&format!("http://127.0.0.1:{}/webhooks/pagerduty", sink.port()), SECRET);
    incident(&nats, "inc-loop-1").await;
    eventually("paged", WAIT, || async { !pagerduty.alerts().is_empty() }).await;

    // The on-call acknowledges in the PagerDuty app: the webhook becomes an intent, the
    // domain (stand-in) decides IncidentAcknowledged, and the sink's follow-up finds the
    // alert already acknowledged (no change, so PagerDuty sends nothing more).
    assert!(pagerduty.acknowledge_as("inc-loop-1", "Ada Lovelace"));
    let facts = |subject: &'static str| {
        let url = nats.url();
        async move { stream_messages(&url, streams::FACTS).await.into_iter().filter(|(s, _)| s == subject).count() }
    };
    eventually("IncidentAcknowledged", WAIT, || async { facts(IncidentAcknowledged::SUBJECT).await == 1 }).await;
    eventually("the sink's follow-up", WAIT, || async { pagerduty.events().iter().any(|e| e.action == "acknowledge") })
        .await;
    // The domain resolves it (its alert resolved): the sink resolves the page, and PagerDuty's
    // webhook of that resolve (a service, not a person) is an echo, not a new intent.
    let resolved = IncidentResolved { incident_id: "inc-loop-1".into(), by: "auto".into(), ..Default::default() };
    publish(&nats.url(), IncidentResolved::SUBJECT, "resolved-inc-loop-1", resolved.encode_to_vec()).await;
    eventually("the echo delivered", WAIT, || async {
        pagerduty
            .webhooks()
            .iter()
            .any(|(t, agent, status)| t == "incident.resolved" && agent == "service_reference" && *status == 200)
    })
    .await;
    let acks = acks(&nats).await;
    assert_eq!(acks.len(), 1, "the person's acknowledge reached the domain once");
    let resolves = stream_messages(&nats.url(), streams::INTENTS)
        .await
        .into_iter()
        .filter(|(s, _)| s == ResolveIncidentRequested::SUBJECT)
        .count();
    assert_eq!(resolves, 0, "the sink's own resolve did not come back as a request");
    assert_eq!(domain.external().len(), 1);
    assert_eq!(facts(IncidentAcknowledged::SUBJECT).await, 1, "acknowledged once");
    // incident.triggered (the page opening), incident.acknowledged (the person),
    // incident.resolved (the echo).
    assert_eq!(pagerduty.webhooks().iter().filter(|w| w.2 == 200).count(), 3, "{:?}", pagerduty.webhooks());
    assert_eq!(sink.metric("paging_sink_webhook_events_total{", &["outcome=\"Echo\""]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_team_moving_from_opsgenie_to_jsm_pages_there_and_ends_old_pages_where_they_were_made() {
    use sre_contracts::domain::v1::{IncidentAcknowledged, IncidentResolved, ResolveIncidentRequested};
    use sre_testkit::opsgenie::FakeOpsgenie;
    let nats = NatsServer::start().expect("nats");
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("connects"));
    sre_testkit::domain::provision(&js).await.expect("streams");
    let domain = sre_testkit::domain::Domain::start(js, false, std::sync::Arc::new(|_: &str| {}));
    let opsgenie = FakeOpsgenie::start(GENIE_KEY).await.expect("opsgenie");
    let jsm = FakeOpsgenie::start(JSM_KEY).await.expect("jsm operations");
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = [
        ("SECRET_PLATFORM_OPSGENIE_API_KEY", GENIE_KEY),
        ("SECRET_PLATFORM_JSM_API_KEY", JSM_KEY),
        ("SECRET_PLATFORM_JSM_WEBHOOK_SECRET", OG_SECRET),
    ];
    let opsgenie_section = format!(
        "  opsgenie:\n    api_key_ref: platform/opsgenie\n    base_url: {}\n    default_team: sre\n",
        opsgenie.url()
    );
    // Before: Opsgenie pages.
    let mut sink =
        start_sink(dir.path(), &nats, &format!("  default_provider: opsgenie\n{opsgenie_section}"), &secrets);
    incident(&nats, "inc-before").await;
    eventually("paged in Opsgenie", WAIT, || async { !opsgenie.alerts().is_empty() }).await;
    sink.terminate(WAIT).expect("stops");

    // After: JSM Operations pages, with its webhook; the Opsgenie section stays until its
    // pages have ended.
    let after = format!(
        "  default_provider: jsm\n{opsgenie_section}  jsm:\n    api_key_ref: platform/jsm\n    base_url: {}\n    \
         default_team: sre\n    webhook:\n      enabled: true\n      secret_refs: [platform/jsm-webhook]\n",
        jsm.jsm_url()
    );
    let sink = start_sink(dir.path(), &nats, &after, &secrets);
    jsm.subscribe(&format!("http://127.0.0.1:{}/webhooks/jsm", sink.port()), "X-Sre-Webhook-Secret", OG_SECRET);
    incident(&nats, "inc-after").await;
    eventually("paged in JSM", WAIT, || async { !jsm.alerts().is_empty() }).await;
    assert_eq!((jsm.alerts()[0].alias.as_str(), jsm.alerts()[0].api), ("inc-after", "jsm"), "through JSM's API");
    assert_eq!(jsm.alerts()[0].create["responders"][0]["name"], "sre");

    // A person acknowledges in JSM: one intent (vendor jsm), the domain decides, and the
    // sink's follow-up finds it acknowledged.
    assert!(jsm.act_as("inc-after", "acknowledged", "Grace Hopper"));
    let facts = |subject: &'static str| {
        let url = nats.url();
        async move { stream_messages(&url, streams::FACTS).await.into_iter().filter(|(s, _)| s == subject).count() }
    };
    eventually("IncidentAcknowledged", WAIT, || async { facts(IncidentAcknowledged::SUBJECT).await == 1 }).await;
    let stored = acks(&nats).await;
    assert_eq!(stored.len(), 1);
    let origin = stored[0].origin.clone().unwrap_or_default();
    assert_eq!((stored[0].incident_id.as_str(), origin.vendor.as_str()), ("inc-after", "jsm"));
    assert_eq!(origin.actor.map(|a| a.email), Some("grace.hopper@example.com".to_owned()));
    eventually("the follow-up at JSM", WAIT, || async {
        jsm.requests().iter().any(|(action, alias, _)| action == "Acknowledge" && alias == "inc-after")
    })
    .await;

    // Both resolved: each page is closed on the provider it was made with.
    for id in ["inc-before", "inc-after"] {
        let resolved = IncidentResolved { incident_id: id.into(), by: "auto".into(), ..Default::default() };
        publish(&nats.url(), IncidentResolved::SUBJECT, &format!("resolved-{id}"), resolved.encode_to_vec()).await;
    }
    eventually("both closed", WAIT, || async {
        opsgenie.alerts()[0].status == "closed" && jsm.alerts()[0].status == "closed"
    })
    .await;
    assert_eq!(
        opsgenie.requests().iter().map(|(a, alias, api)| (a.as_str(), alias.as_str(), *api)).collect::<Vec<_>>(),
        [("Create", "inc-before", "opsgenie"), ("Close", "inc-before", "opsgenie")],
        "Opsgenie heard only of its own page"
    );
    assert!(jsm.requests().iter().all(|(_, alias, api)| alias == "inc-after" && *api == "jsm"), "{:?}", jsm.requests());
    // The sink's own close comes back from JSM as an echo (an API integration's action).
    eventually("the echo delivered", WAIT, || async {
        jsm.webhooks().iter().any(|d| d.event == "Close" && d.status == 200)
    })
    .await;
    let resolves = stream_messages(&nats.url(), streams::INTENTS)
        .await
        .into_iter()
        .filter(|(s, _)| s == ResolveIncidentRequested::SUBJECT)
        .count();
    assert_eq!(resolves, 0, "the sink's own close did not come back as a request");
    assert_eq!(acks(&nats).await.len(), 1);
    assert_eq!(domain.external().len(), 1);
    assert_eq!(sink.metric("paging_sink_webhook_events_total{", &["provider=\"jsm\"", "outcome=\"Echo\""]), 1.0);
    assert_eq!(sink.metric("paging_sink_webhook_refused_total{", &["provider=\"jsm\""]), 0.0);
}

/// A note makes one round trip and nothing loops: a person's note in PagerDuty becomes one
/// `AnnotateIncidentRequested` (the receiver knows PagerDuty's incident from the
/// `incident.triggered` webhook), and the domain's `IncidentAnnotated` of it is not sent
/// back to PagerDuty; a note written in Jira goes on the page once (with who wrote it and
/// where), however often it is delivered, and PagerDuty's webhook of it is an echo.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_makes_one_round_trip_through_pagerduty_and_nothing_loops() {
    use sre_contracts::domain::v1::{AnnotateIncidentRequested, ExternalActor, ExternalOrigin, IncidentAnnotated};
    let nats = NatsServer::start().expect("nats");
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("connects"));
    sre_testkit::domain::provision(&js).await.expect("streams");
    let _domain = sre_testkit::domain::Domain::start(js, false, std::sync::Arc::new(|_: &str| {}));
    let pagerduty = FakePagerDuty::start().await.expect("pagerduty");
    let dir = tempfile::tempdir().expect("tempdir");
    let paging = format!(
        "  default_provider: pagerduty\n  pagerduty:\n    routing_key_ref: platform/pagerduty\n    \
         base_url: {url}\n    api_url: {url}\n    api_key_ref: pd/rest\n    from: sre-bot@example.com\n    \
         webhook:\n      enabled: true\n      secret_refs: [pd/ours]\n",
        url = pagerduty.url()
    );
    let sink = start_sink(
        dir.path(),
        &nats,
        &paging,
        &[
            ("SECRET_PLATFORM_PAGERDUTY_ROUTING_KEY", ROUTING_KEY),
            ("SECRET_PD_OURS_SECRET", SECRET),
            ("SECRET_PD_REST_API_KEY", sre_testkit::pagerduty::REST_KEY),
        ],
    );
    pagerduty.subscribe(&format!("http://127.0.0.1:{}/webhooks/pagerduty", sink.port()), SECRET);
    incident(&nats, "inc-note-1").await;
    eventually("paged, and PagerDuty's incident learned", WAIT, || async {
        pagerduty.webhooks().iter().any(|(t, _, status)| t == "incident.triggered" && *status == 200)
    })
    .await;

    let annotations = || {
        let url = nats.url();
        async move {
            stream_messages(&url, streams::INTENTS)
                .await
                .into_iter()
                .filter(|(s, _)| s == AnnotateIncidentRequested::SUBJECT)
                .map(|(_, b)| AnnotateIncidentRequested::decode(b).expect("decodes"))
                .collect::<Vec<_>>()
        }
    };
    // A person's note in PagerDuty: one intent; the domain's fact of it stays out of PagerDuty.
    assert!(pagerduty.note_as("inc-note-1", "rolling back the deploy", "Ada Lovelace"));
    eventually("the note reached the domain", WAIT, || async { annotations().await.len() == 1 }).await;
    let asked = &annotations().await[0];
    assert_eq!(asked.note, "rolling back the deploy");
    let origin = asked.origin.clone().unwrap_or_default();
    assert_eq!((origin.vendor.as_str(), origin.object_id.as_str()), ("pagerduty", "P000001"));
    eventually("its fact not sent back", WAIT, || async {
        sink.metric("paging_sink_changes_total", &["Note", "Skipped"]) >= 1.0
    })
    .await;
    assert_eq!(pagerduty.alerts()[0].notes.len(), 1, "only the person's");

    // A note written in Jira, delivered twice.
    let jira_note = IncidentAnnotated {
        meta: Some(sre_contracts::domain::v1::MessageMeta {
            idempotency_key: "note:jira-evt-1".into(),
            ..Default::default()
        }),
        incident_id: "inc-note-1".into(),
        // Longer than PagerDuty's webhook shows: the copy that comes back is trimmed.
        note: format!("failover to the replica started. {}", "Replica lag is 40 s and falling. ".repeat(10)),
        author: "Grace Hopper".into(),
        origin: Some(ExternalOrigin {
            vendor: "jira".into(),
            object_id: "OPS-7".into(),
            actor: Some(ExternalActor { name: "Grace Hopper".into(), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec();
    publish(&nats.url(), IncidentAnnotated::SUBJECT, "fact-note-1", jira_note.clone()).await;
    publish(&nats.url(), IncidentAnnotated::SUBJECT, "fact-note-1-again", jira_note).await;
    eventually("noted once, the redelivery a duplicate", WAIT, || async {
        sink.metric("paging_sink_changes_total", &["Note", "Noted"]) == 1.0
            && sink.metric("paging_sink_changes_total", &["Note", "Duplicate"]) >= 1.0
    })
    .await;
    let notes = pagerduty.alerts()[0].notes.clone();
    assert_eq!(notes.len(), 2, "{notes:?}");
    // The mark first, so even the trimmed copy in PagerDuty's webhook says it is ours.
    assert!(notes[1].0.starts_with("[sre-note "), "{notes:?}");
    assert!(notes[1].0.contains("] failover to the replica started. "), "{notes:?}");
    assert!(notes[1].0.ends_with("— Grace Hopper, in Jira OPS-7"), "{notes:?}");
    assert_eq!(notes[1].1, "sre-bot@example.com", "written as the From user");
    eventually("PagerDuty's webhook of our note is an echo", WAIT, || async {
        sink.metric("paging_sink_webhook_events_total{", &["outcome=\"Echo\""]) >= 1.0
    })
    .await;
    assert_eq!(annotations().await.len(), 1, "our note did not come back as a person's");
    assert!(!sink.logs().contains(sre_testkit::pagerduty::REST_KEY), "the REST key is never logged");
}
