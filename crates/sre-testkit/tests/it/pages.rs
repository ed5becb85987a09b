//! Each test vendor shows what it received on a page at `/`; where a person acts in the
//! vendor (acknowledge, resolve, close), its buttons do it and the vendor's webhook says so.

use sre_testkit::argocd::{App, FakeArgoCd};
use sre_testkit::github::FakeGithub;
use sre_testkit::jira::{FakeJira, Flavor};
use sre_testkit::opsgenie::FakeOpsgenie;
use sre_testkit::pagerduty::FakePagerDuty;

fn port(url: &str) -> u16 {
    url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port")
}

async fn page(url: &str) -> String {
    let port = port(url);
    let (status, body) =
        tokio::task::spawn_blocking(move || sre_testkit::http_get(port, "/")).await.expect("join").expect("answers");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Development stand-in"), "{body}");
    body
}

#[tokio::test]
async fn every_test_vendor_lists_what_it_received() {
    let jira = FakeJira::start(Flavor::DataCenter, "Bearer t", &["OPS"]).await.expect("jira");
    let key = jira.seed("OPS", "checkout-api error rate above 5%", &["sre-incident"]);
    let body = page(jira.url()).await;
    assert!(body.contains(&key) && body.contains("checkout-api error rate above 5%"), "{body}");

    let argo = FakeArgoCd::start("t", vec![App::new("payments", "production")]).await.expect("argo");
    argo.set_health("payments", "Degraded", "progress deadline exceeded");
    let body = page(argo.url()).await;
    assert!(body.contains("payments") && body.contains("Degraded"), "{body}");

    let pd = FakePagerDuty::start().await.expect("pagerduty");
    assert!(page(pd.url()).await.contains("0 received"));
    let gh = FakeGithub::start("t", &["example/incidents"]).await.expect("github");
    assert!(page(gh.url()).await.contains("Test GitHub"));
    let og = FakeOpsgenie::start("k").await.expect("opsgenie");
    assert!(page(og.url()).await.contains("Test Opsgenie"));
}

/// A webhook endpoint that keeps what it is sent: (headers, body).
async fn endpoint() -> (String, std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, String)>>>) {
    let got: std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, String)>>> = Default::default();
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let keep = keep.clone();
            async move {
                keep.lock().expect("lock").push((headers, body));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

async fn press(url: &str, path: &str) -> u16 {
    let (port, path) = (port(url), path.to_owned());
    tokio::task::spawn_blocking(move || sre_testkit::service::http_request(port, "POST", &path, &[], b""))
        .await
        .expect("join")
        .expect("answers")
        .0
}

fn hmac_hex(secret: &str, body: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_button_acts_as_a_person_and_the_vendor_sends_its_signed_webhook() {
    use sre_testkit::bus::eventually;
    let wait = std::time::Duration::from_secs(10);

    // PagerDuty: acknowledge a triggered alert from its page.
    let pd = FakePagerDuty::start().await.expect("pagerduty");
    let (hook, got) = endpoint().await;
    pd.subscribe(&hook, "pd-secret");
    let trigger = serde_json::json!({"routing_key": "R0UT1NGKEY0123456789ABCDEFGHIJKL", "event_action": "trigger",
        "dedup_key": "inc-7", "payload": {"summary": "checkout down", "source": "test", "severity": "critical"}});
    let body = trigger.to_string();
    let p = port(pd.url());
    let answer = tokio::task::spawn_blocking(move || {
        sre_testkit::service::http_request(p, "POST", "/v2/enqueue", &[], body.as_bytes())
    })
    .await
    .expect("join");
    assert_eq!(answer.map(|a| a.0), Some(202));
    let html = page(pd.url()).await;
    assert!(html.contains("/_person/acknowledge?key=inc-7"), "{html}");
    assert_eq!(press(pd.url(), "/_person/acknowledge?key=inc-7").await, 303);
    assert_eq!(pd.alerts()[0].status, sre_testkit::pagerduty::AlertStatus::Acknowledged);
    // (after the trigger's own `incident.triggered`)
    let acknowledged =
        || got.lock().expect("lock").iter().find(|(_, body)| body.contains("\"incident.acknowledged\"")).cloned();
    eventually("the webhook", wait, || async { acknowledged().is_some() }).await;
    let (headers, body) = acknowledged().expect("the acknowledged webhook");
    let signature = headers.get("x-pagerduty-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(signature, format!("v1={}", hmac_hex("pd-secret", &body)));
    let event: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(event["event"]["event_type"], "incident.acknowledged");
    assert_eq!(event["event"]["agent"]["type"], "user_reference", "a person acted");
    assert_eq!(event["event"]["data"]["incident_key"], "inc-7");

    // Jira: close an issue from its page.
    let jira = FakeJira::start(Flavor::Cloud, "Basic t", &["OPS"]).await.expect("jira");
    let (hook, got) = endpoint().await;
    jira.subscribe(&hook, "jira-secret");
    let key = jira.seed("OPS", "checkout down", &["sre-incident-abc"]);
    assert_eq!(press(jira.url(), &format!("/_person/close?key={key}")).await, 303);
    assert_eq!(jira.issues()[0].status, "Closed");
    eventually("the webhook", wait, || async { !got.lock().expect("lock").is_empty() }).await;
    let (headers, body) = got.lock().expect("lock")[0].clone();
    let signature = headers.get("x-hub-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert_eq!(signature, format!("sha256={}", hmac_hex("jira-secret", &body)));
    let event: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(event["webhookEvent"], "jira:issue_updated");
    assert_eq!(event["issue"]["fields"]["status"]["name"], "Closed");
    assert_eq!(event["changelog"]["items"][0]["field"], "status");
    assert_eq!(event["user"]["displayName"], sre_testkit::vendor::PERSON);

    // GitHub: close an issue from its page (signed `issues.closed`, by a user, not the bot).
    let gh = FakeGithub::start("t", &["example/incidents"]).await.expect("github");
    let (hook, got) = endpoint().await;
    gh.subscribe(&hook, "gh-secret");
    let p = port(gh.url());
    let created = tokio::task::spawn_blocking(move || {
        let headers = [("Authorization", "Bearer t"), ("User-Agent", "test"), ("Content-Type", "application/json")];
        sre_testkit::service::http_request(
            p,
            "POST",
            "/repos/example/incidents/issues",
            &headers,
            br#"{"title":"down"}"#,
        )
    })
    .await
    .expect("join");
    assert_eq!(created.map(|c| c.0), Some(201));
    eventually("the bot's issues.opened", wait, || async { got.lock().expect("lock").len() == 1 }).await;
    assert_eq!(press(gh.url(), "/_person/close?key=example%2Fincidents%231").await, 303);
    assert_eq!(gh.issues()[0].state, "closed");
    eventually("the close webhook", wait, || async { got.lock().expect("lock").len() == 2 }).await;
    let (headers, body) = got.lock().expect("lock")[1].clone();
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(header("x-hub-signature-256"), format!("sha256={}", hmac_hex("gh-secret", &body)));
    assert_eq!(header("x-github-event"), "issues");
    let event: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!((event["action"].as_str(), event["sender"]["type"].as_str()), (Some("closed"), Some("User")));

    // Opsgenie: acknowledge an alert from its page (the shared-secret header, source web).
    let og = FakeOpsgenie::start("k").await.expect("opsgenie");
    let (hook, got) = endpoint().await;
    og.subscribe(&hook, "X-Sre-Webhook-Secret", "og-secret");
    let p = port(og.url());
    let created = tokio::task::spawn_blocking(move || {
        let headers = [("Authorization", "GenieKey k"), ("Content-Type", "application/json")];
        sre_testkit::service::http_request(p, "POST", "/v2/alerts", &headers, br#"{"message":"down","alias":"inc-9"}"#)
    })
    .await
    .expect("join");
    assert_eq!(created.map(|c| c.0), Some(202));
    eventually("the API integration's Create", wait, || async { got.lock().expect("lock").len() == 1 }).await;
    assert_eq!(press(og.url(), "/_person/acknowledge?key=inc-9").await, 303);
    assert_eq!(og.alerts()[0].status, "acknowledged");
    eventually("the acknowledge webhook", wait, || async { got.lock().expect("lock").len() == 2 }).await;
    let (headers, body) = got.lock().expect("lock")[1].clone();
    assert_eq!(headers.get("x-sre-webhook-secret").and_then(|v| v.to_str().ok()), Some("og-secret"));
    let event: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!((event["action"].as_str(), event["source"]["type"].as_str()), (Some("Acknowledge"), Some("web")));
    assert_eq!(event["alert"]["alias"], "inc-9");
}
