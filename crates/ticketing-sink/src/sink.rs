//! The fact handler: one ticket per incident, claimed in the KV bucket before the vendor
//! is asked, recovered by its marker after a crash, updated step by step with
//! compare-and-set so a redelivery repeats nothing that was done.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use sre_bus::{Disposition, FactHandler, KvError, ReceivedFact};
use sre_contracts::SeverityExt;
use sre_contracts::domain::v1::{IncidentAcknowledged, IncidentClosed, IncidentCreated, IncidentResolved, Severity};
use sre_resilience::{
    Backoff, BreakerConfig, BreakerState, CallError, ErrorClass, RateLimit, Retryable, Upstream, UpstreamConfig,
};

use crate::config::{Integration, Provider};
use crate::metrics::{Action, Outcome, TicketMetrics};
use crate::provider::{NewTicket, TicketRef, Tracker, VendorError, clip};
use crate::routing::{Target, route};
use crate::state::{Read, TicketRecord, TicketState, Tickets, token};
use crate::template::render;

/// A claim whose holder has not renewed it for this long was left by a crash: the ticket
/// is looked for by its marker, then created if absent. A live holder renews every
/// [`RENEW_CLAIM`] while its vendor call runs, so this only has to outlast a few missed
/// renewals, not the longest call.
pub const STALE_CLAIM: Duration = Duration::from_secs(10);
/// How often a holder renews its claim while the vendor works.
pub const RENEW_CLAIM: Duration = Duration::from_secs(2);
/// Wait before retrying when the KV bucket did not answer, or another delivery holds the claim.
const RETRY: Duration = Duration::from_secs(2);
/// Wait for a ticket that does not exist yet (a Resolved before its Created).
const WAIT_FOR_TICKET: Duration = Duration::from_secs(5);
/// Title limit applied to every provider (Jira's 255).
const TITLE_MAX: usize = 255;

/// The sink.
pub struct Sink {
    config: Integration,
    tickets: Tickets,
    trackers: BTreeMap<Provider, Arc<dyn Tracker>>,
    upstreams: BTreeMap<Provider, Upstream>,
    metrics: TicketMetrics,
    credentials: Mutex<BTreeMap<Provider, Result<(), String>>>,
    /// The accounts the credentials act as (Jira's `myself`), learnt at each check: the
    /// Jira receiver takes their changes for this sink's own.
    pub own_accounts: crate::receiver::OwnAccounts,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").finish_non_exhaustive()
    }
}

fn retry(reason: impl Into<String>) -> Disposition {
    Disposition::Retry { after: RETRY, reason: reason.into() }
}

/// How long to wait before looking at a live claim of this age again: soon (a live holder
/// records its ticket within a call), but never later than the moment the claim goes stale,
/// so a claim left by a crash is recovered on the next delivery instead of using up
/// `max_deliver` on 2 s retries (found by the whole-system fault test). `None`: stale now.
fn until_stale(age: jiff::SignedDuration) -> Option<Duration> {
    let age = Duration::try_from(age).unwrap_or_default();
    let left = STALE_CLAIM.checked_sub(age).filter(|d| !d.is_zero())?;
    // Two quick looks for a holder that is about to finish, then straight to staleness.
    Some(if age < RETRY * 2 { RETRY.min(left) } else { left + Duration::from_millis(100) })
}

/// How long a resolve or close waits on a ticket still being created. A claim left by a
/// crash is recovered only when it goes stale (and its IncidentCreated is redelivered), so
/// looking every 5 s meanwhile would spend `max_deliver` for nothing: the next look is at
/// the earliest moment the ticket can exist, then every 5 s.
fn wait_for_claimed(age: Option<jiff::SignedDuration>) -> Duration {
    age.and_then(until_stale).map_or(WAIT_FOR_TICKET, |d| d.max(WAIT_FOR_TICKET))
}

/// The marker of an incident: a Jira label, a hidden line in a GitHub issue.
pub fn marker(incident_id: &str) -> String {
    format!("sre-incident-{}", token(incident_id))
}

impl Sink {
    /// A sink writing through `trackers`.
    pub fn new(
        config: Integration,
        tickets: Tickets,
        trackers: BTreeMap<Provider, Arc<dyn Tracker>>,
        metrics: TicketMetrics,
        own_accounts: crate::receiver::OwnAccounts,
    ) -> Self {
        let upstreams = trackers
            .keys()
            .map(|p| {
                let name = p.name();
                let per_minute = match p {
                    Provider::Jira => config.jira.as_ref().map_or(300, |j| j.requests_per_minute),
                    Provider::Github => config.github.as_ref().map_or(80, |g| g.requests_per_minute),
                };
                let upstream = Upstream::new(UpstreamConfig {
                    name,
                    backoff: Backoff::default(),
                    breaker: BreakerConfig::default(),
                    rate_limit: std::num::NonZeroU32::new(per_minute).map(RateLimit::per_minute),
                });
                (*p, upstream)
            })
            .collect();
        Self { config, tickets, trackers, upstreams, metrics, credentials: Mutex::new(BTreeMap::new()), own_accounts }
    }

    /// The configured providers.
    pub fn providers(&self) -> Vec<Provider> {
        self.trackers.keys().copied().collect()
    }

    /// Readiness of `provider`: its credentials were accepted at the last check and its
    /// breaker is not open.
    pub fn provider_ready(&self, provider: Provider) -> Result<(), String> {
        if let Some(Err(e)) = self.credentials.lock().unwrap_or_else(PoisonError::into_inner).get(&provider) {
            return Err(e.clone());
        }
        match self.upstreams.get(&provider).map(Upstream::breaker_state) {
            Some(BreakerState::Open) => Err("circuit open: the vendor is failing; facts wait on the bus".to_owned()),
            _ => Ok(()),
        }
    }

    /// Each provider's circuit breaker, for the metrics.
    pub fn breaker_states(&self) -> Vec<(&'static str, BreakerState)> {
        self.upstreams.iter().map(|(p, u)| (p.name(), u.breaker_state())).collect()
    }

    /// Checks each provider's credentials now (at start and then periodically).
    pub async fn check_credentials(&self) {
        for (provider, tracker) in &self.trackers {
            let result = match tracker.check().await {
                Ok(account) => {
                    if let Some(account) = account {
                        self.own_accounts.learn(*provider, account);
                    }
                    Ok(())
                }
                Err(e) if e.class() == ErrorClass::Auth => Err(format!("credentials refused: {e}")),
                // Unreachable is the breaker's business; keep the last verdict.
                Err(_) => continue,
            };
            if let Err(e) = &result {
                tracing::error!(provider = ?provider, reason = %e, "ticketing credentials refused");
            }
            self.credentials.lock().unwrap_or_else(PoisonError::into_inner).insert(*provider, result);
        }
    }

    fn tracker(&self, provider: Provider) -> Result<(&Arc<dyn Tracker>, &Upstream), String> {
        match (self.trackers.get(&provider), self.upstreams.get(&provider)) {
            (Some(t), Some(u)) => Ok((t, u)),
            _ => Err(format!("{provider:?} is not configured")),
        }
    }

    async fn vendor<T, F>(&self, provider: Provider, op: impl Fn() -> F) -> Result<T, CallError<VendorError>>
    where
        F: std::future::Future<Output = Result<T, VendorError>>,
    {
        let Ok((_, upstream)) = self.tracker(provider) else {
            return Err(CallError::Permanent(VendorError::Invalid(format!("{provider:?} is not configured"))));
        };
        let started = Instant::now();
        let result = upstream.call(op).await;
        self.metrics.vendor(provider, started.elapsed().as_secs_f64());
        result
    }

    fn new_ticket(&self, incident: &IncidentCreated, target: &Target) -> NewTicket {
        let t = &self.config.templates;
        NewTicket {
            project: target.project.clone(),
            title: clip(&render(&t.title, incident), TITLE_MAX),
            body: render(&t.body, incident),
            marker: marker(&incident.incident_id),
            severity: Severity::try_from(incident.severity).unwrap_or(Severity::Unspecified).config_name().to_owned(),
        }
    }

    async fn on_created(&self, incident: IncidentCreated) -> Disposition {
        let target = route(&self.config, &incident);
        let provider = target.provider;
        let count = |o| self.metrics.count(provider, Action::Create, o);
        let now = Timestamp::now();
        let claim = TicketRecord {
            incident_id: incident.incident_id.clone(),
            state: TicketState::Claimed,
            target: target.clone(),
            ticket: None,
            claimed_at: Some(now),
            renewed_at: None,
            acknowledge_commented: false,
            resolve_commented: false,
            close_commented: false,
            note: None,
            updated_at: now,
        };
        match self.tickets.create(&claim).await {
            Ok(revision) => return self.create_ticket(&incident, Read { record: claim, revision }, false).await,
            Err(KvError::AlreadyExists) => {}
            Err(e) => return retry(format!("ticket records unavailable: {e}")),
        }
        let read = match self.tickets.get(&incident.incident_id).await {
            Ok(Some(read)) => read,
            Ok(None) => return retry("ticket record vanished; trying again"),
            Err(e) => return retry(format!("ticket records unavailable: {e}")),
        };
        if read.record.state != TicketState::Claimed {
            count(Outcome::Duplicate);
            return Disposition::Ack;
        }
        if let Some(after) = read.record.last_alive().and_then(|at| until_stale(now.duration_since(at))) {
            count(Outcome::Waiting);
            return Disposition::Retry { after, reason: "another delivery is creating the ticket".to_owned() };
        }
        // A crash (or a failed call) left the claim. Re-claim it, then look for the ticket
        // by its marker before creating one. A released claim (`claimed_at: None`) means
        // the vendor answered with an error: nothing was created, nothing to look for.
        let maybe_created = read.record.claimed_at.is_some();
        let read = match self.reclaim(&read).await {
            Ok(read) => read,
            Err(disposition) => return disposition,
        };
        if maybe_created && !self.config.dry_run {
            let (found, read) = self.find_by_marker(read, &incident.incident_id).await;
            match found {
                Ok(Some(found)) => return self.record_created(&read, found, Outcome::Recovered).await,
                Ok(None) => return self.create_ticket(&incident, read, true).await,
                Err(disposition) => return disposition,
            }
        }
        self.create_ticket(&incident, read, true).await
    }

    /// Takes over a stale claim: renewed now, its first create time kept (the ticket a
    /// crashed holder made is no older than that, whatever happened since).
    async fn reclaim(&self, read: &Read) -> Result<Read, Disposition> {
        let now = Timestamp::now();
        let mut reclaimed = read.record.clone();
        reclaimed.claimed_at = Some(read.record.claimed_at.unwrap_or(now));
        reclaimed.renewed_at = Some(now);
        reclaimed.updated_at = now;
        match self.tickets.update(&reclaimed, read.revision).await {
            Ok(revision) => Ok(Read { record: reclaimed, revision }),
            Err(KvError::WrongRevision) => Err(retry("another delivery took over the claim")),
            Err(e) => Err(retry(format!("ticket records unavailable: {e}"))),
        }
    }

    /// Looks for the ticket a crashed holder may have made, by its marker, renewing the
    /// claim meanwhile. Returns the claim as it now stands.
    async fn find_by_marker(&self, read: Read, incident_id: &str) -> (Result<Option<TicketRef>, Disposition>, Read) {
        let target = read.record.target.clone();
        let Ok((tracker, _)) = self.tracker(target.provider) else {
            let reason = format!("{:?} is not configured", target.provider);
            return (Err(Disposition::DeadLetter { reason }), read);
        };
        let tracker = tracker.clone();
        let mark = marker(incident_id);
        let since = read.record.claimed_at.unwrap_or(read.record.updated_at);
        let (result, read) =
            self.renewing(read, self.vendor(target.provider, || tracker.find(&target.project, &mark, since))).await;
        let found = match result {
            Ok(Some(found)) => {
                tracing::info!(%incident_id, ticket = %found.key, "ticket found by its marker after an interrupted create");
                Ok(Some(found))
            }
            Ok(None) => Ok(None),
            Err(CallError::Permanent(e)) => Err(Disposition::DeadLetter { reason: e.to_string() }),
            Err(e) => Err(Disposition::Retry { after: e.retry_in().unwrap_or(RETRY), reason: e.to_string() }),
        };
        (found, read)
    }

    /// Runs `work` (a vendor call made under the claim) while renewing the claim every
    /// [`RENEW_CLAIM`], and returns its output with the claim as it now stands (the
    /// revision the caller must write on).
    async fn renewing<T>(&self, read: Read, work: impl std::future::Future<Output = T>) -> (T, Read) {
        sre_bus::renewing(read, RENEW_CLAIM, work, |read: Read| async move {
            let mut renewed = read.record.clone();
            renewed.renewed_at = Some(Timestamp::now());
            match self.tickets.update(&renewed, read.revision).await {
                Ok(revision) => Read { record: renewed, revision },
                Err(e) => {
                    tracing::warn!(incident_id = %read.record.incident_id, error = %e, "claim not renewed");
                    read
                }
            }
        })
        .await
    }

    async fn create_ticket(&self, incident: &IncidentCreated, read: Read, after_recovery: bool) -> Disposition {
        let target = read.record.target.clone();
        let provider = target.provider;
        let ticket = self.new_ticket(incident, &target);
        if self.config.dry_run {
            tracing::info!(incident_id = %incident.incident_id, provider = ?provider, project = %target.project,
                title = %ticket.title, "dry run: would create a ticket");
            let dry = TicketRef { key: "dry-run".to_owned(), url: String::new() };
            return self.record_created(&read, dry, Outcome::DryRun).await;
        }
        let tracker = match self.tracker(provider) {
            Ok((t, _)) => t.clone(),
            Err(e) => return Disposition::DeadLetter { reason: e },
        };
        let (result, read) = self.renewing(read, self.vendor(provider, || tracker.create(&ticket))).await;
        match result {
            Ok(created) => {
                tracing::info!(incident_id = %incident.incident_id, ticket = %created.key, provider = ?provider,
                    recovered_claim = after_recovery, "ticket created");
                self.record_created(&read, created, Outcome::Done).await
            }
            Err(CallError::Permanent(e)) => {
                let mut failed = read.record.clone();
                failed.state = TicketState::Failed;
                failed.note = Some(e.to_string());
                failed.updated_at = Timestamp::now();
                let _ = self.tickets.update(&failed, read.revision).await;
                tracing::error!(incident_id = %incident.incident_id, reason = %e, "the vendor refused the ticket");
                self.metrics.count(provider, Action::Create, Outcome::Failed);
                Disposition::DeadLetter { reason: e.to_string() }
            }
            Err(e) => {
                // The vendor answered with an error, or the breaker is open: nothing was
                // created, so the next delivery may create at once. After a timeout the
                // create may have happened: the claim stays, to be recovered by marker.
                let answered = matches!(&e, CallError::CircuitOpen { .. })
                    || matches!(
                        &e,
                        CallError::Exhausted { last: VendorError::Status { .. } | VendorError::Throttled { .. }, .. }
                    );
                if answered {
                    let mut released = read.record.clone();
                    released.claimed_at = None;
                    released.renewed_at = None;
                    let _ = self.tickets.update(&released, read.revision).await;
                }
                self.metrics.count(provider, Action::Create, Outcome::Retried);
                Disposition::Retry { after: e.retry_in().unwrap_or(RETRY), reason: e.to_string() }
            }
        }
    }

    async fn record_created(&self, read: &Read, ticket: TicketRef, outcome: Outcome) -> Disposition {
        let mut created = read.record.clone();
        created.state = TicketState::Created;
        created.ticket = Some(ticket);
        created.claimed_at = None;
        created.renewed_at = None;
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

    /// IncidentAcknowledged, IncidentResolved and IncidentClosed: a comment, then (resolve,
    /// close) the vendor's transition, each step recorded so a redelivery does not repeat it.
    async fn on_update(&self, incident_id: &str, action: Action, comment: String) -> Disposition {
        for _ in 0..3 {
            let read = match self.tickets.get(incident_id).await {
                Ok(Some(read)) => read,
                Ok(None) => {
                    self.metrics.count(self.config.default_provider, action, Outcome::Waiting);
                    return Disposition::Retry {
                        after: WAIT_FOR_TICKET,
                        reason: "the ticket does not exist yet".to_owned(),
                    };
                }
                Err(e) => return retry(format!("ticket records unavailable: {e}")),
            };
            let provider = read.record.target.provider;
            let (done_state, commented) = match action {
                Action::Acknowledge => (TicketState::Created, read.record.acknowledge_commented),
                Action::Resolve => (TicketState::Resolved, read.record.resolve_commented),
                _ => (TicketState::Closed, read.record.close_commented),
            };
            match (read.record.state, action) {
                (TicketState::Claimed, _) => {
                    let age = read.record.last_alive().map(|at| Timestamp::now().duration_since(at));
                    if age.and_then(until_stale).is_some() || read.record.claimed_at.is_none() || self.config.dry_run {
                        // A live holder is creating it (or nothing was created and its
                        // IncidentCreated is on its way back): look again soon.
                        self.metrics.count(provider, action, Outcome::Waiting);
                        return Disposition::Retry {
                            after: wait_for_claimed(age),
                            reason: "the ticket is being created".to_owned(),
                        };
                    }
                    // Its holder crashed. The ticket may exist: find it by its marker now,
                    // instead of waiting for the IncidentCreated to come back (ack_wait).
                    let claim = match self.reclaim(&read).await {
                        Ok(claim) => claim,
                        Err(disposition) => return disposition,
                    };
                    let (found, claim) = self.find_by_marker(claim, incident_id).await;
                    match found {
                        Ok(Some(ticket)) => match self.record_created(&claim, ticket, Outcome::Recovered).await {
                            Disposition::Ack => continue,
                            other => return other,
                        },
                        Ok(None) => {
                            // Never created: only the IncidentCreated can create it. Leave the
                            // claim stale, so its redelivery creates at once.
                            let mut stale = claim.record.clone();
                            stale.renewed_at = None;
                            let _ = self.tickets.update(&stale, claim.revision).await;
                            self.metrics.count(provider, action, Outcome::Waiting);
                            return Disposition::Retry {
                                after: WAIT_FOR_TICKET,
                                reason: "the ticket was never created; waiting for its IncidentCreated".to_owned(),
                            };
                        }
                        Err(disposition) => return disposition,
                    }
                }
                (TicketState::Failed, _)
                | (TicketState::Closed, _)
                | (TicketState::Resolved, Action::Resolve | Action::Acknowledge) => {
                    self.metrics.count(provider, action, Outcome::Duplicate);
                    return Disposition::Ack;
                }
                (TicketState::Created, Action::Acknowledge) if commented => {
                    self.metrics.count(provider, action, Outcome::Duplicate);
                    return Disposition::Ack;
                }
                _ => {}
            }
            let Some(ticket) = read.record.ticket.clone() else { return retry("ticket record without a ticket") };
            let project = read.record.target.project.clone();
            if self.config.dry_run {
                tracing::info!(%incident_id, ticket = %ticket.key, action = ?action, "dry run: would update the ticket");
            } else {
                let tracker = match self.tracker(provider) {
                    Ok((t, _)) => t.clone(),
                    Err(e) => return Disposition::DeadLetter { reason: e },
                };
                let mut read = read.clone();
                if !commented {
                    if let Err(e) = self.vendor(provider, || tracker.comment(&project, &ticket, &comment)).await {
                        return self.vendor_failed(provider, action, e);
                    }
                    let mut noted = read.record.clone();
                    match action {
                        Action::Acknowledge => noted.acknowledge_commented = true,
                        Action::Resolve => noted.resolve_commented = true,
                        _ => noted.close_commented = true,
                    }
                    match self.tickets.update(&noted, read.revision).await {
                        Ok(revision) => read = Read { record: noted, revision },
                        Err(KvError::WrongRevision) => continue,
                        Err(e) => return retry(format!("comment posted, record not saved: {e}")),
                    }
                }
                let step = match action {
                    // An acknowledge is the comment alone.
                    Action::Acknowledge => Ok(()),
                    Action::Resolve => self.vendor(provider, || tracker.resolve(&project, &ticket)).await,
                    _ => self.vendor(provider, || tracker.close(&project, &ticket)).await,
                };
                if let Err(e) = step {
                    return self.vendor_failed(provider, action, e);
                }
                return self.record_state(&read, done_state, provider, action).await;
            }
            return self.record_state(&read, done_state, provider, action).await;
        }
        retry("ticket record contended")
    }

    async fn record_state(&self, read: &Read, state: TicketState, provider: Provider, action: Action) -> Disposition {
        let mut next = read.record.clone();
        next.state = state;
        next.updated_at = Timestamp::now();
        match self.tickets.update(&next, read.revision).await {
            Ok(_) | Err(KvError::WrongRevision) => {
                let outcome = if self.config.dry_run { Outcome::DryRun } else { Outcome::Done };
                self.metrics.count(provider, action, outcome);
                Disposition::Ack
            }
            // Done at the vendor, not recorded: transitions and labels are idempotent
            // there, so doing them again is harmless.
            Err(e) => retry(format!("ticket updated, record not saved: {e}")),
        }
    }

    fn vendor_failed(&self, provider: Provider, action: Action, e: CallError<VendorError>) -> Disposition {
        match e {
            CallError::Permanent(e) => {
                self.metrics.count(provider, action, Outcome::Failed);
                Disposition::DeadLetter { reason: e.to_string() }
            }
            e => {
                self.metrics.count(provider, action, Outcome::Retried);
                Disposition::Retry { after: e.retry_in().unwrap_or(RETRY), reason: e.to_string() }
            }
        }
    }
}

/// The handler the fact consumer runs.
#[derive(Debug, Clone)]
pub struct Handler(pub Arc<Sink>);

fn note(verb: &str, by: &str, reason: &str) -> String {
    match (by.is_empty(), reason.is_empty()) {
        (true, true) => format!("Incident {verb}."),
        (false, true) => format!("Incident {verb} by {by}."),
        (true, false) => format!("Incident {verb}: {reason}"),
        (false, false) => format!("Incident {verb} by {by}: {reason}"),
    }
}

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
                Ok(_) if !self.0.config.comment_acknowledged => Disposition::Ack,
                Ok(a) => self.0.on_update(&a.incident_id, Action::Acknowledge, note("acknowledged", &a.by, "")).await,
                Err(e) => undecodable(e),
            }
        } else if fact.is::<IncidentResolved>() {
            match fact.decode::<IncidentResolved>() {
                Ok(r) => self.0.on_update(&r.incident_id, Action::Resolve, note("resolved", &r.by, &r.reason)).await,
                Err(e) => undecodable(e),
            }
        } else if fact.is::<IncidentClosed>() {
            match fact.decode::<IncidentClosed>() {
                Ok(c) => self.0.on_update(&c.incident_id, Action::Close, note("closed", &c.by, &c.reason)).await,
                Err(e) => undecodable(e),
            }
        } else {
            Disposition::Ack
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_claim_is_looked_at_again_soon_and_a_crashed_one_when_it_goes_stale() {
        let secs = |s: i64| jiff::SignedDuration::from_secs(s);
        // A holder that just renewed: look again in RETRY.
        assert_eq!(until_stale(secs(0)), Some(RETRY));
        // Not renewed for 5 s (the holder crashed): next look when it is stale.
        assert_eq!(until_stale(secs(5)), Some(Duration::from_millis(5_100)));
        assert_eq!(until_stale(secs(9)), Some(Duration::from_millis(1_100)));
        assert_eq!(until_stale(secs(10)), None);
        assert_eq!(until_stale(secs(600)), None);
        // A clock behind the claim's: treated as just claimed.
        assert_eq!(until_stale(secs(-5)), Some(RETRY));
        // Staleness is seconds, and a live holder renews well within it.
        assert!(STALE_CLAIM <= Duration::from_secs(10) && RENEW_CLAIM * 4 <= STALE_CLAIM);
    }

    #[test]
    fn a_resolve_waits_on_a_live_claim_until_it_could_go_stale() {
        let secs = |s: i64| Some(jiff::SignedDuration::from_secs(s));
        // A live create: look again soon.
        assert_eq!(wait_for_claimed(secs(0)), WAIT_FOR_TICKET);
        // Not renewed for 4 s: the next look when it would be stale.
        assert_eq!(wait_for_claimed(secs(4)), Duration::from_millis(6_100));
        // Stale already, or unknown: every 5 s.
        assert_eq!(wait_for_claimed(secs(90)), WAIT_FOR_TICKET);
        assert_eq!(wait_for_claimed(None), WAIT_FOR_TICKET);
    }
}
