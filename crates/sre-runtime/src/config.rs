//! Configuration: parsed from a YAML string plus a variable map (pure and testable; only
//! `main` reads the process environment).
//!
//! A file holds the adapter's section in the specification's shape (e.g.
//! `alertmanager_integration:`) and an optional `runtime:` section shared by every
//! adapter. Every struct denies unknown keys, so a misspelt key is an error that names it.
//! Environment variables override: `NATS_URL` (bus URL), `NATS_USER`/`NATS_PASSWORD`,
//! `NATS_CREDS` (a `.creds` file), `NATS_NKEY` (an NKey seed file), `NATS_CA`/`NATS_CERT`/
//! `NATS_KEY`/`NATS_TLS_FIRST` (TLS to the bus), `NATS_BIND_ONLY`, `HTTP_ADDR` (listener),
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (traces), `LOG_LEVEL`, `POD_NAME`/`HOSTNAME` (instance).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use sre_bus::BusConfig;

use crate::LogFormat;

/// Environment variables, passed in rather than read, so tests never mutate the process.
pub type Vars = HashMap<String, String>;

/// A configuration error: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConfigError {
    /// Key path, e.g. `alertmanager_integration.idempotency.dedup_window`.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { path: path.into(), reason: reason.into() }
    }
}

/// The adapter's whole configuration file.
pub trait ServiceConfig: DeserializeOwned + Default + Send + Sync + 'static {
    /// The configuration once every check has passed: what the adapter's start consumes
    /// (templates compiled, business hours resolved). `--check-config` builds it too, so
    /// whatever start would refuse without a secret or the network is refused there.
    type Valid: Send + Sync + 'static;
    /// The shared runtime section.
    fn runtime(&self) -> &RuntimeConfig;
    /// The shared runtime section, for overrides.
    fn runtime_mut(&mut self) -> &mut RuntimeConfig;
    /// Checks that span keys (e.g. a threshold that must be below a window) and what the
    /// values mean (a template's placeholders); parsing has already checked each key on
    /// its own. Returns the validated configuration.
    fn validate(&self) -> Result<Self::Valid, ConfigError>;
    /// What `--check-config` tells the operator beyond errors: a valid file that will not
    /// do what they may expect (e.g. a token that is not where it is looked for), each
    /// line naming the key and what to do.
    fn notices(&self, _secrets: &crate::SecretStore) -> Vec<String> {
        Vec::new()
    }
}

/// The `runtime:` section every adapter shares.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// This instance's name in messages and logs; defaults to `POD_NAME`, then `HOSTNAME`.
    pub instance: Option<String>,
    /// The bus.
    pub bus: BusConfig,
    /// The HTTP listener (health, metrics, webhooks).
    pub http: HttpConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// Time allowed for in-flight work to finish after SIGTERM before the process exits.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Directory holding secrets, one folder per secret ref and one file per key (the
    /// Kubernetes Secret volume layout). `SECRETS_DIR` overrides it.
    pub secrets_dir: Option<std::path::PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            instance: None,
            bus: BusConfig::default(),
            http: HttpConfig::default(),
            telemetry: TelemetryConfig::default(),
            shutdown_grace: Duration::from_secs(25),
            secrets_dir: None,
        }
    }
}

/// The HTTP listener.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on; `HTTP_ADDR` overrides it. Unset: 127.0.0.1 and the adapter's
    /// own default port (charts set `0.0.0.0:8080`).
    pub addr: Option<SocketAddr>,
}

/// Logs and traces.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Log filter in `tracing` syntax, e.g. `info` or `info,sre_bus=debug`; `LOG_LEVEL`
    /// overrides it.
    pub log_level: String,
    /// `json` (default, one object per line) or `text` for people at a terminal.
    pub log_format: LogFormat,
    /// OTLP/gRPC endpoint for traces, e.g. `http://otel-collector:4317`; unset means no
    /// export (and no noise about it). `OTEL_EXPORTER_OTLP_ENDPOINT` overrides it.
    pub otlp_endpoint: Option<String>,
    /// What a webhook's incoming `traceparent` (Alertmanager 0.28+ sends one when its
    /// tracing is on) is to our trace: `link` (default: our trace starts here and links to
    /// the sender's, so a forged header cannot graft our spans onto another trace) or
    /// `parent` (our spans join the sender's trace: for a sender you trust).
    pub incoming_traceparent: IncomingTrace,
}

/// How a webhook's incoming trace context is used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncomingTrace {
    /// The webhook's span starts a trace and links to the sender's span.
    #[default]
    Link,
    /// The webhook's span is a child of the sender's span.
    Parent,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_level: "info".to_owned(),
            log_format: LogFormat::Json,
            otlp_endpoint: None,
            incoming_traceparent: IncomingTrace::Link,
        }
    }
}

/// Parses `text` (YAML; empty means all defaults), applies the variable overrides and
/// validates: the configuration start consumes. Errors carry the key path.
pub fn load_config<C: ServiceConfig>(text: &str, vars: &Vars) -> Result<C::Valid, ConfigError> {
    parse_config::<C>(text, vars)?.validate()
}

/// Parses `text` and applies the variable overrides, each key checked on its own; what
/// spans keys is [`ServiceConfig::validate`]'s. Errors carry the key path.
pub fn parse_config<C: ServiceConfig>(text: &str, vars: &Vars) -> Result<C, ConfigError> {
    let mut config: C = if text.trim().is_empty() {
        C::default()
    } else {
        let de = serde_norway::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner().to_string();
            // serde_norway may prefix its message with (part of) the path already.
            let reason = match inner.split_once(": ") {
                Some((prefix, rest)) if path.starts_with(prefix) => rest.to_owned(),
                _ => inner,
            };
            ConfigError::new(if path == "." { "(top level)".to_owned() } else { path }, reason)
        })?
    };
    apply_overrides(config.runtime_mut(), vars)?;
    Ok(config)
}

fn apply_overrides(runtime: &mut RuntimeConfig, vars: &Vars) -> Result<(), ConfigError> {
    let var = |k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    if let Some(url) = var("NATS_URL") {
        runtime.bus.url = url.to_owned();
    }
    if let Some(addr) = var("HTTP_ADDR") {
        runtime.http.addr =
            Some(addr.parse().map_err(|e| ConfigError::new("HTTP_ADDR", format!("`{addr}` is not an address: {e}")))?);
    }
    if let Some(endpoint) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        runtime.telemetry.otlp_endpoint = Some(endpoint.to_owned());
    }
    if let Some(level) = var("LOG_LEVEL") {
        runtime.telemetry.log_level = level.to_owned();
    }
    if let Some(dir) = var("SECRETS_DIR") {
        runtime.secrets_dir = Some(dir.into());
    }
    if runtime.instance.is_none() {
        runtime.instance = var("POD_NAME").or_else(|| var("HOSTNAME")).map(str::to_owned);
    }
    if let Some(user) = var("NATS_USER") {
        runtime.bus.user = Some(user.to_owned());
    }
    if let Some(password) = vars.get("NATS_PASSWORD").filter(|p| !p.is_empty()) {
        runtime.bus.password = Some(sre_bus::Password(secrecy::SecretString::from(password.clone())));
    }
    // The bus's TLS and credentials files, under the names the `nats` CLI uses (the charts
    // mount the Secrets and set these).
    let tls_file = |name: &str| var(name).map(std::path::PathBuf::from);
    let (ca, cert, key) = (tls_file("NATS_CA"), tls_file("NATS_CERT"), tls_file("NATS_KEY"));
    if ca.is_some() || cert.is_some() || key.is_some() {
        let tls = runtime.bus.tls.get_or_insert(sre_bus::BusTls {
            ca_file: None,
            cert_file: None,
            key_file: None,
            handshake_first: false,
        });
        tls.ca_file = ca.or(tls.ca_file.take());
        tls.cert_file = cert.or(tls.cert_file.take());
        tls.key_file = key.or(tls.key_file.take());
    }
    if let Some(first) = var("NATS_TLS_FIRST") {
        let first = first.parse::<bool>().map_err(|_| ConfigError::new("NATS_TLS_FIRST", "expected true or false"))?;
        if let Some(tls) = runtime.bus.tls.as_mut() {
            tls.handshake_first = first;
        } else if first {
            return Err(ConfigError::new("NATS_TLS_FIRST", "TLS first needs TLS: set NATS_CA or runtime.bus.tls"));
        }
    }
    if let Some(creds) = var("NATS_CREDS") {
        runtime.bus.credentials_file = Some(creds.into());
    }
    if let Some(seed) = var("NATS_NKEY") {
        runtime.bus.nkey_seed_file = Some(seed.into());
    }
    if let Some(bind) = var("NATS_BIND_ONLY") {
        runtime.bus.bind_only =
            bind.parse::<bool>().map_err(|_| ConfigError::new("NATS_BIND_ONLY", "expected true or false"))?;
        if runtime.bus.bind_only {
            runtime.bus.manage_streams = false;
        }
    }
    if runtime.bus.url.trim().is_empty() {
        return Err(ConfigError::new("runtime.bus.url", "must not be empty"));
    }
    let url_key = if var("NATS_URL").is_some() { "NATS_URL" } else { "runtime.bus.url" };
    sre_bus::parse_seeds(&runtime.bus.url).map_err(|reason| ConfigError::new(url_key, reason))?;
    if runtime.bus.user.is_some() != (runtime.bus.password.is_some() || runtime.bus.password_file.is_some()) {
        return Err(ConfigError::new(
            "runtime.bus.user",
            "a bus user and its password come together (NATS_USER with NATS_PASSWORD, or user with password_file)",
        ));
    }
    runtime.bus.check().map_err(|(key, reason)| ConfigError::new(key, reason))?;
    tracing_subscriber::EnvFilter::try_new(&runtime.telemetry.log_level)
        .map_err(|e| ConfigError::new("runtime.telemetry.log_level", e.to_string()))?;
    Ok(())
}

/// Reads the configuration file named on the command line, or none.
pub fn read_file(path: Option<&std::path::Path>) -> Result<String, ConfigError> {
    match path {
        None => Ok(String::new()),
        Some(p) => std::fs::read_to_string(p)
            .map_err(|e| ConfigError::new(p.display().to_string(), format!("cannot read: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        sample_integration: Section,
        runtime: RuntimeConfig,
    }

    #[derive(Debug, Clone, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Section {
        enabled: bool,
        #[serde(with = "humantime_serde")]
        window: Duration,
        nested: Nested,
    }

    impl Default for Section {
        fn default() -> Self {
            Self { enabled: true, window: Duration::from_secs(300), nested: Nested::default() }
        }
    }

    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Nested {
        threshold: u32,
    }

    impl ServiceConfig for Sample {
        type Valid = Sample;
        fn runtime(&self) -> &RuntimeConfig {
            &self.runtime
        }
        fn runtime_mut(&mut self) -> &mut RuntimeConfig {
            &mut self.runtime
        }
        fn validate(&self) -> Result<Sample, ConfigError> {
            if self.sample_integration.nested.threshold > 10 {
                return Err(ConfigError::new("sample_integration.nested.threshold", "must be at most 10"));
            }
            Ok(self.clone())
        }
    }

    fn load(text: &str) -> Result<Sample, ConfigError> {
        load_config::<Sample>(text, &Vars::new())
    }

    #[test]
    fn empty_text_means_local_defaults() {
        let c = load("").expect("defaults");
        assert!(c.sample_integration.enabled);
        assert_eq!(c.runtime.bus.url, "nats://127.0.0.1:4222");
        assert_eq!(c.runtime.bus.streams.duplicate_window, Duration::from_secs(300));
        assert_eq!(c.runtime.telemetry.log_format, LogFormat::Json);
        assert_eq!(c.runtime.telemetry.otlp_endpoint, None);
    }

    #[test]
    fn durations_read_as_humans_write_them() {
        let c =
            load("sample_integration:\n  window: 90s\nruntime:\n  bus:\n    streams:\n      duplicate_window: 2m\n")
                .expect("parses");
        assert_eq!(c.sample_integration.window, Duration::from_secs(90));
        assert_eq!(c.runtime.bus.streams.duplicate_window, Duration::from_secs(120));
    }

    #[test]
    fn errors_name_the_key_path_and_the_reason() {
        let cases = [
            ("sample_integration:\n  enabeld: true\n", "sample_integration.enabeld", "unknown field `enabeld`"),
            (
                "sample_integration:\n  nested:\n    treshold: 1\n",
                "sample_integration.nested.treshold",
                "unknown field `treshold`",
            ),
            ("sample_integration:\n  window: soon\n", "sample_integration.window", ""),
            ("runtime:\n  bus:\n    ack_timeout: 5 parsecs\n", "runtime.bus.ack_timeout", ""),
            ("sampel_integration: {}\n", "sampel_integration", "unknown field `sampel_integration`"),
            ("- just\n- a list\n", "(top level)", "expected struct"),
            (
                "sample_integration:\n  nested:\n    threshold: 11\n",
                "sample_integration.nested.threshold",
                "at most 10",
            ),
            ("runtime:\n  telemetry:\n    log_format: xml\n", "runtime.telemetry.log_format", "unknown variant"),
            ("runtime:\n  bus:\n    manage_streams: perhaps\n", "runtime.bus.manage_streams", "invalid type"),
        ];
        for (text, path, reason) in cases {
            let err = load(text).expect_err(text);
            assert_eq!(err.path, path, "{text}: {err}");
            assert!(err.reason.contains(reason), "{text}: {err}");
            assert!(!err.reason.starts_with(&err.path), "the path is said once: {err}");
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let vars: Vars = [
            ("NATS_URL", "nats://10.0.0.1:4222"),
            ("HTTP_ADDR", "127.0.0.1:9999"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("POD_NAME", "ingress-7f9c"),
            ("SECRETS_DIR", "/var/run/secrets/sre"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let c: Sample = load_config::<Sample>("runtime:\n  bus:\n    url: nats://file:4222\n", &vars).expect("parses");
        assert_eq!(c.runtime.bus.url, "nats://10.0.0.1:4222");
        assert_eq!(c.runtime.http.addr, Some("127.0.0.1:9999".parse().expect("addr")));
        assert_eq!(c.runtime.telemetry.otlp_endpoint.as_deref(), Some("http://collector:4317"));
        assert_eq!(c.runtime.instance.as_deref(), Some("ingress-7f9c"));
        assert_eq!(c.runtime.secrets_dir.as_deref(), Some(std::path::Path::new("/var/run/secrets/sre")));

        let bad: Vars = [("HTTP_ADDR".to_owned(), "everywhere".to_owned())].into_iter().collect();
        let err = load_config::<Sample>("", &bad).expect_err("bad addr");
        assert_eq!(err.path, "HTTP_ADDR");
    }
}

/// A severity as written in configuration files (`critical`, `high`, `medium`, `low`,
/// `info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeverityName(pub sre_contracts::domain::v1::Severity);

impl<'de> Deserialize<'de> for SeverityName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use sre_contracts::SeverityExt;
        let name = String::deserialize(d)?;
        sre_contracts::domain::v1::Severity::from_config_name(&name).map(SeverityName).map_err(serde::de::Error::custom)
    }
}
