//! Reading what reached the bus, and waiting for a condition without a timed sleep.

use std::future::Future;
use std::time::{Duration, Instant};

/// Every message still in `stream`, in order, as `(subject, payload)`.
pub async fn stream_messages(nats_url: &str, stream: &str) -> Vec<(String, bytes::Bytes)> {
    let Ok(client) = async_nats::connect(nats_url).await else { return Vec::new() };
    let js = async_nats::jetstream::new(client);
    let Ok(stream) = js.get_stream(stream).await else { return Vec::new() };
    let Ok(info) = stream.get_info().await else { return Vec::new() };
    let mut out = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push((m.subject.to_string(), m.payload));
        }
    }
    out
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
