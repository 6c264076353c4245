//! Ferrite's Cranelift JIT: the `jit` engine.
//!
//! The interpreter (`cpu::Interpreter`) decodes guest code into blocks, caches them by physical
//! address, RIP and mode, and invalidates them on self-modifying code. This crate is a
//! [`cpu::BlockBackend`] for it: a block entered often enough is translated into one host function,
//! which runs the block's instructions back to back with the interpreter's per-instruction bookkeeping
//! (next RIP, RIP, the retired-instruction count, the end-of-block flag) done in generated code. Each
//! instruction either calls the interpreter's own handler through [`call_handler`], or is one of the
//! forms `lower.rs` restates in IR (register/immediate moves and ALU operations, LEA, shifts and
//! rotates by an immediate, IMUL, NEG/NOT, SETcc/CMOVcc, and in 64-bit code the memory forms through
//! an inline probe of the interpreter's TLB, PUSH/POP r64, Jcc/JMP and CALL/RET), each checked against
//! the handler by
//! `tests/differential.rs`. The ROM and Linux tests that compare the two engines check the bookkeeping.
//!
//! Within a block, guest registers and RFLAGS are Cranelift variables, written back before handler
//! calls and at exits; flags are computed only where live, and lazily (`lower::Pending`), also
//! across a link: an exit leaves its last ADD/SUB/logic operation uncomputed in `CpuState::lazy`
//! (`cpu::lazyflags`), the successor computes it only where it reads a flag first, and
//! `JitBlock::run` computes what is left before it returns. A block that branches back to its own
//! start loops in generated code while the budget allows. Blocks
//! the interpreter chains get direct links ([`Link`]): a block's code tail-calls its successor's
//! translation (Cranelift's `tail` calling convention, [`block_sig`]), so a chain of linked blocks
//! runs without the interpreter's loop and returns to `JitBlock::run` only when it leaves generated
//! code (or at a link region selection watches, [`ST_LINK`]); a link epoch, raised whenever
//! decoded blocks are dropped, unlinks everything at once. A block ending in RET or an indirect
//! JMP/CALL also probes a table of links shared by all blocks, keyed by the target RIP
//! (`dispatch.rs`, the indirect-branch target cache).
//!
//! Code is compiled with `cranelift-codegen` into position-independent bytes (no relocations: the
//! trampoline's address is an immediate) and copied into executable chunks of our own ([`arena`]).
//! A translation is owned by the interpreter's block, so invalidating the block frees its code.
//!
//! [`Backend`] is what the machine installs: it compiles on a second thread (`worker.rs`) while the
//! interpreter keeps running the block, loads and saves translations in a persistent cache
//! (`cache.rs`, `--jit-cache`), and evicts all translations when the code arena is full (which
//! unlinks everything, like any drop of decoded blocks). [`Jit`] alone compiles synchronously (the
//! tests' and the difftester's backend).
//!
//! A hot cycle of linked blocks becomes a region (`region.rs`): its blocks compiled as one function,
//! registers and flags in SSA across their edges, owned by the first block's translation.
//!
//! What is not here yet: inlined string instructions.
#![deny(missing_docs)]

mod arena;
mod backend;
mod cache;
mod dispatch;
mod lower;
mod profile;
mod region;
mod worker;

pub use backend::{Backend, Counters, Handle, Options};
pub use worker::CompileDelay;

use arena::{Arena, Code};
use cpu::exec::Insn;
use cpu::interp::{LastBlock, RunEnd};
use cpu::mem::Ctx;
use cpu::{BlockBackend, CompiledBlock, Fault};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{self, AbiParam, InstBuilder, MemFlagsData, UserFuncName, types};
use cranelift_codegen::isa::{CallConv, OwnedTargetIsa, TargetIsa};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use dispatch::{IbEntry, Ibtc};
use std::any::Any;
use std::cell::Cell;
use std::ffi::c_void;
use std::mem::offset_of;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::rc::Rc;

/// Status returned by [`call_handler`] and by a block's function: the instruction completed.
const ST_OK: u32 = 0;
/// The block ended early; `Outcome` says why (a fault, or a panic in a handler).
const ST_EXIT: u32 = 1;
/// A block's function only: the block ran to its end and its successor is the translation named in
/// `Outcome::next_*` (a direct link, see [`Link`]), which the caller runs next. Only links that
/// `Outcome::stop_xor`/`stop_max` select return it (region selection watches them); every other link
/// is followed by a tail call, without returning.
const ST_LINK: u32 = 2;
/// A block's function only: a memory form's access could not be made inline (a TLB miss, MMIO, a
/// page-crossing or misaligned access, a guard of the form) and the code left before that
/// instruction, everything stored (the lazy flag state too), with the instruction's index in
/// `Outcome::resume`; `JitBlock::run` runs the rest of the block as the interpreter's loop would
/// (`cpu::interp::run_insns`). A slow path that leaves instead of calling the handler keeps
/// values from living across a call, so a block whose only calls would be those needs no
/// callee-saved register and ends with lean links.
const ST_RESUME: u32 = 3;

/// What a block's function leaves for its caller when it ends early.
#[derive(Default)]
pub struct Outcome {
    /// The fault that ended the block, with the next instruction's RIP.
    fault: Option<(Fault, u64)>,
    /// A handler panicked (a bug of ours): the panic resumes once the generated frames are left.
    panic: Option<Box<dyn Any + Send>>,
    /// Read by generated code: a block whose exit leads back to its own first instruction runs
    /// again while the retired count after the next run would not pass this (see
    /// [`CompiledBlock::run`]); 0 when it must return after each run.
    loop_limit: u64,
    /// Instructions retired through [`call_handler`] (statistics: the rest ran inline).
    called: u64,
    /// Read by generated code: the JIT's link epoch (`Jit::epoch`) for this run; a [`Link`] made
    /// in another epoch is not followed.
    epoch: u64,
    /// Written by generated code with [`ST_LINK`]: the successor's function, instructions, links,
    /// and instruction count | chain flag << 32 (copied from the [`Link`] taken).
    next_code: usize,
    next_insns: usize,
    next_links: usize,
    next_len_chain: u64,
    /// Read by generated code: which links return [`ST_LINK`] to `JitBlock::run` rather than tail-call
    /// their successor, whose code address is `c`: those with `c ^ stop_xor <= stop_max`. (0, 0):
    /// none (code is never at 0); (0, `u64::MAX`): all (region selection records a cycle's path);
    /// (`head`, 0): only links back into the code at `head` (region selection counts cycles).
    stop_xor: u64,
    stop_max: u64,
    /// Links followed by a tail call (statistics), counted by generated code.
    followed: u64,
    /// The host functions generated code calls, indexed by the `HELPER_*` constants: code loads
    /// them from here instead of holding their addresses, so that it runs unchanged in another
    /// process (the persistent translation cache) whatever address the binary was loaded at.
    helpers: [usize; 7],
    /// The `Ctx` the code runs on (`*mut Ctx`), for helpers that need more than the `CpuState`
    /// (`lower_sys.rs`: the bus).
    ctx: usize,
    /// The block that ran last, which becomes `RunEnd::last` (0 in `last_insns`: the one
    /// `JitBlock::run` entered): its instructions, its length | chain flag << 32, and the retired
    /// count at its start. Written where generated code leaves (a block's function at its return,
    /// whatever the status, for itself; a region's code for the member it leaves from,
    /// `region.rs`) and by `JitBlock::run` after [`ST_LINK`], not where a link is followed by a
    /// tail call: the block it leads to writes them if the chain ends in it.
    last_insns: usize,
    last_len_chain: u64,
    last_start: u64,
    /// The link slots of the block that ran last (0: the one `JitBlock::run` entered), which
    /// become `RunEnd::link_from`. Written with `last_insns`.
    last_links: usize,
    /// Read by generated code: the indirect-branch target cache (`Jit::ibtc`, [`IbEntry`]s).
    ibtc: usize,
    /// Written by generated code with [`ST_RESUME`]: the index, in the block that ran last, of
    /// the instruction to resume at.
    resume: usize,
}

/// Index of [`call_handler`] in `Outcome::helpers`.
const HELPER_CALL: usize = 0;
/// Index of `lower::imul_flags` in `Outcome::helpers`.
pub(crate) const HELPER_IMUL_FLAGS: usize = 1;
/// Index of `lower_int::mul_flags` in `Outcome::helpers`.
pub(crate) const HELPER_MUL_FLAGS: usize = 2;
/// Index of `lower_int::cnt_flags` in `Outcome::helpers`.
pub(crate) const HELPER_CNT_FLAGS: usize = 3;

/// Index of `lower_sse::sse_helper` in `Outcome::helpers`.
pub(crate) const HELPER_SSE: usize = 4;
/// Index of `lower_sys::sys_helper` in `Outcome::helpers`.
pub(crate) const HELPER_SYS: usize = 5;
/// Index of `lower::lazy_flags` in `Outcome::helpers`.
pub(crate) const HELPER_LAZY: usize = 6;

/// The table generated code finds in `Outcome::helpers`.
fn helper_table() -> [usize; 7] {
    [
        call_handler as *const () as usize,
        lower::imul_flags as lower::FlagsHelper as usize,
        lower::mul_flags as lower::FlagsHelper as usize,
        lower::cnt_flags as lower::FlagsHelper as usize,
        lower::sse_helper as lower::FlagsHelper as usize,
        lower::sys_helper as lower::FlagsHelper as usize,
        lower::lazy_flags as lower::FlagsHelper as usize,
    ]
}

/// Offset of helper `k` within an `Outcome`, for generated loads.
pub(crate) fn helper_offset(k: usize) -> i32 {
    (offset_of!(Outcome, helpers) + k * std::mem::size_of::<usize>()) as i32
}

/// One exit slot of a translated block: a direct link to the translation of the block at `rip`,
/// followed by generated code (without returning to the interpreter's loop) when the block ran to
/// its end at that RIP, `epoch` is the current one (no decoded block has been dropped since the link
/// was made: the successor and its code are alive), the fetch TLB still maps the linear page
/// `page` to `phys` for the current privilege (so the interpreter's lookup would find the same
/// block), and the successor fits in the budget (`Outcome::loop_limit`, the interpreter's own
/// check). Made by [`JitBlock::link_into`] when the interpreter's chaining loop runs the successor
/// after the block. Fields are `Cell`s: generated code reads them, the JIT rewrites them.
#[repr(C)]
#[derive(Default)]
struct Link {
    rip: Cell<u64>,
    /// 0: never linked (epochs start at 1).
    epoch: Cell<u64>,
    /// The target's linear page.
    page: Cell<u64>,
    /// Byte offset of the fetch-TLB entry of `page` in `cpu::mem::Tlb`.
    tlb_off: Cell<u64>,
    /// The physical page that entry must map.
    phys: Cell<u64>,
    code: Cell<usize>,
    insns: Cell<usize>,
    links: Cell<usize>,
    len: Cell<u64>,
    /// The successor's length as region recording sees it (`JitBlock::recorded_len`: `len`, or 0
    /// when `insns` are not its own) | chain flag << 32 (whether its last instruction chains).
    len_chain: Cell<u64>,
    /// Not read by generated code: the one RIP this slot may link to when its block's end has a
    /// fixed target for it ([`static_exits`]): the block's code then selects the slot by that RIP
    /// (a compare with a constant) and does not compare the slot's `rip`. `None`: any RIP (a
    /// block ending in an indirect transfer, a region's slots, the indirect-branch cache).
    fixed: Cell<Option<u64>>,
}

/// Exit slots per block (a conditional branch has two successors).
const LINKS: usize = 2;

/// The RIPs at which a block can end normally when its last instruction fixes them, slot by slot:
/// a conditional branch (Jcc, LOOPcc, JrCXZ) its target then the next instruction, a direct JMP or
/// CALL its target, an instruction that chains without branching (a block cut at its length or
/// page limit, CLI, SWAPGS) the next instruction. `None` for ends whose RIP is known only at run
/// time (RET, indirect JMP/CALL, SYSCALL/SYSRETQ) and for blocks that do not chain. The block's code
/// checks slot `k` only where the new RIP equals the `k`th RIP (a compare with a constant), and
/// `JitBlock::link_into` fills slot `k` only with the block at that RIP (`Link::fixed`), so the slot's
/// own RIP need not be compared.
pub(crate) fn static_exits(insns: &[Insn]) -> Option<[Option<u64>; LINKS]> {
    use iced_x86::Mnemonic as M;
    let last = insns.last()?;
    let i = &last.i;
    if !cpu::interp::chains(last) || matches!(i.mnemonic(), M::Syscall | M::Sysret | M::Ret) {
        return None;
    }
    if i.is_jcc_short_or_near()
        || matches!(i.mnemonic(), M::Loop | M::Loope | M::Loopne | M::Jcxz | M::Jecxz | M::Jrcxz)
    {
        Some([Some(i.near_branch_target()), Some(last.next_rip)])
    } else if i.is_jmp_short_or_near() || i.is_call_near() {
        Some([Some(i.near_branch_target()), None])
    } else if i.flow_control() == iced_x86::FlowControl::Next {
        Some([Some(last.next_rip), None])
    } else {
        None
    }
}

/// A translated block's exit slots and what its end ([`emit_lean_links`]) records of the block
/// when it leaves generated code there (`Outcome::last_*`): at a fixed address while the block lives; its
/// address is the `links` argument of the block's function (the slots come first).
#[repr(C)]
#[derive(Default)]
struct Exits {
    slots: [Link; LINKS],
    /// The block's instructions (set by each `JitBlock::run`, before any link to the block can
    /// be made).
    insns: Cell<usize>,
    /// Its length | chain flag << 32.
    len_chain: Cell<u64>,
}

/// Calls the handler of `insn`, the one call generated code makes per instruction.
///
/// Returns [`ST_OK`] when the instruction completed; otherwise records the fault in `out` (a software
/// interrupt has retired, so the retired count is raised here, as `cpu::interp::step` does) and
/// returns [`ST_EXIT`]. A panic is caught and kept in `out`: unwinding must not cross generated code,
/// which has no unwind tables.
///
/// # Safety
/// `ctx` points to a live, exclusively borrowed `Ctx`, `insn` to a live `Insn`, and `out` to a live
/// `Outcome`; none of them aliases another.
pub unsafe extern "C" fn call_handler(ctx: *mut c_void, insn: *const Insn, out: *mut Outcome) -> u32 {
    // SAFETY: the caller (a block's function, entered only from `JitBlock::run`) passes the `Ctx` it
    // was given, an element of the block's instruction slice and the `Outcome` on `run`'s stack.
    let (ctx, insn, out) = unsafe { (&mut *(ctx as *mut Ctx<'_>), &*insn, &mut *out) };
    debug_assert!(!ctx.st.lazy.is_pending(), "a handler would see a lazy flag state");
    profile::count(insn);
    match catch_unwind(AssertUnwindSafe(|| (insn.handler)(ctx, insn))) {
        Ok(Ok(())) => {
            out.called += 1;
            ST_OK
        }
        Ok(Err(f)) => {
            if matches!(f, Fault::Soft { .. }) {
                ctx.st.icount += 1;
                out.called += 1;
            }
            out.fault = Some((f, insn.next_rip));
            ST_EXIT
        }
        Err(p) => {
            out.panic = Some(p);
            ST_EXIT
        }
    }
}

/// The signature of a block's (or a region's) function: `(ctx, insns, out, links) -> status`, where
/// `links` is the block's own [`Link`] slots, in Cranelift's `tail` calling convention, so that a
/// followed link is a tail call (`return_call_indirect`) of the successor: a chain of linked blocks
/// runs in one host frame at a time and returns to `JitBlock::run` only when it leaves generated code.
/// Part of the generated code's ABI: [`BLOCK_ABI`] names it in the cache key.
pub(crate) fn block_sig(ptr: ir::Type) -> ir::Signature {
    let mut sig = ir::Signature::new(CallConv::Tail);
    sig.params.extend([AbiParam::new(ptr); 4]);
    sig.returns.push(AbiParam::new(types::I32));
    sig
}

/// The version of the generated code's calling contract ([`block_sig`], [`Outcome`]'s fields as
/// generated code uses them), part of [`Jit::codegen_id`] and so of the persistent cache's key:
/// raised whenever code generated before would not run correctly under the current contract.
const BLOCK_ABI: &str = "block-abi 5: (ctx, insns, out, links); Outcome::last_* written where code leaves; links is an Exits; region exits probe the IBTC; blocks select fixed-exit slots by RIP constants";

/// Rust cannot call the `tail` convention: `JitBlock::run` calls a block's function through this
/// trampoline (generated once per [`Jit`], [`trampoline`]), `(ctx, insns, out, links, code) ->
/// status`, which calls `code` with the first four.
type Trampoline = unsafe extern "C" fn(*mut c_void, *const Insn, *mut Outcome, *const Link, usize) -> u32;

/// Generates the [`Trampoline`] for `isa` into `arena`.
fn trampoline(isa: &dyn TargetIsa, arena: &mut Arena) -> Result<Code, String> {
    let ptr = isa.pointer_type();
    let mut sig = ir::Signature::new(isa.default_call_conv());
    sig.params.extend([AbiParam::new(ptr); 5]);
    sig.returns.push(AbiParam::new(types::I32));
    let mut func = ir::Function::with_name_signature(UserFuncName::default(), sig);
    let mut fctx = FunctionBuilderContext::new();
    let mut b = FunctionBuilder::new(&mut func, &mut fctx);
    let callee = b.import_signature(block_sig(ptr));
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let p = b.block_params(entry).to_vec();
    let call = b.ins().call_indirect(callee, p[4], &p[..4]);
    let status = b.inst_results(call)[0];
    b.ins().return_(&[status]);
    b.finalize(isa.frontend_config());
    let mut ctx = cranelift_codegen::Context::for_function(func);
    let mut ctrl = cranelift_codegen::control::ControlPlane::default();
    let c = ctx.compile(isa, &mut ctrl).map_err(|e| format!("the JIT's trampoline: {:?}", e.inner))?;
    if !c.buffer.relocs().is_empty() {
        return Err("the JIT's trampoline is not position-independent".into());
    }
    let bytes = c.code_buffer().to_vec();
    arena.copy_in(&bytes).ok_or_else(|| "no executable memory for the JIT's trampoline".into())
}

/// Emits, where a block has ended normally with everything in `CpuState` (`rip` and `ic` the new
/// RIP and retired count, `links` its [`Exits`]), the checks and following of its links (and with
/// `ibtc_bits` the cache probe) holding only `out`, `links`, `rip` and `ic` (every other value is
/// loaded where a check uses it), then the function's return: of [`ST_LINK`] at once for a link
/// `JitBlock::run` watches (it records the block that ran last then), else of [`ST_OK`] once the
/// block is recorded in `Outcome::last_*` from its `Exits` (started at `ic - len`: it ran whole,
/// one retired instruction each). The end of a block that calls nothing and does not loop on
/// itself (other blocks, self-loops and regions hold these values and check their links with
/// them): with few values live, such a block needs no callee-saved register.
fn emit_lean_links(
    b: &mut FunctionBuilder<'_>,
    out: ir::Value,
    links: ir::Value,
    (rip, ic): (ir::Value, ir::Value),
    ibtc_bits: Option<u32>,
    fixed: Option<Fixed>,
    succ_sig: ir::SigRef,
) {
    let mf = MemFlagsData::trusted();
    let back = b.create_block();
    b.append_block_param(back, types::I32);
    let ret_ok = b.create_block();
    let env = LinkEnv { held: None, out, links, exit: back, ret_ok, succ_sig };
    emit_links_with(b, env, Some((rip, ic)), ibtc_bits, fixed);
    b.seal_block(back);
    b.switch_to_block(back);
    let status = b.block_params(back)[0];
    b.ins().return_(&[status]);
    b.seal_block(ret_ok);
    b.switch_to_block(ret_ok);
    let insns = b.ins().load(types::I64, mf, links, offset_of!(Exits, insns) as i32);
    let len_chain = b.ins().load(types::I64, mf, links, offset_of!(Exits, len_chain) as i32);
    let len = b.ins().band_imm_u(len_chain, u32::MAX as i64);
    let start = b.ins().isub(ic, len);
    for (v, to) in [
        (insns, offset_of!(Outcome, last_insns)),
        (links, offset_of!(Outcome, last_links)),
        (len_chain, offset_of!(Outcome, last_len_chain)),
        (start, offset_of!(Outcome, last_start)),
    ] {
        b.ins().store(mf, v, out, to as i32);
    }
    let ok = b.ins().iconst(types::I32, ST_OK as i64);
    b.ins().return_(&[ok]);
}

/// Translation statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Blocks translated.
    pub compiled: u64,
    /// Blocks the backend declined (code generation failed): they stay interpreted.
    pub declined: u64,
    /// Bytes of host code generated.
    pub code_bytes: u64,
    /// Instructions lowered inline (counted once per translation).
    pub inlined: u64,
    /// Instructions translated as a call of their handler.
    pub called: u64,
    /// Host time spent translating, in nanoseconds (statistics only: it never reaches the guest).
    pub compile_ns: u64,
}

/// Cranelift's optimisation level for ordinary blocks, the first tier (measured: docs/PERF.md,
/// 2026-12-07 "Translation latency": `none` translates 22% faster, the boot waits less for
/// translations, and the code runs the boot and the guest CPU benchmark as fast).
const OPT_LEVEL: &str = "none";
/// Cranelift's optimisation level for code that loops, the second tier: blocks that loop on
/// themselves and regions (`region.rs`, hot cycles of blocks compiled again as one function).
const OPT_LEVEL_LOOP: &str = "speed";
/// Cranelift's register allocator for translations (measured: docs/PERF.md).
const REGALLOC: &str = "backtracking";

/// The Cranelift block backend.
pub struct Jit {
    /// Cranelift's target for ordinary blocks.
    isa: OwnedTargetIsa,
    /// Cranelift's target for blocks that loop on themselves (see [`Jit::new`]).
    isa_loop: OwnedTargetIsa,
    ctx: cranelift_codegen::Context,
    fctx: FunctionBuilderContext,
    arena: Arena,
    stats: Stats,
    /// Instructions retired inline by generated code (statistics), shared with every translation.
    inline_retired: Rc<Cell<u64>>,
    /// The link epoch, shared with every translation: raised whenever decoded blocks are dropped
    /// ([`BlockBackend::unlink_all`]), which invalidates every [`Link`] at once.
    epoch: Rc<Cell<u64>>,
    /// Links made (statistics).
    links_made: Rc<Cell<u64>>,
    /// The indirect-branch target cache (`dispatch.rs`), shared with every translation.
    ibtc: Rc<Ibtc>,
    /// Whether translations made from now on probe it (`FERRITE_JIT_IBTC=0`: no, for measuring).
    ibtc_on: bool,
    /// Regions (`region.rs`), shared with every translation.
    regions: Rc<region::Shared>,
    /// The [`Trampoline`], shared with every translation.
    tramp: Rc<Code>,
    /// Whether translations made from now on follow links by tail calls (`FERRITE_JIT_TAIL=0`:
    /// no, every followed link returns to `JitBlock::run`, for measuring; the guest sees the same).
    tail: bool,
}

impl Jit {
    /// A JIT for this host's CPU; fails when Cranelift does not support the host.
    ///
    /// Blocks that loop on themselves, and regions, are compiled with Cranelift's `speed`
    /// optimizations and its backtracking register allocator (their code quality is what a hot
    /// loop runs at); other blocks with the settings in `FERRITE_JIT_OPT` (`none`, `speed`) and
    /// `FERRITE_JIT_REGALLOC` (`backtracking`, `single_pass`), by default those measured best in
    /// docs/PERF.md (`none`, `backtracking`).
    pub fn new() -> Result<Self, String> {
        let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        let isa = Self::make_isa(&env("FERRITE_JIT_OPT", OPT_LEVEL), &env("FERRITE_JIT_REGALLOC", REGALLOC))
            .map_err(|e| format!("FERRITE_JIT_OPT/FERRITE_JIT_REGALLOC: {e}"))?;
        let isa_loop = Self::make_isa(OPT_LEVEL_LOOP, REGALLOC)?;
        let tramp = Rc::new(trampoline(&*isa, &mut Arena::default())?);
        Ok(Jit {
            isa,
            isa_loop: isa_loop.clone(),
            ctx: cranelift_codegen::Context::new(),
            fctx: FunctionBuilderContext::new(),
            arena: Arena::default(),
            stats: Stats::default(),
            inline_retired: Rc::default(),
            epoch: Rc::new(Cell::new(1)),
            links_made: Rc::default(),
            ibtc: Rc::default(),
            ibtc_on: dispatch::enabled_by_env(),
            regions: Rc::new(region::Shared::new(isa_loop)),
            tramp,
            tail: std::env::var_os("FERRITE_JIT_TAIL").is_none_or(|v| v != "0"),
        })
    }

    /// Sets how many times a cycle of linked blocks must come back to its first block before the
    /// cycle is compiled as one region (0: never), for translations made from now on.
    pub fn set_region_threshold(&mut self, cycles: u32) {
        self.regions.threshold.set(cycles);
    }

    /// Whether translations made from now on probe the indirect-branch target cache at a RET or
    /// an indirect JMP/CALL (on by default; `FERRITE_JIT_IBTC=0` turns it off). Either way the
    /// guest sees the same: this only decides how often a run returns to the interpreter's loop.
    pub fn set_indirect_cache(&mut self, on: bool) {
        self.ibtc_on = on;
    }

    /// One line about regions for `--stats`.
    pub(crate) fn region_summary(&self) -> String {
        let r = self.regions.stats.get();
        format!(
            "{} regions ({} blocks, {} declined) in {:.2} s",
            r.regions,
            r.members,
            r.declined,
            r.ns as f64 / 1e9
        )
    }

    /// A Cranelift target for this host with the given `opt_level` and `regalloc_algorithm`.
    fn make_isa(opt: &str, regalloc: &str) -> Result<OwnedTargetIsa, String> {
        let mut flags = settings::builder();
        let verify = if cfg!(debug_assertions) || std::env::var_os("FERRITE_JIT_VERIFY").is_some() {
            "true"
        } else {
            "false"
        };
        flags.set("enable_verifier", verify).map_err(|e| e.to_string())?;
        flags.set("regalloc_algorithm", regalloc).map_err(|e| e.to_string())?;
        flags.set("opt_level", opt).map_err(|e| e.to_string())?;
        // Code is copied to wherever the arena has room: it must not depend on its address.
        flags.set("is_pic", "true").map_err(|e| e.to_string())?;
        // Nothing registers unwind tables for generated code (no unwinding crosses it:
        // `call_handler` catches panics), so Cranelift need not make them.
        flags.set("unwind_info", "false").map_err(|e| e.to_string())?;
        // Cranelift's x86-64 tail calls (a followed link, `emit_slot`) need every frame to keep
        // its frame pointer.
        flags.set("preserve_frame_pointers", "true").map_err(|e| e.to_string())?;
        cranelift_native::builder()
            .map_err(|e| format!("cranelift does not support this host: {e}"))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| e.to_string())
    }

    /// Translation statistics so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Everything about code generation besides the guest code that the machine code depends on:
    /// Cranelift's settings, the host features it targets and the calling contract of generated
    /// code ([`BLOCK_ABI`]) (part of the persistent cache's key).
    pub(crate) fn codegen_id(&self) -> String {
        let isa_flags: Vec<String> = self.isa.isa_flags().iter().map(|v| v.to_string()).collect();
        format!("{}\n{}\n{}\n{BLOCK_ABI}", self.isa.triple(), self.isa.flags(), isa_flags.join(","))
    }

    /// Builds the Cranelift function of a block of `n` instructions with the given next RIPs. In a
    /// self-loop, `carry` is the pending flag operation (kind, owned flags) its back edge hands to
    /// the next iteration uncomputed (`lower::Lower::back_edge`); the second result is the one a
    /// build without it found carriable.
    /// With `lean`, a block that is not a self-loop and whose instructions are all inline forms
    /// ends with lean links ([`emit_lean_links`]); the caller builds it again without when the
    /// function calls something after all (a flag or SSE helper: [`has_calls`]).
    fn build(
        &mut self,
        insns: &[Insn],
        carry: Option<(lower::CarryKind, u64)>,
        lean: bool,
    ) -> (ir::Function, Option<(lower::CarryKind, u64)>) {
        let isa: &dyn TargetIsa = &*self.isa;
        let ptr = isa.pointer_type();
        let mut sig = ir::Signature::new(isa.default_call_conv());
        sig.params.extend([AbiParam::new(ptr), AbiParam::new(ptr), AbiParam::new(ptr)]);
        sig.returns.push(AbiParam::new(types::I32));
        let mut func = ir::Function::with_name_signature(UserFuncName::default(), block_sig(ptr));
        let mut b = FunctionBuilder::new(&mut func, &mut self.fctx);
        let callee = b.import_signature(sig);
        let succ_sig = b.import_signature(block_sig(ptr));
        let mf = MemFlagsData::trusted();

        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        let exit = b.create_block();
        b.append_block_param(exit, types::I32);
        // A normal end (no fault, no `break_block`): where links are followed, with the new RIP
        // and the retired count (both also in `CpuState`) as its parameters.
        let link_exit = b.create_block();
        b.append_block_param(link_exit, types::I64);
        b.append_block_param(link_exit, types::I64);
        let ret_ok = b.create_block();
        let chain = cpu::interp::chains(&insns[insns.len() - 1]);
        b.switch_to_block(entry);
        let (ctx, base, out, links) = {
            let p = b.block_params(entry);
            (p[0], p[1], p[2], p[3])
        };
        // `Ctx::st` cannot change while the block runs: load it once.
        let st = b.ins().load(ptr, mf, ctx, offset_of!(Ctx<'static>, st) as i32);
        // `ST_OK`, made where it is used (a constant made here would hold a register through the
        // whole block: Cranelift does not rematerialize at `opt_level=none`).
        let ok = |b: &mut FunctionBuilder<'_>| b.ins().iconst(types::I32, ST_OK as i64);
        let size = std::mem::size_of::<Insn>() as i64;
        // The retired count lives in an SSA variable while the block runs; `rip` and `icount` in
        // `CpuState` are brought up to date (`sync`) before each handler call and at the end.
        let icount = b.declare_var(types::I64);
        let ic0 = b.ins().load(types::I64, mf, st, cpu::offsets::ICOUNT as i32);
        b.def_var(icount, ic0);
        // RFLAGS too: stored before each handler call (and reloaded after it) and at the end.
        let fl = b.declare_var(types::I64);
        let fl0 = b.ins().load(types::I64, mf, st, cpu::offsets::RFLAGS as i32);
        b.def_var(fl, fl0);
        let mut hsig = ir::Signature::new(isa.default_call_conv());
        hsig.params.extend([ptr, types::I64, types::I64, types::I64, types::I32].map(AbiParam::new));
        hsig.returns.push(AbiParam::new(types::I64));
        let helper_sig = b.import_signature(hsig);
        let live = lower::liveness(insns);
        // Not where RFLAGS is still the value loaded at the entry (no flag or IF written on this
        // path, no handler ran): `CpuState` holds it, and the entry's load need not be held.
        let store_fl = |b: &mut FunctionBuilder<'_>| {
            let v = b.use_var(fl);
            if v != fl0 {
                b.ins().store(mf, v, st, cpu::offsets::RFLAGS as i32);
            }
        };
        let first_ip = insns[0].i.ip();
        let len = insns.len() as i64;
        // A block that branches back to its own start loops in generated code, its registers and
        // flags staying in variables across the back edge: the registers it uses are loaded before
        // the loop, and counted as held (and changed) at its top.
        let self_loop = self_loop(insns);
        // A block that calls nothing (no handler call, no inline memory or system form, whose
        // slow paths call the handler) and does not loop on itself ends with lean links
        // (`emit_lean_links`): holding few values, it needs no callee-saved register. Any other
        // block saves them anyway (Cranelift saves them in the prologue whatever path a call is
        // on), and checks its links with the values it holds, as a region does.
        // A block that ends with STI (`lower::through_end`) checks the loop's events before its
        // links (`lower::emit_through`), which lean links do not.
        let lean = lean
            && !self_loop
            && insns.iter().all(|i| lower::inline_op(i).is_some())
            && lower::through_end(insns).is_none();
        // The MMU, TLB and access tag are loaded at entry only where something reads them: an
        // inline memory or system form, held links. Elsewhere they are constants that nothing
        // reads (so never emitted): lean links load what they need.
        let has_mem = insns.iter().any(|i| lower::inline_op(i).is_some_and(|f| f.mem != lower::Mem::None));
        let mem_env = has_mem || !lean;
        let (mmu, tlb) = if mem_env {
            let mmu = b.ins().load(ptr, mf, ctx, offset_of!(Ctx<'static>, mmu) as i32);
            (mmu, b.ins().load(ptr, mf, mmu, offset_of!(cpu::mem::Mmu, tlb) as i32))
        } else {
            let none = b.ins().iconst(ptr, 0);
            (none, none)
        };
        // The budget: a self-loop checks it at its back edge (loaded once, before the loop); other
        // blocks only where links are checked, which load it there (not held across the block).
        let loop_limit_at = |b: &mut FunctionBuilder<'_>| {
            b.ins().load(types::I64, mf, out, offset_of!(Outcome, loop_limit) as i32)
        };
        let loop_limit = if self_loop { Some(loop_limit_at(&mut b)) } else { None };
        let mut regs = lower::Regs::new(&mut b);
        let used = if self_loop { lower::used_gprs(insns) } else { 0 };
        regs.load(&mut b, st, used);
        regs.dirty = used;
        let user_tag = if mem_env {
            lower::Lower { b: &mut b, st, regs: &mut regs, fl, helper_sig, out }.user_tag(mmu)
        } else {
            mmu
        };
        regs.sys = mem_env.then_some(lower::SysEnv { count: icount, tlb, user_tag });
        // In a self-loop, each memory form keeps the TLB entry (linear page, host page) of its last
        // inline access in SSA across the back edge, and probes it before the TLB: a loop walking a
        // buffer then has no TLB load on its dependency chain. Only the inline path fills it, and
        // every handler call (anything that may change the TLB) empties it; a linear page of 1
        // (not a page) matches nothing. Outside a self-loop, the memory forms of the block share
        // one such cache per TLB array (read, write): a run of PUSHes, or of accesses to one stack
        // frame, probes the TLB once (a hit is a lookup only, so the TLB is left as the
        // interpreter leaves it).
        let new_cache = |b: &mut FunctionBuilder<'_>| {
            let (t, h) = (b.declare_var(types::I64), b.declare_var(types::I64));
            let none = b.ins().iconst(types::I64, 1);
            b.def_var(t, none);
            b.def_var(h, none);
            (t, h)
        };
        let shared = (!self_loop).then(|| [new_cache(&mut b), new_cache(&mut b)]);
        let micro: Vec<Option<(Variable, Variable)>> = insns
            .iter()
            .map(|insn| {
                let form = lower::inline_op(insn).filter(|f| f.mem != lower::Mem::None)?;
                Some(match shared {
                    Some(c) => c[form.writes() as usize],
                    None => new_cache(&mut b),
                })
            })
            .collect();
        // The variables of a carried flag operation, not carrying one on the first iteration.
        let carry = carry.filter(|_| self_loop).map(|(kind, mask)| {
            let v = [(); 4].map(|_| b.declare_var(types::I64));
            let zero = b.ins().iconst(types::I64, 0);
            for x in v {
                b.def_var(x, zero);
            }
            (lower::Carry { on: v[0], a: v[1], b: v[2], r: v[3], kind }, mask)
        });
        let mut carriable = None;
        if self_loop {
            // A predecessor's lazy flag state (`cpu::lazyflags`) is computed before the loop,
            // whose top holds RFLAGS as entered; dropped when the loop writes every arithmetic
            // flag before anything can read one (memory forms and handler calls count as reading
            // them all).
            let mut l = lower::Lower { b: &mut b, st, regs: &mut regs, fl, helper_sig, out };
            if lower::live_in(insns, &live) == 0 {
                l.clear_incoming();
            } else {
                l.take_incoming();
                l.materialize();
            }
        }
        let top = b.create_block();
        b.ins().jump(top, &[]);
        b.switch_to_block(top);
        if !self_loop {
            // No back edge: sealed now, so a variable's value here is known (the memory forms'
            // first probe skips the empty micro-cache).
            b.seal_block(top);
        }
        if let Some((c, mask)) = carry {
            regs.pending = lower::PendingSet::carried(c, mask);
        }
        if !self_loop {
            // Computed only where a flag is read before being written (`Lower::take_incoming`).
            let mut l = lower::Lower { b: &mut b, st, regs: &mut regs, fl, helper_sig, out };
            if lower::live_in(insns, &live) == 0 {
                l.clear_incoming();
            } else {
                l.take_incoming();
            }
        }
        // The count is the variable plus `lag`, instructions retired since the variable was last
        // defined, known while building: each sync point adds its own constant to the one value
        // (a chain of additions would hold a register per pending sync point). `settle` defines the
        // variable where a join or a reader of it (`lower_sys.rs`, a self-loop's top) needs it.
        let lag = Cell::new(0i64);
        let bump = |_: &mut FunctionBuilder<'_>, n: i64| lag.set(lag.get() + n);
        let cur = |b: &mut FunctionBuilder<'_>| {
            let v = b.use_var(icount);
            match lag.get() {
                0 => v,
                n => b.ins().iadd_imm_s(v, n),
            }
        };
        let settle = |b: &mut FunctionBuilder<'_>| {
            let v = cur(b);
            b.def_var(icount, v);
            lag.set(0);
            v
        };
        let sync = |b: &mut FunctionBuilder<'_>, rip: u64| {
            let r = b.ins().iconst(types::I64, rip as i64);
            b.ins().store(mf, r, st, cpu::offsets::RIP as i32);
            let v = cur(b);
            b.ins().store(mf, v, st, cpu::offsets::ICOUNT as i32);
        };
        // Whether `rip`/`icount` in memory lag behind (an inlined instruction ran since the last sync).
        // At the top of a self-loop they may: the back edge does not store them.
        let mut dirty = self_loop;
        // Flags a self-loop's next iteration may read before writing them: the back edge computes
        // only those.
        let live_in = lower::live_in(insns, &live);
        let mut ended = false;
        let through = if chain { lower::through_end(insns) } else { None };
        // The new RIP and retired count where the block ends by an inlined branch (the values
        // just stored, which the links compare without loading them again).
        let mut at_end: Option<(ir::Value, ir::Value)> = None;
        // Emits the handler call of instruction `k` (state synced first), continuing in a new block
        // when the instruction completed without ending the block.
        let call =
            |b: &mut FunctionBuilder<'_>, regs: &mut lower::Regs, k: usize, insn: &Insn, dirty: bool| {
                if dirty {
                    sync(b, insn.i.ip());
                }
                lower::Lower { b, st, regs, fl, helper_sig, out }.materialize();
                store_fl(b);
                regs.flush(b, st);
                regs.forget();
                // ctx.next_rip = insn.next_rip; status = handler(ctx, insn)
                let next = b.ins().iconst(types::I64, insn.next_rip as i64);
                b.ins().store(mf, next, ctx, offset_of!(Ctx<'static>, next_rip) as i32);
                let ip = b.ins().iadd_imm_s(base, k as i64 * size);
                // The handler's address, loaded where it is called (cold paths, mostly) rather than
                // held across the block.
                let tramp = b.ins().load(ptr, mf, out, helper_offset(HELPER_CALL));
                let call = b.ins().call_indirect(callee, tramp, &[ctx, ip, out]);
                let status = b.inst_results(call)[0];
                let done = b.create_block();
                b.ins().brif(status, exit, &[status.into()], done, &[]);
                b.switch_to_block(done);
                b.seal_block(done);
                if micro.iter().any(Option::is_some) {
                    let none = b.ins().iconst(types::I64, 1);
                    for &(t, _) in micro.iter().flatten() {
                        b.def_var(t, none);
                    }
                }
                let v = b.ins().load(types::I64, mf, st, cpu::offsets::RFLAGS as i32);
                b.def_var(fl, v);
                // st.rip = ctx.next_rip; st.icount += 1
                let rip = b.ins().load(types::I64, mf, ctx, offset_of!(Ctx<'static>, next_rip) as i32);
                b.ins().store(mf, rip, st, cpu::offsets::RIP as i32);
                bump(b, 1);
                let v = cur(b);
                b.ins().store(mf, v, st, cpu::offsets::ICOUNT as i32);
                // An instruction that must end the block (MMIO, self-modifying code, mode changes) says
                // so in ctx.break_block.
                let bb = b.ins().load(types::I8, mf, ctx, offset_of!(Ctx<'static>, break_block) as i32);
                let next_block = b.create_block();
                if k + 1 == insns.len() && through.is_some() {
                    // SYSCALL/SYSRETQ: the links' end checks what it changed (`lower::emit_through`).
                    b.ins().jump(next_block, &[]);
                } else {
                    let ok = ok(b);
                    b.ins().brif(bb, exit, &[ok.into()], next_block, &[]);
                }
                b.switch_to_block(next_block);
                b.seal_block(next_block);
            };
        // A memory form's slow path outside self-loops: leaves before instruction `k` with
        // everything stored (`ST_RESUME`); `JitBlock::run` runs the rest of the block as the
        // interpreter's loop would. The lazy flag state is stored as at any exit.
        let slow_exit =
            |b: &mut FunctionBuilder<'_>, regs: &mut lower::Regs, k: usize, insn: &Insn, dirty: bool| {
                if dirty {
                    sync(b, insn.i.ip());
                }
                lower::Lower { b, st, regs, fl, helper_sig, out }.export();
                store_fl(b);
                regs.flush(b, st);
                let at = b.ins().iconst(types::I64, k as i64);
                b.ins().store(mf, at, out, offset_of!(Outcome, resume) as i32);
                let status = b.ins().iconst(types::I32, ST_RESUME as i64);
                b.ins().jump(exit, &[status.into()]);
            };
        for (k, insn) in insns.iter().enumerate() {
            let Some(form) = lower::inline_op(insn) else {
                self.stats.called += 1;
                call(&mut b, &mut regs, k, insn, dirty);
                dirty = false;
                continue;
            };
            self.stats.inlined += 1;
            if matches!(form.op, lower::Op::Sys(_)) {
                // `lower_sys.rs` reads the count from the variable.
                settle(&mut b);
            }
            if let lower::Op::Branch(cc) = form.op {
                // A branch ends the block: RIP is the target or the next instruction.
                let target = b.ins().iconst(types::I64, insn.i.near_branch_target() as i64);
                let taken = cc
                    .map(|cc| lower::Lower { b: &mut b, st, regs: &mut regs, fl, helper_sig, out }.cond(cc));
                let rip = match taken {
                    None => target,
                    Some(taken) => {
                        let fall = b.ins().iconst(types::I64, insn.next_rip as i64);
                        b.ins().select(taken, target, fall)
                    }
                };
                bump(&mut b, 1);
                let v = settle(&mut b);
                if self_loop {
                    // Run again while the next run fits below the limit: exactly the interpreter's
                    // budget check; nothing else can be due (the block ran to its end). The back
                    // edge keeps RIP, the count, RFLAGS and the registers in SSA: only the way out
                    // stores them.
                    let after = b.ins().iadd_imm_s(v, len);
                    let limit = match loop_limit {
                        Some(l) => l,
                        None => loop_limit_at(&mut b),
                    };
                    let fits = b.ins().icmp(IntCC::UnsignedLessThanOrEqual, after, limit);
                    let latch = b.create_block();
                    let leave = b.create_block();
                    // Whether the branch leads back to the top, from the condition itself.
                    let again = match taken {
                        None => None,
                        Some(t) if insn.i.near_branch_target() == first_ip => Some((t, false)),
                        Some(t) => Some((t, true)),
                    };
                    if let Some((t, negated)) = again {
                        let check = b.create_block();
                        let (yes, no) = if negated { (leave, check) } else { (check, leave) };
                        b.ins().brif(t, yes, &[], no, &[]);
                        b.seal_block(check);
                        b.switch_to_block(check);
                    }
                    b.ins().brif(fits, latch, &[], leave, &[]);
                    b.seal_block(latch);
                    b.seal_block(leave);
                    b.switch_to_block(latch);
                    let (in_var, held_dirty, pending) = (regs.in_var, regs.dirty, regs.pending);
                    {
                        let mut l = lower::Lower { b: &mut b, st, regs: &mut regs, fl, helper_sig, out };
                        if live_in == 0 {
                            // The next iteration writes every flag before reading one.
                            l.drop_pending();
                        } else {
                            carriable = l.back_edge(carry);
                        }
                    }
                    // The top holds every used register: load those a handler call made us drop.
                    let missing = used & !regs.in_var;
                    regs.load(&mut b, st, missing);
                    // A register outside `used` (none, if iced's table is complete) is not held at
                    // the top: write it back.
                    regs.dirty &= !used;
                    regs.flush(&mut b, st);
                    b.ins().jump(top, &[]);
                    (regs.in_var, regs.dirty, regs.pending) = (in_var, held_dirty, pending);
                    b.switch_to_block(leave);
                }
                b.ins().store(mf, rip, st, cpu::offsets::RIP as i32);
                b.ins().store(mf, v, st, cpu::offsets::ICOUNT as i32);
                lower::Lower { b: &mut b, st, regs: &mut regs, fl, helper_sig, out }.export();
                store_fl(&mut b);
                regs.flush(&mut b, st);
                at_end = Some((rip, v));
                ended = true;
                break;
            }
            if form.mem == lower::Mem::None {
                lower::Lower { b: &mut b, st, regs: &mut regs, fl, helper_sig, out }
                    .emit(insn, form.op, live[k]);
            } else {
                // The access inline when the interpreter would take its fast path; else the handler.
                let slow = b.create_block();
                let join = b.create_block();
                b.set_cold_block(slow);
                let host = lower::Lower { b: &mut b, st, regs: &mut regs, fl, helper_sig, out }
                    .probe_cached(insn, form, tlb, user_tag, slow, micro[k]);
                if matches!(form.op, lower::Op::Call | lower::Op::Ret | lower::Op::JmpInd) {
                    // They end the block: each path leaves on its own, fully synced.
                    let (in0, dirty0, pending0) = (regs.in_var, regs.dirty, regs.pending);
                    let rip = lower::Lower { b: &mut b, st, regs: &mut regs, fl, helper_sig, out }
                        .emit_call_ret(insn, form, host, slow, tlb, user_tag);
                    b.seal_block(slow);
                    b.ins().store(mf, rip, st, cpu::offsets::RIP as i32);
                    // The slow path (emitted below) leaves before this instruction retired.
                    let lag0 = lag.get();
                    bump(&mut b, 1);
                    let v = cur(&mut b);
                    b.ins().store(mf, v, st, cpu::offsets::ICOUNT as i32);
                    lower::Lower { b: &mut b, st, regs: &mut regs, fl, helper_sig, out }.export();
                    store_fl(&mut b);
                    regs.flush(&mut b, st);
                    b.ins().jump(link_exit, &[rip.into(), v.into()]);
                    (regs.in_var, regs.dirty, regs.pending) = (in0, dirty0, pending0);
                    lag.set(lag0);
                    b.switch_to_block(slow);
                    if self_loop {
                        call(&mut b, &mut regs, k, insn, dirty);
                        // `call` synced everything (and left a fresh block for the fall-through).
                    } else {
                        slow_exit(&mut b, &mut regs, k, insn, dirty);
                        // A block that nothing reaches, for the code after the loop.
                        let dead = b.create_block();
                        b.switch_to_block(dead);
                        b.seal_block(dead);
                    }
                    ended = true;
                    break;
                }
                // The registers and pending flags as they are where the probe branches to the slow
                // path (a form's own guards branch there before it changes anything).
                let (in0, dirty0, pending0) = (regs.in_var, regs.dirty, regs.pending);
                let mut l = lower::Lower { b: &mut b, st, regs: &mut regs, fl, helper_sig, out };
                l.emit_mem(insn, form, host, live[k], slow);
                l.b.seal_block(slow);
                if !self_loop {
                    // The slow path leaves the block's code (`ST_RESUME`): only the fast path
                    // goes on, its pending flags as they are.
                    b.ins().jump(join, &[]);
                    let (in1, dirty1, pending1) = (regs.in_var, regs.dirty, regs.pending);
                    (regs.in_var, regs.dirty, regs.pending) = (in0, dirty0, pending0);
                    b.switch_to_block(slow);
                    slow_exit(&mut b, &mut regs, k, insn, dirty);
                    (regs.in_var, regs.dirty, regs.pending) = (in1, dirty1, pending1);
                    bump(&mut b, 1);
                    b.seal_block(join);
                    b.switch_to_block(join);
                    dirty = true;
                    continue;
                }
                let mut l = lower::Lower { b: &mut b, st, regs: &mut regs, fl, helper_sig, out };
                // Flags pending from this instruction are computed here (their operands are not
                // available after the join); flags still pending from before stay so: the slow
                // path computes them before its handler, and computing them again after the
                // join gives the same RFLAGS (an instruction that leaves them pending does not
                // write flags).
                let joined = if l.regs.pending != pending0 { l.join_carry() } else { None };
                // Both paths retire it before the join (the slow path in `call`): `lag` is the
                // same on both.
                b.ins().jump(join, &[]);
                let (in1, dirty1, pending1) = (regs.in_var, regs.dirty, regs.pending);
                // The slow path leaves the registers as the fast path does (held in `in1`).
                regs.in_var = in0;
                regs.dirty = dirty0;
                regs.pending = pending0;
                b.switch_to_block(slow);
                call(&mut b, &mut regs, k, insn, dirty);
                lag.set(lag.get() - 1);
                regs.load(&mut b, st, in1);
                regs.dirty = dirty1;
                regs.pending = pending1;
                if let Some(c) = joined {
                    lower::Lower { b: &mut b, st, regs: &mut regs, fl, helper_sig, out }.join_carry_slow(c);
                }
                b.ins().jump(join, &[]);
                b.seal_block(join);
                b.switch_to_block(join);
                bump(&mut b, 1);
                // The slow path is synced, the fast path is not: `rip`/`icount` lag at the join.
                dirty = true;
                continue;
            }
            bump(&mut b, 1);
            dirty = true;
        }
        if !ended {
            if dirty {
                let next = insns[insns.len() - 1].next_rip;
                sync(&mut b, next);
                let r = b.ins().iconst(types::I64, next as i64);
                at_end = Some((r, settle(&mut b)));
            }
            lower::Lower { b: &mut b, st, regs: &mut regs, fl, helper_sig, out }.export();
            store_fl(&mut b);
            regs.flush(&mut b, st);
        }
        // Where a handler ran last, `CpuState` holds what it left.
        let (end_rip, end_ic) = at_end.unwrap_or_else(|| {
            let r = b.ins().load(types::I64, mf, st, cpu::offsets::RIP as i32);
            (r, b.ins().load(types::I64, mf, st, cpu::offsets::ICOUNT as i32))
        });
        b.ins().jump(link_exit, &[end_rip.into(), end_ic.into()]);
        b.seal_block(link_exit);
        b.switch_to_block(link_exit);
        let ibtc = dispatch::indirect_end(insns).filter(|_| self.ibtc_on);
        if chain && lean {
            // Everything is in `CpuState`: the links, holding only what they compare (no
            // SYSCALL/SYSRETQ here: they are handler calls).
            let (rip, ic) = (b.block_params(link_exit)[0], b.block_params(link_exit)[1]);
            emit_lean_links(&mut b, out, links, (rip, ic), ibtc, Fixed::of(insns), succ_sig);
        } else if chain {
            let (rip, ic) = (b.block_params(link_exit)[0], b.block_params(link_exit)[1]);
            let loop_limit = match loop_limit {
                Some(l) => l,
                None => loop_limit_at(&mut b),
            };
            let user_tag = match through {
                Some(events) => lower::emit_through(&mut b, helper_sig, ctx, st, out, mmu, events, ret_ok),
                None => user_tag,
            };
            let held = Some(Held { ctx, st, tlb, user_tag, loop_limit });
            let env = LinkEnv { held, out, links, exit, ret_ok, succ_sig };
            // SYSCALL/SYSRETQ (`through`) have no fixed exits; STI has its next instruction.
            emit_links_with(&mut b, env, Some((rip, ic)), ibtc, Fixed::of(insns));
        } else {
            b.ins().jump(ret_ok, &[]);
        }
        b.seal_block(ret_ok);
        b.switch_to_block(ret_ok);
        let ok = ok(&mut b);
        b.ins().jump(exit, &[ok.into()]);
        b.seal_block(entry);
        if self_loop {
            b.seal_block(top);
        }
        b.seal_block(exit);
        b.switch_to_block(exit);
        let status = b.block_params(exit)[0];
        // Generated code leaves here: this block ran last (`Outcome::last_*`), started at `ic0`.
        let len_chain = b.ins().iconst(types::I64, len | (chain as i64) << 32);
        for (v, to) in [
            (base, offset_of!(Outcome, last_insns)),
            (links, offset_of!(Outcome, last_links)),
            (len_chain, offset_of!(Outcome, last_len_chain)),
            (ic0, offset_of!(Outcome, last_start)),
        ] {
            b.ins().store(mf, v, out, to as i32);
        }
        b.ins().return_(&[status]);
        b.finalize(isa.frontend_config());
        (func, carriable)
    }
}

/// What [`emit_links`] needs of the function being built.
#[derive(Clone, Copy)]
struct LinkEnv {
    /// Values the function already holds (a region's, a self-loop's, a block's with a call), or
    /// `None` (the end of a block that calls nothing, [`emit_lean_links`]): each is then loaded
    /// where a check uses it, so that few values are live at once.
    held: Option<Held>,
    out: ir::Value,
    links: ir::Value,
    /// Where a watched link returns [`ST_LINK`] (the status its parameter): the function's exit,
    /// or a plain return (`JitBlock::run` writes `Outcome::last_*` after it).
    exit: ir::Block,
    ret_ok: ir::Block,
    /// The imported [`block_sig`], for the tail call of a successor.
    succ_sig: ir::SigRef,
}

/// The values of a [`LinkEnv`] that a function may already hold.
#[derive(Clone, Copy)]
struct Held {
    ctx: ir::Value,
    st: ir::Value,
    tlb: ir::Value,
    user_tag: ir::Value,
    loop_limit: ir::Value,
}

impl LinkEnv {
    /// The `Ctx` pointer.
    fn ctx(&self, b: &mut FunctionBuilder<'_>) -> ir::Value {
        match self.held {
            Some(h) => h.ctx,
            None => {
                b.ins().load(types::I64, MemFlagsData::trusted(), self.out, offset_of!(Outcome, ctx) as i32)
            }
        }
    }

    /// The `CpuState` pointer.
    fn st(&self, b: &mut FunctionBuilder<'_>) -> ir::Value {
        match self.held {
            Some(h) => h.st,
            None => {
                let ctx = self.ctx(b);
                b.ins().load(types::I64, MemFlagsData::trusted(), ctx, offset_of!(Ctx<'static>, st) as i32)
            }
        }
    }

    /// The software TLB's address and the privilege bits of the current access tag
    /// (`Mmu::access_tag & 3`: unless held, the current one, which a SYSCALL/SYSRETQ ending the
    /// block has brought up to date).
    fn tlb_utag(&self, b: &mut FunctionBuilder<'_>) -> (ir::Value, ir::Value) {
        let mf = MemFlagsData::trusted();
        let (tlb, tag) = match self.held {
            Some(h) => (h.tlb, h.user_tag),
            None => {
                let ctx = self.ctx(b);
                let mmu = b.ins().load(types::I64, mf, ctx, offset_of!(Ctx<'static>, mmu) as i32);
                let tlb = b.ins().load(types::I64, mf, mmu, offset_of!(cpu::mem::Mmu, tlb) as i32);
                (tlb, b.ins().load(types::I64, mf, mmu, offset_of!(cpu::mem::Mmu, access_tag) as i32))
            }
        };
        (tlb, b.ins().band_imm_s(tag, 3))
    }

    /// The budget (`Outcome::loop_limit`).
    fn loop_limit(&self, b: &mut FunctionBuilder<'_>) -> ir::Value {
        match self.held {
            Some(h) => h.loop_limit,
            None => b.ins().load(
                types::I64,
                MemFlagsData::trusted(),
                self.out,
                offset_of!(Outcome, loop_limit) as i32,
            ),
        }
    }

    /// The link epoch (`Outcome::epoch`): `held` when the function holds its values.
    fn epoch(&self, b: &mut FunctionBuilder<'_>, held: Option<ir::Value>) -> ir::Value {
        match held {
            Some(e) => e,
            None => {
                b.ins().load(types::I64, MemFlagsData::trusted(), self.out, offset_of!(Outcome, epoch) as i32)
            }
        }
    }
}

/// Emits, at a normal end where everything is in `CpuState`, the following of a [`Link`] whose
/// successor is the block at the new RIP (see `Link`), else a jump to `ret_ok`.
fn emit_links(b: &mut FunctionBuilder<'_>, e: LinkEnv) {
    emit_links_with(b, e, None, None, None);
}

/// A block's [`static_exits`] as its code checks them: per slot, the RIP and whether the target
/// lies in the linear page of the block's first instruction in 64-bit code, where the fetch-TLB
/// check is left out. That page's entry was checked (or filled) when the block was entered, and
/// nothing in a chaining block changes or evicts fetch-TLB entries (flushes end blocks without
/// chaining; only decoding fills the fetch TLB), so the check would hold; the successor's physical
/// page is the block's own, with which the link was made (a block is keyed by its physical page);
/// the epoch covers its code being dropped.
#[derive(Clone, Copy)]
pub(crate) struct Fixed([Option<(u64, bool)>; LINKS]);

impl Fixed {
    /// The fixed exits of `insns` (`None` where [`static_exits`] has none).
    pub(crate) fn of(insns: &[Insn]) -> Option<Fixed> {
        let t = static_exits(insns)?;
        let first = insns[0].i.ip();
        let long = insns[0].i.code_size() == iced_x86::CodeSize::Code64;
        Some(Fixed(t.map(|t| t.map(|rip| (rip, long && rip & !0xfff == first & !0xfff)))))
    }
}

/// [`emit_links`] with `rip_ic`, when given, the new RIP and retired count (the values stored in
/// `CpuState`, which are loaded from there otherwise), and for a block of `bits`-bit code ending in
/// an indirect transfer (RET, JMP or CALL through a register or memory), after its own slots the
/// probe of the indirect-branch target cache ([`IbEntry`], `dispatch.rs`): a link shared by every
/// block, found by the new RIP.
fn emit_links_with(
    b: &mut FunctionBuilder<'_>,
    e: LinkEnv,
    rip_ic: Option<(ir::Value, ir::Value)>,
    ibtc_bits: Option<u32>,
    fixed: Option<Fixed>,
) {
    let LinkEnv { out, links, ret_ok, .. } = e;
    let mf = MemFlagsData::trusted();
    // Everything is in `CpuState` now. Follow a link whose successor is the block at the new
    // RIP (see `Link`), else return to the interpreter.
    let (rip, ic) = rip_ic.unwrap_or_else(|| {
        let st = e.st(b);
        let rip = b.ins().load(types::I64, mf, st, cpu::offsets::RIP as i32);
        (rip, b.ins().load(types::I64, mf, st, cpu::offsets::ICOUNT as i32))
    });
    // A function that holds its values loads the epoch and the tag once, before the slots.
    let (epoch, utag) = match e.held {
        Some(_) => {
            let epoch = b.ins().load(types::I64, mf, out, offset_of!(Outcome, epoch) as i32);
            (Some(epoch), Some(e.tlb_utag(b)))
        }
        None => (None, None),
    };
    // Where every slot that holds goes, with the successor's code, instructions, slots and
    // length | chain flag: one copy of the following (the code a block spends on links is what
    // every translation carries).
    let follow = b.create_block();
    for _ in 0..4 {
        b.append_block_param(follow, types::I64);
    }
    let probe = Probe { e, rip, ic, epoch, utag, follow };
    if let Some(Fixed(fixed)) = fixed {
        // Each slot checked only where the new RIP is its fixed one: no compare of the slot's RIP
        // (`Link::fixed`), and none of the fetch TLB for a target on the block's own page.
        for (k, f) in fixed.iter().enumerate() {
            let Some((t, same_page)) = *f else { continue };
            let hit = b.create_block();
            let miss = b.create_block();
            let is = b.ins().icmp_imm_s(IntCC::Equal, rip, t as i64);
            b.ins().brif(is, hit, &[], miss, &[]);
            b.seal_block(hit);
            b.switch_to_block(hit);
            let check = Check { rip: false, tlb: !same_page, ibtc_bits: None };
            emit_slot(b, &probe, links, (k * std::mem::size_of::<Link>()) as i32, check, ret_ok);
            b.seal_block(miss);
            b.switch_to_block(miss);
        }
        b.ins().jump(ret_ok, &[]);
    } else {
        for k in 0..LINKS {
            let last = k + 1 == LINKS && ibtc_bits.is_none();
            let miss = if last { ret_ok } else { b.create_block() };
            let check = Check { rip: true, tlb: true, ibtc_bits: None };
            emit_slot(b, &probe, links, (k * std::mem::size_of::<Link>()) as i32, check, miss);
            if !last {
                b.seal_block(miss);
                b.switch_to_block(miss);
            }
        }
        if let Some(bits) = ibtc_bits {
            let table = b.ins().load(types::I64, mf, out, offset_of!(Outcome, ibtc) as i32);
            let off = dispatch::emit_slot_offset(b, rip);
            let ent = b.ins().iadd(table, off);
            emit_slot(b, &probe, ent, 0, Check { rip: true, tlb: true, ibtc_bits: Some(bits) }, ret_ok);
        }
    }
    b.seal_block(follow);
    b.switch_to_block(follow);
    let p = b.block_params(follow).to_vec();
    emit_follow(b, e, [p[0], p[1], p[2], p[3]]);
}

/// The values [`emit_slot`] compares a [`Link`] with.
struct Probe {
    e: LinkEnv,
    rip: ir::Value,
    ic: ir::Value,
    /// The epoch and (TLB, privilege bits of the access tag), when loaded once before the slots.
    epoch: Option<ir::Value>,
    utag: Option<(ir::Value, ir::Value)>,
    /// The block that follows a link (`emit_follow`).
    follow: ir::Block,
}

/// Which checks [`emit_slot`] makes besides the epoch and the budget.
#[derive(Clone, Copy)]
struct Check {
    /// The slot's RIP against the new RIP (not for a slot of a fixed exit, [`Fixed`]).
    rip: bool,
    /// The fetch-TLB entry of the target's page (not for a fixed target on the block's own page).
    tlb: bool,
    /// With `Some(bits)`, the slot is an [`IbEntry`]: the current CS base and the block's code size
    /// must equal the entry's.
    ibtc_bits: Option<u32>,
}

/// Emits the check of the [`Link`] at `base + off` (see [`Check`]) and, when every check holds, a
/// jump to `Probe::follow` with the successor; else a jump to `miss`.
fn emit_slot(b: &mut FunctionBuilder<'_>, p: &Probe, base: ir::Value, off: i32, c: Check, miss: ir::Block) {
    let ibtc_bits = c.ibtc_bits;
    let mf = MemFlagsData::trusted();
    let at = |f: usize| off + f as i32;
    // Each check falls through to the next in a new block, or leaves for `miss`.
    let check = |b: &mut FunctionBuilder<'_>, ok: ir::Value| {
        let next = b.create_block();
        b.ins().brif(ok, next, &[], miss, &[]);
        b.seal_block(next);
        b.switch_to_block(next);
    };
    if c.rip {
        let r = b.ins().load(types::I64, mf, base, at(offset_of!(Link, rip)));
        let same = b.ins().icmp(IntCC::Equal, r, p.rip);
        check(b, same);
    }
    let e = b.ins().load(types::I64, mf, base, at(offset_of!(Link, epoch)));
    let epoch = p.e.epoch(b, p.epoch);
    let ok_epoch = b.ins().icmp(IntCC::Equal, e, epoch);
    check(b, ok_epoch);
    if let Some(bits) = ibtc_bits {
        let st = p.e.st(b);
        let cs_base = b.ins().load(
            types::I64,
            mf,
            st,
            (cpu::offsets::SEG0
                + cpu::state::Seg::Cs as usize * cpu::offsets::SEGMENT_SIZE
                + offset_of!(cpu::state::Segment, base)) as i32,
        );
        let eb = b.ins().load(types::I64, mf, base, at(offset_of!(IbEntry, cs_base)));
        let ok_base = b.ins().icmp(IntCC::Equal, eb, cs_base);
        check(b, ok_base);
        let ebits = b.ins().load(types::I64, mf, base, at(offset_of!(IbEntry, bits)));
        let ok_bits = b.ins().icmp_imm_u(IntCC::Equal, ebits, bits as i64);
        check(b, ok_bits);
    }
    if c.tlb {
        let (tlb, utag) = match p.utag {
            Some(v) => v,
            None => p.e.tlb_utag(b),
        };
        let off_tlb = b.ins().load(types::I64, mf, base, at(offset_of!(Link, tlb_off)));
        let ent = b.ins().iadd(tlb, off_tlb);
        let t = b.ins().load(types::I64, mf, ent, offset_of!(cpu::mem::TlbEntry, tag) as i32);
        let page = b.ins().load(types::I64, mf, base, at(offset_of!(Link, page)));
        let want = b.ins().bor(page, utag);
        let ok_tag = b.ins().icmp(IntCC::Equal, t, want);
        check(b, ok_tag);
        let ph = b.ins().load(types::I64, mf, ent, offset_of!(cpu::mem::TlbEntry, phys) as i32);
        let wp = b.ins().load(types::I64, mf, base, at(offset_of!(Link, phys)));
        let ok_phys = b.ins().icmp(IntCC::Equal, ph, wp);
        check(b, ok_phys);
    }
    // The interpreter's budget check, the one event check between blocks (the interrupt and
    // device deadlines are folded into `loop_limit` by the interpreter).
    let n = b.ins().load(types::I64, mf, base, at(offset_of!(Link, len)));
    let after = b.ins().iadd(p.ic, n);
    let loop_limit = p.e.loop_limit(b);
    let fits = b.ins().icmp(IntCC::UnsignedLessThanOrEqual, after, loop_limit);
    check(b, fits);
    let code = b.ins().load(types::I64, mf, base, at(offset_of!(Link, code)));
    let insns = b.ins().load(types::I64, mf, base, at(offset_of!(Link, insns)));
    let links = b.ins().load(types::I64, mf, base, at(offset_of!(Link, links)));
    let len_chain = b.ins().load(types::I64, mf, base, at(offset_of!(Link, len_chain)));
    b.ins().jump(p.follow, &[code.into(), insns.into(), links.into(), len_chain.into()]);
}

/// Emits the following of a link to the successor `[code, insns, links, len_chain]` (see
/// [`Link`]): the tail call of its code (which records itself in `Outcome::last_*` if the chain
/// ends in it); or, for a link `Outcome::stop_*` selects, the return of [`ST_LINK`] with the
/// successor in `Outcome::next_*`.
fn emit_follow(b: &mut FunctionBuilder<'_>, e: LinkEnv, next: [ir::Value; 4]) {
    let LinkEnv { out, exit, succ_sig, .. } = e;
    let mf = MemFlagsData::trusted();
    let [code, insns, links, len_chain] = next;
    // Whether `JitBlock::run` watches this link (region selection): see `Outcome::stop_xor`.
    let sx = b.ins().load(types::I64, mf, out, offset_of!(Outcome, stop_xor) as i32);
    let sm = b.ins().load(types::I64, mf, out, offset_of!(Outcome, stop_max) as i32);
    let x = b.ins().bxor(code, sx);
    let stop = b.ins().icmp(IntCC::UnsignedLessThanOrEqual, x, sm);
    let back = b.create_block();
    let tail = b.create_block();
    b.ins().brif(stop, back, &[], tail, &[]);
    b.seal_block(back);
    b.seal_block(tail);
    b.switch_to_block(back);
    for (v, to) in [
        (code, offset_of!(Outcome, next_code)),
        (insns, offset_of!(Outcome, next_insns)),
        (links, offset_of!(Outcome, next_links)),
        (len_chain, offset_of!(Outcome, next_len_chain)),
    ] {
        b.ins().store(mf, v, out, to as i32);
    }
    let st_link = b.ins().iconst(types::I32, ST_LINK as i64);
    b.ins().jump(exit, &[st_link.into()]);
    b.switch_to_block(tail);
    // `Outcome::last_*` are left to the successor, which writes them where it leaves.
    let f = b.ins().load(types::I64, mf, out, offset_of!(Outcome, followed) as i32);
    let f = b.ins().iadd_imm_s(f, 1);
    b.ins().store(mf, f, out, offset_of!(Outcome, followed) as i32);
    let ctx = e.ctx(b);
    b.ins().return_call_indirect(succ_sig, code, &[ctx, insns, out, links]);
}

impl BlockBackend for Jit {
    fn compile(&mut self, insns: &[Insn]) -> Option<Rc<dyn CompiledBlock>> {
        if insns.is_empty() {
            return None;
        }
        let t0 = std::time::Instant::now();
        let r = self.translate(insns);
        self.stats.compile_ns += t0.elapsed().as_nanos() as u64;
        r
    }

    fn compiled_blocks(&self) -> u64 {
        self.stats.compiled
    }

    fn inline_retired(&self) -> u64 {
        self.inline_retired.get()
    }

    fn unlink_all(&mut self) {
        self.epoch.set(self.epoch.get() + 1);
    }

    fn describe(&self) -> String {
        let s = &self.stats;
        format!(
            "jit: {} blocks translated ({} declined) in {:.2} s, {} KiB of code ({} KiB mapped now); {} instructions inlined, {} calls; {} links made, {} links followed, {} of them by tail call, {} entries from the interpreter, {} slow-path resumes, {} unlink epochs; {}",
            s.compiled,
            s.declined,
            s.compile_ns as f64 / 1e9,
            s.code_bytes / 1024,
            self.arena.mapped() / 1024,
            s.inlined,
            s.called,
            self.links_made.get(),
            self.ibtc.followed.get(),
            self.ibtc.tail.get(),
            self.ibtc.entries.get(),
            self.ibtc.resumes.get(),
            self.epoch.get() - 1,
            self.region_summary()
        )
    }
}

impl Jit {
    /// Builds, compiles and places one block's code.
    fn translate(&mut self, insns: &[Insn]) -> Option<Rc<dyn CompiledBlock>> {
        let code = self.code_bytes(insns);
        let block = code.and_then(|c| self.install(&c, insns.len(), insns[0].next_rip));
        if block.is_none() {
            self.stats.declined += 1;
        }
        Some(Rc::new(block?))
    }

    /// Compiles a block into position-independent machine code (no relocations, no host address:
    /// see `Outcome::helpers`), which [`Jit::install`] can place anywhere, in this process or, through
    /// the persistent cache, in another one; `None` when Cranelift fails or the code is not
    /// self-contained.
    fn code_bytes(&mut self, insns: &[Insn]) -> Option<Vec<u8>> {
        let (mut func, carriable) = self.build(insns, None, true);
        if carriable.is_some() {
            // A self-loop whose back edge computed flags it can hand over: build it again carrying
            // them (the statistics count the block once).
            let stats = self.stats;
            func = self.build(insns, carriable, true).0;
            self.stats = stats;
        } else if has_calls(&func) {
            // Built for lean links, it calls a helper after all (Cranelift saves the callee-saved
            // registers in the prologue whatever path a call is on): it holds its values then.
            let stats = self.stats;
            func = self.build(insns, None, false).0;
            self.stats = stats;
        }
        self.ctx.clear();
        self.ctx.func = func;
        // `FERRITE_JIT_DUMP=1`: print each translation's IR and machine code (for looking at what we
        // emit); `FERRITE_JIT_DUMP=ADDR[,ADDR..]` (hex): only translations of blocks with an
        // instruction that starts or ends at one of them (the end is what a perf map names).
        let dump = dump_wanted(insns);
        if dump {
            eprintln!("jit: block at {:#x}:", insns[0].i.ip());
            for i in insns {
                eprintln!("jit:   {:#x} {}", i.i.ip(), i.i);
            }
            eprintln!("jit: its IR:\n{}", self.ctx.func.display());
        }
        self.ctx.set_disasm(dump);
        let mut ctrl = cranelift_codegen::control::ControlPlane::default();
        let isa = if self_loop(insns) { &*self.isa_loop } else { &*self.isa };
        match self.ctx.compile(isa, &mut ctrl) {
            // Only self-contained code can be copied into the arena.
            Ok(c) if c.buffer.relocs().is_empty() => {
                if dump && let Some(v) = &c.vcode {
                    eprintln!("jit: block at {:#x}, {} instructions:\n{v}", insns[0].i.ip(), insns.len());
                }
                Some(c.code_buffer().to_vec())
            }
            _ => None,
        }
    }

    /// Places code made by [`Jit::code_bytes`] for a block of `len` instructions, the first of
    /// which ends at `first_ip`, in executable memory; `None` when the arena is full (or the host
    /// refuses a mapping).
    fn install(&mut self, code: &[u8], len: usize, first_ip: u64) -> Option<JitBlock> {
        let code = self.arena.copy_in(code)?;
        perf_map(&code, "jit", first_ip, len);
        self.stats.compiled += 1;
        self.stats.code_bytes += code.len() as u64;
        Some(JitBlock {
            code,
            len,
            first_ip,
            links: Box::default(),
            epoch: self.epoch.clone(),
            links_made: self.links_made.clone(),
            ibtc: self.ibtc.clone(),
            inline_retired: self.inline_retired.clone(),
            region: region::Slot::new(self.regions.clone()),
            tramp: self.tramp.clone(),
            tail: self.tail,
        })
    }
}

/// Whether `func` calls anything (a handler, a flag, SSE or system helper).
fn has_calls(func: &ir::Function) -> bool {
    func.layout.blocks().any(|bl| {
        func.layout
            .block_insts(bl)
            .any(|i| matches!(func.dfg.insts[i].opcode(), ir::Opcode::Call | ir::Opcode::CallIndirect))
    })
}

/// Whether `FERRITE_JIT_DUMP` asks for the translation of `insns` (see [`Jit::code_bytes`]).
fn dump_wanted(insns: &[Insn]) -> bool {
    static WANT: std::sync::OnceLock<Option<Vec<u64>>> = std::sync::OnceLock::new();
    let want = WANT.get_or_init(|| {
        let v = std::env::var("FERRITE_JIT_DUMP").ok()?;
        if v.is_empty() || v == "1" {
            return Some(Vec::new());
        }
        let addrs: Vec<u64> = v
            .split(',')
            .filter_map(|a| u64::from_str_radix(a.trim().trim_start_matches("0x"), 16).ok())
            .collect();
        if addrs.is_empty() {
            eprintln!("jit: FERRITE_JIT_DUMP={v:?} names no hex address; dumping every translation");
        }
        Some(addrs)
    });
    match want {
        None => false,
        Some(a) if a.is_empty() => true,
        Some(a) => insns.iter().any(|i| a.contains(&i.i.ip()) || a.contains(&i.next_rip)),
    }
}

/// `FERRITE_JIT_PERFMAP=1`: keeps /tmp/perf-PID.map, where `perf report` finds names for
/// generated code, as lines `ADDR SIZE KIND:FIRST+LEN` (hex address and size; KIND `jit` for a
/// block, `region` for a region; FIRST the end of its first instruction, LEN its instructions),
/// one per translation placed. The arena reuses addresses once their translations are dropped, so
/// a placement that overlaps older lines removes them and rewrites the file (perf would otherwise
/// name the code by a stale line). Statistics only: nothing here reaches the guest.
pub(crate) fn perf_map(code: &Code, kind: &str, first_ip: u64, len: usize) {
    use std::collections::BTreeMap;
    use std::io::Write;
    type Map = (String, BTreeMap<usize, (usize, String)>);
    static MAP: std::sync::OnceLock<Option<std::sync::Mutex<Map>>> = std::sync::OnceLock::new();
    let map = MAP.get_or_init(|| {
        std::env::var_os("FERRITE_JIT_PERFMAP").filter(|v| !v.is_empty() && v != "0")?;
        let path = format!("/tmp/perf-{}.map", std::process::id());
        if let Err(e) = std::fs::write(&path, "") {
            eprintln!("jit: FERRITE_JIT_PERFMAP: cannot write {path}: {e}");
            return None;
        }
        Some(std::sync::Mutex::new((path, BTreeMap::new())))
    });
    let Some(map) = map else { return };
    let mut guard = map.lock().unwrap_or_else(|e| e.into_inner());
    let (path, lines) = &mut *guard;
    let (at, size) = (code.as_ptr() as usize, code.len());
    let line = format!("{at:x} {size:x} {kind}:{first_ip:x}+{len}\n");
    // Older lines overlapping [at, at + size): the one starting below `at` and those inside.
    let stale: Vec<usize> = lines
        .range(..at + size.max(1))
        .rev()
        .take_while(|(a, (s, _))| *a + *s > at)
        .map(|(a, _)| *a)
        .collect();
    for a in &stale {
        lines.remove(a);
    }
    lines.insert(at, (size, line.clone()));
    let result = if stale.is_empty() {
        std::fs::OpenOptions::new().append(true).open(&*path).and_then(|mut f| f.write_all(line.as_bytes()))
    } else {
        let all: String = lines.values().map(|(_, l)| l.as_str()).collect();
        std::fs::write(&*path, all)
    };
    if let Err(e) = result {
        eprintln!("jit: FERRITE_JIT_PERFMAP: cannot write {path}: {e}");
    }
}

/// Whether the block ends in an inlined branch back to its own first instruction (a loop that
/// generated code runs by itself).
fn self_loop(insns: &[Insn]) -> bool {
    let first_ip = insns[0].i.ip();
    let last = &insns[insns.len() - 1];
    matches!(lower::inline_op(last), Some(lower::Form { op: lower::Op::Branch(cc), .. })
        if last.i.near_branch_target() == first_ip || (cc.is_some() && last.next_rip == first_ip))
}

/// One translated block.
struct JitBlock {
    code: Code,
    /// Instructions the code was generated for.
    len: usize,
    /// The first instruction's `next_rip` (which block the code was made for).
    first_ip: u64,
    /// Its exit slots (at a fixed address: generated code of this block reads them, and
    /// `link_into` of a successor writes them).
    links: Box<Exits>,
    /// `Jit::epoch`.
    epoch: Rc<Cell<u64>>,
    /// `Jit::links_made`.
    links_made: Rc<Cell<u64>>,
    /// `Jit::ibtc`.
    ibtc: Rc<Ibtc>,
    /// `Jit::inline_retired`, which `run` adds to.
    inline_retired: Rc<Cell<u64>>,
    /// Its region, once the block heads a hot cycle of links (`region.rs`).
    region: region::Slot,
    /// `Jit::tramp`, through which `run` calls generated code.
    tramp: Rc<Code>,
    /// `Jit::tail`: whether links are followed by tail calls (else all return to `run`).
    tail: bool,
}

impl JitBlock {
    /// Links the block whose slots are at `from` (the block that ran just before this one, in the
    /// interpreter's chaining loop) to this block, which is about to run at the current RIP.
    ///
    /// # Safety
    /// `from` is the `links` of a live `JitBlock` (a `RunEnd::link_from` of the same chain: no block
    /// has been dropped since).
    unsafe fn link_into(&self, from: usize, ctx: &Ctx<'_>, insns: &[Insn]) {
        let st = &*ctx.st;
        if st.rip != insns[0].i.ip() {
            return;
        }
        let lin = if st.code_bits() == 64 {
            st.rip
        } else {
            st.sreg(cpu::state::Seg::Cs).base.wrapping_add(st.rip) & 0xffff_ffff
        };
        // The entry the interpreter's lookup just used to find this block, in either way of its
        // slot (else no link).
        let tag = (lin & !0xfff) | 2 | (st.cpl == 3) as u64;
        let way0 = cpu::mem::tlb_index(lin);
        let Some(idx) =
            [way0, way0 + cpu::mem::TLB_SIZE].into_iter().find(|&k| ctx.mmu.tlb.exec[k].tag == tag)
        else {
            return;
        };
        let e = &ctx.mmu.tlb.exec[idx];
        // SAFETY: the caller's contract.
        let slots = unsafe { &*(from as *const [Link; LINKS]) };
        let epoch = self.epoch.get();
        // A block with fixed exits has a slot for each RIP its end can have (`static_exits`):
        // only that one may hold a link to this RIP (its code does not compare the slot's RIP).
        let k = if slots.iter().any(|l| l.fixed.get().is_some()) {
            slots.iter().position(|l| l.fixed.get() == Some(st.rip))
        } else {
            Some(
                slots
                    .iter()
                    .position(|l| l.epoch.get() != epoch || l.rip.get() == st.rip)
                    .unwrap_or(LINKS - 1),
            )
        };
        let tlb_off =
            (offset_of!(cpu::mem::Tlb, exec) + idx * std::mem::size_of::<cpu::mem::TlbEntry>()) as u64;
        // The block's region when it has one (its code runs the block first).
        let (code, ins, links) = self.entry(insns);
        let chain = cpu::interp::chains(&insns[insns.len() - 1]) as u64;
        let len_chain = self.recorded_len(insns) | chain << 32;
        let fill = |l: &Link| {
            l.rip.set(st.rip);
            l.page.set(lin & !0xfff);
            l.tlb_off.set(tlb_off);
            l.phys.set(e.phys);
            l.code.set(code);
            l.insns.set(ins);
            l.links.set(links);
            l.len.set(self.len as u64);
            l.len_chain.set(len_chain);
            l.epoch.set(epoch);
        };
        if let Some(k) = k {
            fill(&slots[k]);
        }
        // The indirect-branch target cache too (`dispatch.rs`): the same link, keyed by the RIP
        // and the rest of the interpreter's block key, for any block whose end jumps here.
        fill(self.ibtc.entry(st.rip, st.sreg(cpu::state::Seg::Cs).base, st.code_bits()));
        self.links_made.set(self.links_made.get() + 1);
    }
}

impl JitBlock {
    /// This block's length as a link into it tells region recording (`Outcome::next_len_chain`,
    /// `region::Slot::record`), which takes the link's instructions (`entry`) for the block's. They
    /// are unless the block runs as a saved region entered at another member than its first
    /// (`region::Shared::saved_region` keeps the saved order): then 0, which the recording skips.
    /// Taking the first `len` instructions of another member would record a block that does not
    /// exist, ending mid-block, and a region of it would leave there every time (when that region
    /// is formed depends on when translations arrive, so it made the set of blocks a run decodes
    /// depend on the host's timing).
    fn recorded_len(&self, insns: &[Insn]) -> u64 {
        match &*self.region.state.borrow() {
            region::State::Ready(r) if r.insns.first().map(|i| i.i.ip()) != Some(insns[0].i.ip()) => 0,
            _ => self.len as u64,
        }
    }

    /// Whether regions wait to be sent to the compile thread or placed (`Backend` polls then).
    pub(crate) fn region_work(&self) -> bool {
        self.region.shared.busy()
    }

    /// The code, instructions and link slots a run of this block starts with: its region's when
    /// it has one, else its own.
    fn entry(&self, insns: &[Insn]) -> (usize, usize, usize) {
        match &*self.region.state.borrow() {
            region::State::Ready(r) => {
                (r.code.as_ptr() as usize, r.insns.as_ptr() as usize, r.links.as_ptr() as usize)
            }
            _ => {
                (self.code.as_ptr() as usize, insns.as_ptr() as usize, &*self.links as *const Exits as usize)
            }
        }
    }
}

impl CompiledBlock for JitBlock {
    fn run(&self, ctx: &mut Ctx<'_>, insns: &[Insn], loop_limit: u64, link_from: usize) -> RunEnd {
        if insns.len() != self.len {
            // Not the block this code was made for (the interpreter never does this): the code
            // passes `insns[k]` for k < len to handlers, so run the handlers instead.
            return RunEnd { fault: cpu::interp::run_insns(ctx, insns), ..RunEnd::default() };
        }
        debug_assert_eq!(insns[0].next_rip, self.first_ip, "a translation run on another block");
        debug_assert!(!ctx.st.lazy.is_pending(), "a lazy flag state outside the block runner");
        // What a normal end records of this block (before `link_into` lets links reach it).
        if self.links.insns.get() != insns.as_ptr() as usize {
            self.links.insns.set(insns.as_ptr() as usize);
            let chain = cpu::interp::chains(&insns[insns.len() - 1]) as u64;
            self.links.len_chain.set(self.len as u64 | chain << 32);
            // The RIPs the code selects its slots by, a function of the instructions as the
            // code is (`Jit::build`): what `link_into` may write in each.
            let fixed = static_exits(insns);
            for (k, l) in self.links.slots.iter().enumerate() {
                l.fixed.set(fixed.and_then(|f| f[k]));
            }
        }
        if link_from != 0 && loop_limit != 0 {
            // SAFETY: `CompiledBlock::run`'s contract: `link_from` comes from the run just before
            // in the same chain, during which no block was dropped.
            unsafe { self.link_into(link_from, ctx, insns) };
        }
        let mut out = Outcome {
            loop_limit,
            epoch: self.epoch.get(),
            helpers: helper_table(),
            ibtc: self.ibtc.as_ptr(),
            ctx: ctx as *mut Ctx<'_> as usize,
            ..Outcome::default()
        };

        let icount0 = ctx.st.icount;
        // SAFETY: `tramp` is the code `trampoline` generated with the `Trampoline` signature,
        // mapped executable while this block (which holds it) lives.
        let tramp = unsafe { std::mem::transmute::<*const u8, Trampoline>(self.tramp.as_ptr()) };
        let (code, ins, links0) = self.entry(insns);
        let (mut f, mut ins, mut links) = (code, ins as *const Insn, links0 as *const Link);
        // Cycles of links back to this block (region selection, `region.rs`): the blocks run since
        // it last ran (`path[0]` is this one; `pn == usize::MAX`: not recording).
        let mut collecting = self.region.collecting();
        let me = self.code.as_ptr() as usize;
        let mut path = [(0usize, 0usize); region::MAX_MEMBERS];
        let mut pn = if collecting { 1 } else { usize::MAX };
        let mut recorded = 0u32;
        let mut followed = 0u64;
        let status = loop {
            // The links that come back here (`Outcome::stop_xor`): every one while a cycle's
            // path is recorded, those into this block while cycles are counted, else none (the
            // chain then runs by tail calls until it leaves generated code).
            (out.stop_xor, out.stop_max) = match (collecting, pn) {
                _ if !self.tail => (0, u64::MAX),
                (false, _) => (0, 0),
                (true, usize::MAX) => (me as u64, 0),
                (true, _) => (0, u64::MAX),
            };
            // SAFETY: `f` is the code of a block (or region) of `n` instructions at `ins` with its
            // slots at `links` (this block's, or those a `Link` named: a live block's, checked by
            // the epoch in generated code), generated with `block_sig` by `Jit::build` or
            // `region::build`, mapped while that translation lives. It reads and writes only `ctx`
            // (the fields named by `offset_of!`), the `CpuState` it points to (offsets checked in
            // `cpu::offsets`), the TLB, `out` and the slots, passes `ins[k]` for k < n to
            // `call_handler`, and tail-calls only successors named by live links (the same holds
            // of them).
            let status = unsafe { tramp(ctx as *mut Ctx<'_> as *mut c_void, ins, &mut out, links, f) };
            if status != ST_LINK {
                break status;
            }
            followed += 1;
            if collecting {
                if out.next_code == me {
                    if pn <= region::MAX_MEMBERS && recorded < region::RECORDS {
                        // SAFETY: the blocks named were run in this chain: no block has been
                        // dropped since.
                        unsafe { self.region.record(ctx.st, insns, &path[1..pn]) };
                        recorded += 1;
                    }
                    pn = if recorded < region::RECORDS { 1 } else { usize::MAX };
                    if self.region.count(1) {
                        // The region is placed: this block runs next, as its region (no code is
                        // on the stack now). Links into it are remade in the next epoch.
                        self.epoch.set(self.epoch.get() + 1);
                        (out.next_code, out.next_insns, out.next_links) = self.entry(insns);
                        collecting = false;
                    }
                } else if pn < region::MAX_MEMBERS {
                    path[pn] = (out.next_insns, out.next_len_chain as u32 as usize);
                    pn += 1;
                } else {
                    pn = usize::MAX;
                }
            }
            f = out.next_code;
            ins = out.next_insns as *const Insn;
            links = out.next_links as *const Link;
            out.last_insns = out.next_insns;
            out.last_links = out.next_links;
            out.last_len_chain = out.next_len_chain;
            out.last_start = ctx.st.icount;
        };
        // The block that ran last: the one entered, or one a link led to, or the member of a
        // region it left from.
        let last = (out.last_insns != 0).then_some(LastBlock {
            start_icount: out.last_start,
            insns: out.last_insns as *const Insn,
            len: out.last_len_chain as u32 as usize,
            chain: out.last_len_chain >> 32 != 0,
        });
        let link_from = if out.last_links != 0 { out.last_links } else { links0 };
        followed += out.followed;
        // The chain's last lazy flag state, computed before anything else sees the state.
        ctx.st.settle_flags();
        if status == ST_RESUME {
            // A slow path left the last block's code before instruction `resume`, everything
            // stored: the rest of that block, as the interpreter's loop runs it.
            let last = last.as_ref().expect("a block's function records itself where it leaves");
            // SAFETY: `LastBlock::insns` names the instructions of a block that ran in this
            // chain (no block has been dropped since), `len` of them.
            let all = unsafe { std::slice::from_raw_parts(last.insns, last.len) };
            let before = ctx.st.icount;
            out.fault = cpu::interp::run_insns(ctx, &all[out.resume..]);
            // Not inline: counted as handler calls are.
            out.called += ctx.st.icount.wrapping_sub(before);
            self.ibtc.resumes.set(self.ibtc.resumes.get() + 1);
        }
        let flow = &self.ibtc;
        flow.followed.set(flow.followed.get() + followed);
        flow.tail.set(flow.tail.get() + out.followed);
        flow.entries.set(flow.entries.get() + 1);
        if let Some(p) = out.panic {
            resume_unwind(p);
        }

        let retired = ctx.st.icount.wrapping_sub(icount0);
        self.inline_retired.set(self.inline_retired.get() + retired.saturating_sub(out.called));
        debug_assert!(status == ST_RESUME || (status == ST_EXIT) == out.fault.is_some());
        RunEnd { fault: out.fault, last, link_from }
    }
}

#[cfg(test)]
mod tests;
