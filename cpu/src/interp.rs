//! The reference interpreter: decodes guest code into blocks once (cached by physical address, RIP and
//! code size), pairs each instruction with its handler, and runs blocks until the instruction budget
//! is spent or something stops it.

use crate::bus::CpuBus;
use crate::debug::{dr6, dr7};
use crate::exec::{self, Insn};
use crate::fault::{Fault, Stop, vec};
use crate::interrupt::{self, Event};
use crate::mem::{Ctx, Mmu};
use crate::paging::AccessKind;
use crate::state::{CpuState, Seg, flags};
use iced_x86::{Decoder, DecoderOptions};
use std::cell::{Cell, OnceCell};
use std::collections::HashMap;
use std::rc::Rc;

/// Why the engine returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// The instruction budget was used up.
    BudgetSpent,
    /// The CPU executed HLT and no interrupt is pending.
    Halted,
    /// A device asked the engine to stop (the machine handles the request).
    DeviceRequest,
    /// The CPU cannot go on (triple fault, unimplemented instruction).
    Stopped(Stop),
    /// RIP reached [`Interpreter::stop_at`] (before executing the instruction there).
    ReachedStop,
    /// An exception was raised while [`Interpreter::trap_faults`] is set: it was not delivered. For a
    /// fault, RIP is the faulting instruction's; for a software interrupt, the next instruction's.
    Trapped(Fault),
}

/// Maximum instructions in one decoded block.
const MAX_BLOCK: usize = 64;

/// A decoded block: straight-line instructions ending at a control transfer, a page boundary, an
/// instruction that changes the mode, or [`MAX_BLOCK`].
pub struct Block {
    insns: Vec<Insn>,
    pages: [u64; 2],
    /// Times the block was entered while a [`BlockBackend`] was installed and it was not compiled yet.
    hits: Cell<u32>,
    /// The backend's translation (`None` inside: the backend declined it). Owned by the block, so
    /// that invalidating the block (self-modifying code, flushes, the cache bound) drops its code too.
    /// An `Rc` rather than a `Box`: the backend's handle lives in the reference-counted allocation
    /// itself, one pointer hop from the block when the loop dispatches to it.
    compiled: OnceCell<Option<Rc<dyn CompiledBlock>>>,
    /// Whether the block, run to its end, may be followed by the next one without the checks of
    /// `Interpreter::run`'s loop: it ends with a near jump, call, return or conditional branch, CLI
    /// or SWAPGS (see [`chains`]), or at the length or page limit, so it cannot have changed the
    /// mode, CS, paging, or made an interrupt deliverable, nor touched a device (an instruction
    /// that does sets `Ctx::break_block`). Or it ends with SYSCALL or SYSRETQ in 64-bit code, which
    /// set `Ctx::break_block`: the next block follows after the checks of [`ends_through`].
    chain: bool,
}

/// A translator of decoded blocks into host code: the JIT's entry point into the interpreter.
///
/// The interpreter decodes, caches and invalidates blocks; a backend only turns a block's
/// instructions into something that runs them. Every instruction keeps its single semantics, the
/// interpreter's handler: a backend calls it, or lowers exactly what it does (with a differential test).
pub trait BlockBackend {
    /// Translates `insns` (a block of the interpreter's, which outlives the result), or declines.
    fn compile(&mut self, insns: &[Insn]) -> Option<Rc<dyn CompiledBlock>>;
    /// A translation of `insns` that exists already and is cheap to get (the persistent translation
    /// cache), or `None`: asked once, at a block's [`LOOKUP_AT`]th entry, long before the threshold,
    /// so that code a previous run translated runs translated from (almost) the start. Like
    /// [`BlockBackend::compile`], it changes only the host's speed, never what the guest sees.
    fn lookup(&mut self, _insns: &[Insn]) -> Option<Rc<dyn CompiledBlock>> {
        None
    }
    /// Asked at a block's entries that are powers of two above [`LOOKUP_AT`] and below the
    /// threshold (`hits` of them so far): the backend may note the block as warm, and may return a
    /// translation that exists already, as [`BlockBackend::lookup`] does.
    fn warm(&mut self, _insns: &[Insn], _hits: u32) -> Option<Rc<dyn CompiledBlock>> {
        None
    }
    /// Blocks translated so far (statistics).
    fn compiled_blocks(&self) -> u64;
    /// Retired instructions that ran inline in generated code rather than through their handler
    /// (statistics; 0 when the backend does not count them).
    fn inline_retired(&self) -> u64 {
        0
    }
    /// One line of statistics for humans.
    fn describe(&self) -> String {
        format!("{} blocks translated", self.compiled_blocks())
    }
    /// Decoded blocks were dropped (self-modifying code, DMA, a flush, the cache bound): every link
    /// between translations must be forgotten before any translation runs again.
    fn unlink_all(&mut self) {}
}

/// What [`CompiledBlock::run`] leaves for the interpreter.
#[derive(Debug, Default)]
pub struct RunEnd {
    /// The fault that ended the run, with the next instruction's RIP (as [`run_insns`] returns it).
    pub fault: Option<(Fault, u64)>,
    /// When the run went on into other translated blocks (direct links between translations): the
    /// last block it ran.
    pub last: Option<LastBlock>,
    /// Handed to the next [`CompiledBlock::run`] of the same chain (no block dropped in between),
    /// which may link the block that ended this run to itself; 0 for none.
    pub link_from: usize,
}

/// The last block a linked run ran (see [`RunEnd::last`]).
#[derive(Debug)]
pub struct LastBlock {
    /// The retired count when it started.
    pub start_icount: u64,
    /// Its instructions (those of a block in the interpreter's cache, alive until the interpreter
    /// drops blocks).
    pub insns: *const Insn,
    /// How many.
    pub len: usize,
    /// Whether it may be followed directly (`Block::chain`).
    pub chain: bool,
}

/// A block translated by a [`BlockBackend`].
pub trait CompiledBlock {
    /// Runs the block from its first instruction, exactly as [`run_insns`] does, on the same `insns` it
    /// was compiled from. The interpreter only calls it when the whole block fits in the instruction
    /// budget and no per-instruction check (breakpoints, single step, `stop_at`) applies.
    ///
    /// When the block ran to its end without `Ctx::break_block`, left RIP at its own first
    /// instruction, and `ctx.st.icount + insns.len() <= loop_limit`, it may run again from there,
    /// as often as that holds: that is exactly what the interpreter's loop would do (the block is
    /// [chainable](Block), so no event can have become due). `loop_limit` is 0 when the interpreter
    /// must see every block boundary.
    ///
    /// Under the same conditions it may go on into the translation of the block at the new RIP,
    /// as the interpreter's chaining loop would (the interpreter's cache holds that block, and
    /// the fetch TLB maps its RIP to its physical address), and so on; [`RunEnd::last`] then
    /// names the last block run. `link_from` is the [`RunEnd::link_from`] of the run just before
    /// in the same chain, or 0.
    fn run(&self, ctx: &mut Ctx<'_>, insns: &[Insn], loop_limit: u64, link_from: usize) -> RunEnd;
}

/// Runs one instruction as the interpreter's inner loop does: `Ok(true)` when the block goes on,
/// `Ok(false)` when the instruction ended it (`Ctx::break_block`), `Err` with the fault and the next
/// RIP when it raised one (a software interrupt has retired). Generated code calls this (through the
/// JIT's trampoline), so both engines share it.
#[inline(always)]
pub fn step(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<bool, (Fault, u64)> {
    ctx.next_rip = insn.next_rip;
    match (insn.handler)(ctx, insn) {
        Ok(()) => {
            ctx.st.rip = ctx.next_rip;
            ctx.st.icount += 1;
            Ok(!ctx.break_block)
        }
        Err(f) => {
            if matches!(f, Fault::Soft { .. }) {
                // Software interrupts retire; the saved RIP is the next instruction's.
                ctx.st.icount += 1;
            }
            Err((f, insn.next_rip))
        }
    }
}

/// The reference form of [`CompiledBlock::run`]: `step` over the block until one ends it.
pub fn run_insns(ctx: &mut Ctx<'_>, insns: &[Insn]) -> Option<(Fault, u64)> {
    for insn in insns {
        match step(ctx, insn) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return Some(e),
        }
    }
    None
}

/// A fast, non-cryptographic hasher for block keys (the keys are guest addresses; no HashDoS concern
/// here since the guest cannot observe or attack the host's hash table layout beyond slowing itself).
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxBuild = std::hash::BuildHasherDefault<FxHasher>;

/// Most decoded blocks kept at once (a few hundred MiB at worst); the cache starts over beyond it.
const MAX_BLOCKS: usize = 1 << 18;

/// Sets of the block lookup cache in front of the hash map (two ways each).
const JUMP_SETS: usize = 4096;

/// The lookup-cache set of a block at `rip`, physical address `phys`: a multiplicative hash of both,
/// so that blocks at the same page offset of different pages (the user and kernel halves of a
/// system call) spread over the sets.
#[inline]
fn jump_set(rip: u64, phys: u64) -> usize {
    let h = (rip ^ phys.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> (64 - JUMP_SETS.trailing_zeros())) as usize
}

/// A two-way set-associative cache of decoded blocks by key, in front of `Interpreter::blocks`:
/// what `block_at` and the chaining loop look up between blocks. It was direct-mapped (4096 slots,
/// `rip ^ rip >> 12 ^ phys >> 2`): the hot blocks of a system call collided in it, so a third of
/// the lookups after SYSCALL/SYSRET/STI went on to the hash map, and the chaining loop missed almost
/// every time (measured on the guest benchmark's syscall kernel). A fill goes to way 0 and moves
/// way 0's entry to way 1 (like the TLB), so two hot blocks of one set both stay.
///
/// Host-side only: which blocks it holds is never guest-visible (every miss is served by the hash
/// map or a decode, exactly as before). Every block dropped from `Interpreter::blocks` is removed
/// from it too ([`JumpCache::remove`], [`JumpCache::clear`]).
#[derive(Default)]
struct JumpCache {
    sets: Vec<[JumpEntry; 2]>,
}

/// One way of a [`JumpCache`] set.
type JumpEntry = Option<(BlockKey, Rc<Block>)>;

impl JumpCache {
    /// The cached block of `key`.
    #[inline]
    fn get(&self, key: &BlockKey) -> Option<&Rc<Block>> {
        let set = self.sets.get(jump_set(key.rip, key.phys))?;
        set.iter().find_map(|e| match e {
            Some((k, b)) if k == key => Some(b),
            _ => None,
        })
    }

    /// Caches `block` under `key` (not already cached).
    fn insert(&mut self, key: BlockKey, block: Rc<Block>) {
        if self.sets.is_empty() {
            self.sets.resize_with(JUMP_SETS, Default::default);
        }
        let set = &mut self.sets[jump_set(key.rip, key.phys)];
        if set[1].as_ref().is_some_and(|(k, _)| *k == key) {
            set[1] = Some((key, block));
        } else {
            set[1] = set[0].take();
            set[0] = Some((key, block));
        }
    }

    /// Forgets the block of `key`, if cached.
    fn remove(&mut self, key: &BlockKey) {
        if let Some(set) = self.sets.get_mut(jump_set(key.rip, key.phys)) {
            for e in set.iter_mut() {
                if e.as_ref().is_some_and(|(k, _)| k == key) {
                    *e = None;
                }
            }
        }
    }

    /// Forgets every block.
    fn clear(&mut self) {
        self.sets.iter_mut().for_each(|s| *s = Default::default());
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct BlockKey {
    phys: u64,
    rip: u64,
    cs_base: u64,
    bits: u32,
}

/// The reference interpreter. Owns the decoded-block cache and the memory-side caches (TLB).
pub struct Interpreter {
    /// TLB and code-page tracking.
    pub mmu: Mmu,
    blocks: HashMap<BlockKey, Rc<Block>, FxBuild>,
    page_blocks: HashMap<u64, Vec<BlockKey>, FxBuild>,
    jump: JumpCache,
    /// Blocks decoded so far (statistics).
    pub decoded_blocks: u64,
    /// Block runs by the interpreter's own loop, not a translation (statistics: with a backend,
    /// the cold code's share of the run).
    pub interpreted_runs: u64,
    /// Instructions retired by those runs (statistics).
    pub interpreted_insns: u64,
    /// Why runs of translated code came back to this loop, counted by [`Return`] (statistics).
    pub returns: [u64; Return::COUNT],
    /// Return [`Exit::Trapped`] instead of delivering exceptions (differential testing).
    pub trap_faults: bool,
    /// Return [`Exit::ReachedStop`] when RIP reaches this address (differential testing, debuggers).
    pub stop_at: Option<u64>,
    /// More such addresses: a debugger's breakpoints (RIP values). A block holding one runs in the
    /// interpreter, which checks RIP before every instruction, so the JIT stops exactly there too.
    pub stops: std::collections::BTreeSet<u64>,
    /// Stop the machine on an instruction Ferrite has no handler for (`--strict`, for development)
    /// instead of raising #UD as a CPU without it does (the default).
    pub strict: bool,
    /// `icount` of the instruction after a MOV SS/POP SS whose debug traps wait until it completes
    /// (SDM Vol. 3A 6.8.3: the load of SS inhibits debug exceptions for one instruction), or `u64::MAX`.
    db_defer_icount: u64,
    /// The JIT, when installed ([`Interpreter::set_backend`]), and the number of entries after which
    /// a block is handed to it.
    backend: Option<(Box<dyn BlockBackend>, u32)>,
    /// Times each physical page's decoded code was invalidated (self-modifying code, DMA) in a row
    /// (each less than [`SMC_QUIET`] retired instructions after the one before), and the retired
    /// count at the last one. A block on a page invalidated `k` times in a row, the last less than
    /// `SMC_QUIET` instructions ago, is translated only after
    /// `threshold << min(k - SMC_BACKOFF_GRACE, SMC_BACKOFF_MAX)` entries, so code that keeps
    /// rewriting itself (or data written next to code) stays interpreted instead of paying a
    /// translation for every rewrite. Host-side statistics: it decides only when a block is
    /// translated, which no guest can observe.
    invalidations: HashMap<u64, (u32, u64), FxBuild>,
    /// `st.icount` as `run` last saw it (when code pages are invalidated): the clock of
    /// `invalidations`.
    clock: u64,
}

/// The entry of a block at which the interpreter asks the backend for an existing translation
/// ([`BlockBackend::lookup`]). The second, not the first: most blocks of a boot run once, and for
/// them the lookup (hashing the block) would cost more than interpreting it.
pub const LOOKUP_AT: u32 = 2;

/// What became of a run of translated code when it came back to [`Interpreter::run`]'s loop
/// (the index into [`Interpreter::returns`]): statistics of the dispatch between translations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Return {
    /// A translated block entered from the top of the loop (after its checks and lookup).
    Entered,
    /// A translated block run by the chaining loop right after the one before.
    Chained,
    /// Of those, runs handed the previous run's link slots (a link may be made).
    ChainedLinkable,
    /// The chain ended with a fault (or software interrupt).
    Fault,
    /// The chain ended at an instruction that asks for the loop's checks (`Ctx::break_block`:
    /// a device access, a mode change...), not one the chain goes on through.
    Break,
    /// The chain ended at a block whose end is not [chainable](Block) (a far transfer, HLT...).
    NotChainable,
    /// TF or RF set, an interrupt shadow, a pending debug trap or a code page written.
    Checks,
    /// An event became deliverable after SYSCALL, SYSRET or IRET (`events_after_through`).
    EventAfterThrough,
    /// The next block is not in the lookup cache or the block map through a fetch-TLB hit.
    NotCached,
    /// The next block is not translated (yet).
    NotTranslated,
    /// The next block does not fit in the budget (a deadline or the end of the run).
    Budget,
}

impl Return {
    /// How many reasons there are.
    pub const COUNT: usize = 11;
    /// Every reason, in index order.
    pub const ALL: [Return; Return::COUNT] = [
        Return::Entered,
        Return::Chained,
        Return::ChainedLinkable,
        Return::Fault,
        Return::Break,
        Return::NotChainable,
        Return::Checks,
        Return::EventAfterThrough,
        Return::NotCached,
        Return::NotTranslated,
        Return::Budget,
    ];
    /// A short name for statistics lines.
    pub fn name(self) -> &'static str {
        match self {
            Return::Entered => "entered",
            Return::Chained => "chained",
            Return::ChainedLinkable => "chained-linkable",
            Return::Fault => "fault",
            Return::Break => "break",
            Return::NotChainable => "not-chainable",
            Return::Checks => "checks",
            Return::EventAfterThrough => "event-after-through",
            Return::NotCached => "not-cached",
            Return::NotTranslated => "not-translated",
            Return::Budget => "budget",
        }
    }
}

/// Most doublings of the translation threshold for a page whose code keeps being invalidated.
const SMC_BACKOFF_MAX: u32 = 6;
/// Invalidations of a page before its threshold starts doubling: code patched once or twice (a
/// loader, a one-time fix-up) is translated again as soon as it would have been.
const SMC_BACKOFF_GRACE: u32 = 2;
/// Retired instructions without an invalidation after which a page counts as stable again: its
/// back-off ends. Linux patches its text hundreds of times per page while it boots (alternatives,
/// static keys and calls), then never again; without the decay the page-fault handler's blocks
/// stayed interpreted until their 64,000th entry. A page rewritten once per `SMC_QUIET`
/// instructions costs at most one translation (about 0.4 ms) per this many interpreted
/// instructions (some tens of ms).
const SMC_QUIET: u64 = 1 << 22;

impl Default for Interpreter {
    fn default() -> Self {
        Interpreter {
            mmu: Mmu::default(),
            blocks: HashMap::default(),
            page_blocks: HashMap::default(),
            jump: JumpCache::default(),
            decoded_blocks: 0,
            interpreted_runs: 0,
            interpreted_insns: 0,
            returns: [0; Return::COUNT],
            trap_faults: false,
            strict: false,
            stop_at: None,
            stops: Default::default(),
            db_defer_icount: u64::MAX,
            backend: None,
            invalidations: HashMap::default(),
            clock: 0,
        }
    }
}

impl Interpreter {
    /// A new interpreter with empty caches.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs a block backend (the JIT): a block entered `threshold` times (at least 1) is translated,
    /// and from then on runs as host code whenever the interpreter would run it whole.
    pub fn set_backend(&mut self, backend: Box<dyn BlockBackend>, threshold: u32) {
        self.backend = Some((backend, threshold.max(1)));
        self.flush_all();
    }

    /// The backend's statistics line, if one is installed, with the interpreter's share of the run.
    pub fn backend_stats(&self) -> Option<String> {
        self.backend.as_ref().map(|(b, _)| {
            format!(
                "{}; {} blocks decoded, {} block runs ({} instructions) in the interpreter's loop; translated runs by the loop: {}",
                b.describe(),
                self.decoded_blocks,
                self.interpreted_runs,
                self.interpreted_insns,
                Return::ALL
                    .iter()
                    .map(|r| format!("{} {}", self.returns[*r as usize], r.name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    /// Retired instructions that ran inline in the backend's code (0 without one).
    pub fn inline_retired(&self) -> u64 {
        self.backend.as_ref().map_or(0, |(b, _)| b.inline_retired())
    }

    /// Blocks the backend has translated (0 without one).
    pub fn compiled_blocks(&self) -> u64 {
        self.backend.as_ref().map_or(0, |(b, _)| b.compiled_blocks())
    }

    /// Drops all cached translations (TLB and decoded code): after a memory-map change or reset.
    pub fn flush_all(&mut self) {
        self.mmu.tlb.flush(false);
        self.jump.clear();
        self.blocks.clear();
        self.page_blocks.clear();
        self.mmu.code_pages.clear();
        self.mmu.dirty_code.clear();
        self.invalidations.clear();
        if let Some((b, _)) = &mut self.backend {
            b.unlink_all();
        }
    }

    /// Drops decoded code on physical page `page` (it was written by a device, DMA or the host).
    pub fn invalidate_code_page(&mut self, page: u64) {
        if let Some(keys) = self.page_blocks.remove(&page) {
            for k in keys {
                self.blocks.remove(&k);
                // Only this block's lookup-cache entry (clearing the whole cache on every write to a
                // code page made a guest that recycles code pages miss it everywhere).
                self.jump.remove(&k);
            }
            if let Some((b, _)) = &mut self.backend {
                b.unlink_all();
                let clock = self.clock;
                let (n, last) = self.invalidations.entry(page).or_insert((0, clock));
                *n = if clock.saturating_sub(*last) >= SMC_QUIET { 1 } else { n.saturating_add(1) };
                *last = clock;
            }
        }
        self.mmu.code_pages.remove(&page);
    }

    fn process_dirty_code(&mut self) {
        while let Some(p) = self.mmu.dirty_code.pop() {
            self.invalidate_code_page(p);
        }
    }

    /// Runs until `st.icount` reaches `until` or the CPU stops.
    pub fn run(&mut self, st: &mut CpuState, bus: &mut dyn CpuBus, until: u64) -> Exit {
        self.clock = st.icount;
        // The debug registers may have been written from outside (reset, snapshot, another engine).
        if self.mmu.debug.sync(st) {
            self.mmu.tlb.flush(false);
        }
        // So may CPL, RFLAGS and CR0: the generated code's copy of the TLB tag bits follows them.
        self.mmu.access_tag = crate::mem::access_tag(st);
        // Guard against a guest that takes exceptions forever without retiring instructions.
        let mut events_without_progress = 0u32;
        loop {
            // A debugger's watchpoint was met by the last instruction: its state is shown as it is.
            if self.mmu.debug.host_hit.is_some() {
                return Exit::ReachedStop;
            }
            // Trap-class debug exceptions (data/I/O breakpoints, single step, task switch) of the previous
            // instruction or event delivery come before anything else at this boundary (SDM Vol. 3A
            // table 6-2: priority 4, above NMI and maskable interrupts).
            if self.mmu.debug.pending != 0 && self.db_defer_icount != st.icount {
                if let Err(stop) = self.deliver_debug_trap(st, bus) {
                    return Exit::Stopped(stop);
                }
                events_without_progress += 1;
                if events_without_progress > 1_000_000 {
                    return Exit::Stopped(Stop::Shutdown("debug exception loop without progress".into()));
                }
                continue;
            }
            if st.icount >= until {
                return Exit::BudgetSpent;
            }
            if bus.stop_requested() {
                return Exit::DeviceRequest;
            }
            // External events at an instruction boundary.
            let can_irq = st.rflags & flags::IF != 0 && st.irq_shadow_icount != st.icount;
            if !st.nmi_blocked && st.irq_shadow_icount != st.icount && bus.nmi_pending() {
                bus.take_nmi();
                st.halted = false;
                st.nmi_blocked = true;
                if let Err(stop) = self.deliver(st, bus, 2, Event::Nmi) {
                    return Exit::Stopped(stop);
                }
                continue;
            }
            if can_irq
                && bus.interrupt_pending()
                && let Some(v) = bus.acknowledge_interrupt()
            {
                st.halted = false;
                if let Err(stop) = self.deliver(st, bus, v, Event::External) {
                    return Exit::Stopped(stop);
                }
                events_without_progress += 1;
                if events_without_progress > 1_000_000 {
                    return Exit::Stopped(Stop::Shutdown("interrupt storm without progress".into()));
                }
                continue;
            }
            if st.halted {
                return Exit::Halted;
            }
            if is_stop(self.stop_at, &self.stops, st.rip) {
                return Exit::ReachedStop;
            }
            // Instruction breakpoints: a fault-class #DB before the instruction, after NMI and interrupts
            // and before faults of the fetch (priority 7); RF suppresses them for one instruction.
            if self.mmu.debug.code && st.rflags & flags::RF == 0 && self.db_defer_icount != st.icount {
                let hits = self.mmu.debug.code_hits(linear_rip(st));
                if hits != 0 {
                    st.dr[6] |= hits;
                    st.dr[7] &= !dr7::GD;
                    // RF is pushed as it is (0): the handler sets it to resume (SDM Vol. 3B 17.3.1.1).
                    if let Err(stop) = self.deliver(st, bus, vec::DB, Event::Exception { error: None }) {
                        return Exit::Stopped(stop);
                    }
                    events_without_progress += 1;
                    if events_without_progress > 1_000_000 {
                        return Exit::Stopped(Stop::Shutdown("instruction breakpoint loop".into()));
                    }
                    continue;
                }
            }
            let block = match self.block_at(st, bus) {
                Ok(b) => b,
                Err(f) if self.trap_faults => return Exit::Trapped(f),
                Err(f) => {
                    if let Err(stop) = self.raise(st, bus, f, st.rip) {
                        return Exit::Stopped(stop);
                    }
                    events_without_progress += 1;
                    if events_without_progress > 1_000_000 {
                        return Exit::Stopped(Stop::Shutdown("exception loop without progress".into()));
                    }
                    continue;
                }
            };
            events_without_progress = 0;
            // After STI or MOV SS the next instruction runs with interrupts inhibited; the block ends
            // right after it so that a pending interrupt is taken at the exact boundary (unless none
            // can be: `shadow_runs_whole`). TF is sampled before the instruction: it single-steps the
            // instruction that clears it, not the one that sets it (SDM Vol. 3B 17.3.1.4).
            let tf = st.rflags & flags::TF != 0;
            let single_step = tf
                || (st.irq_shadow_icount == st.icount
                    && !shadow_runs_whole(&self.mmu, self.db_defer_icount, st, bus, &block));
            // RF is cleared at the start of the instruction, after the instruction-breakpoint check.
            if st.rflags & flags::RF != 0 {
                st.rflags &= !flags::RF;
            }
            // With instruction breakpoints enabled, the block stops before a later instruction at a
            // breakpoint address, so that the check above sees it.
            let insns = if self.mmu.debug.code {
                &block.insns[..self.code_bp_stop(st, &block)]
            } else {
                &block.insns[..]
            };
            let mut start_icount = st.icount;
            // The compiled form runs the block whole, so it is used only where the loop below would
            // also run it whole: no single step or breakpoint, no `stop_at` inside the block, and the
            // budget covers every instruction.
            let compiled = match &mut self.backend {
                Some((backend, threshold))
                    if !single_step
                        && !self.mmu.debug.code
                        && ((self.stop_at.is_none() && self.stops.is_empty())
                            || !block.insns.iter().any(|i| is_stop(self.stop_at, &self.stops, i.i.ip())))
                        && st.icount.saturating_add(block.insns.len() as u64) <= until =>
                {
                    match block.compiled.get() {
                        Some(c) => c.as_deref(),
                        None => {
                            let h = block.hits.get() + 1;
                            block.hits.set(h);
                            let found = if h == LOOKUP_AT && h < *threshold {
                                backend.lookup(&block.insns)
                            } else if h > LOOKUP_AT && h < *threshold && h.is_power_of_two() {
                                backend.warm(&block.insns, h)
                            } else {
                                None
                            };
                            if let Some(code) = found {
                                block.compiled.get_or_init(|| Some(code)).as_deref()
                            // The back-off map is consulted only once the plain threshold is reached.
                            } else if h >= *threshold
                                && (self.invalidations.is_empty() || {
                                    let k = block
                                        .pages
                                        .iter()
                                        .filter_map(|p| self.invalidations.get(p))
                                        .filter(|(_, last)| st.icount.saturating_sub(*last) < SMC_QUIET)
                                        .map(|(n, _)| *n)
                                        .max();
                                    let k = k.unwrap_or(0).saturating_sub(SMC_BACKOFF_GRACE);
                                    h >= threshold.saturating_mul(1 << k.min(SMC_BACKOFF_MAX))
                                })
                            {
                                block.compiled.get_or_init(|| backend.compile(&block.insns)).as_deref()
                            } else {
                                None
                            }
                        }
                    }
                }
                _ => None,
            };
            let mut ctx =
                Ctx { st: &mut *st, bus: &mut *bus, mmu: &mut self.mmu, next_rip: 0, break_block: false };
            let mut fault = None;
            let mut reached_stop = false;
            // Whether the last instruction run loads SS (read before blocks may be dropped).
            let last_loads_ss;
            if let Some(code) = compiled {
                // Chaining: without breakpoints or `stop_at`, a block that ran to its end (see
                // `Block::chain`) is followed by the next translated block here, with only the checks
                // that can fire between two such blocks; anything else goes back to the loop above.
                // The translation may also go on into the next ones by itself (`RunEnd::last`).
                let chain_ok = !ctx.mmu.debug.code && self.stop_at.is_none() && self.stops.is_empty();
                let loop_limit = if chain_ok { until } else { 0 };
                let end = code.run(&mut ctx, insns, loop_limit, 0);
                fault = end.fault;
                let mut go = chain_ok && block.chain;
                // The block that ran last: borrowed from the lookup cache or the block map (nothing changes them
                // while blocks run: invalidation waits for `process_dirty_code` below), or one the
                // translation went on into.
                let mut last: Option<&Rc<Block>> = None;
                let mut last_linked = None;
                let mut link_from = end.link_from;
                if let Some(l) = end.last {
                    go = chain_ok && l.chain;
                    last_linked = Some(l);
                }
                // Whether the run ended with the whole of a block whose last instruction is a
                // system-call or interrupt return (`ends_through`): the chain goes on through it.
                let mut through = chain_ok
                    && fault.is_none()
                    && ctx.break_block
                    && match &last_linked {
                        // SAFETY: as for `last_insns` below (a block of this interpreter's cache,
                        // none dropped since).
                        Some(l) => ends_through(unsafe { std::slice::from_raw_parts(l.insns, l.len) }, {
                            ctx.st.icount.wrapping_sub(l.start_icount)
                        }),
                        None => ends_through(insns, ctx.st.icount.wrapping_sub(start_icount)),
                    };
                // Whether it ended with the whole of a block whose last instruction is STI
                // (`ends_sti`): the chain goes on through its interrupt shadow.
                let mut sti = chain_ok
                    && fault.is_none()
                    && match &last_linked {
                        // SAFETY: as above.
                        Some(l) => ends_sti(unsafe { std::slice::from_raw_parts(l.insns, l.len) }, {
                            ctx.st.icount.wrapping_sub(l.start_icount)
                        }),
                        None => ends_sti(insns, ctx.st.icount.wrapping_sub(start_icount)),
                    };
                self.returns[Return::Entered as usize] += 1;
                let why = loop {
                    if fault.is_some() {
                        break Return::Fault;
                    }
                    if !go && !through && !sti {
                        break Return::NotChainable;
                    }
                    if !through && !sti && ctx.break_block {
                        break Return::Break;
                    }
                    let st = &*ctx.st;
                    // RF after an IRET (a fault's handler returns with the RF = 1 it was delivered
                    // with) is what the loop clears before the next block when no instruction
                    // breakpoint can be met (`chain_ok`): cleared below, right before that block
                    // runs, so that anything delivered first still sees it. The shadow STI opened
                    // is the next block's question (`shadow_runs_whole`), asked below.
                    let shadow = st.irq_shadow_icount == st.icount;
                    if st.rflags & flags::TF != 0
                        || (st.rflags & flags::RF != 0 && !through)
                        || (shadow && !sti)
                        || ctx.mmu.debug.pending != 0
                        || !ctx.mmu.dirty_code.is_empty()
                    {
                        break Return::Checks;
                    }
                    // After SYSCALL, SYSRET or IRET the loop's own event checks, in its order, of
                    // what the instruction may have changed: it may have set IF or unblocked NMIs
                    // (the pending state itself changes only through a device or at a deadline, as
                    // for any chain), and an IRET's stack reads may have met a host watchpoint or a
                    // device. Each query is one the loop would make at this boundary; when one
                    // fires, the loop makes it again and acts.
                    // After STI the same checks: it may have set IF (in its shadow, when it did, the
                    // NMI and interrupt queries are not made, as at the loop's top).
                    if (through || sti) && events_after_through(&mut ctx) {
                        break Return::EventAfterThrough;
                    }
                    let st = &*ctx.st;
                    let Some(next) = cached_block(st, ctx.mmu, &self.jump, &self.blocks) else {
                        break Return::NotCached;
                    };
                    let next: &Rc<Block> = next;
                    let Some(Some(code)) = next.compiled.get() else { break Return::NotTranslated };
                    if st.icount.saturating_add(next.insns.len() as u64) > until {
                        break Return::Budget;
                    }
                    // In STI's shadow the loop runs the next block whole only when nothing the
                    // shadow holds back is pending (else one instruction, then the loop's checks).
                    if shadow && !shadow_runs_whole(ctx.mmu, self.db_defer_icount, ctx.st, ctx.bus, next) {
                        break Return::Checks;
                    }
                    if through {
                        ctx.st.rflags &= !flags::RF;
                    }
                    // A block that is not chainable (IRET, STI outside 64-bit code) never follows a
                    // link: none is made from it. A link from a block that ends with STI in 64-bit
                    // code (chainable: its translation checks what `events_after_sti` does) leads
                    // only to a block the shadow may run whole (`shadow_shape_ok`), so that in the
                    // shadow the link is followed exactly where this loop would go on.
                    if !go || (sti && !shadow_shape_ok(next)) {
                        link_from = 0;
                    }
                    self.returns[Return::Chained as usize] += 1;
                    if link_from != 0 {
                        self.returns[Return::ChainedLinkable as usize] += 1;
                    }
                    start_icount = ctx.st.icount;
                    // The instruction that ended the block before asked for the loop's checks
                    // (`break_block`), made above.
                    ctx.break_block = false;
                    let end = code.run(&mut ctx, &next.insns, loop_limit, link_from);
                    fault = end.fault;
                    link_from = end.link_from;
                    go = next.chain;
                    last = Some(next);
                    last_linked = None;
                    if let Some(l) = end.last {
                        go = l.chain;
                        last_linked = Some(l);
                    }
                    through = fault.is_none()
                        && ctx.break_block
                        && match &last_linked {
                            // SAFETY: as above.
                            Some(l) => ends_through(unsafe { std::slice::from_raw_parts(l.insns, l.len) }, {
                                ctx.st.icount.wrapping_sub(l.start_icount)
                            }),
                            None => ends_through(&next.insns, ctx.st.icount.wrapping_sub(start_icount)),
                        };
                    sti = fault.is_none()
                        && match &last_linked {
                            // SAFETY: as above.
                            Some(l) => ends_sti(unsafe { std::slice::from_raw_parts(l.insns, l.len) }, {
                                ctx.st.icount.wrapping_sub(l.start_icount)
                            }),
                            None => ends_sti(&next.insns, ctx.st.icount.wrapping_sub(start_icount)),
                        };
                };
                self.returns[why as usize] += 1;
                let last_insns: &[Insn] = match (&last_linked, last) {
                    (Some(l), _) => {
                        start_icount = l.start_icount;
                        // SAFETY: `CompiledBlock::run` names the instructions of a block in this
                        // interpreter's cache, and no block has been dropped since (that happens
                        // only in `process_dirty_code`, below, and in `block_at`/`flush_all`).
                        unsafe { std::slice::from_raw_parts(l.insns, l.len) }
                    }
                    (None, Some(b)) => &b.insns,
                    (None, None) => insns,
                };
                let done = ctx.st.icount.wrapping_sub(start_icount) as usize;
                last_loads_ss = done > 0 && last_insns.get(done - 1).is_some_and(loads_ss);
            } else {
                for insn in insns.iter() {
                    if ctx.st.icount >= until {
                        break;
                    }
                    if is_stop(self.stop_at, &self.stops, ctx.st.rip) {
                        reached_stop = true;
                        break;
                    }
                    match step(&mut ctx, insn) {
                        Ok(true) if !single_step => {}
                        Ok(_) => break,
                        Err(e) => {
                            fault = Some(e);
                            break;
                        }
                    }
                }
                let done = ctx.st.icount.wrapping_sub(start_icount) as usize;
                last_loads_ss = done > 0 && insns.get(done - 1).is_some_and(loads_ss);
                self.interpreted_runs += 1;
                self.interpreted_insns += done as u64;
            }
            self.clock = st.icount;
            self.process_dirty_code();
            if reached_stop {
                return Exit::ReachedStop;
            }
            if let Some((f, next)) = fault {
                // The instruction did not complete: its breakpoint hits are dropped. Conditions of a
                // MOV SS/POP SS deferred past it stay, and are delivered after this event.
                if self.db_defer_icount != start_icount {
                    self.mmu.debug.pending = 0;
                }
                self.db_defer_icount = u64::MAX;
                // Without `strict`, an instruction Ferrite lacks is one this CPU does not have: #UD.
                let f = match f {
                    Fault::Stop(Stop::Unimplemented(_)) if !self.strict => Fault::ud(),
                    f => f,
                };
                if self.trap_faults {
                    self.mmu.debug.pending = 0;
                    if matches!(f, Fault::Soft { .. }) {
                        st.rip = next;
                    }
                    return Exit::Trapped(f);
                }
                if let Err(stop) = self.raise(st, bus, f, next) {
                    return Exit::Stopped(stop);
                }
            } else if single_step || self.mmu.debug.pending != 0 {
                if tf {
                    // Single-step trap after the instruction (DR6.BS).
                    self.mmu.debug.pending |= dr6::BS;
                }
                // A load of SS holds its debug traps until after the next instruction.
                if self.mmu.debug.pending != 0 && st.irq_shadow_icount == st.icount && last_loads_ss {
                    self.db_defer_icount = st.icount;
                }
            }
        }
    }

    /// Delivers the pending trap-class debug conditions as one #DB: their DR6 bits are ORed in (B0-B3,
    /// BS and BT are sticky), DR7.GD is cleared on entry to the handler (SDM Vol. 3B 17.2.4), and the
    /// pushed RF is RFLAGS.RF as it is (1 only between iterations of a REP string instruction).
    fn deliver_debug_trap(&mut self, st: &mut CpuState, bus: &mut dyn CpuBus) -> Result<(), Stop> {
        let bits = std::mem::take(&mut self.mmu.debug.pending);
        self.db_defer_icount = u64::MAX;
        st.dr[6] |= bits;
        st.dr[7] &= !dr7::GD;
        self.deliver(st, bus, vec::DB, Event::Exception { error: None })
    }

    /// Index of the first instruction after the block's first whose linear address is an enabled
    /// instruction breakpoint (the block's length if none).
    #[cold]
    fn code_bp_stop(&self, st: &CpuState, block: &Block) -> usize {
        let bits = st.code_bits();
        let base = st.sreg(Seg::Cs).base;
        for (k, insn) in block.insns.iter().enumerate().skip(1) {
            let ip = insn.i.ip();
            let lin = if bits == 64 { ip } else { base.wrapping_add(ip) & 0xffff_ffff };
            if self.mmu.debug.code_hits(lin) != 0 {
                return k;
            }
        }
        block.insns.len()
    }

    /// Raises `f` (from an instruction whose next RIP is `next`).
    fn raise(&mut self, st: &mut CpuState, bus: &mut dyn CpuBus, f: Fault, next: u64) -> Result<(), Stop> {
        match f {
            Fault::Exc { vector, error } => {
                // Fault-class exceptions push RF = 1, so that the restarted instruction does not report
                // its instruction breakpoint again (SDM Vol. 3B 17.3.1.1); #DF and #MC are aborts. The only
                // #DB raised by an instruction is the general-detect fault.
                if !matches!(vector, vec::DF | vec::MC) {
                    st.rflags |= flags::RF;
                }
                if vector == vec::DB {
                    st.dr[7] &= !dr7::GD;
                }
                self.deliver(st, bus, vector, Event::Exception { error })
            }
            Fault::Soft { vector, kind } => {
                let cur = st.rip;
                st.rip = next;
                let mut ctx = Ctx { st: &mut *st, bus, mmu: &mut self.mmu, next_rip: 0, break_block: false };
                let r = interrupt::deliver_with_escalation_at(&mut ctx, vector, Event::Soft { kind }, cur);
                self.process_dirty_code();
                if r.is_err() {
                    st.rip = cur;
                }
                r
            }
            Fault::Stop(s) => Err(s),
        }
    }

    /// Delivers an event through the IDT/IVT, escalating to #DF and triple fault as the SDM says.
    fn deliver(
        &mut self,
        st: &mut CpuState,
        bus: &mut dyn CpuBus,
        vector: u8,
        ev: Event,
    ) -> Result<(), Stop> {
        let mut ctx = Ctx { st, bus, mmu: &mut self.mmu, next_rip: 0, break_block: false };
        let r = interrupt::deliver_with_escalation(&mut ctx, vector, ev);
        self.process_dirty_code();
        r
    }

    fn block_at(&mut self, st: &mut CpuState, bus: &mut dyn CpuBus) -> Result<Rc<Block>, Fault> {
        let bits = st.code_bits();
        let cs = *st.sreg(Seg::Cs);
        if bits != 64 && st.rip > cs.limit as u64 {
            return Err(Fault::gp0());
        }
        let lin = if bits == 64 { st.rip } else { cs.base.wrapping_add(st.rip) & 0xffff_ffff };
        if bits == 64 && !crate::mem::is_canonical(lin) {
            return Err(Fault::gp0());
        }
        let rip = st.rip;
        let mut ctx =
            Ctx { st: &mut *st, bus: &mut *bus, mmu: &mut self.mmu, next_rip: 0, break_block: false };
        let phys = ctx.lin_to_phys(lin, AccessKind::Exec)?;
        let key = BlockKey { phys, rip, cs_base: cs.base, bits };
        if let Some(b) = self.jump.get(&key) {
            return Ok(b.clone());
        }
        if let Some(b) = self.blocks.get(&key) {
            self.jump.insert(key, b.clone());
            return Ok(b.clone());
        }
        let block = Rc::new(decode_block(&mut ctx, lin, phys, bits, self.stop_at)?);
        if self.blocks.len() >= MAX_BLOCKS {
            // A guest can make endless distinct keys for the same code (CS bases, RIPs in aliased
            // pages): bound the host memory the cache may take by starting over.
            self.blocks.clear();
            self.page_blocks.clear();
            self.jump.clear();
            if let Some((b, _)) = &mut self.backend {
                b.unlink_all();
            }
            // Write-TLB entries of former code pages keep taking the slow path until refilled: harmless.
            self.mmu.code_pages.clear();
        }
        for &p in block.pages.iter() {
            if p != u64::MAX {
                if self.mmu.code_pages.insert(p) {
                    self.mmu.tlb.flush_phys_writes(p);
                }
                self.page_blocks.entry(p).or_default().push(key);
            }
        }
        self.blocks.insert(key, block.clone());
        self.jump.insert(key, block.clone());
        self.decoded_blocks += 1;
        Ok(block)
    }
}

/// The cached block at the current RIP when `Interpreter::block_at` would return it from the lookup
/// cache or the block map through a hit in the fetch TLB, with no side effect (a block found in the
/// map is not put into the lookup cache); `None` when it would do more (walk the
/// page tables, fault, decode), which the caller leaves to `block_at`.
#[inline]
fn cached_block<'a>(
    st: &CpuState,
    mmu: &Mmu,
    jump: &'a JumpCache,
    blocks: &'a HashMap<BlockKey, Rc<Block>, FxBuild>,
) -> Option<&'a Rc<Block>> {
    let bits = st.code_bits();
    let cs = st.sreg(Seg::Cs);
    if bits != 64 && st.rip > cs.limit as u64 {
        return None;
    }
    let lin = if bits == 64 { st.rip } else { cs.base.wrapping_add(st.rip) & 0xffff_ffff };
    if bits == 64 && !crate::mem::is_canonical(lin) {
        return None;
    }
    let idx = crate::mem::tlb_index(lin);
    let tag = crate::mem::tag_of(lin, st.cpl == 3);
    let e =
        [&mmu.tlb.exec[idx], &mmu.tlb.exec[idx + crate::mem::TLB_SIZE]].into_iter().find(|e| e.tag == tag)?;
    let rip = st.rip;
    let phys = e.phys | (lin & 0xfff);
    let key = BlockKey { phys, rip, cs_base: cs.base, bits };
    jump.get(&key).or_else(|| blocks.get(&key))
}

/// Whether a run of `done` instructions of the block `insns` ran it whole and its last instruction
/// is SYSCALL, SYSRET or IRET in 64-bit code, which end their block with `Ctx::break_block`
/// because they change CS, CPL and RFLAGS (SYSRET and IRET also the mode: compatibility code). In
/// IA-32e mode none of them changes paging, touches a device on its own or switches tasks, so
/// after one the chaining loop may go on to the next translated block once it has made the loop's
/// checks of what they change (interrupt flag, NMI blocking; the block lookup reads CS, the code
/// size and CPL afresh). A fault ends the run before: they never get here then. The Linux system
/// call path runs a SYSCALL and a SYSRET per call, the page-fault path an IRETQ per fault.
#[inline]
fn ends_through(insns: &[Insn], done: u64) -> bool {
    use iced_x86::Code as C;
    done == insns.len() as u64
        && insns.last().is_some_and(|i| {
            i.i.code_size() == iced_x86::CodeSize::Code64
                && matches!(i.i.code(), C::Syscall | C::Sysretq | C::Sysretd | C::Iretq | C::Iretd)
        })
}

/// Whether a block `insns`, of which `done` instructions ran, ran whole and ends with STI (in any
/// mode: the interpreter's handler or the JIT's inline form). The interpreter's chaining loop goes
/// on after it as the loop would: the checks of [`events_after_through`] (STI may have set IF),
/// and in the shadow it opened, the next block only when [`shadow_runs_whole`] holds. Linux runs
/// three per page fault and one per system call. In 64-bit code it is also [chainable](chains):
/// a translation links past it after the same checks ([`events_after_sti`]), and only to a block
/// of [`shadow_shape_ok`]'s shape (the loop makes no other link from it).
fn ends_sti(insns: &[Insn], done: u64) -> bool {
    done == insns.len() as u64 && insns.last().is_some_and(|i| i.i.mnemonic() == iced_x86::Mnemonic::Sti)
}

/// Whether, right after a SYSCALL, SYSRET or IRET that ended a block ([`ends_through`]), the
/// interpreter's loop would act before running the next block on account of what such an
/// instruction may change: a host watchpoint met by its memory reads, a device request, an NMI
/// it unblocked (IRET) or an interrupt it enabled (SYSRET and IRET set IF from R11 or the stack).
/// The pending state itself changes only through a device or at a deadline, as for any chain.
/// Each query is one the loop makes at this boundary (in its order); when one answers yes, the
/// loop makes it again and acts. The one check for the interpreter's chaining loop and for
/// translated code that links through a SYSRET (the JIT calls it).
#[inline]
pub fn events_after_through(ctx: &mut Ctx<'_>) -> bool {
    let st = &*ctx.st;
    ctx.mmu.debug.host_hit.is_some()
        || st.halted
        || ctx.bus.stop_requested()
        || (!st.nmi_blocked && st.irq_shadow_icount != st.icount && ctx.bus.nmi_pending())
        || (st.rflags & flags::IF != 0 && st.irq_shadow_icount != st.icount && ctx.bus.interrupt_pending())
}

/// Whether `block`, entered in an interrupt shadow (the instruction after STI, MOV SS or POP
/// SS), may run as any other block instead of one instruction and a return to the loop's checks:
/// when no interrupt or NMI is pending that the shadow holds back, nothing can be delivered at
/// the boundary after its first instruction (an interrupt becomes pending only through a device,
/// which ends the block, or at a deadline, which the budget covers: the premise of chaining),
/// no debug condition waits on it, and the loop would find the rest of the block as a block of
/// its own with no side effect. That holds when the block is more than its first instruction
/// (otherwise both are the same), within one page (the rest's decode fetches only through the
/// fetch-TLB entry `block_at` has just used, a hit that changes nothing) and shorter than
/// [`MAX_BLOCK`] (the rest would end at the same instruction). Linux enables interrupts with STI
/// on every system call and page fault: one loop round and an interpreted instruction less each.
/// The chaining loop asks the same of the block it would run next after a block that ended with
/// STI (`ends_sti`), and follows it only then.
///
/// The NMI query latches a local APIC NMI into the interrupt controller a boundary earlier than
/// the loop's own check would; it is delivered at the same instruction either way.
fn shadow_runs_whole(
    mmu: &Mmu,
    db_defer_icount: u64,
    st: &CpuState,
    bus: &mut dyn CpuBus,
    block: &Block,
) -> bool {
    shadow_shape_ok(block) && db_defer_icount != st.icount && shadow_quiet(mmu, st, bus)
}

/// The part of [`shadow_runs_whole`] that is the block's own: more than one instruction, fewer
/// than [`MAX_BLOCK`], within one page.
fn shadow_shape_ok(block: &Block) -> bool {
    block.insns.len() > 1 && block.insns.len() < MAX_BLOCK && block.pages[1] == u64::MAX
}

/// The part of [`shadow_runs_whole`] that is the machine's: no debug condition, no interrupt or
/// NMI pending that the shadow holds back (the queries in the loop's order).
fn shadow_quiet(mmu: &Mmu, st: &CpuState, bus: &mut dyn CpuBus) -> bool {
    let held = mmu.debug.pending != 0
        || mmu.debug.code
        || mmu.debug.data
        || (st.rflags & flags::IF != 0 && bus.interrupt_pending())
        || (!st.nmi_blocked && bus.nmi_pending());
    !held
}

/// Whether, right after a block that ran whole and ends with STI in 64-bit code, the interpreter's
/// chaining loop would not go on into a block of [`shadow_shape_ok`]'s shape (the only kind a link
/// from such a block leads to): its checks after the block (TF and RF, which generated code tests
/// itself, aside) in its order: a debug condition pending or a code page written, then
/// [`events_after_through`], then, in the shadow STI opened, [`shadow_quiet`]. `MOV SS`'s deferral
/// (`db_defer_icount`) cannot be at the count after a block that ran whole: it is at most the
/// count where the chain began. The one check for translated code that links past STI (the JIT
/// calls it).
pub fn events_after_sti(ctx: &mut Ctx<'_>) -> bool {
    if ctx.mmu.debug.pending != 0 || !ctx.mmu.dirty_code.is_empty() || events_after_through(ctx) {
        return true;
    }
    ctx.st.irq_shadow_icount == ctx.st.icount && !shadow_quiet(ctx.mmu, ctx.st, ctx.bus)
}

/// Whether RIP `rip` is `stop_at` or one of the debugger's `stops`.
#[inline(always)]
fn is_stop(stop_at: Option<u64>, stops: &std::collections::BTreeSet<u64>, rip: u64) -> bool {
    stop_at == Some(rip) || (!stops.is_empty() && stops.contains(&rip))
}

/// The linear address of the current instruction.
fn linear_rip(st: &CpuState) -> u64 {
    if st.code_bits() == 64 { st.rip } else { st.sreg(Seg::Cs).base.wrapping_add(st.rip) & 0xffff_ffff }
}

/// Whether `insn` loads SS (MOV SS, POP SS), which holds debug exceptions for one instruction.
fn loads_ss(insn: &Insn) -> bool {
    use iced_x86::Code as C;
    match insn.i.code() {
        C::Popw_SS | C::Popd_SS => true,
        C::Mov_Sreg_rm16 | C::Mov_Sreg_r32m16 | C::Mov_Sreg_r64m16 => {
            insn.i.op0_register() == iced_x86::Register::SS
        }
        _ => false,
    }
}

/// Decodes one block starting at the current RIP. Fetches go through the exec TLB so paging and the
/// CS limit apply; an instruction that straddles a page fetches from both pages. The block also ends
/// before RIP `stop_at` (so that a block backend can run it whole; any end is a correct one).
pub(crate) fn decode_block(
    ctx: &mut Ctx<'_>,
    lin: u64,
    phys: u64,
    bits: u32,
    stop_at: Option<u64>,
) -> Result<Block, Fault> {
    let mut insns = Vec::with_capacity(16);
    let mut pages = [phys & !0xfff, u64::MAX];
    let cs = *ctx.st.sreg(Seg::Cs);
    let ip_mask = match bits {
        16 => 0xffff,
        32 => 0xffff_ffff,
        _ => u64::MAX,
    };
    let mut rip = ctx.st.rip;
    let mut cur_lin = lin;
    loop {
        // Fetch up to 15 bytes, not crossing into the next page unless the instruction needs it.
        let page_left = 0x1000 - (cur_lin & 0xfff) as usize;
        let mut buf = [0u8; 16];
        let n1 = page_left.min(15);
        fetch(ctx, cur_lin, &mut buf[..n1])?;
        let mut dec = Decoder::with_ip(bits, &buf[..n1], rip, DecoderOptions::NONE);
        let mut i = dec.decode();
        if i.is_invalid() && dec.last_error() == iced_x86::DecoderError::NoMoreBytes && n1 < 15 {
            // The instruction continues on the next page: fetch it (a fault there is the instruction's).
            let next_lin = cur_lin.wrapping_add(n1 as u64);
            let next_lin = if bits == 64 { next_lin } else { next_lin & 0xffff_ffff };
            fetch(ctx, next_lin, &mut buf[n1..15])?;
            let p2 = ctx.lin_to_phys(next_lin, AccessKind::Exec)?;
            pages[1] = p2 & !0xfff;
            dec = Decoder::with_ip(bits, &buf[..15], rip, DecoderOptions::NONE);
            i = dec.decode();
        }
        let len = i.len() as u64;
        // CS limit: the whole instruction must lie within it (legacy modes).
        if bits != 64 && rip.wrapping_add(len.max(1) - 1) > cs.limit as u64 {
            if insns.is_empty() {
                return Err(Fault::gp0());
            }
            break;
        }
        let handler = if i.is_invalid() {
            exec::handler_for(iced_x86::Code::INVALID)
        } else {
            exec::handler_for_model(i.code(), &ctx.st.model)
        };
        let asize = address_size(&buf[..len as usize], bits);
        let next_rip = rip.wrapping_add(len) & ip_mask;
        let ends = ends_block(&i) || i.is_invalid();
        insns.push(Insn::new(i, handler, asize, next_rip));
        if ends || insns.len() >= MAX_BLOCK || pages[1] != u64::MAX {
            break;
        }
        let next_lin = cur_lin.wrapping_add(len);
        if (next_lin & !0xfff) != (cur_lin & !0xfff) || next_rip < rip {
            break;
        }
        if stop_at == Some(next_rip) {
            break;
        }
        cur_lin = next_lin;
        rip = next_rip;
    }
    let chain = insns.last().is_some_and(chains);
    Ok(Block { insns, pages, hits: Cell::new(0), compiled: OnceCell::new(), chain })
}

/// Whether a block ending with `insn` may be followed by the next block directly (see `Block::chain`):
/// near control transfers within the same code segment, and instructions that do not end blocks.
pub fn chains(insn: &Insn) -> bool {
    use iced_x86::Mnemonic as M;
    let i = &insn.i;
    if i.is_invalid() {
        return false;
    }
    if !ends_block(i) {
        return true;
    }
    i.is_jcc_short_or_near()
        || i.is_jmp_short_or_near()
        || i.is_jmp_near_indirect()
        || i.is_call_near()
        || i.is_call_near_indirect()
        || matches!(i.mnemonic(), M::Ret | M::Loop | M::Loope | M::Loopne | M::Jcxz | M::Jecxz | M::Jrcxz)
        // They end blocks but change nothing the checks between blocks look at: not the mode, CS
        // or paging, no device, and no interrupt can become deliverable (CLI only masks; SWAPGS
        // changes GS.base, which no lookup uses; CLAC and STAC, at CPL 0 only, change AC, which
        // the access tag reads only at CPL 3, and CLAC drops the TLB entries SMAP allowed for AC =
        // 1 itself), so the next block may follow them directly, as the loop's own checks would
        // let it (the Linux system-call path runs three per call; every exception entry a CLAC).
        || matches!(i.mnemonic(), M::Swapgs | M::Cli | M::Clac | M::Stac)
        // They change CS, CPL and RFLAGS, so they still set `Ctx::break_block`: after them the
        // chaining loop, and translated code that links through them, make the checks of what
        // they change first (`ends_through`, `events_after_through`); in 64-bit code the next
        // block's key is always of 64-bit code with CS.base 0, so a direct link stays right.
        || (i.code_size() == iced_x86::CodeSize::Code64 && matches!(i.code(), iced_x86::Code::Syscall | iced_x86::Code::Sysretq))
        // STI in 64-bit code (Linux enables interrupts with it on every system call and page
        // fault): the chaining loop goes on after it (`ends_sti`), and translated code that links
        // past it makes that loop's checks first (`events_after_sti`); the loop links it only to
        // blocks the shadow may run whole (`shadow_shape_ok`).
        || (i.code_size() == iced_x86::CodeSize::Code64 && i.code() == iced_x86::Code::Sti)
}

fn fetch(ctx: &mut Ctx<'_>, lin: u64, out: &mut [u8]) -> Result<(), Fault> {
    let mut done = 0;
    while done < out.len() {
        let a = lin.wrapping_add(done as u64);
        let n = (out.len() - done).min(8).min(0x1000 - (a & 0xfff) as usize);
        let v = ctx.read_lin_as(a, n as u32, AccessKind::Exec, false)?;
        out[done..done + n].copy_from_slice(&v.to_le_bytes()[..n]);
        done += n;
    }
    Ok(())
}

/// Address size in bytes from the code size and a 0x67 prefix among the legacy prefixes.
fn address_size(bytes: &[u8], bits: u32) -> u8 {
    let mut has67 = false;
    for &b in bytes {
        match b {
            0x67 => has67 = true,
            0x66 | 0xf0 | 0xf2 | 0xf3 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
            _ => break,
        }
    }
    match (bits, has67) {
        (16, false) | (32, true) => 2,
        (32, false) | (16, true) | (64, true) => 4,
        _ => 8,
    }
}

/// Whether an instruction ends a block: control transfers, and instructions that change the mode,
/// the interrupt flag, paging, segment state, or talk to devices.
fn ends_block(i: &iced_x86::Instruction) -> bool {
    use iced_x86::FlowControl as F;
    if i.flow_control() != F::Next {
        return true;
    }
    use iced_x86::Mnemonic as M;
    matches!(
        i.mnemonic(),
        M::Mov
            | M::Pop
            | M::Popf
            | M::Sti
            | M::Cli
            | M::In
            | M::Out
            | M::Insb
            | M::Insw
            | M::Insd
            | M::Outsb
            | M::Outsw
            | M::Outsd
            | M::Lgdt
            | M::Lidt
            | M::Lldt
            | M::Ltr
            | M::Lmsw
            | M::Clts
            | M::Invlpg
            | M::Wrmsr
            | M::Hlt
            | M::Lds
            | M::Les
            | M::Lfs
            | M::Lgs
            | M::Lss
            | M::Swapgs
            | M::Xsetbv
            | M::Stac
            | M::Clac
            | M::Wbinvd
            | M::Invd
            | M::Invpcid
    ) && (i.mnemonic() != M::Mov || is_special_mov(i))
        && (i.mnemonic() != M::Pop || i.op0_register().is_segment_register())
}

/// Whether a MOV ends its block: a write of a segment, control, debug or test register, or a read
/// of a debug or test register. A read of a segment or control register (`mov_from_sreg`,
/// `mov_from_cr`: Linux's page-fault entry reads CR2) changes nothing but its destination and
/// touches no device, so the block goes on after it.
fn is_special_mov(i: &iced_x86::Instruction) -> bool {
    let reg =
        |k: u32| (i.op_count() > k && i.op_kind(k) == iced_x86::OpKind::Register).then(|| i.op_register(k));
    reg(0).is_some_and(|r| r.is_segment_register() || r.is_cr() || r.is_dr() || r.is_tr())
        || reg(1).is_some_and(|r| r.is_dr() || r.is_tr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{CODE, DATA, TestBus, TestMode, asm, cpu_in};
    use iced_x86::code_asm::*;

    fn key(rip: u64, phys: u64) -> BlockKey {
        BlockKey { phys, rip, cs_base: 0, bits: 64 }
    }

    fn dummy() -> Rc<Block> {
        Rc::new(Block {
            insns: Vec::new(),
            pages: [0, u64::MAX],
            hits: Cell::new(0),
            compiled: OnceCell::new(),
            chain: false,
        })
    }

    /// Keys of `n` blocks that all fall into one set of the lookup cache.
    fn same_set(n: usize) -> Vec<BlockKey> {
        let set = jump_set(0x40_1000, 0x123_4000);
        let mut v = vec![key(0x40_1000, 0x123_4000)];
        let mut rip = 0x40_1000u64;
        while v.len() < n {
            rip += 1;
            if jump_set(rip, 0x123_4000) == set {
                v.push(key(rip, 0x123_4000));
            }
        }
        v
    }

    #[test]
    fn lookup_cache_keeps_two_blocks_of_a_set_and_evicts_the_older() {
        let mut c = JumpCache::default();
        let k = same_set(3);
        let b: Vec<_> = (0..3).map(|_| dummy()).collect();
        assert!(c.get(&k[0]).is_none(), "an empty cache finds nothing");
        c.insert(k[0], b[0].clone());
        c.insert(k[1], b[1].clone());
        // The direct-mapped cache this replaced lost k[0] here: the system call's hot blocks thrashed.
        assert!(Rc::ptr_eq(c.get(&k[0]).unwrap(), &b[0]));
        assert!(Rc::ptr_eq(c.get(&k[1]).unwrap(), &b[1]));
        c.insert(k[2], b[2].clone());
        assert!(c.get(&k[0]).is_none(), "the oldest of three in a set is evicted");
        assert!(Rc::ptr_eq(c.get(&k[1]).unwrap(), &b[1]));
        assert!(Rc::ptr_eq(c.get(&k[2]).unwrap(), &b[2]));
        // The rest of the key takes part: another CS base or code size is another block.
        assert!(c.get(&BlockKey { cs_base: 0x10, ..k[2] }).is_none());
        assert!(c.get(&BlockKey { bits: 32, ..k[2] }).is_none());
        c.remove(&k[1]);
        assert!(c.get(&k[1]).is_none());
        assert!(Rc::ptr_eq(c.get(&k[2]).unwrap(), &b[2]), "remove takes only its own key");
        c.clear();
        assert!(c.get(&k[2]).is_none());
        // Re-inserting the key that sits in way 1 keeps way 0.
        c.insert(k[0], b[0].clone());
        c.insert(k[1], b[1].clone());
        c.insert(k[0], b[2].clone());
        assert!(Rc::ptr_eq(c.get(&k[0]).unwrap(), &b[2]));
        assert!(Rc::ptr_eq(c.get(&k[1]).unwrap(), &b[1]));
    }

    #[test]
    fn lookup_cache_set_hash_spreads_same_offsets_of_different_pages() {
        // The user and kernel blocks of a system call share page offsets; 64 pages at one offset
        // must not pile into a few sets.
        let sets: std::collections::HashSet<_> = (0..64u64)
            .map(|p| jump_set(0xffff_ffff_8100_0000 + p * 0x1000 + 0x40, 0x100_0000 + p * 0x1000 + 0x40))
            .collect();
        assert!(sets.len() >= 60, "{} sets for 64 pages", sets.len());
    }

    /// Code that runs a block, rewrites an immediate in it with a store to its own page, and runs
    /// it again: the second run must see the new code, whichever cache held the old block.
    #[test]
    fn a_rewritten_block_is_never_found_in_the_lookup_cache() {
        let code = asm(64, |a| {
            let mut top = a.create_label();
            let mut done = a.create_label();
            a.mov(ecx, 2).unwrap();
            a.set_label(&mut top).unwrap();
            a.mov(eax, 0x11).unwrap(); // b8 11 00 00 00: the store below rewrites the 0x11
            a.add(ebx, eax).unwrap();
            a.dec(ecx).unwrap();
            a.jz(done).unwrap();
            a.lea(rdx, ptr(top)).unwrap();
            a.mov(byte_ptr(rdx + 1), 0x22).unwrap();
            a.jmp(top).unwrap();
            a.set_label(&mut done).unwrap();
            a.hlt().unwrap();
        });
        let mut bus = TestBus::default();
        let mut st = cpu_in(TestMode::Long64, &mut bus);
        bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
        let mut it = Interpreter::new();
        assert_eq!(it.run(&mut st, &mut bus, 1000), Exit::Halted);
        assert_eq!(st.gpr[3], 0x11 + 0x22, "the second pass ran the rewritten MOV");
        // Every block of the page was dropped from the lookup cache with the map.
        for set in &it.jump.sets {
            for (k, _) in set.iter().flatten() {
                assert!(it.blocks.contains_key(k), "a dropped block left in the lookup cache");
            }
        }
    }

    /// The same bytes at the same RIP and physical address, run as 64-bit and then as 32-bit code
    /// by one interpreter: `48 ff c0` is INC RAX in 64-bit mode, DEC EAX; INC EAX in 32-bit mode.
    #[test]
    fn a_mode_change_finds_the_block_of_the_new_mode() {
        let code = [0x48, 0xff, 0xc0, 0xf4];
        let mut it = Interpreter::new();
        // One bus throughout: the TLB holds pointers into its RAM.
        let mut bus = TestBus::default();
        for (mode, icount) in [(TestMode::Long64, 2), (TestMode::Prot32, 3), (TestMode::Long64, 2)] {
            let mut st = cpu_in(mode, &mut bus);
            bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
            st.gpr[0] = 5;
            assert_eq!(it.run(&mut st, &mut bus, 100), Exit::Halted);
            assert_eq!(st.icount, icount, "{mode:?}: the block decoded for this mode ran");
            assert_eq!(st.gpr[0], if mode == TestMode::Long64 { 6 } else { 5 });
        }
    }

    const HANDLER: u64 = CODE + 0x200;

    /// 32-bit code with IF = 0: STI, then a block of three MOVs and HLT (with an NMI: from the first
    /// MOV, in the shadow of an STI just run). The handler of vector 0x20
    /// and of the NMI stores ECX and EDX (what the block had done when the event came) and IRETs.
    /// Returns the stored ECX and EDX, the final state and the interpreter's block runs.
    fn sti_then_block(irq: bool, nmi: bool) -> (u32, u32, CpuState, u64) {
        let mut bus = TestBus { irq: irq.then_some(0x20), nmi, ..TestBus::default() };
        let mut st = cpu_in(TestMode::Prot32, &mut bus);
        let code = asm(32, |a| {
            a.sti().unwrap();
            a.mov(ecx, 1).unwrap();
            a.mov(edx, 2).unwrap();
            a.mov(esi, 3).unwrap();
            a.hlt().unwrap();
        });
        bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
        let handler = iced_x86::code_asm::CodeAssembler::new(32)
            .and_then(|mut a| {
                a.mov(dword_ptr(DATA as u32), ecx)?;
                a.mov(dword_ptr(DATA as u32 + 4), edx)?;
                a.iretd()?;
                a.assemble(HANDLER)
            })
            .unwrap();
        bus.ram[HANDLER as usize..HANDLER as usize + handler.len()].copy_from_slice(&handler);
        // 32-bit interrupt gates to HANDLER for the NMI (2) and vector 0x20.
        let gate = (HANDLER & 0xffff) | (0x08 << 16) | (0x8e00u64 << 32) | ((HANDLER >> 16) << 48);
        for v in [2usize, 0x20] {
            bus.ram[0x600 + v * 8..0x608 + v * 8].copy_from_slice(&gate.to_le_bytes());
        }
        st.idtr.base = 0x600;
        st.idtr.limit = 0x7ff;
        bus.ram[DATA as usize..DATA as usize + 8].fill(0xff);
        st.rflags &= !flags::IF;
        st.gpr[1] = 0;
        st.gpr[2] = 0;
        if nmi {
            // An NMI is not held by IF = 0: start as if STI had just run (shadow and IF set), or it
            // would come before the STI.
            st.rip += 1;
            st.rflags |= flags::IF;
            st.irq_shadow_icount = st.icount;
        }
        let mut it = Interpreter::new();
        assert_eq!(it.run(&mut st, &mut bus, 100), Exit::Halted);
        let word = |a: u64| u32::from_le_bytes(bus.ram[a as usize..a as usize + 4].try_into().unwrap());
        (word(DATA), word(DATA + 4), st, it.interpreted_runs)
    }

    #[test]
    fn an_interrupt_held_by_the_sti_shadow_comes_after_one_instruction() {
        let (c, d, st, _) = sti_then_block(true, false);
        assert_eq!((c, d), (1, 0), "the interrupt came after the MOV in the shadow, no later");
        assert_eq!((st.gpr[1], st.gpr[2], st.gpr[6]), (1, 2, 3));
        let (c, d, _, _) = sti_then_block(false, true);
        assert_eq!((c, d), (1, 0), "the NMI came after the MOV in the shadow, no later");
    }

    #[test]
    fn with_nothing_pending_the_block_after_sti_runs_whole() {
        let (c, d, st, runs) = sti_then_block(false, false);
        assert_eq!((c, d), (0xffff_ffff, 0xffff_ffff), "no event was delivered");
        assert_eq!((st.gpr[1], st.gpr[2], st.gpr[6], st.icount), (1, 2, 3, 5));
        // STI's block, then the rest as one block (it was three runs: STI, the MOV in the shadow
        // alone, then the rest from the second MOV).
        assert_eq!(runs, 2);
    }

    /// A backend that counts translations and runs them as the interpreter would.
    struct Counting(Rc<Cell<u64>>);

    struct Interp;

    impl CompiledBlock for Interp {
        fn run(&self, ctx: &mut Ctx<'_>, insns: &[Insn], _: u64, _: usize) -> RunEnd {
            RunEnd { fault: run_insns(ctx, insns), ..RunEnd::default() }
        }
    }

    impl BlockBackend for Counting {
        fn compile(&mut self, _: &[Insn]) -> Option<Rc<dyn CompiledBlock>> {
            self.0.set(self.0.get() + 1);
            Some(Rc::new(Interp))
        }
        fn compiled_blocks(&self) -> u64 {
            self.0.get()
        }
    }

    /// A loop of 100 iterations and HLT, every block translated at its first entry (by a backend
    /// whose runs come back after each block): the loop enters translated code three times (the
    /// first block, then the loop's and HLT's blocks, each met undecoded by the chaining loop),
    /// chains the loop's block the other 98 times, and counts why each chain ended.
    #[test]
    fn returns_to_the_loop_are_counted_by_reason() {
        let code = asm(64, |a| {
            let mut top = a.create_label();
            a.mov(ecx, 100).unwrap();
            a.set_label(&mut top).unwrap();
            a.add(eax, ecx).unwrap();
            a.dec(ecx).unwrap();
            a.jnz(top).unwrap();
            a.hlt().unwrap();
        });
        let mut bus = TestBus::default();
        let mut st = cpu_in(TestMode::Long64, &mut bus);
        bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(&code);
        let mut it = Interpreter::new();
        it.set_backend(Box::new(Counting(Rc::new(Cell::new(0)))), 1);
        assert_eq!(it.run(&mut st, &mut bus, u64::MAX), Exit::Halted);
        assert_eq!(st.gpr[0] as u32, (1..=100u32).sum::<u32>());
        let r = |k: Return| it.returns[k as usize];
        assert_eq!(r(Return::Entered), 3, "{:?}", it.returns);
        assert_eq!(r(Return::Chained), 98, "{:?}", it.returns);
        assert_eq!(r(Return::ChainedLinkable), 0, "these runs hand on no link slots");
        // The first block's and the loop's last run's successors were not decoded yet.
        assert_eq!(r(Return::NotCached), 2, "{:?}", it.returns);
        // HLT's block does not chain (it also asks for the loop's checks: one reason, the first).
        assert_eq!(r(Return::NotChainable), 1, "{:?}", it.returns);
        // Every entry ends for exactly one reason.
        let ends: u64 = Return::ALL[3..].iter().map(|&k| r(k)).sum();
        assert_eq!(ends, r(Return::Entered));
    }

    /// Code on page A rewrites a byte of its own page 20 times (every rewrite drops its blocks),
    /// calls a loop of `wait` iterations on page B, then runs a loop of 10,000 iterations on page A.
    /// Returns the final state and the instructions the interpreter ran itself.
    fn backoff_run(wait: u32) -> (CpuState, u64) {
        let page_b = CODE + 0x1000;
        let a_code = asm(64, |a| {
            let mut w = a.create_label();
            let mut q = a.create_label();
            let mut data = a.create_label();
            a.mov(ecx, 20).unwrap();
            a.set_label(&mut w).unwrap();
            a.mov(byte_ptr(data), cl).unwrap();
            a.dec(ecx).unwrap();
            a.jnz(w).unwrap();
            a.mov(ebx, page_b as u32).unwrap();
            a.call(rbx).unwrap();
            a.mov(ecx, 10_000).unwrap();
            a.set_label(&mut q).unwrap();
            a.add(eax, ecx).unwrap();
            a.dec(ecx).unwrap();
            a.jnz(q).unwrap();
            a.hlt().unwrap();
            a.set_label(&mut data).unwrap();
            a.db(&[0]).unwrap();
        });
        let b_code = iced_x86::code_asm::CodeAssembler::new(64)
            .and_then(|mut a| {
                let mut l = a.create_label();
                a.mov(ecx, wait)?;
                a.set_label(&mut l)?;
                a.add(edx, ecx)?;
                a.dec(ecx)?;
                a.jnz(l)?;
                a.ret()?;
                a.assemble(page_b)
            })
            .unwrap();
        let mut bus = TestBus::default();
        let mut st = cpu_in(TestMode::Long64, &mut bus);
        bus.ram[CODE as usize..CODE as usize + a_code.len()].copy_from_slice(&a_code);
        bus.ram[page_b as usize..page_b as usize + b_code.len()].copy_from_slice(&b_code);
        let mut it = Interpreter::new();
        it.set_backend(Box::new(Counting(Rc::new(Cell::new(0)))), 1000);
        assert_eq!(it.run(&mut st, &mut bus, u64::MAX), Exit::Halted);
        (st, it.interpreted_insns)
    }

    #[test]
    fn the_smc_back_off_of_a_page_ends_when_it_stays_quiet() {
        let sum = (1..=10_000u32).sum::<u32>();
        // Page A's loop runs 10,000 times: translated at its 1,000th entry once the page has been
        // quiet for SMC_QUIET instructions (the wait), not at its 64,000th (never here).
        let (st, interpreted) = backoff_run((SMC_QUIET / 3) as u32 + 1000);
        assert_eq!(st.gpr[0] as u32, sum);
        assert!(
            interpreted < 15_000,
            "{interpreted} instructions interpreted: the back-off outlived the quiet"
        );
        // Right after the rewrites the back-off holds: the loop stays interpreted all 10,000 times.
        let (st, interpreted) = backoff_run(1000);
        assert_eq!(st.gpr[0] as u32, sum);
        assert!(interpreted > 30_000, "{interpreted} instructions interpreted: the back-off did not hold");
    }
}
