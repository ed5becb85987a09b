//! Rate limits per upstream, held in every rolling window.
//!
//! Vendors count requests per *rolling* window (PagerDuty: events per routing key per
//! rolling minute; Jira and GitHub alike). A token bucket with a burst of `n` refilling
//! `n` per minute lets up to ~2n through in the first minute of a storm (the burst, then
//! the refill), and the excess comes back as 429s. So the limit here is a sliding log of
//! the last `n` grants: a request goes at once while fewer than `n` went in the last
//! period, else at the moment the oldest of them leaves it. The first `n` requests of a
//! storm go out at once; no window of one period ever holds more than `n`.
//!
//! Grants are reserved in order (each caller is given its own moment, then sleeps until
//! it), so waiters do not race and nobody waits longer than the limit requires. A caller
//! that gives up after reserving leaves its slot unused: the limit only errs on the safe
//! side. When `burst` is set below the rate, governor's GCRA also spaces the requests out.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use governor::{Jitter, Quota};
use tokio::time::Instant;

/// A rate: `per_period` requests in any window of `period`, with bursts up to `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed in any window of one period.
    pub per_period: NonZeroU32,
    /// The period.
    pub period: Duration,
    /// Largest burst; below `per_period` the requests are also spaced out.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `n` requests in any rolling minute, the first `n` at once.
    pub fn per_minute(n: NonZeroU32) -> Self {
        Self { per_period: n, period: Duration::from_secs(60), burst: n }
    }

    /// `n` requests in any rolling second, the first `n` at once.
    pub fn per_second(n: NonZeroU32) -> Self {
        Self { per_period: n, period: Duration::from_secs(1), burst: n }
    }

    /// The window as counted here: the period plus 2%, so that two requests a period
    /// apart by our clock are still apart by the vendor's, after the time between taking a
    /// grant and the request reaching the vendor (scheduling on a loaded node, the
    /// network): 1.2 s on a minute.
    fn window(&self) -> Duration {
        self.period + self.period / 50
    }
}

/// The sliding log: the moments of the last `per_period` grants, oldest first (pure, so
/// property tests drive it with any clock).
#[derive(Debug, Clone)]
pub struct Window {
    limit: usize,
    window: Duration,
    grants: VecDeque<Instant>,
}

impl Window {
    /// An empty log for `limit`.
    pub fn new(limit: RateLimit) -> Self {
        let n = limit.per_period.get() as usize;
        Self { limit: n, window: limit.window(), grants: VecDeque::with_capacity(n.min(4096)) }
    }

    /// Reserves the earliest moment at or after `now` when one more request keeps every
    /// window within the limit, and records it.
    pub fn reserve(&mut self, now: Instant) -> Instant {
        let at = if self.grants.len() < self.limit {
            // Fewer than `limit` ever granted: at once (after any reserved one, to stay in order).
            self.grants.back().map_or(now, |last| (*last).max(now))
        } else {
            let oldest = self.grants.pop_front().unwrap_or(now);
            (oldest + self.window).max(now)
        };
        self.grants.push_back(at);
        at
    }

    /// What fills the window at `now`, oldest first: the grants made in it, and for each
    /// grant reserved ahead the one it waits for to leave (the log keeps the reservation in
    /// its place). What a successor needs to go on holding the limit: seeded with these, it
    /// gives the reserved turns out at the same moments.
    pub fn recent(&self, now: Instant) -> Vec<Instant> {
        let mut made: Vec<Instant> = self
            .grants
            .iter()
            .map(|g| if *g > now { g.checked_sub(self.window).unwrap_or(*g) } else { *g })
            .filter(|g| *g + self.window > now)
            .collect();
        made.sort();
        made
    }

    /// Takes on `grants` made elsewhere (another process held the limit until now), so
    /// every window holds the limit across the handover. Kept in order, at most the limit.
    pub fn seed(&mut self, grants: impl IntoIterator<Item = Instant>) {
        let mut all: Vec<Instant> = self.grants.iter().copied().chain(grants).collect();
        all.sort();
        let skip = all.len().saturating_sub(self.limit);
        self.grants = all.into_iter().skip(skip).collect();
    }

    /// Takes a grant only if it is free at `now`; else how long until one is.
    pub fn try_reserve(&mut self, now: Instant) -> Result<(), Duration> {
        if self.grants.len() < self.limit && self.grants.back().is_none_or(|last| *last <= now) {
            self.grants.push_back(now);
            return Ok(());
        }
        match self.grants.front() {
            Some(oldest) if *oldest + self.window <= now => {
                self.grants.pop_front();
                self.grants.push_back(now);
                Ok(())
            }
            Some(oldest) => Err(*oldest + self.window - now),
            None => Ok(()),
        }
    }
}

/// A shared limiter for one upstream.
#[derive(Clone)]
pub struct RateLimiter {
    window: Arc<Mutex<Window>>,
    spacing: Option<Arc<governor::DefaultDirectRateLimiter>>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter").finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter allowing `limit`.
    pub fn new(limit: RateLimit) -> Self {
        let spacing = (limit.burst < limit.per_period).then(|| {
            let replenish = limit.period / limit.per_period.get();
            let quota = Quota::with_period(replenish.max(Duration::from_nanos(1)))
                .unwrap_or_else(|| Quota::per_second(limit.per_period))
                .allow_burst(limit.burst);
            Arc::new(governor::RateLimiter::direct(quota))
        });
        Self { window: Arc::new(Mutex::new(Window::new(limit))), spacing }
    }

    /// Takes a grant now, or says how long until one is free.
    pub fn check(&self) -> Result<(), Duration> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner).try_reserve(Instant::now())
    }

    /// Reserves this caller's grant without waiting for it: the moment it is free, now or
    /// later. A caller that will not be there at that moment (it handed its work back to
    /// the bus until then) still holds it: nobody else is given it.
    pub fn reserve(&self) -> Instant {
        self.window.lock().unwrap_or_else(PoisonError::into_inner).reserve(Instant::now())
    }

    /// The grants still inside the window ([`Window::recent`]).
    pub fn recent(&self) -> Vec<Instant> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner).recent(Instant::now())
    }

    /// Takes on grants made elsewhere ([`Window::seed`]).
    pub fn seed(&self, grants: impl IntoIterator<Item = Instant>) {
        self.window.lock().unwrap_or_else(PoisonError::into_inner).seed(grants);
    }

    /// Waits for this caller's grant.
    pub async fn acquire(&self) {
        let now = Instant::now();
        let at = self.window.lock().unwrap_or_else(PoisonError::into_inner).reserve(now);
        // A grant free now goes at once: even an elapsed sleep waits for the timer's next
        // tick (about a millisecond), which every call would pay.
        if at > now {
            tokio::time::sleep_until(at).await;
        }
        if let Some(spacing) = &self.spacing {
            spacing.until_ready_with_jitter(Jitter::up_to(Duration::from_millis(20))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).expect("non-zero")
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_refusal_with_a_wait() {
        let limiter = RateLimiter::new(RateLimit::per_minute(n(2)));
        assert!(limiter.check().is_ok());
        assert!(limiter.check().is_ok());
        let wait = limiter.check().expect_err("third call in the same minute is refused");
        assert!(wait > Duration::from_secs(60) && wait <= Duration::from_millis(61_200), "{wait:?}");
        tokio::time::advance(wait).await;
        assert!(limiter.check().is_ok(), "free once the oldest left the window");
    }

    /// The most grants any window of `window` holds.
    fn busiest(grants: &[Instant], window: Duration) -> usize {
        (0..grants.len())
            .map(|i| grants[i..].iter().take_while(|g| **g < grants[i] + window).count())
            .max()
            .unwrap_or(0)
    }

    proptest! {
        /// Whatever the arrivals: grants are in order, none before its request, no window
        /// of one period holds more than the limit, and a storm's first `n` go at once.
        #[test]
        fn every_rolling_window_holds_the_limit(
            limit in 1u32..50,
            gaps_ms in proptest::collection::vec(0u64..3_000, 1..300),
        ) {
            let rate = RateLimit::per_minute(n(limit));
            let mut w = Window::new(rate);
            let t0 = Instant::now();
            let mut now = t0;
            let mut grants = Vec::new();
            for gap in &gaps_ms {
                now += Duration::from_millis(*gap);
                let at = w.reserve(now);
                prop_assert!(at >= now);
                if let Some(last) = grants.last() { prop_assert!(at >= *last); }
                grants.push(at);
            }
            prop_assert!(busiest(&grants, Duration::from_secs(60)) <= limit as usize);
            // Requests arriving together at the start are granted at once, up to the limit.
            let mut storm = Window::new(rate);
            let at_once = (0..limit * 3).map(|_| storm.reserve(t0)).filter(|at| *at == t0).count();
            prop_assert_eq!(at_once, limit as usize);
        }

        /// Nobody waits longer than needed: each grant is at its request, or exactly one
        /// window after the grant `limit` places earlier.
        #[test]
        fn no_wait_beyond_the_limit(limit in 1u32..20, gaps_ms in proptest::collection::vec(0u64..5_000, 1..200)) {
            let rate = RateLimit::per_minute(n(limit));
            let mut w = Window::new(rate);
            let mut now = Instant::now();
            let mut grants: Vec<Instant> = Vec::new();
            for gap in &gaps_ms {
                now += Duration::from_millis(*gap);
                let at = w.reserve(now);
                let k = grants.len();
                let l = limit as usize;
                let expected =
                    if k >= l { (grants[k - l] + rate.window()).max(now) } else { grants.last().map_or(now, |g| (*g).max(now)) };
                prop_assert_eq!(at, expected);
                grants.push(at);
            }
        }
    }

    #[test]
    fn a_successor_seeded_with_the_grants_holds_the_window_across_the_handover() {
        let rate = RateLimit::per_minute(n(3));
        let t0 = Instant::now();
        let mut before = Window::new(rate);
        for _ in 0..3 {
            before.reserve(t0);
        }
        let mut after = Window::new(rate);
        after.seed(before.recent(t0 + Duration::from_secs(10)));
        // The successor's next grant waits for the first of its predecessor's to leave.
        assert_eq!(after.reserve(t0 + Duration::from_secs(10)), t0 + rate.window());
        // Grants older than a window are not taken on; more than the limit are cut.
        let mut fresh = Window::new(rate);
        fresh.seed(before.recent(t0 + Duration::from_secs(62)));
        assert_eq!(fresh.reserve(t0 + Duration::from_secs(62)), t0 + Duration::from_secs(62));
        let mut full = Window::new(rate);
        full.seed((0..10).map(|i| t0 + Duration::from_millis(i)));
        assert_eq!(full.grants.len(), 3);
        // Two more reserved ahead replace the two oldest in the log; the window still holds
        // three made at t0, and a successor gives the reserved turns out at the same moments.
        let mut busy = Window::new(rate);
        for _ in 0..3 {
            busy.reserve(t0);
        }
        let ahead = [busy.reserve(t0), busy.reserve(t0)];
        let now = t0 + Duration::from_secs(5);
        assert_eq!(busy.recent(now), vec![t0, t0, t0]);
        let mut successor = Window::new(rate);
        successor.seed(busy.recent(now));
        assert_eq!([successor.reserve(now), successor.reserve(now)], ahead);
    }
}
