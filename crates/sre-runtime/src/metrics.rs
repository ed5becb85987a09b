//! The Prometheus registry every component registers into, served on `/metrics`.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::registry::Registry;

/// A shared registry; cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers metrics with `f` (typically at start-up).
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        f(&mut self.registry.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(error = %err, "encoding metrics failed");
        }
        out
    }
}

/// The circuit breaker of each upstream a service calls, as
/// `sre_upstream_breaker_state{upstream}`: 0 closed, 1 half-open, 2 open (alert on 2).
/// Label values are vendor names from the code (`Provider::name()`), or for argocd-sync
/// the configured server URL (bounded by the configuration), never anything a request carries.
#[derive(Debug, Clone, Default)]
pub struct BreakerMetrics {
    family: prometheus_client::metrics::family::Family<UpstreamLabels, prometheus_client::metrics::gauge::Gauge>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
}

impl BreakerMetrics {
    /// How often a service copies its breakers' states into the gauge.
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(2);

    /// Registers the family in `metrics`.
    pub fn register(&self, metrics: &Metrics) {
        let family = self.family.clone();
        metrics.register(|r| {
            r.register(
                "sre_upstream_breaker_state",
                "Circuit breaker per upstream: 0 closed, 1 half-open, 2 open (calls refused)",
                family,
            );
        });
    }

    /// Records `upstream`'s state.
    pub fn set(&self, upstream: &str, state: sre_resilience::BreakerState) {
        let value = match state {
            sre_resilience::BreakerState::Closed => 0,
            sre_resilience::BreakerState::HalfOpen => 1,
            sre_resilience::BreakerState::Open => 2,
        };
        self.family.get_or_create(&UpstreamLabels { upstream: upstream.to_owned() }).set(value);
    }

    /// Records `states()` every `every` until `cancel` (the breakers change on calls, the
    /// gauge follows within `every`).
    pub async fn watch<S>(
        self,
        every: std::time::Duration,
        cancel: tokio_util::sync::CancellationToken,
        states: impl Fn() -> Vec<(S, sre_resilience::BreakerState)>,
    ) where
        S: AsRef<str>,
    {
        // The first reading is taken before any wait, so the gauge exists from the start.
        loop {
            for (upstream, state) in states() {
                self.set(upstream.as_ref(), state);
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}
