//! The real argocd-sync binary against the test Argo CD and a real nats-server: what it
//! publishes, across changes, restarts, a second replica and a failing Argo CD.

use std::path::Path;
use std::time::Duration;

use prost::Message;
use sre_contracts::domain::v1::{AppHealth, HealthChange, RecordFleetStateRequested, RecordHealthCheckRequested};
use sre_contracts::{BusMessage, streams};
use sre_testkit::NatsServer;
use sre_testkit::argocd::{App, FakeArgoCd, Fields, Mode};
use sre_testkit::bus::{eventually, stream_messages};
use sre_testkit::service::ServiceProcess;

const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzcmUtYm90In0.c2lnbmF0dXJl";
const WAIT: Duration = Duration::from_secs(30);

fn config(dir: &Path, argo: &FakeArgoCd) -> std::path::PathBuf {
    config_with(dir, argo, "poll_interval: 1s\n  lease_ttl: 3s")
}

fn config_with(dir: &Path, argo: &FakeArgoCd, timing: &str) -> std::path::PathBuf {
    let path = dir.join("argocd-sync.yaml");
    let yaml = format!(
        "argocd_integration:\n  {timing}\n  argocd_server:\n    - url: {}\n      \
         secret_ref: platform/argocd-token\n      request_timeout: 2s\n  environments: [production, staging]\n",
        argo.url()
    );
    std::fs::write(&path, yaml).expect("write config");
    path
}

fn spawn(config: &Path, nats: &NatsServer, pod: &str, token: &str) -> ServiceProcess {
    let mut p = ServiceProcess::spawn(
        Path::new(env!("CARGO_BIN_EXE_argocd-sync")),
        &["--config", config.to_str().expect("utf-8")],
        &[("NATS_URL", &nats.url()), ("POD_NAME", pod), ("SECRET_PLATFORM_ARGOCD_TOKEN_TOKEN", token)],
    )
    .expect("spawns");
    p.wait_for_status("/healthz", 200, WAIT).expect("alive");
    p
}

async fn health_checks(nats: &NatsServer) -> Vec<RecordHealthCheckRequested> {
    stream_messages(&nats.url(), streams::INTENTS)
        .await
        .into_iter()
        .filter(|(subject, _)| subject == RecordHealthCheckRequested::SUBJECT)
        .map(|(_, body)| RecordHealthCheckRequested::decode(body).expect("decodes"))
        .collect()
}

async fn fleet_states(nats: &NatsServer) -> Vec<RecordFleetStateRequested> {
    stream_messages(&nats.url(), streams::INTENTS)
        .await
        .into_iter()
        .filter(|(subject, _)| subject == RecordFleetStateRequested::SUBJECT)
        .map(|(_, body)| RecordFleetStateRequested::decode(body).expect("decodes"))
        .collect()
}

/// Waits until Argo CD has been polled `n` more times: cycles that had the chance to
/// publish something.
async fn polls(argo: &FakeArgoCd, n: u64) {
    let target = argo.requests() + n;
    eventually("more polls", WAIT, || async { argo.requests() >= target }).await;
}

fn apps() -> Vec<App> {
    vec![App::new("web", "production"), App::new("api", "production"), App::new("db", "staging"), App::new("x", "dev")]
}

fn changes_of(checks: &[RecordHealthCheckRequested], app: &str) -> Vec<(i32, i32, i32)> {
    checks
        .iter()
        .filter(|h| h.app.ends_with(&format!("/{app}")))
        .map(|h| (h.change, h.previous_health, h.health))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_changes_only_and_a_restart_does_not_repeat_them() {
    let nats = NatsServer::start().expect("nats");
    let argo = FakeArgoCd::start(TOKEN, apps()).await.expect("argo");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &argo);
    let mut sync = spawn(&config, &nats, "argocd-sync-0", TOKEN);

    eventually("three apps appeared", WAIT, || async { health_checks(&nats).await.len() >= 3 }).await;
    polls(&argo, 2).await;
    let checks = health_checks(&nats).await;
    assert_eq!(checks.len(), 3, "web, api, db appear once; x is in no configured environment: {checks:?}");
    assert!(checks.iter().all(|h| h.change == HealthChange::Appeared as i32));

    argo.set_health("api", "Degraded", "Deployment api exceeded its progress deadline");
    eventually("api's change", WAIT, || async { health_checks(&nats).await.len() >= 4 }).await;
    polls(&argo, 2).await;
    let checks = health_checks(&nats).await;
    assert_eq!(checks.len(), 4, "{checks:?}");
    let change = &checks[3];
    assert_eq!(
        (change.change, change.previous_health, change.health),
        (HealthChange::Changed as i32, AppHealth::Healthy as i32, AppHealth::Degraded as i32)
    );
    assert_eq!(change.message, "Deployment api exceeded its progress deadline");
    assert_eq!((change.environment.as_str(), change.revision.as_str()), ("production", "0123456789abcdef"));
    assert!(change.reconciled_at.is_some() && change.observed_at.is_some());

    let fleet = fleet_states(&nats).await;
    let last_prod = fleet.iter().rev().find(|f| f.environment == "production").expect("production fleet state");
    assert!(last_prod.observation_ok);
    assert_eq!(last_prod.total, 2);
    assert_eq!(last_prod.by_health.as_ref().map(|h| (h.healthy, h.degraded)), Some((1, 1)));
    assert_eq!(last_prod.unhealthy.len(), 1);
    assert!(fleet.iter().any(|f| f.environment == "staging" && f.total == 1));
    assert!(!fleet.iter().any(|f| f.environment == "dev"), "only configured environments are reported");

    // Stop, change one app while it is down, start again: only that change is published.
    let exit = sync.terminate(WAIT).expect("stops");
    assert!(exit.success(), "{}", sync.logs());
    argo.set_health("db", "Progressing", "");
    let _sync = spawn(&config, &nats, "argocd-sync-0", TOKEN);
    eventually("db's change after the restart", WAIT, || async { health_checks(&nats).await.len() >= 5 }).await;
    polls(&argo, 3).await;
    let checks = health_checks(&nats).await;
    assert_eq!(checks.len(), 5, "nothing re-emitted after the restart: {checks:?}");
    assert_eq!(changes_of(&checks, "db").last().map(|c| c.2), Some(AppHealth::Progressing as i32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_publish_each_change_once_and_the_survivor_takes_over() {
    let nats = NatsServer::start().expect("nats");
    let argo = FakeArgoCd::start(TOKEN, apps()).await.expect("argo");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &argo);
    let a = spawn(&config, &nats, "argocd-sync-a", TOKEN);
    let b = spawn(&config, &nats, "argocd-sync-b", TOKEN);

    eventually("three apps appeared", WAIT, || async { health_checks(&nats).await.len() >= 3 }).await;
    for (n, health) in ["Degraded", "Healthy", "Degraded"].iter().enumerate() {
        argo.set_health("web", health, "");
        eventually("web's change", WAIT, || async { health_checks(&nats).await.len() > 3 + n }).await;
    }
    polls(&argo, 3).await;
    let checks = health_checks(&nats).await;
    assert_eq!(checks.len(), 6, "each change once, with two replicas running: {checks:?}");
    assert_eq!(changes_of(&checks, "web").len(), 4, "appeared, then three flips");

    // Kill the leader without a chance to release its lease: the other takes over.
    let leader_a = a
        .get("/metrics")
        .is_some_and(|(_, m)| m.lines().any(|l| l.starts_with("argocd_sync_leader{") && l.ends_with(" 1")));
    let (mut leader, _follower) = if leader_a { (a, b) } else { (b, a) };
    if let Some(pid) = leader.pid() {
        let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    let _ = leader.wait_exit(WAIT);
    argo.set_health("api", "Missing", "");
    eventually("the survivor publishes api's change", WAIT, || async { health_checks(&nats).await.len() >= 7 }).await;
    polls(&argo, 3).await;
    let checks = health_checks(&nats).await;
    assert_eq!(checks.len(), 7, "{checks:?}");
    assert_eq!(changes_of(&checks, "api").last().map(|c| c.2), Some(AppHealth::Missing as i32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_or_an_unreachable_argo_is_reported_not_silent() {
    let nats = NatsServer::start().expect("nats");
    let argo = FakeArgoCd::start(TOKEN, apps()).await.expect("argo");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &argo);
    let sync = spawn(&config, &nats, "argocd-sync-0", "eyJ.wrong.token");

    eventually("readiness names the refused token", WAIT, || async {
        sync.get("/readyz").is_some_and(|(status, body)| status == 503 && body.contains("unauthorized"))
    })
    .await;
    let readyz = sync.get("/readyz").map(|(_, b)| b).unwrap_or_default();
    assert!(readyz.contains("unauthorized") && readyz.contains("no session information"), "{readyz}");
    assert!(!readyz.contains("wrong"), "the token never appears: {readyz}");
    eventually("a failed observation", WAIT, || async { !fleet_states(&nats).await.is_empty() }).await;
    let fleet = fleet_states(&nats).await;
    assert!(fleet.iter().all(|f| !f.observation_ok && f.failure_reason.contains("unauthorized")), "{fleet:?}");
    polls(&argo, 2).await;
    let unauthorized_polls = sync.metric("argocd_sync_polls_total{", &["Unauthorized"]);
    assert!(unauthorized_polls >= 2.0);
    assert!(argo.requests() as f64 <= unauthorized_polls + 1.0, "one request per poll: a 401 is not retried");
    assert!(health_checks(&nats).await.is_empty());
    assert!(!sync.logs().contains("eyJ.wrong.token"), "the token is never logged");
    drop(sync);

    let _sync = spawn(&config, &nats, "argocd-sync-1", TOKEN);
    argo.set_mode(Mode::Unavailable);
    let before = fleet_states(&nats).await.len();
    eventually("an unreachable observation", WAIT, || async {
        fleet_states(&nats).await.iter().skip(before).any(|f| !f.observation_ok && f.failure_reason.contains("503"))
    })
    .await;
    argo.set_mode(Mode::Normal);
    eventually("apps appear once Argo CD answers", WAIT, || async { health_checks(&nats).await.len() >= 3 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_mode_publishes_changes_as_they_happen_and_reconnects() {
    let nats = NatsServer::start().expect("nats");
    let argo = FakeArgoCd::start(TOKEN, apps()).await.expect("argo");
    let dir = tempfile::tempdir().expect("tempdir");
    // A poll every 20 s: a change seen within the test's deadline came through the watch.
    let config = config_with(dir.path(), &argo, "mode: watch\n  poll_interval: 20s\n  lease_ttl: 60s");
    let _sync = spawn(&config, &nats, "argocd-sync-0", TOKEN);

    eventually("three apps appeared", WAIT, || async { health_checks(&nats).await.len() >= 3 }).await;
    eventually("the watch is open", WAIT, || async { argo.watches() >= 1 }).await;
    let polls = argo.requests();
    let gets = argo.served().gets;
    argo.set_health("api", "Degraded", "Back-off restarting failed container");
    eventually("api's change", Duration::from_secs(10), || async { health_checks(&nats).await.len() >= 4 }).await;
    assert_eq!(argo.requests(), polls, "published from the stream, before any poll");
    let checks = health_checks(&nats).await;
    assert_eq!(changes_of(&checks, "api").last().map(|c| c.2), Some(AppHealth::Degraded as i32));
    assert_eq!(checks[3].message, "Back-off restarting failed container");
    // The stream is asked for just the paths an event is planned from (the test Argo CD
    // sends only those): the revision and reconciledAt are among them, no GET needed.
    assert_eq!(checks[3].revision, "0123456789abcdef");
    assert!(checks[3].reconciled_at.is_some());
    assert_eq!(argo.served().gets, gets, "an event needs no second request");

    // argocd-server restarts: the stream ends, the service reconnects and carries on; the
    // snapshot of the new stream republishes nothing.
    argo.close_watches();
    eventually("reconnected", WAIT, || async { argo.watches() >= 2 }).await;
    argo.set_apps(apps().into_iter().filter(|a| a.name != "db").collect());
    eventually("db vanished", Duration::from_secs(10), || async { health_checks(&nats).await.len() >= 5 }).await;
    let checks = health_checks(&nats).await;
    assert_eq!(changes_of(&checks, "db").last().map(|c| c.0), Some(HealthChange::Vanished as i32));
    // api went back to Healthy in the new list (apps() is healthy): one more change, no more.
    eventually("api healthy again", Duration::from_secs(10), || async { health_checks(&nats).await.len() >= 6 }).await;
    assert_eq!(health_checks(&nats).await.len(), 6, "each change once: {:?}", health_checks(&nats).await);
}

/// What a health check says, without what differs between two runs (keys, clocks, the
/// server's address).
fn content(h: &RecordHealthCheckRequested) -> (String, String, String, i32, i32, i32, i32, String, String, bool) {
    (
        h.app.clone(),
        h.environment.clone(),
        h.project.clone(),
        h.change,
        h.previous_health,
        h.health,
        h.sync,
        h.message.clone(),
        h.revision.clone(),
        h.reconciled_at.is_some(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lean_list_publishes_what_a_whole_one_does_and_a_server_ignoring_fields_still_works() {
    // 150 applications: the first cycle's details come from one whole list (more than
    // DETAIL_GETS changed); a later change's detail from one GET.
    let fleet: Vec<App> =
        (0..150).map(|i| App::new(&format!("app-{i:03}"), if i % 3 == 0 { "staging" } else { "production" })).collect();
    let (nats_lean, nats_whole) = (NatsServer::start().expect("nats"), NatsServer::start().expect("nats"));
    let lean = FakeArgoCd::start(TOKEN, fleet.clone()).await.expect("argo");
    let whole = FakeArgoCd::start(TOKEN, fleet).await.expect("argo");
    whole.set_fields(Fields::Ignored);
    let (dir_lean, dir_whole) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let sync_lean = spawn(&config(dir_lean.path(), &lean), &nats_lean, "argocd-sync-0", TOKEN);
    let sync_whole = spawn(&config(dir_whole.path(), &whole), &nats_whole, "argocd-sync-0", TOKEN);

    for nats in [&nats_lean, &nats_whole] {
        eventually("every app appeared", WAIT, || async { health_checks(nats).await.len() >= 150 }).await;
    }
    assert_eq!(lean.served().gets, 0, "150 details in one whole list, not 150 requests");
    for argo in [&lean, &whole] {
        argo.set_health("app-007", "Degraded", "Deployment app-007 exceeded its progress deadline");
    }
    for nats in [&nats_lean, &nats_whole] {
        eventually("app-007's change", WAIT, || async { health_checks(nats).await.len() >= 151 }).await;
    }
    polls(&lean, 2).await;
    polls(&whole, 2).await;
    let (a, b) = (health_checks(&nats_lean).await, health_checks(&nats_whole).await);
    assert_eq!(a.len(), 151, "each change once");
    let (mut a, mut b): (Vec<_>, Vec<_>) = (a.iter().map(content).collect(), b.iter().map(content).collect());
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same content, whether Argo CD honours fields or not");
    let change = a.iter().find(|c| c.0 == "argocd/app-007" && c.5 == AppHealth::Degraded as i32).expect("change");
    assert_eq!((change.8.as_str(), change.9), ("0123456789abcdef", true), "revision and reconciledAt filled");
    assert_eq!(lean.served().gets, 1, "one GET for the one changed application");
    assert_eq!(sync_lean.metric("argocd_sync_change_details_total{", &["via=\"Get\""]), 1.0);
    assert_eq!(sync_lean.metric("argocd_sync_list_fields_ignored_total", &[]), 0.0);
    assert!(sync_whole.metric("argocd_sync_list_fields_ignored_total", &[]) >= 2.0, "counted every poll");
    assert_eq!(whole.served().gets, 0, "whole items need no detail");
    let warned = sync_whole.logs().matches("Argo CD ignored the list's `fields`").count();
    assert_eq!(warned, 1, "said once: {}", sync_whole.logs());
    // A steady lean poll is a fraction of a whole one on the wire.
    let (lists_before, bytes_before) = (lean.served().lists, lean.served().bytes);
    polls(&lean, 2).await;
    let per_list = (lean.served().bytes - bytes_before) / (lean.served().lists - lists_before).max(1);
    assert!(per_list / 150 < 500, "{per_list} bytes per lean list of 150 applications");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_detail_cannot_be_read_is_published_once_it_can() {
    let nats = NatsServer::start().expect("nats");
    let argo = FakeArgoCd::start(TOKEN, apps()).await.expect("argo");
    let dir = tempfile::tempdir().expect("tempdir");
    let sync = spawn(&config(dir.path(), &argo), &nats, "argocd-sync-0", TOKEN);
    eventually("three apps appeared", WAIT, || async { health_checks(&nats).await.len() >= 3 }).await;

    // Argo CD lists, but its single-application answers fail: the change waits.
    argo.set_get_mode(Mode::Unavailable);
    argo.set_health("web", "Degraded", "ImagePullBackOff");
    eventually("the detail deferred", WAIT, || async {
        sync.metric("argocd_sync_change_details_total{", &["via=\"Deferred\""]) >= 2.0
    })
    .await;
    assert_eq!(health_checks(&nats).await.len(), 3, "nothing published without its detail");
    let gets = argo.served().gets;
    assert!(gets >= 2, "retried through the resilience layer: {gets}");

    argo.set_get_mode(Mode::Normal);
    eventually("web's change", WAIT, || async { health_checks(&nats).await.len() >= 4 }).await;
    polls(&argo, 2).await;
    let checks = health_checks(&nats).await;
    assert_eq!(checks.len(), 4, "published once: {checks:?}");
    let web = &checks[3];
    assert_eq!((web.app.as_str(), web.health), ("argocd/web", AppHealth::Degraded as i32));
    assert_eq!((web.revision.as_str(), web.message.as_str()), ("0123456789abcdef", "ImagePullBackOff"));
}
