//! Whether a bus resource a service depends on (a KV bucket, a durable consumer) answers,
//! for readiness: a resource that has failed for longer than a grace period is reported,
//! with the reason, until it answers again. Brief blips (a leader election) stay within
//! the grace and do not churn readiness.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How long a resource may fail before readiness says so.
pub const UNREACHABLE_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct State {
    /// Since when every attempt failed, and the last reason.
    failing: Option<(Instant, String)>,
    /// Whether it ever answered.
    answered: bool,
}

/// The reachability of one resource; cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Reachability {
    what: Arc<str>,
    state: Arc<Mutex<State>>,
}

impl Reachability {
    /// A resource named `what` in readiness messages (e.g. `KV bucket sre_paging_sink_pages`),
    /// not yet answered.
    pub fn new(what: impl Into<String>) -> Self {
        let what: String = what.into();
        Self { what: Arc::from(what), state: Arc::default() }
    }

    /// It answered (an error that is the server's answer, like a compare-and-set conflict,
    /// counts as one). Returns how long it had failed, if it had.
    pub fn answered(&self) -> Option<Duration> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.answered = true;
        state.failing.take().map(|(since, _)| since.elapsed())
    }

    /// It did not answer. Returns `true` for the first failure of an episode (log it once).
    pub fn failed(&self, reason: impl Into<String>) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &mut state.failing {
            Some((_, last)) => {
                *last = reason.into();
                false
            }
            None => {
                state.failing = Some((Instant::now(), reason.into()));
                true
            }
        }
    }

    /// Ready unless it has failed for longer than [`UNREACHABLE_GRACE`], or never answered.
    pub fn readiness(&self) -> Result<(), String> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match &state.failing {
            Some((since, reason)) if since.elapsed() > UNREACHABLE_GRACE => Err(format!(
                "{} unreachable for {}s: {reason}; work waits on the bus and resumes by itself",
                self.what,
                since.elapsed().as_secs()
            )),
            _ if !state.answered => Err(format!("{} not open yet", self.what)),
            _ => Ok(()),
        }
    }
}

/// A resource's reachability once it exists (a consumer is bound after start): not
/// ready, "not bound yet", until [`ReachabilitySlot::set`]; then as the resource says.
#[derive(Debug, Clone)]
pub struct ReachabilitySlot {
    what: Arc<str>,
    inner: Arc<Mutex<Option<Reachability>>>,
}

impl ReachabilitySlot {
    /// An empty slot for `what` (e.g. `fact consumer`).
    pub fn new(what: impl Into<String>) -> Self {
        let what: String = what.into();
        Self { what: Arc::from(what), inner: Arc::default() }
    }

    /// The resource now exists.
    pub fn set(&self, reach: Reachability) {
        *self.inner.lock().unwrap_or_else(PoisonError::into_inner) = Some(reach);
    }

    /// Readiness: the resource's, or not ready while it does not exist yet.
    pub fn readiness(&self) -> Result<(), String> {
        match &*self.inner.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(r) => r.readiness(),
            None => Err(format!("{} not bound yet", self.what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blip_is_ready_a_lasting_failure_is_not_and_recovery_clears_it() {
        let r = Reachability::new("KV bucket b");
        assert!(r.readiness().expect_err("not open").contains("not open yet"));
        assert_eq!(r.answered(), None);
        assert!(r.readiness().is_ok());
        assert!(r.failed("no responders"), "the first failure of an episode");
        assert!(!r.failed("timed out"), "later ones are the same episode");
        assert!(r.readiness().is_ok(), "within the grace");
        // Backdate the episode past the grace.
        r.state.lock().expect("lock").failing.as_mut().expect("failing").0 =
            Instant::now().checked_sub(UNREACHABLE_GRACE * 2).expect("instant");
        let err = r.readiness().expect_err("lasting");
        assert!(err.contains("KV bucket b unreachable for 10s: timed out"), "{err}");
        assert!(r.answered().is_some_and(|d| d >= UNREACHABLE_GRACE));
        assert!(r.readiness().is_ok());
    }
}
