//! The JIT against the interpreter, instruction by instruction: random straight-line programs made of
//! every encoding the JIT lowers inline (register/immediate MOV, MOVZX/MOVSX/MOVSXD, LEA with every
//! addressing form, ADD/SUB/CMP/AND/OR/XOR/TEST, INC/DEC, NOP, Jcc/JMP rel; ADC/SBB, XCHG,
//! BT/BTS/BTR/BTC, BSF/BSR and one-operand MUL/IMUL of `lower_int.rs`), with prefixes (66, 67,
//! REX) and interleaved with instructions it calls the handler for, run from random registers and
//! flags in real, 32-bit protected and 64-bit mode. The translated run (threshold 1: every block is
//! translated on its first entry) must end in exactly the interpreter's state: GPRs, RFLAGS, RIP and
//! the retired-instruction count.
//!
//! `FERRITE_JIT_DIFF_CASES=N` runs N programs per mode (default 1500).

use cpu::Interpreter;
use cpu::interp::Exit;
use cpu::state::Quirks;
use cpu::testutil::{CODE, DATA, PD, STACK, TestBus, TestMode, cpu_in};
use iced_x86::{Decoder, DecoderOptions, Mnemonic};

mod common;
use common::{Rng, tlb_tags};

fn bits_of(mode: TestMode) -> u32 {
    match mode {
        TestMode::Real => 16,
        TestMode::Prot32 => 32,
        TestMode::Long64 => 64,
    }
}

/// A ModRM byte with a register operand (mod = 11).
fn modrm_reg(r: &mut Rng) -> u8 {
    0xc0 | (r.byte() & 0x3f)
}

/// One random instruction of the kinds the JIT inlines (or one it calls, `filler`), as bytes.
fn gen_insn(r: &mut Rng, bits: u32, filler: bool) -> Vec<u8> {
    let mut v = Vec::new();
    if r.below(4) == 0 {
        v.push(0x66);
    }
    if r.below(6) == 0 {
        v.push(0x67);
    }
    if bits == 64 && r.below(2) == 0 {
        v.push(0x40 | (r.byte() & 0x0f));
    }
    if filler {
        // Called through the handler: RCL/RCR, shifts by CL, CWD/CDQ/CQO, BSWAP, SHLD/SHRD by CL.
        match r.below(5) {
            0 => v.extend([0xc1, 0xd0 | (r.byte() & 0x0f), r.byte()]),
            1 => v.push(0x99),
            2 => v.extend([0xd2 + r.below(2) as u8, modrm_reg(r)]),
            3 => v.extend([0x0f, 0xc8 | (r.byte() & 7)]),
            _ => v.extend([0x0f, 0xa5 + 8 * r.below(2) as u8, modrm_reg(r)]),
        }
        return v;
    }
    match r.below(23) {
        // ADC/SBB (lower_int.rs): r/m, r and r, r/m (10-13, 18-1B), AL/eAX, imm (14/15, 1C/1D) and
        // group 1 /2 /3 (80, 81, 83) on a register.
        19 => match r.below(3) {
            0 => v.extend([[0x10u8, 0x18][r.below(2) as usize] + r.below(4) as u8, modrm_reg(r)]),
            1 => {
                let wide = r.below(2) as u8;
                v.push([0x14u8, 0x1c][r.below(2) as usize] + wide);
                let n = if wide == 0 {
                    1
                } else if bits == 16 {
                    2
                } else {
                    4
                };
                v.extend((0..n).map(|_| r.byte()));
            }
            _ => {
                let op = [0x80u8, 0x81, 0x83][r.below(3) as usize];
                v.extend([op, 0xd0 | ((r.below(2) as u8) << 3) | (r.byte() & 7)]);
                let n = if op == 0x81 { 4 } else { 1 };
                v.extend((0..n).map(|_| r.byte()));
            }
        },
        // XCHG r/m, r (86, 87) on registers and XCHG eAX, r (91-97).
        20 => {
            if r.below(3) == 0 {
                v.push(0x91 + r.below(7) as u8);
            } else {
                v.extend([0x86 + r.below(2) as u8, modrm_reg(r)]);
            }
        }
        // BT/BTS/BTR/BTC r, r (0F A3/AB/B3/BB) and r, imm8 (0F BA /4-/7), counts past the width.
        21 => {
            if r.below(2) == 0 {
                v.extend([0x0f, [0xa3u8, 0xab, 0xb3, 0xbb][r.below(4) as usize], modrm_reg(r)]);
            } else {
                v.extend([0x0f, 0xba, 0xe0 | (r.byte() & 0x1f), r.byte()]);
            }
        }
        // BSF/BSR r, r (0F BC/BD; zero sources included through the register values), MUL/IMUL r
        // (F6/F7 /4 /5) and POPCNT/TZCNT/LZCNT r, r (F3 0F B8/BC/BD).
        22 => match r.below(if bits == 64 { 4 } else { 3 }) {
            0 => v.extend([0x0f, 0xbc + r.below(2) as u8, modrm_reg(r)]),
            // BZHI r, r, r (VEX.LZ.0F38.W0/W1 F5 /r; no legacy prefix may come before VEX): every
            // register through R̄, B̄ and vvvv; indices inside and outside the width come from
            // the register values.
            3 => {
                v.clear();
                let rb = r.byte() & 0xa0;
                let w = r.byte() & 0x80;
                v.extend([0xc4, rb | 0x42, w | ((r.byte() & 15) << 3), 0xf5, modrm_reg(r)]);
            }
            1 => v.extend([0xf6 + r.below(2) as u8, 0xe0 | ((r.below(2) as u8) << 3) | (r.byte() & 7)]),
            _ => {
                v.insert(0, 0xf3);
                v.extend([0x0f, [0xb8u8, 0xbc, 0xbd][r.below(3) as usize], modrm_reg(r)]);
            }
        },
        // SETcc r/m8 and CMOVcc r, r/m (register forms), NEG/NOT r/m (F6/F7 /2 /3).
        17 => match r.below(3) {
            0 => v.extend([0x0f, 0x90 + r.below(16) as u8, modrm_reg(r)]),
            1 => v.extend([0x0f, 0x40 + r.below(16) as u8, modrm_reg(r)]),
            _ => v.extend([0xf6 + r.below(2) as u8, 0xd0 | ((r.below(2) as u8) << 3) | (r.byte() & 7)]),
        },
        18 => v.extend([0xf6 + r.below(2) as u8, 0xd8 | (r.byte() & 7)]),
        // Shifts and rotates of a register by an immediate or by 1 (C0/C1 ib, D0/D1): /0 ROL /1 ROR
        // /4 SHL /5 SHR /6 SAL /7 SAR, counts around 0, 1, the operand widths and their masks.
        14 | 15 => {
            let sub = [0u8, 1, 4, 5, 6, 7][r.below(6) as usize];
            let rm = 0xc0 | (sub << 3) | (r.byte() & 7);
            if r.below(4) == 0 {
                v.extend([0xd0 + r.below(2) as u8, rm]);
            } else {
                let cnt = [0u8, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 0xff][r.below(15) as usize];
                let cnt = if r.below(3) == 0 { r.byte() } else { cnt };
                v.extend([0xc0 + r.below(2) as u8, rm, cnt]);
            }
        }
        // IMUL r, r/m (0F AF) and IMUL r, r/m, imm (6B ib, 69 iw/id).
        16 => match r.below(3) {
            0 => v.extend([0x0f, 0xaf, modrm_reg(r)]),
            1 => v.extend([0x6b, modrm_reg(r), r.byte()]),
            _ => {
                v.extend([0x69, modrm_reg(r)]);
                let n = if bits == 16 { 2 } else { 4 };
                v.extend((0..n).map(|_| r.byte()));
            }
        },
        // ALU r/m, r and r, r/m: 00-03 ADD, 08-0B OR, 20-23 AND, 28-2B SUB, 30-33 XOR, 38-3B CMP.
        0 | 1 => {
            let base = [0x00, 0x08, 0x20, 0x28, 0x30, 0x38][r.below(6) as usize];
            v.extend([base + r.below(4) as u8, modrm_reg(r)]);
        }
        // ALU AL/eAX, imm.
        2 => {
            let base = [0x04, 0x0c, 0x24, 0x2c, 0x34, 0x3c, 0xa8][r.below(7) as usize];
            let wide = r.below(2) as u8;
            v.push(base + wide);
            let n = if wide == 0 {
                1
            } else if bits == 16 {
                2
            } else {
                4
            };
            v.extend((0..n).map(|_| r.byte()));
        }
        // Group 1 r/m, imm (80, 81, 83) with /0 ADD /1 OR /4 AND /5 SUB /6 XOR /7 CMP.
        3 | 4 => {
            let op = [0x80u8, 0x81, 0x83][r.below(3) as usize];
            let sub = [0u8, 1, 4, 5, 6, 7][r.below(6) as usize];
            v.extend([op, 0xc0 | (sub << 3) | (r.byte() & 7)]);
            let n = if op == 0x81 { 4 } else { 1 };
            v.extend((0..n).map(|_| r.byte()));
        }
        // TEST r/m, r.
        5 => v.extend([0x84 + r.below(2) as u8, modrm_reg(r)]),
        // MOV r/m, r and r, r/m.
        6 => v.extend([0x88 + r.below(4) as u8, modrm_reg(r)]),
        // MOV r, imm (B0-BF; with REX.W, B8-BF take 8 bytes).
        7 => {
            let op = 0xb0 + r.below(16) as u8;
            v.push(op);
            let n = if op < 0xb8 { 1 } else { 8 };
            v.extend((0..n).map(|_| r.byte()));
        }
        // MOV r/m, imm (C6 /0, C7 /0).
        8 => {
            let op = 0xc6 + r.below(2) as u8;
            v.extend([op, 0xc0 | (r.byte() & 7)]);
            let n = if op == 0xc6 { 1 } else { 4 };
            v.extend((0..n).map(|_| r.byte()));
        }
        // MOVZX/MOVSX r, r/m8/16; MOVSXD.
        9 => {
            if bits == 64 && r.below(3) == 0 {
                v.extend([0x63, modrm_reg(r)]);
            } else {
                v.extend([0x0f, [0xb6, 0xb7, 0xbe, 0xbf][r.below(4) as usize], modrm_reg(r)]);
            }
        }
        // LEA with a random memory form (any ModRM with mod != 11, SIB and displacement bytes).
        10 | 11 => {
            let modrm = r.byte() % 0xc0;
            v.extend([0x8d, modrm]);
            // Enough bytes for any SIB and displacement; the decoder takes what it needs.
            v.extend((0..5).map(|_| r.byte()));
        }
        // INC/DEC r/m (FE/FF /0 /1), and 40-4F outside 64-bit mode (there they are REX).
        12 => {
            if bits != 64 && r.below(2) == 0 {
                v.clear();
                v.push(0x40 + r.below(16) as u8);
            } else {
                v.extend([0xfe + r.below(2) as u8, 0xc0 | ((r.below(2) as u8) << 3) | (r.byte() & 7)]);
            }
        }
        _ => {
            if r.below(2) == 0 {
                v.clear();
                // NOP, or PAUSE (F3 90).
                if r.below(3) == 0 {
                    v.push(0xf3);
                }
                v.push(0x90);
            } else {
                v.extend([0x0f, 0x1f, modrm_reg(r)]);
            }
        }
    }
    v
}

/// One random memory-operand instruction of the forms the JIT inlines in 64-bit code (or PUSH/POP),
/// addressing through RBX, RSI, RDI or RBP (set to data pages by the test) with a small
/// displacement, RIP-relative, or FS/GS-relative.
fn gen_mem_insn(r: &mut Rng) -> Vec<u8> {
    let mut v = Vec::new();
    if r.below(5) == 0 {
        v.push(0x66);
    }
    if r.below(8) == 0 {
        v.push([0x64, 0x65][r.below(2) as usize]);
    }
    // REX: W and R at random (B and X stay 0 so that the base stays one of ours).
    if r.below(2) == 0 {
        v.push(0x40 | (r.byte() & 0x0c));
    }
    if r.below(6) == 0 {
        v.clear();
        match r.below(4) {
            // PUSH imm8 / PUSH imm32 (sign-extended to 64 bits).
            0 => v.extend([0x6a, r.byte()]),
            1 => {
                v.push(0x68);
                v.extend((r.next() as u32).to_le_bytes());
            }
            _ => {
                if r.below(3) == 0 {
                    v.push(0x41);
                }
                v.push(0x50 + r.below(16) as u8);
            }
        }
        return v;
    }
    // CALL rel32 to the next instruction (a push of its address, then a new block), and RET, which
    // returns after an earlier CALL (a loop, cut by the budget) or to whatever is on the stack
    // (often a #GP for a non-canonical address, or code elsewhere).
    // CALL r64 (FF /2) and JMP r64 (FF /4) through a random register: usually a non-canonical target (#GP before the
    // push), or one of the data pointers (code made of the data's bytes).
    if r.below(12) == 0 {
        v.clear();
        match r.below(4) {
            0 => v.extend([0xe8, 0, 0, 0, 0]),
            1 => v.push(0xc3),
            // JMP r64 (FF /4), the same targets.
            2 => v.extend([0xff, 0xe0 | (r.byte() & 7)]),
            _ => v.extend([0xff, 0xd0 | (r.byte() & 7)]),
        }
        return v;
    }
    let (op, ext, imm): (&[u8], Option<u8>, usize) = match r.below(9) {
        0 | 1 => {
            let base = [0x00u8, 0x08, 0x10, 0x18, 0x20, 0x28, 0x30, 0x38][r.below(8) as usize];
            (&[base + r.below(4) as u8][..].to_vec().leak()[..], None, 0)
        }
        2 => (&[0x84 + r.below(2) as u8][..].to_vec().leak()[..], None, 0),
        3 | 4 => (&[0x88 + r.below(4) as u8][..].to_vec().leak()[..], None, 0),
        5 => {
            let op = 0xc6 + r.below(2) as u8;
            (&[op][..].to_vec().leak()[..], Some(0), if op == 0xc6 { 1 } else { 4 })
        }
        6 => {
            let op = [0x80u8, 0x81, 0x83][r.below(3) as usize];
            let sub = r.below(8) as u8;
            (&[op][..].to_vec().leak()[..], Some(sub), if op == 0x81 { 4 } else { 1 })
        }
        7 => (&[0xfe + r.below(2) as u8][..].to_vec().leak()[..], Some(r.below(2) as u8), 0),
        _ => {
            if r.below(3) == 0 {
                (&[0x63u8][..], None, 0)
            } else {
                (&[0x0f, [0xb6, 0xb7, 0xbe, 0xbf][r.below(4) as usize]][..].to_vec().leak()[..], None, 0)
            }
        }
    };
    v.extend_from_slice(op);
    let reg = ext.unwrap_or(r.byte() & 7);
    match r.below(8) {
        // RIP-relative (into the code and data around it).
        0 => {
            v.push((reg << 3) | 5);
            v.extend((r.below(0x800) as i32 - 0x400).to_le_bytes());
        }
        // [base + disp8]
        1..=5 => {
            let base = [3u8, 5, 6, 7][r.below(4) as usize];
            v.push(0x40 | (reg << 3) | base);
            v.push(r.byte());
        }
        // [base]
        _ => {
            let base = [3u8, 6, 7][r.below(3) as usize];
            v.push((reg << 3) | base);
        }
    }
    v.extend((0..imm).map(|_| r.byte()));
    v
}

/// Decodes exactly one instruction from `bytes` (in `bits`), returning its length and mnemonic.
fn decode_one(bytes: &[u8], bits: u32) -> Option<(usize, Mnemonic)> {
    let mut d = Decoder::with_ip(bits, bytes, 0, DecoderOptions::NONE);
    let i = d.decode();
    if i.is_invalid() { None } else { Some((i.len(), i.mnemonic())) }
}

/// A random program: instructions, some Jcc/JMP rel8 over whole instructions, and HLT at the end.
fn gen_program(r: &mut Rng, bits: u32) -> Vec<u8> {
    let n = 1 + r.below(40) as usize;
    let mut insns: Vec<Vec<u8>> = Vec::new();
    while insns.len() < n {
        let filler = r.below(5) == 0;
        let mut v = if bits == 64 && r.below(3) == 0 { gen_mem_insn(r) } else { gen_insn(r, bits, filler) };
        // Keep only what decodes, cut to its length (trailing random bytes of LEA).
        let Some((len, m)) = decode_one(&v, bits) else { continue };
        // Privileged, I/O, stack or control instructions that random prefixes could turn some bytes
        // into are not what this test is about.
        if matches!(m, Mnemonic::Hlt | Mnemonic::In | Mnemonic::Out) {
            continue;
        }
        v.truncate(len);
        insns.push(v);
    }
    // Branches: before instruction k, jump over the next few instructions (or not, for Jcc).
    let mut out = Vec::new();
    for k in 0..insns.len() {
        if r.below(6) == 0 {
            let skip = r.below(4) as usize;
            let d: usize = insns[k..(k + skip).min(insns.len())].iter().map(|v| v.len()).sum();
            if d < 128 {
                let op = if r.below(5) == 0 { 0xeb } else { 0x70 + r.below(16) as u8 };
                out.extend([op, d as u8]);
            }
        }
        out.extend(&insns[k]);
    }
    out.push(0xf4);
    out
}

/// The 4 KiB page table that replaces the first 2 MiB page when the data pages are scattered.
const SCATTER_PT: u64 = 0x104000;
/// Linear pages `DATA - 0x1000 .. DATA + 0x4000` map, in order, to these physical pages when scattered:
/// neither adjacent nor ascending, so an access that crosses a linear page boundary but is carried out
/// as one host access reads or writes the wrong bytes.
const SCATTERED: [u64; 5] = [0x1c6000, 0x1c0000, 0x1c8000, 0x1c4000, 0x1c2000];

/// The physical address of linear `lin` in the data window (identity when not scattered).
fn data_phys(lin: u64, scatter: bool) -> u64 {
    let first = (DATA >> 12) - 1;
    let page = lin >> 12;
    if scatter && (first..first + SCATTERED.len() as u64).contains(&page) {
        SCATTERED[(page - first) as usize] | (lin & 0xfff)
    } else {
        lin
    }
}

/// Runs `code` from the given registers and flags on `it` (its caches flushed first). With `scatter`
/// (64-bit mode only) the data window is mapped to scattered physical pages through a 4 KiB page table.
fn run(
    it: &mut Interpreter,
    mode: TestMode,
    code: &[u8],
    gpr: &[u64; 16],
    rflags: u64,
    seed: u64,
    until: u64,
) -> (cpu::CpuState, Exit, TestBus) {
    let mut bus = TestBus::default();
    let mut st = cpu_in(mode, &mut bus);
    let scatter = mode == TestMode::Long64 && seed & 1 == 0;
    if scatter {
        // cpu_in maps the first GiB with 2 MiB pages: point the first PD entry at a page table instead.
        let w = |bus: &mut TestBus, a: u64, v: u64| {
            bus.ram[a as usize..a as usize + 8].copy_from_slice(&v.to_le_bytes())
        };
        w(&mut bus, PD, SCATTER_PT | 3);
        for i in 0..512u64 {
            w(&mut bus, SCATTER_PT + i * 8, data_phys(i << 12, true) | 3);
        }
    }
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    st.gpr = *gpr;
    // Keep the stack pointer usable (the filler never uses it, but keep it sane anyway).
    st.gpr[4] = STACK;
    st.rflags = rflags;
    // The flags the SDM leaves undefined (shifts, multiplies) follow either vendor's rules.
    st.quirks = if seed & 2 == 0 { Quirks::Intel } else { Quirks::Amd };
    // Data the memory forms read (the same pseudo-random bytes for both engines), and FS/GS bases
    // into it.
    let mut x = Rng(seed | 1);
    for lin in DATA - 0x1000..DATA + 0x3000 {
        bus.ram[data_phys(lin, scatter) as usize] = x.byte();
    }
    st.seg[4].base = DATA + 0x800;
    st.seg[5].base = DATA + 0x1ff0;
    it.flush_all();
    let exit = it.run(&mut st, &mut bus, until);
    (st, exit, bus)
}

#[test]
fn jit_matches_interpreter_on_inlined_forms() {
    let cases: u64 =
        std::env::var("FERRITE_JIT_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(1500);
    let mut r = Rng(0x5eed_0f1e_2026_0001);
    let mut inlined_mnemonics = std::collections::BTreeSet::new();
    // One engine of each kind for all programs (a fresh JIT per program costs more than the program).
    let mut interp = Interpreter::new();
    let mut jit = Interpreter::new();
    jit.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
    // A fault ends the run (there is no IDT): both engines must raise the same one at the same place.
    interp.trap_faults = true;
    jit.trap_faults = true;
    for mode in [TestMode::Long64, TestMode::Prot32, TestMode::Real] {
        let bits = bits_of(mode);
        for case in 0..cases {
            let code = gen_program(&mut r, bits);
            let mut gpr = [0u64; 16];
            for g in gpr.iter_mut() {
                // Mix small, boundary and random values so that carries, overflows and zeros occur.
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
            // Memory bases: RBX, RBP, RSI, RDI usually point into the data pages (some near a page end,
            // so that accesses cross it).
            for g in [3, 5, 6, 7] {
                if r.below(4) != 0 {
                    gpr[g] = DATA + [0x10, 0x800, 0xffa, 0x1ffc, 0x2000][r.below(5) as usize] + r.below(8);
                }
            }
            // Arithmetic flags at random; IF and the reserved bit 1 as a real CPU has them.
            let rflags = 0x2 | (r.next() & cpu::state::flags::ARITH);
            let seed = r.next();
            let (a, ea, ma) = run(&mut interp, mode, &code, &gpr, rflags, seed, 1_000);
            let (b, eb, mb) = run(&mut jit, mode, &code, &gpr, rflags, seed, 1_000);
            let same_mem = ma.ram == mb.ram;
            assert_eq!(
                tlb_tags(&interp),
                tlb_tags(&jit),
                "{mode:?} case {case}: the TLB\n{}",
                disasm(&code, bits)
            );
            let same = same_mem
                && a.gpr == b.gpr
                && a.rflags == b.rflags
                && a.rip == b.rip
                && a.icount == b.icount
                && ea == eb;
            assert!(
                same,
                "{mode:?} case {case}: program {code:02x?} (memory {})\n{}\ninterp: {ea:?} rip {:#x} icount {} rflags {:#x}\n  gpr {:x?}\njit:    {eb:?} rip {:#x} icount {} rflags {:#x}\n  gpr {:x?}",
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
            let mut d = Decoder::with_ip(bits, &code, 0, DecoderOptions::NONE);
            for i in d.iter() {
                inlined_mnemonics.insert(format!("{:?}", i.mnemonic()));
            }
        }
    }
    let translated = jit.compiled_blocks();
    assert!(translated >= cases * 3, "only {translated} blocks translated");
    assert_eq!(interp.compiled_blocks(), 0);
    println!("{translated} blocks translated; mnemonics seen: {inlined_mnemonics:?}");
    for m in [
        "Mov", "Movzx", "Movsx", "Movsxd", "Lea", "Add", "Sub", "Cmp", "And", "Or", "Xor", "Test", "Inc",
        "Dec", "Nop", "Rol", "Ror", "Shl", "Shr", "Sar", "Imul", "Neg", "Not", "Call", "Ret", "Adc", "Sbb",
        "Xchg", "Bt", "Bts", "Btr", "Btc", "Bsf", "Bsr", "Mul", "Popcnt", "Tzcnt", "Lzcnt", "Pause", "Bzhi",
    ] {
        assert!(inlined_mnemonics.contains(m), "the generator never produced {m}");
    }
}

fn disasm(code: &[u8], bits: u32) -> String {
    let mut d = Decoder::with_ip(bits, code, CODE, DecoderOptions::NONE);
    d.iter().map(|i| format!("  {:#x}: {i}", i.ip())).collect::<Vec<_>>().join("\n")
}

/// Self-modifying code: a translated block patches an immediate of its own first instruction and
/// loops back; the next pass must run the new code (the write invalidates the block and its
/// translation), under the JIT exactly as under the interpreter.
#[test]
fn self_modifying_code_runs_the_new_instruction() {
    let code: &[u8] = &[
        0xb8, 0x11, 0x11, 0x11, 0x11, // 0x1000: mov eax, 0x11111111
        0x01, 0xc3, // 0x1005: add ebx, eax
        0xc7, 0x05, 0xf0, 0xff, 0xff, 0xff, 0x22, 0x22, 0x22,
        0x22, // 0x1007: mov dword [rip-0x10], 0x22222222
        0xff, 0xc9, // 0x1011: dec ecx
        0x75, 0xeb, // 0x1013: jnz 0x1000
        0xf4, // 0x1015: hlt
    ];
    let mut gpr = [0u64; 16];
    gpr[1] = 3;
    for jit_on in [false, true] {
        let mut it = Interpreter::new();
        if jit_on {
            it.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
        }
        let (st, exit, bus) = run(&mut it, TestMode::Long64, code, &gpr, 0x2, 1, 1_000);
        assert_eq!(exit, Exit::Halted, "jit {jit_on}");
        assert_eq!(
            st.gpr[3],
            0x1111_1111 + 2 * 0x2222_2222,
            "jit {jit_on}: the patched immediate was not used"
        );
        assert_eq!(&bus.ram[0x1001..0x1005], &[0x22; 4]);
        if jit_on {
            assert!(it.compiled_blocks() >= 2, "the patched block was translated again");
        }
    }
}

/// Accesses that cross a linear page boundary whose two pages are far apart physically: each engine
/// must split them (the JIT's inline fast path must decline, its handler then splits), reading and
/// writing the bytes the page tables name. Checked against the mapping itself, not only engine against
/// engine, and run hot so the JIT translates the loop.
#[test]
fn page_crossing_accesses_follow_scattered_pages() {
    let code: &[u8] = &[
        0x48, 0x8b, 0x03, // mov rax, [rbx]
        0x48, 0x89, 0x56, 0x00, // mov [rsi+0], rdx
        0x48, 0x03, 0x17, // add rdx, [rdi]
        0xff, 0xc9, // dec ecx
        0x75, 0xf2, // jnz 0x1000
        0xf4, // hlt
    ];
    let mut gpr = [0u64; 16];
    gpr[1] = 50; // rcx: iterations
    gpr[2] = 0x1122_3344_5566_7788; // rdx
    gpr[3] = DATA + 0xffc; // rbx: read across DATA+0x1000
    gpr[6] = DATA + 0x1ffa; // rsi: write across DATA+0x2000
    gpr[7] = DATA - 3; // rdi: read across DATA
    let seed = 2; // even: scattered
    let expect = |ram: &[u8], lin: u64| {
        let b: Vec<u8> = (0..8).map(|k| ram[data_phys(lin + k, true) as usize]).collect();
        u64::from_le_bytes(b.try_into().unwrap())
    };
    let mut results = Vec::new();
    for jit_on in [false, true] {
        let mut it = Interpreter::new();
        if jit_on {
            it.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
        }
        let (st, exit, bus) = run(&mut it, TestMode::Long64, code, &gpr, 0x2, seed, 1_000);
        assert_eq!(exit, Exit::Halted, "jit {jit_on}");
        assert_eq!(st.gpr[0], expect(&bus.ram, DATA + 0xffc), "jit {jit_on}: the read across DATA+0x1000");
        // The last store wrote the RDX of the last iteration before its ADD.
        let stored = expect(&bus.ram, DATA + 0x1ffa);
        assert_eq!(stored.wrapping_add(expect(&bus.ram, DATA - 3)), st.gpr[2], "jit {jit_on}: store or add");
        // The physical bytes an identity map would have used stay untouched (the store went to the
        // scattered pages).
        assert_eq!(&bus.ram[DATA as usize + 0x1ffa..DATA as usize + 0x2002], &[0; 8], "jit {jit_on}");
        if jit_on {
            assert!(it.compiled_blocks() >= 1, "the loop was not translated");
        }
        results.push((st.gpr, bus.ram));
    }
    assert!(results[0] == results[1], "interp and jit differ on page-crossing accesses");
}

/// Loops and the budget: a random body of inlined (and some called) instructions closed by a
/// backward JMP or Jcc, run until a random instruction budget is spent. A translated block that
/// branches to itself loops in generated code, and blocks that end in a branch chain to the next
/// translated one without the interpreter's loop; both must stop at exactly the instruction the
/// interpreter stops at, in every mode, with the same state.
#[test]
fn loops_stop_exactly_at_the_budget() {
    let cases: u64 =
        std::env::var("FERRITE_JIT_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(1500) / 3;
    let mut r = Rng(0x5eed_0f1e_2026_1206);
    let mut interp = Interpreter::new();
    let mut jit = Interpreter::new();
    jit.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
    interp.trap_faults = true;
    jit.trap_faults = true;
    let mut budget_stops = 0;
    for mode in [TestMode::Long64, TestMode::Prot32, TestMode::Real] {
        let bits = bits_of(mode);
        for case in 0..cases {
            let mut code = gen_program(&mut r, bits);
            code.pop(); // the HLT
            // Back to the start: JMP rel8; or a Jcc, HLT when not taken; or a Jcc followed by a
            // second block that jumps back too.
            let back = |len: usize| (-((len + 2) as i64)) as u8;
            match r.below(3) {
                0 => {
                    let d = back(code.len());
                    code.extend([0xeb, d]);
                }
                1 => {
                    let d = back(code.len());
                    code.extend([0x70 + r.below(16) as u8, d, 0xf4]);
                }
                _ => {
                    let d = back(code.len());
                    code.extend([0x70 + r.below(16) as u8, d]);
                    let d = back(code.len());
                    code.extend([0x90, 0xeb, d.wrapping_sub(1)]);
                }
            }
            if code.len() > 120 {
                continue;
            }
            let mut gpr = [0u64; 16];
            for g in gpr.iter_mut() {
                *g = r.next();
            }
            for g in [3, 5, 6, 7] {
                gpr[g] = DATA + 0x800 + r.below(8);
            }
            let rflags = 0x2 | (r.next() & cpu::state::flags::ARITH);
            let seed = r.next();
            let until = 1 + r.below(400);
            let (a, ea, ma) = run(&mut interp, mode, &code, &gpr, rflags, seed, until);
            let (b, eb, mb) = run(&mut jit, mode, &code, &gpr, rflags, seed, until);
            if ea == Exit::BudgetSpent {
                budget_stops += 1;
            }
            let same = ma.ram == mb.ram
                && a.gpr == b.gpr
                && a.rflags == b.rflags
                && a.rip == b.rip
                && a.icount == b.icount
                && ea == eb;
            assert!(
                same,
                "{mode:?} case {case}: budget {until}, program {code:02x?}\n{}\ninterp: {ea:?} rip {:#x} icount {} rflags {:#x}\n  gpr {:x?}\njit:    {eb:?} rip {:#x} icount {} rflags {:#x}\n  gpr {:x?}",
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
        }
    }
    assert!(budget_stops > cases, "only {budget_stops} runs ended at the budget");
}

/// Single-block loops (no branch inside the body, so the JIT runs them as a self-loop in generated
/// code): a random body of inlined register and memory forms, often led by a flag reader (SETcc,
/// CMOVcc, ADC: the flags then live across the back edge), closed by `DEC ECX; JNZ` or a random
/// backward Jcc, with base registers walking the data pages (scattered physical pages for half the
/// seeds, so the per-instruction TLB cache of a loop must follow page changes), RFLAGS.AC sometimes
/// set (the inline probe must then leave every access to the handler), and a budget that stops the
/// loop at a random instruction, often after hundreds of iterations. State, memory, RIP, count and
/// the exit must equal the interpreter's.
#[test]
fn self_loops_keep_flags_and_memory_exact() {
    let cases: u64 =
        std::env::var("FERRITE_JIT_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(1500) / 3;
    let mut r = Rng(0x5eed_0f1e_2026_1207);
    let mut interp = Interpreter::new();
    let mut jit = Interpreter::new();
    jit.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
    interp.trap_faults = true;
    jit.trap_faults = true;
    let (mut budget_stops, mut long_runs) = (0, 0);
    for mode in [TestMode::Long64, TestMode::Prot32] {
        let bits = bits_of(mode);
        for case in 0..cases {
            let mut code = Vec::new();
            if r.below(3) == 0 {
                // A flag reader first: SETcc r8, CMOVcc r, r, or ADC r, r (called).
                match r.below(3) {
                    0 => code.extend([0x0f, 0x90 + r.below(16) as u8, 0xc0 | (r.byte() & 7)]),
                    1 => code.extend([0x0f, 0x40 + r.below(16) as u8, modrm_reg(&mut r)]),
                    _ => code.extend([0x11, modrm_reg(&mut r)]),
                }
            }
            let n = 1 + r.below(10);
            let mut k = 0;
            while k < n {
                let mut v = if bits == 64 && r.below(2) == 0 {
                    gen_mem_insn(&mut r)
                } else {
                    let filler = r.below(8) == 0;
                    gen_insn(&mut r, bits, filler)
                };
                let Some((len, m)) = decode_one(&v, bits) else { continue };
                // Control transfers would split the block.
                if matches!(
                    m,
                    Mnemonic::Hlt
                        | Mnemonic::In
                        | Mnemonic::Out
                        | Mnemonic::Call
                        | Mnemonic::Ret
                        | Mnemonic::Jmp
                ) {
                    continue;
                }
                v.truncate(len);
                code.extend(v);
                k += 1;
            }
            // Walk a base register through the data, up or down: ADD RSI/EDI, +-8 or +-0x48 each
            // iteration (down, an access crosses into the page an earlier iteration hit).
            if r.below(3) != 0 {
                if bits == 64 {
                    code.push(0x48);
                }
                let step = [8u8, 0x48, 0xf8, 0xb8][r.below(4) as usize];
                code.extend([0x83, 0xc0 | (6 + r.below(2) as u8), step]);
            }
            let back = |len: usize| (-((len + 2) as i64)) as u8;
            if r.below(2) == 0 {
                code.extend([0xff, 0xc9]);
                let d = back(code.len());
                code.extend([0x75, d]);
            } else {
                let d = back(code.len());
                code.extend([0x70 + r.below(16) as u8, d]);
            }
            code.push(0xf4);
            if code.len() > 120 {
                continue;
            }
            let mut gpr = [0u64; 16];
            for g in gpr.iter_mut() {
                *g = r.next();
            }
            gpr[1] = 1 + r.below(600);
            for g in [3, 5, 6, 7] {
                gpr[g] = DATA - 0x800 + r.below(0x1000);
            }
            let ac = if r.below(8) == 0 { cpu::state::flags::AC } else { 0 };
            let rflags = 0x2 | ac | (r.next() & cpu::state::flags::ARITH);
            let seed = r.next();
            let until = 1 + r.below(6000);
            let (a, ea, ma) = run(&mut interp, mode, &code, &gpr, rflags, seed, until);
            let (b, eb, mb) = run(&mut jit, mode, &code, &gpr, rflags, seed, until);
            if ea == Exit::BudgetSpent {
                budget_stops += 1;
            }
            if a.icount > 500 {
                long_runs += 1;
            }
            let same = ma.ram == mb.ram
                && a.gpr == b.gpr
                && a.rflags == b.rflags
                && a.rip == b.rip
                && a.icount == b.icount
                && ea == eb;
            assert!(
                same,
                "{mode:?} case {case}: budget {until}, program {code:02x?}\n{}\ninterp: {ea:?} rip {:#x} icount {} rflags {:#x}\n  gpr {:x?}\njit:    {eb:?} rip {:#x} icount {} rflags {:#x}\n  gpr {:x?}",
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
        }
    }
    assert!(budget_stops > cases / 2, "only {budget_stops} runs ended at the budget");
    assert!(long_runs > cases / 4, "only {long_runs} runs looped long");
}

/// A self-loop hands the flag operation pending at its back edge to the next iteration uncomputed
/// (`lower::Lower::back_edge`): the flags must still be exact wherever they are read. Each loop
/// stores through RSI at its top and ends in a flag writer (CMP, DEC, AND, SHL/ROL by an immediate,
/// or none) and a Jcc; in some runs RSI jumps to a non-canonical address in the second iteration,
/// so the store's slow path raises #GP with the first iteration's flags in RFLAGS; other runs stop
/// at the budget mid-loop, or leave the loop. Every variant, both vendors, against the interpreter.
#[test]
fn self_loops_carry_pending_flags_exactly() {
    let mut interp = Interpreter::new();
    let mut jit = Interpreter::new();
    jit.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
    interp.trap_faults = true;
    jit.trap_faults = true;
    // The flag writer before the branch, and the branch: (bytes, Jcc opcode).
    let tails: [(&[u8], u8); 8] = [
        (&[0x48, 0x39, 0xd6], 0x72),             // CMP RSI, RDX; JB
        (&[0xff, 0xc9], 0x75),                   // DEC ECX; JNZ
        (&[0x48, 0x21, 0xc3, 0xff, 0xc9], 0x75), // AND RBX, RAX; DEC ECX; JNZ (two pending)
        (&[0x48, 0x85, 0xc9], 0x75),             // TEST RCX, RCX; JNZ (RCX counted down below)
        (&[0x48, 0xc1, 0xe3, 0x03], 0x75),       // SHL RBX, 3; JNZ
        (&[0x48, 0xd1, 0xc3, 0xff, 0xc9], 0x75), // ROL RBX, 1; DEC ECX; JNZ
        (&[0x66, 0xc1, 0xeb, 0x02], 0x75),       // SHR BX, 2; JNZ
        (&[], 0x75),                             // no flag writer in the loop; JNZ
    ];
    let mut r = Rng(0x5eed_ca55_2026_1207);
    let mut faults = 0;
    for (t, (tail, jcc)) in tails.iter().enumerate() {
        for case in 0..60u64 {
            // MOV [RSI], RAX; ROL RAX, 1 (flags dead or carried); ADD RSI, RDI; LEA RCX, [RCX-1]
            // (for the TEST tail); the tail; Jcc top; HLT.
            let mut code = vec![0x48, 0x89, 0x06, 0x48, 0xd1, 0xc0, 0x48, 0x01, 0xfe];
            if t == 3 {
                code.extend([0x48, 0x8d, 0x49, 0xff]);
            }
            code.extend_from_slice(tail);
            let d = (-((code.len() + 2) as i64)) as u8;
            code.extend([*jcc, d, 0xf4]);
            let mut gpr = [0u64; 16];
            for g in gpr.iter_mut() {
                *g = r.next();
            }
            gpr[1] = 1 + r.below(60);
            gpr[3] = if r.below(2) == 0 { r.next() } else { 1 << r.below(64) };
            gpr[6] = DATA + 0x100;
            // RDI: a small step, or in a third of the runs one that makes the second iteration's
            // store non-canonical (#GP on its slow path, with the first iteration's flags carried).
            gpr[7] = if r.below(3) == 0 { 0x8000_0000_0000 } else { 8 };
            gpr[2] = gpr[6] + 8 * r.below(50);
            let rflags = 0x2 | (r.next() & cpu::state::flags::ARITH);
            // Intel and AMD quirks (bit 1 of the seed), never the scattered mapping (bit 0 set).
            let seed = (r.next() | 1) & !2 | (case & 1) << 1;
            let until = if r.below(3) == 0 { 1 + r.below(300) } else { 3000 };
            let (a, ea, ma) = run(&mut interp, TestMode::Long64, &code, &gpr, rflags, seed, until);
            let (b, eb, mb) = run(&mut jit, TestMode::Long64, &code, &gpr, rflags, seed, until);
            if matches!(ea, Exit::Trapped(_)) {
                faults += 1;
            }
            let same = ma.ram == mb.ram
                && a.gpr == b.gpr
                && a.rflags == b.rflags
                && a.rip == b.rip
                && a.icount == b.icount
                && ea == eb;
            assert!(
                same,
                "tail {t} case {case}: budget {until}\n{}\ninterp: {ea:?} rip {:#x} icount {} rflags {:#x}\n  gpr {:x?}\njit:    {eb:?} rip {:#x} icount {} rflags {:#x}\n  gpr {:x?}",
                disasm(&code, 64),
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
    }
    assert!(faults > 40, "only {faults} runs faulted inside the loop");
}

/// Direct links between translations never run stale code. Two blocks call each other in a loop
/// (`A: ADD RAX, 1; JMP B` and `B: ADD RBX, RAX; DEC ECX; JNZ A`, B on its own linear page), so
/// under the JIT each links to the other. Halfway, B changes under the links: its bytes rewritten
/// in place from outside the CPU and the page's code invalidated (as DMA does), or its linear page
/// remapped to another physical page holding other code and the TLB flushed (as a CR3 write does),
/// or everything flushed (a memory-map change). The JIT must end exactly where the interpreter
/// does, and the change must matter (a run without it ends elsewhere).
#[test]
fn links_never_run_stale_code() {
    const B: u64 = DATA + 0x1000;
    const ALT: u64 = 0x1ca000;
    let jmp = |from_next: u64, to: u64| ((to as i64 - from_next as i64) as i32).to_le_bytes();
    let block_b = |op: u8| {
        let mut v = vec![0x48, op, 0xc3, 0xff, 0xc9, 0x0f, 0x85];
        v.extend(jmp(B + 11, CODE));
        v.push(0xf4);
        v
    };
    for scenario in 0..4 {
        let mut results = Vec::new();
        for (use_jit, mutate) in [(false, true), (true, true), (false, false)] {
            let mut it = Interpreter::new();
            if use_jit {
                it.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
            }
            it.trap_faults = true;
            let mut bus = TestBus::default();
            let mut st = cpu_in(TestMode::Long64, &mut bus);
            let w = |bus: &mut TestBus, a: u64, v: u64| {
                bus.ram[a as usize..a as usize + 8].copy_from_slice(&v.to_le_bytes())
            };
            w(&mut bus, PD, SCATTER_PT | 3);
            for i in 0..512u64 {
                w(&mut bus, SCATTER_PT + i * 8, data_phys(i << 12, true) | 3);
            }
            let mut a = vec![0x48, 0x83, 0xc0, 0x01, 0xe9];
            a.extend(jmp(CODE + 9, B));
            bus.ram[CODE as usize..CODE as usize + a.len()].copy_from_slice(&a);
            let pb = data_phys(B, true) as usize;
            let b_add = block_b(0x01);
            bus.ram[pb..pb + b_add.len()].copy_from_slice(&b_add);
            let b_sub = block_b(0x29);
            bus.ram[ALT as usize..ALT as usize + b_sub.len()].copy_from_slice(&b_sub);
            st.gpr[0] = 0;
            st.gpr[1] = 1_000_000;
            st.gpr[3] = 0;
            st.rip = CODE;
            it.flush_all();
            let e1 = it.run(&mut st, &mut bus, 4_001);
            if mutate {
                match scenario {
                    0 => {
                        bus.ram[pb..pb + b_sub.len()].copy_from_slice(&b_sub);
                        it.invalidate_code_page(pb as u64 & !0xfff);
                    }
                    1 => {
                        w(&mut bus, SCATTER_PT + (B >> 12) * 8, ALT | 3);
                        it.mmu.tlb.flush(false);
                    }
                    2 => {
                        bus.ram[pb..pb + b_sub.len()].copy_from_slice(&b_sub);
                        it.flush_all();
                    }
                    _ => {
                        // Remapped, then remapped back: the old links become right again.
                        w(&mut bus, SCATTER_PT + (B >> 12) * 8, ALT | 3);
                        it.mmu.tlb.flush(false);
                        let _ = it.run(&mut st, &mut bus, 6_002);
                        w(&mut bus, SCATTER_PT + (B >> 12) * 8, pb as u64 | 3);
                        it.mmu.tlb.flush(false);
                    }
                }
            }
            let e2 = it.run(&mut st, &mut bus, 9_003);
            if use_jit {
                // The blocks did run linked (else this test shows nothing about links).
                let stats = it.backend_stats().expect("a backend");
                let made: u64 = stats
                    .split(" links made")
                    .next()
                    .and_then(|h| h.rsplit(' ').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                assert!(made >= 2, "scenario {scenario}: no links made ({stats})");
            }
            results.push((st.gpr, st.rip, st.icount, e1, e2));
        }
        assert_eq!(results[0], results[1], "scenario {scenario}: interp and jit differ");
        assert_ne!(results[0], results[2], "scenario {scenario}: the change did not matter");
    }
}

/// The per-loop TLB cache against accesses that cross a page: a self-loop loads or stores 2, 4 or 8
/// bytes at RSI and moves RSI by one byte per iteration, up across a page end or down across a
/// page start, on the scattered data pages (adjacent linear pages in unrelated physical pages), so
/// an access that crosses must be split by the slow path, never carried out through the page an
/// earlier iteration cached. Loads are summed into RBX; stores leave their bytes in memory.
#[test]
fn loop_tlb_cache_splits_page_crossing_accesses() {
    let mut interp = Interpreter::new();
    let mut jit = Interpreter::new();
    jit.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
    interp.trap_faults = true;
    jit.trap_faults = true;
    for size in [2u8, 4, 8] {
        for up in [true, false] {
            for store in [false, true] {
                let mut code = Vec::new();
                match size {
                    2 => code.push(0x66),
                    8 => code.push(0x48),
                    _ => {}
                }
                code.extend([if store { 0x89 } else { 0x8b }, 0x06]);
                code.extend([0x48, 0x01, 0xc3]); // ADD RBX, RAX
                code.extend([0x48, 0x83, 0xc6, if up { 0x01 } else { 0xff }]); // ADD RSI, +-1
                code.extend([0x48, 0x83, 0xc0, 0x05]); // ADD RAX, 5 (what stores write changes)
                code.extend([0xff, 0xc9]); // DEC ECX
                let back = (-((code.len() + 2) as i64)) as u8;
                code.extend([0x75, back, 0xf4]);
                let mut gpr = [0u64; 16];
                gpr[0] = 0x1122_3344_5566_7788;
                gpr[1] = 64;
                gpr[6] = if up { DATA + 0x1000 - 0x20 } else { DATA + 0x20 };
                // An even seed: the data pages are scattered.
                let seed = 0x5eed_0000 | ((size as u64) << 4) | ((up as u64) << 2) | ((store as u64) << 3);
                let (a, ea, ma) = run(&mut interp, TestMode::Long64, &code, &gpr, 0x2, seed, 10_000);
                let (b, eb, mb) = run(&mut jit, TestMode::Long64, &code, &gpr, 0x2, seed, 10_000);
                assert_eq!(
                    a.icount,
                    64 * 6 + 1,
                    "size {size} up {up} store {store}: the loop did not run whole"
                );
                let same =
                    ma.ram == mb.ram && a.gpr == b.gpr && a.rflags == b.rflags && a.rip == b.rip && ea == eb;
                assert!(
                    same,
                    "size {size} up {up} store {store}: interp and jit differ (memory {})\ninterp gpr {:x?}\njit    gpr {:x?}",
                    if ma.ram == mb.ram { "same" } else { "DIFFERS" },
                    a.gpr,
                    b.gpr
                );
            }
        }
    }
}

/// TZCNT/LZCNT/POPCNT and BZHI are inlined only where the CPU model has them: on `qemu64` (no
/// BMI1, BMI2, LZCNT or POPCNT) the decoder gives them the #UD handler, and a translated block must raise #UD at
/// the instruction exactly as the interpreter does, not run the inline form. On `max` they run.
#[test]
fn bit_counts_follow_the_cpu_model() {
    for (code, name, want) in [
        (&[0xf3, 0x0f, 0xbc, 0xc1, 0xf4][..], "tzcnt eax, ecx", 4),
        (&[0xf3, 0x0f, 0xbd, 0xc1, 0xf4][..], "lzcnt eax, ecx", 24),
        (&[0xf3, 0x0f, 0xb8, 0xc1, 0xf4][..], "popcnt eax, ecx", 4),
        // 0xf0 with bits 6 and up cleared (EDX = 6).
        (&[0xc4, 0xe2, 0x68, 0xf5, 0xc1, 0xf4][..], "bzhi eax, ecx, edx", 0x30),
    ] {
        for (model, has) in [(cpu::model::CpuModel::qemu64(), false), (cpu::model::CpuModel::max(), true)] {
            let mut it = Interpreter::new();
            it.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
            it.trap_faults = true;
            let mut bus = TestBus::default();
            let mut st = cpu_in(TestMode::Long64, &mut bus);
            st.model = model;
            bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
            st.gpr[0] = 0x1234;
            st.gpr[1] = 0x0f0;
            st.gpr[2] = 6;
            let exit = it.run(&mut st, &mut bus, 100);
            if has {
                assert_eq!(exit, Exit::Halted, "{name} on max");
                assert_eq!(st.gpr[0], want, "{name} on max");
            } else {
                assert!(
                    matches!(&exit, Exit::Trapped(f) if *f == cpu::Fault::ud()),
                    "{name} on qemu64: {exit:?}"
                );
                assert_eq!((st.rip, st.icount, st.gpr[0]), (CODE, 0, 0x1234), "{name} on qemu64");
            }
        }
    }
}
