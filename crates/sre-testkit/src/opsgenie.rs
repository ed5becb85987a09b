//! A test Opsgenie Alert API v2, faithful to the contract notes: `Authorization: GenieKey`,
//! create with `alias` (one open alert per alias), acknowledge and close by alias with
//! `identifierType=alias`, 202 "Request will be processed" for every write (also for an
//! unknown alias: the request status then says "Alert does not exist"), and
//! `GET /v2/alerts/requests/{id}`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// One alert (what pages a person).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Its alias.
    pub alias: String,
    /// `open`, `acknowledged`, `closed`.
    pub status: String,
    /// The create request's body.
    pub create: Value,
    /// Creates merged into it after the first (Opsgenie's count).
    pub merged: u32,
}

#[derive(Debug, Clone)]
struct Request {
    id: String,
    action: String,
    ok: bool,
    status: String,
    alias: String,
}

#[derive(Debug, Default)]
struct Inner {
    key: String,
    alerts: Vec<Alert>,
    requests: Vec<Request>,
    faults: VecDeque<u16>,
    calls: u64,
}

/// A running test Opsgenie; stops when dropped.
#[derive(Debug)]
pub struct FakeOpsgenie {
    state: Arc<Mutex<Inner>>,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

type Shared = Arc<Mutex<Inner>>;

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"message": message, "took": 0.001, "requestId": "00000000-0000-0000-0000-000000000000"})),
    )
        .into_response()
}

/// Auth and injected faults, shared by every endpoint.
#[allow(clippy::result_large_err, reason = "a test server; the error is the response")]
fn gate(s: &mut Inner, headers: &HeaderMap) -> Result<(), Response> {
    s.calls += 1;
    let presented =
        headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("GenieKey "));
    if presented != Some(s.key.as_str()) {
        return Err(error(StatusCode::UNAUTHORIZED, "apiKey is invalid or integration is disabled"));
    }
    if let Some(status) = s.faults.pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(error(
            status,
            if status == StatusCode::TOO_MANY_REQUESTS { "Too many requests" } else { "Internal error" },
        ));
    }
    Ok(())
}

fn accepted(s: &mut Inner, action: &str, ok: bool, status: &str, alias: &str) -> Response {
    let id = format!("7b5d7a3e-0000-4000-8000-{:012x}", s.requests.len() + 1);
    s.requests.push(Request {
        id: id.clone(),
        action: action.to_owned(),
        ok,
        status: status.to_owned(),
        alias: alias.to_owned(),
    });
    (StatusCode::ACCEPTED, axum::Json(json!({"result": "Request will be processed", "took": 0.302, "requestId": id})))
        .into_response()
}

async fn create(State(state): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Could not parse request body");
    };
    let message = body.get("message").and_then(Value::as_str).unwrap_or_default();
    if message.is_empty() || message.chars().count() > 130 {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Message can not be empty and must be at most 130 characters");
    }
    let alias = body.get("alias").and_then(Value::as_str).unwrap_or(message).to_owned();
    if alias.chars().count() > 512 {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Alias must be at most 512 characters");
    }
    if let Some(p) = body.get("priority").and_then(Value::as_str)
        && !["P1", "P2", "P3", "P4", "P5"].contains(&p)
    {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Priority should be one of [P1, P2, P3, P4, P5]");
    }
    match s.alerts.iter_mut().find(|a| a.alias == alias && a.status != "closed") {
        Some(open) => open.merged += 1,
        None => {
            s.alerts.push(Alert { alias: alias.clone(), status: "open".to_owned(), create: body.clone(), merged: 0 })
        }
    }
    accepted(&mut s, "Create", true, "Created alert", &alias)
}

async fn act(
    State(state): State<Shared>,
    Path((identifier, verb)): Path<(String, String)>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    let (action, to) = match verb.as_str() {
        "acknowledge" => ("Acknowledge", "acknowledged"),
        "close" => ("Close", "closed"),
        _ => return error(StatusCode::NOT_FOUND, "No such endpoint"),
    };
    // Without identifierType=alias the identifier is read as an alert id, which an alias
    // never is.
    let by_alias = query.get("identifierType").map(String::as_str) == Some("alias");
    let found = by_alias && s.alerts.iter().any(|a| a.alias == identifier && a.status != "closed");
    if found && let Some(a) = s.alerts.iter_mut().find(|a| a.alias == identifier && a.status != "closed") {
        a.status = to.to_owned();
    }
    let status = if found { "Alert updated" } else { "Alert does not exist" };
    accepted(&mut s, action, found, status, &identifier)
}

async fn request_status(State(state): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    match s.requests.iter().find(|r| r.id == id) {
        Some(r) => {
            axum::Json(json!({"data": {"success": r.ok, "action": r.action, "processedAt": "2026-11-27T04:00:00.000Z",
            "isSuccess": r.ok, "status": r.status, "alertId": "", "alias": r.alias}, "took": 0.019, "requestId": id}))
            .into_response()
        }
        None => error(StatusCode::NOT_FOUND, "Request not found"),
    }
}

async fn page(State(state): State<Arc<Mutex<Inner>>>) -> axum::response::Html<String> {
    let s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let rows: Vec<Vec<String>> = s
        .alerts
        .iter()
        .map(|a| {
            vec![
                a.alias.clone(),
                a.status.clone(),
                a.create["message"].as_str().unwrap_or_default().to_owned(),
                a.merged.to_string(),
            ]
        })
        .collect();
    crate::vendor::page("Test Opsgenie", "Alerts created.", &["alias", "status", "message", "merged"], &rows)
}

impl FakeOpsgenie {
    /// Starts on a free loopback port; requests must carry `GenieKey <key>`.
    pub async fn start(key: &str) -> std::io::Result<Self> {
        Self::start_on(0, key).await
    }

    /// Starts on `127.0.0.1:<port>` (0: a free one).
    pub async fn start_on(port: u16, key: &str) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(Inner { key: key.to_owned(), ..Inner::default() }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = Router::new()
            .route("/v2/alerts", post(create))
            .route("/v2/alerts/requests/{id}", get(request_status))
            .route("/v2/alerts/{identifier}/{verb}", post(act))
            .route("/", get(page))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { state, url, task })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers the next requests with these statuses instead.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.with(|s| s.faults.extend(statuses.iter().copied()));
    }

    /// Every alert.
    pub fn alerts(&self) -> Vec<Alert> {
        self.with(|s| s.alerts.clone())
    }

    /// Requests that did nothing (e.g. acknowledging an unknown alias): `(action, alias)`.
    pub fn failed_requests(&self) -> Vec<(String, String)> {
        self.with(|s| s.requests.iter().filter(|r| !r.ok).map(|r| (r.action.clone(), r.alias.clone())).collect())
    }

    /// Calls received, faults and refusals included.
    pub fn calls(&self) -> u64 {
        self.with(|s| s.calls)
    }
}

impl Drop for FakeOpsgenie {
    fn drop(&mut self) {
        self.task.abort();
    }
}
