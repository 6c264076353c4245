//! What SIMD floating point reports when overflow or underflow is *unmasked*: the result is then
//! computed as if the exponent range were unbounded, and PE says whether *that* result was rounded
//! (SDM Vol. 1 11.5.2.3/11.5.2.4, 4.9.1.4-4.9.1.6). The host only runs instructions with every
//! exception masked, whose PE describes the rounded-to-denormal or overflowed result instead, so the
//! lanes that overflow or underflow are recomputed here one by one, exactly:
//!
//! * a product or quotient is inexact at unbounded exponent exactly when the product or quotient of
//!   the two significands (both scaled into [1, 2), an exact operation) is;
//! * a sum or difference that is tiny is always exact (both operands are multiples of the smallest
//!   denormal); one that overflows is recomputed with both operands scaled down by 4 (exact, since
//!   both are large) unless the smaller is below the larger's rounding position;
//! * a double narrowed to single (CVTSD2SS/CVTPD2PS) is inexact when its significand has more than
//!   24 significant bits.
//!
//! DPPS and DPPD detect exceptions stage by stage (products, then each level of sums; SDM Vol. 2
//! DPPS: "Exceptions are determined separately for each add and multiply operation, in the order of
//! their execution"): an unmasked exception in a stage stops the instruction before the next stage
//! reports anything (`ferrite difftest --families sse41 --seed 2024`: no DE from sums of denormal
//! products after an unmasked underflow in the products).

use super::sse_fp::{host, mx};
use iced_x86::Mnemonic as M;

/// The scalar operation of one lane.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    /// Double to single.
    Narrow,
}

/// One lane: operation, precision (double when `dbl`; for [`Op::Narrow`] the source is a double) and
/// the operands' bit patterns.
#[derive(Clone, Copy, Debug)]
struct Lane {
    op: Op,
    dbl: bool,
    x: u64,
    y: u64,
}

fn f32_lane(v: u128, k: usize) -> u64 {
    u64::from((v >> (32 * k)) as u32)
}

fn f64_lane(v: u128, k: usize) -> u64 {
    (v >> (64 * k)) as u64
}

/// The lanes of a two-operand instruction whose results can overflow or underflow, or `None` for a
/// mnemonic this analysis does not cover.
fn lanes(m: M, a: u128, b: u128) -> Option<Vec<Lane>> {
    let s = |op, x, y| Lane { op, dbl: false, x, y };
    let d = |op, x, y| Lane { op, dbl: true, x, y };
    let ps = |op| (0..4).map(|k| s(op, f32_lane(a, k), f32_lane(b, k))).collect::<Vec<_>>();
    let pd = |op| (0..2).map(|k| d(op, f64_lane(a, k), f64_lane(b, k))).collect::<Vec<_>>();
    Some(match m {
        M::Addps => ps(Op::Add),
        M::Subps => ps(Op::Sub),
        M::Mulps => ps(Op::Mul),
        M::Divps => ps(Op::Div),
        M::Addpd => pd(Op::Add),
        M::Subpd => pd(Op::Sub),
        M::Mulpd => pd(Op::Mul),
        M::Divpd => pd(Op::Div),
        M::Addss => vec![s(Op::Add, f32_lane(a, 0), f32_lane(b, 0))],
        M::Subss => vec![s(Op::Sub, f32_lane(a, 0), f32_lane(b, 0))],
        M::Mulss => vec![s(Op::Mul, f32_lane(a, 0), f32_lane(b, 0))],
        M::Divss => vec![s(Op::Div, f32_lane(a, 0), f32_lane(b, 0))],
        M::Addsd => vec![d(Op::Add, f64_lane(a, 0), f64_lane(b, 0))],
        M::Subsd => vec![d(Op::Sub, f64_lane(a, 0), f64_lane(b, 0))],
        M::Mulsd => vec![d(Op::Mul, f64_lane(a, 0), f64_lane(b, 0))],
        M::Divsd => vec![d(Op::Div, f64_lane(a, 0), f64_lane(b, 0))],
        M::Haddps | M::Hsubps => {
            let op = if m == M::Haddps { Op::Add } else { Op::Sub };
            let (a32, b32) = (|k| f32_lane(a, k), |k| f32_lane(b, k));
            vec![s(op, a32(0), a32(1)), s(op, a32(2), a32(3)), s(op, b32(0), b32(1)), s(op, b32(2), b32(3))]
        }
        M::Haddpd | M::Hsubpd => {
            let op = if m == M::Haddpd { Op::Add } else { Op::Sub };
            vec![d(op, f64_lane(a, 0), f64_lane(a, 1)), d(op, f64_lane(b, 0), f64_lane(b, 1))]
        }
        M::Addsubps => (0..4)
            .map(|k| s(if k % 2 == 0 { Op::Sub } else { Op::Add }, f32_lane(a, k), f32_lane(b, k)))
            .collect(),
        M::Addsubpd => {
            vec![d(Op::Sub, f64_lane(a, 0), f64_lane(b, 0)), d(Op::Add, f64_lane(a, 1), f64_lane(b, 1))]
        }
        M::Cvtsd2ss => vec![d(Op::Narrow, f64_lane(b, 0), 0)],
        M::Cvtpd2ps => vec![d(Op::Narrow, f64_lane(b, 0), 0), d(Op::Narrow, f64_lane(b, 1), 0)],
        _ => return None,
    })
}

/// Runs one lane on the host (every exception masked in `mxcsr`): (result bits, flags).
fn run(l: Lane, mxcsr: u32) -> (u64, u32) {
    let (x, y) = (u128::from(l.x), u128::from(l.y));
    let f: host::Op = match (l.op, l.dbl) {
        (Op::Add, false) => host::addss,
        (Op::Sub, false) => host::subss,
        (Op::Mul, false) => host::mulss,
        (Op::Div, false) => host::divss,
        (Op::Add, true) => host::addsd,
        (Op::Sub, true) => host::subsd,
        (Op::Mul, true) => host::mulsd,
        (Op::Div, true) => host::divsd,
        (Op::Narrow, _) => {
            let (r, f) = host::cvtsd2ss(0, x, 0, mxcsr);
            return (r as u32 as u64, f & 0x3f);
        }
    };
    let (r, f) = f(x, y, 0, mxcsr);
    let r = if l.dbl { r as u64 } else { r as u32 as u64 };
    (r, f & 0x3f)
}

/// Field layout of a format: (mantissa bits, exponent mask after the shift, bias).
fn format(dbl: bool) -> (u32, u64, u64) {
    if dbl { (52, 0x7ff, 1023) } else { (23, 0xff, 127) }
}

fn exponent(v: u64, dbl: bool) -> u64 {
    let (mb, em, _) = format(dbl);
    (v >> mb) & em
}

fn is_zero(v: u64, dbl: bool) -> bool {
    let (mb, em, _) = format(dbl);
    v & ((em << mb) | ((1 << mb) - 1)) == 0
}

fn is_special(v: u64, dbl: bool) -> bool {
    let (_, em, _) = format(dbl);
    exponent(v, dbl) == em
}

fn is_denormal(v: u64, dbl: bool) -> bool {
    exponent(v, dbl) == 0 && !is_zero(v, dbl)
}

/// The significand of a finite non-zero `v` as a positive value of the same format in [1, 2).
fn significand(v: u64, dbl: bool) -> u64 {
    let (mb, _, bias) = format(dbl);
    let frac_mask = (1u64 << mb) - 1;
    let mut m = v & frac_mask;
    if exponent(v, dbl) == 0 {
        // Normalise a denormal: move its top set bit to the hidden-bit position.
        let top = 63 - m.leading_zeros();
        m = (m << (mb - top)) & frac_mask;
    }
    (bias << mb) | m
}

/// Whether the lane's result, rounded to its precision with an unbounded exponent, is inexact.
/// `tiny` says the result underflows (else it overflows).
fn inexact_unbounded(l: Lane, tiny: bool) -> bool {
    let all_masked = mx::MASKS;
    match l.op {
        Op::Mul | Op::Div => {
            if [l.x, l.y].iter().any(|&v| is_zero(v, l.dbl) || is_special(v, l.dbl)) {
                return false;
            }
            let q = Lane { x: significand(l.x, l.dbl), y: significand(l.y, l.dbl), ..l };
            run(q, all_masked).1 & mx::PE != 0
        }
        Op::Add | Op::Sub => {
            if tiny {
                return false;
            }
            let (mb, _, _) = format(l.dbl);
            let (ex, ey) = (exponent(l.x, l.dbl), exponent(l.y, l.dbl));
            if ex.abs_diff(ey) > u64::from(mb) + 3 {
                // The smaller operand lies wholly below the larger one's last significand bit.
                let small = if ex < ey { l.x } else { l.y };
                return !is_zero(small, l.dbl);
            }
            if ex.min(ey) <= 2 {
                // An overflowing sum's operands lie near the top of the range, so this is not one and
                // the bounded result's flag is the answer. (The exponent shift below would also borrow
                // from the sign bit.)
                return run(l, all_masked).1 & mx::PE != 0;
            }
            // Both large (an overflowing sum needs an operand near the top of the range): divide both
            // by 4 exactly by lowering their exponents.
            let quarter = |v: u64| v - (2u64 << mb);
            let q = Lane { x: quarter(l.x), y: quarter(l.y), ..l };
            run(q, all_masked).1 & mx::PE != 0
        }
        Op::Narrow => {
            if is_zero(l.x, true) || is_special(l.x, true) {
                return false;
            }
            significand(l.x, true) & ((1 << 29) - 1) != 0
        }
    }
}

/// The PE flag of instruction `m` on (`a`, `b`) under the guest MXCSR `guest`, with the lanes that
/// overflow (OE unmasked) or underflow (UE unmasked) judged at unbounded exponent; `None` when the
/// analysis does not cover `m`.
pub fn precision_flag(m: M, a: u128, b: u128, guest: u32) -> Option<u32> {
    let masks = (guest >> 7) & 0x3f;
    let base = super::sse_fp::host_mxcsr(guest);
    let mut pe = 0;
    for l in lanes(m, a, b)? {
        let (r, f) = run(l, base & !mx::FTZ);
        let rdbl = l.dbl && l.op != Op::Narrow;
        let tiny = f & mx::UE != 0 || is_denormal(r, rdbl);
        let huge = f & mx::OE != 0;
        if (tiny && masks & mx::UE == 0) || (huge && masks & mx::OE == 0) {
            if inexact_unbounded(l, tiny) {
                pe = mx::PE;
            }
        } else {
            pe |= run(l, base).1 & mx::PE;
        }
    }
    Some(pe)
}

/// What one stage of a dot product reports: (flags for MXCSR, whether an unmasked exception stops the
/// instruction). `lanes` are the stage's operations, `raised` the flags of running them together.
fn stage(lanes: &[Lane], raised: u32, guest: u32) -> (u32, bool) {
    const PRE: u32 = mx::IE | mx::DE | mx::ZE;
    let masks = (guest >> 7) & 0x3f;
    let base = super::sse_fp::host_mxcsr(guest);
    let unmasked = raised & !masks;
    if unmasked & PRE != 0 {
        return (raised & PRE, true);
    }
    let mut report = raised & !mx::PE;
    let mut pe = 0;
    let mut fault = unmasked & !mx::PE != 0;
    for &l in lanes {
        let (r, f) = run(l, base & !mx::FTZ);
        let tiny = f & mx::UE != 0 || is_denormal(r, l.dbl);
        let huge = f & mx::OE != 0;
        if tiny && masks & mx::UE == 0 {
            // Unmasked underflow traps on a tiny result even when it is exact.
            report |= mx::UE;
            fault = true;
        }
        if (tiny && masks & mx::UE == 0) || (huge && masks & mx::OE == 0) {
            if inexact_unbounded(l, tiny) {
                pe = mx::PE;
            }
        } else {
            pe |= run(l, base).1 & mx::PE;
        }
    }
    report |= pe;
    if pe & !masks != 0 {
        fault = true;
    }
    (report, fault)
}

/// Runs a stage's lanes: their results, and the flags of all of them together.
fn run_all(lanes: &[Lane], mxcsr: u32) -> (Vec<u64>, u32) {
    lanes.iter().fold((Vec::with_capacity(lanes.len()), 0), |(mut rs, fl), &l| {
        let (r, f) = run(l, mxcsr);
        rs.push(r);
        (rs, fl | f)
    })
}

/// DPPS/DPPD with at least one exception unmasked: the flags to report if a stage raises an unmasked
/// exception (the instruction then faults and writes nothing), or `None` if every stage completes (the
/// caller then reports the whole instruction's flags as usual). `lanes` holds the (a, b) operands of each
/// 128-bit lane: VDPPS ymm runs each stage (products, first sums, final sum) of both lanes before the
/// next stage, as measured on the host (a product that faults in the upper lane stops the instruction
/// before a sum of the lower lane can, and a faulting stage reports the flags of that stage in both lanes).
pub fn dot_product_fault(dbl: bool, lanes: &[(u128, u128)], imm: u8, guest: u32) -> Option<u32> {
    let base = super::sse_fp::host_mxcsr(guest);
    let n = if dbl { 2 } else { 4 };
    let lane = |v: u128, k: usize| if dbl { f64_lane(v, k) } else { f32_lane(v, k) };
    let sel = |k: usize| (imm >> (4 + k)) & 1 != 0;
    // Stage 1: the selected products (unselected lanes are +0 * +0, which raises nothing).
    let muls: Vec<Lane> = lanes
        .iter()
        .flat_map(|&(a, b)| {
            (0..n).map(move |k| {
                let (x, y) = if sel(k) { (lane(a, k), lane(b, k)) } else { (0, 0) };
                Lane { op: Op::Mul, dbl, x, y }
            })
        })
        .collect();
    let mut flags = 0;
    let (products, raised) = run_all(&muls, base);
    let (rep, fault) = stage(&muls, raised, guest);
    flags |= rep;
    if fault {
        return Some(flags);
    }
    // Then pairwise sums until one value per 128-bit lane is left (each lane's values are contiguous and
    // a power of two in number, so pairing the concatenation never mixes lanes).
    let mut level = products;
    while level.len() > lanes.len() {
        let adds: Vec<Lane> = level.chunks(2).map(|p| Lane { op: Op::Add, dbl, x: p[0], y: p[1] }).collect();
        let (next, raised) = run_all(&adds, base);
        let (rep, fault) = stage(&adds, raised, guest);
        flags |= rep;
        if fault {
            return Some(flags);
        }
        level = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(x: f32) -> u64 {
        u64::from(x.to_bits())
    }

    #[test]
    fn significands_of_normals_and_denormals() {
        assert_eq!(significand(f(12.0), false), f(1.5));
        assert_eq!(significand(1, false), f(1.0)); // the smallest denormal
        assert_eq!(significand(3, false), f(1.5));
        assert_eq!(significand(2.5f64.to_bits(), true), 1.25f64.to_bits());
        assert_eq!(significand(1, true), 1.0f64.to_bits());
    }

    #[test]
    fn products_and_sums_at_unbounded_exponent() {
        // 2^-100 * 2^-100 underflows but is exact: no PE, although rounding to a denormal also is exact.
        let tiny = f(f32::from_bits(0x0d80_0000)); // 2^-100
        assert!(!inexact_unbounded(Lane { op: Op::Mul, dbl: false, x: tiny, y: tiny }, true));
        // 3 * 2^-100 squared = 9 * 2^-200: exact at unbounded exponent, inexact as a denormal.
        let t3 = f(f32::from_bits(0x0e40_0000));
        let l = Lane { op: Op::Mul, dbl: false, x: t3, y: t3 };
        assert!(!inexact_unbounded(l, true));
        assert_ne!(run(l, mx::MASKS).1 & mx::PE, 0, "the masked (denormal) result is inexact");
        // (1 + 2^-23)^2 needs 47 bits: inexact whatever the exponent.
        let o = f(f32::from_bits(0x3f80_0001));
        assert!(inexact_unbounded(Lane { op: Op::Mul, dbl: false, x: o, y: o }, false));
        // A tiny sum is exact.
        assert!(!inexact_unbounded(Lane { op: Op::Add, dbl: false, x: 1, y: 2 }, true));
        // MAX + MAX = 2^129 - 2^105: exact at unbounded exponent; MAX + 1 is not.
        let max = f(f32::MAX);
        assert!(!inexact_unbounded(Lane { op: Op::Add, dbl: false, x: max, y: max }, false));
        assert!(inexact_unbounded(Lane { op: Op::Add, dbl: false, x: max, y: f(1.0) }, false));
        // Operands with tiny exponents (not an overflow, but the function must not borrow from the sign
        // bit): the bounded result's flag. 1e-45 + 1 is inexact; 2^-149 + 2^-149 is exact.
        assert!(inexact_unbounded(Lane { op: Op::Add, dbl: false, x: 1, y: f(1.0) }, false));
        assert!(!inexact_unbounded(Lane { op: Op::Add, dbl: false, x: 1, y: 1 }, false));
        assert!(!inexact_unbounded(Lane { op: Op::Sub, dbl: true, x: 1, y: 0 }, false));
        // Narrowing: 2^200 is exact, 2^200 * (1 + 2^-30) is not.
        let p = 2f64.powi(200);
        assert!(!inexact_unbounded(Lane { op: Op::Narrow, dbl: true, x: p.to_bits(), y: 0 }, false));
        let q = p * (1.0 + 2f64.powi(-30));
        assert!(inexact_unbounded(Lane { op: Op::Narrow, dbl: true, x: q.to_bits(), y: 0 }, false));
    }

    #[test]
    fn precision_flag_per_lane() {
        // MULSS of two values whose product is a tiny exact value at unbounded exponent but inexact as a
        // denormal: with UE unmasked PE stays clear; with UE masked it is set.
        let t3 = u128::from(0x0e40_0000u32);
        let ue_unmasked = mx::MASKS & !(mx::UE << 7);
        assert_eq!(precision_flag(M::Mulss, t3, t3, ue_unmasked), Some(0));
        assert_eq!(precision_flag(M::Mulss, t3, t3, mx::MASKS), Some(mx::PE));
        // A second, normal and inexact lane still reports PE.
        let third = u128::from((1.0f32 / 3.0).to_bits()) << 32;
        assert_eq!(
            precision_flag(M::Mulps, t3 | third, t3 | (u128::from(3.0f32.to_bits()) << 32), ue_unmasked),
            Some(mx::PE)
        );
        assert_eq!(precision_flag(M::Sqrtps, 0, 0, mx::MASKS), None);
    }

    #[test]
    fn dot_product_stops_at_the_faulting_stage() {
        // Products of 2^-70 * 2^-70 are tiny (UE unmasked): the sums of these denormals would raise DE,
        // but the instruction stops after the products.
        let t = 0x1c80_0000u128; // 2^-70
        let a = t | (t << 32);
        let guest = mx::MASKS & !(mx::UE << 7);
        let got = dot_product_fault(false, &[(a, a)], 0x3f, guest).expect("the products fault");
        assert_eq!(got & mx::DE, 0);
        assert_ne!(got & mx::UE, 0);
        // Everything masked: nothing faults.
        assert_eq!(dot_product_fault(false, &[(a, a)], 0x3f, mx::MASKS), None);
    }
}
