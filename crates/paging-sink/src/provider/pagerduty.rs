//! PagerDuty Events API v2: `POST /v2/enqueue`. The routing key in the body is the
//! credential (no auth header). `dedup_key` is the incident id, so a repeated trigger joins
//! the open alert instead of paging again; acknowledge and resolve must carry the same
//! routing key as the trigger, or PagerDuty drops them silently (202 all the same).
//!
//! Notes need the REST API (`Authorization: Token token=<key>`, a `From` user): the
//! incident is found by its `incident_key` (our dedup key; the newest one when a reopen
//! opened another), then `POST /incidents/{id}/notes`. Without a REST key no note is sent.

use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sre_contracts::domain::v1::{IncidentCreated, Severity};
use sre_runtime::outbound::HttpClient;
use sre_sink::template::Template;

use super::{
    Accepted, BoxFuture, Destination, FollowUp, Pager, VendorError, VendorPage, VendorStatus, clip, dedup_key,
    status_error,
};

/// Vendor name in logs, metrics and errors.
pub const NAME: &str = "pagerduty";
/// `dedup_key` limit.
pub const DEDUP_KEY_MAX: usize = 255;
/// `payload.summary` limit.
pub const SUMMARY_MAX: usize = 1024;
/// The largest event the sink sends (PagerDuty takes 512 KB; Alertmanager keeps to 512,000
/// bytes, and so do we).
pub const EVENT_MAX: usize = 512_000;

/// A note's limit (PagerDuty's incident notes take 25,000 characters).
pub const NOTE_MAX: usize = 25_000;

/// The client.
#[derive(Debug, Clone)]
pub struct PagerDuty {
    http: HttpClient,
    base: String,
    rest: Option<Rest>,
    fields: Fields,
}

/// The REST API: its base URL, key and the user the calls act as.
#[derive(Clone)]
pub struct Rest {
    /// `https://api.pagerduty.com`.
    pub base: String,
    /// The REST API key.
    pub key: SecretString,
    /// The `From` user's email.
    pub from: String,
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest").field("base", &self.base).field("from", &self.from).finish_non_exhaustive()
    }
}

impl PagerDuty {
    /// A client for `base` (`https://events.pagerduty.com`), with the REST API when given,
    /// and the team's event `fields`.
    pub fn new(http: HttpClient, base: &str, rest: Option<Rest>, fields: Fields) -> Self {
        let rest = rest.map(|r| Rest { base: r.base.trim_end_matches('/').to_owned(), ..r });
        Self { http, base: base.trim_end_matches('/').to_owned(), rest, fields }
    }

    fn rest(&self) -> Result<&Rest, VendorError> {
        self.rest.as_ref().ok_or_else(|| VendorError::Invalid("no PagerDuty REST API key configured".to_owned()))
    }

    /// One REST call; the answer's JSON.
    async fn rest_call(&self, method: http::Method, path: &str, body: Option<Value>) -> Result<Value, VendorError> {
        let rest = self.rest()?;
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", rest.base))
            .header(http::header::ACCEPT, "application/vnd.pagerduty+json;version=2")
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::AUTHORIZATION, format!("Token token={}", rest.key.expose_secret()))
            .header("From", &rest.from)
            .body(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default()))
            .map_err(|e| {
                VendorError::Invalid(format!("request: {}", e.to_string().replace(rest.key.expose_secret(), "***")))
            })?;
        let answer =
            self.http.send(request).await.map_err(|source| VendorError::Transport { provider: NAME, source })?;
        if !answer.status.is_success() {
            return Err(sre_runtime::outbound::status_error(NAME, &answer, |v| {
                let e = v.get("error")?;
                Some(format!(
                    "{} {}",
                    e.get("message")?.as_str()?,
                    e.get("errors").map(|x| x.to_string()).unwrap_or_default()
                ))
            }));
        }
        serde_json::from_slice(&answer.body).map_err(|e| VendorError::Invalid(format!("pagerduty answer: {e}")))
    }

    /// The PagerDuty incident of `incident_id`: the open one, else the newest.
    async fn incident(&self, incident_id: &str) -> Result<String, VendorError> {
        let key = dedup_key(incident_id, DEDUP_KEY_MAX);
        let query = format!("/incidents?incident_key={}&date_range=all&limit=100", encode_query(&key));
        let answer = self.rest_call(http::Method::GET, &query, None).await?;
        pick_incident(&answer)
            .ok_or_else(|| VendorError::Invalid(format!("no PagerDuty incident has incident_key {key}")))
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

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn encode_query(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Of the incidents a `GET /incidents` answered, the one a note belongs on: an open one,
/// else the newest (a reopen opens another under the same key).
pub fn pick_incident(answer: &Value) -> Option<String> {
    let incidents = answer.get("incidents")?.as_array()?;
    let created = |i: &Value| i.get("created_at").and_then(Value::as_str).unwrap_or_default().to_owned();
    let open = incidents.iter().filter(|i| i.get("status").and_then(Value::as_str) != Some("resolved"));
    open.max_by_key(|i| created(i))
        .or_else(|| incidents.iter().max_by_key(|i| created(i)))
        .and_then(|i| i.get("id")?.as_str().map(str::to_owned))
}

/// Pages of a hundred incidents read at most per query in one reconcile pass.
const LIST_PAGES: usize = 50;

/// The page an incidents list holds (`GET /incidents?incident_key=`): the open incident,
/// else the newest; `Missing` when there is none.
pub fn page_of(answer: &Value) -> VendorPage {
    let incidents = answer.get("incidents").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let created = |i: &&Value| i.get("created_at").and_then(Value::as_str).unwrap_or_default().to_owned();
    let status = |i: &Value| i.get("status").and_then(Value::as_str).unwrap_or_default().to_owned();
    let open = incidents.iter().filter(|i| status(i) != "resolved").max_by_key(created);
    let Some(incident) = open.or_else(|| incidents.iter().max_by_key(created)) else { return VendorPage::missing() };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    VendorPage {
        status: match status(incident).as_str() {
            "acknowledged" => VendorStatus::Acknowledged,
            "resolved" => VendorStatus::Resolved,
            _ => VendorStatus::Open,
        },
        id: text(incident.get("id")),
        url: text(incident.get("html_url")),
        by: text(incident.get("last_status_change_by").and_then(|b| b.get("summary"))),
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

/// The event fields a team sets (`client`, `client_url`, `class`, `images`), compiled from
/// `paging_integration.pagerduty`.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    client: Option<Template>,
    client_url: Option<Template>,
    class: Option<Template>,
    images: Vec<(Template, Option<Template>, Option<Template>)>,
}

impl Fields {
    /// The fields, compiled (`paging_integration.pagerduty`'s, by the configuration).
    pub fn new(
        client: Option<Template>,
        client_url: Option<Template>,
        class: Option<Template>,
        images: Vec<(Template, Option<Template>, Option<Template>)>,
    ) -> Self {
        Self { client, client_url, class, images }
    }
}

/// The trigger event of `incident`, with the team's `fields`.
pub fn trigger_body(routing_key: &str, incident: &IncidentCreated, fields: &Fields) -> Value {
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
        "source": if incident.service.is_empty() { "sre-platform".to_owned() } else { clip(&incident.service, 255) },
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
        payload["component"] = json!(clip(&incident.service, 255));
    }
    if !incident.environment.is_empty() {
        payload["group"] = json!(clip(&incident.environment, 255));
    }
    let render = |t: &Option<Template>| t.as_ref().map(|t| t.render(incident)).filter(|v| !v.is_empty());
    if let Some(class) = render(&fields.class) {
        payload["class"] = json!(clip(&class, 255));
    }
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(&incident.incident_id, DEDUP_KEY_MAX),
        "client": render(&fields.client).map_or_else(|| super::CLIENT.to_owned(), |c| clip(&c, 255)),
        "payload": payload,
        "links": links,
    });
    if let Some(url) = render(&fields.client_url) {
        event["client_url"] = json!(url);
    }
    // An image whose URL did not come out as https:// (an empty label) is left out.
    let images: Vec<Value> = fields
        .images
        .iter()
        .filter_map(|(src, href, alt)| {
            let src = src.render(incident);
            src.starts_with("https://").then(|| {
                let mut image = json!({"src": src});
                if let Some(h) = render(href) {
                    image["href"] = json!(h);
                }
                if let Some(a) = render(alt) {
                    image["alt"] = json!(a);
                }
                image
            })
        })
        .collect();
    if !images.is_empty() {
        event["images"] = json!(images);
    }
    // Over PagerDuty's limit the event would be refused and the page lost: send it with
    // its custom details left out, saying so (as Alertmanager does), never not at all.
    let size = serde_json::to_vec(&event).map_or(0, |b| b.len());
    if size > EVENT_MAX {
        event["payload"]["custom_details"] = json!({
            "incident_id": incident.incident_id,
            "note": format!(
                "custom details left out: the event was {size} bytes, over PagerDuty's {EVENT_MAX}; \
                 the whole incident is in the SRE platform"
            ),
        });
    }
    event
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
        Box::pin(async move { self.enqueue(trigger_body(routing_key(destination)?, incident, &self.fields)).await })
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

    fn cannot_note(&self) -> Option<&'static str> {
        self.rest.is_none().then_some("notes need a PagerDuty REST API key (paging_integration.pagerduty.api_key_ref)")
    }

    fn note<'a>(&'a self, incident_id: &'a str, text: &'a str) -> BoxFuture<'a, Result<(), VendorError>> {
        Box::pin(async move {
            let id = self.incident(incident_id).await?;
            // The mark first: PagerDuty's webhook of a long note is trimmed, and the copy
            // that comes back must still say it is ours.
            let content = sre_sink::notes::mark_first(&sre_sink::notes::fit(text, NOTE_MAX));
            let body = json!({"note": {"content": content}});
            self.rest_call(http::Method::POST, &format!("/incidents/{id}/notes"), Some(body)).await.map(|_| ())
        })
    }

    fn cannot_read(&self) -> Option<&'static str> {
        self.rest.is_none().then_some("no REST API key (pagerduty.api_key_ref): its pages are not reconciled")
    }

    fn page<'a>(&'a self, incident_id: &'a str) -> BoxFuture<'a, Result<VendorPage, VendorError>> {
        Box::pin(async move {
            let key = dedup_key(incident_id, DEDUP_KEY_MAX);
            let query = format!("/incidents?incident_key={}&date_range=all&limit=100", encode_query(&key));
            Ok(page_of(&self.rest_call(http::Method::GET, &query, None).await?))
        })
    }

    fn pages<'a>(
        &'a self,
        incident_ids: &'a [String],
    ) -> BoxFuture<'a, Result<Option<std::collections::HashMap<String, VendorPage>>, VendorError>> {
        Box::pin(async move {
            if self.rest.is_none() {
                return Ok(None);
            }
            let since = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(25)).strftime("%Y-%m-%dT%H:%M:%SZ");
            let mut incidents: Vec<Value> = Vec::new();
            // Open ones whenever they opened; resolved ones of the last day.
            for query in [
                "date_range=all&statuses[]=triggered&statuses[]=acknowledged".to_owned(),
                format!("since={since}&statuses[]=resolved"),
            ] {
                for page in 0..LIST_PAGES {
                    let path = format!("/incidents?{query}&limit=100&offset={}&total=false", page * 100);
                    let answer = self.rest_call(http::Method::GET, &path, None).await?;
                    incidents.extend(answer.get("incidents").and_then(Value::as_array).into_iter().flatten().cloned());
                    if answer.get("more").and_then(Value::as_bool) != Some(true) {
                        break;
                    }
                }
            }
            let mut by_key: std::collections::HashMap<String, Vec<Value>> = std::collections::HashMap::new();
            for incident in incidents {
                if let Some(key) = incident.get("incident_key").and_then(Value::as_str) {
                    by_key.entry(key.to_owned()).or_default().push(incident);
                }
            }
            Ok(Some(
                incident_ids
                    .iter()
                    .filter_map(|id| {
                        let found = by_key.get(&dedup_key(id, DEDUP_KEY_MAX))?;
                        Some((id.clone(), page_of(&json!({ "incidents": found }))))
                    })
                    .collect(),
            ))
        })
    }

    fn notes<'a>(&'a self, incident_id: &'a str) -> BoxFuture<'a, Result<Vec<String>, VendorError>> {
        Box::pin(async move {
            let id = self.incident(incident_id).await?;
            let answer = self.rest_call(http::Method::GET, &format!("/incidents/{id}/notes"), None).await?;
            Ok(answer
                .get("notes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|n| n.get("content").and_then(Value::as_str).map(str::to_owned))
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_team_sets_client_url_class_and_images_from_the_incident() {
        let t = |text: &str| Template::parse(text).expect("template");
        let fields = Fields::new(
            Some(t("SRE platform ({environment})")),
            Some(t("{url}")),
            Some(t("{label.alertname}")),
            vec![
                (
                    t("https://grafana.example/render/{label.cluster}.png"),
                    Some(t("https://grafana.example/d/{label.cluster}")),
                    Some(t("{service} errors")),
                ),
                (t("{label.chart}"), None, None),
            ],
        );
        let incident = IncidentCreated {
            incident_id: "inc-1".into(),
            title: "checkout down".into(),
            environment: "production".into(),
            service: "checkout-api".into(),
            url: "https://sre.example/incidents/inc-1".into(),
            labels: [("alertname".to_owned(), "CheckoutErrors".to_owned()), ("cluster".to_owned(), "eu-1".to_owned())]
                .into(),
            ..Default::default()
        };
        let event = trigger_body("R0UT1NGKEY0123456789ABCDEFGHIJKL", &incident, &fields);
        assert_eq!(event["client"], "SRE platform (production)");
        assert_eq!(event["client_url"], "https://sre.example/incidents/inc-1");
        assert_eq!(event["payload"]["class"], "CheckoutErrors");
        // The second image's URL came out empty (no `chart` label): left out.
        assert_eq!(
            event["images"],
            json!([{"src": "https://grafana.example/render/eu-1.png", "href": "https://grafana.example/d/eu-1",
                "alt": "checkout-api errors"}])
        );
        // Nothing configured: as before.
        let plain = trigger_body("R0UT1NGKEY0123456789ABCDEFGHIJKL", &incident, &Fields::default());
        assert_eq!(plain["client"], super::super::CLIENT);
        assert!(plain.get("client_url").is_none() && plain.get("images").is_none());
        assert!(plain["payload"].get("class").is_none());
    }

    #[test]
    fn an_event_over_pagerdutys_limit_goes_without_its_custom_details() {
        let incident = IncidentCreated {
            incident_id: "inc-1".into(),
            title: "é".repeat(2_000),
            description: "x".repeat(600_000),
            ..Default::default()
        };
        let event = trigger_body("R0UT1NGKEY0123456789ABCDEFGHIJKL", &incident, &Fields::default());
        let size = serde_json::to_vec(&event).map_or(0, |b| b.len());
        assert!(size <= EVENT_MAX, "{size}");
        let details = &event["payload"]["custom_details"];
        assert!(details["note"].as_str().is_some_and(|n| n.starts_with("custom details left out: the event was 6")));
        assert_eq!(details["incident_id"], "inc-1");
        assert_eq!(event["payload"]["summary"].as_str().map(|s| s.chars().count()), Some(SUMMARY_MAX));
        let small = IncidentCreated { description: "disk full".into(), ..incident };
        assert_eq!(
            trigger_body("R0UT1NGKEY0123456789ABCDEFGHIJKL", &small, &Fields::default())["payload"]["custom_details"]["description"],
            "disk full"
        );
    }
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
        let body = trigger_body("R0UT1NGKEY0123456789ABCDEFGHIJKL", &incident, &Fields::default());
        assert_eq!(body["event_action"], "trigger");
        assert_eq!(body["dedup_key"], "inc-42");
        assert_eq!(body["payload"]["severity"], "error");
        assert_eq!(body["payload"]["source"], "checkout-api");
        assert_eq!(body["payload"]["summary"].as_str().map(|s| s.chars().count()), Some(SUMMARY_MAX));
        assert_eq!(body["links"][0]["text"], "Runbook");
        assert!(body["payload"]["timestamp"].as_str().is_some_and(|t| t.starts_with("2026-")));
    }

    #[test]
    fn a_note_goes_on_the_open_incident_else_the_newest() {
        let answer = json!({"incidents": [
            {"id": "P1", "status": "resolved", "created_at": "2026-12-01T10:00:00Z"},
            {"id": "P2", "status": "triggered", "created_at": "2026-12-01T11:00:00Z"},
        ]});
        assert_eq!(pick_incident(&answer).as_deref(), Some("P2"));
        let ended = json!({"incidents": [
            {"id": "P1", "status": "resolved", "created_at": "2026-12-01T10:00:00Z"},
            {"id": "P3", "status": "resolved", "created_at": "2026-12-02T10:00:00Z"},
        ]});
        assert_eq!(pick_incident(&ended).as_deref(), Some("P3"));
        assert_eq!(pick_incident(&json!({"incidents": []})), None);
        assert_eq!(encode_query("inc/1 ü"), "inc%2F1%20%C3%BC");
    }
}
