//! Instructions the JIT lowers to Cranelift IR instead of calling their handler: register and
//! immediate forms that cannot fault and touch only general registers, RFLAGS' arithmetic flags and
//! the next RIP. Each lowering restates its handler's semantics (`cpu::exec::alu`, `cpu::exec::ops`
//! `flags_add`/`flags_sub`/`szp`, `cpu::regs::write_gpr`, `cpu::exec::control::jcc`), and
//! `tests/differential.rs` runs random sequences of every form here under both engines and requires
//! identical states.

use cpu::exec::{Insn, Opnd, RegOp};
use cpu::state::flags;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types::I64};
use cranelift_frontend::FunctionBuilder;
use iced_x86::{CodeSize, EncodingKind, Mnemonic, OpKind, Register};

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
}

/// Whether (and as what) `insn` is lowered inline.
pub(crate) fn inline_op(insn: &Insn) -> Option<Op> {
    let i = &insn.i;
    if i.code().op_code().encoding() != EncodingKind::Legacy || i.has_lock_prefix() {
        return None;
    }
    let reg0 = matches!(insn.op[0], Opnd::Reg(_));
    let src = matches!(insn.op[1], Opnd::Reg(_) | Opnd::Imm(_));
    let m = i.mnemonic();
    let op = match m {
        Mnemonic::Nop => return Some(Op::Nop),
        Mnemonic::Jmp
        | Mnemonic::Jo
        | Mnemonic::Jno
        | Mnemonic::Jb
        | Mnemonic::Jae
        | Mnemonic::Je
        | Mnemonic::Jne
        | Mnemonic::Jbe
        | Mnemonic::Ja
        | Mnemonic::Js
        | Mnemonic::Jns
        | Mnemonic::Jp
        | Mnemonic::Jnp
        | Mnemonic::Jl
        | Mnemonic::Jge
        | Mnemonic::Jle
        | Mnemonic::Jg => {
            // Only 64-bit code, where the target needs no CS-limit check, only a canonical one,
            // which is decided here from the constant target.
            if i.code_size() != CodeSize::Code64
                || i.op0_kind() != OpKind::NearBranch64
                || !cpu::mem::is_canonical(i.near_branch_target())
            {
                return None;
            }
            return Some(Op::Branch((m != Mnemonic::Jmp).then(|| cpu::exec::ops::cc_of(insn))));
        }
        Mnemonic::Mov if reg0 && src && i.op_count() == 2 => Op::Mov,
        Mnemonic::Movzx if reg0 && matches!(insn.op[1], Opnd::Reg(_)) => Op::Movzx,
        Mnemonic::Movsx if reg0 && matches!(insn.op[1], Opnd::Reg(_)) => Op::Movsx,
        Mnemonic::Movsxd if reg0 && matches!(insn.op[1], Opnd::Reg(_)) && insn.osize == 8 => Op::Movsx,
        Mnemonic::Lea if reg0 && insn.op[1] == Opnd::Mem && lea_regs_ok(insn) => Op::Lea,
        Mnemonic::Add if reg0 && src => Op::Add,
        Mnemonic::Sub if reg0 && src => Op::Sub,
        Mnemonic::Cmp if reg0 && src => Op::Cmp,
        Mnemonic::And if reg0 && src => Op::And,
        Mnemonic::Or if reg0 && src => Op::Or,
        Mnemonic::Xor if reg0 && src => Op::Xor,
        Mnemonic::Test if reg0 && src => Op::Test,
        Mnemonic::Inc if reg0 && i.op_count() == 1 => Op::Inc,
        Mnemonic::Dec if reg0 && i.op_count() == 1 => Op::Dec,
        _ => return None,
    };
    Some(op)
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

    /// Emits a non-branch inlined instruction.
    pub(crate) fn emit(&mut self, insn: &Insn, op: Op) {
        let Opnd::Reg(d) = insn.op[0] else {
            debug_assert_eq!(op, Op::Nop);
            return;
        };
        let size = d.size as u32;
        let arith = flags::ARITH;
        match op {
            Op::Nop | Op::Branch(_) => {}
            Op::Mov => {
                let v = self.operand(insn.op[1], size);
                self.write(d, v);
            }
            Op::Movzx | Op::Movsx => {
                let Opnd::Reg(s) = insn.op[1] else { unreachable!() };
                let v = self.read(s);
                let v = if op == Op::Movsx && s.size < 8 {
                    // Sign-extend from the source's width, then cut to the destination's.
                    let sh = 64 - 8 * s.size as i64;
                    let x = self.b.ins().ishl_imm_s(v, sh);
                    self.b.ins().sshr_imm_s(x, sh)
                } else {
                    v
                };
                let v = if size < 8 { self.b.ins().band_imm_s(v, mask(size)) } else { v };
                self.write(d, v);
            }
            Op::Lea => {
                let v = self.ea(insn);
                let v = if size < 8 { self.b.ins().band_imm_s(v, mask(size)) } else { v };
                self.write(d, v);
            }
            Op::Add | Op::Sub | Op::Cmp => {
                let a = self.read(d);
                let b = self.operand(insn.op[1], size);
                let sub = op != Op::Add;
                let r = if sub { self.b.ins().isub(a, b) } else { self.b.ins().iadd(a, b) };
                let r = if size < 8 { self.b.ins().band_imm_s(r, mask(size)) } else { r };
                let f = self.arith_flags(a, b, r, size, sub);
                if op != Op::Cmp {
                    self.write(d, r);
                }
                self.set_flags(f, arith);
            }
            Op::And | Op::Or | Op::Xor | Op::Test => {
                let a = self.read(d);
                let b = self.operand(insn.op[1], size);
                let r = match op {
                    Op::Or => self.b.ins().bor(a, b),
                    Op::Xor => self.b.ins().bxor(a, b),
                    _ => self.b.ins().band(a, b),
                };
                let f = self.szp(r, size);
                if op != Op::Test {
                    self.write(d, r);
                }
                self.set_flags(f, arith);
            }
            Op::Inc | Op::Dec => {
                let a = self.read(d);
                let one = self.b.ins().iconst(I64, 1);
                let sub = op == Op::Dec;
                let r = if sub { self.b.ins().isub(a, one) } else { self.b.ins().iadd(a, one) };
                let r = if size < 8 { self.b.ins().band_imm_s(r, mask(size)) } else { r };
                let f = self.arith_flags(a, one, r, size, sub);
                // INC and DEC leave CF.
                let f = self.b.ins().band_imm_s(f, !(flags::CF as i64));
                self.write(d, r);
                self.set_flags(f, arith & !flags::CF);
            }
        }
    }
}
