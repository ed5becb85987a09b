//! `cargo xtask ci`, which `.ci/run` runs: setup, fmt, clippy with warnings denied, the
//! publish dry run of sre-contracts, `buf breaking` against the last released contract, and
//! the tests (the crate-boundary check among them: `boundaries.rs`).

use std::time::Instant;

use crate::util::{cargo, status};

/// Everything CI checks.
pub(crate) fn ci() -> anyhow::Result<()> {
    let started = Instant::now();
    crate::setup::setup()?;
    status(cargo().args(["fmt", "--all", "--", "--check"]))?;
    status(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    status(cargo().args(["publish", "--dry-run", "--allow-dirty", "-p", "sre-contracts"]))?;
    check_proto_compatibility()?;
    crate::test::test(&[])?;
    eprintln!("xtask: ci passed in {:?}", started.elapsed());
    Ok(())
}

/// Runs `buf breaking` against the last released contract: the newest snapshot under
/// `crates/sre-contracts/releases/` (see `release.rs`).
fn check_proto_compatibility() -> anyhow::Result<()> {
    crate::release::check_against_last_release()
}
