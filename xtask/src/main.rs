//! Project automation (`cargo xtask …`), instead of shell scripts: one module per verb.
// xtask runs no async runtime: real time only.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_types)]

mod bench;
mod boundaries;
mod ci;
mod faults;
mod fuzz;
mod image;
// The lists the test kit keeps (adapters, bus users, demo ports), compiled here too; xtask
// uses only some of them.
#[allow(dead_code)]
#[path = "../../crates/sre-testkit/src/inventory.rs"]
mod inventory;
/// OCI images assembled without pulling anything, shared with the image test.
#[path = "../../crates/sre-testkit/src/image.rs"]
mod oci;
mod release;
mod run;
mod scaffold;
mod setup;
mod test;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// sre-integration automation.
#[derive(Parser)]
enum Task {
    /// Install nats-server, Helm (as a library), Alertmanager, promtool, podman and runc where missing.
    Setup,
    /// Run the test suite (extra arguments go to the test runner).
    Test {
        /// Arguments for nextest / cargo test.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Everything CI checks (`.ci/run`).
    Ci,
    /// The demo stack: nats-server, the adapters, stand-ins, a scenario; until Ctrl-C.
    Run {
        /// A local three-node JetStream cluster (ports 4222-4224) instead of one server.
        #[arg(long)]
        cluster: bool,
    },
    /// Every adapter's benchmark, then start-up time and idle RSS of each, in one report.
    Bench,
    /// The whole-system fault tests with their counts: on one nats-server, then on a
    /// three-node cluster.
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
    /// Build each adapter's OCI image without pulling anything: an OCI archive per adapter
    /// under target/images/, sizes and digests printed.
    Image {
        /// Adapters (all when none is named).
        adapters: Vec<String>,
        /// Cargo profile of the binaries (`release`, or `dev` for the test build's).
        #[arg(long, default_value = "release")]
        profile: String,
        /// Write the one named adapter's root file system to this directory instead (the
        /// Containerfile copies it onto `scratch`).
        #[arg(long)]
        rootfs: Option<std::path::PathBuf>,
    },
    /// The release (`.github/workflows/release.yml` runs it on a tag `v<version>`): versions,
    /// the contract against the last release, the workflow lint, the sre-contracts publish,
    /// the images (pushed and signed) and the charts (pushed). Outside the workflow only
    /// with `--dry-run`.
    Release {
        /// Run every step here and print the pushes and signatures instead of running them.
        #[arg(long)]
        dry_run: bool,
        /// Cargo profile of the images' binaries (`dev` for a quick dry run).
        #[arg(long, default_value = "release")]
        profile: String,
        /// Only these steps, comma-separated (the workflow runs each in its own job).
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<release::Step>,
        /// Record the contract as the release of sre-contracts' version
        /// (crates/sre-contracts/releases/v<version>/), and nothing else.
        #[arg(long)]
        snapshot_contract: bool,
    },
    /// Fuzz the webhook payload parser (installs cargo-fuzz when missing).
    Fuzz {
        /// libFuzzer runs.
        #[arg(long, default_value_t = 100_000)]
        runs: u64,
    },
}

#[derive(Subcommand)]
enum Scaffold {
    /// A new adapter: crate (config, service, tests), example configuration, Helm chart.
    Adapter {
        /// Crate and binary name, e.g. `servicenow-sink` (lowercase, digits, `-`).
        name: String,
    },
}

fn main() -> ExitCode {
    let result = match Task::parse() {
        Task::Setup => setup::setup().map(|_| ()),
        Task::Test { args } => setup::setup().and_then(|_| test::test(&args)),
        Task::Ci => ci::ci(),
        Task::Run { cluster } => run::run(cluster),
        Task::Bench => bench::bench(),
        Task::Faults { alerts, cluster_only } => setup::setup().and_then(|_| faults::faults(alerts, cluster_only)),
        Task::Scaffold { what: Scaffold::Adapter { name } } => scaffold::scaffold(&name),
        Task::Fuzz { runs } => fuzz::fuzz(runs),
        Task::Release { dry_run, profile, only, snapshot_contract } => {
            release::run(dry_run, &profile, &only, snapshot_contract)
        }
        Task::Image { adapters, profile, rootfs } => image::image(&adapters, &profile, rootfs.as_deref()).map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
