//! What every adapter binary needs, once: CLI, configuration, secrets, telemetry, metrics,
//! health and graceful shutdown.
//!
//! An adapter's `main` is one call to [`run`] with its [`ServiceSpec`] and a start
//! function that registers its metrics and readiness checks, spawns its workers on the
//! [`ServiceContext`]'s task tracker and returns its HTTP routes. The runtime does the
//! rest in a fixed order: flags, configuration (with `--check-config`), telemetry, the
//! bus, the HTTP listener (`/healthz`, `/readyz`, `/metrics` plus the adapter's routes),
//! and on SIGTERM or SIGINT a shutdown that loses nothing in flight (see [`run`]).
//!
//! This crate knows nothing about any adapter's domain or any vendor.

mod cli;
pub mod config;
mod health;
pub mod inbound;
mod metrics;
pub mod outbound;
pub mod secrets;
mod service;
mod telemetry;

pub use cli::Cli;
pub use config::{
    ConfigError, HttpConfig, RuntimeConfig, ServiceConfig, SeverityName, TelemetryConfig, Vars, load_config,
    parse_config,
};
pub use health::{Health, ReadinessCheck};
pub use metrics::{BreakerMetrics, Metrics};
pub use secrets::{SecretError, SecretRef, SecretStore};
pub use service::{OnlineCheck, ServiceContext, ServiceSpec, router, run, run_with_online, until_ok};
pub use telemetry::{LogFormat, TelemetryGuard};

/// Re-exported so adapters build routes with the same axum the runtime serves.
pub use axum;
/// Re-exported for metric definitions.
pub use prometheus_client;
