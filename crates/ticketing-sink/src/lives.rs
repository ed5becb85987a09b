//! What the rest of an incident's life does to its ticket, as pure functions: a reopen
//! (moved back within the window, a new linked ticket after it, never for a resolution a
//! person chose to end it with), a severity change (the priority follows, the latest
//! change holds), and the comments these and notes bring, queued in the record and posted
//! together, at most one write per ticket every `ticket_write_interval`. The shell
//! (`sink`) does each step with compare-and-set and asks again.

use std::time::Duration;

use jiff::Timestamp;
use sre_sink::Claim as _;
use sre_sink::notes::{self, NoteState};

use crate::config::Reopen;
use crate::plan::{OnCreated, WAIT_FOR_TICKET, on_created, wait_for_claimed};
use crate::provider::TicketStatus;
use crate::state::{Pending, TicketRecord, TicketState};

/// What an `IncidentReopened` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReopened {
    /// Not possible yet: look again.
    Wait {
        /// When.
        after: Duration,
        /// Why.
        reason: &'static str,
    },
    /// This reopen (or a later one) is handled, or there is no ticket to reopen.
    Done,
    /// Read the ticket's status (a person may have ended it, or opened it, since the
    /// record last heard), then [`reopening`] decides.
    LookAtTicket,
    /// This reopen's new ticket is being created (a claim a crash may have left): as for a
    /// create.
    Create(OnCreated),
    /// Handled, its comment still queued: post what is queued.
    Flush,
}

/// The step for the `reopen_count`-th reopen, whose comment is `id`, given the record.
pub fn on_reopened(
    id: &str,
    reopen_count: u32,
    record: Option<&TicketRecord>,
    now: Timestamp,
    dry_run: bool,
) -> OnReopened {
    let Some(record) = record else {
        return OnReopened::Wait { after: WAIT_FOR_TICKET, reason: "the ticket does not exist yet" };
    };
    if record.state != TicketState::Claimed && record.pending.iter().any(|p| p.id == id) {
        return OnReopened::Flush;
    }
    if reopen_count < record.reopen_count {
        return OnReopened::Done;
    }
    if reopen_count == record.reopen_count {
        return match record.state {
            TicketState::Claimed if reopen_count > 0 => OnReopened::Create(on_created(Some(record), now, dry_run)),
            _ => OnReopened::Done,
        };
    }
    match record.state {
        TicketState::Claimed => OnReopened::Wait {
            after: wait_for_claimed(record.last_alive(), now),
            reason: "the ticket is being created",
        },
        TicketState::Failed => OnReopened::Done,
        TicketState::Created | TicketState::Resolved | TicketState::Closed => OnReopened::LookAtTicket,
    }
}

/// What reopening an ended ticket does, given its status at the vendor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reopening {
    /// A person opened it already: record the new life only.
    AlreadyOpen,
    /// Move it back (within the window).
    Reopen,
    /// Open a new ticket linked to it (it ended longer ago than the window).
    NewTicket,
    /// A person ended it with this resolution, which is never reopened: leave it, and open
    /// nothing.
    LeaveAlone(String),
}

/// Whether an ended ticket is moved back, replaced by a new linked one, or left alone.
/// A ticket whose draft was not kept (made by an older version) is moved back.
pub fn reopening(
    status: &TicketStatus,
    ended_at: Option<Timestamp>,
    has_draft: bool,
    config: &Reopen,
    now: Timestamp,
) -> Reopening {
    if !status.done {
        return Reopening::AlreadyOpen;
    }
    if config.never.iter().any(|n| n.eq_ignore_ascii_case(&status.resolution)) {
        return Reopening::LeaveAlone(status.resolution.clone());
    }
    let within =
        ended_at.is_none_or(|at| Duration::try_from(now.duration_since(at)).unwrap_or_default() <= config.window);
    if within || !has_draft { Reopening::Reopen } else { Reopening::NewTicket }
}

/// What an `IncidentSeverityChanged` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSeverity {
    /// Not possible yet: look again.
    Wait {
        /// When.
        after: Duration,
        /// Why.
        reason: &'static str,
    },
    /// Older than the change the ticket follows, or no ticket to change.
    Stale,
    /// Set the priority, record the change, say so in a comment.
    Update,
    /// Recorded, its comment still queued: post what is queued.
    Flush,
}

/// The step for a severity change made `at`, whose comment is `id`, given the record.
pub fn on_severity(id: &str, at: Option<Timestamp>, record: Option<&TicketRecord>, now: Timestamp) -> OnSeverity {
    let Some(record) = record else {
        return OnSeverity::Wait { after: WAIT_FOR_TICKET, reason: "the ticket does not exist yet" };
    };
    if record.state != TicketState::Claimed && record.pending.iter().any(|p| p.id == id) {
        return OnSeverity::Flush;
    }
    match record.state {
        TicketState::Claimed => {
            return OnSeverity::Wait {
                after: wait_for_claimed(record.last_alive(), now),
                reason: "the ticket is being created",
            };
        }
        TicketState::Failed => return OnSeverity::Stale,
        _ => {}
    }
    // The change the record holds, again (a redelivery, a delivery cut short after recording
    // it): set the priority again, which is idempotent, and queue its comment once.
    match (at, record.severity_at) {
        (Some(at), Some(held)) if at < held => OnSeverity::Stale,
        _ => OnSeverity::Update,
    }
}

/// What a note (`IncidentAnnotated`) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnNote {
    /// Not possible yet: look again.
    Wait {
        /// When.
        after: Duration,
        /// Why.
        reason: &'static str,
    },
    /// Not for this ticket, and why.
    Skip(&'static str),
    /// On the ticket already.
    Done,
    /// Queue it in the record, then post what is queued.
    Queue,
    /// Queued already: post what is queued.
    Flush,
}

/// The step for note `id`, written in `origin_vendor`, given the record of a ticket at
/// `provider`.
pub fn on_note(id: &str, origin_vendor: &str, record: Option<&TicketRecord>, now: Timestamp) -> OnNote {
    // (The provider is the record's: a note never goes back to the tracker it came from.)
    let Some(record) = record else {
        return OnNote::Wait { after: WAIT_FOR_TICKET, reason: "the ticket does not exist yet" };
    };
    match record.state {
        TicketState::Claimed => {
            return OnNote::Wait {
                after: wait_for_claimed(record.last_alive(), now),
                reason: "the ticket is being created",
            };
        }
        TicketState::Failed => return OnNote::Skip("the ticket was never made"),
        _ => {}
    }
    if origin_vendor == record.target.provider.name() {
        return OnNote::Skip("it was written on this ticket");
    }
    if notes::state(&record.notes, id, now) == NoteState::Posted {
        OnNote::Done
    } else if record.pending.iter().any(|p| p.id == id) {
        OnNote::Flush
    } else {
        OnNote::Queue
    }
}

/// What posting the queued comments asks for, for the delivery waiting on comment `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFlush {
    /// Comment `id` is on the ticket (or nothing is queued): done.
    Done,
    /// Look again after this long (another delivery is posting, or the ticket was written
    /// to too recently).
    Wait(Duration),
    /// Claim the queued comments, post them as one, mark them posted.
    Post,
    /// A post a crash left: look for the queued comments' marks on the ticket first.
    Recover,
}

/// The step for the delivery waiting on comment `id`.
pub fn on_flush(id: &str, record: &TicketRecord, interval: Duration, now: Timestamp) -> OnFlush {
    if record.pending.is_empty() || notes::state(&record.notes, id, now) == NoteState::Posted {
        return OnFlush::Done;
    }
    let states: Vec<NoteState> = record.pending.iter().map(|p| notes::state(&record.notes, &p.id, now)).collect();
    if states.contains(&NoteState::Stale) {
        return OnFlush::Recover;
    }
    if let Some(after) = states.iter().find_map(|s| if let NoteState::Live(d) = s { Some(*d) } else { None }) {
        return OnFlush::Wait(after);
    }
    match spacing(record.last_write_at, interval, now) {
        Some(after) => OnFlush::Wait(after),
        None => OnFlush::Post,
    }
}

/// How long a write to the ticket must still wait so writes stay `interval` apart.
pub fn spacing(last_write_at: Option<Timestamp>, interval: Duration, now: Timestamp) -> Option<Duration> {
    let since = Duration::try_from(now.duration_since(last_write_at?)).unwrap_or_default();
    interval.checked_sub(since).filter(|d| !d.is_zero())
}

/// The queued comments as one.
pub fn combined(record: &TicketRecord, ids: &[String]) -> String {
    let texts = record.pending.iter().filter(|p| ids.contains(&p.id)).map(|p| p.text.as_str());
    texts.collect::<Vec<_>>().join("\n\n")
}

/// The queued comments one comment takes: the oldest, and as many after it as fit in
/// `max` characters together.
pub fn batch(record: &TicketRecord, max: usize) -> Vec<&Pending> {
    let mut total = 0;
    let mut out = Vec::new();
    for p in &record.pending {
        let len = p.text.chars().count() + 2;
        if !out.is_empty() && total + len > max {
            break;
        }
        total += len;
        out.push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Pending;
    use jiff::SignedDuration;

    use crate::plan::tests::{now, record};

    #[test]
    fn every_reopen_against_every_state() {
        use OnReopened::{Done, LookAtTicket};
        let table = [
            (TicketState::Created, LookAtTicket),
            (TicketState::Resolved, LookAtTicket),
            (TicketState::Closed, LookAtTicket),
            (TicketState::Failed, Done),
        ];
        for (state, expected) in table {
            let r = record(state);
            assert_eq!(on_reopened("r1", 1, Some(&r), now(), false), expected, "{state:?}");
            let mut handled = r.clone();
            handled.reopen_count = 1;
            assert_eq!(on_reopened("r1", 1, Some(&handled), now(), false), Done, "{state:?}: handled");
            assert_eq!(on_reopened("r1", 0, Some(&handled), now(), false), Done, "{state:?}: an older one");
        }
        assert!(matches!(on_reopened("r1", 1, None, now(), false), OnReopened::Wait { .. }));
        // Handled, its comment still queued (the ticket was written to too recently): post it.
        let mut queued = record(TicketState::Created);
        queued.reopen_count = 1;
        queued.pending.push(Pending { id: "r1".into(), text: "reopened".into() });
        assert_eq!(on_reopened("r1", 1, Some(&queued), now(), false), OnReopened::Flush);
        assert_eq!(on_severity("r1", Some(now()), Some(&queued), now()), OnSeverity::Flush);
        assert!(matches!(
            on_reopened("r1", 1, Some(&record(TicketState::Claimed)), now(), false),
            OnReopened::Wait { .. }
        ));
        // The new ticket of this reopen, its claim left by a crash: recovered as a create.
        let mut claimed = record(TicketState::Claimed);
        claimed.reopen_count = 1;
        claimed.renewed_at = Some(now() - SignedDuration::from_secs(30));
        assert_eq!(
            on_reopened("r1", 1, Some(&claimed), now(), false),
            OnReopened::Create(OnCreated::TakeOver { search_first: true })
        );
    }

    #[test]
    fn an_ended_ticket_is_moved_back_within_the_window_replaced_after_it_and_never_reopened_as_wont_fix() {
        let config = Reopen::default();
        let done = |resolution: &str| TicketStatus { done: true, resolution: resolution.into() };
        let ago = |h: i64| Some(now() - SignedDuration::from_hours(h));
        assert_eq!(reopening(&done("Done"), ago(1), true, &config, now()), Reopening::Reopen);
        assert_eq!(reopening(&done("completed"), ago(1), true, &config, now()), Reopening::Reopen);
        assert_eq!(reopening(&done("Done"), ago(25), true, &config, now()), Reopening::NewTicket);
        assert_eq!(reopening(&done("Done"), ago(25), false, &config, now()), Reopening::Reopen, "no draft kept");
        assert_eq!(
            reopening(&done("Done"), None, true, &config, now()),
            Reopening::Reopen,
            "ended before the window was kept"
        );
        for never in ["Won't Fix", "won't fix", "not_planned", "Duplicate"] {
            assert_eq!(
                reopening(&done(never), ago(1), true, &config, now()),
                Reopening::LeaveAlone(never.into()),
                "{never}"
            );
        }
        let open = TicketStatus { done: false, resolution: String::new() };
        assert_eq!(reopening(&open, ago(100), true, &config, now()), Reopening::AlreadyOpen);
    }

    #[test]
    fn severity_changes_follow_the_latest_and_wait_for_the_ticket() {
        let mut r = record(TicketState::Created);
        assert_eq!(on_severity("s1", Some(now()), Some(&r), now()), OnSeverity::Update);
        r.severity_at = Some(now());
        assert_eq!(on_severity("s1", Some(now() - SignedDuration::from_secs(1)), Some(&r), now()), OnSeverity::Stale);
        // The change held, again: the priority set again (idempotent), the comment once.
        assert_eq!(on_severity("s1", Some(now()), Some(&r), now()), OnSeverity::Update);
        assert_eq!(on_severity("s1", Some(now() + SignedDuration::from_secs(1)), Some(&r), now()), OnSeverity::Update);
        assert!(matches!(on_severity("s1", None, None, now()), OnSeverity::Wait { .. }));
        assert_eq!(on_severity("s1", None, Some(&record(TicketState::Failed)), now()), OnSeverity::Stale);
        assert_eq!(on_severity("s1", None, Some(&record(TicketState::Closed)), now()), OnSeverity::Update);
    }

    #[test]
    fn a_note_is_queued_once_posted_once_and_never_sent_back_where_it_came_from() {
        let mut r = record(TicketState::Resolved);
        assert_eq!(on_note("n1", "pagerduty", Some(&r), now()), OnNote::Queue);
        assert_eq!(on_note("n1", "jira", Some(&r), now()), OnNote::Skip("it was written on this ticket"));
        r.pending.push(Pending { id: "n1".into(), text: "x".into() });
        assert_eq!(on_note("n1", "pagerduty", Some(&r), now()), OnNote::Flush);
        r.notes = notes::posted(&r.notes, "n1", now());
        assert_eq!(on_note("n1", "pagerduty", Some(&r), now()), OnNote::Done);
        assert_eq!(
            on_note("n1", "", Some(&record(TicketState::Failed)), now()),
            OnNote::Skip("the ticket was never made")
        );
        assert!(matches!(on_note("n1", "", None, now()), OnNote::Wait { .. }));
    }

    #[test]
    fn queued_comments_are_posted_together_once_writes_are_far_enough_apart() {
        let interval = Duration::from_secs(2);
        let mut r = record(TicketState::Created);
        assert_eq!(on_flush("n1", &r, interval, now()), OnFlush::Done, "nothing queued");
        r.pending = vec![Pending { id: "n1".into(), text: "a".into() }, Pending { id: "n2".into(), text: "b".into() }];
        assert_eq!(on_flush("n1", &r, interval, now()), OnFlush::Post);
        r.last_write_at = Some(now() - SignedDuration::from_millis(500));
        assert_eq!(on_flush("n1", &r, interval, now()), OnFlush::Wait(Duration::from_millis(1_500)));
        r.last_write_at = None;
        // Another delivery claimed them a moment ago: wait; a crash left the claim: recover.
        r.notes = notes::claimed(&notes::claimed(&[], "n1", now()), "n2", now());
        assert!(matches!(on_flush("n1", &r, interval, now()), OnFlush::Wait(_)));
        assert_eq!(on_flush("n1", &r, interval, now() + SignedDuration::from_secs(30)), OnFlush::Recover);
        let all: Vec<String> = r.pending.iter().map(|p| p.id.clone()).collect();
        assert_eq!(combined(&r, &all), "a\n\nb");
        assert_eq!(batch(&r, 1000).len(), 2);
        assert_eq!(batch(&r, 3).len(), 1, "the oldest goes alone when two do not fit together");
        assert_eq!(spacing(None, interval, now()), None);
        assert_eq!(spacing(Some(now() - SignedDuration::from_secs(5)), interval, now()), None);
    }
}
