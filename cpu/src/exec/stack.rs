//! Stack instructions: PUSH/POP (register, r/m and immediate forms), PUSHA/PUSHAD, POPA/POPAD, ENTER
//! and LEAVE. (PUSHF/POPF and the segment-register pushes and pops live in `system`.)
//!
//! Every instruction here is all-or-nothing: when a stack access faults, RSP, RBP and the destination
//! are left as they were, so the instruction restarts cleanly after the fault handler.

use super::ops::*;
use super::{Handler, Insn};
use crate::fault::Fault;
use crate::mem::Ctx;
use crate::paging::AccessKind;
use crate::regs::size_mask;
use crate::state::{Mode, Seg};
use iced_x86::{Code, OpKind};

/// Handlers of this family.
pub fn lookup(code: Code) -> Option<Handler> {
    use Code as C;
    Some(match code {
        C::Push_r16 | C::Push_r32 | C::Push_r64 | C::Push_rm16 | C::Push_rm32 | C::Push_rm64 => push_rm,
        C::Push_imm16 | C::Pushw_imm8 => push_imm::<2>,
        C::Pushd_imm32 | C::Pushd_imm8 => push_imm::<4>,
        C::Pushq_imm32 | C::Pushq_imm8 => push_imm::<8>,
        C::Pop_r16 | C::Pop_r32 | C::Pop_r64 => pop_reg,
        C::Pop_rm16 | C::Pop_rm32 | C::Pop_rm64 => pop_rm,
        C::Pushaw => pusha::<2>,
        C::Pushad => pusha::<4>,
        C::Popaw => popa::<2>,
        C::Popad => popa::<4>,
        C::Enterw_imm16_imm8 => enter::<2>,
        C::Enterd_imm16_imm8 => enter::<4>,
        C::Enterq_imm16_imm8 => enter::<8>,
        C::Leavew => leave::<2>,
        C::Leaved => leave::<4>,
        C::Leaveq => leave::<8>,
        _ => return None,
    })
}

/// PUSH r / PUSH r/m. The source is read before RSP moves, so `PUSH RSP` pushes the old value and
/// `PUSH [RSP+d]` addresses with the old RSP.
fn push_rm(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let size = op_size(insn, 0);
    let v = read_op(ctx, insn, 0)?;
    push(ctx, size, v & size_mask(size))
}

/// PUSH imm (the immediate is sign-extended to the operand size `N`).
fn push_imm<const N: u32>(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let v = insn.i.immediate(0);
    push(ctx, N, v & size_mask(N))
}

/// POP r. `POP RSP` leaves the popped value in RSP (the increment is overwritten).
fn pop_reg(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let g = reg_op(insn, 0)?;
    let v = pop(ctx, g.size)?;
    ctx.st.write_gpr(g, v);
    Ok(())
}

/// POP r/m. For a memory destination the effective address is computed after RSP is incremented (so
/// `POP [RSP]` stores at the new top of stack); if the store faults, RSP is restored.
fn pop_rm(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    if insn.i.op0_kind() == OpKind::Register {
        return pop_reg(ctx, insn);
    }
    let size = op_size(insn, 0);
    let ss = sp_size(ctx);
    let v = stack_peek(ctx, 0, size)?;
    let old = ctx.st.gpr[4];
    let sp = ctx.st.reg(4, ss).wrapping_add(size as u64) & size_mask(ss);
    ctx.st.set_reg(4, ss, sp);
    if let Err(f) = write_op(ctx, insn, 0, v) {
        ctx.st.gpr[4] = old;
        return Err(f);
    }
    Ok(())
}

/// PUSHA/PUSHAD: pushes AX, CX, DX, BX, the original SP, BP, SI, DI. All eight slots are checked for
/// writing before anything is stored, so a fault leaves memory and SP untouched.
fn pusha<const N: u32>(ctx: &mut Ctx<'_>, _insn: &Insn) -> Result<(), Fault> {
    if ctx.st.mode() == Mode::Long64 {
        return Err(Fault::ud());
    }
    let ss = sp_size(ctx);
    let m = size_mask(ss);
    let sp = ctx.st.reg(4, ss);
    let old_sp = ctx.st.reg(4, N);
    // Segment checks come first for all eight slots (SDM: #SS(0) if the starting or ending stack address
    // is outside the limit, before anything is written). The stores then happen in order (EAX, ECX, EDX,
    // EBX, old ESP, EBP, ESI, EDI): a page fault on one leaves the earlier ones in memory and ESP
    // unchanged (measured on this host's CPU by the differential tester).
    let mut lins = [0u64; 8];
    for (k, lin) in lins.iter_mut().enumerate() {
        let off = sp.wrapping_sub(N as u64 * (k as u64 + 1)) & m;
        let l = ctx.seg_lin(Seg::Ss, off, N, AccessKind::Write)?;
        ctx.check_alignment(l, N)?;
        *lin = l;
    }
    for (k, &lin) in lins.iter().enumerate() {
        let v = if k == 4 { old_sp } else { ctx.st.reg(k, N) };
        ctx.write_lin(lin, N, v)?;
    }
    ctx.st.set_reg(4, ss, sp.wrapping_sub(8 * N as u64) & m);
    Ok(())
}

/// POPA/POPAD: pops DI, SI, BP, (skips SP), BX, DX, CX, AX. All eight are read before any register
/// changes.
fn popa<const N: u32>(ctx: &mut Ctx<'_>, _insn: &Insn) -> Result<(), Fault> {
    if ctx.st.mode() == Mode::Long64 {
        return Err(Fault::ud());
    }
    let ss = sp_size(ctx);
    let mut vals = [0u64; 8];
    for (k, v) in vals.iter_mut().enumerate() {
        *v = stack_peek(ctx, N as u64 * k as u64, N)?;
    }
    // vals[0] is EDI (register 7) ... vals[7] is EAX (register 0); vals[3] (ESP) is discarded.
    for (k, &v) in vals.iter().enumerate() {
        let r = 7 - k;
        if r != 4 {
            ctx.st.set_reg(r, N, v);
        }
    }
    let sp = ctx.st.reg(4, ss).wrapping_add(8 * N as u64) & size_mask(ss);
    ctx.st.set_reg(4, ss, sp);
    Ok(())
}

/// ENTER imm16, imm8 with operand size `N`: pushes RBP, copies `level - 1` frame pointers from the old
/// frame, pushes the new frame pointer (level > 0), then allocates `imm16` bytes. The stack pointer
/// and the frame-pointer temporary are stack-size wide (SS.B); the pushes and the RBP update are
/// operand-size wide. Registers are committed only after every access (including a write check at the
/// final stack pointer, which the SDM specifies) has succeeded.
fn enter<const N: u32>(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let alloc = insn.i.immediate16() as u64;
    let level = insn.i.immediate8_2nd() & 0x1f;
    let ss = sp_size(ctx);
    let m = size_mask(ss);
    let n = N as u64;
    let mut sp = ctx.st.reg(4, ss).wrapping_sub(n) & m;
    let bp_val = ctx.st.reg(5, N);
    ctx.write_mem(Seg::Ss, sp, N, bp_val)?;
    let frame = sp;
    if level > 0 {
        let mut bp = ctx.st.reg(5, ss);
        for _ in 1..level {
            bp = bp.wrapping_sub(n) & m;
            let v = ctx.read_mem(Seg::Ss, bp, N)?;
            sp = sp.wrapping_sub(n) & m;
            ctx.write_mem(Seg::Ss, sp, N, v)?;
        }
        sp = sp.wrapping_sub(n) & m;
        ctx.write_mem(Seg::Ss, sp, N, frame & size_mask(N))?;
    }
    sp = sp.wrapping_sub(alloc) & m;
    let lin = ctx.seg_lin(Seg::Ss, sp, N, AccessKind::Write)?;
    ctx.probe_write(lin, N)?;
    ctx.st.set_reg(5, N.min(ss), frame);
    ctx.st.set_reg(4, ss, sp);
    Ok(())
}

/// LEAVE: RSP = RBP (stack size), then RBP = pop (operand size `N`). A faulting pop changes nothing.
fn leave<const N: u32>(ctx: &mut Ctx<'_>, _insn: &Insn) -> Result<(), Fault> {
    let ss = sp_size(ctx);
    let sp = ctx.st.reg(5, ss);
    let v = ctx.read_mem(Seg::Ss, sp, N)?;
    ctx.st.set_reg(4, ss, sp.wrapping_add(N as u64) & size_mask(ss));
    ctx.st.set_reg(5, N, v);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::string::testkit::Machine;
    use crate::fault::Fault;
    use crate::interp::Exit;
    use crate::state::{Seg, attr};
    use crate::testutil::*;
    use iced_x86::code_asm::{
        ax, bp, bx, cx, dword_ptr, eax, ebp, ebx, ecx, edx, esp, qword_ptr, rax, rbx, rcx, rsp, word_ptr,
    };

    const DATA_: u64 = DATA;

    #[test]
    fn push_pop_every_form_and_mode() {
        // 16-bit (real mode): register, immediate (imm8 sign-extended), memory.
        let code = asm(16, |a| {
            a.mov(ax, 0x1234).unwrap();
            a.push(ax).unwrap();
            a.push(-2i32).unwrap(); // push imm8 -> 0xfffe
            a.push(0x5678).unwrap(); // push imm16
            a.push(word_ptr(0x100)).unwrap();
            a.pop(bx).unwrap();
            a.pop(word_ptr(0x102)).unwrap();
            a.pop(cx).unwrap();
            a.push(eax).unwrap(); // 66 50: 4 bytes on a 16-bit stack
            a.pop(ebx).unwrap();
        });
        let (st, bus, exit) = run(TestMode::Real, &code, |st, bus| {
            st.gpr[0] = 0xaaaa_0000;
            bus.ram[0x100..0x102].copy_from_slice(&[0xcd, 0xab]);
        });
        assert_eq!(exit, Exit::Halted);
        assert_eq!(st.gpr[3], 0xaaaa_1234, "pop ebx of the pushed eax");
        assert_eq!(&bus.ram[0x102..0x104], &[0x78, 0x56]);
        assert_eq!(st.gpr[1] & 0xffff, 0xfffe);
        assert_eq!(st.gpr[4], STACK - 2, "one word (the first push) left");
        assert_eq!(&bus.ram[STACK as usize - 2..STACK as usize], &[0x34, 0x12]);

        // 32-bit: imm8 sign-extends to 32 bits, imm32, memory, 16-bit push with 66.
        let code = asm(32, |a| {
            a.push(-1i32).unwrap();
            a.push(0x1234_5678).unwrap();
            a.push(dword_ptr(DATA_ as u32)).unwrap();
            a.push(ax).unwrap();
            a.pop(ecx).unwrap(); // ax (2 bytes) + low half of the dword below
            a.pop(edx).unwrap();
            a.pop(ebx).unwrap();
        });
        let (st, _, exit) = run(TestMode::Prot32, &code, |st, bus| {
            st.gpr[0] = 0x4444_5555;
            bus.ram[DATA as usize..DATA as usize + 4].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        });
        assert_eq!(exit, Exit::Halted);
        assert_eq!(st.gpr[1], 0xbeef_5555);
        assert_eq!(st.gpr[2], 0x5678_dead);
        assert_eq!(st.gpr[3], 0xffff_1234);
        assert_eq!(st.gpr[4], STACK - 2);

        // 64-bit: 8-byte pushes (imm32 sign-extended), 16-bit with 66, no 32-bit form.
        let code = asm(64, |a| {
            a.push(-8i32).unwrap();
            a.push(0x7fff_ffff).unwrap();
            a.push(qword_ptr(DATA_)).unwrap();
            a.push(ax).unwrap();
            a.pop(bx).unwrap();
            a.pop(rcx).unwrap();
            a.pop(qword_ptr(DATA_ + 8)).unwrap();
            a.pop(rax).unwrap();
        });
        let (st, bus, exit) = run(TestMode::Long64, &code, |st, bus| {
            st.gpr[0] = 0x77;
            st.gpr[3] = 0x1111_2222_3333_4444;
            bus.ram[DATA as usize..DATA as usize + 8]
                .copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        });
        assert_eq!(exit, Exit::Halted);
        assert_eq!(st.gpr[3], 0x1111_2222_3333_0077);
        assert_eq!(st.gpr[1], 0x0102_0304_0506_0708);
        assert_eq!(&bus.ram[DATA as usize + 8..DATA as usize + 16], &0x7fff_ffffu64.to_le_bytes());
        assert_eq!(st.gpr[0], (-8i64) as u64);
        assert_eq!(st.gpr[4], STACK);
    }

    #[test]
    fn push_and_pop_of_the_stack_pointer() {
        let code = asm(64, |a| {
            a.push(rsp).unwrap(); // pushes the old RSP
            a.pop(rax).unwrap();
            a.push(qword_ptr(rsp)).unwrap(); // address uses the old RSP
            a.mov(rbx, 0x1234i64).unwrap();
            a.push(rbx).unwrap();
            a.push(rbx).unwrap();
            a.pop(qword_ptr(rsp)).unwrap(); // address computed after the increment
            a.pop(rcx).unwrap();
            a.push(0x4000).unwrap();
            a.pop(rsp).unwrap(); // RSP = popped value
        });
        let (st, bus, exit) = run(TestMode::Long64, &code, |_, bus| {
            bus.ram[STACK as usize..STACK as usize + 8].copy_from_slice(&0xabcdu64.to_le_bytes());
        });
        assert_eq!(exit, Exit::Halted);
        assert_eq!(st.gpr[0], STACK);
        assert_eq!(st.gpr[1], 0x1234);
        assert_eq!(st.gpr[4], 0x4000);
        assert_eq!(&bus.ram[STACK as usize - 8..STACK as usize], &0xabcdu64.to_le_bytes());

        // 32-bit: POP [ESP+4] stores 4 bytes above the new ESP.
        let code = asm(32, |a| {
            a.push(0x11).unwrap();
            a.push(0x22).unwrap();
            a.push(0x33).unwrap();
            a.pop(dword_ptr(esp + 4)).unwrap();
        });
        let (st, bus, _) = run(TestMode::Prot32, &code, |_, _| {});
        assert_eq!(st.gpr[4], STACK - 8);
        let at = |a: u64| u32::from_le_bytes(bus.ram[a as usize..a as usize + 4].try_into().unwrap());
        assert_eq!((at(STACK - 8), at(STACK - 4)), (0x22, 0x33));
    }

    #[test]
    fn faulting_push_and_pop_leave_rsp_unchanged() {
        // SS limit 0x7fff: a push from ESP = 0x1 wraps to 0xfffffffd, beyond the limit: #SS(0).
        for code in [asm(32, |a| a.push(eax).unwrap()), asm(32, |a| a.push(0x1234_5678).unwrap())] {
            let mut m = Machine::new(TestMode::Prot32, &code);
            let ss = m.st.sreg_mut(Seg::Ss);
            ss.limit = 0x7fff;
            ss.attr &= !attr::G;
            m.st.gpr[4] = 1;
            assert_eq!(m.step(), Err(Fault::ss(0)));
            assert_eq!((m.st.gpr[4], m.st.rip), (1, CODE));
        }
        // POP into a read-only DS: #GP(0) and ESP restored (it was incremented to form the address).
        let code = asm(32, |a| a.pop(dword_ptr(esp)).unwrap());
        let mut m = Machine::new(TestMode::Prot32, &code);
        m.st.sreg_mut(Seg::Ds).attr &= !attr::RW;
        // `pop [esp]` uses SS, which is writable: this one succeeds...
        m.step().unwrap();
        assert_eq!(m.st.gpr[4], STACK + 4);
        // ...but an explicit DS operand faults and restores ESP.
        let code = asm(32, |a| a.pop(dword_ptr(eax)).unwrap());
        let mut m = Machine::new(TestMode::Prot32, &code);
        m.st.sreg_mut(Seg::Ds).attr &= !attr::RW;
        m.st.gpr[0] = DATA;
        assert_eq!(m.step(), Err(Fault::gp0()));
        assert_eq!(m.st.gpr[4], STACK);
    }

    #[test]
    fn pusha_popa_round_trip() {
        for (mode, bits) in [(TestMode::Real, 16), (TestMode::Prot32, 32)] {
            for wide in [false, true] {
                let code = asm(bits, |a| {
                    if wide {
                        a.pushad().unwrap();
                    } else {
                        a.pusha().unwrap();
                    }
                });
                let mut m = Machine::new(mode, &code);
                let vals: [u64; 8] = [
                    0x1111_0000,
                    0x2222_0001,
                    0x3333_0002,
                    0x4444_0003,
                    STACK,
                    0x6666_0005,
                    0x7777_0006,
                    0x8888_0007,
                ];
                m.st.gpr[..8].copy_from_slice(&vals);
                m.step().unwrap();
                let n = if wide { 4 } else { 2 };
                let mask = if wide { 0xffff_ffff } else { 0xffff };
                assert_eq!(m.st.gpr[4], STACK - 8 * n);
                for (k, v) in vals.iter().enumerate() {
                    assert_eq!(
                        m.peek_le(STACK - n * (k as u64 + 1), n as usize),
                        v & mask,
                        "{mode:?} {wide} slot {k}"
                    );
                }
                // Scramble, then POPA restores everything but SP (which just moves back).
                for r in [0usize, 1, 2, 3, 5, 6, 7] {
                    m.st.gpr[r] = 0x5a5a_5a5a_5a5a_5a5a;
                }
                m.poke(STACK - 5 * n, &[0xee; 4][..n as usize]); // the saved SP slot is ignored
                let code = asm(bits, |a| {
                    if wide {
                        a.popad().unwrap();
                    } else {
                        a.popa().unwrap();
                    }
                });
                m.poke(CODE, &code);
                m.st.rip = CODE;
                m.step().unwrap();
                assert_eq!(m.st.gpr[4], STACK);
                for r in [0usize, 1, 2, 3, 5, 6, 7] {
                    let want =
                        if wide { vals[r] } else { (0x5a5a_5a5a_5a5a_5a5a & !0xffff) | (vals[r] & 0xffff) };
                    assert_eq!(m.st.gpr[r], want, "{mode:?} wide {wide} reg {r}");
                }
            }
        }
    }

    #[test]
    fn pusha_checks_the_segment_limit_first_and_is_invalid_in_64_bit_mode() {
        // ESP = 0x10 with a 32-bit stack: the fifth slot wraps to 0xfffffffc, beyond the SS limit.
        let code = asm(32, |a| a.pushad().unwrap());
        let mut m = Machine::new(TestMode::Prot32, &code);
        let ss = m.st.sreg_mut(Seg::Ss);
        ss.limit = 0xffff;
        ss.attr &= !attr::G;
        m.st.gpr[4] = 0x10;
        m.st.gpr[0] = 0x1234;
        assert_eq!(m.step(), Err(Fault::ss(0)));
        assert_eq!(m.st.gpr[4], 0x10);
        assert_eq!(m.peek(0, 0x10), vec![0; 0x10]);
        // 64-bit mode: 0x60 / 0x61 do not decode (#UD).
        for b in [0x60u8, 0x61] {
            let mut m = Machine::new(TestMode::Long64, &[b]);
            assert_eq!(m.step(), Err(Fault::ud()));
        }
    }

    /// Reference ENTER on a flat stack; returns (memory writes, new SP, new BP).
    fn enter_model(
        sp: u64,
        bp0: u64,
        n: u64,
        ss_mask: u64,
        alloc: u64,
        level: u64,
        mem: &impl Fn(u64) -> u64,
    ) -> (Vec<(u64, u64)>, u64, u64) {
        let mut w = Vec::new();
        let mut sp = sp.wrapping_sub(n) & ss_mask;
        w.push((sp, bp0 & crate::regs::size_mask(n as u32)));
        let frame = sp;
        let level = level & 31;
        if level > 0 {
            let mut t = bp0 & ss_mask;
            for _ in 1..level {
                t = t.wrapping_sub(n) & ss_mask;
                sp = sp.wrapping_sub(n) & ss_mask;
                w.push((sp, mem(t)));
            }
            sp = sp.wrapping_sub(n) & ss_mask;
            w.push((sp, frame & crate::regs::size_mask(n as u32)));
        }
        (w, sp.wrapping_sub(alloc) & ss_mask, frame)
    }

    /// ENTER / LEAVE bytes with operand size `n` in `bits`-bit code.
    fn enter_bytes(bits: u32, n: u64, alloc: u16, level: u8) -> Vec<u8> {
        let mut v = if op_prefix(bits, n) { vec![0x66] } else { vec![] };
        v.extend_from_slice(&[0xc8, alloc as u8, (alloc >> 8) as u8, level]);
        v
    }
    fn leave_bytes(bits: u32, n: u64) -> Vec<u8> {
        let mut v = if op_prefix(bits, n) { vec![0x66] } else { vec![] };
        v.push(0xc9);
        v
    }
    fn op_prefix(bits: u32, n: u64) -> bool {
        match bits {
            16 => n != 2,
            32 => n != 4,
            _ => n != 8,
        }
    }

    #[test]
    fn enter_with_nesting_levels_and_leave() {
        // (mode, bits, operand size)
        let cases = [
            (TestMode::Real, 16, 2u64),
            (TestMode::Real, 16, 4),
            (TestMode::Prot32, 32, 4),
            (TestMode::Prot32, 32, 2),
            (TestMode::Long64, 64, 8),
            (TestMode::Long64, 64, 2),
        ];
        for (mode, bits, n) in cases {
            for level in [0u8, 1, 2, 3, 0x23] {
                let alloc = 0x18u16;
                let code = enter_bytes(bits, n, alloc, level);
                let mut m = Machine::new(mode, &code);
                let bp0 = 0x6000u64;
                m.st.gpr[5] = bp0;
                // The previous frame's display: distinct values below BP.
                for k in 1..4u64 {
                    let v = 0x0101_0101_0101_0101u64.wrapping_mul(k) ^ 0xa0a0;
                    m.poke(bp0 - k * n, &v.to_le_bytes()[..n as usize]);
                }
                let snapshot = m.bus.ram.clone();
                let mem = |a: u64| {
                    let mut b = [0u8; 8];
                    b[..n as usize].copy_from_slice(&snapshot[a as usize..(a + n) as usize]);
                    u64::from_le_bytes(b)
                };
                let ss_mask = match bits {
                    16 => 0xffff,
                    32 => 0xffff_ffff,
                    _ => u64::MAX,
                };
                let (writes, sp, frame) =
                    enter_model(STACK, bp0, n, ss_mask, alloc as u64, level as u64, &mem);
                m.step().unwrap();
                for (a, v) in &writes {
                    assert_eq!(m.peek_le(*a, n as usize), *v, "{mode:?} n={n} level={level} at {a:#x}");
                }
                assert_eq!(m.st.gpr[4], sp, "{mode:?} n={n} level={level}");
                let bp_mask = if n == 2 || bits == 16 { 0xffff } else { u64::MAX };
                assert_eq!(m.st.gpr[5] & bp_mask, frame & bp_mask, "{mode:?} n={n} level={level}");
                if level & 31 == 3 {
                    assert_eq!(writes.len(), 4);
                }

                // LEAVE undoes it.
                m.poke(CODE, &leave_bytes(bits, n));
                m.st.rip = CODE;
                m.step().unwrap();
                assert_eq!(m.st.gpr[4], STACK, "{mode:?} n={n} level={level}");
                assert_eq!(m.st.gpr[5] & crate::regs::size_mask(n as u32), bp0);
            }
        }
    }

    #[test]
    fn enter_checks_the_final_stack_pointer_and_commits_nothing_on_fault() {
        // SS limit 0x7fff (expand-up, byte granular), ESP = 0x100: pushes are fine, but ESP - 0x200
        // wraps beyond the limit: #SS(0) with ESP/EBP unchanged.
        let code = enter_bytes(32, 4, 0x200, 2);
        let mut m = Machine::new(TestMode::Prot32, &code);
        let ss = m.st.sreg_mut(Seg::Ss);
        ss.limit = 0x7fff;
        ss.attr &= !attr::G;
        m.st.gpr[4] = 0x100;
        m.st.gpr[5] = 0x200;
        assert_eq!(m.step(), Err(Fault::ss(0)));
        assert_eq!((m.st.gpr[4], m.st.gpr[5]), (0x100, 0x200));
        // LEAVE whose pop faults changes nothing either.
        let code = leave_bytes(32, 4);
        let mut m = Machine::new(TestMode::Prot32, &code);
        let ss = m.st.sreg_mut(Seg::Ss);
        ss.limit = 0x7fff;
        ss.attr &= !attr::G;
        m.st.gpr[5] = 0x7ffe;
        assert_eq!(m.step(), Err(Fault::ss(0)));
        assert_eq!((m.st.gpr[4], m.st.gpr[5]), (STACK, 0x7ffe));
    }

    #[test]
    fn sixteen_bit_stack_in_32_bit_code() {
        // SS.B = 0: SP wraps at 64 KiB and the upper half of ESP is preserved.
        let code = asm(32, |a| {
            a.push(ebp).unwrap();
            a.pop(ebx).unwrap();
            a.push(bp).unwrap();
            a.pop(ecx).unwrap();
        });
        let mut m = Machine::new(TestMode::Prot32, &code);
        m.st.sreg_mut(Seg::Ss).attr &= !attr::DB;
        m.st.gpr[4] = 0x1234_0002;
        m.st.gpr[5] = 0xcafe_babe;
        m.step().unwrap();
        assert_eq!(m.st.gpr[4], 0x1234_fffe);
        // One 4-byte access at SS:0xfffe: the bytes do not wrap within the 16-bit offset space.
        assert_eq!(m.peek_le(0xfffe, 4), 0xcafe_babe);
        m.step().unwrap();
        assert_eq!((m.st.gpr[3], m.st.gpr[4]), (0xcafe_babe, 0x1234_0002));
        m.step().unwrap();
        assert_eq!(m.st.gpr[4], 0x1234_0000);
        assert_eq!(m.peek_le(0, 2), 0xbabe);
        m.step().unwrap();
        // POP ECX reads 4 bytes at SP 0: the BP just pushed and two untouched zero bytes.
        assert_eq!((m.st.gpr[1], m.st.gpr[4]), (0x0000_babe, 0x1234_0004));
    }

    /// Runs `enter 0x18, $lvl` (after the `$pfx` prefix bytes: none, or 0x66 for the 16-bit form)
    /// natively on a private stack with RSP/RBP set to `$sp`/`$bp`; returns the final (RSP, RBP).
    #[cfg(target_arch = "x86_64")]
    macro_rules! host_enter {
        ($pfx:literal, $lvl:literal, $sp:expr, $bp:expr) => {{
            let mut scratch = [0u64; 6];
            scratch[2] = $sp;
            scratch[3] = $bp;
            let p = scratch.as_mut_ptr();
            // SAFETY: RBP and RSP are saved in `scratch` and restored before the block ends; while
            // swapped, RSP points into the caller's 64 KiB buffer with 32 KiB below it, enough for
            // ENTER's pushes and for a signal frame, and ENTER reads only inside that buffer (RBP is
            // in it too). `p` stays valid for the whole block.
            unsafe {
                core::arch::asm!(
                    "mov [{p}], rbp",
                    "mov [{p} + 8], rsp",
                    "mov rsp, [{p} + 16]",
                    "mov rbp, [{p} + 24]",
                    $pfx,
                    concat!(".byte 0xc8, 0x18, 0x00, ", stringify!($lvl)),
                    "mov [{p} + 32], rsp",
                    "mov [{p} + 40], rbp",
                    "mov rbp, [{p}]",
                    "mov rsp, [{p} + 8]",
                    p = in(reg) p,
                );
            }
            (scratch[4], scratch[5])
        }};
    }

    #[cfg(target_arch = "x86_64")]
    /// A Long64 test machine that maps the 2 MiB-aligned region holding `h` (a host address whose low
    /// 21 bits are 0x40000) onto guest physical 0..2 MiB, so the guest sees the buffer at `h` itself.
    fn machine_at_host_address(code: &[u8], h: u64) -> Option<Machine> {
        let mut m = Machine::new(TestMode::Long64, code);
        let (i4, i3, i2) = ((h >> 39) & 511, (h >> 30) & 511, (h >> 21) & 511);
        let w = |m: &mut Machine, a: u64, v: u64| m.poke(a, &v.to_le_bytes());
        if i4 != 0 {
            w(&mut m, 0x100000 + i4 * 8, 0x110000 | 3);
            w(&mut m, 0x110000 + i3 * 8, 0x111000 | 3);
        } else if i3 != 0 {
            w(&mut m, 0x101000 + i3 * 8, 0x111000 | 3);
        } else {
            return None;
        }
        w(&mut m, 0x111000 + i2 * 8, 0x83);
        Some(m)
    }

    /// Compares ENTER (64- and 16-bit operand size) at nesting `$lvl` with the host, on the same
    /// addresses (so the frame pointers it stores agree too).
    #[cfg(target_arch = "x86_64")]
    macro_rules! enter_vs_host {
        ($lvl:literal) => {{
            for wide in [true, false] {
                let mut backing = vec![0u8; 0x40_0000];
                let base = backing.as_ptr() as usize;
                let off = (0x40000usize.wrapping_sub(base)) & 0x1f_ffff;
                let buf = &mut backing[off..off + 0x10000];
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = (i * 13 + 7) as u8;
                }
                let h = buf.as_ptr() as u64;
                let code: Vec<u8> =
                    if wide { vec![0xc8, 0x18, 0, $lvl] } else { vec![0x66, 0xc8, 0x18, 0, $lvl] };
                let Some(mut m) = machine_at_host_address(&code, h) else {
                    return; // the buffer is in the identity-mapped first GiB: cannot alias it
                };
                m.poke(0x40000, buf);
                m.st.gpr[4] = h + 0x8000;
                m.st.gpr[5] = h + 0x9000;
                m.step().unwrap();
                let (hsp, hbp) = if wide {
                    host_enter!("", $lvl, h + 0x8000, h + 0x9000)
                } else {
                    host_enter!(".byte 0x66", $lvl, h + 0x8000, h + 0x9000)
                };
                assert_eq!((m.st.gpr[4], m.st.gpr[5]), (hsp, hbp), "wide {wide} level {}", $lvl);
                assert!(m.peek(0x40000, 0x10000) == buf, "stack contents, wide {wide} level {}", $lvl);
            }
        }};
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn enter_matches_the_host_in_64_bit_mode() {
        enter_vs_host!(0);
        enter_vs_host!(1);
        enter_vs_host!(2);
        enter_vs_host!(3);
        enter_vs_host!(7);
        enter_vs_host!(37); // 37 & 31 = 5
    }
}
