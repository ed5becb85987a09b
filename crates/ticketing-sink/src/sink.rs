//! The shell around the plan: reads the ticket record, asks `plan` what to do, does that
//! one step (a vendor call through the shared resilience layer, under the claim), writes
//! its outcome with compare-and-set, and asks again. The claim rule is `sre_sink::claim`.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use sre_bus::Disposition;
use sre_contracts::SeverityExt;
use sre_contracts::domain::v1::{
    IncidentAnnotated, IncidentCreated, IncidentReopened, IncidentSeverityChanged, Severity,
};
use sre_resilience::{CallError, ErrorClass, Retryable};
use sre_sink::records::RETRY;
use sre_sink::{IncidentFact, RecordError, Vendors, claim, limits, notes};

use crate::config::Valid;
use crate::lives::{self, OnFlush, OnNote, OnReopened, OnSeverity, Reopening};
use crate::marker::marker;
use crate::metrics::{Action, Outcome, TicketMetrics};
use crate::plan::{self, CreateFailed, OnCreated, OnUpdate, note};
use crate::provider::{Configured, NewTicket, Provider, TicketRef, Tracker, VendorError, clip};
use crate::receiver::OwnAccounts;
use crate::routing::route;
use crate::state::{Draft, Pending, Read, TicketRecord, TicketState, Tickets};

/// Title limit applied to every provider (Jira's 255).
const TITLE_MAX: usize = 255;
/// One comment's text at most (Jira takes 32,767 characters, GitHub 65,536).
const COMMENT_MAX: usize = 32_000;
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
                    // Jira's create screens and GitHub's push access, before the first
                    // incident needs them. When the vendor cannot be asked now, the last
                    // verdict stands (the breaker tells of an outage).
                    match crate::screens::problems(&self.config, *provider, configured.tracker.as_ref()).await {
                        Ok(problems) if problems.is_empty() => self.vendors.credentials_checked(*provider, Ok(())),
                        Ok(problems) => self.vendors.credentials_checked(
                            *provider,
                            Err(format!("tickets would fail: {}", problems.join("; "))),
                        ),
                        Err(e) if e.class() == ErrorClass::Auth => {
                            self.vendors.credentials_checked(*provider, Err(format!("credentials refused: {e}")))
                        }
                        Err(_) => {}
                    }
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

    fn new_ticket(&self, incident: &IncidentCreated, target: &crate::routing::Target) -> NewTicket {
        NewTicket {
            fields: self.config.fields(target.provider, &target.route).render(incident, self.jira_deployment()),
            project: target.project.clone(),
            title: clip(&self.config.title.render(incident), TITLE_MAX),
            // Cut to what Jira takes (and what the record keeps as the ticket's draft).
            body: limits::fit(&self.config.body.render(incident), limits::BODY_MAX).into_owned(),
            marker: marker(&incident.incident_id),
            severity: Severity::try_from(incident.severity).unwrap_or(Severity::Unspecified).config_name().to_owned(),
            follows: None,
        }
    }

    /// The ticket a reopened incident gets after the window: like its first, linked to
    /// the one it follows.
    fn follow_up_ticket(&self, record: &TicketRecord, draft: &Draft, follows: TicketRef) -> NewTicket {
        NewTicket {
            project: record.target.project.clone(),
            title: draft.title.clone(),
            body: format!("{}\n\nThe incident was reopened after {} had ended.", draft.body, follows.key),
            marker: marker(&record.incident_id),
            severity: draft.severity.clone(),
            follows: Some(follows),
            fields: draft.fields.clone(),
        }
    }

    /// Jira's deployment (what user fields and rich text look like); Cloud without Jira.
    fn jira_deployment(&self) -> crate::provider::jira::Deployment {
        self.config
            .config
            .ticketing_integration
            .jira
            .as_ref()
            .map_or(crate::provider::jira::Deployment::Cloud, crate::config::Jira::deployment)
    }

    async fn on_created(&self, incident: IncidentCreated) -> Disposition {
        let integration = &self.config.config.ticketing_integration;
        let target = route(integration, &incident);
        let provider = target.provider;
        let count = |o| self.metrics.count(provider, Action::Create, o);
        let now = Timestamp::now();
        // The common case is a new incident: claim first, read only when a record exists.
        let ticket = self.new_ticket(&incident, &target);
        let context =
            self.config.fields(target.provider, &target.route).syncs().then(|| crate::fields::Context::of(&incident));
        let mut claim = TicketRecord::claim(&incident.incident_id, target, now);
        claim.draft = Some(Draft {
            title: ticket.title.clone(),
            body: ticket.body.clone(),
            severity: ticket.severity.clone(),
            fields: ticket.fields.clone(),
            context,
        });
        let read = match self.tickets.create(&claim).await {
            Ok(revision) => return self.create_ticket(ticket, Read { record: claim, revision }, false).await,
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
                let ticket = match (&read.record.draft, read.record.earlier.last()) {
                    // The claim of a reopened incident's new ticket: made from its draft.
                    (Some(draft), Some(follows)) => self.follow_up_ticket(&read.record, draft, follows.clone()),
                    _ => NewTicket { project: read.record.target.project.clone(), ..ticket },
                };
                self.take_over_and_create(read, ticket, search_first).await
            }
        }
    }

    /// Takes over a stale claim and finishes the create it stands for: the ticket found by
    /// its marker when a call may have made it, else created.
    async fn take_over_and_create(&self, read: Read, ticket: NewTicket, search_first: bool) -> Disposition {
        let read = match self.take_over(&read).await {
            Ok(read) => read,
            Err(disposition) => return disposition,
        };
        if !search_first {
            return self.create_ticket(ticket, read, true).await;
        }
        match self.find_by_marker(read).await {
            (Ok(Some(found)), read) => self.record_created(&read, found, Outcome::Recovered).await,
            (Ok(None), read) => self.create_ticket(ticket, read, true).await,
            (Err(disposition), _) => disposition,
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
        let earlier: Vec<String> = read.record.earlier.iter().map(|t| t.key.clone()).collect();
        let search = self.vendor(target.provider, |t| {
            let (project, mark, earlier) = (target.project.clone(), mark.clone(), earlier.clone());
            async move { t.find(&project, &mark, since, &earlier).await }
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

    async fn create_ticket(&self, ticket: NewTicket, read: Read, after_recovery: bool) -> Disposition {
        let target = read.record.target.clone();
        let provider = target.provider;
        let incident_id = read.record.incident_id.clone();
        if self.dry_run() {
            tracing::info!(incident_id = %incident_id, provider = provider.name(), project = %target.project,
                title = %ticket.title, "dry run: would create a ticket");
            let dry = TicketRef { key: "dry-run".to_owned(), ..TicketRef::default() };
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
                tracing::info!(incident_id = %incident_id, ticket = %created.key, provider = provider.name(),
                    recovered_claim = after_recovery, follows = ?ticket.follows.as_ref().map(|t| &t.key), "ticket created");
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
                tracing::error!(incident_id = %incident_id, reason = %reason, "the vendor refused the ticket");
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
    async fn on_update(&self, incident_id: &str, action: Action, reopen_count: u32, comment: String) -> Disposition {
        let default_provider = self.config.config.ticketing_integration.default_provider;
        let mut acted = false;
        for _ in 0..MAX_STEPS {
            let read = match self.tickets.get(incident_id).await {
                Ok(read) => read,
                Err(e) => return e.disposition("ticket record"),
            };
            let provider = read.as_ref().map_or(default_provider, |r| r.record.target.provider);
            let count = |o| self.metrics.count(provider, action, o);
            let now = Timestamp::now();
            let step = plan::on_update(action, reopen_count, read.as_ref().map(|r| &r.record), now, self.dry_run());
            if let (OnUpdate::Comment | OnUpdate::Transition { .. }, Some(read)) = (&step, &read)
                && let Some(after) = self.write_wait(&read.record, now)
            {
                count(Outcome::Waiting);
                return Disposition::Retry { after, reason: "writes to one ticket are spaced".to_owned() };
            }
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
        noted.last_write_at = Some(Timestamp::now());
        match action {
            Action::Acknowledge => noted.acknowledge_commented = true,
            Action::Resolve => noted.resolve_commented = true,
            Action::Close => noted.close_commented = true,
            Action::Create | Action::Reopen | Action::Severity | Action::Note => {}
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
            let sent = self
                .vendor(read.record.target.provider, |t| {
                    let (project, ticket) = (project.clone(), ticket.clone());
                    async move {
                        match to {
                            TicketState::Closed => t.close(&project, &ticket).await,
                            _ => t.resolve(&project, &ticket).await,
                        }
                    }
                })
                .await;
            if let Err(e) = sent {
                // Kept in the record, so the reconciler sends it again even once the fact
                // is dead-lettered (not for a deferral: nothing failed, its turn is later).
                if read.record.unsent != Some(to) && !matches!(e, CallError::Deferred { .. }) {
                    let mut unsent = read.record.clone();
                    unsent.unsent = Some(to);
                    let _ = self.tickets.update(&unsent, read.revision).await;
                }
                return Err(Stopped::failed(vendor_failed(e)));
            }
        }
        let mut moved = read.record.clone();
        moved.state = to;
        moved.unsent = None;
        let now = Timestamp::now();
        moved.last_write_at = Some(now);
        moved.ended_at = Some(now);
        self.record(&read, moved, "ticket updated").await
    }

    /// One reconcile pass: every ticket open, waiting to be ended or ended within a day is
    /// read back from its tracker (Jira by key, fifty a search; GitHub the issues updated
    /// since `since`, conditionally), each through its credential's limit, and each
    /// difference repaired ([`crate::reconcile::reconcile`]): a person's change asked of the
    /// domain under a deterministic event id, an end the domain asked for and the tracker
    /// lacks sent again. `Err` when a read or a repair failed: the next pass tries again.
    pub async fn reconcile(
        &self,
        intents: &sre_bus::IntentPublisher,
        source: &sre_contracts::domain::v1::Source,
        metrics: &sre_sink::reconcile::ReconcileMetrics,
        since: Timestamp,
    ) -> Result<sre_sink::reconcile::Pass, String> {
        use crate::reconcile::{Mapping, Repair, reconcile, reconciled};
        use sre_sink::reconcile::{Kind, Pass};
        let now = Timestamp::now();
        let records = self.tickets.list().await.map_err(|e| format!("ticket records: {e}"))?;
        let mut groups: BTreeMap<(Provider, String), Vec<Read>> = BTreeMap::new();
        for read in records.into_iter().filter(|r| reconciled(&r.record, now)) {
            let key = (read.record.target.provider, read.record.target.project.clone());
            groups.entry(key).or_default().push(read);
        }
        let integration = &self.config.config.ticketing_integration;
        let mut pass = Pass::default();
        let mut failed: Option<String> = None;
        for ((provider, project), reads) in groups {
            let mapping = match provider {
                Provider::Jira => {
                    integration.jira.as_ref().and_then(|j| j.webhook.as_ref()).filter(|w| w.enabled).map(Mapping::Jira)
                }
                Provider::Github => integration
                    .github
                    .as_ref()
                    .and_then(|g| g.webhook.as_ref())
                    .filter(|w| w.enabled)
                    .map(Mapping::Github),
            }
            .unwrap_or(Mapping::Off);
            let held: Vec<TicketRef> = reads.iter().filter_map(|r| r.record.ticket.clone()).collect();
            pass.compared += held.len() as u64;
            let listed = self
                .vendor(provider, |t| {
                    let (project, held) = (project.clone(), held.clone());
                    async move { t.tickets(&project, &held, since).await }
                })
                .await;
            let tickets: BTreeMap<String, crate::provider::VendorTicket> = match listed {
                Ok(found) => found.into_iter().map(|t| (t.key.clone(), t)).collect(),
                Err(e) => {
                    failed = Some(format!("{} {project}: {e}", provider.name()));
                    continue;
                }
            };
            for read in reads {
                let record = &read.record;
                let Some(listed) = record.ticket.as_ref().and_then(|t| tickets.get(&t.key)) else { continue };
                if reconcile(record, listed, mapping).is_none() {
                    continue;
                }
                // A difference: confirmed on the ticket itself before acting (Jira Cloud's
                // search lags behind writes, and shows a ticket the sink just moved as it was).
                let confirmed = self
                    .vendor(provider, |t| {
                        let (project, key) = (project.clone(), listed.key.clone());
                        async move { t.ticket(&project, &key).await }
                    })
                    .await;
                let ticket = match confirmed {
                    Ok(Some(ticket)) => ticket,
                    Ok(None) => continue,
                    Err(e) => {
                        failed = Some(format!("{} {}: {e}", provider.name(), listed.key));
                        continue;
                    }
                };
                let ticket = &ticket;
                let incident_id = record.incident_id.clone();
                // The tracker was read after the record: act only on the record as it is now
                // (a reopen or an end may have moved it meanwhile; the next pass looks again).
                let read = match self.tickets.get(&incident_id).await {
                    Ok(Some(now)) if now.revision == read.revision => now,
                    Ok(_) => continue,
                    Err(e) => {
                        failed = Some(format!("ticket record {incident_id}: {e}"));
                        continue;
                    }
                };
                let record = &read.record;
                let done = match reconcile(record, ticket, mapping) {
                    None => None,
                    Some(Repair::Ask(asked, kind)) => {
                        let url = record.ticket.as_ref().map(|t| t.url.clone()).unwrap_or_default();
                        let found = sre_sink::reconcile::Found {
                            provider: provider.name(),
                            incident_id: &incident_id,
                            life: record.reopen_count,
                            kind,
                            object_id: &ticket.key,
                            url: &url,
                            by: "",
                        };
                        let (meta, origin) = found.meta(source);
                        let text = if ticket.resolution.is_empty() {
                            ticket.status.clone()
                        } else {
                            ticket.resolution.clone()
                        };
                        let envelope = crate::receiver::encode(asked, meta, &incident_id, origin, text)
                            .map_err(|e| format!("{e:?}"));
                        match found.publish(intents, envelope).await {
                            Ok(new) => new.then_some(kind),
                            Err(e) => {
                                failed = Some(e);
                                None
                            }
                        }
                    }
                    Some(Repair::Reassert(to)) => match self.transition(read.clone(), to).await {
                        Ok(()) => {
                            tracing::warn!(%incident_id, provider = provider.name(), to = ?to,
                                "the reconciler sent again what the domain asked and the tracker lacked");
                            Some(Kind::Reasserted)
                        }
                        // Refused for good: sending it every pass would not change that.
                        Err(Stopped::With(_, Disposition::DeadLetter { reason })) => {
                            tracing::error!(%incident_id, provider = provider.name(), to = ?to, %reason,
                                "the tracker refuses the end for good; the reconciler stops sending it");
                            if let Ok(Some(now)) = self.tickets.get(&incident_id).await {
                                let mut given_up = now.record.clone();
                                given_up.unsent = None;
                                given_up.note = Some(reason);
                                let _ = self.tickets.update(&given_up, now.revision).await;
                            }
                            None
                        }
                        Err(_) => {
                            failed = Some(format!("{to:?} of {incident_id} not sent again"));
                            None
                        }
                    },
                    Some(Repair::Settle(to)) => {
                        let mut settled = record.clone();
                        settled.state = to;
                        settled.unsent = None;
                        settled.ended_at = settled.ended_at.or(Some(now));
                        let _ = self.record(&read, settled, "settled").await;
                        None
                    }
                };
                if let Some(kind) = done {
                    metrics.repaired(provider.name(), kind);
                    pass.repaired += 1;
                }
            }
        }
        failed.map_or(Ok(pass), Err)
    }

    /// How long a write to this ticket must still wait (writes to one ticket are spaced).
    fn write_wait(&self, record: &TicketRecord, now: Timestamp) -> Option<std::time::Duration> {
        if self.dry_run() {
            return None;
        }
        lives::spacing(record.last_write_at, self.config.config.ticketing_integration.ticket_write_interval, now)
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

impl Sink {
    /// A reopen: an open ticket learns the new life; an ended one is moved back within the
    /// window, replaced by a new linked ticket after it, or left alone when a person ended
    /// it as never to be reopened. Each says so in a comment, queued with the others.
    async fn on_reopened(&self, fact: IncidentReopened) -> Disposition {
        let integration = &self.config.config.ticketing_integration;
        let key = fact.meta.as_ref().map(|m| m.idempotency_key.clone()).filter(|k| !k.is_empty());
        let id = notes::note_id(&key.unwrap_or_else(|| format!("reopen:{}:{}", fact.incident_id, fact.reopen_count)));
        let origin = fact.origin.clone().unwrap_or_default();
        let text = notes::render(
            &if fact.reason.is_empty() {
                "Incident reopened.".to_owned()
            } else {
                format!("Incident reopened: {}", limits::fit(&fact.reason, limits::REASON_MAX))
            },
            &fact.by,
            &notes::place(&origin.vendor, &origin.object_id),
            &id,
        );
        for _ in 0..MAX_STEPS {
            let read = match self.tickets.get(&fact.incident_id).await {
                Ok(read) => read,
                Err(e) => return e.disposition("ticket record"),
            };
            let provider = read.as_ref().map_or(integration.default_provider, |r| r.record.target.provider);
            let count = |o| self.metrics.count(provider, Action::Reopen, o);
            let now = Timestamp::now();
            let step =
                lives::on_reopened(&id, fact.reopen_count, read.as_ref().map(|r| &r.record), now, self.dry_run());
            let read = match (step, read) {
                (OnReopened::Flush, Some(read)) => {
                    return self.queue_and_post(read, |_| {}, &id, &text, Action::Reopen).await;
                }
                (OnReopened::Wait { after, reason }, _) => {
                    count(Outcome::Waiting);
                    return Disposition::Retry { after, reason: reason.to_owned() };
                }
                (OnReopened::Done, _) => {
                    count(Outcome::Duplicate);
                    return Disposition::Ack;
                }
                (_, None) => return retry("the ticket record vanished"),
                (OnReopened::Create(on_create), Some(read)) => return self.finish_reopen_ticket(read, on_create).await,
                (OnReopened::LookAtTicket, Some(read)) => read,
            };
            if let Some(after) = self.write_wait(&read.record, now) {
                count(Outcome::Waiting);
                return Disposition::Retry { after, reason: "writes to one ticket are spaced".to_owned() };
            }
            let Some(ticket) = read.record.ticket.clone() else { return retry("ticket record without a ticket") };
            let project = read.record.target.project.clone();
            let status = if self.dry_run() {
                crate::provider::TicketStatus {
                    done: read.record.state != TicketState::Created,
                    resolution: String::new(),
                }
            } else {
                match self
                    .vendor(provider, |t| {
                        let (project, ticket) = (project.clone(), ticket.clone());
                        async move { t.status(&project, &ticket).await }
                    })
                    .await
                {
                    Ok(status) => status,
                    Err(e) => {
                        count(Outcome::Retried);
                        return self.reopen_refused(&read, fact.reopen_count, vendor_failed(e)).await;
                    }
                }
            };
            let has_draft = read.record.draft.is_some();
            match lives::reopening(&status, read.record.ended_at, has_draft, &integration.reopen, now) {
                Reopening::LeaveAlone(resolution) => {
                    let mut left = read.record.clone();
                    left.reopen_count = fact.reopen_count;
                    left.note = Some(format!("reopened, but left as {resolution}: never reopened"));
                    tracing::info!(incident_id = %fact.incident_id, ticket = %ticket.key, resolution = %resolution,
                        "reopened: the ticket was ended as never to be reopened; left alone");
                    match self.record(&read, left, "left alone").await {
                        Ok(()) => {
                            count(Outcome::LeftAlone);
                            return Disposition::Ack;
                        }
                        Err(Stopped::Again) => continue,
                        Err(Stopped::With(_, d)) => return d,
                    }
                }
                // A person reopened it here (the reopen came from this tool): the new life
                // is recorded, and nothing is said back to them.
                Reopening::AlreadyOpen if origin.vendor == provider.name() => {
                    let mut next = read.record.clone();
                    reopened(&mut next, fact.reopen_count, now);
                    match self.record(&read, next, "reopened").await {
                        Ok(()) => {
                            count(Outcome::Done);
                            return Disposition::Ack;
                        }
                        Err(Stopped::Again) => continue,
                        Err(Stopped::With(_, d)) => return d,
                    }
                }
                Reopening::AlreadyOpen => {
                    return self
                        .queue_and_post(read, |r| reopened(r, fact.reopen_count, now), &id, &text, Action::Reopen)
                        .await;
                }
                Reopening::Reopen => {
                    if !self.dry_run()
                        && let Err(e) = self
                            .vendor(provider, |t| {
                                let (project, ticket) = (project.clone(), ticket.clone());
                                async move { t.reopen(&project, &ticket).await }
                            })
                            .await
                    {
                        count(Outcome::Retried);
                        return self.reopen_refused(&read, fact.reopen_count, vendor_failed(e)).await;
                    }
                    tracing::info!(incident_id = %fact.incident_id, ticket = %ticket.key, "reopened: ticket moved back");
                    return self
                        .queue_and_post(
                            read,
                            |r| {
                                reopened(r, fact.reopen_count, now);
                                r.last_write_at = Some(now);
                            },
                            &id,
                            &text,
                            Action::Reopen,
                        )
                        .await;
                }
                Reopening::NewTicket => {
                    let Some(draft) = read.record.draft.clone() else { return retry("no draft kept") };
                    let mut claim = read.record.clone();
                    reopened(&mut claim, fact.reopen_count, now);
                    claim.state = TicketState::Claimed;
                    claim.earlier.push(ticket.clone());
                    claim.ticket = None;
                    (claim.claimed_at, claim.renewed_at) = (Some(now), None);
                    // The comment goes on the new ticket, saying what it follows.
                    claim.pending.push(Pending { id: id.clone(), text: text.clone() });
                    let read = match self.tickets.replace(&read, claim).await {
                        Ok(read) => read,
                        Err(RecordError::WrongRevision) => continue,
                        Err(e) => return e.disposition("ticket record"),
                    };
                    let new = self.follow_up_ticket(&read.record, &draft, ticket);
                    let disposition = self.create_ticket(new, read, false).await;
                    if disposition != Disposition::Ack {
                        return disposition;
                    }
                    count(Outcome::NewTicket);
                    // Then the queued comment, on the new ticket.
                    return match self.tickets.get(&fact.incident_id).await {
                        Ok(Some(read)) => self.queue_and_post(read, |_| {}, &id, &text, Action::Reopen).await,
                        Ok(None) => retry("the ticket record vanished"),
                        Err(e) => e.disposition("ticket record"),
                    };
                }
            }
        }
        retry("ticket record contended")
    }

    /// A reopen the vendor refused for good (the ticket deleted, the transition not
    /// allowed): the new life is recorded with why, so its later facts do not wait for a
    /// reopen that will never be made, then the fact is dead-lettered.
    async fn reopen_refused(&self, read: &Read, reopen_count: u32, disposition: Disposition) -> Disposition {
        if let Disposition::DeadLetter { reason } = &disposition {
            let mut next = read.record.clone();
            next.reopen_count = reopen_count;
            next.note = Some(format!("reopen refused: {reason}"));
            let _ = self.record(read, next, "reopen refused").await;
        }
        disposition
    }

    /// The new ticket of a reopen, its claim seen again (a redelivery, or a crash).
    async fn finish_reopen_ticket(&self, read: Read, step: OnCreated) -> Disposition {
        match step {
            OnCreated::Done | OnCreated::Claim => Disposition::Ack,
            OnCreated::Wait(after) => {
                Disposition::Retry { after, reason: "another delivery is creating the ticket".to_owned() }
            }
            OnCreated::TakeOver { search_first } => {
                let (Some(draft), Some(follows)) = (read.record.draft.clone(), read.record.earlier.last().cloned())
                else {
                    return retry("no draft kept");
                };
                let ticket = self.follow_up_ticket(&read.record, &draft, follows);
                self.take_over_and_create(read, ticket, search_first).await
            }
        }
    }

    /// A severity change: the ticket's priority follows it (Jira), and a comment says so.
    async fn on_severity(&self, fact: IncidentSeverityChanged) -> Disposition {
        let integration = &self.config.config.ticketing_integration;
        let to = Severity::try_from(fact.to).unwrap_or(Severity::Unspecified);
        let from = Severity::try_from(fact.from).unwrap_or(Severity::Unspecified);
        let at = fact.at.as_ref().and_then(|t| Timestamp::new(t.seconds, t.nanos).ok());
        let key = fact.meta.as_ref().map(|m| m.idempotency_key.clone()).filter(|k| !k.is_empty());
        let id = notes::note_id(&key.unwrap_or_else(|| format!("severity:{}:{:?}:{}", fact.incident_id, at, fact.to)));
        let verb = if (to as i32) < (from as i32) { "raised" } else { "lowered" };
        let why = if fact.why.is_empty() {
            String::new()
        } else {
            format!(": {}", limits::fit(&fact.why, limits::REASON_MAX))
        };
        let text = notes::render(
            &format!("Severity {verb} from {} to {}{why}", from.config_name(), to.config_name()),
            &fact.by,
            &notes::place("", ""),
            &id,
        );
        let read = match self.tickets.get(&fact.incident_id).await {
            Ok(read) => read,
            Err(e) => return e.disposition("ticket record"),
        };
        let provider = read.as_ref().map_or(integration.default_provider, |r| r.record.target.provider);
        let count = |o| self.metrics.count(provider, Action::Severity, o);
        let now = Timestamp::now();
        let read = match (lives::on_severity(&id, at, read.as_ref().map(|r| &r.record), now), read) {
            (OnSeverity::Flush, Some(read)) => {
                return self.queue_and_post(read, |_| {}, &id, &text, Action::Severity).await;
            }
            (OnSeverity::Wait { after, reason }, _) => {
                count(Outcome::Waiting);
                return Disposition::Retry { after, reason: reason.to_owned() };
            }
            (OnSeverity::Stale, _) => {
                count(Outcome::Duplicate);
                return Disposition::Ack;
            }
            (OnSeverity::Update | OnSeverity::Flush, None) => return retry("the ticket record vanished"),
            (OnSeverity::Update, Some(read)) => read,
        };
        if let Some(after) = self.write_wait(&read.record, now) {
            count(Outcome::Waiting);
            return Disposition::Retry { after, reason: "writes to one ticket are spaced".to_owned() };
        }
        let Some(ticket) = read.record.ticket.clone() else { return retry("ticket record without a ticket") };
        // The change is recorded before the priority is set: of two changes handled at once
        // (two replicas), the later one is the record's, and the priority ends as it says.
        let mut next = read.record.clone();
        next.severity_at = at.or(Some(now));
        next.severity = Some(to.config_name().to_owned());
        if let Some(draft) = next.draft.as_mut() {
            to.config_name().clone_into(&mut draft.severity);
        }
        let read = if next == read.record {
            read
        } else {
            match self.tickets.replace(&read, next).await {
                Ok(read) => read,
                Err(RecordError::WrongRevision) => return retry("ticket record contended"),
                Err(e) => return e.disposition("ticket record"),
            }
        };
        let project = read.record.target.project.clone();
        // The fields kept in sync, rendered again for the severity being set.
        let context = read.record.draft.as_ref().and_then(|d| d.context.clone());
        let target = &read.record.target;
        let fields = self.config.fields_of_ticket(target.provider, &target.route, &target.project);
        let synced_for = |severity: &str| match &context {
            Some(context) => {
                let to = <Severity as sre_contracts::SeverityExt>::from_config_name(severity).unwrap_or(to);
                fields.render_synced(&context.incident(to as i32), self.jira_deployment())
            }
            None => crate::fields::Rendered::default(),
        };
        let mut severity = to.config_name().to_owned();
        let mut changed = false;
        // Set it; if a later change was recorded meanwhile, set that one's (its own
        // delivery may have set it before this call landed).
        for _ in 0..2 {
            if self.dry_run() {
                break;
            }
            match self
                .vendor(provider, |t| {
                    let (project, ticket, severity, synced) =
                        (project.clone(), ticket.clone(), severity.clone(), synced_for(&severity));
                    async move { t.set_severity(&project, &ticket, &severity, &synced).await }
                })
                .await
            {
                Ok(set) => changed |= set,
                Err(e) => {
                    count(Outcome::Retried);
                    return vendor_failed(e);
                }
            }
            let latest = match self.tickets.get(&fact.incident_id).await {
                Ok(found) => found.and_then(|r| r.record.severity),
                Err(e) => return e.disposition("ticket record"),
            };
            match latest {
                Some(latest) if latest != severity => severity = latest,
                _ => break,
            }
        }
        self.queue_and_post(
            read,
            |r| {
                if changed {
                    r.last_write_at = Some(now);
                }
            },
            &id,
            &text,
            Action::Severity,
        )
        .await
    }

    /// A note: a comment on the ticket, with who wrote it and where, unless it was written
    /// there; queued with the other comments, posted together.
    async fn on_note(&self, fact: IncidentAnnotated) -> Disposition {
        let integration = &self.config.config.ticketing_integration;
        let (id, text) = notes::annotated(&fact);
        let origin = fact.origin.clone().unwrap_or_default();
        let read = match self.tickets.get(&fact.incident_id).await {
            Ok(read) => read,
            Err(e) => return e.disposition("ticket record"),
        };
        let provider = read.as_ref().map_or(integration.default_provider, |r| r.record.target.provider);
        let count = |o| self.metrics.count(provider, Action::Note, o);
        match (lives::on_note(&id, &origin.vendor, read.as_ref().map(|r| &r.record), Timestamp::now()), read) {
            (OnNote::Wait { after, reason }, _) => {
                count(Outcome::Waiting);
                Disposition::Retry { after, reason: reason.to_owned() }
            }
            (OnNote::Skip(why), _) => {
                tracing::debug!(incident_id = %fact.incident_id, reason = why, "note not added to the ticket");
                count(Outcome::Skipped);
                Disposition::Ack
            }
            (OnNote::Done, _) => {
                count(Outcome::Duplicate);
                Disposition::Ack
            }
            (_, None) => retry("the ticket record vanished"),
            (OnNote::Queue | OnNote::Flush, Some(read)) => {
                self.queue_and_post(read, |_| {}, &id, &text, Action::Note).await
            }
        }
    }

    /// Records `change` and queues comment `id` (unless queued or posted already), then
    /// posts what is queued as one comment when writes to the ticket allow; acked once
    /// comment `id` is on the ticket.
    async fn queue_and_post(
        &self,
        read: Read,
        change: impl Fn(&mut TicketRecord),
        id: &str,
        text: &str,
        action: Action,
    ) -> Disposition {
        let provider = read.record.target.provider;
        let count = |o| self.metrics.count(provider, action, o);
        let mut next = read.record.clone();
        change(&mut next);
        let known = next.pending.iter().any(|p| p.id == id)
            || notes::state(&next.notes, id, Timestamp::now()) == notes::NoteState::Posted;
        if !known {
            next.pending.push(Pending { id: id.to_owned(), text: text.to_owned() });
        }
        let mut read = if next == read.record {
            read
        } else {
            match self.tickets.replace(&read, next).await {
                Ok(read) => read,
                Err(RecordError::WrongRevision) => return retry("ticket record contended"),
                Err(e) => return e.disposition("ticket record"),
            }
        };
        let interval = match self.dry_run() {
            true => std::time::Duration::ZERO,
            false => self.config.config.ticketing_integration.ticket_write_interval,
        };
        for _ in 0..MAX_STEPS {
            let step = lives::on_flush(id, &read.record, interval, Timestamp::now());
            match step {
                OnFlush::Done => {
                    count(if self.dry_run() { Outcome::DryRun } else { Outcome::Done });
                    return Disposition::Ack;
                }
                OnFlush::Wait(after) => {
                    count(Outcome::Waiting);
                    return Disposition::Retry { after, reason: "comments on one ticket are posted together".into() };
                }
                OnFlush::Recover => match self.recover_comments(read).await {
                    Ok(again) => read = again,
                    Err(d) => {
                        count(Outcome::Retried);
                        return d;
                    }
                },
                OnFlush::Post => match self.post_pending(read).await {
                    Ok(again) => read = again,
                    Err(d) => {
                        count(if matches!(d, Disposition::DeadLetter { .. }) {
                            Outcome::Failed
                        } else {
                            Outcome::Retried
                        });
                        return d;
                    }
                },
            }
        }
        retry("ticket record contended")
    }

    /// Claims the queued comments, posts them as one, marks them posted.
    async fn post_pending(&self, read: Read) -> Result<Read, Disposition> {
        let now = Timestamp::now();
        // As many queued comments as one comment takes, oldest first; the rest next time.
        let ids: Vec<String> = lives::batch(&read.record, COMMENT_MAX).iter().map(|p| p.id.clone()).collect();
        let mut claimed = read.record.clone();
        for id in &ids {
            claimed.notes = notes::claimed(&claimed.notes, id, now);
        }
        let read = self.tickets.replace(&read, claimed).await.map_err(|e| e.disposition("ticket record"))?;
        let Some(ticket) = read.record.ticket.clone() else { return Err(retry("ticket record without a ticket")) };
        let text = lives::combined(&read.record, &ids);
        if self.dry_run() {
            tracing::info!(incident_id = %read.record.incident_id, ticket = %ticket.key, "dry run: would comment");
        } else {
            let project = read.record.target.project.clone();
            let provider = read.record.target.provider;
            // The marks are renewed while the call (and its retries) runs, so no other
            // delivery takes them for a crashed post and posts them again.
            let renew = |r: &mut TicketRecord, now| notes::renew(&mut r.notes, &ids, now);
            let call = self.vendor(provider, |t| {
                let (project, ticket, text) = (project.clone(), ticket.clone(), text.clone());
                async move { t.comment(&project, &ticket, &text).await }
            });
            let (answer, renewed) = sre_sink::claim::renewing_with(&self.tickets, read, renew, call).await;
            answer.map_err(vendor_failed)?;
            return self.mark_posted(renewed, &ids).await;
        }
        self.mark_posted(read, &ids).await
    }

    /// A post a crash left: the queued comments whose marks are on the ticket are posted;
    /// the rest are posted again by the next step.
    async fn recover_comments(&self, read: Read) -> Result<Read, Disposition> {
        let Some(ticket) = read.record.ticket.clone() else { return Err(retry("ticket record without a ticket")) };
        let project = read.record.target.project.clone();
        // From a little before the oldest claim of a queued comment (clocks differ).
        let claims = read.record.notes.iter().filter(|m| read.record.pending.iter().any(|p| p.id == m.id));
        let since = claims.map(|m| m.at).min().unwrap_or_else(Timestamp::now) - jiff::SignedDuration::from_mins(10);
        let texts = self
            .vendor(read.record.target.provider, |t| {
                let (project, ticket) = (project.clone(), ticket.clone());
                async move { t.comments(&project, &ticket, since).await }
            })
            .await
            .map_err(vendor_failed)?;
        let found: Vec<String> = read
            .record
            .pending
            .iter()
            .filter(|p| texts.iter().any(|t| notes::carries(t, &p.id)))
            .map(|p| p.id.clone())
            .collect();
        let mut next = read.record.clone();
        // What is not on the ticket is claimed afresh by the next post.
        for p in &read.record.pending {
            if !found.contains(&p.id) {
                next.notes.retain(|m| m.id != p.id);
            }
        }
        let read = self.tickets.replace(&read, next).await.map_err(|e| e.disposition("ticket record"))?;
        self.mark_posted(read, &found).await
    }

    /// Marks `ids` posted and takes them off the queue.
    async fn mark_posted(&self, read: Read, ids: &[String]) -> Result<Read, Disposition> {
        let now = Timestamp::now();
        let mut next = read.record.clone();
        for id in ids {
            next.notes = notes::posted(&next.notes, id, now);
        }
        next.pending.retain(|p| !ids.contains(&p.id));
        if !ids.is_empty() {
            next.last_write_at = Some(now);
        }
        self.tickets.replace(&read, next).await.map_err(|e| e.disposition("comment posted, ticket record"))
    }
}

/// `record` in the incident's `reopen_count`-th life: open, its acknowledge, resolve and
/// close comments still to come.
fn reopened(record: &mut TicketRecord, reopen_count: u32, now: Timestamp) {
    record.reopen_count = reopen_count;
    record.state = TicketState::Created;
    record.ended_at = None;
    (record.acknowledge_commented, record.resolve_commented, record.close_commented) = (false, false, false);
    record.updated_at = now;
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
                let comment = note("acknowledged", &a.by, "");
                self.on_update(&a.incident_id, Action::Acknowledge, a.reopen_count, comment).await
            }
            IncidentFact::Resolved(r) => {
                let comment = note("resolved", &r.by, &r.reason);
                self.on_update(&r.incident_id, Action::Resolve, r.reopen_count, comment).await
            }
            IncidentFact::Closed(c) => {
                let comment = note("closed", &c.by, &c.reason);
                self.on_update(&c.incident_id, Action::Close, c.reopen_count, comment).await
            }
            IncidentFact::Reopened(r) => self.on_reopened(r).await,
            IncidentFact::SeverityChanged(c) => self.on_severity(c).await,
            IncidentFact::Annotated(n) => self.on_note(n).await,
        }
    }
}
