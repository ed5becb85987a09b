//! Each test vendor shows what it received on a read-only page at `/`.

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
    assert!(body.contains("Read-only"), "{body}");
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
