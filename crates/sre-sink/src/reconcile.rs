//! The reconciler both sinks run: the safety net of two-way sync. A webhook can be lost
//! for good (GitHub never redelivers, Opsgenie and JSM document no retries, PagerDuty
//! disables a subscription after three dropped deliveries, Jira Cloud gives up after about
//! 30 minutes), and an outbound call can be dead-lettered. So every interval (5 minutes by
//! default) the sender ([`crate::lead`]) compares, for the incidents it holds open or
//! resolved within a day ([`in_scope`]), the vendor's state with its records, and turns
//! each difference into the intent the webhook would have carried, under a deterministic
//! event id ([`event_id`]): a repair published twice is stored once, and once the domain's
//! fact has reached the record the difference is gone, so a webhook that arrives later is
//! an echo. Outbound it only re-asserts what is idempotent (a resolve, an acknowledge, a
//! transition from a non-done status), never a trigger or a create.
//!
//! The sinks' vendor reads and their pure decisions live with them; this module has what
//! is the same: the metrics (a repair means a webhook or a call was lost), the ids, the
//! scope and the job.

use std::time::Duration;

use jiff::Timestamp;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::start::Job;

/// How often a pass runs unless configured.
pub const EVERY: Duration = Duration::from_secs(300);
/// How long after its end an incident is still compared (a reopen, a resolve that did
/// not land).
pub const ENDED_WITHIN: Duration = Duration::from_secs(24 * 3600);

/// `reconcile:` in a sink's section.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileSettings {
    /// Whether the sink reconciles at all.
    pub enabled: bool,
    /// How often a pass runs (on the sender).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self { enabled: true, interval: EVERY }
    }
}

impl ReconcileSettings {
    /// The settings' problem, if any, named under `key` (`paging_integration.reconcile`).
    pub fn check(&self, key: &str) -> Result<(), sre_runtime::ConfigError> {
        if self.interval < Duration::from_secs(1) {
            return Err(sre_runtime::ConfigError::new(format!("{key}.interval"), "must be at least 1s"));
        }
        Ok(())
    }
}

/// What a repair did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
pub enum Kind {
    /// A person acknowledged in the vendor's tool; the webhook was lost.
    Acknowledged,
    /// A person resolved there.
    Resolved,
    /// A person closed there.
    Closed,
    /// A person reopened there.
    Reopened,
    /// What the domain asked was not at the vendor (a dead-lettered resolve): sent again.
    Reasserted,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Acknowledged => "acknowledged",
            Kind::Resolved => "resolved",
            Kind::Closed => "closed",
            Kind::Reopened => "reopened",
            Kind::Reasserted => "reasserted",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RepairLabels {
    provider: &'static str,
    kind: Kind,
}

/// The reconciler's metrics: `<sink>_reconcile_repairs_total{provider,kind}`,
/// `<sink>_reconcile_last_complete_timestamp_seconds`, `<sink>_reconcile_pass_seconds`
/// (the last complete pass), `<sink>_reconcile_incidents` (compared in it).
#[derive(Debug, Clone, Default)]
pub struct ReconcileMetrics {
    repairs: Family<RepairLabels, Counter>,
    last_complete: Gauge,
    pass_seconds: Gauge<f64, AtomicU64>,
    incidents: Gauge,
}

impl ReconcileMetrics {
    /// Registers under `prefix`, each provider's series of every kind at 0 (the alert on
    /// repairs sees a series before the first one).
    pub fn register(&self, r: &mut Registry, prefix: &str, providers: &[&'static str]) {
        for provider in providers {
            for kind in [Kind::Acknowledged, Kind::Resolved, Kind::Closed, Kind::Reopened, Kind::Reasserted] {
                let _ = self.repairs.get_or_create(&RepairLabels { provider, kind });
            }
        }
        r.register(
            format!("{prefix}_reconcile_repairs"),
            "Differences the reconciler repaired: a webhook (or a call) was lost; check the vendor's subscription",
            self.repairs.clone(),
        );
        r.register(
            format!("{prefix}_reconcile_last_complete_timestamp_seconds"),
            "When the last complete reconcile pass ended (Unix seconds)",
            self.last_complete.clone(),
        );
        r.register(
            format!("{prefix}_reconcile_pass_seconds"),
            "How long the last complete pass took",
            self.pass_seconds.clone(),
        );
        r.register(
            format!("{prefix}_reconcile_incidents"),
            "Incidents compared in the last complete pass",
            self.incidents.clone(),
        );
    }

    /// Counts one repair.
    pub fn repaired(&self, provider: &'static str, kind: Kind) {
        self.repairs.get_or_create(&RepairLabels { provider, kind }).inc();
    }
}

/// The event id of a repair: the same difference (provider, incident, life, kind) gives
/// the same id, so its intent is stored once however many passes see it.
pub fn event_id(provider: &str, incident_id: &str, life: u32, kind: Kind) -> String {
    format!("reconcile-{provider}-{}-{life}-{}", crate::records::token(incident_id), kind.as_str())
}

/// The id an intent about a person's change is stored under, by the receiver and the
/// reconciler alike: a change of state (`kind`) is keyed by its content (provider,
/// incident, life, kind), so whichever of the webhook and the reconciler comes second
/// within the intents stream's duplicate window is a duplicate on the bus, even before the
/// domain's fact reaches the record; anything else
/// (a note) by its `event_id`.
pub fn change_id(provider: &str, incident_id: &str, life: u32, kind: Option<Kind>, event_id: &str) -> String {
    kind.map_or_else(|| event_id.to_owned(), |kind| self::event_id(provider, incident_id, life, kind))
}

/// Whether an incident last changed at `updated_at` and `open` (or not) is compared at `now`.
pub fn in_scope(open: bool, updated_at: Timestamp, now: Timestamp) -> bool {
    open || now.duration_since(updated_at) <= jiff::SignedDuration::try_from(ENDED_WITHIN).unwrap_or_default()
}

/// What a repair's intent says about the change it found at the vendor.
#[derive(Debug, Clone, Copy)]
pub struct Found<'a> {
    /// The provider (`pagerduty`, `jira`).
    pub provider: &'static str,
    /// Our incident.
    pub incident_id: &'a str,
    /// Its life (reopens handled so far).
    pub life: u32,
    /// What changed.
    pub kind: Kind,
    /// The vendor's object (PagerDuty's incident, a Jira key, `owner/repo#7`).
    pub object_id: &'a str,
    /// Where a person sees it.
    pub url: &'a str,
    /// Who changed it, when the vendor says.
    pub by: &'a str,
}

impl Found<'_> {
    /// The intent's metadata and origin, keyed by the change ([`event_id`]), as the
    /// receiver keys the same change.
    pub fn meta(
        &self,
        source: &sre_contracts::domain::v1::Source,
    ) -> (Option<sre_contracts::domain::v1::MessageMeta>, Option<sre_contracts::domain::v1::ExternalOrigin>) {
        let id = event_id(self.provider, self.incident_id, self.life, self.kind);
        let meta = crate::receiver::intent_meta(self.provider, &id, &id, source);
        let origin = sre_contracts::domain::v1::ExternalOrigin {
            vendor: self.provider.to_owned(),
            object_id: self.object_id.to_owned(),
            url: self.url.to_owned(),
            event_id: id,
            occurred_at: None,
            actor: (!self.by.is_empty())
                .then(|| sre_contracts::domain::v1::ExternalActor { name: self.by.to_owned(), ..Default::default() }),
        };
        (meta, Some(origin))
    }

    /// Publishes the repair's intent (`envelope`, encoded from [`Found::meta`]): `Ok(true)`
    /// when it is new, `Ok(false)` when the bus already had it (an earlier pass, or the
    /// webhook itself: the domain's fact has not reached the record yet, no new repair).
    pub async fn publish(
        &self,
        intents: &sre_bus::IntentPublisher,
        envelope: Result<sre_bus::Envelope, String>,
    ) -> Result<bool, String> {
        let envelope = envelope?;
        match intents.publish_all(std::slice::from_ref(&envelope), None).await.pop() {
            Some(Ok(published)) if published.duplicate => Ok(false),
            Some(Ok(_)) => {
                tracing::warn!(incident_id = %self.incident_id, provider = self.provider, repaired = ?self.kind,
                    "a person's change found by the reconciler: its webhook was lost");
                Ok(true)
            }
            Some(Err(e)) => Err(format!("intent for {} not stored: {e}", self.incident_id)),
            None => Err(format!("intent for {} not stored", self.incident_id)),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Incidents compared.
    pub compared: u64,
    /// Repairs made.
    pub repaired: u64,
}

/// The reconcile job: `pass` every `every` (jittered), on the sender only. A pass that
/// fails (the records or a vendor away) is logged and tried at the next interval; only a
/// complete pass moves `_last_complete_timestamp_seconds`.
pub fn job<F, Fut>(every: Duration, metrics: ReconcileMetrics, mut pass: F) -> Job
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<Pass, String>> + Send + 'static,
{
    Job::every("reconcile", every, move || {
        let (metrics, run) = (metrics.clone(), pass());
        async move {
            let started = tokio::time::Instant::now();
            match run.await {
                Ok(done) => {
                    metrics.last_complete.set(Timestamp::now().as_second());
                    metrics.pass_seconds.set(started.elapsed().as_secs_f64());
                    metrics.incidents.set(i64::try_from(done.compared).unwrap_or(i64::MAX));
                    if done.repaired > 0 {
                        tracing::warn!(compared = done.compared, repaired = done.repaired,
                            "reconcile repaired differences: a webhook or a call was lost (check the vendor's webhook subscription and its secret)");
                    } else {
                        tracing::debug!(compared = done.compared, "reconcile pass: nothing to repair");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reconcile pass not complete; the next one tries again"),
            }
        }
    })
    .jittered()
    .leader_only()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_same_for_the_same_difference_and_differ_otherwise() {
        let a = event_id("pagerduty", "inc-1", 0, Kind::Acknowledged);
        assert_eq!(a, event_id("pagerduty", "inc-1", 0, Kind::Acknowledged));
        assert_eq!(a, "reconcile-pagerduty-inc-1-0-acknowledged");
        assert_ne!(a, event_id("pagerduty", "inc-1", 1, Kind::Acknowledged), "another life");
        assert_ne!(a, event_id("pagerduty", "inc-1", 0, Kind::Resolved));
        assert_ne!(a, event_id("opsgenie", "inc-1", 0, Kind::Acknowledged));
        assert!(event_id("jira", "id with spaces/and slashes", 0, Kind::Closed).starts_with("reconcile-jira-h-"));
    }

    #[test]
    fn open_incidents_and_those_ended_within_a_day_are_compared() {
        let now: Timestamp = "2026-12-07T12:00:00Z".parse().expect("ts");
        let ago = |h: i64| now - jiff::SignedDuration::from_hours(h);
        for (open, updated, want) in
            [(true, ago(24 * 30), true), (false, ago(1), true), (false, ago(24), true), (false, ago(25), false)]
        {
            assert_eq!(in_scope(open, updated, now), want, "open {open}, updated {updated}");
        }
    }
}
