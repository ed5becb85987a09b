//! Every adapter's image, run as the chart runs it: a read-only root file system, uid
//! 65532, no capabilities, the configuration mounted where the image's default command
//! reads it, against a real nats-server. Each becomes ready and does its work (an alert
//! through the ingress becomes one Jira issue and one PagerDuty page through the sinks
//! running from their images; argocd-sync reports an application going Degraded), then
//! exits 0 on SIGTERM within the chart's grace period.
//!
//! The images are built here as `cargo xtask image` builds them (`sre_testkit::image`), from
//! the binaries of this test build, and run with podman (Debian's, with runc and the vfs
//! storage driver, in a storage of the test's own). Where podman is not installed the test
//! says so and passes, except under CI (`CI` set), where `cargo xtask setup` installs it.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tokio::time::Instant;

use prost::Message;
use sre_contracts::domain::v1::RecordHealthCheckRequested;
use sre_contracts::{BusMessage, streams};
use sre_testkit::argocd::{App, FakeArgoCd};
use sre_testkit::bus::eventually;
use sre_testkit::domain::Domain;
use sre_testkit::image::{Meta, NONROOT, rootfs, write_oci_archive};
use sre_testkit::jira::{FakeJira, Flavor};
use sre_testkit::pagerduty::FakePagerDuty;
use sre_testkit::service::http_request;
use sre_testkit::stack::{adapter_bin, password};
use sre_testkit::{NatsServer, free_port};

const JIRA_TOKEN: &str = "jira-pat-0123456789";
const ROUTING_KEY: &str = "R0UT1NGKEY0123456789ABCDEFGHIJKL";
const ARGOCD_TOKEN: &str = "argocd-token-0123456789";
/// The charts' `terminationGracePeriodSeconds`.
const GRACE: Duration = Duration::from_secs(30);

/// podman with a storage, run directory and configuration of its own.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // This machine's cgroups need runc (crun refuses hybrid mode); its rlimits cannot be
        // raised to podman's defaults.
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=4096:4096\"]\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
        )
        .expect("containers.conf");
        Self { dir }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(["--storage-driver", "vfs"]);
        c
    }

    fn output(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("podman runs")
    }

    /// Runs podman with `args`; panics with its error unless it succeeds.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(out.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.output(&["rm", "--force", "--all", "--time", "0"]);
    }
}

/// One adapter running from its image.
struct Running {
    name: &'static str,
    port: u16,
    started: Instant,
}

fn podman_installed() -> bool {
    Command::new("podman").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Builds `name`'s image from this build's binary and loads it: its reference.
fn build_and_load(podman: &Podman, name: &str, dir: &Path) -> String {
    let fs = rootfs(&adapter_bin(name), Path::new("/etc/ssl/certs/ca-certificates.crt")).expect("root fs");
    let archive = dir.join(format!("{name}.oci.tar"));
    let meta = Meta { name, version: env!("CARGO_PKG_VERSION"), source: "https://example.com", created: 0 };
    let built = write_oci_archive(&fs, &meta, &archive).expect("image");
    println!("{name}: image {} ({:.1} MB layer)", built.digest, built.layer_bytes as f64 / 1e6);
    let loaded = podman.ok(&["load", "--quiet", "--input", archive.to_str().expect("utf-8")]);
    assert!(loaded.contains(&format!("{name}:{}", env!("CARGO_PKG_VERSION"))), "{loaded}");
    format!("localhost/{name}:{}", env!("CARGO_PKG_VERSION"))
}

/// Starts `name` from `image` as the chart does, with `config` mounted and `env` set.
fn start(podman: &Podman, image: &str, name: &'static str, dir: &Path, config: &str, env: &[(&str, &str)]) -> Running {
    use std::os::unix::fs::PermissionsExt;
    let path: PathBuf = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config).expect("config");
    // The ConfigMap's files are world-readable; the adapter is not root.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("mode");
    let port = free_port().expect("port");
    let mut args: Vec<String> = [
        "run",
        "--detach",
        "--name",
        name,
        "--read-only",
        "--read-only-tmpfs=false",
        "--tmpfs",
        "/tmp",
        "--user",
        &format!("{NONROOT}:{NONROOT}"),
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--network",
        "host",
        "--volume",
        &format!("{}:/etc/sre/config/config.yaml:ro", path.display()),
    ]
    .map(str::to_owned)
    .to_vec();
    let mut envs = vec![
        ("HTTP_ADDR".to_owned(), format!("127.0.0.1:{port}")),
        ("NATS_USER".to_owned(), name.to_owned()),
        ("NATS_PASSWORD".to_owned(), password(name)),
        ("POD_NAME".to_owned(), format!("{name}-0")),
    ];
    envs.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    for (k, v) in envs {
        args.push("--env".to_owned());
        args.push(format!("{k}={v}"));
    }
    args.push(image.to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    podman.ok(&args);
    Running { name, port, started }
}

async fn ready(podman: &Podman, r: &Running) {
    let port = r.port;
    let ok = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if tokio::task::spawn_blocking(move || sre_testkit::http_get_status(port, "/readyz")).await.expect("join")
                == Some(200)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if ok.is_err() {
        panic!("{} not ready from its image:\n{}", r.name, logs(podman, r.name));
    }
    println!("{}: ready {:.1} s after `podman run`", r.name, r.started.elapsed().as_secs_f64());
}

fn logs(podman: &Podman, name: &str) -> String {
    let out = podman.output(&["logs", name]);
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_image_runs_read_only_as_nonroot_does_its_work_and_stops_on_sigterm() {
    if !podman_installed() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the image test: `cargo xtask setup` installs podman and runc"
        );
        eprintln!("SKIPPED: podman is not installed (`cargo xtask setup` installs it with runc): no image was run");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let podman = Podman::new();
    let images: Vec<String> =
        sre_testkit::inventory::ADAPTERS.iter().map(|a| build_and_load(&podman, a, dir.path())).collect();

    let conf = dir.path().join("nats.conf");
    std::fs::write(&conf, sre_testkit::stack::deploy_accounts()).expect("nats.conf");
    let nats = NatsServer::start_with_config(&conf).expect("nats-server from deploy/nats");
    let domain_client = async_nats::ConnectOptions::with_user_and_password("sre-domain".into(), password("sre-domain"))
        .connect(nats.url())
        .await
        .expect("the domain connects");
    let js = async_nats::jetstream::new(domain_client);
    assert_eq!(sre_testkit::domain::provision(&js).await, Ok(3), "the domain provisions the streams");
    let domain = Domain::start(js.clone(), false, std::sync::Arc::new(|_: &str| {}));
    let jira = FakeJira::start(Flavor::DataCenter, &format!("Bearer {JIRA_TOKEN}"), &["OPS"]).await.expect("jira");
    let pagerduty = FakePagerDuty::start().await.expect("pagerduty");
    let argo = FakeArgoCd::start(ARGOCD_TOKEN, vec![App::new("payments", "production")]).await.expect("argo cd");

    let url = nats.url();
    let no_streams = "runtime:\n  bus:\n    manage_streams: false\n";
    let d = dir.path();
    let running = [
        start(
            &podman,
            &images[0],
            "alertmanager-ingress",
            d,
            &format!(
                "alertmanager_integration:\n  auto_create_incident: {{enabled: true, min_severity: high}}\n{no_streams}"
            ),
            &[("NATS_URL", &url)],
        ),
        start(
            &podman,
            &images[1],
            "argocd-sync",
            d,
            &format!(
                "argocd_integration:\n  poll_interval: 1s\n  argocd_server:\n    - url: {}\n      secret_ref: sys/argocd\n  \
                 environments: [production]\n{no_streams}",
                argo.url()
            ),
            &[("NATS_URL", &url), ("SECRET_SYS_ARGOCD_TOKEN", ARGOCD_TOKEN)],
        ),
        start(
            &podman,
            &images[2],
            "ticketing-sink",
            d,
            &format!(
                "ticketing_integration:\n  default_provider: jira\n  jira:\n    base_url: {}\n    deployment: data_center\n    \
                 project_key: OPS\n    secret_ref: sys/jira\n{no_streams}",
                jira.url()
            ),
            &[("NATS_URL", &url), ("SECRET_SYS_JIRA_TOKEN", JIRA_TOKEN)],
        ),
        start(
            &podman,
            &images[3],
            "paging-sink",
            d,
            &format!(
                "paging_integration:\n  default_provider: pagerduty\n  pagerduty:\n    routing_key_ref: sys/pagerduty\n    \
                 base_url: {}\n{no_streams}",
                pagerduty.url()
            ),
            &[("NATS_URL", &url), ("SECRET_SYS_PAGERDUTY_ROUTING_KEY", ROUTING_KEY)],
        ),
    ];
    for r in &running {
        ready(&podman, r).await;
    }
    let version = podman.ok(&["exec", "alertmanager-ingress", "/usr/local/bin/adapter", "--version"]);
    assert!(version.starts_with("alertmanager-ingress "), "{version}");
    // The images say who they run as, for a runtime that is not told (and the chart's
    // runAsUser agrees).
    for image in &images {
        let user = podman.ok(&["image", "inspect", "--format", "{{.Config.User}}", image]);
        assert_eq!(user, format!("{NONROOT}:{NONROOT}"), "{image}");
    }

    // The ingress takes an alert from Alertmanager; the sinks open one ticket and one page.
    let (_, body) = sre_testkit::stack::load_webhook(0, true);
    let ingress = running[0].port;
    let answer = tokio::task::spawn_blocking(move || {
        http_request(
            ingress,
            "POST",
            "/webhooks/alertmanager",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    })
    .await
    .expect("join");
    assert_eq!(answer.as_ref().map(|a| a.0), Some(200), "{answer:?}");
    eventually("one Jira issue and one PagerDuty page from the images", Duration::from_secs(60), || async {
        jira.issues().len() == 1 && pagerduty.alerts().len() == 1
    })
    .await;
    assert_eq!(domain.incidents().len(), 1);
    argo.set_health("payments", "Degraded", "Deployment payments exceeded its progress deadline");
    eventually("argocd-sync reports the Degraded application", Duration::from_secs(30), || async {
        sre_testkit::bus::read_stream(&js, streams::INTENTS).await.iter().any(|(subject, _, payload)| {
            subject == RecordHealthCheckRequested::SUBJECT
                && RecordHealthCheckRequested::decode(payload.clone()).is_ok_and(|h| h.app.ends_with("payments"))
        })
    })
    .await;

    // SIGTERM, as the kubelet stops a pod: each exits 0 within the grace period.
    for r in &running {
        let started = Instant::now();
        podman.ok(&["kill", "--signal", "TERM", r.name]);
        let code = tokio::task::block_in_place(|| podman.ok(&["wait", r.name]));
        let took = started.elapsed();
        assert_eq!(code, "0", "{} exited {code} on SIGTERM:\n{}", r.name, logs(&podman, r.name));
        assert!(took < GRACE, "{} took {took:?} to stop, over the grace period", r.name);
        println!("{}: exit 0 {:.2} s after SIGTERM", r.name, took.as_secs_f64());
    }
}
