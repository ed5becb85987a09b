//! Cost of one poll cycle at fleet scale, measured in one run on this machine:
//!
//! - the release binary polls a test Argo CD serving `BENCH_APPS` (default 10,000)
//!   applications of realistic size (~13 kB each: resources, history, last operation),
//!   with a real nats-server: CPU time and wall time per steady cycle (the list read,
//!   planned, fleet states published, nothing changed), the first cycle (every application
//!   appears: 10,000 intents and the state written), bytes parsed per second and peak RSS;
//! - baselines over the same body in this process: `serde_json` skipping it without
//!   building anything (the floor of any JSON reader), and `serde_json::Value` of the
//!   whole body (what a naive client does: its time and the memory it holds).
//!
//! Prints a table; asserts nothing. `cargo bench -p argocd-sync` (env `BENCH_APPS`,
//! `BENCH_CYCLES`, default 10).
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::time::{Duration, Instant};

use sre_testkit::NatsServer;
use sre_testkit::argocd::{App, FakeArgoCd};
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

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let apps: usize = std::env::var("BENCH_APPS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let cycles: u32 = std::env::var("BENCH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let envs = ["production", "staging", "development", "qa"];
    let fleet: Vec<App> = (0..apps)
        .map(|i| {
            let mut a = App::new(&format!("app-{i:05}"), envs[i % envs.len()]);
            a.realistic = true;
            if i % 50 == 0 {
                a.health = "Degraded".into();
                a.message = "Deployment has timed out progressing".into();
            }
            a
        })
        .collect();
    let argo = FakeArgoCd::start(TOKEN, fleet).await.expect("argo");
    let body = {
        let client = argocd_sync::client::ArgoClient::new(
            argo.url(),
            Some(TOKEN.to_owned().into()),
            Duration::from_secs(60),
            None,
        )
        .expect("client");
        let listed = client.list_applications().await.expect("lists");
        assert_eq!(listed.list.items.len(), apps);
        listed.bytes
    };
    println!(
        "fleet: {apps} applications, list body {:.1} MB ({:.1} kB per application)",
        body as f64 / 1e6,
        body as f64 / apps as f64 / 1e3
    );

    // Baselines in this process, over the same bytes.
    let raw = raw_get(argo.url()).await;
    let (skip_cpu, skip_wall) = {
        let (c, t) = (cpu_secs(), Instant::now());
        for _ in 0..3 {
            let _: serde::de::IgnoredAny = serde_json::from_slice(&raw).expect("json");
        }
        ((cpu_secs() - c) / 3.0, t.elapsed().as_secs_f64() / 3.0)
    };
    let (lean_wall, lean_cpu) = {
        let (c, t) = (cpu_secs(), Instant::now());
        for _ in 0..3 {
            let list = argocd_sync::argocd::parse_list(&raw).expect("parses");
            assert_eq!(list.items.len(), apps);
        }
        (t.elapsed().as_secs_f64() / 3.0, (cpu_secs() - c) / 3.0)
    };
    let rss_before = rss_mb();
    let (value_wall, value_rss) = {
        let t = Instant::now();
        let v: serde_json::Value = serde_json::from_slice(&raw).expect("json");
        let wall = t.elapsed().as_secs_f64();
        let held = rss_mb() - rss_before;
        drop(v);
        (wall, held)
    };
    drop(raw);
    if std::env::var_os("BENCH_PARSER_ONLY").is_some() {
        let mb = body as f64 / 1e6;
        println!(
            "lean parser {:.0} ms CPU ({:.0} MB/s); serde skip-only {:.0} ms CPU",
            lean_cpu * 1e3,
            mb / lean_wall,
            skip_cpu * 1e3
        );
        return;
    }

    let nats = NatsServer::start().expect("nats");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("argocd-sync.yaml");
    std::fs::write(
        &config,
        format!(
            "argocd_integration:\n  poll_interval: 3s\n  argocd_server:\n    - url: {}\n      secret_ref: bench/argocd\n      \
             request_timeout: 60s\n  environments: [production, staging, development, qa]\nruntime:\n  telemetry:\n    log_level: warn\n",
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
    let idle_rss = sync.peak_rss_bytes().unwrap_or(0) as f64 / 1e6;

    let cpu0 = sre_testkit::cpu_time(pid).unwrap_or_default();
    eventually("the first cycle", Duration::from_secs(300), || async { ok_polls(&sync) >= 1.0 }).await;
    let first_cpu = sre_testkit::cpu_time(pid).unwrap_or_default() - cpu0;
    let first_wall = sync.metric("argocd_sync_poll_seconds_sum", &[]);
    let first_peak = sync.peak_rss_bytes().unwrap_or(0) as f64 / 1e6;

    let (cpu1, wall1) =
        (sre_testkit::cpu_time(pid).unwrap_or_default(), sync.metric("argocd_sync_poll_seconds_sum", &[]));
    eventually("steady cycles", Duration::from_secs(600), || async { ok_polls(&sync) >= 1.0 + f64::from(cycles) })
        .await;
    let steady_cpu = (sre_testkit::cpu_time(pid).unwrap_or_default() - cpu1).as_secs_f64() / f64::from(cycles);
    let steady_wall = (sync.metric("argocd_sync_poll_seconds_sum", &[]) - wall1) / f64::from(cycles);
    let intents = sync.metric("argocd_sync_health_checks_total", &[]);
    let peak_rss = sync.peak_rss_bytes().unwrap_or(0) as f64 / 1e6;
    let _ = sync.terminate(Duration::from_secs(30));

    let mb = body as f64 / 1e6;
    println!();
    println!("| measure | value | note |");
    println!("|---|---|---|");
    println!(
        "| steady cycle, CPU | {:.0} ms | target < 250 ms; includes idle ticks of the service |",
        steady_cpu * 1e3
    );
    println!("| steady cycle, wall | {:.0} ms | list + plan + publish 4 fleet states |", steady_wall * 1e3);
    println!(
        "| first cycle, CPU / wall | {:.0} ms / {:.0} ms | {intents} appeared intents + state written |",
        first_cpu.as_secs_f64() * 1e3,
        first_wall * 1e3
    );
    println!("| bytes parsed per second (service) | {:.0} MB/s | body / steady wall |", mb / steady_wall);
    println!("| lean streaming parser, in process | {:.0} ms CPU, {:.0} MB/s | |", lean_cpu * 1e3, mb / lean_wall);
    println!(
        "| baseline: serde_json skip-only | {:.0} ms CPU, {:.0} MB/s | floor of any JSON reader |",
        skip_cpu * 1e3,
        mb / skip_wall
    );
    println!(
        "| baseline: serde_json::Value of the body | {:.0} ms, holds {:.0} MB | naive client |",
        value_wall * 1e3,
        value_rss + mb
    );
    println!("| ratio: steady cycle CPU / skip-only CPU | {:.2}x | |", steady_cpu / skip_cpu.max(1e-9));
    println!(
        "| RSS idle / peak after the first cycle / peak | {idle_rss:.1} MB / {first_peak:.1} MB / {peak_rss:.1} MB | target < 50 MB |"
    );
    // One line for `cargo xtask bench`'s table.
    println!(
        "summary: cycle_cpu_ms={:.0} baseline_cpu_ms={:.0} peak_rss_mb={peak_rss:.1}",
        steady_cpu * 1e3,
        skip_cpu * 1e3
    );
}

/// The raw list body, read once for the in-process baselines.
async fn raw_get(url: &str) -> Vec<u8> {
    use http_body_util::BodyExt;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let req = hyper::Request::get(format!("{url}/api/v1/applications"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(http_body_util::Empty::new())
        .expect("request");
    let resp = client.request(req).await.expect("answer");
    resp.into_body().collect().await.expect("body").to_bytes().to_vec()
}
