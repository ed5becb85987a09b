//! The poll loop of one Argo CD server: hold the lease, list, plan, publish, save.
//!
//! Order within a cycle: the intents are published (and acked by JetStream) before the
//! state is saved. A crash in between re-plans the same changes from the same kept state,
//! with the same keys, so the bus stores them once; the reverse order could lose a change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use rand::Rng;
use sre_bus::{Envelope, IntentPublisher};
use sre_contracts::domain::v1::{HealthChange, Source};
use sre_resilience::{CallError, ErrorClass, Retryable, Upstream};
use tokio_util::sync::CancellationToken;

use crate::argocd::{ApplicationList, EventType, WatchEvent};
use crate::client::{ArgoClient, ArgoError};
use crate::cycle::{Change, CycleId, CycleRules, Detail, Planned, Planner, failed_cycle, health_check, plan_cycle};
use crate::metrics::{ChangeLabel, DetailVia, PollOutcome, SyncMetrics};
use crate::observe::Tracked;
use crate::state::{Kept, Lease, SaveError, StateStore};

/// Intents published per batch (each batch waits for its acks).
const BATCH: usize = 1_000;
/// Up to this many changed applications, their detail is read one `GET` each; above it
/// (a first cycle, a fleet-wide change) the cycle is planned again from one whole list as
/// it streams, publishing as it goes: cheaper for Argo CD, and bounded in memory.
pub const DETAIL_GETS: usize = 100;
/// Detail `GET`s in flight at once.
const DETAIL_CONCURRENCY: usize = 4;

/// Health checks published in a cycle, by change, counted once the cycle is stored.
#[derive(Debug, Clone, Copy, Default)]
struct Tally([usize; 3]);

impl Tally {
    fn add(&mut self, changes: &[Change]) {
        for c in changes {
            self.0[match c.emit.change {
                HealthChange::Appeared => 0,
                HealthChange::Vanished => 2,
                _ => 1,
            }] += 1;
        }
    }

    fn total(&self) -> usize {
        self.0.iter().sum()
    }

    fn count(&self, metrics: &SyncMetrics, server: &str) {
        for (n, change) in self.0.iter().zip([ChangeLabel::Appeared, ChangeLabel::Changed, ChangeLabel::Vanished]) {
            for _ in 0..*n {
                metrics.health_check(server, change);
            }
        }
    }
}

/// Why the whole list of an overflowing cycle was not planned and published.
#[derive(Debug)]
enum WholeError {
    /// Argo CD's answer (classified as the list's).
    Argo(ArgoError),
    /// The bus did not store a batch: not Argo CD's fault, not retried against it.
    Bus,
}

impl Retryable for WholeError {
    fn class(&self) -> ErrorClass {
        match self {
            WholeError::Argo(e) => e.class(),
            WholeError::Bus => ErrorClass::Permanent,
        }
    }
}

fn describe_whole(err: &CallError<WholeError>) -> String {
    let argo = |e: &WholeError| match e {
        WholeError::Argo(e) => e.to_string(),
        WholeError::Bus => "the bus did not store the intents".to_owned(),
    };
    match err {
        CallError::Permanent(e) => argo(e),
        CallError::Exhausted { last, attempts, .. } => format!("{} (after {attempts} attempts)", argo(last)),
        CallError::CircuitOpen { retry_in } => {
            format!("circuit open after repeated failures; next try in {retry_in:?}")
        }
        CallError::Deferred { retry_in, why } => format!("{why}: next try in {retry_in:?}"),
    }
}

/// Readiness of each server, by URL: `Err` when its token is refused or its breaker open.
pub type UpstreamStatus = Arc<Mutex<BTreeMap<String, Result<(), String>>>>;

/// Everything one server's loop needs.
pub struct ServerPoller {
    /// Rules of a cycle (the server's URL among them).
    pub rules: CycleRules,
    /// The client.
    pub client: Arc<ArgoClient>,
    /// Also watch the application stream (`mode: watch`); the poll reconciles.
    pub watch: bool,
    /// Backoff, breaker.
    pub upstream: Upstream,
    /// Where the intents go.
    pub publisher: IntentPublisher,
    /// The lease on this server.
    pub lease: Lease,
    /// The kept state of this server.
    pub store: StateStore,
    /// This replica.
    pub source: Source,
    /// Metrics.
    pub metrics: SyncMetrics,
    /// Readiness.
    pub status: UpstreamStatus,
    /// Where the watch task runs (shutdown waits for it).
    pub tasks: tokio_util::task::TaskTracker,
    /// Whether "this server ignores `fields`" has been logged (once per process).
    pub fields_ignored_logged: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for ServerPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerPoller").field("server", &self.rules.server).finish_non_exhaustive()
    }
}

fn correlation_id() -> String {
    format!("argocd-{:016x}", rand::rng().random::<u64>())
}

/// A watch event's identity (it reports no fleet state, so only its correlation id counts).
fn event_id() -> CycleId {
    let correlation_id = correlation_id();
    CycleId { id: correlation_id.clone(), correlation_id }
}

/// The poll interval with up to ±10% jitter, so replicas and servers do not poll in step.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::rng().random_range(0.9..1.1))
}

impl ServerPoller {
    /// Polls until `cancel` fires; a cycle under way is finished first. Releases the lease
    /// on the way out so another replica takes over at its next tick. In watch mode the
    /// leader also follows the application stream and publishes changes as they arrive;
    /// events and cycles run one at a time in this task, against the same kept state.
    pub async fn run(self, cancel: CancellationToken) {
        let server = self.rules.server.clone();
        let mut kept: Option<Kept> = None;
        let (tx, mut events) = tokio::sync::mpsc::channel::<WatchEvent>(256);
        let mut watcher: Option<CancellationToken> = None;
        let mut next_tick = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                Some(event) = events.recv() => {
                    if let Some(k) = kept.as_mut()
                        && !self.apply_event(k, event).await
                    {
                        kept = None;
                    }
                    continue;
                }
                () = tokio::time::sleep_until(next_tick) => {}
            }
            next_tick = tokio::time::Instant::now() + jittered(self.rules.poll_interval);
            match self.lease.acquire().await {
                Ok(Some(cycle)) => {
                    self.metrics.set_leader(&server, true);
                    if kept.is_none() {
                        match self.store.load().await {
                            Ok(k) => {
                                tracing::info!(%server, applications = k.apps.len(), "leading: kept state loaded");
                                kept = Some(k);
                            }
                            Err(e) => tracing::warn!(%server, error = %e, "kept state unreadable; retrying next tick"),
                        }
                    }
                    if let Some(k) = kept.as_mut()
                        && !self.cycle(k, cycle).await
                    {
                        kept = None;
                    }
                }
                Ok(None) => {
                    if kept.take().is_some() {
                        tracing::info!(%server, "another replica holds the lease: standing by");
                    }
                    self.metrics.set_leader(&server, false);
                    self.metrics.poll(&server, PollOutcome::Standby, None);
                    self.set_status(Ok(()));
                }
                Err(e) => {
                    kept = None;
                    self.metrics.set_leader(&server, false);
                    tracing::warn!(%server, error = %e, "lease unavailable: the bus is down; not polling");
                }
            }
            match (&watcher, self.watch && kept.is_some()) {
                (None, true) => {
                    let stop = cancel.child_token();
                    self.tasks.spawn(watch_loop(
                        self.client.clone(),
                        self.upstream.clone(),
                        tx.clone(),
                        stop.clone(),
                        server.clone(),
                    ));
                    watcher = Some(stop);
                }
                (Some(stop), false) => {
                    stop.cancel();
                    watcher = None;
                }
                _ => {}
            }
        }
        if let Some(stop) = watcher {
            stop.cancel();
        }
        if let Err(e) = self.lease.release().await {
            tracing::warn!(%server, error = %e, "lease not released; it expires by itself");
        }
        self.metrics.set_leader(&server, false);
    }

    /// Applies one watch event: the change of one application, planned like a cycle of
    /// one, with the same keys (the next poll then finds nothing new). `false` when this
    /// replica must reload the state.
    async fn apply_event(&self, kept: &mut Kept, event: WatchEvent) -> bool {
        let key = event.application.key();
        let before = kept.apps.get(&key);
        let previous: BTreeMap<String, Tracked> = before.map(|t| (key.clone(), t)).into_iter().collect();
        let items = if event.kind == EventType::Deleted { Vec::new() } else { vec![Box::new(event.application)] };
        let event = event_id();
        let correlation = &event.correlation_id;
        let out =
            plan_cycle(&ApplicationList { items }, &previous, &self.rules, Timestamp::now(), &self.source, &event);
        let after = out.next.get(&key).copied();
        if out.health_checks.is_empty() && after == before {
            return true;
        }
        let envelopes: Vec<Envelope> = out.health_checks.iter().filter_map(|h| Envelope::intent(h).ok()).collect();
        if !self.publish(&envelopes).await {
            tracing::warn!(server = %self.rules.server, app = %key, "watched change not stored; the next poll publishes it");
            return true;
        }
        self.count_changes(&out.health_checks);
        match self.store.save_one(kept, &key, after).await {
            Ok(()) => {
                tracing::info!(server = %self.rules.server, app = %key, correlation_id = %correlation,
                    changes = out.health_checks.len(), "watched change");
                true
            }
            Err(SaveError::Conflict) => false,
            Err(e) => {
                tracing::warn!(server = %self.rules.server, error = %e, "state not saved; the next poll plans it again");
                true
            }
        }
    }

    /// Publishes the health checks of `changes`; `Err` when the bus did not store them all.
    async fn publish_changes(&self, changes: &[Change], now: Timestamp, cycle: &CycleId) -> Result<(), ()> {
        let envelopes: Vec<Envelope> = changes
            .iter()
            .filter_map(|c| health_check(c, &self.rules, now, &self.source, cycle))
            .filter_map(|h| Envelope::intent(&h).ok())
            .collect();
        if self.publish(&envelopes).await { Ok(()) } else { Err(()) }
    }

    /// Reads what the lean list left out for each change (at most `DETAIL_GETS`; more
    /// overflow into a whole list): one `GET` each, a few at a time. A change whose detail
    /// cannot be read is deferred to the next cycle; one deleted since it was listed is
    /// left to the next cycle too, which sees it vanish.
    async fn fill_details(&self, planned: &mut Planned) {
        use futures::StreamExt;
        let server = &self.rules.server;
        let wanted = planned.wanted_count();
        if wanted == 0 {
            return;
        }
        let wanted = planned.wanted();
        let client = &self.client;
        let upstream = &self.upstream;
        let results: Vec<(String, Result<crate::argocd::Application, CallError<ArgoError>>)> =
            futures::stream::iter(wanted)
                .map(|key| async move {
                    let (namespace, name) = key.split_once('/').unwrap_or(("", key.as_str()));
                    let got = upstream.call(|| client.get_application(namespace, name)).await;
                    (key, got)
                })
                .buffer_unordered(DETAIL_CONCURRENCY)
                .collect()
                .await;
        let mut read = 0;
        for (key, got) in results {
            match got {
                Ok(app) => {
                    planned.fill(&key, Detail::of(&app));
                    read += 1;
                }
                Err(CallError::Permanent(ArgoError::Status { status: 404, .. })) => {
                    tracing::debug!(%server, app = %key, "deleted since it was listed");
                }
                Err(e) => tracing::warn!(%server, app = %key, reason = %describe(&e),
                    "detail of a changed application not read; it is published next cycle"),
            }
        }
        self.metrics.details(server, DetailVia::Get, read);
        let deferred = planned.defer_unfilled();
        self.metrics.details(server, DetailVia::Deferred, deferred);
    }

    fn count_changes(&self, checks: &[sre_contracts::domain::v1::RecordHealthCheckRequested]) {
        for h in checks {
            let change = match HealthChange::try_from(h.change) {
                Ok(HealthChange::Appeared) => ChangeLabel::Appeared,
                Ok(HealthChange::Vanished) => ChangeLabel::Vanished,
                _ => ChangeLabel::Changed,
            };
            self.metrics.health_check(&self.rules.server, change);
        }
    }

    fn set_status(&self, status: Result<(), String>) {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).insert(self.rules.server.clone(), status);
    }

    /// One cycle, named `id` by the lease renewal that started it; `false` when this
    /// replica must reload the state (another one wrote it).
    async fn cycle(&self, kept: &mut Kept, id: String) -> bool {
        let server = &self.rules.server;
        let started = tokio::time::Instant::now();
        let cycle = CycleId { id, correlation_id: correlation_id() };
        let correlation = &cycle.correlation_id;
        let now = Timestamp::now();
        let fields = crate::client::lean_list_fields(self.rules.environment_from);
        // Planned as the lean list streams in: each item is compared with the kept state and
        // dropped. A retried list starts a fresh plan.
        let listed = self
            .upstream
            .call(|| async {
                let mut planner = Planner::new(&kept.apps, &self.rules, now, true).with_limit(DETAIL_GETS);
                let stats = self.client.stream_applications(Some(&fields), |app| planner.observe(&app)).await?;
                Ok::<_, ArgoError>((planner.finish(), stats))
            })
            .await;
        let (mut planned, stats) = match listed {
            Ok(listed) => listed,
            Err(err) => {
                let outcome = match err.class() {
                    ErrorClass::Auth => PollOutcome::Unauthorized,
                    _ => PollOutcome::Unreachable,
                };
                let reason = describe(&err);
                tracing::warn!(%server, correlation_id = %correlation, reason = %reason, "poll failed");
                self.set_status(match (&err, outcome) {
                    (_, PollOutcome::Unauthorized) => Err(reason.clone()),
                    (CallError::CircuitOpen { .. }, _) => Err(reason.clone()),
                    _ => Ok(()),
                });
                let fleet = failed_cycle(&self.rules, &reason, now, &self.source, &cycle);
                let envelopes: Vec<Envelope> = fleet.iter().filter_map(|f| Envelope::intent(f).ok()).collect();
                let _stored = self.publish(&envelopes).await;
                self.metrics.poll(server, outcome, Some(started.elapsed().as_secs_f64()));
                return true;
            }
        };
        self.set_status(Ok(()));
        self.metrics.listed(server, stats.items, stats.bytes);
        if planned.whole > 0 {
            self.metrics.fields_ignored(server);
            self.metrics.details(server, DetailVia::Listed, planned.changes.len());
            if !self.fields_ignored_logged.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(%server, applications = stats.items, bytes = stats.bytes,
                    "Argo CD ignored the list's `fields`: every poll downloads whole applications \
                     (Argo CD before v2.10, or a proxy dropping the parameter); polling works, at a higher cost");
            }
        }
        let mut tally = Tally::default();
        if planned.overflowed {
            // Nearly everything changed (a first cycle): plan again from one whole list,
            // publishing as it streams, so no cycle holds every change of a large fleet.
            let whole = self
                .upstream
                .call(|| async {
                    let mut planner =
                        Planner::new(&kept.apps, &self.rules, now, false).expecting(stats.items.max(kept.apps.len()));
                    let mut reader = self.client.open_list(None).await.map_err(WholeError::Argo)?;
                    let mut tally = Tally::default();
                    while let Some(items) = reader.next().await.map_err(WholeError::Argo)? {
                        for app in items {
                            planner.observe(&app);
                        }
                        if planner.found() >= BATCH {
                            let batch = planner.take_changes();
                            self.publish_changes(&batch, now, &cycle).await.map_err(|()| WholeError::Bus)?;
                            tally.add(&batch);
                        }
                    }
                    Ok::<_, WholeError>((planner.finish(), tally, reader.bytes()))
                })
                .await;
            match whole {
                Ok((whole, published, bytes)) => {
                    self.metrics.listed(server, whole.listed, bytes);
                    self.metrics.details(server, DetailVia::List, published.total() + whole.changes.len());
                    (planned, tally) = (whole, published);
                }
                Err(CallError::Permanent(WholeError::Bus)) => {
                    tracing::warn!(%server, correlation_id = %correlation, "intents not stored; the next poll plans them again");
                    self.metrics.poll(server, PollOutcome::BusUnavailable, Some(started.elapsed().as_secs_f64()));
                    return true;
                }
                Err(e) => {
                    tracing::warn!(%server, correlation_id = %correlation, reason = %describe_whole(&e),
                        "whole list for the changed applications' detail not read; the next poll tries again");
                    self.metrics.poll(server, PollOutcome::Unreachable, Some(started.elapsed().as_secs_f64()));
                    return true;
                }
            }
        } else {
            self.fill_details(&mut planned).await;
        }
        let mut stored = true;
        for start in (0..planned.changes.len()).step_by(BATCH) {
            let batch = planned.health_checks(start..start + BATCH, &self.rules, now, &self.source, &cycle);
            let envelopes: Vec<Envelope> = batch.iter().filter_map(|h| Envelope::intent(h).ok()).collect();
            drop(batch);
            stored = stored && self.publish(&envelopes).await;
            if !stored {
                break;
            }
        }
        let fleet = planned.fleet(&self.rules, now, &self.source, &cycle);
        let fleet_envelopes: Vec<Envelope> = fleet.iter().filter_map(|f| Envelope::intent(f).ok()).collect();
        if !(stored && self.publish(&fleet_envelopes).await) {
            tracing::warn!(%server, correlation_id = %correlation, "intents not stored; the next poll plans them again");
            self.metrics.poll(server, PollOutcome::BusUnavailable, Some(started.elapsed().as_secs_f64()));
            return true;
        }
        tally.add(&planned.changes);
        tally.count(&self.metrics, server);
        for f in &fleet {
            if let Some(by) = &f.by_health {
                self.metrics.fleet(server, &f.environment, by);
            }
        }
        let changes = tally.total();
        match self.store.save_updates(kept, std::mem::take(&mut planned.updates)).await {
            Ok(shards) => {
                tracing::info!(%server, correlation_id = %correlation, changes, shards_written = shards,
                    elapsed_ms = started.elapsed().as_millis() as u64, "poll cycle done");
                self.metrics.poll(server, PollOutcome::Ok, Some(started.elapsed().as_secs_f64()));
                true
            }
            Err(SaveError::Conflict) => {
                tracing::warn!(%server, "another replica wrote the state: reloading before the next cycle");
                self.metrics.poll(server, PollOutcome::Standby, None);
                false
            }
            Err(e) => {
                tracing::warn!(%server, error = %e, "state not saved; the next poll plans the same changes again");
                self.metrics.poll(server, PollOutcome::BusUnavailable, Some(started.elapsed().as_secs_f64()));
                false
            }
        }
    }

    /// Publishes in batches; `true` when JetStream stored (or already had) every one.
    async fn publish(&self, envelopes: &[Envelope]) -> bool {
        for batch in envelopes.chunks(BATCH) {
            if self.publisher.publish_all(batch, None).await.iter().any(Result::is_err) {
                return false;
            }
        }
        true
    }
}

/// Follows the application stream until `stop` fires, reconnecting through the shared
/// resilience layer (its breaker is the poll's: a failing Argo CD is not hammered twice).
async fn watch_loop(
    client: Arc<ArgoClient>,
    upstream: Upstream,
    tx: tokio::sync::mpsc::Sender<WatchEvent>,
    stop: CancellationToken,
    server: String,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        let result = tokio::select! {
            () = stop.cancelled() => return,
            r = upstream.call(|| client.watch_applications(&tx)) => r,
        };
        match result {
            Ok(()) => {
                tracing::info!(%server, "watch stream ended; reconnecting");
                delay = Duration::from_secs(1);
            }
            Err(e) => {
                tracing::warn!(%server, reason = %describe(&e), "watch stream failed; the poll carries on");
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// A reason fit for an intent and a log line (Argo CD's message, never the token).
fn describe(err: &CallError<ArgoError>) -> String {
    match err {
        CallError::Permanent(e) if e.class() == ErrorClass::Auth => format!("unauthorized: {e}"),
        CallError::Permanent(e) => e.to_string(),
        CallError::Exhausted { last, attempts, .. } => format!("{last} (after {attempts} attempts)"),
        CallError::CircuitOpen { retry_in } => {
            format!("circuit open after repeated failures; next try in {retry_in:?}")
        }
        CallError::Deferred { retry_in, why } => format!("{why}: next try in {retry_in:?}"),
    }
}
