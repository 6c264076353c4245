//! Fast system calls: SYSCALL/SYSRET (STAR, LSTAR, CSTAR, SFMASK) and SYSENTER/SYSEXIT
//! (IA32_SYSENTER_CS/ESP/EIP). The segments they load are fixed flat descriptors taken from the MSRs,
//! never read from the GDT (Intel SDM vol. 2 SYSCALL, SYSRET, SYSENTER, SYSEXIT; vol. 3 5.8.7-5.8.8;
//! AMD APM vol. 3).
//!
//! Where they exist follows the model's vendor (`CpuState::model`): on Intel, SYSCALL/SYSRET are 64-bit
//! mode only (#UD in compatibility mode, CSTAR unused) and SYSENTER/SYSEXIT work in protected, v86,
//! compatibility and 64-bit mode; on AMD, SYSCALL/SYSRET also work in compatibility mode (SYSCALL
//! enters 64-bit mode at CSTAR) and SYSENTER/SYSEXIT are #UD in long mode. AMD's legacy-mode
//! SYSCALL/SYSRET (protected mode without long mode) is not modelled: #UD on both vendors.

use super::system::set_rflags;
use super::{Handler, Insn};
use crate::fault::Fault;
use crate::mem::{Ctx, is_canonical};
use crate::model::Vendor;
use crate::state::{Mode, Seg, Segment, attr, efer, flags};
use iced_x86::Code;

/// Handlers of this family.
pub fn lookup(code: Code) -> Option<Handler> {
    Some(match code {
        Code::Syscall => syscall,
        Code::Sysretd | Code::Sysretq => sysret,
        Code::Sysenter => sysenter,
        Code::Sysexitd | Code::Sysexitq => sysexit,
        _ => return None,
    })
}

/// A flat 4 GiB code segment (type 11: execute/read, accessed) at `dpl`, 64-bit or 32-bit.
fn flat_code(selector: u16, dpl: u8, long: bool) -> Segment {
    let size = if long { attr::L } else { attr::DB };
    Segment {
        selector,
        attr: attr::P
            | attr::S
            | attr::CODE
            | attr::RW
            | attr::ACCESSED
            | attr::G
            | size
            | ((dpl as u16) << attr::DPL_SHIFT),
        limit: 0xffff_ffff,
        base: 0,
    }
}

/// A flat 4 GiB stack segment (type 3: read/write, accessed, B = 1) at `dpl`.
fn flat_stack(selector: u16, dpl: u8) -> Segment {
    Segment {
        selector,
        attr: attr::P
            | attr::S
            | attr::RW
            | attr::ACCESSED
            | attr::DB
            | attr::G
            | ((dpl as u16) << attr::DPL_SHIFT),
        limit: 0xffff_ffff,
        base: 0,
    }
}

/// Loads CS and SS, CPL and the next RIP.
fn enter(ctx: &mut Ctx<'_>, cs: Segment, ss: Segment, cpl: u8, rip: u64) {
    *ctx.st.sreg_mut(Seg::Cs) = cs;
    *ctx.st.sreg_mut(Seg::Ss) = ss;
    ctx.st.cpl = cpl;
    ctx.privilege_changed();
    ctx.next_rip = rip;
    ctx.break_block = true;
}

/// #UD unless EFER.SCE is set and the CPU is in 64-bit mode (or, on AMD, compatibility mode).
fn check_sce(ctx: &Ctx<'_>) -> Result<(), Fault> {
    let mode_ok = match ctx.st.mode() {
        Mode::Long64 => true,
        Mode::Compat => ctx.st.model.vendor == Vendor::Amd,
        _ => false,
    };
    if !mode_ok || ctx.st.efer & efer::SCE == 0 {
        return Err(Fault::ud());
    }
    Ok(())
}

/// #UD for SYSENTER/SYSEXIT in long mode on AMD.
fn check_sysenter_vendor(ctx: &Ctx<'_>) -> Result<(), Fault> {
    if ctx.st.model.vendor == Vendor::Amd && ctx.st.efer & efer::LMA != 0 {
        return Err(Fault::ud());
    }
    Ok(())
}

fn syscall(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    check_sce(ctx)?;
    let star = ctx.st.msr.star;
    ctx.st.gpr[1] = ctx.next_rip;
    ctx.st.gpr[11] = ctx.st.rflags & !flags::RF;
    let mask = (ctx.st.msr.sfmask & flags::ALL) | flags::RF;
    set_rflags(ctx, 0, mask);
    let cs = ((star >> 32) as u16) & 0xfffc;
    // AMD: from compatibility mode the target is CSTAR (checked above: Intel never gets here).
    let target = if ctx.st.mode() == Mode::Compat { ctx.st.msr.cstar } else { ctx.st.msr.lstar };
    enter(ctx, flat_code(cs, 0, true), flat_stack(cs.wrapping_add(8), 0), 0, target);
    Ok(())
}

fn sysret(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    check_sce(ctx)?;
    if ctx.st.cpl != 0 {
        return Err(Fault::gp0());
    }
    let to64 = insn.i.code() == Code::Sysretq;
    let rcx = ctx.st.gpr[1];
    if to64 && !is_canonical(rcx) {
        return Err(Fault::gp0());
    }
    let rip = if to64 { rcx } else { rcx & 0xffff_ffff };
    // RF, VM and the reserved bits 3, 5 and 15 are cleared; bit 1 is set.
    let fl = ctx.st.gpr[11] & 0x3c_7fd7;
    set_rflags(ctx, fl, flags::ALL);
    let base = (ctx.st.msr.star >> 48) as u16;
    let cs = if to64 { base.wrapping_add(16) } else { base } | 3;
    let ss = base.wrapping_add(8) | 3;
    enter(ctx, flat_code(cs, 3, to64), flat_stack(ss, 3), 3, rip);
    Ok(())
}

fn sysenter(ctx: &mut Ctx<'_>, _: &Insn) -> Result<(), Fault> {
    check_sysenter_vendor(ctx)?;
    let cs_msr = ctx.st.msr.sysenter_cs as u16;
    if ctx.st.mode() == Mode::Real || cs_msr & 0xfffc == 0 {
        return Err(Fault::gp0());
    }
    let long = ctx.st.efer & efer::LMA != 0;
    set_rflags(ctx, 0, flags::VM | flags::IF | flags::RF);
    let cs = cs_msr & 0xfffc;
    let (esp, eip) = (ctx.st.msr.sysenter_esp, ctx.st.msr.sysenter_eip);
    let (esp, eip) = if long { (esp, eip) } else { (esp & 0xffff_ffff, eip & 0xffff_ffff) };
    ctx.st.gpr[4] = esp;
    enter(ctx, flat_code(cs, 0, long), flat_stack(cs.wrapping_add(8), 0), 0, eip);
    Ok(())
}

fn sysexit(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    check_sysenter_vendor(ctx)?;
    let cs_msr = ctx.st.msr.sysenter_cs as u16;
    let mode = ctx.st.mode();
    if mode == Mode::Real || mode == Mode::V86 || ctx.st.cpl != 0 || cs_msr & 0xfffc == 0 {
        return Err(Fault::gp0());
    }
    let to64 = insn.i.code() == Code::Sysexitq;
    let (rcx, rdx) = (ctx.st.gpr[1], ctx.st.gpr[2]);
    let (rsp, rip) = if to64 {
        if !is_canonical(rcx) || !is_canonical(rdx) {
            return Err(Fault::gp0());
        }
        (rcx, rdx)
    } else {
        (rcx & 0xffff_ffff, rdx & 0xffff_ffff)
    };
    let cs = cs_msr.wrapping_add(if to64 { 32 } else { 16 }) | 3;
    ctx.st.gpr[4] = rsp;
    enter(ctx, flat_code(cs, 3, to64), flat_stack(cs.wrapping_add(8), 3), 3, rip);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::interp::Exit;
    use crate::state::{CpuState, Seg, efer, flags};
    use crate::task::harness::*;
    use crate::testutil::*;
    use iced_x86::code_asm::*;

    const HANDLER: u64 = 0x2000;
    const FLAG: u64 = DATA + 0x80;

    /// 64-bit ring 3 with SYSCALL enabled: STAR = user base 0x18, kernel CS 0x08; LSTAR = HANDLER;
    /// SFMASK = TF IF DF AC.
    fn ring3_64(st: &mut CpuState, bus: &mut TestBus) {
        long_env(st, bus);
        st.efer |= efer::SCE;
        st.msr.star = (0x18u64 << 48) | (0x08u64 << 32);
        st.msr.lstar = HANDLER;
        st.msr.sfmask = 0x4_0700;
        load(st, bus, Seg::Cs, U_CODE64);
        for s in [Seg::Ss, Seg::Ds, Seg::Es] {
            load(st, bus, s, U_DATA);
        }
        st.cpl = 3;
        st.gpr[4] = ESP3;
    }

    /// The LSTAR handler: on the first entry records RCX, R11, RFLAGS, CS, SS, RSP and returns with
    /// SYSRET (REX.W if `q`) with R11 = `r11_out` (and ECX = `compat_rip` without REX.W); on a
    /// later entry halts.
    fn handler(q: bool, r11_out: u64, compat_rip: u32) -> Vec<u8> {
        asm_at(64, HANDLER, |a| {
            let mut fin = a.create_label();
            a.pushfq().unwrap();
            a.pop(rax).unwrap();
            a.cmp(byte_ptr(FLAG), 0).unwrap();
            a.jne(fin).unwrap();
            a.mov(byte_ptr(FLAG), 1).unwrap();
            a.mov(qword_ptr(DATA), rcx).unwrap();
            a.mov(qword_ptr(DATA + 8), r11).unwrap();
            a.mov(qword_ptr(DATA + 0x10), rax).unwrap();
            a.mov(eax, cs).unwrap();
            a.mov(qword_ptr(DATA + 0x18), rax).unwrap();
            a.mov(eax, ss).unwrap();
            a.mov(qword_ptr(DATA + 0x20), rax).unwrap();
            a.mov(qword_ptr(DATA + 0x28), rsp).unwrap();
            a.mov(r11, r11_out).unwrap();
            if q {
                a.sysretq().unwrap();
            } else {
                a.mov(ecx, compat_rip).unwrap();
                a.sysret().unwrap();
            }
            a.set_label(&mut fin).unwrap();
            a.hlt().unwrap();
            vec![]
        })
        .0
    }

    #[test]
    fn syscall_sysretq_round_trip() {
        let (user, l) = asm_at(64, CODE, |a| {
            let mut ret = a.create_label();
            a.std().unwrap();
            a.stc().unwrap();
            a.syscall().unwrap();
            a.set_label(&mut ret).unwrap();
            a.pushfq().unwrap();
            a.pop(qword_ptr(DATA + 0x40)).unwrap();
            a.mov(eax, cs).unwrap();
            a.mov(qword_ptr(DATA + 0x48), rax).unwrap();
            a.mov(eax, ss).unwrap();
            a.mov(qword_ptr(DATA + 0x50), rax).unwrap();
            a.mov(qword_ptr(DATA + 0x58), rsp).unwrap();
            a.syscall().unwrap();
            vec![ret]
        });
        // R11 for SYSRET: IOPL 3, IF, ZF, plus RF and reserved bits 3 and 5, which SYSRET drops.
        let h = handler(true, 0x3242 | 0x1_0000 | 0x28, 0);
        let (st, bus, exit) = run(TestMode::Long64, &user, |st, bus| {
            ring3_64(st, bus);
            place(bus, HANDLER, &h);
        });
        assert_eq!(exit, Exit::Halted, "{}", st.dump());
        assert_eq!(rd(&bus, VEC, 4), 0xff, "no exception");
        assert_eq!(rd(&bus, DATA, 8), l[0], "RCX = return RIP");
        assert_eq!(rd(&bus, DATA + 8, 8), 0x403, "R11 = RFLAGS (DF CF)");
        assert_eq!(rd(&bus, DATA + 0x10, 8), 0x3, "RFLAGS masked by SFMASK");
        assert_eq!(rd(&bus, DATA + 0x18, 8), K_CODE as u64);
        assert_eq!(rd(&bus, DATA + 0x20, 8), K_DATA as u64);
        assert_eq!(rd(&bus, DATA + 0x28, 8), ESP3, "RSP not switched");
        assert_eq!(rd(&bus, DATA + 0x40, 8), 0x3242, "RFLAGS from R11");
        assert_eq!(rd(&bus, DATA + 0x48, 8), U_CODE64 as u64, "CS = STAR[63:48] + 16, RPL 3");
        assert_eq!(rd(&bus, DATA + 0x50, 8), U_DATA as u64, "SS = STAR[63:48] + 8, RPL 3");
        assert_eq!(rd(&bus, DATA + 0x58, 8), ESP3);
        // The second SYSCALL came from the SYSRET'd code and halted in ring 0.
        assert_eq!(st.cpl, 0);
        let kcs = st.sreg(Seg::Cs);
        assert!(kcs.long() && kcs.limit == 0xffff_ffff && kcs.base == 0 && kcs.dpl() == 0);
        let kss = st.sreg(Seg::Ss);
        assert!(kss.big() && kss.limit == 0xffff_ffff && kss.dpl() == 0);
    }

    #[test]
    fn sysret_to_compatibility_mode_where_syscall_is_ud() {
        const COMPAT: u64 = 0x2800;
        let (compat, _) = asm_at(32, COMPAT, |a| {
            a.mov(eax, cs).unwrap();
            a.mov(dword_ptr(DATA as u32 + 0x48), eax).unwrap();
            a.syscall().unwrap();
            vec![]
        });
        let (user, _) = asm_at(64, CODE, |a| {
            a.syscall().unwrap();
            vec![]
        });
        let h = handler(false, 0x202, COMPAT as u32);
        let (st, bus, exit) = run(TestMode::Long64, &user, |st, bus| {
            ring3_64(st, bus);
            place(bus, HANDLER, &h);
            place(bus, COMPAT, &compat);
        });
        assert_eq!(exit, Exit::Halted, "{}", st.dump());
        assert_eq!(rd(&bus, DATA + 0x48, 4), 0x1b, "CS = STAR[63:48] | 3, 32-bit");
        // SYSCALL outside 64-bit mode is #UD on Intel CPUs.
        assert_eq!(rd(&bus, VEC, 4), 6);
        assert_eq!(rd(&bus, st.gpr[4] + 8, 8), 0x1b, "#UD frame CS");
    }

    #[test]
    fn amd_syscall_from_compatibility_mode_enters_at_cstar() {
        // The same round trip on an AMD model: SYSRET to compatibility mode, whose SYSCALL now enters
        // 64-bit ring 0 at CSTAR (a HLT of its own).
        const COMPAT: u64 = 0x2800;
        let (compat, _) = asm_at(32, COMPAT, |a| {
            a.syscall().unwrap();
            vec![]
        });
        let (user, _) = asm_at(64, CODE, |a| {
            a.syscall().unwrap();
            vec![]
        });
        let h = handler(false, 0x202, COMPAT as u32);
        let (st, _, exit) = run(TestMode::Long64, &user, |st, bus| {
            ring3_64(st, bus);
            st.model = crate::model::CpuModel::qemu64();
            st.msr.cstar = 0x3000;
            place(bus, HANDLER, &h);
            place(bus, COMPAT, &compat);
            place(bus, 0x3000, &[0xf4]);
        });
        assert_eq!(exit, Exit::Halted, "{}", st.dump());
        assert_eq!(st.rip, 0x3001, "halted at CSTAR");
        assert_eq!(st.gpr[1], COMPAT + 2, "RCX = the RIP after the compatibility-mode SYSCALL");
        assert_eq!(st.gpr[11] & flags::IF, flags::IF, "R11 = RFLAGS of the caller");
        assert!(st.sreg(Seg::Cs).long());
        assert_eq!((st.sreg(Seg::Cs).selector, st.cpl), (0x08, 0));
    }

    #[test]
    fn amd_sysenter_sysexit_are_undefined_in_long_mode() {
        use super::super::string::testkit::Machine;
        use crate::fault::Fault;
        for (bytes, mode) in [
            (&[0x0f, 0x34][..], TestMode::Long64),
            (&[0x48, 0x0f, 0x35][..], TestMode::Long64),
            (&[0x0f, 0x34][..], TestMode::Prot32),
        ] {
            for amd in [false, true] {
                let mut m = Machine::new(mode, bytes);
                m.st.msr.sysenter_cs = 0x08;
                if amd {
                    m.st.model = crate::model::CpuModel::qemu64();
                }
                let r = m.step().map(|_| ());
                if amd && mode == TestMode::Long64 {
                    assert_eq!(r, Err(Fault::ud()), "{bytes:x?} AMD");
                } else {
                    assert_eq!(r, Ok(()), "{bytes:x?} {mode:?} amd={amd}");
                }
            }
        }
    }

    #[test]
    fn syscall_sysret_faults() {
        // SYSCALL with EFER.SCE = 0: #UD.
        let code = asm(64, |a| a.syscall().unwrap());
        let (_, bus, _) = run(TestMode::Long64, &code, long_env);
        assert_eq!(rd(&bus, VEC, 4), 6);
        // SYSRET at CPL 3: #GP(0).
        let code = asm(64, |a| a.sysretq().unwrap());
        let (st, bus, _) = run(TestMode::Long64, &code, ring3_64);
        assert_eq!((rd(&bus, VEC, 4), rd(&bus, st.gpr[4], 8)), (13, 0));
        // SYSRETQ with a non-canonical RCX: #GP(0) in ring 0.
        let code = asm(64, |a| {
            a.mov(rcx, 0x8000_0000_0000u64).unwrap();
            a.sysretq().unwrap();
        });
        let (st, bus, _) = run(TestMode::Long64, &code, |st, bus| {
            long_env(st, bus);
            st.efer |= efer::SCE;
        });
        assert_eq!((rd(&bus, VEC, 4), rd(&bus, st.gpr[4], 8)), (13, 0));
        assert_eq!(rd(&bus, st.gpr[4] + 16, 8), K_CODE as u64, "fault in ring 0");
    }

    #[test]
    fn sysenter_sysexit_protected_mode() {
        let (user, l) = asm_at(32, CODE, |a| {
            let mut back = a.create_label();
            a.mov(ebp, esp).unwrap();
            a.sysenter().unwrap();
            a.set_label(&mut back).unwrap();
            a.mov(dword_ptr(DATA as u32 + 0x40), esp).unwrap();
            a.mov(eax, cs).unwrap();
            a.mov(dword_ptr(DATA as u32 + 0x44), eax).unwrap();
            a.mov(eax, ss).unwrap();
            a.mov(dword_ptr(DATA as u32 + 0x48), eax).unwrap();
            a.int(DONE as u32).unwrap();
            vec![back]
        });
        let (h, _) = asm_at(32, HANDLER, |a| {
            a.mov(dword_ptr(DATA as u32), esp).unwrap();
            a.mov(eax, cs).unwrap();
            a.mov(dword_ptr(DATA as u32 + 4), eax).unwrap();
            a.mov(eax, ss).unwrap();
            a.mov(dword_ptr(DATA as u32 + 8), eax).unwrap();
            a.pushfd().unwrap();
            a.pop(dword_ptr(DATA as u32 + 12)).unwrap();
            a.mov(edx, l[0] as u32).unwrap();
            a.mov(ecx, ebp).unwrap();
            a.sysexit().unwrap();
            vec![]
        });
        let (st, bus, exit) = run(TestMode::Prot32, &user, |st, bus| {
            prot_env(st, bus);
            st.msr.sysenter_cs = K_CODE as u64;
            st.msr.sysenter_esp = ESP0;
            st.msr.sysenter_eip = HANDLER;
            place(bus, HANDLER, &h);
            to_ring3(st, bus, U_CODE);
            st.rflags |= flags::IF;
        });
        assert_eq!(exit, Exit::Halted, "{}", st.dump());
        assert_eq!(rd(&bus, VEC, 4), DONE as u64);
        assert_eq!(rd(&bus, DATA, 4), ESP0);
        assert_eq!(rd(&bus, DATA + 4, 4), K_CODE as u64);
        assert_eq!(rd(&bus, DATA + 8, 4), K_DATA as u64);
        assert_eq!(rd(&bus, DATA + 12, 4) & flags::IF, 0, "SYSENTER clears IF");
        assert_eq!(rd(&bus, DATA + 0x40, 4), ESP3);
        assert_eq!(rd(&bus, DATA + 0x44, 4), U_CODE as u64, "SYSENTER_CS + 16, RPL 3");
        assert_eq!(rd(&bus, DATA + 0x48, 4), U_DATA as u64, "SYSENTER_CS + 24, RPL 3");
    }

    #[test]
    fn sysenter_sysexit_faults_and_64_bit() {
        // SYSENTER with IA32_SYSENTER_CS = 0: #GP(0).
        let code = asm(32, |a| a.sysenter().unwrap());
        let (st, bus, _) = run(TestMode::Prot32, &code, |st, bus| {
            prot_env(st, bus);
            to_ring3(st, bus, U_CODE);
        });
        assert_eq!((rd(&bus, VEC, 4), rd(&bus, st.gpr[4], 4)), (13, 0));
        // SYSEXIT at CPL 3: #GP(0).
        let code = asm(32, |a| a.sysexit().unwrap());
        let (st, bus, _) = run(TestMode::Prot32, &code, |st, bus| {
            prot_env(st, bus);
            st.msr.sysenter_cs = K_CODE as u64;
            to_ring3(st, bus, U_CODE);
        });
        assert_eq!((rd(&bus, VEC, 4), rd(&bus, st.gpr[4], 4)), (13, 0));
        // 64-bit: SYSEXITQ to CS = SYSENTER_CS + 32, SS = + 40; SYSENTER back to 64-bit ring 0.
        let (user, l) = asm_at(64, CODE, |a| {
            let mut back = a.create_label();
            a.mov(rdx, 0u64).unwrap();
            a.sysenter().unwrap();
            a.set_label(&mut back).unwrap();
            a.mov(eax, cs).unwrap();
            a.mov(qword_ptr(DATA + 0x48), rax).unwrap();
            a.mov(eax, ss).unwrap();
            a.mov(qword_ptr(DATA + 0x50), rax).unwrap();
            a.mov(qword_ptr(DATA + 0x58), rsp).unwrap();
            a.sysenter().unwrap();
            vec![back]
        });
        let (h, _) = asm_at(64, HANDLER, |a| {
            let mut fin = a.create_label();
            a.cmp(byte_ptr(FLAG), 0).unwrap();
            a.jne(fin).unwrap();
            a.mov(byte_ptr(FLAG), 1).unwrap();
            a.mov(qword_ptr(DATA), rsp).unwrap();
            a.mov(rcx, 0x5000u64).unwrap();
            a.mov(rdx, l[0]).unwrap();
            a.sysexitq().unwrap();
            a.set_label(&mut fin).unwrap();
            a.hlt().unwrap();
            vec![]
        });
        let (st, bus, exit) = run(TestMode::Long64, &user, |st, bus| {
            long_env(st, bus);
            st.msr.sysenter_cs = K_CODE as u64;
            st.msr.sysenter_esp = ESP0;
            st.msr.sysenter_eip = HANDLER;
            place(bus, HANDLER, &h);
            load(st, bus, Seg::Cs, U_CODE64);
            st.cpl = 3;
        });
        assert_eq!(exit, Exit::Halted, "{}", st.dump());
        assert_eq!(rd(&bus, VEC, 4), 0xff);
        assert_eq!(rd(&bus, DATA, 8), ESP0);
        assert_eq!(rd(&bus, DATA + 0x48, 8), 0x2b);
        assert_eq!(rd(&bus, DATA + 0x50, 8), 0x33);
        assert_eq!(rd(&bus, DATA + 0x58, 8), 0x5000);
        assert!(st.sreg(Seg::Cs).long() && st.cpl == 0);
    }
}
