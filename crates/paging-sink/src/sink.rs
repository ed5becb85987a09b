//! The fact handler and the deferred-page scanner. Every decision reads and writes the
//! page record with compare-and-set (see `state`), so replicas, restarts and redeliveries
//! page once; the vendors' own dedup on the incident id is the second line.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use sre_bus::{Disposition, FactHandler, KvError, ReceivedFact};
use sre_contracts::domain::v1::{IncidentAcknowledged, IncidentCreated, IncidentResolved, Severity};
use sre_resilience::{Backoff, BreakerConfig, BreakerState, CallError, RateLimit, Upstream, UpstreamConfig};
use sre_runtime::SecretStore;
use tokio_util::sync::CancellationToken;

use crate::config::{Integration, Provider};
use crate::metrics::{ActionLabel, FollowUpOutcome, PageOutcome, PagingMetrics};
use crate::provider::{Destination, FollowUp, Pager};
use crate::routing::{Target, route};
use crate::schedule::{Decision, Policy, decide, due_under};
use crate::state::{PageRecord, PageState, Pages, Read};

/// A claim not renewed for this long, still not paged, was left by a replica that died
/// mid-call. A live holder renews every [`RENEW_CLAIM`] while the vendor works.
const STALE_CLAIM: Duration = Duration::from_secs(10);
/// How often a holder renews its claim while the vendor works.
const RENEW_CLAIM: Duration = Duration::from_secs(2);
/// Wait before retrying when the bus's KV did not answer.
const KV_RETRY: Duration = Duration::from_secs(2);

/// The sink.
pub struct Sink {
    /// The configuration.
    pub config: Integration,
    /// The escalation policy.
    pub policy: Policy,
    /// Page records.
    pub pages: Pages,
    /// The providers.
    pub pagers: BTreeMap<Provider, Arc<dyn Pager>>,
    /// Secrets (routing keys are read at each call, so a rotation needs no restart).
    pub secrets: SecretStore,
    /// Metrics.
    pub metrics: PagingMetrics,
    upstreams: Mutex<HashMap<(Provider, String), Upstream>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").finish_non_exhaustive()
    }
}

/// How a trigger ended.
enum Triggered {
    Paged,
    /// Try again after the delay; the record's revision as the renewals left it.
    Retry(Duration, String, u64),
    Failed(String),
}

fn retry(reason: impl Into<String>) -> Disposition {
    Disposition::Retry { after: KV_RETRY, reason: reason.into() }
}

impl Sink {
    /// A sink over `pages`, paging through `pagers`.
    pub fn new(
        config: Integration,
        policy: Policy,
        pages: Pages,
        pagers: BTreeMap<Provider, Arc<dyn Pager>>,
        secrets: SecretStore,
        metrics: PagingMetrics,
    ) -> Self {
        Self { config, policy, pages, pagers, secrets, metrics, upstreams: Mutex::new(HashMap::new()) }
    }

    /// The resilience layer of one destination: PagerDuty limits each routing key,
    /// Opsgenie the account.
    fn upstream(&self, target: &Target) -> Upstream {
        let key = (target.provider, target.routing_key_ref.clone().unwrap_or_default());
        let mut upstreams = self.upstreams.lock().unwrap_or_else(PoisonError::into_inner);
        upstreams
            .entry(key)
            .or_insert_with(|| {
                let name = target.provider.name();
                let per_minute = match target.provider {
                    Provider::Pagerduty => self.config.pagerduty.as_ref().map_or(120, |p| p.events_per_minute),
                    Provider::Opsgenie => self.config.opsgenie.as_ref().map_or(600, |o| o.requests_per_minute),
                    Provider::Jsm => self.config.jsm.as_ref().map_or(600, |j| j.requests_per_minute),
                };
                Upstream::new(UpstreamConfig {
                    name,
                    backoff: Backoff::default(),
                    breaker: BreakerConfig::default(),
                    rate_limit: std::num::NonZeroU32::new(per_minute).map(RateLimit::per_minute),
                })
            })
            .clone()
    }

    /// Each configured provider's circuit breaker, for the metrics: the worst of its
    /// destinations' (PagerDuty has one per routing key), closed before any call.
    pub fn breaker_states(&self) -> Vec<(&'static str, BreakerState)> {
        let upstreams = self.upstreams.lock().unwrap_or_else(PoisonError::into_inner);
        let rank = |s: BreakerState| match s {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        self.pagers
            .keys()
            .map(|provider| {
                let worst = upstreams
                    .iter()
                    .filter(|((p, _), _)| p == provider)
                    .map(|(_, u)| u.breaker_state())
                    .max_by_key(|s| rank(*s))
                    .unwrap_or(BreakerState::Closed);
                (provider.name(), worst)
            })
            .collect()
    }

    /// Readiness of `provider`: not ready while one of its breakers is open.
    pub fn provider_ready(&self, provider: Provider) -> Result<(), String> {
        let upstreams = self.upstreams.lock().unwrap_or_else(PoisonError::into_inner);
        let open = upstreams.iter().filter(|((p, _), u)| *p == provider && u.breaker_state() == BreakerState::Open);
        match open.count() {
            0 => Ok(()),
            n => Err(format!("circuit open for {n} destination(s): the vendor is failing; facts wait on the bus")),
        }
    }

    fn destination(&self, target: &Target) -> Result<Destination, String> {
        let routing_key = match &target.routing_key_ref {
            Some(r) => {
                let r = sre_runtime::SecretRef::try_from(r.clone()).map_err(|e| format!("routing_key_ref: {e}"))?;
                Some(self.secrets.resolve(&r, "routing_key").map_err(|e| e.to_string())?)
            }
            None => None,
        };
        Ok(Destination { routing_key, team: target.team.clone() })
    }

    fn pager(&self, provider: Provider) -> Result<&Arc<dyn Pager>, String> {
        self.pagers.get(&provider).ok_or_else(|| {
            format!(
                "paging_integration.{} is not configured, and this page was made with it: pages are followed up \
                 on the provider they were made with, so keep its section until its pages have ended",
                provider.name()
            )
        })
    }

    /// Runs `work` (a vendor call made under a claim) while renewing the claim every
    /// [`RENEW_CLAIM`], so other replicas tell it from one a crash left; returns its
    /// output with the record as it now stands.
    async fn renewing<T>(&self, read: Read, work: impl std::future::Future<Output = T>) -> (T, Read) {
        sre_bus::renewing(read, RENEW_CLAIM, work, |read: Read| async move {
            let mut renewed = read.record.clone();
            renewed.updated_at = Timestamp::now();
            match self.pages.update(&renewed, read.revision).await {
                Ok(revision) => Read { record: renewed, revision },
                Err(e) => {
                    tracing::warn!(incident_id = %read.record.incident_id, error = %e, "claim not renewed");
                    read
                }
            }
        })
        .await
    }

    /// Sends the trigger of a claimed record and records the outcome.
    async fn trigger(&self, read: &Read) -> Triggered {
        let mut read = read.clone();
        let record = read.record.clone();
        let record = &record;
        let target = &record.target;
        let Some(incident) = record.incident() else {
            return Triggered::Failed("the page record lost its incident".to_owned());
        };
        let now = Timestamp::now();
        let reference = if self.config.dry_run {
            tracing::info!(incident_id = %incident.incident_id, provider = ?target.provider, route = %target.route,
                title = %incident.title, "dry run: would page");
            "dry-run".to_owned()
        } else {
            let (pager, destination) = match (self.pager(target.provider), self.destination(target)) {
                (Ok(p), Ok(d)) => (p, d),
                (Err(e), _) | (_, Err(e)) => return self.fail(&read, e).await,
            };
            let started = Instant::now();
            let upstream = self.upstream(target);
            let (result, renewed) =
                self.renewing(read.clone(), upstream.call(|| pager.trigger(&destination, &incident))).await;
            read = renewed;
            self.metrics.vendor(target.provider, started.elapsed().as_secs_f64());
            match result {
                Ok(accepted) => accepted.reference,
                Err(CallError::Permanent(e)) => return self.fail(&read, e.to_string()).await,
                Err(e) => {
                    let after = e.retry_in().unwrap_or(KV_RETRY);
                    return Triggered::Retry(after, e.to_string(), read.revision);
                }
            }
        };
        let mut paged = record.moved(PageState::Paged, now);
        paged.reference = Some(reference);
        match self.pages.update(&paged, read.revision).await {
            // A changed revision means another delivery or replica recorded it first.
            Ok(_) | Err(KvError::WrongRevision) => {
                tracing::info!(incident_id = %record.incident_id, provider = ?target.provider, route = %target.route, "paged");
                Triggered::Paged
            }
            // Paged but not recorded: a retry sends the trigger again, which the vendor
            // merges into the open alert (same dedup key).
            Err(e) => Triggered::Retry(KV_RETRY, format!("paged, but the record was not saved: {e}"), read.revision),
        }
    }

    async fn fail(&self, read: &Read, reason: String) -> Triggered {
        let mut failed = read.record.moved(PageState::Failed, Timestamp::now());
        failed.note = Some(reason.clone());
        if let Err(e) = self.pages.update(&failed, read.revision).await {
            tracing::warn!(error = %e, "failed page not recorded");
        }
        tracing::error!(incident_id = %read.record.incident_id, reason = %reason, "the vendor refused the page");
        Triggered::Failed(reason)
    }

    async fn on_created(&self, incident: IncidentCreated) -> Disposition {
        let target = route(&self.config, &incident);
        let provider = target.provider;
        for attempt in 0..3 {
            // The common case is a new incident: try to create its record first and read
            // only when one exists (a repeat, a redelivery, another replica).
            if attempt > 0 {
                match self.pages.get(&incident.incident_id).await {
                    Err(e) => return retry(format!("page records unavailable: {e}")),
                    Ok(Some(read)) if read.record.state == PageState::Claimed => {
                        // A delivery that died mid-call: send again (the vendor dedups).
                        return self.settle_trigger(provider, &read, PageOutcome::Paged).await;
                    }
                    Ok(Some(_)) => {
                        self.metrics.page(provider, PageOutcome::Duplicate);
                        return Disposition::Ack;
                    }
                    Ok(None) => {}
                }
            }
            let now = Timestamp::now();
            let severity = Severity::try_from(incident.severity).unwrap_or(Severity::Unspecified);
            let record = match decide(severity, &self.policy, now) {
                // A repeat of an incident paged earlier cannot be Never: the decision is
                // the same for the same severity, except across business hours, where a
                // second decision creates nothing new either (the record exists).
                Decision::Never => {
                    self.metrics.page(provider, PageOutcome::NotPaged);
                    return Disposition::Ack;
                }
                Decision::PageNow => PageRecord::new(&incident, PageState::Claimed, target.clone(), now),
                Decision::DeferUntil(due) => {
                    let mut r = PageRecord::new(&incident, PageState::Deferred, target.clone(), now);
                    r.due = Some(due);
                    r
                }
            };
            match self.pages.create(&record).await {
                Ok(_) if record.state == PageState::Deferred => {
                    tracing::info!(incident_id = %incident.incident_id, due = ?record.due, "outside business hours: page deferred");
                    self.metrics.page(provider, PageOutcome::Deferred);
                    return Disposition::Ack;
                }
                Ok(revision) => {
                    let read = Read { record, revision };
                    return self.settle_trigger(provider, &read, PageOutcome::Paged).await;
                }
                Err(KvError::AlreadyExists) => continue,
                Err(e) => return retry(format!("page record not created: {e}")),
            }
        }
        retry("page record contended")
    }

    async fn settle_trigger(&self, provider: Provider, read: &Read, success: PageOutcome) -> Disposition {
        match self.trigger(read).await {
            Triggered::Paged => {
                self.metrics.page(provider, if self.config.dry_run { PageOutcome::DryRun } else { success });
                Disposition::Ack
            }
            Triggered::Retry(after, reason, _) => {
                self.metrics.page(provider, PageOutcome::Retried);
                Disposition::Retry { after, reason }
            }
            Triggered::Failed(reason) => {
                self.metrics.page(provider, PageOutcome::Failed);
                Disposition::DeadLetter { reason }
            }
        }
    }

    async fn on_follow_up(&self, incident_id: &str, action: FollowUp, note: &str) -> Disposition {
        let label = match action {
            FollowUp::Acknowledge => ActionLabel::Acknowledge,
            FollowUp::Resolve => ActionLabel::Resolve,
        };
        for _ in 0..3 {
            let read = match self.pages.get(incident_id).await {
                Err(e) => return retry(format!("page records unavailable: {e}")),
                Ok(None) => {
                    // Never paged: below the threshold, or its IncidentCreated has not been
                    // handled yet (after a crash it returns only after ack_wait, behind this
                    // fact). Record that it was acknowledged or resolved first, so that a
                    // later IncidentCreated does not page someone for it.
                    let stub = IncidentCreated { incident_id: incident_id.to_owned(), ..Default::default() };
                    let mut record =
                        PageRecord::new(&stub, PageState::Cancelled, route(&self.config, &stub), Timestamp::now());
                    record.incident = None;
                    record.note = Some(format!("{label:?} before it was paged"));
                    match self.pages.create(&record).await {
                        Ok(_) => {
                            self.metrics.follow_up(self.config.default_provider, label, FollowUpOutcome::NotPaged);
                            return Disposition::Ack;
                        }
                        Err(KvError::AlreadyExists) => continue,
                        Err(e) => return retry(format!("page record not created: {e}")),
                    }
                }
                Ok(Some(read)) => read,
            };
            let provider = read.record.target.provider;
            let done = match action {
                FollowUp::Acknowledge => PageState::Acknowledged,
                FollowUp::Resolve => PageState::Resolved,
            };
            match read.record.state {
                PageState::Deferred => {
                    let mut cancelled = read.record.moved(PageState::Cancelled, Timestamp::now());
                    cancelled.note = Some(format!("{label:?} before business hours: never paged"));
                    match self.pages.update(&cancelled, read.revision).await {
                        Ok(_) => {
                            tracing::info!(%incident_id, "deferred page cancelled");
                            self.metrics.follow_up(provider, label, FollowUpOutcome::Cancelled);
                            return Disposition::Ack;
                        }
                        Err(KvError::WrongRevision) => continue,
                        Err(e) => return retry(format!("page record not updated: {e}")),
                    }
                }
                PageState::Claimed => {
                    // The trigger is in flight, or the delivery sending it died mid-call; its
                    // IncidentCreated comes back only after ack_wait, and waiting for that
                    // could use up this fact's max_deliver (the acknowledge would be lost
                    // and the on-call escalated). Sending the trigger again is safe (the
                    // vendor dedups on the incident id), so finish the page, then follow up.
                    match self.settle_trigger(provider, &read, PageOutcome::Paged).await {
                        Disposition::Ack => continue,
                        other => {
                            self.metrics.follow_up(provider, label, FollowUpOutcome::Retried);
                            return other;
                        }
                    }
                }
                PageState::Paged => {}
                PageState::Acknowledged if action == FollowUp::Resolve => {}
                PageState::Acknowledged | PageState::Resolved | PageState::Cancelled | PageState::Failed => {
                    self.metrics.follow_up(provider, label, FollowUpOutcome::Duplicate);
                    return Disposition::Ack;
                }
            }
            if !self.config.dry_run {
                let target = &read.record.target;
                let (pager, destination) = match (self.pager(provider), self.destination(target)) {
                    (Ok(p), Ok(d)) => (p, d),
                    (Err(e), _) | (_, Err(e)) => return Disposition::DeadLetter { reason: e },
                };
                let started = Instant::now();
                let result =
                    self.upstream(target).call(|| pager.follow_up(&destination, incident_id, action, note)).await;
                self.metrics.vendor(provider, started.elapsed().as_secs_f64());
                match result {
                    Ok(_) => {}
                    Err(CallError::Permanent(e)) => {
                        self.metrics.follow_up(provider, label, FollowUpOutcome::Failed);
                        return Disposition::DeadLetter { reason: e.to_string() };
                    }
                    Err(e) => {
                        self.metrics.follow_up(provider, label, FollowUpOutcome::Retried);
                        return Disposition::Retry { after: e.retry_in().unwrap_or(KV_RETRY), reason: e.to_string() };
                    }
                }
            } else {
                tracing::info!(%incident_id, provider = ?provider, action = ?action, "dry run: would follow up");
            }
            let moved = read.record.moved(done, Timestamp::now());
            match self.pages.update(&moved, read.revision).await {
                Ok(_) | Err(KvError::WrongRevision) => {
                    let outcome = if self.config.dry_run { FollowUpOutcome::DryRun } else { FollowUpOutcome::Sent };
                    self.metrics.follow_up(provider, label, outcome);
                    return Disposition::Ack;
                }
                // Sent but not recorded: sending again is harmless (acknowledge and
                // resolve are idempotent at both vendors).
                Err(e) => return retry(format!("follow-up sent, record not saved: {e}")),
            }
        }
        retry("page record contended")
    }

    /// Fires the deferred pages that are due at `now`; returns how many were paged. Run
    /// by every replica: the claim is a compare-and-set, so one fires each page.
    pub async fn fire_due(&self, now: Timestamp) -> usize {
        let tokens = match self.pages.deferred().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "deferred pages not readable; next scan retries");
                return 0;
            }
        };
        let mut fired = 0;
        let mut waiting = 0;
        // The scan's clock: `now` plus the time its vendor calls have taken so far.
        let started = std::time::Instant::now();
        let clock = || now + jiff::SignedDuration::try_from(started.elapsed()).unwrap_or_default();
        let mut openings = Vec::new();
        for token in tokens {
            let Ok(Some(read)) = self.pages.get_token(&token).await else {
                let _ = self.pages.forget_due(&token).await;
                continue;
            };
            let stale = now.duration_since(read.record.updated_at)
                > jiff::SignedDuration::try_from(STALE_CLAIM).unwrap_or_default();
            let claimed = match read.record.state {
                PageState::Deferred => match self.due_in_force(&read.record) {
                    Some(due) if due <= now => {
                        let claimed = read.record.moved(PageState::Claimed, now);
                        match self.pages.update(&claimed, read.revision).await {
                            Ok(revision) => Read { record: claimed, revision },
                            Err(_) => continue, // another replica claimed it, or the bus is away
                        }
                    }
                    Some(due) => {
                        if read.record.due != Some(due) {
                            // The schedule changed since it was deferred: keep the record true.
                            tracing::info!(incident_id = %read.record.incident_id, was = ?read.record.due, due = %due,
                                "deferred page follows the business hours in force");
                            let mut moved = read.record.clone();
                            moved.due = Some(due);
                            let _ = self.pages.update(&moved, read.revision).await;
                        }
                        openings.extend(self.opening(&read.record));
                        waiting += 1;
                        continue;
                    }
                    None => {
                        let mut cancelled = read.record.moved(PageState::Cancelled, now);
                        cancelled.note = Some("the escalation in force no longer pages this severity".to_owned());
                        if self.pages.update(&cancelled, read.revision).await.is_ok() {
                            tracing::info!(incident_id = %read.record.incident_id,
                                "deferred page dropped: the escalation in force no longer pages it");
                        }
                        continue;
                    }
                },
                PageState::Claimed if stale => read,
                PageState::Claimed => continue,
                _ => {
                    let _ = self.pages.forget_due(&token).await;
                    continue;
                }
            };
            let provider = claimed.record.target.provider;
            match self.trigger(&claimed).await {
                Triggered::Paged => {
                    fired += 1;
                    self.metrics
                        .page(provider, if self.config.dry_run { PageOutcome::DryRun } else { PageOutcome::Fired });
                }
                Triggered::Retry(after, reason, revision) => {
                    // Back to deferred, due again after the vendor's delay, counted from
                    // its answer (the calls may have taken seconds since the scan began).
                    let answered = clock();
                    let mut again = claimed.record.moved(PageState::Deferred, answered);
                    again.due = Some(answered + jiff::SignedDuration::try_from(after).unwrap_or_default());
                    again.not_before = again.due;
                    tracing::warn!(incident_id = %claimed.record.incident_id, reason = %reason, "deferred page not accepted yet");
                    let _ = self.pages.update(&again, revision).await;
                    self.metrics.page(provider, PageOutcome::Retried);
                    openings.extend(self.opening(&again));
                    waiting += 1;
                }
                Triggered::Failed(_) => self.metrics.page(provider, PageOutcome::Failed),
            }
        }
        self.metrics.deferred.set(waiting);
        let end = clock();
        let overdue = openings.into_iter().filter(|o| *o < end).map(|o| end.duration_since(o)).max();
        self.metrics.deferred_overdue.set(overdue.map_or(0, |d| d.as_secs()));
        fired
    }

    /// When business hours opened (or open) for a deferred page, leaving out the vendor's
    /// own delay: a page still waiting after it is overdue.
    fn opening(&self, record: &PageRecord) -> Option<Timestamp> {
        let incident = record.incident()?;
        let severity = Severity::try_from(incident.severity).unwrap_or(Severity::Unspecified);
        due_under(severity, &self.policy, record.deferred_at.unwrap_or(record.updated_at))
    }

    /// When a deferred page is due under the escalation in force (see
    /// [`due_under`]), never before the vendor's own delay; `None` when it no longer pages.
    fn due_in_force(&self, record: &PageRecord) -> Option<Timestamp> {
        let Some(incident) = record.incident() else { return record.due };
        let severity = Severity::try_from(incident.severity).unwrap_or(Severity::Unspecified);
        let due = due_under(severity, &self.policy, record.deferred_at.unwrap_or(record.updated_at))?;
        Some(record.not_before.map_or(due, |nb| nb.max(due)))
    }

    /// Scans for due deferred pages every `deferred_check_interval` (±10%) until `cancel`.
    pub async fn run_deferred(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let wait = self.config.deferred_check_interval.mul_f64(0.9 + rand::random::<f64>() * 0.2);
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            self.fire_due(Timestamp::now()).await;
        }
    }
}

/// The handler the fact consumer runs.
#[derive(Debug, Clone)]
pub struct Handler(pub Arc<Sink>);

impl FactHandler for Handler {
    async fn handle(&self, fact: ReceivedFact) -> Disposition {
        let undecodable = |e: prost::DecodeError| Disposition::DeadLetter { reason: format!("undecodable fact: {e}") };
        if fact.is::<IncidentCreated>() {
            match fact.decode::<IncidentCreated>() {
                Ok(i) => self.0.on_created(i).await,
                Err(e) => undecodable(e),
            }
        } else if fact.is::<IncidentAcknowledged>() {
            match fact.decode::<IncidentAcknowledged>() {
                Ok(a) => {
                    self.0
                        .on_follow_up(&a.incident_id, FollowUp::Acknowledge, &format!("acknowledged by {}", a.by))
                        .await
                }
                Err(e) => undecodable(e),
            }
        } else if fact.is::<IncidentResolved>() {
            match fact.decode::<IncidentResolved>() {
                Ok(r) => {
                    let note = if r.reason.is_empty() { format!("resolved by {}", r.by) } else { r.reason.clone() };
                    self.0.on_follow_up(&r.incident_id, FollowUp::Resolve, &note).await
                }
                Err(e) => undecodable(e),
            }
        } else {
            Disposition::Ack
        }
    }
}
