//! Segment-register moves, pushes and pops (MOV Sreg, PUSH/POP Sreg).

use super::*;

pub(super) fn mov_from_sreg(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let s = sreg(insn.i.op1_register()).ok_or_else(Fault::ud)?;
    let v = ctx.st.sreg(s).selector as u64;
    if insn.i.op0_kind() == OpKind::Memory {
        let off = ea(ctx, insn);
        ctx.write_mem(mem_seg(insn), off, 2, v)
    } else {
        // A register destination gets the selector zero-extended to the operand size.
        write_op(ctx, insn, 0, v)
    }
}

pub(super) fn mov_to_sreg(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let s = sreg(insn.i.op0_register()).ok_or_else(Fault::ud)?;
    if s == Seg::Cs {
        return Err(Fault::ud());
    }
    let sel = read_op(ctx, insn, 1)? as u16;
    ctx.load_seg(s, sel)?;
    if s == Seg::Ss {
        ctx.st.irq_shadow_icount = ctx.st.icount + 1;
    }
    ctx.break_block = true;
    Ok(())
}

pub(super) fn push_sreg(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let s = sreg(insn.i.op0_register()).ok_or_else(Fault::ud)?;
    let size = match insn.i.code() {
        Code::Pushw_ES
        | Code::Pushw_CS
        | Code::Pushw_SS
        | Code::Pushw_DS
        | Code::Pushw_FS
        | Code::Pushw_GS => 2,
        Code::Pushq_FS | Code::Pushq_GS => 8,
        _ => 4,
    };
    let v = ctx.st.sreg(s).selector as u64;
    if size == 2 {
        return push(ctx, 2, v);
    }
    // A 32/64-bit push of a segment register writes only the low 16 bits on Intel CPUs.
    let ss = sp_size(ctx);
    let sp = ctx.st.reg(4, ss).wrapping_sub(size as u64) & size_mask(ss);
    ctx.seg_lin(Seg::Ss, sp, size, crate::paging::AccessKind::Write)?;
    ctx.write_mem(Seg::Ss, sp, 2, v)?;
    ctx.st.set_reg(4, ss, sp);
    Ok(())
}

pub(super) fn pop_sreg(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let s = sreg(insn.i.op0_register()).ok_or_else(Fault::ud)?;
    let size = match insn.i.code() {
        Code::Popw_ES | Code::Popw_SS | Code::Popw_DS | Code::Popw_FS | Code::Popw_GS => 2,
        Code::Popq_FS | Code::Popq_GS => 8,
        _ => 4,
    };
    let sel = stack_peek(ctx, 0, size)? as u16;
    ctx.load_seg(s, sel)?;
    let ss = sp_size(ctx);
    let sp = ctx.st.reg(4, ss).wrapping_add(size as u64) & size_mask(ss);
    ctx.st.set_reg(4, ss, sp);
    if s == Seg::Ss {
        ctx.st.irq_shadow_icount = ctx.st.icount + 1;
    }
    ctx.break_block = true;
    Ok(())
}
