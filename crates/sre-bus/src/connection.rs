//! The connection to NATS and what readiness knows about it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{ConnectOptions, Event};
use sre_contracts::domain::v1::Source;
use sre_resilience::Backoff;
use tokio_util::sync::CancellationToken;

use crate::{BusConfig, BusMetrics, IntentPublisher, TopologyError, topology};

/// The bus could not be reached or configured.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The client could not be set up (bad URL, unreadable credentials file).
    #[error("connecting to nats: {0}")]
    Connect(#[from] async_nats::ConnectError),
    /// The seed list or its credentials are not usable (the reason names the seed, never
    /// a password).
    #[error("runtime.bus.url: {0}")]
    Seeds(String),
    /// Reading the credentials file failed.
    #[error("reading nats credentials file: {0}")]
    Credentials(#[from] std::io::Error),
    /// Streams could not be created or updated.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// Shutdown came before the bus was ready.
    #[error("shutdown before the bus was ready")]
    Cancelled,
}

/// A connection to the domain bus; cheap to clone.
#[derive(Debug, Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    config: Arc<BusConfig>,
    source: Source,
    metrics: BusMetrics,
    topology_ready: Arc<tokio::sync::watch::Sender<bool>>,
    /// The last operation the server refused to this user (a permissions violation).
    refused: Arc<std::sync::Mutex<Option<String>>>,
}

/// How nats-server words a refusal of this user's permissions (in its `-ERR`).
const PERMISSIONS_VIOLATION: &str = "Permissions Violation";

impl Bus {
    /// Connects with reconnect and backoff. Returns once the client exists, even while the
    /// server is unreachable: the client keeps trying, and [`Bus::is_ready`] says when it
    /// is connected. `source` names this service instance in every message it sends.
    pub async fn connect(config: BusConfig, source: Source, metrics: BusMetrics) -> Result<Self, ConnectError> {
        let events = metrics.clone();
        let refused: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let refusals = refused.clone();
        let mut options = ConnectOptions::new()
            .name(format!("{}/{}", source.service, source.instance))
            .connection_timeout(config.connect_timeout)
            .retry_on_initial_connect()
            .reconnect_delay_callback(|attempts| {
                Backoff { initial: Duration::from_millis(100), max_delay: Duration::from_secs(5), ..Backoff::default() }
                    .delay(u32::try_from(attempts).unwrap_or(u32::MAX), rand::random::<f64>())
            })
            .event_callback(move |event| {
                let metrics = events.clone();
                let refusals = refusals.clone();
                async move {
                    match event {
                        Event::Connected => {
                            metrics.connected.set(1);
                            tracing::info!("connected to nats");
                        }
                        Event::Disconnected => {
                            metrics.connected.set(0);
                            metrics.reconnects.inc();
                            tracing::warn!("disconnected from nats");
                        }
                        // The server refused an operation to this service's bus user: the
                        // operator's to fix (deploy/nats), so a warning, kept for readiness.
                        other if other.to_string().contains(PERMISSIONS_VIOLATION) => {
                            tracing::warn!(event = %other, "the bus refused an operation to this user");
                            // `… Permissions Violation for Publish to "<subject>"`
                            let text = other.to_string();
                            let detail = text.split(PERMISSIONS_VIOLATION).nth(1).unwrap_or(&text);
                            let detail = detail.trim_start().strip_prefix("for ").unwrap_or(detail);
                            *refusals.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                                Some(format!("refused {detail}"));
                        }
                        other => tracing::info!(event = %other, "nats event"),
                    }
                }
            });
        if let Some(path) = &config.credentials_file {
            options = options.credentials_file(path).await?;
        }
        // Every seed, credentials given once (in the URLs or separately): they go into the
        // CONNECT, the seeds are the addresses; the client starts on any seed that is up.
        let (seeds, login) = config.login().map_err(ConnectError::Seeds)?;
        if let Some((user, password)) = login {
            use secrecy::ExposeSecret;
            options = options.user_and_password(user, password.0.expose_secret().to_owned());
        }
        let client = options.connect(seeds).await?;
        let js = jetstream::ContextBuilder::new()
            .timeout(config.ack_timeout)
            .max_ack_inflight(5_000)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(Self {
            client,
            js,
            topology_ready: Arc::new(tokio::sync::watch::Sender::new(!config.manage_streams)),
            refused,
            config: Arc::new(config),
            source,
            metrics,
        })
    }

    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Ready: connected, and the streams are in place. While they are not, says what the
    /// server refused, if it did (e.g. a user without the right to manage streams).
    pub fn readiness(&self) -> Result<(), String> {
        if !self.is_connected() {
            return Err("not connected to nats".to_owned());
        }
        if !*self.topology_ready.borrow() {
            let refused = self.refused.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            return Err(match refused {
                Some(r) => format!(
                    "streams not yet in place: the bus {r}; give this user that right, or provision \
                     the streams (deploy/nats/jetstream) and set runtime.bus.manage_streams: false"
                ),
                None => "streams not yet in place".to_owned(),
            });
        }
        Ok(())
    }

    /// Whether the server this client is connected to is part of a cluster (it names one
    /// in its INFO); `None` until a server's INFO has arrived (the client connects in the
    /// background), when nothing can be decided from it.
    pub fn is_clustered(&self) -> Option<bool> {
        let info = self.client.server_info();
        if info.server_id.is_empty() {
            return None;
        }
        Some(info.cluster.as_deref().is_some_and(|c| !c.is_empty()))
    }

    /// How many servers the cluster advertises right now (its `connect_urls`, itself among
    /// them; fewer while nodes are down, none when it does not advertise), for logs.
    pub fn servers_seen(&self) -> usize {
        let mut urls = self.client.server_info().connect_urls;
        urls.sort();
        urls.dedup();
        urls.len().max(1)
    }

    /// The replicas a stream or bucket this service creates gets: the configuration's
    /// `runtime.bus.streams.replicas`, `auto` meaning 3 on a cluster, 1 on a single server.
    /// `None` while `auto` cannot be decided yet (no server's INFO yet): creating then
    /// would make a cluster's streams R1.
    pub fn replicas(&self) -> Option<usize> {
        match self.config.streams.replicas {
            crate::Replicas::Fixed(n) => Some(n),
            auto => self.is_clustered().map(|clustered| auto.resolve(clustered)),
        }
    }

    /// Notes one more stream or bucket found with fewer replicas than it should have.
    pub(crate) fn under_replicated(&self, name: &str, has: usize, wanted: usize) {
        self.metrics.under_replicated.inc();
        tracing::warn!(stream = %name, replicas = has, wanted, servers_seen = self.servers_seen(),
            "under-replicated: losing one bus node may lose this state; raise its replicas (nats stream edit --replicas) or give this user the right to");
    }

    /// Creates or raises the streams (when `manage_streams`), retrying with backoff until
    /// it succeeds or `cancel` fires. Safe to run from many replicas at once. Never lowers
    /// what an operator configured (replicas, retention, dedup window).
    pub async fn ensure_topology(&self, cancel: &CancellationToken) -> Result<(), ConnectError> {
        if !self.config.manage_streams {
            return Ok(());
        }
        let backoff =
            Backoff { initial: Duration::from_millis(200), max_delay: Duration::from_secs(5), ..Backoff::default() };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = match self.replicas() {
                Some(replicas) => topology::ensure_streams(&self.js, &self.config.streams, replicas)
                    .await
                    .map(|under| (under, replicas)),
                None => Err(TopologyError { stream: "*", message: "not connected to a server yet".to_owned() }),
            };
            match result {
                Ok((under, replicas)) => {
                    for (name, has) in under {
                        self.under_replicated(name, has, replicas);
                    }
                    self.topology_ready.send_replace(true);
                    tracing::info!("streams in place");
                    return Ok(());
                }
                Err(err) => {
                    tracing::warn!(error = %err, attempt, "could not put streams in place, retrying");
                    let wait = backoff.delay(attempt, rand::random::<f64>());
                    tokio::select! {
                        () = cancel.cancelled() => return Err(ConnectError::Cancelled),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Waits until the streams are in place (at once when streams are not managed here).
    pub async fn wait_for_topology(&self) {
        let mut rx = self.topology_ready.subscribe();
        // The sender lives as long as this Bus, so the wait cannot fail.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// The publisher for intents, the only kind of message an adapter may publish.
    pub fn intent_publisher(&self) -> IntentPublisher {
        IntentPublisher::new(self.js.clone(), self.clone())
    }

    /// Flushes what the client has buffered, then closes the connection.
    pub async fn drain(&self) {
        if let Err(err) = self.client.flush().await {
            tracing::warn!(error = %err, "flushing nats on shutdown failed");
        }
        if let Err(err) = self.client.drain().await {
            tracing::warn!(error = %err, "draining nats on shutdown failed");
        }
    }

    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The service instance this bus publishes as.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The bus's metrics.
    pub fn metrics(&self) -> &BusMetrics {
        &self.metrics
    }

    /// The configuration in force.
    pub fn config(&self) -> &BusConfig {
        &self.config
    }
}
