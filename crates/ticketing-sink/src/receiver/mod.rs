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
