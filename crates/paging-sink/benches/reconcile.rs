//! One reconcile pass over 1,000 open PagerDuty pages, against the naive pass measured in
//! the same run: what it costs PagerDuty's REST API (requests, bytes read) and how long it
//! takes. The release binary, a real nats-server and the test PagerDuty.
//!
//! - naive: one `GET /incidents?incident_key=` per page, as a reconciler reading each page
//!   would (in this process, with no limit of its own);
//! - paging-sink: its pass (the open incidents and those resolved within a day, listed a
//!   hundred a request), through the configured limit of 120 requests a minute.
//!
//! Ten of the pages were acknowledged by a person (two-way sync on, the webhooks lost), so
//! the pass repairs ten. `cargo bench -p paging-sink --bench reconcile` (env `BENCH_PAGES`,
//! default 1000). Prints a table and a `reconcile:` line; asserts nothing.
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::time::Duration;

use prost::Message;
use sre_contracts::BusMessage;
use sre_contracts::domain::v1::{IncidentCreated, Severity};
use sre_testkit::NatsServer;
use sre_testkit::bus::{eventually, publish};
use sre_testkit::pagerduty::{FakePagerDuty, REST_KEY};
use sre_testkit::service::ServiceProcess;
use tokio::time::Instant;

const ROUTING_KEY: &str = "R0UT1NGKEY0123456789ABCDEFGHIJKL";
const LIMIT: usize = 120;
const ACKNOWLEDGED: usize = 10;

fn config(pd: &FakePagerDuty, per_minute: usize, reconcile: &str) -> String {
    format!(
        "paging_integration:\n  pagerduty:\n    routing_key_ref: bench/pd\n    base_url: {url}\n    \
         events_per_minute: {per_minute}\n    api_key_ref: bench/rest\n    from: bench@example.com\n    api_url: {url}\n    \
         webhook: {{enabled: true, secret_refs: [bench/hook]}}\n  escalation: {{critical: immediate}}\n  \
         reconcile: {reconcile}\nruntime:\n  telemetry:\n    log_level: warn\n",
        url = pd.url()
    )
}

fn sink(nats: &NatsServer, dir: &Path, yaml: &str) -> ServiceProcess {
    let path = dir.join("paging-sink.yaml");
    std::fs::write(&path, yaml).expect("config");
    let url = nats.url();
    let mut p = ServiceProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_paging-sink")),
        &["--config", path.to_str().expect("utf-8")],
        &[
            ("NATS_URL", url.as_str()),
            ("SECRET_BENCH_PD_ROUTING_KEY", ROUTING_KEY),
            ("SECRET_BENCH_REST_API_KEY", REST_KEY),
            ("SECRET_BENCH_HOOK_SECRET", "bench-hook-secret"),
        ],
    )
    .expect("spawns");
    p.wait_for_status("/readyz", 200, Duration::from_secs(60)).expect("ready");
    p
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let pages: usize = std::env::var("BENCH_PAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let nats = NatsServer::start().expect("nats");
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let dir = tempfile::tempdir().expect("tempdir");

    // The pages, sent by the sink with no limit and no reconciler.
    let mut pager = sink(&nats, dir.path(), &config(&pd, 0, "{enabled: false}"));
    for i in 0..pages {
        let fact = IncidentCreated {
            incident_id: format!("inc-{i}"),
            title: format!("service {i}: error rate above 5%"),
            severity: Severity::Critical as i32,
            ..Default::default()
        };
        publish(&nats.url(), IncidentCreated::SUBJECT, &format!("created-{i}"), fact.encode_to_vec()).await;
    }
    eventually("every page", Duration::from_secs(300), || async { pd.alerts().len() >= pages }).await;
    pager.terminate(Duration::from_secs(30)).expect("stops");
    for i in 0..ACKNOWLEDGED {
        pd.acknowledge_as(&format!("inc-{i}"), "Grace Hopper");
    }

    // The naive pass: every page read by itself.
    let client = http::Client::new();
    let (lists, bytes) = pd.incident_lists();
    let started = Instant::now();
    for i in 0..pages {
        client.get(&format!("{}/incidents?incident_key=inc-{i}&date_range=all&limit=100", pd.url())).await;
    }
    let naive_time = started.elapsed();
    let (after, after_bytes) = pd.incident_lists();
    let naive = (naive_time, after - lists, after_bytes - bytes);

    // The sink's pass, through the configured limit.
    let (lists, bytes) = pd.incident_lists();
    let reconciler = sink(&nats, dir.path(), &config(&pd, LIMIT, "{interval: 2s}"));
    eventually("a complete pass", Duration::from_secs(300), || async {
        reconciler.metric("paging_sink_reconcile_last_complete_timestamp_seconds", &[]) > 0.0
    })
    .await;
    let (after, after_bytes) = pd.incident_lists();
    let pass = (
        Duration::from_secs_f64(reconciler.metric("paging_sink_reconcile_pass_seconds", &[])),
        after - lists,
        after_bytes - bytes,
    );
    let compared = reconciler.metric("paging_sink_reconcile_incidents", &[]);
    let repaired = reconciler.metric("paging_sink_reconcile_repairs_total{", &["kind=\"Acknowledged\""]);

    println!(
        "reconcile benchmark: one pass over {pages} open PagerDuty pages, {ACKNOWLEDGED} acknowledged by a person"
    );
    println!("| pass | requests | bytes read | time |");
    println!("|---|---|---|---|");
    println!("| naive: one GET per page (baseline) | {} | {} | {:.2} s |", naive.1, naive.2, naive.0.as_secs_f64());
    println!(
        "| paging-sink: open and recently resolved incidents, a hundred a request | {} | {} | {:.2} s |",
        pass.1,
        pass.2,
        pass.0.as_secs_f64()
    );
    println!(
        "compared {compared}, repaired {repaired}; at the configured {LIMIT} requests a minute the naive pass would \
         take {:.1} minutes",
        naive.1 as f64 / LIMIT as f64
    );
    println!(
        "reconcile: pages={pages} naive_requests={} naive_bytes={} naive_s={:.2} requests={} bytes={} s={:.2}",
        naive.1,
        naive.2,
        naive.0.as_secs_f64(),
        pass.1,
        pass.2,
        pass.0.as_secs_f64()
    );
}

/// The naive pass's client (hyper, as the rest of the workspace).
mod http {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client as Hyper;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    pub struct Client(Hyper<HttpConnector, Full<Bytes>>);

    impl Client {
        pub fn new() -> Self {
            Self(Hyper::builder(TokioExecutor::new()).build_http())
        }

        /// GETs `url` as PagerDuty's REST API wants it; the body's length (0 when it failed).
        pub async fn get(&self, url: &str) -> usize {
            let request = hyper::Request::get(url)
                .header("authorization", format!("Token token={}", sre_testkit::pagerduty::REST_KEY))
                .header("accept", "application/vnd.pagerduty+json;version=2")
                .body(Full::new(Bytes::new()))
                .expect("request");
            match self.0.request(request).await {
                Ok(answer) => answer.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0),
                Err(_) => 0,
            }
        }
    }
}
