//! JetStream key-value buckets with compare-and-set, for the state adapters keep
//! (incident to ticket, incident to page, last observed application state).

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;

use crate::Bus;

/// A bucket's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvConfig {
    /// Bucket name (`[A-Za-z0-9_-]+`).
    pub bucket: String,
    /// What the bucket holds, for operators.
    pub description: String,
    /// How long entries live; zero keeps them forever.
    pub max_age: Duration,
    /// Revisions kept per key (1 to 64).
    pub history: i64,
    /// Replicas (1 for a single server, 3 for a cluster).
    pub replicas: usize,
}

/// A key-value operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// `create` found the key already there.
    #[error("key already exists")]
    AlreadyExists,
    /// `update` found another revision: someone else wrote first.
    #[error("key changed since it was read")]
    WrongRevision,
    /// The bus did not answer or refused; try again later.
    #[error("kv unavailable: {0}")]
    Unavailable(String),
}

/// One entry as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The value.
    pub value: Bytes,
    /// Its revision, for compare-and-set.
    pub revision: u64,
}

/// A key-value bucket; cheap to clone.
#[derive(Debug, Clone)]
pub struct Kv {
    store: kv::Store,
}

impl Kv {
    /// Opens the bucket, creating or updating it to `config` (idempotent).
    pub async fn open(bus: &Bus, config: KvConfig) -> Result<Self, KvError> {
        let store = bus
            .jetstream()
            .create_or_update_key_value(kv::Config {
                bucket: config.bucket,
                description: config.description,
                max_age: config.max_age,
                history: config.history.clamp(1, 64),
                num_replicas: config.replicas.max(1),
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| KvError::Unavailable(e.to_string()))?;
        Ok(Self { store })
    }

    /// Reads a key; deleted and purged keys read as absent.
    pub async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        let entry = self.store.entry(key).await.map_err(|e| KvError::Unavailable(e.to_string()))?;
        Ok(entry.and_then(|e| match e.operation {
            kv::Operation::Put => Some(KvEntry { value: e.value, revision: e.revision }),
            kv::Operation::Delete | kv::Operation::Purge => None,
        }))
    }

    /// Writes a key only if it does not exist: the claim of compare-and-set.
    pub async fn create(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.store.create(key, value).await.map_err(|e| match e.kind() {
            kv::CreateErrorKind::AlreadyExists => KvError::AlreadyExists,
            _ => KvError::Unavailable(e.to_string()),
        })
    }

    /// Writes a key only if its revision is still `revision`.
    pub async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, KvError> {
        self.store.update(key, value, revision).await.map_err(|e| match e.kind() {
            kv::UpdateErrorKind::WrongLastRevision => KvError::WrongRevision,
            _ => KvError::Unavailable(e.to_string()),
        })
    }

    /// Writes a key unconditionally.
    pub async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.store.put(key, value).await.map_err(|e| KvError::Unavailable(e.to_string()))
    }

    /// The keys starting with `prefix` (deleted keys excluded).
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        use futures::StreamExt;
        let mut keys = self.store.keys().await.map_err(|e| KvError::Unavailable(e.to_string()))?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| KvError::Unavailable(e.to_string()))?;
            if key.starts_with(prefix) {
                out.push(key);
            }
        }
        Ok(out)
    }

    /// Deletes a key.
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.store.delete(key).await.map_err(|e| KvError::Unavailable(e.to_string()))
    }
}
