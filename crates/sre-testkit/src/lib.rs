//! Dev-only test kit: starts real `nats-server` and Alertmanager processes on loopback.
//!
//! Each server gets a free port on 127.0.0.1 and a temporary store, and is killed when
//! dropped. Binaries are found through `SRE_NATS_SERVER` / `SRE_ALERTMANAGER`, then in the
//! workspace's `.tools/` (where `cargo xtask setup` installs them), then on `PATH`.
//! Readiness is polled over the servers' own health endpoints with a deadline; nothing
//! here sleeps to synchronise. Never a dependency of a shipped binary.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

pub mod argocd;
pub mod bus;
pub mod chart;
pub mod cluster;
pub mod domain;
pub mod github;
pub mod image;
pub mod inventory;
pub mod jira;
pub mod monitoring;
pub mod nack;
pub mod opsgenie;
pub mod otlp;
pub mod pagerduty;
pub mod schema;
pub mod secure;
pub mod service;
pub mod sink_bench;
pub mod stack;
pub mod vendor;

/// Why a test server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binary is not installed.
    #[error("{0} not found: run `cargo xtask setup` or set {1}")]
    NotFound(&'static str, &'static str),
    /// Spawning or talking to the process failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The failure.
        source: std::io::Error,
    },
    /// The server did not become ready in time.
    #[error("{0} not ready within {1:?}")]
    NotReady(&'static str, Duration),
}

const READY_DEADLINE: Duration = Duration::from_secs(20);

/// The folder holding every adapter chart.
pub fn charts_dir() -> PathBuf {
    workspace_root().join("deploy/helm")
}

/// The workspace root (where `.tools/` lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> Result<u16, Error> {
    Ok(free_ports::<1>()?[0])
}

/// `N` different free TCP ports on 127.0.0.1 (see [`free_port_list`]).
pub fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    let list = free_port_list(N)?;
    Ok(std::array::from_fn(|i| list[i]))
}

/// `n` different free TCP ports on 127.0.0.1, chosen while every probe socket is held.
///
/// A port is free when chosen, not when used: another process may bind it in between, so
/// whoever starts a server on it starts again on fresh ports when the server cannot bind
/// ([`start_on_fresh_ports`], [`port_taken`]).
pub fn free_port_list(n: usize) -> Result<Vec<u16>, Error> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<_, _>>()
        .map_err(|source| Error::Io { what: "binding a probe port", source })?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|source| Error::Io { what: "reading the probe port", source })
}

/// Whether a server's log says it could not bind its port (Go's and Rust's wording alike).
pub(crate) fn port_taken(log: &str) -> bool {
    log.to_ascii_lowercase().contains("address already in use")
}

/// How many times a server whose chosen port was taken meanwhile is started in all.
pub(crate) const START_ATTEMPTS: usize = 3;

/// Runs `start` up to [`START_ATTEMPTS`] times while it fails because a port it chose was
/// taken between choosing and binding it; other failures end at once.
fn start_on_fresh_ports<T>(mut start: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let mut attempt = 1;
    loop {
        match start() {
            Err(Error::Io { source, .. })
                if attempt < START_ATTEMPTS && source.kind() == std::io::ErrorKind::AddrInUse =>
            {
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The last lines of a log, for an error that says why a server did not start.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

fn find_binary(
    env: &'static str,
    tools_rel: &[&str],
    path_names: &[&str],
    what: &'static str,
) -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    for rel in tools_rel {
        let p = workspace_root().join(rel);
        if p.is_file() {
            return Ok(p);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in path_names {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(Error::NotFound(what, env))
}

/// The nats-server binary tests use.
pub fn nats_server_binary() -> Result<PathBuf, Error> {
    find_binary("SRE_NATS_SERVER", &[".tools/venv/bin/nats-server"], &["nats-server"], "nats-server")
}

/// The Alertmanager binary tests use.
pub fn alertmanager_binary() -> Result<PathBuf, Error> {
    find_binary(
        "SRE_ALERTMANAGER",
        &[".tools/bin/alertmanager"],
        &["prometheus-alertmanager", "alertmanager"],
        "alertmanager",
    )
}

/// A plain HTTP/1.0 GET on loopback returning the status code (no client crate needed).
pub fn http_get_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A plain HTTP/1.0 GET on loopback returning the status code and the body.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut all = String::new();
    stream.read_to_string(&mut all).ok()?;
    let status = all.get(9..12)?.parse().ok()?;
    let body = all.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// Polls `ready` until it holds. A process that exits first is an error carrying the end of
/// its log (the file `log`), of kind `AddrInUse` when it could not bind its port.
fn wait_ready(what: &'static str, child: &mut Child, log: &Path, mut ready: impl FnMut() -> bool) -> Result<(), Error> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    while start.elapsed() < READY_DEADLINE {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let kind = if port_taken(&log) { std::io::ErrorKind::AddrInUse } else { std::io::ErrorKind::Other };
            let source = std::io::Error::new(kind, format!("exited early with {status}: {}", tail(&log)));
            return Err(Error::Io { what, source });
        }
        // Polling a health endpoint with a short backoff, bounded by the deadline.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
    Err(Error::NotReady(what, READY_DEADLINE))
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat` (Linux).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports in USER_HZ, 100 on every mainstream configuration.
    Some(Duration::from_millis(ticks * 10))
}

/// A real nats-server with JetStream on 127.0.0.1, a free port and a temporary store.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    monitor_port: u16,
    store: tempfile::TempDir,
    config: Option<PathBuf>,
    /// Holds a configuration file written for this server.
    _config_dir: Option<tempfile::TempDir>,
}

impl NatsServer {
    /// Starts a server with JetStream on a free port.
    pub fn start() -> Result<Self, Error> {
        Self::start_from(None)
    }

    /// Starts a server with `config` (if any) on free ports, again on fresh ports when one
    /// was taken before the server bound it.
    fn start_from(config: Option<PathBuf>) -> Result<Self, Error> {
        start_on_fresh_ports(|| {
            let store = tempfile::tempdir().map_err(|source| Error::Io { what: "creating the store", source })?;
            let [port, monitor_port] = free_ports()?;
            let mut server = Self { child: None, port, monitor_port, store, config: config.clone(), _config_dir: None };
            server.spawn()?;
            Ok(server)
        })
    }

    /// Starts a server that takes messages of up to `bytes` (`max_payload`; 1 MB by
    /// default), as a platform that raised it for large incidents runs it.
    pub fn start_with_max_payload(bytes: usize) -> Result<Self, Error> {
        let dir = tempfile::tempdir().map_err(|source| Error::Io { what: "creating the store", source })?;
        let config = dir.path().join("limits.conf");
        std::fs::write(&config, format!("max_payload: {bytes}\n"))
            .map_err(|source| Error::Io { what: "writing the configuration", source })?;
        let mut server = Self::start_from(Some(config))?;
        server._config_dir = Some(dir);
        Ok(server)
    }

    /// Starts a server from a configuration file (e.g. accounts and permissions from
    /// `deploy/`); the port, monitor port, store and JetStream are set on the command line.
    pub fn start_with_config(config: &Path) -> Result<Self, Error> {
        Self::start_from(Some(config.to_owned()))
    }

    fn spawn(&mut self) -> Result<(), Error> {
        let mut cmd = Command::new(nats_server_binary()?);
        if let Some(config) = &self.config {
            cmd.arg("-c").arg(config);
        }
        cmd.args(["-js", "-a", "127.0.0.1"])
            .args(["-p", &self.port.to_string()])
            .args(["-m", &self.monitor_port.to_string()])
            .arg("-sd")
            .arg(self.store.path())
            .arg("-l")
            .arg(self.store.path().join("nats-server.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().map_err(|source| Error::Io { what: "spawning nats-server", source })?;
        let monitor = self.monitor_port;
        let log = self.store.path().join("nats-server.log");
        wait_ready("nats-server", &mut child, &log, || {
            http_get_status(monitor, "/healthz?js-enabled-only=true") == Some(200)
        })?;
        self.child = Some(child);
        Ok(())
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The monitoring port.
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    /// Kills the server (SIGKILL: an outage, not a clean stop). The store is kept.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.kill();
        self.spawn()
    }

    /// The server's log so far (connections, permission violations, JetStream events).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.store.path().join("nats-server.log")).unwrap_or_default()
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real Alertmanager on 127.0.0.1 with gossip off and a temporary store.
#[derive(Debug)]
pub struct Alertmanager {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager with `config_yaml` as its configuration file.
    pub fn start(config_yaml: &str) -> Result<Self, Error> {
        let dir = tempfile::tempdir().map_err(|source| Error::Io { what: "creating the store", source })?;
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, config_yaml).map_err(|source| Error::Io { what: "writing the config", source })?;
        let log = dir.path().join("alertmanager.log");
        let (child, port) = start_on_fresh_ports(|| {
            let port = free_port()?;
            let stderr =
                std::fs::File::create(&log).map_err(|source| Error::Io { what: "creating the log", source })?;
            let mut child = Command::new(alertmanager_binary()?)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--cluster.listen-address=")
                .arg(format!("--web.external-url=http://127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .map_err(|source| Error::Io { what: "spawning alertmanager", source })?;
            wait_ready("alertmanager", &mut child, &log, || http_get_status(port, "/-/ready") == Some(200))?;
            Ok((child, port))
        })?;
        Ok(Self { child: Some(child), port, _dir: dir })
    }

    /// The base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Injects alerts with `POST /api/v2/alerts` (a JSON array of postable alerts) and
    /// returns the status code.
    pub fn post_alerts(&self, alerts: &serde_json::Value) -> Result<u16, Error> {
        let body = alerts.to_string();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let io = |source| Error::Io { what: "posting alerts", source };
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(io)?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(io)?;
        write!(
            stream,
            "POST /api/v2/alerts HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            body
        )
        .map_err(io)?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).map_err(io)?;
        std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io(std::io::Error::other("bad status line")))
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_server_starts_restarts_and_stops() {
        let mut server = NatsServer::start().expect("nats-server starts");
        assert_eq!(http_get_status(server.monitor_port(), "/healthz"), Some(200));
        server.kill();
        assert_eq!(http_get_status(server.monitor_port(), "/healthz"), None);
        server.restart().expect("restarts on the same port");
        assert_eq!(http_get_status(server.monitor_port(), "/healthz"), Some(200));
    }

    #[test]
    fn a_server_whose_port_is_taken_says_so_with_its_log() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
        let [monitor_port] = free_ports().expect("port");
        let mut server = NatsServer {
            child: None,
            port: taken.local_addr().expect("addr").port(),
            monitor_port,
            store: tempfile::tempdir().expect("tempdir"),
            config: None,
            _config_dir: None,
        };
        match server.spawn() {
            Err(Error::Io { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse, "{source}");
                assert!(source.to_string().contains("address already in use"), "{source}");
            }
            other => panic!("expected the bind failure, got {other:?}"),
        }
    }

    #[test]
    fn only_a_taken_port_is_tried_again_and_only_a_few_times() {
        let io = |kind| Error::Io { what: "a server", source: std::io::Error::new(kind, "exited early") };
        let cases: [(&[std::io::ErrorKind], Result<(), ()>, usize); 4] = [
            (&[], Ok(()), 1),
            (&[std::io::ErrorKind::AddrInUse], Ok(()), 2),
            (&[std::io::ErrorKind::AddrInUse; 3], Err(()), START_ATTEMPTS),
            (&[std::io::ErrorKind::Other], Err(()), 1),
        ];
        for (failures, want, calls_wanted) in cases {
            let mut calls = 0;
            let got = start_on_fresh_ports(|| {
                calls += 1;
                failures.get(calls - 1).map_or(Ok(()), |kind| Err(io(*kind)))
            });
            assert_eq!(got.is_ok(), want.is_ok(), "{failures:?}");
            assert_eq!(calls, calls_wanted, "{failures:?}");
        }
    }

    #[test]
    fn ports_chosen_together_differ() {
        let ports = free_ports::<16>().expect("ports");
        let mut sorted = ports.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ports.len());
    }
}
