//! Chains of linked translations (a followed link is a tail call of the successor's code, see
//! `emit_slot` in `jit/src/lib.rs`) against the interpreter: loops of many small blocks joined by
//! JMP, Jcc, CALL/RET and JMP through a register, in 64-bit and 32-bit code, run in slices whose
//! budget takes every value from 1 to past two trips round the loop, so that the end of a slice
//! (how the machine stops at an interrupt's or a device's deadline: `until`) falls at every
//! position of a chain, and at every instruction of every block. Each slice must end at the
//! interpreter's retired count, RIP, registers and flags; the chains must really have run by tail
//! calls (the `--stats` counters); with regions on, region selection (which makes generated code
//! return to `JitBlock::run` on the links it watches) must still compile the loop.

mod common;

use common::Rng;
use cpu::Interpreter;
use cpu::interp::Exit;
use cpu::testutil::{CODE, STACK, TestBus, TestMode, cpu_in};
use iced_x86::BlockEncoderOptions;
use iced_x86::code_asm::*;

/// A few ALU instructions on EAX, EDX and EBP (inlined forms and BSWAP, a handler call).
fn alu(a: &mut CodeAssembler, r: &mut Rng) {
    for _ in 0..r.below(4) {
        let imm = (r.next() as u32 | 1) as i32;
        match r.below(6) {
            0 => a.add(eax, imm).unwrap(),
            1 => a.imul_3(edx, eax, imm).unwrap(),
            2 => a.rol(eax, (1 + r.below(31)) as u32).unwrap(),
            3 => a.xor(ebp, eax).unwrap(),
            4 => a.add(ebp, edx).unwrap(),
            _ => a.bswap(edx).unwrap(),
        }
    }
}

/// A loop of `blocks` blocks (placed in a shuffled order, so every transition is a taken
/// branch), ECX counting `iterations`, then HLT. Block `j` is ALU work and a transfer to block
/// `j + 1`: a JMP, a Jcc taken or not on EAX (both ways lead on), a CALL of a function that
/// returns into the next block, or a JMP through ESI. The last block closes with DEC ECX; JNE.
fn program(seed: u64, bits: u32, blocks: usize, iterations: u32) -> Vec<u8> {
    // Twice: the first assembly finds where the blocks start, for the second's MOV ESI, imm32
    // (the same size whatever the immediate, so the layout is the same).
    let (_, ips) = program_at(seed, bits, blocks, iterations, &vec![0; blocks + 1]);
    let (code, ips2) = program_at(seed, bits, blocks, iterations, &ips);
    assert_eq!(ips, ips2, "the layout does not depend on the immediates");
    code
}

/// [`program`], its MOV ESI taking block addresses from `ips`; the code and where each block
/// starts.
fn program_at(seed: u64, bits: u32, blocks: usize, iterations: u32, ips: &[u64]) -> (Vec<u8>, Vec<u64>) {
    let mut r = Rng(seed | 1);
    let mut a = CodeAssembler::new(bits).expect("bitness");
    let labels = {
        let a = &mut a;
        let mut labels: Vec<CodeLabel> = (0..=blocks).map(|_| a.create_label()).collect();
        let mut func = a.create_label();
        let mut order: Vec<usize> = (1..blocks).collect();
        for k in (1..order.len()).rev() {
            order.swap(k, r.below(k as u64 + 1) as usize);
        }
        a.mov(ecx, iterations).unwrap();
        a.jmp(labels[0]).unwrap();
        // The function CALL sites use: ALU work, RET (the indirect-branch cache's path).
        a.set_label(&mut func).unwrap();
        a.add(ebp, 0x1234_5679).unwrap();
        a.ret().unwrap();
        for j in std::iter::once(0).chain(order) {
            a.set_label(&mut labels[j]).unwrap();
            alu(a, &mut r);
            let next = labels[j + 1];
            if j + 1 == blocks {
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
                        a.lea(rsi, qword_ptr(next)).unwrap();
                        a.jmp(rsi).unwrap();
                    } else {
                        a.mov(esi, ips[j + 1] as u32).unwrap();
                        a.jmp(esi).unwrap();
                    }
                }
            }
        }
        a.set_label(&mut labels[blocks]).unwrap();
        a.hlt().unwrap();
        labels
    };
    let res =
        a.assemble_options(CODE, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS).expect("assemble");
    let ips = labels.iter().map(|l| res.label_ip(l).expect("label")).collect();
    (res.inner.code_buffer, ips)
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

/// Where a slice ended: its exit, the retired count, RIP, RFLAGS and the registers.
type Mark = (Exit, u64, u64, u64, [u64; 16]);

/// Runs `code` to its HLT in slices of budget 1, 2, .., `max`, 1, 2, ..; every slice's end.
fn run_sliced(it: &mut Interpreter, mode: TestMode, code: &[u8], max: u64) -> Vec<Mark> {
    let mut bus = TestBus::default();
    let mut st = cpu_in(mode, &mut bus);
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    st.rip = CODE;
    st.gpr[4] = STACK;
    it.flush_all();
    let mut marks = Vec::new();
    let mut n = 0;
    loop {
        n = n % max + 1;
        let until = st.icount + n;
        let e = it.run(&mut st, &mut bus, until);
        let done = e != Exit::BudgetSpent;
        marks.push((e, st.icount, st.rip, st.rflags, st.gpr));
        if done || marks.len() > 1_000_000 {
            return marks;
        }
    }
}

/// Runs `code` to its HLT in one run; the end.
fn run_once(it: &mut Interpreter, mode: TestMode, code: &[u8]) -> Mark {
    let mut bus = TestBus::default();
    let mut st = cpu_in(mode, &mut bus);
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    st.rip = CODE;
    st.gpr[4] = STACK;
    it.flush_all();
    let e = it.run(&mut st, &mut bus, u64::MAX);
    (e, st.icount, st.rip, st.rflags, st.gpr)
}

/// Loops of 4..22 blocks cut at every count: every slice ends where the interpreter's does, with
/// regions off (the chain runs by tail calls alone) and on.
#[test]
fn chains_stop_at_every_budget_position_like_the_interpreter() {
    let cases: u64 = std::env::var("FERRITE_JIT_CHAIN_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    for (mode, bits) in [(TestMode::Long64, 64), (TestMode::Prot32, 32)] {
        for case in 0..cases {
            let seed = 0xc4a1_0000 + case * 7919 + bits as u64;
            let blocks = 4 + (case as usize * 7) % 19;
            let code = program(seed, bits, blocks, 60);
            let want_once = run_once(&mut engine(None), mode, &code);
            assert_eq!(want_once.0, Exit::Halted, "{bits}-bit case {case}: the program halts");
            // One trip round the loop retires at most 6 instructions a block: budgets up to past
            // two trips put a slice's end at every position of a chain.
            let max = 12 * blocks as u64 + 3;
            let want = run_sliced(&mut engine(None), mode, &code, max);
            for regions in [0, 3] {
                let mut it = engine(Some(regions));
                let got = run_sliced(&mut it, mode, &code, max);
                let first = got.iter().zip(&want).position(|(g, w)| g != w);
                assert!(
                    got == want,
                    "{bits}-bit case {case} ({blocks} blocks, regions {regions}): first differing slice {first:?}: jit {:x?} != interp {:x?}",
                    first.map(|k| &got[k]),
                    first.map(|k| &want[k])
                );
                let mut it = engine(Some(regions));
                assert_eq!(run_once(&mut it, mode, &code), want_once, "{bits}-bit case {case}: one run");
                let (followed, tail) = (stat(&it, " links followed"), stat(&it, " of them by tail call"));
                let entries = stat(&it, " entries from the interpreter");
                if regions == 0 {
                    // Without region selection watching, every link generated code follows is a
                    // tail call: nearly every transition of the 60 trips.
                    assert!(
                        tail == followed && followed >= 50 * blocks as u64,
                        "{bits}-bit case {case}: {followed} links followed, {tail} by tail call"
                    );
                    assert!(entries < 6 * blocks as u64, "{bits}-bit case {case}: {entries} entries");
                } else if case == 0 {
                    // 4 blocks (and the function): a cycle short enough to be a region.
                    assert!(stat(&it, " regions (") >= 1, "{bits}-bit case {case}: a region was compiled");
                }
            }
        }
    }
}

/// Where the interrupt handler counts interrupts and folds in the return IPs it was entered with.
const HANDLED: u64 = 0x3000;
/// The handler (vector 0x20 of the real-mode IVT).
const HANDLER: u64 = 0x2000;

/// A real-mode loop: block A (CLI, ALU work, JMP) links to block B (ALU work, PUSH 0x202; POPF:
/// interrupts enabled, a block end that does not chain), then blocks C and D (DEC CX; JNZ to A).
/// A linked chain reaches B by a tail call and leaves generated code after it; a pending
/// interrupt must be delivered right after the POPF, as the interpreter does. (What stops the
/// interpreter's chaining loop there is both `RunEnd::last`, the block that ran last, which does
/// not chain, and `Ctx::break_block`, which POPF sets: this test alone does not tell them apart.)
fn popf_program(seed: u64, iterations: u16) -> (Vec<u8>, Vec<u8>) {
    let mut r = Rng(seed | 1);
    let mut a = CodeAssembler::new(16).expect("bitness");
    let mut top = a.create_label();
    let mut b = a.create_label();
    let mut c = a.create_label();
    let mut d = a.create_label();
    a.mov(cx, iterations as u32).unwrap();
    a.set_label(&mut top).unwrap();
    a.cli().unwrap();
    alu(&mut a, &mut r);
    a.jmp(b).unwrap();
    a.set_label(&mut d).unwrap();
    alu(&mut a, &mut r);
    a.dec(cx).unwrap();
    a.jne(top).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut b).unwrap();
    alu(&mut a, &mut r);
    a.push(0x202).unwrap();
    a.popf().unwrap();
    a.set_label(&mut c).unwrap();
    alu(&mut a, &mut r);
    a.jmp(d).unwrap();
    let main = a.assemble(CODE).expect("assemble");
    let mut h = CodeAssembler::new(16).expect("bitness");
    h.inc(word_ptr(HANDLED)).unwrap();
    h.mov(bx, sp).unwrap();
    h.mov(ax, word_ptr(bx)).unwrap();
    h.xor(word_ptr(HANDLED + 2), ax).unwrap();
    h.rol(word_ptr(HANDLED + 2), 3).unwrap();
    // Return with interrupts disabled: the next one waits for the next POPF.
    h.and(word_ptr(bx + 4), !0x200).unwrap();
    h.iret().unwrap();
    (main, h.assemble(HANDLER).expect("assemble"))
}

/// Runs the real-mode `popf_program` in slices of budget 1..`max`, the interrupt line raised
/// before every slice (the handler returns with interrupts disabled, so each is taken right after
/// a POPF); every slice's end, with the handler's record.
fn run_irq(it: &mut Interpreter, main: &[u8], handler: &[u8], max: u64, irq: bool) -> Vec<(Mark, u32)> {
    let mut bus = TestBus::default();
    let mut st = cpu_in(TestMode::Real, &mut bus);
    let ram = &mut bus.ram;
    ram[CODE as usize..CODE as usize + main.len()].copy_from_slice(main);
    ram[HANDLER as usize..HANDLER as usize + handler.len()].copy_from_slice(handler);
    // IVT entries 0x20 and 1 (#DB): HANDLER in segment 0.
    ram[0x80..0x84].copy_from_slice(&[HANDLER as u8, (HANDLER >> 8) as u8, 0, 0]);
    ram[4..8].copy_from_slice(&[HANDLER as u8, (HANDLER >> 8) as u8, 0, 0]);
    st.rip = CODE;
    st.gpr[4] = STACK;
    it.flush_all();
    let mut marks = Vec::new();
    let mut n = 0;
    loop {
        n = n % max + 1;
        bus.irq = irq.then_some(0x20);
        let until = st.icount + n;
        let e = it.run(&mut st, &mut bus, until);
        let done = e != Exit::BudgetSpent;
        let rec = &bus.ram[HANDLED as usize..HANDLED as usize + 4];
        let rec = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
        marks.push(((e, st.icount, st.rip, st.rflags, st.gpr), rec));
        if done || marks.len() > 1_000_000 {
            return marks;
        }
    }
}

/// Interrupts raised while a chain runs are delivered where the interpreter delivers them: after
/// a block reached by a tail call that ends by enabling interrupts (POPF), which the JIT must name
/// as the block that ran last.
#[test]
fn interrupts_after_a_tail_called_block_are_delivered_like_the_interpreter() {
    for case in 0..6u64 {
        let (main, handler) = popf_program(0x1a7e_0000 + case * 104_729, 300);
        // More than 20 interrupts taken.
        same_as_interpreter(case, &main, &handler, true, |n| n > 20);
    }
}

/// Runs `main` in slices (see [`run_irq`]) under the interpreter and under the JIT with tail calls,
/// requires the interpreter's run to halt with `taken(handler entries)`, and the JIT's to match it
/// slice by slice, with links followed by tail calls.
fn same_as_interpreter(case: u64, main: &[u8], handler: &[u8], irq: bool, taken: impl Fn(u32) -> bool) {
    let max = 40 + case * 7;
    let want = run_irq(&mut engine(None), main, handler, max, irq);
    assert_eq!(want.last().map(|m| &m.0.0), Some(&Exit::Halted), "case {case}: the program halts");
    assert!(
        want.last().is_some_and(|m| taken(m.1 & 0xffff)),
        "case {case}: the handler ran as many times as expected: {:x?}",
        want.last()
    );
    let mut it = engine(Some(0));
    let got = run_irq(&mut it, main, handler, max, irq);
    let first = got.iter().zip(&want).position(|(g, w)| g != w);
    assert!(
        got == want,
        "case {case}: first differing slice {first:?}: jit {:x?} != interp {:x?}",
        first.map(|k| &got[k]),
        first.map(|k| &want[k])
    );
    assert!(stat(&it, " of them by tail call") > 0, "case {case}: links were followed by tail calls");
}

/// Where the MOV SS of [`mov_ss_program`] reads (0: SS stays 0), watched by DR0.
const WATCH: u64 = 0x3800;

/// A real-mode loop with a data breakpoint (DR0, read/write, 2 bytes) on [`WATCH`]: block A (ALU
/// work, JMP) links to block B (ALU work, MOV SS, [WATCH]: a block end that does not chain), then
/// blocks C and D (DEC CX; JNZ to A). The breakpoint's #DB waits for the instruction after the
/// MOV SS (SDM Vol. 3A 6.8.3): the interpreter knows to wait because the last instruction that
/// retired loads SS, which it reads from the block that ran last (`RunEnd::last`, its start count
/// and instructions). A chain reaches B by a tail call, so generated code must record B there.
fn mov_ss_program(seed: u64, iterations: u16) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    let mut a = CodeAssembler::new(16).expect("bitness");
    let mut top = a.create_label();
    let mut b = a.create_label();
    let mut d = a.create_label();
    a.mov(eax, WATCH as u32).unwrap();
    a.mov(dr0, eax).unwrap();
    a.mov(eax, 0x7_0001u32).unwrap();
    a.mov(dr7, eax).unwrap();
    a.mov(cx, iterations as u32).unwrap();
    a.set_label(&mut top).unwrap();
    alu(&mut a, &mut r);
    a.jmp(b).unwrap();
    a.set_label(&mut d).unwrap();
    alu(&mut a, &mut r);
    a.dec(cx).unwrap();
    a.jne(top).unwrap();
    a.hlt().unwrap();
    a.set_label(&mut b).unwrap();
    alu(&mut a, &mut r);
    a.mov(ss, word_ptr(WATCH)).unwrap();
    alu(&mut a, &mut r);
    a.add(ebp, 0x55).unwrap();
    a.jmp(d).unwrap();
    a.assemble(CODE).expect("assemble")
}

/// Data breakpoints on a MOV SS at the end of a block reached by a tail call are delivered where
/// the interpreter delivers them: the JIT names the block that ran last exactly.
#[test]
fn a_mov_ss_ending_a_tail_called_block_defers_its_debug_trap_like_the_interpreter() {
    let (_, handler) = popf_program(1, 1);
    for case in 0..6u64 {
        let main = mov_ss_program(0xdb55_0000 + case * 104_729, 300);
        // The #DB taken at each of the 300 iterations.
        same_as_interpreter(case, &main, &handler, false, |n| n >= 300);
    }
}
