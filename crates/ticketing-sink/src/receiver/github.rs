//! GitHub webhooks into intents (two-way sync): a person closing, reopening or commenting
//! on an incident's issue becomes `CloseIncidentRequested` (or `ResolveIncidentRequested`,
//! by `close_means`), `ReopenIncidentRequested`, `AnnotateIncidentRequested` for the domain
//! to decide on. Served on the shared inbound path (`sre_runtime::inbound`): 200 only once
//! the intent is stored, 503 on bus trouble (GitHub does not retry by itself; a delivery
//! can be redelivered from the hook's page or its API).
//!
//! - Authenticity first, on the raw body: `X-Hub-Signature-256: sha256=<hex>` against every
//!   configured secret. Wrong or missing: 401, nothing published.
//! - The incident is found from what this sink wrote: the issue body's hidden marker line
//!   (`<!-- sre-incident: … -->`), and the ticket record here must name this issue in this
//!   repository. Anything else (another issue, a pull-request comment, a ping, an action not
//!   acted on) is answered 200 and counted.
//! - Echoes: a GitHub App's own actions (`sender.type: Bot`), the logins in
//!   `ignore_senders` (a personal access token's user), comments carrying the sink's marker
//!   or a note mark (`[sre-note …]`), and a close the ticket record already holds are not
//!   asked again.
//! - `X-GitHub-Delivery` (kept by a redelivery) is the idempotency key.

use secrecy::SecretString;
use serde::Deserialize;
use sre_contracts::domain::v1::{ExternalActor, ExternalOrigin, Source};
use sre_runtime::axum::body::Bytes;
use sre_runtime::axum::http::HeaderMap;
use sre_runtime::inbound::{self, Accepted, Reason, Refusal, Webhook};
use sre_sink::RecordsCell;
use sre_sink::receiver::{self as kit, Outcome, ReceiverMetrics};

use crate::config::{CloseMeans, GithubWebhook};
use crate::provider::Provider;
use crate::state::{TicketRecord, TicketState};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// The event name header.
pub const EVENT_HEADER: &str = "x-github-event";
/// The delivery id, kept by a redelivery.
pub const DELIVERY_HEADER: &str = "x-github-delivery";

/// The receiver; the ticket records arrive once the bus has opened them.
pub struct GithubReceiver {
    /// The webhook's secrets.
    pub secrets: Vec<SecretString>,
    /// Its settings.
    pub settings: GithubWebhook,
    /// The ticket records, set once open.
    pub tickets: RecordsCell<TicketRecord>,
    /// This instance.
    pub source: Source,
    /// Metrics.
    pub metrics: ReceiverMetrics,
}

#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(default)]
    action: String,
    #[serde(default)]
    issue: Option<Issue>,
    #[serde(default)]
    comment: Option<Comment>,
    #[serde(default)]
    repository: Option<Repository>,
    #[serde(default)]
    sender: Option<User>,
}

#[derive(Debug, Deserialize)]
struct Issue {
    number: u64,
    #[serde(default)]
    html_url: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    state_reason: Option<String>,
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default)]
    pull_request: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Comment {
    #[serde(default)]
    body: String,
    #[serde(default)]
    html_url: String,
    #[serde(default)]
    created_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Debug, Default, Deserialize)]
struct User {
    #[serde(default)]
    login: String,
    #[serde(default)]
    id: u64,
    #[serde(rename = "type", default)]
    kind: String,
}

use super::Asked as Action;

impl Webhook for GithubReceiver {
    type Label = ();

    async fn accept(&self, headers: &HeaderMap, body: Bytes, correlation: &str) -> Result<Accepted<()>, Refusal> {
        let presented = inbound::header(headers, SIGNATURE_HEADER).unwrap_or_default();
        let signature = presented.trim().strip_prefix("sha256=");
        kit::require_signature(&self.secrets, &body, signature)?;
        let event = headers.get(EVENT_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        if event != "issues" && event != "issue_comment" {
            return Ok(self.metrics.ignored(
                Provider::Github.name(),
                Outcome::Ignored,
                "an event not acted on",
                &event,
            ));
        }
        let payload: Payload = serde_json::from_slice(&body)
            .map_err(|e| Refusal::invalid("body", format!("not a GitHub {event} event: {e}")))?;
        let what = format!("{event}.{}", payload.action);
        let Some(issue) = payload.issue else { return Err(Refusal::invalid("issue", "missing")) };
        let hook = &self.settings;
        let action = match (event.as_str(), payload.action.as_str()) {
            ("issues", "closed") if hook.close_means == CloseMeans::Resolve => Action::Resolve,
            ("issues", "closed") => Action::Close,
            ("issues", "reopened") if hook.reopen => Action::Reopen,
            ("issue_comment", "created") if hook.comments && issue.pull_request.is_none() => Action::Annotate,
            _ => {
                return Ok(self.metrics.ignored(
                    Provider::Github.name(),
                    Outcome::Ignored,
                    "an action not acted on",
                    &what,
                ));
            }
        };
        let sender = payload.sender.unwrap_or_default();
        let comment = payload.comment;
        let ours = sender.kind == "Bot"
            || hook.ignore_senders.iter().any(|l| l.eq_ignore_ascii_case(&sender.login))
            || comment
                .as_ref()
                .is_some_and(|c| c.body.contains(crate::marker::COMMENT_MARKER) || sre_sink::notes::is_ours(&c.body));
        if ours {
            return Ok(self.metrics.ignored(Provider::Github.name(), Outcome::Echo, "done by this sink", &what));
        }
        let Some(token) = issue.body.as_deref().and_then(crate::marker::token_in_body) else {
            return Ok(self.metrics.ignored(
                Provider::Github.name(),
                Outcome::Unknown,
                "not an issue this sink opened",
                &what,
            ));
        };
        let read = self.tickets.read(token).await?;
        let repo = payload.repository.map(|r| r.full_name).unwrap_or_default();
        let number = issue.number.to_string();
        let record = read.map(|r| r.record);
        let record = match (super::named(record.as_ref(), Provider::Github, Some(&repo), &number), record) {
            (super::Named::Ticket, Some(record)) => record,
            // GitHub does not send it again by itself, but shows the delivery failed, to be
            // redelivered; the reconciler repairs it meanwhile.
            (super::Named::Creating, _) => {
                return Err(Refusal::not_yet_recorded(format!(
                    "issue {number} is being recorded as the incident's ticket: send it again"
                )));
            }
            _ => {
                return Ok(self.metrics.ignored(
                    Provider::Github.name(),
                    Outcome::Unknown,
                    "no ticket record names this issue",
                    &what,
                ));
            }
        };
        let held = match action {
            Action::Close => record.state == TicketState::Closed,
            Action::Resolve => matches!(record.state, TicketState::Resolved | TicketState::Closed),
            Action::Reopen | Action::Annotate => false,
        };
        if held {
            return Ok(self.metrics.ignored(
                Provider::Github.name(),
                Outcome::Echo,
                "the ticket record already holds it",
                &what,
            ));
        }
        let delivery = headers
            .get(DELIVERY_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Refusal::invalid("X-GitHub-Delivery", "missing"))?
            .to_owned();
        let ts = |t: jiff::Timestamp| prost_types::Timestamp { seconds: t.as_second(), nanos: t.subsec_nanosecond() };
        let when = match &comment {
            Some(c) => c.created_at.clone(),
            None => issue.updated_at.clone(),
        };
        let id = sre_sink::reconcile::change_id(
            Provider::Github.name(),
            &record.incident_id,
            record.reopen_count,
            action.kind(),
            &delivery,
        );
        let meta = kit::intent_meta(Provider::Github.name(), &id, correlation, &self.source);
        let origin = Some(ExternalOrigin {
            vendor: Provider::Github.name().to_owned(),
            object_id: format!("{repo}#{}", issue.number),
            url: comment.as_ref().map_or(issue.html_url.clone(), |c| c.html_url.clone()),
            event_id: delivery,
            occurred_at: when.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok()).map(ts),
            actor: Some(ExternalActor {
                name: sender.login,
                email: String::new(),
                vendor_user_id: sender.id.to_string(),
            }),
        });
        let incident_id = record.incident_id;
        let resolution = issue.state_reason.unwrap_or_default();
        let text = match action {
            Action::Annotate => comment.map(|c| c.body).unwrap_or_default(),
            Action::Reopen => String::new(),
            Action::Close | Action::Resolve => resolution,
        };
        let envelope = super::encode(action, meta, &incident_id, origin, text)?;
        self.metrics.event(Provider::Github.name(), Outcome::Intent);
        Ok(kit::one_intent(envelope, &incident_id, &what))
    }

    fn refused(&self, reason: Reason) {
        self.metrics.refused(Provider::Github.name(), reason);
    }

    fn challenge(&self) -> &'static str {
        "X-Hub-Signature-256"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_own_signature_vector_is_accepted_as_github_sends_it() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../../../tests/fixtures/github/signature-vector.docs.json"))
                .expect("json");
        let secret = [SecretString::from(v["secret"].as_str().expect("secret").to_owned())];
        let header = v["expected_header"].as_str().expect("header").trim_start_matches("X-Hub-Signature-256: ");
        let payload = v["payload"].as_str().expect("payload").as_bytes();
        assert!(inbound::signed_by_any(&secret, payload, header.strip_prefix("sha256=")));
        assert!(!inbound::signed_by_any(&secret, b"Hello, World?", header.strip_prefix("sha256=")));
    }
}
