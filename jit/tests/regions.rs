//! Regions (several blocks compiled as one function, `jit/src/region.rs`) against the interpreter:
//! random multi-block loops in each mode cut by random budgets, faults in a middle block,
//! self-modifying code and DMA into a block of a live region. Registers, flags, RIP, the retired
//! count, memory and the exit must equal the interpreter's, and regions must really have run.

mod common;

use common::{Rng, jcc};
use cpu::Interpreter;
use cpu::interp::Exit;
use cpu::testutil::{CODE, STACK, TestBus, TestMode, asm, cpu_in};
use iced_x86::code_asm::*;

/// The data the loops read and write (inside the first 64 KiB: real mode reaches it too).
const DATA: u64 = 0x9000;

fn bits_of(mode: TestMode) -> u32 {
    match mode {
        TestMode::Real => 16,
        TestMode::Prot32 => 32,
        TestMode::Long64 => 64,
    }
}

/// Registers the random bodies write: not ECX (the loop counter), EBX (the data base) or ESP.
const DST: [AsmRegister32; 5] = [eax, edx, esi, edi, ebp];
const SRC: [AsmRegister32; 7] = [eax, edx, esi, edi, ebp, ebx, ecx];

/// A random straight-line body of 1..6 instructions: inlined ALU, shift, IMUL, LEA, SETcc, CMOVcc,
/// ADC and memory forms, PUSH/POP, and BSWAP (a handler call).
fn body(a: &mut CodeAssembler, r: &mut Rng, bits: u32) {
    for _ in 0..1 + r.below(6) {
        let d = DST[r.below(5) as usize];
        let s = SRC[r.below(7) as usize];
        let disp = (r.below(0x100) * 4) as i32;
        let m = if bits == 64 { dword_ptr(rbx + disp) } else { dword_ptr(ebx + disp) };
        let imm = r.next() as u32 as i32;
        let res = match r.below(20) {
            0 => a.add(d, s),
            1 => a.sub(d, s),
            2 => a.xor(d, s),
            3 => a.and(d, imm),
            4 => a.or(d, s),
            5 => a.cmp(d, s),
            6 => a.test(d, s),
            7 => a.adc(d, s),
            8 => a.inc(d),
            9 => a.dec(d),
            10 => a.shl(d, (r.below(32)) as u32),
            11 => a.rol(d, (r.below(32)) as u32),
            12 => a.imul_2(d, s),
            13 => a.lea(
                d,
                if bits == 64 { dword_ptr(rax + rdx * 2 + disp) } else { dword_ptr(eax + edx * 2 + disp) },
            ),
            14 => a.mov(d, m),
            15 => a.add(d, m),
            16 => a.mov(m, s),
            17 => a.cmovl(d, s),
            18 => {
                if bits == 64 {
                    a.push(rax).and_then(|_| a.pop(rdx))
                } else {
                    a.push(eax).and_then(|_| a.pop(edx))
                }
            }
            _ => a.bswap(d),
        };
        res.expect("body instruction");
    }
}

/// A loop of several blocks around a random body, ECX counting the iterations, HLT after it:
/// 0: a body, a Jcc over a second block, a third closing with DEC ECX; JNZ; 1: an if/else (two
/// arms meeting in a closing block); 2: an exit test at the top and a JMP back at the bottom.
fn gen_loop(r: &mut Rng, bits: u32) -> Vec<u8> {
    asm(bits, |a| {
        let mut top = a.create_label();
        let mut join = a.create_label();
        let mut other = a.create_label();
        let mut end = a.create_label();
        a.set_label(&mut top).unwrap();
        body(a, r, bits);
        match r.below(3) {
            0 => {
                jcc(a, r.below(16), join);
                body(a, r, bits);
                a.set_label(&mut join).unwrap();
                body(a, r, bits);
                a.dec(ecx).unwrap();
                a.jne(top).unwrap();
            }
            1 => {
                jcc(a, r.below(16), other);
                body(a, r, bits);
                a.jmp(join).unwrap();
                a.set_label(&mut other).unwrap();
                body(a, r, bits);
                a.set_label(&mut join).unwrap();
                body(a, r, bits);
                a.dec(ecx).unwrap();
                a.jne(top).unwrap();
            }
            _ => {
                a.dec(ecx).unwrap();
                a.je(end).unwrap();
                body(a, r, bits);
                a.jmp(top).unwrap();
            }
        }
        a.set_label(&mut end).unwrap();
        a.hlt().unwrap();
    })
}

/// Runs `code` on `it` from `gpr` and `rflags` until `until` (caches flushed first).
fn run(
    it: &mut Interpreter,
    mode: TestMode,
    code: &[u8],
    gpr: &[u64; 16],
    rflags: u64,
    until: u64,
) -> (cpu::CpuState, Exit, TestBus) {
    let mut bus = TestBus::default();
    let mut st = cpu_in(mode, &mut bus);
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    for (k, b) in bus.ram[DATA as usize..DATA as usize + 0x1000].iter_mut().enumerate() {
        *b = (k as u8).wrapping_mul(37) ^ 0x5a;
    }
    st.gpr = *gpr;
    st.gpr[4] = STACK;
    st.rflags = rflags;
    it.flush_all();
    let exit = it.run(&mut st, &mut bus, until);
    (st, exit, bus)
}

/// The number before `what` in the backend's statistics line.
fn stat(it: &Interpreter, what: &str) -> u64 {
    let s = it.backend_stats().expect("a backend");
    s.split(what).next().and_then(|h| h.rsplit(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// An interpreter with the JIT translating every block at once and regions after `cycles` cycles.
fn jit_interp(cycles: u32) -> Interpreter {
    let mut it = Interpreter::new();
    let mut j = jit::Jit::new().expect("jit");
    j.set_region_threshold(cycles);
    it.set_backend(Box::new(j), 1);
    it.trap_faults = true;
    it
}

fn assert_same(
    what: &str,
    (a, ea, ma): &(cpu::CpuState, Exit, TestBus),
    (b, eb, mb): &(cpu::CpuState, Exit, TestBus),
) {
    let same_mem = ma.ram == mb.ram;
    assert!(
        same_mem
            && a.gpr == b.gpr
            && a.rflags == b.rflags
            && a.rip == b.rip
            && a.icount == b.icount
            && ea == eb,
        "{what} (memory {})\ninterp: {ea:?} rip {:#x} icount {} rflags {:#x}\n  gpr {:x?}\njit:    {eb:?} rip {:#x} icount {} rflags {:#x}\n  gpr {:x?}",
        if same_mem { "same" } else { "DIFFERS" },
        a.rip,
        a.icount,
        a.rflags,
        a.gpr,
        b.rip,
        b.icount,
        b.rflags,
        b.gpr
    );
}

/// Random loops of two to four blocks in real, protected and 64-bit mode (inline branches in 64-bit
/// code, branch handlers elsewhere), random registers, flags and iteration counts, and a budget that
/// cuts the run anywhere (often inside a region, at any of its blocks): interp and JIT agree.
#[test]
fn random_multi_block_loops_match_the_interpreter() {
    let cases: u64 =
        std::env::var("FERRITE_JIT_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(1500) / 3;
    let mut r = Rng(0x5eed_0f1e_2026_1313);
    let mut interp = Interpreter::new();
    interp.trap_faults = true;
    let mut jit = jit_interp(3);
    let mut budget_stops = 0;
    for mode in [TestMode::Long64, TestMode::Prot32, TestMode::Real] {
        let bits = bits_of(mode);
        let before = stat(&jit, " regions (");
        for case in 0..cases {
            let code = gen_loop(&mut r, bits);
            let mut gpr = [0u64; 16];
            for g in gpr.iter_mut() {
                *g = if r.below(2) == 0 { r.below(4) } else { r.next() };
            }
            gpr[1] = 1 + r.below(300);
            gpr[3] = DATA;
            let rflags = 0x2 | (r.next() & cpu::state::flags::ARITH);
            let until = 1 + r.below(4000);
            let a = run(&mut interp, mode, &code, &gpr, rflags, until);
            let b = run(&mut jit, mode, &code, &gpr, rflags, until);
            if a.1 == Exit::BudgetSpent {
                budget_stops += 1;
            }
            assert_same(&format!("{mode:?} case {case}: budget {until}, program {code:02x?}"), &a, &b);
        }
        let made = stat(&jit, " regions (") - before;
        assert!(made >= cases / 4, "{mode:?}: only {made} regions compiled in {cases} programs");
    }
    assert!(budget_stops > cases / 2, "only {budget_stops} runs ended at the budget");
}

/// A fault in the middle block of a live region: DIV by a register that reaches zero (#DE, a
/// handler) in every mode, and in 64-bit code a load walking off the mapped first GiB (#PF, on the
/// slow path of an inline access). Both engines stop at the same instruction with the same state.
#[test]
fn faults_in_a_middle_block_leave_the_interpreters_state() {
    for mode in [TestMode::Long64, TestMode::Prot32, TestMode::Real] {
        let bits = bits_of(mode);
        for (kind, start) in [(0, 9u64), (0, 31), (1, 0), (1, 5)] {
            if kind == 1 && bits != 64 {
                continue;
            }
            let code = asm(bits, |a| {
                let mut top = a.create_label();
                let mut skip = a.create_label();
                a.set_label(&mut top).unwrap();
                a.inc(ebp).unwrap();
                a.test(ebp, 1).unwrap();
                a.je(skip).unwrap();
                if kind == 0 {
                    a.xor(edx, edx).unwrap();
                    a.mov(eax, 1000).unwrap();
                    a.div(edi).unwrap();
                    a.dec(edi).unwrap();
                } else {
                    a.add(rsi, 0x0400_0000).unwrap();
                    a.mov(eax, dword_ptr(rsi)).unwrap();
                }
                a.set_label(&mut skip).unwrap();
                a.add(ebx, eax).unwrap();
                a.dec(ecx).unwrap();
                a.jne(top).unwrap();
                a.hlt().unwrap();
            });
            let mut gpr = [0u64; 16];
            gpr[1] = 100_000;
            gpr[5] = start;
            gpr[6] = DATA;
            gpr[7] = start + 40;
            let mut interp = Interpreter::new();
            interp.trap_faults = true;
            let mut jit = jit_interp(3);
            let a = run(&mut interp, mode, &code, &gpr, 0x2, 1_000_000);
            let b = run(&mut jit, mode, &code, &gpr, 0x2, 1_000_000);
            assert!(matches!(a.1, Exit::Trapped(_)), "{mode:?} kind {kind}: no fault ({:?})", a.1);
            assert_same(&format!("{mode:?} kind {kind} start {start}"), &a, &b);
            assert!(stat(&jit, " regions (") >= 1, "{mode:?} kind {kind}: no region ran");
        }
    }
}

/// The SMC loop: A counts in EAX and skips B on even counts; B stores a byte to the data page, or,
/// on the pass where ECX is `k`, over the immediate of C's first instruction (ADD EDX, 0x11 becomes
/// ADD EDX, 0x22), so that the write comes from inside the region (B is one of its blocks); C
/// closes the loop. Returns the code and the address of that immediate.
fn smc_loop(bits: u32, k: u32) -> (Vec<u8>, u64) {
    let gen_code = |imm: u32| {
        asm(bits, |a| {
            let mut top = a.create_label();
            let mut c = a.create_label();
            a.set_label(&mut top).unwrap();
            a.inc(eax).unwrap();
            a.test(al, 1).unwrap();
            a.je(c).unwrap();
            a.mov(edi, DATA as u32).unwrap();
            a.mov(esi, imm).unwrap();
            a.cmp(ecx, k as i32).unwrap();
            a.cmove(edi, esi).unwrap();
            if bits == 64 {
                a.mov(byte_ptr(rdi), 0x22).unwrap();
            } else {
                a.mov(byte_ptr(edi), 0x22).unwrap();
            }
            a.jmp(c).unwrap();
            a.set_label(&mut c).unwrap();
            a.add(edx, 0x11).unwrap();
            a.dec(ecx).unwrap();
            a.jne(top).unwrap();
            a.hlt().unwrap();
        })
    };
    let probe = gen_code(0x7777);
    let at = probe.windows(3).position(|w| w == [0x83, 0xc2, 0x11]).expect("ADD EDX, 0x11") as u64;
    let imm = CODE + at + 2;
    let code = gen_code(imm as u32);
    assert_eq!(code.len(), probe.len());
    (code, imm)
}

/// Self-modifying code inside a live region: a block of the region rewrites an immediate in
/// another of its blocks; the next pass must run the new instruction, as under the interpreter.
#[test]
fn smc_into_a_live_region_runs_the_new_code() {
    for mode in [TestMode::Long64, TestMode::Prot32] {
        let bits = bits_of(mode);
        let (code, _) = smc_loop(bits, 400);
        let mut gpr = [0u64; 16];
        gpr[1] = 1000;
        let mut interp = Interpreter::new();
        interp.trap_faults = true;
        let mut jit = jit_interp(3);
        let a = run(&mut interp, mode, &code, &gpr, 0x2, 100_000);
        let b = run(&mut jit, mode, &code, &gpr, 0x2, 100_000);
        assert_eq!(a.1, Exit::Halted, "{mode:?}");
        // 600 passes before the patch (ECX 1000..401), then the patching pass (B runs on odd counts:
        // the 601st) and 399 more, all with the new immediate.
        assert_eq!(a.0.gpr[2] as u32, 0x11 * 600 + 0x22 * 400, "{mode:?}: the patch did not take");
        assert_same(&format!("{mode:?} SMC"), &a, &b);
        assert!(stat(&jit, " regions (") >= 2, "{mode:?}: the region was not made again after the SMC");
    }
}

/// DMA into a block of a live region (the host writes the code and invalidates its page, as a
/// disk controller's DMA does) between two runs: the second run must see the new code.
#[test]
fn dma_into_a_live_region_is_seen() {
    for mode in [TestMode::Long64, TestMode::Prot32] {
        let bits = bits_of(mode);
        let (code, imm) = smc_loop(bits, u32::MAX);
        let mut results = Vec::new();
        for (use_jit, dma) in [(false, true), (true, true), (false, false)] {
            let mut it = if use_jit { jit_interp(3) } else { Interpreter::new() };
            it.trap_faults = true;
            let mut bus = TestBus::default();
            let mut st = cpu_in(mode, &mut bus);
            bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
            st.gpr[1] = 1000;
            let e1 = it.run(&mut st, &mut bus, 2_001);
            if use_jit {
                assert!(stat(&it, " regions (") >= 1, "{mode:?}: no region before the DMA");
            }
            if dma {
                bus.ram[imm as usize] = 0x22;
                it.invalidate_code_page(imm & !0xfff);
            }
            let e2 = it.run(&mut st, &mut bus, 100_000);
            results.push((st.gpr, st.rip, st.icount, st.rflags, e1, e2));
        }
        assert_eq!(results[0], results[1], "{mode:?}: interp and jit differ after the DMA");
        assert_ne!(results[0], results[2], "{mode:?}: the DMA did not matter");
    }
}

/// Regions through the machine's backend: queued when hot, compiled on the compile thread (with
/// random delays), placed between runs. Random multi-block loops run in slices of the budget give
/// the interpreter's results whenever the regions arrive, and regions do arrive.
#[test]
fn regions_from_the_compile_thread_match_the_interpreter() {
    let mut r = Rng(0x5eed_0f1e_2026_1314);
    let mut placed = 0;
    let mut last_stats = String::new();
    for case in 0..24u64 {
        let mode = [TestMode::Long64, TestMode::Prot32, TestMode::Real][case as usize % 3];
        let bits = bits_of(mode);
        let code = gen_loop(&mut r, bits);
        let mut gpr = [0u64; 16];
        for g in gpr.iter_mut() {
            *g = r.next();
        }
        gpr[1] = 3000 + r.below(3000);
        gpr[3] = DATA;
        let rflags = 0x2 | (r.next() & cpu::state::flags::ARITH);
        let mut results = Vec::new();
        let mut stats = String::new();
        for use_jit in [false, true] {
            let mut it = Interpreter::new();
            it.trap_faults = true;
            let mut handle = None;
            if use_jit {
                let delay = (case % 2 == 0).then_some(jit::CompileDelay { seed: case + 1, max_us: 300 });
                let opts = jit::Options { threshold: 1, delay, ..jit::Options::default() };
                let b = jit::Backend::new(opts).expect("backend");
                b.set_region_threshold(3);
                handle = Some(b.handle());
                it.set_backend(Box::new(b), 1);
            }
            let mut bus = TestBus::default();
            let mut st = cpu_in(mode, &mut bus);
            bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
            for (k, b) in bus.ram[DATA as usize..DATA as usize + 0x1000].iter_mut().enumerate() {
                *b = (k as u8).wrapping_mul(37) ^ 0x5a;
            }
            st.gpr = gpr;
            st.gpr[4] = STACK;
            st.rflags = rflags;
            let mut exits = Vec::new();
            let mut until = 0;
            for step in 0..400u64 {
                until += 50 + (step * 7919 + case) % 200;
                let e = it.run(&mut st, &mut bus, until);
                exits.push(e.clone());
                if step % 25 == 24
                    && let Some(h) = &handle
                {
                    // Let every queued region arrive, so that the rest of the run uses them
                    // (the loops are short beside a compilation).
                    h.finish_pending();
                }
                if e != Exit::BudgetSpent {
                    break;
                }
            }
            if use_jit {
                stats = it.backend_stats().expect("backend");
                placed += stat(&it, " regions (");
            }
            results.push((st.gpr, st.rip, st.icount, st.rflags, exits, bus.ram));
        }
        assert!(
            results[0] == results[1],
            "{mode:?} case {case}: interp and jit differ ({stats})\n{code:02x?}"
        );
        last_stats = stats;
    }
    assert!(placed >= 8, "only {placed} regions placed from the compile thread ({last_stats})");
}

/// A flag writer that ends a member (its flags pending at the member's edges): CMP (what
/// memtest86+'s checking loops end in), DEC, two pending operations (AND then DEC: the AND's CF
/// under the DEC's others), TEST, INC, shifts and rotates by immediates of each width, or none
/// (the operation carried into the member is handed on unchanged).
fn flag_tail(a: &mut CodeAssembler, r: &mut Rng, kind: Option<u64>) {
    let res = match kind.unwrap_or_else(|| r.below(11)) {
        0 => a.cmp(rsi, rdx),
        1 => a.dec(ecx),
        2 => a.and(rbx, rax).and_then(|_| a.dec(ecx)),
        3 => a.test(rbp, rbp),
        4 => a.inc(rbp),
        5 => a.shl(rbx, 1 + r.below(63) as u32),
        6 => a.rol(rbx, 1).and_then(|_| a.dec(ecx)),
        7 => a.shr(bx, 1 + r.below(15) as u32),
        8 => a.sub(ebp, eax),
        9 => a.ror(rax, 1 + r.below(63) as u32),
        _ => Ok(()),
    };
    res.expect("flag tail");
}

/// The first instruction of a member: a memory form (whose slow path may need every flag), or
/// one that reads the flags carried in (ADC, SBB, SETcc, CMOVcc), or a flag-free one.
fn member_head(a: &mut CodeAssembler, r: &mut Rng) {
    let res = match r.below(9) {
        0 => a.mov(qword_ptr(rsi), rax),
        1 => a.mov(rbp, qword_ptr(rsi)),
        2 => a.add(qword_ptr(rsi + 8), rbx),
        3 => a.adc(rbx, rdx),
        4 => a.sbb(ebp, eax),
        5 => a.setb(al),
        6 => a.cmovle(rbp, rbx),
        7 => a.seto(bl).and_then(|_| a.setp(bh)),
        _ => a.mov(r8, rbx),
    };
    res.expect("member head");
}

/// A loop of two to four blocks shaped like memtest86+'s checking loops (a load or store at a
/// block's top, CMP/Jcc at its end, a second block closing the loop), with random flag writers
/// ending each block and random flag readers starting the next, so that flags are carried
/// across every kind of region edge: A: head, tail, Jcc to C; B: head, tail, JMP or Jcc to D;
/// C: head, no flag writer or a tail, JMP to D; D: the pointer step (LEA, no flags), head, tail, Jcc top.
fn carried_loop(r: &mut Rng) -> Vec<u8> {
    // Half the programs end every block with the same kind of flag writer (the same operation
    // carried along every edge, and handed on through C when C writes no flags).
    let kind = (r.below(2) == 0).then(|| r.below(11));
    if r.below(3) == 0 {
        let kind = r.below(10);
        return handed_on_loop(r, kind);
    }
    asm(64, |a| {
        let mut top = a.create_label();
        let mut c = a.create_label();
        let mut d = a.create_label();
        a.set_label(&mut top).unwrap();
        member_head(a, r);
        flag_tail(a, r, kind);
        jcc(a, r.below(16), c);
        member_head(a, r);
        flag_tail(a, r, kind);
        if r.below(2) == 0 {
            a.jmp(d).unwrap();
        } else {
            jcc(a, r.below(16), d);
        }
        a.set_label(&mut c).unwrap();
        if r.below(2) == 0 {
            member_head(a, r);
        } else {
            a.mov(rbp, qword_ptr(rsi)).unwrap();
        }
        if r.below(3) == 0 {
            flag_tail(a, r, kind);
        }
        // A block of its own (C's end must be a branch).
        a.jmp(d).unwrap();
        a.set_label(&mut d).unwrap();
        a.lea(rsi, qword_ptr(rsi + rdi)).unwrap();
        member_head(a, r);
        flag_tail(a, r, kind);
        jcc(a, r.below(16), top);
        a.hlt().unwrap();
    })
}

/// A loop in which A and B end with the same kind of flag writer (`kind`, one of
/// [`flag_tail`]'s), A branches on the parity of its result to C or falls into B, C writes no
/// flags and jumps to D, as B does, and D starts by reading the flags: the operation carried into
/// C is handed on to D (whose carried operation is B's kind) through C's variables.
fn handed_on_loop(r: &mut Rng, kind: u64) -> Vec<u8> {
    asm(64, |a| {
        let mut top = a.create_label();
        let mut c = a.create_label();
        let mut d = a.create_label();
        a.set_label(&mut top).unwrap();
        a.mov(qword_ptr(rsi), rax).unwrap();
        flag_tail(a, r, Some(kind));
        a.jp(c).unwrap();
        a.mov(rbp, qword_ptr(rsi + 8)).unwrap();
        flag_tail(a, r, Some(kind));
        a.jmp(d).unwrap();
        a.set_label(&mut c).unwrap();
        a.mov(r8, qword_ptr(rsi)).unwrap();
        a.jmp(d).unwrap();
        a.set_label(&mut d).unwrap();
        a.lea(rsi, qword_ptr(rsi + rdi)).unwrap();
        let res = match r.below(5) {
            0 => a.adc(rbx, rdx),
            1 => a.sbb(ebp, eax),
            2 => a.seto(bl).and_then(|_| a.sets(bh)),
            3 => a.cmovle(rbp, rbx),
            _ => a.setb(al).and_then(|_| a.setp(ah)),
        };
        res.expect("reader");
        a.dec(ecx).unwrap();
        a.jne(top).unwrap();
        a.hlt().unwrap();
    })
}

/// Regions whose edges carry pending flag operations (`region.rs`, `Lower::back_edge`): random
/// memtest86+-shaped loops ([`carried_loop`]) under both vendors' quirks, cut by random budgets,
/// with RDI in a third of the runs making the second pass's memory access non-canonical (#GP on
/// its slow path, with the flags carried into the faulting block). Registers, RFLAGS, RIP, the
/// count, the exit, memory and the TLB equal the interpreter's, and regions ran.
#[test]
fn regions_carry_pending_flags_exactly() {
    let cases: u64 =
        std::env::var("FERRITE_JIT_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(1500) / 3;
    let mut r = Rng(0x5eed_ca55_2026_1219);
    let mut interp = Interpreter::new();
    interp.trap_faults = true;
    let mut jit = jit_interp(3);
    let (mut faults, mut budget_stops) = (0, 0);
    for case in 0..cases {
        let code = carried_loop(&mut r);
        let mut gpr = [0u64; 16];
        for g in gpr.iter_mut() {
            *g = if r.below(2) == 0 { r.below(4) } else { r.next() };
        }
        gpr[1] = 1 + r.below(300);
        gpr[3] = if r.below(2) == 0 { r.next() } else { 1 << r.below(64) };
        gpr[6] = DATA + 0x100;
        gpr[7] = if r.below(3) == 0 { 0x8000_0000_0000 } else { 8 };
        gpr[2] = gpr[6] + 8 * r.below(300);
        let rflags = 0x2 | (r.next() & cpu::state::flags::ARITH);
        let quirks = if case & 1 == 0 { cpu::state::Quirks::Intel } else { cpu::state::Quirks::Amd };
        let until = if r.below(2) == 0 { 1 + r.below(600) } else { 6000 };
        let go = |it: &mut Interpreter| {
            let mut bus = TestBus::default();
            let mut st = cpu_in(TestMode::Long64, &mut bus);
            bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
            for (k, b) in bus.ram[DATA as usize..DATA as usize + 0x1000].iter_mut().enumerate() {
                *b = (k as u8).wrapping_mul(37) ^ 0x5a;
            }
            st.gpr = gpr;
            st.gpr[4] = STACK;
            st.rflags = rflags;
            st.quirks = quirks;
            it.flush_all();
            let exit = it.run(&mut st, &mut bus, until);
            ((st, exit, bus), common::tlb_tags(it))
        };
        let (a, ta) = go(&mut interp);
        let (b, tb) = go(&mut jit);
        match a.1 {
            Exit::Trapped(_) => faults += 1,
            Exit::BudgetSpent => budget_stops += 1,
            _ => {}
        }
        let what = format!("case {case} ({quirks:?}): budget {until}, program {code:02x?}");
        assert_same(&what, &a, &b);
        assert_eq!(ta, tb, "{what}: the TLB differs");
    }
    let made = stat(&jit, " regions (");
    assert!(made >= cases / 4, "only {made} regions compiled in {cases} programs");
    assert!(faults >= cases / 10, "only {faults} runs faulted");
    assert!(budget_stops >= cases / 4, "only {budget_stops} runs ended at the budget");
}
