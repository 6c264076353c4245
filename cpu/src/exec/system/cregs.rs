//! Control and debug registers (MOV CRn/DRn, SMSW/LMSW/CLTS, the CR4 bits a model allows, CR0
//! writes), and the cache and TLB instructions (INVLPG, WBINVD/INVD, CLFLUSH).

use super::*;

pub(super) fn smsw(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if ctx.st.cr4 & cr4::UMIP != 0 && ctx.st.cpl > 0 && protected(ctx) {
        return Err(Fault::gp0());
    }
    let v = ctx.st.cr0;
    if insn.i.op0_kind() == OpKind::Memory {
        let off = ea(ctx, insn);
        ctx.write_mem(mem_seg(insn), off, 2, v & 0xffff)
    } else {
        let size = op_size(insn, 0);
        write_op(ctx, insn, 0, v & size_mask(size))
    }
}

pub(super) fn lmsw(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)?;
    let v = read_op(ctx, insn, 0)? & 0xf;
    // LMSW can set PE but never clear it.
    let new = (ctx.st.cr0 & !0xe) | (v & 0xf) | (ctx.st.cr0 & cr0::PE);
    write_cr0(ctx, new)
}

pub(super) fn clts(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)?;
    ctx.st.cr0 &= !cr0::TS;
    Ok(())
}

pub(super) fn invlpg(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)?;
    let off = ea(ctx, insn);
    let s = mem_seg(insn);
    let lin = if ctx.st.mode() == Mode::Long64 {
        let b = if matches!(s, Seg::Fs | Seg::Gs) { ctx.st.sreg(s).base } else { 0 };
        b.wrapping_add(off)
    } else {
        ctx.st.sreg(s).base.wrapping_add(off) & 0xffff_ffff
    };
    ctx.mmu.tlb.flush_page(lin);
    ctx.break_block = true;
    Ok(())
}

pub(super) fn privileged_nop(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)
}

pub(super) fn clflush(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    // Checks the address like a byte read; caches are not modelled.
    let off = ea(ctx, insn);
    let lin = ctx.seg_lin(mem_seg(insn), off, 1, crate::paging::AccessKind::Read)?;
    ctx.lin_to_phys(lin, crate::paging::AccessKind::Read)?;
    Ok(())
}

pub(super) fn cr_index(r: Register) -> Option<usize> {
    let n = (r as u32).wrapping_sub(Register::CR0 as u32);
    (n < 16).then_some(n as usize)
}

pub(super) fn mov_from_cr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)?;
    let n = cr_index(insn.i.op1_register()).ok_or_else(Fault::ud)?;
    let v = match n {
        0 => ctx.st.cr0,
        2 => ctx.st.cr2,
        3 => ctx.st.cr3,
        4 => ctx.st.cr4,
        8 => ctx.st.cr8,
        _ => return Err(Fault::ud()),
    };
    let g = reg_op(insn, 0)?;
    ctx.st.write_gpr(g, v & size_mask(g.size));
    Ok(())
}

/// CR4 bits software may set on the default model (only features Ferrite implements and advertises;
/// [`crate::model::CpuModel::cr4_valid`] adjusts them to a model).
pub const CR4_VALID: u64 = cr4::TSD
    | cr4::DE
    | cr4::PSE
    | cr4::PAE
    | cr4::PGE
    | cr4::PCE
    | cr4::OSFXSR
    | cr4::OSXMMEXCPT
    | cr4::OSXSAVE
    | cr4::FSGSBASE
    | cr4::SMEP
    | cr4::SMAP;

/// The CR4 bits this CPU lets software set: [`CR4_VALID`] adjusted to its model (VME and PVI only
/// while the model advertises VME, CPUID.1:EDX[1]).
pub fn cr4_valid(st: &crate::state::CpuState) -> u64 {
    st.model.cr4_valid(CR4_VALID)
}

/// Writes CR0 with the architectural checks and side effects (long-mode activation, TLB flush).
pub fn write_cr0(ctx: &mut Ctx<'_>, v: u64) -> Result<(), Fault> {
    if v >> 32 != 0 {
        return Err(Fault::gp0());
    }
    let v = v | cr0::ET;
    if v & cr0::PG != 0 && v & cr0::PE == 0 {
        return Err(Fault::gp0());
    }
    if v & cr0::NW != 0 && v & cr0::CD == 0 {
        return Err(Fault::gp0());
    }
    let old = ctx.st.cr0;
    let pg_on = v & cr0::PG != 0 && old & cr0::PG == 0;
    let pg_off = v & cr0::PG == 0 && old & cr0::PG != 0;
    if pg_on && ctx.st.efer & efer::LME != 0 {
        if ctx.st.cr4 & cr4::PAE == 0 {
            return Err(Fault::gp0());
        }
        if ctx.st.sreg(Seg::Cs).long() {
            return Err(Fault::gp0());
        }
        ctx.st.efer |= efer::LMA;
    }
    if pg_off && ctx.st.cr4 & cr4::PCIDE != 0 {
        // Paging cannot be turned off with PCIDs enabled (SDM MOV to CR0).
        return Err(Fault::gp0());
    }
    if pg_off && ctx.st.efer & efer::LMA != 0 {
        if ctx.st.mode() == Mode::Long64 {
            return Err(Fault::gp0());
        }
        ctx.st.efer &= !efer::LMA;
    }
    ctx.st.cr0 = v;
    if (old ^ v) & (cr0::PG | cr0::WP | cr0::PE) != 0 {
        ctx.mmu.tlb.flush(false);
    }
    ctx.break_block = true;
    Ok(())
}

pub(super) fn mov_to_cr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)?;
    let n = cr_index(insn.i.op0_register()).ok_or_else(Fault::ud)?;
    let g = reg_op(insn, 1)?;
    let v = ctx.st.read_gpr(g);
    ctx.break_block = true;
    match n {
        0 => write_cr0(ctx, v),
        2 => {
            ctx.st.cr2 = v;
            Ok(())
        }
        3 => {
            // With CR4.PCIDE = 1, bit 63 asks to keep the PCID's TLB entries; it is not stored (and
            // every entry is flushed anyway: the TLB is not tagged by PCID).
            let v = if ctx.st.cr4 & cr4::PCIDE != 0 { v & !(1 << 63) } else { v };
            if ctx.st.efer & efer::LMA != 0 && v >> crate::cpuid::PHYS_ADDR_BITS != 0 {
                return Err(Fault::gp0());
            }
            ctx.st.cr3 = v;
            ctx.mmu.tlb.flush(true);
            Ok(())
        }
        4 => {
            if v & !cr4_valid(ctx.st) != 0 {
                return Err(Fault::gp0());
            }
            let old = ctx.st.cr4;
            // PCIDE can be set only in IA-32e mode with CR3[11:0] = 0 (SDM MOV to CR4).
            if v & !old & cr4::PCIDE != 0 && (ctx.st.efer & efer::LMA == 0 || ctx.st.cr3 & 0xfff != 0) {
                return Err(Fault::gp0());
            }
            if ctx.st.efer & efer::LMA != 0 && v & cr4::PAE == 0 {
                return Err(Fault::gp0());
            }
            ctx.st.cr4 = v;
            if (old ^ v) & (cr4::PGE | cr4::PAE | cr4::PSE | cr4::SMEP | cr4::SMAP | cr4::PCIDE) != 0 {
                ctx.mmu.tlb.flush(false);
            }
            Ok(())
        }
        8 => {
            if v >> 4 != 0 {
                return Err(Fault::gp0());
            }
            ctx.st.cr8 = v;
            Ok(())
        }
        _ => Err(Fault::ud()),
    }
}

pub(super) fn dr_index(r: Register) -> Option<usize> {
    let n = (r as u32).wrapping_sub(Register::DR0 as u32);
    (n < 16).then_some(n as usize)
}

/// General detect (DR7.GD): any MOV to or from a debug register is a fault-class #DB with DR6.BD set
/// (SDM Vol. 3B 17.2.4); it comes after the CPL check and before the DR4/DR5 #UD. The processor clears
/// GD when it enters the #DB handler (done by the interpreter on every #DB delivery).
pub(super) fn general_detect(ctx: &mut Ctx<'_>) -> Result<(), Fault> {
    if ctx.st.dr[7] & crate::debug::dr7::GD != 0 {
        ctx.st.dr[6] |= crate::debug::dr6::BD;
        return Err(Fault::Exc { vector: crate::fault::vec::DB, error: None });
    }
    Ok(())
}

/// The checks common to MOV from/to DRn, in the SDM's order: CPL 0 (#GP), general detect (#DB), then
/// the register: DR4/DR5 alias DR6/DR7 unless CR4.DE (then #UD); DR8-15 are #UD. Returns the index.
pub(super) fn dr_operand(ctx: &mut Ctx<'_>, r: Register) -> Result<usize, Fault> {
    require_cpl0(ctx)?;
    general_detect(ctx)?;
    let mut n = dr_index(r).ok_or_else(Fault::ud)?;
    if n == 4 || n == 5 {
        if ctx.st.cr4 & cr4::DE != 0 {
            return Err(Fault::ud());
        }
        n += 2;
    }
    if n > 7 {
        return Err(Fault::ud());
    }
    Ok(n)
}

pub(super) fn mov_from_dr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let n = dr_operand(ctx, insn.i.op1_register())?;
    let v = ctx.st.dr[n];
    let g = reg_op(insn, 0)?;
    ctx.st.write_gpr(g, v & size_mask(g.size));
    Ok(())
}

pub(super) fn mov_to_dr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let n = dr_operand(ctx, insn.i.op0_register())?;
    let g = reg_op(insn, 1)?;
    let v = ctx.st.read_gpr(g);
    if (n == 6 || n == 7) && v >> 32 != 0 {
        return Err(Fault::gp0());
    }
    ctx.st.dr[n] = match n {
        6 => (v & 0x0001_e00f) | 0xffff_0ff0,
        7 => (v & 0xffff_2bff) | 0x400,
        _ => v,
    };
    if ctx.mmu.debug.sync(ctx.st) {
        // A newly watched data page may be cached in the TLB.
        ctx.mmu.tlb.flush(false);
    }
    Ok(())
}
