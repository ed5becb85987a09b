//! Ingress throughput against its baselines, measured in one run on this machine:
//!
//! 1. webhook → alertmanager-ingress (the release binary) → JetStream, groups of 1, 10, 100;
//! 2. raw JetStream publishing of the same messages (same subjects, headers, `Nats-Msg-Id`)
//!    from one async-nats client with many acks in flight: the ceiling;
//! 3. Alertmanager's own ingest of the same alerts (`POST /api/v2/alerts`): the program
//!    that feeds the ingress, which the ingress must keep up with;
//!
//! then request latency p50/p99 at a fixed 1,000 alerts/s (groups of 10), and the ingress's
//! peak RSS. Prints a table; asserts nothing (figures, not a timed test).
//!
//! `cargo bench -p alertmanager-ingress` (env `BENCH_ALERTS`, default 20000 per case).
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use alertmanager_ingress::config::KeySource;
use alertmanager_ingress::mapping::{RequestContext, Rules, default_severity_map, map_webhook};
use alertmanager_ingress::payload::parse;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use sre_contracts::domain::v1::{Severity, Source};
use sre_contracts::{BusMessage, headers, streams};
use sre_testkit::service::ServiceProcess;
use sre_testkit::{Alertmanager, NatsServer};

const CONCURRENCY: usize = 32;

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn alert_json(i: usize, run: &str) -> serde_json::Value {
    serde_json::json!({
        "status": "firing",
        "labels": {"alertname": format!("BenchAlert{i}"), "severity": "warning", "service": "checkout-api",
                   "cluster": "prod-eu-1", "instance": format!("10.42.{}.{}:8080", i / 250, i % 250), "run": run},
        "annotations": {"summary": "p99 latency above 2s for checkout-api",
                        "description": "checkout-api p99 latency is 3.4s (threshold 2s) for more than 5 minutes.",
                        "runbook_url": "https://runbooks.example.com/checkout/high-latency"},
        "startsAt": "2026-11-27T03:38:53.744495Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus-0.monitoring.svc:9090/graph?g0.expr=up",
        "fingerprint": format!("{:016x}", (i as u64) ^ fxhash(run)),
    })
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Webhook bodies of `group` alerts each, `total` alerts in all, unique per `run`.
fn webhooks(total: usize, group: usize, run: &str) -> Vec<Bytes> {
    (0..total.div_ceil(group))
        .map(|g| {
            let alerts: Vec<_> = (g * group..((g + 1) * group).min(total)).map(|i| alert_json(i, run)).collect();
            let body = serde_json::json!({
                "receiver": "sre", "status": "firing", "alerts": alerts,
                "groupLabels": {"alertname": "Bench"}, "commonLabels": {"service": "checkout-api"},
                "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "version": "4",
                "groupKey": format!("{{}}:{{alertname=\"Bench{g}\"}}"), "truncatedAlerts": 0,
            });
            Bytes::from(body.to_string())
        })
        .collect()
}

async fn post_all(client: &HttpClient, url: &str, bodies: Vec<Bytes>) -> Duration {
    let bodies = Arc::new(bodies);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, bodies, next, url) = (client.clone(), bodies.clone(), next.clone(), url.to_owned());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    let req = hyper::Request::post(&url)
                        .header("content-type", "application/json")
                        .body(Full::new(body.clone()))
                        .expect("request");
                    let resp = client.request(req).await.expect("response");
                    assert!(resp.status().is_success(), "{url}: {}", resp.status());
                    let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                }
            })
        })
        .collect();
    for w in workers {
        w.await.expect("worker");
    }
    start.elapsed()
}

async fn stream_messages(js: &async_nats::jetstream::Context) -> u64 {
    js.get_stream(streams::INTENTS).await.expect("stream").get_info().await.expect("info").state.messages
}

/// Publishes the intents the ingress would derive from `bodies`, as it would, from one client.
async fn raw_jetstream(js: &async_nats::jetstream::Context, bodies: &[Bytes]) -> (usize, Duration) {
    let rules = Rules {
        severity_label: "severity".into(),
        severity_map: default_severity_map(),
        default_severity: Severity::Unspecified,
        key_source: KeySource::Fingerprint,
        auto_create_min: None,
    };
    let ctx = RequestContext {
        correlation_id: "bench".into(),
        source: Source { service: "bench".into(), instance: "0".into() },
        now: jiff::Timestamp::now(),
    };
    let mut messages = Vec::new();
    for body in bodies {
        let webhook = parse(body).expect("parses");
        for intent in map_webhook(webhook, &rules, &ctx).expect("maps").ingest {
            let key = intent.meta.as_ref().map(|m| m.idempotency_key.clone()).unwrap_or_default();
            messages.push((key, Bytes::from(intent.encode_to_vec())));
        }
    }
    // Many acks in flight, bounded below async-nats's cap (5,000) so the window keeps moving.
    const WINDOW: usize = 4_096;
    let start = Instant::now();
    let mut acks = std::collections::VecDeque::with_capacity(WINDOW);
    for (key, body) in &messages {
        let mut h = async_nats::HeaderMap::new();
        h.insert(headers::CONTENT_TYPE, headers::CONTENT_TYPE_PROTOBUF);
        h.insert(headers::MESSAGE_TYPE, sre_contracts::domain::v1::IngestAlertRequested::TYPE);
        h.insert(headers::MSG_ID, key.as_str());
        let publish = async_nats::jetstream::message::PublishMessage::build().headers(h).payload(body.clone());
        if acks.len() == WINDOW
            && let Some(ack) = acks.pop_front()
        {
            let _: async_nats::jetstream::context::PublishAckFuture = ack;
            ack.await.expect("ack");
        }
        acks.push_back(
            js.send_publish(sre_contracts::domain::v1::IngestAlertRequested::SUBJECT, publish).await.expect("publish"),
        );
    }
    for ack in acks {
        ack.await.expect("ack");
    }
    (messages.len(), start.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("BENCH_ALERTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let nats = NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("ingress.yaml");
    std::fs::write(&config, "alertmanager_integration:\n  auto_create_incident:\n    enabled: false\nruntime:\n  telemetry:\n    log_level: warn\n")
        .expect("config");
    let mut ingress = ServiceProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_alertmanager-ingress")),
        &["--config", config.to_str().expect("utf-8")],
        &[("NATS_URL", &nats.url())],
    )
    .expect("ingress");
    ingress.wait_for_status("/readyz", 200, Duration::from_secs(20)).expect("ready");
    let idle_rss = ingress.peak_rss_bytes().unwrap_or(0);
    let am = Alertmanager::start("route:\n  receiver: none\nreceivers:\n  - name: none\n").expect("alertmanager");
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("client"));
    let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(CONCURRENCY).build_http();
    let webhook_url = format!("http://127.0.0.1:{}/webhooks/alertmanager", ingress.port());
    let am_url = format!("{}/api/v2/alerts", am.url());

    println!(
        "alertmanager-ingress benchmark: {total} alerts per case, {CONCURRENCY} concurrent requests, {} cores",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "{:<6} {:>13} {:>13} {:>13} {:>7} {:>7} {:>14} {:>14}",
        "group", "ingress al/s", "raw JS msg/s", "AM api al/s", "vs raw", "vs AM", "ingress CPU/al", "nats CPU/al"
    );
    let ingress_pid = ingress.pid().expect("ingress runs");
    let nats_pid = nats.pid().expect("nats runs");
    let cpu = |pid| sre_testkit::cpu_time(pid).unwrap_or_default();
    let mut largest_groups = (0.0, 0.0);
    for (run, group) in [1usize, 10, 100].into_iter().enumerate() {
        // Warm-up of connections and code paths, not counted.
        let _ = post_all(&client, &webhook_url, webhooks(200, group, &format!("warm{run}"))).await;
        let before = stream_messages(&js).await;
        let (ingress_cpu0, nats_cpu0) = (cpu(ingress_pid), cpu(nats_pid));
        let elapsed = post_all(&client, &webhook_url, webhooks(total, group, &format!("ingress{run}"))).await;
        let stored = stream_messages(&js).await - before;
        assert_eq!(stored as usize, total, "every alert stored once");
        let ingress_rate = total as f64 / elapsed.as_secs_f64();
        let per_alert = |d: Duration| d.as_secs_f64() * 1e6 / total as f64;
        let (ingress_cpu, nats_cpu) =
            (per_alert(cpu(ingress_pid) - ingress_cpu0), per_alert(cpu(nats_pid) - nats_cpu0));

        let (count, raw_elapsed) = raw_jetstream(&js, &webhooks(total, group, &format!("raw{run}"))).await;
        let raw_rate = count as f64 / raw_elapsed.as_secs_f64();

        let am_bodies: Vec<Bytes> = (0..total.div_ceil(group))
            .map(|g| {
                let alerts: Vec<_> = (g * group..((g + 1) * group).min(total))
                    .map(|i| {
                        let mut a = alert_json(i, &format!("am{run}"));
                        let o = a.as_object_mut().expect("object");
                        for k in ["status", "fingerprint", "endsAt"] {
                            o.remove(k);
                        }
                        a
                    })
                    .collect();
                Bytes::from(serde_json::Value::Array(alerts).to_string())
            })
            .collect();
        let am_elapsed = post_all(&client, &am_url, am_bodies).await;
        let am_rate = total as f64 / am_elapsed.as_secs_f64();
        println!(
            "{group:<6} {ingress_rate:>13.0} {raw_rate:>13.0} {am_rate:>13.0} {:>6.0}% {:>6.2}x {:>11.1} us {:>11.1} us",
            100.0 * ingress_rate / raw_rate,
            ingress_rate / am_rate,
            ingress_cpu,
            nats_cpu,
        );
        println!("       ingress peak RSS so far {:.1} MB", ingress.peak_rss_bytes().unwrap_or(0) as f64 / 1e6);
        largest_groups = (ingress_rate, raw_rate);
    }

    // Latency at a fixed, moderate rate: 1,000 alerts/s as 100 requests/s of 10 alerts.
    let bodies = webhooks(5_000, 10, "latency");
    let mut latencies = Vec::with_capacity(bodies.len());
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut pending = Vec::new();
    for body in bodies {
        tick.tick().await;
        let (client, url) = (client.clone(), webhook_url.clone());
        pending.push(tokio::spawn(async move {
            let start = Instant::now();
            let req = hyper::Request::post(&url)
                .header("content-type", "application/json")
                .body(Full::new(body))
                .expect("request");
            let resp = client.request(req).await.expect("response");
            assert!(resp.status().is_success());
            let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
            start.elapsed()
        }));
    }
    for p in pending {
        latencies.push(p.await.expect("request"));
    }
    latencies.sort();
    let peak_rss = ingress.peak_rss_bytes().unwrap_or(0);
    println!(
        "latency at 1000 alerts/s (groups of 10): p50 {:.2} ms, p99 {:.2} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );
    println!("ingress RSS: idle {:.1} MB, peak {:.1} MB", idle_rss as f64 / 1e6, peak_rss as f64 / 1e6);
    // One line for `cargo xtask bench`'s table (groups of 100 alerts).
    println!(
        "summary: rate={:.0} baseline={:.0} p50_ms={:.2} p99_ms={:.2} peak_rss_mb={:.1}",
        largest_groups.0,
        largest_groups.1,
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        peak_rss as f64 / 1e6
    );
}
