//! BCD adjustments: DAA, DAS, AAA, AAS, AAM imm8, AAD imm8. All are invalid (#UD) in 64-bit mode.
//!
//! Flags the SDM calls undefined follow what Intel CPUs produce; the rule for each is written next to
//! its computation. The tests check them against the host CPU natively, by running the instructions in
//! the host's 32-bit compatibility-mode code segment.

use super::misc::not_64;
use super::ops::*;
use super::{Handler, Insn};
use crate::fault::Fault;
use crate::mem::Ctx;
use crate::state::{Quirks, flags};
use iced_x86::{Code, Mnemonic};

/// Handlers of this family.
pub fn lookup(code: Code) -> Option<Handler> {
    Some(match code.mnemonic() {
        Mnemonic::Daa => daa,
        Mnemonic::Das => das,
        Mnemonic::Aaa => aaa,
        Mnemonic::Aas => aas,
        Mnemonic::Aam => aam,
        Mnemonic::Aad => aad,
        _ => return None,
    })
}

/// DAA on AL with flags `fl`: (new AL, new flags).
pub fn daa_calc(al: u8, fl: u64, q: Quirks) -> (u8, u64) {
    let cf = fl & flags::CF != 0;
    let af = fl & flags::AF != 0;
    let mut r = al;
    let mut f = 0;
    if al & 0x0f > 9 || af {
        r = r.wrapping_add(6);
        f |= flags::AF;
    }
    if al > 0x99 || cf {
        r = r.wrapping_add(0x60);
        f |= flags::CF;
    }
    // SF, ZF, PF from the result. OF (undefined): Intel clears it; AMD sets it as for the signed
    // overflow of AL + the whole adjustment (0, 6, 0x60 or 0x66) done as one ADD.
    f |= szp(r as u64, 1);
    if q == Quirks::Amd && (!(al ^ r.wrapping_sub(al)) & (al ^ r)) & 0x80 != 0 {
        f |= flags::OF;
    }
    (r, f)
}

/// DAS on AL with flags `fl`: (new AL, new flags).
pub fn das_calc(al: u8, fl: u64, q: Quirks) -> (u8, u64) {
    let cf = fl & flags::CF != 0;
    let af = fl & flags::AF != 0;
    let mut r = al;
    let mut f = 0;
    if al & 0x0f > 9 || af {
        r = r.wrapping_sub(6);
        // A borrow out of this first step sets CF too (AL < 6), as the SDM's pseudocode says.
        f |= flags::AF | if al < 6 { flags::CF } else { 0 };
    }
    if al > 0x99 || cf {
        r = r.wrapping_sub(0x60);
        f |= flags::CF;
    }
    // SF, ZF, PF from the result. OF (undefined): Intel clears it; AMD sets it as for the signed
    // overflow of AL - the whole adjustment done as one SUB.
    f |= szp(r as u64, 1);
    if q == Quirks::Amd && ((al ^ al.wrapping_sub(r)) & (al ^ r)) & 0x80 != 0 {
        f |= flags::OF;
    }
    (r, f)
}

/// AAA (`sub` = false) or AAS on AX with flags `fl`: (new AX, new flags).
pub fn aaa_calc(ax: u16, fl: u64, sub: bool, q: Quirks) -> (u16, u64) {
    let af = fl & flags::AF != 0;
    let al = ax as u8;
    // AAA adds 0x106 to AX (a carry out of AL reaches AH), AAS subtracts 6 from AX and 1 from AH; AL's
    // high nibble is then cleared. SF, ZF, PF (undefined): Intel sets them from the final AL;
    // OF (undefined): cleared.
    // AMD: SF, ZF, PF come from the 16-bit AX +/- 0x106 before AL's high nibble is cleared (from AX
    // itself when no adjustment is made), and OF too, as for that 16-bit ADD/SUB of 0x106.
    if al & 0x0f > 9 || af {
        let r = if sub { ax.wrapping_sub(6).wrapping_sub(0x100) } else { ax.wrapping_add(0x106) };
        let f = if q == Quirks::Amd {
            let op = if sub { flags_sub } else { flags_add };
            op(ax as u64, 0x106, 0, r as u64, 2) & (flags::SF | flags::ZF | flags::PF | flags::OF)
        } else {
            szp(r as u64 & 0x0f, 1)
        };
        (r & 0xff0f, flags::AF | flags::CF | f)
    } else {
        let r = ax & 0xff0f;
        (r, if q == Quirks::Amd { szp(ax as u64, 2) } else { szp(r as u64 & 0xff, 1) })
    }
}

/// AAM imm8 on AL (base `b` != 0): (new AX, new flags).
pub fn aam_calc(al: u8, b: u8) -> (u16, u64) {
    let q = al / b;
    let r = al % b;
    let ax = (q as u16) << 8 | r as u16;
    // SF, ZF, PF from AL; OF, AF, CF (undefined): the host clears them.
    (ax, szp(r as u64, 1))
}

/// AAD imm8 on AX: (new AX, new flags).
pub fn aad_calc(ax: u16, b: u8) -> (u16, u64) {
    // The host computes AL + (AH * imm8 mod 256) as an 8-bit ADD and leaves that addition's flags:
    // SF, ZF, PF from AL, and the undefined OF, AF, CF from the addition.
    let (lo, t) = (ax as u8, ((ax >> 8) as u8).wrapping_mul(b));
    let al = lo.wrapping_add(t);
    (al as u16, flags_add(lo as u64, t as u64, 0, al as u64, 1))
}

fn daa(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    not_64(ctx)?;
    let (r, f) = daa_calc(ctx.st.gpr[0] as u8, ctx.st.rflags, ctx.st.quirks);
    ctx.st.set_reg(0, 1, r as u64);
    ctx.set_arith_flags(f);
    Ok(())
}

fn das(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    not_64(ctx)?;
    let (r, f) = das_calc(ctx.st.gpr[0] as u8, ctx.st.rflags, ctx.st.quirks);
    ctx.st.set_reg(0, 1, r as u64);
    ctx.set_arith_flags(f);
    Ok(())
}

fn aaa(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    not_64(ctx)?;
    let (r, f) = aaa_calc(ctx.st.gpr[0] as u16, ctx.st.rflags, false, ctx.st.quirks);
    ctx.st.set_reg(0, 2, r as u64);
    ctx.set_arith_flags(f);
    Ok(())
}

fn aas(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    not_64(ctx)?;
    let (r, f) = aaa_calc(ctx.st.gpr[0] as u16, ctx.st.rflags, true, ctx.st.quirks);
    ctx.st.set_reg(0, 2, r as u64);
    ctx.set_arith_flags(f);
    Ok(())
}

fn aam(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    not_64(ctx)?;
    let b = insn.i.immediate8();
    if b == 0 {
        return Err(Fault::de());
    }
    let (r, f) = aam_calc(ctx.st.gpr[0] as u8, b);
    ctx.st.set_reg(0, 2, r as u64);
    ctx.set_arith_flags(f);
    Ok(())
}

fn aad(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    not_64(ctx)?;
    let (r, f) = aad_calc(ctx.st.gpr[0] as u16, insn.i.immediate8());
    ctx.st.set_reg(0, 2, r as u64);
    ctx.set_arith_flags(f);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::misc::testkit::*;
    use super::*;
    use crate::testutil::TestMode;

    /// The undefined flags of each vendor, as measured on each (the native test checks the host's).
    #[test]
    fn undefined_flags_by_vendor() {
        use flags::{AF, CF, OF, PF, SF, ZF};
        // DAA of 0x1A with CF: 0x1A + 0x66 = 0x80 overflows as a signed ADD.
        assert_eq!(daa_calc(0x1a, CF, Quirks::Intel), (0x80, SF | AF | CF));
        assert_eq!(daa_calc(0x1a, CF, Quirks::Amd), (0x80, OF | SF | AF | CF));
        // DAS of 0x80 with AF: 0x80 - 6 = 0x7A overflows.
        assert_eq!(das_calc(0x80, AF, Quirks::Intel), (0x7a, AF));
        assert_eq!(das_calc(0x80, AF, Quirks::Amd), (0x7a, OF | AF));
        // AAA of AX = 0x7EFA: Intel's flags from the final AL (0x00), AMD's from AX + 0x106 = 0x8000.
        assert_eq!(aaa_calc(0x7efa, 0, false, Quirks::Intel), (0x8000, ZF | PF | AF | CF));
        assert_eq!(aaa_calc(0x7efa, 0, false, Quirks::Amd), (0x8000, OF | SF | PF | AF | CF));
        // AAS of AX = 0 with AF: AX - 0x106 = 0xFEFA; AL ends as 0x0A.
        assert_eq!(aaa_calc(0, AF, true, Quirks::Intel), (0xfe0a, PF | AF | CF));
        assert_eq!(aaa_calc(0, AF, true, Quirks::Amd), (0xfe0a, SF | PF | AF | CF));
        // No adjustment: Intel's flags from AL AND 0x0F, AMD's from AX.
        assert_eq!(aaa_calc(0x0083, 0, false, Quirks::Intel), (0x0003, PF));
        assert_eq!(aaa_calc(0x0083, 0, false, Quirks::Amd), (0x0003, 0));
    }

    /// Every AL (and AH for AAA/AAS/AAD) with every combination of CF and AF, against the host in
    /// 32-bit compatibility mode.
    #[test]
    fn native_bcd_exhaustive() {
        let mut o = Oracle::new();
        let mut e32 = Emu::new(TestMode::Prot32);
        let mut rng = Rng(41);
        let ops: [&[u8]; 8] =
            [&[0x27], &[0x2f], &[0x37], &[0x3f], &[0xd4, 0x0a], &[0xd5, 0x0a], &[0xd4, 0x07], &[0xd5, 0x13]];
        for code in ops {
            for ax in 0..=0xffffu32 {
                // AH only matters for AAA/AAS/AAM/AAD; sample it for DAA/DAS.
                if code.len() == 1 && code[0] & 0xf0 == 0x20 && ax >> 8 != 0 && ax >> 8 != 0x5a {
                    continue;
                }
                let fl = rng.flags();
                for base_fl in [
                    0,
                    crate::state::flags::CF,
                    crate::state::flags::AF,
                    crate::state::flags::CF | crate::state::flags::AF,
                ] {
                    let fl = (fl & !(crate::state::flags::CF | crate::state::flags::AF)) | base_fl;
                    let mut g = [0u32; 8];
                    for v in g.iter_mut() {
                        *v = rng.next() as u32;
                    }
                    g[0] = (g[0] & 0xffff_0000) | ax;
                    o.compare32(&mut e32, code, g, fl, None);
                }
            }
        }
        o.finish("bcd");
    }

    #[test]
    fn faults_and_modes() {
        use crate::fault::Fault;
        // (mode, bytes, expected)
        let table: &[(TestMode, &[u8], Result<(), Fault>)] = &[
            (TestMode::Long64, &[0x27], Err(Fault::ud())),
            (TestMode::Long64, &[0x2f], Err(Fault::ud())),
            (TestMode::Long64, &[0x37], Err(Fault::ud())),
            (TestMode::Long64, &[0x3f], Err(Fault::ud())),
            (TestMode::Long64, &[0xd4, 0x0a], Err(Fault::ud())),
            (TestMode::Long64, &[0xd5, 0x0a], Err(Fault::ud())),
            (TestMode::Prot32, &[0xd4, 0x00], Err(Fault::de())),
            (TestMode::Real, &[0xd4, 0x00], Err(Fault::de())),
            (TestMode::Real, &[0xd5, 0x00], Ok(())),
            (TestMode::Real, &[0x27], Ok(())),
        ];
        for (mode, code, want) in table {
            let mut e = Emu::new(*mode);
            assert_eq!(&e.exec(code), want, "{code:02x?} in {mode:?}");
        }
        // Real-mode spot values: 0x15 + 0x27 = 0x3c, DAA -> 0x42; AAM: 0x3f -> 06 03; AAD: 06 03 -> 0x3f.
        let mut e = Emu::new(TestMode::Real);
        e.st.gpr[0] = 0x3c;
        e.exec(&[0x27]).unwrap();
        assert_eq!(e.st.gpr[0], 0x42);
        e.st.gpr[0] = 0x3f;
        e.exec(&[0xd4, 0x0a]).unwrap();
        assert_eq!(e.st.gpr[0], 0x0603);
        e.exec(&[0xd5, 0x0a]).unwrap();
        assert_eq!(e.st.gpr[0], 0x3f);
    }
}
