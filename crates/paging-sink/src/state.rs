//! What the sink keeps per incident, in the JetStream KV bucket `sre_paging_sink_pages`:
//! whether and where it paged, so redelivery never pages twice and acknowledge and resolve
//! go where the page went, and the deferred pages with their due time, so a deferral
//! survives restarts and is fired by exactly one replica.
//!
//! Keys: `page.<incident>` holds the record; `due.<incident>` marks a deferred page (an
//! index, so the replicas' scan reads only what is waiting). Every state change is a
//! compare-and-set on the record's revision.

use std::time::Duration;

use base64::Engine;
use jiff::Timestamp;
use prost::Message;
use serde::{Deserialize, Serialize};
use sre_contracts::domain::v1::{IncidentCreated, Severity};
use sre_sink::records::Index;
use sre_sink::{Bucket, Claim, Record, RecordError, Records};

use crate::provider::FollowUp;
use crate::routing::Target;

/// The bucket (records expire long after any follow-up).
pub const BUCKET: Bucket = Bucket {
    name: "sre_paging_sink_pages",
    description: "paging-sink: one record per paged or deferred incident",
    max_age: Duration::from_secs(30 * 24 * 3600),
};

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
    /// Deferred (or below the threshold), then acknowledged or resolved before it paged:
    /// never paged.
    Cancelled,
    /// The vendor refused the trigger for good (the reason is in `note`).
    Failed,
    /// Below the paging threshold (the escalation never pages its severity): kept with the
    /// incident, so a raised severity or a reopen can still page it.
    Below,
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
    /// Whether it has a `due.` marker (deferred, or a claim the scan must finish if its
    /// delivery stops).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub marked: bool,
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
    /// The incident's reopens handled so far (its life: facts of an earlier one are stale).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reopen_count: u32,
    /// When the severity the record holds was set by an `IncidentSeverityChanged`: an
    /// older change arriving later is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity_at: Option<Timestamp>,
    /// The notes added to the page (claimed, posted), so each is added once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<sre_sink::notes::Mark>,
    /// A follow-up the domain asked for whose calls failed (its fact retried, or
    /// dead-lettered): the reconciler sends it again until the vendor holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsent: Option<FollowUp>,
    /// A claim whose trigger never left, with when its fact comes back: its turn with the
    /// credential's limit was further than the sink waits, and the fact was handed back to
    /// the bus until then. An acknowledge or resolve meanwhile cancels the page (nobody is
    /// paged for an incident already handled); the delivery that comes back claims it
    /// again before sending. The claim counts as alive until then (the scan leaves it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_back: Option<Timestamp>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The incident as a record keeps it: whatever it carries, the record stays far below a
/// bus message (1 MB by default), so a huge description can never leave a page unsaved
/// and its fact retried for ever. The description is cut with a note, labels past 64 and
/// long values shortened; the page sent from it still says what matters.
fn kept(incident: &IncidentCreated) -> IncidentCreated {
    use sre_sink::limits::{BODY_MAX, FIELD_MAX, SHORT_MAX, fit};
    let short = |s: &str| fit(s, SHORT_MAX).into_owned();
    let mut kept = incident.clone();
    kept.title = short(&incident.title);
    for field in [&mut kept.service, &mut kept.environment, &mut kept.team, &mut kept.url, &mut kept.runbook_url] {
        *field = fit(field, FIELD_MAX).into_owned();
    }
    kept.description = fit(&incident.description, BODY_MAX).into_owned();
    kept.labels = incident.labels.iter().take(64).map(|(k, v)| (short(k), short(v))).collect();
    kept.alert_fingerprints.truncate(64);
    kept
}

impl PageRecord {
    /// A new record carrying `incident`.
    pub fn new(incident: &IncidentCreated, state: PageState, target: Target, now: Timestamp) -> Self {
        Self {
            incident_id: incident.incident_id.clone(),
            state,
            target,
            due: None,
            incident: Some(base64::engine::general_purpose::STANDARD.encode(kept(incident).encode_to_vec())),
            reference: None,
            note: None,
            updated_at: now,
            deferred: state == PageState::Deferred,
            marked: false,
            deferred_at: (state == PageState::Deferred).then_some(now),
            not_before: None,
            reopen_count: 0,
            severity_at: None,
            notes: Vec::new(),
            unsent: None,
            handed_back: None,
        }
    }

    /// The incident's severity as the record holds it (the created one, or the last
    /// change); unspecified when the incident is not carried.
    pub fn severity(&self) -> Severity {
        self.incident().and_then(|i| Severity::try_from(i.severity).ok()).unwrap_or(Severity::Unspecified)
    }

    /// The record with the incident's severity changed to `to` (set `at`).
    pub fn with_severity(&self, to: Severity, at: Option<Timestamp>) -> Self {
        let mut next = self.clone();
        if let Some(mut incident) = self.incident() {
            incident.severity = to as i32;
            next.incident = Some(base64::engine::general_purpose::STANDARD.encode(incident.encode_to_vec()));
        }
        next.severity_at = at.or(self.severity_at);
        next
    }

    /// The incident carried, when it still is.
    pub fn incident(&self) -> Option<IncidentCreated> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(self.incident.as_deref()?).ok()?;
        IncidentCreated::decode(bytes.as_slice()).ok()
    }

    /// The record moved to `state` at `now`. The incident is kept whatever the state: a
    /// reopen or a raised severity can page it again.
    pub fn moved(&self, state: PageState, now: Timestamp) -> Self {
        Self {
            state,
            updated_at: now,
            due: if state == PageState::Deferred { self.due } else { None },
            handed_back: None,
            ..self.clone()
        }
    }
}

impl Record for PageRecord {
    const PREFIX: &'static str = "page";
    fn incident_id(&self) -> &str {
        &self.incident_id
    }
}

/// A claimed page's holder renews `updated_at` (the record's last change) while its
/// trigger is in flight: the sign of life the claim rule reads.
impl Claim for PageRecord {
    fn last_alive(&self) -> Option<Timestamp> {
        (self.state == PageState::Claimed).then_some(self.updated_at.max(self.handed_back.unwrap_or(self.updated_at)))
    }

    fn renew(&mut self, now: Timestamp) {
        self.updated_at = now;
    }
}

/// A record as read.
pub type Read = sre_sink::Read<PageRecord>;

/// The page records, and the index of the deferred ones; cheap to clone.
#[derive(Debug, Clone)]
pub struct Pages {
    records: Records<PageRecord>,
    due: Index,
}

impl Pages {
    /// The pages kept in `records`.
    pub fn new(records: Records<PageRecord>) -> Self {
        let due = records.index("due");
        Self { records, due }
    }

    /// The records.
    pub fn records(&self) -> &Records<PageRecord> {
        &self.records
    }

    /// The record of `incident_id`.
    pub async fn get(&self, incident_id: &str) -> Result<Option<Read>, RecordError> {
        self.records.get(incident_id).await
    }

    /// Creates the record; `AlreadyExists` when another delivery or replica got there first.
    pub async fn create(&self, record: &PageRecord) -> Result<u64, RecordError> {
        let mut record = record.clone();
        record.marked = record.state == PageState::Deferred;
        let revision = self.records.create(&record).await?;
        if record.marked {
            self.mark_due(&record).await?;
        }
        Ok(revision)
    }

    /// Replaces the record if it is still at `revision`, keeping the `due.` index true: a
    /// deferred page is in it, and so is every claim made on an existing record (a deferred
    /// page firing, a reopen or a raised severity paging): if the delivery that claimed it
    /// stops (a vendor error it hands back, a crash), the scan finds the stale claim and
    /// finishes it, whatever becomes of the fact. (A new incident's first claim is finished
    /// by its IncidentCreated's redelivery.)
    pub async fn update(&self, record: &PageRecord, revision: u64) -> Result<u64, RecordError> {
        let mut record = record.clone();
        // `deferred`: records written before `marked` was kept.
        let had_marker = record.marked || record.deferred;
        record.marked = matches!(record.state, PageState::Deferred | PageState::Claimed);
        let revision = self.records.update(&record, revision).await?;
        if record.marked {
            self.mark_due(&record).await?;
        } else if had_marker {
            self.due.unmark(&record.incident_id).await?;
        }
        Ok(revision)
    }

    async fn mark_due(&self, record: &PageRecord) -> Result<(), RecordError> {
        self.due.mark(&record.incident_id, &record.due.map(|d| d.to_string()).unwrap_or_default()).await
    }

    /// Runs `work` (adding note `id` to the page) while renewing the note's claim, so no
    /// other delivery takes it for a crashed post; returns `work`'s output and the record
    /// as it now stands.
    pub async fn renewing_note<T>(
        &self,
        read: Read,
        id: &str,
        work: impl std::future::Future<Output = T>,
    ) -> (T, Read) {
        let ids = [id.to_owned()];
        let renew = |r: &mut PageRecord, now| sre_sink::notes::renew(&mut r.notes, &ids, now);
        sre_sink::claim::renewing_with(&self.records, read, renew, work).await
    }

    /// The incident tokens with a deferred page.
    pub async fn deferred(&self) -> Result<Vec<String>, RecordError> {
        self.due.tokens().await
    }

    /// The record under an incident token (as listed by [`Pages::deferred`]).
    pub async fn get_token(&self, token: &str) -> Result<Option<Read>, RecordError> {
        self.records.get_token(token).await
    }

    /// Drops a stale due marker.
    pub async fn forget_due(&self, token: &str) -> Result<(), RecordError> {
        self.due.unmark_token(token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_the_incident_for_a_reopen_and_their_severity_changes() {
        let incident = IncidentCreated { incident_id: "inc-1".into(), title: "disk full".into(), ..Default::default() };
        let target = Target {
            provider: crate::provider::Provider::Pagerduty,
            route: "default".into(),
            routing_key_ref: None,
            team: None,
        };
        let now = Timestamp::UNIX_EPOCH;
        let r = PageRecord::new(&incident, PageState::Claimed, target, now);
        assert_eq!(r.incident().map(|i| i.title), Some("disk full".into()));
        let resolved = r.moved(PageState::Resolved, now);
        assert_eq!(resolved.incident().map(|i| i.title), Some("disk full".into()), "a reopen pages it again");
        assert_eq!(resolved.severity(), Severity::Unspecified);
        let raised = resolved.with_severity(Severity::Critical, Some(now));
        assert_eq!((raised.severity(), raised.severity_at), (Severity::Critical, Some(now)));
        let json = serde_json::to_string(&r.moved(PageState::Paged, now)).expect("json");
        assert!(json.contains("\"state\":\"paged\"") && json.contains("\"provider\":\"pagerduty\""), "{json}");
    }
}
