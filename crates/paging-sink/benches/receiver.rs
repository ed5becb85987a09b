//! A two-way-sync receiver's overhead over the ingress path, measured in one run: the
//! PagerDuty Webhooks v3 receiver of paging-sink (signature check on the raw body, the page
//! record read from KV, echo checks, one intent stored before the answer) against
//! alertmanager-ingress taking one alert per webhook (the same shared inbound path:
//! limits, parse, publish, wait for JetStream's ack), both release binaries on the same
//! nats-server.
//!
//! For each: request latency p50/p99 at a steady 100 events/s, throughput with 32 requests
//! in flight and the adapter process's own CPU per event during it, and peak RSS. Prints a table;
//! asserts nothing but that every event became exactly one stored intent.
//!
//! `cargo bench -p paging-sink --bench receiver` (env `BENCH_EVENTS`, default 3000 per
//! case). It runs the ingress's release binary, which `cargo xtask bench` builds first (or
//! `cargo build --release -p alertmanager-ingress`).
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sre_contracts::streams;
use sre_testkit::NatsServer;
use sre_testkit::bus::eventually;
use sre_testkit::pagerduty::FakePagerDuty;
use sre_testkit::service::ServiceProcess;

const ROUTING_KEY: &str = "R0UT1NGKEY0123456789ABCDEFGHIJKL";
const SECRET: &str = "bench-webhook-secret";
/// Incidents paged up front; the events cycle through them (each event its own webhook id).
const INCIDENTS: usize = 200;
const CONCURRENCY: usize = 32;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// One request: URL and headers (the body separately).
#[derive(Clone)]
struct Target {
    url: String,
    headers: Vec<(&'static str, String)>,
}

fn signed(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A person's `incident.acknowledged` on incident `n % INCIDENTS`, webhook `run-n`.
fn pagerduty_event(n: usize, run: &str) -> Request {
    let id = format!("01{run}{n:010}");
    let body = serde_json::json!({"event": {"id": id, "event_type": "incident.acknowledged",
        "resource_type": "incident", "occurred_at": "2026-12-02T04:00:00.000Z",
        "agent": {"id": "PLH1HKV", "type": "user_reference", "summary": "Ada Lovelace"},
        "client": null,
        "data": {"id": "PGR0VU2", "type": "incident", "status": "acknowledged",
                 "incident_key": format!("inc-bench-{}", n % INCIDENTS),
                 "html_url": "https://acme.pagerduty.com/incidents/PGR0VU2", "title": "checkout: error rate"}}})
    .to_string();
    let headers = vec![("x-pagerduty-signature", signed(body.as_bytes())), ("x-webhook-id", id)];
    (Bytes::from(body), headers)
}

/// One firing alert per webhook, as Alertmanager sends it.
fn alertmanager_event(n: usize, run: &str) -> Request {
    // Distinct alerts (fingerprints) per run, so none is a duplicate of another.
    let offset = match run {
        "w" => 0,
        "s" => 1_000_000,
        _ => 2_000_000,
    };
    let (_, body) = sre_testkit::stack::load_webhook(n + offset, false);
    (Bytes::from(body), Vec::new())
}

async fn send(client: &HttpClient, target: &Target, body: Bytes, extra: &[(&'static str, String)]) -> Duration {
    let mut req = hyper::Request::post(&target.url).header("content-type", "application/json");
    for (k, v) in target.headers.iter().chain(extra) {
        req = req.header(*k, v);
    }
    let start = Instant::now();
    let resp = client.request(req.body(Full::new(body)).expect("request")).await.expect("response");
    let status = resp.status();
    let answer = http_body_util::BodyExt::collect(resp.into_body()).await.map(|b| b.to_bytes()).unwrap_or_default();
    assert!(status.is_success(), "{}: {status} {}", target.url, String::from_utf8_lossy(&answer));
    start.elapsed()
}

/// A request body and its own headers.
type Request = (Bytes, Vec<(&'static str, String)>);
type Event = fn(usize, &str) -> Request;

/// `n` events at `rate` per second: each request's latency, sorted.
async fn steady(client: &HttpClient, target: &Target, event: Event, n: usize, rate: u32, run: &str) -> Vec<Duration> {
    let start = Instant::now();
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / f64::from(rate))).await;
        let (body, extra) = event(i, run);
        let (client, target) = (client.clone(), target.clone());
        pending.push(tokio::spawn(async move { send(&client, &target, body, &extra).await }));
    }
    let mut out = Vec::with_capacity(n);
    for p in pending {
        out.push(p.await.expect("request"));
    }
    out.sort();
    out
}

/// `n` events with `CONCURRENCY` in flight: events per second.
async fn burst(client: &HttpClient, target: &Target, event: Event, n: usize, run: &str) -> f64 {
    let events: Arc<Vec<Request>> = Arc::new((0..n).map(|i| event(i, run)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, target, events, next) = (client.clone(), target.clone(), events.clone(), next.clone());
            tokio::spawn(async move {
                while let Some((body, extra)) = events.get(next.fetch_add(1, Ordering::Relaxed)) {
                    send(&client, &target, body.clone(), extra).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1);
    sorted.get(at).copied().unwrap_or_default().as_secs_f64() * 1e3
}

/// Intents on `subject` in the intents stream.
async fn stored(js: &async_nats::jetstream::Context, subject: &str) -> u64 {
    use futures::StreamExt;
    let stream = js.get_stream(streams::INTENTS).await.expect("stream");
    let mut subjects = stream.info_with_subjects(subject).await.expect("subjects");
    let mut total = 0;
    while let Some(Ok((_, n))) = subjects.next().await {
        total += n as u64;
    }
    total
}

struct Case {
    name: &'static str,
    process: ServiceProcess,
    target: Target,
    event: Event,
    subject: &'static str,
}

#[tokio::main]
async fn main() {
    use sre_contracts::BusMessage;
    use sre_contracts::domain::v1::{AcknowledgeIncidentRequested, IngestAlertRequested};
    let events: usize = std::env::var("BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let nats = NatsServer::start().expect("nats-server");
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("client"));
    let dir = tempfile::tempdir().expect("tempdir");
    let pagerduty = FakePagerDuty::start().await.expect("pagerduty");

    let sink_config = dir.path().join("paging-sink.yaml");
    std::fs::write(
        &sink_config,
        format!(
            "paging_integration:\n  default_provider: pagerduty\n  pagerduty:\n    routing_key_ref: bench/pagerduty\n    \
             base_url: {}\n    events_per_minute: 100000\n    webhook:\n      enabled: true\n      secret_refs: [bench/webhook]\n  \
             escalation: {{critical: immediate, high: immediate}}\nruntime:\n  telemetry:\n    log_level: warn\n",
            pagerduty.url()
        ),
    )
    .expect("config");
    let mut sink = ServiceProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_paging-sink")),
        &["--config", sink_config.to_str().expect("utf-8")],
        &[
            ("NATS_URL", &nats.url()),
            ("SECRET_BENCH_PAGERDUTY_ROUTING_KEY", ROUTING_KEY),
            ("SECRET_BENCH_WEBHOOK_SECRET", SECRET),
        ],
    )
    .expect("paging-sink");
    sink.wait_for_status("/readyz", 200, Duration::from_secs(30)).expect("ready");
    // The incidents the webhooks are about, paged first (their records are what the
    // receiver looks up).
    for i in 0..INCIDENTS {
        let fact = sre_contracts::domain::v1::IncidentCreated {
            incident_id: format!("inc-bench-{i}"),
            title: "checkout: error rate".into(),
            severity: sre_contracts::domain::v1::Severity::Critical as i32,
            ..Default::default()
        };
        sre_testkit::bus::publish(
            &nats.url(),
            sre_contracts::domain::v1::IncidentCreated::SUBJECT,
            &format!("created-{i}"),
            prost::Message::encode_to_vec(&fact),
        )
        .await;
    }
    eventually("every incident paged", Duration::from_secs(60), || async { pagerduty.alerts().len() == INCIDENTS })
        .await;

    let ingress_config = dir.path().join("ingress.yaml");
    std::fs::write(
        &ingress_config,
        "alertmanager_integration:\n  auto_create_incident:\n    enabled: false\nruntime:\n  telemetry:\n    log_level: warn\n",
    )
    .expect("config");
    let mut ingress = ServiceProcess::spawn(
        &sre_testkit::stack::adapter_bin("alertmanager-ingress"),
        &["--config", ingress_config.to_str().expect("utf-8")],
        &[("NATS_URL", &nats.url())],
    )
    .expect("alertmanager-ingress");
    ingress.wait_for_status("/readyz", 200, Duration::from_secs(30)).expect("ready");

    let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(CONCURRENCY).build_http();
    let cases = [
        Case {
            name: "ingress (baseline)",
            target: Target {
                url: format!("http://127.0.0.1:{}/webhooks/alertmanager", ingress.port()),
                headers: Vec::new(),
            },
            process: ingress,
            event: alertmanager_event,
            subject: IngestAlertRequested::SUBJECT,
        },
        Case {
            name: "PagerDuty receiver",
            target: Target {
                url: format!("http://127.0.0.1:{}/webhooks/pagerduty", sink.port()),
                headers: vec![("user-agent", "PagerDuty-Webhook/V3.0".to_owned())],
            },
            process: sink,
            event: pagerduty_event,
            subject: AcknowledgeIncidentRequested::SUBJECT,
        },
    ];
    println!(
        "receiver benchmark: {events} events per case, 1 intent per event, steady 100 events/s, then {CONCURRENCY} \
         in flight; {} cores",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "| path | p50 at 100/s | p99 at 100/s | events/s ({CONCURRENCY} in flight) | CPU per event | peak RSS |\n|---|---|---|---|---|---|"
    );
    let mut figures = Vec::new();
    for case in &cases {
        let pid = case.process.pid().expect("runs");
        let _ = burst(&client, &case.target, case.event, 200, "w").await; // warm-up, not counted
        let before = stored(&js, case.subject).await;
        let latencies = steady(&client, &case.target, case.event, events, 100, "s").await;
        // CPU per event under load (at 100/s the process's idle work would dominate).
        let cpu0 = sre_testkit::cpu_time(pid).unwrap_or_default();
        let rate = burst(&client, &case.target, case.event, events, "b").await;
        let cpu = (sre_testkit::cpu_time(pid).unwrap_or_default() - cpu0).as_secs_f64() * 1e6 / events as f64;
        let after = stored(&js, case.subject).await;
        assert_eq!(after - before, 2 * events as u64, "{}: one intent per event", case.name);
        let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
        let rss = case.process.peak_rss_bytes().unwrap_or(0) as f64 / 1e6;
        println!("| {} | {p50:.2} ms | {p99:.2} ms | {rate:.0} | {cpu:.0} µs | {rss:.1} MB |", case.name);
        figures.push((p50, p99, rate, cpu));
    }
    let (base, recv) = (figures[0], figures[1]);
    println!(
        "receiver over the ingress path: p50 {:+.2} ms, p99 {:+.2} ms ({:.2}x), throughput {:.2}x, CPU per event {:.2}x",
        recv.0 - base.0,
        recv.1 - base.1,
        recv.1 / base.1,
        recv.2 / base.2,
        recv.3 / base.3
    );
    println!(
        "receiver summary: p50_ms={:.2} p99_ms={:.2} base_p50_ms={:.2} base_p99_ms={:.2} rate={:.0} baseline={:.0}",
        recv.0, recv.1, base.0, base.1, recv.2, base.2
    );
}
