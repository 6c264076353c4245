//! Shared code of Ferrite's benchmarks: running a CPU-bound ROM to completion on the interpreter.
#![deny(missing_docs)]

use machine::{Machine, MachineConfig, RunOutcome};

/// Runs ROM `name` on a fresh 64 MiB machine; returns (outcome, retired instructions).
pub fn run_rom(name: &str) -> (RunOutcome, u64) {
    let image = test_roms::rom(name).unwrap_or_else(|| panic!("no ROM named {name}"));
    let mut m = Machine::new(MachineConfig::new(64 << 20, image.to_vec())).expect("machine");
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
    }
}
