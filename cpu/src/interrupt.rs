//! Delivery of exceptions and interrupts in every mode (Intel SDM vol. 3 ch. 6): the real-mode IVT,
//! protected-mode IDT gates with privilege changes and v86 exits, 64-bit IDT gates with IST, and the
//! escalation to double fault and triple fault.

use crate::fault::{Class, Fault, SoftKind, Stop, class_of, has_error_code, vec};
use crate::mem::Ctx;
use crate::regs::size_mask;
use crate::seg::{Desc, sel_err};
use crate::state::{Mode, Seg, Segment, attr, flags};

/// What is being delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A CPU exception (with its error code, if the vector has one).
    Exception {
        /// Error code.
        error: Option<u32>,
    },
    /// A software interrupt instruction.
    Soft {
        /// Which instruction.
        kind: SoftKind,
    },
    /// An external (maskable) interrupt.
    External,
    /// NMI.
    Nmi,
}

impl Event {
    fn ext(self) -> u32 {
        match self {
            Event::Soft { kind: SoftKind::Icebp } => 1,
            Event::Soft { .. } => 0,
            _ => 1,
        }
    }
}

/// Delivers `vector`; a fault during delivery escalates per SDM table 6-5: contributory on
/// contributory or anything but benign on a page fault becomes #DF, and a fault while delivering #DF
/// is a triple fault, reported as [`Stop::TripleFault`].
pub fn deliver_with_escalation(ctx: &mut Ctx<'_>, vector: u8, ev: Event) -> Result<(), Stop> {
    let rip = ctx.st.rip;
    deliver_with_escalation_at(ctx, vector, ev, rip)
}

/// As [`deliver_with_escalation`], where `fault_rip` is the RIP an exception raised during delivery
/// reports: for INT n/INT3/INTO the instruction itself (RIP at entry is the next instruction's, which is
/// what a successful delivery pushes).
pub fn deliver_with_escalation_at(
    ctx: &mut Ctx<'_>,
    vector: u8,
    ev: Event,
    fault_rip: u64,
) -> Result<(), Stop> {
    let mut vector = vector;
    let mut ev = ev;
    let start_rip = ctx.st.rip;
    for _ in 0..3 {
        let saved = ctx.st.clone();
        match deliver(ctx, vector, ev) {
            Ok(()) => return Ok(()),
            Err(Fault::Stop(s)) => return Err(s),
            Err(Fault::Soft { .. }) => {
                return Err(Stop::Shutdown("software interrupt during delivery".into()));
            }
            Err(Fault::Exc { vector: v2, error: e2 }) => {
                // Undo partial effects (pushes, segment loads) but keep CR2 from a #PF.
                let cr2 = ctx.st.cr2;
                *ctx.st = saved;
                ctx.st.cr2 = cr2;
                ctx.st.rip = if matches!(ev, Event::Soft { .. }) { fault_rip } else { start_rip };
                let first =
                    if matches!(ev, Event::Exception { .. }) { class_of(vector) } else { Class::Benign };
                let second = class_of(v2);
                if first == Class::DoubleFault {
                    return Err(Stop::TripleFault);
                }
                let double = matches!(
                    (first, second),
                    (Class::Contributory, Class::Contributory)
                        | (Class::PageFault, Class::Contributory)
                        | (Class::PageFault, Class::PageFault)
                );
                if double {
                    vector = vec::DF;
                    ev = Event::Exception { error: Some(0) };
                } else {
                    vector = v2;
                    ev = Event::Exception { error: e2 };
                }
            }
        }
    }
    Err(Stop::TripleFault)
}

/// Delivers one event without escalation.
pub fn deliver(ctx: &mut Ctx<'_>, vector: u8, ev: Event) -> Result<(), Fault> {
    ctx.st.halted = false;
    match ctx.st.mode() {
        Mode::Real => deliver_real(ctx, vector),
        Mode::Long64 | Mode::Compat => deliver_long(ctx, vector, ev),
        Mode::Protected | Mode::V86 => deliver_protected(ctx, vector, ev),
    }
}

fn deliver_real(ctx: &mut Ctx<'_>, vector: u8) -> Result<(), Fault> {
    let off = vector as u64 * 4;
    if off + 3 > ctx.st.idtr.limit as u64 {
        return Err(Fault::gp0());
    }
    let lin = ctx.st.idtr.base.wrapping_add(off) & 0xffff_ffff;
    let ent = ctx.read_lin(lin, 4)?;
    let fl = ctx.st.rflags;
    let cs = ctx.st.sreg(Seg::Cs).selector;
    let ip = ctx.st.rip;
    push16(ctx, fl)?;
    push16(ctx, cs as u64)?;
    push16(ctx, ip)?;
    ctx.st.rflags &= !(flags::IF | flags::TF | flags::AC | flags::RF);
    let new_cs = (ent >> 16) as u16;
    let r = ctx.st.sreg_mut(Seg::Cs);
    r.selector = new_cs;
    r.base = (new_cs as u64) << 4;
    ctx.st.rip = ent & 0xffff;
    Ok(())
}

fn push16(ctx: &mut Ctx<'_>, v: u64) -> Result<(), Fault> {
    let ss = ctx.st.stack_size();
    let sp = ctx.st.reg(4, ss).wrapping_sub(2) & size_mask(ss);
    ctx.write_mem(Seg::Ss, sp, 2, v)?;
    ctx.st.set_reg(4, ss, sp);
    Ok(())
}

/// Reads SS:ESP for privilege level `dpl` from the current 32- or 16-bit TSS.
pub fn tss_stack(ctx: &mut Ctx<'_>, dpl: u8) -> Result<(u16, u64), Fault> {
    let tr = ctx.st.tr;
    let tss32 = tr.attr & 0xf == 0xb || tr.attr & 0xf == 0x9;
    let ts_err = Fault::ts(sel_err(tr.selector));
    if tss32 {
        let off = 4 + dpl as u64 * 8;
        if off + 7 > tr.limit as u64 {
            return Err(ts_err);
        }
        let esp = ctx.read_lin_as(tr.base + off, 4, crate::paging::AccessKind::Read, true)?;
        let ss = ctx.read_lin_as(tr.base + off + 4, 2, crate::paging::AccessKind::Read, true)? as u16;
        Ok((ss, esp))
    } else {
        let off = 2 + dpl as u64 * 4;
        if off + 3 > tr.limit as u64 {
            return Err(ts_err);
        }
        let sp = ctx.read_lin_as(tr.base + off, 2, crate::paging::AccessKind::Read, true)?;
        let ss = ctx.read_lin_as(tr.base + off + 2, 2, crate::paging::AccessKind::Read, true)? as u16;
        Ok((ss, sp))
    }
}

/// Checks a new stack segment for an inter-privilege transfer to `dpl` (#TS(sel) / #SS(sel)); returns
/// its descriptor.
pub fn check_new_ss(ctx: &mut Ctx<'_>, ss: u16, dpl: u8) -> Result<Desc, Fault> {
    if ss & !3 == 0 {
        return Err(Fault::ts(0));
    }
    let d = ctx.read_desc(ss, Fault::ts(sel_err(ss)))?;
    if (ss & 3) as u8 != dpl || d.dpl() != dpl || !d.writable() {
        return Err(Fault::ts(sel_err(ss)));
    }
    if !d.present() {
        return Err(Fault::ss(sel_err(ss)));
    }
    Ok(d)
}

fn idt_gate(ctx: &mut Ctx<'_>, vector: u8, size: u64, ext: u32) -> Result<(Desc, u64), Fault> {
    let off = vector as u64 * size;
    let idt_err = Fault::gp((vector as u32) * 8 + 2 + ext);
    if off + size - 1 > ctx.st.idtr.limit as u64 {
        return Err(idt_err);
    }
    let base = ctx.st.idtr.base.wrapping_add(off);
    let base = if size == 8 { base & 0xffff_ffff } else { base };
    let lo = ctx.read_lin_as(base, 8, crate::paging::AccessKind::Read, true)?;
    let hi =
        if size == 16 { ctx.read_lin_as(base + 8, 8, crate::paging::AccessKind::Read, true)? } else { 0 };
    Ok((Desc(lo), hi))
}

fn deliver_protected(ctx: &mut Ctx<'_>, vector: u8, ev: Event) -> Result<(), Fault> {
    let ext = ev.ext();
    let idt_err = (vector as u32) * 8 + 2 + ext;
    let (gate, _) = idt_gate(ctx, vector, 8, ext)?;
    let typ = gate.typ();
    if gate.s() || !matches!(typ, 5 | 6 | 7 | 14 | 15) {
        return Err(Fault::gp(idt_err));
    }
    if let Event::Soft { kind } = ev
        && kind != SoftKind::Icebp
        && gate.dpl() < ctx.st.cpl
    {
        return Err(Fault::gp(idt_err));
    }
    if !gate.present() {
        return Err(Fault::np(idt_err));
    }
    let error = match ev {
        Event::Exception { error } if has_error_code(vector) => Some(error.unwrap_or(0)),
        _ => None,
    };
    if typ == 5 {
        let first = if matches!(ev, Event::Exception { .. }) { class_of(vector) } else { Class::Benign };
        return crate::task::task_gate_interrupt(ctx, gate.gate_selector(), error, ext, first);
    }
    let gate32 = typ & 8 != 0;
    let trap = typ & 1 != 0;
    let sel = gate.gate_selector();
    if sel & !3 == 0 {
        return Err(Fault::gp(ext));
    }
    let cd = ctx.read_desc(sel, Fault::gp(sel_err(sel) + ext))?;
    let cpl = ctx.st.cpl;
    if !cd.is_code() || cd.dpl() > cpl {
        return Err(Fault::gp(sel_err(sel) + ext));
    }
    if !cd.present() {
        return Err(Fault::np(sel_err(sel) + ext));
    }
    let offset = gate.gate_offset() & if gate32 { 0xffff_ffff } else { 0xffff };
    let v86 = ctx.st.rflags & flags::VM != 0;
    let old_flags = ctx.st.rflags;
    let old_cs = ctx.st.sreg(Seg::Cs).selector;
    let old_eip = ctx.st.rip;
    let psize: u32 = if gate32 { 4 } else { 2 };
    let new_cpl;
    if !cd.conforming() && cd.dpl() < cpl {
        // Inter-privilege: switch to the inner stack from the TSS.
        new_cpl = cd.dpl();
        if v86 && new_cpl != 0 {
            return Err(Fault::gp(sel_err(sel) + ext));
        }
        let (nss, nsp) = tss_stack(ctx, new_cpl).map_err(|f| match f {
            Fault::Exc { vector: 10, error: Some(e) } => Fault::ts(e + ext),
            other => other,
        })?;
        let ssd = check_new_ss(ctx, nss, new_cpl).map_err(|f| match f {
            Fault::Exc { vector: 10, .. } => Fault::ts(sel_err(nss) + ext),
            other => other,
        })?;
        let old_ss = ctx.st.sreg(Seg::Ss).selector;
        let old_esp = ctx.st.gpr[4];
        let old_segs = ctx.st.seg;
        let new_ss_seg = Desc(ssd.0 | (1 << 40)).to_segment(nss);
        // Push onto the new stack (as the new CPL, so user-page checks apply as supervisor). Leaving
        // v86 mode first makes the pushes see the new SS with protected-mode segment rules.
        ctx.st.cpl = new_cpl;
        ctx.privilege_changed();
        ctx.st.rflags &= !flags::VM;
        *ctx.st.sreg_mut(Seg::Ss) = new_ss_seg;
        let sp_mask = if ssd.big() { 0xffff_ffff } else { 0xffff };
        let mut sp = nsp & sp_mask;
        let mut pushv = |ctx: &mut Ctx<'_>, v: u64| -> Result<(), Fault> {
            sp = sp.wrapping_sub(psize as u64) & sp_mask;
            ctx.write_mem(Seg::Ss, sp, psize, v)
        };
        let r = (|| {
            if v86 {
                pushv(ctx, old_segs[Seg::Gs as usize].selector as u64)?;
                pushv(ctx, old_segs[Seg::Fs as usize].selector as u64)?;
                pushv(ctx, old_segs[Seg::Ds as usize].selector as u64)?;
                pushv(ctx, old_segs[Seg::Es as usize].selector as u64)?;
            }
            pushv(ctx, old_ss as u64)?;
            pushv(ctx, old_esp)?;
            pushv(ctx, old_flags)?;
            pushv(ctx, old_cs as u64)?;
            pushv(ctx, old_eip)?;
            if let Some(e) = error {
                pushv(ctx, e as u64)?;
            }
            Ok(())
        })();
        r?;
        if ssd.big() {
            ctx.st.gpr[4] = sp;
        } else {
            ctx.st.set_reg(4, 2, sp);
        }
        if v86 {
            for s in [Seg::Gs, Seg::Fs, Seg::Ds, Seg::Es] {
                *ctx.st.sreg_mut(s) = Segment { selector: 0, attr: 0, limit: 0, base: 0 };
            }
        }
        ctx.set_accessed(nss, ssd)?;
    } else {
        if v86 {
            return Err(Fault::gp(sel_err(sel) + ext));
        }
        new_cpl = cpl;
        let push = |ctx: &mut Ctx<'_>, v: u64| crate::exec::ops::push(ctx, psize, v);
        push(ctx, old_flags)?;
        push(ctx, old_cs as u64)?;
        push(ctx, old_eip)?;
        if let Some(e) = error {
            push(ctx, e as u64)?;
        }
    }
    if offset > cd.limit() as u64 {
        return Err(Fault::gp(ext));
    }
    ctx.set_accessed(sel, cd)?;
    let mut cs = Desc(cd.0 | (1 << 40)).to_segment((sel & !3) | new_cpl as u16);
    cs.attr |= attr::ACCESSED;
    *ctx.st.sreg_mut(Seg::Cs) = cs;
    ctx.st.cpl = new_cpl;
    ctx.privilege_changed();
    ctx.st.rip = offset;
    ctx.st.rflags &= !(flags::TF | flags::VM | flags::RF | flags::NT);
    if !trap {
        ctx.st.rflags &= !flags::IF;
    }
    Ok(())
}

fn deliver_long(ctx: &mut Ctx<'_>, vector: u8, ev: Event) -> Result<(), Fault> {
    let ext = ev.ext();
    let idt_err = (vector as u32) * 8 + 2 + ext;
    let (gate, hi) = idt_gate(ctx, vector, 16, ext)?;
    let typ = gate.typ();
    if gate.s() || !matches!(typ, 14 | 15) {
        return Err(Fault::gp(idt_err));
    }
    if let Event::Soft { kind } = ev
        && kind != SoftKind::Icebp
        && gate.dpl() < ctx.st.cpl
    {
        return Err(Fault::gp(idt_err));
    }
    if !gate.present() {
        return Err(Fault::np(idt_err));
    }
    let error = match ev {
        Event::Exception { error } if has_error_code(vector) => Some(error.unwrap_or(0)),
        _ => None,
    };
    let sel = gate.gate_selector();
    if sel & !3 == 0 {
        return Err(Fault::gp(ext));
    }
    let cd = ctx.read_desc(sel, Fault::gp(sel_err(sel) + ext))?;
    let cpl = ctx.st.cpl;
    if !cd.is_code() || !cd.long() || cd.big() || cd.dpl() > cpl {
        return Err(Fault::gp(sel_err(sel) + ext));
    }
    if !cd.present() {
        return Err(Fault::np(sel_err(sel) + ext));
    }
    let offset = gate.gate_offset() | ((hi & 0xffff_ffff) << 32);
    if !crate::mem::is_canonical(offset) {
        return Err(Fault::gp(ext));
    }
    let new_cpl = if cd.conforming() { cpl } else { cd.dpl() };
    let ist = gate.gate_ist();
    let old_ss = ctx.st.sreg(Seg::Ss).selector;
    let old_rsp = ctx.st.gpr[4];
    let old_flags = ctx.st.rflags;
    let old_cs = ctx.st.sreg(Seg::Cs).selector;
    let old_rip = ctx.st.rip;
    let tr = ctx.st.tr;
    let mut rsp = if ist != 0 || new_cpl < cpl {
        let off = if ist != 0 { 0x24 + (ist as u64 - 1) * 8 } else { 4 + new_cpl as u64 * 8 };
        if off + 7 > tr.limit as u64 {
            return Err(Fault::ts(sel_err(tr.selector) + ext));
        }
        ctx.read_lin_as(tr.base + off, 8, crate::paging::AccessKind::Read, true)?
    } else {
        old_rsp
    };
    if !crate::mem::is_canonical(rsp) {
        return Err(Fault::ss(ext));
    }
    rsp &= !0xf;
    ctx.st.cpl = new_cpl;
    ctx.privilege_changed();
    let vals = [old_ss as u64, old_rsp, old_flags, old_cs as u64, old_rip];
    for v in vals.iter().copied().chain(error.map(|e| e as u64)) {
        rsp = rsp.wrapping_sub(8);
        if let Err(e) = ctx.write_lin(rsp, 8, v) {
            ctx.st.cpl = cpl;
            ctx.privilege_changed();
            return Err(e);
        }
    }
    if new_cpl != cpl {
        *ctx.st.sreg_mut(Seg::Ss) = Segment {
            selector: new_cpl as u16,
            attr: attr::S | attr::RW | attr::DB | attr::P,
            limit: 0,
            base: 0,
        };
    }
    ctx.set_accessed(sel, cd)?;
    let cs = Desc(cd.0 | (1 << 40)).to_segment((sel & !3) | new_cpl as u16);
    *ctx.st.sreg_mut(Seg::Cs) = cs;
    ctx.st.gpr[4] = rsp;
    ctx.st.rip = offset;
    ctx.st.rflags &= !(flags::TF | flags::VM | flags::RF | flags::NT);
    if typ == 14 {
        ctx.st.rflags &= !flags::IF;
    }
    Ok(())
}
