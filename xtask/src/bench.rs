//! `cargo xtask bench`: every adapter's benchmark against its own baseline measured in the
//! same run, then each release binary's start-up time and idle RSS, as one report.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::inventory::ADAPTERS;
use crate::util::{Stack, cargo, http, rfc3339, root, spawn, status};

/// Runs each adapter's benchmark (release build), keeps the table lines it prints, then
/// measures each release binary's start-up time (spawn to `/readyz` 200 with nats-server
/// up) and idle RSS, and prints it all as one report.
pub(crate) fn bench() -> anyhow::Result<()> {
    let tools = crate::setup::setup()?;
    // Some benchmarks run another adapter's release binary beside their own (the
    // receiver benchmark measures against the ingress path): build them all first.
    status(cargo().args(["build", "--release", "--workspace", "--bins"]))?;
    let mut report = String::new();
    let mut summaries: Vec<std::collections::BTreeMap<String, String>> = Vec::new();
    for adapter in ADAPTERS {
        eprintln!("xtask: benchmarking {adapter}");
        let out = cargo().args(["bench", "-p", adapter]).stderr(std::process::Stdio::inherit()).output()?;
        anyhow::ensure!(out.status.success(), "cargo bench -p {adapter} failed");
        let text = String::from_utf8_lossy(&out.stdout);
        report.push_str(&format!("\n## {adapter}\n\n"));
        for line in text.lines().filter(|l| {
            l.starts_with('|')
                || l.contains("benchmark")
                || l.contains("p99")
                || l.contains("RSS")
                || l.starts_with("fleet:")
                || l.starts_with("group")
                || l.trim_start().starts_with(|c: char| c.is_ascii_digit())
        }) {
            report.push_str(line);
            report.push('\n');
        }
        // `summary: key=value …`, the figures of the one table.
        let summary = text
            .lines()
            .find_map(|l| l.strip_prefix("summary: "))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        summaries.push(summary);
    }
    // Start-up and idle memory, each binary on its demo configuration.
    let state = root().join(".tools/bench");
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state)?;
    let mut stack = Stack(Vec::new());
    let nats = spawn(
        Command::new(&tools.nats_server)
            .args(["-js", "-a", "127.0.0.1", "-p", "4299", "-m", "8299", "-sd"])
            .arg(state.join("jetstream"))
            .stderr(std::process::Stdio::null()),
        "nats-server",
    )?;
    stack.0.push(("nats-server".to_owned(), nats));
    // Start-up is measured from a ready bus, not from a bus still starting.
    let waited = Instant::now();
    while http(8299, "GET", "/healthz?js-enabled-only=true", "") != Some(200) {
        anyhow::ensure!(waited.elapsed() < Duration::from_secs(10), "nats-server did not become ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root().join("target"));
    let mut startup_idle = Vec::new();
    for (i, adapter) in ADAPTERS.iter().enumerate() {
        let port = 8180 + i as u16;
        let mut cmd = Command::new(target.join("release").join(adapter));
        cmd.arg("--config")
            .arg(root().join("deploy/demo").join(format!("{adapter}.yaml")))
            .env("NATS_URL", "nats://127.0.0.1:4299")
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in crate::run::DEMO_SECRETS {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let child = spawn(&mut cmd, adapter)?;
        let pid = child.id();
        stack.0.push(((*adapter).to_owned(), child));
        while http(port, "GET", "/readyz", "") != Some(200) {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "{adapter} did not become ready");
            std::thread::sleep(Duration::from_millis(5));
        }
        let startup = started.elapsed();
        std::thread::sleep(Duration::from_secs(2));
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .map_or("?".to_owned(), |kb| format!("{:.1} MB", kb / 1024.0));
        startup_idle.push((format!("{} ms", startup.as_millis()), rss));
    }
    drop(stack);
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let table = bench_table(&summaries, &startup_idle);
    println!(
        "# sre-integration benchmarks ({cores} cores, {})\n\n{table}\nDetails of each benchmark:\n{report}",
        rfc3339(std::time::SystemTime::now())
    );
    Ok(())
}

/// The one table: each adapter's headline figure against its baseline measured in the same
/// run, latency, memory and start-up.
fn bench_table(summaries: &[std::collections::BTreeMap<String, String>], startup_idle: &[(String, String)]) -> String {
    let get = |i: usize, k: &str| summaries.get(i).and_then(|m| m.get(k)).cloned().unwrap_or_else(|| "?".to_owned());
    let ratio = |a: &str, b: &str| match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(a), Ok(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "?".to_owned(),
    };
    let mut t = String::from(
        "| adapter | measure | adapter | baseline (same run) | ratio | latency | peak RSS | start-up | idle RSS |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for (i, adapter) in ADAPTERS.iter().enumerate() {
        let (startup, idle) = startup_idle.get(i).cloned().unwrap_or_default();
        let peak = format!("{} MB", get(i, "peak_rss_mb"));
        let row = match *adapter {
            "alertmanager-ingress" => format!(
                "alerts/s, webhooks of 100 | {} | raw JetStream publish {} | {} | p50 {} ms, p99 {} ms at 1,000 alerts/s",
                get(i, "rate"),
                get(i, "baseline"),
                ratio(&get(i, "rate"), &get(i, "baseline")),
                get(i, "p50_ms"),
                get(i, "p99_ms")
            ),
            "argocd-sync" => format!(
                "CPU per cycle, {} apps, lean list | {} ms | serde_json skip-only parse of that list {} ms | {} | {} kB per app on the wire (poll every 30 s)",
                get(i, "apps"),
                get(i, "cycle_cpu_ms"),
                get(i, "baseline_cpu_ms"),
                ratio(&get(i, "cycle_cpu_ms"), &get(i, "baseline_cpu_ms")),
                get(i, "wire_kb_per_app")
            ),
            _ => format!(
                "facts/s (1 replica) | {} | bare JetStream consumer {} | {} | publish → vendor at 100/s: p50 {} ms (bare {}), p99 {} ms (bare {})",
                get(i, "rate"),
                get(i, "baseline"),
                ratio(&get(i, "rate"), &get(i, "baseline")),
                get(i, "p50_ms"),
                get(i, "base_p50_ms"),
                get(i, "p99_ms"),
                get(i, "base_p99_ms")
            ),
        };
        t.push_str(&format!("| {adapter} | {row} | {peak} | {startup} | {idle} |\n"));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_table_puts_each_adapter_against_its_own_baseline() {
        let parse = |l: &str| -> std::collections::BTreeMap<String, String> {
            l.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        };
        let summaries = vec![
            parse("rate=80000 baseline=100000 p50_ms=1.10 p99_ms=3.00 peak_rss_mb=30.0"),
            parse("apps=50000 cycle_cpu_ms=200 baseline_cpu_ms=100 peak_rss_mb=48.0 wire_kb_per_app=0.34"),
            parse("rate=2000 baseline=8000 p50_ms=1.30 p99_ms=2.20 base_p50_ms=0.80 base_p99_ms=1.40 peak_rss_mb=14.0"),
        ];
        let table = bench_table(&summaries, &[("70 ms".into(), "9.0 MB".into())]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2 + ADAPTERS.len(), "{table}");
        assert!(
            lines[2].contains("| 0.80x |")
                && lines[2].contains("p99 3.00 ms")
                && lines[2].contains("| 70 ms | 9.0 MB |")
        );
        assert!(
            lines[3].contains("50000 apps") && lines[3].contains("| 200 ms |") && lines[3].contains("| 2.00x |"),
            "{table}"
        );
        assert!(lines[3].contains("0.34 kB per app"), "{table}");
        assert!(lines[4].contains("| 0.25x |") && lines[4].contains("p99 2.20 ms (bare 1.40)"), "{table}");
        assert!(lines[5].contains("| ? |"), "a missing summary shows as unknown, not as zero: {table}");
    }
}
