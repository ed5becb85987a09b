//! The claim → renew → stale rule, once (see `design.md` beside this file).
//!
//! A record is claimed with compare-and-set *before* the vendor call that creates what it
//! stands for (a ticket, a page). Its holder renews it every [`RENEW_CLAIM`] while the call
//! runs; a claim whose last sign of life is [`STALE_CLAIM`] old was left by a crash and may
//! be taken over, by compare-and-set again, so one replica wins. What the new holder does
//! then is the sink's business: look for the ticket by its marker, or send the page again
//! under the vendor's own dedup key. Pure, but for [`renewing`].

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::records::{Read, Record, Records};

/// A claim not renewed for this long was left by a crash. A live holder renews every
/// [`RENEW_CLAIM`], so this only has to outlast a few missed renewals, not the longest call.
pub const STALE_CLAIM: Duration = Duration::from_secs(10);
/// How often a holder renews its claim while the vendor works.
pub const RENEW_CLAIM: Duration = Duration::from_secs(2);
/// How soon a live claim is looked at again at first: a live holder usually finishes
/// within one vendor call.
pub const LOOK_AGAIN: Duration = Duration::from_secs(2);

/// A record that can be claimed.
pub trait Claim: Record {
    /// The holder's last sign of life, when the record is claimed.
    fn last_alive(&self) -> Option<Timestamp>;
    /// The record renewed by its holder at `now`.
    fn renew(&mut self, now: Timestamp);
}

/// Where a claim stands, as seen at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its holder is alive: look again after this long (soon, but never later than the
    /// moment it would go stale).
    Live {
        /// When to look again.
        look_again: Duration,
    },
    /// Left by a crash (or never renewed): it may be taken over now.
    Stale,
}

/// How long to wait before looking at a live claim of this `age` again: twice soon (a
/// holder about to finish), then straight to the moment it would go stale, so a claim a
/// crash left is taken over on the next look instead of spending `max_deliver` on quick
/// retries. `None`: stale now. A clock behind the holder's counts as just claimed.
pub fn until_stale(age: SignedDuration) -> Option<Duration> {
    let age = Duration::try_from(age).unwrap_or_default();
    let left = STALE_CLAIM.checked_sub(age).filter(|d| !d.is_zero())?;
    Some(if age < LOOK_AGAIN * 2 { LOOK_AGAIN.min(left) } else { left + Duration::from_millis(100) })
}

/// The liveness of a claim last alive at `last_alive`, seen at `now`; no sign of life at
/// all is stale.
pub fn liveness(last_alive: Option<Timestamp>, now: Timestamp) -> Liveness {
    match last_alive.and_then(|at| until_stale(now.duration_since(at))) {
        Some(look_again) => Liveness::Live { look_again },
        None => Liveness::Stale,
    }
}

/// Runs `work` (a vendor call made under the claim `read`) while renewing the claim every
/// [`RENEW_CLAIM`]; returns `work`'s output and the claim as it now stands, whose revision
/// the holder writes its outcome on. A renewal that fails keeps the claim as it was: the
/// holder's final compare-and-set tells whether it was lost meanwhile.
pub async fn renewing<R, T>(records: &Records<R>, read: Read<R>, work: impl Future<Output = T>) -> (T, Read<R>)
where
    R: Claim,
{
    sre_bus::renewing(read, RENEW_CLAIM, work, |read: Read<R>| async move {
        let mut renewed = read.record.clone();
        renewed.renew(Timestamp::now());
        match records.replace(&read, renewed).await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(incident_id = %read.record.incident_id(), error = %e, "claim not renewed");
                read
            }
        }
    })
    .await
}

/// As [`renewing`], for a claim kept elsewhere in the record than its own (the marks of the
/// notes a delivery is posting): `renew` brings it up to `now`.
pub async fn renewing_with<R, T>(
    records: &Records<R>,
    read: Read<R>,
    renew: impl Fn(&mut R, Timestamp),
    work: impl Future<Output = T>,
) -> (T, Read<R>)
where
    R: Record,
{
    let renew = &renew;
    sre_bus::renewing(read, RENEW_CLAIM, work, |read: Read<R>| async move {
        let mut renewed = read.record.clone();
        renew(&mut renewed, Timestamp::now());
        match records.replace(&read, renewed).await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(incident_id = %read.record.incident_id(), error = %e, "claim not renewed");
                read
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> SignedDuration {
        SignedDuration::from_secs(s)
    }

    #[test]
    fn a_live_claim_is_looked_at_again_soon_and_a_crashed_one_when_it_goes_stale() {
        // A holder that just renewed: look again soon.
        assert_eq!(until_stale(secs(0)), Some(LOOK_AGAIN));
        // Not renewed for 5 s (the holder crashed): next look when it is stale.
        assert_eq!(until_stale(secs(5)), Some(Duration::from_millis(5_100)));
        assert_eq!(until_stale(secs(9)), Some(Duration::from_millis(1_100)));
        assert_eq!(until_stale(secs(10)), None);
        assert_eq!(until_stale(secs(600)), None);
        // A clock behind the claim's: treated as just claimed.
        assert_eq!(until_stale(secs(-5)), Some(LOOK_AGAIN));
        // Staleness is seconds, and a live holder renews well within it.
        assert!(STALE_CLAIM <= Duration::from_secs(10) && RENEW_CLAIM * 4 <= STALE_CLAIM);
    }

    #[test]
    fn no_sign_of_life_is_stale() {
        let now = Timestamp::from_second(1_000).expect("ts");
        assert_eq!(liveness(None, now), Liveness::Stale);
        assert_eq!(liveness(Some(now - secs(11)), now), Liveness::Stale);
        assert_eq!(liveness(Some(now - secs(1)), now), Liveness::Live { look_again: LOOK_AGAIN });
    }
}
