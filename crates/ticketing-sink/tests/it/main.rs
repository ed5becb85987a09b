//! ticketing-sink's integration tests, one binary (each extra binary re-links tokio, hyper and
//! async-nats on a 2-core CI). One module per subject.

mod fields;
mod limits;
mod lives;
mod reconcile;
mod service;
mod storm;
mod tickets;
mod webhook;
