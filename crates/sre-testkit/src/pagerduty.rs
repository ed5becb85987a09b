//! A test PagerDuty Events API v2 (`POST /v2/enqueue`), faithful to the contract notes:
//! the routing key in the body is the credential (32 characters), `dedup_key` at most 255,
//! `payload.summary` at most 1024, the contract's error bodies, 202 with the dedup key.
//!
//! It keeps alerts as PagerDuty does: a trigger on an open alert with the same routing key
//! and dedup key joins it (no new page); acknowledge and resolve apply only to an open
//! alert with the same routing key *and* dedup key, and are otherwise dropped silently
//! (still 202). After a resolve, a trigger opens a new alert: a second page.
//!
//! Its REST API answers what notes and the reconciler need: `GET /incidents` (by
//! `incident_key`, or by `statuses[]`, `limit` and `offset` with `more`; `since` is not
//! applied), `POST`/`GET /incidents/{id}/notes`, with
//! `Authorization: Token token=<key>` ([`REST_KEY`]) and a `From` user required on writes,
//! and PagerDuty's error body (`{"error": {"message", "code"}}`).
//!
//! With a Webhooks v3 subscription ([`FakePagerDuty::subscribe`]) it sends what PagerDuty
//! sends: `incident.triggered` as an alert opens an incident, a note as
//! `incident.annotated` (naming only PagerDuty's incident id), and a signed
//! `incident.acknowledged`/`incident.resolved` (`X-PagerDuty-Signature`,
//! `X-Webhook-Id` kept across retries) for every change, with a person as the agent when one
//! acted here ([`FakePagerDuty::acknowledge_as`]) and a service when the Events API did; a
//! delivery answered 5xx, 429 or not at all is retried, as PagerDuty does;
//! [`FakePagerDuty::hold_webhooks`] keeps them back (a receiver outage) until
//! [`FakePagerDuty::release_webhooks`] delivers them late. With
//! [`FakePagerDuty::set_rate_limit`] it refuses, with 429, events past a limit per routing
//! key in any rolling minute. Its page lists the alerts with buttons to acknowledge and
//! resolve them as a person.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// An alert's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStatus {
    /// Triggered: someone was paged.
    Triggered,
    /// Acknowledged.
    Acknowledged,
    /// Resolved.
    Resolved,
}

/// One alert (what pages a person).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Routing key it was triggered on.
    pub routing_key: String,
    /// Its dedup key.
    pub dedup_key: String,
    /// Status.
    pub status: AlertStatus,
    /// The trigger's body.
    pub trigger: Value,
    /// Triggers merged into it after the first.
    pub merged: u32,
    /// When its first trigger arrived.
    pub created: tokio::time::Instant,
    /// PagerDuty's id of the incident it opened (`P000001`).
    pub id: String,
    /// Notes on the incident, oldest first: (text, who).
    pub notes: Vec<(String, String)>,
}

/// The REST API key the test PagerDuty takes.
pub const REST_KEY: &str = "u+PDrestKEY0123456789";

/// One accepted event, as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `trigger`, `acknowledge`, `resolve`.
    pub action: String,
    /// Its routing key.
    pub routing_key: String,
    /// Its dedup key.
    pub dedup_key: String,
    /// Whether it changed an alert (acknowledge/resolve with a wrong routing key do not).
    pub applied: bool,
    /// When it arrived.
    pub at: tokio::time::Instant,
}

#[derive(Debug, Default)]
struct Inner {
    alerts: Vec<Alert>,
    events: Vec<Event>,
    /// Statuses (and Retry-After) to answer the next requests with, in order.
    faults: VecDeque<(u16, Option<u64>)>,
    requests: u64,
    /// Events allowed per routing key in any rolling minute (PagerDuty's is about 120);
    /// `None`: not enforced.
    limit_per_minute: Option<usize>,
    /// Events refused with 429 for being over that limit.
    throttled: u64,
    /// Those events: routing key, dedup key, when.
    refused_at: Vec<(String, String, tokio::time::Instant)>,
    /// Incident lists answered (`GET /incidents`), and their bytes.
    lists: u64,
    list_bytes: u64,
    /// Webhooks v3: the subscription and what was delivered.
    outbox: crate::vendor::Outbox,
}

/// A v3 webhook body for `event_type` on the incident `incident` (PagerDuty's id) of the
/// alert `dedup_key`, by `agent` (`type`, name); a note's when `note` is given.
fn webhook_body(
    id: &str,
    event_type: &str,
    incident: &str,
    dedup_key: &str,
    agent: (&str, &str),
    note: Option<&str>,
) -> String {
    let url = format!("https://acme.pagerduty.example/incidents/{incident}");
    let data = match note {
        Some(text) => {
            // A long note's content is cut short in the webhook (`trimmed`); how short is not
            // documented: the stand-in keeps NOTE_TRIMMED_AT characters.
            let trimmed = text.chars().count() > NOTE_TRIMMED_AT;
            let content: String = text.chars().take(NOTE_TRIMMED_AT).collect();
            json!({"incident": {"id": incident, "type": "incident_reference", "html_url": url},
                "id": format!("N{}", &id[id.len().saturating_sub(6)..]), "content": content, "trimmed": trimmed,
                "type": "incident_note"})
        }
        None => json!({"id": incident, "type": "incident",
            "status": event_type.trim_start_matches("incident."), "incident_key": dedup_key, "html_url": url}),
    };
    json!({"event": {"id": id, "event_type": event_type, "resource_type": "incident",
        "occurred_at": "2026-12-02T05:00:00.000Z",
        "agent": {"id": "PLH1HKV", "type": agent.0, "summary": agent.1},
        "client": null, "data": data}})
    .to_string()
}

/// A running test PagerDuty; stops when dropped.
#[derive(Debug)]
pub struct FakePagerDuty {
    state: Arc<Mutex<Inner>>,
    latency: crate::vendor::Latency,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

fn invalid(message: &str, errors: &[&str]) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"status": "invalid event", "message": message, "errors": errors})))
        .into_response()
}

/// Where the stand-in cuts a note's content in its `incident.annotated` webhook (our
/// assumption: PagerDuty documents the `trimmed` flag, not the length).
pub const NOTE_TRIMMED_AT: usize = 200;

/// The largest event PagerDuty takes (512 KB).
pub const EVENT_MAX: usize = 512 * 1024;

#[allow(clippy::result_large_err, reason = "a test server; the error is the response")]
fn check(event: &Value) -> Result<(String, String, String), Response> {
    let routing_key = event.get("routing_key").and_then(Value::as_str).unwrap_or_default();
    if routing_key.len() != 32 {
        return Err(invalid(
            "Event object is invalid",
            &["Length of 'routing_key' is incorrect (should be 32 characters)"],
        ));
    }
    let action = event.get("event_action").and_then(Value::as_str).unwrap_or_default();
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        return Err(invalid(
            "Event object is invalid",
            &["'event_action' is invalid (must be one of the following: 'trigger', 'acknowledge' or 'resolve')"],
        ));
    }
    let images = event.get("images").and_then(Value::as_array).into_iter().flatten();
    if images.into_iter().any(|i| !i.get("src").and_then(Value::as_str).is_some_and(|s| s.starts_with("https://"))) {
        return Err(invalid("Event object is invalid", &["'images' src must be an HTTPS URL"]));
    }
    let dedup_key = event.get("dedup_key").and_then(Value::as_str).unwrap_or_default();
    if dedup_key.len() > 255 {
        return Err(invalid("Event object is invalid", &["'dedup_key' is too long (max 255 characters)"]));
    }
    if action != "trigger" && dedup_key.is_empty() {
        return Err(invalid("Event object is invalid", &["'dedup_key' is required for acknowledge and resolve"]));
    }
    if action == "trigger" {
        let payload = event.get("payload");
        let summary = payload.and_then(|p| p.get("summary")).and_then(Value::as_str).unwrap_or_default();
        let source = payload.and_then(|p| p.get("source")).and_then(Value::as_str).unwrap_or_default();
        let severity = payload.and_then(|p| p.get("severity")).and_then(Value::as_str).unwrap_or_default();
        if summary.is_empty() || summary.chars().count() > 1024 {
            return Err(invalid(
                "Event object is invalid",
                &["'payload.summary' is missing or longer than 1024 characters"],
            ));
        }
        if source.is_empty() {
            return Err(invalid("Event object is invalid", &["'payload.source' is missing"]));
        }
        if !["critical", "error", "warning", "info"].contains(&severity) {
            return Err(invalid("Event object is invalid", &["'payload.severity' is invalid"]));
        }
    }
    Ok((routing_key.to_owned(), action.to_owned(), dedup_key.to_owned()))
}

async fn enqueue(State(state): State<Arc<Mutex<Inner>>>, body: axum::body::Bytes) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    s.requests += 1;
    if let Some((status, retry_after)) = s.faults.pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = if status == StatusCode::TOO_MANY_REQUESTS {
            (
                status,
                axum::Json(
                    json!({"status": "throttle exceeded", "message": "Too many API calls at a time", "errors": []}),
                ),
            )
                .into_response()
        } else {
            (status, "upstream error").into_response()
        };
        if let Some(secs) = retry_after
            && let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        return resp;
    }
    if body.len() > EVENT_MAX {
        return invalid("Event object is invalid", &["Event payload exceeds the 512 KB size limit"]);
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"status": "Unrecognized object", "message": "Event object format is unrecognized", "errors": ["JSON parse error"]})),
        )
            .into_response();
    };
    let (routing_key, action, mut dedup_key) = match check(&event) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    if let Some(limit) = s.limit_per_minute {
        let minute_ago = tokio::time::Instant::now().checked_sub(std::time::Duration::from_secs(60));
        let recent =
            s.events.iter().filter(|e| e.routing_key == routing_key && minute_ago.is_none_or(|m| e.at > m)).count();
        if recent >= limit {
            s.throttled += 1;
            s.refused_at.push((routing_key.clone(), dedup_key.clone(), tokio::time::Instant::now()));
            return (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(
                    json!({"status": "throttle exceeded", "message": "Too many API calls at a time", "errors": []}),
                ),
            )
                .into_response();
        }
    }
    if dedup_key.is_empty() {
        dedup_key = format!("generated-{}", s.requests);
    }
    let open = s
        .alerts
        .iter_mut()
        .find(|a| a.routing_key == routing_key && a.dedup_key == dedup_key && a.status != AlertStatus::Resolved);
    let applied = match (action.as_str(), open) {
        ("trigger", Some(alert)) => {
            alert.merged += 1;
            true
        }
        ("trigger", None) => {
            let id = format!("P{:06}", s.alerts.len() + 1);
            s.alerts.push(Alert {
                routing_key: routing_key.clone(),
                dedup_key: dedup_key.clone(),
                status: AlertStatus::Triggered,
                trigger: event.clone(),
                merged: 0,
                created: tokio::time::Instant::now(),
                id: id.clone(),
                notes: Vec::new(),
            });
            send_webhook(
                &s,
                "incident.triggered",
                &id,
                &dedup_key,
                ("service_reference", "checkout (Events API v2)"),
                None,
            );
            true
        }
        ("acknowledge", Some(alert)) if alert.status == AlertStatus::Triggered => {
            alert.status = AlertStatus::Acknowledged;
            true
        }
        ("resolve", Some(alert)) => {
            alert.status = AlertStatus::Resolved;
            true
        }
        _ => false,
    };
    if applied && (action == "acknowledge" || action == "resolve") {
        // The Events API acted: the webhook names a service, not a person.
        let event_type = if action == "acknowledge" { "incident.acknowledged" } else { "incident.resolved" };
        let incident =
            s.alerts.iter().rev().find(|a| a.dedup_key == dedup_key).map(|a| a.id.clone()).unwrap_or_default();
        send_webhook(&s, event_type, &incident, &dedup_key, ("service_reference", "checkout (Events API v2)"), None);
    }
    s.events.push(Event {
        action,
        routing_key,
        dedup_key: dedup_key.clone(),
        applied,
        at: tokio::time::Instant::now(),
    });
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({"status": "success", "message": "Event processed", "dedup_key": dedup_key})),
    )
        .into_response()
}

/// Sends a signed v3 webhook in the background, when subscribed; PagerDuty keeps
/// `X-Webhook-Id` across its retries (5xx, 429, no answer).
fn send_webhook(s: &Inner, event_type: &str, incident: &str, dedup_key: &str, agent: (&str, &str), note: Option<&str>) {
    let Some((secret, n)) = s.outbox.next() else { return };
    let id = format!("01WEBHOOK{n:016}");
    let body = webhook_body(&id, event_type, incident, dedup_key, agent, note);
    let signature = format!("v1={}", crate::vendor::hmac_hex(&secret, body.as_bytes()));
    let headers = vec![
        ("X-PagerDuty-Signature".to_owned(), signature),
        ("X-Webhook-Id".to_owned(), id),
        ("User-Agent".to_owned(), "PagerDuty-Webhook/V3.0".to_owned()),
    ];
    s.outbox.send(event_type, agent.0, headers, body, crate::vendor::Retries::Transient);
}

/// A person's change to the open alert `dedup_key`; `false` when it is not open for it.
fn act_as(s: &mut Inner, dedup_key: &str, to: AlertStatus, person: &str) -> bool {
    let Some(alert) =
        s.alerts.iter_mut().find(|a| a.dedup_key == dedup_key && a.status != AlertStatus::Resolved && a.status != to)
    else {
        return false;
    };
    alert.status = to;
    let incident = alert.id.clone();
    let event_type = if to == AlertStatus::Acknowledged { "incident.acknowledged" } else { "incident.resolved" };
    send_webhook(s, event_type, &incident, dedup_key, ("user_reference", person), None);
    true
}

fn rest_error(status: StatusCode, message: &str, code: u32) -> Response {
    (status, axum::Json(json!({"error": {"message": message, "code": code}}))).into_response()
}

/// The REST API's auth (and, on writes, its `From` user), then injected faults.
#[allow(clippy::result_large_err, reason = "a test server; the error is the response")]
fn rest_gate(s: &mut Inner, headers: &axum::http::HeaderMap, write: bool) -> Result<String, Response> {
    s.requests += 1;
    let token = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Token token="));
    if token != Some(REST_KEY) {
        return Err(rest_error(StatusCode::UNAUTHORIZED, "Unauthorized", 2006));
    }
    let from = headers.get("from").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    if write && !from.contains('@') {
        return Err(rest_error(StatusCode::BAD_REQUEST, "You must specify a From header", 2001));
    }
    if let Some((status, _)) = s.faults.pop_front() {
        return Err(rest_error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "Error",
            2000,
        ));
    }
    Ok(from)
}

fn incident_json(a: &Alert) -> Value {
    let status = match a.status {
        AlertStatus::Triggered => "triggered",
        AlertStatus::Acknowledged => "acknowledged",
        AlertStatus::Resolved => "resolved",
    };
    json!({"id": a.id, "type": "incident", "incident_key": a.dedup_key, "status": status,
        "created_at": format!("2026-12-07T00:{:02}:00Z", a.id[1..].parse::<u32>().unwrap_or(0) % 60),
        "html_url": format!("https://acme.pagerduty.example/incidents/{}", a.id)})
}

async fn list_incidents(
    State(state): State<Arc<Mutex<Inner>>>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(q): axum::extract::Query<Vec<(String, String)>>,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(r) = rest_gate(&mut s, &headers, false) {
        return r;
    }
    let key = q.iter().find(|(k, _)| k == "incident_key").map(|(_, v)| v.clone());
    let statuses: Vec<&str> = q.iter().filter(|(k, _)| k == "statuses[]").map(|(_, v)| v.as_str()).collect();
    let number = |name: &str, default: usize| {
        q.iter().find(|(k, _)| k == name).and_then(|(_, v)| v.parse().ok()).unwrap_or(default)
    };
    let (limit, offset) = (number("limit", 25).min(100), number("offset", 0));
    s.lists += 1;
    let matching: Vec<Value> = s
        .alerts
        .iter()
        .filter(|a| key.as_ref().is_none_or(|k| &a.dedup_key == k))
        .map(incident_json)
        .filter(|i| statuses.is_empty() || statuses.iter().any(|st| i["status"] == *st))
        .collect();
    let more = matching.len() > offset + limit;
    let incidents: Vec<Value> = matching.into_iter().skip(offset).take(limit).collect();
    let body = json!({"incidents": incidents, "limit": limit, "offset": offset, "more": more}).to_string();
    s.list_bytes += body.len() as u64;
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn notes(
    State(state): State<Arc<Mutex<Inner>>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let from = match rest_gate(&mut s, &headers, method == axum::http::Method::POST) {
        Ok(from) => from,
        Err(r) => return r,
    };
    let Some(i) = s.alerts.iter().position(|a| a.id == id) else {
        return rest_error(StatusCode::NOT_FOUND, "Not Found", 2100);
    };
    if method == axum::http::Method::GET {
        let notes: Vec<Value> = s.alerts[i]
            .notes
            .iter()
            .enumerate()
            .map(|(n, (text, who))| json!({"id": format!("PN{n:05}"), "content": text, "user": {"summary": who}}))
            .collect();
        return axum::Json(json!({"notes": notes})).into_response();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let content = body.pointer("/note/content").and_then(Value::as_str).unwrap_or_default().to_owned();
    if content.is_empty() || content.chars().count() > 25_000 {
        return rest_error(StatusCode::BAD_REQUEST, "Invalid Input Provided", 2001);
    }
    s.alerts[i].notes.push((content.clone(), from.clone()));
    let (incident, key) = (s.alerts[i].id.clone(), s.alerts[i].dedup_key.clone());
    send_webhook(&s, "incident.annotated", &incident, &key, ("user_reference", &from), Some(&content));
    let n = s.alerts[i].notes.len();
    (
        StatusCode::CREATED,
        axum::Json(json!({"note": {"id": format!("PN{n:05}"), "content": content, "user": {"summary": from}}})),
    )
        .into_response()
}

async fn page(State(state): State<Arc<Mutex<Inner>>>) -> axum::response::Html<String> {
    let s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let mut rows = Vec::new();
    let mut actions = Vec::new();
    for a in &s.alerts {
        rows.push(vec![
            a.dedup_key.clone(),
            format!("{:?}", a.status).to_lowercase(),
            a.trigger.pointer("/payload/summary").and_then(Value::as_str).unwrap_or_default().to_owned(),
            a.routing_key.chars().take(6).collect::<String>() + "…",
            a.merged.to_string(),
        ]);
        let key = a.dedup_key.clone();
        actions.push(match a.status {
            AlertStatus::Triggered => {
                vec![("Acknowledge", "acknowledge", key.clone()), ("Resolve", "resolve", key)]
            }
            AlertStatus::Acknowledged => vec![("Resolve", "resolve", key)],
            AlertStatus::Resolved => Vec::new(),
        });
    }
    crate::vendor::page_with_actions(
        "Test PagerDuty",
        "Alerts triggered through the Events API v2.",
        &["dedup_key", "status", "summary", "routing key", "merged"],
        &rows,
        &actions,
    )
}

async fn press(
    State(state): State<Arc<Mutex<Inner>>>,
    axum::extract::Path(verb): axum::extract::Path<String>,
    axum::extract::Query(p): axum::extract::Query<crate::vendor::Pressed>,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let to = if verb == "acknowledge" { AlertStatus::Acknowledged } else { AlertStatus::Resolved };
    act_as(&mut s, &p.key, to, crate::vendor::PERSON);
    crate::vendor::back()
}

impl FakePagerDuty {
    /// Starts on a free loopback port.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(0).await
    }

    /// Starts on `127.0.0.1:<port>` (0: a free one).
    pub async fn start_on(port: u16) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = Router::new()
            .route("/v2/enqueue", post(enqueue))
            .route("/incidents", axum::routing::get(list_incidents))
            .route("/incidents/{id}/notes", axum::routing::get(notes).post(notes))
            .route("/", axum::routing::get(page))
            .route("/_person/{verb}", post(press))
            .with_state(state.clone());
        let latency = crate::vendor::Latency::default();
        let app = latency.wrap(app);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { state, latency, url, task })
    }

    /// Every answer from now on takes `delay` longer (a slow PagerDuty).
    pub fn set_latency(&self, delay: std::time::Duration) {
        self.latency.set(delay);
    }

    /// Every event from now on is applied at once and answered `delay` later: a caller
    /// that dies meanwhile paged someone without hearing about it.
    pub fn set_answer_delay(&self, delay: std::time::Duration) {
        self.latency.set_after(delay);
    }

    /// Every write (an event, a note) from now on is applied at once and answered `delay`
    /// later; reads answer at once.
    pub fn set_write_answer_delay(&self, delay: std::time::Duration) {
        self.latency.set_after_writes(delay);
    }

    /// Events applied whose answers [`Self::set_answer_delay`] still holds back.
    pub fn answers_held(&self) -> u64 {
        self.latency.held()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers the next requests with these statuses (and Retry-After seconds) instead.
    pub fn fail_next(&self, faults: &[(u16, Option<u64>)]) {
        self.with(|s| s.faults.extend(faults.iter().copied()));
    }

    /// Refuses with 429 (no `Retry-After`, as PagerDuty) every event past `per_minute` on
    /// one routing key in the last rolling minute.
    pub fn set_rate_limit(&self, per_minute: usize) {
        self.with(|s| s.limit_per_minute = Some(per_minute));
    }

    /// Incident lists answered (`GET /incidents`, each page one) and their body bytes.
    pub fn incident_lists(&self) -> (u64, u64) {
        self.with(|s| (s.lists, s.list_bytes))
    }

    /// The events refused for being over [`Self::set_rate_limit`]: routing key, dedup key,
    /// when.
    pub fn refused(&self) -> Vec<(String, String, tokio::time::Instant)> {
        self.with(|s| s.refused_at.clone())
    }

    /// Events refused for being over [`Self::set_rate_limit`].
    pub fn throttled(&self) -> u64 {
        self.with(|s| s.throttled)
    }

    /// Every alert (each one paged someone once).
    pub fn alerts(&self) -> Vec<Alert> {
        self.with(|s| s.alerts.clone())
    }

    /// Every accepted event.
    pub fn events(&self) -> Vec<Event> {
        self.with(|s| s.events.clone())
    }

    /// Requests received, faults included.
    pub fn requests(&self) -> u64 {
        self.with(|s| s.requests)
    }

    /// Holds every webhook from now on, as a receiver outage would (nothing reaches it),
    /// until [`Self::release_webhooks`].
    pub fn hold_webhooks(&self) {
        self.with(|s| s.outbox.hold());
    }

    /// Delivers the held webhooks late, in order; how many.
    pub fn release_webhooks(&self) -> usize {
        self.with(|s| s.outbox.clone()).release()
    }

    /// Subscribes a Webhooks v3 endpoint (`http://127.0.0.1:<port>/<path>`) with `secret`.
    pub fn subscribe(&self, url: &str, secret: &str) {
        self.with(|s| s.outbox.subscribe(url, secret));
    }

    /// A person acknowledges the open alert `dedup_key` in PagerDuty: it is acknowledged here,
    /// and the subscription hears of it. `false` when no such alert is triggered.
    pub fn acknowledge_as(&self, dedup_key: &str, person: &str) -> bool {
        self.with(|s| {
            s.alerts.iter().any(|a| a.dedup_key == dedup_key && a.status == AlertStatus::Triggered)
                && act_as(s, dedup_key, AlertStatus::Acknowledged, person)
        })
    }

    /// A person resolves the open alert `dedup_key` in PagerDuty; `false` when none is open.
    pub fn resolve_as(&self, dedup_key: &str, person: &str) -> bool {
        self.with(|s| act_as(s, dedup_key, AlertStatus::Resolved, person))
    }

    /// A person adds a note to the latest alert `dedup_key` in PagerDuty; the subscription
    /// hears of it (naming only PagerDuty's incident id). `false` when there is no alert.
    pub fn note_as(&self, dedup_key: &str, text: &str, person: &str) -> bool {
        self.with(|s| {
            let Some(i) = s.alerts.iter().rposition(|a| a.dedup_key == dedup_key) else { return false };
            s.alerts[i].notes.push((text.to_owned(), person.to_owned()));
            let incident = s.alerts[i].id.clone();
            send_webhook(s, "incident.annotated", &incident, dedup_key, ("user_reference", person), Some(text));
            true
        })
    }

    /// Webhooks delivered so far: (event type, agent type, final status).
    pub fn webhooks(&self) -> Vec<(String, String, u16)> {
        self.with(|s| s.outbox.delivered().into_iter().map(|d| (d.event, d.by, d.status)).collect())
    }

    /// Webhooks sent whose delivery has not ended yet (0: every one was answered).
    pub fn webhooks_in_flight(&self) -> u64 {
        self.with(|s| s.outbox.in_flight())
    }
}

impl Drop for FakePagerDuty {
    fn drop(&mut self) {
        self.task.abort();
    }
}
