//! The durable fact consumer: explicit acks, NAK with delay, dead letters, and bounded
//! parallelism that keeps the facts of one incident in order.

use std::collections::hash_map::DefaultHasher;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use async_nats::jetstream::{AckKind, Message};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message as _;
use sre_contracts::{Fact, headers, streams, subjects};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{FactLabels, FactOutcome};
use crate::{Bus, ConsumerConfig};

/// What the handler decided for one fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Done (its effect is durable): acknowledge.
    Ack,
    /// Not now: redeliver after `after` (NAK with delay). After `max_deliver` deliveries
    /// the fact goes to the dead-letter stream with `reason`.
    Retry {
        /// How long to wait.
        after: Duration,
        /// Why, for logs and the dead letter.
        reason: String,
    },
    /// Never: record in the dead-letter stream with `reason`, then TERM.
    DeadLetter {
        /// Why, e.g. the vendor's error message (never a secret).
        reason: String,
    },
}

/// A fact as delivered.
#[derive(Debug, Clone)]
pub struct ReceivedFact {
    /// The subject, `sre.domain.facts.v1.<MessageName>`.
    pub subject: String,
    /// The body (binary protobuf).
    pub payload: Bytes,
    /// The headers as published.
    pub headers: HeaderMap,
    /// How many times it has been delivered, this one included.
    pub delivered: u64,
    /// Its sequence in the facts stream.
    pub stream_sequence: u64,
}

impl ReceivedFact {
    /// The message name (last subject token), e.g. `IncidentCreated`.
    pub fn message_name(&self) -> &str {
        self.subject.rsplit('.').next().unwrap_or_default()
    }

    /// Whether this fact is an `F`.
    pub fn is<F: Fact>(&self) -> bool {
        self.subject == F::SUBJECT
    }

    /// Decodes the body as `F`.
    pub fn decode<F: Fact>(&self) -> Result<F, prost::DecodeError> {
        F::decode(self.payload.clone())
    }

    /// The correlation id from the headers, when set.
    pub fn correlation_id(&self) -> &str {
        self.headers.get(headers::CORRELATION_ID).map_or("", |v| v.as_str())
    }
}

/// Handles facts. Implementations must be idempotent: a fact can be delivered again after
/// a crash, a timeout or a NAK.
pub trait FactHandler: Send + Sync + 'static {
    /// Decides what happens to one fact.
    fn handle(&self, fact: ReceivedFact) -> impl Future<Output = Disposition> + Send;
}

/// The consumer could not be set up or lost its subscription.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    /// The consumer's name is empty.
    #[error("consumer durable_name is empty")]
    NoName,
    /// The facts stream or the consumer could not be reached or created.
    #[error("setting up consumer {name}: {message}")]
    Setup {
        /// Durable name.
        name: String,
        /// What failed.
        message: String,
    },
}

/// The incident a fact is about; every incident fact has `incident_id` as field 2.
#[derive(Clone, PartialEq, prost::Message)]
struct IncidentRef {
    #[prost(string, tag = "2")]
    incident_id: String,
}

/// The key that orders facts: the incident id for incident facts, else the subject.
fn ordering_key(fact: &ReceivedFact) -> String {
    let incident = sre_contracts::INCIDENT_FACT_SUBJECTS.contains(&fact.subject.as_str());
    if incident && let Ok(r) = IncidentRef::decode(fact.payload.clone()) {
        return r.incident_id;
    }
    fact.subject.clone()
}

fn lane_of(key: &str, lanes: usize) -> usize {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % lanes.max(1) as u64) as usize
}

/// The durable consumer `bind` creates for `config`.
fn pull_config(config: &ConsumerConfig) -> pull::Config {
    let filter_subjects = if config.filter_subjects.is_empty() {
        vec![subjects::FACTS_ALL.to_owned()]
    } else {
        config.filter_subjects.clone()
    };
    pull::Config {
        durable_name: Some(config.durable_name.clone()),
        description: Some("fact consumer shared by the replicas of one sink".to_owned()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        max_deliver: config.max_deliver,
        max_ack_pending: config.max_ack_pending,
        filter_subjects,
        ..Default::default()
    }
}

/// The durable consumer a sink creates on the facts stream, as JetStream API JSON (`nats
/// consumer add SRE_DOMAIN_FACTS --config FILE`): what `deploy/nats/jetstream/` documents.
pub fn consumer_definition(config: &ConsumerConfig) -> serde_json::Value {
    serde_json::to_value(pull_config(config)).expect("a consumer config serializes")
}

/// A durable pull consumer on the facts stream, shared by a sink's replicas.
#[derive(Debug)]
pub struct FactConsumer {
    bus: Bus,
    config: ConsumerConfig,
    consumer: async_nats::jetstream::consumer::Consumer<pull::Config>,
    reach: crate::Reachability,
}

/// Heartbeat asked of the server on every pull: a pull cut short (no consumer leader, a
/// leader change, a dead node) is noticed within two of them.
const PULL_HEARTBEAT: Duration = Duration::from_millis(500);
/// How often the consumer's own counts (pending, awaiting ack, redelivered) are read for
/// the metrics.
const OBSERVE_EVERY: Duration = Duration::from_secs(5);
/// How long one pull request lasts before the client issues the next.
const PULL_EXPIRES: Duration = Duration::from_secs(10);

/// Backoff between failed pulls: short, so a sink resumes within moments of a leader
/// change, with jitter, so replicas do not hammer a recovering server together.
fn pull_backoff() -> sre_resilience::Backoff {
    sre_resilience::Backoff {
        initial: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        ..sre_resilience::Backoff::default()
    }
}

impl FactConsumer {
    /// Creates or updates the durable consumer (idempotent; many replicas may do it at
    /// once with the same configuration).
    pub async fn bind(bus: &Bus, config: ConsumerConfig) -> Result<Self, ConsumeError> {
        if config.durable_name.is_empty() {
            return Err(ConsumeError::NoName);
        }
        let setup = |message: String| ConsumeError::Setup { name: config.durable_name.clone(), message };
        let pull_config = pull_config(&config);
        let js = bus.jetstream();
        let consumer = if bus.config().bind_only {
            // Declared by the platform (NACK's Consumer, the nats CLI): used exactly as
            // declared, never updated; what it lacks is said, not changed.
            let consumer: async_nats::jetstream::consumer::Consumer<pull::Config> =
                js.get_consumer_from_stream(&config.durable_name, streams::FACTS).await.map_err(|e| {
                    let why = e.to_string();
                    if why.contains("not found") {
                        setup(format!(
                            "no such consumer on {}, and runtime.bus.bind_only creates nothing: declare it (the \
                             chart's NACK Consumer, or deploy/nats/jetstream/consumers/{}.json)",
                            streams::FACTS,
                            config.durable_name
                        ))
                    } else {
                        setup(why)
                    }
                })?;
            let declared = consumer.cached_info().config.filter_subjects.clone();
            let declared_one = consumer.cached_info().config.filter_subject.clone();
            let covered = |subject: &String| {
                (declared.is_empty()
                    && (declared_one.is_empty() || declared_one == *subject || declared_one == subjects::FACTS_ALL))
                    || declared.contains(subject)
                    || declared.iter().any(|d| d == subjects::FACTS_ALL)
            };
            let missing: Vec<&String> = config.filter_subjects.iter().filter(|s| !covered(s)).collect();
            if !missing.is_empty() {
                tracing::warn!(consumer = %config.durable_name, missing = ?missing,
                    "the declared consumer does not take facts this sink acts on; they will not reach it (add them to its filter subjects)");
            }
            consumer
        } else {
            let stream = js.get_stream(streams::FACTS).await.map_err(|e| setup(e.to_string()))?;
            match stream.create_consumer(pull_config.clone()).await {
                Ok(c) => c,
                Err(_) => {
                    // A replica starting at the same moment may have created it first.
                    stream.create_consumer(pull_config).await.map_err(|e| setup(e.to_string()))?
                }
            }
        };
        let reach = crate::Reachability::new(format!("fact consumer {}", config.durable_name));
        reach.answered();
        // Every outcome of every fact it takes is exported from the start, at 0: the alert
        // rules (dead letters, retries) see a series before the first one happens.
        for subject in &config.filter_subjects {
            bus.metrics().prime_facts(subject);
        }
        Ok(Self { bus: bus.clone(), config, consumer, reach })
    }

    /// Whether pulls get through, as readiness reads it: failing for more than a few
    /// seconds (no consumer leader, the bus away) is not ready, with the reason.
    pub fn reachability(&self) -> crate::Reachability {
        self.reach.clone()
    }

    /// A failed pull: counted, logged once per episode, then a backoff wait. `false`
    /// when `cancel` fired meanwhile.
    async fn pull_failed(&self, attempt: &mut u32, reason: String, cancel: &CancellationToken) -> bool {
        self.bus.metrics().pull_errors.inc();
        if self.reach.failed(reason.clone()) {
            tracing::warn!(error = %reason, consumer = %self.config.durable_name,
                "pulling facts failed; retrying with backoff (logged once until pulls get through)");
        }
        *attempt = attempt.saturating_add(1);
        let wait = pull_backoff().delay(*attempt, rand::random::<f64>());
        tokio::select! {
            () = cancel.cancelled() => false,
            () = tokio::time::sleep(wait) => true,
        }
    }

    /// Reads the durable consumer's counts into the metrics (shared by every replica of
    /// the sink: the same figures on each). Its answer also says pulls can get through.
    async fn observe(&self) {
        let mut consumer = self.consumer.clone();
        if let Ok(info) = consumer.info().await {
            let m = self.bus.metrics();
            m.consumer_pending.set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
            m.consumer_ack_pending.set(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
            m.consumer_redelivered.set(i64::try_from(info.num_redelivered).unwrap_or(i64::MAX));
        }
    }

    fn pull_recovered(&self, attempt: &mut u32) {
        *attempt = 0;
        if let Some(down) = self.reach.answered() {
            tracing::info!(consumer = %self.config.durable_name, after_ms = down.as_millis() as u64, "pulling facts again");
        }
    }

    /// Delivers facts to `handler` until `cancel` fires, then stops pulling, lets the
    /// facts already handed to workers finish, and returns. Facts pulled but not handed
    /// out are never acked, so JetStream redelivers them (to this or another replica).
    pub async fn run<H: FactHandler>(self, handler: H, cancel: CancellationToken) -> Result<(), ConsumeError> {
        let handler = Arc::new(handler);
        let lanes = self.config.parallelism.max(1);
        // A JoinSet, not a detached tracker: if this future is dropped (the task running
        // it aborted), its lanes go with it, as they would with the process; their facts
        // then stop being marked in progress and come back after ack_wait.
        let mut lanes_running = tokio::task::JoinSet::new();
        let mut senders = Vec::with_capacity(lanes);
        for _ in 0..lanes {
            let (tx, rx) = mpsc::channel::<Message>(1);
            senders.push(tx);
            lanes_running.spawn(lane(rx, handler.clone(), self.bus.clone(), self.config.clone(), cancel.clone()));
        }

        let mut attempt = 0u32;
        let mut observe = tokio::time::interval(OBSERVE_EVERY);
        observe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'outer: while !cancel.is_cancelled() {
            let messages = self
                .consumer
                .stream()
                .max_messages_per_batch(lanes * 2)
                .heartbeat(PULL_HEARTBEAT)
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let mut messages = match messages {
                Ok(m) => m,
                Err(err) => {
                    if self.pull_failed(&mut attempt, err.to_string(), &cancel).await {
                        continue;
                    }
                    break;
                }
            };
            // After failures, the consumer's leader answering its info is what tells a pull
            // gets through (a pull request is accepted even while there is no leader).
            if attempt > 0 {
                let mut probe = self.consumer.clone();
                match probe.info().await {
                    Ok(_) => self.pull_recovered(&mut attempt),
                    Err(err) => {
                        if self.pull_failed(&mut attempt, err.to_string(), &cancel).await {
                            continue;
                        }
                        break;
                    }
                }
            }
            loop {
                let next = tokio::select! {
                    () = cancel.cancelled() => {
                        hand_back_pulled(&self.bus, messages, None, lanes * 2).await;
                        break 'outer;
                    }
                    _ = observe.tick() => {
                        self.observe().await;
                        continue;
                    }
                    next = messages.next() => next,
                };
                let message = match next {
                    Some(Ok(m)) => m,
                    Some(Err(err)) => {
                        // Heartbeats missed, a consumer leader change, the connection
                        // dropped: pull again, after a backoff if it keeps happening.
                        self.bus.metrics().pull_interruptions.inc();
                        if !self.pull_failed(&mut attempt, err.to_string(), &cancel).await {
                            break 'outer;
                        }
                        break;
                    }
                    None => break,
                };
                if attempt > 0 {
                    self.pull_recovered(&mut attempt);
                }
                let fact = received(&message);
                let idx = lane_of(&ordering_key(&fact), lanes);
                // A busy lane must not hold the fact past a stop: waiting for room, the
                // stop still hands it (and the rest of the pull) back.
                let room = tokio::select! {
                    () = cancel.cancelled() => {
                        hand_back_pulled(&self.bus, messages, Some(message), lanes * 2).await;
                        break 'outer;
                    }
                    room = senders[idx].reserve() => room,
                };
                match room {
                    Ok(permit) => permit.send(message),
                    Err(_) => break 'outer,
                }
            }
        }
        drop(senders);
        while lanes_running.join_next().await.is_some() {}
        Ok(())
    }
}

fn received(message: &Message) -> ReceivedFact {
    let (delivered, stream_sequence) =
        message.info().map(|i| (i.delivered.max(1) as u64, i.stream_sequence)).unwrap_or((1, 0));
    ReceivedFact {
        subject: message.subject.to_string(),
        payload: message.payload.clone(),
        headers: message.headers.clone().unwrap_or_default(),
        delivered,
        stream_sequence,
    }
}

/// Hands back (NAK, no delay) what a stopping sink has not started, so another replica
/// takes it at once instead of after `ack_wait`.
async fn hand_back(bus: &Bus, message: &Message) {
    bus.metrics().handed_back.inc();
    if let Err(e) = message.ack_with(AckKind::Nak(None)).await {
        tracing::debug!(error = %e, "a fact could not be handed back; it returns after ack_wait");
    }
}

/// On shutdown: the facts the current pull has already brought in (at most one batch,
/// `batch`, besides `held`) are handed back rather than left to time out. They are
/// collected first and handed back once the pull is closed: handed back while it is open,
/// JetStream would deliver them to it again. Bounded in count and time, so a stopping
/// replica does not go on pulling a backlog only to hand it back.
async fn hand_back_pulled(
    bus: &Bus,
    mut messages: async_nats::jetstream::consumer::pull::Stream,
    held: Option<Message>,
    batch: usize,
) {
    let mut pulled: Vec<Message> = held.into_iter().collect();
    let until = Instant::now() + Duration::from_secs(1);
    while pulled.len() < batch + 1 {
        // A fact the server has sent can be a moment away on a busy node.
        let wait = until.saturating_duration_since(Instant::now()).min(Duration::from_millis(250));
        let Ok(Some(Ok(message))) = tokio::time::timeout(wait, messages.next()).await else { break };
        pulled.push(message);
    }
    // Closing the pull withdraws its interest: JetStream then gives the pull request up
    // instead of delivering what is handed back to it.
    drop(messages);
    for message in &pulled {
        hand_back(bus, message).await;
    }
    if !pulled.is_empty() {
        tracing::info!(facts = pulled.len(), "stopping: facts pulled but not started handed back");
    }
}

async fn lane<H: FactHandler>(
    mut rx: mpsc::Receiver<Message>,
    handler: Arc<H>,
    bus: Bus,
    config: ConsumerConfig,
    stop: CancellationToken,
) {
    while let Some(message) = rx.recv().await {
        if stop.is_cancelled() {
            hand_back(&bus, &message).await;
            continue;
        }
        let fact = received(&message);
        let span = tracing::info_span!(
            sre_contracts::spans::FACT,
            subject = %fact.subject,
            seq = fact.stream_sequence,
            delivered = fact.delivered,
            correlation_id = %fact.correlation_id(),
        );
        let _ = span.set_parent(crate::extract_context(&fact.headers));
        async {
            let started = Instant::now();
            let disposition = working(handler.handle(fact.clone()), &message, config.ack_wait).await;
            let outcome = settle(&bus, &config, &message, &fact, disposition).await;
            bus.metrics().fact_seconds.observe(started.elapsed().as_secs_f64());
            bus.metrics()
                .facts
                .get_or_create(&FactLabels { message_type: crate::metrics::fact_label(&fact.subject), outcome })
                .inc();
        }
        .instrument(span)
        .await;
    }
}

/// Runs a handler while telling JetStream the fact is still being worked on (`+WPI`
/// every third of `ack_wait`), so a handler that waits on a vendor's rate limit or a slow
/// answer is not redelivered to another replica meanwhile; a crashed one stops telling,
/// and its fact comes back after `ack_wait` as before.
async fn working<F: std::future::Future<Output = Disposition>>(
    handle: F,
    message: &Message,
    ack_wait: Duration,
) -> Disposition {
    let every = (ack_wait / 3).max(Duration::from_millis(100));
    let mut handle = std::pin::pin!(handle);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            disposition = &mut handle => return disposition,
            _ = tick.tick() => {
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(error = %e, "in-progress ack not sent");
                }
            }
        }
    }
}

async fn settle(
    bus: &Bus,
    config: &ConsumerConfig,
    message: &Message,
    fact: &ReceivedFact,
    disposition: Disposition,
) -> FactOutcome {
    let last_delivery = config.max_deliver > 0 && fact.delivered >= config.max_deliver as u64;
    let result = match disposition {
        Disposition::Ack => message.double_ack().await.map(|()| FactOutcome::Acked),
        Disposition::Retry { after, reason } if !last_delivery => {
            tracing::info!(reason = %reason, retry_in_ms = after.as_millis() as u64, "fact handed back for retry");
            message.ack_with(AckKind::Nak(Some(after))).await.map(|()| FactOutcome::Retried)
        }
        Disposition::Retry { reason, .. } => {
            let reason = format!("gave up after {} deliveries: {reason}", fact.delivered);
            return dead_letter(bus, config, message, fact, &reason).await;
        }
        Disposition::DeadLetter { reason } => {
            return dead_letter(bus, config, message, fact, &reason).await;
        }
    };
    result.unwrap_or_else(|err| {
        // The ack did not reach the server: the fact will be redelivered and handled
        // again, which handlers are built for (idempotent).
        tracing::warn!(error = %err, "acknowledging a fact failed");
        FactOutcome::Retried
    })
}

/// Records the fact in the dead-letter stream, then TERMs it. If the record cannot be
/// stored, the fact is NAKed instead: it is never dropped without a record.
async fn dead_letter(
    bus: &Bus,
    config: &ConsumerConfig,
    message: &Message,
    fact: &ReceivedFact,
    reason: &str,
) -> FactOutcome {
    let mut h = fact.headers.clone();
    h.insert(headers::DEAD_LETTER_REASON, reason);
    h.insert(headers::DEAD_LETTER_CONSUMER, config.durable_name.as_str());
    h.insert(headers::DEAD_LETTER_SUBJECT, fact.subject.as_str());
    h.insert(headers::DEAD_LETTER_SEQUENCE, fact.stream_sequence.to_string().as_str());
    h.insert(headers::DEAD_LETTER_DELIVERIES, fact.delivered.to_string().as_str());
    // One record per fact and consumer, however often this runs.
    let msg_id = format!("dlq:{}:{}", config.durable_name, fact.stream_sequence);
    h.insert(headers::MSG_ID, msg_id.as_str());
    let subject = format!("{}.{}", subjects::DEAD_LETTER_PREFIX, config.durable_name);
    let stored = async {
        let ack = bus.jetstream().publish_with_headers(subject, h, fact.payload.clone()).await?;
        ack.await.map(|_| ())
    }
    .await;
    match stored {
        Ok(()) => {
            tracing::warn!(reason = %reason, "fact dead-lettered");
            if let Err(err) = message.ack_with(AckKind::Term).await {
                tracing::warn!(error = %err, "terminating a dead-lettered fact failed");
            }
            FactOutcome::DeadLettered
        }
        Err(err) => {
            tracing::error!(error = %err, "could not store dead letter, handing the fact back");
            let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(5)))).await;
            FactOutcome::Retried
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sre_contracts::BusMessage;
    use sre_contracts::domain::v1::{IncidentCreated, IncidentResolved};

    #[test]
    fn incident_facts_are_ordered_by_incident() {
        let created = IncidentCreated { incident_id: "inc-1".into(), ..Default::default() };
        let fact = ReceivedFact {
            subject: IncidentCreated::SUBJECT.to_owned(),
            payload: created.encode_to_vec().into(),
            headers: HeaderMap::new(),
            delivered: 1,
            stream_sequence: 1,
        };
        assert_eq!(ordering_key(&fact), "inc-1");
        let resolved = IncidentResolved { incident_id: "inc-1".into(), reason: "ok".into(), ..Default::default() };
        let fact2 = ReceivedFact {
            subject: IncidentResolved::SUBJECT.to_owned(),
            payload: resolved.encode_to_vec().into(),
            ..fact.clone()
        };
        assert_eq!(lane_of(&ordering_key(&fact), 8), lane_of(&ordering_key(&fact2), 8));
        assert_eq!(fact2.message_name(), "IncidentResolved");
    }
}
