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

/// A ticket as the vendor knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketRef {
    /// Jira key (`OPS-12`) or GitHub issue number.
    pub key: String,
    /// Link for people.
    pub url: String,
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
}

/// A ticket tracker.
pub trait Tracker: Send + Sync {
    /// The provider's name (`jira`, `github`).
    fn name(&self) -> &'static str;
    /// Opens a ticket.
    fn create<'a>(&'a self, ticket: &'a NewTicket) -> BoxFuture<'a, Result<TicketRef, VendorError>>;
    /// Finds the ticket carrying `marker` in `project`, created or updated since `since`.
    fn find<'a>(
        &'a self,
        project: &'a str,
        marker: &'a str,
        since: Timestamp,
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
    /// Checks the credentials (Jira: `myself`; GitHub: the repository), for readiness;
    /// the account they act as, where the vendor names it (Jira: `accountId` on Cloud,
    /// `name` on Data Center), so two-way sync tells the sink's own changes apart.
    fn check(&self) -> BoxFuture<'_, Result<Option<String>, VendorError>>;
}
