//! A test GitHub Issues API, faithful to the contract notes: a mandatory `User-Agent`,
//! Bearer auth, rate-limit headers on every answer, create (201), list for a repository
//! by label and state (newest first, or by `updated` with `since`), with an `ETag` and a
//! 304 for an unchanged conditional list (not counted against the limit), get one, comments (post and list), `POST …/labels`
//! that adds and `DELETE …/labels/{name}` that removes one, `PATCH` that closes with a
//! `state_reason` or reopens (and replaces labels when given), `basic-error` and
//! `validation-error` bodies, and injected primary or secondary rate limits.
//!
//! With a repository webhook ([`FakeGithub::subscribe`]) every open, close, reopen and
//! comment, the sink's own included (as the GitHub App `BOT`), is sent as GitHub sends it:
//! `issues` / `issue_comment` with `X-GitHub-Event`, `X-GitHub-Delivery` and
//! `X-Hub-Signature-256: sha256=<hex>`; never retried (GitHub does not). A person acts with
//! [`FakeGithub::close_as`], [`FakeGithub::reopen_as`], [`FakeGithub::comment_as`] or the
//! page's buttons. [`FakeGithub::hold_webhooks`] keeps webhooks back (a receiver outage)
//! until [`FakeGithub::release_webhooks`] delivers them late.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// One issue.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    /// Its number.
    pub number: u64,
    /// Repository `owner/name`.
    pub repo: String,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Label names.
    pub labels: Vec<String>,
    /// `open` or `closed`.
    pub state: String,
    /// `completed`, `not_planned`, … once closed.
    pub state_reason: Option<String>,
    /// Comment bodies.
    pub comments: Vec<String>,
    /// Assignees' logins.
    pub assignees: Vec<String>,
    /// Milestone number.
    pub milestone: Option<u64>,
    /// When it last changed (state, labels, comments), as `since` filters.
    pub updated_at: jiff::Timestamp,
}

/// An injected failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 403 with `x-ratelimit-remaining: 0` and a reset in `n` seconds.
    PrimaryRateLimit(u64),
    /// 403 "You have exceeded a secondary rate limit" with `retry-after: n`.
    SecondaryRateLimit(u64),
    /// This status with a basic-error body.
    Status(u16),
}

#[derive(Debug, Default)]
struct Inner {
    token: String,
    repos: Vec<String>,
    issues: Vec<Issue>,
    faults: VecDeque<Fault>,
    calls: u64,
    /// Conditional lists answered 304 (not counted in `calls`).
    conditional_hits: u64,
    /// When each call arrived.
    call_times: Vec<tokio::time::Instant>,
    outbox: crate::vendor::Outbox,
    /// The token may not push (`set_push_access(false)`): GitHub drops labels, assignees
    /// and the milestone of a new issue without a word.
    read_only: bool,
}

/// The login the sink's token acts as (a GitHub App's bot user).
pub const BOT: &str = "sre-integration[bot]";

/// Sends `event` (`issues`, `issue_comment`) with `action` on `issue`, by a person's login or
/// (`None`) the sink's bot.
fn send_webhook(s: &Inner, event: &str, action: &str, issue: &Issue, by: Option<&str>, comment: Option<&str>) {
    let Some((secret, n)) = s.outbox.next() else { return };
    let sender = match by {
        Some(p) => json!({"login": p.to_lowercase().replace(' ', "-"), "id": 5_000 + p.len(), "type": "User"}),
        None => json!({"login": BOT, "id": 41_898_282, "type": "Bot"}),
    };
    let now = jiff::Timestamp::now().to_string();
    let mut issue_json = issue_json(issue);
    issue_json["updated_at"] = json!(now);
    let mut body = json!({"action": action, "issue": issue_json,
        "repository": {"full_name": issue.repo, "id": 1_296_269}, "sender": sender});
    if let Some(text) = comment {
        body["comment"] = json!({"id": 9_000 + n, "body": text, "created_at": now,
            "html_url": format!("https://github.example/{}/issues/{}#issuecomment-{}", issue.repo, issue.number, 9_000 + n),
            "user": body["sender"].clone()});
    }
    let body = body.to_string();
    let headers = vec![
        ("X-GitHub-Event".to_owned(), event.to_owned()),
        ("X-GitHub-Delivery".to_owned(), format!("72d3162e-cc78-11e3-81ab-{n:012x}")),
        ("X-Hub-Signature-256".to_owned(), format!("sha256={}", crate::vendor::hmac_hex(&secret, body.as_bytes()))),
        ("User-Agent".to_owned(), "GitHub-Hookshot/044aadd".to_owned()),
    ];
    s.outbox.send(&format!("{event}.{action}"), by.unwrap_or(BOT), headers, body, crate::vendor::Retries::Never);
}

/// Closes (`closed`) or reopens (`open`) `repo#number`, telling the webhook.
fn set_state(s: &mut Inner, repo: &str, number: u64, to: &str, reason: Option<&str>, by: Option<&str>) -> bool {
    let Some(i) = s.issues.iter_mut().find(|i| i.repo == repo && i.number == number && i.state != to) else {
        return false;
    };
    i.state = to.to_owned();
    i.state_reason = reason.map(str::to_owned);
    i.updated_at = jiff::Timestamp::now();
    let issue = i.clone();
    send_webhook(s, "issues", if to == "closed" { "closed" } else { "reopened" }, &issue, by, None);
    true
}

type Shared = Arc<Mutex<Inner>>;

/// A running test GitHub; stops when dropped.
#[derive(Debug)]
pub struct FakeGithub {
    state: Shared,
    latency: crate::vendor::Latency,
    /// Requests in service now, and the most at once.
    at_once: Arc<(AtomicUsize, AtomicUsize)>,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

fn epoch_in(secs: u64) -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) + secs
}

fn basic(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"message": message, "documentation_url": "https://docs.github.com/rest", "status": status.as_u16().to_string()})))
        .into_response()
}

fn with_rate_headers(mut resp: Response, remaining: u64, reset_in: u64) -> Response {
    let h = resp.headers_mut();
    for (k, v) in [
        ("x-ratelimit-limit", "5000".to_owned()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-used", (5000 - remaining.min(5000)).to_string()),
        ("x-ratelimit-reset", epoch_in(reset_in).to_string()),
        ("x-ratelimit-resource", "core".to_owned()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    resp
}

#[allow(clippy::result_large_err, reason = "a test server; the error is the response")]
fn gate(s: &mut Inner, headers: &HeaderMap, repo: Option<&str>) -> Result<(), Response> {
    s.calls += 1;
    s.call_times.push(tokio::time::Instant::now());
    if headers.get("user-agent").is_none() {
        return Err(basic(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
        ));
    }
    let presented = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if presented != Some(s.token.as_str()) {
        return Err(basic(StatusCode::UNAUTHORIZED, "Bad credentials"));
    }
    if let Some(fault) = s.faults.pop_front() {
        return Err(match fault {
            Fault::PrimaryRateLimit(n) => {
                with_rate_headers(basic(StatusCode::FORBIDDEN, "API rate limit exceeded for installation."), 0, n)
            }
            Fault::SecondaryRateLimit(n) => {
                let mut r = with_rate_headers(
                    basic(
                        StatusCode::FORBIDDEN,
                        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                    ),
                    4000,
                    3600,
                );
                if let Ok(v) = HeaderValue::from_str(&n.to_string()) {
                    r.headers_mut().insert("retry-after", v);
                }
                r
            }
            Fault::Status(code) => {
                basic(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "Server Error")
            }
        });
    }
    if let Some(repo) = repo
        && !s.repos.iter().any(|r| r == repo)
    {
        return Err(basic(StatusCode::NOT_FOUND, "Not Found"));
    }
    Ok(())
}

fn issue_json(i: &Issue) -> Value {
    json!({
        "id": 1_000_000 + i.number, "number": i.number, "title": i.title, "body": i.body, "state": i.state,
        "state_reason": i.state_reason, "labels": i.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>(),
        "html_url": format!("https://github.example/{}/issues/{}", i.repo, i.number),
        "updated_at": i.updated_at.to_string(),
        "url": format!("https://api.github.example/repos/{}/issues/{}", i.repo, i.number),
    })
}

fn ok(status: StatusCode, body: Value) -> Response {
    with_rate_headers((status, axum::Json(body)).into_response(), 4999, 3600)
}

async fn repo_get(State(state): State<Shared>, Path((o, r)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let repo = format!("{o}/{r}");
    match gate(&mut s, &headers, Some(&repo)) {
        Ok(()) => {
            let push = !s.read_only;
            ok(
                StatusCode::OK,
                json!({"full_name": repo, "has_issues": true, "permissions":
                    {"admin": false, "maintain": false, "push": push, "triage": push, "pull": true}}),
            )
        }
        Err(e) => e,
    }
}

/// What GitHub takes in an issue's or a comment's body, in characters.
pub const BODY_MAX: usize = 65_536;

/// GitHub's 422 for a body over [`BODY_MAX`].
fn too_long(resource: &str, body: Option<&Value>) -> Option<Response> {
    let length = body.and_then(Value::as_str).map_or(0, |b| b.chars().count());
    (length > BODY_MAX).then(|| {
        let error = json!({"message": "Validation Failed", "errors": [{"resource": resource, "code": "custom",
            "field": "body", "message": "body is too long (maximum is 65536 characters)"}]});
        (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(error)).into_response()
    })
}

async fn create(
    State(state): State<Shared>,
    Path((o, r)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let repo = format!("{o}/{r}");
    if let Err(e) = gate(&mut s, &headers, Some(&repo)) {
        return e;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let title = body.get("title").and_then(Value::as_str).unwrap_or_default().to_owned();
    if title.is_empty() {
        return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({"message": "Validation Failed",
            "errors": [{"resource": "Issue", "field": "title", "code": "missing_field"}], "documentation_url": "https://docs.github.com/rest/issues/issues#create-an-issue"})))
            .into_response();
    }
    if let Some(refused) = too_long("Issue", body.get("body")) {
        return refused;
    }
    let strings = |key: &str| -> Vec<String> {
        body.get(key)
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    // Without push access GitHub drops these silently (and still answers 201).
    let (labels, assignees, milestone) = if s.read_only {
        (Vec::new(), Vec::new(), None)
    } else {
        (strings("labels"), strings("assignees"), body.get("milestone").and_then(Value::as_u64))
    };
    let number = s.issues.iter().filter(|i| i.repo == repo).count() as u64 + 1;
    let issue = Issue {
        number,
        repo,
        title,
        body: body.get("body").and_then(Value::as_str).unwrap_or_default().to_owned(),
        labels,
        state: "open".to_owned(),
        state_reason: None,
        comments: Vec::new(),
        assignees,
        milestone,
        updated_at: jiff::Timestamp::now(),
    };
    let json = issue_json(&issue);
    send_webhook(&s, "issues", "opened", &issue, None, None);
    s.issues.push(issue);
    ok(StatusCode::CREATED, json)
}

async fn list(
    State(state): State<Shared>,
    Path((o, r)): Path<(String, String)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let repo = format!("{o}/{r}");
    if let Err(e) = gate(&mut s, &headers, Some(&repo)) {
        return e;
    }
    let labels: Vec<&str> = q.get("labels").map(|l| l.split(',').collect()).unwrap_or_default();
    let state_filter = q.get("state").map_or("open", String::as_str);
    let since: Option<jiff::Timestamp> = q.get("since").and_then(|t| t.parse().ok());
    let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(30).min(100);
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
    let mut found: Vec<&Issue> = s
        .issues
        .iter()
        .filter(|i| i.repo == repo && labels.iter().all(|l| i.labels.iter().any(|x| x == l)))
        .filter(|i| state_filter == "all" || i.state == state_filter)
        .filter(|i| since.is_none_or(|t| i.updated_at >= t))
        .collect();
    if q.get("sort").map(String::as_str) == Some("updated") {
        found.sort_by_key(|i| i.updated_at);
        if q.get("direction").map(String::as_str) != Some("asc") {
            found.reverse();
        }
    } else {
        found.sort_by_key(|i| std::cmp::Reverse(i.number));
    }
    let page: Vec<Value> = found.into_iter().skip((page - 1) * per_page).take(per_page).map(issue_json).collect();
    // A conditional request whose answer has not changed is 304, and costs no rate limit.
    let body = json!(page);
    let etag = format!("W/\"{}\"", crate::vendor::hmac_hex("etag", body.to_string().as_bytes()));
    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        s.calls -= 1;
        s.conditional_hits += 1;
        return (StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response();
    }
    let mut answer = ok(StatusCode::OK, body);
    if let Ok(v) = HeaderValue::from_str(&etag) {
        answer.headers_mut().insert("etag", v);
    }
    answer
}

async fn comment(
    State(state): State<Shared>,
    Path((o, r, n)): Path<(String, String, u64)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let repo = format!("{o}/{r}");
    if let Err(e) = gate(&mut s, &headers, Some(&repo)) {
        return e;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(text) = body.get("body").and_then(Value::as_str).map(str::to_owned) else {
        return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({"message": "Validation Failed", "errors": [{"resource": "IssueComment", "field": "body", "code": "missing_field"}]}))).into_response();
    };
    if let Some(refused) = too_long("IssueComment", body.get("body")) {
        return refused;
    }
    match s.issues.iter_mut().find(|i| i.repo == repo && i.number == n) {
        Some(i) => {
            i.comments.push(text.clone());
            i.updated_at = jiff::Timestamp::now();
            let (id, issue) = (i.comments.len(), i.clone());
            send_webhook(&s, "issue_comment", "created", &issue, None, Some(&text));
            ok(StatusCode::CREATED, json!({"id": id, "body": text}))
        }
        None => basic(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn get_issue(
    State(state): State<Shared>,
    Path((o, r, n)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let repo = format!("{o}/{r}");
    if let Err(e) = gate(&mut s, &headers, Some(&repo)) {
        return e;
    }
    match s.issues.iter().find(|i| i.repo == repo && i.number == n) {
        Some(i) => ok(StatusCode::OK, issue_json(i)),
        None => basic(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn list_comments(
    State(state): State<Shared>,
    Path((o, r, n)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let repo = format!("{o}/{r}");
    if let Err(e) = gate(&mut s, &headers, Some(&repo)) {
        return e;
    }
    match s.issues.iter().find(|i| i.repo == repo && i.number == n) {
        Some(i) => ok(
            StatusCode::OK,
            json!(i.comments.iter().enumerate().map(|(k, c)| json!({"id": k + 1, "body": c})).collect::<Vec<_>>()),
        ),
        None => basic(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn remove_label(
    State(state): State<Shared>,
    Path((o, r, n, name)): Path<(String, String, u64, String)>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let repo = format!("{o}/{r}");
    if let Err(e) = gate(&mut s, &headers, Some(&repo)) {
        return e;
    }
    let Some(i) = s.issues.iter_mut().find(|i| i.repo == repo && i.number == n) else {
        return basic(StatusCode::NOT_FOUND, "Not Found");
    };
    if !i.labels.contains(&name) {
        return basic(StatusCode::NOT_FOUND, "Label does not exist");
    }
    i.labels.retain(|l| *l != name);
    i.updated_at = jiff::Timestamp::now();
    ok(StatusCode::OK, json!(i.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>()))
}

async fn add_labels(
    State(state): State<Shared>,
    Path((o, r, n)): Path<(String, String, u64)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let repo = format!("{o}/{r}");
    if let Err(e) = gate(&mut s, &headers, Some(&repo)) {
        return e;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let add: Vec<String> = body
        .get("labels")
        .or(Some(&body))
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    if add.is_empty() {
        return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({"message": "Validation Failed"}))).into_response();
    }
    match s.issues.iter_mut().find(|i| i.repo == repo && i.number == n) {
        Some(i) => {
            i.updated_at = jiff::Timestamp::now();
            for l in add {
                if !i.labels.contains(&l) {
                    i.labels.push(l);
                }
            }
            ok(StatusCode::OK, json!(i.labels.iter().map(|l| json!({"name": l})).collect::<Vec<_>>()))
        }
        None => basic(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn update(
    State(state): State<Shared>,
    Path((o, r, n)): Path<(String, String, u64)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let repo = format!("{o}/{r}");
    if let Err(e) = gate(&mut s, &headers, Some(&repo)) {
        return e;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(i) = s.issues.iter_mut().find(|i| i.repo == repo && i.number == n) else {
        return basic(StatusCode::NOT_FOUND, "Not Found");
    };
    if let Some(labels) = body.get("labels").and_then(Value::as_array) {
        i.labels = labels.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
        i.updated_at = jiff::Timestamp::now();
    }
    if let Some(new_state) = body.get("state").and_then(Value::as_str) {
        let reason = body.get("state_reason").and_then(Value::as_str).map(str::to_owned);
        set_state(&mut s, &repo, n, new_state, reason.as_deref(), None);
    }
    let Some(i) = s.issues.iter().find(|i| i.repo == repo && i.number == n) else {
        return basic(StatusCode::NOT_FOUND, "Not Found");
    };
    let json = issue_json(i);
    ok(StatusCode::OK, json)
}

async fn page(State(state): State<Shared>) -> axum::response::Html<String> {
    let s = state.lock().unwrap_or_else(PoisonError::into_inner);
    let rows: Vec<Vec<String>> = s
        .issues
        .iter()
        .map(|i| vec![format!("{}#{}", i.repo, i.number), i.state.clone(), i.title.clone(), i.labels.join(", ")])
        .collect();
    let actions: Vec<Vec<crate::vendor::Action>> = s
        .issues
        .iter()
        .map(|i| {
            let key = format!("{}#{}", i.repo, i.number);
            if i.state == "open" { vec![("Close", "close", key)] } else { vec![("Reopen", "reopen", key)] }
        })
        .collect();
    crate::vendor::page_with_actions(
        "Test GitHub",
        "Issues opened.",
        &["issue", "state", "title", "labels"],
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
    if let Some((repo, n)) = p.key.rsplit_once('#')
        && let Ok(n) = n.parse()
    {
        let (to, reason) = if verb == "close" { ("closed", Some("completed")) } else { ("open", None) };
        set_state(&mut s, repo, n, to, reason, Some(crate::vendor::PERSON));
    }
    crate::vendor::back()
}

impl FakeGithub {
    /// Starts on a free loopback port serving these repositories; requests must carry
    /// `Bearer <token>` and a User-Agent.
    pub async fn start(token: &str, repos: &[&str]) -> std::io::Result<Self> {
        Self::start_on(0, token, repos).await
    }

    /// Starts on `127.0.0.1:<port>` (0: a free one).
    pub async fn start_on(port: u16, token: &str, repos: &[&str]) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(Inner {
            token: token.to_owned(),
            repos: repos.iter().map(|r| (*r).to_owned()).collect(),
            ..Inner::default()
        }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = Router::new()
            .route("/repos/{o}/{r}", get(repo_get))
            .route("/repos/{o}/{r}/issues", post(create).get(list))
            .route("/repos/{o}/{r}/issues/{n}", axum::routing::patch(update).get(get_issue))
            .route("/repos/{o}/{r}/issues/{n}/comments", post(comment).get(list_comments))
            .route("/repos/{o}/{r}/issues/{n}/labels", post(add_labels))
            .route("/repos/{o}/{r}/issues/{n}/labels/{name}", axum::routing::delete(remove_label))
            .route("/", get(page))
            .route("/_person/{verb}", post(press))
            .with_state(state.clone());
        let latency = crate::vendor::Latency::default();
        let app = latency.wrap(app);
        // Requests being served at once (their latency included), and the most seen.
        let at_once = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let app = app.layer(axum::middleware::from_fn({
            let at_once = at_once.clone();
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let at_once = at_once.clone();
                async move {
                    let now = at_once.0.fetch_add(1, Ordering::SeqCst) + 1;
                    at_once.1.fetch_max(now, Ordering::SeqCst);
                    let answer = next.run(req).await;
                    at_once.0.fetch_sub(1, Ordering::SeqCst);
                    answer
                }
            }
        }));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { state, latency, at_once, url, task })
    }

    /// Every request from now on waits `delay` before it is handled.
    pub fn set_latency(&self, delay: std::time::Duration) {
        self.latency.set(delay);
    }

    /// The most requests served at once so far (GitHub asks for a token's requests one
    /// at a time; it does not refuse a second, so neither does this server).
    pub fn most_at_once(&self) -> usize {
        self.at_once.1.load(Ordering::SeqCst)
    }

    /// Holds every answer back for `delay` after the request was carried out (the issue
    /// exists, the caller has not heard): what a caller killed mid-call leaves behind.
    pub fn set_answer_delay(&self, delay: std::time::Duration) {
        self.latency.set_after(delay);
    }

    /// Requests carried out whose answers [`Self::set_answer_delay`] still holds back.
    pub fn answers_held(&self) -> u64 {
        self.latency.held()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Base URL (the `api.github.com` equivalent).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the token may push to the repositories (default yes). Without, GitHub drops
    /// a new issue's labels, assignees and milestone silently, and the repository's
    /// `permissions.push` says `false`.
    pub fn set_push_access(&self, push: bool) {
        self.with(|s| s.read_only = !push);
    }

    /// Every issue.
    pub fn issues(&self) -> Vec<Issue> {
        self.with(|s| s.issues.clone())
    }

    /// Answers the next requests with these faults.
    pub fn fail_next(&self, faults: &[Fault]) {
        self.with(|s| s.faults.extend(faults.iter().copied()));
    }

    /// Adds a repository webhook for `issues` and `issue_comment` to `url`, signed with `secret`.
    pub fn subscribe(&self, url: &str, secret: &str) {
        self.with(|s| s.outbox.subscribe(url, secret));
    }

    /// A person closes `repo#number` as completed; `false` when it is not open.
    pub fn close_as(&self, repo: &str, number: u64, person: &str) -> bool {
        self.with(|s| set_state(s, repo, number, "closed", Some("completed"), Some(person)))
    }

    /// A person closes `repo#number` with `reason` (`not_planned`, `duplicate`, …); `false`
    /// when it is not open.
    pub fn close_as_with(&self, repo: &str, number: u64, reason: &str, person: &str) -> bool {
        self.with(|s| set_state(s, repo, number, "closed", Some(reason), Some(person)))
    }

    /// A person reopens `repo#number`; `false` when it is not closed.
    pub fn reopen_as(&self, repo: &str, number: u64, person: &str) -> bool {
        self.with(|s| set_state(s, repo, number, "open", None, Some(person)))
    }

    /// A person comments on `repo#number`; `false` when there is no such issue.
    pub fn comment_as(&self, repo: &str, number: u64, text: &str, person: &str) -> bool {
        self.with(|s| {
            let Some(i) = s.issues.iter_mut().find(|i| i.repo == repo && i.number == number) else { return false };
            i.comments.push(text.to_owned());
            i.updated_at = jiff::Timestamp::now();
            let issue = i.clone();
            send_webhook(s, "issue_comment", "created", &issue, Some(person), Some(text));
            true
        })
    }

    /// Webhooks delivered so far, in the order they ended.
    pub fn webhooks(&self) -> Vec<crate::vendor::Delivery> {
        self.with(|s| s.outbox.delivered())
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

    /// When each request arrived, refused ones included (in order).
    pub fn call_times(&self) -> Vec<tokio::time::Instant> {
        self.with(|s| s.call_times.clone())
    }

    /// Conditional lists (`If-None-Match`) answered 304 Not Modified.
    pub fn conditional_hits(&self) -> u64 {
        self.with(|s| s.conditional_hits)
    }

    /// Requests received.
    pub fn calls(&self) -> u64 {
        self.with(|s| s.calls)
    }
}

impl Drop for FakeGithub {
    fn drop(&mut self) {
        self.task.abort();
    }
}
