//! Configuration in the specification's shape (`argocd_integration:`).

use std::time::Duration;

use serde::Deserialize;
use sre_runtime::{ConfigError, RuntimeConfig, SecretRef, ServiceConfig};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The adapter's section.
    pub argocd_integration: Integration,
    /// Bus, HTTP, telemetry and shutdown settings shared by every adapter.
    pub runtime: RuntimeConfig,
}

/// How observations reach the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// List every application every `poll_interval`.
    Poll,
    /// Watch the application stream for changes within seconds; the poll is kept as
    /// reconciliation.
    Watch,
}

/// `argocd_integration:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Integration {
    /// Whether the adapter polls at all.
    pub enabled: bool,
    /// `poll` or `watch`.
    pub mode: Mode,
    /// Time between two polls (jitter is added).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The Argo CD servers to read.
    pub argocd_server: Vec<ArgoServer>,
    /// Environments to report; applications outside them are ignored.
    pub environments: Vec<String>,
    /// How an application's environment is read.
    pub environment_from: EnvironmentFrom,
    /// The label read when `environment_from` is `label`.
    pub environment_label: String,
}

/// Where an application's environment comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentFrom {
    /// The Application's label named by `environment_label` (default `environment`).
    Label,
    /// `spec.destination.name` (the cluster's name in Argo CD).
    DestinationName,
    /// `spec.destination.namespace`.
    DestinationNamespace,
    /// `spec.project`.
    Project,
}

impl Default for Integration {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: Mode::Poll,
            poll_interval: Duration::from_secs(30),
            argocd_server: Vec::new(),
            environments: Vec::new(),
            environment_from: EnvironmentFrom::Label,
            environment_label: "environment".to_owned(),
        }
    }
}

/// One Argo CD server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgoServer {
    /// Base URL, e.g. `https://argocd.example.com`.
    pub url: String,
    /// Secret holding the API token under key `token` (sent as `Authorization: Bearer`).
    pub secret_ref: Option<SecretRef>,
    /// Per-request timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl ServiceConfig for Config {
    fn runtime(&self) -> &RuntimeConfig {
        &self.runtime
    }
    fn runtime_mut(&mut self) -> &mut RuntimeConfig {
        &mut self.runtime
    }
    fn validate(&self) -> Result<(), ConfigError> {
        if self.argocd_integration.poll_interval < Duration::from_secs(1) {
            return Err(ConfigError::new("argocd_integration.poll_interval", "must be at least 1s"));
        }
        Ok(())
    }
}
