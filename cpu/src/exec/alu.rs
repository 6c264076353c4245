//! Integer ALU: ADD/OR/ADC/SBB/AND/SUB/XOR/CMP/TEST, INC/DEC/NEG/NOT, MOV/MOVZX/MOVSX/MOVSXD, LEA,
//! XCHG, CMOVcc, SETcc, NOP.

use super::ops::*;
use super::{Handler, Insn};
use crate::fault::Fault;
use crate::mem::Ctx;
use crate::regs::{sext, size_mask};
use crate::state::{Quirks, flags};
use iced_x86::{Code, Mnemonic, OpCodeOperandKind, OpKind};

/// Handlers of this family.
pub fn lookup(code: Code) -> Option<Handler> {
    let h: Handler = match code.mnemonic() {
        Mnemonic::Add => add,
        Mnemonic::Or => or,
        Mnemonic::Adc => adc,
        Mnemonic::Sbb => sbb,
        Mnemonic::And => and,
        Mnemonic::Sub => sub,
        Mnemonic::Xor => xor,
        Mnemonic::Cmp => cmp,
        Mnemonic::Test => test,
        Mnemonic::Inc => inc,
        Mnemonic::Dec => dec,
        Mnemonic::Neg => neg,
        Mnemonic::Not => not,
        Mnemonic::Mov => {
            let oc = code.op_code();
            let special = (0..oc.op_count()).any(|k| {
                matches!(
                    oc.op_kind(k),
                    OpCodeOperandKind::cr_reg
                        | OpCodeOperandKind::dr_reg
                        | OpCodeOperandKind::tr_reg
                        | OpCodeOperandKind::seg_reg
                )
            });
            if special {
                return None;
            }
            mov
        }
        Mnemonic::Movzx => movzx,
        Mnemonic::Movsx | Mnemonic::Movsxd => movsx,
        Mnemonic::Lea => lea,
        Mnemonic::Xchg => xchg,
        Mnemonic::Nop => nop,
        Mnemonic::Cmovo
        | Mnemonic::Cmovno
        | Mnemonic::Cmovb
        | Mnemonic::Cmovae
        | Mnemonic::Cmove
        | Mnemonic::Cmovne
        | Mnemonic::Cmovbe
        | Mnemonic::Cmova
        | Mnemonic::Cmovs
        | Mnemonic::Cmovns
        | Mnemonic::Cmovp
        | Mnemonic::Cmovnp
        | Mnemonic::Cmovl
        | Mnemonic::Cmovge
        | Mnemonic::Cmovle
        | Mnemonic::Cmovg => cmov,
        Mnemonic::Seto
        | Mnemonic::Setno
        | Mnemonic::Setb
        | Mnemonic::Setae
        | Mnemonic::Sete
        | Mnemonic::Setne
        | Mnemonic::Setbe
        | Mnemonic::Seta
        | Mnemonic::Sets
        | Mnemonic::Setns
        | Mnemonic::Setp
        | Mnemonic::Setnp
        | Mnemonic::Setl
        | Mnemonic::Setge
        | Mnemonic::Setle
        | Mnemonic::Setg => setcc,
        _ => return None,
    };
    // Only the legacy GPR encodings: VEX/EVEX forms and MMX/SSE registers are other families.
    if code.op_code().encoding() != iced_x86::EncodingKind::Legacy {
        return None;
    }
    Some(h)
}

#[inline]
fn binop(
    ctx: &mut Ctx<'_>,
    insn: &Insn,
    write: bool,
    f: impl Fn(u64, u64, u64, u32) -> (u64, u64),
) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let cf = ctx.st.rflags & flags::CF;
    if write {
        let l = loc(ctx, insn, 0)?;
        let a = loc_read(ctx, l)?;
        let b = read_op(ctx, insn, 1)? & size_mask(size);
        let (r, fl) = f(a, b, cf, size);
        loc_write(ctx, l, r & size_mask(size))?;
        ctx.set_arith_flags(fl);
    } else {
        let a = read_op(ctx, insn, 0)? & size_mask(size);
        let b = read_op(ctx, insn, 1)? & size_mask(size);
        let (_, fl) = f(a, b, cf, size);
        ctx.set_arith_flags(fl);
    }
    Ok(())
}

fn add(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    binop(ctx, insn, true, |a, b, _, s| {
        let r = a.wrapping_add(b);
        (r, flags_add(a, b, 0, r, s))
    })
}
fn adc(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    binop(ctx, insn, true, |a, b, c, s| {
        let r = a.wrapping_add(b).wrapping_add(c);
        (r, flags_add(a, b, c, r, s))
    })
}
fn sub(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    binop(ctx, insn, true, |a, b, _, s| {
        let r = a.wrapping_sub(b);
        (r, flags_sub(a, b, 0, r, s))
    })
}
fn sbb(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    binop(ctx, insn, true, |a, b, c, s| {
        let r = a.wrapping_sub(b).wrapping_sub(c);
        (r, flags_sub(a, b, c, r, s))
    })
}
fn cmp(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    binop(ctx, insn, false, |a, b, _, s| {
        let r = a.wrapping_sub(b);
        (r, flags_sub(a, b, 0, r, s))
    })
}
fn and(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    binop(ctx, insn, true, |a, b, _, s| (a & b, flags_logic(a & b, s)))
}
fn or(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    binop(ctx, insn, true, |a, b, _, s| (a | b, flags_logic(a | b, s)))
}
fn xor(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    binop(ctx, insn, true, |a, b, _, s| (a ^ b, flags_logic(a ^ b, s)))
}
fn test(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    binop(ctx, insn, false, |a, b, _, s| (a & b, flags_logic(a & b, s)))
}

fn inc(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let l = loc(ctx, insn, 0)?;
    let a = loc_read(ctx, l)?;
    let r = a.wrapping_add(1) & size_mask(size);
    loc_write(ctx, l, r)?;
    // INC leaves CF unchanged.
    let f = flags_add(a, 1, 0, r, size);
    ctx.set_flags_masked(f, flags::ARITH & !flags::CF);
    Ok(())
}

fn dec(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let l = loc(ctx, insn, 0)?;
    let a = loc_read(ctx, l)?;
    let r = a.wrapping_sub(1) & size_mask(size);
    loc_write(ctx, l, r)?;
    let f = flags_sub(a, 1, 0, r, size);
    ctx.set_flags_masked(f, flags::ARITH & !flags::CF);
    Ok(())
}

fn neg(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let l = loc(ctx, insn, 0)?;
    let a = loc_read(ctx, l)?;
    let r = 0u64.wrapping_sub(a) & size_mask(size);
    loc_write(ctx, l, r)?;
    ctx.set_arith_flags(flags_sub(0, a, 0, r, size));
    Ok(())
}

fn not(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let l = loc(ctx, insn, 0)?;
    let a = loc_read(ctx, l)?;
    loc_write(ctx, l, !a & size_mask(size))
}

fn mov(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let v = read_op(ctx, insn, 1)?;
    write_op(ctx, insn, 0, v & size_mask(size))
}

fn movzx(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let src = op_size(insn, 1);
    let v = read_op(ctx, insn, 1)? & size_mask(src);
    write_op(ctx, insn, 0, v)
}

fn movsx(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let dst = op_size(insn, 0);
    let src = op_size(insn, 1);
    // MOVSXD with a 16-bit operand size: Intel CPUs read a 16-bit source, AMD CPUs a 32-bit one (of
    // which the low 16 bits land), so only a fault on its upper half tells them apart.
    let v = if insn.i.code() == Code::Movsxd_r16_rm16
        && insn.i.op1_kind() == OpKind::Memory
        && ctx.st.quirks == Quirks::Amd
    {
        ctx.read_mem(mem_seg(insn), ea(ctx, insn), 4)?
    } else {
        read_op(ctx, insn, 1)?
    };
    write_op(ctx, insn, 0, sext(v, src) & size_mask(dst))
}

fn lea(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let a = ea(ctx, insn);
    write_op(ctx, insn, 0, a & size_mask(size))
}

fn xchg(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    // Memory operand (if any) first so a fault happens before any register changes.
    let (m, r) = if insn.i.op1_kind() == OpKind::Memory { (1, 0) } else { (0, 1) };
    let lm = loc(ctx, insn, m)?;
    let lr = loc(ctx, insn, r)?;
    let a = loc_read(ctx, lm)?;
    let b = loc_read(ctx, lr)?;
    loc_write(ctx, lm, b & size_mask(size))?;
    loc_write(ctx, lr, a & size_mask(size))
}

fn nop(_: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    Ok(())
}

fn cmov(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    // The source is read (and may fault) whether or not the condition holds.
    let v = read_op(ctx, insn, 1)?;
    if cond(cc_of(insn), ctx.st.rflags) {
        write_op(ctx, insn, 0, v & size_mask(size))
    } else if size == 4 {
        // A 32-bit CMOV zero-extends its destination even when the condition is false (64-bit mode).
        let g = reg_op(insn, 0)?;
        let cur = ctx.st.read_gpr(g);
        ctx.st.write_gpr(g, cur);
        Ok(())
    } else {
        Ok(())
    }
}

fn setcc(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let v = cond(cc_of(insn), ctx.st.rflags) as u64;
    write_op(ctx, insn, 0, v)
}

#[cfg(test)]
mod tests {
    use crate::exec::misc::testkit::Emu;
    use crate::fault::{Fault, vec};
    use crate::state::Quirks;
    use crate::testutil::TestMode;

    #[test]
    fn movsxd_r16_reads_by_vendor() {
        // movsxd ax,[rsi] two bytes before the end of the test machine's 1 GiB identity map: the
        // 16-bit read Intel does fits, AMD's 32-bit read reaches the unmapped page (#PF).
        for (q, faults) in [(Quirks::Intel, false), (Quirks::Amd, true)] {
            let mut e = Emu::new(TestMode::Long64);
            e.st.quirks = q;
            e.st.gpr[6] = 0x3fff_fffe;
            e.st.gpr[0] = 0x1234_5678_9abc_def0;
            let r = e.exec(&[0x66, 0x63, 0x06]);
            if faults {
                assert!(matches!(r, Err(Fault::Exc { vector: vec::PF, .. })), "{q:?}: {r:?}");
                assert_eq!(e.st.gpr[0], 0x1234_5678_9abc_def0);
            } else {
                assert_eq!(r, Ok(()), "{q:?}");
                assert_eq!(e.st.gpr[0] & !0xffff, 0x1234_5678_9abc_0000);
            }
        }
    }
}
