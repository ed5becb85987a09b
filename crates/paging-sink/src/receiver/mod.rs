//! The paging vendors' webhooks into intents (two-way sync), on the shared inbound path
//! (`sre_runtime::inbound`): `pagerduty` (Webhooks v3, signed) and `opsgenie` (Opsgenie's
//! and JSM Operations' outgoing Webhook integration, a shared secret header: they sign
//! nothing). Each finds the
//! incident from what this sink sent (PagerDuty's `incident_key`, Opsgenie's `alias`) and
//! its page record, made with that provider.

pub mod opsgenie;
pub mod pagerduty;

pub use opsgenie::OpsgenieReceiver;
pub use pagerduty::PagerDutyReceiver;

use sre_contracts::domain::v1::{ExternalOrigin, MessageMeta};
use sre_runtime::inbound::Refusal;

use sre_sink::RecordsCell;

use crate::provider::Provider;
use crate::state::{PageRecord, PageState, Read};

/// What a person's action in a paging tool asks of the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// `AcknowledgeIncidentRequested`.
    Acknowledge,
    /// `ResolveIncidentRequested`.
    Resolve,
    /// `ReopenIncidentRequested`.
    Reopen,
    /// `AnnotateIncidentRequested`.
    Annotate,
}

impl Asked {
    /// Whether a page in `state` already holds what is asked (an echo of this sink's own).
    pub(crate) fn held(self, state: PageState) -> bool {
        match self {
            Asked::Acknowledge => matches!(state, PageState::Acknowledged | PageState::Resolved),
            Asked::Resolve => state == PageState::Resolved,
            Asked::Reopen | Asked::Annotate => false,
        }
    }

    /// What a repair of this change is counted as; `None` for a note.
    pub(crate) fn kind(self) -> Option<sre_sink::reconcile::Kind> {
        use sre_sink::reconcile::Kind;
        match self {
            Asked::Acknowledge => Some(Kind::Acknowledged),
            Asked::Resolve => Some(Kind::Resolved),
            Asked::Reopen => Some(Kind::Reopened),
            Asked::Annotate => None,
        }
    }

    /// The intent, encoded; `text` is the resolution, the reopen's reason or the note.
    pub(crate) fn encode(
        self,
        meta: Option<MessageMeta>,
        incident_id: &str,
        origin: Option<ExternalOrigin>,
        text: String,
    ) -> Result<sre_bus::Envelope, Refusal> {
        use sre_contracts::domain::v1::{
            AcknowledgeIncidentRequested, AnnotateIncidentRequested, ReopenIncidentRequested, ResolveIncidentRequested,
        };
        use sre_runtime::inbound::encode;
        let incident_id = incident_id.to_owned();
        match self {
            Asked::Acknowledge => encode(&AcknowledgeIncidentRequested { meta, incident_id, origin }),
            Asked::Resolve => encode(&ResolveIncidentRequested { meta, incident_id, origin, resolution: text }),
            Asked::Reopen => encode(&ReopenIncidentRequested { meta, incident_id, origin, reason: text }),
            Asked::Annotate => encode(&AnnotateIncidentRequested { meta, incident_id, origin, note: text }),
        }
    }
}

/// The page record of `key`, when this sink paged it through one of `providers`; 503 while
/// the records are not open or do not answer.
pub(crate) async fn paged(
    pages: &RecordsCell<PageRecord>,
    key: &str,
    providers: &[Provider],
) -> Result<Option<Read>, Refusal> {
    let record = pages.read(key).await?;
    Ok(record.filter(|r| providers.contains(&r.record.target.provider)))
}
