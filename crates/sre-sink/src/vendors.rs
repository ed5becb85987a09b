//! Vendor calls, one resilience layer per vendor credential: every call a sink makes goes
//! through the [`Upstream`] of the credential it is made with (a Jira site's account, a
//! GitHub token, a PagerDuty routing key, an Opsgenie/JSM key), so the configured rate
//! limit and the circuit breaker are the credential's, as the vendors count them. A
//! credential is named by its secret *reference* or another configured name, never by
//! the secret.
//!
//! Also here: how long the calls take (`<sink>_vendor_seconds{provider}`), each vendor's
//! worst breaker (`sre_upstream_breaker_state`), and readiness per vendor (the last
//! credentials check, then the breakers).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sre_resilience::{Backoff, BreakerConfig, BreakerState, CallError, RateLimit, Retryable, Upstream, UpstreamConfig};

/// A vendor a sink calls (each sink's provider enum).
pub trait Vendor: Copy + Ord + Hash + Debug + Send + Sync + 'static {
    /// Its name in logs, metrics, readiness and errors (`jira`, `pagerduty`).
    fn name(self) -> &'static str;
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VendorLabels {
    provider: &'static str,
}

/// The vendors of one sink, with an upstream per credential; shared by every task of
/// the sink.
pub struct Vendors<P: Vendor> {
    limits: BTreeMap<P, Option<NonZeroU32>>,
    upstreams: Mutex<HashMap<(P, String), Upstream>>,
    verdicts: Mutex<BTreeMap<P, Result<(), String>>>,
    seconds: Family<VendorLabels, Histogram>,
}

impl<P: Vendor> Debug for Vendors<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vendors").field("vendors", &self.limits.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

/// The breaker states from worst to best.
fn rank(state: BreakerState) -> u8 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Open => 2,
    }
}

impl<P: Vendor> Vendors<P> {
    /// The configured vendors, each with its requests per minute per credential (0: no
    /// limit of ours).
    pub fn new(per_minute: impl IntoIterator<Item = (P, u32)>) -> Self {
        Self {
            limits: per_minute.into_iter().map(|(p, n)| (p, NonZeroU32::new(n))).collect(),
            upstreams: Mutex::new(HashMap::new()),
            verdicts: Mutex::new(BTreeMap::new()),
            seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 12))),
        }
    }

    /// Registers `<prefix>_vendor_seconds{provider}`, each configured vendor's series at 0.
    pub fn register(&self, r: &mut Registry, prefix: &str) {
        for vendor in self.limits.keys() {
            let _ = self.seconds.get_or_create(&VendorLabels { provider: vendor.name() });
        }
        r.register(format!("{prefix}_vendor_seconds"), "Time of a vendor call, retries included", self.seconds.clone());
    }

    /// The configured vendors.
    pub fn configured(&self) -> impl Iterator<Item = P> + '_ {
        self.limits.keys().copied()
    }

    /// Whether `vendor` is configured.
    pub fn is_configured(&self, vendor: P) -> bool {
        self.limits.contains_key(&vendor)
    }

    /// The upstream of `vendor`'s `credential`, made on first use.
    pub fn upstream(&self, vendor: P, credential: &str) -> Upstream {
        let mut upstreams = self.upstreams.lock().unwrap_or_else(PoisonError::into_inner);
        upstreams
            .entry((vendor, credential.to_owned()))
            .or_insert_with(|| {
                Upstream::new(UpstreamConfig {
                    name: vendor.name(),
                    backoff: Backoff::default(),
                    breaker: BreakerConfig::default(),
                    rate_limit: self.limits.get(&vendor).copied().flatten().map(RateLimit::per_minute),
                })
            })
            .clone()
    }

    /// Makes one call with `vendor`'s `credential` through its upstream (the only retry
    /// loop), and times it.
    pub async fn call<T, E, F, Fut>(&self, vendor: P, credential: &str, op: F) -> Result<T, CallError<E>>
    where
        E: Retryable,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let upstream = self.upstream(vendor, credential);
        let started = tokio::time::Instant::now();
        let result = upstream.call(op).await;
        self.seconds.get_or_create(&VendorLabels { provider: vendor.name() }).observe(started.elapsed().as_secs_f64());
        result
    }

    /// Records the verdict of `vendor`'s credentials check (readiness reports a refusal).
    pub fn credentials_checked(&self, vendor: P, verdict: Result<(), String>) {
        if let Err(reason) = &verdict {
            tracing::error!(provider = vendor.name(), reason = %reason, "vendor check failed: not ready");
        }
        self.verdicts.lock().unwrap_or_else(PoisonError::into_inner).insert(vendor, verdict);
    }

    /// Readiness of `vendor`: its credentials were not refused, and none of its breakers
    /// is open.
    pub fn ready(&self, vendor: P) -> Result<(), String> {
        if let Some(Err(e)) = self.verdicts.lock().unwrap_or_else(PoisonError::into_inner).get(&vendor) {
            return Err(e.clone());
        }
        let upstreams = self.upstreams.lock().unwrap_or_else(PoisonError::into_inner);
        let open = upstreams.iter().filter(|((p, _), u)| *p == vendor && u.breaker_state() == BreakerState::Open);
        match open.count() {
            0 => Ok(()),
            n => Err(format!("circuit open for {n} credential(s): the vendor is failing; facts wait on the bus")),
        }
    }

    /// Each configured vendor's worst breaker (closed before any call), for the metrics.
    pub fn breaker_states(&self) -> Vec<(&'static str, BreakerState)> {
        let upstreams = self.upstreams.lock().unwrap_or_else(PoisonError::into_inner);
        self.limits
            .keys()
            .map(|vendor| {
                let worst = upstreams
                    .iter()
                    .filter(|((p, _), _)| p == vendor)
                    .map(|(_, u)| u.breaker_state())
                    .max_by_key(|s| rank(*s))
                    .unwrap_or(BreakerState::Closed);
                (vendor.name(), worst)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    enum Tool {
        Pager,
        Tracker,
    }

    impl Vendor for Tool {
        fn name(self) -> &'static str {
            match self {
                Tool::Pager => "pager",
                Tool::Tracker => "tracker",
            }
        }
    }

    #[derive(Debug)]
    struct Down;

    impl Retryable for Down {
        fn class(&self) -> sre_resilience::ErrorClass {
            sre_resilience::ErrorClass::Transient
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_credential_has_its_own_breaker_and_readiness_names_the_vendor() {
        let vendors = Vendors::new([(Tool::Pager, 120), (Tool::Tracker, 0)]);
        assert_eq!(vendors.breaker_states(), vec![("pager", BreakerState::Closed), ("tracker", BreakerState::Closed)]);
        // One routing key fails until its breaker opens; the other key's stays closed.
        for _ in 0..10 {
            let _ = vendors.call(Tool::Pager, "platform/pd-payments", || async { Err::<(), _>(Down) }).await;
        }
        let ok = vendors.call(Tool::Pager, "platform/pd-default", || async { Ok::<_, Down>(7) }).await;
        assert_eq!(ok.ok(), Some(7));
        assert_eq!(vendors.upstream(Tool::Pager, "platform/pd-default").breaker_state(), BreakerState::Closed);
        assert_eq!(vendors.upstream(Tool::Pager, "platform/pd-payments").breaker_state(), BreakerState::Open);
        assert_eq!(vendors.breaker_states()[0], ("pager", BreakerState::Open), "the worst of the vendor's");
        let not_ready = vendors.ready(Tool::Pager).expect_err("a breaker is open");
        assert!(not_ready.starts_with("circuit open for 1 credential(s)"), "{not_ready}");
        assert_eq!(vendors.ready(Tool::Tracker), Ok(()));
        vendors.credentials_checked(Tool::Tracker, Err("credentials refused: 401".into()));
        assert_eq!(vendors.ready(Tool::Tracker), Err("credentials refused: 401".into()));
        vendors.credentials_checked(Tool::Tracker, Ok(()));
        assert_eq!(vendors.ready(Tool::Tracker), Ok(()));
    }
}
