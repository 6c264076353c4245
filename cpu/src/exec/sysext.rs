//! Later system-level instructions a PC guest meets: RDPMC, RDPID, SERIALIZE, MONITOR/MWAIT and
//! INVPCID (Intel SDM vol. 2). Whether each exists is the CPU model's decision (the decode-time gate
//! in [`super::handler_for_model`] raises #UD for what the model does not advertise); these handlers
//! implement the instruction where it exists.

use super::ops::*;
use super::system::require_cpl0;
use super::{Handler, Insn};
use crate::fault::Fault;
use crate::mem::{Ctx, is_canonical};
use crate::paging::AccessKind;
use crate::regs::{size_mask, sreg};
use crate::state::{Mode, Seg, cr4, flags};
use iced_x86::{Code, Register};

/// Handlers of this family.
pub fn lookup(code: Code) -> Option<Handler> {
    use Code as C;
    Some(match code {
        C::Rdpmc => rdpmc,
        C::Rdpid_r32 | C::Rdpid_r64 => rdpid,
        C::Serialize => serialize,
        C::Monitorw | C::Monitord | C::Monitorq => monitor,
        C::Mwait => mwait,
        C::Invpcid_r32_m128 | C::Invpcid_r64_m128 => invpcid,
        _ => return None,
    })
}

/// RDPMC: #GP(0) unless CR4.PCE = 1 or CPL = 0 (real mode is CPL 0; v86 mode is CPL 3); then #GP(0)
/// for a counter the CPU does not have. No model has performance-monitoring counters (CPUID leaf 0xA
/// is all zeros, the architectural way of saying so), so every index that passes the privilege check
/// is invalid. QEMU TCG raises #UD here instead; the SDM's #GP(0) wins.
fn rdpmc(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    let cpl = if ctx.st.mode() == Mode::V86 { 3 } else { ctx.st.cpl };
    if cpl != 0 && ctx.st.cr4 & cr4::PCE == 0 {
        return Err(Fault::gp0());
    }
    // ECX[31:0] names a general-purpose (bit 30 clear) or fixed-function (bit 30 set) counter: there
    // are none of either.
    Err(Fault::gp0())
}

/// RDPID r32/r64: IA32_TSC_AUX into the register (64-bit mode: the whole of it zero-extended; outside
/// 64-bit mode the 32-bit form). No privilege check and no flags.
fn rdpid(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let g = reg_op(insn, 0)?;
    let v = ctx.st.msr.tsc_aux & 0xffff_ffff;
    ctx.st.write_gpr(g, v);
    Ok(())
}

/// SERIALIZE: every earlier instruction has completed and every later one is fetched afresh, which an
/// interpreter that runs one instruction at a time guarantees already; ending the block re-reads
/// modified code at the next instruction, as on hardware.
fn serialize(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    ctx.break_block = true;
    Ok(())
}

/// MONITOR: #UD at CPL > 0 (neither vendor's user-mode MONITOR enable is modelled), #GP(0) for
/// non-zero extensions in ECX, then DS:rAX (segment override allowed) is checked as a read (limit,
/// canonical, paging) and the monitor is armed.
fn monitor(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if ctx.st.cpl != 0 || ctx.st.mode() == Mode::V86 {
        return Err(Fault::ud());
    }
    if ctx.st.gpr[1] as u32 != 0 {
        return Err(Fault::gp0());
    }
    let off = ctx.st.gpr[0] & size_mask(insn.asize as u32);
    let s = match insn.i.segment_prefix() {
        Register::None => Seg::Ds,
        r => sreg(r).unwrap_or(Seg::Ds),
    };
    let lin = ctx.seg_lin(s, off, 1, AccessKind::Read)?;
    ctx.lin_to_phys(lin, AccessKind::Read)?;
    ctx.st.monitor_armed = true;
    Ok(())
}

/// MWAIT: #UD at CPL > 0, #GP(0) for reserved extension bits (ECX[31:1]). With the monitor armed and
/// interrupts enabled it waits like HLT (the virtual clock runs to the next event, and the interrupt
/// that ends the wait is delivered); otherwise it returns at once, one of the "implementation-specific"
/// wake-ups the SDM allows (no other agent writes the monitored line on a one-CPU machine, so a wait
/// with interrupts masked could only end by NMI). Either way the monitor is disarmed.
fn mwait(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    if ctx.st.cpl != 0 || ctx.st.mode() == Mode::V86 {
        return Err(Fault::ud());
    }
    if ctx.st.gpr[1] as u32 & !1 != 0 {
        return Err(Fault::gp0());
    }
    if std::mem::take(&mut ctx.st.monitor_armed) && ctx.st.rflags & flags::IF != 0 {
        ctx.st.halted = true;
    }
    ctx.break_block = true;
    Ok(())
}

/// INVPCID type, m128: #UD in v86 mode, #GP(0) at CPL > 0, #GP(0) for a type above 3, a descriptor
/// with bits 63:12 set, a non-zero PCID with CR4.PCIDE = 0 (types 0 and 1), or a non-canonical
/// address (type 0). The TLB holds the current PCID's entries and global ones only (a change of PCID
/// drops the rest: see MOV to CR3), so each type drops what it must (SDM Vol. 2 INVPCID): type 0 the
/// page's entries if the PCID is the current one (its global entry too, which the SDM allows), type 1
/// every non-global entry if it is, type 2 everything, type 3 every non-global entry. Types 0 and 1
/// for another PCID find nothing of it to drop.
fn invpcid(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if ctx.st.mode() == Mode::V86 {
        return Err(Fault::ud());
    }
    require_cpl0(ctx)?;
    let g = reg_op(insn, 0)?;
    let typ = ctx.st.read_gpr(g);
    let off = ea(ctx, insn);
    let s = mem_seg(insn);
    let lo = ctx.read_mem(s, off, 8)?;
    let hi = ctx.read_mem(s, off.wrapping_add(8) & size_mask(insn.asize as u32), 8)?;
    if typ > 3 || lo >> 12 != 0 {
        return Err(Fault::gp0());
    }
    let pcid = lo & 0xfff;
    let pcide = ctx.st.cr4 & cr4::PCIDE != 0;
    let current = if pcide { ctx.st.cr3 & 0xfff } else { 0 };
    match typ {
        0 => {
            if (pcid != 0 && !pcide) || !is_canonical(hi) {
                return Err(Fault::gp0());
            }
            if pcid == current {
                ctx.mmu.tlb.flush_page(hi);
            }
        }
        1 => {
            if pcid != 0 && !pcide {
                return Err(Fault::gp0());
            }
            if pcid == current {
                ctx.mmu.tlb.flush(true);
            }
        }
        2 => ctx.mmu.tlb.flush(false),
        _ => ctx.mmu.tlb.flush(true),
    }
    ctx.break_block = true;
    Ok(())
}

#[cfg(test)]
mod tests;
