//! The crate dependency rules of ARCHITECTURE.md, checked over `cargo metadata`: the CPU never depends
//! on devices, devices never depend on an execution engine, the JIT depends on the CPU and not the
//! reverse, and nothing below `machine` knows which engine runs; and, over the sources, that no device code
//! (`chipset`, `storage`, `firmware`, the machine's board and device files) reads the host clock.

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

/// Where device models live: every crate that holds devices (`chipset`, `storage`, `firmware`) and
/// the machine's own device-side files (the board with its registry, the interrupt controllers, the
/// device table, the DMA path, the input port). The rest of `machine` (the clock under KVM, the gdb
/// stub's polling, checkpoint spacing) may read host time: it never reaches a device.
const DEVICE_SOURCES: &[&str] = &[
    "../chipset/src",
    "../storage/src",
    "../firmware/src",
    "../machine/src/board.rs",
    "../machine/src/irqchip.rs",
    "../machine/src/devices.rs",
    "../machine/src/dma.rs",
    "../machine/src/input.rs",
];

/// Crates whose manifests must not pull in a time crate.
const DEVICE_CRATES: &[&str] = &["chipset", "storage", "firmware"];

#[test]
fn no_device_reads_the_host_clock() {
    // The scanner finds what it looks for.
    assert_eq!(
        host_clock_uses("let t = std::time::Instant::now(); // Instant"),
        vec![(1, "Instant"), (1, "std::time")]
    );
    assert!(host_clock_uses("// SystemTime in a comment").is_empty());

    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut bad = Vec::new();
    for src in DEVICE_SOURCES {
        let path = here.join(src);
        let mut files = Vec::new();
        if path.is_dir() {
            rust_files(&path, &mut files);
            assert!(!files.is_empty(), "no sources under {}", path.display());
        } else {
            assert!(path.is_file(), "{} is gone: update DEVICE_SOURCES", path.display());
            files.push(path);
        }
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            for (line, tok) in host_clock_uses(&text) {
                bad.push(format!("{}:{line}: {tok}", f.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "device code reads the host clock (devices get time only as VirtTime):\n{}",
        bad.join("\n")
    );
    // Nor through a dependency.
    for krate in DEVICE_CRATES {
        let manifest = std::fs::read_to_string(here.join("..").join(krate).join("Cargo.toml")).unwrap();
        for time in ["chrono", "time", "quanta", "coarsetime"] {
            assert!(
                !manifest.lines().any(|l| l.trim_start().starts_with(&format!("{time} "))
                    || l.trim_start().starts_with(&format!("{time}="))),
                "{krate} depends on {time}"
            );
        }
    }
}
