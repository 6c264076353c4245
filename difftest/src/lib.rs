//! Native-CPU oracle and random-instruction differential tester for Ferrite.
//!
//! * [`generator`] builds random, deterministic instruction sequences ([`Case`]s) from iced-x86's encoding
//!   tables, grouped in [`Family`]s, for 64-bit and compatibility mode.
//! * [`native`] runs a case on the host CPU in a sandboxed child process ([`NativeEngine`]).
//! * [`runner`] runs every case on a reference engine and the engines under test, compares the final state
//!   ([`runner::compare`]), shrinks divergences to the first differing instruction and builds a [`Report`].
//! * [`fpvalues`] supplies edge-biased x87/SSE operands and the initial [`FpState`] of FP/SIMD cases.
//! * [`sysrom`] is the system-level oracle: random privileged programs as ROMs, run under QEMU TCG and
//!   Ferrite, with the dumps diffed and known QEMU deviations from the SDM filtered.
//!
//! To test a CPU implementation, implement [`Engine`] for it (the machine model it must follow is specified
//! in [`case`]) and call [`run_difftest`] with the native engine first:
//!
//! ```no_run
//! use difftest::{Config, Engine, NativeEngine, run_difftest};
//! # fn engine_under_test() -> Box<dyn Engine> { unimplemented!() }
//! let mut native = NativeEngine::new();
//! let mut mine = engine_under_test();
//! let report = run_difftest(&Config { seed: 7, cases: 10_000, ..Config::default() }, &mut [&mut native, &mut *mine]);
//! println!("{report}");
//! assert!(report.is_clean());
//! ```
//!
//! # Host requirements
//!
//! Linux on x86-64 (the native runner uses `fork`, `mmap(MAP_FIXED_NOREPLACE)`, `sigaltstack`, the
//! `ucontext` register dump and Linux's 32-bit user code segment 0x23). It maps fixed pages at
//! 0x0F00_0000..0x0F02_0000 (trampoline), 0x1000_0000 (code) and 0x2000_0000 (data), and at 0x8000 (low data
//! region for 16-bit addressing in compatibility mode) when `vm.mmap_min_addr` allows it (4096 on this host;
//! with 65536 the low region is left out and 16-bit memory operands fault instead, see
//! [`GenConfig::low_region`]).
//!
//! The generator assumes nothing beyond x86-64 baseline (CMOV, CMPXCHG8B): it reads CPUID at run time and
//! leaves out every encoding whose CPUID feature is missing (BMI1, BMI2, ADX, POPCNT, LZCNT, MOVBE,
//! CMPXCHG16B, LAHF/SAHF in 64-bit mode, SSE3, SSSE3, SSE4.1, SSE4.2, AES, PCLMULQDQ); a family left without encodings is listed in
//! [`Report::skipped_families`] with the reason. Note that the generated sequence for a seed therefore
//! depends on the host's feature set (identical hosts produce identical cases).

pub mod case;
pub mod disasm;
pub mod fpvalues;
pub mod generator;
pub mod hostcpu;
pub mod interp;
pub mod native;
pub mod rng;
pub mod runner;
pub mod sysrom;

pub use case::*;
pub use generator::{Family, GenConfig, GeneratedCase, Generator};
pub use interp::InterpEngine;
pub use native::NativeEngine;
pub use runner::{Config, Counts, Divergence, Report, compare, run_difftest};
