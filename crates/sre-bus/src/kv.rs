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
    /// Replicas: `auto` is 3 on a cluster, 1 on a single server. An existing bucket is
    /// never lowered.
    pub replicas: crate::Replicas,
}

/// A bucket as the platform declares it (NACK's `KeyValue`, `nats kv add`): its name,
/// what it holds, history, age limit, file storage and `replicas` (3 on a cluster), as
/// JSON. What `deploy/nats/jetstream/buckets/` holds, checked by each adapter's tests.
pub fn bucket_definition(config: &KvConfig, replicas: usize) -> serde_json::Value {
    serde_json::json!({
        "bucket": config.bucket,
        "description": config.description,
        "history": config.history.clamp(1, 64),
        "max_age": u64::try_from(config.max_age.as_nanos()).unwrap_or(u64::MAX),
        "num_replicas": replicas,
        "storage": "file",
    })
}

/// Runs `work` (a call made while holding a claim) and, every `every` until it ends, calls
/// `renew` with the claim as it stands to get it as it stands after renewing (a renewal
/// that fails keeps the old one; the holder's final compare-and-set tells whether the
/// claim was lost meanwhile). Returns `work`'s output and the claim as it now stands, so
/// the holder writes its outcome on the right revision. Other replicas tell a renewed
/// claim from one a crash left.
pub async fn renewing<T, C, F, R>(
    claim: C,
    every: Duration,
    work: impl std::future::Future<Output = T>,
    mut renew: F,
) -> (T, C)
where
    F: FnMut(C) -> R,
    R: std::future::Future<Output = C>,
{
    let mut claim = claim;
    let mut work = std::pin::pin!(work);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            out = &mut work => return (out, claim),
            _ = tick.tick() => claim = renew(claim).await,
        }
    }
}

/// The key readiness writes to (see [`Kv::probe`]); listings leave it out.
pub const PROBE_KEY: &str = "sre-probe";

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

/// The longest a listing ([`Kv::entries`]) may take before it is given up.
const LISTING_WITHIN: Duration = Duration::from_secs(60);
/// A listing that received nothing for this long asks the server whether it has all: the
/// pending count it ends on can go stale when entries expire (`max_age`) or are purged
/// before their delivery.
const LISTING_IDLE: Duration = Duration::from_secs(2);
/// The header of a KV write that says what it did, and the values that remove a key
/// (as JetStream's KV writes them); `Nats-Marker-Reason` marks a key removed by a TTL.
const KV_OPERATION: &str = "KV-Operation";
const KV_REMOVALS: [&str; 2] = ["DEL", "PURGE"];

/// A key-value bucket; cheap to clone.
#[derive(Debug, Clone)]
pub struct Kv {
    store: kv::Store,
    /// For the inbox a listing's consumer delivers to.
    client: async_nats::Client,
    reach: crate::Reachability,
}

impl Kv {
    /// Opens the bucket, creating it, or updating it to `config` (idempotent). Its
    /// replicas are raised to what `config` asks, never lowered: a bucket an operator
    /// scaled up stays so, and one found below the cluster's replicas that cannot be
    /// raised is reported (logs, `sre_bus_under_replicated_streams`).
    pub async fn open(bus: &Bus, config: KvConfig) -> Result<Self, KvError> {
        let reach = crate::Reachability::new(format!("KV bucket {}", config.bucket));
        Self::open_watched(bus, config, reach).await
    }

    /// [`Kv::open`], telling `reach` whether the bucket answers: every operation from now
    /// on, and the failed opens before (readiness reads it; see [`Kv::probe`]).
    pub async fn open_watched(bus: &Bus, config: KvConfig, reach: crate::Reachability) -> Result<Self, KvError> {
        let opened = Self::open_inner(bus, config).await;
        match &opened {
            Ok(_) => {
                reach.answered();
            }
            Err(e) => {
                reach.failed(e.to_string());
            }
        }
        opened.map(|store| Self { store, client: bus.jetstream().client(), reach })
    }

    async fn open_inner(bus: &Bus, config: KvConfig) -> Result<kv::Store, KvError> {
        if bus.config().bind_only {
            // The platform declared the bucket (NACK's KeyValue, the nats CLI): use it as
            // it is, and say what is missing rather than create it.
            return match bus.jetstream().get_key_value(&config.bucket).await {
                Ok(store) => Ok(store),
                Err(e)
                    if e.kind() == async_nats::jetstream::context::KeyValueErrorKind::GetBucket
                        && e.to_string().contains("not found") =>
                {
                    Err(KvError::Unavailable(format!(
                        "KV bucket {} does not exist, and runtime.bus.bind_only creates nothing: declare it \
                         (the chart's NACK KeyValue, or deploy/nats/jetstream)",
                        config.bucket
                    )))
                }
                Err(e) => Err(KvError::Unavailable(e.to_string())),
            };
        }
        let wanted = match config.replicas {
            crate::Replicas::Fixed(n) => n.max(1),
            auto => auto.resolve(
                bus.is_clustered().ok_or_else(|| KvError::Unavailable("not connected to a server yet".to_owned()))?,
            ),
        };
        let stream = format!("KV_{}", config.bucket);
        let existing = match bus.jetstream().get_stream(&stream).await {
            Ok(mut s) => Some(s.info().await.map_err(|e| KvError::Unavailable(e.to_string()))?.config.num_replicas),
            Err(e) if crate::topology::not_found(&e) => None,
            // No answer: do not guess (creating on a guess could lower an existing bucket).
            Err(e) => return Err(KvError::Unavailable(e.to_string())),
        };
        let replicas = existing.map_or(wanted, |has| has.max(wanted));
        let result = bus
            .jetstream()
            .create_or_update_key_value(kv::Config {
                bucket: config.bucket.clone(),
                description: config.description.clone(),
                max_age: config.max_age,
                history: config.history.clamp(1, 64),
                num_replicas: replicas,
                storage: async_nats::jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await;
        match (result, existing) {
            (Ok(store), _) => {
                if existing.is_some_and(|has| has < wanted) {
                    tracing::info!(bucket = %config.bucket, from = existing, to = replicas, "bucket replicas raised");
                }
                Ok(store)
            }
            // Not ours to change (a user without the right, a cluster short of nodes for
            // more replicas): use it as it is, and say it is under-replicated.
            (Err(e), Some(has)) if has < wanted => {
                bus.under_replicated(&stream, has, wanted);
                tracing::warn!(bucket = %config.bucket, error = %e, "bucket replicas not raised; using it as it is");
                bus.jetstream().get_key_value(&config.bucket).await.map_err(|e| KvError::Unavailable(e.to_string()))
            }
            (Err(e), _) => Err(KvError::Unavailable(e.to_string())),
        }
    }

    /// Records whether the bucket answered, for readiness.
    fn seen<T>(&self, result: Result<T, KvError>) -> Result<T, KvError> {
        match &result {
            Err(KvError::Unavailable(reason)) => {
                if self.reach.failed(reason.clone()) {
                    tracing::warn!(error = %reason, "KV bucket not answering; retrying (logged once until it answers)");
                }
            }
            _ => {
                if let Some(down) = self.reach.answered() {
                    tracing::info!(after_ms = down.as_millis() as u64, "KV bucket answering again");
                }
            }
        }
        result
    }

    /// Whether the bucket answers, as readiness reads it.
    pub fn reachability(&self) -> &crate::Reachability {
        &self.reach
    }

    /// Writes the bucket's probe key every `every` until `cancel`, so readiness knows the
    /// bucket takes writes even while nothing else uses it. A write, not a read: a bucket
    /// without a leader (two of three nodes down) still answers reads from a surviving
    /// replica, but no claim can be written to it, and that is what the sinks need.
    pub async fn probe(&self, every: Duration, cancel: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let write =
                tokio::time::timeout(every.max(Duration::from_secs(1)), self.store.put(PROBE_KEY, Bytes::new()))
                    .await
                    .map_err(|_| KvError::Unavailable("a write to the bucket was not acknowledged in time".to_owned()))
                    .and_then(|r| r.map(|_| ()).map_err(|e| KvError::Unavailable(e.to_string())));
            let _ = self.seen(write);
        }
    }

    /// The same bucket, its operations not told to this handle's reachability: for what a
    /// replica keeps beside its records (a lease, a shared pause), whose reads a single
    /// surviving node can answer and must not make the bucket look writable to readiness.
    pub fn unwatched(&self) -> Self {
        Self {
            store: self.store.clone(),
            client: self.client.clone(),
            reach: crate::Reachability::new(format!("{} (unwatched)", self.store.name)),
        }
    }

    /// Reads a key; deleted and purged keys read as absent.
    pub async fn get(&self, key: &str) -> Result<Option<KvEntry>, KvError> {
        let entry = self.seen(self.store.entry(key).await.map_err(|e| KvError::Unavailable(e.to_string())))?;
        Ok(entry.and_then(|e| match e.operation {
            kv::Operation::Put => Some(KvEntry { value: e.value, revision: e.revision }),
            kv::Operation::Delete | kv::Operation::Purge => None,
        }))
    }

    /// Writes a key only if it does not exist: the claim of compare-and-set.
    pub async fn create(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.seen(self.store.create(key, value).await.map_err(|e| match e.kind() {
            kv::CreateErrorKind::AlreadyExists => KvError::AlreadyExists,
            _ => KvError::Unavailable(e.to_string()),
        }))
    }

    /// Writes a key only if its revision is still `revision`.
    pub async fn update(&self, key: &str, value: Bytes, revision: u64) -> Result<u64, KvError> {
        self.seen(self.store.update(key, value, revision).await.map_err(|e| match e.kind() {
            kv::UpdateErrorKind::WrongLastRevision => KvError::WrongRevision,
            _ => KvError::Unavailable(e.to_string()),
        }))
    }

    /// Writes a key unconditionally.
    pub async fn put(&self, key: &str, value: Bytes) -> Result<u64, KvError> {
        self.seen(self.store.put(key, value).await.map_err(|e| KvError::Unavailable(e.to_string())))
    }

    /// The keys starting with `prefix` (deleted keys excluded).
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        let keys = self.keys_inner(prefix).await;
        self.seen(keys)
    }

    async fn keys_inner(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        use futures::StreamExt;
        let mut keys = self.store.keys().await.map_err(|e| KvError::Unavailable(e.to_string()))?;
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| KvError::Unavailable(e.to_string()))?;
            if key.starts_with(prefix) && key != PROBE_KEY {
                out.push(key);
            }
        }
        Ok(out)
    }

    /// The latest value of every key under `prefix` (a key prefix ending in `.`; deleted
    /// keys excluded), read in one pass of an ordered consumer (the last message of each
    /// key) rather than a read per key: what a pass over thousands of records costs the
    /// bus. It needs the permissions of [`Kv::keys`] and, when the listing goes quiet,
    /// its consumer's info (`$JS.API.CONSUMER.INFO.KV_<bucket>.>`).
    pub async fn entries(&self, prefix: &str) -> Result<Vec<(String, KvEntry)>, KvError> {
        let entries = tokio::time::timeout(LISTING_WITHIN, self.entries_inner(prefix))
            .await
            .unwrap_or_else(|_| Err(KvError::Unavailable(format!("the listing took longer than {LISTING_WITHIN:?}"))));
        self.seen(entries)
    }

    async fn entries_inner(&self, prefix: &str) -> Result<Vec<(String, KvEntry)>, KvError> {
        use async_nats::jetstream::consumer::{DeliverPolicy, ReplayPolicy, push};
        use futures::StreamExt;
        let unavailable = |e: &dyn std::fmt::Display| KvError::Unavailable(e.to_string());
        // `a.b.` lists `a.b.>`; anything else is filtered here from the whole bucket.
        let filter = if prefix.ends_with('.') { format!("{prefix}>") } else { ">".to_owned() };
        let consumer = self
            .store
            .stream
            .create_consumer(push::OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                description: Some("sre-bus kv listing".to_owned()),
                filter_subject: format!("{}{filter}", self.store.prefix),
                replay_policy: ReplayPolicy::Instant,
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable(&e))?;
        // By key, the latest revision winning: writes made during the listing are delivered
        // too, and an ordered consumer that resets starts again from a sequence, not from
        // each key's last message.
        let mut out: std::collections::HashMap<String, (u64, Option<KvEntry>)> = std::collections::HashMap::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(Vec::new());
        }
        let probe = consumer.clone();
        let mut messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
        let listed = |out: std::collections::HashMap<String, (u64, Option<KvEntry>)>| {
            out.into_iter().filter_map(|(key, (_, entry))| entry.map(|e| (key, e))).collect()
        };
        let mut last_seen = 0;
        loop {
            let Ok(next) = tokio::time::timeout(LISTING_IDLE, messages.next()).await else {
                // Idle: done if the server delivered nothing past what came here. (A consumer
                // the ordered stream re-created has another name: the check then fails and the
                // listing goes on, within LISTING_WITHIN.)
                if let Ok(info) = probe.get_info().await
                    && info.num_pending == 0
                    && info.delivered.stream_sequence <= last_seen
                {
                    return Ok(listed(out));
                }
                continue;
            };
            let Some(message) = next else { break };
            let message = message.map_err(|e| unavailable(&e))?;
            let info = message.info().map_err(|e| unavailable(&e))?;
            let (revision, last) = (info.stream_sequence, info.pending == 0);
            last_seen = last_seen.max(revision);
            let deleted = message.headers.as_ref().is_some_and(|h| {
                h.get(KV_OPERATION).is_some_and(|op| KV_REMOVALS.contains(&op.as_str()))
                    || h.get(async_nats::header::NATS_MARKER_REASON).is_some()
            });
            let key = message.subject.strip_prefix(self.store.prefix.as_str()).unwrap_or_default();
            if key.starts_with(prefix) && key != PROBE_KEY && out.get(key).is_none_or(|(at, _)| *at < revision) {
                // A deletion is kept as such, so an older write met afterwards stays gone.
                let entry = (!deleted).then(|| KvEntry { value: message.payload.clone(), revision });
                out.insert(key.to_owned(), (revision, entry));
            }
            if last {
                return Ok(listed(out));
            }
        }
        Err(KvError::Unavailable("the listing ended before the bucket's last key".to_owned()))
    }

    /// Deletes a key.
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.seen(self.store.delete(key).await.map_err(|e| KvError::Unavailable(e.to_string())))
    }
}
