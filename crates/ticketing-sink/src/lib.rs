//! ticketing-sink: consumes the incident facts (created, acknowledged, resolved, closed,
//! reopened, severity changed, annotated) and keeps exactly one ticket per incident life in
//! Jira (Cloud or Data Center) or GitHub Issues.
//!
//! What it is: its records (`state`), its decisions (`plan` for the ticket's making and
//! ending, `lives` for reopens, severity changes and queued comments; pure) and the shell that
//! carries them out (`sink`), its vendors (`provider`), its routes and templates, and its
//! receivers (two-way sync, off by default: what people do in GitHub and Jira comes back
//! as intents). The machinery every sink shares is `sre_sink`'s. Consumes facts;
//! publishes intents only. Knows nothing about paging.

pub mod config;
pub mod fields;
pub mod lives;
pub mod marker;
pub mod metrics;
pub mod plan;
pub mod provider;
pub mod receiver;
pub mod reconcile;
pub mod routing;
pub mod screens;
pub mod sink;
mod start;
pub mod state;
/// Title and body templates (shared with paging-sink's PagerDuty fields).
pub use sre_sink::template;

use sre_sink::FactKind;

pub use config::{Config, Valid};
pub use start::{online_check, start};

/// The service's name, version and default port.
pub const SPEC: sre_runtime::ServiceSpec =
    sre_runtime::ServiceSpec { name: "ticketing-sink", version: env!("CARGO_PKG_VERSION"), default_http_port: 8082 };

/// The facts the sink acts on.
pub const FACTS: [FactKind; 7] = FactKind::ALL;

/// The durable consumer on the facts stream (`deploy/nats/jetstream/consumers/` holds it
/// as JSON, checked by a test).
pub fn consumer_config(integration: &config::Integration) -> sre_bus::ConsumerConfig {
    sre_sink::facts::consumer_config(&integration.consumer, SPEC.name, &FACTS)
}
