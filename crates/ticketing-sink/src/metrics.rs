//! The sink's metrics (`ticketing_sink_*`). Labels come from enums only.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::config::Provider;

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
}

impl EncodeLabelValue for Provider {
    fn encode(&self, encoder: &mut prometheus_client::encoding::LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.name())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    provider: Provider,
    action: Action,
    outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VendorLabels {
    provider: Provider,
}

/// The metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct TicketMetrics {
    tickets: Family<Labels, Counter>,
    vendor_seconds: Family<VendorLabels, Histogram>,
    /// The webhook receivers' (two-way sync).
    pub receivers: sre_runtime::inbound::ReceiverMetrics,
}

impl Default for TicketMetrics {
    fn default() -> Self {
        Self {
            tickets: Family::default(),
            vendor_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.005, 2.0, 12))),
            receivers: sre_runtime::inbound::ReceiverMetrics::default(),
        }
    }
}

impl TicketMetrics {
    /// Registers every metric.
    pub fn register(&self, r: &mut Registry) {
        r.register("ticketing_sink_facts", "Incident facts by provider, action and outcome", self.tickets.clone());
        r.register(
            "ticketing_sink_vendor_seconds",
            "Time of a vendor call, retries included",
            self.vendor_seconds.clone(),
        );
        self.receivers.register(r, "ticketing_sink");
    }

    /// Creates every series of `providers` at 0, so dashboards and alert rules see them
    /// before the first fact.
    pub fn prime(&self, providers: impl IntoIterator<Item = Provider>) {
        use Outcome::{Done, DryRun, Duplicate, Failed, Recovered, Retried, Waiting};
        for provider in providers {
            for action in [Action::Create, Action::Acknowledge, Action::Resolve, Action::Close] {
                for outcome in [Done, Recovered, Duplicate, Waiting, DryRun, Failed, Retried] {
                    let _ = self.tickets.get_or_create(&Labels { provider, action, outcome });
                }
            }
            let _ = self.vendor_seconds.get_or_create(&VendorLabels { provider });
        }
    }

    /// Counts an outcome.
    pub fn count(&self, provider: Provider, action: Action, outcome: Outcome) {
        self.tickets.get_or_create(&Labels { provider, action, outcome }).inc();
    }

    /// Records a vendor call's duration.
    pub fn vendor(&self, provider: Provider, seconds: f64) {
        self.vendor_seconds.get_or_create(&VendorLabels { provider }).observe(seconds);
    }
}
