//! SIMD floating point: arithmetic, compares, COMIS/UCOMIS, conversions, rounding, dot products and
//! the RCP/RSQRT approximations, computed on the host's SSE unit through [`host`] (see the design note
//! in [`super::sse`]), with the guest's MXCSR masks applied by [`apply_flags`].

use super::sse::{MXCSR_FLAGS, enter, imm8, read_reg, read_src, simd_fp_fault, write_reg};
use super::{Handler, Insn, sse_unbounded};
use crate::fault::Fault;
use crate::mem::Ctx;
use crate::state::flags;
use iced_x86::Mnemonic as M;

/// MXCSR flag bits.
pub mod mx {
    /// Invalid operation.
    pub const IE: u32 = 1 << 0;
    /// Denormal operand.
    pub const DE: u32 = 1 << 1;
    /// Divide by zero.
    pub const ZE: u32 = 1 << 2;
    /// Overflow.
    pub const OE: u32 = 1 << 3;
    /// Underflow.
    pub const UE: u32 = 1 << 4;
    /// Precision.
    pub const PE: u32 = 1 << 5;
    /// Denormals are zero.
    pub const DAZ: u32 = 1 << 6;
    /// All six exception masks.
    pub const MASKS: u32 = 0x3f << 7;
    /// Rounding control.
    pub const RC: u32 = 3 << 13;
    /// Flush to zero.
    pub const FTZ: u32 = 1 << 15;
}

/// The host interface: each function runs one SSE instruction on the host with the given MXCSR image
/// (which must have every exception masked) and returns the destination register and the MXCSR
/// afterwards. Nothing else of the host state changes (its MXCSR is saved and restored).
pub mod host {
    use core::arch::asm;
    use core::arch::x86_64::__m128i;

    /// A 128-bit value as an XMM register operand (also used by `avx_fp::host`).
    #[inline]
    pub(crate) fn v(x: u128) -> __m128i {
        // SAFETY: `__m128i` and `u128` are both 16-byte plain-data types; every bit pattern is valid.
        unsafe { core::mem::transmute::<u128, __m128i>(x) }
    }

    /// An XMM register operand as a 128-bit value.
    #[inline]
    pub(crate) fn u(x: __m128i) -> u128 {
        // SAFETY: as in `v`.
        unsafe { core::mem::transmute::<__m128i, u128>(x) }
    }

    /// A host operation on (destination, source, imm8, MXCSR).
    pub type Op = fn(u128, u128, u8, u32) -> (u128, u32);

    macro_rules! run_xx {
        ($x:ident, $y:ident, $m:ident, $text:expr) => {{
            let mut save = 0u32;
            // SAFETY: the block saves the host MXCSR, loads the caller's image (all exceptions masked, so
            // the instruction cannot trap), executes one SSE (or, for `avx_fp`, VEX.128: its caller has
            // checked the host supports it) register-register instruction on the two XMM operands named here, stores the resulting MXCSR into `$m` and restores the host MXCSR.
            // The two pointers address live locals of this function; no stack or flags are touched.
            unsafe {
                asm!(
                    "stmxcsr [{s}]",
                    "ldmxcsr [{m}]",
                    $text,
                    "stmxcsr [{m}]",
                    "ldmxcsr [{s}]",
                    x = inout(xmm_reg) $x,
                    y = in(xmm_reg) $y,
                    m = in(reg) &raw mut $m,
                    s = in(reg) &raw mut save,
                    options(nostack, preserves_flags),
                );
            }
        }};
    }
    pub(crate) use run_xx;

    macro_rules! rr {
        ($($name:ident = $ins:literal;)*) => {$(
            #[doc = concat!("Host `", $ins, "`.")]
            pub fn $name(a: u128, b: u128, _imm: u8, mx: u32) -> (u128, u32) {
                let mut x = v(a);
                let y = v(b);
                let mut m = mx;
                run_xx!(x, y, m, concat!($ins, " {x}, {y}"));
                (u(x), m)
            }
        )*};
    }

    macro_rules! rri {
        ($($name:ident = $ins:literal [$($k:literal),*];)*) => {$(
            #[doc = concat!("Host `", $ins, "` with an immediate (only the listed values).")]
            pub fn $name(a: u128, b: u128, imm: u8, mx: u32) -> (u128, u32) {
                let mut x = v(a);
                let y = v(b);
                let mut m = mx;
                match imm {
                    $($k => run_xx!(x, y, m, concat!($ins, " {x}, {y}, ", stringify!($k))),)*
                    _ => {}
                }
                (u(x), m)
            }
        )*};
    }

    rr! {
        addps = "addps"; addpd = "addpd"; addss = "addss"; addsd = "addsd";
        subps = "subps"; subpd = "subpd"; subss = "subss"; subsd = "subsd";
        mulps = "mulps"; mulpd = "mulpd"; mulss = "mulss"; mulsd = "mulsd";
        divps = "divps"; divpd = "divpd"; divss = "divss"; divsd = "divsd";
        minps = "minps"; minpd = "minpd"; minss = "minss"; minsd = "minsd";
        maxps = "maxps"; maxpd = "maxpd"; maxss = "maxss"; maxsd = "maxsd";
        sqrtps = "sqrtps"; sqrtpd = "sqrtpd"; sqrtss = "sqrtss"; sqrtsd = "sqrtsd";
        rcpps = "rcpps"; rcpss = "rcpss"; rsqrtps = "rsqrtps"; rsqrtss = "rsqrtss";
        haddps = "haddps"; haddpd = "haddpd"; hsubps = "hsubps"; hsubpd = "hsubpd";
        addsubps = "addsubps"; addsubpd = "addsubpd";
        cvtps2pd = "cvtps2pd"; cvtpd2ps = "cvtpd2ps"; cvtss2sd = "cvtss2sd"; cvtsd2ss = "cvtsd2ss";
        cvtdq2ps = "cvtdq2ps"; cvtps2dq = "cvtps2dq"; cvttps2dq = "cvttps2dq";
        cvtdq2pd = "cvtdq2pd"; cvtpd2dq = "cvtpd2dq"; cvttpd2dq = "cvttpd2dq";
    }

    rri! {
        cmpps = "cmpps" [0, 1, 2, 3, 4, 5, 6, 7];
        cmppd = "cmppd" [0, 1, 2, 3, 4, 5, 6, 7];
        cmpss = "cmpss" [0, 1, 2, 3, 4, 5, 6, 7];
        cmpsd = "cmpsd" [0, 1, 2, 3, 4, 5, 6, 7];
        roundps = "roundps" [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        roundpd = "roundpd" [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        roundss = "roundss" [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        roundsd = "roundsd" [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
        dpps = "dpps" [15, 31, 47, 63, 79, 95, 111, 127, 143, 159, 175, 191, 207, 223, 239, 255];
        dppd = "dppd" [3, 19, 35, 51];
    }

    macro_rules! to_gpr {
        ($($name:ident = $ins:literal, $fmt:literal;)*) => {$(
            #[doc = concat!("Host `", $ins, "` to a GPR.")]
            pub fn $name(b: u128, mx: u32) -> (u64, u32) {
                let y = v(b);
                let mut r: u64;
                let mut m = mx;
                let mut save = 0u32;
                // SAFETY: as in `run_xx`, with a general register as the destination.
                unsafe {
                    asm!(
                        "xor {r:e}, {r:e}",
                        "stmxcsr [{s}]",
                        "ldmxcsr [{m}]",
                        concat!($ins, " ", $fmt, ", {y}"),
                        "stmxcsr [{m}]",
                        "ldmxcsr [{s}]",
                        r = out(reg) r,
                        y = in(xmm_reg) y,
                        m = in(reg) &raw mut m,
                        s = in(reg) &raw mut save,
                        options(nostack),
                    );
                }
                (r, m)
            }
        )*};
    }

    to_gpr! {
        cvtss2si32 = "cvtss2si", "{r:e}"; cvtss2si64 = "cvtss2si", "{r}";
        cvttss2si32 = "cvttss2si", "{r:e}"; cvttss2si64 = "cvttss2si", "{r}";
        cvtsd2si32 = "cvtsd2si", "{r:e}"; cvtsd2si64 = "cvtsd2si", "{r}";
        cvttsd2si32 = "cvttsd2si", "{r:e}"; cvttsd2si64 = "cvttsd2si", "{r}";
    }

    macro_rules! from_gpr {
        ($($name:ident = $ins:literal, $fmt:literal;)*) => {$(
            #[doc = concat!("Host `", $ins, "` from a GPR.")]
            pub fn $name(a: u128, g: u64, mx: u32) -> (u128, u32) {
                let mut x = v(a);
                let mut m = mx;
                let mut save = 0u32;
                // SAFETY: as in `run_xx`, with a general register as the source.
                unsafe {
                    asm!(
                        "stmxcsr [{s}]",
                        "ldmxcsr [{m}]",
                        concat!($ins, " {x}, ", $fmt),
                        "stmxcsr [{m}]",
                        "ldmxcsr [{s}]",
                        x = inout(xmm_reg) x,
                        r = in(reg) g,
                        m = in(reg) &raw mut m,
                        s = in(reg) &raw mut save,
                        options(nostack, preserves_flags),
                    );
                }
                (u(x), m)
            }
        )*};
    }

    from_gpr! {
        cvtsi2ss32 = "cvtsi2ss", "{r:e}"; cvtsi2ss64 = "cvtsi2ss", "{r}";
        cvtsi2sd32 = "cvtsi2sd", "{r:e}"; cvtsi2sd64 = "cvtsi2sd", "{r}";
    }

    macro_rules! comis {
        ($($name:ident = $ins:literal;)*) => {$(
            #[doc = concat!("Host `", $ins, "`: returns (ZF, PF, CF) as bits 0..2 and MXCSR.")]
            pub fn $name(a: u128, b: u128, mx: u32) -> (u8, u32) {
                let x = v(a);
                let y = v(b);
                let (z, p, c): (u8, u8, u8);
                let mut m = mx;
                let mut save = 0u32;
                // SAFETY: as in `run_xx`; the instruction writes only RFLAGS, read back with SETcc.
                unsafe {
                    asm!(
                        "stmxcsr [{s}]",
                        "ldmxcsr [{m}]",
                        concat!($ins, " {x}, {y}"),
                        "setz {z}",
                        "setp {p}",
                        "setc {c}",
                        "stmxcsr [{m}]",
                        "ldmxcsr [{s}]",
                        x = in(xmm_reg) x,
                        y = in(xmm_reg) y,
                        z = out(reg_byte) z,
                        p = out(reg_byte) p,
                        c = out(reg_byte) c,
                        m = in(reg) &raw mut m,
                        s = in(reg) &raw mut save,
                        options(nostack),
                    );
                }
                (z | (p << 1) | (c << 2), m)
            }
        )*};
    }

    comis! { comiss = "comiss"; ucomiss = "ucomiss"; comisd = "comisd"; ucomisd = "ucomisd"; }
}

/// Which lanes of the result an underflowing instruction writes (for the unmasked-underflow check).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Shape {
    /// Cannot underflow.
    None,
    /// Four singles.
    Ps,
    /// Low two singles (CVTPD2PS).
    Ps2,
    /// Low single.
    Ss,
    /// Two doubles.
    Pd,
    /// Low double.
    Sd,
}

/// The host operation and result shape of a two-operand FP mnemonic.
pub fn op_of(m: M) -> Option<(host::Op, Shape)> {
    use Shape as S;
    use host as h;
    Some(match m {
        M::Addps => (h::addps, S::Ps),
        M::Addpd => (h::addpd, S::Pd),
        M::Addss => (h::addss, S::Ss),
        M::Addsd => (h::addsd, S::Sd),
        M::Subps => (h::subps, S::Ps),
        M::Subpd => (h::subpd, S::Pd),
        M::Subss => (h::subss, S::Ss),
        M::Subsd => (h::subsd, S::Sd),
        M::Mulps => (h::mulps, S::Ps),
        M::Mulpd => (h::mulpd, S::Pd),
        M::Mulss => (h::mulss, S::Ss),
        M::Mulsd => (h::mulsd, S::Sd),
        M::Divps => (h::divps, S::Ps),
        M::Divpd => (h::divpd, S::Pd),
        M::Divss => (h::divss, S::Ss),
        M::Divsd => (h::divsd, S::Sd),
        M::Minps => (h::minps, S::None),
        M::Minpd => (h::minpd, S::None),
        M::Minss => (h::minss, S::None),
        M::Minsd => (h::minsd, S::None),
        M::Maxps => (h::maxps, S::None),
        M::Maxpd => (h::maxpd, S::None),
        M::Maxss => (h::maxss, S::None),
        M::Maxsd => (h::maxsd, S::None),
        M::Sqrtps => (h::sqrtps, S::None),
        M::Sqrtpd => (h::sqrtpd, S::None),
        M::Sqrtss => (h::sqrtss, S::None),
        M::Sqrtsd => (h::sqrtsd, S::None),
        M::Rcpps => (h::rcpps, S::None),
        M::Rcpss => (h::rcpss, S::None),
        M::Rsqrtps => (h::rsqrtps, S::None),
        M::Rsqrtss => (h::rsqrtss, S::None),
        M::Haddps => (h::haddps, S::Ps),
        M::Haddpd => (h::haddpd, S::Pd),
        M::Hsubps => (h::hsubps, S::Ps),
        M::Hsubpd => (h::hsubpd, S::Pd),
        M::Addsubps => (h::addsubps, S::Ps),
        M::Addsubpd => (h::addsubpd, S::Pd),
        M::Cvtps2pd => (h::cvtps2pd, S::None),
        M::Cvtpd2ps => (h::cvtpd2ps, S::Ps2),
        M::Cvtss2sd => (h::cvtss2sd, S::None),
        M::Cvtsd2ss => (h::cvtsd2ss, S::Ss),
        M::Cvtdq2ps | M::Cvtpi2ps => (h::cvtdq2ps, S::None),
        M::Cvtps2dq | M::Cvtps2pi => (h::cvtps2dq, S::None),
        M::Cvttps2dq | M::Cvttps2pi => (h::cvttps2dq, S::None),
        M::Cvtdq2pd | M::Cvtpi2pd => (h::cvtdq2pd, S::None),
        M::Cvtpd2dq | M::Cvtpd2pi => (h::cvtpd2dq, S::None),
        M::Cvttpd2dq | M::Cvttpd2pi => (h::cvttpd2dq, S::None),
        M::Cmpps => (h::cmpps, S::None),
        M::Cmppd => (h::cmppd, S::None),
        M::Cmpss => (h::cmpss, S::None),
        M::Cmpsd => (h::cmpsd, S::None),
        M::Roundps => (h::roundps, S::None),
        M::Roundpd => (h::roundpd, S::None),
        M::Roundss => (h::roundss, S::None),
        M::Roundsd => (h::roundsd, S::None),
        M::Dpps => (h::dpps, S::Ps),
        M::Dppd => (h::dppd, S::Pd),
        _ => return None,
    })
}

/// Handlers of the FP mnemonics.
pub fn lookup(m: M) -> Option<Handler> {
    if op_of(m).is_some() {
        return Some(fp_op);
    }
    Some(match m {
        M::Cvtss2si | M::Cvttss2si | M::Cvtsd2si | M::Cvttsd2si => cvt_to_gpr,
        M::Cvtsi2ss | M::Cvtsi2sd => cvt_from_gpr,
        M::Comiss | M::Ucomiss | M::Comisd | M::Ucomisd => comis,
        _ => return None,
    })
}

/// The MXCSR image the host runs with: the guest's RC, DAZ and FTZ, every exception masked, no flags.
#[inline]
pub fn host_mxcsr(guest: u32) -> u32 {
    (guest & (mx::RC | mx::DAZ | mx::FTZ)) | mx::MASKS
}

/// Whether a lane of `r` that an instruction of `shape` writes holds a denormal.
pub(super) fn has_denormal(r: u128, shape: Shape) -> bool {
    let d32 = |k: u32| {
        let x = (r >> (32 * k)) as u32;
        x & 0x7f80_0000 == 0 && x & 0x007f_ffff != 0
    };
    let d64 = |k: u32| {
        let x = (r >> (64 * k)) as u64;
        x & 0x7ff0_0000_0000_0000 == 0 && x & 0x000f_ffff_ffff_ffff != 0
    };
    match shape {
        Shape::None => false,
        Shape::Ps => (0..4).any(d32),
        Shape::Ps2 => (0..2).any(d32),
        Shape::Ss => d32(0),
        Shape::Pd => (0..2).any(d64),
        Shape::Sd => d64(0),
    }
}

/// Applies the flags `raised` by a masked host run to the guest MXCSR under the guest's masks.
/// Returns `Err` (#XM or #UD) when an exception is unmasked; the caller then leaves the destination
/// unchanged. `rerun_no_ftz` recomputes the result with FTZ clear, for the unmasked-underflow check.
pub fn apply_flags(
    ctx: &mut Ctx<'_>,
    raised: u32,
    shape: Shape,
    rerun_no_ftz: impl FnOnce() -> (u128, u32),
) -> Result<(), Fault> {
    const PRE: u32 = mx::IE | mx::DE | mx::ZE;
    let guest = ctx.st.fpu.mxcsr;
    let masks = (guest >> 7) & MXCSR_FLAGS;
    let raised = raised & MXCSR_FLAGS;
    let mut unmasked = raised & !masks;
    let mut report = raised;
    if unmasked & PRE != 0 {
        report = raised & PRE;
    } else if masks & mx::UE == 0 && raised & mx::UE == 0 && shape != Shape::None {
        // A tiny exact result raises no masked flag but still traps when underflow is unmasked.
        let (r, f) = rerun_no_ftz();
        if f & mx::UE != 0 || has_denormal(r, shape) {
            unmasked |= mx::UE;
            report |= mx::UE;
        }
    }
    ctx.st.fpu.mxcsr |= report;
    if unmasked != 0 {
        return Err(simd_fp_fault(ctx));
    }
    Ok(())
}

const LO64: u128 = u64::MAX as u128;

/// Two-operand FP instructions (XMM or MM destination), with an optional imm8.
pub(super) fn fp_op(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let m = insn.i.mnemonic();
    let Some((f, shape)) = op_of(m) else {
        return Err(Fault::ud());
    };
    let d = insn.i.op0_register();
    let a = read_reg(ctx, d);
    let b = read_src(ctx, insn, 1)?;
    let imm = imm8(insn);
    let b = match m {
        M::Cvtpi2ps | M::Cvtpi2pd | M::Cvtps2pi | M::Cvttps2pi => b & LO64,
        _ => b,
    };
    let himm = match m {
        M::Cmpps | M::Cmppd | M::Cmpss | M::Cmpsd => imm & 7,
        M::Roundps | M::Roundpd | M::Roundss | M::Roundsd => imm & 15,
        // The broadcast mask (low bits) is applied below; flags do not depend on it.
        M::Dpps => imm | 0x0f,
        M::Dppd => (imm & 0x30) | 0x03,
        _ => imm,
    };
    let guest = ctx.st.fpu.mxcsr;
    let (mut r, mut raised) = f(a, b, himm, host_mxcsr(guest));
    let masks = (guest >> 7) & MXCSR_FLAGS;
    if masks != MXCSR_FLAGS
        && matches!(m, M::Dpps | M::Dppd)
        && let Some(report) = sse_unbounded::dot_product_fault(m == M::Dppd, &[(a, b)], imm, guest)
    {
        ctx.st.fpu.mxcsr |= report;
        return Err(simd_fp_fault(ctx));
    }
    if raised & mx::PE != 0
        && masks & (mx::OE | mx::UE) != mx::OE | mx::UE
        && let Some(pe) = sse_unbounded::precision_flag(m, a, b, guest)
    {
        raised = (raised & !mx::PE) | pe;
    }
    apply_flags(ctx, raised, shape, || f(a, b, himm, host_mxcsr(guest) & !mx::FTZ))?;
    match m {
        M::Dpps => {
            for k in 0..4 {
                if (imm >> k) & 1 == 0 {
                    r &= !((u32::MAX as u128) << (32 * k));
                }
            }
        }
        M::Dppd => {
            for k in 0..2 {
                if (imm >> k) & 1 == 0 {
                    r &= !((u64::MAX as u128) << (64 * k));
                }
            }
        }
        M::Cvtpi2ps => r = (a & !LO64) | (r & LO64),
        _ => {}
    }
    if d.is_mm() {
        r &= LO64;
    }
    write_reg(ctx, d, r);
    Ok(())
}

/// CVT(T)SS2SI / CVT(T)SD2SI r32/r64, xmm/m32/m64.
fn cvt_to_gpr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let d = insn.i.op0_register();
    let b = read_src(ctx, insn, 1)?;
    let wide = d.size() == 8;
    let f: fn(u128, u32) -> (u64, u32) = match (insn.i.mnemonic(), wide) {
        (M::Cvtss2si, false) => host::cvtss2si32,
        (M::Cvtss2si, true) => host::cvtss2si64,
        (M::Cvttss2si, false) => host::cvttss2si32,
        (M::Cvttss2si, true) => host::cvttss2si64,
        (M::Cvtsd2si, false) => host::cvtsd2si32,
        (M::Cvtsd2si, true) => host::cvtsd2si64,
        (M::Cvttsd2si, false) => host::cvttsd2si32,
        _ => host::cvttsd2si64,
    };
    let (r, raised) = f(b, host_mxcsr(ctx.st.fpu.mxcsr));
    apply_flags(ctx, raised, Shape::None, || (0, 0))?;
    write_reg(ctx, d, r as u128);
    Ok(())
}

/// CVTSI2SS / CVTSI2SD xmm, r/m32 or r/m64.
fn cvt_from_gpr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let d = insn.i.op0_register();
    let a = read_reg(ctx, d);
    let g = read_src(ctx, insn, 1)? as u64;
    let wide = super::ops::op_size(insn, 1) == 8;
    let f: fn(u128, u64, u32) -> (u128, u32) = match (insn.i.mnemonic(), wide) {
        (M::Cvtsi2ss, false) => host::cvtsi2ss32,
        (M::Cvtsi2ss, true) => host::cvtsi2ss64,
        (M::Cvtsi2sd, false) => host::cvtsi2sd32,
        _ => host::cvtsi2sd64,
    };
    let (r, raised) = f(a, g, host_mxcsr(ctx.st.fpu.mxcsr));
    apply_flags(ctx, raised, Shape::None, || (0, 0))?;
    write_reg(ctx, d, r);
    Ok(())
}

/// COMISS/UCOMISS/COMISD/UCOMISD: ZF, PF, CF from the compare; OF, SF, AF cleared.
fn comis(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let a = read_reg(ctx, insn.i.op0_register());
    let b = read_src(ctx, insn, 1)?;
    let f = match insn.i.mnemonic() {
        M::Comiss => host::comiss,
        M::Ucomiss => host::ucomiss,
        M::Comisd => host::comisd,
        _ => host::ucomisd,
    };
    let (zpc, raised) = f(a, b, host_mxcsr(ctx.st.fpu.mxcsr));
    apply_flags(ctx, raised, Shape::None, || (0, 0))?;
    let mut fl = 0;
    if zpc & 1 != 0 {
        fl |= flags::ZF;
    }
    if zpc & 2 != 0 {
        fl |= flags::PF;
    }
    if zpc & 4 != 0 {
        fl |= flags::CF;
    }
    ctx.set_arith_flags(fl);
    Ok(())
}
