//! Integer SIMD (MMX, SSE2, SSSE3, SSE4.1), bitwise FP logic, shuffles, unpacks, blends, packs, AES
//! rounds (AES-NI) and carry-less multiplication (PCLMULQDQ), in plain Rust (no host intrinsics).
//!
//! One handler, [`int_op`], serves every "destination = f(destination, source, imm8, XMM0)"
//! instruction; the width (8 bytes for MM registers, 16 for XMM) comes from the destination register,
//! and [`compute`] does the lane arithmetic on `u128` values (MMX forms use the low 64 bits).

use super::Insn;
use super::sse::{enter, imm8, read_reg, read_src, write_reg};
use crate::fault::Fault;
use crate::mem::Ctx;
use iced_x86::{Mnemonic as M, OpKind};

/// All-ones mask of `bits` (1..=64) bits.
#[inline]
pub const fn lane_mask(bits: u32) -> u64 {
    if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

#[inline]
fn get(v: u128, i: u32, bits: u32) -> u64 {
    ((v >> (i * bits)) as u64) & lane_mask(bits)
}

#[inline]
fn put(r: &mut u128, i: u32, bits: u32, x: u64) {
    *r |= ((x & lane_mask(bits)) as u128) << (i * bits);
}

#[inline]
fn sx(x: u64, bits: u32) -> i64 {
    ((x << (64 - bits)) as i64) >> (64 - bits)
}

#[inline]
fn sat_s(v: i64, bits: u32) -> u64 {
    let lo = -(1i64 << (bits - 1));
    let hi = (1i64 << (bits - 1)) - 1;
    v.clamp(lo, hi) as u64 & lane_mask(bits)
}

#[inline]
fn sat_u(v: i64, bits: u32) -> u64 {
    v.clamp(0, lane_mask(bits) as i64) as u64
}

#[inline]
fn map2(a: u128, b: u128, bits: u32, w: u32, f: impl Fn(u64, u64) -> u64) -> u128 {
    let mut r = 0;
    for i in 0..w * 8 / bits {
        put(&mut r, i, bits, f(get(a, i, bits), get(b, i, bits)));
    }
    r
}

#[inline]
fn map1(b: u128, bits: u32, w: u32, f: impl Fn(u64) -> u64) -> u128 {
    map2(0, b, bits, w, |_, y| f(y))
}

/// Signed lane-wise binary op.
#[inline]
fn map2s(a: u128, b: u128, bits: u32, w: u32, f: impl Fn(i64, i64) -> i64) -> u128 {
    map2(a, b, bits, w, |x, y| f(sx(x, bits), sx(y, bits)) as u64)
}

/// PACKSS/PACKUS: `bits`-wide source lanes of a then b, narrowed with `sat`.
fn pack(a: u128, b: u128, bits: u32, w: u32, sat: impl Fn(i64) -> u64) -> u128 {
    let n = w * 8 / bits;
    let mut r = 0;
    for i in 0..n {
        put(&mut r, i, bits / 2, sat(sx(get(a, i, bits), bits)));
        put(&mut r, n + i, bits / 2, sat(sx(get(b, i, bits), bits)));
    }
    r
}

/// PUNPCKL*/PUNPCKH*: interleave the low (or high) halves.
fn unpack(a: u128, b: u128, bits: u32, w: u32, high: bool) -> u128 {
    let n = w * 8 / bits / 2;
    let base = if high { n } else { 0 };
    let mut r = 0;
    for i in 0..n {
        put(&mut r, 2 * i, bits, get(a, base + i, bits));
        put(&mut r, 2 * i + 1, bits, get(b, base + i, bits));
    }
    r
}

/// Horizontal pairwise op (PHADD*/PHSUB*): low half of the result from a, high half from b.
fn horiz(a: u128, b: u128, bits: u32, w: u32, f: impl Fn(i64, i64) -> u64) -> u128 {
    let n = w * 8 / bits;
    let h = n / 2;
    let mut r = 0;
    for i in 0..h {
        put(&mut r, i, bits, f(sx(get(a, 2 * i, bits), bits), sx(get(a, 2 * i + 1, bits), bits)));
        put(&mut r, h + i, bits, f(sx(get(b, 2 * i, bits), bits), sx(get(b, 2 * i + 1, bits), bits)));
    }
    r
}

/// Shifts each lane by a count (from the source operand's low 64 bits or an imm8).
fn shift(a: u128, count: u128, bits: u32, w: u32, kind: u8) -> u128 {
    // Only the low 64 bits of an XMM/m128 count matter.
    let c = count as u64;
    map2(a, 0, bits, w, |x, _| match kind {
        0 => {
            if c >= bits as u64 {
                0
            } else {
                x << c
            }
        }
        1 => {
            if c >= bits as u64 {
                0
            } else {
                x >> c
            }
        }
        _ => (sx(x, bits) >> c.min(bits as u64 - 1)) as u64,
    })
}

/// Carry-less 64 x 64 -> 128 multiplication.
pub fn clmul(a: u64, b: u64) -> u128 {
    let mut r = 0u128;
    for i in 0..64 {
        if (b >> i) & 1 != 0 {
            r ^= (a as u128) << i;
        }
    }
    r
}

/// The result of instruction `m` on destination `a`, source `b`, imm8 `imm` and XMM0 `x0` at width `w`
/// bytes, or `None` when `m` is not handled here.
pub fn compute(m: M, a: u128, b: u128, imm: u8, x0: u128, w: u32) -> Option<u128> {
    let im = imm as u32;
    Some(match m {
        M::Paddb => map2(a, b, 8, w, u64::wrapping_add),
        M::Paddw => map2(a, b, 16, w, u64::wrapping_add),
        M::Paddd => map2(a, b, 32, w, u64::wrapping_add),
        M::Paddq => map2(a, b, 64, w, u64::wrapping_add),
        M::Psubb => map2(a, b, 8, w, u64::wrapping_sub),
        M::Psubw => map2(a, b, 16, w, u64::wrapping_sub),
        M::Psubd => map2(a, b, 32, w, u64::wrapping_sub),
        M::Psubq => map2(a, b, 64, w, u64::wrapping_sub),
        M::Paddsb => map2s(a, b, 8, w, |x, y| sat_s(x + y, 8) as i64),
        M::Paddsw => map2s(a, b, 16, w, |x, y| sat_s(x + y, 16) as i64),
        M::Psubsb => map2s(a, b, 8, w, |x, y| sat_s(x - y, 8) as i64),
        M::Psubsw => map2s(a, b, 16, w, |x, y| sat_s(x - y, 16) as i64),
        M::Paddusb => map2(a, b, 8, w, |x, y| sat_u((x + y) as i64, 8)),
        M::Paddusw => map2(a, b, 16, w, |x, y| sat_u((x + y) as i64, 16)),
        M::Psubusb => map2(a, b, 8, w, |x, y| sat_u(x as i64 - y as i64, 8)),
        M::Psubusw => map2(a, b, 16, w, |x, y| sat_u(x as i64 - y as i64, 16)),
        M::Pmullw => map2s(a, b, 16, w, |x, y| x * y),
        M::Pmulhw => map2s(a, b, 16, w, |x, y| (x * y) >> 16),
        M::Pmulhuw => map2(a, b, 16, w, |x, y| (x * y) >> 16),
        M::Pmulhrsw => map2s(a, b, 16, w, |x, y| (((x * y) >> 14) + 1) >> 1),
        M::Pmulld => map2(a, b, 32, w, u64::wrapping_mul),
        M::Pmuludq => map2(a, b, 64, w, |x, y| (x & 0xffff_ffff) * (y & 0xffff_ffff)),
        M::Pmuldq => map2(a, b, 64, w, |x, y| (sx(x, 32) * sx(y, 32)) as u64),
        M::Pmaddwd => map2(a, b, 32, w, |x, y| {
            let p0 = sx(x & 0xffff, 16) * sx(y & 0xffff, 16);
            let p1 = sx(x >> 16, 16) * sx(y >> 16, 16);
            p0.wrapping_add(p1) as u64
        }),
        M::Pmaddubsw => map2(a, b, 16, w, |x, y| {
            let p0 = (x & 0xff) as i64 * sx(y & 0xff, 8);
            let p1 = (x >> 8) as i64 * sx(y >> 8, 8);
            sat_s(p0 + p1, 16)
        }),
        M::Pavgb => map2(a, b, 8, w, |x, y| (x + y + 1) >> 1),
        M::Pavgw => map2(a, b, 16, w, |x, y| (x + y + 1) >> 1),
        M::Pminub => map2(a, b, 8, w, u64::min),
        M::Pminuw => map2(a, b, 16, w, u64::min),
        M::Pminud => map2(a, b, 32, w, u64::min),
        M::Pmaxub => map2(a, b, 8, w, u64::max),
        M::Pmaxuw => map2(a, b, 16, w, u64::max),
        M::Pmaxud => map2(a, b, 32, w, u64::max),
        M::Pminsb => map2s(a, b, 8, w, i64::min),
        M::Pminsw => map2s(a, b, 16, w, i64::min),
        M::Pminsd => map2s(a, b, 32, w, i64::min),
        M::Pmaxsb => map2s(a, b, 8, w, i64::max),
        M::Pmaxsw => map2s(a, b, 16, w, i64::max),
        M::Pmaxsd => map2s(a, b, 32, w, i64::max),
        M::Psadbw => map2(a, b, 64, w, |x, y| {
            (0..8).map(|k| ((x >> (8 * k)) & 0xff).abs_diff((y >> (8 * k)) & 0xff)).sum()
        }),
        M::Pcmpeqb => map2(a, b, 8, w, |x, y| if x == y { u64::MAX } else { 0 }),
        M::Pcmpeqw => map2(a, b, 16, w, |x, y| if x == y { u64::MAX } else { 0 }),
        M::Pcmpeqd => map2(a, b, 32, w, |x, y| if x == y { u64::MAX } else { 0 }),
        M::Pcmpeqq => map2(a, b, 64, w, |x, y| if x == y { u64::MAX } else { 0 }),
        M::Pcmpgtb => map2s(a, b, 8, w, |x, y| -((x > y) as i64)),
        M::Pcmpgtw => map2s(a, b, 16, w, |x, y| -((x > y) as i64)),
        M::Pcmpgtd => map2s(a, b, 32, w, |x, y| -((x > y) as i64)),
        M::Pcmpgtq => map2s(a, b, 64, w, |x, y| -((x > y) as i64)),
        M::Pand | M::Andps | M::Andpd => a & b,
        M::Pandn | M::Andnps | M::Andnpd => !a & b,
        M::Por | M::Orps | M::Orpd => a | b,
        M::Pxor | M::Xorps | M::Xorpd => a ^ b,
        M::Packsswb => pack(a, b, 16, w, |v| sat_s(v, 8)),
        M::Packssdw => pack(a, b, 32, w, |v| sat_s(v, 16)),
        M::Packuswb => pack(a, b, 16, w, |v| sat_u(v, 8)),
        M::Packusdw => pack(a, b, 32, w, |v| sat_u(v, 16)),
        M::Punpcklbw => unpack(a, b, 8, w, false),
        M::Punpcklwd => unpack(a, b, 16, w, false),
        M::Punpckldq | M::Unpcklps => unpack(a, b, 32, w, false),
        M::Punpcklqdq | M::Unpcklpd => unpack(a, b, 64, w, false),
        M::Punpckhbw => unpack(a, b, 8, w, true),
        M::Punpckhwd => unpack(a, b, 16, w, true),
        M::Punpckhdq | M::Unpckhps => unpack(a, b, 32, w, true),
        M::Punpckhqdq | M::Unpckhpd => unpack(a, b, 64, w, true),
        M::Psllw => shift(a, b, 16, w, 0),
        M::Pslld => shift(a, b, 32, w, 0),
        M::Psllq => shift(a, b, 64, w, 0),
        M::Psrlw => shift(a, b, 16, w, 1),
        M::Psrld => shift(a, b, 32, w, 1),
        M::Psrlq => shift(a, b, 64, w, 1),
        M::Psraw => shift(a, b, 16, w, 2),
        M::Psrad => shift(a, b, 32, w, 2),
        M::Pslldq => {
            if im > 15 {
                0
            } else {
                a << (im * 8)
            }
        }
        M::Psrldq => {
            if im > 15 {
                0
            } else {
                a >> (im * 8)
            }
        }
        M::Pshufb => {
            let mut r = 0;
            for i in 0..w {
                let s = get(b, i, 8);
                if s & 0x80 == 0 {
                    put(&mut r, i, 8, get(a, (s as u32) & (w - 1), 8));
                }
            }
            r
        }
        M::Palignr => {
            // (a:b) >> (imm * 8), low w bytes; the concatenation is 2w bytes wide.
            let mut r = 0;
            for i in 0..w {
                let k = i + im;
                let byte = if k < w {
                    get(b, k, 8)
                } else if k < 2 * w {
                    get(a, k - w, 8)
                } else {
                    0
                };
                put(&mut r, i, 8, byte);
            }
            r
        }
        M::Phaddw => horiz(a, b, 16, w, |x, y| (x + y) as u64),
        M::Phaddd => horiz(a, b, 32, w, |x, y| (x + y) as u64),
        M::Phaddsw => horiz(a, b, 16, w, |x, y| sat_s(x + y, 16)),
        M::Phsubw => horiz(a, b, 16, w, |x, y| (x - y) as u64),
        M::Phsubd => horiz(a, b, 32, w, |x, y| (x - y) as u64),
        M::Phsubsw => horiz(a, b, 16, w, |x, y| sat_s(x - y, 16)),
        M::Psignb => map2s(a, b, 8, w, |x, y| x * y.signum()),
        M::Psignw => map2s(a, b, 16, w, |x, y| x * y.signum()),
        M::Psignd => map2s(a, b, 32, w, |x, y| x * y.signum()),
        M::Pabsb => map1(b, 8, w, |y| sx(y, 8).unsigned_abs()),
        M::Pabsw => map1(b, 16, w, |y| sx(y, 16).unsigned_abs()),
        M::Pabsd => map1(b, 32, w, |y| sx(y, 32).unsigned_abs()),
        M::Pblendw => blend(a, b, 16, |i| (im >> i) & 1 != 0),
        M::Blendps => blend(a, b, 32, |i| (im >> i) & 1 != 0),
        M::Blendpd => blend(a, b, 64, |i| (im >> i) & 1 != 0),
        M::Pblendvb => blend(a, b, 8, |i| (x0 >> (i * 8 + 7)) & 1 != 0),
        M::Blendvps => blend(a, b, 32, |i| (x0 >> (i * 32 + 31)) & 1 != 0),
        M::Blendvpd => blend(a, b, 64, |i| (x0 >> (i * 64 + 63)) & 1 != 0),
        M::Mpsadbw => {
            let ao = ((im >> 2) & 1) * 4;
            let bo = (im & 3) * 4;
            let mut r = 0;
            for i in 0..8 {
                let s: u64 = (0..4).map(|j| get(a, ao + i + j, 8).abs_diff(get(b, bo + j, 8))).sum();
                put(&mut r, i, 16, s);
            }
            r
        }
        M::Phminposuw => {
            let (mut best, mut idx) = (get(b, 0, 16), 0u64);
            for i in 1..8 {
                let v = get(b, i, 16);
                if v < best {
                    best = v;
                    idx = i as u64;
                }
            }
            (best | (idx << 16)) as u128
        }
        M::Pmovsxbw => extend(b, 8, 16, true),
        M::Pmovsxbd => extend(b, 8, 32, true),
        M::Pmovsxbq => extend(b, 8, 64, true),
        M::Pmovsxwd => extend(b, 16, 32, true),
        M::Pmovsxwq => extend(b, 16, 64, true),
        M::Pmovsxdq => extend(b, 32, 64, true),
        M::Pmovzxbw => extend(b, 8, 16, false),
        M::Pmovzxbd => extend(b, 8, 32, false),
        M::Pmovzxbq => extend(b, 8, 64, false),
        M::Pmovzxwd => extend(b, 16, 32, false),
        M::Pmovzxwq => extend(b, 16, 64, false),
        M::Pmovzxdq => extend(b, 32, 64, false),
        M::Pshufd => perm(b, 32, 4, 0, im),
        M::Pshufw => perm(b, 16, 4, 0, im),
        M::Pshuflw => (b & !(u64::MAX as u128)) | perm(b, 16, 4, 0, im),
        M::Pshufhw => (b & u64::MAX as u128) | perm(b, 16, 4, 4, im),
        M::Shufps => {
            let mut r = 0;
            put(&mut r, 0, 32, get(a, im & 3, 32));
            put(&mut r, 1, 32, get(a, (im >> 2) & 3, 32));
            put(&mut r, 2, 32, get(b, (im >> 4) & 3, 32));
            put(&mut r, 3, 32, get(b, (im >> 6) & 3, 32));
            r
        }
        M::Shufpd => {
            let mut r = 0;
            put(&mut r, 0, 64, get(a, im & 1, 64));
            put(&mut r, 1, 64, get(b, (im >> 1) & 1, 64));
            r
        }
        M::Movsldup => perm(b, 32, 4, 0, 0b10_10_00_00),
        M::Movshdup => perm(b, 32, 4, 0, 0b11_11_01_01),
        M::Movddup => perm(b, 64, 2, 0, 0b00),
        M::Insertps => {
            let e = get(b, (im >> 6) & 3, 32);
            let d = (im >> 4) & 3;
            let mut r = a & !((u32::MAX as u128) << (d * 32));
            put(&mut r, d, 32, e);
            for i in 0..4 {
                if (im >> i) & 1 != 0 {
                    r &= !((u32::MAX as u128) << (i * 32));
                }
            }
            r
        }
        M::Pclmulqdq => clmul(get(a, im & 1, 64), get(b, (im >> 4) & 1, 64)),
        M::Aesenc => aes::enc(a, b, false),
        M::Aesenclast => aes::enc(a, b, true),
        M::Aesdec => aes::dec(a, b, false),
        M::Aesdeclast => aes::dec(a, b, true),
        M::Aesimc => aes::inv_mix_columns(b),
        M::Aeskeygenassist => aes::keygen_assist(b, imm),
        _ => return None,
    })
}

/// Whether [`compute`] handles mnemonic `m`.
pub fn handles(m: M) -> bool {
    compute(m, 0, 0, 0, 0, 16).is_some()
}

fn blend(a: u128, b: u128, bits: u32, take_b: impl Fn(u32) -> bool) -> u128 {
    let mut r = 0;
    for i in 0..128 / bits {
        put(&mut r, i, bits, if take_b(i) { get(b, i, bits) } else { get(a, i, bits) });
    }
    r
}

fn extend(b: u128, from: u32, to: u32, signed: bool) -> u128 {
    let mut r = 0;
    for i in 0..128 / to {
        let x = get(b, i, from);
        put(&mut r, i, to, if signed { sx(x, from) as u64 } else { x });
    }
    r
}

/// `n` lanes of `bits` starting at lane `base`, each selected from the same group by 2-bit fields
/// of `sel`; lanes outside the group are zero (callers merge).
fn perm(b: u128, bits: u32, n: u32, base: u32, sel: u32) -> u128 {
    let mut r = 0;
    for i in 0..n {
        let k = base + ((sel >> (2 * i)) & (n - 1).min(3));
        put(&mut r, base + i, bits, get(b, k, bits));
    }
    r
}

/// DST = f(DST, SRC, imm8, XMM0) for every mnemonic [`compute`] knows.
pub fn int_op(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    enter(ctx, insn)?;
    let i = &insn.i;
    let d = i.op0_register();
    let w = if d.is_mm() { 8 } else { 16 };
    let a = read_reg(ctx, d);
    let b = read_src(ctx, insn, 1)?;
    let mut imm = imm8(insn);
    let m = i.mnemonic();
    // INSERTPS with a memory source takes the loaded dword whatever COUNT_S says.
    if m == M::Insertps && i.op1_kind() == OpKind::Memory {
        imm &= 0x3f;
    }
    let x0 = ctx.st.fpu.xmm[0];
    let Some(r) = compute(m, a, b, imm, x0, w) else {
        return Err(Fault::ud());
    };
    let r = if w == 8 { r & u64::MAX as u128 } else { r };
    write_reg(ctx, d, r);
    Ok(())
}

/// AES round primitives (FIPS-197), on the state as 16 bytes, column-major (byte 4c+r = row r of
/// column c), little-endian in the `u128`.
pub mod aes {
    const fn xtime(x: u8) -> u8 {
        (x << 1) ^ if x & 0x80 != 0 { 0x1b } else { 0 }
    }

    const fn gmul(mut a: u8, mut b: u8) -> u8 {
        let mut p = 0u8;
        while b != 0 {
            if b & 1 != 0 {
                p ^= a;
            }
            a = xtime(a);
            b >>= 1;
        }
        p
    }

    const fn make_sbox() -> [u8; 256] {
        let mut s = [0u8; 256];
        let mut x = 0usize;
        while x < 256 {
            // Multiplicative inverse in GF(2^8) (0 -> 0) by brute force, then the affine map.
            let mut inv = 0u8;
            if x != 0 {
                let mut y = 1usize;
                while y < 256 {
                    if gmul(x as u8, y as u8) == 1 {
                        inv = y as u8;
                        break;
                    }
                    y += 1;
                }
            }
            let b = inv;
            s[x] = b ^ b.rotate_left(1) ^ b.rotate_left(2) ^ b.rotate_left(3) ^ b.rotate_left(4) ^ 0x63;
            x += 1;
        }
        s
    }

    const fn invert(s: &[u8; 256]) -> [u8; 256] {
        let mut r = [0u8; 256];
        let mut i = 0;
        while i < 256 {
            r[s[i] as usize] = i as u8;
            i += 1;
        }
        r
    }

    /// The S-box.
    pub static SBOX: [u8; 256] = make_sbox();
    /// The inverse S-box.
    pub static INV_SBOX: [u8; 256] = invert(&make_sbox());

    fn shift_rows(s: [u8; 16], inv: bool) -> [u8; 16] {
        let mut r = [0u8; 16];
        for c in 0..4 {
            for row in 0..4 {
                let src = if inv { (c + 4 - row) % 4 } else { (c + row) % 4 };
                r[4 * c + row] = s[4 * src + row];
            }
        }
        r
    }

    fn mix(s: [u8; 16], m: [u8; 4]) -> [u8; 16] {
        let mut r = [0u8; 16];
        for c in 0..4 {
            for row in 0..4 {
                let mut v = 0;
                for k in 0..4 {
                    v ^= gmul(m[(k + 4 - row) % 4], s[4 * c + k]);
                }
                r[4 * c + row] = v;
            }
        }
        r
    }

    /// AESENC / AESENCLAST.
    pub fn enc(state: u128, key: u128, last: bool) -> u128 {
        let mut s = shift_rows(state.to_le_bytes(), false);
        for b in &mut s {
            *b = SBOX[*b as usize];
        }
        if !last {
            s = mix(s, [2, 3, 1, 1]);
        }
        u128::from_le_bytes(s) ^ key
    }

    /// AESDEC / AESDECLAST.
    pub fn dec(state: u128, key: u128, last: bool) -> u128 {
        let mut s = shift_rows(state.to_le_bytes(), true);
        for b in &mut s {
            *b = INV_SBOX[*b as usize];
        }
        if !last {
            s = mix(s, [14, 11, 13, 9]);
        }
        u128::from_le_bytes(s) ^ key
    }

    /// AESIMC.
    pub fn inv_mix_columns(v: u128) -> u128 {
        u128::from_le_bytes(mix(v.to_le_bytes(), [14, 11, 13, 9]))
    }

    fn sub_word(w: u32) -> u32 {
        u32::from_le_bytes(w.to_le_bytes().map(|b| SBOX[b as usize]))
    }

    /// AESKEYGENASSIST.
    pub fn keygen_assist(src: u128, rcon: u8) -> u128 {
        let x1 = sub_word((src >> 32) as u32);
        let x3 = sub_word((src >> 96) as u32);
        let rc = rcon as u32;
        (x1 as u128)
            | ((x1.rotate_right(8) ^ rc) as u128) << 32
            | (x3 as u128) << 64
            | ((x3.rotate_right(8) ^ rc) as u128) << 96
    }
}
