//! The crate dependency rules of ARCHITECTURE.md, checked over `cargo metadata`: the CPU never depends
//! on devices, devices never depend on an execution engine, the JIT depends on the CPU and not the
//! reverse, and nothing below `machine` knows which engine runs.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

fn workspace_deps() -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let pkgs = v["packages"].as_array().expect("packages");
    let names: BTreeSet<String> = pkgs.iter().map(|p| p["name"].as_str().unwrap().to_string()).collect();
    let mut map = BTreeMap::new();
    for p in pkgs {
        let deps = p["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null()) // normal dependencies only
            .map(|d| d["name"].as_str().unwrap().to_string())
            .filter(|n| names.contains(n))
            .collect();
        map.insert(p["name"].as_str().unwrap().to_string(), deps);
    }
    map
}

/// All crates `name` reaches through normal dependencies.
fn closure(map: &BTreeMap<String, BTreeSet<String>>, name: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![name.to_string()];
    while let Some(n) = stack.pop() {
        for d in map.get(&n).into_iter().flatten() {
            if seen.insert(d.clone()) {
                stack.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn dependency_direction() {
    let map = workspace_deps();
    let forbidden: &[(&str, &[&str])] = &[
        ("mmu", &["cpu", "chipset", "jit", "machine", "firmware", "ferrite"]),
        ("cpu", &["chipset", "jit", "machine", "firmware", "ferrite"]),
        ("chipset", &["cpu", "jit", "machine", "ferrite"]),
        ("jit", &["chipset", "machine", "firmware", "ferrite"]),
        ("firmware", &["cpu", "jit", "machine", "chipset"]),
        ("difftest", &["chipset", "machine", "firmware"]),
        ("machine", &["ferrite"]),
    ];
    for (krate, bad) in forbidden {
        assert!(map.contains_key(*krate), "crate {krate} missing from the workspace");
        let reach = closure(&map, krate);
        for b in *bad {
            assert!(!reach.contains(*b), "{krate} must not depend on {b} (reaches {reach:?})");
        }
    }
    // No cycles: no crate reaches itself.
    for k in map.keys() {
        assert!(!closure(&map, k).contains(k), "dependency cycle through {k}");
    }
}
