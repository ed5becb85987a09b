//! paging-sink: consumes `IncidentCreated` (critical and high), `IncidentAcknowledged` and
//! `IncidentResolved`, and pages through PagerDuty, Opsgenie or JSM Operations: critical at
//! once, high in business hours, once per incident.
//!
//! What it is: its records (`state`), its decisions (`plan` and `schedule`, pure) and the
//! shell that carries them out (`sink`, with the deferred-page scan), its vendors
//! (`provider`), its routes, and its receivers (two-way sync, off by default: what people do
//! in PagerDuty, Opsgenie and JSM comes back as intents). The machinery every sink shares is
//! `sre_sink`'s. Consumes facts; publishes intents only. Knows nothing about tickets.

pub mod alert_fields;
pub mod config;
pub mod metrics;
pub mod plan;
pub mod provider;
pub mod receiver;
pub mod routing;
pub mod schedule;
pub mod sink;
mod start;
pub mod state;

use sre_sink::FactKind;

pub use config::{Config, Valid};
pub use start::start;

/// The service's name, version and default port.
pub const SPEC: sre_runtime::ServiceSpec =
    sre_runtime::ServiceSpec { name: "paging-sink", version: env!("CARGO_PKG_VERSION"), default_http_port: 8083 };

/// The facts the sink acts on.
pub const FACTS: [FactKind; 7] = FactKind::ALL;

/// The durable consumer on the facts stream (`deploy/nats/jetstream/consumers/` holds it
/// as JSON, checked by a test).
pub fn consumer_config(integration: &config::Integration) -> sre_bus::ConsumerConfig {
    sre_sink::facts::consumer_config(&integration.consumer, SPEC.name, &FACTS)
}
