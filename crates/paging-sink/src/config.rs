//! Configuration in the specification's shape (`paging_integration:`), plus routing,
//! weekdays, base URLs, `dry_run` and the consumer's settings.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use sre_bus::ConsumerConfig;
use sre_runtime::{ConfigError, RuntimeConfig, SecretRef, ServiceConfig};

use sre_sink::receiver::check_settings;

pub use crate::provider::Provider;
pub use crate::schedule::When;
use crate::schedule::{BusinessHours, Policy, Weekday, parse_time};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The adapter's section.
    pub paging_integration: Integration,
    /// Bus, HTTP, telemetry and shutdown settings shared by every adapter.
    pub runtime: RuntimeConfig,
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
    /// Jira Service Management Operations settings (Opsgenie's successor: switch
    /// `default_provider` to `jsm` and keep `opsgenie` until the pages made with it end).
    pub jsm: Option<Jsm>,
    /// When each severity pages.
    pub escalation: Escalation,
    /// Routing rules, first match wins; no match goes to `default_provider` with its
    /// default routing key or team.
    pub routes: Vec<Route>,
    /// Log what would be sent and send nothing (the state is still kept, so a dry run
    /// shows exactly what a live run would page).
    pub dry_run: bool,
    /// How often deferred pages are checked for their opening.
    #[serde(with = "humantime_serde")]
    pub deferred_check_interval: Duration,
    /// The reconciler: pages read back from their vendors, what a lost webhook dropped
    /// repaired (`sre_sink::reconcile`).
    pub reconcile: sre_sink::reconcile::ReconcileSettings,
    /// The durable consumer (shared by every replica).
    pub consumer: ConsumerConfig,
}

impl Default for Integration {
    fn default() -> Self {
        Self {
            enabled: true,
            default_provider: Provider::Pagerduty,
            pagerduty: None,
            opsgenie: None,
            jsm: None,
            escalation: Escalation::default(),
            routes: Vec::new(),
            dry_run: false,
            deferred_check_interval: Duration::from_secs(15),
            reconcile: sre_sink::reconcile::ReconcileSettings::default(),
            consumer: ConsumerConfig { durable_name: "paging-sink".to_owned(), ..ConsumerConfig::default() },
        }
    }
}

/// `paging_integration.pagerduty:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDuty {
    /// Secret holding the default Events API v2 routing key under key `routing_key`.
    pub routing_key_ref: SecretRef,
    /// Events API base URL (`https://events.eu.pagerduty.com` for EU service regions).
    #[serde(default = "pagerduty_url")]
    pub base_url: String,
    /// Events per minute per routing key (PagerDuty's limit is about 120).
    #[serde(default = "pagerduty_rate")]
    pub events_per_minute: u32,
    /// The PagerDuty Webhooks v3 receiver (two-way sync); off unless enabled.
    #[serde(default)]
    pub webhook: Option<Webhook>,
    /// Secret holding a REST API key under key `api_key` (optional): notes on the incident
    /// (from Jira, GitHub, Opsgenie or the platform) go through PagerDuty's REST API, which
    /// the Events API cannot do. Without it, notes are not added to PagerDuty pages (the
    /// metrics count them as skipped).
    #[serde(default)]
    pub api_key_ref: Option<SecretRef>,
    /// The email of the PagerDuty user the REST calls act as (the `From` header PagerDuty
    /// requires of account-level keys); required with `api_key_ref`.
    #[serde(default)]
    pub from: Option<String>,
    /// REST API base URL.
    #[serde(default = "pagerduty_api_url")]
    pub api_url: String,
    /// The event's `client` (template over the incident): who sent it, shown with the
    /// alert; `sre-integration` by default.
    #[serde(default)]
    pub client: Option<String>,
    /// The event's `client_url` (template): a link back from the alert, e.g. to the
    /// platform's incident or a dashboard (`{url}`, `{label.cluster}`…).
    #[serde(default)]
    pub client_url: Option<String>,
    /// The event's `payload.class` (template), e.g. `{label.alertname}`.
    #[serde(default)]
    pub class: Option<String>,
    /// The event's `images` (templates; `src` must be an `https://` URL, as PagerDuty
    /// requires).
    #[serde(default)]
    pub images: Vec<Image>,
}

/// `paging_integration.pagerduty`'s event fields, compiled: an unknown placeholder or an
/// image that is not `https://` is a configuration error naming the key.
fn pagerduty_fields(pd: &PagerDuty) -> Result<crate::provider::pagerduty::Fields, ConfigError> {
    use sre_sink::template::Template;
    let key = "paging_integration.pagerduty";
    let one = |name: &str, text: &Option<String>| -> Result<Option<Template>, ConfigError> {
        text.as_deref()
            .map(|t| Template::parse(t).map_err(|e| ConfigError::new(format!("{key}.{name}"), e)))
            .transpose()
    };
    let mut images = Vec::new();
    for (n, image) in pd.images.iter().enumerate() {
        let src = Template::parse(&image.src).map_err(|e| ConfigError::new(format!("{key}.images[{n}].src"), e))?;
        let prefix = src.prefix();
        if !"https://".starts_with(prefix) && !prefix.starts_with("https://") {
            return Err(ConfigError::new(format!("{key}.images[{n}].src"), "PagerDuty shows only https:// images"));
        }
        let href = one(&format!("images[{n}].href"), &image.href)?;
        images.push((src, href, one(&format!("images[{n}].alt"), &image.alt)?));
    }
    Ok(crate::provider::pagerduty::Fields::new(
        one("client", &pd.client)?,
        one("client_url", &pd.client_url)?,
        one("class", &pd.class)?,
        images,
    ))
}

/// One of `paging_integration.pagerduty.images`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// The image's URL (template; `https://`).
    pub src: String,
    /// Where clicking it goes (template).
    #[serde(default)]
    pub href: Option<String>,
    /// Its alternative text (template).
    #[serde(default)]
    pub alt: Option<String>,
}

fn pagerduty_api_url() -> String {
    "https://api.pagerduty.com".to_owned()
}

/// A vendor's webhook into this sink: what a person does there comes back as an intent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Off unless set.
    #[serde(default)]
    pub enabled: bool,
    /// Path it is served on (default `/webhooks/<vendor>`).
    #[serde(default)]
    pub path: Option<String>,
    /// Secrets of the signature, key `secret`; several while one rotates (PagerDuty signs
    /// with each active one).
    pub secret_refs: Vec<SecretRef>,
    /// Largest body accepted (PagerDuty guarantees delivery up to 55 KB).
    #[serde(default = "webhook_body")]
    pub max_body_bytes: usize,
    /// Whole-request deadline: below the vendor's own timeout (PagerDuty waits 5 s), so the
    /// answer is ours (503, retried) and not the vendor's timeout.
    #[serde(default = "webhook_timeout", with = "humantime_serde")]
    pub request_timeout: std::time::Duration,
}

fn webhook_body() -> usize {
    256 * 1024
}

fn webhook_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(4)
}

fn pagerduty_url() -> String {
    "https://events.pagerduty.com".to_owned()
}

fn pagerduty_rate() -> u32 {
    120
}

/// Opsgenie's region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// `https://api.opsgenie.com`.
    Us,
    /// `https://api.eu.opsgenie.com` (EU accounts must use it).
    Eu,
}

/// `paging_integration.opsgenie:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opsgenie {
    /// Secret holding the API integration key under key `api_key`.
    pub api_key_ref: SecretRef,
    /// `us` or `eu`.
    #[serde(default = "default_region")]
    pub region: Region,
    /// Overrides the region's base URL.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Responding team when no route names one.
    #[serde(default)]
    pub default_team: Option<String>,
    /// Opsgenie/JSM responders (`{type: team|user|escalation|schedule, name|username|id}`).
    #[serde(default)]
    pub responders: Vec<crate::alert_fields::Responder>,
    /// Opsgenie/JSM tags added to the sink's (templates).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Opsgenie/JSM details added to the sink's (values are templates).
    #[serde(default)]
    pub details: BTreeMap<String, String>,
    /// Opsgenie/JSM priority (`P1`…`P5`) per severity, over critical P1 … info P5.
    #[serde(default)]
    pub priorities: BTreeMap<String, String>,
    /// Opsgenie/JSM entity (default: the service; a template).
    #[serde(default)]
    pub entity: Option<String>,
    /// Requests per minute.
    #[serde(default = "opsgenie_rate")]
    pub requests_per_minute: u32,
    /// The receiver of Opsgenie's outgoing Webhook integration (two-way sync), off unless
    /// enabled.
    #[serde(default)]
    pub webhook: Option<OpsgenieWebhook>,
}

/// `paging_integration.opsgenie.webhook:`. Opsgenie signs nothing: the integration sends a
/// custom header holding a shared secret, compared in constant time.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsgenieWebhook {
    /// Off unless set.
    #[serde(default)]
    pub enabled: bool,
    /// Path it is served on (default `/webhooks/opsgenie`).
    #[serde(default)]
    pub path: Option<String>,
    /// The header the integration sends (default `X-Sre-Webhook-Secret`).
    #[serde(default = "secret_header")]
    pub header: String,
    /// Its accepted values, key `secret`; two while it is changed.
    pub secret_refs: Vec<SecretRef>,
    /// `source.name`s whose actions are this sink's own (its API integration's name); any
    /// action with `source.type: API` is taken as an integration's, not a person's.
    #[serde(default)]
    pub ignore_sources: Vec<String>,
    /// Largest body accepted.
    #[serde(default = "webhook_body")]
    pub max_body_bytes: usize,
    /// Whole-request deadline.
    #[serde(default = "webhook_timeout", with = "humantime_serde")]
    pub request_timeout: std::time::Duration,
}

/// `paging_integration.jsm:`: Jira Service Management Operations' integration API (an API
/// integration's key, `GenieKey`; create, acknowledge and close by alias, answered 202 as
/// Opsgenie does).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jsm {
    /// Secret holding the API integration's key under key `api_key`.
    pub api_key_ref: SecretRef,
    /// The integration API's base URL.
    #[serde(default = "jsm_url")]
    pub base_url: String,
    /// Responding team when no route names one.
    #[serde(default)]
    pub default_team: Option<String>,
    /// Opsgenie/JSM responders (`{type: team|user|escalation|schedule, name|username|id}`).
    #[serde(default)]
    pub responders: Vec<crate::alert_fields::Responder>,
    /// Opsgenie/JSM tags added to the sink's (templates).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Opsgenie/JSM details added to the sink's (values are templates).
    #[serde(default)]
    pub details: BTreeMap<String, String>,
    /// Opsgenie/JSM priority (`P1`…`P5`) per severity, over critical P1 … info P5.
    #[serde(default)]
    pub priorities: BTreeMap<String, String>,
    /// Opsgenie/JSM entity (default: the service; a template).
    #[serde(default)]
    pub entity: Option<String>,
    /// Requests per minute.
    #[serde(default = "opsgenie_rate")]
    pub requests_per_minute: u32,
    /// The receiver of the JSM outgoing Webhook integration (the Opsgenie format), off
    /// unless enabled.
    #[serde(default)]
    pub webhook: Option<OpsgenieWebhook>,
}

fn jsm_url() -> String {
    "https://api.atlassian.com/jsm/ops/integration".to_owned()
}

fn secret_header() -> String {
    "X-Sre-Webhook-Secret".to_owned()
}

fn default_region() -> Region {
    Region::Us
}

fn opsgenie_rate() -> u32 {
    600
}

impl Opsgenie {
    /// The base URL in effect.
    pub fn url(&self) -> String {
        self.base_url.clone().unwrap_or_else(|| {
            match self.region {
                Region::Us => "https://api.opsgenie.com",
                Region::Eu => "https://api.eu.opsgenie.com",
            }
            .to_owned()
        })
    }
}

/// One routing rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// What an incident must match (every given field).
    #[serde(rename = "match", default)]
    pub matches: sre_sink::RouteMatch,
    /// Provider; default: `default_provider`.
    #[serde(default)]
    pub provider: Option<Provider>,
    /// PagerDuty: secret holding this route's routing key (key `routing_key`).
    #[serde(default)]
    pub routing_key_ref: Option<SecretRef>,
    /// Opsgenie: responding team.
    #[serde(default)]
    pub team: Option<String>,
    /// Opsgenie/JSM responders (`{type: team|user|escalation|schedule, name|username|id}`).
    #[serde(default)]
    pub responders: Vec<crate::alert_fields::Responder>,
    /// Opsgenie/JSM tags added to the sink's (templates).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Opsgenie/JSM details added to the sink's (values are templates).
    #[serde(default)]
    pub details: BTreeMap<String, String>,
    /// Opsgenie/JSM priority (`P1`…`P5`) per severity, over critical P1 … info P5.
    #[serde(default)]
    pub priorities: BTreeMap<String, String>,
    /// Opsgenie/JSM entity (default: the service; a template).
    #[serde(default)]
    pub entity: Option<String>,
}

/// The Opsgenie/JSM alert fields of a section.
macro_rules! alert_config {
    ($($t:ty),*) => {$(
        impl $t {
            /// What this section sets on Opsgenie/JSM alerts.
            pub fn alert_config(&self) -> crate::alert_fields::AlertConfig {
                crate::alert_fields::AlertConfig {
                    responders: self.responders.clone(),
                    tags: self.tags.clone(),
                    details: self.details.clone(),
                    priorities: self.priorities.clone(),
                    entity: self.entity.clone(),
                }
            }
        }
    )*};
}
alert_config!(Opsgenie, Jsm, Route);

/// `paging_integration.escalation:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Escalation {
    /// When critical incidents page.
    pub critical: When,
    /// When high incidents page.
    pub high: When,
    /// The business hours.
    pub business_hours: HoursConfig,
}

impl Default for Escalation {
    fn default() -> Self {
        Self { critical: When::Immediate, high: When::BusinessHoursOnly, business_hours: HoursConfig::default() }
    }
}

/// `paging_integration.escalation.business_hours:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HoursConfig {
    /// Opening time, `HH:MM` (or `HH:MM:SS`), local to `timezone`.
    pub start: String,
    /// Closing time, `HH:MM` (or `HH:MM:SS`).
    pub end: String,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub timezone: String,
    /// Working days.
    pub weekdays: Vec<Weekday>,
}

impl Default for HoursConfig {
    fn default() -> Self {
        Self {
            start: "09:00".to_owned(),
            end: "17:00".to_owned(),
            timezone: "UTC".to_owned(),
            weekdays: vec![Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri],
        }
    }
}

impl HoursConfig {
    /// The validated business hours.
    pub fn resolve(&self) -> Result<BusinessHours, ConfigError> {
        let path = "paging_integration.escalation.business_hours";
        let start =
            parse_time(&self.start).ok_or_else(|| ConfigError::new(format!("{path}.start"), "expected HH:MM"))?;
        let end = parse_time(&self.end).ok_or_else(|| ConfigError::new(format!("{path}.end"), "expected HH:MM"))?;
        if start >= end {
            return Err(ConfigError::new(path, "start must be before end"));
        }
        let tz = jiff::tz::TimeZone::get(&self.timezone).map_err(|e| {
            ConfigError::new(format!("{path}.timezone"), format!("`{}` is not an IANA time zone: {e}", self.timezone))
        })?;
        if self.weekdays.is_empty() {
            return Err(ConfigError::new(format!("{path}.weekdays"), "list at least one day"));
        }
        Ok(BusinessHours { start, end, tz, weekdays: self.weekdays.clone() })
    }
}

/// The configuration start consumes: the file, with its escalation policy resolved
/// (business hours in their time zone).
#[derive(Debug, Clone)]
pub struct Valid {
    /// The file as parsed.
    pub config: Config,
    /// The escalation policy.
    pub policy: Policy,
    /// PagerDuty's templated event fields, compiled.
    pub pagerduty_fields: crate::provider::pagerduty::Fields,
    /// Opsgenie's and JSM's alert fields, compiled.
    pub alert_defaults: BTreeMap<Provider, crate::alert_fields::Compiled>,
    /// Each route's alert fields over its provider's, in `routes` order.
    pub alert_routes: Vec<crate::alert_fields::Compiled>,
}

impl Valid {
    /// The Opsgenie/JSM alert fields of a page of `provider` for `team` on `route`
    /// (`default` or `routes[n]`, as the page's target names it, possibly long ago: a
    /// deferred page, a reopen). When the route at that place has changed since (another
    /// provider or team), the provider's own fields, never another route's responders.
    pub fn alert_fields(&self, provider: Provider, route: &str, team: Option<&str>) -> crate::alert_fields::Compiled {
        let i = &self.config.paging_integration;
        let default_team = match provider {
            Provider::Pagerduty => None,
            Provider::Opsgenie => i.opsgenie.as_ref().and_then(|o| o.default_team.as_deref()),
            Provider::Jsm => i.jsm.as_ref().and_then(|j| j.default_team.as_deref()),
        };
        sre_sink::routing::route_index(route)
            .filter(|n| {
                i.routes.get(*n).is_some_and(|r| {
                    r.provider.unwrap_or(i.default_provider) == provider && r.team.as_deref().or(default_team) == team
                })
            })
            .and_then(|n| self.alert_routes.get(n))
            .or_else(|| self.alert_defaults.get(&provider))
            .cloned()
            .unwrap_or_default()
    }
}

impl ServiceConfig for Config {
    type Valid = Valid;
    fn runtime(&self) -> &RuntimeConfig {
        &self.runtime
    }
    fn runtime_mut(&mut self) -> &mut RuntimeConfig {
        &mut self.runtime
    }
    fn notices(&self, secrets: &sre_runtime::SecretStore) -> Vec<String> {
        use sre_sink::receiver::{receiver_secret_refs, secret_notices};
        let i = &self.paging_integration;
        if !i.enabled {
            return Vec::new();
        }
        let mut wanted = Vec::new();
        if let Some(pd) = &i.pagerduty {
            wanted.push((
                "paging_integration.pagerduty.routing_key_ref".to_owned(),
                &pd.routing_key_ref,
                "routing_key",
            ));
            wanted.extend(receiver_secret_refs("paging_integration.pagerduty.webhook", pd.webhook.as_ref()));
            if let Some(key) = &pd.api_key_ref {
                wanted.push(("paging_integration.pagerduty.api_key_ref".to_owned(), key, "api_key"));
            }
        }
        for (n, route) in i.routes.iter().enumerate() {
            if let Some(r) = &route.routing_key_ref {
                wanted.push((format!("paging_integration.routes[{n}].routing_key_ref"), r, "routing_key"));
            }
        }
        if let Some(og) = &i.opsgenie {
            wanted.push(("paging_integration.opsgenie.api_key_ref".to_owned(), &og.api_key_ref, "api_key"));
            wanted.extend(receiver_secret_refs("paging_integration.opsgenie.webhook", og.webhook.as_ref()));
        }
        if let Some(jsm) = &i.jsm {
            wanted.push(("paging_integration.jsm.api_key_ref".to_owned(), &jsm.api_key_ref, "api_key"));
            wanted.extend(receiver_secret_refs("paging_integration.jsm.webhook", jsm.webhook.as_ref()));
        }
        secret_notices(secrets, &wanted)
    }

    fn validate(&self) -> Result<Valid, ConfigError> {
        let i = &self.paging_integration;
        let hours = i.escalation.business_hours.resolve()?;
        let policy = Policy { critical: i.escalation.critical, high: i.escalation.high, hours };
        let pagerduty_fields = match &i.pagerduty {
            Some(pd) => pagerduty_fields(pd)?,
            None => crate::provider::pagerduty::Fields::default(),
        };
        let alert_error = |(key, reason): (String, String)| ConfigError::new(key, reason);
        let mut alert_defaults = BTreeMap::new();
        if let Some(og) = &i.opsgenie {
            let c =
                crate::alert_fields::compile(&og.alert_config(), "paging_integration.opsgenie").map_err(alert_error)?;
            alert_defaults.insert(Provider::Opsgenie, c);
        }
        if let Some(jsm) = &i.jsm {
            let c = crate::alert_fields::compile(&jsm.alert_config(), "paging_integration.jsm").map_err(alert_error)?;
            alert_defaults.insert(Provider::Jsm, c);
        }
        let mut alert_routes = Vec::new();
        for (n, r) in i.routes.iter().enumerate() {
            let at = format!("paging_integration.routes[{n}]");
            let route = crate::alert_fields::compile(&r.alert_config(), &at).map_err(alert_error)?;
            let provider = r.provider.unwrap_or(i.default_provider);
            if provider == Provider::Pagerduty && route != crate::alert_fields::Compiled::default() {
                return Err(ConfigError::new(
                    at,
                    "responders, tags, details, priorities and entity are Opsgenie's and JSM's; PagerDuty's event \
                     fields are set under paging_integration.pagerduty",
                ));
            }
            alert_routes
                .push(crate::alert_fields::over(&alert_defaults.get(&provider).cloned().unwrap_or_default(), &route));
        }
        let valid = Valid { config: self.clone(), policy, pagerduty_fields, alert_defaults, alert_routes };
        check_settings("paging_integration.pagerduty.webhook", i.pagerduty.as_ref().and_then(|p| p.webhook.as_ref()))?;
        check_settings("paging_integration.opsgenie.webhook", i.opsgenie.as_ref().and_then(|o| o.webhook.as_ref()))?;
        check_settings("paging_integration.jsm.webhook", i.jsm.as_ref().and_then(|j| j.webhook.as_ref()))?;
        if !i.enabled {
            return Ok(valid);
        }
        let configured = |p: Provider| match p {
            Provider::Pagerduty => i.pagerduty.is_some(),
            Provider::Opsgenie => i.opsgenie.is_some(),
            Provider::Jsm => i.jsm.is_some(),
        };
        if !configured(i.default_provider) {
            let name = i.default_provider.name();
            return Err(ConfigError::new(
                format!("paging_integration.{name}"),
                format!("required when default_provider is {name}"),
            ));
        }
        for (n, route) in i.routes.iter().enumerate() {
            let provider = route.provider.unwrap_or(i.default_provider);
            if !configured(provider) {
                return Err(ConfigError::new(
                    format!("paging_integration.routes[{n}].provider"),
                    format!("{provider:?} is not configured"),
                ));
            }
            if provider.by_team() && route.routing_key_ref.is_some() {
                return Err(ConfigError::new(
                    format!("paging_integration.routes[{n}].routing_key_ref"),
                    format!("is for pagerduty routes; {} routes name a team", provider.name()),
                ));
            }
            if provider == Provider::Pagerduty && route.team.is_some() {
                return Err(ConfigError::new(
                    format!("paging_integration.routes[{n}].team"),
                    "is for opsgenie and jsm routes; pagerduty routes name a routing_key_ref",
                ));
            }
        }
        if let Some(pd) = &i.pagerduty
            && pd.api_key_ref.is_some()
            && !pd.from.as_deref().is_some_and(|f| f.contains('@'))
        {
            return Err(ConfigError::new(
                "paging_integration.pagerduty.from",
                "the email of the PagerDuty user the REST API key acts as: required with api_key_ref",
            ));
        }
        for (key, url) in [
            ("paging_integration.pagerduty.base_url", i.pagerduty.as_ref().map(|p| p.base_url.clone())),
            ("paging_integration.pagerduty.api_url", i.pagerduty.as_ref().map(|p| p.api_url.clone())),
            ("paging_integration.opsgenie.base_url", i.opsgenie.as_ref().map(Opsgenie::url)),
            ("paging_integration.jsm.base_url", i.jsm.as_ref().map(|j| j.base_url.clone())),
        ] {
            if let Some(url) = url
                && !url.starts_with("https://")
                && !url.starts_with("http://")
            {
                return Err(ConfigError::new(key, "must start with https:// or http://"));
            }
        }
        if i.deferred_check_interval < Duration::from_secs(1) {
            return Err(ConfigError::new("paging_integration.deferred_check_interval", "must be at least 1s"));
        }
        i.reconcile.check("paging_integration.reconcile")?;
        Ok(valid)
    }
}

sre_sink::receiver_settings!(Webhook, OpsgenieWebhook);

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(yaml: &str) -> Result<Valid, ConfigError> {
        let config: Config = serde_norway::from_str(yaml).expect("yaml");
        config.validate()
    }

    #[test]
    fn a_misspelt_placeholder_or_a_plain_http_image_is_refused_naming_the_key() {
        let pd = |extra: &str| format!("paging_integration:\n  pagerduty:\n    routing_key_ref: platform/pd\n{extra}");
        let e = validate(&pd("    client_url: \"{titel}\"\n")).expect_err("unknown placeholder");
        assert_eq!(e.path, "paging_integration.pagerduty.client_url");
        assert!(e.reason.contains("`{titel}`"), "{}", e.reason);
        let e = validate(&pd("    images:\n      - src: \"http://grafana.example/x.png\"\n")).expect_err("http");
        assert_eq!(
            (e.path.as_str(), e.reason.as_str()),
            ("paging_integration.pagerduty.images[0].src", "PagerDuty shows only https:// images")
        );
        let ok = validate(&pd("    images:\n      - src: \"{label.graph}\"\n        alt: \"{service}\"\n"));
        assert!(ok.is_ok(), "a URL from a label is checked when rendered: {ok:?}");
    }

    #[test]
    fn a_page_whose_route_has_moved_since_gets_its_providers_fields_not_another_routes() {
        let v = validate(
            "paging_integration:\n  default_provider: opsgenie\n  opsgenie:\n    api_key_ref: p/og\n    default_team: sre\n    \
             tags: [sre]\n  routes:\n    - match: {team: data}\n      team: data-oncall\n      \
             responders: [{type: schedule, name: data-primary}]\n",
        )
        .expect("valid");
        let incident = sre_contracts::domain::v1::IncidentCreated::default();
        let responders = |route: &str, team: Option<&str>| {
            v.alert_fields(Provider::Opsgenie, route, team).render(&incident).responders.len()
        };
        assert_eq!(responders("routes[0]", Some("data-oncall")), 1, "the route the page was made on");
        assert_eq!(responders("routes[0]", Some("payments")), 0, "routes[0] now pages another team");
        assert_eq!(responders("routes[4]", Some("data-oncall")), 0, "gone");
        assert_eq!(v.alert_fields(Provider::Jsm, "routes[0]", Some("data-oncall")), Default::default());
        assert_eq!(v.alert_fields(Provider::Opsgenie, "default", Some("sre")).render(&incident).tags, ["sre"]);
    }

    #[test]
    fn jsm_is_a_provider_of_its_own_with_teams_not_routing_keys() {
        let base = "paging_integration:\n  default_provider: jsm\n";
        let e = validate(base).expect_err("no jsm section");
        assert_eq!(
            (e.path.as_str(), e.reason.as_str()),
            ("paging_integration.jsm", "required when default_provider is jsm")
        );
        let ok = format!("{base}  jsm:\n    api_key_ref: platform/jsm\n    default_team: sre\n");
        validate(&ok).expect("jsm on its defaults");
        let config: Config = serde_norway::from_str(&ok).expect("yaml");
        let jsm = config.paging_integration.jsm.expect("jsm");
        assert_eq!(jsm.base_url, "https://api.atlassian.com/jsm/ops/integration");
        let keyed = format!("{ok}  routes:\n    - match: {{team: data}}\n      routing_key_ref: platform/pd\n");
        let e = validate(&keyed).expect_err("a routing key on a jsm route");
        assert_eq!(e.path, "paging_integration.routes[0].routing_key_ref");
        assert!(e.reason.contains("jsm routes name a team"), "{}", e.reason);
        let http = format!("{base}  jsm:\n    api_key_ref: platform/jsm\n    base_url: ftp://jsm.example\n");
        assert_eq!(validate(&http).expect_err("a scheme").path, "paging_integration.jsm.base_url");
    }
}
