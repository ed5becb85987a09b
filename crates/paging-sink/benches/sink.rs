//! Per-fact overhead of paging-sink beyond the vendor's own latency, measured in one run:
//!
//! - baseline: a bare JetStream pull consumer in this process that, per fact, POSTs the
//!   same trigger to the same test PagerDuty and acks: the bus and the vendor call alone;
//! - the release binary (KV claim, record update, resilience layer, metrics), 1 replica and
//!   then 2, against a test PagerDuty that answers at once.
//!
//! For each: latency from publishing `IncidentCreated` to the vendor receiving the trigger
//! at a steady 100 facts/s (p50, p99), throughput with every fact published at once, and
//! the sink's peak RSS. Prints a table; asserts nothing. `cargo bench -p paging-sink`
//! (env `BENCH_FACTS`, default 2000).
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use sre_contracts::BusMessage;
use sre_contracts::domain::v1::{IncidentCreated, Severity};
use sre_testkit::NatsServer;
use sre_testkit::bus::eventually;
use sre_testkit::pagerduty::FakePagerDuty;
use sre_testkit::service::ServiceProcess;

const ROUTING_KEY: &str = "R0UT1NGKEY0123456789ABCDEFGHIJKL";

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
            let due = start + Duration::from_secs_f64(n as f64 / f64::from(rate));
            tokio::time::sleep_until(due.into()).await;
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

/// Waits until the vendor has received `target` requests in all (each case adds one per
/// new incident), then pairs each sent fact with its trigger's arrival.
async fn latencies(pd: &FakePagerDuty, sent: &HashMap<String, Instant>, target: usize) -> Vec<Duration> {
    eventually("every fact paged", Duration::from_secs(300), || async { pd.requests() as usize >= target }).await;
    let events: HashMap<String, Instant> = pd.events().into_iter().map(|e| (e.dedup_key, e.at)).collect();
    let mut out: Vec<Duration> =
        sent.iter().filter_map(|(id, t)| events.get(id).map(|at| at.duration_since(*t))).collect();
    out.sort();
    out
}

/// The baseline: consume, POST the same trigger, ack.
async fn bare_consumer(js: async_nats::jetstream::Context, pd_url: String, stop: tokio_util::sync::CancellationToken) {
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
        let body = serde_json::json!({"routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": incident.incident_id,
            "payload": {"summary": incident.title, "source": incident.service, "severity": "critical"}});
        let req = hyper::Request::post(format!("{pd_url}/v2/enqueue"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        let _ = client.request(req).await;
        let _ = message.ack().await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total: usize = std::env::var("BENCH_FACTS").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let nats = NatsServer::start().expect("nats");
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("paging-sink.yaml");
    std::fs::write(
        &config,
        format!(
            "paging_integration:\n  pagerduty:\n    routing_key_ref: bench/pd\n    base_url: {}\n    events_per_minute: 10000000\n  \
             escalation:\n    high: immediate\nruntime:\n  telemetry:\n    log_level: warn\n",
            pd.url()
        ),
    )
    .expect("config");
    let spawn = |pod: &str| {
        let mut p = ServiceProcess::spawn(
            Path::new(env!("CARGO_BIN_EXE_paging-sink")),
            &["--config", config.to_str().expect("utf-8")],
            &[("NATS_URL", &nats.url()), ("POD_NAME", pod), ("SECRET_BENCH_PD_ROUTING_KEY", ROUTING_KEY)],
        )
        .expect("spawns");
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
    let baseline = tokio::spawn(bare_consumer(js.clone(), pd.url().to_owned(), stop.clone()));
    let base_lat = latencies(&pd, &publish(&js, &ids("base", total), Some(100)).await, total).await;
    let t = Instant::now();
    let _ = latencies(&pd, &publish(&js, &ids("base-burst", total), None).await, 2 * total).await;
    let base_rate = total as f64 / t.elapsed().as_secs_f64();
    stop.cancel();
    let _ = baseline.await;
    let facts = js.get_stream(sre_contracts::streams::FACTS).await.expect("stream");
    facts.delete_consumer("bench-baseline").await.expect("baseline consumer removed");
    // The sink's durable consumer exists since its first start: clear what the baseline
    // consumed, so the sink starts from an empty backlog as the baseline did.
    facts.purge().await.expect("purged");

    let one = spawn("bench-1");
    let sink_lat = latencies(&pd, &publish(&js, &ids("sink", total), Some(100)).await, 3 * total).await;
    let t = Instant::now();
    let _ = latencies(&pd, &publish(&js, &ids("sink-burst", total), None).await, 4 * total).await;
    let one_rate = total as f64 / t.elapsed().as_secs_f64();
    let two = spawn("bench-2");
    let t = Instant::now();
    let _ = latencies(&pd, &publish(&js, &ids("sink-burst2", total), None).await, 5 * total).await;
    let two_rate = total as f64 / t.elapsed().as_secs_f64();
    let peak = one.peak_rss_bytes().unwrap_or(0).max(two.peak_rss_bytes().unwrap_or(0)) as f64 / 1e6;
    let pages = pd.alerts().len();

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (b50, b99, s50, s99) = (
        percentile(&base_lat, 0.5),
        percentile(&base_lat, 0.99),
        percentile(&sink_lat, 0.5),
        percentile(&sink_lat, 0.99),
    );
    println!(
        "paging-sink benchmark: {total} facts per case, {} cores",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!("| measure | bare consumer (baseline) | paging-sink | overhead |");
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
    println!("pages: {pages} for {} incidents (each paged once)", 5 * total);
}
