//! One sending replica per sink: a lease in the sink's bucket (key `lease.sender`), taken
//! and renewed by compare-and-set. Only its holder pulls facts and runs the jobs that call
//! vendors in bulk (the deferred-page scan), so every credential's calls come from one
//! replica and its configured limit holds in every rolling window, at any replica count.
//! The others stand by, ready, and serve the receivers.
//!
//! Why a lease and not a `pinned_client` priority group on the consumer: it works with a
//! consumer the platform declared as it is (NACK, `bind_only`), and one leader covers the
//! consumer and the jobs alike.
//!
//! Failover: a holder that stops cleanly gives the lease up, and a standby takes it within
//! [`RENEW_EVERY`]. One that dies is replaced once the lease runs out, within
//! [`LEASE_TTL`] plus [`RENEW_EVERY`]; the facts it had pulled come back after the
//! consumer's `ack_wait`. The new sender takes on the rate windows its predecessor kept
//! ([`crate::Vendors::adopt_windows`]), so a storm that goes on across the failover is held
//! to the window its predecessor began. The lease is kept in wall-clock time: replicas'
//! clocks are assumed within a second or two (NTP), and skew only shifts the failover by as much. A
//! holder that cannot renew stops sending a second before its lease runs out, so two
//! replicas overlap only if a process stalls for longer than that; the records'
//! compare-and-set still makes every ticket and page once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sre_bus::{Kv, KvError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The key of the lease in the sink's bucket.
pub const KEY: &str = "lease.sender";
/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the holder renews, and a standby looks.
pub const RENEW_EVERY: Duration = Duration::from_secs(3);
/// A holder that could not renew stops this long before its lease runs out.
const MARGIN: Duration = Duration::from_secs(1);

/// The lease as kept.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// The holder: the instance and a per-process nonce.
    pub holder: String,
    /// When it runs out unless renewed (Unix milliseconds).
    pub until_unix_ms: u64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What a replica does with the lease it read (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nobody holds it: create it.
    Take,
    /// This replica holds it, or its holder let it run out: write it, at the revision read.
    Renew,
    /// Another replica holds it.
    StandBy,
}

/// The step for `me` given the lease read (`None`: no lease) at `now_ms`.
pub fn step(read: Option<&Lease>, me: &str, now_ms: u64) -> Step {
    match read {
        None => Step::Take,
        Some(lease) if lease.holder == me || lease.until_unix_ms <= now_ms => Step::Renew,
        Some(_) => Step::StandBy,
    }
}

/// The sink's leadership: whether this replica sends. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Leadership {
    leading: watch::Receiver<bool>,
}

impl Leadership {
    /// A leadership that always leads (tests of one replica, and sinks without a bucket).
    pub fn always() -> Self {
        Self { leading: watch::channel(true).1 }
    }

    /// Whether this replica sends now.
    pub fn leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Waits until this replica leads; `false` when `cancel` fired first.
    pub async fn until_leading(&mut self, cancel: &CancellationToken) -> bool {
        tokio::select! {
            () = cancel.cancelled() => false,
            led = self.leading.wait_for(|l| *l) => led.is_ok(),
        }
    }

    /// Waits until this replica no longer leads (or the lease task ended).
    pub async fn until_not_leading(&mut self) {
        let _ = self.leading.wait_for(|l| !*l).await;
    }

    /// Holds the lease in `kv` as `holder` until `cancel`, then gives it up. Returns the
    /// leadership and the task to spawn; `on_change` is told each change (metrics, logs).
    pub fn run(
        kv: Kv,
        holder: String,
        cancel: CancellationToken,
        on_change: impl Fn(bool) + Send + 'static,
    ) -> (Self, impl Future<Output = ()> + Send) {
        let (tx, rx) = watch::channel(false);
        let task = async move {
            let mut held_until: Option<SystemTime> = None;
            loop {
                let now = SystemTime::now();
                let renewed = tokio::time::timeout(RENEW_EVERY, renew(&kv, &holder, now)).await;
                let renewed = renewed.unwrap_or_else(|_| Err(KvError::Unavailable("no answer in time".to_owned())));
                let held = match renewed {
                    Ok(true) => {
                        held_until = Some(now + LEASE_TTL);
                        true
                    }
                    Ok(false) => {
                        held_until = None;
                        false
                    }
                    // The bus did not answer: go on while the lease surely still holds.
                    Err(e) => {
                        let still = held_until.is_some_and(|until| SystemTime::now() + MARGIN < until);
                        if *tx.borrow() {
                            tracing::warn!(error = %e, still_leading = still, "the sender lease could not be renewed");
                        }
                        still
                    }
                };
                if *tx.borrow() != held {
                    if held {
                        tracing::info!(%holder, "took the sender lease: this replica sends");
                    } else {
                        tracing::info!(%holder, "lost the sender lease: standing by");
                    }
                    on_change(held);
                    let _ = tx.send(held);
                }
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(RENEW_EVERY) => {}
                }
            }
            if *tx.borrow() {
                let _ = tx.send(false);
                on_change(false);
                release(&kv, &holder).await;
            }
        };
        (Self { leading: rx }, task)
    }
}

/// One look at the lease: `Ok(true)` when this replica holds it now.
async fn renew(kv: &Kv, holder: &str, now: SystemTime) -> Result<bool, KvError> {
    let entry = kv.get(KEY).await?;
    let read = entry.as_ref().and_then(|e| serde_json::from_slice::<Lease>(&e.value).ok());
    let lease = Lease { holder: holder.to_owned(), until_unix_ms: unix_ms(now + LEASE_TTL) };
    let value = Bytes::from(serde_json::to_vec(&lease).unwrap_or_default());
    let written = match (step(read.as_ref(), holder, unix_ms(now)), entry) {
        (Step::StandBy, _) => return Ok(false),
        // An entry that does not decode is nobody's lease: overwrite it at its revision.
        (_, Some(entry)) => kv.update(KEY, value, entry.revision).await,
        (_, None) => kv.create(KEY, value).await,
    };
    match written {
        Ok(_) => Ok(true),
        // Another replica wrote first.
        Err(KvError::WrongRevision | KvError::AlreadyExists) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the lease up at shutdown (only if still ours), so a standby takes over at its
/// next look instead of after the TTL.
async fn release(kv: &Kv, holder: &str) {
    let Ok(Some(entry)) = kv.get(KEY).await else { return };
    let ours = serde_json::from_slice::<Lease>(&entry.value).is_ok_and(|l| l.holder == holder);
    if !ours {
        return;
    }
    let expired = Lease { holder: String::new(), until_unix_ms: 0 };
    let value = Bytes::from(serde_json::to_vec(&expired).unwrap_or_default());
    match kv.update(KEY, value, entry.revision).await {
        Ok(_) => tracing::info!("sender lease given up"),
        Err(e) => tracing::warn!(error = %e, "sender lease not given up; it runs out by itself"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_takes_the_lease() {
        let held = |holder: &str, until: u64| Lease { holder: holder.into(), until_unix_ms: until };
        let cases = [
            (None, 1_000, Step::Take),
            (Some(held("me", 5_000)), 1_000, Step::Renew),
            (Some(held("me", 500)), 1_000, Step::Renew),
            (Some(held("other", 5_000)), 1_000, Step::StandBy),
            (Some(held("other", 1_000)), 1_000, Step::Renew),
            (Some(held("", 0)), 1_000, Step::Renew),
        ];
        for (read, now, want) in cases {
            assert_eq!(step(read.as_ref(), "me", now), want, "{read:?} at {now}");
        }
    }
}
