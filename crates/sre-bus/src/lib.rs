//! The JetStream bus of the SRE domain.
//!
//! - [`Bus`]: one connection with reconnect and backoff, readiness, and the topology
//!   (streams created or updated idempotently at start, safe with many replicas).
//! - [`IntentPublisher`]: the only publisher adapters get. It takes [`Envelope`]s, and an
//!   envelope can only be made from an [`sre_contracts::Intent`]: there is no API here
//!   that publishes a fact (see `tests/ui`). Publishes wait for the JetStream ack; a
//!   duplicate ack is success without effect, and counted.
//! - [`FactConsumer`]: a durable pull consumer shared by a sink's replicas, explicit ack,
//!   NAK with delay, TERM plus a dead-letter record, bounded parallelism that keeps the
//!   facts of one incident in order.
//! - [`Kv`]: JetStream key-value buckets with compare-and-set, for the state sinks keep.
//!
//! Delivery invariants are written down in `design.md` beside this file. This crate knows
//! nothing about HTTP or vendors.

mod config;
mod connection;
mod consume;
mod kv;
mod metrics;
mod publish;
mod reach;
mod topology;
mod trace;

pub use config::{
    BusConfig, BusTls, ConsumerConfig, Password, Replicas, Seeds, StreamSettings, default_inbox_prefix, parse_seeds,
};
pub use connection::{Bus, ConnectError};
pub use consume::{ConsumeError, Disposition, FactConsumer, FactHandler, ReceivedFact, consumer_definition};
pub use kv::{Kv, KvConfig, KvEntry, KvError, PROBE_KEY, bucket_definition, renewing};
pub use metrics::{BusMetrics, FactOutcome, PublishOutcome};
pub use publish::{Envelope, IntentPublisher, PublishError, Published};
pub use reach::{Reachability, ReachabilitySlot, UNREACHABLE_GRACE};
pub use topology::{TopologyError, stream_definitions};
pub use trace::{extract_context, inject_context};

/// Re-exported so callers can name header maps without depending on the NATS client.
pub use async_nats::HeaderMap;
