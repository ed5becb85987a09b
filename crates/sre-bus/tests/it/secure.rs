//! The buses platform teams run, on real nats-servers: TLS from a private CA (the vendors'
//! trust roots untouched), mTLS with `verify_and_map`, TLS first, an NKey user, and
//! decentralized JWT accounts with a `.creds` file rotated mid-run. In each, an adapter's
//! intent is stored and the domain's fact reaches a sink's durable consumer.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use prost::Message as _;
use sre_bus::{
    Bus, BusConfig, BusMetrics, BusTls, ConsumerConfig, Disposition, FactConsumer, FactHandler, ReceivedFact,
};
use sre_contracts::BusMessage;
use sre_contracts::domain::v1::{IncidentCreated, IngestAlertRequested, MessageMeta, Source};
use sre_testkit::NatsServer;
use sre_testkit::secure::{Key, Operator, Pki};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn server(dir: &Path, conf: &str) -> NatsServer {
    let file = dir.join("nats.conf");
    std::fs::write(&file, conf).expect("config");
    NatsServer::start_with_config(&file).expect("nats-server with the secured configuration")
}

async fn bus(config: BusConfig) -> Bus {
    let source = Source { service: "ticketing-sink".into(), instance: "t-0".into() };
    let bus = Bus::connect(config, source, BusMetrics::default()).await.expect("client");
    tokio::time::timeout(Duration::from_secs(15), bus.ensure_topology(&CancellationToken::new()))
        .await
        .expect("the bus is reached in time")
        .expect("streams in place");
    bus
}

fn alert(key: &str) -> IngestAlertRequested {
    IngestAlertRequested {
        meta: Some(MessageMeta { idempotency_key: key.into(), ..Default::default() }),
        fingerprint: key.into(),
        ..Default::default()
    }
}

struct Seen(mpsc::UnboundedSender<String>);

impl FactHandler for Seen {
    async fn handle(&self, fact: ReceivedFact) -> Disposition {
        let incident = fact.decode::<IncidentCreated>().map(|i| i.incident_id).unwrap_or_default();
        let _ = self.0.send(incident);
        Disposition::Ack
    }
}

/// An adapter's intent is stored, and a fact the domain publishes reaches a sink's
/// durable consumer, both over `bus`.
async fn exercise(bus: &Bus, domain: &jetstream::Context, tag: &str) {
    let stored = bus.intent_publisher().publish(&alert(&format!("am:{tag}"))).await.expect("the intent is stored");
    assert!(!stored.duplicate);
    let fact = IncidentCreated { incident_id: format!("inc-{tag}"), ..Default::default() };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(sre_contracts::headers::MSG_ID, format!("created-{tag}").as_str());
    domain
        .publish_with_headers(IncidentCreated::SUBJECT, headers, fact.encode_to_vec().into())
        .await
        .expect("published")
        .await
        .expect("the fact is stored");
    let consumer = FactConsumer::bind(
        bus,
        ConsumerConfig {
            durable_name: format!("sink-{tag}"),
            filter_subjects: vec![IncidentCreated::SUBJECT.to_owned()],
            ..ConsumerConfig::default()
        },
    )
    .await
    .expect("the consumer binds");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let run = tokio::spawn(consumer.run(Seen(tx), cancel.clone()));
    let wanted = format!("inc-{tag}");
    let reached = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(id) = rx.recv().await {
            if id == wanted {
                return true;
            }
        }
        false
    });
    assert!(reached.await.expect("the fact reaches the sink in time"), "the fact reaches the sink");
    cancel.cancel();
    let _ = run.await;
}

#[tokio::test]
async fn tls_from_a_private_ca_reaches_the_bus_and_an_unknown_ca_does_not() {
    let pki = Pki::new().expect("ca");
    let server_cert = pki.issue("nats", &[LOCALHOST]).expect("server certificate");
    let conf = format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n",
        server_cert.cert.display().to_string(),
        server_cert.key.display().to_string()
    );
    let nats = server(pki.dir(), &conf);
    let tls = BusTls { ca_file: Some(pki.ca_file()), cert_file: None, key_file: None, handshake_first: false };
    let bus = bus(BusConfig { url: nats.url(), tls: Some(tls), ..BusConfig::default() }).await;
    let domain = async_nats::ConnectOptions::new()
        .add_root_certificates(pki.ca_file())
        .require_tls(true)
        .connect(nats.url())
        .await
        .expect("domain");
    exercise(&bus, &jetstream::new(domain), "tls").await;

    // Without the CA the server is not trusted: never connected, and readiness says so.
    let untrusted = Bus::connect(
        BusConfig {
            url: nats.url(),
            tls: Some(BusTls { ca_file: None, cert_file: None, key_file: None, handshake_first: false }),
            connect_timeout: Duration::from_millis(500),
            ..BusConfig::default()
        },
        Source { service: "paging-sink".into(), instance: "t-1".into() },
        BusMetrics::default(),
    )
    .await
    .expect("client");
    sre_testkit::bus::eventually("the handshake is refused", Duration::from_secs(10), || async {
        nats.log().contains("TLS handshake error")
    })
    .await;
    assert!(!untrusted.is_connected(), "a server signed by an unknown CA is refused");
    assert!(untrusted.readiness().is_err());
}

#[tokio::test]
async fn mtls_with_verify_and_map_names_the_user_by_its_certificate() {
    let pki = Pki::new().expect("ca");
    let server_cert = pki.issue("nats", &[LOCALHOST]).expect("server certificate");
    let sink = pki.issue("ticketing-sink", &[]).expect("client certificate");
    let domain_cert = pki.issue("sre-domain", &[]).expect("client certificate");
    let conf = format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify_and_map: true\n}}\n\
         accounts {{ SRE {{ jetstream: enabled, users: [ {{user: \"ticketing-sink\"}}, {{user: \"sre-domain\"}} ] }} }}\n",
        server_cert.cert.display().to_string(),
        server_cert.key.display().to_string(),
        pki.ca_file().display().to_string()
    );
    let nats = server(pki.dir(), &conf);
    let tls = BusTls {
        ca_file: Some(sink.ca.clone()),
        cert_file: Some(sink.cert.clone()),
        key_file: Some(sink.key.clone()),
        handshake_first: false,
    };
    let bus = bus(BusConfig { url: nats.url(), tls: Some(tls), ..BusConfig::default() }).await;
    let domain = async_nats::ConnectOptions::new()
        .add_root_certificates(pki.ca_file())
        .add_client_certificate(domain_cert.cert.clone(), domain_cert.key.clone())
        .connect(nats.url())
        .await
        .expect("domain");
    exercise(&bus, &jetstream::new(domain), "mtls").await;
    let (_, connz) = sre_testkit::http_get(nats.monitor_port(), "/connz?auth=true").expect("monitor");
    assert!(
        connz.contains("\"authorized_user\": \"ticketing-sink\""),
        "the server mapped the certificate to its user: {connz}"
    );
}

#[tokio::test]
async fn tls_first_for_servers_that_expect_the_handshake_before_nats() {
    let pki = Pki::new().expect("ca");
    let server_cert = pki.issue("nats", &[LOCALHOST]).expect("server certificate");
    let conf = format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  handshake_first: true\n}}\n",
        server_cert.cert.display().to_string(),
        server_cert.key.display().to_string()
    );
    let nats = server(pki.dir(), &conf);
    let tls = BusTls { ca_file: Some(pki.ca_file()), cert_file: None, key_file: None, handshake_first: true };
    let bus = bus(BusConfig { url: nats.url(), tls: Some(tls), ..BusConfig::default() }).await;
    let domain = async_nats::ConnectOptions::new()
        .add_root_certificates(pki.ca_file())
        .tls_first()
        .connect(nats.url())
        .await
        .expect("domain");
    exercise(&bus, &jetstream::new(domain), "first").await;
}

#[tokio::test]
async fn an_nkey_user_logs_in_with_its_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sink, domain_key) = (Key::user(), Key::user());
    let conf = format!(
        "accounts {{ SRE {{ jetstream: enabled, users: [ {{nkey: {}}}, {{nkey: {}}} ] }} }}\n",
        sink.public(),
        domain_key.public()
    );
    let nats = server(dir.path(), &conf);
    let seed_file = dir.path().join("seed");
    std::fs::write(&seed_file, sink.seed()).expect("seed");
    let bus = bus(BusConfig { url: nats.url(), nkey_seed_file: Some(seed_file), ..BusConfig::default() }).await;
    let domain = async_nats::ConnectOptions::new().nkey(domain_key.seed()).connect(nats.url()).await.expect("domain");
    exercise(&bus, &jetstream::new(domain), "nkey").await;
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64
}

#[tokio::test]
async fn jwt_accounts_with_a_creds_file_rotated_mid_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let operator = Operator::new();
    let mut nats = server(dir.path(), &operator.server_config());
    let creds = dir.path().join("ticketing-sink.creds");
    // A user JWT that expires in 4 s, as a short-lived credential a platform rotates.
    std::fs::write(&creds, operator.user_creds("ticketing-sink", None, Some(unix_now() + 4))).expect("creds");
    let bus = bus(BusConfig { url: nats.url(), credentials_file: Some(creds.clone()), ..BusConfig::default() }).await;
    let domain_creds = dir.path().join("domain.creds");
    std::fs::write(&domain_creds, operator.user_creds("sre-domain", None, None)).expect("creds");
    let domain = async_nats::ConnectOptions::with_credentials_file(&domain_creds)
        .await
        .expect("creds")
        .connect(nats.url())
        .await
        .expect("domain");
    let domain = jetstream::new(domain);
    exercise(&bus, &domain, "jwt-1").await;

    // The platform rotates the file (a new user JWT, mounted in place); the old one
    // expires and the server closes the connection; the next connection reads the new
    // file: no restart.
    std::fs::write(&creds, operator.user_creds("ticketing-sink", None, None)).expect("rotated creds");
    let reconnects = || bus.metrics().reconnects_count();
    sre_testkit::bus::eventually("the expired JWT's connection is closed", Duration::from_secs(15), || async {
        reconnects() >= 1
    })
    .await;
    sre_testkit::bus::eventually("reconnected with the rotated file", Duration::from_secs(15), || async {
        bus.readiness().is_ok()
    })
    .await;
    exercise(&bus, &domain, "jwt-2").await;
    // The server's notice that the old JWT expired may count once; the reconnect read the
    // rotated file at once, so no refusal followed it.
    assert!(bus.metrics().auth_failures_count() <= 1, "the rotated file was read, not the expired JWT again");
    let before = bus.metrics().auth_failures_count();

    // Credentials the server refuses (an account it does not know) are counted and named.
    let stranger = Operator::new();
    std::fs::write(&creds, stranger.user_creds("ticketing-sink", None, None)).expect("foreign creds");
    nats.restart().expect("restarts");
    sre_testkit::bus::eventually("the refusal is counted", Duration::from_secs(15), || async {
        bus.metrics().auth_failures_count() > before
    })
    .await;
    let why = bus.readiness().expect_err("not ready");
    assert!(why.contains("refused this service's credentials"), "{why}");
    std::fs::write(&creds, operator.user_creds("ticketing-sink", None, None)).expect("creds again");
    sre_testkit::bus::eventually("back with good credentials", Duration::from_secs(20), || async {
        bus.readiness().is_ok()
    })
    .await;
}
