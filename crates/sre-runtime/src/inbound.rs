//! One inbound path for every webhook an adapter receives (Alertmanager's, and the vendors'
//! of two-way sync): what the vendors rely on is the same everywhere, so it is written once.
//!
//! Order: capacity (503), [`Webhook::admit`] on the headers (content type, credentials),
//! body size (413, from `Content-Length` and while reading), [`Webhook::accept`] on the raw
//! body (signature first, then the payload into intents; 400 naming the field), then
//! publish and wait for JetStream: 200 only when every intent is stored or was already
//! stored (a duplicate, by `Nats-Msg-Id`), 503 with `Retry-After` when the bus does not store
//! them in time or the whole request passes its deadline, so the sender retries. Every
//! answer carries the correlation id (`X-Request-Id`, the caller's when it sent a sane one);
//! every refusal is JSON with `status`, `error` and, for a payload, `field`.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use prometheus_client::encoding::EncodeLabelValue;
use serde_json::json;
use sre_bus::{Envelope, IntentPublisher};
use tokio::sync::Semaphore;
use tracing::Instrument;

/// Header a caller may set to choose the correlation id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Why a request was refused (a metric label: every adapter names them alike).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Reason {
    /// Not JSON, or not the payload expected (400).
    InvalidPayload,
    /// Wrong or missing credentials (401).
    Unauthorized,
    /// Wrong or missing signature (401).
    BadSignature,
    /// Body over the limit (413).
    TooLarge,
    /// Not `application/json` (415).
    UnsupportedMediaType,
    /// Too many requests at once (503).
    Overloaded,
    /// JetStream did not store the intents in time (503).
    BusUnavailable,
    /// The request took longer than the deadline (503).
    Timeout,
    /// What the delivery names is still being recorded by this service, e.g. a ticket whose
    /// key is not written yet (503): the sender retries. Not a fault of the bus.
    NotYetRecorded,
}

impl Reason {
    /// Every reason, e.g. to create each series at 0.
    pub const ALL: [Reason; 9] = [
        Reason::InvalidPayload,
        Reason::Unauthorized,
        Reason::BadSignature,
        Reason::TooLarge,
        Reason::UnsupportedMediaType,
        Reason::Overloaded,
        Reason::BusUnavailable,
        Reason::Timeout,
        Reason::NotYetRecorded,
    ];
}

/// A header's value as text (absent, or not text: `None`).
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A refusal: status, why, what was wrong and where.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// HTTP status.
    pub status: StatusCode,
    /// Why (the metric label).
    pub reason: Reason,
    /// The payload field at fault, when there is one.
    pub field: Option<String>,
    /// What was wrong (never a secret).
    pub message: String,
}

impl Refusal {
    /// A refusal without a field.
    pub fn new(status: StatusCode, reason: Reason, message: impl Into<String>) -> Self {
        Self { status, reason, field: None, message: message.into() }
    }

    /// 503: the bus (or a record on it) is away; the sender retries.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, Reason::BusUnavailable, message)
    }

    /// 503: what the delivery names is still being recorded here; the sender retries.
    pub fn not_yet_recorded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, Reason::NotYetRecorded, message)
    }

    /// 400 for the payload field `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            reason: Reason::InvalidPayload,
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

/// What a webhook carried, ready to publish.
#[derive(Debug, Default)]
pub struct Accepted<L> {
    /// The intents, encoded.
    pub envelopes: Vec<Envelope>,
    /// One label per envelope, handed back to [`Webhook::stored`].
    pub labels: Vec<L>,
    /// Fields added to the 200 answer and the log line (e.g. `alerts`).
    pub summary: serde_json::Map<String, serde_json::Value>,
}

/// A webhook: what differs between senders. The shared path does the rest.
pub trait Webhook: Send + Sync + 'static {
    /// A label per intent (its kind), for the webhook's own metrics.
    type Label: Copy + Send + Sync + 'static;

    /// Checks the headers before the body is read (content type, credentials). By default:
    /// JSON only (415).
    fn admit(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        require_json(headers)
    }

    /// Turns the raw body into intents: authenticity first (a signature is over these exact
    /// bytes), then the payload. An event that is valid but asks for nothing (unknown to us,
    /// our own echo) is `Ok` with no envelopes: answered 200, nothing published.
    /// Asynchronous: a receiver may look up what it sent the vendor (a KV record).
    fn accept(
        &self,
        headers: &HeaderMap,
        body: Bytes,
        correlation: &str,
    ) -> impl std::future::Future<Output = Result<Accepted<Self::Label>, Refusal>> + Send;

    /// One intent stored (`duplicate`: it already was).
    fn stored(&self, _label: Self::Label, _duplicate: bool) {}

    /// A request refused, before it is answered.
    fn refused(&self, _reason: Reason) {}

    /// The whole request's time, and the wait for JetStream when it got that far.
    fn timed(&self, _request_seconds: f64, _publish_seconds: Option<f64>) {}

    /// The `WWW-Authenticate` challenge of a 401.
    fn challenge(&self) -> &'static str {
        "Bearer, Basic"
    }
}

/// The limits of one webhook route.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Whole-request deadline, body reading included (503 beyond, so the sender retries).
    pub request_timeout: Duration,
    /// How long to wait for JetStream to store a request's intents (503 beyond).
    pub publish_timeout: Duration,
    /// Requests handled at once; more are refused with 503.
    pub max_concurrent_requests: usize,
}

struct Shared<W> {
    webhook: W,
    publisher: IntentPublisher,
    limits: Limits,
    permits: Semaphore,
}

/// The route `POST path` for `webhook`, publishing with `publisher`.
pub fn router<W: Webhook>(path: &str, webhook: W, publisher: IntentPublisher, limits: Limits) -> Router {
    let permits = Semaphore::new(limits.max_concurrent_requests);
    let shared = Arc::new(Shared { webhook, publisher, limits, permits });
    Router::new().route(path, post(handle::<W>)).with_state(shared)
}

/// The caller's `X-Request-Id` when it is sane, else a new one.
pub fn correlation_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()))
}

/// Whether the request says its body is JSON.
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// 415 unless the request says its body is JSON.
pub fn require_json(headers: &HeaderMap) -> Result<(), Refusal> {
    if is_json(headers) {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reason::UnsupportedMediaType,
            "content type must be application/json",
        ))
    }
}

async fn handle<W: Webhook>(State(shared): State<Arc<Shared<W>>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let correlation = correlation_id(&headers);
    let span = tracing::info_span!(sre_contracts::spans::WEBHOOK, correlation_id = %correlation, otel.kind = "server");
    crate::telemetry::incoming_trace(&span, &headers);
    let mut publish_seconds = None;
    let result = match shared.permits.try_acquire() {
        Err(_) => Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, Reason::Overloaded, "too many requests in flight")),
        Ok(_permit) => {
            let work = receive(&shared, &headers, body, &correlation, &mut publish_seconds).instrument(span.clone());
            match tokio::time::timeout(shared.limits.request_timeout, work).await {
                Ok(result) => result,
                Err(_) => {
                    Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, Reason::Timeout, "request deadline exceeded"))
                }
            }
        }
    };
    shared.webhook.timed(started.elapsed().as_secs_f64(), publish_seconds);
    let _enter = span.enter();
    let mut response = match result {
        Ok(body) => (StatusCode::OK, axum::Json(body)).into_response(),
        Err(refusal) => {
            shared.webhook.refused(refusal.reason);
            tracing::warn!(status = refusal.status.as_u16(), reason = ?refusal.reason, field = refusal.field.as_deref(),
                error = %refusal.message, "webhook refused");
            let mut body =
                json!({"status": refusal.status.as_u16(), "error": refusal.message, "correlation_id": correlation});
            if let Some(field) = &refusal.field {
                body["field"] = json!(field);
            }
            let mut response = (refusal.status, axum::Json(body)).into_response();
            if refusal.status == StatusCode::SERVICE_UNAVAILABLE {
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            if refusal.status == StatusCode::UNAUTHORIZED {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(shared.webhook.challenge()));
            }
            response
        }
    };
    if let Ok(v) = HeaderValue::from_str(&correlation) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

async fn receive<W: Webhook>(
    shared: &Shared<W>,
    headers: &HeaderMap,
    body: Body,
    correlation: &str,
    publish_seconds: &mut Option<f64>,
) -> Result<serde_json::Value, Refusal> {
    shared.webhook.admit(headers)?;
    let limit = shared.limits.max_body_bytes;
    let too_large =
        || Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, Reason::TooLarge, format!("body larger than {limit} bytes"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| too_large())?;
    // The body and the parsed payload are freed inside `accept`: while JetStream stores the
    // intents only their encoded form is held, which keeps memory per request small.
    let accepted = shared.webhook.accept(headers, bytes, correlation).await?;
    let started = Instant::now();
    let results = shared.publisher.publish_all(&accepted.envelopes, Some(shared.limits.publish_timeout)).await;
    *publish_seconds = Some(started.elapsed().as_secs_f64());
    let (mut stored, mut duplicates) = (0usize, 0usize);
    let mut failure = None;
    for (label, result) in accepted.labels.iter().zip(results) {
        match result {
            Ok(p) => {
                shared.webhook.stored(*label, p.duplicate);
                if p.duplicate {
                    duplicates += 1;
                } else {
                    stored += 1;
                }
            }
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        // Some intents may be stored already; the sender's retry makes them duplicates.
        return Err(Refusal::new(StatusCode::SERVICE_UNAVAILABLE, Reason::BusUnavailable, e.to_string()));
    }
    let mut answer = serde_json::Map::new();
    answer.insert("status".into(), json!("accepted"));
    answer.extend(accepted.summary);
    answer.insert("intents_stored".into(), json!(stored));
    answer.insert("intents_duplicate".into(), json!(duplicates));
    tracing::info!(stored, duplicates, summary = %serde_json::Value::Object(answer.clone()), "webhook accepted");
    Ok(serde_json::Value::Object(answer))
}

/// Encodes `intents` as envelopes for [`Accepted`]; an intent that cannot be encoded (not
/// expected) refuses the request with 503, so nothing half-published is answered 200.
pub fn encode<M: sre_contracts::Intent>(intent: &M) -> Result<Envelope, Refusal> {
    Envelope::intent(intent)
        .map_err(|e| Refusal::new(StatusCode::SERVICE_UNAVAILABLE, Reason::BusUnavailable, e.to_string()))
}

/// Whether any of `signatures` (hex, as the vendor sends it: PagerDuty one per active
/// secret, Jira and GitHub one) is the HMAC-SHA256 of `body` under any of `secrets` (several
/// while a secret rotates). Over the raw bytes received; each comparison is constant-time
/// (`Mac::verify_slice`), and a signature that is not hex matches nothing.
pub fn signed_by_any<'a>(
    secrets: &[secrecy::SecretString],
    body: &[u8],
    signatures: impl IntoIterator<Item = &'a str>,
) -> bool {
    use hmac::{Hmac, Mac};
    use secrecy::ExposeSecret;
    let signatures: Vec<Vec<u8>> =
        signatures.into_iter().filter_map(|s| hex::decode(s.trim().to_ascii_lowercase()).ok()).collect();
    let mut matched = false;
    for secret in secrets {
        let Ok(mac) = Hmac::<sha2::Sha256>::new_from_slice(secret.expose_secret().as_bytes()) else { continue };
        let mac = mac.chain_update(body);
        for s in &signatures {
            // No early exit: the time taken does not say which one matched.
            matched |= mac.clone().verify_slice(s).is_ok();
        }
    }
    matched
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_matches_under_any_secret() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let secrets = [secrecy::SecretString::from("old"), secrecy::SecretString::from("Jefe")];
        assert!(signed_by_any(&secrets, b"what do ya want for nothing?", ["nothex", sig]));
        assert!(signed_by_any(&secrets, b"what do ya want for nothing?", [sig.to_ascii_uppercase().as_str()]));
        assert!(!signed_by_any(&secrets, b"what do ya want for nothing!", [sig]));
        assert!(!signed_by_any(&secrets[..1], b"what do ya want for nothing?", [sig]));
        assert!(!signed_by_any(&secrets, b"what do ya want for nothing?", std::iter::empty::<&str>()));
    }
}
