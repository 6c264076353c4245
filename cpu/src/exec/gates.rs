//! Far JMP/CALL through system descriptors: call gates (with privilege change and parameter copy),
//! task gates and TSS descriptors (hardware task switch).
//!
//! Follows the CALL and JMP pseudo-code of the Intel SDM vol. 2 (CALL-GATE, MORE-PRIVILEGE,
//! SAME-PRIVILEGE, TASK-GATE, TASK-STATE-SEGMENT) and vol. 3 5.8 (call gates, IA-32e call gates).
//! Every check happens before any architectural state changes, so a fault leaves the caller's state
//! as it was (memory written for a push that later faults is not undone, as on hardware).

use super::Insn;
use crate::fault::Fault;
use crate::interrupt::{check_new_ss, tss_stack};
use crate::mem::{Ctx, is_canonical};
use crate::paging::AccessKind;
use crate::regs::size_mask;
use crate::seg::{Desc, sel_err};
use crate::state::{Seg, Segment, attr, efer};
use crate::task::{SwitchReason, switch_task};

/// Most parameters a call gate can copy (5-bit count).
const MAX_PARAMS: usize = 31;

/// A far JMP (`call` = false) or CALL to the system descriptor `d` named by `sel`. Only reached in
/// protected mode and IA-32e mode (not real or v86 mode), with `sel` not null and `d` a system
/// descriptor. `osz` is the instruction's operand size; the gate, not the operand, decides the size
/// of what a call through a gate pushes.
pub fn far_through_system(
    ctx: &mut Ctx<'_>,
    insn: &Insn,
    sel: u16,
    d: Desc,
    call: bool,
    osz: u32,
) -> Result<(), Fault> {
    let _ = (insn, osz);
    let long = ctx.st.efer & efer::LMA != 0;
    let reason = if call { SwitchReason::Call } else { SwitchReason::Jmp };
    if long {
        // IA-32e mode: only 64-bit call gates (type 12); no task switches, no 16-bit gates.
        return if d.typ() == 12 { call_gate64(ctx, sel, d, call) } else { Err(Fault::gp(sel_err(sel))) };
    }
    match d.typ() {
        4 | 12 => call_gate_legacy(ctx, sel, d, call),
        5 => {
            check_gate_privilege(ctx, sel, d)?;
            let tss = d.gate_selector();
            // The TSS named by a task gate must be an available TSS in the GDT.
            if tss & 4 != 0 {
                return Err(Fault::gp(sel_err(tss)));
            }
            let td = ctx.read_desc(tss, Fault::gp(sel_err(tss)))?;
            if td.s() || !matches!(td.typ(), 1 | 9) {
                return Err(Fault::gp(sel_err(tss)));
            }
            if !td.present() {
                return Err(Fault::np(sel_err(tss)));
            }
            switch_task(ctx, tss, reason, None)
        }
        1 | 9 => {
            // An available TSS named directly (a busy one falls through to #GP below).
            check_gate_privilege(ctx, sel, d)?;
            switch_task(ctx, sel, reason, None)
        }
        _ => Err(Fault::gp(sel_err(sel))),
    }
}

/// Gate (or TSS) DPL against CPL and the selector's RPL (#GP(sel)), then present (#NP(sel)).
fn check_gate_privilege(ctx: &Ctx<'_>, sel: u16, d: Desc) -> Result<(), Fault> {
    let rpl = (sel & 3) as u8;
    if d.dpl() < ctx.st.cpl || rpl > d.dpl() {
        return Err(Fault::gp(sel_err(sel)));
    }
    if !d.present() {
        return Err(Fault::np(sel_err(sel)));
    }
    Ok(())
}

/// Reads and checks the code segment a call gate names: null (#GP(0)), beyond the table or not a
/// code segment or DPL > CPL or, for JMP, a non-conforming segment with DPL != CPL (#GP(cs)),
/// in IA-32e mode not a 64-bit segment (#GP(cs)), not present (#NP(cs)).
fn gate_target(ctx: &mut Ctx<'_>, cs: u16, call: bool, long: bool) -> Result<Desc, Fault> {
    if cs & !3 == 0 {
        return Err(Fault::gp0());
    }
    let err = Fault::gp(sel_err(cs));
    let cd = ctx.read_desc(cs, err.clone())?;
    let cpl = ctx.st.cpl;
    if !cd.is_code() || cd.dpl() > cpl {
        return Err(err);
    }
    if !call && !cd.conforming() && cd.dpl() != cpl {
        return Err(err);
    }
    if long && (!cd.long() || cd.big()) {
        return Err(err);
    }
    if !cd.present() {
        return Err(Fault::np(sel_err(cs)));
    }
    Ok(cd)
}

/// Loads CS (accessed bit, RPL = `cpl`), CPL and the next RIP; all checks were done before.
fn enter_cs(ctx: &mut Ctx<'_>, sel: u16, d: Desc, rip: u64, cpl: u8) -> Result<(), Fault> {
    ctx.set_accessed(sel, d)?;
    *ctx.st.sreg_mut(Seg::Cs) = Desc(d.0 | (1 << 40)).to_segment((sel & !3) | cpl as u16);
    ctx.st.cpl = cpl;
    ctx.privilege_changed();
    ctx.next_rip = rip;
    ctx.break_block = true;
    Ok(())
}

/// Whether `size` bytes at offset `off` lie within the (expand-up or expand-down) segment `s`.
fn fits(s: &Segment, off: u64, size: u32) -> bool {
    let last = off + size as u64 - 1;
    if s.is_expand_down() {
        let upper = if s.big() { 0xffff_ffff } else { 0xffff };
        off > s.limit as u64 && last <= upper
    } else {
        last <= s.limit as u64
    }
}

/// A 16- or 32-bit call gate (legacy protected mode).
fn call_gate_legacy(ctx: &mut Ctx<'_>, sel: u16, gate: Desc, call: bool) -> Result<(), Fault> {
    check_gate_privilege(ctx, sel, gate)?;
    let cs = gate.gate_selector();
    let cd = gate_target(ctx, cs, call, false)?;
    let gate32 = gate.typ() == 12;
    let psize: u32 = if gate32 { 4 } else { 2 };
    let eip = gate.gate_offset() & size_mask(psize);
    let cpl = ctx.st.cpl;
    if !call {
        // JMP through a call gate never changes privilege.
        if eip > cd.limit() as u64 {
            return Err(Fault::gp0());
        }
        return enter_cs(ctx, cs, cd, eip, cpl);
    }
    let old_cs = ctx.st.sreg(Seg::Cs).selector as u64;
    let ret = ctx.next_rip;
    if !cd.conforming() && cd.dpl() < cpl {
        return call_inner_legacy(ctx, gate, cs, cd, eip);
    }
    // SAME-PRIVILEGE: push CS:eIP (gate-sized) on the current stack.
    let ss = ctx.st.stack_size();
    let sp = ctx.st.reg(4, ss);
    let ssr = *ctx.st.sreg(Seg::Ss);
    for k in 1..=2u64 {
        if !fits(&ssr, sp.wrapping_sub(k * psize as u64) & size_mask(ss), psize) {
            return Err(Fault::ss(0));
        }
    }
    if eip > cd.limit() as u64 {
        return Err(Fault::gp0());
    }
    let r = (|| {
        super::ops::push(ctx, psize, old_cs)?;
        super::ops::push(ctx, psize, ret)
    })();
    if let Err(e) = r {
        ctx.st.set_reg(4, ss, sp);
        return Err(e);
    }
    if let Err(e) = enter_cs(ctx, cs, cd, eip, cpl) {
        ctx.st.set_reg(4, ss, sp);
        return Err(e);
    }
    Ok(())
}

/// MORE-PRIVILEGE for a 16/32-bit call gate: stack from the TSS, old SS:eSP, the parameters, and
/// CS:eIP pushed on it.
fn call_inner_legacy(ctx: &mut Ctx<'_>, gate: Desc, cs: u16, cd: Desc, eip: u64) -> Result<(), Fault> {
    let new_cpl = cd.dpl();
    let gate32 = gate.typ() == 12;
    let psize: u32 = if gate32 { 4 } else { 2 };
    let (nss, nsp) = tss_stack(ctx, new_cpl)?;
    let ssd = check_new_ss(ctx, nss, new_cpl)?;
    let new_ss = Desc(ssd.0 | (1 << 40)).to_segment(nss);
    let count = gate.gate_params() as usize;
    let nmask = if ssd.big() { 0xffff_ffffu64 } else { 0xffff };
    let top = nsp & nmask;
    // The new stack must hold SS, eSP, the parameters, CS and eIP: #SS(new SS) otherwise.
    for k in 1..=(count as u64 + 4) {
        if !fits(&new_ss, top.wrapping_sub(k * psize as u64) & nmask, psize) {
            return Err(Fault::ss(sel_err(nss)));
        }
    }
    if eip > cd.limit() as u64 {
        return Err(Fault::gp0());
    }
    // Read the parameters from the caller's stack (at the caller's privilege).
    let oss = ctx.st.stack_size();
    let osp = ctx.st.reg(4, oss);
    let mut params = [0u32; MAX_PARAMS];
    for (i, p) in params.iter_mut().enumerate().take(count) {
        let off = osp.wrapping_add(i as u64 * psize as u64) & size_mask(oss);
        *p = ctx.read_mem(Seg::Ss, off, psize)? as u32;
    }
    let old_ss = ctx.st.sreg(Seg::Ss).selector as u64;
    let old_sp = ctx.st.gpr[4] & size_mask(psize);
    let old_cs = ctx.st.sreg(Seg::Cs).selector as u64;
    let ret = ctx.next_rip & size_mask(psize);
    // Push on the new stack as the new (supervisor) privilege level.
    let saved_cpl = ctx.st.cpl;
    ctx.st.cpl = new_cpl;
    ctx.privilege_changed();
    let r = (|| {
        let mut sp = top;
        let mut put = |ctx: &mut Ctx<'_>, v: u64| -> Result<(), Fault> {
            sp = sp.wrapping_sub(psize as u64) & nmask;
            ctx.write_lin(new_ss.base.wrapping_add(sp) & 0xffff_ffff, psize, v)
        };
        put(ctx, old_ss)?;
        put(ctx, old_sp)?;
        for i in (0..count).rev() {
            put(ctx, params[i] as u64)?;
        }
        put(ctx, old_cs)?;
        put(ctx, ret)?;
        ctx.set_accessed(nss, ssd)?;
        Ok(sp)
    })();
    let sp = match r {
        Ok(sp) => sp,
        Err(e) => {
            ctx.st.cpl = saved_cpl;
            ctx.privilege_changed();
            return Err(e);
        }
    };
    if let Err(e) = enter_cs(ctx, cs, cd, eip, new_cpl) {
        ctx.st.cpl = saved_cpl;
        ctx.privilege_changed();
        return Err(e);
    }
    *ctx.st.sreg_mut(Seg::Ss) = new_ss;
    // ESP comes from the TSS; a 16-bit stack then only moves SP.
    ctx.st.gpr[4] = if ssd.big() { sp } else { (nsp & 0xffff_0000) | sp };
    Ok(())
}

/// A 16-byte IA-32e call gate (type 12): 64-bit target code segment, 8-byte pushes, no parameter
/// copy; a call inward takes RSP from TSS.RSPn and loads a null SS with RPL = the new CPL.
fn call_gate64(ctx: &mut Ctx<'_>, sel: u16, gate: Desc, call: bool) -> Result<(), Fault> {
    check_gate_privilege(ctx, sel, gate)?;
    let hi = ctx.read_desc_high(sel, Fault::gp(sel_err(sel)))?;
    // The upper half's type field must be 0 (it is not a valid descriptor).
    if (hi >> 40) & 0x1f != 0 {
        return Err(Fault::gp(sel_err(sel)));
    }
    let rip = gate.gate_offset() | ((hi & 0xffff_ffff) << 32);
    let cs = gate.gate_selector();
    let cd = gate_target(ctx, cs, call, true)?;
    let cpl = ctx.st.cpl;
    if !call {
        if !is_canonical(rip) {
            return Err(Fault::gp0());
        }
        return enter_cs(ctx, cs, cd, rip, cpl);
    }
    let inner = !cd.conforming() && cd.dpl() < cpl;
    let new_cpl = if inner { cd.dpl() } else { cpl };
    let rsp = if inner {
        let tr = ctx.st.tr;
        let off = 4 + new_cpl as u64 * 8;
        if off + 7 > tr.limit as u64 {
            return Err(Fault::ts(sel_err(tr.selector)));
        }
        ctx.read_lin_as(tr.base.wrapping_add(off), 8, AccessKind::Read, true)?
    } else {
        // Entering 64-bit mode from compatibility mode uses the full RSP with a zero base.
        ctx.st.gpr[4]
    };
    let nslots: u64 = if inner { 4 } else { 2 };
    if !is_canonical(rsp) || !is_canonical(rsp.wrapping_sub(nslots * 8)) {
        return Err(Fault::ss(0));
    }
    if !is_canonical(rip) {
        return Err(Fault::gp0());
    }
    let old_ss = ctx.st.sreg(Seg::Ss).selector as u64;
    let old_rsp = ctx.st.gpr[4];
    let old_cs = ctx.st.sreg(Seg::Cs).selector as u64;
    let ret = ctx.next_rip;
    let saved_cpl = cpl;
    ctx.st.cpl = new_cpl;
    ctx.privilege_changed();
    let r = (|| {
        let mut sp = rsp;
        let frame = [old_ss, old_rsp, old_cs, ret];
        for &v in &frame[(4 - nslots as usize)..] {
            sp = sp.wrapping_sub(8);
            ctx.write_lin(sp, 8, v)?;
        }
        Ok(sp)
    })();
    let sp = match r {
        Ok(sp) => sp,
        Err(e) => {
            ctx.st.cpl = saved_cpl;
            ctx.privilege_changed();
            return Err(e);
        }
    };
    if let Err(e) = enter_cs(ctx, cs, cd, rip, new_cpl) {
        ctx.st.cpl = saved_cpl;
        ctx.privilege_changed();
        return Err(e);
    }
    if inner {
        *ctx.st.sreg_mut(Seg::Ss) = Segment {
            selector: new_cpl as u16,
            attr: attr::S | attr::RW | attr::DB | attr::P | ((new_cpl as u16) << attr::DPL_SHIFT),
            limit: 0,
            base: 0,
        };
    }
    ctx.st.gpr[4] = sp;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::interp::Exit;
    use crate::state::{Seg, flags};
    use crate::task::harness::*;
    use crate::testutil::*;
    use iced_x86::code_asm::*;

    const HANDLER: u64 = 0x2000;
    const GATE3: u16 = 0x30; // 32-bit call gate, DPL 3, 2 parameters -> K_CODE:HANDLER
    const GATE0: u16 = 0x38; // 32-bit call gate, DPL 0
    const GATE_NP: u16 = 0x40; // DPL 3, not present
    const GATE16: u16 = 0x48; // 16-bit call gate, DPL 3, 1 parameter -> K_CODE16:HANDLER
    const K_CODE16: u16 = 0x50;

    fn gates(st: &mut crate::state::CpuState, bus: &mut TestBus) {
        prot_env(st, bus);
        set_gdt(bus, GATE3, gate(K_CODE, HANDLER as u32, 0xec, 2));
        set_gdt(bus, GATE0, gate(K_CODE, HANDLER as u32, 0x8c, 0));
        set_gdt(bus, GATE_NP, gate(K_CODE, HANDLER as u32, 0x6c, 0));
        set_gdt(bus, GATE16, gate(K_CODE16, HANDLER as u32, 0xe4, 1));
        set_gdt(bus, K_CODE16, seg(0, 0xffff, 0x9b, 0));
    }

    #[test]
    fn call_gate_ring3_to_ring0_with_params_and_retf() {
        let (user, l) = asm_at(32, CODE, |a| {
            let mut ret = a.create_label();
            a.push(0x1111).unwrap();
            a.push(0x2222).unwrap();
            a.mov(ebx, 0xb0b0).unwrap();
            a.call_far(GATE3 | 3, 0x1234_5678).unwrap();
            a.set_label(&mut ret).unwrap();
            a.mov(dword_ptr(DATA as u32 + 0x40), esp).unwrap();
            a.mov(eax, cs).unwrap();
            a.mov(dword_ptr(DATA as u32 + 0x44), eax).unwrap();
            a.mov(eax, ss).unwrap();
            a.mov(dword_ptr(DATA as u32 + 0x48), eax).unwrap();
            a.int(DONE as u32).unwrap();
            vec![ret]
        });
        let (handler, _) = asm_at(32, HANDLER, |a| {
            a.mov(dword_ptr(DATA as u32), esp).unwrap();
            a.mov(eax, ss).unwrap();
            a.mov(dword_ptr(DATA as u32 + 4), eax).unwrap();
            a.mov(eax, cs).unwrap();
            a.mov(dword_ptr(DATA as u32 + 8), eax).unwrap();
            for i in 0..6u32 {
                a.mov(eax, dword_ptr(esp + 4 * i)).unwrap();
                a.mov(dword_ptr(DATA as u32 + 0x10 + 4 * i), eax).unwrap();
            }
            a.retf_1(8).unwrap();
            vec![]
        });
        let (st, bus, exit) = run(TestMode::Prot32, &user, |st, bus| {
            gates(st, bus);
            place(bus, HANDLER, &handler);
            to_ring3(st, bus, U_CODE);
        });
        assert_eq!(exit, Exit::Halted, "{}", st.dump());
        assert_eq!(rd(&bus, VEC, 4), DONE as u64);
        // Inside: the ring-0 stack from the TSS holding EIP, CS, 2 parameters, ESP, SS.
        assert_eq!(rd(&bus, DATA, 4), ESP0 - 24);
        assert_eq!(rd(&bus, DATA + 4, 4), K_DATA as u64);
        assert_eq!(rd(&bus, DATA + 8, 4), K_CODE as u64);
        let frame: Vec<u64> = (0..6).map(|i| rd(&bus, DATA + 0x10 + 4 * i, 4)).collect();
        assert_eq!(frame, vec![l[0], U_CODE as u64, 0x2222, 0x1111, ESP3 - 8, U_DATA as u64]);
        // RETF 8 back to ring 3 pops the parameters from the outer stack too.
        assert_eq!(rd(&bus, DATA + 0x40, 4), ESP3);
        assert_eq!(rd(&bus, DATA + 0x44, 4), U_CODE as u64);
        assert_eq!(rd(&bus, DATA + 0x48, 4), U_DATA as u64);
    }

    #[test]
    fn sixteen_bit_call_gate_copies_words() {
        let (user, l) = asm_at(32, CODE, |a| {
            let mut ret = a.create_label();
            a.push(0x4444).unwrap();
            a.call_far(GATE16 | 3, 0).unwrap();
            a.set_label(&mut ret).unwrap();
            a.int(DONE as u32).unwrap();
            vec![ret]
        });
        let (handler, _) = asm_at(16, HANDLER, |a| {
            a.mov(dword_ptr(0x9000u32), esp).unwrap();
            a.mov(ebx, dword_ptr(esp)).unwrap();
            a.mov(dword_ptr(0x9004u32), ebx).unwrap();
            a.mov(ebx, dword_ptr(esp + 4)).unwrap();
            a.mov(dword_ptr(0x9008u32), ebx).unwrap();
            a.mov(ebx, dword_ptr(esp + 8)).unwrap();
            a.mov(dword_ptr(0x900cu32), ebx).unwrap();
            a.mov(ax, cs).unwrap();
            a.mov(word_ptr(0x9010u32), ax).unwrap();
            a.int(DONE as u32).unwrap();
            vec![]
        });
        let (st, bus, exit) = run(TestMode::Prot32, &user, |st, bus| {
            gates(st, bus);
            place(bus, HANDLER, &handler);
            to_ring3(st, bus, U_CODE);
        });
        assert_eq!(exit, Exit::Halted, "{}", st.dump());
        assert_eq!(rd(&bus, VEC, 4), DONE as u64);
        assert_eq!(rd(&bus, 0x9010, 2), K_CODE16 as u64);
        // IP, CS, one parameter word, SP, SS: 10 bytes.
        assert_eq!(rd(&bus, 0x9000, 4), ESP0 - 10);
        assert_eq!(rd(&bus, 0x9004, 4), (l[0] & 0xffff) | ((U_CODE as u64) << 16));
        assert_eq!(rd(&bus, 0x9008, 4), 0x4444 | ((ESP3 - 4) << 16));
        assert_eq!(rd(&bus, 0x900c, 2), U_DATA as u64);
    }

    #[test]
    fn call_gate_same_privilege_and_jmp_through_gate() {
        // Ring 0 CALL through the DPL-0 gate: no stack switch; then JMP through it.
        let (code, l) = asm_at(32, CODE, |a| {
            let mut ret = a.create_label();
            a.call_far(GATE0, 0).unwrap();
            a.set_label(&mut ret).unwrap();
            a.nop().unwrap();
            vec![ret]
        });
        let (handler, _) = asm_at(32, HANDLER, |a| {
            a.mov(dword_ptr(DATA as u32), esp).unwrap();
            a.hlt().unwrap();
            vec![]
        });
        let (st, bus, exit) = run(TestMode::Prot32, &code, |st, bus| {
            gates(st, bus);
            place(bus, HANDLER, &handler);
        });
        assert_eq!(exit, Exit::Halted, "{}", st.dump());
        assert_eq!(rd(&bus, DATA, 4), STACK - 8);
        assert_eq!(rd(&bus, STACK - 8, 4), l[0]);
        assert_eq!(rd(&bus, STACK - 4, 4), K_CODE as u64);
        let code = asm(32, |a| {
            a.jmp_far(GATE0, 0).unwrap();
        });
        let (st, bus, exit) = run(TestMode::Prot32, &code, |st, bus| {
            gates(st, bus);
            place(bus, HANDLER, &handler);
        });
        assert_eq!(exit, Exit::Halted);
        assert_eq!(rd(&bus, DATA, 4), STACK);
        assert_eq!(st.sreg(Seg::Cs).selector, K_CODE);
    }

    /// Runs `target` as a far CALL from ring 3 and returns (vector, error code).
    fn ring3_call_fault(sel: u16, jmp: bool) -> (u64, u64) {
        let code = asm(32, |a| {
            if jmp {
                a.jmp_far(sel, 0).unwrap();
            } else {
                a.call_far(sel, 0).unwrap();
            }
        });
        let (st, bus, exit) = run(TestMode::Prot32, &code, |st, bus| {
            gates(st, bus);
            to_ring3(st, bus, U_CODE);
        });
        assert_eq!(exit, Exit::Halted);
        // The fault frame is on the ring-0 stack: error code, EIP, CS, EFLAGS, ESP, SS.
        assert_eq!(st.gpr[4], ESP0 - 24);
        assert_eq!(rd(&bus, ESP0 - 20, 4), CODE, "faulting EIP");
        assert_eq!(rd(&bus, ESP0 - 8, 4), ESP3, "ESP unchanged");
        (rd(&bus, VEC, 4), rd(&bus, ESP0 - 24, 4))
    }

    #[test]
    fn call_gate_fault_error_codes() {
        // Gate DPL 0 < CPL 3: #GP(gate selector).
        assert_eq!(ring3_call_fault(GATE0 | 3, false), (13, GATE0 as u64));
        // Not present: #NP(gate selector).
        assert_eq!(ring3_call_fault(GATE_NP | 3, false), (11, GATE_NP as u64));
        // JMP through a gate to a more privileged non-conforming segment: #GP(code selector).
        assert_eq!(ring3_call_fault(GATE3 | 3, true), (13, K_CODE as u64));
        // Selector beyond the GDT: #GP(selector).
        assert_eq!(ring3_call_fault(0x1f0 | 3, false), (13, 0x1f0));
    }

    #[test]
    fn call_gate_bad_inner_stack_is_ts() {
        // TSS.SS0 names a ring-3 data segment: #TS(SS selector) before anything is pushed. The #TS
        // handler is a task (through a task gate), since the ring-0 stack is unusable.
        let code = asm(32, |a| {
            a.call_far(GATE3 | 3, 0).unwrap();
        });
        let (handler, _) = asm_at(32, HANDLER, |a| {
            a.pop(eax).unwrap();
            a.mov(dword_ptr(DATA as u32), eax).unwrap();
            a.hlt().unwrap();
            vec![]
        });
        let (st, bus, exit) = run(TestMode::Prot32, &code, |st, bus| {
            gates(st, bus);
            to_ring3(st, bus, U_CODE);
            wr(bus, TSS0 + 8, 2, U_DATA as u64);
            set_gdt(bus, 0x58, seg(0x3200, 0x67, 0x89, 0));
            write_tss32(bus, 0x3200, HANDLER, 0x2, 0, 0x4800);
            place(bus, HANDLER, &handler);
            wr(bus, IDT + 10 * 8, 8, gate(0x58, 0, 0x85, 0));
        });
        assert_eq!(exit, Exit::Halted, "{}", st.dump());
        assert_eq!(st.tr.selector, 0x58);
        assert_eq!(rd(&bus, DATA, 4), U_DATA as u64 & !3);
        // The caller was saved unchanged: ring 3, ESP not moved.
        assert_eq!(rd(&bus, TSS0 + 0x38, 4), ESP3);
        assert_eq!(rd(&bus, TSS0 + 0x4c, 2), U_CODE as u64);
        assert_eq!(rd(&bus, TSS0 + 0x20, 4), CODE);
        assert_eq!(st.rflags & flags::NT, flags::NT);
    }

    /// The far pointer `call far [PTR]` uses in 64-bit tests.
    const PTR: u64 = DATA + 0x100;
    const GATE64: u16 = 0x40;

    /// `call far [abs PTR]` (FF /3, m16:32).
    fn call_far_ptr(a: &mut CodeAssembler) {
        let mut b = vec![0xff, 0x1c, 0x25];
        b.extend_from_slice(&(PTR as u32).to_le_bytes());
        a.db(&b).unwrap();
    }

    fn long_gate(bus: &mut TestBus, sel: u16, target: u64, access: u8) {
        set_gdt(bus, sel, gate(K_CODE, target as u32, access, 0));
        wr(bus, GDT + sel as u64 + 8, 8, target >> 32);
    }

    #[test]
    fn call_gate_64_ring3_to_ring0_and_retfq() {
        let (user, l) = asm_at(64, CODE, |a| {
            let mut ret = a.create_label();
            call_far_ptr(a);
            a.set_label(&mut ret).unwrap();
            a.mov(qword_ptr(DATA + 0x40), rsp).unwrap();
            a.mov(eax, cs).unwrap();
            a.mov(qword_ptr(DATA + 0x48), rax).unwrap();
            a.mov(eax, ss).unwrap();
            a.mov(qword_ptr(DATA + 0x50), rax).unwrap();
            a.int(DONE as u32).unwrap();
            vec![ret]
        });
        let (handler, _) = asm_at(64, HANDLER, |a| {
            a.mov(qword_ptr(DATA), rsp).unwrap();
            a.mov(eax, ss).unwrap();
            a.mov(qword_ptr(DATA + 8), rax).unwrap();
            for i in 0..4u32 {
                a.mov(rax, qword_ptr(rsp + 8 * i)).unwrap();
                a.mov(qword_ptr(DATA + 0x10 + 8 * i as u64), rax).unwrap();
            }
            a.db(&[0x48, 0xcb]).unwrap(); // retfq
            vec![]
        });
        let (st, bus, exit) = run(TestMode::Long64, &user, |st, bus| {
            long_env(st, bus);
            long_gate(bus, GATE64, HANDLER, 0xec);
            wr(bus, PTR, 4, 0x1111_1111);
            wr(bus, PTR + 4, 2, (GATE64 | 3) as u64);
            place(bus, HANDLER, &handler);
            load(st, bus, Seg::Cs, U_CODE64);
            for s in [Seg::Ss, Seg::Ds, Seg::Es] {
                load(st, bus, s, U_DATA);
            }
            st.cpl = 3;
            st.gpr[4] = ESP3;
        });
        assert_eq!(exit, Exit::Halted, "{}", st.dump());
        assert_eq!(rd(&bus, VEC, 4), DONE as u64);
        assert_eq!(rd(&bus, DATA, 8), ESP0 - 32, "RSP from TSS.RSP0, 4 qwords");
        assert_eq!(rd(&bus, DATA + 8, 8), 0, "null SS");
        let frame: Vec<u64> = (0..4).map(|i| rd(&bus, DATA + 0x10 + 8 * i, 8)).collect();
        assert_eq!(frame, vec![l[0], U_CODE64 as u64, ESP3, U_DATA as u64]);
        assert_eq!(rd(&bus, DATA + 0x40, 8), ESP3);
        assert_eq!(rd(&bus, DATA + 0x48, 8), U_CODE64 as u64);
        assert_eq!(rd(&bus, DATA + 0x50, 8), U_DATA as u64);
    }

    #[test]
    fn long_mode_gate_faults() {
        // (descriptor setup, selector in the far pointer, expected error code)
        let cases: [(u8, u64, u16, u64); 4] = [
            (0x8c, 0x0c00, GATE64, GATE64 as u64), // non-zero type in the upper half
            (0x84, 0, GATE64, GATE64 as u64),      // 16-bit call gate
            (0x89, 0, GATE64, GATE64 as u64),      // a TSS: no task switches in IA-32e mode
            (0x85, 0, GATE64, GATE64 as u64),      // a task gate
        ];
        for (access, hi_type, sel, err) in cases {
            let code = asm(64, call_far_ptr);
            let (st, bus, exit) = run(TestMode::Long64, &code, |st, bus| {
                long_env(st, bus);
                long_gate(bus, GATE64, HANDLER, access);
                wr(bus, GDT + GATE64 as u64 + 12, 2, hi_type);
                wr(bus, PTR + 4, 2, sel as u64);
            });
            assert_eq!(exit, Exit::Halted);
            assert_eq!(rd(&bus, VEC, 4), 13, "{access:x}");
            assert_eq!(rd(&bus, st.gpr[4], 8), err, "{access:x}");
        }
    }
}
