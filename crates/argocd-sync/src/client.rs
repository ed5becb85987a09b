//! The Argo CD API client: one request, one classified answer. It never retries or
//! sleeps; `sre_resilience::Upstream` decides that from [`ArgoError::class`].
//!
//! `https://` verifies the server against the system's roots plus an optional CA bundle
//! (Argo CD's self-signed certificate, a private CA); `http://` is for an in-cluster
//! `argocd-server --insecure` service or a local test server.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};
use sre_resilience::{ErrorClass, Retryable, classify_status};

use crate::argocd::{ApplicationList, ListParser};

/// Path of the application list.
pub const APPLICATIONS_PATH: &str = "/api/v1/applications";
/// Path of the application watch stream.
pub const WATCH_PATH: &str = "/api/v1/stream/applications";

/// Why a call failed. Messages carry Argo CD's own reason, never the token.
#[derive(Debug, thiserror::Error)]
pub enum ArgoError {
    /// Argo CD answered with an error status.
    #[error("argo cd answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Argo CD's `message` (grpc-gateway error body), or the start of the body.
        message: String,
    },
    /// No answer: connection refused, reset, DNS.
    #[error("argo cd unreachable: {0}")]
    Transport(String),
    /// No answer within the request timeout.
    #[error("argo cd did not answer within {0:?}")]
    Timeout(Duration),
    /// The body was not an application list (a proxy's login page, say).
    #[error("argo cd answered something that is not an application list: {0}")]
    Body(String),
    /// The configured URL cannot be used.
    #[error("argo cd url: {0}")]
    Url(String),
}

impl Retryable for ArgoError {
    fn class(&self) -> ErrorClass {
        match self {
            ArgoError::Status { status, .. } => {
                http::StatusCode::from_u16(*status).map_or(ErrorClass::Permanent, classify_status)
            }
            ArgoError::Transport(_) | ArgoError::Timeout(_) => ErrorClass::Transient,
            ArgoError::Body(_) | ArgoError::Url(_) => ErrorClass::Permanent,
        }
    }
}

/// A client for one Argo CD server.
pub struct ArgoClient {
    base: String,
    token: Option<SecretString>,
    timeout: Duration,
    http: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
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
            return Err(ArgoError::Url(format!("`{base}`: must start with https:// or http://")));
        }
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(pem) = ca_pem {
            let mut added = 0;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| ArgoError::Url(format!("ca_file: {e}")))?;
                roots.add(cert).map_err(|e| ArgoError::Url(format!("ca_file: {e}")))?;
                added += 1;
            }
            if added == 0 {
                return Err(ArgoError::Url("ca_file: no PEM certificate in it".to_owned()));
            }
        }
        let tls =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| ArgoError::Url(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        Ok(Self { base, token, timeout, http: Client::builder(TokioExecutor::new()).build(https) })
    }

    /// A `GET` of `url` asking for JSON, with the token when there is one.
    fn get(&self, url: String) -> Result<hyper::Request<Empty<Bytes>>, ArgoError> {
        let mut req = hyper::Request::get(url).header(http::header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {}", token.expose_secret()));
        }
        req.body(Empty::new()).map_err(|e| ArgoError::Url(e.to_string()))
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
        let timeout = self.timeout;
        let head = async {
            let resp = self.http.request(req).await.map_err(|e| ArgoError::Transport(e.to_string()))?;
            let status = resp.status();
            let body = resp.into_body();
            if !status.is_success() {
                let bytes = body.collect().await.map_err(|e| ArgoError::Transport(e.to_string()))?.to_bytes();
                return Err(ArgoError::Status { status: status.as_u16(), message: error_message(&bytes) });
            }
            Ok(body)
        };
        let body = tokio::time::timeout_at(deadline, head).await.map_err(|_| ArgoError::Timeout(timeout))??;
        Ok(ListReader { body, parser: Some(ListParser::default()), deadline, timeout, bytes: 0 })
    }

    /// `GET /api/v1/applications/{name}?appNamespace=…`: one whole application (the detail
    /// a lean list leaves out). 404 when it was deleted since it was listed.
    pub async fn get_application(&self, namespace: &str, name: &str) -> Result<crate::argocd::Application, ArgoError> {
        // Kubernetes names are DNS labels; anything else is not a name Argo CD could have.
        let safe = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
        if !safe(namespace) || !safe(name) {
            return Err(ArgoError::Url(format!("`{namespace}/{name}` is not a Kubernetes name")));
        }
        let req = self.get(format!("{}{APPLICATIONS_PATH}/{name}?appNamespace={namespace}", self.base))?;
        let call = async {
            let resp = self.http.request(req).await.map_err(|e| ArgoError::Transport(e.to_string()))?;
            let status = resp.status();
            let bytes = resp.into_body().collect().await.map_err(|e| ArgoError::Transport(e.to_string()))?.to_bytes();
            if !status.is_success() {
                return Err(ArgoError::Status { status: status.as_u16(), message: error_message(&bytes) });
            }
            serde_json::from_slice(&bytes).map_err(|e| ArgoError::Body(format!("application: {e}")))
        };
        tokio::time::timeout(self.timeout, call).await.map_err(|_| ArgoError::Timeout(self.timeout))?
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
            let frame = tokio::time::timeout_at(self.deadline, self.body.frame())
                .await
                .map_err(|_| ArgoError::Timeout(self.timeout))?;
            match frame {
                Some(frame) => {
                    let frame = frame.map_err(|e| ArgoError::Transport(e.to_string()))?;
                    if let Some(data) = frame.data_ref() {
                        parser.feed(data).map_err(|e| ArgoError::Body(e.to_string()))?;
                        self.bytes = parser.bytes();
                        let items: Vec<_> = parser.take_items().collect();
                        if !items.is_empty() {
                            return Ok(Some(items));
                        }
                    }
                }
                None => {
                    let parser = self.parser.take().unwrap_or_default();
                    let rest = parser.finish().map_err(|e| ArgoError::Body(e.to_string()))?;
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
        let resp = tokio::time::timeout(self.timeout, self.http.request(req))
            .await
            .map_err(|_| ArgoError::Timeout(self.timeout))?
            .map_err(|e| ArgoError::Transport(e.to_string()))?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = tokio::time::timeout(self.timeout, body.collect())
                .await
                .map_err(|_| ArgoError::Timeout(self.timeout))?
                .map_err(|e| ArgoError::Transport(e.to_string()))?
                .to_bytes();
            return Err(ArgoError::Status { status: status.as_u16(), message: error_message(&bytes) });
        }
        let mut line: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ArgoError::Transport(e.to_string()))?;
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
        serde_json::from_slice(line).map_err(|e| ArgoError::Body(format!("watch line: {e}")))?;
    if let Some(err) = parsed.error {
        let message = err.get("message").and_then(|m| m.as_str()).unwrap_or("stream error").to_owned();
        let status = err.get("http_code").and_then(serde_json::Value::as_u64).unwrap_or(500) as u16;
        return Err(ArgoError::Status { status, message });
    }
    Ok(parsed.result.filter(|r| r.kind != crate::argocd::EventType::Other))
}

/// Argo CD's reason from a grpc-gateway error body, else the first bytes of the body.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}
