//! Segmentation: descriptor-table reads, descriptor parsing, and segment-register loads with the
//! protected-mode checks and exact fault vectors and error codes (Intel SDM vol. 3 ch. 3 and 5, and
//! the MOV/POP/LDS/far-transfer pseudo-code in vol. 2).

use crate::fault::Fault;
use crate::mem::Ctx;
use crate::state::{Mode, Seg, Segment, attr};

/// A raw 8-byte descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Desc(pub u64);

impl Desc {
    /// Base address (bits 16-39 and 56-63).
    pub fn base(self) -> u64 {
        ((self.0 >> 16) & 0xff_ffff) | (((self.0 >> 56) & 0xff) << 24)
    }
    /// Limit, expanded by G.
    pub fn limit(self) -> u32 {
        let raw = ((self.0 & 0xffff) | (((self.0 >> 48) & 0xf) << 16)) as u32;
        if self.0 & (1 << 55) != 0 { (raw << 12) | 0xfff } else { raw }
    }
    /// Attributes in the VMX layout of [`attr`].
    pub fn attr(self) -> u16 {
        (((self.0 >> 40) & 0xff) | (((self.0 >> 52) & 0xf) << 12)) as u16
    }
    /// Type field.
    pub fn typ(self) -> u8 {
        ((self.0 >> 40) & 0xf) as u8
    }
    /// S bit: code/data (true) or system.
    pub fn s(self) -> bool {
        self.0 & (1 << 44) != 0
    }
    /// DPL.
    pub fn dpl(self) -> u8 {
        ((self.0 >> 45) & 3) as u8
    }
    /// Present.
    pub fn present(self) -> bool {
        self.0 & (1 << 47) != 0
    }
    /// Code segment.
    pub fn is_code(self) -> bool {
        self.s() && self.typ() & 8 != 0
    }
    /// Conforming code segment.
    pub fn conforming(self) -> bool {
        self.is_code() && self.typ() & 4 != 0
    }
    /// Readable code or any data segment.
    pub fn readable(self) -> bool {
        self.s() && (self.typ() & 8 == 0 || self.typ() & 2 != 0)
    }
    /// Writable data segment.
    pub fn writable(self) -> bool {
        self.s() && self.typ() & 8 == 0 && self.typ() & 2 != 0
    }
    /// L bit.
    pub fn long(self) -> bool {
        self.0 & (1 << 53) != 0
    }
    /// D/B bit.
    pub fn big(self) -> bool {
        self.0 & (1 << 54) != 0
    }
    /// Gate: target selector.
    pub fn gate_selector(self) -> u16 {
        (self.0 >> 16) as u16
    }
    /// Gate: target offset (low 32 bits; the upper half of a 64-bit gate is in the next 8 bytes).
    pub fn gate_offset(self) -> u64 {
        (self.0 & 0xffff) | (((self.0 >> 48) & 0xffff) << 16)
    }
    /// Call gate: parameter count.
    pub fn gate_params(self) -> u8 {
        ((self.0 >> 32) & 0x1f) as u8
    }
    /// Interrupt gate (64-bit): IST index.
    pub fn gate_ist(self) -> u8 {
        ((self.0 >> 32) & 7) as u8
    }
    /// The hidden-cache segment for selector `sel`.
    pub fn to_segment(self, sel: u16) -> Segment {
        Segment { selector: sel, attr: self.attr(), limit: self.limit(), base: self.base() }
    }
}

/// Error code for a selector (EXT bit 0, IDT bit 0).
#[inline]
pub fn sel_err(sel: u16) -> u32 {
    (sel & 0xfffc) as u32
}

impl Ctx<'_> {
    /// Linear address of the descriptor for `sel` in the GDT or LDT, or `None` if beyond the table limit
    /// (or the LDT is unusable). `size` is 8 or 16 bytes.
    pub fn desc_addr(&self, sel: u16, size: u32) -> Option<u64> {
        let idx = (sel & !7) as u64;
        let (base, limit) = if sel & 4 != 0 {
            let l = self.st.ldtr;
            if !l.present() || l.selector & !3 == 0 {
                return None;
            }
            (l.base, l.limit as u64)
        } else {
            (self.st.gdtr.base, self.st.gdtr.limit as u64)
        };
        if idx + size as u64 - 1 > limit {
            return None;
        }
        Some(base.wrapping_add(idx))
    }

    /// Reads the 8-byte descriptor for `sel`; `err` is the fault for a selector beyond the table.
    pub fn read_desc(&mut self, sel: u16, err: Fault) -> Result<Desc, Fault> {
        let a = self.desc_addr(sel, 8).ok_or(err)?;
        let a = self.desc_lin(a);
        Ok(Desc(self.read_lin_as(a, 8, crate::paging::AccessKind::Read, true)?))
    }

    /// Reads the upper 8 bytes of a 16-byte (long-mode system) descriptor.
    pub fn read_desc_high(&mut self, sel: u16, err: Fault) -> Result<u64, Fault> {
        let a = self.desc_addr(sel, 16).ok_or(err)?;
        let a = self.desc_lin(a + 8);
        self.read_lin_as(a, 8, crate::paging::AccessKind::Read, true)
    }

    fn desc_lin(&self, a: u64) -> u64 {
        if self.st.efer & crate::state::efer::LMA != 0 { a } else { a & 0xffff_ffff }
    }

    /// Sets the accessed bit of the descriptor for `sel` if clear.
    pub fn set_accessed(&mut self, sel: u16, d: Desc) -> Result<(), Fault> {
        if d.0 & (1 << 40) == 0
            && let Some(a) = self.desc_addr(sel, 8)
        {
            let a = self.desc_lin(a + 5);
            let b = ((d.0 >> 40) as u8) | 1;
            self.write_lin_as(a, 1, b as u64, true)?;
        }
        Ok(())
    }

    /// Sets the busy bit of a TSS descriptor.
    pub fn set_tss_busy(&mut self, sel: u16, busy: bool) -> Result<(), Fault> {
        if let Some(a) = self.desc_addr(sel, 8) {
            let a = self.desc_lin(a + 5);
            let b = self.read_lin_as(a, 1, crate::paging::AccessKind::Read, true)? as u8;
            let nb = if busy { b | 2 } else { b & !2 };
            self.write_lin_as(a, 1, nb as u64, true)?;
        }
        Ok(())
    }

    /// Loads a data segment register (DS, ES, FS, GS) or SS from `sel` as MOV/POP/LxS do, with every
    /// protected-mode check. In real mode only the selector and base change (so "unreal" limits
    /// survive); in v86 mode the segment becomes a 64 KiB DPL-3 data segment.
    pub fn load_seg(&mut self, s: Seg, sel: u16) -> Result<(), Fault> {
        match self.st.mode() {
            Mode::Real => {
                let r = self.st.sreg_mut(s);
                r.selector = sel;
                r.base = (sel as u64) << 4;
                if s == Seg::Cs {
                    // Loading CS in real mode keeps the cached attributes but makes it a 16-bit segment.
                }
                return Ok(());
            }
            Mode::V86 => {
                *self.st.sreg_mut(s) = Segment {
                    selector: sel,
                    attr: attr::P | attr::S | attr::RW | attr::ACCESSED | (3 << attr::DPL_SHIFT),
                    limit: 0xffff,
                    base: (sel as u64) << 4,
                };
                return Ok(());
            }
            _ => {}
        }
        let cpl = self.st.cpl;
        let rpl = (sel & 3) as u8;
        let long = self.st.mode() == Mode::Long64;
        if s == Seg::Ss {
            if sel & !3 == 0 {
                // A null SS is allowed only in 64-bit mode at CPL < 3 with RPL = CPL.
                if long && cpl != 3 && rpl == cpl {
                    let r = self.st.sreg_mut(s);
                    *r = Segment {
                        selector: sel,
                        attr: attr::S | attr::RW | attr::DB | ((cpl as u16) << 5),
                        limit: 0,
                        base: 0,
                    };
                    return Ok(());
                }
                return Err(Fault::gp0());
            }
            let d = self.read_desc(sel, Fault::gp(sel_err(sel)))?;
            if rpl != cpl || !d.writable() || d.dpl() != cpl {
                return Err(Fault::gp(sel_err(sel)));
            }
            if !d.present() {
                return Err(Fault::ss(sel_err(sel)));
            }
            self.set_accessed(sel, d)?;
            *self.st.sreg_mut(s) = Desc(d.0 | (1 << 40)).to_segment(sel);
            return Ok(());
        }
        if sel & !3 == 0 {
            // Null selector: loads fine, any later use faults (64-bit mode: usable with base 0).
            let r = self.st.sreg_mut(s);
            let keep_base = if long { r.base } else { 0 };
            *r = Segment { selector: sel, attr: 0, limit: 0, base: keep_base };
            if long && matches!(s, Seg::Fs | Seg::Gs) {
                // Intel: a null FS/GS load in 64-bit mode leaves the base unchanged.
                r.base = keep_base;
            } else {
                r.base = 0;
            }
            return Ok(());
        }
        let d = self.read_desc(sel, Fault::gp(sel_err(sel)))?;
        if !d.readable() {
            return Err(Fault::gp(sel_err(sel)));
        }
        if !d.conforming() && (rpl > d.dpl() || cpl > d.dpl()) {
            return Err(Fault::gp(sel_err(sel)));
        }
        if !d.present() {
            return Err(Fault::np(sel_err(sel)));
        }
        self.set_accessed(sel, d)?;
        *self.st.sreg_mut(s) = Desc(d.0 | (1 << 40)).to_segment(sel);
        Ok(())
    }

    /// After a privilege level change to a less privileged level (RET/IRET outward), data segment
    /// registers whose DPL is below the new CPL (and that are not conforming code) become null.
    pub fn invalidate_segs_for_cpl(&mut self) {
        let cpl = self.st.cpl;
        for s in [Seg::Es, Seg::Ds, Seg::Fs, Seg::Gs] {
            let r = self.st.sreg(s);
            let conforming_code = r.is_code() && r.attr & attr::DC != 0;
            if r.selector & !3 != 0 && !conforming_code && r.dpl() < cpl {
                let r = self.st.sreg_mut(s);
                r.selector = 0;
                r.attr = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_flat_code_descriptor() {
        // Base 0, limit 0xfffff, G=1, D=1, P=1, DPL=0, S=1, type=0xa (execute/read).
        let d = Desc(0x00cf_9a00_0000_ffff);
        assert_eq!(d.base(), 0);
        assert_eq!(d.limit(), 0xffff_ffff);
        assert!(d.is_code() && d.readable() && !d.writable() && d.present() && d.big());
        assert_eq!(d.dpl(), 0);
        let s = d.to_segment(8);
        assert!(s.is_code() && s.big());
        // 64-bit code: L=1.
        let d = Desc(0x00af_9a00_0000_ffff);
        assert!(d.long() && !d.big());
        // Data, base 0x12345678, byte granular limit 0x1234, DPL 3.
        let d = Desc(0x1200_f234_5678_1234);
        assert_eq!(d.base(), 0x1234_5678);
        assert_eq!(d.limit(), 0x1234);
        assert_eq!(d.dpl(), 3);
        assert!(d.writable());
    }
}
