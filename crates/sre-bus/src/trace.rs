//! W3C trace context carried in NATS headers.

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use sre_contracts::headers;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        [headers::TRACEPARENT, headers::TRACESTATE].into_iter().filter(|k| self.0.get(*k).is_some()).collect()
    }
}

/// Writes the current span's trace context as `traceparent` (and `tracestate`). When no
/// trace is active (OpenTelemetry not set up), a new sampled trace id is started so every
/// message still carries a `traceparent` that later hops can join.
pub fn inject_context(headers_out: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    let propagator = opentelemetry_sdk::propagation::TraceContextPropagator::new();
    if cx.span().span_context().is_valid() {
        propagator.inject_context(&cx, &mut HeaderInjector(headers_out));
    }
    if headers_out.get(headers::TRACEPARENT).is_none() {
        let trace_id: u128 = rand::random::<u128>().max(1);
        let span_id: u64 = rand::random::<u64>().max(1);
        let value = format!("00-{trace_id:032x}-{span_id:016x}-01");
        headers_out.insert(headers::TRACEPARENT, value.as_str());
    }
}

/// Reads the trace context of a received message, to parent the handling span on it.
pub fn extract_context(headers_in: &HeaderMap) -> opentelemetry::Context {
    opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&HeaderExtractor(headers_in))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_is_always_written_and_can_be_read_back() {
        let mut h = HeaderMap::new();
        inject_context(&mut h);
        let tp = h.get(headers::TRACEPARENT).expect("traceparent").as_str().to_owned();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!((parts[0], parts[1].len(), parts[2].len(), parts[3]), ("00", 32, 16, "01"));
        let cx = extract_context(&h);
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_valid());
        assert_eq!(format!("{:032x}", sc.trace_id()), parts[1]);
    }
}
