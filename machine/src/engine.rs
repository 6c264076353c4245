//! Execution engines behind one trait: the machine holds one [`Engine`] and asks it to run the CPU up
//! to an instruction count (the next device deadline, converted by the clock), getting back why it
//! stopped. The engine keeps whatever caches it has (decoded blocks, translations, KVM state) and is
//! told when guest memory changed under them.
//!
//! - [`InterpEngine`]: the reference interpreter, with or without the Cranelift JIT as its block
//!   backend. Time is instruction counts.
//! - [`crate::kvm::KvmEngine`]: hardware virtualization; time is host time (see [`crate::clock`]).

use crate::board::Board;
use cpu::mem::{TLB_ENTRIES, TLB_SIZE, TlbEntry, tlb_index};
use cpu::{CpuBus, CpuState, Exit, Interpreter};
use std::ops::Range;
use vmcore::{SnapshotError, SnapshotReader, SnapshotWriter};

/// An execution engine.
pub trait Engine {
    /// A short name ("interp", "jit", "kvm") for diagnostics.
    fn name(&self) -> &'static str;

    /// Runs the CPU until `cpu.icount` reaches `until` (exactly, for engines that count instructions),
    /// the CPU halts or stops, or a device asks the machine to act ([`Exit::DeviceRequest`]).
    fn run(&mut self, cpu: &mut CpuState, board: &mut Board, until: u64) -> Exit;

    /// Drops every cached translation of guest code and memory: after a reset, a memory-map change, a
    /// change of the A20 gate, or a state restore.
    fn flush_all(&mut self);

    /// Guest-physical `ranges` were written behind the CPU's back (DMA): drops the translations of code
    /// on those pages only.
    fn invalidate_code(&mut self, ranges: &[Range<u64>]);

    /// The interpreter, for engines built on it (statistics, tests).
    fn interpreter(&self) -> Option<&Interpreter> {
        None
    }

    /// The interpreter, mutable (debugger breakpoints and watchpoints).
    fn interpreter_mut(&mut self) -> Option<&mut Interpreter> {
        None
    }

    /// The KVM engine (its debugger facilities: single-step and DR0-DR3), when this is it.
    fn kvm_mut(&mut self) -> Option<&mut crate::kvm::KvmEngine> {
        None
    }

    /// Writes the engine's state that can change what the guest sees, for snapshots: the interpreter's
    /// TLB, which (like a CPU's) may hold translations the page tables no longer give until the guest
    /// invalidates them.
    fn save_hidden(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
    }

    /// Restores [`Engine::save_hidden`] (after the CPU and board are restored).
    fn restore_hidden(
        &mut self,
        r: &mut SnapshotReader<'_>,
        cpu: &CpuState,
        board: &mut Board,
    ) -> Result<(), SnapshotError> {
        let _ = (cpu, board);
        r.tag(self.name())
    }

    /// One line of statistics (JIT translation counts), if the engine has any.
    fn stats(&self) -> Option<String> {
        None
    }
}

/// The interpreter as an engine, with the JIT installed as its block backend or not.
pub struct InterpEngine {
    /// The interpreter (decoded-block cache, TLB, and the JIT when installed).
    pub interp: Interpreter,
    jit: bool,
}

impl InterpEngine {
    /// The reference interpreter alone.
    pub fn new() -> InterpEngine {
        InterpEngine { interp: Interpreter::new(), jit: false }
    }

    /// The interpreter with the Cranelift JIT translating a block after `threshold` entries, as
    /// `opts` say (compile thread, persistent cache, code bound).
    pub fn with_jit(threshold: u32, mut opts: jit::Options) -> Result<InterpEngine, String> {
        let mut interp = Interpreter::new();
        opts.threshold = threshold;
        let jit = jit::Backend::new(opts).map_err(|e| format!("jit: {e}"))?;
        interp.set_backend(Box::new(jit), threshold);
        Ok(InterpEngine { interp, jit: true })
    }
}

impl Default for InterpEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine for InterpEngine {
    fn name(&self) -> &'static str {
        if self.jit { "jit" } else { "interp" }
    }

    fn run(&mut self, cpu: &mut CpuState, board: &mut Board, until: u64) -> Exit {
        self.interp.run(cpu, board, until)
    }

    fn flush_all(&mut self) {
        self.interp.flush_all();
    }

    fn invalidate_code(&mut self, ranges: &[Range<u64>]) {
        invalidate_code_ranges(&mut self.interp, ranges);
    }

    fn interpreter(&self) -> Option<&Interpreter> {
        Some(&self.interp)
    }

    fn interpreter_mut(&mut self) -> Option<&mut Interpreter> {
        Some(&mut self.interp)
    }

    fn stats(&self) -> Option<String> {
        self.interp.backend_stats()
    }

    fn save_hidden(&self, w: &mut SnapshotWriter) {
        // The same under interp and jit: a snapshot moves between them.
        w.tag("interp-tlb-v2");
        let tlb = &self.interp.mmu.tlb;
        for table in [&tlb.read, &tlb.write, &tlb.exec] {
            for e in table.iter() {
                // What an invalid entry last held does not matter: it is written as all zeros.
                let valid = e.tag != 0;
                w.u64(e.tag);
                w.u64(if valid { e.phys } else { 0 });
                w.bool(valid && e.global);
                w.bool(valid && e.host != 0);
                w.bool(valid && e.user_page);
            }
        }
        // Which pages hold decoded code decides which write entries take the slow path.
        let mut pages: Vec<u64> = self.interp.mmu.code_pages.iter().copied().collect();
        pages.sort_unstable();
        w.u64(pages.len() as u64);
        pages.iter().for_each(|p| w.u64(*p));
    }

    fn restore_hidden(
        &mut self,
        r: &mut SnapshotReader<'_>,
        cpu: &CpuState,
        board: &mut Board,
    ) -> Result<(), SnapshotError> {
        r.tag("interp-tlb-v2")?;
        self.interp.flush_all();
        // Debug registers as the TLB was filled under them (a later sync would flush it).
        self.interp.mmu.debug.sync(cpu);
        let mut tables = [[TlbEntry::default(); TLB_ENTRIES]; 3];
        for (n, table) in tables.iter_mut().enumerate() {
            for at in 0..TLB_ENTRIES {
                let (tag, phys, global, host, user_page) =
                    (r.u64()?, r.u64()?, r.bool()?, r.bool()?, r.bool()?);
                if tag == 0 {
                    continue;
                }
                let host = if host {
                    board.ram_page(phys & !0xfff, n == 1).map_or(0, |p| p.as_ptr() as usize)
                } else {
                    0
                };
                // Each entry goes to the slot its page has (`tlb_index`), in the way it was read
                // from, whatever slot that was: a file can only describe pages, and the JIT's inline
                // probe relies on a page never sitting in another page's slot.
                let way = at / TLB_SIZE * TLB_SIZE;
                table[way + tlb_index(tag)] = TlbEntry { tag, host, phys, global, user_page };
            }
        }
        let n = r.u64()?;
        if n > 1 << 24 {
            return Err(SnapshotError::Invalid(format!("{n} code pages")));
        }
        let mut pages = Vec::new();
        for _ in 0..n {
            pages.push(r.u64()?);
        }
        let [read, write, exec] = tables;
        let tlb = &mut self.interp.mmu.tlb;
        tlb.read = read;
        tlb.write = write;
        tlb.exec = exec;
        tlb.mark_all();
        let smap = |t: &[TlbEntry; TLB_ENTRIES]| t.iter().filter(|e| e.tag & 3 == 2 && e.user_page).count();
        tlb.smap_entries = (smap(&tlb.read) + smap(&tlb.write)) as u32;
        self.interp.mmu.code_pages = pages.into_iter().collect();
        Ok(())
    }
}

/// Drops the interpreter's decoded blocks (and their JIT translations) on the guest-physical pages that
/// `ranges` touch, leaving all other code in place. Walks whichever is smaller: the pages of the ranges,
/// or the set of pages holding code.
fn invalidate_code_ranges(interp: &mut Interpreter, ranges: &[Range<u64>]) {
    let page_count = |r: &Range<u64>| ((r.end.saturating_sub(1)) >> 12).saturating_sub(r.start >> 12) + 1;
    let total: u64 = ranges.iter().filter(|r| !r.is_empty()).map(page_count).fold(0, u64::saturating_add);
    let hit: Vec<u64> = if total <= interp.mmu.code_pages.len() as u64 {
        ranges
            .iter()
            .filter(|r| !r.is_empty())
            .flat_map(|r| (r.start >> 12..=(r.end - 1) >> 12).map(|p| p << 12))
            .filter(|p| interp.mmu.code_pages.contains(p))
            .collect()
    } else {
        interp
            .mmu
            .code_pages
            .iter()
            .copied()
            .filter(|p| {
                ranges.iter().any(|r| !r.is_empty() && *p < r.end && r.start < *p + vmcore::PAGE_SIZE)
            })
            .collect()
    };
    for p in hit {
        interp.invalidate_code_page(p);
    }
}
