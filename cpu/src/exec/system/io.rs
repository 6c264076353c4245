//! Port I/O: IN/OUT with the IOPL and TSS I/O-permission-bitmap checks.

use super::*;

/// Checks I/O permission for `size` bytes at `port`: IOPL, then the TSS I/O permission bitmap
/// (protected mode with CPL > IOPL, and always in v86 mode). #GP(0) if denied.
pub fn check_io(ctx: &mut Ctx<'_>, port: u16, size: u32) -> Result<(), Fault> {
    let mode = ctx.st.mode();
    if mode == Mode::Real {
        return Ok(());
    }
    if mode != Mode::V86 && ctx.st.cpl <= ctx.st.iopl() {
        return Ok(());
    }
    let tr = ctx.st.tr;
    let t = tr.attr & 0xf;
    if !(t == 9 || t == 0xb) || tr.limit < 0x67 {
        return Err(Fault::gp0());
    }
    let base_off = ctx.read_lin_as(tr.base + 0x66, 2, crate::paging::AccessKind::Read, true)?;
    let byte = base_off + (port as u64 >> 3);
    if byte + 1 > tr.limit as u64 {
        return Err(Fault::gp0());
    }
    let bits = ctx.read_lin_as(tr.base + byte, 2, crate::paging::AccessKind::Read, true)?;
    let mask = ((1u64 << size) - 1) << (port & 7);
    if bits & mask != 0 { Err(Fault::gp0()) } else { Ok(()) }
}

pub(super) fn io_port(ctx: &Ctx<'_>, insn: &Insn, n: u32) -> u16 {
    match insn.i.op_kind(n) {
        OpKind::Immediate8 => insn.i.immediate8() as u16,
        _ => ctx.st.gpr[2] as u16,
    }
}

pub(super) fn in_(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let port = io_port(ctx, insn, 1);
    let g = reg_op(insn, 0)?;
    check_io(ctx, port, g.size)?;
    let v = ctx.io_in(port, g.size as u8);
    ctx.st.write_gpr(g, v as u64);
    ctx.break_block = true;
    Ok(())
}

pub(super) fn out(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let port = io_port(ctx, insn, 0);
    let g = reg_op(insn, 1)?;
    check_io(ctx, port, g.size)?;
    let v = ctx.st.read_gpr(g) as u32;
    ctx.io_out(port, g.size as u8, v);
    ctx.break_block = true;
    Ok(())
}
