//! Guest memory as the CPU sees it: segmentation (limits, types, canonical checks), the software TLB
//! (host pointers for RAM pages, probed inline; the JIT's generated code probes the same arrays), and reads and
//! writes of 1-8 bytes that split at page boundaries.

use crate::bus::CpuBus;
use crate::debug::Breakpoints;
use crate::fault::Fault;
use crate::paging::{self, Access, AccessKind};
use crate::state::{CpuState, Mode, Quirks, Seg, attr, flags};
use std::collections::HashSet;
use std::ptr::NonNull;

/// Number of entries in each TLB (direct-mapped by [`tlb_index`]). 1024 entries cover 4 MiB of
/// linear space in each array: with 256, the kernel's code alone (over 8 MiB in Debian's kernel)
/// evicted itself and the process's code on every page fault of a loop that touches fresh pages.
pub const TLB_SIZE: usize = 1024;

/// Entries in each TLB array: two ways of [`TLB_SIZE`] slots. Way 0 of slot `i` is entry `i`, way 1
/// is entry `i + TLB_SIZE`. A fill goes to way 0 and moves what was there to way 1, so two hot pages
/// that share a slot both stay (Linux's system call entry code and `do_syscall_64` did not, in one
/// boot's layout, whatever the index function). The JIT's inline probe reads way 0, then way 1 (out
/// of line). Entries never move on a hit, only on a fill.
pub const TLB_ENTRIES: usize = 2 * TLB_SIZE;

/// The shift that folds higher page-number bits into [`tlb_index`]: log2 of [`TLB_SIZE`].
pub const TLB_FOLD: u32 = TLB_SIZE.trailing_zeros();

/// The slot of linear address `lin` in each TLB array: the page number plus the page number shifted
/// down by [`TLB_FOLD`], modulo [`TLB_SIZE`]. Folding in the higher bits spreads pages that are a
/// multiple of the TLB's reach apart: with a plain `page % 256`, two kernel code pages of Linux's
/// system call path shared a slot and a loop of system calls refetched both on every call, and a
/// process's code at 0x401000 shared one with the kernel's at 0x...a01000. Two consecutive pages never
/// share a slot (their sums differ by 1 or 2), which the JIT's inline probe relies on: an access that
/// crosses into the next page cannot find that page's tag in its slot.
#[inline(always)]
pub fn tlb_index(lin: u64) -> usize {
    let page = lin >> 12;
    (page.wrapping_add(page >> TLB_FOLD) as usize) & (TLB_SIZE - 1)
}

/// One TLB entry. `tag` is the linear page address | 2 (valid) | 1 (user access); `host` is the host
/// address of the page's first byte, or 0 when the page must go through the bus (MMIO, ROM writes,
/// code pages for writes).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct TlbEntry {
    /// Linear page | flags; 0 = invalid.
    pub tag: u64,
    /// Host address of the page, or 0.
    pub host: usize,
    /// Physical page address.
    pub phys: u64,
    /// Global mapping.
    pub global: bool,
    /// The page is a user-mode page (U/S set at every level). A supervisor entry of such a page in the
    /// read or write array exists only while SMAP allows it (CR4.SMAP = 0 or RFLAGS.AC = 1), so
    /// clearing AC drops exactly these ([`Tlb::drop_smap_entries`]).
    pub user_page: bool,
}

/// The software TLB: separate arrays for reads, writes and fetches, so a permission check is one tag
/// compare.
#[repr(C)]
pub struct Tlb {
    /// Read entries.
    pub read: [TlbEntry; TLB_ENTRIES],
    /// Write entries (filled only by successful writes, so the dirty bit is already set).
    pub write: [TlbEntry; TLB_ENTRIES],
    /// Fetch entries.
    pub exec: [TlbEntry; TLB_ENTRIES],
    /// How many supervisor read/write entries of user pages were filled under CR4.SMAP since the last
    /// drop (an upper bound: flushes of everything but global entries do not recount): 0 lets a CLAC
    /// skip the scan.
    pub smap_entries: u32,
    /// The slots (0..[`TLB_ENTRIES`], the same in the three arrays) that may hold a valid entry in
    /// any of them, bit `k % 64` of word `k / 64`: a fill sets its slot's bit (and way 1's when it
    /// moves an entry there), and the flushes visit only set bits. Whoever writes entries other than
    /// through a fill calls [`Tlb::mark_all`]. Host state, not guest state (never saved: it only
    /// says where to look). A full scan of the 6144 entries on every CR3 or CR0 write was 18% of a
    /// SeaBIOS guest's time (mode switches) and 0.7% of a Linux boot's.
    live: [u64; TLB_ENTRIES / 64],
    /// The slots that may hold a valid non-global entry in any array (a subset of `live`, same
    /// layout): what a flush that keeps global entries (a CR3 write) visits. Linux switches CR3 twice
    /// for each of the thousands of text pokes of its boot (to its poking mm and back), while
    /// hundreds of global kernel entries stay live: walking every live slot then was 2% of a
    /// warm-cache boot's CPU time.
    local: [u64; TLB_ENTRIES / 64],
}

impl Default for Tlb {
    fn default() -> Self {
        Tlb {
            read: [TlbEntry::default(); TLB_ENTRIES],
            write: [TlbEntry::default(); TLB_ENTRIES],
            exec: [TlbEntry::default(); TLB_ENTRIES],
            smap_entries: 0,
            live: [!0; TLB_ENTRIES / 64],
            local: [!0; TLB_ENTRIES / 64],
        }
    }
}

impl Tlb {
    /// Every slot may hold an entry (after the arrays were written wholesale, as by a snapshot
    /// restore): the next flush looks at all of them.
    pub fn mark_all(&mut self) {
        self.live = [!0; TLB_ENTRIES / 64];
        self.local = [!0; TLB_ENTRIES / 64];
    }

    /// Puts `e` (the translation of linear `lin`) into `kind`'s array: way 0 of `lin`'s slot takes
    /// it and passes its old entry to way 1 (a page never sits in both).
    pub fn insert(&mut self, kind: AccessKind, lin: u64, e: TlbEntry) {
        let idx = tlb_index(lin);
        let t = match kind {
            AccessKind::Read => &mut self.read,
            AccessKind::Write => &mut self.write,
            AccessKind::Exec => &mut self.exec,
        };
        if t[idx + TLB_SIZE].tag == e.tag {
            t[idx + TLB_SIZE] = e;
        } else {
            if t[idx].tag != e.tag {
                t[idx + TLB_SIZE] = t[idx];
            }
            t[idx] = e;
        }
        // This array's two ways are the only entries that changed.
        let local = [idx, idx + TLB_SIZE].map(|k| t[k].tag != 0 && !t[k].global);
        for (k, local) in [idx, idx + TLB_SIZE].into_iter().zip(local) {
            self.mark(k);
            if local {
                self.local[k / 64] |= 1 << (k % 64);
            }
        }
    }

    /// Marks slot `k` as possibly holding an entry.
    #[inline]
    fn mark(&mut self, k: usize) {
        self.live[k / 64] |= 1 << (k % 64);
    }

    /// Calls `f` with each slot that may hold an entry; `f` says whether the slot still does.
    #[inline]
    fn for_live(&mut self, mut f: impl FnMut(&mut Tlb, usize) -> bool) {
        for w in 0..self.live.len() {
            let mut bits = self.live[w];
            let mut keep = 0u64;
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if f(self, w * 64 + b) {
                    keep |= 1 << b;
                }
            }
            self.live[w] = keep;
        }
    }

    /// Drops every entry (or every non-global one).
    pub fn flush(&mut self, keep_global: bool) {
        if keep_global {
            // Only slots that may hold a non-global entry have anything to drop; their global
            // entries stay, and with them the slots' `live` bits (a superset is allowed).
            for w in 0..self.local.len() {
                let mut bits = std::mem::take(&mut self.local[w]);
                while bits != 0 {
                    let k = w * 64 + bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    for e in [&mut self.read[k], &mut self.write[k], &mut self.exec[k]] {
                        if !e.global {
                            e.tag = 0;
                        }
                    }
                }
            }
            return;
        }
        self.for_live(|t, k| {
            for e in [&mut t.read[k], &mut t.write[k], &mut t.exec[k]] {
                e.tag = 0;
            }
            false
        });
        self.local = [0; TLB_ENTRIES / 64];
        self.smap_entries = 0;
    }

    /// RFLAGS.AC went from 1 to 0 with CR4.SMAP = 1: supervisor data accesses to user pages are
    /// refused again (SDM Vol. 3A 4.6.1), so the entries that allowed them go; nothing else changes
    /// (a supervisor page's rights do not depend on AC, fetches ignore SMAP, and user-mode accesses
    /// ignore it). Setting AC needs nothing: it only widens rights, and the refused accesses were
    /// never cached. Before, every change of AC dropped the whole TLB, global pages included: Linux
    /// brackets every user copy with STAC/CLAC.
    pub fn drop_smap_entries(&mut self) {
        if self.smap_entries == 0 {
            return;
        }
        self.for_live(|t, k| {
            for e in [&mut t.read[k], &mut t.write[k]] {
                if e.tag & 1 == 0 && e.user_page {
                    e.tag = 0;
                }
            }
            t.read[k].tag != 0 || t.write[k].tag != 0 || t.exec[k].tag != 0
        });
        self.smap_entries = 0;
    }

    /// Drops the entries for linear page `lin` (INVLPG).
    pub fn flush_page(&mut self, lin: u64) {
        let idx = tlb_index(lin);
        let page = lin & !0xfff;
        for t in [&mut self.read, &mut self.write, &mut self.exec] {
            for k in [idx, idx + TLB_SIZE] {
                if t[k].tag & !3 == page {
                    t[k].tag = 0;
                }
            }
        }
    }

    /// Physical page `phys` now holds decoded code: write entries that map it lose their host pointer,
    /// so that every write to it takes the slow path (which queues the page for invalidation).
    ///
    /// The translations themselves stay. The TLB is architectural state a guest can observe (a CPU
    /// may keep using a translation the page tables no longer give until the guest invalidates it),
    /// so what it holds must depend on the guest's own actions only, never on the decoded-block
    /// cache: dropping the entries here made the guest see fresh page tables wherever code happened
    /// to be decoded, e.g. again for every page after a block-cache overflow, or at different points
    /// in a run restored from a snapshot (whose block cache starts empty).
    pub fn flush_phys_writes(&mut self, phys: u64) {
        self.for_live(|t, k| {
            let e = &mut t.write[k];
            if e.tag != 0 && e.phys == phys {
                e.host = 0;
            }
            t.read[k].tag != 0 || t.write[k].tag != 0 || t.exec[k].tag != 0
        });
    }
}

/// The CPU's memory-side state that is not architectural: the TLB and the set of physical pages that
/// hold decoded code (writes to them go through the slow path and invalidate the decoded blocks).
#[derive(Default)]
pub struct Mmu {
    /// The TLB.
    pub tlb: Box<Tlb>,
    /// Physical pages holding decoded code.
    pub code_pages: HashSet<u64>,
    /// Code pages written since the interpreter last looked.
    pub dirty_code: Vec<u64>,
    /// Decoded breakpoints (DR0-DR3/DR7) and debug conditions waiting for delivery.
    pub debug: Breakpoints,
    /// [`access_tag`] of the CPU state, kept for generated code, which ORs it into a page address to
    /// get the TLB tag its inline accesses look for (one load, instead of deriving it from CPL,
    /// RFLAGS and CR0 in every translated block). Every change of what it depends on calls
    /// [`Ctx::privilege_changed`]; `Interpreter::run` sets it on entry (the state may have been
    /// written from outside: reset, snapshots, a debugger, another engine). 0, the default, matches
    /// no stored tag (bit 1 is clear), so a stale-from-birth value can only send accesses to the
    /// slow path. The interpreter itself calls [`access_tag`]: a missed update shows as the JIT
    /// parting from it (`jit/tests/differential_mem.rs`).
    pub access_tag: u64,
}

/// Everything an instruction handler works on.
pub struct Ctx<'a> {
    /// Architectural state.
    pub st: &'a mut CpuState,
    /// The machine.
    pub bus: &'a mut dyn CpuBus,
    /// TLB and code tracking.
    pub mmu: &'a mut Mmu,
    /// RIP of the next instruction; branch handlers overwrite it.
    pub next_rip: u64,
    /// Set when the current block must end after this instruction (MMIO, self-modifying code, mode
    /// changes, interrupt-flag changes).
    pub break_block: bool,
}

/// The TLB tag of linear address `lin` for a user or supervisor access.
#[inline]
pub(crate) fn tag_of(lin: u64, user: bool) -> u64 {
    (lin & !0xfff) | 2 | user as u64
}

/// Bit 2 of [`access_tag`]: an access may have to be alignment-checked (#AC). No stored tag has it,
/// so an inline probe that ORs it in never hits and leaves the access to the handler.
pub const TAG_ALIGN: u64 = 4;

/// The low bits of the TLB tag an explicit data access looks for in state `st`: 2 (valid) | 1 at
/// CPL 3 (a user access), and [`TAG_ALIGN`] when RFLAGS.AC, CR0.AM and CPL 3 make
/// [`Ctx::check_alignment`] check it. The one source of both for the interpreter (`tlb_lookup`,
/// `check_alignment`) and, through [`Mmu::access_tag`], for the JIT's inline probes and block links.
/// RFLAGS.AC at CPL 0-2 (SMAP's STAC/CLAC) is not in it: a supervisor entry of a user page exists
/// only while SMAP allows it (`Tlb::drop_smap_entries`), so a hit is right whatever AC is.
#[inline]
pub fn access_tag(st: &CpuState) -> u64 {
    let user = st.cpl == 3;
    let align = user && st.rflags & flags::AC != 0 && st.cr0 & crate::state::cr0::AM != 0;
    2 | user as u64 | (align as u64) << 2
}

impl Ctx<'_> {
    /// Port input through the bus at the current virtual time.
    #[inline]
    pub fn io_in(&mut self, port: u16, size: u8) -> u32 {
        self.bus.sync(self.st.icount);
        self.break_block = true;
        if self.mmu.debug.io {
            self.mmu.debug.pending |= self.mmu.debug.io_hits(self.st, port, size);
        }
        self.bus.io_in(port, size)
    }

    /// Port output through the bus at the current virtual time.
    #[inline]
    pub fn io_out(&mut self, port: u16, size: u8, value: u32) {
        self.bus.sync(self.st.icount);
        self.break_block = true;
        if self.mmu.debug.io {
            self.mmu.debug.pending |= self.mmu.debug.io_hits(self.st, port, size);
        }
        self.bus.io_out(port, size, value)
    }

    /// Whether the current access is a user-mode one.
    #[inline]
    pub fn user(&self) -> bool {
        self.st.cpl == 3
    }

    /// CPL, RFLAGS.AC or CR0 changed (or may have): brings [`Mmu::access_tag`] up to date. Called
    /// right after each such change in the handlers and event delivery.
    #[inline]
    pub fn privilege_changed(&mut self) {
        self.mmu.access_tag = access_tag(self.st);
    }

    /// Translates a linear address through the TLB, filling it on a miss. Returns the TLB entry.
    /// `size` is the number of bytes of this page the access touches (0 for a translation only), for
    /// data breakpoints: pages they watch are never cached, so the check costs nothing on a hit.
    #[inline]
    fn tlb_lookup(
        &mut self,
        lin: u64,
        kind: AccessKind,
        implicit: bool,
        size: u32,
    ) -> Result<TlbEntry, Fault> {
        let user = !implicit && access_tag(self.st) & 1 != 0;
        let idx = tlb_index(lin);
        let tag = tag_of(lin, user);
        let t = match kind {
            AccessKind::Read => &self.mmu.tlb.read,
            AccessKind::Write => &self.mmu.tlb.write,
            AccessKind::Exec => &self.mmu.tlb.exec,
        };
        // An implicit supervisor access (descriptor tables, the TSS) has a supervisor access's rights
        // less SMAP's exception for RFLAGS.AC = 1 (SDM Vol. 3A 4.6.1): it may use a supervisor entry
        // unless that entry is of a user page and SMAP is on (then the walk decides, and faults).
        let smap = self.st.cr4 & crate::state::cr4::SMAP != 0;
        let usable = |e: &TlbEntry| !implicit || !e.user_page || !smap;
        let e = &t[idx];
        if e.tag == tag && usable(e) {
            return Ok(*e);
        }
        let e = &t[idx + TLB_SIZE];
        if e.tag == tag && usable(e) {
            return Ok(*e);
        }
        self.tlb_fill(lin, kind, user, implicit, size)
    }

    #[cold]
    fn tlb_fill(
        &mut self,
        lin: u64,
        kind: AccessKind,
        user: bool,
        implicit: bool,
        size: u32,
    ) -> Result<TlbEntry, Fault> {
        let t = paging::translate(self.st, self.bus, lin, Access { kind, user, implicit })?;
        // A non-canonical page is never cached (the accesses that reach here check canonical form
        // first; this keeps it an invariant): the JIT's inline probe relies on it instead of
        // checking canonical form itself.
        // An implicit access that succeeded is cached like a supervisor one: its rights are a subset
        // of an explicit supervisor access's (they differ only where SMAP refuses it). Before, the
        // IDT, GDT and TSS reads of every interrupt and exception walked the page tables again.
        let mut cache = is_canonical(lin);
        if self.mmu.debug.data && kind != AccessKind::Exec && self.mmu.debug.watches_page(lin) {
            // A watched page stays out of the TLB so that every access to it comes here. The hit is
            // recorded once the translation succeeded (the access happens); the trap is delivered after
            // the instruction, which ends its block.
            cache = false;
            let hits = self.mmu.debug.data_hits(lin, size as u64, kind == AccessKind::Write);
            if hits != 0 {
                self.mmu.debug.pending |= hits;
                self.break_block = true;
            }
            // A debugger's watchpoint: the interpreter stops after this instruction.
            if let Some(hit) = self.mmu.debug.host_hits(lin, size as u64, kind == AccessKind::Write) {
                self.mmu.debug.host_hit.get_or_insert(hit);
                self.break_block = true;
            }
        }
        let write = kind == AccessKind::Write;
        let host = if write && self.mmu.code_pages.contains(&t.page) {
            0
        } else {
            self.bus.ram_page(t.page, write).map(|p| p.as_ptr() as usize).unwrap_or(0)
        };
        let e = TlbEntry { tag: tag_of(lin, user), host, phys: t.page, global: t.global, user_page: t.user };
        if cache {
            if !user && t.user && kind != AccessKind::Exec && self.st.cr4 & crate::state::cr4::SMAP != 0 {
                self.mmu.tlb.smap_entries = self.mmu.tlb.smap_entries.saturating_add(1);
            }
            self.mmu.tlb.insert(kind, lin, e);
        }
        Ok(e)
    }

    /// Physical address for a linear one (for diagnostics and instructions that need it).
    pub fn lin_to_phys(&mut self, lin: u64, kind: AccessKind) -> Result<u64, Fault> {
        let e = self.tlb_lookup(lin, kind, false, 0)?;
        Ok(e.phys | (lin & 0xfff))
    }

    /// Reads `N` <= 8 bytes at linear `lin` as a little-endian value.
    #[inline]
    pub fn read_lin(&mut self, lin: u64, size: u32) -> Result<u64, Fault> {
        self.read_lin_as(lin, size, AccessKind::Read, false)
    }

    /// Reads with an explicit access kind (fetch) or as an implicit supervisor access.
    #[inline]
    pub fn read_lin_as(
        &mut self,
        lin: u64,
        size: u32,
        kind: AccessKind,
        implicit: bool,
    ) -> Result<u64, Fault> {
        let off = (lin & 0xfff) as usize;
        if off + size as usize <= 0x1000 {
            let e = self.tlb_lookup(lin, kind, implicit, size)?;
            if e.host != 0 {
                let p = (e.host + off) as *const u8;
                // SAFETY: `e.host` is the host address of a 4 KiB RAM/ROM page handed out by the bus
                // (`CpuBus::ram_page`), valid until the TLB is flushed on a memory-map change; `off + size`
                // is within the page as checked above. Unaligned reads of 1-8 bytes.
                let v = unsafe {
                    match size {
                        1 => *p as u64,
                        2 => u16::from_le(std::ptr::read_unaligned(p as *const u16)) as u64,
                        4 => u32::from_le(std::ptr::read_unaligned(p as *const u32)) as u64,
                        8 => u64::from_le(std::ptr::read_unaligned(p as *const u64)),
                        _ => {
                            let mut b = [0u8; 8];
                            std::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), (size as usize).min(8));
                            u64::from_le_bytes(b)
                        }
                    }
                };
                return Ok(v);
            }
            let mut b = [0u8; 8];
            self.bus.sync(self.st.icount);
            self.bus.read_phys(e.phys | off as u64, &mut b[..size as usize]);
            self.break_block = true;
            return Ok(u64::from_le_bytes(b));
        }
        // Crosses a page: translate both pages first (faults before any side effect), then read bytes.
        let first = 0x1000 - off;
        let next = (lin & !0xfff).wrapping_add(0x1000);
        let next = if self.st.mode() == Mode::Long64 { next } else { next & 0xffff_ffff };
        let e1 = self.tlb_lookup(lin, kind, implicit, first as u32)?;
        let e2 = self.tlb_lookup(next, kind, implicit, size - first as u32)?;
        let mut b = [0u8; 8];
        self.read_phys_entry(&e1, off, &mut b[..first]);
        self.read_phys_entry(&e2, 0, &mut b[first..size as usize]);
        Ok(u64::from_le_bytes(b))
    }

    fn read_phys_entry(&mut self, e: &TlbEntry, off: usize, out: &mut [u8]) {
        if e.host != 0 {
            // SAFETY: as in `read_lin_as`: a live RAM page pointer, and `off + out.len()` <= 4096 because
            // callers split accesses at the page boundary.
            unsafe {
                std::ptr::copy_nonoverlapping((e.host + off) as *const u8, out.as_mut_ptr(), out.len());
            }
        } else {
            self.bus.sync(self.st.icount);
            self.bus.read_phys(e.phys | off as u64, out);
            self.break_block = true;
        }
    }

    fn write_phys_entry(&mut self, e: &TlbEntry, off: usize, data: &[u8]) {
        if e.host != 0 {
            // SAFETY: `e.host` is a live, writable RAM page (write TLB entries only get host pointers for
            // RAM that is not a code page); `off + data.len()` <= 4096 as callers split at page boundaries.
            unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr(), (e.host + off) as *mut u8, data.len());
            }
        } else {
            if self.mmu.code_pages.contains(&e.phys) {
                self.mmu.dirty_code.push(e.phys);
            }
            self.bus.sync(self.st.icount);
            self.bus.write_phys(e.phys | off as u64, data);
            self.break_block = true;
        }
    }

    /// Writes the low `size` bytes of `v` at linear `lin`.
    #[inline]
    pub fn write_lin(&mut self, lin: u64, size: u32, v: u64) -> Result<(), Fault> {
        self.write_lin_as(lin, size, v, false)
    }

    /// Writes, optionally as an implicit supervisor access.
    #[inline]
    pub fn write_lin_as(&mut self, lin: u64, size: u32, v: u64, implicit: bool) -> Result<(), Fault> {
        let off = (lin & 0xfff) as usize;
        let b = v.to_le_bytes();
        if off + size as usize <= 0x1000 {
            let e = self.tlb_lookup(lin, AccessKind::Write, implicit, size)?;
            if e.host != 0 {
                let p = (e.host + off) as *mut u8;
                // SAFETY: `e.host` is a live, writable RAM page (write TLB entries only get host pointers
                // for RAM that is not a code page); `off + size` is within the page as checked above.
                unsafe {
                    match size {
                        1 => *p = v as u8,
                        2 => std::ptr::write_unaligned(p as *mut u16, (v as u16).to_le()),
                        4 => std::ptr::write_unaligned(p as *mut u32, (v as u32).to_le()),
                        8 => std::ptr::write_unaligned(p as *mut u64, v.to_le()),
                        _ => std::ptr::copy_nonoverlapping(b.as_ptr(), p, (size as usize).min(8)),
                    }
                }
                return Ok(());
            }
            self.write_phys_entry(&e, off, &b[..size as usize]);
            return Ok(());
        }
        let first = 0x1000 - off;
        let next = (lin & !0xfff).wrapping_add(0x1000);
        let next = if self.st.mode() == Mode::Long64 { next } else { next & 0xffff_ffff };
        let e1 = self.tlb_lookup(lin, AccessKind::Write, implicit, first as u32)?;
        let e2 = self.tlb_lookup(next, AccessKind::Write, implicit, size - first as u32)?;
        self.write_phys_entry(&e1, off, &b[..first]);
        self.write_phys_entry(&e2, 0, &b[first..size as usize]);
        Ok(())
    }

    /// Checks that a write of `size` bytes at `lin` would succeed (for read-modify-write instructions and
    /// multi-part stores that must not partially complete), without writing.
    pub fn probe_write(&mut self, lin: u64, size: u32) -> Result<(), Fault> {
        let off = (lin & 0xfff) as usize;
        self.tlb_lookup(lin, AccessKind::Write, false, 0)?;
        if off + size as usize > 0x1000 {
            let next = (lin & !0xfff).wrapping_add(0x1000);
            let next = if self.st.mode() == Mode::Long64 { next } else { next & 0xffff_ffff };
            self.tlb_lookup(next, AccessKind::Write, false, 0)?;
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at linear `lin` (any length), byte-wise across pages.
    pub fn read_bytes(&mut self, lin: u64, buf: &mut [u8]) -> Result<(), Fault> {
        let mut done = 0usize;
        while done < buf.len() {
            let a = lin.wrapping_add(done as u64);
            let n = (buf.len() - done).min(8).min(0x1000 - (a & 0xfff) as usize);
            let v = self.read_lin(a, n as u32)?;
            buf[done..done + n].copy_from_slice(&v.to_le_bytes()[..n]);
            done += n;
        }
        Ok(())
    }

    /// Writes `data` (any length) at linear `lin`. Every page is checked for writing first, so a
    /// fault leaves memory unchanged; then the bytes go out in page-bounded chunks of up to 8 bytes.
    pub fn write_bytes(&mut self, lin: u64, data: &[u8]) -> Result<(), Fault> {
        let mut done = 0usize;
        while done < data.len() {
            let a = lin.wrapping_add(done as u64);
            let n = (data.len() - done).min(0x1000 - (a & 0xfff) as usize);
            self.probe_write(a, n as u32)?;
            done += n;
        }
        done = 0;
        while done < data.len() {
            let a = lin.wrapping_add(done as u64);
            let n = (data.len() - done).min(8).min(0x1000 - (a & 0xfff) as usize);
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&data[done..done + n]);
            self.write_lin(a, n as u32, u64::from_le_bytes(b))?;
            done += n;
        }
        Ok(())
    }

    /// The linear address of `off` in segment `s` for an access of `size` bytes, with the segment's
    /// limit and type checks (protected mode) or canonical check (64-bit mode).
    #[inline]
    pub fn seg_lin(&mut self, s: Seg, off: u64, size: u32, kind: AccessKind) -> Result<u64, Fault> {
        let mode = self.st.mode();
        let sr = self.st.seg[s as usize];
        if mode == Mode::Long64 {
            let base = if matches!(s, Seg::Fs | Seg::Gs) { sr.base } else { 0 };
            let lin = base.wrapping_add(off);
            // Every byte of the access must be canonical: one that runs from the top of the lower half
            // into the hole faults like a non-canonical start (measured on an AMD host; the SDM
            // requires canonical addresses for every reference, Vol. 1 3.3.7.1).
            if !is_canonical(lin) || !is_canonical(lin.wrapping_add(size as u64 - 1)) {
                return Err(if s == Seg::Ss { Fault::ss(0) } else { Fault::gp0() });
            }
            return Ok(lin);
        }
        let fault = || if s == Seg::Ss { Fault::ss(0) } else { Fault::gp0() };
        if mode != Mode::Real && mode != Mode::V86 {
            if !sr.present() {
                return Err(fault());
            }
            let code = sr.attr & attr::CODE != 0;
            match kind {
                AccessKind::Write if code || sr.attr & attr::RW == 0 => return Err(fault()),
                AccessKind::Read if code && sr.attr & attr::RW == 0 => return Err(fault()),
                _ => {}
            }
        }
        let last = off.wrapping_add(size as u64 - 1);
        if sr.limit == 0xffff_ffff && !sr.is_expand_down() && self.st.quirks == Quirks::Intel {
            // On Intel a 4 GiB expand-up segment admits every offset: an access that runs past 4 GiB
            // wraps to linear address 0 instead of faulting (measured on an Intel host by the
            // differential tester). AMD checks the last byte against the limit like any other segment:
            // #GP, or #SS for SS (measured on an AMD host).
            return Ok(sr.base.wrapping_add(off) & 0xffff_ffff);
        }
        if sr.is_expand_down() && mode != Mode::Real && mode != Mode::V86 {
            let upper = if sr.big() { 0xffff_ffffu64 } else { 0xffff };
            if off <= sr.limit as u64 || last > upper || last < off {
                return Err(fault());
            }
        } else if last > sr.limit as u64 || last < off {
            return Err(fault());
        }
        Ok(sr.base.wrapping_add(off) & 0xffff_ffff)
    }

    /// Reads `size` bytes at `s:off`.
    #[inline]
    pub fn read_mem(&mut self, s: Seg, off: u64, size: u32) -> Result<u64, Fault> {
        let lin = self.seg_lin(s, off, size, AccessKind::Read)?;
        self.check_alignment(lin, size)?;
        self.read_lin(lin, size)
    }

    /// Writes `size` bytes at `s:off`.
    #[inline]
    pub fn write_mem(&mut self, s: Seg, off: u64, size: u32, v: u64) -> Result<(), Fault> {
        let lin = self.seg_lin(s, off, size, AccessKind::Write)?;
        self.check_alignment(lin, size)?;
        self.write_lin(lin, size, v)
    }

    /// Alignment check (#AC) when CR0.AM, RFLAGS.AC and CPL 3 are all set ([`TAG_ALIGN`]).
    #[inline]
    pub fn check_alignment(&self, lin: u64, size: u32) -> Result<(), Fault> {
        if access_tag(self.st) & TAG_ALIGN != 0 && size > 1 && lin & (size as u64 - 1) != 0 {
            return Err(Fault::ac());
        }
        Ok(())
    }
}

/// Whether `a` is a canonical 48-bit address.
#[inline]
pub fn is_canonical(a: u64) -> bool {
    ((a as i64) << 16 >> 16) as u64 == a
}

/// Wraps a pointer for the bus API (helper for machines and tests).
pub fn page_ptr(p: *mut u8) -> Option<NonNull<u8>> {
    NonNull::new(p)
}

#[cfg(test)]
mod tests {
    use crate::exec::misc::testkit::Emu;
    use crate::fault::Fault;
    use crate::state::Quirks;
    use crate::testutil::TestMode;

    /// mov eax, [0xffffffff] with a flat 4 GiB DS: Intel wraps the last three bytes to linear 0, AMD
    /// checks the last byte against the limit (#GP(0)); both measured by the differential tester.
    #[test]
    fn flat_segment_wrap_by_vendor() {
        for (q, want) in [(Quirks::Intel, Ok(())), (Quirks::Amd, Err(Fault::gp0()))] {
            let mut e = Emu::new(TestMode::Prot32);
            e.st.quirks = q;
            e.bus.ram[..3].copy_from_slice(&[0x11, 0x22, 0x33]);
            assert_eq!(e.exec(&[0x8b, 0x05, 0xff, 0xff, 0xff, 0xff]), want, "{q:?}");
            if want.is_ok() {
                assert_eq!(e.st.gpr[0] >> 8, 0x33_2211, "{q:?}");
            }
        }
    }

    /// An access that starts canonical and ends in the non-canonical hole is #GP(0) (#SS(0) through
    /// SS), not a page fault on its first byte.
    #[test]
    fn every_byte_must_be_canonical() {
        for (code, want) in [(&[0x8b, 0x06][..], Fault::gp0()), (&[0x8b, 0x04, 0x24][..], Fault::ss(0))] {
            for q in [Quirks::Intel, Quirks::Amd] {
                let mut e = Emu::new(TestMode::Long64);
                e.st.quirks = q;
                e.st.gpr[6] = 0x7fff_ffff_fffe;
                e.st.gpr[4] = 0x7fff_ffff_fffe;
                assert_eq!(e.exec(code), Err(want.clone()), "{code:02x?} {q:?}");
            }
        }
    }

    /// A page becoming a code page must not change what the TLB holds (only that writes to it take the
    /// slow path). The guest writes through linear 0x200000 (page D), repoints that PTE at page D'
    /// without INVLPG, then, in one variant, runs code on D through its identity mapping (D becomes a
    /// code page), and writes through 0x200000 again. Both variants must write to the same page: the
    /// TLB's translation of 0x200000 is the guest's business, not the block cache's. Before the fix,
    /// decoding code on D dropped the write entry and the second write went to D'.
    #[test]
    fn decoding_code_keeps_write_translations() {
        use crate::testutil::{PD, TestMode, asm, run};
        use iced_x86::code_asm::*;
        const PT: u64 = 0x120000;
        const D: u64 = 0x30000;
        const D2: u64 = 0x32000;
        let mut landed = Vec::new();
        for run_code_on_d in [false, true] {
            let code = asm(64, |a| {
                a.mov(byte_ptr(0x200800u64), 0x11).unwrap();
                // PT[0] = D' | P | RW, no INVLPG: the TLB keeps mapping 0x200000 to D.
                a.mov(rax, D2 | 3).unwrap();
                a.mov(qword_ptr(PT), rax).unwrap();
                if run_code_on_d {
                    a.mov(rax, D).unwrap();
                    a.call(rax).unwrap();
                }
                a.mov(byte_ptr(0x200800u64), 0x22).unwrap();
            });
            let (st, bus, _) = run(TestMode::Long64, &code, |_, bus| {
                let w = |bus: &mut crate::testutil::TestBus, a: u64, v: u64| {
                    bus.ram[a as usize..a as usize + 8].copy_from_slice(&v.to_le_bytes())
                };
                w(bus, PD + 8, PT | 3);
                w(bus, PT, D | 3);
                bus.ram[D as usize] = 0xc3; // ret
            });
            assert_eq!(st.rip, crate::testutil::CODE + code.len() as u64 + 1, "ran to the HLT");
            landed.push((bus.ram[D as usize + 0x800], bus.ram[D2 as usize + 0x800]));
        }
        assert_eq!(landed[0], (0x22, 0), "without code on D the stale translation is used");
        assert_eq!(landed[1], landed[0], "decoding code on D must not drop the write translation");
    }

    /// The write entry of a page that becomes a code page keeps its translation but loses its host
    /// pointer, so writes take the slow path (where self-modifying code is detected).
    #[test]
    fn flush_phys_writes_keeps_the_translation() {
        let mut tlb = super::Tlb::default();
        tlb.write[5] =
            super::TlbEntry { tag: 0x5000 | 2, host: 0x1234_5000, phys: 0x9000, ..Default::default() };
        tlb.write[6] =
            super::TlbEntry { tag: 0x6000 | 2, host: 0x1234_6000, phys: 0xa000, ..Default::default() };
        tlb.flush_phys_writes(0x9000);
        assert_eq!((tlb.write[5].tag, tlb.write[5].host), (0x5000 | 2, 0));
        assert_eq!((tlb.write[6].tag, tlb.write[6].host), (0x6000 | 2, 0x1234_6000));
    }
    /// A long-mode machine with SMAP on (and allowed by the model) whose linear 2 MiB..2 MiB + 64 KiB
    /// are user pages (a 4 KiB page table at 0x120000, to physical 0x40000..); linear 0..2 MiB stay
    /// supervisor pages.
    fn smap_machine(code: &[u8]) -> crate::exec::string::testkit::Machine {
        use crate::state::cr4;
        use crate::testutil::{PD, TestMode};
        let mut m = crate::exec::string::testkit::Machine::new(TestMode::Long64, code);
        let pml4 = m.st.cr3;
        let pdpt = m.peek_le(pml4, 8) & !0xfff;
        m.poke(pml4, &(pdpt | 7).to_le_bytes());
        m.poke(pdpt, &(PD | 7).to_le_bytes());
        m.poke(PD + 8, &(USER_PT | 7).to_le_bytes());
        for k in 0..16u64 {
            m.poke(USER_PT + k * 8, &((0x40000 + k * 0x1000) | 7).to_le_bytes());
        }
        m.st.cr4 |= cr4::SMAP;
        m
    }
    const USER_PT: u64 = 0x120000;
    const USER: u64 = 0x200000;
    const KDATA: u64 = 0x10000;

    /// A data access at `lin` at CPL 0, explicit or implicit (a descriptor-table or TSS read).
    fn sup_read(
        m: &mut crate::exec::string::testkit::Machine,
        lin: u64,
        implicit: bool,
    ) -> Result<u64, Fault> {
        let mut ctx =
            super::Ctx { st: &mut m.st, bus: &mut m.bus, mmu: &mut m.mmu, next_rip: 0, break_block: false };
        ctx.read_lin_as(lin, 4, crate::paging::AccessKind::Read, implicit)
    }

    /// The flushes visit only the slots a fill marked, and leave exactly what a scan of every entry
    /// would: a random walk of fills, global and non-global flushes, page flushes, SMAP drops and
    /// code-page marks against a copy flushed the old way (every entry of the three arrays).
    #[test]
    fn flushes_of_marked_slots_match_a_full_scan() {
        use super::{TLB_ENTRIES, Tlb, TlbEntry};
        use crate::paging::AccessKind;
        fn full_flush(t: &mut Tlb, keep_global: bool) {
            for a in [&mut t.read, &mut t.write, &mut t.exec] {
                for e in a.iter_mut() {
                    if !(keep_global && e.global) {
                        e.tag = 0;
                    }
                }
            }
        }
        fn same(a: &Tlb, b: &Tlb) -> bool {
            let key = |t: &Tlb| {
                [&t.read, &t.write, &t.exec]
                    .iter()
                    .flat_map(|a| a.iter().map(|e| (e.tag, if e.tag != 0 { e.host } else { 0 })))
                    .collect::<Vec<_>>()
            };
            key(a) == key(b)
        }
        let mut fast = Box::<Tlb>::default();
        let mut slow = Box::<Tlb>::default();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for step in 0..20_000 {
            match next(100) {
                0..=79 => {
                    // Pages from a small set, so that slots collide and ways move.
                    let lin = (next(4096) << 12) | ((next(2) << 47).wrapping_neg() & 0xffff_8000_0000_0000);
                    let kind = [AccessKind::Read, AccessKind::Write, AccessKind::Exec][next(3) as usize];
                    let e = TlbEntry {
                        tag: lin & !0xfff | 2 | next(2),
                        host: 0x1000 * (1 + next(100) as usize),
                        phys: next(64) << 12,
                        global: next(4) == 0,
                        user_page: next(2) == 0,
                    };
                    fast.insert(kind, lin, e);
                    slow.insert(kind, lin, e);
                }
                80..=84 => {
                    fast.flush(false);
                    full_flush(&mut slow, false);
                }
                85..=89 => {
                    fast.flush(true);
                    full_flush(&mut slow, true);
                }
                90..=93 => {
                    let lin = next(4096) << 12;
                    fast.flush_page(lin);
                    slow.flush_page(lin);
                }
                94..=96 => {
                    fast.smap_entries = 1;
                    fast.drop_smap_entries();
                    for a in [&mut slow.read, &mut slow.write] {
                        for e in a.iter_mut() {
                            if e.tag & 1 == 0 && e.user_page {
                                e.tag = 0;
                            }
                        }
                    }
                }
                _ => {
                    let phys = next(64) << 12;
                    fast.flush_phys_writes(phys);
                    for e in slow.write.iter_mut() {
                        if e.tag != 0 && e.phys == phys {
                            e.host = 0;
                        }
                    }
                }
            }
            assert!(same(&fast, &slow), "step {step}");
        }
        // Entries written wholesale (a snapshot restore) are found after `mark_all`.
        fast.flush(false);
        fast.live = [0; TLB_ENTRIES / 64];
        fast.local = [0; TLB_ENTRIES / 64];
        fast.read[7].tag = 0x7000 | 2;
        fast.mark_all();
        fast.flush(false);
        assert_eq!(fast.read[7].tag, 0);
        // And by a flush that keeps global entries, which visits only the slots of non-global ones.
        fast.live = [0; TLB_ENTRIES / 64];
        fast.local = [0; TLB_ENTRIES / 64];
        fast.exec[9].tag = 0x9000 | 2;
        fast.exec[10] = TlbEntry { tag: 0xa000 | 2, global: true, ..TlbEntry::default() };
        fast.mark_all();
        fast.flush(true);
        assert_eq!((fast.exec[9].tag, fast.exec[10].tag), (0, 0xa000 | 2));
    }

    /// A read-modify-write destination is read through the write translation it was probed with,
    /// so it fills only the write TLB, as the JIT's inline forms (which probe the write entry and
    /// read through its host page) do; a read-only bit test fills only the read TLB. When the
    /// interpreter also filled the read TLB, a Linux replay under interp parted from its recording
    /// under jit (the state hash covers the TLB).
    #[test]
    fn a_read_modify_write_fills_only_the_write_tlb() {
        // add dword [rbx], 1 ; bt dword [rcx], 3 ; xadd [rbx], eax ; btr dword [rcx], 2
        let code = [0x83, 0x03, 0x01, 0x0f, 0xba, 0x21, 0x03, 0x0f, 0xc1, 0x03, 0x0f, 0xba, 0x31, 0x02];
        let mut m = smap_machine(&code);
        m.st.gpr[3] = KDATA + 0x40;
        m.st.gpr[1] = KDATA + 0x1040;
        let (a, b) = (super::tlb_index(KDATA), super::tlb_index(KDATA + 0x1000));
        m.step().unwrap();
        assert_eq!(m.mmu.tlb.write[a].tag, KDATA | 2, "the write entry is filled");
        assert_eq!(m.mmu.tlb.read[a].tag, 0, "the read entry is not");
        assert_eq!(m.peek_le(KDATA + 0x40, 4), 1);
        m.step().unwrap();
        assert_eq!(
            (m.mmu.tlb.read[b].tag, m.mmu.tlb.write[b].tag),
            ((KDATA + 0x1000) | 2, 0),
            "BT only reads"
        );
        m.step().unwrap();
        assert_eq!(m.mmu.tlb.read[a].tag, 0, "XADD reads through the write entry");
        m.step().unwrap();
        assert_eq!(m.mmu.tlb.write[b].tag, (KDATA + 0x1000) | 2, "BTR writes");
    }

    /// CLAC with SMAP drops the supervisor entries of user pages (the next supervisor read of the user
    /// page faults although the TLB had allowed it) and nothing else: the kernel page's entry and the
    /// fetch entry survive. STAC drops nothing. Before, any change of AC flushed the whole TLB.
    #[test]
    fn clac_drops_only_the_smap_entries() {
        use crate::paging::pf;
        use crate::state::flags;
        // stac; clac
        let mut m = smap_machine(&[0x0f, 0x01, 0xcb, 0x0f, 0x01, 0xca]);
        m.st.rflags &= !flags::AC;
        assert_eq!(sup_read(&mut m, USER + 0x10, false), Err(Fault::pf(pf::P)), "SMAP refuses with AC = 0");
        assert_eq!(sup_read(&mut m, KDATA, false), Ok(0));
        m.step().expect("stac");
        assert_eq!(m.st.rflags & flags::AC, flags::AC);
        let kslot = super::tlb_index(KDATA);
        assert_eq!(m.mmu.tlb.read[kslot].tag, KDATA | 2, "STAC keeps the supervisor page's entry");
        assert_eq!(sup_read(&mut m, USER + 0x10, false), Ok(0), "AC = 1 lets the kernel read a user page");
        let uslot = super::tlb_index(USER);
        assert_eq!(m.mmu.tlb.read[uslot].tag, USER | 2, "cached as a supervisor entry");
        assert!(m.mmu.tlb.read[uslot].user_page);
        let mut ctx =
            super::Ctx { st: &mut m.st, bus: &mut m.bus, mmu: &mut m.mmu, next_rip: 0, break_block: false };
        ctx.lin_to_phys(crate::testutil::CODE, crate::paging::AccessKind::Exec).expect("fetch translation");
        let exec_before = m.mmu.tlb.exec.map(|e| e.tag);
        assert_ne!(exec_before[super::tlb_index(crate::testutil::CODE)], 0);
        m.step().expect("clac");
        assert_eq!(m.st.rflags & flags::AC, 0);
        assert_eq!(m.mmu.tlb.read[uslot].tag, 0, "CLAC drops the supervisor entry of the user page");
        assert_eq!(m.mmu.tlb.read[kslot].tag, KDATA | 2, "and keeps the supervisor page's entry");
        assert_eq!(m.mmu.tlb.exec.map(|e| e.tag), exec_before, "and the fetch entries");
        assert_eq!(sup_read(&mut m, USER + 0x10, false), Err(Fault::pf(pf::P)));
        assert_eq!(m.st.cr2, USER + 0x10);
    }

    /// Implicit supervisor accesses use and fill the TLB (the IDT/GDT/TSS reads of every event walked
    /// the page tables before), but not through the supervisor entry of a user page while SMAP is on:
    /// SMAP refuses implicit accesses to user pages whatever AC says (SDM Vol. 3A 4.6.1).
    #[test]
    fn implicit_accesses_are_cached_but_smap_checked() {
        use crate::paging::pf;
        use crate::state::{cr4, flags};
        let mut m = smap_machine(&[0x90]);
        m.poke(KDATA + 0x20, &0x1234_5678u32.to_le_bytes());
        assert_eq!(sup_read(&mut m, KDATA + 0x20, true), Ok(0x1234_5678));
        assert_eq!(m.mmu.tlb.read[super::tlb_index(KDATA)].tag, KDATA | 2, "an implicit read fills the TLB");
        // Served from the TLB: the page tables no longer map it, the entry still does.
        let pml4 = m.st.cr3;
        let saved = m.peek_le(pml4, 8);
        m.poke(pml4, &0u64.to_le_bytes());
        assert_eq!(sup_read(&mut m, KDATA + 0x20, true), Ok(0x1234_5678), "an implicit read hits the TLB");
        m.poke(pml4, &saved.to_le_bytes());
        // A user page cached for the kernel under AC = 1 does not serve an implicit access.
        m.st.rflags |= flags::AC;
        assert_eq!(sup_read(&mut m, USER + 0x10, false), Ok(0));
        assert_eq!(sup_read(&mut m, USER + 0x10, true), Err(Fault::pf(pf::P)));
        // Without SMAP the implicit access has the supervisor's rights, and the entry serves it.
        m.st.cr4 &= !cr4::SMAP;
        assert_eq!(sup_read(&mut m, USER + 0x10, true), Ok(0));
    }

    /// `Mmu::access_tag`, the JIT's copy of the tag bits, follows each change the handlers make:
    /// SYSRET to CPL 3, POPF setting AC (with CR0.AM: the alignment bit), SYSCALL back to CPL 0
    /// (SFMASK clearing AC), MOV CR0; each step must leave it equal to `access_tag` of the state.
    #[test]
    fn the_access_tag_copy_follows_the_handlers() {
        use super::{TAG_ALIGN, access_tag};
        use crate::state::{cr0, efer, flags};
        use crate::testutil::{CODE, PD, STACK, TestMode};
        // sysretq; popfq; syscall; mov cr0, rax
        let code = [0x48, 0x0f, 0x07, 0x9d, 0x0f, 0x05, 0x0f, 0x22, 0xc0];
        let mut m = crate::exec::string::testkit::Machine::new(TestMode::Long64, &code);
        // User pages at every level (the stack is read at CPL 3).
        let pml4 = m.st.cr3;
        let pdpt = m.peek_le(pml4, 8) & !0xfff;
        for a in [pml4, pdpt, PD] {
            let e = m.peek_le(a, 8);
            m.poke(a, &(e | 4).to_le_bytes());
        }
        m.st.efer |= efer::SCE;
        m.st.msr.star = 0x18 << 48 | 0x08 << 32;
        m.st.msr.lstar = CODE + 6;
        m.st.msr.sfmask = flags::IF | flags::TF | flags::AC;
        m.st.cr0 |= cr0::AM;
        m.st.gpr[1] = CODE + 3;
        m.st.gpr[11] = 0x202;
        m.st.gpr[0] = m.st.cr0 & !cr0::AM;
        m.poke(STACK, &(0x202 | flags::AC).to_le_bytes());
        m.mmu.access_tag = access_tag(&m.st);
        assert_eq!(m.mmu.access_tag, 2);
        for (what, want) in [("sysret", 3), ("popf", 3 | TAG_ALIGN), ("syscall", 2), ("mov cr0", 2)] {
            m.step().unwrap_or_else(|f| panic!("{what}: {f:?}"));
            assert_eq!(m.mmu.access_tag, access_tag(&m.st), "{what}: the copy");
            assert_eq!(m.mmu.access_tag, want, "{what}");
        }
        assert_eq!(m.st.cr0 & cr0::AM, 0);
    }

    /// Pages 1 MiB apart (a process's code at 0x401000, the kernel's at 0x...81a01000) do not share a
    /// TLB slot, and consecutive pages never do (the JIT's inline probe relies on it).
    #[test]
    fn tlb_index_spreads_pages() {
        use super::tlb_index;
        // Measured pairs that shared a slot of the former `page % 256` in Linux's system call and
        // page fault paths (kernel code pages; a process's code and the kernel's).
        for (a, b) in [
            (0xffff_ffff_8a80_3000u64, 0xffff_ffff_89e0_3000u64),
            (0xffff_ffff_8a39_e000, 0xffff_ffff_8a09_e000),
            (0x401000, 0xffff_ffff_8aa0_1000),
            (0x401000, 0x501000),
        ] {
            assert_ne!(tlb_index(a), tlb_index(b), "{a:#x} {b:#x}");
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let lin = x & !0xfff;
            assert_ne!(tlb_index(lin), tlb_index(lin.wrapping_add(0x1000)), "{lin:#x}");
        }
        for p in 0..(1u64 << 20) {
            assert_ne!(tlb_index(p << 12), tlb_index((p + 1) << 12), "page {p:#x}");
        }
    }
    /// Two pages that share a slot both stay cached: the second fill moves the first page's entry to
    /// way 1, where a lookup finds it without a walk (the page tables no longer map it: the read
    /// could only come from the TLB). A third page of the slot evicts the older of the two.
    #[test]
    fn two_pages_of_one_slot_both_stay() {
        use super::{TLB_SIZE, tlb_index};
        use crate::testutil::PD;
        let mut m = crate::exec::string::testkit::Machine::new(crate::testutil::TestMode::Long64, &[0x90]);
        let (a, b, c) = (KDATA, 0x40f000u64, 0x80e000u64);
        assert_eq!(tlb_index(a), tlb_index(b));
        assert_eq!(tlb_index(a), tlb_index(c));
        m.poke(KDATA, &0x77u32.to_le_bytes());
        assert_eq!(sup_read(&mut m, a, false), Ok(0x77));
        assert!(sup_read(&mut m, b, false).is_ok());
        let slot = tlb_index(a);
        assert_eq!((m.mmu.tlb.read[slot].tag, m.mmu.tlb.read[slot + TLB_SIZE].tag), (b | 2, a | 2));
        let pd0 = m.peek_le(PD, 8);
        m.poke(PD, &0u64.to_le_bytes());
        assert_eq!(sup_read(&mut m, a, false), Ok(0x77), "way 1 serves the first page");
        assert_eq!(m.mmu.tlb.read[slot].tag, b | 2, "a hit moves nothing");
        m.poke(PD, &pd0.to_le_bytes());
        assert!(sup_read(&mut m, c, false).is_ok());
        assert_eq!((m.mmu.tlb.read[slot].tag, m.mmu.tlb.read[slot + TLB_SIZE].tag), (c | 2, b | 2));
        m.mmu.tlb.flush_page(b);
        assert_eq!(m.mmu.tlb.read[slot + TLB_SIZE].tag, 0, "INVLPG finds the page in way 1");
    }
}
