//! A test Opsgenie Alert API v2, faithful to the contract notes: `Authorization: GenieKey`,
//! create with `alias` (one open alert per alias), acknowledge, close and add notes
//! (`POST`/`GET …/notes`) by alias with
//! `identifierType=alias`, 202 "Request will be processed" for every write (also for an
//! unknown alias: the request status then says "Alert does not exist"),
//! `GET /v2/alerts/requests/{id}`, and Get Alert by alias (`status` open or closed,
//! `acknowledged`), as the reconciler reads it.
//!
//! The same API is served under `/jsm/ops/integration` ([`FakeOpsgenie::jsm_url`]): Jira
//! Service Management Operations' integration API, the successor, mirrors it path for path.
//!
//! With an outgoing Webhook integration ([`FakeOpsgenie::subscribe`]) every create,
//! acknowledge, close and note is sent as Opsgenie sends it (`action`, `alert` with its
//! alias, `source` naming who acted: `API` for an integration's calls, `web` for a person),
//! unsigned, carrying the configured custom header; no retry (Opsgenie documents none). A
//! person acts with [`FakeOpsgenie::act_as`] or the page's buttons.
//! [`FakeOpsgenie::hold_webhooks`] keeps them back (a receiver outage) until
//! [`FakeOpsgenie::release_webhooks`] delivers them late.

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
    /// Which API created it: `opsgenie` (`/v2/…`) or `jsm` (`/jsm/ops/integration/v2/…`).
    pub api: &'static str,
    /// Its notes, oldest first: (text, owner).
    pub notes: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
struct Request {
    id: String,
    action: String,
    ok: bool,
    status: String,
    alias: String,
    api: &'static str,
}

#[derive(Debug, Default)]
struct Inner {
    key: String,
    alerts: Vec<Alert>,
    requests: Vec<Request>,
    faults: VecDeque<u16>,
    calls: u64,
    /// The outgoing webhook's custom header, and where it goes.
    hook_header: String,
    outbox: crate::vendor::Outbox,
}

/// The `source.name` of this sink's calls (the API integration's name).
pub const INTEGRATION: &str = "sre-integration";

/// Sends the outgoing webhook of `action` on `alert`, by a person or (`None`) the API
/// integration.
fn send_webhook(s: &Inner, action: &str, alert: &Alert, by: Option<&str>, note: &str) {
    let Some((secret, n)) = s.outbox.next() else { return };
    let updated = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let (username, source) = match by {
        Some(p) => (format!("{}@example.com", p.to_lowercase().replace(' ', ".")), json!({"name": "", "type": "web"})),
        None => ("System".to_owned(), json!({"name": INTEGRATION, "type": "API"})),
    };
    let body = json!({
        "action": action,
        "alert": {"alertId": format!("8418d193-2dab-4490-b331-8c02cdd196b7-{}", alert_index(s, &alert.alias)),
                  "message": alert.create["message"], "alias": alert.alias, "tinyId": alert_index(s, &alert.alias).to_string(),
                  "username": username, "userId": format!("{:08x}", username.len()), "updatedAt": updated,
                  "createdAt": updated, "status": alert.status, "note": note},
        "source": source,
        "integrationName": "SRE two-way sync", "integrationId": "4a5c0d6d-0000-4000-8000-000000000001",
        "integrationType": "Webhook",
    })
    .to_string();
    let headers = vec![(s.hook_header.clone(), secret), ("X-Delivery".to_owned(), n.to_string())];
    s.outbox.send(action, by.unwrap_or(INTEGRATION), headers, body, crate::vendor::Retries::Never);
}

fn alert_index(s: &Inner, alias: &str) -> usize {
    s.alerts.iter().position(|a| a.alias == alias).map_or(0, |i| i + 1)
}

/// Moves the open alert `alias` to `to` (`acknowledged`, `closed`), telling the webhook.
fn change(s: &mut Inner, alias: &str, to: &str, by: Option<&str>) -> bool {
    let Some(alert) = s.alerts.iter_mut().find(|a| a.alias == alias && a.status != "closed" && a.status != to) else {
        return false;
    };
    alert.status = to.to_owned();
    let alert = alert.clone();
    let action = if to == "closed" { "Close" } else { "Acknowledge" };
    send_webhook(s, action, &alert, by, "");
    true
}

/// A running test Opsgenie; stops when dropped.
#[derive(Debug)]
pub struct FakeOpsgenie {
    state: Arc<Mutex<Inner>>,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

type Shared = Arc<Mutex<Inner>>;

/// Where Jira Service Management Operations serves the same API.
pub const JSM_PREFIX: &str = "/jsm/ops/integration";

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

fn accepted(s: &mut Inner, action: &str, ok: bool, status: &str, alias: &str, api: &'static str) -> Response {
    let id = format!("7b5d7a3e-0000-4000-8000-{:012x}", s.requests.len() + 1);
    s.requests.push(Request {
        id: id.clone(),
        action: action.to_owned(),
        ok,
        status: status.to_owned(),
        alias: alias.to_owned(),
        api,
    });
    (StatusCode::ACCEPTED, axum::Json(json!({"result": "Request will be processed", "took": 0.302, "requestId": id})))
        .into_response()
}

async fn create(state: Shared, api: &'static str, headers: HeaderMap, body: axum::body::Bytes) -> Response {
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
    // The Alert API's field rules: responders name who they are, tags 20 of 50
    // characters at most, the entity 512 characters.
    for r in body.get("responders").and_then(Value::as_array).into_iter().flatten() {
        let kind = r.get("type").and_then(Value::as_str).unwrap_or_default();
        let has = |k: &str| r.get(k).and_then(Value::as_str).is_some_and(|v| !v.is_empty());
        let ok = match kind {
            "team" | "escalation" | "schedule" => has("id") || has("name"),
            "user" => has("id") || has("username"),
            _ => false,
        };
        if !ok {
            return error(StatusCode::UNPROCESSABLE_ENTITY, &format!("Responder is invalid: {r}"));
        }
    }
    let tags = body.get("tags").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    if tags.len() > 20 || tags.iter().any(|t| t.as_str().is_none_or(|t| t.chars().count() > 50)) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Tags can be at most 20, of at most 50 characters each");
    }
    if body.get("entity").and_then(Value::as_str).is_some_and(|e| e.chars().count() > 512) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Entity must be at most 512 characters");
    }
    match s.alerts.iter_mut().find(|a| a.alias == alias && a.status != "closed") {
        Some(open) => open.merged += 1,
        None => {
            let alert = Alert {
                alias: alias.clone(),
                status: "open".to_owned(),
                create: body.clone(),
                merged: 0,
                api,
                notes: Vec::new(),
            };
            s.alerts.push(alert.clone());
            send_webhook(&s, "Create", &alert, None, "");
        }
    }
    accepted(&mut s, "Create", true, "Created alert", &alias, api)
}

async fn act(
    state: Shared,
    api: &'static str,
    (identifier, verb): (String, String),
    query: std::collections::HashMap<String, String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    // Without identifierType=alias the identifier is read as an alert id, which an alias
    // never is.
    let by_alias = query.get("identifierType").map(String::as_str) == Some("alias");
    if verb == "notes" {
        // A note goes on the alias's open alert, else its latest.
        let body: Value = serde_json::from_slice(&body).unwrap_or_default();
        let note = body.get("note").and_then(Value::as_str).unwrap_or_default().to_owned();
        if note.is_empty() || note.chars().count() > 25_000 {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Note can not be empty and must be at most 25000 characters",
            );
        }
        let at = by_alias.then(|| latest(&s, &identifier)).flatten();
        if let Some(i) = at {
            s.alerts[i].notes.push((note.clone(), INTEGRATION.to_owned()));
            let alert = s.alerts[i].clone();
            send_webhook(&s, "AddNote", &alert, None, &note);
        }
        let status = if at.is_some() { "Added note" } else { "Alert does not exist" };
        return accepted(&mut s, "AddNote", at.is_some(), status, &identifier, api);
    }
    let (action, to) = match verb.as_str() {
        "acknowledge" => ("Acknowledge", "acknowledged"),
        "close" => ("Close", "closed"),
        _ => return error(StatusCode::NOT_FOUND, "No such endpoint"),
    };
    let found = by_alias && s.alerts.iter().any(|a| a.alias == identifier && a.status != "closed");
    if found {
        change(&mut s, &identifier, to, None);
    }
    let status = if found { "Alert updated" } else { "Alert does not exist" };
    accepted(&mut s, action, found, status, &identifier, api)
}

/// The alias's open alert, else its latest.
fn latest(s: &Inner, alias: &str) -> Option<usize> {
    let mine = || s.alerts.iter().enumerate().filter(|(_, a)| a.alias == alias);
    mine()
        .filter(|(_, a)| a.status != "closed")
        .map(|(i, _)| i)
        .next_back()
        .or_else(|| mine().map(|(i, _)| i).next_back())
}

/// `GET /v2/alerts/{identifier}?identifierType=alias`: the alert (the open one, else the
/// newest) as Get Alert answers it: `status` `open` or `closed`, and `acknowledged`.
async fn get_alert(
    State(state): State<Shared>,
    Path(identifier): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    let by_alias = query.get("identifierType").map(String::as_str) == Some("alias");
    let Some(i) = by_alias.then(|| latest(&s, &identifier)).flatten() else {
        return error(StatusCode::NOT_FOUND, "Alert does not exist");
    };
    let a = &s.alerts[i];
    let closed = a.status == "closed";
    let data = json!({
        "id": format!("alert-{}", i + 1), "tinyId": (i + 1).to_string(), "alias": a.alias,
        "message": a.create.get("message").cloned().unwrap_or(Value::Null),
        "status": if closed { "closed" } else { "open" },
        "acknowledged": a.status == "acknowledged", "isSeen": a.status != "open", "snoozed": false,
        "count": a.merged + 1, "source": a.create.get("source").cloned().unwrap_or(Value::Null),
        "createdAt": "2026-12-07T02:00:00.000Z", "updatedAt": "2026-12-07T02:00:00.000Z",
    });
    axum::Json(json!({"data": data, "took": 0.003, "requestId": "00000000-0000-0000-0000-000000000002"}))
        .into_response()
}

/// `GET /v2/alerts/{identifier}/notes?identifierType=alias`: the notes, newest first.
async fn list_notes(
    State(state): State<Shared>,
    Path(identifier): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    let by_alias = query.get("identifierType").map(String::as_str) == Some("alias");
    let Some(i) = by_alias.then(|| latest(&s, &identifier)).flatten() else {
        return error(StatusCode::NOT_FOUND, "Alert does not exist");
    };
    let data: Vec<Value> = s.alerts[i]
        .notes
        .iter()
        .enumerate()
        .rev()
        .map(|(n, (note, owner))| json!({"note": note, "owner": owner, "createdAt": "2026-12-07T02:00:00.000Z", "offset": n.to_string()}))
        .collect();
    axum::Json(json!({"data": data, "paging": {}, "took": 0.004, "requestId": "00000000-0000-0000-0000-000000000001"}))
        .into_response()
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
    let actions: Vec<Vec<crate::vendor::Action>> = s
        .alerts
        .iter()
        .map(|a| match a.status.as_str() {
            "open" => vec![("Acknowledge", "acknowledge", a.alias.clone()), ("Close", "close", a.alias.clone())],
            "acknowledged" => vec![("Close", "close", a.alias.clone())],
            _ => Vec::new(),
        })
        .collect();
    crate::vendor::page_with_actions(
        "Test Opsgenie / JSM Operations",
        "Alerts created.",
        &["alias", "status", "message", "merged"],
        &rows,
        &actions,
    )
}

async fn press(
    State(state): State<Shared>,
    Path(verb): Path<String>,
    Query(p): Query<crate::vendor::Pressed>,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let to = if verb == "acknowledge" { "acknowledged" } else { "closed" };
    change(&mut s, &p.key, to, Some(crate::vendor::PERSON));
    crate::vendor::back()
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
        let api = |api: &'static str| {
            Router::new()
                .route(
                    "/v2/alerts",
                    post(move |State(s): State<Shared>, h: HeaderMap, b: axum::body::Bytes| create(s, api, h, b)),
                )
                .route("/v2/alerts/requests/{id}", get(request_status))
                .route("/v2/alerts/{identifier}", get(get_alert))
                .route(
                    "/v2/alerts/{identifier}/notes",
                    get(list_notes).post(
                        move |State(s): State<Shared>,
                              Path(identifier): Path<String>,
                              Query(q): Query<std::collections::HashMap<String, String>>,
                              h: HeaderMap,
                              b: axum::body::Bytes| {
                            act(s, api, (identifier, "notes".to_owned()), q, h, b)
                        },
                    ),
                )
                .route(
                    "/v2/alerts/{identifier}/{verb}",
                    post(
                        move |State(s): State<Shared>,
                              Path(p): Path<(String, String)>,
                              Query(q): Query<std::collections::HashMap<String, String>>,
                              h: HeaderMap,
                              b: axum::body::Bytes| act(s, api, p, q, h, b),
                    ),
                )
        };
        let app = api("opsgenie")
            .nest(JSM_PREFIX, api("jsm"))
            .route("/", get(page))
            .route("/_person/{verb}", post(press))
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

    /// The same API as Jira Service Management Operations' integration API
    /// (`https://api.atlassian.com/jsm/ops/integration`).
    pub fn jsm_url(&self) -> String {
        format!("{}{JSM_PREFIX}", self.url)
    }

    /// Adds an outgoing Webhook integration to `url` sending `header: secret`.
    pub fn subscribe(&self, url: &str, header: &str, secret: &str) {
        self.with(|s| {
            s.hook_header = header.to_owned();
            s.outbox.subscribe(url, secret);
        });
    }

    /// A person acknowledges (`acknowledged`) or closes (`closed`) the open alert `alias`;
    /// the webhook hears of it. `false` when no such alert is open.
    pub fn act_as(&self, alias: &str, to: &str, person: &str) -> bool {
        self.with(|s| change(s, alias, to, Some(person)))
    }

    /// A person adds a note to the alert `alias`.
    pub fn note_as(&self, alias: &str, note: &str, person: &str) -> bool {
        self.with(|s| {
            let Some(i) = latest(s, alias) else { return false };
            s.alerts[i].notes.push((note.to_owned(), person.to_owned()));
            let alert = s.alerts[i].clone();
            send_webhook(s, "AddNote", &alert, Some(person), note);
            true
        })
    }

    /// Webhooks delivered so far, in the order they ended.
    pub fn webhooks(&self) -> Vec<crate::vendor::Delivery> {
        self.with(|s| s.outbox.delivered())
    }

    /// Answers the next requests with these statuses instead.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.with(|s| s.faults.extend(statuses.iter().copied()));
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

    /// Every alert.
    pub fn alerts(&self) -> Vec<Alert> {
        self.with(|s| s.alerts.clone())
    }

    /// Requests that did nothing (e.g. acknowledging an unknown alias): `(action, alias)`.
    pub fn failed_requests(&self) -> Vec<(String, String)> {
        self.with(|s| s.requests.iter().filter(|r| !r.ok).map(|r| (r.action.clone(), r.alias.clone())).collect())
    }

    /// Requests taken: `(action, alias, api)`, `api` being `opsgenie` or `jsm`.
    pub fn requests(&self) -> Vec<(String, String, &'static str)> {
        self.with(|s| s.requests.iter().map(|r| (r.action.clone(), r.alias.clone(), r.api)).collect())
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
