//! The state a followed link hands its successor in registers (`block_sig` in `jit/src/lib.rs`:
//! the `CpuState` pointer and the retired count, which the successor uses instead of loading them)
//! against the interpreter. Loops of blocks whose *first* instruction is each kind of thing that
//! reads the count a block starts with: a handler call (which syncs RIP and the count first), an
//! inline memory access (whose slow path does), a self-loop (whose back edge checks the budget
//! from it), a DIV that faults on the last trip (the fault leaves the count: RIP and count must be
//! the interpreter's), and plain inline ALU work (the next link's budget check adds to it). Every
//! block is reached by a followed link (JMP, Jcc, CALL/RET through the indirect-branch cache, JMP
//! through a register), in 64-bit and 32-bit code, with and without regions, run once and in
//! slices whose budget ends at every position of a chain; retired count, RIP, RFLAGS, registers,
//! memory and the software TLB must be the interpreter's.

mod common;

use common::{Rng, tlb_tags};
use cpu::Interpreter;
use cpu::interp::Exit;
use cpu::testutil::{CODE, STACK, TestBus, TestMode, cpu_in};
use iced_x86::code_asm::*;

/// Where the blocks' memory accesses go.
const DATA: u64 = 0x8_0000;

/// A loop of `blocks` blocks in a shuffled order, ECX counting `iterations` down and ESI one
/// behind it (0 on the last trip), then HLT. Each block starts with one of the kinds above,
/// does a little ALU work and goes on to the next block by a JMP, a Jcc either way, a CALL of a
/// function that returns into it, or a JMP through EDI. The block that starts with DIV ESI
/// divides by zero on the last trip.
fn program(seed: u64, bits: u32, blocks: usize, iterations: u32) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    let mut a = CodeAssembler::new(bits).expect("bitness");
    let mut labels: Vec<CodeLabel> = (0..=blocks).map(|_| a.create_label()).collect();
    let mut func = a.create_label();
    let mut order: Vec<usize> = (1..blocks).collect();
    for k in (1..order.len()).rev() {
        order.swap(k, r.below(k as u64 + 1) as usize);
    }
    // The one block that divides (never the first: its predecessor clears EDX).
    let div_at = 1 + r.below(blocks as u64 - 1) as usize;
    a.mov(ecx, iterations).unwrap();
    a.mov(esi, iterations - 1).unwrap();
    a.mov(eax, 0x1234_5678u32).unwrap();
    a.mov(ebp, DATA as u32).unwrap();
    a.jmp(labels[0]).unwrap();
    a.set_label(&mut func).unwrap();
    a.add(eax, 0x0765_4321).unwrap();
    a.ret().unwrap();
    for j in std::iter::once(0).chain(order) {
        a.set_label(&mut labels[j]).unwrap();
        let mut inner = a.create_label();
        if j == div_at {
            // EDX is 0 here (the previous block cleared it): no overflow, only ESI = 0 faults.
            a.div(esi).unwrap();
        } else {
            match r.below(5) {
                0 => a.bswap(edx).unwrap(),
                1 => a.add(eax, dword_ptr(ebp + 8 * r.below(64) as i32)).unwrap(),
                2 => a.mov(dword_ptr(ebp + 8 * r.below(64) as i32), eax).unwrap(),
                3 => {
                    // A self-loop of 1..4 turns, entered by a link from the block before.
                    a.mov(edx, 1 + r.below(4) as u32).unwrap();
                    a.jmp(inner).unwrap();
                    a.set_label(&mut inner).unwrap();
                    a.add(eax, edx).unwrap();
                    a.dec(edx).unwrap();
                    a.jne(inner).unwrap();
                }
                _ => a.xor(eax, 0x5a5a_0f0f).unwrap(),
            }
        }
        for _ in 0..r.below(3) {
            match r.below(3) {
                0 => a.rol(eax, (1 + r.below(31)) as u32).unwrap(),
                1 => a.imul_3(edx, eax, (r.next() as u32 | 1) as i32).unwrap(),
                _ => a.add(ebx, eax).unwrap(),
            }
        }
        let next = labels[j + 1];
        if j + 1 == div_at {
            a.xor(edx, edx).unwrap();
        }
        if j + 1 == blocks {
            a.dec(esi).unwrap();
            a.dec(ecx).unwrap();
            a.jne(labels[0]).unwrap();
            a.jmp(next).unwrap();
            continue;
        }
        match r.below(4) {
            0 => a.jmp(next).unwrap(),
            1 => {
                a.test(eax, 1 << r.below(8)).unwrap();
                a.jne(next).unwrap();
                a.jmp(next).unwrap();
            }
            2 => {
                a.call(func).unwrap();
                a.jmp(next).unwrap();
            }
            _ => {
                if bits == 64 {
                    a.lea(rdi, qword_ptr(next)).unwrap();
                    a.jmp(rdi).unwrap();
                } else {
                    // The label's address, from a CALL that pops it.
                    let mut here = a.create_label();
                    a.call(here).unwrap();
                    a.set_label(&mut here).unwrap();
                    a.pop(edi).unwrap();
                    a.jmp(next).unwrap();
                }
            }
        }
    }
    a.set_label(&mut labels[blocks]).unwrap();
    a.hlt().unwrap();
    a.assemble(CODE).expect("assemble")
}

/// An interpreter, with a JIT translating every block at its first entry (regions after
/// `regions` cycles, 0: none) or without one.
fn engine(jit: Option<u32>) -> Interpreter {
    let mut it = Interpreter::new();
    if let Some(cycles) = jit {
        let mut j = jit::Jit::new().expect("jit");
        j.set_region_threshold(cycles);
        it.set_backend(Box::new(j), 1);
    }
    it.trap_faults = true;
    it
}

/// A statistic of the JIT's `describe` line: the number before `name`.
fn stat(it: &Interpreter, name: &str) -> u64 {
    let s = it.backend_stats().expect("a backend");
    s.split(name).next().and_then(|h| h.rsplit(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Where a run (or slice) ended: its exit, the retired count, RIP, RFLAGS and the registers.
type Mark = (Exit, u64, u64, u64, [u64; 16]);

/// Every slice's end, the data page and the software TLB's entries (`common::tlb_tags`).
type Outcome = (Vec<Mark>, Vec<u8>, Vec<(usize, usize, u64, bool)>);

/// Runs `code` until it halts or faults, in slices of budget 1, 2, .., `max`, 1, 2, .. (`max` 0:
/// one run); every slice's end, and at the end the data page and the software TLB.
fn run(it: &mut Interpreter, mode: TestMode, code: &[u8], max: u64) -> Outcome {
    let mut bus = TestBus::default();
    let mut st = cpu_in(mode, &mut bus);
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    st.rip = CODE;
    st.gpr[4] = STACK;
    it.flush_all();
    let mut marks = Vec::new();
    let mut n = 0;
    loop {
        let until = if max == 0 {
            u64::MAX
        } else {
            n = n % max + 1;
            st.icount + n
        };
        let e = it.run(&mut st, &mut bus, until);
        let done = e != Exit::BudgetSpent;
        marks.push((e, st.icount, st.rip, st.rflags, st.gpr));
        if done || marks.len() > 1_000_000 {
            let data = bus.ram[DATA as usize..DATA as usize + 0x1000].to_vec();
            return (marks, data, tlb_tags(it));
        }
    }
}

/// Loops of 3..16 blocks: one run and runs cut at every count end where the interpreter's do, at
/// the DIV's #DE on the last trip, with the chain really followed by tail calls.
#[test]
fn successors_take_the_state_and_count_a_link_hands_them() {
    let cases: u64 = std::env::var("FERRITE_JIT_LINK_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(8);
    for (mode, bits) in [(TestMode::Long64, 64), (TestMode::Prot32, 32)] {
        for case in 0..cases {
            let seed = 0x11a6_0000 + case * 104_729 + bits as u64;
            let blocks = 3 + (case as usize * 5) % 14;
            let code = program(seed, bits, blocks, 40);
            let want_once = run(&mut engine(None), mode, &code, 0);
            let end = &want_once.0.last().expect("a run").0;
            assert!(
                matches!(end, Exit::Trapped(cpu::Fault::Exc { vector: 0, .. })),
                "{bits}-bit case {case}: ends at the #DE, not {end:?}"
            );
            // A trip retires at most 8 + 2 * 4 instructions a block.
            let max = 20 * blocks as u64 + 3;
            let want = run(&mut engine(None), mode, &code, max);
            for regions in [0, 3] {
                let mut it = engine(Some(regions));
                let got = run(&mut it, mode, &code, 0);
                assert!(
                    got == want_once,
                    "{bits}-bit case {case} (regions {regions}), one run: jit {:x?} != interp {:x?}",
                    got.0,
                    want_once.0
                );
                if regions == 0 {
                    let (followed, tail) = (stat(&it, " links followed"), stat(&it, " of them by tail call"));
                    assert!(
                        tail == followed && followed >= 30 * blocks as u64,
                        "{bits}-bit case {case}: {followed} links followed, {tail} by tail call"
                    );
                }
                let got = run(&mut engine(Some(regions)), mode, &code, max);
                let first = got.0.iter().zip(&want.0).position(|(g, w)| g != w);
                assert!(
                    got == want,
                    "{bits}-bit case {case} ({blocks} blocks, regions {regions}), sliced: first differing slice {first:?}: jit {:x?} != interp {:x?}",
                    first.map(|k| &got.0[k]),
                    first.map(|k| &want.0[k])
                );
            }
        }
    }
}

/// A loop of two blocks whose memory accesses go to a new page on every trip, so that each misses
/// the TLB and leaves generated code at its slow path (`ST_RESUME`: the rest of the block runs in
/// the interpreter's loop): between an ADD whose carry is still lazy and the ADC that reads it, a
/// load, and a store after the ADC. 32 trips, then HLT.
fn resume_program(bits: u32) -> Vec<u8> {
    let mut a = CodeAssembler::new(bits).expect("bitness");
    let mut top = a.create_label();
    let mut second = a.create_label();
    a.mov(ecx, 32u32).unwrap();
    a.mov(ebp, DATA as u32).unwrap();
    a.mov(eax, 0xfff0_0000u32).unwrap();
    a.mov(ebx, 0x9000_0001u32).unwrap();
    a.set_label(&mut top).unwrap();
    a.add(eax, ebx).unwrap();
    a.mov(edx, dword_ptr(ebp + 4)).unwrap();
    a.adc(eax, edx).unwrap();
    a.mov(dword_ptr(ebp + 8), eax).unwrap();
    a.inc(edx).unwrap();
    a.jmp(second).unwrap();
    a.set_label(&mut second).unwrap();
    a.add(ebp, 0x1000).unwrap();
    a.rol(ebx, 3).unwrap();
    a.mov(dword_ptr(ebp + 4), edx).unwrap();
    a.dec(ecx).unwrap();
    a.jne(top).unwrap();
    a.hlt().unwrap();
    a.assemble(CODE).expect("assemble")
}

/// The rest of a block after a slow path runs exactly as the interpreter runs it: registers,
/// flags (the ADD's carry read by the ADC after the resume), count, memory and TLB, in one run
/// and in slices cut at every position, and the resumes really happen.
#[test]
fn slow_paths_resume_the_rest_of_their_block_like_the_interpreter() {
    for (mode, bits) in [(TestMode::Long64, 64), (TestMode::Prot32, 32)] {
        let code = resume_program(bits);
        let want_once = run(&mut engine(None), mode, &code, 0);
        assert!(matches!(want_once.0.last().expect("a run").0, Exit::Halted), "{bits}-bit: ends at HLT");
        let want = run(&mut engine(None), mode, &code, 13);
        for regions in [0, 3] {
            let mut it = engine(Some(regions));
            let got = run(&mut it, mode, &code, 0);
            assert!(
                got == want_once,
                "{bits}-bit (regions {regions}), one run: jit {:x?} != interp {:x?}",
                got.0,
                want_once.0
            );
            if regions == 0 {
                let resumes = stat(&it, " slow-path resumes");
                assert!(resumes >= 30, "{bits}-bit: {resumes} slow-path resumes");
            }
            let got = run(&mut engine(Some(regions)), mode, &code, 13);
            assert!(
                got == want,
                "{bits}-bit (regions {regions}), sliced: jit {:x?} != interp {:x?}",
                got.0,
                want.0
            );
        }
    }
}
