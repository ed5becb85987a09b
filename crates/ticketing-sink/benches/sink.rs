//! Per-fact overhead of ticketing-sink beyond the vendor's own latency, against a bare
//! JetStream consumer sending the same create request to the same test Jira Data Center,
//! in one run (`sre_testkit::sink_bench` says how). `cargo bench -p ticketing-sink` (env
//! `BENCH_FACTS`, default 2000).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use sre_contracts::domain::v1::IncidentCreated;
use sre_testkit::jira::{FakeJira, Flavor};
use sre_testkit::sink_bench::{BenchVendor, SinkBench, facts_per_case, run};
use tokio::time::Instant;

const AUTH: &str = "Bearer bench-token";

/// The test Jira: a ticket per incident, found by its marker label.
struct Jira(FakeJira);

impl BenchVendor for Jira {
    fn held(&self) -> usize {
        self.0.issues().len()
    }

    fn arrivals(&self) -> HashMap<String, Instant> {
        self.0
            .issues()
            .into_iter()
            .filter_map(|i| {
                let id = i.labels.iter().find_map(|l| l.strip_prefix("sre-incident-").map(str::to_owned))?;
                Some((id, i.created))
            })
            .collect()
    }

    fn request(&self, incident: &IncidentCreated) -> hyper::Request<Full<Bytes>> {
        let body = serde_json::json!({"fields": {"project": {"key": "OPS"}, "issuetype": {"name": "Bug"},
            "summary": incident.title, "labels": ["sre-incident", format!("sre-incident-{}", incident.incident_id)],
            "description": incident.title}});
        hyper::Request::post(format!("{}/rest/api/2/issue", self.0.url()))
            .header("content-type", "application/json")
            .header("authorization", AUTH)
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request")
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let jira = FakeJira::start(Flavor::DataCenter, AUTH, &["OPS"]).await.expect("jira");
    let config = format!(
        "ticketing_integration:\n  jira:\n    base_url: {}\n    deployment: data_center\n    project_key: OPS\n    \
         secret_ref: bench/jira\n    priorities: {{}}\n    requests_per_minute: 10000000\nruntime:\n  telemetry:\n    log_level: warn\n",
        jira.url()
    );
    let bench = SinkBench {
        name: "ticketing-sink",
        bin: Path::new(env!("CARGO_BIN_EXE_ticketing-sink")),
        config,
        env: vec![("SECRET_BENCH_JIRA_TOKEN", "bench-token")],
        unit: "tickets",
    };
    run(bench, Arc::new(Jira(jira)), facts_per_case()).await;
}
