//! Invariant 1 at the bus: with nats-server configured from `deploy/nats/sre.conf`, an
//! adapter's user can publish its intents, a sink's user can consume facts, record dead
//! letters and publish its two-way-sync intents, and neither can publish a fact or another
//! component's intent. The type system already keeps adapters from
//! writing it (see `tests/ui`); this shows the bus refuses it too.

use std::path::Path;
use std::time::Duration;

use prost::Message;
use sre_bus::{Bus, BusConfig, BusMetrics, ConsumerConfig, Disposition, FactConsumer, FactHandler, ReceivedFact};
use sre_contracts::domain::v1::{
    AcknowledgeIncidentRequested, CloseIncidentRequested, IncidentCreated, IngestAlertRequested, MessageMeta,
    ResolveIncidentRequested, Source,
};
use sre_contracts::{BusMessage, streams};
use sre_testkit::NatsServer;

/// nats-server from the deploy file, with the passwords it reads from its environment
/// defined in front of it (as a Kubernetes Secret would put them in the environment).
fn server(dir: &Path) -> NatsServer {
    let config = dir.join("nats.conf");
    std::fs::write(&config, sre_testkit::stack::deploy_accounts()).expect("config");
    NatsServer::start_with_config(&config).expect("nats-server with the deploy permissions")
}

fn url(server: &NatsServer, user: &str) -> String {
    format!("nats://{user}:{}@127.0.0.1:{}", sre_testkit::stack::password(user), server.port())
}

/// A bus client; only the domain manages the streams (adapters' users may not).
async fn bus(url: String, who: &str) -> Bus {
    let manage_streams = who == "sre-domain";
    let config = BusConfig { url, ack_timeout: Duration::from_secs(2), manage_streams, ..BusConfig::default() };
    let bus = Bus::connect(config, Source { service: who.into(), instance: "test".into() }, BusMetrics::default())
        .await
        .expect("connects");
    bus.ensure_topology(&tokio_util::sync::CancellationToken::new()).await.expect("streams");
    while !bus.is_connected() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bus
}

/// A plain client for `url` (`nats://user:password@host:port`).
async fn client(url: &str) -> Result<async_nats::Client, String> {
    let rest = url.trim_start_matches("nats://");
    let (userinfo, host) = rest.rsplit_once('@').ok_or("no credentials")?;
    let (user, password) = userinfo.split_once(':').ok_or("no password")?;
    async_nats::ConnectOptions::with_user_and_password(user.to_owned(), password.to_owned())
        // Each user's replies come on its own inbox prefix (deploy/nats/sre.conf).
        .custom_inbox_prefix(sre_bus::default_inbox_prefix(user))
        .connect(format!("nats://{host}"))
        .await
        .map_err(|e| e.to_string())
}

async fn stored(url: String, stream: &str) -> u64 {
    let js = async_nats::jetstream::new(client(&url).await.expect("client"));
    js.get_stream(stream).await.expect("stream").get_info().await.expect("info").state.messages
}

async fn raw_publish(url: String, subject: &str, body: Vec<u8>) -> Result<(), String> {
    let js = async_nats::jetstream::ContextBuilder::new().timeout(Duration::from_secs(2)).build(client(&url).await?);
    let ack = js.publish(subject.to_owned(), body.into()).await.map_err(|e| e.to_string())?;
    ack.await.map(|_| ()).map_err(|e| e.to_string())
}

/// Runs a step, failing the test with its name if it hangs.
async fn step<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(15), f).await.unwrap_or_else(|_| panic!("step hung: {what}"))
}

fn fact() -> IncidentCreated {
    IncidentCreated { incident_id: "inc-forged".into(), title: "forged".into(), ..Default::default() }
}

struct Ack;
impl FactHandler for Ack {
    async fn handle(&self, _fact: ReceivedFact) -> Disposition {
        Disposition::DeadLetter { reason: "recorded as a dead letter by the sink's user".into() }
    }
}

#[tokio::test]
async fn adapters_cannot_publish_facts_and_each_publishes_only_its_own_intents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path());
    let domain = url(&server, "sre-domain");
    let ingress = url(&server, "alertmanager-ingress");
    let sink = url(&server, "ticketing-sink");

    // The domain provisions the streams; an adapter's user may not.
    let _domain_bus = step("domain provisions", bus(domain.clone(), "sre-domain")).await;
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(client(&ingress).await.expect("client"));
    let stream = async_nats::jetstream::stream::Config { name: "SRE_ROGUE".into(), ..Default::default() };
    assert!(step("create stream", js.create_stream(stream)).await.is_err(), "no stream creation");

    // The ingress publishes its intent through the only publisher it has.
    let ingress_bus = step("ingress connects", bus(ingress.clone(), "alertmanager-ingress")).await;
    let intent = IngestAlertRequested {
        meta: Some(MessageMeta { idempotency_key: "alert-1".into(), ..Default::default() }),
        fingerprint: "abc".into(),
        ..Default::default()
    };
    let published = step("ingress publishes", ingress_bus.intent_publisher().publish(&intent)).await;
    assert!(published.is_ok(), "the intent is stored: {published:?}\n{}", server.log());
    assert_eq!(step("count", stored(domain.clone(), streams::INTENTS)).await, 1);

    // A fact published with the ingress's credentials by any other means is refused.
    let refused =
        step("forged fact", raw_publish(ingress.clone(), IncidentCreated::SUBJECT, fact().encode_to_vec())).await;
    assert!(refused.is_err(), "the bus refused the forged fact");
    // …and so is deleting the facts stream…
    assert!(step("delete", js.delete_stream(streams::FACTS)).await.is_err(), "no stream deletion");
    // …and another adapter's intent: argocd-sync records fleet state, it does not ingest alerts.
    let argocd = url(&server, "argocd-sync");
    assert!(
        step("argocd ingests", raw_publish(argocd, IngestAlertRequested::SUBJECT, intent.encode_to_vec()))
            .await
            .is_err(),
        "argocd-sync may publish only its own intents"
    );

    // A sink cannot publish intents or facts either.
    assert!(
        step("sink intent", raw_publish(sink.clone(), IngestAlertRequested::SUBJECT, intent.encode_to_vec()))
            .await
            .is_err()
    );
    assert!(
        step("sink fact", raw_publish(sink.clone(), IncidentCreated::SUBJECT, fact().encode_to_vec())).await.is_err()
    );
    assert_eq!(stored(domain.clone(), streams::FACTS).await, 0, "no fact got in");
    assert_eq!(stored(domain.clone(), streams::INTENTS).await, 1, "no intent from the sink got in");

    // The domain publishes a fact; the sink consumes it and may record a dead letter.
    raw_publish(domain.clone(), IncidentCreated::SUBJECT, fact().encode_to_vec()).await.expect("the domain may");
    let sink_bus = step("sink connects", bus(sink.clone(), "ticketing-sink")).await;
    // A sink cannot read facts through a consumer other than its own.
    let other = FactConsumer::bind(
        &sink_bus,
        ConsumerConfig { durable_name: "paging-sink".into(), ..ConsumerConfig::default() },
    );
    assert!(step("other consumer", other).await.is_err(), "only its own durable consumer");
    let consumer = FactConsumer::bind(
        &sink_bus,
        ConsumerConfig {
            durable_name: "ticketing-sink".into(),
            filter_subjects: vec![IncidentCreated::SUBJECT.into()],
            ..ConsumerConfig::default()
        },
    )
    .await
    .expect("the sink binds its consumer");
    let cancel = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(consumer.run(Ack, cancel.clone()));
    sre_testkit::bus::eventually("the sink's dead letter is stored", Duration::from_secs(20), || async {
        stored(domain.clone(), streams::DEAD_LETTER).await > 0
    })
    .await;
    cancel.cancel();
    let _ = run.await;

    // A sink publishes the intents of what people do in its vendors' tools, and only those:
    // ticketing-sink a Jira resolve (not an acknowledge), paging-sink a PagerDuty
    // acknowledge (not a ticket's close).
    let resolve = ResolveIncidentRequested {
        meta: Some(MessageMeta { idempotency_key: "jira-event-1".into(), ..Default::default() }),
        incident_id: "inc-1".into(),
        ..Default::default()
    };
    let published = step("sink resolves", sink_bus.intent_publisher().publish(&resolve)).await;
    assert!(published.is_ok(), "the sink's own intent is stored: {published:?}\n{}", server.log());
    let ack = AcknowledgeIncidentRequested {
        meta: Some(MessageMeta { idempotency_key: "pd-event-1".into(), ..Default::default() }),
        incident_id: "inc-1".into(),
        ..Default::default()
    };
    assert!(
        step("ticketing acks", raw_publish(sink.clone(), AcknowledgeIncidentRequested::SUBJECT, ack.encode_to_vec()))
            .await
            .is_err(),
        "acknowledging is paging-sink's"
    );
    let paging = url(&server, "paging-sink");
    let close = CloseIncidentRequested { incident_id: "inc-1".into(), ..Default::default() };
    assert!(
        step("paging closes", raw_publish(paging.clone(), CloseIncidentRequested::SUBJECT, close.encode_to_vec()))
            .await
            .is_err(),
        "closing a ticket is ticketing-sink's"
    );
    step("paging acks", raw_publish(paging, AcknowledgeIncidentRequested::SUBJECT, ack.encode_to_vec()))
        .await
        .expect("paging-sink may acknowledge");
    assert_eq!(stored(domain.clone(), streams::INTENTS).await, 3, "the ingress's, the two sinks' own");

    // Each refusal above was the server's permission check, not a timeout or a typo.
    let log = server.log();
    for (user, subject) in [
        ("alertmanager-ingress", "$JS.API.STREAM.CREATE.SRE_ROGUE"),
        ("alertmanager-ingress", IncidentCreated::SUBJECT),
        ("alertmanager-ingress", "$JS.API.STREAM.DELETE.SRE_DOMAIN_FACTS"),
        ("argocd-sync", IngestAlertRequested::SUBJECT),
        ("ticketing-sink", IngestAlertRequested::SUBJECT),
        ("ticketing-sink", IncidentCreated::SUBJECT),
        ("ticketing-sink", "$JS.API.CONSUMER.CREATE.SRE_DOMAIN_FACTS.paging-sink"),
        ("ticketing-sink", AcknowledgeIncidentRequested::SUBJECT),
        ("paging-sink", CloseIncidentRequested::SUBJECT),
    ] {
        let line = format!("\"SRE/user:{user}\" - Publish Violation - Subject \"{subject}");
        assert!(log.contains(&line), "no refusal of {subject} for {user} in the server log:\n{log}");
    }
    // (binding the other consumer is tried twice: a lost creation race is retried once)
    assert_eq!(log.matches("Violation").count(), 10, "nothing else was refused:\n{log}");

    // An adapter left to manage streams it may not: readiness says what the bus refused and
    // what to do, instead of only "not ready".
    let config = BusConfig { url: ingress, ack_timeout: Duration::from_secs(1), ..BusConfig::default() };
    let source = Source { service: "alertmanager-ingress".into(), instance: "test".into() };
    let managing = Bus::connect(config, source, BusMetrics::default()).await.expect("connects");
    let cancel = tokio_util::sync::CancellationToken::new();
    let topology = tokio::spawn({
        let (bus, cancel) = (managing.clone(), cancel.clone());
        async move { bus.ensure_topology(&cancel).await }
    });
    sre_testkit::bus::eventually("readiness names the refusal", Duration::from_secs(20), || async {
        managing.readiness().is_err_and(|e| e.contains("refused"))
    })
    .await;
    let said = managing.readiness().expect_err("not ready");
    assert!(said.contains("refused Publish to \"$JS.API.STREAM.") && said.contains("manage_streams: false"), "{said}");
    cancel.cancel();
    let _ = topology.await;
}

/// Each adapter's replies come on its own inbox prefix, which no other adapter may read:
/// a sink cannot listen to another adapter's request replies (JetStream acks, KV reads).
#[tokio::test]
async fn an_adapter_cannot_read_another_adapters_replies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path());
    let ticketing = client(&url(&server, "ticketing-sink")).await.expect("client");
    let _own = ticketing.subscribe("_INBOX_ticketing_sink.>").await.expect("its own");
    let _others = ticketing.subscribe("_INBOX_paging_sink.>").await.expect("sent");
    let _shared = ticketing.subscribe("_INBOX.>").await.expect("sent");
    sre_testkit::bus::eventually("the server refuses both", Duration::from_secs(10), || async {
        let log = server.log();
        log.contains("\"SRE/user:ticketing-sink\" - Subscription Violation - Subject \"_INBOX_paging_sink.>\"")
            && log.contains("\"SRE/user:ticketing-sink\" - Subscription Violation - Subject \"_INBOX.>\"")
    })
    .await;
    assert!(
        !server.log().contains("Subscription Violation - Subject \"_INBOX_ticketing_sink.>\""),
        "its own inbox is its own:\n{}",
        server.log()
    );
}

/// A sink lists its own bucket (the reconciler's pass, the deferred-page scan) with an
/// ordered consumer, and asks for that consumer's info when the listing goes quiet: both
/// are allowed to the sink's user by the deploy file, on its own bucket only.
#[tokio::test]
async fn a_sink_lists_its_own_bucket_and_asks_how_far_its_listing_got() {
    use async_nats::jetstream::consumer::{DeliverPolicy, push};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = server(dir.path());
    let sinks = [("ticketing-sink", "sre_ticketing_sink_tickets"), ("paging-sink", "sre_paging_sink_pages")];
    let mut buckets = Vec::new();
    for (user, bucket) in sinks {
        let bus = bus(url(&server, user), user).await;
        let config = sre_bus::KvConfig {
            bucket: bucket.into(),
            description: "the sink's records".into(),
            max_age: Duration::ZERO,
            history: 1,
            replicas: sre_bus::Replicas::Auto,
        };
        let kv = sre_bus::Kv::open(&bus, config).await.expect("its bucket");
        kv.put("inc-1", "recorded".into()).await.expect("put");
        buckets.push(kv);
    }
    for ((user, bucket), kv) in sinks.into_iter().zip(&buckets) {
        let listed = step("the listing", kv.entries("")).await.expect("lists");
        assert_eq!(listed.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["inc-1"], "{user}");

        // What the listing does underneath, step by step, as the sink's user.
        let client = client(&url(&server, user)).await.expect("client");
        let js = async_nats::jetstream::ContextBuilder::new().timeout(Duration::from_secs(2)).build(client);
        let listing = |bucket: &'static str| {
            let js = js.clone();
            async move {
                let stream = js.get_stream(format!("KV_{bucket}")).await.map_err(|e| e.to_string())?;
                let consumer = stream
                    .create_consumer(push::OrderedConfig {
                        deliver_subject: format!("{}.listing", sre_bus::default_inbox_prefix(user)),
                        deliver_policy: DeliverPolicy::LastPerSubject,
                        filter_subject: format!("$KV.{bucket}.>"),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                consumer.get_info().await.map(|i| i.num_pending).map_err(|e| e.to_string())
            }
        };
        assert_eq!(step("its own listing's info", listing(bucket)).await, Ok(1), "{user}");
        let other = sinks.iter().map(|(_, b)| *b).find(|b| *b != bucket).expect("the other sink");
        assert!(step("another sink's bucket", listing(other)).await.is_err(), "{user} may not list {other}");
    }
}
