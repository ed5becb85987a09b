//! The wiring: the sink's vendors, receivers and records, then `SinkStart` deals it its
//! facts. What it is made of is listed in `lib.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sre_runtime::ServiceContext;
use sre_runtime::axum::Router;
use sre_runtime::outbound::HttpClient;
use sre_sink::{Job, RecordsCell, SinkStart, Started, Vendors};

use crate::config::{self, Valid};
use crate::provider::Provider;
use crate::{consumer_config, metrics, provider, receiver, sink, state};

/// Starts the sink: its pagers, receivers, records, consumer and deferred-page scan.
pub async fn start(ctx: ServiceContext<Valid>) -> anyhow::Result<Router> {
    let valid = ctx.config.clone();
    let integration = &valid.config.paging_integration;
    if !integration.enabled {
        tracing::info!("paging_integration.enabled is false: serving health only");
        return Ok(Router::new());
    }
    if integration.dry_run {
        tracing::warn!("dry_run is on: pages are logged, not sent");
    }
    let pagers = pagers(integration, &valid.pagerduty_fields, &ctx.secrets)?;
    let vendors = Vendors::new(pagers.keys().map(|p| (*p, events_per_minute(integration, *p))));
    let metrics = metrics::PagingMetrics::default();
    ctx.metrics.register(|r| metrics.register(r));
    metrics.prime(pagers.keys().copied());
    let mut sink = SinkStart::new(&ctx, vendors);
    let pages = RecordsCell::default();
    let receivers = sink.receiver_metrics();
    let pagerduty_hook = integration.pagerduty.as_ref().and_then(|pd| pd.webhook.as_ref());
    sink.mount(Provider::Pagerduty, "paging_integration.pagerduty.webhook", pagerduty_hook, |secrets, _| {
        receiver::PagerDutyReceiver {
            secrets,
            pages: pages.clone(),
            source: ctx.bus.source().clone(),
            metrics: receivers.clone(),
        }
    })?;
    for (provider, hook) in [
        (Provider::Opsgenie, integration.opsgenie.as_ref().and_then(|og| og.webhook.as_ref())),
        (Provider::Jsm, integration.jsm.as_ref().and_then(|j| j.webhook.as_ref())),
    ] {
        let key = format!("paging_integration.{}.webhook", provider.name());
        sink.mount(provider, &key, hook, |secrets, hook| receiver::OpsgenieReceiver {
            provider,
            secrets,
            settings: hook.clone(),
            pages: pages.clone(),
            source: ctx.bus.source().clone(),
            metrics: receivers.clone(),
        })?;
    }
    tracing::info!(default_provider = ?integration.default_provider, routes = integration.routes.len(), "configuration loaded");
    let (vendors, secrets, every) = (sink.vendors(), ctx.secrets.clone(), integration.deferred_check_interval);
    let (reconcile, dry_run) = (integration.reconcile.clone(), integration.dry_run);
    let reconciled = sre_sink::reconcile::ReconcileMetrics::default();
    let names: Vec<&'static str> = pagers.keys().map(|p| p.name()).collect();
    ctx.metrics.register(|r| reconciled.register(r, "paging_sink", &names));
    for (provider, pager) in &pagers {
        if let Some(why) = pager.cannot_read().filter(|_| reconcile.enabled) {
            tracing::warn!(provider = provider.name(), "{why}: a lost webhook from it is not repaired");
        }
    }
    let (intents, source) = (ctx.bus.intent_publisher(), ctx.bus.source().clone());
    Ok(sink.spawn(state::BUCKET, consumer_config(integration), pages, move |records| {
        let pages = state::Pages::new(records);
        let sink = Arc::new(sink::Sink::new(valid, pages, pagers, vendors, secrets, metrics));
        let scan = sink.clone();
        let mut jobs = vec![
            Job::every("deferred-page scan", every, move || {
                let scan = scan.clone();
                async move {
                    scan.fire_due(jiff::Timestamp::now()).await;
                }
            })
            .jittered()
            .leader_only(),
        ];
        if reconcile.enabled && !dry_run {
            let pass = sink.clone();
            jobs.push(sre_sink::reconcile::job(reconcile.interval, reconciled.clone(), move || {
                let (pass, intents, source, metrics) =
                    (pass.clone(), intents.clone(), source.clone(), reconciled.clone());
                async move { pass.reconcile(&intents, &source, &metrics).await }
            }));
        }
        Started { sink, jobs }
    }))
}

/// The pagers the configuration names. Every referenced secret must resolve now: a
/// missing key is a start failure, not a page lost at 3 a.m.
fn pagers(
    integration: &config::Integration,
    fields: &provider::pagerduty::Fields,
    secrets: &sre_runtime::SecretStore,
) -> anyhow::Result<BTreeMap<Provider, Arc<dyn provider::Pager>>> {
    let routing_keys = integration.pagerduty.iter().map(|pd| &pd.routing_key_ref);
    for r in routing_keys.chain(integration.routes.iter().filter_map(|r| r.routing_key_ref.as_ref())) {
        secrets.resolve(r, "routing_key")?;
    }
    let http = HttpClient::new(Duration::from_secs(10), None)?;
    let mut pagers: BTreeMap<Provider, Arc<dyn provider::Pager>> = BTreeMap::new();
    if let Some(pd) = &integration.pagerduty {
        let rest = match &pd.api_key_ref {
            Some(key) => Some(provider::pagerduty::Rest {
                base: pd.api_url.clone(),
                key: secrets.resolve(key, "api_key")?,
                from: pd.from.clone().unwrap_or_default(),
            }),
            None => None,
        };
        pagers.insert(
            Provider::Pagerduty,
            Arc::new(provider::pagerduty::PagerDuty::new(http.clone(), &pd.base_url, rest, fields.clone())),
        );
    }
    if let Some(og) = &integration.opsgenie {
        let key = secrets.resolve(&og.api_key_ref, "api_key")?;
        pagers.insert(Provider::Opsgenie, Arc::new(provider::opsgenie::Opsgenie::new(http.clone(), &og.url(), key)));
    }
    if let Some(jsm) = &integration.jsm {
        let key = secrets.resolve(&jsm.api_key_ref, "api_key")?;
        pagers.insert(Provider::Jsm, Arc::new(provider::opsgenie::Opsgenie::jsm(http, &jsm.base_url, key)));
    }
    Ok(pagers)
}

/// Requests per minute each of `provider`'s credentials may send.
fn events_per_minute(integration: &config::Integration, provider: Provider) -> u32 {
    match provider {
        Provider::Pagerduty => integration.pagerduty.as_ref().map_or(120, |p| p.events_per_minute),
        Provider::Opsgenie => integration.opsgenie.as_ref().map_or(600, |o| o.requests_per_minute),
        Provider::Jsm => integration.jsm.as_ref().map_or(600, |j| j.requests_per_minute),
    }
}
