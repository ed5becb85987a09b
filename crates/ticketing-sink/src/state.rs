//! The incident-to-ticket record, in the JetStream KV bucket `sre_ticketing_sink_tickets`
//! (key `ticket.<incident>`). It is claimed with compare-and-set *before* the vendor is
//! asked to create anything (`sre_sink::claim`); every later step is a compare-and-set on
//! it.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sre_sink::{Bucket, Claim, Record, Records};

use crate::provider::TicketRef;
use crate::routing::Target;

/// The bucket.
pub const BUCKET: Bucket = Bucket {
    name: "sre_ticketing_sink_tickets",
    description: "ticketing-sink: incident to ticket",
    max_age: Duration::from_secs(90 * 24 * 3600),
};

/// The records.
pub type Tickets = Records<TicketRecord>;
/// A record as read.
pub type Read = sre_sink::Read<TicketRecord>;

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl TicketState {
    /// Every state.
    pub const ALL: [TicketState; 5] =
        [TicketState::Claimed, TicketState::Created, TicketState::Resolved, TicketState::Closed, TicketState::Failed];
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
    /// When the replica holding the claim last said it is alive (`sre_sink::claim`).
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
    /// The ticket as it was made (title, body, severity): a reopen long after it ended
    /// opens another like it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<Draft>,
    /// The incident's reopens handled so far (its life: facts of an earlier one are stale).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reopen_count: u32,
    /// When the ticket was last resolved or closed (the reopen window counts from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    /// The tickets of the incident's earlier lives, when a reopen opened a new one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<TicketRef>,
    /// When the severity the ticket's priority follows was last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity_at: Option<Timestamp>,
    /// That severity (its configuration name), recorded before the priority is set, so the
    /// latest change's is the one the ticket ends with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Comments waiting to be posted together (notes, reopens, severity changes), oldest
    /// first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<Pending>,
    /// The comments posted or being posted, by id (each once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<sre_sink::notes::Mark>,
    /// When the sink last wrote to the ticket (writes to one ticket are spaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_write_at: Option<Timestamp>,
    /// The end (resolved, closed) the domain asked for whose calls failed (its fact
    /// retried, or dead-lettered): the reconciler sends it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsent: Option<TicketState>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A ticket as it was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draft {
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Severity name.
    pub severity: String,
    /// The route's fields as rendered for the first ticket (a later ticket of the
    /// incident gets the same).
    #[serde(default, skip_serializing_if = "is_default")]
    pub fields: crate::fields::Rendered,
    /// What the fields' templates name, to render the `sync` ones again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<crate::fields::Context>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// A comment waiting to be posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Its id (its mark in the text).
    pub id: String,
    /// The text, mark included.
    pub text: String,
}

impl TicketRecord {
    /// The claim of a new ticket for `incident_id` at `target`, its first call starting at
    /// `now`.
    pub fn claim(incident_id: &str, target: Target, now: Timestamp) -> Self {
        Self {
            incident_id: incident_id.to_owned(),
            state: TicketState::Claimed,
            target,
            ticket: None,
            claimed_at: Some(now),
            renewed_at: None,
            acknowledge_commented: false,
            resolve_commented: false,
            close_commented: false,
            note: None,
            updated_at: now,
            draft: None,
            reopen_count: 0,
            ended_at: None,
            earlier: Vec::new(),
            severity_at: None,
            severity: None,
            pending: Vec::new(),
            notes: Vec::new(),
            last_write_at: None,
            unsent: None,
        }
    }
}

impl Record for TicketRecord {
    const PREFIX: &'static str = "ticket";
    fn incident_id(&self) -> &str {
        &self.incident_id
    }
}

impl Claim for TicketRecord {
    fn last_alive(&self) -> Option<Timestamp> {
        match (self.claimed_at, self.renewed_at) {
            (Some(c), Some(r)) => Some(c.max(r)),
            (c, r) => c.or(r),
        }
    }

    fn renew(&mut self, now: Timestamp) {
        self.renewed_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Provider;

    #[test]
    fn the_record_json_is_what_earlier_releases_wrote() {
        let target = Target { provider: Provider::Jira, route: "default".into(), project: "OPS".into() };
        let at = Timestamp::from_second(1_700_000_000).expect("ts");
        let mut record = TicketRecord::claim("inc-1", target, at);
        record.state = TicketState::Created;
        record.ticket = Some(TicketRef { key: "OPS-1".into(), url: "https://jira/browse/OPS-1".into(), id: None });
        record.claimed_at = None;
        let json = serde_json::to_value(&record).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "incident_id": "inc-1", "state": "created",
                "target": {"provider": "jira", "route": "default", "project": "OPS"},
                "ticket": {"key": "OPS-1", "url": "https://jira/browse/OPS-1"},
                "acknowledge_commented": false, "resolve_commented": false, "close_commented": false,
                "updated_at": "2023-11-14T22:13:20Z"
            })
        );
        // A record of an earlier release, without the comment flags, still reads.
        let old = r#"{"incident_id":"inc-2","state":"claimed","target":{"provider":"github","route":"routes[0]","project":"acme/ops"},"claimed_at":"2023-11-14T22:13:20Z","updated_at":"2023-11-14T22:13:20Z"}"#;
        let read: TicketRecord = serde_json::from_str(old).expect("reads");
        assert_eq!((read.state, read.last_alive()), (TicketState::Claimed, Some(at)));
    }
}
