//! sre-sink's integration tests, one binary, against a real nats-server: typed records
//! (compare-and-set, a corrupt record told from the bus being away) and the claim renewed
//! while its holder works.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sre_bus::{Bus, BusConfig, BusMetrics, Disposition, Reachability};
use sre_contracts::domain::v1::Source;
use sre_sink::claim::{self, Claim, Liveness};
use sre_sink::{Bucket, Read, Record, RecordError, Records};
use sre_testkit::NatsServer;
use tokio_util::sync::CancellationToken;

const BUCKET: Bucket =
    Bucket { name: "sre_sink_test", description: "sre-sink tests", max_age: Duration::from_secs(3600) };

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Note {
    incident_id: String,
    state: String,
    #[serde(default)]
    renewed_at: Option<Timestamp>,
}

impl Record for Note {
    const PREFIX: &'static str = "note";
    fn incident_id(&self) -> &str {
        &self.incident_id
    }
}

impl Claim for Note {
    fn last_alive(&self) -> Option<Timestamp> {
        self.renewed_at
    }
    fn renew(&mut self, now: Timestamp) {
        self.renewed_at = Some(now);
    }
}

fn note(id: &str, state: &str) -> Note {
    Note { incident_id: id.to_owned(), state: state.to_owned(), renewed_at: Some(Timestamp::now()) }
}

async fn records(server: &NatsServer) -> Records<Note> {
    let config = BusConfig { url: server.url(), ack_timeout: Duration::from_secs(2), ..BusConfig::default() };
    let source = Source { service: "sre-sink-test".into(), instance: "t-0".into() };
    let bus = Bus::connect(config, source, BusMetrics::default()).await.expect("connects");
    bus.ensure_topology(&CancellationToken::new()).await.expect("topology");
    Records::open(&bus, &BUCKET, Reachability::new("test bucket")).await.expect("bucket")
}

#[tokio::test]
async fn records_are_written_by_compare_and_set_and_one_claim_wins() {
    let server = NatsServer::start().expect("nats-server");
    let records = records(&server).await;
    let revision = records.create(&note("inc-1", "claimed")).await.expect("the claim");
    assert_eq!(records.create(&note("inc-1", "claimed")).await, Err(RecordError::AlreadyExists));
    let read = records.get("inc-1").await.expect("reads").expect("exists");
    assert_eq!((read.revision, read.record.state.as_str()), (revision, "claimed"));
    let done = records.replace(&read, note("inc-1", "created")).await.expect("at its revision");
    assert_eq!(records.replace(&read, note("inc-1", "failed")).await, Err(RecordError::WrongRevision), "stale read");
    assert_eq!(records.get("inc-1").await.expect("reads"), Some(done));
    // An id that is not a KV token is hashed into one, the same each time.
    records.create(&note("inc 2/α", "claimed")).await.expect("an odd id");
    assert!(records.get("inc 2/α").await.expect("reads").is_some());
    assert_eq!(records.get("inc-3").await.expect("reads"), None);
}

#[tokio::test]
async fn a_corrupt_record_is_named_and_dead_letters_its_fact_instead_of_waiting_for_the_bus() {
    let server = NatsServer::start().expect("nats-server");
    let records = records(&server).await;
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.expect("client"));
    let kv = js.get_key_value(BUCKET.name).await.expect("bucket");
    kv.put(Records::<Note>::key("inc-9"), "{not json".into()).await.expect("raw put");
    let err = records.get("inc-9").await.expect_err("corrupt");
    assert!(matches!(&err, RecordError::Corrupt { key, .. } if key == "note.inc-9"), "{err}");
    match err.disposition("note record") {
        Disposition::DeadLetter { reason } => assert!(reason.contains("note.inc-9 is corrupt"), "{reason}"),
        other => panic!("a corrupt record is not retried as if the bus were away: {other:?}"),
    }
    // The bus away is a retry, not a dead letter.
    drop(server);
    let away = tokio::time::timeout(Duration::from_secs(10), records.get("inc-1")).await.expect("answers");
    assert!(matches!(away, Err(RecordError::Unavailable(_))), "{away:?}");
    assert!(matches!(away.expect_err("away").disposition("x"), Disposition::Retry { .. }));
}

#[tokio::test]
async fn a_claim_is_renewed_while_its_holder_works_and_goes_stale_when_it_stops() {
    let server = NatsServer::start().expect("nats-server");
    let records = records(&server).await;
    let mut first = note("inc-5", "claimed");
    first.renewed_at = Some(Timestamp::now() - jiff::SignedDuration::from_secs(1));
    let revision = records.create(&first).await.expect("claim");
    let read = Read { record: first.clone(), revision };
    // A vendor call of 5 s: renewed twice meanwhile (every 2 s).
    let (out, read) = claim::renewing(&records, read, tokio::time::sleep(Duration::from_millis(4_500))).await;
    let () = out;
    assert!(read.revision >= revision + 2, "renewed: {} → {}", revision, read.revision);
    assert_eq!(records.get("inc-5").await.expect("reads"), Some(read.clone()), "the holder writes on this revision");
    let now = Timestamp::now();
    assert!(matches!(claim::liveness(read.record.last_alive(), now), Liveness::Live { .. }));
    let later = now + jiff::SignedDuration::from_secs(11);
    assert_eq!(claim::liveness(read.record.last_alive(), later), Liveness::Stale, "no renewal for 10 s: a crash's");
}
