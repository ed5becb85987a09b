//! Configuration in the specification's shape (`argocd_integration:`).

use std::time::Duration;

use serde::Deserialize;
use sre_runtime::{ConfigError, RuntimeConfig, SecretRef, ServiceConfig};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The adapter's section.
    pub argocd_integration: Integration,
    /// Bus, HTTP, telemetry and shutdown settings shared by every adapter.
    pub runtime: RuntimeConfig,
}

/// How observations reach the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// List every application every `poll_interval` (`polling`, as the specification
    /// writes it, or `poll`).
    #[serde(alias = "polling")]
    Poll,
    /// Watch the application stream for changes within seconds; the poll is kept as
    /// reconciliation (`watch` or `watching`).
    #[serde(alias = "watching")]
    Watch,
}

/// `argocd_integration:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Integration {
    /// Whether the adapter polls at all.
    pub enabled: bool,
    /// `poll` or `watch`.
    pub mode: Mode,
    /// Time between two polls (jitter is added).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The Argo CD servers to read: one (a map, or a `host:port` / URL string as the
    /// specification writes it) or several (a list of either).
    #[serde(deserialize_with = "one_or_many")]
    pub argocd_server: Vec<ArgoServer>,
    /// The token (key `token`) for servers that name no `secret_ref` of their own.
    /// Default: `argocd-token` (`$SECRETS_DIR/argocd-token/token`, else the variable
    /// `SECRET_ARGOCD_TOKEN_TOKEN`), then the Argo CD CLI's own `ARGOCD_AUTH_TOKEN`.
    pub secret_ref: Option<SecretRef>,
    /// Environments to report; applications outside them are ignored. Empty: every
    /// environment the applications name is reported.
    pub environments: Vec<String>,
    /// How an application's environment is read.
    pub environment_from: EnvironmentFrom,
    /// The label read when `environment_from` is `label`.
    pub environment_label: String,
    /// How long a new status must hold before it is published.
    pub hysteresis: HysteresisConfig,
    /// How long a replica's lease on a server lasts without renewal (renewed every poll).
    /// A successor takes over this long after a leader dies without releasing it.
    /// Default: three poll intervals.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Option<Duration>,
}

/// `argocd_integration.hysteresis`: a new status is published once it held for
/// `observations` polls in a row, or for `hold` since first seen, whichever comes first.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HysteresisConfig {
    /// Consecutive observations (1 publishes at once).
    pub observations: u32,
    /// Time since first seen; `0s` turns the time rule off.
    #[serde(with = "humantime_serde")]
    pub hold: Duration,
}

impl Default for HysteresisConfig {
    fn default() -> Self {
        Self { observations: 1, hold: Duration::ZERO }
    }
}

impl Integration {
    /// The lease TTL in effect.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl.unwrap_or(self.poll_interval * 3)
    }
}

/// Where an application's environment comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentFrom {
    /// The Application's label named by `environment_label` (default `environment`).
    Label,
    /// `spec.destination.name` (the cluster's name in Argo CD).
    DestinationName,
    /// `spec.destination.namespace`.
    DestinationNamespace,
    /// `spec.project`.
    Project,
}

impl Default for Integration {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: Mode::Poll,
            poll_interval: Duration::from_secs(30),
            argocd_server: Vec::new(),
            secret_ref: None,
            environments: Vec::new(),
            environment_from: EnvironmentFrom::Label,
            environment_label: "environment".to_owned(),
            hysteresis: HysteresisConfig::default(),
            lease_ttl: None,
        }
    }
}

/// One Argo CD server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgoServer {
    /// Base URL, e.g. `https://argocd.example.com`.
    pub url: String,
    /// Secret holding the API token under key `token` (sent as `Authorization: Bearer`).
    pub secret_ref: Option<SecretRef>,
    /// Per-request timeout.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// PEM file of extra CA certificates to trust (Argo CD's self-signed certificate, a
    /// private CA), added to the system's roots.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

impl ArgoServer {
    /// A server written as a string: a URL (`https://argocd.example.com`), or `host:port`
    /// as the specification writes it (`argocd-server.argocd.svc.cluster.local:443`),
    /// which means HTTPS, except on port 80 (Argo CD's plain-HTTP port with `--insecure`).
    pub fn from_address(address: &str) -> Result<Self, String> {
        let address = address.trim();
        let url = if address.starts_with("https://") || address.starts_with("http://") {
            address.to_owned()
        } else if address.contains("://") {
            return Err(format!("`{address}`: only https:// and http:// are supported"));
        } else {
            let (host, port) = match address.rsplit_once(':') {
                Some((host, port)) if !host.contains(']') || host.ends_with(']') => {
                    let port: u16 = port.parse().map_err(|_| format!("`{address}`: the port is not a number"))?;
                    (host, Some(port))
                }
                _ => (address, None),
            };
            if host.is_empty() || host.contains('/') || host.contains('@') {
                return Err(format!("`{address}`: expected host:port or a URL"));
            }
            match port {
                Some(80) => format!("http://{host}"),
                Some(443) | None => format!("https://{host}"),
                Some(p) => format!("https://{host}:{p}"),
            }
        };
        Ok(Self { url, secret_ref: None, request_timeout: default_timeout(), ca_file: None })
    }
}

/// One server: a map, or a string (see [`ArgoServer::from_address`]).
struct OneServer(ArgoServer);

impl<'de> Deserialize<'de> for OneServer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneServer;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a server: host:port, a URL, or a map (url, secret_ref, …)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                ArgoServer::from_address(v).map(OneServer).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                ArgoServer::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(OneServer)
            }
        }
        d.deserialize_any(V)
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ArgoServer>, D::Error> {
    // A visitor, not an untagged enum: the inner errors keep their field names.
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<ArgoServer>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a server (host:port, a URL, or a map of url, secret_ref, …) or a list of them")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            ArgoServer::from_address(v).map(|s| vec![s]).map_err(E::custom)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            ArgoServer::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(|s| vec![s])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Vec::<OneServer>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                .map(|v| v.into_iter().map(|s| s.0).collect())
        }
    }
    d.deserialize_any(V)
}

/// The Argo CD CLI's token variable, read when no secret holds the token.
pub const ARGOCD_AUTH_TOKEN: &str = "ARGOCD_AUTH_TOKEN";
/// The secret read for servers with no `secret_ref`, when `argocd_integration.secret_ref`
/// is not set either.
pub const DEFAULT_TOKEN_REF: &str = "argocd-token";

/// A server's token, as [`resolve_token`] found it.
#[derive(Debug)]
pub enum Token {
    /// Found (a named `secret_ref`, the default secret, or `ARGOCD_AUTH_TOKEN`).
    Found(secrecy::SecretString),
    /// A `secret_ref` the configuration names does not resolve: the adapter must not start.
    Unreadable(sre_runtime::SecretError),
    /// None named and none in the default places: polled anonymously; `hint` says where
    /// a token is looked for.
    Anonymous {
        /// Where it was looked for.
        hint: String,
    },
}

/// The token of `server`: its own `secret_ref`, else the section's (either must resolve),
/// else the secret [`DEFAULT_TOKEN_REF`], else [`ARGOCD_AUTH_TOKEN`], else none.
pub fn resolve_token(integration: &Integration, server: &ArgoServer, secrets: &sre_runtime::SecretStore) -> Token {
    if let Some(named) = server.secret_ref.as_ref().or(integration.secret_ref.as_ref()) {
        return match secrets.resolve(named, "token") {
            Ok(token) => Token::Found(token),
            Err(e) => Token::Unreadable(e),
        };
    }
    let default = SecretRef::try_from(DEFAULT_TOKEN_REF.to_owned()).ok();
    if let Some(token) = default.as_ref().and_then(|r| secrets.resolve(r, "token").ok()) {
        return Token::Found(token);
    }
    match secrets.variable(ARGOCD_AUTH_TOKEN) {
        Some(token) => Token::Found(token),
        None => Token::Anonymous { hint: missing_token_hint(DEFAULT_TOKEN_REF) },
    }
}

/// Where a token is looked for when none is configured, for the operator.
pub fn missing_token_hint(default: &str) -> String {
    let var = SecretRef::try_from(default.to_owned()).map(|r| r.env_var("token")).unwrap_or_default();
    format!(
        "put the API token in the secret `{default}` (key `token`: $SECRETS_DIR/{default}/token, or the variable \
         {var}), or in {ARGOCD_AUTH_TOKEN}, or name another with argocd_integration.secret_ref"
    )
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl ServiceConfig for Config {
    type Valid = Config;
    fn runtime(&self) -> &RuntimeConfig {
        &self.runtime
    }
    fn runtime_mut(&mut self) -> &mut RuntimeConfig {
        &mut self.runtime
    }
    fn notices(&self, secrets: &sre_runtime::SecretStore) -> Vec<String> {
        let i = &self.argocd_integration;
        if !i.enabled {
            return Vec::new();
        }
        let mut notes = Vec::new();
        for (n, server) in i.argocd_server.iter().enumerate() {
            match resolve_token(i, server, secrets) {
                Token::Found(_) => {}
                Token::Unreadable(e) => notes.push(format!(
                    "argocd_integration.argocd_server[{n}] ({}): token not readable here ({e}); the adapter will not \
                     start until it is",
                    server.url
                )),
                Token::Anonymous { hint } => notes.push(format!(
                    "argocd_integration.argocd_server[{n}] ({}): no token found, so it is polled anonymously and Argo \
                     CD answers 401 unless anonymous access is enabled; {hint}",
                    server.url
                )),
            }
        }
        notes
    }

    fn validate(&self) -> Result<Config, ConfigError> {
        let i = &self.argocd_integration;
        if i.poll_interval < Duration::from_secs(1) {
            return Err(ConfigError::new("argocd_integration.poll_interval", "must be at least 1s"));
        }
        if i.hysteresis.observations == 0 {
            return Err(ConfigError::new("argocd_integration.hysteresis.observations", "must be at least 1"));
        }
        if !i.enabled {
            return Ok(self.clone());
        }
        if i.argocd_server.is_empty() {
            return Err(ConfigError::new("argocd_integration.argocd_server", "list at least one Argo CD server"));
        }
        for (n, server) in i.argocd_server.iter().enumerate() {
            if !server.url.starts_with("https://") && !server.url.starts_with("http://") {
                return Err(ConfigError::new(
                    format!("argocd_integration.argocd_server[{n}].url"),
                    "must start with https:// or http://",
                ));
            }
            if i.argocd_server[..n].iter().any(|s| s.url.trim_end_matches('/') == server.url.trim_end_matches('/')) {
                return Err(ConfigError::new(format!("argocd_integration.argocd_server[{n}].url"), "listed twice"));
            }
        }
        let ttl = i.lease_ttl();
        if ttl < i.poll_interval * 2 {
            return Err(ConfigError::new("argocd_integration.lease_ttl", "must be at least two poll intervals"));
        }
        let window = self.runtime.bus.streams.duplicate_window;
        if ttl + i.poll_interval > window {
            return Err(ConfigError::new(
                "argocd_integration.lease_ttl",
                format!(
                    "lease_ttl plus poll_interval ({:?}) exceeds the bus duplicate window ({window:?}): a successor \
                     could publish a change twice; lower them or raise runtime.bus.streams.duplicate_window",
                    ttl + i.poll_interval
                ),
            ));
        }
        Ok(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Result<Config, ConfigError> {
        sre_runtime::load_config::<Config>(yaml, &sre_runtime::config::Vars::default())
    }

    #[test]
    fn one_server_as_a_map_or_several_as_a_list() {
        let one = load(
            "argocd_integration:\n  argocd_server: {url: https://argocd.example.com}\n  environments: [production]\n",
        )
        .expect("a map");
        assert_eq!(one.argocd_integration.argocd_server.len(), 1);
        let two = load(
            "argocd_integration:\n  argocd_server:\n    - url: https://a.example.com\n    - url: https://b.example.com\n  environments: [production]\n",
        )
        .expect("a list");
        assert_eq!(two.argocd_integration.argocd_server.len(), 2);
        let err =
            load("argocd_integration:\n  argocd_server: {url: ftp://x}\n  environments: [p]\n").expect_err("scheme");
        assert!(err.to_string().contains("argocd_server[0].url"), "{err}");
        let err =
            load("argocd_integration:\n  argocd_server: {urll: https://x}\n  environments: [p]\n").expect_err("typo");
        assert!(err.to_string().contains("urll"), "the misspelt key is named: {err}");
    }

    /// The specification's block, verbatim.
    const SPEC: &str = "argocd_integration:
  enabled: true
  mode: polling
  poll_interval: 30s
  argocd_server: argocd-server.argocd.svc.cluster.local:443
  environments:
    - local
    - dev
    - staging
    - production
";

    #[test]
    fn the_specification_block_as_written() {
        let c = load(SPEC).expect("the spec's own block");
        let i = &c.argocd_integration;
        assert_eq!(i.mode, Mode::Poll);
        assert_eq!(i.argocd_server.len(), 1);
        assert_eq!(i.argocd_server[0].url, "https://argocd-server.argocd.svc.cluster.local");
        assert_eq!(i.environments, ["local", "dev", "staging", "production"]);
        // Its shorter form, without environments, reports every environment seen.
        let short = SPEC.split("  environments:").next().unwrap_or_default();
        assert!(load(short).expect("without environments").argocd_integration.environments.is_empty());
        assert_eq!(load(&SPEC.replace("polling", "poll")).expect("poll").argocd_integration.mode, Mode::Poll);
        assert_eq!(load(&SPEC.replace("polling", "watch")).expect("watch").argocd_integration.mode, Mode::Watch);
        let err = load(&SPEC.replace("polling", "pulling")).expect_err("a wrong mode");
        assert!(err.to_string().contains("argocd_integration.mode"), "{err}");
    }

    #[test]
    fn servers_written_as_addresses() {
        let url = |a: &str| ArgoServer::from_address(a).map(|s| s.url);
        assert_eq!(url("argocd.example.com:443").as_deref(), Ok("https://argocd.example.com"));
        assert_eq!(url("argocd.example.com").as_deref(), Ok("https://argocd.example.com"));
        assert_eq!(url("argocd.example.com:8443").as_deref(), Ok("https://argocd.example.com:8443"));
        assert_eq!(url("argocd-server.argocd:80").as_deref(), Ok("http://argocd-server.argocd"));
        assert_eq!(url("http://127.0.0.1:8089").as_deref(), Ok("http://127.0.0.1:8089"));
        assert_eq!(url("[::1]:443").as_deref(), Ok("https://[::1]"));
        assert!(url("argocd.example.com:https").is_err());
        assert!(url("ftp://argocd.example.com").is_err());
        assert!(url("user@argocd.example.com:443").is_err());
        // A list may mix strings and maps; a bad address names the key.
        let both = load(
            "argocd_integration:\n  argocd_server:\n    - a.example.com:443\n    - {url: https://b.example.com, secret_ref: platform/b}\n",
        )
        .expect("a mixed list");
        assert_eq!(both.argocd_integration.argocd_server.len(), 2);
        let err = load("argocd_integration:\n  argocd_server: a.example.com:http\n").expect_err("bad port");
        assert!(
            err.to_string().contains("argocd_integration.argocd_server") && err.to_string().contains("port"),
            "{err}"
        );
    }

    #[test]
    fn check_config_says_where_a_missing_token_is_looked_for() {
        let c = load(SPEC).expect("spec");
        let none = sre_runtime::SecretStore::new(None, sre_runtime::config::Vars::default());
        let notes = c.notices(&none);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("argocd_server[0]")
                && notes[0].contains("anonymously")
                && notes[0].contains("argocd-token")
                && notes[0].contains("SECRET_ARGOCD_TOKEN_TOKEN")
                && notes[0].contains("ARGOCD_AUTH_TOKEN"),
            "{}",
            notes[0]
        );
        let cli: sre_runtime::config::Vars =
            [("ARGOCD_AUTH_TOKEN".to_owned(), "t0k3n".to_owned())].into_iter().collect();
        assert!(c.notices(&sre_runtime::SecretStore::new(None, cli)).is_empty(), "the CLI's variable is a token");
        let named = load(&format!("{SPEC}  secret_ref: platform/argocd\n")).expect("a named ref");
        let notes = named.notices(&none);
        assert!(notes[0].contains("platform/argocd") && notes[0].contains("will not start"), "{notes:?}");
        let token = |n: &str| {
            let v: sre_runtime::config::Vars = [(n.to_owned(), "t".to_owned())].into_iter().collect();
            sre_runtime::SecretStore::new(None, v)
        };
        assert!(named.notices(&token("SECRET_PLATFORM_ARGOCD_TOKEN")).is_empty());
        assert!(c.notices(&token("SECRET_ARGOCD_TOKEN_TOKEN")).is_empty());
        assert!(!c.notices(&token("SECRET_PLATFORM_ARGOCD_TOKEN")).is_empty(), "the default ref is not another");
    }
}
