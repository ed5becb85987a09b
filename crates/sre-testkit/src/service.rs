//! Runs an adapter binary as a real process: its flags, its endpoints, its signals.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::{Error, free_port};

/// A plain HTTP/1.0 request on loopback; returns the status and the body.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    http_exchange(port, method, path, headers, body).map(|(status, _, body)| (status, body))
}

/// [`http_request`], also returning the response's head (status line and headers).
pub fn http_exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12)?.parse().ok()?;
    let (head, body) =
        text.split_once("\r\n\r\n").map_or((text.clone(), String::new()), |(h, b)| (h.to_owned(), b.to_owned()));
    Some((status, head, body))
}

/// Runs `bin --check-config --config FILE`; returns the exit status and stderr.
pub fn check_config(bin: &Path, config: &Path) -> Result<(ExitStatus, String), Error> {
    let out = Command::new(bin)
        .arg("--check-config")
        .arg("--config")
        .arg(config)
        .output()
        .map_err(|source| Error::Io { what: "running --check-config", source })?;
    Ok((out.status, String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// An adapter process listening on a free loopback port, killed on drop.
#[derive(Debug)]
pub struct ServiceProcess {
    child: Option<Child>,
    port: u16,
    log: tempfile::NamedTempFile,
    /// How to start it again on a fresh port, when it was given a free one ([`Self::spawn`]).
    again: Option<Again>,
}

/// What [`ServiceProcess::spawn`] was given, and how often it has started.
#[derive(Debug)]
struct Again {
    bin: std::path::PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    starts: usize,
}

impl ServiceProcess {
    /// Starts `bin` with `args` and `envs`; `HTTP_ADDR` is set to a free loopback port.
    /// Standard output (the JSON log) and standard error go to a file read by [`Self::logs`].
    /// Another process may take that port before the service binds it: [`Self::wait_for_status`]
    /// then starts it again on a fresh port (read [`Self::port`] after waiting).
    pub fn spawn(bin: &Path, args: &[&str], envs: &[(&str, &str)]) -> Result<Self, Error> {
        let mut process = Self::spawn_on(free_port()?, bin, args, envs)?;
        process.again = Some(Again {
            bin: bin.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            envs: envs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            starts: 1,
        });
        Ok(process)
    }

    /// As [`Self::spawn`], on `127.0.0.1:<port>` (e.g. the port a killed instance had).
    pub fn spawn_on(port: u16, bin: &Path, args: &[&str], envs: &[(&str, &str)]) -> Result<Self, Error> {
        let log =
            tempfile::NamedTempFile::new().map_err(|source| Error::Io { what: "creating the log file", source })?;
        let out = log.reopen().map_err(|source| Error::Io { what: "opening the log file", source })?;
        let err = log.reopen().map_err(|source| Error::Io { what: "opening the log file", source })?;
        let child = Command::new(bin)
            .args(args)
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Io { what: "spawning the service", source })?;
        Ok(Self { child: Some(child), port, log, again: None })
    }

    /// Starts the service again on a fresh port if it exited because its free port was taken
    /// before it bound it (at most [`crate::START_ATTEMPTS`] starts in all); whether it did.
    fn start_again_if_port_taken(&mut self) -> Result<bool, Error> {
        let taken = crate::port_taken(&self.logs());
        let Some(mut again) = self.again.take() else { return Ok(false) };
        if again.starts >= crate::START_ATTEMPTS || !taken {
            self.again = Some(again);
            return Ok(false);
        }
        again.starts += 1;
        let args: Vec<&str> = again.args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = again.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut fresh = Self::spawn_on(free_port()?, &again.bin, &args, &envs)?;
        fresh.again = Some(again);
        // The exited process is replaced; dropping it kills nothing that still runs.
        std::mem::swap(self, &mut fresh);
        Ok(true)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak resident set size (`VmHWM`) in bytes, read from `/proc` (Linux).
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The HTTP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The sum of the samples of metric `name` whose lines contain every one of `labels`
    /// (`0.0` when absent or when the service does not answer).
    pub fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        let (_, text) = self.get("/metrics").unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    }

    /// `GET path`: status and body.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http_request(self.port, "GET", path, &[], b"")
    }

    /// Waits until `GET path` answers `status`, polling with a deadline.
    pub fn wait_for_status(&mut self, path: &str, status: u16, deadline: Duration) -> Result<String, Error> {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Some((s, body)) = self.get(path)
                && s == status
            {
                return Ok(body);
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(exit)) = child.try_wait()
            {
                if self.start_again_if_port_taken()? {
                    continue;
                }
                return Err(Error::Io {
                    what: "waiting for the service",
                    source: std::io::Error::other(format!("exited with {exit}: {}", self.logs())),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(Error::NotReady("service", deadline))
    }

    /// SIGKILL: a crash, with no chance to drain or ack anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) -> Result<(), Error> {
        let child = self.child.as_ref().ok_or(Error::NotReady("service", Duration::ZERO))?;
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .map_err(|source| Error::Io { what: "sending SIGTERM", source })?;
        Ok(())
    }

    /// Waits for the process to exit (at most `deadline`).
    pub fn wait_exit(&mut self, deadline: Duration) -> Result<ExitStatus, Error> {
        let child = self.child.as_mut().ok_or(Error::NotReady("service", Duration::ZERO))?;
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Ok(status);
            }
            if start.elapsed() > deadline {
                return Err(Error::NotReady("service exit", deadline));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit status (at most `deadline`).
    pub fn terminate(&mut self, deadline: Duration) -> Result<ExitStatus, Error> {
        self.signal_term()?;
        self.wait_exit(deadline)
    }

    /// Everything the service wrote so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The lifecycle every adapter must have, checked from the outside: the example
/// configuration passes `--check-config`; a misspelt key fails it naming the key path;
/// with a real nats-server the service becomes ready, serves `/healthz` and `/metrics`,
/// logs JSON, and on SIGTERM exits 0.
pub fn assert_service_lifecycle(bin: &Path, example_config: &Path, section: &str) {
    assert_service_lifecycle_with_env(bin, example_config, section, &[]);
}

/// [`assert_service_lifecycle`] with extra environment (secrets the example refers to).
pub fn assert_service_lifecycle_with_env(bin: &Path, example_config: &Path, section: &str, envs: &[(&str, &str)]) {
    let (status, stderr) = check_config(bin, example_config).expect("runs --check-config");
    assert!(status.success(), "example config must be valid: {stderr}");
    let version = Command::new(bin).arg("--version").output().expect("runs --version");
    let name = bin.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let said = String::from_utf8_lossy(&version.stdout);
    assert!(version.status.success() && said.starts_with(&format!("{name} ")), "--version: {said}");

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, format!("{section}:\n  enabeld: true\n")).expect("write");
    let (status, stderr) = check_config(bin, &bad).expect("runs --check-config");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{section}.enabeld")), "names the key path: {stderr}");
    assert!(stderr.contains("unknown field"), "says why: {stderr}");

    let nats = crate::NatsServer::start().expect("nats-server");
    let config = example_config.to_str().expect("utf-8 path");
    let url = nats.url();
    let mut all = vec![("NATS_URL", url.as_str()), ("POD_NAME", "smoke-0")];
    all.extend_from_slice(envs);
    let mut service = ServiceProcess::spawn(bin, &["--config", config], &all).expect("spawns");
    let ready = service.wait_for_status("/readyz", 200, Duration::from_secs(20)).expect("becomes ready");
    assert!(ready.contains("\"bus\":\"ok\""), "{ready}");
    assert_eq!(service.get("/healthz").map(|(s, _)| s), Some(200));
    let (status, metrics) = service.get("/metrics").expect("metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("sre_bus_connected 1"), "{metrics}");
    assert!(metrics.contains("sre_build_info{"), "{metrics}");
    // Everything the chart's alert rules and dashboard name is exported, from the start
    // (the sinks' breakers and consumer appear once the bus is in place: polled).
    let start = Instant::now();
    loop {
        let (_, metrics) = service.get("/metrics").expect("metrics");
        let missing = crate::monitoring::not_exported(name, &metrics);
        if missing.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{name} does not export what its rules and dashboard use:\n{}\n{metrics}",
            missing.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let exit = service.terminate(Duration::from_secs(30)).expect("stops");
    assert!(exit.success(), "exit 0 after SIGTERM: {exit}\n{}", service.logs());
    let logs = service.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{line}");
    }
    assert!(logs.contains("\"message\":\"stopped\""), "{logs}");
}

/// What [`assert_starts_on_block`] saw: `--check-config`'s words and the service's logs.
#[derive(Debug)]
pub struct BlockRun {
    /// `--check-config`'s standard error (its notes among them).
    pub check_config: String,
    /// The service's JSON log lines.
    pub logs: String,
}

/// A configuration block as a platform team copies it from the specification: fed
/// verbatim (nothing added, no `runtime:` section) to `--check-config`, which must accept
/// it, then to the adapter itself against a real nats-server, which must start on it,
/// connect to the bus, serve `/healthz` and `/metrics`, and exit 0 on SIGTERM. `envs`
/// carries what the cluster would (secrets, `NATS_URL` is added).
pub fn assert_starts_on_block(bin: &Path, block: &str, envs: &[(&str, &str)]) -> BlockRun {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("spec.yaml");
    std::fs::write(&file, block).expect("write the block");
    let out = Command::new(bin)
        .args(["--check-config", "--config"])
        .arg(&file)
        .envs(envs.iter().copied())
        .output()
        .expect("runs --check-config");
    let check = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "the specification's block must be accepted as written:\n{block}\n{check}");
    let nats = crate::NatsServer::start().expect("nats-server");
    let url = nats.url();
    let mut all = vec![("NATS_URL", url.as_str()), ("POD_NAME", "spec-0")];
    all.extend_from_slice(envs);
    let path = file.to_str().expect("utf-8 path");
    let mut service = ServiceProcess::spawn(bin, &["--config", path], &all).expect("spawns");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match service.get("/readyz") {
            Some((_, body)) if body.contains("\"bus\":\"ok\"") => break,
            _ if tokio::time::Instant::now() > deadline => {
                panic!("never connected to the bus on the specification's block:\n{}", service.logs())
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    assert_eq!(service.get("/healthz").map(|(s, _)| s), Some(200), "{}", service.logs());
    let (status, metrics) = service.get("/metrics").expect("metrics");
    assert!(status == 200 && metrics.contains("sre_bus_connected 1"), "{metrics}");
    let exit = service.terminate(Duration::from_secs(30)).expect("stops");
    assert!(exit.success(), "exit 0 after SIGTERM: {exit}\n{}", service.logs());
    BlockRun { check_config: check, logs: service.logs() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in service that records each start in `$STARTS` and exits with `$SAYS` on
    /// standard error.
    const SCRIPT: &str = r#"echo start >> "$STARTS"; echo "$SAYS" >&2; exit 1"#;

    #[test]
    fn only_a_service_whose_port_was_taken_is_started_again_on_a_fresh_port() {
        let cases = [
            ("binding 127.0.0.1:4000: Address already in use (os error 98)", crate::START_ATTEMPTS),
            ("configuration: ticketing_integration.provider: unknown", 1),
        ];
        for (says, starts_wanted) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let starts = dir.path().join("starts");
            let envs = [("STARTS", starts.to_str().expect("utf-8")), ("SAYS", says)];
            let mut service = ServiceProcess::spawn(Path::new("/bin/sh"), &["-c", SCRIPT], &envs).expect("spawns");
            let err = service.wait_for_status("/readyz", 200, Duration::from_secs(20)).expect_err("never ready");
            assert!(err.to_string().contains(says), "{err}");
            let started = std::fs::read_to_string(&starts).expect("starts").lines().count();
            assert_eq!(started, starts_wanted, "{says}");
        }
    }
}
