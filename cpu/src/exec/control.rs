//! Near control transfers: JMP, Jcc, CALL, RET, LOOP/LOOPcc, JCXZ/JECXZ/JRCXZ.
//! (Far transfers, which load CS, live with the segmentation code in `system`.)

use super::ops::*;
use super::{Handler, Insn};
use crate::fault::Fault;
use crate::mem::{Ctx, is_canonical};
use crate::regs::size_mask;
use crate::state::{Mode, Seg};
use iced_x86::{Code, Mnemonic, OpKind};

/// Handlers of this family.
pub fn lookup(code: Code) -> Option<Handler> {
    let far = matches!(
        code,
        Code::Jmp_ptr1616 | Code::Jmp_ptr1632 | Code::Jmp_m1616 | Code::Jmp_m1632 | Code::Jmp_m1664
    ) || matches!(
        code,
        Code::Call_ptr1616 | Code::Call_ptr1632 | Code::Call_m1616 | Code::Call_m1632 | Code::Call_m1664
    );
    if far {
        return None;
    }
    Some(match code.mnemonic() {
        Mnemonic::Jmp => jmp,
        Mnemonic::Call => call,
        Mnemonic::Ret => ret,
        Mnemonic::Jo
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
        | Mnemonic::Jg => jcc,
        Mnemonic::Loop => loop_,
        Mnemonic::Loope => loope,
        Mnemonic::Loopne => loopne,
        Mnemonic::Jcxz | Mnemonic::Jecxz | Mnemonic::Jrcxz => jcxz,
        _ => return None,
    })
}

/// Sets the next RIP to `target`, checking it against the CS limit (legacy modes) or canonicality
/// (64-bit mode): #GP(0) otherwise, with RIP still at the branch.
#[inline]
pub fn branch_to(ctx: &mut Ctx<'_>, target: u64) -> Result<(), Fault> {
    match ctx.st.mode() {
        Mode::Long64 => {
            if !is_canonical(target) {
                return Err(Fault::gp0());
            }
        }
        _ => {
            if target > ctx.st.sreg(Seg::Cs).limit as u64 {
                return Err(Fault::gp0());
            }
        }
    }
    ctx.next_rip = target;
    Ok(())
}

/// Size of the branch target (2, 4 or 8 bytes) for a near branch.
#[inline]
fn target_size(insn: &Insn) -> u32 {
    match insn.i.op0_kind() {
        OpKind::NearBranch16 => 2,
        OpKind::NearBranch32 => 4,
        OpKind::NearBranch64 => 8,
        _ => op_size(insn, 0),
    }
}

#[inline]
fn target(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<u64, Fault> {
    match insn.i.op0_kind() {
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64 => Ok(insn.i.near_branch_target()),
        _ => {
            let size = op_size(insn, 0);
            Ok(read_op(ctx, insn, 0)? & size_mask(size))
        }
    }
}

fn jmp(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let t = target(ctx, insn)?;
    branch_to(ctx, t)
}

fn jcc(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if cond(cc_of(insn), ctx.st.rflags) { branch_to(ctx, insn.i.near_branch_target()) } else { Ok(()) }
}

fn call(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = target_size(insn);
    let t = target(ctx, insn)?;
    let ret = insn.next_rip & size_mask(size);
    // Check the target before pushing so a bad target leaves the stack untouched.
    let saved = ctx.next_rip;
    branch_to(ctx, t)?;
    if let Err(e) = push(ctx, size, ret) {
        ctx.next_rip = saved;
        return Err(e);
    }
    Ok(())
}

fn ret(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = match insn.i.code() {
        Code::Retnw | Code::Retnw_imm16 => 2,
        Code::Retnd | Code::Retnd_imm16 => 4,
        _ => 8,
    };
    let t = stack_peek(ctx, 0, size)?;
    branch_to(ctx, t)?;
    let extra = if insn.i.op_count() > 0 { insn.i.immediate(0) & 0xffff } else { 0 };
    let ss = sp_size(ctx);
    let sp = ctx.st.reg(4, ss).wrapping_add(size as u64).wrapping_add(extra) & size_mask(ss);
    ctx.st.set_reg(4, ss, sp);
    Ok(())
}

#[inline]
fn count_dec(ctx: &mut Ctx<'_>, insn: &Insn) -> u64 {
    let a = insn.asize as u32;
    let c = ctx.st.reg(1, a).wrapping_sub(1) & size_mask(a);
    ctx.st.set_reg(1, a, c);
    c
}

fn loop_(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if count_dec(ctx, insn) != 0 { branch_to(ctx, insn.i.near_branch_target()) } else { Ok(()) }
}

fn loope(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let zf = ctx.flag(crate::state::flags::ZF);
    if count_dec(ctx, insn) != 0 && zf { branch_to(ctx, insn.i.near_branch_target()) } else { Ok(()) }
}

fn loopne(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let zf = ctx.flag(crate::state::flags::ZF);
    if count_dec(ctx, insn) != 0 && !zf { branch_to(ctx, insn.i.near_branch_target()) } else { Ok(()) }
}

fn jcxz(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let a = match insn.i.mnemonic() {
        Mnemonic::Jcxz => 2,
        Mnemonic::Jecxz => 4,
        _ => 8,
    };
    if ctx.st.reg(1, a) == 0 { branch_to(ctx, insn.i.near_branch_target()) } else { Ok(()) }
}
