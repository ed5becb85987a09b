//! Fuzzes the webhook parser and the mapping to intents: no input may panic, and every
//! accepted alert maps to exactly one ingest intent.
#![no_main]

use alertmanager_ingress::config::KeySource;
use alertmanager_ingress::mapping::{RequestContext, Rules, default_severity_map, map_webhook};
use libfuzzer_sys::fuzz_target;
use sre_contracts::domain::v1::{Severity, Source};

fuzz_target!(|data: &[u8]| {
    let Ok(webhook) = alertmanager_ingress::payload::parse(data) else { return };
    for key_source in [KeySource::Fingerprint, KeySource::GroupKey, KeySource::Labels] {
        let rules = Rules {
            severity_label: "severity".into(),
            severity_map: default_severity_map(),
            default_severity: Severity::Unspecified,
            key_source,
            auto_create_min: Some(Severity::High),
        };
        let ctx = RequestContext {
            correlation_id: "fuzz".into(),
            source: Source { service: "fuzz".into(), instance: "0".into() },
            now: jiff::Timestamp::UNIX_EPOCH,
        };
        if let Ok(intents) = map_webhook(webhook.clone(), &rules, &ctx) {
            assert_eq!(intents.ingest.len(), webhook.alerts.len());
            assert!(intents.create.len() <= webhook.alerts.len());
        }
    }
});
