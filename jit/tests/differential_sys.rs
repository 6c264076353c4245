//! The JIT against the interpreter on the system forms of `jit/src/lower_sys.rs`: RDTSC and RDTSCP
//! (a direct helper call with the retired count the generated code holds), mixed with inline ALU
//! forms that leave registers dirty and flags pending across them, conditional branches that read
//! flags written before them, and short loops around them (self-loops, whose count lives in SSA),
//! in 64-bit, 32-bit protected and real mode, with random TSC offsets and TSC_AUX values, and
//! CR4.TSD at CPL 0 (no fault) and at CPL 3 (#GP, which must leave the interpreter's state, RIP and
//! count). The test bus's TSC is its base plus the retired count, so a count off by one changes
//! EDX:EAX. Registers, RFLAGS, RIP, the count, the exit, the TLB and RAM must equal the
//! interpreter's.
//!
//! `FERRITE_JIT_DIFF_CASES=N` runs N programs per mode (default 300).

use cpu::Interpreter;
use cpu::interp::Exit;
use cpu::state::cr4;
use cpu::testutil::{CODE, STACK, TestBus, TestMode, cpu_in};
use iced_x86::{Decoder, DecoderOptions};

mod common;
use common::{Rng, tlb_tags};

/// A general register other than (E/R)SP.
fn reg(r: &mut Rng) -> u8 {
    [0u8, 1, 2, 3, 5, 6, 7][r.below(7) as usize]
}

const RDTSC: [u8; 2] = [0x0f, 0x31];
const RDTSCP: [u8; 3] = [0x0f, 0x01, 0xf9];

/// One random instruction (or a short loop) around RDTSC/RDTSCP.
fn gen_insn(r: &mut Rng, bits: u32, v: &mut Vec<u8>) {
    let w = |r: &mut Rng, v: &mut Vec<u8>| {
        if bits == 64 && r.below(2) == 0 {
            v.push(0x48);
        }
    };
    match r.below(12) {
        0 | 1 => v.extend(RDTSC),
        2 => v.extend(RDTSCP),
        3 | 4 => {
            // ADD/SUB/XOR/CMP r, r: a dirty register or pending flags across the next RDTSC.
            w(r, v);
            v.push([0x01, 0x29, 0x31, 0x39][r.below(4) as usize]);
            v.push(0xc0 | (reg(r) << 3) | reg(r));
        }
        5 => {
            // MOV r32, imm32 (imm16 in real mode).
            v.push(0xb8 + reg(r));
            let n = if bits == 16 { 2 } else { 4 };
            v.extend(&r.next().to_le_bytes()[..n]);
        }
        6 => {
            // INC/DEC r.
            w(r, v);
            v.extend([0xff, 0xc0 | ((r.below(2) as u8) << 3) | reg(r)]);
        }
        7 => {
            // SETcc AL..BL: reads flags from before the RDTSC.
            v.extend([0x0f, 0x90 + r.below(16) as u8, 0xc0 | r.below(4) as u8]);
        }
        8 => {
            // Jcc over the next RDTSC: ends the block on flags written before it.
            v.extend([0x70 + r.below(16) as u8, RDTSC.len() as u8]);
            v.extend(RDTSC);
        }
        9 => {
            // mov edi, n; top: rdtsc(p); add esi, eax; xor ebx, edx; dec edi; jnz top
            v.push(0xbf);
            let n = 1 + r.below(5) as u32;
            v.extend(&n.to_le_bytes()[..if bits == 16 { 2 } else { 4 }]);
            let top = v.len();
            if r.below(2) == 0 {
                v.extend(RDTSC);
            } else {
                v.extend(RDTSCP);
            }
            v.extend([0x01, 0xc6, 0x31, 0xd3, 0xff, 0xcf]);
            let rel = top as i64 - (v.len() as i64 + 2);
            v.extend([0x75, rel as i8 as u8]);
        }
        10 => v.push(0xf5), // CMC: a handler call between them
        _ => v.push(0x90),
    }
}

fn gen_program(r: &mut Rng, bits: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..4 + r.below(20) {
        gen_insn(r, bits, &mut v);
    }
    v.push(0xf4);
    v
}

/// The setup of one case: registers, RFLAGS' arithmetic bits, TSC base/offset/aux, CR4.TSD, CPL.
#[derive(Clone, Copy)]
struct Setup {
    gpr: [u64; 16],
    flags: u64,
    tsc: u64,
    offset: u64,
    aux: u64,
    tsd: bool,
    cpl3: bool,
}

fn run(it: &mut Interpreter, mode: TestMode, code: &[u8], s: &Setup) -> (cpu::CpuState, Exit, TestBus) {
    let mut bus = TestBus { tsc: s.tsc, ..TestBus::default() };
    let mut st = cpu_in(mode, &mut bus);
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    st.gpr = s.gpr;
    st.gpr[4] = STACK;
    st.rflags = (st.rflags & !cpu::state::flags::ARITH) | (s.flags & cpu::state::flags::ARITH);
    st.msr.tsc_offset = s.offset;
    st.msr.tsc_aux = s.aux;
    if s.tsd {
        st.cr4 |= cr4::TSD;
    }
    if s.cpl3 {
        // No paging in this mode: CPL 3 fetches and runs the same code.
        st.cpl = 3;
    }
    it.flush_all();
    let exit = it.run(&mut st, &mut bus, 2_000);
    (st, exit, bus)
}

fn disasm(code: &[u8], bits: u32) -> String {
    let mut d = Decoder::with_ip(bits, code, CODE, DecoderOptions::NONE);
    d.iter().map(|i| format!("  {:#x}: {i}", i.ip())).collect::<Vec<_>>().join("\n")
}

#[test]
fn jit_matches_interpreter_on_rdtsc() {
    let cases: u64 = std::env::var("FERRITE_JIT_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let mut r = Rng(0x7364_7473_2026_1207);
    let mut interp = Interpreter::new();
    let mut jit = Interpreter::new();
    jit.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
    interp.trap_faults = true;
    jit.trap_faults = true;
    let mut exits = std::collections::BTreeMap::new();
    for (mode, bits) in [(TestMode::Long64, 64), (TestMode::Prot32, 32), (TestMode::Real, 16)] {
        for case in 0..cases {
            let code = gen_program(&mut r, bits);
            let mut gpr = [0u64; 16];
            for g in gpr.iter_mut() {
                *g = r.next();
            }
            let s = Setup {
                gpr,
                flags: r.next(),
                tsc: r.next() >> r.below(64),
                offset: if r.below(2) == 0 { 0 } else { r.next() },
                aux: r.next(),
                tsd: r.below(3) == 0,
                // Only 32-bit protected mode here runs without paging (the 64-bit identity map
                // is supervisor-only) and has a CPL that matters (real mode's is 0).
                cpl3: mode == TestMode::Prot32 && r.below(3) == 0,
            };
            let (a, ea, ma) = run(&mut interp, mode, &code, &s);
            let (b, eb, mb) = run(&mut jit, mode, &code, &s);
            assert_eq!(
                tlb_tags(&interp),
                tlb_tags(&jit),
                "{mode:?} case {case}: the TLB\n{}",
                disasm(&code, bits)
            );
            assert!(
                ma.ram == mb.ram
                    && a.gpr == b.gpr
                    && a.rflags == b.rflags
                    && a.rip == b.rip
                    && a.icount == b.icount
                    && ea == eb,
                "{mode:?} case {case} (tsd {} cpl3 {}):\n{}\ninterp: {ea:?} rip {:#x} icount {} rflags {:#x}\n  gpr {:x?}\njit:    {eb:?} rip {:#x} icount {} rflags {:#x}\n  gpr {:x?}",
                s.tsd,
                s.cpl3,
                disasm(&code, bits),
                a.rip,
                a.icount,
                a.rflags,
                a.gpr,
                b.rip,
                b.icount,
                b.rflags,
                b.gpr
            );
            *exits.entry(format!("{mode:?} {ea:?}")).or_insert(0u32) += 1;
        }
    }
    println!("exits: {exits:?}");
    // The #GP of RDTSC at CPL 3 with CR4.TSD was met (and matched), as were normal ends.
    assert!(exits.keys().any(|k| k.starts_with("Prot32 Trapped(Exc")), "no fault case: {exits:?}");
    assert!(exits.keys().any(|k| k.starts_with("Long64 Halted")), "no halted case: {exits:?}");
    assert!(jit.compiled_blocks() >= cases, "only {} blocks translated", jit.compiled_blocks());
}

/// RDTSC and RDTSCP run without their handler (a direct helper call that does not end the block),
/// in a hot loop: almost everything retires inline, and the values are the interpreter's.
#[test]
fn rdtsc_runs_without_its_handler() {
    // top: rdtsc; add rsi, rax; rdtscp; xor rbx, rcx; add rbx, rdx; dec edi; jnz top; hlt
    let code = [
        0x0f, 0x31, 0x48, 0x01, 0xc6, 0x0f, 0x01, 0xf9, 0x48, 0x31, 0xcb, 0x48, 0x01, 0xd3, 0xff, 0xcf, 0x75,
        0xee, 0xf4,
    ];
    let run = |jit: bool| {
        let mut it = Interpreter::new();
        if jit {
            it.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
        }
        let mut bus = TestBus { tsc: 0x1_2345_6789, ..TestBus::default() };
        let mut st = cpu_in(TestMode::Long64, &mut bus);
        bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
        st.gpr[7] = 1000;
        st.msr.tsc_offset = 0xffff_fff0_0000_0000;
        st.msr.tsc_aux = 0xabcd_1234_5678;
        let exit = it.run(&mut st, &mut bus, 100_000);
        assert_eq!(exit, Exit::Halted);
        (st, it.inline_retired())
    };
    let (a, _) = run(false);
    let (b, inline) = run(true);
    assert_eq!((a.gpr, a.rflags, a.rip, a.icount), (b.gpr, b.rflags, b.rip, b.icount));
    assert_eq!(b.gpr[1], 0x1234_5678, "ECX = TSC_AUX[31:0]");
    assert!(inline * 10 >= b.icount * 9, "only {inline} of {} instructions ran inline", b.icount);
}

/// A memory operand `[rbx]`, `[rbx+d8]`, `[rbp+d8]` or `[rsp+d8]` (mod/rm with `reg`), 64- or
/// 32-bit addressing alike.
fn mem_operand(r: &mut Rng, reg: u8, v: &mut Vec<u8>) {
    let d8 = (r.below(64) as u8).wrapping_sub(16) & !3;
    match r.below(4) {
        0 => v.push((reg << 3) | 3),
        1 => v.extend([0x40 | (reg << 3) | 3, d8]),
        2 => v.extend([0x40 | (reg << 3) | 5, d8]),
        _ => v.extend([0x40 | (reg << 3) | 4, 0x24, d8]),
    }
}

/// A register that holds no pointer of the program (not RBX, RSP, RBP).
fn data_reg(r: &mut Rng) -> u8 {
    [0u8, 1, 2, 6, 7][r.below(5) as usize]
}

/// One random instruction of the syscall path's memory forms (PUSH m64, LEAVE, XCHG m, r) and
/// company: loads, ALU, RDTSC, RBP re-anchored on the stack.
fn gen_mem_insn(r: &mut Rng, bits: u32, v: &mut Vec<u8>) {
    let long = bits == 64;
    match r.below(if long { 11 } else { 6 }) {
        0 | 1 => {
            // XCHG m, r: 8, 16, 32 or 64 bits.
            match r.below(4) {
                0 => v.push(0x86),
                1 => v.extend([0x66, 0x87]),
                2 if long => v.extend([0x48, 0x87]),
                _ => v.push(0x87),
            }
            let g = if v.last() == Some(&0x86) { r.below(4) as u8 } else { data_reg(r) };
            mem_operand(r, g, v);
        }
        2 => {
            // MOV r, m (an inline load).
            v.push(0x8b);
            let g = data_reg(r);
            mem_operand(r, g, v);
        }
        3 => {
            v.push([0x01, 0x29, 0x31][r.below(3) as usize]);
            v.push(0xc0 | (data_reg(r) << 3) | data_reg(r));
        }
        4 => v.extend(RDTSC),
        5 => v.push(0xf5),
        6..=8 => {
            // PUSH m64, sometimes through FS/GS.
            if r.below(4) == 0 {
                v.push([0x64, 0x65][r.below(2) as usize]);
            }
            v.push(0xff);
            mem_operand(r, 6, v);
        }
        9 => v.push(0xc9),                 // LEAVE
        _ => v.extend([0x48, 0x89, 0xe5]), // MOV RBP, RSP
    }
}

fn gen_mem_program(r: &mut Rng, bits: u32) -> Vec<u8> {
    // 64-bit: mov r14d, n; top: body; dec r14d; jnz top; hlt (the body never writes R14). 32-bit
    // code has no register the body leaves alone: its body runs once.
    let mut v = Vec::new();
    let long = bits == 64;
    if long {
        v.extend([0x41, 0xbe]);
        v.extend((1 + r.below(3) as u32).to_le_bytes());
    }
    let top = v.len();
    for _ in 0..3 + r.below(16) {
        gen_mem_insn(r, bits, &mut v);
    }
    if long {
        v.extend([0x41, 0xff, 0xce]);
        let rel = top as i64 - (v.len() as i64 + 2);
        v.extend([0x75, rel as i8 as u8]);
    }
    v.push(0xf4);
    v
}

#[test]
fn jit_matches_interpreter_on_syscall_path_memory_forms() {
    use cpu::state::Seg;
    use cpu::testutil::DATA;
    let cases: u64 = std::env::var("FERRITE_JIT_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let mut r = Rng(0x7075_7368_2026_1207);
    let mut interp = Interpreter::new();
    let mut jit = Interpreter::new();
    jit.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
    interp.trap_faults = true;
    jit.trap_faults = true;
    let mut exits = std::collections::BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for (mode, bits) in [(TestMode::Long64, 64), (TestMode::Prot32, 32)] {
        for case in 0..cases {
            let code = gen_mem_program(&mut r, bits);
            let mut gpr = [0u64; 16];
            for g in gpr.iter_mut() {
                *g = r.next();
            }
            gpr[3] = (DATA + r.below(0x1000)) & !7;
            gpr[5] = match r.below(8) {
                0 => r.next(),
                1 => DATA + 0x1ffc,
                _ => STACK - 0x100 + r.below(0x20) * 8,
            };
            let seed = r.next();
            let go = |it: &mut Interpreter| {
                let mut bus = TestBus { tsc: seed, ..TestBus::default() };
                let mut st = cpu_in(mode, &mut bus);
                bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
                // Stack and data words: pointers into the stack (for LEAVE's RBP), into the
                // data, and junk (non-canonical or unmapped: faults).
                let mut x = Rng(seed | 1);
                for a in (STACK - 0x800..STACK + 0x100).chain(DATA..DATA + 0x2000).step_by(8) {
                    let w = match x.below(4) {
                        0 | 1 => STACK - 0x180 + x.below(0x30) * 8,
                        2 => DATA + x.below(0x200) * 8,
                        _ => x.next(),
                    };
                    bus.ram[a as usize..a as usize + 8].copy_from_slice(&w.to_le_bytes());
                }
                st.gpr = gpr;
                st.gpr[4] = STACK - 8 * x.below(4);
                if mode == TestMode::Long64 {
                    st.seg[Seg::Fs as usize].base = DATA + 0x800;
                    st.seg[Seg::Gs as usize].base = DATA + 0x1ff0;
                }
                it.flush_all();
                let exit = it.run(&mut st, &mut bus, 2_000);
                (st, exit, bus)
            };
            let (a, ea, ma) = go(&mut interp);
            let (b, eb, mb) = go(&mut jit);
            assert_eq!(
                tlb_tags(&interp),
                tlb_tags(&jit),
                "{mode:?} case {case}: the TLB\n{}",
                disasm(&code, bits)
            );
            assert!(
                ma.ram == mb.ram
                    && a.gpr == b.gpr
                    && a.rflags == b.rflags
                    && a.rip == b.rip
                    && a.icount == b.icount
                    && ea == eb,
                "{mode:?} case {case}: memory {}\n{}\ninterp: {ea:?} rip {:#x} icount {} rflags {:#x}\n  gpr {:x?}\njit:    {eb:?} rip {:#x} icount {} rflags {:#x}\n  gpr {:x?}",
                if ma.ram == mb.ram { "same" } else { "DIFFERS" },
                disasm(&code, bits),
                a.rip,
                a.icount,
                a.rflags,
                a.gpr,
                b.rip,
                b.icount,
                b.rflags,
                b.gpr
            );
            *exits.entry(format!("{mode:?} {ea:?}").chars().take(40).collect::<String>()).or_insert(0u32) +=
                1;
            let mut d = Decoder::with_ip(bits, &code, 0, DecoderOptions::NONE);
            for i in d.iter() {
                seen.insert(format!("{:?}", i.code()));
            }
        }
    }
    println!("exits: {exits:?}");
    for c in ["Push_rm64", "Leaveq", "Xchg_rm8_r8", "Xchg_rm16_r16", "Xchg_rm32_r32", "Xchg_rm64_r64"] {
        assert!(seen.contains(c), "the generator never produced {c}");
    }
    assert!(exits.keys().any(|k| k.starts_with("Long64 Halted")), "no halted case: {exits:?}");
    assert!(exits.keys().any(|k| k.starts_with("Long64 Trapped")), "no fault case: {exits:?}");
}

/// PUSH m64, LEAVE and XCHG m, r run inline in a hot loop (not through their handlers).
#[test]
fn syscall_path_memory_forms_run_inline() {
    // top: push qword [rbx]; mov rbp, rsp; xchg [rbx+8], eax; leave; dec esi; jnz top; hlt
    let code = [0xff, 0x33, 0x48, 0x89, 0xe5, 0x87, 0x43, 0x08, 0xc9, 0xff, 0xce, 0x75, 0xf3, 0xf4];
    let run = |jit: bool| {
        let mut it = Interpreter::new();
        if jit {
            it.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
        }
        let mut bus = TestBus::default();
        let mut st = cpu_in(TestMode::Long64, &mut bus);
        bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
        let data = cpu::testutil::DATA;
        bus.ram[data as usize..data as usize + 8].copy_from_slice(&0x1234_5678_9abc_def0u64.to_le_bytes());
        st.gpr[3] = data;
        st.gpr[0] = 7;
        st.gpr[6] = 1001;
        let exit = it.run(&mut st, &mut bus, 100_000);
        assert_eq!(exit, Exit::Halted);
        (st, it.inline_retired(), bus)
    };
    let (a, _, ma) = run(false);
    let (b, inline, mb) = run(true);
    assert_eq!((a.gpr, a.rflags, a.rip, a.icount), (b.gpr, b.rflags, b.rip, b.icount));
    assert!(ma.ram == mb.ram, "memory differs");
    // LEAVE popped the pushed word into RBP; the odd count of exchanges left 7 in memory.
    assert_eq!(b.gpr[5], 0x1234_5678_9abc_def0);
    assert_eq!(b.gpr[4], STACK);
    assert!(inline * 10 >= b.icount * 9, "only {inline} of {} instructions ran inline", b.icount);
}

/// One random instruction around SWAPGS, CLI and STI (64-bit code): GS-relative loads that see
/// which base is live, PUSHFQ/POP (a handler reading IF), RDTSC, ALU.
fn gen_flag_insn(r: &mut Rng, v: &mut Vec<u8>) {
    match r.below(10) {
        0 | 1 => v.extend([0x0f, 0x01, 0xf8]),                        // SWAPGS
        2 => v.push(0xfa),                                            // CLI
        3 => v.push(0xfb),                                            // STI
        4 => v.extend([0x65, 0x48, 0x8b, 0x04, 0x25, 0x08, 0, 0, 0]), // mov rax, gs:[8]
        5 => v.extend([0x9c, 0x5b]),                                  // pushfq; pop rbx
        6 => v.extend(RDTSC),
        7 => v.extend([0x48, 0x01, 0xc1]),            // add rcx, rax
        8 => v.extend([0x70 + r.below(16) as u8, 0]), // jcc +0 (a block end that chains)
        _ => v.push(0x90),
    }
}

#[test]
fn jit_matches_interpreter_on_swapgs_cli_sti() {
    use cpu::state::{Seg, flags};
    use cpu::testutil::DATA;
    let cases: u64 = std::env::var("FERRITE_JIT_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let mut r = Rng(0x7377_6170_2026_1207);
    let mut interp = Interpreter::new();
    let mut jit = Interpreter::new();
    jit.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
    interp.trap_faults = true;
    jit.trap_faults = true;
    let mut exits = std::collections::BTreeMap::new();
    for case in 0..cases {
        // A loop, so that blocks run translated and linked: mov r14d, n; top: body; dec r14d; jnz top.
        let mut code = vec![0x41, 0xbe];
        code.extend((1 + r.below(3) as u32).to_le_bytes());
        let top = code.len();
        for _ in 0..3 + r.below(14) {
            gen_flag_insn(&mut r, &mut code);
        }
        code.extend([0x41, 0xff, 0xce]);
        let rel = top as i64 - (code.len() as i64 + 2);
        code.extend([0x75, rel as i8 as u8]);
        code.push(0xf4);
        let cpl3 = r.below(3) == 0;
        let iopl = r.below(4);
        let if_ = r.below(2) == 0;
        let gs = [DATA, DATA + 0x800, r.next()][r.below(3) as usize];
        let kgs = [DATA + 0x800, DATA, r.next()][r.below(3) as usize];
        let seed = r.next();
        let go = |it: &mut Interpreter| {
            let mut bus = TestBus { tsc: seed, ..TestBus::default() };
            let mut st = cpu_in(TestMode::Long64, &mut bus);
            bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
            let mut x = Rng(seed | 1);
            for a in (DATA..DATA + 0x1000).step_by(8) {
                bus.ram[a as usize..a as usize + 8].copy_from_slice(&x.next().to_le_bytes());
            }
            if cpl3 {
                // A user page for the first 2 MiB (code, stack, data: all of the test's RAM), so
                // that CPL 3 runs; the PML4 and PDPT entries above it (just below the PD) too.
                let pd = cpu::testutil::PD as usize;
                bus.ram[pd..pd + 8].copy_from_slice(&0x87u64.to_le_bytes());
                for a in [pd - 0x2000, pd - 0x1000] {
                    bus.ram[a] |= 4;
                }
                st.cpl = 3;
            }
            st.rflags =
                (st.rflags & !(flags::IOPL | flags::IF)) | (iopl << 12) | if if_ { flags::IF } else { 0 };
            st.seg[Seg::Gs as usize].base = gs;
            st.msr.kernel_gs_base = kgs;
            it.flush_all();
            let exit = it.run(&mut st, &mut bus, 2_000);
            (st, exit)
        };
        let (a, ea) = go(&mut interp);
        let (b, eb) = go(&mut jit);
        assert_eq!(tlb_tags(&interp), tlb_tags(&jit), "case {case}: the TLB\n{}", disasm(&code, 64));
        let key = |s: &cpu::CpuState| {
            (
                s.gpr,
                s.rflags,
                s.rip,
                s.icount,
                s.irq_shadow_icount,
                s.seg[Seg::Gs as usize].base,
                s.msr.kernel_gs_base,
            )
        };
        assert!(
            key(&a) == key(&b) && ea == eb,
            "case {case} (cpl3 {cpl3} iopl {iopl} if {if_}):\n{}\ninterp: {ea:?} {:x?}\njit:    {eb:?} {:x?}",
            disasm(&code, 64),
            key(&a),
            key(&b)
        );
        *exits.entry(format!("{ea:?}").chars().take(30).collect::<String>()).or_insert(0u32) += 1;
    }
    println!("exits: {exits:?}");
    assert!(exits.keys().any(|k| k.starts_with("Halted")), "no halted case: {exits:?}");
    assert!(exits.keys().any(|k| k.starts_with("Trapped(Exc { vector: 13")), "no #GP case: {exits:?}");
}
