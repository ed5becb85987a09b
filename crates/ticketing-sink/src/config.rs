//! Configuration in the specification's shape (`ticketing_integration:`).

use serde::Deserialize;
use sre_runtime::{ConfigError, RuntimeConfig, SecretRef, ServiceConfig};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The adapter's section.
    pub ticketing_integration: Integration,
    /// Bus, HTTP, telemetry and shutdown settings shared by every adapter.
    pub runtime: RuntimeConfig,
}

/// A ticketing provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Jira Cloud or Data Center.
    Jira,
    /// GitHub Issues (github.com or Enterprise).
    Github,
}

/// `ticketing_integration:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Integration {
    /// Whether the sink consumes facts at all.
    pub enabled: bool,
    /// Provider for incidents no routing rule matches.
    pub default_provider: Provider,
    /// Jira settings.
    pub jira: Option<Jira>,
    /// GitHub settings.
    pub github: Option<Github>,
}

impl Default for Integration {
    fn default() -> Self {
        Self { enabled: true, default_provider: Provider::Jira, jira: None, github: None }
    }
}

/// `ticketing_integration.jira:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jira {
    /// Site URL, e.g. `https://example.atlassian.net`.
    pub base_url: String,
    /// Project key tickets are created in, e.g. `OPS`.
    pub project_key: String,
    /// Secret with the credentials.
    pub secret_ref: SecretRef,
}

/// `ticketing_integration.github:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Github {
    /// `owner/name` of the repository.
    pub repo: String,
    /// Secret with the token under key `token`.
    pub secret_ref: SecretRef,
}

impl ServiceConfig for Config {
    fn runtime(&self) -> &RuntimeConfig {
        &self.runtime
    }
    fn runtime_mut(&mut self) -> &mut RuntimeConfig {
        &mut self.runtime
    }
    fn validate(&self) -> Result<(), ConfigError> {
        let i = &self.ticketing_integration;
        if i.enabled {
            match i.default_provider {
                Provider::Jira if i.jira.is_none() => {
                    return Err(ConfigError::new(
                        "ticketing_integration.jira",
                        "required when default_provider is jira",
                    ));
                }
                Provider::Github if i.github.is_none() => {
                    return Err(ConfigError::new(
                        "ticketing_integration.github",
                        "required when default_provider is github",
                    ));
                }
                _ => {}
            }
        }
        if let Some(g) = &i.github
            && (g.repo.split('/').count() != 2 || g.repo.split('/').any(str::is_empty))
        {
            return Err(ConfigError::new("ticketing_integration.github.repo", "expected `owner/name`"));
        }
        Ok(())
    }
}
