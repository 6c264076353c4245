//! Integer SIMD in Cranelift vector IR (a child of `lower_sse`): the legacy SSE2/SSSE3 forms and
//! their VEX.128/VEX.256 forms that compiled C and glibc's string functions execute (PADD*/PSUB*
//! with and without saturation, PCMPEQ*/PCMPGT*, PMIN*/PMAX*, PAVGB/PAVGW, PMULLW/PMULLD, the
//! bitwise logic, PUNPCKL*/PUNPCKH*, PSHUFD/PSHUFLW/PSHUFHW, PSHUFB, PSLLDQ/PSRLDQ and the shifts
//! by an immediate, PMOVMSKB) and VZEROUPPER, one 128-bit lane (`I8X16`/`I16X8`/`I32X4`/`I64X2`)
//! at a time, YMM as two lanes (bits 127:0 in `fpu.xmm`, 255:128 in `vec.ymm_hi`).
//!
//! One source of semantics: each arm restates `sse_int::compute`'s arm of the same mnemonic (and
//! `sse::movmsk`/`avx::movmsk`, `avx::write_reg`'s VEX rule, `VecState::clear_above_128` for
//! VZEROUPPER). `tests/differential_sse.rs` compares every form here with the interpreter
//! (register and memory operands, aligned, misaligned and page-crossing; XMM and YMM, registers
//! 0-15, all lanes random), and the difftest crate's `tests/jit_vec.rs` compares them with this
//! host's CPU (every encoding of these mnemonics, both modes). A form not listed in [`VOp::of`]
//! keeps the `sse_helper` call.

use super::{HOST, Lower, MF, xmm_off, ymm_hi_off, zmm_hi_off};
use cpu::exec::Insn;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I8X16, I16X8, I32, I32X4, I64, I64X2};
use cranelift_codegen::ir::{ConstantData, InstBuilder, Type, Value};
use iced_x86::{Mnemonic as M, OpKind, Register};

/// A lane-wise binary operation on two vectors of one type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bin {
    Add,
    Sub,
    AddSatS,
    SubSatS,
    AddSatU,
    SubSatU,
    Eq,
    GtS,
    MinU,
    MaxU,
    MinS,
    MaxS,
    Avg,
    Mul,
    And,
    /// NOT first AND second.
    AndNot,
    Or,
    Xor,
}

/// What one form computes on a 128-bit lane `a` (the first source: the destination's old value
/// for a legacy form) and `b` (the second source).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VOp {
    Bin(Bin, Type),
    /// Bytes of the result picked from (a, b) (indices 0-15 from `a`, 16-31 from `b`): the unpacks.
    Shuffle2([u8; 16]),
    /// Bytes of the result picked from `b` (PSHUFD/PSHUFLW/PSHUFHW).
    Shuffle1([u8; 16]),
    /// Bytes of the result picked from (a, zero) (indices 16-31 are zero): PSLLDQ/PSRLDQ.
    ShiftBytes([u8; 16]),
    /// `a` shifted by an immediate count (`Some(n)` < lane bits; `None`: every bit out).
    Shl(Type, Option<u8>),
    Shr(Type, Option<u8>),
    /// Arithmetic right shift (counts of lane bits or more shift by lane bits - 1).
    Sar(Type, u8),
    Pshufb,
}

impl VOp {
    /// The form of (legacy) mnemonic `m` with immediate `imm` and `imm_src` (the second source is
    /// the imm8: the shifts by an immediate), or `None` for a form left to `sse_helper`.
    fn of(m: M, imm: u8, imm_src: bool) -> Option<VOp> {
        use Bin::*;
        let bin = |op, ty| Some(VOp::Bin(op, ty));
        if imm_src {
            let bits = |ty: Type| ty.lane_bits() as u8;
            let (kind, ty) = match m {
                M::Psllw => (0, I16X8),
                M::Pslld => (0, I32X4),
                M::Psllq => (0, I64X2),
                M::Psrlw => (1, I16X8),
                M::Psrld => (1, I32X4),
                M::Psrlq => (1, I64X2),
                M::Psraw => (2, I16X8),
                M::Psrad => (2, I32X4),
                M::Pslldq | M::Psrldq => {
                    let n = imm as usize;
                    let mut s = [16u8; 16];
                    for (k, x) in s.iter_mut().enumerate() {
                        // `compute`: counts above 15 clear every byte.
                        let from =
                            if m == M::Pslldq { k.checked_sub(n) } else { Some(k + n).filter(|&f| f < 16) };
                        if n <= 15
                            && let Some(f) = from
                        {
                            *x = f as u8;
                        }
                    }
                    return Some(VOp::ShiftBytes(s));
                }
                _ => return None,
            };
            let n = (imm < bits(ty)).then_some(imm);
            return Some(match kind {
                0 => VOp::Shl(ty, n),
                1 => VOp::Shr(ty, n),
                _ => VOp::Sar(ty, imm.min(bits(ty) - 1)),
            });
        }
        match m {
            M::Paddb => bin(Add, I8X16),
            M::Paddw => bin(Add, I16X8),
            M::Paddd => bin(Add, I32X4),
            M::Paddq => bin(Add, I64X2),
            M::Psubb => bin(Sub, I8X16),
            M::Psubw => bin(Sub, I16X8),
            M::Psubd => bin(Sub, I32X4),
            M::Psubq => bin(Sub, I64X2),
            M::Paddsb => bin(AddSatS, I8X16),
            M::Paddsw => bin(AddSatS, I16X8),
            M::Psubsb => bin(SubSatS, I8X16),
            M::Psubsw => bin(SubSatS, I16X8),
            M::Paddusb => bin(AddSatU, I8X16),
            M::Paddusw => bin(AddSatU, I16X8),
            M::Psubusb => bin(SubSatU, I8X16),
            M::Psubusw => bin(SubSatU, I16X8),
            M::Pcmpeqb => bin(Eq, I8X16),
            M::Pcmpeqw => bin(Eq, I16X8),
            M::Pcmpeqd => bin(Eq, I32X4),
            M::Pcmpeqq => bin(Eq, I64X2),
            M::Pcmpgtb => bin(GtS, I8X16),
            M::Pcmpgtw => bin(GtS, I16X8),
            M::Pcmpgtd => bin(GtS, I32X4),
            M::Pcmpgtq => bin(GtS, I64X2),
            M::Pminub => bin(MinU, I8X16),
            M::Pminuw => bin(MinU, I16X8),
            M::Pminud => bin(MinU, I32X4),
            M::Pmaxub => bin(MaxU, I8X16),
            M::Pmaxuw => bin(MaxU, I16X8),
            M::Pmaxud => bin(MaxU, I32X4),
            M::Pminsb => bin(MinS, I8X16),
            M::Pminsw => bin(MinS, I16X8),
            M::Pminsd => bin(MinS, I32X4),
            M::Pmaxsb => bin(MaxS, I8X16),
            M::Pmaxsw => bin(MaxS, I16X8),
            M::Pmaxsd => bin(MaxS, I32X4),
            M::Pavgb => bin(Avg, I8X16),
            M::Pavgw => bin(Avg, I16X8),
            M::Pmullw => bin(Mul, I16X8),
            M::Pmulld => bin(Mul, I32X4),
            M::Pand | M::Andps | M::Andpd => bin(And, I64X2),
            M::Pandn | M::Andnps | M::Andnpd => bin(AndNot, I64X2),
            M::Por | M::Orps | M::Orpd => bin(Or, I64X2),
            M::Pxor | M::Xorps | M::Xorpd => bin(Xor, I64X2),
            M::Punpcklbw => Some(VOp::Shuffle2(unpack(1, false))),
            M::Punpcklwd => Some(VOp::Shuffle2(unpack(2, false))),
            M::Punpckldq | M::Unpcklps => Some(VOp::Shuffle2(unpack(4, false))),
            M::Punpcklqdq | M::Unpcklpd => Some(VOp::Shuffle2(unpack(8, false))),
            M::Punpckhbw => Some(VOp::Shuffle2(unpack(1, true))),
            M::Punpckhwd => Some(VOp::Shuffle2(unpack(2, true))),
            M::Punpckhdq | M::Unpckhps => Some(VOp::Shuffle2(unpack(4, true))),
            M::Punpckhqdq | M::Unpckhpd => Some(VOp::Shuffle2(unpack(8, true))),
            M::Pshufd => Some(VOp::Shuffle1(perm(4, 0, 4, imm))),
            M::Pshuflw => Some(VOp::Shuffle1(perm(2, 0, 4, imm))),
            M::Pshufhw => Some(VOp::Shuffle1(perm(2, 4, 4, imm))),
            M::Pshufb => Some(VOp::Pshufb),
            _ => None,
        }
    }
}

/// The byte indices of PUNPCKL*/PUNPCKH* with elements of `e` bytes (`compute`'s `unpack`):
/// element 2i from a's element base + i, element 2i + 1 from b's.
fn unpack(e: usize, high: bool) -> [u8; 16] {
    let n = 16 / e / 2;
    let base = if high { n } else { 0 };
    let mut s = [0u8; 16];
    for i in 0..n {
        for j in 0..e {
            s[2 * i * e + j] = ((base + i) * e + j) as u8;
            s[(2 * i + 1) * e + j] = (16 + (base + i) * e + j) as u8;
        }
    }
    s
}

/// The byte indices of `compute`'s `perm`: `n` elements of `e` bytes from element `base` on, each
/// element `base + i` taken from element `base + sel[2i+1:2i]`; the others unchanged.
fn perm(e: usize, base: usize, n: usize, sel: u8) -> [u8; 16] {
    let mut s: [u8; 16] = core::array::from_fn(|k| k as u8);
    for i in 0..n {
        let k = base + ((sel as usize >> (2 * i)) & 3);
        for j in 0..e {
            s[(base + i) * e + j] = (k * e + j) as u8;
        }
    }
    s
}

impl Lower<'_, '_> {
    /// The offset of 128-bit lane `l` (0: bits 127:0, 1: bits 255:128) of vector register `r`.
    fn vlane_off(r: Register, l: i32) -> i32 {
        if l == 0 { xmm_off(r) } else { ymm_hi_off(cpu::exec::avx::vindex(r)) }
    }

    /// A 16-byte constant of `ty`.
    fn vconst16(&mut self, ty: Type, bytes: [u8; 16]) -> Value {
        let c = self.b.func.dfg.constants.insert(ConstantData::from(bytes.to_vec()));
        self.b.ins().vconst(ty, c)
    }

    /// VZEROUPPER (`VecState::clear_above_128` of every register): bits 511:128 of YMM/ZMM0-15
    /// zeroed, in 16-byte stores.
    pub(super) fn emit_vzeroupper(&mut self) {
        let z = self.b.ins().iconst(I64, 0);
        let z = self.b.ins().splat(I64X2, z);
        for k in 0..16 {
            self.b.ins().store(MF, z, self.st, ymm_hi_off(k));
            self.b.ins().store(MF, z, self.st, zmm_hi_off(k));
            self.b.ins().store(MF, z, self.st, zmm_hi_off(k) + 16);
        }
    }

    /// PMOVMSKB r32/r64, xmm (legacy, `vex` false) or VPMOVMSKB r, xmm/ymm: the sign bit of each
    /// byte, zero-extended into the general register.
    pub(super) fn emit_pmovmskb(&mut self, insn: &Insn) {
        let s = insn.i.op1_register();
        let mut r = self.b.ins().iconst(I64, 0);
        for l in 0..if s.is_ymm() { 2 } else { 1 } {
            let v = self.b.ins().load(I8X16, MF, self.st, Self::vlane_off(s, l));
            let bits = self.b.ins().vhigh_bits(I64, v);
            let bits = if l == 1 { self.b.ins().ishl_imm_s(bits, 16) } else { bits };
            r = self.b.ins().bor(r, bits);
        }
        let g = Self::gpr_op(insn, 0);
        self.write(g, r);
    }

    /// An integer SIMD form of [`VOp::of`] in vector IR (see the module documentation): `vex` for
    /// the VEX forms (`avx::int_op`: three vector operands, or two and an imm8, with the VEX
    /// write rule), else the legacy `int_op` (destination = f(destination, source)). `host`
    /// addresses a memory source. False (nothing emitted) for a form left to `sse_helper`.
    pub(super) fn emit_int_vec(&mut self, insn: &Insn, host: Value, vex: bool) -> bool {
        let i = &insn.i;
        if i.op0_kind() != OpKind::Register {
            return false;
        }
        let d = i.op0_register();
        if !(d.is_xmm() || d.is_ymm()) {
            return false;
        }
        let wide = d.is_ymm();
        let lanes = if wide { 2 } else { 1 };
        let (m, imm) = if vex {
            (cpu::exec::avx::legacy(i.mnemonic()), cpu::exec::avx::imm8(insn))
        } else {
            (i.mnemonic(), cpu::exec::sse::imm8(insn))
        };
        // The second source's operand: VEX with three vector operands: 2; otherwise 1 (for a
        // legacy shift by an imm8, operand 1 is the immediate).
        let three = vex && i.op_count() == 3 && i.op2_kind() != OpKind::Immediate8;
        let (first, second) = if three { (i.op1_register(), 2) } else { (d, 1) };
        let imm_src = i.op_kind(second) == OpKind::Immediate8;
        let Some(op) = VOp::of(m, imm, imm_src) else { return false };
        match i.op_kind(second) {
            OpKind::Memory if i.memory_size().size() != 16 * lanes => return false,
            OpKind::Register => {
                let r = i.op_register(second);
                if !(r.is_xmm() || r.is_ymm()) || r.is_ymm() != wide {
                    return false;
                }
            }
            OpKind::Memory | OpKind::Immediate8 => {}
            _ => return false,
        }
        if vex && wide != first.is_ymm() {
            return false;
        }
        let ty = match op {
            VOp::Bin(_, ty) | VOp::Shl(ty, _) | VOp::Shr(ty, _) | VOp::Sar(ty, _) => ty,
            _ => I8X16,
        };
        // Every lane of every source first (the destination may be a source).
        let mut out = Vec::with_capacity(lanes);
        for l in 0..lanes as i32 {
            let a = self.b.ins().load(ty, MF, self.st, Self::vlane_off(first, l));
            let b = match i.op_kind(second) {
                OpKind::Memory => Some(self.b.ins().load(ty, HOST, host, 16 * l)),
                OpKind::Register => {
                    Some(self.b.ins().load(ty, MF, self.st, Self::vlane_off(i.op_register(second), l)))
                }
                _ => None,
            };
            out.push(self.vec_op(op, a, b));
        }
        for (l, r) in out.into_iter().enumerate() {
            self.b.ins().store(MF, r, self.st, Self::vlane_off(d, l as i32));
        }
        if vex {
            self.zero_above(d, wide);
        }
        true
    }

    /// One lane of `op` (`b`: the second source, `None` for an immediate one).
    fn vec_op(&mut self, op: VOp, a: Value, b: Option<Value>) -> Value {
        let b_or_a = b.unwrap_or(a);
        match op {
            VOp::Bin(bin, _) => {
                let b = b_or_a;
                let ins = self.b.ins();
                match bin {
                    Bin::Add => ins.iadd(a, b),
                    Bin::Sub => ins.isub(a, b),
                    Bin::AddSatS => ins.sadd_sat(a, b),
                    Bin::SubSatS => ins.ssub_sat(a, b),
                    Bin::AddSatU => ins.uadd_sat(a, b),
                    Bin::SubSatU => ins.usub_sat(a, b),
                    Bin::Eq => ins.icmp(IntCC::Equal, a, b),
                    Bin::GtS => ins.icmp(IntCC::SignedGreaterThan, a, b),
                    Bin::MinU => ins.umin(a, b),
                    Bin::MaxU => ins.umax(a, b),
                    Bin::MinS => ins.smin(a, b),
                    Bin::MaxS => ins.smax(a, b),
                    Bin::Avg => ins.avg_round(a, b),
                    Bin::Mul => ins.imul(a, b),
                    Bin::And => ins.band(a, b),
                    Bin::AndNot => ins.band_not(b, a),
                    Bin::Or => ins.bor(a, b),
                    Bin::Xor => ins.bxor(a, b),
                }
            }
            VOp::Shuffle2(s) => {
                let s = self.b.func.dfg.immediates.push(ConstantData::from(s.to_vec()));
                self.b.ins().shuffle(a, b_or_a, s)
            }
            VOp::Shuffle1(s) => {
                let s = self.b.func.dfg.immediates.push(ConstantData::from(s.to_vec()));
                self.b.ins().shuffle(b_or_a, b_or_a, s)
            }
            VOp::ShiftBytes(s) => {
                let z = self.vconst16(I8X16, [0; 16]);
                let s = self.b.func.dfg.immediates.push(ConstantData::from(s.to_vec()));
                self.b.ins().shuffle(a, z, s)
            }
            // Vector shifts take a scalar count (below the lane width here, so no masking).
            VOp::Shl(_, Some(n)) => {
                let n = self.b.ins().iconst(I32, n as i64);
                self.b.ins().ishl(a, n)
            }
            VOp::Shr(_, Some(n)) => {
                let n = self.b.ins().iconst(I32, n as i64);
                self.b.ins().ushr(a, n)
            }
            VOp::Shl(ty, None) | VOp::Shr(ty, None) => self.vconst16(ty, [0; 16]),
            VOp::Sar(_, n) => {
                let n = self.b.ins().iconst(I32, n as i64);
                self.b.ins().sshr(a, n)
            }
            VOp::Pshufb => {
                // `compute`: byte i = a[b[i] & 15], or 0 when b[i] bit 7 is set; `swizzle` gives 0
                // for an index above 15, so b & 0x8f keeps exactly those.
                let k = self.vconst16(I8X16, [0x8f; 16]);
                let idx = self.b.ins().band(b_or_a, k);
                self.b.ins().swizzle(a, idx)
            }
        }
    }
}
