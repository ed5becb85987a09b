//! An OTLP/gRPC trace receiver on loopback, as a collector is to the adapters: it accepts
//! `ExportTraceServiceRequest`s (the adapters' `OTEL_EXPORTER_OTLP_ENDPOINT`) and keeps
//! every span, with the service that sent it, for a test to assert on or the demo to
//! print as a tree. It is the `TraceService` of opentelemetry-proto served by tonic, as
//! opentelemetry-otlp's own tests receive spans.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tokio_util::sync::CancellationToken;

/// One span as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// The span's name.
    pub name: String,
    /// Trace id, 32 hex digits.
    pub trace_id: String,
    /// Span id, 16 hex digits.
    pub span_id: String,
    /// The parent's span id, empty for a root.
    pub parent_span_id: String,
    /// Linked spans: (trace id, span id).
    pub links: Vec<(String, String)>,
    /// Attributes rendered as strings.
    pub attributes: BTreeMap<String, String>,
    /// Start, nanoseconds since the epoch.
    pub start_ns: u64,
    /// Duration in nanoseconds.
    pub duration_ns: u64,
}

#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<Span>>>);

fn value(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Collected {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = Vec::new();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .map(|a| value(a.value.as_ref()))
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                got.push(Span {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    links: span.links.iter().map(|l| (hex::encode(&l.trace_id), hex::encode(&l.span_id))).collect(),
                    attributes: span.attributes.iter().map(|a| (a.key.clone(), value(a.value.as_ref()))).collect(),
                    start_ns: span.start_time_unix_nano,
                    duration_ns: span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano),
                });
            }
        }
        self.0.lock().unwrap_or_else(PoisonError::into_inner).extend(got);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<Span>>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for Collected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Collected")
    }
}

impl Receiver {
    /// Listens on a free loopback port (inside a Tokio runtime).
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(0).await
    }

    /// Listens on `127.0.0.1:port` (the demo's fixed port).
    pub async fn start_on(port: u16) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let collected = Collected::default();
        let spans = collected.0.clone();
        let stop = CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collected))
                .serve_with_incoming_shutdown(incoming, until.cancelled_owned())
                .await;
        });
        Ok(Self { endpoint, spans, stop })
    }

    /// The OTLP/gRPC endpoint (`http://127.0.0.1:<port>`), for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The spans of trace `trace_id`, by start time.
    pub fn trace(&self, trace_id: &str) -> Vec<Span> {
        let mut spans: Vec<Span> = self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect();
        spans.sort_by_key(|s| s.start_ns);
        spans
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `spans` (one trace) as an indented tree: each span under its parent, with its service,
/// duration and the attributes named in `show`.
pub fn render_tree(spans: &[Span], show: &[&str]) -> String {
    fn walk(out: &mut String, spans: &[Span], parent: &str, depth: usize, show: &[&str]) {
        for s in spans.iter().filter(|s| s.parent_span_id == parent) {
            let attrs: Vec<String> =
                show.iter().filter_map(|k| s.attributes.get(*k).map(|v| format!("{k}={v}"))).collect();
            out.push_str(&format!(
                "{}{} [{}] {:.1} ms {}\n",
                "  ".repeat(depth),
                s.name,
                s.service,
                s.duration_ns as f64 / 1e6,
                attrs.join(" ")
            ));
            walk(out, spans, &s.span_id, depth + 1, show);
        }
    }
    let ids: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut out = String::new();
    // Roots, and spans whose parent is not in the trace received (the sender's, say).
    let mut roots: Vec<&str> = Vec::new();
    for s in spans.iter().filter(|s| !ids.contains(s.parent_span_id.as_str())) {
        if !roots.contains(&s.parent_span_id.as_str()) {
            roots.push(&s.parent_span_id);
        }
    }
    for root in roots {
        walk(&mut out, spans, root, 0, show);
    }
    out
}
