//! `cargo xtask faults`: the whole-system fault tests alone, with their counts printed.

use crate::inventory::ADAPTERS;
use crate::util::{cargo, status};

/// The adapters are processes in the fault test: build them, then run it with its output.
pub(crate) fn faults(alerts: usize, cluster_only: bool) -> anyhow::Result<()> {
    let mut build = cargo();
    build.args(["build", "--bins"]);
    for adapter in ADAPTERS {
        build.args(["-p", adapter]);
    }
    status(&mut build)?;
    if !cluster_only {
        status(cargo().args(["test", "-p", "sre-testkit", "--test", "it", "--", "system::", "--nocapture"]))?;
    }
    status(cargo().env("SRE_FAULT_ALERTS", alerts.to_string()).args([
        "test",
        "-p",
        "sre-testkit",
        "--test",
        "it",
        "--",
        "cluster_faults::",
        "--nocapture",
    ]))
}
