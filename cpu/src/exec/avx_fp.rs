//! AVX floating point: the VEX forms of the SSE FP instructions, the 32 compare predicates of VCMP*,
//! FMA and F16C, computed on the host's own units as [`super::sse_fp`] does (see the design note in
//! [`super::sse`]): the same host operation runs on each 128-bit lane, the flags of the lanes are ORed,
//! and [`sse_fp::apply_flags`] applies the guest's masks once for the whole instruction, so an unmasked
//! exception in any lane leaves the whole destination unchanged.
//!
//! Known approximation (as for SSE, plus FMA): with overflow or underflow unmasked, the PE flag FMA
//! reports is the masked run's, not re-derived at unbounded exponent ([`super::sse_unbounded`] covers
//! the SSE operations, not the fused ones).

use super::avx::{Y, enter, imm8, legacy, read_reg, read_src, sources, wide, write_mem, write_reg};
use super::sse_fp::{self, Shape, apply_flags, host_mxcsr, mx};
use super::{Handler, Insn, avx_unbounded, sse_unbounded};
use crate::fault::Fault;
use crate::mem::Ctx;
use crate::state::flags;
use iced_x86::{Mnemonic as M, OpKind};

/// Host instructions that only exist in VEX form (they need the host's AVX, FMA or F16C; callers check
/// with [`host::has`] first).
pub mod host {
    use crate::exec::sse_fp::host::{run_xx as run2, u, v};
    use core::arch::asm;

    /// A host feature the VEX operations need.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Feature {
        /// AVX (VCMP with predicates 8-31).
        Avx,
        /// FMA.
        Fma,
        /// F16C.
        F16c,
    }

    /// Whether the host has `f` (and the OS has enabled the AVX state).
    pub fn has(f: Feature) -> bool {
        match f {
            Feature::Avx => std::arch::is_x86_feature_detected!("avx"),
            Feature::Fma => std::arch::is_x86_feature_detected!("fma"),
            Feature::F16c => std::arch::is_x86_feature_detected!("f16c"),
        }
    }

    macro_rules! run3 {
        ($x:ident, $y:ident, $z:ident, $m:ident, $text:expr) => {{
            let mut save = 0u32;
            // SAFETY: the block saves the host MXCSR, loads the caller's image (all exceptions masked, so
            // the instruction cannot trap), executes one VEX.128 instruction on the XMM operands named
            // here (the caller has checked the host supports it), stores the resulting MXCSR into `$m`
            // and restores the host MXCSR. The pointers address live locals; no stack or flags are touched.
            unsafe {
                asm!(
                    "stmxcsr [{s}]",
                    "ldmxcsr [{m}]",
                    $text,
                    "stmxcsr [{m}]",
                    "ldmxcsr [{s}]",
                    x = inout(xmm_reg) $x,
                    y = in(xmm_reg) $y,
                    z = in(xmm_reg) $z,
                    m = in(reg) &raw mut $m,
                    s = in(reg) &raw mut save,
                    options(nostack, preserves_flags),
                );
            }
        }};
    }

    macro_rules! vcmp {
        ($($name:ident = $ins:literal;)*) => {$(
            #[doc = concat!("Host `", $ins, " x, x, y, imm8` (predicates 0-31).")]
            pub fn $name(a: u128, b: u128, imm: u8, mx: u32) -> (u128, u32) {
                let mut x = v(a);
                let y = v(b);
                let mut m = mx;
                macro_rules! arm {
                    ($k:literal) => { run2!(x, y, m, concat!($ins, " {x}, {x}, {y}, ", stringify!($k))) };
                }
                match imm & 31 {
                    0 => arm!(0), 1 => arm!(1), 2 => arm!(2), 3 => arm!(3), 4 => arm!(4), 5 => arm!(5),
                    6 => arm!(6), 7 => arm!(7), 8 => arm!(8), 9 => arm!(9), 10 => arm!(10), 11 => arm!(11),
                    12 => arm!(12), 13 => arm!(13), 14 => arm!(14), 15 => arm!(15), 16 => arm!(16),
                    17 => arm!(17), 18 => arm!(18), 19 => arm!(19), 20 => arm!(20), 21 => arm!(21),
                    22 => arm!(22), 23 => arm!(23), 24 => arm!(24), 25 => arm!(25), 26 => arm!(26),
                    27 => arm!(27), 28 => arm!(28), 29 => arm!(29), 30 => arm!(30), _ => arm!(31),
                }
                (u(x), m)
            }
        )*};
    }

    vcmp! { vcmpps = "vcmpps"; vcmppd = "vcmppd"; vcmpss = "vcmpss"; vcmpsd = "vcmpsd"; }

    /// A host FMA operation on (destination, second operand, third operand, MXCSR).
    pub type Fma = fn(u128, u128, u128, u32) -> (u128, u32);

    macro_rules! fma {
        ($($mn:ident => $name:ident,)*) => {
            $(
                #[doc = concat!("Host `", stringify!($name), " x, y, z`.")]
                pub fn $name(a: u128, b: u128, c: u128, mx: u32) -> (u128, u32) {
                    let mut x = v(a);
                    let y = v(b);
                    let z = v(c);
                    let mut m = mx;
                    run3!(x, y, z, m, concat!(stringify!($name), " {x}, {y}, {z}"));
                    (u(x), m)
                }
            )*
            /// The host FMA operation of a VEX mnemonic.
            pub fn fma_of(m: iced_x86::Mnemonic) -> Option<Fma> {
                use iced_x86::Mnemonic as M;
                Some(match m {
                    $(M::$mn => $name,)*
                    _ => return None,
                })
            }
        };
    }

    fma! {
        Vfmadd132ps => vfmadd132ps,
        Vfmadd132pd => vfmadd132pd,
        Vfmadd132ss => vfmadd132ss,
        Vfmadd132sd => vfmadd132sd,
        Vfmadd213ps => vfmadd213ps,
        Vfmadd213pd => vfmadd213pd,
        Vfmadd213ss => vfmadd213ss,
        Vfmadd213sd => vfmadd213sd,
        Vfmadd231ps => vfmadd231ps,
        Vfmadd231pd => vfmadd231pd,
        Vfmadd231ss => vfmadd231ss,
        Vfmadd231sd => vfmadd231sd,
        Vfmsub132ps => vfmsub132ps,
        Vfmsub132pd => vfmsub132pd,
        Vfmsub132ss => vfmsub132ss,
        Vfmsub132sd => vfmsub132sd,
        Vfmsub213ps => vfmsub213ps,
        Vfmsub213pd => vfmsub213pd,
        Vfmsub213ss => vfmsub213ss,
        Vfmsub213sd => vfmsub213sd,
        Vfmsub231ps => vfmsub231ps,
        Vfmsub231pd => vfmsub231pd,
        Vfmsub231ss => vfmsub231ss,
        Vfmsub231sd => vfmsub231sd,
        Vfnmadd132ps => vfnmadd132ps,
        Vfnmadd132pd => vfnmadd132pd,
        Vfnmadd132ss => vfnmadd132ss,
        Vfnmadd132sd => vfnmadd132sd,
        Vfnmadd213ps => vfnmadd213ps,
        Vfnmadd213pd => vfnmadd213pd,
        Vfnmadd213ss => vfnmadd213ss,
        Vfnmadd213sd => vfnmadd213sd,
        Vfnmadd231ps => vfnmadd231ps,
        Vfnmadd231pd => vfnmadd231pd,
        Vfnmadd231ss => vfnmadd231ss,
        Vfnmadd231sd => vfnmadd231sd,
        Vfnmsub132ps => vfnmsub132ps,
        Vfnmsub132pd => vfnmsub132pd,
        Vfnmsub132ss => vfnmsub132ss,
        Vfnmsub132sd => vfnmsub132sd,
        Vfnmsub213ps => vfnmsub213ps,
        Vfnmsub213pd => vfnmsub213pd,
        Vfnmsub213ss => vfnmsub213ss,
        Vfnmsub213sd => vfnmsub213sd,
        Vfnmsub231ps => vfnmsub231ps,
        Vfnmsub231pd => vfnmsub231pd,
        Vfnmsub231ss => vfnmsub231ss,
        Vfnmsub231sd => vfnmsub231sd,
        Vfmaddsub132ps => vfmaddsub132ps,
        Vfmaddsub132pd => vfmaddsub132pd,
        Vfmaddsub213ps => vfmaddsub213ps,
        Vfmaddsub213pd => vfmaddsub213pd,
        Vfmaddsub231ps => vfmaddsub231ps,
        Vfmaddsub231pd => vfmaddsub231pd,
        Vfmsubadd132ps => vfmsubadd132ps,
        Vfmsubadd132pd => vfmsubadd132pd,
        Vfmsubadd213ps => vfmsubadd213ps,
        Vfmsubadd213pd => vfmsubadd213pd,
        Vfmsubadd231ps => vfmsubadd231ps,
        Vfmsubadd231pd => vfmsubadd231pd,
    }

    /// Host `vcvtph2ps x, y`: the four halves in the low 64 bits of `b` to singles.
    pub fn vcvtph2ps(b: u128, mx: u32) -> (u128, u32) {
        let mut x = v(0);
        let y = v(b);
        let mut m = mx;
        run2!(x, y, m, "vcvtph2ps {x}, {y}");
        (u(x), m)
    }

    /// Host `vcvtps2ph x, y, imm8`: four singles to halves in the low 64 bits (imm8 bits 7:3 are
    /// ignored by the instruction).
    pub fn vcvtps2ph(b: u128, imm: u8, mx: u32) -> (u128, u32) {
        let mut x = v(0);
        let y = v(b);
        let mut m = mx;
        macro_rules! arm {
            ($k:literal) => {
                run2!(x, y, m, concat!("vcvtps2ph {x}, {y}, ", stringify!($k)))
            };
        }
        match imm & 7 {
            0 => arm!(0),
            1 => arm!(1),
            2 => arm!(2),
            3 => arm!(3),
            4 => arm!(4),
            5 => arm!(5),
            6 => arm!(6),
            _ => arm!(7),
        }
        (u(x), m)
    }
}

/// Handlers of the FP mnemonics (VEX mnemonics).
pub fn lookup(m: M) -> Option<Handler> {
    if host::fma_of(m).is_some() {
        return Some(fma);
    }
    Some(match m {
        M::Vcmpps | M::Vcmppd | M::Vcmpss | M::Vcmpsd => fp_op,
        M::Vcvtph2ps => cvtph2ps,
        M::Vcvtps2ph => cvtps2ph,
        M::Vcvtss2si | M::Vcvttss2si | M::Vcvtsd2si | M::Vcvttsd2si => cvt_to_gpr,
        M::Vcvtsi2ss | M::Vcvtsi2sd => cvt_from_gpr,
        M::Vcomiss | M::Vucomiss | M::Vcomisd | M::Vucomisd => comis,
        _ if sse_fp::op_of(legacy(m)).is_some() && legacy(m) != m => fp_op,
        _ => return None,
    })
}

/// Stops the machine when the host lacks a feature the instruction is computed with.
fn need(f: host::Feature, insn: &Insn) -> Result<(), Fault> {
    if host::has(f) {
        Ok(())
    } else {
        Err(Fault::unimplemented(format!("{:?} ({}) needs host {f:?}", insn.i.code(), insn.i)))
    }
}

/// How the lanes of an FP instruction map onto host operations.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    /// One host operation per 128-bit lane of the operands.
    Lanes(usize),
    /// A 256-bit source narrowed into an XMM destination (VCVTPD2PS/VCVTPD2DQ/VCVTTPD2DQ ymm): each
    /// source lane gives the 64 low bits of one result half.
    Narrow,
    /// An XMM source widened into a YMM destination (VCVTPS2PD/VCVTDQ2PD ymm): each source half gives
    /// one result lane.
    Widen,
}

/// The VEX forms of the SSE FP instructions, lane by lane.
fn fp_op(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let vm = insn.i.mnemonic();
    let m = legacy(vm);
    let cmp = matches!(m, M::Cmpps | M::Cmppd | M::Cmpss | M::Cmpsd);
    let (f, shape): (sse_fp::host::Op, Shape) = match m {
        M::Cmpps => (host::vcmpps, Shape::None),
        M::Cmppd => (host::vcmppd, Shape::None),
        M::Cmpss => (host::vcmpss, Shape::None),
        M::Cmpsd => (host::vcmpsd, Shape::None),
        _ => sse_fp::op_of(m).ok_or_else(Fault::ud)?,
    };
    if cmp {
        need(host::Feature::Avx, insn)?;
    }
    let d = insn.i.op0_register();
    let (a, b, _) = sources(ctx, insn)?;
    let imm = imm8(insn);
    let src_wide = insn.i.op1_kind() == OpKind::Register && insn.i.op1_register().is_ymm()
        || insn.i.op1_kind() == OpKind::Memory && insn.i.memory_size().size() == 32;
    let form = match m {
        M::Cvtpd2ps | M::Cvtpd2dq | M::Cvttpd2dq if src_wide => Form::Narrow,
        M::Cvtps2pd | M::Cvtdq2pd if d.is_ymm() => Form::Widen,
        _ => Form::Lanes(if wide(insn) { 2 } else { 1 }),
    };
    let ins: [(u128, u128); 2] = match form {
        Form::Lanes(_) => [(a[0], b[0]), (a[1], b[1])],
        Form::Narrow => [(0, b[0]), (0, b[1])],
        Form::Widen => [(0, b[0]), (0, b[0] >> 64)],
    };
    let n = match form {
        Form::Lanes(n) => n,
        _ => 2,
    };
    let himm = match m {
        M::Cmpps | M::Cmppd | M::Cmpss | M::Cmpsd => imm & 31,
        M::Roundps | M::Roundpd | M::Roundss | M::Roundsd => imm & 15,
        M::Dpps => imm | 0x0f,
        M::Dppd => (imm & 0x30) | 0x03,
        _ => imm,
    };
    let guest = ctx.st.fpu.mxcsr;
    let masks = (guest >> 7) & super::sse::MXCSR_FLAGS;
    // A dot product with an exception unmasked runs stage by stage across both lanes (measured: see
    // `dot_product_fault`), so the fault check covers every lane before any lane's result counts.
    if masks != super::sse::MXCSR_FLAGS
        && matches!(m, M::Dpps | M::Dppd)
        && let Some(report) = sse_unbounded::dot_product_fault(m == M::Dppd, &ins[..n], imm, guest)
    {
        ctx.st.fpu.mxcsr |= report;
        return Err(super::sse::simd_fp_fault(ctx));
    }
    let mut r = [0u128; 2];
    let mut raised = 0;
    for l in 0..n {
        let (x, y) = ins[l];
        let (v, mut fl) = f(x, y, himm, host_mxcsr(guest));
        if fl & mx::PE != 0
            && masks & (mx::OE | mx::UE) != mx::OE | mx::UE
            && let Some(pe) = sse_unbounded::precision_flag(m, x, y, guest)
        {
            fl = (fl & !mx::PE) | pe;
        }
        r[l] = v;
        raised |= fl;
    }
    apply_flags(ctx, raised, shape, || {
        let mut out = (0, 0);
        for &(x, y) in ins.iter().take(n) {
            let (v, fl) = f(x, y, himm, host_mxcsr(guest) & !mx::FTZ);
            if out.1 & mx::UE == 0 && sse_fp::has_denormal(v, shape) {
                out.0 = v;
            }
            out.1 |= fl;
            if out.0 == 0 {
                out.0 = v;
            }
        }
        out
    })?;
    for v in r.iter_mut().take(n) {
        match m {
            M::Dpps => {
                for k in 0..4 {
                    if (imm >> k) & 1 == 0 {
                        *v &= !((u32::MAX as u128) << (32 * k));
                    }
                }
            }
            M::Dppd => {
                for k in 0..2 {
                    if (imm >> k) & 1 == 0 {
                        *v &= !((u64::MAX as u128) << (64 * k));
                    }
                }
            }
            _ => {}
        }
    }
    let out: Y = match form {
        Form::Narrow => [(r[0] & LO64) | (r[1] << 64), 0],
        _ => r,
    };
    write_reg(ctx, d, out);
    Ok(())
}

const LO64: u128 = u64::MAX as u128;

/// The element shape of an FMA mnemonic (for the unmasked-underflow check).
fn fma_shape(m: M) -> Shape {
    let s = format!("{m:?}");
    if s.ends_with("ps") {
        Shape::Ps
    } else if s.ends_with("pd") {
        Shape::Pd
    } else if s.ends_with("ss") {
        Shape::Ss
    } else {
        Shape::Sd
    }
}

/// VFMADD*, VFMSUB*, VFNMADD*, VFNMSUB*, VFMADDSUB*, VFMSUBADD* (132/213/231; PS/PD/SS/SD): the
/// host's fused operation of the same form, so rounding, NaN selection and flags are the host's.
fn fma(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    need(host::Feature::Fma, insn)?;
    let m = insn.i.mnemonic();
    let f = host::fma_of(m).ok_or_else(Fault::ud)?;
    let d = insn.i.op0_register();
    let a = read_reg(ctx, d);
    let b = read_src(ctx, insn, 1)?;
    let c = read_src(ctx, insn, 2)?;
    let n = if wide(insn) { 2 } else { 1 };
    let guest = ctx.st.fpu.mxcsr;
    let shape = fma_shape(m);
    let mut r = [0u128; 2];
    let mut raised = 0;
    for l in 0..n {
        let (v, fl) = f(a[l], b[l], c[l], host_mxcsr(guest));
        r[l] = v;
        raised |= fl;
    }
    let masks = (guest >> 7) & super::sse::MXCSR_FLAGS;
    if raised & mx::PE != 0 && masks & (mx::OE | mx::UE) != mx::OE | mx::UE {
        let name = format!("{m:?}").to_ascii_lowercase();
        let mut pe = 0;
        for l in 0..n {
            pe |= avx_unbounded::fma_precision_flag(f, &name, a[l], b[l], c[l], guest).unwrap_or(mx::PE);
        }
        raised = (raised & !mx::PE) | pe;
    }
    apply_flags(ctx, raised, shape, || {
        let mut out = (0, 0);
        for l in 0..n {
            let (v, fl) = f(a[l], b[l], c[l], host_mxcsr(guest) & !mx::FTZ);
            if l == 0 || sse_fp::has_denormal(v, shape) {
                out.0 = v;
            }
            out.1 |= fl;
        }
        out
    })?;
    write_reg(ctx, d, r);
    Ok(())
}

/// VCVTPH2PS: four (xmm) or eight (ymm) halves to singles.
fn cvtph2ps(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    need(host::Feature::F16c, insn)?;
    let b = read_src(ctx, insn, 1)?[0];
    let guest = host_mxcsr(ctx.st.fpu.mxcsr);
    let (lo, f0) = host::vcvtph2ps(b, guest);
    let (hi, f1) = if wide(insn) { host::vcvtph2ps(b >> 64, guest) } else { (0, 0) };
    apply_flags(ctx, f0 | f1, Shape::None, || (0, 0))?;
    write_reg(ctx, insn.i.op0_register(), [lo, hi]);
    Ok(())
}

/// Whether one of the four halves in the low 64 bits of `r` is a denormal.
fn half_denormal(r: u128) -> bool {
    (0..4).any(|k| {
        let h = (r >> (16 * k)) as u16;
        h & 0x7c00 == 0 && h & 0x03ff != 0
    })
}

/// VCVTPS2PH: four (xmm) or eight (ymm) singles to halves in an XMM register or memory, rounded by
/// imm8 (or MXCSR.RC when imm8 bit 2 is set). A tiny exact result also traps when underflow is
/// unmasked, as for the SSE operations.
fn cvtps2ph(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    need(host::Feature::F16c, insn)?;
    let s = read_reg(ctx, insn.i.op1_register());
    let wide_src = insn.i.op1_register().is_ymm();
    let imm = imm8(insn);
    let guest = ctx.st.fpu.mxcsr;
    let (lo, f0) = host::vcvtps2ph(s[0], imm, host_mxcsr(guest));
    let (hi, f1) = if wide_src { host::vcvtps2ph(s[1], imm, host_mxcsr(guest)) } else { (0, 0) };
    let r = (lo & LO64) | ((hi & LO64) << 64);
    let mut raised = f0 | f1;
    if raised & mx::PE != 0 && (guest >> 7) & (mx::OE | mx::UE) != mx::OE | mx::UE {
        let mut pe = avx_unbounded::cvtps2ph_precision_flag(s[0], imm, guest);
        if wide_src {
            pe |= avx_unbounded::cvtps2ph_precision_flag(s[1], imm, guest);
        }
        raised = (raised & !mx::PE) | pe;
    }
    if (guest >> 7) & mx::UE == 0
        && raised & mx::UE == 0
        && half_denormal(lo) | (wide_src && half_denormal(hi))
    {
        raised |= mx::UE;
    }
    apply_flags(ctx, raised, Shape::None, || (0, 0))?;
    match insn.i.op0_kind() {
        OpKind::Register => {
            write_reg(ctx, insn.i.op0_register(), [r, 0]);
            Ok(())
        }
        _ => write_mem(ctx, insn, if wide_src { 16 } else { 8 }, [r, 0]),
    }
}

/// VCVT(T)SS2SI / VCVT(T)SD2SI r32/r64, xmm/m32/m64.
fn cvt_to_gpr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let d = insn.i.op0_register();
    let b = read_src(ctx, insn, 1)?[0];
    let w = d.size() == 8;
    use sse_fp::host as h;
    let f: fn(u128, u32) -> (u64, u32) = match (legacy(insn.i.mnemonic()), w) {
        (M::Cvtss2si, false) => h::cvtss2si32,
        (M::Cvtss2si, true) => h::cvtss2si64,
        (M::Cvttss2si, false) => h::cvttss2si32,
        (M::Cvttss2si, true) => h::cvttss2si64,
        (M::Cvtsd2si, false) => h::cvtsd2si32,
        (M::Cvtsd2si, true) => h::cvtsd2si64,
        (M::Cvttsd2si, false) => h::cvttsd2si32,
        _ => h::cvttsd2si64,
    };
    let (r, raised) = f(b, host_mxcsr(ctx.st.fpu.mxcsr));
    apply_flags(ctx, raised, Shape::None, || (0, 0))?;
    write_reg(ctx, d, [r as u128, 0]);
    Ok(())
}

/// VCVTSI2SS / VCVTSI2SD xmm1, xmm2, r/m32 or r/m64.
fn cvt_from_gpr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let a = read_src(ctx, insn, 1)?[0];
    let g = read_src(ctx, insn, 2)?[0] as u64;
    let w = match insn.i.op2_kind() {
        OpKind::Register => insn.i.op2_register().size() == 8,
        _ => insn.i.memory_size().size() == 8,
    };
    use sse_fp::host as h;
    let f: fn(u128, u64, u32) -> (u128, u32) = match (legacy(insn.i.mnemonic()), w) {
        (M::Cvtsi2ss, false) => h::cvtsi2ss32,
        (M::Cvtsi2ss, true) => h::cvtsi2ss64,
        (M::Cvtsi2sd, false) => h::cvtsi2sd32,
        _ => h::cvtsi2sd64,
    };
    let (r, raised) = f(a, g, host_mxcsr(ctx.st.fpu.mxcsr));
    apply_flags(ctx, raised, Shape::None, || (0, 0))?;
    write_reg(ctx, insn.i.op0_register(), [r, 0]);
    Ok(())
}

/// VCOMISS/VUCOMISS/VCOMISD/VUCOMISD: ZF, PF, CF from the compare; OF, SF, AF cleared.
fn comis(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let a = read_reg(ctx, insn.i.op0_register())[0];
    let b = read_src(ctx, insn, 1)?[0];
    use sse_fp::host as h;
    let f = match legacy(insn.i.mnemonic()) {
        M::Comiss => h::comiss,
        M::Ucomiss => h::ucomiss,
        M::Comisd => h::comisd,
        _ => h::ucomisd,
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
