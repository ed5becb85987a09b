//! Rate limits per upstream, with governor's GCRA (a leaky bucket without a timer task).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{Jitter, Quota, clock::Clock, clock::DefaultClock};

/// A rate: `per_period` requests every `period`, with bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per period.
    pub per_period: NonZeroU32,
    /// The period.
    pub period: Duration,
    /// Largest burst.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `n` requests per minute, burst `n`.
    pub fn per_minute(n: NonZeroU32) -> Self {
        Self { per_period: n, period: Duration::from_secs(60), burst: n }
    }

    /// `n` requests per second, burst `n`.
    pub fn per_second(n: NonZeroU32) -> Self {
        Self { per_period: n, period: Duration::from_secs(1), burst: n }
    }
}

/// A shared limiter for one upstream.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<governor::DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter allowing `limit`.
    pub fn new(limit: RateLimit) -> Self {
        let replenish = limit.period / limit.per_period.get();
        let quota = Quota::with_period(replenish.max(Duration::from_nanos(1)))
            .unwrap_or_else(|| Quota::per_second(limit.per_period))
            .allow_burst(limit.burst);
        Self { inner: Arc::new(governor::RateLimiter::direct(quota)) }
    }

    /// Takes one cell now, or says how long until one is free.
    pub fn check(&self) -> Result<(), Duration> {
        self.inner.check().map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Waits for a cell, with a little jitter so waiters do not wake together.
    pub async fn acquire(&self) {
        self.inner.until_ready_with_jitter(Jitter::up_to(Duration::from_millis(20))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_a_wait() {
        let n = NonZeroU32::new(2).expect("non-zero");
        let limiter = RateLimiter::new(RateLimit::per_minute(n));
        assert!(limiter.check().is_ok());
        assert!(limiter.check().is_ok());
        let wait = limiter.check().expect_err("third call in the same minute is refused");
        assert!(wait > Duration::from_secs(20) && wait <= Duration::from_secs(30), "{wait:?}");
    }
}
