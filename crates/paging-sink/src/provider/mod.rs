//! Paging providers behind one small trait. Each module builds its vendor's requests,
//! sends one, and classifies the answer; none retries or sleeps (`sre_resilience` does).
//! Opsgenie's support ends on 2027-04-05; its successor, Jira Service Management
//! Operations, mirrors its API and is served by the same client (`opsgenie::Opsgenie::jsm`).

pub mod opsgenie;
pub mod pagerduty;

use std::future::Future;
use std::pin::Pin;

use sre_contracts::domain::v1::IncidentCreated;

/// A paging provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// PagerDuty Events API v2.
    Pagerduty,
    /// Opsgenie Alert API v2 (end of support 2027-04-05).
    Opsgenie,
    /// Jira Service Management Operations' integration API, Opsgenie's successor.
    Jsm,
}

impl Provider {
    /// The provider's name in logs, metrics, readiness and errors.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Pagerduty => pagerduty::NAME,
            Provider::Opsgenie => opsgenie::NAME,
            Provider::Jsm => opsgenie::JSM_NAME,
        }
    }

    /// The provider's name as people know it.
    pub fn title(self) -> &'static str {
        match self {
            Provider::Pagerduty => "PagerDuty",
            Provider::Opsgenie => "Opsgenie",
            Provider::Jsm => "Jira Service Management",
        }
    }

    /// Whether its routes name a team (Opsgenie and JSM) rather than a routing key.
    pub fn by_team(self) -> bool {
        matches!(self, Provider::Opsgenie | Provider::Jsm)
    }
}

impl sre_sink::Vendor for Provider {
    fn name(self) -> &'static str {
        Provider::name(self)
    }
}

/// A boxed future, so providers can sit behind `dyn Pager`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A follow-up on a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FollowUp {
    /// Acknowledge.
    Acknowledge,
    /// Resolve (close).
    Resolve,
}

/// Where one page goes, with its credentials resolved.
#[derive(Clone)]
pub struct Destination {
    /// PagerDuty routing key.
    pub routing_key: Option<secrecy::SecretString>,
    /// Opsgenie (or JSM) responding team.
    pub team: Option<String>,
    /// Opsgenie (or JSM) alert fields of the page's route.
    pub alert: crate::alert_fields::Compiled,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination").field("team", &self.team).finish_non_exhaustive()
    }
}

/// What the vendor said when it took the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// PagerDuty's `dedup_key`, Opsgenie's `requestId`.
    pub reference: String,
}

pub use sre_runtime::outbound::{VendorError, clip};

/// An error answer of PagerDuty or Opsgenie: both put their reason in `message`
/// (PagerDuty adds `errors`).
pub(crate) fn status_error(provider: &'static str, answer: &sre_runtime::outbound::Answer) -> VendorError {
    sre_runtime::outbound::status_error(provider, answer, |v| {
        let m = v.get("message").and_then(|m| m.as_str())?;
        let errors = v.get("errors").map(|e| format!(" {e}")).unwrap_or_default();
        Some(format!("{m}{errors}"))
    })
}

/// Where a page stands at its vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VendorStatus {
    /// Open, nobody on it yet (PagerDuty `triggered`, Opsgenie `open`).
    Open,
    /// Acknowledged.
    Acknowledged,
    /// Resolved (Opsgenie: closed).
    Resolved,
    /// The vendor has no page for the incident.
    Missing,
}

/// A page as its vendor has it now (the reconciler's read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorPage {
    /// Its status.
    pub status: VendorStatus,
    /// The vendor's id of it (PagerDuty's incident, Opsgenie's alert).
    pub id: String,
    /// Where a person sees it.
    pub url: String,
    /// Who last changed its status, when the vendor says.
    pub by: String,
}

impl VendorPage {
    /// No page at the vendor.
    pub fn missing() -> Self {
        Self { status: VendorStatus::Missing, id: String::new(), url: String::new(), by: String::new() }
    }
}

/// A paging provider.
pub trait Pager: Send + Sync {
    /// The provider's name (`pagerduty`, `opsgenie`, `jsm`).
    fn name(&self) -> &'static str;
    /// Pages for `incident`, deduplicated by the vendor on the incident id.
    fn trigger<'a>(
        &'a self,
        destination: &'a Destination,
        incident: &'a IncidentCreated,
    ) -> BoxFuture<'a, Result<Accepted, VendorError>>;
    /// Acknowledges or resolves the page of `incident_id`.
    fn follow_up<'a>(
        &'a self,
        destination: &'a Destination,
        incident_id: &'a str,
        action: FollowUp,
        note: &'a str,
    ) -> BoxFuture<'a, Result<Accepted, VendorError>>;
    /// Why this pager cannot add notes to its pages, when it cannot.
    fn cannot_note(&self) -> Option<&'static str> {
        None
    }
    /// Why this pager cannot read its pages back (the reconciler skips them), when it cannot.
    fn cannot_read(&self) -> Option<&'static str> {
        None
    }
    /// The page of `incident_id` as the vendor has it now: the open one, else the newest.
    fn page<'a>(&'a self, incident_id: &'a str) -> BoxFuture<'a, Result<VendorPage, VendorError>>;
    /// The pages of many incidents at once, by incident id, when the vendor can list them
    /// (PagerDuty: its open incidents and those resolved within a day, a hundred a
    /// request); an incident not in it has no page there. `None`: read each with
    /// [`Pager::page`].
    fn pages<'a>(
        &'a self,
        _incident_ids: &'a [String],
    ) -> BoxFuture<'a, Result<Option<std::collections::HashMap<String, VendorPage>>, VendorError>> {
        Box::pin(async { Ok(None) })
    }
    /// Adds `text` as a note to the page of `incident_id` (its latest alert).
    fn note<'a>(&'a self, incident_id: &'a str, text: &'a str) -> BoxFuture<'a, Result<(), VendorError>>;
    /// The notes on the page of `incident_id`, as text: how a note posted by a call that
    /// died is found before it is posted again.
    fn notes<'a>(&'a self, incident_id: &'a str) -> BoxFuture<'a, Result<Vec<String>, VendorError>>;
}

/// Who sends the pages, as the vendors show it (PagerDuty's `client`, Opsgenie's `source`).
pub const CLIENT: &str = "sre-integration";

/// The vendor-side dedup key of an incident: its id, or a hash when it exceeds `max`.
pub fn dedup_key(incident_id: &str, max: usize) -> String {
    if incident_id.len() <= max {
        incident_id.to_owned()
    } else {
        sre_resilience::idempotency::derive_key("incident", &[incident_id])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_respects_characters() {
        assert_eq!(clip("héllo", 10), "héllo");
        assert_eq!(clip("héllo wörld", 5), "héll…");
        assert_eq!(clip("ééééé", 3).chars().count(), 3);
    }

    #[test]
    fn long_ids_are_hashed_to_fit() {
        assert_eq!(dedup_key("inc-1", 255), "inc-1");
        let long = "x".repeat(300);
        let k = dedup_key(&long, 255);
        assert!(k.len() <= 255 && k != long);
        assert_eq!(k, dedup_key(&long, 255), "stable");
    }
}
