//! Mapping iced-x86 registers to Ferrite's register file, and GPR access by operand size.

use crate::state::{CpuState, Seg};
use iced_x86::Register;

/// Where a general-purpose register lives: index into `CpuState::gpr`, width in bytes, bit shift (8 for
/// AH/CH/DH/BH).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GprRef {
    /// Index 0-15.
    pub index: usize,
    /// Width in bytes: 1, 2, 4 or 8.
    pub size: u32,
    /// 0, or 8 for the legacy high-byte registers.
    pub shift: u32,
}

/// The GPR a register operand names, or `None` if it is not a GPR. Relies on iced's register order
/// (AL..R15L, AX..R15W, EAX..R15D, RAX..R15), which a unit test checks.
#[inline]
pub fn gpr(r: Register) -> Option<GprRef> {
    let n = r as u32;
    let al = Register::AL as u32;
    let ax = Register::AX as u32;
    let eax = Register::EAX as u32;
    let rax = Register::RAX as u32;
    if (al..al + 20).contains(&n) {
        let k = (n - al) as usize;
        Some(match k {
            0..=3 => GprRef { index: k, size: 1, shift: 0 },
            4..=7 => GprRef { index: k - 4, size: 1, shift: 8 },
            _ => GprRef { index: k - 4, size: 1, shift: 0 },
        })
    } else if (ax..ax + 16).contains(&n) {
        Some(GprRef { index: (n - ax) as usize, size: 2, shift: 0 })
    } else if (eax..eax + 16).contains(&n) {
        Some(GprRef { index: (n - eax) as usize, size: 4, shift: 0 })
    } else if (rax..rax + 16).contains(&n) {
        Some(GprRef { index: (n - rax) as usize, size: 8, shift: 0 })
    } else {
        None
    }
}

/// The segment register `r` names.
#[inline]
pub fn sreg(r: Register) -> Option<Seg> {
    let n = (r as u32).wrapping_sub(Register::ES as u32);
    Seg::from_index(n as usize)
}

/// Mask of the low `size` bytes.
#[inline]
pub const fn size_mask(size: u32) -> u64 {
    if size >= 8 { u64::MAX } else { (1u64 << (size * 8)) - 1 }
}

/// Sign bit of a `size`-byte value.
#[inline]
pub const fn sign_bit(size: u32) -> u64 {
    1u64 << (size * 8 - 1)
}

/// Sign-extends the low `size` bytes of `v` to 64 bits.
#[inline]
pub const fn sext(v: u64, size: u32) -> u64 {
    let sh = 64 - size * 8;
    (((v << sh) as i64) >> sh) as u64
}

impl CpuState {
    /// Reads a GPR.
    #[inline]
    pub fn read_gpr(&self, g: GprRef) -> u64 {
        (self.gpr[g.index] >> g.shift) & size_mask(g.size)
    }

    /// Writes a GPR with x86's merge rules: 8- and 16-bit writes keep the other bits, 32-bit writes
    /// zero the upper half, 64-bit writes replace.
    #[inline]
    pub fn write_gpr(&mut self, g: GprRef, v: u64) {
        let r = &mut self.gpr[g.index];
        match g.size {
            8 => *r = v,
            4 => *r = v & 0xffff_ffff,
            _ => {
                let m = size_mask(g.size) << g.shift;
                *r = (*r & !m) | ((v << g.shift) & m);
            }
        }
    }

    /// Reads the low `size` bytes of GPR `index`.
    #[inline]
    pub fn reg(&self, index: usize, size: u32) -> u64 {
        self.gpr[index] & size_mask(size)
    }

    /// Writes the low `size` bytes of GPR `index` with x86's merge rules.
    #[inline]
    pub fn set_reg(&mut self, index: usize, size: u32, v: u64) {
        self.write_gpr(GprRef { index, size, shift: 0 }, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iced_register_order_is_as_assumed() {
        assert_eq!(gpr(Register::AL), Some(GprRef { index: 0, size: 1, shift: 0 }));
        assert_eq!(gpr(Register::BH), Some(GprRef { index: 3, size: 1, shift: 8 }));
        assert_eq!(gpr(Register::SPL), Some(GprRef { index: 4, size: 1, shift: 0 }));
        assert_eq!(gpr(Register::DIL), Some(GprRef { index: 7, size: 1, shift: 0 }));
        assert_eq!(gpr(Register::R15L), Some(GprRef { index: 15, size: 1, shift: 0 }));
        assert_eq!(gpr(Register::R8W), Some(GprRef { index: 8, size: 2, shift: 0 }));
        assert_eq!(gpr(Register::ESP), Some(GprRef { index: 4, size: 4, shift: 0 }));
        assert_eq!(gpr(Register::R15D), Some(GprRef { index: 15, size: 4, shift: 0 }));
        assert_eq!(gpr(Register::RAX), Some(GprRef { index: 0, size: 8, shift: 0 }));
        assert_eq!(gpr(Register::R15), Some(GprRef { index: 15, size: 8, shift: 0 }));
        assert_eq!(gpr(Register::ES), None);
        assert_eq!(gpr(Register::RIP), None);
        assert_eq!(sreg(Register::GS), Some(Seg::Gs));
        assert_eq!(sreg(Register::ES), Some(Seg::Es));
        assert_eq!(sreg(Register::RAX), None);
    }

    #[test]
    fn write_merge_rules() {
        let mut s = CpuState::default();
        s.gpr[0] = 0x1122_3344_5566_7788;
        s.write_gpr(gpr(Register::AH).unwrap(), 0xaa);
        assert_eq!(s.gpr[0], 0x1122_3344_5566_aa88);
        s.write_gpr(gpr(Register::AX).unwrap(), 0xbbcc);
        assert_eq!(s.gpr[0], 0x1122_3344_5566_bbcc);
        s.write_gpr(gpr(Register::EAX).unwrap(), 0xdead_beef);
        assert_eq!(s.gpr[0], 0xdead_beef);
        assert_eq!(sext(0x80, 1), 0xffff_ffff_ffff_ff80);
        assert_eq!(sext(0x7fff, 2), 0x7fff);
    }
}
