//! A test GitHub Issues API, faithful to the contract notes: a mandatory `User-Agent`,
//! Bearer auth, rate-limit headers on every answer, create (201), list for a repository
//! by label and state (newest first), comments, `POST …/labels` that adds, `PATCH` that
//! closes with a `state_reason` (and replaces labels when given), `basic-error` and
//! `validation-error` bodies, and injected primary or secondary rate limits.

use std::collections::VecDeque;
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
}

type Shared = Arc<Mutex<Inner>>;

/// A running test GitHub; stops when dropped.
#[derive(Debug)]
pub struct FakeGithub {
    state: Shared,
    latency: crate::vendor::Latency,
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
        Ok(()) => ok(StatusCode::OK, json!({"full_name": repo, "has_issues": true})),
        Err(e) => e,
    }
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
    let labels = body
        .get("labels")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
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
    };
    let json = issue_json(&issue);
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
    let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(30).min(100);
    let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
    let mut found: Vec<&Issue> = s
        .issues
        .iter()
        .filter(|i| i.repo == repo && labels.iter().all(|l| i.labels.iter().any(|x| x == l)))
        .filter(|i| state_filter == "all" || i.state == state_filter)
        .collect();
    found.sort_by_key(|i| std::cmp::Reverse(i.number));
    let page: Vec<Value> = found.into_iter().skip((page - 1) * per_page).take(per_page).map(issue_json).collect();
    ok(StatusCode::OK, json!(page))
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
    match s.issues.iter_mut().find(|i| i.repo == repo && i.number == n) {
        Some(i) => {
            i.comments.push(text.clone());
            ok(StatusCode::CREATED, json!({"id": i.comments.len(), "body": text}))
        }
        None => basic(StatusCode::NOT_FOUND, "Not Found"),
    }
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
    if let Some(new_state) = body.get("state").and_then(Value::as_str)
        && new_state != i.state
    {
        i.state = new_state.to_owned();
        i.state_reason = body.get("state_reason").and_then(Value::as_str).map(str::to_owned);
    }
    if let Some(labels) = body.get("labels").and_then(Value::as_array) {
        i.labels = labels.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    }
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
    crate::vendor::page("Test GitHub", "Issues opened.", &["issue", "state", "title", "labels"], &rows)
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
            .route("/repos/{o}/{r}/issues/{n}", axum::routing::patch(update))
            .route("/repos/{o}/{r}/issues/{n}/comments", post(comment))
            .route("/repos/{o}/{r}/issues/{n}/labels", post(add_labels))
            .route("/", get(page))
            .with_state(state.clone());
        let latency = crate::vendor::Latency::default();
        let app = latency.wrap(app);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { state, latency, url, task })
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

    /// Every issue.
    pub fn issues(&self) -> Vec<Issue> {
        self.with(|s| s.issues.clone())
    }

    /// Answers the next requests with these faults.
    pub fn fail_next(&self, faults: &[Fault]) {
        self.with(|s| s.faults.extend(faults.iter().copied()));
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
