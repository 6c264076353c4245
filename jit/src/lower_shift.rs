//! The flags of ROL/ROR/SHL/SHR/SAR of a register, computed in generated code (a child of `lower`,
//! so it uses the same builder helpers) and lazily: a shift leaves a `Pending::Shift` with its
//! operand, result and count, and the flags are computed only where something may read them (a
//! flag reader, a handler call, a slow path or the block's exit), so a shift whose flags the next
//! ALU instruction overwrites before a memory access or the exit costs nothing for its flags.
//!
//! The rules are `cpu::exec::shift::compute`'s (`intel` and `amd_flags`), restated in IR: CF from
//! the architectural definition, OF and AF (undefined in the SDM for counts above 1) as the
//! vendor in `CpuState::quirks` produces them, chosen at run time with a select (a translation does
//! not depend on the vendor, so the persistent cache and lockstep runs stay valid). Before, generated
//! code called the interpreter's `compute` through a helper for every shift whose flags were live,
//! about 10% of memtest86+'s run time. `tests/differential.rs` runs every register form (by 1, by
//! an immediate around the widths, by CL including 0) under both vendors' quirks against the
//! interpreter, whose rules the native-oracle tests of `cpu::exec::shift` hold to the host CPU.

use super::{Lower, ShiftOp};
use cpu::state::{Quirks, flags};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I8, I64};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value};
use std::mem::offset_of;

/// The count of a pending shift.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Count {
    /// An immediate, already masked and nonzero.
    Imm(u32),
    /// CL masked to the operand's count mask, possibly zero (which changes no flag).
    Cl(Value),
}

/// A shift whose flags are still to be computed (`Pending::Shift`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ShiftFlags {
    /// The operation (never RCL/RCR).
    pub op: ShiftOp,
    /// Operand size in bytes.
    pub size: u32,
    /// The destination before the shift, masked to `size`.
    pub a: Value,
    /// The result, masked to `size`.
    pub r: Value,
    /// The count.
    pub cnt: Count,
    /// RFLAGS before the shift, for what it may leave unchanged: all of them for a CL count of 0,
    /// OF for Intel's ROL/ROR of a register by an immediate other than 1 (`shift::rot_mask`).
    /// `None` when neither can happen.
    pub old: Option<Value>,
}

impl ShiftFlags {
    /// A pending shift of `a` giving `r`; `old` is RFLAGS before it (with nothing pending), needed
    /// where [`ShiftFlags::needs_old`] says so.
    pub(crate) fn new(op: ShiftOp, size: u32, a: Value, r: Value, cnt: Count, old: Option<Value>) -> Self {
        debug_assert!(!matches!(op, ShiftOp::Rcl | ShiftOp::Rcr), "RCL/RCR are not inlined");
        ShiftFlags { op, size, a, r, cnt, old }
    }

    /// Whether the flags may keep a value from before the shift (see `old`).
    pub(crate) fn needs_old(op: ShiftOp, cnt: Count) -> bool {
        match cnt {
            Count::Cl(_) => true,
            Count::Imm(c) => Self::rotate(op) && c != 1,
        }
    }

    fn rotate(op: ShiftOp) -> bool {
        matches!(op, ShiftOp::Rol | ShiftOp::Ror)
    }

    /// The flags it may write on either vendor: every arithmetic flag for SHL/SHR/SAR (Intel clears
    /// AF, AMD sets it), CF and OF for ROL/ROR.
    pub(crate) fn mask(self) -> u64 {
        Self::mask_of(self.op)
    }

    /// [`ShiftFlags::mask`] of an operation.
    pub(crate) fn mask_of(op: ShiftOp) -> u64 {
        if Self::rotate(op) { flags::CF | flags::OF } else { flags::ARITH }
    }

    /// Whether its ZF is always that of the result (an immediate SHL/SHR/SAR): a JZ reads it with
    /// one compare.
    pub(crate) fn zf_of_result(self) -> bool {
        !Self::rotate(self.op) && matches!(self.cnt, Count::Imm(_))
    }
}

const MF: MemFlagsData = MemFlagsData::trusted();

impl Lower<'_, '_> {
    /// The flags in `want` (a subset of `s.mask()`) after the shift `s`, the other bits zero:
    /// `shift::compute` (with `amd_flags` when `CpuState::quirks` is AMD).
    pub(super) fn shift_flags(&mut self, s: ShiftFlags, want: u64) -> Value {
        let n = s.size * 8;
        let (a, r) = (s.a, s.r);
        // The count minus one, where CF is the last bit shifted out.
        let cm1 = match s.cnt {
            Count::Imm(c) => self.b.ins().iconst(I64, i64::from(c) - 1),
            Count::Cl(c) => self.b.ins().iadd_imm_s(c, -1),
        };
        let mut f = self.szp(r, s.size, want & (flags::SF | flags::ZF | flags::PF));
        // CF as 0/1: the last bit shifted out (a count beyond the width of an 8- or 16-bit operand
        // shifts out zeros: `a` is masked and the 64-bit shifts below keep every bit); for rotates
        // the bit that went around.
        let needs_cf =
            want & flags::CF != 0 || (want & flags::OF != 0 && matches!(s.op, ShiftOp::Shl | ShiftOp::Rol));
        let cf = needs_cf.then(|| match s.op {
            ShiftOp::Shl => {
                let x = self.b.ins().ishl(a, cm1);
                self.bit_to(x, n - 1, 0)
            }
            ShiftOp::Shr => {
                let x = self.b.ins().ushr(a, cm1);
                self.b.ins().band_imm_s(x, 1)
            }
            ShiftOp::Sar => {
                let x = self.sext(a, s.size, 8);
                let x = self.b.ins().sshr(x, cm1);
                self.b.ins().band_imm_s(x, 1)
            }
            ShiftOp::Rol => self.b.ins().band_imm_s(r, 1),
            _ => self.bit_to(r, n - 1, 0),
        });
        if want & flags::CF != 0 {
            f = self.b.ins().bor(f, cf.expect("computed when wanted"));
        }
        if want & (flags::OF | flags::AF) != 0 {
            let q = self.b.ins().load(I8, MF, self.st, offset_of!(cpu::CpuState, quirks) as i32);
            let amd = self.b.ins().icmp_imm_s(IntCC::Equal, q, Quirks::Amd as i64);
            if want & flags::OF != 0 {
                let ofs = flags::OF.trailing_zeros();
                let intel = match s.op {
                    // Intel's ROL/ROR of a register by an immediate other than 1 leaves OF.
                    ShiftOp::Rol | ShiftOp::Ror if matches!(s.cnt, Count::Imm(c) if c != 1) => {
                        let old = s.old.expect("kept for a rotate by an immediate");
                        self.b.ins().band_imm_s(old, flags::OF as i64)
                    }
                    // MSB(a) XOR MSB-1(a): the first single-bit step's, for every count.
                    ShiftOp::Shl | ShiftOp::Rol => {
                        let x = self.b.ins().ushr_imm_s(a, 1);
                        let x = self.b.ins().bxor(a, x);
                        self.bit_to(x, n - 2, ofs)
                    }
                    ShiftOp::Shr => self.bit_to(a, n - 1, ofs),
                    ShiftOp::Sar => self.b.ins().iconst(I64, 0),
                    // LSB(a) XOR MSB(a).
                    _ => {
                        let x = self.b.ins().ushr_imm_s(a, i64::from(n - 1));
                        let x = self.b.ins().bxor(a, x);
                        self.bit_to(x, 0, ofs)
                    }
                };
                // AMD: MSB(r) XOR CF after left shifts and rotates, MSB(r) XOR MSB-1(r) after right
                // ones.
                let amd_of = match s.op {
                    ShiftOp::Shl | ShiftOp::Rol => {
                        let m = self.bit_to(r, n - 1, 0);
                        let x = self.b.ins().bxor(m, cf.expect("computed for OF"));
                        self.b.ins().ishl_imm_s(x, i64::from(ofs))
                    }
                    _ => {
                        let x = self.b.ins().ushr_imm_s(r, 1);
                        let x = self.b.ins().bxor(r, x);
                        self.bit_to(x, n - 2, ofs)
                    }
                };
                let of = self.b.ins().select(amd, amd_of, intel);
                f = self.b.ins().bor(f, of);
            }
            if want & flags::AF != 0 {
                // Intel clears AF after SHL/SHR/SAR, AMD sets it.
                let af = self.b.ins().iconst(I64, flags::AF as i64);
                let zero = self.b.ins().iconst(I64, 0);
                let af = self.b.ins().select(amd, af, zero);
                f = self.b.ins().bor(f, af);
            }
        }
        if let Count::Cl(c) = s.cnt {
            // A count of 0 changes no flag.
            let old = s.old.expect("kept for a CL count");
            let old = self.b.ins().band_imm_s(old, want as i64);
            let zero = self.b.ins().icmp_imm_s(IntCC::Equal, c, 0);
            f = self.b.ins().select(zero, old, f);
        }
        f
    }

    /// Leaves the flags of a shift of `a` (masked to `size`) giving `r` pending, when any flag it
    /// writes is in `live`.
    pub(super) fn defer_shift(&mut self, op: ShiftOp, size: u32, a: Value, r: Value, cnt: Count, live: u64) {
        if live & ShiftFlags::mask_of(op) == 0 {
            return;
        }
        let old = ShiftFlags::needs_old(op, cnt).then(|| {
            // What the shift may leave must be current in RFLAGS, not owned by a pending operation.
            self.materialize();
            self.b.use_var(self.fl)
        });
        self.defer(super::Pending::Shift(ShiftFlags::new(op, size, a, r, cnt, old)));
    }
}
