//! What every verb uses: the workspace root, cargo and other commands run with their
//! output, child processes stopped in order, loopback HTTP, and timestamps.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The workspace root.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap_or_else(|_| PathBuf::from(".."))
}

/// Variables `cargo run` sets for xtask itself. Build scripts (ring's among them) declare
/// `rerun-if-env-changed` on some of them, so passing xtask's values on to the cargo
/// commands it runs would rebuild those crates on every switch between a plain `cargo`
/// command and an xtask one.
fn is_package_var(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
        )
}

/// `cargo`, run at the workspace root without xtask's own package variables.
pub(crate) fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    cmd.current_dir(root());
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_package_var) {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// Runs `cmd`, saying so, and fails unless it succeeds.
pub(crate) fn status(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let s = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !s.success() {
        bail!("{cmd:?} failed with {s}");
    }
    Ok(())
}

/// `name` on `PATH`.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// The local stack; dropping it stops the adapters first (SIGTERM, graceful), then
/// nats-server, so nothing in flight loses its bus.
pub(crate) struct Stack(pub(crate) Vec<(String, Child)>);

impl Drop for Stack {
    fn drop(&mut self) {
        for (name, child) in self.0.iter_mut().rev() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(s)) = child.try_wait() {
                    eprintln!("xtask: {name} stopped ({s})");
                    break;
                }
                if Instant::now() > deadline {
                    eprintln!("xtask: {name} did not stop in time, killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Spawns a child in its own process group, so a Ctrl-C at the terminal reaches only
/// xtask, which then stops the stack in order.
pub(crate) fn spawn(cmd: &mut Command, what: &str) -> anyhow::Result<Child> {
    cmd.process_group(0).spawn().with_context(|| format!("starting {what}"))
}

/// One HTTP/1.1 request over loopback; the status, or `None` when nothing answered.
pub(crate) fn http(port: u16, method: &str, path: &str, body: &str) -> Option<u16> {
    http_answer(port, method, path, body).map(|(status, _)| status)
}

/// A plain HTTP/1.1 request on loopback: the status and the raw answer.
pub(crate) fn http_answer(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, out))
}

/// `t` as RFC 3339 in UTC.
pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let secs = t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}
