//! The lazy flag state: the last flag-writing operation of translated code, kept uncomputed across
//! the exit of one translated block into the next (`CpuState::lazy`), and [`LazyFlags::apply`], the
//! one accessor that computes it into RFLAGS.
//!
//! Where it may be live: only while `CompiledBlock::run` of the JIT is running, between a block's
//! exit and its linked successor's entry. The successor takes it over at its entry (clearing
//! `kind` in `CpuState`) and computes it through this accessor only where it reads a flag it does
//! not write first (or before a handler call); `JitBlock::run` computes a state still pending into
//! `rflags` before it returns ([`CpuState::settle_flags`]). So the interpreter, exception delivery,
//! PUSHF, interrupts, the state hash, snapshots, record/replay and gdb always see `kind == 0` and
//! `rflags` complete.

use crate::exec::ops;
use crate::state::CpuState;
use crate::state::flags;

/// No operation pending: `rflags` is current.
pub const OP_NONE: u64 = 0;
/// ADD/INC (carry in 0): `ops::flags_add` of `a`, `b`, `r`.
pub const OP_ADD: u64 = 1;
/// SUB/CMP/DEC/NEG (borrow in 0): `ops::flags_sub` of `a`, `b`, `r`.
pub const OP_SUB: u64 = 2;
/// AND/OR/XOR/TEST: `ops::flags_logic` of `r` (CF, OF, AF cleared).
pub const OP_LOGIC: u64 = 3;
/// ADC: `ops::flags_add` of `a`, `b`, the carry in and `r`. The carry in is not stored: it is
/// `r - a - b` (mod 2^size), which is 0 or 1 since `r = a + b + carry`.
pub const OP_ADC: u64 = 4;
/// SBB: `ops::flags_sub` of `a`, `b`, the borrow in and `r`; the borrow in is `a - b - r`
/// (mod 2^size).
pub const OP_SBB: u64 = 5;

/// A pending flag computation. `kind` packs the operation (bits 0-7, an `OP_*`), the operand size
/// in bytes (bits 8-15) and the flags it defines (bits 16-31; INC/DEC leave CF out); the operands and
/// result are masked to the size. Generated code reads and writes it at fixed offsets
/// (`crate::offsets::LAZY`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LazyFlags {
    /// Operation, size and flag mask (0: nothing pending).
    pub kind: u64,
    /// First operand.
    pub a: u64,
    /// Second operand.
    pub b: u64,
    /// Result.
    pub r: u64,
}

/// Byte offsets of the fields within [`LazyFlags`].
pub mod field {
    /// `kind`.
    pub const KIND: usize = 0;
    /// `a`.
    pub const A: usize = 8;
    /// `b`.
    pub const B: usize = 16;
    /// `r`.
    pub const R: usize = 24;
}

/// The `kind` word of operation `op` on `size`-byte operands defining the flags in `mask`.
pub const fn kind(op: u64, size: u32, mask: u64) -> u64 {
    op | (size as u64) << 8 | (mask & flags::ARITH) << 16
}

impl LazyFlags {
    /// Nothing pending.
    pub const NONE: LazyFlags = LazyFlags { kind: 0, a: 0, b: 0, r: 0 };

    /// Whether an operation is pending.
    pub fn is_pending(&self) -> bool {
        self.kind != OP_NONE
    }

    /// The accessor: `rflags` with the flags the pending operation defines replaced by the ones it
    /// computes (the interpreter's own flag functions). With nothing pending, or a `kind` that
    /// names no operation or size (generated code never writes one), `rflags` unchanged.
    pub fn apply(&self, rflags: u64) -> u64 {
        let op = self.kind & 0xff;
        let size = ((self.kind >> 8) & 0xff) as u32;
        let mask = (self.kind >> 16) & flags::ARITH;
        if !matches!(size, 1 | 2 | 4 | 8) {
            return rflags;
        }
        let m = crate::regs::size_mask(size);
        let f = match op {
            OP_ADD => ops::flags_add(self.a, self.b, 0, self.r, size),
            OP_SUB => ops::flags_sub(self.a, self.b, 0, self.r, size),
            OP_LOGIC => ops::flags_logic(self.r, size),
            OP_ADC => {
                let c = self.r.wrapping_sub(self.a).wrapping_sub(self.b) & m;
                ops::flags_add(self.a, self.b, (c != 0) as u64, self.r, size)
            }
            OP_SBB => {
                let c = self.a.wrapping_sub(self.b).wrapping_sub(self.r) & m;
                ops::flags_sub(self.a, self.b, (c != 0) as u64, self.r, size)
            }
            _ => return rflags,
        };
        (rflags & !mask) | (f & mask)
    }
}

impl CpuState {
    /// Computes a pending lazy flag state into `rflags` and clears it (see the module's text:
    /// only the JIT's block runner has one to settle).
    #[inline]
    pub fn settle_flags(&mut self) {
        if self.lazy.is_pending() {
            self.rflags = self.lazy.apply(self.rflags);
            self.lazy = LazyFlags::NONE;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::size_mask;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// Mostly edge values (0, 1, the sign bit, all ones, around 0x0f/0x10), else random.
        fn operand(&mut self, size: u32) -> u64 {
            let m = size_mask(size);
            let sign = 1u64 << (size * 8 - 1);
            let v = match self.next() % 8 {
                0 => 0,
                1 => 1,
                2 => sign,
                3 => sign - 1,
                4 => m,
                5 => 0x0f,
                6 => 0x10,
                _ => self.next(),
            };
            v & m
        }
    }

    /// The accessor against the interpreter's flag functions, the way each operation of the
    /// interpreter applies them (ADD/SUB with all six flags, INC/DEC keeping CF, logic ops, ADC/SBB
    /// with either carry in), for
    /// random operands of every size and random incoming RFLAGS.
    #[test]
    fn accessor_matches_the_interpreters_flag_functions() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200_000 {
            let size = [1, 2, 4, 8][(r.next() % 4) as usize];
            let m = size_mask(size);
            let (a, b) = (r.operand(size), r.operand(size));
            let before = (r.next() & (flags::ARITH | flags::DF | flags::IF | flags::TF)) | flags::FIXED1;
            let which = r.next() % 7;
            let cin = r.next() & 1;
            let (lazy, want) = match which {
                0 => {
                    let res = a.wrapping_add(b) & m;
                    let f = ops::flags_add(a, b, 0, res, size);
                    (kind(OP_ADD, size, flags::ARITH), (before & !flags::ARITH) | f)
                }
                1 => {
                    let res = a.wrapping_sub(b) & m;
                    let f = ops::flags_sub(a, b, 0, res, size);
                    (kind(OP_SUB, size, flags::ARITH), (before & !flags::ARITH) | f)
                }
                2 => {
                    // INC: CF kept.
                    let res = a.wrapping_add(1) & m;
                    let f = ops::flags_add(a, 1, 0, res, size);
                    let keep = flags::ARITH & !flags::CF;
                    (kind(OP_ADD, size, keep), (before & !keep) | (f & keep))
                }
                3 => {
                    // DEC: CF kept.
                    let res = a.wrapping_sub(1) & m;
                    let f = ops::flags_sub(a, 1, 0, res, size);
                    let keep = flags::ARITH & !flags::CF;
                    (kind(OP_SUB, size, keep), (before & !keep) | (f & keep))
                }
                5 => {
                    // ADC with a random carry in (recovered from the operands and result).
                    let res = a.wrapping_add(b).wrapping_add(cin) & m;
                    let f = ops::flags_add(a, b, cin, res, size);
                    (kind(OP_ADC, size, flags::ARITH), (before & !flags::ARITH) | f)
                }
                6 => {
                    // SBB with a random borrow in.
                    let res = a.wrapping_sub(b).wrapping_sub(cin) & m;
                    let f = ops::flags_sub(a, b, cin, res, size);
                    (kind(OP_SBB, size, flags::ARITH), (before & !flags::ARITH) | f)
                }
                _ => {
                    let res = (a ^ b) & m;
                    (
                        kind(OP_LOGIC, size, flags::ARITH),
                        (before & !flags::ARITH) | ops::flags_logic(res, size),
                    )
                }
            };
            let (ob, res) = match which {
                0 => (b, a.wrapping_add(b) & m),
                1 => (b, a.wrapping_sub(b) & m),
                2 => (1, a.wrapping_add(1) & m),
                3 => (1, a.wrapping_sub(1) & m),
                5 => (b, a.wrapping_add(b).wrapping_add(cin) & m),
                6 => (b, a.wrapping_sub(b).wrapping_sub(cin) & m),
                _ => (0, (a ^ b) & m),
            };
            let l = LazyFlags { kind: lazy, a, b: ob, r: res };
            assert_eq!(l.apply(before), want, "op {which} size {size} a {a:#x} b {b:#x} rflags {before:#x}");
            let mut st = CpuState { rflags: before, lazy: l, ..CpuState::default() };
            st.settle_flags();
            assert_eq!((st.rflags, st.lazy), (want, LazyFlags::NONE));
        }
    }

    /// Nothing pending, or a word naming no operation or size, leaves RFLAGS alone.
    #[test]
    fn nothing_pending_changes_nothing() {
        for k in [0, kind(7, 4, flags::ARITH), kind(OP_ADD, 3, flags::ARITH), kind(OP_SUB, 0, flags::ARITH)] {
            let l = LazyFlags { kind: k, a: 1, b: 2, r: 0 };
            assert_eq!(l.apply(0x8d7), 0x8d7);
        }
    }
}
