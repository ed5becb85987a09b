//! Liveness and readiness.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// A readiness check: cheap and synchronous (it reads state a worker keeps up to date),
/// `Err` with a reason when not ready.
pub type ReadinessCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The result of each check, by name.
pub type CheckResults = Vec<(&'static str, Result<(), String>)>;

/// The service's readiness checks; cheap to clone.
#[derive(Clone, Default)]
pub struct Health {
    checks: Arc<RwLock<Vec<(&'static str, ReadinessCheck)>>>,
    draining: Arc<AtomicBool>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").finish_non_exhaustive()
    }
}

impl Health {
    /// Adds a named check (e.g. `bus`, `jira`).
    pub fn register(&self, name: &'static str, check: ReadinessCheck) {
        self.checks.write().unwrap_or_else(std::sync::PoisonError::into_inner).push((name, check));
    }

    /// Marks the service as shutting down: readiness fails from now on, so the load
    /// balancer stops sending work while in-flight work finishes.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Runs every check; ready only when all pass and the service is not draining.
    pub fn report(&self) -> (bool, CheckResults) {
        let checks = self.checks.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut results: Vec<_> = checks.iter().map(|(name, check)| (*name, check())).collect();
        if self.draining.load(Ordering::Acquire) {
            results.push(("shutdown", Err("draining".to_owned())));
        }
        let ready = results.iter().all(|(_, r)| r.is_ok());
        (ready, results)
    }
}
