//! The runtime both fact sinks share, above `sre-runtime`: what a sink is made of besides
//! its vendors and its decisions, written once.
//!
//! - [`records`]: typed KV records per incident, compare-and-set, a corrupt record its own
//!   error;
//! - [`claim`]: the claim → renew → stale rule (`src/design.md`);
//! - [`vendors`]: one resilience layer (rate limit, breaker) per vendor credential, timed,
//!   handing a fact back until its credential's turn, pausing a credential on every replica
//!   when the vendor asks;
//! - [`lead`]: the sender lease: one replica pulls facts and calls vendors;
//! - [`facts`]: the incident facts decoded once, and the consumer filtered to them;
//! - [`routing`]: `routes[].match`, the same in every sink;
//! - [`notes`]: notes carried between tools: how they are written, told apart from a
//!   person's, and posted once;
//! - [`receiver`]: the receiver kit of two-way sync, on `sre_runtime::inbound`;
//! - [`reconcile`]: the reconciler's metrics, ids, scope and job (what a lost webhook
//!   dropped, repaired);
//! - [`start`]: a sink's start, readiness and jobs ([`SinkStart`]), with [`watch`].
//!
//! A sink is its records, its facts, its vendors and a pure plan per fact. This crate knows
//! no vendor, no ticket and no page.

pub mod claim;
pub mod facts;
pub mod lead;
pub mod limits;
pub mod notes;
pub mod receiver;
pub mod reconcile;
pub mod records;
pub mod routing;
pub mod start;
pub mod template;
pub mod vendors;
pub mod watch;

pub use claim::{Claim, Liveness};
pub use facts::{FactKind, IncidentFact};
pub use records::{Bucket, Read, Record, RecordError, Records};
pub use routing::{Matched, RouteMatch};
pub use start::{Job, RecordsCell, Sink, SinkStart, Started};
pub use vendors::{Vendor, Vendors};
pub use watch::SinkWatch;
