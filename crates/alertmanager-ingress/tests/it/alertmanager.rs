//! Real Alertmanager → alertmanager-ingress (the real binary) → real nats-server.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use prost::Message;
use serde_json::json;
use sre_contracts::domain::v1::{AlertStatus, CreateIncidentRequested, IngestAlertRequested, Severity};
use sre_contracts::{BusMessage, streams};
use sre_testkit::service::{ServiceProcess, http_request};
use sre_testkit::{Alertmanager, NatsServer};

const TOKEN: &str = "am-webhook-t0ken";

struct Stack {
    nats: NatsServer,
    ingress: ServiceProcess,
    am: Alertmanager,
    _dir: tempfile::TempDir,
}

fn stack() -> Stack {
    let nats = NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("ingress.yaml");
    std::fs::write(&config, "alertmanager_integration:\n  auth:\n    bearer: alertmanager/webhook\n").expect("write");
    let ingress = ServiceProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_alertmanager-ingress")),
        &["--config", config.to_str().expect("utf-8")],
        &[("NATS_URL", &nats.url()), ("SECRET_ALERTMANAGER_WEBHOOK_TOKEN", TOKEN)],
    )
    .expect("ingress starts");
    let mut ingress = ingress;
    ingress.wait_for_status("/readyz", 200, Duration::from_secs(20)).expect("ingress ready");
    let am_config = format!(
        r#"
route:
  receiver: sre
  group_by: [alertname, cluster]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 2s
receivers:
  - name: sre
    webhook_configs:
      - url: http://127.0.0.1:{}/webhooks/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials: {TOKEN}
"#,
        ingress.port()
    );
    let am = Alertmanager::start(&am_config).expect("alertmanager starts");
    Stack { nats, ingress, am, _dir: dir }
}

async fn intents(nats: &NatsServer) -> Vec<(String, bytes::Bytes)> {
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("client"));
    let Ok(stream) = js.get_stream(streams::INTENTS).await else { return Vec::new() };
    let last = stream.get_info().await.map(|i| i.state.last_sequence).unwrap_or(0);
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push((m.subject.to_string(), m.payload));
        }
    }
    out
}

fn metric(ingress: &ServiceProcess, name: &str) -> f64 {
    let (_, text) = ingress.get("/metrics").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// Polls `cond` until it holds or `within` passes (condition polling, not a timed sleep).
async fn eventually<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < within, "timed out after {within:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn alert(name: &str, starts: &str, ends: Option<&str>) -> serde_json::Value {
    let mut a = json!({
        "labels": {"alertname": name, "severity": "critical", "service": "checkout-api", "cluster": "prod-eu-1"},
        "annotations": {"summary": format!("{name} on checkout-api"), "runbook_url": "https://runbooks.example.com/x"},
        "startsAt": starts,
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=up",
    });
    if let Some(e) = ends {
        a["endsAt"] = json!(e);
    }
    a
}

fn ago(secs: i64) -> String {
    (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(secs)).to_string()
}

fn decode_ingest(payload: &bytes::Bytes) -> IngestAlertRequested {
    IngestAlertRequested::decode(payload.clone()).expect("IngestAlertRequested")
}

#[tokio::test(flavor = "multi_thread")]
async fn alerts_from_alertmanager_arrive_once_and_their_resolve_follows() {
    let s = stack();
    let starts = ago(60);
    assert_eq!(s.am.post_alerts(&json!([alert("CheckoutLatency", &starts, None)])).expect("posts"), 200);

    eventually("the firing alert's intents are stored", Duration::from_secs(20), || async {
        intents(&s.nats).await.len() >= 2
    })
    .await;
    let stored = intents(&s.nats).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].0, IngestAlertRequested::SUBJECT);
    assert_eq!(stored[1].0, CreateIncidentRequested::SUBJECT);
    let ingest = decode_ingest(&stored[0].1);
    assert_eq!(ingest.status, AlertStatus::Firing as i32);
    assert_eq!(ingest.severity, Severity::Critical as i32);
    assert_eq!(ingest.labels["alertname"], "CheckoutLatency");
    assert_eq!(ingest.annotations["summary"], "CheckoutLatency on checkout-api");
    assert_eq!(ingest.generator_url, "http://prometheus.example:9090/graph?g0.expr=up");
    assert_eq!(ingest.fingerprint.len(), 16, "Alertmanager's fingerprint: {}", ingest.fingerprint);
    assert_eq!(ingest.ends_at, None);
    let group = ingest.group.as_ref().expect("group");
    assert_eq!(group.receiver, "sre");
    assert_eq!(group.external_url, s.am.url());
    assert!(group.group_key.contains("alertname=\"CheckoutLatency\""), "{}", group.group_key);
    let create = CreateIncidentRequested::decode(stored[1].1.clone()).expect("CreateIncidentRequested");
    assert_eq!((create.title.as_str(), create.service.as_str()), ("CheckoutLatency on checkout-api", "checkout-api"));

    // Alertmanager sends the same notification again at repeat_interval: no new intent.
    eventually("Alertmanager repeats the notification", Duration::from_secs(20), || async {
        metric(&s.ingress, "alertmanager_ingress_alerts_duplicate_total") >= 1.0
    })
    .await;
    assert_eq!(intents(&s.nats).await.len(), 2, "a repeat stores nothing");

    // The resolve is a new intent, and asks for no incident.
    assert_eq!(s.am.post_alerts(&json!([alert("CheckoutLatency", &starts, Some(&ago(1)))])).expect("posts"), 200);
    eventually("the resolve is stored", Duration::from_secs(20), || async { intents(&s.nats).await.len() >= 3 }).await;
    let stored = intents(&s.nats).await;
    assert_eq!(stored.len(), 3);
    assert_eq!(stored[2].0, IngestAlertRequested::SUBJECT);
    let resolved = decode_ingest(&stored[2].1);
    assert_eq!(resolved.status, AlertStatus::Resolved as i32);
    assert_eq!(resolved.fingerprint, ingest.fingerprint);
    assert!(resolved.ends_at.is_some());
    assert_ne!(resolved.meta.as_ref().map(|m| &m.idempotency_key), ingest.meta.as_ref().map(|m| &m.idempotency_key));

    // A malformed body from anyone else: 400 naming the field, nothing published.
    let auth = format!("Bearer {TOKEN}");
    let headers = [("Content-Type", "application/json"), ("Authorization", auth.as_str())];
    let (status, body) = http_request(
        s.ingress.port(),
        "POST",
        "/webhooks/alertmanager",
        &headers,
        br#"{"version":"4","status":"firing"}"#,
    )
    .expect("answers");
    assert_eq!(status, 400, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).expect("json error");
    assert_eq!(body["field"], "groupKey");
    // Without the token: 401.
    let (status, _) =
        http_request(s.ingress.port(), "POST", "/webhooks/alertmanager", &headers[..1], b"{}").expect("answers");
    assert_eq!(status, 401);
    assert_eq!(intents(&s.nats).await.len(), 3, "nothing published for bad requests");
}

#[tokio::test(flavor = "multi_thread")]
async fn during_a_bus_outage_alertmanager_retries_and_nothing_is_lost() {
    let mut s = stack();
    s.nats.kill();
    assert_eq!(s.am.post_alerts(&json!([alert("DiskFull", &ago(30), None)])).expect("posts"), 200);
    eventually("the ingress answers 503 while the bus is down", Duration::from_secs(20), || async {
        metric(&s.ingress, "alertmanager_ingress_requests_rejected_total{reason=\"BusUnavailable\"}") >= 1.0
    })
    .await;
    let (status, ready) = s.ingress.get("/readyz").expect("readyz");
    assert_eq!(status, 503, "not ready while the bus is down: {ready}");

    s.nats.restart().expect("nats-server restarts");
    eventually("Alertmanager's retry is stored", Duration::from_secs(40), || async {
        intents(&s.nats).await.iter().any(|(subject, payload)| {
            subject == IngestAlertRequested::SUBJECT
                && decode_ingest(payload).labels.get("alertname").map(String::as_str) == Some("DiskFull")
        })
    })
    .await;
    let stored = intents(&s.nats).await;
    let ingests = stored.iter().filter(|(subject, _)| subject == IngestAlertRequested::SUBJECT).count();
    assert_eq!(ingests, 1, "stored exactly once");
}
