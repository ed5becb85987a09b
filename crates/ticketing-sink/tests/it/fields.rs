//! Tickets the way teams configure them, with the real binary, a real nats-server and the
//! test Jira enforcing its create screens: per-route issue type, components, assignee,
//! templated labels and typed custom fields reach Jira as its API documents them (Cloud v3
//! with ADF and account ids, Data Center v2 with wiki text and user names); a person's
//! assignee and component stand when the incident changes, while a field kept in `sync`
//! follows; a required field the configuration does not set is reported at start (readiness)
//! and by `--check-config --online`, naming the route and the field.

use std::path::Path;

use prost::Message;
use serde_json::json;
use sre_contracts::BusMessage;
use sre_contracts::domain::v1::{IncidentCreated, IncidentSeverityChanged, MessageMeta, Severity};
use sre_testkit::bus::{eventually, publish};
use sre_testkit::jira::{FakeJira, Flavor, ScreenField};

use crate::lives::issue;
use crate::tickets::{WAIT, basic, stack};

/// Routes: payments go to PAY as an Incident with their own component and a Severity
/// select kept in sync; the rest to OPS with the defaults.
fn config(jira: &FakeJira, deployment: &str, user: &str) -> String {
    format!(
        r#"ticketing_integration:
  default_provider: jira
  jira:
    base_url: {url}
    deployment: {deployment}
    project_key: OPS
    secret_ref: platform/jira
    labels: [sre-incident, "team-{{label.team}}"]
    components: ["{{service}}"]
    assignee: "{user}"
    fields:
      customfield_10030: {{type: text, value: "{{environment}}"}}
  routes:
    - match: {{service: payments-api}}
      project_key: PAY
      issue_type: Incident
      components: [Payments, "{{label.region}}"]
      labels: [payments]
      fields:
        customfield_10020: {{type: select, value: "{{severity}}"}}
        customfield_10021: {{type: multi_select, value: ["{{label.region}}", web]}}
        customfield_10022: {{type: number, value: 2}}
        customfield_10023: {{type: user, value: "{user}"}}
        customfield_10024: {{type: {rich}, value: "Runbook: {{runbook_url}}"}}
      sync: [customfield_10020]
"#,
        url = jira.url(),
        rich = if deployment == "cloud" { "adf" } else { "text" },
    )
}

fn screens(jira: &FakeJira) {
    let common = [
        ScreenField::new("components", "Components", "array", false),
        ScreenField::new("assignee", "Assignee", "user", false),
    ];
    let mut ops = common.to_vec();
    ops.push(ScreenField::new("customfield_10030", "Environment", "string", false));
    jira.set_screen("OPS", "Bug", &ops);
    let mut pay = ops.clone();
    pay.extend([
        ScreenField::new("customfield_10020", "Severity", "option", true),
        ScreenField::new("customfield_10021", "Regions", "array", false),
        ScreenField::new("customfield_10022", "Impact", "number", false),
        ScreenField::new("customfield_10023", "Incident commander", "user", false),
        ScreenField::new("customfield_10024", "Runbook", "string", false),
    ]);
    jira.set_screen("PAY", "Incident", &pay);
}

async fn created(s: &crate::tickets::Stack, id: &str, service: &str) {
    let fact = IncidentCreated {
        incident_id: id.into(),
        title: format!("{service}: error rate above 5%"),
        severity: Severity::Critical as i32,
        service: service.into(),
        environment: "production".into(),
        runbook_url: "https://runbooks.example.com/errors".into(),
        labels: [("team".to_owned(), "payments core".to_owned()), ("region".to_owned(), "eu-west".to_owned())].into(),
        ..Default::default()
    };
    publish(&s.nats.url(), IncidentCreated::SUBJECT, &format!("c-{id}"), fact.encode_to_vec()).await;
}

async fn lowered(s: &crate::tickets::Stack, id: &str) {
    let fact = IncidentSeverityChanged {
        meta: Some(MessageMeta { idempotency_key: format!("severity:{id}"), ..Default::default() }),
        incident_id: id.into(),
        from: Severity::Critical as i32,
        to: Severity::High as i32,
        by: "dana".into(),
        why: "one region only".into(),
        at: Some(prost_types::Timestamp { seconds: 1_796_000_000, nanos: 0 }),
    };
    publish(&s.nats.url(), IncidentSeverityChanged::SUBJECT, &format!("sev-{id}"), fact.encode_to_vec()).await;
}

async fn every_field_reaches_jira_and_a_persons_edit_stands(flavor: Flavor, deployment: &str) {
    let (user, user_key) = match flavor {
        Flavor::Cloud => ("5b10ac8d82e05b22cc7d4ef5", "accountId"),
        Flavor::DataCenter => ("jdoe", "name"),
    };
    let auth = match flavor {
        Flavor::Cloud => basic(),
        Flavor::DataCenter => "Bearer ATATT3xFfGF0-jira-token".to_owned(),
    };
    let jira = FakeJira::start(flavor, &auth, &["OPS", "PAY"]).await.expect("jira");
    screens(&jira);
    let s = stack(&(config(&jira, deployment, user) + "  ticket_write_interval: 200ms\n"));
    let _sink = s.sink("ticketing-0");
    created(&s, "inc-1", "payments-api").await;
    created(&s, "inc-2", "checkout-api").await;
    eventually("two tickets", WAIT, || async { jira.issues().len() == 2 }).await;
    let of = |id: &str| {
        jira.issues().into_iter().find(|i| i.labels.contains(&format!("sre-incident-{id}"))).expect("ticket")
    };
    let pay = of("inc-1");
    assert_eq!(pay.project, "PAY");
    assert_eq!(pay.fields["issuetype"]["name"], "Incident");
    assert_eq!(pay.components, ["Payments", "eu-west"]);
    assert_eq!(pay.assignee.as_deref(), Some(user));
    assert!(
        ["sre-incident", "team-payments-core", "payments"].iter().all(|l| pay.labels.contains(&(*l).to_owned())),
        "{:?}",
        pay.labels
    );
    assert_eq!(pay.fields["customfield_10020"], json!({"value": "critical"}));
    assert_eq!(pay.fields["customfield_10021"], json!([{"value": "eu-west"}, {"value": "web"}]));
    assert_eq!(pay.fields["customfield_10022"], json!(2.0));
    assert_eq!(pay.fields["customfield_10023"], json!({user_key: user}));
    assert_eq!(pay.fields["customfield_10030"], json!("production"));
    let runbook = &pay.fields["customfield_10024"];
    match flavor {
        Flavor::Cloud => {
            assert_eq!(runbook["type"], "doc", "ADF on Cloud: {runbook}");
            assert!(runbook.to_string().contains("https://runbooks.example.com/errors"));
        }
        Flavor::DataCenter => assert_eq!(runbook, &json!("Runbook: https://runbooks.example.com/errors")),
    }
    let ops = of("inc-2");
    assert_eq!((ops.project.as_str(), ops.fields["issuetype"]["name"].as_str()), ("OPS", Some("Bug")));
    assert_eq!(ops.components, ["checkout-api"]);

    // A person takes the ticket and moves it to another component; then the incident is
    // lowered to high: the priority and the synced Severity follow, the person's values stand.
    let edit = json!({"assignee": {user_key: "ada"}, "components": [{"name": "Checkout"}]});
    assert!(jira.edit_as(&pay.key, edit, "Ada Lovelace"));
    lowered(&s, "inc-1").await;
    eventually("the priority and the synced field follow the severity", WAIT, || async {
        let t = issue(&jira, &pay.key);
        t.priority.as_deref() == Some("High") && t.fields["customfield_10020"] == json!({"value": "high"})
    })
    .await;
    let t = issue(&jira, &pay.key);
    assert_eq!(t.assignee.as_deref(), Some("ada"), "the person's assignee stands");
    assert_eq!(t.components, ["Checkout"], "the person's component stands");
    assert_eq!(t.fields["customfield_10022"], json!(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_reaches_jira_cloud_and_a_persons_edit_stands() {
    every_field_reaches_jira_and_a_persons_edit_stands(Flavor::Cloud, "cloud").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_reaches_jira_data_center_and_a_persons_edit_stands() {
    every_field_reaches_jira_and_a_persons_edit_stands(Flavor::DataCenter, "data_center").await;
}

/// PAY's Incident screen requires a Severity the configuration does not set, and OPS's
/// screen has no Environment field: the start reports both (not ready, naming route and
/// field), and `--check-config --online` exits 2 with the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_field_without_a_value_is_reported_at_start_naming_route_and_field() {
    let jira = FakeJira::start(Flavor::Cloud, &basic(), &["OPS", "PAY"]).await.expect("jira");
    let base = [
        ScreenField::new("components", "Components", "array", false),
        ScreenField::new("assignee", "Assignee", "user", false),
    ];
    jira.set_screen("OPS", "Bug", &base);
    let mut pay = base.to_vec();
    // A screen longer than a createmeta page: the required field is on the second.
    pay.extend((1..=5).map(|n| ScreenField::new(&format!("customfield_1010{n}"), "Optional", "string", false)));
    pay.push(ScreenField::new("customfield_10050", "Customer impact", "option", true));
    jira.set_screen("PAY", "Incident", &pay);
    let yaml = format!(
        "ticketing_integration:\n  default_provider: jira\n  jira:\n    base_url: {}\n    deployment: cloud\n    \
         project_key: OPS\n    secret_ref: platform/jira\n    fields:\n      customfield_10030: {{type: text, value: \"{{environment}}\"}}\n  \
         routes:\n    - match: {{service: payments-api}}\n      project_key: PAY\n      issue_type: Incident\n",
        jira.url()
    );
    let s = stack(&yaml);
    // `--check-config --online`, as a team runs it in CI against its Jira.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ticketing-sink.yaml");
    std::fs::write(&file, &yaml).expect("config");
    let out = std::process::Command::new(Path::new(env!("CARGO_BIN_EXE_ticketing-sink")))
        .args(["--config", file.to_str().expect("utf-8"), "--check-config", "--online"])
        .env("SECRET_PLATFORM_JIRA_TOKEN", "ATATT3xFfGF0-jira-token")
        .env("SECRET_PLATFORM_JIRA_EMAIL", "sre-bot@example.com")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "ticketing_integration.routes[0]: `customfield_10050` (Customer impact) is required by Incident in PAY"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("ticketing_integration.jira: `customfield_10030` is not on the create screen of Bug in OPS"),
        "{stderr}"
    );
    // Offline, the file itself is valid.
    let offline = std::process::Command::new(Path::new(env!("CARGO_BIN_EXE_ticketing-sink")))
        .args(["--config", file.to_str().expect("utf-8"), "--check-config"])
        .output()
        .expect("runs");
    assert!(offline.status.success(), "{}", String::from_utf8_lossy(&offline.stderr));

    // At start: not ready, and readiness names both.
    let mut sink = sre_testkit::service::ServiceProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_ticketing-sink")),
        &["--config", file.to_str().expect("utf-8")],
        &[
            ("NATS_URL", &s.nats.url()),
            ("SECRET_PLATFORM_JIRA_TOKEN", "ATATT3xFfGF0-jira-token"),
            ("SECRET_PLATFORM_JIRA_EMAIL", "sre-bot@example.com"),
        ],
    )
    .expect("spawns");
    eventually("readiness names the route and the field", WAIT, || {
        let answer = sink.get("/readyz");
        async move {
            answer.is_some_and(|(status, body)| {
                status == 503 && body.contains("customfield_10050") && body.contains("routes[0]")
            })
        }
    })
    .await;
    assert!(jira.createmeta_reads() >= 4);
    let _ = sink.terminate(WAIT);
}

/// GitHub: a route's assignees, milestone and templated labels reach the issue. A token
/// without push access (GitHub would drop them, and the label the sink finds its issues by,
/// without a word) is reported at start and by `--check-config --online`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_assignees_milestone_and_labels_and_a_token_that_may_not_push() {
    use sre_testkit::github::FakeGithub;
    let gh =
        FakeGithub::start(crate::tickets::GITHUB_TOKEN, &["acme/incidents", "acme/payments"]).await.expect("github");
    let yaml = format!(
        "ticketing_integration:\n  default_provider: github\n  github:\n    repo: acme/incidents\n    secret_ref: platform/github\n    \
         base_url: {}\n    labels: [sre-incident, \"team-{{label.team}}\"]\n    assignees: [octo-oncall]\n  routes:\n    \
         - match: {{service: payments-api}}\n      repo: acme/payments\n      assignees: [\"{{label.owner}}\"]\n      milestone: 7\n      \
         labels: [payments]\n",
        gh.url()
    );
    let s = stack(&yaml);
    let sink = s.sink("ticketing-0");
    created(&s, "inc-1", "payments-api").await;
    eventually("an issue", WAIT, || async { gh.issues().len() == 1 }).await;
    let issue = gh.issues().remove(0);
    assert_eq!(issue.repo, "acme/payments");
    assert_eq!(issue.labels, ["sre-incident", "team-payments-core", "payments"]);
    // `{label.owner}` is absent: left out, not sent empty.
    assert_eq!(issue.assignees, ["octo-oncall"]);
    assert_eq!(issue.milestone, Some(7));
    drop(sink);

    gh.set_push_access(false);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ticketing-sink.yaml");
    std::fs::write(&file, &yaml).expect("config");
    let out = std::process::Command::new(Path::new(env!("CARGO_BIN_EXE_ticketing-sink")))
        .args(["--config", file.to_str().expect("utf-8"), "--check-config", "--online"])
        .env("SECRET_PLATFORM_GITHUB_TOKEN", crate::tickets::GITHUB_TOKEN)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ticketing_integration.github: the token may not push to acme/incidents"), "{stderr}");
    assert!(stderr.contains("ticketing_integration.routes[0]: the token may not push to acme/payments"), "{stderr}");
    let mut sink = sre_testkit::service::ServiceProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_ticketing-sink")),
        &["--config", file.to_str().expect("utf-8")],
        &[("NATS_URL", &s.nats.url()), ("SECRET_PLATFORM_GITHUB_TOKEN", crate::tickets::GITHUB_TOKEN)],
    )
    .expect("spawns");
    eventually("readiness says the token may not push", WAIT, || {
        let answer = sink.get("/readyz");
        async move { answer.is_some_and(|(status, body)| status == 503 && body.contains("may not push")) }
    })
    .await;
    let _ = sink.terminate(WAIT);
}
