//! Pieces of the whole-system tests: the bus users of `deploy/nats/sre.conf` with test
//! passwords, the workspace's adapter binaries as processes that can be SIGKILLed and
//! restarted on their port, and an alert sender that behaves as Alertmanager does (each
//! alert in its own v4 webhook, retried on 5xx and refused connections until stored).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use serde_json::json;

use crate::service::{ServiceProcess, http_request};

/// A bus user's test password.
pub fn password(user: &str) -> String {
    assert!(crate::inventory::BUS_USERS.contains(&user), "{user} is no user of deploy/nats/sre.conf");
    format!("pw-{user}")
}

/// `deploy/nats/sre.conf` with the test passwords it reads set before it: the accounts,
/// users and allow-lists every bus test server runs with.
pub fn deploy_accounts() -> String {
    deploy_accounts_from("sre.conf")
}

/// A file of `deploy/nats/` (`sre.conf`, `sre-bind-only.conf`) with the test passwords it
/// reads set before it.
pub fn deploy_accounts_from(file: &str) -> String {
    let deploy = std::fs::read_to_string(crate::workspace_root().join("deploy/nats").join(file)).expect(file);
    let vars: String = crate::inventory::BUS_USERS
        .iter()
        .map(|user| format!("{}: \"{}\"\n", crate::inventory::password_var(user), password(user)))
        .collect();
    format!("{vars}\n{deploy}")
}

/// An adapter binary of this workspace, next to the running test's own directory.
pub fn adapter_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = dir.join(name);
    assert!(bin.exists(), "{} is not built: run the workspace's tests (cargo test --workspace)", bin.display());
    bin
}

/// One adapter process with everything needed to start it again on the same port.
#[derive(Debug)]
pub struct Adapter {
    /// Its crate and binary name.
    pub name: &'static str,
    bin: PathBuf,
    config: PathBuf,
    envs: Vec<(String, String)>,
    /// The running process.
    pub process: ServiceProcess,
}

impl Adapter {
    /// Starts `name` on `config` as its own bus user on the seed list `seeds`
    /// (`host:port,…`), as pod `pod`, and waits until it is ready.
    pub fn start(
        name: &'static str,
        pod: &str,
        dir: &Path,
        config: &str,
        seeds: &str,
        secrets: &[(&str, &str)],
    ) -> Self {
        let path = dir.join(format!("{pod}.yaml"));
        std::fs::write(&path, config).expect("config");
        let mut envs = vec![
            ("NATS_URL".to_owned(), seeds.to_owned()),
            ("NATS_USER".to_owned(), name.to_owned()),
            ("NATS_PASSWORD".to_owned(), password(name)),
            ("POD_NAME".to_owned(), pod.to_owned()),
            ("LOG_LEVEL".to_owned(), "info".to_owned()),
        ];
        envs.extend(secrets.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let bin = adapter_bin(name);
        let process = Self::spawn(&bin, &path, &envs, None);
        let mut adapter = Self { name, bin, config: path, envs, process };
        adapter.wait_ready();
        adapter
    }

    fn spawn(bin: &Path, config: &Path, envs: &[(String, String)], port: Option<u16>) -> ServiceProcess {
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args = ["--config", config.to_str().expect("utf-8")];
        match port {
            Some(port) => ServiceProcess::spawn_on(port, bin, &args, &envs),
            None => ServiceProcess::spawn(bin, &args, &envs),
        }
        .expect("spawns")
    }

    /// Waits until `/readyz` answers 200 (60 s: after a bus disruption a start can wait
    /// on JetStream elections); panics with the adapter's logs otherwise.
    pub fn wait_ready(&mut self) {
        if let Err(e) = self.process.wait_for_status("/readyz", 200, Duration::from_secs(60)) {
            panic!("{} not ready: {e}\n{}", self.name, self.process.logs());
        }
    }

    /// SIGKILL, then the same binary, configuration and port again.
    pub fn crash_and_restart(&mut self) {
        self.process.kill();
        self.process = Self::spawn(&self.bin, &self.config, &self.envs, Some(self.process.port()));
        self.wait_ready();
    }
}

/// What the alert sender did.
#[derive(Debug, Default)]
pub struct Sent {
    /// Fingerprint → (critical, accepted).
    pub alerts: BTreeMap<String, (bool, bool)>,
    /// When each alert was first sent, by fingerprint.
    pub first_sent: BTreeMap<String, Instant>,
    /// Requests made, retries included.
    pub attempts: u64,
    /// Answered 5xx (the ingress could not promise to keep it).
    pub unavailable: u64,
    /// Connection refused (the ingress was down).
    pub refused: u64,
}

impl Sent {
    /// How many alerts were stored.
    pub fn accepted(&self) -> usize {
        self.alerts.values().filter(|(_, ok)| *ok).count()
    }
}

/// The webhook of load alert `i`, as Alertmanager sends one alert in its own group: its
/// fingerprint and the body.
pub fn load_webhook(i: usize, critical: bool) -> (String, String) {
    const SINGLE: &str = include_str!("../../../tests/fixtures/alertmanager/webhook-v4-firing-single.json");
    let mut body: serde_json::Value = serde_json::from_str(SINGLE).expect("fixture");
    let fingerprint = format!("{:016x}", 0x5eed_0000_0000_u64 + i as u64);
    let alert = &mut body["alerts"][0];
    alert["fingerprint"] = json!(fingerprint);
    alert["labels"]["alertname"] = json!(format!("Load{i}"));
    alert["labels"]["severity"] = json!(if critical { "critical" } else { "warning" });
    alert["annotations"]["summary"] = json!(format!("load alert {i}"));
    let labels = alert["labels"].clone();
    body["groupKey"] = json!(format!("{{}}:{{alertname=\"Load{i}\"}}"));
    body["commonLabels"] = labels;
    (fingerprint, body.to_string())
}

/// Sends `total` load alerts (every fifth critical) to the ingress replicas on `ports` in
/// turn (as a Kubernetes Service spreads them), one every `pace`, each retried as
/// Alertmanager retries (on 5xx and refused connections, on the next replica, after
/// 100 ms) until stored. Any 4xx is a lost alert and fails the test.
pub fn send_alerts(ports: &[u16], total: usize, pace: Duration, sent: Arc<Mutex<Sent>>) {
    for i in 0..total {
        let critical = i % 5 == 0;
        let (fingerprint, body) = load_webhook(i, critical);
        {
            let mut s = sent.lock().unwrap_or_else(PoisonError::into_inner);
            s.alerts.insert(fingerprint.clone(), (critical, false));
            s.first_sent.insert(fingerprint.clone(), Instant::now());
        }
        let mut replica = i;
        loop {
            let port = ports[replica % ports.len()];
            let answer = http_request(
                port,
                "POST",
                "/webhooks/alertmanager",
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            );
            let mut s = sent.lock().unwrap_or_else(PoisonError::into_inner);
            s.attempts += 1;
            match answer {
                Some((status, _)) if (200..300).contains(&status) => {
                    s.alerts.insert(fingerprint.clone(), (critical, true));
                    break;
                }
                Some((status, body)) => {
                    assert!(status >= 500, "alert {i} answered {status} (Alertmanager would drop it): {body}");
                    s.unavailable += 1;
                }
                None => s.refused += 1,
            }
            drop(s);
            replica += 1;
            // Alertmanager's own retry pause (it backs off from about this).
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(pace);
    }
}

/// What the bind-only users may not: create or update a durable consumer or a KV bucket.
const CREATING: [&str; 3] = ["CONSUMER.CREATE.SRE_DOMAIN_FACTS", "STREAM.CREATE.KV_", "STREAM.UPDATE.KV_"];

/// `deploy/nats/sre-bind-only.conf` as it must be: `sre.conf` without any right to create
/// or update a durable consumer or a KV bucket (the platform declares them), under its own
/// header. Generated, so the two never drift (`SRE_BLESS=1` rewrites the file).
pub fn bind_only_conf(sre_conf: &str) -> String {
    let body = &sre_conf[sre_conf.find("accounts {").expect("an accounts block")..];
    let kept: Vec<&str> = body.lines().filter(|l| !CREATING.iter().any(|c| l.contains(c))).collect();
    format!(
        "# The SRE bus for adapters that bind only (`runtime.bus.bind_only: true`): as `sre.conf`,\n\
         # but no user may create or update a durable consumer or a KV bucket. The platform declares\n\
         # them (the charts' NACK Consumer and KeyValue, or `nats consumer add` / `nats kv add` from\n\
         # `jetstream/`), and the adapters use them exactly as declared.\n\
         #\n\
         # Generated from `sre.conf` (a test checks it; `SRE_BLESS=1 cargo nextest run` rewrites it).\n\
         # paging-sink keeps the right to list its own bucket's deferred pages (an ordered consumer\n\
         # on its own bucket: it reads only its own records).\n\n{}\n",
        kept.join("\n")
    )
}
