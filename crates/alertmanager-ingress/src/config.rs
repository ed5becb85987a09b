//! Configuration in the specification's shape (`alertmanager_integration:`).

use std::time::Duration;

use serde::Deserialize;
use sre_contracts::domain::v1::Severity;
use sre_runtime::{ConfigError, RuntimeConfig, ServiceConfig, SeverityName};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The adapter's section.
    pub alertmanager_integration: Integration,
    /// Bus, HTTP, telemetry and shutdown settings shared by every adapter.
    pub runtime: RuntimeConfig,
}

/// `alertmanager_integration:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Integration {
    /// Whether the webhook accepts alerts (when false it answers 503).
    pub enabled: bool,
    /// Path of the webhook.
    pub webhook_path: String,
    /// How repeats are recognised.
    pub idempotency: Idempotency,
    /// Whether firing alerts ask the domain for an incident.
    pub auto_create_incident: AutoCreate,
}

impl Default for Integration {
    fn default() -> Self {
        Self {
            enabled: true,
            webhook_path: "/webhooks/alertmanager".to_owned(),
            idempotency: Idempotency::default(),
            auto_create_incident: AutoCreate::default(),
        }
    }
}

/// What makes two deliveries the same alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// Fingerprint, status and startsAt: a resolve, or a new firing after a resolve, is new.
    Fingerprint,
}

/// `alertmanager_integration.idempotency:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Idempotency {
    /// What the key is derived from.
    pub key_source: KeySource,
    /// Repeats within this window publish nothing new (the stream's duplicate window).
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
}

impl Default for Idempotency {
    fn default() -> Self {
        Self { key_source: KeySource::Fingerprint, dedup_window: Duration::from_secs(300) }
    }
}

/// `alertmanager_integration.auto_create_incident:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoCreate {
    /// Whether firing alerts also publish `CreateIncidentRequested`.
    pub enabled: bool,
    /// Least severity that asks for an incident.
    pub min_severity: SeverityName,
}

impl Default for AutoCreate {
    fn default() -> Self {
        Self { enabled: true, min_severity: SeverityName(Severity::High) }
    }
}

impl ServiceConfig for Config {
    fn runtime(&self) -> &RuntimeConfig {
        &self.runtime
    }
    fn runtime_mut(&mut self) -> &mut RuntimeConfig {
        &mut self.runtime
    }
    fn validate(&self) -> Result<(), ConfigError> {
        let i = &self.alertmanager_integration;
        if !i.webhook_path.starts_with('/') {
            return Err(ConfigError::new("alertmanager_integration.webhook_path", "must start with `/`"));
        }
        let stream_window = self.runtime.bus.streams.duplicate_window;
        if i.idempotency.dedup_window > stream_window {
            return Err(ConfigError::new(
                "alertmanager_integration.idempotency.dedup_window",
                format!(
                    "must not exceed runtime.bus.streams.duplicate_window ({stream_window:?}), which does the dedup"
                ),
            ));
        }
        Ok(())
    }
}
