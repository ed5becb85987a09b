//! The Argo CD client against the test Argo CD, through the shared resilience layer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use argocd_sync::client::{ArgoClient, ArgoError};
use sre_resilience::{Backoff, BreakerConfig, CallError, ErrorClass, Retryable, Upstream, UpstreamConfig};
use sre_testkit::argocd::{App, FakeArgoCd, Mode};

const TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzcmUifQ.c2ln";

fn client(url: &str, token: &str) -> ArgoClient {
    ArgoClient::new(url, Some(token.to_owned().into()), Duration::from_millis(500), None).expect("client")
}

fn upstream() -> Upstream {
    Upstream::with_jitter(
        UpstreamConfig {
            name: "argocd",
            backoff: Backoff { initial: Duration::from_millis(10), max_attempts: 3, ..Backoff::default() },
            breaker: BreakerConfig::default(),
            rate_limit: None,
        },
        Arc::new(|| 0.0),
    )
}

#[tokio::test]
async fn lists_applications_and_reads_null_items_as_none() {
    let argo =
        FakeArgoCd::start(TOKEN, vec![App::new("web", "production"), App::new("api", "staging")]).await.expect("argo");
    let list = client(argo.url(), TOKEN).list_applications().await.expect("lists").list;
    let names: Vec<&str> = list.items.iter().map(|a| a.metadata.name.as_str()).collect();
    assert_eq!(names, ["api", "web"], "sorted by name");
    assert_eq!(list.items[1].metadata.labels["environment"], "production");
    argo.set_apps(Vec::new());
    assert!(client(argo.url(), TOKEN).list_applications().await.expect("lists").list.items.is_empty());
}

#[tokio::test]
async fn failures_are_classified_and_only_transient_ones_are_retried() {
    let argo = FakeArgoCd::start(TOKEN, vec![App::new("web", "production")]).await.expect("argo");

    let err = client(argo.url(), "wrong").list_applications().await.expect_err("unauthorized");
    assert_eq!(err.class(), ErrorClass::Auth);
    assert!(err.to_string().contains("401") && err.to_string().contains("no session information"), "{err}");
    assert!(!err.to_string().contains("wrong"), "the token never appears: {err}");

    // 401 through the resilience layer: one call, no retry loop.
    let before = argo.requests();
    let bad = client(argo.url(), "wrong");
    let out = upstream().call(|| bad.list_applications()).await;
    assert!(matches!(out, Err(CallError::Permanent(_))));
    assert_eq!(argo.requests() - before, 1);

    argo.set_mode(Mode::Unavailable);
    let err = client(argo.url(), TOKEN).list_applications().await.expect_err("503");
    assert_eq!(err.class(), ErrorClass::Transient);

    // A rate-limiting ingress in front of Argo CD: its Retry-After is what the resilience
    // layer waits for.
    argo.set_mode(Mode::Throttled(Duration::from_secs(7)));
    let err = client(argo.url(), TOKEN).list_applications().await.expect_err("429");
    assert_eq!((err.class(), err.retry_after()), (ErrorClass::Throttled, Some(Duration::from_secs(7))), "{err}");

    argo.set_mode(Mode::Slow(Duration::from_secs(2)));
    let err = client(argo.url(), TOKEN).list_applications().await.expect_err("slow");
    assert!(
        matches!(err, ArgoError::Transport { source: sre_runtime::outbound::TransportError::Timeout(_), .. }),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Transient);

    let unreachable = ArgoClient::new("http://127.0.0.1:1", None, Duration::from_millis(300), None).expect("client");
    assert_eq!(unreachable.list_applications().await.expect_err("refused").class(), ErrorClass::Transient);
}

#[tokio::test]
async fn a_transient_failure_is_retried_by_the_resilience_layer_then_succeeds() {
    let argo = Arc::new(FakeArgoCd::start(TOKEN, vec![App::new("web", "production")]).await.expect("argo"));
    argo.set_mode(Mode::Unavailable);
    let c = client(argo.url(), TOKEN);
    let calls = AtomicU32::new(0);
    let out = upstream()
        .call(|| {
            // The outage ends after the first attempt.
            if calls.fetch_add(1, Ordering::SeqCst) == 1 {
                argo.set_mode(Mode::Normal);
            }
            c.list_applications()
        })
        .await;
    assert_eq!(out.expect("second attempt succeeds").list.items.len(), 1);
    assert_eq!(argo.requests(), 2);
}

#[test]
fn bad_urls_and_ca_files_are_refused_clearly() {
    let err = ArgoClient::new("argocd.example.com", None, Duration::from_secs(1), None).expect_err("no scheme");
    assert!(err.to_string().contains("https:// or http://"), "{err}");
    let err = ArgoClient::new("https://argocd.example.com", None, Duration::from_secs(1), Some(b"not a pem"))
        .expect_err("no certificate");
    assert!(err.to_string().contains("ca_file"), "{err}");
}

#[tokio::test]
async fn https_with_a_private_ca_is_verified() {
    let (argo, ca_pem) = FakeArgoCd::start_tls(TOKEN, vec![App::new("web", "production")]).await.expect("argo");
    assert!(argo.url().starts_with("https://127.0.0.1:"));
    let trusted =
        ArgoClient::new(argo.url(), Some(TOKEN.to_owned().into()), Duration::from_secs(2), Some(ca_pem.as_bytes()))
            .expect("client");
    let listed = trusted.list_applications().await.expect("lists over TLS");
    assert_eq!(listed.list.items.len(), 1);

    // Without the CA the certificate is refused: no answer is read, and it is a transport
    // failure (the breaker's business), not a silent downgrade.
    let untrusted =
        ArgoClient::new(argo.url(), Some(TOKEN.to_owned().into()), Duration::from_secs(2), None).expect("client");
    let err = untrusted.list_applications().await.expect_err("unknown issuer");
    assert_eq!(err.class(), ErrorClass::Transient);
    assert_eq!(argo.requests(), 1, "the untrusted connection never reached the handler");
}

#[tokio::test]
async fn a_lean_list_carries_only_the_allowlisted_fields_and_a_get_the_rest() {
    use argocd_sync::config::EnvironmentFrom;
    let mut web = App::new("web", "production");
    web.realistic = true;
    let argo = FakeArgoCd::start(TOKEN, vec![web]).await.expect("argo");
    let c = client(argo.url(), TOKEN);
    let fields = argocd_sync::client::lean_list_fields(EnvironmentFrom::Label);
    let mut items = Vec::new();
    let stats = c.stream_applications(Some(&fields), |a| items.push(a)).await.expect("lists");
    assert_eq!(stats.items, 1);
    let app = &items[0];
    assert_eq!((app.metadata.name.as_str(), app.metadata.labels["environment"].as_str()), ("web", "production"));
    assert_eq!((app.spec.project.as_str(), app.status.health.status.as_str()), ("default", "Healthy"));
    assert!(!argocd_sync::cycle::is_whole(app), "no uid, revision or reconciledAt: {app:?}");
    assert!(app.status.sync.revision.is_empty());
    let whole = c.stream_applications(None, |_| {}).await.expect("lists");
    assert!(stats.bytes * 20 < whole.bytes, "{} vs {} bytes", stats.bytes, whole.bytes);

    let detail = c.get_application("argocd", "web").await.expect("gets");
    assert!(argocd_sync::cycle::is_whole(&detail));
    assert_eq!(detail.status.sync.revision, "0123456789abcdef");
    let gone = c.get_application("argocd", "deleted").await.expect_err("404");
    assert!(matches!(gone, ArgoError::Status { status: 404, .. }), "{gone}");
    assert_eq!(gone.class(), ErrorClass::Permanent, "a deleted application is not retried");
    let odd = c.get_application("argocd", "web?x=1").await.expect_err("not a name");
    assert!(matches!(odd, ArgoError::Invalid(_)), "{odd}");
    assert_eq!(argo.served().gets, 2, "the malformed name never left the process");
}
