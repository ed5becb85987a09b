//! Per-fact overhead of paging-sink beyond the vendor's own latency, against a bare
//! JetStream consumer sending the same trigger to the same test PagerDuty, in one run
//! (`sre_testkit::sink_bench` says how). `cargo bench -p paging-sink` (env `BENCH_FACTS`,
//! default 2000).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use sre_contracts::domain::v1::IncidentCreated;
use sre_testkit::pagerduty::FakePagerDuty;
use sre_testkit::sink_bench::{BenchVendor, SinkBench, facts_per_case, run};
use tokio::time::Instant;

const ROUTING_KEY: &str = "R0UT1NGKEY0123456789ABCDEFGHIJKL";

/// The test PagerDuty: a page per incident, its dedup key the incident id.
struct PagerDuty(FakePagerDuty);

impl BenchVendor for PagerDuty {
    fn held(&self) -> usize {
        usize::try_from(self.0.requests()).unwrap_or(usize::MAX)
    }

    fn arrivals(&self) -> HashMap<String, Instant> {
        let mut first = HashMap::new();
        for e in self.0.events() {
            first.entry(e.dedup_key).or_insert(e.at);
        }
        first
    }

    fn request(&self, incident: &IncidentCreated) -> hyper::Request<Full<Bytes>> {
        let body = serde_json::json!({"routing_key": ROUTING_KEY, "event_action": "trigger", "dedup_key": incident.incident_id,
            "payload": {"summary": incident.title, "source": incident.service, "severity": "critical"}});
        hyper::Request::post(format!("{}/v2/enqueue", self.0.url()))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request")
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let config = format!(
        "paging_integration:\n  pagerduty:\n    routing_key_ref: bench/pd\n    base_url: {}\n    events_per_minute: 10000000\n  \
         escalation:\n    high: immediate\nruntime:\n  telemetry:\n    log_level: warn\n",
        pd.url()
    );
    let bench = SinkBench {
        name: "paging-sink",
        bin: Path::new(env!("CARGO_BIN_EXE_paging-sink")),
        config,
        env: vec![("SECRET_BENCH_PD_ROUTING_KEY", ROUTING_KEY)],
        unit: "pages",
    };
    run(bench, Arc::new(PagerDuty(pd)), facts_per_case()).await;
}
