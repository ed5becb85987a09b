//! Local stand-ins for what cannot run here, for `cargo xtask run`. DEVELOPMENT ONLY.
//!
//! - The test vendors of this kit on fixed loopback ports: Argo CD 8089 (a few demo
//!   applications), Jira Data Center 8090, GitHub 8091, PagerDuty 8092, Opsgenie 8093.
//! - The **reference SRE domain stand-in** ([`sre_testkit::domain`]): it turns intents into
//!   facts, idempotently, the way the real domain would be expected to. On 127.0.0.1:8094,
//!   `POST /incidents/<id>/acknowledge`, `/close`, `/reopen`, `/note` (the body is the
//!   note) and `/severity/<critical|high|medium|low|info>` publish the matching fact, as a
//!   person in the platform would. It is not the SRE domain; it only lets the adapters be
//!   seen working end to end.
//!
//! - Two-way sync: each vendor sends its webhooks to the sink that owns it (PagerDuty and
//!   Opsgenie to paging-sink on 8083, Jira and GitHub to ticketing-sink on 8082), signed
//!   with the demo's secrets. With `SRE_STANDINS_AUTO=1` the demo's people act in the
//!   vendors' tools, not the domain: the on-call acknowledges each page in PagerDuty 5 s
//!   after it arrives and closes each resolved Jira issue 5 s later, and the webhooks
//!   carry that back to the domain. The pages' buttons do the same by hand. The rest of an
//!   incident's life follows: a `high` incident whose page waits for business hours is
//!   raised to critical by the platform 10 s after its ticket opens (and pages at once);
//!   3 s after the first acknowledge the on-call writes a note on the page in PagerDuty
//!   (it reaches the Jira ticket); 10 s after the first ticket is closed the platform
//!   reopens its incident (the ticket moves back, the on-call is paged again).
//!
//! - An OTLP/gRPC trace receiver on 127.0.0.1:4317 ([`sre_testkit::otlp`]), the adapters'
//!   collector in the demo: once the first alert has reached both vendors, its trace is
//!   printed as a tree, from the ingress's webhook span to each sink's vendor call.
//!
//! Prints a timeline of what each part received. Ctrl-C or SIGTERM stops it.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use sre_contracts::domain::v1::Severity;
use sre_contracts::spans::{VENDOR_CALL, WEBHOOK};
use sre_testkit::argocd::{App, FakeArgoCd};
use sre_testkit::domain::Domain;
use sre_testkit::github::FakeGithub;
use sre_testkit::inventory::demo;
use sre_testkit::jira::{FakeJira, Flavor};
use sre_testkit::opsgenie::FakeOpsgenie;
use sre_testkit::pagerduty::FakePagerDuty;

/// Credentials the demo configurations use (placeholders, for loopback stand-ins only).
const ARGOCD_TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkZW1vIn0.ZGVtbw";
const JIRA_TOKEN: &str = "demo-jira-pat";
const GITHUB_TOKEN: &str = "demo-github-token";
const OPSGENIE_KEY: &str = "demo-opsgenie-key";
/// The webhook secrets (the demo's `SECRET_DEMO_*_WEBHOOK_SECRET`, xtask).
const PAGERDUTY_WEBHOOK: &str = "demo-pagerduty-webhook";
const OPSGENIE_WEBHOOK: &str = "demo-opsgenie-webhook";
const JIRA_WEBHOOK: &str = "demo-jira-webhook";
const GITHUB_WEBHOOK: &str = "demo-github-webhook";
/// Where the sinks listen in the demo (xtask: 8080 + their place in the list).
/// Who acts in the vendors' tools in the demo.
const PERSON: &str = sre_testkit::vendor::PERSON;

fn say(what: &str) {
    let now = jiff::Timestamp::now().strftime("%H:%M:%S");
    println!("{now}  {what}");
}

/// `POST /incidents/{id}/acknowledge`, `/close`, `/reopen`, `/note` and
/// `/severity/{to}`, as a person in the platform.
async fn control(domain: Arc<Domain>) -> std::io::Result<()> {
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    const WHO: &str = "demo-user";
    async fn act(
        State(domain): State<Arc<Domain>>,
        Path((id, action)): Path<(String, String)>,
        note: String,
    ) -> (StatusCode, String) {
        let stored = match action.as_str() {
            "acknowledge" => domain.acknowledge(&id, WHO).await,
            "close" => domain.close(&id, WHO).await,
            "reopen" => domain.reopen(&id, WHO, "reopened by hand").await,
            "note" if !note.trim().is_empty() => domain.annotate(&id, note.trim(), WHO).await,
            "note" => return (StatusCode::BAD_REQUEST, "note: the body is the note, and it is empty\n".into()),
            other => return (StatusCode::NOT_FOUND, format!("unknown action {other}\n")),
        };
        done(stored, &action, &id)
    }
    async fn severity(
        State(domain): State<Arc<Domain>>,
        Path((id, to)): Path<(String, String)>,
    ) -> (StatusCode, String) {
        let Some(level) =
            Severity::from_str_name(&format!("SEVERITY_{}", to.to_uppercase())).filter(|s| *s != Severity::Unspecified)
        else {
            return (StatusCode::BAD_REQUEST, format!("severity: {to} is not critical, high, medium, low or info\n"));
        };
        done(domain.escalate(&id, level, WHO, "changed by hand").await, &format!("severity {to}"), &id)
    }
    fn done(stored: bool, what: &str, id: &str) -> (StatusCode, String) {
        match stored {
            true => (StatusCode::OK, format!("{what} {id}\n")),
            false => (StatusCode::SERVICE_UNAVAILABLE, format!("{what} {id}: the bus did not store the fact\n")),
        }
    }
    let app = axum::Router::new()
        .route("/incidents/{id}/severity/{to}", axum::routing::post(severity))
        .route("/incidents/{id}/{action}", axum::routing::post(act))
        .with_state(domain);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", demo::DOMAIN)).await?;
    axum::serve(listener, app).await
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let nats = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let mut apps =
        vec![App::new("checkout", "production"), App::new("payments", "production"), App::new("search", "staging")];
    apps[2].health = "Progressing".into();
    let argo = FakeArgoCd::start_on(demo::ARGOCD, ARGOCD_TOKEN, apps).await?;
    let jira =
        FakeJira::start_on(demo::JIRA, Flavor::DataCenter, &format!("Bearer {JIRA_TOKEN}"), &["OPS", "PAY"]).await?;
    let github = FakeGithub::start_on(demo::GITHUB, GITHUB_TOKEN, &["example/incidents"]).await?;
    let pagerduty = FakePagerDuty::start_on(demo::PAGERDUTY).await?;
    let opsgenie = FakeOpsgenie::start_on(demo::OPSGENIE, OPSGENIE_KEY).await?;
    let traces = sre_testkit::otlp::Receiver::start_on(demo::OTLP).await?;
    let mut trace_printed = false;
    let at = |adapter: &str| format!("http://127.0.0.1:{}", demo::adapter_port(adapter).expect("an adapter"));
    let (ticketing, paging) = (at("ticketing-sink"), at("paging-sink"));
    pagerduty.subscribe(&format!("{paging}/webhooks/pagerduty"), PAGERDUTY_WEBHOOK);
    opsgenie.subscribe(&format!("{paging}/webhooks/opsgenie"), "X-Sre-Webhook-Secret", OPSGENIE_WEBHOOK);
    jira.subscribe(&format!("{ticketing}/webhooks/jira"), JIRA_WEBHOOK);
    github.subscribe(&format!("{ticketing}/webhooks/github"), GITHUB_WEBHOOK);
    say(&format!(
        "stand-ins: Argo CD :{}, Jira DC :{}, GitHub :{}, PagerDuty :{}, Opsgenie :{} (each lists what it received at \
         http://127.0.0.1:<port>/), domain control :{}",
        demo::ARGOCD,
        demo::JIRA,
        demo::GITHUB,
        demo::PAGERDUTY,
        demo::OPSGENIE,
        demo::DOMAIN
    ));
    // `nats://user:password@host:port[,nats://host:port…]`: the domain's own bus user
    // (deploy/nats), on one server or a cluster's seed list.
    let mut user = None;
    let seeds: Vec<String> = nats
        .split(',')
        .map(|seed| {
            let (scheme, rest) = seed.trim().split_once("://").unwrap_or(("nats", seed.trim()));
            match rest.rsplit_once('@') {
                Some((userinfo, host)) => {
                    user = userinfo.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned()));
                    format!("{scheme}://{host}")
                }
                None => format!("{scheme}://{rest}"),
            }
        })
        .collect();
    let client = loop {
        let options = match &user {
            Some((u, p)) => async_nats::ConnectOptions::with_user_and_password(u.clone(), p.clone()),
            None => async_nats::ConnectOptions::new(),
        };
        match options.connect(seeds.clone()).await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    };
    // Three replicas on a cluster, as deploy/nats/jetstream says; one on a single server.
    let replicas = if client.server_info().cluster.is_some_and(|c| !c.is_empty()) { 3 } else { 1 };
    let js = async_nats::jetstream::new(client);
    // The domain provisions the streams (adapters' bus users may not: deploy/nats).
    loop {
        match sre_testkit::domain::provision_replicated(&js, replicas).await {
            Ok(n) => {
                say(&format!("domain: {n} streams in place (deploy/nats/jetstream, {replicas} replicas)"));
                break;
            }
            Err(e) => {
                say(&format!("domain: streams not provisioned yet: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    // The demo's people act in the vendors' tools (two-way sync), so the domain does not
    // acknowledge or close by itself.
    let people = std::env::var("SRE_STANDINS_AUTO").is_ok_and(|v| v == "1");
    let domain = Arc::new(Domain::start(js, false, Arc::new(say)));
    tokio::spawn(control(domain.clone()));

    // The timeline of what the vendors received.
    let mut seen = (0usize, 0usize, 0usize, 0usize, String::new());
    let mut hooks_seen = [0usize; 4];
    let mut comments_seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    // What the people will do, and when: (when, PagerDuty dedup key or Jira key).
    let mut to_acknowledge: Vec<(tokio::time::Instant, String)> = Vec::new();
    let mut to_close: Vec<(tokio::time::Instant, String)> = Vec::new();
    // The rest of an incident's life: (when, incident id or PagerDuty dedup key).
    let mut to_escalate: Vec<(tokio::time::Instant, String)> = Vec::new();
    let mut to_note: Vec<(tokio::time::Instant, String)> = Vec::new();
    let mut to_reopen: Vec<(tokio::time::Instant, String)> = Vec::new();
    let (mut noted, mut reopened) = (false, false);
    let mut notes_seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let incident_of = |i: &sre_testkit::jira::Issue| {
        i.labels.iter().find_map(|l| l.strip_prefix("sre-incident-")).unwrap_or_default().to_owned()
    };
    let in_secs = |secs| tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut degraded = false;
    let mut polls_at_change = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {}
        }
        if !trace_printed && let Some(tree) = first_alert_trace(&traces) {
            say(&format!("trace of the first alert (OTLP, as a collector received it):\n{tree}"));
            trace_printed = true;
        }
        let issues = jira.issues();
        for i in issues.iter().skip(seen.0) {
            say(&format!("jira: created {} \"{}\"", i.key, i.summary));
            if people && i.summary.starts_with("[high]") {
                to_escalate.push((in_secs(10), incident_of(i)));
            }
        }
        for i in &issues {
            let known = comments_seen.entry(i.key.clone()).or_insert(0);
            for c in i.comments.iter().skip(*known) {
                let text = c.as_str().map_or_else(|| c.to_string(), str::to_owned);
                say(&format!("jira: comment on {}: \"{}\"", i.key, text.replace('\n', " ")));
            }
            *known = i.comments.len();
        }
        let statuses: String = issues.iter().map(|i| format!("{}={};", i.key, i.status)).collect();
        if statuses != seen.4 {
            for i in &issues {
                let known = seen.4.contains(&format!("{}=", i.key));
                if (i.status != "To Do" || known) && !seen.4.contains(&format!("{}={};", i.key, i.status)) {
                    say(&format!("jira: {} is now {}", i.key, i.status));
                    if people && i.status == "Resolved" {
                        to_close.push((tokio::time::Instant::now() + Duration::from_secs(5), i.key.clone()));
                    }
                }
            }
            seen.4 = statuses;
        }
        let events = pagerduty.events();
        for e in events.iter().skip(seen.1) {
            say(&format!("pagerduty: {} {} (applied: {})", e.action, e.dedup_key, e.applied));
            if people && e.action == "trigger" && e.applied {
                to_acknowledge.push((tokio::time::Instant::now() + Duration::from_secs(5), e.dedup_key.clone()));
            }
        }
        let now = tokio::time::Instant::now();
        for (_, key) in to_acknowledge.extract_if(.., |(at, _)| *at <= now) {
            if pagerduty.acknowledge_as(&key, PERSON) {
                say(&format!("person: {PERSON} acknowledges {key} in PagerDuty"));
                if !std::mem::replace(&mut noted, true) {
                    to_note.push((in_secs(3), key));
                }
            }
        }
        for (_, key) in to_note.extract_if(.., |(at, _)| *at <= now) {
            let note = "Rolled back checkout-api to v41; the error rate is falling.";
            if pagerduty.note_as(&key, note, PERSON) {
                say(&format!("person: {PERSON} writes a note on {key} in PagerDuty: \"{note}\""));
            }
        }
        for (_, key) in to_close.extract_if(.., |(at, _)| *at <= now) {
            if jira.transition_as(&key, "Closed", PERSON) {
                say(&format!("person: {PERSON} closes {key} in Jira"));
                if let Some(i) = issues.iter().find(|i| i.key == key).filter(|_| !reopened) {
                    reopened = true;
                    to_reopen.push((in_secs(10), incident_of(i)));
                }
            }
        }
        for (_, id) in to_escalate.extract_if(.., |(at, _)| *at <= now) {
            say(&format!(
                "platform: {id} is high, and its page waits for business hours; the incident commander raises it"
            ));
            let why = "checkout fails for every customer in the EU";
            let _ = domain.escalate(&id, Severity::Critical, "Incident Commander", why).await;
        }
        for (_, id) in to_reopen.extract_if(.., |(at, _)| *at <= now) {
            let _ = domain.reopen(&id, "alertmanager", "CheckoutErrorRate fired again within the hour").await;
        }
        // Notes on the pages (what the sinks added, and what people wrote there).
        for a in pagerduty.alerts() {
            let known = notes_seen.entry(format!("{}#{}", a.dedup_key, a.id)).or_insert(0);
            for (text, who) in a.notes.iter().skip(*known) {
                say(&format!("pagerduty: note on {} by {who}: \"{}\"", a.dedup_key, text.replace('\n', " ")));
            }
            *known = a.notes.len();
        }
        // The webhooks the vendors delivered, and how the sinks answered.
        let deliveries = [
            ("pagerduty", "paging-sink", pagerduty.webhooks()),
            ("opsgenie", "paging-sink", opsgenie.webhooks().into_iter().map(|d| (d.event, d.by, d.status)).collect()),
            ("jira", "ticketing-sink", jira.webhooks().into_iter().map(|d| (d.event, d.by, d.status)).collect()),
            ("github", "ticketing-sink", github.webhooks().into_iter().map(|d| (d.event, d.by, d.status)).collect()),
        ];
        for (n, (vendor, sink, list)) in deliveries.into_iter().enumerate() {
            let list: Vec<(String, String, u16)> = list;
            for (event, by, status) in list.iter().skip(hooks_seen[n]) {
                let who = if by == PERSON || by == "user_reference" { "a person" } else { "the sink's own call" };
                say(&format!("{vendor} → {sink}: webhook {event} ({who}), answered {status}"));
            }
            hooks_seen[n] = list.len();
        }
        let gh = github.issues();
        for i in gh.iter().skip(seen.2) {
            say(&format!("github: opened #{} \"{}\"", i.number, i.title));
        }
        let og = opsgenie.alerts();
        for a in og.iter().skip(seen.3) {
            say(&format!("opsgenie: alert {}", a.alias));
        }
        seen = (issues.len(), events.len(), gh.len(), og.len(), seen.4);
        // Argo CD: after a few polls "payments" goes Degraded, later Healthy again.
        let polls = argo.requests();
        if polls >= 3 && !degraded && polls_at_change == 0 {
            argo.set_health("payments", "Degraded", "Deployment payments exceeded its progress deadline");
            say("argocd: payments is now Degraded");
            degraded = true;
            polls_at_change = polls;
        } else if degraded && polls >= polls_at_change + 3 {
            argo.set_health("payments", "Healthy", "");
            say("argocd: payments is Healthy again");
            degraded = false;
        }
    }
    say("stand-ins: stopping");
    Ok(())
}

/// The trace of the first alert once it holds a vendor call from each sink, as a tree.
fn first_alert_trace(traces: &sre_testkit::otlp::Receiver) -> Option<String> {
    let spans = traces.spans();
    let complete = |trace: &str| {
        ["ticketing-sink", "paging-sink"]
            .iter()
            .all(|sink| spans.iter().any(|s| s.trace_id == trace && s.service == *sink && s.name == VENDOR_CALL))
    };
    let webhook = spans
        .iter()
        .filter(|s| s.service == "alertmanager-ingress" && s.name == WEBHOOK && complete(&s.trace_id))
        .min_by_key(|s| s.start_ns)?;
    Some(sre_testkit::otlp::render_tree(
        &traces.trace(&webhook.trace_id),
        &["subject", "http.request.method", "server.address", "url.path", "http.response.status_code"],
    ))
}
