//! Bus configuration (the `bus:` section of every service's configuration file).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// How a service reaches the bus.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// The seeds: one NATS URL or several, comma-separated (`nats://nats-0:4222,
    /// nats://nats-1:4222,nats://nats-2:4222`; `nats://` may be left out). The client
    /// starts on any seed that is up and learns the rest of the cluster from it.
    /// Credentials may be in the URLs (in the first only, or the same in every one) or
    /// given separately (`user` and `password_file`, or `NATS_USER`/`NATS_PASSWORD`),
    /// once. The `NATS_URL` environment variable overrides it.
    pub url: String,
    /// The bus user, when the password is given separately (`NATS_USER` overrides it).
    pub user: Option<String>,
    /// A file holding the bus user's password (e.g. a mounted Kubernetes Secret key).
    /// `NATS_PASSWORD` overrides it.
    pub password_file: Option<PathBuf>,
    /// The password from `NATS_PASSWORD` (never in a file, never printed).
    #[serde(skip)]
    pub password: Option<Password>,
    /// NATS credentials file (`.creds`: the user's JWT and NKey seed, as `nsc` or a
    /// platform's operator issues it) for a server in decentralized JWT mode. Read again at
    /// every connection, so a rotated file (a new user JWT mounted in place) is used from
    /// the next reconnect, without a restart.
    pub credentials_file: Option<PathBuf>,
    /// A file holding the user's NKey seed (`SU…`), for a server that lists the user's
    /// public NKey (`nkey: U…`). Read again at every connection.
    pub nkey_seed_file: Option<PathBuf>,
    /// TLS to the bus (a private CA, a client certificate, TLS first); off unless set. Only
    /// the bus uses it: the vendors' HTTPS keeps the system's roots.
    pub tls: Option<BusTls>,
    /// The prefix of this client's reply subjects (its inbox). Each adapter has its own by
    /// default (`_INBOX_<service>`, e.g. `_INBOX_ticketing_sink`), so a bus user that may
    /// subscribe only to its own prefix cannot read another adapter's replies
    /// (`deploy/nats`). `_INBOX` is NATS' shared default.
    pub inbox_prefix: Option<String>,
    /// How often the connection is checked by a round trip through the server (a message
    /// to this client's own inbox).
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Round trips missed in a row before the server is taken for dead (frozen, cut off
    /// without closing the socket) and the client moves to another one. With the
    /// defaults a frozen node is left within about 8 s.
    pub max_pings_out: u32,
    /// Time allowed to establish one TCP/TLS connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a publish waits for its JetStream ack before it counts as unavailable.
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// Create or update the streams at start. Turn off where the service's credentials
    /// may not manage streams (they are then provisioned from `deploy/nats`).
    pub manage_streams: bool,
    /// Bind only: never create or update a durable consumer or a KV bucket, use what the
    /// platform declared (NACK, the `nats` CLI) exactly as declared, and say what is
    /// missing. Implies `manage_streams: false`. For least-privilege users that may not
    /// create (`deploy/nats/sre-bind-only.conf`).
    pub bind_only: bool,
    /// Settings of the domain streams.
    pub streams: StreamSettings,
}

/// `runtime.bus.tls`: the files of a cert-manager Certificate's Secret (`ca.crt`,
/// `tls.crt`, `tls.key`) as mounted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusTls {
    /// The CA that signed the servers' certificates (PEM); unset: the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// This client's certificate (PEM), for servers that verify clients (mTLS, also
    /// `verify_and_map`, where the certificate names the bus user).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// TLS before the first byte of NATS (nats-server's `handshake_first`), as for servers
    /// behind a TLS-terminating proxy that expects it.
    #[serde(default)]
    pub handshake_first: bool,
}

impl BusConfig {
    /// The inbox prefix in force for `service`.
    pub fn inbox_prefix_for(&self, service: &str) -> String {
        self.inbox_prefix.clone().unwrap_or_else(|| default_inbox_prefix(service))
    }

    /// Checks the keys that go together: where and why, for the configuration error.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some(tls) = &self.tls
            && tls.cert_file.is_some() != tls.key_file.is_some()
        {
            return Err(("runtime.bus.tls.cert_file", "a client certificate and its key_file come together".into()));
        }
        let ways = [self.user.is_some(), self.credentials_file.is_some(), self.nkey_seed_file.is_some()];
        if ways.iter().filter(|w| **w).count() > 1 {
            return Err((
                "runtime.bus.credentials_file",
                "give one way to log in: a user and password, a .creds file, or an NKey seed".into(),
            ));
        }
        if let Some(prefix) = &self.inbox_prefix
            && (prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        {
            return Err(("runtime.bus.inbox_prefix", "one subject token: letters, digits, `_` and `-`".into()));
        }
        if self.ping_interval < Duration::from_millis(200) {
            return Err(("runtime.bus.ping_interval", "must be at least 200ms".into()));
        }
        if self.max_pings_out == 0 {
            return Err(("runtime.bus.max_pings_out", "must be at least 1".into()));
        }
        if self.bind_only && self.manage_streams {
            return Err((
                "runtime.bus.manage_streams",
                "bind_only never creates anything: set manage_streams: false (the streams are declared too)".into(),
            ));
        }
        Ok(())
    }

    /// The files this configuration reads at connect time that cannot be read here, one
    /// line each naming the key (for `--check-config`, where they may not be mounted).
    pub fn unreadable_files(&self) -> Vec<String> {
        let mut files: Vec<(&str, &PathBuf)> = Vec::new();
        files.extend(self.password_file.iter().map(|p| ("runtime.bus.password_file", p)));
        files.extend(self.credentials_file.iter().map(|p| ("runtime.bus.credentials_file", p)));
        files.extend(self.nkey_seed_file.iter().map(|p| ("runtime.bus.nkey_seed_file", p)));
        if let Some(tls) = &self.tls {
            files.extend(tls.ca_file.iter().map(|p| ("runtime.bus.tls.ca_file", p)));
            files.extend(tls.cert_file.iter().map(|p| ("runtime.bus.tls.cert_file", p)));
            files.extend(tls.key_file.iter().map(|p| ("runtime.bus.tls.key_file", p)));
        }
        files
            .into_iter()
            .filter_map(|(key, path)| {
                let e = std::fs::metadata(path).err()?;
                Some(format!("{key}: {} is not readable here ({})", path.display(), e.kind()))
            })
            .collect()
    }
}

/// `_INBOX_<service>` with `-` as `_` (`_INBOX_ticketing_sink`).
pub fn default_inbox_prefix(service: &str) -> String {
    format!("_INBOX_{}", service.replace(|c: char| !c.is_ascii_alphanumeric(), "_"))
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".to_owned(),
            user: None,
            password_file: None,
            password: None,
            credentials_file: None,
            nkey_seed_file: None,
            tls: None,
            inbox_prefix: None,
            ping_interval: Duration::from_secs(2),
            max_pings_out: 3,
            connect_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(5),
            manage_streams: true,
            bind_only: false,
            streams: StreamSettings::default(),
        }
    }
}

/// A bus password: compared, never printed.
#[derive(Clone)]
pub struct Password(pub secrecy::SecretString);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([redacted])")
    }
}

impl PartialEq for Password {
    fn eq(&self, other: &Self) -> bool {
        use secrecy::ExposeSecret;
        self.0.expose_secret() == other.0.expose_secret()
    }
}

/// A bus user and its password.
pub type Login = (String, Password);

/// The seeds of [`BusConfig::url`], credentials split off.
#[derive(Debug, Clone, PartialEq)]
pub struct Seeds {
    /// Each seed as `nats://host:port` (or its own scheme), without credentials.
    pub urls: Vec<String>,
    /// The user and password found in the URLs, the same for every seed that had them.
    pub credentials: Option<Login>,
}

/// Splits a seed list. Errors name the seed by position and never show a password.
pub fn parse_seeds(list: &str) -> Result<Seeds, String> {
    let mut urls = Vec::new();
    let mut credentials: Option<Login> = None;
    for (n, seed) in list.split(',').map(str::trim).enumerate() {
        if seed.is_empty() {
            continue;
        }
        let (scheme, rest) = seed.split_once("://").unwrap_or(("nats", seed));
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if !path.is_empty() {
            return Err(format!("seed {}: a NATS URL has no path", n + 1));
        }
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let port_ok = match host.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || host.starts_with('[') => {
                !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
            }
            _ => true,
        };
        if host.is_empty() || !port_ok || host.contains(['@', ' ']) {
            return Err(format!("seed {}: expected [nats://][user:password@]host[:port]", n + 1));
        }
        if let Some(userinfo) = userinfo {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let found = (percent_decode(user), Password(secrecy::SecretString::from(percent_decode(password))));
            match &credentials {
                Some(seen) if *seen != found => {
                    return Err(format!(
                        "seed {}: its credentials differ from an earlier seed's; give them once (in the first URL, \
                         or as NATS_USER/NATS_PASSWORD)",
                        n + 1
                    ));
                }
                _ => credentials = Some(found),
            }
        }
        urls.push(format!("{scheme}://{host}"));
    }
    if urls.is_empty() {
        return Err("no seed given".to_owned());
    }
    Ok(Seeds { urls, credentials })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl BusConfig {
    /// The seeds and the credentials to log in with, from wherever they were given.
    pub fn login(&self) -> Result<(Vec<String>, Option<Login>), String> {
        let seeds = parse_seeds(&self.url)?;
        let separate = match (&self.user, &self.password) {
            (Some(user), Some(password)) => Some((user.clone(), password.clone())),
            (Some(user), None) => match &self.password_file {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| format!("password_file {}: {}", path.display(), e.kind()))?;
                    Some((
                        user.clone(),
                        Password(secrecy::SecretString::from(text.trim_end_matches(['\n', '\r']).to_owned())),
                    ))
                }
                None => return Err("a user is given without a password (NATS_PASSWORD or password_file)".to_owned()),
            },
            (None, Some(_)) => return Err("a password is given without a user (NATS_USER or user)".to_owned()),
            (None, None) => None,
        };
        match (seeds.credentials, separate) {
            (Some(_), Some(_)) => {
                Err("credentials are given twice, in the URL and as a user and password; give them once".to_owned())
            }
            (a, b) => Ok((seeds.urls, a.or(b))),
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
    /// Replicas of every stream and KV bucket this service creates: `auto` (the default)
    /// is 3 on a JetStream cluster and 1 on a single server, or a number. Existing streams
    /// and buckets are never lowered below what they have.
    pub replicas: Replicas,
}

/// `runtime.bus.streams.replicas`: `auto` or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Replicas {
    /// 3 on a JetStream cluster, 1 on a single server. Three, not "as many nodes as are
    /// up": JetStream places an R3 stream with one of three nodes down (quorum), while a
    /// smaller count asked for then may be placed on the missing node and never answer.
    /// A two-node cluster (which loses its quorum with either node) sets `2`.
    #[default]
    Auto,
    /// Exactly this many (1 to 5).
    Fixed(usize),
}

impl Replicas {
    /// The count on a bus that is (or is not) a JetStream cluster.
    pub fn resolve(self, clustered: bool) -> usize {
        match self {
            Replicas::Auto if clustered => 3,
            Replicas::Auto => 1,
            Replicas::Fixed(n) => n,
        }
    }
}

impl<'de> Deserialize<'de> for Replicas {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Replicas;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`auto` or a number of replicas from 1 to 5")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Replicas, E> {
                match v {
                    "auto" => Ok(Replicas::Auto),
                    other => other
                        .parse::<u64>()
                        .map_err(|_| E::custom("expected `auto` or 1 to 5"))
                        .and_then(|n| self.visit_u64(n)),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Replicas, E> {
                match v {
                    1..=5 => Ok(Replicas::Fixed(v as usize)),
                    _ => Err(E::custom("JetStream takes 1 to 5 replicas")),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Replicas, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("JetStream takes 1 to 5 replicas"))
                    .and_then(|n| self.visit_u64(n))
            }
        }
        d.deserialize_any(V)
    }
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            duplicate_window: Duration::from_secs(300),
            max_age: Duration::from_secs(7 * 24 * 3600),
            dead_letter_max_age: Duration::from_secs(30 * 24 * 3600),
            replicas: Replicas::Auto,
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
    /// Unacknowledged facts in flight across all replicas, the ones handed back until
    /// their credential's turn (NAK with delay) included: at this many the consumer
    /// delivers nothing more, so it is far above what a storm holds back.
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
            max_ack_pending: 20_000,
            parallelism: 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn creds(s: &Seeds) -> Option<(String, String)> {
        s.credentials.as_ref().map(|(u, p)| (u.clone(), p.0.expose_secret().to_owned()))
    }

    #[test]
    fn seed_lists_as_platform_teams_write_them() {
        let three = "nats://nats-0.nats:4222,nats://nats-1.nats:4222,nats://nats-2.nats:4222";
        let s = parse_seeds(three).expect("plain list");
        assert_eq!(s.urls, ["nats://nats-0.nats:4222", "nats://nats-1.nats:4222", "nats://nats-2.nats:4222"]);
        assert_eq!(s.credentials, None);
        // Credentials in the first URL only, with spaces and a seed without a scheme.
        let s = parse_seeds("nats://paging-sink:p%40ss:w@nats-0:4222, nats-1:4222 ,tls://nats-2:4222").expect("first");
        assert_eq!(s.urls, ["nats://nats-0:4222", "nats://nats-1:4222", "tls://nats-2:4222"]);
        assert_eq!(creds(&s), Some(("paging-sink".into(), "p@ss:w".into())));
        // The same credentials in every URL.
        let s = parse_seeds("nats://u:pw@a:4222,nats://u:pw@b:4222").expect("every");
        assert_eq!(s.urls, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(creds(&s), Some(("u".into(), "pw".into())));
        // Different credentials, a bad port, nothing: errors that name the seed, never the password.
        let e = parse_seeds("nats://u:secret1@a:4222,nats://u:secret2@b:4222").expect_err("differ");
        assert!(e.contains("seed 2") && !e.contains("secret"), "{e}");
        let e = parse_seeds("nats://a:4222,nats://b:42x2").expect_err("port");
        assert!(e.contains("seed 2"), "{e}");
        assert!(parse_seeds(" , ").is_err());
        assert_eq!(parse_seeds("nats://127.0.0.1:4222").expect("one").urls, ["nats://127.0.0.1:4222"]);
    }

    #[test]
    fn replicas_are_auto_or_a_number() {
        #[derive(Deserialize)]
        struct S {
            replicas: Replicas,
        }
        let read = |y: &str| serde_norway::from_str::<S>(y).map(|s| s.replicas).map_err(|e| e.to_string());
        assert_eq!(read("replicas: auto"), Ok(Replicas::Auto));
        assert_eq!(read("replicas: 3"), Ok(Replicas::Fixed(3)));
        assert_eq!(read("replicas: \"1\""), Ok(Replicas::Fixed(1)));
        assert!(read("replicas: 0").is_err() && read("replicas: 6").is_err() && read("replicas: all").is_err());
        assert_eq!(StreamSettings::default().replicas, Replicas::Auto);
        assert_eq!(Replicas::Auto.resolve(true), 3, "a cluster");
        assert_eq!(Replicas::Auto.resolve(false), 1, "a single server");
        assert_eq!(Replicas::Fixed(2).resolve(true), 2);
    }

    #[test]
    fn credentials_given_separately_once() {
        let pw = |p: &str| Some(Password(secrecy::SecretString::from(p.to_owned())));
        let separate =
            BusConfig { url: "a:4222,b:4222".into(), user: Some("u".into()), password: pw("pw"), ..Default::default() };
        let (urls, login) = separate.login().expect("separate");
        assert_eq!(urls, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(login.map(|(u, p)| (u, p.0.expose_secret().to_owned())), Some(("u".into(), "pw".into())));
        let twice = BusConfig { url: "nats://u:pw@a:4222".into(), ..separate.clone() };
        assert!(twice.login().expect_err("twice").contains("once"));
        let no_password = BusConfig { password: None, ..separate.clone() };
        assert!(no_password.login().is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("password"), "from-file\n").expect("write");
        let file = BusConfig { password: None, password_file: Some(dir.path().join("password")), ..separate };
        let (_, login) = file.login().expect("file");
        assert_eq!(login.map(|(_, p)| p.0.expose_secret().to_owned()).as_deref(), Some("from-file"));
        assert!(!format!("{file:?}").contains("from-file"));
    }
}
