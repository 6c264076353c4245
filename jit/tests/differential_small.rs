//! The JIT against the interpreter on the small forms lowered inline for the guest CPU benchmark's
//! profile: PREFETCHT0/T1/T2/NTA and PREFETCHW m (no architectural effect), BSWAP r32/r64 (BSWAP
//! r16, undefined, stays with the handler and is generated too) and MOVBE r, m / m, r at 2, 4 and 8
//! bytes, MOV r16/r32/r64, Sreg (and MOV m16, Sreg, the handler's), CLD/STD (then PUSHF or STOSB,
//! which read DF) and LFENCE/MFENCE/SFENCE. Random programs of them (with register fillers) run from random registers in 64-bit
//! code (where some address registers point above the identity-mapped first GiB, so a MOVBE
//! there raises #PF and must leave the interpreter's state; a prefetch there must not fault) and
//! in 32-bit protected mode, under both vendors' quirks, every block translated on first entry;
//! registers, RFLAGS, RIP, the retired count, the exit, all of RAM and the TLB must equal the
//! interpreter's.
//!
//! `FERRITE_JIT_DIFF_CASES=N` runs N programs per mode (default 300).

use cpu::Interpreter;
use cpu::interp::Exit;
use cpu::state::Quirks;
use cpu::testutil::{CODE, DATA, STACK, TestBus, TestMode, cpu_in};
use iced_x86::{Decoder, DecoderOptions};

mod common;
use common::{Rng, tlb_tags};

/// Linear memory above the first GiB: not mapped in the 64-bit test (a #PF).
const UNMAPPED: u64 = 0x4000_0000;

/// A memory operand (ModRM with `reg`, and what follows) through EBX/RBX, ESI or EDI, [base] or
/// [base + disp8], or an absolute disp32 into the data.
fn mem_operand(v: &mut Vec<u8>, reg: u8, r: &mut Rng) {
    let base = [3u8, 6, 7][r.below(3) as usize];
    match r.below(4) {
        0 => {
            v.extend([0x04 | (reg << 3), 0x25]);
            v.extend(((DATA + r.below(0x1000)) as u32).to_le_bytes());
        }
        1 => v.push((reg << 3) | base),
        _ => v.extend([0x40 | (reg << 3) | base, r.byte()]),
    }
}

/// One random instruction of the forms under test (or a filler).
fn gen_insn(r: &mut Rng, bits: u32) -> Vec<u8> {
    let mut v = Vec::new();
    let rex = |r: &mut Rng, v: &mut Vec<u8>| {
        if bits == 64 && r.below(2) == 0 {
            // W and R at random (B and X stay 0 so that a base stays one of ours).
            v.push(0x40 | (r.byte() & 0x0c));
        }
    };
    match r.below(14) {
        // CLD/STD, and what reads DF after them: PUSHF (inline in 64-bit code) and STOSB into the
        // data (the handler) after a MOV EDI, imm32 there.
        9 => v.push(0xfc + r.below(2) as u8),
        11 => v.push(0x9c),
        12 => {
            v.push(0xbf);
            v.extend(((DATA + 0x100 + r.below(0x100)) as u32).to_le_bytes());
        }
        13 => v.push(0xaa),
        // LFENCE/MFENCE/SFENCE (0F AE E8/F0/F8), sometimes an alternate encoding (the handler's).
        10 => v.extend([0x0f, 0xae, [0xe8, 0xf0, 0xf8, 0xe9, 0xf1][r.below(5) as usize]]),
        // MOV r16/r32/r64, Sreg (8C /r), and the m16 form (the handler's).
        8 => {
            if r.below(4) == 0 {
                v.push(0x66);
            }
            if bits == 64 && r.below(2) == 0 {
                v.push(0x40 | (r.byte() & 0x09));
            }
            v.push(0x8c);
            let sreg = r.below(6) as u8;
            if r.below(5) == 0 {
                mem_operand(&mut v, sreg, r);
            } else {
                v.push(0xc0 | (sreg << 3) | r.below(8) as u8);
            }
        }
        // PREFETCHh m (0F 18 /0-/3), PREFETCHW m (0F 0D /1).
        0 | 1 => {
            if r.below(4) == 0 {
                v.extend([0x0f, 0x0d]);
                mem_operand(&mut v, 1, r);
            } else {
                v.extend([0x0f, 0x18]);
                mem_operand(&mut v, r.below(4) as u8, r);
            }
        }
        // BSWAP r (0F C8+r), sometimes with 66 (r16: the handler).
        2 | 3 => {
            if r.below(6) == 0 {
                v.push(0x66);
            }
            if bits == 64 && r.below(2) == 0 {
                v.push(0x40 | (r.byte() & 0x09));
            }
            v.extend([0x0f, 0xc8 + r.below(8) as u8]);
        }
        // MOVBE r, m (0F 38 F0) and m, r (0F 38 F1), sometimes 16-bit.
        4..=6 => {
            if r.below(4) == 0 {
                v.push(0x66);
            }
            rex(r, &mut v);
            v.extend([0x0f, 0x38, 0xf0 + r.below(2) as u8]);
            mem_operand(&mut v, r.byte() & 7, r);
        }
        // Fillers: ADD/XOR r, r; MOV r, imm32.
        _ => {
            if r.below(2) == 0 {
                v.extend([[0x01u8, 0x31][r.below(2) as usize], 0xc0 | (r.byte() & 0x3f)]);
            } else {
                v.push(0xb8 + r.below(8) as u8);
                v.extend((r.next() as u32).to_le_bytes());
            }
        }
    }
    v
}

/// A random program with a HLT at the end.
fn gen_program(r: &mut Rng, bits: u32) -> Vec<u8> {
    let n = 1 + r.below(24) as usize;
    let mut out = Vec::new();
    let mut k = 0;
    while k < n {
        let v = gen_insn(r, bits);
        let mut d = Decoder::with_ip(bits, &v, 0, DecoderOptions::NONE);
        let i = d.decode();
        if i.is_invalid() || i.len() != v.len() {
            continue;
        }
        out.extend(v);
        k += 1;
    }
    out.push(0xf4);
    out
}

/// Runs `code` on `it` (caches flushed first) and returns the state, exit and bus.
fn run(
    it: &mut Interpreter,
    mode: TestMode,
    code: &[u8],
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
    // Selectors the MOV r, Sreg forms read (only the visible selector: the cached base,
    // limit and attributes are the mode's).
    for s in &mut st.seg {
        s.selector = x.next() as u16;
    }
    it.flush_all();
    let exit = it.run(&mut st, &mut bus, 1_000);
    (st, exit, bus)
}

fn disasm(code: &[u8], bits: u32) -> String {
    let mut d = Decoder::with_ip(bits, code, CODE, DecoderOptions::NONE);
    d.iter().map(|i| format!("  {:#x}: {i}", i.ip())).collect::<Vec<_>>().join("\n")
}

#[test]
fn jit_matches_interpreter_on_small_forms() {
    let cases: u64 = std::env::var("FERRITE_JIT_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let mut r = Rng(0x736d_616c_6c66_726d);
    let mut interp = Interpreter::new();
    let mut jit = Interpreter::new();
    jit.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
    interp.trap_faults = true;
    jit.trap_faults = true;
    let mut seen = std::collections::BTreeSet::new();
    let mut exits = std::collections::BTreeMap::new();
    for (mode, bits) in [(TestMode::Long64, 64), (TestMode::Prot32, 32)] {
        for case in 0..cases {
            let code = gen_program(&mut r, bits);
            let mut gpr = [0u64; 16];
            for g in gpr.iter_mut() {
                *g = match r.below(3) {
                    0 => {
                        [0x80, 0xff, 0x8000, 0xffff, 0x8000_0000, 0xffff_ffff, u64::MAX][r.below(7) as usize]
                    }
                    _ => r.next(),
                };
            }
            for g in [3, 6, 7] {
                gpr[g] = if bits == 64 && r.below(8) == 0 {
                    UNMAPPED + r.below(0x1000)
                } else {
                    DATA + [0x10, 0x800, 0xffa, 0x1ffc, 0x2000][r.below(5) as usize] + r.below(8)
                };
            }
            gpr[4] = STACK;
            let seed = r.next();
            let (a, ea, ma) = run(&mut interp, mode, &code, &gpr, seed);
            let (b, eb, mb) = run(&mut jit, mode, &code, &gpr, seed);
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
                    && a.cr2 == b.cr2
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
            *exits
                .entry(format!("{ea:?}").split(['(', ' ', '{']).next().unwrap_or("").to_string())
                .or_insert(0u32) += 1;
            let mut d = Decoder::with_ip(bits, &code, 0, DecoderOptions::NONE);
            for i in d.iter() {
                seen.insert(format!("{:?}", i.mnemonic()));
                seen.insert(format!("{:?}", i.code()));
            }
        }
    }
    println!("exits: {exits:?}; mnemonics and codes: {seen:?}");
    assert!(jit.compiled_blocks() >= cases, "only {} blocks translated", jit.compiled_blocks());
    for m in [
        "Prefetcht0",
        "Prefetcht1",
        "Prefetcht2",
        "Prefetchnta",
        "Prefetchw",
        "Bswap",
        "Movbe",
        "Mov_rm16_Sreg",
        "Mov_r32m16_Sreg",
        "Mov_r64m16_Sreg",
    ] {
        assert!(seen.contains(m), "the generator never produced {m}");
    }
    assert!(exits.len() >= 2, "no program faulted: {exits:?}");
}

/// The forms run inline (not through their handlers): a hot loop of them retires almost every
/// instruction in generated code.
#[test]
fn small_forms_run_inline() {
    let code = [
        0x0f, 0x18, 0x0b, // prefetcht0 [rbx]
        0x0f, 0x18, 0x43, 0x40, // prefetchnta [rbx+0x40]
        0x0f, 0x0d, 0x0b, // prefetchw [rbx]
        0x48, 0x0f, 0xc8, // bswap rax
        0x0f, 0xca, // bswap edx
        0x48, 0x0f, 0x38, 0xf1, 0x03, // movbe [rbx], rax
        0x0f, 0x38, 0xf0, 0x53, 0x04, // movbe edx, [rbx+4]
        0x8c, 0xe1, // mov ecx, fs
        0x01, 0xd0, // add eax, edx
        0xff, 0xce, // dec esi
        0x75, 0xdf, // jnz top
        0xf4, // hlt
    ];
    let mut it = Interpreter::new();
    it.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
    let mut bus = TestBus::default();
    let mut st = cpu_in(TestMode::Long64, &mut bus);
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
    st.gpr[0] = 0x0123_4567_89ab_cdef;
    st.gpr[3] = DATA;
    st.gpr[6] = 1000;
    let exit = it.run(&mut st, &mut bus, 100_000);
    assert_eq!(exit, Exit::Halted);
    assert_eq!(st.icount, 1000 * 11 + 1);
    let inline = it.inline_retired();
    assert!(inline * 100 >= st.icount * 99, "only {inline} of {} instructions ran inline", st.icount);
}
