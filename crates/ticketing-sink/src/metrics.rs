//! The sink's metrics (`ticketing_sink_*`). Labels come from enums only.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::provider::Provider;

/// What a fact asked for.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Action {
    /// IncidentCreated.
    Create,
    /// IncidentAcknowledged (a comment on the ticket, no transition).
    Acknowledge,
    /// IncidentResolved.
    Resolve,
    /// IncidentClosed.
    Close,
    /// IncidentReopened.
    Reopen,
    /// IncidentSeverityChanged.
    Severity,
    /// IncidentAnnotated.
    Note,
}

/// How it ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    /// Done at the vendor and recorded.
    Done,
    /// A crash left a claim; the ticket was found by its marker and adopted.
    Recovered,
    /// Already done: nothing sent.
    Duplicate,
    /// The ticket does not exist yet (or is being created): the fact waits.
    Waiting,
    /// `dry_run`.
    DryRun,
    /// Refused for good by the vendor (dead-lettered).
    Failed,
    /// Not done yet; the fact waits on the bus.
    Retried,
    /// Not for this ticket (a note written on it, or no ticket to change).
    Skipped,
    /// A reopen of a ticket a person ended with a resolution never reopened: left alone.
    LeftAlone,
    /// A reopen long after the ticket ended: a new ticket, linked to it.
    NewTicket,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    provider: &'static str,
    action: Action,
    outcome: Outcome,
}

/// The metrics; cheap to clone. (The vendor calls' and the receivers' are `sre_sink`'s,
/// under this sink's prefix.)
#[derive(Debug, Clone, Default)]
pub struct TicketMetrics {
    tickets: Family<Labels, Counter>,
}

impl TicketMetrics {
    /// Registers every metric.
    pub fn register(&self, r: &mut Registry) {
        r.register("ticketing_sink_facts", "Incident facts by provider, action and outcome", self.tickets.clone());
    }

    /// Creates every series of `providers` at 0, so dashboards and alert rules see them
    /// before the first fact.
    pub fn prime(&self, providers: impl IntoIterator<Item = Provider>) {
        use Outcome::{Done, DryRun, Duplicate, Failed, Recovered, Retried, Waiting};
        for provider in providers {
            for action in [Action::Create, Action::Acknowledge, Action::Resolve, Action::Close] {
                for outcome in [Done, Recovered, Duplicate, Waiting, DryRun, Failed, Retried] {
                    let _ = self.tickets.get_or_create(&Labels { provider: provider.name(), action, outcome });
                }
            }
            for action in [Action::Reopen, Action::Severity, Action::Note] {
                for outcome in [Done, Duplicate, Failed] {
                    let _ = self.tickets.get_or_create(&Labels { provider: provider.name(), action, outcome });
                }
            }
        }
    }

    /// Counts an outcome.
    pub fn count(&self, provider: Provider, action: Action, outcome: Outcome) {
        self.tickets.get_or_create(&Labels { provider: provider.name(), action, outcome }).inc();
    }
}
