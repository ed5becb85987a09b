//! The shell around the plan: reads the ticket record, asks `plan` what to do, does that
//! one step (a vendor call through the shared resilience layer, under the claim), writes
//! its outcome with compare-and-set, and asks again. The claim rule is `sre_sink::claim`.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use sre_bus::Disposition;
use sre_contracts::SeverityExt;
use sre_contracts::domain::v1::{IncidentCreated, Severity};
use sre_resilience::{CallError, ErrorClass, Retryable};
use sre_sink::records::RETRY;
use sre_sink::{IncidentFact, RecordError, Vendors, claim};

use crate::config::Valid;
use crate::marker::marker;
use crate::metrics::{Action, Outcome, TicketMetrics};
use crate::plan::{self, CreateFailed, OnCreated, OnUpdate, note};
use crate::provider::{Configured, NewTicket, Provider, TicketRef, Tracker, VendorError, clip};
use crate::receiver::OwnAccounts;
use crate::routing::route;
use crate::state::{Read, TicketRecord, TicketState, Tickets};

/// Title limit applied to every provider (Jira's 255).
const TITLE_MAX: usize = 255;
/// Steps one fact may take before it is retried (a comment, a transition, a recovery, and
/// a few compare-and-set conflicts).
const MAX_STEPS: usize = 8;

/// The sink.
pub struct Sink {
    config: Arc<Valid>,
    tickets: Tickets,
    trackers: BTreeMap<Provider, Configured>,
    vendors: Arc<Vendors<Provider>>,
    metrics: TicketMetrics,
    own_accounts: OwnAccounts,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").finish_non_exhaustive()
    }
}

fn retry(reason: impl Into<String>) -> Disposition {
    Disposition::Retry { after: RETRY, reason: reason.into() }
}

fn vendor_failed(e: CallError<VendorError>) -> Disposition {
    match e {
        CallError::Permanent(e) => Disposition::DeadLetter { reason: e.to_string() },
        e => Disposition::Retry { after: e.retry_in().unwrap_or(RETRY), reason: e.to_string() },
    }
}

impl Sink {
    /// A sink writing through `trackers`.
    pub fn new(
        config: Arc<Valid>,
        tickets: Tickets,
        trackers: BTreeMap<Provider, Configured>,
        vendors: Arc<Vendors<Provider>>,
        metrics: TicketMetrics,
        own_accounts: OwnAccounts,
    ) -> Self {
        Self { config, tickets, trackers, vendors, metrics, own_accounts }
    }

    fn dry_run(&self) -> bool {
        self.config.config.ticketing_integration.dry_run
    }

    /// Checks each provider's credentials now (at start and then periodically), and learns
    /// the account they act as (two-way sync tells the sink's own changes by it).
    pub async fn check_credentials(&self) {
        for (provider, configured) in &self.trackers {
            match configured.tracker.check().await {
                Ok(account) => {
                    if let Some(account) = account {
                        self.own_accounts.learn(*provider, account);
                    }
                    self.vendors.credentials_checked(*provider, Ok(()));
                }
                Err(e) if e.class() == ErrorClass::Auth => {
                    self.vendors.credentials_checked(*provider, Err(format!("credentials refused: {e}")));
                }
                // Unreachable is the breaker's business; keep the last verdict.
                Err(_) => {}
            }
        }
    }

    fn tracker(&self, provider: Provider) -> Result<&Configured, Disposition> {
        self.trackers
            .get(&provider)
            .ok_or_else(|| Disposition::DeadLetter { reason: format!("{} is not configured", provider.name()) })
    }

    /// One call with `provider`'s credential, through its upstream.
    async fn vendor<T, F>(
        &self,
        provider: Provider,
        op: impl Fn(Arc<dyn Tracker>) -> F,
    ) -> Result<T, CallError<VendorError>>
    where
        F: Future<Output = Result<T, VendorError>>,
    {
        let Some(configured) = self.trackers.get(&provider) else {
            return Err(CallError::Permanent(VendorError::Invalid(format!("{} is not configured", provider.name()))));
        };
        let tracker = configured.tracker.clone();
        self.vendors.call(provider, &configured.credential, || op(tracker.clone())).await
    }

    fn new_ticket(&self, incident: &IncidentCreated, project: &str) -> NewTicket {
        NewTicket {
            project: project.to_owned(),
            title: clip(&self.config.title.render(incident), TITLE_MAX),
            body: self.config.body.render(incident),
            marker: marker(&incident.incident_id),
            severity: Severity::try_from(incident.severity).unwrap_or(Severity::Unspecified).config_name().to_owned(),
        }
    }

    async fn on_created(&self, incident: IncidentCreated) -> Disposition {
        let integration = &self.config.config.ticketing_integration;
        let target = route(integration, &incident);
        let provider = target.provider;
        let count = |o| self.metrics.count(provider, Action::Create, o);
        let now = Timestamp::now();
        // The common case is a new incident: claim first, read only when a record exists.
        let claim = TicketRecord::claim(&incident.incident_id, target, now);
        let read = match self.tickets.create(&claim).await {
            Ok(revision) => return self.create_ticket(&incident, Read { record: claim, revision }, false).await,
            Err(RecordError::AlreadyExists) => match self.tickets.get(&incident.incident_id).await {
                Ok(Some(read)) => read,
                Ok(None) => return retry("ticket record vanished; trying again"),
                Err(e) => return e.disposition("ticket record"),
            },
            Err(e) => return e.disposition("ticket record"),
        };
        match plan::on_created(Some(&read.record), now, self.dry_run()) {
            OnCreated::Done => {
                count(Outcome::Duplicate);
                Disposition::Ack
            }
            OnCreated::Wait(after) => {
                count(Outcome::Waiting);
                Disposition::Retry { after, reason: "another delivery is creating the ticket".to_owned() }
            }
            OnCreated::Claim => retry("ticket record contended"),
            OnCreated::TakeOver { search_first } => {
                let read = match self.take_over(&read).await {
                    Ok(read) => read,
                    Err(disposition) => return disposition,
                };
                if !search_first {
                    return self.create_ticket(&incident, read, true).await;
                }
                match self.find_by_marker(read).await {
                    (Ok(Some(found)), read) => self.record_created(&read, found, Outcome::Recovered).await,
                    (Ok(None), read) => self.create_ticket(&incident, read, true).await,
                    (Err(disposition), _) => disposition,
                }
            }
        }
    }

    /// Takes over a stale claim: renewed now, its first create time kept (the ticket a
    /// crashed holder made is no older than that, whatever happened since).
    async fn take_over(&self, read: &Read) -> Result<Read, Disposition> {
        let now = Timestamp::now();
        let mut taken = read.record.clone();
        taken.claimed_at = Some(read.record.claimed_at.unwrap_or(now));
        taken.renewed_at = Some(now);
        taken.updated_at = now;
        match self.tickets.replace(read, taken).await {
            Ok(read) => Ok(read),
            Err(RecordError::WrongRevision) => Err(retry("another delivery took over the claim")),
            Err(e) => Err(e.disposition("ticket record")),
        }
    }

    /// Looks for the ticket a crashed holder may have made, by its marker, renewing the
    /// claim meanwhile. Returns the claim as it now stands.
    async fn find_by_marker(&self, read: Read) -> (Result<Option<TicketRef>, Disposition>, Read) {
        let target = read.record.target.clone();
        let mark = marker(&read.record.incident_id);
        let since = read.record.claimed_at.unwrap_or(read.record.updated_at);
        let search = self.vendor(target.provider, |t| {
            let (project, mark) = (target.project.clone(), mark.clone());
            async move { t.find(&project, &mark, since).await }
        });
        let (result, read) = claim::renewing(&self.tickets, read, search).await;
        let found = match result {
            Ok(found) => {
                if let Some(ticket) = &found {
                    tracing::info!(incident_id = %read.record.incident_id, ticket = %ticket.key,
                        "ticket found by its marker after an interrupted create");
                }
                Ok(found)
            }
            Err(e) => Err(vendor_failed(e)),
        };
        (found, read)
    }

    async fn create_ticket(&self, incident: &IncidentCreated, read: Read, after_recovery: bool) -> Disposition {
        let target = read.record.target.clone();
        let provider = target.provider;
        let ticket = self.new_ticket(incident, &target.project);
        if self.dry_run() {
            tracing::info!(incident_id = %incident.incident_id, provider = provider.name(), project = %target.project,
                title = %ticket.title, "dry run: would create a ticket");
            let dry = TicketRef { key: "dry-run".to_owned(), url: String::new() };
            return self.record_created(&read, dry, Outcome::DryRun).await;
        }
        if let Err(disposition) = self.tracker(provider) {
            return disposition;
        }
        let create = self.vendor(provider, |t| {
            let ticket = ticket.clone();
            async move { t.create(&ticket).await }
        });
        let (result, read) = claim::renewing(&self.tickets, read, create).await;
        let error = match result {
            Ok(created) => {
                tracing::info!(incident_id = %incident.incident_id, ticket = %created.key, provider = provider.name(),
                    recovered_claim = after_recovery, "ticket created");
                return self.record_created(&read, created, Outcome::Done).await;
            }
            Err(e) => e,
        };
        let mut next = read.record.clone();
        next.updated_at = Timestamp::now();
        match plan::create_failed(&error, RETRY) {
            CreateFailed::Refused(reason) => {
                next.state = TicketState::Failed;
                next.note = Some(reason.clone());
                let _ = self.tickets.update(&next, read.revision).await;
                tracing::error!(incident_id = %incident.incident_id, reason = %reason, "the vendor refused the ticket");
                self.metrics.count(provider, Action::Create, Outcome::Failed);
                Disposition::DeadLetter { reason }
            }
            CreateFailed::Released { after, reason } => {
                (next.claimed_at, next.renewed_at) = (None, None);
                let _ = self.tickets.update(&next, read.revision).await;
                self.metrics.count(provider, Action::Create, Outcome::Retried);
                Disposition::Retry { after, reason }
            }
            CreateFailed::Held { after, reason } => {
                self.metrics.count(provider, Action::Create, Outcome::Retried);
                Disposition::Retry { after, reason }
            }
        }
    }

    async fn record_created(&self, read: &Read, ticket: TicketRef, outcome: Outcome) -> Disposition {
        let mut created = read.record.clone();
        created.state = TicketState::Created;
        created.ticket = Some(ticket);
        (created.claimed_at, created.renewed_at) = (None, None);
        created.updated_at = Timestamp::now();
        match self.tickets.update(&created, read.revision).await {
            Ok(_) => {
                self.metrics.count(read.record.target.provider, Action::Create, outcome);
                Disposition::Ack
            }
            // Created but not recorded: the claim stays and the next delivery finds the
            // ticket by its marker instead of creating another.
            Err(e) => retry(format!("ticket created, mapping not saved: {e}")),
        }
    }

    /// An acknowledge, resolve or close: each step of the plan (recovery, comment,
    /// transition) done and recorded in turn, so a redelivery repeats nothing done.
    async fn on_update(&self, incident_id: &str, action: Action, comment: String) -> Disposition {
        let default_provider = self.config.config.ticketing_integration.default_provider;
        let mut acted = false;
        for _ in 0..MAX_STEPS {
            let read = match self.tickets.get(incident_id).await {
                Ok(read) => read,
                Err(e) => return e.disposition("ticket record"),
            };
            let provider = read.as_ref().map_or(default_provider, |r| r.record.target.provider);
            let count = |o| self.metrics.count(provider, action, o);
            let step = plan::on_update(action, read.as_ref().map(|r| &r.record), Timestamp::now(), self.dry_run());
            let Some(read) = read else {
                // No record: the plan can only wait.
                count(Outcome::Waiting);
                return match step {
                    OnUpdate::Wait { after, reason } => Disposition::Retry { after, reason: reason.to_owned() },
                    _ => retry("the ticket does not exist yet"),
                };
            };
            let result = match step {
                OnUpdate::Done => {
                    count(match (acted, self.dry_run()) {
                        (false, _) => Outcome::Duplicate,
                        (true, false) => Outcome::Done,
                        (true, true) => Outcome::DryRun,
                    });
                    return Disposition::Ack;
                }
                OnUpdate::Wait { after, reason } => {
                    count(Outcome::Waiting);
                    return Disposition::Retry { after, reason: reason.to_owned() };
                }
                OnUpdate::Recover => self.recover(read).await,
                OnUpdate::Comment => self.comment(read, action, &comment).await,
                OnUpdate::Transition { to } => self.transition(read, to).await,
            };
            match result {
                Ok(()) => acted = true,
                Err(Stopped::Again) => {}
                Err(Stopped::With(outcome, disposition)) => {
                    count(outcome);
                    return disposition;
                }
            }
        }
        retry("ticket record contended")
    }

    /// Recovers a crashed create: takes the claim over, searches by marker, records what
    /// it found; not found, leaves the claim stale so its IncidentCreated creates at once.
    async fn recover(&self, read: Read) -> Result<(), Stopped> {
        let claim = self.take_over(&read).await.map_err(|d| Stopped::With(Outcome::Retried, d))?;
        match self.find_by_marker(claim).await {
            (Ok(Some(ticket)), claim) => match self.record_created(&claim, ticket, Outcome::Recovered).await {
                Disposition::Ack => Ok(()),
                other => Err(Stopped::With(Outcome::Retried, other)),
            },
            (Ok(None), claim) => {
                let mut stale = claim.record.clone();
                stale.renewed_at = None;
                let _ = self.tickets.update(&stale, claim.revision).await;
                let reason = "the ticket was never created; waiting for its IncidentCreated".to_owned();
                Err(Stopped::With(Outcome::Waiting, Disposition::Retry { after: plan::WAIT_FOR_TICKET, reason }))
            }
            (Err(disposition), _) => Err(Stopped::failed(disposition)),
        }
    }

    async fn comment(&self, read: Read, action: Action, text: &str) -> Result<(), Stopped> {
        let Some(ticket) = read.record.ticket.clone() else {
            return Err(Stopped::With(Outcome::Retried, retry("ticket record without a ticket")));
        };
        let project = read.record.target.project.clone();
        self.vendor(read.record.target.provider, |t| {
            let (project, ticket, text) = (project.clone(), ticket.clone(), text.to_owned());
            async move { t.comment(&project, &ticket, &text).await }
        })
        .await
        .map_err(|e| Stopped::failed(vendor_failed(e)))?;
        let mut noted = read.record.clone();
        match action {
            Action::Acknowledge => noted.acknowledge_commented = true,
            Action::Resolve => noted.resolve_commented = true,
            Action::Close => noted.close_commented = true,
            Action::Create => {}
        }
        self.record(&read, noted, "comment posted").await
    }

    async fn transition(&self, read: Read, to: TicketState) -> Result<(), Stopped> {
        let Some(ticket) = read.record.ticket.clone() else {
            return Err(Stopped::With(Outcome::Retried, retry("ticket record without a ticket")));
        };
        let project = read.record.target.project.clone();
        if self.dry_run() {
            tracing::info!(incident_id = %read.record.incident_id, ticket = %ticket.key, to = ?to,
                "dry run: would update the ticket");
        } else {
            self.vendor(read.record.target.provider, |t| {
                let (project, ticket) = (project.clone(), ticket.clone());
                async move {
                    match to {
                        TicketState::Closed => t.close(&project, &ticket).await,
                        _ => t.resolve(&project, &ticket).await,
                    }
                }
            })
            .await
            .map_err(|e| Stopped::failed(vendor_failed(e)))?;
        }
        let mut moved = read.record.clone();
        moved.state = to;
        self.record(&read, moved, "ticket updated").await
    }

    /// Writes `next` over `read`. A conflict means another delivery wrote first: read
    /// again. Done at the vendor but not recorded: transitions are idempotent there; a
    /// comment may be posted again by the retry (the conflict makes that rare).
    async fn record(&self, read: &Read, mut next: TicketRecord, done: &str) -> Result<(), Stopped> {
        next.updated_at = Timestamp::now();
        match self.tickets.update(&next, read.revision).await {
            Ok(_) => Ok(()),
            Err(RecordError::WrongRevision) => Err(Stopped::Again),
            Err(e) => Err(Stopped::With(Outcome::Retried, retry(format!("{done}, record not saved: {e}")))),
        }
    }
}

/// Why a step of an update did not go on.
enum Stopped {
    /// Another delivery wrote first: read the record again and ask the plan again.
    Again,
    /// Stop with this outcome and disposition.
    With(Outcome, Disposition),
}

impl Stopped {
    fn failed(disposition: Disposition) -> Self {
        let outcome = match &disposition {
            Disposition::DeadLetter { .. } => Outcome::Failed,
            _ => Outcome::Retried,
        };
        Stopped::With(outcome, disposition)
    }
}

impl sre_sink::Sink for Sink {
    async fn handle(&self, fact: IncidentFact) -> Disposition {
        match fact {
            IncidentFact::Created(incident) => self.on_created(incident).await,
            IncidentFact::Acknowledged(_) if !self.config.config.ticketing_integration.comment_acknowledged => {
                Disposition::Ack
            }
            IncidentFact::Acknowledged(a) => {
                self.on_update(&a.incident_id, Action::Acknowledge, note("acknowledged", &a.by, "")).await
            }
            IncidentFact::Resolved(r) => {
                self.on_update(&r.incident_id, Action::Resolve, note("resolved", &r.by, &r.reason)).await
            }
            IncidentFact::Closed(c) => {
                self.on_update(&c.incident_id, Action::Close, note("closed", &c.by, &c.reason)).await
            }
            // Not consumed (the consumer is filtered to the facts above).
            IncidentFact::Reopened(_) | IncidentFact::SeverityChanged(_) | IncidentFact::Annotated(_) => {
                Disposition::Ack
            }
        }
    }
}
