//! The JIT as the machine installs it: translations made on a compile thread, found in the
//! persistent cache, and evicted when the code arena is full.
//!
//! The interpreter asks for a translation once a block is hot ([`BlockBackend::compile`]) and keeps
//! what it gets for as long as the block lives. What it gets here is a `Slot`, a handle
//! whose state the backend changes under it: pending (the compile thread has the block), ready
//! (machine code placed), evicted (the arena was flushed) or declined. A handle that is not ready
//! runs the block through `cpu::interp::run_insns`, which is what the interpreter's own loop would
//! do with it (the interpreter runs a compiled block only where that loop would run the block
//! whole); a ready one runs the code, which is exact. So when a translation arrives changes only the
//! host's speed, never the guest: no retired count, state or interrupt point depends on it.
//!
//! Finished jobs are collected whenever a pending handle runs (no generated code is on the stack
//! then, so placing code, and evicting all of it, is safe).

use crate::cache::{self, Cache};
use crate::worker::{CompileDelay, Done, Heat, Job, Submit, Worker};
use crate::{Jit, JitBlock};
use cpu::exec::Insn;
use cpu::interp::RunEnd;
use cpu::mem::Ctx;
use cpu::{BlockBackend, CompiledBlock};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::{Rc, Weak};

/// How the JIT backend works.
#[derive(Clone, Debug)]
pub struct Options {
    /// Compile on a second thread (otherwise on the interpreter's, as it asks).
    pub background: bool,
    /// Test knob: random delays before each background compilation.
    pub delay: Option<CompileDelay>,
    /// The persistent translation cache's directory (`--jit-cache DIR`); `None`: a cache of this
    /// run's translations in memory only (code decoded again after an invalidation finds its
    /// translation there).
    pub cache: Option<PathBuf>,
    /// Bound on the executable memory holding translations; when a new one does not fit, all are
    /// evicted.
    pub code_limit: usize,
    /// Entries after which an evicted block is translated again (the interpreter's threshold).
    pub threshold: u32,
    /// Jobs the compile thread's queue holds at most; a request beyond it is deferred (the block
    /// stays interpreted and asks again after another `threshold` entries).
    pub queue: usize,
    /// Entries (rounded up to a power of two) after which a block below the threshold is *warm*:
    /// with a persistent cache (`cache`), compiled when the compile thread has nothing else to do
    /// and saved, so that the next run places it from its second entry (and this one at its next
    /// power-of-two entry) (0: off; `FERRITE_JIT_WARM` overrides it; docs/PERF.md has the
    /// measurement).
    pub warm: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            background: true,
            delay: None,
            cache: None,
            code_limit: crate::arena::MAX_MAPPED,
            threshold: 1000,
            queue: crate::worker::QUEUE,
            warm: WARM,
        }
    }
}

/// Entries after which a block is warm, by default (`Options::warm`).
pub const WARM: u32 = 128;

/// Warm blocks queued for the compile thread's idle time at most over a run.
const MAX_WARM: u64 = 1 << 15;

/// What the backend has done (statistics, and what tests check).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Blocks the interpreter asked to translate ([`BlockBackend::compile`] calls): where the
    /// translations come from and when they arrive varies, this does not.
    pub requested: u64,
    /// Blocks compiled by the compile thread.
    pub compiled_background: u64,
    /// Blocks compiled on the interpreter's thread (no compile thread, or its queue was full).
    pub compiled_foreground: u64,
    /// Translations placed from the cache (the persistent one, or this run's in memory; no
    /// Cranelift), at the threshold or earlier.
    pub cache_hits: u64,
    /// Of those, found at a block's early lookup (`cpu::interp::LOOKUP_AT`, or a warm block's
    /// later one, `BlockBackend::warm`), before its threshold.
    pub early_hits: u64,
    /// Warm blocks (`Options::warm`) given to the compile thread for its idle time.
    pub warm_queued: u64,
    /// Regions compiled (on either thread).
    pub regions_compiled: u64,
    /// Regions placed from saved code (the persistent cache's, or this run's), not compiled.
    pub regions_saved: u64,
    /// Requests the compile thread's full queue turned away: the block stays interpreted and asks
    /// again after another threshold's worth of entries (never compiled on the interpreter's thread,
    /// which would stall the guest).
    pub deferred: u64,
    /// Translations appended to the persistent cache.
    pub cache_stored: u64,
    /// Cache entries or files ignored as corrupt, truncated or stale.
    pub cache_rejected: u64,
    /// Times every translation was evicted because the code arena was full.
    pub evictions: u64,
    /// Runs of a block whose translation was pending or evicted (interpreted meanwhile).
    pub interpreted_runs: u64,
    /// Guest instructions in the blocks compiled (both threads).
    pub translated_insns: u64,
    /// Thread CPU time spent in Cranelift (both threads), nanoseconds.
    pub compile_ns: u64,
    /// Most bytes of executable memory mapped at once.
    pub peak_mapped: u64,
}

/// Reaches a [`Backend`] after it was handed to the interpreter (tests, benchmarks).
pub struct Handle(Rc<RefCell<Core>>);

impl Handle {
    /// The counters now.
    pub fn counters(&self) -> Counters {
        self.0.borrow().counters()
    }

    /// Waits until the compile thread has finished every job given so far and places the results.
    pub fn finish_pending(&self) {
        self.0.borrow_mut().finish_pending();
    }
}

enum State {
    /// On the compile thread; its heat is raised at each interpreted run (the queue's order).
    Pending(Heat),
    /// Placed in the arena.
    Ready(JitBlock),
    /// Evicted; the block has been entered `hits` times since.
    Evicted(u32),
    /// Cranelift declined, or the arena has no room even when empty.
    Declined,
}

/// The interpreter's handle on one block's translation, shared with the backend (which holds it
/// weakly): the interpreter's block owns it as an `Rc<dyn CompiledBlock>`, so that its state is one
/// hop from the block (see the module documentation).
struct Slot {
    state: RefCell<State>,
    core: Rc<RefCell<Core>>,
    /// This handle, for the backend's weak references (a request made from `run`).
    me: Weak<Slot>,
}

impl Slot {
    fn new(core: &Rc<RefCell<Core>>) -> Rc<Slot> {
        Rc::new_cyclic(|me| Slot { state: RefCell::new(State::Declined), core: core.clone(), me: me.clone() })
    }
}

/// A pending job: whose it is (no one's for a warm block's) and what its translation is keyed by.
struct Pending {
    slot: Weak<Slot>,
    key: Option<Vec<u8>>,
    len: usize,
    first_ip: u64,
}

struct Core {
    jit: Jit,
    worker: Option<Worker>,
    pending: HashMap<u64, Pending>,
    /// Regions on the compile thread, by job id: their heads' region state and the regions' keys
    /// (`cache::region_key`).
    regions: HashMap<u64, (crate::region::Head, Vec<u8>)>,
    /// Warm blocks waiting for the compile thread's idle time, by the hash of their key: the job.
    warm: HashMap<u64, u64>,
    /// Entries after which a block is warm (0: off).
    warm_at: u32,
    next_id: u64,
    /// Every handle's slot, for eviction (dead ones pruned as it grows).
    live: Vec<Weak<Slot>>,
    prune_at: usize,
    cache: Option<Cache>,
    /// Blocks that met a full queue, by cache key (persistent cache only, at most
    /// [`MAX_DEFERRED`]): compiled and saved at the end of the run if they never were meanwhile, so
    /// that a second run finds every block the first one asked for, however late the compile
    /// thread was.
    deferred: HashMap<Vec<u8>, Vec<Insn>>,
    counters: Counters,
    threshold: u32,
}

/// Deferred blocks remembered for the end of the run at most (a few hundred in a Linux boot).
const MAX_DEFERRED: usize = 4096;

/// The JIT backend of the `jit` engine (see the module documentation).
pub struct Backend {
    core: Rc<RefCell<Core>>,
}

impl Backend {
    /// A backend for this host; fails when Cranelift does not support it, the compile thread cannot
    /// start, or the cache directory cannot be used.
    pub fn new(opts: Options) -> Result<Backend, String> {
        let mut jit = Jit::new()?;
        jit.arena.set_limit(opts.code_limit);
        let mut cache = match &opts.cache {
            Some(dir) => Some(Cache::open(dir, &jit.codegen_id())?),
            None => Some(Cache::memory()),
        };
        // Saved regions go to the regions' table, where heads find them (`region.rs`).
        if let Some(c) = &mut cache {
            let bad = c.regions().filter(|(k, code)| !jit.regions.remember(k, code)).count();
            if bad > 0 {
                c.rejected += 1;
                eprintln!(
                    "ferrite: jit-cache: {}: {bad} region entries of no region's shape ignored",
                    c.path().display()
                );
            }
        }
        let warm_at =
            std::env::var("FERRITE_JIT_WARM").ok().and_then(|v| v.parse().ok()).unwrap_or(opts.warm);
        let worker = if opts.background { Some(Worker::spawn(opts.delay, opts.queue)?) } else { None };
        // Regions that become hot are queued for this backend (`Core::poll_regions`).
        jit.regions.queue.set(true);
        let counters = Counters::default();
        Ok(Backend {
            core: Rc::new(RefCell::new(Core {
                jit,
                worker,
                pending: HashMap::new(),
                regions: HashMap::new(),
                warm: HashMap::new(),
                warm_at,
                next_id: 0,
                live: Vec::new(),
                prune_at: 1024,
                cache,
                deferred: HashMap::new(),
                counters,
                threshold: opts.threshold.max(1),
            })),
        })
    }

    /// What the backend has done so far.
    pub fn counters(&self) -> Counters {
        self.core.borrow().counters()
    }

    /// Sets how many times a cycle of linked blocks must come back to its first block before it
    /// is compiled as one region (0: never; see `jit::Jit::set_region_threshold`).
    pub fn set_region_threshold(&self, cycles: u32) {
        self.core.borrow_mut().jit.set_region_threshold(cycles);
    }

    /// A handle on the backend that stays usable after it has been handed to the interpreter.
    pub fn handle(&self) -> Handle {
        Handle(self.core.clone())
    }
}

impl Core {
    fn counters(&self) -> Counters {
        let mut c = self.counters;
        if let Some(cache) = &self.cache {
            c.cache_stored = cache.stored;
            c.cache_rejected = cache.rejected;
        }
        let r = self.jit.regions.stats.get();
        c.regions_saved = r.saved;
        c.regions_compiled = r.regions - r.saved;
        c
    }

    /// Waits for every job given to the compile thread and places the results.
    fn finish_pending(&mut self) {
        self.submit_regions();
        while !self.pending.is_empty() || !self.regions.is_empty() {
            let Some(done) = self.worker.as_ref().and_then(|w| w.wait_done()) else { break };
            self.finish_job(done);
        }
    }

    /// Gets a translation for `insns` into `slot`: from the cache, queued for the compile thread,
    /// or compiled here.
    fn request(&mut self, slot: &Rc<Slot>, insns: &[Insn]) {
        let key = self.cache.as_ref().map(|_| cache::key(insns));
        if let (Some(c), Some(k)) = (&self.cache, &key)
            && let Some(code) = c.lookup(k)
        {
            let code = code.to_vec();
            self.counters.cache_hits += 1;
            self.place(slot, &code, insns.len(), insns[0].next_rip);
            return;
        }
        // A warm block still waiting for the compile thread's idle time: its job (the same key,
        // compared whole: the map is by hash) becomes an ordinary one, this block's.
        if let (Some(w), Some(k)) = (&self.worker, &key)
            && let Some(&id) = self.warm.get(&cache::hash64(0, k))
            && let Some(p) = self.pending.get_mut(&id)
            && p.key.as_deref() == Some(&k[..])
        {
            let heat = Heat::default();
            if w.promote(id, heat.clone()) {
                p.slot = Rc::downgrade(slot);
                *slot.state.borrow_mut() = State::Pending(heat);
                return;
            }
        }
        if let Some(w) = &self.worker {
            let id = self.next_id;
            let heat = Heat::default();
            match w.submit(Job { id, insns: insns.to_vec(), members: Vec::new() }, Some(heat.clone())) {
                Ok(()) => {
                    self.next_id += 1;
                    let p = Pending {
                        slot: Rc::downgrade(slot),
                        key,
                        len: insns.len(),
                        first_ip: insns[0].next_rip,
                    };
                    self.pending.insert(id, p);
                    *slot.state.borrow_mut() = State::Pending(heat);
                    return;
                }
                // A full queue: the compile thread is behind; the block asks again later (as an
                // evicted one does) rather than stalling the guest with Cranelift here.
                Err(Submit::Full) => {
                    self.counters.deferred += 1;
                    if let Some(k) = key
                        && self.cache.as_ref().is_some_and(Cache::persistent)
                        && self.deferred.len() < MAX_DEFERRED
                    {
                        self.deferred.entry(k).or_insert_with(|| insns.to_vec());
                    }
                    *slot.state.borrow_mut() = State::Evicted(0);
                    return;
                }
                // An ended thread leaves the block to be compiled here.
                Err(Submit::Ended) => {}
            }
        }
        let before = self.jit.stats();
        let t0 = crate::worker::thread_cpu_ns();
        let code = self.jit.code_bytes(insns);
        self.counters.compile_ns += crate::worker::thread_cpu_ns().saturating_sub(t0);
        self.counters.compiled_foreground += 1;
        let after = self.jit.stats();
        self.counters.translated_insns += (after.inlined + after.called) - (before.inlined + before.called);
        match code {
            Some(code) => {
                self.place(slot, &code, insns.len(), insns[0].next_rip);
                if let (Some(c), Some(k)) = (&mut self.cache, key) {
                    c.store(k, code);
                }
            }
            None => {
                self.jit.stats.declined += 1;
                *slot.state.borrow_mut() = State::Declined;
            }
        }
    }

    /// Gives a warm block to the compile thread for its idle time (at most [`MAX_WARM`] in a run,
    /// once each); its translation goes to the cache.
    fn queue_warm(&mut self, key: Vec<u8>, insns: &[Insn]) {
        let h = cache::hash64(0, &key);
        if self.counters.warm_queued >= MAX_WARM || self.warm.contains_key(&h) {
            return;
        }
        let Some(w) = &self.worker else { return };
        let id = self.next_id;
        match w.submit_idle(Job { id, insns: insns.to_vec(), members: Vec::new() }) {
            Ok(()) => {
                self.next_id += 1;
                let p = Pending {
                    slot: Weak::new(),
                    key: Some(key),
                    len: insns.len(),
                    first_ip: insns[0].next_rip,
                };
                self.pending.insert(id, p);
                self.warm.insert(h, id);
                self.counters.warm_queued += 1;
            }
            // The compile thread is far behind: with a persistent cache the block is compiled at
            // the run's end, as a deferred one is.
            Err(Submit::Full)
                if self.cache.as_ref().is_some_and(Cache::persistent)
                    && self.deferred.len() < MAX_DEFERRED =>
            {
                self.deferred.entry(key).or_insert_with(|| insns.to_vec());
            }
            Err(_) => {}
        }
    }

    /// Places `code` and makes `slot` ready, evicting every translation when the arena is full.
    fn place(&mut self, slot: &Rc<Slot>, code: &[u8], len: usize, first_ip: u64) {
        let block = match self.jit.install(code, len, first_ip) {
            Some(b) => Some(b),
            None => {
                self.evict_all();
                self.jit.install(code, len, first_ip)
            }
        };
        let state = match block {
            Some(b) => State::Ready(b),
            None => {
                self.jit.stats.declined += 1;
                State::Declined
            }
        };
        *slot.state.borrow_mut() = state;
        self.counters.peak_mapped = self.counters.peak_mapped.max(self.jit.arena.mapped() as u64);
        if self.live.len() >= self.prune_at {
            self.live.retain(|w| w.strong_count() > 0);
            self.prune_at = (self.live.len() * 2).max(1024);
        }
        self.live.push(Rc::downgrade(slot));
    }

    /// Drops every placed translation, so that the arena unmaps its chunks. Only called where no
    /// generated code runs (from `request`, `poll` and `finish_job`, outside any block's code).
    fn evict_all(&mut self) {
        self.counters.evictions += 1;
        // Links into the dropped code must never be followed again.
        BlockBackend::unlink_all(&mut self.jit);
        for w in self.live.drain(..) {
            if let Some(s) = w.upgrade()
                && let Ok(mut st) = s.state.try_borrow_mut()
                && matches!(*st, State::Ready(_))
            {
                *st = State::Evicted(0);
            }
        }
    }

    /// Places what the compile thread has finished.
    /// Sends the regions that became hot to the compile thread (the main thread compiles them when
    /// the queue is full) and places those compiled.
    fn poll_regions(&mut self) {
        self.submit_regions();
        self.poll();
    }

    /// Sends the regions that became hot to the compile thread (compiling one here when the queue
    /// is full).
    fn submit_regions(&mut self) {
        for (head, insns, members) in crate::region::take_requests(&self.jit.regions) {
            let id = self.next_id;
            // The region's key: its members' block keys.
            let mut keys = Vec::with_capacity(members.len());
            let mut at = 0;
            for &n in &members {
                keys.push(cache::key(&insns[at..(at + n).min(insns.len())]));
                at += n;
            }
            let key = cache::region_key(&keys);
            // Regions are few (tens per boot): one that meets a full queue is compiled here
            // rather than lost, so the queue keeps a copy of the job's instructions.
            let job = Job { id, insns, members };
            if let Some(w) = &self.worker
                && w.submit(Job { id, insns: job.insns.clone(), members: job.members.clone() }, None).is_ok()
            {
                self.next_id += 1;
                self.regions.insert(id, (head, key));
                continue;
            }
            let t0 = crate::worker::thread_cpu_ns();
            let code = self.jit.region_bytes(&job.insns, &job.members);
            let ns = crate::worker::thread_cpu_ns().saturating_sub(t0);
            self.counters.compile_ns += ns;
            self.save_region(key, code.as_deref());
            if crate::region::place(&self.jit.regions, &head, code, ns) {
                BlockBackend::unlink_all(&mut self.jit);
            }
        }
    }

    /// Keeps a compiled region's code for heads decoded again and for the next run.
    fn save_region(&mut self, key: Vec<u8>, code: Option<&[u8]>) {
        let Some(code) = code else { return };
        if self.jit.regions.remember(&key, code)
            && let Some(c) = &mut self.cache
        {
            c.store_kind(cache::Kind::Region, key, code.to_vec());
        }
    }

    fn poll(&mut self) {
        while let Some(done) = self.worker.as_ref().and_then(|w| w.try_done()) {
            self.finish_job(done);
        }
    }

    fn finish_job(&mut self, done: Done) {
        if let Some((head, key)) = self.regions.remove(&done.id) {
            // A region (`region.rs`): placed into its head's translation if that is still alive.
            self.counters.compile_ns += done.ns;
            self.save_region(key, done.code.as_deref());
            if crate::region::place(&self.jit.regions, &head, done.code, done.ns) {
                // Links into the head must be remade to reach its region.
                BlockBackend::unlink_all(&mut self.jit);
            }
            return;
        }
        self.counters.compiled_background += 1;
        self.counters.compile_ns += done.ns;
        self.counters.translated_insns += done.inlined + done.called;
        self.jit.stats.inlined += done.inlined;
        self.jit.stats.called += done.called;
        self.jit.stats.compile_ns += done.ns;
        let Some(p) = self.pending.remove(&done.id) else { return };
        if let Some(k) = &p.key {
            self.warm.remove(&cache::hash64(0, k));
        }
        // A block invalidated meanwhile (its handle dropped) needs no code, but the cache may.
        let slot = p.slot.upgrade();
        match done.code {
            Some(code) => {
                if let Some(slot) = &slot {
                    self.place(slot, &code, p.len, p.first_ip);
                }
                if let (Some(c), Some(k)) = (&mut self.cache, p.key) {
                    c.store(k, code);
                }
            }
            None => {
                self.jit.stats.declined += 1;
                if let Some(slot) = slot {
                    *slot.state.borrow_mut() = State::Declined;
                }
            }
        }
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // Translations still being compiled are worth keeping for the next run: wait for them (at
        // most a queue's worth) and save them. Without a cache, dropping the worker abandons them.
        if self.cache.as_ref().is_some_and(Cache::persistent) {
            self.finish_pending();
            self.save_deferred();
        }
    }
}

impl Core {
    /// Compiles and saves the deferred blocks that were never compiled later in the run (here, on
    /// the main thread: the run is over).
    fn save_deferred(&mut self) {
        for (key, insns) in std::mem::take(&mut self.deferred) {
            if self.cache.as_ref().is_none_or(|c| c.lookup(&key).is_some()) {
                continue;
            }
            if let Some(code) = self.jit.code_bytes(&insns)
                && let Some(c) = &mut self.cache
            {
                c.store(key, code);
            }
        }
    }
}

impl BlockBackend for Backend {
    fn compile(&mut self, insns: &[Insn]) -> Option<Rc<dyn CompiledBlock>> {
        if insns.is_empty() {
            return None;
        }
        let slot = Slot::new(&self.core);
        let mut core = self.core.borrow_mut();
        core.counters.requested += 1;
        core.request(&slot, insns);
        drop(core);
        Some(slot)
    }

    /// A warm block (`Options::warm`): placed when its translation is in the cache by now (a warm
    /// job finished, or another block with the same code was translated); else, at its first
    /// warm entry, given to the compile thread for its idle time.
    fn warm(&mut self, insns: &[Insn], hits: u32) -> Option<Rc<dyn CompiledBlock>> {
        let mut core = self.core.borrow_mut();
        let at = core.warm_at;
        // Only a persistent cache makes them worth compiling: within one run, a warm block placed
        // at its 256th entry saves less than its compilation costs (docs/PERF.md).
        if at == 0 || hits < at || insns.is_empty() || !core.cache.as_ref().is_some_and(Cache::persistent) {
            return None;
        }
        let key = cache::key(insns);
        if let Some(code) = core.cache.as_ref().and_then(|c| c.lookup(&key)) {
            let code = code.to_vec();
            core.counters.cache_hits += 1;
            core.counters.early_hits += 1;
            let slot = Slot::new(&self.core);
            core.place(&slot, &code, insns.len(), insns[0].next_rip);
            return Some(slot);
        }
        // `hits` is a power of two: the first at or above `at`.
        if hits / 2 < at {
            core.queue_warm(key, insns);
        }
        None
    }

    fn lookup(&mut self, insns: &[Insn]) -> Option<Rc<dyn CompiledBlock>> {
        let mut core = self.core.borrow_mut();
        let cache = core.cache.as_ref()?;
        let code = cache.lookup(&cache::key(insns))?.to_vec();
        core.counters.cache_hits += 1;
        core.counters.early_hits += 1;
        let slot = Slot::new(&self.core);
        core.place(&slot, &code, insns.len(), insns[0].next_rip);
        Some(slot)
    }

    /// The blocks handed over for translation (placed, pending or declined) and those given a
    /// translation from the cache at their early lookup: without a cache, the interpreter's
    /// deterministic decision, unlike how many are placed at a given moment (`describe` says that).
    fn compiled_blocks(&self) -> u64 {
        let c = self.core.borrow().counters;
        c.requested + c.early_hits
    }

    fn inline_retired(&self) -> u64 {
        self.core.borrow().jit.inline_retired.get()
    }

    fn unlink_all(&mut self) {
        BlockBackend::unlink_all(&mut self.core.borrow_mut().jit);
    }

    fn describe(&self) -> String {
        let core = self.core.borrow();
        let (c, s) = (&core.counters, core.jit.stats);
        let per_insn = c.compile_ns as f64 / c.translated_insns.max(1) as f64;
        let mut line = format!(
            "jit: {} blocks to translate, {} placed ({} compiled on the compile thread, {} on the main thread, {} from the cache, {} of them early; {} declined; {} deferred by a full queue); Cranelift {:.2} s of CPU, {:.0} ns per guest instruction; {} KiB of code ({} KiB mapped now, {} evictions); {} instructions inlined, {} calls; {} links made, {} links followed ({} by tail call), {} entries from the interpreter, {} slow-path resumes, {} unlink epochs; {} block runs interpreted while pending; {} warm blocks queued; {}; {} regions compiled, {} from saved code",
            c.requested,
            s.compiled,
            c.compiled_background,
            c.compiled_foreground,
            c.cache_hits,
            c.early_hits,
            s.declined,
            c.deferred,
            c.compile_ns as f64 / 1e9,
            per_insn,
            s.code_bytes / 1024,
            core.jit.arena.mapped() / 1024,
            c.evictions,
            s.inlined,
            s.called,
            core.jit.links_made.get(),
            core.jit.ibtc.followed.get(),
            core.jit.ibtc.tail.get(),
            core.jit.ibtc.entries.get(),
            core.jit.ibtc.resumes.get(),
            core.jit.epoch.get(),
            c.interpreted_runs,
            c.warm_queued,
            core.jit.region_summary(),
            core.counters().regions_compiled,
            core.counters().regions_saved,
        );
        if let Some(cache) = core.cache.as_ref().filter(|c| !c.persistent()) {
            line += &format!("; cache in memory: {} entries", cache.entry_count());
        } else if let Some(cache) = &core.cache {
            line += &format!(
                "; cache {}: {} entries loaded, {} stored, {} rejected",
                cache.path().display(),
                cache.loaded,
                cache.stored,
                cache.rejected
            );
        }
        line
    }
}

impl CompiledBlock for Slot {
    fn run(&self, ctx: &mut Ctx<'_>, insns: &[Insn], loop_limit: u64, link_from: usize) -> RunEnd {
        for attempt in 0..2 {
            {
                let st = self.state.borrow();
                if attempt == 0 && matches!(&*st, State::Ready(code) if code.region_work()) {
                    // Regions to send to the compile thread or to place (no generated code is on
                    // the stack): placing may evict everything, this block included.
                    drop(st);
                    self.core.borrow_mut().poll_regions();
                    continue;
                }
                if let State::Ready(code) = &*st {
                    // A second attempt follows a poll or a request, which may have evicted every
                    // translation, the one `link_from` names included: link nothing then.
                    let link_from = if attempt == 0 { link_from } else { 0 };
                    return code.run(ctx, insns, loop_limit, link_from);
                }
            }
            if attempt == 1 {
                break;
            }
            let mut core = self.core.borrow_mut();
            let state = std::mem::replace(&mut *self.state.borrow_mut(), State::Declined);
            match state {
                State::Pending(heat) => {
                    heat.bump();
                    *self.state.borrow_mut() = State::Pending(heat);
                    core.poll();
                }
                State::Evicted(hits) => {
                    let hits = hits + 1;
                    if hits >= core.threshold {
                        // `me` is alive: the interpreter's block holds this handle while it runs.
                        if let Some(me) = self.me.upgrade() {
                            core.request(&me, insns);
                        }
                    } else {
                        *self.state.borrow_mut() = State::Evicted(hits);
                    }
                }
                other => {
                    *self.state.borrow_mut() = other;
                    break;
                }
            }
        }
        self.core.borrow_mut().counters.interpreted_runs += 1;
        RunEnd { fault: cpu::interp::run_insns(ctx, insns), ..RunEnd::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_code_holds_no_host_address() {
        // A block with a handler call, flags computed in IR (ROL) and a flag helper (IMUL).
        let code = cpu::testutil::asm(64, |a| {
            use iced_x86::code_asm::*;
            a.rol(rax, 3).unwrap();
            a.pushfq().unwrap();
            a.imul_3(rbx, rcx, 7).unwrap();
            a.pushfq().unwrap();
            a.cpuid().unwrap();
            a.ret().unwrap();
        });
        let mut dec = iced_x86::Decoder::with_ip(64, &code, 0x1000, iced_x86::DecoderOptions::NONE);
        let insns: Vec<Insn> =
            dec.iter().map(|i| Insn::new(i, cpu::exec::handler_for(i.code()), 8, i.next_ip())).collect();
        let mut jit = Jit::new().unwrap();
        let bytes = jit.code_bytes(&insns).expect("compiled");
        for addr in crate::helper_table() {
            let needle = (addr as u64).to_le_bytes();
            assert!(
                !bytes.windows(8).any(|w| w == needle),
                "the code holds the host address {addr:#x}: it would not run in another process"
            );
        }
    }
}
