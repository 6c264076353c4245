//! Instruction semantics: one handler per iced `Code` (or per family), in family files.
//!
//! At decode time each instruction is paired with its handler ([`handler_for`]); the interpreter then
//! calls handlers through that pointer, so the dispatch cost is paid once per decode, not per execution.
//! Handlers see the instruction and a [`Ctx`]; they return `Err(Fault)` for exceptions and never panic.

pub mod alu;
pub mod bcd;
pub mod bits;
pub mod control;
pub mod gates;
pub mod misc;
pub mod muldiv;
pub mod ops;
pub mod segops;
pub mod shift;
pub mod stack;
pub mod string;
pub mod system;

use crate::fault::Fault;
use crate::mem::Ctx;
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
}

/// An instruction handler.
pub type Handler = fn(&mut Ctx<'_>, &Insn) -> Result<(), Fault>;

/// The handler for `code`. Unknown codes get a handler that stops the machine with an
/// "unimplemented instruction" report naming the instruction; `INVALID` raises #UD.
pub fn handler_for(code: Code) -> Handler {
    if code == Code::INVALID {
        return invalid;
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
        .unwrap_or(unimplemented)
}

fn invalid(_: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    Err(Fault::ud())
}

fn unimplemented(_: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    Err(Fault::unimplemented(format!("{:?} ({})", insn.i.code(), insn.i)))
}

#[cfg(test)]
mod tests_core;
