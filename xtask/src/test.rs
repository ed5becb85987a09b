//! `cargo xtask test`: the whole test suite, with nextest when installed, else cargo test
//! with one summed closing line.

use std::process::Stdio;

use anyhow::{Context, bail};

use crate::util::{cargo, status};

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs the suite; `args` go to the runner.
pub(crate) fn test(args: &[String]) -> anyhow::Result<()> {
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
