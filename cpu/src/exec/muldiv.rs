//! Multiply and divide: MUL, IMUL (one, two and three operands), DIV, IDIV.
//!
//! CF and OF after a multiply are architectural; SF, ZF, AF and PF are undefined and follow what Intel
//! or AMD CPUs produce, by [`Quirks`] (rules next to the code, checked against the host by the
//! native-oracle tests). Divides raise #DE on a zero divisor and on a quotient that does not fit
//! (including INT_MIN / -1); all their flags are undefined, and follow the vendor too.

use super::ops::*;
use super::{Handler, Insn};
use crate::fault::Fault;
use crate::mem::Ctx;
use crate::regs::{sext, size_mask};
use crate::state::{Quirks, flags};
use iced_x86::{Code, EncodingKind, Mnemonic};

/// Handlers of this family.
pub fn lookup(code: Code) -> Option<Handler> {
    if code.op_code().encoding() != EncodingKind::Legacy {
        return None;
    }
    Some(match code.mnemonic() {
        Mnemonic::Mul => mul,
        Mnemonic::Imul => match code.op_code().op_count() {
            1 => imul1,
            _ => imul_n,
        },
        Mnemonic::Div => div,
        Mnemonic::Idiv => idiv,
        _ => return None,
    })
}

/// Sets the flags after a multiply whose low half (at `size` bytes) is `lo` and whose result did
/// (`ovf`) or did not fit in it. CF = OF = `ovf`. The undefined ones: Intel computes SF = MSB(lo),
/// ZF = 0 always, AF = 0, PF = parity of the low byte of `lo`; AMD leaves SF, ZF, AF, PF unchanged.
#[inline]
fn set_mul_flags(ctx: &mut Ctx<'_>, lo: u64, ovf: bool, size: u32) {
    ctx.st.rflags = mul_flags(ctx.st.rflags, lo, ovf, size, ctx.st.quirks);
}

/// RFLAGS `fl` after a multiply (see `set_mul_flags`); the JIT's inlined IMUL calls it too.
#[inline]
pub fn mul_flags(fl: u64, lo: u64, ovf: bool, size: u32, quirks: Quirks) -> u64 {
    let cf_of = if ovf { flags::CF | flags::OF } else { 0 };
    if quirks == Quirks::Amd {
        (fl & !(flags::CF | flags::OF)) | cf_of
    } else {
        (fl & !flags::ARITH) | (((szp(lo, size) & !flags::ZF) | cf_of) & flags::ARITH)
    }
}

/// Reads the accumulator pair (AX, DX:AX, EDX:EAX or RDX:RAX) for a `size`-byte divide as a u128.
#[inline]
fn acc_pair(ctx: &Ctx<'_>, size: u32) -> u128 {
    if size == 1 {
        ctx.st.reg(0, 2) as u128
    } else {
        ((ctx.st.reg(2, size) as u128) << (size * 8)) | ctx.st.reg(0, size) as u128
    }
}

/// Writes a double-width result (or quotient `lo` and remainder `hi`): AH:AL for bytes, else rDX:rAX.
#[inline]
fn set_pair(ctx: &mut Ctx<'_>, size: u32, lo: u64, hi: u64) {
    if size == 1 {
        ctx.st.set_reg(0, 2, (hi & 0xff) << 8 | (lo & 0xff));
    } else {
        ctx.st.set_reg(0, size, lo);
        ctx.st.set_reg(2, size, hi);
    }
}

fn mul(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let m = size_mask(size);
    let b = read_op(ctx, insn, 0)? & m;
    let a = ctx.st.reg(0, size);
    let p = a as u128 * b as u128;
    let lo = p as u64 & m;
    let hi = (p >> (size * 8)) as u64 & m;
    set_pair(ctx, size, lo, hi);
    set_mul_flags(ctx, lo, hi != 0, size);
    Ok(())
}

/// Signed `size`-byte product of `a` and `b`: (low half, high half, overflowed).
#[inline]
pub fn imul_parts(a: u64, b: u64, size: u32) -> (u64, u64, bool) {
    let m = size_mask(size);
    let p = sext(a, size) as i64 as i128 * sext(b, size) as i64 as i128;
    let lo = p as u64 & m;
    let hi = (p >> (size * 8)) as u64 & m;
    // Overflow: the product differs from the sign extension of its low half.
    let ovf = p != sext(lo, size) as i64 as i128;
    (lo, hi, ovf)
}

fn imul1(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let b = read_op(ctx, insn, 0)?;
    let a = ctx.st.reg(0, size);
    let (lo, hi, ovf) = imul_parts(a, b, size);
    set_pair(ctx, size, lo, hi);
    set_mul_flags(ctx, lo, ovf, size);
    Ok(())
}

/// IMUL r, r/m and IMUL r, r/m, imm: the product of the last two operands, truncated.
fn imul_n(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let n = insn.i.op_count();
    let a = read_op(ctx, insn, n - 2)?;
    let b = read_op(ctx, insn, n - 1)?;
    let (lo, _, ovf) = imul_parts(a, b, size);
    write_op(ctx, insn, 0, lo)?;
    set_mul_flags(ctx, lo, ovf, size);
    Ok(())
}

fn div(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let m = size_mask(size);
    let d = read_op(ctx, insn, 0)? & m;
    if d == 0 {
        return Err(Fault::de());
    }
    let n = acc_pair(ctx, size);
    let q = n / d as u128;
    let r = n % d as u128;
    if q > m as u128 {
        return Err(Fault::de());
    }
    set_pair(ctx, size, q as u64, r as u64);
    div_flags(ctx);
    Ok(())
}

fn idiv(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let m = size_mask(size);
    let d = sext(read_op(ctx, insn, 0)? & m, size) as i64 as i128;
    if d == 0 {
        return Err(Fault::de());
    }
    // The dividend is twice the operand width, sign-extended from its top bit.
    let raw = acc_pair(ctx, size);
    let bits = size * 16;
    let n = if bits == 128 { raw as i128 } else { ((raw << (128 - bits)) as i128) >> (128 - bits) };
    let (Some(q), Some(r)) = (n.checked_div(d), n.checked_rem(d)) else {
        return Err(Fault::de());
    };
    let half = 1i128 << (size * 8 - 1);
    if q < -half || q >= half {
        return Err(Fault::de());
    }
    set_pair(ctx, size, q as u64 & m, r as u64 & m);
    div_flags(ctx);
    Ok(())
}

/// All six flags are undefined after a divide that completes: Intel leaves them unchanged; AMD leaves
/// OF and CF, clears SF, ZF, PF and sets AF.
#[inline]
fn div_flags(ctx: &mut Ctx<'_>) {
    if ctx.st.quirks == Quirks::Amd {
        ctx.set_flags_masked(flags::AF, flags::SF | flags::ZF | flags::AF | flags::PF);
    }
}

#[cfg(test)]
mod tests {
    use super::super::misc::testkit::*;
    use crate::fault::Fault;
    use crate::regs::{sext, size_mask};
    use iced_x86::Mnemonic as M;

    /// The undefined flags of each vendor, as measured on each (the native tests check the host's).
    #[test]
    fn undefined_flags_by_vendor() {
        use crate::state::{Quirks, flags::*};
        use crate::testutil::TestMode;
        let run = |q: Quirks, code: &[u8]| {
            let mut e = Emu::new(TestMode::Long64);
            e.st.quirks = q;
            e.st.gpr[0] = 0x40;
            e.st.gpr[1] = 3;
            e.st.rflags = (e.st.rflags & !ARITH) | ZF | SF | CF;
            e.exec(code).unwrap();
            (e.st.gpr[0] & 0xffff, e.st.rflags & ARITH)
        };
        // mul cl: 0x40 * 3 = 0xC0 fits in AL.
        assert_eq!(run(Quirks::Intel, &[0xf6, 0xe1]), (0xc0, SF | PF));
        assert_eq!(run(Quirks::Amd, &[0xf6, 0xe1]), (0xc0, ZF | SF));
        // div cl: 0x40 / 3 = 21 rest 1.
        assert_eq!(run(Quirks::Intel, &[0xf6, 0xf1]), (0x0115, ZF | SF | CF));
        assert_eq!(run(Quirks::Amd, &[0xf6, 0xf1]), (0x0115, AF | CF));
    }

    #[test]
    fn native_multiplies() {
        let mut o = Oracle::new();
        let mut rng = Rng(11);
        let codes = codes_of(&[M::Mul, M::Imul], false);
        let imms: Vec<u64> = [0u64, 1, 2, 3, 0x7f, 0x80, 0xff, 0xfe, 0x40, 0x10].to_vec();
        sweep(&mut o, &mut rng, &codes, 3000, &imms, |c, _, f| panic!("{c:02x?}: {f:?}"));
        o.finish("mul/imul");
    }

    #[test]
    fn native_divides() {
        let mut o = Oracle::new();
        let mut rng = Rng(12);
        let codes = codes_of(&[M::Div, M::Idiv], false);
        let mut faults = 0u64;
        for &c in &codes {
            let signed = c.mnemonic() == M::Idiv;
            let mut ran = 0;
            let mut tries = 0;
            while ran < 4000 && tries < 40000 {
                tries += 1;
                let Some(code) = gen_reg_form(c, &mut rng, None) else { break };
                let mut g = random_gpr(&mut rng);
                // Make many dividends small enough to divide without overflow.
                if rng.below(2) == 0 {
                    g[2] = if signed && rng.below(2) == 0 { u64::MAX } else { 0 };
                    if rng.below(2) == 0 {
                        g[0] = sext(g[0] & 0xff, 1);
                    }
                }
                let fl = rng.flags();
                match o.compare(&code, g, fl, None) {
                    Outcome::Same => ran += 1,
                    Outcome::Fault(f) => {
                        assert_eq!(f, Fault::de(), "{code:02x?}");
                        faults += 1;
                        // Check independently that this divide must fault.
                        let i =
                            iced_x86::Decoder::with_ip(64, &code, 0, iced_x86::DecoderOptions::NONE).decode();
                        let r = crate::regs::gpr(i.op0_register()).expect("register form");
                        let d = (g[r.index] >> r.shift) & size_mask(r.size);
                        let (hi, lo) =
                            if r.size == 1 { ((g[0] >> 8) & 0xff, g[0] & 0xff) } else { (g[2], g[0]) };
                        assert!(reference_div(signed, r.size, hi, lo, d).is_none(), "{i}: {g:x?}");
                    }
                }
            }
            assert!(ran > 100, "{c:?}");
        }
        assert!(faults > 0);
        o.finish("div/idiv");
    }

    #[test]
    fn native_memory_forms() {
        let mut o = Oracle::new();
        let mut rng = Rng(13);
        let codes = codes_of(&[M::Mul, M::Imul], false);
        sweep_mem(&mut o, &mut rng, &codes, 500, |_, _, _, _| {});
        // Divides with a nonzero divisor and a dividend that cannot overflow: rDX = 0, AX < 256.
        let codes = codes_of(&[M::Div, M::Idiv], false);
        sweep_mem(&mut o, &mut rng, &codes, 500, |_, _, g, mem| {
            g[2] = 0;
            g[0] &= 0x7f;
            mem[128] |= 1;
            mem[128 + 1..128 + 8].fill(0);
        });
        o.finish("mul/div, memory forms");
    }

    /// Reference divide for checking #DE independently: `Some((q, r))` or `None` for #DE.
    fn reference_div(signed: bool, size: u32, hi: u64, lo: u64, d: u64) -> Option<(u64, u64)> {
        let m = size_mask(size);
        let bits = size * 8;
        if signed {
            let d = sext(d & m, size) as i64 as i128;
            let n = ((sext(hi & m, size) as i64 as i128) << bits) | (lo & m) as i128;
            if d == 0 {
                return None;
            }
            let q = n.checked_div(d)?;
            let r = n % d;
            let lim = 1i128 << (bits - 1);
            if q < -lim || q >= lim {
                return None;
            }
            Some((q as u64 & m, r as u64 & m))
        } else {
            let d = (d & m) as u128;
            let n = (((hi & m) as u128) << bits) | (lo & m) as u128;
            if d == 0 {
                return None;
            }
            let q = n / d;
            if q > m as u128 {
                return None;
            }
            Some((q as u64, (n % d) as u64))
        }
    }

    #[test]
    fn divide_faults() {
        use crate::testutil::TestMode;
        use iced_x86::code_asm::*;
        // (signed, size, hi, lo, divisor)
        let table: &[(bool, u32, u64, u64, u64)] = &[
            (false, 4, 0, 5, 0),
            (false, 4, 1, 0, 1),
            (false, 4, 0, u32::MAX as u64, 1),
            (true, 4, u32::MAX as u64, 0x8000_0000, u32::MAX as u64),
            (true, 8, u64::MAX, 1 << 63, u64::MAX),
            (true, 8, 0, 1 << 63, 1),
            (true, 8, u64::MAX, 1 << 63, 1),
            (false, 8, 5, 0, 5),
            (false, 8, 4, 0, 5),
            (true, 2, 0xffff, 0x8000, 0xffff),
            (true, 1, 0, 0xff80, 0xff),
            (true, 1, 0, 0x0080, 0x01),
            (true, 1, 0, 0xff80, 0x01),
            (false, 1, 0, 0x1234, 0x12),
            (false, 1, 0, 0x1234, 0x13),
        ];
        for &(signed, size, hi, lo, d) in table {
            let code = crate::testutil::asm(64, |a| match (signed, size) {
                (false, 1) => a.div(bl).unwrap(),
                (false, 2) => a.div(bx).unwrap(),
                (false, 4) => a.div(ebx).unwrap(),
                (false, _) => a.div(rbx).unwrap(),
                (true, 1) => a.idiv(bl).unwrap(),
                (true, 2) => a.idiv(bx).unwrap(),
                (true, 4) => a.idiv(ebx).unwrap(),
                (true, _) => a.idiv(rbx).unwrap(),
            });
            let mut e = Emu::new(TestMode::Long64);
            e.st.gpr[0] = lo;
            e.st.gpr[2] = hi;
            e.st.gpr[3] = d;
            let r = e.exec(&code);
            let (rhi, rlo) = if size == 1 { (lo >> 8, lo & 0xff) } else { (hi, lo) };
            match reference_div(signed, size, rhi, rlo, d) {
                None => assert_eq!(r, Err(Fault::de()), "{signed} {size} {hi:#x}:{lo:#x}/{d:#x}"),
                Some((q, rem)) => {
                    assert_eq!(r, Ok(()), "{signed} {size} {hi:#x}:{lo:#x}/{d:#x}");
                    if size == 1 {
                        assert_eq!(e.st.gpr[0] & 0xffff, rem << 8 | q);
                    } else {
                        assert_eq!(e.st.gpr[0] & size_mask(size), q);
                        assert_eq!(e.st.gpr[2] & size_mask(size), rem);
                    }
                }
            }
        }
    }
}
