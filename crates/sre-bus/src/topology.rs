//! The streams of the domain bus, created or updated idempotently.

use async_nats::jetstream::{self, stream};
use sre_contracts::{streams, subjects};

use crate::StreamSettings;

/// The topology could not be put in place.
#[derive(Debug, thiserror::Error)]
#[error("stream {stream}: {message}")]
pub struct TopologyError {
    /// The stream.
    pub stream: &'static str,
    /// What the server said.
    pub message: String,
}

/// The three streams of the bus with `settings` applied, at `replicas`.
pub(crate) fn stream_configs(settings: &StreamSettings, replicas: usize) -> [stream::Config; 3] {
    let base = |name: &str, subject: &str, description: &str| stream::Config {
        name: name.to_owned(),
        description: Some(description.to_owned()),
        subjects: vec![subject.to_owned()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: settings.max_age,
        duplicate_window: settings.duplicate_window.min(settings.max_age),
        num_replicas: replicas,
        ..Default::default()
    };
    let mut dead_letter = base(
        streams::DEAD_LETTER,
        subjects::DEAD_LETTER_ALL,
        "Facts consumers gave up on, with the reason (see sre-bus design.md)",
    );
    dead_letter.max_age = settings.dead_letter_max_age;
    dead_letter.duplicate_window = settings.duplicate_window.min(settings.dead_letter_max_age);
    [
        base(streams::INTENTS, subjects::INTENTS_ALL, "Intents adapters ask the SRE domain to act on"),
        base(streams::FACTS, subjects::FACTS_ALL, "Facts the SRE domain decided"),
        dead_letter,
    ]
}

/// The domain streams as JetStream API JSON (`nats stream add --config FILE`), named: what
/// `deploy/nats/jetstream/` provisions where adapters may not manage streams, on a cluster
/// or a single server.
pub fn stream_definitions(settings: &StreamSettings, clustered: bool) -> Vec<(&'static str, serde_json::Value)> {
    let names = [streams::INTENTS, streams::FACTS, streams::DEAD_LETTER];
    names
        .into_iter()
        .zip(stream_configs(settings, settings.replicas.resolve(clustered)))
        .map(|(name, config)| (name, serde_json::to_value(config).expect("a stream config serializes")))
        .collect()
}

/// `wanted` where it raises a limit of `existing`, `existing` wherever it has more: an
/// adapter never lowers the replicas, retention or dedup window an operator gave a
/// stream, and keeps any subjects it has besides ours. `None` when nothing would change.
pub(crate) fn merged(existing: &stream::Config, wanted: &stream::Config) -> Option<stream::Config> {
    let more = |a: i64, b: i64| if a <= 0 || b <= 0 { -1 } else { a.max(b) };
    let longer = |a: std::time::Duration, b: std::time::Duration| {
        if a.is_zero() || b.is_zero() { std::time::Duration::ZERO } else { a.max(b) }
    };
    let mut next = existing.clone();
    next.num_replicas = existing.num_replicas.max(wanted.num_replicas);
    next.max_age = longer(existing.max_age, wanted.max_age);
    next.duplicate_window = existing.duplicate_window.max(wanted.duplicate_window);
    next.max_messages = more(existing.max_messages, wanted.max_messages);
    next.max_bytes = more(existing.max_bytes, wanted.max_bytes);
    for subject in &wanted.subjects {
        if !next.subjects.contains(subject) {
            next.subjects.push(subject.clone());
        }
    }
    (next != *existing).then_some(next)
}

pub(crate) fn not_found(e: &async_nats::jetstream::context::GetStreamError) -> bool {
    matches!(
        e.kind(),
        async_nats::jetstream::context::GetStreamErrorKind::JetStream(j)
            if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

/// Creates each stream, or raises an existing one to the wanted settings (never lowers
/// it: see [`merged`]). Safe when many replicas run it at once: a lost race to create
/// ends in a look at what the winner made. Returns the streams found with fewer
/// replicas than `replicas` that could not be raised (e.g. no right to update them).
pub(crate) async fn ensure_streams(
    js: &jetstream::Context,
    settings: &StreamSettings,
    replicas: usize,
) -> Result<Vec<(&'static str, usize)>, TopologyError> {
    let names = [streams::INTENTS, streams::FACTS, streams::DEAD_LETTER];
    let mut under = Vec::new();
    for (name, config) in names.into_iter().zip(stream_configs(settings, replicas)) {
        let mut tries = 0;
        loop {
            tries += 1;
            match js.get_stream(name).await {
                Ok(mut existing) => {
                    let current = existing.info().await.map(|i| i.config.clone());
                    let current = match current {
                        Ok(c) => c,
                        Err(e) if tries < 2 => {
                            tracing::debug!(stream = name, error = %e, "stream info failed, looking again");
                            continue;
                        }
                        Err(e) => return Err(TopologyError { stream: name, message: e.to_string() }),
                    };
                    if let Some(next) = merged(&current, &config) {
                        tracing::info!(stream = name, replicas = next.num_replicas, "raising the stream's settings");
                        match js.update_stream(next).await {
                            Ok(_) => {}
                            Err(e) if current.num_replicas < config.num_replicas => {
                                tracing::warn!(stream = name, replicas = current.num_replicas, wanted = config.num_replicas,
                                    error = %e, "stream under-replicated and not raised");
                                under.push((name, current.num_replicas));
                            }
                            Err(e) => tracing::warn!(stream = name, error = %e, "stream settings not raised"),
                        }
                    }
                    break;
                }
                Err(e) if !not_found(&e) => {
                    // No answer (a leader election, a node down): the caller backs off.
                    return Err(TopologyError { stream: name, message: e.to_string() });
                }
                Err(_) => match js.create_stream(config.clone()).await {
                    Ok(_) => break,
                    // Another replica created it meanwhile: look at what it made.
                    Err(_) if tries < 3 => continue,
                    Err(e) => return Err(TopologyError { stream: name, message: e.to_string() }),
                },
            }
        }
    }
    Ok(under)
}
