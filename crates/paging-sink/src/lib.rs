//! paging-sink: consumes `IncidentCreated` (critical and high), `IncidentAcknowledged` and
//! `IncidentResolved`, and pages through PagerDuty or Opsgenie: critical at once, high in
//! business hours, once per incident.
//!
//! Consumes facts. Publishes to the domain only intents of what people do in PagerDuty and
//! Opsgenie (`receiver`, two-way sync, off by default). Knows nothing about tickets.

pub mod config;
pub mod metrics;
pub mod provider;
pub mod receiver;
pub mod routing;
pub mod schedule;
pub mod sink;
pub mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sre_bus::FactConsumer;
use sre_contracts::BusMessage;
use sre_contracts::domain::v1::{IncidentAcknowledged, IncidentCreated, IncidentResolved};
use sre_runtime::ServiceContext;
use sre_runtime::axum::Router;
use sre_runtime::outbound::HttpClient;

pub use config::Config;
use config::Provider;

/// The service's name, version and default port.
pub const SPEC: sre_runtime::ServiceSpec =
    sre_runtime::ServiceSpec { name: "paging-sink", version: env!("CARGO_PKG_VERSION"), default_http_port: 8083 };

/// How long page records are kept (follow-ups come long before).
const RECORD_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

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
    ];
    consumer
}

/// Starts the service: the fact consumer and the deferred-page scanner. Returns no routes
/// beyond health and metrics.
pub async fn start(ctx: ServiceContext<Config>) -> anyhow::Result<Router> {
    let integration = ctx.config.paging_integration.clone();
    if !integration.enabled {
        tracing::info!("paging_integration.enabled is false: serving health only");
        return Ok(Router::new());
    }
    let hours = integration.escalation.business_hours.resolve().map_err(|e| anyhow::anyhow!("{e}"))?;
    let policy =
        schedule::Policy { critical: integration.escalation.critical, high: integration.escalation.high, hours };
    // Every referenced secret must resolve now: a missing key is a start failure, not a
    // page lost at 3 a.m.
    let mut refs: Vec<sre_runtime::SecretRef> = Vec::new();
    if let Some(pd) = &integration.pagerduty {
        refs.push(pd.routing_key_ref.clone());
    }
    refs.extend(integration.routes.iter().filter_map(|r| r.routing_key_ref.clone()));
    for r in &refs {
        ctx.secrets.resolve(r, "routing_key")?;
    }
    let http = HttpClient::new(Duration::from_secs(10), None)?;
    let mut pagers: BTreeMap<Provider, Arc<dyn provider::Pager>> = BTreeMap::new();
    if let Some(pd) = &integration.pagerduty {
        pagers.insert(Provider::Pagerduty, Arc::new(provider::pagerduty::PagerDuty::new(http.clone(), &pd.base_url)));
    }
    if let Some(og) = &integration.opsgenie {
        let key = ctx.secrets.resolve(&og.api_key_ref, "api_key")?;
        pagers.insert(Provider::Opsgenie, Arc::new(provider::opsgenie::Opsgenie::new(http.clone(), &og.url(), key)));
    }
    if let Some(jsm) = &integration.jsm {
        let key = ctx.secrets.resolve(&jsm.api_key_ref, "api_key")?;
        pagers.insert(Provider::Jsm, Arc::new(provider::opsgenie::Opsgenie::jsm(http.clone(), &jsm.base_url, key)));
    }
    if integration.dry_run {
        tracing::warn!("dry_run is on: pages are logged, not sent");
    }
    let metrics = metrics::PagingMetrics::default();
    ctx.metrics.register(|r| metrics.register(r));
    metrics.prime(pagers.keys().copied());
    // The PagerDuty webhook (two-way sync), served once the page records are open.
    let pages_cell: Arc<std::sync::OnceLock<state::Pages>> = Arc::default();
    let mut router = Router::new();
    if let Some(hook) = integration.pagerduty.as_ref().and_then(|pd| pd.webhook.as_ref()).filter(|w| w.enabled) {
        let secrets = sre_runtime::inbound::receiver_secrets(
            &ctx.secrets,
            &hook.secret_refs,
            "paging_integration.pagerduty.webhook",
        )?;
        let path = hook.path.clone().unwrap_or_else(|| "/webhooks/pagerduty".to_owned());
        let limits = sre_runtime::inbound::Limits::receiver(hook.max_body_bytes, hook.request_timeout);
        let receiver = receiver::PagerDutyReceiver {
            secrets,
            pages: pages_cell.clone(),
            source: ctx.bus.source().clone(),
            metrics: metrics.clone(),
        };
        metrics.receivers.prime(Provider::Pagerduty.name());
        tracing::info!(%path, secrets = hook.secret_refs.len(), "PagerDuty webhook receiver on");
        router = router.merge(sre_runtime::inbound::router(&path, receiver, ctx.bus.intent_publisher(), limits));
    }
    for (provider, hook) in [
        (Provider::Opsgenie, integration.opsgenie.as_ref().and_then(|og| og.webhook.as_ref())),
        (Provider::Jsm, integration.jsm.as_ref().and_then(|j| j.webhook.as_ref())),
    ] {
        let Some(hook) = hook.filter(|w| w.enabled) else { continue };
        let name = provider.name();
        let secrets = sre_runtime::inbound::receiver_secrets(
            &ctx.secrets,
            &hook.secret_refs,
            &format!("paging_integration.{name}.webhook"),
        )?;
        let path = hook.path.clone().unwrap_or_else(|| format!("/webhooks/{name}"));
        let limits = sre_runtime::inbound::Limits::receiver(hook.max_body_bytes, hook.request_timeout);
        let receiver = receiver::OpsgenieReceiver {
            provider,
            secrets,
            settings: hook.clone(),
            pages: pages_cell.clone(),
            source: ctx.bus.source().clone(),
            metrics: metrics.clone(),
        };
        metrics.receivers.prime(name);
        tracing::info!(%path, header = %hook.header, "{} webhook receiver on", provider.title());
        router = router.merge(sre_runtime::inbound::router(&path, receiver, ctx.bus.intent_publisher(), limits));
    }
    tracing::info!(default_provider = ?integration.default_provider, routes = integration.routes.len(), "configuration loaded");

    let (bus, cancel, tasks, secrets, health) =
        (ctx.bus.clone(), ctx.shutdown.clone(), ctx.tasks.clone(), ctx.secrets.clone(), ctx.health.clone());
    // Readiness tells the truth about the bus resources the sink works through: its KV
    // bucket and its durable consumer, failing for more than a few seconds (no leader, a
    // node away) or not open yet.
    let watch = sre_runtime::SinkWatch::register(&ctx.health, &ctx.metrics, state::BUCKET);
    ctx.tasks.spawn(async move {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = bus.wait_for_topology() => {}
        }
        let Some(pages) = sre_runtime::until_ok("page records", &cancel, || {
            state::Pages::open(&bus, RECORD_MAX_AGE, watch.kv.clone())
        })
        .await
        else {
            return;
        };
        tasks.spawn({
            let (pages, stop) = (pages.clone(), cancel.clone());
            async move { pages.probe(sre_runtime::SinkWatch::KV_PROBE_EVERY, stop).await }
        });
        let _ = pages_cell.set(pages.clone());
        let consumer_config = consumer_config(&integration);
        let sink = Arc::new(sink::Sink::new(integration, policy, pages, pagers, secrets, metrics));
        tasks.spawn({
            let (s, stop) = (sink.clone(), cancel.clone());
            watch.breakers.clone().watch(sre_runtime::SinkWatch::BREAKERS_EVERY, stop, move || s.breaker_states())
        });
        for provider in sink.pagers.keys().copied() {
            let s = sink.clone();
            health.register(provider.name(), Arc::new(move || s.provider_ready(provider)));
        }
        tasks.spawn(sink.clone().run_deferred(cancel.clone()));
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
