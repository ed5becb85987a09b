//! Wire contracts of the SRE domain bus.
//!
//! This crate owns the protobuf messages (package `sre.domain.v1`), the bus vocabulary
//! (subjects, stream names, header names) and the `KnowledgeIndexQueryService` gRPC
//! contract (package `sre.knowledge.v1`, tonic client and server).
//!
//! It sorts every message into exactly one of two kinds, as marker traits that only this
//! crate can implement ([`Intent`] and [`Fact`] are sealed):
//! - intents are requests that adapters send to the domain;
//! - facts are what the domain decided, and only the domain emits them.
//!
//! The bus crate's adapter publisher accepts `M: Intent` only, so publishing a fact from
//! adapter code does not compile (see `tests/ui`).
//!
//! This crate does no I/O and knows nothing about NATS clients, HTTP or vendors.

/// Generated protobuf types of package `sre.domain.v1`.
#[allow(missing_docs, clippy::all)]
pub mod domain {
    /// Version 1 of the domain contract.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/sre.domain.v1.rs"));
    }
}

/// Generated protobuf types and tonic client/server of package `sre.knowledge.v1`.
#[allow(missing_docs, clippy::all)]
pub mod knowledge {
    /// Version 1 of the knowledge index contract.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/sre.knowledge.v1.rs"));
    }
}

/// The encoded `FileDescriptorSet` of every proto in this crate (for gRPC reflection and
/// schema checks).
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sre_descriptor.bin"));

mod message;
mod severity;

pub use message::{
    BusMessage, ExternalIntent, Fact, INCIDENT_FACT_SUBJECTS, IncidentFact, Intent, Kind, headers, spans, streams,
    subjects,
};
pub use severity::{ParseSeverityError, SeverityExt};
