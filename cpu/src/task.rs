//! Hardware task switching through a TSS (Intel SDM vol. 3 ch. 8): JMP/CALL to a TSS descriptor or a
//! task gate, interrupts through a task gate, and IRET with NT set.
//!
//! A switch has two phases. Before the commit point every check that involves the old task or the
//! new TSS descriptor is made, the new TSS is read, the old task's state is saved into its TSS and the
//! busy bits and back link are written; a fault there is delivered in the old task with its registers
//! unchanged. At the commit point TR, CR0.TS, CR3, EFLAGS, EIP and the general registers and selectors
//! are loaded from the new TSS; then LDTR and the segment registers are checked and loaded, and a fault
//! from those checks is delivered in the context of the new task (SDM 8.3, table 8-1).
//!
//! Task switches do not exist in IA-32e mode; the callers reject them there (#GP).

use crate::fault::{Class, Fault, Stop, class_of, vec};
use crate::interrupt::Event;
use crate::mem::Ctx;
use crate::paging::AccessKind;
use crate::seg::{Desc, sel_err};
use crate::state::{Seg, Segment, attr, cr0, cr4, efer, flags};

/// Why a task switch happens (it decides busy-bit, NT and back-link handling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchReason {
    /// JMP to a TSS or task gate.
    Jmp,
    /// CALL to a TSS or task gate.
    Call,
    /// Interrupt or exception through a task gate.
    Interrupt,
    /// IRET with NT set.
    Iret,
}

/// Interrupt or exception delivered through a task gate naming TSS selector `sel`; `error` is pushed on
/// the new task's stack. `ext` is the EXT bit for error codes of faults raised while switching, and
/// `first` the double-fault class of the event being delivered: a fault after the commit point is
/// delivered in the new task, as a double fault where SDM table 6-5 says so.
pub fn task_gate_interrupt(
    ctx: &mut Ctx<'_>,
    sel: u16,
    error: Option<u32>,
    ext: u32,
    first: Class,
) -> Result<(), Fault> {
    let t = prepare(ctx, sel, SwitchReason::Interrupt, ext)?;
    let f = match commit(ctx, &t, SwitchReason::Interrupt, error, ext) {
        Ok(()) => return Ok(()),
        Err(f) => f,
    };
    let Fault::Exc { vector: v2, error: e2 } = f else {
        return Err(f);
    };
    if first == Class::DoubleFault {
        return Err(Fault::Stop(Stop::TripleFault));
    }
    let double = matches!(
        (first, class_of(v2)),
        (Class::Contributory, Class::Contributory)
            | (Class::PageFault, Class::Contributory)
            | (Class::PageFault, Class::PageFault)
    );
    let (v, e) = if double { (vec::DF, Some(0)) } else { (v2, e2) };
    crate::interrupt::deliver_with_escalation(ctx, v, Event::Exception { error: e }).map_err(Fault::Stop)
}

/// Switches to the task whose TSS selector is `sel` for a JMP, CALL or IRET (the instruction's handler
/// calls this: the old task resumes at `ctx.next_rip`), or for an interrupt with `error` to push (the
/// old task resumes at `ctx.st.rip`). A fault after the commit point is returned with the new task's
/// state already loaded, so it is delivered in the new task.
pub fn switch_task(
    ctx: &mut Ctx<'_>,
    sel: u16,
    reason: SwitchReason,
    error: Option<u32>,
) -> Result<(), Fault> {
    let t = prepare(ctx, sel, reason, 0)?;
    commit(ctx, &t, reason, error, 0)
}

/// What the commit phase loads.
struct NewTask {
    sel: u16,
    desc: Desc,
    tss32: bool,
    cr3: u32,
    eip: u32,
    eflags: u32,
    gpr: [u32; 8],
    /// ES, CS, SS, DS, FS, GS (the order of [`Seg`]).
    segs: [u16; 6],
    ldt: u16,
    /// The T (debug trap) bit of a 32-bit TSS.
    trap: bool,
}

/// Reads `N` bytes of a TSS (implicit supervisor reads).
fn read_tss<const N: usize>(ctx: &mut Ctx<'_>, base: u64) -> Result<[u8; N], Fault> {
    let mut b = [0u8; N];
    let mut done = 0;
    while done < N {
        let n = (N - done).min(8);
        let v = ctx.read_lin_as((base + done as u64) & 0xffff_ffff, n as u32, AccessKind::Read, true)?;
        b[done..done + n].copy_from_slice(&v.to_le_bytes()[..n]);
        done += n;
    }
    Ok(b)
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Everything before the commit point. No register changes; on success the old task is saved, the busy
/// bits and back link are written.
fn prepare(ctx: &mut Ctx<'_>, sel: u16, reason: SwitchReason, ext: u32) -> Result<NewTask, Fault> {
    if ctx.st.efer & efer::LMA != 0 {
        return Err(Fault::gp0());
    }
    let err = sel_err(sel) + ext;
    // The selector must name a TSS descriptor in the GDT: #TS for IRET, #GP otherwise.
    let bad_sel = if reason == SwitchReason::Iret { Fault::ts(err) } else { Fault::gp(err) };
    if sel & 4 != 0 {
        return Err(bad_sel);
    }
    let d = ctx.read_desc(sel, bad_sel.clone())?;
    // IRET returns to a busy task; everything else needs an available one.
    let want_busy = reason == SwitchReason::Iret;
    let ok = !d.s() && matches!(d.typ(), 1 | 3 | 9 | 11) && (d.typ() & 2 != 0) == want_busy;
    if !ok {
        return Err(bad_sel);
    }
    if !d.present() {
        return Err(Fault::np(err));
    }
    let tss32 = d.typ() & 8 != 0;
    if d.limit() < if tss32 { 0x67 } else { 0x2b } {
        return Err(Fault::ts(err));
    }
    let tr = ctx.st.tr;
    let old32 = tr.attr & 8 != 0;
    if tr.limit < if old32 { 0x5f } else { 0x29 } {
        return Err(Fault::ts(sel_err(tr.selector) + ext));
    }

    // Read the new task's state (page faults here are the old task's).
    let base = d.base();
    let mut t = NewTask {
        sel,
        desc: d,
        tss32,
        cr3: 0,
        eip: 0,
        eflags: 0,
        gpr: [0; 8],
        segs: [0; 6],
        ldt: 0,
        trap: false,
    };
    if tss32 {
        let b = read_tss::<0x68>(ctx, base)?;
        t.cr3 = le32(&b, 0x1c);
        t.eip = le32(&b, 0x20);
        t.eflags = le32(&b, 0x24);
        for (i, g) in t.gpr.iter_mut().enumerate() {
            *g = le32(&b, 0x28 + 4 * i);
        }
        for (i, s) in t.segs.iter_mut().enumerate() {
            *s = le16(&b, 0x48 + 4 * i);
        }
        t.ldt = le16(&b, 0x60);
        t.trap = b[0x64] & 1 != 0;
    } else {
        let b = read_tss::<0x2c>(ctx, base)?;
        t.eip = le16(&b, 0x0e) as u32;
        t.eflags = le16(&b, 0x10) as u32;
        // A 16-bit TSS holds only the low halves; the upper halves read as ones (as on the 386,
        // Bochs and QEMU).
        for (i, g) in t.gpr.iter_mut().enumerate() {
            *g = 0xffff_0000 | le16(&b, 0x12 + 2 * i) as u32;
        }
        for i in 0..4 {
            t.segs[i] = le16(&b, 0x22 + 2 * i);
        }
        t.ldt = le16(&b, 0x2a);
    }

    // Save the old task. IRET saves NT clear; the return address depends on who switches.
    let mut fl = ctx.st.rflags;
    if reason == SwitchReason::Iret {
        fl &= !flags::NT;
    }
    let eip = if reason == SwitchReason::Interrupt { ctx.st.rip } else { ctx.next_rip };
    let ob = tr.base;
    let put = |ctx: &mut Ctx<'_>, off: u64, size: u32, v: u64| {
        ctx.write_lin_as((ob + off) & 0xffff_ffff, size, v, true)
    };
    if old32 {
        put(ctx, 0x20, 4, eip & 0xffff_ffff)?;
        put(ctx, 0x24, 4, fl & 0xffff_ffff)?;
        for i in 0..8 {
            let v = ctx.st.gpr[i] & 0xffff_ffff;
            put(ctx, 0x28 + 4 * i as u64, 4, v)?;
        }
        for s in Seg::ALL {
            let v = ctx.st.sreg(s).selector as u64;
            put(ctx, 0x48 + 4 * s as u64, 2, v)?;
        }
    } else {
        put(ctx, 0x0e, 2, eip & 0xffff)?;
        put(ctx, 0x10, 2, fl & 0xffff)?;
        for i in 0..8 {
            let v = ctx.st.gpr[i] & 0xffff;
            put(ctx, 0x12 + 2 * i as u64, 2, v)?;
        }
        for (i, s) in [Seg::Es, Seg::Cs, Seg::Ss, Seg::Ds].into_iter().enumerate() {
            let v = ctx.st.sreg(s).selector as u64;
            put(ctx, 0x22 + 2 * i as u64, 2, v)?;
        }
    }
    // Busy bits and the back link.
    if matches!(reason, SwitchReason::Jmp | SwitchReason::Iret) {
        ctx.set_tss_busy(tr.selector, false)?;
    }
    if matches!(reason, SwitchReason::Call | SwitchReason::Interrupt) {
        ctx.write_lin_as(base & 0xffff_ffff, 2, tr.selector as u64, true)?;
    }
    if reason != SwitchReason::Iret {
        ctx.set_tss_busy(sel, true)?;
    }
    Ok(t)
}

/// The commit point and everything after it. Returns the fault (already in the new task's context)
/// if a segment of the new task is invalid.
fn commit(
    ctx: &mut Ctx<'_>,
    t: &NewTask,
    reason: SwitchReason,
    error: Option<u32>,
    ext: u32,
) -> Result<(), Fault> {
    ctx.break_block = true;
    let mut tr = t.desc.to_segment(t.sel);
    tr.attr |= 2;
    ctx.st.tr = tr;
    ctx.st.cr0 |= cr0::TS;
    // Local breakpoint enables (L0-L3, LE) are cleared on every task switch.
    ctx.st.dr[7] &= !0x155;
    if ctx.mmu.debug.sync(ctx.st) {
        ctx.mmu.tlb.flush(false);
    }
    if t.tss32 && ctx.st.paging() {
        ctx.st.cr3 = t.cr3 as u64;
        ctx.mmu.tlb.flush(true);
    }
    let nested = matches!(reason, SwitchReason::Call | SwitchReason::Interrupt);
    let mut fl = if t.tss32 { t.eflags as u64 } else { t.eflags as u64 & 0xffff };
    if nested {
        fl |= flags::NT;
    }
    let old_fl = ctx.st.rflags;
    ctx.st.rflags = (fl & flags::ALL) | flags::FIXED1;
    if old_fl & !ctx.st.rflags & flags::AC != 0 && ctx.st.cr4 & cr4::SMAP != 0 {
        ctx.mmu.tlb.drop_smap_entries();
    }
    ctx.st.rip = t.eip as u64;
    ctx.next_rip = t.eip as u64;
    for (i, &g) in t.gpr.iter().enumerate() {
        ctx.st.gpr[i] = g as u64;
    }
    let v86 = ctx.st.rflags & flags::VM != 0;
    // Selectors first, with unusable caches: a fault below leaves them visible in the new task.
    for s in Seg::ALL {
        *ctx.st.sreg_mut(s) = Segment { selector: t.segs[s as usize], attr: 0, limit: 0, base: 0 };
    }
    ctx.st.ldtr = Segment { selector: t.ldt, attr: 0, limit: 0, base: 0 };
    ctx.st.cpl = if v86 { 3 } else { (t.segs[Seg::Cs as usize] & 3) as u8 };
    ctx.privilege_changed();

    load_ldtr(ctx, t.ldt, ext)?;
    if v86 {
        for s in Seg::ALL {
            let sel = t.segs[s as usize];
            let mut a = attr::P | attr::S | attr::RW | attr::ACCESSED | (3 << attr::DPL_SHIFT);
            if s == Seg::Cs {
                a |= attr::CODE;
            }
            *ctx.st.sreg_mut(s) = Segment { selector: sel, attr: a, limit: 0xffff, base: (sel as u64) << 4 };
        }
    } else {
        load_cs(ctx, t.segs[Seg::Cs as usize], ext)?;
        load_ss(ctx, t.segs[Seg::Ss as usize], ext)?;
        for s in [Seg::Ds, Seg::Es, Seg::Fs, Seg::Gs] {
            load_data(ctx, s, t.segs[s as usize], ext)?;
        }
    }

    if let Some(e) = error {
        let size = if t.tss32 { 4 } else { 2 };
        crate::exec::ops::push(ctx, size, e as u64).map_err(|f| match f {
            Fault::Exc { vector: vec::SS, .. } => Fault::ss(ext),
            other => other,
        })?;
    }
    if ctx.st.rip > ctx.st.sreg(Seg::Cs).limit as u64 {
        return Err(Fault::gp(ext));
    }
    if t.trap {
        // Debug trap before the new task's first instruction (DR6.BT), delivered by the interpreter with
        // the other trap-class debug conditions once the switch (or the event delivery through a task
        // gate) completes.
        ctx.st.dr[6] |= crate::debug::dr6::BT;
        ctx.mmu.debug.pending |= crate::debug::dr6::BT;
    }
    Ok(())
}

fn load_ldtr(ctx: &mut Ctx<'_>, sel: u16, ext: u32) -> Result<(), Fault> {
    if sel & !3 == 0 {
        return Ok(());
    }
    let err = Fault::ts(sel_err(sel) + ext);
    if sel & 4 != 0 {
        return Err(err);
    }
    let d = ctx.read_desc(sel, err.clone())?;
    if d.s() || d.typ() != 2 || !d.present() {
        return Err(err);
    }
    ctx.st.ldtr = d.to_segment(sel);
    Ok(())
}

fn load_cs(ctx: &mut Ctx<'_>, sel: u16, ext: u32) -> Result<(), Fault> {
    let err = Fault::ts(sel_err(sel) + ext);
    if sel & !3 == 0 {
        return Err(err);
    }
    let d = ctx.read_desc(sel, err.clone())?;
    let rpl = (sel & 3) as u8;
    if !d.is_code() || (d.conforming() && d.dpl() > rpl) || (!d.conforming() && d.dpl() != rpl) {
        return Err(err);
    }
    if !d.present() {
        return Err(Fault::np(sel_err(sel) + ext));
    }
    ctx.set_accessed(sel, d)?;
    *ctx.st.sreg_mut(Seg::Cs) = Desc(d.0 | (1 << 40)).to_segment(sel);
    Ok(())
}

fn load_ss(ctx: &mut Ctx<'_>, sel: u16, ext: u32) -> Result<(), Fault> {
    let err = Fault::ts(sel_err(sel) + ext);
    if sel & !3 == 0 {
        return Err(err);
    }
    let d = ctx.read_desc(sel, err.clone())?;
    let cpl = ctx.st.cpl;
    if !d.writable() || (sel & 3) as u8 != cpl || d.dpl() != cpl {
        return Err(err);
    }
    if !d.present() {
        return Err(Fault::ss(sel_err(sel) + ext));
    }
    ctx.set_accessed(sel, d)?;
    *ctx.st.sreg_mut(Seg::Ss) = Desc(d.0 | (1 << 40)).to_segment(sel);
    Ok(())
}

fn load_data(ctx: &mut Ctx<'_>, s: Seg, sel: u16, ext: u32) -> Result<(), Fault> {
    if sel & !3 == 0 {
        return Ok(());
    }
    let err = Fault::ts(sel_err(sel) + ext);
    let d = ctx.read_desc(sel, err.clone())?;
    let cpl = ctx.st.cpl;
    let rpl = (sel & 3) as u8;
    if !d.readable() || (!d.conforming() && (d.dpl() < cpl || d.dpl() < rpl)) {
        return Err(err);
    }
    if !d.present() {
        return Err(Fault::np(sel_err(sel) + ext));
    }
    ctx.set_accessed(sel, d)?;
    *ctx.st.sreg_mut(s) = Desc(d.0 | (1 << 40)).to_segment(sel);
    Ok(())
}

/// Test harness shared by the privilege-transfer tests (gates, task switches, fast system calls): a GDT,
/// an IDT whose handlers record the vector and halt, and a TSS, written into the test RAM.
#[cfg(test)]
pub(crate) mod harness {
    use crate::seg::Desc;
    use crate::state::{CpuState, DescTable, Seg, Segment, attr, efer};
    use crate::testutil::TestBus;
    use iced_x86::code_asm::{CodeAssembler, CodeLabel};

    /// GDT (32 entries).
    pub const GDT: u64 = 0x600;
    /// The vector the IDT stubs record (0xff until one runs).
    pub const VEC: u64 = 0x700;
    /// IDT (vectors 0..=0x30).
    pub const IDT: u64 = 0x800;
    /// Stub handlers, 16 bytes each.
    pub const STUBS: u64 = 0xc00;
    /// The current task's TSS.
    pub const TSS0: u64 = 0x3000;
    /// Ring-0 stack top (TSS.ESP0 / RSP0).
    pub const ESP0: u64 = 0x7000;
    /// Ring-3 stack top.
    pub const ESP3: u64 = 0x6000;
    /// Kernel code, kernel data, user code (RPL 3), user data (RPL 3), the current TSS.
    pub const K_CODE: u16 = 0x08;
    pub const K_DATA: u16 = 0x10;
    pub const U_CODE: u16 = 0x1b;
    pub const U_DATA: u16 = 0x23;
    pub const TSS_SEL: u16 = 0x28;
    /// 64-bit mode only: 64-bit user code (RPL 3); the TSS is at 0x30 (16 bytes).
    pub const U_CODE64: u16 = 0x2b;
    pub const TSS64_SEL: u16 = 0x30;
    /// The vector of the DPL-3 "done" gate.
    pub const DONE: u8 = 0x30;

    pub fn wr(bus: &mut TestBus, a: u64, size: usize, v: u64) {
        bus.ram[a as usize..a as usize + size].copy_from_slice(&v.to_le_bytes()[..size]);
    }
    pub fn rd(bus: &TestBus, a: u64, size: usize) -> u64 {
        let mut b = [0u8; 8];
        b[..size].copy_from_slice(&bus.ram[a as usize..a as usize + size]);
        u64::from_le_bytes(b)
    }
    pub fn place(bus: &mut TestBus, a: u64, code: &[u8]) {
        bus.ram[a as usize..a as usize + code.len()].copy_from_slice(code);
    }

    /// A code/data/system descriptor: `access` is bits 40-47, `fl` the G/D/L/AVL nibble.
    pub fn seg(base: u32, limit: u32, access: u8, fl: u8) -> u64 {
        let (b, l) = (base as u64, limit as u64);
        (l & 0xffff)
            | ((b & 0xff_ffff) << 16)
            | ((access as u64) << 40)
            | (((l >> 16) & 0xf) << 48)
            | ((fl as u64 & 0xf) << 52)
            | ((b >> 24) << 56)
    }
    /// A gate descriptor (low 8 bytes).
    pub fn gate(sel: u16, off: u32, access: u8, params: u8) -> u64 {
        (off as u64 & 0xffff)
            | ((sel as u64) << 16)
            | ((params as u64 & 0x1f) << 32)
            | ((access as u64) << 40)
            | ((off as u64 >> 16) << 48)
    }
    pub fn set_gdt(bus: &mut TestBus, sel: u16, d: u64) {
        wr(bus, GDT + (sel & !7) as u64, 8, d);
    }
    /// Loads segment register `s` from the GDT in RAM (no checks).
    pub fn load(st: &mut CpuState, bus: &TestBus, s: Seg, sel: u16) {
        let d = Desc(rd(bus, GDT + (sel & !7) as u64, 8));
        *st.sreg_mut(s) = d.to_segment(sel);
    }

    /// Assembles at `addr`; returns the bytes and the addresses of `labels`' targets.
    pub fn asm_at(
        bits: u32,
        addr: u64,
        f: impl FnOnce(&mut CodeAssembler) -> Vec<CodeLabel>,
    ) -> (Vec<u8>, Vec<u64>) {
        let mut a = CodeAssembler::new(bits).expect("bitness");
        let labels = f(&mut a);
        let r = a
            .assemble_options(addr, iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
            .expect("assemble");
        let ips = labels.iter().map(|l| r.label_ip(l).expect("label")).collect();
        (r.inner.code_buffer, ips)
    }

    /// 32-bit protected mode, CPL 0: flat ring-0/ring-3 segments, an IDT of recording stubs (vector
    /// 0x30 callable from ring 3), and TR = a busy 32-bit TSS with SS0:ESP0 = K_DATA:ESP0.
    pub fn prot_env(st: &mut CpuState, bus: &mut TestBus) {
        for (sel, d) in [
            (K_CODE, seg(0, 0xfffff, 0x9b, 0xc)),
            (K_DATA, seg(0, 0xfffff, 0x93, 0xc)),
            (U_CODE, seg(0, 0xfffff, 0xfb, 0xc)),
            (U_DATA, seg(0, 0xfffff, 0xf3, 0xc)),
            (TSS_SEL, seg(TSS0 as u32, 0x67, 0x8b, 0)),
        ] {
            set_gdt(bus, sel, d);
        }
        st.gdtr = DescTable { base: GDT, limit: 0xff, _pad: 0 };
        for v in 0..=DONE as u64 {
            let stub = STUBS + v * 16;
            let dpl3 = if v == DONE as u64 { 0x60 } else { 0 };
            wr(bus, IDT + v * 8, 8, gate(K_CODE, stub as u32, 0x8e | dpl3, 0));
            // mov dword ss:[VEC], v; hlt (SS: DS may be null after an exit from v86 mode)
            let mut b = vec![0x36, 0xc7, 0x05];
            b.extend_from_slice(&(VEC as u32).to_le_bytes());
            b.extend_from_slice(&(v as u32).to_le_bytes());
            b.push(0xf4);
            place(bus, stub, &b);
        }
        st.idtr = DescTable { base: IDT, limit: (DONE as u32 + 1) * 8 - 1, _pad: 0 };
        wr(bus, TSS0 + 4, 4, ESP0);
        wr(bus, TSS0 + 8, 2, K_DATA as u64);
        st.tr = Segment { selector: TSS_SEL, attr: attr::P | 0xb, limit: 0x67, base: TSS0 };
        wr(bus, VEC, 4, 0xff);
    }

    /// 64-bit mode, CPL 0: GDT with 64-bit kernel code, user 32-bit code, user data, user 64-bit code
    /// and a 64-bit TSS (RSP0 = ESP0); IDT of 16-byte gates to recording stubs; user-accessible pages.
    pub fn long_env(st: &mut CpuState, bus: &mut TestBus) {
        for (sel, d) in [
            (K_CODE, seg(0, 0xfffff, 0x9b, 0xa)),
            (K_DATA, seg(0, 0xfffff, 0x93, 0xc)),
            (0x18, seg(0, 0xfffff, 0xfb, 0xc)),
            (U_DATA, seg(0, 0xfffff, 0xf3, 0xc)),
            (U_CODE64, seg(0, 0xfffff, 0xfb, 0xa)),
            (TSS64_SEL, seg(TSS0 as u32, 0x67, 0x8b, 0)),
        ] {
            set_gdt(bus, sel, d);
        }
        set_gdt(bus, TSS64_SEL + 8, 0);
        st.gdtr = DescTable { base: GDT, limit: 0xff, _pad: 0 };
        for v in 0..=DONE as u64 {
            let stub = STUBS + v * 16;
            let dpl3 = if v == DONE as u64 { 0x60 } else { 0 };
            wr(bus, IDT + v * 16, 8, gate(K_CODE, stub as u32, 0x8e | dpl3, 0));
            wr(bus, IDT + v * 16 + 8, 8, 0);
            // mov dword [abs VEC], v; hlt
            let mut b = vec![0xc7, 0x04, 0x25];
            b.extend_from_slice(&(VEC as u32).to_le_bytes());
            b.extend_from_slice(&(v as u32).to_le_bytes());
            b.push(0xf4);
            place(bus, stub, &b);
        }
        st.idtr = DescTable { base: IDT, limit: (DONE as u32 + 1) * 16 - 1, _pad: 0 };
        wr(bus, TSS0 + 4, 8, ESP0);
        st.tr = Segment { selector: TSS64_SEL, attr: attr::P | 0xb, limit: 0x67, base: TSS0 };
        wr(bus, VEC, 4, 0xff);
        // Make the identity map user-accessible.
        let pml4 = st.cr3;
        wr(bus, pml4, 8, (pml4 + 0x1000) | 7);
        wr(bus, pml4 + 0x1000, 8, (pml4 + 0x2000) | 7);
        for i in 0..512u64 {
            wr(bus, pml4 + 0x2000 + i * 8, 8, (i << 21) | 0x87);
        }
        assert!(st.efer & efer::LMA != 0);
    }

    /// A 32-bit ring-0 task: EIP, EFLAGS, EAX, ESP, flat kernel segments.
    pub fn write_tss32(bus: &mut TestBus, base: u64, eip: u64, eflags: u64, v_eax: u64, v_esp: u64) {
        for off in (0..0x68).step_by(4) {
            wr(bus, base + off, 4, 0);
        }
        wr(bus, base + 0x20, 4, eip);
        wr(bus, base + 0x24, 4, eflags);
        wr(bus, base + 0x28, 4, v_eax);
        wr(bus, base + 0x38, 4, v_esp);
        for (i, sel) in [K_DATA, K_CODE, K_DATA, K_DATA, K_DATA, K_DATA].iter().enumerate() {
            wr(bus, base + 0x48 + 4 * i as u64, 2, *sel as u64);
        }
    }

    /// Drops to ring 3 (legacy protected mode): user code and data, ESP = ESP3.
    pub fn to_ring3(st: &mut CpuState, bus: &TestBus, code: u16) {
        load(st, bus, Seg::Cs, code);
        for s in [Seg::Ss, Seg::Ds, Seg::Es, Seg::Fs, Seg::Gs] {
            load(st, bus, s, U_DATA);
        }
        st.cpl = 3;
        st.gpr[4] = ESP3;
    }
}

#[cfg(test)]
mod tests {
    use super::harness::*;
    use crate::interp::Exit;
    use crate::state::{Seg, cr0, flags};
    use crate::testutil::*;
    use iced_x86::code_asm::*;

    const TSS2: u64 = 0x3100;
    const TSS2_SEL: u16 = 0x30;
    const TSS3: u64 = 0x3200;
    const TSS3_SEL: u16 = 0x38;
    const TASK2: u64 = 0x2000;

    fn type_byte(bus: &TestBus, sel: u16) -> u64 {
        rd(bus, GDT + sel as u64 + 5, 1)
    }

    #[test]
    fn jmp_to_tss_and_back_saves_state() {
        let (code, l) = asm_at(32, CODE, |a| {
            let mut back = a.create_label();
            a.mov(eax, 0x1111_1111u32).unwrap();
            a.mov(ebx, 0x2222_2222u32).unwrap();
            a.jmp_far(TSS2_SEL, 0).unwrap();
            a.set_label(&mut back).unwrap();
            a.mov(dword_ptr(DATA as u32), eax).unwrap();
            vec![back]
        });
        let (task2, l2) = asm_at(32, TASK2, |a| {
            let mut after = a.create_label();
            a.mov(dword_ptr(DATA as u32 + 4), eax).unwrap();
            a.pushfd().unwrap();
            a.pop(dword_ptr(DATA as u32 + 8)).unwrap();
            a.mov(dword_ptr(DATA as u32 + 12), esp).unwrap();
            a.mov(eax, 0x3333_3333u32).unwrap();
            a.jmp_far(TSS_SEL, 0).unwrap();
            a.set_label(&mut after).unwrap();
            a.nop().unwrap();
            vec![after]
        });
        let (st, bus, exit) = run(TestMode::Prot32, &code, |st, bus| {
            prot_env(st, bus);
            set_gdt(bus, TSS2_SEL, seg(TSS2 as u32, 0x67, 0x89, 0));
            write_tss32(bus, TSS2, TASK2, 0x3, 0xaaaa_0001, 0x5000);
            place(bus, TASK2, &task2);
        });
        assert_eq!(exit, Exit::Halted, "{}", st.dump());
        assert_eq!(rd(&bus, VEC, 4), 0xff, "no exception");
        assert_eq!(st.tr.selector, TSS_SEL);
        assert_eq!(st.gpr[0], 0x1111_1111);
        assert_eq!(st.gpr[3], 0x2222_2222);
        assert_eq!(rd(&bus, DATA, 4), 0x1111_1111);
        // Task 2 ran with its TSS state and without NT (JMP does not nest).
        assert_eq!(rd(&bus, DATA + 4, 4), 0xaaaa_0001);
        assert_eq!(rd(&bus, DATA + 8, 4), 0x3);
        assert_eq!(rd(&bus, DATA + 12, 4), 0x5000);
        // Task 1's state saved at the first switch.
        assert_eq!(rd(&bus, TSS0 + 0x20, 4), l[0], "saved EIP");
        assert_eq!(rd(&bus, TSS0 + 0x28, 4), 0x1111_1111, "saved EAX");
        assert_eq!(rd(&bus, TSS0 + 0x34, 4), 0x2222_2222, "saved EBX");
        assert_eq!(rd(&bus, TSS0 + 0x38, 4), STACK, "saved ESP");
        assert_eq!(rd(&bus, TSS0 + 0x4c, 2), K_CODE as u64, "saved CS");
        assert_eq!(rd(&bus, TSS0 + 0x50, 2), K_DATA as u64, "saved SS");
        assert_eq!(rd(&bus, TSS0 + 0x24, 4) & flags::NT, 0);
        // Task 2's state saved at the second switch.
        assert_eq!(rd(&bus, TSS2 + 0x20, 4), l2[0]);
        assert_eq!(rd(&bus, TSS2 + 0x28, 4), 0x3333_3333);
        // JMP clears the old task's busy bit and sets the new one's; no back link.
        assert_eq!(type_byte(&bus, TSS_SEL), 0x8b);
        assert_eq!(type_byte(&bus, TSS2_SEL), 0x89);
        assert_eq!(rd(&bus, TSS2, 2), 0);
        assert_ne!(st.cr0 & cr0::TS, 0);
        assert_eq!(st.sreg(Seg::Cs).selector, K_CODE);
        assert!(st.sreg(Seg::Ss).big());
    }

    #[test]
    fn call_to_tss_and_iret_with_nt() {
        let (code, l) = asm_at(32, CODE, |a| {
            let mut back = a.create_label();
            a.mov(eax, 0x1111_1111u32).unwrap();
            a.call_far(TSS2_SEL, 0).unwrap();
            a.set_label(&mut back).unwrap();
            a.mov(dword_ptr(DATA as u32), eax).unwrap();
            a.pushfd().unwrap();
            a.pop(dword_ptr(DATA as u32 + 4)).unwrap();
            vec![back]
        });
        let (task2, l2) = asm_at(32, TASK2, |a| {
            let mut after = a.create_label();
            a.pushfd().unwrap();
            a.pop(dword_ptr(DATA as u32 + 8)).unwrap();
            a.mov(eax, 0x3333_3333u32).unwrap();
            a.iretd().unwrap();
            a.set_label(&mut after).unwrap();
            a.nop().unwrap();
            vec![after]
        });
        let (st, bus, exit) = run(TestMode::Prot32, &code, |st, bus| {
            prot_env(st, bus);
            set_gdt(bus, TSS2_SEL, seg(TSS2 as u32, 0x67, 0x89, 0));
            write_tss32(bus, TSS2, TASK2, 0x2, 0, 0x5000);
            place(bus, TASK2, &task2);
        });
        assert_eq!(exit, Exit::Halted, "{}", st.dump());
        assert_eq!(rd(&bus, VEC, 4), 0xff, "no exception");
        assert_eq!(st.tr.selector, TSS_SEL);
        assert_eq!(st.gpr[0], 0x1111_1111);
        // The called task runs with NT set and a back link to the caller.
        assert_ne!(rd(&bus, DATA + 8, 4) & flags::NT, 0);
        assert_eq!(rd(&bus, TSS2, 2), TSS_SEL as u64);
        // Back in task 1: NT as it was, state from the TSS.
        assert_eq!(rd(&bus, DATA, 4), 0x1111_1111);
        assert_eq!(rd(&bus, DATA + 4, 4) & flags::NT, 0);
        assert_eq!(rd(&bus, TSS0 + 0x20, 4), l[0]);
        // IRET saved task 2 with NT clear and left it not busy; task 1 stayed busy.
        assert_eq!(rd(&bus, TSS2 + 0x20, 4), l2[0]);
        assert_eq!(rd(&bus, TSS2 + 0x24, 4) & flags::NT, 0);
        assert_eq!(rd(&bus, TSS2 + 0x28, 4), 0x3333_3333);
        assert_eq!(type_byte(&bus, TSS2_SEL), 0x89);
        assert_eq!(type_byte(&bus, TSS_SEL), 0x8b);
        assert_eq!(st.rflags & flags::NT, 0);
    }

    #[test]
    fn exception_through_task_gate_pushes_error_code() {
        let (code, l) = asm_at(32, CODE, |a| {
            let mut fault = a.create_label();
            a.mov(eax, 0x1111_1111u32).unwrap();
            a.mov(ecx, 0x0ff8u32).unwrap();
            a.set_label(&mut fault).unwrap();
            a.mov(ds, cx).unwrap();
            vec![fault]
        });
        let (task3, _) = asm_at(32, TASK2, |a| {
            a.pop(eax).unwrap();
            a.mov(dword_ptr(DATA as u32), eax).unwrap();
            a.mov(dword_ptr(DATA as u32 + 4), esp).unwrap();
            a.pushfd().unwrap();
            a.pop(dword_ptr(DATA as u32 + 8)).unwrap();
            a.hlt().unwrap();
            vec![]
        });
        let (st, bus, exit) = run(TestMode::Prot32, &code, |st, bus| {
            prot_env(st, bus);
            set_gdt(bus, TSS3_SEL, seg(TSS3 as u32, 0x67, 0x89, 0));
            write_tss32(bus, TSS3, TASK2, 0x2, 0, 0x4800);
            place(bus, TASK2, &task3);
            // #GP through a task gate.
            wr(bus, IDT + 13 * 8, 8, gate(TSS3_SEL, 0, 0x85, 0));
        });
        assert_eq!(exit, Exit::Halted, "{}", st.dump());
        assert_eq!(rd(&bus, VEC, 4), 0xff, "no stub ran");
        assert_eq!(st.tr.selector, TSS3_SEL);
        assert_eq!(rd(&bus, DATA, 4), 0x0ff8, "error code on the new task's stack");
        assert_eq!(rd(&bus, DATA + 4, 4), 0x4800);
        assert_ne!(rd(&bus, DATA + 8, 4) & flags::NT, 0);
        assert_eq!(rd(&bus, TSS3, 2), TSS_SEL as u64, "back link");
        assert_eq!(rd(&bus, TSS0 + 0x20, 4), l[0], "faulting EIP saved");
        assert_eq!(rd(&bus, TSS0 + 0x28, 4), 0x1111_1111);
        assert_eq!(rd(&bus, TSS0 + 0x2c, 4), 0x0ff8);
        assert_eq!(type_byte(&bus, TSS_SEL), 0x8b);
        assert_eq!(type_byte(&bus, TSS3_SEL), 0x8b);
    }

    #[test]
    fn task_switch_faults_have_selector_error_codes() {
        // (descriptor at 0x40, selector used, expected vector, expected error code)
        let cases: [(u64, u16, u64, u64); 6] = [
            (seg(TSS2 as u32, 0x50, 0x89, 0), 0x40, 10, 0x40), // limit < 0x67: #TS(sel)
            (seg(TSS2 as u32, 0x2a, 0x81, 0), 0x40, 10, 0x40), // 16-bit TSS, limit < 0x2b
            (seg(TSS2 as u32, 0x67, 0x09, 0), 0x40, 11, 0x40), // not present: #NP(sel)
            (seg(TSS2 as u32, 0x67, 0x8b, 0), 0x40, 13, 0x40), // busy: #GP(sel)
            (seg(TSS2 as u32, 0x67, 0x89, 0), 0x43, 13, 0x40), // RPL 3 > DPL 0: #GP(sel)
            (gate(0x0b, 0, 0x85, 0), 0x40, 13, 0x08),          // task gate naming a code segment
        ];
        for (d, sel, vector, err) in cases {
            let code = asm(32, |a| {
                a.jmp_far(sel, 0).unwrap();
            });
            let (st, bus, exit) = run(TestMode::Prot32, &code, |st, bus| {
                prot_env(st, bus);
                set_gdt(bus, 0x40, d);
                write_tss32(bus, TSS2, TASK2, 0x2, 0, 0x5000);
            });
            assert_eq!(exit, Exit::Halted);
            assert_eq!(rd(&bus, VEC, 4), vector, "{d:x}");
            assert_eq!(rd(&bus, st.gpr[4], 4), err, "{d:x}");
            assert_eq!(rd(&bus, st.gpr[4] + 4, 4), CODE, "fault in the old task");
            assert_eq!(st.tr.selector, TSS_SEL);
            assert_eq!(type_byte(&bus, TSS_SEL), 0x8b);
        }
    }

    #[test]
    fn fault_after_commit_is_delivered_in_new_task() {
        // The new task's SS is a code segment: #TS(SS) is raised with TR already the new task's, and
        // goes through a task gate to a third task, which sees the new task as its back link.
        let code = asm(32, |a| {
            a.jmp_far(TSS2_SEL, 0).unwrap();
        });
        let (task3, _) = asm_at(32, 0x2400, |a| {
            a.pop(eax).unwrap();
            a.mov(dword_ptr(DATA as u32), eax).unwrap();
            a.hlt().unwrap();
            vec![]
        });
        let (st, bus, exit) = run(TestMode::Prot32, &code, |st, bus| {
            prot_env(st, bus);
            set_gdt(bus, TSS2_SEL, seg(TSS2 as u32, 0x67, 0x89, 0));
            write_tss32(bus, TSS2, TASK2, 0x2, 0x2222, 0x5000);
            wr(bus, TSS2 + 0x50, 2, K_CODE as u64);
            set_gdt(bus, TSS3_SEL, seg(TSS3 as u32, 0x67, 0x89, 0));
            write_tss32(bus, TSS3, 0x2400, 0x2, 0, 0x4800);
            place(bus, 0x2400, &task3);
            wr(bus, IDT + 10 * 8, 8, gate(TSS3_SEL, 0, 0x85, 0));
        });
        assert_eq!(exit, Exit::Halted, "{}", st.dump());
        assert_eq!(st.tr.selector, TSS3_SEL);
        assert_eq!(rd(&bus, DATA, 4), K_CODE as u64, "#TS(new SS)");
        assert_eq!(rd(&bus, TSS3, 2), TSS2_SEL as u64, "back link to the new task");
        // The new task was saved as it stood at the fault: its first instruction, its registers and
        // the selectors loaded from its TSS.
        assert_eq!(rd(&bus, TSS2 + 0x20, 4), TASK2);
        assert_eq!(rd(&bus, TSS2 + 0x28, 4), 0x2222);
        assert_eq!(rd(&bus, TSS2 + 0x50, 2), K_CODE as u64);
        assert_eq!(type_byte(&bus, TSS_SEL), 0x89);
        assert_eq!(type_byte(&bus, TSS2_SEL), 0x8b);
    }

    #[test]
    fn sixteen_bit_tss_round_trip() {
        // CALL a 16-bit TSS, which returns with IRET.
        let code = asm(32, |a| {
            a.mov(eax, 0x1234_5678u32).unwrap();
            a.call_far(TSS2_SEL, 0).unwrap();
            a.mov(dword_ptr(DATA as u32), eax).unwrap();
        });
        let (task2, _) = asm_at(16, TASK2, |a| {
            a.mov(word_ptr(0x9004u32), ax).unwrap();
            a.mov(ax, 0x7777).unwrap();
            a.iret().unwrap();
            vec![]
        });
        let (st, bus, exit) = run(TestMode::Prot32, &code, |st, bus| {
            prot_env(st, bus);
            set_gdt(bus, 0x48, seg(0, 0xffff, 0x9b, 0));
            set_gdt(bus, TSS2_SEL, seg(TSS2 as u32, 0x2b, 0x81, 0));
            for off in (0..0x2c).step_by(2) {
                wr(&mut *bus, TSS2 + off, 2, 0);
            }
            wr(bus, TSS2 + 0x0e, 2, TASK2);
            wr(bus, TSS2 + 0x10, 2, 0x2);
            wr(bus, TSS2 + 0x12, 2, 0x4242);
            wr(bus, TSS2 + 0x1a, 2, 0x5000);
            for (i, sel) in [K_DATA, 0x48, K_DATA, K_DATA].iter().enumerate() {
                wr(bus, TSS2 + 0x22 + 2 * i as u64, 2, *sel as u64);
            }
            place(bus, TASK2, &task2);
        });
        assert_eq!(exit, Exit::Halted, "{}", st.dump());
        assert_eq!(rd(&bus, VEC, 4), 0xff);
        assert_eq!(rd(&bus, 0x9004, 2), 0x4242);
        assert_eq!(rd(&bus, DATA, 4), 0x1234_5678);
        assert_eq!(rd(&bus, TSS2 + 0x12, 2), 0x7777, "16-bit save");
        assert_eq!(rd(&bus, TSS2, 2), TSS_SEL as u64);
        assert_eq!(type_byte(&bus, TSS2_SEL), 0x81);
    }

    /// v86 segments: CS 0, DS 0x900, ES 0x300, FS 0x400, GS 0x500, SS 0x600 with SP 0xff0.
    fn enter_v86(st: &mut crate::state::CpuState) {
        use crate::state::{Segment, attr};
        for (s, sel) in [
            (Seg::Cs, 0u16),
            (Seg::Ds, 0x900),
            (Seg::Es, 0x300),
            (Seg::Fs, 0x400),
            (Seg::Gs, 0x500),
            (Seg::Ss, 0x600),
        ] {
            *st.sreg_mut(s) = Segment {
                selector: sel,
                attr: attr::P | attr::S | attr::RW | attr::ACCESSED | (3 << attr::DPL_SHIFT),
                limit: 0xffff,
                base: (sel as u64) << 4,
            };
        }
        st.rflags = flags::VM | flags::IOPL | flags::FIXED1;
        st.cpl = 3;
        st.gpr[4] = 0xff0;
    }

    #[test]
    fn v86_interrupt_to_ring0_and_iret_back() {
        let (code, l) = asm_at(16, CODE, |a| {
            let mut after = a.create_label();
            let mut end = a.create_label();
            a.mov(ax, 0x1234).unwrap();
            a.int(0x21).unwrap();
            a.set_label(&mut after).unwrap();
            a.mov(word_ptr(0x10u32), ax).unwrap();
            a.set_label(&mut end).unwrap();
            a.hlt().unwrap();
            vec![after, end]
        });
        let (handler, _) = asm_at(32, TASK2, |a| {
            a.mov(dword_ptr(DATA as u32).ss(), esp).unwrap();
            a.mov(eax, ds).unwrap();
            a.mov(dword_ptr(DATA as u32 + 4).ss(), eax).unwrap();
            for i in 0..9u32 {
                a.mov(eax, dword_ptr(esp + 4 * i)).unwrap();
                a.mov(dword_ptr(DATA as u32 + 0x10 + 4 * i).ss(), eax).unwrap();
            }
            a.mov(eax, 0x5678).unwrap();
            a.iretd().unwrap();
            vec![]
        });
        let (st, bus, exit) = run(TestMode::Prot32, &code, |st, bus| {
            prot_env(st, bus);
            wr(bus, IDT + 0x21 * 8, 8, gate(K_CODE, TASK2 as u32, 0xee, 0));
            place(bus, TASK2, &handler);
            enter_v86(st);
        });
        assert_eq!(exit, Exit::Halted, "{}", st.dump());
        assert_eq!(rd(&bus, DATA, 4), ESP0 - 36, "nine dwords on the ring-0 stack");
        assert_eq!(rd(&bus, DATA + 4, 4), 0, "DS null in the handler");
        let frame: Vec<u64> = (0..9).map(|i| rd(&bus, DATA + 0x10 + 4 * i, 4)).collect();
        let fl = flags::VM | flags::IOPL | flags::FIXED1;
        assert_eq!(frame, vec![l[0], 0, fl, 0xff0, 0x600, 0x300, 0x900, 0x400, 0x500]);
        // Back in v86 mode with DS restored; then HLT there is #GP(0).
        assert_eq!(rd(&bus, 0x9010, 2), 0x5678);
        assert_eq!(rd(&bus, VEC, 4), 13);
        assert_eq!(rd(&bus, st.gpr[4], 4), 0);
        assert_eq!(rd(&bus, st.gpr[4] + 4, 4), l[1]);
        assert_eq!(rd(&bus, st.gpr[4] + 12, 4) & flags::VM, flags::VM);
    }

    #[test]
    fn task_switch_into_v86_task() {
        // A 32-bit TSS whose EFLAGS has VM: segments load as v86 segments, CPL 3.
        let code = asm(32, |a| {
            a.jmp_far(TSS2_SEL, 0).unwrap();
        });
        let (v86, l) = asm_at(16, 0x9100, |a| {
            let mut end = a.create_label();
            a.mov(word_ptr(0x10u32), ax).unwrap();
            a.set_label(&mut end).unwrap();
            a.hlt().unwrap();
            vec![end]
        });
        let (st, bus, exit) = run(TestMode::Prot32, &code, |st, bus| {
            prot_env(st, bus);
            set_gdt(bus, TSS2_SEL, seg(TSS2 as u32, 0x67, 0x89, 0));
            write_tss32(bus, TSS2, 0x100, flags::VM | flags::FIXED1, 0x4321, 0xff0);
            wr(bus, TSS2 + 4, 4, ESP0);
            wr(bus, TSS2 + 8, 2, K_DATA as u64);
            for (i, sel) in [0x300u64, 0x900, 0x600, 0x900, 0, 0].iter().enumerate() {
                wr(bus, TSS2 + 0x48 + 4 * i as u64, 2, *sel);
            }
            place(bus, 0x9100, &v86);
        });
        assert_eq!(exit, Exit::Halted, "{}", st.dump());
        assert_eq!(rd(&bus, 0x9010, 2), 0x4321);
        assert_eq!(rd(&bus, VEC, 4), 13, "HLT in v86 mode");
        assert_eq!(rd(&bus, st.gpr[4] + 4, 4), l[0] - 0x9000);
        assert_eq!(rd(&bus, st.gpr[4] + 8, 4), 0x900, "v86 CS");
    }

    #[test]
    fn debug_trap_bit_raises_db_in_new_task() {
        let code = asm(32, |a| {
            a.jmp_far(TSS2_SEL, 0).unwrap();
        });
        let (st, bus, exit) = run(TestMode::Prot32, &code, |st, bus| {
            prot_env(st, bus);
            set_gdt(bus, TSS2_SEL, seg(TSS2 as u32, 0x67, 0x89, 0));
            write_tss32(bus, TSS2, TASK2, 0x2, 0, 0x5000);
            wr(bus, TSS2 + 0x64, 2, 1);
            st.dr[7] |= 0x155;
        });
        assert_eq!(exit, Exit::Halted);
        assert_eq!(rd(&bus, VEC, 4), 1);
        assert_eq!(rd(&bus, st.gpr[4], 4), TASK2, "#DB before the new task's first instruction");
        assert_eq!(st.tr.selector, TSS2_SEL);
        assert_ne!(st.dr[6] & (1 << 15), 0, "DR6.BT");
        assert_eq!(st.dr[7] & 0x155, 0, "local enables cleared");
    }

    #[test]
    fn iret_with_nt_in_long_mode_is_gp0() {
        let (code, l) = asm_at(64, CODE, |a| {
            let mut iret = a.create_label();
            a.pushfq().unwrap();
            a.or(qword_ptr(rsp), flags::NT as i32).unwrap();
            a.popfq().unwrap();
            a.set_label(&mut iret).unwrap();
            a.iretq().unwrap();
            vec![iret]
        });
        let (st, bus, exit) = run(TestMode::Long64, &code, long_env);
        assert_eq!(exit, Exit::Halted);
        assert_eq!(rd(&bus, VEC, 4), 13);
        assert_eq!(rd(&bus, st.gpr[4], 8), 0);
        assert_eq!(rd(&bus, st.gpr[4] + 8, 8), l[0]);
    }
}
