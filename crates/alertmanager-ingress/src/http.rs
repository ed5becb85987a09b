//! The Alertmanager webhook: what is Alertmanager's on the shared inbound path
//! (`sre_runtime::inbound`, which does the capacity, deadline, body limit, publish and
//! answer for every webhook): JSON only, `Authorization` (bearer or basic), the optional
//! HMAC signature of the body, the v4 payload mapped to intents, and the ingress's metrics.
//!
//! Order of checks: capacity (503), content type (415), credentials (401), size (413),
//! signature (401), payload (400), then publish and wait for JetStream (503 when it does
//! not store everything in time). 200 only when every intent is stored or was already
//! stored (a duplicate).

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;
use sre_bus::IntentPublisher;
use sre_contracts::domain::v1::{Severity, Source};
use sre_runtime::inbound::{self, Accepted, Reason, Refusal, Webhook};

use crate::auth::{Auth, Denied};
use crate::config::Limits;
use crate::mapping::{RequestContext, Rules, map_webhook};
use crate::metrics::{
    AlertLabels, AlertStatusLabel, IngressMetrics, IntentKind, IntentLabels, RejectLabels, SeverityLabel, Stored,
};
use crate::payload::{PayloadError, parse};

/// Header a caller may set to choose the correlation id.
pub const REQUEST_ID_HEADER: &str = inbound::REQUEST_ID_HEADER;

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

/// The webhook route at `path`.
pub fn router(path: &str, ingress: Ingress) -> Router {
    let limits = inbound::Limits {
        max_body_bytes: ingress.limits.max_body_bytes,
        request_timeout: ingress.limits.request_timeout,
        publish_timeout: ingress.limits.publish_timeout,
        max_concurrent_requests: ingress.limits.max_concurrent_requests,
    };
    let publisher = ingress.publisher.clone();
    inbound::router(path, ingress, publisher, limits)
}

impl Webhook for Ingress {
    type Label = IntentKind;

    fn admit(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        inbound::require_json(headers)?;
        self.auth
            .check_authorization(headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes))
            .map_err(|_| Refusal::new(StatusCode::UNAUTHORIZED, Reason::Unauthorized, "missing or invalid credentials"))
    }

    async fn accept(
        &self,
        headers: &HeaderMap,
        bytes: Bytes,
        correlation: &str,
    ) -> Result<Accepted<IntentKind>, Refusal> {
        if let Some(name) = self.auth.signature_header() {
            self.auth.check_signature(headers.get(name).map(HeaderValue::as_bytes), &bytes).map_err(|_: Denied| {
                Refusal::new(StatusCode::UNAUTHORIZED, Reason::BadSignature, "missing or invalid signature")
            })?;
        }
        let invalid = |e: PayloadError| Refusal::invalid(e.field, e.reason);
        let webhook = parse(&bytes).map_err(invalid)?;
        let ctx = RequestContext {
            correlation_id: correlation.to_owned(),
            source: self.source.clone(),
            now: jiff::Timestamp::now(),
        };
        let intents = map_webhook(webhook, &self.rules, &ctx).map_err(invalid)?;
        for alert in &intents.ingest {
            let status = if alert.status == sre_contracts::domain::v1::AlertStatus::Resolved as i32 {
                AlertStatusLabel::Resolved
            } else {
                AlertStatusLabel::Firing
            };
            self.metrics.alerts.get_or_create(&AlertLabels { status, severity: severity_label(alert.severity) }).inc();
        }
        let mut accepted = Accepted {
            envelopes: Vec::with_capacity(intents.ingest.len() + intents.create.len()),
            labels: Vec::with_capacity(intents.ingest.len() + intents.create.len()),
            summary: serde_json::Map::new(),
        };
        for i in &intents.ingest {
            accepted.envelopes.push(inbound::encode(i)?);
            accepted.labels.push(IntentKind::IngestAlert);
        }
        for c in &intents.create {
            accepted.envelopes.push(inbound::encode(c)?);
            accepted.labels.push(IntentKind::CreateIncident);
        }
        accepted.summary.insert("alerts".into(), json!(intents.ingest.len()));
        Ok(accepted)
    }

    fn stored(&self, kind: IntentKind, duplicate: bool) {
        let outcome = if duplicate { Stored::Duplicate } else { Stored::Stored };
        self.metrics.intents.get_or_create(&IntentLabels { kind, outcome }).inc();
        if duplicate && kind == IntentKind::IngestAlert {
            self.metrics.duplicates.inc();
        }
    }

    fn refused(&self, reason: Reason) {
        self.metrics.rejects.get_or_create(&RejectLabels { reason }).inc();
    }

    fn timed(&self, request_seconds: f64, publish_seconds: Option<f64>) {
        self.metrics.request_seconds.observe(request_seconds);
        if let Some(s) = publish_seconds {
            self.metrics.publish_seconds.observe(s);
        }
    }
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
