//! alertmanager-ingress: takes Alertmanager webhooks and publishes one
//! `IngestAlertRequested` per alert (and `CreateIncidentRequested` when auto-create is on),
//! answering 2xx only once JetStream has stored them.
//!
//! Emits intents only. Knows nothing about tickets, pages or the Transformation domain.

pub mod config;

use sre_runtime::ServiceContext;
use sre_runtime::axum::Router;

pub use config::Config;

/// The service's name, version and default port.
pub const SPEC: sre_runtime::ServiceSpec = sre_runtime::ServiceSpec {
    name: "alertmanager-ingress",
    version: env!("CARGO_PKG_VERSION"),
    default_http_port: 8080,
};

/// Starts the service and returns its routes.
pub async fn start(ctx: ServiceContext<Config>) -> anyhow::Result<Router> {
    let integration = &ctx.config.alertmanager_integration;
    tracing::info!(enabled = integration.enabled, webhook_path = %integration.webhook_path, "configuration loaded");
    Ok(Router::new())
}
