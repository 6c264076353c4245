//! The page walker: 32-bit, PAE and 4-level paging with 4K/2M/4M/1G pages, NX, WP, U/S, SMEP/SMAP,
//! protection keys (CR4.PKE with IA-32e paging), reserved-bit checks and accessed/dirty updates
//! (Intel SDM vol. 3 ch. 4).
//!
//! One walker serves every mode; the TLB in [`crate::mem`] caches its results per 4 KiB page.

use crate::bus::CpuBus;
use crate::cpuid;
use crate::fault::Fault;
use crate::state::{CpuState, cr0, cr4, efer, flags};

/// The kind of a memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Exec,
}

/// A memory access as the paging unit sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Read, write or fetch.
    pub kind: AccessKind,
    /// A user-mode access (CPL 3 and not an implicit supervisor access such as a descriptor-table read).
    pub user: bool,
    /// An implicit supervisor access (GDT/IDT/TSS reads): SMAP applies regardless of RFLAGS.AC.
    pub implicit: bool,
}

/// #PF error-code bits.
pub mod pf {
    /// The page was present (protection violation).
    pub const P: u32 = 1;
    /// The access was a write.
    pub const W: u32 = 2;
    /// The access was a user-mode access.
    pub const U: u32 = 4;
    /// A reserved bit was set in a paging-structure entry.
    pub const RSVD: u32 = 8;
    /// The access was an instruction fetch.
    pub const ID: u32 = 16;
    /// A data access to a user-mode page that its protection key's PKRU rights forbid.
    pub const PK: u32 = 32;
}

const PTE_P: u64 = 1;
const PTE_RW: u64 = 2;
const PTE_US: u64 = 4;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;
const PTE_PS: u64 = 1 << 7;
const PTE_G: u64 = 1 << 8;
const PTE_NX: u64 = 1 << 63;

/// A successful translation of one linear address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Physical address of the 4 KiB page containing the linear address.
    pub page: u64,
    /// The mapping allows writes at the privilege the access was checked for.
    pub writable: bool,
    /// Global page (survives CR3 writes when CR4.PGE is set).
    pub global: bool,
    /// A user-mode page: U/S set at every level (false without paging).
    pub user: bool,
}

fn phys_mask() -> u64 {
    (1u64 << cpuid::PHYS_ADDR_BITS) - 1
}

fn read_entry(bus: &mut dyn CpuBus, addr: u64, wide: bool) -> u64 {
    if wide {
        let mut b = [0u8; 8];
        bus.read_phys(addr, &mut b);
        u64::from_le_bytes(b)
    } else {
        let mut b = [0u8; 4];
        bus.read_phys(addr, &mut b);
        u32::from_le_bytes(b) as u64
    }
}

fn write_entry(bus: &mut dyn CpuBus, addr: u64, wide: bool, v: u64) {
    if wide {
        bus.write_phys(addr, &v.to_le_bytes());
    } else {
        bus.write_phys(addr, &(v as u32).to_le_bytes());
    }
}

/// Translates `lin` for `acc`, updating accessed/dirty bits. On failure sets CR2 and returns #PF.
pub fn translate(
    st: &mut CpuState,
    bus: &mut dyn CpuBus,
    lin: u64,
    acc: Access,
) -> Result<Translation, Fault> {
    if !st.paging() {
        let a = lin & 0xffff_ffff & st.a20_mask;
        return Ok(Translation { page: a & !0xfff, writable: true, global: false, user: false });
    }
    let pae = st.cr4 & cr4::PAE != 0;
    let long = st.efer & efer::LMA != 0;
    let nxe = st.efer & efer::NXE != 0 && pae;
    let wide = pae;
    let a20 = st.a20_mask;
    let rsvd_hi = if wide { !phys_mask() & 0x7fff_ffff_ffff_f000 & !(0x7ffu64 << 52) } else { 0 };
    let nx_rsvd = if nxe { 0 } else { PTE_NX };

    // Collect the entries along the walk, to AND their permissions and set their A bits.
    let mut entries: [(u64, u64); 5] = [(0, 0); 5];
    let mut n = 0usize;
    let mut rsvd = false;
    let mut present = true;
    let mut leaf_size_shift = 12u32;
    let mut leaf: u64 = 0;

    if long {
        let mut table = st.cr3 & phys_mask() & !0xfff;
        let levels = [39u32, 30, 21, 12];
        for (li, &shift) in levels.iter().enumerate() {
            let idx = (lin >> shift) & 0x1ff;
            let ea = (table + idx * 8) & a20;
            let e = read_entry(bus, ea, true);
            entries[n] = (ea, e);
            n += 1;
            if e & PTE_P == 0 {
                present = false;
                break;
            }
            let mut rsv = e & (rsvd_hi | nx_rsvd) != 0;
            match li {
                0 => rsv |= e & PTE_PS != 0,
                1 if e & PTE_PS != 0 => rsv |= !cpuid::has_1g_pages() || e & 0x3fff_e000 != 0,
                2 if e & PTE_PS != 0 => rsv |= e & 0x1f_e000 != 0,
                _ => {}
            }
            if rsv {
                rsvd = true;
                break;
            }
            if li == 3 || (li >= 1 && e & PTE_PS != 0) {
                leaf_size_shift = shift;
                leaf = e;
                break;
            }
            table = e & phys_mask() & !0xfff;
        }
    } else if pae {
        let pdpte_addr = ((st.cr3 & 0xffff_ffe0) + ((lin >> 30) & 3) * 8) & a20;
        let pdpte = read_entry(bus, pdpte_addr, true);
        // PDPTEs are not part of the permission AND and have no A bit.
        if pdpte & PTE_P == 0 {
            present = false;
        } else if pdpte & (rsvd_hi | 0x1e6 | PTE_NX) != 0 {
            rsvd = true;
        } else {
            let mut table = pdpte & phys_mask() & !0xfff;
            for (li, &shift) in [21u32, 12].iter().enumerate() {
                let idx = (lin >> shift) & 0x1ff;
                let ea = (table + idx * 8) & a20;
                let e = read_entry(bus, ea, true);
                entries[n] = (ea, e);
                n += 1;
                if e & PTE_P == 0 {
                    present = false;
                    break;
                }
                let mut rsv = e & (rsvd_hi | nx_rsvd) != 0;
                if li == 0 && e & PTE_PS != 0 {
                    rsv |= e & 0x1f_e000 != 0;
                }
                if rsv {
                    rsvd = true;
                    break;
                }
                if li == 1 || e & PTE_PS != 0 {
                    leaf_size_shift = shift;
                    leaf = e;
                    break;
                }
                table = e & phys_mask() & !0xfff;
            }
        }
    } else {
        let lin32 = lin & 0xffff_ffff;
        let pde_addr = ((st.cr3 & 0xffff_f000) + ((lin32 >> 22) << 2)) & a20;
        let pde = read_entry(bus, pde_addr, false);
        entries[n] = (pde_addr, pde);
        n += 1;
        if pde & PTE_P == 0 {
            present = false;
        } else if pde & PTE_PS != 0 && st.cr4 & cr4::PSE != 0 {
            // 4 MiB page; PSE-36 bits 13-20 give physical bits 32-39.
            if pde & (1 << 21) != 0 {
                rsvd = true;
            } else {
                leaf_size_shift = 22;
                leaf = (pde & 0xffc0_0fff) | (((pde >> 13) & 0xff) << 32);
            }
        } else {
            let pte_addr = ((pde & 0xffff_f000) + (((lin32 >> 12) & 0x3ff) << 2)) & a20;
            let pte = read_entry(bus, pte_addr, false);
            entries[n] = (pte_addr, pte);
            n += 1;
            if pte & PTE_P == 0 {
                present = false;
            } else {
                leaf = pte;
            }
        }
    }

    let fetch = acc.kind == AccessKind::Exec;
    let write = acc.kind == AccessKind::Write;
    let mut err = 0u32;
    if write {
        err |= pf::W;
    }
    if acc.user {
        err |= pf::U;
    }
    if fetch && (nxe || st.cr4 & cr4::SMEP != 0) && (pae || long) {
        err |= pf::ID;
    }
    if !present || rsvd {
        if rsvd {
            err |= pf::P | pf::RSVD;
        }
        st.cr2 = lin;
        return Err(Fault::pf(err));
    }

    // Effective permissions: AND of R/W and U/S over all levels, OR of NX.
    let mut rw = true;
    let mut us = true;
    let mut nx = false;
    for &(_, e) in &entries[..n] {
        rw &= e & PTE_RW != 0;
        us &= e & PTE_US != 0;
        nx |= e & PTE_NX != 0 && nxe;
    }
    let wp = st.cr0 & cr0::WP != 0;
    // Protection keys (SDM vol. 3 4.6.2): with IA-32e paging and CR4.PKE, a data access to a user-mode
    // address (U/S set at every level) whose key (bits 62:59 of the leaf) has PKRU.AD set is refused,
    // and so is a write when WD is set and the access is a user-mode one or CR0.WP = 1. Fetches are
    // not subject to keys.
    let pk_denied = long && st.cr4 & cr4::PKE != 0 && !fetch && us && {
        let key = (leaf >> 59) & 0xf;
        let rights = st.pkru >> (2 * key);
        rights & 1 != 0 || (rights & 2 != 0 && write && (acc.user || wp))
    };
    let smap_blocks = st.cr4 & cr4::SMAP != 0 && (acc.implicit || st.rflags & flags::AC == 0);
    let ok = if acc.user {
        us && (!write || rw) && !(fetch && nx)
    } else {
        let write_ok = !write || rw || !wp;
        let smep_ok = !(fetch && us && st.cr4 & cr4::SMEP != 0);
        let smap_ok = fetch || !us || !smap_blocks;
        write_ok && smep_ok && smap_ok && !(fetch && nx)
    } && !pk_denied;
    if !ok {
        // The PK bit reports the key's verdict whatever else refused the access (SDM 4.7).
        if pk_denied {
            err |= pf::PK;
        }
        st.cr2 = lin;
        return Err(Fault::pf(err | pf::P));
    }

    // Accessed bits on every level, dirty on the leaf for writes.
    for (i, &(ea, e)) in entries[..n].iter().enumerate() {
        let is_leaf = i + 1 == n;
        let mut ne = e | PTE_A;
        if is_leaf && write {
            ne |= PTE_D;
        }
        if ne != e {
            write_entry(bus, ea, wide, ne);
        }
    }

    let page_mask = (1u64 << leaf_size_shift) - 1;
    let base = if leaf_size_shift == 12 {
        leaf & phys_mask() & !0xfff
    } else if !wide && leaf_size_shift == 22 {
        leaf & 0xff_ffc0_0000
    } else {
        leaf & phys_mask() & !page_mask
    };
    let page = (base | (lin & page_mask & !0xfff)) & a20;
    // A read through a clean leaf must not cache a writable entry: the first write has to set D.
    let leaf_dirty = entries[n - 1].1 & PTE_D != 0 || write;
    let writable = leaf_dirty && if acc.user { rw } else { rw || !wp };
    Ok(Translation { page, writable, global: leaf & PTE_G != 0 && st.cr4 & cr4::PGE != 0, user: us })
}
