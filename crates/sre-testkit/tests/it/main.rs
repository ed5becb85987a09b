//! sre-testkit's integration tests, one binary (each extra binary re-links tokio, hyper and
//! async-nats on a 2-core CI). One module per subject.

mod cluster;
mod cluster_faults;
mod images;
mod inventory;
mod monitoring;
mod nack;
mod pages;
mod schemas;
mod secure_bus;
mod system;
mod traces;
