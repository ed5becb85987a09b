//! The sink's metrics (`paging_sink_*`). Labels come from enums only.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::provider::Provider;

/// What became of an `IncidentCreated`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum PageOutcome {
    /// Paged at once.
    Paged,
    /// Deferred to business hours.
    Deferred,
    /// A deferred page fired at the opening.
    Fired,
    /// Already handled (a redelivery or a repeated fact): nothing sent.
    Duplicate,
    /// Below the paging threshold, or a policy of never.
    NotPaged,
    /// `dry_run`: logged, not sent.
    DryRun,
    /// Refused for good by the vendor (dead-lettered).
    Failed,
    /// Not accepted yet; the fact waits on the bus.
    Retried,
}

/// Follow-up label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ActionLabel {
    /// Acknowledge.
    Acknowledge,
    /// Resolve.
    Resolve,
}

/// What became of an acknowledge or resolve.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum FollowUpOutcome {
    /// Sent to where the page went.
    Sent,
    /// The incident was never paged: nothing to send.
    NotPaged,
    /// A deferred page was cancelled: it will never page.
    Cancelled,
    /// Already done.
    Duplicate,
    /// `dry_run`.
    DryRun,
    /// Refused for good (dead-lettered).
    Failed,
    /// Not done yet; the fact waits on the bus.
    Retried,
}

/// A change to an incident after it was opened.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ChangeLabel {
    /// `IncidentReopened`.
    Reopen,
    /// `IncidentSeverityChanged`.
    Severity,
    /// `IncidentAnnotated`.
    Note,
}

/// What became of a change.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ChangeOutcome {
    /// Paged (again) now.
    Paged,
    /// A page is waiting for business hours (again, or at another time).
    Deferred,
    /// Below the paging threshold: kept, not paged.
    Held,
    /// A waiting page was dropped (the severity was lowered below paging).
    Dropped,
    /// Recorded; nothing to send (an open page is left to the people on call).
    Recorded,
    /// A note posted on the page.
    Noted,
    /// Not for this page (the note came from it, or the page cannot take notes).
    Skipped,
    /// Already handled, or older than what is held.
    Duplicate,
    /// `dry_run`.
    DryRun,
    /// Refused for good (dead-lettered).
    Failed,
    /// Not done yet; the fact waits on the bus.
    Retried,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChangeLabels {
    provider: &'static str,
    change: ChangeLabel,
    outcome: ChangeOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PageLabels {
    provider: &'static str,
    outcome: PageOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FollowUpLabels {
    provider: &'static str,
    action: ActionLabel,
    outcome: FollowUpOutcome,
}

/// The metrics; cheap to clone. (The vendor calls' and the receivers' are `sre_sink`'s,
/// under this sink's prefix.)
#[derive(Debug, Clone, Default)]
pub struct PagingMetrics {
    pages: Family<PageLabels, Counter>,
    follow_ups: Family<FollowUpLabels, Counter>,
    changes: Family<ChangeLabels, Counter>,
    /// Deferred pages waiting, at the last scan.
    pub deferred: Gauge,
    /// How long past its business-hours opening the most overdue deferred page still
    /// waits, at the last scan (0: none overdue).
    pub deferred_overdue: Gauge,
}

impl PagingMetrics {
    /// Registers every metric.
    pub fn register(&self, r: &mut Registry) {
        r.register("paging_sink_pages", "IncidentCreated facts by provider and outcome", self.pages.clone());
        r.register(
            "paging_sink_follow_ups",
            "Acknowledge and resolve facts by provider, action and outcome",
            self.follow_ups.clone(),
        );
        r.register(
            "paging_sink_changes",
            "Reopens, severity changes and notes by provider, change and outcome",
            self.changes.clone(),
        );
        r.register("paging_sink_deferred", "Deferred pages waiting for business hours", self.deferred.clone());
        r.register(
            "paging_sink_deferred_overdue_seconds",
            "Seconds the most overdue deferred page has waited past its opening (0: none)",
            self.deferred_overdue.clone(),
        );
    }

    /// Creates every series of `providers` at 0, so dashboards and alert rules see them
    /// before the first fact.
    pub fn prime(&self, providers: impl IntoIterator<Item = Provider>) {
        use FollowUpOutcome as F;
        use PageOutcome as P;
        for provider in providers {
            for outcome in
                [P::Paged, P::Deferred, P::Fired, P::Duplicate, P::NotPaged, P::DryRun, P::Failed, P::Retried]
            {
                let _ = self.pages.get_or_create(&PageLabels { provider: provider.name(), outcome });
            }
            for action in [ActionLabel::Acknowledge, ActionLabel::Resolve] {
                for outcome in [F::Sent, F::NotPaged, F::Cancelled, F::Duplicate, F::DryRun, F::Failed, F::Retried] {
                    let _ =
                        self.follow_ups.get_or_create(&FollowUpLabels { provider: provider.name(), action, outcome });
                }
            }
            for change in [ChangeLabel::Reopen, ChangeLabel::Severity, ChangeLabel::Note] {
                for outcome in [ChangeOutcome::Paged, ChangeOutcome::Duplicate, ChangeOutcome::Failed] {
                    let _ = self.changes.get_or_create(&ChangeLabels { provider: provider.name(), change, outcome });
                }
            }
        }
    }

    /// Counts a page outcome.
    pub fn page(&self, provider: Provider, outcome: PageOutcome) {
        self.pages.get_or_create(&PageLabels { provider: provider.name(), outcome }).inc();
    }

    /// Counts what became of a change.
    pub fn change(&self, provider: Provider, change: ChangeLabel, outcome: ChangeOutcome) {
        self.changes.get_or_create(&ChangeLabels { provider: provider.name(), change, outcome }).inc();
    }

    /// Counts a follow-up outcome.
    pub fn follow_up(&self, provider: Provider, action: ActionLabel, outcome: FollowUpOutcome) {
        self.follow_ups.get_or_create(&FollowUpLabels { provider: provider.name(), action, outcome }).inc();
    }
}
