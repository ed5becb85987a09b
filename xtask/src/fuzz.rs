//! `cargo xtask fuzz`: the webhook payload fuzz target. cargo-fuzz needs nightly
//! features; `RUSTC_BOOTSTRAP=1` lets the stable toolchain build it.

use std::process::Stdio;

use crate::util::{cargo, root, status};

/// Runs the target `runs` times, installing cargo-fuzz first when missing.
pub(crate) fn fuzz(runs: u64) -> anyhow::Result<()> {
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
