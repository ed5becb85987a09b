//! One upstream: its breaker, its rate limit and its backoff, and the only retry loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::{Backoff, BreakerConfig, BreakerState, CircuitBreaker, ErrorClass, RateLimit, RateLimiter, Retryable};

/// Settings of one upstream.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Name for logs and metrics (a vendor name constant, never a URL).
    pub name: &'static str,
    /// Retry policy of one call.
    pub backoff: Backoff,
    /// Breaker settings.
    pub breaker: BreakerConfig,
    /// Rate limit, when the upstream has one.
    pub rate_limit: Option<RateLimit>,
}

/// Why [`Upstream::call`] gave up. Every variant but `Permanent` means "try again later";
/// [`CallError::retry_in`] says when, so a bus consumer can NAK with that delay and the
/// work waits on the bus instead of being lost.
#[derive(Debug, thiserror::Error)]
pub enum CallError<E> {
    /// The upstream refused the request for good (or the credentials are wrong).
    #[error("permanent failure: {0}")]
    Permanent(E),
    /// Retryable failures used up the attempts or the time budget.
    #[error("gave up after {attempts} attempts: {last}")]
    Exhausted {
        /// The last failure.
        last: E,
        /// Attempts made.
        attempts: u32,
        /// When another try makes sense.
        retry_in: Duration,
    },
    /// The breaker is open; nothing was sent.
    #[error("circuit open, retry in {retry_in:?}")]
    CircuitOpen {
        /// When the breaker will let a probe through.
        retry_in: Duration,
    },
    /// Nothing was sent: the credential's turn is later (its rate limit, or a pause the
    /// vendor asked for), and the work is handed back until then rather than held.
    #[error("{why}: handed back for {retry_in:?}")]
    Deferred {
        /// When the turn comes.
        retry_in: Duration,
        /// Why (`rate limit`, `paused by the vendor`).
        why: &'static str,
    },
}

impl<E> CallError<E> {
    /// When to try again; `None` for permanent failures.
    pub fn retry_in(&self) -> Option<Duration> {
        match self {
            CallError::Permanent(_) => None,
            CallError::Exhausted { retry_in, .. }
            | CallError::CircuitOpen { retry_in }
            | CallError::Deferred { retry_in, .. } => Some(*retry_in),
        }
    }

    /// The class of the failure, for metrics.
    pub fn class(&self) -> ErrorClass
    where
        E: Retryable,
    {
        match self {
            CallError::Permanent(e) | CallError::Exhausted { last: e, .. } => e.class(),
            CallError::CircuitOpen { .. } => ErrorClass::Transient,
            CallError::Deferred { .. } => ErrorClass::Throttled,
        }
    }
}

type Jitter = Arc<dyn Fn() -> f64 + Send + Sync>;

/// An upstream with its breaker and limiter; cheap to clone (shared state).
#[derive(Clone)]
pub struct Upstream {
    config: UpstreamConfig,
    breaker: CircuitBreaker,
    limiter: Option<RateLimiter>,
    jitter: Jitter,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("name", &self.config.name).finish_non_exhaustive()
    }
}

impl Upstream {
    /// An upstream with random jitter.
    pub fn new(config: UpstreamConfig) -> Self {
        Self::with_jitter(config, Arc::new(rand::random::<f64>))
    }

    /// An upstream with an injected jitter source returning numbers in `[0, 1)`.
    pub fn with_jitter(config: UpstreamConfig, jitter: Jitter) -> Self {
        Self {
            breaker: CircuitBreaker::new(config.breaker.clone()),
            limiter: config.rate_limit.map(RateLimiter::new),
            config,
            jitter,
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &'static str {
        self.config.name
    }

    /// The breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Runs `op` until it succeeds, fails permanently, or the policy gives up. The only
    /// retry loop of the workspace: vendors classify their errors, this decides.
    ///
    /// Each attempt asks the breaker first (an open breaker ends the call at once with
    /// [`CallError::CircuitOpen`]) and then the rate limiter. Waits are the larger of the
    /// backoff delay and the upstream's own hint (`Retry-After`). No wait is started that
    /// would end past `max_elapsed`: the call returns [`CallError::Exhausted`] with that
    /// wait as `retry_in` instead.
    pub async fn call<T, E, F, Fut>(&self, op: F) -> Result<T, CallError<E>>
    where
        E: Retryable,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_inner(op, false, None).await
    }

    /// The grants of the last window, for a successor ([`RateLimiter::recent`]); empty
    /// without a limit.
    pub fn recent_grants(&self) -> Vec<Instant> {
        self.limiter.as_ref().map(RateLimiter::recent).unwrap_or_default()
    }

    /// Takes on the grants a predecessor made ([`RateLimiter::seed`]).
    pub fn seed_grants(&self, grants: impl IntoIterator<Item = Instant>) {
        if let Some(limiter) = &self.limiter {
            limiter.seed(grants);
        }
    }

    /// The rate limiter's next grant, reserved for the caller ([`RateLimiter::reserve`]);
    /// `None` when the upstream has no limit. The caller then makes its call with
    /// [`Upstream::call_granted`] at that moment.
    pub fn reserve(&self) -> Option<Instant> {
        self.limiter.as_ref().map(RateLimiter::reserve)
    }

    /// [`Upstream::call`] whose first attempt uses a grant the caller reserved
    /// ([`Upstream::reserve`]) and is due; retries wait for grants of their own.
    pub async fn call_granted<T, E, F, Fut>(&self, op: F) -> Result<T, CallError<E>>
    where
        E: Retryable,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_inner(op, true, None).await
    }

    /// [`Upstream::call`] for work that can wait elsewhere (a fact, handed back to its bus):
    /// the first attempt uses the caller's grant when `granted`, and no wait longer than
    /// `hand_back_over` is slept through: a wait further away ends the call with that
    /// wait: [`CallError::Deferred`] when nothing went out (the first attempt's turn), else
    /// [`CallError::Exhausted`] with the last attempt's error (the vendor may have acted
    /// on it, so the caller must not take it as never sent).
    pub async fn call_handing_back<T, E, F, Fut>(
        &self,
        op: F,
        granted: bool,
        hand_back_over: Duration,
    ) -> Result<T, CallError<E>>
    where
        E: Retryable,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_inner(op, granted, Some(hand_back_over)).await
    }

    async fn call_inner<T, E, F, Fut>(
        &self,
        mut op: F,
        granted: bool,
        hand_back_over: Option<Duration>,
    ) -> Result<T, CallError<E>>
    where
        E: Retryable,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let started = Instant::now();
        let policy = &self.config.backoff;
        let mut attempt = 0u32;
        // The last attempt's error: once one went out, a retry handed back is not "nothing
        // sent" (the vendor may have acted on it), and says so.
        let mut last: Option<E> = None;
        loop {
            attempt += 1;
            let permit =
                self.breaker.try_acquire().map_err(|open| CallError::CircuitOpen { retry_in: open.retry_in })?;
            if let Some(limiter) = &self.limiter
                && !(granted && attempt == 1)
            {
                match hand_back_over {
                    Some(most) => {
                        let now = Instant::now();
                        let at = limiter.reserve();
                        if at > now + most {
                            return Err(match last.take() {
                                Some(last) => CallError::Exhausted { last, attempts: attempt - 1, retry_in: at - now },
                                None => CallError::Deferred { retry_in: at - now, why: "rate limit of the credential" },
                            });
                        }
                        tokio::time::sleep_until(at).await;
                    }
                    None => limiter.acquire().await,
                }
            }
            let err = match op().await {
                Ok(value) => {
                    permit.success();
                    return Ok(value);
                }
                Err(err) => err,
            };
            let class = err.class();
            if class.counts_against_upstream() {
                permit.failure();
            } else {
                permit.success();
            }
            if !class.is_retryable() {
                return Err(CallError::Permanent(err));
            }
            let backoff = policy.delay(attempt, (self.jitter)());
            let wait = err.retry_after().map_or(backoff, |hint| hint.max(backoff));
            let out_of_time =
                started.elapsed() + wait > policy.max_elapsed || hand_back_over.is_some_and(|most| wait > most);
            if attempt >= policy.max_attempts.max(1) || out_of_time {
                return Err(CallError::Exhausted { last: err, attempts: attempt, retry_in: wait });
            }
            tracing::debug!(
                upstream = self.config.name,
                attempt,
                class = class.as_str(),
                wait_ms = wait.as_millis() as u64,
                "retrying"
            );
            last = Some(err);
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct E(ErrorClass, Option<Duration>);
    impl Retryable for E {
        fn class(&self) -> ErrorClass {
            self.0
        }
        fn retry_after(&self) -> Option<Duration> {
            self.1
        }
    }
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }

    fn upstream(max_attempts: u32) -> Upstream {
        Upstream::with_jitter(
            UpstreamConfig {
                name: "test",
                backoff: Backoff {
                    initial: Duration::from_millis(100),
                    max_delay: Duration::from_secs(2),
                    multiplier: 2.0,
                    max_attempts,
                    max_elapsed: Duration::from_secs(30),
                },
                breaker: BreakerConfig { failure_threshold: 3, ..BreakerConfig::default() },
                rate_limit: None,
            },
            Arc::new(|| 1.0),
        )
    }

    /// A storm of 3n calls at once through a limit of n per minute (PagerDuty's 120 per
    /// routing key): the first n go out at once, and no rolling minute ever sees more
    /// than n (a token bucket let ~2n through in the first minute).
    #[tokio::test(start_paused = true)]
    async fn a_storm_holds_the_limit_in_every_rolling_minute() {
        let n = 120;
        let up = Upstream::new(UpstreamConfig {
            rate_limit: std::num::NonZeroU32::new(n).map(RateLimit::per_minute),
            ..upstream(1).config.clone()
        });
        let start = tokio::time::Instant::now();
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..3 * n {
            let (up, sent) = (up.clone(), sent.clone());
            calls.spawn(async move {
                up.call(|| {
                    sent.lock().expect("lock").push(start.elapsed());
                    async { Ok::<_, E>(()) }
                })
                .await
            });
        }
        while let Some(result) = calls.join_next().await {
            assert!(result.expect("joined").is_ok());
        }
        let mut at = sent.lock().expect("lock").clone();
        at.sort();
        assert_eq!(at.iter().filter(|t| **t < Duration::from_millis(100)).count(), n as usize, "the first n at once");
        let most = (0..at.len())
            .map(|i| at[i..].iter().take_while(|t| **t < at[i] + Duration::from_secs(60)).count())
            .max()
            .unwrap_or(0);
        assert_eq!(most, n as usize, "no rolling minute holds more than the limit");
        assert!(at[at.len() - 1] < Duration::from_secs(125), "and no later than needed: {:?}", at[at.len() - 1]);
    }

    /// Runs `call` with scripted results, returning the outcome and when each attempt ran.
    async fn script(up: &Upstream, results: Vec<Result<u32, E>>) -> (Result<u32, CallError<E>>, Vec<Duration>) {
        let start = Instant::now();
        let calls = AtomicU32::new(0);
        let times = std::sync::Mutex::new(Vec::new());
        let results = std::sync::Mutex::new(results.into_iter());
        let out = up
            .call(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                times.lock().expect("lock").push(start.elapsed());
                let next = results.lock().expect("lock").next().expect("scripted result");
                async move { next }
            })
            .await;
        (out, times.into_inner().expect("lock"))
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_back_off_then_succeed() {
        let up = upstream(5);
        let (out, times) =
            script(&up, vec![Err(E(ErrorClass::Transient, None)), Err(E(ErrorClass::Transient, None)), Ok(7)]).await;
        assert_eq!(out.expect("succeeds"), 7);
        assert_eq!(times, [Duration::ZERO, Duration::from_millis(100), Duration::from_millis(300)]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_overrides_a_shorter_backoff() {
        let up = upstream(5);
        let (out, times) = script(&up, vec![Err(E(ErrorClass::Throttled, Some(Duration::from_secs(3)))), Ok(1)]).await;
        assert!(out.is_ok());
        assert_eq!(times[1], Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_are_not_retried() {
        let up = upstream(5);
        let (out, times) = script(&up, vec![Err(E(ErrorClass::Permanent, None))]).await;
        assert!(matches!(out, Err(CallError::Permanent(_))));
        assert_eq!(times.len(), 1);
        let (out, _) = script(&up, vec![Err(E(ErrorClass::Auth, None))]).await;
        assert!(matches!(out, Err(CallError::Permanent(_))));
        assert_eq!(up.breaker_state(), BreakerState::Closed, "4xx does not open the breaker");
    }

    #[tokio::test(start_paused = true)]
    async fn exhaustion_reports_when_to_try_again() {
        let up = upstream(2);
        let (out, times) =
            script(&up, vec![Err(E(ErrorClass::Transient, None)), Err(E(ErrorClass::Transient, None))]).await;
        match out {
            Err(CallError::Exhausted { attempts, retry_in, .. }) => {
                assert_eq!(attempts, 2);
                assert_eq!(retry_in, Duration::from_millis(200));
            }
            other => panic!("expected exhaustion, got {other:?}"),
        }
        assert_eq!(times.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hint_past_the_budget_ends_the_call_instead_of_sleeping() {
        let up = upstream(5);
        let (out, times) = script(&up, vec![Err(E(ErrorClass::Throttled, Some(Duration::from_secs(120))))]).await;
        assert_eq!(times.len(), 1);
        assert_eq!(out.err().and_then(|e| e.retry_in()), Some(Duration::from_secs(120)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_fails_fast_without_calling() {
        let up = upstream(1);
        for _ in 0..3 {
            let _ = script(&up, vec![Err(E(ErrorClass::Transient, None))]).await;
        }
        assert_eq!(up.breaker_state(), BreakerState::Open);
        let (out, times) = script(&up, vec![]).await;
        assert!(matches!(out, Err(CallError::CircuitOpen { .. })));
        assert!(times.is_empty(), "nothing was sent");
    }

    /// Handing back: nothing sent is `Deferred`; a retry handed back after an attempt went
    /// out is `Exhausted` with that attempt's error (the vendor may have acted on it).
    #[tokio::test(start_paused = true)]
    async fn a_retry_handed_back_says_an_attempt_went_out() {
        let up = Upstream::with_jitter(
            UpstreamConfig {
                rate_limit: std::num::NonZeroU32::new(2).map(RateLimit::per_minute),
                ..upstream(5).config.clone()
            },
            Arc::new(|| 1.0),
        );
        let tries = AtomicU32::new(0);
        let failing = || {
            tries.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(E(ErrorClass::Transient, None)) }
        };
        let most = Duration::from_secs(5);
        match up.call_handing_back(failing, false, most).await {
            Err(CallError::Exhausted { attempts: 2, retry_in, .. }) => assert!(retry_in > Duration::from_secs(50)),
            other => panic!("two attempts went out, the third's turn is a minute away: {other:?}"),
        }
        assert_eq!(tries.load(Ordering::SeqCst), 2);
        match up.call_handing_back(failing, false, most).await {
            Err(CallError::Deferred { retry_in, .. }) => assert!(retry_in > Duration::from_secs(50)),
            other => panic!("nothing went out: {other:?}"),
        }
        assert_eq!(tries.load(Ordering::SeqCst), 2);
    }
}
