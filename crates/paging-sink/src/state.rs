//! What the sink keeps per incident, in the JetStream KV bucket `sre_paging_sink_pages`:
//! whether and where it paged, so redelivery never pages twice and acknowledge and resolve
//! go where the page went, and the deferred pages with their due time, so a deferral
//! survives restarts and is fired by exactly one replica.
//!
//! Keys: `page.<incident>` holds the record; `due.<incident>` marks a deferred page (an
//! index, so the replicas' scan reads only what is waiting). Every state change is a
//! compare-and-set on the record's revision.

use base64::Engine;
use bytes::Bytes;
use jiff::Timestamp;
use prost::Message;
use serde::{Deserialize, Serialize};
use sre_bus::{Bus, Kv, KvConfig, KvEntry, KvError};
use sre_contracts::domain::v1::IncidentCreated;

use crate::routing::Target;

/// The bucket.
pub const BUCKET: &str = "sre_paging_sink_pages";

/// Where a page stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageState {
    /// Waits for business hours (`due`).
    Deferred,
    /// A replica is sending the trigger (or died doing so: the vendor's dedup on the
    /// incident id makes sending it again safe, as long as it was never resolved).
    Claimed,
    /// The vendor accepted the trigger.
    Paged,
    /// Acknowledged at the vendor.
    Acknowledged,
    /// Resolved at the vendor. A trigger is never sent again: it would open a new alert.
    Resolved,
    /// Deferred, then acknowledged or resolved before the opening: never paged.
    Cancelled,
    /// The vendor refused the trigger for good (the reason is in `note`).
    Failed,
}

/// One incident's page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageRecord {
    /// The incident.
    pub incident_id: String,
    /// Where it stands.
    pub state: PageState,
    /// Where it pages.
    pub target: Target,
    /// When a deferred page is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<Timestamp>,
    /// The incident (protobuf, base64) while it may still have to be paged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
    /// The vendor's reference (dedup key, request id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Why it was cancelled or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Last change.
    pub updated_at: Timestamp,
    /// Whether it was ever deferred (and so has, or had, a `due.` marker to clean up).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deferred: bool,
    /// When it was first deferred: its due time is recomputed from this under the
    /// escalation in force, so a corrected schedule applies to pages already waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred_at: Option<Timestamp>,
    /// Not before this, whatever the schedule: the vendor asked to wait (throttled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
}

impl PageRecord {
    /// A new record carrying `incident`.
    pub fn new(incident: &IncidentCreated, state: PageState, target: Target, now: Timestamp) -> Self {
        Self {
            incident_id: incident.incident_id.clone(),
            state,
            target,
            due: None,
            incident: Some(base64::engine::general_purpose::STANDARD.encode(incident.encode_to_vec())),
            reference: None,
            note: None,
            updated_at: now,
            deferred: state == PageState::Deferred,
            deferred_at: (state == PageState::Deferred).then_some(now),
            not_before: None,
        }
    }

    /// The incident carried, when it still is.
    pub fn incident(&self) -> Option<IncidentCreated> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(self.incident.as_deref()?).ok()?;
        IncidentCreated::decode(bytes.as_slice()).ok()
    }

    /// The record moved to `state` at `now` (the incident is dropped once it cannot be
    /// needed again).
    pub fn moved(&self, state: PageState, now: Timestamp) -> Self {
        let keep = matches!(state, PageState::Deferred | PageState::Claimed);
        Self {
            state,
            updated_at: now,
            incident: if keep { self.incident.clone() } else { None },
            due: if state == PageState::Deferred { self.due } else { None },
            ..self.clone()
        }
    }
}

/// A record as read, with its revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    /// The record.
    pub record: PageRecord,
    /// Its revision, for compare-and-set.
    pub revision: u64,
}

/// The store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Pages {
    kv: Kv,
}

/// A KV key for an incident id: the id itself when it is a valid key token, else a hash.
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

fn decode(entry: KvEntry) -> Result<Read, KvError> {
    let record = serde_json::from_slice(&entry.value).map_err(|e| KvError::Unavailable(format!("decode: {e}")))?;
    Ok(Read { record, revision: entry.revision })
}

fn encode(record: &PageRecord) -> Bytes {
    Bytes::from(serde_json::to_vec(record).unwrap_or_default())
}

impl Pages {
    /// Opens the bucket (records expire after `max_age`, long after any follow-up).
    pub async fn open(bus: &Bus, max_age: std::time::Duration, reach: sre_bus::Reachability) -> Result<Self, KvError> {
        let kv = Kv::open_watched(
            bus,
            KvConfig {
                bucket: BUCKET.to_owned(),
                description: "paging-sink: one record per paged or deferred incident".to_owned(),
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

    /// The record of `incident_id`.
    pub async fn get(&self, incident_id: &str) -> Result<Option<Read>, KvError> {
        self.kv.get(&format!("page.{}", token(incident_id))).await?.map(decode).transpose()
    }

    /// Creates the record; `AlreadyExists` when another delivery or replica got there first.
    pub async fn create(&self, record: &PageRecord) -> Result<u64, KvError> {
        let revision = self.kv.create(&format!("page.{}", token(&record.incident_id)), encode(record)).await?;
        if record.state == PageState::Deferred {
            self.mark_due(record).await?;
        }
        Ok(revision)
    }

    /// Replaces the record if it is still at `revision`.
    pub async fn update(&self, record: &PageRecord, revision: u64) -> Result<u64, KvError> {
        let revision =
            self.kv.update(&format!("page.{}", token(&record.incident_id)), encode(record), revision).await?;
        match record.state {
            PageState::Deferred => self.mark_due(record).await?,
            // A claim keeps its marker: if the claiming replica dies, the scan finds the
            // stale claim and finishes it.
            PageState::Claimed => {}
            _ if record.deferred => self.kv.delete(&format!("due.{}", token(&record.incident_id))).await?,
            _ => {}
        }
        Ok(revision)
    }

    async fn mark_due(&self, record: &PageRecord) -> Result<(), KvError> {
        let due = record.due.map(|d| d.to_string()).unwrap_or_default();
        self.kv.put(&format!("due.{}", token(&record.incident_id)), Bytes::from(due)).await.map(|_| ())
    }

    /// The incident tokens with a deferred page.
    pub async fn deferred(&self) -> Result<Vec<String>, KvError> {
        Ok(self.kv.keys("due.").await?.into_iter().filter_map(|k| k.strip_prefix("due.").map(str::to_owned)).collect())
    }

    /// The record under an incident token (as listed by [`Pages::deferred`]).
    pub async fn get_token(&self, token: &str) -> Result<Option<Read>, KvError> {
        self.kv.get(&format!("page.{token}")).await?.map(decode).transpose()
    }

    /// Drops a stale due marker.
    pub async fn forget_due(&self, token: &str) -> Result<(), KvError> {
        self.kv.delete(&format!("due.{token}")).await
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
    fn records_drop_the_incident_once_it_cannot_be_needed() {
        let incident = IncidentCreated { incident_id: "inc-1".into(), title: "disk full".into(), ..Default::default() };
        let target = Target {
            provider: crate::config::Provider::Pagerduty,
            route: "default".into(),
            routing_key_ref: None,
            team: None,
        };
        let now = Timestamp::UNIX_EPOCH;
        let r = PageRecord::new(&incident, PageState::Claimed, target, now);
        assert_eq!(r.incident().map(|i| i.title), Some("disk full".into()));
        assert!(r.moved(PageState::Paged, now).incident.is_none());
        let json = serde_json::to_string(&r.moved(PageState::Paged, now)).expect("json");
        assert!(json.contains("\"state\":\"paged\"") && json.contains("\"provider\":\"pagerduty\""), "{json}");
    }
}
