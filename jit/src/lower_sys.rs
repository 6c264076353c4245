//! System instructions lowered without their handler call (a child of `lower`, so it uses the same
//! builder helpers).
//!
//! - **RDTSC, RDTSCP**: a direct call of [`sys_helper`], which runs the interpreter's own
//!   `cpu::exec::system::rdtsc_at` (the one source of their semantics: CR4.TSD's #GP at CPL > 0 in
//!   protected mode, the machine's TSC at the retired count plus the TSC offset, RDTSCP's TSC_AUX)
//!   with the retired count at the instruction, which generated code holds in a register
//!   (`Regs::count`). Nothing is synced or written back around the call: `rdtsc_at` reads no general
//!   register, RIP, RFLAGS' arithmetic flags or the count in `CpuState` (only CR4, CPL, the mode,
//!   which no inline form changes, and the MSRs), and writes only RAX, RDX (RCX), which are reloaded
//!   after it. The block goes on after it. When `rdtsc_at` faults (or a bug panics in it) it has
//!   changed nothing, and the instruction's handler runs on the slow path at exact state, raising
//!   the #GP (the panic, kept in `Outcome::panic`, resumes when the run ends). A Linux boot runs
//!   about 12 M of them (the kernel's delay and clocksource loops), which were 97% of its handler
//!   calls.
//! - **PUSH m64, LEAVE, XCHG m, r** (the system-call path of Linux: its entry pushes the user RSP
//!   from the per-CPU area, its C code leaves frames, its spinlocks exchange): plain memory forms
//!   through the inline TLB probe of `lower.rs` (the interpreter's fast path; anything else runs
//!   the handler). PUSH m64 (`stack::push_rm`) reads its operand through the read TLB, then probes
//!   the write TLB at RSP - 8; a miss of either runs the handler, which repeats the read (a lookup
//!   changes no TLB entry). LEAVE (`stack::leave`, 64-bit operand size) reads at RBP, then sets
//!   RSP = RBP + 8 and RBP = the value read. XCHG m, r (`alu::xchg`, any size) is a
//!   read-modify-write: it probes the write TLB and reads through it (`ops::loc`/`Loc::Mem`), so it
//!   leaves the interpreter's TLB. PUSH m64 and LEAVE only in 64-bit code, where the stack needs
//!   no segment check (XCHG also in 32-bit code, through `lower_mem`'s segment check).
//! - **SWAPGS, CLI, STI** in 64-bit code (Linux's system-call entry and exit, its interrupt
//!   enabling): each is the last instruction of its decoded block (the interpreter ends blocks at
//!   them), so the gain is the handler call's write-back and reload. The fast path is the plain
//!   case, checked in generated code; anything else runs the handler: SWAPGS (`msr::swapgs`) at
//!   CPL 0 exchanges GS.base with IA32_KERNEL_GS_BASE (64-bit code runs only in IA-32e mode, where
//!   it is not #UD); CLI and STI (`intflags::cli`/`sti`) with CPL <= IOPL (no VIF, no #GP in 64-bit
//!   code then) clear or set RFLAGS.IF, and STI that sets IF (IF was 0) opens the interrupt shadow
//!   for one instruction (`irq_shadow_icount` = the count after it). STI still ends its block;
//!   its links are followed only after the chaining loop's checks (below), so the shadow is seen
//!   exactly as the loop's top would see it (`cpu::interp`'s `ends_sti`).
//!
//! - **PUSHFQ, POPFQ** in 64-bit code (the kernel's `local_irq_save`, once per system call):
//!   through the stack probe of `lower.rs` like PUSH/POP. PUSHFQ (`intflags::pushf`) pushes the
//!   computed RFLAGS less VM and RF. POPFQ (`intflags::popf`) inline only when the popped value
//!   changes no bit but the arithmetic flags and DF (which every CPL writes); a change of TF, IF,
//!   IOPL, NT, AC or ID runs the handler (CPL/IOPL rules, the interrupt window, the access tag).
//!   POPF ends its block and does not chain, as with the handler.
//!
//! - **Links through SYSCALL and SYSRETQ** (64-bit code; [`through_end`], [`emit_through`]): their
//!   handler still runs (the one source of their semantics) and sets `Ctx::break_block`, but the
//!   block goes on to its links after the interpreter chaining loop's checks of what they change:
//!   TF and RF clear, for SYSRET (which sets IF from R11) `cpu::interp::events_after_through`
//!   through [`sys_helper`], then `break_block` cleared and the links checked with the new
//!   privilege's fetch-TLB tag. A Linux system call then runs from the user's SYSCALL to its
//!   SYSRET and on into user code without returning to the loop.
//! - **Links past STI** (64-bit code, `cpu::interp::chains`): a block that ends with STI (inline,
//!   or its handler) goes on to its links after the chaining loop's checks: TF and RF clear, then
//!   `cpu::interp::events_after_sti` through [`sys_helper`] (a debug condition or written code
//!   page, `events_after_through`, and in the interrupt shadow STI opened, no interrupt or NMI
//!   pending that it holds back). The loop links such a block only to a block that the shadow may
//!   run whole (`shadow_shape_ok`), so a link is followed exactly where the loop would go on. Once
//!   per system call and three times per page fault of Linux, a return to the loop less.
//!   `tests/systhrough.rs` (jit against interp with interrupts at random counts, TF from R11 on
//!   some returns, non-canonical RCX).
//!
//! Every form here has cases in `tests/differential_sys.rs` (jit against interp, faults included).

use super::*;
use iced_x86::Code;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// A system form of this file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sys {
    /// RDTSC (0F 31).
    Rdtsc,
    /// RDTSCP (0F 01 F9).
    Rdtscp,
    /// PUSH m64 (FF /6) in 64-bit code.
    PushM,
    /// LEAVE (C9) with a 64-bit operand size, in 64-bit code.
    Leave,
    /// XCHG m, r (86/87) without LOCK.
    Xchg,
    /// SWAPGS in 64-bit code.
    Swapgs,
    /// CLI in 64-bit code.
    Cli,
    /// STI in 64-bit code.
    Sti,
    /// PUSHFQ in 64-bit code.
    Pushf,
    /// POPFQ in 64-bit code.
    Popf,
}

/// What this file's forms need of the function being built: its retired-count variable (the count
/// at the instruction being emitted), the TLB and the tag bits of its accesses (`Lower::user_tag`).
#[derive(Clone, Copy)]
pub(crate) struct SysEnv {
    pub count: Variable,
    pub tlb: Value,
    pub user_tag: Value,
}

/// `code` of [`sys_helper`]: RDTSC.
const CODE_RDTSC: u32 = 0;
/// `code` of [`sys_helper`]: RDTSCP.
const CODE_RDTSCP: u32 = 1;
/// `code` of [`sys_helper`]: `cpu::interp::events_after_through` (0: none due).
const CODE_THROUGH: u32 = 2;
/// `code` of [`sys_helper`]: `cpu::interp::events_after_sti` (0: the loop would go on).
const CODE_STI: u32 = 3;

/// What a block that [`through_end`] names ends with, for [`emit_through`]'s checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Through {
    /// SYSCALL: no event check (below).
    Syscall,
    /// SYSRETQ: `cpu::interp::events_after_through` (it sets IF from R11).
    Sysret,
    /// STI: `cpu::interp::events_after_sti` (it sets IF and may open the interrupt shadow).
    Sti,
}

/// Whether the block `insns` ends with an instruction that translated code links through although
/// the interpreter's chaining loop makes checks after it (SYSCALL, SYSRETQ or STI in 64-bit code,
/// which `cpu::interp::chains` admits; SYSCALL and SYSRETQ set `Ctx::break_block`, and so does
/// STI's handler), and which checks the loop makes first (SYSRET: it sets IF from R11, so an
/// interrupt held back in the kernel may be deliverable now; STI: the same, and in the shadow it
/// opens the loop goes on only when nothing the shadow holds back is pending).
///
/// SYSCALL needs none: it makes nothing deliverable (IF and TF can only be cleared by SFMASK, NMI
/// blocking is unchanged, and no memory or device is touched), and its block began at a boundary
/// where nothing was (the premise of every chain); that IF is the same at the SYSCALL as at the
/// block's start holds because every instruction that sets IF ends its block.
pub(crate) fn through_end(insns: &[Insn]) -> Option<Through> {
    let last = insns.last()?;
    if last.i.code_size() != CodeSize::Code64 || !cpu::interp::chains(last) {
        return None;
    }
    match last.i.code() {
        Code::Syscall => Some(Through::Syscall),
        Code::Sysretq => Some(Through::Sysret),
        Code::Sti => Some(Through::Sti),
        _ => None,
    }
}

/// Emits, at the normal end of a block that [`through_end`] names (its last instruction's handler
/// has run, so everything is in `CpuState`), what the interpreter's chaining loop does after such
/// an instruction before it runs the next block: TF and RF clear (SYSRET may set TF from R11: the
/// single-step trap is the loop's), the event checks (`events` = SYSRET: a call of
/// `cpu::interp::events_after_through`), and `Ctx::break_block` cleared. Any check that fails leaves
/// for `ret_ok` with `break_block` still set, so the interpreter makes the checks again and acts.
/// Returns the access tag of the new privilege level (`Mmu::access_tag`, which the handler
/// brought up to date) for the links' fetch-TLB check, in place of the one loaded at entry.
#[allow(clippy::too_many_arguments)]
pub(crate) fn emit_through(
    b: &mut FunctionBuilder<'_>,
    helper_sig: SigRef,
    ctx: Value,
    st: Value,
    out: Value,
    mmu: Value,
    events: Through,
    ret_ok: Block,
) -> Value {
    let pass = |b: &mut FunctionBuilder<'_>, ok: Value| {
        let next = b.create_block();
        b.ins().brif(ok, next, &[], ret_ok, &[]);
        b.seal_block(next);
        b.switch_to_block(next);
    };
    let fl = b.ins().load(I64, MF, st, cpu::offsets::RFLAGS as i32);
    let t = b.ins().band_imm_s(fl, (flags::TF | flags::RF) as i64);
    let clear = b.ins().icmp_imm_s(IntCC::Equal, t, 0);
    pass(b, clear);
    if events != Through::Syscall {
        let f = b.ins().load(I64, MF, out, crate::helper_offset(crate::HELPER_SYS));
        let zero = b.ins().iconst(I64, 0);
        let code = if events == Through::Sti { CODE_STI } else { CODE_THROUGH };
        let code = b.ins().iconst(types::I32, code as i64);
        let call = b.ins().call_indirect(helper_sig, f, &[st, zero, zero, out, code]);
        let status = b.inst_results(call)[0];
        let none = b.ins().icmp_imm_s(IntCC::Equal, status, 0);
        pass(b, none);
    }
    let no = b.ins().iconst(types::I8, 0);
    b.ins().store(MF, no, ctx, offset_of!(cpu::mem::Ctx<'static>, break_block) as i32);
    b.ins().load(I64, MF, mmu, offset_of!(cpu::mem::Mmu, access_tag) as i32)
}

/// Whether (and as what) `insn` is one of this file's forms. Only where its handler is the
/// interpreter's own (a CPU model without RDTSCP decodes it to the #UD handler: that stays a call).
pub(crate) fn inline_sys(insn: &Insn) -> Option<Form> {
    let code = insn.i.code();
    let long = insn.i.code_size() == CodeSize::Code64;
    let (sys, mem) = match code {
        // No memory access: the form's own check (the helper's status) branches to the slow path.
        Code::Rdtsc => (Sys::Rdtsc, Mem::Guard),
        Code::Rdtscp => (Sys::Rdtscp, Mem::Guard),
        // The operand through the form's probe, the stack through a second one.
        Code::Push_rm64 if long && insn.op[0] == Opnd::Mem && lower_mem::mem_ok(insn) => {
            (Sys::PushM, Mem::Src)
        }
        Code::Leaveq if long => (Sys::Leave, Mem::Stack),
        Code::Swapgs if long => (Sys::Swapgs, Mem::Guard),
        Code::Cli if long => (Sys::Cli, Mem::Guard),
        Code::Sti if long => (Sys::Sti, Mem::Guard),
        Code::Pushfq if long => (Sys::Pushf, Mem::Stack),
        Code::Popfq if long => (Sys::Popf, Mem::Stack),
        Code::Xchg_rm8_r8 | Code::Xchg_rm16_r16 | Code::Xchg_rm32_r32 | Code::Xchg_rm64_r64
            if insn.op[0] == Opnd::Mem
                && matches!(insn.op[1], Opnd::Reg(_))
                && !insn.i.has_lock_prefix()
                && lower_mem::mem_ok(insn) =>
        {
            (Sys::Xchg, Mem::Dst)
        }
        _ => return None,
    };
    if insn.handler as usize != cpu::exec::handler_for(code) as usize {
        return None;
    }
    Some(Form { op: Op::Sys(sys), mem })
}

/// The helper generated code calls for this file's forms (`crate::HELPER_SYS`), with the signature
/// of the flag helpers: `(st, _, icount, out, code) -> status`. `out` is the run's `Outcome` (whose
/// `ctx` is the `Ctx` the code runs on), `icount` the retired count at the instruction, `code` one of
/// the `CODE_*`. Returns 0 when the instruction completed; nonzero when the handler must run it
/// instead (it faults; nothing was changed).
pub(crate) extern "C" fn sys_helper(
    _st: *const cpu::CpuState,
    _: u64,
    icount: u64,
    out: u64,
    code: u32,
) -> u64 {
    // SAFETY: generated code passes the `Outcome` of `JitBlock::run`, live for the call, whose `ctx`
    // is the exclusively borrowed `Ctx` the code runs on; generated code does not touch either while
    // the helper runs, and nothing else does.
    let out = unsafe { &mut *(out as *mut crate::Outcome) };
    // SAFETY: as above.
    let ctx = unsafe { &mut *(out.ctx as *mut cpu::mem::Ctx<'_>) };
    if code == CODE_THROUGH || code == CODE_STI {
        // Queries of the bus: a panic in one is kept like any other.
        let check =
            if code == CODE_STI { cpu::interp::events_after_sti } else { cpu::interp::events_after_through };
        return match catch_unwind(AssertUnwindSafe(|| check(ctx))) {
            Ok(due) => due as u64,
            Err(p) => {
                out.panic.get_or_insert(p);
                1
            }
        };
    }
    let r = catch_unwind(AssertUnwindSafe(|| match code {
        CODE_RDTSC => cpu::exec::system::rdtsc_at(ctx, icount, false),
        CODE_RDTSCP => cpu::exec::system::rdtsc_at(ctx, icount, true),
        _ => Err(cpu::Fault::ud()),
    }));
    match r {
        Ok(Ok(())) => 0,
        Ok(Err(_)) => 1,
        Err(p) => {
            // Unwinding must not cross generated code: `JitBlock::run` resumes it after the run.
            out.panic.get_or_insert(p);
            1
        }
    }
}

impl Lower<'_, '_> {
    /// Emits a form of this file once its probe succeeded (`host` addresses the access of a memory
    /// form); `slow` runs the instruction's handler (nothing changed yet).
    pub(crate) fn emit_sys(&mut self, insn: &Insn, sys: Sys, host: Value, slow: Block) {
        match sys {
            Sys::Pushf => {
                // `intflags::pushf` outside virtual-8086 mode (64-bit code never is): RFLAGS with
                // VM and RF cleared, pushed as 8 bytes at RSP - 8 (the probe's slot).
                self.materialize();
                let fl = self.b.use_var(self.fl);
                let v = self.b.ins().band_imm_s(fl, !((flags::VM | flags::RF) as i64));
                self.host_store(host, v, 8);
                let sp = self.load_gpr(4);
                let sp = self.b.ins().iadd_imm_s(sp, -8);
                self.store_gpr(4, sp);
                return;
            }
            Sys::Popf => {
                // `intflags::popf` (64-bit code: not real or virtual-8086 mode) when the popped
                // value changes nothing but the arithmetic flags and DF, which it writes at every
                // CPL: then `set_rflags` leaves every other bit, the access tag (AC) and the TLB
                // alone; the block ends after POPF (`interp::ends_block`) and does not chain, so
                // the loop's checks follow it as after the handler. Anything else (TF, IF, IOPL,
                // NT, AC or ID changing, whose writes depend on CPL and IOPL and may open the
                // interrupt window) runs the handler, before anything is written.
                let v = self.host_load(host, 8);
                let fl = self.b.use_var(self.fl);
                let diff = self.b.ins().bxor(v, fl);
                let guarded = flags::TF | flags::IF | flags::IOPL | flags::NT | flags::AC | flags::ID;
                let diff = self.b.ins().band_imm_s(diff, guarded as i64);
                let ok = self.b.ins().icmp_imm_s(IntCC::Equal, diff, 0);
                self.or_slow(ok, slow);
                // Every arithmetic flag is written: pending ones are not computed.
                self.drop_pending();
                let written = (flags::ARITH | flags::DF) as i64;
                let keep = self.b.ins().band_imm_s(fl, !written);
                let new = self.b.ins().band_imm_s(v, written);
                let new = self.b.ins().bor(keep, new);
                self.b.def_var(self.fl, new);
                let sp = self.load_gpr(4);
                let sp = self.b.ins().iadd_imm_s(sp, 8);
                self.store_gpr(4, sp);
                return;
            }
            _ => {}
        }
        let Some(env) = self.regs.sys else {
            // The code holds no retired count here: the handler runs it.
            self.b.ins().jump(slow, &[]);
            let dead = self.b.create_block();
            self.b.switch_to_block(dead);
            self.b.seal_block(dead);
            return;
        };
        let code = match sys {
            Sys::Rdtsc => CODE_RDTSC,
            Sys::Rdtscp => CODE_RDTSCP,
            Sys::PushM => {
                // `stack::push_rm`: the operand (read), then `ops::push` of 8 bytes at RSP - 8.
                let stack = Form { op: Op::Push, mem: Mem::Stack };
                let at = self.probe(insn, stack, env.tlb, env.user_tag, slow);
                let v = self.host_load(host, 8);
                self.host_store(at, v, 8);
                let sp = self.load_gpr(4);
                let sp = self.b.ins().iadd_imm_s(sp, -8);
                self.store_gpr(4, sp);
                return;
            }
            Sys::Leave => {
                // `stack::leave::<8>` (64-bit stack): the value at RBP, RSP = RBP + 8, RBP = it.
                let v = self.host_load(host, 8);
                let bp = self.load_gpr(5);
                let sp = self.b.ins().iadd_imm_s(bp, 8);
                self.store_gpr(4, sp);
                self.store_gpr(5, v);
                return;
            }
            Sys::Swapgs => {
                // CPL 0, else the handler (#GP).
                let cpl = self.b.ins().load(types::I8, MF, self.st, offset_of!(cpu::CpuState, cpl) as i32);
                let ok = self.b.ins().icmp_imm_s(IntCC::Equal, cpl, 0);
                self.or_slow(ok, slow);
                let gs = (cpu::offsets::SEG0 + Seg::Gs as usize * cpu::offsets::SEGMENT_SIZE + 8) as i32;
                let kgs =
                    (offset_of!(cpu::CpuState, msr) + offset_of!(cpu::state::Msrs, kernel_gs_base)) as i32;
                let a = self.b.ins().load(I64, MF, self.st, gs);
                let k = self.b.ins().load(I64, MF, self.st, kgs);
                self.b.ins().store(MF, k, self.st, gs);
                self.b.ins().store(MF, a, self.st, kgs);
                return;
            }
            Sys::Pushf | Sys::Popf => unreachable!("emitted above"),
            Sys::Cli | Sys::Sti => {
                // CPL <= IOPL, else the handler (VIF or #GP).
                let cpl = self.b.ins().load(types::I8, MF, self.st, offset_of!(cpu::CpuState, cpl) as i32);
                let cpl = self.b.ins().uextend(I64, cpl);
                let fl = self.b.use_var(self.fl);
                let iopl = self.b.ins().ushr_imm_s(fl, flags::IOPL.trailing_zeros() as i64);
                let iopl = self.b.ins().band_imm_s(iopl, 3);
                let ok = self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, cpl, iopl);
                self.or_slow(ok, slow);
                let fl = self.b.use_var(self.fl);
                if sys == Sys::Cli {
                    let v = self.b.ins().band_imm_s(fl, !(flags::IF as i64));
                    self.b.def_var(self.fl, v);
                    return;
                }
                // STI: when IF was 0, the shadow covers the next instruction (count + 1).
                let was = self.b.ins().band_imm_s(fl, flags::IF as i64);
                let opens = self.b.ins().icmp_imm_s(IntCC::Equal, was, 0);
                let shadow = self.b.create_block();
                let join = self.b.create_block();
                self.b.ins().brif(opens, shadow, &[], join, &[]);
                self.b.seal_block(shadow);
                self.b.switch_to_block(shadow);
                let ic = self.b.use_var(env.count);
                let next = self.b.ins().iadd_imm_s(ic, 1);
                self.b.ins().store(MF, next, self.st, offset_of!(cpu::CpuState, irq_shadow_icount) as i32);
                self.b.ins().jump(join, &[]);
                self.b.seal_block(join);
                self.b.switch_to_block(join);
                let v = self.b.ins().bor_imm_s(fl, flags::IF as i64);
                self.b.def_var(self.fl, v);
                return;
            }
            Sys::Xchg => {
                // `alu::xchg`: the memory operand read through the write translation, the register
                // stored there, the old value into the register.
                let Opnd::Reg(g) = insn.op[1] else { unreachable!("inline_sys admits XCHG m, r only") };
                let size = g.size as u32;
                let old = self.host_load(host, size);
                let r = self.read(g);
                self.host_store(host, r, size);
                self.write(g, old);
                return;
            }
        };
        let f = self.b.ins().load(I64, MF, self.out, crate::helper_offset(crate::HELPER_SYS));
        let fl = self.b.use_var(self.fl);
        let ic = self.b.use_var(env.count);
        let code = self.b.ins().iconst(types::I32, code as i64);
        let call = self.b.ins().call_indirect(self.helper_sig, f, &[self.st, fl, ic, self.out, code]);
        let status = self.b.inst_results(call)[0];
        let done = self.b.ins().icmp_imm_s(IntCC::Equal, status, 0);
        self.or_slow(done, slow);
        // The helper wrote RAX and RDX (and RCX) in `CpuState`: the variables take them.
        let written: u16 = if sys == Sys::Rdtscp { 1 << 0 | 1 << 1 | 1 << 2 } else { 1 << 0 | 1 << 2 };
        self.regs.load(self.b, self.st, written);
        self.regs.dirty &= !written;
    }
}
