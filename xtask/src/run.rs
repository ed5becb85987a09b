//! `cargo xtask run`: the demo stack on local defaults (nats-server with the deployed
//! permissions, the four adapters, the stand-ins, Prometheus and Alertmanager when
//! installed) and its scenario, until Ctrl-C.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::inventory::{ADAPTERS, BUS_USERS, demo, password_var};
use crate::util::{Stack, cargo, http, http_answer, on_path, rfc3339, root, spawn, status};

/// Secrets of the demo configurations (placeholders the stand-ins accept; loopback only).
pub(crate) const DEMO_SECRETS: [(&str, &str); 10] = [
    ("SECRET_DEMO_ARGOCD_TOKEN", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkZW1vIn0.ZGVtbw"),
    ("SECRET_DEMO_JIRA_TOKEN", "demo-jira-pat"),
    ("SECRET_DEMO_GITHUB_TOKEN", "demo-github-token"),
    ("SECRET_DEMO_PAGERDUTY_ROUTING_KEY", "DEMOR0UT1NGKEY0123456789ABCDEFGH"),
    ("SECRET_DEMO_OPSGENIE_API_KEY", "demo-opsgenie-key"),
    // The stand-in PagerDuty's REST API key (notes on incidents).
    ("SECRET_DEMO_PAGERDUTY_REST_API_KEY", "u+PDrestKEY0123456789"),
    // The webhook secrets the stand-ins sign (or send) their webhooks with (sre-standins).
    ("SECRET_DEMO_PAGERDUTY_WEBHOOK_SECRET", "demo-pagerduty-webhook"),
    ("SECRET_DEMO_OPSGENIE_WEBHOOK_SECRET", "demo-opsgenie-webhook"),
    ("SECRET_DEMO_JIRA_WEBHOOK_SECRET", "demo-jira-webhook"),
    ("SECRET_DEMO_GITHUB_WEBHOOK_SECRET", "demo-github-webhook"),
];

/// The demo's alerts: (alert name, severity, summary, description).
const DEMO_ALERTS: [(&str, &str, &str, &str); 2] = [
    (
        "CheckoutErrorRate",
        "critical",
        "checkout-api error rate above 5%",
        "7.2% of checkout requests fail (threshold 5%).",
    ),
    ("CheckoutLatency", "high", "checkout-api p99 latency above 2 s", "p99 is 2.4 s (threshold 2 s) for 10 minutes."),
];

fn demo_alert(name: &str, ends_at: Option<&str>) -> serde_json::Value {
    let (_, severity, summary, description) =
        DEMO_ALERTS.iter().copied().find(|a| a.0 == name).unwrap_or(DEMO_ALERTS[0]);
    let mut alert = serde_json::json!({
        "labels": {"alertname": name, "severity": severity, "service": "checkout-api",
                   "environment": "production", "team": "payments", "cluster": "demo-1"},
        "annotations": {"summary": summary, "description": description,
                        "runbook_url": "https://runbooks.example.com/checkout/errors"},
        "generatorURL": "http://prometheus.demo:9090/graph?g0.expr=errors",
    });
    if let Some(t) = ends_at {
        alert["endsAt"] = serde_json::json!(t);
    }
    alert
}

/// Runs the demo on one server, or on a three-node cluster.
pub(crate) fn run(cluster: bool) -> anyhow::Result<()> {
    let tools = crate::setup::setup()?;
    status(cargo().args(["build", "--workspace", "--bins"]))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)).context("installing the Ctrl-C handler")?;
    let state = root().join(".tools/run");
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state)?;
    let mut stack = Stack(Vec::new());
    // The bus as deployed: deploy/nats/sre.conf's users and allow-lists, with the demo's
    // passwords (loopback only). The domain stand-in provisions the streams; each adapter
    // connects as its own user and may publish only what it should.
    let passwords: String = BUS_USERS.iter().map(|user| format!("{}: \"demo-{user}\"\n", password_var(user))).collect();
    let deploy = std::fs::read_to_string(root().join("deploy/nats/sre.conf")).context("deploy/nats/sre.conf")?;
    std::fs::write(state.join("nats.conf"), format!("{passwords}\n{deploy}"))?;
    let nodes: u16 = if cluster { 3 } else { 1 };
    for i in 0..nodes {
        let mut cmd = Command::new(&tools.nats_server);
        if cluster {
            // One node of the cluster deploy/nats/cluster.conf describes, on loopback.
            let routes: Vec<String> = (0..nodes).map(|n| format!("nats-route://127.0.0.1:{}", 6222 + n)).collect();
            let conf = state.join(format!("node-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: demo-{i}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\njetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{ name: sre-demo, listen: 127.0.0.1:{}, routes: [{}] }}\ninclude ./nats.conf\n",
                    4222 + i,
                    8222 + i,
                    state.join(format!("jetstream-{i}")).display(),
                    6222 + i,
                    routes.join(", ")
                ),
            )?;
            cmd.arg("-c").arg(conf);
        } else {
            cmd.arg("-c")
                .arg(state.join("nats.conf"))
                .args(["-js", "-a", "127.0.0.1", "-p", "4222", "-m", "8222", "-sd"])
                .arg(state.join("jetstream"));
        }
        cmd.stderr(std::fs::File::create(state.join(format!("nats-server-{i}.log")))?);
        let name = if cluster { format!("nats-server demo-{i}") } else { "nats-server".to_owned() };
        let child = spawn(&mut cmd, &name)?;
        stack.0.push((name, child));
    }
    // Credentials once, in the first seed; the other seeds are there for when it is down.
    let bus_url = |user: &str| {
        let mut seeds = vec![format!("nats://{user}:demo-{user}@127.0.0.1:4222")];
        seeds.extend((1..nodes).map(|i| format!("nats://127.0.0.1:{}", 4222 + i)));
        seeds.join(",")
    };
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root().join("target"));
    let standins = spawn(
        Command::new(target.join("debug").join("sre-standins"))
            .env("NATS_URL", bus_url("sre-domain"))
            .env("SRE_STANDINS_AUTO", "1"),
        "sre-standins",
    )?;
    stack.0.push(("sre-standins".to_owned(), standins));
    // Adapters start once the domain has provisioned the streams (nats-server's monitor
    // counts them), so none of them starts by retrying against missing streams.
    let deadline = Instant::now() + Duration::from_secs(30);
    let streams = || {
        let (_, body) = http_answer(8222, "GET", "/jsz", "")?;
        let n = body.split("\"streams\": ").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?;
        n.parse::<u32>().ok()
    };
    while streams().unwrap_or(0) < 3 {
        if Instant::now() > deadline || stop.load(Ordering::SeqCst) {
            anyhow::bail!("the domain stand-in did not provision the streams; see its output above");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for (i, adapter) in ADAPTERS.iter().enumerate() {
        let config = root().join("deploy/demo").join(format!("{adapter}.yaml"));
        let mut cmd = Command::new(target.join("debug").join(adapter));
        cmd.arg("--config")
            .arg(&config)
            .env("NATS_URL", bus_url(adapter))
            .env("HTTP_ADDR", format!("127.0.0.1:{}", demo::ADAPTER_PORTS + i as u16))
            .env("POD_NAME", format!("{adapter}-demo"))
            // The stand-ins' OTLP receiver: the demo prints the first alert's trace.
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{}", demo::OTLP));
        let log = std::fs::File::create(state.join(format!("{adapter}.log")))?;
        cmd.stdout(log.try_clone()?).stderr(log);
        for (k, v) in DEMO_SECRETS {
            cmd.env(k, v);
        }
        stack.0.push(((*adapter).to_owned(), spawn(&mut cmd, adapter)?));
    }
    for (i, adapter) in ADAPTERS.iter().enumerate() {
        let port = demo::ADAPTER_PORTS + i as u16;
        let deadline = Instant::now() + Duration::from_secs(60);
        while http(port, "GET", "/readyz", "") != Some(200) {
            if Instant::now() > deadline || stop.load(Ordering::SeqCst) {
                anyhow::bail!("{adapter} did not become ready; see {}", state.join(format!("{adapter}.log")).display());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "xtask: {adapter} ready on http://127.0.0.1:{port} (/healthz /readyz /metrics; logs in .tools/run/{adapter}.log)"
        );
    }
    // A local Prometheus (Debian's, installed with promtool) scraping the adapters with the
    // charts' alert rules loaded: the graphs and the alerts in Prometheus' own UI.
    if let Some(prometheus) = on_path("prometheus") {
        let mut config = String::from("global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\nrule_files:\n");
        for adapter in ADAPTERS {
            let rules = root().join("deploy/helm").join(adapter).join("files/alerts.yaml");
            config.push_str(&format!("  - {}\n", rules.display()));
        }
        config.push_str("scrape_configs:\n");
        for (i, adapter) in ADAPTERS.iter().enumerate() {
            config.push_str(&format!(
                "  - job_name: {adapter}\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
                demo::ADAPTER_PORTS + i as u16
            ));
        }
        let file = state.join("prometheus.yml");
        std::fs::write(&file, config)?;
        let child = spawn(
            Command::new(prometheus)
                .arg(format!("--config.file={}", file.display()))
                .arg(format!("--storage.tsdb.path={}", state.join("prometheus").display()))
                .arg("--web.listen-address=127.0.0.1:9090")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(state.join("prometheus.log"))?),
            "prometheus",
        )?;
        stack.0.push(("prometheus".to_owned(), child));
        eprintln!(
            "xtask: prometheus on http://127.0.0.1:9090 scraping the adapters, their alert rules loaded \
             (/alerts; dashboards: deploy/helm/*/files/dashboard.json)"
        );
    }
    // The scenario: a critical alert through a real Alertmanager (or straight to the
    // ingress when none is installed), then its resolution 30 s later.
    let am_port = 9093;
    let am = if tools.alertmanager.exists() {
        let config = state.join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: sre\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 5s\n  repeat_interval: 1h\n\
                 receivers:\n  - name: sre\n    webhook_configs:\n      - url: http://127.0.0.1:{}/webhooks/alertmanager\n        send_resolved: true\n",
                demo::ADAPTER_PORTS
            ),
        )?;
        let child = spawn(
            Command::new(&tools.alertmanager)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.path={}", state.join("alertmanager").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
                .arg("--cluster.listen-address=")
                .stderr(std::fs::File::create(state.join("alertmanager.log"))?),
            "alertmanager",
        )?;
        stack.0.push(("alertmanager".to_owned(), child));
        let deadline = Instant::now() + Duration::from_secs(30);
        while http(am_port, "GET", "/-/ready", "") != Some(200) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        true
    } else {
        eprintln!("xtask: no Alertmanager installed; sending the webhook directly");
        false
    };
    let fire = |name: &str, ends_at: Option<String>| -> Option<u16> {
        let alert = demo_alert(name, ends_at.as_deref());
        if am {
            http(am_port, "POST", "/api/v2/alerts", &serde_json::json!([alert]).to_string())
        } else {
            let status = if ends_at.is_some() { "resolved" } else { "firing" };
            let mut alert = alert;
            alert["status"] = serde_json::json!(status);
            alert["startsAt"] = serde_json::json!("2026-01-01T00:00:00Z");
            alert["fingerprint"] = serde_json::json!(format!("d3m0{:012x}", name.len()));
            let body = serde_json::json!({"version": "4", "groupKey": format!("{{}}:{{alertname=\"{name}\"}}"),
                "status": status, "receiver": "sre", "groupLabels": {"alertname": name}, "commonLabels": {},
                "commonAnnotations": {}, "externalURL": "http://synthetic", "truncatedAlerts": 0, "alerts": [alert]});
            http(demo::ADAPTER_PORTS, "POST", "/webhooks/alertmanager", &body.to_string())
        }
    };
    eprintln!(
        "xtask: firing CheckoutErrorRate (critical, checkout-api; it resolves in 30 s) and CheckoutLatency (high: the \
         demo's business hours are one minute a day, so its page waits until the platform raises it). The timeline \
         follows; Ctrl-C stops everything."
    );
    let _ = fire("CheckoutErrorRate", None);
    let _ = fire("CheckoutLatency", None);
    let resolve_at = Instant::now() + Duration::from_secs(30);
    let mut resolved = false;
    while !stop.load(Ordering::SeqCst) {
        if !resolved && Instant::now() >= resolve_at {
            eprintln!("xtask: resolving CheckoutErrorRate");
            let _ = fire("CheckoutErrorRate", Some(rfc3339(std::time::SystemTime::now())));
            resolved = true;
        }
        for (name, child) in stack.0.iter_mut() {
            if let Some(s) = child.try_wait()? {
                eprintln!("xtask: {name} exited ({s}); stopping the rest");
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("xtask: stopping");
    Ok(())
}
