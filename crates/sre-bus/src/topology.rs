//! The streams of the domain bus, created or updated idempotently.

use async_nats::jetstream::{self, stream};
use sre_contracts::{streams, subjects};

use crate::StreamSettings;

/// The topology could not be put in place.
#[derive(Debug, thiserror::Error)]
#[error("stream {stream}: {source}")]
pub struct TopologyError {
    /// The stream.
    pub stream: &'static str,
    /// What the server said.
    #[source]
    pub source: async_nats::jetstream::context::CreateStreamError,
}

/// The three streams of the bus with `settings` applied.
pub(crate) fn stream_configs(settings: &StreamSettings) -> [stream::Config; 3] {
    let base = |name: &str, subject: &str, description: &str| stream::Config {
        name: name.to_owned(),
        description: Some(description.to_owned()),
        subjects: vec![subject.to_owned()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: settings.max_age,
        duplicate_window: settings.duplicate_window.min(settings.max_age),
        num_replicas: settings.replicas,
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
/// `deploy/nats/jetstream/` provisions where adapters may not manage streams.
pub fn stream_definitions(settings: &StreamSettings) -> Vec<(&'static str, serde_json::Value)> {
    let names = [streams::INTENTS, streams::FACTS, streams::DEAD_LETTER];
    names
        .into_iter()
        .zip(stream_configs(settings))
        .map(|(name, config)| (name, serde_json::to_value(config).expect("a stream config serializes")))
        .collect()
}

/// Creates each stream, or updates it to the wanted settings. Safe when many replicas run
/// it at once: creating an existing stream with the same settings succeeds, and a lost
/// race to create ends in an update.
pub(crate) async fn ensure_streams(js: &jetstream::Context, settings: &StreamSettings) -> Result<(), TopologyError> {
    let names = [streams::INTENTS, streams::FACTS, streams::DEAD_LETTER];
    for (name, config) in names.into_iter().zip(stream_configs(settings)) {
        let mut attempt = js.create_or_update_stream(config.clone()).await;
        if attempt.is_err() {
            // Another replica may have created it between our update and create.
            attempt = js.create_or_update_stream(config).await;
        }
        attempt.map_err(|source| TopologyError { stream: name, source })?;
    }
    Ok(())
}
