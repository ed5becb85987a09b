//! The HTTP client vendor modules share: HTTPS (system roots, optional extra CA) or plain
//! HTTP for local test servers, a connect and a total timeout, one request and one answer.
//! It never retries and never interprets a status: vendors classify, `sre_resilience`
//! retries.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject;

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
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| TransportError::Invalid(format!("ca: {e}")))?;
                roots.add(cert).map_err(|e| TransportError::Invalid(format!("ca: {e}")))?;
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

    /// Sends one request and reads the whole answer within the timeout.
    pub async fn send(&self, request: http::Request<Bytes>) -> Result<Answer, TransportError> {
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(body));
        let call = async {
            let resp = self.inner.request(request).await.map_err(|e| TransportError::Unreachable(error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.map_err(|e| TransportError::Unreachable(e.to_string()))?.to_bytes();
            Ok(Answer { status: parts.status, headers: parts.headers, body })
        };
        tokio::time::timeout(self.timeout, call).await.map_err(|_| TransportError::Timeout(self.timeout))?
    }
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
