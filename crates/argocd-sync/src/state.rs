//! What argocd-sync keeps on the bus: a lease per Argo CD server (one replica polls it) and
//! the last observed state of its applications (a restart does not re-emit every
//! application). Both are JetStream KV buckets; see `design.md` for why both.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use sre_bus::{Bus, Kv, KvConfig, KvError};

use crate::apps::{Apps, Updates};
use crate::cycle::fnv1a;
use crate::observe::Tracked;

/// Bucket of the leases, one key per server. Entries expire after the lease TTL (the
/// bucket's `max_age`), so a leader that died without releasing is replaced.
pub const LEASE_BUCKET: &str = "sre_argocd_sync_lease";
/// Bucket of the kept state, `SHARDS` keys per server.
pub const STATE_BUCKET: &str = "sre_argocd_sync_state";
/// The kept state of one server is split over this many keys, so a key stays far below
/// the bus's 1 MB message limit (~10,000 applications per shard) and a cycle rewrites
/// only the shards whose applications changed.
pub const SHARDS: usize = 32;

/// The key prefix of one server: a hash of its URL (KV keys cannot hold `:` or `/`).
pub fn server_id(url: &str) -> String {
    format!("{:016x}", fnv1a(url.trim_end_matches('/').as_bytes()))
}

/// The lease and state buckets' settings (the lease's entries live `lease_ttl`).
pub fn buckets(lease_ttl: Duration, replicas: sre_bus::Replicas) -> [KvConfig; 2] {
    [
        KvConfig {
            bucket: LEASE_BUCKET.to_owned(),
            description: "argocd-sync: which replica polls each Argo CD server".to_owned(),
            max_age: lease_ttl,
            history: 1,
            replicas,
        },
        KvConfig {
            bucket: STATE_BUCKET.to_owned(),
            description: "argocd-sync: last observed status of each application".to_owned(),
            max_age: Duration::ZERO,
            history: 1,
            replicas,
        },
    ]
}

/// Opens both buckets (or, binding only, finds them); `reach` follows the state bucket
/// (the `kv` readiness check: not ready until both are open, so a ready replica can take
/// the lease and keep its state).
pub async fn open_buckets(bus: &Bus, lease_ttl: Duration, reach: sre_bus::Reachability) -> Result<(Kv, Kv), KvError> {
    let [lease, state] = buckets(lease_ttl, bus.config().streams.replicas);
    let lease = Kv::open(bus, lease).await?;
    let state = Kv::open_watched(bus, state, reach).await?;
    Ok((lease, state))
}

/// A lease on one server's polling.
#[derive(Debug)]
pub struct Lease {
    kv: Kv,
    key: String,
    holder: Bytes,
}

impl Lease {
    /// A lease on `server_id`, held under `holder` (instance name plus a per-process nonce,
    /// so a restarted process with the same name is a new holder).
    pub fn new(kv: Kv, server_id: &str, holder: String) -> Self {
        Self { kv, key: server_id.to_owned(), holder: Bytes::from(holder) }
    }

    /// Takes the lease when it is free, renews it when held: `Some(id)` while this process
    /// holds it. Compare-and-set on both paths, so two replicas never both win. The id
    /// (holder and the revision the bucket gave this write) names the cycle this renewal
    /// starts: no other write, by any replica, gets it.
    pub async fn acquire(&self) -> Result<Option<String>, KvError> {
        let written = match self.kv.get(&self.key).await? {
            None => match self.kv.create(&self.key, self.holder.clone()).await {
                Ok(revision) => revision,
                Err(KvError::AlreadyExists) => return Ok(None),
                Err(e) => return Err(e),
            },
            Some(entry) if entry.value == self.holder => {
                match self.kv.update(&self.key, self.holder.clone(), entry.revision).await {
                    Ok(revision) => revision,
                    Err(KvError::WrongRevision) => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            Some(_) => return Ok(None),
        };
        Ok(Some(format!("{}/{written}", String::from_utf8_lossy(&self.holder))))
    }

    /// Gives the lease up at shutdown so another replica takes over at its next tick.
    pub async fn release(&self) -> Result<(), KvError> {
        match self.kv.get(&self.key).await? {
            Some(entry) if entry.value == self.holder => self.kv.delete(&self.key).await,
            _ => Ok(()),
        }
    }
}

/// Saving the state failed.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Another replica wrote the state: this one is no longer the leader.
    #[error("another replica wrote the state")]
    Conflict,
    /// The bus did not store it.
    #[error(transparent)]
    Unavailable(KvError),
    /// Not serialisable (not expected).
    #[error("encode: {0}")]
    Encode(String),
}

/// The kept state of one server, as the leader holds it, with the revision of each shard.
#[derive(Debug, Clone, Default)]
pub struct Kept {
    /// By `<namespace>/<name>`.
    pub apps: Apps,
    revisions: Vec<Option<u64>>,
    hashes: Vec<u64>,
}

/// The state bucket of one server.
#[derive(Debug, Clone)]
pub struct StateStore {
    kv: Kv,
    prefix: String,
}

fn shard_of(app: &str) -> usize {
    (fnv1a(app.as_bytes()) % SHARDS as u64) as usize
}

impl StateStore {
    /// The state of `server_id` in `kv`.
    pub fn new(kv: Kv, server_id: &str) -> Self {
        Self { kv, prefix: server_id.to_owned() }
    }

    fn key(&self, shard: usize) -> String {
        format!("{}.{shard:02}", self.prefix)
    }

    /// Reads every shard. A shard that cannot be decoded (written by an incompatible
    /// version) reads as empty: its applications are reported as new once, not lost.
    pub async fn load(&self) -> Result<Kept, KvError> {
        let mut kept = Kept { apps: Apps::default(), revisions: vec![None; SHARDS], hashes: vec![0; SHARDS] };
        let mut all: Vec<(String, Tracked)> = Vec::new();
        for shard in 0..SHARDS {
            let Some(entry) = self.kv.get(&self.key(shard)).await? else { continue };
            kept.revisions[shard] = Some(entry.revision);
            kept.hashes[shard] = fnv1a(&entry.value);
            match serde_json::from_slice::<BTreeMap<String, Tracked>>(&entry.value) {
                Ok(apps) => all.extend(apps),
                Err(e) => tracing::warn!(shard, error = %e, "kept state unreadable; its applications start afresh"),
            }
        }
        kept.apps = all.into_iter().collect();
        Ok(kept)
    }

    /// Applies a cycle's kept-state `updates` (`None` forgets an application) and writes
    /// only the shards they touch, each with compare-and-set. A steady fleet writes nothing
    /// and encodes nothing. On an error the memory is ahead of the bucket: reload.
    pub async fn save_updates(&self, kept: &mut Kept, updates: Updates) -> Result<usize, SaveError> {
        if kept.revisions.len() != SHARDS {
            kept.revisions = vec![None; SHARDS];
            kept.hashes = vec![0; SHARDS];
        }
        let mut touched = [false; SHARDS];
        for app in updates.keys() {
            touched[shard_of(app)] = true;
        }
        kept.apps.merge(updates.set, &updates.forget);
        let mut scratch = Kept {
            apps: Apps::default(),
            revisions: std::mem::take(&mut kept.revisions),
            hashes: std::mem::take(&mut kept.hashes),
        };
        let mut result = Ok(0);
        for shard in (0..SHARDS).filter(|s| touched[*s]) {
            let apps: BTreeMap<&str, &Tracked> = kept.apps.iter().filter(|(k, _)| shard_of(k) == shard).collect();
            match self.write_shard(&mut scratch, shard, &apps).await {
                Ok(true) => result = result.map(|n| n + 1),
                Ok(false) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        kept.revisions = scratch.revisions;
        kept.hashes = scratch.hashes;
        result
    }

    /// Sets one application's kept state (`None` forgets it) and writes its shard. On
    /// failure the change is undone in memory, so the next poll plans it again.
    pub async fn save_one(&self, kept: &mut Kept, app: &str, tracked: Option<Tracked>) -> Result<(), SaveError> {
        let old = kept.apps.get(app);
        let mut updates = Updates::default();
        match tracked {
            Some(t) => updates.set.push(app, t),
            None => updates.forget.push(app.to_owned()),
        }
        let result = self.save_updates(kept, updates).await;
        if result.is_err() {
            kept.apps.apply(&[(app.to_owned(), old)]);
        }
        result.map(|_| ())
    }

    /// Writes one shard if it changed; `true` when written.
    async fn write_shard(
        &self,
        kept: &mut Kept,
        shard: usize,
        apps: &BTreeMap<&str, &Tracked>,
    ) -> Result<bool, SaveError> {
        let body = serde_json::to_vec(apps).map_err(|e| SaveError::Encode(e.to_string()))?;
        let hash = fnv1a(&body);
        if kept.revisions[shard].is_some() && kept.hashes[shard] == hash {
            return Ok(false);
        }
        if kept.revisions[shard].is_none() && apps.is_empty() {
            return Ok(false);
        }
        let key = self.key(shard);
        let result = match kept.revisions[shard] {
            Some(revision) => self.kv.update(&key, Bytes::from(body), revision).await,
            None => self.kv.create(&key, Bytes::from(body)).await,
        };
        match result {
            Ok(revision) => {
                kept.revisions[shard] = Some(revision);
                kept.hashes[shard] = hash;
                Ok(true)
            }
            Err(KvError::WrongRevision | KvError::AlreadyExists) => Err(SaveError::Conflict),
            Err(e) => Err(SaveError::Unavailable(e)),
        }
    }
}
