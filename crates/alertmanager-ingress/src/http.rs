//! The webhook endpoint: the imperative shell around `payload` and `mapping`.
//!
//! Order of checks: capacity (503), content type (415), credentials (401), size (413),
//! signature (401), payload (400), then publish and wait for JetStream (503 when it does
//! not store everything in time). 200 only when every intent is stored or was already
//! stored (a duplicate).

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::json;
use sre_bus::{Envelope, IntentPublisher};
use sre_contracts::domain::v1::{Severity, Source};
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::auth::{Auth, Denied};
use crate::config::Limits;
use crate::mapping::{Intents, RequestContext, Rules, map_webhook};
use crate::metrics::{
    AlertLabels, AlertStatusLabel, IngressMetrics, IntentKind, IntentLabels, RejectLabels, RejectReason, SeverityLabel,
    Stored,
};
use crate::payload::{PayloadError, parse};

/// Header a caller may set to choose the correlation id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Everything the handler needs; built once at start.
pub struct Ingress {
    /// Mapping rules.
    pub rules: Rules,
    /// Publisher of intents.
    pub publisher: IntentPublisher,
    /// Accepted credentials.
    pub auth: Auth,
    /// Limits.
    pub limits: Limits,
    /// Metrics.
    pub metrics: IngressMetrics,
    /// This instance.
    pub source: Source,
}

struct Shared {
    ingress: Ingress,
    permits: Semaphore,
}

/// The webhook route at `path`.
pub fn router(path: &str, ingress: Ingress) -> Router {
    let permits = Semaphore::new(ingress.limits.max_concurrent_requests);
    let shared = Arc::new(Shared { ingress, permits });
    Router::new().route(path, post(handle)).with_state(shared)
}

/// A refusal: status, what was wrong and where.
struct Reject {
    status: StatusCode,
    reason: RejectReason,
    field: Option<String>,
    message: String,
}

impl Reject {
    fn new(status: StatusCode, reason: RejectReason, message: impl Into<String>) -> Self {
        Self { status, reason, field: None, message: message.into() }
    }
}

fn correlation_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()))
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let correlation = correlation_id(&headers);
    let ingress = &shared.ingress;
    let span = tracing::info_span!("webhook", correlation_id = %correlation);
    let result = match shared.permits.try_acquire() {
        Err(_) => {
            Err(Reject::new(StatusCode::SERVICE_UNAVAILABLE, RejectReason::Overloaded, "too many requests in flight"))
        }
        Ok(_permit) => {
            let work = accept(ingress, &headers, body, &correlation).instrument(span.clone());
            match tokio::time::timeout(ingress.limits.request_timeout, work).await {
                Ok(result) => result,
                Err(_) => Err(Reject::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    RejectReason::Timeout,
                    "request deadline exceeded",
                )),
            }
        }
    };
    ingress.metrics.request_seconds.observe(started.elapsed().as_secs_f64());
    let _enter = span.enter();
    let mut response = match result {
        Ok(body) => (StatusCode::OK, axum::Json(body)).into_response(),
        Err(reject) => {
            ingress.metrics.rejects.get_or_create(&RejectLabels { reason: reject.reason }).inc();
            tracing::warn!(status = reject.status.as_u16(), reason = ?reject.reason, field = reject.field.as_deref(), error = %reject.message, "webhook refused");
            let mut body =
                json!({"status": reject.status.as_u16(), "error": reject.message, "correlation_id": correlation});
            if let Some(field) = &reject.field {
                body["field"] = json!(field);
            }
            let mut response = (reject.status, axum::Json(body)).into_response();
            if reject.status == StatusCode::SERVICE_UNAVAILABLE {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            if reject.status == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer, Basic"));
            }
            response
        }
    };
    if let Ok(v) = HeaderValue::from_str(&correlation) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

async fn accept(
    ingress: &Ingress,
    headers: &HeaderMap,
    body: Body,
    correlation: &str,
) -> Result<serde_json::Value, Reject> {
    if !is_json(headers) {
        return Err(Reject::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RejectReason::UnsupportedMediaType,
            "content type must be application/json",
        ));
    }
    ingress.auth.check_authorization(headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes)).map_err(|_| {
        Reject::new(StatusCode::UNAUTHORIZED, RejectReason::Unauthorized, "missing or invalid credentials")
    })?;
    let limit = ingress.limits.max_body_bytes;
    let too_large = || {
        Reject::new(StatusCode::PAYLOAD_TOO_LARGE, RejectReason::TooLarge, format!("body larger than {limit} bytes"))
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| too_large())?;
    if let Some(name) = ingress.auth.signature_header() {
        ingress.auth.check_signature(headers.get(name).map(HeaderValue::as_bytes), &bytes).map_err(|_: Denied| {
            Reject::new(StatusCode::UNAUTHORIZED, RejectReason::BadSignature, "missing or invalid signature")
        })?;
    }
    let invalid = |e: PayloadError| Reject {
        status: StatusCode::BAD_REQUEST,
        reason: RejectReason::InvalidPayload,
        field: Some(e.field),
        message: e.reason,
    };
    let webhook = parse(&bytes).map_err(invalid)?;
    let ctx = RequestContext {
        correlation_id: correlation.to_owned(),
        source: ingress.source.clone(),
        now: jiff::Timestamp::now(),
    };
    let intents = map_webhook(webhook, &ingress.rules, &ctx).map_err(invalid)?;
    for alert in &intents.ingest {
        let status = if alert.status == sre_contracts::domain::v1::AlertStatus::Resolved as i32 {
            AlertStatusLabel::Resolved
        } else {
            AlertStatusLabel::Firing
        };
        ingress.metrics.alerts.get_or_create(&AlertLabels { status, severity: severity_label(alert.severity) }).inc();
    }
    let (envelopes, kinds) = encode(&intents)?;
    // While JetStream stores them only the encoded intents are needed: the body, the
    // parsed webhook and the messages are freed first, which keeps memory per request in
    // flight small.
    let alerts = intents.ingest.len();
    drop((bytes, intents));
    publish(ingress, alerts, &envelopes, &kinds).await
}

fn encode(intents: &Intents) -> Result<(Vec<Envelope>, Vec<IntentKind>), Reject> {
    let invalid = |e: sre_bus::PublishError| {
        Reject::new(StatusCode::SERVICE_UNAVAILABLE, RejectReason::BusUnavailable, e.to_string())
    };
    let mut envelopes = Vec::with_capacity(intents.ingest.len() + intents.create.len());
    let mut kinds = Vec::with_capacity(envelopes.capacity());
    for i in &intents.ingest {
        envelopes.push(Envelope::intent(i).map_err(invalid)?);
        kinds.push(IntentKind::IngestAlert);
    }
    for c in &intents.create {
        envelopes.push(Envelope::intent(c).map_err(invalid)?);
        kinds.push(IntentKind::CreateIncident);
    }
    Ok((envelopes, kinds))
}

fn severity_label(severity: i32) -> SeverityLabel {
    match Severity::try_from(severity).unwrap_or(Severity::Unspecified) {
        Severity::Critical => SeverityLabel::Critical,
        Severity::High => SeverityLabel::High,
        Severity::Medium => SeverityLabel::Medium,
        Severity::Low => SeverityLabel::Low,
        Severity::Info => SeverityLabel::Info,
        Severity::Unspecified => SeverityLabel::Unspecified,
    }
}

async fn publish(
    ingress: &Ingress,
    alerts: usize,
    envelopes: &[Envelope],
    kinds: &[IntentKind],
) -> Result<serde_json::Value, Reject> {
    let bus_error = |e: sre_bus::PublishError| {
        Reject::new(StatusCode::SERVICE_UNAVAILABLE, RejectReason::BusUnavailable, e.to_string())
    };
    let started = Instant::now();
    let results = ingress.publisher.publish_all(envelopes, Some(ingress.limits.publish_timeout)).await;
    ingress.metrics.publish_seconds.observe(started.elapsed().as_secs_f64());
    let (mut stored, mut duplicates, mut duplicate_alerts) = (0usize, 0usize, 0usize);
    let mut failure = None;
    for (kind, result) in kinds.iter().zip(results) {
        match result {
            Ok(p) => {
                let outcome = if p.duplicate { Stored::Duplicate } else { Stored::Stored };
                ingress.metrics.intents.get_or_create(&IntentLabels { kind: *kind, outcome }).inc();
                if p.duplicate {
                    duplicates += 1;
                    if *kind == IntentKind::IngestAlert {
                        duplicate_alerts += 1;
                    }
                } else {
                    stored += 1;
                }
            }
            Err(e) => failure = Some(e),
        }
    }
    ingress.metrics.duplicates.inc_by(duplicate_alerts as u64);
    if let Some(e) = failure {
        // Some intents may be stored already; Alertmanager's retry makes them duplicates.
        return Err(bus_error(e));
    }
    tracing::info!(alerts, stored, duplicates, "webhook accepted");
    Ok(json!({
        "status": "accepted",
        "alerts": alerts,
        "intents_stored": stored,
        "intents_duplicate": duplicates,
    }))
}
