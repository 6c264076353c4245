//! The JIT's SSE forms (`jit/src/lower_sse.rs`) against the interpreter: random straight-line
//! programs in 64-bit code made of the inlined SSE encodings (moves, logic, the integer and FP forms
//! computed by `lower_sse::sse_helper`), with register, memory (RIP-relative, base + disp8, FS/GS
//! overrides; aligned, misaligned and page-crossing addresses) and general-register operands,
//! interleaved with integer instructions and handler-called SSE instructions, from random XMM
//! values (NaNs, infinities, denormals, signed zeros), random MXCSR (rounding, DAZ, FTZ, sometimes
//! unmasked exceptions), and sometimes CR0.TS set or CR4.OSFXSR clear, under both vendors' quirks.
//! The translated run (threshold 1) must end in exactly the interpreter's state: GPRs, RFLAGS, RIP,
//! the retired count, XMM registers, YMM upper halves, MXCSR, memory and the exit (faults included:
//! a misaligned MOVAPS's #GP, #XM/#UD of an unmasked exception, #NM, #UD, #PF).
//!
//! `FERRITE_JIT_DIFF_CASES=N` runs N programs (default 3000).

use cpu::Interpreter;
use cpu::interp::Exit;
use cpu::state::{Quirks, cr0, cr4};
use cpu::testutil::{CODE, DATA, STACK, TestBus, TestMode, cpu_in};
use iced_x86::{Decoder, DecoderOptions};

mod common;
use common::{Rng, tlb_tags};

/// Operand shapes of the generated encodings.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// xmm, xmm/m.
    Xx,
    /// xmm/m, xmm (a store; mod = 11 is the register form).
    Mx,
    /// xmm, m only.
    XmOnly,
    /// m, xmm only.
    MxOnly,
    /// xmm, r/m (general register or memory source).
    Xg,
    /// r/m, xmm (general register or memory destination).
    Gx,
    /// r, xmm/m (general register destination).
    Rx,
    /// r, xmm only.
    RxOnly,
    /// xmm, xmm/m, imm8.
    Xxi,
    /// xmm, imm8 with /digit in ModRM.reg.
    Xi(u8),
}

/// (mandatory prefix, opcode bytes after 0F, operands).
const FORMS: &[(Option<u8>, &[u8], Kind)] = {
    use Kind::*;
    &[
        // Moves.
        (None, &[0x28], Xx),
        (None, &[0x29], Mx),
        (None, &[0x10], Xx),
        (None, &[0x11], Mx),
        (Some(0x66), &[0x28], Xx),
        (Some(0x66), &[0x29], Mx),
        (Some(0x66), &[0x10], Xx),
        (Some(0x66), &[0x11], Mx),
        (Some(0x66), &[0x6f], Xx),
        (Some(0x66), &[0x7f], Mx),
        (Some(0xf3), &[0x6f], Xx),
        (Some(0xf3), &[0x7f], Mx),
        (Some(0xf2), &[0xf0], XmOnly),
        (Some(0x66), &[0x6e], Xg),
        (Some(0x66), &[0x7e], Gx),
        (Some(0xf3), &[0x7e], Xx),
        (Some(0x66), &[0xd6], Mx),
        (Some(0xf2), &[0x10], Xx),
        (Some(0xf2), &[0x11], Mx),
        (Some(0xf3), &[0x10], Xx),
        (Some(0xf3), &[0x11], Mx),
        (Some(0x66), &[0x12], XmOnly),
        (Some(0x66), &[0x13], MxOnly),
        (None, &[0x12], Xx),
        (None, &[0x13], MxOnly),
        (Some(0x66), &[0x16], XmOnly),
        (Some(0x66), &[0x17], MxOnly),
        (None, &[0x16], Xx),
        (None, &[0x17], MxOnly),
        (Some(0x66), &[0x14], Xx),
        (Some(0x66), &[0x15], Xx),
        (Some(0x66), &[0x6c], Xx),
        (Some(0x66), &[0x6d], Xx),
        (Some(0xf2), &[0x12], Xx),
        // Logic.
        (Some(0x66), &[0xef], Xx),
        (Some(0x66), &[0xdb], Xx),
        (Some(0x66), &[0xdf], Xx),
        (Some(0x66), &[0xeb], Xx),
        (None, &[0x57], Xx),
        (Some(0x66), &[0x57], Xx),
        (None, &[0x54], Xx),
        (Some(0x66), &[0x54], Xx),
        (None, &[0x55], Xx),
        (Some(0x66), &[0x55], Xx),
        (None, &[0x56], Xx),
        (Some(0x66), &[0x56], Xx),
        // Integer SIMD (the helper).
        (Some(0x66), &[0xfc], Xx),
        (Some(0x66), &[0xfd], Xx),
        (Some(0x66), &[0xfe], Xx),
        (Some(0x66), &[0xd4], Xx),
        (Some(0x66), &[0xf8], Xx),
        (Some(0x66), &[0xf9], Xx),
        (Some(0x66), &[0xfa], Xx),
        (Some(0x66), &[0xfb], Xx),
        (Some(0x66), &[0x74], Xx),
        (Some(0x66), &[0x75], Xx),
        (Some(0x66), &[0x76], Xx),
        (Some(0x66), &[0xda], Xx),
        (Some(0x66), &[0x60], Xx),
        (Some(0x66), &[0x61], Xx),
        (Some(0x66), &[0x62], Xx),
        (Some(0x66), &[0x70], Xxi),
        (Some(0x66), &[0x73], Xi(7)),
        (Some(0x66), &[0x73], Xi(3)),
        (Some(0x66), &[0xd7], RxOnly),
        (None, &[0x50], RxOnly),
        (Some(0x66), &[0x50], RxOnly),
        (Some(0x66), &[0x38, 0x00], Xx),
        // More integer forms in vector IR (`lower_vec`): saturating add/sub, compares, min/max,
        // averages, multiplies, the high unpacks, word shuffles, shifts by an imm8 (counts at and
        // above the lane width included), and the SSE4.1/4.2 ones of map 0F38.
        (Some(0x66), &[0xdc], Xx),
        (Some(0x66), &[0xdd], Xx),
        (Some(0x66), &[0xd8], Xx),
        (Some(0x66), &[0xd9], Xx),
        (Some(0x66), &[0xec], Xx),
        (Some(0x66), &[0xed], Xx),
        (Some(0x66), &[0xe8], Xx),
        (Some(0x66), &[0xe9], Xx),
        (Some(0x66), &[0x64], Xx),
        (Some(0x66), &[0x65], Xx),
        (Some(0x66), &[0x66], Xx),
        (Some(0x66), &[0xde], Xx),
        (Some(0x66), &[0xea], Xx),
        (Some(0x66), &[0xee], Xx),
        (Some(0x66), &[0xe0], Xx),
        (Some(0x66), &[0xe3], Xx),
        (Some(0x66), &[0xd5], Xx),
        (Some(0x66), &[0x68], Xx),
        (Some(0x66), &[0x69], Xx),
        (Some(0x66), &[0x6a], Xx),
        (Some(0xf2), &[0x70], Xxi),
        (Some(0xf3), &[0x70], Xxi),
        (Some(0x66), &[0x71], Xi(2)),
        (Some(0x66), &[0x71], Xi(4)),
        (Some(0x66), &[0x71], Xi(6)),
        (Some(0x66), &[0x72], Xi(2)),
        (Some(0x66), &[0x72], Xi(4)),
        (Some(0x66), &[0x72], Xi(6)),
        (Some(0x66), &[0x73], Xi(2)),
        (Some(0x66), &[0x73], Xi(6)),
        (Some(0x66), &[0x38, 0x38], Xx),
        (Some(0x66), &[0x38, 0x39], Xx),
        (Some(0x66), &[0x38, 0x3a], Xx),
        (Some(0x66), &[0x38, 0x3b], Xx),
        (Some(0x66), &[0x38, 0x3c], Xx),
        (Some(0x66), &[0x38, 0x3d], Xx),
        (Some(0x66), &[0x38, 0x3e], Xx),
        (Some(0x66), &[0x38, 0x3f], Xx),
        (Some(0x66), &[0x38, 0x40], Xx),
        (Some(0x66), &[0x38, 0x29], Xx),
        (Some(0x66), &[0x38, 0x37], Xx),
        // Floating point (the helper).
        (Some(0xf2), &[0x58], Xx),
        (Some(0xf2), &[0x5c], Xx),
        (Some(0xf2), &[0x59], Xx),
        (Some(0xf2), &[0x5e], Xx),
        (Some(0x66), &[0x58], Xx),
        (Some(0x66), &[0x5c], Xx),
        (Some(0x66), &[0x59], Xx),
        (Some(0x66), &[0x5e], Xx),
        (Some(0xf3), &[0x58], Xx),
        (Some(0xf3), &[0x59], Xx),
        (None, &[0x58], Xx),
        (None, &[0x59], Xx),
        (Some(0xf2), &[0x51], Xx),
        (Some(0xf2), &[0x5d], Xx),
        (Some(0xf2), &[0x5f], Xx),
        (Some(0x66), &[0x2e], Xx),
        (Some(0x66), &[0x2f], Xx),
        (None, &[0x2e], Xx),
        (Some(0xf2), &[0x2a], Xg),
        (Some(0xf3), &[0x2a], Xg),
        (Some(0xf2), &[0x2c], Rx),
        (Some(0xf2), &[0x2d], Rx),
        (Some(0xf3), &[0x2c], Rx),
        (Some(0xf2), &[0x5a], Xx),
        (Some(0xf3), &[0x5a], Xx),
        (Some(0x66), &[0xc2], Xxi),
        (Some(0xf2), &[0xc2], Xxi),
        (None, &[0x5b], Xx),
    ]
};

/// A memory ModRM (and SIB/displacement) with `reg` in ModRM.reg: RIP-relative into the data, or
/// [base + disp8] / [base] with RBX, RBP, RSI or RDI (which point into the data pages).
fn mem_modrm(r: &mut Rng, reg: u8, v: &mut Vec<u8>) {
    let reg = reg & 7;
    match r.below(6) {
        0 => {
            v.push((reg << 3) | 5);
            // CODE + ~len .. lands at DATA - CODE + small: aim at the data pages.
            let d = (DATA - CODE) as i32 + r.below(0x2000) as i32;
            v.extend(d.to_le_bytes());
        }
        1..=3 => {
            let base = [3u8, 5, 6, 7][r.below(4) as usize];
            v.push(0x40 | (reg << 3) | base);
            v.push([0u8, 8, 16, 0xf8, 0xf0, r.byte()][r.below(6) as usize]);
        }
        _ => {
            let base = [3u8, 6, 7][r.below(3) as usize];
            v.push((reg << 3) | base);
        }
    }
}

/// One SSE instruction of `FORMS`, as bytes.
fn gen_sse(r: &mut Rng) -> Vec<u8> {
    let (pfx, op, kind) = FORMS[r.below(FORMS.len() as u64) as usize];
    let mut v = Vec::new();
    if r.below(10) == 0 {
        v.push([0x64, 0x65][r.below(2) as usize]);
    }
    if let Some(p) = pfx {
        v.push(p);
    }
    let use_mem = match kind {
        Kind::XmOnly | Kind::MxOnly => true,
        Kind::RxOnly | Kind::Xi(_) => false,
        _ => r.below(2) == 0,
    };
    // REX: W at random, R at random (xmm8-15 / r8-r15), B only for register operands (so a memory
    // base stays one of ours).
    let mut rex = 0x40 | (r.byte() & 0x0c);
    if !use_mem {
        rex |= r.byte() & 1;
    }
    if rex != 0x40 || r.below(4) == 0 {
        v.push(rex);
    }
    v.push(0x0f);
    v.extend_from_slice(op);
    let reg = match kind {
        Kind::Xi(d) => d,
        _ => r.byte() & 7,
    };
    if use_mem {
        mem_modrm(r, reg, &mut v);
    } else {
        v.push(0xc0 | (reg << 3) | (r.byte() & 7));
    }
    if matches!(kind, Kind::Xxi | Kind::Xi(_)) {
        v.push(if r.below(2) == 0 { r.below(8) as u8 } else { r.byte() });
    }
    v
}

/// Other instructions between the SSE ones: integer ALU (inlined), and SSE forms that keep their
/// handler (PINSRW, SHUFPS, STMXCSR), so handler calls and inline code mix.
fn gen_filler(r: &mut Rng) -> Vec<u8> {
    match r.below(6) {
        0 => vec![0x48, 0x01, 0xc0 | (r.byte() & 0x3f)],
        1 => vec![0x48, 0x83, 0xc0 | (r.byte() & 0x3f), r.byte()],
        2 => vec![0x66, 0x0f, 0xc4, 0xc0 | (r.byte() & 0x3f), r.byte() & 7],
        3 => vec![0x0f, 0xc6, 0xc0 | (r.byte() & 0x3f), r.byte()],
        // STMXCSR [rsp - 8]
        4 => vec![0x0f, 0xae, 0x5c, 0x24, 0xf8],
        // A conditional branch over nothing: ends the block (and reads the flags).
        _ => vec![0x70 + r.below(16) as u8, 0],
    }
}

fn gen_program(r: &mut Rng) -> Vec<u8> {
    let n = 1 + r.below(30) as usize;
    let mut out = Vec::new();
    let mut k = 0;
    while k < n {
        let v = if r.below(4) == 0 { gen_filler(r) } else { gen_sse(r) };
        let mut d = Decoder::with_ip(64, &v, 0, DecoderOptions::NONE);
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

/// Interesting 64-bit lanes: doubles (zeros, ones, NaNs, infinities, denormals, huge), pairs of
/// singles, small integers and random bits.
fn lane(r: &mut Rng) -> u64 {
    const D: [u64; 19] = [
        // Tiny normals (the smallest, exponent 2) and doubles whose products land at the normal
        // range's end, or below it, or just above (the inline FP forms' underflow edge).
        0x0010_0000_0000_0000,
        0x8020_0000_0000_0001,
        0x2000_0000_0000_0001,
        0x1ff0_0000_0000_0000,
        0x2010_0000_0000_0000,
        0,
        0x8000_0000_0000_0000,
        0x3ff0_0000_0000_0000,
        0xbff8_0000_0000_0000,
        0x7ff0_0000_0000_0000,
        0xfff0_0000_0000_0000,
        0x7ff8_0000_0000_0000,
        0x7ff4_0000_0000_0001,
        0x0000_0000_0000_0001,
        0x000f_ffff_ffff_ffff,
        0x7fef_ffff_ffff_ffff,
        0x4340_0000_0000_0000,
        0x3f80_0000_bf80_0000,
        0x0000_0001_7f80_0000,
    ];
    match r.below(5) {
        0 | 1 => D[r.below(D.len() as u64) as usize],
        2 => r.below(300),
        // A double of moderate size, so arithmetic gives ordinary inexact results.
        3 => (0x3f0u64 + r.below(0x20)) << 52 | (r.next() >> 12),
        // Near the ends of the exponent range, with either sign.
        4 if r.below(2) == 0 => {
            let e = [r.below(0x30), 0x7fe - r.below(0x30), 0x1f8 + r.below(0x10), 0x5f8 + r.below(0x10)];
            e[r.below(4) as usize] << 52 | (r.next() >> 12) | (r.next() & 1) << 63
        }
        _ => r.next(),
    }
}

struct Setup {
    gpr: [u64; 16],
    xmm: [u128; 16],
    ymm_hi: [u128; 16],
    mxcsr: u32,
    cr0: u64,
    cr4: u64,
    xcr0: u64,
    seed: u64,
}

fn run(it: &mut Interpreter, code: &[u8], s: &Setup, until: u64) -> (cpu::CpuState, Exit, TestBus) {
    let mut bus = TestBus::default();
    let mut st = cpu_in(TestMode::Long64, &mut bus);
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    st.gpr = s.gpr;
    st.gpr[4] = STACK;
    st.rflags = 0x2 | (s.seed & cpu::state::flags::ARITH);
    st.quirks = if s.seed & 2 == 0 { Quirks::Intel } else { Quirks::Amd };
    st.fpu.xmm = s.xmm;
    st.vec.ymm_hi = s.ymm_hi;
    // Bits 511:256 non-zero (from the seed, so the other fields' random sequence stays as it was):
    // a VEX write must zero them.
    let mut z = Rng(s.seed ^ 0x2d7f_3c11_9e05_a4b3 | 1);
    for q in st.vec.zmm_hi256.iter_mut() {
        *q = [z.next() as u128 | (z.next() as u128) << 64, z.next() as u128];
    }
    st.fpu.mxcsr = s.mxcsr;
    st.cr0 |= s.cr0;
    st.cr4 |= s.cr4;
    st.xcr0 = s.xcr0;
    let mut x = Rng(s.seed | 1);
    for a in DATA - 0x1000..DATA + 0x3000 {
        bus.ram[a as usize] = x.byte();
    }
    st.seg[4].base = DATA + 0x800;
    st.seg[5].base = DATA + 0x1ff8;
    it.flush_all();
    let exit = it.run(&mut st, &mut bus, until);
    (st, exit, bus)
}

fn disasm(code: &[u8]) -> String {
    let mut d = Decoder::with_ip(64, code, CODE, DecoderOptions::NONE);
    d.iter().map(|i| format!("  {:#x}: {i}", i.ip())).collect::<Vec<_>>().join("\n")
}

/// Runs `code` from `s` under both engines and requires the same end.
fn compare(interp: &mut Interpreter, jit: &mut Interpreter, code: &[u8], s: &Setup, until: u64, what: &str) {
    let (a, ea, ma) = run(interp, code, s, until);
    let (b, eb, mb) = run(jit, code, s, until);
    assert_eq!(tlb_tags(interp), tlb_tags(jit), "{what}: the TLB\n{}", disasm(code));
    let same_mem = ma.ram == mb.ram;
    let same = same_mem
        && a.gpr == b.gpr
        && a.rflags == b.rflags
        && a.rip == b.rip
        && a.icount == b.icount
        && a.fpu.xmm == b.fpu.xmm
        && a.fpu.mxcsr == b.fpu.mxcsr
        && a.vec.ymm_hi == b.vec.ymm_hi
        && a.vec.zmm_hi256 == b.vec.zmm_hi256
        && ea == eb;
    assert!(
        same,
        "{what}: program {code:02x?} (memory {}), mxcsr {:#x} cr0 {:#x} cr4 {:#x}\n{}\ninterp: {ea:?} rip {:#x} icount {} rflags {:#x} mxcsr {:#x}\n  gpr {:x?}\n  xmm {:x?}\njit:    {eb:?} rip {:#x} icount {} rflags {:#x} mxcsr {:#x}\n  gpr {:x?}\n  xmm {:x?}",
        if same_mem { "same" } else { "DIFFERS" },
        s.mxcsr,
        s.cr0,
        s.cr4,
        disasm(code),
        a.rip,
        a.icount,
        a.rflags,
        a.fpu.mxcsr,
        a.gpr,
        a.fpu.xmm,
        b.rip,
        b.icount,
        b.rflags,
        b.fpu.mxcsr,
        b.gpr,
        b.fpu.xmm,
    );
}

fn engines() -> (Interpreter, Interpreter) {
    let mut interp = Interpreter::new();
    let mut jit = Interpreter::new();
    jit.set_backend(Box::new(jit::Jit::new().expect("jit")), 1);
    interp.trap_faults = true;
    jit.trap_faults = true;
    (interp, jit)
}

fn random_setup(r: &mut Rng) -> Setup {
    let mut gpr = [0u64; 16];
    for g in gpr.iter_mut() {
        *g = match r.below(3) {
            0 => lane(r),
            1 => r.below(1000).wrapping_sub(500),
            _ => r.next(),
        };
    }
    // Memory bases into the data pages: aligned, misaligned, and near a page end.
    for g in [3, 5, 6, 7] {
        gpr[g] = DATA + [0x10, 0x800, 0xff8, 0xff0, 0x1ffc, 0x2000][r.below(6) as usize] + r.below(4) * 8;
        if r.below(4) == 0 {
            gpr[g] += r.below(16);
        }
    }
    let mut xmm = [0u128; 16];
    let mut ymm_hi = [0u128; 16];
    for k in 0..16 {
        xmm[k] = lane(r) as u128 | (lane(r) as u128) << 64;
        ymm_hi[k] = r.next() as u128 | (r.next() as u128) << 64;
    }
    let mut mxcsr = 0x1f80;
    // PE already set (every inexact result has set it in a running program): the inline FP
    // forms' fast path; sometimes with DAZ/FTZ or another rounding, which must not matter or must
    // take the helper.
    match r.below(12) {
        8 | 9 => mxcsr |= 0x20,
        10 => mxcsr |= 0x20 | (r.next() as u32 & 0xe05f),
        0 => mxcsr |= (r.below(4) as u32) << 13,
        1 => mxcsr |= (1 << 6) | (1 << 15),
        2 => mxcsr = (mxcsr | (r.next() as u32 & 0xe040)) & !(1 << (7 + r.below(6))),
        3 => mxcsr |= r.next() as u32 & 0x3f,
        _ => {}
    }
    let (mut c0, mut c4) = (0, cr4::OSFXSR | cr4::OSXMMEXCPT);
    match r.below(24) {
        0 => c0 |= cr0::TS,
        1 => c0 |= cr0::EM,
        2 => c4 &= !cr4::OSFXSR,
        3 => c4 &= !cr4::OSXMMEXCPT,
        _ => {}
    }
    // AVX state enabled (CR4.OSXSAVE, XCR0 = x87 | SSE | AVX), except now and then.
    let (xcr0, c4) = match r.below(16) {
        0 => (3, c4 | cr4::OSXSAVE),
        1 => (7, c4),
        _ => (7, c4 | cr4::OSXSAVE),
    };
    Setup { gpr, xmm, ymm_hi, mxcsr, cr0: c0, cr4: c4, xcr0, seed: r.next() }
}

#[test]
fn jit_matches_interpreter_on_sse_forms() {
    let cases: u64 =
        std::env::var("FERRITE_JIT_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    let mut r = Rng(0x55e0_0f1e_2026_1207);
    let (mut interp, mut jit) = engines();
    let mut seen = std::collections::BTreeSet::new();
    for case in 0..cases {
        let code = gen_program(&mut r);
        let s = random_setup(&mut r);
        compare(&mut interp, &mut jit, &code, &s, 1_000, &format!("case {case}"));
        let mut d = Decoder::with_ip(64, &code, 0, DecoderOptions::NONE);
        for i in d.iter() {
            seen.insert(format!("{:?}", i.mnemonic()));
        }
    }
    // The forms ran inline (not only through their handler).
    assert!(jit.inline_retired() > cases, "only {} instructions retired inline", jit.inline_retired());
    for m in [
        "Movaps",
        "Movups",
        "Movapd",
        "Movupd",
        "Movdqa",
        "Movdqu",
        "Lddqu",
        "Movd",
        "Movq",
        "Movsd",
        "Movss",
        "Movlpd",
        "Movhpd",
        "Movlps",
        "Movhps",
        "Movhlps",
        "Movlhps",
        "Unpcklpd",
        "Unpckhpd",
        "Punpcklqdq",
        "Movddup",
        "Pxor",
        "Pand",
        "Pandn",
        "Por",
        "Xorps",
        "Andnpd",
        "Paddb",
        "Paddq",
        "Psubd",
        "Pcmpeqb",
        "Pminub",
        "Pshufd",
        "Pslldq",
        "Psrldq",
        "Pmovmskb",
        "Movmskpd",
        "Addsd",
        "Mulpd",
        "Divsd",
        "Sqrtsd",
        "Ucomisd",
        "Comisd",
        "Cvtsi2sd",
        "Cvttsd2si",
        "Cvtsd2si",
        "Cmppd",
        "Cmpsd",
        "Paddusw",
        "Psubsb",
        "Pcmpgtw",
        "Pmaxsw",
        "Pavgw",
        "Pmullw",
        "Punpckhdq",
        "Pshufhw",
        "Psllw",
        "Psrad",
        "Psrlq",
        "Pminud",
        "Pmaxsb",
        "Pmulld",
        "Pcmpeqq",
        "Pcmpgtq",
    ] {
        assert!(seen.contains(m), "the generator never produced {m}");
    }
}

/// VEX forms (C5 prefix): (pp, opcode, operands) with `Kind::Xx` = xmm/ymm, vvvv, r/m; `Kind::Xxi`
/// = 2 operands and an imm8; `Kind::Mx` = a store; `Kind::Rx` = r32, ymm (VPMOVMSKB);
/// `Kind::XmOnly` = a 2-operand load/move.
const VEX_FORMS: &[(u8, u8, Kind)] = {
    use Kind::*;
    &[
        (1, 0x74, Xx),
        (1, 0x75, Xx),
        (1, 0x76, Xx),
        (1, 0xda, Xx),
        (1, 0xeb, Xx),
        (1, 0xdb, Xx),
        (1, 0xdf, Xx),
        (1, 0xef, Xx),
        (1, 0xfc, Xx),
        (1, 0xf8, Xx),
        (1, 0xfe, Xx),
        (1, 0x60, Xx),
        (1, 0x70, Xxi),
        (2, 0x70, Xxi),
        (3, 0x70, Xxi),
        (1, 0xdc, Xx),
        (1, 0xdd, Xx),
        (1, 0xd8, Xx),
        (1, 0xd9, Xx),
        (1, 0xec, Xx),
        (1, 0xed, Xx),
        (1, 0xe8, Xx),
        (1, 0xe9, Xx),
        (1, 0x64, Xx),
        (1, 0x65, Xx),
        (1, 0x66, Xx),
        (1, 0xde, Xx),
        (1, 0xea, Xx),
        (1, 0xee, Xx),
        (1, 0xe0, Xx),
        (1, 0xe3, Xx),
        (1, 0xd5, Xx),
        (1, 0x61, Xx),
        (1, 0x62, Xx),
        (1, 0x6c, Xx),
        (1, 0x68, Xx),
        (1, 0x69, Xx),
        (1, 0x6a, Xx),
        (1, 0x6d, Xx),
        (1, 0xd4, Xx),
        (1, 0xfb, Xx),
        (1, 0xfd, Xx),
        (1, 0xf9, Xx),
        (1, 0xfa, Xx),
        (0, 0x54, Xx),
        (1, 0x57, Xx),
        (0, 0x14, Xx),
        (1, 0x15, Xx),
        (1, 0xd7, RxOnly),
        (2, 0x6f, XmOnly),
        (2, 0x7f, Mx),
        (1, 0x6f, XmOnly),
        (1, 0x7f, Mx),
        (0, 0x10, XmOnly),
        (0, 0x11, Mx),
        (0, 0x28, XmOnly),
        (0, 0x29, Mx),
        // VMOVNTDQ m, xmm/ymm (the register form is invalid and skipped).
        (1, 0xe7, MxOnly),
        (0, 0x77, Gx),
    ]
};

/// One VEX instruction of `VEX_FORMS` (or, now and then, a VPTEST, which keeps its handler).
fn gen_vex(r: &mut Rng) -> Vec<u8> {
    let (pp, op, kind) = VEX_FORMS[r.below(VEX_FORMS.len() as u64) as usize];
    if kind == Kind::Gx {
        // VZEROUPPER.
        return vec![0xc5, 0xf8, 0x77];
    }
    if r.below(12) == 0 {
        // VPTEST ymm/xmm, ymm/xmm (C4 E2 7D/79 17 /r).
        return vec![0xc4, 0xe2, 0x79 | (r.byte() & 4), 0x17, 0xc0 | (r.byte() & 0x3f)];
    }
    let use_mem = match kind {
        Kind::RxOnly => false,
        Kind::Mx => r.below(3) != 0,
        _ => r.below(2) == 0,
    };
    // vvvv: a register for the three-operand forms, 1111 (unused) for the others.
    let vvvv = if kind == Kind::Xx { r.below(16) as u8 } else { 0 };
    let nr = if r.below(2) == 0 { 0x80 } else { 0 };
    let l = (r.byte() & 1) << 2;
    let mut v = vec![0xc5, nr | ((!vvvv & 15) << 3) | l | pp, op];
    let reg = r.byte() & 7;
    if use_mem {
        mem_modrm(r, reg, &mut v);
    } else {
        v.push(0xc0 | (reg << 3) | (r.byte() & 7));
    }
    if kind == Kind::Xxi {
        v.push(r.byte());
    }
    if r.below(10) == 0 {
        v.insert(0, [0x64, 0x65][r.below(2) as usize]);
    }
    v
}

/// One VEX integer form of map 0F38 in the three-byte (C4) form, which also reaches registers
/// 8-15: VPSHUFB, VPMINSB/SD/UW/UD, VPMAXSB/SD/UW/UD, VPMULLD, VPCMPEQQ, VPCMPGTQ (66 0F38 /r,
/// three vector operands), XMM or YMM, register or memory source.
fn gen_vex38(r: &mut Rng) -> Vec<u8> {
    const OPS: [u8; 12] = [0x00, 0x38, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, 0x3f, 0x40, 0x29, 0x37];
    let op = OPS[r.below(OPS.len() as u64) as usize];
    let use_mem = r.below(3) == 0;
    let l = (r.byte() & 1) << 2;
    let vvvv = r.byte() & 15;
    let rbar = r.byte() & 0x80;
    let bbar = if use_mem { 0x20 } else { r.byte() & 0x20 };
    let mut v = vec![0xc4, rbar | 0x40 | bbar | 2, ((!vvvv & 15) << 3) | l | 1, op];
    let reg = r.byte() & 7;
    if use_mem {
        mem_modrm(r, reg, &mut v);
    } else {
        v.push(0xc0 | (reg << 3) | (r.byte() & 7));
    }
    v
}

/// One VEX move of `lower_sse::inline_vex_move` in the three-byte (C4) form, which reaches map
/// 0F38, VEX.W and registers 8-15: VMOVD/VMOVQ xmm, r/m (66 0F 6E, W0/W1), VMOVD/VMOVQ r/m, xmm
/// (66 0F 7E), VMOVQ xmm, xmm/m64 (F3 0F 7E), VMOVQ xmm/m64, xmm (66 0F D6) and
/// VPBROADCASTB/W/D/Q xmm/ymm, xmm/m (66 0F38 78/79/58/59); VEX.L now and then set where the form
/// has none (#UD, or another instruction, through the handler) and vvvv now and then not 1111.
fn gen_vex_move(r: &mut Rng) -> Vec<u8> {
    // (map, pp, opcode, L allowed)
    const MOVES: [(u8, u8, u8, bool); 8] = [
        (1, 1, 0x6e, false),
        (1, 1, 0x7e, false),
        (1, 2, 0x7e, false),
        (1, 1, 0xd6, false),
        (2, 1, 0x78, true),
        (2, 1, 0x79, true),
        (2, 1, 0x58, true),
        (2, 1, 0x59, true),
    ];
    let (map, pp, op, has_l) = MOVES[r.below(MOVES.len() as u64) as usize];
    let use_mem = r.below(3) == 0;
    let w = r.byte() & 0x80;
    let l = if has_l || r.below(16) == 0 { (r.byte() & 1) << 2 } else { 0 };
    let vvvv = if r.below(16) == 0 { r.byte() & 15 } else { 0 };
    // R̄ at random; B̄ at random for a register operand (xmm8-15, r8-r15); X̄ and, with memory, B̄
    // set (the base stays one of ours).
    let rbar = r.byte() & 0x80;
    let bbar = if use_mem { 0x20 } else { r.byte() & 0x20 };
    let mut v = vec![0xc4, rbar | 0x40 | bbar | map, w | ((!vvvv & 15) << 3) | l | pp, op];
    let reg = r.byte() & 7;
    if use_mem {
        mem_modrm(r, reg, &mut v);
    } else {
        v.push(0xc0 | (reg << 3) | (r.byte() & 7));
    }
    if r.below(10) == 0 {
        v.insert(0, [0x64, 0x65][r.below(2) as usize]);
    }
    v
}

#[test]
fn jit_matches_interpreter_on_vex_moves() {
    let cases: u64 =
        std::env::var("FERRITE_JIT_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    let mut r = Rng(0x6e7e_d678_2026_1207);
    let (mut interp, mut jit) = engines();
    let mut seen = std::collections::BTreeSet::new();
    for case in 0..cases {
        let n = 1 + r.below(16) as usize;
        let mut code = Vec::new();
        let mut k = 0;
        while k < n {
            let v = match r.below(8) {
                0 => gen_filler(&mut r),
                1 => gen_vex(&mut r),
                _ => gen_vex_move(&mut r),
            };
            let mut d = Decoder::with_ip(64, &v, 0, DecoderOptions::NONE);
            let i = d.decode();
            if i.is_invalid() || i.len() != v.len() {
                continue;
            }
            code.extend(v);
            k += 1;
        }
        code.push(0xf4);
        let s = random_setup(&mut r);
        compare(&mut interp, &mut jit, &code, &s, 1_000, &format!("vex move case {case}"));
        let mut d = Decoder::with_ip(64, &code, 0, DecoderOptions::NONE);
        for i in d.iter() {
            let mem = (0..i.op_count()).any(|n| i.op_kind(n) == iced_x86::OpKind::Memory);
            seen.insert(format!("{:?}{}", i.code(), if mem { " mem" } else { "" }));
        }
    }
    assert!(jit.inline_retired() > cases, "only {} instructions retired inline", jit.inline_retired());
    for c in [
        "VEX_Vmovd_xmm_rm32",
        "VEX_Vmovd_xmm_rm32 mem",
        "VEX_Vmovq_xmm_rm64",
        "VEX_Vmovd_rm32_xmm",
        "VEX_Vmovd_rm32_xmm mem",
        "VEX_Vmovq_rm64_xmm",
        "VEX_Vmovq_xmm_xmmm64",
        "VEX_Vmovq_xmm_xmmm64 mem",
        "VEX_Vmovq_xmmm64_xmm",
        "VEX_Vmovq_xmmm64_xmm mem",
        "VEX_Vpbroadcastb_xmm_xmmm8",
        "VEX_Vpbroadcastb_ymm_xmmm8",
        "VEX_Vpbroadcastb_ymm_xmmm8 mem",
        "VEX_Vpbroadcastw_ymm_xmmm16",
        "VEX_Vpbroadcastd_xmm_xmmm32 mem",
        "VEX_Vpbroadcastq_ymm_xmmm64",
    ] {
        assert!(seen.contains(c), "the generator never produced {c}");
    }
}

#[test]
fn jit_matches_interpreter_on_vex_forms() {
    let cases: u64 =
        std::env::var("FERRITE_JIT_DIFF_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    let mut r = Rng(0x7e40_0f1e_2026_1207);
    let (mut interp, mut jit) = engines();
    let mut seen = std::collections::BTreeSet::new();
    for case in 0..cases {
        let n = 1 + r.below(24) as usize;
        let mut code = Vec::new();
        let mut k = 0;
        while k < n {
            let v = match r.below(8) {
                0 => gen_filler(&mut r),
                1 => gen_sse(&mut r),
                2 | 3 => gen_vex38(&mut r),
                _ => gen_vex(&mut r),
            };
            let mut d = Decoder::with_ip(64, &v, 0, DecoderOptions::NONE);
            let i = d.decode();
            if i.is_invalid() || i.len() != v.len() {
                continue;
            }
            code.extend(v);
            k += 1;
        }
        code.push(0xf4);
        let s = random_setup(&mut r);
        compare(&mut interp, &mut jit, &code, &s, 1_000, &format!("vex case {case}"));
        let mut d = Decoder::with_ip(64, &code, 0, DecoderOptions::NONE);
        for i in d.iter() {
            seen.insert(format!("{:?}", i.mnemonic()));
        }
    }
    assert!(jit.inline_retired() > cases, "only {} instructions retired inline", jit.inline_retired());
    for m in [
        "Vpcmpeqb",
        "Vpminub",
        "Vpor",
        "Vpand",
        "Vpxor",
        "Vpaddb",
        "Vpshufd",
        "Vpmovmskb",
        "Vmovdqu",
        "Vmovdqa",
        "Vmovntdq",
        "Vmovups",
        "Vmovaps",
        "Vzeroupper",
        "Vpaddusb",
        "Vpsubsw",
        "Vpcmpgtb",
        "Vpcmpgtd",
        "Vpmaxub",
        "Vpminsw",
        "Vpavgb",
        "Vpmullw",
        "Vpunpckhbw",
        "Vpunpckhqdq",
        "Vpshufhw",
        "Vpshuflw",
        "Vpshufb",
        "Vpminsd",
        "Vpmaxud",
        "Vpmulld",
        "Vpcmpeqq",
        "Vpcmpgtq",
        "Vandps",
        "Vxorpd",
        "Vunpcklps",
    ] {
        assert!(seen.contains(m), "the generator never produced {m}");
    }
}

/// A matmul-like self-loop (the guest CPU benchmark's inner loop): MOVSD load, UNPCKLPD, MULPD from
/// memory, ADDPD, the count and the branch, looping in generated code with its TLB cache; then
/// with an unmasked precision exception (the first MULPD's #XM through the handler) and with a
/// misaligned MULPD operand (#GP), each at the interpreter's count and state.
#[test]
fn sse_self_loops_match_the_interpreter() {
    // xor ecx, ecx
    // top: movsd xmm0, [rbx + rcx*8]      f2 0f 10 04 cb
    //      unpcklpd xmm0, xmm0            66 0f 14 c0
    //      mulpd xmm0, [rsi + rcx*8]      66 0f 59 04 ce
    //      addpd xmm1, xmm0               66 0f 58 c8
    //      add rcx, 2                     48 83 c1 02
    //      cmp rcx, 200                   48 81 f9 c8 00 00 00
    //      jne top                        75 e5
    //      movaps [rdi], xmm1             0f 29 0f
    //      hlt
    let code = [
        0x31, 0xc9, 0xf2, 0x0f, 0x10, 0x04, 0xcb, 0x66, 0x0f, 0x14, 0xc0, 0x66, 0x0f, 0x59, 0x04, 0xce, 0x66,
        0x0f, 0x58, 0xc8, 0x48, 0x83, 0xc1, 0x02, 0x48, 0x81, 0xf9, 0xc8, 0x00, 0x00, 0x00, 0x75, 0xe1, 0x0f,
        0x29, 0x0f, 0xf4,
    ];
    let (mut interp, mut jit) = engines();
    let mut r = Rng(0x100f_5eed);
    for case in 0..40u64 {
        let mut s = random_setup(&mut r);
        s.cr0 = 0;
        s.cr4 = cr4::OSFXSR | cr4::OSXMMEXCPT;
        s.gpr[3] = DATA + 0x100;
        s.gpr[6] = DATA + 0x1000 - 0x640 + if case % 5 == 4 { 8 } else { 0 };
        s.gpr[7] = DATA + 0x2000 + if case % 7 == 6 { 4 } else { 0 };
        s.mxcsr = match case % 4 {
            0 => 0x1f80,
            1 => 0x1f80 | 3 << 13 | 1 << 15 | 1 << 6,
            2 => 0x1f80 & !(1 << 12),
            _ => 0x1f80 | 1 << 5,
        };
        // Budgets that stop inside the loop, at its end and past it.
        let until = [1_000, 37, 200, 601, 602][case as usize % 5];
        compare(&mut interp, &mut jit, &code, &s, until, &format!("loop case {case}"));
    }
    assert!(jit.inline_retired() > 1000, "the loop did not run inline ({})", jit.inline_retired());
}
