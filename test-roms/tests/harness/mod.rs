//! Runs a test ROM on the machine and collects its debug-console output.

use machine::{Machine, MachineConfig, RunOutcome};
use std::sync::{Arc, Mutex};

/// Result of one ROM run.
pub struct RomRun {
    pub outcome: RunOutcome,
    pub output: String,
}

/// The extra devices ROM `name` asks for on a `; ferrite-devices:` line of its source (the Ferrite
/// counterpart of `; qemu-args: -device ...`): `edu`, `testdev`.
pub fn rom_devices(name: &str) -> Vec<String> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("src/roms/{name}.asm"));
    let text = std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    text.lines()
        .find_map(|l| l.strip_prefix("; ferrite-devices:"))
        .map(|a| a.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// Runs ROM `name` with 32 MiB of RAM under the interpreter, for at most `limit` instructions, with the
/// devices its source asks for.
pub fn run_rom(name: &str, limit: u64) -> RomRun {
    run_rom_with(name, limit, &rom_devices(name))
}

/// [`run_rom`] with the extra devices `devices` instead of the ROM's own list.
pub fn run_rom_with(name: &str, limit: u64, devices: &[String]) -> RomRun {
    let image = test_roms::rom(name).unwrap_or_else(|| panic!("no ROM named {name}"));
    let out = Arc::new(Mutex::new(Vec::<u8>::new()));
    let o2 = out.clone();
    let mut cfg = MachineConfig::new(32 << 20, image.to_vec());
    for d in devices {
        match machine::DeviceSpec::named(d) {
            Ok(spec) => cfg.devices.push(spec),
            Err(e) => panic!("ROM {name}: {e}"),
        }
    }
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
