//! Operand access shared by all handlers: effective addresses, register/memory/immediate operands,
//! read-modify-write locations, the stack, and the arithmetic-flag computations.

use super::Insn;
use crate::fault::Fault;
use crate::mem::Ctx;
use crate::paging::AccessKind;
use crate::regs::{GprRef, gpr, sign_bit, size_mask, sreg};
use crate::state::{Seg, flags};
use iced_x86::{OpKind, Register};

/// Effective address (segment offset) of the instruction's memory operand, wrapped to the address size.
#[inline]
pub fn ea(ctx: &Ctx<'_>, insn: &Insn) -> u64 {
    let i = &insn.i;
    let mut a = i.memory_displacement64();
    let base = i.memory_base();
    if base != Register::None
        && base != Register::RIP
        && base != Register::EIP
        && let Some(g) = gpr(base)
    {
        a = a.wrapping_add(ctx.st.read_gpr(g));
    }
    let index = i.memory_index();
    if index != Register::None
        && let Some(g) = gpr(index)
    {
        a = a.wrapping_add(ctx.st.read_gpr(g).wrapping_mul(i.memory_index_scale() as u64));
    }
    a & size_mask(insn.asize as u32)
}

/// The segment of the instruction's memory operand (after overrides).
///
/// In 64-bit mode CS/DS/ES/SS overrides are ignored (segment bases are 0 and there are no limits); the
/// segment then only decides whether a non-canonical address raises #SS (stack addressing: RSP/RBP base)
/// or #GP, so it is derived from the base register, as the hardware does.
#[inline]
pub fn mem_seg(insn: &Insn) -> Seg {
    let s = sreg(insn.i.memory_segment()).unwrap_or(Seg::Ds);
    if insn.i.code_size() == iced_x86::CodeSize::Code64 && !matches!(s, Seg::Fs | Seg::Gs) {
        return match insn.i.memory_base() {
            Register::RSP | Register::RBP | Register::ESP | Register::EBP => Seg::Ss,
            _ => Seg::Ds,
        };
    }
    s
}

/// Size in bytes of operand `n`.
#[inline]
pub fn op_size(insn: &Insn, n: u32) -> u32 {
    if n == 0 && insn.osize != 0 {
        return insn.osize as u32;
    }
    if n == 1
        && let super::Opnd::Reg(g) = insn.op[1]
    {
        return g.size as u32;
    }
    match insn.i.op_kind(n) {
        OpKind::Register => insn.i.op_register(n).size() as u32,
        OpKind::Memory => insn.i.memory_size().size() as u32,
        OpKind::Immediate8 | OpKind::Immediate8_2nd => 1,
        OpKind::Immediate16 | OpKind::Immediate8to16 => 2,
        OpKind::Immediate32 | OpKind::Immediate8to32 => 4,
        _ => 8,
    }
}

/// A GPR operand that iced says is a register.
#[inline]
pub fn reg_op(insn: &Insn, n: u32) -> Result<GprRef, Fault> {
    gpr(insn.i.op_register(n)).ok_or_else(|| Fault::unimplemented(format!("non-GPR operand in {}", insn.i)))
}

/// Reads operand `n` (register, memory or immediate) of `size` bytes.
#[inline(always)]
pub fn read_op(ctx: &mut Ctx<'_>, insn: &Insn, n: u32) -> Result<u64, Fault> {
    if n < 2 {
        match insn.op[n as usize] {
            super::Opnd::Reg(g) => return Ok(ctx.st.read_gpr(g.gpr())),
            super::Opnd::Imm(v) => return Ok(v),
            _ => {}
        }
    }
    read_op_slow(ctx, insn, n)
}

#[inline(never)]
fn read_op_slow(ctx: &mut Ctx<'_>, insn: &Insn, n: u32) -> Result<u64, Fault> {
    match insn.i.op_kind(n) {
        OpKind::Register => {
            let g = reg_op(insn, n)?;
            Ok(ctx.st.read_gpr(g))
        }
        OpKind::Memory => {
            let off = ea(ctx, insn);
            let size = insn.i.memory_size().size() as u32;
            ctx.read_mem(mem_seg(insn), off, size)
        }
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64
        | OpKind::Immediate8_2nd => Ok(insn.i.immediate(n)),
        k => Err(Fault::unimplemented(format!("operand kind {k:?} in {}", insn.i))),
    }
}

/// Writes operand `n` (register or memory).
#[inline(always)]
pub fn write_op(ctx: &mut Ctx<'_>, insn: &Insn, n: u32, v: u64) -> Result<(), Fault> {
    if n < 2
        && let super::Opnd::Reg(g) = insn.op[n as usize]
    {
        ctx.st.write_gpr(g.gpr(), v);
        return Ok(());
    }
    write_op_slow(ctx, insn, n, v)
}

#[inline(never)]
fn write_op_slow(ctx: &mut Ctx<'_>, insn: &Insn, n: u32, v: u64) -> Result<(), Fault> {
    match insn.i.op_kind(n) {
        OpKind::Register => {
            let g = reg_op(insn, n)?;
            ctx.st.write_gpr(g, v);
            Ok(())
        }
        OpKind::Memory => {
            let off = ea(ctx, insn);
            let size = insn.i.memory_size().size() as u32;
            ctx.write_mem(mem_seg(insn), off, size, v)
        }
        k => Err(Fault::unimplemented(format!("write to operand kind {k:?} in {}", insn.i))),
    }
}

/// A resolved read-modify-write location.
#[derive(Clone, Copy, Debug)]
pub enum Loc {
    /// A register.
    Reg(GprRef),
    /// Memory at a linear address, of `size` bytes, already checked for writing: it is read
    /// through the write translation too, as the JIT's inline read-modify-write forms read through
    /// the write TLB entry they probed, so both engines leave the same TLB (the read TLB is not
    /// filled by a read-modify-write).
    Mem {
        /// Linear address.
        lin: u64,
        /// Size in bytes.
        size: u32,
    },
    /// Memory that is only read (BT m), through the read translation.
    MemRead {
        /// Linear address.
        lin: u64,
        /// Size in bytes.
        size: u32,
    },
}

/// Resolves operand `n` as a read-modify-write destination: memory is checked for writing first (so a
/// fault reports a write access, as hardware does for RMW instructions).
#[inline(always)]
pub fn loc(ctx: &mut Ctx<'_>, insn: &Insn, n: u32) -> Result<Loc, Fault> {
    if n < 2
        && let super::Opnd::Reg(g) = insn.op[n as usize]
    {
        return Ok(Loc::Reg(g.gpr()));
    }
    loc_slow(ctx, insn, n)
}

#[inline(never)]
fn loc_slow(ctx: &mut Ctx<'_>, insn: &Insn, n: u32) -> Result<Loc, Fault> {
    match insn.i.op_kind(n) {
        OpKind::Register => Ok(Loc::Reg(reg_op(insn, n)?)),
        OpKind::Memory => {
            let off = ea(ctx, insn);
            let size = insn.i.memory_size().size() as u32;
            let lin = ctx.seg_lin(mem_seg(insn), off, size, AccessKind::Write)?;
            ctx.check_alignment(lin, size)?;
            ctx.probe_write(lin, size)?;
            Ok(Loc::Mem { lin, size })
        }
        k => Err(Fault::unimplemented(format!("operand kind {k:?} as destination in {}", insn.i))),
    }
}

/// Reads a resolved location.
#[inline(always)]
pub fn loc_read(ctx: &mut Ctx<'_>, l: Loc) -> Result<u64, Fault> {
    match l {
        Loc::Reg(g) => Ok(ctx.st.read_gpr(g)),
        Loc::Mem { lin, size } => mem_read(ctx, lin, size, AccessKind::Write),
        Loc::MemRead { lin, size } => mem_read(ctx, lin, size, AccessKind::Read),
    }
}

#[inline(never)]
fn mem_read(ctx: &mut Ctx<'_>, lin: u64, size: u32, kind: AccessKind) -> Result<u64, Fault> {
    ctx.read_lin_as(lin, size, kind, false)
}

#[inline(never)]
fn mem_write(ctx: &mut Ctx<'_>, lin: u64, size: u32, v: u64) -> Result<(), Fault> {
    ctx.write_lin(lin, size, v)
}

/// Writes a resolved location.
#[inline(always)]
pub fn loc_write(ctx: &mut Ctx<'_>, l: Loc, v: u64) -> Result<(), Fault> {
    match l {
        Loc::Reg(g) => {
            ctx.st.write_gpr(g, v);
            Ok(())
        }
        Loc::Mem { lin, size } | Loc::MemRead { lin, size } => mem_write(ctx, lin, size, v),
    }
}

// ------------------------------------------------------------------------------------------- stack

/// The stack pointer's width in bytes (SS.B in legacy modes, 8 in 64-bit mode).
#[inline]
pub fn sp_size(ctx: &Ctx<'_>) -> u32 {
    ctx.st.stack_size()
}

/// Pushes `size` bytes.
#[inline]
pub fn push(ctx: &mut Ctx<'_>, size: u32, v: u64) -> Result<(), Fault> {
    let ss = sp_size(ctx);
    let sp = ctx.st.reg(4, ss).wrapping_sub(size as u64) & size_mask(ss);
    ctx.write_mem(Seg::Ss, sp, size, v)?;
    ctx.st.set_reg(4, ss, sp);
    Ok(())
}

/// Pops `size` bytes.
#[inline]
pub fn pop(ctx: &mut Ctx<'_>, size: u32) -> Result<u64, Fault> {
    let ss = sp_size(ctx);
    let sp = ctx.st.reg(4, ss);
    let v = ctx.read_mem(Seg::Ss, sp, size)?;
    ctx.st.set_reg(4, ss, sp.wrapping_add(size as u64) & size_mask(ss));
    Ok(v)
}

/// Reads `size` bytes at stack offset `SP + delta` without moving SP.
#[inline]
pub fn stack_peek(ctx: &mut Ctx<'_>, delta: u64, size: u32) -> Result<u64, Fault> {
    let ss = sp_size(ctx);
    let sp = ctx.st.reg(4, ss).wrapping_add(delta) & size_mask(ss);
    ctx.read_mem(Seg::Ss, sp, size)
}

// ------------------------------------------------------------------------------------------- flags

static PARITY: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = (i as u8).count_ones().is_multiple_of(2);
        i += 1;
    }
    t
};

/// PF, ZF and SF of a `size`-byte result.
#[inline]
pub fn szp(r: u64, size: u32) -> u64 {
    let r = r & size_mask(size);
    let mut f = 0;
    if PARITY[(r & 0xff) as usize] {
        f |= flags::PF;
    }
    if r == 0 {
        f |= flags::ZF;
    }
    if r & sign_bit(size) != 0 {
        f |= flags::SF;
    }
    f
}

/// Flags of `a + b + carry_in` = `r` at `size` bytes.
#[inline]
pub fn flags_add(a: u64, b: u64, cin: u64, r: u64, size: u32) -> u64 {
    let m = size_mask(size);
    let (a, b, r) = (a & m, b & m, r & m);
    let mut f = szp(r, size);
    let cf = if size == 8 {
        (a as u128 + b as u128 + cin as u128) >> 64 != 0
    } else {
        (a + b + cin) >> (size * 8) != 0
    };
    if cf {
        f |= flags::CF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= flags::AF;
    }
    if (!(a ^ b) & (a ^ r)) & sign_bit(size) != 0 {
        f |= flags::OF;
    }
    f
}

/// Flags of `a - b - borrow_in` = `r` at `size` bytes.
#[inline]
pub fn flags_sub(a: u64, b: u64, bin: u64, r: u64, size: u32) -> u64 {
    let m = size_mask(size);
    let (a, b, r) = (a & m, b & m, r & m);
    let mut f = szp(r, size);
    if (a as u128) < b as u128 + bin as u128 {
        f |= flags::CF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= flags::AF;
    }
    if ((a ^ b) & (a ^ r)) & sign_bit(size) != 0 {
        f |= flags::OF;
    }
    f
}

/// Flags of a logical operation (AND/OR/XOR/TEST): CF = OF = 0; AF is undefined and this host's CPUs
/// (Intel) clear it, so we clear it.
#[inline]
pub fn flags_logic(r: u64, size: u32) -> u64 {
    szp(r, size)
}

impl Ctx<'_> {
    /// Replaces the six arithmetic flags with `f`.
    #[inline]
    pub fn set_arith_flags(&mut self, f: u64) {
        self.st.rflags = (self.st.rflags & !flags::ARITH) | (f & flags::ARITH);
    }

    /// Replaces the flags in `mask` with those in `f`.
    #[inline]
    pub fn set_flags_masked(&mut self, f: u64, mask: u64) {
        self.st.rflags = (self.st.rflags & !mask) | (f & mask);
    }

    /// Whether flag `f` is set.
    #[inline]
    pub fn flag(&self, f: u64) -> bool {
        self.st.rflags & f != 0
    }
}

/// Evaluates condition code `cc` (the low nibble of Jcc/SETcc/CMOVcc opcodes) on `rflags`.
#[inline]
pub fn cond(cc: u32, rflags: u64) -> bool {
    let f = |m: u64| rflags & m != 0;
    let r = match cc >> 1 {
        0 => f(flags::OF),
        1 => f(flags::CF),
        2 => f(flags::ZF),
        3 => f(flags::CF) || f(flags::ZF),
        4 => f(flags::SF),
        5 => f(flags::PF),
        6 => f(flags::SF) != f(flags::OF),
        _ => f(flags::ZF) || (f(flags::SF) != f(flags::OF)),
    };
    r ^ (cc & 1 != 0)
}

/// The condition code of a Jcc/SETcc/CMOVcc instruction, from iced's condition code.
#[inline]
pub fn cc_of(insn: &Insn) -> u32 {
    use iced_x86::ConditionCode as C;
    match insn.i.condition_code() {
        C::o => 0,
        C::no => 1,
        C::b => 2,
        C::ae => 3,
        C::e => 4,
        C::ne => 5,
        C::be => 6,
        C::a => 7,
        C::s => 8,
        C::ns => 9,
        C::p => 10,
        C::np => 11,
        C::l => 12,
        C::ge => 13,
        C::le => 14,
        C::g => 15,
        C::None => 16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_sub_flags() {
        // 0x7f + 1 = 0x80 at 8 bits: OF, SF, AF.
        let f = flags_add(0x7f, 1, 0, 0x80, 1);
        assert_eq!(f, flags::OF | flags::SF | flags::AF);
        // 0xff + 1 = 0 at 8 bits: CF, ZF, AF, PF.
        let f = flags_add(0xff, 1, 0, 0x100, 1);
        assert_eq!(f, flags::CF | flags::ZF | flags::AF | flags::PF);
        // u64 max + 1 + carry.
        let f = flags_add(u64::MAX, 0, 1, 0, 8);
        assert!(f & flags::CF != 0 && f & flags::ZF != 0);
        // 0 - 1 at 16 bits: CF, SF, AF, PF.
        let f = flags_sub(0, 1, 0, 0xffff, 2);
        assert_eq!(f, flags::CF | flags::SF | flags::AF | flags::PF);
        // 0x80 - 1 = 0x7f at 8 bits: OF, AF.
        let f = flags_sub(0x80, 1, 0, 0x7f, 1);
        assert_eq!(f, flags::OF | flags::AF);
        // borrow-in at 64 bits.
        let f = flags_sub(5, 5, 1, u64::MAX, 8);
        assert!(f & flags::CF != 0);
    }

    #[test]
    fn conditions() {
        assert!(cond(4, flags::ZF));
        assert!(!cond(5, flags::ZF));
        assert!(cond(12, flags::SF));
        assert!(!cond(12, flags::SF | flags::OF));
        assert!(cond(15, 0));
        assert!(cond(6, flags::CF));
    }
}
