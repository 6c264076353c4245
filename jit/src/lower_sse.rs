//! SSE forms lowered inline (a child of `lower`, so it uses the same builder helpers): the legacy
//! SSE/SSE2 (and, where the CPU model has them, SSE3-SSE4.1) instructions compiled C executes, in
//! 64-bit code, with XMM register, memory (through the TLB probe of `lower::Lower::probe`) or, for
//! the moves, general-register operands.
//!
//! Guards. Every form first checks, in generated code, what the interpreter's `sse::enter` checks
//! (CR0.EM and CR0.TS clear, CR4.OSFXSR set), and a 16-byte memory operand of an aligned form
//! (everything but MOVUPS/MOVUPD/MOVDQU/LDDQU) checks its 16-byte alignment; a form that calls the
//! host FP unit also needs every MXCSR exception masked. When a check fails the handler runs the
//! instruction at exact state (so a misaligned MOVAPS raises its #GP there, an unmasked SIMD
//! exception its #XM, CR0.TS its #NM), as it does for a memory access off the TLB's fast path.
//!
//! One source of semantics. The XMM registers stay in `CpuState` (`fpu.xmm`); generated code reads
//! and writes them there. Three kinds of forms:
//! - restated in IR, on 64-bit halves (the 128-bit moves, VEX moves and logic on whole 16-byte
//!   vectors): the moves (MOVAPS/MOVUPS/MOVAPD/MOVUPD/MOVDQA/MOVDQU/LDDQU,
//!   MOVD/MOVQ to and from general registers and memory, MOVSD/MOVSS, MOVLPD/MOVLPS/MOVHPD/MOVHPS,
//!   MOVHLPS/MOVLHPS, MOVDDUP), UNPCKLPD/UNPCKHPD/PUNPCKLQDQ/PUNPCKHQDQ and the bitwise logic
//!   (PAND/PANDN/POR/PXOR and their PS/PD forms): `sse::mov_v` and `sse_int::compute`'s logic arms,
//!   covered form by form by `tests/differential_sse.rs`;
//! - restated in Cranelift vector IR by the child module `lower_vec` (one host instruction or a
//!   few per 128-bit lane): the integer SIMD forms compiled C and glibc's string functions run
//!   (PADD*/PSUB* with and without saturation, PCMPEQ*/PCMPGT*, PMIN*/PMAX*, PAVG*, PMULLW/PMULLD,
//!   PUNPCKL*/PUNPCKH*, PSHUF D/LW/HW/B, PSLLDQ/PSRLDQ, shifts by an imm8, PMOVMSKB), legacy and
//!   VEX.128/VEX.256, and VZEROUPPER: `sse_int::compute`'s arms, covered form by form by
//!   `tests/differential_sse.rs` and difftest's `tests/jit_vec.rs` (jit against this host's CPU);
//! - computed by [`sse_helper`], a direct call (no `call_handler`, no write-back of the general
//!   registers or RFLAGS, which it does not touch) of the interpreter's own pure functions on the
//!   XMM slots: `sse_int::compute` for the other integer SIMD (PSADBW, PMADDWD, PALIGNR, shifts by
//!   a register count, PACK*...), `sse_fp::host` (the host's own instruction with the guest's RC/DAZ/FTZ, all
//!   exceptions masked) for FP arithmetic, compares, conversions, CVTSI2SD/CVTTSD2SI and
//!   (U)COMISS/SD. With every MXCSR exception masked (the guard), `sse_fp::apply_flags` reduces to
//!   ORing the raised flags into MXCSR, which the helper does; so results, sticky flags, DAZ/FTZ and
//!   rounding are the host's exactly, as under the interpreter. Cranelift's own `fadd`/`fmul`
//!   cannot report MXCSR's sticky flags (PE on nearly every inexact result), so they are used only
//!   where no flag can change: ADD/SUB/MUL/DIV SD/PD compute each lane with them (round to
//!   nearest: the host's MXCSR in generated code) and keep the result when the guest's MXCSR has
//!   RC = nearest, every exception masked and PE already set, and the operands and result are
//!   such that no flag but PE can be raised (zero or normal operands, a normal divisor, a finite
//!   result that is not tiny or an exact zero: `Lower::fp_fast_ok`); otherwise they call the
//!   helper. This restates the IEEE operation (the host's own, bit for bit) and the flag
//!   classification, covered by the differential test's FP cases. PMOVMSKB/MOVMSKPS/MOVMSKPD (`sse::movmsk`, private to the
//!   interpreter) are restated in the helper and covered by the same test.

#[path = "lower_vec.rs"]
mod lower_vec;

use super::{Form, HOST, Lower, MF, Mem, Op, lea_regs_ok};
use cpu::CpuState;
use cpu::exec::Insn;
use cpu::exec::sse_fp::{self, host, mx};
use cpu::state::{cr0, cr4, flags};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{F64, I32, I64};
use cranelift_codegen::ir::{Block, InstBuilder, MemFlagsData, Value};
use iced_x86::{Code, CodeSize, Mnemonic as M, OpKind, Register};
use std::mem::offset_of;

/// What an inlined SSE instruction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sse {
    /// A full 128-bit move (MOVAPS ... LDDQU): register or memory to register, register to memory.
    Mov,
    /// MOVD/MOVQ into an XMM register from a general register or memory, or MOVQ xmm, xmm/m64:
    /// the low `n` bytes, the rest zeroed.
    MovIn(u8),
    /// MOVD/MOVQ from an XMM register's low `n` bytes to a general register or memory.
    MovOut(u8),
    /// MOVSS (4) / MOVSD (8): a register source merges into the low `n` bytes, a memory source
    /// zero-extends, a memory destination takes the low `n` bytes.
    MovScalar(u8),
    /// MOVLPD/MOVLPS (`false`) or MOVHPD/MOVHPS (`true`): the low or high quadword from or to m64.
    MovHalf(bool),
    /// Result = (one half of the destination, one half of the source), by [`Self::halves`].
    Halves(Halves),
    /// A bitwise operation on both halves.
    Logic(Logic),
    /// Computed by [`sse_helper`] (integer forms of `lower_vec` in vector IR instead); `fp` when it
    /// runs on the host's FP unit (needs masked MXCSR).
    Helper { fp: bool },
    /// VEX (64-bit code): VMOVDQU/VMOVDQA/VMOVUPS/VMOVAPS/VMOVUPD/VMOVAPD with an XMM (`false`) or
    /// YMM (`true`) register.
    VMov(bool),
    /// VEX: an integer form of `sse_int::compute`, VPMOVMSKB, or VZEROUPPER: in vector IR
    /// (`lower_vec`) where it has the form, else computed lane by lane by [`sse_helper`].
    VHelper,
    /// VEX: VMOVD/VMOVQ into an XMM register from a general register, m32/m64 or (VMOVQ) an XMM
    /// register: the low `n` bytes, bits MAXVL-1:`8n` zeroed (`avx::mov`, `avx::write_reg`).
    VMovIn(u8),
    /// VEX: VMOVD/VMOVQ from an XMM register's low `n` bytes to a general register or memory.
    VMovOut(u8),
    /// VEX: VPBROADCASTB/W/D/Q (elements of `n` bytes) from an XMM register or memory into an XMM
    /// (`false`) or YMM (`true`) register (`avx::broadcast`).
    VBcast(u8, bool),
}

impl Sse {
    /// Whether it is a VEX form (whose guard is `avx::enter`'s).
    fn vex(self) -> bool {
        matches!(self, Sse::VMov(_) | Sse::VHelper | Sse::VMovIn(_) | Sse::VMovOut(_) | Sse::VBcast(..))
    }
}

/// VMOVD/VMOVQ between XMM and general registers or memory, and VPBROADCASTB/W/D/Q: what glibc's
/// AVX2 string functions start with (`strchr`, `strchrnul`, `memchr`, `memset`: `vmovd xmm0, esi;
/// vpbroadcastb ymm0, xmm0`). Operands: XMM/YMM registers, general registers, and a memory
/// operand of the element's size with general base/index registers.
fn inline_vex_move(insn: &Insn) -> Option<Form> {
    let i = &insn.i;
    let mem = (0..i.op_count()).find(|&n| i.op_kind(n) == OpKind::Memory);
    let reg_ok = |n: u32| {
        let r = i.op_register(n);
        i.op_kind(n) == OpKind::Memory || r.is_xmm() || r.is_ymm() || cpu::regs::gpr(r).is_some()
    };
    if i.op_count() != 2 || !(0..2).all(reg_ok) || (mem.is_some() && !lea_regs_ok(insn)) {
        return None;
    }
    let op = match i.code() {
        Code::VEX_Vmovd_xmm_rm32 => Sse::VMovIn(4),
        Code::VEX_Vmovq_xmm_rm64 | Code::VEX_Vmovq_xmm_xmmm64 => Sse::VMovIn(8),
        // VMOVQ xmm/m64, xmm: to a register it is VMOVQ xmm, xmm (zero-extends).
        Code::VEX_Vmovq_xmmm64_xmm if mem.is_none() => Sse::VMovIn(8),
        Code::VEX_Vmovd_rm32_xmm => Sse::VMovOut(4),
        Code::VEX_Vmovq_rm64_xmm | Code::VEX_Vmovq_xmmm64_xmm => Sse::VMovOut(8),
        Code::VEX_Vpbroadcastb_xmm_xmmm8 => Sse::VBcast(1, false),
        Code::VEX_Vpbroadcastb_ymm_xmmm8 => Sse::VBcast(1, true),
        Code::VEX_Vpbroadcastw_xmm_xmmm16 => Sse::VBcast(2, false),
        Code::VEX_Vpbroadcastw_ymm_xmmm16 => Sse::VBcast(2, true),
        Code::VEX_Vpbroadcastd_xmm_xmmm32 => Sse::VBcast(4, false),
        Code::VEX_Vpbroadcastd_ymm_xmmm32 => Sse::VBcast(4, true),
        Code::VEX_Vpbroadcastq_xmm_xmmm64 => Sse::VBcast(8, false),
        Code::VEX_Vpbroadcastq_ymm_xmmm64 => Sse::VBcast(8, true),
        _ => return None,
    };
    let mem = match mem {
        None => Mem::Guard,
        Some(0) => Mem::Dst,
        Some(_) => Mem::Src,
    };
    Some(Form { op: Op::Sse(op), mem })
}

/// Whether (and as what) `insn` is an inlined VEX form (the caller has seen a VEX encoding): the
/// ones glibc's AVX2 string functions (`strlen`, `memcmp`, `memmove`...) execute.
pub(crate) fn inline_vex(insn: &Insn) -> Option<Form> {
    let i = &insn.i;
    if i.code_size() != CodeSize::Code64
        || i.has_lock_prefix()
        || !cpu::exec::avx::is_avx_code(i.code())
        || insn.handler as usize != cpu::exec::handler_for(i.code()) as usize
    {
        return None;
    }
    if let Some(f) = inline_vex_move(insn) {
        return Some(f);
    }
    let vec = |r: Register| r.is_xmm() || r.is_ymm();
    for n in 0..i.op_count() {
        match i.op_kind(n) {
            OpKind::Register if vec(i.op_register(n)) || cpu::regs::gpr(i.op_register(n)).is_some() => {}
            OpKind::Memory if lea_regs_ok(insn) && matches!(i.memory_size().size(), 16 | 32) => {}
            OpKind::Immediate8 => {}
            _ => return None,
        }
    }
    let mem = (0..i.op_count()).find(|&n| i.op_kind(n) == OpKind::Memory);
    let form = |op: Sse| {
        let mem = match mem {
            None => Mem::Guard,
            Some(0) => Mem::Dst,
            Some(_) => Mem::Src,
        };
        Some(Form { op: Op::Sse(op), mem })
    };
    let m = i.mnemonic();
    let op = i.code().op_code();
    use iced_x86::OpCodeOperandKind as K;
    match m {
        M::Vzeroupper => form(Sse::VHelper),
        M::Vmovdqu | M::Vmovdqa | M::Vmovups | M::Vmovaps | M::Vmovupd | M::Vmovapd if i.op_count() == 2 => {
            let r = if mem == Some(0) { i.op1_register() } else { i.op0_register() };
            form(Sse::VMov(r.is_ymm()))
        }
        // VMOVNTDQ m, xmm/ymm (glibc's memset/memcpy of large blocks): `avx::mov`, an aligned store
        // (the non-temporal hint has no effect here), as VMOVDQA's store.
        M::Vmovntdq if i.op_count() == 2 && mem == Some(0) => form(Sse::VMov(i.op1_register().is_ymm())),
        M::Vpmovmskb if cpu::regs::gpr(i.op0_register()).is_some() => form(Sse::VHelper),
        _ if mem == Some(0) || m as u32 > C_MNEMONIC => None,
        _ => {
            let l = cpu::exec::avx::legacy(m);
            // `avx::int_op`'s forms with a vector destination and three vector operands (or two:
            // the destination's old value is the first source), no is4 operand, no second source
            // narrower than the destination, and no immediate shift (whose destination is VEX.vvvv).
            let three = i.op_count() == 3 && i.op2_kind() != OpKind::Immediate8;
            let narrow = i.op0_register().is_ymm()
                && (0..i.op_count()).any(|n| {
                    (i.op_kind(n) == OpKind::Register && i.op_register(n).is_xmm())
                        || (i.op_kind(n) == OpKind::Memory && i.memory_size().size() != 32)
                });
            if !cpu::exec::sse_int::handles(l)
                || l == m
                || matches!(l, M::Insertps)
                || i.op_count() > 3
                || (i.op_count() == 3 && !three && i.op2_kind() != OpKind::Immediate8)
                || !vec(i.op0_register())
                || matches!(op.op_kind(0), K::xmm_vvvv | K::ymm_vvvv)
                || narrow
                || (1..i.op_count()).any(|n| i.op_kind(n) == OpKind::Register && !vec(i.op_register(n)))
            {
                return None;
            }
            form(Sse::VHelper)
        }
    }
}

/// Two-half shuffles: which half of destination and source make the low and high results.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Halves {
    /// (d.lo, s.lo): UNPCKLPD, PUNPCKLQDQ, MOVLHPS.
    LoLo,
    /// (d.hi, s.hi): UNPCKHPD, PUNPCKHQDQ.
    HiHi,
    /// (s.hi, d.hi): MOVHLPS.
    SrcHiDstHi,
    /// (s.lo, s.lo): MOVDDUP.
    Dup,
}

/// Bitwise operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Logic {
    And,
    /// NOT destination AND source.
    AndNot,
    Or,
    Xor,
}

/// Whether (and as what) `insn` is an inlined SSE form (legacy encoding, no LOCK: checked by the
/// caller).
pub(crate) fn inline_sse(insn: &Insn) -> Option<Form> {
    let i = &insn.i;
    if i.code_size() != CodeSize::Code64 || !cpu::exec::sse::is_simd_code(i.code()) {
        return None;
    }
    // Only where the CPU model has the instruction (otherwise its handler raises #UD).
    if insn.handler as usize != cpu::exec::handler_for(i.code()) as usize {
        return None;
    }
    // Operands: XMM registers, general registers, the memory operand (64-bit addressing with
    // general base/index registers) and an imm8; nothing names an MM register.
    for n in 0..i.op_count() {
        match i.op_kind(n) {
            OpKind::Register => {
                let r = i.op_register(n);
                if !(r.is_xmm() || cpu::regs::gpr(r).is_some()) {
                    return None;
                }
            }
            OpKind::Memory => {
                if !lea_regs_ok(insn) || !matches!(i.memory_size().size(), 4 | 8 | 16) {
                    return None;
                }
            }
            OpKind::Immediate8 => {}
            _ => return None,
        }
    }
    let mem = (0..i.op_count()).find(|&n| i.op_kind(n) == OpKind::Memory);
    let form = |op: Sse| {
        let mem = match mem {
            None => Mem::Guard,
            Some(0) => Mem::Dst,
            Some(_) => Mem::Src,
        };
        Some(Form { op: Op::Sse(op), mem })
    };
    let xmm0 = i.op_count() >= 1 && i.op0_kind() == OpKind::Register && i.op0_register().is_xmm();
    let m = i.mnemonic();
    match i.code() {
        Code::Movaps_xmm_xmmm128
        | Code::Movaps_xmmm128_xmm
        | Code::Movups_xmm_xmmm128
        | Code::Movups_xmmm128_xmm
        | Code::Movapd_xmm_xmmm128
        | Code::Movapd_xmmm128_xmm
        | Code::Movupd_xmm_xmmm128
        | Code::Movupd_xmmm128_xmm
        | Code::Movdqa_xmm_xmmm128
        | Code::Movdqa_xmmm128_xmm
        | Code::Movdqu_xmm_xmmm128
        | Code::Movdqu_xmmm128_xmm
        | Code::Lddqu_xmm_m128 => form(Sse::Mov),
        Code::Movd_xmm_rm32 => form(Sse::MovIn(4)),
        Code::Movq_xmm_rm64 | Code::Movq_xmm_xmmm64 => form(Sse::MovIn(8)),
        Code::Movd_rm32_xmm => form(Sse::MovOut(4)),
        Code::Movq_rm64_xmm => form(Sse::MovOut(8)),
        // MOVQ xmm/m64, xmm: to a register it is MOVQ xmm, xmm (zero-extends).
        Code::Movq_xmmm64_xmm if mem.is_some() => form(Sse::MovOut(8)),
        Code::Movq_xmmm64_xmm => form(Sse::MovIn(8)),
        Code::Movss_xmm_xmmm32 | Code::Movss_xmmm32_xmm => form(Sse::MovScalar(4)),
        Code::Movsd_xmm_xmmm64 | Code::Movsd_xmmm64_xmm => form(Sse::MovScalar(8)),
        Code::Movlpd_xmm_m64 | Code::Movlpd_m64_xmm | Code::Movlps_xmm_m64 | Code::Movlps_m64_xmm => {
            form(Sse::MovHalf(false))
        }
        Code::Movhpd_xmm_m64 | Code::Movhpd_m64_xmm | Code::Movhps_xmm_m64 | Code::Movhps_m64_xmm => {
            form(Sse::MovHalf(true))
        }
        Code::Unpcklpd_xmm_xmmm128 | Code::Punpcklqdq_xmm_xmmm128 | Code::Movlhps_xmm_xmm => {
            form(Sse::Halves(Halves::LoLo))
        }
        Code::Unpckhpd_xmm_xmmm128 | Code::Punpckhqdq_xmm_xmmm128 => form(Sse::Halves(Halves::HiHi)),
        Code::Movhlps_xmm_xmm => form(Sse::Halves(Halves::SrcHiDstHi)),
        Code::Movddup_xmm_xmmm64 => form(Sse::Halves(Halves::Dup)),
        _ if m as u32 > C_MNEMONIC || mem == Some(0) => None,
        // General-register destinations: the conversions to an integer and the sign masks.
        _ if !xmm0 => match m {
            M::Cvtss2si | M::Cvttss2si | M::Cvtsd2si | M::Cvttsd2si => form(Sse::Helper { fp: true }),
            M::Pmovmskb | M::Movmskps | M::Movmskpd => form(Sse::Helper { fp: false }),
            _ => None,
        },
        _ => match m {
            M::Pand | M::Andps | M::Andpd => form(Sse::Logic(Logic::And)),
            M::Pandn | M::Andnps | M::Andnpd => form(Sse::Logic(Logic::AndNot)),
            M::Por | M::Orps | M::Orpd => form(Sse::Logic(Logic::Or)),
            M::Pxor | M::Xorps | M::Xorpd => form(Sse::Logic(Logic::Xor)),
            M::Cvtsi2ss | M::Cvtsi2sd | M::Comiss | M::Ucomiss | M::Comisd | M::Ucomisd => {
                form(Sse::Helper { fp: true })
            }
            // The dot products mask lanes after the host run and have their own fault rules;
            // INSERTPS adjusts its immediate for a memory source: they keep their handler.
            // CVTPI2PS/CVTPI2PD take only the low quadword of their source and merge.
            M::Dpps | M::Dppd | M::Insertps | M::Cvtpi2ps | M::Cvtpi2pd => None,
            // The source must be XMM, memory or an imm8 (not a GPR, as in PINSR*, which the
            // interpreter handles elsewhere anyway).
            _ if i.op_count() >= 2 && i.op1_kind() == OpKind::Register && !i.op1_register().is_xmm() => None,
            _ if sse_fp::op_of(m).is_some() => form(Sse::Helper { fp: true }),
            _ if cpu::exec::sse_int::handles(m) => form(Sse::Helper { fp: false }),
            _ => None,
        },
    }
}

/// Whether a 16-byte memory operand of `insn` must be 16-byte aligned (`sse::needs_align` for the
/// inlined forms).
fn needs_align(insn: &Insn) -> bool {
    if insn.i.code().op_code().encoding() == iced_x86::EncodingKind::VEX {
        // `avx::needs_align` for the inlined VEX forms: the aligned moves, to their size.
        return matches!(insn.i.mnemonic(), M::Vmovdqa | M::Vmovaps | M::Vmovapd | M::Vmovntdq);
    }
    insn.i.memory_size().size() == 16
        && !matches!(insn.i.mnemonic(), M::Movups | M::Movupd | M::Movdqu | M::Lddqu)
}

/// Offset of bits 255:128 of YMM register `k` in `CpuState`.
fn ymm_hi_off(k: usize) -> i32 {
    (offset_of!(CpuState, vec) + offset_of!(cpu::state::VecState, ymm_hi) + 16 * k) as i32
}

/// Offset of bits 511:256 of ZMM register `k` in `CpuState`.
fn zmm_hi_off(k: usize) -> i32 {
    (offset_of!(CpuState, vec) + offset_of!(cpu::state::VecState, zmm_hi256) + 32 * k) as i32
}

/// Offset of the low quadword of XMM register `r` in `CpuState`.
fn xmm_off(r: Register) -> i32 {
    let k = cpu::exec::avx::vindex(r);
    (offset_of!(CpuState, fpu) + offset_of!(cpu::state::FpuState, xmm) + 16 * k) as i32
}

const MXCSR: i32 = (offset_of!(CpuState, fpu) + offset_of!(cpu::state::FpuState, mxcsr)) as i32;

/// The scalar/packed double arithmetic of [`Lower::emit_fp_inline`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FpOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// MXCSR bits [`Lower::emit_fp_inline`]'s fast path looks at: PE, every exception mask and RC.
const FP_FAST_MASK: u32 = mx::MASKS | mx::RC | mx::PE;
/// Their values for the fast path: every exception masked, round to nearest (what the host's own
/// MXCSR has in generated code: the SysV ABI keeps MXCSR's control bits across calls, and Rust
/// never changes them from the default), and PE already set (so ORing an inexact result's PE
/// changes nothing).
const FP_FAST_WANT: u32 = mx::MASKS | mx::PE;

// The helper's `code` argument.
/// Bits 0-11: the mnemonic.
const C_MNEMONIC: u32 = 0xfff;
/// Bits 12-15: the destination XMM register (or GPR index for a GPR destination).
const C_DST: u32 = 12;
/// Bits 16-19: the source XMM register.
const C_SRC: u32 = 16;
/// Bits 20-21: the source's kind.
const C_KIND: u32 = 20;
const K_XMM: u32 = 0;
const K_MEM: u32 = 1;
const K_GPR: u32 = 2;
const K_IMM: u32 = 3;
/// Bit 22: a 64-bit general register (CVT*2SI destination, CVTSI2S* source); for VEX, 256 bits.
const C_WIDE: u32 = 1 << 22;
/// Bit 23: a VEX form (`g` is the first source's register, `mem` holds up to 32 bytes).
const C_VEX: u32 = 1 << 23;
/// Bits 24-31: the imm8.
const C_IMM: u32 = 24;

/// The SSE helper generated code calls (`crate::HELPER_SSE`), with the signature of the flag
/// helpers: `(st, mem, g, size, code) -> r`. `code` names the instruction (see `C_*`); `mem` is the
/// host address of a memory source of `size` bytes (the probe's), `g` a general-register source's
/// value. Returns the general-register result (CVT*2SI, PMOVMSKB/MOVMSKPS/MOVMSKPD) or, for
/// (U)COMIS*, ZF | PF << 1 | CF << 2; the XMM destination and MXCSR are written in `st`.
/// Generated code calls it only with every MXCSR exception masked for the FP forms (see the
/// module documentation).
pub(crate) extern "C" fn sse_helper(st: *const CpuState, mem: u64, g: u64, size: u64, code: u32) -> u64 {
    // SAFETY: generated code passes the `CpuState` of the `Ctx` it runs on (derived from its
    // exclusive borrow), which nothing else accesses during the call.
    let st = unsafe { &mut *(st as *mut CpuState) };
    crate::profile::count_helper(code & (C_MNEMONIC | C_VEX | C_WIDE | 3 << C_KIND));
    let Ok(m) = M::try_from((code & C_MNEMONIC) as usize) else { return 0 };
    let d = ((code >> C_DST) & 15) as usize;
    let imm = (code >> C_IMM) as u8;
    let wide = code & C_WIDE != 0;
    if code & C_VEX != 0 {
        return vex_helper(st, m, code, mem, g, size);
    }
    let b: u128 = match (code >> C_KIND) & 3 {
        K_XMM => st.fpu.xmm[((code >> C_SRC) & 15) as usize],
        K_MEM => {
            let mut x = [0u8; 16];
            let n = (size as usize).min(16);
            // SAFETY: `mem` is the host address the TLB probe returned for this access, `size`
            // bytes inside one guest page that stays mapped while generated code runs.
            unsafe { std::ptr::copy_nonoverlapping(mem as *const u8, x.as_mut_ptr(), n) };
            u128::from_le_bytes(x)
        }
        K_GPR => g as u128,
        _ => imm as u128,
    };
    let a = st.fpu.xmm[d];
    let hmx = sse_fp::host_mxcsr(st.fpu.mxcsr);
    let mut out = 0;
    let (r, raised) = match m {
        M::Cvtss2si | M::Cvttss2si | M::Cvtsd2si | M::Cvttsd2si => {
            let f: fn(u128, u32) -> (u64, u32) = match (m, wide) {
                (M::Cvtss2si, false) => host::cvtss2si32,
                (M::Cvtss2si, true) => host::cvtss2si64,
                (M::Cvttss2si, false) => host::cvttss2si32,
                (M::Cvttss2si, true) => host::cvttss2si64,
                (M::Cvtsd2si, false) => host::cvtsd2si32,
                (M::Cvtsd2si, true) => host::cvtsd2si64,
                (M::Cvttsd2si, false) => host::cvttsd2si32,
                _ => host::cvttsd2si64,
            };
            let (r, raised) = f(b, hmx);
            st.fpu.mxcsr |= raised & cpu::exec::sse::MXCSR_FLAGS;
            return r;
        }
        M::Cvtsi2ss | M::Cvtsi2sd => {
            let f: fn(u128, u64, u32) -> (u128, u32) = match (m, wide) {
                (M::Cvtsi2ss, false) => host::cvtsi2ss32,
                (M::Cvtsi2ss, true) => host::cvtsi2ss64,
                (M::Cvtsi2sd, false) => host::cvtsi2sd32,
                _ => host::cvtsi2sd64,
            };
            f(a, b as u64, hmx)
        }
        M::Comiss | M::Ucomiss | M::Comisd | M::Ucomisd => {
            let f = match m {
                M::Comiss => host::comiss,
                M::Ucomiss => host::ucomiss,
                M::Comisd => host::comisd,
                _ => host::ucomisd,
            };
            let (zpc, raised) = f(a, b, hmx);
            st.fpu.mxcsr |= raised & cpu::exec::sse::MXCSR_FLAGS;
            return zpc as u64;
        }
        M::Pmovmskb | M::Movmskps | M::Movmskpd => {
            // `sse::movmsk`: the sign bit of each lane.
            let (bits, n) = match m {
                M::Movmskps => (32, 4),
                M::Movmskpd => (64, 2),
                _ => (8, 16),
            };
            for k in 0..n {
                out |= (((b >> (k * bits + bits - 1)) & 1) as u64) << k;
            }
            return out;
        }
        _ => {
            if let Some((r, m0, m1)) = direct::run(m, a, b) {
                let flags = cpu::exec::sse::MXCSR_FLAGS;
                if m0 & !flags == hmx && m0 & flags & !st.fpu.mxcsr == 0 {
                    // The host ran it under the guest's image (see `direct`).
                    (r, m1)
                } else {
                    let (f, _) = sse_fp::op_of(m).unwrap_or((host::addpd, sse_fp::Shape::None));
                    let r = f(a, b, imm, hmx);
                    if m0 & !flags == hmx {
                        // Clear the host's sticky flags, so that the next run can go direct.
                        direct::clear_flags();
                    }
                    r
                }
            } else if let Some((f, _)) = sse_fp::op_of(m) {
                // `sse_fp::fp_op`'s immediate for the host run.
                let himm = match m {
                    M::Cmpps | M::Cmppd | M::Cmpss | M::Cmpsd => imm & 7,
                    M::Roundps | M::Roundpd | M::Roundss | M::Roundsd => imm & 15,
                    _ => imm,
                };
                f(a, b, himm, hmx)
            } else if let Some(r) = cpu::exec::sse_int::compute(m, a, b, imm, st.fpu.xmm[0], 16) {
                (r, 0)
            } else {
                return 0;
            }
        }
    };
    st.fpu.mxcsr |= raised & cpu::exec::sse::MXCSR_FLAGS;
    st.fpu.xmm[d] = r;
    out
}

/// A name for the form `code` names (an [`sse_helper`] code word masked to its mnemonic, source
/// kind, VEX and width bits), for the profile's table.
pub(crate) fn helper_form_name(code: u32) -> String {
    let m = M::try_from((code & C_MNEMONIC) as usize).map_or_else(|_| "?".into(), |m| format!("{m:?}"));
    let kind = ["xmm", "mem", "gpr", "imm"][((code >> C_KIND) & 3) as usize];
    let vex = if code & C_VEX != 0 { " vex" } else { "" };
    let wide = if code & C_WIDE != 0 { " wide" } else { "" };
    format!("{m} src={kind}{vex}{wide}")
}

/// The VEX forms of [`sse_helper`] (`avx::vzero`, `avx::movmsk`, `avx::int_op` with the VEX write
/// rule of `avx::write_reg`).
fn vex_helper(st: &mut CpuState, m: M, code: u32, mem: u64, g: u64, size: u64) -> u64 {
    let d = ((code >> C_DST) & 15) as usize;
    let imm = (code >> C_IMM) as u8;
    let wide = code & C_WIDE != 0;
    let reg = |st: &CpuState, k: usize| [st.fpu.xmm[k & 15], if wide { st.vec.ymm_hi[k & 15] } else { 0 }];
    let b = match (code >> C_KIND) & 3 {
        K_XMM => reg(st, ((code >> C_SRC) & 15) as usize),
        K_MEM => {
            let mut x = [0u8; 32];
            let n = (size as usize).min(32);
            // SAFETY: as in `sse_helper`: the probe's host address of `size` bytes in one page.
            unsafe { std::ptr::copy_nonoverlapping(mem as *const u8, x.as_mut_ptr(), n) };
            let (lo, hi) = x.split_at(16);
            [
                u128::from_le_bytes(lo.try_into().unwrap_or([0; 16])),
                u128::from_le_bytes(hi.try_into().unwrap_or([0; 16])),
            ]
        }
        _ => [imm as u128, 0],
    };
    match m {
        M::Vzeroupper => {
            for k in 0..16 {
                st.vec.clear_above_128(k);
            }
            0
        }
        M::Vpmovmskb => {
            let n = if wide { 32 } else { 16 };
            (0..n).fold(0u64, |r, k| r | ((((b[k / 16] >> ((k % 16) * 8 + 7)) & 1) as u64) << k))
        }
        _ => {
            // `g` names the first source; with two vector operands it is the destination.
            let a = reg(st, g as usize);
            let mut r = [0u128; 2];
            for l in 0..if wide { 2 } else { 1 } {
                let im = if l == 1 { cpu::exec::avx::upper_imm(m, imm) } else { imm };
                let Some(v) = cpu::exec::sse_int::compute(m, a[l], b[l], im, 0, 16) else { return 0 };
                r[l] = v;
            }
            st.fpu.xmm[d] = r[0];
            if wide {
                st.vec.ymm_hi[d] = r[1];
                st.vec.clear_above_256(d);
            } else {
                st.vec.clear_above_128(d);
            }
            0
        }
    }
}

/// The FP arithmetic forms run on the host without loading MXCSR. `sse_fp::host` loads the
/// guest's MXCSR image (RC, DAZ, FTZ, every exception masked, no flags) around each instruction and
/// restores the host's after it: two LDMXCSR, which cost most of an ADDPD's or MULPD's time in the
/// guest CPU benchmark's matmul (`perf`, docs/PERF.md). The host's own MXCSR is usually that very
/// image (0x1f80: Rust never changes the rounding or the masks), with sticky flags of its own. So
/// [`run`] executes the same host instruction as `sse_fp::host` between two STMXCSR, and
/// `sse_helper` keeps its result when the host's MXCSR before it had the guest's control bits and
/// no sticky flag that the guest's MXCSR lacks: then each flag the guest does not have yet is set
/// after the run exactly when the instruction raised it, and the flags the guest has stay set
/// whatever it raised. Otherwise the result is dropped and `sse_fp::host` runs it; the host's
/// sticky flags are then cleared ([`clear_flags`]) so that the next run can go direct. Same
/// instruction, same control bits, same inputs: the same result and flags (the differential test
/// runs both paths against the interpreter).
mod direct {
    use core::arch::asm;
    use core::arch::x86_64::__m128i;
    use iced_x86::Mnemonic as M;

    fn v(x: u128) -> __m128i {
        // SAFETY: `__m128i` and `u128` are both 16-byte plain-data types; every bit pattern is valid.
        unsafe { core::mem::transmute::<u128, __m128i>(x) }
    }

    fn u(x: __m128i) -> u128 {
        // SAFETY: as in `v`.
        unsafe { core::mem::transmute::<__m128i, u128>(x) }
    }

    macro_rules! direct {
        ($($m:ident = $ins:literal;)*) => {
            /// Runs the host instruction of `m` on (a, b) under the host's MXCSR as it is: (result,
            /// MXCSR before, MXCSR after), or `None` for a mnemonic not listed here.
            pub(super) fn run(m: M, a: u128, b: u128) -> Option<(u128, u32, u32)> {
                let mut x = v(a);
                let y = v(b);
                let (mut m0, mut m1) = (0u32, 0u32);
                match m {
                    $(M::$m => {
                        // SAFETY: stores MXCSR to two live locals around one SSE register-register
                        // instruction, which cannot trap (the caller keeps its result only when
                        // every exception was masked); no stack, flags or other state is touched.
                        unsafe {
                            asm!(
                                "stmxcsr [{a}]",
                                concat!($ins, " {x}, {y}"),
                                "stmxcsr [{b}]",
                                x = inout(xmm_reg) x,
                                y = in(xmm_reg) y,
                                a = in(reg) &raw mut m0,
                                b = in(reg) &raw mut m1,
                                options(nostack, preserves_flags),
                            );
                        }
                    })*
                    _ => return None,
                }
                Some((u(x), m0, m1))
            }
        };
    }

    direct! {
        Addpd = "addpd"; Addsd = "addsd"; Addps = "addps"; Addss = "addss";
        Subpd = "subpd"; Subsd = "subsd"; Subps = "subps"; Subss = "subss";
        Mulpd = "mulpd"; Mulsd = "mulsd"; Mulps = "mulps"; Mulss = "mulss";
        Divpd = "divpd"; Divsd = "divsd"; Divps = "divps"; Divss = "divss";
    }

    /// Clears the host's MXCSR sticky flags (its control bits unchanged).
    pub(super) fn clear_flags() {
        let mut m = 0u32;
        // SAFETY: reads and writes back the host MXCSR through a live local with only the six
        // flag bits cleared; nothing else changes.
        unsafe {
            asm!(
                "stmxcsr [{p}]",
                "and dword ptr [{p}], -64",
                "ldmxcsr [{p}]",
                p = in(reg) &raw mut m,
                options(nostack),
            );
        }
    }
}

impl Lower<'_, '_> {
    /// The checks before an SSE form's fast path (see the module documentation): CR0.EM/TS clear,
    /// CR4.OSFXSR set, and for FP forms every MXCSR exception masked; else `slow`.
    pub(crate) fn sse_guard(&mut self, op: Sse, slow: Block) {
        if op.vex() {
            return self.vex_guard(slow);
        }
        let c0 = self.b.ins().load(I64, MF, self.st, offset_of!(CpuState, cr0) as i32);
        let c4 = self.b.ins().load(I64, MF, self.st, offset_of!(CpuState, cr4) as i32);
        // bad = (cr0 & (EM | TS)) | (!cr4 & OSFXSR) [| (!mxcsr & MASKS)]: zero when the fast path runs.
        let bad0 = self.b.ins().band_imm_s(c0, (cr0::EM | cr0::TS) as i64);
        let nc4 = self.b.ins().bnot(c4);
        let bad4 = self.b.ins().band_imm_s(nc4, cr4::OSFXSR as i64);
        let mut bad = self.b.ins().bor(bad0, bad4);
        if op == (Sse::Helper { fp: true }) {
            let m = self.b.ins().uload32(MF, self.st, MXCSR);
            let nm = self.b.ins().bnot(m);
            let badm = self.b.ins().band_imm_s(nm, mx::MASKS as i64);
            bad = self.b.ins().bor(bad, badm);
        }
        let ok = self.b.ins().icmp_imm_s(IntCC::Equal, bad, 0);
        self.or_slow(ok, slow);
    }

    /// `avx::enter`'s checks (64-bit code: CR4.OSXSAVE set, XCR0 enabling SSE and AVX state,
    /// CR0.TS clear), else `slow`.
    fn vex_guard(&mut self, slow: Block) {
        let c0 = self.b.ins().load(I64, MF, self.st, offset_of!(CpuState, cr0) as i32);
        let c4 = self.b.ins().load(I64, MF, self.st, offset_of!(CpuState, cr4) as i32);
        let x0 = self.b.ins().load(I64, MF, self.st, offset_of!(CpuState, xcr0) as i32);
        let bad0 = self.b.ins().band_imm_s(c0, cr0::TS as i64);
        let nc4 = self.b.ins().bnot(c4);
        let bad4 = self.b.ins().band_imm_s(nc4, cr4::OSXSAVE as i64);
        let nx0 = self.b.ins().bnot(x0);
        let badx = self.b.ins().band_imm_s(nx0, 0b110);
        let bad = self.b.ins().bor(bad0, bad4);
        let bad = self.b.ins().bor(bad, badx);
        let ok = self.b.ins().icmp_imm_s(IntCC::Equal, bad, 0);
        self.or_slow(ok, slow);
    }

    /// A 16-byte access of an aligned form at linear `lin` must be 16-byte aligned, else `slow`
    /// (where the handler raises the #GP).
    pub(crate) fn sse_align(&mut self, insn: &Insn, lin: Value, slow: Block) {
        if needs_align(insn) {
            let size = insn.i.memory_size().size() as i64;
            let low = self.b.ins().band_imm_s(lin, size - 1);
            let ok = self.b.ins().icmp_imm_s(IntCC::Equal, low, 0);
            self.or_slow(ok, slow);
        }
    }

    fn xmm_lo(&mut self, r: Register) -> Value {
        self.b.ins().load(I64, MF, self.st, xmm_off(r))
    }

    fn xmm_hi(&mut self, r: Register) -> Value {
        self.b.ins().load(I64, MF, self.st, xmm_off(r) + 8)
    }

    fn set_xmm_lo(&mut self, r: Register, v: Value) {
        self.b.ins().store(MF, v, self.st, xmm_off(r));
    }

    fn set_xmm_hi(&mut self, r: Register, v: Value) {
        self.b.ins().store(MF, v, self.st, xmm_off(r) + 8);
    }

    /// The source operand (operand 1) as (low, high) quadwords: an XMM register or `host`'s 16
    /// bytes (only the halves asked for are loaded).
    fn src_halves(&mut self, insn: &Insn, host: Value, lo: bool, hi: bool) -> (Option<Value>, Option<Value>) {
        let i = &insn.i;
        if i.op1_kind() == OpKind::Register {
            let r = i.op1_register();
            (lo.then(|| self.xmm_lo(r)), hi.then(|| self.xmm_hi(r)))
        } else {
            (
                lo.then(|| self.b.ins().load(I64, HOST, host, 0)),
                hi.then(|| self.b.ins().load(I64, HOST, host, 8)),
            )
        }
    }

    /// A general register operand `n` as a `RegOp`.
    fn gpr_op(insn: &Insn, n: u32) -> cpu::exec::RegOp {
        let g = cpu::regs::gpr(insn.i.op_register(n)).expect("inline_sse admits only general registers here");
        cpu::exec::RegOp { index: g.index as u8, size: g.size as u8, shift: g.shift as u8 }
    }

    /// Emits an SSE form once the guard and probe succeeded (`host` addresses the memory operand).
    pub(crate) fn emit_sse(&mut self, insn: &Insn, op: Sse, mem: Mem, host: Value) {
        let i = &insn.i;
        let d = i.op0_register();
        match op {
            Sse::Mov => {
                // One 16-byte load and store.
                use cranelift_codegen::ir::types::I8X16;
                if mem == Mem::Dst {
                    let v = self.b.ins().load(I8X16, MF, self.st, xmm_off(i.op1_register()));
                    self.b.ins().store(HOST, v, host, 0);
                } else {
                    let v = if i.op1_kind() == OpKind::Memory {
                        self.b.ins().load(I8X16, HOST, host, 0)
                    } else {
                        self.b.ins().load(I8X16, MF, self.st, xmm_off(i.op1_register()))
                    };
                    self.b.ins().store(MF, v, self.st, xmm_off(d));
                }
            }
            Sse::MovIn(n) => {
                let v = if i.op1_kind() == OpKind::Memory {
                    self.host_load(host, n as u32)
                } else if i.op1_register().is_xmm() {
                    self.xmm_lo(i.op1_register())
                } else {
                    let g = Self::gpr_op(insn, 1);
                    self.read(g)
                };
                let zero = self.b.ins().iconst(I64, 0);
                self.set_xmm_lo(d, v);
                self.set_xmm_hi(d, zero);
            }
            Sse::VMovIn(n) => {
                let v = if mem == Mem::Src {
                    self.host_load(host, n as u32)
                } else if i.op1_register().is_xmm() {
                    self.xmm_lo(i.op1_register())
                } else {
                    let g = Self::gpr_op(insn, 1);
                    self.read(g)
                };
                let zero = self.b.ins().iconst(I64, 0);
                self.set_xmm_lo(d, v);
                self.set_xmm_hi(d, zero);
                self.zero_above(d, false);
            }
            Sse::VBcast(n, wide) => {
                use cranelift_codegen::ir::types::{I8, I8X16, I16, I16X8, I32X4, I64X2};
                let (ty, lane) = match n {
                    1 => (I8X16, I8),
                    2 => (I16X8, I16),
                    4 => (I32X4, I32),
                    _ => (I64X2, I64),
                };
                // The source's low element (memory: exactly the element's bytes).
                let e = if mem == Mem::Src {
                    self.b.ins().load(lane, HOST, host, 0)
                } else {
                    self.b.ins().load(lane, MF, self.st, xmm_off(i.op1_register()))
                };
                let v = self.b.ins().splat(ty, e);
                self.b.ins().store(MF, v, self.st, xmm_off(d));
                if wide {
                    self.b.ins().store(MF, v, self.st, ymm_hi_off(cpu::exec::avx::vindex(d)));
                }
                self.zero_above(d, wide);
            }
            Sse::MovOut(n) | Sse::VMovOut(n) => {
                let v = self.xmm_lo(i.op1_register());
                if mem == Mem::Dst {
                    self.host_store(host, v, n as u32);
                } else {
                    let v = if n == 4 { self.trunc(v, 4) } else { v };
                    let g = Self::gpr_op(insn, 0);
                    self.write(g, v);
                }
            }
            Sse::MovScalar(n) => match mem {
                Mem::Dst => {
                    let v = self.xmm_lo(i.op1_register());
                    self.host_store(host, v, n as u32);
                }
                Mem::Src => {
                    let v = self.host_load(host, n as u32);
                    let zero = self.b.ins().iconst(I64, 0);
                    self.set_xmm_lo(d, v);
                    self.set_xmm_hi(d, zero);
                }
                _ => {
                    let s = self.xmm_lo(i.op1_register());
                    let v = if n == 8 {
                        s
                    } else {
                        let old = self.xmm_lo(d);
                        let old = self.b.ins().band_imm_s(old, !0xffff_ffff);
                        let s = self.trunc(s, 4);
                        self.b.ins().bor(old, s)
                    };
                    self.set_xmm_lo(d, v);
                }
            },
            Sse::MovHalf(high) => {
                if mem == Mem::Dst {
                    let s = i.op1_register();
                    let v = if high { self.xmm_hi(s) } else { self.xmm_lo(s) };
                    self.host_store(host, v, 8);
                } else {
                    let v = self.host_load(host, 8);
                    if high { self.set_xmm_hi(d, v) } else { self.set_xmm_lo(d, v) }
                }
            }
            Sse::Halves(h) => {
                // Source halves first: the destination may be the source.
                let (lo, hi) = match h {
                    Halves::LoLo => {
                        let (s, _) = self.src_halves(insn, host, true, false);
                        (self.xmm_lo(d), s.expect("asked for"))
                    }
                    Halves::HiHi => {
                        let (_, s) = self.src_halves(insn, host, false, true);
                        (self.xmm_hi(d), s.expect("asked for"))
                    }
                    Halves::SrcHiDstHi => {
                        let (_, s) = self.src_halves(insn, host, false, true);
                        (s.expect("asked for"), self.xmm_hi(d))
                    }
                    Halves::Dup => {
                        let s = if i.op1_kind() == OpKind::Memory {
                            self.host_load(host, 8)
                        } else {
                            self.xmm_lo(i.op1_register())
                        };
                        (s, s)
                    }
                };
                self.set_xmm_lo(d, lo);
                self.set_xmm_hi(d, hi);
            }
            Sse::Logic(l) => {
                // On the whole 128 bits at once (I64X2).
                use cranelift_codegen::ir::types::I64X2;
                let s = if i.op1_kind() == OpKind::Memory {
                    self.b.ins().load(I64X2, HOST, host, 0)
                } else {
                    self.b.ins().load(I64X2, MF, self.st, xmm_off(i.op1_register()))
                };
                let a = self.b.ins().load(I64X2, MF, self.st, xmm_off(d));
                let r = match l {
                    Logic::And => self.b.ins().band(a, s),
                    Logic::AndNot => self.b.ins().band_not(s, a),
                    Logic::Or => self.b.ins().bor(a, s),
                    Logic::Xor => self.b.ins().bxor(a, s),
                };
                self.b.ins().store(MF, r, self.st, xmm_off(d));
            }
            Sse::Helper { .. } => self.emit_sse_helper(insn, host),
            Sse::VMov(wide) => {
                use cranelift_codegen::ir::types::I8X16;
                // One 16-byte load and store per 128-bit lane.
                let lanes = if wide { 2 } else { 1 };
                let lane_off = |r: Register, l: i32| {
                    if l == 0 { xmm_off(r) } else { ymm_hi_off(cpu::exec::avx::vindex(r)) }
                };
                if mem == Mem::Dst {
                    let s = i.op1_register();
                    for l in 0..lanes {
                        let v = self.b.ins().load(I8X16, MF, self.st, lane_off(s, l));
                        self.b.ins().store(HOST, v, host, 16 * l);
                    }
                } else {
                    // Every source lane first (the source may be the destination).
                    let src: Vec<Value> = (0..lanes)
                        .map(|l| {
                            if i.op1_kind() == OpKind::Memory {
                                self.b.ins().load(I8X16, HOST, host, 16 * l)
                            } else {
                                self.b.ins().load(I8X16, MF, self.st, lane_off(i.op1_register(), l))
                            }
                        })
                        .collect();
                    for (l, v) in src.into_iter().enumerate() {
                        self.b.ins().store(MF, v, self.st, lane_off(d, l as i32));
                    }
                    // `avx::write_reg`: bits 255:128 from a YMM source or zeroed, 511:256 zeroed.
                    self.zero_above(d, wide);
                }
            }
            Sse::VHelper => self.emit_vex_helper(insn, host),
        }
    }

    /// `avx::write_reg`'s VEX rule after a write of bits 127:0 (`wide`: 255:0) of vector register
    /// `r`: the bits above them, up to MAXVL, zeroed.
    fn zero_above(&mut self, r: Register, wide: bool) {
        use cranelift_codegen::ir::types::I64X2;
        let k = cpu::exec::avx::vindex(r);
        let zero = self.b.ins().iconst(I64, 0);
        let zero = self.b.ins().splat(I64X2, zero);
        if !wide {
            self.b.ins().store(MF, zero, self.st, ymm_hi_off(k));
        }
        for h in 0..2 {
            self.b.ins().store(MF, zero, self.st, zmm_hi_off(k) + 16 * h);
        }
    }

    /// A VEX form of `Sse::VHelper`: VZEROUPPER, VPMOVMSKB and the forms of `lower_vec` in vector
    /// IR, the others computed by [`sse_helper`].
    fn emit_vex_helper(&mut self, insn: &Insn, host: Value) {
        let i = &insn.i;
        let m = i.mnemonic();
        match m {
            M::Vzeroupper => return self.emit_vzeroupper(),
            M::Vpmovmskb => return self.emit_pmovmskb(insn),
            _ if self.emit_int_vec(insn, host, true) => return,
            _ => {}
        }
        let mut code = C_VEX | (cpu::exec::avx::imm8(insn) as u32) << C_IMM;
        let zero = self.b.ins().iconst(I64, 0);
        let (mut mem, mut g, mut size) = (zero, zero, zero);
        let vec = |r: Register| r.is_xmm() || r.is_ymm();
        match m {
            M::Vzeroupper => code |= m as u32,
            M::Vpmovmskb => {
                let s = i.op1_register();
                code |= m as u32 | K_XMM << C_KIND | (cpu::exec::avx::vindex(s) as u32) << C_SRC;
                if s.is_ymm() {
                    code |= C_WIDE;
                }
            }
            _ => {
                code |= cpu::exec::avx::legacy(m) as u32;
                let d = i.op0_register();
                code |= (cpu::exec::avx::vindex(d) as u32) << C_DST;
                if d.is_ymm() {
                    code |= C_WIDE;
                }
                // Three vector operands: sources 1 and 2; two: the destination and operand 1.
                let three = i.op_count() == 3 && i.op2_kind() != OpKind::Immediate8;
                let (first, second) = if three { (i.op1_register(), 2) } else { (d, 1) };
                g = self.b.ins().iconst(I64, cpu::exec::avx::vindex(first) as i64);
                if i.op_kind(second) == OpKind::Memory {
                    code |= K_MEM << C_KIND;
                    mem = host;
                    size = self.b.ins().iconst(I64, i.memory_size().size() as i64);
                } else if vec(i.op_register(second)) {
                    code |= K_XMM << C_KIND | (cpu::exec::avx::vindex(i.op_register(second)) as u32) << C_SRC;
                } else {
                    code |= K_IMM << C_KIND;
                }
            }
        }
        let f = self.b.ins().load(I64, MF, self.out, crate::helper_offset(crate::HELPER_SSE));
        let c = self.b.ins().iconst(I32, code as i64);
        let call = self.b.ins().call_indirect(self.helper_sig, f, &[self.st, mem, g, size, c]);
        let r = self.b.inst_results(call)[0];
        if m == M::Vpmovmskb {
            let g = Self::gpr_op(insn, 0);
            let r = if g.size == 4 { self.trunc(r, 4) } else { r };
            self.write(g, r);
        }
    }

    /// ADDSD/SUBSD/MULSD/DIVSD and ADDPD/SUBPD/MULPD/DIVPD: Cranelift's `fadd`/`fsub`/`fmul`/
    /// `fdiv` on F64 when no MXCSR flag but PE can be raised and PE is already set, else a call of
    /// [`sse_helper`] (see [`Self::fp_fast_ok`] and the module documentation); false for other forms.
    fn emit_fp_inline(&mut self, insn: &Insn, host: Value) -> bool {
        let i = &insn.i;
        let (op, lanes) = match i.mnemonic() {
            M::Addsd => (FpOp::Add, 1),
            M::Subsd => (FpOp::Sub, 1),
            M::Mulsd => (FpOp::Mul, 1),
            M::Divsd => (FpOp::Div, 1),
            M::Addpd => (FpOp::Add, 2),
            M::Subpd => (FpOp::Sub, 2),
            M::Mulpd => (FpOp::Mul, 2),
            M::Divpd => (FpOp::Div, 2),
            _ => return false,
        };
        if i.op0_kind() != OpKind::Register || !i.op0_register().is_xmm() {
            return false;
        }
        let d = i.op0_register();
        // Every operand before anything is stored (the source may be the destination).
        let (slo, shi) = self.src_halves(insn, host, true, lanes == 2);
        let b = [slo.expect("asked for"), shi.unwrap_or(slo.expect("asked for"))];
        let a = [self.xmm_lo(d), if lanes == 2 { self.xmm_hi(d) } else { b[1] }];
        let mx = self.b.ins().uload32(MF, self.st, MXCSR);
        let mx = self.b.ins().band_imm_s(mx, FP_FAST_MASK as i64);
        let mut ok = self.b.ins().icmp_imm_s(IntCC::Equal, mx, FP_FAST_WANT as i64);
        let mut r = Vec::new();
        for l in 0..lanes {
            let fa = self.b.ins().bitcast(F64, MemFlagsData::new(), a[l]);
            let fb = self.b.ins().bitcast(F64, MemFlagsData::new(), b[l]);
            let fr = match op {
                FpOp::Add => self.b.ins().fadd(fa, fb),
                FpOp::Sub => self.b.ins().fsub(fa, fb),
                FpOp::Mul => self.b.ins().fmul(fa, fb),
                FpOp::Div => self.b.ins().fdiv(fa, fb),
            };
            let v = self.b.ins().bitcast(I64, MemFlagsData::new(), fr);
            let lane_ok = self.fp_fast_ok(op, a[l], b[l], v);
            ok = self.b.ins().band(ok, lane_ok);
            r.push(v);
        }
        let fast = self.b.create_block();
        let slow = self.b.create_block();
        let join = self.b.create_block();
        self.b.set_cold_block(slow);
        self.b.ins().brif(ok, fast, &[], slow, &[]);
        self.b.seal_block(fast);
        self.b.seal_block(slow);
        self.b.switch_to_block(fast);
        self.set_xmm_lo(d, r[0]);
        if lanes == 2 {
            self.set_xmm_hi(d, r[1]);
        }
        self.b.ins().jump(join, &[]);
        self.b.switch_to_block(slow);
        self.call_sse_helper(insn, host);
        self.b.ins().jump(join, &[]);
        self.b.seal_block(join);
        self.b.switch_to_block(join);
        true
    }

    /// For one lane of [`Self::emit_fp_inline`] (operands `a`, `b` and the round-to-nearest
    /// result `r`, as i64 bits): an i8 that is 1 when the instruction raises no MXCSR flag but
    /// PE, so that `r` is the interpreter's result (the guard has RC = nearest) whatever DAZ and
    /// FTZ say, as no denormal goes in or comes out. That holds when both operands are zero or
    /// normal (no DE; no NaN or infinity, so no IE), a divisor is normal (no ZE), and the result
    /// is finite (no OE) and either normal with a biased exponent of at least 2 (so it is not
    /// tiny, before or after rounding: no UE) or an exact zero: for ADD/SUB every zero result is
    /// exact (a sum of multiples of 2^-1074 that small is representable), for MUL/DIV a zero is
    /// exact exactly when an operand is zero (otherwise it underflowed).
    fn fp_fast_ok(&mut self, op: FpOp, a: Value, b: Value, r: Value) -> Value {
        // (biased exponent - lo) < n, unsigned: lo <= exponent < lo + n.
        let exp_in = |s: &mut Self, x: Value, lo: i64, n: i64| {
            let e = s.b.ins().ushr_imm_s(x, 52);
            let e = s.b.ins().band_imm_s(e, 0x7ff);
            let e = s.b.ins().iadd_imm_s(e, -lo);
            s.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, e, n)
        };
        let is_zero = |s: &mut Self, x: Value| {
            let m = s.b.ins().ishl_imm_s(x, 1);
            s.b.ins().icmp_imm_s(IntCC::Equal, m, 0)
        };
        let (az, bz) = (is_zero(self, a), is_zero(self, b));
        let an = exp_in(self, a, 1, 0x7fe);
        let bn = exp_in(self, b, 1, 0x7fe);
        let a_ok = self.b.ins().bor(an, az);
        let b_ok = if op == FpOp::Div { bn } else { self.b.ins().bor(bn, bz) };
        let rn = exp_in(self, r, 2, 0x7fd);
        let rz = is_zero(self, r);
        let zero_ok = match op {
            FpOp::Add | FpOp::Sub => rz,
            FpOp::Mul => {
                let z = self.b.ins().bor(az, bz);
                self.b.ins().band(rz, z)
            }
            FpOp::Div => self.b.ins().band(rz, az),
        };
        let r_ok = self.b.ins().bor(rn, zero_ok);
        let ok = self.b.ins().band(a_ok, b_ok);
        self.b.ins().band(ok, r_ok)
    }

    /// A form computed by [`sse_helper`] (the FP arithmetic of [`Self::emit_fp_inline`] inline
    /// when it can).
    fn emit_sse_helper(&mut self, insn: &Insn, host: Value) {
        let i = &insn.i;
        if i.mnemonic() == M::Pmovmskb
            && i.op0_kind() == OpKind::Register
            && cpu::regs::gpr(i.op0_register()).is_some()
        {
            return self.emit_pmovmskb(insn);
        }
        if !self.emit_fp_inline(insn, host) && !self.emit_int_vec(insn, host, false) {
            self.call_sse_helper(insn, host);
        }
    }

    /// Calls [`sse_helper`] for `insn`.
    fn call_sse_helper(&mut self, insn: &Insn, host: Value) {
        let i = &insn.i;
        let m = i.mnemonic();
        let gpr_dst = cpu::regs::gpr(i.op0_register()).is_some() && i.op0_kind() == OpKind::Register;
        let mut code = m as u32;
        if !gpr_dst {
            code |= (cpu::exec::sse::xmm_index(i.op0_register()) as u32) << C_DST;
        }
        code |= (cpu::exec::sse::imm8(insn) as u32) << C_IMM;
        let zero = self.b.ins().iconst(I64, 0);
        let (mem, g, size) = match i.op1_kind() {
            OpKind::Memory => {
                code |= K_MEM << C_KIND;
                (host, zero, self.b.ins().iconst(I64, i.memory_size().size() as i64))
            }
            OpKind::Register if i.op1_register().is_xmm() => {
                code |= K_XMM << C_KIND | (cpu::exec::sse::xmm_index(i.op1_register()) as u32) << C_SRC;
                (zero, zero, zero)
            }
            OpKind::Register => {
                let g = Self::gpr_op(insn, 1);
                if g.size == 8 {
                    code |= C_WIDE;
                }
                code |= K_GPR << C_KIND;
                let v = self.read(g);
                (zero, v, zero)
            }
            _ => {
                code |= K_IMM << C_KIND;
                (zero, zero, zero)
            }
        };
        if matches!(m, M::Cvtsi2ss | M::Cvtsi2sd)
            && i.op1_kind() == OpKind::Memory
            && i.memory_size().size() == 8
        {
            code |= C_WIDE;
        }
        if gpr_dst && i.op0_register().size() == 8 {
            code |= C_WIDE;
        }
        let f = self.b.ins().load(I64, MF, self.out, crate::helper_offset(crate::HELPER_SSE));
        let c = self.b.ins().iconst(I32, code as i64);
        let call = self.b.ins().call_indirect(self.helper_sig, f, &[self.st, mem, g, size, c]);
        let r = self.b.inst_results(call)[0];
        if gpr_dst {
            let g = Self::gpr_op(insn, 0);
            let r = if g.size == 4 { self.trunc(r, 4) } else { r };
            self.write(g, r);
        } else if matches!(m, M::Comiss | M::Ucomiss | M::Comisd | M::Ucomisd) {
            // `sse_fp::comis`: ZF, PF, CF from the compare, OF, SF, AF cleared; every arithmetic
            // flag is written, so pending ones are dropped.
            self.drop_pending();
            let z = self.bit_to(r, 0, flags::ZF.trailing_zeros());
            let p = self.bit_to(r, 1, flags::PF.trailing_zeros());
            let c = self.bit_to(r, 2, flags::CF.trailing_zeros());
            let f = self.b.ins().bor(z, p);
            let f = self.b.ins().bor(f, c);
            self.set_flags(f, flags::ARITH);
        }
    }
}
