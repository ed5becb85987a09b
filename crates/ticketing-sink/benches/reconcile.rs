//! One reconcile pass over 1,000 open tickets, against the naive pass measured in the same
//! run: what it costs the vendor (requests, bytes read) and how long it takes. The release
//! binary, a real nats-server and the test Jira Cloud, which enforces the configured
//! limit in every rolling minute (a refusal would show as `throttled`).
//!
//! - naive: one `GET /issue/{key}` per ticket, as a reconciler reading each ticket would
//!   (in this process, with no limit of its own);
//! - ticketing-sink: its pass (searches by key, fifty a request, and a confirming read per
//!   difference), through the account's limit of 300 requests a minute.
//!
//! Ten of the tickets were resolved by a person (two-way sync on, the webhooks lost), so
//! the pass repairs ten. `cargo bench -p ticketing-sink --bench reconcile` (env
//! `BENCH_TICKETS`, default 1000). Prints a table and a `reconcile:` line; asserts nothing.
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::time::Duration;

use prost::Message;
use sre_contracts::BusMessage;
use sre_contracts::domain::v1::{IncidentCreated, Severity};
use sre_testkit::NatsServer;
use sre_testkit::bus::{eventually, publish};
use sre_testkit::jira::{FakeJira, Flavor};
use sre_testkit::service::ServiceProcess;
use tokio::time::Instant;

const EMAIL: &str = "bench@example.com";
const TOKEN: &str = "bench-token";
const LIMIT: usize = 300;
const PERSON_RESOLVED: usize = 10;

fn basic() -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{EMAIL}:{TOKEN}")))
}

fn config(jira: &FakeJira, per_minute: usize, reconcile: &str) -> String {
    format!(
        "ticketing_integration:\n  jira:\n    base_url: {}\n    deployment: cloud\n    project_key: OPS\n    \
         secret_ref: bench/jira\n    requests_per_minute: {per_minute}\n    \
         webhook: {{enabled: true, secret_refs: [bench/hook]}}\n  reconcile: {reconcile}\n  comment_acknowledged: false\n\
         runtime:\n  telemetry:\n    log_level: warn\n",
        jira.url()
    )
}

fn sink(nats: &NatsServer, dir: &Path, yaml: &str) -> ServiceProcess {
    let path = dir.join("ticketing-sink.yaml");
    std::fs::write(&path, yaml).expect("config");
    let url = nats.url();
    let mut p = ServiceProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_ticketing-sink")),
        &["--config", path.to_str().expect("utf-8")],
        &[
            ("NATS_URL", url.as_str()),
            ("SECRET_BENCH_JIRA_TOKEN", TOKEN),
            ("SECRET_BENCH_JIRA_EMAIL", EMAIL),
            ("SECRET_BENCH_HOOK_SECRET", "bench-hook-secret"),
        ],
    )
    .expect("spawns");
    p.wait_for_status("/readyz", 200, Duration::from_secs(60)).expect("ready");
    p
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tickets: usize = std::env::var("BENCH_TICKETS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let nats = NatsServer::start().expect("nats");
    let jira = FakeJira::start(Flavor::Cloud, &basic(), &["OPS"]).await.expect("jira");
    let dir = tempfile::tempdir().expect("tempdir");

    // The tickets, made by the sink with no limit and no reconciler.
    let mut maker = sink(&nats, dir.path(), &config(&jira, 0, "{enabled: false}"));
    for i in 0..tickets {
        let fact = IncidentCreated {
            incident_id: format!("inc-{i}"),
            title: format!("service {i}: error rate above 5%"),
            severity: Severity::Critical as i32,
            ..Default::default()
        };
        publish(&nats.url(), IncidentCreated::SUBJECT, &format!("created-{i}"), fact.encode_to_vec()).await;
    }
    eventually("every ticket", Duration::from_secs(300), || async { jira.issues().len() >= tickets }).await;
    maker.terminate(Duration::from_secs(30)).expect("stops");
    for issue in jira.issues().iter().take(PERSON_RESOLVED) {
        jira.transition_as(&issue.key, "Resolved", "Grace Hopper");
    }

    // The naive pass: every ticket read by itself.
    let keys: Vec<String> = jira.issues().into_iter().map(|i| i.key).collect();
    let client = http::Client::new();
    let (reads, bytes) = (jira.reads(), jira.read_bytes());
    let started = Instant::now();
    for key in &keys {
        client.get(&format!("{}/rest/api/3/issue/{key}?fields=status,resolution", jira.url()), &basic()).await;
    }
    let naive = (started.elapsed(), jira.reads() - reads, jira.read_bytes() - bytes);

    // The sink's pass, through the account's limit, which the test Jira enforces from here.
    jira.set_rate_limit(LIMIT);
    let limited_from = Instant::now();
    let (reads, bytes) = (jira.reads(), jira.read_bytes());
    let reconciler = sink(&nats, dir.path(), &config(&jira, LIMIT, "{interval: 2s}"));
    eventually("a complete pass", Duration::from_secs(300), || async {
        reconciler.metric("ticketing_sink_reconcile_last_complete_timestamp_seconds", &[]) > 0.0
    })
    .await;
    let pass = (
        Duration::from_secs_f64(reconciler.metric("ticketing_sink_reconcile_pass_seconds", &[])),
        jira.reads() - reads,
        jira.read_bytes() - bytes,
    );
    let compared = reconciler.metric("ticketing_sink_reconcile_incidents", &[]);
    let repaired = reconciler.metric("ticketing_sink_reconcile_repairs_total{", &["kind=\"Resolved\""]);
    let times: Vec<Instant> = jira.call_times().into_iter().filter(|t| *t >= limited_from).collect();
    let busiest = (0..times.len())
        .map(|i| times[i..].iter().take_while(|t| **t < times[i] + Duration::from_secs(60)).count())
        .max()
        .unwrap_or(0);
    let throttled = jira.throttled();

    println!(
        "reconcile benchmark: one pass over {tickets} open Jira Cloud tickets, {PERSON_RESOLVED} resolved by a person"
    );
    println!("| pass | requests | bytes read | time |");
    println!("|---|---|---|---|");
    println!("| naive: one GET per ticket (baseline) | {} | {} | {:.2} s |", naive.1, naive.2, naive.0.as_secs_f64());
    println!(
        "| ticketing-sink: search by key, 50 a request, confirm each difference | {} | {} | {:.2} s |",
        pass.1,
        pass.2,
        pass.0.as_secs_f64()
    );
    println!(
        "compared {compared}, repaired {repaired}; the account's limit {LIMIT}/min: busiest rolling minute {busiest} \
         requests from the sink (its start-up check included), {throttled} refused; the naive pass would take {:.1} \
         minutes of that budget",
        naive.1 as f64 / LIMIT as f64
    );
    println!(
        "reconcile: tickets={tickets} naive_requests={} naive_bytes={} naive_s={:.2} requests={} bytes={} s={:.2} busiest_minute={busiest} throttled={throttled}",
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

        /// GETs `url` with `authorization`; the body's length (0 when it failed).
        pub async fn get(&self, url: &str, authorization: &str) -> usize {
            let request = hyper::Request::get(url)
                .header("authorization", authorization)
                .body(Full::new(Bytes::new()))
                .expect("request");
            match self.0.request(request).await {
                Ok(answer) => answer.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0),
                Err(_) => 0,
            }
        }
    }
}
