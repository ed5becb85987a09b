//! The intent-only publisher.

use std::time::Duration;

use tokio::time::Instant;

use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage as Publish;
use bytes::Bytes;
use futures::future::join_all;

use sre_contracts::{Intent, headers};

use crate::Bus;
use crate::metrics::{PublishLabels, PublishOutcome};

/// An encoded intent ready to publish. It can only be made from an [`Intent`], so nothing
/// that holds an `IntentPublisher` can put a fact on the bus.
#[derive(Debug, Clone)]
pub struct Envelope {
    subject: &'static str,
    message_type: &'static str,
    idempotency_key: String,
    correlation_id: String,
    body: Bytes,
}

impl Envelope {
    /// Encodes `intent`. Its `meta.idempotency_key` must be set: it becomes `Nats-Msg-Id`.
    pub fn intent<M: Intent>(intent: &M) -> Result<Self, PublishError> {
        let meta = intent.meta().ok_or(PublishError::MissingIdempotencyKey(M::TYPE))?;
        if meta.idempotency_key.is_empty() {
            return Err(PublishError::MissingIdempotencyKey(M::TYPE));
        }
        Ok(Self {
            subject: M::SUBJECT,
            message_type: M::TYPE,
            idempotency_key: meta.idempotency_key.clone(),
            correlation_id: meta.correlation_id.clone(),
            body: Bytes::from(intent.encode_to_vec()),
        })
    }

    /// The subject it will be published on.
    pub fn subject(&self) -> &'static str {
        self.subject
    }

    /// The idempotency key (`Nats-Msg-Id`).
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }

    /// The headers of this envelope, with the batch's trace context (`trace`).
    fn headers(&self, trace: &HeaderMap) -> HeaderMap {
        let mut h = trace.clone();
        h.insert(headers::CONTENT_TYPE, headers::CONTENT_TYPE_PROTOBUF);
        h.insert(headers::MESSAGE_TYPE, self.message_type);
        if !self.correlation_id.is_empty() {
            h.insert(headers::CORRELATION_ID, self.correlation_id.as_str());
        }
        h
    }
}

/// What JetStream did with a published intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Stream sequence (of the original, for a duplicate).
    pub sequence: u64,
    /// True when the same `Nats-Msg-Id` was stored within the duplicate window: nothing
    /// new was stored, and that is success.
    pub duplicate: bool,
}

/// Why an intent was not stored.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The intent has no idempotency key.
    #[error("{0} has no meta.idempotency_key")]
    MissingIdempotencyKey(&'static str),
    /// The bus is not connected, did not ack in time, or has no stream for the subject:
    /// nothing can be promised; the caller should answer "try again".
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    /// JetStream refused the message (e.g. too large).
    #[error("bus rejected the message: {0}")]
    Rejected(String),
}

impl PublishError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PublishError::Unavailable(_))
    }
}

fn classify(err: &async_nats::jetstream::context::PublishError) -> PublishError {
    match err.kind() {
        // JetStream answers "no responders" both when no stream takes the subject and when
        // the stream has no leader (an election, a node down on a cluster): on a bus whose
        // streams are in place it is the latter, and it passes within seconds.
        PublishErrorKind::StreamNotFound => PublishError::Unavailable(
            "no stream leader answered for the subject (a leader election or a bus node down; it passes within \
             seconds, or the stream is missing)"
                .to_owned(),
        ),
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending => {
            PublishError::Unavailable(err.to_string())
        }
        PublishErrorKind::Other => PublishError::Unavailable(err.to_string()),
        _ => PublishError::Rejected(err.to_string()),
    }
}

/// The pause before a publish is tried again after no stream leader answered (jittered up
/// to twice as long).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Publishes intents and waits for JetStream to store them; cheap to clone.
#[derive(Debug, Clone)]
pub struct IntentPublisher {
    js: async_nats::jetstream::Context,
    bus: Bus,
}

impl IntentPublisher {
    pub(crate) fn new(js: async_nats::jetstream::Context, bus: Bus) -> Self {
        Self { js, bus }
    }

    /// Publishes one intent and waits for its ack.
    pub async fn publish<M: Intent>(&self, intent: &M) -> Result<Published, PublishError> {
        let envelope = Envelope::intent(intent)?;
        let mut acks = self.publish_all(std::slice::from_ref(&envelope), None).await;
        acks.pop().unwrap_or_else(|| Err(PublishError::Unavailable("no ack".to_owned())))
    }

    /// Publishes every envelope with all acks in flight at once, then waits for all of
    /// them (within `deadline` when given, else the configured ack timeout). The result
    /// has one entry per envelope, in order.
    ///
    /// While the client is reconnecting (a move off a bus node in lame-duck mode takes
    /// milliseconds), it waits up to [`RECONNECT_GRACE`](crate::connection::RECONNECT_GRACE)
    /// for the connection, then fails fast: a caller that must promise durability gets its
    /// answer without waiting out a whole outage. An envelope whose connection is replaced
    /// before its ack came is sent again at once on the new one, under the same
    /// `Nats-Msg-Id`: JetStream stores it once.
    pub async fn publish_all(
        &self,
        envelopes: &[Envelope],
        deadline: Option<Duration>,
    ) -> Vec<Result<Published, PublishError>> {
        let started = Instant::now();
        let deadline = deadline.unwrap_or(self.bus.config().ack_timeout);
        let grace = crate::connection::RECONNECT_GRACE.min(deadline);
        if !self.bus.connected_within(grace).await {
            return envelopes
                .iter()
                .map(|e| {
                    self.count(e.message_type, PublishOutcome::Failed);
                    Err(PublishError::Unavailable("not connected to nats".to_owned()))
                })
                .collect();
        }
        // One trace context for the batch: its intents come from one piece of work.
        let mut trace = HeaderMap::new();
        crate::inject_context(&mut trace);
        let trace = &trace;
        let end = started + deadline;
        let sends = envelopes.iter().map(|e| async move {
            loop {
                let mut epoch = self.bus.epoch();
                let sent_on = *epoch.borrow_and_update();
                // Headers first: `headers()` replaces the map, `message_id()` adds to it.
                let publish = Publish::build()
                    .headers(e.headers(trace))
                    .message_id(e.idempotency_key.as_str())
                    .payload(e.body.clone());
                let attempt = async {
                    let ack = self.js.send_publish(e.subject, publish).await.map_err(|err| classify(&err))?.await;
                    ack.map(|ack| Published { sequence: ack.sequence, duplicate: ack.duplicate })
                        .map_err(|err| classify(&err))
                };
                tokio::select! {
                    result = attempt => {
                        let Err(err) = &result else { return result };
                        // A failure caused by the connection going away: try again on the
                        // new one while there is time.
                        if *self.bus.epoch().borrow() != sent_on && Instant::now() < end {
                            continue;
                        }
                        // No stream leader answered (an election: a node restarting, in
                        // lame-duck mode or lost) or no ack came: try again shortly under the
                        // same Nats-Msg-Id while the caller's deadline allows, so a moment
                        // without a leader is not an error the sender has to retry.
                        let pause = RETRY_PAUSE.mul_f64(1.0 + rand::random::<f64>());
                        if err.is_retryable() && Instant::now() + pause * 2 < end {
                            tokio::time::sleep(pause).await;
                            if self.bus.connected_within(end.saturating_duration_since(Instant::now())).await {
                                continue;
                            }
                        }
                        return result;
                    }
                    _ = epoch.changed() => {
                        if !self.bus.connected_within(end.saturating_duration_since(Instant::now())).await {
                            return Err(PublishError::Unavailable("the connection was lost and not re-established in time".to_owned()));
                        }
                    }
                }
            }
        });
        // One deadline for the whole batch. Acks that did not arrive in time count as not
        // stored, though the server may still store them: a retry with the same key is
        // then a duplicate, not a second intent.
        let results = match tokio::time::timeout(deadline, join_all(sends)).await {
            Ok(results) => results,
            Err(_) => envelopes
                .iter()
                .map(|_| Err(PublishError::Unavailable(format!("no ack within {deadline:?}"))))
                .collect(),
        };
        for (e, result) in envelopes.iter().zip(&results) {
            let outcome = match result {
                Ok(p) if p.duplicate => PublishOutcome::Duplicate,
                Ok(_) => PublishOutcome::Stored,
                Err(_) => PublishOutcome::Failed,
            };
            self.count(e.message_type, outcome);
        }
        self.bus.metrics().publish_seconds.observe(started.elapsed().as_secs_f64());
        results
    }

    fn count(&self, message_type: &'static str, outcome: PublishOutcome) {
        self.bus.metrics().published.get_or_create(&PublishLabels { message_type, outcome }).inc();
    }
}
