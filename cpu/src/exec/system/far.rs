//! Far transfers: JMP/CALL far (direct, through call gates and task gates), RETF and IRET in every
//! mode (v86 return, nested-task return, 64-bit IRET).

use super::*;

/// Reads a far pointer operand: (selector, offset).
pub(super) fn far_operand(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(u16, u64, u32), Fault> {
    match insn.i.op0_kind() {
        OpKind::FarBranch16 => Ok((insn.i.far_branch_selector(), insn.i.far_branch16() as u64, 2)),
        OpKind::FarBranch32 => Ok((insn.i.far_branch_selector(), insn.i.far_branch32() as u64, 4)),
        _ => {
            let osz = match insn.i.code() {
                Code::Jmp_m1616 | Code::Call_m1616 => 2,
                Code::Jmp_m1632 | Code::Call_m1632 => 4,
                _ => 8,
            };
            let off = ea(ctx, insn);
            let s = mem_seg(insn);
            let o = ctx.read_mem(s, off, osz)?;
            let sel = ctx.read_mem(s, off.wrapping_add(osz as u64) & size_mask(insn.asize as u32), 2)? as u16;
            Ok((sel, o, osz))
        }
    }
}

/// Loads CS for a far JMP/CALL/RET at the same privilege level after the descriptor checks, and sets
/// RIP. `d` is the code segment descriptor.
pub(super) fn set_cs(ctx: &mut Ctx<'_>, sel: u16, d: Desc, rip: u64, cpl: u8) -> Result<(), Fault> {
    let long_cs = ctx.st.efer & efer::LMA != 0 && d.long();
    if !long_cs && rip > d.limit() as u64 {
        return Err(Fault::gp0());
    }
    if long_cs && !is_canonical(rip) {
        return Err(Fault::gp0());
    }
    ctx.set_accessed(sel, d)?;
    *ctx.st.sreg_mut(Seg::Cs) = Desc(d.0 | (1 << 40)).to_segment((sel & !3) | cpl as u16);
    ctx.st.cpl = cpl;
    ctx.privilege_changed();
    ctx.next_rip = rip;
    ctx.break_block = true;
    Ok(())
}

/// Checks a code segment selector as a direct far JMP/CALL target at the current CPL.
pub(super) fn check_direct_code(ctx: &mut Ctx<'_>, sel: u16, d: Desc) -> Result<(), Fault> {
    let cpl = ctx.st.cpl;
    let rpl = (sel & 3) as u8;
    if d.conforming() {
        if d.dpl() > cpl {
            return Err(Fault::gp(sel_err(sel)));
        }
    } else if rpl > cpl || d.dpl() != cpl {
        return Err(Fault::gp(sel_err(sel)));
    }
    if !d.present() {
        return Err(Fault::np(sel_err(sel)));
    }
    if ctx.st.efer & efer::LMA != 0 && d.long() && d.big() {
        return Err(Fault::gp(sel_err(sel)));
    }
    Ok(())
}

pub(super) fn real_far(ctx: &mut Ctx<'_>, sel: u16, off: u64) {
    let r = ctx.st.sreg_mut(Seg::Cs);
    r.selector = sel;
    r.base = (sel as u64) << 4;
    ctx.next_rip = off;
    ctx.break_block = true;
}

pub(super) fn jmp_far(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let (sel, off, osz) = far_operand(ctx, insn)?;
    let off = off & size_mask(osz);
    if !protected(ctx) {
        if off > ctx.st.sreg(Seg::Cs).limit as u64 {
            return Err(Fault::gp0());
        }
        real_far(ctx, sel, off);
        return Ok(());
    }
    if sel & !3 == 0 {
        return Err(Fault::gp0());
    }
    let d = ctx.read_desc(sel, Fault::gp(sel_err(sel)))?;
    if d.is_code() {
        check_direct_code(ctx, sel, d)?;
        let cpl = ctx.st.cpl;
        return set_cs(ctx, sel, d, off, cpl);
    }
    if d.s() {
        return Err(Fault::gp(sel_err(sel)));
    }
    crate::exec::gates::far_through_system(ctx, insn, sel, d, false, osz)
}

pub(super) fn call_far(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let (sel, off, osz) = far_operand(ctx, insn)?;
    let off = off & size_mask(osz);
    let old_cs = ctx.st.sreg(Seg::Cs).selector as u64;
    let ret = insn.next_rip;
    if !protected(ctx) {
        if off > ctx.st.sreg(Seg::Cs).limit as u64 {
            return Err(Fault::gp0());
        }
        let ss = sp_size(ctx);
        let sp0 = ctx.st.reg(4, ss);
        push(ctx, osz, old_cs)?;
        if let Err(e) = push(ctx, osz, ret) {
            ctx.st.set_reg(4, ss, sp0);
            return Err(e);
        }
        real_far(ctx, sel, off);
        return Ok(());
    }
    if sel & !3 == 0 {
        return Err(Fault::gp0());
    }
    let d = ctx.read_desc(sel, Fault::gp(sel_err(sel)))?;
    if d.is_code() {
        check_direct_code(ctx, sel, d)?;
        let ss = sp_size(ctx);
        let sp0 = ctx.st.reg(4, ss);
        // Both pushes must fit before anything changes.
        let r = (|| {
            push(ctx, osz, old_cs)?;
            push(ctx, osz, ret)
        })();
        if let Err(e) = r {
            ctx.st.set_reg(4, ss, sp0);
            return Err(e);
        }
        let cpl = ctx.st.cpl;
        if let Err(e) = set_cs(ctx, sel, d, off, cpl) {
            ctx.st.set_reg(4, ss, sp0);
            return Err(e);
        }
        return Ok(());
    }
    if d.s() {
        return Err(Fault::gp(sel_err(sel)));
    }
    crate::exec::gates::far_through_system(ctx, insn, sel, d, true, osz)
}

pub(super) fn retf(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let osz = match insn.i.code() {
        Code::Retfw | Code::Retfw_imm16 => 2,
        Code::Retfd | Code::Retfd_imm16 => 4,
        _ => 8,
    };
    let extra = if insn.i.op_count() > 0 { insn.i.immediate(0) & 0xffff } else { 0 };
    let ip = stack_peek(ctx, 0, osz)?;
    let sel = stack_peek(ctx, osz as u64, osz)? as u16;
    let ss = sp_size(ctx);
    if !protected(ctx) {
        if ip > ctx.st.sreg(Seg::Cs).limit as u64 {
            return Err(Fault::gp0());
        }
        real_far(ctx, sel, ip);
        let sp = ctx.st.reg(4, ss).wrapping_add(2 * osz as u64 + extra) & size_mask(ss);
        ctx.st.set_reg(4, ss, sp);
        return Ok(());
    }
    if sel & !3 == 0 {
        return Err(Fault::gp0());
    }
    let d = ctx.read_desc(sel, Fault::gp(sel_err(sel)))?;
    let cpl = ctx.st.cpl;
    let rpl = (sel & 3) as u8;
    if !d.is_code() || rpl < cpl || (d.conforming() && d.dpl() > rpl) || (!d.conforming() && d.dpl() != rpl) {
        return Err(Fault::gp(sel_err(sel)));
    }
    if !d.present() {
        return Err(Fault::np(sel_err(sel)));
    }
    if rpl == cpl {
        set_cs(ctx, sel, d, ip, cpl)?;
        let sp = ctx.st.reg(4, ss).wrapping_add(2 * osz as u64 + extra) & size_mask(ss);
        ctx.st.set_reg(4, ss, sp);
        return Ok(());
    }
    // Return to an outer privilege level: SS:eSP follow on the stack, after the parameters.
    let new_sp = stack_peek(ctx, 2 * osz as u64 + extra, osz)?;
    let new_ss = stack_peek(ctx, 3 * osz as u64 + extra, osz)? as u16;
    let long = ctx.st.mode() == Mode::Long64;
    let ssd = if new_ss & !3 == 0 && long && rpl != 3 {
        None
    } else {
        if new_ss & !3 == 0 {
            return Err(Fault::gp0());
        }
        let ssd = ctx.read_desc(new_ss, Fault::gp(sel_err(new_ss)))?;
        if (new_ss & 3) as u8 != rpl || !ssd.writable() || ssd.dpl() != rpl {
            return Err(Fault::gp(sel_err(new_ss)));
        }
        if !ssd.present() {
            return Err(Fault::ss(sel_err(new_ss)));
        }
        Some(ssd)
    };
    set_cs(ctx, sel, d, ip, rpl)?;
    match ssd {
        Some(ssd) => {
            ctx.set_accessed(new_ss, ssd)?;
            *ctx.st.sreg_mut(Seg::Ss) = Desc(ssd.0 | (1 << 40)).to_segment(new_ss);
        }
        None => {
            *ctx.st.sreg_mut(Seg::Ss) = crate::state::Segment {
                selector: new_ss,
                attr: attr::S | attr::RW | attr::DB,
                limit: 0,
                base: 0,
            };
        }
    }
    let nss = ctx.st.stack_size();
    let sp = new_sp.wrapping_add(extra) & size_mask(nss);
    ctx.st.set_reg(4, nss.max(if osz == 8 { 8 } else { 4 }).min(8), sp);
    ctx.invalidate_segs_for_cpl();
    Ok(())
}

// ------------------------------------------------------------------------------ IRET

pub(super) fn iret(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let osz: u32 = match insn.i.code() {
        Code::Iretw => 2,
        Code::Iretd => 4,
        _ => 8,
    };
    ctx.break_block = true;
    ctx.st.nmi_blocked = false;
    let mode = ctx.st.mode();
    let ss = sp_size(ctx);
    if mode == Mode::Real || mode == Mode::V86 {
        // v86 with IOPL < 3: #GP(0), unless CR4.VME virtualises a 16-bit IRET (SDM Vol. 3A 20.4).
        let virt = mode == Mode::V86 && ctx.st.iopl() < 3;
        if virt && !(ctx.st.cr4 & cr4::VME != 0 && osz == 2) {
            return Err(Fault::gp0());
        }
        let ip = stack_peek(ctx, 0, osz)?;
        let cs = stack_peek(ctx, osz as u64, osz)? as u16;
        let fl = stack_peek(ctx, 2 * osz as u64, osz)?;
        if virt && virtual_if_refused(ctx, fl) {
            return Err(Fault::gp0());
        }
        if ip > ctx.st.sreg(Seg::Cs).limit as u64 {
            return Err(Fault::gp0());
        }
        real_far(ctx, cs, ip);
        let sp = ctx.st.reg(4, ss).wrapping_add(3 * osz as u64) & size_mask(ss);
        ctx.st.set_reg(4, ss, sp);
        let mut mask = flags::ALL & !(flags::VM | flags::VIF | flags::VIP);
        if osz == 2 {
            mask &= 0xffff;
        }
        if mode == Mode::V86 {
            mask &= !flags::IOPL;
        }
        if virt {
            mask &= !flags::IF;
            set_vif(ctx, fl & flags::IF != 0);
        }
        set_rflags(ctx, fl, mask);
        return Ok(());
    }
    if ctx.st.rflags & flags::NT != 0 {
        // Return from a nested task through the back link (no task switches in IA-32e mode).
        if ctx.st.efer & efer::LMA != 0 {
            return Err(Fault::gp0());
        }
        let tr = ctx.st.tr;
        let link = ctx.read_lin_as(tr.base, 2, crate::paging::AccessKind::Read, true)? as u16;
        return crate::task::switch_task(ctx, link, crate::task::SwitchReason::Iret, None);
    }
    if mode == Mode::Long64 || (mode == Mode::Compat && osz == 8) || ctx.st.efer & efer::LMA != 0 {
        return iret_long(ctx, osz);
    }
    let ip = stack_peek(ctx, 0, osz)?;
    let sel = stack_peek(ctx, osz as u64, osz)? as u16;
    let fl = stack_peek(ctx, 2 * osz as u64, osz)?;
    let cpl = ctx.st.cpl;
    if fl & flags::VM != 0 && osz == 4 && cpl == 0 {
        return iret_to_v86(ctx, ip, sel, fl);
    }
    if sel & !3 == 0 {
        return Err(Fault::gp0());
    }
    let d = ctx.read_desc(sel, Fault::gp(sel_err(sel)))?;
    let rpl = (sel & 3) as u8;
    if !d.is_code() || rpl < cpl || (d.conforming() && d.dpl() > rpl) || (!d.conforming() && d.dpl() != rpl) {
        return Err(Fault::gp(sel_err(sel)));
    }
    if !d.present() {
        return Err(Fault::np(sel_err(sel)));
    }
    let mut mask = flags::ARITH | flags::TF | flags::DF | flags::NT | flags::RF | flags::AC | flags::ID;
    if osz == 2 {
        mask &= 0xffff;
    }
    if cpl <= ctx.st.iopl() {
        mask |= flags::IF;
    }
    if cpl == 0 {
        mask |= flags::IOPL;
        if osz == 4 {
            mask |= flags::VIF | flags::VIP;
        }
    }
    if rpl == cpl {
        set_cs(ctx, sel, d, ip, cpl)?;
        let sp = ctx.st.reg(4, ss).wrapping_add(3 * osz as u64) & size_mask(ss);
        ctx.st.set_reg(4, ss, sp);
        set_rflags(ctx, fl, mask & if osz == 2 { 0xffff } else { u64::MAX });
        return Ok(());
    }
    // Outer privilege level.
    let new_sp = stack_peek(ctx, 3 * osz as u64, osz)?;
    let new_ss = stack_peek(ctx, 4 * osz as u64, osz)? as u16;
    if new_ss & !3 == 0 {
        return Err(Fault::gp0());
    }
    let ssd = ctx.read_desc(new_ss, Fault::gp(sel_err(new_ss)))?;
    if (new_ss & 3) as u8 != rpl || !ssd.writable() || ssd.dpl() != rpl {
        return Err(Fault::gp(sel_err(new_ss)));
    }
    if !ssd.present() {
        return Err(Fault::ss(sel_err(new_ss)));
    }
    set_cs(ctx, sel, d, ip, rpl)?;
    set_rflags(ctx, fl, mask);
    ctx.set_accessed(new_ss, ssd)?;
    *ctx.st.sreg_mut(Seg::Ss) = Desc(ssd.0 | (1 << 40)).to_segment(new_ss);
    if ssd.big() {
        ctx.st.set_reg(4, 4, new_sp);
    } else {
        ctx.st.set_reg(4, 2, new_sp);
    }
    ctx.invalidate_segs_for_cpl();
    Ok(())
}

pub(super) fn iret_to_v86(ctx: &mut Ctx<'_>, ip: u64, cs: u16, fl: u64) -> Result<(), Fault> {
    let esp = stack_peek(ctx, 12, 4)?;
    let ss = stack_peek(ctx, 16, 4)? as u16;
    let es = stack_peek(ctx, 20, 4)? as u16;
    let ds = stack_peek(ctx, 24, 4)? as u16;
    let fs = stack_peek(ctx, 28, 4)? as u16;
    let gs = stack_peek(ctx, 32, 4)? as u16;
    // The new CS limit is 64 KiB.
    if ip > 0xffff {
        return Err(Fault::gp0());
    }
    ctx.st.rflags = (fl & flags::ALL) | flags::FIXED1;
    ctx.st.cpl = 3;
    ctx.privilege_changed();
    for (s, v) in [(Seg::Cs, cs), (Seg::Ss, ss), (Seg::Es, es), (Seg::Ds, ds), (Seg::Fs, fs), (Seg::Gs, gs)] {
        ctx.load_seg(s, v)?;
    }
    ctx.st.sreg_mut(Seg::Cs).attr |= attr::CODE;
    ctx.st.gpr[4] = esp & 0xffff_ffff;
    ctx.next_rip = ip;
    Ok(())
}

pub(super) fn iret_long(ctx: &mut Ctx<'_>, osz: u32) -> Result<(), Fault> {
    let ip = stack_peek(ctx, 0, osz)?;
    let sel = stack_peek(ctx, osz as u64, osz)? as u16;
    let fl = stack_peek(ctx, 2 * osz as u64, osz)?;
    let cpl = ctx.st.cpl;
    if fl & flags::VM != 0 && cpl == 0 {
        // v86 is not reachable from long mode.
        return Err(Fault::gp0());
    }
    if sel & !3 == 0 {
        return Err(Fault::gp0());
    }
    let d = ctx.read_desc(sel, Fault::gp(sel_err(sel)))?;
    let rpl = (sel & 3) as u8;
    if !d.is_code() || rpl < cpl || (d.conforming() && d.dpl() > rpl) || (!d.conforming() && d.dpl() != rpl) {
        return Err(Fault::gp(sel_err(sel)));
    }
    if !d.present() {
        return Err(Fault::np(sel_err(sel)));
    }
    let to64 = d.long();
    let pops_ss = ctx.st.mode() == Mode::Long64 || rpl != cpl;
    let (new_sp, new_ss) = if pops_ss {
        (stack_peek(ctx, 3 * osz as u64, osz)?, stack_peek(ctx, 4 * osz as u64, osz)? as u16)
    } else {
        (0, 0)
    };
    let mut mask = flags::ARITH | flags::TF | flags::DF | flags::NT | flags::RF | flags::AC | flags::ID;
    if cpl <= ctx.st.iopl() {
        mask |= flags::IF;
    }
    if cpl == 0 {
        mask |= flags::IOPL | flags::VIF | flags::VIP;
    }
    if osz == 2 {
        mask &= 0xffff;
    }
    let ssd = if pops_ss {
        if new_ss & !3 == 0 {
            if !(to64 && rpl != 3) {
                return Err(Fault::gp0());
            }
            None
        } else {
            let ssd = ctx.read_desc(new_ss, Fault::gp(sel_err(new_ss)))?;
            if (new_ss & 3) as u8 != rpl || !ssd.writable() || ssd.dpl() != rpl {
                return Err(Fault::gp(sel_err(new_ss)));
            }
            if !ssd.present() {
                return Err(Fault::ss(sel_err(new_ss)));
            }
            Some(ssd)
        }
    } else {
        None
    };
    let ip = if to64 { ip } else { ip & 0xffff_ffff };
    set_cs(ctx, sel, d, ip, rpl)?;
    set_rflags(ctx, fl, mask);
    if pops_ss {
        match ssd {
            Some(ssd) => {
                ctx.set_accessed(new_ss, ssd)?;
                *ctx.st.sreg_mut(Seg::Ss) = Desc(ssd.0 | (1 << 40)).to_segment(new_ss);
            }
            None => {
                *ctx.st.sreg_mut(Seg::Ss) = crate::state::Segment {
                    selector: new_ss,
                    attr: attr::S | attr::RW | attr::DB | ((rpl as u16) << attr::DPL_SHIFT),
                    limit: 0,
                    base: 0,
                };
            }
        }
        ctx.st.gpr[4] = if to64 { new_sp } else { new_sp & 0xffff_ffff };
    } else {
        let ss = sp_size(ctx);
        let sp = ctx.st.reg(4, ss).wrapping_add(3 * osz as u64) & size_mask(ss);
        ctx.st.set_reg(4, ss, sp);
    }
    if rpl > cpl {
        ctx.invalidate_segs_for_cpl();
    }
    Ok(())
}

/// Writes the RFLAGS bits in `mask` from `v`, keeping the fixed bit.
pub fn set_rflags(ctx: &mut Ctx<'_>, v: u64, mask: u64) {
    let old = ctx.st.rflags;
    ctx.st.rflags = ((old & !mask) | (v & mask) | flags::FIXED1) & (flags::ALL | flags::FIXED1);
    ctx.privilege_changed();
    if old & !ctx.st.rflags & flags::AC != 0 && ctx.st.cr4 & cr4::SMAP != 0 {
        ctx.mmu.tlb.drop_smap_entries();
    }
    ctx.break_block = true;
}
