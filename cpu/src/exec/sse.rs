//! MMX, SSE, SSE2, SSE3, SSSE3, SSE4.1, SSE4.2, AES-NI and PCLMULQDQ (legacy encodings only; VEX and
//! EVEX are out of scope).
//!
//! # Layout
//! - this file: the family `lookup`, the common prologue (#UD/#NM/#MF checks and the MMX state
//!   transition), vector operand access (XMM/MM registers, 1..16-byte memory operands with the
//!   16-byte alignment rule), data movement, MXCSR load/store, extracts/inserts, masks and PTEST;
//! - [`super::sse_int`]: integer SIMD (shared by the 64-bit MMX and 128-bit XMM forms), shuffles,
//!   blends, packs, AES rounds and carry-less multiply, all plain Rust;
//! - [`super::sse_fp`]: floating-point SIMD, computed by the host's SSE unit (see below);
//! - [`super::sse_str`]: PCMPESTRI/PCMPESTRM/PCMPISTRI/PCMPISTRM, plain Rust;
//! - [`super::mmx`]: MM register access and the x87 state effects of MMX instructions.
//!
//! # Floating point on the host
//! Every instruction that can raise a SIMD floating-point exception (arithmetic, compares, COMIS,
//! conversions, rounding, dot products, RCP/RSQRT approximations) is executed by the *host's* own SSE
//! unit through a tiny internal interface (`sse_fp::host`): one `asm!` block per host instruction
//! saves the host MXCSR, loads the guest's rounding control, DAZ and FTZ with **all exceptions masked
//! and all flags clear**, runs the instruction on register copies of the guest operands, reads MXCSR
//! back and restores the host's. The raised flags and the masked result are then checked against the
//! guest's masks by `sse_fp::apply_flags`: with no unmasked exception the result is written and the
//! flags ORed into the guest MXCSR; otherwise the destination is left unchanged and #XM (CR4.OSXMMEXCPT
//! = 1) or #UD (= 0) is raised, with flags as SDM vol. 1 §11.5.3 describes: an unmasked
//! pre-computation exception (IE, DE, ZE) reports only the pre-computation flags; otherwise an unmasked
//! post-computation exception reports every flag. Unmasked underflow also fires on a tiny *exact*
//! result (the masked run cannot report that), which is detected by re-running with FTZ clear and
//! looking for denormal results in the lanes the instruction writes.
//! Why: the guest and the oracle are the same silicon family this emulator is checked against, so
//! results, NaN propagation (first-operand QNaN, SNaN quieting, the default NaN), denormal handling,
//! integer indefinite and even the RCPPS/RSQRTPS approximation tables are bit-exact by construction.
//! The dependence on the host is confined to `sse_fp::host`, whose functions take and return plain
//! `u128`/`u64` values and an MXCSR image, so a soft-float backend could replace it.
//! Known approximation: for an unmasked overflow or underflow the reported flags are those of the
//! masked run (OE/UE and PE). The host sets PE only when the result rounded with an unbounded exponent
//! is inexact (a tiny result that is exact at full precision but not once denormalised reports UE
//! alone), which the masked run cannot tell apart.
//!
//! # Coverage
//! Every legacy-encoded iced `Code` whose CPUID features include MMX, SSE, SSE2, SSE3, SSSE3, SSE4.1,
//! SSE4.2, AES or PCLMULQDQ has a handler (the test `every_simd_code_has_a_handler` enumerates them
//! from iced's tables: 428 codes). Handled here: all of them except those owned by other families:
//! - `EMMS` and `FISTTP` (x87 family, `exec/x87.rs`),
//! - `LFENCE`/`MFENCE`/`SFENCE` (system: no-ops; their alternate encodings are handled here),
//!   `PREFETCHh` (misc) and `CRC32` (bits family, with its own native comparison).
//!
//! The lookup places this family after the others, so those keep their handlers.
//!
//! # Exceptions
//! - #UD: LOCK prefix; CR0.EM = 1; CR4.OSFXSR = 0 for every instruction that names an XMM register or
//!   MXCSR (pure MMX instructions and SSE instructions on MM registers only check CR0.EM);
//! - #NM: CR0.TS = 1; #MF: a pending x87 exception (FSW.ES) for instructions on MM registers;
//! - #GP(0): a 16-byte memory operand not 16-byte aligned, except for MOVUPS/MOVUPD/MOVDQU/LDDQU and
//!   the SSE4.2 string compares; LDMXCSR with reserved bits set;
//! - #XM / #UD: unmasked SIMD floating-point exceptions.

use super::mmx;
use super::ops::{ea, mem_seg};
use super::{Handler, Insn, sse_fp, sse_int, sse_str};
use crate::fault::{Fault, vec};
use crate::mem::Ctx;
use crate::paging::AccessKind;
use crate::regs::gpr;
use crate::state::{Mode, Quirks, Seg, cr0, cr4, flags};
use iced_x86::{Code, CpuidFeature, EncodingKind, Mnemonic as M, OpKind, Register};

/// Whether `code` is a legacy-encoded MMX/SSE*/AES/PCLMUL instruction (this family's domain).
pub fn is_simd_code(code: Code) -> bool {
    code.op_code().encoding() == EncodingKind::Legacy
        && code.cpuid_features().iter().any(|f| {
            matches!(
                f,
                CpuidFeature::MMX
                    | CpuidFeature::SSE
                    | CpuidFeature::SSE2
                    | CpuidFeature::SSE3
                    | CpuidFeature::SSSE3
                    | CpuidFeature::SSE4_1
                    | CpuidFeature::SSE4_2
                    | CpuidFeature::AES
                    | CpuidFeature::PCLMULQDQ
            )
        })
}

/// Handlers of this family.
pub fn lookup(code: Code) -> Option<Handler> {
    if !is_simd_code(code) {
        return None;
    }
    let mm = names_mm(code);
    let h: Handler = match code.mnemonic() {
        // Owned by other families.
        M::Emms
        | M::Fisttp
        | M::Lfence
        | M::Mfence
        | M::Sfence
        | M::Prefetchnta
        | M::Prefetcht0
        | M::Prefetcht1
        | M::Prefetcht2
        | M::Crc32 => {
            // The alternate fence encodings (0F AE E9-EF, F1-F7, F9-FF) that the system family does not
            // list behave as the canonical ones: no-ops for a single in-order CPU.
            if matches!(code.mnemonic(), M::Lfence | M::Mfence | M::Sfence)
                && !matches!(code, Code::Lfence | Code::Mfence | Code::Sfence)
            {
                return Some(fence);
            }
            return None;
        }
        M::Movnti => movnti,
        M::Movaps
        | M::Movapd
        | M::Movups
        | M::Movupd
        | M::Movdqa
        | M::Movdqu
        | M::Lddqu
        | M::Movntps
        | M::Movntpd
        | M::Movntdq
        | M::Movntdqa
        | M::Movntq
        | M::Movss
        | M::Movsd
        | M::Movlps
        | M::Movlpd
        | M::Movhps
        | M::Movhpd
        | M::Movhlps
        | M::Movlhps
        | M::Movd
        | M::Movq
        | M::Movq2dq
        | M::Movdq2q => {
            if mm {
                mm_mov_v
            } else {
                mov_v
            }
        }
        M::Movmskps | M::Movmskpd | M::Pmovmskb => {
            if mm {
                mm_movmsk
            } else {
                movmsk
            }
        }
        M::Pextrb | M::Pextrw | M::Pextrd | M::Pextrq | M::Extractps => {
            if mm {
                mm_pextr
            } else {
                pextr
            }
        }
        M::Pinsrb | M::Pinsrw | M::Pinsrd | M::Pinsrq => {
            if mm {
                mm_pinsr
            } else {
                pinsr
            }
        }
        M::Maskmovq | M::Maskmovdqu => {
            if mm {
                mm_maskmov
            } else {
                maskmov
            }
        }
        M::Ldmxcsr => ldmxcsr,
        M::Stmxcsr => stmxcsr,
        M::Ptest => ptest,
        M::Pcmpestri | M::Pcmpestri64 | M::Pcmpestrm | M::Pcmpestrm64 | M::Pcmpistri | M::Pcmpistrm => {
            sse_str::pcmpstr
        }
        m if mm => {
            if sse_fp::op_of(m).is_some() {
                mm_fp_op
            } else if sse_int::handles(m) {
                mm_int_op
            } else {
                return None;
            }
        }
        m => {
            if let Some(h) = sse_fp::lookup(m) {
                h
            } else if sse_int::handles(m) {
                sse_int::int_op
            } else {
                return None;
            }
        }
    };
    Some(h)
}

/// Whether the instruction form names an MM register (and so makes the MMX state transition).
fn names_mm(code: Code) -> bool {
    use iced_x86::OpCodeOperandKind as K;
    code.op_code().op_kinds().iter().any(|k| matches!(k, K::mm_reg | K::mm_rm | K::mm_or_mem))
}

/// Runs an instruction on MM registers: the MMX state transition (TOP = 0, all tags valid) happens
/// once the instruction has its operands, as on the host: a fault of the prologue or of the memory
/// operand (#UD/#NM/#MF, #PF/#GP/#SS/#AC) leaves the x87 state, MM registers included, as it was; an
/// unmasked SIMD floating-point exception (CVTPS2PI and friends: #XM, or #UD when CR4.OSXMMEXCPT = 0)
/// comes after the transition.
#[inline(always)]
fn mmx_form(ctx: &mut Ctx<'_>, insn: &Insn, h: Handler) -> Result<(), Fault> {
    if !reg_files(insn).1 {
        // CVTPI2PS/CVTPI2PD from memory name no MM register: no transition (host).
        return h(ctx, insn);
    }
    enter(ctx, insn)?;
    let (fsw, ftw, regs) = (ctx.st.fpu.fsw, ctx.st.fpu.ftw, ctx.st.fpu.st);
    match h(ctx, insn) {
        Ok(()) => {
            mmx::enter_mmx_state(ctx);
            Ok(())
        }
        Err(f) => {
            if f == simd_fp_fault(ctx) {
                mmx::enter_mmx_state(ctx);
            } else {
                let fpu = &mut ctx.st.fpu;
                (fpu.fsw, fpu.ftw, fpu.st) = (fsw, ftw, regs);
                if insn.i.op0_kind() == OpKind::Memory && ctx.st.quirks == Quirks::Intel {
                    // On Intel, a store (MOVD/MOVQ/MOVNTQ m, mm) whose write faults has already set
                    // TOP to 0, tags untouched (`--families mmx --seed 3`); AMD leaves TOP as it was
                    // (`--families mmx --seed 2024`, compat32).
                    fpu.fsw &= !(7 << 11);
                }
            }
            Err(f)
        }
    }
}

macro_rules! mm_forms {
    ($($name:ident => $inner:path),* $(,)?) => {
        $(fn $name(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
            mmx_form(ctx, insn, $inner)
        })*
    };
}

mm_forms! {
    mm_mov_v => mov_v,
    mm_movmsk => movmsk,
    mm_pextr => pextr,
    mm_pinsr => pinsr,
    mm_maskmov => maskmov,
    mm_fp_op => sse_fp::fp_op,
    mm_int_op => sse_int::int_op,
}

// ------------------------------------------------------------------------------------ prologue

/// MXCSR exception flag bits (IE, DE, ZE, OE, UE, PE).
pub const MXCSR_FLAGS: u32 = 0x3f;
/// MXCSR bits that may be set (MXCSR_MASK of this CPU: DAZ supported).
pub const MXCSR_MASK: u32 = 0xffff;

/// #XM, or #UD when CR4.OSXMMEXCPT = 0.
pub fn simd_fp_fault(ctx: &Ctx<'_>) -> Fault {
    if ctx.st.cr4 & cr4::OSXMMEXCPT != 0 { Fault::Exc { vector: vec::XM, error: None } } else { Fault::ud() }
}

/// Which register files an instruction names: (XMM or MXCSR-only, MM).
#[inline]
fn reg_files(insn: &Insn) -> (bool, bool) {
    let i = &insn.i;
    let (mut x, mut m) = (false, false);
    for n in 0..i.op_count() {
        if i.op_kind(n) == OpKind::Register {
            let r = i.op_register(n);
            x |= r.is_xmm();
            m |= r.is_mm();
        }
    }
    // LDMXCSR/STMXCSR name no vector register but are SSE instructions.
    (x || !m, m)
}

/// The checks every instruction of the family makes before touching state (#MF for instructions on
/// MM registers; their MMX state transition is made by `mmx_form` when they complete).
#[inline]
pub fn enter(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if insn.i.has_lock_prefix() {
        return Err(Fault::ud());
    }
    let (sse, mm) = reg_files(insn);
    let c0 = ctx.st.cr0;
    if c0 & cr0::EM != 0 || (sse && ctx.st.cr4 & cr4::OSFXSR == 0) {
        return Err(Fault::ud());
    }
    if c0 & cr0::TS != 0 {
        return Err(Fault::nm());
    }
    if mm {
        // The state transition itself is made on completion (`mmx_form`).
        mmx::check_pending_x87(ctx)?;
    }
    Ok(())
}

// ------------------------------------------------------------------------------ vector operands

/// Index of an XMM register.
#[inline]
pub fn xmm_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::XMM0 as usize) & 15
}

/// Reads a register operand as a vector: XMM (128 bits), MM (64 bits) or a GPR (its size).
#[inline]
pub fn read_reg(ctx: &Ctx<'_>, r: Register) -> u128 {
    if r.is_xmm() {
        ctx.st.fpu.xmm[xmm_index(r)]
    } else if r.is_mm() {
        mmx::read_mm(ctx, r) as u128
    } else if let Some(g) = gpr(r) {
        ctx.st.read_gpr(g) as u128
    } else {
        0
    }
}

/// Writes a register operand: XMM (all 128 bits), MM (low 64 bits, exponent set to all ones) or a
/// GPR (x86 merge rules: 32-bit writes zero-extend).
#[inline]
pub fn write_reg(ctx: &mut Ctx<'_>, r: Register, v: u128) {
    if r.is_xmm() {
        ctx.st.fpu.xmm[xmm_index(r)] = v;
    } else if r.is_mm() {
        mmx::write_mm(ctx, r, v as u64);
    } else if let Some(g) = gpr(r) {
        ctx.st.write_gpr(g, v as u64);
    }
}

/// Whether the instruction's 16-byte memory operand must be 16-byte aligned (legacy SSE rule).
#[inline]
fn needs_align(insn: &Insn) -> bool {
    insn.i.memory_size().size() == 16
        && !matches!(
            insn.i.mnemonic(),
            M::Movups
                | M::Movupd
                | M::Movdqu
                | M::Lddqu
                | M::Pcmpestri
                | M::Pcmpestri64
                | M::Pcmpestrm
                | M::Pcmpestrm64
                | M::Pcmpistri
                | M::Pcmpistrm
        )
}

/// Linear address of the memory operand, with segment, alignment (#GP) and #AC checks.
#[inline]
fn mem_lin(ctx: &mut Ctx<'_>, insn: &Insn, size: u32, kind: AccessKind) -> Result<u64, Fault> {
    let off = ea(ctx, insn);
    let seg = mem_seg(insn);
    if size == 16 && ctx.st.mode() == Mode::Long64 && needs_align(insn) {
        // The 16-byte alignment #GP(0) comes before the non-canonical check, so a misaligned
        // non-canonical stack operand raises #GP(0), not #SS(0) (host, `--families sse41 --seed 9`).
        let base = if matches!(seg, Seg::Fs | Seg::Gs) { ctx.st.sreg(seg).base } else { 0 };
        if base.wrapping_add(off) & 15 != 0 {
            return Err(Fault::gp0());
        }
    }
    let lin = ctx.seg_lin(seg, off, size, kind)?;
    if size == 16 {
        if needs_align(insn) && lin & 15 != 0 {
            return Err(Fault::gp0());
        }
    } else {
        ctx.check_alignment(lin, size)?;
    }
    Ok(lin)
}

/// Reads the instruction's memory operand (its full size, 1..16 bytes), zero-extended.
#[inline]
pub fn read_mem_op(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<u128, Fault> {
    let size = insn.i.memory_size().size() as u32;
    let lin = mem_lin(ctx, insn, size, AccessKind::Read)?;
    read_lin_v(ctx, lin, size)
}

/// Reads `size` <= 16 bytes at linear `lin`.
#[inline]
pub fn read_lin_v(ctx: &mut Ctx<'_>, lin: u64, size: u32) -> Result<u128, Fault> {
    if size <= 8 {
        return Ok(ctx.read_lin(lin, size)? as u128);
    }
    let mut b = [0u8; 16];
    ctx.read_bytes(lin, &mut b[..size as usize])?;
    Ok(u128::from_le_bytes(b))
}

/// Writes the low `size` bytes of `v` to the instruction's memory operand.
#[inline]
pub fn write_mem_op(ctx: &mut Ctx<'_>, insn: &Insn, size: u32, v: u128) -> Result<(), Fault> {
    let lin = mem_lin(ctx, insn, size, AccessKind::Write)?;
    write_lin_v(ctx, lin, size, v)
}

/// Writes the low `size` <= 16 bytes of `v` at linear `lin`, all or nothing.
#[inline]
pub fn write_lin_v(ctx: &mut Ctx<'_>, lin: u64, size: u32, v: u128) -> Result<(), Fault> {
    if size <= 8 {
        return ctx.write_lin(lin, size, v as u64);
    }
    // `write_bytes` probes every page first: a fault leaves memory untouched.
    ctx.write_bytes(lin, &v.to_le_bytes()[..size as usize])
}

/// Reads operand `n`: a register (vector or GPR), the memory operand (zero-extended), or an
/// immediate.
#[inline]
pub fn read_src(ctx: &mut Ctx<'_>, insn: &Insn, n: u32) -> Result<u128, Fault> {
    match insn.i.op_kind(n) {
        OpKind::Register => Ok(read_reg(ctx, insn.i.op_register(n))),
        OpKind::Memory => read_mem_op(ctx, insn),
        OpKind::Immediate8 => Ok(insn.i.immediate8() as u128),
        _ => Ok(0),
    }
}

/// The imm8 of the instruction (0 when it has none).
#[inline]
pub fn imm8(insn: &Insn) -> u8 {
    let i = &insn.i;
    for n in 0..i.op_count() {
        if i.op_kind(n) == OpKind::Immediate8 {
            return i.immediate8();
        }
    }
    0
}

const LO64: u128 = u64::MAX as u128;
const LO32: u128 = u32::MAX as u128;

// ------------------------------------------------------------------------------ data movement

/// All register/memory moves: MOVAPS ... MOVDQ2Q.
fn mov_v(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let i = &insn.i;
    let m = i.mnemonic();
    let src_reg = i.op1_kind() == OpKind::Register;
    let src = read_src(ctx, insn, 1)?;
    match i.op0_kind() {
        OpKind::Register => {
            let d = i.op0_register();
            let old = read_reg(ctx, d);
            let v = if d.is_xmm() {
                match m {
                    M::Movss if src_reg => (old & !LO32) | (src & LO32),
                    M::Movsd if src_reg => (old & !LO64) | (src & LO64),
                    M::Movss | M::Movd => src & LO32,
                    M::Movsd | M::Movq | M::Movq2dq => src & LO64,
                    M::Movlps | M::Movlpd => (old & !LO64) | (src & LO64),
                    M::Movhps | M::Movhpd => (old & LO64) | (src << 64),
                    M::Movhlps => (old & !LO64) | (src >> 64),
                    M::Movlhps => (old & LO64) | (src << 64),
                    _ => src,
                }
            } else if m == M::Movd {
                src & LO32
            } else {
                src & LO64
            };
            write_reg(ctx, d, v);
            Ok(())
        }
        OpKind::Memory => {
            let size = i.memory_size().size() as u32;
            let v = if matches!(m, M::Movhps | M::Movhpd) { src >> 64 } else { src };
            write_mem_op(ctx, insn, size, v)
        }
        _ => Err(Fault::ud()),
    }
}

/// LFENCE/MFENCE/SFENCE alternate encodings.
fn fence(_: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if insn.i.has_lock_prefix() {
        return Err(Fault::ud());
    }
    Ok(())
}

/// MOVNTI m32/m64, r32/r64: a plain store (non-temporal hints have no architectural effect). No
/// CR0/CR4 checks apply (SDM: only #UD for LOCK).
fn movnti(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if insn.i.has_lock_prefix() {
        return Err(Fault::ud());
    }
    let v = read_reg(ctx, insn.i.op1_register());
    let size = insn.i.memory_size().size() as u32;
    let off = ea(ctx, insn);
    ctx.write_mem(mem_seg(insn), off, size, v as u64)
}

/// MOVMSKPS/MOVMSKPD/PMOVMSKB: sign bits into a GPR (zero-extended).
fn movmsk(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let s = insn.i.op1_register();
    let v = read_reg(ctx, s);
    let (bits, n) = match insn.i.mnemonic() {
        M::Movmskps => (32, 4),
        M::Movmskpd => (64, 2),
        _ => (8, if s.is_mm() { 8 } else { 16 }),
    };
    let mut r = 0u64;
    for k in 0..n {
        r |= (((v >> (k * bits + bits - 1)) & 1) as u64) << k;
    }
    write_reg(ctx, insn.i.op0_register(), r as u128);
    Ok(())
}

/// PEXTRB/W/D/Q and EXTRACTPS.
fn pextr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let s = insn.i.op1_register();
    let v = read_reg(ctx, s);
    let imm = imm8(insn) as u32;
    let (bits, lanes) = match insn.i.mnemonic() {
        M::Pextrb => (8, 16),
        M::Pextrw => (16, if s.is_mm() { 4 } else { 8 }),
        M::Pextrd | M::Extractps => (32, 4),
        _ => (64, 2),
    };
    let k = imm % lanes;
    let x = ((v >> (k * bits)) as u64) & sse_int::lane_mask(bits);
    match insn.i.op0_kind() {
        OpKind::Register => {
            write_reg(ctx, insn.i.op0_register(), x as u128);
            Ok(())
        }
        _ => write_mem_op(ctx, insn, bits / 8, x as u128),
    }
}

/// PINSRB/W/D/Q.
fn pinsr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let d = insn.i.op0_register();
    let x = read_src(ctx, insn, 1)?;
    let imm = imm8(insn) as u32;
    let (bits, lanes) = match insn.i.mnemonic() {
        M::Pinsrb => (8, 16),
        M::Pinsrw => (16, if d.is_mm() { 4 } else { 8 }),
        M::Pinsrd => (32, 4),
        _ => (64, 2),
    };
    let sh = (imm % lanes) * bits;
    let m = (sse_int::lane_mask(bits) as u128) << sh;
    let old = read_reg(ctx, d);
    write_reg(ctx, d, (old & !m) | ((x << sh) & m));
    Ok(())
}

/// MASKMOVQ/MASKMOVDQU: byte-masked store of the first operand to DS:rDI (segment overridable).
fn maskmov(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    maskmov_body(ctx, insn)
}

/// MASKMOVQ/MASKMOVDQU/VMASKMOVDQU after their prologue.
pub(super) fn maskmov_body(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let (r1, r2) = (insn.i.op1_register(), insn.i.op2_register());
    let data = read_reg(ctx, r1);
    let mask = read_reg(ctx, r2);
    let n: u32 = if r1.is_mm() { 8 } else { 16 };
    let mut sel = 0u32;
    for k in 0..n {
        if (mask >> (k * 8 + 7)) & 1 != 0 {
            sel |= 1 << k;
        }
    }
    let off = ctx.st.gpr[7] & crate::regs::size_mask(insn.asize as u32);
    let seg = super::ops::mem_seg(insn);
    let lin = ctx.seg_lin(seg, off, n, AccessKind::Write)?;
    let wrap = ctx.st.mode() != crate::state::Mode::Long64;
    let byte = |k: u32| {
        let a = lin.wrapping_add(k as u64);
        if wrap { a & 0xffff_ffff } else { a }
    };
    if n == 16 {
        // (V)MASKMOVDQU, measured on an Intel Xeon host (`difftest/tests/vex.rs`, `vmaskmovdqu_fault_address`): the
        // destination is checked as two 8-byte halves, the upper half first, whatever the mask (the SDM
        // lets an all-zero mask fault), before any byte is written.
        ctx.probe_write(byte(8), 8)?;
        ctx.probe_write(lin, 8)?;
    } else if sel == 0 {
        return Ok(());
    } else {
        ctx.probe_write(lin, n)?;
    }
    for k in (0..n).filter(|k| sel & (1 << k) != 0) {
        ctx.write_lin(byte(k), 1, (data >> (k * 8)) as u64 & 0xff)?;
    }
    Ok(())
}

/// LDMXCSR m32: #GP(0) when bits outside MXCSR_MASK are set.
fn ldmxcsr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let v = read_mem_op(ctx, insn)? as u32;
    load_mxcsr(ctx, v)
}

/// Loads MXCSR (LDMXCSR, VLDMXCSR): #GP(0) when bits outside MXCSR_MASK are set.
pub(super) fn load_mxcsr(ctx: &mut Ctx<'_>, v: u32) -> Result<(), Fault> {
    if v & !MXCSR_MASK != 0 {
        return Err(Fault::gp0());
    }
    ctx.st.fpu.mxcsr = v;
    Ok(())
}

/// STMXCSR m32.
fn stmxcsr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let v = ctx.st.fpu.mxcsr;
    write_mem_op(ctx, insn, 4, v as u128)
}

/// PTEST: ZF = (dst AND src) == 0, CF = (NOT dst AND src) == 0; AF, OF, PF, SF cleared.
fn ptest(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let a = read_reg(ctx, insn.i.op0_register());
    let b = read_src(ctx, insn, 1)?;
    let mut f = 0;
    if a & b == 0 {
        f |= flags::ZF;
    }
    if !a & b == 0 {
        f |= flags::CF;
    }
    ctx.set_arith_flags(f);
    Ok(())
}

#[cfg(test)]
mod tests;
