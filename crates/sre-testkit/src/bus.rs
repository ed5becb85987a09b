//! Reading what reached the bus, and waiting for a condition without a timed sleep.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Every message still in `stream`, in order, as `(subject, payload)`.
pub async fn stream_messages(nats_url: &str, stream: &str) -> Vec<(String, bytes::Bytes)> {
    stream_records(nats_url, stream).await.into_iter().map(|(subject, _, payload)| (subject, payload)).collect()
}

/// Every message still in `stream`, with its headers: `(subject, headers, payload)`.
pub async fn stream_records(nats_url: &str, stream: &str) -> Vec<(String, async_nats::HeaderMap, bytes::Bytes)> {
    let Ok(client) = async_nats::connect(nats_url).await else { return Vec::new() };
    read_stream(&async_nats::jetstream::new(client), stream).await
}

/// Every message still in `stream`, read with `js` (e.g. a client with credentials).
pub async fn read_stream(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Vec<(String, async_nats::HeaderMap, bytes::Bytes)> {
    let Ok(stream) = js.get_stream(stream).await else { return Vec::new() };
    let Ok(info) = stream.get_info().await else { return Vec::new() };
    let mut out = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push((m.subject.to_string(), m.headers, m.payload));
        }
    }
    out
}

/// Publishes `payload` on `subject` with `Nats-Msg-Id` = `msg_id` and waits for the ack
/// (as the SRE domain publishes its facts).
pub async fn publish(nats_url: &str, subject: &str, msg_id: &str, payload: Vec<u8>) {
    let client = async_nats::connect(nats_url).await.expect("nats client");
    let js = async_nats::jetstream::new(client);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(sre_contracts::headers::MSG_ID, msg_id);
    js.publish_with_headers(subject.to_owned(), headers, payload.into()).await.expect("publish").await.expect("stored");
}

/// Polls `cond` every 50 ms until it holds; panics naming `what` after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < within, "timed out after {within:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
