//! One poll cycle, as a pure function: the list Argo CD returned, the state kept from the
//! last cycle, the rules and `now` in; the next state and the intents to publish out.
//!
//! Keys are derived from content, so a retry, a restarted replica reading the same state,
//! or a second replica observing the same change derives the same `Nats-Msg-Id`:
//! - a health change: server, application, its incarnation (`metadata.uid`), the ordinal
//!   of the change (kept in the state), the change and both statuses. No clock enters it,
//!   so a leader that crashed after publishing and before saving the state, and its
//!   successor re-planning from the same state, derive the same key: the bus stores the
//!   change once (within its duplicate window, which must exceed the lease TTL);
//! - a fleet state: server, environment and the cycle's id, which the poller takes from
//!   the lease it renews at the start of every cycle (its holder and the KV revision of
//!   the renewal, unique on the bus). Every cycle reports once, however close two cycles
//!   fall (jitter once made two cycles share a time slot and the second was dropped as a
//!   duplicate); a retried publish of one cycle is one report; two replicas never both
//!   hold the lease, so they never report one cycle twice.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use sre_contracts::domain::v1::{MessageMeta, RecordFleetStateRequested, RecordHealthCheckRequested, Source};
use sre_resilience::idempotency::derive_key;

use crate::apps::{Apps, Updates};
use crate::argocd::{Application, ApplicationList, environment_of};
use crate::config::EnvironmentFrom;
use crate::observe::{AppStatus, Emit, FleetCounts, Hysteresis, Observed, Tracked, step};

/// What a cycle needs besides the list and the state.
#[derive(Debug, Clone)]
pub struct CycleRules {
    /// The Argo CD server (base URL, no credentials), as reported in the intents.
    pub server: String,
    /// The environments to report.
    pub environments: Vec<String>,
    /// Where an application's environment comes from.
    pub environment_from: EnvironmentFrom,
    /// The label read for `EnvironmentFrom::Label`.
    pub environment_label: String,
    /// How long a new status must hold.
    pub hysteresis: Hysteresis,
    /// The poll interval.
    pub poll_interval: Duration,
}

impl CycleRules {
    /// Whether `environment` is reported: a configured one, or any when none are.
    fn reports(&self, environment: &str) -> bool {
        self.environments.is_empty() || self.environments.iter().any(|e| e == environment)
    }
}

/// What a cycle produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CycleOutput {
    /// The state to keep for the next cycle, by `<namespace>/<name>`.
    pub next: BTreeMap<String, Tracked>,
    /// One per settled change.
    pub health_checks: Vec<RecordHealthCheckRequested>,
    /// One per configured environment.
    pub fleet: Vec<RecordFleetStateRequested>,
}

fn ts(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.as_second(), nanos: t.subsec_nanosecond() }
}

fn meta(key: String, correlation_id: &str, source: &Source, now: Timestamp) -> Option<MessageMeta> {
    Some(MessageMeta {
        idempotency_key: key,
        correlation_id: correlation_id.to_owned(),
        causation_id: String::new(),
        source: Some(source.clone()),
        occurred_at: Some(ts(now)),
    })
}

/// FNV-1a: a stable 64-bit hash (the standard library's hasher is seeded per process).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

fn status_str(s: Option<AppStatus>) -> String {
    s.map_or_else(|| "none".to_owned(), |s| format!("{:?}/{:?}", s.health, s.sync))
}

/// What the detail of an application adds to a change: what the lean list leaves out
/// (`fields` cannot select `metadata.uid` or `status.reconciledAt`; older servers cannot
/// select `status.sync.revision`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detail {
    /// `metadata.uid`.
    pub uid: String,
    /// `status.sync.revision`.
    pub revision: String,
    /// `status.reconciledAt`.
    pub reconciled_at: Option<String>,
}

impl Detail {
    /// The detail carried by `app`.
    pub fn of(app: &Application) -> Self {
        Self {
            uid: app.metadata.uid.clone(),
            revision: app.status.sync.revision.clone(),
            reconciled_at: app.status.reconciled_at.clone(),
        }
    }
}

/// Whether `app` is a whole item rather than one cut down by `fields` (which can never
/// select `metadata.uid` or `status.reconciledAt`).
pub fn is_whole(app: &Application) -> bool {
    !app.metadata.uid.is_empty() || app.status.reconciled_at.is_some()
}

/// A change found while the list streams in. Its detail is filled before it is published
/// (from the item itself when it was whole, else fetched).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// `<namespace>/<name>`.
    pub key: String,
    /// The application's environment (empty for a vanished one).
    pub environment: String,
    /// `spec.project`.
    pub project: String,
    /// `status.health.message`.
    pub message: String,
    /// What to publish.
    pub emit: Emit,
    /// The ordinal of this change (see the module header).
    pub ordinal: u32,
    /// The incarnation known from the kept state, until the detail tells.
    pub incarnation: u64,
    /// `None` while it still has to be fetched; always `Some` for a vanished application.
    pub detail: Option<Detail>,
    /// Whether the application is still listed (not vanished).
    pub listed: bool,
}

impl Change {
    /// Namespace and name.
    pub fn namespace_and_name(&self) -> (&str, &str) {
        self.key.split_once('/').unwrap_or(("", self.key.as_str()))
    }
}

/// One cycle planned as the list streams in: each item is compared with the kept state and
/// dropped; only the changes, the kept-state updates and the per-environment counts stay.
/// Memory is the kept state plus what changed, whatever the fleet size.
#[derive(Debug)]
pub struct Planner<'a> {
    previous: &'a Apps,
    rules: &'a CycleRules,
    now: Timestamp,
    lean: bool,
    /// Bit `i`: the kept application at position `i` was listed (the others vanished).
    seen: Vec<u64>,
    updates: Updates,
    changes: Vec<Change>,
    counts: BTreeMap<String, FleetCounts>,
    listed: usize,
    whole: usize,
    limit: usize,
    overflowed: bool,
}

/// A planned cycle, its details still to fill.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Planned {
    /// Kept-state updates.
    pub updates: Updates,
    /// The changes to publish, by key.
    pub changes: Vec<Change>,
    /// Counts per reported environment.
    pub counts: BTreeMap<String, FleetCounts>,
    /// Items read.
    pub listed: usize,
    /// Items that came whole although a lean list was asked for (the server ignored
    /// `fields`).
    pub whole: usize,
    /// More changes than the planner's limit: the changes and updates are incomplete, and
    /// the cycle is planned again from a whole list (see [`Planner::with_limit`]).
    pub overflowed: bool,
}

impl<'a> Planner<'a> {
    /// A planner against the kept state `previous`. `lean`: the list was asked for with
    /// `fields`, so an item's detail is fetched for each change (unless the item came whole).
    pub fn new(previous: &'a Apps, rules: &'a CycleRules, now: Timestamp, lean: bool) -> Self {
        let counts = rules.environments.iter().map(|e| (e.clone(), FleetCounts::default())).collect();
        Self {
            previous,
            rules,
            now,
            lean,
            seen: vec![0; previous.len().div_ceil(64)],
            updates: Updates::default(),
            changes: Vec::new(),
            counts,
            listed: 0,
            whole: 0,
            limit: usize::MAX,
            overflowed: false,
        }
    }

    /// Keeps at most `limit` changes: past it the planner only counts, and the result says
    /// [`Planned::overflowed`]. Bounds what a lean cycle holds when nearly every
    /// application changed (a first cycle).
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Expects about `applications` (e.g. as many as a lean list just counted), so the
    /// kept-state updates of a first cycle are allocated once.
    pub fn expecting(mut self, applications: usize) -> Self {
        self.updates.set = Apps::with_capacity(applications, applications * 24);
        self
    }

    /// Changes found so far.
    pub fn found(&self) -> usize {
        self.changes.len()
    }

    /// Takes the changes found so far (in list order; each with its detail when the items
    /// are whole), to publish them while the list still streams.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Reads one listed application.
    pub fn observe(&mut self, app: &Application) {
        self.listed += 1;
        let whole = is_whole(app);
        if self.lean && whole {
            self.whole += 1;
        }
        let Some(env) = environment_of(app, self.rules.environment_from, &self.rules.environment_label) else {
            return;
        };
        if !self.rules.reports(&env) {
            return;
        }
        let key = app.key();
        let position = self.previous.position(&key);
        if let Some(p) = position {
            if self.seen[p / 64] & (1 << (p % 64)) != 0 {
                // Listed twice (not expected): the first one counts.
                return;
            }
            self.seen[p / 64] |= 1 << (p % 64);
        }
        let status = app.app_status();
        let counts = match self.counts.get_mut(&env) {
            Some(c) => c,
            None => self.counts.entry(env.clone()).or_default(),
        };
        counts.add(&Observed { app: &key, environment: &env, status, message: &app.status.health.message });
        if self.overflowed {
            return;
        }
        let before = position.and_then(|p| self.previous.at(p));
        let (next, emit) = step(before, Some(status), self.rules.hysteresis, self.now);
        if emit.is_some() && self.changes.len() >= self.limit {
            self.overflowed = true;
            self.changes = Vec::new();
            self.updates = Updates::default();
            return;
        }
        let incarnation = match before {
            _ if !app.metadata.uid.is_empty() => fnv1a(app.metadata.uid.as_bytes()),
            Some(t) => t.incarnation,
            None => 0,
        };
        let next = next.map(|t| Tracked { incarnation, ..t });
        if next != before {
            match next {
                Some(t) => self.updates.set.push(&key, t),
                None => self.updates.forget.push(key.clone()),
            }
        }
        if let Some(emit) = emit {
            self.changes.push(Change {
                ordinal: before.map_or(0, |t| t.changes).saturating_add(1),
                incarnation,
                detail: (!self.lean || whole).then(|| Detail::of(app)),
                environment: env,
                project: app.spec.project.clone(),
                message: app.status.health.message.clone(),
                emit,
                listed: true,
                key,
            });
        }
    }

    /// The list has ended: what was kept and not seen has vanished.
    pub fn finish(mut self) -> Planned {
        for (p, (key, before)) in self.previous.iter().enumerate().filter(|_| !self.overflowed) {
            if self.seen[p / 64] & (1 << (p % 64)) != 0 {
                continue;
            }
            let (next, emit) = step(Some(*before), None, self.rules.hysteresis, self.now);
            if next != Some(*before) {
                match next {
                    Some(t) => self.updates.set.push(key, t),
                    None => self.updates.forget.push(key.to_owned()),
                }
            }
            if let Some(emit) = emit {
                self.changes.push(Change {
                    key: key.to_owned(),
                    environment: String::new(),
                    project: String::new(),
                    message: String::new(),
                    emit,
                    ordinal: before.changes.saturating_add(1),
                    incarnation: before.incarnation,
                    detail: Some(Detail::default()),
                    listed: false,
                });
            }
        }
        self.changes.sort_by(|a, b| a.key.cmp(&b.key));
        self.updates.set = std::mem::take(&mut self.updates.set).sorted();
        self.updates.forget.sort_unstable();
        for c in self.counts.values_mut() {
            c.sort();
        }
        Planned {
            updates: self.updates,
            changes: self.changes,
            counts: self.counts,
            listed: self.listed,
            whole: self.whole,
            overflowed: self.overflowed,
        }
    }
}

/// The health check of one change; `None` while its detail is unknown.
pub fn health_check(
    c: &Change,
    rules: &CycleRules,
    now: Timestamp,
    source: &Source,
    cycle: &CycleId,
) -> Option<RecordHealthCheckRequested> {
    let detail = c.detail.as_ref()?;
    let e = &c.emit;
    let id = derive_key(
        "argocd-health",
        &[
            &rules.server,
            &c.key,
            &format!("{:016x}", c.incarnation),
            &c.ordinal.to_string(),
            e.change.as_str_name(),
            &status_str(e.previous),
            &status_str(e.current),
        ],
    );
    Some(RecordHealthCheckRequested {
        meta: meta(id, &cycle.correlation_id, source, now),
        environment: c.environment.clone(),
        argocd_server: rules.server.clone(),
        app: c.key.clone(),
        project: c.project.clone(),
        change: e.change as i32,
        previous_health: e.previous.map_or(0, |s| s.health.to_proto() as i32),
        health: e.current.map_or(0, |s| s.health.to_proto() as i32),
        previous_sync: e.previous.map_or(0, |s| s.sync.to_proto() as i32),
        sync: e.current.map_or(0, |s| s.sync.to_proto() as i32),
        message: c.message.clone(),
        revision: detail.revision.clone(),
        reconciled_at: detail.reconciled_at.as_deref().and_then(|r| r.parse::<Timestamp>().ok()).map(ts),
        observed_at: Some(ts(e.since)),
    })
}

impl Planned {
    /// Fills the detail of the change of `key` (fetched); the incarnation follows its uid,
    /// in the change and in the kept-state update.
    pub fn fill(&mut self, key: &str, detail: Detail) {
        let Ok(i) = self.changes.binary_search_by(|c| c.key.as_str().cmp(key)) else { return };
        let change = &mut self.changes[i];
        if !detail.uid.is_empty() {
            change.incarnation = fnv1a(detail.uid.as_bytes());
            if let Some(t) = self.updates.set.get_mut(key) {
                t.incarnation = change.incarnation;
            }
        }
        change.detail = Some(detail);
    }

    /// Drops every change whose detail could not be read, with its kept-state update, so
    /// the next cycle plans it again from the same kept state (under the same key).
    /// Returns how many.
    pub fn defer_unfilled(&mut self) -> usize {
        let deferred: Vec<String> = self.changes.iter().filter(|c| c.detail.is_none()).map(|c| c.key.clone()).collect();
        if deferred.is_empty() {
            return 0;
        }
        self.changes.retain(|c| c.detail.is_some());
        self.updates.set.retain(|k| deferred.binary_search_by(|d| d.as_str().cmp(k)).is_err());
        self.updates.forget.retain(|k| deferred.binary_search(k).is_err());
        deferred.len()
    }

    /// The keys (`<namespace>/<name>`) whose detail is still to be fetched.
    pub fn wanted(&self) -> Vec<String> {
        self.changes.iter().filter(|c| c.detail.is_none()).map(|c| c.key.clone()).collect()
    }

    /// How many changes still wait for their detail.
    pub fn wanted_count(&self) -> usize {
        self.changes.iter().filter(|c| c.detail.is_none()).count()
    }

    /// Whether the change of `key` waits for its detail.
    pub fn wants(&self, key: &str) -> bool {
        self.changes.binary_search_by(|c| c.key.as_str().cmp(key)).is_ok_and(|i| self.changes[i].detail.is_none())
    }

    /// The intents: one health check per change (every detail filled; a change still
    /// without one is left out, see [`Planned::defer`]), one fleet state per environment.
    pub fn intents(
        &self,
        rules: &CycleRules,
        now: Timestamp,
        source: &Source,
        cycle: &CycleId,
    ) -> (Vec<RecordHealthCheckRequested>, Vec<RecordFleetStateRequested>) {
        (self.health_checks(0..self.changes.len(), rules, now, source, cycle), self.fleet(rules, now, source, cycle))
    }

    /// The health checks of the changes in `range` (built a batch at a time, so a first
    /// cycle of a large fleet never holds every intent at once).
    pub fn health_checks(
        &self,
        range: std::ops::Range<usize>,
        rules: &CycleRules,
        now: Timestamp,
        source: &Source,
        cycle: &CycleId,
    ) -> Vec<RecordHealthCheckRequested> {
        self.changes[range.start.min(self.changes.len())..range.end.min(self.changes.len())]
            .iter()
            .filter_map(|c| health_check(c, rules, now, source, cycle))
            .collect()
    }

    /// One fleet state per reported environment.
    pub fn fleet(
        &self,
        rules: &CycleRules,
        now: Timestamp,
        source: &Source,
        cycle: &CycleId,
    ) -> Vec<RecordFleetStateRequested> {
        let correlation_id = cycle.correlation_id.as_str();
        self.counts
            .iter()
            .map(|(environment, counts)| RecordFleetStateRequested {
                meta: meta(
                    derive_key("argocd-fleet", &[&rules.server, environment, &cycle.id]),
                    correlation_id,
                    source,
                    now,
                ),
                environment: environment.clone(),
                argocd_server: rules.server.clone(),
                observed_at: Some(ts(now)),
                observation_ok: true,
                failure_reason: String::new(),
                by_health: Some(counts.by_health),
                by_sync: Some(counts.by_sync),
                total: counts.total,
                unhealthy: counts.unhealthy.clone(),
            })
            .collect()
    }

    /// Applies the kept-state updates to `state`.
    pub fn apply(&self, state: &mut BTreeMap<String, Tracked>) {
        for (key, next) in self.updates.pairs() {
            match next {
                Some(t) => state.insert(key, t),
                None => state.remove(&key),
            };
        }
    }
}

/// Runs one cycle over a whole list already read (the watch's events, the tests): the
/// same planner as a streamed poll, every detail taken from the items. `cycle` identifies
/// this cycle on the bus (see the module header); watch events, which report no fleet
/// state, pass any.
pub fn plan_cycle(
    list: &ApplicationList,
    previous: &BTreeMap<String, Tracked>,
    rules: &CycleRules,
    now: Timestamp,
    source: &Source,
    cycle: &CycleId,
) -> CycleOutput {
    let kept = Apps::from(previous);
    let mut planner = Planner::new(&kept, rules, now, false);
    for app in &list.items {
        planner.observe(app);
    }
    let planned = planner.finish();
    let (health_checks, fleet) = planned.intents(rules, now, source, cycle);
    let mut next = previous.clone();
    planned.apply(&mut next);
    CycleOutput { next, health_checks, fleet }
}

/// One cycle's identity: its id on the bus (for the fleet states' keys) and its
/// correlation id (for logs and the intents' metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleId {
    /// Unique per cycle on the bus: the lease holder and the revision of its renewal.
    pub id: String,
    /// Carried in every intent of the cycle and its log lines.
    pub correlation_id: String,
}

/// The fleet states of a cycle whose list could not be read: each environment reports the
/// failure instead of going silent (with no environments configured, one report with an
/// empty environment: all of them). The kept state is unchanged (nothing is known).
pub fn failed_cycle(
    rules: &CycleRules,
    reason: &str,
    now: Timestamp,
    source: &Source,
    cycle: &CycleId,
) -> Vec<RecordFleetStateRequested> {
    let all = [String::new()];
    let environments: &[String] = if rules.environments.is_empty() { &all } else { &rules.environments };
    environments
        .iter()
        .map(|environment| RecordFleetStateRequested {
            meta: meta(
                derive_key("argocd-fleet", &[&rules.server, environment, &cycle.id]),
                &cycle.correlation_id,
                source,
                now,
            ),
            environment: environment.clone(),
            argocd_server: rules.server.clone(),
            observed_at: Some(ts(now)),
            observation_ok: false,
            failure_reason: reason.to_owned(),
            ..Default::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::argocd::parse_list;
    use sre_contracts::domain::v1::{AppHealth, HealthChange};

    fn cid(id: &str) -> CycleId {
        CycleId { id: id.to_owned(), correlation_id: format!("corr-{id}") }
    }

    fn rules(observations: u32) -> CycleRules {
        CycleRules {
            server: "http://argocd.example".into(),
            environments: vec!["production".into(), "staging".into()],
            environment_from: EnvironmentFrom::Label,
            environment_label: "environment".into(),
            hysteresis: Hysteresis { observations, hold: Duration::ZERO },
            poll_interval: Duration::from_secs(30),
        }
    }

    fn list(apps: &[(&str, &str, &str)]) -> ApplicationList {
        let items: Vec<serde_json::Value> = apps
            .iter()
            .map(|(name, env, health)| {
                serde_json::json!({"metadata": {"name": name, "namespace": "argocd", "labels": {"environment": env}},
                    "spec": {"project": "shop"},
                    "status": {"health": {"status": health, "message": format!("{name} is {health}")},
                               "sync": {"status": "Synced", "revision": "abc"}, "reconciledAt": "2026-11-27T04:00:00Z"}})
            })
            .collect();
        parse_list(serde_json::json!({"items": items}).to_string().as_bytes()).expect("list")
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).expect("time")
    }

    fn src(instance: &str) -> Source {
        Source { service: "argocd-sync".into(), instance: instance.into() }
    }

    #[test]
    fn first_cycle_reports_new_apps_and_the_fleet() {
        let out = plan_cycle(
            &list(&[("web", "production", "Healthy"), ("api", "production", "Degraded"), ("x", "dev", "Degraded")]),
            &BTreeMap::new(),
            &rules(1),
            t(0),
            &src("a"),
            &cid("cycle-1"),
        );
        assert_eq!(out.health_checks.len(), 2, "dev is not a configured environment");
        assert!(out.health_checks.iter().all(|h| h.change == HealthChange::Appeared as i32));
        let prod = out.fleet.iter().find(|f| f.environment == "production").expect("production");
        assert_eq!((prod.total, prod.by_health.as_ref().map(|h| (h.healthy, h.degraded))), (2, Some((1, 1))));
        assert_eq!(prod.unhealthy.len(), 1);
        assert_eq!(prod.unhealthy[0].message, "api is Degraded");
        let staging = out.fleet.iter().find(|f| f.environment == "staging").expect("staging reports too");
        assert!(staging.observation_ok && staging.total == 0);
    }

    #[test]
    fn only_changes_are_reported_and_the_same_change_has_the_same_key_everywhere() {
        let first = plan_cycle(
            &list(&[("web", "production", "Healthy")]),
            &BTreeMap::new(),
            &rules(1),
            t(0),
            &src("a"),
            &cid("c1"),
        );
        let same = plan_cycle(
            &list(&[("web", "production", "Healthy")]),
            &first.next,
            &rules(1),
            t(30),
            &src("a"),
            &cid("c2"),
        );
        assert!(same.health_checks.is_empty(), "no change, no health check");
        let degraded = list(&[("web", "production", "Degraded")]);
        let a = plan_cycle(&degraded, &same.next, &rules(1), t(60), &src("a"), &cid("c3"));
        // A second replica with the same kept state (read from the KV bucket), a moment later.
        let b = plan_cycle(&degraded, &same.next, &rules(1), t(61), &src("b"), &cid("c9"));
        assert_eq!(a.health_checks.len(), 1);
        let h = &a.health_checks[0];
        assert_eq!((h.previous_health, h.health), (AppHealth::Healthy as i32, AppHealth::Degraded as i32));
        assert_eq!((h.app.as_str(), h.project.as_str(), h.revision.as_str()), ("argocd/web", "shop", "abc"));
        let key = |o: &CycleOutput| o.health_checks[0].meta.as_ref().map(|m| m.idempotency_key.clone());
        assert_eq!(key(&a), key(&b), "two replicas seeing one change within an interval: one intent");
        // With hysteresis the change is dated by its first observation, kept in the state:
        let pending = plan_cycle(&degraded, &same.next, &rules(2), t(60), &src("a"), &cid("c3"));
        assert!(pending.health_checks.is_empty());
        let a2 = plan_cycle(&degraded, &pending.next, &rules(2), t(90), &src("a"), &cid("c4"));
        let b2 = plan_cycle(&degraded, &pending.next, &rules(2), t(95), &src("b"), &cid("c8"));
        assert_eq!(key(&a2), key(&b2), "same kept state, same change: the bus stores it once");
    }

    #[test]
    fn keys_survive_a_crash_and_tell_flips_and_incarnations_apart() {
        let key = |o: &CycleOutput| o.health_checks[0].meta.as_ref().map(|m| m.idempotency_key.clone());
        let healthy = list(&[("web", "production", "Healthy")]);
        let degraded = list(&[("web", "production", "Degraded")]);
        let s0 = plan_cycle(&healthy, &BTreeMap::new(), &rules(1), t(0), &src("a"), &cid("c")).next;
        // The leader publishes the change and dies before saving; its successor re-plans
        // from the same kept state three intervals later: same key, stored once.
        let first = plan_cycle(&degraded, &s0, &rules(1), t(30), &src("a"), &cid("c"));
        let again = plan_cycle(&degraded, &s0, &rules(1), t(120), &src("b"), &cid("c"));
        assert_eq!(key(&first), key(&again));
        // Back to Healthy and Degraded again: a new change, a new key.
        let back = plan_cycle(&healthy, &first.next, &rules(1), t(150), &src("a"), &cid("c"));
        let flip = plan_cycle(&degraded, &back.next, &rules(1), t(180), &src("a"), &cid("c"));
        assert_ne!(key(&flip), key(&first));
        // Deleted and created again (a new uid): a new incarnation, a new key.
        let mut recreated = healthy.clone();
        recreated.items[0].metadata.uid = "new-uid".into();
        let gone = plan_cycle(&list(&[]), &s0, &rules(1), t(30), &src("a"), &cid("c"));
        let back_again = plan_cycle(&recreated, &gone.next, &rules(1), t(60), &src("a"), &cid("c"));
        let first_seen = plan_cycle(&healthy, &BTreeMap::new(), &rules(1), t(0), &src("a"), &cid("c"));
        assert_ne!(key(&back_again), key(&first_seen));
    }

    #[test]
    fn every_cycle_reports_once_however_close_in_time() {
        let l = list(&[("web", "production", "Healthy")]);
        let key = |now, cycle: &str| {
            plan_cycle(&l, &BTreeMap::new(), &rules(1), now, &src("a"), &cid(cycle)).fleet[0]
                .meta
                .as_ref()
                .map(|m| m.idempotency_key.clone())
        };
        // Two cycles 27 s apart with a 30 s interval (jitter of -10%) fell in one time slot
        // (now / interval), and the bus dropped the second as a duplicate: two reports now.
        assert_ne!(key(t(31), "holder/7"), key(t(58), "holder/8"));
        // As do two cycles 1 s apart (a recovery right after a failed cycle).
        assert_ne!(key(t(29), "holder/8"), key(t(30), "holder/9"));
        // The same cycle published again (a retry, a re-plan) is one report.
        assert_eq!(key(t(30), "holder/8"), key(t(31), "holder/8"));
        let failed = |cycle: &str| failed_cycle(&rules(1), "timeout", t(60), &src("a"), &cid(cycle));
        assert_ne!(failed("holder/9")[0].meta, failed("holder/10")[0].meta);
    }

    #[test]
    fn no_environments_configured_reports_every_environment_seen() {
        let l = list(&[("web", "production", "Healthy"), ("api", "staging", "Degraded"), ("db", "staging", "Healthy")]);
        let mut all = rules(1);
        all.environments.clear();
        let out = plan_cycle(&l, &BTreeMap::new(), &all, t(0), &src("a"), &cid("c"));
        let envs: Vec<(&str, u32)> = out.fleet.iter().map(|f| (f.environment.as_str(), f.total)).collect();
        assert_eq!(envs, [("production", 1), ("staging", 2)]);
        assert_eq!(out.health_checks.len(), 3);
        let failed = failed_cycle(&all, "timeout", t(30), &src("a"), &cid("d"));
        assert_eq!(failed.len(), 1);
        assert!(failed[0].environment.is_empty() && !failed[0].observation_ok);
    }

    /// The lean list of `list(..)`: what `fields` returns (no uid, revision, reconciledAt).
    fn lean(apps: &[(&str, &str, &str)]) -> ApplicationList {
        let mut l = list(apps);
        for a in &mut l.items {
            a.metadata.uid.clear();
            a.status.sync.revision.clear();
            a.status.reconciled_at = None;
        }
        l
    }

    #[test]
    fn a_lean_plan_waits_for_the_detail_and_then_publishes_what_a_whole_one_does() {
        let apps = [("web", "production", "Healthy"), ("api", "production", "Degraded")];
        let mut whole_list = list(&apps);
        for a in &mut whole_list.items {
            a.metadata.uid = format!("uid-{}", a.metadata.name);
        }
        let whole = plan_cycle(&whole_list, &BTreeMap::new(), &rules(1), t(0), &src("a"), &cid("c"));
        let rules = rules(1);
        let kept = Apps::from(&whole.next);
        let mut planner = Planner::new(&kept, &rules, t(0), true);
        let empty = Apps::default();
        let mut planner_fresh = Planner::new(&empty, &rules, t(0), true);
        for a in &lean(&apps).items {
            planner.observe(a);
            planner_fresh.observe(a);
        }
        let steady = planner.finish();
        assert!(steady.changes.is_empty() && steady.updates.is_empty(), "a steady lean cycle changes nothing");
        let mut planned = planner_fresh.finish();
        assert_eq!(planned.wanted(), ["argocd/api", "argocd/web"]);
        assert_eq!(planned.whole, 0);
        let (checks, _) = planned.intents(&rules, t(0), &src("a"), &cid("c"));
        assert!(checks.is_empty(), "nothing is published without its detail");
        for a in &whole_list.items {
            planned.fill(&a.key(), Detail::of(a));
        }
        assert_eq!(planned.defer_unfilled(), 0);
        let (checks, fleet) = planned.intents(&rules, t(0), &src("a"), &cid("c"));
        assert_eq!(checks, whole.health_checks, "same content and keys (the uid's incarnation) as a whole list");
        assert_eq!(fleet, whole.fleet);
        let mut next = BTreeMap::new();
        planned.apply(&mut next);
        assert_eq!(next, whole.next, "the kept state carries the fetched incarnation");
    }

    #[test]
    fn a_change_without_its_detail_is_deferred_with_its_state() {
        let rules = rules(1);
        let empty = Apps::default();
        let mut planner = Planner::new(&empty, &rules, t(0), true);
        for a in &lean(&[("web", "production", "Healthy"), ("api", "production", "Degraded")]).items {
            planner.observe(a);
        }
        let mut planned = planner.finish();
        planned.fill("argocd/web", Detail { uid: "u".into(), revision: "r".into(), reconciled_at: None });
        assert_eq!(planned.defer_unfilled(), 1);
        assert_eq!(planned.changes.iter().map(|c| c.key.as_str()).collect::<Vec<_>>(), ["argocd/web"]);
        assert_eq!(planned.updates.keys().collect::<Vec<_>>(), ["argocd/web"]);
        // Whole items under a lean request: the server ignored `fields`; nothing to fetch.
        let mut planner = Planner::new(&empty, &rules, t(0), true);
        for a in &list(&[("web", "production", "Healthy")]).items {
            planner.observe(a);
        }
        let planned = planner.finish();
        assert_eq!((planned.whole, planned.wanted().len()), (1, 0));
    }

    #[test]
    fn vanished_apps_and_failed_cycles() {
        let first = plan_cycle(
            &list(&[("web", "production", "Healthy")]),
            &BTreeMap::new(),
            &rules(1),
            t(0),
            &src("a"),
            &cid("c"),
        );
        let gone = plan_cycle(&list(&[]), &first.next, &rules(1), t(30), &src("a"), &cid("c"));
        assert_eq!(gone.health_checks.len(), 1);
        assert_eq!(gone.health_checks[0].change, HealthChange::Vanished as i32);
        assert!(gone.next.is_empty());
        let failed = failed_cycle(&rules(1), "unauthorized: no session information", t(60), &src("a"), &cid("c"));
        assert_eq!(failed.len(), 2);
        assert!(failed.iter().all(|f| !f.observation_ok && f.failure_reason.contains("unauthorized") && f.total == 0));
    }
}
