//! The JIT against the interpreter on the system-call path, where the chaining loop goes on through
//! a block that ends with SYSCALL, SYSRET or IRETQ (`cpu::interp`'s `ends_through`; after the IRETQ
//! of a fault, with the RF = 1 it restores), or STI (`ends_sti`: into its interrupt shadow), or
//! CLAC/STAC (chainable), instead of returning to the loop's checks: a ring-3 program calls a
//! ring-0 handler with SYSCALL, which returns with SYSRETQ (sometimes enabling interrupts in the
//! kernel, once or twice, unmapping a page, returning with TF set, or with a non-canonical RCX
//! whose #GP the kernel fixes up, or after STAC and CLAC); the program also faults on the unmapped
//! page (#PF from ring 3, whose handler runs as Linux's entry does: CLAC, CR2 read mid-block, STI,
//! CLI, IRETQ back), raises INT 0x21 and single-steps a SYSCALL.
//! NMIs arrive too (at every third stop, or in a third of the programs at every stop), also while
//! one is being handled.
//! SFMASK varies per program (IF masked or not, TF masked or not). External interrupts become
//! pending at random retired counts, in user and kernel code, with IF clear or set; the interrupt
//! handler records the interrupted RIP, so a delivery one instruction late (after the SYSRET or
//! IRETQ that enabled it) shows. Registers, RFLAGS, RIP, the count, CPL, the exits, the TLB and RAM
//! must equal the interpreter's.
//!
//! `FERRITE_JIT_DIFF_CASES=N` runs N programs (default 120).

use cpu::Interpreter;
use cpu::interp::Exit;
use cpu::state::{Seg, Segment, efer, flags};
use cpu::testutil::{CODE, DATA, PD, TestBus, TestMode, cpu_in};
use iced_x86::code_asm::*;

mod common;
use common::{Rng, tlb_tags};

/// The IDT (16-byte gates) and the TSS (RSP0 at +4).
const IDT: u64 = 0x600;
const TSS: u64 = 0x900;
/// The kernel stack of interrupts from ring 3, and the user stack.
const RSP0: u64 = 0xc000;
const USTACK: u64 = 0x8000;
/// The page table behind linear 2..4 MiB (PD entry 1), of which only the first page is ever
/// mapped, the linear page itself and its frame.
const PT: u64 = 0x1e_0000;
const LIN: u64 = 0x20_0000;
const FRAME: u64 = 0x1f_0000;
/// The user program, and the handlers: SYSCALL (LSTAR), #DB, #GP, #PF, the external interrupt
/// (0x20), INT 0x21.
const USER: u64 = 0x3000;
const SYS_H: u64 = 0x4000;
const DB_H: u64 = 0x4200;
const GP_H: u64 = 0x4300;
const PF_H: u64 = 0x4400;
const IRQ_H: u64 = 0x4500;
const SOFT_H: u64 = 0x4600;
const NMI_H: u64 = 0x4700;
/// STAR[63:48]: SYSRET's SS = this + 8 (GDT entry 4), CS = this + 16 (entry 5), RPL 3.
const USER_BASE: u64 = 0x18;
/// RAX of the last SYSCALL: the kernel halts.
const FINISH: u32 = 99;

fn assemble(at: u64, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a).unwrap();
    a.assemble(at).unwrap()
}

/// One random piece of the user loop's body.
fn piece(a: &mut CodeAssembler, r: &mut Rng) -> Result<(), IcedError> {
    match r.below(11) {
        // SYSCALL with RAX = the kernel's action (see `setup`).
        n @ 0..=4 => {
            a.mov(eax, [0u32, 0, 1, 2, 3][n as usize])?;
            a.syscall()
        }
        5 => {
            a.mov(eax, 4 + r.below(4) as u32)?;
            a.syscall()
        }
        // A store into the page that may be unmapped: #PF from ring 3, the kernel maps it.
        6 => a.mov(qword_ptr(LIN + r.below(0x1f8) * 8), rcx),
        7 => a.int(0x21),
        // POPF sets TF: the SYSCALL after it is single-stepped (#DB at LSTAR).
        8 => {
            a.pushfq()?;
            a.or(qword_ptr(rsp), 0x100)?;
            a.mov(eax, 0)?;
            a.popfq()?;
            a.syscall()
        }
        9 => {
            a.add(rcx, rbx)?;
            a.inc(rbx)
        }
        _ => a.xor(rdx, rbx),
    }
}

fn program(r: &mut Rng) -> Vec<u8> {
    assemble(USER, |a| {
        let mut top = a.create_label();
        a.mov(r14d, 20 + r.below(40) as u32)?;
        a.set_label(&mut top)?;
        for _ in 0..2 + r.below(10) {
            piece(a, r)?;
        }
        a.dec(r14d)?;
        a.jnz(top)?;
        a.mov(eax, FINISH)?;
        a.syscall()
    })
}

fn write(bus: &mut TestBus, a: u64, v: &[u8]) {
    bus.ram[a as usize..a as usize + v.len()].copy_from_slice(v);
}

/// The machine: user-accessible paging, a GDT with user segments, a TSS, the IDT, the handlers,
/// SYSCALL enabled with `sfmask`; RIP at the ring-0 start, which SYSRETs to the program.
fn setup(bus: &mut TestBus, sfmask: u64) -> cpu::CpuState {
    let mut st = cpu_in(TestMode::Long64, bus);
    let q = |bus: &mut TestBus, a: u64, v: u64| write(bus, a, &v.to_le_bytes());
    // The U bit at every level; PD entry 1 points at PT, whose first entry starts not present.
    let pml4 = st.cr3;
    q(bus, pml4, (pml4 + 0x1000) | 7);
    q(bus, pml4 + 0x1000, PD | 7);
    for i in 0..512u64 {
        q(bus, PD + i * 8, (i << 21) | 0x87);
    }
    q(bus, PD + 8, PT | 7);
    // GDT: 0x08 kernel code, 0x10 kernel data (as `cpu_in`), 0x20 user data, 0x28 user code64.
    q(bus, 0x500 + 0x20, 0x00cf_f300_0000_ffff);
    q(bus, 0x500 + 0x28, 0x00af_fb00_0000_ffff);
    st.tr = Segment { selector: 0x30, attr: 0x8b, limit: 0x67, base: TSS };
    q(bus, TSS + 4, RSP0);
    for (v, h, dpl) in
        [(1u64, DB_H, 0u64), (2, NMI_H, 0), (13, GP_H, 0), (14, PF_H, 0), (0x20, IRQ_H, 0), (0x21, SOFT_H, 3)]
    {
        let lo = (h & 0xffff) | (0x08 << 16) | ((0x8e00 | dpl << 13) << 32) | ((h >> 16 & 0xffff) << 48);
        q(bus, IDT + v * 16, lo);
        q(bus, IDT + v * 16 + 8, h >> 32);
    }
    st.idtr.base = IDT;
    st.idtr.limit = 0x21f;
    st.efer |= efer::SCE;
    st.msr.star = USER_BASE << 48 | 0x08 << 32;
    st.msr.lstar = SYS_H;
    st.msr.sfmask = sfmask;
    // Ring 0 start: SYSRETQ to the program with IF set.
    let start = assemble(CODE, |a| {
        a.mov(rcx, USER)?;
        a.mov(r11, 0x202u64)?;
        a.mov(rsp, USTACK)?;
        a.sysretq()
    });
    write(bus, CODE, &start);
    // SYSCALL: RAX 0 a plain return, 1 unmaps LIN, 2 enables interrupts for a few instructions,
    // 3 returns with a non-canonical RCX (#GP in ring 0: the #GP handler returns properly), 4
    // returns with TF set, 5 on every fourth call (so that the block of the SYSRET has a link
    // to the return address, which a return with TF must not follow), 6 runs STAC and CLAC (each
    // ends its block), 7 STI twice (the second with IF set: no shadow) and a one-instruction
    // block after each; FINISH halts with interrupts off. It runs on the user stack.
    let sys = assemble(SYS_H, |a| {
        let [mut l1, mut l2, mut l3, mut l4, mut l5, mut l6, mut l7, mut l8, mut fin] =
            [(); 9].map(|_| a.create_label());
        a.inc(qword_ptr(DATA + 0x120))?;
        a.cmp(eax, FINISH as i32)?;
        a.je(fin)?;
        a.cmp(eax, 1)?;
        a.jne(l1)?;
        a.mov(rdx, PT)?;
        a.mov(qword_ptr(rdx), 0)?;
        a.invlpg(byte_ptr(LIN))?;
        a.set_label(&mut l1)?;
        a.cmp(eax, 2)?;
        a.jne(l2)?;
        a.sti()?;
        a.add(rbx, 7)?;
        a.imul_3(rdx, rbx, 3)?;
        a.cli()?;
        a.set_label(&mut l2)?;
        a.cmp(eax, 3)?;
        a.jne(l3)?;
        a.mov(rdi, rcx)?;
        a.mov(rcx, 0x8000_0000_0000u64)?;
        a.sysretq()?;
        a.set_label(&mut l3)?;
        a.cmp(eax, 4)?;
        a.jne(l4)?;
        a.or(r11, 0x100)?;
        a.set_label(&mut l4)?;
        a.cmp(eax, 5)?;
        a.jne(l5)?;
        a.test(byte_ptr(DATA + 0x120), 3)?;
        a.jnz(l5)?;
        a.or(r11, 0x100)?;
        a.set_label(&mut l5)?;
        a.cmp(eax, 6)?;
        a.jne(l6)?;
        a.stac()?;
        a.add(rbx, 3)?;
        a.clac()?;
        a.xor(rdx, rbx)?;
        a.set_label(&mut l6)?;
        a.cmp(eax, 7)?;
        a.jne(l7)?;
        a.sti()?;
        a.jmp(l8)?;
        a.set_label(&mut l8)?;
        a.sti()?;
        a.inc(rbx)?;
        a.cli()?;
        a.set_label(&mut l7)?;
        a.sysretq()?;
        a.set_label(&mut fin)?;
        a.cli()?;
        a.hlt()
    });
    write(bus, SYS_H, &sys);
    // #DB: counted, the RIP recorded; TF cleared in the interrupted RFLAGS.
    let db = assemble(DB_H, |a| {
        a.push(rax)?;
        a.inc(qword_ptr(DATA + 0x128))?;
        // The RIP after the stepped instruction, summed with the count: a trap one instruction
        // off (a TF set by SYSRET not honoured) shows.
        a.mov(rax, qword_ptr(rsp + 8))?;
        a.add(qword_ptr(DATA + 0x138), rax)?;
        a.imul_3(rax, qword_ptr(DATA + 0x128), 0x1f)?;
        a.xor(qword_ptr(DATA + 0x138), rax)?;
        a.and(qword_ptr(rsp + 24), !0x100)?;
        a.pop(rax)?;
        a.iretq()
    });
    write(bus, DB_H, &db);
    // #GP (only SYSRET's, in ring 0 on the user stack): drop the frame, return to RDI.
    let gp = assemble(GP_H, |a| {
        a.inc(qword_ptr(DATA + 0x130))?;
        // The RSP saved in the frame (error code, RIP, CS, RFLAGS, RSP, SS).
        a.mov(rsp, qword_ptr(rsp + 32))?;
        a.mov(rcx, rdi)?;
        a.sysretq()
    });
    write(bus, GP_H, &gp);
    // #PF: as Linux's entry, CLAC first, CR2 read in the middle of a block, interrupts enabled
    // while it works (STI, where an interrupt held back since the fault is delivered after the
    // next instruction) and disabled again before the IRETQ, which restores RF = 1.
    let pf = assemble(PF_H, |a| {
        a.clac()?;
        a.push(rax)?;
        a.mov(rax, cr2)?;
        a.add(qword_ptr(DATA + 0x150), rax)?;
        a.sti()?;
        a.mov(rax, PT)?;
        a.mov(qword_ptr(rax), (FRAME | 7) as i32)?;
        a.inc(qword_ptr(DATA + 0x110))?;
        a.cli()?;
        a.pop(rax)?;
        a.add(rsp, 8)?;
        a.iretq()
    });
    write(bus, PF_H, &pf);
    let irq = assemble(IRQ_H, |a| {
        a.push(rax)?;
        a.inc(qword_ptr(DATA + 0x100))?;
        // The interrupted RIP, summed with the count: a delivery one instruction off shows.
        a.mov(rax, qword_ptr(rsp + 8))?;
        a.add(qword_ptr(DATA + 0x118), rax)?;
        a.imul_3(rax, qword_ptr(DATA + 0x100), 0x1f)?;
        a.xor(qword_ptr(DATA + 0x118), rax)?;
        a.pop(rax)?;
        a.iretq()
    });
    write(bus, IRQ_H, &irq);
    // NMI: counted, the interrupted RIP recorded. NMIs stay blocked until its IRETQ, after which
    // one that became pending meanwhile is delivered at once (the IRETQ's block must not chain
    // past it).
    let nmi = assemble(NMI_H, |a| {
        a.push(rax)?;
        a.inc(qword_ptr(DATA + 0x140))?;
        a.mov(rax, qword_ptr(rsp + 8))?;
        a.add(qword_ptr(DATA + 0x148), rax)?;
        a.imul_3(rax, qword_ptr(DATA + 0x140), 0x1f)?;
        a.xor(qword_ptr(DATA + 0x148), rax)?;
        a.pop(rax)?;
        a.iretq()
    });
    write(bus, NMI_H, &nmi);
    let soft = assemble(SOFT_H, |a| {
        a.add(qword_ptr(DATA + 0x108), rcx)?;
        a.iretq()
    });
    write(bus, SOFT_H, &soft);
    st
}

/// Runs the program with interrupts (NMIs only with `nmis`) raised at the retired counts of
/// `gaps`; returns the state, the exits and the bus.
fn go(
    it: &mut Interpreter,
    code: &[u8],
    sfmask: u64,
    gaps: &[u64],
    nmis: bool,
) -> (cpu::CpuState, Vec<Exit>, TestBus) {
    let mut bus = TestBus::default();
    let mut st = setup(&mut bus, sfmask);
    write(&mut bus, USER, code);
    it.flush_all();
    let mut exits = Vec::new();
    let mut at = 0;
    let mut gaps = gaps.iter();
    for _ in 0..10_000 {
        let next = gaps.next().map_or(400_000, |g| {
            at += g;
            at
        });
        let e = it.run(&mut st, &mut bus, next);
        exits.push(e.clone());
        match e {
            // With `nmis` an NMI at every stop, else at every third; else an interrupt.
            Exit::BudgetSpent if nmis || exits.len() % 3 == 0 => bus.nmi = true,
            Exit::BudgetSpent => bus.irq = Some(0x20),
            _ => break,
        }
    }
    (st, exits, bus)
}

#[test]
fn jit_matches_interpreter_through_syscall_sysret_and_iretq_with_interrupts() {
    let cases: u64 = std::env::var("FERRITE_JIT_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(120);
    let mut r = Rng(0x7379_7374_6872_7501);
    let mut interp = Interpreter::new();
    let mut jit = Interpreter::new();
    jit.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
    let word =
        |b: &TestBus, o: u64| u64::from_le_bytes(b.ram[(DATA + o) as usize..][..8].try_into().unwrap());
    // Interrupts, system calls, page faults, #DB, #GP, NMIs over all programs.
    let mut seen = [0u64; 6];
    for case in 0..cases {
        let code = program(&mut r);
        let sfmask = [flags::IF, flags::IF | flags::TF, 0, flags::TF | flags::DF][r.below(4) as usize];
        let mut gaps = Vec::new();
        for _ in 0..r.below(60) {
            let span = if r.below(2) == 0 { 8 } else { 300 };
            gaps.push(1 + r.below(span));
        }
        let nmis = r.below(3) == 0;
        let (a, ea, ba) = go(&mut interp, &code, sfmask, &gaps, nmis);
        let (b, eb, bb) = go(&mut jit, &code, sfmask, &gaps, nmis);
        let key = |s: &cpu::CpuState| {
            (
                s.gpr,
                s.rflags,
                s.rip,
                s.icount,
                s.cpl,
                s.irq_shadow_icount,
                s.cr2,
                s.sreg(Seg::Cs).selector,
                s.nmi_blocked,
            )
        };
        assert_eq!(key(&a), key(&b), "case {case}: state (sfmask {sfmask:#x}, gaps {gaps:?})");
        assert_eq!(ea, eb, "case {case}: exits");
        assert_eq!(tlb_tags(&interp), tlb_tags(&jit), "case {case}: the TLB");
        assert!(ba.ram == bb.ram, "case {case}: RAM differs");
        assert!(
            matches!(ea.last(), Some(Exit::Halted)) && a.cpl == 0,
            "case {case}: did not end at the kernel's HLT: {:?} {}",
            ea.last(),
            a.dump()
        );
        for (k, o) in [0x100, 0x120, 0x110, 0x128, 0x130, 0x140].into_iter().enumerate() {
            seen[k] += word(&ba, o);
        }
    }
    println!("over {cases} programs: {seen:?} interrupts, system calls, page faults, #DB, #GP, NMIs");
    for (k, what) in ["interrupts", "system calls", "page faults", "#DB", "#GP", "NMIs"].iter().enumerate() {
        assert!(seen[k] > cases, "too few {what} to test anything: {}", seen[k]);
    }
}

/// The number before `what` in the backend's statistics line.
fn stat(it: &Interpreter, what: &str) -> u64 {
    let s = it.backend_stats().expect("a backend");
    let at = s.find(what).unwrap_or_else(|| panic!("no {what:?} in {s}"));
    s[..at].trim_end().rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{s}"))
}

/// A user loop of `calls` system calls of kernel action `action` (then FINISH), run by the
/// interpreter and by the JIT (threshold 2) with IF set and nothing pending: requires the same
/// registers, RFLAGS, RIP, count, CPL, exit and RAM, and returns the JIT's interpreter.
fn system_call_loop(action: u32, calls: u32) -> Interpreter {
    let code = assemble(USER, |a| {
        let mut top = a.create_label();
        a.mov(r14d, calls)?;
        a.set_label(&mut top)?;
        a.mov(eax, action)?;
        a.syscall()?;
        a.add(rcx, rbx)?;
        a.dec(r14d)?;
        a.jnz(top)?;
        a.mov(eax, FINISH)?;
        a.syscall()
    });
    let mut interp = Interpreter::new();
    let mut jit = Interpreter::new();
    jit.set_backend(Box::new(jit::Jit::new().expect("jit")), 2);
    let (a, ea, ba) = go(&mut interp, &code, flags::IF, &[], false);
    let (b, eb, bb) = go(&mut jit, &code, flags::IF, &[], false);
    assert_eq!((a.gpr, a.rflags, a.rip, a.icount, a.cpl), (b.gpr, b.rflags, b.rip, b.icount, b.cpl));
    assert_eq!(ea, eb);
    assert!(ba.ram == bb.ram, "RAM differs");
    jit
}

/// The mechanism itself: a loop of system calls (a ring-3 SYSCALL, a kernel SYSRETQ) with nothing
/// pending runs linked, SYSCALL's block into LSTAR's and SYSRET's into the user's, instead of
/// returning to the interpreter twice per call (as it did when both ended the chain); the result
/// equals the interpreter's.
#[test]
fn a_system_call_loop_runs_linked_through_syscall_and_sysret() {
    const CALLS: u32 = 2000;
    let jit = system_call_loop(0, CALLS);
    let entries = stat(&jit, "entries from the interpreter");
    println!("{CALLS} system calls: {entries} entries into translated code");
    assert!(entries < CALLS as u64 / 10, "{entries} entries for {CALLS} system calls: not linked");
}

/// Linux's page-fault path (CLAC at the entry, CR2 read, STI, CLI, IRETQ with RF = 1) runs
/// chained: a loop that unmaps its page with a system call (whose INVLPG ends a chain) and faults
/// on it enters translated code from the interpreter's loop twice per round (after the fault and
/// after the INVLPG), where it did six times (CLAC and STI ended chains, the CR2 read its block,
/// the IRETQ's RF sent the loop's checks); the result equals the interpreter's.
#[test]
fn a_page_fault_loop_runs_chained_through_clac_cr2_sti_and_iretq() {
    const ROUNDS: u32 = 1000;
    let code = assemble(USER, |a| {
        let mut top = a.create_label();
        a.mov(r14d, ROUNDS)?;
        a.set_label(&mut top)?;
        a.mov(eax, 1)?;
        a.syscall()?;
        a.mov(qword_ptr(LIN + 8), rcx)?;
        a.dec(r14d)?;
        a.jnz(top)?;
        a.mov(eax, FINISH)?;
        a.syscall()
    });
    let mut interp = Interpreter::new();
    let mut jit = Interpreter::new();
    jit.set_backend(Box::new(jit::Jit::new().expect("jit")), 2);
    let (a, ea, ba) = go(&mut interp, &code, flags::IF, &[], false);
    let (b, eb, bb) = go(&mut jit, &code, flags::IF, &[], false);
    assert_eq!((a.gpr, a.rflags, a.rip, a.icount, a.cpl), (b.gpr, b.rflags, b.rip, b.icount, b.cpl));
    assert_eq!(ea, eb);
    assert!(ba.ram == bb.ram, "RAM differs");
    let faults = u64::from_le_bytes(ba.ram[(DATA + 0x110) as usize..][..8].try_into().unwrap());
    assert_eq!(faults, ROUNDS as u64, "the loop faults once per round");
    // Runs of translated code entered from the loop's top (not those its chaining loop follows).
    let entered = jit.returns[cpu::interp::Return::Entered as usize];
    println!("{ROUNDS} page faults: {entered} entries from the loop's top; {:?}", jit.returns);
    assert!(entered < ROUNDS as u64 * 5 / 2, "{entered} entries for {ROUNDS} page faults: not chained");
}

/// Links past STI: a loop of system calls whose kernel enables interrupts with STI (opening the
/// shadow: SFMASK clears IF) and disables them again before SYSRETQ, with nothing pending, runs
/// linked from STI's block into the next (after `cpu::interp::events_after_sti` in generated
/// code) instead of returning to the interpreter's chaining loop once per call, as it did when
/// STI was not chainable; the result equals the interpreter's. (Interrupts pending at the STI,
/// where the link must not be followed, are `jit_matches_interpreter_through_...`'s cases.)
#[test]
fn a_system_call_loop_runs_linked_past_sti() {
    const CALLS: u32 = 2000;
    // The kernel's action 2: STI, two instructions in its shadow's block, CLI.
    let jit = system_call_loop(2, CALLS);
    let chained = jit.returns[cpu::interp::Return::Chained as usize];
    let entries = stat(&jit, "entries from the interpreter");
    println!(
        "{CALLS} system calls with STI: {entries} entries into translated code, {chained} chained by the loop"
    );
    assert!(
        chained < CALLS as u64 / 10,
        "{chained} follows by the chaining loop for {CALLS} calls: STI not linked"
    );
    assert!(entries < CALLS as u64 / 10, "{entries} entries for {CALLS} system calls: not linked");
}
