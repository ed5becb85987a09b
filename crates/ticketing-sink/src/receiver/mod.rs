//! The trackers' webhooks into intents (two-way sync), on the shared inbound path
//! (`sre_runtime::inbound`): `github` (`issues`, `issue_comment`) and `jira` (admin
//! webhooks, `jira:issue_updated`). Each finds the incident from what this sink wrote (the
//! GitHub marker line, the Jira marker label) and checks it against the ticket record.

pub mod github;
pub mod jira;

pub use github::GithubReceiver;
pub use jira::JiraReceiver;

/// The accounts this sink's credentials act as, per provider, as the vendors answered
/// (`GET /myself`); shared by the credentials check (which learns them) and the receivers
/// (which take their changes for echoes). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct OwnAccounts(std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<crate::provider::Provider, String>>>);

impl OwnAccounts {
    /// Records `account` as `provider`'s own (a rotated token may act as another one).
    pub fn learn(&self, provider: crate::provider::Provider, account: String) {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(&provider) != Some(&account) {
            tracing::info!(provider = provider.name(), %account, "two-way sync: this account's changes are the sink's own");
            map.insert(provider, account);
        }
    }

    /// Whether `account` is `provider`'s own.
    pub fn is(&self, provider: crate::provider::Provider, account: &str) -> bool {
        !account.is_empty()
            && self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&provider)
                .is_some_and(|a| a == account)
    }
}

/// What a webhook about issue `key` of `provider` is to the incident's ticket record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Named {
    /// The record's ticket: the change is acted on.
    Ticket,
    /// The record is still a claim whose ticket is being created (a person acted on it
    /// within moments of its creation, before its key was recorded): answered 503, so the
    /// tracker sends it again once the record names it, and the reconciler repairs it if it
    /// does not.
    Creating,
    /// Not the record's ticket (another provider, project or life, or no record): ignored.
    Unknown,
}

/// Which of [`Named`] a webhook about issue `key` in `project` (Jira: `None`, the key names
/// its project) is, given the incident's `record`.
pub(crate) fn named(
    record: Option<&crate::state::TicketRecord>,
    provider: crate::provider::Provider,
    project: Option<&str>,
    key: &str,
) -> Named {
    let Some(record) = record else { return Named::Unknown };
    let ours =
        record.target.provider == provider && project.is_none_or(|p| record.target.project.eq_ignore_ascii_case(p));
    if !ours {
        Named::Unknown
    } else if record.ticket.as_ref().is_some_and(|t| t.key.eq_ignore_ascii_case(key)) {
        Named::Ticket
    } else if record.state == crate::state::TicketState::Claimed
        && record.ticket.is_none()
        && !record.earlier.iter().any(|t| t.key.eq_ignore_ascii_case(key))
    {
        Named::Creating
    } else {
        Named::Unknown
    }
}

/// What a person's action in a tracker asks of the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// `ResolveIncidentRequested`.
    Resolve,
    /// `CloseIncidentRequested`.
    Close,
    /// `ReopenIncidentRequested`.
    Reopen,
    /// `AnnotateIncidentRequested`.
    Annotate,
}

impl Asked {
    /// What a repair of this change is counted as; `None` for a note.
    pub fn kind(self) -> Option<sre_sink::reconcile::Kind> {
        use sre_sink::reconcile::Kind;
        match self {
            Asked::Resolve => Some(Kind::Resolved),
            Asked::Close => Some(Kind::Closed),
            Asked::Reopen => Some(Kind::Reopened),
            Asked::Annotate => None,
        }
    }
}

/// The intent of `asked`, encoded; `text` is the resolution, the reopen's status or the note.
pub(crate) fn encode(
    asked: Asked,
    meta: Option<sre_contracts::domain::v1::MessageMeta>,
    incident_id: &str,
    origin: Option<sre_contracts::domain::v1::ExternalOrigin>,
    text: String,
) -> Result<sre_bus::Envelope, sre_runtime::inbound::Refusal> {
    use sre_contracts::domain::v1::{
        AnnotateIncidentRequested, CloseIncidentRequested, ReopenIncidentRequested, ResolveIncidentRequested,
    };
    use sre_runtime::inbound::encode;
    let incident_id = incident_id.to_owned();
    match asked {
        Asked::Resolve => encode(&ResolveIncidentRequested { meta, incident_id, origin, resolution: text }),
        Asked::Close => encode(&CloseIncidentRequested { meta, incident_id, origin, resolution: text }),
        Asked::Reopen => encode(&ReopenIncidentRequested { meta, incident_id, origin, reason: text }),
        Asked::Annotate => encode(&AnnotateIncidentRequested { meta, incident_id, origin, note: text }),
    }
}

#[cfg(test)]
mod tests {
    use super::{Named, named};
    use crate::provider::{Provider, TicketRef};
    use crate::routing::Target;
    use crate::state::{TicketRecord, TicketState};

    fn record(
        provider: Provider,
        project: &str,
        state: TicketState,
        ticket: Option<&str>,
        earlier: &[&str],
    ) -> TicketRecord {
        let target = Target { provider, route: "default".into(), project: project.into() };
        let key = |k: &str| TicketRef { key: k.into(), url: String::new(), id: None };
        let mut record = TicketRecord::claim("inc-1", target, jiff::Timestamp::UNIX_EPOCH);
        record.state = state;
        record.ticket = ticket.map(key);
        record.earlier = earlier.iter().map(|k| key(k)).collect();
        record
    }

    #[test]
    fn which_ticket_a_webhook_names() {
        use Provider::{Github, Jira};
        use TicketState::{Claimed, Closed, Created};
        // Why, the record, the webhook's provider, repository and issue, the answer.
        type Case<'a> = (&'a str, Option<TicketRecord>, Provider, Option<&'a str>, &'a str, Named);
        let cases: &[Case] = &[
            (
                "the record's ticket",
                Some(record(Jira, "OPS", Created, Some("OPS-7"), &[])),
                Jira,
                None,
                "OPS-7",
                Named::Ticket,
            ),
            (
                "keys compare as Jira does",
                Some(record(Jira, "OPS", Created, Some("OPS-7"), &[])),
                Jira,
                None,
                "ops-7",
                Named::Ticket,
            ),
            (
                "a claim still creating it",
                Some(record(Jira, "OPS", Claimed, None, &[])),
                Jira,
                None,
                "OPS-7",
                Named::Creating,
            ),
            (
                "an earlier life's ticket, the new one being created",
                Some(record(Jira, "OPS", Claimed, None, &["OPS-3"])),
                Jira,
                None,
                "OPS-3",
                Named::Unknown,
            ),
            (
                "a claim of a new life whose ticket is recorded",
                Some(record(Jira, "OPS", Claimed, Some("OPS-8"), &["OPS-3"])),
                Jira,
                None,
                "OPS-3",
                Named::Unknown,
            ),
            (
                "another issue of a ticketed incident",
                Some(record(Jira, "OPS", Closed, Some("OPS-7"), &[])),
                Jira,
                None,
                "OPS-9",
                Named::Unknown,
            ),
            (
                "another provider's record",
                Some(record(Github, "acme/incidents", Claimed, None, &[])),
                Jira,
                None,
                "OPS-7",
                Named::Unknown,
            ),
            ("no record", None, Jira, None, "OPS-7", Named::Unknown),
            (
                "GitHub: the record's issue",
                Some(record(Github, "acme/incidents", Created, Some("12"), &[])),
                Github,
                Some("acme/incidents"),
                "12",
                Named::Ticket,
            ),
            (
                "GitHub: being created",
                Some(record(Github, "acme/incidents", Claimed, None, &[])),
                Github,
                Some("Acme/Incidents"),
                "12",
                Named::Creating,
            ),
            (
                "GitHub: another repository's issue",
                Some(record(Github, "acme/incidents", Claimed, None, &[])),
                Github,
                Some("acme/other"),
                "12",
                Named::Unknown,
            ),
            (
                "GitHub: another repository, same number",
                Some(record(Github, "acme/incidents", Created, Some("12"), &[])),
                Github,
                Some("acme/other"),
                "12",
                Named::Unknown,
            ),
        ];
        for (why, record, provider, project, key, want) in cases {
            assert_eq!(named(record.as_ref(), *provider, *project, key), *want, "{why}");
        }
    }
}
