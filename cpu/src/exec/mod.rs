//! Instruction semantics: one handler per iced `Code` (or per family), in family files.
//!
//! At decode time each instruction is paired with its handler ([`handler_for`]); the interpreter then
//! calls handlers through that pointer, so the dispatch cost is paid once per decode, not per execution.
//! Handlers see the instruction and a [`Ctx`]; they return `Err(Fault)` for exceptions and never panic.

pub mod alu;
pub mod avx;
pub mod avx_fp;
pub mod avx_unbounded;
pub mod bcd;
pub mod bits;
pub mod control;
pub mod fastcall;
pub mod fpstate;
pub mod gates;
pub mod misc;
pub mod mmx;
pub mod muldiv;
pub mod ops;
pub mod segops;
pub mod shift;
pub mod sse;
pub mod sse_fp;
pub mod sse_int;
pub mod sse_str;
pub mod sse_unbounded;
pub mod stack;
pub mod string;
pub mod sysext;
pub mod system;
pub mod x87;

use crate::fault::Fault;
use crate::mem::Ctx;
use crate::model::CpuModel;
use iced_x86::{Code, Instruction};

/// A decoded instruction with what its handler needs beyond iced's `Instruction`.
#[derive(Clone, Copy, Debug)]
pub struct Insn {
    /// The decoded instruction (IP set to its CS-relative RIP).
    pub i: Instruction,
    /// The handler.
    pub handler: Handler,
    /// Address size in bytes (2, 4 or 8).
    pub asize: u8,
    /// Operand size in bytes of the first operand (0 if none).
    pub osize: u8,
    /// The RIP of the next instruction, wrapped to the code size.
    pub next_rip: u64,
    /// Operands 0 and 1 resolved at decode time (the fast paths of `ops::read_op`, `ops::loc`).
    pub op: [Opnd; 2],
}

/// An operand resolved at decode time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opnd {
    /// No operand, or a kind the fast paths do not handle (segment/control registers, branches...).
    Other,
    /// A general-purpose register, packed small so that copying an operand never goes through memory.
    Reg(RegOp),
    /// The instruction's memory operand.
    Mem,
    /// An immediate, already sign-extended as iced defines it.
    Imm(u64),
}

/// A register operand packed into three bytes (see [`crate::regs::GprRef`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegOp {
    /// GPR index 0-15.
    pub index: u8,
    /// Width in bytes.
    pub size: u8,
    /// 0, or 8 for AH/CH/DH/BH.
    pub shift: u8,
}

impl RegOp {
    /// The register as a [`crate::regs::GprRef`].
    #[inline(always)]
    pub fn gpr(self) -> crate::regs::GprRef {
        crate::regs::GprRef { index: self.index as usize, size: self.size as u32, shift: self.shift as u32 }
    }
}

impl Insn {
    /// Pairs a decoded instruction with its handler and precomputes what handlers read on every
    /// execution: operand sizes and register/immediate operands.
    pub fn new(i: Instruction, handler: Handler, asize: u8, next_rip: u64) -> Insn {
        use iced_x86::OpKind as K;
        let opnd = |n: u32| -> Opnd {
            if n >= i.op_count() {
                return Opnd::Other;
            }
            match i.op_kind(n) {
                K::Register => crate::regs::gpr(i.op_register(n)).map_or(Opnd::Other, |g| {
                    Opnd::Reg(RegOp { index: g.index as u8, size: g.size as u8, shift: g.shift as u8 })
                }),
                K::Memory => Opnd::Mem,
                K::Immediate8
                | K::Immediate16
                | K::Immediate32
                | K::Immediate64
                | K::Immediate8to16
                | K::Immediate8to32
                | K::Immediate8to64
                | K::Immediate32to64
                | K::Immediate8_2nd => Opnd::Imm(i.immediate(n)),
                _ => Opnd::Other,
            }
        };
        let osize = if i.op_count() > 0 {
            match i.op_kind(0) {
                K::Register => i.op_register(0).size() as u8,
                K::Memory => i.memory_size().size() as u8,
                _ => 0,
            }
        } else {
            0
        };
        Insn { i, handler, asize, osize, next_rip, op: [opnd(0), opnd(1)] }
    }
}

/// An instruction handler.
pub type Handler = fn(&mut Ctx<'_>, &Insn) -> Result<(), Fault>;

/// The handler for `code`. Unknown codes get a handler that reports "unimplemented instruction"
/// naming the instruction (the interpreter raises #UD for it, or stops the machine under `--strict`,
/// see [`crate::Interpreter::strict`]); `INVALID` raises #UD.
pub fn handler_for(code: Code) -> Handler {
    lookup(code).unwrap_or(unimplemented)
}

/// The handler for `code` on a CPU of `model`: an instruction Ferrite implements but whose CPUID
/// feature the model does not advertise raises #UD, as it does on a CPU without the feature; one
/// Ferrite does not implement gets the "unimplemented" handler (#UD too, unless `--strict`: no model
/// advertises its feature, see [`crate::model`]); otherwise [`handler_for`]. The vendor-dependent rules
/// (SYSCALL outside 64-bit mode, SYSENTER in long mode) are in the handlers.
pub fn handler_for_model(code: Code, model: &CpuModel) -> Handler {
    match lookup(code) {
        None => unimplemented,
        Some(_) if !model.allows(code) => invalid,
        Some(h) => h,
    }
}

/// Whether Ferrite has a handler for `code` (`INVALID` counts: it is the #UD handler).
pub fn implemented(code: Code) -> bool {
    lookup(code).is_some()
}

fn lookup(code: Code) -> Option<Handler> {
    if code == Code::INVALID {
        return Some(invalid);
    }
    alu::lookup(code)
        .or_else(|| control::lookup(code))
        .or_else(|| system::lookup(code))
        .or_else(|| stack::lookup(code))
        .or_else(|| string::lookup(code))
        .or_else(|| segops::lookup(code))
        .or_else(|| shift::lookup(code))
        .or_else(|| muldiv::lookup(code))
        .or_else(|| bits::lookup(code))
        .or_else(|| bcd::lookup(code))
        .or_else(|| misc::lookup(code))
        .or_else(|| fastcall::lookup(code))
        .or_else(|| sse::lookup(code))
        .or_else(|| x87::lookup(code))
        .or_else(|| fpstate::lookup(code))
        .or_else(|| avx::lookup(code))
        .or_else(|| sysext::lookup(code))
}

fn invalid(_: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    Err(Fault::ud())
}

fn unimplemented(_: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    Err(Fault::unimplemented(format!("{:?} ({})", insn.i.code(), insn.i)))
}

#[cfg(test)]
mod tests_core;
#[cfg(test)]
mod tests_coverage;
