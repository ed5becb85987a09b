//! GitHub Issues (REST, `X-GitHub-Api-Version: 2022-11-28`, a `User-Agent`, Bearer token;
//! Enterprise through `base_url`). The incident's marker is a hidden line in the body,
//! found again by listing the sink's label (`issues/list-for-repo`, the core quota and not
//! the lagging search index). Labels are added with `POST …/labels`: `PATCH` would replace
//! the set.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sre_runtime::outbound::{Answer, HttpClient};

use super::{BoxFuture, NewTicket, TicketRef, TicketStatus, Tracker, VendorError, VendorTicket};

/// Vendor name in logs, metrics and errors.
pub const NAME: &str = "github";
/// The API version the requests are written against.
pub const API_VERSION: &str = "2022-11-28";
/// Pages of 100 issues looked through when recovering a ticket by its marker.
const FIND_PAGES: u32 = 3;

/// The client.
pub struct Github {
    http: HttpClient,
    base: String,
    token: SecretString,
    labels: Vec<String>,
    resolved_label: String,
    repo: String,
    /// The reconciler's last list (its query, its `ETag`, what it held): asked again with
    /// `If-None-Match`, an unchanged list is a 304, which GitHub does not count against the
    /// rate limit.
    listed: std::sync::Mutex<Option<(String, String, Vec<VendorTicket>)>>,
}

/// An issue as the reconciler reads it.
fn vendor_ticket(issue: &Value) -> Option<VendorTicket> {
    let state = issue.get("state").and_then(Value::as_str)?.to_owned();
    Some(VendorTicket {
        key: issue.get("number").and_then(Value::as_u64)?.to_string(),
        done: state == "closed",
        status: state,
        resolution: issue.get("state_reason").and_then(Value::as_str).unwrap_or_default().to_owned(),
    })
}

/// Pages of 100 issues the reconciler reads at most in one pass.
const RECONCILE_PAGES: u32 = 10;

impl std::fmt::Debug for Github {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Github").field("base", &self.base).finish_non_exhaustive()
    }
}

/// GitHub's answer as an error. 403 and 429 are rate limits when GitHub says so: no
/// quota left (wait until `x-ratelimit-reset`), a `retry-after`, or the secondary-limit
/// message (wait at least a minute).
fn github_error(answer: &Answer) -> VendorError {
    let header = |name: &str| answer.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let message = serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .and_then(|v| {
            let m = v.get("message").and_then(Value::as_str)?.to_owned();
            let errors = v.get("errors").map(|e| format!(" {e}")).unwrap_or_default();
            Some(format!("{m}{errors}"))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)]).into_owned());
    let status = answer.status.as_u16();
    if status == 403 || status == 429 {
        let retry_after = sre_resilience::retry_after::from_headers(&answer.headers, SystemTime::now());
        let exhausted = header("x-ratelimit-remaining").as_deref() == Some("0");
        let reset = header("x-ratelimit-reset")
            .and_then(|r| sre_resilience::retry_after::parse_reset_epoch(&r, SystemTime::now()));
        let secondary = message.to_ascii_lowercase().contains("secondary rate limit");
        if retry_after.is_some() || exhausted || secondary || status == 429 {
            let wait = retry_after.or(if exhausted { reset } else { None }).or(Some(Duration::from_secs(60)));
            return VendorError::Throttled { provider: NAME, message, retry_after: wait };
        }
    }
    VendorError::Status { provider: NAME, status, message, retry_after: None }
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

impl Github {
    /// A client for `base` (`https://api.github.com`).
    pub fn new(
        http: HttpClient,
        base: &str,
        token: SecretString,
        repo: &str,
        labels: Vec<String>,
        resolved_label: String,
    ) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
            labels,
            resolved_label,
            repo: repo.to_owned(),
            listed: std::sync::Mutex::new(None),
        }
    }

    fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<http::Request<Bytes>, VendorError> {
        http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(http::header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .header(http::header::USER_AGENT, concat!("sre-integration-ticketing-sink/", env!("CARGO_PKG_VERSION")))
            .header(http::header::AUTHORIZATION, format!("Bearer {}", self.token.expose_secret()))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string())))
            .map_err(|_| VendorError::Invalid("github request could not be built".to_owned()))
    }

    /// One page of the issues of `project` updated since `since` (oldest change first),
    /// conditional on the last answer to the same query.
    async fn updated_since(
        &self,
        project: &str,
        since: Timestamp,
        page: u32,
    ) -> Result<Vec<VendorTicket>, VendorError> {
        let label = self.labels.first().map(|l| format!("&labels={}", encode_segment(l))).unwrap_or_default();
        let path = format!(
            "/repos/{project}/issues?state=all&sort=updated&direction=desc&per_page=100&page={page}&since={}{label}",
            since.strftime("%Y-%m-%dT%H:%M:%SZ")
        );
        let known = self.listed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let mut request = self.request(http::Method::GET, &path, None)?;
        if let Some((_, etag, _)) = known.as_ref().filter(|(q, _, _)| *q == path)
            && let Ok(v) = http::HeaderValue::from_str(etag)
        {
            request.headers_mut().insert(http::header::IF_NONE_MATCH, v);
        }
        let answer =
            self.http.send(request).await.map_err(|source| VendorError::Transport { provider: NAME, source })?;
        if answer.status == http::StatusCode::NOT_MODIFIED {
            return Ok(known.filter(|(q, _, _)| *q == path).map(|(_, _, tickets)| tickets).unwrap_or_default());
        }
        if !answer.status.is_success() {
            return Err(github_error(&answer));
        }
        let v: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| VendorError::Invalid(format!("github issues answer: {e}")))?;
        let tickets: Vec<VendorTicket> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i.get("pull_request").is_none())
            .filter_map(vendor_ticket)
            .collect();
        if let Some(etag) = answer.headers.get(http::header::ETAG).and_then(|v| v.to_str().ok()) {
            *self.listed.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some((path, etag.to_owned(), tickets.clone()));
        }
        Ok(tickets)
    }

    async fn call(&self, method: http::Method, path: &str, body: Option<Value>) -> Result<Answer, VendorError> {
        let request = self.request(method, path, body)?;
        let answer =
            self.http.send(request).await.map_err(|source| VendorError::Transport { provider: NAME, source })?;
        if !answer.status.is_success() {
            return Err(github_error(&answer));
        }
        Ok(answer)
    }

    /// The create request of `ticket`.
    pub fn create_body(&self, ticket: &NewTicket) -> Value {
        let follows = ticket
            .follows
            .as_ref()
            .map(|t| format!("\n\nFollows #{}, the incident's earlier issue (reopened after it ended).", t.key))
            .unwrap_or_default();
        let mut labels = self.labels.clone();
        labels.extend(ticket.fields.labels.iter().filter(|l| !self.labels.contains(l)).cloned());
        let mut body = json!({
            "title": ticket.title,
            "body": format!("{}{follows}\n\n{}", ticket.body, crate::marker::line(&ticket.marker)),
            "labels": labels,
        });
        if !ticket.fields.assignees.is_empty() {
            body["assignees"] = json!(ticket.fields.assignees);
        }
        if let Some(m) = ticket.fields.milestone {
            body["milestone"] = json!(m);
        }
        body
    }

    fn issue_ref(v: &Value) -> Option<TicketRef> {
        let number = v.get("number").and_then(Value::as_u64)?;
        Some(TicketRef {
            id: None,
            key: number.to_string(),
            url: v.get("html_url").and_then(Value::as_str).unwrap_or_default().to_owned(),
        })
    }
}

impl Tracker for Github {
    fn name(&self) -> &'static str {
        NAME
    }

    fn create<'a>(&'a self, ticket: &'a NewTicket) -> BoxFuture<'a, Result<TicketRef, VendorError>> {
        Box::pin(async move {
            let answer = self
                .call(http::Method::POST, &format!("/repos/{}/issues", ticket.project), Some(self.create_body(ticket)))
                .await?;
            let v: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
            Self::issue_ref(&v)
                .ok_or_else(|| VendorError::Invalid("github created an issue but returned no number".to_owned()))
        })
    }

    fn find<'a>(
        &'a self,
        project: &'a str,
        marker: &'a str,
        since: Timestamp,
        exclude: &'a [String],
    ) -> BoxFuture<'a, Result<Option<TicketRef>, VendorError>> {
        Box::pin(async move {
            let line = crate::marker::line(marker);
            let label = self.labels.first().cloned().unwrap_or_default();
            let since = since - jiff::SignedDuration::from_mins(5);
            for page in 1..=FIND_PAGES {
                let path = format!(
                    "/repos/{project}/issues?labels={label}&state=all&since={since}&sort=created&direction=desc&per_page=100&page={page}"
                );
                let answer = self.call(http::Method::GET, &path, None).await?;
                let issues: Vec<Value> = serde_json::from_slice(&answer.body).unwrap_or_default();
                let found = issues.iter().find(|i| {
                    i.get("pull_request").is_none()
                        && i.get("body").and_then(Value::as_str).is_some_and(|b| b.contains(&line))
                        && Self::issue_ref(i).is_some_and(|t| !exclude.contains(&t.key))
                });
                if let Some(issue) = found {
                    return Ok(Self::issue_ref(issue));
                }
                if issues.len() < 100 {
                    break;
                }
            }
            Ok(None)
        })
    }

    fn comment<'a>(
        &'a self,
        project: &'a str,
        ticket: &'a TicketRef,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), VendorError>> {
        Box::pin(async move {
            let path = format!("/repos/{project}/issues/{}/comments", ticket.key);
            // The marker tells the webhook of this comment from a person's (two-way sync).
            let body = format!("{text}\n\n{}", crate::marker::COMMENT_MARKER);
            self.call(http::Method::POST, &path, Some(json!({"body": body}))).await.map(|_| ())
        })
    }

    fn resolve<'a>(&'a self, project: &'a str, ticket: &'a TicketRef) -> BoxFuture<'a, Result<(), VendorError>> {
        Box::pin(async move {
            let path = format!("/repos/{project}/issues/{}/labels", ticket.key);
            self.call(http::Method::POST, &path, Some(json!({"labels": [self.resolved_label]}))).await.map(|_| ())
        })
    }

    fn close<'a>(&'a self, project: &'a str, ticket: &'a TicketRef) -> BoxFuture<'a, Result<(), VendorError>> {
        Box::pin(async move {
            let path = format!("/repos/{project}/issues/{}", ticket.key);
            self.call(http::Method::PATCH, &path, Some(json!({"state": "closed", "state_reason": "completed"})))
                .await
                .map(|_| ())
        })
    }

    fn status<'a>(
        &'a self,
        project: &'a str,
        ticket: &'a TicketRef,
    ) -> BoxFuture<'a, Result<TicketStatus, VendorError>> {
        Box::pin(async move {
            let answer = self.call(http::Method::GET, &format!("/repos/{project}/issues/{}", ticket.key), None).await?;
            let v: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
            let closed = v.get("state").and_then(Value::as_str) == Some("closed");
            let resolved = v
                .get("labels")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|l| l.get("name").and_then(Value::as_str) == Some(self.resolved_label.as_str()));
            let reason = v.get("state_reason").and_then(Value::as_str).filter(|_| closed).unwrap_or_default();
            Ok(TicketStatus { done: closed || resolved, resolution: reason.to_owned() })
        })
    }

    fn tickets<'a>(
        &'a self,
        project: &'a str,
        tickets: &'a [TicketRef],
        since: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<VendorTicket>, VendorError>> {
        Box::pin(async move {
            let mut found = Vec::new();
            for page in 1..=RECONCILE_PAGES {
                let listed = self.updated_since(project, since, page).await?;
                let last = listed.len() < 100;
                found.extend(listed.into_iter().filter(|t| tickets.iter().any(|k| k.key == t.key)));
                if last {
                    return Ok(found);
                }
            }
            // Newest first: what was cut is older. Said, and the pass is not complete, so
            // the next one asks again from the same moment.
            Err(VendorError::Invalid(format!(
                "more than {} issues of {project} changed since {since}: the oldest were not read",
                RECONCILE_PAGES * 100
            )))
        })
    }

    fn ticket<'a>(
        &'a self,
        project: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<VendorTicket>, VendorError>> {
        Box::pin(async move {
            match self.call(http::Method::GET, &format!("/repos/{project}/issues/{key}"), None).await {
                Ok(answer) => {
                    let v: Value = serde_json::from_slice(&answer.body)
                        .map_err(|e| VendorError::Invalid(format!("github issue answer: {e}")))?;
                    Ok(vendor_ticket(&v))
                }
                Err(VendorError::Status { status: 404 | 410, .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn reopen<'a>(&'a self, project: &'a str, ticket: &'a TicketRef) -> BoxFuture<'a, Result<(), VendorError>> {
        Box::pin(async move {
            let path = format!("/repos/{project}/issues/{}", ticket.key);
            self.call(http::Method::PATCH, &path, Some(json!({"state": "open", "state_reason": "reopened"}))).await?;
            let label = format!("{path}/labels/{}", encode_segment(&self.resolved_label));
            match self.call(http::Method::DELETE, &label, None).await {
                // Not carrying it (closed without being resolved first): nothing to take off.
                Ok(_) | Err(VendorError::Status { status: 404, .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    fn set_severity<'a>(
        &'a self,
        _project: &'a str,
        _ticket: &'a TicketRef,
        _severity: &'a str,
        _synced: &'a super::TicketFields,
    ) -> BoxFuture<'a, Result<bool, VendorError>> {
        // GitHub issues keep no priority: the comment says it.
        Box::pin(async { Ok(false) })
    }

    fn comments<'a>(
        &'a self,
        project: &'a str,
        ticket: &'a TicketRef,
        since: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<String>, VendorError>> {
        Box::pin(async move {
            // GitHub lists the oldest first: `since` keeps the list to the recent ones.
            let path = format!("/repos/{project}/issues/{}/comments?per_page=100&since={since}", ticket.key);
            let answer = self.call(http::Method::GET, &path, None).await?;
            let comments: Vec<Value> = serde_json::from_slice(&answer.body).unwrap_or_default();
            Ok(comments.iter().filter_map(|c| c.get("body").and_then(Value::as_str).map(str::to_owned)).collect())
        })
    }

    fn check_fields<'a>(
        &'a self,
        project: &'a str,
        _issue_type: Option<&'a str>,
        _fields: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>, VendorError>> {
        Box::pin(async move {
            let answer = self.call(http::Method::GET, &format!("/repos/{project}"), None).await?;
            let repo: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
            // Without push access GitHub drops labels, assignees and the milestone of a new
            // issue silently: the sink could not find its issues again by their label.
            Ok(match repo.pointer("/permissions/push").and_then(Value::as_bool) {
                Some(false) => vec![format!(
                    "the token may not push to {project}: GitHub would silently drop the issues' labels (the sink \
                     finds its issues by them), assignees and milestone; give it write access to issues"
                )],
                _ => Vec::new(),
            })
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<Option<String>, VendorError>> {
        // The repository, not `/user`: installation tokens have no user, and this also
        // proves access to where the issues go. (A GitHub App's own actions are told apart
        // by `sender.type: Bot`; a personal token's login goes in `ignore_senders`.)
        Box::pin(
            async move { self.call(http::Method::GET, &format!("/repos/{}", self.repo), None).await.map(|_| None) },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sre_resilience::{ErrorClass, Retryable};

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut map = http::HeaderMap::new();
        for (k, v) in headers {
            map.insert(http::HeaderName::from_bytes(k.as_bytes()).expect("name"), v.parse().expect("value"));
        }
        Answer {
            status: http::StatusCode::from_u16(status).expect("status"),
            headers: map,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn rate_limits_are_told_from_permission_errors() {
        let reset = (SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("now").as_secs() + 30).to_string();
        let primary = github_error(&answer(
            403,
            &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &reset)],
            r#"{"message":"API rate limit exceeded"}"#,
        ));
        assert_eq!(primary.class(), ErrorClass::Throttled);
        assert!(primary.retry_after().is_some_and(|d| d > Duration::from_secs(20) && d <= Duration::from_secs(31)));
        let secondary = github_error(&answer(
            403,
            &[("x-ratelimit-remaining", "12")],
            r#"{"message":"You have exceeded a secondary rate limit"}"#,
        ));
        assert_eq!(
            (secondary.class(), secondary.retry_after()),
            (ErrorClass::Throttled, Some(Duration::from_secs(60)))
        );
        let retry = github_error(&answer(429, &[("retry-after", "7")], "{}"));
        assert_eq!(retry.retry_after(), Some(Duration::from_secs(7)));
        let forbidden = github_error(&answer(
            403,
            &[("x-ratelimit-remaining", "4999")],
            r#"{"message":"Resource not accessible by integration"}"#,
        ));
        assert_eq!(forbidden.class(), ErrorClass::Auth);
        assert!(forbidden.to_string().contains("Resource not accessible"));
        let invalid = github_error(&answer(
            422,
            &[],
            r#"{"message":"Validation Failed","errors":[{"resource":"Issue","field":"title","code":"missing_field"}]}"#,
        ));
        assert_eq!(invalid.class(), ErrorClass::Permanent);
        assert!(invalid.to_string().contains("missing_field"));
    }
}
