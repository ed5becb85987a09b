//! The real ticketing-sink binary with a real nats-server and the test Jira (Cloud and
//! Data Center) and GitHub: facts in, what the trackers hold out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use prost::Message;
use sre_contracts::domain::v1::{IncidentAcknowledged, IncidentClosed, IncidentCreated, IncidentResolved, Severity};
use sre_contracts::{BusMessage, headers, streams};
use sre_testkit::NatsServer;
use sre_testkit::bus::{eventually, publish, stream_records};
use sre_testkit::github::{FakeGithub, Fault};
use sre_testkit::jira::{FakeJira, Flavor};
use sre_testkit::service::ServiceProcess;

pub(crate) const WAIT: Duration = Duration::from_secs(40);
pub(crate) const JIRA_TOKEN: &str = "ATATT3xFfGF0-jira-token";
pub(crate) const JIRA_EMAIL: &str = "sre-bot@example.com";
pub(crate) const GITHUB_TOKEN: &str = "ghs_16C7e42F292c6912E7710c838347Ae178B4a";

pub(crate) fn basic() -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{JIRA_EMAIL}:{JIRA_TOKEN}")))
}

pub(crate) struct Stack {
    pub(crate) nats: NatsServer,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

pub(crate) fn stack(yaml: &str) -> Stack {
    stack_on(NatsServer::start().expect("nats"), yaml)
}

/// As [`stack`], on `nats`.
pub(crate) fn stack_on(nats: NatsServer, yaml: &str) -> Stack {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("ticketing-sink.yaml");
    std::fs::write(&config, yaml).expect("config");
    Stack { nats, _dir: dir, config }
}

impl Stack {
    pub(crate) fn sink(&self, pod: &str) -> ServiceProcess {
        let mut p = ServiceProcess::spawn(
            Path::new(env!("CARGO_BIN_EXE_ticketing-sink")),
            &["--config", self.config.to_str().expect("utf-8")],
            &[
                ("NATS_URL", &self.nats.url()),
                ("POD_NAME", pod),
                ("SECRET_PLATFORM_JIRA_TOKEN", JIRA_TOKEN),
                ("SECRET_PLATFORM_JIRA_EMAIL", JIRA_EMAIL),
                ("SECRET_PLATFORM_GITHUB_TOKEN", GITHUB_TOKEN),
            ],
        )
        .expect("spawns");
        p.wait_for_status("/readyz", 200, WAIT).expect("ready");
        p
    }

    pub(crate) async fn created(&self, id: &str, service: &str, msg_id: &str) {
        let fact = IncidentCreated {
            incident_id: id.into(),
            title: format!("{service}: error rate above 5%"),
            description: "Error rate of checkout requests is 7.2% (threshold 5%).".into(),
            severity: Severity::Critical as i32,
            service: service.into(),
            environment: "production".into(),
            team: "payments".into(),
            runbook_url: "https://runbooks.example.com/errors".into(),
            ..Default::default()
        };
        publish(&self.nats.url(), IncidentCreated::SUBJECT, msg_id, fact.encode_to_vec()).await;
    }

    async fn acknowledged(&self, id: &str, by: &str, msg_id: &str) {
        let fact = IncidentAcknowledged { incident_id: id.into(), by: by.into(), ..Default::default() };
        publish(&self.nats.url(), IncidentAcknowledged::SUBJECT, msg_id, fact.encode_to_vec()).await;
    }

    pub(crate) async fn resolved(&self, id: &str) {
        let fact = IncidentResolved {
            incident_id: id.into(),
            by: "auto".into(),
            reason: "alerts resolved".into(),
            ..Default::default()
        };
        publish(&self.nats.url(), IncidentResolved::SUBJECT, &format!("resolve-{id}"), fact.encode_to_vec()).await;
    }

    async fn closed(&self, id: &str) {
        let fact = IncidentClosed {
            incident_id: id.into(),
            by: "alice".into(),
            reason: "postmortem done".into(),
            ..Default::default()
        };
        publish(&self.nats.url(), IncidentClosed::SUBJECT, &format!("close-{id}"), fact.encode_to_vec()).await;
    }
}

pub(crate) fn jira_config(jira: &FakeJira, deployment: &str) -> String {
    format!(
        "ticketing_integration:\n  default_provider: jira\n  jira:\n    base_url: {}\n    deployment: {deployment}\n    \
         project_key: OPS\n    secret_ref: platform/jira\n  routes:\n    - match: {{service: payments-api}}\n      project_key: PAY\n    \
         - match: {{service: legacy}}\n      project_key: NOPE\n",
        jira.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jira_cloud_ticket_is_created_once_resolved_and_closed_and_routed_by_service() {
    let jira = FakeJira::start(Flavor::Cloud, &basic(), &["OPS", "PAY"]).await.expect("jira");
    let s = stack(&jira_config(&jira, "cloud"));
    let sink = s.sink("ticketing-0");

    s.created("inc-1", "checkout-api", "f-1").await;
    s.created("inc-1", "checkout-api", "f-1-again").await; // the same fact twice
    s.created("inc-2", "payments-api", "f-2").await;
    eventually("two tickets", WAIT, || async { jira.issues().len() >= 2 }).await;
    eventually("every fact handled", WAIT, || async { sink.metric("sre_bus_facts_handled_total", &["Acked"]) >= 3.0 })
        .await;
    let issues = jira.issues();
    assert_eq!(issues.len(), 2, "one ticket per incident: {issues:?}");
    let ops = issues.iter().find(|i| i.project == "OPS").expect("OPS ticket");
    let pay = issues.iter().find(|i| i.project == "PAY").expect("routed to PAY");
    assert_eq!(ops.summary, "[critical] checkout-api: error rate above 5%");
    assert!(pay.summary.contains("payments-api"));
    assert_eq!(ops.fields["description"]["type"], "doc", "Cloud descriptions are ADF");
    assert_eq!(ops.fields["priority"]["name"], "Highest");
    assert!(ops.labels.contains(&"sre-incident-inc-1".to_owned()), "the marker: {:?}", ops.labels);

    s.resolved("inc-1").await;
    eventually("resolved", WAIT, || async { jira.issues().iter().any(|i| i.key == ops.key && i.status == "Resolved") })
        .await;
    s.closed("inc-1").await;
    eventually("closed", WAIT, || async { jira.issues().iter().any(|i| i.key == ops.key && i.status == "Closed") })
        .await;
    let ops = jira.issues().into_iter().find(|i| i.key == ops.key).expect("ticket");
    assert_eq!(ops.comments.len(), 2, "one comment each for resolve and close");
    assert_eq!(ops.comments[0]["type"], "doc");
    assert!(ops.comments[0].to_string().contains("alerts resolved"));
    assert_eq!(jira.issues().len(), 2);
    assert!(!sink.logs().contains(JIRA_TOKEN), "the token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jira_data_center_uses_v2_wiki_text_and_bearer() {
    let jira = FakeJira::start(Flavor::DataCenter, &format!("Bearer {JIRA_TOKEN}"), &["OPS"]).await.expect("jira");
    let s = stack(&jira_config(&jira, "data_center"));
    let _sink = s.sink("ticketing-0");
    s.created("inc-dc", "checkout-api", "f-dc").await;
    eventually("ticket", WAIT, || async { jira.issues().len() == 1 }).await;
    assert!(
        jira.issues()[0].fields["description"].as_str().is_some_and(|d| d.contains("Incident: inc-dc")),
        "wiki text"
    );
    s.resolved("inc-dc").await;
    s.closed("inc-dc").await;
    eventually("closed", WAIT, || async { jira.issues()[0].status == "Closed" }).await;
    assert!(jira.issues()[0].comments.iter().all(serde_json::Value::is_string));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolve_before_its_ticket_waits_and_a_refused_ticket_is_dead_lettered() {
    let jira = FakeJira::start(Flavor::Cloud, &basic(), &["OPS"]).await.expect("jira");
    let s = stack(&jira_config(&jira, "cloud"));
    let sink = s.sink("ticketing-0");

    s.resolved("inc-early").await;
    eventually("the resolve waits", WAIT, || async { sink.metric("ticketing_sink_facts_total", &["Waiting"]) >= 1.0 })
        .await;
    s.created("inc-early", "checkout-api", "f-early").await;
    eventually("created, then resolved", WAIT, || async {
        jira.issues().first().is_some_and(|i| i.status == "Resolved")
    })
    .await;

    // Project NOPE does not exist: Jira answers 400, which no retry fixes.
    s.created("inc-nope", "legacy", "f-nope").await;
    eventually("dead-lettered", WAIT, || async {
        !stream_records(&s.nats.url(), streams::DEAD_LETTER).await.is_empty()
    })
    .await;
    let dead = stream_records(&s.nats.url(), streams::DEAD_LETTER).await;
    let reason = dead[0].1.get(headers::DEAD_LETTER_REASON).map(|v| v.to_string()).unwrap_or_default();
    assert!(reason.contains("400") && reason.contains("valid project is required"), "{reason}");
    assert_eq!(IncidentCreated::decode(dead[0].2.clone()).expect("original fact").incident_id, "inc-nope");
    assert_eq!(jira.issues().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_a_5xx_storm_delay_tickets_but_lose_none() {
    let jira = FakeJira::start(Flavor::Cloud, &basic(), &["OPS"]).await.expect("jira");
    let s = stack(&jira_config(&jira, "cloud"));
    let sink = s.sink("ticketing-0");

    jira.fail_next(&[(429, Some(1))]);
    s.created("inc-429", "checkout-api", "f-429").await;
    eventually("created after the 429", WAIT, || async { jira.issues().len() == 1 }).await;

    // Six 503s in a row: retries run out, the breaker opens after five (readiness says
    // so), its first probe fails and it stays open longer; the facts wait on the bus, and
    // every ticket is created once the storm passes.
    jira.fail_next(&[(503, None); 6]);
    for i in 0..3 {
        s.created(&format!("inc-storm-{i}"), "checkout-api", &format!("f-storm-{i}")).await;
    }
    eventually("the breaker opens", WAIT, || async {
        sink.get("/readyz").is_some_and(|(code, body)| code == 503 && body.contains("circuit open"))
    })
    .await;
    // …and the metric an alert reads says so (2: open), then 0 once it closes.
    let breaker = |value: &'static str| {
        let line = format!("sre_upstream_breaker_state{{upstream=\"jira\"}} {value}");
        move |(_, body): (u16, String)| body.lines().any(|l| l == line)
    };
    eventually("sre_upstream_breaker_state shows the breaker open", WAIT, || async {
        sink.get("/metrics").is_some_and(breaker("2"))
    })
    .await;
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        while jira.issues().len() < 4 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(done.is_ok(), "every ticket after the storm: {} of 4\n{}", jira.issues().len(), sink.logs());
    eventually("ready again", WAIT, || async { sink.get("/readyz").is_some_and(|(code, _)| code == 200) }).await;
    eventually("the breaker metric closed again", WAIT, || async { sink.get("/metrics").is_some_and(breaker("0")) })
        .await;
    // Nothing waits on the consumer any more: lag and redeliveries back to zero.
    eventually("consumer lag and redeliveries read zero", WAIT, || async {
        sink.get("/metrics").is_some_and(|(_, body)| {
            [
                "sre_bus_consumer_pending_facts 0",
                "sre_bus_consumer_ack_pending_facts 0",
                "sre_bus_consumer_redelivered_facts 0",
            ]
            .iter()
            .all(|want| body.lines().any(|l| l == *want))
        })
    })
    .await;
    let mut keys: Vec<String> =
        jira.issues().iter().flat_map(|i| i.labels.clone()).filter(|l| l.starts_with("sre-incident-")).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 4, "one ticket each, none twice: {:?}", jira.issues());
    assert!(stream_records(&s.nats.url(), streams::DEAD_LETTER).await.is_empty(), "nothing dead-lettered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_creating_and_recording_is_recovered_by_the_marker() {
    let jira = FakeJira::start(Flavor::Cloud, &basic(), &["OPS"]).await.expect("jira");
    let s = stack(&jira_config(&jira, "cloud"));
    let _sink = s.sink("ticketing-0");

    // What a crash leaves: the ticket exists at Jira with the incident's marker, and the
    // mapping is still the claim, written two minutes ago by the replica that died.
    let key =
        jira.seed("OPS", "[critical] checkout-api: error rate above 5%", &["sre-incident", "sre-incident-inc-crash"]);
    let claimed = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(2);
    let record = serde_json::json!({"incident_id": "inc-crash", "state": "claimed",
        "target": {"provider": "jira", "route": "default", "project": "OPS"},
        "claimed_at": claimed.to_string(), "updated_at": claimed.to_string()});
    let js = async_nats::jetstream::new(async_nats::connect(s.nats.url()).await.expect("client"));
    let kv = js.get_key_value("sre_ticketing_sink_tickets").await.expect("bucket");
    kv.put("ticket.inc-crash", record.to_string().into()).await.expect("claim");

    // The fact is redelivered (here: published) and the sink adopts the existing ticket.
    s.created("inc-crash", "checkout-api", "f-crash").await;
    s.resolved("inc-crash").await;
    eventually("the existing ticket resolved", WAIT, || async {
        jira.issues().iter().any(|i| i.key == key && i.status == "Resolved")
    })
    .await;
    assert_eq!(jira.issues().len(), 1, "no second ticket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_issues_with_two_replicas_and_a_rate_limit() {
    let gh = FakeGithub::start(GITHUB_TOKEN, &["acme/incidents"]).await.expect("github");
    let yaml = format!(
        "ticketing_integration:\n  default_provider: github\n  github:\n    repo: acme/incidents\n    secret_ref: platform/github\n    \
         base_url: {}\n",
        gh.url()
    );
    let s = stack(&yaml);
    let a = s.sink("ticketing-a");
    let b = s.sink("ticketing-b");

    gh.fail_next(&[Fault::PrimaryRateLimit(1), Fault::SecondaryRateLimit(1)]);
    // Slow enough that requests made concurrently would overlap at GitHub.
    gh.set_latency(Duration::from_millis(150));
    for i in 0..10 {
        s.created(&format!("inc-{i}"), "checkout-api", &format!("f-{i}")).await;
        s.created(&format!("inc-{i}"), "checkout-api", &format!("f-{i}-again")).await;
    }
    eventually("ten issues", Duration::from_secs(60), || async { gh.issues().len() >= 10 }).await;
    eventually("every fact handled", WAIT, || async {
        a.metric("sre_bus_facts_handled_total", &["Acked"]) + b.metric("sre_bus_facts_handled_total", &["Acked"])
            >= 20.0
    })
    .await;
    assert_eq!(gh.issues().len(), 10, "one issue per incident across two replicas");
    assert_eq!(gh.most_at_once(), 1, "the token's requests one at a time, as GitHub asks");
    let first = gh.issues().into_iter().find(|i| i.body.contains("sre-incident-inc-0")).expect("marker in the body");
    assert_eq!(first.labels, ["sre-incident"]);

    s.resolved("inc-0").await;
    eventually("resolved label", WAIT, || async {
        gh.issues().iter().any(|i| i.number == first.number && i.labels.contains(&"resolved".to_owned()))
    })
    .await;
    s.closed("inc-0").await;
    eventually("closed as completed", WAIT, || async {
        gh.issues().iter().any(|i| i.number == first.number && i.state == "closed")
    })
    .await;
    let issue = gh.issues().into_iter().find(|i| i.number == first.number).expect("issue");
    assert_eq!(issue.state_reason.as_deref(), Some("completed"));
    assert_eq!(issue.labels, ["sre-incident", "resolved"], "labels added, not replaced");
    assert_eq!(issue.comments.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_logs_what_it_would_send_and_sends_nothing() {
    let jira = FakeJira::start(Flavor::Cloud, &basic(), &["OPS"]).await.expect("jira");
    let s = stack(
        &jira_config(&jira, "cloud").replace("ticketing_integration:\n", "ticketing_integration:\n  dry_run: true\n"),
    );
    let sink = s.sink("ticketing-0");
    s.created("inc-dry", "checkout-api", "f-dry").await;
    s.resolved("inc-dry").await;
    eventually("both facts handled", WAIT, || async { sink.metric("ticketing_sink_facts_total", &["DryRun"]) >= 2.0 })
        .await;
    assert_eq!(jira.calls(), 0, "nothing sent, not even the credentials check");
    assert!(sink.logs().contains("dry run: would create a ticket"), "{}", sink.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_fail_readiness_naming_the_provider() {
    // The test Jira expects another token than the sink has.
    let jira = FakeJira::start(Flavor::Cloud, "Basic c29tZW9uZS1lbHNl", &["OPS"]).await.expect("jira");
    let s = stack(&jira_config(&jira, "cloud"));
    let mut sink = ServiceProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_ticketing-sink")),
        &["--config", s.config.to_str().expect("utf-8")],
        &[
            ("NATS_URL", &s.nats.url()),
            ("SECRET_PLATFORM_JIRA_TOKEN", JIRA_TOKEN),
            ("SECRET_PLATFORM_JIRA_EMAIL", JIRA_EMAIL),
        ],
    )
    .expect("spawns");
    let body = sink.wait_for_status("/readyz", 503, WAIT).expect("answers");
    eventually("readiness names jira", WAIT, || async {
        sink.get("/readyz").is_some_and(|(code, body)| {
            code == 503 && body.contains("\"jira\"") && body.contains("credentials refused")
        })
    })
    .await;
    let (_, body2) = sink.get("/readyz").unwrap_or_default();
    assert!(body2.contains("401"), "{body} {body2}");
    assert!(!body2.contains(JIRA_TOKEN) && !sink.logs().contains(JIRA_TOKEN), "the token never appears");
}

/// How soon a resolve must reach a ticket whose create was cut short by a crash (the
/// claim went stale after 60 s before its holder renewed it; this once took 64 s).
const RECOVERY: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolve_right_after_a_crash_mid_create_reaches_the_jira_ticket_in_seconds() {
    let jira = FakeJira::start(Flavor::DataCenter, &format!("Bearer {JIRA_TOKEN}"), &["OPS"]).await.expect("jira");
    let s = stack(&jira_config(&jira, "data_center"));
    let mut sink = s.sink("ticketing-0");
    // Jira creates the issue but the sink dies before it hears back: the claim stays.
    jira.set_answer_delay(Duration::from_secs(30));
    s.created("inc-cut", "checkout-api", "f-cut").await;
    // (The answer held is the create's: the start's own reads, such as the create-screen
    // check, may be held too.)
    eventually("the issue is at Jira, its answer held", WAIT, || async {
        jira.issues().len() == 1 && jira.answers_held() >= 1
    })
    .await;
    sink.kill();
    jira.set_answer_delay(Duration::ZERO);
    let _sink = s.sink("ticketing-1");
    s.resolved("inc-cut").await;
    eventually("resolved in seconds, not when the claim was a minute old", RECOVERY, || async {
        jira.issues().iter().any(|i| i.status == "Resolved")
    })
    .await;
    assert_eq!(jira.issues().len(), 1, "found by its marker, never created twice: {:?}", jira.issues());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolve_right_after_a_crash_mid_create_reaches_the_github_issue_in_seconds() {
    let gh = FakeGithub::start(GITHUB_TOKEN, &["acme/incidents"]).await.expect("github");
    let yaml = format!(
        "ticketing_integration:\n  default_provider: github\n  github:\n    repo: acme/incidents\n    secret_ref: platform/github\n    \
         base_url: {}\n",
        gh.url()
    );
    let s = stack(&yaml);
    let mut sink = s.sink("ticketing-0");
    gh.set_answer_delay(Duration::from_secs(30));
    s.created("inc-cut", "checkout-api", "f-cut").await;
    eventually("the issue is at GitHub, its answer held", WAIT, || async {
        gh.issues().len() == 1 && gh.answers_held() >= 1
    })
    .await;
    sink.kill();
    gh.set_answer_delay(Duration::ZERO);
    let _sink = s.sink("ticketing-1");
    s.resolved("inc-cut").await;
    eventually("resolved in seconds", RECOVERY, || async {
        gh.issues().iter().any(|i| i.labels.iter().any(|l| l == "resolved"))
    })
    .await;
    assert_eq!(gh.issues().len(), 1, "found by its marker, never created twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledge_is_one_comment_saying_who_and_where_and_no_transition() {
    let jira =
        FakeJira::start(Flavor::DataCenter, &format!("Bearer {JIRA_TOKEN}"), &["OPS", "PAY"]).await.expect("jira");
    let s = stack(&jira_config(&jira, "data_center"));
    let sink = s.sink("ticketing-0");
    s.created("inc-ack", "checkout-api", "f-ack").await;
    eventually("the ticket", WAIT, || async { !jira.issues().is_empty() }).await;

    // Acknowledged by a person in PagerDuty (the domain names both), the fact twice.
    s.acknowledged("inc-ack", "Dana On-call in pagerduty", "ack-1").await;
    s.acknowledged("inc-ack", "Dana On-call in pagerduty", "ack-2").await;
    eventually("both handled", WAIT, || async {
        sink.metric("ticketing_sink_facts_total", &["action=\"Acknowledge\"", "outcome=\"Done\""]) == 1.0
            && sink.metric("ticketing_sink_facts_total", &["action=\"Acknowledge\"", "outcome=\"Duplicate\""]) == 1.0
    })
    .await;
    let issue = jira.issues().remove(0);
    assert_eq!(issue.status, "To Do", "an acknowledge moves nothing");
    assert_eq!(issue.comments, [serde_json::json!("Incident acknowledged by Dana On-call in pagerduty.")]);

    // Resolved, then an acknowledge arriving late: no comment on a resolved ticket.
    s.resolved("inc-ack").await;
    eventually("resolved", WAIT, || async { jira.issues()[0].status == "Resolved" }).await;
    s.acknowledged("inc-ack", "someone late", "ack-3").await;
    eventually("the late one handled", WAIT, || async {
        sink.metric("ticketing_sink_facts_total", &["action=\"Acknowledge\"", "outcome=\"Duplicate\""]) == 2.0
    })
    .await;
    assert_eq!(jira.issues()[0].comments.len(), 2, "the acknowledge and the resolve comments only");
}

/// An issue that holds as many comments as Jira allows answers 413 to one more (a
/// per-issue limit, not a rate): the comment is dropped and the resolve still moves the
/// ticket, nothing dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_at_jiras_comment_limit_is_still_resolved() {
    let jira = FakeJira::start(Flavor::Cloud, &basic(), &["OPS"]).await.expect("jira");
    jira.set_comment_limit(1);
    let s = stack(&(jira_config(&jira, "cloud") + "  ticket_write_interval: 100ms\n"));
    let sink = s.sink("ticketing-0");
    s.created("inc-full", "checkout-api", "f-full").await;
    eventually("a ticket", WAIT, || async { jira.issues().len() == 1 }).await;
    s.acknowledged("inc-full", "Dana", "ack-full").await;
    eventually("its one comment", WAIT, || async { jira.issues()[0].comments.len() == 1 }).await;
    s.resolved("inc-full").await;
    eventually("resolved without its comment", WAIT, || async { jira.issues()[0].status == "Resolved" }).await;
    assert_eq!(jira.issues()[0].comments.len(), 1);
    assert_eq!(sink.metric("ticketing_sink_facts_total", &["Failed"]), 0.0, "{}", sink.logs());
}
