//! PagerDuty Events API v2: `POST /v2/enqueue`. The routing key in the body is the
//! credential (no auth header). `dedup_key` is the incident id, so a repeated trigger joins
//! the open alert instead of paging again; acknowledge and resolve must carry the same
//! routing key as the trigger, or PagerDuty drops them silently (202 all the same).

use bytes::Bytes;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sre_contracts::domain::v1::{IncidentCreated, Severity};
use sre_runtime::outbound::HttpClient;

use super::{Accepted, BoxFuture, Destination, FollowUp, Pager, VendorError, clip, dedup_key, status_error};

/// Vendor name in logs, metrics and errors.
pub const NAME: &str = "pagerduty";
/// `dedup_key` limit.
pub const DEDUP_KEY_MAX: usize = 255;
/// `payload.summary` limit.
pub const SUMMARY_MAX: usize = 1024;

/// The client.
#[derive(Debug, Clone)]
pub struct PagerDuty {
    http: HttpClient,
    base: String,
}

impl PagerDuty {
    /// A client for `base` (`https://events.pagerduty.com`).
    pub fn new(http: HttpClient, base: &str) -> Self {
        Self { http, base: base.trim_end_matches('/').to_owned() }
    }

    async fn enqueue(&self, body: Value) -> Result<Accepted, VendorError> {
        let request = http::Request::post(format!("{}/v2/enqueue", self.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Bytes::from(body.to_string()))
            .map_err(|e| VendorError::Invalid(e.to_string()))?;
        let answer =
            self.http.send(request).await.map_err(|source| VendorError::Transport { provider: NAME, source })?;
        if !answer.status.is_success() {
            return Err(status_error(NAME, &answer));
        }
        let reference = serde_json::from_slice::<Value>(&answer.body)
            .ok()
            .and_then(|v| v.get("dedup_key").and_then(|k| k.as_str()).map(str::to_owned))
            .unwrap_or_default();
        Ok(Accepted { reference })
    }
}

/// PagerDuty's severity for ours: critical → critical, high → error, medium → warning,
/// the rest → info.
pub fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::High => "error",
        Severity::Medium => "warning",
        _ => "info",
    }
}

fn routing_key(destination: &Destination) -> Result<&str, VendorError> {
    destination
        .routing_key
        .as_ref()
        .map(|k| k.expose_secret())
        .ok_or_else(|| VendorError::Invalid("pagerduty route has no routing key".to_owned()))
}

/// The trigger event of `incident`.
pub fn trigger_body(routing_key: &str, incident: &IncidentCreated) -> Value {
    let mut links = Vec::new();
    if !incident.url.is_empty() {
        links.push(json!({"href": incident.url, "text": "Incident"}));
    }
    if !incident.runbook_url.is_empty() {
        links.push(json!({"href": incident.runbook_url, "text": "Runbook"}));
    }
    let timestamp =
        incident.created_at.as_ref().and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok().map(|t| t.to_string()));
    let mut payload = json!({
        "summary": clip(if incident.title.is_empty() { &incident.incident_id } else { &incident.title }, SUMMARY_MAX),
        "source": if incident.service.is_empty() { "sre-platform" } else { &incident.service },
        "severity": severity(Severity::try_from(incident.severity).unwrap_or(Severity::Unspecified)),
        "custom_details": {
            "incident_id": incident.incident_id,
            "description": incident.description,
            "environment": incident.environment,
            "team": incident.team,
            "labels": incident.labels,
        },
    });
    if let Some(ts) = timestamp {
        payload["timestamp"] = json!(ts);
    }
    if !incident.service.is_empty() {
        payload["component"] = json!(incident.service);
    }
    if !incident.environment.is_empty() {
        payload["group"] = json!(incident.environment);
    }
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(&incident.incident_id, DEDUP_KEY_MAX),
        "client": "sre-integration",
        "payload": payload,
        "links": links,
    })
}

impl Pager for PagerDuty {
    fn name(&self) -> &'static str {
        NAME
    }

    fn trigger<'a>(
        &'a self,
        destination: &'a Destination,
        incident: &'a IncidentCreated,
    ) -> BoxFuture<'a, Result<Accepted, VendorError>> {
        Box::pin(async move { self.enqueue(trigger_body(routing_key(destination)?, incident)).await })
    }

    fn follow_up<'a>(
        &'a self,
        destination: &'a Destination,
        incident_id: &'a str,
        action: FollowUp,
        _note: &'a str,
    ) -> BoxFuture<'a, Result<Accepted, VendorError>> {
        Box::pin(async move {
            let body = json!({
                "routing_key": routing_key(destination)?,
                "event_action": match action { FollowUp::Acknowledge => "acknowledge", FollowUp::Resolve => "resolve" },
                "dedup_key": dedup_key(incident_id, DEDUP_KEY_MAX),
            });
            self.enqueue(body).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trigger_has_the_contracts_shape_and_limits() {
        let incident = IncidentCreated {
            incident_id: "inc-42".into(),
            title: "x".repeat(2000),
            severity: Severity::High as i32,
            service: "checkout-api".into(),
            environment: "production".into(),
            runbook_url: "https://runbooks.example.com/checkout".into(),
            created_at: Some(prost_types::Timestamp { seconds: 1_795_000_000, nanos: 0 }),
            ..Default::default()
        };
        let body = trigger_body("R0UT1NGKEY0123456789ABCDEFGHIJKL", &incident);
        assert_eq!(body["event_action"], "trigger");
        assert_eq!(body["dedup_key"], "inc-42");
        assert_eq!(body["payload"]["severity"], "error");
        assert_eq!(body["payload"]["source"], "checkout-api");
        assert_eq!(body["payload"]["summary"].as_str().map(|s| s.chars().count()), Some(SUMMARY_MAX));
        assert_eq!(body["links"][0]["text"], "Runbook");
        assert!(body["payload"]["timestamp"].as_str().is_some_and(|t| t.starts_with("2026-")));
    }
}
