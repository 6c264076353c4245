//! x87 tests: table-driven edge cases, and a native comparison that runs every arithmetic,
//! transcendental, load, store, compare and stack instruction both through the interpreter and
//! natively on this host (FRSTOR the same state, run the same bytes, FNSAVE) over thousands of
//! random and edge operands, under every rounding mode, precision control and random exception
//! masks, and requires bit-identical registers, FCW, FSW, FTW, FOP, memory result and EFLAGS.

use super::*;
use crate::interp::{Exit, Interpreter};
use crate::state::{CpuState, FpuState, Quirks};
use crate::testutil::*;

// ------------------------------------------------------------------------------------- helpers

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn f80(sign: bool, exp: u16, mant: u64) -> u128 {
    ((sign as u128) << 79) | ((exp as u128 & 0x7fff) << 64) | mant as u128
}

/// A random 80-bit value, biased towards the interesting classes.
fn rand_f80(r: &mut Rng) -> u128 {
    let s = r.chance(50);
    let m = r.next();
    match r.below(24) {
        0 => f80(s, 0, 0),
        1 => f80(s, 0, m >> (1 + r.below(63))),        // denormal
        2 => f80(s, 0, m | 1 << 63),                   // pseudo-denormal
        3 => f80(s, 0x7fff, 1 << 63),                  // infinity
        4 => f80(s, 0x7fff, m | 3 << 62),              // QNaN
        5 => f80(s, 0x7fff, ((m >> 2) | 1 << 63) | 1), // SNaN
        6 => INDEFINITE,
        7 => f80(s, 1 + r.below(0x7ffe) as u16, m >> 1), // unnormal
        8 => f80(s, 0x7fff, m >> 1),                     // pseudo-NaN / pseudo-infinity
        9 => f80(s, 0x3fff, 1 << 63),                    // +-1
        10 => f80(s, 0x3fff + r.below(64) as u16, m | 1 << 63), // integers and beyond
        11 => f80(s, 0x7ffe - r.below(4) as u16, m | 1 << 63), // near overflow
        12 => f80(s, 1 + r.below(4) as u16, m | 1 << 63), // near underflow
        13 => f80(s, 0x3ffe + r.below(3) as u16, m | 1 << 63), // around 1
        14 => f80(s, 0x3fc0 + r.below(0x40) as u16, m | 1 << 63), // small
        15 => f80(s, 0x3fff + r.below(0x40) as u16, 0xc90f_daa2_2168_c234 ^ (m & 0xff)), // near pi multiples
        16 => f80(s, 0x403e, m | 1 << 63),               // near 2^63
        17 => f80(s, 0x400e + r.below(32) as u16, m | 1 << 63), // int16/int32 range edges
        18 => f80(s, 0x3fff - r.below(70) as u16, 1 << 63), // powers of two
        19 => f80(s, 0x3ffe, 0xb504_f333_f9de_6484 ^ (m & 0xf)), // sqrt(2)/2 (fyl2xp1 range)
        _ => f80(s, 0x3f00 + r.below(0x200) as u16, m | 1 << 63),
    }
}

fn rand_f32(r: &mut Rng) -> u64 {
    let s = (r.below(2) as u32) << 31;
    let m = r.next() as u32 & 0x7f_ffff;
    (match r.below(10) {
        0 => s,
        1 => s | m,
        2 => s | 0x7f80_0000,
        3 => s | 0x7fc0_0000 | m,
        4 => s | 0x7f80_0000 | (m >> 1) | 1,
        5 => s | 0x3f80_0000,
        _ => s | ((r.below(254) as u32 + 1) << 23) | m,
    }) as u64
}

fn rand_f64(r: &mut Rng) -> u64 {
    let s = r.below(2) << 63;
    let m = r.next() & ((1 << 52) - 1);
    match r.below(10) {
        0 => s,
        1 => s | m,
        2 => s | 0x7ff0 << 48,
        3 => s | 0x7ff8 << 48 | m,
        4 => s | 0x7ff0 << 48 | (m >> 1) | 1,
        5 => s | 0x3ff0 << 48,
        _ => s | ((r.below(2046) + 1) << 52) | m,
    }
}

fn rand_int(r: &mut Rng, bits: u32) -> u64 {
    let v = match r.below(6) {
        0 => 0,
        1 => 1u64 << (bits - 1),
        2 => (1u64 << (bits - 1)) - 1,
        3 => u64::MAX,
        _ => r.next(),
    };
    if bits == 64 { v } else { v & ((1 << bits) - 1) }
}

fn rand_bcd(r: &mut Rng) -> [u8; 10] {
    let mut b = [0u8; 10];
    let digits = r.below(19);
    for (i, byte) in b.iter_mut().enumerate().take(9) {
        if (i as u64) * 2 < digits {
            *byte = (r.below(10) as u8) | ((r.below(10) as u8) << 4);
        }
    }
    if r.chance(5) {
        b[r.below(9) as usize] = r.next() as u8; // invalid digits
    }
    b[9] = if r.chance(50) { 0x80 } else { 0 };
    b
}

/// What the memory operand of a case holds.
#[derive(Clone, Copy, Debug, PartialEq)]
enum M {
    None,
    F32,
    F64,
    F80,
    I16,
    I32,
    I64,
    Bcd,
    Cw,
}

fn rand_mem(r: &mut Rng, m: M) -> [u8; 16] {
    let mut b = [0u8; 16];
    let v: u128 = match m {
        M::None => r.next() as u128,
        M::F32 => rand_f32(r) as u128,
        M::F64 => rand_f64(r) as u128,
        M::F80 => rand_f80(r),
        M::I16 => rand_int(r, 16) as u128,
        M::I32 => rand_int(r, 32) as u128,
        M::I64 => rand_int(r, 64) as u128,
        M::Bcd => {
            b[..10].copy_from_slice(&rand_bcd(r));
            return b;
        }
        M::Cw => (r.next() & 0xffff) as u128,
    };
    b.copy_from_slice(&v.to_le_bytes());
    b
}

/// A random FSAVE image (32-bit format): random registers, tags, TOP, control word, and flags that
/// leave no unmasked exception pending.
fn rand_image(r: &mut Rng, empty_percent: u64) -> [u8; 108] {
    let mut img = [0u8; 108];
    let rc = r.below(4) as u16;
    let pc = [0u16, 2, 3, 3, 1][r.below(5) as usize];
    let masks = if r.chance(70) { 0x3f } else { r.next() as u16 & 0x3f };
    let fcw = 0x40 | masks | (pc << 8) | (rc << 10);
    let flags = r.next() as u16 & masks & 0x3f;
    let fsw = flags | (r.next() as u16 & CBITS) | ((r.below(8) as u16) << 11);
    let mut ftw = 0u16;
    for reg in 0..8 {
        if r.chance(empty_percent) {
            ftw |= 3 << (2 * reg);
        }
    }
    img[0..2].copy_from_slice(&fcw.to_le_bytes());
    img[4..6].copy_from_slice(&fsw.to_le_bytes());
    img[8..10].copy_from_slice(&ftw.to_le_bytes());
    for i in 0..8 {
        img[28 + 10 * i..38 + 10 * i].copy_from_slice(&rand_f80(r).to_le_bytes()[..10]);
    }
    img
}

/// Loads an FSAVE image into the state.
fn load_image(f: &mut FpuState, img: &[u8; 108]) {
    f.fcw = u16::from_le_bytes([img[0], img[1]]);
    f.fsw = u16::from_le_bytes([img[4], img[5]]);
    let top = f.top();
    for i in 0..8 {
        let mut b = [0u8; 16];
        b[..10].copy_from_slice(&img[28 + 10 * i..38 + 10 * i]);
        f.st[(top + i) & 7] = u128::from_le_bytes(b);
    }
    f.load_tags(u16::from_le_bytes([img[8], img[9]]));
    f.update_es();
}

/// The fields of an FSAVE image a comparison looks at: FCW, FSW, FTW, FOP, ST(0)-ST(7).
fn fields_of_image(img: &[u8; 108]) -> (u16, u16, u16, u16, [u128; 8]) {
    let mut regs = [0u128; 8];
    for (i, reg) in regs.iter_mut().enumerate() {
        let mut b = [0u8; 16];
        b[..10].copy_from_slice(&img[28 + 10 * i..38 + 10 * i]);
        *reg = u128::from_le_bytes(b);
    }
    (
        u16::from_le_bytes([img[0], img[1]]),
        u16::from_le_bytes([img[4], img[5]]),
        u16::from_le_bytes([img[8], img[9]]),
        u16::from_le_bytes([img[18], img[19]]) & 0x7ff,
        regs,
    )
}

fn fields_of_state(f: &FpuState) -> (u16, u16, u16, u16, [u128; 8]) {
    let mut regs = [0u128; 8];
    for (i, reg) in regs.iter_mut().enumerate() {
        *reg = f.get(i);
    }
    (f.fcw, f.fsw, f.full_tags(), f.fop, regs)
}

// ---------------------------------------------------------------------------- native oracle

type Native = fn(&mut [u8; 108], &mut [u8; 16], u64) -> u64;

/// Defines native runners: FRSTOR the image, set the arithmetic flags, run the instruction bytes with
/// RSI pointing at the memory operand, FNSAVE, and return RFLAGS.
macro_rules! native {
    ($($name:ident => $bytes:literal,)*) => {
        $(
            fn $name(img: &mut [u8; 108], mem: &mut [u8; 16], flags_in: u64) -> u64 {
                let mut fl = flags_in;
                // SAFETY: `img` is a live 108-byte FRSTOR/FNSAVE buffer and `mem` a live 16-byte buffer
                // that the single instruction (at most a 10-byte access at [rsi]) addresses. The
                // image has no unmasked exception pending, so nothing traps; FNSAVE leaves the x87
                // unit initialised (empty stack, default control word). PUSHFQ/POPFQ balance on the
                // stack, and only the arithmetic flags (plus the fixed bit) are loaded.
                unsafe {
                    core::arch::asm!(
                        "push {fl}",
                        "popfq",
                        "frstor [{img}]",
                        $bytes,
                        "fnsave [{img}]",
                        "pushfq",
                        "pop {fl}",
                        img = in(reg) img.as_mut_ptr(),
                        fl = inout(reg) fl,
                        in("rsi") mem.as_mut_ptr(),
                        out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
                        out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
                    );
                }
                fl
            }
        )*
    };
}

native! {
    n_fadd_st3 => ".byte 0xd8, 0xc3",
    n_fmul_st3 => ".byte 0xd8, 0xcb",
    n_fsub_st3 => ".byte 0xd8, 0xe3",
    n_fsubr_st3 => ".byte 0xd8, 0xeb",
    n_fdiv_st3 => ".byte 0xd8, 0xf3",
    n_fdivr_st3 => ".byte 0xd8, 0xfb",
    n_fadd_st0 => ".byte 0xd8, 0xc0",
    n_fcom_st3 => ".byte 0xd8, 0xd3",
    n_fcomp_st3 => ".byte 0xd8, 0xdb",
    n_fadd_to3 => ".byte 0xdc, 0xc3",
    n_fmul_to3 => ".byte 0xdc, 0xcb",
    n_fsubr_to3 => ".byte 0xdc, 0xe3",
    n_fsub_to3 => ".byte 0xdc, 0xeb",
    n_fdivr_to3 => ".byte 0xdc, 0xf3",
    n_fdiv_to3 => ".byte 0xdc, 0xfb",
    n_faddp => ".byte 0xde, 0xc3",
    n_fmulp => ".byte 0xde, 0xc9",
    n_fsubrp => ".byte 0xde, 0xe3",
    n_fsubp => ".byte 0xde, 0xeb",
    n_fdivrp => ".byte 0xde, 0xf3",
    n_fdivp => ".byte 0xde, 0xfb",
    n_fcompp => ".byte 0xde, 0xd9",
    n_fld_st3 => ".byte 0xd9, 0xc3",
    n_fld_st7 => ".byte 0xd9, 0xc7",
    n_fxch_st3 => ".byte 0xd9, 0xcb",
    n_fnop => ".byte 0xd9, 0xd0",
    n_fchs => ".byte 0xd9, 0xe0",
    n_fabs => ".byte 0xd9, 0xe1",
    n_ftst => ".byte 0xd9, 0xe4",
    n_fxam => ".byte 0xd9, 0xe5",
    n_fld1 => ".byte 0xd9, 0xe8",
    n_fldl2t => ".byte 0xd9, 0xe9",
    n_fldl2e => ".byte 0xd9, 0xea",
    n_fldpi => ".byte 0xd9, 0xeb",
    n_fldlg2 => ".byte 0xd9, 0xec",
    n_fldln2 => ".byte 0xd9, 0xed",
    n_fldz => ".byte 0xd9, 0xee",
    n_f2xm1 => ".byte 0xd9, 0xf0",
    n_fyl2x => ".byte 0xd9, 0xf1",
    n_fptan => ".byte 0xd9, 0xf2",
    n_fpatan => ".byte 0xd9, 0xf3",
    n_fxtract => ".byte 0xd9, 0xf4",
    n_fprem1 => ".byte 0xd9, 0xf5",
    n_fdecstp => ".byte 0xd9, 0xf6",
    n_fincstp => ".byte 0xd9, 0xf7",
    n_fprem => ".byte 0xd9, 0xf8",
    n_fyl2xp1 => ".byte 0xd9, 0xf9",
    n_fsqrt => ".byte 0xd9, 0xfa",
    n_fsincos => ".byte 0xd9, 0xfb",
    n_frndint => ".byte 0xd9, 0xfc",
    n_fscale => ".byte 0xd9, 0xfd",
    n_fsin => ".byte 0xd9, 0xfe",
    n_fcos => ".byte 0xd9, 0xff",
    n_ffree_st3 => ".byte 0xdd, 0xc3",
    n_fst_st3 => ".byte 0xdd, 0xd3",
    n_fstp_st3 => ".byte 0xdd, 0xdb",
    n_fstp_st0 => ".byte 0xdd, 0xd8",
    n_fstpnce_st3 => ".byte 0xd9, 0xdb",
    n_fstpnce_st0 => ".byte 0xd9, 0xd8",
    n_fucom_st3 => ".byte 0xdd, 0xe3",
    n_fucomp_st3 => ".byte 0xdd, 0xeb",
    n_fucompp => ".byte 0xda, 0xe9",
    n_fcmovb => ".byte 0xda, 0xc3",
    n_fcmove => ".byte 0xda, 0xcb",
    n_fcmovbe => ".byte 0xda, 0xd3",
    n_fcmovu => ".byte 0xda, 0xdb",
    n_fcmovnb => ".byte 0xdb, 0xc3",
    n_fcmovne => ".byte 0xdb, 0xcb",
    n_fcmovnbe => ".byte 0xdb, 0xd3",
    n_fcmovnu => ".byte 0xdb, 0xdb",
    n_fucomi => ".byte 0xdb, 0xeb",
    n_fcomi => ".byte 0xdb, 0xf3",
    n_fucomip => ".byte 0xdf, 0xeb",
    n_fcomip => ".byte 0xdf, 0xf3",
    n_ffreep => ".byte 0xdf, 0xc3",
    n_fnclex => ".byte 0xdb, 0xe2",
    n_fninit => ".byte 0xdb, 0xe3",
    n_fadd_m32 => ".byte 0xd8, 0x06",
    n_fmul_m32 => ".byte 0xd8, 0x0e",
    n_fcom_m32 => ".byte 0xd8, 0x16",
    n_fcomp_m32 => ".byte 0xd8, 0x1e",
    n_fsub_m32 => ".byte 0xd8, 0x26",
    n_fsubr_m32 => ".byte 0xd8, 0x2e",
    n_fdiv_m32 => ".byte 0xd8, 0x36",
    n_fdivr_m32 => ".byte 0xd8, 0x3e",
    n_fadd_m64 => ".byte 0xdc, 0x06",
    n_fmul_m64 => ".byte 0xdc, 0x0e",
    n_fcom_m64 => ".byte 0xdc, 0x16",
    n_fcomp_m64 => ".byte 0xdc, 0x1e",
    n_fsub_m64 => ".byte 0xdc, 0x26",
    n_fsubr_m64 => ".byte 0xdc, 0x2e",
    n_fdiv_m64 => ".byte 0xdc, 0x36",
    n_fdivr_m64 => ".byte 0xdc, 0x3e",
    n_fiadd_m32 => ".byte 0xda, 0x06",
    n_fimul_m32 => ".byte 0xda, 0x0e",
    n_ficom_m32 => ".byte 0xda, 0x16",
    n_ficomp_m32 => ".byte 0xda, 0x1e",
    n_fisub_m32 => ".byte 0xda, 0x26",
    n_fisubr_m32 => ".byte 0xda, 0x2e",
    n_fidiv_m32 => ".byte 0xda, 0x36",
    n_fidivr_m32 => ".byte 0xda, 0x3e",
    n_fiadd_m16 => ".byte 0xde, 0x06",
    n_fimul_m16 => ".byte 0xde, 0x0e",
    n_ficom_m16 => ".byte 0xde, 0x16",
    n_ficomp_m16 => ".byte 0xde, 0x1e",
    n_fisub_m16 => ".byte 0xde, 0x26",
    n_fisubr_m16 => ".byte 0xde, 0x2e",
    n_fidiv_m16 => ".byte 0xde, 0x36",
    n_fidivr_m16 => ".byte 0xde, 0x3e",
    n_fld_m32 => ".byte 0xd9, 0x06",
    n_fst_m32 => ".byte 0xd9, 0x16",
    n_fstp_m32 => ".byte 0xd9, 0x1e",
    n_fldcw => ".byte 0xd9, 0x2e",
    n_fnstcw => ".byte 0xd9, 0x3e",
    n_fld_m64 => ".byte 0xdd, 0x06",
    n_fisttp_m64 => ".byte 0xdd, 0x0e",
    n_fst_m64 => ".byte 0xdd, 0x16",
    n_fstp_m64 => ".byte 0xdd, 0x1e",
    n_fnstsw_m => ".byte 0xdd, 0x3e",
    n_fild_m32 => ".byte 0xdb, 0x06",
    n_fisttp_m32 => ".byte 0xdb, 0x0e",
    n_fist_m32 => ".byte 0xdb, 0x16",
    n_fistp_m32 => ".byte 0xdb, 0x1e",
    n_fld_m80 => ".byte 0xdb, 0x2e",
    n_fstp_m80 => ".byte 0xdb, 0x3e",
    n_fild_m16 => ".byte 0xdf, 0x06",
    n_fisttp_m16 => ".byte 0xdf, 0x0e",
    n_fist_m16 => ".byte 0xdf, 0x16",
    n_fistp_m16 => ".byte 0xdf, 0x1e",
    n_fbld => ".byte 0xdf, 0x26",
    n_fild_m64 => ".byte 0xdf, 0x2e",
    n_fbstp => ".byte 0xdf, 0x36",
    n_fistp_m64 => ".byte 0xdf, 0x3e",
}

/// (name, instruction bytes, memory operand kind, native runner)
type Case = (&'static str, [u8; 2], M, Native);

macro_rules! cases {
    ($($name:ident [$b0:literal, $b1:literal] $m:ident,)*) => {
        &[$((stringify!($name), [$b0, $b1], M::$m, $name as Native),)*]
    };
}

const CASES: &[Case] = cases! {
    n_fadd_st3 [0xd8, 0xc3] None,
    n_fmul_st3 [0xd8, 0xcb] None,
    n_fsub_st3 [0xd8, 0xe3] None,
    n_fsubr_st3 [0xd8, 0xeb] None,
    n_fdiv_st3 [0xd8, 0xf3] None,
    n_fdivr_st3 [0xd8, 0xfb] None,
    n_fadd_st0 [0xd8, 0xc0] None,
    n_fcom_st3 [0xd8, 0xd3] None,
    n_fcomp_st3 [0xd8, 0xdb] None,
    n_fadd_to3 [0xdc, 0xc3] None,
    n_fmul_to3 [0xdc, 0xcb] None,
    n_fsubr_to3 [0xdc, 0xe3] None,
    n_fsub_to3 [0xdc, 0xeb] None,
    n_fdivr_to3 [0xdc, 0xf3] None,
    n_fdiv_to3 [0xdc, 0xfb] None,
    n_faddp [0xde, 0xc3] None,
    n_fmulp [0xde, 0xc9] None,
    n_fsubrp [0xde, 0xe3] None,
    n_fsubp [0xde, 0xeb] None,
    n_fdivrp [0xde, 0xf3] None,
    n_fdivp [0xde, 0xfb] None,
    n_fcompp [0xde, 0xd9] None,
    n_fld_st3 [0xd9, 0xc3] None,
    n_fld_st7 [0xd9, 0xc7] None,
    n_fxch_st3 [0xd9, 0xcb] None,
    n_fnop [0xd9, 0xd0] None,
    n_fchs [0xd9, 0xe0] None,
    n_fabs [0xd9, 0xe1] None,
    n_ftst [0xd9, 0xe4] None,
    n_fxam [0xd9, 0xe5] None,
    n_fld1 [0xd9, 0xe8] None,
    n_fldl2t [0xd9, 0xe9] None,
    n_fldl2e [0xd9, 0xea] None,
    n_fldpi [0xd9, 0xeb] None,
    n_fldlg2 [0xd9, 0xec] None,
    n_fldln2 [0xd9, 0xed] None,
    n_fldz [0xd9, 0xee] None,
    n_f2xm1 [0xd9, 0xf0] None,
    n_fyl2x [0xd9, 0xf1] None,
    n_fptan [0xd9, 0xf2] None,
    n_fpatan [0xd9, 0xf3] None,
    n_fxtract [0xd9, 0xf4] None,
    n_fprem1 [0xd9, 0xf5] None,
    n_fdecstp [0xd9, 0xf6] None,
    n_fincstp [0xd9, 0xf7] None,
    n_fprem [0xd9, 0xf8] None,
    n_fyl2xp1 [0xd9, 0xf9] None,
    n_fsqrt [0xd9, 0xfa] None,
    n_fsincos [0xd9, 0xfb] None,
    n_frndint [0xd9, 0xfc] None,
    n_fscale [0xd9, 0xfd] None,
    n_fsin [0xd9, 0xfe] None,
    n_fcos [0xd9, 0xff] None,
    n_ffree_st3 [0xdd, 0xc3] None,
    n_fst_st3 [0xdd, 0xd3] None,
    n_fstp_st3 [0xdd, 0xdb] None,
    n_fstp_st0 [0xdd, 0xd8] None,
    // FSTPNCE with an empty ST(0): no stack fault, only the pop (difftest x87 seed 5).
    n_fstpnce_st3 [0xd9, 0xdb] None,
    n_fstpnce_st0 [0xd9, 0xd8] None,
    n_fucom_st3 [0xdd, 0xe3] None,
    n_fucomp_st3 [0xdd, 0xeb] None,
    n_fucompp [0xda, 0xe9] None,
    n_fcmovb [0xda, 0xc3] None,
    n_fcmove [0xda, 0xcb] None,
    n_fcmovbe [0xda, 0xd3] None,
    n_fcmovu [0xda, 0xdb] None,
    n_fcmovnb [0xdb, 0xc3] None,
    n_fcmovne [0xdb, 0xcb] None,
    n_fcmovnbe [0xdb, 0xd3] None,
    n_fcmovnu [0xdb, 0xdb] None,
    n_fucomi [0xdb, 0xeb] None,
    n_fcomi [0xdb, 0xf3] None,
    n_fucomip [0xdf, 0xeb] None,
    n_fcomip [0xdf, 0xf3] None,
    n_ffreep [0xdf, 0xc3] None,
    n_fnclex [0xdb, 0xe2] None,
    n_fninit [0xdb, 0xe3] None,
    n_fadd_m32 [0xd8, 0x06] F32,
    n_fmul_m32 [0xd8, 0x0e] F32,
    n_fcom_m32 [0xd8, 0x16] F32,
    n_fcomp_m32 [0xd8, 0x1e] F32,
    n_fsub_m32 [0xd8, 0x26] F32,
    n_fsubr_m32 [0xd8, 0x2e] F32,
    n_fdiv_m32 [0xd8, 0x36] F32,
    n_fdivr_m32 [0xd8, 0x3e] F32,
    n_fadd_m64 [0xdc, 0x06] F64,
    n_fmul_m64 [0xdc, 0x0e] F64,
    n_fcom_m64 [0xdc, 0x16] F64,
    n_fcomp_m64 [0xdc, 0x1e] F64,
    n_fsub_m64 [0xdc, 0x26] F64,
    n_fsubr_m64 [0xdc, 0x2e] F64,
    n_fdiv_m64 [0xdc, 0x36] F64,
    n_fdivr_m64 [0xdc, 0x3e] F64,
    n_fiadd_m32 [0xda, 0x06] I32,
    n_fimul_m32 [0xda, 0x0e] I32,
    n_ficom_m32 [0xda, 0x16] I32,
    n_ficomp_m32 [0xda, 0x1e] I32,
    n_fisub_m32 [0xda, 0x26] I32,
    n_fisubr_m32 [0xda, 0x2e] I32,
    n_fidiv_m32 [0xda, 0x36] I32,
    n_fidivr_m32 [0xda, 0x3e] I32,
    n_fiadd_m16 [0xde, 0x06] I16,
    n_fimul_m16 [0xde, 0x0e] I16,
    n_ficom_m16 [0xde, 0x16] I16,
    n_ficomp_m16 [0xde, 0x1e] I16,
    n_fisub_m16 [0xde, 0x26] I16,
    n_fisubr_m16 [0xde, 0x2e] I16,
    n_fidiv_m16 [0xde, 0x36] I16,
    n_fidivr_m16 [0xde, 0x3e] I16,
    n_fld_m32 [0xd9, 0x06] F32,
    n_fst_m32 [0xd9, 0x16] None,
    n_fstp_m32 [0xd9, 0x1e] None,
    n_fldcw [0xd9, 0x2e] Cw,
    n_fnstcw [0xd9, 0x3e] None,
    n_fld_m64 [0xdd, 0x06] F64,
    n_fisttp_m64 [0xdd, 0x0e] None,
    n_fst_m64 [0xdd, 0x16] None,
    n_fstp_m64 [0xdd, 0x1e] None,
    n_fnstsw_m [0xdd, 0x3e] None,
    n_fild_m32 [0xdb, 0x06] I32,
    n_fisttp_m32 [0xdb, 0x0e] None,
    n_fist_m32 [0xdb, 0x16] None,
    n_fistp_m32 [0xdb, 0x1e] None,
    n_fld_m80 [0xdb, 0x2e] F80,
    n_fstp_m80 [0xdb, 0x3e] None,
    n_fild_m16 [0xdf, 0x06] I16,
    n_fisttp_m16 [0xdf, 0x0e] None,
    n_fist_m16 [0xdf, 0x16] None,
    n_fistp_m16 [0xdf, 0x1e] None,
    n_fbld [0xdf, 0x26] Bcd,
    n_fild_m64 [0xdf, 0x2e] I64,
    n_fbstp [0xdf, 0x36] None,
    n_fistp_m64 [0xdf, 0x3e] None,
};

/// Instructions that do not record FOP (the control instructions).
fn is_control(bytes: [u8; 2]) -> bool {
    matches!(bytes, [0xdb, 0xe2] | [0xdb, 0xe3] | [0xd9, 0x2e] | [0xd9, 0x3e] | [0xdd, 0x3e])
}

/// Runs every case `iters` times against the host; returns (cases run, mismatch descriptions).
fn compare_all(iters: usize, seed: u64) -> (usize, Vec<String>) {
    let mut rng = Rng(seed);
    let mut mismatches = Vec::new();
    let mut total = 0usize;
    for &(name, bytes, mkind, native) in CASES {
        let mut bus = TestBus::default();
        let template: CpuState = cpu_in(TestMode::Long64, &mut bus);
        let code = CODE as usize;
        bus.ram[code..code + 2].copy_from_slice(&bytes);
        bus.ram[code + 2] = 0xf4;
        let mut it = Interpreter::new();
        let mut bad = 0;
        for _ in 0..iters {
            let empty = [0, 15, 50][rng.below(3) as usize];
            let img0 = rand_image(&mut rng, empty);
            let mem0 = rand_mem(&mut rng, mkind);
            let flags_in =
                0x2 | (rng.next() & (flags::CF | flags::PF | flags::ZF | flags::SF | flags::OF | flags::AF));
            // Native.
            let mut nimg = img0;
            let mut nmem = mem0;
            let nflags = native(&mut nimg, &mut nmem, flags_in);
            // Interpreter.
            let mut st = template.clone();
            load_image(&mut st.fpu, &img0);
            st.rflags = flags_in;
            st.gpr[6] = DATA;
            st.rip = CODE;
            st.icount = 0;
            st.halted = false;
            bus.ram[DATA as usize..DATA as usize + 16].copy_from_slice(&mem0);
            let exit = it.run(&mut st, &mut bus, 10);
            total += 1;
            let gmem: [u8; 16] = bus.ram[DATA as usize..DATA as usize + 16].try_into().unwrap_or([0; 16]);
            let mut want = fields_of_image(&nimg);
            let mut got = fields_of_state(&st.fpu);
            if is_control(bytes) {
                want.3 = 0;
                got.3 = 0;
            }
            // The host's FOP is not always the instruction's: on AMD, a context switch between the
            // instruction and FNSAVE (the kernel's XSAVE/XRSTOR with no exception pending) clears FOP.
            // A disagreement in FOP alone is re-measured a few times; one native run that agrees
            // settles it, a persistent one stays a mismatch.
            let mut retries = 0;
            while want.3 != got.3
                && (want.0, want.1, want.2, want.4) == (got.0, got.1, got.2, got.4)
                && retries < 4
            {
                retries += 1;
                let mut again = img0;
                let mut again_mem = mem0;
                native(&mut again, &mut again_mem, flags_in);
                if fields_of_image(&again).3 == got.3 {
                    want.3 = got.3;
                }
            }
            let fl_mask = flags::CF | flags::PF | flags::ZF | flags::SF | flags::OF | flags::AF;
            if exit != Exit::Halted
                || want != got
                || gmem != nmem
                || (nflags & fl_mask) != (st.rflags & fl_mask)
            {
                bad += 1;
                if bad <= 3 {
                    mismatches.push(format!(
                        "{name}: exit {exit:?}\n  in : fcw {:04x} fsw {:04x} ftw {:04x} regs {:x?} mem {:02x?} fl {flags_in:x}\n  \
                         want: fcw {:04x} fsw {:04x} ftw {:04x} fop {:03x} regs {:x?} mem {:02x?} fl {:x}\n  \
                         got : fcw {:04x} fsw {:04x} ftw {:04x} fop {:03x} regs {:x?} mem {:02x?} fl {:x}",
                        u16::from_le_bytes([img0[0], img0[1]]),
                        u16::from_le_bytes([img0[4], img0[5]]),
                        u16::from_le_bytes([img0[8], img0[9]]),
                        fields_of_image(&img0).4,
                        &mem0[..10],
                        want.0,
                        want.1,
                        want.2,
                        want.3,
                        want.4,
                        &nmem[..10],
                        nflags & fl_mask,
                        got.0,
                        got.1,
                        got.2,
                        got.3,
                        got.4,
                        &gmem[..10],
                        st.rflags & fl_mask,
                    ));
                }
            }
        }
        if bad > 0 {
            mismatches.push(format!("{name}: {bad}/{iters} mismatches"));
        }
    }
    (total, mismatches)
}

#[test]
fn native_comparison_all_instructions() {
    let iters = std::env::var("X87_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let (total, mismatches) = compare_all(iters, 0x1234_5678_9abc_def1);
    eprintln!(
        "x87 native comparison: {} cases, {} instructions, {} mismatch reports",
        total,
        CASES.len(),
        mismatches.len()
    );
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}

// ------------------------------------------------------------------------ architectural tests

use crate::bus::CpuBus;
use crate::fault::Fault;
use crate::state::cr0;
use std::ptr::NonNull;

/// A test bus that records FERR# and drives IGNNE#.
#[derive(Default)]
struct FerrBus {
    inner: TestBus,
    ferr: Vec<bool>,
    ignne: bool,
}

impl CpuBus for FerrBus {
    fn ram_page(&mut self, page: u64, write: bool) -> Option<NonNull<u8>> {
        self.inner.ram_page(page, write)
    }
    fn read_phys(&mut self, addr: u64, data: &mut [u8]) {
        self.inner.read_phys(addr, data)
    }
    fn write_phys(&mut self, addr: u64, data: &[u8]) {
        self.inner.write_phys(addr, data)
    }
    fn io_in(&mut self, port: u16, size: u8) -> u32 {
        self.inner.io_in(port, size)
    }
    fn io_out(&mut self, port: u16, size: u8, value: u32) {
        self.inner.io_out(port, size, value)
    }
    fn interrupt_pending(&mut self) -> bool {
        false
    }
    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        None
    }
    fn tsc(&mut self, icount: u64) -> u64 {
        icount
    }
    fn ferr(&mut self, asserted: bool) {
        self.ferr.push(asserted);
    }
    fn ignne(&mut self) -> bool {
        self.ignne
    }
}

/// Runs `code` (+ HLT) in `mode` with faults trapped (not delivered).
fn exec(
    mode: TestMode,
    code: &[u8],
    setup: impl FnOnce(&mut CpuState, &mut TestBus),
) -> (CpuState, TestBus, Exit) {
    let mut bus = TestBus::default();
    let mut st = cpu_in(mode, &mut bus);
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    bus.ram[CODE as usize + code.len()] = 0xf4;
    setup(&mut st, &mut bus);
    let mut it = Interpreter::new();
    it.trap_faults = true;
    let exit = it.run(&mut st, &mut bus, 10_000);
    (st, bus, exit)
}

fn trapped(vector: u8) -> Exit {
    Exit::Trapped(Fault::Exc { vector, error: None })
}

const FLD1: [u8; 2] = [0xd9, 0xe8];
const FLDZ: [u8; 2] = [0xd9, 0xee];
const FDIVP: [u8; 2] = [0xde, 0xf9];
const FNSTSW_AX: [u8; 2] = [0xdf, 0xe0];
const FNINIT: [u8; 2] = [0xdb, 0xe3];
/// fldcw [rsi]
const FLDCW_RSI: [u8; 2] = [0xd9, 0x2e];

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn nm_with_em_or_ts_and_wait_with_mp_ts() {
    for bits in [cr0::EM, cr0::TS] {
        let (st, _, exit) = exec(TestMode::Long64, &FLD1, |st, _| st.cr0 |= bits);
        assert_eq!(exit, trapped(7), "cr0 bit {bits:#x}");
        assert_eq!(st.rip, CODE);
    }
    // FNSTSW is non-waiting but still an ESC instruction: #NM too.
    let (_, _, exit) = exec(TestMode::Long64, &FNSTSW_AX, |st, _| st.cr0 |= cr0::TS);
    assert_eq!(exit, trapped(7));
    // WAIT: #NM only with MP and TS.
    let (_, _, exit) = exec(TestMode::Long64, &[0x9b], |st, _| st.cr0 |= cr0::TS);
    assert_eq!(exit, Exit::Halted);
    let (_, _, exit) = exec(TestMode::Long64, &[0x9b], |st, _| st.cr0 |= cr0::TS | cr0::MP);
    assert_eq!(exit, trapped(7));
    let (_, _, exit) = exec(TestMode::Long64, &[0x9b], |st, _| st.cr0 |= cr0::EM);
    assert_eq!(exit, Exit::Halted);
}

#[test]
fn unmasked_zero_divide_raises_mf_at_next_waiting_instruction() {
    // FCW 0x037b: ZE unmasked. 1/0: no store, no pop; ES set; FNSTSW (no-wait) reads it; the next
    // waiting instruction (FLD1) faults with #MF before executing.
    let code = cat(&[&FLDCW_RSI, &FLD1, &FLDZ, &FDIVP, &FNSTSW_AX, &FLD1]);
    let (st, _, exit) = exec(TestMode::Long64, &code, |st, bus| {
        st.cr0 |= cr0::NE;
        st.gpr[6] = DATA;
        bus.ram[DATA as usize..DATA as usize + 2].copy_from_slice(&0x037bu16.to_le_bytes());
    });
    assert_eq!(exit, trapped(16));
    assert_eq!(st.rip, CODE + 10, "faults at the second FLD1");
    let f = &st.fpu;
    assert_eq!(st.gpr[0] as u16, f.fsw);
    assert_eq!(f.fsw & (ZE | ES | B), ZE | ES | B);
    assert_eq!(f.top(), 6, "FDIVP neither stored nor popped");
    assert_eq!(f.get(0), 0);
    assert_eq!(f.get(1), ONE);
    assert_eq!(f.fop, 0x6f9, "FOP recorded for the instruction with the unmasked exception");
    assert_eq!(f.fip, CODE + 6);
}

#[test]
fn masked_responses_and_stack_faults() {
    // Masked: 1/0 = +inf with ZE; FSQRT(-1) = indefinite with IE; stack underflow sets SF, C1 = 0;
    // stack overflow sets C1 = 1 and pushes the indefinite.
    let code = cat(&[&FNINIT, &FLD1, &FLDZ, &FDIVP]);
    let (st, _, exit) = exec(TestMode::Long64, &code, |_, _| {});
    assert_eq!(exit, Exit::Halted);
    assert_eq!(st.fpu.get(0), 0x7fff_8000_0000_0000_0000);
    assert_eq!(st.fpu.fsw & 0x7f, ZE);
    let code = cat(&[&FNINIT, &FLD1, &[0xd9, 0xe0], &[0xd9, 0xfa]]); // fld1; fchs; fsqrt
    let (st, _, _) = exec(TestMode::Long64, &code, |_, _| {});
    assert_eq!(st.fpu.get(0), INDEFINITE);
    assert_eq!(st.fpu.fsw & 0x7f, IE);
    let (st, _, _) = exec(TestMode::Long64, &[0xdb, 0xe3, 0xd9, 0xfa], |_, _| {}); // fsqrt on an empty stack
    assert_eq!(st.fpu.fsw & (IE | SF | C1), IE | SF);
    let code: Vec<u8> = std::iter::once(FNINIT).chain(std::iter::repeat_n(FLD1, 9)).flatten().collect();
    let (st, _, _) = exec(TestMode::Long64, &code, |_, _| {});
    assert_eq!(st.fpu.fsw & (IE | SF | C1), IE | SF | C1);
    assert_eq!(st.fpu.get(0), INDEFINITE);
}

#[test]
fn integer_stores_round_by_rc_and_store_indefinite() {
    // (value, RC, expected int32); FIST m32 of ST(0).
    let half = |sign: bool, e: u16, m: u64| f80(sign, e, m);
    let table: &[(u128, u16, u32)] = &[
        (half(false, 0x4000, 0xa000_0000_0000_0000), 0, 2), // 2.5 nearest-even -> 2
        (half(false, 0x4000, 0xa000_0000_0000_0000), 1, 2), // down
        (half(false, 0x4000, 0xa000_0000_0000_0000), 2, 3), // up
        (half(true, 0x4000, 0xa000_0000_0000_0000), 3, (-2i32) as u32), // chop
        (half(false, 0x401e, 0x8000_0000_0000_0000), 0, 0x8000_0000), // 2^31: invalid -> indefinite
        (INDEFINITE, 0, 0x8000_0000),
        (f80(true, 0, 0), 0, 0), // -0
    ];
    for &(v, rc, want) in table {
        let mut bus = TestBus::default();
        let mut st = cpu_in(TestMode::Long64, &mut bus);
        st.fpu.fcw = 0x037f | (rc << 10);
        st.fpu.push(v);
        st.gpr[6] = DATA;
        bus.ram[CODE as usize..CODE as usize + 3].copy_from_slice(&[0xdb, 0x16, 0xf4]); // fist [rsi]
        let mut it = Interpreter::new();
        it.run(&mut st, &mut bus, 100);
        let got = u32::from_le_bytes(bus.ram[DATA as usize..DATA as usize + 4].try_into().unwrap_or([0; 4]));
        assert_eq!(got, want, "value {v:x} rc {rc}");
    }
}

#[test]
fn legacy_ferr_and_ignne_path() {
    // CR0.NE = 0: the next waiting instruction raises FERR# and waits; with IGNNE# it proceeds;
    // FNCLEX drops FERR#.
    let code = cat(&[&FLDCW_RSI, &FLD1, &FLDZ, &FDIVP, &FLD1, &[0xdb, 0xe2]]);
    let mut bus = FerrBus::default();
    let mut st = cpu_in(TestMode::Long64, &mut bus.inner);
    bus.inner.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
    bus.inner.ram[CODE as usize + code.len()] = 0xf4;
    bus.inner.ram[DATA as usize..DATA as usize + 2].copy_from_slice(&0x037bu16.to_le_bytes());
    st.gpr[6] = DATA;
    let mut it = Interpreter::new();
    let exit = it.run(&mut st, &mut bus, 1000);
    assert_eq!(exit, Exit::Halted);
    assert_eq!(st.rip, CODE + 8, "waits at the FLD1 after the error");
    assert_eq!(bus.ferr, vec![true]);
    assert_eq!(st.fpu.top(), 6);
    // IGNNE# asserted (as after an OUT to port 0xF0): the instruction goes on.
    bus.ignne = true;
    st.halted = false;
    let exit = it.run(&mut st, &mut bus, 2000);
    assert_eq!(exit, Exit::Halted);
    assert_eq!(st.rip, CODE + code.len() as u64 + 1);
    assert_eq!(st.fpu.top(), 5);
    assert_eq!(st.fpu.fsw & ES, 0, "FNCLEX cleared the error");
    assert_eq!(bus.ferr, vec![true, false]);
}

#[test]
fn fcmov_and_fcomi_use_eflags() {
    // fld1; fldz; fcomi st(0), st(1) -> CF (0 < 1); fcmovb st(0), st(1) -> ST(0) = 1.
    let code = cat(&[&FNINIT, &FLD1, &FLDZ, &[0xdb, 0xf1], &[0xda, 0xc1]]);
    let (st, _, exit) = exec(TestMode::Long64, &code, |_, _| {});
    assert_eq!(exit, Exit::Halted);
    assert_eq!(st.rflags & (flags::CF | flags::ZF | flags::PF), flags::CF);
    assert_eq!(st.fpu.get(0), ONE);
}

/// The environment image in each operand-size and mode variant.
#[test]
fn fstenv_fldenv_formats() {
    // 32-bit protected: fnstenv [esi] (D9 36) then fldenv back after FNINIT.
    for (mode, bits, prefix) in [
        (TestMode::Prot32, 32, &[][..]),
        (TestMode::Prot32, 16, &[0x66][..]),
        (TestMode::Real, 16, &[][..]),
        (TestMode::Real, 32, &[0x66][..]),
        (TestMode::Long64, 32, &[][..]),
    ] {
        let esc: &[u8] = if mode == TestMode::Real { &[0xd9, 0x34] } else { &[0xd9, 0x36] }; // [si] / [esi]
        let ld: &[u8] = if mode == TestMode::Real { &[0xd9, 0x24] } else { &[0xd9, 0x26] };
        let code = cat(&[&FLD1, &FLD1, prefix, esc, &[0xdb, 0xe3], prefix, ld]);
        let (st, bus, exit) = exec(mode, &code, |st, _| {
            st.gpr[6] = 0x3000;
            st.fpu.fcw = 0x027f;
        });
        assert_eq!(exit, Exit::Halted, "{mode:?} {bits}");
        let img = &bus.ram[0x3000..0x3000 + 28];
        let w = |i: usize| u16::from_le_bytes([img[i], img[i + 1]]);
        let fip_at_fld1 = CODE + 2;
        if bits == 16 {
            assert_eq!(w(0), 0x027f);
            assert_eq!(w(4), 0x0fff, "tags: R7, R6 valid");
            if mode == TestMode::Real {
                assert_eq!(w(6), fip_at_fld1 as u16);
                assert_eq!(w(8), (((fip_at_fld1 >> 16) as u16) << 12) | (st.fpu.fop & 0x7ff));
            } else {
                assert_eq!(w(6), fip_at_fld1 as u16);
                assert_eq!(w(8), 0x08, "FCS");
            }
        } else {
            assert_eq!(w(0), 0x027f);
            assert_eq!(w(2), 0xffff);
            assert_eq!(w(8), 0x0fff);
            assert_eq!(
                u32::from_le_bytes(img[12..16].try_into().unwrap_or([0; 4])) & 0xffff,
                fip_at_fld1 as u32
            );
        }
        // FLDENV restored everything but the registers' contents, which FNINIT left alone.
        assert_eq!(st.fpu.fcw, 0x027f, "{mode:?} {bits}");
        assert_eq!(st.fpu.top(), 6);
        assert_eq!(st.fpu.get(0), ONE);
        assert_eq!(st.fpu.fip, fip_at_fld1);
    }
}

#[test]
fn fsave_frstor_round_trip_and_fnstenv_layout_matches_host() {
    let mut rng = Rng(77);
    for _ in 0..200 {
        let img = rand_image(&mut rng, 30);
        // Host: FRSTOR the image, FNSTENV... via FNSAVE (same header).
        let mut nimg = img;
        let mut mem = [0u8; 16];
        n_fnop(&mut nimg, &mut mem, 2);
        // Ferrite: the same state, FNSAVE (108 bytes) with `fnsave [rsi]`, FRSTOR it back.
        let code = [0xd9, 0xd0, 0xdd, 0x36, 0xdd, 0x26];
        let (st, bus, exit) = exec(TestMode::Long64, &code, |st, _| {
            load_image(&mut st.fpu, &img);
            st.gpr[6] = DATA;
        });
        assert_eq!(exit, Exit::Halted);
        let saved = &bus.ram[DATA as usize..DATA as usize + 108];
        // Control, status, tag dwords (with their reserved upper halves) and the registers match the
        // host's image; the pointer fields hold guest addresses.
        assert_eq!(&saved[0..12], &nimg[0..12]);
        assert_eq!(&saved[28..108], &nimg[28..108]);
        let mut back = st.fpu;
        back.fip = 0;
        back.fcs = 0;
        back.fdp = 0;
        back.fds = 0;
        back.fop = 0;
        let mut orig = FpuState::default();
        load_image(&mut orig, &img);
        assert_eq!(fields_of_state(&back), fields_of_state(&orig));
    }
}

#[test]
fn fop_is_recorded_by_vendor() {
    // FADD ST, ST(3) (D8 C3) on valid operands raises nothing: Intel CPUs (FOP compatibility mode
    // off) leave FOP alone, AMD CPUs record 0x0C3; with an unmasked exception both record it.
    for (q, unmasked, want) in [
        (Quirks::Intel, false, 0),
        (Quirks::Amd, false, 0x0c3),
        (Quirks::Intel, true, 0x0c3),
        (Quirks::Amd, true, 0x0c3),
    ] {
        let (st, _, exit) = exec(TestMode::Long64, &[0xd8, 0xc3], |st, _| {
            st.quirks = q;
            // ST(0) = 1.0 and ST(3) = 3.0, or an SNaN that raises IE (reported at the next FP
            // instruction, so this one completes and HLT follows).
            st.fpu.fcw = if unmasked { 0x037e } else { 0x037f };
            st.fpu.ftw = 0;
            st.fpu.st[0] = 0x3fff_8000_0000_0000_0000;
            st.fpu.st[3] = if unmasked { 0x7fff_a000_0000_0000_0000 } else { 0x4000_c000_0000_0000_0000 };
        });
        assert_eq!(exit, Exit::Halted, "{q:?}");
        assert_eq!(st.fpu.fop, want, "{q:?} unmasked={unmasked}");
    }
}
