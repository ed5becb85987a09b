//! The reconciler's decisions, pure: given a ticket record and the ticket as its tracker
//! has it now, the one repair (`sre_sink::reconcile` has the rest). What a person did in
//! Jira or GitHub is read with the receiver's own mapping, so a repair is exactly the
//! intent the lost webhook would have carried; what the domain asked and the tracker lacks
//! (a resolve or close whose calls failed) is sent again, and never a create.

use jiff::Timestamp;
use sre_sink::reconcile::Kind;

use crate::config::{CloseMeans, GithubWebhook, JiraWebhook};
use crate::provider::VendorTicket;
use crate::receiver::Asked;
use crate::state::{TicketRecord, TicketState};

/// How a tracker's state reads as a person's action: its receiver's settings. `Off`: two-way
/// sync is off for it, so a person's change there is not asked of the domain (what the
/// domain asked is still sent again).
#[derive(Debug, Clone, Copy)]
pub enum Mapping<'a> {
    /// Jira's status mapping.
    Jira(&'a JiraWebhook),
    /// GitHub's.
    Github(&'a GithubWebhook),
    /// No receiver.
    Off,
}

/// What the reconciler does about one ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// A person did this in the tracker and its webhook was lost: ask the domain.
    Ask(Asked, Kind),
    /// The domain asked to end the ticket so and the tracker lacks it: send it again.
    Reassert(TicketState),
    /// The tracker holds what the record still waits to send: record it.
    Settle(TicketState),
}

/// Whether the reconciler compares `record` at `now`: a ticket that exists and is open,
/// waits to be ended, or ended within a day.
pub fn reconciled(record: &TicketRecord, now: Timestamp) -> bool {
    let exists = record.ticket.is_some()
        && matches!(record.state, TicketState::Created | TicketState::Resolved | TicketState::Closed);
    let open = record.state == TicketState::Created || record.unsent.is_some();
    exists && sre_sink::reconcile::in_scope(open, record.ended_at.unwrap_or(record.updated_at), now)
}

/// The repair of `record`, whose ticket the tracker has as `ticket`; `None`: they agree.
pub fn reconcile(record: &TicketRecord, ticket: &VendorTicket, mapping: Mapping<'_>) -> Option<Repair> {
    if let Some(to) = record.unsent {
        return Some(if ticket.done { Repair::Settle(to) } else { Repair::Reassert(to) });
    }
    let asked = match mapping {
        Mapping::Off => None,
        Mapping::Jira(hook) => crate::receiver::jira::status_action(hook, &ticket.status, ticket.done, record.state),
        Mapping::Github(hook) if ticket.done => Some(match hook.close_means {
            CloseMeans::Close => Asked::Close,
            CloseMeans::Resolve => Asked::Resolve,
        }),
        // Open again after the sink closed it (a resolved GitHub issue stays open, labelled).
        Mapping::Github(hook) => (hook.reopen && record.state == TicketState::Closed).then_some(Asked::Reopen),
    }?;
    let held = match asked {
        Asked::Close => record.state == TicketState::Closed,
        Asked::Resolve => matches!(record.state, TicketState::Resolved | TicketState::Closed),
        Asked::Reopen => record.state == TicketState::Created,
        Asked::Annotate => true,
    };
    if held {
        return None;
    }
    asked.kind().map(|k| Repair::Ask(asked, k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{Provider, TicketRef};
    use crate::routing::Target;

    fn record(state: TicketState, unsent: Option<TicketState>) -> TicketRecord {
        let target = Target { provider: Provider::Jira, route: "default".into(), project: "OPS".into() };
        let mut r = TicketRecord::claim("inc-1", target, "2026-12-07T10:00:00Z".parse().expect("ts"));
        r.state = state;
        r.ticket = Some(TicketRef { key: "OPS-1".into(), ..TicketRef::default() });
        r.unsent = unsent;
        r
    }

    fn jira(status: &str, done: bool) -> VendorTicket {
        VendorTicket { key: "OPS-1".into(), status: status.into(), done, resolution: String::new() }
    }

    fn jira_hook() -> JiraWebhook {
        serde_norway::from_str("secret_refs: [jira/hook]").expect("settings")
    }

    fn github_hook(close_means: &str) -> GithubWebhook {
        serde_norway::from_str(&format!("secret_refs: [gh/hook]\nclose_means: {close_means}")).expect("settings")
    }

    #[test]
    fn jira_states_read_as_the_receiver_reads_them() {
        use TicketState::{Closed, Created, Resolved};
        let hook = jira_hook();
        let ask = |a, k| Some(Repair::Ask(a, k));
        let table: &[(TicketState, VendorTicket, Option<Repair>)] = &[
            (Created, jira("To Do", false), None),
            (Created, jira("Resolved", true), ask(Asked::Resolve, Kind::Resolved)),
            (Created, jira("Closed", true), ask(Asked::Close, Kind::Closed)),
            // Another done status: `done_means` (resolve by default).
            (Created, jira("Done", true), ask(Asked::Resolve, Kind::Resolved)),
            (Resolved, jira("Resolved", true), None),
            (Resolved, jira("Closed", true), ask(Asked::Close, Kind::Closed)),
            (Closed, jira("Closed", true), None),
            (Closed, jira("Resolved", true), None),
            // Out of done after the sink ended it: a person reopened it.
            (Resolved, jira("To Do", false), ask(Asked::Reopen, Kind::Reopened)),
            (Closed, jira("In Progress", false), ask(Asked::Reopen, Kind::Reopened)),
        ];
        for (state, ticket, want) in table {
            assert_eq!(reconcile(&record(*state, None), ticket, Mapping::Jira(&hook)), *want, "{state:?} {ticket:?}");
        }
        // Two-way sync off: nothing asked of the domain.
        assert_eq!(reconcile(&record(Created, None), &jira("Resolved", true), Mapping::Off), None);
    }

    #[test]
    fn what_the_domain_asked_and_the_tracker_lacks_is_sent_again_or_settled() {
        let hook = jira_hook();
        let unsent = record(TicketState::Created, Some(TicketState::Resolved));
        assert_eq!(
            reconcile(&unsent, &jira("To Do", false), Mapping::Jira(&hook)),
            Some(Repair::Reassert(TicketState::Resolved))
        );
        assert_eq!(
            reconcile(&unsent, &jira("To Do", false), Mapping::Off),
            Some(Repair::Reassert(TicketState::Resolved))
        );
        assert_eq!(
            reconcile(&unsent, &jira("Resolved", true), Mapping::Jira(&hook)),
            Some(Repair::Settle(TicketState::Resolved))
        );
    }

    #[test]
    fn github_closes_as_configured_and_reopens_only_what_the_sink_closed() {
        let gh = |status: &str| VendorTicket {
            key: "7".into(),
            status: status.into(),
            done: status == "closed",
            resolution: String::new(),
        };
        let (close, resolve) = (github_hook("close"), github_hook("resolve"));
        let created = record(TicketState::Created, None);
        assert_eq!(reconcile(&created, &gh("open"), Mapping::Github(&close)), None);
        assert_eq!(
            reconcile(&created, &gh("closed"), Mapping::Github(&close)),
            Some(Repair::Ask(Asked::Close, Kind::Closed))
        );
        assert_eq!(
            reconcile(&created, &gh("closed"), Mapping::Github(&resolve)),
            Some(Repair::Ask(Asked::Resolve, Kind::Resolved))
        );
        // Resolved is a label on an open issue: open is no reopen.
        assert_eq!(reconcile(&record(TicketState::Resolved, None), &gh("open"), Mapping::Github(&close)), None);
        assert_eq!(
            reconcile(&record(TicketState::Resolved, None), &gh("closed"), Mapping::Github(&close)),
            Some(Repair::Ask(Asked::Close, Kind::Closed))
        );
        assert_eq!(
            reconcile(&record(TicketState::Closed, None), &gh("open"), Mapping::Github(&close)),
            Some(Repair::Ask(Asked::Reopen, Kind::Reopened))
        );
        assert_eq!(reconcile(&record(TicketState::Closed, None), &gh("closed"), Mapping::Github(&close)), None);
    }

    #[test]
    fn existing_tickets_open_waiting_or_ended_within_a_day_are_compared() {
        let at =
            |h: i64| "2026-12-07T10:00:00Z".parse::<Timestamp>().expect("ts") + jiff::SignedDuration::from_hours(h);
        assert!(reconciled(&record(TicketState::Created, None), at(24 * 30)));
        let mut ended = record(TicketState::Resolved, None);
        ended.ended_at = Some(at(0));
        assert!(reconciled(&ended, at(23)));
        assert!(!reconciled(&ended, at(25)));
        ended.unsent = Some(TicketState::Closed);
        assert!(reconciled(&ended, at(24 * 7)));
        assert!(!reconciled(&record(TicketState::Claimed, None), at(1)));
        assert!(!reconciled(&record(TicketState::Failed, None), at(1)));
        let mut no_ticket = record(TicketState::Created, None);
        no_ticket.ticket = None;
        assert!(!reconciled(&no_ticket, at(1)));
    }
}
