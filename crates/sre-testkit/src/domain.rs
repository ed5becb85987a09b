//! A **development stand-in of the SRE domain**, for the demo and the whole-system tests. It
//! is not the domain: it only turns intents into facts, idempotently, the way the real domain
//! is expected to, so the adapters can be seen and tested end to end.
//!
//! - `IngestAlertRequested` → `AlertIngested`; a resolved alert resolves its open incident
//!   (`IncidentResolved`).
//! - `CreateIncidentRequested` → `IncidentCreated`, with an incident id derived from the
//!   intent's idempotency key, so a redelivered intent yields the same fact (`Nats-Msg-Id`).
//! - [`Domain::acknowledge`] and [`Domain::close`] publish `IncidentAcknowledged` and
//!   `IncidentClosed`; with `auto`, the demo's on-call does both 5 s after the opening or the
//!   resolution.
//!
//! An intent is acked only after its facts are stored; when the bus is away it is redelivered
//! a second later, and the consumer is bound again after a server restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use sre_contracts::BusMessage;
use sre_contracts::domain::v1::{
    AlertIngested, AlertStatus, AppHealth, CreateIncidentRequested, IncidentAcknowledged, IncidentClosed,
    IncidentCreated, IncidentResolved, IngestAlertRequested, MessageMeta, RecordHealthCheckRequested, Source,
};
use tokio_util::sync::CancellationToken;

/// The durable consumer the stand-in reads intents with.
pub const CONSUMER: &str = "sre-domain-standin";

/// Provisions the domain streams from `deploy/nats/jetstream/streams/` as an operator (or
/// the SRE domain, whose bus user may) would, with one replica for a single server. Returns
/// how many streams are in place.
pub async fn provision(js: &async_nats::jetstream::Context) -> Result<usize, String> {
    provision_replicated(js, 1).await
}

/// [`provision`] with `replicas` (3 on a three-node cluster, as the files say).
pub async fn provision_replicated(js: &async_nats::jetstream::Context, replicas: usize) -> Result<usize, String> {
    let dir = crate::workspace_root().join("deploy/nats/jetstream/streams");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut config: async_nats::jetstream::stream::Config =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        config.num_replicas = replicas;
        js.create_or_update_stream(config).await.map_err(|e| format!("{}: {e}", path.display()))?;
        count += 1;
    }
    Ok(count)
}

/// Where the stand-in reports what it did (one readable line per step).
pub type Say = Arc<dyn Fn(&str) + Send + Sync>;

/// The running stand-in; stops when dropped.
pub struct Domain {
    worker: Worker,
}

/// What the consumer task and the caller's handle share.
#[derive(Clone)]
struct Worker {
    js: async_nats::jetstream::Context,
    state: Arc<Mutex<State>>,
    say: Say,
    cancel: CancellationToken,
}

impl std::fmt::Debug for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Domain").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    /// Alert fingerprint → open incident.
    open: HashMap<String, String>,
    /// Incidents opened, in order (each once).
    incidents: Vec<String>,
    /// Intents handled (redeliveries included).
    handled: u64,
    auto: bool,
}

fn meta(key: String, correlation: &str) -> Option<MessageMeta> {
    Some(MessageMeta {
        idempotency_key: key,
        correlation_id: correlation.to_owned(),
        causation_id: String::new(),
        source: Some(Source { service: "sre-domain-standin".into(), instance: "dev".into() }),
        occurred_at: None,
    })
}

/// Publishes a fact and waits until it is stored.
async fn publish(js: &async_nats::jetstream::Context, subject: &'static str, msg_id: &str, body: Vec<u8>) -> bool {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(sre_contracts::headers::MSG_ID, msg_id);
    match js.publish_with_headers(subject, headers, body.into()).await {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    }
}

impl Domain {
    /// Starts consuming intents with `js` (a client allowed to publish facts). `auto`: the
    /// demo's on-call acknowledges and closes by itself.
    pub fn start(js: async_nats::jetstream::Context, auto: bool, say: Say) -> Self {
        let state = Arc::new(Mutex::new(State { auto, ..State::default() }));
        let worker = Worker { js, state, say, cancel: CancellationToken::new() };
        tokio::spawn(worker.clone().run());
        Self { worker }
    }

    /// The incidents opened so far, each once.
    pub fn incidents(&self) -> Vec<String> {
        self.worker.with(|s| s.incidents.clone())
    }

    /// Intents handled so far, redeliveries included.
    pub fn handled(&self) -> u64 {
        self.worker.with(|s| s.handled)
    }

    /// Publishes `IncidentAcknowledged` for `id`; false when the bus did not store it.
    pub async fn acknowledge(&self, id: &str, by: &str) -> bool {
        self.worker.acknowledge(id, by).await
    }

    /// Publishes `IncidentClosed` for `id`; false when the bus did not store it.
    pub async fn close(&self, id: &str, by: &str) -> bool {
        self.worker.close(id, by).await
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        self.worker.cancel.cancel();
    }
}

impl Worker {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Publishes `IncidentAcknowledged` for `id`.
    async fn acknowledge(&self, id: &str, by: &str) -> bool {
        let fact = IncidentAcknowledged {
            meta: meta(format!("ack:{id}"), ""),
            incident_id: id.to_owned(),
            by: by.to_owned(),
            ..Default::default()
        };
        let stored = publish(&self.js, IncidentAcknowledged::SUBJECT, &format!("ack:{id}"), fact.encode_to_vec()).await;
        (self.say)(&format!("domain: acknowledged by {by} → IncidentAcknowledged {id}"));
        stored
    }

    /// Publishes `IncidentClosed` for `id`.
    async fn close(&self, id: &str, by: &str) -> bool {
        let fact = IncidentClosed {
            meta: meta(format!("close:{id}"), ""),
            incident_id: id.to_owned(),
            by: by.to_owned(),
            reason: "follow-up done".into(),
            ..Default::default()
        };
        let stored = publish(&self.js, IncidentClosed::SUBJECT, &format!("close:{id}"), fact.encode_to_vec()).await;
        (self.say)(&format!("domain: closed by {by} → IncidentClosed {id}"));
        stored
    }

    /// Binds the consumer (again after a server restart) and handles intents until cancelled.
    async fn run(self) {
        while !self.cancel.is_cancelled() {
            let consumer = async {
                let stream = self.js.get_stream(sre_contracts::streams::INTENTS).await.ok()?;
                let config = async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    filter_subjects: vec![
                        IngestAlertRequested::SUBJECT.into(),
                        CreateIncidentRequested::SUBJECT.into(),
                        RecordHealthCheckRequested::SUBJECT.into(),
                    ],
                    ack_wait: Duration::from_secs(10),
                    ..Default::default()
                };
                stream.get_or_create_consumer(CONSUMER, config).await.ok()?.messages().await.ok()
            };
            let Some(mut messages) = consumer.await else {
                tokio::select! {
                    () = self.cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            };
            loop {
                let next = tokio::select! {
                    () = self.cancel.cancelled() => return,
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(m)) => {
                        let done = self.handle(&m).await;
                        let ack = if done {
                            async_nats::jetstream::AckKind::Ack
                        } else {
                            async_nats::jetstream::AckKind::Nak(Some(Duration::from_secs(1)))
                        };
                        let _ = m.ack_with(ack).await;
                    }
                    // Missed heartbeats while the server is away: the stream carries on.
                    Some(Err(_)) => {}
                    None => break,
                }
            }
        }
    }

    /// Handles one intent; false when a fact could not be stored (redeliver it).
    async fn handle(&self, m: &async_nats::jetstream::Message) -> bool {
        self.with(|s| s.handled += 1);
        let correlation = m
            .headers
            .as_ref()
            .and_then(|h| h.get(sre_contracts::headers::CORRELATION_ID))
            .map(|v| v.to_string())
            .unwrap_or_default();
        let subject = m.subject.as_str();
        if subject == RecordHealthCheckRequested::SUBJECT {
            if let Ok(h) = RecordHealthCheckRequested::decode(m.payload.clone()) {
                let name = |v: i32| match AppHealth::try_from(v) {
                    Ok(AppHealth::Unspecified) | Err(_) => "(new)".to_owned(),
                    Ok(h) => h.as_str_name().trim_start_matches("APP_HEALTH_").to_owned(),
                };
                (self.say)(&format!(
                    "domain: RecordHealthCheckRequested {} {}: {} → {}",
                    h.environment,
                    h.app,
                    name(h.previous_health),
                    name(h.health)
                ));
            }
            true
        } else if subject == CreateIncidentRequested::SUBJECT {
            let Ok(req) = CreateIncidentRequested::decode(m.payload.clone()) else { return true };
            self.create_incident(req, &correlation).await
        } else if let Ok(alert) = IngestAlertRequested::decode(m.payload.clone()) {
            self.ingest(alert, &correlation).await
        } else {
            true
        }
    }

    async fn create_incident(&self, req: CreateIncidentRequested, correlation: &str) -> bool {
        let key = req.meta.as_ref().map(|x| x.idempotency_key.clone()).unwrap_or_default();
        let id = format!("inc-{}", &sre_resilience::idempotency::derive_key("i", &[&key])[2..14]);
        let fact = IncidentCreated {
            meta: meta(format!("created:{id}"), correlation),
            incident_id: id.clone(),
            title: req.title.clone(),
            description: req.description.clone(),
            severity: req.severity,
            service: req.service.clone(),
            environment: req.environment.clone(),
            labels: req.labels.clone(),
            alert_fingerprints: req.alert_fingerprints.clone(),
            runbook_url: req.runbook_url.clone(),
            team: req.labels.get("team").cloned().unwrap_or_default(),
            ..Default::default()
        };
        if !publish(&self.js, IncidentCreated::SUBJECT, &format!("created:{id}"), fact.encode_to_vec()).await {
            return false;
        }
        let (new, auto) = self.with(|s| {
            for f in &req.alert_fingerprints {
                s.open.insert(f.clone(), id.clone());
            }
            let new = !s.incidents.contains(&id);
            if new {
                s.incidents.push(id.clone());
            }
            (new, s.auto)
        });
        if new {
            (self.say)(&format!("domain: CreateIncidentRequested → IncidentCreated {id} \"{}\"", req.title));
            if auto {
                self.later(Duration::from_secs(5), id, true);
            }
        }
        true
    }

    async fn ingest(&self, alert: IngestAlertRequested, correlation: &str) -> bool {
        let key = alert.meta.as_ref().map(|x| x.idempotency_key.clone()).unwrap_or_default();
        let incident = self.with(|s| s.open.get(&alert.fingerprint).cloned());
        let fact = AlertIngested {
            meta: meta(format!("ingested:{key}"), correlation),
            fingerprint: alert.fingerprint.clone(),
            incident_id: incident.clone().unwrap_or_default(),
            duplicate: false,
        };
        if !publish(&self.js, AlertIngested::SUBJECT, &format!("ingested:{key}"), fact.encode_to_vec()).await {
            return false;
        }
        let resolved = alert.status == AlertStatus::Resolved as i32;
        (self.say)(&format!(
            "domain: IngestAlertRequested ({}, {}) → AlertIngested",
            if resolved { "resolved" } else { "firing" },
            alert.labels.get("alertname").cloned().unwrap_or_default()
        ));
        if resolved && let Some(id) = incident {
            let fact = IncidentResolved {
                meta: meta(format!("resolved:{id}"), correlation),
                incident_id: id.clone(),
                by: "auto".into(),
                reason: "its alert resolved".into(),
                ..Default::default()
            };
            if !publish(&self.js, IncidentResolved::SUBJECT, &format!("resolved:{id}"), fact.encode_to_vec()).await {
                return false;
            }
            let auto = self.with(|s| {
                s.open.remove(&alert.fingerprint);
                s.auto
            });
            (self.say)(&format!("domain: alert resolved → IncidentResolved {id}"));
            if auto {
                self.later(Duration::from_secs(5), id, false);
            }
        }
        true
    }

    /// The demo's on-call: acknowledges (or closes) `id` after `pause`.
    fn later(&self, pause: Duration, id: String, acknowledge: bool) {
        let domain = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = domain.cancel.cancelled() => {}
                () = tokio::time::sleep(pause) => {
                    if acknowledge {
                        domain.acknowledge(&id, "demo-oncall").await;
                    } else {
                        domain.close(&id, "demo-oncall").await;
                    }
                }
            }
        });
    }
}
