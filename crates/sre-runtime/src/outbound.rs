//! The HTTP client vendor modules share: HTTPS (system roots, optional extra CA) or plain
//! HTTP for local test servers, a connect and a total timeout, one request and one answer.
//! It never retries and never interprets a status: vendors classify, `sre_resilience`
//! retries. It does notice when an answer asks every sender to slow down (a 429 with
//! `Retry-After`, a spent or nearly spent budget: [`sre_resilience::retry_after::slowdown`])
//! and tells whoever made the call under [`observing_slowdown`], success or not.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;
use tracing::Instrument;

tokio::task_local! {
    /// The longest slowdown the answers of the calls under [`observing_slowdown`] asked for.
    static SLOWDOWN: std::cell::Cell<Option<Duration>>;
}

/// Runs `calls` and says the longest pause their answers asked of every sender of the
/// credential (`None`: go on at the configured rate). Calls outside it report nothing.
pub async fn observing_slowdown<F: Future>(calls: F) -> (F::Output, Option<Duration>) {
    SLOWDOWN
        .scope(std::cell::Cell::new(None), async {
            let out = calls.await;
            (out, SLOWDOWN.with(std::cell::Cell::get))
        })
        .await
}

fn notice(status: http::StatusCode, headers: &http::HeaderMap) {
    if let Some(wait) = sre_resilience::retry_after::slowdown(status, headers, std::time::SystemTime::now()) {
        let _ = SLOWDOWN.try_with(|cell| cell.set(Some(cell.get().map_or(wait, |w| w.max(wait)))));
    }
}

/// A request that got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// Refused, reset, DNS, TLS.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No complete answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The request could not be built (a bad URL).
    #[error("bad request: {0}")]
    Invalid(String),
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status.
    pub status: http::StatusCode,
    /// Headers (Retry-After, rate-limit headers).
    pub headers: http::HeaderMap,
    /// Body (bounded by the vendor's own limits; error bodies are small).
    pub body: Bytes,
}

/// An answer whose body is still to be read.
#[derive(Debug)]
pub struct Opened {
    /// Status.
    pub status: http::StatusCode,
    /// Headers.
    pub headers: http::HeaderMap,
    /// The body, as it arrives.
    pub body: hyper::body::Incoming,
}

impl Opened {
    /// Reads the rest of the body (an error answer's, which is small) within `timeout`.
    pub async fn collect(self, timeout: Duration) -> Result<Answer, TransportError> {
        let body = tokio::time::timeout(timeout, self.body.collect())
            .await
            .map_err(|_| TransportError::Timeout(timeout))?
            .map_err(|e| TransportError::Unreachable(e.to_string()))?
            .to_bytes();
        Ok(Answer { status: self.status, headers: self.headers, body })
    }
}

/// A shared client; cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client with `timeout` per request (connect included); `ca_pem` adds trusted CA
    /// certificates to the system's roots.
    pub fn new(timeout: Duration, ca_pem: Option<&[u8]>) -> Result<Self, TransportError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if let Some(pem) = ca_pem {
            let mut added = 0;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| TransportError::Invalid(format!("ca: {e}")))?;
                roots.add(cert).map_err(|e| TransportError::Invalid(format!("ca: {e}")))?;
                added += 1;
            }
            if added == 0 {
                return Err(TransportError::Invalid("ca: no PEM certificate in it".to_owned()));
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TransportError::Invalid(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self { inner: Client::builder(TokioExecutor::new()).build(https), timeout })
    }

    /// The timeout of one request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one request and returns the answer's head and its body unread, for a body
    /// read as it streams (a long list, a watch). The timeout bounds the head only; the
    /// caller bounds the body.
    pub async fn open(&self, request: http::Request<Bytes>) -> Result<Opened, TransportError> {
        let span = call_span(&request);
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(body));
        let resp = tokio::time::timeout(self.timeout, self.inner.request(request))
            .instrument(span.clone())
            .await
            .map_err(|_| TransportError::Timeout(self.timeout))?
            .map_err(|e| TransportError::Unreachable(error_chain(&e)))?;
        let (parts, body) = resp.into_parts();
        span.record("http.response.status_code", parts.status.as_u16());
        notice(parts.status, &parts.headers);
        Ok(Opened { status: parts.status, headers: parts.headers, body })
    }

    /// Sends one request and reads the whole answer within the timeout.
    pub async fn send(&self, request: http::Request<Bytes>) -> Result<Answer, TransportError> {
        let span = call_span(&request);
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(body));
        let call = async {
            let resp = self.inner.request(request).await.map_err(|e| TransportError::Unreachable(error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| TransportError::Unreachable(e.to_string()))?.to_bytes();
            Ok(Answer { status: parts.status, headers: parts.headers, body })
        };
        let answer = tokio::time::timeout(self.timeout, call)
            .instrument(span.clone())
            .await
            .map_err(|_| TransportError::Timeout(self.timeout))?;
        if let Ok(a) = &answer {
            span.record("http.response.status_code", a.status.as_u16());
            notice(a.status, &a.headers);
        }
        answer
    }
}

/// The span of one vendor call: a client span named `vendor call` with the method, host
/// and path (never the query or headers, which may carry credentials).
fn call_span<B>(request: &http::Request<B>) -> tracing::Span {
    tracing::info_span!(
        sre_contracts::spans::VENDOR_CALL,
        otel.kind = "client",
        http.request.method = %request.method(),
        server.address = request.uri().host().unwrap_or_default(),
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
    )
}

/// A vendor call that failed. Messages carry the vendor's reason, never a credential.
#[derive(Debug, Clone, thiserror::Error)]
pub enum VendorError {
    /// The vendor answered with an error status.
    #[error("{provider} answered {status}: {message}")]
    Status {
        /// Vendor name.
        provider: &'static str,
        /// HTTP status.
        status: u16,
        /// The vendor's message.
        message: String,
        /// Retry-After (or a reset time), when given.
        retry_after: Option<Duration>,
    },
    /// The vendor is rate limiting us, whatever the status says (GitHub's 403 with
    /// `x-ratelimit-remaining: 0`, or its secondary limit message).
    #[error("{provider} rate limit: {message}")]
    Throttled {
        /// Vendor name.
        provider: &'static str,
        /// The vendor's message.
        message: String,
        /// When to try again, when the vendor said.
        retry_after: Option<Duration>,
    },
    /// No answer.
    #[error("{provider}: {source}")]
    Transport {
        /// Vendor name.
        provider: &'static str,
        /// Why.
        source: TransportError,
    },
    /// The request cannot be made (no credentials for this route, a bad template).
    #[error("{0}")]
    Invalid(String),
}

impl sre_resilience::Retryable for VendorError {
    fn class(&self) -> sre_resilience::ErrorClass {
        use sre_resilience::ErrorClass;
        match self {
            VendorError::Status { status, .. } => {
                http::StatusCode::from_u16(*status).map_or(ErrorClass::Permanent, sre_resilience::classify_status)
            }
            VendorError::Throttled { .. } => ErrorClass::Throttled,
            VendorError::Transport { source: TransportError::Invalid(_), .. } | VendorError::Invalid(_) => {
                ErrorClass::Permanent
            }
            VendorError::Transport { .. } => ErrorClass::Transient,
        }
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            VendorError::Status { retry_after, .. } | VendorError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// An error answer as a [`VendorError`]: the vendor's message read by `message` from the
/// JSON body (else the start of the body), and any Retry-After.
pub fn status_error(
    provider: &'static str,
    answer: &Answer,
    message: impl Fn(&serde_json::Value) -> Option<String>,
) -> VendorError {
    let text = serde_json::from_slice::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| message(&v))
        .unwrap_or_else(|| String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)]).into_owned());
    VendorError::Status {
        provider,
        status: answer.status.as_u16(),
        message: text,
        retry_after: sre_resilience::retry_after::from_headers(&answer.headers, std::time::SystemTime::now()),
    }
}

/// At most `max` characters of `s` (never splitting a character), with `…` when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The error and its sources in one line (hyper's top-level message alone says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_respects_characters() {
        assert_eq!(clip("héllo", 10), "héllo");
        assert_eq!(clip("héllo wörld", 5), "héll…");
        assert_eq!(clip("ééééé", 3).chars().count(), 3);
    }
}
