//! What to do about a fact, or a deferred page at a scan, given the page record as read,
//! the escalation policy and `now`: the sink's decisions as pure functions. The shell
//! (`sink`) carries each out with compare-and-set and asks again when the record moved.

use jiff::Timestamp;
use sre_contracts::domain::v1::Severity;
use sre_sink::claim::{Claim, Liveness, liveness};

use crate::provider::FollowUp;
use crate::schedule::{Decision, Policy, decide, due_under};
use crate::state::{PageRecord, PageState};

/// What an `IncidentCreated` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCreated {
    /// No record: claim it and page now.
    Page,
    /// No record: keep it deferred until this instant (business hours).
    Defer(Timestamp),
    /// No record, and the escalation never pages this severity.
    NotPaged,
    /// A claim a delivery left mid-call: send the trigger again (the vendor deduplicates
    /// on the incident id), then record it.
    Resend,
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
        Some(PageState::Claimed) => OnCreated::Resend,
        Some(_) => OnCreated::Duplicate,
    }
}

/// What an acknowledge or resolve asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFollowUp {
    /// Never paged (below the threshold, or its `IncidentCreated` is still to come):
    /// record it as cancelled, so a later `IncidentCreated` pages nobody for it.
    NotPaged,
    /// A deferred page: cancel it, it will never page.
    Cancel,
    /// The trigger is in flight or died mid-call: finish it (the vendor deduplicates),
    /// then ask again. Waiting for the `IncidentCreated` to come back could use up this
    /// fact's `max_deliver`, and the on-call would be escalated for nothing.
    FinishTrigger,
    /// Send the acknowledge or resolve where the page went, then record it.
    Send,
    /// Already done, or nothing to follow up (cancelled, refused).
    Duplicate,
}

/// The step for `action`, given the record.
pub fn on_follow_up(action: FollowUp, record: Option<&PageRecord>) -> OnFollowUp {
    match (record.map(|r| r.state), action) {
        (None, _) => OnFollowUp::NotPaged,
        (Some(PageState::Deferred), _) => OnFollowUp::Cancel,
        (Some(PageState::Claimed), _) => OnFollowUp::FinishTrigger,
        (Some(PageState::Paged), _) | (Some(PageState::Acknowledged), FollowUp::Resolve) => OnFollowUp::Send,
        (Some(PageState::Acknowledged | PageState::Resolved | PageState::Cancelled | PageState::Failed), _) => {
            OnFollowUp::Duplicate
        }
    }
}

/// The state a follow-up leaves the page in.
pub fn followed(action: FollowUp) -> PageState {
    match action {
        FollowUp::Acknowledge => PageState::Acknowledged,
        FollowUp::Resolve => PageState::Resolved,
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

    const STATES: [PageState; 7] = [
        PageState::Deferred,
        PageState::Claimed,
        PageState::Paged,
        PageState::Acknowledged,
        PageState::Resolved,
        PageState::Cancelled,
        PageState::Failed,
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

    fn record(state: PageState, severity: Severity, at: Timestamp) -> PageRecord {
        let incident = IncidentCreated { incident_id: "inc-1".into(), severity: severity as i32, ..Default::default() };
        let target =
            Target { provider: Provider::Pagerduty, route: "default".into(), routing_key_ref: None, team: None };
        let mut r = PageRecord::new(&incident, state, target, at);
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
            let expected = if state == PageState::Claimed { OnCreated::Resend } else { OnCreated::Duplicate };
            let r = record(state, Severity::Critical, night());
            assert_eq!(on_created(Severity::Critical, &p, Some(&r), night()), expected, "{state:?}");
        }
    }

    #[test]
    fn every_follow_up_against_every_state() {
        use OnFollowUp::{Cancel, Duplicate, FinishTrigger, NotPaged, Send};
        // (state, acknowledge, resolve)
        let table = [
            (PageState::Deferred, Cancel, Cancel),
            (PageState::Claimed, FinishTrigger, FinishTrigger),
            (PageState::Paged, Send, Send),
            (PageState::Acknowledged, Duplicate, Send),
            (PageState::Resolved, Duplicate, Duplicate),
            (PageState::Cancelled, Duplicate, Duplicate),
            (PageState::Failed, Duplicate, Duplicate),
        ];
        assert_eq!(table.len(), STATES.len());
        for (state, acknowledge, resolve) in table {
            let r = record(state, Severity::Critical, night());
            assert_eq!(on_follow_up(FollowUp::Acknowledge, Some(&r)), acknowledge, "{state:?}");
            assert_eq!(on_follow_up(FollowUp::Resolve, Some(&r)), resolve, "{state:?}");
        }
        assert_eq!(on_follow_up(FollowUp::Acknowledge, None), NotPaged);
        assert_eq!(on_follow_up(FollowUp::Resolve, None), NotPaged);
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

    /// A fact the sink may receive about one incident, in any order and any number of
    /// times (redeliveries), plus the scan.
    #[derive(Debug, Clone, Copy)]
    enum Event {
        Created,
        Acknowledged,
        Resolved,
        Scan,
    }

    /// Runs the plans over one record as the shell does (every vendor call succeeds), and
    /// counts the triggers sent.
    fn run(
        severity: Severity,
        events: &[Event],
        mut now: Timestamp,
    ) -> (Option<PageRecord>, Vec<usize>, Vec<FollowUp>) {
        let p = policy();
        let mut record: Option<PageRecord> = None;
        let (mut triggers, mut follow_ups) = (Vec::new(), Vec::new());
        let incident = IncidentCreated { incident_id: "inc-1".into(), severity: severity as i32, ..Default::default() };
        let target =
            Target { provider: Provider::Pagerduty, route: "default".into(), routing_key_ref: None, team: None };
        for (n, event) in events.iter().enumerate() {
            now += SignedDuration::from_mins(50);
            match event {
                Event::Created => match on_created(severity, &p, record.as_ref(), now) {
                    OnCreated::Page | OnCreated::Resend => {
                        triggers.push(n);
                        record = Some(PageRecord::new(&incident, PageState::Paged, target.clone(), now));
                    }
                    OnCreated::Defer(due) => {
                        let mut r = PageRecord::new(&incident, PageState::Deferred, target.clone(), now);
                        r.due = Some(due);
                        record = Some(r);
                    }
                    OnCreated::NotPaged | OnCreated::Duplicate => {}
                },
                Event::Acknowledged | Event::Resolved => {
                    let action =
                        if matches!(event, Event::Acknowledged) { FollowUp::Acknowledge } else { FollowUp::Resolve };
                    match on_follow_up(action, record.as_ref()) {
                        OnFollowUp::NotPaged | OnFollowUp::Cancel => {
                            let mut r = PageRecord::new(&incident, PageState::Cancelled, target.clone(), now);
                            r.incident = None;
                            record = Some(r);
                        }
                        OnFollowUp::Send => {
                            follow_ups.push(action);
                            record = record.map(|r| r.moved(followed(action), now));
                        }
                        OnFollowUp::FinishTrigger => unreachable!("no claim outlives a step here"),
                        OnFollowUp::Duplicate => {}
                    }
                }
                Event::Scan => {
                    if let Some(r) = &record {
                        match on_due(r, &p, now) {
                            OnDue::Fire | OnDue::FireAgain => {
                                triggers.push(n);
                                record = Some(r.moved(PageState::Paged, now));
                            }
                            OnDue::Drop => record = Some(r.moved(PageState::Cancelled, now)),
                            OnDue::Reschedule(_) | OnDue::Wait | OnDue::Skip | OnDue::ForgetMarker => {}
                        }
                    }
                }
            }
        }
        (record, triggers, follow_ups)
    }

    fn events() -> impl Strategy<Value = Vec<Event>> {
        prop::collection::vec(
            prop_oneof![Just(Event::Created), Just(Event::Acknowledged), Just(Event::Resolved), Just(Event::Scan)],
            0..12,
        )
    }

    proptest! {
        /// Whatever the order and the repeats: one trigger at most, never a trigger once
        /// acknowledged or resolved, each follow-up sent at most once, a resolve never
        /// followed by an acknowledge.
        #[test]
        fn any_order_of_facts_pages_at_most_once_and_never_after_it_ended(
            critical in any::<bool>(),
            events in events(),
        ) {
            let severity = if critical { Severity::Critical } else { Severity::High };
            let (record, triggers, follow_ups) = run(severity, &events, night());
            prop_assert!(triggers.len() <= 1, "{triggers:?} triggers for {events:?}");
            let ended = events.iter().position(|e| matches!(e, Event::Acknowledged | Event::Resolved));
            if let (Some(&paged), Some(ended)) = (triggers.first(), ended) {
                prop_assert!(paged < ended, "paged after it was acknowledged or resolved: {events:?}");
            }
            for action in [FollowUp::Acknowledge, FollowUp::Resolve] {
                prop_assert!(follow_ups.iter().filter(|a| **a == action).count() <= 1, "{follow_ups:?}");
            }
            prop_assert!(follow_ups != [FollowUp::Resolve, FollowUp::Acknowledge], "{follow_ups:?}");
            // Paged, then resolved: the page ends resolved.
            let resolved_after = triggers.first().is_some_and(|&t| events[t..].iter().any(|e| matches!(e, Event::Resolved)));
            if resolved_after {
                prop_assert_eq!(record.map(|r| r.state), Some(PageState::Resolved), "{:?}", events);
            }
        }
    }
}
