//! `cargo xtask ci`, which `.ci/run` runs: setup, fmt, clippy with warnings denied, the
//! publish dry run of sre-contracts, the proto compatibility check once a release exists,
//! and the tests (the crate-boundary check among them: `boundaries.rs`).

use std::process::Command;
use std::time::Instant;

use crate::util::{cargo, root, status};

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
