//! The Argo CD API client: one request, one classified answer. It never retries or
//! sleeps; `sre_resilience::Upstream` decides that from [`ArgoError::class`].
//!
//! `https://` verifies the server against the system's roots plus an optional CA bundle
//! (Argo CD's self-signed certificate, a private CA); `http://` is for an in-cluster
//! `argocd-server --insecure` service or a local test server.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use secrecy::{ExposeSecret, SecretString};
pub use sre_runtime::outbound::VendorError as ArgoError;
use sre_runtime::outbound::{HttpClient, Opened, TransportError};

use crate::argocd::{ApplicationList, ListParser};

/// Vendor name in errors and logs.
pub const NAME: &str = "argocd";
/// Path of the application list.
pub const APPLICATIONS_PATH: &str = "/api/v1/applications";
/// Path of the application watch stream.
pub const WATCH_PATH: &str = "/api/v1/stream/applications";

fn transport(source: TransportError) -> ArgoError {
    ArgoError::Transport { provider: NAME, source }
}

fn timeout(after: Duration) -> ArgoError {
    transport(TransportError::Timeout(after))
}

fn unreachable(e: impl std::fmt::Display) -> ArgoError {
    transport(TransportError::Unreachable(e.to_string()))
}

/// An answer that is not what Argo CD sends (a proxy's login page, say): permanent.
fn not_a_list(what: impl std::fmt::Display) -> ArgoError {
    ArgoError::Invalid(format!("argo cd answered something that is not {what}"))
}

/// A client for one Argo CD server, on the HTTP client every vendor module shares (TLS
/// with an optional CA; errors as `VendorError`, with Argo CD's `Retry-After`).
pub struct ArgoClient {
    base: String,
    token: Option<SecretString>,
    timeout: Duration,
    http: HttpClient,
}

impl std::fmt::Debug for ArgoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArgoClient").field("base", &self.base).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl ArgoClient {
    /// A client for `base` (e.g. `https://argocd.example.com`), authenticating with
    /// `token` as `Authorization: Bearer`. `ca_pem` adds trusted CA certificates (PEM) to
    /// the system's roots.
    pub fn new(
        base: &str,
        token: Option<SecretString>,
        timeout: Duration,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, ArgoError> {
        let base = base.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(ArgoError::Invalid(format!("argo cd url `{base}`: must start with https:// or http://")));
        }
        let http = HttpClient::new(timeout, ca_pem).map_err(|e| {
            let reason = match &e {
                TransportError::Invalid(m) => m.trim_start_matches("ca: ").to_owned(),
                other => other.to_string(),
            };
            ArgoError::Invalid(format!("argo cd ca_file: {reason}"))
        })?;
        Ok(Self { base, token, timeout, http })
    }

    /// A `GET` of `url` asking for JSON, with the token when there is one.
    fn get(&self, url: String) -> Result<http::Request<Bytes>, ArgoError> {
        let mut req = http::Request::get(url).header(http::header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {}", token.expose_secret()));
        }
        req.body(Bytes::new()).map_err(|e| ArgoError::Invalid(format!("argo cd request: {e}")))
    }

    /// Sends `req`; an error status is read (within the timeout) and classified, with its
    /// `Retry-After`.
    async fn open(&self, req: http::Request<Bytes>) -> Result<Opened, ArgoError> {
        let opened = self.http.open(req).await.map_err(transport)?;
        if opened.status.is_success() {
            return Ok(opened);
        }
        let answer = opened.collect(self.timeout).await.map_err(transport)?;
        Err(status_error(&answer))
    }

    /// `GET /api/v1/applications`, whole items, parsed lean as it streams in and collected.
    pub async fn list_applications(&self) -> Result<Listed, ArgoError> {
        let mut items = Vec::new();
        let stats = self.stream_applications(None, |app| items.push(app)).await?;
        Ok(Listed { list: ApplicationList { items }, bytes: stats.bytes })
    }

    /// `GET /api/v1/applications?fields=…` (`None`: whole items): hands each application
    /// to `on_item` as soon as its last byte has arrived, so only one item is held at a time.
    /// A failure part-way leaves the items already handed over; the caller starts again.
    pub async fn stream_applications(
        &self,
        fields: Option<&str>,
        mut on_item: impl FnMut(Box<crate::argocd::Application>),
    ) -> Result<ListStats, ArgoError> {
        let mut reader = self.open_list(fields).await?;
        let mut items = 0;
        while let Some(batch) = reader.next().await? {
            for app in batch {
                items += 1;
                on_item(app);
            }
        }
        Ok(ListStats { items, bytes: reader.bytes() })
    }

    /// Sends `GET /api/v1/applications[?fields=…]` and returns a reader of its items, for a
    /// caller that does asynchronous work between items (publishing a batch). The request
    /// timeout bounds the whole read, from now.
    pub async fn open_list(&self, fields: Option<&str>) -> Result<ListReader, ArgoError> {
        let url = match fields {
            Some(fields) => format!("{}{APPLICATIONS_PATH}?fields={fields}", self.base),
            None => format!("{}{APPLICATIONS_PATH}", self.base),
        };
        let req = self.get(url)?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let opened = tokio::time::timeout_at(deadline, self.open(req)).await.map_err(|_| timeout(self.timeout))??;
        let (body, timeout) = (opened.body, self.timeout);
        Ok(ListReader { body, parser: Some(ListParser::default()), deadline, timeout, bytes: 0 })
    }

    /// `GET /api/v1/applications/{name}?appNamespace=…`: one whole application (the detail
    /// a lean list leaves out). 404 when it was deleted since it was listed.
    pub async fn get_application(&self, namespace: &str, name: &str) -> Result<crate::argocd::Application, ArgoError> {
        // Kubernetes names are DNS labels; anything else is not a name Argo CD could have.
        let safe = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !safe(namespace) || !safe(name) {
            return Err(ArgoError::Invalid(format!("argo cd: `{namespace}/{name}` is not a Kubernetes name")));
        }
        let req = self.get(format!("{}{APPLICATIONS_PATH}/{name}?appNamespace={namespace}", self.base))?;
        let call = async {
            let answer = self.open(req).await?.collect(self.timeout).await.map_err(transport)?;
            serde_json::from_slice(&answer.body).map_err(|e| not_a_list(format_args!("an application: {e}")))
        };
        tokio::time::timeout(self.timeout, call).await.map_err(|_| timeout(self.timeout))?
    }
}

/// The items of a list answer as they arrive (see [`ArgoClient::open_list`]): only one
/// item's bytes, and the items of one network read, are held at a time.
#[derive(Debug)]
pub struct ListReader {
    body: hyper::body::Incoming,
    /// `None` once the body has ended.
    parser: Option<ListParser>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    bytes: u64,
}

impl ListReader {
    /// The items completed by the next reads; `None` once the list has ended.
    pub async fn next(&mut self) -> Result<Option<Vec<Box<crate::argocd::Application>>>, ArgoError> {
        loop {
            let Some(parser) = self.parser.as_mut() else { return Ok(None) };
            let frame =
                tokio::time::timeout_at(self.deadline, self.body.frame()).await.map_err(|_| timeout(self.timeout))?;
            match frame {
                Some(frame) => {
                    let frame = frame.map_err(unreachable)?;
                    if let Some(data) = frame.data_ref() {
                        parser.feed(data).map_err(|e| not_a_list(format_args!("an application list: {e}")))?;
                        self.bytes = parser.bytes();
                        let items: Vec<_> = parser.take_items().collect();
                        if !items.is_empty() {
                            return Ok(Some(items));
                        }
                    }
                }
                None => {
                    let parser = self.parser.take().unwrap_or_default();
                    let rest = parser.finish().map_err(|e| not_a_list(format_args!("an application list: {e}")))?;
                    return Ok((!rest.items.is_empty()).then_some(rest.items));
                }
            }
        }
    }

    /// Body bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// What a streamed list read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListStats {
    /// Items handed over.
    pub items: usize,
    /// Body bytes read.
    pub bytes: u64,
}

/// The `fields` of a lean list: the portable allowlist paths a cycle needs (name,
/// namespace, the whole `spec` for project and destination, health with its message, sync
/// status), and the labels when the environment comes from one. What `fields` can never
/// select (`metadata.uid`, `status.reconciledAt`) and what older servers cannot
/// (`status.sync.revision`) is fetched per changed application.
pub fn lean_list_fields(from: crate::config::EnvironmentFrom) -> String {
    let mut fields = vec!["items.metadata.name", "items.metadata.namespace"];
    if from == crate::config::EnvironmentFrom::Label {
        fields.push("items.metadata.labels");
    }
    fields.extend(["items.spec", "items.status.sync.status", "items.status.health"]);
    fields.join(",")
}

/// The `fields` of the watch stream, whose filter takes any path: everything an event is
/// planned from, so no event needs a second request.
pub const WATCH_FIELDS: &str = "result.type,result.application.metadata.name,result.application.metadata.namespace,\
result.application.metadata.uid,result.application.metadata.labels,result.application.spec.project,\
result.application.spec.destination,result.application.status.health,result.application.status.sync.status,\
result.application.status.sync.revision,result.application.status.reconciledAt";

/// A list as read, with its size on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// The applications.
    pub list: ApplicationList,
    /// Body bytes read.
    pub bytes: u64,
}

impl ArgoClient {
    /// `GET /api/v1/stream/applications` (newline-delimited JSON): the current
    /// applications as `ADDED`, then changes as they happen. Sends each event to `tx`;
    /// returns when the stream ends or fails (the caller reconnects). Only the answer's
    /// headers are bounded by the request timeout; the stream itself is long-lived.
    pub async fn watch_applications(
        &self,
        tx: &tokio::sync::mpsc::Sender<crate::argocd::WatchEvent>,
    ) -> Result<(), ArgoError> {
        let req = self.get(format!("{}{WATCH_PATH}?fields={WATCH_FIELDS}", self.base))?;
        let mut body = self.open(req).await?.body;
        let mut line: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(unreachable)?;
            let Some(data) = frame.data_ref() else { continue };
            let mut rest: &[u8] = data;
            while let Some(end) = rest.iter().position(|&b| b == b'\n') {
                line.extend_from_slice(&rest[..end]);
                rest = &rest[end + 1..];
                if let Some(event) = parse_watch_line(&line)?
                    && tx.send(event).await.is_err()
                {
                    return Ok(());
                }
                line.clear();
            }
            line.extend_from_slice(rest);
        }
        Ok(())
    }
}

/// One stream line: an event, nothing (blank, keepalive, an ignored type), or the
/// stream's own error.
fn parse_watch_line(line: &[u8]) -> Result<Option<crate::argocd::WatchEvent>, ArgoError> {
    let line = line.trim_ascii();
    if line.is_empty() || line.starts_with(b":") {
        return Ok(None);
    }
    let parsed: crate::argocd::WatchLine =
        serde_json::from_slice(line).map_err(|e| not_a_list(format_args!("a watch event: {e}")))?;
    if let Some(err) = parsed.error {
        let message = err.get("message").and_then(|m| m.as_str()).unwrap_or("stream error").to_owned();
        let status = err.get("http_code").and_then(serde_json::Value::as_u64).unwrap_or(500) as u16;
        return Err(ArgoError::Status { provider: NAME, status, message, retry_after: None });
    }
    Ok(parsed.result.filter(|r| r.kind != crate::argocd::EventType::Other))
}

/// Argo CD's error answer: its reason from the grpc-gateway error body (`message`), and
/// any `Retry-After`.
fn status_error(answer: &sre_runtime::outbound::Answer) -> ArgoError {
    sre_runtime::outbound::status_error(NAME, answer, |v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
}
