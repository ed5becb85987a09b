//! paging-sink: consumes `IncidentCreated` (critical and high), `IncidentAcknowledged` and
//! `IncidentResolved`, and pages through PagerDuty or Opsgenie: critical at once, high in
//! business hours, once per incident.
//!
//! Consumes facts, publishes nothing to the domain. Knows nothing about tickets.

pub mod config;

use sre_runtime::ServiceContext;
use sre_runtime::axum::Router;

pub use config::Config;

/// The service's name, version and default port.
pub const SPEC: sre_runtime::ServiceSpec =
    sre_runtime::ServiceSpec { name: "paging-sink", version: env!("CARGO_PKG_VERSION"), default_http_port: 8083 };

/// Starts the service: returns its HTTP routes (none beyond health and metrics).
pub async fn start(ctx: ServiceContext<Config>) -> anyhow::Result<Router> {
    let integration = &ctx.config.paging_integration;
    if !integration.enabled {
        tracing::info!("paging_integration.enabled is false: serving health only");
    } else {
        tracing::info!(default_provider = ?integration.default_provider, "configuration loaded");
    }
    Ok(Router::new())
}
