//! Configuration in the specification's shape (`ticketing_integration:`), plus what the
//! providers need: issue type, transitions, priorities, labels, templates, routes, base
//! URLs, `dry_run` and the consumer's settings.

use std::collections::BTreeMap;

use serde::Deserialize;
use sre_bus::ConsumerConfig;
use sre_runtime::{ConfigError, RuntimeConfig, SecretRef, ServiceConfig};
use sre_sink::receiver::check_settings;

pub use crate::provider::Provider;
pub use crate::provider::jira::Deployment;
use crate::template::Template;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The adapter's section.
    pub ticketing_integration: Integration,
    /// Bus, HTTP, telemetry and shutdown settings shared by every adapter.
    pub runtime: RuntimeConfig,
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
    /// Title and body templates.
    pub templates: Templates,
    /// Routing rules, first match wins; no match goes to `default_provider` with its
    /// project or repository.
    pub routes: Vec<Route>,
    /// Log what would be sent and send nothing.
    pub dry_run: bool,
    /// Comment on the ticket when the incident is acknowledged (who, and where: "by Dana
    /// in pagerduty"), once; no transition. On by default.
    pub comment_acknowledged: bool,
    /// What a reopened incident does to its ended ticket.
    pub reopen: Reopen,
    /// Writes to one ticket are at least this far apart (Jira Cloud limits writes per
    /// issue, `RateLimit-Reason: jira-per-issue-on-write`): a flapping incident's reopens,
    /// its notes and severity changes wait, and the comments they bring are posted
    /// together in one.
    #[serde(with = "humantime_serde")]
    pub ticket_write_interval: std::time::Duration,
    /// The reconciler: tickets read back from their trackers, what a lost webhook dropped
    /// repaired (`sre_sink::reconcile`).
    pub reconcile: sre_sink::reconcile::ReconcileSettings,
    /// The durable consumer (shared by every replica).
    pub consumer: ConsumerConfig,
}

impl Default for Integration {
    fn default() -> Self {
        Self {
            enabled: true,
            default_provider: Provider::Jira,
            jira: None,
            github: None,
            templates: Templates::default(),
            routes: Vec::new(),
            dry_run: false,
            comment_acknowledged: true,
            reopen: Reopen::default(),
            ticket_write_interval: std::time::Duration::from_secs(2),
            reconcile: sre_sink::reconcile::ReconcileSettings::default(),
            consumer: ConsumerConfig { durable_name: "ticketing-sink".to_owned(), ..ConsumerConfig::default() },
        }
    }
}

/// `ticketing_integration.reopen:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reopen {
    /// A ticket resolved or closed at most this long ago is moved back; after that, the
    /// reopened incident gets a new ticket linked to it.
    #[serde(with = "humantime_serde")]
    pub window: std::time::Duration,
    /// Resolutions (Jira) and state reasons (GitHub) a person chose that mean "leave it
    /// ended": such a ticket is never reopened, and no new one is opened for it (matched
    /// case-insensitively).
    pub never: Vec<String>,
}

impl Default for Reopen {
    fn default() -> Self {
        Self {
            window: std::time::Duration::from_secs(24 * 3600),
            never: ["Won't Fix", "Won't Do", "Duplicate", "Declined", "Cannot Reproduce", "not_planned", "duplicate"]
                .into_iter()
                .map(str::to_owned)
                .collect(),
        }
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
    /// Secret with `token` (Cloud API token or DC personal access token) and, for Cloud,
    /// `email`.
    pub secret_ref: SecretRef,
    /// Cloud or Data Center; default: Cloud for `*.atlassian.net`, else Data Center.
    #[serde(default)]
    pub deployment: Option<Deployment>,
    /// Issue type name.
    #[serde(default = "default_issue_type")]
    pub issue_type: String,
    /// The transition that resolves (by name, case-insensitive); when the workflow has
    /// none by that name, the first transition into the Done category is used.
    #[serde(default = "default_resolve")]
    pub resolve_transition: String,
    /// The transition that closes; same fallback.
    #[serde(default = "default_close")]
    pub close_transition: String,
    /// The transition that reopens; when the workflow has none by that name, the first
    /// transition out of the Done category is used.
    #[serde(default = "default_reopen")]
    pub reopen_transition: String,
    /// Jira priority name per severity; empty to leave the priority unset.
    #[serde(default = "default_priorities")]
    pub priorities: BTreeMap<String, String>,
    /// Labels added to every ticket (no spaces); a label may be a template over the
    /// incident (`team-{label.team}`), its spaces made `-`.
    #[serde(default = "default_labels")]
    pub labels: Vec<String>,
    /// Component names on every ticket (templates), unless a route names its own.
    #[serde(default)]
    pub components: Vec<String>,
    /// Assignee of every ticket unless a route names one: an accountId on Cloud, a user
    /// name on Data Center (a template).
    #[serde(default)]
    pub assignee: Option<String>,
    /// Other fields by id (`customfield_10020: {type: select, value: "{severity}"}`);
    /// types: text, adf (Cloud), number, select, multi_select, user, labels.
    #[serde(default)]
    pub fields: BTreeMap<String, crate::fields::CustomField>,
    /// Fields written again when the incident changes (`assignee`, `components`, `labels`
    /// or a field id); every other field is set at creation only, so a person's edit
    /// stands.
    #[serde(default)]
    pub sync: Vec<String>,
    /// Requests per minute this sink sends (Jira Cloud's burst limits are per site).
    #[serde(default = "default_jira_rate")]
    pub requests_per_minute: u32,
    /// The Jira webhook receiver (two-way sync), off unless enabled.
    #[serde(default)]
    pub webhook: Option<JiraWebhook>,
}

fn default_jira_rate() -> u32 {
    300
}

fn default_issue_type() -> String {
    "Bug".to_owned()
}
fn default_resolve() -> String {
    "Resolve".to_owned()
}
fn default_close() -> String {
    "Close".to_owned()
}
fn default_reopen() -> String {
    "Reopen".to_owned()
}
fn default_priorities() -> BTreeMap<String, String> {
    [("critical", "Highest"), ("high", "High"), ("medium", "Medium"), ("low", "Low"), ("info", "Lowest")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}
fn default_labels() -> Vec<String> {
    vec!["sre-incident".to_owned()]
}

impl Jira {
    /// The deployment in effect.
    pub fn deployment(&self) -> Deployment {
        self.deployment.unwrap_or_else(|| Deployment::of(&self.base_url))
    }
}

/// `ticketing_integration.github:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Github {
    /// `owner/name` of the repository.
    pub repo: String,
    /// Secret with the token under key `token`.
    pub secret_ref: SecretRef,
    /// API base URL: `https://api.github.com`, or `https://<host>/api/v3` for Enterprise.
    #[serde(default = "default_github_url")]
    pub base_url: String,
    /// Labels added to every issue; the first also lets the sink find its issues again.
    #[serde(default = "default_labels")]
    pub labels: Vec<String>,
    /// Label added when the incident resolves.
    #[serde(default = "default_resolved_label")]
    pub resolved_label: String,
    /// Assignees (logins) of every issue; GitHub drops them silently when the token may
    /// not push to the repository (the start check says so).
    #[serde(default)]
    pub assignees: Vec<String>,
    /// Milestone number of every issue.
    #[serde(default)]
    pub milestone: Option<u64>,
    /// Requests per minute (GitHub's secondary limit on content creation is ~80/min).
    #[serde(default = "default_github_rate")]
    pub requests_per_minute: u32,
    /// The GitHub webhook receiver (`issues`, `issue_comment`; two-way sync), off unless
    /// enabled.
    #[serde(default)]
    pub webhook: Option<GithubWebhook>,
}

/// What moving a Jira ticket to a status of the `done` category asks of the domain, when
/// the status is in neither `resolved_statuses` nor `closed_statuses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoneMeans {
    /// `ResolveIncidentRequested` (the default: "Done" is the work done).
    #[default]
    Resolve,
    /// `CloseIncidentRequested`.
    Close,
}

/// `ticketing_integration.jira.webhook:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JiraWebhook {
    /// Off unless set.
    #[serde(default)]
    pub enabled: bool,
    /// Path it is served on (default `/webhooks/jira`).
    #[serde(default)]
    pub path: Option<String>,
    /// The webhook's secret, key `secret`; two while it is changed.
    pub secret_refs: Vec<SecretRef>,
    /// Status names that mean resolved (matched case-insensitively).
    #[serde(default = "resolved_statuses")]
    pub resolved_statuses: Vec<String>,
    /// Status names that mean closed.
    #[serde(default = "closed_statuses")]
    pub closed_statuses: Vec<String>,
    /// Any other status of the `done` category.
    #[serde(default)]
    pub done_means: DoneMeans,
    /// Whether moving a resolved or closed ticket out of `done` asks to reopen.
    #[serde(default = "yes")]
    pub reopen: bool,
    /// Whether comments are passed on as notes.
    #[serde(default = "yes")]
    pub comments: bool,
    /// More accounts whose actions are this sink's own (automation acting for it): Cloud
    /// `accountId`, Data Center user name. The account of `secret_ref` itself is learnt
    /// from `GET /myself`.
    #[serde(default)]
    pub ignore_users: Vec<String>,
    /// Largest body accepted.
    #[serde(default = "webhook_body")]
    pub max_body_bytes: usize,
    /// Whole-request deadline.
    #[serde(default = "webhook_timeout", with = "humantime_serde")]
    pub request_timeout: std::time::Duration,
}

fn resolved_statuses() -> Vec<String> {
    vec!["Resolved".to_owned()]
}

fn closed_statuses() -> Vec<String> {
    vec!["Closed".to_owned()]
}

/// What a closed GitHub issue asks of the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseMeans {
    /// `CloseIncidentRequested` (the default: the ticket is the follow-up, closing it ends it).
    #[default]
    Close,
    /// `ResolveIncidentRequested`.
    Resolve,
}

/// `ticketing_integration.github.webhook:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubWebhook {
    /// Off unless set.
    #[serde(default)]
    pub enabled: bool,
    /// Path it is served on (default `/webhooks/github`).
    #[serde(default)]
    pub path: Option<String>,
    /// The webhook's secret, key `secret`; two while it is changed (GitHub sends one
    /// signature, by whichever secret the hook has).
    pub secret_refs: Vec<SecretRef>,
    /// What closing the issue asks for.
    #[serde(default)]
    pub close_means: CloseMeans,
    /// Whether reopening the issue asks the domain to reopen the incident.
    #[serde(default = "yes")]
    pub reopen: bool,
    /// Whether comments are passed on as notes (`AnnotateIncidentRequested`).
    #[serde(default = "yes")]
    pub comments: bool,
    /// Logins whose actions are this sink's own (the token's user when it is a personal
    /// access token: a GitHub App's are told by `sender.type: Bot`).
    #[serde(default)]
    pub ignore_senders: Vec<String>,
    /// Largest body accepted.
    #[serde(default = "webhook_body")]
    pub max_body_bytes: usize,
    /// Whole-request deadline (GitHub waits 10 s and never retries by itself).
    #[serde(default = "webhook_timeout", with = "humantime_serde")]
    pub request_timeout: std::time::Duration,
}

fn yes() -> bool {
    true
}

fn webhook_body() -> usize {
    1024 * 1024
}

fn webhook_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(8)
}

fn default_github_rate() -> u32 {
    80
}

fn default_github_url() -> String {
    "https://api.github.com".to_owned()
}
fn default_resolved_label() -> String {
    "resolved".to_owned()
}

/// Templates over the incident: `{incident_id}`, `{title}`, `{description}`,
/// `{severity}`, `{service}`, `{environment}`, `{team}`, `{runbook_url}`, `{url}`,
/// `{labels}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Templates {
    /// Ticket title (Jira cuts summaries at 255 characters; so does the sink).
    pub title: String,
    /// Ticket body.
    pub body: String,
}

impl Default for Templates {
    fn default() -> Self {
        Self {
            title: "[{severity}] {title}".to_owned(),
            body: "{description}\n\nIncident: {incident_id}\nService: {service}\nEnvironment: {environment}\n\
                   Team: {team}\nRunbook: {runbook_url}\nLink: {url}"
                .to_owned(),
        }
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
    /// Jira project key for this route.
    #[serde(default)]
    pub project_key: Option<String>,
    /// GitHub `owner/name` for this route.
    #[serde(default)]
    pub repo: Option<String>,
    /// Jira issue type for this route (default: `jira.issue_type`).
    #[serde(default)]
    pub issue_type: Option<String>,
    /// Jira components for this route (instead of `jira.components`).
    #[serde(default)]
    pub components: Vec<String>,
    /// Jira assignee for this route (instead of `jira.assignee`).
    #[serde(default)]
    pub assignee: Option<String>,
    /// Labels added for this route (Jira or GitHub; templates).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Jira fields for this route, over `jira.fields`.
    #[serde(default)]
    pub fields: BTreeMap<String, crate::fields::CustomField>,
    /// Fields kept in sync for this route, besides the provider's `sync`.
    #[serde(default)]
    pub sync: Vec<String>,
    /// GitHub assignees (logins) for this route, besides `github.assignees`.
    #[serde(default)]
    pub assignees: Vec<String>,
    /// GitHub milestone number for this route (instead of `github.milestone`).
    #[serde(default)]
    pub milestone: Option<u64>,
}

/// `text` as written when it is no template (`a{{b` is `a{b`): a label the sink finds its
/// tickets by, or sends as it is.
fn literal(text: &str) -> Option<String> {
    Template::parse(text).ok().and_then(|t| t.literal())
}

impl Route {
    /// The fields this route configures.
    pub fn fields_config(&self) -> crate::fields::FieldsConfig {
        crate::fields::FieldsConfig {
            issue_type: self.issue_type.clone(),
            components: self.components.clone(),
            assignee: self.assignee.clone(),
            labels: self.labels.clone(),
            fields: self.fields.clone(),
            sync: self.sync.clone(),
            assignees: self.assignees.clone(),
            milestone: self.milestone,
        }
    }
}

impl Jira {
    /// The fields every Jira ticket gets unless its route says otherwise; the templated
    /// labels among `labels` (the static ones are the client's).
    pub fn fields_config(&self) -> crate::fields::FieldsConfig {
        crate::fields::FieldsConfig {
            issue_type: None,
            components: self.components.clone(),
            assignee: self.assignee.clone(),
            labels: self.labels.iter().filter(|l| literal(l).is_none()).cloned().collect(),
            fields: self.fields.clone(),
            sync: self.sync.clone(),
            ..Default::default()
        }
    }

    /// The labels that are not templates: on every ticket as written.
    pub fn static_labels(&self) -> Vec<String> {
        self.labels.iter().filter_map(|l| literal(l)).collect()
    }
}

impl Github {
    /// The fields every GitHub issue gets.
    pub fn fields_config(&self) -> crate::fields::FieldsConfig {
        crate::fields::FieldsConfig {
            labels: self.labels.iter().filter(|l| literal(l).is_none()).cloned().collect(),
            assignees: self.assignees.clone(),
            milestone: self.milestone,
            ..Default::default()
        }
    }

    /// The labels that are not templates.
    pub fn static_labels(&self) -> Vec<String> {
        self.labels.iter().filter_map(|l| literal(l)).collect()
    }
}

fn valid_repo(repo: &str) -> bool {
    repo.split('/').count() == 2 && repo.split('/').all(|p| !p.is_empty())
}

/// The configuration start consumes: the file, with its templates compiled.
#[derive(Debug, Clone)]
pub struct Valid {
    /// The file as parsed.
    pub config: Config,
    /// `templates.title`, compiled.
    pub title: Template,
    /// `templates.body`, compiled.
    pub body: Template,
    /// Each provider's fields (`jira.*`, `github.*`), compiled.
    pub defaults: BTreeMap<Provider, crate::fields::Compiled>,
    /// Each route's fields over its provider's, compiled, in `routes` order.
    pub routes: Vec<crate::fields::Compiled>,
}

impl Valid {
    /// The fields of a ticket of `provider` on `route` (`default` or `routes[n]`, as the
    /// ticket's target names it): the route's, else the provider's defaults.
    pub fn fields(&self, provider: Provider, route: &str) -> crate::fields::Compiled {
        sre_sink::routing::route_index(route)
            .and_then(|n| self.routes.get(n))
            .or_else(|| self.defaults.get(&provider))
            .cloned()
            .unwrap_or_default()
    }

    /// [`Self::fields`] for a ticket made earlier, on `project`: when the routes changed
    /// since (the route at that place now sends elsewhere, or is gone), nothing is kept
    /// in sync rather than another route's fields.
    pub fn fields_of_ticket(&self, provider: Provider, route: &str, project: &str) -> crate::fields::Compiled {
        let i = &self.config.ticketing_integration;
        let index = sre_sink::routing::route_index(route);
        let same = match index {
            Some(n) => i.routes.get(n).is_some_and(|r| {
                let to = r.provider.unwrap_or(i.default_provider);
                let there = match to {
                    Provider::Jira => r.project_key.clone().or_else(|| i.jira.as_ref().map(|j| j.project_key.clone())),
                    Provider::Github => r.repo.clone().or_else(|| i.github.as_ref().map(|g| g.repo.clone())),
                };
                to == provider && there.as_deref() == Some(project)
            }),
            None => true,
        };
        if same { self.fields(provider, route) } else { crate::fields::Compiled::default() }
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
        let i = &self.ticketing_integration;
        if !i.enabled {
            return Vec::new();
        }
        let mut wanted = Vec::new();
        if let Some(j) = &i.jira {
            wanted.push(("ticketing_integration.jira.secret_ref".to_owned(), &j.secret_ref, "token"));
            if j.deployment() == Deployment::Cloud {
                wanted.push(("ticketing_integration.jira.secret_ref".to_owned(), &j.secret_ref, "email"));
            }
            wanted.extend(receiver_secret_refs("ticketing_integration.jira.webhook", j.webhook.as_ref()));
        }
        if let Some(g) = &i.github {
            wanted.push(("ticketing_integration.github.secret_ref".to_owned(), &g.secret_ref, "token"));
            wanted.extend(receiver_secret_refs("ticketing_integration.github.webhook", g.webhook.as_ref()));
        }
        secret_notices(secrets, &wanted)
    }

    fn validate(&self) -> Result<Valid, ConfigError> {
        let i = &self.ticketing_integration;
        let template = |key: &str, text: &str| {
            Template::parse(text)
                .map_err(|reason| ConfigError::new(format!("ticketing_integration.templates.{key}"), reason))
        };
        let fields_error = |(key, reason): (String, String)| ConfigError::new(key, reason);
        let jira_deployment = i.jira.as_ref().map_or(Deployment::Cloud, Jira::deployment);
        let mut defaults = BTreeMap::new();
        if let Some(j) = &i.jira {
            let c = crate::fields::compile(&j.fields_config(), "ticketing_integration.jira", jira_deployment)
                .map_err(fields_error)?;
            defaults.insert(Provider::Jira, c);
        }
        if let Some(g) = &i.github {
            let c = crate::fields::compile(&g.fields_config(), "ticketing_integration.github", Deployment::Cloud)
                .map_err(fields_error)?;
            defaults.insert(Provider::Github, c);
        }
        let mut routes = Vec::new();
        for (n, r) in i.routes.iter().enumerate() {
            let provider = r.provider.unwrap_or(i.default_provider);
            let at = format!("ticketing_integration.routes[{n}]");
            let inherited = match provider {
                Provider::Jira => i.jira.as_ref().map(|j| j.fields.clone()).unwrap_or_default(),
                Provider::Github => BTreeMap::new(),
            };
            let route = crate::fields::compile_over(&r.fields_config(), &at, jira_deployment, &inherited)
                .map_err(fields_error)?;
            let jira_only = r.issue_type.is_some()
                || !r.components.is_empty()
                || r.assignee.is_some()
                || !r.fields.is_empty()
                || !r.sync.is_empty();
            if provider == Provider::Github && jira_only {
                return Err(ConfigError::new(
                    at,
                    "issue_type, components, assignee, fields and sync are Jira's; a github route sets labels, assignees and a \
                     milestone",
                ));
            }
            if provider == Provider::Jira && (!r.assignees.is_empty() || r.milestone.is_some()) {
                return Err(ConfigError::new(
                    at,
                    "assignees and milestone are GitHub's; a jira route sets an assignee",
                ));
            }
            routes.push(crate::fields::over(&defaults.get(&provider).cloned().unwrap_or_default(), &route));
        }
        let valid = Valid {
            config: self.clone(),
            title: template("title", &i.templates.title)?,
            body: template("body", &i.templates.body)?,
            defaults,
            routes,
        };
        check_settings("ticketing_integration.jira.webhook", i.jira.as_ref().and_then(|j| j.webhook.as_ref()))?;
        check_settings("ticketing_integration.github.webhook", i.github.as_ref().and_then(|g| g.webhook.as_ref()))?;
        if let Some(g) = &i.github {
            if !valid_repo(&g.repo) {
                return Err(ConfigError::new("ticketing_integration.github.repo", "expected `owner/name`"));
            }
            if g.static_labels().is_empty() {
                return Err(ConfigError::new(
                    "ticketing_integration.github.labels",
                    "list at least one label that is not a template (the sink finds its issues by it)",
                ));
            }
        }
        if let Some(j) = &i.jira {
            if j.project_key.is_empty() {
                return Err(ConfigError::new("ticketing_integration.jira.project_key", "must not be empty"));
            }
            if let Some(bad) = j.labels.iter().find(|l| l.contains(char::is_whitespace) || l.is_empty()) {
                return Err(ConfigError::new(
                    "ticketing_integration.jira.labels",
                    format!("`{bad}`: Jira labels cannot be empty or contain spaces"),
                ));
            }
            if let Some(bad) = j.priorities.keys().find(|k| {
                <sre_contracts::domain::v1::Severity as sre_contracts::SeverityExt>::from_config_name(k).is_err()
            }) {
                return Err(ConfigError::new(
                    format!("ticketing_integration.jira.priorities.{bad}"),
                    "not a severity (critical, high, medium, low, info)",
                ));
            }
        }
        for (key, url) in [
            ("ticketing_integration.jira.base_url", i.jira.as_ref().map(|j| j.base_url.as_str())),
            ("ticketing_integration.github.base_url", i.github.as_ref().map(|g| g.base_url.as_str())),
        ] {
            if let Some(url) = url
                && !url.starts_with("https://")
                && !url.starts_with("http://")
            {
                return Err(ConfigError::new(key, "must start with https:// or http://"));
            }
        }
        i.reconcile.check("ticketing_integration.reconcile")?;
        if !i.enabled {
            return Ok(valid);
        }
        let configured = |p: Provider| match p {
            Provider::Jira => i.jira.is_some(),
            Provider::Github => i.github.is_some(),
        };
        if !configured(i.default_provider) {
            let name = i.default_provider.name();
            return Err(ConfigError::new(
                format!("ticketing_integration.{name}"),
                format!("required when default_provider is {name}"),
            ));
        }
        for (n, r) in i.routes.iter().enumerate() {
            let provider = r.provider.unwrap_or(i.default_provider);
            let at = |field: &str| format!("ticketing_integration.routes[{n}].{field}");
            if !configured(provider) {
                return Err(ConfigError::new(at("provider"), format!("{provider:?} is not configured")));
            }
            match provider {
                Provider::Jira if r.repo.is_some() => {
                    return Err(ConfigError::new(at("repo"), "is for github routes; jira routes name a project_key"));
                }
                Provider::Github if r.project_key.is_some() => {
                    return Err(ConfigError::new(at("project_key"), "is for jira routes; github routes name a repo"));
                }
                Provider::Github if r.repo.as_deref().is_some_and(|repo| !valid_repo(repo)) => {
                    return Err(ConfigError::new(at("repo"), "expected `owner/name`"));
                }
                _ => {}
            }
        }
        Ok(valid)
    }
}

sre_sink::receiver_settings!(JiraWebhook, GithubWebhook);

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(routes: &str) -> Valid {
        let yaml = format!(
            "ticketing_integration:\n  default_provider: jira\n  jira:\n    base_url: https://x.atlassian.net\n    \
             project_key: OPS\n    secret_ref: p/jira\n    fields:\n      customfield_1: {{type: select, value: \"{{severity}}\"}}\n  \
             routes:\n{routes}"
        );
        let config: Config = serde_norway::from_str(&yaml).expect("yaml");
        config.validate().expect("valid")
    }

    #[test]
    fn a_ticket_made_on_a_route_that_has_since_moved_keeps_nothing_in_sync() {
        let v = valid("    - match: {service: pay}\n      project_key: PAY\n      sync: [customfield_1]\n");
        assert!(v.fields_of_ticket(Provider::Jira, "routes[0]", "PAY").syncs(), "the route a ticket was made on");
        // The route at that place sends elsewhere now, or is gone: not another route's fields.
        assert!(!v.fields_of_ticket(Provider::Jira, "routes[0]", "OPS").syncs());
        assert!(!v.fields_of_ticket(Provider::Jira, "routes[3]", "PAY").syncs());
        assert!(!v.fields_of_ticket(Provider::Github, "routes[0]", "PAY").syncs());
        // A route's sync may name a field its provider's section sets.
        assert_eq!(v.routes.len(), 1);
    }

    #[test]
    fn what_a_github_route_cannot_do_is_refused_and_escaped_braces_are_plain_labels() {
        let yaml = |route: &str, labels: &str| {
            format!(
                "ticketing_integration:\n  default_provider: github\n  github:\n    repo: acme/incidents\n    \
                 secret_ref: p/gh\n    labels: {labels}\n  routes:\n    - match: {{service: x}}\n{route}"
            )
        };
        let check = |text: String| serde_norway::from_str::<Config>(&text).expect("yaml").validate();
        let e = check(yaml("      sync: [labels]\n", "[sre-incident]")).expect_err("sync on github");
        assert_eq!(e.path, "ticketing_integration.routes[0]");
        // `sre{{x}}` is the plain label `sre{x}`: the one the sink finds its issues by.
        let v = check(yaml("      labels: [a]\n", "[\"sre{{x}}\", \"team-{label.team}\"]")).expect("valid");
        let g = v.config.ticketing_integration.github.as_ref().expect("github");
        assert_eq!(g.static_labels(), ["sre{x}"]);
        let e = check(yaml("      labels: [a]\n", "[\"team-{label.team}\"]")).expect_err("no plain label");
        assert_eq!(e.path, "ticketing_integration.github.labels");
    }
}
