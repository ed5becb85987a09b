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
//!   resolution. [`Domain::reopen`], [`Domain::escalate`] and [`Domain::annotate`] reopen an
//!   incident, change its severity and add a note, as a person in the platform would.
//! - What a person did in a vendor's tool (two-way sync): `AcknowledgeIncidentRequested` →
//!   `IncidentAcknowledged`, `ResolveIncidentRequested` → `IncidentResolved`,
//!   `CloseIncidentRequested` → `IncidentClosed`, `ReopenIncidentRequested` →
//!   `IncidentReopened` (when it is resolved or closed), `AnnotateIncidentRequested` →
//!   `IncidentAnnotated` (with where the note was written, so no sink sends it back there).
//!
//! Each incident has lives: a reopen starts the next (`reopen_count`), and each life is
//! acknowledged, resolved and closed at most once, whoever asks and however often. An intent
//! is acked only after its facts are stored; when the bus is away it is redelivered a second
//! later, and the consumer is bound again after a server restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use sre_contracts::domain::v1::{
    AcknowledgeIncidentRequested, AlertIngested, AlertStatus, AnnotateIncidentRequested, AppHealth,
    CloseIncidentRequested, CreateIncidentRequested, ExternalOrigin, IncidentAcknowledged, IncidentAnnotated,
    IncidentClosed, IncidentCreated, IncidentReopened, IncidentResolved, IncidentSeverityChanged, IngestAlertRequested,
    MessageMeta, RecordHealthCheckRequested, ReopenIncidentRequested, ResolveIncidentRequested, Severity, Source,
};
use sre_contracts::{BusMessage, ExternalIntent};
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
        // A fresh cluster on a loaded machine can take longer than one request's timeout to
        // place an R3 stream; creating it again is harmless (same definition).
        let mut attempt = 0;
        loop {
            attempt += 1;
            match js.create_or_update_stream(config.clone()).await {
                Ok(_) => break,
                Err(e) if attempt < 4 && e.to_string().contains("timed out") => continue,
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
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
    /// Two-way-sync intents handled: (message name, incident, vendor event id).
    external: Vec<(&'static str, String, String)>,
    /// Each incident's life as the facts published so far tell it.
    lives: HashMap<String, Life>,
    auto: bool,
}

/// Where an incident stands, as far as its facts go.
#[derive(Debug, Clone, Copy, Default)]
struct Life {
    /// Reopens so far: the life the next acknowledge, resolve or close belongs to.
    reopen_count: u32,
    /// Resolved or closed (so a reopen starts a new life).
    ended: bool,
    /// The severity now (`Severity` as i32).
    severity: i32,
    /// Severity changes so far (each one's fact id).
    changes: u32,
}

fn now() -> Option<prost_types::Timestamp> {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Some(prost_types::Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 })
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

tokio::task_local! {
    /// The `traceparent` of the intent being handled: the facts it causes carry it on, so
    /// one trace runs from a webhook through the stand-in to the sinks (the stand-in has no
    /// spans of its own; the real domain adds its own).
    static TRACEPARENT: Option<String>;
}

/// Publishes a fact and waits until it is stored.
async fn publish(js: &async_nats::jetstream::Context, subject: &'static str, msg_id: &str, body: Vec<u8>) -> bool {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(sre_contracts::headers::MSG_ID, msg_id);
    if let Some(tp) = TRACEPARENT.try_with(Clone::clone).ok().flatten() {
        headers.insert(sre_contracts::headers::TRACEPARENT, tp.as_str());
    }
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

    /// The two-way-sync intents handled so far, redeliveries included: (message name,
    /// incident id, the vendor's event id).
    pub fn external(&self) -> Vec<(&'static str, String, String)> {
        self.worker.with(|s| s.external.clone())
    }

    /// Publishes `IncidentAcknowledged` for `id`; false when the bus did not store it.
    pub async fn acknowledge(&self, id: &str, by: &str) -> bool {
        self.worker.acknowledge(id, by).await
    }

    /// Publishes `IncidentClosed` for `id`; false when the bus did not store it.
    pub async fn close(&self, id: &str, by: &str) -> bool {
        self.worker.close(id, by).await
    }

    /// Reopens `id` when it is resolved or closed (`IncidentReopened`); false when the bus
    /// did not store it. An open incident stays as it is (true).
    pub async fn reopen(&self, id: &str, by: &str, reason: &str) -> bool {
        self.worker.reopen(id, by, reason, None).await
    }

    /// Changes the severity of `id` to `to` (`IncidentSeverityChanged`); false when the bus
    /// did not store it.
    pub async fn escalate(&self, id: &str, to: Severity, by: &str, why: &str) -> bool {
        self.worker.escalate(id, to, by, why).await
    }

    /// Adds a note to `id` written in the platform (`IncidentAnnotated`, no vendor origin).
    pub async fn annotate(&self, id: &str, note: &str, by: &str) -> bool {
        let key = format!("note:{id}:{}", &sre_resilience::idempotency::derive_key("n", &[note, by])[2..14]);
        self.worker.annotate(id, note, by, None, key).await
    }

    /// How many times `id` has been reopened (0 when never, or unknown).
    pub fn reopen_count(&self, id: &str) -> u32 {
        self.worker.with(|s| s.lives.get(id).map_or(0, |l| l.reopen_count))
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

    fn life(&self, id: &str) -> Life {
        self.with(|s| s.lives.get(id).copied().unwrap_or_default())
    }

    fn set_life(&self, id: &str, f: impl FnOnce(&mut Life)) {
        self.with(|s| f(s.lives.entry(id.to_owned()).or_default()));
    }

    /// Publishes `IncidentAcknowledged` for `id`'s current life.
    async fn acknowledge(&self, id: &str, by: &str) -> bool {
        let n = self.life(id).reopen_count;
        let key = format!("ack:{id}:{n}");
        let fact = IncidentAcknowledged {
            meta: meta(key.clone(), ""),
            incident_id: id.to_owned(),
            by: by.to_owned(),
            at: now(),
            reopen_count: n,
        };
        let stored = publish(&self.js, IncidentAcknowledged::SUBJECT, &key, fact.encode_to_vec()).await;
        (self.say)(&format!("domain: acknowledged by {by} → IncidentAcknowledged {id}"));
        stored
    }

    /// Publishes `IncidentResolved` for `id`'s current life.
    async fn resolve(&self, id: &str, by: &str, reason: &str, correlation: &str) -> bool {
        let n = self.life(id).reopen_count;
        let key = format!("resolved:{id}:{n}");
        let fact = IncidentResolved {
            meta: meta(key.clone(), correlation),
            incident_id: id.to_owned(),
            by: by.to_owned(),
            at: now(),
            reason: reason.to_owned(),
            reopen_count: n,
        };
        let stored = publish(&self.js, IncidentResolved::SUBJECT, &key, fact.encode_to_vec()).await;
        if stored {
            self.set_life(id, |l| l.ended = true);
        }
        stored
    }

    /// Publishes `IncidentClosed` for `id`'s current life.
    async fn close(&self, id: &str, by: &str) -> bool {
        let n = self.life(id).reopen_count;
        let key = format!("close:{id}:{n}");
        let fact = IncidentClosed {
            meta: meta(key.clone(), ""),
            incident_id: id.to_owned(),
            by: by.to_owned(),
            at: now(),
            reason: "follow-up done".into(),
            reopen_count: n,
        };
        let stored = publish(&self.js, IncidentClosed::SUBJECT, &key, fact.encode_to_vec()).await;
        if stored {
            self.set_life(id, |l| l.ended = true);
        }
        (self.say)(&format!("domain: closed by {by} → IncidentClosed {id}"));
        stored
    }

    /// Publishes `IncidentReopened` when `id` is resolved or closed.
    async fn reopen(&self, id: &str, by: &str, reason: &str, origin: Option<ExternalOrigin>) -> bool {
        let life = self.life(id);
        if !life.ended {
            (self.say)(&format!("domain: reopen of {id} by {by}: it is open (nothing to do)"));
            return true;
        }
        let n = life.reopen_count + 1;
        let key = format!("reopened:{id}:{n}");
        let fact = IncidentReopened {
            meta: meta(key.clone(), ""),
            incident_id: id.to_owned(),
            by: by.to_owned(),
            at: now(),
            reason: reason.to_owned(),
            reopen_count: n,
            origin,
        };
        let stored = publish(&self.js, IncidentReopened::SUBJECT, &key, fact.encode_to_vec()).await;
        if stored {
            self.set_life(id, |l| {
                l.reopen_count = n;
                l.ended = false;
            });
            (self.say)(&format!("domain: reopened by {by} → IncidentReopened {id} (reopen {n})"));
        }
        stored
    }

    /// Publishes `IncidentSeverityChanged` to `to`.
    async fn escalate(&self, id: &str, to: Severity, by: &str, why: &str) -> bool {
        let life = self.life(id);
        if life.severity == to as i32 {
            return true;
        }
        let key = format!("severity:{id}:{}", life.changes + 1);
        let fact = IncidentSeverityChanged {
            meta: meta(key.clone(), ""),
            incident_id: id.to_owned(),
            from: life.severity,
            to: to as i32,
            by: by.to_owned(),
            why: why.to_owned(),
            at: now(),
        };
        let stored = publish(&self.js, IncidentSeverityChanged::SUBJECT, &key, fact.encode_to_vec()).await;
        if stored {
            self.set_life(id, |l| {
                l.severity = to as i32;
                l.changes += 1;
            });
            let name = |v: i32| {
                Severity::try_from(v)
                    .map_or("unknown", |s| s.as_str_name())
                    .trim_start_matches("SEVERITY_")
                    .to_lowercase()
            };
            (self.say)(&format!(
                "domain: severity {} → {} by {by} → IncidentSeverityChanged {id}",
                name(life.severity),
                name(to as i32)
            ));
        }
        stored
    }

    /// Publishes `IncidentAnnotated`, once per `key`.
    async fn annotate(&self, id: &str, note: &str, by: &str, origin: Option<ExternalOrigin>, key: String) -> bool {
        let vendor = origin.as_ref().map(|o| o.vendor.clone()).unwrap_or_default();
        let fact = IncidentAnnotated {
            meta: meta(key.clone(), ""),
            incident_id: id.to_owned(),
            note: note.to_owned(),
            author: by.to_owned(),
            origin,
            at: now(),
        };
        let stored = publish(&self.js, IncidentAnnotated::SUBJECT, &key, fact.encode_to_vec()).await;
        if stored {
            let place = if vendor.is_empty() { String::new() } else { format!(" in {vendor}") };
            (self.say)(&format!("domain: note by {by}{place} → IncidentAnnotated {id}: \"{note}\""));
        }
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
                        AcknowledgeIncidentRequested::SUBJECT.into(),
                        ResolveIncidentRequested::SUBJECT.into(),
                        CloseIncidentRequested::SUBJECT.into(),
                        ReopenIncidentRequested::SUBJECT.into(),
                        AnnotateIncidentRequested::SUBJECT.into(),
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
                        let tp = m
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(sre_contracts::headers::TRACEPARENT))
                            .map(|v| v.to_string());
                        let done = TRACEPARENT.scope(tp, self.handle(&m)).await;
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
        } else if let Some(done) = self.external(subject, m).await {
            done
        } else if subject == CreateIncidentRequested::SUBJECT {
            let Ok(req) = CreateIncidentRequested::decode(m.payload.clone()) else { return true };
            self.create_incident(req, &correlation).await
        } else if let Ok(alert) = IngestAlertRequested::decode(m.payload.clone()) {
            self.ingest(alert, &correlation).await
        } else {
            true
        }
    }

    /// A two-way-sync intent: `None` when `subject` is not one.
    async fn external(&self, subject: &str, m: &async_nats::jetstream::Message) -> Option<bool> {
        /// What every two-way-sync intent says: the incident, where, who, the vendor's
        /// event, and its own text (a note, a resolution, a reason).
        struct Said {
            id: String,
            origin: ExternalOrigin,
            who: String,
            key: String,
            text: String,
        }
        fn read<M: ExternalIntent>(m: &async_nats::jetstream::Message, text: fn(&M) -> String) -> Option<Said> {
            let intent = M::decode(m.payload.clone()).ok()?;
            let origin = intent.origin().cloned().unwrap_or_default();
            let who =
                origin.actor.clone().map(|a| if a.name.is_empty() { a.email } else { a.name }).unwrap_or_default();
            let key = intent.idempotency_key().to_owned();
            Some(Said { id: intent.incident_id().to_owned(), text: text(&intent), origin, who, key })
        }
        let said = match subject {
            s if s == AcknowledgeIncidentRequested::SUBJECT => {
                read::<AcknowledgeIncidentRequested>(m, |_| String::new()).map(|r| ("AcknowledgeIncidentRequested", r))
            }
            s if s == ResolveIncidentRequested::SUBJECT => {
                read::<ResolveIncidentRequested>(m, |i| i.resolution.clone()).map(|r| ("ResolveIncidentRequested", r))
            }
            s if s == CloseIncidentRequested::SUBJECT => {
                read::<CloseIncidentRequested>(m, |i| i.resolution.clone()).map(|r| ("CloseIncidentRequested", r))
            }
            s if s == ReopenIncidentRequested::SUBJECT => {
                read::<ReopenIncidentRequested>(m, |i| i.reason.clone()).map(|r| ("ReopenIncidentRequested", r))
            }
            s if s == AnnotateIncidentRequested::SUBJECT => {
                read::<AnnotateIncidentRequested>(m, |i| i.note.clone()).map(|r| ("AnnotateIncidentRequested", r))
            }
            _ => return None,
        };
        let Some((name, said)) = said else { return Some(true) };
        let Said { id, origin, who, key, text } = said;
        self.with(|s| s.external.push((name, id.clone(), origin.event_id.clone())));
        let vendor = origin.vendor.clone();
        let by = format!("{who} in {vendor}");
        let stored = match name {
            "AcknowledgeIncidentRequested" => self.acknowledge(&id, &by).await,
            "CloseIncidentRequested" => self.close(&id, &by).await,
            "ResolveIncidentRequested" => {
                let stored = self.resolve(&id, &by, &format!("resolved in {vendor}"), "").await;
                (self.say)(&format!("domain: resolved by {by} → IncidentResolved {id}"));
                stored
            }
            "ReopenIncidentRequested" => self.reopen(&id, &by, &format!("reopened in {vendor}"), Some(origin)).await,
            _ => self.annotate(&id, &text, &who, Some(origin), format!("note:{key}")).await,
        };
        Some(stored)
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
            s.lives.entry(id.clone()).or_insert(Life { severity: req.severity, ..Life::default() });
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
            if !self.resolve(&id, "auto", "its alert resolved", correlation).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use sre_contracts::domain::v1::{ExternalActor, ExternalOrigin};

    async fn intent<M: sre_contracts::Intent>(js: &async_nats::jetstream::Context, mut m: M, event: &str) {
        m.meta_mut().idempotency_key = format!("evt:{event}");
        assert!(publish(js, M::SUBJECT, &format!("evt:{event}"), m.encode_to_vec()).await, "stored");
    }

    fn origin(event: &str) -> Option<ExternalOrigin> {
        Some(ExternalOrigin {
            vendor: "pagerduty".into(),
            event_id: event.into(),
            actor: Some(ExternalActor { name: "Ada".into(), ..Default::default() }),
            ..Default::default()
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_a_person_did_outside_becomes_one_fact_per_incident_life() {
        let nats = crate::NatsServer::start().expect("nats");
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.expect("connects"));
        provision(&js).await.expect("streams");
        let domain = Domain::start(js.clone(), false, Arc::new(|_: &str| {}));
        // Acknowledged twice (two vendor events), resolved, a note, reopened twice (two
        // events), and acknowledged in its second life.
        for event in ["e1", "e2"] {
            let ack = AcknowledgeIncidentRequested {
                incident_id: "inc-1".into(),
                origin: origin(event),
                ..Default::default()
            };
            intent(&js, ack, event).await;
        }
        let resolve =
            ResolveIncidentRequested { incident_id: "inc-1".into(), origin: origin("e3"), ..Default::default() };
        intent(&js, resolve, "e3").await;
        let note = AnnotateIncidentRequested {
            incident_id: "inc-1".into(),
            note: "rolling back".into(),
            origin: origin("e4"),
            ..Default::default()
        };
        intent(&js, note, "e4").await;
        crate::bus::eventually("four handled", Duration::from_secs(20), || async { domain.external().len() >= 4 })
            .await;
        for event in ["e5", "e6"] {
            let reopen =
                ReopenIncidentRequested { incident_id: "inc-1".into(), origin: origin(event), ..Default::default() };
            intent(&js, reopen, event).await;
        }
        let ack =
            AcknowledgeIncidentRequested { incident_id: "inc-1".into(), origin: origin("e7"), ..Default::default() };
        intent(&js, ack, "e7").await;
        crate::bus::eventually("seven handled", Duration::from_secs(20), || async { domain.external().len() >= 7 })
            .await;
        let facts = crate::bus::stream_messages(&nats.url(), sre_contracts::streams::FACTS).await;
        let subjects: Vec<&str> = facts.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(
            subjects,
            [
                IncidentAcknowledged::SUBJECT,
                IncidentResolved::SUBJECT,
                IncidentAnnotated::SUBJECT,
                IncidentReopened::SUBJECT,
                IncidentAcknowledged::SUBJECT
            ],
            "one fact each, per life"
        );
        let acked = IncidentAcknowledged::decode(facts[0].1.clone()).expect("decodes");
        assert_eq!((acked.by.as_str(), acked.reopen_count), ("Ada in pagerduty", 0));
        let noted = IncidentAnnotated::decode(facts[2].1.clone()).expect("decodes");
        assert_eq!((noted.note.as_str(), noted.author.as_str()), ("rolling back", "Ada"));
        assert_eq!(
            noted.origin.map(|o| o.vendor),
            Some("pagerduty".to_owned()),
            "where it came from, so it is not sent back"
        );
        let reopened = IncidentReopened::decode(facts[3].1.clone()).expect("decodes");
        assert_eq!(reopened.reopen_count, 1);
        let second = IncidentAcknowledged::decode(facts[4].1.clone()).expect("decodes");
        assert_eq!(second.reopen_count, 1, "an acknowledge of its second life");
        assert_eq!(domain.reopen_count("inc-1"), 1);
    }
}
