//! argocd-sync: reads application health and sync status from Argo CD and asks the SRE
//! domain to record it, as `RecordFleetStateRequested` (one per environment and cycle) and
//! `RecordHealthCheckRequested` (one per application change).
//!
//! Emits intents only. Knows nothing about tickets, pages or the Transformation domain.

pub mod argocd;
pub mod client;
pub mod config;
pub mod core;
pub mod cycle;

use sre_runtime::ServiceContext;
use sre_runtime::axum::Router;

pub use config::Config;

/// The service's name, version and default port.
pub const SPEC: sre_runtime::ServiceSpec =
    sre_runtime::ServiceSpec { name: "argocd-sync", version: env!("CARGO_PKG_VERSION"), default_http_port: 8081 };

/// Starts the service: returns its HTTP routes (none beyond health and metrics).
pub async fn start(ctx: ServiceContext<Config>) -> anyhow::Result<Router> {
    let integration = &ctx.config.argocd_integration;
    if !integration.enabled {
        tracing::info!("argocd_integration.enabled is false: serving health only");
    } else {
        tracing::info!(
            servers = integration.argocd_server.len(),
            environments = integration.environments.len(),
            poll_interval = ?integration.poll_interval,
            "configuration loaded"
        );
    }
    Ok(Router::new())
}
