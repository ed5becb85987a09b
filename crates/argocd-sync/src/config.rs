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
    /// The Argo CD servers to read: one (a map) or several (a list).
    #[serde(deserialize_with = "one_or_many")]
    pub argocd_server: Vec<ArgoServer>,
    /// Environments to report; applications outside them are ignored.
    pub environments: Vec<String>,
    /// How an application's environment is read.
    pub environment_from: EnvironmentFrom,
    /// The label read when `environment_from` is `label`.
    pub environment_label: String,
    /// How long a new status must hold before it is published.
    pub hysteresis: HysteresisConfig,
    /// How long a replica's lease on a server lasts without renewal (renewed every poll).
    /// A successor takes over this long after a leader dies without releasing it.
    /// Default: three poll intervals.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Option<Duration>,
}

/// `argocd_integration.hysteresis`: a new status is published once it held for
/// `observations` polls in a row, or for `hold` since first seen, whichever comes first.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HysteresisConfig {
    /// Consecutive observations (1 publishes at once).
    pub observations: u32,
    /// Time since first seen; `0s` turns the time rule off.
    #[serde(with = "humantime_serde")]
    pub hold: Duration,
}

impl Default for HysteresisConfig {
    fn default() -> Self {
        Self { observations: 1, hold: Duration::ZERO }
    }
}

impl Integration {
    /// The lease TTL in effect.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl.unwrap_or(self.poll_interval * 3)
    }
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
            hysteresis: HysteresisConfig::default(),
            lease_ttl: None,
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
    /// PEM file of extra CA certificates to trust (Argo CD's self-signed certificate, a
    /// private CA), added to the system's roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ArgoServer>, D::Error> {
    // A visitor, not an untagged enum: the inner errors keep their field names.
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<ArgoServer>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a server (url, secret_ref, …) or a list of them")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            ArgoServer::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(|s| vec![s])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Vec::<ArgoServer>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
        }
    }
    d.deserialize_any(V)
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
        let i = &self.argocd_integration;
        if i.poll_interval < Duration::from_secs(1) {
            return Err(ConfigError::new("argocd_integration.poll_interval", "must be at least 1s"));
        }
        if i.hysteresis.observations == 0 {
            return Err(ConfigError::new("argocd_integration.hysteresis.observations", "must be at least 1"));
        }
        if !i.enabled {
            return Ok(());
        }
        if i.argocd_server.is_empty() {
            return Err(ConfigError::new("argocd_integration.argocd_server", "list at least one Argo CD server"));
        }
        if i.environments.is_empty() {
            return Err(ConfigError::new(
                "argocd_integration.environments",
                "list at least one environment (applications outside the list are ignored)",
            ));
        }
        for (n, server) in i.argocd_server.iter().enumerate() {
            if !server.url.starts_with("https://") && !server.url.starts_with("http://") {
                return Err(ConfigError::new(
                    format!("argocd_integration.argocd_server[{n}].url"),
                    "must start with https:// or http://",
                ));
            }
            if i.argocd_server[..n].iter().any(|s| s.url.trim_end_matches('/') == server.url.trim_end_matches('/')) {
                return Err(ConfigError::new(format!("argocd_integration.argocd_server[{n}].url"), "listed twice"));
            }
        }
        let ttl = i.lease_ttl();
        if ttl < i.poll_interval * 2 {
            return Err(ConfigError::new("argocd_integration.lease_ttl", "must be at least two poll intervals"));
        }
        let window = self.runtime.bus.streams.duplicate_window;
        if ttl + i.poll_interval > window {
            return Err(ConfigError::new(
                "argocd_integration.lease_ttl",
                format!(
                    "lease_ttl plus poll_interval ({:?}) exceeds the bus duplicate window ({window:?}): a successor \
                     could publish a change twice; lower them or raise runtime.bus.streams.duplicate_window",
                    ttl + i.poll_interval
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        sre_runtime::load_config::<Config>(yaml, &sre_runtime::config::Vars::default())
    }

    #[test]
    fn one_server_as_a_map_or_several_as_a_list() {
        let one = load(
            "argocd_integration:\n  argocd_server: {url: https://argocd.example.com}\n  environments: [production]\n",
        )
        .expect("a map");
        assert_eq!(one.argocd_integration.argocd_server.len(), 1);
        let two = load(
            "argocd_integration:\n  argocd_server:\n    - url: https://a.example.com\n    - url: https://b.example.com\n  environments: [production]\n",
        )
        .expect("a list");
        assert_eq!(two.argocd_integration.argocd_server.len(), 2);
        let err =
            load("argocd_integration:\n  argocd_server: {url: ftp://x}\n  environments: [p]\n").expect_err("scheme");
        assert!(err.to_string().contains("argocd_server[0].url"), "{err}");
        let err =
            load("argocd_integration:\n  argocd_server: {urll: https://x}\n  environments: [p]\n").expect_err("typo");
        assert!(err.to_string().contains("urll"), "the misspelt key is named: {err}");
    }
}
