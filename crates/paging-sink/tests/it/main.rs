//! paging-sink's integration tests, one binary (each extra binary re-links tokio, hyper and
//! async-nats on a 2-core CI). One module per subject.

mod limits;
mod lives;
mod paging;
mod reconcile;
mod service;
mod storm;
mod webhook;
