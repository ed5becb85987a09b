//! Webhook to intents: a pure function of the payload, the rules and the request context.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use sre_contracts::SeverityExt;
use sre_contracts::domain::v1::{
    AlertGroup, AlertStatus, CreateIncidentRequested, IngestAlertRequested, MessageMeta, Severity, Source,
};
use sre_resilience::idempotency::derive_key;

use crate::config::KeySource;
use crate::payload::{Alert, PayloadError, Status, Webhook};

/// Namespace of alert intent keys.
const ALERT_KEY_NAMESPACE: &str = "am";
/// Namespace of incident intent keys.
const INCIDENT_KEY_NAMESPACE: &str = "am-incident";

/// How alerts become intents (from configuration).
#[derive(Debug, Clone)]
pub struct Rules {
    /// Label holding the severity.
    pub severity_label: String,
    /// Lower-cased label value to severity.
    pub severity_map: HashMap<String, Severity>,
    /// Severity when the label is absent or unmapped.
    pub default_severity: Severity,
    /// What keys are derived from.
    pub key_source: KeySource,
    /// Least severity that asks for an incident; `None` when auto-create is off.
    pub auto_create_min: Option<Severity>,
}

/// Per request: who we are, which request, and when.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// Shared by every intent of the request.
    pub correlation_id: String,
    /// This service instance.
    pub source: Source,
    /// When the request was received.
    pub now: Timestamp,
}

/// The intents of one webhook.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Intents {
    /// One per alert.
    pub ingest: Vec<IngestAlertRequested>,
    /// One per firing alert at or above the threshold, when auto-create is on.
    pub create: Vec<CreateIncidentRequested>,
}

/// The default mapping of severity label values.
pub fn default_severity_map() -> HashMap<String, Severity> {
    [
        ("critical", Severity::Critical),
        ("page", Severity::Critical),
        ("high", Severity::High),
        ("error", Severity::High),
        ("warning", Severity::Medium),
        ("medium", Severity::Medium),
        ("low", Severity::Low),
        ("info", Severity::Info),
        ("none", Severity::Info),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.as_second(), nanos: t.subsec_nanosecond() }
}

/// What identifies the alert across deliveries, per the key source.
fn identity(alert: &Alert, webhook: &Webhook, index: usize, source: KeySource) -> Result<Vec<String>, PayloadError> {
    let need_fingerprint = || {
        if alert.fingerprint.is_empty() {
            Err(PayloadError {
                field: format!("alerts[{index}].fingerprint"),
                reason:
                    "required with key_source fingerprint or group_key (use key_source labels for senders without one)"
                        .to_owned(),
            })
        } else {
            Ok(alert.fingerprint.clone())
        }
    };
    Ok(match source {
        KeySource::Fingerprint => vec!["fingerprint".to_owned(), need_fingerprint()?],
        KeySource::GroupKey => {
            vec!["group".to_owned(), webhook.receiver.clone(), webhook.group_key.clone(), need_fingerprint()?]
        }
        KeySource::Labels => {
            let mut parts = vec!["labels".to_owned()];
            for (k, v) in &alert.labels {
                parts.push(k.clone());
                parts.push(v.clone());
            }
            parts
        }
    })
}

/// The idempotency key of an alert's `IngestAlertRequested`: its identity, status and
/// start. The same alert delivered again gets the same key; its resolve, or a new firing
/// after a resolve (a new `startsAt`), gets another.
pub fn alert_key(alert: &Alert, webhook: &Webhook, index: usize, source: KeySource) -> Result<String, PayloadError> {
    let mut parts = identity(alert, webhook, index, source)?;
    parts.push(alert.status.as_str().to_owned());
    parts.push(alert.starts_at.to_string());
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    Ok(derive_key(ALERT_KEY_NAMESPACE, &refs))
}

fn incident_key(alert: &Alert, webhook: &Webhook, index: usize, source: KeySource) -> Result<String, PayloadError> {
    let mut parts = identity(alert, webhook, index, source)?;
    parts.push(alert.starts_at.to_string());
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    Ok(derive_key(INCIDENT_KEY_NAMESPACE, &refs))
}

fn severity_of(labels: &BTreeMap<String, String>, rules: &Rules) -> Severity {
    labels
        .get(&rules.severity_label)
        .and_then(|v| rules.severity_map.get(&v.trim().to_ascii_lowercase()))
        .copied()
        .unwrap_or(rules.default_severity)
}

fn first(map: &BTreeMap<String, String>, keys: &[&str]) -> String {
    keys.iter().find_map(|k| map.get(*k).filter(|v| !v.is_empty())).cloned().unwrap_or_default()
}

/// Maps a webhook to its intents. Takes the webhook by value: labels and annotations move
/// into the intents instead of being copied.
pub fn map_webhook(mut webhook: Webhook, rules: &Rules, ctx: &RequestContext) -> Result<Intents, PayloadError> {
    let alerts = std::mem::take(&mut webhook.alerts);
    let webhook = &webhook;
    let group = AlertGroup {
        receiver: webhook.receiver.clone(),
        group_key: webhook.group_key.clone(),
        external_url: webhook.external_url.clone(),
        truncated_alerts: webhook.truncated_alerts,
        group_labels: webhook.group_labels.clone(),
    };
    let meta = |key: String, causation: String| MessageMeta {
        idempotency_key: key,
        correlation_id: ctx.correlation_id.clone(),
        causation_id: causation,
        source: Some(ctx.source.clone()),
        occurred_at: Some(timestamp(ctx.now)),
    };
    let mut out = Intents { ingest: Vec::with_capacity(alerts.len()), create: Vec::new() };
    for (i, mut owned) in alerts.into_iter().enumerate() {
        let alert = &owned;
        let severity = severity_of(&alert.labels, rules);
        let key = alert_key(alert, webhook, i, rules.key_source)?;
        let mut ingest = IngestAlertRequested {
            meta: Some(meta(key.clone(), String::new())),
            status: match alert.status {
                Status::Firing => AlertStatus::Firing,
                Status::Resolved => AlertStatus::Resolved,
            } as i32,
            fingerprint: alert.fingerprint.clone(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            starts_at: Some(timestamp(alert.starts_at)),
            ends_at: alert.ends_at.map(timestamp),
            generator_url: alert.generator_url.clone(),
            severity: severity as i32,
            group: Some(group.clone()),
        };
        let wants_incident = alert.status == Status::Firing
            && rules.auto_create_min.is_some_and(|min| severity != Severity::Unspecified && severity.at_least(min));
        if wants_incident {
            let summary = first(&alert.annotations, &["summary", "title"]);
            let title = if summary.is_empty() {
                let name = first(&alert.labels, &["alertname"]);
                if name.is_empty() { format!("alert {}", alert.fingerprint) } else { name }
            } else {
                summary
            };
            out.create.push(CreateIncidentRequested {
                meta: Some(meta(incident_key(alert, webhook, i, rules.key_source)?, key.clone())),
                title,
                description: first(&alert.annotations, &["description", "message", "summary"]),
                severity: severity as i32,
                service: first(&alert.labels, &["service", "job"]),
                environment: first(&alert.labels, &["environment", "env", "cluster"]),
                labels: alert.labels.clone(),
                alert_fingerprints: vec![alert.fingerprint.clone()],
                runbook_url: first(&alert.annotations, &["runbook_url", "runbook"]),
                alert_idempotency_key: key,
            });
        }
        // Moved last: everything above only borrowed them.
        ingest.labels = std::mem::take(&mut owned.labels);
        ingest.annotations = std::mem::take(&mut owned.annotations);
        out.ingest.push(ingest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::parse;
    use proptest::prelude::*;

    const SINGLE: &str = include_str!("../../../tests/fixtures/alertmanager/webhook-v4-firing-single.json");
    const MIXED: &str =
        include_str!("../../../tests/fixtures/alertmanager/webhook-v4-firing-group-mixed-resolved.json");

    fn rules() -> Rules {
        Rules {
            severity_label: "severity".into(),
            severity_map: default_severity_map(),
            default_severity: Severity::Unspecified,
            key_source: KeySource::Fingerprint,
            auto_create_min: Some(Severity::High),
        }
    }

    fn ctx() -> RequestContext {
        RequestContext {
            correlation_id: "req-1".into(),
            source: Source { service: "alertmanager-ingress".into(), instance: "i-0".into() },
            now: "2026-11-27T04:00:00Z".parse().expect("time"),
        }
    }

    #[test]
    fn a_critical_firing_alert_becomes_an_ingest_and_an_incident_request() {
        let w = parse(SINGLE.as_bytes()).expect("parses");
        let intents = map_webhook(w.clone(), &rules(), &ctx()).expect("maps");
        assert_eq!(intents.ingest.len(), 1);
        assert_eq!(intents.create.len(), 1);
        let ingest = &intents.ingest[0];
        assert_eq!(ingest.status, AlertStatus::Firing as i32);
        assert_eq!(ingest.severity, Severity::Critical as i32);
        assert_eq!(ingest.fingerprint, "00260c6d6cda79af");
        assert_eq!(ingest.labels["service"], "checkout-api");
        assert_eq!(ingest.annotations["summary"], "p99 latency above 2s for checkout-api");
        assert_eq!(ingest.ends_at, None);
        assert_eq!(ingest.starts_at.as_ref().map(|t| (t.seconds, t.nanos)), Some((1_795_750_733, 744_495_000)));
        let group = ingest.group.as_ref().expect("group");
        assert_eq!(group.receiver, "default");
        assert_eq!(group.external_url, "http://127.0.0.1:19093");
        assert_eq!(group.group_labels["cluster"], "prod-eu-1");
        let meta = ingest.meta.as_ref().expect("meta");
        assert!(meta.idempotency_key.starts_with("am:"));
        assert_eq!(meta.correlation_id, "req-1");
        assert_eq!(meta.source.as_ref().map(|s| s.service.as_str()), Some("alertmanager-ingress"));

        let create = &intents.create[0];
        assert_eq!(create.title, "p99 latency above 2s for checkout-api");
        assert_eq!(create.service, "checkout-api");
        assert_eq!(create.environment, "prod-eu-1");
        assert_eq!(create.runbook_url, "https://runbooks.example.com/checkout/high-latency");
        assert_eq!(create.alert_fingerprints, ["00260c6d6cda79af"]);
        let cmeta = create.meta.as_ref().expect("meta");
        assert_eq!(cmeta.causation_id, meta.idempotency_key);
        assert!(cmeta.idempotency_key.starts_with("am-incident:"));
    }

    #[test]
    fn severity_mapping_and_threshold() {
        let table = [
            ("critical", Severity::Critical, true),
            ("CRITICAL", Severity::Critical, true),
            ("high", Severity::High, true),
            ("error", Severity::High, true),
            ("warning", Severity::Medium, false),
            ("info", Severity::Info, false),
            ("none", Severity::Info, false),
            ("bogus", Severity::Unspecified, false),
        ];
        let base = parse(SINGLE.as_bytes()).expect("parses");
        for (label, severity, incident) in table {
            let mut w = base.clone();
            w.alerts[0].labels.insert("severity".into(), label.into());
            let intents = map_webhook(w.clone(), &rules(), &ctx()).expect("maps");
            assert_eq!(intents.ingest[0].severity, severity as i32, "{label}");
            assert_eq!(intents.create.len(), usize::from(incident), "{label}");
        }
        let mut w = base.clone();
        w.alerts[0].labels.remove("severity");
        let with_default = Rules { default_severity: Severity::Critical, ..rules() };
        assert_eq!(
            map_webhook(w.clone(), &with_default, &ctx()).expect("maps").create.len(),
            1,
            "default severity applies"
        );
        let off = Rules { auto_create_min: None, ..rules() };
        assert!(map_webhook(base.clone(), &off, &ctx()).expect("maps").create.is_empty(), "auto-create off");
    }

    #[test]
    fn resolved_alerts_never_ask_for_incidents() {
        let w = parse(MIXED.as_bytes()).expect("parses");
        let intents =
            map_webhook(w.clone(), &Rules { auto_create_min: Some(Severity::Info), ..rules() }, &ctx()).expect("maps");
        let resolved = w.alerts.iter().filter(|a| a.status == Status::Resolved).count();
        assert_eq!(intents.ingest.len(), w.alerts.len());
        assert_eq!(intents.create.len(), w.alerts.len() - resolved);
    }

    #[test]
    fn keys_same_alert_same_key_resolve_and_refire_differ() {
        let w = parse(SINGLE.as_bytes()).expect("parses");
        let a = &w.alerts[0];
        let key = |alert: &Alert, source| alert_key(alert, &w, 0, source).expect("key");
        for source in [KeySource::Fingerprint, KeySource::GroupKey, KeySource::Labels] {
            let firing = key(a, source);
            assert_eq!(firing, key(&a.clone(), source), "stable");
            let mut resolved = a.clone();
            resolved.status = Status::Resolved;
            resolved.ends_at = Some("2026-11-27T04:00:00Z".parse().expect("time"));
            assert_ne!(firing, key(&resolved, source), "a resolve is new");
            let mut refired = a.clone();
            refired.starts_at = "2026-11-27T05:00:00Z".parse().expect("time");
            assert_ne!(firing, key(&refired, source), "a new firing after a resolve is new");
            let mut annotated = a.clone();
            annotated.annotations.insert("summary".into(), "changed wording".into());
            assert_eq!(firing, key(&annotated, source), "annotations do not make a new alert");
        }
        let mut other_receiver = w.clone();
        other_receiver.receiver = "team-b".into();
        assert_eq!(
            alert_key(a, &w, 0, KeySource::Fingerprint).expect("key"),
            alert_key(a, &other_receiver, 0, KeySource::Fingerprint).expect("key"),
            "fingerprint keys dedupe across receivers"
        );
        assert_ne!(
            alert_key(a, &w, 0, KeySource::GroupKey).expect("key"),
            alert_key(a, &other_receiver, 0, KeySource::GroupKey).expect("key"),
            "group keys do not"
        );
        let mut no_fp = a.clone();
        no_fp.fingerprint.clear();
        assert_eq!(
            alert_key(&no_fp, &w, 3, KeySource::Fingerprint).expect_err("needs one").field,
            "alerts[3].fingerprint"
        );
        assert!(alert_key(&no_fp, &w, 3, KeySource::Labels).is_ok());
    }

    fn arb_alert() -> impl Strategy<Value = (String, String, i64, u32)> {
        (
            "[0-9a-f]{16}",
            prop_oneof![Just("firing".to_owned()), Just("resolved".to_owned())],
            0i64..2_000_000_000,
            0u32..1_000_000,
        )
    }

    proptest! {
        #[test]
        fn same_alert_same_key_however_its_time_is_written((fp, status, secs, micros) in arb_alert()) {
            let t = Timestamp::new(secs, (micros * 1000) as i32).expect("time");
            // Alertmanager writes a variable number of fraction digits.
            let written = [t.to_string(), format!("{}", t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))];
            let body = |starts: &str| format!(
                r#"{{"version":"4","groupKey":"g","status":"firing","receiver":"r","alerts":[{{"status":"{status}","labels":{{"alertname":"A"}},"startsAt":"{starts}","fingerprint":"{fp}"}}]}}"#);
            let keys: Vec<String> = written.iter().map(|s| {
                let w = parse(body(s).as_bytes()).expect("parses");
                alert_key(&w.alerts[0], &w, 0, KeySource::Fingerprint).expect("key")
            }).collect();
            prop_assert_eq!(&keys[0], &keys[1]);
        }

        #[test]
        fn parsing_and_mapping_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(w) = parse(&body) {
                let _ = map_webhook(w.clone(), &rules(), &ctx());
            }
        }

        #[test]
        fn every_alert_yields_exactly_one_ingest(n in 0usize..20, firing in proptest::collection::vec(any::<bool>(), 20)) {
            let alerts: Vec<String> = (0..n).map(|i| format!(
                r#"{{"status":"{}","labels":{{"alertname":"A{i}","severity":"critical"}},"startsAt":"2026-01-01T00:00:00Z","fingerprint":"{i:016x}"}}"#,
                if firing[i] { "firing" } else { "resolved" })).collect();
            let body = format!(r#"{{"version":"4","groupKey":"g","status":"firing","receiver":"r","alerts":[{}]}}"#, alerts.join(","));
            let w = parse(body.as_bytes()).expect("parses");
            let intents = map_webhook(w.clone(), &rules(), &ctx()).expect("maps");
            prop_assert_eq!(intents.ingest.len(), n);
            prop_assert_eq!(intents.create.len(), firing[..n].iter().filter(|f| **f).count());
            let keys: std::collections::HashSet<_> = intents.ingest.iter().map(|i| i.meta.as_ref().map(|m| m.idempotency_key.clone())).collect();
            prop_assert_eq!(keys.len(), n, "distinct alerts, distinct keys");
        }
    }
}
