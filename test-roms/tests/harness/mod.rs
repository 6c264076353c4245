//! Runs a test ROM on the machine and collects its debug-console output.

use machine::{Machine, MachineConfig, RunOutcome};
use std::sync::{Arc, Mutex};

/// Result of one ROM run.
pub struct RomRun {
    pub outcome: RunOutcome,
    pub output: String,
}

/// Runs ROM `name` with 32 MiB of RAM under the interpreter, for at most `limit` instructions.
pub fn run_rom(name: &str, limit: u64) -> RomRun {
    let image = test_roms::rom(name).unwrap_or_else(|| panic!("no ROM named {name}"));
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let o2 = out.clone();
    let mut cfg = MachineConfig::new(32 << 20, image.to_vec());
    cfg.debugcon = Box::new(move |b| o2.lock().unwrap().push(b));
    let mut m = Machine::new(cfg).expect("machine");
    let outcome = m.run(Some(limit));
    let output = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    RomRun { outcome, output }
}

/// Asserts that ROM `name` passes: exit status 1, at least one PASS line, no FAIL line.
pub fn assert_rom_passes(name: &str) {
    let r = run_rom(name, 200_000_000);
    let fails: Vec<&str> = r.output.lines().filter(|l| l.starts_with("FAIL")).collect();
    let passes = r.output.lines().filter(|l| l.starts_with("PASS")).count();
    assert!(
        r.outcome == RunOutcome::Exited(1) && fails.is_empty() && passes > 0,
        "ROM {name}: outcome {:?}, {passes} passed, failures:\n{}\n--- output ---\n{}",
        r.outcome,
        fails.join("\n"),
        r.output
    );
}
