//! The bus against a real nats-server.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use prost::Message as _;
use sre_bus::{
    Bus, BusConfig, BusMetrics, ConsumerConfig, Disposition, FactConsumer, FactHandler, Kv, KvConfig, KvError,
    PublishError, PublishOutcome, ReceivedFact,
};
use sre_contracts::domain::v1::{
    IncidentClosed, IncidentCreated, IncidentResolved, IngestAlertRequested, MessageMeta, Source,
};
use sre_contracts::{BusMessage, headers, streams, subjects};
use sre_testkit::NatsServer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

async fn bus(server: &NatsServer) -> Bus {
    let config = BusConfig { url: server.url(), ack_timeout: Duration::from_secs(2), ..BusConfig::default() };
    let source = Source { service: "test".into(), instance: "t-0".into() };
    let bus = Bus::connect(config, source, BusMetrics::default()).await.expect("connects");
    bus.ensure_topology(&CancellationToken::new()).await.expect("topology");
    bus
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

fn alert(key: &str) -> IngestAlertRequested {
    IngestAlertRequested {
        meta: Some(MessageMeta { idempotency_key: key.into(), correlation_id: "corr-1".into(), ..Default::default() }),
        fingerprint: "00260c6d6cda79af".into(),
        ..Default::default()
    }
}

async fn raw(server: &NatsServer) -> jetstream::Context {
    jetstream::new(async_nats::connect(server.url()).await.expect("raw client"))
}

async fn stream_messages(js: &jetstream::Context, stream: &str) -> Vec<async_nats::jetstream::message::StreamMessage> {
    let s = js.get_stream(stream).await.expect("stream");
    let last = s.get_info().await.expect("info").state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = s.get_raw_message(seq).await {
            out.push(m);
        }
    }
    out
}

#[tokio::test]
async fn an_intent_is_stored_once_with_the_contract_headers() {
    let server = NatsServer::start().expect("nats-server");
    let bus = bus(&server).await;
    let publisher = bus.intent_publisher();
    let intent = alert("am:abc");

    let first = publisher.publish(&intent).await.expect("stored");
    let again = publisher.publish(&intent).await.expect("duplicate is success");
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.sequence, first.sequence);
    assert_eq!(bus.metrics().published_count(IngestAlertRequested::TYPE, PublishOutcome::Duplicate), 1);

    let stored = stream_messages(&raw(&server).await, streams::INTENTS).await;
    assert_eq!(stored.len(), 1, "the repeat stored nothing");
    let m = &stored[0];
    assert_eq!(m.subject.as_str(), "sre.domain.intents.v1.IngestAlertRequested");
    let h = &m.headers;
    assert_eq!(h.get(headers::MSG_ID).map(|v| v.as_str()), Some("am:abc"));
    assert_eq!(h.get(headers::CONTENT_TYPE).map(|v| v.as_str()), Some("application/x-protobuf"));
    assert_eq!(h.get(headers::MESSAGE_TYPE).map(|v| v.as_str()), Some("sre.domain.v1.IngestAlertRequested"));
    assert_eq!(h.get(headers::CORRELATION_ID).map(|v| v.as_str()), Some("corr-1"));
    assert!(h.get(headers::TRACEPARENT).is_some_and(|v| v.as_str().starts_with("00-")));
    assert_eq!(IngestAlertRequested::decode(m.payload.clone()).expect("protobuf body"), intent);
}

#[tokio::test]
async fn an_intent_without_idempotency_key_is_refused() {
    let server = NatsServer::start().expect("nats-server");
    let bus = bus(&server).await;
    let err = bus.intent_publisher().publish(&IngestAlertRequested::default()).await.expect_err("refused");
    assert!(matches!(err, PublishError::MissingIdempotencyKey(_)), "{err}");
}

#[tokio::test]
async fn many_replicas_put_the_streams_in_place_at_once() {
    let server = NatsServer::start().expect("nats-server");
    let replicas = futures::future::join_all((0..6).map(|_| bus(&server))).await;
    assert!(replicas.iter().all(|b| b.readiness().is_ok()));
    let js = raw(&server).await;
    for (name, subject) in [
        (streams::INTENTS, subjects::INTENTS_ALL),
        (streams::FACTS, subjects::FACTS_ALL),
        (streams::DEAD_LETTER, subjects::DEAD_LETTER_ALL),
    ] {
        let info = js.get_stream(name).await.expect("stream").get_info().await.expect("info");
        assert_eq!(info.config.subjects, [subject]);
        assert_eq!(info.config.duplicate_window, Duration::from_secs(300));
        assert_eq!(info.config.storage, jetstream::stream::StorageType::File);
    }
}

#[tokio::test]
async fn while_the_bus_is_down_publishes_fail_fast_and_readiness_says_so() {
    let mut server = NatsServer::start().expect("nats-server");
    let bus = bus(&server).await;
    assert!(bus.readiness().is_ok());
    server.kill();
    wait_until("the client notices", || !bus.is_connected()).await;
    assert_eq!(bus.readiness(), Err("not connected to nats".to_owned()));
    let err = bus.intent_publisher().publish(&alert("am:down")).await.expect_err("unavailable");
    assert!(err.is_retryable(), "{err}");

    server.restart().expect("restarts");
    wait_until("the client reconnects", || bus.readiness().is_ok()).await;
    bus.intent_publisher().publish(&alert("am:down")).await.expect("stored after the outage");
}

/// Records every fact it sees and answers from a script keyed by incident id.
struct Recorder {
    seen: mpsc::UnboundedSender<(String, String, u64)>,
    script: fn(&str, u64) -> Disposition,
    delay: Option<fn(&str) -> Duration>,
}

impl FactHandler for Recorder {
    async fn handle(&self, fact: ReceivedFact) -> Disposition {
        let id = fact_incident(&fact);
        if let Some(delay) = self.delay {
            tokio::time::sleep(delay(fact.message_name())).await;
        }
        let _ = self.seen.send((fact.message_name().to_owned(), id.clone(), fact.delivered));
        (self.script)(&id, fact.delivered)
    }
}

fn fact_incident(fact: &ReceivedFact) -> String {
    if fact.is::<IncidentCreated>() {
        fact.decode::<IncidentCreated>().expect("decodes").incident_id
    } else if fact.is::<IncidentResolved>() {
        fact.decode::<IncidentResolved>().expect("decodes").incident_id
    } else {
        fact.decode::<IncidentClosed>().expect("decodes").incident_id
    }
}

async fn publish_fact<M: BusMessage>(js: &jetstream::Context, fact: &M) {
    let mut h = async_nats::HeaderMap::new();
    h.insert(headers::MSG_ID, fact.idempotency_key());
    js.publish_with_headers(M::SUBJECT, h, fact.encode_to_vec().into()).await.expect("publish").await.expect("stored");
}

fn created(id: &str) -> IncidentCreated {
    IncidentCreated {
        meta: Some(MessageMeta { idempotency_key: format!("created:{id}"), ..Default::default() }),
        incident_id: id.into(),
        ..Default::default()
    }
}

fn consumer_config(name: &str) -> ConsumerConfig {
    ConsumerConfig { durable_name: name.into(), ack_wait: Duration::from_secs(5), ..ConsumerConfig::default() }
}

async fn start_consumer(
    bus: &Bus,
    config: ConsumerConfig,
    handler: Recorder,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let consumer = FactConsumer::bind(bus, config).await.expect("binds");
    let cancel = CancellationToken::new();
    let token = cancel.clone();
    let task = tokio::spawn(async move { consumer.run(handler, token).await.expect("runs") });
    (cancel, task)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<(String, String, u64)>) -> (String, String, u64) {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("a fact arrives in time").expect("open")
}

#[tokio::test]
async fn a_fact_is_retried_after_its_delay_then_acked() {
    let server = NatsServer::start().expect("nats-server");
    let bus = bus(&server).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = Recorder {
        seen: tx,
        script: |_, delivered| {
            if delivered < 2 {
                Disposition::Retry { after: Duration::from_millis(100), reason: "vendor busy".into() }
            } else {
                Disposition::Ack
            }
        },
        delay: None,
    };
    let (cancel, task) = start_consumer(&bus, consumer_config("retry"), handler).await;
    publish_fact(&raw(&server).await, &created("inc-1")).await;
    assert_eq!(next(&mut rx).await, ("IncidentCreated".into(), "inc-1".into(), 1));
    assert_eq!(next(&mut rx).await, ("IncidentCreated".into(), "inc-1".into(), 2));
    wait_until("the ack is counted", || bus.metrics().facts_count("IncidentCreated", sre_bus::FactOutcome::Acked) == 1)
        .await;
    cancel.cancel();
    task.await.expect("stops");
    assert!(rx.try_recv().is_err(), "acked facts are not redelivered");
}

#[tokio::test]
async fn permanent_failures_and_exhausted_retries_go_to_the_dead_letter_stream() {
    let server = NatsServer::start().expect("nats-server");
    let bus = bus(&server).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = Recorder {
        seen: tx,
        script: |id, _| match id {
            "bad" => Disposition::DeadLetter { reason: "vendor said 400: summary too long".into() },
            _ => Disposition::Retry { after: Duration::from_millis(20), reason: "vendor 503".into() },
        },
        delay: None,
    };
    let config = ConsumerConfig { max_deliver: 3, ..consumer_config("ticketing-sink") };
    let (cancel, task) = start_consumer(&bus, config, handler).await;
    let js = raw(&server).await;
    publish_fact(&js, &created("bad")).await;
    publish_fact(&js, &created("flaky")).await;

    let mut deliveries = Vec::new();
    for _ in 0..4 {
        deliveries.push(next(&mut rx).await);
    }
    deliveries.sort();
    assert_eq!(
        deliveries.iter().map(|(_, id, n)| (id.as_str(), *n)).collect::<Vec<_>>(),
        [("bad", 1), ("flaky", 1), ("flaky", 2), ("flaky", 3)]
    );
    wait_until("both are dead-lettered", || {
        bus.metrics().facts_count("IncidentCreated", sre_bus::FactOutcome::DeadLettered) == 2
    })
    .await;
    cancel.cancel();
    task.await.expect("stops");

    let dead = stream_messages(&js, streams::DEAD_LETTER).await;
    assert_eq!(dead.len(), 2);
    let reasons: Vec<(String, String, String)> = dead
        .iter()
        .map(|m| {
            let h = |k| m.headers.get(k).map(|v| v.as_str().to_owned()).unwrap_or_default();
            (h(headers::DEAD_LETTER_REASON), h(headers::DEAD_LETTER_CONSUMER), h(headers::DEAD_LETTER_SUBJECT))
        })
        .collect();
    assert!(reasons.contains(&(
        "vendor said 400: summary too long".into(),
        "ticketing-sink".into(),
        IncidentCreated::SUBJECT.into()
    )));
    assert!(reasons.contains(&(
        "gave up after 3 deliveries: vendor 503".into(),
        "ticketing-sink".into(),
        IncidentCreated::SUBJECT.into()
    )));
    assert_eq!(dead[0].subject.as_str(), "sre.deadletter.v1.ticketing-sink");
    let original = IncidentCreated::decode(dead[0].payload.clone()).expect("the original message is kept");
    assert!(["bad", "flaky"].contains(&original.incident_id.as_str()));
}

#[tokio::test]
async fn facts_of_one_incident_are_handled_in_order_under_parallelism() {
    let server = NatsServer::start().expect("nats-server");
    let bus = bus(&server).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = Recorder {
        seen: tx,
        script: |_, _| Disposition::Ack,
        // Created is slowest: if order were not kept, Resolved and Closed would overtake it.
        delay: Some(|name| match name {
            "IncidentCreated" => Duration::from_millis(60),
            "IncidentResolved" => Duration::from_millis(20),
            _ => Duration::ZERO,
        }),
    };
    let config = ConsumerConfig { parallelism: 4, ..consumer_config("order") };
    let (cancel, task) = start_consumer(&bus, config, handler).await;
    let js = raw(&server).await;
    let ids: Vec<String> = (0..6).map(|i| format!("inc-{i}")).collect();
    for id in &ids {
        publish_fact(&js, &created(id)).await;
    }
    for id in &ids {
        let meta = |k: &str| Some(MessageMeta { idempotency_key: format!("{k}:{id}"), ..Default::default() });
        publish_fact(&js, &IncidentResolved { meta: meta("resolved"), incident_id: id.clone(), ..Default::default() })
            .await;
        publish_fact(&js, &IncidentClosed { meta: meta("closed"), incident_id: id.clone(), ..Default::default() })
            .await;
    }
    let mut per_incident: std::collections::HashMap<String, Vec<String>> = Default::default();
    for _ in 0..18 {
        let (name, id, _) = next(&mut rx).await;
        per_incident.entry(id).or_default().push(name);
    }
    for id in &ids {
        assert_eq!(per_incident[id], ["IncidentCreated", "IncidentResolved", "IncidentClosed"], "{id}");
    }
    cancel.cancel();
    task.await.expect("stops");
}

#[tokio::test]
async fn replicas_share_one_durable_consumer_and_each_fact_is_handled_once() {
    let server = NatsServer::start().expect("nats-server");
    let (a, b) = (bus(&server).await, bus(&server).await);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = || Recorder { seen: tx.clone(), script: |_, _| Disposition::Ack, delay: None };
    let (cancel_a, task_a) = start_consumer(&a, consumer_config("shared"), handler()).await;
    let (cancel_b, task_b) = start_consumer(&b, consumer_config("shared"), handler()).await;
    let js = raw(&server).await;
    for i in 0..40 {
        publish_fact(&js, &created(&format!("inc-{i}"))).await;
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        let (_, id, delivered) = next(&mut rx).await;
        assert_eq!(delivered, 1);
        assert!(seen.insert(id.clone()), "{id} handled twice");
    }
    let handled = |bus: &Bus| bus.metrics().facts_count("IncidentCreated", sre_bus::FactOutcome::Acked);
    wait_until("all acks are counted", || handled(&a) + handled(&b) == 40).await;
    for (cancel, task) in [(cancel_a, task_a), (cancel_b, task_b)] {
        cancel.cancel();
        task.await.expect("stops");
    }
}

#[tokio::test]
async fn a_fact_left_unacked_by_a_stopped_replica_is_redelivered() {
    let server = NatsServer::start().expect("nats-server");
    let bus = bus(&server).await;
    let js = raw(&server).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let blocked = Arc::new(AtomicU32::new(0));
    // A first replica takes the fact and is aborted mid-handling (a crash).
    struct Stuck(Arc<AtomicU32>);
    impl FactHandler for Stuck {
        async fn handle(&self, _fact: ReceivedFact) -> Disposition {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::future::pending().await
        }
    }
    let config = ConsumerConfig { ack_wait: Duration::from_secs(1), ..consumer_config("crash") };
    let consumer = FactConsumer::bind(&bus, config.clone()).await.expect("binds");
    let crashed = tokio::spawn(consumer.run(Stuck(blocked.clone()), CancellationToken::new()));
    publish_fact(&js, &created("inc-crash")).await;
    wait_until("the first replica holds the fact", || blocked.load(Ordering::SeqCst) == 1).await;
    crashed.abort();

    let handler = Recorder { seen: tx, script: |_, _| Disposition::Ack, delay: None };
    let (cancel, task) = start_consumer(&bus, config, handler).await;
    let (_, id, delivered) = next(&mut rx).await;
    assert_eq!((id.as_str(), delivered), ("inc-crash", 2));
    cancel.cancel();
    task.await.expect("stops");
}

/// A sink stopping (SIGTERM, a rolling update) finishes the fact it is handling and hands
/// back what it pulled but has not started, so another replica takes those at once instead
/// of after `ack_wait`.
#[tokio::test]
async fn a_stopping_consumer_hands_back_what_it_has_not_started() {
    let server = NatsServer::start().expect("nats-server");
    let bus = bus(&server).await;
    let js = raw(&server).await;
    struct Gate(Arc<AtomicU32>, Arc<tokio::sync::Notify>);
    impl FactHandler for Gate {
        async fn handle(&self, _fact: ReceivedFact) -> Disposition {
            self.0.fetch_add(1, Ordering::SeqCst);
            self.1.notified().await;
            Disposition::Ack
        }
    }
    let config = ConsumerConfig { ack_wait: Duration::from_secs(60), parallelism: 1, ..consumer_config("handback") };
    let (started, release) = (Arc::new(AtomicU32::new(0)), Arc::new(tokio::sync::Notify::new()));
    let stopping = FactConsumer::bind(&bus, config.clone()).await.expect("binds");
    let cancel = CancellationToken::new();
    let run = tokio::spawn(stopping.run(Gate(started.clone(), release.clone()), cancel.clone()));
    for n in 0..4 {
        publish_fact(&js, &created(&format!("inc-hb-{n}"))).await;
    }
    wait_until("the first fact is being handled", || started.load(Ordering::SeqCst) == 1).await;
    cancel.cancel();
    release.notify_one();
    run.await.expect("stops").expect("ran");
    assert_eq!(started.load(Ordering::SeqCst), 1, "nothing new was started once stopping");
    assert!(bus.metrics().handed_back_count() >= 1, "the pulled facts were handed back");

    // Another replica gets the other three at once, far sooner than the 60 s ack_wait.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handler = Recorder { seen: tx, script: |_, _| Disposition::Ack, delay: None };
    let (cancel, task) = start_consumer(&bus, config, handler).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("handed back at once")
                .expect("open")
                .1,
        );
    }
    ids.sort();
    assert_eq!(ids, ["inc-hb-1", "inc-hb-2", "inc-hb-3"]);
    cancel.cancel();
    task.await.expect("stops");
}

#[tokio::test]
async fn kv_compare_and_set() {
    let server = NatsServer::start().expect("nats-server");
    let bus = bus(&server).await;
    let config = KvConfig {
        bucket: "test_tickets".into(),
        description: "incident to ticket".into(),
        max_age: Duration::ZERO,
        history: 1,
        replicas: sre_bus::Replicas::Auto,
    };
    let kv = Kv::open(&bus, config.clone()).await.expect("bucket");
    let again = Kv::open(&bus, config).await.expect("opening twice is fine");
    assert_eq!(kv.get("inc-1").await.expect("get"), None);
    let rev = kv.create("inc-1", "claimed".into()).await.expect("claim");
    assert!(matches!(again.create("inc-1", "other".into()).await, Err(KvError::AlreadyExists)));
    let rev2 = kv.update("inc-1", "JIRA-1".into(), rev).await.expect("update at the read revision");
    assert!(matches!(kv.update("inc-1", "JIRA-2".into(), rev).await, Err(KvError::WrongRevision)));
    let entry = again.get("inc-1").await.expect("get").expect("present");
    assert_eq!((entry.value.as_ref(), entry.revision), (&b"JIRA-1"[..], rev2));
    kv.delete("inc-1").await.expect("delete");
    assert_eq!(kv.get("inc-1").await.expect("get"), None);
}

#[tokio::test]
async fn kv_lists_the_latest_value_of_each_key_under_a_prefix_in_one_pass() {
    let server = NatsServer::start().expect("nats-server");
    let bus = bus(&server).await;
    let config = KvConfig {
        bucket: "test_listing".into(),
        description: "records and an index".into(),
        max_age: Duration::ZERO,
        history: 5,
        replicas: sre_bus::Replicas::Auto,
    };
    let kv = Kv::open(&bus, config).await.expect("bucket");
    assert_eq!(kv.entries("page.").await.expect("an empty listing answers"), vec![]);
    for i in 0..300 {
        kv.put(&format!("page.inc-{i}"), format!("v1-{i}").into()).await.expect("put");
    }
    let latest = kv.put("page.inc-7", "v2-7".into()).await.expect("a second revision");
    kv.delete("page.inc-8").await.expect("delete");
    kv.put("due.inc-9", "".into()).await.expect("another prefix");
    kv.put("pagex.inc-1", "".into()).await.expect("a key that only starts alike");
    let listed = kv.entries("page.").await.expect("listing");
    assert_eq!(listed.len(), 299, "each key once, the deleted one left out, no other prefix");
    let seven = listed.iter().find(|(k, _)| k == "page.inc-7").expect("page.inc-7");
    assert_eq!((seven.1.value.as_ref(), seven.1.revision), (&b"v2-7"[..], latest), "its latest value and revision");
    assert!(listed.iter().all(|(k, _)| k.starts_with("page.") && k != "page.inc-8"));
    assert_eq!(kv.entries("due.").await.expect("listing").len(), 1);
}

#[tokio::test]
async fn publishes_keep_many_acks_in_flight() {
    let server = NatsServer::start().expect("nats-server");
    let bus = bus(&server).await;
    let envelopes: Vec<sre_bus::Envelope> =
        (0..500).map(|i| sre_bus::Envelope::intent(&alert(&format!("k-{i}"))).expect("envelope")).collect();
    let results = bus.intent_publisher().publish_all(&envelopes, None).await;
    assert_eq!(results.len(), 500);
    assert!(results.iter().all(|r| matches!(r, Ok(p) if !p.duplicate)));
    let info = raw(&server).await.get_stream(streams::INTENTS).await.expect("stream").get_info().await.expect("info");
    assert_eq!(info.state.messages, 500);
    let mut messages = raw(&server)
        .await
        .get_stream(streams::INTENTS)
        .await
        .expect("s")
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .expect("c")
        .messages()
        .await
        .expect("m");
    let first = messages.next().await.expect("one").expect("ok");
    assert_eq!(first.subject.as_str(), IngestAlertRequested::SUBJECT);
}
