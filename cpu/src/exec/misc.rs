//! Miscellaneous integer instructions: CBW/CWDE/CDQE, CWD/CDQ/CQO, LAHF/SAHF, SALC, XLAT, BOUND,
//! RDRAND/RDSEED, and the hint no-ops (ENDBR32/64, PREFETCHh/PREFETCHW, reserved NOPs).

use super::ops::*;
use super::{Handler, Insn};
use crate::fault::{Fault, vec};
use crate::mem::Ctx;
use crate::regs::{sext, size_mask};
use crate::state::{Mode, Quirks, flags};
use iced_x86::{Code, EncodingKind, Mnemonic, OpKind};

#[cfg(test)]
pub(crate) mod testkit;

/// Handlers of this family.
pub fn lookup(code: Code) -> Option<Handler> {
    if code.op_code().encoding() != EncodingKind::Legacy {
        return None;
    }
    Some(match code.mnemonic() {
        Mnemonic::Cbw | Mnemonic::Cwde | Mnemonic::Cdqe => cbw,
        Mnemonic::Cwd | Mnemonic::Cdq | Mnemonic::Cqo => cwd,
        Mnemonic::Lahf => lahf,
        Mnemonic::Sahf => sahf,
        Mnemonic::Salc => salc,
        Mnemonic::Xlatb => xlat,
        Mnemonic::Bound => bound,
        Mnemonic::Rdrand => rdrand,
        Mnemonic::Rdseed => rdrand,
        Mnemonic::Endbr32
        | Mnemonic::Endbr64
        | Mnemonic::Prefetchnta
        | Mnemonic::Prefetcht0
        | Mnemonic::Prefetcht1
        | Mnemonic::Prefetcht2
        | Mnemonic::Prefetchw
        | Mnemonic::Prefetch
        | Mnemonic::Reservednop => hint_nop,
        Mnemonic::Rdfsbase | Mnemonic::Rdgsbase | Mnemonic::Wrfsbase | Mnemonic::Wrgsbase => fsgsbase,
        _ => return None,
    })
}

/// RDFSBASE/RDGSBASE/WRFSBASE/WRGSBASE: 64-bit mode with CR4.FSGSBASE only (#UD otherwise); a
/// non-canonical write is #GP(0); the 32-bit forms zero-extend.
fn fsgsbase(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if ctx.st.mode() != Mode::Long64 || ctx.st.cr4 & crate::state::cr4::FSGSBASE == 0 {
        return Err(Fault::ud());
    }
    let seg = match insn.i.mnemonic() {
        Mnemonic::Rdfsbase | Mnemonic::Wrfsbase => crate::state::Seg::Fs,
        _ => crate::state::Seg::Gs,
    };
    let g = crate::exec::ops::reg_op(insn, 0)?;
    match insn.i.mnemonic() {
        Mnemonic::Rdfsbase | Mnemonic::Rdgsbase => {
            let v = ctx.st.sreg(seg).base;
            ctx.st.write_gpr(g, v & crate::regs::size_mask(g.size));
        }
        _ => {
            let v = ctx.st.read_gpr(g);
            if !crate::mem::is_canonical(v) {
                return Err(Fault::gp0());
            }
            ctx.st.sreg_mut(seg).base = v;
        }
    }
    Ok(())
}

/// #UD in 64-bit mode (for the legacy-only opcodes; the decoder already rejects most of them there).
#[inline]
pub(crate) fn not_64(ctx: &Ctx<'_>) -> Result<(), Fault> {
    if ctx.st.mode() == Mode::Long64 { Err(Fault::ud()) } else { Ok(()) }
}

/// CBW/CWDE/CDQE: sign-extend the low half of the accumulator into all of it.
fn cbw(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size_of_acc(insn);
    let half = ctx.st.reg(0, size / 2);
    ctx.st.set_reg(0, size, sext(half, size / 2) & size_mask(size));
    Ok(())
}

/// CWD/CDQ/CQO: rDX = the sign of rAX, repeated.
fn cwd(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size_of_acc(insn);
    let a = ctx.st.reg(0, size);
    let v = if sext(a, size) as i64 >> 63 != 0 { size_mask(size) } else { 0 };
    ctx.st.set_reg(2, size, v);
    Ok(())
}

/// The operand size of CBW/CWD-style instructions (iced reports their implicit operands only through
/// the code).
#[inline]
fn op_size_of_acc(insn: &Insn) -> u32 {
    match insn.i.code() {
        Code::Cbw | Code::Cwd => 2,
        Code::Cwde | Code::Cdq => 4,
        _ => 8,
    }
}

/// LAHF: AH = SF:ZF:0:AF:0:PF:1:CF.
fn lahf(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    let v = (ctx.st.rflags & (flags::SF | flags::ZF | flags::AF | flags::PF | flags::CF)) | flags::FIXED1;
    ctx.st.gpr[0] = (ctx.st.gpr[0] & !0xff00) | (v & 0xff) << 8;
    Ok(())
}

/// SAHF: SF, ZF, AF, PF, CF from AH (OF unchanged).
fn sahf(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    let ah = (ctx.st.gpr[0] >> 8) & 0xff;
    ctx.set_flags_masked(ah, flags::SF | flags::ZF | flags::AF | flags::PF | flags::CF);
    Ok(())
}

/// SALC (undocumented D6): AL = CF ? 0xFF : 0; flags unchanged. Invalid in 64-bit mode.
fn salc(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    not_64(ctx)?;
    let v = if ctx.flag(flags::CF) { 0xff } else { 0 };
    ctx.st.gpr[0] = (ctx.st.gpr[0] & !0xff) | v;
    Ok(())
}

/// XLAT: AL = [seg:rBX + AL]. iced describes the operand as memory with base rBX and index AL, so the
/// generic effective address applies (including the segment override and address size).
fn xlat(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let v = read_op(ctx, insn, 0)?;
    ctx.st.gpr[0] = (ctx.st.gpr[0] & !0xff) | (v & 0xff);
    Ok(())
}

/// BOUND r, m: #BR unless lower <= r <= upper (signed; bounds at m and m + size). Invalid in 64-bit mode.
fn bound(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    not_64(ctx)?;
    if insn.i.op1_kind() != OpKind::Memory {
        return Err(Fault::ud());
    }
    let size = op_size(insn, 0);
    let idx = sext(read_op(ctx, insn, 0)?, size) as i64;
    let off = ea(ctx, insn);
    let seg = mem_seg(insn);
    // Intel reads and checks the lower bound before it reads the upper one: an index below the lower
    // bound raises #BR even when the upper bound would fault (measured on an Intel host). AMD reads
    // both bounds first: the fault of the upper one wins (measured on an AMD host).
    let lo = sext(ctx.read_mem(seg, off, size)?, size) as i64;
    let hi_off = off.wrapping_add(size as u64) & size_mask(insn.asize as u32);
    let amd = ctx.st.quirks == Quirks::Amd;
    let hi = if amd { Some(sext(ctx.read_mem(seg, hi_off, size)?, size) as i64) } else { None };
    if idx < lo {
        return Err(Fault::Exc { vector: vec::BR, error: None });
    }
    let hi = match hi {
        Some(h) => h,
        None => sext(ctx.read_mem(seg, hi_off, size)?, size) as i64,
    };
    if idx > hi {
        return Err(Fault::Exc { vector: vec::BR, error: None });
    }
    Ok(())
}

/// The deterministic RDRAND/RDSEED generator: SplitMix64 over `CpuState::rng_state` (the state advances
/// by the golden-ratio increment 0x9E3779B97F4A7C15; the output is the state mixed by the SplitMix64
/// finaliser). Every call succeeds.
#[inline]
pub fn rng_next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// RDRAND/RDSEED r: the next generator value (low bits for 16/32-bit); CF = 1, OF = SF = ZF = AF = PF = 0.
fn rdrand(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if insn.i.op0_kind() != OpKind::Register {
        return Err(Fault::ud());
    }
    let size = op_size(insn, 0);
    let v = rng_next(&mut ctx.st.rng_state);
    write_op(ctx, insn, 0, v & size_mask(size))?;
    ctx.set_arith_flags(flags::CF);
    Ok(())
}

/// Hints that do nothing architecturally (no memory access, no fault).
fn hint_nop(_: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::rng_next;
    use super::testkit::*;
    use crate::fault::{Fault, vec};
    use crate::state::{Quirks, Seg, flags};
    use crate::testutil::TestMode;
    use iced_x86::Mnemonic as M;

    #[test]
    fn native_misc() {
        let mut o = Oracle::new();
        let mut rng = Rng(31);
        let codes = codes_of(&[M::Cbw, M::Cwde, M::Cdqe, M::Cwd, M::Cdq, M::Cqo, M::Lahf, M::Sahf], false);
        sweep(&mut o, &mut rng, &codes, 2000, &[], |c, _, f| panic!("{c:02x?}: {f:?}"));
        o.finish("cbw/cwd/lahf/sahf");
    }

    /// XLAT in 64-bit mode against the host: AL indexes the table at [rbx].
    #[test]
    fn native_xlat() {
        let mut o = Oracle::new();
        let mut rng = Rng(32);
        let mut table = [0u8; 256];
        for _ in 0..2000 {
            for b in table.iter_mut() {
                *b = rng.next() as u8;
            }
            let g = random_gpr(&mut rng);
            let fl = rng.flags();
            o.compare(&[0xd7], g, fl, Some(MemArg { base: 3, init: &table, at: 0 }));
        }
        o.finish("xlat");
    }

    /// SALC and BOUND (legacy-only) against the host in 32-bit compatibility mode.
    #[test]
    fn native_salc_bound() {
        let mut o = Oracle::new();
        let mut e32 = Emu::new(TestMode::Prot32);
        let mut rng = Rng(33);
        for _ in 0..2000 {
            let g =
                [rng.next() as u32, 0, 0, 0, 0, 0, 0, 0].map(|v| if v == 0 { rng.next() as u32 } else { v });
            o.compare32(&mut e32, &[0xd6], g, rng.flags(), None);
        }
        // bound eax, [esi] / bound ax, [esi]: only in-range cases run natively (#BR would kill the test).
        let mut br = 0;
        for _ in 0..4000 {
            let wide = rng.below(2) == 0;
            let code: &[u8] = if wide { &[0x62, 0x06] } else { &[0x66, 0x62, 0x06] };
            let mut mem = [0u8; 16];
            let (lo, hi) = (rng.value() as i64 % 300, rng.value() as i64 % 300);
            let idx = rng.value() as i64 % 400;
            if wide {
                mem[..4].copy_from_slice(&(lo as i32).to_le_bytes());
                mem[4..8].copy_from_slice(&(hi as i32).to_le_bytes());
            } else {
                mem[..2].copy_from_slice(&(lo as i16).to_le_bytes());
                mem[2..4].copy_from_slice(&(hi as i16).to_le_bytes());
            }
            let g = [idx as u32, 1, 2, 3, 0, 5, 0, 7];
            match o.compare32(&mut e32, code, g, rng.flags(), Some(MemArg { base: 6, init: &mem, at: 0 })) {
                Outcome::Same => assert!(lo <= idx && idx <= hi || !wide),
                Outcome::Fault(f) => {
                    assert_eq!(f, Fault::Exc { vector: vec::BR, error: None });
                    br += 1;
                }
            }
        }
        assert!(br > 100);
        o.finish("salc/bound");
    }

    fn run1(mode: TestMode, code: &[u8], setup: impl FnOnce(&mut Emu)) -> (Emu, Result<(), Fault>) {
        let mut e = Emu::new(mode);
        setup(&mut e);
        let r = e.exec(code);
        (e, r)
    }

    /// BOUND with the index below the lower bound and the upper bound beyond the DS limit: Intel
    /// checks the lower bound before reading the upper one (#BR), AMD reads both first (#GP).
    #[test]
    fn bound_order_by_vendor() {
        for (q, want) in [(Quirks::Intel, vec::BR), (Quirks::Amd, vec::GP)] {
            let (_, r) = run1(TestMode::Prot32, &[0x62, 0x06], |e| {
                e.st.quirks = q;
                e.st.sreg_mut(Seg::Ds).limit = 0xfff;
                e.st.gpr[6] = 0xffc;
                e.st.gpr[0] = 3;
                e.bus.ram[0xffc..0x1000].copy_from_slice(&10u32.to_le_bytes());
            });
            match r {
                Err(Fault::Exc { vector, .. }) => assert_eq!(vector, want, "{q:?}"),
                r => panic!("{q:?}: {r:?}"),
            }
        }
    }

    /// Legacy-only opcodes in 64-bit mode, and the other faults of this family.
    #[test]
    fn faults_and_modes() {
        let ud = Err(Fault::ud());
        // (mode, bytes, expected)
        let table: &[(TestMode, &[u8], Result<(), Fault>)] = &[
            (TestMode::Long64, &[0xd6], ud.clone()),               // salc
            (TestMode::Long64, &[0x62, 0x06], ud.clone()),         // bound (EVEX prefix in 64-bit mode)
            (TestMode::Prot32, &[0xd6], Ok(())),                   // salc
            (TestMode::Real, &[0xd6], Ok(())),                     // salc
            (TestMode::Long64, &[0x9f], Ok(())),                   // lahf (LAHF_LM advertised)
            (TestMode::Long64, &[0x9e], Ok(())),                   // sahf
            (TestMode::Long64, &[0x48, 0x0f, 0xc7, 0xf0], Ok(())), // rdrand rax
            (TestMode::Long64, &[0x0f, 0xc7, 0xf8], Ok(())),       // rdseed eax
            (TestMode::Real, &[0x66, 0x98], Ok(())),               // cwde
            (TestMode::Long64, &[0xf3, 0x0f, 0x1e, 0xfa], Ok(())), // endbr64
            (TestMode::Long64, &[0x0f, 0x18, 0x0e], Ok(())),       // prefetcht0 [rsi]
        ];
        for (k, (mode, code, want)) in table.iter().enumerate() {
            let (_, r) = run1(*mode, code, |_| {});
            assert_eq!(&r, want, "case {k}: {code:02x?} in {mode:?}");
        }
        // BOUND in range / below / above, 16-bit real mode.
        for (idx, want) in [(5u64, true), (0xfff0, false), (0x20, false), (0x10, true)] {
            let (_, r) = run1(TestMode::Real, &[0x62, 0x06, 0x00, 0x01], |e| {
                e.bus.ram[0x100..0x104].copy_from_slice(&[0xfe, 0xff, 0x10, 0x00]); // -2 ..= 16
                e.st.gpr[0] = idx;
            });
            let br = Err(Fault::Exc { vector: vec::BR, error: None });
            assert_eq!(r, if want { Ok(()) } else { br }, "bound {idx:#x}");
        }
    }

    #[test]
    fn rdrand_is_deterministic_splitmix() {
        let (a, ra) = run1(TestMode::Long64, &[0x48, 0x0f, 0xc7, 0xf0], |e| e.st.rflags |= flags::ARITH);
        assert_eq!(ra, Ok(()));
        let mut s = crate::state::CpuState::default().rng_state;
        let want = rng_next(&mut s);
        assert_eq!(a.st.gpr[0], want);
        assert_eq!(a.st.rng_state, s);
        assert_eq!(a.st.rflags & flags::ARITH, flags::CF);
        // 16-bit form: low bits of the next value, upper register bits kept.
        let (b, _) = run1(TestMode::Long64, &[0x66, 0x0f, 0xc7, 0xfb], |e| {
            e.st.gpr[3] = 0x1111_2222_3333_4444;
            e.st.rng_state = 7;
        });
        let mut s = 7;
        assert_eq!(b.st.gpr[3], 0x1111_2222_3333_0000 | (rng_next(&mut s) & 0xffff));
        // SplitMix64's published first output for seed 0.
        let mut z = 0;
        assert_eq!(rng_next(&mut z), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn xlat_real_mode_with_segment_override() {
        // es: xlat in real mode: AL = [ES:BX + AL].
        let (e, r) = run1(TestMode::Real, &[0x26, 0xd7], |e| {
            e.st.seg[crate::state::Seg::Es as usize].base = 0x2000;
            e.st.gpr[3] = 0x10;
            e.st.gpr[0] = 0xaa05;
            e.bus.ram[0x2015] = 0x77;
        });
        assert_eq!(r, Ok(()));
        assert_eq!(e.st.gpr[0], 0xaa77);
    }
}
