//! The shared inbound path with a minimal webhook, against a real nats-server: what every
//! receiver relies on. An event the webhook chooses to ignore is 200 with nothing
//! published; the vendor's event id as the idempotency key makes a redelivery 200 and no
//! second intent; a bad payload is 400 naming the field; the bus away is 503 with
//! `Retry-After`, and the retry is stored once.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use sre_bus::{Bus, BusConfig, BusMetrics};
use sre_contracts::BusMessage;
use sre_contracts::domain::v1::{AnnotateIncidentRequested, MessageMeta, Source};
use sre_runtime::inbound::{self, Accepted, Reason, Refusal, Webhook};
use sre_testkit::NatsServer;
use tower::ServiceExt;

/// `X-Event-Id` names the event; body `ignore` asks for nothing, anything else not JSON is
/// refused, a JSON string is the note.
struct Notes;

impl Webhook for Notes {
    type Label = ();

    fn admit(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        if headers.get("x-event-id").is_none() {
            return Err(Refusal::new(StatusCode::UNAUTHORIZED, Reason::Unauthorized, "no event id"));
        }
        Ok(())
    }

    async fn accept(&self, headers: &HeaderMap, body: Bytes, _correlation: &str) -> Result<Accepted<()>, Refusal> {
        if body.as_ref() == b"ignore" {
            return Ok(Accepted::default());
        }
        let note: String =
            serde_json::from_slice(&body).map_err(|e| Refusal::invalid("note", format!("not a JSON string: {e}")))?;
        let event = headers.get("x-event-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let intent = AnnotateIncidentRequested {
            meta: Some(MessageMeta { idempotency_key: format!("test:{event}"), ..Default::default() }),
            incident_id: "inc-1".into(),
            note,
            ..Default::default()
        };
        Ok(Accepted { envelopes: vec![inbound::encode(&intent)?], labels: vec![()], ..Accepted::default() })
    }
}

async fn send(app: &axum::Router, event: &str, body: &'static str) -> (StatusCode, serde_json::Value, HeaderMap) {
    let req = Request::post("/hook").header("x-event-id", event).body(Body::from(body)).expect("request");
    let resp = app.clone().oneshot(req).await.expect("answers");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or_default(), headers)
}

async fn notes(server: &NatsServer) -> usize {
    sre_testkit::bus::stream_messages(&server.url(), sre_contracts::streams::INTENTS)
        .await
        .into_iter()
        .filter(|(s, _)| s == AnnotateIncidentRequested::SUBJECT)
        .count()
}

#[tokio::test]
async fn ignored_duplicate_malformed_and_bus_down_answers() {
    let mut server = NatsServer::start().expect("nats-server");
    let config = BusConfig { url: server.url(), ack_timeout: Duration::from_secs(1), ..BusConfig::default() };
    let source = Source { service: "test".into(), instance: "0".into() };
    let bus = Bus::connect(config, source, BusMetrics::default()).await.expect("bus");
    bus.ensure_topology(&tokio_util::sync::CancellationToken::new()).await.expect("topology");
    let limits = inbound::Limits {
        max_body_bytes: 1024,
        request_timeout: Duration::from_secs(5),
        publish_timeout: Duration::from_secs(1),
        max_concurrent_requests: 8,
    };
    let app = inbound::router("/hook", Notes, bus.intent_publisher(), limits);

    let (status, body, headers) = send(&app, "e0", "ignore").await;
    assert_eq!((status, body["intents_stored"].as_u64()), (StatusCode::OK, Some(0)), "{body}");
    assert!(headers.contains_key(inbound::REQUEST_ID_HEADER));
    let (status, body, _) = send(&app, "e1", "\"rolling back\"").await;
    assert_eq!((status, body["intents_stored"].as_u64()), (StatusCode::OK, Some(1)), "{body}");
    let (status, body, _) = send(&app, "e1", "\"rolling back\"").await;
    assert_eq!((status, body["intents_duplicate"].as_u64()), (StatusCode::OK, Some(1)), "redelivered: {body}");
    let (status, body, _) = send(&app, "e2", "{").await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("note")), "{body}");
    assert_eq!(notes(&server).await, 1, "ignored, duplicate and malformed published nothing");

    server.kill();
    let (status, _, headers) = send(&app, "e3", "\"scaled up\"").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    server.restart().expect("restarts");
    sre_testkit::bus::eventually("the vendor's retry is stored", Duration::from_secs(15), || async {
        send(&app, "e3", "\"scaled up\"").await.0 == StatusCode::OK
    })
    .await;
    assert_eq!(send(&app, "e3", "\"scaled up\"").await.1["intents_duplicate"].as_u64(), Some(1));
    assert_eq!(notes(&server).await, 2, "the retried event once");
}
