//! The wiring: the sink's vendors, receivers and records, then `SinkStart` deals it its
//! facts. What it is made of is listed in `lib.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use sre_runtime::ServiceContext;
use sre_runtime::axum::Router;
use sre_sink::{Job, RecordsCell, SinkStart, Started, Vendors};

use crate::config::{self, Valid};
use crate::provider::Provider;
use crate::{consumer_config, metrics, provider, receiver, sink, state};

/// How often credentials are checked again for readiness.
const CREDENTIALS_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Starts the sink: its trackers, receivers, records and consumer.
pub async fn start(ctx: ServiceContext<Valid>) -> anyhow::Result<Router> {
    let valid = ctx.config.clone();
    let integration = &valid.config.ticketing_integration;
    if !integration.enabled {
        tracing::info!("ticketing_integration.enabled is false: serving health only");
        return Ok(Router::new());
    }
    if integration.dry_run {
        tracing::warn!("dry_run is on: tickets are logged, not sent");
    }
    let trackers = trackers(integration, &ctx.secrets)?;
    // GitHub asks for one request at a time per token (its secondary limits).
    let vendors = Vendors::new(trackers.keys().map(|p| (*p, requests_per_minute(integration, *p))))
        .one_at_a_time(Provider::Github);
    let metrics = metrics::TicketMetrics::default();
    ctx.metrics.register(|r| metrics.register(r));
    metrics.prime(trackers.keys().copied());
    let mut sink = SinkStart::new(&ctx, vendors);
    let tickets = RecordsCell::default();
    // The accounts the credentials act as: learnt by the credentials check, read by the
    // Jira receiver (its changes are this sink's own).
    let own_accounts = receiver::OwnAccounts::default();
    let receivers = sink.receiver_metrics();
    let github_hook = integration.github.as_ref().and_then(|g| g.webhook.as_ref());
    sink.mount(Provider::Github, "ticketing_integration.github.webhook", github_hook, |secrets, hook| {
        receiver::GithubReceiver {
            secrets,
            settings: hook.clone(),
            tickets: tickets.clone(),
            source: ctx.bus.source().clone(),
            metrics: receivers.clone(),
        }
    })?;
    if let Some(jira) = &integration.jira {
        sink.mount(Provider::Jira, "ticketing_integration.jira.webhook", jira.webhook.as_ref(), |secrets, hook| {
            receiver::JiraReceiver {
                secrets,
                settings: hook.clone(),
                base_url: jira.base_url.clone(),
                tickets: tickets.clone(),
                source: ctx.bus.source().clone(),
                metrics: receivers.clone(),
                own_accounts: own_accounts.clone(),
            }
        })?;
    }
    tracing::info!(default_provider = ?integration.default_provider, routes = integration.routes.len(), "configuration loaded");
    let (vendors, dry_run) = (sink.vendors(), integration.dry_run);
    let reconcile = integration.reconcile.clone();
    let reconciled = sre_sink::reconcile::ReconcileMetrics::default();
    let names: Vec<&'static str> = trackers.keys().map(|p| p.name()).collect();
    ctx.metrics.register(|r| reconciled.register(r, "ticketing_sink", &names));
    let (intents, source) = (ctx.bus.intent_publisher(), ctx.bus.source().clone());
    Ok(sink.spawn(state::BUCKET, consumer_config(integration), tickets, move |tickets| {
        let sink = Arc::new(sink::Sink::new(valid, tickets, trackers, vendors, metrics, own_accounts));
        let check = sink.clone();
        let mut jobs = Vec::new();
        if !dry_run {
            jobs.push(
                Job::every("credentials check", CREDENTIALS_EVERY, move || {
                    let check = check.clone();
                    async move { check.check_credentials().await }
                })
                .at_start(),
            );
        }
        if reconcile.enabled && !dry_run {
            // GitHub lists the issues updated since the last pass began (with an overlap:
            // never a single watermark), or since a day before the first; down to the hour,
            // so the query stays the same across passes and an unchanged list is a 304.
            let last_start: Arc<std::sync::Mutex<Option<jiff::Timestamp>>> = Arc::default();
            let pass = sink.clone();
            jobs.push(sre_sink::reconcile::job(reconcile.interval, reconciled.clone(), move || {
                let (pass, intents, source, metrics) =
                    (pass.clone(), intents.clone(), source.clone(), reconciled.clone());
                let last_start = last_start.clone();
                async move {
                    let now = jiff::Timestamp::now();
                    let previous = *last_start.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let since = previous.map_or(now - jiff::SignedDuration::from_hours(24), |t| {
                        t - jiff::SignedDuration::from_mins(10)
                    });
                    let since = jiff::Timestamp::from_second(since.as_second() - since.as_second().rem_euclid(3600))
                        .unwrap_or(since);
                    let done = pass.reconcile(&intents, &source, &metrics, since).await;
                    if done.is_ok() {
                        *last_start.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(now);
                    }
                    done
                }
            }));
        }
        Started { sink, jobs }
    }))
}

/// `--check-config --online`: the credentials, and every Jira target's create screen (see
/// [`crate::screens`]), checked against the vendors with the configured secrets.
pub fn online_check<'a>(valid: &'a Valid, secrets: &'a sre_runtime::SecretStore) -> sre_runtime::OnlineCheck<'a> {
    Box::pin(async move {
        let integration = &valid.config.ticketing_integration;
        if !integration.enabled {
            return Ok(Vec::new());
        }
        let trackers = trackers(integration, secrets)?;
        let mut problems = Vec::new();
        for (provider, configured) in &trackers {
            match configured.tracker.check().await {
                Ok(_) => {}
                // Refused credentials are the configuration's problem; an unreachable
                // vendor is not (the check could not be made: exit 1, not 2).
                Err(e) if sre_resilience::Retryable::class(&e) == sre_resilience::ErrorClass::Auth => {
                    problems.push(format!("ticketing_integration.{}: {e}", provider.name()));
                }
                Err(e) => anyhow::bail!("ticketing_integration.{}: {e}", provider.name()),
            }
        }
        if problems.is_empty() {
            for (provider, configured) in &trackers {
                problems.extend(crate::screens::problems(valid, *provider, configured.tracker.as_ref()).await?);
            }
        }
        Ok(problems)
    })
}

/// The trackers the configuration names, with the credentials they act with: every secret
/// must resolve now (a missing key fails the start, not the first incident), and Jira Cloud
/// needs `email` beside `token`.
fn trackers(
    integration: &config::Integration,
    secrets: &sre_runtime::SecretStore,
) -> anyhow::Result<BTreeMap<Provider, provider::Configured>> {
    use std::sync::Arc;
    let http = sre_runtime::outbound::HttpClient::new(std::time::Duration::from_secs(15), None)?;
    let mut trackers = BTreeMap::new();
    if let Some(j) = &integration.jira {
        let token = secrets.resolve(&j.secret_ref, "token")?;
        let email = secrets.resolve(&j.secret_ref, "email").ok();
        let email = email.as_ref().map(|e| secrecy::ExposeSecret::expose_secret(e).to_owned());
        let settings = provider::jira::JiraSettings {
            deployment: j.deployment(),
            issue_type: j.issue_type.clone(),
            resolve: j.resolve_transition.clone(),
            close: j.close_transition.clone(),
            reopen: j.reopen_transition.clone(),
            priorities: j.priorities.clone(),
            labels: j.static_labels(),
        };
        if settings.deployment == provider::jira::Deployment::Cloud && email.is_none() {
            anyhow::bail!(
                "ticketing_integration.jira.secret_ref: Jira Cloud needs `email` beside `token` in the secret"
            );
        }
        let tracker = provider::jira::Jira::new(http.clone(), &j.base_url, email.as_deref(), &token, settings);
        let credential = j.secret_ref.as_str().to_owned();
        trackers.insert(Provider::Jira, provider::Configured { tracker: Arc::new(tracker), credential });
    }
    if let Some(g) = &integration.github {
        let token = secrets.resolve(&g.secret_ref, "token")?;
        let tracker = provider::github::Github::new(
            http,
            &g.base_url,
            token,
            &g.repo,
            g.static_labels(),
            g.resolved_label.clone(),
        );
        let credential = g.secret_ref.as_str().to_owned();
        trackers.insert(Provider::Github, provider::Configured { tracker: Arc::new(tracker), credential });
    }
    Ok(trackers)
}

/// Requests per minute `provider`'s credential may send.
fn requests_per_minute(integration: &config::Integration, provider: Provider) -> u32 {
    match provider {
        Provider::Jira => integration.jira.as_ref().map_or(300, |j| j.requests_per_minute),
        Provider::Github => integration.github.as_ref().map_or(80, |g| g.requests_per_minute),
    }
}
