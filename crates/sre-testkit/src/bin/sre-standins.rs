//! Local stand-ins for what cannot run here, for `cargo xtask run`. DEVELOPMENT ONLY.
//!
//! - The test vendors of this kit on fixed loopback ports: Argo CD 8089 (a few demo
//!   applications), Jira Data Center 8090, GitHub 8091, PagerDuty 8092, Opsgenie 8093.
//! - A **reference SRE domain stand-in**: it turns intents into facts, idempotently, the
//!   way the real domain would be expected to: `IngestAlertRequested` → `AlertIngested`,
//!   `CreateIncidentRequested` → `IncidentCreated`, an incident resolves when its alert
//!   resolves (`IncidentResolved`), and `POST /incidents/<id>/acknowledge` or `/close` on
//!   127.0.0.1:8094 publishes `IncidentAcknowledged` / `IncidentClosed`. It is not the SRE
//!   domain; it only lets the adapters be seen working end to end.
//!
//! Prints a timeline of what each part received. Ctrl-C or SIGTERM stops it.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use sre_contracts::BusMessage;
use sre_contracts::domain::v1::{
    AlertIngested, AlertStatus, AppHealth, CreateIncidentRequested, IncidentAcknowledged, IncidentClosed,
    IncidentCreated, IncidentResolved, IngestAlertRequested, MessageMeta, RecordHealthCheckRequested, Source,
};
use sre_testkit::argocd::{App, FakeArgoCd};
use sre_testkit::github::FakeGithub;
use sre_testkit::jira::{FakeJira, Flavor};
use sre_testkit::opsgenie::FakeOpsgenie;
use sre_testkit::pagerduty::FakePagerDuty;

/// Credentials the demo configurations use (placeholders, for loopback stand-ins only).
const ARGOCD_TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkZW1vIn0.ZGVtbw";
const JIRA_TOKEN: &str = "demo-jira-pat";
const GITHUB_TOKEN: &str = "demo-github-token";
const OPSGENIE_KEY: &str = "demo-opsgenie-key";

fn say(what: &str) {
    let now = jiff::Timestamp::now().strftime("%H:%M:%S");
    println!("{now}  {what}");
}

fn meta(key: String, correlation: &str) -> Option<MessageMeta> {
    Some(MessageMeta {
        idempotency_key: key,
        correlation_id: correlation.to_owned(),
        causation_id: String::new(),
        source: Some(Source { service: "sre-domain-standin".into(), instance: "dev".into() }),
        occurred_at: None,
    })
}

/// Publishes a fact (only this stand-in does; adapters cannot).
async fn publish(js: &async_nats::jetstream::Context, subject: &'static str, msg_id: &str, body: Vec<u8>) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(sre_contracts::headers::MSG_ID, msg_id);
    match js.publish_with_headers(subject, headers, body.into()).await {
        Ok(ack) => {
            if let Err(e) = ack.await {
                say(&format!("domain: fact not stored: {e}"));
            }
        }
        Err(e) => say(&format!("domain: fact not published: {e}")),
    }
}

#[derive(Default)]
struct Domain {
    /// Alert fingerprint → open incident.
    open: HashMap<String, String>,
    /// Acknowledge each incident 5 s after it opens, close it 5 s after it resolves (the
    /// demo's on-call, `SRE_STANDINS_AUTO=1`).
    auto: bool,
}

/// Publishes a follow-up fact after a pause (the demo's on-call at work).
fn later(js: &async_nats::jetstream::Context, subject: &'static str, msg_id: String, body: Vec<u8>, what: String) {
    let js = js.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        publish(&js, subject, &msg_id, body).await;
        say(&what);
    });
}

async fn domain(js: async_nats::jetstream::Context, state: Arc<Mutex<Domain>>) {
    let stream = loop {
        match js.get_stream(sre_contracts::streams::INTENTS).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    let consumer = match stream
        .get_or_create_consumer(
            "sre-domain-standin",
            async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("sre-domain-standin".into()),
                filter_subjects: vec![
                    IngestAlertRequested::SUBJECT.into(),
                    CreateIncidentRequested::SUBJECT.into(),
                    RecordHealthCheckRequested::SUBJECT.into(),
                ],
                ..Default::default()
            },
        )
        .await
    {
        Ok(c) => c,
        Err(e) => return say(&format!("domain: no consumer: {e}")),
    };
    let Ok(mut messages) = consumer.messages().await else { return };
    while let Some(Ok(m)) = messages.next().await {
        let correlation = m
            .headers
            .as_ref()
            .and_then(|h| h.get(sre_contracts::headers::CORRELATION_ID))
            .map(|v| v.to_string())
            .unwrap_or_default();
        if m.subject.as_str() == RecordHealthCheckRequested::SUBJECT {
            if let Ok(h) = RecordHealthCheckRequested::decode(m.payload.clone()) {
                let name = |v: i32| match AppHealth::try_from(v) {
                    Ok(AppHealth::Unspecified) | Err(_) => "(new)".to_owned(),
                    Ok(h) => h.as_str_name().trim_start_matches("APP_HEALTH_").to_owned(),
                };
                say(&format!(
                    "domain: RecordHealthCheckRequested {} {}: {} → {}",
                    h.environment,
                    h.app,
                    name(h.previous_health),
                    name(h.health)
                ));
            }
        } else if m.subject.as_str() == CreateIncidentRequested::SUBJECT {
            if let Ok(req) = CreateIncidentRequested::decode(m.payload.clone()) {
                let key = req.meta.as_ref().map(|x| x.idempotency_key.clone()).unwrap_or_default();
                let id = format!("inc-{}", &sre_resilience::idempotency::derive_key("i", &[&key])[2..14]);
                for f in &req.alert_fingerprints {
                    state.lock().unwrap_or_else(PoisonError::into_inner).open.insert(f.clone(), id.clone());
                }
                let fact = IncidentCreated {
                    meta: meta(format!("created:{id}"), &correlation),
                    incident_id: id.clone(),
                    title: req.title.clone(),
                    description: req.description.clone(),
                    severity: req.severity,
                    service: req.service.clone(),
                    environment: req.environment.clone(),
                    labels: req.labels.clone(),
                    alert_fingerprints: req.alert_fingerprints.clone(),
                    runbook_url: req.runbook_url.clone(),
                    team: req.labels.get("team").cloned().unwrap_or_default(),
                    ..Default::default()
                };
                publish(&js, IncidentCreated::SUBJECT, &format!("created:{id}"), fact.encode_to_vec()).await;
                say(&format!("domain: CreateIncidentRequested → IncidentCreated {id} \"{}\"", req.title));
                if state.lock().unwrap_or_else(PoisonError::into_inner).auto {
                    let ack = IncidentAcknowledged {
                        meta: meta(format!("ack:{id}"), &correlation),
                        incident_id: id.clone(),
                        by: "demo-oncall".into(),
                        ..Default::default()
                    };
                    later(
                        &js,
                        IncidentAcknowledged::SUBJECT,
                        format!("ack:{id}"),
                        ack.encode_to_vec(),
                        format!("domain: demo-oncall acknowledged → IncidentAcknowledged {id}"),
                    );
                }
            }
        } else if let Ok(alert) = IngestAlertRequested::decode(m.payload.clone()) {
            let key = alert.meta.as_ref().map(|x| x.idempotency_key.clone()).unwrap_or_default();
            let incident = state.lock().unwrap_or_else(PoisonError::into_inner).open.get(&alert.fingerprint).cloned();
            let fact = AlertIngested {
                meta: meta(format!("ingested:{key}"), &correlation),
                fingerprint: alert.fingerprint.clone(),
                incident_id: incident.clone().unwrap_or_default(),
                duplicate: false,
            };
            publish(&js, AlertIngested::SUBJECT, &format!("ingested:{key}"), fact.encode_to_vec()).await;
            let status = if alert.status == AlertStatus::Resolved as i32 { "resolved" } else { "firing" };
            say(&format!(
                "domain: IngestAlertRequested ({status}, {}) → AlertIngested",
                alert.labels.get("alertname").cloned().unwrap_or_default()
            ));
            if alert.status == AlertStatus::Resolved as i32
                && let Some(id) = incident
            {
                state.lock().unwrap_or_else(PoisonError::into_inner).open.remove(&alert.fingerprint);
                let fact = IncidentResolved {
                    meta: meta(format!("resolved:{id}"), &correlation),
                    incident_id: id.clone(),
                    by: "auto".into(),
                    reason: "its alert resolved".into(),
                    ..Default::default()
                };
                publish(&js, IncidentResolved::SUBJECT, &format!("resolved:{id}"), fact.encode_to_vec()).await;
                say(&format!("domain: alert resolved → IncidentResolved {id}"));
                if state.lock().unwrap_or_else(PoisonError::into_inner).auto {
                    let close = IncidentClosed {
                        meta: meta(format!("close:{id}"), &correlation),
                        incident_id: id.clone(),
                        by: "demo-oncall".into(),
                        reason: "postmortem done".into(),
                        ..Default::default()
                    };
                    later(
                        &js,
                        IncidentClosed::SUBJECT,
                        format!("close:{id}"),
                        close.encode_to_vec(),
                        format!("domain: demo-oncall closed → IncidentClosed {id}"),
                    );
                }
            }
        }
        let _ = m.ack().await;
    }
}

/// `POST /incidents/{id}/acknowledge` and `/close`.
async fn control(js: async_nats::jetstream::Context) -> std::io::Result<()> {
    use axum::extract::{Path, State};
    async fn act(
        State(js): State<async_nats::jetstream::Context>,
        Path((id, action)): Path<(String, String)>,
    ) -> String {
        match action.as_str() {
            "acknowledge" => {
                let fact = IncidentAcknowledged {
                    meta: meta(format!("ack:{id}"), ""),
                    incident_id: id.clone(),
                    by: "demo-user".into(),
                    ..Default::default()
                };
                publish(&js, IncidentAcknowledged::SUBJECT, &format!("ack:{id}"), fact.encode_to_vec()).await;
                say(&format!("domain: acknowledged by demo-user → IncidentAcknowledged {id}"));
                format!("acknowledged {id}\n")
            }
            "close" => {
                let fact = IncidentClosed {
                    meta: meta(format!("close:{id}"), ""),
                    incident_id: id.clone(),
                    by: "demo-user".into(),
                    reason: "follow-up done".into(),
                    ..Default::default()
                };
                publish(&js, IncidentClosed::SUBJECT, &format!("close:{id}"), fact.encode_to_vec()).await;
                say(&format!("domain: closed by demo-user → IncidentClosed {id}"));
                format!("closed {id}\n")
            }
            other => format!("unknown action {other}\n"),
        }
    }
    let app = axum::Router::new().route("/incidents/{id}/{action}", axum::routing::post(act)).with_state(js);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 8094)).await?;
    axum::serve(listener, app).await
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let nats = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let mut apps =
        vec![App::new("checkout", "production"), App::new("payments", "production"), App::new("search", "staging")];
    apps[2].health = "Progressing".into();
    let argo = FakeArgoCd::start_on(8089, ARGOCD_TOKEN, apps).await?;
    let jira = FakeJira::start_on(8090, Flavor::DataCenter, &format!("Bearer {JIRA_TOKEN}"), &["OPS", "PAY"]).await?;
    let github = FakeGithub::start_on(8091, GITHUB_TOKEN, &["example/incidents"]).await?;
    let pagerduty = FakePagerDuty::start_on(8092).await?;
    let opsgenie = FakeOpsgenie::start_on(8093, OPSGENIE_KEY).await?;
    say(
        "stand-ins: Argo CD :8089, Jira DC :8090, GitHub :8091, PagerDuty :8092, Opsgenie :8093 (each lists what it received at http://127.0.0.1:<port>/), domain control :8094",
    );
    let client = loop {
        match async_nats::connect(&nats).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    let js = async_nats::jetstream::new(client);
    let auto = std::env::var("SRE_STANDINS_AUTO").is_ok_and(|v| v == "1");
    tokio::spawn(domain(js.clone(), Arc::new(Mutex::new(Domain { auto, ..Domain::default() }))));
    tokio::spawn(control(js));

    // The timeline of what the vendors received.
    let mut seen = (0usize, 0usize, 0usize, 0usize, String::new());
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut degraded = false;
    let mut polls_at_change = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {}
        }
        let issues = jira.issues();
        for i in issues.iter().skip(seen.0) {
            say(&format!("jira: created {} \"{}\"", i.key, i.summary));
        }
        let statuses: String = issues.iter().map(|i| format!("{}={};", i.key, i.status)).collect();
        if statuses != seen.4 {
            for i in &issues {
                if i.status != "To Do" && !seen.4.contains(&format!("{}={};", i.key, i.status)) {
                    say(&format!("jira: {} is now {}", i.key, i.status));
                }
            }
            seen.4 = statuses;
        }
        let events = pagerduty.events();
        for e in events.iter().skip(seen.1) {
            say(&format!("pagerduty: {} {} (applied: {})", e.action, e.dedup_key, e.applied));
        }
        let gh = github.issues();
        for i in gh.iter().skip(seen.2) {
            say(&format!("github: opened #{} \"{}\"", i.number, i.title));
        }
        let og = opsgenie.alerts();
        for a in og.iter().skip(seen.3) {
            say(&format!("opsgenie: alert {}", a.alias));
        }
        seen = (issues.len(), events.len(), gh.len(), og.len(), seen.4);
        // Argo CD: after a few polls "payments" goes Degraded, later Healthy again.
        let polls = argo.requests();
        if polls >= 3 && !degraded && polls_at_change == 0 {
            argo.set_health("payments", "Degraded", "Deployment payments exceeded its progress deadline");
            say("argocd: payments is now Degraded");
            degraded = true;
            polls_at_change = polls;
        } else if degraded && polls >= polls_at_change + 3 {
            argo.set_health("payments", "Healthy", "");
            say("argocd: payments is Healthy again");
            degraded = false;
        }
    }
    say("stand-ins: stopping");
    Ok(())
}
