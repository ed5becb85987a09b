//! Configuration in the specification's shape (`paging_integration:`).

use serde::Deserialize;
use sre_runtime::{ConfigError, RuntimeConfig, SecretRef, ServiceConfig};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The adapter's section.
    pub paging_integration: Integration,
    /// Bus, HTTP, telemetry and shutdown settings shared by every adapter.
    pub runtime: RuntimeConfig,
}

/// A paging provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// PagerDuty Events API v2.
    Pagerduty,
    /// Opsgenie Alert API v2 (end of support 2027-04-05).
    Opsgenie,
}

/// When a severity pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    /// At once, day or night.
    Immediate,
    /// At once inside business hours; outside them deferred to the next opening.
    BusinessHoursOnly,
    /// Never.
    Never,
}

/// `paging_integration:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Integration {
    /// Whether the sink consumes facts at all.
    pub enabled: bool,
    /// Provider for incidents no routing rule matches.
    pub default_provider: Provider,
    /// PagerDuty settings.
    pub pagerduty: Option<PagerDuty>,
    /// Opsgenie settings.
    pub opsgenie: Option<Opsgenie>,
    /// When each severity pages.
    pub escalation: Escalation,
}

impl Default for Integration {
    fn default() -> Self {
        Self {
            enabled: true,
            default_provider: Provider::Pagerduty,
            pagerduty: None,
            opsgenie: None,
            escalation: Escalation::default(),
        }
    }
}

/// `paging_integration.pagerduty:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDuty {
    /// Secret holding the Events API v2 routing key under key `routing_key`.
    pub routing_key_ref: SecretRef,
}

/// `paging_integration.opsgenie:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opsgenie {
    /// Secret holding the API integration key under key `api_key`.
    pub api_key_ref: SecretRef,
}

/// `paging_integration.escalation:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Escalation {
    /// When critical incidents page.
    pub critical: When,
    /// When high incidents page.
    pub high: When,
    /// The business hours.
    pub business_hours: BusinessHours,
}

impl Default for Escalation {
    fn default() -> Self {
        Self { critical: When::Immediate, high: When::BusinessHoursOnly, business_hours: BusinessHours::default() }
    }
}

/// `paging_integration.escalation.business_hours:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusinessHours {
    /// Opening time, `HH:MM`.
    pub start: String,
    /// Closing time, `HH:MM`.
    pub end: String,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub timezone: String,
}

impl Default for BusinessHours {
    fn default() -> Self {
        Self { start: "09:00".to_owned(), end: "17:00".to_owned(), timezone: "UTC".to_owned() }
    }
}

fn parse_hhmm(s: &str) -> Option<(u8, u8)> {
    let (h, m) = s.split_once(':')?;
    let (h, m) = (h.parse::<u8>().ok()?, m.parse::<u8>().ok()?);
    (h < 24 && m < 60 && s.len() == 5).then_some((h, m))
}

impl ServiceConfig for Config {
    fn runtime(&self) -> &RuntimeConfig {
        &self.runtime
    }
    fn runtime_mut(&mut self) -> &mut RuntimeConfig {
        &mut self.runtime
    }
    fn validate(&self) -> Result<(), ConfigError> {
        let i = &self.paging_integration;
        let hours = &i.escalation.business_hours;
        let start = parse_hhmm(&hours.start)
            .ok_or_else(|| ConfigError::new("paging_integration.escalation.business_hours.start", "expected HH:MM"))?;
        let end = parse_hhmm(&hours.end)
            .ok_or_else(|| ConfigError::new("paging_integration.escalation.business_hours.end", "expected HH:MM"))?;
        if start >= end {
            return Err(ConfigError::new("paging_integration.escalation.business_hours", "start must be before end"));
        }
        if hours.timezone.is_empty() || hours.timezone.contains(' ') {
            return Err(ConfigError::new(
                "paging_integration.escalation.business_hours.timezone",
                "expected an IANA zone",
            ));
        }
        if i.enabled {
            match i.default_provider {
                Provider::Pagerduty if i.pagerduty.is_none() => {
                    return Err(ConfigError::new(
                        "paging_integration.pagerduty",
                        "required when default_provider is pagerduty",
                    ));
                }
                Provider::Opsgenie if i.opsgenie.is_none() => {
                    return Err(ConfigError::new(
                        "paging_integration.opsgenie",
                        "required when default_provider is opsgenie",
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}
