//! Opsgenie's outgoing Webhook integration into intents: a person acknowledging, closing or
//! adding a note to an incident's alert becomes `AcknowledgeIncidentRequested`,
//! `ResolveIncidentRequested` (an Opsgenie close ends the page) or
//! `AnnotateIncidentRequested`. The same receiver serves Jira Service Management
//! Operations' outgoing webhook (`provider: jsm`), whose format Atlassian has not published
//! apart from Opsgenie's: it is read as Opsgenie's until a real delivery says otherwise.
//!
//! - Opsgenie signs nothing: the integration's custom header carries a shared secret,
//!   compared in constant time (401 otherwise, nothing published).
//! - The incident is `alert.alias`, the alias this sink created the alert with; its page
//!   record must have been made with Opsgenie or JSM (a migration carries Opsgenie's alerts
//!   over). Anything else, and actions not acted on, are answered 200 and counted.
//! - Echoes: actions through an API integration (`source.type: API`, this sink's own calls)
//!   or from `ignore_sources`, and a state the page record already holds.
//! - No delivery id exists: `(alertId, action, updatedAt)` is the idempotency key
//!   (`updatedAt` in nanoseconds, read as an integer).

use secrecy::SecretString;
use serde::Deserialize;
use sre_contracts::domain::v1::{ExternalActor, ExternalOrigin, Source};
use sre_runtime::axum::body::Bytes;
use sre_runtime::axum::http::HeaderMap;
use sre_runtime::inbound::{self, Accepted, Reason, Refusal, Webhook};
use sre_sink::RecordsCell;
use sre_sink::receiver::{self as kit, Outcome, ReceiverMetrics};

use crate::config::OpsgenieWebhook;
use crate::provider::Provider;
use crate::state::PageRecord;

/// The receiver; the page records arrive once the bus has opened them.
pub struct OpsgenieReceiver {
    /// `Opsgenie` or `Jsm`: whose webhook this is.
    pub provider: Provider,
    /// The accepted header values.
    pub secrets: Vec<SecretString>,
    /// Its settings.
    pub settings: OpsgenieWebhook,
    /// The page records, set once open.
    pub pages: RecordsCell<PageRecord>,
    /// This instance.
    pub source: Source,
    /// Metrics.
    pub metrics: ReceiverMetrics,
}

#[derive(Debug, Deserialize)]
struct Body {
    action: String,
    #[serde(default)]
    alert: Option<Alert>,
    #[serde(default)]
    source: Option<ActionSource>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    #[serde(default)]
    alert_id: String,
    #[serde(default)]
    alias: String,
    #[serde(default)]
    tiny_id: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    updated_at: Option<i64>,
    #[serde(default)]
    note: String,
}

#[derive(Debug, Default, Deserialize)]
struct ActionSource {
    #[serde(default)]
    name: String,
    #[serde(rename = "type", default)]
    kind: String,
}

use super::Asked as Action;

impl Webhook for OpsgenieReceiver {
    type Label = ();

    async fn accept(&self, headers: &HeaderMap, body: Bytes, correlation: &str) -> Result<Accepted<()>, Refusal> {
        kit::require_shared_secret(&self.secrets, inbound::header(headers, &self.settings.header))?;
        let parsed: Body = serde_json::from_slice(&body)
            .map_err(|e| Refusal::invalid("action", format!("not an Opsgenie webhook: {e}")))?;
        let provider = self.provider.name();
        let action = match parsed.action.as_str() {
            "Acknowledge" => Action::Acknowledge,
            "Close" => Action::Resolve,
            "AddNote" => Action::Annotate,
            other => {
                return Ok(self.metrics.ignored(provider, Outcome::Ignored, "an action not acted on", other));
            }
        };
        let Some(alert) = parsed.alert else { return Err(Refusal::invalid("alert", "missing")) };
        let source = parsed.source.unwrap_or_default();
        let ours = source.kind.eq_ignore_ascii_case("api")
            || self.settings.ignore_sources.contains(&source.name)
            || (action == Action::Annotate && sre_sink::notes::is_ours(&alert.note));
        if ours {
            return Ok(self.metrics.ignored(provider, Outcome::Echo, "done by an integration", &parsed.action));
        }
        if alert.alias.is_empty() {
            return Ok(self.metrics.ignored(provider, Outcome::Unknown, "no alias", &parsed.action));
        }
        let record = super::paged(&self.pages, &alert.alias, &[Provider::Opsgenie, Provider::Jsm]).await?;
        let Some(record) = record else {
            return Ok(self.metrics.ignored(
                provider,
                Outcome::Unknown,
                "not an alert this sink created",
                &parsed.action,
            ));
        };
        let held = action.held(record.record.state);
        if held {
            return Ok(self.metrics.ignored(
                provider,
                Outcome::Echo,
                "the page record already holds it",
                &parsed.action,
            ));
        }
        let updated = alert.updated_at.unwrap_or_default();
        let event_id = format!("{}:{}:{updated}", alert.alert_id, parsed.action);
        let id = sre_sink::reconcile::change_id(
            provider,
            &record.record.incident_id,
            record.record.reopen_count,
            action.kind(),
            &event_id,
        );
        let meta = kit::intent_meta(provider, &id, correlation, &self.source);
        let origin = Some(ExternalOrigin {
            vendor: provider.to_owned(),
            object_id: alert.alert_id.clone(),
            url: String::new(),
            event_id,
            occurred_at: (updated > 0).then(|| prost_types::Timestamp {
                seconds: updated / 1_000_000_000,
                nanos: i32::try_from(updated % 1_000_000_000).unwrap_or(0),
            }),
            actor: Some(ExternalActor {
                name: alert.username.clone(),
                email: alert.username,
                vendor_user_id: alert.user_id,
            }),
        });
        let incident_id = record.record.incident_id;
        let text = match action {
            Action::Annotate => alert.note,
            _ => format!("closed in {} (#{})", self.provider.title(), alert.tiny_id),
        };
        let envelope = action.encode(meta, &incident_id, origin, text)?;
        self.metrics.event(provider, Outcome::Intent);
        Ok(kit::one_intent(envelope, &incident_id, &parsed.action))
    }

    fn refused(&self, reason: Reason) {
        self.metrics.refused(self.provider.name(), reason);
    }

    fn challenge(&self) -> &'static str {
        "X-Sre-Webhook-Secret"
    }
}
