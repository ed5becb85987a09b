//! The one place that decides retries.
//!
//! - [`Backoff`]: exponential backoff with jitter, bounded attempts and elapsed time.
//! - [`retry_after`]: `Retry-After` (seconds or HTTP date) and reset-epoch headers.
//! - [`ErrorClass`] / [`Retryable`]: one classification of failures; vendors classify, they
//!   never loop.
//! - [`CircuitBreaker`]: closed, open, half-open per upstream; also a tower layer.
//! - [`RateLimiter`]: governor quotas per upstream.
//! - [`Upstream`]: breaker, limiter and backoff put together; [`Upstream::call`] is the
//!   only retry loop of the workspace.
//! - [`idempotency`]: stable keys for `Nats-Msg-Id` and vendor dedup keys.
//!
//! How in-process retries and JetStream redelivery fit together, and the worst case, is in
//! `design.md` beside this file. This crate knows nothing about NATS or any vendor.

mod backoff;
mod breaker;
mod classify;
pub mod idempotency;
mod limit;
pub mod retry_after;
mod upstream;

pub use backoff::Backoff;
pub use breaker::{
    BreakerConfig, BreakerError, BreakerState, CircuitBreaker, CircuitBreakerLayer, CircuitBreakerService, Open, Permit,
};
pub use classify::{ErrorClass, Retryable, classify_status};
pub use limit::{RateLimit, RateLimiter};
pub use upstream::{CallError, Upstream, UpstreamConfig};
