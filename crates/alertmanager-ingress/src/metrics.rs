//! The ingress's metrics (`alertmanager_ingress_*`). Labels come from enums only.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Why a request was refused: the shared inbound path's reasons (every webhook of every
/// adapter names them alike).
pub use sre_runtime::inbound::Reason as RejectReason;

/// Alert status label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum AlertStatusLabel {
    /// Firing.
    Firing,
    /// Resolved.
    Resolved,
}

/// Severity label (the contract's severities).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum SeverityLabel {
    /// Critical.
    Critical,
    /// High.
    High,
    /// Medium.
    Medium,
    /// Low.
    Low,
    /// Info.
    Info,
    /// Unmapped.
    Unspecified,
}

/// Intent kind label.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum IntentKind {
    /// IngestAlertRequested.
    IngestAlert,
    /// CreateIncidentRequested.
    CreateIncident,
}

/// Outcome label of a published intent.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Stored {
    /// Newly stored.
    Stored,
    /// Already stored within the dedup window.
    Duplicate,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AlertLabels {
    pub status: AlertStatusLabel,
    pub severity: SeverityLabel,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct IntentLabels {
    pub kind: IntentKind,
    pub outcome: Stored,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RejectLabels {
    pub reason: RejectReason,
}

/// The ingress's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct IngressMetrics {
    pub(crate) alerts: Family<AlertLabels, Counter>,
    pub(crate) duplicates: Counter,
    pub(crate) intents: Family<IntentLabels, Counter>,
    pub(crate) rejects: Family<RejectLabels, Counter>,
    pub(crate) request_seconds: Histogram,
    pub(crate) publish_seconds: Histogram,
}

impl Default for IngressMetrics {
    fn default() -> Self {
        Self {
            alerts: Family::default(),
            duplicates: Counter::default(),
            intents: Family::default(),
            rejects: Family::default(),
            request_seconds: Histogram::new(exponential_buckets(0.0002, 2.0, 16)),
            publish_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
        }
    }
}

impl IngressMetrics {
    /// Registers under `alertmanager_ingress_*`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("alertmanager_ingress");
        // Every refusal reason and intent outcome is exported from the start, at 0, so the
        // alert rules see a series before the first 503.
        for reason in RejectReason::ALL {
            let _ = self.rejects.get_or_create(&RejectLabels { reason });
        }
        for kind in [IntentKind::IngestAlert, IntentKind::CreateIncident] {
            for outcome in [Stored::Stored, Stored::Duplicate] {
                let _ = self.intents.get_or_create(&IntentLabels { kind, outcome });
            }
        }
        for status in [AlertStatusLabel::Firing, AlertStatusLabel::Resolved] {
            use SeverityLabel::{Critical, High, Info, Low, Medium, Unspecified};
            for severity in [Critical, High, Medium, Low, Info, Unspecified] {
                let _ = self.alerts.get_or_create(&AlertLabels { status, severity });
            }
        }
        r.register("alerts_received", "Alerts received, by status and severity", self.alerts.clone());
        r.register(
            "alerts_duplicate",
            "Alerts already stored within the dedup window (no new intent)",
            self.duplicates.clone(),
        );
        r.register("intents_published", "Intents acknowledged by JetStream, by kind and outcome", self.intents.clone());
        r.register("requests_rejected", "Webhook requests refused, by reason", self.rejects.clone());
        r.register("request_duration_seconds", "Webhook request latency", self.request_seconds.clone());
        r.register(
            "publish_duration_seconds",
            "Time for JetStream to store a request's intents",
            self.publish_seconds.clone(),
        );
    }

    /// Rejections for `reason` so far.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejects.get_or_create(&RejectLabels { reason }).get()
    }

    /// Duplicate alerts so far.
    pub fn duplicate_alerts(&self) -> u64 {
        self.duplicates.get()
    }
}
