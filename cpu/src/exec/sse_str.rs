//! SSE4.2 packed string compares: PCMPESTRI, PCMPESTRM, PCMPISTRI, PCMPISTRM (SDM vol. 2B
//! "PCMPESTRI", vol. 1 §12.10.4), in plain Rust.
//!
//! imm8[1:0] element format (unsigned/signed bytes/words), [3:2] aggregation (equal any, ranges, equal
//! each, equal ordered), [5:4] polarity, [6] index/mask selection. Explicit lengths come from
//! EAX/EDX (RAX/RDX with REX.W), as absolute values saturated to the element count; implicit lengths
//! end at the first zero element. The index goes to ECX, the mask to XMM0; CF, ZF, SF and OF report
//! as the SDM says, AF and PF are cleared. The memory operand has no alignment requirement.

use super::Insn;
use super::sse::{enter, imm8, read_reg, read_src};
use crate::fault::Fault;
use crate::mem::Ctx;
use crate::state::flags;
use iced_x86::Mnemonic as M;

/// The core: returns (IntRes2 bitmask, len1, len2, element count).
pub fn compare(a: u128, b: u128, imm: u8, len1: Option<i64>, len2: Option<i64>) -> (u32, u32, u32, u32) {
    let words = imm & 1 != 0;
    let signed = imm & 2 != 0;
    let n: u32 = if words { 8 } else { 16 };
    let bits = if words { 16 } else { 8 };
    let elem = |v: u128, i: u32| -> i64 {
        let x = ((v >> (i * bits)) as u64) & ((1u64 << bits) - 1);
        if signed { ((x << (64 - bits)) as i64) >> (64 - bits) } else { x as i64 }
    };
    let implicit_len = |v: u128| (0..n).find(|&i| elem(v, i) == 0).unwrap_or(n);
    let explicit_len = |l: i64| l.unsigned_abs().min(n as u64) as u32;
    let l1 = len1.map(explicit_len).unwrap_or_else(|| implicit_len(a));
    let l2 = len2.map(explicit_len).unwrap_or_else(|| implicit_len(b));
    let agg = (imm >> 2) & 3;
    let mut res1 = 0u32;
    match agg {
        0 => {
            // Equal any: any valid a[i] equals valid b[j].
            for j in 0..l2 {
                if (0..l1).any(|i| elem(a, i) == elem(b, j)) {
                    res1 |= 1 << j;
                }
            }
        }
        1 => {
            // Ranges: a holds (low, high) pairs.
            for j in 0..l2 {
                let x = elem(b, j);
                let mut hit = false;
                let mut i = 0;
                while i + 1 < n {
                    let ge = i < l1 && x >= elem(a, i);
                    let le = i + 1 < l1 && x <= elem(a, i + 1);
                    hit |= ge && le;
                    i += 2;
                }
                if hit {
                    res1 |= 1 << j;
                }
            }
        }
        2 => {
            // Equal each: both invalid -> true, one invalid -> false.
            for j in 0..n {
                let (va, vb) = (j < l1, j < l2);
                let t = match (va, vb) {
                    (true, true) => elem(a, j) == elem(b, j),
                    (false, false) => true,
                    _ => false,
                };
                if t {
                    res1 |= 1 << j;
                }
            }
        }
        _ => {
            // Equal ordered: substring a found in b at position j. An invalid a element matches
            // anything; a valid a element against an invalid b element fails.
            for j in 0..n {
                let mut t = true;
                for i in 0..n - j {
                    let k = i + j;
                    let (va, vb) = (i < l1, k < l2);
                    let r = match (va, vb) {
                        (true, true) => elem(a, i) == elem(b, k),
                        (true, false) => false,
                        _ => true,
                    };
                    t &= r;
                }
                if t {
                    res1 |= 1 << j;
                }
            }
        }
    }
    let all = if n == 16 { 0xffff } else { 0xff };
    let res2 = match (imm >> 4) & 3 {
        1 => res1 ^ all,
        3 => res1 ^ ((1u32 << l2) - 1),
        _ => res1,
    };
    (res2, l1, l2, n)
}

/// All four instructions.
pub fn pcmpstr(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let a = read_reg(ctx, insn.i.op0_register());
    let b = read_src(ctx, insn, 1)?;
    run(ctx, insn.i.mnemonic(), a, b, imm8(insn));
    Ok(())
}

/// The compare `m` (a legacy mnemonic) of `a` and `b` with control `imm`: sets ECX or XMM0 and the
/// flags. Returns whether XMM0 was written (the VEX forms then zero its upper bits).
pub fn run(ctx: &mut Ctx<'_>, m: M, a: u128, b: u128, imm: u8) -> bool {
    let (l1, l2) = match m {
        M::Pcmpestri | M::Pcmpestrm => {
            (Some(ctx.st.gpr[0] as u32 as i32 as i64), Some(ctx.st.gpr[2] as u32 as i32 as i64))
        }
        M::Pcmpestri64 | M::Pcmpestrm64 => (Some(ctx.st.gpr[0] as i64), Some(ctx.st.gpr[2] as i64)),
        _ => (None, None),
    };
    let (res, len1, len2, n) = compare(a, b, imm, l1, l2);
    let index = matches!(m, M::Pcmpestri | M::Pcmpestri64 | M::Pcmpistri);
    if index {
        let idx = if res == 0 {
            n
        } else if imm & 0x40 != 0 {
            31 - res.leading_zeros()
        } else {
            res.trailing_zeros()
        };
        ctx.st.gpr[1] = idx as u64;
    } else {
        let mask = if imm & 0x40 != 0 {
            let bits = if n == 8 { 16 } else { 8 };
            let mut v = 0u128;
            for j in 0..n {
                if (res >> j) & 1 != 0 {
                    v |= ((1u128 << bits) - 1) << (j * bits);
                }
            }
            v
        } else {
            res as u128
        };
        ctx.st.fpu.xmm[0] = mask;
    }
    let mut f = 0;
    if res != 0 {
        f |= flags::CF;
    }
    if len2 < n {
        f |= flags::ZF;
    }
    if len1 < n {
        f |= flags::SF;
    }
    if res & 1 != 0 {
        f |= flags::OF;
    }
    ctx.set_arith_flags(f);
    !index
}
