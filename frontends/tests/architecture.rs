//! The crate dependency rules of ARCHITECTURE.md, checked over `cargo metadata`: the CPU never depends
//! on devices, devices never depend on an execution engine, the JIT depends on the CPU and not the
//! reverse, and nothing below `machine` knows which engine runs; and, over the sources, that `chipset`
//! never reads the host clock.

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
        ("vmcore", &["cpu", "chipset", "jit", "machine", "firmware", "ferrite"]),
        ("cpu", &["chipset", "jit", "machine", "firmware", "ferrite"]),
        ("chipset", &["cpu", "jit", "machine", "ferrite"]),
        ("jit", &["chipset", "machine", "firmware", "ferrite"]),
        ("firmware", &["cpu", "jit", "machine", "chipset"]),
        ("storage", &["cpu", "jit", "machine", "firmware", "ferrite"]),
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

/// Host-clock APIs a device model must not use: device time is `VirtTime`, given by the machine.
const HOST_CLOCK: &[&str] = &[
    "Instant",
    "SystemTime",
    "UNIX_EPOCH",
    "std::time",
    "clock_gettime",
    "gettimeofday",
    "chrono",
    "_rdtsc",
];

/// The host-clock uses in `src` (code only: `//` comments may name them), as (line number, token).
fn host_clock_uses(src: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    for (n, line) in src.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for tok in HOST_CLOCK {
            if code.contains(tok) {
                found.push((n + 1, *tok));
            }
        }
    }
    found
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn chipset_never_reads_the_host_clock() {
    // The scanner finds what it looks for.
    assert_eq!(
        host_clock_uses("let t = std::time::Instant::now(); // Instant"),
        vec![(1, "Instant"), (1, "std::time")]
    );
    assert!(host_clock_uses("// SystemTime in a comment").is_empty());

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../chipset");
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    assert!(files.len() > 10, "chipset sources not found under {}", root.display());
    let mut bad = Vec::new();
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        for (line, tok) in host_clock_uses(&src) {
            bad.push(format!("{}:{line}: {tok}", f.display()));
        }
    }
    assert!(
        bad.is_empty(),
        "chipset reads the host clock (devices get time only as VirtTime):\n{}",
        bad.join("\n")
    );
    // Nor through a dependency.
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    for krate in ["chrono", "time", "quanta", "coarsetime"] {
        assert!(
            !manifest.lines().any(|l| l.trim_start().starts_with(&format!("{krate} "))
                || l.trim_start().starts_with(&format!("{krate}="))),
            "chipset depends on {krate}"
        );
    }
}
