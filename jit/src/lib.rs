//! Ferrite's Cranelift JIT (not yet implemented).
//!
//! Planned design (see ARCHITECTURE.md): guest basic blocks decoded with iced-x86 are lowered to Cranelift
//! IR, keyed by (physical RIP, mode bits) like the interpreter's blocks; instructions not inlined call the
//! interpreter's own handlers (`cpu::exec`), so each instruction's semantics exist once. Generated code
//! reads `cpu::CpuState` at the offsets named in `cpu::offsets` and probes the interpreter's software TLB
//! inline (`cpu::mem::Tlb`, host pointers for RAM pages). Until it lands, `--accel` offers `interp` and `kvm`.
#![deny(missing_docs)]
