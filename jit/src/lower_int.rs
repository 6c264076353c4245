//! More integer forms lowered inline (a child of `lower`, so it uses the same builder helpers): the
//! ones the guest CPU benchmark (`benches/guest/cpubench.c`) and the Linux kernel execute that
//! called their handler before. ADC/SBB (register, immediate and, in 64-bit code, memory forms),
//! XCHG r, r, BT/BTS/BTR/BTC r, r|imm, BSF/BSR r, r, TZCNT/LZCNT/POPCNT r, r, the one-operand
//! MUL/IMUL r, in 64-bit code BZHI r, r, r, PREFETCHh/PREFETCHW m (no effect: the handler's
//! `hint_nop`), BSWAP r32/r64 (with MOVBE's memory forms in `lower_mem.rs`) and MOV r, Sreg
//! (these four covered by `tests/differential_small.rs`), and LFENCE/MFENCE/SFENCE (no effect) and
//! CLD/STD (DF), also in `tests/differential_small.rs`.
//!
//! One source of semantics: the vendor-dependent flags of the multiplies and of TZCNT/LZCNT its `muldiv::mul_flags` and
//! `bits::count_zeros_flags`, called from generated code only
//! where the flags are live (as `imul_flags` is). What is restated in IR (the
//! results; ADC/SBB's flags, `ops::flags_add`/`flags_sub` with a carry in, left pending as a lazy
//! kind of their own (`Pending::Adc`, `cpu::lazyflags::OP_ADC`/`OP_SBB`); BT's CF; BSF/BSR's and
//! POPCNT's flags: none of them depends on the vendor; BZHI's, whose undefined PF is chosen at
//! run time from `CpuState::quirks` as `lower_shift.rs` does) is covered form by form by
//! `tests/differential.rs` under both vendors' quirks.

use super::{Form, Lower, Mem, Op, mask};
use cpu::exec::shift::Op as ShiftOp;
use cpu::exec::{Insn, Opnd, RegOp};
use cpu::state::flags;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{InstBuilder, Value};
use iced_x86::Mnemonic;

/// An inlined form of this file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ext {
    /// ADC (`false`) or SBB (`true`).
    Adc(bool),
    /// XCHG r, r.
    Xchg,
    /// BT (0), BTS (1), BTR (2), BTC (3) with a register destination.
    Bt(u8),
    /// BSF (`false`) or BSR (`true`) r, r.
    Bsf(bool),
    /// MUL (`false`) or IMUL (`true`) r: rDX:rAX (AX for bytes) = rAX * r.
    Mul(bool),
    /// TZCNT (0), LZCNT (1) or POPCNT (2) r, r.
    Cnt(u8),
    /// DIV (`false`) or IDIV (`true`) r/m (`lower_mem.rs`).
    Div(bool),
    /// CMPXCHG r/m, r (`lower_mem.rs`).
    Cmpxchg,
    /// XADD r/m, r (`lower_mem.rs`).
    Xadd,
    /// ROL/ROR/SHL/SHR/SAR of a register by CL (a count of 0 changes no flag).
    ShiftCl(ShiftOp),
    /// CBW/CWDE/CDQE (`false`: rAX = sign-extended half) or CWD/CDQ/CQO (`true`: rDX = rAX's
    /// sign), at this many bytes (`lower_mem.rs`).
    Cwd(bool, u8),
    /// BZHI r, r, r (BMI2, VEX-encoded, 64-bit code).
    Bzhi,
    /// BSWAP r32/r64 (BSWAP r16, undefined, stays with the handler).
    Bswap,
    /// MOVBE r, m (`Mem::Src`) or m, r (`Mem::Dst`) (`lower_mem.rs`).
    Movbe,
    /// MOV r, Sreg (the segment register's index in `CpuState::seg`).
    MovSreg(u8),
    /// CLD (`false`) or STD (`true`): RFLAGS.DF.
    DirFlag(bool),
}

impl Ext {
    /// The arithmetic flags it writes whatever the vendor (see `lower::kills`).
    pub(crate) fn kills(self) -> u64 {
        match self {
            Ext::Adc(_) | Ext::Bsf(_) | Ext::Cnt(2) | Ext::Cmpxchg | Ext::Xadd => flags::ARITH,
            // PF is the vendor's (parity or clear), but written by both.
            Ext::Bzhi => flags::ARITH,
            // AMD leaves OF alone.
            Ext::Cnt(_) => flags::ARITH & !flags::OF,
            Ext::Bt(_) => flags::CF,
            // AMD leaves SF, ZF, AF and PF alone.
            Ext::Mul(_) => flags::CF | flags::OF,
            // Intel leaves every flag after a divide.
            Ext::Xchg
            | Ext::Div(_)
            | Ext::ShiftCl(_)
            | Ext::Cwd(..)
            | Ext::Bswap
            | Ext::Movbe
            | Ext::MovSreg(_)
            | Ext::DirFlag(_) => 0,
        }
    }
}

/// Whether (and as what) `insn` is one of this file's forms (legacy encoding, no LOCK: checked by
/// the caller).
pub(crate) fn inline_ext(insn: &Insn) -> Option<Form> {
    let i = &insn.i;
    let reg = |n: usize| matches!(insn.op[n], Opnd::Reg(_));
    let plain = |e| Some(Form { op: Op::Ext(e), mem: Mem::None });
    match i.mnemonic() {
        Mnemonic::Adc | Mnemonic::Sbb if i.op_count() == 2 => {
            let e = Ext::Adc(i.mnemonic() == Mnemonic::Sbb);
            let src = matches!(insn.op[1], Opnd::Reg(_) | Opnd::Imm(_));
            // Memory forms as `lower::inline_op` admits them (`lower_mem::mem_ok`).
            let mem_ok = super::lower_mem::mem_ok(insn);
            if reg(0) && src {
                plain(e)
            } else if reg(0) && insn.op[1] == Opnd::Mem && mem_ok {
                Some(Form { op: Op::Ext(e), mem: Mem::Src })
            } else if insn.op[0] == Opnd::Mem && src && mem_ok {
                Some(Form { op: Op::Ext(e), mem: Mem::Dst })
            } else {
                None
            }
        }
        Mnemonic::Xchg if reg(0) && reg(1) => plain(Ext::Xchg),
        m @ (Mnemonic::Rol
        | Mnemonic::Ror
        | Mnemonic::Shl
        | Mnemonic::Sal
        | Mnemonic::Shr
        | Mnemonic::Sar)
            if reg(0)
                && matches!(insn.op[1], Opnd::Reg(g) if g.index == 1 && g.size == 1 && g.shift == 0) =>
        {
            plain(Ext::ShiftCl(match m {
                Mnemonic::Rol => ShiftOp::Rol,
                Mnemonic::Ror => ShiftOp::Ror,
                Mnemonic::Shr => ShiftOp::Shr,
                Mnemonic::Sar => ShiftOp::Sar,
                _ => ShiftOp::Shl,
            }))
        }
        m @ (Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc)
            if reg(0) && matches!(insn.op[1], Opnd::Reg(_) | Opnd::Imm(_)) =>
        {
            let k = match m {
                Mnemonic::Bt => 0,
                Mnemonic::Bts => 1,
                Mnemonic::Btr => 2,
                _ => 3,
            };
            plain(Ext::Bt(k))
        }
        // PREFETCHh/PREFETCHW: the handler (`misc::hint_nop`) does nothing (a prefetch never
        // faults, SDM Vol. 2B PREFETCHh); only where the decoder gave the block that handler
        // (a model without the form has the #UD handler there, which must run).
        Mnemonic::Prefetcht0
        | Mnemonic::Prefetcht1
        | Mnemonic::Prefetcht2
        | Mnemonic::Prefetchnta
        | Mnemonic::Prefetchw
        | Mnemonic::Prefetch
            if insn.handler as usize == cpu::exec::handler_for(i.code()) as usize =>
        {
            Some(Form { op: Op::Nop, mem: Mem::None })
        }
        // LFENCE/MFENCE/SFENCE (their canonical encodings): the `nop` handler on one in-order CPU
        // (the kernel's `rdtsc_ordered`, its speculation barriers).
        Mnemonic::Lfence | Mnemonic::Mfence | Mnemonic::Sfence
            if matches!(
                i.code(),
                iced_x86::Code::Lfence | iced_x86::Code::Mfence | iced_x86::Code::Sfence
            ) && insn.handler as usize == cpu::exec::handler_for(i.code()) as usize =>
        {
            Some(Form { op: Op::Nop, mem: Mem::None })
        }
        // CLD/STD (`intflags::cld`/`std_`): DF in the RFLAGS variable (the kernel's entry code, every
        // system call).
        Mnemonic::Cld | Mnemonic::Std
            if insn.handler as usize == cpu::exec::handler_for(i.code()) as usize =>
        {
            plain(Ext::DirFlag(i.mnemonic() == Mnemonic::Std))
        }
        Mnemonic::Bswap
            if matches!(insn.op[0], Opnd::Reg(g) if g.size >= 4)
                && insn.handler as usize == cpu::exec::handler_for(i.code()) as usize =>
        {
            plain(Ext::Bswap)
        }
        // MOV r16/r32/r64, Sreg (`segregs::mov_from_sreg`: the selector zero-extended to the
        // operand size, a 16-bit destination keeping its upper bits); the m16 form stays with
        // the handler.
        Mnemonic::Mov
            if matches!(
                i.code(),
                iced_x86::Code::Mov_rm16_Sreg
                    | iced_x86::Code::Mov_r32m16_Sreg
                    | iced_x86::Code::Mov_r64m16_Sreg
            ) && reg(0)
                && insn.handler as usize == cpu::exec::handler_for(i.code()) as usize =>
        {
            cpu::regs::sreg(i.op1_register())
                .map(|s| Form { op: Op::Ext(Ext::MovSreg(s as u8)), mem: Mem::None })
        }
        Mnemonic::Bsf | Mnemonic::Bsr if reg(0) && reg(1) => plain(Ext::Bsf(i.mnemonic() == Mnemonic::Bsr)),
        Mnemonic::Mul | Mnemonic::Imul if i.op_count() == 1 && reg(0) => {
            plain(Ext::Mul(i.mnemonic() == Mnemonic::Imul))
        }
        // Only where the CPU model has them: on a model without BMI1/LZCNT/POPCNT the decoder gave
        // the block the #UD handler instead (`exec::handler_for_model`), which must run.
        m @ (Mnemonic::Tzcnt | Mnemonic::Lzcnt | Mnemonic::Popcnt)
            if reg(0) && reg(1) && insn.handler as usize == cpu::exec::handler_for(i.code()) as usize =>
        {
            plain(Ext::Cnt(match m {
                Mnemonic::Tzcnt => 0,
                Mnemonic::Lzcnt => 1,
                _ => 2,
            }))
        }
        _ => None,
    }
}

/// Whether (and as what) `insn` is a VEX-encoded general-register form of this file: BZHI r, r, r
/// in 64-bit code (glibc's AVX2 `memcmp` ends with `bzhi edx, eax, edx`), where the CPU model
/// has BMI2 (else the block holds the #UD handler, which must run).
pub(crate) fn inline_bmi(insn: &Insn) -> Option<Form> {
    let i = &insn.i;
    let reg = |n: usize| matches!(insn.op[n], Opnd::Reg(_));
    (i.mnemonic() == Mnemonic::Bzhi
        && i.code_size() == iced_x86::CodeSize::Code64
        && insn.handler as usize == cpu::exec::handler_for(i.code()) as usize
        && reg(0)
        && reg(1)
        && i.op2_kind() == iced_x86::OpKind::Register
        && cpu::regs::gpr(i.op2_register()).is_some())
    .then_some(Form { op: Op::Ext(Ext::Bzhi), mem: Mem::None })
}

/// RFLAGS after TZCNT/LZCNT of `src` (masked) giving `r`: `bits::count_zeros_flags`, the handler's own.
pub(crate) extern "C" fn cnt_flags(st: *const cpu::CpuState, fl: u64, src: u64, r: u64, _code: u32) -> u64 {
    // SAFETY: generated code passes the `CpuState` of the `Ctx` it runs on, live for the call.
    let quirks = unsafe { (*st).quirks };
    cpu::exec::bits::count_zeros_flags(fl, src == 0, r, quirks)
}

/// RFLAGS after MUL of `a` by `b` (masked) at `code` bytes: `muldiv::mul_flags`, the handler's own,
/// with the overflow rule of `mul` (a nonzero high half).
pub(crate) extern "C" fn mul_flags(st: *const cpu::CpuState, fl: u64, a: u64, b: u64, code: u32) -> u64 {
    // SAFETY: generated code passes the `CpuState` of the `Ctx` it runs on, live for the call.
    let quirks = unsafe { (*st).quirks };
    let m = cpu::regs::size_mask(code);
    let p = a as u128 * b as u128;
    let lo = p as u64 & m;
    let hi = (p >> (code * 8)) as u64 & m;
    cpu::exec::muldiv::mul_flags(fl, lo, hi != 0, code, quirks)
}

impl Lower<'_, '_> {
    /// The low `size` bytes of `v` in reverse order, zero-extended (`bits::swap_bytes`).
    pub(super) fn swap_bytes(&mut self, v: Value, size: u32) -> Value {
        if size == 8 {
            return self.b.ins().bswap(v);
        }
        let x = self.b.ins().ireduce(super::ty_of(size), v);
        let y = self.b.ins().bswap(x);
        self.b.ins().uextend(I64, y)
    }

    /// ADC/SBB of `a` and `b` (masked to `size`) with the current CF. When `live`, its flags are
    /// left pending (`Pending::Adc`: computed only where read, or stored as the lazy flag state at
    /// an exit); the carry in is read from a pending operation without computing its other flags.
    pub(super) fn adc(&mut self, sub: bool, a: Value, b: Value, size: u32, live: bool) -> Value {
        let c = self.carry_in();
        let r = if sub {
            let x = self.b.ins().isub(a, b);
            self.b.ins().isub(x, c)
        } else {
            let x = self.b.ins().iadd(a, b);
            self.b.ins().iadd(x, c)
        };
        let r = self.trunc(r, size);
        if live {
            self.defer(super::Pending::Adc { a, b, c, r, size, sub });
        }
        r
    }

    /// The carry in (0 or 1) of an ADC (`r` = `a + b + c`) or SBB (`r` = `a - b - c`) at `size`
    /// bytes, recovered from its operands and result (as `LazyFlags::apply` does).
    pub(super) fn adc_carry_of(&mut self, a: Value, b: Value, r: Value, size: u32, sub: bool) -> Value {
        let (x, y, z) = if sub { (a, b, r) } else { (r, a, b) };
        let d = self.b.ins().isub(x, y);
        let d = self.b.ins().isub(d, z);
        let d = self.trunc(d, size);
        let nz = self.b.ins().icmp_imm_s(IntCC::NotEqual, d, 0);
        self.b.ins().uextend(I64, nz)
    }

    /// `ops::flags_add`/`flags_sub` with the carry in `c` (0 or 1; vendor-independent, restated
    /// here and covered by the differential tests): SF, ZF, PF, AF and OF as without it (the same
    /// formulas of a, b and r); CF the carry out of a + b + c (a - b - c). Only the flags in `want`,
    /// the other bits zero.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn adc_flags(
        &mut self,
        a: Value,
        b: Value,
        c: Value,
        r: Value,
        size: u32,
        sub: bool,
        want: u64,
    ) -> Value {
        let f = self.arith_flags(a, b, r, size, sub, want & !flags::CF);
        if want & flags::CF == 0 {
            return f;
        }
        let cf = if size < 8 {
            // The sum of the masked operands has the carry at bit 8 * size; their difference is
            // negative (bit 63) exactly on a borrow.
            if sub {
                let d = self.b.ins().isub(a, b);
                let d = self.b.ins().isub(d, c);
                self.b.ins().ushr_imm_s(d, 63)
            } else {
                let s = self.b.ins().iadd(a, b);
                let s = self.b.ins().iadd(s, c);
                self.b.ins().ushr_imm_s(s, i64::from(size * 8))
            }
        } else {
            // r < a, or r == a with a carry in (a < b, or a == b with a borrow in).
            let (x, y) = if sub { (a, b) } else { (r, a) };
            let lt = self.b.ins().icmp(IntCC::UnsignedLessThan, x, y);
            let eq = self.b.ins().icmp(IntCC::Equal, x, y);
            let cin = self.b.ins().ireduce(cranelift_codegen::ir::types::I8, c);
            let eq_c = self.b.ins().band(eq, cin);
            let cf = self.b.ins().bor(lt, eq_c);
            self.b.ins().uextend(I64, cf)
        };
        self.b.ins().bor(f, cf)
    }

    /// Emits a register form of this file.
    pub(super) fn emit_ext(&mut self, insn: &Insn, e: Ext, live: u64) {
        if let Ext::Cwd(dx, size) = e {
            return self.emit_cwd(dx, size);
        }
        if let Ext::DirFlag(set) = e {
            // DF is never pending (only arithmetic flags are).
            let fl = self.b.use_var(self.fl);
            let v = if set {
                self.b.ins().bor_imm_s(fl, flags::DF as i64)
            } else {
                self.b.ins().band_imm_s(fl, !(flags::DF as i64))
            };
            self.b.def_var(self.fl, v);
            return;
        }
        let Opnd::Reg(d) = insn.op[0] else { unreachable!("{e:?} without a register operand 0") };
        let size = d.size as u32;
        match e {
            Ext::Bzhi => {
                // `bits::bzhi`: the source with bits from index imm[7:0] up cleared, unchanged for
                // an index at or above the width (then CF = 1).
                let Opnd::Reg(s) = insn.op[1] else { unreachable!() };
                let g = cpu::regs::gpr(insn.i.op2_register()).expect("inline_bmi admits a general register");
                let src = self.read(s);
                let ix = self.read(RegOp { index: g.index as u8, size: g.size as u8, shift: g.shift as u8 });
                let ix = self.b.ins().band_imm_s(ix, 0xff);
                let inside = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, ix, i64::from(size * 8));
                // (1 << ix) - 1; Cranelift takes the shift modulo 64, the select drops that case.
                let one = self.b.ins().iconst(I64, 1);
                let m = self.b.ins().ishl(one, ix);
                let m = self.b.ins().iadd_imm_s(m, -1);
                let low = self.b.ins().band(src, m);
                let r = self.b.ins().select(inside, low, src);
                if live & e.kills() != 0 {
                    // SF and ZF of the result, CF = the index is outside, OF = AF = 0, and the
                    // undefined PF the vendor's (`bits::sz`: the parity on AMD, clear on Intel).
                    self.materialize();
                    let f = self.szp(r, size, flags::SF | flags::ZF | flags::PF);
                    let q = self.b.ins().load(
                        cranelift_codegen::ir::types::I8,
                        super::MF,
                        self.st,
                        std::mem::offset_of!(cpu::CpuState, quirks) as i32,
                    );
                    let amd = self.b.ins().icmp_imm_s(IntCC::Equal, q, cpu::state::Quirks::Amd as i64);
                    let no_pf = self.b.ins().band_imm_s(f, !(flags::PF as i64));
                    let f = self.b.ins().select(amd, f, no_pf);
                    let out = self.b.ins().icmp_imm_s(IntCC::Equal, inside, 0);
                    let cf = self.flag_of(out, flags::CF);
                    let f = self.b.ins().bor(f, cf);
                    self.set_flags(f, flags::ARITH);
                }
                self.write(d, r);
            }
            Ext::Cmpxchg | Ext::Xadd => self.emit_xchg_reg(insn, e, live),
            Ext::Div(_) | Ext::Cwd(..) | Ext::Movbe => unreachable!("{e:?}: lower_mem"),
            Ext::DirFlag(_) => unreachable!("emitted above"),
            Ext::MovSreg(s) => {
                let off = std::mem::offset_of!(cpu::CpuState, seg)
                    + s as usize * std::mem::size_of::<cpu::state::Segment>()
                    + std::mem::offset_of!(cpu::state::Segment, selector);
                let v = self.b.ins().uload16(I64, super::MF, self.st, off as i32);
                self.write(d, v);
            }
            Ext::Bswap => {
                // `bits::bswap` at 4 or 8 bytes (`inline_ext` admits no other size); a 32-bit
                // destination is zero-extended by the write.
                let v = self.read(d);
                let r = self.swap_bytes(v, size);
                self.write(d, r);
            }
            Ext::ShiftCl(sop) => {
                let a = self.read(d);
                let c = self.read(RegOp { index: 1, size: 1, shift: 0 });
                let cnt = self.b.ins().band_imm_s(c, cpu::exec::shift::count_mask(size) as i64);
                let r = match sop {
                    ShiftOp::Shl => self.b.ins().ishl(a, cnt),
                    ShiftOp::Shr => self.b.ins().ushr(a, cnt),
                    ShiftOp::Sar => {
                        let x = self.sext(a, size, 8);
                        self.b.ins().sshr(x, cnt)
                    }
                    _ => {
                        // A rotate at the operand's own width (Cranelift takes the count modulo it).
                        let x = if size < 8 { self.b.ins().ireduce(super::ty_of(size), a) } else { a };
                        let y = if sop == ShiftOp::Rol {
                            self.b.ins().rotl(x, cnt)
                        } else {
                            self.b.ins().rotr(x, cnt)
                        };
                        if size < 8 { self.b.ins().uextend(I64, y) } else { y }
                    }
                };
                let r = self.trunc(r, size);
                // The flags computed where read, a count of 0 leaving them (`lower_shift.rs`).
                self.defer_shift(sop, size, a, r, super::lower_shift::Count::Cl(cnt), live);
                // A count of 0 still writes (zero-extends) a 32-bit destination, as the handler does.
                self.write(d, r);
            }
            Ext::Adc(sub) => {
                let a = self.read(d);
                let b = self.operand(insn.op[1], size);
                let r = self.adc(sub, a, b, size, live & e.kills() != 0);
                self.write(d, r);
            }
            Ext::Xchg => {
                let Opnd::Reg(s) = insn.op[1] else { unreachable!() };
                let a = self.read(d);
                let b = self.read(s);
                // The handler's order: operand 0 first, then operand 1 (XCHG AL, AH; a register
                // with itself still zero-extends a 32-bit one).
                self.write(d, b);
                self.write(s, a);
            }
            Ext::Bt(k) => {
                let v = self.read(d);
                let raw = self.operand(insn.op[1], size);
                let bit = self.b.ins().band_imm_s(raw, i64::from(size * 8 - 1));
                if live & flags::CF != 0 {
                    // CF = the bit; every other flag unchanged (`bits::bt_op`).
                    self.materialize();
                    let x = self.b.ins().ushr(v, bit);
                    let cf = self.b.ins().band_imm_s(x, 1);
                    let fl = self.b.use_var(self.fl);
                    let fl = self.b.ins().band_imm_s(fl, !(flags::CF as i64));
                    let fl = self.b.ins().bor(fl, cf);
                    self.b.def_var(self.fl, fl);
                }
                if k != 0 {
                    let one = self.b.ins().iconst(I64, 1);
                    let m = self.b.ins().ishl(one, bit);
                    let r = match k {
                        1 => self.b.ins().bor(v, m),
                        2 => self.b.ins().band_not(v, m),
                        _ => self.b.ins().bxor(v, m),
                    };
                    self.write(d, r);
                }
            }
            Ext::Bsf(reverse) => {
                let Opnd::Reg(s) = insn.op[1] else { unreachable!() };
                let src = self.read(s);
                let zero = self.b.ins().icmp_imm_s(IntCC::Equal, src, 0);
                let r = if reverse {
                    // 63 - clz of the (nonzero) masked source.
                    let z = self.b.ins().clz(src);
                    let c = self.b.ins().iconst(I64, 63);
                    self.b.ins().isub(c, z)
                } else {
                    self.b.ins().ctz(src)
                };
                // A zero source leaves the destination as it was, all 64 bits (`bits::scan`).
                let old = self.load_gpr(d.index);
                self.write(d, r);
                let new = self.load_gpr(d.index);
                let v = self.b.ins().select(zero, old, new);
                self.store_gpr(d.index, v);
                if live & flags::ARITH != 0 {
                    // ZF | PF for a zero source; else PF of the result, the rest cleared.
                    let p = self.szp(r, 1, flags::PF);
                    let p = self.b.ins().band_imm_s(p, flags::PF as i64);
                    let zf = self.b.ins().iconst(I64, (flags::ZF | flags::PF) as i64);
                    let f = self.b.ins().select(zero, zf, p);
                    self.materialize();
                    self.set_flags(f, flags::ARITH);
                }
            }
            Ext::Cnt(k) => {
                let Opnd::Reg(s) = insn.op[1] else { unreachable!() };
                let src = self.read(s);
                let r = match k {
                    0 => {
                        // A zero source gives the operand width.
                        let t = self.b.ins().ctz(src);
                        let w = self.b.ins().iconst(I64, i64::from(size * 8));
                        let zero = self.b.ins().icmp_imm_s(IntCC::Equal, src, 0);
                        self.b.ins().select(zero, w, t)
                    }
                    1 => {
                        let z = self.b.ins().clz(src);
                        self.b.ins().iadd_imm_s(z, i64::from(size * 8) - 64)
                    }
                    _ => self.b.ins().popcnt(src),
                };
                if live & e.kills() != 0 {
                    if k == 2 {
                        // ZF = (source == 0), every other flag cleared (`bits::popcnt`).
                        self.materialize();
                        let z = self.b.ins().icmp_imm_s(IntCC::Equal, src, 0);
                        let zf = self.flag_of(z, flags::ZF);
                        self.set_flags(zf, flags::ARITH);
                    } else {
                        self.call_flags(crate::HELPER_CNT_FLAGS, src, r, 0);
                    }
                }
                self.write(d, r);
            }
            Ext::Mul(signed) => {
                let acc = RegOp { index: 0, size: d.size, shift: 0 };
                let a = self.read(acc);
                let b = self.read(d);
                let (lo, hi) = if size == 8 {
                    let lo = self.b.ins().imul(a, b);
                    let hi = if signed { self.b.ins().smulhi(a, b) } else { self.b.ins().umulhi(a, b) };
                    (lo, hi)
                } else {
                    let (x, y) = if signed { (self.sext(a, size, 8), self.sext(b, size, 8)) } else { (a, b) };
                    let p = self.b.ins().imul(x, y);
                    let lo = self.b.ins().band_imm_s(p, mask(size));
                    let hi = self.b.ins().ushr_imm_s(p, i64::from(size * 8));
                    let hi = self.b.ins().band_imm_s(hi, mask(size));
                    (lo, hi)
                };
                if live & flags::ARITH != 0 {
                    if signed {
                        self.call_flags(crate::HELPER_IMUL_FLAGS, a, b, size);
                    } else {
                        self.call_flags(crate::HELPER_MUL_FLAGS, a, b, size);
                    }
                }
                if size == 1 {
                    let h = self.b.ins().ishl_imm_s(hi, 8);
                    let ax = self.b.ins().bor(h, lo);
                    self.write(RegOp { index: 0, size: 2, shift: 0 }, ax);
                } else {
                    self.write(acc, lo);
                    self.write(RegOp { index: 2, size: d.size, shift: 0 }, hi);
                }
            }
        }
    }
}
