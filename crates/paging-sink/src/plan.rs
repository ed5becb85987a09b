//! What to do about a fact, or a deferred page at a scan, given the page record as read,
//! the escalation policy and `now`: the sink's decisions as pure functions. The shell
//! (`sink`) carries each out with compare-and-set and asks again when the record moved.

use jiff::Timestamp;
use sre_contracts::domain::v1::Severity;
use sre_sink::claim::{Claim, Liveness, liveness};
use sre_sink::notes::{self, NoteState};

use crate::provider::{FollowUp, VendorStatus};
use crate::receiver::Asked;
use crate::schedule::{Decision, Policy, decide, due_under};
use crate::state::{PageRecord, PageState};
use sre_sink::reconcile::Kind;

/// What an `IncidentCreated` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCreated {
    /// No record: claim it and page now.
    Page,
    /// No record: keep it deferred until this instant (business hours).
    Defer(Timestamp),
    /// No record, and the escalation never pages this severity: keep it below the
    /// threshold (a raised severity or a reopen can still page it).
    NotPaged,
    /// A claim a delivery left mid-call: send the trigger again (the vendor deduplicates
    /// on the incident id), then record it.
    Resend {
        /// The claim is this fact's own: handed back for its turn (the fact come back) or
        /// left stale by a crash. Only then may a turn handed back again be written on it;
        /// a live claim is another delivery's, whose trigger may be leaving, and a follow-up
        /// must finish that page, not cancel it.
        own: bool,
    },
    /// Already paged, deferred, cancelled or refused: nothing to send.
    Duplicate,
}

/// The step for an `IncidentCreated` of `severity`, given the record.
pub fn on_created(severity: Severity, policy: &Policy, record: Option<&PageRecord>, now: Timestamp) -> OnCreated {
    match record.map(|r| r.state) {
        None => match decide(severity, policy, now) {
            Decision::PageNow => OnCreated::Page,
            Decision::DeferUntil(due) => OnCreated::Defer(due),
            Decision::Never => OnCreated::NotPaged,
        },
        Some(PageState::Claimed) => OnCreated::Resend {
            own: record.is_some_and(|r| r.handed_back.is_some() || liveness(r.last_alive(), now) == Liveness::Stale),
        },
        Some(_) => OnCreated::Duplicate,
    }
}

/// What an acknowledge or resolve asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFollowUp {
    /// Never paged (below the threshold, or its `IncidentCreated` is still to come):
    /// record it as cancelled, so a later `IncidentCreated` pages nobody for it.
    NotPaged,
    /// A deferred page, one below the threshold, or one whose trigger was handed back
    /// before it left (the credential's limit): cancel it, it will never page.
    Cancel,
    /// The trigger is in flight or died mid-call: finish it (the vendor deduplicates),
    /// then ask again. Waiting for the `IncidentCreated` to come back could use up this
    /// fact's `max_deliver`, and the on-call would be escalated for nothing.
    FinishTrigger,
    /// Send the acknowledge or resolve where the page went, then record it.
    Send,
    /// Already done, nothing to follow up (cancelled, refused), or about an earlier life of
    /// the incident (it has been reopened since).
    Duplicate,
    /// About a later life of the incident, whose reopen is not handled yet: look again.
    Wait,
}

/// The step for `action`, of the incident's life `reopen_count`, given the record.
pub fn on_follow_up(action: FollowUp, reopen_count: u32, record: Option<&PageRecord>) -> OnFollowUp {
    let held = record.map_or(0, |r| r.reopen_count);
    if reopen_count < held {
        return OnFollowUp::Duplicate;
    }
    if reopen_count > held {
        return OnFollowUp::Wait;
    }
    match (record.map(|r| r.state), action) {
        (None, _) => OnFollowUp::NotPaged,
        (Some(PageState::Deferred | PageState::Below), _) => OnFollowUp::Cancel,
        (Some(PageState::Claimed), _) if record.is_some_and(|r| r.handed_back.is_some()) => OnFollowUp::Cancel,
        (Some(PageState::Claimed), _) => OnFollowUp::FinishTrigger,
        (Some(PageState::Paged), _) | (Some(PageState::Acknowledged), FollowUp::Resolve) => OnFollowUp::Send,
        (Some(PageState::Acknowledged | PageState::Resolved | PageState::Cancelled | PageState::Failed), _) => {
            OnFollowUp::Duplicate
        }
    }
}

/// What an `IncidentReopened` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReopened {
    /// The page had ended (or never went out): claim it and page again now. A trigger after
    /// a resolve opens a new alert at the vendor, under the same dedup key or alias.
    Page,
    /// Page again, at this instant (business hours).
    Defer(Timestamp),
    /// Page again only if its severity is raised (below the threshold).
    Hold,
    /// The page is still open, waiting or being sent: only note the new life.
    Track,
    /// This reopen's page was claimed by a delivery that did not finish it (a vendor error,
    /// a crash): send the trigger again (the vendor joins it to the open alert).
    Finish,
    /// This reopen, or a later one, is handled.
    Duplicate,
    /// Its `IncidentCreated` is still to come: look again.
    Wait,
}

/// The step for the incident's `reopen_count`-th reopen, given the record.
pub fn on_reopened(reopen_count: u32, policy: &Policy, record: Option<&PageRecord>, now: Timestamp) -> OnReopened {
    let Some(record) = record else { return OnReopened::Wait };
    if reopen_count == record.reopen_count && reopen_count > 0 && record.state == PageState::Claimed {
        return OnReopened::Finish;
    }
    if reopen_count <= record.reopen_count {
        return OnReopened::Duplicate;
    }
    match record.state {
        PageState::Resolved | PageState::Cancelled | PageState::Failed | PageState::Below
            if record.incident.is_some() =>
        {
            match decide(record.severity(), policy, now) {
                Decision::PageNow => OnReopened::Page,
                Decision::DeferUntil(due) => OnReopened::Defer(due),
                Decision::Never => OnReopened::Hold,
            }
        }
        _ => OnReopened::Track,
    }
}

/// What an `IncidentSeverityChanged` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSeverity {
    /// Raised to a severity that pages now: claim the waiting page and page now.
    PageNow,
    /// Now pages at this instant (business hours): defer it (again).
    Defer(Timestamp),
    /// Lowered below paging: a waiting page is dropped (kept below the threshold).
    Drop,
    /// Record the severity only: an open page is left to the people on call, an ended one
    /// to its end.
    Record,
    /// This change's page was claimed by a delivery that did not finish it: send the
    /// trigger again.
    Finish,
    /// An older change than the one the record holds.
    Stale,
    /// Its `IncidentCreated` is still to come: look again.
    Wait,
}

/// The step for a severity change to `to` made `at`, given the record.
pub fn on_severity(
    to: Severity,
    at: Option<Timestamp>,
    policy: &Policy,
    record: Option<&PageRecord>,
    now: Timestamp,
) -> OnSeverity {
    let Some(record) = record else { return OnSeverity::Wait };
    if let (Some(at), Some(held)) = (at, record.severity_at)
        && at <= held
    {
        return if at == held && record.state == PageState::Claimed { OnSeverity::Finish } else { OnSeverity::Stale };
    }
    match record.state {
        PageState::Deferred | PageState::Below if record.incident.is_some() => match decide(to, policy, now) {
            Decision::PageNow => OnSeverity::PageNow,
            Decision::DeferUntil(due) => OnSeverity::Defer(due),
            Decision::Never if record.state == PageState::Deferred => OnSeverity::Drop,
            Decision::Never => OnSeverity::Record,
        },
        _ => OnSeverity::Record,
    }
}

/// The state a follow-up leaves the page in.
pub fn followed(action: FollowUp) -> PageState {
    match action {
        FollowUp::Acknowledge => PageState::Acknowledged,
        FollowUp::Resolve => PageState::Resolved,
    }
}

/// What the reconciler does about one page, given where it stands at its vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// A person did this in the vendor's tool and its webhook was lost: ask the domain,
    /// as the webhook would have.
    Ask(Asked, Kind),
    /// The domain asked for this and the vendor does not hold it (its calls failed, or the
    /// vendor dropped it): send it again. Only what is idempotent: never a trigger.
    Reassert(FollowUp),
    /// The vendor holds the follow-up the record still waits to send: record it.
    Settle(FollowUp),
}

/// Whether the reconciler compares `record` (open, ended within a day, or waiting to send
/// a follow-up) at `now`.
pub fn reconciled(record: &PageRecord, now: Timestamp) -> bool {
    let open = matches!(record.state, PageState::Paged | PageState::Acknowledged) || record.unsent.is_some();
    (open || record.state == PageState::Resolved) && sre_sink::reconcile::in_scope(open, record.updated_at, now)
}

/// The repair of `record`, whose page the vendor has as `vendor`; `None`: they agree (or
/// the difference is nobody's doing: PagerDuty re-triggering an acknowledged incident
/// when its acknowledgement times out).
pub fn reconcile(record: &PageRecord, vendor: VendorStatus) -> Option<Repair> {
    use VendorStatus::{Acknowledged, Missing, Open, Resolved};
    if vendor == Missing {
        return None;
    }
    if let Some(action) = record.unsent {
        let holds = match action {
            FollowUp::Resolve => vendor == Resolved,
            FollowUp::Acknowledge => vendor != Open,
        };
        return Some(if holds { Repair::Settle(action) } else { Repair::Reassert(action) });
    }
    match (record.state, vendor) {
        (PageState::Paged, Acknowledged) => Some(Repair::Ask(Asked::Acknowledge, Kind::Acknowledged)),
        (PageState::Paged | PageState::Acknowledged, Resolved) => Some(Repair::Ask(Asked::Resolve, Kind::Resolved)),
        // Resolved here, open there: the resolve never took (PagerDuty drops a resolve it
        // cannot match; Opsgenie's close can fail after its 202). Neither vendor lets a
        // person reopen a resolved page: a reopen comes from the domain and pages anew.
        (PageState::Resolved, Open | Acknowledged) => Some(Repair::Reassert(FollowUp::Resolve)),
        _ => None,
    }
}

/// What an `IncidentAnnotated` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnNote {
    /// Claim the note in the record, add it to the page, mark it posted.
    Post,
    /// Its post was claimed by a delivery that died: look for its mark on the page, and
    /// post it only if it is not there.
    Recover,
    /// Look again after this long (its page is being sent, or another delivery posts it).
    Wait(std::time::Duration),
    /// Not for this page, and why.
    Skip(&'static str),
    /// Already on the page.
    Done,
}

/// How long a note waits on a page still being sent (or not yet created).
pub const NOTE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The step for note `id`, written in `origin_vendor`, given the record and whether the
/// page's vendor can take notes (`cannot`: why not).
pub fn on_annotated(
    id: &str,
    origin_vendor: &str,
    record: Option<&PageRecord>,
    cannot: Option<&'static str>,
    now: Timestamp,
) -> OnNote {
    let Some(record) = record else { return OnNote::Wait(NOTE_WAIT) };
    if origin_vendor == record.target.provider.name() {
        return OnNote::Skip("it was written on this page");
    }
    match record.state {
        PageState::Claimed => return OnNote::Wait(NOTE_WAIT),
        PageState::Paged | PageState::Acknowledged | PageState::Resolved => {}
        PageState::Deferred | PageState::Below | PageState::Cancelled | PageState::Failed => {
            return OnNote::Skip("the incident has no page to add it to");
        }
    }
    if let Some(why) = cannot {
        return OnNote::Skip(why);
    }
    match notes::state(&record.notes, id, now) {
        NoteState::New => OnNote::Post,
        NoteState::Posted => OnNote::Done,
        NoteState::Live(after) => OnNote::Wait(after),
        NoteState::Stale => OnNote::Recover,
    }
}

/// What the deferred-page scan does with one record it lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDue {
    /// Due: claim it and fire the trigger.
    Fire,
    /// A claim a crash left: fire it again (the vendor deduplicates).
    FireAgain,
    /// Not due yet; the schedule in force says this instant, which the record does not.
    Reschedule(Timestamp),
    /// Not due yet.
    Wait,
    /// The escalation in force no longer pages its severity: cancel it.
    Drop,
    /// Another replica's live claim: leave it.
    Skip,
    /// No longer deferred: its marker is stale.
    ForgetMarker,
}

/// When a deferred page is due under the escalation in force, never before the vendor's
/// own delay (`not_before`); `None` when it no longer pages. Computed from when it was
/// deferred, so a corrected schedule applies to pages already waiting.
pub fn due_in_force(record: &PageRecord, policy: &Policy) -> Option<Timestamp> {
    let Some(incident) = record.incident() else { return record.due };
    let severity = Severity::try_from(incident.severity).unwrap_or(Severity::Unspecified);
    let due = due_under(severity, policy, record.deferred_at.unwrap_or(record.updated_at))?;
    Some(record.not_before.map_or(due, |nb| nb.max(due)))
}

/// When business hours opened (or open) for a deferred page, leaving out the vendor's own
/// delay: a page still waiting after it is overdue.
pub fn opening(record: &PageRecord, policy: &Policy) -> Option<Timestamp> {
    let incident = record.incident()?;
    let severity = Severity::try_from(incident.severity).unwrap_or(Severity::Unspecified);
    due_under(severity, policy, record.deferred_at.unwrap_or(record.updated_at))
}

/// The scan's step for `record` at `now`.
pub fn on_due(record: &PageRecord, policy: &Policy, now: Timestamp) -> OnDue {
    match record.state {
        PageState::Deferred => match due_in_force(record, policy) {
            Some(due) if due <= now => OnDue::Fire,
            Some(due) if record.due != Some(due) => OnDue::Reschedule(due),
            Some(_) => OnDue::Wait,
            None => OnDue::Drop,
        },
        PageState::Claimed => match liveness(record.last_alive(), now) {
            Liveness::Stale => OnDue::FireAgain,
            Liveness::Live { .. } => OnDue::Skip,
        },
        _ => OnDue::ForgetMarker,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Provider;
    use crate::routing::Target;
    use crate::schedule::{BusinessHours, Weekday, When};
    use jiff::SignedDuration;
    use proptest::prelude::*;
    use sre_contracts::domain::v1::IncidentCreated;

    const STATES: [PageState; 8] = [
        PageState::Deferred,
        PageState::Claimed,
        PageState::Paged,
        PageState::Acknowledged,
        PageState::Resolved,
        PageState::Cancelled,
        PageState::Failed,
        PageState::Below,
    ];

    fn policy() -> Policy {
        Policy {
            critical: When::Immediate,
            high: When::BusinessHoursOnly,
            hours: BusinessHours {
                start: jiff::civil::time(9, 0, 0, 0),
                end: jiff::civil::time(17, 0, 0, 0),
                tz: jiff::tz::TimeZone::get("Europe/Berlin").expect("tz"),
                weekdays: vec![Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri],
            },
        }
    }

    /// Tuesday 2026-12-08, 02:00 in Berlin (night) and 10:00 (business hours).
    fn night() -> Timestamp {
        "2026-12-08T01:00:00Z".parse().expect("ts")
    }
    fn day() -> Timestamp {
        "2026-12-08T09:00:00Z".parse().expect("ts")
    }
    fn opening() -> Timestamp {
        "2026-12-08T08:00:00Z".parse().expect("ts")
    }

    fn target() -> Target {
        Target { provider: Provider::Pagerduty, route: "default".into(), routing_key_ref: None, team: None }
    }

    fn record(state: PageState, severity: Severity, at: Timestamp) -> PageRecord {
        let incident = IncidentCreated { incident_id: "inc-1".into(), severity: severity as i32, ..Default::default() };
        let mut r = PageRecord::new(&incident, state, target(), at);
        if state == PageState::Deferred {
            r.due = due_under(severity, &policy(), at);
        }
        r
    }

    #[test]
    fn a_created_fact_pages_defers_or_not_by_severity_and_hour_and_once() {
        let p = policy();
        assert_eq!(on_created(Severity::Critical, &p, None, night()), OnCreated::Page);
        assert_eq!(on_created(Severity::High, &p, None, night()), OnCreated::Defer(opening()));
        assert_eq!(on_created(Severity::High, &p, None, day()), OnCreated::Page);
        assert_eq!(on_created(Severity::Medium, &p, None, day()), OnCreated::NotPaged);
        for state in STATES {
            let expected =
                if state == PageState::Claimed { OnCreated::Resend { own: false } } else { OnCreated::Duplicate };
            let r = record(state, Severity::Critical, night());
            assert_eq!(on_created(Severity::Critical, &p, Some(&r), night()), expected, "{state:?}");
        }
    }

    #[test]
    fn a_claim_found_by_a_created_fact_is_its_own_only_when_handed_back_or_stale() {
        let p = policy();
        let claimed = record(PageState::Claimed, Severity::Critical, night());
        let mut handed_back = claimed.clone();
        handed_back.handed_back = Some(night() + SignedDuration::from_secs(30));
        let later = |secs| night() + SignedDuration::from_secs(secs);
        let cases = [
            ("another delivery's live claim", &claimed, night(), false),
            ("live a few seconds on", &claimed, later(5), false),
            ("left by a crash (stale)", &claimed, later(11), true),
            ("handed back for its turn, come back early", &handed_back, night(), true),
            ("handed back, come back at its turn", &handed_back, later(30), true),
        ];
        for (what, r, now, own) in cases {
            assert_eq!(on_created(Severity::Critical, &p, Some(r), now), OnCreated::Resend { own }, "{what}");
        }
    }

    #[test]
    fn every_follow_up_against_every_state() {
        use OnFollowUp::{Cancel, Duplicate, FinishTrigger, NotPaged, Send, Wait};
        // (state, acknowledge, resolve)
        let table = [
            (PageState::Deferred, Cancel, Cancel),
            (PageState::Claimed, FinishTrigger, FinishTrigger),
            (PageState::Paged, Send, Send),
            (PageState::Acknowledged, Duplicate, Send),
            (PageState::Resolved, Duplicate, Duplicate),
            (PageState::Cancelled, Duplicate, Duplicate),
            (PageState::Failed, Duplicate, Duplicate),
            (PageState::Below, Cancel, Cancel),
        ];
        assert_eq!(table.len(), STATES.len());
        for (state, acknowledge, resolve) in table {
            let mut r = record(state, Severity::Critical, night());
            assert_eq!(on_follow_up(FollowUp::Acknowledge, 0, Some(&r)), acknowledge, "{state:?}");
            assert_eq!(on_follow_up(FollowUp::Resolve, 0, Some(&r)), resolve, "{state:?}");
            // Reopened once since: the first life's follow-ups are stale, the third's wait.
            r.reopen_count = 1;
            assert_eq!(on_follow_up(FollowUp::Acknowledge, 1, Some(&r)), acknowledge, "{state:?}, second life");
            for action in [FollowUp::Acknowledge, FollowUp::Resolve] {
                assert_eq!(on_follow_up(action, 0, Some(&r)), Duplicate, "{state:?}: an earlier life");
                assert_eq!(on_follow_up(action, 2, Some(&r)), Wait, "{state:?}: a reopen not handled yet");
            }
        }
        assert_eq!(on_follow_up(FollowUp::Acknowledge, 0, None), NotPaged);
        assert_eq!(on_follow_up(FollowUp::Resolve, 0, None), NotPaged);
        assert_eq!(on_follow_up(FollowUp::Resolve, 1, None), Wait, "reopened before it was created");
        // A claim whose trigger was handed back before it left (the rate limit): nobody
        // has been paged, so a follow-up cancels it rather than page and then resolve.
        let mut back = record(PageState::Claimed, Severity::Critical, night());
        back.handed_back = Some(night() + SignedDuration::from_secs(60));
        assert_eq!(on_follow_up(FollowUp::Acknowledge, 0, Some(&back)), Cancel);
        assert_eq!(on_follow_up(FollowUp::Resolve, 0, Some(&back)), Cancel);
        assert_eq!(back.moved(PageState::Paged, night()).handed_back, None, "a move ends the hand-back");
        // Alive until its fact comes back: the scan does not take it for a stale claim.
        let policy = policy();
        assert_eq!(on_due(&back, &policy, night() + SignedDuration::from_secs(65)), OnDue::Skip);
        assert_eq!(on_due(&back, &policy, night() + SignedDuration::from_secs(75)), OnDue::FireAgain);
    }

    #[test]
    fn every_reopen_against_every_state() {
        use OnReopened::{Defer, Hold, Page, Track};
        let p = policy();
        // (state, critical at night, high at night, medium)
        let table = [
            (PageState::Deferred, Track, Track, Track),
            (PageState::Claimed, Track, Track, Track),
            (PageState::Paged, Track, Track, Track),
            (PageState::Acknowledged, Track, Track, Track),
            (PageState::Resolved, Page, Defer(opening()), Hold),
            (PageState::Cancelled, Page, Defer(opening()), Hold),
            (PageState::Failed, Page, Defer(opening()), Hold),
            (PageState::Below, Page, Defer(opening()), Hold),
        ];
        assert_eq!(table.len(), STATES.len());
        for (state, critical, high, medium) in table {
            for (severity, expected) in
                [(Severity::Critical, critical), (Severity::High, high), (Severity::Medium, medium)]
            {
                let r = record(state, severity, night());
                assert_eq!(on_reopened(1, &p, Some(&r), night()), expected, "{state:?} {severity:?}");
                // The same reopen again, or an older one: handled; its claim left unfinished
                // (a vendor error, a crash): the trigger again.
                let mut again = r.clone();
                again.reopen_count = 1;
                let handled = if state == PageState::Claimed { OnReopened::Finish } else { OnReopened::Duplicate };
                assert_eq!(on_reopened(1, &p, Some(&again), night()), handled, "{state:?}");
                again.reopen_count = 2;
                assert_eq!(on_reopened(1, &p, Some(&again), night()), OnReopened::Duplicate, "{state:?}");
            }
        }
        // A high incident reopened in business hours pages at once.
        assert_eq!(on_reopened(1, &p, Some(&record(PageState::Resolved, Severity::High, night())), day()), Page);
        // Ended before it was ever paged, and its IncidentCreated never came: nothing to page.
        let mut stub = record(PageState::Cancelled, Severity::Critical, night());
        stub.incident = None;
        assert_eq!(on_reopened(1, &p, Some(&stub), night()), Track);
        assert_eq!(on_reopened(1, &p, None, night()), OnReopened::Wait);
    }

    #[test]
    fn every_severity_change_against_every_state() {
        use OnSeverity::{Defer, Drop, PageNow, Record};
        let p = policy();
        // (state, raised to critical, to high at night, lowered to medium)
        let table = [
            (PageState::Deferred, PageNow, Defer(opening()), Drop),
            (PageState::Claimed, Record, Record, Record),
            (PageState::Paged, Record, Record, Record),
            (PageState::Acknowledged, Record, Record, Record),
            (PageState::Resolved, Record, Record, Record),
            (PageState::Cancelled, Record, Record, Record),
            (PageState::Failed, Record, Record, Record),
            (PageState::Below, PageNow, Defer(opening()), Record),
        ];
        assert_eq!(table.len(), STATES.len());
        for (state, critical, high, medium) in table {
            let r = record(state, Severity::High, night());
            for (to, expected) in [(Severity::Critical, critical), (Severity::High, high), (Severity::Medium, medium)] {
                assert_eq!(on_severity(to, Some(night()), &p, Some(&r), night()), expected, "{state:?} → {to:?}");
            }
        }
        // Of two changes, the later one holds, whatever order they come in.
        let mut changed = record(PageState::Deferred, Severity::High, night());
        changed.severity_at = Some(night());
        let earlier = night() - SignedDuration::from_mins(1);
        assert_eq!(on_severity(Severity::Critical, Some(earlier), &p, Some(&changed), night()), OnSeverity::Stale);
        assert_eq!(on_severity(Severity::Critical, Some(night()), &p, Some(&changed), night()), OnSeverity::Stale);
        // The same change again, its page claimed but not finished: the trigger again.
        let claimed = PageRecord { state: PageState::Claimed, ..changed.clone() };
        assert_eq!(on_severity(Severity::Critical, Some(night()), &p, Some(&claimed), night()), OnSeverity::Finish);
        assert_eq!(on_severity(Severity::Critical, Some(earlier), &p, Some(&claimed), night()), OnSeverity::Stale);
        assert_eq!(on_severity(Severity::Critical, None, &p, None, night()), OnSeverity::Wait);
        // In business hours a high incident pages at once.
        let below = record(PageState::Below, Severity::Medium, night());
        assert_eq!(on_severity(Severity::High, None, &p, Some(&below), day()), PageNow);
    }

    #[test]
    fn a_note_goes_on_an_existing_page_once_and_never_back_where_it_came_from() {
        use OnNote::{Post, Skip, Wait};
        let no_page = Skip("the incident has no page to add it to");
        // (state, a note from Jira)
        let table = [
            (PageState::Deferred, no_page),
            (PageState::Claimed, Wait(NOTE_WAIT)),
            (PageState::Paged, Post),
            (PageState::Acknowledged, Post),
            (PageState::Resolved, Post),
            (PageState::Cancelled, no_page),
            (PageState::Failed, no_page),
            (PageState::Below, no_page),
        ];
        assert_eq!(table.len(), STATES.len());
        for (state, expected) in table {
            let r = record(state, Severity::Critical, night());
            assert_eq!(on_annotated("n1", "jira", Some(&r), None, night()), expected, "{state:?}");
            let from_here = on_annotated("n1", "pagerduty", Some(&r), None, night());
            assert_eq!(from_here, Skip("it was written on this page"), "{state:?}: never back to its origin");
        }
        let paged = record(PageState::Paged, Severity::Critical, night());
        assert_eq!(on_annotated("n1", "jira", Some(&paged), Some("no REST key"), night()), Skip("no REST key"));
        assert_eq!(on_annotated("n1", "", None, None, night()), Wait(NOTE_WAIT), "its page is still to come");
        // Claimed by a live delivery: wait; by a dead one: look for it; posted: done.
        let mut claimed = paged.clone();
        claimed.notes = notes::claimed(&[], "n1", night());
        assert!(matches!(on_annotated("n1", "jira", Some(&claimed), None, night()), Wait(_)));
        let later = night() + SignedDuration::from_secs(60);
        assert_eq!(on_annotated("n1", "jira", Some(&claimed), None, later), OnNote::Recover);
        claimed.notes = notes::posted(&claimed.notes, "n1", later);
        assert_eq!(on_annotated("n1", "jira", Some(&claimed), None, later), OnNote::Done);
        assert_eq!(on_annotated("n2", "", Some(&claimed), None, later), Post, "another note");
    }

    #[test]
    fn the_scan_fires_what_is_due_follows_the_schedule_and_takes_over_dead_claims() {
        let p = policy();
        let deferred = record(PageState::Deferred, Severity::High, night());
        assert_eq!(on_due(&deferred, &p, night()), OnDue::Wait);
        assert_eq!(on_due(&deferred, &p, opening()), OnDue::Fire);
        // Deferred under an older schedule: the one in force decides.
        let mut moved = deferred.clone();
        moved.due = Some(opening() + SignedDuration::from_hours(1));
        assert_eq!(on_due(&moved, &p, night()), OnDue::Reschedule(opening()));
        // The vendor asked to wait: never before that.
        let mut throttled = deferred.clone();
        throttled.not_before = Some(opening() + SignedDuration::from_mins(2));
        throttled.due = throttled.not_before;
        assert_eq!(on_due(&throttled, &p, opening()), OnDue::Wait);
        // The escalation no longer pages high: dropped.
        let never = Policy { high: When::Never, ..policy() };
        assert_eq!(on_due(&deferred, &never, night()), OnDue::Drop);
        // A claim renewed a second ago is another replica's; one left 30 s ago is a crash's.
        let claimed = record(PageState::Claimed, Severity::High, opening());
        assert_eq!(on_due(&claimed, &p, opening() + SignedDuration::from_secs(1)), OnDue::Skip);
        assert_eq!(on_due(&claimed, &p, opening() + SignedDuration::from_secs(30)), OnDue::FireAgain);
        for state in [PageState::Paged, PageState::Acknowledged, PageState::Resolved, PageState::Cancelled] {
            assert_eq!(on_due(&record(state, Severity::High, night()), &p, day()), OnDue::ForgetMarker, "{state:?}");
        }
    }

    /// A fact the sink may receive about one incident, of the life it belongs to, plus the
    /// scan.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Event {
        Created,
        Acknowledged(u32),
        Resolved(u32),
        Reopened(u32),
        Severity(Severity, u32),
        Scan,
    }

    /// What the runs observe: the triggers sent, by the life they were sent in, and the
    /// follow-ups sent, by life.
    #[derive(Debug, Default)]
    struct Seen {
        triggers: Vec<u32>,
        follow_ups: Vec<(u32, FollowUp)>,
        /// The lives whose acknowledge or resolve has been handled.
        ended: std::collections::BTreeSet<u32>,
        /// Triggers sent in a life already acknowledged or resolved.
        late: Vec<u32>,
    }

    /// Runs the plans over one record as the shell does (every vendor call succeeds); a
    /// fact that must wait goes to the back of the queue, as JetStream redelivers it after
    /// facts delivered meanwhile.
    fn run(severity: Severity, events: &[Event], mut now: Timestamp) -> (Option<PageRecord>, Seen) {
        let p = policy();
        let mut record: Option<PageRecord> = None;
        let mut seen = Seen::default();
        let incident = IncidentCreated { incident_id: "inc-1".into(), severity: severity as i32, ..Default::default() };
        let mut queue: std::collections::VecDeque<Event> = events.iter().copied().collect();
        let mut deliveries = 0;
        while let Some(event) = queue.pop_front() {
            deliveries += 1;
            assert!(deliveries < 500, "a fact never settles: {events:?}");
            now += SignedDuration::from_mins(50);
            let life = record.as_ref().map_or(0, |r| r.reopen_count);
            let page = |r: &PageRecord, seen: &mut Seen| {
                seen.triggers.push(r.reopen_count);
                if seen.ended.contains(&r.reopen_count) {
                    seen.late.push(r.reopen_count);
                }
                r.moved(PageState::Paged, now)
            };
            match event {
                Event::Created => match on_created(severity, &p, record.as_ref(), now) {
                    OnCreated::Page | OnCreated::Resend { .. } => {
                        seen.triggers.push(life);
                        record = Some(PageRecord::new(&incident, PageState::Paged, target(), now));
                    }
                    OnCreated::Defer(due) => {
                        let mut r = PageRecord::new(&incident, PageState::Deferred, target(), now);
                        r.due = Some(due);
                        record = Some(r);
                    }
                    OnCreated::NotPaged => record = Some(PageRecord::new(&incident, PageState::Below, target(), now)),
                    OnCreated::Duplicate => {
                        // The shell fills in a stub's incident, so a reopen can page it.
                        if let Some(r) = record.as_mut().filter(|r| r.incident.is_none()) {
                            r.incident = PageRecord::new(&incident, r.state, target(), now).incident;
                        }
                    }
                },
                Event::Acknowledged(n) | Event::Resolved(n) => {
                    let action =
                        if matches!(event, Event::Acknowledged(_)) { FollowUp::Acknowledge } else { FollowUp::Resolve };
                    let step = on_follow_up(action, n, record.as_ref());
                    if step != OnFollowUp::Wait {
                        seen.ended.insert(n);
                    }
                    match step {
                        OnFollowUp::NotPaged => {
                            let mut r = PageRecord::new(&incident, PageState::Cancelled, target(), now);
                            r.incident = None;
                            record = Some(r);
                        }
                        OnFollowUp::Cancel => record = record.map(|r| r.moved(PageState::Cancelled, now)),
                        OnFollowUp::Send => {
                            seen.follow_ups.push((n, action));
                            record = record.map(|r| r.moved(followed(action), now));
                        }
                        OnFollowUp::Wait => queue.push_back(event),
                        OnFollowUp::FinishTrigger => unreachable!("no claim outlives a step here"),
                        OnFollowUp::Duplicate => {}
                    }
                }
                Event::Reopened(n) => {
                    let step = on_reopened(n, &p, record.as_ref(), now);
                    if step == OnReopened::Wait {
                        queue.push_back(event);
                        continue;
                    }
                    let Some(mut r) = record.take() else { unreachable!("waits for its record") };
                    if !matches!(step, OnReopened::Duplicate | OnReopened::Finish) {
                        r.reopen_count = n;
                    }
                    record = Some(match step {
                        OnReopened::Page => page(&r, &mut seen),
                        OnReopened::Defer(due) => {
                            let mut d = r.moved(PageState::Deferred, now);
                            d.due = Some(due);
                            d.deferred_at = Some(now);
                            d
                        }
                        OnReopened::Hold => r.moved(PageState::Below, now),
                        OnReopened::Finish => unreachable!("no claim outlives a step here"),
                        OnReopened::Track | OnReopened::Duplicate | OnReopened::Wait => r,
                    });
                }
                Event::Severity(to, minute) => {
                    let at = Some(night() + SignedDuration::from_mins(i64::from(minute)));
                    let step = on_severity(to, at, &p, record.as_ref(), now);
                    if step == OnSeverity::Wait {
                        queue.push_back(event);
                        continue;
                    }
                    let Some(r) = record.take() else { unreachable!("waits for its record") };
                    let next = r.with_severity(to, at);
                    record = Some(match step {
                        OnSeverity::PageNow => page(&next, &mut seen),
                        OnSeverity::Defer(due) => {
                            let mut d = next.moved(PageState::Deferred, now);
                            d.due = Some(due);
                            if r.state != PageState::Deferred {
                                d.deferred_at = Some(now);
                            }
                            d
                        }
                        OnSeverity::Drop => next.moved(PageState::Below, now),
                        OnSeverity::Record => next,
                        OnSeverity::Finish => unreachable!("no claim outlives a step here"),
                        OnSeverity::Stale | OnSeverity::Wait => r,
                    });
                }
                Event::Scan => {
                    if let Some(r) = &record {
                        match on_due(r, &p, now) {
                            OnDue::Fire | OnDue::FireAgain => record = Some(page(r, &mut seen)),
                            OnDue::Drop => record = Some(r.moved(PageState::Cancelled, now)),
                            OnDue::Reschedule(_) | OnDue::Wait | OnDue::Skip | OnDue::ForgetMarker => {}
                        }
                    }
                }
            }
        }
        (record, seen)
    }

    /// An incident's facts as the domain publishes them (each life acknowledged and resolved
    /// at most once, a reopen only after a resolve, severity changes at any time), each
    /// delivered once or twice, the redelivery anywhere later, and the scan running
    /// between.
    fn events() -> impl Strategy<Value = Vec<Event>> {
        #[derive(Debug, Clone, Copy)]
        enum Op {
            Ack,
            Resolve,
            Reopen,
            Raise,
            Lower,
            Scan,
        }
        let op = prop_oneof![
            Just(Op::Ack),
            Just(Op::Resolve),
            Just(Op::Reopen),
            Just(Op::Raise),
            Just(Op::Lower),
            Just(Op::Scan)
        ];
        (prop::collection::vec(op, 0..14), prop::collection::vec(any::<prop::sample::Index>(), 0..4)).prop_map(
            |(ops, repeats)| {
                let mut timeline = vec![Event::Created];
                let (mut life, mut acked, mut ended, mut minute) = (0u32, false, false, 0u32);
                for op in ops {
                    match op {
                        Op::Ack if !acked && !ended => {
                            acked = true;
                            timeline.push(Event::Acknowledged(life));
                        }
                        Op::Resolve if !ended => {
                            ended = true;
                            timeline.push(Event::Resolved(life));
                        }
                        Op::Reopen if ended => {
                            (life, acked, ended) = (life + 1, false, false);
                            timeline.push(Event::Reopened(life));
                        }
                        Op::Raise | Op::Lower => {
                            minute += 1;
                            let to = if matches!(op, Op::Raise) { Severity::Critical } else { Severity::Medium };
                            timeline.push(Event::Severity(to, minute));
                        }
                        Op::Scan => timeline.push(Event::Scan),
                        _ => {}
                    }
                }
                // Redeliveries: a fact again, later than its first delivery.
                let mut delivered = timeline.clone();
                for r in repeats {
                    let at = r.index(timeline.len());
                    let again = timeline[at];
                    let to = at + 1 + r.index(delivered.len() - at);
                    delivered.insert(to.min(delivered.len()), again);
                }
                delivered
            },
        )
    }

    proptest! {
        /// Whatever the redeliveries: each life pages at most once, and never after that
        /// life was acknowledged or resolved; each follow-up is sent once per life; a raised
        /// severity pages a waiting incident; and the page ends as the last life did.
        #[test]
        fn any_delivery_of_an_incidents_lives_pages_each_life_at_most_once(
            severity in prop_oneof![Just(Severity::Critical), Just(Severity::High), Just(Severity::Medium)],
            events in events(),
        ) {
            let (record, seen) = run(severity, &events, night());
            let lives = record.as_ref().map_or(0, |r| r.reopen_count);
            for life in 0..=lives {
                prop_assert!(seen.triggers.iter().filter(|t| **t == life).count() <= 1, "life {life}: {seen:?} for {events:?}");
                for action in [FollowUp::Acknowledge, FollowUp::Resolve] {
                    prop_assert!(seen.follow_ups.iter().filter(|f| **f == (life, action)).count() <= 1, "{seen:?}");
                }
            }
            prop_assert!(seen.late.is_empty(), "paged after its life was acknowledged or resolved: {:?} for {:?}", seen, events);
            if let Some(r) = &record {
                // The last life resolved, and it had paged: its page ends resolved.
                let last_resolved = events.contains(&Event::Resolved(r.reopen_count));
                if last_resolved && seen.triggers.contains(&r.reopen_count) {
                    prop_assert!(matches!(r.state, PageState::Resolved | PageState::Acknowledged), "{:?} for {:?}", r.state, events);
                }
                // The incident is critical by now and its life is open: it has been paged.
                let critical_now = r.severity() == Severity::Critical;
                let open = !events.iter().any(|e| matches!(e, Event::Acknowledged(n) | Event::Resolved(n) if *n == r.reopen_count));
                if critical_now && open {
                    prop_assert!(seen.triggers.contains(&r.reopen_count), "critical and open, never paged: {:?} {:?}", seen, events);
                }
            }
        }
    }

    #[test]
    fn the_reconciler_asks_what_a_person_did_and_resends_only_what_the_domain_asked() {
        use VendorStatus::{Acknowledged, Missing, Open, Resolved};
        let ask_ack = Some(Repair::Ask(Asked::Acknowledge, Kind::Acknowledged));
        let ask_resolve = Some(Repair::Ask(Asked::Resolve, Kind::Resolved));
        let resend = Some(Repair::Reassert(FollowUp::Resolve));
        let table: &[(PageState, Option<FollowUp>, VendorStatus, Option<Repair>)] = &[
            (PageState::Paged, None, Open, None),
            (PageState::Paged, None, Acknowledged, ask_ack),
            (PageState::Paged, None, Resolved, ask_resolve),
            (PageState::Acknowledged, None, Acknowledged, None),
            (PageState::Acknowledged, None, Resolved, ask_resolve),
            // PagerDuty re-triggers an incident whose acknowledgement timed out: nobody's doing.
            (PageState::Acknowledged, None, Open, None),
            (PageState::Resolved, None, Resolved, None),
            (PageState::Resolved, None, Open, resend),
            (PageState::Resolved, None, Acknowledged, resend),
            // The domain's resolve did not reach the vendor: sent again, once it holds it recorded.
            (PageState::Paged, Some(FollowUp::Resolve), Open, resend),
            (PageState::Acknowledged, Some(FollowUp::Resolve), Acknowledged, resend),
            (PageState::Paged, Some(FollowUp::Resolve), Resolved, Some(Repair::Settle(FollowUp::Resolve))),
            (PageState::Paged, Some(FollowUp::Acknowledge), Open, Some(Repair::Reassert(FollowUp::Acknowledge))),
            (PageState::Paged, Some(FollowUp::Acknowledge), Resolved, Some(Repair::Settle(FollowUp::Acknowledge))),
            // Never a trigger: a page the vendor lost, or one never sent, is left alone.
            (PageState::Paged, None, Missing, None),
            (PageState::Paged, Some(FollowUp::Resolve), Missing, None),
            (PageState::Claimed, None, Resolved, None),
            (PageState::Deferred, None, Acknowledged, None),
            (PageState::Cancelled, None, Open, None),
            (PageState::Failed, None, Open, None),
            (PageState::Below, None, Resolved, None),
        ];
        for (state, unsent, vendor, want) in table {
            let mut r = record(*state, Severity::Critical, day());
            r.unsent = *unsent;
            assert_eq!(reconcile(&r, *vendor), *want, "{state:?} unsent {unsent:?}, vendor {vendor:?}");
        }
    }

    #[test]
    fn open_pages_and_those_ended_within_a_day_are_reconciled() {
        let later = |h: i64| day() + SignedDuration::from_hours(h);
        let r = |state| record(state, Severity::Critical, day());
        assert!(reconciled(&r(PageState::Paged), later(24 * 7)));
        assert!(reconciled(&r(PageState::Acknowledged), later(24 * 7)));
        assert!(reconciled(&r(PageState::Resolved), later(23)));
        assert!(!reconciled(&r(PageState::Resolved), later(25)));
        let mut unsent = r(PageState::Resolved);
        unsent.unsent = Some(FollowUp::Resolve);
        assert!(reconciled(&unsent, later(24 * 7)));
        for state in
            [PageState::Deferred, PageState::Claimed, PageState::Cancelled, PageState::Failed, PageState::Below]
        {
            assert!(!reconciled(&r(state), later(1)), "{state:?}");
        }
    }
}
