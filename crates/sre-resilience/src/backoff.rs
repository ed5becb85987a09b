//! Exponential backoff with "equal jitter": half the exponential step is kept, half is
//! random, so delays never collapse to zero and replicas do not retry in lockstep.

use std::time::Duration;

/// Backoff policy. The delay before retry `n` (1-based) is drawn from
/// `[step/2, step]` where `step = min(max_delay, initial * multiplier^(n-1))`.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Step before the first retry.
    pub initial: Duration,
    /// Largest step.
    pub max_delay: Duration,
    /// Growth per attempt (at least 1).
    pub multiplier: f64,
    /// Attempts in total, the first one included (at least 1).
    pub max_attempts: u32,
    /// Time budget for all attempts and waits; no wait is started that would end past it.
    pub max_elapsed: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            multiplier: 2.0,
            max_attempts: 4,
            max_elapsed: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The exponential step (without jitter) before retry `retry` (1-based).
    pub fn step(&self, retry: u32) -> Duration {
        let exp = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let factor = self.multiplier.max(1.0).powi(exp);
        let secs = self.initial.as_secs_f64() * factor;
        let max = self.max_delay.as_secs_f64();
        if !secs.is_finite() || secs >= max { self.max_delay } else { Duration::from_secs_f64(secs) }
    }

    /// The delay before retry `retry` (1-based), with `unit` a random number in `[0, 1)`.
    /// Pure: the random source is the caller's, so tests can pin it.
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let step = self.step(retry);
        let half = step / 2;
        let unit = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 0.0 };
        half + (step - half).mul_f64(unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn steps_double_until_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            multiplier: 2.0,
            ..Backoff::default()
        };
        let steps: Vec<u128> = (1..=6).map(|n| b.step(n).as_millis()).collect();
        assert_eq!(steps, [100, 200, 400, 800, 1000, 1000]);
    }

    proptest! {
        #[test]
        fn delay_stays_within_half_step_and_cap(
            initial_ms in 1u64..10_000,
            max_ms in 1u64..600_000,
            multiplier in 1.0f64..10.0,
            retry in 1u32..200,
            unit in 0.0f64..1.0,
        ) {
            let b = Backoff {
                initial: Duration::from_millis(initial_ms),
                max_delay: Duration::from_millis(max_ms),
                multiplier,
                ..Backoff::default()
            };
            let step = b.step(retry);
            let d = b.delay(retry, unit);
            prop_assert!(step <= b.max_delay);
            prop_assert!(d <= step);
            prop_assert!(d >= step / 2);
        }

        #[test]
        fn steps_never_shrink(
            initial_ms in 1u64..10_000,
            max_ms in 1u64..600_000,
            multiplier in 1.0f64..10.0,
            retry in 1u32..200,
        ) {
            let b = Backoff {
                initial: Duration::from_millis(initial_ms),
                max_delay: Duration::from_millis(max_ms),
                multiplier,
                ..Backoff::default()
            };
            prop_assert!(b.step(retry + 1) >= b.step(retry));
        }
    }
}
