//! Ticket providers behind one small trait. Each module builds its vendor's requests,
//! sends them, and classifies the answers; none retries or sleeps (`sre_resilience` does).

pub mod github;
pub mod jira;

use std::future::Future;
use std::pin::Pin;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

pub use sre_runtime::outbound::{VendorError, clip};

/// One configured tracker: its client and the credential its calls are made with.
#[derive(Clone)]
pub struct Configured {
    /// The client.
    pub tracker: std::sync::Arc<dyn Tracker>,
    /// The credential (its secret reference), whose limit and breaker the calls share.
    pub credential: String,
}

/// A ticketing provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Jira Cloud or Data Center.
    Jira,
    /// GitHub Issues (github.com or Enterprise).
    Github,
}

impl Provider {
    /// The provider's name in logs, metrics, readiness and errors.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Jira => jira::NAME,
            Provider::Github => github::NAME,
        }
    }
}

impl sre_sink::Vendor for Provider {
    fn name(self) -> &'static str {
        Provider::name(self)
    }
}

/// A boxed future, so providers can sit behind `dyn Tracker`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The fields rendered for one ticket, in the vendor's terms; kept in the ticket's draft.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketFields {
    /// Jira issue type, when the route sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issue_type: Option<String>,
    /// Labels beyond the provider's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Jira `fields` entries (components, assignee, custom fields) as Jira takes them.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub jira: serde_json::Map<String, serde_json::Value>,
    /// GitHub assignees.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assignees: Vec<String>,
    /// GitHub milestone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub milestone: Option<u64>,
}

/// A ticket as the vendor knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketRef {
    /// Jira key (`OPS-12`) or GitHub issue number.
    pub key: String,
    /// Link for people.
    pub url: String,
    /// Jira's issue id (`10042`), learnt when the ticket was created or found: what Jira
    /// Cloud's search takes to read an issue with read-after-write consistency
    /// (`reconcileIssues`). Absent for GitHub, and for tickets recorded before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// A ticket to open.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTicket {
    /// Jira project key or GitHub `owner/name`.
    pub project: String,
    /// Rendered title.
    pub title: String,
    /// Rendered body (plain text with line breaks).
    pub body: String,
    /// The incident's marker (a label in Jira, a line in the body on GitHub): how the
    /// sink finds the ticket again after a crash between creating it and recording it.
    pub marker: String,
    /// The incident's severity name (`critical`…).
    pub severity: String,
    /// The ticket of the incident's earlier life this one follows (a reopen long after it
    /// ended): linked to it.
    pub follows: Option<TicketRef>,
    /// The route's fields (issue type, components, assignee, labels, custom fields; GitHub
    /// assignees and milestone), rendered.
    pub fields: TicketFields,
}

/// Where a ticket stands at the vendor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TicketStatus {
    /// Resolved or closed (Jira: a status of the Done category; GitHub: closed, or carrying
    /// the resolved label).
    pub done: bool,
    /// Jira's resolution (`Done`, `Won't Fix`…), GitHub's `state_reason` (`completed`,
    /// `not_planned`, `duplicate`); empty when it has none.
    pub resolution: String,
}

/// A ticket as its tracker has it now (the reconciler's read).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VendorTicket {
    /// Jira key or GitHub issue number.
    pub key: String,
    /// Jira's status name; GitHub's `open` or `closed`.
    pub status: String,
    /// Jira: a status of the `done` category; GitHub: closed.
    pub done: bool,
    /// Jira's resolution, GitHub's `state_reason`; empty when none.
    pub resolution: String,
}

/// A ticket tracker.
pub trait Tracker: Send + Sync {
    /// The provider's name (`jira`, `github`).
    fn name(&self) -> &'static str;
    /// Opens a ticket.
    fn create<'a>(&'a self, ticket: &'a NewTicket) -> BoxFuture<'a, Result<TicketRef, VendorError>>;
    /// Finds the ticket carrying `marker` in `project`, created or updated since `since`,
    /// other than `exclude` (the tickets of the incident's earlier lives).
    fn find<'a>(
        &'a self,
        project: &'a str,
        marker: &'a str,
        since: Timestamp,
        exclude: &'a [String],
    ) -> BoxFuture<'a, Result<Option<TicketRef>, VendorError>>;
    /// Adds a comment.
    fn comment<'a>(
        &'a self,
        project: &'a str,
        ticket: &'a TicketRef,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), VendorError>>;
    /// Marks the ticket resolved (Jira: the resolve transition; GitHub: the resolved label).
    fn resolve<'a>(&'a self, project: &'a str, ticket: &'a TicketRef) -> BoxFuture<'a, Result<(), VendorError>>;
    /// Closes the ticket (Jira: the close transition; GitHub: closed as completed).
    fn close<'a>(&'a self, project: &'a str, ticket: &'a TicketRef) -> BoxFuture<'a, Result<(), VendorError>>;
    /// Where the ticket stands (done or not, and its resolution).
    fn status<'a>(
        &'a self,
        project: &'a str,
        ticket: &'a TicketRef,
    ) -> BoxFuture<'a, Result<TicketStatus, VendorError>>;
    /// The tickets among `tickets` in `project` as the tracker has them now, for the
    /// reconciler; a key not answered is not known (not yet searchable, or gone). `since`:
    /// the oldest change that matters (GitHub lists the issues updated since).
    fn tickets<'a>(
        &'a self,
        project: &'a str,
        tickets: &'a [TicketRef],
        since: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<VendorTicket>, VendorError>>;
    /// One ticket as the tracker has it now, read with read-after-write consistency (the
    /// issue itself, not a search): how the reconciler confirms a difference a search
    /// showed before acting on it. `None`: no such ticket.
    fn ticket<'a>(&'a self, project: &'a str, key: &'a str)
    -> BoxFuture<'a, Result<Option<VendorTicket>, VendorError>>;
    /// Opens a resolved or closed ticket again (Jira: the reopen transition; GitHub: open
    /// again, the resolved label off). Already open: nothing to do.
    fn reopen<'a>(&'a self, project: &'a str, ticket: &'a TicketRef) -> BoxFuture<'a, Result<(), VendorError>>;
    /// Sets the ticket's priority for `severity`; `false` when the tracker keeps none
    /// (GitHub) or the severity maps to none.
    fn set_severity<'a>(
        &'a self,
        project: &'a str,
        ticket: &'a TicketRef,
        severity: &'a str,
        synced: &'a TicketFields,
    ) -> BoxFuture<'a, Result<bool, VendorError>>;
    /// The texts of the ticket's comments written since `since` (the newest hundred): how
    /// a comment posted by a call that died is found before it is posted again.
    fn comments<'a>(
        &'a self,
        project: &'a str,
        ticket: &'a TicketRef,
        since: Timestamp,
    ) -> BoxFuture<'a, Result<Vec<String>, VendorError>>;
    /// Checks the credentials (Jira: `myself`; GitHub: the repository), for readiness;
    /// the account they act as, where the vendor names it (Jira: `accountId` on Cloud,
    /// `name` on Data Center), so two-way sync tells the sink's own changes apart.
    fn check(&self) -> BoxFuture<'_, Result<Option<String>, VendorError>>;
    /// What would make a create fail, read from the vendor before the first incident:
    /// Jira's create screen for `issue_type` in `project` (a field set that is not on it,
    /// a required field without a value); each problem in words. `fields` are the ids the
    /// configuration sets besides the sink's own.
    fn check_fields<'a>(
        &'a self,
        _project: &'a str,
        _issue_type: Option<&'a str>,
        _fields: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>, VendorError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}
