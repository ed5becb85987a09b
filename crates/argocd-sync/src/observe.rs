//! What argocd-sync observes, purely: what changed since the last observation (with
//! hysteresis), and the fleet counts of one cycle. No I/O, no clock: `now` is passed in.
//!
//! Per application the service keeps a [`Tracked`] state between cycles: the status it
//! last published, and a pending status that has not yet held long enough to publish.
//! [`step`] moves that state one observation forward and says what to publish, if
//! anything. Flapping (Progressing ↔ Degraded every poll) never settles, so it publishes
//! nothing until one state holds.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sre_contracts::domain::v1::{AppHealth, AppSync, HealthChange, StateCount, SyncCount, UnhealthyApp};

/// Health and sync status of an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AppStatus {
    /// Health (`status.health.status`).
    pub health: Health,
    /// Sync (`status.sync.status`).
    pub sync: SyncState,
}

/// Argo CD health statuses (gitops-engine `health.go`); anything else reads as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Health {
    /// Healthy.
    Healthy,
    /// Progressing.
    Progressing,
    /// Degraded.
    Degraded,
    /// Suspended.
    Suspended,
    /// Missing.
    Missing,
    /// Unknown, or a status this version does not know.
    Unknown,
}

impl Health {
    /// Reads Argo CD's string.
    pub fn parse(s: &str) -> Self {
        match s {
            "Healthy" => Health::Healthy,
            "Progressing" => Health::Progressing,
            "Degraded" => Health::Degraded,
            "Suspended" => Health::Suspended,
            "Missing" => Health::Missing,
            _ => Health::Unknown,
        }
    }

    /// The contract's enum.
    pub fn to_proto(self) -> AppHealth {
        match self {
            Health::Healthy => AppHealth::Healthy,
            Health::Progressing => AppHealth::Progressing,
            Health::Degraded => AppHealth::Degraded,
            Health::Suspended => AppHealth::Suspended,
            Health::Missing => AppHealth::Missing,
            Health::Unknown => AppHealth::Unknown,
        }
    }
}

/// Argo CD sync statuses; anything else reads as `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SyncState {
    /// Synced.
    Synced,
    /// OutOfSync.
    OutOfSync,
    /// Unknown.
    Unknown,
}

impl SyncState {
    /// Reads Argo CD's string.
    pub fn parse(s: &str) -> Self {
        match s {
            "Synced" => SyncState::Synced,
            "OutOfSync" => SyncState::OutOfSync,
            _ => SyncState::Unknown,
        }
    }

    /// The contract's enum.
    pub fn to_proto(self) -> AppSync {
        match self {
            SyncState::Synced => AppSync::Synced,
            SyncState::OutOfSync => AppSync::OutOfSync,
            SyncState::Unknown => AppSync::Unknown,
        }
    }
}

/// How long a new status must hold before it is published: `observations` polls in a row,
/// or `hold` of wall time since it was first seen, whichever comes first. The defaults
/// (1 observation) publish at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    /// Consecutive observations (at least 1).
    pub observations: u32,
    /// Time since first seen; zero turns the time rule off.
    pub hold: Duration,
}

impl Default for Hysteresis {
    fn default() -> Self {
        Self { observations: 1, hold: Duration::ZERO }
    }
}

/// A status waiting to hold long enough (`None` status: the application vanished).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The candidate status; `None` when the application is no longer listed.
    pub status: Option<AppStatus>,
    /// When it was first seen.
    pub since: Timestamp,
    /// Consecutive observations of it.
    pub seen: u32,
}

/// What is kept per application between cycles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tracked {
    /// The status last published; `None` while a new application waits to settle.
    pub published: Option<AppStatus>,
    /// A different status waiting to settle.
    pub pending: Option<Pending>,
    /// Changes published so far for this incarnation: the ordinal in the next change's
    /// idempotency key, so the same change planned twice (a retry, a new leader reading
    /// the same kept state) has the same key, and a later flip back is a new one.
    #[serde(default)]
    pub changes: u32,
    /// Hash of the Application's `metadata.uid`: an application deleted and created again
    /// is a new incarnation, and its changes new keys.
    #[serde(default)]
    pub incarnation: u64,
}

/// A change to publish as `RecordHealthCheckRequested`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emit {
    /// Appeared, changed or vanished.
    pub change: HealthChange,
    /// The status published before (none for a new application).
    pub previous: Option<AppStatus>,
    /// The new status (none for a vanished application).
    pub current: Option<AppStatus>,
    /// When the new status was first observed (the key of the change: every replica and
    /// every retry that sees the same change derives the same idempotency key from it).
    pub since: Timestamp,
}

impl Hysteresis {
    fn settled(&self, pending: &Pending, now: Timestamp) -> bool {
        if pending.seen >= self.observations.max(1) {
            return true;
        }
        let held = now.duration_since(pending.since);
        !self.hold.is_zero() && held >= jiff::SignedDuration::try_from(self.hold).unwrap_or(jiff::SignedDuration::MAX)
    }
}

/// Moves one application's state forward by one observation (`None`: not listed this
/// cycle). Returns the new state (`None`: forget the application) and what to publish.
pub fn step(
    tracked: Option<Tracked>,
    observed: Option<AppStatus>,
    hysteresis: Hysteresis,
    now: Timestamp,
) -> (Option<Tracked>, Option<Emit>) {
    let published = tracked.and_then(|t| t.published);
    let base = tracked.unwrap_or_default();
    if tracked.is_none() && observed.is_none() {
        return (None, None);
    }
    if published.is_some() && published == observed {
        // Back to (or still at) what was published: any pending flap is forgotten.
        return (Some(Tracked { published, pending: None, ..base }), None);
    }
    if published.is_none() && observed.is_none() {
        // Appeared and vanished before it ever settled: nothing to say.
        return (None, None);
    }
    let pending = match tracked.and_then(|t| t.pending) {
        Some(p) if p.status == observed => Pending { seen: p.seen.saturating_add(1), ..p },
        _ => Pending { status: observed, since: now, seen: 1 },
    };
    if !hysteresis.settled(&pending, now) {
        return (Some(Tracked { published, pending: Some(pending), ..base }), None);
    }
    let change = match (published, observed) {
        (None, _) => HealthChange::Appeared,
        (_, None) => HealthChange::Vanished,
        _ => HealthChange::Changed,
    };
    let emit = Emit { change, previous: published, current: observed, since: pending.since };
    let next = observed.map(|status| Tracked {
        published: Some(status),
        pending: None,
        changes: base.changes.saturating_add(1),
        ..base
    });
    (next, Some(emit))
}

/// One application as observed, with what the fleet state needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed<'a> {
    /// `<namespace>/<name>`.
    pub app: &'a str,
    /// Its environment (already mapped and filtered).
    pub environment: &'a str,
    /// Its status.
    pub status: AppStatus,
    /// Argo CD's health message.
    pub message: &'a str,
}

/// Counts of one environment for `RecordFleetStateRequested`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FleetCounts {
    /// Per health status.
    pub by_health: StateCount,
    /// Per sync status.
    pub by_sync: SyncCount,
    /// All applications.
    pub total: u32,
    /// The applications that are not Healthy, sorted by name.
    pub unhealthy: Vec<UnhealthyApp>,
}

/// The fleet counts per configured environment (every configured environment is present,
/// empty ones with zero counts, so a cycle always reports each one).
pub fn fleet_counts(environments: &[String], apps: &[Observed<'_>]) -> BTreeMap<String, FleetCounts> {
    let mut out: BTreeMap<String, FleetCounts> =
        environments.iter().map(|e| (e.clone(), FleetCounts::default())).collect();
    for a in apps {
        let Some(c) = out.get_mut(a.environment) else { continue };
        c.add(a);
    }
    for c in out.values_mut() {
        c.sort();
    }
    out
}

impl FleetCounts {
    /// Counts one application (its environment already chosen).
    pub fn add(&mut self, a: &Observed<'_>) {
        let c = self;
        c.total += 1;
        let h = &mut c.by_health;
        match a.status.health {
            Health::Healthy => h.healthy += 1,
            Health::Progressing => h.progressing += 1,
            Health::Degraded => h.degraded += 1,
            Health::Suspended => h.suspended += 1,
            Health::Missing => h.missing += 1,
            Health::Unknown => h.unknown += 1,
        }
        let s = &mut c.by_sync;
        match a.status.sync {
            SyncState::Synced => s.synced += 1,
            SyncState::OutOfSync => s.out_of_sync += 1,
            SyncState::Unknown => s.unknown += 1,
        }
        if a.status.health != Health::Healthy {
            c.unhealthy.push(UnhealthyApp {
                app: a.app.to_owned(),
                health: a.status.health.to_proto() as i32,
                sync: a.status.sync.to_proto() as i32,
                message: a.message.to_owned(),
            });
        }
    }

    /// Sorts the unhealthy applications by name, once every application is counted.
    pub fn sort(&mut self) {
        self.unhealthy.sort_by(|a, b| a.app.cmp(&b.app));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: Health = Health::Healthy;
    const P: Health = Health::Progressing;
    const D: Health = Health::Degraded;

    fn st(health: Health) -> AppStatus {
        AppStatus { health, sync: SyncState::Synced }
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("time")
    }

    /// A publication as (change, previous health, new health).
    type Published = (HealthChange, Option<Health>, Option<Health>);
    /// A table row: name, hysteresis, observations, expected publications.
    type Case = (&'static str, Hysteresis, Vec<Option<Health>>, Vec<Published>);

    /// Runs a sequence of observations (one per 30 s poll), returning what was published.
    fn run(h: Hysteresis, seq: &[Option<Health>]) -> Vec<Published> {
        let mut tracked = None;
        let mut out = Vec::new();
        for (i, obs) in seq.iter().enumerate() {
            let (next, emit) = step(tracked, obs.map(st), h, t(30 * i as i64));
            tracked = next;
            if let Some(e) = emit {
                out.push((e.change, e.previous.map(|s| s.health), e.current.map(|s| s.health)));
            }
        }
        out
    }

    #[test]
    fn table_of_changes() {
        use HealthChange::{Appeared, Changed, Vanished};
        let now = Hysteresis::default();
        let two = Hysteresis { observations: 2, hold: Duration::ZERO };
        let minute = Hysteresis { observations: 100, hold: Duration::from_secs(60) };
        let cases: Vec<Case> = vec![
            ("appears", now, vec![Some(H)], vec![(Appeared, None, Some(H))]),
            ("steady says nothing", now, vec![Some(H), Some(H), Some(H)], vec![(Appeared, None, Some(H))]),
            ("changes", now, vec![Some(H), Some(D)], vec![(Appeared, None, Some(H)), (Changed, Some(H), Some(D))]),
            ("vanishes", now, vec![Some(H), None], vec![(Appeared, None, Some(H)), (Vanished, Some(H), None)]),
            ("never seen", now, vec![None, None], vec![]),
            (
                "needs two in a row",
                two,
                vec![Some(H), Some(H), Some(D), Some(D)],
                vec![(Appeared, None, Some(H)), (Changed, Some(H), Some(D))],
            ),
            (
                "flapping never settles",
                two,
                vec![Some(H), Some(H), Some(P), Some(D), Some(P), Some(D), Some(P)],
                vec![(Appeared, None, Some(H))],
            ),
            (
                "a blip back to published is forgotten",
                two,
                vec![Some(H), Some(H), Some(D), Some(H), Some(D), Some(H)],
                vec![(Appeared, None, Some(H))],
            ),
            ("appears and vanishes unsettled", two, vec![Some(H), None, None], vec![]),
            (
                "vanish must hold too",
                two,
                vec![Some(H), Some(H), None, Some(H), None, None],
                vec![(Appeared, None, Some(H)), (Vanished, Some(H), None)],
            ),
            (
                "or a duration",
                minute,
                vec![Some(H), Some(H), Some(H), Some(D), Some(D), Some(D)],
                vec![(Appeared, None, Some(H)), (Changed, Some(H), Some(D))],
            ),
        ];
        for (name, h, seq, want) in cases {
            assert_eq!(run(h, &seq), want, "{name}");
        }
    }

    #[test]
    fn a_change_is_dated_by_its_first_observation() {
        let two = Hysteresis { observations: 2, hold: Duration::ZERO };
        let (tracked, _) = step(None, Some(st(H)), Hysteresis::default(), t(0));
        let (tracked, none) = step(tracked, Some(st(D)), two, t(30));
        assert_eq!(none, None);
        let (_, emit) = step(tracked, Some(st(D)), two, t(60));
        assert_eq!(emit.map(|e| e.since), Some(t(30)), "the same change gets the same key on every replica");
    }

    #[test]
    fn fleet_counts_cover_every_configured_environment() {
        let names: Vec<(String, String)> =
            ["a", "b", "c", "d", "e"].iter().map(|n| (format!("argocd/{n}"), format!("{n} message"))).collect();
        let app = |name: &str, env: &'static str, health, sync| {
            let (key, message) = names.iter().find(|(k, _)| k.ends_with(name)).expect("named");
            Observed { app: key, environment: env, status: AppStatus { health, sync }, message }
        };
        let apps = vec![
            app("b", "production", Health::Degraded, SyncState::OutOfSync),
            app("a", "production", Health::Healthy, SyncState::Synced),
            app("c", "production", Health::Progressing, SyncState::Synced),
            app("d", "staging", Health::Missing, SyncState::Unknown),
            app("e", "elsewhere", Health::Degraded, SyncState::Synced),
        ];
        let envs = vec!["production".to_owned(), "staging".to_owned(), "dev".to_owned()];
        let counts = fleet_counts(&envs, &apps);
        assert_eq!(counts.keys().collect::<Vec<_>>(), ["dev", "production", "staging"]);
        let p = &counts["production"];
        assert_eq!(p.total, 3);
        assert_eq!((p.by_health.healthy, p.by_health.degraded, p.by_health.progressing), (1, 1, 1));
        assert_eq!((p.by_sync.synced, p.by_sync.out_of_sync), (2, 1));
        assert_eq!(p.unhealthy.iter().map(|u| u.app.as_str()).collect::<Vec<_>>(), ["argocd/b", "argocd/c"]);
        assert_eq!(counts["staging"].by_health.missing, 1);
        assert_eq!(counts["dev"], FleetCounts::default(), "an empty environment still reports");
    }

    fn arb_obs() -> impl Strategy<Value = Option<AppStatus>> {
        prop_oneof![
            Just(None),
            (0u8..6, 0u8..3).prop_map(|(h, s)| Some(AppStatus {
                health: [H, P, D, Health::Suspended, Health::Missing, Health::Unknown][h as usize],
                sync: [SyncState::Synced, SyncState::OutOfSync, SyncState::Unknown][s as usize],
            }))
        ]
    }

    proptest! {
        #[test]
        fn published_changes_form_a_consistent_history(
            seq in proptest::collection::vec(arb_obs(), 0..40),
            n in 1u32..4,
        ) {
            let h = Hysteresis { observations: n, hold: Duration::ZERO };
            let mut tracked = None;
            let mut last_published: Option<AppStatus> = None;
            for (i, obs) in seq.iter().enumerate() {
                let (next, emit) = step(tracked, *obs, h, t(30 * i as i64));
                if let Some(e) = emit {
                    // Each publication starts from what was published before and differs from it.
                    prop_assert_eq!(e.previous, last_published);
                    prop_assert_ne!(e.previous, e.current);
                    last_published = e.current;
                }
                prop_assert_eq!(next.and_then(|t| t.published), last_published);
                tracked = next;
            }
            // Once n equal observations end the sequence, what is published is what is seen.
            if seq.len() >= n as usize {
                let tail = &seq[seq.len() - n as usize..];
                if tail.iter().all(|o| *o == tail[0]) {
                    prop_assert_eq!(last_published, tail[0]);
                }
            }
        }

        #[test]
        fn with_no_hysteresis_every_difference_is_published(seq in proptest::collection::vec(arb_obs(), 0..40)) {
            let mut tracked = None;
            let mut previous: Option<AppStatus> = None;
            for (i, obs) in seq.iter().enumerate() {
                let (next, emit) = step(tracked, *obs, Hysteresis::default(), t(30 * i as i64));
                prop_assert_eq!(emit.is_some(), *obs != previous);
                previous = *obs;
                tracked = next;
            }
        }
    }
}
