//! The house rules the compiler does not check by itself: imports between the top-level modules
//! of each crate run one way (no cycle, named when there is one), and the core crate depends on
//! neither tokio nor async-nats.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The crate's top-level modules: `name.rs` and `name/` beside lib.rs.
fn modules(src: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(src).expect("src dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if path.is_dir()
            || (path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main")
        {
            out.insert(name);
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `from -> to` for every `crate::to` a module's code (not its comments, not its unit tests)
/// names.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(src);
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).expect("inside src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .trim_end_matches(".rs")
            .to_string();
        if !mods.contains(&top) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read");
        // Unit tests may reach anywhere; the rule is about the modules' own code.
        let code = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default();
        for line in code.lines() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for (i, _) in line.match_indices("crate::") {
                if i > 0 && line[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                    continue; // `nats_insights_core::`, `$crate::`
                }
                let name: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if name != top && mods.contains(&name) {
                    out.entry(top.clone()).or_default().insert(name);
                }
            }
        }
    }
    out
}

/// Each cycle, as the modules on it in order (`a -> b -> a`).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    fn walk(
        at: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == at) {
            let mut cycle = path[i..].to_vec();
            cycle.push(at.to_string());
            found.push(cycle.join(" -> "));
            return;
        }
        if done.contains(at) {
            return;
        }
        path.push(at.to_string());
        for next in graph.get(at).into_iter().flatten() {
            walk(next, graph, path, done, found);
        }
        path.pop();
        done.insert(at.to_string());
    }
    for start in graph.keys() {
        walk(start, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

#[test]
fn imports_between_modules_run_one_way() {
    for src in [root().join("src"), root().join("crates/core/src")] {
        let graph = edges(&src);
        assert!(!graph.is_empty(), "no imports read under {}", src.display());
        let found = cycles(&graph);
        assert!(
            found.is_empty(),
            "modules of {} import each other in a loop: {}",
            src.display(),
            found.join("; ")
        );
    }
}

#[test]
fn the_cycle_check_names_a_loop() {
    let graph = BTreeMap::from([
        (
            "history".to_string(),
            BTreeSet::from(["checks".to_string()]),
        ),
        (
            "checks".to_string(),
            BTreeSet::from(["history".to_string()]),
        ),
    ]);
    assert_eq!(cycles(&graph), ["checks -> history -> checks"]);
}

#[test]
fn the_core_crate_depends_on_neither_tokio_nor_async_nats() {
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            "nats-insights-core",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(root())
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(tree.contains("nats-insights-core"), "{tree}");
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        assert!(
            !matches!(name, "tokio" | "async-nats" | "futures" | "reqwest"),
            "the core crate pulls in {line}"
        );
    }
}
