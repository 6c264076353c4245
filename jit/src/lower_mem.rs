//! Memory and control forms lowered inline (a child of `lower`, so it uses the same builder
//! helpers), chosen by counting what translated code still sent to handlers (`profile.rs`,
//! `FERRITE_JIT_PROFILE=1`) on the Linux boot and the guest CPU benchmark:
//!
//! - DIV/IDIV r/m (`muldiv::div`/`idiv`): a zero divisor or a quotient that does not fit runs the
//!   handler, which raises #DE at exact state; so does a 64-bit dividend whose high half is not the
//!   (sign) extension of its low half (no 128-by-64 divide in generated code). The flags: Intel
//!   leaves them, AMD clears SF, ZF, PF and sets AF (`muldiv::div_flags`), chosen at run time from
//!   `CpuState::quirks`.
//! - CMPXCHG and XADD r/m, r (`bits::cmpxchg`/`xadd`), LOCK allowed (one vCPU: a locked access is
//!   an ordinary one), and the LOCK forms of the ALU memory forms `lower.rs` inlines.
//! - MOVBE r, m and m, r (`bits::movbe`): the inline load or store with a byte swap
//!   (`tests/differential_small.rs`).
//! - Memory-indirect JMP/CALL (`jmp [rip+disp]`, `call [reg+disp]`): the target is read inline and
//!   must pass the same check as a register target (canonical in 64-bit code, within CS's limit
//!   elsewhere), else the handler raises the #GP.
//! - 32-bit code (protected mode, compatibility mode, and 32-bit code in real mode): the memory
//!   forms, PUSH/POP r32, CALL rel32/r32/m32, JMP r32/m32 and RET, when the segment is a present,
//!   writable, expand-up data segment with a 4 GiB limit (any base; for the stack also B = 1, a
//!   32-bit stack pointer) and the access ends below 4 GiB in the segment. That is checked in
//!   generated code on every access (two loads from `CpuState::seg`), so a guest that reloads a
//!   segment register gets the handler's exact behaviour from its next access on; the linear
//!   address is `(base + offset) mod 2^32`, the interpreter's `Ctx::seg_lin` for such a segment.
//!
//! What is restated in IR here is covered form by form by `tests/differential_mem.rs` (random
//! programs, both vendors' quirks, 64-bit and 32-bit code, flat and non-flat segments, faults).

use super::{Ext, Form, Lower, MF, Mem, Op, lea_regs_ok, op0f};
use cpu::exec::{Insn, Opnd, RegOp};
use cpu::state::{Seg, attr, flags};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{Block, InstBuilder, Value, types};
use iced_x86::{Code, CodeSize, Mnemonic};

/// Whether `insn`'s memory operand may be inlined: 64-bit code, or 32-bit code (through the
/// segment check of [`Lower::lin_checked`]); general registers (or RIP) in the address; 1-8 bytes.
pub(crate) fn mem_ok(insn: &Insn) -> bool {
    matches!(insn.i.code_size(), CodeSize::Code64 | CodeSize::Code32)
        && lea_regs_ok(insn)
        && matches!(insn.i.memory_size().size(), 1 | 2 | 4 | 8)
}

/// Whether a LOCK prefix leaves `insn` inlinable: a memory destination of an instruction whose
/// lockable form `lower` inlines (iced refuses to decode LOCK elsewhere; with one vCPU a locked
/// read-modify-write is an ordinary one, as in the handlers).
pub(crate) fn lock_ok(insn: &Insn) -> bool {
    insn.op[0] == Opnd::Mem
        && matches!(
            insn.i.mnemonic(),
            Mnemonic::Add
                | Mnemonic::Or
                | Mnemonic::Adc
                | Mnemonic::Sbb
                | Mnemonic::And
                | Mnemonic::Sub
                | Mnemonic::Xor
                | Mnemonic::Inc
                | Mnemonic::Dec
                | Mnemonic::Cmpxchg
                | Mnemonic::Xadd
                | Mnemonic::Bts
                | Mnemonic::Btr
                | Mnemonic::Btc
        )
}

/// This file's forms (legacy encoding: checked by the caller; LOCK: see [`lock_ok`]).
pub(crate) fn inline_mem(insn: &Insn) -> Option<Form> {
    let i = &insn.i;
    let reg = |n: usize| matches!(insn.op[n], Opnd::Reg(_));
    let m0 = insn.op[0] == Opnd::Mem && mem_ok(insn);
    let code32 = i.code_size() == CodeSize::Code32;
    let ext = |e, mem| Some(Form { op: Op::Ext(e), mem });
    match i.mnemonic() {
        Mnemonic::Div | Mnemonic::Idiv if i.op_count() == 1 => {
            let e = Ext::Div(i.mnemonic() == Mnemonic::Idiv);
            // The register form has no access, but its guard may send it to the handler.
            if reg(0) {
                ext(e, Mem::Guard)
            } else if m0 {
                ext(e, Mem::Src)
            } else {
                None
            }
        }
        m @ (Mnemonic::Cmpxchg | Mnemonic::Xadd) if reg(1) => {
            let e = if m == Mnemonic::Cmpxchg { Ext::Cmpxchg } else { Ext::Xadd };
            if reg(0) {
                ext(e, Mem::None)
            } else if m0 {
                ext(e, Mem::Dst)
            } else {
                None
            }
        }
        // Memory-indirect JMP/CALL (both code sizes), and JMP/CALL r32 in 32-bit code.
        Mnemonic::Jmp | Mnemonic::Call
            if matches!(i.code(), Code::Jmp_rm64 | Code::Call_rm64 | Code::Jmp_rm32 | Code::Call_rm32)
                && (i.code_size() == CodeSize::Code64)
                    == matches!(i.code(), Code::Jmp_rm64 | Code::Call_rm64)
                && (m0 || (reg(0) && code32)) =>
        {
            let op = if i.mnemonic() == Mnemonic::Jmp { Op::JmpInd } else { Op::Call };
            if reg(0) {
                // JMP r32 checks its target (the handler's #GP); CALL r32 also pushes.
                Some(Form { op, mem: if op == Op::JmpInd { Mem::Guard } else { Mem::Stack } })
            } else {
                Some(Form { op, mem: Mem::Src })
            }
        }
        // BT/BTS/BTR/BTC m, imm (the register forms are `lower_int`'s).
        m @ (Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc)
            if m0 && matches!(insn.op[1], Opnd::Imm(_)) =>
        {
            let k = match m {
                Mnemonic::Bt => 0,
                Mnemonic::Bts => 1,
                Mnemonic::Btr => 2,
                _ => 3,
            };
            ext(Ext::Bt(k), if k == 0 { Mem::Src } else { Mem::Dst })
        }
        // CMOVcc r, m (the source is read whatever the condition) and SETcc m8.
        _ if op0f(insn, 0x40) && reg(0) && insn.op[1] == Opnd::Mem && mem_ok(insn) => {
            Some(Form { op: Op::Cmov(cpu::exec::ops::cc_of(insn)), mem: Mem::Src })
        }
        _ if op0f(insn, 0x90) && m0 => {
            Some(Form { op: Op::Setcc(cpu::exec::ops::cc_of(insn)), mem: Mem::Dst })
        }
        // MOVBE r, m and m, r (`bits::movbe`), where the CPU model has it (else the block holds
        // the #UD handler, which must run).
        Mnemonic::Movbe if insn.handler as usize == cpu::exec::handler_for(i.code()) as usize => {
            if reg(0) && insn.op[1] == Opnd::Mem && mem_ok(insn) {
                ext(Ext::Movbe, Mem::Src)
            } else if m0 && reg(1) {
                ext(Ext::Movbe, Mem::Dst)
            } else {
                None
            }
        }
        // CBW/CWDE/CDQE, CWD/CDQ/CQO.
        Mnemonic::Cbw => ext(Ext::Cwd(false, 2), Mem::None),
        Mnemonic::Cwde => ext(Ext::Cwd(false, 4), Mem::None),
        Mnemonic::Cdqe => ext(Ext::Cwd(false, 8), Mem::None),
        Mnemonic::Cwd => ext(Ext::Cwd(true, 2), Mem::None),
        Mnemonic::Cdq => ext(Ext::Cwd(true, 4), Mem::None),
        Mnemonic::Cqo => ext(Ext::Cwd(true, 8), Mem::None),
        // The 32-bit stack forms (the 64-bit ones are `lower`'s).
        Mnemonic::Call if code32 && i.code() == Code::Call_rel32_32 => {
            Some(Form { op: Op::Call, mem: Mem::Stack })
        }
        Mnemonic::Ret if code32 && i.code() == Code::Retnd => Some(Form { op: Op::Ret, mem: Mem::Stack }),
        Mnemonic::Push if code32 && i.code() == Code::Push_r32 && reg(0) => {
            Some(Form { op: Op::Push, mem: Mem::Stack })
        }
        // PUSH imm8/imm32 with a 32-bit operand (`stack::push_imm::<4>`).
        Mnemonic::Push
            if code32
                && matches!(i.code(), Code::Pushd_imm8 | Code::Pushd_imm32)
                && matches!(insn.op[0], Opnd::Imm(_)) =>
        {
            Some(Form { op: Op::Push, mem: Mem::Stack })
        }
        Mnemonic::Pop if code32 && i.code() == Code::Pop_r32 && reg(0) => {
            Some(Form { op: Op::Pop, mem: Mem::Stack })
        }
        _ => None,
    }
}

/// Bytes a stack form moves: 8 in 64-bit code, 4 in 32-bit code.
pub(crate) fn stack_bytes(insn: &Insn) -> u32 {
    if insn.i.code_size() == CodeSize::Code64 { 8 } else { 4 }
}

// `flat` and `target_ok` read a segment record as selector | attr << 16 | limit << 32, then base.
const _: () = {
    use cpu::state::Segment;
    use std::mem::offset_of;
    assert!(offset_of!(Segment, selector) == 0 && offset_of!(Segment, attr) == 2);
    assert!(offset_of!(Segment, limit) == 4 && offset_of!(Segment, base) == 8);
};

fn r32(index: u8) -> RegOp {
    RegOp { index, size: 4, shift: 0 }
}

impl Lower<'_, '_> {
    /// The linear address of a memory form's access, with the segment check of 32-bit code
    /// (branching to `slow` when the interpreter's `Ctx::seg_lin` might do anything but add the
    /// base: see the module's doc).
    pub(super) fn lin_checked(&mut self, insn: &Insn, form: Form, slow: Block) -> Value {
        if insn.i.code_size() == CodeSize::Code64 {
            return self.lin(insn, form);
        }
        let size = Self::access_size(insn, form);
        if form.mem == Mem::Stack {
            let sp = self.read(r32(4));
            let off = if form.writes() {
                let x = self.b.ins().iadd_imm_s(sp, -(size as i64));
                self.trunc(x, 4)
            } else {
                sp
            };
            self.flat(Seg::Ss, off, size, true, slow)
        } else {
            let off = self.ea(insn);
            self.flat(cpu::exec::ops::mem_seg(insn), off, size, false, slow)
        }
    }

    /// `(base + off) mod 2^32` when segment `s` is a present, writable, expand-up data segment
    /// with a 4 GiB limit (and B = 1 for the `stack`) and `off + size` stays within 4 GiB; else a
    /// branch to `slow`. Exactly where `Ctx::seg_lin` returns that address on both vendors.
    fn flat(&mut self, s: Seg, off: Value, size: u32, stack: bool, slow: Block) -> Value {
        let at = (cpu::offsets::SEG0 + s as usize * cpu::offsets::SEGMENT_SIZE) as i32;
        // selector (u16) | attr (u16) << 16 | limit (u32) << 32.
        let w = self.b.ins().load(I64, MF, self.st, at);
        let db = if stack { attr::DB } else { 0 };
        let want_mask = (0xffff_ffffu64 << 32)
            | (u64::from(attr::P | attr::S | attr::RW | attr::DC | attr::CODE | db) << 16);
        let want = (0xffff_ffffu64 << 32) | (u64::from(attr::P | attr::S | attr::RW | db) << 16);
        let x = self.b.ins().band_imm_s(w, want_mask as i64);
        let seg_ok = self.b.ins().icmp_imm_s(IntCC::Equal, x, want as i64);
        // Two compare-and-branches (the first tier does not fuse a `band` of two compares).
        self.or_slow(seg_ok, slow);
        let in_limit =
            self.b.ins().icmp_imm_s(IntCC::UnsignedLessThanOrEqual, off, (1i64 << 32) - size as i64);
        self.or_slow(in_limit, slow);
        let base = self.b.ins().load(I64, MF, self.st, at + 8);
        let lin = self.b.ins().iadd(base, off);
        self.trunc(lin, 4)
    }

    /// A branch target's check (`control::branch_to`): canonical in 64-bit code, within CS's limit
    /// elsewhere; else the handler runs the instruction (and raises #GP).
    fn target_ok(&mut self, insn: &Insn, t: Value, slow: Block) {
        let ok = if insn.i.code_size() == CodeSize::Code64 {
            let x = self.b.ins().ishl_imm_s(t, 16);
            let x = self.b.ins().sshr_imm_s(x, 16);
            self.b.ins().icmp(IntCC::Equal, x, t)
        } else {
            let at = cpu::offsets::SEG0 + Seg::Cs as usize * cpu::offsets::SEGMENT_SIZE + 4;
            let lim = self.b.ins().load(types::I32, MF, self.st, at as i32);
            let lim = self.b.ins().uextend(I64, lim);
            self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, t, lim)
        };
        self.or_slow(ok, slow);
    }

    /// JMP/CALL/RET forms `lower::emit_call_ret` does not handle itself: memory-indirect targets,
    /// and every form in 32-bit code. Returns the new RIP; every check (target, second access)
    /// branches to `slow` before anything is written.
    pub(super) fn emit_branch(
        &mut self,
        insn: &Insn,
        form: Form,
        host: Value,
        slow: Block,
        tlb: Value,
        user_tag: Value,
    ) -> Value {
        let n = stack_bytes(insn);
        let sp_reg = RegOp { index: 4, size: n as u8, shift: 0 };
        match form.op {
            Op::JmpInd => {
                let t = match insn.op[0] {
                    Opnd::Reg(g) => self.read(g),
                    _ => self.host_load(host, n),
                };
                self.target_ok(insn, t, slow);
                t
            }
            Op::Ret => {
                let t = self.host_load(host, n);
                self.target_ok(insn, t, slow);
                let sp = self.read(sp_reg);
                let sp = self.b.ins().iadd_imm_s(sp, n as i64);
                let sp = self.trunc(sp, n);
                self.write(sp_reg, sp);
                t
            }
            Op::Call => {
                // The target first (read, checked), then the push: a bad target or a push that
                // faults leaves everything to the handler.
                let (t, slot) = match (form.mem, insn.op[0]) {
                    (Mem::Src, _) => {
                        let t = self.host_load(host, n);
                        self.target_ok(insn, t, slow);
                        let push = Form { op: Op::Push, mem: Mem::Stack };
                        let slot = self.probe_cached(insn, push, tlb, user_tag, slow, None);
                        (t, slot)
                    }
                    (_, Opnd::Reg(g)) => {
                        let t = self.read(g);
                        self.target_ok(insn, t, slow);
                        (t, host)
                    }
                    _ => {
                        let t = self.b.ins().iconst(I64, insn.i.near_branch_target() as i64);
                        self.target_ok(insn, t, slow);
                        (t, host)
                    }
                };
                let ret = self.b.ins().iconst(I64, (insn.next_rip & cpu::regs::size_mask(n)) as i64);
                self.host_store(slot, ret, n);
                let sp = self.read(sp_reg);
                let sp = self.b.ins().iadd_imm_s(sp, -(n as i64));
                let sp = self.trunc(sp, n);
                self.write(sp_reg, sp);
                t
            }
            _ => unreachable!("{:?} is not a branch", form.op),
        }
    }

    /// PUSH r32/imm and POP r32 in 32-bit code once the probe succeeded (`ops::push`/`pop` of 4 bytes with a
    /// 32-bit stack pointer).
    pub(super) fn emit_stack32(&mut self, insn: &Insn, form: Form, host: Value) {
        let sp = self.read(r32(4));
        if form.op == Op::Push {
            // The register is read before ESP moves (PUSH ESP pushes the old value); an immediate
            // is stored as its low 4 bytes (`push_imm::<4>` masks to the operand size).
            let v = match insn.op[0] {
                Opnd::Reg(d) => self.read(d),
                Opnd::Imm(x) => self.b.ins().iconst(I64, x as i64),
                _ => unreachable!("inline_form admits PUSH r32 and PUSH imm only"),
            };
            self.host_store(host, v, 4);
            let sp = self.b.ins().iadd_imm_s(sp, -4);
            let sp = self.trunc(sp, 4);
            self.write(r32(4), sp);
        } else {
            let Opnd::Reg(d) = insn.op[0] else { unreachable!() };
            // ESP moves first, then the register is written (POP ESP keeps the popped value).
            let v = self.host_load(host, 4);
            let sp = self.b.ins().iadd_imm_s(sp, 4);
            let sp = self.trunc(sp, 4);
            self.write(r32(4), sp);
            self.write(d, v);
        }
    }

    /// The forms of this file that `lower::emit_mem` hands over: DIV/IDIV (register: `Mem::Guard`,
    /// or memory), CMPXCHG and XADD with a memory destination. `host` addresses the access.
    pub(super) fn emit_ext_mem(
        &mut self,
        insn: &Insn,
        e: Ext,
        form: Form,
        host: Value,
        live: u64,
        slow: Block,
    ) {
        match e {
            Ext::Div(signed) => {
                let (size, dv) = match insn.op[0] {
                    Opnd::Reg(g) if form.mem == Mem::Guard => (g.size as u32, self.read(g)),
                    _ => {
                        let size = Self::access_size(insn, form);
                        (size, self.host_load(host, size))
                    }
                };
                self.div(signed, size, dv, slow);
            }
            Ext::Bt(k) => {
                let size = Self::access_size(insn, form);
                let Opnd::Imm(imm) = insn.op[1] else { unreachable!() };
                let v = self.host_load(host, size);
                let bit = imm & u64::from(size * 8 - 1);
                if live & flags::CF != 0 {
                    // CF = the bit; every other flag unchanged (`bits::bt_op`).
                    self.materialize();
                    let cf = self.b.ins().ushr_imm_s(v, bit as i64);
                    let cf = self.b.ins().band_imm_s(cf, 1);
                    self.set_flags(cf, flags::CF);
                }
                if k != 0 {
                    let m = (1u64 << bit) as i64;
                    let r = match k {
                        1 => self.b.ins().bor_imm_s(v, m),
                        2 => self.b.ins().band_imm_s(v, !m),
                        _ => self.b.ins().bxor_imm_s(v, m),
                    };
                    self.host_store(host, r, size);
                }
            }
            Ext::Cmpxchg | Ext::Xadd => {
                let size = Self::access_size(insn, form);
                let d = self.host_load(host, size);
                let v = self.xchg_op(insn, e, d, size, live);
                self.host_store(host, v, size);
            }
            Ext::Movbe => {
                let size = Self::access_size(insn, form);
                if form.mem == Mem::Src {
                    // A 16-bit destination keeps its upper bits, a 32-bit one is zero-extended
                    // (`write`, as the handler's `write_op`).
                    let Opnd::Reg(d) = insn.op[0] else { unreachable!() };
                    let v = self.host_load(host, size);
                    let r = self.swap_bytes(v, size);
                    self.write(d, r);
                } else {
                    let Opnd::Reg(s) = insn.op[1] else { unreachable!() };
                    let v = self.read(s);
                    let r = self.swap_bytes(v, size);
                    self.host_store(host, r, size);
                }
            }
            _ => unreachable!("{e:?} is not a form of lower_mem"),
        }
    }

    /// CMOVcc r, m and SETcc m8 once the probe succeeded.
    pub(super) fn emit_cc_mem(&mut self, insn: &Insn, form: Form, host: Value) {
        match form.op {
            Op::Cmov(cc) => {
                let Opnd::Reg(d) = insn.op[0] else { unreachable!() };
                let size = d.size as u32;
                let v = self.host_load(host, size);
                let cur = self.read(d);
                let c = self.cond(cc);
                // A 32-bit destination is written (zero-extended) even when the condition is false.
                let v = self.b.ins().select(c, v, cur);
                self.write(d, v);
            }
            Op::Setcc(cc) => {
                let c = self.cond(cc);
                let v = self.b.ins().uextend(I64, c);
                self.host_store(host, v, 1);
            }
            _ => unreachable!(),
        }
    }

    /// CBW/CWDE/CDQE (`dx` false) and CWD/CDQ/CQO at `size` bytes (`exec::misc`'s handlers).
    pub(super) fn emit_cwd(&mut self, dx: bool, size: u8) {
        let s = u32::from(size);
        if dx {
            let a = self.read(RegOp { index: 0, size, shift: 0 });
            let x = self.sext(a, s, 8);
            let x = self.b.ins().sshr_imm_s(x, 63);
            let x = self.trunc(x, s);
            self.write(RegOp { index: 2, size, shift: 0 }, x);
        } else {
            let a = self.read(RegOp { index: 0, size: size / 2, shift: 0 });
            let x = self.sext(a, s / 2, s);
            self.write(RegOp { index: 0, size, shift: 0 }, x);
        }
    }

    /// CMPXCHG/XADD register forms.
    pub(super) fn emit_xchg_reg(&mut self, insn: &Insn, e: Ext, live: u64) {
        let Opnd::Reg(dr) = insn.op[0] else { unreachable!() };
        let size = dr.size as u32;
        let d = self.read(dr);
        if e == Ext::Xadd {
            let v = self.xchg_op(insn, e, d, size, live);
            self.write(dr, v);
            return;
        }
        // CMPXCHG r, r: the destination register is written only when equal (a 32-bit one is then
        // zero-extended), the accumulator only when not.
        let old = self.load_gpr(dr.index);
        let eq = self.cmpxchg_eq(insn, d, size, live);
        let Opnd::Reg(sr) = insn.op[1] else { unreachable!() };
        let src = self.read(sr);
        self.write(dr, src);
        let new = self.load_gpr(dr.index);
        let v = self.b.ins().select(eq, new, old);
        self.store_gpr(dr.index, v);
        self.cmpxchg_acc(eq, d, size);
    }

    /// CMPXCHG's flags (CMP accumulator, destination `d`) and whether they were equal.
    fn cmpxchg_eq(&mut self, _insn: &Insn, d: Value, size: u32, live: u64) -> Value {
        let acc = self.read(RegOp { index: 0, size: size as u8, shift: 0 });
        let r = self.b.ins().isub(acc, d);
        let r = self.trunc(r, size);
        if live & flags::ARITH != 0 {
            self.defer(super::Pending::Arith { a: acc, b: d, r, size, sub: true, keep_cf: false });
        }
        self.b.ins().icmp(IntCC::Equal, acc, d)
    }

    /// CMPXCHG, not equal: the accumulator gets the destination's value `d`.
    fn cmpxchg_acc(&mut self, eq: Value, d: Value, size: u32) {
        let acc = RegOp { index: 0, size: size as u8, shift: 0 };
        let old = self.load_gpr(0);
        self.write(acc, d);
        let new = self.load_gpr(0);
        let v = self.b.ins().select(eq, old, new);
        self.store_gpr(0, v);
    }

    /// CMPXCHG or XADD of destination value `d` (memory), with the source register: sets the
    /// flags and registers, returns the destination's new value.
    fn xchg_op(&mut self, insn: &Insn, e: Ext, d: Value, size: u32, live: u64) -> Value {
        let Opnd::Reg(sr) = insn.op[1] else { unreachable!() };
        let s = self.read(sr);
        if e == Ext::Xadd {
            let sum = self.b.ins().iadd(d, s);
            let sum = self.trunc(sum, size);
            if live & flags::ARITH != 0 {
                self.defer(super::Pending::Arith { a: d, b: s, r: sum, size, sub: false, keep_cf: false });
            }
            // The source gets the old destination, then the destination the sum.
            self.write(sr, d);
            return sum;
        }
        let eq = self.cmpxchg_eq(insn, d, size, live);
        // Memory is written either way (with its own value when not equal), as by the handler.
        let v = self.b.ins().select(eq, s, d);
        self.cmpxchg_acc(eq, d, size);
        v
    }

    /// DIV/IDIV by `dv` (masked to `size`): the fast path, or `slow` for every case the handler
    /// must decide (#DE, a 128-bit dividend).
    fn div(&mut self, signed: bool, size: u32, dv: Value, slow: Block) {
        let bits = size * 8;
        let (q, r) = if size == 8 {
            let a = self.load_gpr(0);
            let d = self.load_gpr(2);
            // The dividend must fit in 64 bits: RDX is 0 (DIV) or RAX's sign (IDIV).
            let hi = if signed { self.b.ins().sshr_imm_s(a, 63) } else { self.b.ins().iconst(I64, 0) };
            let fits = self.b.ins().icmp(IntCC::Equal, d, hi);
            self.or_slow(fits, slow);
            let nz = self.b.ins().icmp_imm_s(IntCC::NotEqual, dv, 0);
            self.or_slow(nz, slow);
            if signed {
                // i64::MIN / -1 does not fit (and traps on the host).
                let m1 = self.b.ins().icmp_imm_s(IntCC::NotEqual, dv, -1);
                let mn = self.b.ins().icmp_imm_s(IntCC::NotEqual, a, i64::MIN);
                let ok = self.b.ins().bor(m1, mn);
                self.or_slow(ok, slow);
                (self.b.ins().sdiv(a, dv), self.b.ins().srem(a, dv))
            } else {
                (self.b.ins().udiv(a, dv), self.b.ins().urem(a, dv))
            }
        } else {
            // The double-width dividend: AX, DX:AX or EDX:EAX, in 64 bits.
            let n = if size == 1 {
                self.read(RegOp { index: 0, size: 2, shift: 0 })
            } else {
                let lo = self.read(RegOp { index: 0, size: size as u8, shift: 0 });
                let hi = self.read(RegOp { index: 2, size: size as u8, shift: 0 });
                let hi = self.b.ins().ishl_imm_s(hi, i64::from(bits));
                self.b.ins().bor(hi, lo)
            };
            let nz = self.b.ins().icmp_imm_s(IntCC::NotEqual, dv, 0);
            self.or_slow(nz, slow);
            if signed {
                let n = self.sext(n, 2 * size, 8);
                let d = self.sext(dv, size, 8);
                let m1 = self.b.ins().icmp_imm_s(IntCC::NotEqual, d, -1);
                let mn = self.b.ins().icmp_imm_s(IntCC::NotEqual, n, i64::MIN);
                let ok = self.b.ins().bor(m1, mn);
                self.or_slow(ok, slow);
                let q = self.b.ins().sdiv(n, d);
                let r = self.b.ins().srem(n, d);
                // The quotient must fit: -2^(bits-1) <= q < 2^(bits-1).
                let half = 1i64 << (bits - 1);
                let x = self.b.ins().iadd_imm_s(q, half);
                let fits = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, x, 2 * half);
                self.or_slow(fits, slow);
                (self.trunc(q, size), self.trunc(r, size))
            } else {
                let q = self.b.ins().udiv(n, dv);
                let r = self.b.ins().urem(n, dv);
                let fits = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThanOrEqual, q, super::mask(size));
                self.or_slow(fits, slow);
                (q, r)
            }
        };
        if size == 1 {
            let h = self.b.ins().ishl_imm_s(r, 8);
            let ax = self.b.ins().bor(h, q);
            self.write(RegOp { index: 0, size: 2, shift: 0 }, ax);
        } else {
            self.write(RegOp { index: 0, size: size as u8, shift: 0 }, q);
            self.write(RegOp { index: 2, size: size as u8, shift: 0 }, r);
        }
        // `muldiv::div_flags`: AMD clears SF, ZF, PF and sets AF; Intel leaves all six.
        self.materialize();
        let qk =
            self.b.ins().load(types::I8, MF, self.st, std::mem::offset_of!(cpu::CpuState, quirks) as i32);
        let amd = self.b.ins().icmp_imm_s(IntCC::Equal, qk, cpu::state::Quirks::Amd as i64);
        let fl = self.b.use_var(self.fl);
        let cleared = self.b.ins().band_imm_s(fl, !((flags::SF | flags::ZF | flags::AF | flags::PF) as i64));
        let set = self.b.ins().bor_imm_s(cleared, flags::AF as i64);
        let v = self.b.ins().select(amd, set, fl);
        self.b.def_var(self.fl, v);
    }
}
