//! Descriptor-table instructions: LGDT/LIDT/SGDT/SIDT, LLDT/LTR (with the IA-32e 16-byte
//! descriptor checks), SLDT/STR.

use super::*;

pub(super) fn table_operand(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(Seg, u64), Fault> {
    if insn.i.op0_kind() != OpKind::Memory {
        return Err(Fault::ud());
    }
    Ok((mem_seg(insn), ea(ctx, insn)))
}

pub(super) fn load_table(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(u32, u64), Fault> {
    require_cpl0(ctx)?;
    let (s, off) = table_operand(ctx, insn)?;
    let limit = ctx.read_mem(s, off, 2)? as u32;
    let next = off.wrapping_add(2) & size_mask(insn.asize as u32);
    let base = if ctx.st.mode() == Mode::Long64 {
        let b = ctx.read_mem(s, next, 8)?;
        if !is_canonical(b) {
            return Err(Fault::gp0());
        }
        b
    } else {
        let b = ctx.read_mem(s, next, 4)?;
        // With a 16-bit operand size only 24 bits of the base are loaded.
        if matches!(insn.i.code(), Code::Lgdt_m1632_16 | Code::Lidt_m1632_16) { b & 0xff_ffff } else { b }
    };
    ctx.break_block = true;
    Ok((limit, base))
}

pub(super) fn lgdt(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let (limit, base) = load_table(ctx, insn)?;
    ctx.st.gdtr.limit = limit;
    ctx.st.gdtr.base = base;
    Ok(())
}

pub(super) fn lidt(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let (limit, base) = load_table(ctx, insn)?;
    ctx.st.idtr.limit = limit;
    ctx.st.idtr.base = base;
    Ok(())
}

pub(super) fn store_table(ctx: &mut Ctx<'_>, insn: &Insn, limit: u32, base: u64) -> Result<(), Fault> {
    if ctx.st.cr4 & cr4::UMIP != 0 && ctx.st.cpl > 0 {
        return Err(Fault::gp0());
    }
    let (s, off) = table_operand(ctx, insn)?;
    let next = off.wrapping_add(2) & size_mask(insn.asize as u32);
    let bsize = if ctx.st.mode() == Mode::Long64 { 8 } else { 4 };
    let lin_a = ctx.seg_lin(s, off, 2, crate::paging::AccessKind::Write)?;
    let lin_b = ctx.seg_lin(s, next, bsize, crate::paging::AccessKind::Write)?;
    ctx.probe_write(lin_a, 2)?;
    ctx.probe_write(lin_b, bsize)?;
    ctx.write_lin(lin_a, 2, limit as u64)?;
    ctx.write_lin(lin_b, bsize, base)
}

pub(super) fn sgdt(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let (l, b) = (ctx.st.gdtr.limit, ctx.st.gdtr.base);
    store_table(ctx, insn, l, b)
}

pub(super) fn sidt(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let (l, b) = (ctx.st.idtr.limit, ctx.st.idtr.base);
    store_table(ctx, insn, l, b)
}

pub(super) fn sys_sel_operand(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<u16, Fault> {
    if !protected(ctx) {
        return Err(Fault::ud());
    }
    require_cpl0(ctx)?;
    Ok(read_op(ctx, insn, 0)? as u16)
}

/// The 64-bit base of the 16-byte LDT or TSS descriptor `sel` (IA-32e mode), whose low 32 bits are
/// `low`: #GP(selector) if the type field of the upper eight bytes (bits 12:8 of its high dword) is not
/// zero (SDM vol. 3A figure 8-4, "must be zero"; LTR/LLDT in vol. 2) or the base is not canonical (LTR
/// and LLDT: "IF IA32_EFER.LMA = 1 and the descriptor's base is not canonical, #GP(selector)").
pub(super) fn long_system_base(ctx: &mut Ctx<'_>, sel: u16, low: u64) -> Result<u64, Fault> {
    let hi = ctx.read_desc_high(sel, Fault::gp(sel_err(sel)))?;
    let base = (low & 0xffff_ffff) | ((hi & 0xffff_ffff) << 32);
    if (hi >> 40) & 0x1f != 0 || !is_canonical(base) {
        return Err(Fault::gp(sel_err(sel)));
    }
    Ok(base)
}

pub(super) fn lldt(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let sel = sys_sel_operand(ctx, insn)?;
    ctx.break_block = true;
    if sel & !3 == 0 {
        ctx.st.ldtr = crate::state::Segment { selector: sel, attr: 0, limit: 0, base: 0 };
        return Ok(());
    }
    if sel & 4 != 0 {
        return Err(Fault::gp(sel_err(sel)));
    }
    let d = ctx.read_desc(sel, Fault::gp(sel_err(sel)))?;
    if d.s() || d.typ() != 2 {
        return Err(Fault::gp(sel_err(sel)));
    }
    if !d.present() {
        return Err(Fault::np(sel_err(sel)));
    }
    let mut seg = d.to_segment(sel);
    if ctx.st.efer & efer::LMA != 0 {
        seg.base = long_system_base(ctx, sel, seg.base)?;
    }
    ctx.st.ldtr = seg;
    Ok(())
}

pub(super) fn ltr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let sel = sys_sel_operand(ctx, insn)?;
    ctx.break_block = true;
    if sel & !3 == 0 {
        return Err(Fault::gp0());
    }
    if sel & 4 != 0 {
        return Err(Fault::gp(sel_err(sel)));
    }
    let d = ctx.read_desc(sel, Fault::gp(sel_err(sel)))?;
    let long = ctx.st.efer & efer::LMA != 0;
    let ok_type = if long { d.typ() == 9 } else { d.typ() == 1 || d.typ() == 9 };
    if d.s() || !ok_type {
        return Err(Fault::gp(sel_err(sel)));
    }
    if !d.present() {
        return Err(Fault::np(sel_err(sel)));
    }
    let mut seg = d.to_segment(sel);
    if long {
        seg.base = long_system_base(ctx, sel, seg.base)?;
    }
    ctx.set_tss_busy(sel, true)?;
    seg.attr |= 2;
    ctx.st.tr = seg;
    Ok(())
}

pub(super) fn store_sel(ctx: &mut Ctx<'_>, insn: &Insn, v: u16) -> Result<(), Fault> {
    if !protected(ctx) {
        return Err(Fault::ud());
    }
    if ctx.st.cr4 & cr4::UMIP != 0 && ctx.st.cpl > 0 {
        return Err(Fault::gp0());
    }
    if insn.i.op0_kind() == OpKind::Memory {
        let off = ea(ctx, insn);
        ctx.write_mem(mem_seg(insn), off, 2, v as u64)
    } else {
        write_op(ctx, insn, 0, v as u64)
    }
}

pub(super) fn sldt(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let v = ctx.st.ldtr.selector;
    store_sel(ctx, insn, v)
}

pub(super) fn str_(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let v = ctx.st.tr.selector;
    store_sel(ctx, insn, v)
}

#[cfg(test)]
mod long_system_descriptor_tests {
    use crate::interp::Exit;
    use crate::testutil::*;
    use iced_x86::code_asm::*;

    /// A 16-byte system descriptor (type `typ`, present, limit 0x67) with `base`, and `upper_type` in
    /// bits 12:8 of its high dword.
    fn desc16(typ: u64, base: u64, upper_type: u64) -> [u8; 16] {
        let lo = 0x67 | ((base & 0xff_ffff) << 16) | (typ << 40) | (1 << 47) | (((base >> 24) & 0xff) << 56);
        let hi = (base >> 32) | (upper_type << 40);
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&lo.to_le_bytes());
        d[8..].copy_from_slice(&hi.to_le_bytes());
        d
    }

    /// Runs `ltr ax` (TSS at 0x20) or `lldt ax` (LDT at 0x30) in long mode with that descriptor; an
    /// exception escalates (empty IDT) so the instruction never retires. Returns (retired, TR/LDTR base).
    fn load(ltr: bool, base: u64, upper_type: u64) -> (bool, u64) {
        let code = asm(64, |a| {
            a.mov(ax, if ltr { 0x20 } else { 0x30 }).unwrap();
            if ltr {
                a.ltr(ax).unwrap();
            } else {
                a.lldt(ax).unwrap();
            }
            a.nop().unwrap();
        });
        let (st, _, exit) = run(TestMode::Long64, &code, |st, bus| {
            st.gdtr.limit = 0x3f;
            st.idtr.limit = 0;
            let (at, typ) = if ltr { (0x520, 9) } else { (0x530, 2) };
            bus.ram[at..at + 16].copy_from_slice(&desc16(typ, base, upper_type));
        });
        let retired = exit == Exit::Halted;
        (retired, if ltr { st.tr.base } else { st.ldtr.base })
    }

    /// LTR and LLDT in IA-32e mode: a canonical 64-bit base loads; a non-canonical one, or a non-zero
    /// type in the upper eight bytes, is #GP(selector) and nothing loads.
    #[test]
    fn ltr_lldt_check_the_upper_half() {
        for ltr in [true, false] {
            let good = 0xffff_8000_1234_5000;
            assert_eq!(load(ltr, good, 0), (true, good), "ltr={ltr}");
            for bad in [0x0000_8000_0000_0000u64, 0x1234_0000_0000_0000] {
                let (retired, b) = load(ltr, bad, 0);
                assert!(!retired && b != bad, "ltr={ltr} base {bad:#x}");
            }
            let (retired, _) = load(ltr, good, 0x1f);
            assert!(!retired, "ltr={ltr} upper type");
        }
    }
}
