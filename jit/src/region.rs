//! Regions: a hot loop of several translated blocks compiled as one Cranelift function.
//!
//! Selection. A translated block (the *head*) counts, in `JitBlock::run`'s link loop, the times the
//! chain of linked translations it started comes back to it (a cycle of direct links: a loop whose
//! body is several blocks). While it counts, it records the blocks of up to [`RECORDS`] such cycles
//! per run as *members* (copies of their instructions), keeping only blocks that lie wholly in the
//! head's linear page (and so, through the fetch TLB, in its physical page). Once the cycles reach
//! the threshold ([`DEFAULT_THRESHOLD`], `FERRITE_JIT_REGION_THRESHOLD`, 0 for none), the members
//! are compiled into one function, which the head's translation owns and runs instead of its own
//! code from then on (direct links into the head go to it as well).
//!
//! The function. Each member is a Cranelift block; guest registers, RFLAGS and the retired count
//! are variables across all of them, so a loop's back edge and its internal edges keep them in SSA.
//! At a member's end, a successor that is a member is entered directly when it fits in the budget
//! (`icount + len <= loop_limit`, the interpreter's one check between chained blocks); a static
//! successor (Jcc/JMP rel inline) without storing anything, a dynamic one (RET, indirect jumps, a
//! block ended by a handler) by comparing the RIP in `CpuState` with the members' starts. Pending
//! flags are dropped at an edge when the member entered writes them all before reading one; else
//! the operation a member's incoming edges leave pending (found by a first build of the function,
//! as for self-loops) is carried into it uncomputed, its operands in the member's variables
//! (`lower::Carry`; an edge that has another operation pending computes it and says so in `on`),
//! and a member that writes no flags hands the operation carried into it on. Any other end is a
//! side exit: everything is stored exactly as a single block's exit does, and the region's own
//! [`Link`] slots are followed as a block's are. Handler calls, faults and `break_block` leave
//! exactly as in a block. Where the region may leave (side exits, handler calls), generated code
//! records the member it leaves from in `Outcome` (`last_*`), so `RunEnd::last` names the block
//! that ran last; a loop inside the region stores nothing of the kind.
//!
//! Exactness. Members are copies of blocks the interpreter had decoded at the head's page while the
//! head was alive; the region lives as long as the head's translation, which the interpreter drops
//! with the head when its page is invalidated (self-modifying code, DMA), on a flush and at the
//! cache bound, so a region never runs code its page no longer holds. Transitions between members
//! need no fetch-TLB check: every member ends in a chaining instruction (the link loop only
//! follows those), so nothing in it can change paging, the mode or the privilege (what ends a block
//! and sets `Ctx::break_block` does), exactly the argument that lets a block loop on itself. A
//! region stops at member boundaries where the interpreter's chaining loop might go on; it never
//! runs past the budget, and stopping early is what the interpreter itself does when a block does
//! not fit (no event can be due between chained blocks).
//!
//! Under `Backend`, a hot region is queued (`State::Pending`) and compiled on the compile thread
//! (`Jit::region_bytes`); the backend places the code when it arrives (`place`). A bare `Jit`
//! compiles it at once.
//!
//! Saved regions. Under `Backend`, a compiled region's code is kept by the key of its members (each
//! member's block key, `cache::region_key`): in memory for this run, and in the persistent cache
//! (`--jit-cache`) for the next ones ([`Shared::remember`]). A head's slot then looks its recorded
//! members up at each record that adds one ([`Slot::record`]): once every member of a saved region
//! that has the head among its members has been recorded, with byte-identical keys, that region is
//! placed at once, before any threshold, and without Cranelift. The head need not be the saved
//! region's first member (which block heads a loop's region depends on where chains of
//! translations start, which differs between runs): a region's function enters the member whose
//! start is the RIP, and every member's entry state is the same. It is exact for the same reason
//! a compiled one is: its code is a function of its members' instructions alone (which the keys
//! cover entirely), the members are live blocks the interpreter decoded at the head's page, and
//! the region lives as long as the head's translation. A saved region whose members are not all
//! recorded is never placed; one whose key is malformed is refused when loaded.
//!
//! Not yet: regions spanning two pages.

use crate::arena::{Arena, Code};
use crate::{HELPER_CALL, Held, LINKS, Link, LinkEnv, Outcome, ST_OK, emit_links, helper_offset, lower};
use cpu::exec::Insn;
use cpu::mem::Ctx;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{self, AbiParam, InstBuilder, MemFlagsData, UserFuncName, types};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::mem::offset_of;
use std::rc::{Rc, Weak};

/// Most blocks in a region.
pub(crate) const MAX_MEMBERS: usize = 8;
/// Most instructions in a region.
const MAX_INSNS: usize = 256;
/// Cycles per run of the link loop whose blocks are recorded.
pub(crate) const RECORDS: u32 = 4;
/// Returns of a cycle to its head before the region is compiled (see docs/PERF.md).
pub(crate) const DEFAULT_THRESHOLD: u32 = 2000;
/// Bound on the code memory regions map (their own arena, beside the blocks').
const CODE_LIMIT: usize = 64 << 20;
/// Most saved regions held in memory ([`Shared::remember`]); past it no more are kept.
const MAX_SAVED: usize = 1 << 14;

/// Region statistics.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stats {
    /// Regions compiled and placed.
    pub regions: u64,
    /// Blocks in them.
    pub members: u64,
    /// Regions declined (Cranelift failed, or the arena was full).
    pub declined: u64,
    /// Host time spent compiling them, in nanoseconds.
    pub ns: u64,
    /// Of `regions`, those placed from saved code ([`Shared::remember`]), not compiled.
    pub saved: u64,
}

/// A region's code kept for placing again: its members' block keys, the head's first.
struct Saved {
    members: Vec<Vec<u8>>,
    code: Box<[u8]>,
}

/// What every translation of one `Jit` shares about regions.
pub(crate) struct Shared {
    isa: OwnedTargetIsa,
    /// Cycles before a region is compiled; 0 for no regions.
    pub threshold: Cell<u32>,
    compiler: RefCell<Option<Compiler>>,
    pub stats: Cell<Stats>,
    /// Whether hot regions are queued in `requests` for the backend (which compiles them on its
    /// compile thread) rather than compiled at once.
    pub queue: Cell<bool>,
    requests: RefCell<Vec<Request>>,
    /// Regions queued or being compiled (the backend polls while this is not 0).
    work: Cell<usize>,
    /// Saved regions by the hash of each of their members' block keys ([`Shared::remember`]).
    saved: RefCell<HashMap<u64, Vec<Rc<Saved>>>>,
    /// How many are held.
    saved_count: Cell<usize>,
}

/// A head's region state, as the backend holds it while the region compiles.
pub(crate) type Head = Weak<RefCell<State>>;

/// A region to compile: its head, its members' instructions one after the other, their lengths.
pub(crate) type Request = (Head, Vec<Insn>, Vec<usize>);

/// The regions queued since the last call, as `(head, instructions, member lengths)`.
pub(crate) fn take_requests(shared: &Shared) -> Vec<Request> {
    std::mem::take(&mut *shared.requests.borrow_mut())
}

/// Places a region compiled elsewhere (`code`: `None` when compiling failed) into its head, if
/// the head is still alive and waiting for it; returns whether it was placed.
pub(crate) fn place(shared: &Shared, head: &Head, code: Option<Vec<u8>>, ns: u64) -> bool {
    shared.work.set(shared.work.get().saturating_sub(1));
    let mut s = shared.stats.get();
    s.ns += ns;
    shared.stats.set(s);
    let Some(state) = head.upgrade() else { return false };
    let mut state = state.borrow_mut();
    let State::Pending(insns, n) = &mut *state else { return false };
    let (insns, n) = (std::mem::take(insns), *n);
    let placed = code.and_then(|c| shared.arena_copy(&c)).map(|code| Region {
        code,
        insns: insns.into_boxed_slice(),
        links: Box::default(),
    });
    if let Some(r) = &placed {
        crate::perf_map(&r.code, "region", r.insns.first().map_or(0, |i| i.next_rip), r.insns.len());
    }
    let mut s = shared.stats.get();
    match placed {
        Some(r) => {
            s.regions += 1;
            s.members += n as u64;
            *state = State::Ready(r);
        }
        None => {
            s.declined += 1;
            *state = State::Declined;
        }
    }
    shared.stats.set(s);
    matches!(*state, State::Ready(_))
}

/// Compiles a region's function into position-independent machine code.
fn code_bytes(
    ctx: &mut cranelift_codegen::Context,
    fctx: &mut FunctionBuilderContext,
    isa: &dyn cranelift_codegen::isa::TargetIsa,
    members: &[&[Insn]],
) -> Option<Vec<u8>> {
    // A first build finds, per member, the flag operation its incoming edges leave pending; the
    // second carries it into the member uncomputed (built once when there is none).
    let none = vec![None; members.len()];
    let (mut func, found) = build(fctx, isa, members, &none);
    if found.iter().any(Option::is_some) {
        func = build(fctx, isa, members, &found).0;
    }
    ctx.clear();
    ctx.func = func;
    let dump = std::env::var_os("FERRITE_JIT_REGION_DUMP").filter(|v| !v.is_empty());
    ctx.set_disasm(dump.is_some());
    let mut ctrl = cranelift_codegen::control::ControlPlane::default();
    match ctx.compile(isa, &mut ctrl) {
        Ok(r) if r.buffer.relocs().is_empty() => {
            if let Some(path) = dump {
                dump_region(&path, members, r.code_buffer().len(), r.vcode.as_deref());
            }
            Some(r.code_buffer().to_vec())
        }
        _ => None,
    }
}

/// Appends a compiled region to the file `FERRITE_JIT_REGION_DUMP` names (a debugging aid): its
/// members' guest instructions, its size and Cranelift's machine code listing.
fn dump_region(path: &std::ffi::OsStr, members: &[&[Insn]], size: usize, vcode: Option<&str>) {
    use std::fmt::Write as _;
    let mut text = format!("region: {} members, {size} bytes of code\n", members.len());
    for (j, m) in members.iter().enumerate() {
        let _ = writeln!(text, "member {j}:");
        for insn in m.iter() {
            let _ = writeln!(text, "  {:016x}  {}", insn.i.ip(), insn.i);
        }
    }
    let _ = writeln!(text, "{}", vcode.unwrap_or("(no listing)"));
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
    if let Err(e) = written {
        eprintln!("FERRITE_JIT_REGION_DUMP: {e}");
    }
}

/// `insns` split into members of the given lengths (`None` when they do not add up).
fn split<'a>(insns: &'a [Insn], lens: &[usize]) -> Option<Vec<&'a [Insn]>> {
    let mut out = Vec::with_capacity(lens.len());
    let mut rest = insns;
    for &n in lens {
        if n == 0 || n > rest.len() {
            return None;
        }
        let (m, r) = rest.split_at(n);
        out.push(m);
        rest = r;
    }
    rest.is_empty().then_some(out)
}

impl crate::Jit {
    /// A region's machine code (the compile thread's job): `insns` holds its members, of lengths
    /// `lens`, one after the other.
    pub(crate) fn region_bytes(&mut self, insns: &[Insn], lens: &[usize]) -> Option<Vec<u8>> {
        let members = split(insns, lens)?;
        code_bytes(&mut self.ctx, &mut self.fctx, &*self.isa_loop, &members)
    }
}

/// Cranelift's state for regions, made at the first one.
struct Compiler {
    ctx: cranelift_codegen::Context,
    fctx: FunctionBuilderContext,
    arena: Arena,
}

/// A compiled region.
pub(crate) struct Region {
    pub code: Code,
    /// The members' instructions, one after the other (generated code passes them to handlers).
    pub insns: Box<[Insn]>,
    /// The region's exit slots (side exits follow them as a block's exit does).
    pub links: Box<[Link; LINKS]>,
}

/// Where a translated block is with its region.
pub(crate) enum State {
    /// Counting cycles; the members recorded so far (empty: none yet; else the head first).
    Collecting(Vec<Vec<Insn>>),
    /// Queued for the compile thread: the members' instructions one after the other, and how
    /// many members.
    Pending(Vec<Insn>, usize),
    Ready(Region),
    /// No region for this block (it crosses a page, or compiling failed).
    Declined,
}

/// A translated block's region state (`JitBlock::region`).
pub(crate) struct Slot {
    pub shared: Rc<Shared>,
    pub cycles: Cell<u32>,
    pub state: Rc<RefCell<State>>,
    /// Members recorded when the saved regions were last searched ([`Slot::record`]).
    searched: Cell<usize>,
    /// A saved region was placed by [`Slot::record`]: the next [`Slot::count`] says so.
    placed: Cell<bool>,
}

impl Shared {
    /// Regions compiled for `isa`, with the threshold in `FERRITE_JIT_REGION_THRESHOLD` (default
    /// [`DEFAULT_THRESHOLD`]; 0 turns regions off).
    pub(crate) fn new(isa: OwnedTargetIsa) -> Shared {
        let threshold = std::env::var("FERRITE_JIT_REGION_THRESHOLD")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(DEFAULT_THRESHOLD);
        Shared {
            isa,
            threshold: Cell::new(threshold),
            compiler: RefCell::new(None),
            stats: Cell::default(),
            queue: Cell::new(false),
            requests: RefCell::default(),
            work: Cell::new(0),
            saved: RefCell::default(),
            saved_count: Cell::new(0),
        }
    }

    /// Keeps a region's code (`key`: `cache::region_key` of its members) so that a head whose
    /// recorded members have these keys gets it placed without compiling. Returns `false`, keeping
    /// nothing, when the key is malformed (a damaged cache entry) or the bound is reached.
    pub(crate) fn remember(&self, key: &[u8], code: &[u8]) -> bool {
        let Some(members) = crate::cache::split_region_key(key) else { return false };
        if members.len() > MAX_MEMBERS || code.is_empty() || self.saved_count.get() >= MAX_SAVED {
            return false;
        }
        let mut saved = self.saved.borrow_mut();
        let same = |s: &Rc<Saved>| s.members.iter().map(Vec::as_slice).eq(members.iter().copied());
        if saved.get(&crate::cache::hash64(0, members[0])).is_some_and(|l| l.iter().any(same)) {
            return true;
        }
        // Filed under each member: any of them may head it in another run.
        let region =
            Rc::new(Saved { members: members.iter().map(|m| m.to_vec()).collect(), code: code.into() });
        for m in &members {
            let list = saved.entry(crate::cache::hash64(0, m)).or_default();
            if !list.iter().any(|s| Rc::ptr_eq(s, &region)) {
                list.push(region.clone());
            }
        }
        self.saved_count.set(self.saved_count.get() + 1);
        true
    }

    /// A saved region all of whose members are among `members` (recorded blocks, the head first,
    /// each with the same key), the head among them, placed in the arena with its members in the
    /// saved order.
    fn saved_region(&self, members: &[Vec<Insn>]) -> Option<Region> {
        if self.saved_count.get() == 0 {
            return None;
        }
        let saved = self.saved.borrow();
        let head = crate::cache::key(&members[0]);
        let list = saved.get(&crate::cache::hash64(0, &head))?;
        let keys: Vec<Vec<u8>> =
            std::iter::once(head).chain(members[1..].iter().map(|m| crate::cache::key(m))).collect();
        for s in list {
            // The head is one of its members (the code enters the member at the RIP); every other
            // member must have been recorded with the same key.
            let order: Vec<usize> =
                s.members.iter().map_while(|k| (0..keys.len()).find(|&j| keys[j] == *k)).collect();
            if order.len() != s.members.len() || !order.contains(&0) {
                continue;
            }
            let code = self.arena_copy(&s.code)?;
            let insns: Box<[Insn]> = order.iter().flat_map(|&j| members[j].iter().copied()).collect();
            crate::perf_map(&code, "region", insns.first().map_or(0, |i| i.next_rip), insns.len());
            let mut st = self.stats.get();
            st.regions += 1;
            st.saved += 1;
            st.members += s.members.len() as u64;
            self.stats.set(st);
            return Some(Region { code, insns, links: Box::default() });
        }
        None
    }

    /// Copies a region's code into the regions' arena.
    fn arena_copy(&self, bytes: &[u8]) -> Option<Code> {
        let mut c = self.compiler.borrow_mut();
        self.compiler_in(&mut c).arena.copy_in(bytes)
    }

    /// The regions' own Cranelift state, made at first use.
    fn compiler_in<'a>(&self, c: &'a mut Option<Compiler>) -> &'a mut Compiler {
        c.get_or_insert_with(|| {
            let mut arena = Arena::default();
            arena.set_limit(CODE_LIMIT);
            Compiler { ctx: cranelift_codegen::Context::new(), fctx: FunctionBuilderContext::new(), arena }
        })
    }

    /// Compiles and places a region of `members` (the head first) at once; `None` when Cranelift
    /// fails or the arena is full.
    fn compile(&self, members: &[Vec<Insn>]) -> Option<Region> {
        let t0 = std::time::Instant::now();
        let mut c = self.compiler.borrow_mut();
        let c = self.compiler_in(&mut c);
        let refs: Vec<&[Insn]> = members.iter().map(Vec::as_slice).collect();
        let bytes = code_bytes(&mut c.ctx, &mut c.fctx, &*self.isa, &refs);
        let code = bytes.and_then(|b| c.arena.copy_in(&b));
        let mut s = self.stats.get();
        s.ns += t0.elapsed().as_nanos() as u64;
        let r = code.map(|code| {
            let n = members.iter().map(Vec::len).sum();
            crate::perf_map(&code, "region", members[0].first().map_or(0, |i| i.next_rip), n);
            s.regions += 1;
            s.members += members.len() as u64;
            Region { code, insns: members.iter().flatten().copied().collect(), links: Box::default() }
        });
        if r.is_none() {
            s.declined += 1;
        }
        self.stats.set(s);
        r
    }

    /// Whether regions are queued or compiling (the backend must poll).
    pub(crate) fn busy(&self) -> bool {
        self.work.get() != 0
    }
}

/// The linear page of CS-relative `ip` in the mode `st` runs in.
fn lin_page(st: &cpu::CpuState, ip: u64) -> u64 {
    let lin = if st.code_bits() == 64 {
        ip
    } else {
        st.sreg(cpu::state::Seg::Cs).base.wrapping_add(ip) & 0xffff_ffff
    };
    lin >> 12
}

/// Whether every byte of the block `insns` lies in linear page `page`.
fn on_page(st: &cpu::CpuState, insns: &[Insn], page: u64) -> bool {
    insns.iter().all(|i| {
        let last = i.i.ip().wrapping_add(i.i.len() as u64).wrapping_sub(1);
        lin_page(st, i.i.ip()) == page && lin_page(st, last) == page
    })
}

impl Slot {
    /// A fresh slot (collecting) for a translation made by a `Jit` with `shared`.
    pub(crate) fn new(shared: Rc<Shared>) -> Slot {
        Slot {
            shared,
            cycles: Cell::new(0),
            state: Rc::new(RefCell::new(State::Collecting(Vec::new()))),
            searched: Cell::new(0),
            placed: Cell::new(false),
        }
    }

    /// Whether the link loop should count cycles and record members.
    pub(crate) fn collecting(&self) -> bool {
        self.shared.threshold.get() != 0 && matches!(*self.state.borrow(), State::Collecting(_))
    }

    /// Records a cycle of the link loop that came back to the head: the blocks it ran after the
    /// head, as `(instructions, count)` of blocks in the interpreter's cache (alive: no block has
    /// been dropped since they ran).
    ///
    /// # Safety
    /// Each pair names `count` live instructions.
    pub(crate) unsafe fn record(&self, st: &cpu::CpuState, head: &[Insn], path: &[(usize, usize)]) {
        let mut state = self.state.borrow_mut();
        let State::Collecting(members) = &mut *state else { return };
        if members.is_empty() {
            let page = lin_page(st, head[0].i.ip());
            // A block ending in SYSCALL/SYSRET changes CPL: the region's code holds one access tag.
            if !on_page(st, head, page) || crate::lower::through_end(head).is_some() {
                *state = State::Declined;
                return;
            }
            members.push(head.to_vec());
        }
        let page = lin_page(st, head[0].i.ip());
        for &(p, n) in path {
            // SAFETY: the caller's contract.
            let b = unsafe { std::slice::from_raw_parts(p as *const Insn, n) };
            let total: usize = members.iter().map(Vec::len).sum();
            if b.is_empty()
                || members.len() >= MAX_MEMBERS
                || total + b.len() > MAX_INSNS
                || members.iter().any(|m| m[0].i.ip() == b[0].i.ip())
                || !on_page(st, b, page)
                || crate::lower::through_end(b).is_some()
            {
                continue;
            }
            members.push(b.to_vec());
        }
        // New members: a saved region of them may be placed now (`count` then reports it).
        if members.len() > self.searched.get() && members.len() >= 2 {
            self.searched.set(members.len());
            if let Some(r) = self.shared.saved_region(members) {
                *state = State::Ready(r);
                self.placed.set(true);
            }
        }
    }

    /// Counts `returns` more returns of the link loop to the head, and once they reach the
    /// threshold compiles the region. Returns whether a region was placed (every link must then be
    /// remade, so that links into the head reach the region).
    pub(crate) fn count(&self, returns: u32) -> bool {
        if self.placed.replace(false) {
            return true;
        }
        let c = self.cycles.get().saturating_add(returns);
        self.cycles.set(c);
        if c < self.shared.threshold.get() {
            return false;
        }
        let mut state = self.state.borrow_mut();
        let State::Collecting(members) = &mut *state else { return false };
        if members.len() < 2 {
            // Nothing but the head on its page: give up once the count says the loop is hot.
            if c >= self.shared.threshold.get().saturating_mul(2) {
                *state = State::Declined;
            }
            return false;
        }
        let members = std::mem::take(members);
        if self.shared.queue.get() {
            let lens: Vec<usize> = members.iter().map(Vec::len).collect();
            let insns: Vec<Insn> = members.iter().flatten().copied().collect();
            self.shared.requests.borrow_mut().push((Rc::downgrade(&self.state), insns.clone(), lens));
            self.shared.work.set(self.shared.work.get() + 1);
            *state = State::Pending(insns, members.len());
            return false;
        }
        *state = match self.shared.compile(&members) {
            Some(r) => State::Ready(r),
            None => State::Declined,
        };
        matches!(*state, State::Ready(_))
    }
}

/// A flag operation carried into a member (its kind and the flags it owns), as for self-loops.
type CarrySpec = Option<(lower::CarryKind, u64)>;

/// Builds a region's function: the [`crate::block_sig`] signature, `insns` the members'
/// instructions one after the other. `carries[m]` is the pending flag operation that edges into
/// member `m` hand over uncomputed (`lower::Lower::back_edge`); the second result is, per member,
/// the operation the edges into it left pending first (what a second build can carry).
fn build(
    fctx: &mut FunctionBuilderContext,
    isa: &dyn cranelift_codegen::isa::TargetIsa,
    members: &[&[Insn]],
    carries: &[CarrySpec],
) -> (ir::Function, Vec<CarrySpec>) {
    let ptr = isa.pointer_type();
    let mut sig = ir::Signature::new(isa.default_call_conv());
    sig.params.extend([AbiParam::new(ptr), AbiParam::new(ptr), AbiParam::new(ptr)]);
    sig.returns.push(AbiParam::new(types::I32));
    let mut func = ir::Function::with_name_signature(UserFuncName::default(), crate::block_sig(ptr));
    let mut b = FunctionBuilder::new(&mut func, fctx);
    let callee = b.import_signature(sig);
    let succ_sig = b.import_signature(crate::block_sig(ptr));
    let mf = MemFlagsData::trusted();
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    let exit = b.create_block();
    b.append_block_param(exit, types::I32);
    let link_exit = b.create_block();
    let ret_ok = b.create_block();
    b.switch_to_block(entry);
    let (ctx, base, out, links) = {
        let p = b.block_params(entry);
        (p[0], p[1], p[2], p[3])
    };
    let st = b.ins().load(ptr, mf, ctx, offset_of!(Ctx<'static>, st) as i32);
    let tramp = b.ins().load(ptr, mf, out, helper_offset(HELPER_CALL));
    let icount = b.declare_var(types::I64);
    let ic0 = b.ins().load(types::I64, mf, st, cpu::offsets::ICOUNT as i32);
    b.def_var(icount, ic0);
    let fl = b.declare_var(types::I64);
    let fl0 = b.ins().load(types::I64, mf, st, cpu::offsets::RFLAGS as i32);
    b.def_var(fl, fl0);
    let mut hsig = ir::Signature::new(isa.default_call_conv());
    hsig.params.extend([ptr, types::I64, types::I64, types::I64, types::I32].map(AbiParam::new));
    hsig.returns.push(AbiParam::new(types::I64));
    let helper_sig = b.import_signature(hsig);
    let mmu = b.ins().load(ptr, mf, ctx, offset_of!(Ctx<'static>, mmu) as i32);
    let tlb = b.ins().load(ptr, mf, mmu, offset_of!(cpu::mem::Mmu, tlb) as i32);
    let loop_limit = b.ins().load(types::I64, mf, out, offset_of!(Outcome, loop_limit) as i32);
    let used = members.iter().fold(0u16, |m, x| m | lower::used_gprs(x));
    let mut regs = lower::Regs::new(&mut b);
    regs.load(&mut b, st, used);
    regs.dirty = used;
    let user_tag = lower::Lower { b: &mut b, st, regs: &mut regs, fl, helper_sig, out }.user_tag(mmu);
    regs.sys = Some(lower::SysEnv { count: icount, tlb, user_tag });
    // A predecessor's lazy flag state (`cpu::lazyflags`) is taken over at the region's entry and
    // computed on the way into the member entered (below) unless that member writes every
    // arithmetic flag before anything can read one (its `live_in` is empty: memory forms and
    // handler calls count as reading them all): members are entered with RFLAGS current.
    lower::Lower { b: &mut b, st, regs: &mut regs, fl, helper_sig, out }.take_incoming();
    let incoming = regs.pending;
    regs.pending = lower::PendingSet::default();
    // Each memory form's last TLB hit (linear page, host page), as in a self-loop; 1: none.
    let micro: Vec<Option<(Variable, Variable)>> = members
        .iter()
        .flat_map(|m| m.iter())
        .map(|insn| {
            let mem = lower::inline_op(insn).is_some_and(|f| f.mem != lower::Mem::None);
            mem.then(|| {
                let (t, h) = (b.declare_var(types::I64), b.declare_var(types::I64));
                let none = b.ins().iconst(types::I64, 1);
                b.def_var(t, none);
                b.def_var(h, none);
                (t, h)
            })
        })
        .collect();
    // Each member's carried operation in variables, not carrying one when the region is entered
    // (`on` = 0: RFLAGS is current).
    let carry: Vec<Option<(lower::Carry, u64)>> = carries
        .iter()
        .map(|c| {
            c.map(|(kind, mask)| {
                let v = [(); 4].map(|_| b.declare_var(types::I64));
                let zero = b.ins().iconst(types::I64, 0);
                for x in v {
                    b.def_var(x, zero);
                }
                (lower::Carry { on: v[0], a: v[1], b: v[2], r: v[3], kind }, mask)
            })
        })
        .collect();
    let mblocks: Vec<ir::Block> = members.iter().map(|_| b.create_block()).collect();
    let mut first = Vec::with_capacity(members.len());
    let mut at = 0;
    for m in members {
        first.push(at);
        at += m.len();
    }
    let lives: Vec<Vec<u64>> = members.iter().map(|m| lower::liveness(m)).collect();
    let live_in: Vec<u64> = members.iter().zip(&lives).map(|(m, l)| lower::live_in(m, l)).collect();
    // Entered at the member whose start is the RIP: the head's block, which may be any member of
    // a saved region placed at another head (`Shared::saved_region`). Every member's entry state is
    // the one set up here (registers held, RFLAGS current, nothing carried).
    let enter = |b: &mut FunctionBuilder<'_>, regs: &mut lower::Regs, m: usize| {
        if live_in[m] != 0 {
            regs.pending = incoming;
            lower::Lower { b, st, regs, fl, helper_sig, out }.materialize();
        }
        b.ins().jump(mblocks[m], &[]);
    };
    if members.len() > 1 {
        let rip = b.ins().load(types::I64, mf, st, cpu::offsets::RIP as i32);
        for (m, insns) in members.iter().enumerate().skip(1) {
            let this = b.create_block();
            let other = b.create_block();
            let same = b.ins().icmp_imm_s(IntCC::Equal, rip, insns[0].i.ip() as i64);
            b.ins().brif(same, this, &[], other, &[]);
            b.seal_block(this);
            b.switch_to_block(this);
            enter(&mut b, &mut regs, m);
            b.seal_block(other);
            b.switch_to_block(other);
        }
    }
    enter(&mut b, &mut regs, 0);
    let mut g = Gen {
        b,
        st,
        ctx,
        base,
        out,
        links,
        fl,
        icount,
        lag: 0,
        helper_sig,
        callee,
        tramp,
        exit,
        link_exit,
        ret_ok,
        loop_limit,
        tlb,
        user_tag,
        used,
        micro,
        mblocks,
        starts: members.iter().map(|m| m[0].i.ip()).collect(),
        lens: members.iter().map(|m| m.len()).collect(),
        live_in,
        any_micro: false,
        cur: (0, 0, false),
        carry,
        found: vec![None; members.len()],
    };
    g.any_micro = g.micro.iter().any(Option::is_some);
    for (j, m) in members.iter().enumerate() {
        g.member(&mut regs, j, m, first[j], &lives[j]);
    }
    let Gen { mut b, mblocks, found, .. } = g;
    b.seal_block(link_exit);
    b.switch_to_block(link_exit);
    if members.iter().any(|m| cpu::interp::chains(&m[m.len() - 1])) {
        let held = Some(Held { ctx, st, tlb, user_tag, loop_limit });
        let env = LinkEnv { held, out, links, exit, ret_ok, succ_sig };
        // After the region's two slots, the indirect-branch target cache: a region leaves through
        // every member's exit (a RET's many return sites among them), which two slots cannot hold;
        // without it, 3.7M of a warm Linux boot's 4.3M returns to the interpreter's chaining loop
        // were region exits relinking their slots (docs/PERF.md).
        let ibtc = crate::dispatch::region_end(members).filter(|_| crate::dispatch::enabled_by_env());
        if ibtc.is_some() {
            crate::emit_links_with(&mut b, env, None, ibtc, None);
        } else {
            emit_links(&mut b, env);
        }
    } else {
        b.ins().jump(ret_ok, &[]);
    }
    b.seal_block(ret_ok);
    b.switch_to_block(ret_ok);
    let ok = b.ins().iconst(types::I32, ST_OK as i64);
    b.ins().jump(exit, &[ok.into()]);
    for m in mblocks {
        b.seal_block(m);
    }
    b.seal_block(entry);
    b.seal_block(exit);
    b.switch_to_block(exit);
    let status = b.block_params(exit)[0];
    b.ins().return_(&[status]);
    b.finalize(isa.frontend_config());
    (func, found)
}

/// The region being built.
struct Gen<'f> {
    b: FunctionBuilder<'f>,
    st: ir::Value,
    ctx: ir::Value,
    base: ir::Value,
    out: ir::Value,
    /// The region's own [`Link`] slots.
    links: ir::Value,
    fl: Variable,
    /// The retired count is this variable plus `lag` (see `Jit::build`'s `settle`).
    icount: Variable,
    lag: i64,
    helper_sig: ir::SigRef,
    callee: ir::SigRef,
    tramp: ir::Value,
    exit: ir::Block,
    link_exit: ir::Block,
    ret_ok: ir::Block,
    loop_limit: ir::Value,
    tlb: ir::Value,
    user_tag: ir::Value,
    /// The registers held in variables at every member's entry.
    used: u16,
    micro: Vec<Option<(Variable, Variable)>>,
    any_micro: bool,
    /// The member being emitted: its first instruction's global index, its length, whether it
    /// chains (what `Outcome::last_*` records when the region leaves from it).
    cur: (usize, usize, bool),
    mblocks: Vec<ir::Block>,
    starts: Vec<u64>,
    lens: Vec<usize>,
    /// Flags each member may read before writing them.
    live_in: Vec<u64>,
    /// The flag operation carried into each member (its variables), if any.
    carry: Vec<Option<(lower::Carry, u64)>>,
    /// Per member, the first carriable operation an edge into it left pending (for a second build).
    found: Vec<CarrySpec>,
}

const MF: MemFlagsData = MemFlagsData::trusted();

impl<'f> Gen<'f> {
    /// `lower`'s emitter over this function, for one emission.
    fn lower<'a>(&'a mut self, regs: &'a mut lower::Regs) -> lower::Lower<'a, 'f> {
        lower::Lower {
            b: &mut self.b,
            st: self.st,
            regs,
            fl: self.fl,
            helper_sig: self.helper_sig,
            out: self.out,
        }
    }

    fn bump(&mut self, n: i64) {
        self.lag += n;
    }

    /// The retired count now: the variable plus `lag`.
    fn count(&mut self) -> ir::Value {
        let v = self.b.use_var(self.icount);
        match self.lag {
            0 => v,
            n => self.b.ins().iadd_imm_s(v, n),
        }
    }

    /// Defines the count's variable as the count now (`lag` 0).
    fn settle_count(&mut self) {
        let v = self.count();
        self.b.def_var(self.icount, v);
        self.lag = 0;
    }

    fn sync(&mut self, rip: u64) {
        let r = self.b.ins().iconst(types::I64, rip as i64);
        self.b.ins().store(MF, r, self.st, cpu::offsets::RIP as i32);
        let v = self.count();
        self.b.ins().store(MF, v, self.st, cpu::offsets::ICOUNT as i32);
    }

    fn store_fl(&mut self) {
        let v = self.b.use_var(self.fl);
        self.b.ins().store(MF, v, self.st, cpu::offsets::RFLAGS as i32);
    }

    /// As `settle`, at a side exit: the newest pending flag operation is left lazy
    /// (`lower::Lower::export`) for the linked successor.
    fn settle_exit(&mut self, regs: &mut lower::Regs) {
        self.lower(regs).export();
        self.store_fl();
        regs.flush(&mut self.b, self.st);
    }

    /// Everything but RIP and the count to `CpuState`.
    fn settle(&mut self, regs: &mut lower::Regs) {
        self.lower(regs).materialize();
        self.store_fl();
        regs.flush(&mut self.b, self.st);
    }

    /// Records the member being emitted in `Outcome` (`last_*`, so that `RunEnd::last` names
    /// the block that ran last) where the region may leave, `done` of its instructions retired
    /// (the count at its entry is the count now less `done`). Only the exits store it, not the
    /// member's entry: a loop running inside the region does not.
    fn note_last(&mut self, done: usize) {
        let (k0, len, chain) = self.cur;
        let p = self.b.ins().iadd_imm_s(self.base, (k0 * std::mem::size_of::<Insn>()) as i64);
        self.b.ins().store(MF, p, self.out, offset_of!(Outcome, last_insns) as i32);
        let l = self.b.ins().iconst(types::I64, (len as i64) | (chain as i64) << 32);
        self.b.ins().store(MF, l, self.out, offset_of!(Outcome, last_len_chain) as i32);
        let ic = self.count();
        let start = self.b.ins().iadd_imm_s(ic, -(done as i64));
        self.b.ins().store(MF, start, self.out, offset_of!(Outcome, last_start) as i32);
        // The region's own slots (a link into it no longer writes them: `Outcome::last_links`).
        self.b.ins().store(MF, self.links, self.out, offset_of!(Outcome, last_links) as i32);
    }

    /// The handler call of global instruction `gk` (as `Jit::build`'s `call`).
    fn call(&mut self, regs: &mut lower::Regs, gk: usize, insn: &Insn, dirty: bool) {
        if dirty {
            self.sync(insn.i.ip());
        }
        self.settle(regs);
        regs.forget();
        // A fault or `break_block` leaves from here: the count is the member's start plus the
        // instructions before this one.
        self.note_last(gk - self.cur.0);
        let next = self.b.ins().iconst(types::I64, insn.next_rip as i64);
        self.b.ins().store(MF, next, self.ctx, offset_of!(Ctx<'static>, next_rip) as i32);
        let ip = self.b.ins().iadd_imm_s(self.base, (gk * std::mem::size_of::<Insn>()) as i64);
        let call = self.b.ins().call_indirect(self.callee, self.tramp, &[self.ctx, ip, self.out]);
        let status = self.b.inst_results(call)[0];
        let done = self.b.create_block();
        self.b.ins().brif(status, self.exit, &[status.into()], done, &[]);
        self.b.switch_to_block(done);
        self.b.seal_block(done);
        if self.any_micro {
            let none = self.b.ins().iconst(types::I64, 1);
            for &(t, _) in self.micro.iter().flatten() {
                self.b.def_var(t, none);
            }
        }
        let v = self.b.ins().load(types::I64, MF, self.st, cpu::offsets::RFLAGS as i32);
        self.b.def_var(self.fl, v);
        let rip = self.b.ins().load(types::I64, MF, self.ctx, offset_of!(Ctx<'static>, next_rip) as i32);
        self.b.ins().store(MF, rip, self.st, cpu::offsets::RIP as i32);
        self.bump(1);
        let v = self.count();
        self.b.ins().store(MF, v, self.st, cpu::offsets::ICOUNT as i32);
        let bb = self.b.ins().load(types::I8, MF, self.ctx, offset_of!(Ctx<'static>, break_block) as i32);
        let next_block = self.b.create_block();
        let ok = self.b.ins().iconst(types::I32, ST_OK as i64);
        self.b.ins().brif(bb, self.exit, &[ok.into()], next_block, &[]);
        self.b.switch_to_block(next_block);
        self.b.seal_block(next_block);
    }

    /// Where a side exit goes once everything is stored: the links when the member chains.
    fn leave(&self, chain: bool) -> ir::Block {
        if chain { self.link_exit } else { self.ret_ok }
    }

    /// Enters member `m` (the budget was checked): the canonical state at a member's entry is
    /// every `used` register held (and counted as changed), and no flag pending but the member's
    /// carried operation (in its variables, `on` saying whether this edge handed it over).
    fn enter(&mut self, regs: &mut lower::Regs, m: usize) {
        if self.live_in[m] == 0 {
            // The member writes every flag before reading one: nothing to compute or carry.
            self.lower(regs).drop_pending();
        } else {
            let carry = self.carry[m];
            let found = self.lower(regs).back_edge(carry);
            if self.found[m].is_none() {
                self.found[m] = found;
            }
        }
        let missing = self.used & !regs.in_var;
        regs.load(&mut self.b, self.st, missing);
        regs.dirty &= !self.used;
        regs.flush(&mut self.b, self.st);
        // A member starts with the count in its variable (`lag` 0); the caller's other paths
        // keep theirs.
        let lag = self.lag;
        self.settle_count();
        self.lag = lag;
        self.b.ins().jump(self.mblocks[m], &[]);
    }

    /// Jumps to member `m` when it fits in the budget, else to `no`.
    fn fits(&mut self, m: usize, no: ir::Block) {
        let v = self.count();
        let after = self.b.ins().iadd_imm_s(v, self.lens[m] as i64);
        let fits = self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, after, self.loop_limit);
        let yes = self.b.create_block();
        self.b.ins().brif(fits, yes, &[], no, &[]);
        self.b.seal_block(yes);
        self.b.switch_to_block(yes);
    }

    /// The end of a member at the static RIP `rip`, registers and flags still in variables (not
    /// stored): into the member there when it fits, else a side exit. Leaves `regs` as it found it.
    fn goto_static(&mut self, regs: &mut lower::Regs, rip: u64, chain: bool) {
        let saved = (regs.in_var, regs.dirty, regs.pending);
        if chain && let Some(m) = self.starts.iter().position(|&s| s == rip) {
            let no = self.b.create_block();
            self.fits(m, no);
            self.enter(regs, m);
            (regs.in_var, regs.dirty, regs.pending) = saved;
            self.b.seal_block(no);
            self.b.switch_to_block(no);
        }
        let r = self.b.ins().iconst(types::I64, rip as i64);
        self.b.ins().store(MF, r, self.st, cpu::offsets::RIP as i32);
        let v = self.count();
        self.b.ins().store(MF, v, self.st, cpu::offsets::ICOUNT as i32);
        self.settle_exit(regs);
        self.note_last(self.cur.1);
        let to = self.leave(chain);
        self.b.ins().jump(to, &[]);
        (regs.in_var, regs.dirty, regs.pending) = saved;
    }

    /// The end of a member with everything stored and the new RIP `rip` (a value; `CpuState`
    /// holds it too): into the member starting there when it fits, else a side exit.
    fn goto_dynamic(&mut self, regs: &mut lower::Regs, rip: ir::Value, chain: bool) {
        let side = self.b.create_block();
        if chain {
            for m in 0..self.starts.len() {
                let hit = self.b.create_block();
                let miss = self.b.create_block();
                let same = self.b.ins().icmp_imm_s(IntCC::Equal, rip, self.starts[m] as i64);
                self.b.ins().brif(same, hit, &[], miss, &[]);
                self.b.seal_block(hit);
                self.b.switch_to_block(hit);
                let saved = (regs.in_var, regs.dirty, regs.pending);
                self.fits(m, side);
                self.enter(regs, m);
                (regs.in_var, regs.dirty, regs.pending) = saved;
                self.b.seal_block(miss);
                self.b.switch_to_block(miss);
            }
        }
        self.b.ins().jump(side, &[]);
        self.b.seal_block(side);
        self.b.switch_to_block(side);
        self.note_last(self.cur.1);
        let to = self.leave(chain);
        self.b.ins().jump(to, &[]);
    }

    /// Emits member `j` (instructions `insns`, the first at global index `k0`).
    fn member(&mut self, regs: &mut lower::Regs, j: usize, insns: &[Insn], k0: usize, live: &[u64]) {
        self.b.switch_to_block(self.mblocks[j]);
        regs.in_var = self.used;
        regs.dirty = self.used;
        regs.pending = match self.carry[j] {
            Some((c, mask)) if self.live_in[j] != 0 => lower::PendingSet::carried(c, mask),
            _ => Default::default(),
        };
        // Which block runs now, for `RunEnd::last` (stored where the region leaves).
        let chain = cpu::interp::chains(&insns[insns.len() - 1]);
        self.cur = (k0, insns.len(), chain);
        self.lag = 0;
        let mut dirty = true;
        for (k, insn) in insns.iter().enumerate() {
            let gk = k0 + k;
            let Some(form) = lower::inline_op(insn) else {
                self.call(regs, gk, insn, dirty);
                dirty = false;
                continue;
            };
            if matches!(form.op, lower::Op::Sys(_)) {
                // `lower_sys.rs` reads the count from the variable.
                self.settle_count();
            }
            if let lower::Op::Branch(cc) = form.op {
                let target = insn.i.near_branch_target();
                let taken = cc.map(|cc| self.lower(regs).cond(cc));
                self.bump(1);
                match taken {
                    None => self.goto_static(regs, target, chain),
                    Some(t) => {
                        let yes = self.b.create_block();
                        let no = self.b.create_block();
                        self.b.ins().brif(t, yes, &[], no, &[]);
                        self.b.seal_block(yes);
                        self.b.seal_block(no);
                        self.b.switch_to_block(yes);
                        self.goto_static(regs, target, chain);
                        self.b.switch_to_block(no);
                        self.goto_static(regs, insn.next_rip, chain);
                    }
                }
                return;
            }
            if form.mem == lower::Mem::None {
                self.lower(regs).emit(insn, form.op, live[k]);
                self.bump(1);
                dirty = true;
                continue;
            }
            let slow = self.b.create_block();
            let join = self.b.create_block();
            self.b.set_cold_block(slow);
            let (tlb, user_tag, cache) = (self.tlb, self.user_tag, self.micro[gk]);
            let host = self.lower(regs).probe_cached(insn, form, tlb, user_tag, slow, cache);
            if matches!(form.op, lower::Op::Call | lower::Op::Ret | lower::Op::JmpInd) {
                let saved = (regs.in_var, regs.dirty, regs.pending);
                let rip = self.lower(regs).emit_call_ret(insn, form, host, slow, tlb, user_tag);
                self.b.seal_block(slow);
                self.b.ins().store(MF, rip, self.st, cpu::offsets::RIP as i32);
                // The slow path (below) runs the instruction from the count before it.
                let lag = self.lag;
                self.bump(1);
                let v = self.count();
                self.b.ins().store(MF, v, self.st, cpu::offsets::ICOUNT as i32);
                self.settle(regs);
                self.goto_dynamic(regs, rip, chain);
                (regs.in_var, regs.dirty, regs.pending) = saved;
                self.lag = lag;
                self.b.switch_to_block(slow);
                self.call(regs, gk, insn, dirty);
                let rip = self.b.ins().load(types::I64, MF, self.st, cpu::offsets::RIP as i32);
                self.goto_dynamic(regs, rip, chain);
                return;
            }
            // A form's own guards may still branch to the slow path, so it is sealed after them.
            let (in0, dirty0, pending0) = (regs.in_var, regs.dirty, regs.pending);
            let mut l = self.lower(regs);
            l.emit_mem(insn, form, host, live[k], slow);
            l.b.seal_block(slow);
            let joined = if l.regs.pending != pending0 { l.join_carry() } else { None };
            // Both paths retire it before the join (the slow path in `call`): `lag` is the same
            // on both.
            self.b.ins().jump(join, &[]);
            let (in1, dirty1, pending1) = (regs.in_var, regs.dirty, regs.pending);
            regs.in_var = in0;
            regs.dirty = dirty0;
            regs.pending = pending0;
            self.b.switch_to_block(slow);
            self.call(regs, gk, insn, dirty);
            self.lag -= 1;
            regs.load(&mut self.b, self.st, in1);
            regs.dirty = dirty1;
            regs.pending = pending1;
            if let Some(c) = joined {
                self.lower(regs).join_carry_slow(c);
            }
            self.b.ins().jump(join, &[]);
            self.b.seal_block(join);
            self.b.switch_to_block(join);
            self.bump(1);
            dirty = true;
        }
        // The member ends without a branch of its own (the length or page limit, or a handler ran
        // its last instruction).
        let last = &insns[insns.len() - 1];
        if dirty {
            self.goto_static(regs, last.next_rip, chain);
        } else {
            self.settle(regs);
            let rip = self.b.ins().load(types::I64, MF, self.st, cpu::offsets::RIP as i32);
            self.goto_dynamic(regs, rip, chain);
        }
    }
}
