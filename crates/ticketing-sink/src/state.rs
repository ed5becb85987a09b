//! The incident-to-ticket mapping, in the JetStream KV bucket `sre_ticketing_sink_tickets`
//! (key `ticket.<incident>`). The record is claimed with compare-and-set *before* the
//! vendor is asked to create anything; every later step is a compare-and-set on it.

use bytes::Bytes;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sre_bus::{Bus, Kv, KvConfig, KvError};

use crate::provider::TicketRef;
use crate::routing::Target;

/// The bucket.
pub const BUCKET: &str = "sre_ticketing_sink_tickets";

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    /// A replica is creating the ticket (or died doing so: see `claimed_at`).
    Claimed,
    /// The ticket exists.
    Created,
    /// Resolved at the vendor.
    Resolved,
    /// Closed at the vendor.
    Closed,
    /// The vendor refused to create it (the reason is in `note`).
    Failed,
}

/// One incident's ticket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TicketRecord {
    /// The incident.
    pub incident_id: String,
    /// Where it stands.
    pub state: TicketState,
    /// Where the ticket lives.
    pub target: Target,
    /// The ticket, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<TicketRef>,
    /// When the first create call of this claim was started (the ticket, if it was made,
    /// is no older); `None` when none can be in flight (the vendor answered with an
    /// error, so nothing was created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<Timestamp>,
    /// When the replica holding the claim last said it is alive: it renews the claim every
    /// few seconds while its vendor call runs, so a claim left by a crash is told from a
    /// live one in seconds (see `sink::STALE_CLAIM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewed_at: Option<Timestamp>,
    /// Whether the acknowledge comment was posted (who acknowledged, and where).
    #[serde(default)]
    pub acknowledge_commented: bool,
    /// Whether the resolve comment was posted (so a retry does not post it twice).
    #[serde(default)]
    pub resolve_commented: bool,
    /// Whether the close comment was posted.
    #[serde(default)]
    pub close_commented: bool,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Last change.
    pub updated_at: Timestamp,
}

impl TicketRecord {
    /// The last sign of life of the claim's holder.
    pub fn last_alive(&self) -> Option<Timestamp> {
        match (self.claimed_at, self.renewed_at) {
            (Some(c), Some(r)) => Some(c.max(r)),
            (c, r) => c.or(r),
        }
    }
}

/// A record as read, with its revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    /// The record.
    pub record: TicketRecord,
    /// Its revision, for compare-and-set.
    pub revision: u64,
}

/// A KV key token for an incident id: the id itself when it is a valid token, else a
/// hash. Also the ticket's marker suffix.
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

/// The store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Tickets {
    kv: Kv,
}

impl Tickets {
    /// Opens the bucket.
    pub async fn open(bus: &Bus, max_age: std::time::Duration, reach: sre_bus::Reachability) -> Result<Self, KvError> {
        let kv = Kv::open_watched(
            bus,
            KvConfig {
                bucket: BUCKET.to_owned(),
                description: "ticketing-sink: incident to ticket".to_owned(),
                max_age,
                history: 1,
                replicas: bus.config().streams.replicas,
            },
            reach,
        )
        .await?;
        Ok(Self { kv })
    }

    /// Asks the bucket for its status every `every` until `cancel` (readiness).
    pub async fn probe(&self, every: std::time::Duration, cancel: tokio_util::sync::CancellationToken) {
        self.kv.probe(every, cancel).await;
    }

    fn key(incident_id: &str) -> String {
        format!("ticket.{}", token(incident_id))
    }

    /// The record of `incident_id`.
    pub async fn get(&self, incident_id: &str) -> Result<Option<Read>, KvError> {
        let Some(entry) = self.kv.get(&Self::key(incident_id)).await? else { return Ok(None) };
        let record = serde_json::from_slice(&entry.value).map_err(|e| KvError::Unavailable(format!("decode: {e}")))?;
        Ok(Some(Read { record, revision: entry.revision }))
    }

    /// Creates the record: the claim.
    pub async fn create(&self, record: &TicketRecord) -> Result<u64, KvError> {
        self.kv
            .create(&Self::key(&record.incident_id), Bytes::from(serde_json::to_vec(record).unwrap_or_default()))
            .await
    }

    /// Replaces the record if it is still at `revision`.
    pub async fn update(&self, record: &TicketRecord, revision: u64) -> Result<u64, KvError> {
        self.kv
            .update(
                &Self::key(&record.incident_id),
                Bytes::from(serde_json::to_vec(record).unwrap_or_default()),
                revision,
            )
            .await
    }
}
