//! SIGTERM while a webhook is in flight: the request completes, its alert is stored, and
//! the process exits 0 (nothing accepted is lost).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use sre_testkit::NatsServer;
use sre_testkit::service::ServiceProcess;

const SINGLE: &str = include_str!("../../../../tests/fixtures/alertmanager/webhook-v4-firing-single.json");

#[test]
fn a_webhook_in_flight_at_sigterm_is_stored_and_answered() {
    let nats = NatsServer::start().expect("nats-server");
    let mut ingress =
        ServiceProcess::spawn(Path::new(env!("CARGO_BIN_EXE_alertmanager-ingress")), &[], &[("NATS_URL", &nats.url())])
            .expect("spawns");
    ingress.wait_for_status("/readyz", 200, Duration::from_secs(20)).expect("ready");

    // Half a request: headers and the first half of the body.
    let mut conn = TcpStream::connect(("127.0.0.1", ingress.port())).expect("connects");
    conn.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    let (head, tail) = SINGLE.as_bytes().split_at(SINGLE.len() / 2);
    write!(
        conn,
        "POST /webhooks/alertmanager HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        SINGLE.len()
    )
    .expect("headers");
    conn.write_all(head).expect("first half");
    conn.flush().expect("flush");

    ingress.signal_term().expect("SIGTERM");
    // The listener closes once shutdown has begun: new connections are refused.
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", ingress.port())).is_ok() {
        assert!(start.elapsed() < Duration::from_secs(10), "the listener never closed");
        std::thread::sleep(Duration::from_millis(20));
    }

    conn.write_all(tail).expect("second half");
    let mut response = String::new();
    conn.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"intents_stored\":2"), "{response}");

    let exit = ingress.wait_exit(Duration::from_secs(30)).expect("exits");
    assert!(exit.success(), "{exit}: {}", ingress.logs());

    let stored = futures_executor(async {
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("client"));
        js.get_stream(sre_contracts::streams::INTENTS)
            .await
            .expect("stream")
            .get_info()
            .await
            .expect("info")
            .state
            .messages
    });
    assert_eq!(stored, 2, "the alert accepted during shutdown is on the stream");
}

fn futures_executor<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}
