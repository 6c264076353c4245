//! Shared code of Ferrite's benchmarks: running a CPU-bound ROM to completion on an engine.
#![deny(missing_docs)]

use machine::{Accel, Machine, MachineConfig, RunOutcome};

/// Runs ROM `name` on a fresh 64 MiB machine under the interpreter; returns (outcome, retired
/// instructions).
pub fn run_rom(name: &str) -> (RunOutcome, u64) {
    run_rom_on(name, Accel::Interp)
}

/// Runs ROM `name` on a fresh 64 MiB machine under `accel` (the JIT with its default threshold).
pub fn run_rom_on(name: &str, accel: Accel) -> (RunOutcome, u64) {
    let image = test_roms::rom(name).unwrap_or_else(|| panic!("no ROM named {name}"));
    let mut cfg = MachineConfig::new(64 << 20, image.to_vec());
    cfg.accel = accel;
    let mut m = Machine::new(cfg).expect("machine");
    let out = m.run(Some(10_000_000_000));
    (out, m.cpu.icount)
}

#[cfg(test)]
mod tests {
    #[test]
    fn bench_rom_passes_and_is_cpu_bound() {
        let (out, icount) = super::run_rom("bench_int");
        assert_eq!(out, machine::RunOutcome::Exited(1));
        assert!(icount > 20_000_000, "only {icount} instructions");
        assert_eq!(super::run_rom_on("bench_int", machine::Accel::Jit), (out, icount));
    }
}
