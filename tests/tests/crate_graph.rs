//! The crate graph is the architecture: `ARCHITECTURE.md`'s dependency
//! table must say exactly what the `Cargo.toml` files say, and every arrow
//! must point toward the seam (`net`) and the wire types (`proto`).
//!
//! Only normal dependencies count (`[dependencies]` and
//! `[target.'cfg(..)'.dependencies]`): dev-dependencies are test wiring,
//! not architecture.

use std::collections::{BTreeMap as Map, BTreeSet as Set};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}

/// Workspace member folders, from the root manifest's `members = [...]`.
fn members(root: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(root.join("Cargo.toml")).expect("root Cargo.toml");
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("a members line");
    let list = &line[line.find('[').expect("[") + 1..line.find(']').expect("]")];
    list.split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

/// The `mortar-*` crates a manifest names as normal dependencies, by
/// folder name (`mortar-net` -> `net`).
fn normal_deps(manifest: &str) -> Set<String> {
    let mut deps = Set::new();
    let mut in_deps = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line == "[dependencies]"
                || (line.starts_with("[target.") && line.ends_with(".dependencies]"));
            continue;
        }
        if !in_deps {
            continue;
        }
        if let Some(rest) = line.strip_prefix("mortar-") {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            deps.insert(name);
        }
    }
    deps
}

/// The crate graph as the manifests have it: crate name -> its deps.
/// The `cli` package is `mortar-cli` in folder `cli`, and so on: every
/// member's folder is its name without the prefix.
fn manifest_graph(root: &Path) -> Map<String, Set<String>> {
    members(root)
        .into_iter()
        .map(|m| {
            let text = std::fs::read_to_string(root.join(&m).join("Cargo.toml"))
                .unwrap_or_else(|e| panic!("{m}/Cargo.toml: {e}"));
            let deps = normal_deps(&text);
            (m, deps)
        })
        .collect()
}

/// The graph as `ARCHITECTURE.md` states it, in the block between the
/// `<!-- crate-deps -->` and `<!-- /crate-deps -->` markers, one list item
/// per crate: ``- `crate` -> `dep`, `dep` `` (or `-> (nothing)`).
fn documented_graph(root: &Path) -> Map<String, Set<String>> {
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let start = text
        .find("<!-- crate-deps -->")
        .expect("ARCHITECTURE.md has a <!-- crate-deps --> block");
    let end = text.find("<!-- /crate-deps -->").expect("closing marker");
    text[start..end]
        .lines()
        .filter_map(|l| l.strip_prefix("- "))
        .filter_map(|l| l.split_once("->"))
        .map(|(c, deps)| {
            let deps = deps
                .split(',')
                .map(|d| d.trim().trim_matches('`').to_string())
                .filter(|d| !d.is_empty() && d != "(nothing)")
                .collect();
            (c.trim().trim_matches('`').to_string(), deps)
        })
        .collect()
}

#[test]
fn architecture_md_states_the_crate_graph_the_manifests_have() {
    let root = root();
    let built = manifest_graph(&root);
    let documented = documented_graph(&root);
    assert_eq!(
        documented, built,
        "ARCHITECTURE.md's crate-deps block (left) differs from the Cargo.toml files (right)"
    );
}

/// Layers, from the seam up: a crate may depend only on crates of a lower
/// layer. This is the direction "toward the seam".
fn layer(c: &str) -> u32 {
    match c {
        "net" | "proto" => 0,
        "storage" | "sim" => 1,
        "node" | "client" => 2,
        "mgmt" | "heal" => 3,
        "cli" | "scenarios" | "tests" => 4,
        other => panic!("crate {other} has no layer here: give it one"),
    }
}

#[test]
fn every_arrow_points_toward_the_seam() {
    let built = manifest_graph(&root());
    for (c, deps) in &built {
        for d in deps {
            assert!(
                layer(d) < layer(c),
                "{c} depends on {d}, which is not below it (layers: {} vs {})",
                layer(c),
                layer(d)
            );
        }
    }
    for (c, forbidden) in [
        ("client", "mgmt"),
        ("client", "node"),
        ("mgmt", "node"),
        ("heal", "mgmt"),
        ("net", "proto"),
        ("proto", "net"),
    ] {
        assert!(
            !built[c].contains(forbidden),
            "{c} must not depend on {forbidden}"
        );
    }
}

#[test]
fn the_parser_reads_normal_and_target_dependencies_only() {
    let m = "[package]\nname = \"x\"\n[dependencies]\nmortar-net.workspace = true\n\
             mortar-proto = { path = \"../proto\" }\n[target.'cfg(madsim)'.dependencies]\n\
             mortar-sim.workspace = true\n[dev-dependencies]\nmortar-node.workspace = true\n";
    let want: Set<String> = ["net", "proto", "sim"].map(String::from).into();
    assert_eq!(normal_deps(m), want);
}
