//! The bus's private CA is the bus's alone: with it the bus is reached over TLS, while the
//! vendors' HTTPS client keeps the system's roots (unlike the `SSL_CERT_FILE` workaround,
//! which replaced the trust of every client in the process).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use sre_bus::{Bus, BusConfig, BusMetrics, BusTls};
use sre_contracts::domain::v1::Source;
use sre_runtime::outbound::HttpClient;
use sre_testkit::NatsServer;
use sre_testkit::secure::{HttpsHello, Pki};

#[tokio::test]
async fn a_bus_ca_does_not_become_a_vendor_root() {
    let pki = Pki::new().expect("ca");
    let cert = pki.issue("private", &[IpAddr::V4(Ipv4Addr::LOCALHOST)]).expect("certificate");
    let conf = pki.dir().join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n",
            cert.cert.display().to_string(),
            cert.key.display().to_string()
        ),
    )
    .expect("config");
    let nats = NatsServer::start_with_config(&conf).expect("nats-server over TLS");
    let tls = BusTls { ca_file: Some(pki.ca_file()), cert_file: None, key_file: None, handshake_first: false };
    let bus = Bus::connect(
        BusConfig { url: nats.url(), tls: Some(tls), ..BusConfig::default() },
        Source { service: "paging-sink".into(), instance: "t-0".into() },
        BusMetrics::default(),
    )
    .await
    .expect("client");
    sre_testkit::bus::eventually("the bus is reached over TLS with its CA", Duration::from_secs(10), || async {
        bus.is_connected()
    })
    .await;

    // A vendor endpoint with a certificate from the same private CA: refused by the vendor
    // client, which trusts the system's roots (and an extra CA only when one is given to it).
    let vendor = HttpsHello::start(&cert).await.expect("https");
    let get = || {
        http::Request::get(format!("https://127.0.0.1:{}/", vendor.port())).body(bytes::Bytes::new()).expect("request")
    };
    let plain = HttpClient::new(Duration::from_secs(3), None).expect("client");
    let refused = plain.send(get()).await.expect_err("the bus CA is no vendor root");
    assert!(refused.to_string().to_lowercase().contains("certificate"), "{refused}");
    let ca = std::fs::read(pki.ca_file()).expect("ca");
    let trusting = HttpClient::new(Duration::from_secs(3), Some(&ca)).expect("client");
    assert_eq!(trusting.send(get()).await.expect("trusted when given").status, 200);
}
