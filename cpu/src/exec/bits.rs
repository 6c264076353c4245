//! Bit operations and the remaining read-modify-write integer instructions: BT/BTS/BTR/BTC, BSF/BSR,
//! POPCNT, LZCNT, TZCNT, BSWAP, MOVBE, CRC32, CMPXCHG, CMPXCHG8B/16B, XADD, ADCX, ADOX, and the
//! VEX-encoded BMI1/BMI2 group (ANDN, BEXTR, BLSI, BLSMSK, BLSR, BZHI, MULX, PDEP, PEXT, RORX, SARX,
//! SHLX, SHRX).
//!
//! Flags the SDM calls undefined follow what Intel CPUs produce; the rule for each is written next to
//! its computation and checked against the host CPU by the native-oracle tests below.

use super::ops::*;
use super::{Handler, Insn};
use crate::fault::Fault;
use crate::mem::Ctx;
use crate::paging::AccessKind;
use crate::regs::{sext, size_mask};
use crate::state::{Mode, Quirks, Seg, flags};
use iced_x86::{Code, EncodingKind, Mnemonic, OpKind};

/// Handlers of this family.
pub fn lookup(code: Code) -> Option<Handler> {
    let enc = code.op_code().encoding();
    let h: Handler = match code.mnemonic() {
        Mnemonic::Andn => andn,
        Mnemonic::Bextr => bextr,
        Mnemonic::Blsi => blsi,
        Mnemonic::Blsmsk => blsmsk,
        Mnemonic::Blsr => blsr,
        Mnemonic::Bzhi => bzhi,
        Mnemonic::Mulx => mulx,
        Mnemonic::Pdep => pdep,
        Mnemonic::Pext => pext,
        Mnemonic::Rorx => rorx,
        Mnemonic::Sarx => sarx,
        Mnemonic::Shlx => shlx,
        Mnemonic::Shrx => shrx,
        _ => {
            if enc != EncodingKind::Legacy {
                return None;
            }
            return Some(match code.mnemonic() {
                Mnemonic::Bt => bt,
                Mnemonic::Bts => bts,
                Mnemonic::Btr => btr,
                Mnemonic::Btc => btc,
                Mnemonic::Bsf => bsf,
                Mnemonic::Bsr => bsr,
                Mnemonic::Popcnt => popcnt,
                Mnemonic::Lzcnt => lzcnt,
                Mnemonic::Tzcnt => tzcnt,
                Mnemonic::Bswap => bswap,
                Mnemonic::Movbe => movbe,
                Mnemonic::Crc32 => crc32,
                Mnemonic::Cmpxchg => cmpxchg,
                Mnemonic::Cmpxchg8b => cmpxchg8b,
                Mnemonic::Cmpxchg16b => cmpxchg16b,
                Mnemonic::Xadd => xadd,
                Mnemonic::Adcx => adcx,
                Mnemonic::Adox => adox,
                _ => return None,
            });
        }
    };
    // The BMI group only in its VEX encoding (AMD's XOP BEXTR is not supported).
    if enc != EncodingKind::VEX {
        return None;
    }
    Some(h)
}

// ------------------------------------------------------------------------------------ BT family

#[derive(Clone, Copy, PartialEq, Eq)]
enum BtOp {
    Test,
    Set,
    Reset,
    Complement,
}

/// The location and bit number of a BT-family operand. A register bit offset into memory is signed
/// and selects the operand-sized word at EA + size * floor(offset / width); immediates and register
/// destinations take the offset modulo the width.
#[inline]
fn bt_target(ctx: &mut Ctx<'_>, insn: &Insn, write: bool) -> Result<(Loc, u32), Fault> {
    let size = op_size(insn, 0);
    let width = size * 8;
    let raw = read_op(ctx, insn, 1)?;
    if insn.i.op0_kind() != OpKind::Memory {
        return Ok((Loc::Reg(reg_op(insn, 0)?), (raw & (width as u64 - 1)) as u32));
    }
    let mut off = ea(ctx, insn);
    if insn.i.op1_kind() == OpKind::Register {
        let bitoff = sext(raw & size_mask(size), size) as i64;
        let words = bitoff >> width.trailing_zeros();
        off = off.wrapping_add((words as u64).wrapping_mul(size as u64)) & size_mask(insn.asize as u32);
    }
    let kind = if write { AccessKind::Write } else { AccessKind::Read };
    let lin = ctx.seg_lin(mem_seg(insn), off, size, kind)?;
    ctx.check_alignment(lin, size)?;
    let l = if write {
        ctx.probe_write(lin, size)?;
        Loc::Mem { lin, size }
    } else {
        Loc::MemRead { lin, size }
    };
    Ok((l, (raw & (width as u64 - 1)) as u32))
}

#[inline(always)]
fn bt_op(ctx: &mut Ctx<'_>, insn: &Insn, op: BtOp) -> Result<(), Fault> {
    let (l, b) = bt_target(ctx, insn, op != BtOp::Test)?;
    let v = loc_read(ctx, l)?;
    let cf = (v >> b) & 1;
    let r = match op {
        BtOp::Test => v,
        BtOp::Set => v | 1 << b,
        BtOp::Reset => v & !(1 << b),
        BtOp::Complement => v ^ (1 << b),
    };
    if op != BtOp::Test {
        loc_write(ctx, l, r)?;
    }
    // CF = the bit; ZF unchanged. OF, SF, AF, PF (undefined): the host leaves them unchanged.
    ctx.set_flags_masked(cf * flags::CF, flags::CF);
    Ok(())
}

fn bt(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    bt_op(ctx, insn, BtOp::Test)
}
fn bts(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    bt_op(ctx, insn, BtOp::Set)
}
fn btr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    bt_op(ctx, insn, BtOp::Reset)
}
fn btc(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    bt_op(ctx, insn, BtOp::Complement)
}

// -------------------------------------------------------------------------------- bit scans

#[inline(always)]
fn scan(ctx: &mut Ctx<'_>, insn: &Insn, reverse: bool) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let src = read_op(ctx, insn, 1)? & size_mask(size);
    if src == 0 {
        // Zero source: the destination is left unchanged (not even zero-extended). ZF = 1; the
        // undefined flags: the host sets PF and clears CF, OF, SF and AF.
        ctx.set_arith_flags(flags::ZF | flags::PF);
        return Ok(());
    }
    let r = if reverse { 63 - src.leading_zeros() as u64 } else { src.trailing_zeros() as u64 };
    write_op(ctx, insn, 0, r)?;
    // ZF = 0; the undefined flags: the host sets PF to the parity of the result and clears CF, OF,
    // SF and AF.
    ctx.set_arith_flags(szp(r, 1) & flags::PF);
    Ok(())
}

fn bsf(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    scan(ctx, insn, false)
}
fn bsr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    scan(ctx, insn, true)
}

fn popcnt(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let src = read_op(ctx, insn, 1)? & size_mask(size);
    write_op(ctx, insn, 0, src.count_ones() as u64)?;
    // All flags cleared but ZF = (source == 0).
    ctx.set_arith_flags(if src == 0 { flags::ZF } else { 0 });
    Ok(())
}

#[inline(always)]
fn count_zeros(ctx: &mut Ctx<'_>, insn: &Insn, leading: bool) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let width = size * 8;
    let src = read_op(ctx, insn, 1)? & size_mask(size);
    let r = if src == 0 {
        width
    } else if leading {
        src.leading_zeros() - (64 - width)
    } else {
        src.trailing_zeros()
    } as u64;
    write_op(ctx, insn, 0, r)?;
    ctx.st.rflags = count_zeros_flags(ctx.st.rflags, src == 0, r, ctx.st.quirks);
    Ok(())
}

/// RFLAGS `fl` after LZCNT/TZCNT of a zero (`src_zero`) or nonzero source giving `r`: CF = (source
/// == 0), ZF = (result == 0); OF, SF, AF, PF (undefined): Intel clears them, AMD keeps OF and clears
/// the others. The JIT's inlined LZCNT/TZCNT call it too.
#[inline]
pub fn count_zeros_flags(fl: u64, src_zero: bool, r: u64, quirks: Quirks) -> u64 {
    let f = if src_zero { flags::CF } else { 0 } | if r == 0 { flags::ZF } else { 0 };
    let mask = if quirks == Quirks::Amd { flags::ARITH & !flags::OF } else { flags::ARITH };
    (fl & !mask) | f
}

fn lzcnt(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    count_zeros(ctx, insn, true)
}
fn tzcnt(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    count_zeros(ctx, insn, false)
}

/// Byte-reverses the low `size` bytes of `v`.
#[inline]
fn swap_bytes(v: u64, size: u32) -> u64 {
    match size {
        2 => (v as u16).swap_bytes() as u64,
        4 => (v as u32).swap_bytes() as u64,
        8 => v.swap_bytes(),
        _ => v & 0xff,
    }
}

fn bswap(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let v = read_op(ctx, insn, 0)?;
    // BSWAP r16 is undefined: the host clears the low 16 bits (upper bits kept).
    let r = if size == 2 { 0 } else { swap_bytes(v, size) };
    write_op(ctx, insn, 0, r)
}

fn movbe(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let v = read_op(ctx, insn, 1)?;
    write_op(ctx, insn, 0, swap_bytes(v, size))
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) table for CRC32.
static CRC32C: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0x82f6_3b78 } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

fn crc32(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let ssize = op_size(insn, 1);
    let src = read_op(ctx, insn, 1)?;
    let mut crc = read_op(ctx, insn, 0)? as u32;
    for k in 0..ssize {
        let b = (src >> (k * 8)) as u8;
        crc = CRC32C[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    // The 32-bit result is zero-extended into a 64-bit destination; flags unchanged.
    write_op(ctx, insn, 0, crc as u64)
}

// ----------------------------------------------------------------------------- exchange & add

fn cmpxchg(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let m = size_mask(size);
    let l = loc(ctx, insn, 0)?;
    let d = loc_read(ctx, l)? & m;
    let src = read_op(ctx, insn, 1)? & m;
    let acc = ctx.st.reg(0, size);
    // Flags as CMP accumulator, destination.
    let f = flags_sub(acc, d, 0, acc.wrapping_sub(d), size);
    if acc == d {
        loc_write(ctx, l, src)?;
    } else {
        // The destination is written back unchanged (a locked RMW always writes); a register
        // destination is not written, then the accumulator gets the destination.
        if let Loc::Mem { .. } = l {
            loc_write(ctx, l, d)?;
        }
        ctx.st.set_reg(0, size, d);
    }
    ctx.set_arith_flags(f);
    Ok(())
}

/// CMPXCHG8B m64: compares EDX:EAX with m64; equal: ZF = 1 and m64 = ECX:EBX; else ZF = 0 and EDX:EAX =
/// m64 (the memory is written back either way). Other flags unchanged.
fn cmpxchg8b(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if insn.i.op0_kind() != OpKind::Memory {
        return Err(Fault::ud());
    }
    let l = loc(ctx, insn, 0)?;
    let v = loc_read(ctx, l)?;
    let cmp = ctx.st.reg(2, 4) << 32 | ctx.st.reg(0, 4);
    if v == cmp {
        let new = ctx.st.reg(1, 4) << 32 | ctx.st.reg(3, 4);
        loc_write(ctx, l, new)?;
        ctx.set_flags_masked(flags::ZF, flags::ZF);
    } else {
        loc_write(ctx, l, v)?;
        ctx.st.set_reg(0, 4, v & 0xffff_ffff);
        ctx.st.set_reg(2, 4, v >> 32);
        ctx.set_flags_masked(0, flags::ZF);
    }
    Ok(())
}

/// CMPXCHG16B m128: as CMPXCHG8B with RDX:RAX and RCX:RBX; #GP(0) unless the operand is 16-byte
/// aligned.
fn cmpxchg16b(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if insn.i.op0_kind() != OpKind::Memory {
        return Err(Fault::ud());
    }
    let off = ea(ctx, insn);
    let seg = mem_seg(insn);
    if ctx.st.quirks == Quirks::Amd {
        // AMD checks the alignment before the segment and canonical checks: a misaligned operand at a
        // non-canonical stack address is #GP(0), not #SS(0) (measured on an AMD host).
        let base = if matches!(seg, Seg::Fs | Seg::Gs) { ctx.st.seg[seg as usize].base } else { 0 };
        if base.wrapping_add(off) & 15 != 0 {
            return Err(Fault::gp0());
        }
    }
    let lin = ctx.seg_lin(seg, off, 16, AccessKind::Write)?;
    if lin & 15 != 0 {
        return Err(Fault::gp0());
    }
    ctx.probe_write(lin, 16)?;
    let lo = ctx.read_lin(lin, 8)?;
    let hi = ctx.read_lin(lin.wrapping_add(8), 8)?;
    if lo == ctx.st.gpr[0] && hi == ctx.st.gpr[2] {
        let (nlo, nhi) = (ctx.st.gpr[3], ctx.st.gpr[1]);
        ctx.write_lin(lin, 8, nlo)?;
        ctx.write_lin(lin.wrapping_add(8), 8, nhi)?;
        ctx.set_flags_masked(flags::ZF, flags::ZF);
    } else {
        ctx.write_lin(lin, 8, lo)?;
        ctx.write_lin(lin.wrapping_add(8), 8, hi)?;
        ctx.st.gpr[0] = lo;
        ctx.st.gpr[2] = hi;
        ctx.set_flags_masked(0, flags::ZF);
    }
    Ok(())
}

fn xadd(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let m = size_mask(size);
    let l = loc(ctx, insn, 0)?;
    let d = loc_read(ctx, l)? & m;
    let s = read_op(ctx, insn, 1)? & m;
    let sum = d.wrapping_add(s) & m;
    // The source register gets the old destination first; the destination (the sum) is written last,
    // so XADD r, r with the same register leaves the sum.
    write_op(ctx, insn, 1, d)?;
    loc_write(ctx, l, sum)?;
    ctx.set_arith_flags(flags_add(d, s, 0, sum, size));
    Ok(())
}

#[inline(always)]
fn add_with(ctx: &mut Ctx<'_>, insn: &Insn, flag: u64) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let m = size_mask(size);
    let a = read_op(ctx, insn, 0)? & m;
    let b = read_op(ctx, insn, 1)? & m;
    let c = (ctx.st.rflags & flag != 0) as u64;
    let wide = a as u128 + b as u128 + c as u128;
    write_op(ctx, insn, 0, wide as u64 & m)?;
    let carry = (wide >> (size * 8)) & 1 != 0;
    ctx.set_flags_masked(if carry { flag } else { 0 }, flag);
    Ok(())
}

/// ADCX: unsigned add with carry in and out through CF only.
fn adcx(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    add_with(ctx, insn, flags::CF)
}

/// ADOX: unsigned add with carry in and out through OF only.
fn adox(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    add_with(ctx, insn, flags::OF)
}

// -------------------------------------------------------------------------------- BMI1 / BMI2

/// VEX-encoded instructions raise #UD in real-address and virtual-8086 mode.
#[inline]
fn vex_mode(ctx: &Ctx<'_>) -> Result<(), Fault> {
    if matches!(ctx.st.mode(), Mode::Real | Mode::V86) { Err(Fault::ud()) } else { Ok(()) }
}

/// SF and ZF of a result, and PF on AMD (Intel clears the undefined PF); the other BMI flags are set
/// by the callers.
#[inline]
fn sz(ctx: &Ctx<'_>, r: u64, size: u32) -> u64 {
    let pf = if ctx.st.quirks == Quirks::Amd { flags::PF } else { 0 };
    szp(r, size) & (flags::SF | flags::ZF | pf)
}

/// ANDN r, v, r/m: r = !v & r/m.
fn andn(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    vex_mode(ctx)?;
    let size = op_size(insn, 0);
    let a = read_op(ctx, insn, 1)?;
    let b = read_op(ctx, insn, 2)?;
    let r = !a & b & size_mask(size);
    write_op(ctx, insn, 0, r)?;
    // SF, ZF from the result; CF = OF = 0; AF (undefined) clear, PF (undefined) see `sz`.
    ctx.set_arith_flags(sz(ctx, r, size));
    Ok(())
}

/// BEXTR r, r/m, v: bits [start, start+len) of r/m with start = v[7:0], len = v[15:8].
fn bextr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    vex_mode(ctx)?;
    let size = op_size(insn, 0);
    let width = size * 8;
    let src = read_op(ctx, insn, 1)? & size_mask(size);
    let ctl = read_op(ctx, insn, 2)?;
    let start = (ctl & 0xff) as u32;
    let len = ((ctl >> 8) & 0xff) as u32;
    let r = if start >= width {
        0
    } else {
        let v = src >> start;
        if len >= 64 { v } else { v & ((1u64 << len) - 1) }
    };
    write_op(ctx, insn, 0, r)?;
    // ZF from the result; CF = OF = 0; SF, AF, PF (undefined): Intel clears them, AMD sets PF from
    // the result, sets AF and clears SF.
    if ctx.st.quirks == Quirks::Amd {
        ctx.set_arith_flags((szp(r, size) & !flags::SF) | flags::AF);
    } else {
        ctx.set_arith_flags(if r == 0 { flags::ZF } else { 0 });
    }
    Ok(())
}

#[inline(always)]
fn bls(ctx: &mut Ctx<'_>, insn: &Insn, f: fn(u64) -> u64, kind: u8) -> Result<(), Fault> {
    vex_mode(ctx)?;
    let size = op_size(insn, 0);
    let src = read_op(ctx, insn, 1)? & size_mask(size);
    let r = f(src) & size_mask(size);
    write_op(ctx, insn, 0, r)?;
    // OF = 0; SF from the result. BLSI: ZF from the result, CF = (src != 0). BLSMSK: ZF = 0,
    // CF = (src == 0). BLSR: ZF from the result, CF = (src == 0). AF (undefined) clear, PF (undefined) see `sz`.
    let mut fl = sz(ctx, r, size);
    match kind {
        0 => fl |= if src != 0 { flags::CF } else { 0 },
        1 => fl = (fl & !flags::ZF) | if src == 0 { flags::CF } else { 0 },
        _ => fl |= if src == 0 { flags::CF } else { 0 },
    }
    ctx.set_arith_flags(fl);
    Ok(())
}

fn blsi(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    bls(ctx, insn, |s| s & s.wrapping_neg(), 0)
}
fn blsmsk(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    bls(ctx, insn, |s| s ^ s.wrapping_sub(1), 1)
}
fn blsr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    bls(ctx, insn, |s| s & s.wrapping_sub(1), 2)
}

/// BZHI r, r/m, v: r/m with the bits from index v[7:0] up cleared.
fn bzhi(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    vex_mode(ctx)?;
    let size = op_size(insn, 0);
    let width = size * 8;
    let src = read_op(ctx, insn, 1)? & size_mask(size);
    let idx = (read_op(ctx, insn, 2)? & 0xff) as u32;
    let (r, cf) = if idx < width { (src & ((1u64 << idx) - 1), 0) } else { (src, flags::CF) };
    write_op(ctx, insn, 0, r)?;
    // SF, ZF from the result; CF = (index > width - 1); OF = 0; AF (undefined) clear, PF
    // (undefined) see `sz`.
    ctx.set_arith_flags(sz(ctx, r, size) | cf);
    Ok(())
}

/// MULX hi, lo, r/m: unsigned rDX * r/m; flags unchanged. The low half is written first, so equal
/// destinations end with the high half.
fn mulx(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    vex_mode(ctx)?;
    let size = op_size(insn, 0);
    let m = size_mask(size);
    let a = ctx.st.reg(2, size);
    let b = read_op(ctx, insn, 2)? & m;
    let p = a as u128 * b as u128;
    write_op(ctx, insn, 1, p as u64 & m)?;
    write_op(ctx, insn, 0, (p >> (size * 8)) as u64 & m)
}

/// Parallel bit deposit: the low bits of `src` go to the set bits of `mask`, in order.
#[inline]
pub fn pdep64(src: u64, mut mask: u64) -> u64 {
    let mut r = 0;
    let mut k = 0;
    while mask != 0 {
        let low = mask & mask.wrapping_neg();
        if (src >> k) & 1 != 0 {
            r |= low;
        }
        mask ^= low;
        k += 1;
    }
    r
}

/// Parallel bit extract: the bits of `src` at the set bits of `mask` go to the low bits, in order.
#[inline]
pub fn pext64(src: u64, mut mask: u64) -> u64 {
    let mut r = 0;
    let mut k = 0;
    while mask != 0 {
        let low = mask & mask.wrapping_neg();
        if src & low != 0 {
            r |= 1 << k;
        }
        mask ^= low;
        k += 1;
    }
    r
}

fn pdep(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    vex_mode(ctx)?;
    let size = op_size(insn, 0);
    let src = read_op(ctx, insn, 1)? & size_mask(size);
    let mask = read_op(ctx, insn, 2)? & size_mask(size);
    write_op(ctx, insn, 0, pdep64(src, mask))
}

fn pext(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    vex_mode(ctx)?;
    let size = op_size(insn, 0);
    let src = read_op(ctx, insn, 1)? & size_mask(size);
    let mask = read_op(ctx, insn, 2)? & size_mask(size);
    write_op(ctx, insn, 0, pext64(src, mask))
}

/// RORX r, r/m, imm8: rotate right without touching flags.
fn rorx(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    vex_mode(ctx)?;
    let size = op_size(insn, 0);
    let width = size * 8;
    let src = read_op(ctx, insn, 1)? & size_mask(size);
    let c = (read_op(ctx, insn, 2)? & (width as u64 - 1)) as u32;
    let r = if c == 0 { src } else { (src >> c | src << (width - c)) & size_mask(size) };
    write_op(ctx, insn, 0, r)
}

#[inline(always)]
fn shiftx(ctx: &mut Ctx<'_>, insn: &Insn, kind: u8) -> Result<(), Fault> {
    vex_mode(ctx)?;
    let size = op_size(insn, 0);
    let m = size_mask(size);
    let src = read_op(ctx, insn, 1)? & m;
    let c = (read_op(ctx, insn, 2)? & (size as u64 * 8 - 1)) as u32;
    let r = match kind {
        0 => (sext(src, size) as i64 >> c) as u64,
        1 => src << c,
        _ => src >> c,
    } & m;
    write_op(ctx, insn, 0, r)
}

fn sarx(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    shiftx(ctx, insn, 0)
}
fn shlx(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    shiftx(ctx, insn, 1)
}
fn shrx(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    shiftx(ctx, insn, 2)
}

#[cfg(test)]
mod tests {
    use super::super::misc::testkit::*;
    use iced_x86::Mnemonic as M;

    /// The undefined flags of each vendor, as measured on each (the native tests check the host's).
    #[test]
    fn undefined_flags_by_vendor() {
        use crate::state::{Quirks, flags::*};
        use crate::testutil::TestMode;
        // rcx, rdx as given; OF, SF, AF and PF set on entry; returns eax and the flags.
        let run = |q: Quirks, code: &[u8], c: u64, d: u64| {
            let mut e = Emu::new(TestMode::Long64);
            e.st.quirks = q;
            e.st.gpr[1] = c;
            e.st.gpr[2] = d;
            e.st.rflags = (e.st.rflags & !ARITH) | OF | SF | AF | PF;
            e.exec(code).unwrap();
            (e.st.gpr[0], e.st.rflags & ARITH)
        };
        // tzcnt eax,ecx of 0x10: Intel clears OF, SF, AF, PF; AMD keeps OF.
        let tzcnt = [0xf3, 0x0f, 0xbc, 0xc1];
        assert_eq!(run(Quirks::Intel, &tzcnt, 0x10, 0), (4, 0));
        assert_eq!(run(Quirks::Amd, &tzcnt, 0x10, 0), (4, OF));
        // andn eax,ecx,edx = !0xf0 & 0xf3 = 3: AMD sets PF from the result.
        let andn = [0xc4, 0xe2, 0x70, 0xf2, 0xc2];
        assert_eq!(run(Quirks::Intel, &andn, 0xf0, 0xf3), (3, 0));
        assert_eq!(run(Quirks::Amd, &andn, 0xf0, 0xf3), (3, PF));
        // bextr eax,edx,ecx: 4 bits from bit 4 of 0xf3 = 0xf: AMD sets PF from the result and AF.
        let bextr = [0xc4, 0xe2, 0x70, 0xf7, 0xc2];
        assert_eq!(run(Quirks::Intel, &bextr, 0x0404, 0xf3), (0xf, 0));
        assert_eq!(run(Quirks::Amd, &bextr, 0x0404, 0xf3), (0xf, PF | AF));
        // bextr of all 32 bits of 0x8000_0001: SF stays clear on AMD.
        assert_eq!(run(Quirks::Amd, &bextr, 0x2000, 0x8000_0001), (0x8000_0001, AF));
    }

    #[test]
    fn native_register_forms() {
        let mut o = Oracle::new();
        let mut rng = Rng(21);
        let legacy = codes_of(
            &[
                M::Bt,
                M::Bts,
                M::Btr,
                M::Btc,
                M::Bsf,
                M::Bsr,
                M::Popcnt,
                M::Lzcnt,
                M::Tzcnt,
                M::Bswap,
                M::Crc32,
                M::Cmpxchg,
                M::Xadd,
                M::Adcx,
                M::Adox,
            ],
            false,
        );
        let imms: Vec<u64> = (0..=65).chain([0x7f, 0x80, 0xff]).collect();
        sweep(&mut o, &mut rng, &legacy, 1500, &imms, |c, _, f| panic!("{c:02x?}: {f:?}"));
        let vex = codes_of(
            &[
                M::Andn,
                M::Bextr,
                M::Blsi,
                M::Blsmsk,
                M::Blsr,
                M::Bzhi,
                M::Mulx,
                M::Pdep,
                M::Pext,
                M::Rorx,
                M::Sarx,
                M::Shlx,
                M::Shrx,
            ],
            true,
        );
        sweep(&mut o, &mut rng, &vex, 3000, &imms, |c, _, f| panic!("{c:02x?}: {f:?}"));
        o.finish("bit ops, register forms");
    }

    #[test]
    fn native_memory_forms() {
        let mut o = Oracle::new();
        let mut rng = Rng(22);
        // BT family: register bit offsets are signed and may address other words of the buffer
        // (kept within +-100 bytes of [rsi]).
        let bt = codes_of(&[M::Bt, M::Bts, M::Btr, M::Btc], false);
        sweep_mem(&mut o, &mut rng, &bt, 3000, |ins, rng, g, _| {
            if ins.op1_kind() == iced_x86::OpKind::Register {
                let r = crate::regs::gpr(ins.op1_register()).expect("gpr");
                let off = rng.below(1601) as i64 - 800;
                let keep = g[r.index] & !crate::regs::size_mask(r.size);
                g[r.index] = keep | (off as u64 & crate::regs::size_mask(r.size));
            }
        });
        let other = codes_of(
            &[
                M::Bsf,
                M::Bsr,
                M::Popcnt,
                M::Lzcnt,
                M::Tzcnt,
                M::Movbe,
                M::Crc32,
                M::Cmpxchg,
                M::Xadd,
                M::Adcx,
                M::Adox,
                M::Cmpxchg8b,
                M::Cmpxchg16b,
            ],
            false,
        );
        sweep_mem(&mut o, &mut rng, &other, 1500, |_, rng, g, mem| {
            // Make compare-exchanges succeed half of the time.
            if rng.below(2) == 0 {
                let q = |k: usize| u64::from_le_bytes(mem[k..k + 8].try_into().expect("8 bytes"));
                g[0] = q(128);
                if rng.below(2) == 0 {
                    g[2] = q(136);
                } else {
                    g[2] = q(128) >> 32;
                }
            }
        });
        let vex = codes_of(
            &[
                M::Andn,
                M::Bextr,
                M::Blsi,
                M::Blsmsk,
                M::Blsr,
                M::Bzhi,
                M::Mulx,
                M::Pdep,
                M::Pext,
                M::Rorx,
                M::Sarx,
                M::Shlx,
                M::Shrx,
            ],
            true,
        );
        sweep_mem(&mut o, &mut rng, &vex, 1000, |_, _, _, _| {});
        o.finish("bit ops, memory forms");
    }

    /// VEX forms are #UD in real mode (and run in protected mode); CMPXCHG16B needs 16-byte alignment;
    /// CMPXCHG8B's register form does not decode.
    #[test]
    fn faults_and_modes() {
        use crate::fault::Fault;
        use crate::testutil::{DATA, TestMode};
        // andn eax, ebx, ecx / bzhi eax, ebx, ecx / mulx eax, ebx, ecx: VEX bytes valid in 16/32-bit code.
        let vex: [&[u8]; 3] = [
            &[0xc4, 0xe2, 0x60, 0xf2, 0xc1],
            &[0xc4, 0xe2, 0x70, 0xf5, 0xc3],
            &[0xc4, 0xe2, 0x63, 0xf6, 0xc1],
        ];
        for code in vex {
            let mut e = Emu::new(TestMode::Real);
            assert_eq!(e.exec(code), Err(Fault::ud()), "{code:02x?}");
            let mut e = Emu::new(TestMode::Prot32);
            assert_eq!(e.exec(code), Ok(()), "{code:02x?}");
        }
        // cmpxchg16b [rsi] at DATA + 8 (misaligned) and DATA (aligned).
        for (off, want) in [(8u64, Err(Fault::gp0())), (0, Ok(()))] {
            let mut e = Emu::new(TestMode::Long64);
            e.st.gpr[6] = DATA + off;
            assert_eq!(e.exec(&[0x48, 0x0f, 0xc7, 0x0e]), want);
        }
        // cmpxchg16b [rsp] with RSP misaligned and non-canonical: Intel checks the stack address first
        // (#SS(0)), AMD the alignment (#GP(0)); measured on each.
        for (q, want) in
            [(crate::state::Quirks::Intel, Fault::ss(0)), (crate::state::Quirks::Amd, Fault::gp0())]
        {
            let mut e = Emu::new(TestMode::Long64);
            e.st.quirks = q;
            e.st.gpr[4] = 0x8000_0000_0000_0008;
            assert_eq!(e.exec(&[0x48, 0x0f, 0xc7, 0x0c, 0x24]), Err(want), "{q:?}");
        }
        // Equal: memory gets RCX:RBX and ZF = 1.
        let mut e = Emu::new(TestMode::Long64);
        e.st.gpr[6] = DATA;
        e.st.gpr[0] = 0;
        e.st.gpr[2] = 0;
        e.st.gpr[3] = 0x1122_3344_5566_7788;
        e.st.gpr[1] = 0x99aa_bbcc_ddee_ff00;
        assert_eq!(e.exec(&[0x48, 0x0f, 0xc7, 0x0e]), Ok(()));
        assert!(e.st.rflags & crate::state::flags::ZF != 0);
        let d = DATA as usize;
        assert_eq!(
            &e.bus.ram[d..d + 16],
            &[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99]
        );
    }

    #[test]
    fn reference_values() {
        use super::{pdep64, pext64};
        // (src, mask, pdep, pext)
        let table = [
            (0b1011u64, 0b1111_0000u64, 0b1011_0000u64, 0u64),
            (0xff, 0x8000_0000_0000_0001, 0x8000_0000_0000_0001, 1),
            (0x1234_5678, 0, 0, 0),
            (u64::MAX, 0xf0f0, 0xf0f0, 0xff),
        ];
        for (s, m, d, x) in table {
            assert_eq!(pdep64(s, m), d, "pdep {s:#x} {m:#x}");
            assert_eq!(pext64(s, m), x, "pext {s:#x} {m:#x}");
        }
        // CRC-32C check value: crc32c("123456789") = 0xE3069283 (init and final XOR all ones).
        let mut e = Emu::new(crate::testutil::TestMode::Long64);
        e.st.gpr[0] = 0xffff_ffff;
        for &b in b"123456789" {
            e.st.gpr[1] = b as u64;
            assert_eq!(e.exec(&[0xf2, 0x0f, 0x38, 0xf0, 0xc1]), Ok(())); // crc32 eax, cl
        }
        assert_eq!(e.st.gpr[0] ^ 0xffff_ffff, 0xe306_9283);
    }
}
