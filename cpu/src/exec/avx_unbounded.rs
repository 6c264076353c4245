//! PE at unbounded exponent for the fused and half-precision operations (FMA, VCVTPS2PH), the
//! counterpart of [`super::sse_unbounded`]: with overflow or underflow unmasked, an element that
//! overflows or underflows reports PE only when its result rounded with an unbounded exponent is
//! inexact; the masked host run reports PE for the overflowed or denormalised result instead
//! (`ferrite difftest --families vex`: `vfnmadd213sd` with UE unmasked, `vcvtps2ph` with OE unmasked).
//!
//! Each element is rerun alone on the host (every exception masked, FTZ clear) to learn whether it
//! overflows or is tiny; such an element's PE is then decided exactly:
//! * FMA: the exact value x*y + z (signs included) is an integer times a power of two; it is exact at
//!   unbounded exponent when its significant bits span at most the precision (24 or 53 bits);
//! * VCVTPS2PH: a single is exact in half precision at unbounded exponent when its significand has at
//!   most 11 significant bits. A denormal single source is the exception: the host then reports the
//!   PE of the denormalised half (measured with `ferrite difftest --families vex --seed 173809702`:
//!   case 17587, a denormal single with UE unmasked, reports PE although the unbounded result is
//!   exact; case 26706, a normal single with UE unmasked, and case 9082, OE unmasked, report no PE for
//!   exact unbounded results).

use super::avx_fp::host;
use super::sse_fp::{host_mxcsr, mx};

/// A finite value as (negative, integer significand, exponent of its least significant bit), or
/// `None` for zero (or a denormal under DAZ), infinities and NaNs.
fn parts(bits: u64, dbl: bool, daz: bool) -> Option<(bool, u64, i32)> {
    let (mbits, emax, bias) = if dbl { (52, 0x7ff, 1075) } else { (23, 0xff, 150) };
    let neg = bits >> (if dbl { 63 } else { 31 }) & 1 != 0;
    let exp = ((bits >> mbits) & emax) as i32;
    let mant = bits & ((1u64 << mbits) - 1);
    if exp == emax as i32 || (exp == 0 && (mant == 0 || daz)) {
        return None;
    }
    if exp == 0 { Some((neg, mant, 1 - bias)) } else { Some((neg, mant | 1 << mbits, exp - bias)) }
}

/// A 512-bit unsigned integer, little-endian 64-bit limbs.
type Big = [u64; 8];

fn big_shl(v: u128, s: u32) -> Big {
    let mut r = [0u64; 8];
    for bit in 0..128 {
        if (v >> bit) & 1 != 0 {
            let b = bit + s;
            if b < 512 {
                r[(b / 64) as usize] |= 1 << (b % 64);
            }
        }
    }
    r
}

fn big_cmp(a: &Big, b: &Big) -> std::cmp::Ordering {
    for k in (0..8).rev() {
        if a[k] != b[k] {
            return a[k].cmp(&b[k]);
        }
    }
    std::cmp::Ordering::Equal
}

fn big_add(a: &Big, b: &Big) -> Big {
    let mut r = [0u64; 8];
    let mut c = 0u64;
    for k in 0..8 {
        let (s1, o1) = a[k].overflowing_add(b[k]);
        let (s2, o2) = s1.overflowing_add(c);
        r[k] = s2;
        c = (o1 | o2) as u64;
    }
    r
}

/// `a - b` for `a >= b`.
fn big_sub(a: &Big, b: &Big) -> Big {
    let mut r = [0u64; 8];
    let mut br = 0u64;
    for k in 0..8 {
        let (d1, o1) = a[k].overflowing_sub(b[k]);
        let (d2, o2) = d1.overflowing_sub(br);
        r[k] = d2;
        br = (o1 | o2) as u64;
    }
    r
}

/// Number of bits from the highest to the lowest set bit (0 for zero).
fn big_span(v: &Big) -> u32 {
    let hi = (0..8).rev().find(|&k| v[k] != 0);
    let lo = (0..8).find(|&k| v[k] != 0);
    match (hi, lo) {
        (Some(h), Some(l)) => {
            let top = h as u32 * 64 + 64 - v[h].leading_zeros();
            let bot = l as u32 * 64 + v[l].trailing_zeros();
            top - bot
        }
        _ => 0,
    }
}

/// Whether `(negate_product ? -1 : 1) * x * y + (negate_addend ? -1 : 1) * z` is inexact in the
/// format's precision at unbounded exponent.
fn fma_inexact(x: u64, y: u64, z: u64, dbl: bool, neg_p: bool, neg_z: bool, daz: bool) -> bool {
    let p = if dbl { 53 } else { 24 };
    let (Some((sx, mx_, ex)), Some((sy, my, ey))) = (parts(x, dbl, daz), parts(y, dbl, daz)) else {
        // A zero product: the result is z, exact.
        return false;
    };
    let prod = mx_ as u128 * my as u128;
    let pneg = sx ^ sy ^ neg_p;
    let pe = ex + ey;
    let Some((sz, mz, ez)) = parts(z, dbl, daz) else {
        return big_span(&big_shl(prod, 0)) > p;
    };
    let zneg = sz ^ neg_z;
    let emin = pe.min(ez);
    let (sp, sz_) = ((pe - emin) as u32, (ez - emin) as u32);
    if sp.max(sz_) > 300 {
        // The two terms are too far apart to cancel: the sum spans more than the precision.
        return true;
    }
    let (a, b) = (big_shl(prod, sp), big_shl(mz as u128, sz_));
    let sum = if pneg == zneg {
        big_add(&a, &b)
    } else if big_cmp(&a, &b) != std::cmp::Ordering::Less {
        big_sub(&a, &b)
    } else {
        big_sub(&b, &a)
    };
    big_span(&sum) > p
}

/// The roles of an FMA mnemonic: (product operands and addend as indices into [dst, src2, src3],
/// product negated, addend negated for even elements, addend negated for odd elements).
fn fma_roles(name: &str) -> Option<([usize; 3], bool, bool, bool)> {
    let order = if name.contains("132") {
        [0, 2, 1]
    } else if name.contains("213") {
        [1, 0, 2]
    } else if name.contains("231") {
        [1, 2, 0]
    } else {
        return None;
    };
    let (np, ne, no) = if name.starts_with("vfmaddsub") {
        (false, true, false)
    } else if name.starts_with("vfmsubadd") {
        (false, false, true)
    } else if name.starts_with("vfnmadd") {
        (true, false, false)
    } else if name.starts_with("vfnmsub") {
        (true, true, true)
    } else if name.starts_with("vfmsub") {
        (false, true, true)
    } else {
        (false, false, false)
    };
    Some((order, np, ne, no))
}

/// The PE flag of one 128-bit lane of an FMA instruction (`name` is its lower-case mnemonic) on
/// (`a` = destination, `b`, `c`) under guest MXCSR `guest`, with overflowing or tiny elements judged at
/// unbounded exponent when OE or UE is unmasked; `None` when the mnemonic is not an FMA one.
pub fn fma_precision_flag(f: host::Fma, name: &str, a: u128, b: u128, c: u128, guest: u32) -> Option<u32> {
    let (order, np, ne, no) = fma_roles(name)?;
    let dbl = name.ends_with('d');
    let scalar = name.ends_with("ss") || name.ends_with("sd");
    let (bits, n) = if dbl { (64, 2) } else { (32, 4) };
    let n = if scalar { 1 } else { n };
    let masks = (guest >> 7) & 0x3f;
    let daz = guest & mx::DAZ != 0;
    let emask = if bits == 64 { u64::MAX as u128 } else { u32::MAX as u128 };
    let mut pe = 0;
    for k in 0..n {
        let sh = k * bits;
        let el = |v: u128| (v >> sh) & emask;
        let (ea, eb, ec) = (el(a), el(b), el(c));
        let (_, fl) = f(ea << sh, eb << sh, ec << sh, host_mxcsr(guest) & !mx::FTZ);
        let tiny = fl & mx::UE != 0;
        let huge = fl & mx::OE != 0;
        if (tiny && masks & mx::UE == 0) || (huge && masks & mx::OE == 0) {
            let ops = [ea as u64, eb as u64, ec as u64];
            let neg_z = if k % 2 == 0 { ne } else { no };
            if fma_inexact(ops[order[0]], ops[order[1]], ops[order[2]], dbl, np, neg_z, daz) {
                pe = mx::PE;
            }
        } else {
            // The element's own PE under the guest's MXCSR, FTZ included when UE is masked (the only
            // case FTZ applies): a masked underflow flushed to zero is inexact even when the denormal
            // result would be exact (seed 0x5eed0001 case 97743); with UE unmasked an exact tiny result
            // traps instead and is not flushed (cases 50914, 58171).
            let m = if masks & mx::UE != 0 { host_mxcsr(guest) } else { host_mxcsr(guest) & !mx::FTZ };
            pe |= f(ea << sh, eb << sh, ec << sh, m).1 & mx::PE;
        }
    }
    Some(pe)
}

/// The PE flag of VCVTPS2PH on the four singles of `s` with control `imm` under guest MXCSR
/// `guest`, overflowing or tiny elements (of a normal source) judged at unbounded exponent when OE or
/// UE is unmasked.
pub fn cvtps2ph_precision_flag(s: u128, imm: u8, guest: u32) -> u32 {
    let masks = (guest >> 7) & 0x3f;
    let daz = guest & mx::DAZ != 0;
    let mut pe = 0;
    for k in 0..4 {
        let x = (s >> (32 * k)) as u32;
        let (_, fl) = host::vcvtps2ph(x as u128, imm, host_mxcsr(guest) & !mx::FTZ);
        let tiny = fl & mx::UE != 0;
        let huge = fl & mx::OE != 0;
        let denormal_source = x & 0x7f80_0000 == 0;
        if (huge && masks & mx::OE == 0) || (tiny && masks & mx::UE == 0 && !denormal_source) {
            if let Some((_, m, _)) = parts(x as u64, false, daz) {
                let nb = 64 - m.leading_zeros();
                if nb > 11 && m & ((1u64 << (nb - 11)) - 1) != 0 {
                    pe = mx::PE;
                }
            }
        } else {
            pe |= fl & mx::PE;
        }
    }
    pe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fma_exactness() {
        let one = 0x3ff0_0000_0000_0000u64;
        let two = 0x4000_0000_0000_0000u64;
        let third = 0x3fd5_5555_5555_5555u64;
        // 1*2 + 1 = 3: exact.
        assert!(!fma_inexact(one, two, one, true, false, false, false));
        // third*third + 1 has more than 53 significant bits.
        assert!(fma_inexact(third, third, one, true, false, false, false));
        // 1*1 - 1 = 0: exact (cancellation), and a zero product gives the addend.
        assert!(!fma_inexact(one, one, one, true, false, true, false));
        assert!(!fma_inexact(0, third, third, true, false, false, false));
        // Far-apart terms: 1 + 2^-600.
        let tiny = (1023u64 - 600) << 52;
        assert!(fma_inexact(one, one, tiny, true, false, false, false));
        // Singles: 3 * 3 + 2^-30 needs more than 24 bits.
        let three = 0x4040_0000u64;
        let small = (127u64 - 30) << 23;
        assert!(fma_inexact(three, three, small, false, false, false, false));
        assert!(!fma_inexact(three, three, three, false, false, false, false));
    }

    #[test]
    fn fma_roles_by_form() {
        assert_eq!(fma_roles("vfmadd132ps"), Some(([0, 2, 1], false, false, false)));
        assert_eq!(fma_roles("vfnmsub231sd"), Some(([1, 2, 0], true, true, true)));
        assert_eq!(fma_roles("vfmaddsub213pd"), Some(([1, 0, 2], false, true, false)));
        assert_eq!(fma_roles("vaddps"), None);
    }
}
