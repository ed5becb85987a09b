//! The webhook endpoint against a real nats-server, as Alertmanager or another sender sees it.

use std::sync::Arc;
use std::time::Duration;

use alertmanager_ingress::metrics::{IngressMetrics, RejectReason};
use alertmanager_ingress::{Config, SPEC};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use prost::Message;
use sre_bus::{Bus, BusMetrics};
use sre_contracts::domain::v1::{AlertStatus, CreateIncidentRequested, IngestAlertRequested, Source};
use sre_contracts::{BusMessage, streams};
use sre_runtime::axum::Router;
use sre_runtime::{Health, Metrics, SecretStore, ServiceContext, Vars, load_config};
use sre_testkit::NatsServer;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const SINGLE: &str = include_str!("../../../../tests/fixtures/alertmanager/webhook-v4-firing-single.json");
const RESOLVED: &str = include_str!("../../../../tests/fixtures/alertmanager/webhook-v4-resolved.json");
const PATH: &str = "/webhooks/alertmanager";

struct Harness {
    app: Router,
    metrics: IngressMetrics,
    js: async_nats::jetstream::Context,
}

fn vars(pairs: &[(&str, &str)]) -> Vars {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

async fn harness(server: &NatsServer, yaml: &str, vars: Vars) -> Harness {
    let config: Config = load_config::<Config>(yaml, &vars).expect("config");
    let bus_config = sre_bus::BusConfig { url: server.url(), ..config.runtime.bus.clone() };
    let source = Source { service: "alertmanager-ingress".into(), instance: "test-0".into() };
    let bus = Bus::connect(bus_config, source, BusMetrics::default()).await.expect("bus");
    bus.ensure_topology(&CancellationToken::new()).await.expect("topology");
    let ctx = ServiceContext {
        config: Arc::new(config),
        bus,
        metrics: Metrics::default(),
        health: Health::default(),
        shutdown: CancellationToken::new(),
        tasks: tokio_util::task::TaskTracker::new(),
        secrets: SecretStore::new(None, vars),
        spec: SPEC,
    };
    let metrics = IngressMetrics::default();
    let app = alertmanager_ingress::ingress(&ctx, metrics.clone()).expect("router");
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.expect("client"));
    Harness { app, metrics, js }
}

fn post(body: impl Into<Body>) -> axum::http::request::Builder {
    let _ = body;
    Request::post(PATH).header("content-type", "application/json")
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, serde_json::Value, axum::http::HeaderMap) {
    let resp = app.clone().oneshot(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (parts.status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null), parts.headers)
}

async fn webhook(app: &Router, body: &str) -> (StatusCode, serde_json::Value, axum::http::HeaderMap) {
    send(app, post(()).body(Body::from(body.to_owned())).expect("request")).await
}

async fn stored(js: &async_nats::jetstream::Context) -> Vec<async_nats::jetstream::message::StreamMessage> {
    let stream = js.get_stream(streams::INTENTS).await.expect("stream");
    let last = stream.get_info().await.expect("info").state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push(m);
        }
    }
    out
}

#[tokio::test]
async fn an_alert_is_stored_before_200_and_a_repeat_adds_nothing() {
    let server = NatsServer::start().expect("nats-server");
    let h = harness(&server, "", Vars::new()).await;

    let (status, body, headers) = webhook(&h.app, SINGLE).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["alerts"].as_u64(), body["intents_stored"].as_u64()), (Some(1), Some(2)));
    assert!(headers.contains_key("x-request-id"));
    let messages = stored(&h.js).await;
    assert_eq!(messages.len(), 2, "stored before the answer");
    assert_eq!(messages[0].subject.as_str(), IngestAlertRequested::SUBJECT);
    assert_eq!(messages[1].subject.as_str(), CreateIncidentRequested::SUBJECT);
    let ingest = IngestAlertRequested::decode(messages[0].payload.clone()).expect("protobuf");
    assert_eq!(ingest.fingerprint, "00260c6d6cda79af");
    assert_eq!(ingest.status, AlertStatus::Firing as i32);
    let create = CreateIncidentRequested::decode(messages[1].payload.clone()).expect("protobuf");
    assert_eq!(create.meta.as_ref().map(|m| &m.causation_id), ingest.meta.as_ref().map(|m| &m.idempotency_key));

    let (status, body, _) = webhook(&h.app, SINGLE).await;
    assert_eq!(status, StatusCode::OK, "a duplicate is still 200");
    assert_eq!((body["intents_stored"].as_u64(), body["intents_duplicate"].as_u64()), (Some(0), Some(2)));
    assert_eq!(stored(&h.js).await.len(), 2, "no second intent");
    assert_eq!(h.metrics.duplicate_alerts(), 1);

    let (status, _, _) = webhook(&h.app, RESOLVED).await;
    assert_eq!(status, StatusCode::OK);
    let after = stored(&h.js).await;
    let resolved: Vec<_> =
        after[2..].iter().map(|m| IngestAlertRequested::decode(m.payload.clone()).expect("ingest")).collect();
    assert!(
        !resolved.is_empty()
            && resolved.iter().all(|i| i.status == AlertStatus::Resolved as i32 && i.ends_at.is_some())
    );
    assert!(
        after[2..].iter().all(|m| m.subject.as_str() == IngestAlertRequested::SUBJECT),
        "resolves ask for no incident"
    );
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_nothing_is_published() {
    let server = NatsServer::start().expect("nats-server");
    let yaml = "alertmanager_integration:\n  limits:\n    max_body_bytes: 2048\n";
    let h = harness(&server, yaml, Vars::new()).await;

    let mut missing: serde_json::Value = serde_json::from_str(SINGLE).expect("json");
    missing["alerts"][0].as_object_mut().expect("object").remove("startsAt");
    let (status, body, _) = webhook(&h.app, &missing.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["field"], "alerts[0].startsAt");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("missing field")), "{body}");
    assert_eq!(body["status"], 400);

    let (status, body, _) = webhook(&h.app, "{\"version\": \"4\"").await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("body")));

    let req = Request::post(PATH).header("content-type", "text/plain").body(Body::from(SINGLE)).expect("request");
    assert_eq!(send(&h.app, req).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(4096));
    let (status, body, _) = webhook(&h.app, &big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    let req = Request::get(PATH).body(Body::empty()).expect("request");
    assert_eq!(send(&h.app, req).await.0, StatusCode::METHOD_NOT_ALLOWED);

    assert!(stored(&h.js).await.is_empty(), "nothing published");
    assert_eq!(h.metrics.rejected(RejectReason::InvalidPayload), 2);
    assert_eq!(h.metrics.rejected(RejectReason::TooLarge), 1);
    assert_eq!(h.metrics.rejected(RejectReason::UnsupportedMediaType), 1);
}

#[tokio::test]
async fn credentials_and_signatures_are_checked() {
    let server = NatsServer::start().expect("nats-server");
    let yaml = "alertmanager_integration:\n  auth:\n    bearer: am/bearer\n    hmac:\n      secret_ref: am/hmac\n";
    let secrets = vars(&[("SECRET_AM_BEARER_TOKEN", "t0ken"), ("SECRET_AM_HMAC_SECRET", "k3y")]);
    let h = harness(&server, yaml, secrets).await;
    let signature = alertmanager_ingress::auth::sign("k3y", SINGLE.as_bytes());
    let request = |auth: Option<&str>, sig: Option<&str>| {
        let mut r = post(()).header("content-type", "application/json; charset=utf-8");
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        if let Some(s) = sig {
            r = r.header("x-signature-256", s);
        }
        r.body(Body::from(SINGLE)).expect("request")
    };
    let (status, body, headers) = send(&h.app, request(None, Some(&signature))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(headers.contains_key("www-authenticate"));
    assert_eq!(send(&h.app, request(Some("Bearer wrong"), Some(&signature))).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&h.app, request(Some("Bearer t0ken"), Some("sha256=00"))).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(send(&h.app, request(Some("Bearer t0ken"), None)).await.0, StatusCode::UNAUTHORIZED);
    assert!(stored(&h.js).await.is_empty());
    let (status, body, _) = send(&h.app, request(Some("Bearer t0ken"), Some(&signature))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(h.metrics.rejected(RejectReason::Unauthorized), 2);
    assert_eq!(h.metrics.rejected(RejectReason::BadSignature), 2);
    assert!(!body.to_string().contains("t0ken"));
}

#[tokio::test]
async fn with_the_bus_down_the_answer_is_503_and_the_retry_is_stored() {
    let mut server = NatsServer::start().expect("nats-server");
    let h = harness(&server, "", Vars::new()).await;
    server.kill();
    // The ingress answers 503 (Alertmanager retries 5xx) for as long as the bus is away.
    let (status, body, headers) = webhook(&h.app, SINGLE).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers.get("retry-after").map(|v| v.to_str().unwrap_or_default()), Some("1"));
    assert!(h.metrics.rejected(RejectReason::BusUnavailable) >= 1);

    server.restart().expect("restarts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, _) = webhook(&h.app, SINGLE).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {status} after the bus returned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let messages = stored(&h.js).await;
    assert_eq!(messages.len(), 2, "the retried alert is stored exactly once");
}

#[tokio::test]
async fn overload_and_slow_requests_get_503() {
    let server = NatsServer::start().expect("nats-server");
    let yaml = "alertmanager_integration:\n  limits:\n    max_concurrent_requests: 1\n    request_timeout: 300ms\n    publish_timeout: 100ms\n";
    let h = harness(&server, yaml, Vars::new()).await;
    // A sender that never finishes its body holds the only slot until the deadline.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    let stalled = Body::from_stream(tokio_stream_from(rx));
    let slow = tokio::spawn({
        let app = h.app.clone();
        async move { send(&app, post(()).body(stalled).expect("request")).await.0 }
    });
    // Meanwhile a second request is refused for capacity. (A wrong content type makes it
    // fail fast with 415 whenever it does get the slot, so the loop ends either way.)
    let mut overloaded = false;
    for _ in 0..200 {
        let req = Request::post(PATH).header("content-type", "text/plain").body(Body::empty()).expect("request");
        let status = send(&h.app, req).await.0;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            overloaded = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(overloaded, "a second request is refused while the slot is taken");
    assert_eq!(slow.await.expect("joins"), StatusCode::SERVICE_UNAVAILABLE, "the stalled request times out");
    drop(tx);
    assert_eq!(h.metrics.rejected(RejectReason::Timeout), 1);
    assert!(h.metrics.rejected(RejectReason::Overloaded) >= 1);
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
