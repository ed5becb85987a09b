//! Cost of a poll cycle at fleet scale, to Argo CD and to us, measured in one run:
//!
//! for 10,000 and 50,000 applications of realistic size (~13.7 kB each whole: resources,
//! history, last operation), with the test Argo CD honouring the list's `fields` (v2.10+)
//! and ignoring it (an older server), the release binary polls it with a real nats-server.
//! Per steady cycle (the list read and planned, fleet states published, nothing changed):
//! bytes on the wire per application, the service's CPU, and the test Argo CD's own
//! serialisation time (a proxy for the load we put on Argo CD); the first cycle (every
//! application appears, its detail read, the state written); peak RSS over the whole run.
//! Baseline in the same run: `serde_json` skipping the body actually received (the floor
//! of any JSON reader), in this process.
//!
//! Prints a table; asserts nothing. `cargo bench -p argocd-sync` (env `BENCH_APPS`, e.g.
//! `10000,50000`, the default; `BENCH_CYCLES`, default 5; `BENCH_FIELDS`, default
//! `honoured,ignored`).
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::time::Duration;

use argocd_sync::config::EnvironmentFrom;
use sre_testkit::NatsServer;
use sre_testkit::argocd::{App, FakeArgoCd, Fields};
use sre_testkit::bus::eventually;
use sre_testkit::service::ServiceProcess;

const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJiZW5jaCJ9.c2ln";

fn ok_polls(p: &ServiceProcess) -> f64 {
    let (_, text) = p.get("/metrics").unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("argocd_sync_polls_total{") && l.contains("outcome=\"Ok\""))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

fn cpu_secs() -> f64 {
    // This process's CPU time (user + system), for the in-process baselines.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap_or_default().split(' ').collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
    ticks / 100.0
}

/// One configuration's figures.
struct Run {
    apps: usize,
    fields: Fields,
    steady_cpu_ms: f64,
    steady_wall_ms: f64,
    first_cpu_ms: f64,
    first_wall_ms: f64,
    bytes_per_app: f64,
    argo_serialize_ms: f64,
    skip_cpu_ms: f64,
    peak_rss_mb: f64,
    first_peak_mb: f64,
    idle_rss_mb: f64,
    intents: f64,
}

fn fleet(apps: usize) -> Vec<App> {
    let envs = ["production", "staging", "development", "qa"];
    (0..apps)
        .map(|i| {
            let mut a = App::new(&format!("app-{i:05}"), envs[i % envs.len()]);
            a.realistic = true;
            if i % 50 == 0 {
                a.health = "Degraded".into();
                a.message = "Deployment has timed out progressing".into();
            }
            a
        })
        .collect()
}

async fn run(apps: usize, fields: Fields, cycles: u32) -> Run {
    let argo = FakeArgoCd::start(TOKEN, fleet(apps)).await.expect("argo");
    argo.set_fields(fields);
    // The body the service receives on a steady cycle, for the skip-only baseline.
    let skip_cpu_ms = {
        let raw = raw_get(argo.url(), &argocd_sync::client::lean_list_fields(EnvironmentFrom::Label)).await;
        let c = cpu_secs();
        for _ in 0..3 {
            let _: serde::de::IgnoredAny = serde_json::from_slice(&raw).expect("json");
        }
        (cpu_secs() - c) / 3.0 * 1e3
    };
    let nats = NatsServer::start().expect("nats");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("argocd-sync.yaml");
    std::fs::write(
        &config,
        format!(
            "argocd_integration:\n  poll_interval: 3s\n  argocd_server:\n    - url: {}\n      secret_ref: bench/argocd\n      \
             request_timeout: 120s\n  environments: [production, staging, development, qa]\nruntime:\n  telemetry:\n    log_level: warn\n",
            argo.url()
        ),
    )
    .expect("config");
    let mut sync = ServiceProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_argocd-sync")),
        &["--config", config.to_str().expect("utf-8")],
        &[("NATS_URL", &nats.url()), ("SECRET_BENCH_ARGOCD_TOKEN", TOKEN)],
    )
    .expect("spawns");
    sync.wait_for_status("/healthz", 200, Duration::from_secs(30)).expect("alive");
    let pid = sync.pid().expect("pid");
    let idle_rss_mb = sync.peak_rss_bytes().unwrap_or(0) as f64 / 1e6;

    let cpu0 = sre_testkit::cpu_time(pid).unwrap_or_default();
    eventually("the first cycle", Duration::from_secs(600), || async { ok_polls(&sync) >= 1.0 }).await;
    let first_cpu_ms = (sre_testkit::cpu_time(pid).unwrap_or_default() - cpu0).as_secs_f64() * 1e3;
    let first_wall_ms = sync.metric("argocd_sync_poll_seconds_sum", &[]) * 1e3;
    let first_peak_mb = sync.peak_rss_bytes().unwrap_or(0) as f64 / 1e6;

    let (cpu1, wall1, served1) = (
        sre_testkit::cpu_time(pid).unwrap_or_default(),
        sync.metric("argocd_sync_poll_seconds_sum", &[]),
        argo.served(),
    );
    eventually("steady cycles", Duration::from_secs(900), || async { ok_polls(&sync) >= 1.0 + f64::from(cycles) })
        .await;
    let n = f64::from(cycles);
    let steady_cpu_ms = (sre_testkit::cpu_time(pid).unwrap_or_default() - cpu1).as_secs_f64() * 1e3 / n;
    let steady_wall_ms = (sync.metric("argocd_sync_poll_seconds_sum", &[]) - wall1) * 1e3 / n;
    let served = argo.served();
    let lists = (served.lists - served1.lists).max(1) as f64;
    let bytes_per_app = (served.bytes - served1.bytes) as f64 / lists / apps as f64;
    let argo_serialize_ms = (served.serialize - served1.serialize).as_secs_f64() * 1e3 / lists;
    let intents = sync.metric("argocd_sync_health_checks_total", &[]);
    let peak_rss_mb = sync.peak_rss_bytes().unwrap_or(0) as f64 / 1e6;
    let _ = sync.terminate(Duration::from_secs(30));
    Run {
        apps,
        fields,
        steady_cpu_ms,
        steady_wall_ms,
        first_cpu_ms,
        first_wall_ms,
        bytes_per_app,
        argo_serialize_ms,
        skip_cpu_ms,
        peak_rss_mb,
        first_peak_mb,
        idle_rss_mb,
        intents,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_APPS")
        .unwrap_or_else(|_| "10000,50000".to_owned())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let cycles: u32 = std::env::var("BENCH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let modes = std::env::var("BENCH_FIELDS").unwrap_or_else(|_| "honoured,ignored".to_owned());
    let modes: Vec<Fields> = [("honoured", Fields::Honoured), ("ignored", Fields::Ignored)]
        .into_iter()
        .filter(|(name, _)| modes.contains(name))
        .map(|(_, f)| f)
        .collect();
    let mut runs = Vec::new();
    for &apps in &sizes {
        for &fields in &modes {
            eprintln!("bench: {apps} applications, fields {fields:?}");
            runs.push(run(apps, fields, cycles).await);
        }
    }
    println!("argocd-sync benchmark: one steady poll cycle ({cycles} averaged), first cycle, peak RSS");
    println!();
    println!(
        "| apps | Argo CD `fields` | wire per app per cycle | cycle CPU | cycle wall | Argo CD serialise per cycle | \
         skip-only parse of that body | ratio | first cycle CPU / wall | RSS idle / peak by the first cycle / peak |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {} | {:.2} kB | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.2}x | {:.0} ms / {:.0} ms ({} intents) | {:.1} / {:.1} / {:.1} MB |",
            r.apps,
            match r.fields {
                Fields::Honoured => "honoured",
                Fields::Ignored => "ignored",
            },
            r.bytes_per_app / 1e3,
            r.steady_cpu_ms,
            r.steady_wall_ms,
            r.argo_serialize_ms,
            r.skip_cpu_ms,
            r.steady_cpu_ms / r.skip_cpu_ms.max(1e-9),
            r.first_cpu_ms,
            r.first_wall_ms,
            r.intents,
            r.idle_rss_mb,
            r.first_peak_mb,
            r.peak_rss_mb
        );
    }
    let lean = |apps: usize| runs.iter().find(|r| r.apps == apps && r.fields == Fields::Honoured);
    if let (Some(small), Some(large)) = (lean(10_000), lean(50_000)) {
        println!(
            "peak RSS 10,000 -> 50,000 applications, fields honoured: {:.1} MB -> {:.1} MB ({:+.0}%); target < 25 MB, <= +20%",
            small.peak_rss_mb,
            large.peak_rss_mb,
            (large.peak_rss_mb / small.peak_rss_mb - 1.0) * 100.0
        );
    }
    // One line for `cargo xtask bench`'s table: the largest fleet, fields honoured.
    if let Some(r) = runs.iter().filter(|r| r.fields == Fields::Honoured).max_by_key(|r| r.apps) {
        println!(
            "summary: apps={} cycle_cpu_ms={:.0} baseline_cpu_ms={:.0} peak_rss_mb={:.1} wire_kb_per_app={:.2}",
            r.apps,
            r.steady_cpu_ms,
            r.skip_cpu_ms,
            r.peak_rss_mb,
            r.bytes_per_app / 1e3
        );
    }
}

/// The list body as the service asks for it (`fields`), read once for the baseline.
async fn raw_get(url: &str, fields: &str) -> Vec<u8> {
    use http_body_util::BodyExt;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = hyper::Request::get(format!("{url}/api/v1/applications?fields={fields}"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::Empty::new())
        .expect("request");
    let resp = client.request(req).await.expect("answer");
    resp.into_body().collect().await.expect("body").to_bytes().to_vec()
}
