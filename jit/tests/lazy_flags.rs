//! The lazy flag state across block exits (`cpu::lazyflags`, `lower::Lower::export` and
//! `take_incoming`) against the interpreter: random loops of blocks that end right after a
//! flag-writing operation of every lazy kind (ADD, SUB/CMP/NEG, INC/DEC, the logic ops, ADC/SBB
//! after whatever left CF pending; register and memory forms, each operand size) and whose
//! successor reads those flags first (Jcc, SETcc, ADC/SBB and chains of them, CMOVcc, PUSHF, POPF
//! of the pushed flags changed, LAHF, a partial writer such as INC followed by a read of CF), joined by every block end that links (Jcc, JMP, CALL, RET), in 64-bit and 32-bit
//! code, cut by random budgets (where the machine would take an interrupt: the flags are compared
//! at every slice end) and ending in a halt or a fault (#DE, #PF, #UD) raised right after a lazy
//! state was left. Registers, RFLAGS, RIP, the retired count, the exits and memory must equal the
//! interpreter's.

use cpu::Interpreter;
use cpu::interp::Exit;
use cpu::testutil::{CODE, DATA, STACK, TestBus, TestMode, cpu_in};
use iced_x86::code_asm::*;

mod common;
use common::{Rng, jcc};

/// Where the functions the main loop calls start.
const FUNCS: u64 = 0x5000;

struct Program {
    main: Vec<u8>,
    funcs: Vec<u8>,
}

/// A random SETcc of AL.
fn setcc(a: &mut CodeAssembler, cc: u64) {
    match cc % 16 {
        0 => a.seto(al),
        1 => a.setno(al),
        2 => a.setb(al),
        3 => a.setae(al),
        4 => a.sete(al),
        5 => a.setne(al),
        6 => a.setbe(al),
        7 => a.seta(al),
        8 => a.sets(al),
        9 => a.setns(al),
        10 => a.setp(al),
        11 => a.setnp(al),
        12 => a.setl(al),
        13 => a.setge(al),
        14 => a.setle(al),
        _ => a.setg(al),
    }
    .unwrap();
}

/// A random CMOVcc EBP, EBX.
fn cmovcc(a: &mut CodeAssembler, cc: u64) {
    match cc % 16 {
        0 => a.cmovo(ebp, ebx),
        1 => a.cmovno(ebp, ebx),
        2 => a.cmovb(ebp, ebx),
        3 => a.cmovae(ebp, ebx),
        4 => a.cmove(ebp, ebx),
        5 => a.cmovne(ebp, ebx),
        6 => a.cmovbe(ebp, ebx),
        7 => a.cmova(ebp, ebx),
        8 => a.cmovs(ebp, ebx),
        9 => a.cmovns(ebp, ebx),
        10 => a.cmovp(ebp, ebx),
        11 => a.cmovnp(ebp, ebx),
        12 => a.cmovl(ebp, ebx),
        13 => a.cmovge(ebp, ebx),
        14 => a.cmovle(ebp, ebx),
        _ => a.cmovg(ebp, ebx),
    }
    .unwrap();
}

/// Mixes EAX into EBX, EDX and ESI so that operands vary from one iteration to the next.
fn stir(a: &mut CodeAssembler, r: &mut Rng) {
    a.imul_3(eax, eax, (r.next() as u32 | 1) as i32).unwrap();
    a.add(eax, ecx).unwrap();
    match r.below(3) {
        0 => a.mov(ebx, eax).unwrap(),
        1 => a.rol(edx, 13).unwrap(),
        _ => a.xor(esi, eax).unwrap(),
    }
    a.rol(eax, 7).unwrap();
}

/// A flag-writing operation of one of the lazy kinds: register or memory form, any size.
fn setter(a: &mut CodeAssembler, r: &mut Rng, bits: u32) {
    let off = (r.below(16) * 4) as i32;
    let mem32 = |bits: u32| if bits == 64 { dword_ptr(rdi + off) } else { dword_ptr(edi + off) };
    let mem8 = |bits: u32| if bits == 64 { byte_ptr(rdi + off) } else { byte_ptr(edi + off) };
    match r.below(32) {
        0 => a.add(eax, ebx).unwrap(),
        1 => a.sub(eax, edx).unwrap(),
        2 => a.cmp(ebx, edx).unwrap(),
        3 => a.cmp(al, (r.next() & 0xff) as i32).unwrap(),
        4 => a.cmp(si, dx).unwrap(),
        5 => a.inc(ebx).unwrap(),
        6 => a.dec(edx).unwrap(),
        7 => a.dec(dl).unwrap(),
        8 => a.neg(esi).unwrap(),
        9 => a.and(eax, edx).unwrap(),
        10 => a.or(bx, si).unwrap(),
        11 => a.xor(dl, al).unwrap(),
        12 => a.test(esi, ebx).unwrap(),
        13 => a.add(ax, (r.next() & 0x7fff) as i32).unwrap(),
        14 if bits == 64 => a.sub(rax, rbx).unwrap(),
        14 => a.sub(eax, 1).unwrap(),
        15 if bits == 64 => a.cmp(rdx, rsi).unwrap(),
        15 => a.cmp(edx, esi).unwrap(),
        16 if bits == 64 => a.and(rsi, rax).unwrap(),
        16 => a.and(esi, eax).unwrap(),
        // Memory forms (their flags are carried over the join with the slow path).
        17 => a.cmp(mem32(bits), ebx).unwrap(),
        18 => a.cmp(mem8(bits), 0).unwrap(),
        19 => a.add(mem32(bits), edx).unwrap(),
        20 => a.sub(eax, mem32(bits)).unwrap(),
        21 => a.test(mem8(bits), al).unwrap(),
        // ADC/SBB, a lazy kind of their own, each reading the CF of what is pending before it
        // (the rotate of `stir`, an ADD/CMP/SUB, another ADC), every size, register, immediate and
        // memory forms.
        22 => a.adc(eax, ebx).unwrap(),
        23 => a.sbb(edx, esi).unwrap(),
        24 => {
            // The compare idiom: 0 or -1 from CF of a pending CMP.
            a.cmp(ebx, edx).unwrap();
            a.sbb(eax, eax).unwrap();
        }
        25 => {
            // ADD's CF read as a carry in, with an addend of 0 half the time (no carry, r == a).
            if r.below(2) == 0 {
                a.add(eax, 0).unwrap();
            } else {
                a.add(eax, ebx).unwrap();
            }
            a.adc(dl, (r.next() & 0x7f) as i32).unwrap();
        }
        26 if bits == 64 => {
            // A bignum chain: ADD then ADCs (the carry in from an ADD, then from an ADC).
            a.add(rax, rbx).unwrap();
            a.adc(rdx, rsi).unwrap();
            a.adc(rbx, rax).unwrap();
        }
        26 => {
            a.sub(si, bx).unwrap();
            a.sbb(bx, dx).unwrap();
        }
        27 => a.adc(mem32(bits), edx).unwrap(),
        28 => a.sbb(eax, mem32(bits)).unwrap(),
        29 if bits == 64 => {
            // 64-bit carries where r == a (b all ones with a carry in; a == b with a borrow in).
            a.mov(rsi, -1i64).unwrap();
            a.cmp(eax, ebx).unwrap();
            a.adc(rdx, rsi).unwrap();
            a.cmp(ebx, eax).unwrap();
            a.sbb(rax, rax).unwrap();
        }
        29 => {
            a.mov(esi, -1).unwrap();
            a.cmp(eax, ebx).unwrap();
            a.adc(edx, esi).unwrap();
        }
        30 => a.sbb(mem8(bits), (r.next() & 0x7f) as i32).unwrap(),
        _ => a.test(mem8(bits), al).unwrap(),
    }
}

/// Something that reads the flags first: the result lands in EBP (a checksum) or the flags.
fn reader(a: &mut CodeAssembler, r: &mut Rng, bits: u32) {
    match r.below(13) {
        0 | 1 => {
            let mut skip = a.create_label();
            jcc(a, r.next(), skip);
            a.xor(ebp, 0x1234_5678).unwrap();
            a.set_label(&mut skip).unwrap();
            a.nop().unwrap();
        }
        2 => {
            setcc(a, r.next());
            a.movzx(esi, al).unwrap();
            a.lea(ebp, dword_ptr(ebp + esi * 2 + 1)).unwrap();
        }
        3 => a.adc(ebp, ebx).unwrap(),
        4 => a.sbb(ebp, edx).unwrap(),
        5 => {
            // PUSHF (inline in 64-bit code, the handler in 32-bit code): the flags computed first.
            if bits == 64 {
                a.pushfq().unwrap();
                a.pop(rsi).unwrap();
            } else {
                a.pushfd().unwrap();
                a.pop(esi).unwrap();
            }
            a.xor(ebp, esi).unwrap();
        }
        6 => {
            a.lahf().unwrap();
            a.movzx(esi, ah).unwrap();
            a.add(ebp, esi).unwrap();
        }
        7 => cmovcc(a, r.next()),
        8 => {
            // A partial writer: INC keeps the predecessor's CF, which ADC then reads.
            a.inc(ebx).unwrap();
            a.adc(ebp, 0).unwrap();
        }
        9 => {
            // An ADC chain: the second reads the CF the first left pending.
            a.adc(ebp, ebx).unwrap();
            a.sbb(esi, edx).unwrap();
            a.xor(ebp, esi).unwrap();
        }
        10 => {
            // POPF of the pushed flags with some arithmetic flags (and sometimes DF, or IF, which
            // sends the inline POPFQ to its handler) flipped; POPF ends the block.
            let mut m = r.next() & 0x8d5;
            if r.below(4) == 0 {
                m |= 0x400;
            }
            if r.below(4) == 0 {
                m |= 0x200;
            }
            if bits == 64 {
                a.pushfq().unwrap();
                a.pop(rsi).unwrap();
                a.xor(rsi, m as i32).unwrap();
                a.push(rsi).unwrap();
                a.popfq().unwrap();
            } else {
                a.pushfd().unwrap();
                a.pop(esi).unwrap();
                a.xor(esi, m as i32).unwrap();
                a.push(esi).unwrap();
                a.popfd().unwrap();
            }
            a.lea(ebp, dword_ptr(ebp + esi)).unwrap();
        }
        // Nothing: the next writer overwrites the state unread.
        _ => {}
    }
}

/// A random program of `bits`-bit code: a loop of `sites` (setter, block end, reader) triples.
fn program(seed: u64, bits: u32, iterations: u32, end: u64) -> Program {
    let mut r = Rng(seed | 1);
    let nf = 3;
    let assemble = |a: &mut CodeAssembler, at: u64, labels: &[CodeLabel]| {
        let res = a
            .assemble_options(at, iced_x86::BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
            .expect("assemble");
        let ips: Vec<u64> = labels.iter().map(|l| res.label_ip(l).expect("label")).collect();
        (res.inner.code_buffer, ips)
    };
    // Functions: they read the caller's flags first, then leave a lazy state to the return site.
    let mut fa = CodeAssembler::new(bits).unwrap();
    let mut fl: Vec<CodeLabel> = (0..nf).map(|_| fa.create_label()).collect();
    for l in fl.iter_mut() {
        fa.set_label(l).unwrap();
        reader(&mut fa, &mut r, bits);
        stir(&mut fa, &mut r);
        setter(&mut fa, &mut r, bits);
        fa.ret().unwrap();
    }
    let (funcs, fips) = assemble(&mut fa, FUNCS, &fl);

    let mut a = CodeAssembler::new(bits).unwrap();
    let mut top = a.create_label();
    if bits == 64 {
        a.mov(rdi, DATA).unwrap();
    } else {
        a.mov(edi, DATA as u32).unwrap();
    }
    a.mov(ecx, iterations).unwrap();
    a.set_label(&mut top).unwrap();
    for _ in 0..3 + r.below(5) {
        stir(&mut a, &mut r);
        setter(&mut a, &mut r, bits);
        match r.below(4) {
            // A Jcc whose both successors are the next instruction, or one that skips a bit.
            0 => {
                let mut next = a.create_label();
                jcc(&mut a, r.next(), next);
                a.set_label(&mut next).unwrap();
                a.nop().unwrap();
            }
            1 => {
                let mut next = a.create_label();
                a.jmp(next).unwrap();
                a.set_label(&mut next).unwrap();
                a.nop().unwrap();
            }
            // CALL (the callee reads first), whose RET returns to a reader.
            _ => a.call(fips[r.below(nf as u64) as usize]).unwrap(),
        }
        // `nop` above began the successor; the reader follows it (NOP reads nothing).
        reader(&mut a, &mut r, bits);
    }
    a.dec(ecx).unwrap();
    a.jne(top).unwrap();
    // The end: a fault right after a block left a lazy state, or HLT.
    stir(&mut a, &mut r);
    setter(&mut a, &mut r, bits);
    let mut next = a.create_label();
    a.jmp(next).unwrap();
    a.set_label(&mut next).unwrap();
    match end {
        0 => a.hlt().unwrap(),
        1 => {
            a.xor(edx, edx).unwrap();
            a.mov(esi, 0).unwrap();
            a.div(esi).unwrap();
        }
        2 if bits == 64 => a.mov(eax, dword_ptr(0x4000_0000u64)).unwrap(),
        _ => a.ud2().unwrap(),
    }
    let (main, _) = assemble(&mut a, CODE, &[]);
    assert!(CODE + (main.len() as u64) < FUNCS, "main code fits below the functions");
    assert!(FUNCS + (funcs.len() as u64) < STACK - 0x400, "functions fit below the stack");
    Program { main, funcs }
}

/// The carry flag a linked predecessor's lazy state defines, kept by an INC or DEC that starts the
/// next block (`Lower::incoming_cf`: SUB/CMP/NEG, ADD and the logic ops inline, RFLAGS' CF after an
/// INC/DEC state, the accessor after ADC/SBB), computed where that block exits (by a link, with
/// its own INC/DEC state pending) and read by SETB and ADC in the block after: every one of those
/// kinds at 1, 2, 4 and 8 bytes on edge operands, with CF set and clear before the operation. The
/// JIT (translating at the first entry, so that in a later turn every block is entered by a link
/// with the state pending) equals the interpreter.
#[test]
fn carry_kept_by_inc_dec_from_a_linked_predecessors_state_matches_the_interpreter() {
    let vals: [u64; 6] = [0, 1, 0x80, 0x8000_0000, 0x8000_0000_0000_0000, u64::MAX];
    const OUT: u64 = DATA + 0x1000;
    for size in [1u32, 2, 4, 8] {
        use iced_x86::Register as R;
        let (ra, rb) = match size {
            1 => (R::AL, R::BL),
            2 => (R::AX, R::BX),
            4 => (R::EAX, R::EBX),
            _ => (R::RAX, R::RBX),
        };
        for op in 0..9u32 {
            let mut a = CodeAssembler::new(64).unwrap();
            let mut turn = a.create_label();
            a.mov(r15d, 3).unwrap();
            a.xor(r13d, r13d).unwrap();
            a.set_label(&mut turn).unwrap();
            let mut slot = 0;
            for &x in &vals {
                for &y in &vals {
                    for (k, cin) in [false, true].into_iter().enumerate() {
                        if cin {
                            a.stc().unwrap();
                        } else {
                            a.clc().unwrap();
                        }
                        a.mov(rax, x).unwrap();
                        a.mov(rbx, y).unwrap();
                        {
                            use iced_x86::{Code as C, Instruction as I};
                            let c = match (op, size) {
                                (0, 1) => C::Cmp_rm8_r8,
                                (0, 2) => C::Cmp_rm16_r16,
                                (0, 4) => C::Cmp_rm32_r32,
                                (0, _) => C::Cmp_rm64_r64,
                                (1, 1) => C::Sub_rm8_r8,
                                (1, 2) => C::Sub_rm16_r16,
                                (1, 4) => C::Sub_rm32_r32,
                                (1, _) => C::Sub_rm64_r64,
                                (2, 1) => C::Add_rm8_r8,
                                (2, 2) => C::Add_rm16_r16,
                                (2, 4) => C::Add_rm32_r32,
                                (2, _) => C::Add_rm64_r64,
                                (3, 1) => C::And_rm8_r8,
                                (3, 2) => C::And_rm16_r16,
                                (3, 4) => C::And_rm32_r32,
                                (3, _) => C::And_rm64_r64,
                                (4, 1) => C::Xor_rm8_r8,
                                (4, 2) => C::Xor_rm16_r16,
                                (4, 4) => C::Xor_rm32_r32,
                                (4, _) => C::Xor_rm64_r64,
                                (5, 1) => C::Adc_rm8_r8,
                                (5, 2) => C::Adc_rm16_r16,
                                (5, 4) => C::Adc_rm32_r32,
                                (5, _) => C::Adc_rm64_r64,
                                (6, 1) => C::Sbb_rm8_r8,
                                (6, 2) => C::Sbb_rm16_r16,
                                (6, 4) => C::Sbb_rm32_r32,
                                (6, _) => C::Sbb_rm64_r64,
                                (7, 1) => C::Neg_rm8,
                                (7, 2) => C::Neg_rm16,
                                (7, 4) => C::Neg_rm32,
                                (7, _) => C::Neg_rm64,
                                (_, 1) => C::Dec_rm8,
                                (_, 2) => C::Dec_rm16,
                                (_, 4) => C::Dec_rm32,
                                (_, _) => C::Dec_rm64,
                            };
                            let i =
                                if op >= 7 { I::with1(c, ra).unwrap() } else { I::with2(c, ra, rb).unwrap() };
                            a.add_instruction(i).unwrap();
                        }
                        // The block that keeps CF: INC or DEC, then a link.
                        let mut keep = a.create_label();
                        a.jmp(keep).unwrap();
                        a.set_label(&mut keep).unwrap();
                        if k == 0 {
                            a.dec(ecx).unwrap();
                        } else {
                            a.inc(rcx).unwrap();
                        }
                        let mut read = a.create_label();
                        a.jmp(read).unwrap();
                        a.set_label(&mut read).unwrap();
                        a.setb(dl).unwrap();
                        a.adc(r13, rcx).unwrap();
                        a.mov(byte_ptr(OUT + slot), dl).unwrap();
                        slot += 1;
                        let mut n = a.create_label();
                        a.jmp(n).unwrap();
                        a.set_label(&mut n).unwrap();
                    }
                }
            }
            a.dec(r15d).unwrap();
            a.jnz(turn).unwrap();
            a.hlt().unwrap();
            let followed = interp_and_jit_agree(a, OUT, slot, &format!("operation {op} at {size} bytes"));
            assert!(followed >= 36 * 2 * 3, "operation {op} at {size} bytes: {followed:?} links followed");
        }
    }
}

/// Runs the program `a` assembled (64-bit code, no functions) under the interpreter and the JIT
/// (regions off) to its HLT, requires the same exit, registers, RFLAGS, count and the `slot`
/// bytes at `out`, and returns the links the JIT followed.
fn interp_and_jit_agree(mut a: CodeAssembler, out: u64, slot: u64, what: &str) -> u64 {
    let main = a.assemble(CODE).unwrap();
    assert!(CODE + (main.len() as u64) < STACK - 0x400, "the program reaches the stack");
    let p = Program { main, funcs: Vec::new() };
    let run = |jit: bool| {
        let mut it = engine(jit, false);
        let (mut st, mut bus) = setup(TestMode::Long64, &p, 1);
        let e = it.run(&mut st, &mut bus, u64::MAX / 2);
        let bytes = bus.ram[out as usize..(out + slot) as usize].to_vec();
        ((e, st.gpr, st.rflags, st.icount, bytes), jit.then(|| stat(&it, " links followed")))
    };
    let ((want, _), (got, followed)) = (run(false), run(true));
    assert_eq!(want, got, "{what}");
    followed.expect("counted under the JIT")
}

fn setup(mode: TestMode, p: &Program, seed: u64) -> (cpu::CpuState, TestBus) {
    let mut bus = TestBus::default();
    let mut st = cpu_in(mode, &mut bus);
    bus.ram[CODE as usize..CODE as usize + p.main.len()].copy_from_slice(&p.main);
    bus.ram[FUNCS as usize..FUNCS as usize + p.funcs.len()].copy_from_slice(&p.funcs);
    let mut r = Rng(seed ^ 0x5eed);
    for k in 0..64 {
        bus.ram[DATA as usize + k] = r.byte();
    }
    st.rip = CODE;
    st.gpr[4] = STACK;
    for g in [0, 2, 3, 5, 6] {
        st.gpr[g] = r.next();
    }
    (st, bus)
}

/// The interpreter, or with the JIT (translating at the first entry); `regions`: loops become
/// regions after a few turns (their entries take a lazy state over, their side exits leave one).
fn engine(jit: bool, regions: bool) -> Interpreter {
    let mut it = Interpreter::new();
    if jit {
        let mut j = jit::Jit::new().expect("jit");
        j.set_region_threshold(if regions { 4 } else { 0 });
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

/// Each run's exit with the retired count, RIP, RFLAGS and a digest of the registers.
type Marks = Vec<(Exit, u64, u64, u64, u64)>;
type Outcome = ([u64; 16], u64, u64, u64, Marks, Vec<u8>);

fn mark(e: Exit, st: &cpu::CpuState) -> (Exit, u64, u64, u64, u64) {
    let digest = st.gpr.iter().fold(0, |h: u64, &g| h.rotate_left(7) ^ g);
    (e, st.icount, st.rip, st.rflags, digest)
}

fn outcome(st: &cpu::CpuState, bus: &TestBus, exits: Marks) -> Outcome {
    let mut mem = bus.ram[STACK as usize - 0x400..STACK as usize].to_vec();
    mem.extend_from_slice(&bus.ram[DATA as usize..DATA as usize + 64]);
    (st.gpr, st.rip, st.rflags, st.icount, exits, mem)
}

/// Runs `p` in slices of random budgets until it stops; `long` runs it in one slice.
fn run_sliced(it: &mut Interpreter, mode: TestMode, p: &Program, seed: u64, long: bool) -> Outcome {
    let (mut st, mut bus) = setup(mode, p, seed);
    it.flush_all();
    let mut r = Rng(seed | 1);
    let mut exits = Vec::new();
    loop {
        let n = if long {
            u64::MAX / 2
        } else if r.below(4) == 0 {
            1 + r.below(20_000)
        } else {
            1 + r.below(300)
        };
        let until = st.icount + n;
        let e = it.run(&mut st, &mut bus, until);
        assert!(!st.lazy.is_pending(), "a lazy flag state left after a run");
        let done = e != Exit::BudgetSpent;
        exits.push(mark(e, &st));
        if done || exits.len() > 100_000 {
            break;
        }
    }
    outcome(&st, &bus, exits)
}

/// Random programs of flag writers, block ends and flag readers, in 64-bit and 32-bit code, under
/// random budgets and in one long run, ending in HLT or a fault, with and without regions: the JIT
/// equals the interpreter.
#[test]
fn lazy_flags_across_block_exits_match_the_interpreter() {
    let cases: u64 = std::env::var("FERRITE_JIT_LAZY_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    for mode in [TestMode::Long64, TestMode::Prot32] {
        let bits = if mode == TestMode::Long64 { 64 } else { 32 };
        let mut made = 0;
        for case in 0..cases {
            let seed = 0x1a2f_0000 + case * 7919 + bits as u64;
            let end = case % 4;
            let p = program(seed, bits, 150 + (case as u32 % 4) * 50, end);
            for (long, regions) in [(false, false), (true, false), (false, true), (true, true)] {
                let want = run_sliced(&mut engine(false, false), mode, &p, seed, long);
                let last = &want.4.last().expect("a run").0;
                assert!(
                    matches!(last, Exit::Halted | Exit::Trapped(_)),
                    "{bits}-bit case {case}: the program ends ({last:?})"
                );
                let mut it = engine(true, regions);
                let got = run_sliced(&mut it, mode, &p, seed, long);
                if regions {
                    made += stat(&it, " regions (");
                }
                let slice = got.4.iter().zip(&want.4).position(|(g, w)| g != w);
                assert!(
                    got == want,
                    "{bits}-bit case {case} (one run: {long}, regions: {regions}): first differing slice end {slice:?} (jit {:x?} interp {:x?}); at the end jit {:x?} rflags {:#x} rip {:#x} icount {} != interp {:x?} rflags {:#x} rip {:#x} icount {}",
                    slice.map(|k| &got.4[k]),
                    slice.map(|k| &want.4[k]),
                    got.0,
                    got.2,
                    got.1,
                    got.3,
                    want.0,
                    want.2,
                    want.1,
                    want.3
                );
            }
        }
        assert!(made > 0, "{bits}-bit: no region was made");
    }
}

/// A condition read first thing in a block from the lazy state its linked predecessor left
/// (`Lower::cond_incoming`: CMP/SUB and the logic ops at 4 and 8 bytes inline, any other kind
/// through the accessor): every condition code after CMP, SUB, TEST, AND, OR, XOR, ADD and INC at
/// 1, 2, 4 and 8 bytes, on edge operands (0, 1, the sign bits, all ones), each result kept
/// by SETcc in its own byte. The JIT (translating at the first entry, so every block after the
/// first is entered by a link with the state pending) equals the interpreter.
#[test]
fn every_condition_read_from_a_linked_predecessors_state_matches_the_interpreter() {
    let vals: [u64; 6] = [0, 1, 0x80, 0x8000_0000, 0x8000_0000_0000_0000, u64::MAX];
    // The results, away from the code (a write there would invalidate it and drop the links).
    const OUT: u64 = DATA + 0x1000;
    for size in [1u32, 2, 4, 8] {
        use iced_x86::Register as R;
        let (ra, rb) = match size {
            1 => (R::AL, R::BL),
            2 => (R::AX, R::BX),
            4 => (R::EAX, R::EBX),
            _ => (R::RAX, R::RBX),
        };
        for op in 0..8u32 {
            // One program per size and operation: for each operand pair, the operation ends a
            // block (JMP to the next line) and the next block reads all 16 conditions.
            let mut a = CodeAssembler::new(64).unwrap();
            let mut slot;
            // Three turns: from the second on, every block runs translated and linked.
            let mut turn = a.create_label();
            a.mov(r15d, 3).unwrap();
            a.set_label(&mut turn).unwrap();
            slot = 0;
            for &x in &vals {
                for &y in &vals {
                    a.mov(rax, x).unwrap();
                    a.mov(rbx, y).unwrap();
                    let mut next = a.create_label();
                    let code = |a: &mut CodeAssembler| -> Result<(), IcedError> {
                        use iced_x86::{Code as C, Instruction as I};
                        let c = match (op, size) {
                            (0, 1) => C::Cmp_rm8_r8,
                            (0, 2) => C::Cmp_rm16_r16,
                            (0, 4) => C::Cmp_rm32_r32,
                            (0, _) => C::Cmp_rm64_r64,
                            (1, 1) => C::Sub_rm8_r8,
                            (1, 2) => C::Sub_rm16_r16,
                            (1, 4) => C::Sub_rm32_r32,
                            (1, _) => C::Sub_rm64_r64,
                            (2, 1) => C::Test_rm8_r8,
                            (2, 2) => C::Test_rm16_r16,
                            (2, 4) => C::Test_rm32_r32,
                            (2, _) => C::Test_rm64_r64,
                            (3, 1) => C::And_rm8_r8,
                            (3, 2) => C::And_rm16_r16,
                            (3, 4) => C::And_rm32_r32,
                            (3, _) => C::And_rm64_r64,
                            (4, 1) => C::Or_rm8_r8,
                            (4, 2) => C::Or_rm16_r16,
                            (4, 4) => C::Or_rm32_r32,
                            (4, _) => C::Or_rm64_r64,
                            (5, 1) => C::Xor_rm8_r8,
                            (5, 2) => C::Xor_rm16_r16,
                            (5, 4) => C::Xor_rm32_r32,
                            (5, _) => C::Xor_rm64_r64,
                            (6, 1) => C::Add_rm8_r8,
                            (6, 2) => C::Add_rm16_r16,
                            (6, 4) => C::Add_rm32_r32,
                            (6, _) => C::Add_rm64_r64,
                            (_, 1) => C::Inc_rm8,
                            (_, 2) => C::Inc_rm16,
                            (_, 4) => C::Inc_rm32,
                            (_, _) => C::Inc_rm64,
                        };
                        let i = if op == 7 { I::with1(c, ra).unwrap() } else { I::with2(c, ra, rb).unwrap() };
                        a.add_instruction(i)
                    };
                    code(&mut a).unwrap();
                    a.jmp(next).unwrap();
                    a.set_label(&mut next).unwrap();
                    for cc in 0..16 {
                        setcc(&mut a, cc);
                        a.mov(byte_ptr(OUT + slot), al).unwrap();
                        slot += 1;
                        // Each SETcc reads the state again: a block of its own, entered by a link.
                        let mut n = a.create_label();
                        a.jmp(n).unwrap();
                        a.set_label(&mut n).unwrap();
                        if cc < 15 {
                            a.mov(rax, x).unwrap();
                            a.mov(rbx, y).unwrap();
                            code(&mut a).unwrap();
                            let mut m = a.create_label();
                            a.jmp(m).unwrap();
                            a.set_label(&mut m).unwrap();
                        }
                    }
                }
            }
            a.dec(r15d).unwrap();
            a.jnz(turn).unwrap();
            a.hlt().unwrap();
            let followed = interp_and_jit_agree(a, OUT, slot, &format!("operation {op} at {size} bytes"));
            // The later turns entered the readers by links, with the state pending.
            assert!(followed > 36 * 16, "operation {op} at {size} bytes: {followed:?} links followed");
        }
    }
}
