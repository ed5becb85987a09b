//! alertmanager-ingress: takes Alertmanager webhooks and publishes one
//! `IngestAlertRequested` per alert (and `CreateIncidentRequested` when auto-create is on),
//! answering 200 only once JetStream has stored them.
//!
//! - `payload`: the webhook v4 format, parsed leniently, errors naming the field;
//! - `mapping`: pure, payload + rules + request context → intents and their keys;
//! - `auth`: bearer, basic and HMAC, compared in constant time;
//! - `http`: the endpoint, the only module here that does I/O.
//!
//! Emits intents only. Knows nothing about tickets, pages or the Transformation domain.

pub mod auth;
pub mod config;
pub mod http;
pub mod mapping;
pub mod metrics;
pub mod payload;

use sre_contracts::domain::v1::Severity;
use sre_runtime::ServiceContext;
use sre_runtime::axum::Router;

pub use config::Config;

/// The service's name, version and default port.
pub const SPEC: sre_runtime::ServiceSpec = sre_runtime::ServiceSpec {
    name: "alertmanager-ingress",
    version: env!("CARGO_PKG_VERSION"),
    default_http_port: 8080,
};

/// The mapping rules a configuration describes.
pub fn rules(config: &config::Integration) -> mapping::Rules {
    mapping::Rules {
        severity_label: config.severity.label.clone(),
        severity_map: match &config.severity.mapping {
            Some(m) => m.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.0)).collect(),
            None => mapping::default_severity_map(),
        },
        default_severity: config.severity.default.map_or(Severity::Unspecified, |s| s.0),
        key_source: config.idempotency.key_source,
        auto_create_min: config.auto_create_incident.enabled.then_some(config.auto_create_incident.min_severity.0),
    }
}

/// Builds the webhook router for `ctx` (also used by tests and the benchmark).
pub fn ingress(ctx: &ServiceContext<Config>, metrics: metrics::IngressMetrics) -> anyhow::Result<Router> {
    let integration = &ctx.config.alertmanager_integration;
    let auth = auth::Auth::from_config(&integration.auth, &ctx.secrets)?;
    if auth.is_open() {
        tracing::warn!("no webhook authentication configured: anyone who can reach the service can post alerts");
    }
    let ingress = http::Ingress {
        rules: rules(integration),
        publisher: ctx.bus.intent_publisher(),
        auth,
        limits: integration.limits.clone(),
        metrics,
        source: ctx.bus.source().clone(),
    };
    Ok(http::router(&integration.webhook_path, ingress))
}

/// Starts the service and returns its routes.
pub async fn start(ctx: ServiceContext<Config>) -> anyhow::Result<Router> {
    let integration = &ctx.config.alertmanager_integration;
    if !integration.enabled {
        tracing::info!("alertmanager_integration.enabled is false: the webhook is not served");
        return Ok(Router::new());
    }
    let metrics = metrics::IngressMetrics::default();
    ctx.metrics.register(|r| metrics.register(r));
    let router = ingress(&ctx, metrics)?;
    tracing::info!(webhook_path = %integration.webhook_path, key_source = ?integration.idempotency.key_source, "webhook ready");
    Ok(router)
}
