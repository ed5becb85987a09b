//! `cargo xtask image [ADAPTER…]`: each adapter's OCI image, built without pulling
//! anything (see `crates/sre-testkit/src/image.rs` for the layout), written as an OCI
//! archive under `target/images/` with its size and digest printed. `--rootfs DIR` writes
//! one adapter's root file system instead: the Containerfile copies it onto `scratch`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::inventory::ADAPTERS;
use crate::oci;
use crate::util::{cargo, root, status};

/// Where the CA bundle is read from (Debian's `ca-certificates`).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The repository the images say they come from.
const SOURCE: &str = "https://github.com/sre-integration/sre-integration";

/// Builds `adapters` (every adapter when empty) with cargo's `profile` and writes their
/// images, or with `rootfs` the one adapter's root file system.
pub(crate) fn image(adapters: &[String], profile: &str, rootfs: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    let adapters: Vec<&str> = if adapters.is_empty() {
        ADAPTERS.to_vec()
    } else {
        for a in adapters {
            if !ADAPTERS.contains(&a.as_str()) {
                bail!("{a}: not an adapter (one of {})", ADAPTERS.join(", "));
            }
        }
        adapters.iter().map(String::as_str).collect()
    };
    if rootfs.is_some() && adapters.len() != 1 {
        bail!("--rootfs writes one adapter's root file system: name exactly one adapter");
    }
    let mut build = cargo();
    build.args(["build", "--locked", "--profile", profile]);
    for a in &adapters {
        build.args(["-p", a]);
    }
    if profile == "release" {
        // Symbols stay (readable panics); debug info goes.
        build.env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo");
    }
    status(&mut build)?;
    let dir = if profile == "dev" { "debug" } else { profile };
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let bins = target.join(dir);
    if !Path::new(CA_BUNDLE).is_file() {
        bail!("{CA_BUNDLE} is missing: install Debian's ca-certificates (the images carry it)");
    }
    if let Some(out) = rootfs {
        let fs = oci::rootfs(&bins.join(adapters[0]), Path::new(CA_BUNDLE))?;
        oci::write_rootfs(&fs, out)?;
        eprintln!("xtask: {} root file system at {} ({} bytes)", adapters[0], out.display(), fs.file_bytes());
        return Ok(vec![out.to_owned()]);
    }
    let images = target.join("images");
    std::fs::create_dir_all(&images).with_context(|| format!("creating {}", images.display()))?;
    let version = env!("CARGO_PKG_VERSION");
    let created = created()?;
    let mut written = Vec::new();
    println!("{:<28} {:>9} {:>6}  digest", "image", "layer MB", "files");
    for a in adapters {
        let fs = oci::rootfs(&bins.join(a), Path::new(CA_BUNDLE))?;
        let out = images.join(format!("{a}-{version}.oci.tar"));
        let built = oci::write_oci_archive(&fs, &oci::Meta { name: a, version, source: SOURCE, created }, &out)?;
        println!(
            "{:<28} {:>9.1} {:>6}  {}",
            format!("{a}:{version}"),
            built.layer_bytes as f64 / 1e6,
            fs.entries.len(),
            built.digest
        );
        written.push(out);
    }
    eprintln!(
        "xtask: OCI archives in {} (load with `podman load -i FILE`, or `skopeo copy oci-archive:FILE docker://REGISTRY/NAME:TAG`)",
        images.display()
    );
    Ok(written)
}

/// The images' date: `SOURCE_DATE_EPOCH` when set (as reproducible builds agree), else the
/// time of the commit built, so one commit always gives the same digests.
fn created() -> anyhow::Result<u64> {
    if let Some(v) = std::env::var_os("SOURCE_DATE_EPOCH") {
        return v.to_str().and_then(|v| v.parse().ok()).context("SOURCE_DATE_EPOCH is not a number of seconds");
    }
    let out = std::process::Command::new("git").current_dir(root()).args(["log", "-1", "--format=%ct"]).output();
    Ok(out.ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(0))
}
