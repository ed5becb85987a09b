//! JSON logs and OpenTelemetry traces, set up once in one place.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::TelemetryConfig;
use crate::config::IncomingTrace;

/// How this process uses webhooks' incoming trace context, set once by [`init`].
static INCOMING: std::sync::OnceLock<IncomingTrace> = std::sync::OnceLock::new();

/// What an incoming request's `traceparent` becomes for the span that handles it.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// No (valid) trace context came with the request.
    None,
    /// Parent the handling span on it.
    Parent(opentelemetry::trace::SpanContext),
    /// Start a trace and link to it.
    Link(opentelemetry::trace::SpanContext),
}

struct HttpExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HttpExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The decision for a request's `headers` under `mode` (pure; see [`incoming_trace`]).
pub fn incoming(mode: IncomingTrace, headers: &http::HeaderMap) -> Incoming {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&HttpExtractor(headers));
    let remote = cx.span().span_context().clone();
    if !remote.is_valid() {
        return Incoming::None;
    }
    match mode {
        IncomingTrace::Parent => Incoming::Parent(remote),
        IncomingTrace::Link => Incoming::Link(remote),
    }
}

/// Joins or links `span` to the trace a request came with, as configured
/// (`telemetry.incoming_traceparent`).
pub fn incoming_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    match incoming(INCOMING.get().copied().unwrap_or_default(), headers) {
        Incoming::None => {}
        Incoming::Parent(remote) => {
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
        Incoming::Link(remote) => span.add_link(remote),
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, with the span fields (correlation ids) of the event.
    Json,
    /// Human-readable lines.
    Text,
}

/// Flushes and stops exporters when the service ends.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl TelemetryGuard {
    /// Exports what is buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::warn!(error = %err, "flushing traces failed");
        }
    }
}

/// Installs the global subscriber: logs to stdout in the configured format, and spans to
/// OpenTelemetry. Traces are exported over OTLP/gRPC only when an endpoint is configured;
/// without one, spans still get trace ids (so messages carry a `traceparent`) and nothing
/// is sent or logged about exporting.
pub fn init(service: &'static str, instance: &str, config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new("service.instance.id", instance.to_owned()))
        .build();
    let _ = INCOMING.set(config.incoming_traceparent);
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = &config.otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));

    let filter = EnvFilter::try_new(&config.log_level)?;
    let fmt = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_target(true)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().with_target(false).boxed(),
    };
    // The log level filters logs only: traces keep every info span, so a quiet log
    // (`log_level: warn`) does not cut the trace an operator follows.
    let otel = otel.with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otel).try_init()?;
    Ok(TelemetryGuard { provider })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn headers(traceparent: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(t) = traceparent {
            h.insert("traceparent", t.parse().expect("header"));
        }
        h
    }

    #[test]
    fn an_incoming_traceparent_is_linked_unless_the_sender_is_trusted() {
        let cases = [
            (IncomingTrace::Link, Some(SENT), "link"),
            (IncomingTrace::Parent, Some(SENT), "parent"),
            (IncomingTrace::Link, None, "none"),
            (IncomingTrace::Parent, None, "none"),
            (IncomingTrace::Link, Some("00-00000000000000000000000000000000-b7ad6b7169203331-01"), "none"),
            (IncomingTrace::Parent, Some("not a traceparent"), "none"),
        ];
        for (mode, header, want) in cases {
            let got = incoming(mode, &headers(header));
            let (kind, sc) = match &got {
                Incoming::None => ("none", None),
                Incoming::Parent(sc) => ("parent", Some(sc)),
                Incoming::Link(sc) => ("link", Some(sc)),
            };
            assert_eq!(kind, want, "{mode:?} {header:?}");
            if let Some(sc) = sc {
                assert_eq!(format!("{:032x}", sc.trace_id()), "0af7651916cd43dd8448eb211c80319c");
                assert!(sc.is_remote());
            }
        }
    }
}
