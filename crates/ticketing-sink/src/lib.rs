//! ticketing-sink: consumes `IncidentCreated`, `IncidentResolved` and `IncidentClosed` and
//! keeps exactly one ticket per incident in Jira (Cloud or Data Center) or GitHub Issues.
//!
//! Consumes facts, publishes nothing to the domain. Knows nothing about paging.

pub mod config;

use sre_runtime::ServiceContext;
use sre_runtime::axum::Router;

pub use config::Config;

/// The service's name, version and default port.
pub const SPEC: sre_runtime::ServiceSpec =
    sre_runtime::ServiceSpec { name: "ticketing-sink", version: env!("CARGO_PKG_VERSION"), default_http_port: 8082 };

/// Starts the service: returns its HTTP routes (none beyond health and metrics).
pub async fn start(ctx: ServiceContext<Config>) -> anyhow::Result<Router> {
    let integration = &ctx.config.ticketing_integration;
    if !integration.enabled {
        tracing::info!("ticketing_integration.enabled is false: serving health only");
    } else {
        tracing::info!(default_provider = ?integration.default_provider, "configuration loaded");
    }
    Ok(Router::new())
}
