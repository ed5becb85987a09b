//! Alertmanager's webhook payload, version 4, parsed leniently (unknown fields ignored:
//! newer Alertmanagers add `notification_reason`, `routeLabels`), with errors that name
//! the field.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer};

/// The only payload version Alertmanager has ever sent.
pub const SUPPORTED_VERSION: &str = "4";

/// Alertmanager's "no time" (`0001-01-01T00:00:00Z`), sent as `endsAt` of firing alerts.
const ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Still firing.
    Firing,
    /// Resolved.
    Resolved,
}

impl Status {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One notification: a group of alerts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// Always `"4"`.
    pub version: String,
    /// Opaque key of the group.
    pub group_key: String,
    /// Alerts dropped because of `max_alerts`.
    #[serde(default)]
    pub truncated_alerts: u64,
    /// `resolved` only when every alert is.
    pub status: Status,
    /// Receiver name.
    pub receiver: String,
    /// The `group_by` labels.
    #[serde(default, deserialize_with = "null_as_default")]
    pub group_labels: BTreeMap<String, String>,
    /// Labels all alerts share.
    #[serde(default, deserialize_with = "null_as_default")]
    pub common_labels: BTreeMap<String, String>,
    /// Annotations all alerts share.
    #[serde(default, deserialize_with = "null_as_default")]
    pub common_annotations: BTreeMap<String, String>,
    /// Backlink to Alertmanager.
    #[serde(default, rename = "externalURL")]
    pub external_url: String,
    /// The alerts.
    pub alerts: Vec<Alert>,
}

/// One alert of the group.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Firing or resolved (per alert).
    pub status: Status,
    /// Labels.
    #[serde(deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, deserialize_with = "null_as_default")]
    pub annotations: BTreeMap<String, String>,
    /// When it started.
    #[serde(deserialize_with = "rfc3339")]
    pub starts_at: Timestamp,
    /// When it ended; `None` for Alertmanager's zero time (firing alerts).
    #[serde(default, deserialize_with = "rfc3339_or_zero")]
    pub ends_at: Option<Timestamp>,
    /// Link to the expression.
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    /// Hash of the label set.
    #[serde(default)]
    pub fingerprint: String,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn rfc3339<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<Timestamp>().map_err(|e| serde::de::Error::custom(format!("`{s}` is not an RFC 3339 time: {e}")))
}

fn rfc3339_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    let Some(s) = Option::<String>::deserialize(d)? else { return Ok(None) };
    if s.is_empty() {
        return Ok(None);
    }
    let t =
        s.parse::<Timestamp>().map_err(|e| serde::de::Error::custom(format!("`{s}` is not an RFC 3339 time: {e}")))?;
    Ok((t.as_second() > ZERO_TIME_SECONDS).then_some(t))
}

/// The body could not be read as a webhook.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PayloadError {
    /// The field at fault, e.g. `alerts[0].fingerprint` (`body` for the body as a whole).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// Parses a webhook body. Unknown fields are ignored; a missing required field, a wrong
/// type, a bad time or an unsupported version is an error naming the field.
pub fn parse(body: &[u8]) -> Result<Webhook, PayloadError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        return Err(PayloadError {
            field: "body".to_owned(),
            reason: "expected a JSON object (webhook payload version 4)".to_owned(),
        });
    }
    // The happy path parses without path tracking (it costs on every field); only a body
    // that fails is parsed again to name the field at fault.
    let webhook: Webhook = match serde_json::from_slice(body) {
        Ok(w) => w,
        Err(_) => return Err(explain(body)),
    };
    if webhook.version != SUPPORTED_VERSION {
        return Err(PayloadError {
            field: "version".to_owned(),
            reason: format!("unsupported version `{}`, expected `{SUPPORTED_VERSION}`", webhook.version),
        });
    }
    Ok(webhook)
}

/// Parses again with path tracking to say which field is wrong.
fn explain(body: &[u8]) -> PayloadError {
    let mut de = serde_json::Deserializer::from_slice(body);
    let result: Result<Webhook, _> = serde_path_to_error::deserialize(&mut de);
    let err = match result {
        Ok(_) => match de.end() {
            Err(e) => return PayloadError { field: "body".to_owned(), reason: format!("not valid JSON: {e}") },
            Ok(()) => return PayloadError { field: "body".to_owned(), reason: "not a webhook payload".to_owned() },
        },
        Err(err) => err,
    };
    let path = err.path().to_string();
    let inner = err.into_inner();
    let message = inner.to_string();
    let reason = message.split(" at line ").next().unwrap_or(&message).to_owned();
    let syntax = inner.is_syntax() || inner.is_eof();
    let missing = reason.strip_prefix("missing field `").and_then(|r| r.strip_suffix('`'));
    let field = match (missing, path.as_str()) {
        _ if syntax => "body".to_owned(),
        (Some(name), "." | "" | "?") => name.to_owned(),
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, "." | "" | "?") => "body".to_owned(),
        (None, p) => p.to_owned(),
    };
    let reason = if syntax { format!("not valid JSON: {reason}") } else { reason };
    PayloadError { field, reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINGLE: &str = include_str!("../../../tests/fixtures/alertmanager/webhook-v4-firing-single.json");
    const MIXED: &str =
        include_str!("../../../tests/fixtures/alertmanager/webhook-v4-firing-group-mixed-resolved.json");
    const RESOLVED: &str = include_str!("../../../tests/fixtures/alertmanager/webhook-v4-resolved.json");
    const TRUNCATED: &str =
        include_str!("../../../tests/fixtures/alertmanager/webhook-v4-firing-truncated-max_alerts-2.json");

    #[test]
    fn captured_payloads_parse() {
        let w = parse(SINGLE.as_bytes()).expect("single");
        assert_eq!(w.receiver, "default");
        assert_eq!(w.status, Status::Firing);
        assert_eq!(w.group_key, "{}:{alertname=\"HighRequestLatency\", cluster=\"prod-eu-1\"}");
        assert_eq!(w.external_url, "http://127.0.0.1:19093");
        let a = &w.alerts[0];
        assert_eq!(a.fingerprint, "00260c6d6cda79af");
        assert_eq!(a.labels["severity"], "critical");
        assert_eq!(a.ends_at, None, "zero time means no end");
        assert_eq!(a.starts_at.to_string(), "2026-11-27T03:38:53.744495Z");
        assert!(a.generator_url.contains("g0.tab=1"), "\\u0026 decoded: {}", a.generator_url);

        let mixed = parse(MIXED.as_bytes()).expect("mixed");
        assert_eq!(mixed.status, Status::Firing);
        assert!(mixed.alerts.iter().any(|a| a.status == Status::Resolved && a.ends_at.is_some()));

        let resolved = parse(RESOLVED.as_bytes()).expect("resolved");
        assert!(resolved.alerts.iter().all(|a| a.status == Status::Resolved && a.ends_at.is_some()));

        let truncated = parse(TRUNCATED.as_bytes()).expect("truncated");
        assert_eq!(truncated.truncated_alerts, 1);
        assert_eq!(truncated.alerts.len(), 2);
    }

    #[test]
    fn newer_alertmanager_fields_are_ignored() {
        let mut v: serde_json::Value = serde_json::from_str(SINGLE).expect("json");
        v["notification_reason"] = "first notification".into();
        v["routeLabels"] = serde_json::json!({"team": "checkout"});
        v["alerts"][0]["something_new"] = 1.into();
        assert!(parse(v.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn errors_name_the_field() {
        let base: serde_json::Value = serde_json::from_str(SINGLE).expect("json");
        let mutate = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = base.clone();
            f(&mut v);
            parse(v.to_string().as_bytes()).expect_err("invalid")
        };
        let cases: Vec<(PayloadError, &str, &str)> = vec![
            (mutate(&|v| drop(v.as_object_mut().map(|o| o.remove("alerts")))), "alerts", "missing field"),
            (mutate(&|v| drop(v.as_object_mut().map(|o| o.remove("receiver")))), "receiver", "missing field"),
            (
                mutate(&|v| drop(v["alerts"][0].as_object_mut().map(|o| o.remove("startsAt")))),
                "alerts[0].startsAt",
                "missing field",
            ),
            (
                mutate(&|v| drop(v["alerts"][0].as_object_mut().map(|o| o.remove("labels")))),
                "alerts[0].labels",
                "missing field",
            ),
            (mutate(&|v| v["alerts"][0]["status"] = "pending".into()), "alerts[0].status", "unknown variant"),
            (mutate(&|v| v["alerts"][0]["startsAt"] = "yesterday".into()), "alerts[0].startsAt", "RFC 3339"),
            (mutate(&|v| v["alerts"][0]["labels"] = 3.into()), "alerts[0].labels", "invalid type"),
            (mutate(&|v| v["version"] = "3".into()), "version", "unsupported version"),
            (mutate(&|v| v["truncatedAlerts"] = (-1).into()), "truncatedAlerts", "invalid value"),
        ];
        for (err, field, reason) in cases {
            assert_eq!(err.field, field, "{err}");
            assert!(err.reason.contains(reason), "{err}");
        }
        let trailing = format!("{SINGLE} x");
        let cases: [(&[u8], &str); 5] = [
            (b"{not json", "not valid JSON"),
            (b"", "not valid JSON"),
            (b"[]", "expected a JSON object"),
            (b"42", "expected a JSON object"),
            (trailing.as_bytes(), "not valid JSON"),
        ];
        for (body, reason) in cases {
            let err = parse(body).expect_err("invalid");
            assert_eq!(err.field, "body", "{err}");
            assert!(err.reason.contains(reason), "{err}");
        }
    }

    #[test]
    fn nulls_and_missing_optionals_are_empty() {
        let body = r#"{"version":"4","groupKey":"k","status":"firing","receiver":"r","groupLabels":null,
            "alerts":[{"status":"firing","labels":{"alertname":"A"},"annotations":null,"startsAt":"2026-01-01T00:00:00Z"}]}"#;
        let w = parse(body.as_bytes()).expect("parses");
        assert!(w.group_labels.is_empty() && w.alerts[0].annotations.is_empty());
        assert_eq!(w.alerts[0].ends_at, None);
        assert_eq!(w.alerts[0].fingerprint, "");
        assert_eq!(w.external_url, "");
    }
}
