//! Jira admin webhooks (Cloud and Data Center) into intents: a person moving an incident's
//! ticket to a resolved or closed status, reopening it, or commenting on it becomes
//! `ResolveIncidentRequested`, `CloseIncidentRequested`, `ReopenIncidentRequested`,
//! `AnnotateIncidentRequested`.
//!
//! - `X-Hub-Signature: sha256=<hex>` (not `-256`) over the raw body, against every secret.
//! - Subscribe to *Issue updated* only: it carries status changes (`changelog` item
//!   `status`) and comments (`issue_event_type_name: issue_commented` with `comment`) with
//!   the full issue, whose labels hold this sink's marker (`sre-incident-<token>`); the
//!   ticket record must name this issue key. `comment_created` alone lacks the labels, so it
//!   is answered 200 and ignored.
//! - Which status means what is configured (`resolved_statuses`, `closed_statuses`, any
//!   other of the `done` category by `done_means`); out of `done` on a resolved or closed
//!   ticket is a reopen.
//! - Echoes: the account the sink's credentials act as (learnt from `GET /myself` at the
//!   credentials check), `ignore_users` (more accounts), an `accountType` other than
//!   `atlassian` (apps, automation), a comment carrying a note mark (`[sre-note …]`: a note
//!   a sink carried here from another tool), and a state the ticket record already holds.
//! - `X-Atlassian-Webhook-Identifier` (kept across retries) is the idempotency key; where
//!   it is missing (older Data Center) the event's own identity stands in (event, issue,
//!   timestamp, comment).

use secrecy::SecretString;
use serde::Deserialize;
use sre_contracts::domain::v1::{ExternalActor, ExternalOrigin, Source};
use sre_resilience::idempotency::derive_key;
use sre_runtime::axum::body::Bytes;
use sre_runtime::axum::http::HeaderMap;
use sre_runtime::inbound::{self, Accepted, Reason, Refusal, Webhook};
use sre_sink::RecordsCell;
use sre_sink::receiver::{self as kit, Outcome, ReceiverMetrics};

use crate::config::{DoneMeans, JiraWebhook};
use crate::provider::Provider;
use crate::state::{TicketRecord, TicketState};

/// The signature header (Jira's name: no `-256`).
pub const SIGNATURE_HEADER: &str = "x-hub-signature";
/// The delivery id, unchanged across retries.
pub const DELIVERY_HEADER: &str = "x-atlassian-webhook-identifier";

/// The receiver; the ticket records arrive once the bus has opened them.
pub struct JiraReceiver {
    /// The webhook's secrets.
    pub secrets: Vec<SecretString>,
    /// Its settings.
    pub settings: JiraWebhook,
    /// The Jira site, for links (`<base>/browse/<key>`).
    pub base_url: String,
    /// The ticket records, set once open.
    pub tickets: RecordsCell<TicketRecord>,
    /// This instance.
    pub source: Source,
    /// Metrics.
    pub metrics: ReceiverMetrics,
    /// The account the sink's Jira credentials act as (learnt from `myself`).
    pub own_accounts: super::OwnAccounts,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    #[serde(default)]
    timestamp: Option<i64>,
    webhook_event: String,
    #[serde(default, rename = "issue_event_type_name")]
    event_type: String,
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    issue: Option<Issue>,
    #[serde(default)]
    changelog: Option<Changelog>,
    #[serde(default)]
    comment: Option<Comment>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct User {
    #[serde(default)]
    account_id: String,
    #[serde(default)]
    account_type: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    email_address: String,
}

#[derive(Debug, Deserialize)]
struct Issue {
    key: String,
    #[serde(default)]
    fields: Fields,
}

#[derive(Debug, Default, Deserialize)]
struct Fields {
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    status: Option<Status>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Status {
    #[serde(default)]
    name: String,
    #[serde(default)]
    status_category: Option<Category>,
}

#[derive(Debug, Deserialize)]
struct Category {
    #[serde(default)]
    key: String,
}

#[derive(Debug, Deserialize)]
struct Changelog {
    #[serde(default)]
    items: Vec<Item>,
}

#[derive(Debug, Deserialize)]
struct Item {
    #[serde(default)]
    field: String,
}

#[derive(Debug, Deserialize)]
struct Comment {
    #[serde(default)]
    id: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    author: Option<User>,
}

use super::Asked as Action;

/// What a ticket moved to the status `name` (of the `done` category or not) asks of the
/// domain under `hook`'s mapping, given where its record stands: the receiver's and the
/// reconciler's rule.
pub(crate) fn status_action(hook: &JiraWebhook, name: &str, done: bool, record: TicketState) -> Option<Action> {
    let named = |names: &[String]| names.iter().any(|n| n.eq_ignore_ascii_case(name));
    if named(&hook.closed_statuses) {
        Some(Action::Close)
    } else if named(&hook.resolved_statuses) {
        Some(Action::Resolve)
    } else if done {
        Some(match hook.done_means {
            DoneMeans::Resolve => Action::Resolve,
            DoneMeans::Close => Action::Close,
        })
    } else if hook.reopen && matches!(record, TicketState::Resolved | TicketState::Closed) {
        Some(Action::Reopen)
    } else {
        None
    }
}

impl JiraReceiver {
    /// What a status change to `status` asks for, given where the ticket stands.
    fn status_action(&self, status: &Status, record: TicketState) -> Option<Action> {
        let done = status.status_category.as_ref().is_some_and(|c| c.key == "done");
        status_action(&self.settings, &status.name, done, record)
    }
}

impl Webhook for JiraReceiver {
    type Label = ();

    async fn accept(&self, headers: &HeaderMap, body: Bytes, correlation: &str) -> Result<Accepted<()>, Refusal> {
        let presented = inbound::header(headers, SIGNATURE_HEADER).unwrap_or_default();
        kit::require_signature(&self.secrets, &body, presented.trim().strip_prefix("sha256="))?;
        let payload: Payload = serde_json::from_slice(&body)
            .map_err(|e| Refusal::invalid("webhookEvent", format!("not a Jira webhook: {e}")))?;
        let provider = Provider::Jira.name();
        let what = format!("{}/{}", payload.webhook_event, payload.event_type);
        if payload.webhook_event != "jira:issue_updated" {
            return Ok(self.metrics.ignored(provider, Outcome::Ignored, "an event not acted on", &what));
        }
        let Some(issue) = payload.issue else { return Err(Refusal::invalid("issue", "missing")) };
        let commented = payload.event_type == "issue_commented" && payload.comment.is_some();
        let status_changed = payload.changelog.as_ref().is_some_and(|c| c.items.iter().any(|i| i.field == "status"));
        if !(status_changed || commented && self.settings.comments) {
            return Ok(self.metrics.ignored(provider, Outcome::Ignored, "no status change or comment", &what));
        }
        let actor = match (&payload.comment, commented) {
            (Some(c), true) => c.author.as_ref().or(payload.user.as_ref()),
            _ => payload.user.as_ref(),
        };
        let actor = actor.map_or_else(User::default, |u| User {
            account_id: u.account_id.clone(),
            account_type: u.account_type.clone(),
            name: u.name.clone(),
            display_name: u.display_name.clone(),
            email_address: u.email_address.clone(),
        });
        let ignored_user = self.settings.ignore_users.iter().any(|u| {
            (!actor.account_id.is_empty() && *u == actor.account_id) || (!actor.name.is_empty() && *u == actor.name)
        }) || self.own_accounts.is(Provider::Jira, &actor.account_id)
            || self.own_accounts.is(Provider::Jira, &actor.name);
        let app = actor.account_type.as_deref().is_some_and(|t| t != "atlassian");
        // A note some sink carried here (from a page, or another ticket) is not a person's.
        let carried = commented && payload.comment.as_ref().is_some_and(|c| sre_sink::notes::is_ours(&c.body));
        if ignored_user || app || carried {
            return Ok(self.metrics.ignored(provider, Outcome::Echo, "done by this sink", &what));
        }
        let Some(token) = issue.fields.labels.iter().find_map(|l| crate::marker::token_of(l)) else {
            return Ok(self.metrics.ignored(provider, Outcome::Unknown, "not a ticket this sink opened", &what));
        };
        let read = self.tickets.read(token).await?;
        let record = read.map(|r| r.record);
        let record = match (super::named(record.as_ref(), Provider::Jira, None, &issue.key), record) {
            (super::Named::Ticket, Some(record)) => record,
            (super::Named::Creating, _) => {
                return Err(Refusal::not_yet_recorded(format!(
                    "{} is being recorded as the incident's ticket: send it again",
                    issue.key
                )));
            }
            _ => {
                return Ok(self.metrics.ignored(
                    provider,
                    Outcome::Unknown,
                    "no ticket record names this issue",
                    &what,
                ));
            }
        };
        let action = if status_changed {
            let Some(status) = issue.fields.status.as_ref() else {
                return Err(Refusal::invalid("issue.fields.status", "missing on a status change"));
            };
            match self.status_action(status, record.state) {
                Some(a) => a,
                None => {
                    return Ok(self.metrics.ignored(provider, Outcome::Ignored, "a status not mapped", &what));
                }
            }
        } else {
            Action::Annotate
        };
        let held = match action {
            Action::Close => record.state == TicketState::Closed,
            Action::Resolve => matches!(record.state, TicketState::Resolved | TicketState::Closed),
            Action::Reopen | Action::Annotate => false,
        };
        if held {
            return Ok(self.metrics.ignored(provider, Outcome::Echo, "the ticket record already holds it", &what));
        }
        let comment = payload.comment.filter(|_| commented);
        let delivery = inbound::header(headers, DELIVERY_HEADER).filter(|v| !v.is_empty()).map_or_else(
            || {
                let ts = payload.timestamp.unwrap_or_default().to_string();
                let comment_id = comment.as_ref().map(|c| c.id.as_str()).unwrap_or_default();
                derive_key("jira-event", &[&payload.webhook_event, &issue.key, &ts, comment_id])
            },
            str::to_owned,
        );
        let ts = |t: jiff::Timestamp| prost_types::Timestamp { seconds: t.as_second(), nanos: t.subsec_nanosecond() };
        let id = sre_sink::reconcile::change_id(
            Provider::Jira.name(),
            &record.incident_id,
            record.reopen_count,
            action.kind(),
            &delivery,
        );
        let meta = kit::intent_meta(Provider::Jira.name(), &id, correlation, &self.source);
        let name = if actor.display_name.is_empty() { actor.name.clone() } else { actor.display_name.clone() };
        let origin = Some(ExternalOrigin {
            vendor: Provider::Jira.name().to_owned(),
            object_id: issue.key.clone(),
            url: format!("{}/browse/{}", self.base_url.trim_end_matches('/'), issue.key),
            event_id: delivery,
            occurred_at: payload.timestamp.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok()).map(ts),
            actor: Some(ExternalActor {
                name,
                email: actor.email_address,
                vendor_user_id: if actor.account_id.is_empty() { actor.name } else { actor.account_id },
            }),
        });
        let incident_id = record.incident_id;
        let status = issue.fields.status.map(|s| s.name).unwrap_or_default();
        let text = match action {
            Action::Annotate => comment.map(|c| c.body).unwrap_or_default(),
            Action::Close | Action::Resolve | Action::Reopen => status,
        };
        let envelope = super::encode(action, meta, &incident_id, origin, text)?;
        self.metrics.event(provider, Outcome::Intent);
        Ok(kit::one_intent(envelope, &incident_id, &what))
    }

    fn refused(&self, reason: Reason) {
        self.metrics.refused(Provider::Jira.name(), reason);
    }

    fn challenge(&self) -> &'static str {
        "X-Hub-Signature"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_computed_vector_is_accepted_under_jiras_header() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../../../tests/fixtures/jira/signature-vector.computed.json"))
                .expect("json");
        let secret = [SecretString::from(v["secret"].as_str().expect("secret").to_owned())];
        let body = v["body_utf8"].as_str().expect("body").as_bytes();
        assert_eq!(body.len() as u64, v["body_length_bytes"].as_u64().expect("length"), "UTF-8 bytes as signed");
        let value = v["expected_header_value"].as_str().expect("value");
        assert!(inbound::signed_by_any(&secret, body, value.strip_prefix("sha256=")));
        assert!(!inbound::signed_by_any(&secret, &body[1..], value.strip_prefix("sha256=")));
    }
}
