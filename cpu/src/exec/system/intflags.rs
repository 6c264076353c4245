//! INT n/INT3/INTO/INT1 (with the v86 IOPL and VME redirection rules), the interrupt and other
//! flags (CLI/STI with VIF, PUSHF/POPF, CLC/STC/CMC/CLD/STD, CLAC/STAC) and HLT.

use super::*;

pub(super) fn int_n(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let v = insn.i.immediate(0) as u8;
    if ctx.st.mode() == Mode::V86 {
        // CR4.VME: a clear bit in the TSS's interrupt redirection bitmap sends INT n to the 8086
        // program's own handler through its IVT (SDM Vol. 3A 20.3.3, table 20-2 methods 4 and 5).
        if ctx.st.cr4 & cr4::VME != 0 && !redirection_bit(ctx, v)? {
            return v86_redirected_int(ctx, v);
        }
        if ctx.st.iopl() < 3 {
            return Err(Fault::gp0());
        }
    }
    Err(Fault::Soft { vector: v, kind: SoftKind::IntN })
}

/// Bit `v` of the interrupt redirection bitmap: the 32 bytes below the I/O permission bitmap of the
/// current 32-bit TSS. #GP(0) if the TSS is not a 32-bit one or the byte lies past its limit.
pub(super) fn redirection_bit(ctx: &mut Ctx<'_>, v: u8) -> Result<bool, Fault> {
    let tr = ctx.st.tr;
    let t = tr.attr & 0xf;
    if !(t == 9 || t == 0xb) || tr.limit < 0x67 {
        return Err(Fault::gp0());
    }
    let io_base = ctx.read_lin_as(tr.base + 0x66, 2, crate::paging::AccessKind::Read, true)?;
    let byte = (io_base + u64::from(v >> 3)).wrapping_sub(32);
    if byte > u64::from(tr.limit) {
        return Err(Fault::gp0());
    }
    let b = ctx.read_lin_as(tr.base + byte, 1, crate::paging::AccessKind::Read, true)?;
    Ok(b & (1 << (v & 7)) != 0)
}

/// INT n redirected to the 8086 program's handler (CR4.VME, redirection bit clear): FLAGS, CS and IP
/// are pushed on the v86 stack and CS:IP is loaded from the v86 IVT at linear 4*n, as in real mode.
/// With IOPL = 3, IF and TF are cleared; with IOPL < 3 the pushed FLAGS carry VIF as IF and IOPL = 3,
/// and VIF and TF are cleared instead (SDM Vol. 3A 20.3.3.4-20.3.3.5).
pub(super) fn v86_redirected_int(ctx: &mut Ctx<'_>, v: u8) -> Result<(), Fault> {
    let fl = ctx.st.rflags;
    let iopl3 = ctx.st.iopl() == 3;
    let mut image = fl & 0xffff;
    if !iopl3 {
        image = (image & !flags::IF) | flags::IOPL | if fl & flags::VIF != 0 { flags::IF } else { 0 };
    }
    let vector = ctx.read_lin_as(u64::from(v) * 4, 4, crate::paging::AccessKind::Read, false)?;
    let (ip, cs) = (vector & 0xffff, (vector >> 16) as u16);
    let ret_ip = ctx.next_rip & 0xffff;
    let ret_cs = ctx.st.sreg(Seg::Cs).selector;
    let sp0 = ctx.st.gpr[4];
    for w in [image, u64::from(ret_cs), ret_ip] {
        if let Err(e) = push(ctx, 2, w) {
            ctx.st.gpr[4] = sp0;
            return Err(e);
        }
    }
    real_far(ctx, cs, ip);
    if iopl3 {
        ctx.st.rflags &= !(flags::IF | flags::TF);
    } else {
        ctx.st.rflags &= !(flags::VIF | flags::TF);
    }
    Ok(())
}

/// The VME/PVI rule that refuses to load an IF of 1 while an interrupt is virtually pending, or a TF of
/// 1 (POPF, IRET): #GP(0) if `(VIP and new IF) or new TF`.
pub(super) fn virtual_if_refused(ctx: &Ctx<'_>, new: u64) -> bool {
    (ctx.st.rflags & flags::VIP != 0 && new & flags::IF != 0) || new & flags::TF != 0
}

pub(super) fn set_vif(ctx: &mut Ctx<'_>, on: bool) {
    if on {
        ctx.st.rflags |= flags::VIF;
    } else {
        ctx.st.rflags &= !flags::VIF;
    }
}

/// Whether CLI/STI at an IOPL below CPL act on VIF: v86 mode with CR4.VME, or CPL 3 in protected mode
/// with CR4.PVI (SDM Vol. 2 CLI/STI, Vol. 3A 20.4).
pub(super) fn virtual_interrupt_flag(ctx: &Ctx<'_>) -> bool {
    match ctx.st.mode() {
        Mode::V86 => ctx.st.cr4 & cr4::VME != 0,
        Mode::Real => false,
        _ => ctx.st.cpl == 3 && ctx.st.cr4 & cr4::PVI != 0,
    }
}

pub(super) fn int3(_: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    Err(Fault::Soft { vector: 3, kind: SoftKind::Int3 })
}

pub(super) fn into(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    if ctx.st.mode() == Mode::Long64 {
        return Err(Fault::ud());
    }
    if ctx.st.rflags & flags::OF != 0 { Err(Fault::Soft { vector: 4, kind: SoftKind::Into }) } else { Ok(()) }
}

pub(super) fn int1(_: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    Err(Fault::Soft { vector: 1, kind: SoftKind::Icebp })
}

// ------------------------------------------------------------------------------ flags

pub(super) fn cli(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    if (protected(ctx) || ctx.st.mode() == Mode::V86) && ctx.st.iopl() < ctx.st.cpl {
        if virtual_interrupt_flag(ctx) {
            set_vif(ctx, false);
            return Ok(());
        }
        return Err(Fault::gp0());
    }
    ctx.st.rflags &= !flags::IF;
    Ok(())
}

pub(super) fn sti(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    if (protected(ctx) || ctx.st.mode() == Mode::V86) && ctx.st.iopl() < ctx.st.cpl {
        // VME/PVI: VIF is set unless an interrupt is virtually pending (VIP), which is #GP(0) for the
        // monitor to deliver it.
        if virtual_interrupt_flag(ctx) && ctx.st.rflags & flags::VIP == 0 {
            set_vif(ctx, true);
            return Ok(());
        }
        return Err(Fault::gp0());
    }
    if ctx.st.rflags & flags::IF == 0 {
        ctx.st.rflags |= flags::IF;
        // Interrupts stay inhibited until after the next instruction.
        ctx.st.irq_shadow_icount = ctx.st.icount + 1;
    }
    ctx.break_block = true;
    Ok(())
}

pub(super) fn pushf(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = match insn.i.code() {
        Code::Pushfw => 2,
        Code::Pushfd => 4,
        _ => 8,
    };
    if ctx.st.mode() == Mode::V86 && ctx.st.iopl() < 3 {
        // CR4.VME virtualises the 16-bit form: the image carries VIF as IF and IOPL = 3.
        if ctx.st.cr4 & cr4::VME != 0 && size == 2 {
            let fl = ctx.st.rflags;
            let image =
                (fl & 0xffff & !flags::IF) | flags::IOPL | if fl & flags::VIF != 0 { flags::IF } else { 0 };
            return push(ctx, 2, image);
        }
        return Err(Fault::gp0());
    }
    // VM and RF are pushed as 0.
    let v = ctx.st.rflags & !(flags::VM | flags::RF);
    push(ctx, size, v)
}

pub(super) fn popf(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = match insn.i.code() {
        Code::Popfw => 2,
        Code::Popfd => 4,
        _ => 8,
    };
    let mode = ctx.st.mode();
    if mode == Mode::V86 && ctx.st.iopl() < 3 {
        // CR4.VME virtualises the 16-bit form: IF goes to VIF, IOPL stays; a popped TF, or IF while VIP
        // is set, is #GP(0) with nothing popped.
        if ctx.st.cr4 & cr4::VME != 0 && size == 2 {
            let v = stack_peek(ctx, 0, 2)?;
            if virtual_if_refused(ctx, v) {
                return Err(Fault::gp0());
            }
            pop(ctx, 2)?;
            set_vif(ctx, v & flags::IF != 0);
            set_rflags(ctx, v, (flags::ARITH | flags::DF | flags::NT) & 0xffff);
            return Ok(());
        }
        return Err(Fault::gp0());
    }
    let v = pop(ctx, size)?;
    let cpl = ctx.st.cpl;
    let mut mask = flags::ARITH | flags::TF | flags::DF | flags::NT | flags::AC | flags::ID;
    let iopl = ctx.st.iopl();
    match mode {
        Mode::Real => mask |= flags::IF | flags::IOPL,
        Mode::V86 => mask |= flags::IF,
        _ => {
            if cpl == 0 {
                mask |= flags::IOPL | flags::IF;
            } else if cpl <= iopl {
                mask |= flags::IF;
            }
        }
    }
    if size == 2 {
        mask &= 0xffff;
    }
    set_rflags(ctx, v, mask);
    Ok(())
}

pub(super) fn hlt(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)?;
    ctx.st.halted = true;
    ctx.break_block = true;
    Ok(())
}

pub(super) fn clc(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    ctx.st.rflags &= !flags::CF;
    Ok(())
}
pub(super) fn stc(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    ctx.st.rflags |= flags::CF;
    Ok(())
}
pub(super) fn cmc(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    ctx.st.rflags ^= flags::CF;
    Ok(())
}
pub(super) fn cld(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    ctx.st.rflags &= !flags::DF;
    Ok(())
}
pub(super) fn std_(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    ctx.st.rflags |= flags::DF;
    Ok(())
}

pub(super) fn clac(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    if ctx.st.cpl != 0 || ctx.st.mode() == Mode::V86 || feat7(cpuid::feat::LEAF7_EBX, 20) {
        return Err(Fault::ud());
    }
    set_ac(ctx, false);
    Ok(())
}

pub(super) fn stac(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    if ctx.st.cpl != 0 || ctx.st.mode() == Mode::V86 || feat7(cpuid::feat::LEAF7_EBX, 20) {
        return Err(Fault::ud());
    }
    set_ac(ctx, true);
    Ok(())
}

/// CLAC's and STAC's change (at CPL 0, the only one where they run): RFLAGS.AC, with what
/// `far::set_rflags` does for it (the access tag, which reads AC only at CPL 3; clearing AC under
/// SMAP drops the TLB entries it allowed) but without `Ctx::break_block`: nothing the checks
/// between blocks look at changes, so a block that ends with them chains (`interp::chains`).
fn set_ac(ctx: &mut Ctx<'_>, on: bool) {
    let old = ctx.st.rflags;
    ctx.st.rflags = if on { old | flags::AC } else { old & !flags::AC };
    ctx.privilege_changed();
    if old & !ctx.st.rflags & flags::AC != 0 && ctx.st.cr4 & cr4::SMAP != 0 {
        ctx.mmu.tlb.drop_smap_entries();
    }
}

pub(super) fn feat7(mask: u32, bit: u32) -> bool {
    mask & (1 << bit) == 0
}
