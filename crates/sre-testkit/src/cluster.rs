//! A real JetStream cluster: `n` nats-server processes on 127.0.0.1 with routes between
//! them, each on its own free client, cluster and monitor ports and its own temporary
//! store, for the tests where replication, failover or seeds matter. Nodes can be
//! SIGKILLed, restarted on their store, or restarted with their store wiped (a lost disk);
//! stream leaders are read from each node's monitoring endpoint.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::{Error, http_get, http_get_status, nats_server_binary};

/// The cluster's name in every node's configuration.
pub const CLUSTER_NAME: &str = "sre-test";
/// Lame-duck timing: the NATS Helm chart's shape (a grace period, then clients closed over
/// a duration; 30 s is the least nats-server takes), the grace shortened; clients
/// that move at the notice are gone long before either ends.
const LAME_DUCK_GRACE: &str = "2s";
const LAME_DUCK_DURATION: &str = "30s";
const HEALTHY_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Node {
    name: String,
    port: u16,
    cluster_port: u16,
    monitor_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Node {
    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

/// A running cluster; every node is killed when it is dropped.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<Node>,
    accounts: Option<String>,
}

impl NatsCluster {
    /// Starts `n` nodes with JetStream and waits until every one is healthy (JetStream
    /// meta leader known).
    pub fn start(n: usize) -> Result<Self, Error> {
        Self::start_with_accounts(n, None)
    }

    /// Starts `n` nodes, each including `accounts` (configuration text such as
    /// `deploy/nats/sre.conf` with its users and allow-lists, and the variables it reads).
    pub fn start_with_accounts(n: usize, accounts: Option<&str>) -> Result<Self, Error> {
        // Another process may take a port between choosing it and the node binding it, and a
        // meta group formed under a loaded machine may not settle: start again on fresh
        // ports, as many times as a single server would (any failure, not only a taken port).
        let mut last = None;
        for _ in 0..crate::START_ATTEMPTS {
            match Self::try_start(n, accounts) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(Error::NotReady("nats-server cluster", HEALTHY_DEADLINE)))
    }

    fn try_start(n: usize, accounts: Option<&str>) -> Result<Self, Error> {
        let accounts = accounts.map(str::to_owned);
        let ports = crate::free_port_list(n * 3)?;
        let mut nodes = Vec::with_capacity(n);
        for (i, p) in ports.chunks(3).enumerate() {
            nodes.push(Node {
                name: format!("n{i}"),
                port: p[0],
                cluster_port: p[1],
                monitor_port: p[2],
                dir: tempfile::tempdir().map_err(|source| Error::Io { what: "creating a node's dir", source })?,
                child: None,
            });
        }
        let mut cluster = Self { nodes, accounts };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        for i in 0..n {
            cluster.wait_healthy(i)?;
        }
        cluster.wait_settled()?;
        Ok(cluster)
    }

    /// Waits until the running nodes agree on one JetStream meta leader and it sees every
    /// other running node current: a cluster whose meta group has just formed can take a
    /// node's loss badly (its requests time out for a while), which is not what the tests
    /// mean to measure.
    pub fn wait_settled(&self) -> Result<(), Error> {
        let start = Instant::now();
        let running: Vec<usize> = (0..self.nodes.len()).filter(|i| self.is_running(*i)).collect();
        while start.elapsed() < HEALTHY_DEADLINE {
            let metas: Vec<(usize, serde_json::Value)> = running
                .iter()
                .filter_map(|i| http_get(self.nodes[*i].monitor_port, "/jsz").map(|answer| (*i, answer)))
                .filter(|(_, (status, _))| *status == 200)
                .filter_map(|(i, (_, body))| serde_json::from_str::<serde_json::Value>(&body).ok().map(|v| (i, v)))
                .map(|(i, v)| (i, v["meta_cluster"].clone()))
                .collect();
            let leaders: Vec<&str> = metas.iter().filter_map(|(_, m)| m["leader"].as_str()).collect();
            let agreed = leaders.len() == running.len() && leaders.windows(2).all(|w| w[0] == w[1]);
            // The leader's own view lists its followers and whether each is current.
            let followers_current = leaders.first().is_some_and(|leader| {
                metas.iter().any(|(i, m)| {
                    self.nodes[*i].name == *leader
                        && m["replicas"].as_array().is_some_and(|r| {
                            r.iter().filter(|p| p["current"].as_bool() == Some(true)).count() + 1 >= running.len()
                        })
                })
            });
            if agreed && (running.len() == 1 || followers_current) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Error::NotReady("nats-server cluster meta group", HEALTHY_DEADLINE))
    }

    fn config(&self, i: usize) -> String {
        let node = &self.nodes[i];
        let routes: Vec<String> =
            self.nodes.iter().map(|n| format!("nats-route://127.0.0.1:{}", n.cluster_port)).collect();
        let include = if self.accounts.is_some() { "include ./accounts.conf\n" } else { "" };
        format!(
            "server_name: {name}\nlisten: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\n\
             jetstream {{ store_dir: \"{store}\" }}\n\
             lame_duck_grace_period: {LAME_DUCK_GRACE}\nlame_duck_duration: {LAME_DUCK_DURATION}\n\
             cluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{cport}\n  routes: [{routes}]\n}}\n{include}",
            name = node.name,
            port = node.port,
            monitor = node.monitor_port,
            store = node.store().display(),
            cport = node.cluster_port,
            routes = routes.join(", "),
        )
    }

    fn spawn(&mut self, i: usize) -> Result<(), Error> {
        let config = self.config(i);
        let node = &self.nodes[i];
        let file = node.dir.path().join("node.conf");
        std::fs::write(&file, config).map_err(|source| Error::Io { what: "writing a node's config", source })?;
        if let Some(accounts) = &self.accounts {
            std::fs::write(node.dir.path().join("accounts.conf"), accounts)
                .map_err(|source| Error::Io { what: "writing the accounts", source })?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.path().join("nats-server.log"))
            .map_err(|source| Error::Io { what: "opening a node's log", source })?;
        let child = Command::new(nats_server_binary()?)
            .arg("-c")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|source| Error::Io { what: "spawning nats-server", source })?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    /// Waits until node `i` answers healthy (`/healthz`: JetStream up, meta leader known,
    /// its streams caught up).
    pub fn wait_healthy(&mut self, i: usize) -> Result<(), Error> {
        let start = Instant::now();
        let monitor = self.nodes[i].monitor_port;
        let mut pause = Duration::from_millis(5);
        while start.elapsed() < HEALTHY_DEADLINE {
            if http_get_status(monitor, "/healthz") == Some(200) {
                return Ok(());
            }
            if let Some(child) = self.nodes[i].child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log = self.log(i);
                let kind =
                    if crate::port_taken(&log) { std::io::ErrorKind::AddrInUse } else { std::io::ErrorKind::Other };
                return Err(Error::Io {
                    what: "nats-server cluster node",
                    source: std::io::Error::new(kind, format!("exited early with {status}: {log}")),
                });
            }
            // Polling the health endpoint with a short backoff, bounded by the deadline.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        Err(Error::NotReady("nats-server cluster node", HEALTHY_DEADLINE))
    }

    /// How many nodes the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's client URL, comma-separated: the seed list a platform team gives
    /// `NATS_URL`.
    pub fn urls(&self) -> String {
        (0..self.nodes.len()).map(|i| self.url(i)).collect::<Vec<_>>().join(",")
    }

    /// Node `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Node `i`'s client port.
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// Node `i`'s server name (`n<i>`), as JetStream reports leaders and peers.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// Node `i`'s monitoring port.
    pub fn monitor_port(&self, i: usize) -> u16 {
        self.nodes[i].monitor_port
    }

    /// Whether node `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.nodes[i].child.is_some()
    }

    /// SIGKILLs node `i` (an outage, not a clean stop); its store is kept.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops node `i` as a rolling upgrade does (SIGTERM: leadership handed over, then
    /// exit), waiting for it to exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            // `kill -TERM` through the system utility keeps this crate free of libc.
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Puts node `i` in lame-duck mode as the NATS Helm chart's upgrade does
    /// (`nats-server --signal ldm=<pid>`: it stops accepting clients, tells the connected
    /// ones it is going, hands over its leaderships, and exits once its clients are gone or
    /// `lame_duck_duration` is over). Returns at once; [`NatsCluster::wait_exit`] waits.
    pub fn signal_lame_duck(&mut self, i: usize) -> Result<(), Error> {
        let Some(child) = &self.nodes[i].child else { return Ok(()) };
        let signal = Command::new(nats_server_binary()?)
            .arg("--signal")
            .arg(format!("ldm={}", child.id()))
            .status()
            .map_err(|source| Error::Io { what: "signalling lame-duck mode", source })?;
        if signal.success() {
            Ok(())
        } else {
            Err(Error::Io { what: "nats-server --signal ldm", source: std::io::Error::other(signal.to_string()) })
        }
    }

    /// Waits for node `i` to exit by itself (after lame-duck mode); its store is kept.
    pub fn wait_exit(&mut self, i: usize) -> Result<(), Error> {
        let Some(mut child) = self.nodes[i].child.take() else { return Ok(()) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(Error::NotReady("a node in lame-duck mode to exit", Duration::from_secs(60)))
    }

    /// Lame-duck mode, then the exit: a node's part of a rolling upgrade.
    pub fn lame_duck(&mut self, i: usize) -> Result<(), Error> {
        self.signal_lame_duck(i)?;
        self.wait_exit(i)
    }

    /// Freezes node `i` (SIGSTOP): its process stops, its sockets stay open, as a node that
    /// lost power behind a switch or a partition looks to its clients.
    pub fn freeze(&mut self, i: usize) {
        if let Some(child) = &self.nodes[i].child {
            let _ = Command::new("kill").args(["-STOP", &child.id().to_string()]).status();
        }
    }

    /// Thaws a frozen node `i` (SIGCONT).
    pub fn thaw(&mut self, i: usize) {
        if let Some(child) = &self.nodes[i].child {
            let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
        }
    }

    /// The client connections node `i` holds, by name (each adapter names its connection
    /// `<service>/<instance>`), from its monitoring endpoint.
    pub fn client_names(&self, i: usize) -> Option<Vec<String>> {
        let (status, body) = http_get(self.nodes[i].monitor_port, "/connz?limit=1024")?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some(
            v["connections"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect(),
        )
    }

    /// Starts node `i` again on its ports and store, and waits until it is healthy.
    pub fn start_node(&mut self, i: usize) -> Result<(), Error> {
        if self.nodes[i].child.is_none() {
            self.spawn(i)?;
        }
        self.wait_healthy(i)
    }

    /// Kills node `i`, deletes its store (its disk is lost), and starts it again empty: the
    /// cluster must bring it back its replicas.
    pub fn wipe_and_start(&mut self, i: usize) -> Result<(), Error> {
        self.kill(i);
        let store = self.nodes[i].store();
        if store.exists() {
            std::fs::remove_dir_all(&store).map_err(|source| Error::Io { what: "wiping a node's store", source })?;
        }
        self.start_node(i)
    }

    /// Node `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.nodes[i].dir.path().join("nats-server.log")).unwrap_or_default()
    }

    /// Waits until every stream's (and KV bucket's) leader sees all its followers current:
    /// a replica group just formed may not elect a new leader if a node goes at once, which
    /// is not what the tests mean to measure.
    pub fn wait_streams_current(&self) -> Result<(), Error> {
        let start = Instant::now();
        while start.elapsed() < HEALTHY_DEADLINE {
            let mut all_current = true;
            for i in (0..self.nodes.len()).filter(|i| self.is_running(*i)) {
                let Some((200, body)) =
                    http_get(self.nodes[i].monitor_port, "/jsz?accounts=true&streams=true&config=true")
                else {
                    all_current = false;
                    continue;
                };
                let jsz: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                for account in jsz["account_details"].as_array().cloned().unwrap_or_default() {
                    for s in account["stream_detail"].as_array().cloned().unwrap_or_default() {
                        let cluster = &s["cluster"];
                        if cluster["leader"].as_str() != Some(self.nodes[i].name.as_str()) {
                            continue;
                        }
                        let want = s["config"]["num_replicas"].as_u64().unwrap_or(1) as usize;
                        let current = cluster["replicas"]
                            .as_array()
                            .map_or(0, |r| r.iter().filter(|p| p["current"].as_bool() == Some(true)).count());
                        if current + 1 < want {
                            all_current = false;
                        }
                    }
                }
            }
            if all_current {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(Error::NotReady("stream replicas current", HEALTHY_DEADLINE))
    }

    /// A stream's placement as the running nodes report it: its leader's node index, if it
    /// has one, and its replica count (leader plus followers).
    pub fn placement(&self, stream: &str) -> Option<(Option<usize>, usize)> {
        for i in (0..self.nodes.len()).filter(|i| self.is_running(*i)) {
            let Some((200, body)) = http_get(self.nodes[i].monitor_port, "/jsz?accounts=true&streams=true&config=true")
            else {
                continue;
            };
            let Ok(jsz) = serde_json::from_str::<serde_json::Value>(&body) else { continue };
            let accounts = jsz["account_details"].as_array().cloned().unwrap_or_default();
            for account in accounts {
                for s in account["stream_detail"].as_array().cloned().unwrap_or_default() {
                    if s["name"] != stream {
                        continue;
                    }
                    let replicas = s["config"]["num_replicas"].as_u64().unwrap_or(1) as usize;
                    let leader =
                        s["cluster"]["leader"].as_str().and_then(|l| self.nodes.iter().position(|n| n.name == l));
                    return Some((leader, replicas));
                }
            }
        }
        None
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}
