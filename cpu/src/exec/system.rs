//! System instructions, one file per concern under `system/`: segment registers (`segregs`), far
//! transfers and IRET (`far`), INT n and the flags (`intflags`), descriptor tables (`tables`), control
//! and debug registers with the cache/TLB instructions (`cregs`), CPUID, TSC and MSRs (`msr`), port
//! I/O (`io`). This file has the family's `lookup` and the helpers they share.

use super::control::branch_to;
use super::ops::*;
use super::{Handler, Insn};
use crate::cpuid;
use crate::fault::{Fault, SoftKind};
use crate::mem::{Ctx, is_canonical};
use crate::regs::{size_mask, sreg};
use crate::seg::{Desc, sel_err};
use crate::state::{Mode, Seg, attr, cr0, cr4, efer, flags};
use iced_x86::{Code, Mnemonic, OpKind, Register};

mod cregs;
mod far;
mod intflags;
mod io;
mod msr;
mod segregs;
mod tables;

use self::{cregs::*, far::*, intflags::*, io::*, msr::*, segregs::*, tables::*};
pub use self::{
    cregs::{CR4_VALID, cr4_valid, write_cr0},
    far::set_rflags,
    io::check_io,
    msr::{msr_read, msr_write, rdtsc_at, read_tsc, x2apic_mode},
};

/// Handlers of this family.
pub fn lookup(code: Code) -> Option<Handler> {
    use Code as C;
    Some(match code {
        C::Mov_rm16_Sreg | C::Mov_r32m16_Sreg | C::Mov_r64m16_Sreg => mov_from_sreg,
        C::Mov_Sreg_rm16 | C::Mov_Sreg_r32m16 | C::Mov_Sreg_r64m16 => mov_to_sreg,
        C::Mov_r32_cr | C::Mov_r64_cr => mov_from_cr,
        C::Mov_cr_r32 | C::Mov_cr_r64 => mov_to_cr,
        C::Mov_r32_dr | C::Mov_r64_dr => mov_from_dr,
        C::Mov_dr_r32 | C::Mov_dr_r64 => mov_to_dr,
        C::Pushw_ES
        | C::Pushd_ES
        | C::Pushw_CS
        | C::Pushd_CS
        | C::Pushw_SS
        | C::Pushd_SS
        | C::Pushw_DS
        | C::Pushd_DS
        | C::Pushw_FS
        | C::Pushd_FS
        | C::Pushq_FS
        | C::Pushw_GS
        | C::Pushd_GS
        | C::Pushq_GS => push_sreg,
        C::Popw_ES
        | C::Popd_ES
        | C::Popw_SS
        | C::Popd_SS
        | C::Popw_DS
        | C::Popd_DS
        | C::Popw_FS
        | C::Popd_FS
        | C::Popq_FS
        | C::Popw_GS
        | C::Popd_GS
        | C::Popq_GS => pop_sreg,
        C::Jmp_ptr1616 | C::Jmp_ptr1632 | C::Jmp_m1616 | C::Jmp_m1632 | C::Jmp_m1664 => jmp_far,
        C::Call_ptr1616 | C::Call_ptr1632 | C::Call_m1616 | C::Call_m1632 | C::Call_m1664 => call_far,
        C::Retfw | C::Retfw_imm16 | C::Retfd | C::Retfd_imm16 | C::Retfq | C::Retfq_imm16 => retf,
        C::Iretw | C::Iretd | C::Iretq => iret,
        C::Int_imm8 => int_n,
        C::Int3 => int3,
        C::Into => into,
        C::Int1 => int1,
        C::Cli => cli,
        C::Sti => sti,
        C::Pushfw | C::Pushfd | C::Pushfq => pushf,
        C::Popfw | C::Popfd | C::Popfq => popf,
        C::Hlt => hlt,
        C::Clc => clc,
        C::Stc => stc,
        C::Cmc => cmc,
        C::Cld => cld,
        C::Std => std_,
        C::Lgdt_m1632_16 | C::Lgdt_m1632 | C::Lgdt_m1664 => lgdt,
        C::Lidt_m1632_16 | C::Lidt_m1632 | C::Lidt_m1664 => lidt,
        C::Sgdt_m1632_16 | C::Sgdt_m1632 | C::Sgdt_m1664 => sgdt,
        C::Sidt_m1632_16 | C::Sidt_m1632 | C::Sidt_m1664 => sidt,
        C::Lldt_rm16 | C::Lldt_r32m16 | C::Lldt_r64m16 => lldt,
        C::Ltr_rm16 | C::Ltr_r32m16 | C::Ltr_r64m16 => ltr,
        C::Sldt_rm16 | C::Sldt_r32m16 | C::Sldt_r64m16 => sldt,
        C::Str_rm16 | C::Str_r32m16 | C::Str_r64m16 => str_,
        C::Lmsw_rm16 | C::Lmsw_r32m16 | C::Lmsw_r64m16 => lmsw,
        C::Smsw_rm16 | C::Smsw_r32m16 | C::Smsw_r64m16 => smsw,
        C::Clts => clts,
        C::Rdpkru => rdpkru,
        C::Wrpkru => wrpkru,
        C::Invlpg_m => invlpg,
        C::Wbinvd | C::Invd | C::Wbnoinvd => privileged_nop,
        C::Cpuid => cpuid_,
        C::Rdmsr => rdmsr,
        C::Wrmsr => wrmsr,
        C::Rdtsc => rdtsc,
        C::Rdtscp => rdtscp,
        C::In_AL_imm8 | C::In_AX_imm8 | C::In_EAX_imm8 | C::In_AL_DX | C::In_AX_DX | C::In_EAX_DX => in_,
        C::Out_imm8_AL | C::Out_imm8_AX | C::Out_imm8_EAX | C::Out_DX_AL | C::Out_DX_AX | C::Out_DX_EAX => {
            out
        }
        C::Swapgs => swapgs,
        C::Clac => clac,
        C::Stac => stac,
        C::Pause | C::Lfence | C::Mfence | C::Sfence => nop,
        C::Clflush_m8 | C::Clflushopt_m8 | C::Clwb_m8 => clflush,
        C::Ud0_r16_rm16
        | C::Ud0_r32_rm32
        | C::Ud0_r64_rm64
        | C::Ud0
        | C::Ud1_r16_rm16
        | C::Ud1_r32_rm32
        | C::Ud1_r64_rm64
        | C::Ud2 => ud,
        _ => return None,
    })
}

fn nop(_: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    Ok(())
}

fn ud(_: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    Err(Fault::ud())
}

/// #GP(0) unless CPL is 0 (and not in v86 mode).
#[inline]
pub fn require_cpl0(ctx: &Ctx<'_>) -> Result<(), Fault> {
    if ctx.st.cpl != 0 { Err(Fault::gp0()) } else { Ok(()) }
}

fn protected(ctx: &Ctx<'_>) -> bool {
    !matches!(ctx.st.mode(), Mode::Real | Mode::V86)
}

#[allow(dead_code)]
fn mnemonic_is(insn: &Insn, m: Mnemonic) -> bool {
    insn.i.mnemonic() == m
}

#[allow(dead_code)]
fn branch(ctx: &mut Ctx<'_>, t: u64) -> Result<(), Fault> {
    branch_to(ctx, t)
}
