//! Edge-biased floating-point and SIMD values for the FP/SIMD families: signed zeros, denormals, the
//! smallest and largest normals, infinities, quiet and signalling NaNs, the integer-indefinite boundaries,
//! x87 unsupported encodings (pseudo-denormals, unnormals, pseudo-NaNs), values inside and outside the
//! transcendental instructions' domains, and the initial x87/SSE control state of a case.

use crate::case::{FpState, Mode};
use crate::rng::Rng;
use iced_x86::MemorySize;

/// A single-precision value (bit pattern).
pub fn f32_value(rng: &mut Rng) -> u32 {
    const EDGES: [u32; 16] = [
        0x0000_0000, // +0
        0x0000_0001, // smallest denormal
        0x007F_FFFF, // largest denormal
        0x0080_0000, // smallest normal
        0x7F7F_FFFF, // largest normal
        0x7F80_0000, // infinity
        0x7FC0_0000, // QNaN (default NaN has the sign set)
        0x7FA0_0000, // SNaN
        0x7F80_0001, // SNaN, low payload
        0x3F80_0000, // 1.0
        0x3F00_0000, // 0.5
        0x3FC0_0000, // 1.5 (rounding ties)
        0x4F00_0000, // 2^31 (cvt* integer-indefinite boundary)
        0x5F00_0000, // 2^63
        0x4EFF_FFFF, // largest float below 2^31
        0x4B80_0000, // 2^24
    ];
    let sign = if rng.chance(40) { 0x8000_0000 } else { 0 };
    sign | match rng.below(10) {
        0..=4 => *rng.pick(&EDGES),
        // Ordinary numbers of moderate magnitude.
        5..=7 => ((0x7F - 20 + rng.below(44) as u32) << 23) | (rng.next_u64() as u32 & 0x7F_FFFF),
        8 => (rng.below(24) as u32 + 0x7F) << 23 | (rng.next_u64() as u32 & 0x7F_F000), // integral-ish
        _ => rng.next_u64() as u32 & 0x7FFF_FFFF,
    }
}

/// A double-precision value (bit pattern).
pub fn f64_value(rng: &mut Rng) -> u64 {
    const EDGES: [u64; 16] = [
        0,
        1,
        0x000F_FFFF_FFFF_FFFF,
        0x0010_0000_0000_0000,
        0x7FEF_FFFF_FFFF_FFFF,
        0x7FF0_0000_0000_0000,
        0x7FF8_0000_0000_0000,
        0x7FF4_0000_0000_0000,
        0x7FF0_0000_0000_0001,
        0x3FF0_0000_0000_0000,
        0x3FE0_0000_0000_0000,
        0x3FF8_0000_0000_0000,
        0x41E0_0000_0000_0000, // 2^31
        0x43E0_0000_0000_0000, // 2^63
        0x41DF_FFFF_FFC0_0000, // 2^31 - 1
        0x3810_0000_0000_0000, // just below the float range (FTZ/underflow on conversion)
    ];
    let sign = if rng.chance(40) { 1 << 63 } else { 0 };
    sign | match rng.below(10) {
        0..=4 => *rng.pick(&EDGES),
        5..=7 => ((0x3FF - 40 + rng.below(84)) << 52) | (rng.next_u64() & 0xF_FFFF_FFFF_FFFF),
        8 => ((0x3FF + rng.below(54)) << 52) | (rng.next_u64() & 0xF_FF00_0000_0000),
        _ => rng.next_u64() & !(1 << 63),
    }
}

/// An 80-bit extended-precision value: 64-bit significand (with the explicit J bit) and sign+exponent.
pub fn f80_value(rng: &mut Rng) -> [u8; 10] {
    const J: u64 = 1 << 63;
    let sign = if rng.chance(40) { 0x8000u16 } else { 0 };
    let (exp, sig): (u16, u64) = match rng.below(20) {
        0 => (0, 0),                                              // zero
        1 => (0, rng.next_u64() >> 1 | 1),                        // denormal
        2 => (0, J | rng.next_u64() >> 1),                        // pseudo-denormal
        3 => (0x7FFF, J),                                         // infinity
        4 => (0x7FFF, J | 1 << 62 | rng.below(2)),                // QNaN
        5 => (0x7FFF, J | 1 << 61),                               // SNaN
        6 => (0x7FFF, rng.next_u64() >> 1), // pseudo-NaN / pseudo-infinity (unsupported)
        7 => (1 + rng.below(0x7FFE) as u16, rng.next_u64() >> 1), // unnormal (unsupported)
        8 => (0x7FFE, u64::MAX),            // largest normal
        9 => (1, J),                        // smallest normal
        10 => (0x3FFF, J),                  // 1.0
        11 => (0x3FFF + 63, J | rng.next_u64() >> 1), // around 2^63 (FSIN/FCOS/FPTAN limit)
        // Ordinary values around 1 (transcendental domains: |x| < 1 for F2XM1, ~0.29 for FYL2XP1).
        12..=16 => (0x3FFF - 8 + rng.below(12) as u16, J | rng.next_u64() >> 1),
        17 => (0x3FFF + rng.below(64) as u16, J | (rng.next_u64() >> 1) & !0xFFFF_FFFF), // integers
        _ => (1 + rng.below(0x7FFE) as u16, J | rng.next_u64() >> 1),
    };
    let mut r = [0u8; 10];
    r[..8].copy_from_slice(&sig.to_le_bytes());
    r[8..].copy_from_slice(&(sign | exp).to_le_bytes());
    r
}

/// An integer operand for FILD/FIST and the SSE integer lanes.
fn int_value(rng: &mut Rng, bytes: usize) -> u64 {
    let v = match rng.below(6) {
        0 => 0,
        1 => 1u64 << (8 * bytes - 1), // most negative: the integer indefinite
        2 => (1u64 << (8 * bytes - 1)) - 1,
        3 => rng.range_i64(-300, 300) as u64,
        _ => rng.next_u64(),
    };
    if bytes == 8 { v } else { v & ((1u64 << (8 * bytes)) - 1) }
}

/// An 18-digit packed BCD value for FBLD (sometimes with invalid nibbles).
fn bcd_value(rng: &mut Rng) -> [u8; 10] {
    let mut r = [0u8; 10];
    for b in r.iter_mut().take(9) {
        *b = if rng.chance(95) {
            (rng.below(10) as u8) << 4 | rng.below(10) as u8
        } else {
            rng.next_u64() as u8
        };
    }
    r[9] = if rng.chance(40) { 0x80 } else { 0 };
    r
}

/// 16 bytes of XMM/MMX lanes of one flavour: floats, doubles, integers or characters.
pub fn vector_value(rng: &mut Rng) -> u128 {
    let mut b = [0u8; 16];
    match rng.below(6) {
        0 => {
            for c in b.chunks_mut(4) {
                c.copy_from_slice(&f32_value(rng).to_le_bytes());
            }
        }
        1 => {
            for c in b.chunks_mut(8) {
                c.copy_from_slice(&f64_value(rng).to_le_bytes());
            }
        }
        2 => {
            let w = *rng.pick(&[1usize, 2, 4, 8]);
            for c in b.chunks_mut(w) {
                c.copy_from_slice(&int_value(rng, w).to_le_bytes()[..w]);
            }
        }
        3 => {
            // Short strings for PCMPxSTRx: letters, digits, sometimes a terminating zero.
            for c in b.iter_mut() {
                *c = *rng.pick(b"aAbBzZ09 -\0\0");
            }
        }
        _ => {
            for c in b.iter_mut() {
                *c = rng.next_u64() as u8;
            }
        }
    }
    u128::from_le_bytes(b)
}

/// Initial contents for a memory operand of the given iced memory size.
pub fn memory_value(rng: &mut Rng, size: MemorySize) -> Vec<u8> {
    use MemorySize as S;
    match size {
        S::Float32 => f32_value(rng).to_le_bytes().to_vec(),
        S::Float64 => f64_value(rng).to_le_bytes().to_vec(),
        S::Float80 => f80_value(rng).to_vec(),
        S::Bcd => bcd_value(rng).to_vec(),
        S::Int16 | S::UInt16 => int_value(rng, 2).to_le_bytes()[..2].to_vec(),
        S::Int32 | S::UInt32 => int_value(rng, 4).to_le_bytes()[..4].to_vec(),
        S::Int64 | S::UInt64 => int_value(rng, 8).to_le_bytes().to_vec(),
        _ => {
            let n = size.size();
            let mut v = Vec::with_capacity(n);
            while v.len() < n {
                v.extend_from_slice(&vector_value(rng).to_le_bytes());
            }
            v.truncate(n);
            v
        }
    }
}

/// A random initial FP/SIMD state: x87 stack with mostly contiguous valid registers from ST(0), FCW with
/// random precision and rounding control and every x87 exception masked, MXCSR with random rounding,
/// DAZ and FTZ and (in about one case in eight) some SIMD exceptions unmasked, sticky flags sometimes set.
pub fn initial_state(rng: &mut Rng, mode: Mode) -> FpState {
    let mut fp = FpState::default();
    let top = rng.below(8) as u16;
    let pc = *rng.pick(&[0u16, 2, 3]);
    let rc = rng.below(4) as u16;
    fp.fcw = 0x0040 | 0x003F | pc << 8 | rc << 10 | if rng.chance(10) { 0x1000 } else { 0 };
    let mut fsw = top << 11;
    if rng.chance(30) {
        fsw |= rng.below(64) as u16 & 0x3D; // sticky IE DE ZE OE UE PE (masked: ES stays clear)
    }
    fsw |= (rng.below(16) as u16 & 0x7) << 8 | (rng.below(2) as u16) << 14; // C0-C2, C3
    fp.fsw = fsw;
    let n = if rng.chance(75) { 2 + rng.below(5) as usize } else { rng.below(9) as usize };
    let contiguous = rng.chance(85);
    for i in 0..8 {
        let valid = if contiguous { i < n } else { rng.chance(50) };
        let p = (top as usize + i) & 7;
        if valid {
            fp.ftw |= 1 << p;
            fp.st[i] = f80_value(rng);
        } else if rng.chance(30) {
            fp.st[i] = f80_value(rng); // stale contents of an empty register
        }
    }
    let mut mxcsr = 0x1F80u32 | (rng.below(4) as u32) << 13;
    if rng.chance(30) {
        mxcsr |= 0x8000; // FTZ
    }
    if rng.chance(30) {
        mxcsr |= 0x40; // DAZ
    }
    if rng.chance(12) {
        mxcsr &= !((rng.below(64) as u32 | 1 << rng.below(6)) << 7); // unmask some: #XM
    }
    if rng.chance(25) {
        mxcsr |= rng.below(64) as u32;
    }
    fp.mxcsr = mxcsr;
    let nx = if mode == Mode::Long64 { 16 } else { 8 };
    for x in fp.xmm.iter_mut().take(nx) {
        *x = vector_value(rng);
    }
    fp
}

/// Random bits 255:128 for the YMM registers a case's mode can name (VEX cases only, drawn after
/// [`initial_state`] so that the other FP cases of a seed are unchanged).
pub fn upper_halves(fp: &mut FpState, rng: &mut Rng, mode: Mode) {
    let n = if mode == Mode::Long64 { 16 } else { 8 };
    for y in fp.ymm_hi.iter_mut().take(n) {
        *y = if rng.chance(10) { 0 } else { vector_value(rng) };
    }
}
