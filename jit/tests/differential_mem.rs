//! The JIT against the interpreter on the forms of `jit/src/lower_mem.rs` (and the 32-bit memory
//! forms it opens to `lower.rs`'s ALU/MOV forms): DIV/IDIV r/m (with #DE from zero divisors and
//! quotients that do not fit, and 64-bit dividends whose high half is not an extension), CMPXCHG
//! and XADD r/m, r, the LOCK forms, memory-indirect JMP/CALL through a table of code addresses,
//! shifts and rotates by CL, BT* m, imm, CMOVcc r, m, SETcc m, CBW/CWD and their wider forms; in 32-bit protected mode also the memory forms, PUSH/POP r32,
//! CALL/JMP r32, CALL rel32 and RET, under segments that are flat, flat with a base, limited, or
//! a 16-bit stack (the segment check must send the last three kinds to the handler). Random
//! programs run from random registers under both vendors' quirks, with every block translated on
//! its first entry; registers, RFLAGS, RIP, the retired count, the exit (faults included) and all
//! of RAM must equal the interpreter's.
//!
//! `FERRITE_JIT_DIFF_CASES=N` runs N programs per mode (default 300: each program translates
//! several blocks, through its jumps and calls).

use cpu::Interpreter;
use cpu::interp::Exit;
use cpu::state::{Quirks, Seg, attr};
use cpu::testutil::{CODE, DATA, STACK, TestBus, TestMode, cpu_in};
use iced_x86::{Decoder, DecoderOptions, Mnemonic};

mod common;
use common::{Rng, tlb_tags};

/// Where the table of code addresses that JMP/CALL m read lives (absolute disp32 addressing).
const TABLE: u64 = DATA + 0x2800;
/// Entries in the table.
const ENTRIES: u64 = 16;

/// A memory operand (ModRM with `reg`, and what follows) through EBX/RBX, ESI, EDI or EBP (pointing
/// into the data pages; EBP addresses the stack segment), [base], [base + disp8], or an absolute
/// disp32 into the data.
fn mem_operand(v: &mut Vec<u8>, reg: u8, r: &mut Rng) {
    match r.below(6) {
        0 => {
            v.extend([0x04 | (reg << 3), 0x25]);
            v.extend(((DATA + r.below(0x1000)) as u32).to_le_bytes());
        }
        1 | 2 => {
            let base = [3u8, 6, 7][r.below(3) as usize];
            v.push((reg << 3) | base);
        }
        _ => {
            let base = [3u8, 5, 6, 7][r.below(4) as usize];
            v.extend([0x40 | (reg << 3) | base, r.byte()]);
        }
    }
}

/// One random instruction of the forms under test.
fn gen_insn(r: &mut Rng, bits: u32) -> Vec<u8> {
    let mut v = Vec::new();
    if r.below(5) == 0 {
        v.push(0x66);
    }
    if r.below(10) == 0 {
        v.push([0x26, 0x64, 0x65, 0x36, 0x3e][r.below(5) as usize]);
    }
    let rex = |r: &mut Rng, v: &mut Vec<u8>, w: bool| {
        if bits == 64 && r.below(2) == 0 {
            // W and R at random (B and X stay 0 so that a base stays one of ours).
            v.push(0x40 | (r.byte() & 0x04) | if w && r.below(2) == 0 { 0x08 } else { 0 });
        }
    };
    match r.below(15) {
        // DIV/IDIV r (F6/F7 /6 /7).
        0 => {
            rex(r, &mut v, true);
            v.extend([0xf6 + r.below(2) as u8, 0xf0 | ((r.below(2) as u8) << 3) | (r.byte() & 7)]);
        }
        // DIV/IDIV m.
        1 => {
            rex(r, &mut v, true);
            v.push(0xf6 + r.below(2) as u8);
            mem_operand(&mut v, 6 + r.below(2) as u8, r);
        }
        // CMPXCHG/XADD r, r (0F B0/B1, 0F C0/C1).
        2 => {
            rex(r, &mut v, true);
            v.extend([0x0f, [0xb0u8, 0xb1, 0xc0, 0xc1][r.below(4) as usize], 0xc0 | (r.byte() & 0x3f)]);
        }
        // (LOCK) CMPXCHG/XADD m, r.
        3 => {
            if r.below(2) == 0 {
                v.insert(0, 0xf0);
            }
            rex(r, &mut v, true);
            v.extend([0x0f, [0xb0u8, 0xb1, 0xc0, 0xc1][r.below(4) as usize]]);
            mem_operand(&mut v, r.byte() & 7, r);
        }
        // LOCK ALU m, r / INC, DEC m / ALU m, imm8.
        4 => {
            v.insert(0, 0xf0);
            rex(r, &mut v, true);
            match r.below(3) {
                0 => {
                    v.push(
                        [0x00u8, 0x08, 0x10, 0x18, 0x20, 0x28, 0x30][r.below(7) as usize] + r.below(2) as u8,
                    );
                    mem_operand(&mut v, r.byte() & 7, r);
                }
                1 => {
                    v.push(0xfe + r.below(2) as u8);
                    mem_operand(&mut v, r.below(2) as u8, r);
                }
                _ => {
                    v.push(0x83);
                    mem_operand(&mut v, r.below(7) as u8, r);
                    v.push(r.byte());
                }
            }
        }
        // JMP/CALL m through the table (FF /4, FF /2, absolute disp32).
        5 => {
            v.clear();
            let slot = if bits == 64 { 8 } else { 4 };
            v.extend([0xff, 0x04 | ([2u8, 4][r.below(2) as usize] << 3), 0x25]);
            v.extend(((TABLE + slot * r.below(ENTRIES)) as u32).to_le_bytes());
        }
        // Shifts and rotates by CL (D2/D3 /0 /1 /4 /5 /7) of a register.
        6 => {
            rex(r, &mut v, true);
            let sub = [0u8, 1, 4, 5, 7][r.below(5) as usize];
            v.extend([0xd2 + r.below(2) as u8, 0xc0 | (sub << 3) | (r.byte() & 7)]);
        }
        // PUSH/POP r, PUSH imm, CALL rel32 (to the next instruction), RET, CALL/JMP r (32-bit: r32 targets).
        7 => {
            v.clear();
            match r.below(7) {
                0 | 1 => v.push(0x50 + r.below(16) as u8),
                // PUSH imm8 / PUSH imm32 (sign-extended).
                6 if r.below(2) == 0 => v.extend([0x6a, r.byte()]),
                6 => {
                    v.push(0x68);
                    v.extend((r.next() as u32).to_le_bytes());
                }
                2 => v.extend([0xe8, 0, 0, 0, 0]),
                3 => v.push(0xc3),
                _ => v.extend([0xff, [0xd0u8, 0xe0][r.below(2) as usize] | (r.byte() & 7)]),
            }
        }
        // ALU/MOV/TEST/MOVZX/MOVSX memory forms (lower.rs's, now also in 32-bit code).
        8 | 9 => {
            rex(r, &mut v, true);
            match r.below(5) {
                0 => v.push(
                    [0x00u8, 0x08, 0x10, 0x18, 0x20, 0x28, 0x30, 0x38][r.below(8) as usize]
                        + r.below(4) as u8,
                ),
                1 => v.push(0x84 + r.below(2) as u8),
                2 => v.push(0x88 + r.below(4) as u8),
                3 => v.extend([0x0f, [0xb6u8, 0xb7, 0xbe, 0xbf][r.below(4) as usize]]),
                _ => {
                    v.push(0xfe + r.below(2) as u8);
                    mem_operand(&mut v, r.below(2) as u8, r);
                    return v;
                }
            }
            mem_operand(&mut v, r.byte() & 7, r);
        }
        // (LOCK) BT/BTS/BTR/BTC m, imm8 (0F BA /4-/7), CMOVcc r, m and SETcc m8.
        14 => {
            rex(r, &mut v, true);
            match r.below(3) {
                0 => {
                    let sub = 4 + r.below(4) as u8;
                    if sub != 4 && r.below(2) == 0 {
                        v.insert(0, 0xf0);
                    }
                    v.extend([0x0f, 0xba]);
                    mem_operand(&mut v, sub, r);
                    v.push(r.byte());
                }
                1 => {
                    v.extend([0x0f, 0x40 + r.below(16) as u8]);
                    mem_operand(&mut v, r.byte() & 7, r);
                }
                _ => {
                    v.extend([0x0f, 0x90 + r.below(16) as u8]);
                    mem_operand(&mut v, 0, r);
                }
            }
        }
        // Register filler that keeps values moving: ADD/SUB/XOR r, r; MOV r, imm32.
        10 => v.extend([[0x01u8, 0x29, 0x31][r.below(3) as usize], 0xc0 | (r.byte() & 0x3f)]),
        11 => {
            v.clear();
            v.push(0xb8 + r.below(8) as u8);
            v.extend((r.next() as u32).to_le_bytes());
        }
        // CBW/CWDE/CDQE, CWD/CDQ/CQO.
        12 => {
            rex(r, &mut v, true);
            v.push(0x98 + r.below(2) as u8);
        }
        _ => {
            v.clear();
            v.push(0x90);
        }
    }
    v
}

/// A random program, its instruction offsets (for the table) and a HLT at the end.
fn gen_program(r: &mut Rng, bits: u32) -> (Vec<u8>, Vec<u64>) {
    let n = 1 + r.below(30) as usize;
    let mut out = Vec::new();
    let mut starts = Vec::new();
    let mut k = 0;
    while k < n {
        let v = gen_insn(r, bits);
        let mut d = Decoder::with_ip(bits, &v, 0, DecoderOptions::NONE);
        let i = d.decode();
        if i.is_invalid()
            || i.len() != v.len()
            || matches!(i.mnemonic(), Mnemonic::Hlt | Mnemonic::In | Mnemonic::Out)
        {
            continue;
        }
        starts.push(out.len() as u64);
        out.extend(v);
        k += 1;
    }
    starts.push(out.len() as u64);
    out.push(0xf4);
    (out, starts)
}

/// A data segment (of the 32-bit test) of one of the kinds the segment check tells apart.
fn segment_kind(r: &mut Rng, seg: Seg, st: &mut cpu::CpuState) {
    let s = st.sreg_mut(seg);
    match r.below(8) {
        // Flat with a base: inline, base added.
        0 => s.base = 0x40 * r.below(4),
        // A limit below 4 GiB, inside or below the data and stack: the handler (a #GP/#SS past it).
        1 => s.limit = [0x7fff, 0xffff, 0x10800, 0x1_1fff][r.below(4) as usize],
        // Expand-down: the handler.
        2 if seg != Seg::Ss => {
            s.attr |= attr::DC;
            s.limit = 0xfff;
        }
        // A 16-bit stack: the handler for stack forms.
        3 if seg == Seg::Ss => s.attr &= !attr::DB,
        // Read-only data: the handler (a #GP on writes).
        4 if seg != Seg::Ss => s.attr &= !attr::RW,
        _ => {}
    }
}

/// Runs `code` on `it` (caches flushed first) and returns the state, exit and bus.
fn run(
    it: &mut Interpreter,
    mode: TestMode,
    code: &[u8],
    starts: &[u64],
    gpr: &[u64; 16],
    seed: u64,
) -> (cpu::CpuState, Exit, TestBus) {
    let mut bus = TestBus::default();
    let mut st = cpu_in(mode, &mut bus);
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    st.gpr = *gpr;
    st.rflags = 0x2 | (seed & cpu::state::flags::ARITH);
    st.quirks = if seed & 1 == 0 { Quirks::Intel } else { Quirks::Amd };
    let mut x = Rng(seed | 1);
    for a in DATA - 0x1000..DATA + 0x3000 {
        bus.ram[a as usize] = x.byte();
    }
    // The table: code addresses (instruction starts, mostly), read by JMP/CALL m.
    let slot = if mode == TestMode::Long64 { 8 } else { 4 };
    for k in 0..ENTRIES {
        let t = match x.below(8) {
            0 => x.next(),
            _ => CODE + starts[x.below(starts.len() as u64) as usize],
        };
        let at = (TABLE + k * slot) as usize;
        bus.ram[at..at + slot as usize].copy_from_slice(&t.to_le_bytes()[..slot as usize]);
    }
    if mode == TestMode::Prot32 {
        let mut r = Rng(seed.rotate_left(17) | 1);
        for s in [Seg::Ds, Seg::Ss, Seg::Es, Seg::Fs, Seg::Gs] {
            if r.below(3) == 0 {
                segment_kind(&mut r, s, &mut st);
            }
        }
    } else {
        st.seg[Seg::Fs as usize].base = DATA + 0x800;
        st.seg[Seg::Gs as usize].base = DATA + 0x1ff0;
    }
    it.flush_all();
    let exit = it.run(&mut st, &mut bus, 1_000);
    (st, exit, bus)
}

#[test]
fn jit_matches_interpreter_on_memory_forms() {
    let cases: u64 = std::env::var("FERRITE_JIT_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let mut r = Rng(0x6d65_6d5f_2026_1207);
    let mut interp = Interpreter::new();
    let mut jit = Interpreter::new();
    jit.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
    interp.trap_faults = true;
    jit.trap_faults = true;
    let mut seen = std::collections::BTreeSet::new();
    let mut faults = std::collections::BTreeMap::new();
    for (mode, bits) in [(TestMode::Long64, 64), (TestMode::Prot32, 32)] {
        for case in 0..cases {
            let (code, starts) = gen_program(&mut r, bits);
            let mut gpr = [0u64; 16];
            for g in gpr.iter_mut() {
                *g = match r.below(4) {
                    0 => r.below(4),
                    1 => [
                        0x7f,
                        0x80,
                        0xff,
                        0x7fff,
                        0x8000,
                        0xffff,
                        0x7fff_ffff,
                        0x8000_0000,
                        0xffff_ffff,
                        u64::MAX,
                    ][r.below(10) as usize],
                    _ => r.next(),
                };
            }
            // A small RDX/EDX often, so that divides complete.
            if r.below(2) == 0 {
                gpr[2] = r.below(3);
            }
            for g in [3, 5, 6, 7] {
                if r.below(5) != 0 {
                    gpr[g] = DATA + [0x10, 0x800, 0xffa, 0x1ffc, 0x2000][r.below(5) as usize] + r.below(8);
                }
            }
            gpr[4] = STACK - 8 * r.below(4);
            let seed = r.next();
            let (a, ea, ma) = run(&mut interp, mode, &code, &starts, &gpr, seed);
            let (b, eb, mb) = run(&mut jit, mode, &code, &starts, &gpr, seed);
            let same_mem = ma.ram == mb.ram;
            assert_eq!(
                tlb_tags(&interp),
                tlb_tags(&jit),
                "{mode:?} case {case}: the TLB\n{}",
                disasm(&code, bits)
            );
            assert!(
                same_mem
                    && a.gpr == b.gpr
                    && a.rflags == b.rflags
                    && a.rip == b.rip
                    && a.icount == b.icount
                    && ea == eb,
                "{mode:?} case {case} seed {seed:#x}: memory {}\n{}\ninterp: {ea:?} rip {:#x} icount {} rflags {:#x}\n  gpr {:x?}\njit:    {eb:?} rip {:#x} icount {} rflags {:#x}\n  gpr {:x?}",
                if same_mem { "same" } else { "DIFFERS" },
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
            *faults
                .entry(format!("{:?}", ea).split(['(', ' ', '{']).next().unwrap_or("").to_string())
                .or_insert(0u32) += 1;
            let mut d = Decoder::with_ip(bits, &code, 0, DecoderOptions::NONE);
            for i in d.iter() {
                seen.insert(format!("{:?}", i.mnemonic()));
            }
        }
    }
    println!("exits: {faults:?}; mnemonics: {seen:?}");
    assert!(jit.compiled_blocks() >= cases, "only {} blocks translated", jit.compiled_blocks());
    for m in [
        "Div", "Idiv", "Cmpxchg", "Xadd", "Jmp", "Call", "Ret", "Push", "Pop", "Shl", "Sar", "Rol", "Bt",
        "Bts", "Cmove", "Sete", "Cdq", "Cwde",
    ] {
        assert!(seen.contains(m), "the generator never produced {m}");
    }
}

/// The forms of `lower_mem.rs` run inline (not only through their handlers): a hot loop of them
/// retires almost everything in generated code.
#[test]
fn memory_forms_run_inline() {
    // 64-bit: div rcx; xadd [rbx], eax; lock cmpxchg [rbx+8], edx; call [abs TABLE] (a RET
    // there); shl rax, cl; dec esi; jnz top.
    let mut code = vec![
        0x48, 0x31, 0xd2, // xor rdx, rdx
        0x48, 0xf7, 0xf1, // div rcx
        0x0f, 0xc1, 0x03, // xadd [rbx], eax
        0xf0, 0x0f, 0xb1, 0x53, 0x08, // lock cmpxchg [rbx+8], edx
        0xff, 0x14, 0x25, // call [TABLE]
    ];
    code.extend((TABLE as u32).to_le_bytes());
    code.extend([
        0x48, 0xd3, 0xe0, // shl rax, cl
        0xff, 0xce, // dec esi
        0x75, 0x00, // jnz top (patched below)
        0xf4, // hlt
        0xc3, // the callee: ret
    ]);
    let jnz = code.len() - 3;
    code[jnz] = (-(jnz as i64 + 1) as i8) as u8;
    let callee = CODE + code.len() as u64 - 1;
    let mut it = Interpreter::new();
    it.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
    let mut bus = TestBus::default();
    let mut st = cpu_in(TestMode::Long64, &mut bus);
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
    bus.ram[TABLE as usize..TABLE as usize + 8].copy_from_slice(&callee.to_le_bytes());
    st.gpr[0] = 12345;
    st.gpr[1] = 3;
    st.gpr[3] = DATA;
    st.gpr[6] = 1000;
    let exit = it.run(&mut st, &mut bus, 100_000);
    assert_eq!(exit, Exit::Halted);
    let inline = it.inline_retired();
    assert!(inline * 10 >= st.icount * 9, "only {inline} of {} instructions ran inline", st.icount);
}

fn disasm(code: &[u8], bits: u32) -> String {
    let mut d = Decoder::with_ip(bits, code, CODE, DecoderOptions::NONE);
    d.iter().map(|i| format!("  {:#x}: {i}", i.ip())).collect::<Vec<_>>().join("\n")
}

/// An inline access finds its page in either TLB way. Two pages that share a slot (linear 0x210000
/// and 0x60f000: `tlb_index` folds page 0x60f to 0x210) are read in turn in a loop: the second fill
/// moves the first page to way 1, and there it stays (entries move only on fills). When the probe
/// read way 0 only, every access to it ran the handler; both engines must still end alike, TLB
/// included.
#[test]
fn an_inline_access_hits_either_tlb_way() {
    const A: u64 = 0x21_0000;
    const B: u64 = 0x60_f000;
    assert_eq!(cpu::mem::tlb_index(A), cpu::mem::tlb_index(B));
    // top: mov rax, [rbx]; mov rcx, [rdx]; add rax, rcx; dec esi; jnz top; hlt
    let code = [0x48, 0x8b, 0x03, 0x48, 0x8b, 0x0a, 0x48, 0x01, 0xc8, 0xff, 0xce, 0x75, 0xf3, 0xf4];
    let run = |jit: bool| {
        let mut it = Interpreter::new();
        if jit {
            it.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
        }
        let mut bus = TestBus::default();
        let mut st = cpu_in(TestMode::Long64, &mut bus);
        // Linear 2-4 MiB and 6-8 MiB: 2 MiB pages onto physical 0 (the test bus has 2 MiB of RAM).
        for e in [1u64, 3] {
            let at = (cpu::testutil::PD + e * 8) as usize;
            bus.ram[at..at + 8].copy_from_slice(&0x83u64.to_le_bytes());
        }
        bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
        bus.ram[0x10000..0x10008].copy_from_slice(&5u64.to_le_bytes());
        bus.ram[0xf000..0xf008].copy_from_slice(&7u64.to_le_bytes());
        st.gpr[3] = A;
        st.gpr[2] = B;
        st.gpr[6] = 1000;
        let exit = it.run(&mut st, &mut bus, 100_000);
        assert_eq!(exit, Exit::Halted);
        let inline = it.inline_retired();
        (st, tlb_tags(&it), inline)
    };
    let (a, ta, _) = run(false);
    let (b, tb, inline) = run(true);
    assert_eq!((a.gpr, a.rflags, a.rip, a.icount), (b.gpr, b.rflags, b.rip, b.icount));
    assert_eq!(ta, tb, "the TLB");
    assert_eq!(a.gpr[1], 7);
    let idx = cpu::mem::tlb_index(A);
    assert!(ta.contains(&(0, idx + cpu::mem::TLB_SIZE, A | 2, true)), "A sits in way 1: {ta:x?}");
    assert!(inline * 10 >= b.icount * 9, "only {inline} of {} instructions ran inline", b.icount);
}

/// Where the privilege tests put things (all in the first 2 MiB, mapped by 4 KiB pages).
mod privilege {
    use super::*;
    use cpu::state::{cr0, cr4, efer, flags};
    use iced_x86::code_asm::*;

    /// Code run at CPL 3 (after SYSRET, IRETQ or a far RET), user pages like everything here but
    /// the supervisor data page.
    pub const UCODE: u64 = 0x2000;
    /// SYSCALL's target (LSTAR).
    pub const LSTAR: u64 = 0x2800;
    /// The handler of every exception vector and of INT 0x80.
    pub const HANDLER: u64 = 0x2c00;
    /// A user data page.
    pub const U: u64 = DATA;
    /// A supervisor data page.
    pub const SUP: u64 = DATA + 0x10000;
    /// The user stack top; the kernel stack top (TSS.RSP0) is [`STACK`].
    pub const USTACK: u64 = 0x5000;
    const PT: u64 = 0x104000;
    const IDT: u64 = 0x3000;
    const TSS: u64 = 0x700;

    fn asm_at(at: u64, f: impl FnOnce(&mut CodeAssembler)) -> Vec<u8> {
        let mut a = CodeAssembler::new(64).expect("bitness");
        f(&mut a);
        a.assemble(at).expect("assemble")
    }

    /// CPL 0 code that loads TR, reads and writes the supervisor page and the user page (so that
    /// the TLB holds supervisor entries of both), then runs `then`.
    pub fn kernel(then: impl FnOnce(&mut CodeAssembler)) -> Vec<u8> {
        asm_at(CODE, |a| {
            a.mov(ax, 0x30).unwrap();
            a.ltr(ax).unwrap();
            a.mov(rax, qword_ptr(SUP)).unwrap();
            a.mov(qword_ptr(SUP), rax).unwrap();
            // STAC/CLAC around the user page, for the machine with SMAP.
            a.stac().unwrap();
            a.mov(rax, qword_ptr(U)).unwrap();
            a.mov(qword_ptr(U), rax).unwrap();
            a.clac().unwrap();
            then(a);
            a.hlt().unwrap();
        })
    }

    /// SYSRET to [`UCODE`] with RFLAGS = `fl`.
    pub fn sysret(fl: u64) -> impl FnOnce(&mut CodeAssembler) {
        move |a| {
            a.mov(rcx, UCODE).unwrap();
            a.mov(r11, fl).unwrap();
            a.mov(rsp, USTACK).unwrap();
            a.sysretq().unwrap();
        }
    }

    /// One machine: long mode, 4 KiB user pages but [`SUP`] and the system tables, a GDT with user segments and a TSS,
    /// an IDT whose gates (INT 0x80's of DPL 3) all lead to [`HANDLER`], SYSCALL enabled (SFMASK
    /// clears IF, TF and AC), CR0.AM and (with `smap`) CR4.SMAP set. `pieces` are (address, code).
    pub fn run(
        it: &mut Interpreter,
        pieces: &[(u64, Vec<u8>)],
        smap: bool,
    ) -> (cpu::CpuState, Exit, TestBus) {
        let mut bus = TestBus::default();
        let mut st = cpu_in(TestMode::Long64, &mut bus);
        let w = |bus: &mut TestBus, a: u64, v: u64| {
            bus.ram[a as usize..a as usize + 8].copy_from_slice(&v.to_le_bytes())
        };
        // The PML4 and PDPT entries of `cpu_in`, made user; PD[0] points at a 4 KiB table.
        for a in [0x100000u64, 0x101000] {
            let e = u64::from_le_bytes(bus.ram[a as usize..a as usize + 8].try_into().unwrap());
            w(&mut bus, a, e | 4);
        }
        w(&mut bus, cpu::testutil::PD, PT | 7);
        for k in 0..512u64 {
            // Supervisor pages: SUP, and (for SMAP, which refuses implicit accesses to user
            // pages) the GDT and TSS, the IDT and the kernel stack.
            let sup = [SUP, 0, IDT, STACK - 0x1000].contains(&(k << 12));
            w(&mut bus, PT + 8 * k, (k << 12) | if sup { 3 } else { 7 });
        }
        // GDT: 0x08 kernel code, 0x10 kernel data (from `cpu_in`), 0x20 user data, 0x28 user
        // code (SYSRET's selectors for STAR[63:48] = 0x18), 0x30 a 64-bit TSS.
        let gdt = st.gdtr.base;
        w(&mut bus, gdt + 0x20, 0x00cf_f300_0000_ffff);
        w(&mut bus, gdt + 0x28, 0x00af_fb00_0000_ffff);
        w(&mut bus, gdt + 0x30, 0x0000_8900_0000_0067 | (TSS & 0xff_ffff) << 16);
        w(&mut bus, gdt + 0x38, 0);
        st.gdtr.limit = 0x3f;
        w(&mut bus, TSS + 4, STACK);
        for v in 0..=0x80u64 {
            let dpl = if v == 0x80 { 3 } else { 0 };
            let lo =
                (HANDLER & 0xffff) | 0x08 << 16 | (0x8e | dpl << 5) << 40 | (HANDLER >> 16 & 0xffff) << 48;
            w(&mut bus, IDT + 16 * v, lo);
            w(&mut bus, IDT + 16 * v + 8, HANDLER >> 32);
        }
        st.idtr.base = IDT;
        st.idtr.limit = 0x80 * 16 + 15;
        for (at, code) in pieces {
            bus.ram[*at as usize..*at as usize + code.len()].copy_from_slice(code);
        }
        st.efer |= efer::SCE;
        st.msr.star = 0x18 << 48 | 0x08 << 32;
        st.msr.lstar = LSTAR;
        st.msr.sfmask = flags::IF | flags::TF | flags::AC;
        st.cr0 |= cr0::AM;
        if smap {
            st.cr4 |= cr4::SMAP;
        }
        it.flush_all();
        let exit = it.run(&mut st, &mut bus, 500);
        (st, exit, bus)
    }
}

/// Privilege changes between translated blocks: after each way CPL or RFLAGS.AC changes (SYSRET,
/// IRETQ, far RET, SYSCALL, INT n, an exception from CPL 3, POPF), a load or store that must
/// fault (a user access to a supervisor page; SMAP; #AC) or must fill the TLB (a supervisor access
/// to a user page the TLB holds only as a user entry) runs in generated code. The JIT's probes
/// take the tag bits from `Mmu::access_tag`, the interpreter from `cpu::mem::access_tag`: an update
/// site that forgot the copy shows as a different fault, state or TLB.
#[test]
fn privilege_changes_reach_inline_accesses() {
    use cpu::state::flags;
    use iced_x86::code_asm::*;
    use privilege::*;
    type Piece = (u64, Vec<u8>);
    let user = |f: fn(&mut CodeAssembler)| -> Piece {
        let mut a = CodeAssembler::new(64).unwrap();
        f(&mut a);
        a.hlt().unwrap();
        (UCODE, a.assemble(UCODE).unwrap())
    };
    let at = |addr: u64, f: fn(&mut CodeAssembler)| -> Piece {
        let mut a = CodeAssembler::new(64).unwrap();
        f(&mut a);
        a.hlt().unwrap();
        (addr, a.assemble(addr).unwrap())
    };
    // Reads the supervisor page: #PF at CPL 3.
    let read_sup: fn(&mut CodeAssembler) = |a| a.mov(rax, qword_ptr(SUP)).unwrap();
    // Touches a user page, then enters the kernel with `syscall` or `int 0x80` or a #PF
    // (The next user page, which the kernel's start did not touch: the TLB holds it only as a
    // user entry when the kernel is entered.)
    fn touch_user(a: &mut CodeAssembler) {
        a.mov(rax, qword_ptr(U + 0x1000)).unwrap();
        a.mov(qword_ptr(U + 0x1008), rax).unwrap();
    }
    // In the kernel: that page again (a supervisor entry must be filled, or SMAP faults).
    let kernel_touch: fn(&mut CodeAssembler) = |a| {
        a.mov(rbx, qword_ptr(U + 0x1010)).unwrap();
        a.mov(qword_ptr(U + 0x1018), rbx).unwrap();
    };
    let iret_frame = |a: &mut CodeAssembler, fl: u64| {
        a.push(0x23).unwrap();
        a.mov(rax, USTACK).unwrap();
        a.push(rax).unwrap();
        a.mov(rax, fl).unwrap();
        a.push(rax).unwrap();
        a.push(0x2b).unwrap();
        a.mov(rax, UCODE).unwrap();
        a.push(rax).unwrap();
    };
    let cases: Vec<(&str, Vec<Piece>, bool, bool)> = vec![
        (
            "SYSRET to CPL 3, then a supervisor page",
            vec![(CODE, kernel(sysret(0x202))), user(read_sup)],
            false,
            true,
        ),
        (
            "IRETQ to CPL 3, then a supervisor page",
            vec![
                (
                    CODE,
                    kernel(|a| {
                        iret_frame(a, 0x202);
                        a.iretq().unwrap();
                    }),
                ),
                user(read_sup),
            ],
            false,
            true,
        ),
        (
            "far RET to CPL 3, then a supervisor page",
            vec![
                (
                    CODE,
                    kernel(|a| {
                        a.push(0x23).unwrap();
                        a.mov(rax, USTACK).unwrap();
                        a.push(rax).unwrap();
                        a.push(0x2b).unwrap();
                        a.mov(rax, UCODE).unwrap();
                        a.push(rax).unwrap();
                        a.db(&[0x48, 0xcb]).unwrap(); // retfq
                    }),
                ),
                user(read_sup),
            ],
            false,
            true,
        ),
        (
            "SYSCALL to CPL 0, then the user page",
            vec![
                (CODE, kernel(sysret(0x202))),
                user(|a| {
                    touch_user(a);
                    a.syscall().unwrap();
                }),
                at(LSTAR, kernel_touch),
            ],
            false,
            true,
        ),
        (
            "SYSCALL to CPL 0 with SMAP (SFMASK clears AC), then the user page",
            vec![
                (CODE, kernel(sysret(0x4_0202))),
                user(|a| {
                    touch_user(a);
                    a.syscall().unwrap();
                }),
                at(LSTAR, kernel_touch),
            ],
            true,
            true,
        ),
        (
            "INT 0x80 to CPL 0, then the user page",
            vec![
                (CODE, kernel(sysret(0x202))),
                user(|a| {
                    touch_user(a);
                    a.int(0x80).unwrap();
                }),
                at(HANDLER, kernel_touch),
            ],
            false,
            false,
        ),
        (
            "a #PF from CPL 3 to CPL 0, then the user page",
            vec![
                (CODE, kernel(sysret(0x202))),
                user(|a| {
                    touch_user(a);
                    a.mov(rax, qword_ptr(SUP)).unwrap();
                }),
                at(HANDLER, kernel_touch),
            ],
            false,
            false,
        ),
        (
            "POPF sets AC at CPL 3 (CR0.AM): a misaligned load",
            vec![
                (CODE, kernel(sysret(0x202))),
                user(|a| {
                    a.mov(rax, qword_ptr(U)).unwrap();
                    a.pushfq().unwrap();
                    a.or(qword_ptr(rsp), flags::AC as i32).unwrap();
                    a.popfq().unwrap();
                    a.mov(rax, qword_ptr(U + 1)).unwrap();
                }),
            ],
            false,
            true,
        ),
        (
            "SYSRET sets AC (CR0.AM): a misaligned load of a page the kernel read",
            vec![
                (CODE, kernel(sysret(0x4_0202))),
                user(|a| {
                    a.mov(rax, qword_ptr(U + 1)).unwrap();
                }),
            ],
            false,
            true,
        ),
        (
            "IRETQ sets AC (CR0.AM): a misaligned load of a page the kernel read",
            vec![
                (
                    CODE,
                    kernel(|a| {
                        iret_frame(a, 0x4_0202);
                        a.iretq().unwrap();
                    }),
                ),
                user(|a| {
                    a.mov(rax, qword_ptr(U + 1)).unwrap();
                }),
            ],
            false,
            true,
        ),
    ];
    for (name, pieces, smap, trap) in cases {
        let mut interp = Interpreter::new();
        let mut jit = Interpreter::new();
        jit.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
        interp.trap_faults = trap;
        jit.trap_faults = trap;
        let (a, ea, ma) = privilege::run(&mut interp, &pieces, smap);
        let (b, eb, mb) = privilege::run(&mut jit, &pieces, smap);
        println!("{name}: {ea:?} at {:#x}, CPL {}", a.rip, a.cpl);
        assert_eq!(tlb_tags(&interp), tlb_tags(&jit), "{name}: the TLB");
        assert_eq!(format!("{ea:?}"), format!("{eb:?}"), "{name}: the exit");
        assert_eq!(
            (a.rip, a.cpl, a.icount, a.rflags, a.cr2, a.gpr),
            (b.rip, b.cpl, b.icount, b.rflags, b.cr2, b.gpr),
            "{name}: the state"
        );
        assert!(ma.ram == mb.ram, "{name}: RAM");
        assert!(jit.inline_retired() > 0, "{name}: nothing ran inline");
    }
}

/// CPL written from outside between two runs (as a debugger, a snapshot restore or another engine
/// does): `Interpreter::run` brings `Mmu::access_tag` up to date on entry, so the second run's user
/// code faults on the supervisor page the first run cached, under both engines.
#[test]
fn privilege_written_between_runs_reaches_inline_accesses() {
    use iced_x86::code_asm::*;
    use privilege::*;
    let mut a = CodeAssembler::new(64).unwrap();
    a.mov(rax, qword_ptr(SUP)).unwrap();
    a.hlt().unwrap();
    let pieces = vec![(CODE, kernel(|_| {})), (UCODE, a.assemble(UCODE).unwrap())];
    let mut outcomes = Vec::new();
    for jit_on in [false, true] {
        let mut it = Interpreter::new();
        if jit_on {
            it.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
        }
        it.trap_faults = true;
        let (mut st, first, mut bus) = privilege::run(&mut it, &pieces, false);
        assert!(matches!(first, Exit::Halted), "{first:?}");
        // To CPL 3 at UCODE, the way a debugger would: registers only.
        st.halted = false;
        st.cpl = 3;
        st.seg[Seg::Cs as usize].selector = 0x2b;
        st.seg[Seg::Cs as usize].attr |= 3 << attr::DPL_SHIFT;
        st.seg[Seg::Ss as usize].selector = 0x23;
        st.seg[Seg::Ss as usize].attr |= 3 << attr::DPL_SHIFT;
        st.rip = UCODE;
        let exit = it.run(&mut st, &mut bus, 100);
        outcomes.push((format!("{exit:?}"), st.rip, st.cr2, tlb_tags(&it)));
    }
    assert!(outcomes[0].0.contains("vector: 14"), "the interpreter: {:?}", outcomes[0].0);
    assert_eq!(outcomes[0], outcomes[1]);
}
