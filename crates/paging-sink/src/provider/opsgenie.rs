//! Opsgenie Alert API v2: create with `alias` = incident id (one open alert per alias),
//! acknowledge and close by alias (`identifierType=alias`), `Authorization: GenieKey`.
//! Every write answers 202: accepted for asynchronous processing, not done. The request
//! id is kept as the page's reference; a 202 on acknowledge or close does not prove the
//! alias existed.
//!
//! Jira Service Management Operations' integration API, Opsgenie's successor, mirrors this
//! API path for path under `https://api.atlassian.com/jsm/ops/integration` with the same
//! `GenieKey` (an API integration's key) and the same asynchronous 202s: the same client
//! serves it ([`Opsgenie::jsm`]), under its own name in logs, metrics and errors.

use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sre_contracts::domain::v1::{IncidentCreated, Severity};
use sre_runtime::outbound::HttpClient;

use super::{
    Accepted, BoxFuture, Destination, FollowUp, Pager, VendorError, VendorPage, VendorStatus, clip, dedup_key,
    status_error,
};

/// Vendor name in logs, metrics and errors.
pub const NAME: &str = "opsgenie";
/// Jira Service Management Operations' name in logs, metrics and errors.
pub const JSM_NAME: &str = "jsm";
/// `alias` limit.
pub const ALIAS_MAX: usize = 512;
/// `message` limit.
pub const MESSAGE_MAX: usize = 130;
/// `description` limit.
pub const DESCRIPTION_MAX: usize = 15_000;
/// Tags per alert, and characters per tag.
pub const TAGS_MAX: (usize, usize) = (20, 50);
/// Total characters of `details`.
pub const DETAILS_MAX: usize = 8_000;
/// A note's limit.
pub const NOTE_MAX: usize = 25_000;

/// The client.
#[derive(Clone)]
pub struct Opsgenie {
    name: &'static str,
    http: HttpClient,
    base: String,
    api_key: SecretString,
}

impl std::fmt::Debug for Opsgenie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opsgenie").field("name", &self.name).field("base", &self.base).finish_non_exhaustive()
    }
}

/// Opsgenie's priority for ours: critical P1 … info P5.
pub fn priority(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "P1",
        Severity::High => "P2",
        Severity::Medium => "P3",
        Severity::Low => "P4",
        _ => "P5",
    }
}

/// Percent-encodes a path segment (RFC 3986 unreserved characters pass).
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The create request of `incident`, within Opsgenie's field limits: the route's (or the
/// section's) configured fields first where they compete for a limit.
pub fn create_body(incident: &IncidentCreated, team: Option<&str>, alert: &crate::alert_fields::Compiled) -> Value {
    let extra = alert.render(incident);
    let mut tags: Vec<String> = Vec::new();
    for t in std::iter::once(format!("severity:{}", priority_name(incident)))
        .chain(extra.tags.iter().cloned())
        .chain(incident.labels.iter().map(|(k, v)| format!("{k}:{v}")))
        .map(|t| clip(&t, TAGS_MAX.1))
    {
        if tags.len() < TAGS_MAX.0 && !tags.contains(&t) {
            tags.push(t);
        }
    }
    let mut details = serde_json::Map::new();
    let mut used = 0;
    for (k, v) in extra
        .details
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain([
            ("incident_id", incident.incident_id.as_str()),
            ("environment", incident.environment.as_str()),
            ("team", incident.team.as_str()),
            ("runbook_url", incident.runbook_url.as_str()),
            ("url", incident.url.as_str()),
        ])
        .chain(incident.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    {
        if v.is_empty() || details.contains_key(k) || used + k.len() + v.len() > DETAILS_MAX {
            continue;
        }
        used += k.len() + v.len();
        details.insert(k.to_owned(), json!(v));
    }
    let mut body = json!({
        "message": clip(if incident.title.is_empty() { &incident.incident_id } else { &incident.title }, MESSAGE_MAX),
        "alias": dedup_key(&incident.incident_id, ALIAS_MAX),
        "description": clip(&incident.description, DESCRIPTION_MAX),
        "tags": tags,
        "details": details,
        "source": super::CLIENT,
        "priority": extra.priority.clone().unwrap_or_else(|| {
            priority(Severity::try_from(incident.severity).unwrap_or(Severity::Unspecified)).to_owned()
        }),
    });
    match &extra.entity {
        Some(entity) => body["entity"] = json!(clip(entity, crate::alert_fields::ENTITY_MAX)),
        None if !incident.service.is_empty() => body["entity"] = json!(clip(&incident.service, 512)),
        None => {}
    }
    let mut responders: Vec<Value> = team.map(|t| json!({"type": "team", "name": t})).into_iter().collect();
    for r in extra.responders {
        if !responders.contains(&r) && responders.len() < crate::alert_fields::RESPONDERS_MAX {
            responders.push(r);
        }
    }
    if !responders.is_empty() {
        body["responders"] = json!(responders);
    }
    body
}

fn priority_name(incident: &IncidentCreated) -> &'static str {
    match Severity::try_from(incident.severity).unwrap_or(Severity::Unspecified) {
        Severity::Critical => "critical",
        Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low => "low",
        Severity::Info => "info",
        Severity::Unspecified => "unspecified",
    }
}

/// The page a Get Alert answer (`{"data": {...}}`) holds: closed is resolved,
/// `acknowledged: true` acknowledged, else open.
pub fn alert_page(answer: &Value) -> VendorPage {
    let Some(alert) = answer.get("data") else { return VendorPage::missing() };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    let report = alert.get("report");
    let closed = alert.get("status").and_then(Value::as_str) == Some("closed");
    let acknowledged = alert.get("acknowledged").and_then(Value::as_bool).unwrap_or(false);
    let (status, by) = if closed {
        (VendorStatus::Resolved, text(report.and_then(|r| r.get("closedBy"))))
    } else if acknowledged {
        (VendorStatus::Acknowledged, text(report.and_then(|r| r.get("acknowledgedBy"))))
    } else {
        (VendorStatus::Open, String::new())
    };
    VendorPage { status, id: text(alert.get("id")), url: String::new(), by }
}

impl Opsgenie {
    /// A client for `base` (`https://api.opsgenie.com` or `https://api.eu.opsgenie.com`).
    pub fn new(http: HttpClient, base: &str, api_key: SecretString) -> Self {
        Self { name: NAME, http, base: base.trim_end_matches('/').to_owned(), api_key }
    }

    /// A client of Jira Service Management Operations' integration API at `base`
    /// (`https://api.atlassian.com/jsm/ops/integration`).
    pub fn jsm(http: HttpClient, base: &str, api_key: SecretString) -> Self {
        Self { name: JSM_NAME, ..Self::new(http, base, api_key) }
    }

    async fn post(&self, path: &str, body: Value) -> Result<Accepted, VendorError> {
        let answer = self.call(http::Method::POST, path, Some(body)).await?;
        let reference = serde_json::from_slice::<Value>(&answer.body)
            .ok()
            .and_then(|v| v.get("requestId").and_then(|k| k.as_str()).map(str::to_owned))
            .unwrap_or_default();
        Ok(Accepted { reference })
    }

    async fn call(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<sre_runtime::outbound::Answer, VendorError> {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::AUTHORIZATION, format!("GenieKey {}", self.api_key.expose_secret()))
            .body(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default()))
            .map_err(|e| {
                VendorError::Invalid(format!("request: {}", e.to_string().replace(self.api_key.expose_secret(), "***")))
            })?;
        let answer =
            self.http.send(request).await.map_err(|source| VendorError::Transport { provider: self.name, source })?;
        if !answer.status.is_success() {
            return Err(status_error(self.name, &answer));
        }
        Ok(answer)
    }
}

impl Pager for Opsgenie {
    fn name(&self) -> &'static str {
        self.name
    }

    fn trigger<'a>(
        &'a self,
        destination: &'a Destination,
        incident: &'a IncidentCreated,
    ) -> BoxFuture<'a, Result<Accepted, VendorError>> {
        Box::pin(async move {
            self.post("/v2/alerts", create_body(incident, destination.team.as_deref(), &destination.alert)).await
        })
    }

    fn follow_up<'a>(
        &'a self,
        _destination: &'a Destination,
        incident_id: &'a str,
        action: FollowUp,
        note: &'a str,
    ) -> BoxFuture<'a, Result<Accepted, VendorError>> {
        Box::pin(async move {
            let verb = match action {
                FollowUp::Acknowledge => "acknowledge",
                FollowUp::Resolve => "close",
            };
            let alias = encode_segment(&dedup_key(incident_id, ALIAS_MAX));
            let mut body = json!({"source": super::CLIENT});
            if !note.is_empty() {
                body["note"] = json!(clip(note, 25_000));
            }
            self.post(&format!("/v2/alerts/{alias}/{verb}?identifierType=alias"), body).await
        })
    }

    fn note<'a>(&'a self, incident_id: &'a str, text: &'a str) -> BoxFuture<'a, Result<(), VendorError>> {
        Box::pin(async move {
            let alias = encode_segment(&dedup_key(incident_id, ALIAS_MAX));
            let body = json!({"note": sre_sink::notes::fit(text, NOTE_MAX), "source": super::CLIENT});
            self.post(&format!("/v2/alerts/{alias}/notes?identifierType=alias"), body).await.map(|_| ())
        })
    }

    fn page<'a>(&'a self, incident_id: &'a str) -> BoxFuture<'a, Result<VendorPage, VendorError>> {
        Box::pin(async move {
            let alias = encode_segment(&dedup_key(incident_id, ALIAS_MAX));
            match self.call(http::Method::GET, &format!("/v2/alerts/{alias}?identifierType=alias"), None).await {
                Ok(answer) => {
                    let v: Value = serde_json::from_slice(&answer.body)
                        .map_err(|e| VendorError::Invalid(format!("{} answer: {e}", self.name)))?;
                    Ok(alert_page(&v))
                }
                Err(VendorError::Status { status: 404, .. }) => Ok(VendorPage::missing()),
                Err(e) => Err(e),
            }
        })
    }

    fn notes<'a>(&'a self, incident_id: &'a str) -> BoxFuture<'a, Result<Vec<String>, VendorError>> {
        Box::pin(async move {
            let alias = encode_segment(&dedup_key(incident_id, ALIAS_MAX));
            let path = format!("/v2/alerts/{alias}/notes?identifierType=alias&order=desc&limit=100");
            let answer = self.call(http::Method::GET, &path, None).await?;
            let v: Value = serde_json::from_slice(&answer.body)
                .map_err(|e| VendorError::Invalid(format!("{} answer: {e}", self.name)))?;
            Ok(v.get("data")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|n| n.get("note").and_then(Value::as_str).map(str::to_owned))
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_create_request_keeps_opsgenies_limits() {
        let incident = IncidentCreated {
            incident_id: "inc/42 ü".into(),
            title: "t".repeat(300),
            severity: Severity::Critical as i32,
            labels: (0..40).map(|i| (format!("label-{i:02}"), "v".repeat(60))).collect(),
            ..Default::default()
        };
        let body = create_body(&incident, Some("payments"), &crate::alert_fields::Compiled::default());
        assert_eq!(body["message"].as_str().map(|m| m.chars().count()), Some(MESSAGE_MAX));
        assert_eq!(body["priority"], "P1");
        assert_eq!(body["alias"], "inc/42 ü");
        assert_eq!(body["responders"][0]["name"], "payments");
        let tags = body["tags"].as_array().expect("tags");
        assert_eq!(tags.len(), TAGS_MAX.0);
        assert!(tags.iter().all(|t| t.as_str().is_some_and(|t| t.chars().count() <= TAGS_MAX.1)));
        let details: usize = body["details"]
            .as_object()
            .expect("details")
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        assert!(details <= DETAILS_MAX);
        assert_eq!(encode_segment("inc/42 ü"), "inc%2F42%20%C3%BC");
    }
}
