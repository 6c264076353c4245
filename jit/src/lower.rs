//! Instructions the JIT lowers to Cranelift IR instead of calling their handler: register and
//! immediate forms that cannot fault and touch only general registers, RFLAGS' arithmetic flags and
//! the next RIP; and, in 64-bit code, their memory forms and PUSH/POP r64, whose access is inlined
//! when it is the interpreter's own fast path (a canonical address, no page crossing, RFLAGS.AC clear,
//! and a hit in the interpreter's TLB with a host pointer): anything else runs the handler. Each lowering restates its handler's semantics (`cpu::exec::alu`, `cpu::exec::ops`
//! `flags_add`/`flags_sub`/`szp`, `cpu::regs::write_gpr`, `cpu::exec::control::jcc`), and
//! `tests/differential.rs` runs random sequences of every form here under both engines and requires
//! identical states.

use cpu::exec::{Insn, Opnd, RegOp};
use cpu::mem::{TLB_SIZE, Tlb, TlbEntry};
use cpu::state::Seg;
use cpu::state::flags;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;
use iced_x86::{CodeSize, EncodingKind, Mnemonic, OpKind, Register};
use std::mem::offset_of;

/// What an inlined instruction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Mov,
    Movzx,
    Movsx,
    Lea,
    Add,
    Sub,
    Cmp,
    And,
    Or,
    Xor,
    Test,
    Inc,
    Dec,
    Nop,
    /// Jcc/JMP rel in 64-bit code, to a canonical target (`None` for JMP: always taken).
    Branch(Option<u32>),
    /// PUSH r64 (64-bit code).
    Push,
    /// POP r64 (64-bit code).
    Pop,
}

/// Where an inlined instruction's memory operand is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mem {
    /// No memory access.
    None,
    /// Operand 1 is memory (read).
    Src,
    /// Operand 0 is memory: written (MOV), read (CMP, TEST) or both.
    Dst,
    /// The stack (PUSH writes at RSP-8, POP reads at RSP).
    Stack,
}

/// An inlined instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Form {
    pub op: Op,
    pub mem: Mem,
}

impl Form {
    /// Whether the memory access writes (so it probes the write TLB).
    fn writes(self) -> bool {
        match self.mem {
            Mem::Dst => !matches!(self.op, Op::Cmp | Op::Test),
            Mem::Stack => self.op == Op::Push,
            _ => false,
        }
    }
}

/// Whether (and as what) `insn` is lowered inline.
pub(crate) fn inline_op(insn: &Insn) -> Option<Form> {
    let i = &insn.i;
    if i.code().op_code().encoding() != EncodingKind::Legacy || i.has_lock_prefix() {
        return None;
    }
    let reg = |n: usize| matches!(insn.op[n], Opnd::Reg(_));
    let src = matches!(insn.op[1], Opnd::Reg(_) | Opnd::Imm(_));
    let long = i.code_size() == CodeSize::Code64;
    let m = i.mnemonic();
    let plain = |op| Some(Form { op, mem: Mem::None });
    // Memory operands: 64-bit code only (no segment limits; FS/GS bases added), sizes 1-8, and
    // general registers (or RIP) in the address.
    let mem_ok = long && lea_regs_ok(insn) && matches!(i.memory_size().size(), 1 | 2 | 4 | 8);
    match m {
        Mnemonic::Nop => plain(Op::Nop),
        _ if i.is_jcc_short_or_near() || i.is_jmp_short_or_near() => {
            // Only 64-bit code, where the target needs no CS-limit check, only a canonical one,
            // which is decided here from the constant target.
            if !long
                || i.op0_kind() != OpKind::NearBranch64
                || !cpu::mem::is_canonical(i.near_branch_target())
            {
                return None;
            }
            plain(Op::Branch(i.is_jcc_short_or_near().then(|| cpu::exec::ops::cc_of(insn))))
        }
        Mnemonic::Push if long && i.code() == iced_x86::Code::Push_r64 && reg(0) => {
            Some(Form { op: Op::Push, mem: Mem::Stack })
        }
        Mnemonic::Pop if long && i.code() == iced_x86::Code::Pop_r64 && reg(0) => {
            Some(Form { op: Op::Pop, mem: Mem::Stack })
        }
        Mnemonic::Lea if reg(0) && insn.op[1] == Opnd::Mem && lea_regs_ok(insn) => plain(Op::Lea),
        _ => {
            let op = match m {
                Mnemonic::Mov if i.op_count() == 2 => Op::Mov,
                Mnemonic::Movzx => Op::Movzx,
                Mnemonic::Movsx => Op::Movsx,
                Mnemonic::Movsxd if insn.osize == 8 => Op::Movsx,
                Mnemonic::Add => Op::Add,
                Mnemonic::Sub => Op::Sub,
                Mnemonic::Cmp => Op::Cmp,
                Mnemonic::And => Op::And,
                Mnemonic::Or => Op::Or,
                Mnemonic::Xor => Op::Xor,
                Mnemonic::Test => Op::Test,
                Mnemonic::Inc if i.op_count() == 1 => Op::Inc,
                Mnemonic::Dec if i.op_count() == 1 => Op::Dec,
                _ => return None,
            };
            let unary = matches!(op, Op::Inc | Op::Dec);
            let widen = matches!(op, Op::Movzx | Op::Movsx);
            if reg(0) && (unary || (widen && reg(1)) || (!widen && src)) {
                return plain(op);
            }
            if reg(0) && insn.op[1] == Opnd::Mem && mem_ok && !unary && op != Op::Test {
                return Some(Form { op, mem: Mem::Src });
            }
            if insn.op[0] == Opnd::Mem && mem_ok && !widen && (unary || src) {
                return Some(Form { op, mem: Mem::Dst });
            }
            None
        }
    }
}

/// LEA's base and index are general registers (or RIP/EIP, or none).
fn lea_regs_ok(insn: &Insn) -> bool {
    let b = insn.i.memory_base();
    let x = insn.i.memory_index();
    (b == Register::None || b == Register::RIP || b == Register::EIP || cpu::regs::gpr(b).is_some())
        && (x == Register::None || cpu::regs::gpr(x).is_some())
}

fn mask(size: u32) -> i64 {
    cpu::regs::size_mask(size) as i64
}

/// Emits IR over `CpuState` at `st`.
pub(crate) struct Lower<'a, 'b> {
    pub b: &'a mut FunctionBuilder<'b>,
    pub st: Value,
}

const MF: MemFlagsData = MemFlagsData::trusted();

impl Lower<'_, '_> {
    fn load_gpr(&mut self, index: u8) -> Value {
        self.b.ins().load(I64, MF, self.st, cpu::offsets::gpr(index as usize) as i32)
    }

    fn store_gpr(&mut self, index: u8, v: Value) {
        self.b.ins().store(MF, v, self.st, cpu::offsets::gpr(index as usize) as i32);
    }

    /// `CpuState::read_gpr`.
    fn read(&mut self, g: RegOp) -> Value {
        let v = self.load_gpr(g.index);
        let v = if g.shift != 0 { self.b.ins().ushr_imm_s(v, g.shift as i64) } else { v };
        if g.size < 8 { self.b.ins().band_imm_s(v, mask(g.size as u32)) } else { v }
    }

    /// `CpuState::write_gpr`: `v` already masked to the register's size.
    fn write(&mut self, g: RegOp, v: Value) {
        let v = match g.size {
            8 | 4 => v,
            _ => {
                let m = mask(g.size as u32) << g.shift;
                let old = self.load_gpr(g.index);
                let old = self.b.ins().band_imm_s(old, !m);
                let v = if g.shift != 0 { self.b.ins().ishl_imm_s(v, g.shift as i64) } else { v };
                self.b.ins().bor(old, v)
            }
        };
        self.store_gpr(g.index, v);
    }

    fn operand(&mut self, o: Opnd, size: u32) -> Value {
        match o {
            Opnd::Reg(g) => self.read(g),
            Opnd::Imm(v) => self.b.ins().iconst(I64, (v as i64) & mask(size)),
            _ => unreachable!("inline_op admits only register and immediate sources"),
        }
    }

    /// `(v >> bit) & 1`, shifted to `to`.
    fn bit_to(&mut self, v: Value, bit: u32, to: u32) -> Value {
        let x = self.b.ins().ushr_imm_s(v, bit as i64);
        let x = self.b.ins().band_imm_s(x, 1);
        if to != 0 { self.b.ins().ishl_imm_s(x, to as i64) } else { x }
    }

    fn flag_of(&mut self, c: Value, f: u64) -> Value {
        let x = self.b.ins().uextend(I64, c);
        self.b.ins().ishl_imm_s(x, f.trailing_zeros() as i64)
    }

    /// `ops::szp`: PF, ZF, SF of `r` (masked to `size`).
    fn szp(&mut self, r: Value, size: u32) -> Value {
        let z = self.b.ins().icmp_imm_s(IntCC::Equal, r, 0);
        let zf = self.flag_of(z, flags::ZF);
        let sf = self.bit_to(r, size * 8 - 1, flags::SF.trailing_zeros());
        let lo = self.b.ins().band_imm_s(r, 0xff);
        let pc = self.b.ins().popcnt(lo);
        let even = self.b.ins().band_imm_s(pc, 1);
        let even = self.b.ins().bxor_imm_s(even, 1);
        let pf = self.b.ins().ishl_imm_s(even, flags::PF.trailing_zeros() as i64);
        let f = self.b.ins().bor(zf, sf);
        self.b.ins().bor(f, pf)
    }

    /// `ops::flags_add` / `ops::flags_sub` without carry in: a, b, r masked to `size`.
    fn arith_flags(&mut self, a: Value, b: Value, r: Value, size: u32, sub: bool) -> Value {
        let mut f = self.szp(r, size);
        let cf = if sub {
            self.b.ins().icmp(IntCC::UnsignedLessThan, a, b)
        } else {
            self.b.ins().icmp(IntCC::UnsignedLessThan, r, a)
        };
        let cf = self.flag_of(cf, flags::CF);
        f = self.b.ins().bor(f, cf);
        let x = self.b.ins().bxor(a, b);
        let x = self.b.ins().bxor(x, r);
        let af = self.bit_to(x, 4, flags::AF.trailing_zeros());
        f = self.b.ins().bor(f, af);
        let ab = self.b.ins().bxor(a, b);
        let ar = self.b.ins().bxor(a, r);
        let o = if sub { self.b.ins().band(ab, ar) } else { self.b.ins().band_not(ar, ab) };
        let of = self.bit_to(o, size * 8 - 1, flags::OF.trailing_zeros());
        self.b.ins().bor(f, of)
    }

    /// Replaces the flags in `which` with `f`.
    fn set_flags(&mut self, f: Value, which: u64) {
        let off = cpu::offsets::RFLAGS as i32;
        let old = self.b.ins().load(I64, MF, self.st, off);
        let old = self.b.ins().band_imm_s(old, !(which as i64));
        let new = self.b.ins().bor(old, f);
        self.b.ins().store(MF, new, self.st, off);
    }

    /// `ops::cond`: condition code `cc` on the current RFLAGS, as an i8 0/1.
    pub(crate) fn cond(&mut self, cc: u32) -> Value {
        let fl = self.b.ins().load(I64, MF, self.st, cpu::offsets::RFLAGS as i32);
        let bit = |s: &mut Self, f: u64| s.bit_to(fl, f.trailing_zeros(), 0);
        let v = match cc >> 1 {
            0 => bit(self, flags::OF),
            1 => bit(self, flags::CF),
            2 => bit(self, flags::ZF),
            3 => {
                let c = bit(self, flags::CF);
                let z = bit(self, flags::ZF);
                self.b.ins().bor(c, z)
            }
            4 => bit(self, flags::SF),
            5 => bit(self, flags::PF),
            6 => {
                let s = bit(self, flags::SF);
                let o = bit(self, flags::OF);
                self.b.ins().bxor(s, o)
            }
            _ => {
                let z = bit(self, flags::ZF);
                let s = bit(self, flags::SF);
                let o = bit(self, flags::OF);
                let so = self.b.ins().bxor(s, o);
                self.b.ins().bor(z, so)
            }
        };
        let v = if cc & 1 != 0 { self.b.ins().bxor_imm_s(v, 1) } else { v };
        self.b.ins().icmp_imm_s(IntCC::NotEqual, v, 0)
    }

    /// `ops::ea` (LEA's address, masked to the address size).
    fn ea(&mut self, insn: &Insn) -> Value {
        let i = &insn.i;
        let mut a = self.b.ins().iconst(I64, i.memory_displacement64() as i64);
        let base = i.memory_base();
        if base != Register::None
            && base != Register::RIP
            && base != Register::EIP
            && let Some(g) = cpu::regs::gpr(base)
        {
            let v = self.read(RegOp { index: g.index as u8, size: g.size as u8, shift: g.shift as u8 });
            a = self.b.ins().iadd(a, v);
        }
        let index = i.memory_index();
        if index != Register::None
            && let Some(g) = cpu::regs::gpr(index)
        {
            let v = self.read(RegOp { index: g.index as u8, size: g.size as u8, shift: g.shift as u8 });
            let v = self.b.ins().imul_imm_s(v, i.memory_index_scale() as i64);
            a = self.b.ins().iadd(a, v);
        }
        if insn.asize < 8 { self.b.ins().band_imm_s(a, mask(insn.asize as u32)) } else { a }
    }

    /// `a op b` at `size` bytes (a, b masked), with the flags the handler sets; the value to write
    /// back (`None` for CMP and TEST). `b` is ignored by INC and DEC.
    fn alu(&mut self, op: Op, a: Value, b: Value, size: u32) -> Option<Value> {
        let arith = flags::ARITH;
        match op {
            Op::Add | Op::Sub | Op::Cmp => {
                let sub = op != Op::Add;
                let r = if sub { self.b.ins().isub(a, b) } else { self.b.ins().iadd(a, b) };
                let r = if size < 8 { self.b.ins().band_imm_s(r, mask(size)) } else { r };
                let f = self.arith_flags(a, b, r, size, sub);
                self.set_flags(f, arith);
                (op != Op::Cmp).then_some(r)
            }
            Op::And | Op::Or | Op::Xor | Op::Test => {
                let r = match op {
                    Op::Or => self.b.ins().bor(a, b),
                    Op::Xor => self.b.ins().bxor(a, b),
                    _ => self.b.ins().band(a, b),
                };
                let f = self.szp(r, size);
                self.set_flags(f, arith);
                (op != Op::Test).then_some(r)
            }
            Op::Inc | Op::Dec => {
                let one = self.b.ins().iconst(I64, 1);
                let sub = op == Op::Dec;
                let r = if sub { self.b.ins().isub(a, one) } else { self.b.ins().iadd(a, one) };
                let r = if size < 8 { self.b.ins().band_imm_s(r, mask(size)) } else { r };
                let f = self.arith_flags(a, one, r, size, sub);
                // INC and DEC leave CF.
                let f = self.b.ins().band_imm_s(f, !(flags::CF as i64));
                self.set_flags(f, arith & !flags::CF);
                Some(r)
            }
            _ => unreachable!("{op:?} is not an ALU operation"),
        }
    }

    /// `v` (masked to `from` bytes) sign-extended, then cut to `to` bytes.
    fn sext(&mut self, v: Value, from: u32, to: u32) -> Value {
        let v = if from < 8 {
            let sh = 64 - 8 * from as i64;
            let x = self.b.ins().ishl_imm_s(v, sh);
            self.b.ins().sshr_imm_s(x, sh)
        } else {
            v
        };
        if to < 8 { self.b.ins().band_imm_s(v, mask(to)) } else { v }
    }

    /// Emits an inlined instruction without a memory operand (branches are the caller's).
    pub(crate) fn emit(&mut self, insn: &Insn, op: Op) {
        if op == Op::Nop {
            return;
        }
        let Opnd::Reg(d) = insn.op[0] else { unreachable!("{op:?} without a register destination") };
        let size = d.size as u32;
        match op {
            Op::Branch(_) | Op::Push | Op::Pop | Op::Nop => unreachable!("{op:?} is not a register form"),
            Op::Mov => {
                let v = self.operand(insn.op[1], size);
                self.write(d, v);
            }
            Op::Movzx | Op::Movsx => {
                let Opnd::Reg(s) = insn.op[1] else { unreachable!() };
                let v = self.read(s);
                // MOVZX's source is narrower than its destination: already zero-extended.
                let v = if op == Op::Movsx { self.sext(v, s.size as u32, size) } else { v };
                self.write(d, v);
            }
            Op::Lea => {
                let v = self.ea(insn);
                let v = if size < 8 { self.b.ins().band_imm_s(v, mask(size)) } else { v };
                self.write(d, v);
            }
            _ => {
                let a = self.read(d);
                let b = if matches!(op, Op::Inc | Op::Dec) { a } else { self.operand(insn.op[1], size) };
                if let Some(r) = self.alu(op, a, b, size) {
                    self.write(d, r);
                }
            }
        }
    }

    /// The linear address of a memory form's access.
    fn lin(&mut self, insn: &Insn, form: Form) -> Value {
        if form.mem == Mem::Stack {
            let sp = self.load_gpr(4);
            return if form.op == Op::Push { self.b.ins().iadd_imm_s(sp, -8) } else { sp };
        }
        let off = self.ea(insn);
        match cpu::exec::ops::mem_seg(insn) {
            s @ (Seg::Fs | Seg::Gs) => {
                let at = cpu::offsets::SEG0 + s as usize * cpu::offsets::SEGMENT_SIZE + 8;
                let base = self.b.ins().load(I64, MF, self.st, at as i32);
                self.b.ins().iadd(off, base)
            }
            _ => off,
        }
    }

    /// Bytes a memory form accesses.
    pub(crate) fn access_size(insn: &Insn, form: Form) -> u32 {
        if form.mem == Mem::Stack { 8 } else { insn.i.memory_size().size() as u32 }
    }

    /// The interpreter's fast path for a memory form's access (`Ctx::seg_lin`, `check_alignment`,
    /// `tlb_lookup` and `read_lin_as`/`write_lin_as` when they go straight to a host page): returns
    /// (taken, host address). When not taken, the handler must run the instruction.
    pub(crate) fn probe(&mut self, insn: &Insn, form: Form, tlb: Value) -> (Value, Value) {
        let size = Self::access_size(insn, form);
        let lin = self.lin(insn, form);
        // Canonical (the whole access is: it does not cross a page, and the canonical boundaries are
        // page boundaries).
        let x = self.b.ins().ishl_imm_s(lin, 16);
        let x = self.b.ins().sshr_imm_s(x, 16);
        let canonical = self.b.ins().icmp(IntCC::Equal, x, lin);
        let off = self.b.ins().band_imm_s(lin, 0xfff);
        let in_page = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThanOrEqual, off, 0x1000 - size as i64);
        // RFLAGS.AC clear: no alignment check to make.
        let fl = self.b.ins().load(I64, MF, self.st, cpu::offsets::RFLAGS as i32);
        let ac = self.b.ins().band_imm_s(fl, flags::AC as i64);
        let no_ac = self.b.ins().icmp_imm_s(IntCC::Equal, ac, 0);
        // The TLB entry: tag = page | 2 | user.
        let cpl = self.b.ins().load(types::I8, MF, self.st, std::mem::offset_of!(cpu::CpuState, cpl) as i32);
        let user = self.b.ins().icmp_imm_s(IntCC::Equal, cpl, 3);
        let user = self.b.ins().uextend(I64, user);
        let page = self.b.ins().band_imm_s(lin, !0xfff);
        let tag = self.b.ins().bor_imm_s(page, 2);
        let tag = self.b.ins().bor(tag, user);
        let idx = self.b.ins().ushr_imm_s(lin, 12);
        let idx = self.b.ins().band_imm_s(idx, (TLB_SIZE - 1) as i64);
        let ent = self.b.ins().imul_imm_s(idx, std::mem::size_of::<TlbEntry>() as i64);
        let ent = self.b.ins().iadd(tlb, ent);
        let table = if form.writes() { offset_of!(Tlb, write) } else { offset_of!(Tlb, read) };
        let etag = self.b.ins().load(I64, MF, ent, (table + offset_of!(TlbEntry, tag)) as i32);
        let ehost = self.b.ins().load(I64, MF, ent, (table + offset_of!(TlbEntry, host)) as i32);
        let hit = self.b.ins().icmp(IntCC::Equal, etag, tag);
        let has_host = self.b.ins().icmp_imm_s(IntCC::NotEqual, ehost, 0);
        let ok = self.b.ins().band(canonical, in_page);
        let ok = self.b.ins().band(ok, no_ac);
        let ok = self.b.ins().band(ok, hit);
        let ok = self.b.ins().band(ok, has_host);
        let host = self.b.ins().iadd(ehost, off);
        (ok, host)
    }

    fn host_load(&mut self, host: Value, size: u32) -> Value {
        let v = self.b.ins().load(ty_of(size), HOST, host, 0);
        if size < 8 { self.b.ins().uextend(I64, v) } else { v }
    }

    fn host_store(&mut self, host: Value, v: Value, size: u32) {
        let v = if size < 8 { self.b.ins().ireduce(ty_of(size), v) } else { v };
        self.b.ins().store(HOST, v, host, 0);
    }

    /// Emits a memory form's operation once [`Self::probe`] succeeded (`host` addresses the access).
    pub(crate) fn emit_mem(&mut self, insn: &Insn, form: Form, host: Value) {
        let msize = Self::access_size(insn, form);
        match form.mem {
            Mem::Stack => {
                let Opnd::Reg(d) = insn.op[0] else { unreachable!() };
                let sp = self.load_gpr(4);
                if form.op == Op::Push {
                    // The register is read before RSP moves (PUSH RSP pushes the old value).
                    let v = self.load_gpr(d.index);
                    self.host_store(host, v, 8);
                    let sp = self.b.ins().iadd_imm_s(sp, -8);
                    self.store_gpr(4, sp);
                } else {
                    // RSP moves first, then the register is written (POP RSP keeps the popped value).
                    let v = self.host_load(host, 8);
                    let sp = self.b.ins().iadd_imm_s(sp, 8);
                    self.store_gpr(4, sp);
                    self.store_gpr(d.index, v);
                }
            }
            Mem::Src => {
                let Opnd::Reg(d) = insn.op[0] else { unreachable!() };
                let size = d.size as u32;
                let m = self.host_load(host, msize);
                match form.op {
                    Op::Mov | Op::Movzx => self.write(d, m),
                    Op::Movsx => {
                        let v = self.sext(m, msize, size);
                        self.write(d, v);
                    }
                    op => {
                        let a = self.read(d);
                        if let Some(r) = self.alu(op, a, m, size) {
                            self.write(d, r);
                        }
                    }
                }
            }
            Mem::Dst => {
                if form.op == Op::Mov {
                    let v = self.operand(insn.op[1], msize);
                    self.host_store(host, v, msize);
                    return;
                }
                let a = self.host_load(host, msize);
                let b =
                    if matches!(form.op, Op::Inc | Op::Dec) { a } else { self.operand(insn.op[1], msize) };
                if let Some(r) = self.alu(form.op, a, b, msize) {
                    self.host_store(host, r, msize);
                }
            }
            Mem::None => unreachable!(),
        }
    }
}

/// Guest RAM through a host pointer: never traps (the TLB handed out a live page), maybe unaligned.
const HOST: MemFlagsData = MemFlagsData::new().with_notrap();

fn ty_of(size: u32) -> Type {
    match size {
        1 => types::I8,
        2 => types::I16,
        4 => types::I32,
        _ => I64,
    }
}
