//! What to do about a fact, given the ticket record as read and `now`: the sink's decisions
//! as pure functions. The shell (`sink`) takes one step at a time, writes its outcome with
//! compare-and-set, reads the record again and asks again, until the plan says it is done
//! or has to wait.

use std::time::Duration;

use jiff::Timestamp;
use sre_resilience::CallError;
use sre_sink::claim::{Claim, Liveness, liveness, until_stale};

use crate::metrics::Action;
use crate::provider::VendorError;
use crate::state::{TicketRecord, TicketState};

/// Wait for a ticket that does not exist yet (a Resolved before its Created).
pub const WAIT_FOR_TICKET: Duration = Duration::from_secs(5);

/// The next step for an `IncidentCreated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCreated {
    /// No record: claim it, then create the ticket.
    Claim,
    /// The ticket exists, or was refused for good: nothing to do.
    Done,
    /// Another delivery holds a live claim: look again after this long.
    Wait(Duration),
    /// A claim a crash (or a failed call) left: take it over, then look for the ticket by
    /// its marker first when a create call may have made it (`search_first`), else create.
    TakeOver {
        /// Whether a call may have created the ticket.
        search_first: bool,
    },
}

/// The next step for an `IncidentCreated`, given the record.
pub fn on_created(record: Option<&TicketRecord>, now: Timestamp, dry_run: bool) -> OnCreated {
    let Some(record) = record else { return OnCreated::Claim };
    if record.state != TicketState::Claimed {
        return OnCreated::Done;
    }
    match liveness(record.last_alive(), now) {
        Liveness::Live { look_again } => OnCreated::Wait(look_again),
        // A released claim (`claimed_at: None`) means the vendor answered with an error:
        // nothing was created, nothing to look for. A dry run creates nothing either.
        Liveness::Stale => OnCreated::TakeOver { search_first: record.claimed_at.is_some() && !dry_run },
    }
}

/// The next step for an acknowledge, resolve or close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnUpdate {
    /// Nothing (more) to do: already done, or the ticket was refused.
    Done,
    /// Not possible yet: look again after `after`.
    Wait {
        /// When.
        after: Duration,
        /// Why, for the log and the dead letter if it never becomes possible.
        reason: &'static str,
    },
    /// A create that crashed: take the claim over and look for the ticket by its marker.
    /// Found: record it, then plan again; not found: leave the claim stale for the
    /// `IncidentCreated` to create at once, and wait.
    Recover,
    /// Post the action's comment, record that it was posted, then plan again.
    Comment,
    /// Move the ticket (resolve, close), record `to`, then plan again.
    Transition {
        /// The state recorded once the vendor has done it.
        to: TicketState,
    },
}

/// The state an action leaves the ticket in.
fn done_state(action: Action) -> TicketState {
    match action {
        Action::Create | Action::Acknowledge | Action::Reopen | Action::Severity | Action::Note => TicketState::Created,
        Action::Resolve => TicketState::Resolved,
        Action::Close => TicketState::Closed,
    }
}

/// Whether `action`'s comment is on the ticket.
pub fn commented(record: &TicketRecord, action: Action) -> bool {
    match action {
        Action::Create | Action::Reopen | Action::Severity | Action::Note => true,
        Action::Acknowledge => record.acknowledge_commented,
        Action::Resolve => record.resolve_commented,
        Action::Close => record.close_commented,
    }
}

/// How long a resolve or close waits on a ticket still being created. A claim left by a
/// crash is recovered only when it goes stale, so looking every 5 s meanwhile would spend
/// `max_deliver` for nothing: the next look is at the earliest moment the ticket can
/// exist, then every 5 s.
pub fn wait_for_claimed(last_alive: Option<Timestamp>, now: Timestamp) -> Duration {
    last_alive.and_then(|at| until_stale(now.duration_since(at))).map_or(WAIT_FOR_TICKET, |d| d.max(WAIT_FOR_TICKET))
}

/// The next step for `action` (acknowledge, resolve or close) of the incident's life
/// `reopen_count`, given the record. A dry run posts no comments: it goes straight to the
/// (unsent) transition. A fact of an earlier life is done; one of a later life waits for
/// its reopen.
pub fn on_update(
    action: Action,
    reopen_count: u32,
    record: Option<&TicketRecord>,
    now: Timestamp,
    dry_run: bool,
) -> OnUpdate {
    let held = record.map_or(0, |r| r.reopen_count);
    if reopen_count < held {
        return OnUpdate::Done;
    }
    if reopen_count > held {
        // No ticket will follow the reopen (it failed for good): nothing to wait for.
        if record.is_some_and(|r| r.state == TicketState::Failed) {
            return OnUpdate::Done;
        }
        return OnUpdate::Wait { after: WAIT_FOR_TICKET, reason: "about a reopen not handled yet" };
    }
    let Some(record) = record else {
        return OnUpdate::Wait { after: WAIT_FOR_TICKET, reason: "the ticket does not exist yet" };
    };
    match (record.state, action) {
        (TicketState::Claimed, _) => {
            let live = matches!(liveness(record.last_alive(), now), Liveness::Live { .. });
            // A live holder is creating it; or nothing was created and its IncidentCreated
            // is on its way back (a released claim); or a dry run, which finds nothing.
            if live || record.claimed_at.is_none() || dry_run {
                OnUpdate::Wait {
                    after: wait_for_claimed(record.last_alive(), now),
                    reason: "the ticket is being created",
                }
            } else {
                OnUpdate::Recover
            }
        }
        (TicketState::Failed | TicketState::Closed, _)
        | (TicketState::Resolved, Action::Create | Action::Acknowledge | Action::Resolve)
        | (TicketState::Created, Action::Create) => OnUpdate::Done,
        (TicketState::Created | TicketState::Resolved, _) if !commented(record, action) && !dry_run => {
            OnUpdate::Comment
        }
        (state, action) if state != done_state(action) => OnUpdate::Transition { to: done_state(action) },
        _ => OnUpdate::Done,
    }
}

/// What a failed create leaves behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateFailed {
    /// Refused for good: the record says failed, the fact is dead-lettered.
    Refused(String),
    /// The vendor answered with an error, or the breaker kept the call from going out:
    /// nothing was created, so the claim is released and the next delivery creates at once.
    Released {
        /// When to try again.
        after: Duration,
        /// Why.
        reason: String,
    },
    /// No answer (a timeout, a reset): the ticket may exist, so the claim stays, to be
    /// recovered by its marker.
    Held {
        /// When to try again.
        after: Duration,
        /// Why.
        reason: String,
    },
}

/// What a failed create call leaves behind.
pub fn create_failed(error: &CallError<VendorError>, default_wait: Duration) -> CreateFailed {
    let after = error.retry_in().unwrap_or(default_wait);
    let reason = error.to_string();
    match error {
        CallError::Permanent(e) => CreateFailed::Refused(e.to_string()),
        CallError::CircuitOpen { .. }
        | CallError::Deferred { .. }
        | CallError::Exhausted { last: VendorError::Status { .. } | VendorError::Throttled { .. }, .. } => {
            CreateFailed::Released { after, reason }
        }
        CallError::Exhausted { .. } => CreateFailed::Held { after, reason },
    }
}

/// The comment of an action: who did it, and why.
pub fn note(verb: &str, by: &str, reason: &str) -> String {
    match (by.is_empty(), reason.is_empty()) {
        (true, true) => format!("Incident {verb}."),
        (false, true) => format!("Incident {verb} by {by}."),
        (true, false) => format!("Incident {verb}: {reason}"),
        (false, false) => format!("Incident {verb} by {by}: {reason}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::provider::{Provider, TicketRef};
    use crate::routing::Target;
    use jiff::SignedDuration;

    const UPDATES: [Action; 3] = [Action::Acknowledge, Action::Resolve, Action::Close];

    pub(crate) fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).expect("ts")
    }

    /// A Jira record in `state` (with its ticket unless claimed), claimed a minute ago.
    pub(crate) fn record(state: TicketState) -> TicketRecord {
        let target = Target { provider: Provider::Jira, route: "default".into(), project: "OPS".into() };
        let mut r = TicketRecord::claim("inc-1", target, now() - SignedDuration::from_secs(60));
        r.state = state;
        if state != TicketState::Claimed {
            r.claimed_at = None;
            r.ticket = Some(TicketRef { key: "OPS-1".into(), ..TicketRef::default() });
        }
        r
    }

    /// A claim last renewed `secs` ago, by a holder that started its call (`called`) or
    /// released after an answered error.
    fn claim(secs: i64, called: bool) -> TicketRecord {
        let mut r = record(TicketState::Claimed);
        r.claimed_at = called.then(|| now() - SignedDuration::from_secs(60));
        r.renewed_at = Some(now() - SignedDuration::from_secs(secs));
        r
    }

    fn commented_all(mut r: TicketRecord) -> TicketRecord {
        (r.acknowledge_commented, r.resolve_commented, r.close_commented) = (true, true, true);
        r
    }

    #[test]
    fn a_created_fact_claims_once_waits_on_a_live_claim_and_takes_over_a_dead_one() {
        let cases: [(Option<TicketRecord>, bool, OnCreated); 9] = [
            (None, false, OnCreated::Claim),
            (Some(claim(0, true)), false, OnCreated::Wait(Duration::from_secs(2))),
            (Some(claim(6, true)), false, OnCreated::Wait(Duration::from_millis(4_100))),
            (Some(claim(30, true)), false, OnCreated::TakeOver { search_first: true }),
            (Some(claim(30, false)), false, OnCreated::TakeOver { search_first: false }),
            (Some(claim(30, true)), true, OnCreated::TakeOver { search_first: false }),
            (Some(record(TicketState::Created)), false, OnCreated::Done),
            (Some(record(TicketState::Resolved)), false, OnCreated::Done),
            (Some(record(TicketState::Failed)), false, OnCreated::Done),
        ];
        for (record, dry_run, expected) in cases {
            assert_eq!(on_created(record.as_ref(), now(), dry_run), expected, "{record:?} dry_run={dry_run}");
        }
        assert_eq!(on_created(Some(&record(TicketState::Closed)), now(), false), OnCreated::Done);
    }

    #[test]
    fn every_update_against_every_state() {
        use OnUpdate::{Comment, Done, Recover, Transition};
        use TicketState::{Claimed, Closed, Created, Failed, Resolved};
        let waiting = |r: &OnUpdate| matches!(r, OnUpdate::Wait { .. });
        // (state, action, before its comment, after its comment)
        let table: [(TicketState, Action, OnUpdate, OnUpdate); 12] = [
            (Created, Action::Acknowledge, Comment, Done),
            (Created, Action::Resolve, Comment, Transition { to: Resolved }),
            (Created, Action::Close, Comment, Transition { to: Closed }),
            (Resolved, Action::Acknowledge, Done, Done),
            (Resolved, Action::Resolve, Done, Done),
            (Resolved, Action::Close, Comment, Transition { to: Closed }),
            (Closed, Action::Acknowledge, Done, Done),
            (Closed, Action::Resolve, Done, Done),
            (Closed, Action::Close, Done, Done),
            (Failed, Action::Acknowledge, Done, Done),
            (Failed, Action::Resolve, Done, Done),
            (Failed, Action::Close, Done, Done),
        ];
        for (state, action, fresh, after_comment) in table {
            let r = record(state);
            assert_eq!(on_update(action, 0, Some(&r), now(), false), fresh, "{state:?} {action:?}");
            assert_eq!(
                on_update(action, 0, Some(&commented_all(r.clone())), now(), false),
                after_comment,
                "{state:?} {action:?}, commented"
            );
            // A dry run never comments; it goes to the transition it would make.
            assert_eq!(on_update(action, 0, Some(&r), now(), true), after_comment, "{state:?} {action:?}, dry run");
        }
        for action in UPDATES {
            assert!(waiting(&on_update(action, 0, None, now(), false)), "{action:?} before any ticket");
            assert!(waiting(&on_update(action, 0, Some(&claim(0, true)), now(), false)), "live claim");
            assert!(waiting(&on_update(action, 0, Some(&claim(30, false)), now(), false)), "released claim");
            assert!(waiting(&on_update(action, 0, Some(&claim(30, true)), now(), true)), "dry run");
            assert_eq!(on_update(action, 0, Some(&claim(30, true)), now(), false), Recover, "crashed create");
            // A later life's fact waits for its reopen, unless no ticket will follow it.
            assert!(waiting(&on_update(action, 1, Some(&record(TicketState::Closed)), now(), false)), "reopen first");
            assert_eq!(on_update(action, 1, Some(&record(TicketState::Failed)), now(), false), OnUpdate::Done);
            let mut ahead = record(TicketState::Created);
            ahead.reopen_count = 2;
            assert_eq!(on_update(action, 1, Some(&ahead), now(), false), OnUpdate::Done, "an earlier life's");
        }
        let _ = Claimed;
    }

    #[test]
    fn a_failed_create_releases_its_claim_only_when_nothing_was_created() {
        let wait = Duration::from_secs(2);
        let status = |code: u16| VendorError::Status {
            provider: "jira",
            status: code,
            message: "no".into(),
            retry_after: Some(Duration::from_secs(30)),
        };
        let timeout = VendorError::Transport {
            provider: "jira",
            source: sre_runtime::outbound::TransportError::Timeout(Duration::from_secs(15)),
        };
        assert_eq!(
            create_failed(&CallError::Permanent(status(400)), wait),
            CreateFailed::Refused(status(400).to_string())
        );
        let answered = CallError::Exhausted { last: status(503), attempts: 3, retry_in: Duration::from_secs(30) };
        assert!(
            matches!(create_failed(&answered, wait), CreateFailed::Released { after, .. } if after == Duration::from_secs(30))
        );
        let open: CallError<VendorError> = CallError::CircuitOpen { retry_in: Duration::from_secs(9) };
        assert!(matches!(create_failed(&open, wait), CreateFailed::Released { .. }));
        let unanswered = CallError::Exhausted { last: timeout, attempts: 3, retry_in: Duration::from_secs(1) };
        assert!(matches!(create_failed(&unanswered, wait), CreateFailed::Held { .. }), "the ticket may exist");
    }

    #[test]
    fn a_resolve_waits_on_a_live_claim_until_it_could_go_stale() {
        let at = |s: i64| Some(now() - SignedDuration::from_secs(s));
        assert_eq!(wait_for_claimed(at(0), now()), WAIT_FOR_TICKET);
        assert_eq!(wait_for_claimed(at(4), now()), Duration::from_millis(6_100));
        assert_eq!(wait_for_claimed(at(90), now()), WAIT_FOR_TICKET);
        assert_eq!(wait_for_claimed(None, now()), WAIT_FOR_TICKET);
    }

    #[test]
    fn comments_say_who_and_why() {
        assert_eq!(note("resolved", "", ""), "Incident resolved.");
        assert_eq!(note("acknowledged", "Dana", ""), "Incident acknowledged by Dana.");
        assert_eq!(note("closed", "", "done"), "Incident closed: done");
        assert_eq!(note("closed", "Dana", "done"), "Incident closed by Dana: done");
    }

    /// Runs the plans over one record as the shell does, every vendor call succeeding: a
    /// fact that must wait goes back to the end of the queue (a NAK), as JetStream
    /// redelivers it after facts delivered meanwhile. Returns the record, the tickets
    /// created, and the comments and transitions made, in order.
    fn run(facts: &[Action]) -> (Option<TicketRecord>, usize, Vec<(Action, bool)>) {
        let mut queue: std::collections::VecDeque<Action> = facts.iter().copied().collect();
        let (mut record, mut created, mut calls) = (None::<TicketRecord>, 0, Vec::new());
        let mut deliveries = 0;
        while let Some(action) = queue.pop_front() {
            deliveries += 1;
            assert!(deliveries < 200, "a fact never settles: {facts:?}");
            if action == Action::Create {
                match on_created(record.as_ref(), now(), false) {
                    OnCreated::Claim => {
                        created += 1;
                        let mut r = self::tests::record(TicketState::Created);
                        r.ticket = Some(TicketRef { key: "OPS-1".into(), ..TicketRef::default() });
                        record = Some(r);
                    }
                    OnCreated::Done => {}
                    other => panic!("no claim is left mid-call here: {other:?}"),
                }
                continue;
            }
            loop {
                match on_update(action, 0, record.as_ref(), now(), false) {
                    OnUpdate::Done => break,
                    OnUpdate::Wait { .. } => {
                        queue.push_back(action);
                        break;
                    }
                    OnUpdate::Recover => panic!("no claim is left mid-call here"),
                    OnUpdate::Comment => {
                        calls.push((action, true));
                        let r = record.as_mut().expect("a ticket");
                        match action {
                            Action::Acknowledge => r.acknowledge_commented = true,
                            Action::Resolve => r.resolve_commented = true,
                            _ => r.close_commented = true,
                        }
                    }
                    OnUpdate::Transition { to } => {
                        calls.push((action, false));
                        record.as_mut().expect("a ticket").state = to;
                    }
                }
            }
        }
        (record, created, calls)
    }

    fn facts() -> impl proptest::strategy::Strategy<Value = Vec<Action>> {
        use proptest::prelude::*;
        let fact =
            prop_oneof![Just(Action::Create), Just(Action::Acknowledge), Just(Action::Resolve), Just(Action::Close)];
        // Every run has its IncidentCreated somewhere (the domain always publishes it).
        (prop::collection::vec(fact, 0..10), any::<prop::sample::Index>()).prop_map(|(mut facts, at)| {
            let at = at.index(facts.len() + 1);
            facts.insert(at, Action::Create);
            facts
        })
    }

    proptest::proptest! {
        /// Whatever the order and the repeats: one ticket; each comment and each
        /// transition made once; a closed ticket is never resolved again; and the ticket
        /// ends in the last state the facts ask for.
        #[test]
        fn any_order_of_facts_makes_one_ticket_and_each_step_once(facts in facts()) {
            let (record, created, calls) = run(&facts);
            proptest::prop_assert_eq!(created, 1);
            for call in [(Action::Acknowledge, true), (Action::Resolve, true), (Action::Resolve, false), (Action::Close, true), (Action::Close, false)] {
                proptest::prop_assert!(calls.iter().filter(|c| **c == call).count() <= 1, "{:?}: {:?}", call, calls);
            }
            if let Some(closed) = calls.iter().position(|c| *c == (Action::Close, false)) {
                proptest::prop_assert!(!calls[closed..].contains(&(Action::Resolve, false)), "resolved after closed: {:?}", calls);
            }
            let state = record.map(|r| r.state);
            if facts.contains(&Action::Close) {
                proptest::prop_assert_eq!(state, Some(TicketState::Closed));
            } else if facts.contains(&Action::Resolve) {
                proptest::prop_assert_eq!(state, Some(TicketState::Resolved));
            }
        }
    }
}
