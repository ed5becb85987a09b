//! The Argo CD API client: one request, one classified answer. It never retries or
//! sleeps; `sre_resilience::Upstream` decides that from [`ArgoError::class`].
//!
//! Plain HTTP only for now (in-cluster `argocd-server` service or a local test server);
//! TLS with a custom CA comes with the poller.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};
use sre_resilience::{ErrorClass, Retryable, classify_status};

use crate::argocd::{ApplicationList, parse_list};

/// Path of the application list.
pub const APPLICATIONS_PATH: &str = "/api/v1/applications";

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
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl std::fmt::Debug for ArgoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArgoClient").field("base", &self.base).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl ArgoClient {
    /// A client for `base` (e.g. `http://argocd-server.argocd.svc`), authenticating with
    /// `token` as `Authorization: Bearer`.
    pub fn new(base: &str, token: Option<SecretString>, timeout: Duration) -> Result<Self, ArgoError> {
        let base = base.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            return Err(ArgoError::Url(format!("`{base}`: only http:// is supported so far")));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        Ok(Self { base, token, timeout, http: Client::builder(TokioExecutor::new()).build(connector) })
    }

    /// `GET /api/v1/applications`, parsed lean.
    pub async fn list_applications(&self) -> Result<ApplicationList, ArgoError> {
        let mut req = hyper::Request::get(format!("{}{APPLICATIONS_PATH}", self.base))
            .header(http::header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {}", token.expose_secret()));
        }
        let req = req.body(Empty::new()).map_err(|e| ArgoError::Url(e.to_string()))?;
        let call = async {
            let resp = self.http.request(req).await.map_err(|e| ArgoError::Transport(e.to_string()))?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| ArgoError::Transport(e.to_string()))?.to_bytes();
            Ok::<_, ArgoError>((status, body))
        };
        let (status, body) =
            tokio::time::timeout(self.timeout, call).await.map_err(|_| ArgoError::Timeout(self.timeout))??;
        if !status.is_success() {
            return Err(ArgoError::Status { status: status.as_u16(), message: error_message(&body) });
        }
        parse_list(&body).map_err(|e| ArgoError::Body(e.to_string()))
    }
}

/// Argo CD's reason from a grpc-gateway error body, else the first bytes of the body.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}
