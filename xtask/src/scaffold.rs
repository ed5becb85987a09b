//! `cargo xtask scaffold adapter NAME`: a new adapter crate, configuration, chart and
//! tests from the house template (`xtask/templates/adapter/`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The template files and where each goes (`__NAME__` in a path is the adapter's name).
const TEMPLATE: [(&str, &str); 12] = [
    ("crates/__NAME__/Cargo.toml", include_str!("../templates/adapter/Cargo.toml.tmpl")),
    ("crates/__NAME__/README.md", include_str!("../templates/adapter/README.md.tmpl")),
    ("crates/__NAME__/src/main.rs", include_str!("../templates/adapter/main.rs.tmpl")),
    ("crates/__NAME__/src/lib.rs", include_str!("../templates/adapter/lib.rs.tmpl")),
    ("crates/__NAME__/src/config.rs", include_str!("../templates/adapter/config.rs.tmpl")),
    ("crates/__NAME__/tests/service.rs", include_str!("../templates/adapter/service.rs.tmpl")),
    ("deploy/config/__NAME__.yaml", include_str!("../templates/adapter/config.yaml.tmpl")),
    ("deploy/helm/__NAME__/Chart.yaml", include_str!("../templates/adapter/Chart.yaml.tmpl")),
    ("deploy/helm/__NAME__/values.yaml", include_str!("../templates/adapter/values.yaml.tmpl")),
    ("deploy/helm/__NAME__/files/alerts.yaml", include_str!("../templates/adapter/alerts.yaml.tmpl")),
    ("deploy/helm/__NAME__/files/dashboard.json", include_str!("../templates/adapter/dashboard.json.tmpl")),
    (
        "deploy/helm/__NAME__/README.md",
        "# __NAME__ chart\n\nSee [../README.md](../README.md); values in `values.yaml`.\n",
    ),
];

/// Scaffolds `name` in this workspace and says what to do next.
pub(crate) fn scaffold(name: &str) -> anyhow::Result<()> {
    for f in scaffold_adapter(&crate::util::root(), name)? {
        println!("created {}", f.display());
    }
    println!(
        "next: cargo nextest run -p {name}; then the checklist in crates/{name}/README.md \
         (its bus user in deploy/nats/sre.conf, ADAPTERS in crates/sre-testkit/src/inventory.rs, README and \
         ARCHITECTURE.md)"
    );
    Ok(())
}

/// Writes a new adapter under `root` from the template; the chart's `templates/` are copied
/// from an existing chart (they are identical in every chart). Refuses to overwrite.
fn scaffold_adapter(root: &Path, name: &str) -> anyhow::Result<Vec<PathBuf>> {
    let valid = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-');
    if !valid {
        bail!("adapter name {name:?}: use lowercase letters, digits and '-', starting with a letter");
    }
    if root.join("crates").join(name).exists() || root.join("deploy/helm").join(name).exists() {
        bail!("{name} exists already");
    }
    let snake = name.replace('-', "_");
    let short = snake.split('_').next().unwrap_or(&snake).to_owned();
    // The next free default port after the adapters' own (8080, 8081, …).
    let mut port = 8080;
    for entry in std::fs::read_dir(root.join("crates")).context("crates/")? {
        let lib = entry?.path().join("src/lib.rs");
        let text = std::fs::read_to_string(lib).unwrap_or_default();
        if let Some(n) =
            text.split("default_http_port: ").nth(1).and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            && let Ok(n) = n.parse::<u16>()
        {
            port = port.max(n + 1);
        }
    }
    let version = std::fs::read_to_string(root.join("Cargo.toml"))?
        .lines()
        .find_map(|l| l.strip_prefix("version = \"").and_then(|v| v.strip_suffix('"')).map(str::to_owned))
        .context("workspace version")?;
    let fill = |text: &str| {
        text.replace("__SNAKE_SHORT__", &short)
            .replace("__SNAKE__", &snake)
            .replace("__NAME__", name)
            .replace("__PORT__", &port.to_string())
            .replace("__VERSION__", &version)
    };
    let mut created = Vec::new();
    for (path, text) in TEMPLATE {
        let path = root.join(fill(path));
        std::fs::create_dir_all(path.parent().context("parent")?)?;
        std::fs::write(&path, fill(text))?;
        created.push(path);
    }
    let charts = root.join("deploy/helm");
    let shared = std::fs::read_dir(&charts)?
        .filter_map(Result::ok)
        .map(|e| e.path().join("templates"))
        .find(|t| t.is_dir() && !t.starts_with(charts.join(name)))
        .context("no chart to copy templates/ from")?;
    let into = charts.join(name).join("templates");
    std::fs::create_dir_all(&into)?;
    for entry in std::fs::read_dir(shared)? {
        let from = entry?.path();
        let to = into.join(from.file_name().context("file name")?);
        std::fs::copy(&from, &to)?;
        created.push(to);
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaffold_fills_every_placeholder_and_copies_the_shared_chart_templates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let real = crate::util::root();
        std::fs::create_dir_all(root.join("crates/paging-sink/src")).expect("mkdir");
        std::fs::copy(real.join("crates/paging-sink/src/lib.rs"), root.join("crates/paging-sink/src/lib.rs"))
            .expect("copy");
        std::fs::copy(real.join("Cargo.toml"), root.join("Cargo.toml")).expect("copy");
        let templates = root.join("deploy/helm/paging-sink/templates");
        std::fs::create_dir_all(&templates).expect("mkdir");
        for e in std::fs::read_dir(real.join("deploy/helm/paging-sink/templates")).expect("templates") {
            let p = e.expect("entry").path();
            std::fs::copy(&p, templates.join(p.file_name().expect("name"))).expect("copy");
        }

        let created = scaffold_adapter(root, "servicenow-sink").expect("scaffolds");
        assert_eq!(created.len(), TEMPLATE.len() + std::fs::read_dir(&templates).expect("dir").count());
        for path in &created {
            let text = std::fs::read_to_string(path).expect("read");
            // Placeholders are `__UPPER__` (Grafana's `$__rate_interval` is not one).
            let kept = ["__NAME__", "__SNAKE", "__PORT__", "__VERSION__"].iter().any(|p| text.contains(p));
            assert!(!kept, "{} keeps a placeholder", path.display());
        }
        let lib = std::fs::read_to_string(root.join("crates/servicenow-sink/src/lib.rs")).expect("lib");
        assert!(lib.contains("default_http_port: 8084"), "the next port after paging-sink's 8083");
        assert!(lib.contains("ctx.config.servicenow_integration"), "{lib}");
        let values = std::fs::read_to_string(root.join("deploy/helm/servicenow-sink/values.yaml")).expect("values");
        assert!(values.contains("  servicenow_integration:") && values.contains("port: 8084"), "{values}");

        assert!(scaffold_adapter(root, "servicenow-sink").is_err(), "never overwrites");
        assert!(scaffold_adapter(root, "Bad_Name").is_err());
    }
}
