//! CI's bounded slice of every fuzz target: a fixed seed and a fixed number of inputs per target, so
//! the run is repeatable; any panic or broken property fails with the input in hex.
//! `FERRITE_FUZZ_ITERATIONS=N` and `FERRITE_FUZZ_SEED=S` make a longer or different run.

use ferrite_fuzz::TARGETS;
use ferrite_fuzz::driver::{Limit, fuzz};

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

fn check(name: &str, default_iterations: u64) {
    let t = ferrite_fuzz::target(name).expect("target exists");
    let n = env("FERRITE_FUZZ_ITERATIONS").unwrap_or(default_iterations);
    let seed = env("FERRITE_FUZZ_SEED").unwrap_or(0x2026_1206);
    match fuzz(t, seed, Limit::Iterations(n)) {
        Ok(s) => {
            println!("{name}: {} inputs, {} behaviours, corpus {}", s.runs, s.signatures, s.corpus);
            assert_eq!(s.runs, n);
            // A target that always shows the same behaviour is not exploring anything.
            assert!(s.signatures > 1, "{name}: every input behaved the same");
        }
        Err(f) => {
            let hex: String = f.input.iter().map(|b| format!("{b:02x}")).collect();
            panic!("{name}: {}\ninput ({} bytes): {hex}", f.message, f.input.len());
        }
    }
}

#[test]
fn every_target_has_a_bounded_test() {
    let tested = [
        "interp-real",
        "interp-prot32",
        "interp-long64",
        "jit-real",
        "jit-prot32",
        "jit-long64",
        "device",
        "bzimage",
        "multiboot",
        "vga",
        "fw-cfg",
        "table-loader",
    ];
    for t in TARGETS {
        assert!(tested.contains(&t.name), "target {} has no bounded test", t.name);
    }
}

#[test]
fn interp_real() {
    check("interp-real", 1500);
}
#[test]
fn interp_prot32() {
    check("interp-prot32", 1500);
}
#[test]
fn interp_long64() {
    check("interp-long64", 1500);
}
#[test]
fn jit_real() {
    check("jit-real", 40);
}
#[test]
fn jit_prot32() {
    check("jit-prot32", 40);
}
#[test]
fn jit_long64() {
    check("jit-long64", 40);
}
#[test]
fn device() {
    check("device", 10000);
}
#[test]
fn bzimage() {
    check("bzimage", 5000);
}
#[test]
fn multiboot() {
    check("multiboot", 5000);
}
#[test]
fn vga() {
    check("vga", 200);
}
#[test]
fn fw_cfg() {
    check("fw-cfg", 3000);
}
#[test]
fn table_loader() {
    check("table-loader", 3000);
}
