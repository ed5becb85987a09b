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

use crate::argocd::{ApplicationList, environment_of};
use crate::config::EnvironmentFrom;
use crate::core::{AppStatus, Hysteresis, Observed, Tracked, fleet_counts, step};

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

/// Runs one cycle over a successfully read list. `cycle` identifies this cycle on the bus
/// (see the module header); watch events, which report no fleet state, pass any.
pub fn plan_cycle(
    list: &ApplicationList,
    previous: &BTreeMap<String, Tracked>,
    rules: &CycleRules,
    now: Timestamp,
    source: &Source,
    cycle: &CycleId,
) -> CycleOutput {
    let correlation_id = cycle.correlation_id.as_str();
    // The applications of the configured environments, by key.
    let mut seen: BTreeMap<String, (&crate::argocd::Application, String)> = BTreeMap::new();
    for app in &list.items {
        if let Some(env) = environment_of(app, rules.environment_from, &rules.environment_label)
            && rules.reports(&env)
        {
            seen.insert(app.key(), (app, env));
        }
    }
    let mut out = CycleOutput::default();
    let keys: std::collections::BTreeSet<&String> = previous.keys().chain(seen.keys()).collect();
    for key in keys {
        let observed = seen.get(key);
        let before = previous.get(key).copied();
        let (next, emit) = step(before, observed.map(|(a, _)| a.app_status()), rules.hysteresis, now);
        let incarnation = match observed {
            Some((a, _)) if !a.metadata.uid.is_empty() => fnv1a(a.metadata.uid.as_bytes()),
            _ => before.map_or(0, |t| t.incarnation),
        };
        if let Some(t) = next {
            out.next.insert(key.clone(), Tracked { incarnation, ..t });
        }
        let Some(e) = emit else { continue };
        let (app, environment) = match observed {
            Some((a, env)) => (Some(*a), env.clone()),
            None => (None, String::new()),
        };
        let ordinal = before.map_or(0, |t| t.changes).saturating_add(1);
        let id = derive_key(
            "argocd-health",
            &[
                &rules.server,
                key,
                &format!("{incarnation:016x}"),
                &ordinal.to_string(),
                e.change.as_str_name(),
                &status_str(e.previous),
                &status_str(e.current),
            ],
        );
        out.health_checks.push(RecordHealthCheckRequested {
            meta: meta(id, correlation_id, source, now),
            environment,
            argocd_server: rules.server.clone(),
            app: key.clone(),
            project: app.map(|a| a.spec.project.clone()).unwrap_or_default(),
            change: e.change as i32,
            previous_health: e.previous.map_or(0, |s| s.health.to_proto() as i32),
            health: e.current.map_or(0, |s| s.health.to_proto() as i32),
            previous_sync: e.previous.map_or(0, |s| s.sync.to_proto() as i32),
            sync: e.current.map_or(0, |s| s.sync.to_proto() as i32),
            message: app.map(|a| a.status.health.message.clone()).unwrap_or_default(),
            revision: app.map(|a| a.status.sync.revision.clone()).unwrap_or_default(),
            reconciled_at: app
                .and_then(|a| a.status.reconciled_at.as_deref())
                .and_then(|r| r.parse::<Timestamp>().ok())
                .map(ts),
            observed_at: Some(ts(e.since)),
        });
    }
    let observed: Vec<Observed> = seen
        .iter()
        .map(|(key, (app, env))| Observed {
            app: key,
            environment: env,
            status: app.app_status(),
            message: &app.status.health.message,
        })
        .collect();
    let environments: Vec<String> = if rules.environments.is_empty() {
        let seen: std::collections::BTreeSet<&str> = observed.iter().map(|o| o.environment).collect();
        seen.into_iter().map(str::to_owned).collect()
    } else {
        rules.environments.clone()
    };
    for (environment, counts) in fleet_counts(&environments, &observed) {
        let id = derive_key("argocd-fleet", &[&rules.server, &environment, &cycle.id]);
        out.fleet.push(RecordFleetStateRequested {
            meta: meta(id, correlation_id, source, now),
            environment,
            argocd_server: rules.server.clone(),
            observed_at: Some(ts(now)),
            observation_ok: true,
            failure_reason: String::new(),
            by_health: Some(counts.by_health),
            by_sync: Some(counts.by_sync),
            total: counts.total,
            unhealthy: counts.unhealthy,
        });
    }
    out
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
