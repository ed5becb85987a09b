//! The connection to NATS and what readiness knows about it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{ConnectOptions, Event};
use sre_contracts::domain::v1::Source;
use sre_resilience::Backoff;
use tokio_util::sync::CancellationToken;

use tokio::time::Instant;

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
    link: Arc<Link>,
    /// Stops the connection's own watch (pings, lame-duck moves) when the bus is drained.
    watch: CancellationToken,
}

/// How nats-server words a refusal of this user's permissions (in its `-ERR`).
const PERMISSIONS_VIOLATION: &str = "Permissions Violation";
/// How long a server found dead (frozen, or going away in lame-duck mode) is passed over
/// when choosing where to reconnect.
const AVOID_FOR: Duration = Duration::from_secs(60);
/// How long a publish waits for a connection that is being re-established (a move off a
/// server in lame-duck mode takes milliseconds) before it fails.
pub(crate) const RECONNECT_GRACE: Duration = Duration::from_secs(2);

/// What the connection's callbacks and watch share.
#[derive(Debug, Default)]
pub(crate) struct Link {
    /// Bumped at every (re)connection: a publish waiting for its ack sends again when the
    /// connection it was sent on is gone.
    epoch: tokio::sync::watch::Sender<u64>,
    /// The server chosen for the current connection (`host:port`).
    current: std::sync::Mutex<Option<String>>,
    /// A server to pass over until the instant.
    avoid: std::sync::Mutex<Option<(String, Instant)>>,
    /// Why the server last refused this user's credentials, until a connection succeeds.
    auth_refused: std::sync::Mutex<Option<String>>,
    /// Ask the watch to move off the current server now (lame-duck mode).
    move_off: tokio::sync::Notify,
    /// The liveness round trip is refused by this user's permissions: left to the
    /// client's own pings.
    watchdog_refused: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn addr_key(addr: &async_nats::ServerAddr) -> String {
    format!("{}:{}", addr.host(), addr.port())
}

impl Link {
    /// Passes over the current server for a while.
    fn avoid_current(&self) {
        if let Some(current) = lock(&self.current).clone() {
            *lock(&self.avoid) = Some((current, Instant::now() + AVOID_FOR));
        }
    }

    /// Where to connect next: a server of `pool` other than one passed over, the least
    /// failing first (at random among equals), after a backoff when it failed before.
    fn choose(&self, pool: &[async_nats::Server]) -> Option<async_nats::ReconnectToServer> {
        use rand::seq::SliceRandom;
        let avoid = lock(&self.avoid).clone().filter(|(_, until)| *until > Instant::now()).map(|(a, _)| a);
        let mut candidates: Vec<&async_nats::Server> =
            pool.iter().filter(|s| avoid.as_deref() != Some(addr_key(&s.addr).as_str())).collect();
        if candidates.is_empty() {
            candidates = pool.iter().collect();
        }
        candidates.shuffle(&mut rand::rng());
        candidates.sort_by_key(|s| s.failed_attempts);
        let chosen = candidates.first()?;
        let delay = match chosen.failed_attempts {
            0 => Duration::ZERO,
            n => {
                Backoff { initial: Duration::from_millis(100), max_delay: Duration::from_secs(5), ..Backoff::default() }
                    .delay(u32::try_from(n).unwrap_or(u32::MAX), rand::random::<f64>())
            }
        };
        *lock(&self.current) = Some(addr_key(&chosen.addr));
        Some(async_nats::ReconnectToServer { addr: chosen.addr.clone(), delay: Some(delay) })
    }
}

/// The credentials of a `.creds` file: the user's JWT and the seed that signs the server's
/// nonce.
fn read_creds(path: &std::path::Path) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {}", path.display(), e.kind()))?;
    let block = |begin: &str| -> Option<String> {
        let start = text.find(begin)? + begin.len();
        let rest = &text[start..];
        let rest = &rest[rest.find('\n')? + 1..];
        let end = rest.find("------END")?;
        Some(rest[..end].trim().to_owned())
    };
    let jwt = block("BEGIN NATS USER JWT").ok_or_else(|| format!("{}: no user JWT in it", path.display()))?;
    let seed = block("BEGIN USER NKEY SEED").ok_or_else(|| format!("{}: no NKey seed in it", path.display()))?;
    Ok((jwt, seed))
}

/// Signs `nonce` with `seed`: the signature and the seed's public key.
fn sign(seed: &str, nonce: &[u8]) -> Result<(Vec<u8>, String), String> {
    let pair = nkeys::KeyPair::from_seed(seed).map_err(|e| format!("not an NKey seed: {e}"))?;
    let signature = pair.sign(nonce).map_err(|e| format!("signing: {e}"))?;
    Ok((signature, pair.public_key()))
}

/// Answers the server's challenge from the files, read at each connection: a rotated
/// `.creds` file or seed is used from the next reconnect on.
async fn authenticate(
    creds: Option<std::path::PathBuf>,
    seed_file: Option<std::path::PathBuf>,
    nonce: Vec<u8>,
) -> Result<async_nats::Auth, async_nats::AuthError> {
    let mut auth = async_nats::Auth::new();
    let result = match (creds, seed_file) {
        (Some(path), _) => read_creds(&path).and_then(|(jwt, seed)| {
            let (signature, _) = sign(&seed, &nonce)?;
            auth.jwt = Some(jwt);
            auth.signature = Some(signature);
            Ok(())
        }),
        (None, Some(path)) => {
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {}", path.display(), e.kind())).and_then(|seed| {
                let (signature, public) = sign(seed.trim(), &nonce)?;
                auth.nkey = Some(public);
                auth.signature = Some(signature);
                Ok(())
            })
        }
        (None, None) => Ok(()),
    };
    result.map(|()| auth).map_err(|e| {
        tracing::error!(error = %e, "bus credentials not usable");
        async_nats::AuthError::new(e)
    })
}

/// Whether an event says the server refused this user's credentials.
fn is_auth_refusal(event: &Event) -> bool {
    let text = event.to_string().to_ascii_lowercase();
    ["authorization violation", "authentication", "failed signing nonce"].iter().any(|t| text.contains(t))
}

impl Bus {
    /// Connects with reconnect and backoff. Returns once the client exists, even while the
    /// server is unreachable: the client keeps trying, and [`Bus::readiness`] says when it
    /// is connected. `source` names this service instance in every message it sends.
    pub async fn connect(config: BusConfig, source: Source, metrics: BusMetrics) -> Result<Self, ConnectError> {
        let events = metrics.clone();
        let refused: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let refusals = refused.clone();
        let link = Arc::new(Link::default());
        let inbox = config.inbox_prefix_for(&source.service);
        let (creds, seed) = (config.credentials_file.clone(), config.nkey_seed_file.clone());
        let mut options = if creds.is_some() || seed.is_some() {
            ConnectOptions::with_auth_callback(move |nonce| authenticate(creds.clone(), seed.clone(), nonce))
        } else {
            ConnectOptions::new()
        };
        let (events_link, choose_link) = (link.clone(), link.clone());
        let watchdog_subject = format!("{inbox}.alive");
        options = options
            .name(format!("{}/{}", source.service, source.instance))
            .custom_inbox_prefix(&inbox)
            .connection_timeout(config.connect_timeout)
            // The client's own pings are the backstop; the watch below notices a frozen
            // server within `ping_interval * max_pings_out`.
            .ping_interval(config.ping_interval * (config.max_pings_out + 2))
            .retry_on_initial_connect()
            .reconnect_to_server_callback(move |pool, _info| {
                let link = choose_link.clone();
                async move { link.choose(&pool) }
            })
            .event_callback(move |event| {
                let metrics = events.clone();
                let refusals = refusals.clone();
                let link = events_link.clone();
                let watchdog_subject = watchdog_subject.clone();
                async move {
                    match event {
                        Event::Connected => {
                            metrics.connected.set(1);
                            *lock(&link.auth_refused) = None;
                            link.epoch.send_modify(|e| *e += 1);
                            tracing::info!(server = ?lock(&link.current).as_deref(), "connected to nats");
                        }
                        Event::Disconnected => {
                            metrics.connected.set(0);
                            metrics.reconnects.inc();
                            tracing::warn!("disconnected from nats");
                        }
                        Event::LameDuckMode => {
                            // The node is being restarted (an upgrade): move now, while it
                            // still serves this connection, rather than be cut off.
                            metrics.lame_duck.inc();
                            tracing::info!(server = ?lock(&link.current).as_deref(),
                                "the bus node is going away (lame-duck mode); moving to another");
                            link.avoid_current();
                            link.move_off.notify_one();
                        }
                        Event::SlowConsumer(sid) => {
                            metrics.slow_consumers.inc();
                            tracing::warn!(subscription = sid, "slow consumer: the server dropped messages for it");
                        }
                        other if other.to_string().contains(PERMISSIONS_VIOLATION) => {
                            let text = other.to_string();
                            if text.contains(&watchdog_subject) {
                                if !link.watchdog_refused.swap(true, std::sync::atomic::Ordering::Relaxed) {
                                    tracing::warn!(subject = %watchdog_subject,
                                        "this bus user may not publish to its own inbox: the connection check is \
                                         left to the client's pings (deploy/nats/sre.conf allows it)");
                                }
                                return;
                            }
                            // The server refused an operation to this service's bus user:
                            // the operator's to fix (deploy/nats), so a warning, kept for
                            // readiness. `… Permissions Violation for Publish to "<subject>"`
                            tracing::warn!(event = %other, "the bus refused an operation to this user");
                            let detail = text.split(PERMISSIONS_VIOLATION).nth(1).unwrap_or(&text);
                            let detail = detail.trim_start().strip_prefix("for ").unwrap_or(detail);
                            *lock(&refusals) = Some(format!("refused {detail}"));
                        }
                        other if is_auth_refusal(&other) => {
                            metrics.auth_failures.inc();
                            tracing::error!(event = %other,
                                "the bus refused this service's credentials (check runtime.bus credentials)");
                            *lock(&link.auth_refused) = Some(other.to_string());
                        }
                        other => tracing::info!(event = %other, "nats event"),
                    }
                }
            });
        if let Some(tls) = &config.tls {
            options = options.require_tls(true);
            if let Some(ca) = &tls.ca_file {
                options = options.add_root_certificates(ca.clone());
            }
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
            if tls.handshake_first {
                options = options.tls_first();
            }
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
        let watch = CancellationToken::new();
        tokio::spawn(watch_connection(
            client.clone(),
            link.clone(),
            config.clone(),
            inbox,
            metrics.clone(),
            watch.clone(),
        ));
        Ok(Self {
            client,
            js,
            topology_ready: Arc::new(tokio::sync::watch::Sender::new(!config.manage_streams || config.bind_only)),
            refused,
            config: Arc::new(config),
            source,
            metrics,
            link,
            watch,
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
            return Err(match lock(&self.link.auth_refused).clone() {
                Some(why) => format!(
                    "not connected to nats: the server refused this service's credentials ({why}); check \
                     runtime.bus (credentials_file, nkey_seed_file, user)"
                ),
                None => "not connected to nats".to_owned(),
            });
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
        let started = Instant::now();
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
                    // Not connected yet is how every start begins (the client connects in
                    // the background): only worth a warning once it lasts.
                    let starting = self.replicas().is_none() && started.elapsed() < Duration::from_secs(10);
                    if starting {
                        tracing::debug!(error = %err, attempt, "waiting for the bus before putting streams in place");
                    } else {
                        tracing::warn!(error = %err, attempt, "could not put streams in place, retrying");
                    }
                    let wait = backoff.delay(attempt, rand::random::<f64>());
                    tokio::select! {
                        () = cancel.cancelled() => return Err(ConnectError::Cancelled),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Waits until the bus is connected and the streams are in place (when streams are
    /// not managed here, the connection alone), so what runs next does not begin by
    /// failing against a bus it has not reached yet.
    pub async fn wait_for_topology(&self) {
        let mut epoch = self.epoch();
        let _ = epoch.wait_for(|e| *e > 0).await;
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
        self.watch.cancel();
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

    /// The connection's epoch: it changes at every (re)connection.
    pub(crate) fn epoch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.link.epoch.subscribe()
    }

    /// Waits up to `grace` for the connection (a reconnect under way); whether it is up.
    pub(crate) async fn connected_within(&self, grace: Duration) -> bool {
        if self.is_connected() {
            return true;
        }
        let mut epoch = self.epoch();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            tokio::select! {
                _ = epoch.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if self.is_connected() {
                return true;
            }
        }
        false
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

/// Watches the connection until `stop`: moves off a server in lame-duck mode at once, and
/// checks every `ping_interval` that a message to this client's own inbox comes back
/// through the server; `max_pings_out` missed in a row means the server is dead without
/// having closed the socket (frozen, cut off), and the client moves to another.
async fn watch_connection(
    client: async_nats::Client,
    link: Arc<Link>,
    config: BusConfig,
    inbox: String,
    metrics: BusMetrics,
    stop: CancellationToken,
) {
    use futures::StreamExt;
    let subject = format!("{inbox}.alive.{:08x}", rand::random::<u32>());
    let mut echoes = match client.subscribe(subject.clone()).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "connection check not set up; left to the client's pings");
            None
        }
    };
    let mut missed = 0u32;
    let mut tick = tokio::time::interval(config.ping_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = link.move_off.notified() => {
                missed = 0;
                if let Err(e) = client.force_reconnect().await {
                    tracing::warn!(error = %e, "moving to another bus node failed");
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        let refused = link.watchdog_refused.load(std::sync::atomic::Ordering::Relaxed);
        let Some(subscription) = echoes.as_mut().filter(|_| connected && !refused) else {
            missed = 0;
            continue;
        };
        // Drop echoes of earlier rounds that came late.
        while let Some(Some(_)) = futures::FutureExt::now_or_never(subscription.next()) {}
        let sent = client.publish(subject.clone(), bytes::Bytes::new()).await.is_ok();
        let echoed =
            sent && tokio::time::timeout(config.ping_interval, subscription.next()).await.is_ok_and(|m| m.is_some());
        if echoed {
            missed = 0;
            continue;
        }
        missed += 1;
        if missed >= config.max_pings_out {
            missed = 0;
            metrics.dead_connections.inc();
            tracing::warn!(server = ?lock(&link.current).as_deref(), missed = config.max_pings_out,
                "the bus node stopped answering; moving to another");
            link.avoid_current();
            if let Err(e) = client.force_reconnect().await {
                tracing::warn!(error = %e, "moving to another bus node failed");
            }
        }
    }
}
