//! Project automation (`cargo xtask …`), instead of shell scripts: one module per verb.
// xtask runs no async runtime: real time only.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::disallowed_types)]

mod bench;
mod boundaries;
mod ci;
mod faults;
mod fuzz;
// The lists the test kit keeps (adapters, bus users, demo ports), compiled here too; xtask
// uses only some of them.
#[allow(dead_code)]
#[path = "../../crates/sre-testkit/src/inventory.rs"]
mod inventory;
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
    /// Install nats-server, Helm (as a library), Alertmanager and promtool where missing.
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}
