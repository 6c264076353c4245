//! AVX, AVX2, FMA and F16C: the VEX-encoded vector instructions of the x86-64-v3 level (and the
//! VEX.128 forms of AES-NI and PCLMULQDQ).
//!
//! # Layout
//! - this file: the family `lookup`, the VEX prologue, YMM register and 1..32-byte memory operand
//!   access, data movement, broadcasts, 128-bit inserts/extracts, permutes, masks and tests, masked
//!   moves and gathers;
//! - [`super::avx_fp`]: floating point (the VEX forms of the SSE FP instructions, 32 compare
//!   predicates, FMA, F16C), run on the host's units like [`super::sse_fp`].
//!
//! # One source of semantics
//! The VEX form of an SSE instruction is computed by the SSE code itself: integer and logic operations
//! by [`sse_int::compute`] and FP by the host operations of [`super::sse_fp::host`], applied to each
//! 128-bit lane of a 256-bit operand (AVX/AVX2 operate "in lane" unless the SDM says otherwise; the
//! cross-lane instructions have their own code here). The VEX mnemonic is mapped to its legacy one
//! once ([`legacy`]). What is VEX-specific is only operand selection (the non-destructive source
//! VEX.vvvv), the width, and the destination rule: a VEX.128 write zeroes bits MAXVL-1:128 of the
//! destination register, a VEX.256 write bits MAXVL-1:256 (MAXVL is 512 here, the register file being
//! sized for AVX-512, see [`crate::state::VecState`]).
//!
//! # Exceptions (SDM vol. 2 §2.8, "exception classifications" of VEX instructions)
//! - #UD: in real-address and virtual-8086 mode (where C4/C5 with a register ModRM cannot be LES/LDS);
//!   CR4.OSXSAVE = 0; XCR0[2:1] != 11b; a LOCK prefix (a 66/F2/F3/REX prefix before VEX makes iced decode
//!   the bytes as invalid, which is #UD too). CR0.EM and CR4.OSFXSR are not consulted by VEX
//!   instructions.
//! - #NM: CR0.TS = 1 (after the #UD checks).
//! - #GP(0): VMOVAPS/VMOVAPD/VMOVDQA/VMOVNTPS/VMOVNTPD/VMOVNTDQ/VMOVNTDQA with a memory operand not
//!   aligned to its size (16 or 32); every other VEX memory operand may be unaligned.
//! - #XM/#UD: unmasked SIMD floating-point exceptions, as for SSE.
//!
//! # Host dependence
//! Floating point runs on the host ([`super::avx_fp`]); the 32 compare predicates, FMA and F16C need
//! the host's AVX, FMA and F16C. On a host without one of them the instruction stops the machine with
//! "unimplemented instruction ... needs host X" (never a wrong result); the machine never advertises it
//! (every model it runs goes through `CpuModel::executable_here`, which drops what the host lacks).

use super::ops::{ea, mem_seg};
use super::{Handler, Insn, avx_fp, sse_int, sse_str};
use crate::fault::Fault;
use crate::mem::Ctx;
use crate::paging::AccessKind;
use crate::regs::gpr;
use crate::state::{Mode, Seg, cr0, cr4, flags};
use iced_x86::{Code, CpuidFeature, EncodingKind, Mnemonic as M, OpCodeOperandKind as K, OpKind, Register};
use std::sync::OnceLock;

/// A 256-bit value as two 128-bit lanes (low lane first).
pub type Y = [u128; 2];

/// Whether `code` belongs to this family: a VEX encoding whose CPUID features are AVX, AVX2, FMA or
/// F16C (alone or with AES/PCLMULQDQ).
pub fn is_avx_code(code: Code) -> bool {
    use CpuidFeature as F;
    let feats = code.cpuid_features();
    code.op_code().encoding() == EncodingKind::VEX
        && feats.iter().any(|f| matches!(f, F::AVX | F::AVX2 | F::FMA | F::F16C))
        && feats.iter().all(|f| matches!(f, F::AVX | F::AVX2 | F::FMA | F::F16C | F::AES | F::PCLMULQDQ))
}

/// Handlers of this family.
pub fn lookup(code: Code) -> Option<Handler> {
    if !is_avx_code(code) {
        return None;
    }
    let m = code.mnemonic();
    let h: Handler = match m {
        M::Vzeroupper | M::Vzeroall => vzero,
        M::Vmovaps
        | M::Vmovapd
        | M::Vmovups
        | M::Vmovupd
        | M::Vmovdqa
        | M::Vmovdqu
        | M::Vlddqu
        | M::Vmovntps
        | M::Vmovntpd
        | M::Vmovntdq
        | M::Vmovntdqa
        | M::Vmovss
        | M::Vmovsd
        | M::Vmovlps
        | M::Vmovlpd
        | M::Vmovhps
        | M::Vmovhpd
        | M::Vmovhlps
        | M::Vmovlhps
        | M::Vmovd
        | M::Vmovq => mov,
        M::Vbroadcastss
        | M::Vbroadcastsd
        | M::Vbroadcastf128
        | M::Vbroadcasti128
        | M::Vpbroadcastb
        | M::Vpbroadcastw
        | M::Vpbroadcastd
        | M::Vpbroadcastq => broadcast,
        M::Vinsertf128 | M::Vinserti128 => insert128,
        M::Vextractf128 | M::Vextracti128 => extract128,
        M::Vperm2f128 | M::Vperm2i128 => perm2x128,
        M::Vpermq | M::Vpermpd => permq,
        M::Vpermd | M::Vpermps => permd,
        M::Vpermilps | M::Vpermilpd => permil,
        M::Vpblendd => pblendd,
        M::Vpsllvd | M::Vpsllvq | M::Vpsrlvd | M::Vpsrlvq | M::Vpsravd => shiftv,
        M::Vpmovsxbw
        | M::Vpmovsxbd
        | M::Vpmovsxbq
        | M::Vpmovsxwd
        | M::Vpmovsxwq
        | M::Vpmovsxdq
        | M::Vpmovzxbw
        | M::Vpmovzxbd
        | M::Vpmovzxbq
        | M::Vpmovzxwd
        | M::Vpmovzxwq
        | M::Vpmovzxdq => pmovx,
        M::Vmovmskps | M::Vmovmskpd | M::Vpmovmskb => movmsk,
        M::Vptest | M::Vtestps | M::Vtestpd => ptest,
        M::Vpextrb | M::Vpextrw | M::Vpextrd | M::Vpextrq | M::Vextractps => pextr,
        M::Vpinsrb | M::Vpinsrw | M::Vpinsrd | M::Vpinsrq => pinsr,
        M::Vmaskmovps | M::Vmaskmovpd | M::Vpmaskmovd | M::Vpmaskmovq => maskmov,
        M::Vmaskmovdqu => maskmovdqu,
        M::Vldmxcsr => ldmxcsr,
        M::Vstmxcsr => stmxcsr,
        M::Vpcmpestri | M::Vpcmpestri64 | M::Vpcmpestrm | M::Vpcmpestrm64 | M::Vpcmpistri | M::Vpcmpistrm => {
            pcmpstr
        }
        M::Vgatherdps
        | M::Vgatherdpd
        | M::Vgatherqps
        | M::Vgatherqpd
        | M::Vpgatherdd
        | M::Vpgatherdq
        | M::Vpgatherqd
        | M::Vpgatherqq => gather,
        m => {
            if let Some(h) = avx_fp::lookup(m) {
                h
            } else if sse_int::handles(legacy(m)) {
                int_op
            } else {
                return None;
            }
        }
    };
    Some(h)
}

/// The legacy (SSE) mnemonic of a VEX mnemonic: `Vpaddb` -> `Paddb` (itself when there is none).
pub fn legacy(m: M) -> M {
    static TABLE: OnceLock<Vec<M>> = OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let by_name: std::collections::HashMap<String, M> =
            M::values().map(|x| (format!("{x:?}").to_ascii_lowercase(), x)).collect();
        M::values()
            .map(|x| {
                let n = format!("{x:?}").to_ascii_lowercase();
                n.strip_prefix('v').and_then(|l| by_name.get(l).copied()).unwrap_or(x)
            })
            .collect()
    });
    t.get(m as usize).copied().unwrap_or(m)
}

// ------------------------------------------------------------------------------------ prologue

/// The checks of every VEX instruction before it touches state (see the module documentation).
#[inline]
pub fn enter(ctx: &Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if insn.i.has_lock_prefix() || matches!(ctx.st.mode(), Mode::Real | Mode::V86) {
        return Err(Fault::ud());
    }
    if ctx.st.cr4 & cr4::OSXSAVE == 0 || ctx.st.xcr0 & 0b110 != 0b110 {
        return Err(Fault::ud());
    }
    if ctx.st.cr0 & cr0::TS != 0 {
        return Err(Fault::nm());
    }
    Ok(())
}

// ------------------------------------------------------------------------------ vector operands

/// Index (0-15) of an XMM or YMM register.
#[inline]
pub fn vindex(r: Register) -> usize {
    if r.is_ymm() {
        (r as usize).wrapping_sub(Register::YMM0 as usize) & 15
    } else {
        (r as usize).wrapping_sub(Register::XMM0 as usize) & 15
    }
}

/// Reads a register operand: XMM (low lane), YMM (both lanes) or a GPR (zero-extended).
#[inline]
pub fn read_reg(ctx: &Ctx<'_>, r: Register) -> Y {
    if r.is_ymm() {
        let i = vindex(r);
        [ctx.st.fpu.xmm[i], ctx.st.vec.ymm_hi[i]]
    } else if r.is_xmm() {
        [ctx.st.fpu.xmm[vindex(r)], 0]
    } else if let Some(g) = gpr(r) {
        [ctx.st.read_gpr(g) as u128, 0]
    } else {
        [0, 0]
    }
}

/// Writes a register operand with the VEX rule: a YMM destination takes both lanes and bits
/// MAXVL-1:256 are zeroed; an XMM destination takes the low lane and bits MAXVL-1:128 are zeroed; a
/// GPR takes the low bits (32-bit writes zero-extend).
#[inline]
pub fn write_reg(ctx: &mut Ctx<'_>, r: Register, v: Y) {
    if r.is_ymm() {
        let i = vindex(r);
        ctx.st.fpu.xmm[i] = v[0];
        ctx.st.vec.ymm_hi[i] = v[1];
        ctx.st.vec.clear_above_256(i);
    } else if r.is_xmm() {
        let i = vindex(r);
        ctx.st.fpu.xmm[i] = v[0];
        ctx.st.vec.clear_above_128(i);
    } else if let Some(g) = gpr(r) {
        ctx.st.write_gpr(g, v[0] as u64);
    }
}

/// Whether the instruction requires its memory operand aligned to the operand size.
#[inline]
fn needs_align(m: M) -> bool {
    matches!(m, M::Vmovaps | M::Vmovapd | M::Vmovdqa | M::Vmovntps | M::Vmovntpd | M::Vmovntdq | M::Vmovntdqa)
}

/// Linear address of the memory operand (`size` bytes), with the segment and alignment checks.
#[inline]
fn mem_lin(ctx: &mut Ctx<'_>, insn: &Insn, size: u32, kind: AccessKind) -> Result<u64, Fault> {
    let off = ea(ctx, insn);
    let seg = mem_seg(insn);
    let align = size >= 16 && needs_align(insn.i.mnemonic());
    if align && ctx.st.mode() == Mode::Long64 {
        // As for SSE: the alignment #GP(0) comes before the canonical check.
        let base = if matches!(seg, Seg::Fs | Seg::Gs) { ctx.st.sreg(seg).base } else { 0 };
        if base.wrapping_add(off) & (size as u64 - 1) != 0 {
            return Err(Fault::gp0());
        }
    }
    let lin = ctx.seg_lin(seg, off, size, kind)?;
    if align {
        if lin & (size as u64 - 1) != 0 {
            return Err(Fault::gp0());
        }
    } else if size < 16 {
        ctx.check_alignment(lin, size)?;
    }
    Ok(lin)
}

/// Reads `size` <= 32 bytes at linear `lin`.
#[inline]
pub fn read_lin_y(ctx: &mut Ctx<'_>, lin: u64, size: u32) -> Result<Y, Fault> {
    if size <= 8 {
        return Ok([ctx.read_lin(lin, size)? as u128, 0]);
    }
    let mut b = [0u8; 32];
    ctx.read_bytes(lin, &mut b[..size as usize])?;
    let lo = u128::from_le_bytes(b[..16].try_into().unwrap_or([0; 16]));
    let hi = u128::from_le_bytes(b[16..].try_into().unwrap_or([0; 16]));
    Ok([lo, hi])
}

/// Reads the memory operand (its full size, 1..32 bytes), zero-extended.
#[inline]
pub fn read_mem(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<Y, Fault> {
    let size = insn.i.memory_size().size() as u32;
    let lin = mem_lin(ctx, insn, size, AccessKind::Read)?;
    read_lin_y(ctx, lin, size)
}

/// Writes the low `size` <= 32 bytes of `v` to the memory operand, all or nothing.
#[inline]
pub fn write_mem(ctx: &mut Ctx<'_>, insn: &Insn, size: u32, v: Y) -> Result<(), Fault> {
    let lin = mem_lin(ctx, insn, size, AccessKind::Write)?;
    if size <= 8 {
        return ctx.write_lin(lin, size, v[0] as u64);
    }
    let mut b = [0u8; 32];
    b[..16].copy_from_slice(&v[0].to_le_bytes());
    b[16..].copy_from_slice(&v[1].to_le_bytes());
    ctx.write_bytes(lin, &b[..size as usize])
}

/// Reads operand `n`: a register, the memory operand, or an imm8 (in the low lane).
#[inline]
pub fn read_src(ctx: &mut Ctx<'_>, insn: &Insn, n: u32) -> Result<Y, Fault> {
    match insn.i.op_kind(n) {
        OpKind::Register => Ok(read_reg(ctx, insn.i.op_register(n))),
        OpKind::Memory => read_mem(ctx, insn),
        OpKind::Immediate8 => Ok([insn.i.immediate8() as u128, 0]),
        _ => Ok([0, 0]),
    }
}

/// The imm8 of the instruction (0 when it has none; the is4 register byte is not an imm8 here).
#[inline]
pub fn imm8(insn: &Insn) -> u8 {
    super::sse::imm8(insn)
}

/// Whether the destination (operand 0, register or memory) is 256 bits wide.
#[inline]
pub fn wide(insn: &Insn) -> bool {
    let i = &insn.i;
    match i.op0_kind() {
        OpKind::Register => i.op0_register().is_ymm(),
        _ => i.memory_size().size() == 32,
    }
}

/// The operands of a "destination = f(source 1, source 2)" instruction: `(a, b, b_is_128)`. With
/// three vector operands (VEX.vvvv form) they are operands 1 and 2; with two, the destination's old
/// value and operand 1; the shift-by-immediate forms (VEX.vvvv is the destination) shift operand 1
/// by the imm8. `b_is_128` says the second source is one 128-bit value for both lanes (the xmm/m128
/// shift count of a 256-bit shift).
pub fn sources(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(Y, Y, bool), Fault> {
    let op = insn.i.code().op_code();
    let k0 = op.op_kind(0);
    if matches!(k0, K::xmm_vvvv | K::ymm_vvvv) {
        let a = read_src(ctx, insn, 1)?;
        return Ok((a, [imm8(insn) as u128, 0], true));
    }
    let is_vec = |k: K| {
        matches!(
            k,
            K::xmm_reg
                | K::xmm_rm
                | K::xmm_vvvv
                | K::xmm_or_mem
                | K::ymm_reg
                | K::ymm_rm
                | K::ymm_vvvv
                | K::ymm_or_mem
        )
    };
    let nvec = (0..op.op_count()).filter(|&n| is_vec(op.op_kind(n))).count();
    if nvec >= 3 {
        let a = read_src(ctx, insn, 1)?;
        let b = read_src(ctx, insn, 2)?;
        let narrow = wide(insn) && matches!(op.op_kind(2), K::xmm_or_mem | K::xmm_rm | K::xmm_reg);
        Ok((a, b, narrow))
    } else {
        let a = read_reg(ctx, insn.i.op0_register());
        let b = read_src(ctx, insn, 1)?;
        Ok((a, b, false))
    }
}

/// The fourth (is4) register operand of the blend-variable forms, or zero.
#[inline]
fn is4(ctx: &Ctx<'_>, insn: &Insn) -> Y {
    if insn.i.op_count() == 4 && insn.i.op_kind(3) == OpKind::Register {
        read_reg(ctx, insn.i.op3_register())
    } else {
        [0, 0]
    }
}

/// The imm8 the upper lane of a 256-bit instruction uses: the SSE instruction's bits for the second
/// group of elements where the VEX.256 form gives each lane its own bits, else the same imm8.
#[inline]
pub fn upper_imm(m: M, imm: u8) -> u8 {
    match m {
        M::Blendps => imm >> 4,
        M::Blendpd | M::Shufpd => imm >> 2,
        M::Mpsadbw => imm >> 3,
        _ => imm,
    }
}

const LO64: u128 = u64::MAX as u128;
const LO32: u128 = u32::MAX as u128;

// ------------------------------------------------------------------------------ integer and logic

/// Every VEX form of an instruction [`sse_int::compute`] knows, lane by lane.
fn int_op(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let m = legacy(insn.i.mnemonic());
    let (a, b, narrow) = sources(ctx, insn)?;
    let x = is4(ctx, insn);
    let mut imm = imm8(insn);
    if m == M::Insertps && insn.i.op2_kind() == OpKind::Memory {
        imm &= 0x3f;
    }
    let lanes = if wide(insn) { 2 } else { 1 };
    let mut r = [0u128; 2];
    for l in 0..lanes {
        let bl = if narrow { b[0] } else { b[l] };
        let im = if l == 1 { upper_imm(m, imm) } else { imm };
        let Some(v) = sse_int::compute(m, a[l], bl, im, x[l], 16) else {
            return Err(Fault::ud());
        };
        r[l] = v;
    }
    write_reg(ctx, insn.i.op0_register(), r);
    Ok(())
}

/// VPMOVSX*/VPMOVZX*: the 256-bit forms widen twice as many elements as the 128-bit SSE form; each
/// lane is the SSE computation on its half of the source elements.
fn pmovx(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let m = legacy(insn.i.mnemonic());
    let b = read_src(ctx, insn, 1)?[0];
    let (from, to) = match m {
        M::Pmovsxbw | M::Pmovzxbw => (8, 16),
        M::Pmovsxbd | M::Pmovzxbd => (8, 32),
        M::Pmovsxbq | M::Pmovzxbq => (8, 64),
        M::Pmovsxwd | M::Pmovzxwd => (16, 32),
        M::Pmovsxwq | M::Pmovzxwq => (16, 64),
        _ => (32, 64),
    };
    let lo = sse_int::compute(m, 0, b, 0, 0, 16).unwrap_or(0);
    let hi =
        if wide(insn) { sse_int::compute(m, 0, b >> (128 * from / to), 0, 0, 16).unwrap_or(0) } else { 0 };
    write_reg(ctx, insn.i.op0_register(), [lo, hi]);
    Ok(())
}

/// Lane `i` of `bits` bits of a 256-bit value.
#[inline]
fn get(v: Y, i: u32, bits: u32) -> u64 {
    let bit = i * bits;
    let w = v[(bit / 128) as usize & 1] >> (bit % 128);
    (w as u64) & sse_int::lane_mask(bits)
}

/// Sets lane `i` of `bits` bits of a 256-bit value (the lane must be zero).
#[inline]
fn put(v: &mut Y, i: u32, bits: u32, x: u64) {
    let bit = i * bits;
    v[(bit / 128) as usize & 1] |= ((x & sse_int::lane_mask(bits)) as u128) << (bit % 128);
}

/// VPSLLVD/Q, VPSRLVD/Q, VPSRAVD: each element shifted by the count in the same element of the second
/// source; counts past the width give 0 (or the sign for VPSRAVD).
fn shiftv(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let m = insn.i.mnemonic();
    let (a, b, _) = sources(ctx, insn)?;
    let bits = if matches!(m, M::Vpsllvq | M::Vpsrlvq) { 64 } else { 32 };
    let n = if wide(insn) { 256 / bits } else { 128 / bits };
    let mut r = [0u128; 2];
    for i in 0..n {
        let (x, c) = (get(a, i, bits), get(b, i, bits));
        let v = match m {
            M::Vpsllvd | M::Vpsllvq => {
                if c >= bits as u64 {
                    0
                } else {
                    x << c
                }
            }
            M::Vpsrlvd | M::Vpsrlvq => {
                if c >= bits as u64 {
                    0
                } else {
                    x >> c
                }
            }
            _ => ((x as u32 as i32) >> c.min(31)) as u32 as u64,
        };
        put(&mut r, i, bits, v);
    }
    write_reg(ctx, insn.i.op0_register(), r);
    Ok(())
}

/// VPBLENDD: dword `i` from the second source when imm8 bit `i` is set.
fn pblendd(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let (a, b, _) = sources(ctx, insn)?;
    let imm = imm8(insn);
    let n = if wide(insn) { 8 } else { 4 };
    let mut r = [0u128; 2];
    for i in 0..n {
        put(&mut r, i, 32, if (imm >> i) & 1 != 0 { get(b, i, 32) } else { get(a, i, 32) });
    }
    write_reg(ctx, insn.i.op0_register(), r);
    Ok(())
}

// ------------------------------------------------------------------------------ data movement

/// VZEROUPPER / VZEROALL: bits MAXVL-1:128 (or all bits) of registers 0-15 (0-7 outside 64-bit mode).
fn vzero(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let n = if ctx.st.mode() == Mode::Long64 { 16 } else { 8 };
    let all = insn.i.mnemonic() == M::Vzeroall;
    for i in 0..n {
        ctx.st.vec.clear_above_128(i);
        if all {
            ctx.st.fpu.xmm[i] = 0;
        }
    }
    Ok(())
}

/// All register/memory moves: VMOVAPS ... VMOVQ.
fn mov(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let i = &insn.i;
    let m = i.mnemonic();
    if i.op0_kind() == OpKind::Memory {
        let size = i.memory_size().size() as u32;
        let v = read_reg(ctx, i.op_register(i.op_count() - 1));
        let v = if matches!(m, M::Vmovhps | M::Vmovhpd) { [v[0] >> 64, 0] } else { v };
        return write_mem(ctx, insn, size, v);
    }
    let d = i.op0_register();
    let three = i.op_count() == 3;
    let v = if three {
        let a = read_src(ctx, insn, 1)?[0];
        let b = read_src(ctx, insn, 2)?[0];
        let r = match m {
            M::Vmovss => (a & !LO32) | (b & LO32),
            M::Vmovsd | M::Vmovlps | M::Vmovlpd => (a & !LO64) | (b & LO64),
            M::Vmovhps | M::Vmovhpd | M::Vmovlhps => (a & LO64) | (b << 64),
            M::Vmovhlps => (a & !LO64) | (b >> 64),
            _ => return Err(Fault::ud()),
        };
        [r, 0]
    } else {
        let s = read_src(ctx, insn, 1)?;
        match m {
            M::Vmovd | M::Vmovss => [s[0] & LO32, 0],
            M::Vmovq | M::Vmovsd => [s[0] & LO64, 0],
            _ => s,
        }
    };
    write_reg(ctx, d, v);
    Ok(())
}

/// VBROADCASTSS/SD/F128/I128, VPBROADCASTB/W/D/Q: the low element of the source in every element.
fn broadcast(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let s = read_src(ctx, insn, 1)?[0];
    let bits = match insn.i.mnemonic() {
        M::Vpbroadcastb => 8,
        M::Vpbroadcastw => 16,
        M::Vbroadcastss | M::Vpbroadcastd => 32,
        M::Vbroadcastsd | M::Vpbroadcastq => 64,
        _ => 128,
    };
    let lane = if bits == 128 {
        s
    } else {
        let e = s & ((1u128 << bits) - 1);
        (0..128 / bits).fold(0u128, |acc, k| acc | (e << (k * bits)))
    };
    let v = if wide(insn) { [lane, lane] } else { [lane, 0] };
    write_reg(ctx, insn.i.op0_register(), v);
    Ok(())
}

/// VINSERTF128/VINSERTI128: the first source with lane imm8[0] replaced by the second source.
fn insert128(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let mut a = read_src(ctx, insn, 1)?;
    let b = read_src(ctx, insn, 2)?[0];
    a[(imm8(insn) & 1) as usize] = b;
    write_reg(ctx, insn.i.op0_register(), a);
    Ok(())
}

/// VEXTRACTF128/VEXTRACTI128: lane imm8[0] of the source to an XMM register or m128.
fn extract128(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let s = read_reg(ctx, insn.i.op1_register());
    let v = [s[(imm8(insn) & 1) as usize], 0];
    match insn.i.op0_kind() {
        OpKind::Register => {
            write_reg(ctx, insn.i.op0_register(), v);
            Ok(())
        }
        _ => write_mem(ctx, insn, 16, v),
    }
}

/// VPERM2F128/VPERM2I128: each result lane is one of the four source lanes, or zero (imm8 bit 3/7).
fn perm2x128(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let a = read_src(ctx, insn, 1)?;
    let b = read_src(ctx, insn, 2)?;
    let imm = imm8(insn);
    let pick =
        |sel: u8| -> u128 { if sel & 8 != 0 { 0 } else { [a[0], a[1], b[0], b[1]][(sel & 3) as usize] } };
    let r = [pick(imm & 0xf), pick(imm >> 4)];
    write_reg(ctx, insn.i.op0_register(), r);
    Ok(())
}

/// VPERMQ/VPERMPD: qword `i` = source qword imm8[2i+1:2i].
fn permq(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let s = read_src(ctx, insn, 1)?;
    let imm = imm8(insn) as u32;
    let mut r = [0u128; 2];
    for i in 0..4 {
        put(&mut r, i, 64, get(s, (imm >> (2 * i)) & 3, 64));
    }
    write_reg(ctx, insn.i.op0_register(), r);
    Ok(())
}

/// VPERMD/VPERMPS: dword `i` = second source dword (first source dword `i` & 7).
fn permd(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let idx = read_src(ctx, insn, 1)?;
    let s = read_src(ctx, insn, 2)?;
    let mut r = [0u128; 2];
    for i in 0..8 {
        put(&mut r, i, 32, get(s, (get(idx, i, 32) & 7) as u32, 32));
    }
    write_reg(ctx, insn.i.op0_register(), r);
    Ok(())
}

/// VPERMILPS/VPERMILPD: in-lane element selection by an imm8 or by control elements.
fn permil(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let dbl = insn.i.mnemonic() == M::Vpermilpd;
    let by_imm = insn.i.op_kind(insn.i.op_count() - 1) == OpKind::Immediate8;
    let (s, ctl) = if by_imm {
        (read_src(ctx, insn, 1)?, [0, 0])
    } else {
        (read_src(ctx, insn, 1)?, read_src(ctx, insn, 2)?)
    };
    let imm = imm8(insn) as u64;
    let (bits, per_lane) = if dbl { (64, 2) } else { (32, 4) };
    let n = if wide(insn) { 2 * per_lane } else { per_lane };
    let mut r = [0u128; 2];
    for i in 0..n {
        let sel = if dbl {
            if by_imm { (imm >> i) & 1 } else { (get(ctl, i, 64) >> 1) & 1 }
        } else if by_imm {
            (imm >> (2 * (i % 4))) & 3
        } else {
            get(ctl, i, 32) & 3
        };
        let base = i - i % per_lane;
        put(&mut r, i, bits, get(s, base + sel as u32, bits));
    }
    write_reg(ctx, insn.i.op0_register(), r);
    Ok(())
}

// ------------------------------------------------------------------------------ masks and tests

/// VMOVMSKPS/VMOVMSKPD/VPMOVMSKB: sign bits into a GPR (zero-extended).
fn movmsk(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let src = insn.i.op1_register();
    let v = read_reg(ctx, src);
    let w = if src.is_ymm() { 256 } else { 128 };
    let bits = match insn.i.mnemonic() {
        M::Vmovmskps => 32,
        M::Vmovmskpd => 64,
        _ => 8,
    };
    let mut r = 0u64;
    for k in 0..w / bits {
        r |= (get(v, k, bits) >> (bits - 1)) << k;
    }
    write_reg(ctx, insn.i.op0_register(), [r as u128, 0]);
    Ok(())
}

/// VPTEST (all bits), VTESTPS/VTESTPD (sign bits of the elements): ZF = (a AND b) == 0, CF = (NOT a
/// AND b) == 0; AF, OF, PF, SF cleared.
fn ptest(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let a = read_reg(ctx, insn.i.op0_register());
    let b = read_src(ctx, insn, 1)?;
    let sel: u128 = match insn.i.mnemonic() {
        M::Vtestps => (0..4).fold(0, |acc, k| acc | (1u128 << (32 * k + 31))),
        M::Vtestpd => (1u128 << 63) | (1u128 << 127),
        _ => u128::MAX,
    };
    let and = (a[0] & b[0] & sel) | (a[1] & b[1] & sel);
    let andn = (!a[0] & b[0] & sel) | (!a[1] & b[1] & sel);
    let mut f = 0;
    if and == 0 {
        f |= flags::ZF;
    }
    if andn == 0 {
        f |= flags::CF;
    }
    ctx.set_arith_flags(f);
    Ok(())
}

/// VPEXTRB/W/D/Q, VEXTRACTPS: an element of an XMM register to a GPR (zero-extended) or memory.
fn pextr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let v = read_reg(ctx, insn.i.op1_register())[0];
    let bits = match insn.i.mnemonic() {
        M::Vpextrb => 8,
        M::Vpextrw => 16,
        M::Vpextrd | M::Vextractps => 32,
        _ => 64,
    };
    let k = imm8(insn) as u32 % (128 / bits);
    let x = get([v, 0], k, bits);
    match insn.i.op0_kind() {
        OpKind::Register => {
            write_reg(ctx, insn.i.op0_register(), [x as u128, 0]);
            Ok(())
        }
        _ => write_mem(ctx, insn, bits / 8, [x as u128, 0]),
    }
}

/// VPINSRB/W/D/Q: the first source with one element replaced from a GPR or memory.
fn pinsr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let a = read_src(ctx, insn, 1)?[0];
    let x = read_src(ctx, insn, 2)?[0];
    let bits = match insn.i.mnemonic() {
        M::Vpinsrb => 8,
        M::Vpinsrw => 16,
        M::Vpinsrd => 32,
        _ => 64,
    };
    let sh = (imm8(insn) as u32 % (128 / bits)) * bits;
    let mask = (sse_int::lane_mask(bits) as u128) << sh;
    write_reg(ctx, insn.i.op0_register(), [(a & !mask) | ((x << sh) & mask), 0]);
    Ok(())
}

/// VLDMXCSR m32.
fn ldmxcsr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let v = read_mem(ctx, insn)?[0] as u32;
    super::sse::load_mxcsr(ctx, v)
}

/// VSTMXCSR m32.
fn stmxcsr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let v = ctx.st.fpu.mxcsr;
    write_mem(ctx, insn, 4, [v as u128, 0])
}

/// VPCMPESTRI/VPCMPESTRM/VPCMPISTRI/VPCMPISTRM: the SSE4.2 computation; VPCMPxSTRM's mask goes to
/// XMM0 with bits MAXVL-1:128 zeroed.
fn pcmpstr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let a = read_reg(ctx, insn.i.op0_register())[0];
    let b = read_src(ctx, insn, 1)?[0];
    let to_xmm0 = sse_str::run(ctx, legacy(insn.i.mnemonic()), a, b, imm8(insn));
    if to_xmm0 {
        ctx.st.vec.clear_above_128(0);
    }
    Ok(())
}

/// VMASKMOVDQU: the SSE byte-masked store to DS:rDI.
fn maskmovdqu(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    super::sse::maskmov_body(ctx, insn)
}

// ------------------------------------------------------------------------------ masked moves, gathers

/// VMASKMOVPS/PD, VPMASKMOVD/Q: elements whose mask (VEX.vvvv register) sign bit is set are loaded
/// (others zero) or stored (others untouched). Only the selected elements are accessed, so a masked-out
/// element never faults. A load reads the selected elements in order (a fault reports the first
/// unmapped byte of the first faulting element). A store checks the selected elements as one range
/// before storing any: the segment checks element by element, then the page of the range's first
/// byte, then the page of its last byte, so CR2 is the first selected byte when that page faults, else
/// the last selected byte. Measured on this project's Intel Xeon host (2026-12-06; `ferrite difftest --families vex --seed 173809702`:
/// store case 47621, whose only selected element crosses into an unmapped page, reports the element's
/// last byte; load cases 5399, 76590 and 96361 report the first unmapped byte of the first faulting
/// element). The Intel behaviour is not yet measured.
fn maskmov(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let i = &insn.i;
    let bits: u32 = if matches!(i.mnemonic(), M::Vmaskmovpd | M::Vpmaskmovq) { 64 } else { 32 };
    let esize = bits / 8;
    let store = i.op0_kind() == OpKind::Memory;
    let mask = read_reg(ctx, i.op1_register());
    let n = if wide(insn) { 256 / bits } else { 128 / bits };
    let off = ea(ctx, insn);
    let seg = mem_seg(insn);
    let asize_mask = crate::regs::size_mask(insn.asize as u32);
    let kind = if store { AccessKind::Write } else { AccessKind::Read };
    let mut lins = [0u64; 8];
    let (mut first, mut last) = (None, None);
    for k in 0..n {
        if get(mask, k, bits) >> (bits - 1) != 0 {
            let o = off.wrapping_add((k * esize) as u64) & asize_mask;
            lins[k as usize] = ctx.seg_lin(seg, o, esize, kind)?;
            first = first.or(Some(k));
            last = Some(k);
        }
    }
    let (Some(first), Some(last)) = (first, last) else {
        if !store {
            write_reg(ctx, i.op0_register(), [0, 0]);
        }
        return Ok(());
    };
    if store {
        let lo = lins[first as usize];
        let hi = lins[last as usize].wrapping_add(esize as u64 - 1);
        let hi = if ctx.st.mode() == Mode::Long64 { hi } else { hi & 0xffff_ffff };
        ctx.probe_write(lo, 1)?;
        ctx.probe_write(hi, 1)?;
        let v = read_reg(ctx, i.op2_register());
        for k in first..=last {
            if get(mask, k, bits) >> (bits - 1) != 0 {
                ctx.write_lin(lins[k as usize], esize, get(v, k, bits))?;
            }
        }
        Ok(())
    } else {
        let mut r = [0u128; 2];
        for k in first..=last {
            if get(mask, k, bits) >> (bits - 1) != 0 {
                put(&mut r, k, bits, ctx.read_lin(lins[k as usize], esize)?);
            }
        }
        write_reg(ctx, i.op0_register(), r);
        Ok(())
    }
}

/// VGATHER*/VPGATHER*: for each element whose mask sign bit is set, in order, load from base +
/// index element * scale + displacement, write the destination element and clear its mask element.
/// A fault leaves the completed elements done (their mask elements clear) and is delivered; on
/// completion the whole mask register is zero. #UD when any two of destination, index and mask are
/// the same register.
fn gather(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let i = &insn.i;
    let (d, mreg, xreg) = (i.op0_register(), i.op2_register(), i.memory_index());
    let (di, mi, xi) = (vindex(d), vindex(mreg), vindex(xreg));
    if di == mi || di == xi || mi == xi {
        return Err(Fault::ud());
    }
    let m = i.mnemonic();
    let ebits: u32 =
        if matches!(m, M::Vgatherdpd | M::Vgatherqpd | M::Vpgatherdq | M::Vpgatherqq) { 64 } else { 32 };
    let ibits: u32 =
        if matches!(m, M::Vgatherqps | M::Vgatherqpd | M::Vpgatherqd | M::Vpgatherqq) { 64 } else { 32 };
    // Elements: the destination's width over the element size, limited by the index register's width.
    let dw = if d.is_ymm() { 256 } else { 128 };
    let xw = if xreg.is_ymm() { 256 } else { 128 };
    let n = (dw / ebits).min(xw / ibits);
    let index = read_reg(ctx, xreg);
    let mut dst = read_reg(ctx, d);
    let mut mask = read_reg(ctx, mreg);
    let mut base = i.memory_displacement64();
    if i.memory_base() != Register::None
        && let Some(g) = gpr(i.memory_base())
    {
        base = base.wrapping_add(ctx.st.read_gpr(g));
    }
    let scale = i.memory_index_scale() as u64;
    let amask = crate::regs::size_mask(insn.asize as u32);
    let seg = mem_seg(insn);
    let esize = ebits / 8;
    let mut fault = None;
    let mut gathered = false;
    for k in 0..n {
        if get(mask, k, ebits) >> (ebits - 1) == 0 {
            continue;
        }
        let x = get(index, k, ibits);
        let x = if ibits == 32 { x as u32 as i32 as i64 as u64 } else { x };
        let off = base.wrapping_add(x.wrapping_mul(scale)) & amask;
        let v = ctx.seg_lin(seg, off, esize, AccessKind::Read).and_then(|lin| ctx.read_lin(lin, esize));
        match v {
            Ok(v) => {
                let sh = (k * ebits) % 128;
                let l = ((k * ebits) / 128) as usize;
                let em = (sse_int::lane_mask(ebits) as u128) << sh;
                dst[l] = (dst[l] & !em) | ((v as u128) << sh);
                mask[l] &= !em;
                gathered = true;
            }
            Err(f) => {
                fault = Some(f);
                break;
            }
        }
    }
    // Elements past `n` (the upper half of a VEX.128 destination or mask, or of the QD/QPS forms) are
    // zeroed, fault or not.
    let keep = |v: Y| -> Y {
        let bits = n * ebits;
        if bits >= 256 {
            v
        } else if bits >= 128 {
            [v[0], v[1] & ((1u128 << (bits - 128)).wrapping_sub(1))]
        } else {
            [v[0] & ((1u128 << bits) - 1), 0]
        }
    };
    match fault {
        None => {
            write_reg(ctx, d, keep(dst));
            write_reg(ctx, mreg, [0, 0]);
            Ok(())
        }
        Some(f) => {
            // On a fault (measured on an Intel Xeon host, and as the SDM's pseudo-code reads: the mask is first made
            // all-ones or all-zeros per element from its sign bit): each mask element still to be
            // gathered is all-ones, every other element zero, the bits past the `n` elements zero. The
            // destination is written (with the VEX zeroing above its width, but its elements past `n`
            // kept) only if an element was gathered; otherwise it is left whole. (For VGATHERQPS and
            // VPGATHERQD with a YMM index, the host leaves mask bits past the 4 elements in a state of its
            // own on a fault; the differential tester does not generate faults for those two forms.)
            let mut norm = [0u128; 2];
            for k in 0..n {
                if get(mask, k, ebits) >> (ebits - 1) != 0 {
                    let (l, sh) = (((k * ebits) / 128) as usize, (k * ebits) % 128);
                    norm[l] |= (sse_int::lane_mask(ebits) as u128) << sh;
                }
            }
            if gathered && xreg.is_ymm() && !d.is_ymm() {
                // VGATHERQPS/VPGATHERQD with a YMM index (VEX.L=1, XMM destination): the partial result
                // is written at the vector length, so bits 255:128 keep their value (measured).
                ctx.st.fpu.xmm[di] = dst[0];
            } else if gathered {
                write_reg(ctx, d, dst);
            }
            write_reg(ctx, mreg, norm);
            Err(f)
        }
    }
}

#[cfg(test)]
mod tests;
