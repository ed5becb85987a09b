//! A test Jira, Cloud (REST v3) or Data Center (REST v2), faithful to the contract notes:
//! create (201 `{id,key,self}`), search (`search/jql` on Cloud, `search` on DC, by
//! `labels = "…"`, or by `key in (…)` with each issue's status and resolution as the
//! index has them), transitions by workflow (To Do → Resolved → Closed, and Reopen back),
//! each done status with a resolution (`Done` unless a person chose another, e.g. `Won't
//! Fix`), comments (posted and listed), an issue read (`?fields=status,resolution`) and
//! edited (`PUT`, the priority), issue links on create (`update.issuelinks`), the
//! `ErrorCollection` error body, ADF required on Cloud and wiki text on DC, summaries of at
//! most 255 characters without newlines, labels without spaces, Basic (Cloud) or Bearer
//! (DC) auth, `myself`, and injected failures with Retry-After. Cloud search can lag
//! behind writes, as the real one does ([`FakeJira::set_search_lag`]): a new issue is not
//! found, and a changed one shows its status before the change, until the lag has passed. Writes to one issue are limited as Jira Cloud
//! limits them: more than [`PER_ISSUE_WRITES`] within [`PER_ISSUE_WINDOW`] answer 429 with
//! `RateLimit-Reason: jira-per-issue-on-write` and a `Retry-After`.
//!
//! With an admin webhook ([`FakeJira::subscribe`]) every transition and comment, the
//! sink's own included, is sent as Jira sends it: `jira:issue_updated` with the whole issue
//! (labels, status and its category), the `changelog` of a status change or the `comment`,
//! the acting `user`, signed `X-Hub-Signature: sha256=<hex>`, `X-Atlassian-Webhook-Identifier`
//! kept across retries (408, 409, 425, 429, 5xx and no answer, as Jira Cloud retries). A
//! person acts with [`FakeJira::transition_as`], [`FakeJira::comment_as`] or the page's buttons.
//! [`FakeJira::hold_webhooks`] keeps them back (a receiver outage) until
//! [`FakeJira::release_webhooks`] delivers them late.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// Which Jira.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// REST v3, ADF, Basic `email:token`.
    Cloud,
    /// REST v2, wiki text, Bearer PAT.
    DataCenter,
}

/// One issue.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    /// Jira's id (`10001`), as create answers it.
    pub id: String,
    /// `OPS-1`.
    pub key: String,
    /// Project key.
    pub project: String,
    /// Summary.
    pub summary: String,
    /// The create request's `fields`.
    pub fields: Value,
    /// Labels.
    pub labels: Vec<String>,
    /// `To Do`, `Resolved`, `Closed`.
    pub status: String,
    /// Comment bodies as sent.
    pub comments: Vec<Value>,
    /// When it was created.
    pub created: Instant,
    /// The resolution of a done status (`Done`, `Won't Fix`…); `None` while open.
    pub resolution: Option<String>,
    /// The priority's name.
    pub priority: Option<String>,
    /// Keys of the issues it links to (`update.issuelinks` on create).
    pub links: Vec<String>,
    /// Component names (as created, then as edited).
    pub components: Vec<String>,
    /// The assignee's accountId (Cloud) or name (Data Center).
    pub assignee: Option<String>,
    /// When the sink wrote to it (transitions, comments, edits), for the per-issue limit.
    writes: Vec<Instant>,
    /// The status search still shows until the index catches up with the last change
    /// (Cloud search lags behind writes), and when that change was made.
    indexed: Option<(String, Option<String>, Instant)>,
}

/// Writes to one issue allowed within [`PER_ISSUE_WINDOW`] (the stand-in's figure: Jira
/// Cloud does not publish its own).
pub const PER_ISSUE_WRITES: usize = 10;
/// The window of the per-issue write limit.
pub const PER_ISSUE_WINDOW: Duration = Duration::from_secs(10);

/// Counts a write to issue `i`; the 429 Jira gives when the issue's write limit is hit.
#[allow(clippy::result_large_err, reason = "a test server; the error is the response")]
fn write_to(s: &mut Inner, i: usize) -> Result<(), Response> {
    let now = Instant::now();
    let issue = &mut s.issues[i];
    issue.writes.retain(|at| now.duration_since(*at) < PER_ISSUE_WINDOW);
    if issue.writes.len() >= PER_ISSUE_WRITES {
        s.per_issue_refusals += 1;
        let mut resp = errors(StatusCode::TOO_MANY_REQUESTS, &["Too many writes to this issue."], json!({}));
        resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("2"));
        resp.headers_mut().insert("RateLimit-Reason", axum::http::HeaderValue::from_static("jira-per-issue-on-write"));
        return Err(resp);
    }
    issue.writes.push(now);
    Ok(())
}

/// Comments one issue may hold (Jira Cloud's per-issue limit; 413 past it).
pub const COMMENTS_MAX: usize = 5_000;

#[derive(Debug, Default)]
struct Inner {
    /// A lower comment limit, for tests ([`FakeJira::set_comment_limit`]).
    comment_limit: Option<usize>,
    flavor: Option<Flavor>,
    auth: String,
    projects: Vec<String>,
    issues: Vec<Issue>,
    faults: VecDeque<(u16, Option<u64>)>,
    search_lag: Duration,
    /// Searches that named issues in `reconcileIssues`.
    reconciled_reads: u64,
    calls: u64,
    /// When each call arrived.
    call_times: Vec<tokio::time::Instant>,
    /// Requests allowed in any rolling minute (a tenant's burst limit) since a moment;
    /// `None`: not enforced.
    limit_per_minute: Option<(usize, tokio::time::Instant)>,
    /// Requests refused with 429 for being over it.
    throttled: u64,
    /// Transitions still to refuse with 400 (a workflow validator).
    refused_transitions: u32,
    /// Bytes of the issue reads answered (searches, issue reads), bodies only.
    read_bytes: u64,
    /// Issue reads answered (searches, issue reads).
    reads: u64,
    per_issue_refusals: u64,
    outbox: crate::vendor::Outbox,
    /// Create screens by (project, issue type name); a project/type without one takes
    /// whatever is sent (the older tests' Jira).
    screens: BTreeMap<(String, String), Vec<ScreenField>>,
    /// Create-metadata reads (`createmeta`), for tests.
    createmeta_reads: u64,
}

/// A field on a create screen, as `createmeta` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreenField {
    /// `customfield_10020`, `components`, `assignee`…
    pub id: String,
    /// Its name (`Severity`).
    pub name: String,
    /// Jira refuses a create without it (and without a default).
    pub required: bool,
    /// The schema type (`option`, `array`, `user`, `number`, `string`).
    pub schema: String,
}

impl ScreenField {
    /// A field `id` named `name` of schema type `schema`.
    pub fn new(id: &str, name: &str, schema: &str, required: bool) -> Self {
        Self { id: id.to_owned(), name: name.to_owned(), required, schema: schema.to_owned() }
    }
}

/// What every screen has (the sink always sets these).
fn system_fields() -> Vec<ScreenField> {
    vec![
        ScreenField::new("project", "Project", "project", true),
        ScreenField::new("issuetype", "Issue Type", "issuetype", true),
        ScreenField::new("summary", "Summary", "string", true),
        ScreenField::new("description", "Description", "string", false),
        ScreenField::new("labels", "Labels", "array", false),
        ScreenField::new("priority", "Priority", "priority", false),
    ]
}

/// Fields per createmeta page here (Jira's own limit is 200): small, so clients page.
const CREATEMETA_PAGE: usize = 10;

/// The id Jira gives issue type `name` (stable per name).
fn issue_type_id(name: &str) -> String {
    let sum: u32 = name.bytes().map(u32::from).sum();
    format!("{}", 10_000 + sum)
}

/// The account the API token belongs to (what `myself` answers).
pub const SERVICE_ACCOUNT: &str = "5b10a2844c20165700ede21g";

/// A person's account id on this Jira.
pub fn account_of(person: &str) -> String {
    format!("557058:{}", person.to_lowercase().replace(' ', "-"))
}

fn category(status: &str) -> &'static str {
    if status == "To Do" { "new" } else { "done" }
}

/// Sends `jira:issue_updated` for `issue`, by `by` (a person's name, or the service account
/// when `None`), with a status `change` (from, to) or a `comment`.
fn send_webhook(s: &Inner, issue: &Issue, by: Option<&str>, change: Option<(&str, &str)>, comment: Option<&str>) {
    let Some((secret, n)) = s.outbox.next() else { return };
    let user = match by {
        Some(p) => json!({"accountId": account_of(p), "accountType": "atlassian", "displayName": p,
                          "emailAddress": format!("{}@example.com", p.to_lowercase().replace(' ', "."))}),
        None => json!({"accountId": SERVICE_ACCOUNT, "accountType": "atlassian", "displayName": "SRE integration"}),
    };
    let mut body = json!({
        "timestamp": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        "webhookEvent": "jira:issue_updated",
        "issue_event_type_name": if comment.is_some() { "issue_commented" } else { "issue_generic" },
        "user": user,
        "issue": {"id": issue.id, "key": issue.key, "fields": {
            "summary": issue.summary, "labels": issue.labels,
            "status": {"name": issue.status, "statusCategory": {"key": category(&issue.status)}}}},
    });
    if let Some((from, to)) = change {
        body["changelog"] = json!({"id": n.to_string(), "items": [{"field": "status", "fieldtype": "jira",
            "fieldId": "status", "fromString": from, "toString": to}]});
    }
    if let Some(text) = comment {
        body["comment"] = json!({"id": format!("2{n:04}"), "body": text, "author": body["user"].clone()});
    }
    let body = body.to_string();
    let headers = vec![
        ("X-Hub-Signature".to_owned(), format!("sha256={}", crate::vendor::hmac_hex(&secret, body.as_bytes()))),
        ("X-Atlassian-Webhook-Identifier".to_owned(), format!("{n}")),
        ("User-Agent".to_owned(), "Atlassian Webhook HTTP Client".to_owned()),
    ];
    s.outbox.send("jira:issue_updated", by.unwrap_or(SERVICE_ACCOUNT), headers, body, crate::vendor::Retries::Jira);
}

/// Moves `key` to `to` if its workflow allows, telling the webhook; `false` otherwise. A
/// done status gets `resolution` (else `Done`); an open one none.
fn move_issue(s: &mut Inner, key: &str, to: &str, by: Option<&str>) -> bool {
    move_issue_with(s, key, to, None, by)
}

fn move_issue_with(s: &mut Inner, key: &str, to: &str, resolution: Option<&str>, by: Option<&str>) -> bool {
    let Some(issue) = s.issues.iter_mut().find(|i| i.key == key) else { return false };
    let allowed = transitions_from(&issue.status)
        .as_array()
        .is_some_and(|a| a.iter().any(|t| t.pointer("/to/name").and_then(Value::as_str) == Some(to)));
    if !allowed {
        return false;
    }
    if issue.indexed.as_ref().is_none_or(|(_, _, at)| at.elapsed() >= s.search_lag) {
        issue.indexed = Some((issue.status.clone(), issue.resolution.clone(), Instant::now()));
    }
    issue.resolution = (category(to) == "done").then(|| resolution.unwrap_or("Done").to_owned());
    let from = std::mem::replace(&mut issue.status, to.to_owned());
    let issue = issue.clone();
    send_webhook(s, &issue, by, Some((&from, to)), None);
    true
}

type Shared = Arc<Mutex<Inner>>;

/// A running test Jira; stops when dropped.
#[derive(Debug)]
pub struct FakeJira {
    state: Shared,
    latency: crate::vendor::Latency,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

fn errors(status: StatusCode, messages: &[&str], fields: Value) -> Response {
    (status, axum::Json(json!({"errorMessages": messages, "errors": fields}))).into_response()
}

#[allow(clippy::result_large_err, reason = "a test server; the error is the response")]
fn gate(s: &mut Inner, headers: &HeaderMap) -> Result<(), Response> {
    s.calls += 1;
    s.call_times.push(tokio::time::Instant::now());
    let presented = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if presented != s.auth {
        return Err(errors(
            StatusCode::UNAUTHORIZED,
            &["You are not authenticated. Authentication required to perform this operation."],
            json!({}),
        ));
    }
    if let Some((limit, since)) = s.limit_per_minute {
        let now = tokio::time::Instant::now();
        let minute_ago = now.checked_sub(Duration::from_secs(60)).map_or(since, |m| m.max(since));
        // This request is already in the log: over the limit when more than `limit` are.
        let recent = s.call_times.iter().filter(|t| **t >= minute_ago).count();
        if recent > limit {
            s.call_times.pop();
            s.throttled += 1;
            let mut resp = errors(StatusCode::TOO_MANY_REQUESTS, &["Rate limit exceeded."], json!({}));
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
            resp.headers_mut().insert("ratelimit-reason", axum::http::HeaderValue::from_static("jira-burst-based"));
            return Err(resp);
        }
    }
    if let Some((status, retry_after)) = s.faults.pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = errors(status, &["Rate limit exceeded."], json!({}));
        if let Some(secs) = retry_after
            && let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            resp.headers_mut().insert("RateLimit-Reason", axum::http::HeaderValue::from_static("jira-burst-based"));
        }
        return Err(resp);
    }
    Ok(())
}

fn is_adf(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("doc") && v.get("version").is_some() && v.get("content").is_some()
}

/// A rich-text value in the flavor's format, else the error Jira gives.
#[allow(clippy::result_large_err, reason = "a test server; the error is the response")]
fn rich_text(flavor: Flavor, field: &str, v: &Value) -> Result<(), Response> {
    match flavor {
        Flavor::Cloud if !is_adf(v) => Err(errors(
            StatusCode::BAD_REQUEST,
            &[],
            json!({field: "Operation value must be an Atlassian Document (see the Atlassian Document Format)"}),
        )),
        Flavor::DataCenter if !v.is_string() => {
            Err(errors(StatusCode::BAD_REQUEST, &[], json!({field: "Operation value must be a string"})))
        }
        _ if text_length(v) > TEXT_MAX => Err(errors(
            StatusCode::BAD_REQUEST,
            &[],
            json!({field: "The entered text is too long. It exceeds the allowed limit of 32,767 characters."}),
        )),
        _ => Ok(()),
    }
}

/// What Jira takes in one text field (a description, a comment), in characters.
pub const TEXT_MAX: usize = 32_767;

/// The characters of a wiki text, or of an Atlassian Document's text nodes.
fn text_length(v: &Value) -> usize {
    match v {
        Value::String(s) => s.chars().count(),
        Value::Object(o) => {
            let own = o.get("text").and_then(Value::as_str).map_or(0, |t| t.chars().count());
            own + o.get("content").map_or(0, text_length)
        }
        Value::Array(a) => a.iter().map(text_length).sum(),
        _ => 0,
    }
}

async fn page(State(state): State<Shared>) -> axum::response::Html<String> {
    let s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let rows: Vec<Vec<String>> = s
        .issues
        .iter()
        .map(|i| {
            vec![i.key.clone(), i.status.clone(), i.summary.clone(), i.labels.join(", "), i.comments.len().to_string()]
        })
        .collect();
    let actions: Vec<Vec<crate::vendor::Action>> = s
        .issues
        .iter()
        .map(|i| match i.status.as_str() {
            "To Do" => vec![("Resolve", "resolve", i.key.clone()), ("Close", "close", i.key.clone())],
            "Resolved" => vec![("Close", "close", i.key.clone()), ("Reopen", "reopen", i.key.clone())],
            _ => vec![("Reopen", "reopen", i.key.clone())],
        })
        .collect();
    crate::vendor::page_with_actions(
        "Test Jira",
        "Issues created.",
        &["key", "status", "summary", "labels", "comments"],
        &rows,
        &actions,
    )
}

async fn create(State(state): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    let flavor = s.flavor.unwrap_or(Flavor::Cloud);
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return errors(StatusCode::BAD_REQUEST, &["Unexpected character in the request body"], json!({}));
    };
    let fields = body.get("fields").cloned().unwrap_or_default();
    let project = fields.pointer("/project/key").and_then(Value::as_str).unwrap_or_default().to_owned();
    if !s.projects.contains(&project) {
        return errors(StatusCode::BAD_REQUEST, &[], json!({"project": "valid project is required"}));
    }
    if fields.pointer("/issuetype/name").and_then(Value::as_str).is_none_or(str::is_empty) {
        return errors(StatusCode::BAD_REQUEST, &[], json!({"issuetype": "Specify an issue type"}));
    }
    let summary = fields.get("summary").and_then(Value::as_str).unwrap_or_default().to_owned();
    if summary.is_empty() {
        return errors(StatusCode::BAD_REQUEST, &[], json!({"summary": "You must specify a summary of the issue."}));
    }
    if summary.chars().count() > 255 {
        return errors(StatusCode::BAD_REQUEST, &[], json!({"summary": "Summary must be less than 255 characters."}));
    }
    if summary.contains('\n') {
        return errors(
            StatusCode::BAD_REQUEST,
            &[],
            json!({"summary": "The summary is invalid because it contains newline characters."}),
        );
    }
    if let Some(d) = fields.get("description")
        && let Err(r) = rich_text(flavor, "description", d)
    {
        return r;
    }
    let labels: Vec<String> = fields
        .get("labels")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    if labels.iter().any(|l| l.contains(' ')) {
        return errors(StatusCode::BAD_REQUEST, &[], json!({"labels": "The label must not contain spaces."}));
    }
    if let Some(p) = fields.pointer("/priority/name").and_then(Value::as_str)
        && !["Highest", "High", "Medium", "Low", "Lowest"].contains(&p)
    {
        return errors(
            StatusCode::BAD_REQUEST,
            &[],
            json!({"priority": format!("The priority selected is invalid: {p}")}),
        );
    }
    let issue_type = fields.pointer("/issuetype/name").and_then(Value::as_str).unwrap_or_default().to_owned();
    if let Some(screen) = s.screens.get(&(project.clone(), issue_type.clone())) {
        let mut refused = serde_json::Map::new();
        for id in fields.as_object().into_iter().flat_map(|m| m.keys()) {
            if !screen.iter().any(|f| &f.id == id) {
                refused.insert(
                    id.clone(),
                    json!(format!("Field '{id}' cannot be set. It is not on the appropriate screen, or unknown.")),
                );
            }
        }
        for f in screen.iter().filter(|f| f.required) {
            if fields.get(&f.id).is_none_or(Value::is_null) {
                refused.insert(f.id.clone(), json!(format!("{} is required.", f.name)));
            }
        }
        if !refused.is_empty() {
            return errors(StatusCode::BAD_REQUEST, &[], Value::Object(refused));
        }
    } else if s.screens.keys().any(|(p, _)| *p == project) {
        return errors(StatusCode::BAD_REQUEST, &[], json!({"issuetype": "Specify a valid issue type"}));
    }
    let user_key = match flavor {
        Flavor::Cloud => "accountId",
        Flavor::DataCenter => "name",
    };
    if let Some(a) = fields.get("assignee").filter(|a| !a.is_null())
        && a.get(user_key).and_then(Value::as_str).is_none()
    {
        return errors(
            StatusCode::BAD_REQUEST,
            &[],
            json!({"assignee": format!("expected '{user_key}' property to be a string")}),
        );
    }
    let components: Vec<String> = fields
        .get("components")
        .and_then(Value::as_array)
        .map(|c| c.iter().filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_owned)).collect())
        .unwrap_or_default();
    let assignee = fields.get("assignee").and_then(|a| a.get(user_key)).and_then(Value::as_str).map(str::to_owned);
    let mut links = Vec::new();
    for link in body.pointer("/update/issuelinks").and_then(Value::as_array).into_iter().flatten() {
        let target = link.pointer("/add/outwardIssue/key").or(link.pointer("/add/inwardIssue/key"));
        match target.and_then(Value::as_str) {
            Some(k) if s.issues.iter().any(|i| i.key == k) => links.push(k.to_owned()),
            _ => {
                return errors(
                    StatusCode::BAD_REQUEST,
                    &[],
                    json!({"issuelinks": "The issue to link to does not exist."}),
                );
            }
        }
    }
    let n = s.issues.iter().filter(|i| i.project == project).count() + 1;
    let key = format!("{project}-{n}");
    let priority = fields.pointer("/priority/name").and_then(Value::as_str).map(str::to_owned);
    let id = 10_001 + s.issues.len();
    s.issues.push(Issue {
        id: id.to_string(),
        key: key.clone(),
        project,
        summary,
        fields,
        labels,
        status: "To Do".to_owned(),
        comments: Vec::new(),
        created: Instant::now(),
        resolution: None,
        priority,
        links,
        components,
        assignee,
        writes: Vec::new(),
        indexed: None,
    });
    (
        StatusCode::CREATED,
        axum::Json(json!({"id": id.to_string(), "key": key, "self": format!("/rest/api/issue/{id}")})),
    )
        .into_response()
}

/// `labels = "x"` and `project = "P"` from a JQL string (what the sink sends).
fn clause<'a>(jql: &'a str, field: &str) -> Option<&'a str> {
    let at = jql.find(&format!("{field} = \""))? + field.len() + 4;
    jql[at..].split('"').next()
}

/// The keys of `key in ("A-1", "B-2")`, the reconciler's query.
fn key_list(jql: &str) -> Option<Vec<&str>> {
    let rest = jql.trim_start().strip_prefix("key in (")?;
    let inner = rest.split(')').next()?;
    Some(inner.split(',').map(|k| k.trim().trim_matches('"')).filter(|k| !k.is_empty()).collect())
}

async fn search(State(state): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let jql = body.get("jql").and_then(Value::as_str).unwrap_or_default();
    // `reconcileIssues` (Cloud): ids read with read-after-write consistency, at most 50.
    let reconciled: Vec<String> = body
        .get("reconcileIssues")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .map(|id| id.to_string())
        .collect();
    if reconciled.len() > 50 {
        return errors(StatusCode::BAD_REQUEST, &["reconcileIssues accepts max 50 ids."], json!({}));
    }
    s.reconciled_reads += u64::from(!reconciled.is_empty());
    let fresh = |i: &Issue| reconciled.contains(&i.id);
    if let Some(keys) = key_list(jql) {
        // By key: the issues as the index has them (a change within the lag not yet seen),
        // those named in `reconcileIssues` as they are.
        let lag = s.search_lag;
        let found: Vec<Value> = s
            .issues
            .iter()
            .filter(|i| keys.contains(&i.key.as_str()) && (fresh(i) || i.created.elapsed() >= lag))
            .map(|i| {
                let (status, resolution) = match &i.indexed {
                    Some((status, resolution, at)) if at.elapsed() < lag && !fresh(i) => {
                        (status.clone(), resolution.clone())
                    }
                    _ => (i.status.clone(), i.resolution.clone()),
                };
                json!({"id": i.id, "key": i.key, "fields": {
                    "status": {"name": status, "statusCategory": {"key": category(&status)}},
                    "resolution": resolution.map(|r| json!({"name": r}))}})
            })
            .collect();
        let answer = match s.flavor.unwrap_or(Flavor::Cloud) {
            Flavor::Cloud => json!({"issues": found, "isLast": true}),
            Flavor::DataCenter => json!({"startAt": 0, "maxResults": 100, "total": found.len(), "issues": found}),
        };
        let body = answer.to_string();
        s.read_bytes += body.len() as u64;
        s.reads += 1;
        return ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    let (Some(project), Some(label)) = (clause(jql, "project"), clause(jql, "labels")) else {
        return errors(
            StatusCode::BAD_REQUEST,
            &["Unbounded JQL queries are not allowed here. Please add a search restriction."],
            json!({}),
        );
    };
    let lag = s.search_lag;
    let found: Vec<Value> = s
        .issues
        .iter()
        .filter(|i| {
            i.project == project && i.labels.iter().any(|l| l == label) && (fresh(i) || i.created.elapsed() >= lag)
        })
        .map(|i| json!({"id": i.id, "key": i.key, "fields": {}}))
        .collect();
    match s.flavor.unwrap_or(Flavor::Cloud) {
        Flavor::Cloud => axum::Json(json!({"issues": found, "isLast": true})).into_response(),
        Flavor::DataCenter => {
            axum::Json(json!({"startAt": 0, "maxResults": 50, "total": found.len(), "issues": found})).into_response()
        }
    }
}

fn transitions_from(status: &str) -> Value {
    let t = |id: &str, name: &str, to: &str, category: &str| json!({"id": id, "name": name, "to": {"name": to, "statusCategory": {"key": category}}, "hasScreen": false, "isAvailable": true});
    match status {
        "To Do" => json!([t("21", "Resolve", "Resolved", "done"), t("31", "Close", "Closed", "done")]),
        "Resolved" => json!([t("31", "Close", "Closed", "done"), t("41", "Reopen", "To Do", "new")]),
        _ => json!([t("41", "Reopen", "To Do", "new")]),
    }
}

async fn transitions(State(state): State<Shared>, Path(key): Path<String>, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    match s.issues.iter().find(|i| i.key == key) {
        Some(i) => axum::Json(json!({"transitions": transitions_from(&i.status)})).into_response(),
        None => {
            errors(StatusCode::NOT_FOUND, &["Issue does not exist or you do not have permission to see it."], json!({}))
        }
    }
}

async fn transition(
    State(state): State<Shared>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    if s.refused_transitions > 0 {
        // A workflow validator refusing the transition (a field it requires).
        s.refused_transitions -= 1;
        return errors(StatusCode::BAD_REQUEST, &[], json!({"resolution": "Resolution is required."}));
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = body.pointer("/transition/id").and_then(Value::as_str).unwrap_or_default().to_owned();
    if let Some(i) = s.issues.iter().position(|i| i.key == key)
        && let Err(r) = write_to(&mut s, i)
    {
        return r;
    }
    let Some(issue) = s.issues.iter_mut().find(|i| i.key == key) else {
        return errors(
            StatusCode::NOT_FOUND,
            &["Issue does not exist or you do not have permission to see it."],
            json!({}),
        );
    };
    let available = transitions_from(&issue.status);
    let Some(to) = available
        .as_array()
        .and_then(|a| a.iter().find(|t| t["id"] == id.as_str()))
        .and_then(|t| t.pointer("/to/name"))
        .and_then(Value::as_str)
    else {
        return errors(
            StatusCode::BAD_REQUEST,
            &[&format!("Transition id '{id}' is not valid for this issue.")],
            json!({}),
        );
    };
    let to = to.to_owned();
    move_issue(&mut s, &key, &to, None);
    StatusCode::NO_CONTENT.into_response()
}

async fn comment(
    State(state): State<Shared>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    let flavor = s.flavor.unwrap_or(Flavor::Cloud);
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let text = body.get("body").cloned().unwrap_or_default();
    if let Err(r) = rich_text(flavor, "comment", &text) {
        return r;
    }
    if let Some(i) = s.issues.iter().position(|i| i.key == key)
        && let Err(r) = write_to(&mut s, i)
    {
        return r;
    }
    if s.issues.iter().any(|i| i.key == key && i.comments.len() >= s.comment_limit.unwrap_or(COMMENTS_MAX)) {
        return errors(
            StatusCode::PAYLOAD_TOO_LARGE,
            &["The issue has reached the maximum number of comments."],
            json!({}),
        );
    }
    let Some(issue) = s.issues.iter_mut().find(|i| i.key == key) else {
        return errors(
            StatusCode::NOT_FOUND,
            &["Issue does not exist or you do not have permission to see it."],
            json!({}),
        );
    };
    issue.comments.push(text.clone());
    let (id, issue) = (issue.comments.len().to_string(), issue.clone());
    let shown = text.as_str().map_or_else(|| text.to_string(), str::to_owned);
    send_webhook(&s, &issue, None, None, Some(&shown));
    (StatusCode::CREATED, axum::Json(json!({"id": id, "body": text}))).into_response()
}

fn not_found() -> Response {
    errors(StatusCode::NOT_FOUND, &["Issue does not exist or you do not have permission to see it."], json!({}))
}

/// `GET /issue/{key}`: its status (with category), resolution, priority, labels, links.
async fn get_issue(State(state): State<Shared>, Path(key): Path<String>, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    let Some(i) = s.issues.iter().find(|i| i.key == key) else { return not_found() };
    let answer = json!({"key": i.key, "fields": {
        "summary": i.summary, "labels": i.labels,
        "status": {"name": i.status, "statusCategory": {"key": category(&i.status)}},
        "resolution": i.resolution.as_ref().map(|r| json!({"name": r})),
        "priority": i.priority.as_ref().map(|p| json!({"name": p})),
        "issuelinks": i.links.iter().map(|k| json!({"type": {"name": "Relates"}, "outwardIssue": {"key": k}})).collect::<Vec<_>>(),
    }});
    let body = answer.to_string();
    s.read_bytes += body.len() as u64;
    s.reads += 1;
    ([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `PUT /issue/{key}`: edits (the priority), 204.
async fn edit_issue(
    State(state): State<Shared>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    let Some(i) = s.issues.iter().position(|i| i.key == key) else { return not_found() };
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let other: serde_json::Map<String, Value> = body
        .get("fields")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter(|(k, _)| k.as_str() != "priority").map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let add_labels: Vec<String> = body
        .pointer("/update/labels")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(|a| a.get("add").and_then(Value::as_str).map(str::to_owned)).collect())
        .unwrap_or_default();
    if !other.is_empty() || !add_labels.is_empty() {
        if body.pointer("/fields/priority/name").is_none()
            && let Err(r) = write_to(&mut s, i)
        {
            return r;
        }
        let flavor = s.flavor.unwrap_or(Flavor::Cloud);
        edit_fields(&mut s.issues[i], flavor, &other);
        for l in add_labels {
            if !s.issues[i].labels.contains(&l) {
                s.issues[i].labels.push(l);
            }
        }
    }
    if let Some(p) = body.pointer("/fields/priority/name").and_then(Value::as_str) {
        if !["Highest", "High", "Medium", "Low", "Lowest"].contains(&p) {
            return errors(
                StatusCode::BAD_REQUEST,
                &[],
                json!({"priority": format!("The priority selected is invalid: {p}")}),
            );
        }
        if let Err(r) = write_to(&mut s, i) {
            return r;
        }
        s.issues[i].priority = Some(p.to_owned());
        let issue = s.issues[i].clone();
        send_webhook(&s, &issue, None, None, None);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Applies an edit's `fields` to `issue` (components and assignee kept apart, the rest
/// merged into its fields).
fn edit_fields(issue: &mut Issue, flavor: Flavor, fields: &serde_json::Map<String, Value>) {
    let user_key = match flavor {
        Flavor::Cloud => "accountId",
        Flavor::DataCenter => "name",
    };
    for (k, v) in fields {
        match k.as_str() {
            "components" => {
                issue.components = v
                    .as_array()
                    .map(|c| {
                        c.iter().filter_map(|x| x.get("name").and_then(Value::as_str).map(str::to_owned)).collect()
                    })
                    .unwrap_or_default();
            }
            "assignee" => issue.assignee = v.get(user_key).and_then(Value::as_str).map(str::to_owned),
            _ => {}
        }
        if let Some(m) = issue.fields.as_object_mut() {
            m.insert(k.clone(), v.clone());
        }
    }
}

/// `GET /issue/createmeta/{project}/issuetypes`: the project's issue types (Cloud pages
/// them as `issueTypes`, Data Center as `values`).
async fn createmeta_types(State(state): State<Shared>, Path(project): Path<String>, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    s.createmeta_reads += 1;
    if !s.projects.contains(&project) {
        return errors(
            StatusCode::NOT_FOUND,
            &[format!("No project could be found with key '{project}'.").as_str()],
            json!({}),
        );
    }
    let mut names: Vec<String> = s.screens.keys().filter(|(p, _)| *p == project).map(|(_, t)| t.clone()).collect();
    if names.is_empty() {
        names = ["Bug", "Task", "Incident"].map(str::to_owned).to_vec();
    }
    let types: Vec<Value> =
        names.iter().map(|n| json!({"id": issue_type_id(n), "name": n, "subtask": false})).collect();
    let key = if s.flavor == Some(Flavor::DataCenter) { "values" } else { "issueTypes" };
    axum::Json(json!({key: types, "maxResults": 50, "startAt": 0, "total": types.len(), "isLast": true}))
        .into_response()
}

/// `GET /issue/createmeta/{project}/issuetypes/{id}`: the create screen's fields (Cloud:
/// `fields`, Data Center: `values`).
async fn createmeta_fields(
    State(state): State<Shared>,
    Path((project, id)): Path<(String, String)>,
    axum::extract::Query(page): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    s.createmeta_reads += 1;
    let screen = s
        .screens
        .iter()
        .find(|((p, t), _)| *p == project && issue_type_id(t) == id)
        .map(|(_, f)| f.clone())
        .unwrap_or_else(|| {
            let mut f = system_fields();
            f.push(ScreenField::new("components", "Components", "array", false));
            f.push(ScreenField::new("assignee", "Assignee", "user", false));
            f
        });
    let fields: Vec<Value> = screen
        .iter()
        .map(|f| {
            json!({"fieldId": f.id, "key": f.id, "name": f.name, "required": f.required, "hasDefaultValue": false,
                   "schema": {"type": f.schema}, "operations": ["set"]})
        })
        .collect();
    let key = if s.flavor == Some(Flavor::DataCenter) { "values" } else { "fields" };
    // Paged as Jira pages it (`startAt`, `maxResults`), by at most CREATEMETA_PAGE here (Jira
    // goes to 200), so a client's paging is exercised by every screen of the tests.
    let start: usize = page.get("startAt").and_then(|v| v.parse().ok()).unwrap_or(0);
    let max: usize = page.get("maxResults").and_then(|v| v.parse().ok()).unwrap_or(50).min(CREATEMETA_PAGE);
    let total = fields.len();
    let fields: Vec<Value> = fields.into_iter().skip(start).take(max).collect();
    let last = start + fields.len() >= total;
    axum::Json(json!({key: fields, "maxResults": max, "startAt": start, "total": total, "isLast": last}))
        .into_response()
}

/// `GET /issue/{key}/comment`: the comments, newest first (`orderBy=-created`).
async fn list_comments(State(state): State<Shared>, Path(key): Path<String>, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Err(r) = gate(&mut s, &headers) {
        return r;
    }
    let Some(i) = s.issues.iter().find(|i| i.key == key) else { return not_found() };
    let comments: Vec<Value> =
        i.comments.iter().enumerate().rev().map(|(n, body)| json!({"id": (n + 1).to_string(), "body": body})).collect();
    axum::Json(json!({"startAt": 0, "maxResults": 100, "total": comments.len(), "comments": comments})).into_response()
}

async fn press(
    State(state): State<Shared>,
    Path(verb): Path<String>,
    axum::extract::Query(p): axum::extract::Query<crate::vendor::Pressed>,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let to = match verb.as_str() {
        "resolve" => "Resolved",
        "close" => "Closed",
        _ => "To Do",
    };
    move_issue(&mut s, &p.key, to, Some(crate::vendor::PERSON));
    crate::vendor::back()
}

async fn myself(State(state): State<Shared>, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    match gate(&mut s, &headers) {
        Ok(()) => axum::Json(json!({"accountId": SERVICE_ACCOUNT, "active": true})).into_response(),
        Err(r) => r,
    }
}

impl FakeJira {
    /// Starts on a free loopback port with these projects. `authorization` is the exact
    /// header value expected (`Basic …` for Cloud, `Bearer …` for DC).
    pub async fn start(flavor: Flavor, authorization: &str, projects: &[&str]) -> std::io::Result<Self> {
        Self::start_on(0, flavor, authorization, projects).await
    }

    /// Starts on `127.0.0.1:<port>` (0: a free one).
    pub async fn start_on(port: u16, flavor: Flavor, authorization: &str, projects: &[&str]) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(Inner {
            flavor: Some(flavor),
            auth: authorization.to_owned(),
            projects: projects.iter().map(|p| (*p).to_owned()).collect(),
            ..Inner::default()
        }));
        let api = match flavor {
            Flavor::Cloud => "/rest/api/3",
            Flavor::DataCenter => "/rest/api/2",
        };
        let search_path = match flavor {
            Flavor::Cloud => format!("{api}/search/jql"),
            Flavor::DataCenter => format!("{api}/search"),
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = Router::new()
            .route(&format!("{api}/issue"), post(create))
            .route(&search_path, post(search))
            .route(&format!("{api}/issue/{{key}}/transitions"), get(transitions).post(transition))
            .route(&format!("{api}/issue/{{key}}/comment"), post(comment).get(list_comments))
            .route(&format!("{api}/issue/{{key}}"), get(get_issue).put(edit_issue))
            .route(&format!("{api}/myself"), get(myself))
            .route(&format!("{api}/issue/createmeta/{{project}}/issuetypes"), get(createmeta_types))
            .route(&format!("{api}/issue/createmeta/{{project}}/issuetypes/{{id}}"), get(createmeta_fields))
            .route("/", get(page))
            .route("/_person/{verb}", post(press))
            .with_state(state.clone());
        let latency = crate::vendor::Latency::default();
        let app = latency.wrap(app);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { state, latency, url, task })
    }

    /// Every answer from now on takes `delay` longer (a slow Jira).
    pub fn set_latency(&self, delay: Duration) {
        self.latency.set(delay);
    }

    /// Every request from now on is carried out at once and answered `delay` later: a
    /// caller that dies meanwhile leaves work done that it never heard about.
    pub fn set_answer_delay(&self, delay: Duration) {
        self.latency.set_after(delay);
    }

    /// Every write from now on is done at once and answered `delay` later; reads answer at
    /// once.
    pub fn set_write_answer_delay(&self, delay: Duration) {
        self.latency.set_after_writes(delay);
    }

    /// Requests carried out whose answers [`Self::set_answer_delay`] still holds back.
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

    /// Every issue.
    pub fn issues(&self) -> Vec<Issue> {
        self.with(|s| s.issues.clone())
    }

    /// Answers the next requests with these statuses (and Retry-After seconds) instead.
    pub fn fail_next(&self, faults: &[(u16, Option<u64>)]) {
        self.with(|s| s.faults.extend(faults.iter().copied()));
    }

    /// Search sees an issue only this long after its creation (Cloud's eventual
    /// consistency).
    pub fn set_search_lag(&self, lag: Duration) {
        self.with(|s| s.search_lag = lag);
    }

    /// Adds an issue as if created earlier by someone (for crash-recovery tests).
    pub fn seed(&self, project: &str, summary: &str, labels: &[&str]) -> String {
        self.with(|s| {
            let n = s.issues.iter().filter(|i| i.project == project).count() + 1;
            let key = format!("{project}-{n}");
            let id = (10_001 + s.issues.len()).to_string();
            s.issues.push(Issue {
                id,
                key: key.clone(),
                project: project.to_owned(),
                summary: summary.to_owned(),
                fields: json!({}),
                labels: labels.iter().map(|l| (*l).to_owned()).collect(),
                status: "To Do".to_owned(),
                comments: Vec::new(),
                created: Instant::now() - Duration::from_secs(3600),
                resolution: None,
                priority: None,
                links: Vec::new(),
                components: Vec::new(),
                assignee: None,
                writes: Vec::new(),
                indexed: None,
            });
            key
        })
    }

    /// Subscribes an admin webhook (`http://127.0.0.1:<port>/<path>`) signed with `secret`.
    pub fn subscribe(&self, url: &str, secret: &str) {
        self.with(|s| s.outbox.subscribe(url, secret));
    }

    /// A person moves `key` to `status` (`Resolved`, `Closed`, `To Do`) in Jira, as its
    /// workflow allows; the webhook hears of it. `false` when the workflow does not allow it.
    pub fn transition_as(&self, key: &str, status: &str, person: &str) -> bool {
        self.with(|s| move_issue(s, key, status, Some(person)))
    }

    /// A person moves `key` to the done `status` with `resolution` (e.g. `Won't Fix`).
    pub fn resolve_as_with(&self, key: &str, status: &str, resolution: &str, person: &str) -> bool {
        self.with(|s| move_issue_with(s, key, status, Some(resolution), Some(person)))
    }

    /// Sets the create screen of `issue_type` in `project`: creates then take exactly the
    /// system fields and `fields` (400 naming any other), and refuse one without a required
    /// field (400 "<Name> is required."); `createmeta` lists them.
    pub fn set_screen(&self, project: &str, issue_type: &str, fields: &[ScreenField]) {
        self.with(|s| {
            let mut all = system_fields();
            all.extend(fields.iter().cloned());
            s.screens.insert((project.to_owned(), issue_type.to_owned()), all);
        });
    }

    /// Reads of the create metadata so far.
    pub fn createmeta_reads(&self) -> u64 {
        self.with(|s| s.createmeta_reads)
    }

    /// A person edits `key`'s `fields` (`{"assignee": {...}, "components": [...]}`), as in
    /// Jira's own editor: the webhook says so.
    pub fn edit_as(&self, key: &str, fields: Value, person: &str) -> bool {
        self.with(|s| {
            let Some(i) = s.issues.iter().position(|i| i.key == key) else { return false };
            let flavor = s.flavor.unwrap_or(Flavor::Cloud);
            edit_fields(&mut s.issues[i], flavor, fields.as_object().unwrap_or(&serde_json::Map::new()));
            let issue = s.issues[i].clone();
            send_webhook(s, &issue, Some(person), None, None);
            true
        })
    }

    /// Writes refused by the per-issue limit so far.
    pub fn per_issue_refusals(&self) -> u64 {
        self.with(|s| s.per_issue_refusals)
    }

    /// A person comments on `key`; `false` when there is no such issue.
    pub fn comment_as(&self, key: &str, text: &str, person: &str) -> bool {
        self.with(|s| {
            let Some(issue) = s.issues.iter_mut().find(|i| i.key == key) else { return false };
            issue.comments.push(json!(text));
            let issue = issue.clone();
            send_webhook(s, &issue, Some(person), None, Some(text));
            true
        })
    }

    /// Webhooks delivered so far, in the order they ended.
    pub fn webhooks(&self) -> Vec<crate::vendor::Delivery> {
        self.with(|s| s.outbox.delivered())
    }

    /// Lets an issue hold only `n` comments (Jira Cloud allows 5,000), so a test reaches
    /// the limit.
    pub fn set_comment_limit(&self, n: usize) {
        self.with(|s| s.comment_limit = Some(n));
    }

    /// Webhooks sent whose delivery has not ended yet (0: every one was answered).
    pub fn webhooks_in_flight(&self) -> u64 {
        self.with(|s| s.outbox.in_flight())
    }

    /// From now on, refuses with 429 (`Retry-After: 5`, `RateLimit-Reason:
    /// jira-burst-based`) every request past `per_minute` in the last rolling minute
    /// (requests before now not counted).
    pub fn set_rate_limit(&self, per_minute: usize) {
        self.with(|s| s.limit_per_minute = Some((per_minute, tokio::time::Instant::now())));
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

    /// Refuses the next `n` transitions with 400, as a workflow validator requiring a field
    /// does (`{"errors": {"resolution": "Resolution is required."}}`).
    pub fn refuse_transitions(&self, n: u32) {
        self.with(|s| s.refused_transitions = n);
    }

    /// Bytes of the issue reads answered so far (searches by key and issue reads, bodies
    /// only).
    pub fn read_bytes(&self) -> u64 {
        self.with(|s| s.read_bytes)
    }

    /// Searches that named issues in `reconcileIssues` (read-after-write consistent).
    pub fn reconciled_searches(&self) -> u64 {
        self.with(|s| s.reconciled_reads)
    }

    /// Issue reads answered so far (searches by key and issue reads).
    pub fn reads(&self) -> u64 {
        self.with(|s| s.reads)
    }

    /// Requests refused for being over [`Self::set_rate_limit`].
    pub fn throttled(&self) -> u64 {
        self.with(|s| s.throttled)
    }

    /// When each request arrived, faults included, refusals for the rate limit not (in order).
    pub fn call_times(&self) -> Vec<tokio::time::Instant> {
        self.with(|s| s.call_times.clone())
    }

    /// Requests received.
    pub fn calls(&self) -> u64 {
        self.with(|s| s.calls)
    }
}

impl Drop for FakeJira {
    fn drop(&mut self) {
        self.task.abort();
    }
}
