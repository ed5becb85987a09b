//! Jira Cloud (REST v3: descriptions and comments in Atlassian Document Format,
//! `search/jql`, Basic email:token) and Data Center (REST v2: wiki text, `search`, Bearer
//! personal access token).
//!
//! The incident's marker is a label; finding a ticket by it is a search, and Cloud search
//! is eventually consistent, so the sink searches only to recover from a crash, never to
//! decide whether to create (the KV claim decides that).

use std::collections::BTreeMap;

use base64::Engine;
use bytes::Bytes;
use jiff::Timestamp;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sre_runtime::outbound::{Answer, HttpClient};

use super::{BoxFuture, NewTicket, TicketFields, TicketRef, TicketStatus, Tracker, VendorError, VendorTicket, clip};

/// Vendor name in logs, metrics and errors.
pub const NAME: &str = "jira";

/// Jira Cloud (REST v3, ADF) or Data Center (REST v2, wiki text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deployment {
    /// `*.atlassian.net` or `api.atlassian.com`: v3, ADF, `search/jql`, Basic email:token.
    Cloud,
    /// Self-hosted: v2, wiki markup, `search`, Bearer personal access token.
    DataCenter,
}

impl Deployment {
    /// The deployment a site's URL says: Cloud for `*.atlassian.net` and
    /// `api.atlassian.com`, else Data Center.
    pub fn of(base_url: &str) -> Self {
        let host = base_url.split("://").nth(1).unwrap_or_default().split(['/', ':']).next().unwrap_or_default();
        if host.ends_with(".atlassian.net") || host == "api.atlassian.com" {
            Deployment::Cloud
        } else {
            Deployment::DataCenter
        }
    }
}
/// Jira's summary limit.
pub const SUMMARY_MAX: usize = 255;

/// The client.
pub struct Jira {
    http: HttpClient,
    base: String,
    deployment: Deployment,
    auth: SecretString,
    issue_type: String,
    resolve: String,
    close: String,
    reopen: String,
    priorities: BTreeMap<String, String>,
    labels: Vec<String>,
}

impl std::fmt::Debug for Jira {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jira").field("base", &self.base).field("deployment", &self.deployment).finish_non_exhaustive()
    }
}

/// Atlassian Document Format for plain text: a paragraph per block, hard breaks for
/// single line breaks.
pub fn adf(text: &str) -> Value {
    let paragraphs: Vec<Value> = text
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let mut content = Vec::new();
            for (i, line) in p.lines().enumerate() {
                if i > 0 {
                    content.push(json!({"type": "hardBreak"}));
                }
                if !line.is_empty() {
                    content.push(json!({"type": "text", "text": line}));
                }
            }
            json!({"type": "paragraph", "content": content})
        })
        .collect();
    json!({"type": "doc", "version": 1, "content": paragraphs})
}

/// The text of an ADF document (its text nodes, a line per paragraph and hard break).
pub fn plain_text(doc: &Value) -> String {
    fn walk(v: &Value, out: &mut String) {
        match v.get("type").and_then(Value::as_str) {
            Some("text") => out.push_str(v.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("hardBreak") => out.push('\n'),
            _ => {}
        }
        for child in v.get("content").and_then(Value::as_array).into_iter().flatten() {
            walk(child, out);
        }
        if v.get("type").and_then(Value::as_str) == Some("paragraph") {
            out.push_str("\n\n");
        }
    }
    let mut out = String::new();
    walk(doc, &mut out);
    out.trim_end().to_owned()
}

/// Jira's reason from an `ErrorCollection`: `errorMessages` and `errors` by field.
fn jira_error(answer: &Answer) -> VendorError {
    sre_runtime::outbound::status_error(NAME, answer, |v| {
        let mut parts: Vec<String> = v
            .get("errorMessages")
            .and_then(Value::as_array)
            .map(|m| m.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        if let Some(errors) = v.get("errors").and_then(Value::as_object) {
            parts.extend(errors.iter().map(|(field, msg)| format!("{field}: {}", msg.as_str().unwrap_or_default())));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    })
}

/// The problems of creating `issue_type` in `project` with `fields` (besides the sink's own:
/// project, issue type, summary, description, labels and, unless no priority is mapped,
/// priority) on a screen listing `on_screen` (createmeta's entries). Pure.
pub fn screen_problems(
    project: &str,
    issue_type: &str,
    on_screen: &[&Value],
    fields: &[String],
    no_priority: bool,
) -> Vec<String> {
    fn id_of(f: &Value) -> &str {
        f.get("fieldId").or_else(|| f.get("key")).and_then(Value::as_str).unwrap_or_default()
    }
    let mut own = vec!["project", "issuetype", "summary", "description", "labels"];
    if !no_priority {
        own.push("priority");
    }
    let mut problems = Vec::new();
    for f in own
        .iter()
        .filter(|f| !["project", "issuetype", "summary"].contains(f))
        .map(|f| (*f).to_owned())
        .chain(fields.iter().cloned())
    {
        if !on_screen.iter().any(|s| id_of(s) == f) {
            problems.push(format!(
                "`{f}` is not on the create screen of {issue_type} in {project} (Jira would answer 400)"
            ));
        }
    }
    for s in on_screen {
        let id = id_of(s);
        let required = s.get("required").and_then(Value::as_bool).unwrap_or(false);
        let has_default = s.get("hasDefaultValue").and_then(Value::as_bool).unwrap_or(false);
        if required && !has_default && !own.contains(&id) && !fields.iter().any(|f| f == id) {
            let name = s.get("name").and_then(Value::as_str).unwrap_or(id);
            problems.push(format!(
                "`{id}` ({name}) is required by {issue_type} in {project} and has no value: set it under `fields:`"
            ));
        }
    }
    problems
}

/// Pages of a create screen read at most (200 fields each).
const CREATEMETA_PAGES: usize = 10;

/// Settings of the client beyond the connection.
#[derive(Debug, Clone)]
pub struct JiraSettings {
    /// Cloud or Data Center.
    pub deployment: Deployment,
    /// Issue type name.
    pub issue_type: String,
    /// Resolve transition name.
    pub resolve: String,
    /// Close transition name.
    pub close: String,
    /// Reopen transition name.
    pub reopen: String,
    /// Priority per severity name.
    pub priorities: BTreeMap<String, String>,
    /// Labels on every ticket.
    pub labels: Vec<String>,
}

/// Keys asked for in one search.
const KEYS_PER_SEARCH: usize = 50;

/// A search result's issue as the reconciler reads it.
fn issue_status(issue: &Value) -> Option<VendorTicket> {
    let text = |p: &str| issue.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
    Some(VendorTicket {
        key: issue.get("key")?.as_str()?.to_owned(),
        status: text("/fields/status/name"),
        done: text("/fields/status/statusCategory/key") == "done",
        resolution: text("/fields/resolution/name"),
    })
}

impl Jira {
    /// A client for `base`. Cloud authenticates with Basic `email:token`, Data Center with
    /// Bearer `token`.
    pub fn new(
        http: HttpClient,
        base: &str,
        email: Option<&str>,
        token: &SecretString,
        settings: JiraSettings,
    ) -> Self {
        let auth = match (settings.deployment, email) {
            (Deployment::Cloud, Some(email)) => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{email}:{}", token.expose_secret()))
            ),
            _ => format!("Bearer {}", token.expose_secret()),
        };
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            deployment: settings.deployment,
            auth: auth.into(),
            issue_type: settings.issue_type,
            resolve: settings.resolve,
            close: settings.close,
            reopen: settings.reopen,
            priorities: settings.priorities,
            labels: settings.labels,
        }
    }

    fn api(&self) -> &'static str {
        match self.deployment {
            Deployment::Cloud => "/rest/api/3",
            Deployment::DataCenter => "/rest/api/2",
        }
    }

    /// A rich-text field: ADF on Cloud, wiki text on Data Center.
    fn text(&self, text: &str) -> Value {
        match self.deployment {
            Deployment::Cloud => adf(text),
            Deployment::DataCenter => json!(text),
        }
    }

    async fn call(&self, method: http::Method, path: &str, body: Option<Value>) -> Result<Answer, VendorError> {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{}{path}", self.base, self.api()))
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::AUTHORIZATION, self.auth.expose_secret())
            .body(body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string())))
            .map_err(|e| VendorError::Invalid(format!("jira request: {e}")))?;
        let answer =
            self.http.send(request).await.map_err(|source| VendorError::Transport { provider: NAME, source })?;
        if !answer.status.is_success() {
            return Err(jira_error(&answer));
        }
        Ok(answer)
    }

    /// The create request of `ticket`.
    pub fn create_body(&self, ticket: &NewTicket) -> Value {
        let summary = clip(&ticket.title.replace(['\n', '\r'], " "), SUMMARY_MAX);
        let mut labels = self.labels.clone();
        labels.extend(ticket.fields.labels.iter().filter(|l| !self.labels.contains(l)).cloned());
        labels.push(ticket.marker.clone());
        let mut fields = json!({
            "project": {"key": ticket.project},
            "issuetype": {"name": ticket.fields.issue_type.as_deref().unwrap_or(&self.issue_type)},
            "summary": summary,
            "description": self.text(&ticket.body),
            "labels": labels,
        });
        if let Some(p) = self.priorities.get(&ticket.severity) {
            fields["priority"] = json!({"name": p});
        }
        if let Some(map) = fields.as_object_mut() {
            for (id, value) in &ticket.fields.jira {
                map.insert(id.clone(), value.clone());
            }
        }
        match &ticket.follows {
            // Linked to the ticket of the incident's earlier life.
            Some(earlier) => json!({"fields": fields, "update": {"issuelinks": [
                {"add": {"type": {"name": "Relates"}, "outwardIssue": {"key": earlier.key}}}]}}),
            None => json!({"fields": fields}),
        }
    }

    /// The edits of a ticket whose incident changed severity, in order: the priority, then
    /// only the fields kept in sync (labels are added, never replaced). Two requests, so a
    /// synced field Jira refuses (not on the edit screen) never keeps the priority from
    /// moving. Fields set at creation only are in neither, so a person's edit stands.
    pub fn update_bodies(&self, severity: &str, synced: &TicketFields) -> Vec<Value> {
        let mut bodies = Vec::new();
        if let Some(p) = self.priorities.get(severity) {
            bodies.push(json!({"fields": {"priority": {"name": p}}}));
        }
        let mut body = serde_json::Map::new();
        if !synced.jira.is_empty() {
            body.insert("fields".into(), Value::Object(synced.jira.clone()));
        }
        if !synced.labels.is_empty() {
            let add: Vec<Value> = synced.labels.iter().map(|l| json!({"add": l})).collect();
            body.insert("update".into(), json!({"labels": add}));
        }
        if !body.is_empty() {
            bodies.push(Value::Object(body));
        }
        bodies
    }

    fn link(&self, key: &str) -> String {
        format!("{}/browse/{key}", self.base)
    }

    /// Moves the ticket through the transition called `name`, or else the first one into
    /// the Done category (`into_done`) or out of it (a reopen). No transition available
    /// means it is already there: done.
    async fn transition(&self, ticket: &TicketRef, name: &str, into_done: bool) -> Result<(), VendorError> {
        let answer = self.call(http::Method::GET, &format!("/issue/{}/transitions", ticket.key), None).await?;
        let list: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        let transitions = list.get("transitions").and_then(Value::as_array).cloned().unwrap_or_default();
        let by_name = transitions
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str).is_some_and(|n| n.eq_ignore_ascii_case(name)));
        let by_category = || {
            transitions
                .iter()
                .find(|t| (t.pointer("/to/statusCategory/key").and_then(Value::as_str) == Some("done")) == into_done)
        };
        if by_name.is_none() {
            // Not offered by name: the ticket may be there already (a person resolved it,
            // and resolving it again must not move it on to Closed).
            let answer = self.call(http::Method::GET, &format!("/issue/{}?fields=status", ticket.key), None).await?;
            let v: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
            let done = v.pointer("/fields/status/statusCategory/key").and_then(Value::as_str) == Some("done");
            if done == into_done {
                return Ok(());
            }
        }
        let Some(id) = by_name.or_else(by_category).and_then(|t| t.get("id")).and_then(Value::as_str) else {
            return Ok(());
        };
        self.call(
            http::Method::POST,
            &format!("/issue/{}/transitions", ticket.key),
            Some(json!({"transition": {"id": id}})),
        )
        .await
        .map(|_| ())
    }
}

impl Tracker for Jira {
    fn name(&self) -> &'static str {
        NAME
    }

    fn create<'a>(&'a self, ticket: &'a NewTicket) -> BoxFuture<'a, Result<TicketRef, VendorError>> {
        Box::pin(async move {
            let answer = match self.call(http::Method::POST, "/issue", Some(self.create_body(ticket))).await {
                // The link refused (no "Relates" link type here, or linking switched off):
                // the ticket without it, its description naming the earlier one, rather
                // than no ticket for the reopened incident.
                Err(VendorError::Status { status: 400, .. }) if ticket.follows.is_some() => {
                    let earlier = ticket.follows.as_ref().map(|t| t.key.as_str()).unwrap_or_default();
                    let alone = NewTicket {
                        follows: None,
                        body: format!("Follows {earlier}, the incident's earlier ticket.\n\n{}", ticket.body),
                        ..ticket.clone()
                    };
                    self.call(http::Method::POST, "/issue", Some(self.create_body(&alone))).await?
                }
                answer => answer?,
            };
            let v: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
            let key = v.get("key").and_then(Value::as_str).unwrap_or_default().to_owned();
            if key.is_empty() {
                return Err(VendorError::Invalid("jira created an issue but returned no key".to_owned()));
            }
            let id = v.get("id").and_then(Value::as_str).map(str::to_owned);
            Ok(TicketRef { url: self.link(&key), key, id })
        })
    }

    fn find<'a>(
        &'a self,
        project: &'a str,
        marker: &'a str,
        _since: Timestamp,
        exclude: &'a [String],
    ) -> BoxFuture<'a, Result<Option<TicketRef>, VendorError>> {
        Box::pin(async move {
            let jql = format!("project = \"{project}\" AND labels = \"{marker}\" ORDER BY created ASC");
            // The incident's earlier tickets carry the marker too: ask for a few more.
            let max = exclude.len() + 1;
            let (path, body) = match self.deployment {
                Deployment::Cloud => ("/search/jql", json!({"jql": jql, "fields": ["key"], "maxResults": max})),
                Deployment::DataCenter => {
                    ("/search", json!({"jql": jql, "fields": ["key"], "maxResults": max, "startAt": 0}))
                }
            };
            let answer = self.call(http::Method::POST, path, Some(body)).await?;
            let v: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
            Ok(v.get("issues")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|i| Some((i.get("key").and_then(Value::as_str)?, i.get("id").and_then(Value::as_str))))
                .find(|(key, _)| !exclude.iter().any(|e| e == key))
                .map(|(key, id)| TicketRef { url: self.link(key), key: key.to_owned(), id: id.map(str::to_owned) }))
        })
    }

    fn comment<'a>(
        &'a self,
        _project: &'a str,
        ticket: &'a TicketRef,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), VendorError>> {
        Box::pin(async move {
            let answer = self
                .call(
                    http::Method::POST,
                    &format!("/issue/{}/comment", ticket.key),
                    Some(json!({"body": self.text(text)})),
                )
                .await;
            match answer {
                // 413: the issue holds as many comments as Jira allows (a per-issue limit, not
                // a rate). The comment is dropped, said in the log, and the step goes on:
                // a resolve or close must not be dead-lettered for want of a comment.
                Err(VendorError::Status { status: 413, message, .. }) => {
                    tracing::warn!(ticket = %ticket.key, reason = %message, "comment not added: the issue's comment limit is reached");
                    Ok(())
                }
                answer => answer.map(|_| ()),
            }
        })
    }

    fn resolve<'a>(&'a self, _project: &'a str, ticket: &'a TicketRef) -> BoxFuture<'a, Result<(), VendorError>> {
        Box::pin(self.transition(ticket, &self.resolve, true))
    }

    fn close<'a>(&'a self, _project: &'a str, ticket: &'a TicketRef) -> BoxFuture<'a, Result<(), VendorError>> {
        Box::pin(self.transition(ticket, &self.close, true))
    }

    fn status<'a>(
        &'a self,
        _project: &'a str,
        ticket: &'a TicketRef,
    ) -> BoxFuture<'a, Result<TicketStatus, VendorError>> {
        Box::pin(async move {
            let answer =
                self.call(http::Method::GET, &format!("/issue/{}?fields=status,resolution", ticket.key), None).await?;
            let v: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
            Ok(TicketStatus {
                done: v.pointer("/fields/status/statusCategory/key").and_then(Value::as_str) == Some("done"),
                resolution: v.pointer("/fields/resolution/name").and_then(Value::as_str).unwrap_or_default().to_owned(),
            })
        })
    }

    fn tickets<'a>(
        &'a self,
        project: &'a str,
        tickets: &'a [TicketRef],
        _since: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<VendorTicket>, VendorError>> {
        Box::pin(async move {
            let mut found = Vec::with_capacity(tickets.len());
            // By key, a bounded JQL per request (Jira caps a query's length and results).
            for chunk in tickets.chunks(KEYS_PER_SEARCH) {
                let quoted: Vec<String> = chunk.iter().map(|t| format!("\"{}\"", t.key.replace('"', ""))).collect();
                let jql = format!("key in ({})", quoted.join(", "));
                let fields = json!(["status", "resolution"]);
                let (path, body) = match self.deployment {
                    // Cloud's search lags behind writes: the issues are named by id in
                    // `reconcileIssues` (at most 50, as a chunk), read with read-after-write
                    // consistency. Tickets recorded without their id are searched as indexed.
                    Deployment::Cloud => {
                        let ids: Vec<u64> =
                            chunk.iter().filter_map(|t| t.id.as_deref().and_then(|id| id.parse().ok())).collect();
                        let mut body = json!({"jql": jql, "fields": fields, "maxResults": KEYS_PER_SEARCH});
                        if !ids.is_empty() {
                            body["reconcileIssues"] = json!(ids);
                        }
                        ("/search/jql", body)
                    }
                    Deployment::DataCenter => {
                        ("/search", json!({"jql": jql, "fields": fields, "maxResults": KEYS_PER_SEARCH, "startAt": 0}))
                    }
                };
                let answer = match self.call(http::Method::POST, path, Some(body)).await {
                    Ok(answer) => answer,
                    // Jira refuses a whole `key in` query naming one key it does not know
                    // (deleted, moved, not visible): this chunk is read key by key.
                    Err(VendorError::Status { status: 400, .. }) => {
                        for ticket in chunk {
                            found.extend(self.ticket(project, &ticket.key).await?);
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let v: Value = serde_json::from_slice(&answer.body)
                    .map_err(|e| VendorError::Invalid(format!("jira search answer: {e}")))?;
                found.extend(v.get("issues").and_then(Value::as_array).into_iter().flatten().filter_map(issue_status));
            }
            Ok(found)
        })
    }

    fn ticket<'a>(
        &'a self,
        _project: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<VendorTicket>, VendorError>> {
        Box::pin(async move {
            match self.call(http::Method::GET, &format!("/issue/{key}?fields=status,resolution"), None).await {
                Ok(answer) => {
                    let v: Value = serde_json::from_slice(&answer.body)
                        .map_err(|e| VendorError::Invalid(format!("jira issue answer: {e}")))?;
                    Ok(issue_status(&v))
                }
                Err(VendorError::Status { status: 404, .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn reopen<'a>(&'a self, _project: &'a str, ticket: &'a TicketRef) -> BoxFuture<'a, Result<(), VendorError>> {
        Box::pin(self.transition(ticket, &self.reopen, false))
    }

    fn set_severity<'a>(
        &'a self,
        _project: &'a str,
        ticket: &'a TicketRef,
        severity: &'a str,
        synced: &'a TicketFields,
    ) -> BoxFuture<'a, Result<bool, VendorError>> {
        Box::pin(async move {
            let bodies = self.update_bodies(severity, synced);
            for body in &bodies {
                self.call(http::Method::PUT, &format!("/issue/{}", ticket.key), Some(body.clone())).await?;
            }
            Ok(!bodies.is_empty())
        })
    }

    fn comments<'a>(
        &'a self,
        _project: &'a str,
        ticket: &'a TicketRef,
        _since: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<String>, VendorError>> {
        Box::pin(async move {
            // Newest first: Jira orders by creation.
            let path = format!("/issue/{}/comment?orderBy=-created&maxResults=100", ticket.key);
            let answer = self.call(http::Method::GET, &path, None).await?;
            let v: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
            Ok(v.get("comments")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("body"))
                .map(|b| b.as_str().map_or_else(|| plain_text(b), str::to_owned))
                .collect())
        })
    }

    fn check_fields<'a>(
        &'a self,
        project: &'a str,
        issue_type: Option<&'a str>,
        fields: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>, VendorError>> {
        Box::pin(async move {
            let issue_type = issue_type.unwrap_or(&self.issue_type);
            let path = format!("/issue/createmeta/{project}/issuetypes?maxResults=200");
            let types: Value = serde_json::from_slice(&self.call(http::Method::GET, &path, None).await?.body)
                .map_err(|e| VendorError::Invalid(format!("jira createmeta: {e}")))?;
            // Cloud pages them as `issueTypes`, Data Center as `values`.
            let listed = types.get("issueTypes").or_else(|| types.get("values")).and_then(Value::as_array);
            let Some(found) = listed
                .into_iter()
                .flatten()
                .find(|t| t.get("name").and_then(Value::as_str).is_some_and(|n| n.eq_ignore_ascii_case(issue_type)))
            else {
                return Ok(vec![format!("issue type `{issue_type}` cannot be created in project {project}")]);
            };
            let id = found.get("id").and_then(Value::as_str).unwrap_or_default();
            // The screen's fields, page by page (a screen of hundreds of fields exists).
            let mut listed: Vec<Value> = Vec::new();
            for _ in 0..CREATEMETA_PAGES {
                let path =
                    format!("/issue/createmeta/{project}/issuetypes/{id}?maxResults=200&startAt={}", listed.len());
                let meta: Value = serde_json::from_slice(&self.call(http::Method::GET, &path, None).await?.body)
                    .map_err(|e| VendorError::Invalid(format!("jira createmeta: {e}")))?;
                let page: Vec<Value> = meta
                    .get("fields")
                    .or_else(|| meta.get("values"))
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let total = meta.get("total").and_then(Value::as_u64);
                let last = meta.get("isLast").and_then(Value::as_bool);
                let empty = page.is_empty();
                listed.extend(page);
                if empty || last == Some(true) || total.is_none_or(|t| listed.len() as u64 >= t) {
                    break;
                }
            }
            let on_screen: Vec<&Value> = listed.iter().collect();
            Ok(screen_problems(project, issue_type, &on_screen, fields, self.priorities.is_empty()))
        })
    }

    fn check(&self) -> BoxFuture<'_, Result<Option<String>, VendorError>> {
        Box::pin(async move {
            let answer = self.call(http::Method::GET, "/myself", None).await?;
            let me: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
            Ok(["accountId", "name"]
                .iter()
                .find_map(|k| me.get(*k).and_then(Value::as_str).filter(|v| !v.is_empty()))
                .map(str::to_owned))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(deployment: Deployment) -> Jira {
        Jira::new(
            HttpClient::new(std::time::Duration::from_secs(1), None).expect("client"),
            "https://acme.atlassian.net",
            Some("sre@example.com"),
            &SecretString::from("t0ken"),
            JiraSettings {
                deployment,
                issue_type: "Bug".into(),
                resolve: "Resolve".into(),
                close: "Close".into(),
                reopen: "Reopen".into(),
                priorities: [("critical".to_owned(), "Highest".to_owned())].into(),
                labels: vec!["sre-incident".into()],
            },
        )
    }

    fn ticket() -> NewTicket {
        NewTicket {
            project: "OPS".into(),
            title: format!("line one\nline two {}", "x".repeat(300)),
            body: "First paragraph\nwith a break\n\nSecond".into(),
            marker: "sre-inc-1".into(),
            severity: "critical".into(),
            follows: None,
            fields: Default::default(),
        }
    }

    #[test]
    fn the_create_screen_is_checked_for_missing_and_required_fields() {
        let field = |id: &str, required: bool, default: bool| json!({"fieldId": id, "name": format!("The {id}"), "required": required, "hasDefaultValue": default});
        let screen = [
            field("project", true, false),
            field("issuetype", true, false),
            field("summary", true, false),
            field("description", false, false),
            field("labels", false, false),
            field("priority", false, true),
            field("customfield_1", true, false),
            field("customfield_2", true, true),
            field("components", false, false),
        ];
        let on: Vec<&Value> = screen.iter().collect();
        let ids = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let cases: [(&[&str], usize, &str); 4] = [
            // Everything there and every required field set: nothing to say.
            (&["customfield_1", "components"], 0, ""),
            // A required field without a value (its default would do for customfield_2).
            (&["components"], 1, "`customfield_1` (The customfield_1) is required by Incident in PAY"),
            // A field the screen does not have.
            (&["customfield_1", "assignee"], 1, "`assignee` is not on the create screen of Incident in PAY"),
            (&[], 1, "customfield_1"),
        ];
        for (set, n, says) in cases {
            let problems = screen_problems("PAY", "Incident", &on, &ids(set), false);
            assert_eq!(problems.len(), n, "{set:?}: {problems:?}");
            assert!(problems.iter().all(|p| p.contains(says)), "{set:?}: {problems:?}");
        }
        // Without priority on the screen, a mapped priority is a problem; unmapped, not.
        let no_priority: Vec<&Value> = on.iter().copied().filter(|f| f["fieldId"] != "priority").collect();
        assert_eq!(screen_problems("PAY", "Incident", &no_priority, &ids(&["customfield_1"]), false).len(), 1);
        assert!(screen_problems("PAY", "Incident", &no_priority, &ids(&["customfield_1"]), true).is_empty());
    }

    #[test]
    fn a_severity_change_writes_the_priority_then_only_the_synced_fields() {
        let j = client(Deployment::Cloud);
        let none = TicketFields::default();
        assert_eq!(j.update_bodies("critical", &none), [json!({"fields": {"priority": {"name": "Highest"}}})]);
        assert!(j.update_bodies("unknown", &none).is_empty(), "nothing to write");
        let mut synced = TicketFields { labels: vec!["sev-high".into()], ..TicketFields::default() };
        synced.jira.insert("customfield_1".into(), json!({"value": "high"}));
        assert_eq!(
            j.update_bodies("critical", &synced),
            [
                json!({"fields": {"priority": {"name": "Highest"}}}),
                json!({"fields": {"customfield_1": {"value": "high"}}, "update": {"labels": [{"add": "sev-high"}]}}),
            ]
        );
    }

    #[test]
    fn cloud_bodies_are_adf_and_summaries_fit() {
        let body = client(Deployment::Cloud).create_body(&ticket());
        let summary = body["fields"]["summary"].as_str().expect("summary");
        assert_eq!(summary.chars().count(), SUMMARY_MAX);
        assert!(!summary.contains('\n'), "Jira refuses newlines in summaries");
        assert_eq!(body["fields"]["description"]["type"], "doc");
        assert_eq!(body["fields"]["description"]["content"].as_array().map(Vec::len), Some(2));
        assert_eq!(body["fields"]["description"]["content"][0]["content"][1]["type"], "hardBreak");
        assert_eq!(body["fields"]["labels"], json!(["sre-incident", "sre-inc-1"]));
        assert_eq!(body["fields"]["priority"]["name"], "Highest");
    }

    #[test]
    fn a_ticket_for_a_reopen_is_linked_to_the_earlier_one_and_adf_reads_back_as_text() {
        let follows =
            NewTicket { follows: Some(TicketRef { key: "OPS-1".into(), ..TicketRef::default() }), ..ticket() };
        let body = client(Deployment::Cloud).create_body(&follows);
        assert_eq!(body["update"]["issuelinks"][0]["add"]["outwardIssue"]["key"], "OPS-1");
        assert_eq!(body["update"]["issuelinks"][0]["add"]["type"]["name"], "Relates");
        assert_eq!(plain_text(&adf("First\nline\n\nSecond [sre-note ab]")), "First\nline\n\nSecond [sre-note ab]");
    }

    #[test]
    fn data_center_bodies_are_wiki_text() {
        let body = client(Deployment::DataCenter).create_body(&ticket());
        assert_eq!(body["fields"]["description"], "First paragraph\nwith a break\n\nSecond");
    }
}
