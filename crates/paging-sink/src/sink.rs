//! The shell around the plan: reads the page record, asks `plan` what to do, does it (a
//! vendor call through the shared resilience layer of the destination's credential, under
//! the claim), writes the outcome with compare-and-set, and asks again when the record
//! moved. Replicas, restarts and redeliveries page once; the vendors' own dedup on the
//! incident id is the second line. Also the deferred-page scan, run by the sender:
//! claiming a due page is a compare-and-set, so one replica fires each even while two
//! briefly think they send; and the reconcile pass ([`Sink::reconcile`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use sre_bus::Disposition;
use sre_contracts::domain::v1::{
    IncidentAnnotated, IncidentCreated, IncidentReopened, IncidentSeverityChanged, Severity,
};
use sre_resilience::CallError;
use sre_runtime::SecretStore;
use sre_sink::records::RETRY;
use sre_sink::{IncidentFact, RecordError, Vendors, claim, notes};

use crate::config::Valid;
use crate::metrics::{ActionLabel, ChangeLabel, ChangeOutcome, FollowUpOutcome, PageOutcome, PagingMetrics};
use crate::plan::{self, OnCreated, OnDue, OnFollowUp, OnNote, OnReopened, OnSeverity};
use crate::provider::{Destination, FollowUp, Pager, Provider};
use crate::routing::{Target, route};
use crate::state::{PageRecord, PageState, Pages, Read};

/// Steps one fact may take before it is retried (finishing a trigger, the follow-up, and
/// a few compare-and-set conflicts).
const MAX_STEPS: usize = 4;

/// The sink.
pub struct Sink {
    config: Arc<Valid>,
    pages: Pages,
    pagers: BTreeMap<Provider, Arc<dyn Pager>>,
    vendors: Arc<Vendors<Provider>>,
    /// Secrets (routing keys are read at each call, so a rotation needs no restart).
    secrets: SecretStore,
    metrics: PagingMetrics,
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

fn kind_text(kind: sre_sink::reconcile::Kind) -> &'static str {
    use sre_sink::reconcile::Kind;
    match kind {
        Kind::Acknowledged => "acknowledged",
        Kind::Resolved | Kind::Closed => "resolved",
        Kind::Reopened => "reopened",
        Kind::Reasserted => "sent again",
    }
}

fn retry(reason: impl Into<String>) -> Disposition {
    Disposition::Retry { after: RETRY, reason: reason.into() }
}

/// A fact that came before its `IncidentCreated` (or its reopen) waits this long.
const WAIT_FOR_RECORD: Duration = Duration::from_secs(5);

fn timestamp(t: Option<&prost_types::Timestamp>) -> Option<Timestamp> {
    t.and_then(|t| Timestamp::new(t.seconds, t.nanos).ok())
}

/// The outcome a change's trigger counts as.
fn change_outcome(disposition: &Disposition, dry_run: bool) -> ChangeOutcome {
    match disposition {
        Disposition::Ack if dry_run => ChangeOutcome::DryRun,
        Disposition::Ack => ChangeOutcome::Paged,
        Disposition::DeadLetter { .. } => ChangeOutcome::Failed,
        Disposition::Retry { .. } => ChangeOutcome::Retried,
    }
}

fn label(action: FollowUp) -> ActionLabel {
    match action {
        FollowUp::Acknowledge => ActionLabel::Acknowledge,
        FollowUp::Resolve => ActionLabel::Resolve,
    }
}

impl Sink {
    /// A sink over `pages`, paging through `pagers`.
    pub fn new(
        config: Arc<Valid>,
        pages: Pages,
        pagers: BTreeMap<Provider, Arc<dyn Pager>>,
        vendors: Arc<Vendors<Provider>>,
        secrets: SecretStore,
        metrics: PagingMetrics,
    ) -> Self {
        Self { config, pages, pagers, vendors, secrets, metrics }
    }

    fn dry_run(&self) -> bool {
        self.config.config.paging_integration.dry_run
    }

    /// The credential a target's calls are made with: PagerDuty limits each routing key,
    /// Opsgenie and JSM the account (one key).
    fn credential(target: &Target) -> &str {
        target.routing_key_ref.as_deref().unwrap_or_default()
    }

    fn destination(&self, target: &Target) -> Result<Destination, String> {
        let routing_key = match &target.routing_key_ref {
            Some(r) => {
                let r = sre_runtime::SecretRef::try_from(r.clone()).map_err(|e| format!("routing_key_ref: {e}"))?;
                Some(self.secrets.resolve(&r, "routing_key").map_err(|e| e.to_string())?)
            }
            None => None,
        };
        Ok(Destination {
            routing_key,
            team: target.team.clone(),
            alert: self.config.alert_fields(target.provider, &target.route, target.team.as_deref()),
        })
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

    /// Sends the trigger of a claimed record, renewing the claim meanwhile, and records
    /// the outcome. `own`: the claim is this delivery's (it made it, or it is its fact's
    /// own claim come back), so a turn handed back is written on it; a follow-up finishing
    /// another delivery's claim leaves the claim as it is.
    async fn trigger(&self, read: &Read, own: bool) -> Triggered {
        let record = &read.record;
        let target = &record.target;
        let Some(incident) = record.incident() else {
            return self.fail(read, "the page record lost its incident".to_owned()).await;
        };
        let mut read = read.clone();
        let reference = if self.dry_run() {
            tracing::info!(incident_id = %incident.incident_id, provider = target.provider.name(), route = %target.route,
                title = %incident.title, "dry run: would page");
            "dry-run".to_owned()
        } else {
            let (pager, destination) = match (self.pager(target.provider), self.destination(target)) {
                (Ok(p), Ok(d)) => (p, d),
                (Err(e), _) | (_, Err(e)) => return self.fail(&read, e).await,
            };
            if read.record.handed_back.is_some() {
                // Claimed again before the trigger leaves: an acknowledge or resolve that
                // cancelled it meanwhile wins, and then nobody is paged.
                let mut again = read.record.clone();
                again.handed_back = None;
                again.updated_at = Timestamp::now();
                // The record as it is (its `due.` marker too): a first claim stays out of
                // the scan's index, which would otherwise take it for a stale claim.
                match self.pages.records().update(&again, read.revision).await {
                    Ok(revision) => read = Read { record: again, revision },
                    // Another delivery or the scan claimed it first, or a follow-up cancelled
                    // it: look again once that claim is finished or stale.
                    Err(e) => {
                        let reason = format!("handed-back page claimed again: {e}");
                        return Triggered::Retry(claim::STALE_CLAIM, reason, read.revision);
                    }
                }
            }
            let call =
                self.vendors.call(target.provider, Self::credential(target), || pager.trigger(&destination, &incident));
            let (result, renewed) = claim::renewing(self.pages.records(), read, call).await;
            read = renewed;
            match result {
                Ok(accepted) => accepted.reference,
                Err(CallError::Permanent(e)) => return self.fail(&read, e.to_string()).await,
                Err(CallError::Deferred { retry_in, why }) if own => {
                    // Nothing left: say so in the record, with when the fact comes back, so a
                    // follow-up meanwhile cancels it and the scan leaves it until then.
                    let mut back = read.record.clone();
                    let returns = jiff::SignedDuration::try_from(retry_in).unwrap_or_default();
                    back.handed_back = Some(Timestamp::now() + returns);
                    let revision = match self.pages.records().update(&back, read.revision).await {
                        Ok(revision) => revision,
                        // Unsaid, a follow-up meanwhile would finish the page before ending it.
                        Err(e) => {
                            tracing::warn!(
                                incident_id = %read.record.incident_id,
                                error = %e,
                                "a page handed back for its turn could not be marked so"
                            );
                            read.revision
                        }
                    };
                    return Triggered::Retry(retry_in, format!("handed back: {why}"), revision);
                }
                Err(e) => return Triggered::Retry(e.retry_in().unwrap_or(RETRY), e.to_string(), read.revision),
            }
        };
        let mut current = read;
        for _ in 0..MAX_STEPS {
            let mut paged = current.record.moved(PageState::Paged, Timestamp::now());
            paged.reference = Some(reference.clone());
            match self.pages.update(&paged, current.revision).await {
                Ok(_) => break,
                // Changed meanwhile: recorded by another delivery or replica (done), or still
                // a claim (another delivery's write on it): record the page on it as it is.
                Err(RecordError::WrongRevision) => match self.pages.get(&current.record.incident_id).await {
                    Ok(Some(now)) if now.record.state == PageState::Claimed => current = now,
                    _ => break,
                },
                // Paged but not recorded: a retry sends the trigger again, which the vendor
                // merges into the open alert (same dedup key).
                Err(e) => {
                    return Triggered::Retry(
                        RETRY,
                        format!("paged, but the record was not saved: {e}"),
                        current.revision,
                    );
                }
            }
        }
        tracing::info!(incident_id = %current.record.incident_id, provider = target.provider.name(), route = %target.route, "paged");
        Triggered::Paged
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

    async fn settle_trigger(&self, provider: Provider, read: &Read, success: PageOutcome) -> Disposition {
        self.settle_trigger_as(provider, read, success, true).await
    }

    /// [`Self::settle_trigger`]; `own` as for [`Self::trigger`].
    async fn settle_trigger_as(&self, provider: Provider, read: &Read, success: PageOutcome, own: bool) -> Disposition {
        match self.trigger(read, own).await {
            Triggered::Paged => {
                self.metrics.page(provider, if self.dry_run() { PageOutcome::DryRun } else { success });
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

    async fn on_created(&self, incident: IncidentCreated) -> Disposition {
        let integration = &self.config.config.paging_integration;
        let target = route(integration, &incident);
        let provider = target.provider;
        let severity = Severity::try_from(incident.severity).unwrap_or(Severity::Unspecified);
        // The common case is a new incident: plan on no record and create it; read only
        // when one exists (a repeat, a redelivery, another replica).
        let mut read: Option<Read> = None;
        for _ in 0..MAX_STEPS {
            let now = Timestamp::now();
            let record = match plan::on_created(severity, &self.config.policy, read.as_ref().map(|r| &r.record), now) {
                OnCreated::NotPaged => PageRecord::new(&incident, PageState::Below, target.clone(), now),
                OnCreated::Duplicate => {
                    // A record made by a follow-up that came first holds no incident: keep
                    // it now, so a reopen or a raised severity can page it.
                    if let Some(stub) = read.as_ref().filter(|r| r.record.incident.is_none()) {
                        let carried = PageRecord::new(&incident, stub.record.state, target.clone(), now).incident;
                        let filled = PageRecord { incident: carried, ..stub.record.clone() };
                        match self.pages.update(&filled, stub.revision).await {
                            Ok(_) => {}
                            Err(RecordError::WrongRevision) => {
                                read = match self.pages.get(&incident.incident_id).await {
                                    Ok(found) => found,
                                    Err(e) => return e.disposition("page record"),
                                };
                                continue;
                            }
                            Err(e) => return e.disposition("page record"),
                        }
                    }
                    self.metrics.page(provider, PageOutcome::Duplicate);
                    return Disposition::Ack;
                }
                OnCreated::Resend { own } => {
                    let Some(read) = &read else { return retry("page record vanished") };
                    return self.settle_trigger_as(read.record.target.provider, read, PageOutcome::Paged, own).await;
                }
                OnCreated::Page => PageRecord::new(&incident, PageState::Claimed, target.clone(), now),
                OnCreated::Defer(due) => {
                    let mut r = PageRecord::new(&incident, PageState::Deferred, target.clone(), now);
                    r.due = Some(due);
                    r
                }
            };
            match self.pages.create(&record).await {
                Ok(_) if record.state == PageState::Below => {
                    self.metrics.page(provider, PageOutcome::NotPaged);
                    return Disposition::Ack;
                }
                Ok(_) if record.state == PageState::Deferred => {
                    tracing::info!(incident_id = %incident.incident_id, due = ?record.due, "outside business hours: page deferred");
                    self.metrics.page(provider, PageOutcome::Deferred);
                    return Disposition::Ack;
                }
                Ok(revision) => {
                    return self.settle_trigger(provider, &Read { record, revision }, PageOutcome::Paged).await;
                }
                Err(RecordError::AlreadyExists) => match self.pages.get(&incident.incident_id).await {
                    Ok(found) => read = found,
                    Err(e) => return e.disposition("page record"),
                },
                Err(e) => return e.disposition("page record"),
            }
        }
        retry("page record contended")
    }

    async fn on_follow_up(&self, incident_id: &str, action: FollowUp, reopen_count: u32, note: &str) -> Disposition {
        let label = label(action);
        for _ in 0..MAX_STEPS {
            let read = match self.pages.get(incident_id).await {
                Ok(read) => read,
                Err(e) => return e.disposition("page record"),
            };
            let step = plan::on_follow_up(action, reopen_count, read.as_ref().map(|r| &r.record));
            if step == OnFollowUp::Wait {
                let provider = read
                    .as_ref()
                    .map_or(self.config.config.paging_integration.default_provider, |r| r.record.target.provider);
                self.metrics.follow_up(provider, label, FollowUpOutcome::Retried);
                return Disposition::Retry {
                    after: WAIT_FOR_RECORD,
                    reason: "about a reopen not handled yet".to_owned(),
                };
            }
            let Some(read) = read else {
                // Never paged: below the threshold, or its IncidentCreated has not been
                // handled yet. Record that it ended first, so a later IncidentCreated
                // pages nobody for it.
                let integration = &self.config.config.paging_integration;
                let stub = IncidentCreated { incident_id: incident_id.to_owned(), ..Default::default() };
                let mut record =
                    PageRecord::new(&stub, PageState::Cancelled, route(integration, &stub), Timestamp::now());
                record.incident = None;
                record.note = Some(format!("{label:?} before it was paged"));
                match self.pages.create(&record).await {
                    Ok(_) => {
                        self.metrics.follow_up(integration.default_provider, label, FollowUpOutcome::NotPaged);
                        return Disposition::Ack;
                    }
                    Err(RecordError::AlreadyExists) => continue,
                    Err(e) => return e.disposition("page record"),
                }
            };
            let provider = read.record.target.provider;
            let moved = match step {
                OnFollowUp::NotPaged | OnFollowUp::Wait => continue,
                OnFollowUp::Duplicate => {
                    self.metrics.follow_up(provider, label, FollowUpOutcome::Duplicate);
                    return Disposition::Ack;
                }
                OnFollowUp::FinishTrigger => {
                    match self.settle_trigger_as(provider, &read, PageOutcome::Paged, false).await {
                        Disposition::Ack => continue,
                        other => {
                            self.metrics.follow_up(provider, label, FollowUpOutcome::Retried);
                            return other;
                        }
                    }
                }
                OnFollowUp::Cancel => {
                    let mut cancelled = read.record.moved(PageState::Cancelled, Timestamp::now());
                    cancelled.note = Some(match read.record.state {
                        PageState::Below => format!("{label:?} below the paging threshold: never paged"),
                        PageState::Claimed => {
                            format!("{label:?} while waiting for its turn within the vendor's rate limit: never paged")
                        }
                        _ => format!("{label:?} before business hours: never paged"),
                    });
                    (cancelled, FollowUpOutcome::Cancelled)
                }
                OnFollowUp::Send => {
                    if let Err((disposition, deferred)) = self.send_once(&read, action, note).await {
                        let outcome = match &disposition {
                            Disposition::DeadLetter { .. } => FollowUpOutcome::Failed,
                            _ => FollowUpOutcome::Retried,
                        };
                        self.metrics.follow_up(provider, label, outcome);
                        if !deferred {
                            self.unsent(&read, action).await;
                        }
                        return disposition;
                    }
                    let outcome = if self.dry_run() { FollowUpOutcome::DryRun } else { FollowUpOutcome::Sent };
                    let mut followed = read.record.moved(plan::followed(action), Timestamp::now());
                    followed.unsent = None;
                    (followed, outcome)
                }
            };
            let (record, outcome) = moved;
            match self.pages.update(&record, read.revision).await {
                Ok(_) => {}
                // After a cancel, someone else wrote first: look again. After a send, the
                // follow-up is done at the vendor either way.
                Err(RecordError::WrongRevision) if outcome == FollowUpOutcome::Cancelled => continue,
                Err(RecordError::WrongRevision) => {}
                // Sent but not recorded: sending again is harmless (acknowledge and
                // resolve are idempotent at both vendors).
                Err(e) => return e.disposition("follow-up done, page record"),
            }
            if outcome == FollowUpOutcome::Cancelled {
                tracing::info!(%incident_id, "deferred page cancelled");
            }
            self.metrics.follow_up(provider, label, outcome);
            return Disposition::Ack;
        }
        retry("page record contended")
    }

    /// Keeps in the record that `action` has not reached the vendor, so the reconciler sends
    /// it again even once its fact is dead-lettered (best effort: a retry of the fact may
    /// send it first).
    async fn unsent(&self, read: &Read, action: FollowUp) {
        if read.record.unsent == Some(action) {
            return;
        }
        let mut next = read.record.clone();
        next.unsent = Some(action);
        if let Err(e) = self.pages.update(&next, read.revision).await {
            tracing::debug!(incident_id = %read.record.incident_id, error = %e, "unsent follow-up not recorded");
        }
    }

    /// One reconcile pass: every page open, ended within a day, or waiting to send a
    /// follow-up is read back from its vendor (through the credential's limit, waiting its
    /// turn) and each difference repaired ([`plan::reconcile`]): what a person did there
    /// is asked of the domain as its lost webhook would have, under a deterministic event
    /// id; what the domain asked and the vendor lacks is sent again. Pages a vendor cannot
    /// read back (PagerDuty without a REST key) are skipped. `Err` when any read or repair
    /// failed: the pass is not complete, the next one tries again.
    pub async fn reconcile(
        &self,
        intents: &sre_bus::IntentPublisher,
        source: &sre_contracts::domain::v1::Source,
        metrics: &sre_sink::reconcile::ReconcileMetrics,
    ) -> Result<sre_sink::reconcile::Pass, String> {
        use sre_sink::reconcile::{Kind, Pass};
        let now = Timestamp::now();
        let records = self.pages.records().list().await.map_err(|e| format!("page records: {e}"))?;
        let mut pass = Pass::default();
        let mut failed: Option<String> = None;
        let records: Vec<Read> = records.into_iter().filter(|r| plan::reconciled(&r.record, now)).collect();
        // Where the vendor lists its pages (PagerDuty), one listing per provider.
        let mut listed: BTreeMap<Provider, std::collections::HashMap<String, crate::provider::VendorPage>> =
            BTreeMap::new();
        let mut unread = std::collections::BTreeSet::new();
        for provider in records.iter().map(|r| r.record.target.provider).collect::<std::collections::BTreeSet<_>>() {
            let Ok(pager) = self.pager(provider).cloned() else { continue };
            let Some(first) = records.iter().find(|r| r.record.target.provider == provider) else { continue };
            if pager.cannot_read().is_some() {
                continue;
            }
            let ids: Vec<String> = records
                .iter()
                .filter(|r| r.record.target.provider == provider)
                .map(|r| r.record.incident_id.clone())
                .collect();
            let all = self
                .vendors
                .call(provider, Self::note_credential(&first.record.target), || {
                    let (pager, ids) = (pager.clone(), ids.clone());
                    async move { pager.pages(&ids).await }
                })
                .await;
            match all {
                Ok(Some(pages)) => {
                    listed.insert(provider, pages);
                }
                Ok(None) => {}
                Err(e) => {
                    failed = Some(format!("{} pages: {e}", provider.name()));
                    unread.insert(provider);
                }
            }
        }
        for read in records {
            let record = &read.record;
            let provider = record.target.provider;
            if unread.contains(&provider) {
                continue;
            }
            let Ok(pager) = self.pager(provider).cloned() else { continue };
            if pager.cannot_read().is_some() {
                continue;
            }
            pass.compared += 1;
            let incident_id = record.incident_id.clone();
            let read_back = match listed.get(&provider) {
                Some(pages) => {
                    Ok(pages.get(&incident_id).cloned().unwrap_or_else(crate::provider::VendorPage::missing))
                }
                None => {
                    self.vendors
                        .call(provider, Self::note_credential(&record.target), || {
                            let (pager, incident_id) = (pager.clone(), incident_id.clone());
                            async move { pager.page(&incident_id).await }
                        })
                        .await
                }
            };
            let page = match read_back {
                Ok(page) => page,
                Err(e) => {
                    failed = Some(format!("{} {incident_id}: {e}", provider.name()));
                    continue;
                }
            };
            if plan::reconcile(record, page.status).is_none() {
                continue;
            }
            // The vendor was read after the record: act only on the record as it is now
            // (a reopen or a follow-up may have moved it meanwhile; the next pass looks again).
            let read = match self.pages.get(&incident_id).await {
                Ok(Some(now)) if now.revision == read.revision => now,
                Ok(_) => continue,
                Err(e) => {
                    failed = Some(format!("page record {incident_id}: {e}"));
                    continue;
                }
            };
            let record = &read.record;
            let Some(repair) = plan::reconcile(record, page.status) else { continue };
            let done = match repair {
                // Two-way sync off for this provider: what people do there stays there.
                plan::Repair::Ask(..) if !self.two_way(provider) => None,
                plan::Repair::Ask(asked, kind) => {
                    let found = sre_sink::reconcile::Found {
                        provider: provider.name(),
                        incident_id: &incident_id,
                        life: record.reopen_count,
                        kind,
                        object_id: &page.id,
                        url: &page.url,
                        by: &page.by,
                    };
                    let (meta, origin) = found.meta(source);
                    let text = format!("found {} in {} by the reconciler", kind_text(kind), provider.title());
                    let envelope = asked.encode(meta, &incident_id, origin, text).map_err(|r| format!("{r:?}"));
                    match found.publish(intents, envelope).await {
                        Ok(new) => new.then_some(kind),
                        Err(e) => {
                            failed = Some(e);
                            None
                        }
                    }
                }
                plan::Repair::Reassert(action) => match self.send(&read, action, "").await {
                    Ok(()) => {
                        let mut followed = read.record.moved(plan::followed(action), Timestamp::now());
                        followed.unsent = None;
                        let _ = self.pages.update(&followed, read.revision).await;
                        tracing::warn!(%incident_id, provider = provider.name(), action = ?action,
                            "the reconciler sent again what the domain asked and the vendor lacked");
                        Some(Kind::Reasserted)
                    }
                    // Refused for good: sending it every pass would not change that. Said
                    // once, and left to the operator (the dead letter has the reason).
                    Err(Disposition::DeadLetter { reason }) => {
                        tracing::error!(%incident_id, provider = provider.name(), action = ?action, %reason,
                            "the vendor refuses the follow-up for good; the reconciler stops sending it");
                        let mut given_up = read.record.clone();
                        given_up.unsent = None;
                        given_up.note = Some(reason);
                        let _ = self.pages.update(&given_up, read.revision).await;
                        None
                    }
                    Err(d) => {
                        failed = Some(format!("{action:?} of {incident_id} not sent again: {d:?}"));
                        None
                    }
                },
                plan::Repair::Settle(action) => {
                    let mut followed = read.record.moved(plan::followed(action), Timestamp::now());
                    followed.unsent = None;
                    let _ = self.pages.update(&followed, read.revision).await;
                    None
                }
            };
            if let Some(kind) = done {
                metrics.repaired(provider.name(), kind);
                pass.repaired += 1;
            }
        }
        failed.map_or(Ok(pass), Err)
    }

    /// Whether `provider`'s receiver is on: what people do there comes back as intents.
    fn two_way(&self, provider: Provider) -> bool {
        let i = &self.config.config.paging_integration;
        match provider {
            Provider::Pagerduty => i.pagerduty.as_ref().and_then(|p| p.webhook.as_ref()).is_some_and(|w| w.enabled),
            Provider::Opsgenie => i.opsgenie.as_ref().and_then(|p| p.webhook.as_ref()).is_some_and(|w| w.enabled),
            Provider::Jsm => i.jsm.as_ref().and_then(|p| p.webhook.as_ref()).is_some_and(|w| w.enabled),
        }
    }

    /// [`Sink::send`], saying whether a failure was only a deferral (the credential's turn
    /// is later: nothing failed, nothing to keep as unsent).
    async fn send_once(&self, read: &Read, action: FollowUp, note: &str) -> Result<(), (Disposition, bool)> {
        let deferred = std::sync::atomic::AtomicBool::new(false);
        let result = self.send_inner(read, action, note, &deferred).await;
        result.map_err(|d| (d, deferred.load(std::sync::atomic::Ordering::Relaxed)))
    }

    /// Sends the acknowledge or resolve where the page went.
    async fn send(&self, read: &Read, action: FollowUp, note: &str) -> Result<(), Disposition> {
        self.send_inner(read, action, note, &std::sync::atomic::AtomicBool::new(false)).await
    }

    async fn send_inner(
        &self,
        read: &Read,
        action: FollowUp,
        note: &str,
        deferred: &std::sync::atomic::AtomicBool,
    ) -> Result<(), Disposition> {
        let target = &read.record.target;
        let incident_id = &read.record.incident_id;
        if self.dry_run() {
            tracing::info!(%incident_id, provider = target.provider.name(), action = ?action, "dry run: would follow up");
            return Ok(());
        }
        let (pager, destination) = match (self.pager(target.provider), self.destination(target)) {
            (Ok(p), Ok(d)) => (p, d),
            (Err(e), _) | (_, Err(e)) => return Err(Disposition::DeadLetter { reason: e }),
        };
        let call = self.vendors.call(target.provider, Self::credential(target), || {
            pager.follow_up(&destination, incident_id, action, note)
        });
        match call.await {
            Ok(_) => Ok(()),
            Err(CallError::Permanent(e)) => Err(Disposition::DeadLetter { reason: e.to_string() }),
            Err(e) => {
                if matches!(e, CallError::Deferred { .. }) {
                    deferred.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Err(Disposition::Retry { after: e.retry_in().unwrap_or(RETRY), reason: e.to_string() })
            }
        }
    }

    /// A reopen: an ended page pages again (now, or at business hours, as a new page
    /// would); a page still open or waiting only learns the new life.
    async fn on_reopened(&self, fact: IncidentReopened) -> Disposition {
        let default_provider = self.config.config.paging_integration.default_provider;
        for _ in 0..MAX_STEPS {
            let read = match self.pages.get(&fact.incident_id).await {
                Ok(read) => read,
                Err(e) => return e.disposition("page record"),
            };
            let now = Timestamp::now();
            let step = plan::on_reopened(fact.reopen_count, &self.config.policy, read.as_ref().map(|r| &r.record), now);
            let Some(read) = read else {
                self.metrics.change(default_provider, ChangeLabel::Reopen, ChangeOutcome::Retried);
                return Disposition::Retry { after: WAIT_FOR_RECORD, reason: "reopened before it was created".into() };
            };
            let provider = read.record.target.provider;
            let mut next = read.record.clone();
            next.reopen_count = fact.reopen_count;
            next.updated_at = now;
            let (next, outcome) = match step {
                OnReopened::Finish => {
                    let disposition = self.settle_trigger(provider, &read, PageOutcome::Paged).await;
                    self.metrics.change(provider, ChangeLabel::Reopen, change_outcome(&disposition, self.dry_run()));
                    return disposition;
                }
                OnReopened::Duplicate | OnReopened::Wait => {
                    self.metrics.change(provider, ChangeLabel::Reopen, ChangeOutcome::Duplicate);
                    return Disposition::Ack;
                }
                OnReopened::Track => (next, ChangeOutcome::Recorded),
                OnReopened::Hold => {
                    let mut held = next.moved(PageState::Below, now);
                    held.note = Some("reopened below the paging threshold".to_owned());
                    (held, ChangeOutcome::Held)
                }
                OnReopened::Defer(due) => (deferred(&next, due, now), ChangeOutcome::Deferred),
                OnReopened::Page => {
                    let mut claimed = next.moved(PageState::Claimed, now);
                    claimed.reference = None;
                    (claimed, ChangeOutcome::Paged)
                }
            };
            match self.pages.update(&next, read.revision).await {
                Ok(revision) if next.state == PageState::Claimed => {
                    tracing::info!(incident_id = %fact.incident_id, reopen = fact.reopen_count, "reopened: paging again");
                    let read = Read { record: next, revision };
                    let disposition = self.settle_trigger(provider, &read, PageOutcome::Paged).await;
                    self.metrics.change(provider, ChangeLabel::Reopen, change_outcome(&disposition, self.dry_run()));
                    return disposition;
                }
                Ok(_) => {
                    self.metrics.change(provider, ChangeLabel::Reopen, outcome);
                    return Disposition::Ack;
                }
                Err(RecordError::WrongRevision) => continue,
                Err(e) => return e.disposition("page record"),
            }
        }
        retry("page record contended")
    }

    /// A severity change: a waiting page (deferred, or below the threshold) follows the
    /// new severity (paged now, deferred, or dropped); an open or ended page only records
    /// it.
    async fn on_severity(&self, fact: IncidentSeverityChanged) -> Disposition {
        let default_provider = self.config.config.paging_integration.default_provider;
        let to = Severity::try_from(fact.to).unwrap_or(Severity::Unspecified);
        let at = timestamp(fact.at.as_ref());
        for _ in 0..MAX_STEPS {
            let read = match self.pages.get(&fact.incident_id).await {
                Ok(read) => read,
                Err(e) => return e.disposition("page record"),
            };
            let now = Timestamp::now();
            let step = plan::on_severity(to, at, &self.config.policy, read.as_ref().map(|r| &r.record), now);
            let Some(read) = read else {
                self.metrics.change(default_provider, ChangeLabel::Severity, ChangeOutcome::Retried);
                return Disposition::Retry { after: WAIT_FOR_RECORD, reason: "changed before it was created".into() };
            };
            let provider = read.record.target.provider;
            let mut next = read.record.with_severity(to, at);
            next.updated_at = now;
            let (next, outcome) = match step {
                OnSeverity::Finish => {
                    let disposition = self.settle_trigger(provider, &read, PageOutcome::Paged).await;
                    self.metrics.change(provider, ChangeLabel::Severity, change_outcome(&disposition, self.dry_run()));
                    return disposition;
                }
                OnSeverity::Stale | OnSeverity::Wait => {
                    self.metrics.change(provider, ChangeLabel::Severity, ChangeOutcome::Duplicate);
                    return Disposition::Ack;
                }
                OnSeverity::Record => (next, ChangeOutcome::Recorded),
                OnSeverity::Drop => {
                    let mut dropped = next.moved(PageState::Below, now);
                    dropped.note = Some(format!(
                        "severity lowered to {} by {}: the deferred page was dropped",
                        sre_contracts::SeverityExt::config_name(to),
                        fact.by
                    ));
                    (dropped, ChangeOutcome::Dropped)
                }
                OnSeverity::Defer(due) => (deferred(&next, due, now), ChangeOutcome::Deferred),
                OnSeverity::PageNow => (next.moved(PageState::Claimed, now), ChangeOutcome::Paged),
            };
            match self.pages.update(&next, read.revision).await {
                Ok(revision) if next.state == PageState::Claimed => {
                    tracing::info!(incident_id = %fact.incident_id, severity = ?to, "severity raised: paging now");
                    let read = Read { record: next, revision };
                    let disposition = self.settle_trigger(provider, &read, PageOutcome::Paged).await;
                    self.metrics.change(provider, ChangeLabel::Severity, change_outcome(&disposition, self.dry_run()));
                    return disposition;
                }
                Ok(_) => {
                    if outcome == ChangeOutcome::Dropped {
                        tracing::info!(incident_id = %fact.incident_id, severity = ?to,
                            "severity lowered below paging: the deferred page was dropped");
                    }
                    self.metrics.change(provider, ChangeLabel::Severity, outcome);
                    return Disposition::Ack;
                }
                Err(RecordError::WrongRevision) => continue,
                Err(e) => return e.disposition("page record"),
            }
        }
        retry("page record contended")
    }

    /// A note: added to the incident's page, with who wrote it and where, unless it was
    /// written on that page. Claimed in the record before the call; a claim a crash left
    /// is recovered by looking for the note's mark on the page first.
    async fn on_annotated(&self, fact: IncidentAnnotated) -> Disposition {
        let default_provider = self.config.config.paging_integration.default_provider;
        let (id, text) = notes::annotated(&fact);
        let origin = fact.origin.clone().unwrap_or_default();
        for _ in 0..MAX_STEPS {
            let read = match self.pages.get(&fact.incident_id).await {
                Ok(read) => read,
                Err(e) => return e.disposition("page record"),
            };
            let provider = read.as_ref().map_or(default_provider, |r| r.record.target.provider);
            let cannot = match self.pager(provider) {
                Ok(pager) => pager.cannot_note(),
                Err(_) => Some("its provider is no longer configured"),
            };
            let step =
                plan::on_annotated(&id, &origin.vendor, read.as_ref().map(|r| &r.record), cannot, Timestamp::now());
            let count = |o| self.metrics.change(provider, ChangeLabel::Note, o);
            let read = match (step, read) {
                (OnNote::Done, _) => {
                    count(ChangeOutcome::Duplicate);
                    return Disposition::Ack;
                }
                (OnNote::Skip(why), _) => {
                    tracing::debug!(incident_id = %fact.incident_id, reason = why, "note not added to the page");
                    count(ChangeOutcome::Skipped);
                    return Disposition::Ack;
                }
                (OnNote::Wait(after), _) => {
                    count(ChangeOutcome::Retried);
                    return Disposition::Retry { after, reason: "the page is not there yet".to_owned() };
                }
                (_, None) => return retry("the page record vanished"),
                (OnNote::Recover, Some(read)) => match self.find_note(&read, &id).await {
                    Ok(true) => match self.note_posted(read, &id).await {
                        Ok(()) => {
                            count(ChangeOutcome::Noted);
                            return Disposition::Ack;
                        }
                        Err(None) => continue,
                        Err(Some(d)) => return d,
                    },
                    Ok(false) => read,
                    Err(disposition) => {
                        count(ChangeOutcome::Retried);
                        return disposition;
                    }
                },
                (OnNote::Post, Some(read)) => read,
            };
            // Claim it, then add it.
            let mut claimed = read.record.clone();
            claimed.notes = notes::claimed(&read.record.notes, &id, Timestamp::now());
            let read = match self.pages.update(&claimed, read.revision).await {
                Ok(revision) => Read { record: claimed, revision },
                Err(RecordError::WrongRevision) => continue,
                Err(e) => return e.disposition("page record"),
            };
            let read = if self.dry_run() {
                tracing::info!(incident_id = %fact.incident_id, provider = provider.name(), "dry run: would add a note");
                read
            } else {
                let pager = match self.pager(provider) {
                    Ok(p) => p.clone(),
                    Err(reason) => return Disposition::DeadLetter { reason },
                };
                let incident_id = fact.incident_id.clone();
                let target = read.record.target.clone();
                let call = self.vendors.call(provider, Self::note_credential(&target), || {
                    let (pager, incident_id, text) = (pager.clone(), incident_id.clone(), text.clone());
                    async move { pager.note(&incident_id, &text).await }
                });
                // (PagerDuty: two REST calls, each with its retries: the claim is renewed.)
                let (answer, read) = self.pages.renewing_note(read, &id, call).await;
                if let Err(e) = answer {
                    let disposition = match e {
                        CallError::Permanent(e) => Disposition::DeadLetter { reason: e.to_string() },
                        e => Disposition::Retry { after: e.retry_in().unwrap_or(RETRY), reason: e.to_string() },
                    };
                    count(change_outcome(&disposition, false));
                    return disposition;
                }
                read
            };
            return match self.note_posted(read, &id).await {
                Ok(()) => {
                    tracing::info!(incident_id = %fact.incident_id, provider = provider.name(), "note added to the page");
                    count(if self.dry_run() { ChangeOutcome::DryRun } else { ChangeOutcome::Noted });
                    Disposition::Ack
                }
                // Posted; the record moved meanwhile: mark it on the record as it is now.
                Err(None) => match self.pages.get(&fact.incident_id).await {
                    Ok(Some(again)) => match self.note_posted(again, &id).await {
                        Ok(()) | Err(None) => Disposition::Ack,
                        Err(Some(d)) => d,
                    },
                    Ok(None) => Disposition::Ack,
                    Err(e) => e.disposition("note added, page record"),
                },
                Err(Some(d)) => d,
            };
        }
        retry("page record contended")
    }

    /// The credential notes are sent with: PagerDuty's REST key, or the account key.
    fn note_credential(target: &Target) -> &str {
        match target.provider {
            Provider::Pagerduty => "rest-api",
            _ => Self::credential(target),
        }
    }

    /// Whether the page already carries note `id` (a call that died may have added it).
    async fn find_note(&self, read: &Read, id: &str) -> Result<bool, Disposition> {
        let provider = read.record.target.provider;
        let pager = self.pager(provider).map_err(|reason| Disposition::DeadLetter { reason })?.clone();
        let incident_id = read.record.incident_id.clone();
        let found = self
            .vendors
            .call(provider, Self::note_credential(&read.record.target), || {
                let (pager, incident_id) = (pager.clone(), incident_id.clone());
                async move { pager.notes(&incident_id).await }
            })
            .await;
        match found {
            Ok(texts) => Ok(texts.iter().any(|t| notes::carries(t, id))),
            Err(CallError::Permanent(e)) => Err(Disposition::DeadLetter { reason: e.to_string() }),
            Err(e) => Err(Disposition::Retry { after: e.retry_in().unwrap_or(RETRY), reason: e.to_string() }),
        }
    }

    /// Marks note `id` posted on `read`; `Err(None)`: the record moved meanwhile.
    async fn note_posted(&self, read: Read, id: &str) -> Result<(), Option<Disposition>> {
        let mut next = read.record.clone();
        next.notes = notes::posted(&read.record.notes, id, Timestamp::now());
        match self.pages.update(&next, read.revision).await {
            Ok(_) => Ok(()),
            Err(RecordError::WrongRevision) => Err(None),
            Err(e) => Err(Some(e.disposition("note added, page record"))),
        }
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
        let policy = &self.config.policy;
        let (mut fired, mut waiting) = (0, 0);
        // The scan's clock: `now` plus the time its vendor calls have taken so far.
        let started = tokio::time::Instant::now();
        let clock = || now + jiff::SignedDuration::try_from(started.elapsed()).unwrap_or_default();
        let mut openings = Vec::new();
        for token in tokens {
            let Ok(Some(read)) = self.pages.get_token(&token).await else {
                let _ = self.pages.forget_due(&token).await;
                continue;
            };
            let claimed = match plan::on_due(&read.record, policy, now) {
                OnDue::Fire => {
                    let claimed = read.record.moved(PageState::Claimed, now);
                    match self.pages.update(&claimed, read.revision).await {
                        Ok(revision) => Read { record: claimed, revision },
                        Err(_) => continue, // another replica claimed it, or the bus is away
                    }
                }
                OnDue::FireAgain => read,
                OnDue::Reschedule(due) => {
                    // The schedule changed since it was deferred: keep the record true.
                    tracing::info!(incident_id = %read.record.incident_id, was = ?read.record.due, due = %due,
                        "deferred page follows the business hours in force");
                    let mut moved = read.record.clone();
                    moved.due = Some(due);
                    let _ = self.pages.update(&moved, read.revision).await;
                    openings.extend(plan::opening(&read.record, policy));
                    waiting += 1;
                    continue;
                }
                OnDue::Wait => {
                    openings.extend(plan::opening(&read.record, policy));
                    waiting += 1;
                    continue;
                }
                OnDue::Drop => {
                    let mut cancelled = read.record.moved(PageState::Cancelled, now);
                    cancelled.note = Some("the escalation in force no longer pages this severity".to_owned());
                    if self.pages.update(&cancelled, read.revision).await.is_ok() {
                        tracing::info!(incident_id = %read.record.incident_id,
                            "deferred page dropped: the escalation in force no longer pages it");
                    }
                    continue;
                }
                OnDue::Skip => continue,
                OnDue::ForgetMarker => {
                    let _ = self.pages.forget_due(&token).await;
                    continue;
                }
            };
            let provider = claimed.record.target.provider;
            match self.trigger(&claimed, true).await {
                Triggered::Paged => {
                    fired += 1;
                    self.metrics.page(provider, if self.dry_run() { PageOutcome::DryRun } else { PageOutcome::Fired });
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
                    openings.extend(plan::opening(&again, policy));
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
}

/// `record` waiting for business hours at `due` (from `now`, if it was not waiting).
fn deferred(record: &PageRecord, due: Timestamp, now: Timestamp) -> PageRecord {
    let mut next = record.moved(PageState::Deferred, now);
    next.due = Some(due);
    next.deferred = true;
    if record.state != PageState::Deferred {
        next.deferred_at = Some(now);
        next.not_before = None;
    }
    next
}

impl sre_sink::Sink for Sink {
    async fn handle(&self, fact: IncidentFact) -> Disposition {
        match fact {
            IncidentFact::Created(incident) => self.on_created(incident).await,
            IncidentFact::Acknowledged(a) => {
                let note = format!("acknowledged by {}", a.by);
                self.on_follow_up(&a.incident_id, FollowUp::Acknowledge, a.reopen_count, &note).await
            }
            IncidentFact::Resolved(r) => {
                let note = if r.reason.is_empty() { format!("resolved by {}", r.by) } else { r.reason.clone() };
                self.on_follow_up(&r.incident_id, FollowUp::Resolve, r.reopen_count, &note).await
            }
            // Closed without a resolve (a person closed the ticket): the page must not stay
            // open, nor a waiting one fire at the opening. After a resolve: nothing.
            IncidentFact::Closed(c) => {
                let note = format!("closed by {}", c.by);
                self.on_follow_up(&c.incident_id, FollowUp::Resolve, c.reopen_count, &note).await
            }
            IncidentFact::Reopened(r) => self.on_reopened(r).await,
            IncidentFact::SeverityChanged(c) => self.on_severity(c).await,
            IncidentFact::Annotated(n) => self.on_annotated(n).await,
        }
    }
}
