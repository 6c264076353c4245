//! The JIT against the interpreter on the paths that leave translated code for the interpreter's
//! loop: STI and its interrupt shadow, CLI, INT n and IRETQ, page faults whose handler maps the page
//! and IRETQs back, INVLPG, with external interrupts becoming pending at random retired counts (the
//! machine's way: the engine runs to the count, the interrupt is raised, the engine runs on). The
//! interrupt handler counts deliveries and records the interrupted RIP, so an interrupt taken one
//! instruction early or late (the STI shadow run whole while one was pending, say) shows. Registers,
//! RFLAGS, RIP, the count, the exits, the TLB and RAM must equal the interpreter's.
//!
//! `FERRITE_JIT_DIFF_CASES=N` runs N programs (default 150).

use cpu::Interpreter;
use cpu::interp::Exit;
use cpu::testutil::{CODE, DATA, PD, TestBus, TestMode, cpu_in};
use iced_x86::code_asm::*;

mod common;
use common::{Rng, tlb_tags};

/// The IDT (16-byte gates).
const IDT: u64 = 0x600;
/// The page table behind linear 2..4 MiB (PD entry 1), of which only the first page is ever mapped.
const PT: u64 = 0x1e_0000;
/// The linear page the program's stores fault on while it is unmapped, and its frame.
const LIN: u64 = 0x20_0000;
const FRAME: u64 = 0x1f_0000;
/// Handlers: #PF, the external interrupt (0x20), INT 0x21.
const PF_H: u64 = 0x4000;
const IRQ_H: u64 = 0x4100;
const SOFT_H: u64 = 0x4200;

fn assemble(at: u64, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a).unwrap();
    a.assemble(at).unwrap()
}

/// One random piece of the loop body.
fn piece(a: &mut CodeAssembler, r: &mut Rng) -> Result<(), IcedError> {
    match r.below(9) {
        0 => a.sti(),
        1 => a.cli(),
        2 => a.int(0x21),
        // A store into the page that may be unmapped: #PF, the handler maps it, the store retries.
        3 => a.mov(qword_ptr(LIN + r.below(0x1f8) * 8), rcx),
        // Unmap it again (the PTE store hits a page of its own; INVLPG drops the TLB entry).
        4 => {
            a.mov(rax, PT)?;
            a.mov(qword_ptr(rax), 0)?;
            a.invlpg(byte_ptr(LIN))
        }
        5 => {
            a.add(rcx, rbx)?;
            a.inc(rbx)
        }
        6 => {
            a.sti()?;
            a.add(rdx, rcx)?;
            a.sub(rbx, 3)
        }
        7 => a.xor(rdx, rbx),
        _ => a.nop(),
    }
}

fn program(r: &mut Rng) -> Vec<u8> {
    assemble(CODE, |a| {
        let mut top = a.create_label();
        a.mov(r14d, 20 + r.below(40) as u32)?;
        a.set_label(&mut top)?;
        for _ in 0..2 + r.below(10) {
            piece(a, r)?;
        }
        a.dec(r14d)?;
        a.jnz(top)?;
        a.cli()?;
        a.hlt()
    })
}

/// Sets up the machine: IDT, handlers, the page table of [`LIN`].
fn setup(bus: &mut TestBus) -> cpu::CpuState {
    let mut st = cpu_in(TestMode::Long64, bus);
    let w =
        |bus: &mut TestBus, a: u64, v: &[u8]| bus.ram[a as usize..a as usize + v.len()].copy_from_slice(v);
    for (v, h) in [(14u64, PF_H), (0x20, IRQ_H), (0x21, SOFT_H)] {
        let lo = (h & 0xffff) | (0x08 << 16) | (0x8e00u64 << 32) | ((h >> 16 & 0xffff) << 48);
        w(bus, IDT + v * 16, &lo.to_le_bytes());
        w(bus, IDT + v * 16 + 8, &(h >> 32).to_le_bytes());
    }
    st.idtr.base = IDT;
    st.idtr.limit = 0x21f;
    // PD entry 1 (linear 2..4 MiB) points at PT; its first entry starts not present.
    w(bus, PD + 8, &(PT | 3).to_le_bytes());
    let pf = assemble(PF_H, |a| {
        a.push(rax)?;
        a.mov(rax, PT)?;
        a.mov(qword_ptr(rax), (FRAME | 3) as i32)?;
        a.inc(qword_ptr(DATA + 0x110))?;
        a.pop(rax)?;
        a.add(rsp, 8)?;
        a.iretq()
    });
    w(bus, PF_H, &pf);
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
    w(bus, IRQ_H, &irq);
    let soft = assemble(SOFT_H, |a| {
        a.add(qword_ptr(DATA + 0x108), rcx)?;
        a.iretq()
    });
    w(bus, SOFT_H, &soft);
    st
}

/// Runs the program with interrupts raised at the retired counts of `gaps`; returns the state, the
/// exits and the bus.
fn go(it: &mut Interpreter, code: &[u8], gaps: &[u64]) -> (cpu::CpuState, Vec<Exit>, TestBus) {
    let mut bus = TestBus::default();
    let mut st = setup(&mut bus);
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    it.flush_all();
    let mut exits = Vec::new();
    let mut at = 0;
    let mut gaps = gaps.iter();
    for _ in 0..10_000 {
        let next = gaps.next().map_or(200_000, |g| {
            at += g;
            at
        });
        let e = it.run(&mut st, &mut bus, next);
        exits.push(e.clone());
        match e {
            Exit::BudgetSpent => bus.irq = Some(0x20),
            Exit::Halted if st.rflags & cpu::state::flags::IF == 0 => break,
            Exit::Halted => {
                // HLT with interrupts on: the next interrupt wakes it.
                st.icount = st.icount.max(next);
                bus.irq = Some(0x20);
            }
            _ => break,
        }
    }
    (st, exits, bus)
}

#[test]
fn jit_matches_interpreter_around_sti_int_iret_and_page_faults_with_interrupts() {
    let cases: u64 = std::env::var("FERRITE_JIT_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(150);
    let mut r = Rng(0x7379_736c_6f6f_7001);
    let mut interp = Interpreter::new();
    let mut jit = Interpreter::new();
    jit.set_backend(Box::new(jit::Jit::new().expect("jit")), 2);
    let (mut delivered, mut faults) = (0u64, 0u64);
    for case in 0..cases {
        let code = program(&mut r);
        let mut gaps = Vec::new();
        for _ in 0..r.below(40) {
            let span = if r.below(2) == 0 { 8 } else { 300 };
            gaps.push(1 + r.below(span));
        }
        let (a, ea, ba) = go(&mut interp, &code, &gaps);
        let (b, eb, bb) = go(&mut jit, &code, &gaps);
        let key = |s: &cpu::CpuState| (s.gpr, s.rflags, s.rip, s.icount, s.irq_shadow_icount, s.cr2);
        assert_eq!(key(&a), key(&b), "case {case}: state (gaps {gaps:?})");
        assert_eq!(ea, eb, "case {case}: exits");
        assert_eq!(tlb_tags(&interp), tlb_tags(&jit), "case {case}: the TLB");
        assert!(ba.ram == bb.ram, "case {case}: RAM differs");
        let word =
            |b: &TestBus, o: u64| u64::from_le_bytes(b.ram[(DATA + o) as usize..][..8].try_into().unwrap());
        delivered += word(&ba, 0x100);
        faults += word(&ba, 0x110);
    }
    println!("{delivered} interrupts delivered, {faults} page faults over {cases} programs");
    assert!(delivered > cases, "too few interrupts delivered to test anything: {delivered}");
    assert!(faults > cases, "too few page faults: {faults}");
}
