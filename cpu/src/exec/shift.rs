//! Shifts and rotates: SHL/SAL, SHR, SAR, ROL, ROR, RCL, RCR (by 1, CL or imm8), SHLD, SHRD.
//!
//! The count is masked to 5 bits (6 for 64-bit operands). A masked count of zero changes neither the
//! destination nor any flag. Flags the SDM calls undefined follow what the CPU of `CpuState::quirks`
//! produces (Intel or AMD); the rule for each is written next to its computation and checked against
//! the host CPU by the native-oracle tests below (every operand size, every count 0..=65), and both
//! vendors' rules by `undefined_results_by_vendor`.

use super::ops::*;
use super::{Handler, Insn};
use crate::fault::Fault;
use crate::mem::Ctx;
use crate::regs::{sext, size_mask};
use crate::state::{Quirks, flags};
use iced_x86::{Code, EncodingKind, Mnemonic, OpKind};

/// Handlers of this family.
pub fn lookup(code: Code) -> Option<Handler> {
    if code.op_code().encoding() != EncodingKind::Legacy {
        return None;
    }
    Some(match code.mnemonic() {
        Mnemonic::Rol => rol,
        Mnemonic::Ror => ror,
        Mnemonic::Rcl => rcl,
        Mnemonic::Rcr => rcr,
        Mnemonic::Shl | Mnemonic::Sal => shl,
        Mnemonic::Shr => shr,
        Mnemonic::Sar => sar,
        Mnemonic::Shld => shld,
        Mnemonic::Shrd => shrd,
        _ => return None,
    })
}

/// The shift/rotate operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Rotate left.
    Rol,
    /// Rotate right.
    Ror,
    /// Rotate left through carry.
    Rcl,
    /// Rotate right through carry.
    Rcr,
    /// Shift left (SHL/SAL).
    Shl,
    /// Logical shift right.
    Shr,
    /// Arithmetic shift right.
    Sar,
}

/// The count mask: 6 bits for 64-bit operands, 5 otherwise.
#[inline]
pub fn count_mask(size: u32) -> u64 {
    if size == 8 { 0x3f } else { 0x1f }
}

#[inline]
fn bit(v: u64, n: u32) -> u64 {
    (v >> n) & 1
}

/// Result, new flag values and the mask of flags written, for `op` on the `size`-byte value `a` with a
/// masked, nonzero count `cnt` and incoming flags `fl`; `imm_reg` says the count is an immediate and
/// the destination a register. `amd` selects AMD's undefined flags (see `amd_flags`).
#[inline]
pub fn compute(op: Op, size: u32, a: u64, cnt: u32, fl: u64, imm_reg: bool, amd: bool) -> (u64, u64, u64) {
    let (r, f, mask) = intel(op, size, a, cnt, fl, imm_reg);
    if !amd {
        (r, f, mask)
    } else if mask == 0 {
        // RCL/RCR by a multiple of the width plus one: AMD still writes OF (from the unchanged
        // value and CF).
        amd_flags(op, size, r, fl & flags::CF, 0)
    } else {
        amd_flags(op, size, r, f, mask)
    }
}

/// AMD Zen computes the flags the SDM leaves undefined from the last single-bit step instead: OF is
/// MSB(result) XOR CF for left shifts and rotates, MSB(result) XOR MSB-1(result) for right ones, for
/// every count; rotates write OF for immediate counts too, and RCL/RCR also when the count modulo
/// the width plus one is 0; SHL/SHR/SAR set AF. The result and CF are
/// those of the architectural definition (the same on both vendors).
#[inline]
fn amd_flags(op: Op, size: u32, r: u64, f: u64, mask: u64) -> (u64, u64, u64) {
    let n = size * 8;
    let msb = (r >> (n - 1)) & 1;
    let cf = f & flags::CF;
    let of = match op {
        Op::Shl | Op::Rol | Op::Rcl => msb ^ cf,
        Op::Shr | Op::Sar | Op::Ror | Op::Rcr => msb ^ bit(r, n - 2),
    };
    let f = (f & !flags::OF) | (of * flags::OF);
    match op {
        Op::Shl | Op::Shr | Op::Sar => (r, f | flags::AF, mask),
        _ => (r, f, mask | flags::OF),
    }
}

#[inline]
fn intel(op: Op, size: u32, a: u64, cnt: u32, fl: u64, imm_reg: bool) -> (u64, u64, u64) {
    let n = size * 8;
    let m = size_mask(size);
    let a = a & m;
    let msb = |v: u64| (v >> (n - 1)) & 1;
    match op {
        Op::Shl => {
            // cnt <= 63, so neither shift overflows; bits shifted beyond the operand give CF = 0.
            let r = (a << cnt) & m;
            let cf = (((a as u128) << cnt) >> n) as u64 & 1;
            // OF (undefined for counts > 1): the host sets it as for the first single-bit step, for
            // every count: MSB(a) XOR MSB-1(a). AF (undefined): the host clears it.
            let of = msb(a) ^ bit(a, n - 2);
            let f = szp(r, size) | (cf * flags::CF) | (of * flags::OF);
            (r, f, flags::ARITH)
        }
        Op::Shr => {
            let r = a >> cnt;
            let cf = bit(a, cnt - 1);
            // OF (undefined for counts > 1): as for the first single-bit step, MSB(a), for every
            // count. AF (undefined): the host clears it.
            let of = msb(a);
            let f = szp(r, size) | (cf * flags::CF) | (of * flags::OF);
            (r, f, flags::ARITH)
        }
        Op::Sar => {
            let s = sext(a, size) as i64;
            let r = (s >> cnt) as u64 & m;
            let cf = ((s >> (cnt - 1)) & 1) as u64;
            // OF: 0 for every count. AF (undefined): the host clears it.
            let f = szp(r, size) | (cf * flags::CF);
            (r, f, flags::ARITH)
        }
        Op::Rol => {
            let rc = cnt % n;
            let r = if rc == 0 { a } else { ((a << rc) | (a >> (n - rc))) & m };
            // CF = LSB(result) whenever the masked count is nonzero (also when it is a multiple of the
            // width). OF (undefined for counts > 1): as for the first single-bit step, for every
            // count: MSB(a) XOR MSB-1(a).
            // With an immediate count other than 1 and a register destination the host leaves OF
            // unchanged instead (a memory destination gets the rule above).
            let cf = r & 1;
            let of = msb(a) ^ bit(a, n - 2);
            (r, (cf * flags::CF) | (of * flags::OF), rot_mask(imm_reg, cnt))
        }
        Op::Ror => {
            let rc = cnt % n;
            let r = if rc == 0 { a } else { ((a >> rc) | (a << (n - rc))) & m };
            // CF = MSB(result). OF (undefined for counts > 1): as for the first single-bit step, for
            // every count: LSB(a) XOR MSB(a).
            // With an immediate count other than 1 and a register destination the host leaves OF
            // unchanged instead (a memory destination gets the rule above).
            let cf = msb(r);
            let of = (a & 1) ^ msb(a);
            (r, (cf * flags::CF) | (of * flags::OF), rot_mask(imm_reg, cnt))
        }
        Op::Rcl | Op::Rcr => {
            // Rotate the (n+1)-bit value CF:a by the count modulo n+1 (only 8/16-bit counts can reach
            // it). When that is 0 (8-bit count 9 or 18, 16-bit count 17) no flag changes.
            let w = n + 1;
            let rc = cnt % w;
            if rc == 0 {
                return (a, 0, 0);
            }
            let wm = (1u128 << w) - 1;
            let old_cf = fl & flags::CF;
            let v = (old_cf as u128) << n | a as u128;
            let v = if op == Op::Rcl {
                ((v << rc) | (v >> (w - rc))) & wm
            } else {
                ((v >> rc) | (v << (w - rc))) & wm
            };
            let r = v as u64 & m;
            let cf = (v >> n) as u64 & 1;
            // OF (undefined for counts > 1): as for the first single-bit step, for every count:
            // RCL: MSB(a) XOR MSB-1(a); RCR: MSB(a) XOR the incoming CF.
            let of = if op == Op::Rcl { msb(a) ^ bit(a, n - 2) } else { msb(a) ^ old_cf };
            (r, (cf * flags::CF) | (of * flags::OF), flags::CF | flags::OF)
        }
    }
}

/// Flags written by ROL/ROR: CF, and OF unless a register is rotated by an immediate other than 1.
#[inline]
fn rot_mask(imm_reg: bool, cnt: u32) -> u64 {
    if imm_reg && cnt != 1 { flags::CF } else { flags::CF | flags::OF }
}

#[inline(always)]
fn shift(ctx: &mut Ctx<'_>, insn: &Insn, op: Op) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let cnt = (read_op(ctx, insn, 1)? & count_mask(size)) as u32;
    let l = loc(ctx, insn, 0)?;
    let a = loc_read(ctx, l)? & size_mask(size);
    if cnt == 0 {
        // Nothing changes, but a 32-bit register destination is still written (zero-extended), as on
        // the host.
        if let Loc::Reg(_) = l {
            loc_write(ctx, l, a)?;
        }
        return Ok(());
    }
    // ROL/ROR of a register by an immediate leave OF alone (see `rot_mask`).
    let imm_reg = insn.i.op1_kind() != OpKind::Register && matches!(l, Loc::Reg(_));
    let amd = ctx.st.quirks == Quirks::Amd;
    let (r, f, mask) = compute(op, size, a, cnt, ctx.st.rflags, imm_reg, amd);
    loc_write(ctx, l, r)?;
    ctx.set_flags_masked(f, mask);
    Ok(())
}

fn rol(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    shift(ctx, insn, Op::Rol)
}
fn ror(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    shift(ctx, insn, Op::Ror)
}
fn rcl(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    shift(ctx, insn, Op::Rcl)
}
fn rcr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    shift(ctx, insn, Op::Rcr)
}
fn shl(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    shift(ctx, insn, Op::Shl)
}
fn shr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    shift(ctx, insn, Op::Shr)
}
fn sar(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    shift(ctx, insn, Op::Sar)
}

/// SHLD (`left`) or SHRD of destination `a` with source `b` by a masked, nonzero count: result and
/// flags; `amd` selects AMD's undefined results.
#[inline]
pub fn double_shift(left: bool, size: u32, a: u64, b: u64, cnt: u32, amd: bool) -> (u64, u64) {
    let n = size * 8;
    let m = size_mask(size);
    let (a, b) = (a & m, b & m);
    let (r, cf) = if size == 2 {
        // 16-bit counts can reach 31 (the SDM leaves the result of counts > 16 undefined). Both
        // vendors shift a 48-bit value and keep 16 bits of it, CF being the last bit shifted out of
        // those: Intel shifts a:b:a (SHLD keeps the top 16 bits, SHRD the bottom 16), AMD shifts
        // a:b:b for SHLD and b:b:a for SHRD. For counts <= 16 both give the architectural result.
        let (hi, lo) = match (left, amd) {
            (_, false) => (a, a),
            (true, true) => (a, b),
            (false, true) => (b, a),
        };
        let v = ((hi as u128) << 32) | ((b as u128) << 16) | lo as u128;
        if left {
            let s = v << cnt;
            (((s >> 32) as u64) & m, ((s >> 48) as u64) & 1)
        } else {
            let s = v >> (cnt - 1);
            (((s >> 1) as u64) & m, (s as u64) & 1)
        }
    } else if left {
        ((a << cnt | b >> (n - cnt)) & m, bit(a, n - cnt))
    } else {
        ((a >> cnt | b << (n - cnt)) & m, bit(a, cnt - 1))
    };
    // AMD, 16 bits, counts 16..=31: CF is the last bit shifted out of the destination itself for
    // count 16 (LSB(a) for SHLD, MSB(a) for SHRD) and 0 beyond; SHLD's OF then equals CF.
    let amd_wide = amd && size == 2 && cnt >= 16;
    let cf = match (amd_wide, cnt == 16, left) {
        (false, ..) => cf,
        (true, false, _) => 0,
        (true, true, true) => a & 1,
        (true, true, false) => a >> 15,
    };
    let msb = |v: u64| (v >> (n - 1)) & 1;
    // OF (defined for count 1 only) and AF (undefined). Intel: OF as for the first single-bit step,
    // for every count (SHLD: MSB(a) XOR MSB-1(a); SHRD: MSB(a) XOR LSB(b)), AF clear. AMD: OF as for
    // the last step (SHLD: MSB(result) XOR CF; SHRD: MSB(result) XOR MSB-1(result)), AF set.
    let (of, af) = match (left, amd) {
        (true, false) => (msb(a) ^ bit(a, n - 2), 0),
        (false, false) => (msb(a) ^ (b & 1), 0),
        (true, true) if amd_wide => (cf, flags::AF),
        (true, true) => (msb(r) ^ cf, flags::AF),
        (false, true) => (msb(r) ^ bit(r, n - 2), flags::AF),
    };
    let f = szp(r, size) | (cf * flags::CF) | (of * flags::OF) | af;
    (r, f)
}

#[inline(always)]
fn dshift(ctx: &mut Ctx<'_>, insn: &Insn, left: bool) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let cnt = (read_op(ctx, insn, 2)? & count_mask(size)) as u32;
    let b = read_op(ctx, insn, 1)?;
    let l = loc(ctx, insn, 0)?;
    let a = loc_read(ctx, l)? & size_mask(size);
    if cnt == 0 {
        if let Loc::Reg(_) = l {
            loc_write(ctx, l, a)?;
        }
        return Ok(());
    }
    let (r, f) = double_shift(left, size, a, b, cnt, ctx.st.quirks == Quirks::Amd);
    loc_write(ctx, l, r)?;
    ctx.set_arith_flags(f);
    Ok(())
}

fn shld(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    dshift(ctx, insn, true)
}
fn shrd(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    dshift(ctx, insn, false)
}

#[cfg(test)]
mod tests {
    use super::super::misc::testkit::*;
    use iced_x86::Mnemonic as M;

    /// The undefined results of each vendor, as measured on each (the native tests check the host's).
    #[test]
    fn undefined_results_by_vendor() {
        use crate::state::{Quirks, flags::*};
        use crate::testutil::TestMode;
        // rax = a, rdx = b, rcx = count, all flags clear on entry.
        let run = |q: Quirks, code: &[u8], a: u64, b: u64, c: u64| {
            let mut e = Emu::new(TestMode::Long64);
            e.st.quirks = q;
            e.st.gpr[0] = a;
            e.st.gpr[1] = c;
            e.st.gpr[2] = b;
            e.st.rflags &= !ARITH;
            e.exec(code).unwrap();
            (e.st.gpr[0], e.st.rflags & ARITH)
        };
        // shl al,cl by 3 of 0x21: Intel's OF is the first step's (0 XOR 0), AMD's the last step's
        // (MSB(0x08) XOR CF=1); AMD sets AF.
        let shl = [0xd2, 0xe0];
        assert_eq!(run(Quirks::Intel, &shl, 0x21, 0, 3), (0x08, CF));
        assert_eq!(run(Quirks::Amd, &shl, 0x21, 0, 3), (0x08, CF | OF | AF));
        // shr al,cl by 2 of 0x81: Intel OF = MSB(a); AMD OF = MSB(r) XOR MSB-1(r) = 0.
        let shr = [0xd2, 0xe8];
        assert_eq!(run(Quirks::Intel, &shr, 0x81, 0, 2), (0x20, OF));
        assert_eq!(run(Quirks::Amd, &shr, 0x81, 0, 2), (0x20, AF));
        // rol al,2 of 0x40: Intel leaves OF alone for an immediate count, AMD writes
        // MSB(0x01) XOR CF = 0 XOR 1.
        let rol = [0xc0, 0xc0, 0x02];
        assert_eq!(run(Quirks::Intel, &rol, 0x40, 0, 0), (0x01, CF));
        assert_eq!(run(Quirks::Amd, &rol, 0x40, 0, 0), (0x01, CF | OF));
        // rcl al,cl by 9 of 0x80: nothing changes on Intel; AMD writes OF = MSB(a) XOR CF = 1.
        let rcl = [0xd2, 0xd0];
        assert_eq!(run(Quirks::Intel, &rcl, 0x80, 0, 9), (0x80, 0));
        assert_eq!(run(Quirks::Amd, &rcl, 0x80, 0, 9), (0x80, OF));
        // shld ax,dx,cl by 30 (16-bit counts above 16), a = 0x0f76, b = 0x255a: Intel shifts
        // a:b:a, AMD a:b:b and clears CF and OF.
        let shld = [0x66, 0x0f, 0xa5, 0xd0];
        assert_eq!(run(Quirks::Intel, &shld, 0x0f76, 0x255a, 30), (0x83dd, SF | PF));
        assert_eq!(run(Quirks::Amd, &shld, 0x0f76, 0x255a, 30), (0x8956, SF | AF | PF));
        // shrd ax,dx,cl by 30: AMD shifts b:b:a.
        let shrd = [0x66, 0x0f, 0xad, 0xd0];
        assert_eq!(run(Quirks::Amd, &shrd, 0x0f76, 0x255a, 30), (0x9568, SF | OF | AF));
    }

    #[test]
    fn native_shifts_and_rotates() {
        let mut o = Oracle::new();
        let mut rng = Rng(1);
        let codes = codes_of(&[M::Shl, M::Sal, M::Shr, M::Sar, M::Rol, M::Ror, M::Rcl, M::Rcr], false);
        let counts: Vec<u64> = (0..=65).chain([0x80, 0xc1, 0xff, 0x7f, 0x40, 0x41, 0x20, 0x21]).collect();
        sweep(&mut o, &mut rng, &codes, 40, &counts, |c, _, f| panic!("{c:02x?}: {f:?}"));
        // CL forms: force every count in CL.
        for &c in &codes {
            for cnt in counts.iter().copied() {
                for _ in 0..20 {
                    let Some(code) = gen_reg_form(c, &mut rng, None) else { continue };
                    let mut g = random_gpr(&mut rng);
                    g[1] = (g[1] & !0xff) | cnt;
                    let fl = rng.flags();
                    o.compare(&code, g, fl, None);
                }
            }
        }
        o.finish("shifts/rotates");
    }

    #[test]
    fn native_double_shifts() {
        let mut o = Oracle::new();
        let mut rng = Rng(2);
        let codes = codes_of(&[M::Shld, M::Shrd], false);
        let counts: Vec<u64> = (0..=65).chain([0x80, 0xc1, 0xff]).collect();
        sweep(&mut o, &mut rng, &codes, 40, &counts, |c, _, f| panic!("{c:02x?}: {f:?}"));
        for &c in &codes {
            for cnt in counts.iter().copied() {
                for _ in 0..30 {
                    let Some(code) = gen_reg_form(c, &mut rng, None) else { continue };
                    let mut g = random_gpr(&mut rng);
                    g[1] = (g[1] & !0xff) | cnt;
                    let fl = rng.flags();
                    o.compare(&code, g, fl, None);
                }
            }
        }
        o.finish("shld/shrd");
    }

    /// Memory destinations (count 0 must leave memory and flags alone), every count in CL or imm8.
    #[test]
    fn native_memory_forms() {
        let mut o = Oracle::new();
        let mut rng = Rng(3);
        let codes = codes_of(
            &[M::Shl, M::Sal, M::Shr, M::Sar, M::Rol, M::Ror, M::Rcl, M::Rcr, M::Shld, M::Shrd],
            false,
        );
        sweep_mem(&mut o, &mut rng, &codes, 600, |_, rng, g, _| g[1] = rng.below(70));
        o.finish("shifts/rotates, memory forms");
    }
}
