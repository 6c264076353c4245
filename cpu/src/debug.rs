//! The debug architecture (Intel SDM Vol. 3B ch. 17): breakpoints from DR0-DR3/DR7 and the bookkeeping
//! of debug exceptions that the interpreter reports after an instruction.
//!
//! Cost model: nothing here runs while no breakpoint is enabled. [`Breakpoints`] caches DR0-DR3/DR7
//! decoded, with one flag per kind:
//!
//! - instruction breakpoints (`code`): the interpreter checks the linear address of RIP when it enters
//!   a block, and ends a block before any later instruction whose address is a breakpoint;
//! - data breakpoints (`data`): a linear page holding a watched address is never cached in the TLB, so
//!   every access to it takes the slow path (`Ctx::tlb_fill`), which matches the access against the
//!   breakpoints, records the hit in [`Breakpoints::pending`] and ends the block; the REP string fast
//!   paths stay off while any data breakpoint is enabled;
//! - I/O breakpoints (`io`) are matched, while CR4.DE = 1, in `Ctx::io_in`/`io_out`.
//!
//! Hits and the single-step/task-switch conditions accumulate in `pending` as DR6 bits; the interpreter
//! ORs them into DR6 (B0-B3, BS and BT are sticky: the processor never clears them) and delivers one
//! trap-class #DB before the next instruction.

use crate::state::CpuState;

/// DR6 bits.
pub mod dr6 {
    /// Breakpoint conditions B0-B3.
    pub const B: u64 = 0xf;
    /// Debug-register access detected (DR7.GD).
    pub const BD: u64 = 1 << 13;
    /// Single step (RFLAGS.TF).
    pub const BS: u64 = 1 << 14;
    /// Task switch (T flag of the new TSS).
    pub const BT: u64 = 1 << 15;
}

/// DR7 bits.
pub mod dr7 {
    /// General-detect enable.
    pub const GD: u64 = 1 << 13;
}

/// What a breakpoint register watches (DR7 R/Wn).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kind {
    /// Disabled (neither Ln nor Gn set).
    #[default]
    Off,
    /// R/W = 00: instruction execution.
    Exec,
    /// R/W = 01: data writes.
    Write,
    /// R/W = 10: I/O reads and writes (matched only while CR4.DE = 1; undefined otherwise).
    Io,
    /// R/W = 11: data reads and writes, not instruction fetches.
    ReadWrite,
}

/// One decoded breakpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bp {
    /// What it watches.
    pub kind: Kind,
    /// First byte watched: DRn with the low bits cleared to the length's alignment (the processor
    /// ignores them, SDM Vol. 3B 17.2.5).
    pub addr: u64,
    /// Bytes watched: 1, 2, 4 or 8 (LEN 00, 01, 11, 10).
    pub len: u64,
}

impl Bp {
    /// Whether the `size` bytes at `a` overlap the watched bytes (addresses wrap modulo 2^64).
    #[inline]
    fn overlaps(&self, a: u64, size: u64) -> bool {
        a.wrapping_sub(self.addr) < self.len || self.addr.wrapping_sub(a) < size
    }
}

/// The decoded breakpoints and the debug conditions waiting to be reported.
#[derive(Clone, Debug, Default)]
pub struct Breakpoints {
    /// Any enabled instruction breakpoint.
    pub code: bool,
    /// Any enabled data breakpoint.
    pub data: bool,
    /// Any enabled I/O breakpoint (DR7 R/W = 10; they count only while CR4.DE = 1).
    pub io: bool,
    /// DR6 bits (B0-B3, BS, BT) of trap-class debug conditions met and not yet delivered.
    pub pending: u64,
    bps: [Bp; 4],
    /// DR0-DR3 and DR7 as decoded (to notice changes made behind the interpreter's back).
    cfg: [u64; 5],
    /// A debugger's watchpoints (the GDB stub's), kept apart from the guest's DR0-DR3: they never
    /// touch DR6 nor raise #DB; an access that meets one is recorded in [`Breakpoints::host_hit`]
    /// and ends the block, and the interpreter then returns `Exit::ReachedStop`.
    host: Vec<HostWatch>,
    /// The first debugger watchpoint met since it was last taken (the debugger takes it).
    pub host_hit: Option<HostHit>,
}

/// A debugger's watchpoint over linear addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostWatch {
    /// First byte watched (linear).
    pub addr: u64,
    /// Bytes watched (at least 1).
    pub len: u64,
    /// Reads meet it.
    pub read: bool,
    /// Writes meet it.
    pub write: bool,
}

/// A debugger watchpoint that an access met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostHit {
    /// The watchpoint that was met.
    pub watch: HostWatch,
    /// Whether the access was a write.
    pub write: bool,
}

impl Breakpoints {
    /// Re-decodes the breakpoints if DR0-DR3 or DR7 changed. Returns whether the set of data
    /// breakpoints changed (the caller must then flush the TLB, which may cache a newly watched page).
    pub fn sync(&mut self, st: &CpuState) -> bool {
        let cfg = [st.dr[0], st.dr[1], st.dr[2], st.dr[3], st.dr[7]];
        if cfg == self.cfg {
            return false;
        }
        self.cfg = cfg;
        let old: Vec<Bp> = self.data_bps().collect();
        let dr7 = st.dr[7];
        for (i, bp) in self.bps.iter_mut().enumerate() {
            let enabled = (dr7 >> (2 * i)) & 3 != 0;
            let rw = (dr7 >> (16 + 4 * i)) & 3;
            let len = match (dr7 >> (18 + 4 * i)) & 3 {
                0 => 1,
                1 => 2,
                2 => 8,
                _ => 4,
            };
            let kind = match rw {
                _ if !enabled => Kind::Off,
                0 => Kind::Exec,
                1 => Kind::Write,
                2 => Kind::Io,
                _ => Kind::ReadWrite,
            };
            // Instruction breakpoints compare the whole address (LEN must be 00 for them).
            let len = if kind == Kind::Exec { 1 } else { len };
            *bp = Bp { kind, addr: st.dr[i] & !(len - 1), len };
        }
        self.code = self.bps.iter().any(|b| b.kind == Kind::Exec);
        self.data =
            self.bps.iter().any(|b| matches!(b.kind, Kind::Write | Kind::ReadWrite)) || !self.host.is_empty();
        self.io = self.bps.iter().any(|b| b.kind == Kind::Io);
        let new: Vec<Bp> = self.data_bps().collect();
        old != new
    }

    fn data_bps(&self) -> impl Iterator<Item = Bp> + '_ {
        self.bps.iter().copied().filter(|b| matches!(b.kind, Kind::Write | Kind::ReadWrite))
    }

    /// The decoded breakpoint registers.
    pub fn bps(&self) -> &[Bp; 4] {
        &self.bps
    }

    /// B0-B3 bits of the enabled instruction breakpoints at linear address `lin`.
    #[inline]
    pub fn code_hits(&self, lin: u64) -> u64 {
        let mut hits = 0;
        for (i, b) in self.bps.iter().enumerate() {
            if b.kind == Kind::Exec && b.addr == lin {
                hits |= 1 << i;
            }
        }
        hits
    }

    /// Whether the linear page of `lin` holds a watched data address (its TLB entries must not be
    /// cached), the guest's or a debugger's.
    #[inline]
    pub fn watches_page(&self, lin: u64) -> bool {
        let page = lin & !0xfff;
        self.data_bps().any(|b| b.addr & !0xfff == page)
            || self
                .host
                .iter()
                .any(|w| w.addr & !0xfff <= page && page <= w.addr.wrapping_add(w.len - 1) & !0xfff)
    }

    /// Replaces the debugger's watchpoints. The caller must drop the TLB entries of the pages they
    /// watch ([`Breakpoints::host_watches`]), which may be cached.
    pub fn set_host_watches(&mut self, watches: Vec<HostWatch>) {
        self.host = watches.into_iter().filter(|w| w.len != 0).collect();
        self.data = self.data_bps().next().is_some() || !self.host.is_empty();
    }

    /// The debugger's watchpoints.
    pub fn host_watches(&self) -> &[HostWatch] {
        &self.host
    }

    /// The first debugger watchpoint that an access of `size` bytes at linear `lin` meets.
    #[inline]
    pub fn host_hits(&self, lin: u64, size: u64, write: bool) -> Option<HostHit> {
        if size == 0 {
            return None;
        }
        self.host
            .iter()
            .find(|w| {
                (if write { w.write } else { w.read })
                    && (lin.wrapping_sub(w.addr) < w.len || w.addr.wrapping_sub(lin) < size)
            })
            .map(|w| HostHit { watch: *w, write })
    }

    /// B0-B3 bits of the enabled data breakpoints that an access of `size` bytes at linear `lin` meets
    /// (`write`: a write; else a read).
    #[inline]
    pub fn data_hits(&self, lin: u64, size: u64, write: bool) -> u64 {
        let mut hits = 0;
        for (i, b) in self.bps.iter().enumerate() {
            let kind_ok = match b.kind {
                Kind::Write => write,
                Kind::ReadWrite => true,
                _ => false,
            };
            if kind_ok && size != 0 && b.overlaps(lin, size) {
                hits |= 1 << i;
            }
        }
        hits
    }

    /// B0-B3 bits of the enabled I/O breakpoints that an access of `size` bytes at `port` meets.
    #[inline]
    pub fn io_hits(&self, st: &CpuState, port: u16, size: u8) -> u64 {
        if st.cr4 & crate::state::cr4::DE == 0 {
            return 0;
        }
        let mut hits = 0;
        for (i, b) in self.bps.iter().enumerate() {
            if b.kind == Kind::Io && b.overlaps(port as u64, size as u64) {
                hits |= 1 << i;
            }
        }
        hits
    }
}

#[cfg(test)]
mod tests;
