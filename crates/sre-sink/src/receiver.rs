//! The receiver kit of two-way sync: what every vendor webhook into a sink shares, on the
//! one inbound path (`sre_runtime::inbound`, which the ingress uses too): the secrets and
//! limits of a receiver, its signature or shared-secret check, its metrics, the intent's
//! metadata from the vendor's event id, and mounting it on the sink's router.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use secrecy::SecretString;
use serde_json::json;
use sre_bus::Envelope;
pub use sre_runtime::SecretRef;
use sre_runtime::inbound::{self, Accepted, Limits, Reason, Refusal, Webhook};
use sre_runtime::{SecretStore, ServiceContext, axum};

/// What became of a vendor webhook that passed its authenticity check (a metric label:
/// every receiver names them alike).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    /// An intent was published (or found already stored).
    Intent,
    /// The sink's own action coming back, or a change its record already holds.
    Echo,
    /// About something the sink did not create (another integration's incident, issue).
    Unknown,
    /// An event type or action not acted on.
    Ignored,
}

impl Outcome {
    /// Every outcome, e.g. to create each series at 0.
    pub const ALL: [Outcome; 4] = [Outcome::Intent, Outcome::Echo, Outcome::Unknown, Outcome::Ignored];
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    provider: &'static str,
    outcome: Outcome,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    provider: &'static str,
    reason: Reason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
}

/// A sink's receiver metrics, `<prefix>_webhook_events_total{provider,outcome}`,
/// `<prefix>_webhook_refused_total{provider,reason}` and
/// `<prefix>_webhook_last_accepted_timestamp_seconds{provider}` (the last authentic
/// delivery: `time() -` it is how long a receiver has heard nothing); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ReceiverMetrics {
    events: Family<EventLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    last_accepted: Family<ProviderLabels, prometheus_client::metrics::gauge::Gauge>,
}

impl ReceiverMetrics {
    /// Registers both under `prefix` (e.g. `paging_sink`).
    pub fn register(&self, r: &mut prometheus_client::registry::Registry, prefix: &str) {
        r.register(
            format!("{prefix}_webhook_events"),
            "Authentic vendor webhooks (two-way sync) by provider and outcome",
            self.events.clone(),
        );
        r.register(
            format!("{prefix}_webhook_refused"),
            "Vendor webhooks refused, by provider and reason (a bad signature among them)",
            self.refused.clone(),
        );
        r.register(
            format!("{prefix}_webhook_last_accepted_timestamp_seconds"),
            "When the receiver last accepted an authentic delivery (Unix seconds)",
            self.last_accepted.clone(),
        );
    }

    /// Creates `provider`'s series at 0 (when its receiver is enabled).
    pub fn prime(&self, provider: &'static str) {
        for outcome in Outcome::ALL {
            let _ = self.events.get_or_create(&EventLabels { provider, outcome });
        }
        for reason in Reason::ALL {
            let _ = self.refused.get_or_create(&RefusedLabels { provider, reason });
        }
    }

    /// Counts an authentic webhook.
    pub fn event(&self, provider: &'static str, outcome: Outcome) {
        self.events.get_or_create(&EventLabels { provider, outcome }).inc();
        self.last_accepted.get_or_create(&ProviderLabels { provider }).set(jiff::Timestamp::now().as_second());
    }

    /// Counts a refused webhook.
    pub fn refused(&self, provider: &'static str, reason: Reason) {
        self.refused.get_or_create(&RefusedLabels { provider, reason }).inc();
    }

    /// An authentic webhook that asks for nothing (`outcome`, `why`): counted, logged, and
    /// answered 200 with nothing published.
    pub fn ignored<L>(&self, provider: &'static str, outcome: Outcome, why: &str, event: &str) -> Accepted<L> {
        self.event(provider, outcome);
        tracing::info!(provider, event, outcome = ?outcome, why, "webhook ignored");
        let mut accepted = Accepted { envelopes: Vec::new(), labels: Vec::new(), summary: serde_json::Map::new() };
        accepted.summary.insert("ignored".into(), json!(why));
        accepted
    }
}

/// The metadata of an intent a vendor webhook carried: its idempotency key derived from the
/// vendor's event (or delivery) id, so a redelivered webhook is one intent on the bus.
pub fn intent_meta(
    vendor: &str,
    event_id: &str,
    correlation: &str,
    source: &sre_contracts::domain::v1::Source,
) -> Option<sre_contracts::domain::v1::MessageMeta> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Some(sre_contracts::domain::v1::MessageMeta {
        idempotency_key: sre_resilience::idempotency::derive_key(&format!("{vendor}-webhook"), &[event_id]),
        correlation_id: correlation.to_owned(),
        causation_id: String::new(),
        source: Some(source.clone()),
        occurred_at: Some(prost_types::Timestamp {
            seconds: i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(now.subsec_nanos()).unwrap_or(0),
        }),
    })
}

/// A receiver's answer carrying one intent (`envelope`) about `incident_id`, for `event`.
pub fn one_intent(envelope: Envelope, incident_id: &str, event: &str) -> Accepted<()> {
    let mut accepted = Accepted { envelopes: vec![envelope], labels: vec![()], summary: serde_json::Map::new() };
    accepted.summary.insert("incident_id".into(), json!(incident_id));
    accepted.summary.insert("event".into(), json!(event));
    accepted
}

/// 401 unless `signatures` (hex) hold the body's HMAC-SHA256 under one of `secrets`.
pub fn require_signature<'a>(
    secrets: &[SecretString],
    body: &[u8],
    signatures: impl IntoIterator<Item = &'a str>,
) -> Result<(), Refusal> {
    if inbound::signed_by_any(secrets, body, signatures) {
        Ok(())
    } else {
        Err(Refusal::new(StatusCode::UNAUTHORIZED, Reason::BadSignature, "missing or invalid signature"))
    }
}

/// 401 unless `presented` (a header a vendor sends as configured: Opsgenie and JSM sign
/// nothing) equals one of `secrets`. Compared as SHA-256 digests in constant time, so
/// neither content nor length leaks through timing.
pub fn require_shared_secret(secrets: &[SecretString], presented: Option<&str>) -> Result<(), Refusal> {
    use secrecy::ExposeSecret;
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let refused = || Refusal::new(StatusCode::UNAUTHORIZED, Reason::Unauthorized, "missing or invalid credentials");
    let presented: [u8; 32] = sha2::Sha256::digest(presented.ok_or_else(refused)?.as_bytes()).into();
    let mut matched = subtle::Choice::from(0);
    for secret in secrets {
        let expected: [u8; 32] = sha2::Sha256::digest(secret.expose_secret().as_bytes()).into();
        matched |= expected.ct_eq(&presented);
    }
    if bool::from(matched) { Ok(()) } else { Err(refused()) }
}

/// What every receiver's configuration says, whatever else it holds (each sink's webhook
/// sections deny unknown keys, so these are accessors rather than a flattened struct).
pub trait ReceiverSettings {
    /// Whether the receiver is on.
    fn enabled(&self) -> bool;
    /// Its path, when not the default `/webhooks/<vendor>`.
    fn path(&self) -> Option<&str>;
    /// The secrets of its signature or header, key `secret`.
    fn secret_refs(&self) -> &[SecretRef];
    /// Largest body accepted.
    fn max_body_bytes(&self) -> usize;
    /// Whole-request deadline, below the vendor's own timeout.
    fn request_timeout(&self) -> Duration;
}

/// Implements [`ReceiverSettings`] for webhook configuration structs that hold `enabled`,
/// `path`, `secret_refs`, `max_body_bytes` and `request_timeout` under those names.
#[macro_export]
macro_rules! receiver_settings {
    ($($hook:ty),+ $(,)?) => {$(
        impl $crate::receiver::ReceiverSettings for $hook {
            fn enabled(&self) -> bool {
                self.enabled
            }
            fn path(&self) -> Option<&str> {
                self.path.as_deref()
            }
            fn secret_refs(&self) -> &[$crate::receiver::SecretRef] {
                &self.secret_refs
            }
            fn max_body_bytes(&self) -> usize {
                self.max_body_bytes
            }
            fn request_timeout(&self) -> std::time::Duration {
                self.request_timeout
            }
        }
    )+};
}

/// The configuration error of a receiver switched on with no secret, at `key` (its
/// configuration path): checked with the rest of the configuration, so `--check-config`
/// refuses it.
pub fn check_settings(key: &str, settings: Option<&impl ReceiverSettings>) -> Result<(), sre_runtime::ConfigError> {
    let Some(settings) = settings.filter(|s| s.enabled()) else { return Ok(()) };
    if settings.secret_refs().is_empty() {
        return Err(sre_runtime::ConfigError::new(
            format!("{key}.secret_refs"),
            "list at least one secret: a receiver that is on must check what it receives",
        ));
    }
    if let Some(path) = settings.path()
        && !path.starts_with('/')
    {
        return Err(sre_runtime::ConfigError::new(format!("{key}.path"), "must start with /"));
    }
    Ok(())
}

/// A vendor receiver's limits: `max_body_bytes`, and a deadline below the vendor's own
/// timeout (the answer is then ours: 503, retried) with the publish wait a second less.
pub fn limits(max_body_bytes: usize, request_timeout: Duration) -> Limits {
    Limits {
        max_body_bytes,
        request_timeout,
        publish_timeout: request_timeout.saturating_sub(Duration::from_secs(1)).max(Duration::from_millis(500)),
        max_concurrent_requests: 64,
    }
}

/// Mounts a sink's receivers on one router.
#[derive(Debug)]
pub struct Receivers<'a, C> {
    ctx: &'a ServiceContext<C>,
    metrics: ReceiverMetrics,
    router: Router,
}

impl<'a, C> Receivers<'a, C> {
    /// Receivers of the sink started with `ctx`, counted in `metrics`.
    pub fn new(ctx: &'a ServiceContext<C>, metrics: ReceiverMetrics) -> Self {
        Self { ctx, metrics, router: Router::new() }
    }

    /// Mounts `vendor`'s receiver when `settings` turn it on: its secrets (each must
    /// resolve, else the start fails naming `key`), its path (`/webhooks/<vendor>` by
    /// default), its limits and its series at 0. `build` makes the receiver from the
    /// secrets and the settings.
    pub fn mount<S, W>(
        &mut self,
        vendor: &'static str,
        key: &str,
        settings: Option<&S>,
        build: impl FnOnce(Vec<SecretString>, &S) -> W,
    ) -> anyhow::Result<()>
    where
        S: ReceiverSettings,
        W: Webhook,
    {
        let Some(settings) = settings.filter(|s| s.enabled()) else { return Ok(()) };
        let secrets = secrets(&self.ctx.secrets, settings.secret_refs(), key)?;
        let path = settings.path().map_or_else(|| format!("/webhooks/{vendor}"), str::to_owned);
        let limits = limits(settings.max_body_bytes(), settings.request_timeout());
        self.metrics.prime(vendor);
        tracing::info!(%path, vendor, secrets = secrets.len(), "webhook receiver on");
        let route = inbound::router(&path, build(secrets, settings), self.ctx.bus.intent_publisher(), limits);
        self.router = std::mem::take(&mut self.router).merge(route);
        Ok(())
    }

    /// The metrics the receivers count in.
    pub fn metrics(&self) -> &ReceiverMetrics {
        &self.metrics
    }

    /// The routes of every receiver mounted.
    pub fn into_router(self) -> Router {
        self.router
    }
}

/// What `--check-config` says about secrets a sink will read at start: one line for each
/// (configuration key, reference, key in the secret) that cannot be read here, naming them
/// all and never a value. Where the check runs without the secrets mounted (a CI job), these
/// are notes, not errors; the start refuses for the same reasons.
pub fn secret_notices(secrets: &SecretStore, wanted: &[(String, &SecretRef, &str)]) -> Vec<String> {
    wanted
        .iter()
        .filter_map(|(key, secret_ref, name)| {
            let e = secrets.resolve(secret_ref, name).err()?;
            Some(format!("{key}: {e}; the adapter will not start until it can be read"))
        })
        .collect()
}

/// The webhook secrets `settings` will read (key `secret` of each), for [`secret_notices`].
pub fn receiver_secret_refs<'a>(
    key: &str,
    settings: Option<&'a impl ReceiverSettings>,
) -> Vec<(String, &'a SecretRef, &'static str)> {
    settings
        .filter(|s| s.enabled())
        .map(|s| {
            s.secret_refs().iter().enumerate().map(|(n, r)| (format!("{key}.secret_refs[{n}]"), r, "secret")).collect()
        })
        .unwrap_or_default()
}

/// The secrets of a receiver (key `secret` of each ref): at least one, or the start fails
/// naming `key`.
pub fn secrets(store: &SecretStore, refs: &[SecretRef], key: &str) -> anyhow::Result<Vec<SecretString>> {
    let secrets = refs.iter().map(|r| store.resolve(r, "secret")).collect::<Result<Vec<_>, _>>()?;
    anyhow::ensure!(!secrets.is_empty(), "{key}.secret_refs: at least one secret");
    Ok(secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_secret_matches_any_configured_one_and_nothing_else() {
        let secrets = [SecretString::from("old-secret"), SecretString::from("new-secret")];
        assert!(require_shared_secret(&secrets, Some("new-secret")).is_ok());
        assert!(require_shared_secret(&secrets, Some("old-secret")).is_ok());
        for wrong in [Some("new-secre"), Some(""), None] {
            let refused = require_shared_secret(&secrets, wrong).expect_err("refused");
            assert_eq!((refused.status, refused.reason), (StatusCode::UNAUTHORIZED, Reason::Unauthorized));
        }
    }

    #[test]
    fn a_receiver_on_without_a_secret_is_a_configuration_error() {
        struct Hook(bool, Vec<SecretRef>);
        impl ReceiverSettings for Hook {
            fn enabled(&self) -> bool {
                self.0
            }
            fn path(&self) -> Option<&str> {
                None
            }
            fn secret_refs(&self) -> &[SecretRef] {
                &self.1
            }
            fn max_body_bytes(&self) -> usize {
                1024
            }
            fn request_timeout(&self) -> Duration {
                Duration::from_secs(4)
            }
        }
        let e =
            check_settings("paging_integration.pagerduty.webhook", Some(&Hook(true, vec![]))).expect_err("no secret");
        assert_eq!(e.path, "paging_integration.pagerduty.webhook.secret_refs");
        assert!(check_settings("x", Some(&Hook(false, vec![]))).is_ok(), "off: nothing to check");
        assert!(check_settings("x", None::<&Hook>).is_ok());
        let limits = limits(1024, Duration::from_secs(4));
        assert_eq!((limits.publish_timeout, limits.max_concurrent_requests), (Duration::from_secs(3), 64));
    }
}
