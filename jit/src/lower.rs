//! Instructions the JIT lowers to Cranelift IR instead of calling their handler: register and
//! immediate forms that cannot fault and touch only general registers, RFLAGS' arithmetic flags and
//! the next RIP (IMUL computes its vendor-dependent flags by calling the interpreter's own flag
//! function, and only when the flags are live; shifts and rotates compute theirs in IR, lazily, in
//! `lower_shift.rs`); and, in 64-bit code, their memory forms and PUSH/POP r64, whose access is inlined
//! when it is the interpreter's own fast path (a canonical address, no page crossing, RFLAGS.AC clear,
//! and a hit in the interpreter's TLB with a host pointer): anything else runs the handler. Each lowering restates its handler's semantics (`cpu::exec::alu`, `cpu::exec::ops`
//! `flags_add`/`flags_sub`/`szp`, `cpu::regs::write_gpr`, `cpu::exec::control::jcc`), and
//! `tests/differential.rs` runs random sequences of every form here under both engines and requires
//! identical states. More integer forms (ADC/SBB, XCHG, BT*, BSF/BSR, MUL/IMUL r) are in `lower_int.rs`;
//! DIV/IDIV, CMPXCHG/XADD, memory-indirect JMP/CALL and the 32-bit memory forms in `lower_mem.rs`.
//! The SSE and VEX forms are in `lower_sse.rs`.

use cpu::exec::shift::Op as ShiftOp;
use cpu::exec::{Insn, Opnd, RegOp};
use cpu::mem::{TLB_SIZE, Tlb, TlbEntry};
use cpu::state::Seg;
use cpu::state::flags;
use cranelift_codegen::ir::condcodes::{CondCode, IntCC};
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{Block, SigRef};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::{FunctionBuilder, Variable};
use iced_x86::{CodeSize, EncodingKind, Mnemonic, OpKind, Register};
use std::mem::offset_of;

#[path = "lower_int.rs"]
mod lower_int;
#[path = "lower_mem.rs"]
mod lower_mem;
pub(crate) use lower_int::{Ext, cnt_flags, mul_flags};
#[path = "lower_shift.rs"]
mod lower_shift;
#[path = "lower_sse.rs"]
mod lower_sse;
#[path = "lower_sys.rs"]
mod lower_sys;
pub(crate) use lower_sse::{helper_form_name, sse_helper};
pub(crate) use lower_sys::{SysEnv, emit_through, sys_helper, through_end};

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
    /// ROL/ROR/SHL/SHR/SAR of a register by an immediate: the operation and the masked count.
    Shift(ShiftOp, u32),
    /// IMUL r, r/m and IMUL r, r/m, imm with register sources.
    Imul,
    /// NEG r.
    Neg,
    /// NOT r.
    Not,
    /// SETcc r8 (the condition code).
    Setcc(u32),
    /// CMOVcc r, r (the condition code).
    Cmov(u32),
    /// CALL rel32 to a canonical target, or CALL r64, in 64-bit code (ends the block).
    Call,
    /// RET (C3) in 64-bit code (ends the block).
    Ret,
    /// A form of `lower_int.rs`.
    Ext(Ext),
    /// JMP r64 in 64-bit code (ends the block; a non-canonical target runs the handler).
    JmpInd,
    /// An SSE form of `lower_sse.rs` (64-bit code).
    Sse(lower_sse::Sse),
    /// A system form of `lower_sys.rs` (any mode).
    Sys(lower_sys::Sys),
}

/// The arithmetic flags `op` writes whatever the vendor (`CpuState::quirks`): the flags after it do
/// not depend on their value before. Dead-flag elimination (`liveness`) relies on this.
fn kills(op: Op) -> u64 {
    match op {
        Op::Add | Op::Sub | Op::Cmp | Op::And | Op::Or | Op::Xor | Op::Test | Op::Neg => flags::ARITH,
        Op::Inc | Op::Dec => flags::ARITH & !flags::CF,
        Op::Shift(_, 0) => 0,
        Op::Shift(ShiftOp::Shl | ShiftOp::Shr | ShiftOp::Sar, _) => flags::ARITH,
        // Intel's mask (`shift::rot_mask` with a register destination and an immediate count); AMD
        // writes OF as well.
        Op::Shift(_, 1) => flags::CF | flags::OF,
        Op::Shift(..) => flags::CF,
        // AMD leaves SF, ZF, AF and PF alone.
        Op::Imul => flags::CF | flags::OF,
        Op::Ext(e) => e.kills(),
        _ => 0,
    }
}

/// For each instruction of a block, the arithmetic flags that may be read after it (by a later
/// instruction, a handler, an exception or the code after the block): a flag that is not is not
/// computed. Memory forms count as reading all of them (their slow path runs the handler, which may
/// fault), and so does every instruction that is not lowered inline.
pub(crate) fn liveness(insns: &[Insn]) -> Vec<u64> {
    let mut live = flags::ARITH;
    let mut out = vec![0; insns.len()];
    for (k, insn) in insns.iter().enumerate().rev() {
        out[k] = live;
        live = live_before(insn, live);
    }
    out
}

/// The arithmetic flags that may be read before `insn` runs, given those live after it.
fn live_before(insn: &Insn, after: u64) -> u64 {
    match inline_op(insn) {
        Some(f) if f.mem == Mem::None => (after & !kills(f.op)) | reads(insn),
        _ => flags::ARITH,
    }
}

/// The arithmetic flags that may be read when the block is entered (`live` from [`liveness`]): at
/// a loop's back edge, flags outside this set need not be computed.
pub(crate) fn live_in(insns: &[Insn], live: &[u64]) -> u64 {
    live_before(&insns[0], live[0])
}

/// The arithmetic flags an instruction reads (iced's table).
fn reads(insn: &Insn) -> u64 {
    use iced_x86::RflagsBits as R;
    let r = insn.i.rflags_read();
    [
        (R::OF, flags::OF),
        (R::SF, flags::SF),
        (R::ZF, flags::ZF),
        (R::AF, flags::AF),
        (R::CF, flags::CF),
        (R::PF, flags::PF),
    ]
    .iter()
    .filter(|(b, _)| r & b != 0)
    .fold(0, |acc, (_, f)| acc | f)
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
    /// No memory access, but a check in generated code that may send the instruction to its
    /// handler (the slow path of a memory form): JMP r64's canonical target.
    Guard,
}

/// An inlined instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Form {
    pub op: Op,
    pub mem: Mem,
}

impl Form {
    /// Whether the memory access writes (so it probes the write TLB).
    pub(crate) fn writes(self) -> bool {
        match self.mem {
            Mem::Dst => !matches!(self.op, Op::Cmp | Op::Test),
            Mem::Stack => matches!(self.op, Op::Push | Op::Call | Op::Sys(lower_sys::Sys::Pushf)),
            _ => false,
        }
    }
}

/// Whether (and as what) `insn` is lowered inline.
pub(crate) fn inline_op(insn: &Insn) -> Option<Form> {
    let i = &insn.i;
    if i.code().op_code().encoding() == EncodingKind::VEX {
        return lower_int::inline_bmi(insn).or_else(|| lower_sse::inline_vex(insn));
    }
    if i.code().op_code().encoding() != EncodingKind::Legacy
        || (i.has_lock_prefix() && !lower_mem::lock_ok(insn))
    {
        return None;
    }
    if let Some(f) = lower_mem::inline_mem(insn) {
        return Some(f);
    }
    if let Some(f) = lower_int::inline_ext(insn) {
        return Some(f);
    }
    if let Some(f) = lower_sse::inline_sse(insn) {
        return Some(f);
    }
    if let Some(f) = lower_sys::inline_sys(insn) {
        return Some(f);
    }
    let reg = |n: usize| matches!(insn.op[n], Opnd::Reg(_));
    let src = matches!(insn.op[1], Opnd::Reg(_) | Opnd::Imm(_));
    let long = i.code_size() == CodeSize::Code64;
    let m = i.mnemonic();
    let plain = |op| Some(Form { op, mem: Mem::None });
    // Memory operands: 64-bit code (no segment limits; FS/GS bases added) or 32-bit code (a
    // segment check in generated code: `lower_mem`), sizes 1-8, and general registers (or RIP) in
    // the address.
    let mem_ok = lower_mem::mem_ok(insn);
    match m {
        Mnemonic::Nop => plain(Op::Nop),
        // PAUSE is the interpreter's `nop` handler (spin-wait loops run it once per iteration:
        // memtest86+'s TSC delay loops, the kernel's); it cost a handler call.
        Mnemonic::Pause if insn.handler as usize == cpu::exec::handler_for(i.code()) as usize => {
            plain(Op::Nop)
        }
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
        Mnemonic::Call
            if long
                && ((i.code() == iced_x86::Code::Call_rel32_64
                    && cpu::mem::is_canonical(i.near_branch_target()))
                    || (i.code() == iced_x86::Code::Call_rm64 && reg(0))) =>
        {
            Some(Form { op: Op::Call, mem: Mem::Stack })
        }
        Mnemonic::Jmp if long && i.code() == iced_x86::Code::Jmp_rm64 && reg(0) => {
            Some(Form { op: Op::JmpInd, mem: Mem::Guard })
        }
        Mnemonic::Ret if long && i.code() == iced_x86::Code::Retnq => {
            Some(Form { op: Op::Ret, mem: Mem::Stack })
        }
        Mnemonic::Push if long && i.code() == iced_x86::Code::Push_r64 && reg(0) => {
            Some(Form { op: Op::Push, mem: Mem::Stack })
        }
        // PUSH imm8/imm32 (sign-extended to 64 bits): `stack::push_imm`, the same `ops::push` of
        // 8 bytes as PUSH r64 (Linux's system call entry pushes three).
        Mnemonic::Push
            if long
                && matches!(i.code(), iced_x86::Code::Pushq_imm8 | iced_x86::Code::Pushq_imm32)
                && matches!(insn.op[0], Opnd::Imm(_)) =>
        {
            Some(Form { op: Op::Push, mem: Mem::Stack })
        }
        Mnemonic::Pop if long && i.code() == iced_x86::Code::Pop_r64 && reg(0) => {
            Some(Form { op: Op::Pop, mem: Mem::Stack })
        }
        Mnemonic::Lea if reg(0) && insn.op[1] == Opnd::Mem && lea_regs_ok(insn) => plain(Op::Lea),
        Mnemonic::Rol | Mnemonic::Ror | Mnemonic::Shl | Mnemonic::Sal | Mnemonic::Shr | Mnemonic::Sar
            if reg(0) && matches!(insn.op[1], Opnd::Imm(_)) =>
        {
            let (Opnd::Reg(d), Opnd::Imm(c)) = (insn.op[0], insn.op[1]) else { return None };
            let op = match m {
                Mnemonic::Rol => ShiftOp::Rol,
                Mnemonic::Ror => ShiftOp::Ror,
                Mnemonic::Shr => ShiftOp::Shr,
                Mnemonic::Sar => ShiftOp::Sar,
                _ => ShiftOp::Shl,
            };
            plain(Op::Shift(op, (c & cpu::exec::shift::count_mask(d.size as u32)) as u32))
        }
        Mnemonic::Imul if reg(0) && reg(1) && (i.op_count() == 2 || i.op2_kind() != OpKind::Register) => {
            plain(Op::Imul)
        }
        Mnemonic::Neg if reg(0) && i.op_count() == 1 => plain(Op::Neg),
        Mnemonic::Not if reg(0) && i.op_count() == 1 => plain(Op::Not),
        _ if op0f(insn, 0x90) && reg(0) => plain(Op::Setcc(cpu::exec::ops::cc_of(insn))),
        _ if op0f(insn, 0x40) && reg(0) && reg(1) => plain(Op::Cmov(cpu::exec::ops::cc_of(insn))),
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

/// Whether `insn` is one of the 16 two-byte opcodes `0F base+cc` (SETcc, CMOVcc) with a condition.
fn op0f(insn: &Insn, base: u32) -> bool {
    let oc = insn.i.code().op_code();
    oc.table() == iced_x86::OpCodeTableKind::T0F
        && (base..base + 16).contains(&oc.op_code())
        && cpu::exec::ops::cc_of(insn) < 16
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
    /// The guest's general registers as the generated code holds them.
    pub regs: &'a mut Regs,
    /// RFLAGS while the block runs (stored to `CpuState` before handler calls and at exits).
    pub fl: Variable,
    /// The signature of [`flags_helper`]-like helpers.
    pub helper_sig: SigRef,
    /// The block's `Outcome`, which holds the helpers' addresses (`crate::helper_offset`).
    pub out: Value,
}

/// `(st, rflags, a, b, code) -> rflags`: a flag computation of the interpreter's, called from
/// generated code where its flags are live.
pub(crate) type FlagsHelper = extern "C" fn(*const cpu::CpuState, u64, u64, u64, u32) -> u64;

/// RFLAGS after IMUL of `a` by `b` at `code` bytes: `cpu::exec::muldiv::{imul_parts, mul_flags}`,
/// the handler's own.
pub(crate) extern "C" fn imul_flags(st: *const cpu::CpuState, fl: u64, a: u64, b: u64, code: u32) -> u64 {
    // SAFETY: generated code passes the `CpuState` of the `Ctx` it runs on, live for the call.
    let quirks = unsafe { (*st).quirks };
    let (lo, _, ovf) = cpu::exec::muldiv::imul_parts(a, b, code);
    cpu::exec::muldiv::mul_flags(fl, lo, ovf, code, quirks)
}

/// RFLAGS with the lazy flag state a linked predecessor left (`cpu::lazyflags`) computed into it:
/// `kind` is the state's kind word (taken from `CpuState` at the block's entry), its operands
/// are still in `CpuState::lazy`. The one accessor, `LazyFlags::apply`.
pub(crate) extern "C" fn lazy_flags(st: *const cpu::CpuState, fl: u64, kind: u64, _: u64, _: u32) -> u64 {
    // SAFETY: generated code passes the `CpuState` of the `Ctx` it runs on, live for the call.
    let l = unsafe { (*st).lazy };
    cpu::lazyflags::LazyFlags { kind, ..l }.apply(fl)
}

/// The lazy flag kinds (operation, size; every arithmetic flag defined) that a condition read at a
/// block's entry takes from the predecessor's state inline (`Lower::cond_incoming`).
const FAST_KINDS: [(u64, u32); 4] = [
    (cpu::lazyflags::OP_SUB, 4),
    (cpu::lazyflags::OP_SUB, 8),
    (cpu::lazyflags::OP_LOGIC, 4),
    (cpu::lazyflags::OP_LOGIC, 8),
];

/// Offset of a field of `CpuState::lazy` (`cpu::lazyflags::field`).
fn lazy_off(field: usize) -> i32 {
    (cpu::offsets::LAZY + field) as i32
}

const MF: MemFlagsData = MemFlagsData::trusted();

impl Lower<'_, '_> {
    fn load_gpr(&mut self, index: u8) -> Value {
        self.regs.get(self.b, self.st, index)
    }

    fn store_gpr(&mut self, index: u8, v: Value) {
        self.regs.set(self.b, index, v);
    }

    /// `v` cut to `size` bytes (4: a 32-bit move, not an AND with a constant from memory).
    fn trunc(&mut self, v: Value, size: u32) -> Value {
        match size {
            8 => v,
            4 => {
                let x = self.b.ins().ireduce(types::I32, v);
                self.b.ins().uextend(I64, x)
            }
            _ => self.b.ins().band_imm_s(v, mask(size)),
        }
    }

    /// `CpuState::read_gpr`.
    fn read(&mut self, g: RegOp) -> Value {
        let v = self.load_gpr(g.index);
        let v = if g.shift != 0 { self.b.ins().ushr_imm_s(v, g.shift as i64) } else { v };
        self.trunc(v, g.size as u32)
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

    /// `ops::szp`: those of PF, ZF, SF of `r` (masked to `size`) that are in `want`; the other
    /// bits zero.
    fn szp(&mut self, r: Value, size: u32, want: u64) -> Value {
        let mut f = self.b.ins().iconst(I64, 0);
        if want & flags::ZF != 0 {
            let z = self.b.ins().icmp_imm_s(IntCC::Equal, r, 0);
            let zf = self.flag_of(z, flags::ZF);
            f = self.b.ins().bor(f, zf);
        }
        if want & flags::SF != 0 {
            let sf = self.bit_to(r, size * 8 - 1, flags::SF.trailing_zeros());
            f = self.b.ins().bor(f, sf);
        }
        if want & flags::PF != 0 {
            let lo = self.b.ins().band_imm_s(r, 0xff);
            let pc = self.b.ins().popcnt(lo);
            let even = self.b.ins().band_imm_s(pc, 1);
            let even = self.b.ins().bxor_imm_s(even, 1);
            let pf = self.b.ins().ishl_imm_s(even, flags::PF.trailing_zeros() as i64);
            f = self.b.ins().bor(f, pf);
        }
        f
    }

    /// `ops::flags_add` / `ops::flags_sub` without carry in: a, b, r masked to `size`; only the
    /// flags in `want`, the other bits zero.
    fn arith_flags(&mut self, a: Value, b: Value, r: Value, size: u32, sub: bool, want: u64) -> Value {
        let mut f = self.szp(r, size, want);
        if want & flags::CF != 0 {
            let cf = if sub {
                self.b.ins().icmp(IntCC::UnsignedLessThan, a, b)
            } else {
                self.b.ins().icmp(IntCC::UnsignedLessThan, r, a)
            };
            let cf = self.flag_of(cf, flags::CF);
            f = self.b.ins().bor(f, cf);
        }
        if want & flags::AF != 0 {
            let x = self.b.ins().bxor(a, b);
            let x = self.b.ins().bxor(x, r);
            let af = self.bit_to(x, 4, flags::AF.trailing_zeros());
            f = self.b.ins().bor(f, af);
        }
        if want & flags::OF != 0 {
            let ab = self.b.ins().bxor(a, b);
            let ar = self.b.ins().bxor(a, r);
            let o = if sub { self.b.ins().band(ab, ar) } else { self.b.ins().band_not(ar, ab) };
            let of = self.bit_to(o, size * 8 - 1, flags::OF.trailing_zeros());
            f = self.b.ins().bor(f, of);
        }
        f
    }

    /// Replaces the flags in `which` with `f`.
    fn set_flags(&mut self, f: Value, which: u64) {
        let old = self.b.use_var(self.fl);
        let old = self.b.ins().band_imm_s(old, !(which as i64));
        let new = self.b.ins().bor(old, f);
        self.b.def_var(self.fl, new);
    }

    /// Makes `p` a pending flag computation. A pending one keeps only the flags `p` does not write
    /// (nothing can have read the others: every reader computes what it reads first); when two are
    /// still pending, the older is computed first.
    fn defer(&mut self, p: Pending) {
        let m = p.mask();
        let set = &mut self.regs.pending.0;
        for e in set.iter_mut() {
            if let Some((_, em)) = e {
                *em &= !m;
                if *em == 0 {
                    *e = None;
                }
            }
        }
        if set[0].is_none() {
            set.swap(0, 1);
        }
        if set[1].is_some() {
            let (old, om) = set[0].take().expect("the older entry is first");
            self.regs.pending.0.swap(0, 1);
            let f = self.pending_flags(old, om);
            self.set_flags(f, om);
        }
        let set = &mut self.regs.pending.0;
        let free = if set[0].is_none() { 0 } else { 1 };
        set[free] = Some((p, m));
    }

    /// The flags in `want` (a subset of `p.mask()`) as `p` computes them, the others zero.
    fn pending_flags(&mut self, p: Pending, want: u64) -> Value {
        match p {
            Pending::Arith { a, b, r, size, sub, .. } => self.arith_flags(a, b, r, size, sub, want),
            Pending::Adc { a, b, c, r, size, sub } => self.adc_flags(a, b, c, r, size, sub, want),
            Pending::Logic { r, size } => self.szp(r, size, want),
            Pending::Shift(s) => self.shift_flags(s, want),
            Pending::Imul { a, b, size } => {
                let f = self.b.ins().load(I64, MF, self.out, crate::helper_offset(crate::HELPER_IMUL_FLAGS));
                let fl = self.b.use_var(self.fl);
                let code = self.b.ins().iconst(types::I32, size as i64);
                let call = self.b.ins().call_indirect(self.helper_sig, f, &[self.st, fl, a, b, code]);
                let r = self.b.inst_results(call)[0];
                self.b.ins().band_imm_s(r, want as i64)
            }
            Pending::Incoming { kind } if want & !flags::CF == 0 => self.incoming_cf(kind, want),
            Pending::Incoming { kind } => {
                // The accessor, called only when a state is pending (a block entered from the
                // interpreter has none).
                let fl = self.b.use_var(self.fl);
                let call_b = self.b.create_block();
                let join = self.b.create_block();
                self.b.append_block_param(join, I64);
                self.b.ins().brif(kind, call_b, &[], join, &[fl.into()]);
                self.b.seal_block(call_b);
                self.b.switch_to_block(call_b);
                let f = self.b.ins().load(I64, MF, self.out, crate::helper_offset(crate::HELPER_LAZY));
                let zero = self.b.ins().iconst(I64, 0);
                let code = self.b.ins().iconst(types::I32, 0);
                let call = self.b.ins().call_indirect(self.helper_sig, f, &[self.st, fl, kind, zero, code]);
                let r = self.b.inst_results(call)[0];
                self.b.ins().jump(join, &[r.into()]);
                self.b.seal_block(join);
                self.b.switch_to_block(join);
                let v = self.b.block_params(join)[0];
                self.b.ins().band_imm_s(v, want as i64)
            }
            Pending::Carried(c) => {
                // Iterations after the first: the operation carried across the back edge; the first:
                // RFLAGS as the loop was entered.
                // Only the operands the kind needs are carried (`CarryKind::carries`); the rest
                // are remade here (an ADD/SUB's result, INC/DEC's 1).
                let on = self.b.use_var(c.on);
                let inner = match c.kind {
                    CarryKind::Arith { size, sub, keep_cf } => {
                        let a = self.b.use_var(c.a);
                        let b = if keep_cf { self.b.ins().iconst(I64, 1) } else { self.b.use_var(c.b) };
                        let r = if sub { self.b.ins().isub(a, b) } else { self.b.ins().iadd(a, b) };
                        let r = self.trunc(r, size);
                        Pending::Arith { a, b, r, size, sub, keep_cf }
                    }
                    CarryKind::Logic { size } => Pending::Logic { r: self.b.use_var(c.r), size },
                    CarryKind::Adc { size, sub } => {
                        let a = self.b.use_var(c.a);
                        let b = self.b.use_var(c.b);
                        let r = self.b.use_var(c.r);
                        let c = self.adc_carry_of(a, b, r, size, sub);
                        Pending::Adc { a, b, c, r, size, sub }
                    }
                    CarryKind::Shift { op, size, cnt } => {
                        let a = self.b.use_var(c.a);
                        let r = self.b.use_var(c.r);
                        Pending::Shift(lower_shift::ShiftFlags::new(
                            op,
                            size,
                            a,
                            r,
                            lower_shift::Count::Imm(cnt),
                            None,
                        ))
                    }
                };
                let lazy = self.pending_flags(inner, want);
                let fl = self.b.use_var(self.fl);
                let cur = self.b.ins().band_imm_s(fl, want as i64);
                self.b.ins().select(on, lazy, cur)
            }
        }
    }

    /// CF of a predecessor's lazy state (`Pending::Incoming`), masked to `want` (CF or nothing):
    /// what an INC/DEC (which keeps CF) at a block's entry leaves of it, computed at the block's
    /// exit or before a handler call. Inline for the kinds whose CF is one compare of the stored
    /// operands (`cpu::lazyflags`: masked to the size, so the compare needs no size): SUB/CMP/NEG
    /// `a < b`, ADD `r < a`, the logic ops 0; RFLAGS' own CF when nothing is pending or the state
    /// does not define CF (an INC/DEC kind); the accessor for ADC/SBB (their carry in).
    fn incoming_cf(&mut self, kind: Value, want: u64) -> Value {
        use cpu::lazyflags::{OP_ADD, OP_LOGIC, OP_SUB, field};
        let fl = self.b.use_var(self.fl);
        let join = self.b.create_block();
        self.b.append_block_param(join, I64);
        let calc = self.b.create_block();
        let defines = self.b.ins().band_imm_s(kind, (flags::CF << 16) as i64);
        self.b.ins().brif(defines, calc, &[], join, &[fl.into()]);
        self.b.seal_block(calc);
        self.b.switch_to_block(calc);
        let op = self.b.ins().band_imm_s(kind, 0xff);
        let is_sub = self.b.ins().icmp_imm_s(IntCC::Equal, op, OP_SUB as i64);
        let is_add = self.b.ins().icmp_imm_s(IntCC::Equal, op, OP_ADD as i64);
        let is_logic = self.b.ins().icmp_imm_s(IntCC::Equal, op, OP_LOGIC as i64);
        let fast = self.b.ins().bor(is_sub, is_add);
        let fast = self.b.ins().bor(fast, is_logic);
        let inline = self.b.create_block();
        let call_b = self.b.create_block();
        self.b.ins().brif(fast, inline, &[], call_b, &[]);
        self.b.seal_block(inline);
        self.b.seal_block(call_b);
        self.b.switch_to_block(inline);
        let a = self.b.ins().load(I64, MF, self.st, lazy_off(field::A));
        let b = self.b.ins().load(I64, MF, self.st, lazy_off(field::B));
        let r = self.b.ins().load(I64, MF, self.st, lazy_off(field::R));
        let borrow = self.b.ins().icmp(IntCC::UnsignedLessThan, a, b);
        let carry = self.b.ins().icmp(IntCC::UnsignedLessThan, r, a);
        let zero = self.b.ins().iconst(types::I8, 0);
        let c = self.b.ins().select(is_add, carry, zero);
        let c = self.b.ins().select(is_sub, borrow, c);
        let c = self.b.ins().uextend(I64, c);
        self.b.ins().jump(join, &[c.into()]);
        self.b.switch_to_block(call_b);
        let f = self.b.ins().load(I64, MF, self.out, crate::helper_offset(crate::HELPER_LAZY));
        let zero = self.b.ins().iconst(I64, 0);
        let code = self.b.ins().iconst(types::I32, 0);
        let call = self.b.ins().call_indirect(self.helper_sig, f, &[self.st, fl, kind, zero, code]);
        let res = self.b.inst_results(call)[0];
        self.b.ins().jump(join, &[res.into()]);
        self.b.seal_block(join);
        self.b.switch_to_block(join);
        let v = self.b.block_params(join)[0];
        self.b.ins().band_imm_s(v, (want & flags::CF) as i64)
    }

    /// At a self-loop's back edge (or a region's edge into a member), where the next iteration
    /// may read flags: with `carry` (from a first build of the same code), the pending operation of
    /// that kind owning that mask is not computed but its operands are handed to the next
    /// iteration in `carry`'s variables (`on` = 1; every other pending flag is computed, and `on` =
    /// 0 when no such operation is pending). The flags are then computed only where read: on a
    /// slow path, at a handler call, at the loop's exit. Returns the operation that could have been
    /// carried (for the first build).
    pub(crate) fn back_edge(&mut self, carry: Option<(Carry, u64)>) -> Option<(CarryKind, u64)> {
        let set = std::mem::take(&mut self.regs.pending);
        let mut kept = false;
        let mut found = None;
        for (p, m) in set.0.into_iter().flatten() {
            if let Some((c, cm)) = carry
                && !kept
                && m == cm
            {
                if p == Pending::Carried(c) {
                    // Unchanged since the top: its variables already hold it.
                    kept = true;
                    continue;
                }
                if let Pending::Carried(from) = p
                    && from.kind == c.kind
                {
                    // In a region: the operation carried into this member, unchanged, handed on
                    // to the next one (whether it is on, too).
                    let (ua, ub, ur) = c.kind.carries();
                    for (used, to, from) in
                        [(true, c.on, from.on), (ua, c.a, from.a), (ub, c.b, from.b), (ur, c.r, from.r)]
                    {
                        if used {
                            let v = self.b.use_var(from);
                            self.b.def_var(to, v);
                        }
                    }
                    kept = true;
                    continue;
                }
                if let Some((k, a, b, r)) = p.carry_kind()
                    && k == c.kind
                {
                    let (ua, ub, ur) = k.carries();
                    for (used, var, v) in [(ua, c.a, a), (ub, c.b, b), (ur, c.r, r)] {
                        if used {
                            self.b.def_var(var, v);
                        }
                    }
                    let one = self.b.ins().iconst(I64, 1);
                    self.b.def_var(c.on, one);
                    kept = true;
                    continue;
                }
            }
            if let Some((k, ..)) = p.carry_kind() {
                found = Some((k, m));
            } else if let Pending::Carried(from) = p
                && m == p.mask()
            {
                // A memory form's operation, carried over its join (`join_carry`).
                found = Some((from.kind, m));
            }
            let f = self.pending_flags(p, m);
            self.set_flags(f, m);
        }
        if let Some((c, _)) = carry
            && !kept
        {
            let zero = self.b.ins().iconst(I64, 0);
            self.b.def_var(c.on, zero);
        }
        found
    }

    /// Computes the pending flags into RFLAGS (before anything reads them).
    pub(crate) fn materialize(&mut self) {
        let set = std::mem::take(&mut self.regs.pending);
        for (p, m) in set.0.into_iter().flatten() {
            let f = self.pending_flags(p, m);
            self.set_flags(f, m);
        }
    }

    /// At a block's entry, when a linked predecessor may have left a lazy flag state in
    /// `CpuState` (`cpu::lazyflags`): takes it over (clears `kind` there, so that nothing else
    /// computes it again) as a pending operation owning every arithmetic flag, computed only where
    /// one is read before being written (or before a handler call).
    pub(crate) fn take_incoming(&mut self) {
        let kind = self.b.ins().load(I64, MF, self.st, lazy_off(cpu::lazyflags::field::KIND));
        let zero = self.b.ins().iconst(I64, 0);
        self.b.ins().store(MF, zero, self.st, lazy_off(cpu::lazyflags::field::KIND));
        self.regs.pending = PendingSet([Some((Pending::Incoming { kind }, flags::ARITH)), None]);
    }

    /// At the entry of a block that writes every arithmetic flag before anything can read one
    /// (`live_in` empty): a predecessor's lazy flag state is dead, so it is only cleared (not
    /// loaded).
    pub(crate) fn clear_incoming(&mut self) {
        let zero = self.b.ins().iconst(I64, 0);
        self.b.ins().store(MF, zero, self.st, lazy_off(cpu::lazyflags::field::KIND));
        self.regs.pending = PendingSet::default();
    }

    /// At an exit (everything else stored, the RFLAGS variable stored by the caller after this):
    /// the newest pending operation, when it is an ADD/SUB/logic operation, is not computed but
    /// stored as the lazy flag state (`cpu::lazyflags`), which the linked successor takes over
    /// (`take_incoming`) or `JitBlock::run` computes before it returns; any other pending flag is
    /// computed into RFLAGS.
    pub(crate) fn export(&mut self) {
        let set = std::mem::take(&mut self.regs.pending);
        let newest = if set.0[1].is_some() { 1 } else { 0 };
        for (p, m) in set.0[..newest].iter().flatten().copied() {
            let f = self.pending_flags(p, m);
            self.set_flags(f, m);
        }
        let Some((p, m)) = set.0[newest] else { return };
        use cpu::lazyflags::{OP_ADC, OP_ADD, OP_LOGIC, OP_SBB, OP_SUB, field, kind};
        let (word, a, b, r) = match p {
            Pending::Arith { a, b, r, size, sub, .. } => {
                let op = if sub { OP_SUB } else { OP_ADD };
                (self.b.ins().iconst(I64, kind(op, size, m) as i64), Some(a), Some(b), r)
            }
            Pending::Logic { r, size } => {
                (self.b.ins().iconst(I64, kind(OP_LOGIC, size, m) as i64), None, None, r)
            }
            Pending::Adc { a, b, r, size, sub, .. } => {
                // The carry in is not stored: the accessor recovers it from a, b and r.
                let op = if sub { OP_SBB } else { OP_ADC };
                (self.b.ins().iconst(I64, kind(op, size, m) as i64), Some(a), Some(b), r)
            }
            Pending::Incoming { kind } if m == flags::ARITH => {
                // Nothing wrote a flag: hand the predecessor's state on (its operands are still
                // in `CpuState`).
                self.b.ins().store(MF, kind, self.st, lazy_off(field::KIND));
                return;
            }
            Pending::Carried(c)
                if matches!(
                    c.kind,
                    CarryKind::Arith { .. } | CarryKind::Logic { .. } | CarryKind::Adc { .. }
                ) =>
            {
                // Pending where `on` says so, else RFLAGS is current: kind 0.
                let on = self.b.use_var(c.on);
                let (op, size, a, b) = match c.kind {
                    CarryKind::Arith { size, sub, keep_cf } => {
                        let a = self.b.use_var(c.a);
                        let b = if keep_cf { self.b.ins().iconst(I64, 1) } else { self.b.use_var(c.b) };
                        (if sub { OP_SUB } else { OP_ADD }, size, Some(a), Some(b))
                    }
                    CarryKind::Logic { size } => (OP_LOGIC, size, None, None),
                    CarryKind::Adc { size, sub } => {
                        let a = self.b.use_var(c.a);
                        let b = self.b.use_var(c.b);
                        (if sub { OP_SBB } else { OP_ADC }, size, Some(a), Some(b))
                    }
                    CarryKind::Shift { .. } => unreachable!("matched above"),
                };
                let r = match (c.kind, a, b) {
                    (CarryKind::Arith { sub, .. }, Some(x), Some(y)) => {
                        let r = if sub { self.b.ins().isub(x, y) } else { self.b.ins().iadd(x, y) };
                        self.trunc(r, size)
                    }
                    _ => self.b.use_var(c.r),
                };
                let w = self.b.ins().iconst(I64, kind(op, size, m) as i64);
                let zero = self.b.ins().iconst(I64, 0);
                let word = self.b.ins().select(on, w, zero);
                (word, a, b, r)
            }
            _ => {
                let f = self.pending_flags(p, m);
                self.set_flags(f, m);
                return;
            }
        };
        self.b.ins().store(MF, word, self.st, lazy_off(field::KIND));
        if let Some(a) = a {
            self.b.ins().store(MF, a, self.st, lazy_off(field::A));
        }
        if let Some(b) = b {
            self.b.ins().store(MF, b, self.st, lazy_off(field::B));
        }
        self.b.ins().store(MF, r, self.st, lazy_off(field::R));
    }

    /// After a memory form's fast path, which left its own flag operation pending (and only it):
    /// rather than computing it before the join with the slow path (whose handler computes the
    /// flags into RFLAGS), hands it over the join in variables as a carried operation (`on` = 1
    /// here, 0 on the slow path: `join_carry_slow`), so the flags are computed only where read
    /// (or stored lazily at the exit). Otherwise computes the pending flags. Returns the carry.
    pub(crate) fn join_carry(&mut self) -> Option<Carry> {
        let set = self.regs.pending.0;
        let newest = if set[1].is_some() { 1 } else { 0 };
        let (p, mask) = set[newest]?;
        let Some((kind, a, b, r)) = p.carry_kind().filter(|_| mask == p.mask()) else {
            self.materialize();
            return None;
        };
        // An older operation (owning what the newest does not write) is computed here.
        for (q, qm) in set[..newest].iter().flatten().copied() {
            let f = self.pending_flags(q, qm);
            self.set_flags(f, qm);
        }
        let v = [(); 4].map(|_| self.b.declare_var(I64));
        let c = Carry { on: v[0], a: v[1], b: v[2], r: v[3], kind };
        let one = self.b.ins().iconst(I64, 1);
        self.b.def_var(c.on, one);
        for (var, val) in [(c.a, a), (c.b, b), (c.r, r)] {
            self.b.def_var(var, val);
        }
        self.regs.pending = PendingSet::carried(c, mask);
        Some(c)
    }

    /// The slow path's side of `join_carry`: RFLAGS is current (`on` = 0).
    pub(crate) fn join_carry_slow(&mut self, c: Carry) {
        let zero = self.b.ins().iconst(I64, 0);
        for var in [c.on, c.a, c.b, c.r] {
            self.b.def_var(var, zero);
        }
    }

    /// Forgets the pending flags without computing them: for a point where no flag is live (the
    /// back edge of a loop whose flags are all written before being read).
    pub(crate) fn drop_pending(&mut self) {
        self.regs.pending = PendingSet::default();
    }

    /// Arithmetic flag `f` (one bit) as 0/1 in an i64: from the pending operation that owns it, else
    /// from RFLAGS. Nothing is materialized.
    fn flag_bit(&mut self, f: u64) -> Value {
        match self.regs.pending.owner(f) {
            Some(Pending::Arith { r, .. } | Pending::Logic { r, .. } | Pending::Adc { r, .. })
                if f == flags::ZF =>
            {
                let z = self.b.ins().icmp_imm_s(IntCC::Equal, r, 0);
                self.b.ins().uextend(I64, z)
            }
            Some(
                Pending::Arith { r, size, .. } | Pending::Logic { r, size } | Pending::Adc { r, size, .. },
            ) if f == flags::SF => self.bit_to(r, size * 8 - 1, 0),
            // CF of a pending SUB/CMP/NEG or ADD: one compare (INC/DEC never own CF).
            Some(Pending::Arith { a, b, sub: true, keep_cf: false, .. }) if f == flags::CF => {
                let c = self.b.ins().icmp(IntCC::UnsignedLessThan, a, b);
                self.b.ins().uextend(I64, c)
            }
            Some(Pending::Arith { a, r, sub: false, keep_cf: false, .. }) if f == flags::CF => {
                let c = self.b.ins().icmp(IntCC::UnsignedLessThan, r, a);
                self.b.ins().uextend(I64, c)
            }
            Some(Pending::Logic { .. }) if f & (flags::CF | flags::OF | flags::AF) != 0 => {
                self.b.ins().iconst(I64, 0)
            }
            Some(p) => {
                let v = self.pending_flags(p, f);
                self.bit_to(v, f.trailing_zeros(), 0)
            }
            None => {
                let fl = self.b.use_var(self.fl);
                self.bit_to(fl, f.trailing_zeros(), 0)
            }
        }
    }

    /// Calls a flag helper of the interpreter's: RFLAGS = helper(st, RFLAGS, a, b, code).
    fn call_flags(&mut self, helper: usize, a: Value, b: Value, code: u32) {
        self.materialize();
        let f = self.b.ins().load(I64, MF, self.out, crate::helper_offset(helper));
        let fl = self.b.use_var(self.fl);
        let code = self.b.ins().iconst(types::I32, code as i64);
        let call = self.b.ins().call_indirect(self.helper_sig, f, &[self.st, fl, a, b, code]);
        let r = self.b.inst_results(call)[0];
        self.b.def_var(self.fl, r);
    }

    /// `ops::cond`: condition code `cc` on the current RFLAGS, as an i8 0/1. Pending flags are
    /// read from their operation's operands (JNZ after DEC is one compare), not materialized.
    pub(crate) fn cond(&mut self, cc: u32) -> Value {
        if let Some(v) = self.cond_incoming(cc) {
            return v;
        }
        self.settle_incoming();
        // ZF of a pending result: one compare.
        if cc >> 1 == 2
            && let Some(r) = self.regs.pending.owner(flags::ZF).and_then(Pending::zf_result)
        {
            let c = if cc & 1 != 0 { IntCC::NotEqual } else { IntCC::Equal };
            return self.b.ins().icmp_imm_s(c, r, 0);
        }
        if let Some(v) = self.cond_compare(cc) {
            return v;
        }
        let v = match cc >> 1 {
            0 => self.flag_bit(flags::OF),
            1 => self.flag_bit(flags::CF),
            2 => self.flag_bit(flags::ZF),
            3 => {
                let c = self.flag_bit(flags::CF);
                let z = self.flag_bit(flags::ZF);
                self.b.ins().bor(c, z)
            }
            4 => self.flag_bit(flags::SF),
            5 => self.flag_bit(flags::PF),
            6 => {
                let s = self.flag_bit(flags::SF);
                let o = self.flag_bit(flags::OF);
                self.b.ins().bxor(s, o)
            }
            _ => {
                let z = self.flag_bit(flags::ZF);
                let s = self.flag_bit(flags::SF);
                let o = self.flag_bit(flags::OF);
                let so = self.b.ins().bxor(s, o);
                self.b.ins().bor(z, so)
            }
        };
        let v = if cc & 1 != 0 { self.b.ins().bxor_imm_s(v, 1) } else { v };
        self.b.ins().icmp_imm_s(IntCC::NotEqual, v, 0)
    }

    /// Condition `cc` as one compare of the operands of the pending operation that owns every
    /// flag it reads, where that compare is the condition by definition: after CMP/SUB a, b
    /// (`ops::flags_sub`), CF is a <u b, ZF a = b, and SF xor OF is a <s b (the true difference's
    /// sign), all at the operation's size; after DEC (a - 1, CF not its own) the same holds of the
    /// conditions without CF; after a logic operation CF and OF are 0, so B is never, BE is ZF,
    /// and L/LE are the result's sign (and zero); after ADD a, b CF is the truncated sum below a;
    /// S is the result's sign after any of them (and ADC/SBB). `None` for any other condition or
    /// operation.
    fn cond_compare(&mut self, cc: u32) -> Option<Value> {
        let need = match cc >> 1 {
            1 => flags::CF,
            3 => flags::CF | flags::ZF,
            4 => flags::SF,
            6 => flags::SF | flags::OF,
            7 => flags::ZF | flags::SF | flags::OF,
            _ => return None,
        };
        let p = self.regs.pending.owner(need & need.wrapping_neg())?;
        let mut bit = need;
        while bit != 0 {
            let f = bit & bit.wrapping_neg();
            if self.regs.pending.owner(f) != Some(p) {
                return None;
            }
            bit &= bit - 1;
        }
        let ty = match p {
            Pending::Arith { size, .. } | Pending::Logic { size, .. } | Pending::Adc { size, .. } => {
                match size {
                    1 => types::I8,
                    2 => types::I16,
                    4 => types::I32,
                    _ => I64,
                }
            }
            _ => return None,
        };
        let narrow =
            |b: &mut FunctionBuilder<'_>, v: Value| if ty == I64 { v } else { b.ins().ireduce(ty, v) };
        let (c, x, y) = match p {
            // SF is the result's sign.
            Pending::Arith { r, .. } | Pending::Logic { r, .. } | Pending::Adc { r, .. } if cc >> 1 == 4 => {
                let r = narrow(self.b, r);
                let zero = self.b.ins().iconst(ty, 0);
                (IntCC::SignedLessThan, r, zero)
            }
            // ADD a, b: CF is the carry out, the truncated sum below a.
            Pending::Arith { a, r, sub: false, keep_cf: false, .. } if cc >> 1 == 1 => {
                (IntCC::UnsignedLessThan, narrow(self.b, r), narrow(self.b, a))
            }
            Pending::Arith { a, b, sub: true, keep_cf, .. } if !keep_cf || need & flags::CF == 0 => {
                let c = match cc >> 1 {
                    1 => IntCC::UnsignedLessThan,
                    3 => IntCC::UnsignedLessThanOrEqual,
                    6 => IntCC::SignedLessThan,
                    _ => IntCC::SignedLessThanOrEqual,
                };
                (c, narrow(self.b, a), narrow(self.b, b))
            }
            Pending::Logic { r, .. } => {
                let c = match cc >> 1 {
                    // CF is 0: B never holds (0 <u 0 is false), BE is ZF.
                    1 => IntCC::UnsignedLessThan,
                    3 => IntCC::Equal,
                    6 => IntCC::SignedLessThan,
                    _ => IntCC::SignedLessThanOrEqual,
                };
                let r = narrow(self.b, r);
                let zero = self.b.ins().iconst(ty, 0);
                (c, r, zero)
            }
            _ => return None,
        };
        let c = if cc & 1 != 0 { c.complement() } else { c };
        Some(self.b.ins().icmp(c, x, y))
    }

    /// `cond` at a block's entry, where every arithmetic flag is still the predecessor's lazy state
    /// (`Pending::Incoming`, as a Jcc that follows a block ending in CMP/Jcc finds it: Linux's
    /// system-call table dispatch is a tree of them). For the common kinds ([`FAST_KINDS`]: CMP/SUB
    /// and the logic ops at 4 and 8 bytes, every flag defined) the kind word selects, at run time,
    /// the same pending operation a block that wrote the flags itself holds (`Pending::Arith` or
    /// `Pending::Logic` of the operands in `CpuState::lazy`, which `export` stored from one), and
    /// the condition is read from it as `cond` reads any: one or two compares instead of the
    /// accessor's call. Any other kind (or none) computes the flags with the accessor into a value
    /// of its own. The state stays pending on every path (nothing is settled): a later reader
    /// decides again. `None` when the flags are not all the incoming state's.
    fn cond_incoming(&mut self, cc: u32) -> Option<Value> {
        use cpu::lazyflags::{OP_SUB, field, kind};
        let saved = self.regs.pending;
        let [Some((Pending::Incoming { kind: word }, m)), None] = saved.0 else { return None };
        if m != flags::ARITH {
            return None;
        }
        let join = self.b.create_block();
        let v = self.b.append_block_param(join, types::I8);
        for (op, size) in FAST_KINDS {
            let this = self.b.create_block();
            let other = self.b.create_block();
            let is = self.b.ins().icmp_imm_s(IntCC::Equal, word, kind(op, size, flags::ARITH) as i64);
            self.b.ins().brif(is, this, &[], other, &[]);
            self.b.seal_block(this);
            self.b.seal_block(other);
            self.b.switch_to_block(this);
            let r = self.b.ins().load(I64, MF, self.st, lazy_off(field::R));
            let p = if op == OP_SUB {
                let a = self.b.ins().load(I64, MF, self.st, lazy_off(field::A));
                let b = self.b.ins().load(I64, MF, self.st, lazy_off(field::B));
                Pending::Arith { a, b, r, size, sub: true, keep_cf: false }
            } else {
                Pending::Logic { r, size }
            };
            self.regs.pending = PendingSet([Some((p, flags::ARITH)), None]);
            let c = self.cond(cc);
            self.regs.pending = saved;
            self.b.ins().jump(join, &[c.into()]);
            self.b.switch_to_block(other);
        }
        // The accessor (nothing when no state is pending), into RFLAGS for this path only.
        let fl = self.b.use_var(self.fl);
        let f = self.pending_flags(Pending::Incoming { kind: word }, flags::ARITH);
        let rest = self.b.ins().band_imm_s(fl, !(flags::ARITH as i64));
        let full = self.b.ins().bor(rest, f);
        self.b.def_var(self.fl, full);
        self.regs.pending = PendingSet::default();
        let c = self.cond(cc);
        self.regs.pending = saved;
        self.b.def_var(self.fl, fl);
        self.b.ins().jump(join, &[c.into()]);
        self.b.seal_block(join);
        self.b.switch_to_block(join);
        Some(v)
    }

    /// A predecessor's lazy state still pending (`Pending::Incoming`): computed into RFLAGS now,
    /// so that a reader of several flags (or of one flag several times) calls the accessor once.
    fn settle_incoming(&mut self) {
        if let Some(i) =
            self.regs.pending.0.iter().position(|e| matches!(e, Some((Pending::Incoming { .. }, _))))
        {
            let (p, m) = self.regs.pending.0[i].take().expect("found");
            let f = self.pending_flags(p, m);
            self.set_flags(f, m);
            if self.regs.pending.0[0].is_none() {
                self.regs.pending.0.swap(0, 1);
            }
        }
    }

    /// CF as 0/1 in an i64 without computing any other pending flag (ADC/SBB's carry in): one
    /// compare when a pending SUB/CMP/ADD owns it, a constant after a logic operation.
    pub(super) fn carry_in(&mut self) -> Value {
        if matches!(self.regs.pending.owner(flags::CF), Some(Pending::Incoming { .. })) {
            self.settle_incoming();
        }
        self.flag_bit(flags::CF)
    }

    /// `ops::ea` (LEA's address, masked to the address size).
    fn ea(&mut self, insn: &Insn) -> Value {
        let i = &insn.i;
        // base + index * scale + displacement, without the adds of zeros and the multiply by 1
        // that the first tier (no optimisation) would emit as they are.
        let mut a: Option<Value> = None;
        let base = i.memory_base();
        if base != Register::None
            && base != Register::RIP
            && base != Register::EIP
            && let Some(g) = cpu::regs::gpr(base)
        {
            a = Some(self.read(RegOp { index: g.index as u8, size: g.size as u8, shift: g.shift as u8 }));
        }
        let index = i.memory_index();
        if index != Register::None
            && let Some(g) = cpu::regs::gpr(index)
        {
            let v = self.read(RegOp { index: g.index as u8, size: g.size as u8, shift: g.shift as u8 });
            let scale = i.memory_index_scale();
            let v = if scale == 1 { v } else { self.b.ins().ishl_imm_s(v, scale.trailing_zeros() as i64) };
            a = Some(match a {
                Some(x) => self.b.ins().iadd(x, v),
                None => v,
            });
        }
        let disp = i.memory_displacement64() as i64;
        let a = match a {
            None => self.b.ins().iconst(I64, disp),
            Some(a) if disp == 0 => a,
            Some(a) => self.b.ins().iadd_imm_s(a, disp),
        };
        self.trunc(a, insn.asize as u32)
    }

    /// `a op b` at `size` bytes (a, b masked), with the flags the handler sets; the value to write
    /// back (`None` for CMP and TEST). `b` is ignored by INC and DEC.
    fn alu(&mut self, op: Op, a: Value, b: Value, size: u32, live: u64) -> Option<Value> {
        // Flags nothing reads are not computed (`liveness`).
        let live = live & kills(op) != 0;
        match op {
            Op::Add | Op::Sub | Op::Cmp => {
                let sub = op != Op::Add;
                let r = if sub { self.b.ins().isub(a, b) } else { self.b.ins().iadd(a, b) };
                let r = self.trunc(r, size);
                if live {
                    self.defer(Pending::Arith { a, b, r, size, sub, keep_cf: false });
                }
                (op != Op::Cmp).then_some(r)
            }
            Op::And | Op::Or | Op::Xor | Op::Test => {
                let r = match op {
                    Op::Or => self.b.ins().bor(a, b),
                    Op::Xor => self.b.ins().bxor(a, b),
                    _ => self.b.ins().band(a, b),
                };
                if live {
                    self.defer(Pending::Logic { r, size });
                }
                (op != Op::Test).then_some(r)
            }
            Op::Inc | Op::Dec => {
                let one = self.b.ins().iconst(I64, 1);
                let sub = op == Op::Dec;
                let r = if sub { self.b.ins().isub(a, one) } else { self.b.ins().iadd(a, one) };
                let r = self.trunc(r, size);
                if live {
                    // INC and DEC leave CF.
                    self.defer(Pending::Arith { a, b: one, r, size, sub, keep_cf: true });
                }
                Some(r)
            }
            Op::Ext(Ext::Adc(sub)) => Some(self.adc(sub, a, b, size, live)),
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
        self.trunc(v, to)
    }

    /// Emits an inlined instruction without a memory operand (branches are the caller's).
    pub(crate) fn emit(&mut self, insn: &Insn, op: Op, live: u64) {
        let before = self.regs.pending;
        self.emit_form(insn, op, live);
        self.regs.pending.overwritten(&before, kills(op));
    }

    /// `emit` without the bookkeeping of overwritten pending flags.
    fn emit_form(&mut self, insn: &Insn, op: Op, live: u64) {
        if op == Op::Nop {
            return;
        }
        if let Op::Ext(e) = op {
            return self.emit_ext(insn, e, live);
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
                let v = self.trunc(v, size);
                self.write(d, v);
            }
            Op::Shift(sop, cnt) => {
                let a = self.read(d);
                if cnt == 0 {
                    // Nothing changes, but a 32-bit destination is still written (zero-extended).
                    self.write(d, a);
                    return;
                }
                let n = size * 8;
                let r = match sop {
                    ShiftOp::Shl => self.b.ins().ishl_imm_s(a, cnt as i64),
                    ShiftOp::Shr => self.b.ins().ushr_imm_s(a, cnt as i64),
                    ShiftOp::Sar => {
                        let x = self.sext(a, size, 8);
                        self.b.ins().sshr_imm_s(x, cnt as i64)
                    }
                    ShiftOp::Rol | ShiftOp::Ror => {
                        let rc = cnt % n;
                        let rc = if sop == ShiftOp::Ror && rc != 0 { n - rc } else { rc };
                        if rc == 0 {
                            a
                        } else {
                            let hi = self.b.ins().ishl_imm_s(a, rc as i64);
                            let lo = self.b.ins().ushr_imm_s(a, (n - rc) as i64);
                            self.b.ins().bor(hi, lo)
                        }
                    }
                    _ => unreachable!("{sop:?} is not inlined"),
                };
                let r = self.trunc(r, size);
                // The flags computed where read (`lower_shift.rs`).
                self.defer_shift(sop, size, a, r, lower_shift::Count::Imm(cnt), live);
                self.write(d, r);
            }
            Op::Neg => {
                let a = self.read(d);
                let zero = self.b.ins().iconst(I64, 0);
                let r = self.b.ins().isub(zero, a);
                let r = self.trunc(r, size);
                // `ops::flags_sub(0, a, 0, r)`.
                if live & kills(op) != 0 {
                    self.defer(Pending::Arith { a: zero, b: a, r, size, sub: true, keep_cf: false });
                }
                self.write(d, r);
            }
            Op::Not => {
                let a = self.read(d);
                let r = self.b.ins().bxor_imm_s(a, mask(size));
                self.write(d, r);
            }
            Op::Setcc(cc) => {
                let c = self.cond(cc);
                let v = self.b.ins().uextend(I64, c);
                self.write(d, v);
            }
            Op::Cmov(cc) => {
                // The source is read whatever the condition; a 32-bit destination is written
                // (zero-extended) even when it is false.
                let v = self.operand(insn.op[1], size);
                let cur = self.read(d);
                let c = self.cond(cc);
                let v = self.b.ins().select(c, v, cur);
                self.write(d, v);
            }
            Op::Imul => {
                let (a, b) = if insn.i.op_count() == 2 {
                    (self.read(d), self.operand(insn.op[1], size))
                } else {
                    let a = self.operand(insn.op[1], size);
                    (a, self.b.ins().iconst(I64, (insn.i.immediate(2) as i64) & mask(size)))
                };
                let r = if size == 8 {
                    self.b.ins().imul(a, b)
                } else {
                    let x = self.sext(a, size, 8);
                    let y = self.sext(b, size, 8);
                    let p = self.b.ins().imul(x, y);
                    self.trunc(p, size)
                };
                if live & flags::ARITH != 0 {
                    // Its flags are computed only where read (a memory form after it reads them
                    // only on its slow path), from RFLAGS made current here (`Pending::Imul`).
                    self.materialize();
                    self.defer(Pending::Imul { a, b, size });
                }
                self.write(d, r);
            }
            _ => {
                // XOR r, r and SUB r, r (the compilers' zeroing idioms) are the operation on 0 and
                // 0 whatever the register holds: the result is 0, and so are the operands' parts in
                // the flags (SUB: no borrow; AF and OF from `a ^ b`, which is 0), so the register
                // is not read.
                let (a, b) = if matches!(op, Op::Xor | Op::Sub) && insn.op[1] == Opnd::Reg(d) {
                    let zero = self.b.ins().iconst(I64, 0);
                    (zero, zero)
                } else {
                    let a = self.read(d);
                    (a, if matches!(op, Op::Inc | Op::Dec) { a } else { self.operand(insn.op[1], size) })
                };
                if let Some(r) = self.alu(op, a, b, size, live) {
                    self.write(d, r);
                }
            }
        }
    }

    /// The linear address of a memory form's access.
    fn lin(&mut self, insn: &Insn, form: Form) -> Value {
        if form.mem == Mem::Stack {
            // LEAVE pops from RBP (`lower_sys.rs`).
            let sp = self.load_gpr(if form.op == Op::Sys(lower_sys::Sys::Leave) { 5 } else { 4 });
            return if form.writes() { self.b.ins().iadd_imm_s(sp, -8) } else { sp };
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
        if form.mem == Mem::Stack { lower_mem::stack_bytes(insn) } else { insn.i.memory_size().size() as u32 }
    }

    /// The interpreter's fast path for a memory form's access (`Ctx::seg_lin`, `check_alignment`,
    /// `tlb_lookup` and `read_lin_as`/`write_lin_as` when they go straight to a host page): returns
    /// (taken, host address). When not taken, the handler must run the instruction.
    #[allow(dead_code)] // the form without a per-instruction cache, for forms outside loops
    pub(crate) fn probe(
        &mut self,
        insn: &Insn,
        form: Form,
        tlb: Value,
        user_tag: Value,
        slow: Block,
    ) -> Value {
        self.probe_cached(insn, form, tlb, user_tag, slow, None)
    }

    /// [`Self::probe`], first looking in `cache` (variables holding the linear and host page of an
    /// earlier hit of this instruction, linear page 1 for none), which a TLB hit refills.
    pub(crate) fn probe_cached(
        &mut self,
        insn: &Insn,
        form: Form,
        tlb: Value,
        user_tag: Value,
        slow: Block,
        cache: Option<(Variable, Variable)>,
    ) -> Value {
        if let Op::Sse(s) = form.op {
            self.sse_guard(s, slow);
        }
        if form.mem == Mem::Guard {
            // Nothing to probe: the form's own check branches to `slow`.
            return self.b.ins().iconst(I64, 0);
        }
        let size = Self::access_size(insn, form);
        let lin = self.lin_checked(insn, form, slow);
        if let Op::Sse(_) = form.op {
            self.sse_align(insn, lin, slow);
        }
        let off = self.b.ins().band_imm_s(lin, 0xfff);
        let done = self.b.create_block();
        let base = self.b.append_block_param(done, I64);
        // The cache holds the linear page of an earlier inline access of this instruction (1,
        // which is no page, when empty) and its host page. When it is still the constant 1 here
        // (the block's first access through it), it cannot hit: no compare is emitted.
        if let Some((ct, ch)) = cache.filter(|&(ct, _)| {
            let t = self.b.use_var(ct);
            !self.is_iconst(t, 1)
        }) {
            // The privilege and AC cannot have changed since (they are constant in a run of
            // generated code), so a hit is an access within that page: the same page, and not
            // crossing its end (the TLB's slot/tag pair catches a crossing; a single entry has no
            // slot, so it is checked here; a 1-byte access cannot cross).
            let hit = self.b.create_block();
            let miss = self.b.create_block();
            self.b.set_cold_block(miss);
            let lin_page = self.b.ins().band_imm_s(lin, !0xfff);
            let t = self.b.use_var(ct);
            let same = self.b.ins().icmp(IntCC::Equal, t, lin_page);
            if size == 1 {
                self.b.ins().brif(same, hit, &[], miss, &[]);
            } else {
                // Two compare-and-branches (the first tier does not fuse a `band` of two compares).
                let within = self.b.create_block();
                self.b.ins().brif(same, within, &[], miss, &[]);
                self.b.seal_block(within);
                self.b.switch_to_block(within);
                let inside =
                    self.b.ins().icmp_imm_s(IntCC::UnsignedLessThanOrEqual, off, 0x1000 - size as i64);
                self.b.ins().brif(inside, hit, &[], miss, &[]);
            }
            self.b.seal_block(hit);
            self.b.seal_block(miss);
            self.b.switch_to_block(hit);
            let h = self.b.use_var(ch);
            self.b.ins().jump(done, &[h.into()]);
            self.b.switch_to_block(miss);
        }
        // One tag compare covers what the interpreter checks before its fast path:
        // - canonical form: the TLB never caches a non-canonical page (`Ctx::tlb_fill`), so a
        //   non-canonical `lin` cannot match (an access that crosses from a non-canonical page into
        //   a canonical one crosses a page, below);
        // - alignment: `user_tag` (`Mmu::access_tag`) has bit 2 set when the interpreter may
        //   have to check it (RFLAGS.AC, CR0.AM, CPL 3), which no stored tag has;
        // - the TLB entry: tag = page | 2 | user. The page is that of the access's last byte: an
        //   access that crosses into the next page has a tag that cannot be in `lin`'s slot (the
        //   next page has the next slot), so it takes the slow path, which splits it.
        let end = if size == 1 { lin } else { self.b.ins().iadd_imm_s(lin, size as i64 - 1) };
        let page = self.b.ins().band_imm_s(end, !0xfff);
        let tag = self.b.ins().bor(page, user_tag);
        let ent = self.tlb_slot(tlb, lin);
        let table = if form.writes() { offset_of!(Tlb, write) } else { offset_of!(Tlb, read) };
        let etag = self.b.ins().load(I64, MF, ent, (table + offset_of!(TlbEntry, tag)) as i32);
        let hit = self.b.ins().icmp(IntCC::Equal, etag, tag);
        // Way 0, else way 1 (`TLB_SIZE` entries on, in a cold block): a lookup only, as the
        // interpreter's `tlb_lookup` on a hit, so the TLB is left as it was. Without it, a page that a
        // fill had moved to way 1 stayed there (entries move only on fills) and every inline access to
        // it ran its handler: 27 M loads and 19 M stores of a Linux boot. Both branches pass the
        // entry straight to `found` (no block of their own that only jumps on).
        let way1 = self.b.create_block();
        let found = self.b.create_block();
        let at = self.b.append_block_param(found, I64);
        self.b.set_cold_block(way1);
        self.b.ins().brif(hit, found, &[ent.into()], way1, &[]);
        self.b.seal_block(way1);
        self.b.switch_to_block(way1);
        const WAY1: usize = TLB_SIZE * std::mem::size_of::<TlbEntry>();
        let etag1 = self.b.ins().load(I64, MF, ent, (WAY1 + table + offset_of!(TlbEntry, tag)) as i32);
        let hit1 = self.b.ins().icmp(IntCC::Equal, etag1, tag);
        let ent1 = self.b.ins().iadd_imm_s(ent, WAY1 as i64);
        self.b.ins().brif(hit1, found, &[ent1.into()], slow, &[]);
        self.b.seal_block(found);
        self.b.switch_to_block(found);
        let ehost = self.b.ins().load(I64, MF, at, (table + offset_of!(TlbEntry, host)) as i32);
        let has_host = self.b.ins().icmp_imm_s(IntCC::NotEqual, ehost, 0);
        self.or_slow(has_host, slow);
        if let Some((ct, ch)) = cache {
            // A TLB hit: the access is within the page (`page` is also `lin`'s page).
            self.b.def_var(ct, page);
            self.b.def_var(ch, ehost);
        }
        self.b.ins().jump(done, &[ehost.into()]);
        self.b.seal_block(done);
        self.b.switch_to_block(done);
        self.b.ins().iadd(base, off)
    }

    /// The address of `lin`'s slot in the TLB arrays at `tlb` (add a table's offset):
    /// `tlb + cpu::mem::tlb_index(lin) * size_of::<TlbEntry>()`, the page number plus the page
    /// number shifted down by `TLB_FOLD`, scaled and masked (the entry's size is a power of two below a page).
    pub(crate) fn tlb_slot(&mut self, tlb: Value, lin: Value) -> Value {
        const ENTRY: usize = std::mem::size_of::<TlbEntry>();
        const _: () = assert!(ENTRY.is_power_of_two() && ENTRY < 0x1000 && TLB_SIZE.is_power_of_two());
        let page = self.b.ins().ushr_imm_s(lin, 12);
        let high = self.b.ins().ushr_imm_s(lin, 12 + cpu::mem::TLB_FOLD as i64);
        let sum = self.b.ins().iadd(page, high);
        let at = self.b.ins().ishl_imm_s(sum, ENTRY.trailing_zeros() as i64);
        let at = self.b.ins().band_imm_s(at, ((TLB_SIZE - 1) * ENTRY) as i64);
        self.b.ins().iadd(tlb, at)
    }

    /// Whether `v` is the constant `k` (an `iconst` in the function being built).
    fn is_iconst(&self, v: Value, k: i64) -> bool {
        use cranelift_codegen::ir::{InstructionData, Opcode, ValueDef};
        let dfg = &self.b.func.dfg;
        match dfg.value_def(v) {
            ValueDef::Result(inst, _) => matches!(
                dfg.insts[inst],
                InstructionData::UnaryImm { opcode: Opcode::Iconst, imm } if imm.bits() == k
            ),
            _ => false,
        }
    }

    /// Continues in a new block when `ok`, else branches to `slow`.
    fn or_slow(&mut self, ok: Value, slow: Block) {
        let next = self.b.create_block();
        self.b.ins().brif(ok, next, &[], slow, &[]);
        self.b.switch_to_block(next);
        self.b.seal_block(next);
    }

    /// The low bits of the TLB tags of this block's accesses (`cpu::mem::access_tag`: `2 | user`,
    /// `| 4`, which no stored tag has, when the interpreter may have to check alignment), loaded
    /// from `Mmu::access_tag` at `mmu`, which the handlers keep up to date. It cannot change inside a
    /// block (or a loop of it): CPL, RFLAGS.AC and CR0 change only in instructions that end the
    /// block (far transfers, IRET, POPF, SYSCALL/SYSRET, MOV CR0, task switches) or in event delivery.
    pub(crate) fn user_tag(&mut self, mmu: Value) -> Value {
        let at = std::mem::offset_of!(cpu::mem::Mmu, access_tag) as i32;
        self.b.ins().load(I64, MF, mmu, at)
    }

    fn host_load(&mut self, host: Value, size: u32) -> Value {
        let v = self.b.ins().load(ty_of(size), HOST, host, 0);
        if size < 8 { self.b.ins().uextend(I64, v) } else { v }
    }

    fn host_store(&mut self, host: Value, v: Value, size: u32) {
        let v = if size < 8 { self.b.ins().ireduce(ty_of(size), v) } else { v };
        self.b.ins().store(HOST, v, host, 0);
    }

    /// CALL/RET once [`Self::probe`] succeeded (`host` addresses the stack slot): the push or pop
    /// (`ops::push`/`pop` of 8 bytes) and the new RIP, which for RET must be canonical
    /// (`control::branch_to`), else the handler runs it (and raises #GP).
    pub(crate) fn emit_call_ret(
        &mut self,
        insn: &Insn,
        form: Form,
        host: Value,
        slow: Block,
        tlb: Value,
        user_tag: Value,
    ) -> Value {
        if form.mem == Mem::Src || insn.i.code_size() != CodeSize::Code64 {
            return self.emit_branch(insn, form, host, slow, tlb, user_tag);
        }
        if form.op == Op::JmpInd {
            // `control::jmp`: the register's value, which must be canonical (`branch_to`).
            let Opnd::Reg(g) = insn.op[0] else { unreachable!() };
            let t = self.read(g);
            let x = self.b.ins().ishl_imm_s(t, 16);
            let x = self.b.ins().sshr_imm_s(x, 16);
            let canonical = self.b.ins().icmp(IntCC::Equal, x, t);
            self.or_slow(canonical, slow);
            return t;
        }
        let sp = self.load_gpr(4);
        if form.op == Op::Call {
            // CALL r64: a non-canonical target is the handler's #GP, before anything is pushed.
            let target = if let Opnd::Reg(g) = insn.op[0] {
                let t = self.read(g);
                let x = self.b.ins().ishl_imm_s(t, 16);
                let x = self.b.ins().sshr_imm_s(x, 16);
                let canonical = self.b.ins().icmp(IntCC::Equal, x, t);
                self.or_slow(canonical, slow);
                Some(t)
            } else {
                None
            };
            let ret = self.b.ins().iconst(I64, insn.next_rip as i64);
            self.host_store(host, ret, 8);
            let sp = self.b.ins().iadd_imm_s(sp, -8);
            self.store_gpr(4, sp);
            target.unwrap_or_else(|| self.b.ins().iconst(I64, insn.i.near_branch_target() as i64))
        } else {
            let t = self.host_load(host, 8);
            let x = self.b.ins().ishl_imm_s(t, 16);
            let x = self.b.ins().sshr_imm_s(x, 16);
            let canonical = self.b.ins().icmp(IntCC::Equal, x, t);
            self.or_slow(canonical, slow);
            let sp = self.b.ins().iadd_imm_s(sp, 8);
            self.store_gpr(4, sp);
            t
        }
    }

    /// Emits a memory form's operation once [`Self::probe`] succeeded (`host` addresses the access).
    pub(crate) fn emit_mem(&mut self, insn: &Insn, form: Form, host: Value, live: u64, slow: Block) {
        match form.op {
            Op::Sse(s) => return self.emit_sse(insn, s, form.mem, host),
            Op::Ext(e @ (Ext::Div(_) | Ext::Cmpxchg | Ext::Xadd | Ext::Bt(_) | Ext::Movbe)) => {
                return self.emit_ext_mem(insn, e, form, host, live, slow);
            }
            Op::Cmov(_) | Op::Setcc(_) => return self.emit_cc_mem(insn, form, host),
            Op::Sys(s) => return self.emit_sys(insn, s, host, slow),
            _ => {}
        }
        let msize = Self::access_size(insn, form);
        match form.mem {
            Mem::Stack if insn.i.code_size() != CodeSize::Code64 => self.emit_stack32(insn, form, host),
            Mem::Stack => {
                let sp = self.load_gpr(4);
                if form.op == Op::Push {
                    // The register is read before RSP moves (PUSH RSP pushes the old value).
                    let v = match insn.op[0] {
                        Opnd::Reg(d) => self.load_gpr(d.index),
                        Opnd::Imm(x) => self.b.ins().iconst(I64, x as i64),
                        _ => unreachable!("inline_form admits PUSH r64 and PUSH imm only"),
                    };
                    self.host_store(host, v, 8);
                    let sp = self.b.ins().iadd_imm_s(sp, -8);
                    self.store_gpr(4, sp);
                } else {
                    let Opnd::Reg(d) = insn.op[0] else { unreachable!() };
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
                        if let Some(r) = self.alu(op, a, m, size, live) {
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
                if let Some(r) = self.alu(form.op, a, b, msize, live) {
                    self.host_store(host, r, msize);
                }
            }
            Mem::None | Mem::Guard => unreachable!(),
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

/// The guest's general registers in Cranelift variables while a block runs: a register is loaded
/// from `CpuState` at its first use, and written back (if it changed) before anything that can
/// observe `CpuState` (a handler call, the exit). The masks are compile-time state: what holds at
/// the point being emitted.
pub(crate) struct Regs {
    vars: [Variable; 16],
    /// Registers whose variable holds the current value.
    pub in_var: u16,
    /// Registers whose variable is newer than `CpuState` (a subset of `in_var`).
    pub dirty: u16,
    /// The last flag-writing operations, not computed into RFLAGS yet (lazy flags: their operands
    /// are kept, and the flags computed where something may read them).
    pub pending: PendingSet,
    /// What the forms of `lower_sys.rs` need of the function being built (`None`: they run
    /// their handler).
    pub sys: Option<SysEnv>,
}

/// Flag computations kept for later: up to two operations, the older one owning only the flags the
/// newer one does not write (INC/DEC after SUB: the SUB's CF, the DEC's others). The flags outside
/// their masks are current in the RFLAGS variable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct PendingSet([Option<(Pending, u64)>; 2]);

impl PendingSet {
    /// After an instruction that writes the flags in `written` whatever their old value: an
    /// operation that was pending before it (in `before`) no longer owns them. A form whose flags
    /// are dead after it defers nothing (`liveness`), so without this an older operation, or a
    /// predecessor's incoming state, would stay the owner of flags nobody reads, and be computed
    /// (through the accessor, for an incoming one) where a later form needs RFLAGS current.
    fn overwritten(&mut self, before: &PendingSet, written: u64) {
        if written == 0 {
            return;
        }
        for e in self.0.iter_mut() {
            if let Some((p, m)) = e
                && before.0.iter().flatten().any(|(q, _)| q == p)
            {
                *m &= !written;
                if *m == 0 {
                    *e = None;
                }
            }
        }
        if self.0[0].is_none() {
            self.0.swap(0, 1);
        }
    }

    /// The pending operation that owns flag `f`, if any.
    fn owner(&self, f: u64) -> Option<Pending> {
        self.0.iter().flatten().find(|(_, m)| m & f != 0).map(|(p, _)| *p)
    }
}

/// A flag computation kept for later (see `Regs::pending`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pending {
    /// ADD/SUB/CMP, or INC/DEC (`keep_cf`, `b` = 1): `ops::flags_add`/`flags_sub` of `a`, `b`,
    /// result `r`, which is always `a + b` or `a - b` truncated to `size` (a carried one is remade
    /// from `a` and `b`).
    Arith { a: Value, b: Value, r: Value, size: u32, sub: bool, keep_cf: bool },
    /// ADC (`sub` false) or SBB: `ops::flags_add`/`flags_sub` of `a`, `b` and the carry in `c`
    /// (0 or 1), result `r` = `a + b + c` or `a - b - c` truncated to `size` (a carried one
    /// recovers `c` from `a`, `b` and `r`).
    Adc { a: Value, b: Value, c: Value, r: Value, size: u32, sub: bool },
    /// AND/OR/XOR/TEST: SF, ZF, PF of `r`; CF, OF, AF cleared.
    Logic { r: Value, size: u32 },
    /// ROL/ROR/SHL/SHR/SAR of a register (`lower_shift.rs`).
    Shift(lower_shift::ShiftFlags),
    /// At the top of a self-loop: the operation its back edge left pending, whose operands are in
    /// variables, when `on` is nonzero (else RFLAGS is current).
    Carried(Carry),
    /// At a block's entry: the lazy flag state a linked predecessor left (`kind`, its kind word,
    /// taken from `CpuState`; 0: none, RFLAGS is current), computed by `lazy_flags`.
    Incoming { kind: Value },
    /// IMUL r, r/m or r, r/m, imm of `a` by `b` at `size` bytes: the interpreter's vendor-dependent
    /// `mul_flags` through `imul_flags`, applied to RFLAGS as it is where computed. It owns every
    /// arithmetic flag (Intel writes them all; AMD keeps SF, ZF, AF, PF), and RFLAGS was made
    /// current before it was deferred, so the flags it owns and AMD keeps are still RFLAGS' own
    /// there (only a flag's owner writes it into RFLAGS).
    Imul { a: Value, b: Value, size: u32 },
}

/// What kind of flag computation a self-loop's back edge hands to the next iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CarryKind {
    /// `Pending::Arith`.
    Arith { size: u32, sub: bool, keep_cf: bool },
    /// `Pending::Logic`.
    Logic { size: u32 },
    /// `Pending::Adc` (its operands and result carried, the carry in recovered from them).
    Adc { size: u32, sub: bool },
    /// `Pending::Shift` by an immediate (nothing kept from before it).
    Shift { op: ShiftOp, size: u32, cnt: u32 },
}

/// The variables that carry a pending flag computation across a self-loop's back edge (most loops
/// end in CMP/Jcc or DEC/Jcc and start with a memory access, whose slow path may need every flag:
/// computing them at each back edge cost about half of a memory-walking loop's host instructions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Carry {
    /// Nonzero when the operation below is pending (0 on the loop's first iteration).
    pub on: Variable,
    /// Its operands and result (those the kind uses).
    pub a: Variable,
    pub b: Variable,
    pub r: Variable,
    /// Its kind (the same at every back edge: decided by a first build of the block).
    pub kind: CarryKind,
}

impl CarryKind {
    /// Which of `a`, `b`, `r` its carried operation keeps in variables (fewer values live around
    /// the loop): ADD/SUB/CMP their operands (the result is remade), INC/DEC the one operand, a
    /// logic op its result, a shift its operand and result.
    fn carries(self) -> (bool, bool, bool) {
        match self {
            CarryKind::Arith { keep_cf, .. } => (true, !keep_cf, false),
            CarryKind::Logic { .. } => (false, false, true),
            CarryKind::Adc { .. } => (true, true, true),
            CarryKind::Shift { .. } => (true, false, true),
        }
    }
}

impl PendingSet {
    /// The state at a self-loop's top when `c` carries the flags in `mask`.
    pub(crate) fn carried(c: Carry, mask: u64) -> Self {
        PendingSet([Some((Pending::Carried(c), mask)), None])
    }
}

impl Pending {
    /// The flags it writes.
    fn mask(self) -> u64 {
        match self {
            Pending::Arith { keep_cf: true, .. } => flags::ARITH & !flags::CF,
            Pending::Shift(s) => s.mask(),
            Pending::Carried(c) => match c.kind {
                CarryKind::Arith { keep_cf: true, .. } => flags::ARITH & !flags::CF,
                CarryKind::Shift { op, .. } => lower_shift::ShiftFlags::mask_of(op),
                _ => flags::ARITH,
            },
            _ => flags::ARITH,
        }
    }

    /// Its kind and operands `(a, b, r)` when it can be carried across a back edge.
    fn carry_kind(self) -> Option<(CarryKind, Value, Value, Value)> {
        match self {
            Pending::Arith { a, b, r, size, sub, keep_cf } => {
                Some((CarryKind::Arith { size, sub, keep_cf }, a, b, r))
            }
            Pending::Logic { r, size } => Some((CarryKind::Logic { size }, r, r, r)),
            Pending::Adc { a, b, r, size, sub, .. } => Some((CarryKind::Adc { size, sub }, a, b, r)),
            Pending::Shift(s) => match (s.cnt, s.old) {
                (lower_shift::Count::Imm(cnt), None) => {
                    Some((CarryKind::Shift { op: s.op, size: s.size, cnt }, s.a, s.a, s.r))
                }
                _ => None,
            },
            Pending::Carried(_) | Pending::Incoming { .. } | Pending::Imul { .. } => None,
        }
    }

    /// The result whose ZF (zero or not) this operation's ZF is, if it always is.
    fn zf_result(self) -> Option<Value> {
        match self {
            Pending::Arith { r, .. } | Pending::Logic { r, .. } | Pending::Adc { r, .. } => Some(r),
            Pending::Shift(s) if s.zf_of_result() => Some(s.r),
            Pending::Shift(_) | Pending::Carried(_) | Pending::Incoming { .. } | Pending::Imul { .. } => None,
        }
    }
}

impl Regs {
    /// Declares the variables; nothing is held yet.
    pub(crate) fn new(b: &mut FunctionBuilder<'_>) -> Self {
        Regs {
            vars: std::array::from_fn(|_| b.declare_var(I64)),
            in_var: 0,
            dirty: 0,
            pending: PendingSet::default(),
            sys: None,
        }
    }

    fn get(&mut self, b: &mut FunctionBuilder<'_>, st: Value, index: u8) -> Value {
        let bit = 1u16 << index;
        if self.in_var & bit == 0 {
            let v = b.ins().load(I64, MF, st, cpu::offsets::gpr(index as usize) as i32);
            b.def_var(self.vars[index as usize], v);
            self.in_var |= bit;
        }
        b.use_var(self.vars[index as usize])
    }

    fn set(&mut self, b: &mut FunctionBuilder<'_>, index: u8, v: Value) {
        b.def_var(self.vars[index as usize], v);
        self.in_var |= 1 << index;
        self.dirty |= 1 << index;
    }

    /// Writes the changed registers back to `CpuState`.
    pub(crate) fn flush(&mut self, b: &mut FunctionBuilder<'_>, st: Value) {
        for k in 0..16 {
            if self.dirty & (1 << k) != 0 {
                let v = b.use_var(self.vars[k]);
                b.ins().store(MF, v, st, cpu::offsets::gpr(k) as i32);
            }
        }
        self.dirty = 0;
    }

    /// Loads the registers in `mask` from `CpuState` into their variables.
    pub(crate) fn load(&mut self, b: &mut FunctionBuilder<'_>, st: Value, mask: u16) {
        for k in 0..16 {
            if mask & (1 << k) != 0 {
                let v = b.ins().load(I64, MF, st, cpu::offsets::gpr(k) as i32);
                b.def_var(self.vars[k], v);
            }
        }
        self.in_var |= mask;
    }

    /// After something that may have changed any register in `CpuState` (a handler): nothing held.
    pub(crate) fn forget(&mut self) {
        debug_assert_eq!(self.dirty, 0, "registers must be flushed before a handler runs");
        self.in_var = 0;
    }
}

/// The general registers `insns` read or write (iced's table), as a mask of indices.
pub(crate) fn used_gprs(insns: &[Insn]) -> u16 {
    let mut f = iced_x86::InstructionInfoFactory::new();
    let mut mask = 0u16;
    for insn in insns {
        for u in f.info(&insn.i).used_registers() {
            if let Some(g) = cpu::regs::gpr(u.register()) {
                mask |= 1 << g.index;
            }
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(n: u32) -> Value {
        Value::from_u32(n)
    }

    #[test]
    fn overwritten_flags_leave_older_pending_operations() {
        let incoming = Pending::Incoming { kind: val(1) };
        let before = PendingSet([Some((incoming, flags::ARITH)), None]);
        // A SUB whose flags are dead after it deferred nothing: the incoming state owns nothing now.
        let mut set = before;
        set.overwritten(&before, flags::ARITH);
        assert_eq!(set, PendingSet::default());
        // DEC (all but CF), dead: the incoming state keeps CF alone.
        let mut set = before;
        set.overwritten(&before, flags::ARITH & !flags::CF);
        assert_eq!(set, PendingSet([Some((incoming, flags::CF)), None]));
        // A live SUB deferred itself (defer masked the older one): the new one keeps its flags, and
        // it moves first when the older one is gone.
        let sub = Pending::Arith { a: val(2), b: val(3), r: val(4), size: 4, sub: true, keep_cf: false };
        let mut set = PendingSet([None, Some((sub, flags::ARITH))]);
        set.overwritten(&before, flags::ARITH);
        assert_eq!(set, PendingSet([Some((sub, flags::ARITH)), None]));
    }
}
