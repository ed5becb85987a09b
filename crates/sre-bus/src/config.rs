//! Bus configuration (the `bus:` section of every service's configuration file).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// How a service reaches the bus.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// NATS URL(s), comma-separated. The `NATS_URL` environment variable overrides it.
    pub url: String,
    /// NATS credentials file (`.creds`, JWT and NKey seed) for a server with accounts and
    /// per-adapter permissions (see `deploy/nats`). None for a local server without auth.
    pub credentials_file: Option<PathBuf>,
    /// Time allowed to establish one TCP/TLS connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a publish waits for its JetStream ack before it counts as unavailable.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Create or update the streams at start. Turn off where the service's credentials
    /// may not manage streams (they are then provisioned from `deploy/nats`).
    pub manage_streams: bool,
    /// Settings of the domain streams.
    pub streams: StreamSettings,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            credentials_file: None,
            connect_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(5),
            manage_streams: true,
            streams: StreamSettings::default(),
        }
    }
}

/// Settings of `SRE_DOMAIN_INTENTS`, `SRE_DOMAIN_FACTS` and `SRE_DEAD_LETTER`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSettings {
    /// Window in which a repeated `Nats-Msg-Id` is stored once (the cross-replica dedup).
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How long intents and facts are kept.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// How long dead letters are kept.
    #[serde(with = "humantime_serde")]
    pub dead_letter_max_age: Duration,
    /// Replicas per stream (1 for a single server, 3 for a cluster).
    pub replicas: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            duplicate_window: Duration::from_secs(300),
            max_age: Duration::from_secs(7 * 24 * 3600),
            dead_letter_max_age: Duration::from_secs(30 * 24 * 3600),
            replicas: 1,
        }
    }
}

/// Settings of a durable fact consumer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerConfig {
    /// Durable name, shared by all replicas of a sink (e.g. `ticketing-sink`).
    pub durable_name: String,
    /// Fact subjects to receive; empty means every fact.
    pub filter_subjects: Vec<String>,
    /// How long a delivered fact may stay unacknowledged before it is redelivered.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Deliveries before a fact goes to the dead-letter stream.
    pub max_deliver: i64,
    /// Unacknowledged facts in flight across all replicas.
    pub max_ack_pending: i64,
    /// Facts handled at once by this replica (facts of one incident run in order).
    pub parallelism: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            durable_name: String::new(),
            filter_subjects: Vec::new(),
            ack_wait: Duration::from_secs(30),
            max_deliver: 20,
            max_ack_pending: 256,
            parallelism: 8,
        }
    }
}
