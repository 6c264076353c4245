//! Fuzz targets for the surfaces a hostile guest or a hostile image reaches, and a driver that runs
//! them on the stable toolchain.
//!
//! Targets ([`TARGETS`]):
//! - `interp-real`, `interp-prot32`, `interp-long64`: random code under the interpreter in each mode
//!   (decoder, every handler, the memory path, faults; self-modifying code included);
//! - `jit-real`, `jit-prot32`, `jit-long64`: the same code under the JIT (every block translated on
//!   first entry) and the interpreter: same exits, same final state, same RAM;
//! - `device`: register accesses, time steps, resets and snapshot round trips on each chipset device;
//! - `bzimage`, `multiboot`: the kernel loaders on random and mutated images;
//! - `vga`, `fw-cfg`, `table-loader`: the VGA with Bochs VBE, the fw_cfg device with a BIOS boot's files,
//!   and the ACPI linker/loader on mutated tables ([`display_targets`]).
//!
//! A target returns a behaviour signature (the driver keeps inputs that show a new one) or an error
//! naming a broken property; a panic is a finding too. The driver ([`driver`]) is a seeded mutation
//! fuzzer: runs are a pure function of the seed, so CI runs a bounded, repeatable slice and a finding
//! replays exactly. It is not coverage-guided: the stable toolchain has no sanitizer-coverage
//! runtime, and CI must not depend on a nightly toolchain (see README).
#![deny(missing_docs)]

pub mod cpu_targets;
pub mod device_targets;
pub mod display_targets;
pub mod driver;
pub mod loader_targets;
pub mod rng;

use cpu::testutil::TestMode;
use rng::Rng;

/// A fuzz target.
pub struct Target {
    /// Its name on the command line.
    pub name: &'static str,
    /// Runs one input: `Ok(signature)` or `Err(a broken property)`.
    pub run: fn(&[u8]) -> Result<u64, String>,
    /// Makes a plausible seed input.
    pub seed: fn(&mut Rng) -> Vec<u8>,
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "interp-real",
        run: |d| cpu_targets::interp(TestMode::Real, d),
        seed: |r| cpu_targets::seed_code(r, 16),
    },
    Target {
        name: "interp-prot32",
        run: |d| cpu_targets::interp(TestMode::Prot32, d),
        seed: |r| cpu_targets::seed_code(r, 32),
    },
    Target {
        name: "interp-long64",
        run: |d| cpu_targets::interp(TestMode::Long64, d),
        seed: |r| cpu_targets::seed_code(r, 64),
    },
    Target {
        name: "jit-real",
        run: |d| cpu_targets::jit_vs_interp(TestMode::Real, d),
        seed: |r| cpu_targets::seed_code(r, 16),
    },
    Target {
        name: "jit-prot32",
        run: |d| cpu_targets::jit_vs_interp(TestMode::Prot32, d),
        seed: |r| cpu_targets::seed_code(r, 32),
    },
    Target {
        name: "jit-long64",
        run: |d| cpu_targets::jit_vs_interp(TestMode::Long64, d),
        seed: |r| cpu_targets::seed_code(r, 64),
    },
    Target { name: "device", run: device_targets::device, seed: device_targets::seed_device },
    Target { name: "bzimage", run: loader_targets::bzimage, seed: loader_targets::seed_bzimage },
    Target { name: "multiboot", run: loader_targets::multiboot, seed: loader_targets::seed_multiboot },
    Target { name: "vga", run: display_targets::vga, seed: display_targets::seed_vga },
    Target { name: "fw-cfg", run: display_targets::fw_cfg, seed: display_targets::seed_fw_cfg },
    Target {
        name: "table-loader",
        run: display_targets::table_loader,
        seed: display_targets::seed_table_loader,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
