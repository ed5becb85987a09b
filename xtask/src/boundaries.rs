//! The crate boundaries, checked as tests (they run with the suite, and so in CI): the
//! layers point one way (contracts ← resilience ← bus ← runtime ← sink ← adapters, no arrow
//! up), the test kit is a dev-dependency only, adapters reach NATS only through sre-bus
//! (whose publisher takes intents only), and inside each crate the top-level modules
//! import one another without a circle.

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::inventory::ADAPTERS;

    /// Each shared crate's layer; an adapter is above them all. A crate may depend on
    /// lower layers only (and on nothing above it).
    const LAYERS: [(&str, u8); 5] =
        [("sre-contracts", 0), ("sre-resilience", 0), ("sre-bus", 1), ("sre-runtime", 2), ("sre-sink", 3)];
    /// Crates adapters must not depend on directly (the bus crate is their only way to NATS).
    const ADAPTER_FORBIDDEN_DEPS: [&str; 1] = ["async-nats"];
    const TEST_KIT: &str = "sre-testkit";

    fn layer(name: &str) -> Option<u8> {
        if ADAPTERS.contains(&name) {
            return Some(4);
        }
        LAYERS.iter().find(|(n, _)| *n == name).map(|(_, l)| *l)
    }

    /// Each workspace crate's dependencies: (name, kind), kind `None` for normal ones.
    fn dependencies() -> BTreeMap<String, Vec<(String, Option<String>)>> {
        let out = crate::util::cargo()
            .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
            .output()
            .expect("cargo metadata");
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata is JSON");
        meta["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| {
                let deps = p["dependencies"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| (d["name"].as_str().unwrap_or_default().to_owned(), d["kind"].as_str().map(str::to_owned)))
                    .collect();
                (p["name"].as_str().unwrap_or_default().to_owned(), deps)
            })
            .collect()
    }

    /// The violations in `deps`, one line each.
    fn violations(deps: &BTreeMap<String, Vec<(String, Option<String>)>>) -> Vec<String> {
        let mut found = Vec::new();
        for (name, list) in deps {
            for (dep, kind) in list {
                let dev = kind.as_deref() == Some("dev");
                if dep == TEST_KIT && !dev && name != "xtask" {
                    found.push(format!("{name} depends on {TEST_KIT} outside its tests"));
                }
                if ADAPTERS.contains(&name.as_str()) && ADAPTER_FORBIDDEN_DEPS.contains(&dep.as_str()) && !dev {
                    found
                        .push(format!("{name} depends on {dep} directly: adapters reach the bus only through sre-bus"));
                }
                if let (Some(from), Some(to)) = (layer(name), layer(dep))
                    && to >= from
                    && !dev
                {
                    found.push(format!("{name} depends on {dep}: an arrow up (or sideways) between layers"));
                }
                if name == TEST_KIT && layer(dep).is_some_and(|l| l >= 1) {
                    found.push(format!("{TEST_KIT} depends on {dep}: the test kit stays below what it tests"));
                }
            }
        }
        found
    }

    #[test]
    fn the_layers_point_one_way_and_adapters_reach_nats_only_through_the_bus_crate() {
        let deps = dependencies();
        for crate_name in LAYERS.iter().map(|(n, _)| *n).chain(ADAPTERS) {
            assert!(deps.contains_key(crate_name), "{crate_name} is not in the workspace");
        }
        let found = violations(&deps);
        assert!(found.is_empty(), "crate boundaries broken:\n{}", found.join("\n"));
    }

    #[test]
    fn a_broken_boundary_is_named() {
        let dep = |n: &str, kind: Option<&str>| (n.to_owned(), kind.map(str::to_owned));
        let deps: BTreeMap<String, Vec<(String, Option<String>)>> = [
            ("sre-runtime".to_owned(), vec![dep("sre-sink", None)]),
            ("paging-sink".to_owned(), vec![dep("async-nats", None), dep(TEST_KIT, Some("dev"))]),
            ("sre-bus".to_owned(), vec![dep(TEST_KIT, None)]),
            ("ticketing-sink".to_owned(), vec![dep("paging-sink", None)]),
        ]
        .into_iter()
        .collect();
        let found = violations(&deps);
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found.iter().any(|v| v.starts_with("sre-runtime depends on sre-sink: an arrow up")), "{found:#?}");
        assert!(found.iter().any(|v| v.contains("paging-sink depends on async-nats directly")), "{found:#?}");
        assert!(found.iter().any(|v| v.starts_with("sre-bus depends on sre-testkit outside its tests")), "{found:#?}");
        assert!(found.iter().any(|v| v.starts_with("ticketing-sink depends on paging-sink")), "{found:#?}");
    }

    /// The top-level modules each top-level module of `src` names through `crate::`
    /// (tests left out), per module.
    fn module_imports(src: &std::path::Path) -> BTreeMap<String, std::collections::BTreeSet<String>> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() && path.file_name().is_some_and(|n| n != "bin") {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let mut files = Vec::new();
        walk(src, &mut files);
        let top = |path: &std::path::Path| -> Option<String> {
            let rel = path.strip_prefix(src).ok()?;
            let first = rel.components().next()?.as_os_str().to_str()?;
            let name = first.trim_end_matches(".rs");
            (!matches!(name, "lib" | "main")).then(|| name.to_owned())
        };
        let modules: std::collections::BTreeSet<String> = files.iter().filter_map(|f| top(f)).collect();
        let mut imports: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        for file in &files {
            let Some(from) = top(file) else { continue };
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let mut named = Vec::new();
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    let group = &group[..group.find('}').unwrap_or(0)];
                    named.extend(group.split(',').filter_map(|p| p.trim().split("::").next()).map(str::to_owned));
                } else {
                    named.push(rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect());
                }
            }
            let entry = imports.entry(from.clone()).or_default();
            entry.extend(named.into_iter().filter(|m| modules.contains(m) && *m != from));
        }
        imports
    }

    /// The first circle in `imports`, as `a -> b -> a`.
    fn circle(imports: &BTreeMap<String, std::collections::BTreeSet<String>>) -> Option<String> {
        fn visit(
            node: &str,
            imports: &BTreeMap<String, std::collections::BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut std::collections::BTreeSet<String>,
        ) -> Option<String> {
            if let Some(i) = path.iter().position(|p| p == node) {
                let mut circle = path[i..].to_vec();
                circle.push(node.to_owned());
                return Some(circle.join(" -> "));
            }
            if !done.insert(node.to_owned()) {
                return None;
            }
            path.push(node.to_owned());
            for next in imports.get(node).into_iter().flatten() {
                if let Some(found) = visit(next, imports, path, &mut done.clone()) {
                    return Some(found);
                }
            }
            path.pop();
            None
        }
        imports.keys().find_map(|start| visit(start, imports, &mut Vec::new(), &mut Default::default()))
    }

    #[test]
    fn no_crate_has_an_import_circle_between_its_modules() {
        let crates = crate::util::root().join("crates");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&crates).expect("crates/").flatten() {
            let src = entry.path().join("src");
            if let Some(c) = circle(&module_imports(&src)) {
                found.push(format!("{}: {c}", entry.file_name().to_string_lossy()));
            }
        }
        assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
        // The check sees a circle when there is one.
        let imports = [("config", &["schedule"][..]), ("schedule", &["config"][..]), ("sink", &["config"][..])]
            .into_iter()
            .map(|(m, to)| (m.to_owned(), to.iter().map(|t| (*t).to_owned()).collect()))
            .collect();
        assert_eq!(circle(&imports).as_deref(), Some("config -> schedule -> config"));
    }
}
