//! A circuit breaker per upstream: a small state machine over consecutive failures.
//!
//! Closed: calls pass; `failure_threshold` consecutive failures open it. Open: calls fail
//! at once with [`Open`] until `open_for` has passed; each reopening doubles the wait up to
//! `max_open_for`. Half-open: one probe passes; its success closes the breaker, its failure
//! reopens it. Time is tokio's, so tests run on the paused clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

/// Breaker settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open the first time.
    pub open_for: Duration,
    /// Longest open period after repeated reopenings.
    pub max_open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self { failure_threshold: 5, open_for: Duration::from_secs(5), max_open_for: Duration::from_secs(60) }
    }
}

/// The observable state of a breaker (for metrics and readiness).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls are refused.
    Open,
    /// One probe may pass.
    HalfOpen,
}

impl BreakerState {
    /// A label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// The breaker refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open, next probe in {retry_in:?}")]
pub struct Open {
    /// When a probe will be let through.
    pub retry_in: Duration,
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, reopenings: u32 },
    HalfOpen { probing: bool, reopenings: u32 },
}

/// A circuit breaker; cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: Arc<Mutex<State>>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self { config, state: Arc::new(Mutex::new(State::Closed { failures: 0 })) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value; a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current state (an open breaker whose time is up reads as half-open).
    pub fn state(&self) -> BreakerState {
        match *self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until, .. } if Instant::now() >= until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Asks to make a call. The permit must be resolved with [`Permit::success`] or
    /// [`Permit::failure`]; dropping it unresolved counts as neither (a cancelled call).
    pub fn try_acquire(&self) -> Result<Permit, Open> {
        let now = Instant::now();
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => Ok(Permit { breaker: self.clone(), probe: false, done: false }),
            State::Open { until, reopenings } => {
                if now >= until {
                    *state = State::HalfOpen { probing: true, reopenings };
                    Ok(Permit { breaker: self.clone(), probe: true, done: false })
                } else {
                    Err(Open { retry_in: until - now })
                }
            }
            State::HalfOpen { probing: false, reopenings } => {
                *state = State::HalfOpen { probing: true, reopenings };
                Ok(Permit { breaker: self.clone(), probe: true, done: false })
            }
            State::HalfOpen { probing: true, .. } => {
                Err(Open { retry_in: self.config.open_for.min(Duration::from_secs(1)) })
            }
        }
    }

    fn open_period(&self, reopenings: u32) -> Duration {
        let factor = 1u32.checked_shl(reopenings.min(16)).unwrap_or(u32::MAX);
        self.config.open_for.saturating_mul(factor).min(self.config.max_open_for)
    }

    fn record(&self, probe: bool, success: bool) {
        let now = Instant::now();
        let mut state = self.lock();
        match (&*state, success) {
            (_, true) => *state = State::Closed { failures: 0 },
            (State::Closed { failures }, false) => {
                let failures = failures + 1;
                *state = if failures >= self.config.failure_threshold {
                    tracing::warn!(failures, "circuit breaker opened");
                    State::Open { until: now + self.open_period(0), reopenings: 0 }
                } else {
                    State::Closed { failures }
                };
            }
            (State::HalfOpen { reopenings, .. }, false) if probe => {
                let reopenings = reopenings + 1;
                *state = State::Open { until: now + self.open_period(reopenings), reopenings };
            }
            // A late failure of a call admitted before the breaker opened changes nothing.
            (_, false) => {}
        }
    }

    fn release_probe(&self) {
        let mut state = self.lock();
        if let State::HalfOpen { reopenings, .. } = *state {
            *state = State::HalfOpen { probing: false, reopenings };
        }
    }
}

/// Permission to make one call.
#[derive(Debug)]
#[must_use = "resolve the permit with success() or failure()"]
pub struct Permit {
    breaker: CircuitBreaker,
    probe: bool,
    done: bool,
}

impl Permit {
    /// The call succeeded, or failed in a way that shows the upstream works (e.g. a 400).
    pub fn success(mut self) {
        self.done = true;
        self.breaker.record(self.probe, true);
    }

    /// The call failed in a way that counts against the upstream.
    pub fn failure(mut self) {
        self.done = true;
        self.breaker.record(self.probe, false);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.done && self.probe {
            self.breaker.release_probe();
        }
    }
}

/// Error of a service wrapped by [`CircuitBreakerLayer`].
#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    /// The breaker refused the call.
    #[error(transparent)]
    Open(Open),
    /// The inner service failed.
    #[error(transparent)]
    Inner(E),
}

/// Decides whether a result counts against the upstream.
pub type IsFailure<Resp, Err> = fn(&Result<Resp, Err>) -> bool;

/// A tower layer putting a [`CircuitBreaker`] in front of a service.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<Resp, Err> {
    breaker: CircuitBreaker,
    is_failure: IsFailure<Resp, Err>,
}

impl<Resp, Err> CircuitBreakerLayer<Resp, Err> {
    /// Wraps services with `breaker`; `is_failure` says which results count as failures
    /// (e.g. errors and 5xx responses).
    pub fn new(breaker: CircuitBreaker, is_failure: IsFailure<Resp, Err>) -> Self {
        Self { breaker, is_failure }
    }
}

impl<S, Resp, Err> tower::Layer<S> for CircuitBreakerLayer<Resp, Err> {
    type Service = CircuitBreakerService<S, Resp, Err>;
    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService { inner, breaker: self.breaker.clone(), is_failure: self.is_failure }
    }
}

/// A service behind a circuit breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S, Resp, Err> {
    inner: S,
    breaker: CircuitBreaker,
    is_failure: IsFailure<Resp, Err>,
}

impl<S, Req> tower::Service<Req> for CircuitBreakerService<S, S::Response, S::Error>
where
    S: tower::Service<Req>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = BreakerError<S::Error>;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(BreakerError::Inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let permit = match self.breaker.try_acquire() {
            Ok(permit) => permit,
            Err(open) => return Box::pin(std::future::ready(Err(BreakerError::Open(open)))),
        };
        let is_failure = self.is_failure;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            if is_failure(&result) {
                permit.failure();
            } else {
                permit.success();
            }
            result.map_err(BreakerError::Inner)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{Service, ServiceExt};

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(25),
        })
    }

    fn fail(b: &CircuitBreaker) {
        b.try_acquire().expect("admitted").failure();
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_probes_after_the_wait() {
        let b = breaker();
        fail(&b);
        fail(&b);
        b.try_acquire().expect("admitted").success(); // resets the count
        fail(&b);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Open);
        let open = b.try_acquire().expect_err("refused");
        assert_eq!(open.retry_in, Duration::from_secs(10));

        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let probe = b.try_acquire().expect("probe admitted");
        assert!(b.try_acquire().is_err(), "only one probe at a time");
        probe.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_longer_up_to_the_cap() {
        let b = breaker();
        (0..3).for_each(|_| fail(&b));
        let mut waits = Vec::new();
        for _ in 0..3 {
            let retry_in = b.try_acquire().expect_err("open").retry_in;
            waits.push(retry_in.as_secs());
            tokio::time::advance(retry_in).await;
            b.try_acquire().expect("probe").failure();
        }
        assert_eq!(waits, [10, 20, 25]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_lets_the_next_one_through() {
        let b = breaker();
        (0..3).for_each(|_| fail(&b));
        tokio::time::advance(Duration::from_secs(10)).await;
        drop(b.try_acquire().expect("probe"));
        b.try_acquire().expect("next probe").success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn as_a_tower_layer() {
        let b = breaker();
        let layer =
            CircuitBreakerLayer::new(b.clone(), |r: &Result<u16, ()>| matches!(r, Ok(s) if *s >= 500) || r.is_err());
        let inner = tower::service_fn(|status: u16| async move { Ok::<_, ()>(status) });
        let mut svc = tower::Layer::layer(&layer, inner);
        for _ in 0..3 {
            let got = svc.ready().await.expect("ready").call(503).await;
            assert!(matches!(got, Ok(503)));
        }
        let got = svc.ready().await.expect("ready").call(200).await;
        assert!(matches!(got, Err(BreakerError::Open(_))), "refused while open");
        tokio::time::advance(Duration::from_secs(10)).await;
        let got = svc.ready().await.expect("ready").call(200).await;
        assert!(matches!(got, Ok(200)));
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
