//! argocd-sync: reads application health and sync status from Argo CD and asks the SRE
//! domain to record it, as `RecordFleetStateRequested` (one per environment and cycle) and
//! `RecordHealthCheckRequested` (one per application change).
//!
//! Emits intents only. Knows nothing about tickets, pages or the Transformation domain.

pub mod apps;
pub mod argocd;
pub mod client;
pub mod config;
pub mod cycle;
pub mod metrics;
pub mod observe;
pub mod poller;
pub mod state;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sre_resilience::{Backoff, BreakerConfig, Upstream, UpstreamConfig};
use sre_runtime::ServiceContext;
use sre_runtime::axum::Router;

pub use config::Config;

/// The service's name, version and default port.
pub const SPEC: sre_runtime::ServiceSpec =
    sre_runtime::ServiceSpec { name: "argocd-sync", version: env!("CARGO_PKG_VERSION"), default_http_port: 8081 };

/// Starts the service: one poll loop per configured Argo CD server. Returns no routes
/// beyond health and metrics.
pub async fn start(ctx: ServiceContext<Config>) -> anyhow::Result<Router> {
    let integration = &ctx.config.argocd_integration;
    if !integration.enabled {
        tracing::info!("argocd_integration.enabled is false: serving health only");
        return Ok(Router::new());
    }
    let metrics = metrics::SyncMetrics::default();
    ctx.metrics.register(|r| metrics.register(r));
    let breakers = sre_runtime::BreakerMetrics::default();
    breakers.register(&ctx.metrics);
    let status: poller::UpstreamStatus = Arc::new(Mutex::new(BTreeMap::new()));
    let readiness = status.clone();
    ctx.health.register(
        "argocd",
        Arc::new(move || {
            let status = readiness.lock().unwrap_or_else(PoisonError::into_inner);
            match status.iter().find_map(|(server, s)| s.as_ref().err().map(|e| format!("{server}: {e}"))) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }),
    );
    let kv_reach = sre_bus::Reachability::new(format!("KV bucket {}", state::STATE_BUCKET));
    {
        let kv = kv_reach.clone();
        ctx.health.register("kv", Arc::new(move || kv.readiness()));
    }
    let holder = format!("{}/{:08x}", ctx.bus.source().instance, rand::random::<u32>());
    let mut pollers = Vec::new();
    for server in &integration.argocd_server {
        let token = match config::resolve_token(integration, server, &ctx.secrets) {
            config::Token::Found(token) => Some(token),
            config::Token::Unreadable(e) => return Err(e.into()),
            config::Token::Anonymous { hint } => {
                tracing::warn!(server = %server.url, hint = %hint,
                    "no Argo CD token: polling anonymously (Argo CD answers 401 unless anonymous access is on)");
                None
            }
        };
        let ca = match &server.ca_file {
            Some(path) => Some(
                std::fs::read(path).map_err(|e| anyhow::anyhow!("argocd_server ca_file {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let client = client::ArgoClient::new(&server.url, token, server.request_timeout, ca.as_deref())?;
        let rules = cycle::CycleRules {
            server: server.url.trim_end_matches('/').to_owned(),
            environments: integration.environments.clone(),
            environment_from: integration.environment_from,
            environment_label: integration.environment_label.clone(),
            hysteresis: observe::Hysteresis {
                observations: integration.hysteresis.observations,
                hold: integration.hysteresis.hold,
            },
            poll_interval: integration.poll_interval,
        };
        let upstream = Upstream::new(UpstreamConfig {
            name: "argocd",
            backoff: Backoff {
                initial: Duration::from_millis(500),
                max_attempts: 3,
                max_elapsed: integration.poll_interval / 2,
                ..Backoff::default()
            },
            breaker: BreakerConfig::default(),
            rate_limit: None,
        });
        metrics.prime(&rules.server, &rules.environments);
        pollers.push((rules, client, upstream));
    }
    {
        let states: Vec<(String, Upstream)> =
            pollers.iter().map(|(rules, _, upstream)| (rules.server.clone(), upstream.clone())).collect();
        ctx.tasks.spawn(breakers.watch(sre_runtime::BreakerMetrics::EVERY, ctx.shutdown.clone(), move || {
            states.iter().map(|(server, u)| (server.clone(), u.breaker_state())).collect()
        }));
    }
    tracing::info!(
        servers = pollers.len(),
        environments = integration.environments.len(),
        poll_interval = ?integration.poll_interval,
        lease_ttl = ?integration.lease_ttl(),
        "configuration loaded"
    );
    let (bus, cancel, lease_ttl) = (ctx.bus.clone(), ctx.shutdown.clone(), integration.lease_ttl());
    let watch_mode = integration.mode == config::Mode::Watch;
    let tasks = ctx.tasks.clone();
    ctx.tasks.spawn(async move {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = bus.wait_for_topology() => {}
        }
        let Some((lease_kv, state_kv)) =
            sre_runtime::until_ok("state buckets", &cancel, || state::open_buckets(&bus, lease_ttl, kv_reach.clone()))
                .await
        else {
            return;
        };
        for (rules, client, upstream) in pollers {
            let id = state::server_id(&rules.server);
            let poller = poller::ServerPoller {
                lease: state::Lease::new(lease_kv.clone(), &id, holder.clone()),
                store: state::StateStore::new(state_kv.clone(), &id),
                rules,
                client: Arc::new(client),
                watch: watch_mode,
                upstream,
                publisher: bus.intent_publisher(),
                source: bus.source().clone(),
                metrics: metrics.clone(),
                status: status.clone(),
                tasks: tasks.clone(),
                fields_ignored_logged: std::sync::atomic::AtomicBool::new(false),
            };
            tasks.spawn(poller.run(cancel.clone()));
        }
    });
    Ok(Router::new())
}
