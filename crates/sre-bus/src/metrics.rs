//! Bus metrics, named by Prometheus conventions. Labels come from closed sets (message
//! type constants and enums), never from ids.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Outcome of one intent publish.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum PublishOutcome {
    /// Stored by JetStream.
    Stored,
    /// Already stored within the duplicate window; nothing new stored.
    Duplicate,
    /// The bus did not store it (unavailable, timed out, rejected).
    Failed,
}

/// What a consumer did with one fact.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum FactOutcome {
    /// Handled and acknowledged.
    Acked,
    /// Handed back for redelivery after a delay.
    Retried,
    /// Given up on and recorded in the dead-letter stream.
    DeadLettered,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PublishLabels {
    pub message_type: &'static str,
    pub outcome: PublishOutcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FactLabels {
    pub message_type: &'static str,
    pub outcome: FactOutcome,
}

/// The metric label of a fact subject: one of the contract's fact names, or `unknown`
/// (labels stay a closed set whatever arrives on the stream).
pub(crate) fn fact_label(subject: &str) -> &'static str {
    use sre_contracts::BusMessage;
    use sre_contracts::domain::v1;
    const KNOWN: [(&str, &str); 10] = [
        (v1::IncidentCreated::SUBJECT, "IncidentCreated"),
        (v1::IncidentAcknowledged::SUBJECT, "IncidentAcknowledged"),
        (v1::IncidentResolved::SUBJECT, "IncidentResolved"),
        (v1::IncidentClosed::SUBJECT, "IncidentClosed"),
        (v1::IncidentReopened::SUBJECT, "IncidentReopened"),
        (v1::IncidentSeverityChanged::SUBJECT, "IncidentSeverityChanged"),
        (v1::IncidentAnnotated::SUBJECT, "IncidentAnnotated"),
        (v1::AlertIngested::SUBJECT, "AlertIngested"),
        (v1::FleetStateRecorded::SUBJECT, "FleetStateRecorded"),
        (v1::HealthCheckRecorded::SUBJECT, "HealthCheckRecorded"),
    ];
    KNOWN.iter().find(|(s, _)| *s == subject).map_or("unknown", |(_, name)| name)
}

/// The bus's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct BusMetrics {
    pub(crate) published: Family<PublishLabels, Counter>,
    pub(crate) publish_seconds: Histogram,
    pub(crate) facts: Family<FactLabels, Counter>,
    pub(crate) fact_seconds: Histogram,
    pub(crate) connected: Gauge,
    pub(crate) reconnects: Counter,
    pub(crate) lame_duck: Counter,
    pub(crate) slow_consumers: Counter,
    pub(crate) auth_failures: Counter,
    pub(crate) dead_connections: Counter,
    pub(crate) handed_back: Counter,
    pub(crate) under_replicated: Gauge,
    pub(crate) pull_errors: Counter,
    pub(crate) pull_interruptions: Counter,
    pub(crate) consumer_pending: Gauge,
    pub(crate) consumer_ack_pending: Gauge,
    pub(crate) consumer_redelivered: Gauge,
}

impl Default for BusMetrics {
    fn default() -> Self {
        Self {
            published: Family::default(),
            publish_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            facts: Family::default(),
            fact_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 18)),
            connected: Gauge::default(),
            reconnects: Counter::default(),
            lame_duck: Counter::default(),
            slow_consumers: Counter::default(),
            auth_failures: Counter::default(),
            dead_connections: Counter::default(),
            handed_back: Counter::default(),
            under_replicated: Gauge::default(),
            pull_errors: Counter::default(),
            pull_interruptions: Counter::default(),
            consumer_pending: Gauge::default(),
            consumer_ack_pending: Gauge::default(),
            consumer_redelivered: Gauge::default(),
        }
    }
}

impl BusMetrics {
    /// Registers the metrics under `sre_bus_*`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("sre_bus");
        r.register("intents_published", "Intent publishes by message type and outcome", self.published.clone());
        r.register("publish_duration_seconds", "Time from publish to JetStream ack", self.publish_seconds.clone());
        r.register("facts_handled", "Facts handled by message type and outcome", self.facts.clone());
        r.register("fact_handling_duration_seconds", "Time spent handling one fact", self.fact_seconds.clone());
        r.register("connected", "1 while connected to NATS", self.connected.clone());
        r.register("reconnects", "Reconnections to NATS", self.reconnects.clone());
        r.register(
            "lame_duck",
            "Notices that the bus node is going away (lame-duck mode, an upgrade); the client moves to another",
            self.lame_duck.clone(),
        );
        r.register(
            "slow_consumers",
            "Times the server dropped messages for one of this client's subscriptions",
            self.slow_consumers.clone(),
        );
        r.register(
            "auth_failures",
            "Connections refused for this service's credentials (authorization violation, an expired JWT)",
            self.auth_failures.clone(),
        );
        r.register(
            "dead_connections",
            "Bus nodes that stopped answering without closing the connection (frozen, cut off); moved off",
            self.dead_connections.clone(),
        );
        r.register(
            "facts_handed_back",
            "Facts pulled but not started when the sink stopped, handed back at once (NAK) for another replica",
            self.handed_back.clone(),
        );
        r.register(
            "under_replicated_streams",
            "Streams and KV buckets this service uses that have fewer replicas than the cluster calls for",
            self.under_replicated.clone(),
        );
        r.register(
            "pull_errors",
            "Failed attempts to pull facts (no consumer leader, bus unreachable); retried with backoff",
            self.pull_errors.clone(),
        );
        r.register(
            "consumer_pending_facts",
            "Facts on the stream not yet delivered to this sink's durable consumer (its lag)",
            self.consumer_pending.clone(),
        );
        r.register(
            "consumer_ack_pending_facts",
            "Facts delivered to this sink's durable consumer and not yet acknowledged",
            self.consumer_ack_pending.clone(),
        );
        r.register(
            "consumer_redelivered_facts",
            "Facts delivered more than once and not yet acknowledged",
            self.consumer_redelivered.clone(),
        );
        r.register(
            "pull_interruptions",
            "Fact streams cut short (missed heartbeats, a consumer leader change); pulled again",
            self.pull_interruptions.clone(),
        );
    }

    /// Creates the `facts_handled` series of every outcome for facts on `subject`.
    pub(crate) fn prime_facts(&self, subject: &str) {
        let message_type = fact_label(subject);
        if message_type != "unknown" {
            for outcome in [FactOutcome::Acked, FactOutcome::Retried, FactOutcome::DeadLettered] {
                let _ = self.facts.get_or_create(&FactLabels { message_type, outcome });
            }
        }
    }

    /// Reconnections so far.
    pub fn reconnects_count(&self) -> u64 {
        self.reconnects.get()
    }

    /// Connections refused for this service's credentials so far.
    pub fn auth_failures_count(&self) -> u64 {
        self.auth_failures.get()
    }

    /// Bus nodes found dead and moved off so far.
    pub fn dead_connections_count(&self) -> u64 {
        self.dead_connections.get()
    }

    /// Lame-duck notices so far.
    pub fn lame_duck_count(&self) -> u64 {
        self.lame_duck.get()
    }

    /// Facts handed back at shutdown so far.
    pub fn handed_back_count(&self) -> u64 {
        self.handed_back.get()
    }

    /// Facts of `message_type` (e.g. `IncidentCreated`) handled with `outcome`.
    pub fn facts_count(&self, message_type: &str, outcome: FactOutcome) -> u64 {
        let subject = format!("{}.{message_type}", sre_contracts::subjects::FACTS_PREFIX);
        self.facts.get_or_create(&FactLabels { message_type: fact_label(&subject), outcome }).get()
    }

    /// Intent publishes with `outcome` for `message_type` (for tests and dashboards).
    pub fn published_count(&self, message_type: &'static str, outcome: PublishOutcome) -> u64 {
        self.published.get_or_create(&PublishLabels { message_type, outcome }).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fact_labels_are_a_closed_set() {
        assert_eq!(fact_label("sre.domain.facts.v1.IncidentCreated"), "IncidentCreated");
        assert_eq!(fact_label("sre.domain.facts.v1.HealthCheckRecorded"), "HealthCheckRecorded");
        assert_eq!(fact_label("sre.domain.facts.v1.SomethingNew"), "unknown");
        assert_eq!(fact_label("sre.domain.facts.v1.inc-12345"), "unknown", "no ids as labels");
    }
}
