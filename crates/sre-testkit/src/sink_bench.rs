//! The fact sinks' benchmark, once: the per-fact overhead of a sink beyond the vendor's own
//! latency, measured in one run against a baseline.
//!
//! - baseline: a bare JetStream pull consumer in this process that, per fact, sends the same
//!   request to the same test vendor and acks: the bus and the vendor call alone;
//! - the sink's release binary (claim, record, resilience layer, metrics), 1 replica and
//!   then 2, against the same test vendor, which answers at once.
//!
//! For each: latency from publishing `IncidentCreated` to the vendor holding its effect at a
//! steady 100 facts/s (p50, p99), throughput with every fact published at once, and the
//! sink's peak RSS. Prints a table and one `summary:` line for `cargo xtask bench`; asserts
//! nothing. Each sink's `benches/sink.rs` says what its vendor is.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use sre_contracts::BusMessage;
use sre_contracts::domain::v1::{IncidentCreated, Severity};
use tokio::time::Instant;

use crate::NatsServer;
use crate::bus::eventually;
use crate::service::ServiceProcess;

/// The test vendor a sink benchmark runs against.
pub trait BenchVendor: Send + Sync + 'static {
    /// How many effects the vendor holds (or requests it took, one per effect): polled
    /// while a case runs, so it must be cheap (the sink shares the 2 cores with it).
    fn held(&self) -> usize;
    /// When the vendor first held each incident's effect (a page, a ticket), by incident id.
    fn arrivals(&self) -> HashMap<String, Instant>;
    /// The request the sink would send for `incident`, for the baseline to send.
    fn request(&self, incident: &IncidentCreated) -> hyper::Request<Full<Bytes>>;
}

/// One sink's benchmark.
#[derive(Debug)]
pub struct SinkBench<'a> {
    /// The sink's name (`paging-sink`).
    pub name: &'static str,
    /// Its release binary.
    pub bin: &'a Path,
    /// Its configuration, pointing at the vendor.
    pub config: String,
    /// Its environment (the secrets the configuration names).
    pub env: Vec<(&'static str, &'static str)>,
    /// What the vendor holds, for the closing line (`pages`, `tickets`).
    pub unit: &'static str,
}

fn fact(id: &str) -> Vec<u8> {
    IncidentCreated {
        incident_id: id.to_owned(),
        title: "checkout-api: error rate above 5%".into(),
        severity: Severity::Critical as i32,
        service: "checkout-api".into(),
        environment: "production".into(),
        ..Default::default()
    }
    .encode_to_vec()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted.get(((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or_default()
}

/// Publishes `ids` (at `rate` per second, or all at once) and returns when each was sent.
async fn publish(js: &async_nats::jetstream::Context, ids: &[String], rate: Option<u32>) -> HashMap<String, Instant> {
    let mut sent = HashMap::new();
    let start = Instant::now();
    let mut acks = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        if let Some(rate) = rate {
            tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / f64::from(rate))).await;
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(sre_contracts::headers::MSG_ID, id.as_str());
        sent.insert(id.clone(), Instant::now());
        acks.push(js.publish_with_headers(IncidentCreated::SUBJECT, headers, fact(id).into()).await.expect("publish"));
    }
    for ack in acks {
        ack.await.expect("stored");
    }
    sent
}

/// Waits until the vendor holds `target` incidents in all (each case adds one per new
/// incident), then pairs each sent fact with its effect's arrival.
async fn latencies(vendor: &dyn BenchVendor, sent: &HashMap<String, Instant>, target: usize) -> Vec<Duration> {
    eventually("every fact's effect at the vendor", Duration::from_secs(300), || async { vendor.held() >= target })
        .await;
    let arrivals = vendor.arrivals();
    let mut out: Vec<Duration> =
        sent.iter().filter_map(|(id, t)| arrivals.get(id).map(|at| at.duration_since(*t))).collect();
    out.sort();
    out
}

/// The baseline: consume, send the same request, ack.
async fn bare_consumer(
    js: async_nats::jetstream::Context,
    vendor: std::sync::Arc<dyn BenchVendor>,
    stop: tokio_util::sync::CancellationToken,
) {
    let stream = js.get_stream(sre_contracts::streams::FACTS).await.expect("facts stream");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("bench-baseline".into()),
            filter_subject: IncidentCreated::SUBJECT.into(),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut messages = consumer.messages().await.expect("messages");
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            m = messages.next() => m,
        };
        let Some(Ok(message)) = next else { return };
        let incident = IncidentCreated::decode(message.payload.clone()).expect("fact");
        let _ = client.request(vendor.request(&incident)).await;
        let _ = message.ack().await;
    }
}

/// Runs `bench` against `vendor` with `total` facts per case and prints the figures.
pub async fn run(bench: SinkBench<'_>, vendor: std::sync::Arc<dyn BenchVendor>, total: usize) {
    let nats = NatsServer::start().expect("nats");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join(format!("{}.yaml", bench.name));
    std::fs::write(&config, &bench.config).expect("config");
    let spawn = |pod: &str| {
        let mut env: Vec<(&str, &str)> = bench.env.clone();
        let url = nats.url();
        env.extend([("NATS_URL", url.as_str()), ("POD_NAME", pod)]);
        let mut p =
            ServiceProcess::spawn(bench.bin, &["--config", config.to_str().expect("utf-8")], &env).expect("spawns");
        p.wait_for_status("/readyz", 200, Duration::from_secs(30)).expect("ready");
        p
    };
    // The first sink creates the streams; the baseline runs while it is stopped.
    let mut first = spawn("bench-0");
    let idle_rss = first.peak_rss_bytes().unwrap_or(0) as f64 / 1e6;
    let _ = first.terminate(Duration::from_secs(30));
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("client"));
    let ids = |tag: &str, n: usize| -> Vec<String> { (0..n).map(|i| format!("{tag}-{i:06}")).collect() };

    let stop = tokio_util::sync::CancellationToken::new();
    let baseline = tokio::spawn(bare_consumer(js.clone(), vendor.clone(), stop.clone()));
    let v = vendor.as_ref();
    let base_lat = latencies(v, &publish(&js, &ids("base", total), Some(100)).await, total).await;
    let t = Instant::now();
    let _ = latencies(v, &publish(&js, &ids("base-burst", total), None).await, 2 * total).await;
    let base_rate = total as f64 / t.elapsed().as_secs_f64();
    stop.cancel();
    let _ = baseline.await;
    let facts = js.get_stream(sre_contracts::streams::FACTS).await.expect("stream");
    facts.delete_consumer("bench-baseline").await.expect("baseline consumer removed");
    // The sink's durable consumer exists since its first start: clear what the baseline
    // consumed, so the sink starts from an empty backlog as the baseline did.
    facts.purge().await.expect("purged");

    let one = spawn("bench-1");
    let sink_lat = latencies(v, &publish(&js, &ids("sink", total), Some(100)).await, 3 * total).await;
    let t = Instant::now();
    let _ = latencies(v, &publish(&js, &ids("sink-burst", total), None).await, 4 * total).await;
    let one_rate = total as f64 / t.elapsed().as_secs_f64();
    let two = spawn("bench-2");
    let t = Instant::now();
    let _ = latencies(v, &publish(&js, &ids("sink-burst2", total), None).await, 5 * total).await;
    let two_rate = total as f64 / t.elapsed().as_secs_f64();
    let peak = one.peak_rss_bytes().unwrap_or(0).max(two.peak_rss_bytes().unwrap_or(0)) as f64 / 1e6;
    let held = vendor.held();

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (b50, b99, s50, s99) = (
        percentile(&base_lat, 0.5),
        percentile(&base_lat, 0.99),
        percentile(&sink_lat, 0.5),
        percentile(&sink_lat, 0.99),
    );
    let name = bench.name;
    println!(
        "{name} benchmark: {total} facts per case, {} cores",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!("| measure | bare consumer (baseline) | {name} | overhead |");
    println!("|---|---|---|---|");
    println!(
        "| publish → vendor, p50 at 100/s | {:.2} ms | {:.2} ms | {:.2} ms |",
        ms(b50),
        ms(s50),
        ms(s50) - ms(b50)
    );
    println!(
        "| publish → vendor, p99 at 100/s | {:.2} ms | {:.2} ms | {:.2} ms |",
        ms(b99),
        ms(s99),
        ms(s99) - ms(b99)
    );
    println!(
        "| facts/s, all published at once | {base_rate:.0} | {one_rate:.0} (1 replica), {two_rate:.0} (2 replicas) | |"
    );
    println!("| RSS idle / peak | | {idle_rss:.1} MB / {peak:.1} MB | |");
    // One line for `cargo xtask bench`'s table.
    println!(
        "summary: rate={one_rate:.0} baseline={base_rate:.0} p50_ms={:.2} p99_ms={:.2} base_p50_ms={:.2} base_p99_ms={:.2} peak_rss_mb={peak:.1}",
        ms(s50),
        ms(s99),
        ms(b50),
        ms(b99)
    );
    println!("{}: {held} for {} incidents (one each)", bench.unit, 5 * total);
}

/// `BENCH_FACTS`, default 2000: facts per case.
pub fn facts_per_case() -> usize {
    std::env::var("BENCH_FACTS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
}
