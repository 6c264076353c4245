//! System instructions: segment-register loads, far transfers, IRET and INT n, flags control
//! (CLI/STI/PUSHF/POPF), descriptor tables, control and debug registers, CPUID, MSRs, TSC, port I/O,
//! HLT, SWAPGS, cache and fence no-ops.

use super::control::branch_to;
use super::ops::*;
use super::{Handler, Insn};
use crate::cpuid;
use crate::fault::{Fault, SoftKind};
use crate::mem::{Ctx, is_canonical};
use crate::regs::{size_mask, sreg};
use crate::seg::{Desc, sel_err};
use crate::state::{Mode, Seg, attr, cr0, cr4, efer, flags};
use iced_x86::{Code, Mnemonic, OpKind, Register};

/// Handlers of this family.
pub fn lookup(code: Code) -> Option<Handler> {
    use Code as C;
    Some(match code {
        C::Mov_rm16_Sreg | C::Mov_r32m16_Sreg | C::Mov_r64m16_Sreg => mov_from_sreg,
        C::Mov_Sreg_rm16 | C::Mov_Sreg_r32m16 | C::Mov_Sreg_r64m16 => mov_to_sreg,
        C::Mov_r32_cr | C::Mov_r64_cr => mov_from_cr,
        C::Mov_cr_r32 | C::Mov_cr_r64 => mov_to_cr,
        C::Mov_r32_dr | C::Mov_r64_dr => mov_from_dr,
        C::Mov_dr_r32 | C::Mov_dr_r64 => mov_to_dr,
        C::Pushw_ES
        | C::Pushd_ES
        | C::Pushw_CS
        | C::Pushd_CS
        | C::Pushw_SS
        | C::Pushd_SS
        | C::Pushw_DS
        | C::Pushd_DS
        | C::Pushw_FS
        | C::Pushd_FS
        | C::Pushq_FS
        | C::Pushw_GS
        | C::Pushd_GS
        | C::Pushq_GS => push_sreg,
        C::Popw_ES
        | C::Popd_ES
        | C::Popw_SS
        | C::Popd_SS
        | C::Popw_DS
        | C::Popd_DS
        | C::Popw_FS
        | C::Popd_FS
        | C::Popq_FS
        | C::Popw_GS
        | C::Popd_GS
        | C::Popq_GS => pop_sreg,
        C::Jmp_ptr1616 | C::Jmp_ptr1632 | C::Jmp_m1616 | C::Jmp_m1632 | C::Jmp_m1664 => jmp_far,
        C::Call_ptr1616 | C::Call_ptr1632 | C::Call_m1616 | C::Call_m1632 | C::Call_m1664 => call_far,
        C::Retfw | C::Retfw_imm16 | C::Retfd | C::Retfd_imm16 | C::Retfq | C::Retfq_imm16 => retf,
        C::Iretw | C::Iretd | C::Iretq => iret,
        C::Int_imm8 => int_n,
        C::Int3 => int3,
        C::Into => into,
        C::Int1 => int1,
        C::Cli => cli,
        C::Sti => sti,
        C::Pushfw | C::Pushfd | C::Pushfq => pushf,
        C::Popfw | C::Popfd | C::Popfq => popf,
        C::Hlt => hlt,
        C::Clc => clc,
        C::Stc => stc,
        C::Cmc => cmc,
        C::Cld => cld,
        C::Std => std_,
        C::Lgdt_m1632_16 | C::Lgdt_m1632 | C::Lgdt_m1664 => lgdt,
        C::Lidt_m1632_16 | C::Lidt_m1632 | C::Lidt_m1664 => lidt,
        C::Sgdt_m1632_16 | C::Sgdt_m1632 | C::Sgdt_m1664 => sgdt,
        C::Sidt_m1632_16 | C::Sidt_m1632 | C::Sidt_m1664 => sidt,
        C::Lldt_rm16 | C::Lldt_r32m16 | C::Lldt_r64m16 => lldt,
        C::Ltr_rm16 | C::Ltr_r32m16 | C::Ltr_r64m16 => ltr,
        C::Sldt_rm16 | C::Sldt_r32m16 | C::Sldt_r64m16 => sldt,
        C::Str_rm16 | C::Str_r32m16 | C::Str_r64m16 => str_,
        C::Lmsw_rm16 | C::Lmsw_r32m16 | C::Lmsw_r64m16 => lmsw,
        C::Smsw_rm16 | C::Smsw_r32m16 | C::Smsw_r64m16 => smsw,
        C::Clts => clts,
        C::Invlpg_m => invlpg,
        C::Wbinvd | C::Invd | C::Wbnoinvd => privileged_nop,
        C::Cpuid => cpuid_,
        C::Rdmsr => rdmsr,
        C::Wrmsr => wrmsr,
        C::Rdtsc => rdtsc,
        C::Rdtscp => rdtscp,
        C::In_AL_imm8 | C::In_AX_imm8 | C::In_EAX_imm8 | C::In_AL_DX | C::In_AX_DX | C::In_EAX_DX => in_,
        C::Out_imm8_AL | C::Out_imm8_AX | C::Out_imm8_EAX | C::Out_DX_AL | C::Out_DX_AX | C::Out_DX_EAX => {
            out
        }
        C::Swapgs => swapgs,
        C::Clac => clac,
        C::Stac => stac,
        C::Pause | C::Lfence | C::Mfence | C::Sfence => nop,
        C::Clflush_m8 | C::Clflushopt_m8 | C::Clwb_m8 => clflush,
        C::Ud0_r16_rm16
        | C::Ud0_r32_rm32
        | C::Ud0_r64_rm64
        | C::Ud0
        | C::Ud1_r16_rm16
        | C::Ud1_r32_rm32
        | C::Ud1_r64_rm64
        | C::Ud2 => ud,
        _ => return None,
    })
}

fn nop(_: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    Ok(())
}

fn ud(_: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    Err(Fault::ud())
}

/// #GP(0) unless CPL is 0 (and not in v86 mode).
#[inline]
pub fn require_cpl0(ctx: &Ctx<'_>) -> Result<(), Fault> {
    if ctx.st.cpl != 0 { Err(Fault::gp0()) } else { Ok(()) }
}

fn protected(ctx: &Ctx<'_>) -> bool {
    !matches!(ctx.st.mode(), Mode::Real | Mode::V86)
}

// ------------------------------------------------------------------------------ segment registers

fn mov_from_sreg(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
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

fn mov_to_sreg(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
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

fn push_sreg(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
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

fn pop_sreg(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
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

// ------------------------------------------------------------------------------ far transfers

/// Reads a far pointer operand: (selector, offset).
fn far_operand(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(u16, u64, u32), Fault> {
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
fn set_cs(ctx: &mut Ctx<'_>, sel: u16, d: Desc, rip: u64, cpl: u8) -> Result<(), Fault> {
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
    ctx.next_rip = rip;
    ctx.break_block = true;
    Ok(())
}

/// Checks a code segment selector as a direct far JMP/CALL target at the current CPL.
fn check_direct_code(ctx: &mut Ctx<'_>, sel: u16, d: Desc) -> Result<(), Fault> {
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

fn real_far(ctx: &mut Ctx<'_>, sel: u16, off: u64) {
    let r = ctx.st.sreg_mut(Seg::Cs);
    r.selector = sel;
    r.base = (sel as u64) << 4;
    ctx.next_rip = off;
    ctx.break_block = true;
}

fn jmp_far(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
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
    super::gates::far_through_system(ctx, insn, sel, d, false, osz)
}

fn call_far(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
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
    super::gates::far_through_system(ctx, insn, sel, d, true, osz)
}

fn retf(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
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

fn iret(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
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

fn iret_to_v86(ctx: &mut Ctx<'_>, ip: u64, cs: u16, fl: u64) -> Result<(), Fault> {
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
    for (s, v) in [(Seg::Cs, cs), (Seg::Ss, ss), (Seg::Es, es), (Seg::Ds, ds), (Seg::Fs, fs), (Seg::Gs, gs)] {
        ctx.load_seg(s, v)?;
    }
    ctx.st.sreg_mut(Seg::Cs).attr |= attr::CODE;
    ctx.st.gpr[4] = esp & 0xffff_ffff;
    ctx.next_rip = ip;
    Ok(())
}

fn iret_long(ctx: &mut Ctx<'_>, osz: u32) -> Result<(), Fault> {
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
    if (old ^ ctx.st.rflags) & flags::AC != 0 && ctx.st.cr4 & cr4::SMAP != 0 {
        ctx.mmu.tlb.flush(false);
    }
    ctx.break_block = true;
}

// ------------------------------------------------------------------------------ INT n

fn int_n(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
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
fn redirection_bit(ctx: &mut Ctx<'_>, v: u8) -> Result<bool, Fault> {
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
fn v86_redirected_int(ctx: &mut Ctx<'_>, v: u8) -> Result<(), Fault> {
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
fn virtual_if_refused(ctx: &Ctx<'_>, new: u64) -> bool {
    (ctx.st.rflags & flags::VIP != 0 && new & flags::IF != 0) || new & flags::TF != 0
}

fn set_vif(ctx: &mut Ctx<'_>, on: bool) {
    if on {
        ctx.st.rflags |= flags::VIF;
    } else {
        ctx.st.rflags &= !flags::VIF;
    }
}

/// Whether CLI/STI at an IOPL below CPL act on VIF: v86 mode with CR4.VME, or CPL 3 in protected mode
/// with CR4.PVI (SDM Vol. 2 CLI/STI, Vol. 3A 20.4).
fn virtual_interrupt_flag(ctx: &Ctx<'_>) -> bool {
    match ctx.st.mode() {
        Mode::V86 => ctx.st.cr4 & cr4::VME != 0,
        Mode::Real => false,
        _ => ctx.st.cpl == 3 && ctx.st.cr4 & cr4::PVI != 0,
    }
}

fn int3(_: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    Err(Fault::Soft { vector: 3, kind: SoftKind::Int3 })
}

fn into(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    if ctx.st.mode() == Mode::Long64 {
        return Err(Fault::ud());
    }
    if ctx.st.rflags & flags::OF != 0 { Err(Fault::Soft { vector: 4, kind: SoftKind::Into }) } else { Ok(()) }
}

fn int1(_: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    Err(Fault::Soft { vector: 1, kind: SoftKind::Icebp })
}

// ------------------------------------------------------------------------------ flags

fn cli(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
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

fn sti(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
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

fn pushf(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
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

fn popf(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
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

fn hlt(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)?;
    ctx.st.halted = true;
    ctx.break_block = true;
    Ok(())
}

fn clc(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    ctx.st.rflags &= !flags::CF;
    Ok(())
}
fn stc(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    ctx.st.rflags |= flags::CF;
    Ok(())
}
fn cmc(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    ctx.st.rflags ^= flags::CF;
    Ok(())
}
fn cld(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    ctx.st.rflags &= !flags::DF;
    Ok(())
}
fn std_(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    ctx.st.rflags |= flags::DF;
    Ok(())
}

fn clac(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    if ctx.st.cpl != 0 || ctx.st.mode() == Mode::V86 || feat7(cpuid::feat::LEAF7_EBX, 20) {
        return Err(Fault::ud());
    }
    let v = ctx.st.rflags & !flags::AC;
    set_rflags(ctx, v, flags::AC);
    Ok(())
}

fn stac(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    if ctx.st.cpl != 0 || ctx.st.mode() == Mode::V86 || feat7(cpuid::feat::LEAF7_EBX, 20) {
        return Err(Fault::ud());
    }
    let v = ctx.st.rflags | flags::AC;
    set_rflags(ctx, v, flags::AC);
    Ok(())
}

fn feat7(mask: u32, bit: u32) -> bool {
    mask & (1 << bit) == 0
}

// ------------------------------------------------------------------------------ descriptor tables

fn table_operand(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(Seg, u64), Fault> {
    if insn.i.op0_kind() != OpKind::Memory {
        return Err(Fault::ud());
    }
    Ok((mem_seg(insn), ea(ctx, insn)))
}

fn load_table(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(u32, u64), Fault> {
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

fn lgdt(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let (limit, base) = load_table(ctx, insn)?;
    ctx.st.gdtr.limit = limit;
    ctx.st.gdtr.base = base;
    Ok(())
}

fn lidt(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let (limit, base) = load_table(ctx, insn)?;
    ctx.st.idtr.limit = limit;
    ctx.st.idtr.base = base;
    Ok(())
}

fn store_table(ctx: &mut Ctx<'_>, insn: &Insn, limit: u32, base: u64) -> Result<(), Fault> {
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

fn sgdt(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let (l, b) = (ctx.st.gdtr.limit, ctx.st.gdtr.base);
    store_table(ctx, insn, l, b)
}

fn sidt(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let (l, b) = (ctx.st.idtr.limit, ctx.st.idtr.base);
    store_table(ctx, insn, l, b)
}

fn sys_sel_operand(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<u16, Fault> {
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
fn long_system_base(ctx: &mut Ctx<'_>, sel: u16, low: u64) -> Result<u64, Fault> {
    let hi = ctx.read_desc_high(sel, Fault::gp(sel_err(sel)))?;
    let base = (low & 0xffff_ffff) | ((hi & 0xffff_ffff) << 32);
    if (hi >> 40) & 0x1f != 0 || !is_canonical(base) {
        return Err(Fault::gp(sel_err(sel)));
    }
    Ok(base)
}

fn lldt(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
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

fn ltr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
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

fn store_sel(ctx: &mut Ctx<'_>, insn: &Insn, v: u16) -> Result<(), Fault> {
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

fn sldt(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let v = ctx.st.ldtr.selector;
    store_sel(ctx, insn, v)
}

fn str_(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let v = ctx.st.tr.selector;
    store_sel(ctx, insn, v)
}

fn smsw(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
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

fn lmsw(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)?;
    let v = read_op(ctx, insn, 0)? & 0xf;
    // LMSW can set PE but never clear it.
    let new = (ctx.st.cr0 & !0xe) | (v & 0xf) | (ctx.st.cr0 & cr0::PE);
    write_cr0(ctx, new)
}

fn clts(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)?;
    ctx.st.cr0 &= !cr0::TS;
    Ok(())
}

fn invlpg(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
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

fn privileged_nop(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)
}

fn clflush(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    // Checks the address like a byte read; caches are not modelled.
    let off = ea(ctx, insn);
    let lin = ctx.seg_lin(mem_seg(insn), off, 1, crate::paging::AccessKind::Read)?;
    ctx.lin_to_phys(lin, crate::paging::AccessKind::Read)?;
    Ok(())
}

// ------------------------------------------------------------------------------ control registers

fn cr_index(r: Register) -> Option<usize> {
    let n = (r as u32).wrapping_sub(Register::CR0 as u32);
    (n < 16).then_some(n as usize)
}

fn mov_from_cr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
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

fn mov_to_cr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
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

fn dr_index(r: Register) -> Option<usize> {
    let n = (r as u32).wrapping_sub(Register::DR0 as u32);
    (n < 16).then_some(n as usize)
}

/// General detect (DR7.GD): any MOV to or from a debug register is a fault-class #DB with DR6.BD set
/// (SDM Vol. 3B 17.2.4); it comes after the CPL check and before the DR4/DR5 #UD. The processor clears
/// GD when it enters the #DB handler (done by the interpreter on every #DB delivery).
fn general_detect(ctx: &mut Ctx<'_>) -> Result<(), Fault> {
    if ctx.st.dr[7] & crate::debug::dr7::GD != 0 {
        ctx.st.dr[6] |= crate::debug::dr6::BD;
        return Err(Fault::Exc { vector: crate::fault::vec::DB, error: None });
    }
    Ok(())
}

/// The checks common to MOV from/to DRn, in the SDM's order: CPL 0 (#GP), general detect (#DB), then
/// the register: DR4/DR5 alias DR6/DR7 unless CR4.DE (then #UD); DR8-15 are #UD. Returns the index.
fn dr_operand(ctx: &mut Ctx<'_>, r: Register) -> Result<usize, Fault> {
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

fn mov_from_dr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let n = dr_operand(ctx, insn.i.op1_register())?;
    let v = ctx.st.dr[n];
    let g = reg_op(insn, 0)?;
    ctx.st.write_gpr(g, v & size_mask(g.size));
    Ok(())
}

fn mov_to_dr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
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

// ------------------------------------------------------------------------------ CPUID, MSRs, TSC

fn cpuid_(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    let leaf = ctx.st.gpr[0] as u32;
    let sub = ctx.st.gpr[1] as u32;
    let apic_id = 0;
    let r = cpuid::with_xcr0(
        cpuid::cpuid_for_model(&ctx.st.model, leaf, sub, apic_id, ctx.st.cr4),
        leaf,
        sub,
        ctx.st.xcr0,
    );
    for (i, idx) in [0usize, 3, 1, 2].iter().enumerate() {
        ctx.st.gpr[*idx] = r[i] as u64;
    }
    Ok(())
}

/// The guest-visible TSC.
pub fn read_tsc(ctx: &mut Ctx<'_>) -> u64 {
    let icount = ctx.st.icount;
    ctx.bus.tsc(icount).wrapping_add(ctx.st.msr.tsc_offset)
}

fn rdtsc(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    if ctx.st.cr4 & cr4::TSD != 0 && ctx.st.cpl != 0 && protected(ctx) {
        return Err(Fault::gp0());
    }
    let t = read_tsc(ctx);
    ctx.st.gpr[0] = t & 0xffff_ffff;
    ctx.st.gpr[2] = t >> 32;
    Ok(())
}

fn rdtscp(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    rdtsc(ctx, insn)?;
    ctx.st.gpr[1] = ctx.st.msr.tsc_aux & 0xffff_ffff;
    Ok(())
}

/// IA32_APIC_BASE.BSP: this processor is the bootstrap processor.
const APIC_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE.EXTD: x2APIC mode (with EN).
const APIC_EXTD: u64 = 1 << 10;
/// IA32_APIC_BASE.EN: the local APIC is globally enabled.
const APIC_EN: u64 = 1 << 11;

/// Whether the local APIC is in x2APIC mode (IA32_APIC_BASE.EN and EXTD both set): only then do the
/// x2APIC MSRs (0x800-0xBFF) exist; otherwise RDMSR and WRMSR of them raise #GP(0) (SDM vol. 3A
/// 11.12.1.2, "x2APIC Register Address Space").
pub fn x2apic_mode(st: &crate::state::CpuState) -> bool {
    st.msr.apic_base & (APIC_EN | APIC_EXTD) == APIC_EN | APIC_EXTD
}

/// Whether IA32_TSC_DEADLINE (0x6E0) exists: CPUID.1:ECX.TSC_Deadline[bit 24].
fn tsc_deadline_supported(st: &crate::state::CpuState) -> bool {
    cpuid::cpuid_for(1, 0, 0, st.cr4)[2] & (1 << 24) != 0
}

/// Bits of an MSR holding a physical address that lie above MAXPHYADDR (reserved).
fn above_maxphyaddr() -> u64 {
    !((1u64 << crate::cpuid::PHYS_ADDR_BITS) - 1)
}

/// A valid MTRR memory type: UC, WC, WT, WP, WB (SDM vol. 3A table 12-8; 2, 3 and 7+ are reserved).
fn mtrr_type_ok(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

/// The rules of an IA32_APIC_BASE write (SDM vol. 3A 11.12.5, figure 11-27): reserved bits (0-7, 9,
/// above MAXPHYADDR, and EXTD when CPUID.1:ECX.x2APIC[bit 21] is clear), the invalid state EXTD without
/// EN, and the two forbidden transitions x2APIC -> xAPIC and disabled -> x2APIC all raise #GP(0).
fn apic_base_ok(st: &crate::state::CpuState, v: u64) -> bool {
    let x2apic_supported = cpuid::cpuid_for(1, 0, 0, st.cr4)[2] & (1 << 21) != 0;
    let mut valid = (!above_maxphyaddr() & !0xfff) | APIC_BSP | APIC_EN;
    if x2apic_supported {
        valid |= APIC_EXTD;
    }
    if v & !valid != 0 || v & (APIC_EN | APIC_EXTD) == APIC_EXTD {
        return false;
    }
    let old = st.msr.apic_base;
    let new_x2 = v & (APIC_EN | APIC_EXTD) == APIC_EN | APIC_EXTD;
    let x2_to_xapic = x2apic_mode(st) && v & (APIC_EN | APIC_EXTD) == APIC_EN;
    let disabled_to_x2 = old & APIC_EN == 0 && new_x2;
    !x2_to_xapic && !disabled_to_x2
}

/// Reads MSR `msr`, or `None` if it does not exist (#GP).
pub fn msr_read(ctx: &mut Ctx<'_>, msr: u32) -> Option<u64> {
    let m = &ctx.st.msr;
    Some(match msr {
        0x10 => return Some(read_tsc(ctx)),
        0x17 => 0,
        0x1b => m.apic_base,
        0x3a => m.feature_control,
        0x8b => 0,
        0x10a => crate::cpuid::ARCH_CAPABILITIES,
        0xfe => 0x508, // MTRRcap: 8 variable ranges, fixed ranges, write-combining.
        0x174 => m.sysenter_cs,
        0x175 => m.sysenter_esp,
        0x176 => m.sysenter_eip,
        0x179 => 0,
        0x17a => 0,
        0x1a0 => m.misc_enable,
        0x1d9 => m.debugctl,
        0x200..=0x20f => m.mtrr_var[(msr - 0x200) as usize],
        0x250 => m.mtrr_fixed[0],
        0x258 => m.mtrr_fixed[1],
        0x259 => m.mtrr_fixed[2],
        0x268..=0x26f => m.mtrr_fixed[(msr - 0x268 + 3) as usize],
        0x277 => m.pat,
        0x2ff => m.mtrr_def_type,
        0xc000_0080 => ctx.st.efer,
        0xc000_0081 => m.star,
        0xc000_0082 => m.lstar,
        0xc000_0083 => m.cstar,
        0xc000_0084 => m.sfmask,
        0xc000_0100 => ctx.st.sreg(Seg::Fs).base,
        0xc000_0101 => ctx.st.sreg(Seg::Gs).base,
        0xc000_0102 => m.kernel_gs_base,
        0xc000_0103 => m.tsc_aux,
        0x800..=0xbff if !x2apic_mode(ctx.st) => return None,
        0x6e0 if !tsc_deadline_supported(ctx.st) => return None,
        _ => return ctx.bus.read_msr(msr),
    })
}

/// Writes MSR `msr`; false = #GP (no such MSR, a read-only one, or a reserved bit set: SDM vol. 4
/// tables 2-2 and 2-3, and the WRMSR reference: "#GP(0) if ... an attempt is made to write a non-zero
/// value into a reserved bit").
pub fn msr_write(ctx: &mut Ctx<'_>, msr: u32, v: u64) -> bool {
    let canon = is_canonical(v);
    match msr {
        0x10 => {
            let now = ctx.bus.tsc(ctx.st.icount);
            ctx.st.msr.tsc_offset = v.wrapping_sub(now);
        }
        0x1b => {
            if !apic_base_ok(ctx.st, v) {
                return false;
            }
            ctx.st.msr.apic_base = v;
            let _ = ctx.bus.write_msr(msr, v);
        }
        0x3a => {
            // IA32_FEATURE_CONTROL: no write once the lock bit is set; with no VMX, SMX, SGX or LMCE
            // advertised, every bit but the lock is reserved.
            if ctx.st.msr.feature_control & 1 != 0 || v & !1 != 0 {
                return false;
            }
            ctx.st.msr.feature_control = v;
        }
        0x8b => {}
        // IA32_SYSENTER_CS: bits 63:16 are "not used (can be read and written)".
        0x174 => ctx.st.msr.sysenter_cs = v,
        0x175 if canon => ctx.st.msr.sysenter_esp = v,
        0x176 if canon => ctx.st.msr.sysenter_eip = v,
        // IA32_MCG_STATUS: RIPV, EIPV, MCIP, LMCE_S; the rest reserved. (IA32_MCG_CAP is read-only.)
        0x17a if v & !0xf == 0 => {}
        0x1a0 => ctx.st.msr.misc_enable = v,
        // IA32_DEBUGCTL: LBR and BTF; the branch-trace-store and freeze bits need features not
        // advertised, so they are reserved here.
        0x1d9 if v & !0x3 == 0 => ctx.st.msr.debugctl = v,
        0x200..=0x20f => {
            let reserved = if msr & 1 == 0 {
                // PHYSBASE: type in 7:0, 11:8 reserved.
                if !mtrr_type_ok(v & 0xff) {
                    return false;
                }
                above_maxphyaddr() | 0xf00
            } else {
                // PHYSMASK: valid in bit 11, 10:0 reserved.
                above_maxphyaddr() | 0x7ff
            };
            if v & reserved != 0 {
                return false;
            }
            ctx.st.msr.mtrr_var[(msr - 0x200) as usize] = v;
        }
        0x250 | 0x258 | 0x259 | 0x268..=0x26f if !(0..8).all(|i| mtrr_type_ok((v >> (8 * i)) & 0xff)) => {
            return false;
        }
        0x250 => ctx.st.msr.mtrr_fixed[0] = v,
        0x258 => ctx.st.msr.mtrr_fixed[1] = v,
        0x259 => ctx.st.msr.mtrr_fixed[2] = v,
        0x268..=0x26f => ctx.st.msr.mtrr_fixed[(msr - 0x268 + 3) as usize] = v,
        0x277 => {
            // Each PAT entry must be a valid memory type (0, 1, 4, 5, 6, 7).
            if (0..8).any(|i| matches!((v >> (i * 8)) & 0xff, 2 | 3 | 8..=255)) {
                return false;
            }
            ctx.st.msr.pat = v;
            ctx.mmu.tlb.flush(false);
        }
        0x2ff => {
            if v & !0xcff != 0 || !mtrr_type_ok(v & 0xff) {
                return false;
            }
            ctx.st.msr.mtrr_def_type = v;
        }
        0xc000_0080 => {
            let valid = efer::SCE | efer::LME | efer::LMA | efer::NXE;
            if v & !valid != 0 {
                return false;
            }
            let old = ctx.st.efer;
            if ctx.st.paging() && (old ^ v) & efer::LME != 0 {
                return false;
            }
            ctx.st.efer = (v & !efer::LMA) | (old & efer::LMA);
            if (old ^ v) & efer::NXE != 0 {
                ctx.mmu.tlb.flush(false);
            }
        }
        0xc000_0081 => ctx.st.msr.star = v,
        0xc000_0082 if canon => ctx.st.msr.lstar = v,
        0xc000_0083 if canon => ctx.st.msr.cstar = v,
        // IA32_FMASK: bits 63:32 reserved.
        0xc000_0084 if v >> 32 == 0 => ctx.st.msr.sfmask = v,
        0xc000_0100 if canon => ctx.st.sreg_mut(Seg::Fs).base = v,
        0xc000_0101 if canon => ctx.st.sreg_mut(Seg::Gs).base = v,
        0xc000_0102 if canon => ctx.st.msr.kernel_gs_base = v,
        0xc000_0103 => {
            if v >> 32 != 0 {
                return false;
            }
            ctx.st.msr.tsc_aux = v;
        }
        // Known MSRs whose rule refused the value (non-canonical bases, reserved bits).
        0x174..=0x176
        | 0x17a
        | 0x1d9
        | 0xc000_0082
        | 0xc000_0083
        | 0xc000_0084
        | 0xc000_0100..=0xc000_0102 => {
            return false;
        }
        0x800..=0xbff if !x2apic_mode(ctx.st) => return false,
        0x6e0 if !tsc_deadline_supported(ctx.st) => return false,
        _ => return ctx.bus.write_msr(msr, v),
    }
    true
}

fn rdmsr(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)?;
    let msr = ctx.st.gpr[1] as u32;
    let v = msr_read(ctx, msr).ok_or_else(Fault::gp0)?;
    ctx.st.gpr[0] = v & 0xffff_ffff;
    ctx.st.gpr[2] = v >> 32;
    Ok(())
}

fn wrmsr(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    require_cpl0(ctx)?;
    let msr = ctx.st.gpr[1] as u32;
    let v = (ctx.st.gpr[0] & 0xffff_ffff) | (ctx.st.gpr[2] << 32);
    ctx.break_block = true;
    if msr_write(ctx, msr, v) { Ok(()) } else { Err(Fault::gp0()) }
}

fn swapgs(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    if ctx.st.mode() != Mode::Long64 {
        return Err(Fault::ud());
    }
    require_cpl0(ctx)?;
    let g = ctx.st.sreg(Seg::Gs).base;
    ctx.st.sreg_mut(Seg::Gs).base = ctx.st.msr.kernel_gs_base;
    ctx.st.msr.kernel_gs_base = g;
    Ok(())
}

// ------------------------------------------------------------------------------ port I/O

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

fn io_port(ctx: &Ctx<'_>, insn: &Insn, n: u32) -> u16 {
    match insn.i.op_kind(n) {
        OpKind::Immediate8 => insn.i.immediate8() as u16,
        _ => ctx.st.gpr[2] as u16,
    }
}

fn in_(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let port = io_port(ctx, insn, 1);
    let g = reg_op(insn, 0)?;
    check_io(ctx, port, g.size)?;
    let v = ctx.io_in(port, g.size as u8);
    ctx.st.write_gpr(g, v as u64);
    ctx.break_block = true;
    Ok(())
}

fn out(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let port = io_port(ctx, insn, 0);
    let g = reg_op(insn, 1)?;
    check_io(ctx, port, g.size)?;
    let v = ctx.st.read_gpr(g) as u32;
    ctx.io_out(port, g.size as u8, v);
    ctx.break_block = true;
    Ok(())
}

#[allow(dead_code)]
fn mnemonic_is(insn: &Insn, m: Mnemonic) -> bool {
    insn.i.mnemonic() == m
}

#[allow(dead_code)]
fn branch(ctx: &mut Ctx<'_>, t: u64) -> Result<(), Fault> {
    branch_to(ctx, t)
}

#[cfg(test)]
mod msr_tests {
    use super::{msr_read, msr_write};
    use crate::bus::CpuBus;
    use crate::mem::{Ctx, Mmu};
    use crate::state::CpuState;
    use crate::testutil::{TestBus, TestMode, cpu_in};
    use std::ptr::NonNull;

    /// A bus whose machine serves every x2APIC MSR and IA32_TSC_DEADLINE (reads 0x42, accepts writes) and logs
    /// IA32_APIC_BASE writes, so the CPU's own gating is what a test observes.
    #[derive(Default)]
    struct ApicBus {
        inner: TestBus,
        apic_base_writes: Vec<u64>,
    }

    impl CpuBus for ApicBus {
        fn ram_page(&mut self, page: u64, write: bool) -> Option<NonNull<u8>> {
            self.inner.ram_page(page, write)
        }
        fn read_phys(&mut self, addr: u64, data: &mut [u8]) {
            self.inner.read_phys(addr, data)
        }
        fn write_phys(&mut self, addr: u64, data: &[u8]) {
            self.inner.write_phys(addr, data)
        }
        fn io_in(&mut self, port: u16, size: u8) -> u32 {
            self.inner.io_in(port, size)
        }
        fn io_out(&mut self, port: u16, size: u8, value: u32) {
            self.inner.io_out(port, size, value)
        }
        fn interrupt_pending(&mut self) -> bool {
            false
        }
        fn acknowledge_interrupt(&mut self) -> Option<u8> {
            None
        }
        fn tsc(&mut self, icount: u64) -> u64 {
            icount
        }
        fn read_msr(&mut self, msr: u32) -> Option<u64> {
            ((0x800..=0x8ff).contains(&msr) || msr == 0x6e0).then_some(0x42)
        }
        fn write_msr(&mut self, msr: u32, value: u64) -> bool {
            if msr == 0x1b {
                self.apic_base_writes.push(value);
            }
            (0x800..=0x8ff).contains(&msr) || msr == 0x6e0
        }
    }

    fn with_ctx<R>(st: &mut CpuState, bus: &mut ApicBus, f: impl FnOnce(&mut Ctx<'_>) -> R) -> R {
        let mut mmu = Mmu::default();
        let mut ctx = Ctx { st, bus, mmu: &mut mmu, next_rip: 0, break_block: false };
        f(&mut ctx)
    }

    fn machine() -> (CpuState, ApicBus) {
        let mut bus = ApicBus::default();
        let st = cpu_in(TestMode::Long64, &mut bus.inner);
        (st, bus)
    }

    /// Without x2APIC mode (the reset state: xAPIC, EXTD clear) every MSR of 0x800-0xBFF raises #GP,
    /// even where the machine would serve it; in x2APIC mode they reach the local APIC.
    #[test]
    fn x2apic_msrs_exist_only_in_x2apic_mode() {
        let (mut st, mut bus) = machine();
        assert_eq!(st.msr.apic_base & (3 << 10), 1 << 11, "reset: xAPIC mode");
        with_ctx(&mut st, &mut bus, |ctx| {
            for msr in [0x800, 0x802, 0x803, 0x808, 0x80b, 0x830, 0x83f, 0x8ff, 0x900, 0xbff] {
                assert_eq!(msr_read(ctx, msr), None, "rdmsr {msr:#x}");
                assert!(!msr_write(ctx, msr, 0), "wrmsr {msr:#x}");
            }
        });
        st.msr.apic_base |= 1 << 10;
        with_ctx(&mut st, &mut bus, |ctx| {
            assert_eq!(msr_read(ctx, 0x802), Some(0x42));
            assert!(msr_write(ctx, 0x808, 0));
            // Globally disabled (EN clear): gone again.
            ctx.st.msr.apic_base &= !(1 << 11);
            assert_eq!(msr_read(ctx, 0x802), None);
        });
    }

    /// IA32_APIC_BASE (SDM vol. 3A 11.12.5): reserved bits, EXTD without x2APIC support, EXTD without
    /// EN, x2APIC -> xAPIC and disabled -> x2APIC are #GP; xAPIC <-> disabled and a base move are not.
    #[test]
    fn apic_base_rules() {
        let (mut st, mut bus) = machine();
        let x2_supported = crate::cpuid::cpuid_for(1, 0, 0, 0)[2] & (1 << 21) != 0;
        with_ctx(&mut st, &mut bus, |ctx| {
            let base = 0xfee0_0000u64;
            for bad in [base | 0x900 | 1, base | 0x900 | (1 << 9), base | 0x900 | (1 << 40), base | (1 << 10)]
            {
                assert!(!msr_write(ctx, 0x1b, bad), "{bad:#x}");
            }
            assert_eq!(ctx.st.msr.apic_base, base | 0x900, "refused writes change nothing");
            assert!(msr_write(ctx, 0x1b, 0xfed0_0000 | 0x900), "base move");
            assert!(msr_write(ctx, 0x1b, base | 0x100), "xAPIC -> disabled");
            assert!(!msr_write(ctx, 0x1b, base | 0xd00), "disabled -> x2APIC");
            assert!(msr_write(ctx, 0x1b, base | 0x900), "disabled -> xAPIC");
            assert_eq!(msr_write(ctx, 0x1b, base | 0xd00), x2_supported, "xAPIC -> x2APIC");
            if x2_supported {
                assert!(!msr_write(ctx, 0x1b, base | 0x900), "x2APIC -> xAPIC");
                assert!(msr_write(ctx, 0x1b, base | 0x100), "x2APIC -> disabled");
            }
        });
        assert!(
            bus.apic_base_writes.iter().all(|v| v & (1 << 9) == 0),
            "refused writes never reach the APIC"
        );
    }

    /// A non-canonical base is #GP for every base MSR; a canonical one is stored.
    #[test]
    fn base_msrs_reject_non_canonical_values() {
        let (mut st, mut bus) = machine();
        with_ctx(&mut st, &mut bus, |ctx| {
            for msr in [0x175, 0x176, 0xc000_0082, 0xc000_0083, 0xc000_0100, 0xc000_0101, 0xc000_0102] {
                for bad in [0x0000_8000_0000_0000u64, 0x7fff_0000_0000_0000, 0xffff_7fff_ffff_ffff] {
                    assert!(!msr_write(ctx, msr, bad), "{msr:#x} <- {bad:#x}");
                }
                for good in [0xffff_8000_0000_0000u64, 0x0000_7fff_ffff_f000] {
                    assert!(msr_write(ctx, msr, good), "{msr:#x} <- {good:#x}");
                    assert_eq!(msr_read(ctx, msr), Some(good), "{msr:#x}");
                }
            }
        });
    }

    /// Reserved bits of the MSRs the CPU keeps: #GP, the old value kept.
    #[test]
    fn reserved_bits_raise_gp() {
        let (mut st, mut bus) = machine();
        with_ctx(&mut st, &mut bus, |ctx| {
            let refuse = |ctx: &mut Ctx<'_>, msr: u32, v: u64| {
                let before = msr_read(ctx, msr);
                assert!(!msr_write(ctx, msr, v), "{msr:#x} <- {v:#x}");
                assert_eq!(msr_read(ctx, msr), before, "{msr:#x} unchanged");
            };
            refuse(ctx, 0xc000_0084, 1 << 32); // FMASK 63:32
            refuse(ctx, 0xc000_0103, 1 << 32); // TSC_AUX 63:32
            refuse(ctx, 0xc000_0080, 1 << 1); // EFER bit 1
            refuse(ctx, 0x1d9, 1 << 6); // DEBUGCTL.TR: no branch trace messages
            refuse(ctx, 0x277, 0x0007_0406_0002_0406); // PAT entry 2 holds type 2
            refuse(ctx, 0x2ff, 0xc02); // MTRRdefType: type 2
            refuse(ctx, 0x2ff, 0x1006); // MTRRdefType bit 12
            refuse(ctx, 0x200, 0x1000 | 7); // PHYSBASE0: type 7
            refuse(ctx, 0x200, 0x1000 | 6 | (1 << 8)); // PHYSBASE0: bit 8
            refuse(ctx, 0x200, (1 << 40) | 6); // PHYSBASE0: above MAXPHYADDR
            refuse(ctx, 0x201, 0xffff_f000 | 0x800 | 1); // PHYSMASK0: bit 0
            refuse(ctx, 0x250, 0x0606_0606_0606_0603); // MTRRfix64K: a byte of type 3
            assert!(!msr_write(ctx, 0x179, 0), "MCG_CAP is read-only");
            assert!(!msr_write(ctx, 0xfe, 0), "MTRRcap is read-only");
            if crate::cpuid::cpuid_for(1, 0, 0, 0)[2] & (1 << 24) == 0 {
                assert_eq!(msr_read(ctx, 0x6e0), None, "no TSC deadline without its CPUID bit");
                assert!(!msr_write(ctx, 0x6e0, 1), "no TSC deadline without its CPUID bit");
            }
            // The valid neighbours are accepted.
            for (msr, v) in [
                (0xc000_0084, 0xffff_ffffu64),
                (0x1d9, 3),
                (0x2ff, 0xc06),
                (0x200, 0xff_ffff_f006),
                (0x201, 0xff_ffff_f800),
                (0x250, 0x0606_0606_0606_0606),
                (0x174, 0xdead_beef_0010),
            ] {
                assert!(msr_write(ctx, msr, v), "{msr:#x} <- {v:#x}");
                assert_eq!(msr_read(ctx, msr), Some(v), "{msr:#x}");
            }
            // FEATURE_CONTROL: only the lock bit, and nothing once locked.
            refuse(ctx, 0x3a, 1 << 2);
            assert!(msr_write(ctx, 0x3a, 1));
            refuse(ctx, 0x3a, 1);
        });
    }
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
