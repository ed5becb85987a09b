//! ticketing-sink: consumes `IncidentCreated`, `IncidentResolved` and `IncidentClosed` and
//! keeps exactly one ticket per incident in Jira (Cloud or Data Center) or GitHub Issues.
//!
//! Consumes facts. Publishes to the domain only intents of what people do in GitHub and
//! Jira (`receiver`, two-way sync, off by default). Knows nothing about paging.

pub mod config;
pub mod metrics;
pub mod provider;
pub mod receiver;
pub mod routing;
pub mod sink;
pub mod state;
pub mod template;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sre_bus::FactConsumer;
use sre_contracts::BusMessage;
use sre_contracts::domain::v1::{IncidentAcknowledged, IncidentClosed, IncidentCreated, IncidentResolved};
use sre_runtime::ServiceContext;
use sre_runtime::axum::Router;
use sre_runtime::outbound::HttpClient;

pub use config::Config;
use config::Provider;

/// The service's name, version and default port.
pub const SPEC: sre_runtime::ServiceSpec =
    sre_runtime::ServiceSpec { name: "ticketing-sink", version: env!("CARGO_PKG_VERSION"), default_http_port: 8082 };

/// How long incident-to-ticket records are kept.
const RECORD_MAX_AGE: Duration = Duration::from_secs(90 * 24 * 3600);
/// How often credentials are checked again for readiness.
const CREDENTIALS_EVERY: Duration = Duration::from_secs(300);

/// The durable consumer on the facts stream: the configured one, filtered to the facts this
/// sink acts on (`deploy/nats/jetstream/consumers/` holds it as JSON, checked by a test).
/// A `consumer:` section without `durable_name` keeps the sink's own name.
pub fn consumer_config(integration: &config::Integration) -> sre_bus::ConsumerConfig {
    let mut consumer = integration.consumer.clone();
    if consumer.durable_name.trim().is_empty() {
        SPEC.name.clone_into(&mut consumer.durable_name);
    }
    consumer.filter_subjects = vec![
        IncidentCreated::SUBJECT.to_owned(),
        IncidentAcknowledged::SUBJECT.to_owned(),
        IncidentResolved::SUBJECT.to_owned(),
        IncidentClosed::SUBJECT.to_owned(),
    ];
    consumer
}

/// Starts the service: the fact consumer and the credentials check. Returns no routes
/// beyond health and metrics.
pub async fn start(ctx: ServiceContext<Config>) -> anyhow::Result<Router> {
    let integration = ctx.config.ticketing_integration.clone();
    if !integration.enabled {
        tracing::info!("ticketing_integration.enabled is false: serving health only");
        return Ok(Router::new());
    }
    template::check(&integration.templates.title)
        .map_err(|e| anyhow::anyhow!("ticketing_integration.templates.title: {e}"))?;
    template::check(&integration.templates.body)
        .map_err(|e| anyhow::anyhow!("ticketing_integration.templates.body: {e}"))?;
    let http = HttpClient::new(Duration::from_secs(15), None)?;
    let mut trackers: BTreeMap<Provider, Arc<dyn provider::Tracker>> = BTreeMap::new();
    if let Some(j) = &integration.jira {
        let token = ctx.secrets.resolve(&j.secret_ref, "token")?;
        let email = ctx.secrets.resolve(&j.secret_ref, "email").ok();
        let email = email.as_ref().map(|e| secrecy::ExposeSecret::expose_secret(e).to_owned());
        let settings = provider::jira::JiraSettings {
            deployment: j.deployment(),
            issue_type: j.issue_type.clone(),
            resolve: j.resolve_transition.clone(),
            close: j.close_transition.clone(),
            priorities: j.priorities.clone(),
            labels: j.labels.clone(),
        };
        if settings.deployment == config::Deployment::Cloud && email.is_none() {
            anyhow::bail!(
                "ticketing_integration.jira.secret_ref: Jira Cloud needs `email` beside `token` in the secret"
            );
        }
        trackers.insert(
            Provider::Jira,
            Arc::new(provider::jira::Jira::new(http.clone(), &j.base_url, email.as_deref(), &token, settings)),
        );
    }
    if let Some(g) = &integration.github {
        let token = ctx.secrets.resolve(&g.secret_ref, "token")?;
        trackers.insert(
            Provider::Github,
            Arc::new(provider::github::Github::new(
                http.clone(),
                &g.base_url,
                token,
                &g.repo,
                g.labels.clone(),
                g.resolved_label.clone(),
            )),
        );
    }
    if integration.dry_run {
        tracing::warn!("dry_run is on: tickets are logged, not sent");
    }
    let metrics = metrics::TicketMetrics::default();
    ctx.metrics.register(|r| metrics.register(r));
    metrics.prime(trackers.keys().copied());
    // The GitHub webhook (two-way sync), served once the ticket records are open.
    let tickets_cell: Arc<std::sync::OnceLock<state::Tickets>> = Arc::default();
    // The accounts the credentials act as: learnt by the credentials check, read by the Jira
    // receiver (its changes are this sink's own).
    let own_accounts = receiver::OwnAccounts::default();
    let mut router = Router::new();
    if let Some(hook) = integration.github.as_ref().and_then(|g| g.webhook.as_ref()).filter(|w| w.enabled) {
        let secrets = sre_runtime::inbound::receiver_secrets(
            &ctx.secrets,
            &hook.secret_refs,
            "ticketing_integration.github.webhook",
        )?;
        let path = hook.path.clone().unwrap_or_else(|| "/webhooks/github".to_owned());
        let limits = sre_runtime::inbound::Limits::receiver(hook.max_body_bytes, hook.request_timeout);
        let receiver = receiver::GithubReceiver {
            secrets,
            settings: hook.clone(),
            tickets: tickets_cell.clone(),
            source: ctx.bus.source().clone(),
            metrics: metrics.clone(),
        };
        metrics.receivers.prime(Provider::Github.name());
        tracing::info!(%path, "GitHub webhook receiver on");
        router = router.merge(sre_runtime::inbound::router(&path, receiver, ctx.bus.intent_publisher(), limits));
    }
    if let Some((jira, hook)) =
        integration.jira.as_ref().and_then(|j| j.webhook.as_ref().map(|w| (j, w))).filter(|(_, w)| w.enabled)
    {
        let secrets = sre_runtime::inbound::receiver_secrets(
            &ctx.secrets,
            &hook.secret_refs,
            "ticketing_integration.jira.webhook",
        )?;
        let path = hook.path.clone().unwrap_or_else(|| "/webhooks/jira".to_owned());
        let limits = sre_runtime::inbound::Limits::receiver(hook.max_body_bytes, hook.request_timeout);
        let receiver = receiver::JiraReceiver {
            secrets,
            settings: hook.clone(),
            base_url: jira.base_url.clone(),
            tickets: tickets_cell.clone(),
            source: ctx.bus.source().clone(),
            metrics: metrics.clone(),
            own_accounts: own_accounts.clone(),
        };
        metrics.receivers.prime(Provider::Jira.name());
        tracing::info!(%path, "Jira webhook receiver on");
        router = router.merge(sre_runtime::inbound::router(&path, receiver, ctx.bus.intent_publisher(), limits));
    }
    tracing::info!(default_provider = ?integration.default_provider, routes = integration.routes.len(), "configuration loaded");

    let (bus, cancel, tasks, health) = (ctx.bus.clone(), ctx.shutdown.clone(), ctx.tasks.clone(), ctx.health.clone());
    // Readiness tells the truth about the bus resources the sink works through: its KV
    // bucket and its durable consumer, failing for more than a few seconds (no leader, a
    // node away) or not open yet.
    let watch = sre_runtime::SinkWatch::register(&ctx.health, &ctx.metrics, state::BUCKET);
    ctx.tasks.spawn(async move {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = bus.wait_for_topology() => {}
        }
        let Some(tickets) = sre_runtime::until_ok("ticket records", &cancel, || {
            state::Tickets::open(&bus, RECORD_MAX_AGE, watch.kv.clone())
        })
        .await
        else {
            return;
        };
        tasks.spawn({
            let (tickets, stop) = (tickets.clone(), cancel.clone());
            async move { tickets.probe(sre_runtime::SinkWatch::KV_PROBE_EVERY, stop).await }
        });
        let _ = tickets_cell.set(tickets.clone());
        let consumer_config = consumer_config(&integration);
        let dry_run = integration.dry_run;
        let sink = Arc::new(sink::Sink::new(integration, tickets, trackers, metrics, own_accounts));
        tasks.spawn({
            let (s, stop) = (sink.clone(), cancel.clone());
            watch.breakers.clone().watch(sre_runtime::SinkWatch::BREAKERS_EVERY, stop, move || s.breaker_states())
        });
        for provider in sink.providers() {
            let s = sink.clone();
            health.register(provider.name(), Arc::new(move || s.provider_ready(provider)));
        }
        if !dry_run {
            let (s, stop) = (sink.clone(), cancel.clone());
            tasks.spawn(async move {
                loop {
                    s.check_credentials().await;
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(CREDENTIALS_EVERY) => {}
                    }
                }
            });
        }
        let Some(consumer) =
            sre_runtime::until_ok("fact consumer", &cancel, || FactConsumer::bind(&bus, consumer_config.clone())).await
        else {
            return;
        };
        watch.consumer.set(consumer.reachability());
        tracing::info!("consuming incident facts");
        if let Err(e) = consumer.run(sink::Handler(sink), cancel).await {
            tracing::error!(error = %e, "fact consumer stopped");
        }
    });
    Ok(router)
}
