//! The service lifecycle every adapter shares.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use sre_bus::{Bus, BusMetrics};
use sre_contracts::domain::v1::Source;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{self, RuntimeConfig, ServiceConfig, Vars};
use crate::{Cli, Health, Metrics, SecretStore, parse_config, telemetry};

/// What the runtime needs to know about an adapter.
#[derive(Debug, Clone, Copy)]
pub struct ServiceSpec {
    /// The service name (`alertmanager-ingress`), in logs, metrics and message sources.
    pub name: &'static str,
    /// The crate version.
    pub version: &'static str,
    /// Port on 127.0.0.1 when neither the file nor `HTTP_ADDR` sets an address.
    pub default_http_port: u16,
}

/// Everything an adapter's start function gets; `V` is its validated configuration
/// ([`ServiceConfig::Valid`]).
#[derive(Debug, Clone)]
pub struct ServiceContext<V> {
    /// The validated configuration.
    pub config: Arc<V>,
    /// The bus (connecting, or connected).
    pub bus: Bus,
    /// Register metrics here.
    pub metrics: Metrics,
    /// Register readiness checks here.
    pub health: Health,
    /// Fires on SIGTERM/SIGINT: stop taking new work.
    pub shutdown: CancellationToken,
    /// Spawn workers here: shutdown waits for them (no detached tasks).
    pub tasks: TaskTracker,
    /// Secrets by reference.
    pub secrets: SecretStore,
    /// The adapter's spec.
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    adapter: &'static str,
    version: &'static str,
}

/// Runs an adapter: flags, configuration, telemetry, bus, HTTP, and on SIGTERM or SIGINT a
/// graceful shutdown:
/// 1. readiness fails (`draining`), the shutdown token fires: workers stop taking work;
/// 2. the HTTP server stops accepting and finishes in-flight requests;
/// 3. workers finish what they hold (a consumer acks or NAKs its in-flight facts);
/// 4. the bus client flushes and drains; traces are flushed; exit 0.
///
/// Steps 2 and 3 are bounded by `runtime.shutdown_grace`; work still unfinished then was
/// never acknowledged, so the bus redelivers it (nothing is lost).
///
/// Exit codes: 0 after a clean run or `--check-config` on a valid file, 2 for an invalid
/// configuration (the message names the key and the reason), 1 for a failure at start.
pub fn run<C, F, Fut>(spec: ServiceSpec, start: F) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(ServiceContext<C::Valid>) -> Fut,
    Fut: Future<Output = anyhow::Result<Router>>,
{
    run_with_online::<C, F, Fut, _>(spec, start, |_, _| Box::pin(async { Ok(Vec::new()) }))
}

/// What `--check-config --online` runs: the problems found against the vendors, each
/// naming the key it concerns, or why the check could not be made.
pub type OnlineCheck<'a> = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<Vec<String>>> + 'a>>;

/// [`run`], with the adapter's `--check-config --online` check.
pub fn run_with_online<C, F, Fut, O>(spec: ServiceSpec, start: F, online: O) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(ServiceContext<C::Valid>) -> Fut,
    Fut: Future<Output = anyhow::Result<Router>>,
    O: for<'a> FnOnce(&'a C::Valid, &'a SecretStore) -> OnlineCheck<'a>,
{
    // The adapter's own name and version in `--help` and `--version`.
    let matches = <Cli as clap::CommandFactory>::command().name(spec.name).version(spec.version).get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let vars: Vars = std::env::vars().collect();
    let parsed = config::read_file(cli.config.as_deref()).and_then(|text| parse_config::<C>(&text, &vars));
    // The same validation for `--check-config` and for start: what start consumes is what
    // it returns.
    let loaded = parsed.and_then(|config| config.validate().map(|valid| (config, valid)));
    let (config, valid) = match loaded {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("{}: invalid configuration: {err}", spec.name);
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        let secrets = SecretStore::new(config.runtime().secrets_dir.clone(), vars.clone());
        for notice in config.runtime().bus.unreadable_files().into_iter().chain(config.notices(&secrets)) {
            eprintln!("{}: note: {notice}", spec.name);
        }
        if cli.online {
            let checked = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(online(&valid, &secrets)));
            match checked {
                Ok(problems) if problems.is_empty() => eprintln!("{}: online checks ok", spec.name),
                Ok(problems) => {
                    for p in problems {
                        eprintln!("{}: invalid configuration: {p}", spec.name);
                    }
                    return ExitCode::from(2);
                }
                Err(err) => {
                    eprintln!("{}: the online check could not be made: {err:#}", spec.name);
                    return ExitCode::FAILURE;
                }
            }
        }
        eprintln!("{}: configuration ok", spec.name);
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("{}: cannot start the async runtime: {err}", spec.name);
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(spec, config.runtime().clone(), valid, vars, start)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "service failed");
            eprintln!("{}: {err:#}", spec.name);
            ExitCode::FAILURE
        }
    }
}

async fn serve<V, F, Fut>(spec: ServiceSpec, rt: RuntimeConfig, config: V, vars: Vars, start: F) -> anyhow::Result<()>
where
    F: FnOnce(ServiceContext<V>) -> Fut,
    Fut: Future<Output = anyhow::Result<Router>>,
{
    let instance = rt.instance.clone().unwrap_or_else(|| format!("{}-{}", spec.name, std::process::id()));
    let telemetry = telemetry::init(spec.name, &instance, &rt.telemetry)?;
    tracing::info!(service = spec.name, version = spec.version, instance = %instance, "starting");

    let metrics = Metrics::default();
    let bus_metrics = BusMetrics::default();
    metrics.register(|r| {
        bus_metrics.register(r);
        let build = Family::<BuildLabels, Gauge>::default();
        build.get_or_create(&BuildLabels { adapter: spec.name, version: spec.version }).set(1);
        // `adapter`, not `service`: Prometheus Operator's target label `service` would
        // rename ours to `exported_service`; the alert rules join on this label.
        r.register("sre_build_info", "The adapter's name and version (always 1)", build);
    });
    let source = Source { service: spec.name.to_owned(), instance };
    let bus = Bus::connect(rt.bus.clone(), source, bus_metrics).await?;
    let health = Health::default();
    let bus_check = bus.clone();
    health.register("bus", Arc::new(move || bus_check.readiness()));

    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    {
        let (bus, token) = (bus.clone(), shutdown.clone());
        tasks.spawn(async move {
            // Only cancellation ends this early; readiness reports the wait meanwhile.
            let _ = bus.ensure_topology(&token).await;
        });
    }

    let ctx = ServiceContext {
        config: Arc::new(config),
        bus: bus.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        shutdown: shutdown.clone(),
        tasks: tasks.clone(),
        secrets: SecretStore::new(rt.secrets_dir.clone(), vars),
        spec,
    };
    let routes = start(ctx).await?;
    let app = router(metrics, health.clone()).merge(routes);
    let addr = rt.http.addr.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, spec.default_http_port)));
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let server = {
        let token = shutdown.clone();
        tokio::spawn(
            axum::serve(listener, app).with_graceful_shutdown(async move { token.cancelled().await }).into_future(),
        )
    };

    wait_for_signal(&shutdown).await;
    tracing::info!(grace = ?rt.shutdown_grace, "shutting down");
    health.start_draining();
    shutdown.cancel();
    tasks.close();
    let drained = tokio::time::timeout(rt.shutdown_grace, async {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "http server ended with an error"),
            Err(err) => tracing::warn!(error = %err, "http server task failed"),
        }
        tasks.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period over; unfinished work was not acknowledged and will be redelivered");
    }
    if tokio::time::timeout(Duration::from_secs(5), bus.drain()).await.is_err() {
        tracing::warn!("draining the bus timed out");
    }
    tracing::info!("stopped");
    telemetry.shutdown();
    Ok(())
}

async fn wait_for_signal(shutdown: &CancellationToken) {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "signal received"),
        () = term => tracing::info!(signal = "SIGTERM", "signal received"),
        () = shutdown.cancelled() => {}
    }
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn router(metrics: Metrics, health: Health) -> Router {
    let exposition = Exposition { readiness: ReadinessMetrics::default(), metrics, health: health.clone() };
    exposition.readiness.register(&exposition.metrics);
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, axum::Json(serde_json::json!({"status": "alive"}))) }))
        .route("/readyz", get(readyz).with_state(health))
        .route("/metrics", get(metrics_handler).with_state(exposition))
}

/// What `/metrics` serves: the registry, with readiness as of the scrape.
#[derive(Clone)]
struct Exposition {
    metrics: Metrics,
    health: Health,
    readiness: ReadinessMetrics,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    check: &'static str,
}

/// `sre_ready` (1 when `/readyz` would answer 200) and `sre_ready_check{check}` (1 per
/// passing check), read at each scrape so an alert names the failing check.
#[derive(Debug, Clone, Default)]
struct ReadinessMetrics {
    ready: Gauge,
    checks: Family<CheckLabels, Gauge>,
}

impl ReadinessMetrics {
    fn register(&self, metrics: &Metrics) {
        metrics.register(|r| {
            r.register("sre_ready", "1 while the adapter is ready (what /readyz answers)", self.ready.clone());
            r.register("sre_ready_check", "Readiness checks: 1 passing, 0 failing", self.checks.clone());
        });
    }

    fn update(&self, health: &Health) {
        let (ready, results) = health.report();
        self.ready.set(i64::from(ready));
        for (check, result) in results {
            self.checks.get_or_create(&CheckLabels { check }).set(i64::from(result.is_ok()));
        }
    }
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    let (ready, results) = health.report();
    let checks: serde_json::Map<String, serde_json::Value> = results
        .into_iter()
        .map(|(name, r)| (name.to_owned(), serde_json::Value::String(r.err().unwrap_or_else(|| "ok".to_owned()))))
        .collect();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::json!({"status": if ready { "ready" } else { "not_ready" }, "checks": checks});
    (status, axum::Json(body))
}

async fn metrics_handler(State(e): State<Exposition>) -> impl IntoResponse {
    e.readiness.update(&e.health);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], e.metrics.encode())
}

/// Calls `attempt` every second until it succeeds, or until `cancel` fires (`None`). Each
/// failure is logged as a warning naming `what`. For what a service needs once at start
/// and may not have yet (a KV bucket, a durable consumer while the bus comes up).
pub async fn until_ok<T, E, F, Fut>(what: &str, cancel: &CancellationToken, mut attempt: F) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        match attempt().await {
            Ok(v) => return Some(v),
            Err(e) => tracing::warn!(error = %e, "{what} not available yet; trying again"),
        }
        tokio::select! {
            () = cancel.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get_json(app: Router, path: &str) -> (StatusCode, serde_json::Value) {
        let resp = app.oneshot(Request::get(path).body(Body::empty()).expect("request")).await.expect("response");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    async fn text(app: Router, path: &str) -> String {
        let resp = app.oneshot(Request::get(path).body(Body::empty()).expect("request")).await.expect("response");
        String::from_utf8(resp.into_body().collect().await.expect("body").to_bytes().to_vec()).expect("utf8")
    }

    #[tokio::test]
    async fn readiness_names_the_failing_check() {
        let health = Health::default();
        health.register("bus", Arc::new(|| Ok(())));
        health.register("jira", Arc::new(|| Err("credentials rejected (401)".to_owned())));
        let app = router(Metrics::default(), health.clone());
        let (status, body) = get_json(app.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "not_ready");
        let metrics = text(app.clone(), "/metrics").await;
        assert!(metrics.contains("sre_ready 0\n"), "{metrics}");
        assert!(metrics.contains("sre_ready_check{check=\"jira\"} 0\n"), "{metrics}");
        assert!(metrics.contains("sre_ready_check{check=\"bus\"} 1\n"), "{metrics}");
        assert_eq!(body["checks"]["bus"], "ok");
        assert_eq!(body["checks"]["jira"], "credentials rejected (401)");
        let (status, body) = get_json(app, "/healthz").await;
        assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("alive")));
    }

    #[tokio::test]
    async fn ready_when_all_pass_until_draining() {
        let health = Health::default();
        health.register("bus", Arc::new(|| Ok(())));
        let app = router(Metrics::default(), health.clone());
        assert_eq!(get_json(app.clone(), "/readyz").await.0, StatusCode::OK);
        health.start_draining();
        let (status, body) = get_json(app, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["checks"]["shutdown"], "draining");
    }

    #[tokio::test]
    async fn metrics_are_served_in_the_exposition_format() {
        let metrics = Metrics::default();
        let bus = BusMetrics::default();
        metrics.register(|r| bus.register(r));
        let resp = router(metrics, Health::default())
            .oneshot(Request::get("/metrics").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        let text =
            String::from_utf8(resp.into_body().collect().await.expect("body").to_bytes().to_vec()).expect("utf8");
        assert!(text.contains("# TYPE sre_bus_connected gauge"), "{text}");
        assert!(text.contains("sre_bus_reconnects_total 0"), "{text}");
        assert!(text.contains("sre_ready 1\n"), "{text}");
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
