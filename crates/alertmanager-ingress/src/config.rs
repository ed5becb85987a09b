//! Configuration in the specification's shape (`alertmanager_integration:`).

use std::time::Duration;

use serde::Deserialize;
use sre_contracts::domain::v1::Severity;
use std::collections::BTreeMap;

use sre_runtime::{ConfigError, RuntimeConfig, SecretRef, ServiceConfig, SeverityName};

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
    /// How severity is read from an alert.
    pub severity: SeverityConfig,
    /// Who may post.
    pub auth: AuthConfig,
    /// Protection of the webhook.
    pub limits: Limits,
}

impl Default for Integration {
    fn default() -> Self {
        Self {
            enabled: true,
            webhook_path: "/webhooks/alertmanager".to_owned(),
            idempotency: Idempotency::default(),
            auto_create_incident: AutoCreate::default(),
            severity: SeverityConfig::default(),
            auth: AuthConfig::default(),
            limits: Limits::default(),
        }
    }
}

/// What makes two deliveries the same alert. Every source adds the alert's status and
/// `startsAt`, so a resolve, or a new firing after a resolve, is a new intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// Alertmanager's fingerprint (default). The same alert reaching several receivers, or
    /// sent by both peers of an HA pair, is one intent.
    Fingerprint,
    /// Receiver, group key and fingerprint: the same alert routed to two receivers is two
    /// intents (one per route), for setups where each route means a different owner.
    GroupKey,
    /// The sorted label set, for senders that send no (or no stable) fingerprint.
    Labels,
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

/// `alertmanager_integration.severity:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeverityConfig {
    /// Label holding the severity.
    pub label: String,
    /// Label value (case-insensitive) to severity. When set it replaces the default map:
    /// critical, page → critical; high, error → high; warning, medium → medium; low → low;
    /// info, none → info.
    pub mapping: Option<BTreeMap<String, SeverityName>>,
    /// Severity of alerts without the label or with an unmapped value; unset means
    /// unspecified (never auto-creates an incident).
    pub default: Option<SeverityName>,
}

impl Default for SeverityConfig {
    fn default() -> Self {
        Self { label: "severity".to_owned(), mapping: None, default: None }
    }
}

/// `alertmanager_integration.auth:`. Each configured method is accepted; with none the
/// webhook is open (a warning is logged at start).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Secret with key `token`: Alertmanager's `http_config.authorization` (Bearer).
    pub bearer: Option<SecretRef>,
    /// Secret with keys `username` and `password`: Alertmanager's `http_config.basic_auth`.
    pub basic: Option<SecretRef>,
    /// HMAC-SHA256 signature of the body, for senders other than Alertmanager.
    pub hmac: Option<HmacConfig>,
}

/// `alertmanager_integration.auth.hmac:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacConfig {
    /// Secret with key `secret`.
    pub secret_ref: SecretRef,
    /// Header carrying `sha256=<hex>` of HMAC-SHA256(secret, body).
    #[serde(default = "default_hmac_header")]
    pub header: String,
}

fn default_hmac_header() -> String {
    "X-Signature-256".to_owned()
}

/// `alertmanager_integration.limits:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Whole-request deadline, body reading included (503 beyond, so Alertmanager retries).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long to wait for JetStream to store a request's intents (503 beyond).
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// Requests handled at once; more are refused with 503 (Alertmanager does not retry
    /// 429).
    pub max_concurrent_requests: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(3),
            max_concurrent_requests: 256,
        }
    }
}

impl ServiceConfig for Config {
    type Valid = Config;
    fn runtime(&self) -> &RuntimeConfig {
        &self.runtime
    }
    fn runtime_mut(&mut self) -> &mut RuntimeConfig {
        &mut self.runtime
    }
    fn validate(&self) -> Result<Config, ConfigError> {
        let i = &self.alertmanager_integration;
        if !i.webhook_path.starts_with('/') {
            return Err(ConfigError::new("alertmanager_integration.webhook_path", "must start with `/`"));
        }
        let limits = &i.limits;
        if limits.publish_timeout >= limits.request_timeout {
            return Err(ConfigError::new(
                "alertmanager_integration.limits.publish_timeout",
                "must be shorter than limits.request_timeout",
            ));
        }
        if limits.max_concurrent_requests == 0 || limits.max_body_bytes == 0 {
            return Err(ConfigError::new("alertmanager_integration.limits", "limits must be positive"));
        }
        if i.severity.label.is_empty() {
            return Err(ConfigError::new("alertmanager_integration.severity.label", "must not be empty"));
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
        Ok(self.clone())
    }
}
