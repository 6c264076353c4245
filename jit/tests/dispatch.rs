//! Block transitions through the indirect-branch target cache (`jit/src/dispatch.rs`) against the
//! interpreter: random programs full of RET (functions called from many sites, nested calls),
//! CALL and JMP through registers and memory (switch tables), in 32-bit protected and 64-bit code,
//! run in slices of random budgets (the budget is how the machine stops at a device's deadline, so
//! an interrupt due mid-chain is taken at the exact count); and cached targets made stale by DMA
//! into their page, by the guest's own store into it, by remapping their linear page, by a
//! flush, and by another CS base. Registers, flags, RIP, the retired count, the exit and memory
//! must equal the interpreter's, and the cache must really have been followed.

use cpu::Interpreter;
use cpu::interp::Exit;
use cpu::testutil::{CODE, PD, STACK, TestBus, TestMode, cpu_in};
use iced_x86::BlockEncoderOptions;
use iced_x86::code_asm::*;

mod common;
use common::Rng;

/// The call/jump tables (4 entries per table, 8 bytes each in both modes; 32-bit code reads the
/// low half).
const TABLE: u64 = 0x10000;
/// Where the functions start (their own 4 KiB page, so that a test can remap or rewrite it).
const FUNCS: u64 = 0x6000;
/// A page table for linear 0..2 MiB in 64-bit mode (4 KiB pages), so a page can be remapped.
const PT: u64 = 0x1d0000;
/// Another physical page for the functions' page.
const ALT: u64 = 0x1ce000;

/// A generated program: main code at `CODE`, functions at `FUNCS`, and what goes in the tables.
struct Program {
    main: Vec<u8>,
    funcs: Vec<u8>,
    /// Table `t` entry `k` (RIP values): table 0 holds functions, tables 1.. the cases of each
    /// switch.
    tables: Vec<[u64; 4]>,
}

/// The index register for the tables: EDX = (EAX ^ ECX) & 3.
fn index(a: &mut CodeAssembler) {
    a.mov(edx, eax).unwrap();
    a.xor(edx, ecx).unwrap();
    a.and(edx, 3).unwrap();
}

/// A few ALU instructions on EAX (which decides the next indices) and EBP (a checksum).
fn alu(a: &mut CodeAssembler, r: &mut Rng) {
    for _ in 0..1 + r.below(3) {
        match r.below(5) {
            0 => a.add(eax, (r.next() as u32 | 1) as i32).unwrap(),
            1 => a.imul_3(eax, eax, (r.next() as u32 | 1) as i32).unwrap(),
            2 => a.rol(eax, (1 + r.below(31)) as u32).unwrap(),
            3 => a.xor(ebp, eax).unwrap(),
            _ => a.add(ebp, ecx).unwrap(),
        }
    }
}

/// A random program of `bits`-bit code looping `iterations` times over random call/jump sites.
/// With `f1_imm` given, function 1 starts with `ADD EAX, f1_imm` (so a test can change it); with
/// `smc_at`, the main loop rewrites that immediate itself when ECX equals it.
fn program(seed: u64, bits: u32, iterations: u32, f1_add: i32, smc_at: Option<u32>) -> Program {
    let mut r = Rng(seed | 1);
    let nf = 4 + r.below(3) as usize;
    let sites = 4 + r.below(6) as usize;
    let assemble = |a: &mut CodeAssembler, at: u64, labels: &[CodeLabel]| {
        let res =
            a.assemble_options(at, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS).expect("assemble");
        let ips: Vec<u64> = labels.iter().map(|l| res.label_ip(l).expect("label")).collect();
        (res.inner.code_buffer, ips)
    };

    // The functions: ALU work, sometimes a call of a later one (nesting), RET.
    let mut fa = CodeAssembler::new(bits).unwrap();
    let mut fl: Vec<CodeLabel> = (0..nf).map(|_| fa.create_label()).collect();
    for j in 0..nf {
        fa.set_label(&mut fl[j]).unwrap();
        if j == 1 {
            fa.add(eax, f1_add).unwrap();
        }
        alu(&mut fa, &mut r);
        if j + 1 < nf && r.below(2) == 0 {
            let callee = fl[j + 1 + r.below((nf - j - 1) as u64) as usize];
            fa.call(callee).unwrap();
        }
        alu(&mut fa, &mut r);
        fa.ret().unwrap();
    }
    let (funcs, fips) = assemble(&mut fa, FUNCS, &fl);
    // Function 1's first instruction is ADD EAX, imm32: find the immediate.
    let at = (fips[1] - FUNCS) as usize;
    let k = funcs[at..at + 8].windows(4).position(|x| x == f1_add.to_le_bytes()).expect("the immediate");
    let f1_imm = fips[1] + k as u64;
    assert!(funcs.len() < 0x1000, "functions fit their page");

    let mut a = CodeAssembler::new(bits).unwrap();
    let mut tables = vec![[0u64; 4]];
    for e in tables[0].iter_mut() {
        *e = fips[r.below(nf as u64) as usize];
    }
    let mut case_labels = Vec::new();
    let mut top = a.create_label();
    if bits == 64 {
        a.mov(rbx, TABLE).unwrap();
    } else {
        a.mov(ebx, TABLE as u32).unwrap();
    }
    a.mov(ecx, iterations).unwrap();
    a.set_label(&mut top).unwrap();
    if let Some(k) = smc_at {
        let mut skip = a.create_label();
        a.cmp(ecx, k as i32).unwrap();
        a.jne(skip).unwrap();
        if bits == 64 {
            a.mov(rdi, f1_imm).unwrap();
            a.mov(dword_ptr(rdi), 0x0bad_f00d_u32 as i32).unwrap();
        } else {
            a.mov(edi, f1_imm as u32).unwrap();
            a.mov(dword_ptr(edi), 0x0bad_f00d_u32 as i32).unwrap();
        }
        a.set_label(&mut skip).unwrap();
    }
    let table = |k: usize| (k * 4 * 8) as i32;
    for _ in 0..sites {
        alu(&mut a, &mut r);
        match r.below(5) {
            // A direct call: the function's RET returns to one more site.
            0 => a.call(fips[r.below(nf as u64) as usize]).unwrap(),
            // CALL through memory.
            1 => {
                index(&mut a);
                if bits == 64 {
                    a.call(qword_ptr(rbx + rdx * 8)).unwrap();
                } else {
                    a.call(dword_ptr(ebx + edx * 8)).unwrap();
                }
            }
            // CALL through a register.
            2 => {
                index(&mut a);
                if bits == 64 {
                    a.mov(rsi, qword_ptr(rbx + rdx * 8)).unwrap();
                    a.call(rsi).unwrap();
                } else {
                    a.mov(esi, dword_ptr(ebx + edx * 8)).unwrap();
                    a.call(esi).unwrap();
                }
            }
            // A switch: JMP through memory or a register to one of four cases, each jumping to
            // the join.
            kind => {
                let t = tables.len();
                tables.push([0; 4]);
                index(&mut a);
                match (kind, bits) {
                    (3, 64) => a.jmp(qword_ptr(rbx + rdx * 8 + table(t))).unwrap(),
                    (3, _) => a.jmp(dword_ptr(ebx + edx * 8 + table(t))).unwrap(),
                    (_, 64) => {
                        a.mov(rsi, qword_ptr(rbx + rdx * 8 + table(t))).unwrap();
                        a.jmp(rsi).unwrap();
                    }
                    _ => {
                        a.mov(esi, dword_ptr(ebx + edx * 8 + table(t))).unwrap();
                        a.jmp(esi).unwrap();
                    }
                }
                let mut join = a.create_label();
                for k in 0..4 {
                    let mut l = a.create_label();
                    a.set_label(&mut l).unwrap();
                    case_labels.push((t, k, l));
                    alu(&mut a, &mut r);
                    if r.below(3) == 0 {
                        a.call(fips[r.below(nf as u64) as usize]).unwrap();
                    }
                    a.jmp(join).unwrap();
                }
                a.set_label(&mut join).unwrap();
            }
        }
    }
    a.dec(ecx).unwrap();
    a.jne(top).unwrap();
    a.hlt().unwrap();
    let labels: Vec<CodeLabel> = case_labels.iter().map(|c| c.2).collect();
    let (main, ips) = assemble(&mut a, CODE, &labels);
    assert!(CODE + (main.len() as u64) < FUNCS, "main code fits below the functions");
    for ((t, k, _), ip) in case_labels.iter().zip(ips) {
        tables[*t][*k] = ip;
    }
    Program { main, funcs, tables }
}

/// A machine in `mode` with `p` loaded (64-bit: linear 0..2 MiB through a 4 KiB page table).
fn setup(mode: TestMode, p: &Program) -> (cpu::CpuState, TestBus) {
    let mut bus = TestBus::default();
    let mut st = cpu_in(mode, &mut bus);
    if mode == TestMode::Long64 {
        w64(&mut bus, PD, PT | 3);
        for i in 0..512u64 {
            w64(&mut bus, PT + i * 8, (i << 12) | 3);
        }
    }
    bus.ram[CODE as usize..CODE as usize + p.main.len()].copy_from_slice(&p.main);
    bus.ram[FUNCS as usize..FUNCS as usize + p.funcs.len()].copy_from_slice(&p.funcs);
    for (t, entries) in p.tables.iter().enumerate() {
        for (k, &v) in entries.iter().enumerate() {
            w64(&mut bus, TABLE + (t * 4 + k) as u64 * 8, v);
        }
    }
    st.rip = CODE;
    st.gpr[4] = STACK;
    (st, bus)
}

fn w64(bus: &mut TestBus, a: u64, v: u64) {
    bus.ram[a as usize..a as usize + 8].copy_from_slice(&v.to_le_bytes());
}

/// An interpreter, with the JIT (translating every block at its first entry) or without; with
/// the JIT, its indirect-branch target cache on or off.
fn engine(jit: Option<bool>) -> Interpreter {
    let mut it = Interpreter::new();
    if let Some(ibtc) = jit {
        let mut j = jit::Jit::new().expect("jit");
        j.set_indirect_cache(ibtc);
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

/// What a run leaves that the two engines must agree on.
/// Each run's exit with the retired count, RIP and a digest of the registers where it stopped.
type Marks = Vec<(Exit, u64, u64, u64)>;

/// What a run leaves that the two engines must agree on (the last element: each slice's end).
type Outcome = ([u64; 16], u64, u64, u64, Marks, Vec<u8>);

/// `e` and where the run that returned it stopped.
fn mark(e: Exit, st: &cpu::CpuState) -> (Exit, u64, u64, u64) {
    let digest = st.gpr.iter().fold(st.rflags, |h, &g| h.rotate_left(7) ^ g);
    (e, st.icount, st.rip, digest)
}

fn outcome(st: &cpu::CpuState, bus: &TestBus, exits: Marks) -> Outcome {
    let mem = bus.ram[STACK as usize - 0x400..STACK as usize].to_vec();
    (st.gpr, st.rip, st.rflags, st.icount, exits, mem)
}

/// Runs `p` in slices of random budgets (from `seed`) until it halts.
fn run_sliced(it: &mut Interpreter, mode: TestMode, p: &Program, seed: u64) -> Outcome {
    let (mut st, mut bus) = setup(mode, p);
    it.flush_all();
    let mut r = Rng(seed | 1);
    let mut exits = Vec::new();
    loop {
        // Mostly short slices (a budget that ends mid-chain), sometimes long ones.
        let n = if r.below(4) == 0 { 1 + r.below(20_000) } else { 1 + r.below(300) };
        let until = st.icount + n;
        let e = it.run(&mut st, &mut bus, until);
        let done = e != Exit::BudgetSpent;
        exits.push(mark(e, &st));
        if done || exits.len() > 100_000 {
            break;
        }
    }
    outcome(&st, &bus, exits)
}

fn mode_name(m: TestMode) -> &'static str {
    match m {
        TestMode::Long64 => "64-bit",
        TestMode::Prot32 => "32-bit",
        TestMode::Real => "real",
    }
}

/// Random RET/CALL/JMP-heavy programs under random budgets: the JIT (with and without the cache)
/// ends every slice exactly where the interpreter does, and the cache is followed.
#[test]
fn indirect_branches_match_the_interpreter_under_random_budgets() {
    let cases: u64 =
        std::env::var("FERRITE_JIT_DISPATCH_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12);
    let mut entries = [0u64; 2];
    for mode in [TestMode::Long64, TestMode::Prot32] {
        let bits = if mode == TestMode::Long64 { 64 } else { 32 };
        for case in 0..cases {
            let seed = 0xd15_0000 + case * 7919 + bits as u64;
            let p = program(seed, bits, 200 + (case as u32 % 5) * 60, 0x1234_5678, None);
            let want = run_sliced(&mut engine(None), mode, &p, seed);
            assert_eq!(
                want.4.last().map(|m| &m.0),
                Some(&Exit::Halted),
                "{} case {case}: the program halts",
                mode_name(mode)
            );
            for on in [false, true] {
                let mut it = engine(Some(on));
                let got = run_sliced(&mut it, mode, &p, seed);
                let slice = got.4.iter().zip(&want.4).position(|(g, w)| g != w);
                assert!(
                    got == want,
                    "{} case {case} (cache {on}): first differing slice end {slice:?}; at the end jit {:x?} rip {:#x} icount {} != interp {:x?} rip {:#x} icount {}",
                    mode_name(mode),
                    got.0,
                    got.1,
                    got.3,
                    want.0,
                    want.1,
                    want.3
                );
            }
            // One run to the end: how often the interpreter had to start a translation.
            for (k, on) in [false, true].into_iter().enumerate() {
                let mut it = engine(Some(on));
                let (mut st, mut bus) = setup(mode, &p);
                it.flush_all();
                let e = it.run(&mut st, &mut bus, u64::MAX);
                assert_eq!(
                    outcome(&st, &bus, vec![mark(e, &st)]).0,
                    want.0,
                    "{} case {case}: one run",
                    mode_name(mode)
                );
                entries[k] += stat(&it, " entries from the interpreter");
            }
        }
    }
    // The cache is what lets RETs to many sites and switches stay in generated code.
    eprintln!(
        "translations started by the interpreter: {} with the cache, {} without",
        entries[1], entries[0]
    );
    assert!(
        entries[1] * 4 < entries[0],
        "translations started by the interpreter: {} with the cache, {} without",
        entries[1],
        entries[0]
    );
}

/// Cached indirect targets made stale: function 1 (reached through the call table from many
/// sites) rewritten by DMA (and its page invalidated), rewritten by the guest itself, its linear
/// page remapped to another physical page with other code, everything flushed, or (32-bit) the
/// same code run under another CS base where other code lies. The JIT must end exactly where the
/// interpreter does, with the cache and without, the change must matter, and the cache must have
/// been used before the change (fewer runs started by the interpreter than without it).
#[test]
fn indirect_cache_never_runs_stale_code() {
    for scenario in 0..5u64 {
        let mode = if scenario == 4 { TestMode::Prot32 } else { TestMode::Long64 };
        let bits = if mode == TestMode::Long64 { 64 } else { 32 };
        let seed = 0x57a1e + scenario;
        let other = program(seed, bits, 300, 0x2222, None);
        let mut results = Vec::new();
        let mut entries = Vec::new();
        for (jit, mutate) in [(None, true), (Some(true), true), (Some(false), true), (None, false)] {
            // Scenario 1's store happens at ECX = 150; unchanged, at an ECX the loop never has.
            let smc = (scenario == 1).then_some(if mutate { 150 } else { 1000 });
            let p = program(seed, bits, 300, 0x1111, smc);
            assert_eq!(p.funcs.len(), other.funcs.len());
            let mut it = engine(jit);
            let (mut st, mut bus) = setup(mode, &p);
            if scenario == 2 {
                bus.ram[ALT as usize..ALT as usize + other.funcs.len()].copy_from_slice(&other.funcs);
            }
            if scenario == 4 {
                // The same program 1 MiB up, with the other function 1.
                let up = 0x10_0000usize;
                let (c, f) = (CODE as usize + up, FUNCS as usize + up);
                bus.ram[c..c + p.main.len()].copy_from_slice(&p.main);
                bus.ram[f..f + other.funcs.len()].copy_from_slice(&other.funcs);
            }
            it.flush_all();
            let e1 = it.run(&mut st, &mut bus, 6_001);
            let e1 = mark(e1, &st);
            if jit.is_some() {
                entries.push(stat(&it, " entries from the interpreter"));
            }
            if mutate {
                let f = FUNCS as usize;
                match scenario {
                    0 => {
                        bus.ram[f..f + other.funcs.len()].copy_from_slice(&other.funcs);
                        it.invalidate_code_page(FUNCS);
                    }
                    2 => {
                        w64(&mut bus, PT + (FUNCS >> 12) * 8, ALT | 3);
                        it.mmu.tlb.flush(false);
                    }
                    3 => {
                        bus.ram[f..f + other.funcs.len()].copy_from_slice(&other.funcs);
                        it.flush_all();
                    }
                    // Code moves, data stays (DS base 0).
                    4 => st.seg[1].base = 0x10_0000,
                    _ => {}
                }
            }
            let mut exits = vec![e1];
            for _ in 0..200 {
                let until = st.icount + 7_003;
                let e = it.run(&mut st, &mut bus, until);
                let done = e != Exit::BudgetSpent;
                exits.push(mark(e, &st));
                if done {
                    break;
                }
            }
            results.push(outcome(&st, &bus, exits));
        }
        for k in [1, 2] {
            let slice = results[0].4.iter().zip(&results[k].4).position(|(g, w)| g != w);
            assert!(
                results[0] == results[k],
                "scenario {scenario}, run {k}: first differing run end {slice:?}; at the end interp {:x?} rip {:#x} icount {} != jit {:x?} rip {:#x} icount {}",
                results[0].0,
                results[0].1,
                results[0].3,
                results[k].0,
                results[k].1,
                results[k].3
            );
        }
        assert_ne!(results[0].0, results[3].0, "scenario {scenario}: the change did not matter");
        assert!(
            entries[0] * 2 < entries[1],
            "scenario {scenario}: translations started by the interpreter before the change: {} with the cache, {} without",
            entries[0],
            entries[1]
        );
    }
}
