//! PagerDuty Webhooks v3 into intents (two-way sync): a person acknowledging, resolving,
//! reopening an incident in PagerDuty, or adding a note to it, becomes
//! `AcknowledgeIncidentRequested`, `ResolveIncidentRequested`, `ReopenIncidentRequested`,
//! `AnnotateIncidentRequested` for the domain to decide on. Served
//! on the shared inbound path (`sre_runtime::inbound`): 200 only once the intent is stored,
//! 503 on bus trouble (PagerDuty retries 5xx for up to 48 h).
//!
//! - Authenticity first, on the raw body: `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>]`, one
//!   per active secret; any entry matching any configured secret is enough (rotation).
//!   Wrong or missing: 401, nothing published.
//! - The incident is found from what this sink sent: `data.incident_key` is the Events API
//!   `dedup_key`, the incident id, and its page record must exist here. Anything else
//!   (another integration's incident, a note, a ping, a type we do not act on) is answered
//!   200 and counted: a 4xx would make PagerDuty drop it and, after three, disable the
//!   subscription for a day.
//! - A note (`incident.annotated`) names only PagerDuty's incident id: the receiver learns
//!   which of our incidents that is from the `incident.*` webhooks that carry both (PagerDuty
//!   sends `incident.triggered` as the page opens), kept beside the page records.
//! - Echoes are suppressed twice: the acknowledge or resolve this sink sent through the
//!   Events API comes back with an agent that is not a person (`agent.type` other than
//!   `user_reference`), a note it added carries its mark (`sre_sink::notes`), and a change
//!   the page record already holds is not asked again.
//! - `X-Webhook-Id` (the same on every retry of a webhook) is the idempotency key, so a
//!   redelivered webhook is 200 and no second intent.

use secrecy::SecretString;
use serde::Deserialize;
use sre_contracts::domain::v1::{ExternalActor, ExternalOrigin, Source};
use sre_runtime::axum::body::Bytes;
use sre_runtime::axum::http::HeaderMap;
use sre_runtime::inbound::{self, Accepted, Reason, Refusal, Webhook};
use sre_sink::RecordsCell;
use sre_sink::receiver::{self as kit, Outcome, ReceiverMetrics};

use crate::provider::Provider;
use crate::state::PageRecord;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-pagerduty-signature";
/// The webhook's id, the same on every retry of it.
pub const WEBHOOK_ID_HEADER: &str = "x-webhook-id";

/// The receiver; the page records arrive once the bus has opened them.
pub struct PagerDutyReceiver {
    /// The subscription secrets (several while one rotates).
    pub secrets: Vec<SecretString>,
    /// The page records, set once open.
    pub pages: RecordsCell<PageRecord>,
    /// This instance.
    pub source: Source,
    /// Metrics.
    pub metrics: ReceiverMetrics,
}

#[derive(Debug, Deserialize)]
struct Body {
    event: Event,
}

#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    event_type: String,
    #[serde(default)]
    occurred_at: Option<String>,
    #[serde(default)]
    agent: Option<Agent>,
    #[serde(default)]
    data: Option<Data>,
}

#[derive(Debug, Default, Deserialize)]
struct Agent {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    summary: String,
}

#[derive(Debug, Default, Deserialize)]
struct Data {
    #[serde(default)]
    id: String,
    #[serde(default)]
    html_url: String,
    #[serde(default)]
    incident_key: Option<String>,
    #[serde(default)]
    resolve_reason: Option<serde_json::Value>,
    /// A note's incident (`incident_note` data).
    #[serde(default)]
    incident: Option<IncidentRef>,
    /// A note's text.
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct IncidentRef {
    #[serde(default)]
    id: String,
    #[serde(default)]
    html_url: String,
}

/// The index of PagerDuty incident ids to ours, beside the page records.
const PAGERDUTY_IDS: &str = "pd";

use super::Asked as Action;

impl PagerDutyReceiver {
    /// Keeps which of our incidents PagerDuty's `pagerduty_id` is (best effort: a note on
    /// an incident not learned is answered 200 and counted as unknown).
    async fn learn(&self, pagerduty_id: &str, incident_key: &str) {
        let Some(records) = self.pages.get() else { return };
        let index = records.index(PAGERDUTY_IDS);
        if let Ok(Some(known)) = index.value(pagerduty_id).await
            && known == incident_key
        {
            return;
        }
        if let Err(e) = index.mark(pagerduty_id, incident_key).await {
            tracing::warn!(error = %e, "PagerDuty's incident id not kept; a note on it will not be recognised");
        }
    }

    /// Our incident behind PagerDuty's `pagerduty_id`, if learned; 503 while the records are
    /// not open.
    async fn incident_of(&self, pagerduty_id: &str) -> Result<Option<String>, Refusal> {
        let records = self.pages.get().ok_or_else(|| Refusal::unavailable("records not open yet"))?;
        records.index(PAGERDUTY_IDS).value(pagerduty_id).await.map_err(|e| Refusal::unavailable(e.to_string()))
    }
}

impl Webhook for PagerDutyReceiver {
    type Label = ();

    async fn accept(&self, headers: &HeaderMap, body: Bytes, correlation: &str) -> Result<Accepted<()>, Refusal> {
        let presented = inbound::header(headers, SIGNATURE_HEADER).unwrap_or_default();
        let signatures = presented.split(',').filter_map(|s| s.trim().strip_prefix("v1="));
        kit::require_signature(&self.secrets, &body, signatures)?;
        let parsed: Body = serde_json::from_slice(&body).map_err(|e| {
            let field = if e.to_string().contains("event_type") { "event.event_type" } else { "event" };
            Refusal::invalid(field, format!("not a PagerDuty v3 webhook: {e}"))
        })?;
        let mut event = parsed.event;
        let data = event.data.take().unwrap_or_default();
        // Learn which of our incidents PagerDuty's incident is, from any incident event
        // that names both (a note names only PagerDuty's).
        if let Some(key) = data.incident_key.as_deref().filter(|k| !k.is_empty() && !data.id.is_empty()) {
            self.learn(&data.id, key).await;
        }
        let action = match event.event_type.as_str() {
            "incident.acknowledged" => Action::Acknowledge,
            "incident.resolved" => Action::Resolve,
            "incident.reopened" => Action::Reopen,
            "incident.annotated" => Action::Annotate,
            other => {
                return Ok(self.metrics.ignored(
                    Provider::Pagerduty.name(),
                    Outcome::Ignored,
                    "an event type not acted on",
                    other,
                ));
            }
        };
        let agent = event.agent.unwrap_or_default();
        if action == Action::Annotate && data.content.as_deref().is_some_and(sre_sink::notes::is_ours) {
            // A note this integration added (through the REST API, as a user).
            return Ok(self.metrics.ignored(
                Provider::Pagerduty.name(),
                Outcome::Echo,
                "our own note",
                "incident.annotated",
            ));
        }
        if agent.kind != "user_reference" {
            // What this sink did through the Events API comes back as a service or
            // integration, not a person.
            return Ok(self.metrics.ignored(
                Provider::Pagerduty.name(),
                Outcome::Echo,
                "not done by a person",
                &event.event_type,
            ));
        }
        let (object_id, url) = match &data.incident {
            Some(i) if action == Action::Annotate => (i.id.clone(), i.html_url.clone()),
            _ => (data.id.clone(), data.html_url.clone()),
        };
        let key = match action {
            Action::Annotate => self.incident_of(&object_id).await?,
            _ => data.incident_key.clone(),
        };
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            return Ok(self.metrics.ignored(
                Provider::Pagerduty.name(),
                Outcome::Unknown,
                "no incident key",
                &event.event_type,
            ));
        };
        let record = super::paged(&self.pages, &key, &[Provider::Pagerduty]).await?;
        let Some(record) = record else {
            return Ok(self.metrics.ignored(
                Provider::Pagerduty.name(),
                Outcome::Unknown,
                "not an incident this sink paged",
                &event.event_type,
            ));
        };
        let held = action.held(record.record.state);
        if held {
            return Ok(self.metrics.ignored(
                Provider::Pagerduty.name(),
                Outcome::Echo,
                "the page record already holds it",
                &event.event_type,
            ));
        }
        let webhook_id = headers
            .get(WEBHOOK_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .unwrap_or(&event.id)
            .to_owned();
        let ts = |t: jiff::Timestamp| prost_types::Timestamp { seconds: t.as_second(), nanos: t.subsec_nanosecond() };
        let id = sre_sink::reconcile::change_id(
            Provider::Pagerduty.name(),
            &record.record.incident_id,
            record.record.reopen_count,
            action.kind(),
            &webhook_id,
        );
        let meta = kit::intent_meta(Provider::Pagerduty.name(), &id, correlation, &self.source);
        let origin = Some(ExternalOrigin {
            vendor: Provider::Pagerduty.name().to_owned(),
            object_id,
            url,
            event_id: webhook_id,
            occurred_at: event.occurred_at.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok()).map(ts),
            actor: Some(ExternalActor { name: agent.summary, email: String::new(), vendor_user_id: agent.id }),
        });
        let incident_id = record.record.incident_id;
        let text = match action {
            Action::Annotate => data.content.unwrap_or_default(),
            _ => data.resolve_reason.map(|r| r.to_string()).unwrap_or_default(),
        };
        let envelope = action.encode(meta, &incident_id, origin, text)?;
        self.metrics.event(Provider::Pagerduty.name(), Outcome::Intent);
        Ok(kit::one_intent(envelope, &incident_id, &event.event_type))
    }

    fn refused(&self, reason: Reason) {
        self.metrics.refused(Provider::Pagerduty.name(), reason);
    }

    fn challenge(&self) -> &'static str {
        "X-PagerDuty-Signature"
    }
}
