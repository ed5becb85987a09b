//! The real paging-sink binary with a real nats-server and the test PagerDuty and Opsgenie:
//! facts in, what the vendors received out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use prost::Message;
use sre_contracts::BusMessage;
use sre_contracts::domain::v1::{IncidentAcknowledged, IncidentCreated, IncidentResolved, Severity};
use sre_contracts::{headers, streams};
use sre_testkit::NatsServer;
use sre_testkit::bus::{eventually, publish, stream_records};
use sre_testkit::opsgenie::FakeOpsgenie;
use sre_testkit::pagerduty::{AlertStatus, FakePagerDuty};
use sre_testkit::service::ServiceProcess;

pub(crate) const WAIT: Duration = Duration::from_secs(30);
pub(crate) const ROUTING_KEY: &str = "R0UT1NGKEY0123456789ABCDEFGHIJKL";
pub(crate) const OTHER_KEY: &str = "0THERKEY0123456789ABCDEFGHIJKLMN";
pub(crate) const GENIE_KEY: &str = "eb243592-faa2-4ba2-a551q-1afdf565c889";

pub(crate) struct Stack {
    pub(crate) nats: NatsServer,
    dir: tempfile::TempDir,
    config: PathBuf,
}

pub(crate) fn stack(yaml: &str) -> Stack {
    stack_on(NatsServer::start().expect("nats"), yaml)
}

/// As [`stack`], on `nats`.
pub(crate) fn stack_on(nats: NatsServer, yaml: &str) -> Stack {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("paging-sink.yaml");
    std::fs::write(&config, yaml).expect("config");
    Stack { nats, dir, config }
}

impl Stack {
    pub(crate) fn sink(&self, pod: &str) -> ServiceProcess {
        self.sink_with(pod, &[])
    }

    /// [`Stack::sink`] with more environment (`extra`).
    pub(crate) fn sink_with(&self, pod: &str, extra: &[(&str, &str)]) -> ServiceProcess {
        let url = self.nats.url();
        let mut envs = vec![
            ("NATS_URL", url.as_str()),
            ("POD_NAME", pod),
            ("SECRET_PLATFORM_PAGERDUTY_ROUTING_KEY", ROUTING_KEY),
            ("SECRET_PLATFORM_PD_LEGACY_ROUTING_KEY", "too-short-a-key"),
            ("SECRET_PLATFORM_OPSGENIE_API_KEY", GENIE_KEY),
            ("SECRET_PLATFORM_PD_OTHER_ROUTING_KEY", OTHER_KEY),
        ];
        envs.extend_from_slice(extra);
        let mut p = ServiceProcess::spawn(
            Path::new(env!("CARGO_BIN_EXE_paging-sink")),
            &["--config", self.config.to_str().expect("utf-8")],
            &envs,
        )
        .expect("spawns");
        p.wait_for_status("/readyz", 200, WAIT).expect("ready");
        let _ = &self.dir;
        p
    }

    pub(crate) async fn created(&self, id: &str, severity: Severity, service: &str, msg_id: &str) {
        let fact = IncidentCreated {
            incident_id: id.into(),
            title: format!("{service}: error rate above 5%"),
            severity: severity as i32,
            service: service.into(),
            environment: "production".into(),
            team: if service == "etl" { "data".into() } else { "payments".into() },
            runbook_url: "https://runbooks.example.com/errors".into(),
            ..Default::default()
        };
        publish(&self.nats.url(), IncidentCreated::SUBJECT, msg_id, fact.encode_to_vec()).await;
    }

    pub(crate) async fn acknowledged(&self, id: &str) {
        let fact = IncidentAcknowledged { incident_id: id.into(), by: "alice".into(), ..Default::default() };
        publish(&self.nats.url(), IncidentAcknowledged::SUBJECT, &format!("ack-{id}"), fact.encode_to_vec()).await;
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
}

pub(crate) fn config(pd: &FakePagerDuty, og: Option<&FakeOpsgenie>, hours: &str) -> String {
    let opsgenie = og.map_or(String::new(), |og| {
        format!("  opsgenie:\n    api_key_ref: platform/opsgenie\n    base_url: {}\n    default_team: sre\n", og.url())
    });
    let opsgenie_route = if og.is_some() {
        "    - match: {team: data}\n      provider: opsgenie\n      team: data-oncall\n"
    } else {
        ""
    };
    format!(
        "paging_integration:\n  default_provider: pagerduty\n  pagerduty:\n    routing_key_ref: platform/pagerduty\n    \
         base_url: {}\n{opsgenie}  deferred_check_interval: 1s\n  routes:\n    - match: {{service: legacy}}\n      \
         routing_key_ref: platform/pd-legacy\n{opsgenie_route}  escalation:\n    critical: immediate\n    high: business_hours_only\n    \
         business_hours:\n{hours}",
        pd.url()
    )
}

/// Business hours that are open now, every day.
pub(crate) const ALWAYS: &str = "      start: \"00:00\"\n      end: \"23:59:59\"\n      timezone: UTC\n      weekdays: [mon, tue, wed, thu, fri, sat, sun]\n";

/// Business hours opening `secs` from now, in a fixed-offset zone where it is around noon
/// (so the window never straddles midnight, whenever the test runs). Returns the YAML and
/// the opening instant.
pub(crate) fn opening_in(secs: i64) -> (String, jiff::Timestamp) {
    let now = jiff::Timestamp::now();
    let hour = now.to_zoned(jiff::tz::TimeZone::UTC).hour() as i64;
    let offset = 12 - hour; // hours east of UTC
    let zone = match offset {
        0 => "Etc/GMT".to_owned(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    };
    let opening = now + jiff::SignedDuration::from_secs(secs);
    let local = opening.to_zoned(jiff::tz::TimeZone::get(&zone).expect("zone"));
    let yaml = format!(
        "      start: \"{:02}:{:02}:{:02}\"\n      end: \"23:00:00\"\n      timezone: {zone}\n      \
         weekdays: [mon, tue, wed, thu, fri, sat, sun]\n",
        local.hour(),
        local.minute(),
        local.second()
    );
    (yaml, jiff::Timestamp::from_second(opening.as_second()).expect("second"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_pages_once_then_acknowledge_and_resolve_follow_to_the_same_routing_key() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let s = stack(&config(&pd, None, ALWAYS));
    let sink = s.sink("paging-0");

    s.created("inc-1", Severity::Critical, "checkout-api", "f-1").await;
    s.created("inc-1", Severity::Critical, "checkout-api", "f-1-again").await; // the same fact, a second time
    s.created("inc-2", Severity::Medium, "checkout-api", "f-2").await; // below the threshold
    s.created("inc-3", Severity::High, "checkout-api", "f-3").await; // high, inside business hours
    eventually("inc-1 and inc-3 paged", WAIT, || async { pd.alerts().len() >= 2 }).await;
    eventually("every fact handled", WAIT, || async { sink.metric("sre_bus_facts_handled_total", &["Acked"]) >= 4.0 })
        .await;
    let alerts = pd.alerts();
    assert_eq!(alerts.len(), 2, "one page each for inc-1 and inc-3: {alerts:?}");
    let inc1 = alerts.iter().position(|a| a.dedup_key == "inc-1").expect("inc-1 paged");
    assert!(alerts.iter().any(|a| a.dedup_key == "inc-3"), "{alerts:?}");
    let trigger = &alerts[inc1].trigger;
    assert_eq!(alerts[inc1].routing_key, ROUTING_KEY);
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["summary"], "checkout-api: error rate above 5%");
    assert_eq!(pd.events().len(), 2, "the repeated fact sent nothing");

    s.acknowledged("inc-1").await;
    eventually("acknowledged", WAIT, || async { pd.alerts()[inc1].status == AlertStatus::Acknowledged }).await;
    s.resolved("inc-1").await;
    s.resolved("inc-2").await; // never paged (below the threshold): cancelled, nothing sent
    eventually("resolved", WAIT, || async { pd.alerts()[inc1].status == AlertStatus::Resolved }).await;
    eventually("inc-2's resolve handled", WAIT, || async {
        sink.metric("paging_sink_follow_ups_total", &["Resolve", "Cancelled"]) >= 1.0
    })
    .await;
    let events = pd.events();
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(events.iter().all(|e| e.applied && e.routing_key == ROUTING_KEY), "same routing key: {events:?}");
    assert!(!sink.logs().contains(ROUTING_KEY), "the routing key is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_outside_hours_waits_for_the_opening_survives_a_restart_and_an_acknowledged_one_never_pages() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let (hours, opening) = opening_in(10);
    let s = stack(&config(&pd, None, &hours));
    let mut sink = s.sink("paging-0");

    s.created("inc-night", Severity::High, "checkout-api", "f-night").await;
    s.created("inc-acked", Severity::High, "checkout-api", "f-acked").await;
    s.created("inc-crit", Severity::Critical, "checkout-api", "f-crit").await;
    eventually("both deferred", WAIT, || async { sink.metric("paging_sink_pages_total", &["Deferred"]) >= 2.0 }).await;
    eventually("critical paged at once", WAIT, || async { pd.alerts().len() == 1 }).await;
    s.acknowledged("inc-acked").await;
    eventually("deferred page cancelled", WAIT, || async {
        sink.metric("paging_sink_follow_ups_total", &["Cancelled"]) >= 1.0
    })
    .await;
    assert!(jiff::Timestamp::now() < opening, "the test's setup outran the opening; raise the delay");

    // Restart: the deferral lives on the bus, not in the process.
    let exit = sink.terminate(WAIT).expect("stops");
    assert!(exit.success(), "{}", sink.logs());
    let _sink = s.sink("paging-1");
    eventually("the deferred page fires", WAIT, || async { pd.alerts().len() >= 2 }).await;
    let paged_at = jiff::Timestamp::now();
    assert!(paged_at >= opening, "paged at {paged_at}, before the opening at {opening}");
    let alerts = pd.alerts();
    let keys: Vec<&str> = alerts.iter().map(|a| a.dedup_key.as_str()).collect();
    assert_eq!(keys, ["inc-crit", "inc-night"], "the acknowledged one never pages");
    assert_eq!(alerts[1].trigger["payload"]["severity"], "error", "high is PagerDuty's error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_waited_out_and_a_refused_page_goes_to_the_dead_letter_stream() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let s = stack(&config(&pd, None, ALWAYS));
    let sink = s.sink("paging-0");

    pd.fail_next(&[(429, Some(1)), (503, None)]);
    s.created("inc-throttled", Severity::Critical, "checkout-api", "f-t").await;
    eventually("paged after 429 and 503", WAIT, || async { pd.alerts().len() == 1 }).await;
    assert_eq!(pd.requests(), 3, "one 429, one 503, one accepted");

    // The legacy route's key is malformed: PagerDuty answers 400, which no retry fixes.
    s.created("inc-legacy", Severity::Critical, "legacy", "f-l").await;
    eventually("dead-lettered", WAIT, || async {
        !stream_records(&s.nats.url(), streams::DEAD_LETTER).await.is_empty()
    })
    .await;
    let dead = stream_records(&s.nats.url(), streams::DEAD_LETTER).await;
    let reason = dead[0].1.get(headers::DEAD_LETTER_REASON).map(|v| v.to_string()).unwrap_or_default();
    assert!(reason.contains("400") && reason.contains("routing_key"), "the vendor's reason: {reason}");
    assert!(!reason.contains("too-short-a-key"), "never the key itself: {reason}");
    let decoded = IncidentCreated::decode(dead[0].2.clone()).expect("the original fact");
    assert_eq!(decoded.incident_id, "inc-legacy");
    assert_eq!(sink.metric("paging_sink_pages_total", &["Failed"]), 1.0);
    assert_eq!(pd.alerts().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_page_each_incident_once_from_the_sender_and_hand_over_on_stop() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let s = stack(&config(&pd, None, ALWAYS));
    let mut a = s.sink("paging-a");
    let mut b = s.sink("paging-b");
    for i in 0..20 {
        s.created(&format!("inc-{i}"), Severity::Critical, "checkout-api", &format!("f-{i}")).await;
        s.created(&format!("inc-{i}"), Severity::Critical, "checkout-api", &format!("f-{i}-repeat")).await;
    }
    eventually("twenty pages", WAIT, || async { pd.alerts().len() >= 20 }).await;
    let acked = |p: &ServiceProcess| p.metric("sre_bus_facts_handled_total", &["Acked"]);
    eventually("every fact handled", WAIT, || async { acked(&a) + acked(&b) >= 40.0 }).await;
    assert_eq!(pd.alerts().len(), 20, "one page per incident across two replicas");
    // One replica holds the sender lease and makes every call; the other stands by, ready.
    let senders = [a.metric("paging_sink_sender", &[]), b.metric("paging_sink_sender", &[])];
    assert_eq!(senders.iter().sum::<f64>(), 1.0, "exactly one sender: {senders:?}");
    let (sender, standby) = if senders[0] == 1.0 { (&mut a, &mut b) } else { (&mut b, &mut a) };
    assert_eq!(acked(standby), 0.0, "the standby handled nothing");
    assert_eq!(standby.get("/readyz").map(|(status, _)| status), Some(200), "the standby is ready");
    // A sender stopping gives the lease up: the standby pages the next incident at once.
    sender.terminate(Duration::from_secs(30)).expect("stops");
    s.created("inc-after", Severity::Critical, "checkout-api", "f-after").await;
    eventually("paged by the standby", Duration::from_secs(10), || async { pd.alerts().len() == 21 }).await;
    assert_eq!(standby.metric("paging_sink_sender", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opsgenie_pages_by_alias_and_closes_the_same_alert() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let og = FakeOpsgenie::start(GENIE_KEY).await.expect("opsgenie");
    let s = stack(&config(&pd, Some(&og), ALWAYS));
    let _sink = s.sink("paging-0");

    s.created("inc-etl", Severity::Critical, "etl", "f-etl").await;
    eventually("paged in opsgenie", WAIT, || async { og.alerts().len() == 1 }).await;
    let alert = &og.alerts()[0];
    assert_eq!(alert.alias, "inc-etl");
    assert_eq!(alert.create["priority"], "P1");
    assert_eq!(alert.create["responders"][0]["name"], "data-oncall");
    s.acknowledged("inc-etl").await;
    eventually("acknowledged", WAIT, || async { og.alerts()[0].status == "acknowledged" }).await;
    s.resolved("inc-etl").await;
    eventually("closed", WAIT, || async { og.alerts()[0].status == "closed" }).await;
    assert!(og.failed_requests().is_empty(), "every request found its alert: {:?}", og.failed_requests());
    assert!(pd.alerts().is_empty(), "routed to opsgenie only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_go_to_the_routing_key_that_paged_even_after_the_routes_change() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let s = stack(&config(&pd, None, ALWAYS));
    let mut sink = s.sink("paging-0");
    s.created("inc-moved", Severity::Critical, "checkout-api", "f-m").await;
    eventually("paged", WAIT, || async { pd.alerts().len() == 1 }).await;
    sink.terminate(WAIT).expect("stops");

    // The default routing key changes. PagerDuty drops an acknowledge on another routing
    // key silently (202), so sending it there would leave the on-call paged.
    let moved =
        config(&pd, None, ALWAYS).replace("routing_key_ref: platform/pagerduty", "routing_key_ref: platform/pd-other");
    std::fs::write(&s.config, moved).expect("config");
    let _sink = s.sink("paging-1");
    s.acknowledged("inc-moved").await;
    eventually("acknowledged", WAIT, || async { pd.alerts()[0].status == AlertStatus::Acknowledged }).await;
    let ack = pd.events().into_iter().find(|e| e.action == "acknowledge").expect("ack sent");
    assert_eq!(ack.routing_key, ROUTING_KEY);
    assert!(ack.applied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_logs_what_it_would_page_and_sends_nothing() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let s =
        stack(&config(&pd, None, ALWAYS).replace("paging_integration:\n", "paging_integration:\n  dry_run: true\n"));
    let sink = s.sink("paging-0");
    s.created("inc-dry", Severity::Critical, "checkout-api", "f-dry").await;
    s.resolved("inc-dry").await;
    eventually("both facts handled", WAIT, || async {
        sink.metric("paging_sink_pages_total", &["DryRun"]) >= 1.0
            && sink.metric("paging_sink_follow_ups_total", &["DryRun"]) >= 1.0
    })
    .await;
    assert_eq!(pd.requests(), 0, "nothing sent");
    assert!(sink.logs().contains("dry run: would page"), "{}", sink.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_fire_each_deferred_page_once() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let (hours, opening) = opening_in(8);
    let s = stack(&config(&pd, None, &hours));
    let a = s.sink("paging-a");
    let b = s.sink("paging-b");
    for i in 0..5 {
        s.created(&format!("inc-deferred-{i}"), Severity::High, "checkout-api", &format!("f-d-{i}")).await;
    }
    eventually("all deferred", WAIT, || async {
        a.metric("paging_sink_pages_total", &["Deferred"]) + b.metric("paging_sink_pages_total", &["Deferred"]) >= 5.0
    })
    .await;
    assert!(pd.alerts().is_empty() && jiff::Timestamp::now() < opening, "nothing before the opening");
    eventually("all fired", WAIT, || async { pd.alerts().len() >= 5 }).await;
    let fired = || a.metric("paging_sink_pages_total", &["Fired"]) + b.metric("paging_sink_pages_total", &["Fired"]);
    eventually("every firing recorded", WAIT, || async { fired() >= 5.0 }).await;
    // A second firing would show as a second trigger, merged by PagerDuty into the alert.
    assert_eq!(pd.alerts().len(), 5, "one page each across two replicas");
    assert!(pd.alerts().iter().all(|a| a.merged == 0), "no trigger sent twice: {:?}", pd.alerts());
    assert_eq!(pd.events().len(), 5);
    assert_eq!(fired(), 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledge_after_a_crash_mid_trigger_finishes_the_page_and_acknowledges_it() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    // A short ack_wait would hide the bug: the acknowledge must not depend on the
    // IncidentCreated being redelivered first.
    let yaml = config(&pd, None, ALWAYS) + "  consumer:\n    ack_wait: 60s\n";
    let s = stack(&yaml);
    let mut sink = s.sink("paging-0");
    // PagerDuty takes the trigger but the sink dies before it hears back: the record stays
    // Claimed and the IncidentCreated unacked (it comes back only after ack_wait).
    pd.set_answer_delay(Duration::from_secs(5));
    s.created("inc-crash", Severity::Critical, "checkout-api", "f-crash").await;
    eventually("the trigger is at PagerDuty, its answer held", WAIT, || async { pd.answers_held() >= 1 }).await;
    sink.kill();
    pd.set_answer_delay(Duration::ZERO);
    let sink = s.sink("paging-0b");

    s.acknowledged("inc-crash").await;
    eventually("acknowledged well before the IncidentCreated comes back", Duration::from_secs(20), || async {
        pd.alerts().first().is_some_and(|a| a.status == AlertStatus::Acknowledged)
    })
    .await;
    let dead = stream_records(&s.nats.url(), streams::DEAD_LETTER).await;
    assert!(dead.is_empty(), "nothing given up on: {}", dead.len());
    assert_eq!(pd.alerts().len(), 1, "one page");
    let _ = sink;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_acknowledged_before_its_page_was_sent_never_pages() {
    // After a crash, an IncidentCreated delivered but not handled returns only after
    // ack_wait, behind the acknowledge: the on-call is already on it, so no page follows.
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let s = stack(&config(&pd, None, ALWAYS));
    let sink = s.sink("paging-0");
    s.acknowledged("inc-early").await;
    eventually("the acknowledge recorded", WAIT, || async {
        sink.metric("paging_sink_follow_ups_total", &["NotPaged"]) >= 1.0
    })
    .await;
    s.created("inc-early", Severity::Critical, "checkout-api", "f-early").await;
    s.created("inc-other", Severity::Critical, "checkout-api", "f-other").await;
    eventually("both facts handled", WAIT, || async {
        sink.metric("sre_bus_facts_handled_total", &["IncidentCreated", "Acked"]) >= 2.0
    })
    .await;
    let alerts = pd.alerts();
    assert_eq!(alerts.len(), 1, "only inc-other pages: {alerts:?}");
    assert_eq!(alerts[0].dedup_key, "inc-other");
}

/// A deferred page follows the business hours in force, not the ones that deferred it:
/// after a restart with hours that open later it waits for the new opening, and after a
/// restart with hours open now it pages at once (it kept its stored due time before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_page_follows_the_hours_in_force_after_a_restart() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let (in_two_hours, _) = opening_in(2 * 3600);
    let s = stack(&config(&pd, None, &in_two_hours));
    let mut sink = s.sink("paging-0");
    s.created("inc-waiting", Severity::High, "checkout-api", "f-waiting").await;
    eventually("deferred", WAIT, || async { sink.metric("paging_sink_pages_total", &["Deferred"]) >= 1.0 }).await;
    assert!(sink.terminate(WAIT).expect("stops").success());

    // Hours that open an hour later still: the page waits, its due time moved.
    let (in_three_hours, _) = opening_in(3 * 3600);
    std::fs::write(&s.config, config(&pd, None, &in_three_hours)).expect("config");
    let mut later = s.sink("paging-1");
    eventually("the due time follows the new hours", WAIT, || async {
        later.logs().contains("deferred page follows the business hours in force")
    })
    .await;
    assert!(pd.events().is_empty(), "not paged before the new opening: {:?}", pd.events());
    assert!(later.terminate(WAIT).expect("stops").success());

    // The window was wrong and is open now: the waiting page goes out at once.
    std::fs::write(&s.config, config(&pd, None, ALWAYS)).expect("config");
    let now_open = s.sink("paging-2");
    eventually("paged under the hours in force", WAIT, || async { pd.alerts().len() == 1 }).await;
    assert_eq!(pd.alerts()[0].dedup_key, "inc-waiting");
    eventually("counted as fired", WAIT, || async { now_open.metric("paging_sink_pages_total", &["Fired"]) >= 1.0 })
        .await;
}

/// A deferred page whose firing replica died mid-call is fired by the next scan once its
/// claim has gone unrenewed for seconds (it waited two minutes before claims were renewed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_page_left_claimed_by_a_crash_is_fired_in_seconds() {
    use base64::Engine;
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let s = stack(&config(&pd, None, ALWAYS));
    let sink = s.sink("paging-0");
    // What a replica killed while firing a deferred page leaves: the claim, last renewed
    // 15 s ago, and the due marker.
    let incident = IncidentCreated {
        incident_id: "inc-left".into(),
        title: "checkout-api: error rate above 5%".into(),
        severity: Severity::High as i32,
        service: "checkout-api".into(),
        ..Default::default()
    };
    let at = (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(15)).to_string();
    let record = serde_json::json!({"incident_id": "inc-left", "state": "claimed",
        "target": {"provider": "pagerduty", "route": "default", "routing_key_ref": "platform/pagerduty"},
        "incident": base64::engine::general_purpose::STANDARD.encode(incident.encode_to_vec()),
        "updated_at": at, "deferred": true, "deferred_at": at});
    let js = async_nats::jetstream::new(async_nats::connect(s.nats.url()).await.expect("client"));
    let kv = js.get_key_value("sre_paging_sink_pages").await.expect("bucket");
    kv.put("page.inc-left", record.to_string().into()).await.expect("claim");
    kv.put("due.inc-left", at.into()).await.expect("marker");
    eventually("the left claim is fired", Duration::from_secs(10), || async { pd.alerts().len() == 1 }).await;
    assert_eq!(pd.alerts()[0].dedup_key, "inc-left");
    eventually("counted", WAIT, || async { sink.metric("paging_sink_pages_total", &["Fired"]) >= 1.0 }).await;
}

/// A deferred page the vendor keeps refusing after the opening shows how late it is
/// (`paging_sink_deferred_overdue_seconds`, what the overdue alert reads), and stops
/// showing once it is paged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_page_held_back_past_its_opening_is_shown_overdue_until_paged() {
    const OVERDUE: &str = "paging_sink_deferred_overdue_seconds ";
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let (hours, _) = opening_in(3);
    let s = stack(&config(&pd, None, &hours));
    let sink = s.sink("paging-0");
    // Four refusals exhaust the first firing (its retries honour Retry-After), the fifth
    // is the second firing's first attempt; then PagerDuty accepts.
    pd.fail_next(&[(429, Some(2)); 5]);
    s.created("inc-late", Severity::High, "checkout-api", "f-late").await;
    eventually("deferred", WAIT, || async { sink.metric("paging_sink_pages_total", &["Deferred"]) >= 1.0 }).await;
    assert_eq!(sink.metric(OVERDUE, &[]), 0.0, "not overdue before its opening");
    eventually("shown overdue while PagerDuty refuses", WAIT, || async { sink.metric(OVERDUE, &[]) >= 1.0 }).await;
    assert!(pd.alerts().is_empty(), "{:?}", pd.alerts());
    eventually("paged at last", WAIT, || async { pd.alerts().len() == 1 }).await;
    eventually("no longer overdue", WAIT, || async { sink.metric(OVERDUE, &[]) == 0.0 }).await;
    assert_eq!(sink.metric("paging_sink_pages_total", &["Fired"]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_whose_provider_was_removed_is_dead_lettered_saying_to_keep_it() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let og = FakeOpsgenie::start(GENIE_KEY).await.expect("opsgenie");
    let s = stack(&config(&pd, Some(&og), ALWAYS));
    let mut sink = s.sink("paging-0");
    s.created("inc-etl", Severity::Critical, "etl", "f-etl").await;
    eventually("paged in opsgenie", WAIT, || async { og.alerts().len() == 1 }).await;
    sink.terminate(WAIT).expect("stops");

    // The team removes `opsgenie:` (and its route) too early: the page made with it cannot
    // be followed up anywhere else, and the reason says what to do.
    std::fs::write(&s.config, config(&pd, None, ALWAYS)).expect("config");
    let _sink = s.sink("paging-1");
    s.resolved("inc-etl").await;
    eventually("dead-lettered", WAIT, || async {
        !stream_records(&s.nats.url(), streams::DEAD_LETTER).await.is_empty()
    })
    .await;
    let dead = stream_records(&s.nats.url(), streams::DEAD_LETTER).await;
    let reason = dead[0].1.get(headers::DEAD_LETTER_REASON).map(|v| v.to_string()).unwrap_or_default();
    assert!(
        reason.contains("paging_integration.opsgenie is not configured") && reason.contains("keep its section"),
        "{reason}"
    );
    assert_eq!(og.alerts()[0].status, "open", "nothing was sent elsewhere");
    assert!(pd.events().iter().all(|e| e.dedup_key != "inc-etl"), "not to PagerDuty either");
}

/// The team's event fields reach PagerDuty as the Events API takes them: `client` and
/// `client_url`, `payload.class`, and `images` (HTTPS, which the test PagerDuty checks),
/// each rendered from the incident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_url_class_and_images_reach_pagerduty_rendered_from_the_incident() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let yaml = config(&pd, None, ALWAYS).replace(
        "  pagerduty:\n",
        "  pagerduty:\n    client: \"SRE platform ({environment})\"\n    \
         client_url: \"https://sre.example/incidents/{incident_id}\"\n    class: \"{team}\"\n    \
         images:\n      - src: \"https://grafana.example/render/{service}.png\"\n        alt: \"{service} errors\"\n",
    );
    let s = stack(&yaml);
    let _sink = s.sink("paging-0");
    s.created("inc-fields", Severity::Critical, "checkout-api", "f-fields").await;
    eventually("paged", WAIT, || async { pd.alerts().len() == 1 }).await;
    let event = pd.alerts()[0].trigger.clone();
    assert_eq!(event["client"], "SRE platform (production)");
    assert_eq!(event["client_url"], "https://sre.example/incidents/inc-fields");
    assert_eq!(event["payload"]["class"], "payments");
    assert_eq!(
        event["images"],
        serde_json::json!([{"src": "https://grafana.example/render/checkout-api.png", "alt": "checkout-api errors"}])
    );
}

/// Opsgenie and JSM alerts the way teams configure them: a route's responders (a user and
/// a schedule beside its team), extra tags and details (templates), its own priority map
/// and entity reach the Alert API as it takes them; the section's defaults apply elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opsgenie_and_jsm_alerts_carry_the_routes_responders_tags_details_priority_and_entity() {
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let og = FakeOpsgenie::start(GENIE_KEY).await.expect("opsgenie");
    let yaml = format!(
        r#"paging_integration:
  default_provider: opsgenie
  pagerduty:
    routing_key_ref: platform/pagerduty
    base_url: {pd}
  opsgenie:
    api_key_ref: platform/opsgenie
    base_url: {og}
    default_team: sre
    tags: ["env:{{environment}}"]
    details: {{runbook: "{{runbook_url}}"}}
  jsm:
    api_key_ref: platform/opsgenie
    base_url: {jsm}
    responders: [{{type: escalation, name: platform-escalation}}]
    priorities: {{critical: P2}}
  routes:
    - match: {{team: data}}
      team: data-oncall
      responders:
        - {{type: user, username: ada@example.com}}
        - {{type: schedule, name: data-primary}}
      tags: ["owner:{{team}}"]
      details: {{dashboard: "https://grafana.example/d/etl?svc={{service}}"}}
      priorities: {{high: P1}}
      entity: "{{environment}}/{{service}}"
    - match: {{service: search}}
      provider: jsm
  escalation:
    critical: immediate
    high: immediate
"#,
        pd = pd.url(),
        og = og.url(),
        jsm = og.jsm_url(),
    );
    let s = stack(&yaml);
    let _sink = s.sink("paging-0");
    s.created("inc-etl", Severity::High, "etl", "f-etl").await;
    s.created("inc-web", Severity::Critical, "checkout-api", "f-web").await;
    s.created("inc-search", Severity::Critical, "search", "f-search").await;
    eventually("three alerts", WAIT, || async { og.alerts().len() == 3 }).await;
    let alert = |alias: &str| og.alerts().into_iter().find(|a| a.alias == alias).expect("alert").create;

    let etl = alert("inc-etl");
    assert_eq!(
        etl["responders"],
        serde_json::json!([{"type": "team", "name": "data-oncall"}, {"type": "user", "username": "ada@example.com"},
                           {"type": "schedule", "name": "data-primary"}])
    );
    assert_eq!(etl["priority"], "P1", "the route's map: high is P1 for this team");
    assert_eq!(etl["entity"], "production/etl");
    let tags: Vec<&str> = etl["tags"].as_array().expect("tags").iter().filter_map(|t| t.as_str()).collect();
    assert!(["severity:high", "env:production", "owner:data"].iter().all(|t| tags.contains(t)), "{tags:?}");
    assert_eq!(etl["details"]["dashboard"], "https://grafana.example/d/etl?svc=etl");
    assert_eq!(etl["details"]["runbook"], "https://runbooks.example.com/errors");

    let web = alert("inc-web");
    assert_eq!(web["responders"], serde_json::json!([{"type": "team", "name": "sre"}]));
    assert_eq!((web["priority"].as_str(), web["entity"].as_str()), (Some("P1"), Some("checkout-api")));

    let search = og.alerts().into_iter().find(|a| a.alias == "inc-search").expect("jsm alert");
    assert_eq!(search.api, "jsm");
    assert_eq!(search.create["responders"], serde_json::json!([{"type": "escalation", "name": "platform-escalation"}]));
    assert_eq!(search.create["priority"], "P2", "JSM's own map");
    assert!(og.failed_requests().is_empty(), "{:?}", og.failed_requests());
}
