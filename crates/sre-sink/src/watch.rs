//! What a sink's readiness and metrics follow besides its vendors: its record bucket and
//! its durable consumer (not ready while either has failed for more than a few seconds,
//! or is not open yet), and its vendors' circuit breakers (`sre_upstream_breaker_state`).

use std::sync::Arc;
use std::time::Duration;

use sre_runtime::{BreakerMetrics, Health, Metrics};

/// The bucket, consumer and breaker watch of one sink.
#[derive(Debug, Clone)]
pub struct SinkWatch {
    /// The breaker gauge, to [`BreakerMetrics::watch`] once the sink exists.
    pub breakers: BreakerMetrics,
    /// The record bucket: hand it to `Records::open`.
    pub kv: sre_bus::Reachability,
    /// The consumer: [`sre_bus::ReachabilitySlot::set`] once it is bound.
    pub consumer: sre_bus::ReachabilitySlot,
    /// `<sink>_sender`: 1 on the replica holding the sender lease.
    pub leader: prometheus_client::metrics::gauge::Gauge,
}

impl SinkWatch {
    /// How often the record bucket is asked whether it answers.
    pub const KV_PROBE_EVERY: Duration = Duration::from_secs(2);

    /// Registers the `kv` and `consumer` readiness checks in `health`, the breaker gauge
    /// and `<prefix>_sender` in `metrics`, for the sink whose records live in `bucket`.
    pub fn register(health: &Health, metrics: &Metrics, prefix: &str, bucket: &str) -> Self {
        let watch = Self {
            breakers: BreakerMetrics::default(),
            kv: sre_bus::Reachability::new(format!("KV bucket {bucket}")),
            consumer: sre_bus::ReachabilitySlot::new("fact consumer"),
            leader: prometheus_client::metrics::gauge::Gauge::default(),
        };
        watch.breakers.register(metrics);
        let leader = watch.leader.clone();
        metrics.register(|r| {
            r.register(
                format!("{prefix}_sender"),
                "1 on the replica holding the sender lease: it pulls the facts and calls the vendors",
                leader,
            );
        });
        let (kv, consumer) = (watch.kv.clone(), watch.consumer.clone());
        health.register("kv", Arc::new(move || kv.readiness()));
        health.register("consumer", Arc::new(move || consumer.readiness()));
        watch
    }
}
