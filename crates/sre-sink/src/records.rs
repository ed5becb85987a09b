//! Typed records in a JetStream KV bucket: one JSON record per incident under
//! `<prefix>.<token>`, read with its revision and written only by compare-and-set.
//!
//! What comes back from the bucket is told apart: a record that does not decode is
//! [`RecordError::Corrupt`] (a fact about it is dead-lettered with the key, not retried
//! for ever as if the bus were away), and a record that does not encode is refused before
//! anything is written (never an empty value in place of a record).

use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sre_bus::{Bus, Disposition, Kv, KvConfig, KvError};

/// How long to wait before a fact is tried again when the bucket did not answer, or
/// another delivery holds the record.
pub const RETRY: Duration = Duration::from_secs(2);

/// A record kept per incident.
pub trait Record: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The key prefix (`ticket`, `page`): keys are `<prefix>.<token>`.
    const PREFIX: &'static str;
    /// The incident the record is about.
    fn incident_id(&self) -> &str;
}

/// A bucket of records: its name, what it holds, how long records live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// The bucket (`sre_ticketing_sink_tickets`).
    pub name: &'static str,
    /// What it holds, for operators.
    pub description: &'static str,
    /// How long a record lives after its last write.
    pub max_age: Duration,
}

/// A record store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// `create` found a record there already.
    #[error("record already exists")]
    AlreadyExists,
    /// `update` found another revision: someone else wrote first.
    #[error("record changed since it was read")]
    WrongRevision,
    /// The bus did not answer or refused; try again later.
    #[error("records unavailable: {0}")]
    Unavailable(String),
    /// The stored value is not a record of this kind (written by hand, or by a release
    /// this one cannot read).
    #[error("record {key} is corrupt: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why it does not decode.
        reason: String,
    },
    /// The record could not be encoded; nothing was written.
    #[error("record {key} not encodable: {reason}")]
    Encode {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
}

impl From<KvError> for RecordError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::AlreadyExists => RecordError::AlreadyExists,
            KvError::WrongRevision => RecordError::WrongRevision,
            KvError::Unavailable(reason) => RecordError::Unavailable(reason),
        }
    }
}

impl RecordError {
    /// What a fact handler does when its record store failed with this: a record that
    /// cannot be read or written is dead-lettered (a retry would meet it again), the rest
    /// waits on the bus.
    pub fn disposition(self, doing: &str) -> Disposition {
        match self {
            RecordError::Corrupt { .. } | RecordError::Encode { .. } => {
                Disposition::DeadLetter { reason: format!("{doing}: {self}") }
            }
            other => Disposition::Retry { after: RETRY, reason: format!("{doing}: {other}") },
        }
    }
}

/// A record as read, with its revision for compare-and-set.
#[derive(Debug, Clone, PartialEq)]
pub struct Read<R> {
    /// The record.
    pub record: R,
    /// Its revision.
    pub revision: u64,
}

/// A KV key token for an incident id: the id itself when it is a valid token, else a
/// stable hash. Also what a sink's marker at the vendor carries.
pub fn token(incident_id: &str) -> String {
    let valid = !incident_id.is_empty()
        && incident_id.len() <= 200
        && incident_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        incident_id.to_owned()
    } else {
        sre_resilience::idempotency::derive_key("h", &[incident_id]).replace(':', "-")
    }
}

/// The records of one kind; cheap to clone.
pub struct Records<R> {
    kv: Kv,
    kind: PhantomData<fn() -> R>,
}

impl<R> Clone for Records<R> {
    fn clone(&self) -> Self {
        Self { kv: self.kv.clone(), kind: PhantomData }
    }
}

impl<R> std::fmt::Debug for Records<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records").field("kv", &self.kv).finish()
    }
}

fn encode<R: Record>(key: &str, record: &R) -> Result<Bytes, RecordError> {
    serde_json::to_vec(record)
        .map(Bytes::from)
        .map_err(|e| RecordError::Encode { key: key.to_owned(), reason: e.to_string() })
}

impl Bucket {
    /// The bucket's settings for the bus, at `replicas`.
    pub fn config(&self, replicas: sre_bus::Replicas) -> KvConfig {
        KvConfig {
            bucket: self.name.to_owned(),
            description: self.description.to_owned(),
            max_age: self.max_age,
            history: 1,
            replicas,
        }
    }

    /// The bucket as a platform declares it on a three-node cluster
    /// (`deploy/nats/jetstream/buckets/`, NACK's `KeyValue`).
    pub fn definition(&self) -> serde_json::Value {
        sre_bus::bucket_definition(&self.config(sre_bus::Replicas::Auto), 3)
    }
}

impl<R: Record> Records<R> {
    /// Opens (or, unless the bus binds only, creates) `bucket` at the bus's replicas,
    /// telling `reach` whether it answers (readiness).
    pub async fn open(bus: &Bus, bucket: &Bucket, reach: sre_bus::Reachability) -> Result<Self, RecordError> {
        let kv = Kv::open_watched(bus, bucket.config(bus.config().streams.replicas), reach).await?;
        Ok(Self { kv, kind: PhantomData })
    }

    /// The bucket itself, for what a sink keeps beside its records under other prefixes
    /// (`lease.sender`, `pause.*`).
    pub fn kv(&self) -> &Kv {
        &self.kv
    }

    /// Asks the bucket whether it can take writes every `every` until `cancel` (readiness).
    pub async fn probe(&self, every: Duration, cancel: tokio_util::sync::CancellationToken) {
        self.kv.probe(every, cancel).await;
    }

    /// The key of `incident_id`'s record.
    pub fn key(incident_id: &str) -> String {
        format!("{}.{}", R::PREFIX, token(incident_id))
    }

    /// The record of `incident_id`.
    pub async fn get(&self, incident_id: &str) -> Result<Option<Read<R>>, RecordError> {
        self.get_key(&Self::key(incident_id)).await
    }

    /// Every record of this kind (`<prefix>.*`), in no particular order; one that does not
    /// decode is skipped with a warning (the facts about it are dead-lettered naming it).
    pub async fn list(&self) -> Result<Vec<Read<R>>, RecordError> {
        let entries = self.kv.entries(&format!("{}.", R::PREFIX)).await?;
        let mut records = Vec::with_capacity(entries.len());
        for (key, entry) in entries {
            match serde_json::from_slice(&entry.value) {
                Ok(record) => records.push(Read { record, revision: entry.revision }),
                Err(e) => {
                    let e = RecordError::Corrupt { key, reason: e.to_string() };
                    tracing::warn!(error = %e, "record skipped");
                }
            }
        }
        Ok(records)
    }

    /// The record under an incident token (as an index lists it).
    pub async fn get_token(&self, token: &str) -> Result<Option<Read<R>>, RecordError> {
        self.get_key(&format!("{}.{token}", R::PREFIX)).await
    }

    async fn get_key(&self, key: &str) -> Result<Option<Read<R>>, RecordError> {
        let Some(entry) = self.kv.get(key).await? else { return Ok(None) };
        let record = serde_json::from_slice(&entry.value)
            .map_err(|e| RecordError::Corrupt { key: key.to_owned(), reason: e.to_string() })?;
        Ok(Some(Read { record, revision: entry.revision }))
    }

    /// Writes `record` only if it has none yet: the claim.
    pub async fn create(&self, record: &R) -> Result<u64, RecordError> {
        let key = Self::key(record.incident_id());
        let value = encode(&key, record)?;
        Ok(self.kv.create(&key, value).await?)
    }

    /// Replaces the record if it is still at `revision`.
    pub async fn update(&self, record: &R, revision: u64) -> Result<u64, RecordError> {
        let key = Self::key(record.incident_id());
        let value = encode(&key, record)?;
        Ok(self.kv.update(&key, value, revision).await?)
    }

    /// Writes `record` if still at `read`'s revision; the new read on success.
    pub async fn replace(&self, read: &Read<R>, record: R) -> Result<Read<R>, RecordError> {
        let revision = self.update(&record, read.revision).await?;
        Ok(Read { record, revision })
    }

    /// A secondary index in the same bucket (`<name>.<token>`), e.g. the deferred pages.
    pub fn index(&self, name: &'static str) -> Index {
        Index { kv: self.kv.clone(), name }
    }
}

/// A set of incident tokens kept beside the records, each with a small value: lets a
/// scan read only what it needs (the deferred pages) instead of every record.
#[derive(Debug, Clone)]
pub struct Index {
    kv: Kv,
    name: &'static str,
}

impl Index {
    /// Marks `incident_id` with `value`.
    pub async fn mark(&self, incident_id: &str, value: &str) -> Result<(), RecordError> {
        let key = format!("{}.{}", self.name, token(incident_id));
        self.kv.put(&key, Bytes::from(value.to_owned())).await?;
        Ok(())
    }

    /// The value `id` is marked with, if it is.
    pub async fn value(&self, id: &str) -> Result<Option<String>, RecordError> {
        let key = format!("{}.{}", self.name, token(id));
        Ok(self.kv.get(&key).await?.map(|e| String::from_utf8_lossy(&e.value).into_owned()))
    }

    /// Removes the mark of an incident token.
    pub async fn unmark_token(&self, token: &str) -> Result<(), RecordError> {
        Ok(self.kv.delete(&format!("{}.{token}", self.name)).await?)
    }

    /// Removes the mark of `incident_id`.
    pub async fn unmark(&self, incident_id: &str) -> Result<(), RecordError> {
        self.unmark_token(&token(incident_id)).await
    }

    /// The incident tokens marked.
    pub async fn tokens(&self) -> Result<Vec<String>, RecordError> {
        let prefix = format!("{}.", self.name);
        Ok(self
            .kv
            .keys(&prefix)
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_valid_kv_keys_and_stable() {
        assert_eq!(token("inc-42_a"), "inc-42_a");
        for odd in ["inc 42", "a.b", "ü", "", &"x".repeat(300)] {
            let t = token(odd);
            assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{t}");
            assert_eq!(t, token(odd));
        }
        assert_ne!(token("a.b"), token("a b"));
    }

    #[test]
    fn a_record_that_cannot_be_read_or_written_is_dead_lettered_and_the_bus_retried() {
        let corrupt = RecordError::Corrupt { key: "ticket.inc-1".into(), reason: "expected value".into() };
        match corrupt.disposition("ticket record") {
            Disposition::DeadLetter { reason } => {
                assert_eq!(reason, "ticket record: record ticket.inc-1 is corrupt: expected value");
            }
            other => panic!("{other:?}"),
        }
        let encode = RecordError::Encode { key: "page.x".into(), reason: "map key".into() };
        assert!(matches!(encode.disposition("x"), Disposition::DeadLetter { .. }));
        let away = RecordError::Unavailable("no responders".into());
        assert_eq!(
            away.disposition("ticket record"),
            Disposition::Retry { after: RETRY, reason: "ticket record: records unavailable: no responders".into() }
        );
        assert!(matches!(RecordError::WrongRevision.disposition("x"), Disposition::Retry { .. }));
    }
}
