//! String instructions: MOVS, CMPS, STOS, LODS, SCAS, INS, OUTS in every element size, with
//! REP/REPE/REPNE.
//!
//! Addressing: the address size (`Insn::asize`) selects SI/DI/CX, ESI/EDI/ECX or RSI/RDI/RCX; the source
//! is `seg:rSI` (DS unless overridden), the destination always `ES:rDI`. DF selects the direction.
//!
//! Restartability: each iteration is all-or-nothing and rSI/rDI/rCX are updated after it completes, so
//! when iteration k faults the registers describe exactly the remaining work and RIP is still at the
//! instruction, as on hardware.
//!
//! Batching: a REP instruction runs up to [`MAX_ITERS`] iterations per handler call (one when TF is set,
//! since hardware single-steps each iteration). If work remains it stays on the instruction
//! (`next_rip = rip`) and ends the block, so the interpreter can check its budget and pending
//! interrupts and then re-executes the instruction, which resumes from the updated registers. It also
//! stops early as soon as a memory access goes to MMIO (`Ctx::break_block`) or, for INS/OUTS, when a
//! device asks the engine to stop; port accesses themselves (through `Ctx::io_in`/`io_out`, which sync
//! the devices' clock) do not end a batch, so REP INSW from a disk controller moves a whole sector per
//! call. The whole call retires as one instruction.
//!
//! Forward REP MOVS/STOS between RAM pages additionally take a fast path that copies or fills up to a
//! page at a time through host pointers; it is used only where it is indistinguishable from the
//! element-by-element loop (same segment checks, RAM that is neither MMIO nor ROM nor a decoded-code
//! page, and element-sequential semantics for overlapping copies).

use super::ops::*;
use super::system::check_io;
use super::{Handler, Insn};
use crate::fault::Fault;
use crate::mem::Ctx;
use crate::paging::AccessKind;
use crate::regs::{size_mask, sreg};
use crate::state::{Quirks, Seg, flags};
use iced_x86::{Code, Register};

/// Most iterations one call of a REP string handler performs before yielding (so the interpreter's
/// instruction budget and interrupt checks run at least every this many elements).
pub const MAX_ITERS: u64 = 4096;

/// Handlers of this family.
pub fn lookup(code: Code) -> Option<Handler> {
    use Code as C;
    Some(match code {
        C::Movsb_m8_m8 => movs::<1>,
        C::Movsw_m16_m16 => movs::<2>,
        C::Movsd_m32_m32 => movs::<4>,
        C::Movsq_m64_m64 => movs::<8>,
        C::Cmpsb_m8_m8 => cmps::<1>,
        C::Cmpsw_m16_m16 => cmps::<2>,
        C::Cmpsd_m32_m32 => cmps::<4>,
        C::Cmpsq_m64_m64 => cmps::<8>,
        C::Stosb_m8_AL => stos::<1>,
        C::Stosw_m16_AX => stos::<2>,
        C::Stosd_m32_EAX => stos::<4>,
        C::Stosq_m64_RAX => stos::<8>,
        C::Lodsb_AL_m8 => lods::<1>,
        C::Lodsw_AX_m16 => lods::<2>,
        C::Lodsd_EAX_m32 => lods::<4>,
        C::Lodsq_RAX_m64 => lods::<8>,
        C::Scasb_AL_m8 => scas::<1>,
        C::Scasw_AX_m16 => scas::<2>,
        C::Scasd_EAX_m32 => scas::<4>,
        C::Scasq_RAX_m64 => scas::<8>,
        C::Insb_m8_DX => ins::<1>,
        C::Insw_m16_DX => ins::<2>,
        C::Insd_m32_DX => ins::<4>,
        C::Outsb_DX_m8 => outs::<1>,
        C::Outsw_DX_m16 => outs::<2>,
        C::Outsd_DX_m32 => outs::<4>,
        _ => return None,
    })
}

const RCX: usize = 1;
const RSI: usize = 6;
const RDI: usize = 7;

/// How a repeat prefix ends the loop besides the count reaching zero.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rep {
    /// No prefix: one iteration, no count.
    None,
    /// REP (F3, or F2 on instructions without a ZF condition): count only.
    Plain,
    /// REPE/REPZ (CMPS/SCAS with F3): also stop when ZF = 0.
    WhileEqual,
    /// REPNE/REPNZ (CMPS/SCAS with F2): also stop when ZF = 1.
    WhileNotEqual,
}

/// The per-instruction addressing parameters.
#[derive(Clone, Copy)]
struct Str {
    /// Address size in bytes.
    asz: u32,
    /// Mask of the address size.
    amask: u64,
    /// Signed element step as a wrapping add (DF = 0: +size, DF = 1: -size).
    step: u64,
    /// Source segment (DS or the override).
    src: Seg,
}

impl Str {
    #[inline(always)]
    fn new(ctx: &Ctx<'_>, insn: &Insn, size: u32) -> Str {
        let asz = insn.asize as u32;
        let step = if ctx.st.rflags & flags::DF != 0 { (size as u64).wrapping_neg() } else { size as u64 };
        let src = match insn.i.segment_prefix() {
            Register::None => Seg::Ds,
            r => sreg(r).unwrap_or(Seg::Ds),
        };
        // In 64-bit mode CS/DS/ES/SS overrides are ignored: only FS and GS change anything (and an SS
        // override does not turn a non-canonical #GP into #SS, as measured on this host's CPU).
        let src = if ctx.st.mode() == crate::state::Mode::Long64 && !matches!(src, Seg::Fs | Seg::Gs) {
            Seg::Ds
        } else {
            src
        };
        Str { asz, amask: size_mask(asz), step, src }
    }

    #[inline(always)]
    fn si(&self, ctx: &Ctx<'_>) -> u64 {
        ctx.st.gpr[RSI] & self.amask
    }

    #[inline(always)]
    fn di(&self, ctx: &Ctx<'_>) -> u64 {
        ctx.st.gpr[RDI] & self.amask
    }

    /// Advances rSI or rDI by one element (wrapping at the address size; a 16-bit update keeps the
    /// upper bits, a 32-bit one zero-extends).
    #[inline(always)]
    fn advance(&self, ctx: &mut Ctx<'_>, r: usize) {
        let v = ctx.st.gpr[r].wrapping_add(self.step) & self.amask;
        ctx.st.set_reg(r, self.asz, v);
    }
}

fn rep_kind(insn: &Insn, conditional: bool) -> Rep {
    let (f3, f2) = (insn.i.has_rep_prefix(), insn.i.has_repne_prefix());
    match (conditional, f3, f2) {
        (_, false, false) => Rep::None,
        (false, _, _) => Rep::Plain,
        // With both prefixes the last one wins; iced reports only that one.
        (true, true, _) => Rep::WhileEqual,
        (true, false, true) => Rep::WhileNotEqual,
    }
}

/// Which of rSI/rDI a string instruction with a zero count still rewrites with 32-bit address size
/// (measured on Intel hardware: the upper halves of RCX, and of RSI/RDI for MOVS and RDI for STOS, are
/// cleared even though no iteration runs).
#[derive(Clone, Copy)]
struct ZeroCountTouches {
    si: bool,
    di: bool,
}

/// Leaves RIP on the instruction so it resumes where it stopped, and ends the block.
#[inline]
fn stay(ctx: &mut Ctx<'_>) {
    ctx.next_rip = ctx.st.rip;
    ctx.break_block = true;
    // The instruction is between iterations: an interrupt or a trap-class #DB taken now pushes RF = 1
    // (SDM Vol. 3B 17.3.1.1), and resuming it must not report its instruction breakpoint again. The
    // interpreter clears RF when the instruction resumes.
    ctx.st.rflags |= flags::RF;
}

/// Runs the REP loop around `body` (one iteration, which updates rSI/rDI itself on success). `fast`, if
/// given, may complete further iterations in bulk and returns how many (bounded by its argument).
#[inline(always)]
fn rep_loop(
    ctx: &mut Ctx<'_>,
    s: &Str,
    rep: Rep,
    zc: ZeroCountTouches,
    io: bool,
    mut body: impl FnMut(&mut Ctx<'_>) -> Result<(), Fault>,
    mut fast: impl FnMut(&mut Ctx<'_>, u64) -> u64,
) -> Result<(), Fault> {
    let mut count = ctx.st.gpr[RCX] & s.amask;
    if count == 0 {
        // Intel zero-extends the registers even with nothing to do; AMD leaves them alone.
        if s.asz == 4 && ctx.st.quirks == Quirks::Intel {
            ctx.st.set_reg(RCX, 4, 0);
            if zc.si {
                let v = ctx.st.gpr[RSI];
                ctx.st.set_reg(RSI, 4, v);
            }
            if zc.di {
                let v = ctx.st.gpr[RDI];
                ctx.st.set_reg(RDI, 4, v);
            }
        }
        return Ok(());
    }
    if s.asz == 4 && ctx.st.quirks == Quirks::Intel {
        // On Intel a 32-bit address size zero-extends the registers the instruction uses before the
        // first iteration: a fault in that iteration already shows them truncated (measured on an Intel
        // host). AMD writes them only as iterations complete: a fault in the first leaves them whole
        // (measured on an AMD host).
        let c = ctx.st.gpr[RCX];
        ctx.st.set_reg(RCX, 4, c);
        if zc.si {
            let v = ctx.st.gpr[RSI];
            ctx.st.set_reg(RSI, 4, v);
        }
        if zc.di {
            let v = ctx.st.gpr[RDI];
            ctx.st.set_reg(RDI, 4, v);
        }
    }
    let limit = if ctx.st.rflags & flags::TF != 0 { 1 } else { MAX_ITERS };
    let mut done = 0u64;
    // On Intel CPUs the arithmetic flags become visible only when the instruction completes: a fault
    // in a later iteration reports them as they were when the instruction started, not those of the
    // completed iterations (REPE/REPNE CMPS/SCAS; measured on an Intel host). A batch that pauses
    // restores them too, so the resumed instruction still starts from the original flags. AMD CPUs
    // show the flags of the last completed iteration (measured on an AMD host).
    let flags_at_start = ctx.st.rflags;
    let intel = ctx.st.quirks == Quirks::Intel;
    let restore = |ctx: &mut Ctx<'_>| {
        if intel {
            ctx.st.rflags = flags_at_start;
        }
    };
    loop {
        if let Err(e) = body(ctx) {
            restore(ctx);
            return Err(e);
        }
        count = count.wrapping_sub(1) & s.amask;
        ctx.st.set_reg(RCX, s.asz, count);
        done += 1;
        if count == 0 {
            return Ok(());
        }
        match rep {
            Rep::WhileEqual if !ctx.flag(flags::ZF) => return Ok(()),
            Rep::WhileNotEqual if ctx.flag(flags::ZF) => return Ok(()),
            _ => {}
        }
        // A debug condition met by this iteration (data or I/O breakpoint) is reported right after it.
        if done >= limit || ctx.break_block || ctx.mmu.debug.pending != 0 || (io && ctx.bus.stop_requested())
        {
            restore(ctx);
            stay(ctx);
            return Ok(());
        }
        let k = fast(ctx, count.min(limit - done));
        if k > 0 {
            count = count.wrapping_sub(k);
            ctx.st.set_reg(RCX, s.asz, count);
            done += k;
            if count == 0 {
                return Ok(());
            }
            if done >= limit {
                restore(ctx);
                stay(ctx);
                return Ok(());
            }
        }
    }
}

fn no_fast(_: &mut Ctx<'_>, _: u64) -> u64 {
    0
}

// ------------------------------------------------------------------------------------------ MOVS

#[inline(always)]
fn movs_once<const N: u32>(ctx: &mut Ctx<'_>, s: &Str) -> Result<(), Fault> {
    let v = ctx.read_mem(s.src, s.si(ctx), N)?;
    ctx.write_mem(Seg::Es, s.di(ctx), N, v)?;
    s.advance(ctx, RSI);
    s.advance(ctx, RDI);
    Ok(())
}

fn movs<const N: u32>(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let s = Str::new(ctx, insn, N);
    let rep = rep_kind(insn, false);
    if rep == Rep::None {
        return movs_once::<N>(ctx, &s);
    }
    let zc = ZeroCountTouches { si: true, di: true };
    rep_loop(ctx, &s, rep, zc, false, |c| movs_once::<N>(c, &s), |c, max| fast_movs::<N>(c, &s, max))
}

// ------------------------------------------------------------------------------------------ STOS

#[inline(always)]
fn stos_once<const N: u32>(ctx: &mut Ctx<'_>, s: &Str) -> Result<(), Fault> {
    let v = ctx.st.gpr[0] & size_mask(N);
    ctx.write_mem(Seg::Es, s.di(ctx), N, v)?;
    s.advance(ctx, RDI);
    Ok(())
}

fn stos<const N: u32>(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let s = Str::new(ctx, insn, N);
    let rep = rep_kind(insn, false);
    if rep == Rep::None {
        return stos_once::<N>(ctx, &s);
    }
    let zc = ZeroCountTouches { si: false, di: true };
    rep_loop(ctx, &s, rep, zc, false, |c| stos_once::<N>(c, &s), |c, max| fast_stos::<N>(c, &s, max))
}

// ------------------------------------------------------------------------------------------ LODS

#[inline(always)]
fn lods_once<const N: u32>(ctx: &mut Ctx<'_>, s: &Str) -> Result<(), Fault> {
    let v = ctx.read_mem(s.src, s.si(ctx), N)?;
    ctx.st.set_reg(0, N, v);
    s.advance(ctx, RSI);
    Ok(())
}

fn lods<const N: u32>(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let s = Str::new(ctx, insn, N);
    let rep = rep_kind(insn, false);
    if rep == Rep::None {
        return lods_once::<N>(ctx, &s);
    }
    let zc = ZeroCountTouches { si: false, di: false };
    rep_loop(ctx, &s, rep, zc, false, |c| lods_once::<N>(c, &s), no_fast)
}

// ------------------------------------------------------------------------------------------ CMPS

#[inline(always)]
fn cmps_once<const N: u32>(ctx: &mut Ctx<'_>, s: &Str, src_first: bool) -> Result<(), Fault> {
    // CPUs read the ES:rDI operand first: when both fault, the #PF reports ES:rDI (measured by the
    // differential tester), but for `src_first` ([`cmps`]).
    let (a, b) = if src_first {
        let a = ctx.read_mem(s.src, s.si(ctx), N)?;
        (a, ctx.read_mem(Seg::Es, s.di(ctx), N)?)
    } else {
        let b = ctx.read_mem(Seg::Es, s.di(ctx), N)?;
        (ctx.read_mem(s.src, s.si(ctx), N)?, b)
    };
    let r = a.wrapping_sub(b);
    ctx.set_arith_flags(flags_sub(a, b, 0, r, N));
    s.advance(ctx, RSI);
    s.advance(ctx, RDI);
    Ok(())
}

fn cmps<const N: u32>(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let s = Str::new(ctx, insn, N);
    let rep = rep_kind(insn, true);
    if rep == Rep::None {
        return cmps_once::<N>(ctx, &s, false);
    }
    // AMD CPUs read the source first in a REPE CMPSB, and only there (measured on an AMD host).
    let src_first = N == 1 && rep == Rep::WhileEqual && ctx.st.quirks == Quirks::Amd;
    let zc = ZeroCountTouches { si: false, di: false };
    rep_loop(ctx, &s, rep, zc, false, |c| cmps_once::<N>(c, &s, src_first), no_fast)
}

// ------------------------------------------------------------------------------------------ SCAS

#[inline(always)]
fn scas_once<const N: u32>(ctx: &mut Ctx<'_>, s: &Str) -> Result<(), Fault> {
    let a = ctx.st.gpr[0] & size_mask(N);
    let b = ctx.read_mem(Seg::Es, s.di(ctx), N)?;
    let r = a.wrapping_sub(b);
    ctx.set_arith_flags(flags_sub(a, b, 0, r, N));
    s.advance(ctx, RDI);
    Ok(())
}

fn scas<const N: u32>(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    let s = Str::new(ctx, insn, N);
    let rep = rep_kind(insn, true);
    if rep == Rep::None {
        return scas_once::<N>(ctx, &s);
    }
    let zc = ZeroCountTouches { si: false, di: false };
    rep_loop(ctx, &s, rep, zc, false, |c| scas_once::<N>(c, &s), no_fast)
}

// ------------------------------------------------------------------------------------------ INS/OUTS

/// INS: the destination is checked for writing before the port is read, so a faulting iteration has
/// no device side effect.
#[inline(always)]
fn ins_once<const N: u32>(ctx: &mut Ctx<'_>, s: &Str, port: u16) -> Result<(), Fault> {
    let lin = ctx.seg_lin(Seg::Es, s.di(ctx), N, AccessKind::Write)?;
    ctx.check_alignment(lin, N)?;
    ctx.probe_write(lin, N)?;
    let mmio = ctx.break_block;
    let v = ctx.io_in(port, N as u8);
    // The port access asks to end the block, which the handler does when it returns anyway; undo it
    // here so the REP loop only stops early for a memory access that went to MMIO.
    ctx.break_block = mmio;
    ctx.write_lin(lin, N, v as u64 & size_mask(N))?;
    s.advance(ctx, RDI);
    Ok(())
}

fn ins<const N: u32>(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    port_string::<N>(ctx, insn, ins_once::<N>)
}

#[inline(always)]
fn outs_once<const N: u32>(ctx: &mut Ctx<'_>, s: &Str, port: u16) -> Result<(), Fault> {
    let v = ctx.read_mem(s.src, s.si(ctx), N)?;
    let mmio = ctx.break_block;
    ctx.io_out(port, N as u8, v as u32);
    // As in INS: only an MMIO source read (not the port access) stops the REP batch early.
    ctx.break_block = mmio;
    s.advance(ctx, RSI);
    Ok(())
}

fn outs<const N: u32>(ctx: &mut Ctx<'_>, insn: &Insn) -> Result<(), Fault> {
    port_string::<N>(ctx, insn, outs_once::<N>)
}

/// INS/OUTS: the I/O permission check (once, and not at all for a zero REP count), then one element or
/// the REP loop; the block always ends after a port instruction.
#[inline(always)]
fn port_string<const N: u32>(
    ctx: &mut Ctx<'_>,
    insn: &Insn,
    once: fn(&mut Ctx<'_>, &Str, u16) -> Result<(), Fault>,
) -> Result<(), Fault> {
    let s = Str::new(ctx, insn, N);
    let rep = rep_kind(insn, false);
    let port = ctx.st.gpr[2] as u16;
    let r = if rep == Rep::None {
        check_io(ctx, port, N)?;
        once(ctx, &s, port)
    } else {
        if ctx.st.gpr[RCX] & s.amask != 0 {
            check_io(ctx, port, N)?;
        }
        let zc = ZeroCountTouches { si: false, di: false };
        rep_loop(ctx, &s, rep, zc, true, |c| once(c, &s, port), no_fast)
    };
    ctx.break_block = true;
    r
}

// ------------------------------------------------------------------------------------------ fast path

/// How many whole `n`-byte elements fit from offset `off` before the address size wraps.
#[inline(always)]
fn elems_before_wrap(off: u64, amask: u64, n: u32) -> u64 {
    let left = amask - (off & amask); // bytes after the first one
    if left == u64::MAX { u64::MAX } else { (left + 1) / n as u64 }
}

/// A host pointer to the byte at linear `lin` for `kind` (Read or Write), if it is plain RAM that may
/// be accessed directly: translated through the TLB with the normal permission checks (so a write
/// translation sets the dirty bit), and, for writes, not a page that holds decoded code.
#[inline]
fn host_ptr(ctx: &mut Ctx<'_>, lin: u64, kind: AccessKind) -> Option<*mut u8> {
    if ctx.mmu.debug.data {
        // Data breakpoints are matched per access: the element loop does that.
        return None;
    }
    let phys = ctx.lin_to_phys(lin, kind).ok()?;
    let page = phys & !0xfff;
    let write = kind == AccessKind::Write;
    if write && ctx.mmu.code_pages.contains(&page) {
        return None;
    }
    let p = ctx.bus.ram_page(page, write)?;
    // `wrapping_add` keeps this free of `unsafe`; the offset is < 4096, inside the page.
    Some(p.as_ptr().wrapping_add((phys & 0xfff) as usize))
}

/// Elements of a forward REP STOS/MOVS run starting at `off` in `seg` that stay inside one linear page
/// and do not wrap the address size, capped at `max`; with the linear address of the first one. `None`
/// if the run is not usable (a segment check fails: the slow path then raises the fault precisely).
#[inline]
fn page_run(
    ctx: &mut Ctx<'_>,
    s: &Str,
    seg: Seg,
    off: u64,
    n: u32,
    max: u64,
    kind: AccessKind,
) -> Option<(u64, u64)> {
    let lin = ctx.seg_lin(seg, off, n, kind).ok()?;
    let in_page = (0x1000 - (lin & 0xfff)) / n as u64;
    let k = max.min(in_page).min(elems_before_wrap(off, s.amask, n));
    if k == 0 {
        return None;
    }
    // The whole run must pass the segment checks (limit, expand-down), not just its first element.
    ctx.seg_lin(seg, off, (k * n as u64) as u32, kind).ok()?;
    Some((lin, k))
}

/// Whether the fast path may be used at all: forward direction and no alignment checking (which the
/// element loop would apply per access).
#[inline(always)]
fn fast_ok(ctx: &Ctx<'_>, s: &Str, n: u32) -> bool {
    s.step == n as u64 && !(ctx.st.cpl == 3 && ctx.st.rflags & flags::AC != 0 && n > 1)
}

/// REP STOS fast path: fills up to `max` elements within the current destination page.
fn fast_stos<const N: u32>(ctx: &mut Ctx<'_>, s: &Str, max: u64) -> u64 {
    if !fast_ok(ctx, s, N) {
        return 0;
    }
    let di = s.di(ctx);
    let Some((lin, k)) = page_run(ctx, s, Seg::Es, di, N, max, AccessKind::Write) else {
        return 0;
    };
    let Some(dst) = host_ptr(ctx, lin, AccessKind::Write) else {
        return 0;
    };
    let bytes = (k * N as u64) as usize;
    let v = (ctx.st.gpr[0] & size_mask(N)).to_le_bytes();
    if N == 1 {
        // SAFETY: `dst` points into a 4 KiB RAM page handed out by the bus for writing (valid for the
        // duration of this handler), and `page_run` limited the run to the bytes left in that page.
        unsafe { std::ptr::write_bytes(dst, v[0], bytes) };
    } else {
        for i in 0..k as usize {
            // SAFETY: as above; element `i` occupies bytes `i*N .. i*N+N` of the run, inside the page.
            unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), dst.add(i * N as usize), N as usize) };
        }
    }
    let nd = di.wrapping_add(bytes as u64) & s.amask;
    ctx.st.set_reg(RDI, s.asz, nd);
    k
}

/// REP MOVS fast path: copies up to `max` elements that stay within the current source and destination
/// pages.
fn fast_movs<const N: u32>(ctx: &mut Ctx<'_>, s: &Str, max: u64) -> u64 {
    if !fast_ok(ctx, s, N) {
        return 0;
    }
    let si = s.si(ctx);
    let di = s.di(ctx);
    let Some((slin, k1)) = page_run(ctx, s, s.src, si, N, max, AccessKind::Read) else {
        return 0;
    };
    let Some((dlin, k)) = page_run(ctx, s, Seg::Es, di, N, k1, AccessKind::Write) else {
        return 0;
    };
    let Some(src) = host_ptr(ctx, slin, AccessKind::Read) else {
        return 0;
    };
    let Some(dst) = host_ptr(ctx, dlin, AccessKind::Write) else {
        return 0;
    };
    let bytes = (k * N as u64) as usize;
    let (sa, da) = (src as usize, dst as usize);
    if da >= sa.wrapping_add(bytes) || sa >= da.wrapping_add(bytes) {
        // SAFETY: both ranges lie inside RAM pages handed out by the bus (`page_run` kept them within
        // one page each) and they do not overlap, as just checked.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, bytes) };
    } else {
        // Overlapping (e.g. the classic `dst = src + 1` pattern fill): element-sequential semantics,
        // each element read whole before it is written, exactly like the slow loop.
        for i in 0..k as usize {
            let o = i * N as usize;
            // SAFETY: element `i` of each run is inside its page as above; `copy` allows the source
            // and destination elements to overlap.
            unsafe { std::ptr::copy(src.add(o), dst.add(o), N as usize) };
        }
    }
    ctx.st.set_reg(RSI, s.asz, si.wrapping_add(bytes as u64) & s.amask);
    ctx.st.set_reg(RDI, s.asz, di.wrapping_add(bytes as u64) & s.amask);
    k
}

/// Single-instruction execution for this family's and its neighbours' unit tests: decodes the
/// instruction at RIP the way the interpreter does and calls its handler directly, so tests can look
/// at the state right after a fault or a yielded REP batch.
#[cfg(test)]
pub(crate) mod testkit {
    use super::super::{Insn, handler_for};
    use crate::fault::Fault;
    use crate::mem::{Ctx, Mmu};
    use crate::state::{CpuState, Seg};
    use crate::testutil::{CODE, TestBus, TestMode, cpu_in};
    use iced_x86::{Decoder, DecoderOptions};

    /// A CPU, its bus and its TLB.
    pub struct Machine {
        pub st: CpuState,
        pub bus: TestBus,
        pub mmu: Mmu,
    }

    /// What one handler call did besides its result.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Stepped {
        /// The handler left RIP on the instruction (a REP batch that will resume).
        pub stayed: bool,
        /// The handler ended the block.
        pub break_block: bool,
    }

    fn address_size(bytes: &[u8], bits: u32) -> u8 {
        let a67 = bytes
            .iter()
            .take_while(|b| {
                matches!(b, 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65)
            })
            .any(|&b| b == 0x67);
        match (bits, a67) {
            (16, false) | (32, true) => 2,
            (16, true) | (32, false) | (64, true) => 4,
            _ => 8,
        }
    }

    impl Machine {
        /// A machine in `mode` with `code` at [`CODE`].
        pub fn new(mode: TestMode, code: &[u8]) -> Machine {
            let mut bus = TestBus::default();
            let st = cpu_in(mode, &mut bus);
            bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
            Machine { st, bus, mmu: Mmu::default() }
        }

        /// Writes `b` at physical `a`.
        pub fn poke(&mut self, a: u64, b: &[u8]) {
            self.bus.ram[a as usize..a as usize + b.len()].copy_from_slice(b);
        }

        /// Reads `n` bytes at physical `a`.
        pub fn peek(&self, a: u64, n: usize) -> Vec<u8> {
            self.bus.ram[a as usize..a as usize + n].to_vec()
        }

        /// Little-endian value of `n` bytes at physical `a`.
        pub fn peek_le(&self, a: u64, n: usize) -> u64 {
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&self.bus.ram[a as usize..a as usize + n]);
            u64::from_le_bytes(b)
        }

        /// Decodes the instruction at CS:RIP (code is read physically: tests identity-map it).
        pub fn decode(&self) -> Insn {
            let bits = self.st.code_bits();
            let lin = (self.st.sreg(Seg::Cs).base + self.st.rip) as usize;
            let bytes = &self.bus.ram[lin..lin + 15];
            let mut d = Decoder::with_ip(bits, bytes, self.st.rip, DecoderOptions::NONE);
            let i = d.decode();
            let handler = handler_for(i.code());
            let asize = address_size(&bytes[..i.len()], bits);
            let ip_mask = if bits == 64 {
                u64::MAX
            } else if bits == 32 {
                0xffff_ffff
            } else {
                0xffff
            };
            Insn::new(i, handler, asize, i.next_ip() & ip_mask)
        }

        /// Runs the handler of `insn` once; on success moves RIP as the interpreter does.
        pub fn exec(&mut self, insn: &Insn) -> Result<Stepped, Fault> {
            let mut ctx = Ctx {
                st: &mut self.st,
                bus: &mut self.bus,
                mmu: &mut self.mmu,
                next_rip: insn.next_rip,
                break_block: false,
            };
            (insn.handler)(&mut ctx, insn)?;
            let stayed = ctx.next_rip == ctx.st.rip;
            let break_block = ctx.break_block;
            ctx.st.rip = ctx.next_rip;
            Ok(Stepped { stayed, break_block })
        }

        /// Decodes and executes the instruction at RIP once.
        pub fn step(&mut self) -> Result<Stepped, Fault> {
            let insn = self.decode();
            self.exec(&insn)
        }

        /// Steps the instruction at RIP until it moves on (REP batches), at most `max` calls; returns
        /// the number of calls.
        pub fn finish(&mut self, max: usize) -> Result<usize, Fault> {
            let rip = self.st.rip;
            for n in 1..=max {
                self.step()?;
                if self.st.rip != rip {
                    return Ok(n);
                }
            }
            Ok(max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MAX_ITERS;
    use super::testkit::{Machine, Stepped};
    use super::{RCX, RDI, RSI};
    use crate::fault::Fault;
    use crate::interp::Exit;
    use crate::state::{Quirks, Seg, flags};
    use crate::testutil::*;
    use iced_x86::code_asm::{byte_ptr, cr2, eax, ecx, esi, qword_ptr, r15, rax, rdi, rsi, rsp};

    const SRC: u64 = 0x20000;
    const DST: u64 = 0x30000;

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(37).wrapping_add(seed)).collect()
    }

    /// Sets RSI/RDI/RCX and DF.
    fn regs(m: &mut Machine, si: u64, di: u64, cx: u64, df: bool) {
        m.st.gpr[6] = si;
        m.st.gpr[7] = di;
        m.st.gpr[1] = cx;
        if df {
            m.st.rflags |= flags::DF;
        } else {
            m.st.rflags &= !flags::DF;
        }
    }

    #[test]
    fn movs_every_size_mode_and_direction() {
        // (mode, bits, element size, count, DF)
        let modes = [(TestMode::Real, 16), (TestMode::Prot32, 32), (TestMode::Long64, 64)];
        for (mode, bits) in modes {
            for size in [1u64, 2, 4, 8] {
                if size == 8 && bits != 64 {
                    continue;
                }
                for df in [false, true] {
                    for count in [0u64, 1, 7, 300] {
                        let code = asm(bits, |a| match size {
                            1 => a.rep().movsb().unwrap(),
                            2 => a.rep().movsw().unwrap(),
                            4 => a.rep().movsd().unwrap(),
                            _ => a.rep().movsq().unwrap(),
                        });
                        let mut m = Machine::new(mode, &code);
                        let (src, dst) = if mode == TestMode::Real { (0x3000, 0x6000) } else { (SRC, DST) };
                        let span = (count * size) as usize;
                        m.poke(src - 0x1000, &pattern(0x3000, 5));
                        // Forward: start at the base; backward: start at the last element.
                        let back = if df && count > 0 { span as u64 - size } else { 0 };
                        regs(&mut m, src + back, dst + back, count, df);
                        let n = m.finish(10).unwrap();
                        assert_eq!(n, 1, "{mode:?} {size} {count}");
                        assert_eq!(m.st.rip, CODE + code.len() as u64, "{mode:?} {size} {count} {code:02x?}");
                        assert_eq!(
                            m.peek(dst, span),
                            m.peek(src, span),
                            "{mode:?} size {size} count {count} df {df}"
                        );
                        assert_eq!(m.peek(dst + span as u64, 4), vec![0; 4]);
                        assert_eq!(m.peek(dst - 4, 4), vec![0; 4]);
                        let delta = if df { (span as u64).wrapping_neg() } else { span as u64 };
                        assert_eq!(m.st.gpr[6], (src + back).wrapping_add(delta) & 0xffff_ffff);
                        assert_eq!(m.st.gpr[7], (dst + back).wrapping_add(delta) & 0xffff_ffff);
                        assert_eq!(m.st.gpr[1], 0);
                    }
                }
            }
        }
    }

    #[test]
    fn single_movs_lods_stos_without_rep() {
        let code = asm(32, |a| {
            a.movsw().unwrap();
            a.lodsd().unwrap();
            a.stosb().unwrap();
        });
        let mut m = Machine::new(TestMode::Prot32, &code);
        m.poke(SRC, &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66]);
        regs(&mut m, SRC, DST, 99, false);
        m.st.gpr[0] = 0xdead_beef_0000_0000;
        for _ in 0..3 {
            m.step().unwrap();
        }
        assert_eq!(m.peek(DST, 3), vec![0x11, 0x22, 0x33]);
        assert_eq!(m.st.gpr[0], 0x6655_4433);
        assert_eq!(m.st.gpr[6], SRC + 6);
        assert_eq!(m.st.gpr[7], DST + 3);
        assert_eq!(m.st.gpr[1], 99, "no REP: count untouched");
    }

    #[test]
    fn sixteen_bit_addresses_wrap_and_keep_upper_bits() {
        // Real mode, 16-bit addressing: SI runs 0xfffe, 0xffff, 0x0000, 0x0001 inside DS; the upper
        // halves of ESI/EDI/ECX are untouched.
        let code = asm(16, |a| a.rep().movsb().unwrap());
        let mut m = Machine::new(TestMode::Real, &code);
        m.st.sreg_mut(Seg::Ds).base = 0x20000;
        m.st.sreg_mut(Seg::Ds).selector = 0x2000;
        m.st.sreg_mut(Seg::Es).base = 0x40000;
        m.st.sreg_mut(Seg::Es).selector = 0x4000;
        m.poke(0x2fffe, &[1, 2]);
        m.poke(0x20000, &[3, 4]);
        regs(&mut m, 0x1234_fffe, 0x5678_0010, 0xabcd_0004, false);
        m.finish(2).unwrap();
        assert_eq!(m.peek(0x40010, 4), vec![1, 2, 3, 4]);
        assert_eq!(m.st.gpr[6], 0x1234_0002);
        assert_eq!(m.st.gpr[7], 0x5678_0014);
        assert_eq!(m.st.gpr[1], 0xabcd_0000);
    }

    #[test]
    fn address_size_prefix_selects_esi_edi_ecx() {
        // Real mode with a 0x67 prefix uses ESI/EDI/ECX; 32-bit code with 0x67 uses SI/DI/CX.
        let code = [0x67, 0xf3, 0xa4]; // a32 rep movsb
        let mut m = Machine::new(TestMode::Real, &code);
        m.poke(0x3000, &[9, 8, 7]);
        regs(&mut m, 0xffff_0000_0000_3000, 0x5000, 0x1_0000_0003, false);
        m.finish(2).unwrap();
        assert_eq!(m.peek(0x5000, 3), vec![9, 8, 7]);
        assert_eq!(m.st.gpr[6], 0x3003);
        assert_eq!(m.st.gpr[1], 0);

        let code = [0x67, 0xf3, 0xaa]; // a16 rep stosb
        let mut m = Machine::new(TestMode::Prot32, &code);
        m.st.gpr[0] = 0x5a;
        regs(&mut m, 0, 0x7777_fffe, 0x8888_0003, false);
        m.finish(2).unwrap();
        assert_eq!(m.peek(0xfffe, 2), vec![0x5a, 0x5a]);
        assert_eq!(m.peek(0, 1), vec![0x5a]);
        assert_eq!(m.st.gpr[7], 0x7777_0001);
        assert_eq!(m.st.gpr[1], 0x8888_0000);
    }

    #[test]
    fn stos_every_size_with_fast_path_across_pages() {
        for (mode, bits) in [(TestMode::Prot32, 32), (TestMode::Long64, 64)] {
            for size in [1u64, 2, 4, 8] {
                if size == 8 && bits != 64 {
                    continue;
                }
                for df in [false, true] {
                    let code = asm(bits, |a| match size {
                        1 => a.rep().stosb().unwrap(),
                        2 => a.rep().stosw().unwrap(),
                        4 => a.rep().stosd().unwrap(),
                        _ => a.rep().stosq().unwrap(),
                    });
                    let mut m = Machine::new(mode, &code);
                    let count = 5000u64; // more than one batch, several pages, odd start
                    let start = DST + 3;
                    let span = count * size;
                    let di = if df { start + span - size } else { start };
                    regs(&mut m, 0, di, count, df);
                    m.st.gpr[0] = 0x0102_0304_0506_0708;
                    let calls = m.finish(100).unwrap();
                    assert_eq!(calls as u64, count.div_ceil(MAX_ITERS), "{mode:?} {size} {df}");
                    let v = 0x0102_0304_0506_0708u64.to_le_bytes();
                    let got = m.peek(start, span as usize);
                    for (i, b) in got.iter().enumerate() {
                        assert_eq!(*b, v[i % size as usize], "{mode:?} size {size} df {df} byte {i}");
                    }
                    assert_eq!(m.peek(start - 1, 1), vec![0]);
                    assert_eq!(m.peek(start + span, 1), vec![0]);
                    let end = if df { di.wrapping_sub(span) } else { start + span };
                    assert_eq!(m.st.gpr[7], end);
                    assert_eq!(m.st.gpr[1], 0);
                }
            }
        }
    }

    #[test]
    fn overlapping_forward_copies_are_element_sequential() {
        // dst = src + d with d smaller than the copy: the element loop replicates the first element(s).
        for (size, d) in [(1u64, 1u64), (1, 3), (4, 2), (4, 4), (8, 3), (2, 1)] {
            let code = asm(64, |a| match size {
                1 => a.rep().movsb().unwrap(),
                2 => a.rep().movsw().unwrap(),
                4 => a.rep().movsd().unwrap(),
                _ => a.rep().movsq().unwrap(),
            });
            let mut m = Machine::new(TestMode::Long64, &code);
            let count = 700u64;
            let init = pattern(0x2000, 77);
            m.poke(SRC, &init);
            // Reference: element-by-element on a copy of memory.
            let mut mem = init.clone();
            for i in 0..count {
                let s = (i * size) as usize;
                let t = (i * size + d) as usize;
                let e: Vec<u8> = mem[s..s + size as usize].to_vec();
                mem[t..t + size as usize].copy_from_slice(&e);
            }
            regs(&mut m, SRC, SRC + d, count, false);
            m.finish(5).unwrap();
            assert_eq!(m.peek(SRC, 0x2000), mem, "size {size} distance {d}");
        }
    }

    #[test]
    fn lods_and_rep_lods_leave_the_last_element() {
        for size in [1u64, 2, 4, 8] {
            let code = asm(64, |a| match size {
                1 => a.rep().lodsb().unwrap(),
                2 => a.rep().lodsw().unwrap(),
                4 => a.rep().lodsd().unwrap(),
                _ => a.rep().lodsq().unwrap(),
            });
            let mut m = Machine::new(TestMode::Long64, &code);
            m.poke(SRC, &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
            m.poke(SRC + 8 * size, &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
            m.st.gpr[0] = 0xffff_ffff_ffff_ffff;
            // Backwards over two elements, ending on the one at SRC.
            let si = if size == 1 { SRC + 3 } else { SRC + size };
            regs(&mut m, si, 0, if size == 1 { 1 } else { 2 }, true);
            m.finish(2).unwrap();
            let want = match size {
                1 => 0xffff_ffff_ffff_ff44,
                2 => 0xffff_ffff_ffff_2211,
                4 => 0x4433_2211, // 32-bit write zero-extends
                _ => 0x8877_6655_4433_2211,
            };
            assert_eq!(m.st.gpr[0], want, "size {size}");
        }
    }

    #[test]
    fn segment_override_applies_to_the_source_only() {
        // 64-bit: FS base is honoured for the source; ES (base ignored in 64-bit mode) for the destination.
        let code = [0x64, 0xf3, 0xa4]; // fs rep movsb
        let mut m = Machine::new(TestMode::Long64, &code);
        m.st.sreg_mut(Seg::Fs).base = 0x40000;
        m.st.sreg_mut(Seg::Es).base = 0x50000;
        m.poke(0x40010, &[1, 2, 3]);
        regs(&mut m, 0x10, DST, 3, false);
        m.finish(2).unwrap();
        assert_eq!(m.peek(DST, 3), vec![1, 2, 3]);

        // Real mode: CS override for the source, ES for the destination.
        let code = [0x2e, 0xa5]; // cs movsw
        let mut m = Machine::new(TestMode::Real, &code);
        m.st.sreg_mut(Seg::Cs).base = 0x1000;
        m.st.rip = 0;
        // The code sits at physical 0x1000 = CS:0; copy it (CS:0) to ES:0x100 with ES base 0x9000.
        m.st.sreg_mut(Seg::Es).base = 0x9000;
        regs(&mut m, 0, 0x100, 0, false);
        m.step().unwrap();
        assert_eq!(m.peek(0x9100, 2), code[..2].to_vec());
    }

    #[test]
    fn count_zero_does_nothing_but_retire() {
        let code = asm(32, |a| {
            a.rep().movsd().unwrap();
            a.repe().cmpsb().unwrap();
            a.repne().scasw().unwrap();
            a.rep().stosb().unwrap();
            a.rep().lodsb().unwrap();
            a.rep().insb().unwrap();
            a.rep().outsb().unwrap();
        });
        let (st, bus, exit) = run(TestMode::Prot32, &code, |st, _| {
            st.gpr[1] = 0;
            st.gpr[6] = 0x1234;
            st.gpr[7] = 0x5678;
            st.rflags |= flags::ZF | flags::CF;
        });
        assert_eq!(exit, Exit::Halted);
        assert_eq!((st.gpr[1], st.gpr[6], st.gpr[7]), (0, 0x1234, 0x5678));
        assert_eq!(st.rflags & (flags::ZF | flags::CF), flags::ZF | flags::CF);
        assert!(bus.outs.is_empty());
        assert_eq!(st.gpr[0], 0);
    }

    #[test]
    fn repe_cmpsb_stops_at_first_difference() {
        let code = asm(32, |a| a.repe().cmpsb().unwrap());
        let mut m = Machine::new(TestMode::Prot32, &code);
        m.poke(SRC, b"hello world");
        m.poke(DST, b"hello_world");
        regs(&mut m, SRC, DST, 11, false);
        m.finish(2).unwrap();
        // Stopped after comparing index 5 (' ' vs '_'): 6 iterations.
        assert_eq!(m.st.gpr[1], 5);
        assert_eq!(m.st.gpr[6], SRC + 6);
        assert_eq!(m.st.gpr[7], DST + 6);
        // ' ' (0x20) - '_' (0x5f): borrow, negative, no overflow.
        assert_eq!(m.st.rflags & flags::ARITH, flags::CF | flags::SF | flags::AF);

        // Equal strings run to the end with ZF = 1.
        m.st.rip = CODE;
        m.poke(DST, b"hello world");
        regs(&mut m, SRC, DST, 11, false);
        m.finish(2).unwrap();
        assert_eq!(m.st.gpr[1], 0);
        assert!(m.st.rflags & flags::ZF != 0);
    }

    #[test]
    fn repne_scas_finds_the_terminator() {
        let code = asm(64, |a| a.repne().scasb().unwrap());
        let mut m = Machine::new(TestMode::Long64, &code);
        m.poke(DST, b"abcdef\0xyz");
        m.st.gpr[0] = 0;
        regs(&mut m, 0, DST, u64::MAX, false);
        m.finish(2).unwrap();
        assert_eq!(m.st.gpr[7], DST + 7);
        assert_eq!(m.st.gpr[1], u64::MAX - 7);
        assert!(m.st.rflags & flags::ZF != 0);
    }

    #[test]
    fn ins_and_outs_use_the_port_and_memory() {
        let code = asm(32, |a| {
            a.rep().outsb().unwrap();
            a.mov(esi, DST as u32).unwrap();
            a.outsd().unwrap();
            a.mov(ecx, 3).unwrap();
            a.rep().insw().unwrap();
            a.std().unwrap();
            a.insb().unwrap();
            a.cld().unwrap();
        });
        let (st, bus, exit) = run(TestMode::Prot32, &code, |st, bus| {
            st.gpr[2] = 0x3f8;
            st.gpr[1] = 4;
            st.gpr[6] = SRC as u32 as u64;
            st.gpr[7] = (DST + 0x100) as u32 as u64;
            bus.ram[SRC as usize..SRC as usize + 4].copy_from_slice(b"ping");
            bus.ram[DST as usize..DST as usize + 4].copy_from_slice(&0xcafe_f00du32.to_le_bytes());
            bus.in_value = 0x1234_5678;
        });
        assert_eq!(exit, Exit::Halted);
        assert_eq!(
            bus.outs,
            vec![
                (0x3f8, 1, b'p' as u32),
                (0x3f8, 1, b'i' as u32),
                (0x3f8, 1, b'n' as u32),
                (0x3f8, 1, b'g' as u32),
                (0x3f8, 4, 0xcafe_f00d)
            ]
        );
        let d = DST as usize + 0x100;
        assert_eq!(&bus.ram[d..d + 7], &[0x78, 0x56, 0x78, 0x56, 0x78, 0x56, 0x78]);
        assert_eq!(st.gpr[7], (DST + 0x100 + 6 - 1) as u32 as u64);
        assert_eq!(st.gpr[6], DST + 4);
    }

    #[test]
    fn ins_outs_check_io_permission_and_ins_faults_before_reading() {
        // CPL 3 with IOPL 0 and no usable TSS: #GP(0), nothing transferred, registers untouched.
        for code in [asm(32, |a| a.rep().insb().unwrap()), asm(32, |a| a.rep().outsb().unwrap())] {
            let mut m = Machine::new(TestMode::Prot32, &code);
            m.st.cpl = 3;
            m.st.tr.attr = 0;
            regs(&mut m, SRC, DST, 2, false);
            assert_eq!(m.step(), Err(Fault::gp0()));
            assert_eq!((m.st.gpr[1], m.st.gpr[6], m.st.gpr[7], m.st.rip), (2, SRC, DST, CODE));
            assert!(m.bus.outs.is_empty());
            // With a zero count nothing is checked.
            regs(&mut m, SRC, DST, 0, false);
            m.step().unwrap();
            assert_eq!(m.st.rip, CODE + code.len() as u64);
        }
        // A REP OUTS batch is not cut short by its own port accesses; an MMIO destination of INS is.
        let code = asm(32, |a| a.rep().outsb().unwrap());
        let mut m = Machine::new(TestMode::Prot32, &code);
        regs(&mut m, SRC, DST, 300, false);
        let s = m.step().unwrap();
        assert!(!s.stayed && s.break_block);
        assert_eq!(m.bus.outs.len(), 300);
        let code = asm(32, |a| a.rep().insb().unwrap());
        let mut m = Machine::new(TestMode::Prot32, &code);
        regs(&mut m, 0, 0x30_0000, 3, false);
        assert!(m.step().unwrap().stayed);
        assert_eq!(m.st.gpr[1], 2);
        // INS into a read-only ES faults before the port is read (the bus would log nothing anyway,
        // so check that the destination and the registers are untouched).
        let code = asm(32, |a| a.insd().unwrap());
        let mut m = Machine::new(TestMode::Prot32, &code);
        m.st.sreg_mut(Seg::Es).attr &= !crate::state::attr::RW;
        regs(&mut m, 0, DST, 0, false);
        assert_eq!(m.step(), Err(Fault::gp0()));
        assert_eq!(m.st.gpr[7], DST);
    }

    #[test]
    fn fault_in_the_middle_of_rep_movsb_is_restartable() {
        // ES limit ends 16 bytes into the copy: iteration 16 faults with #GP(0) and the registers
        // describe the remaining 16 bytes.
        let code = asm(32, |a| a.rep().movsb().unwrap());
        let mut m = Machine::new(TestMode::Prot32, &code);
        m.poke(SRC, &pattern(32, 1));
        {
            let es = m.st.sreg_mut(Seg::Es);
            es.limit = (DST + 15) as u32;
            es.attr &= !crate::state::attr::G;
        }
        regs(&mut m, SRC, DST, 32, false);
        assert_eq!(m.step(), Err(Fault::gp0()));
        assert_eq!(m.st.rip, CODE);
        assert_eq!((m.st.gpr[1], m.st.gpr[6], m.st.gpr[7]), (16, SRC + 16, DST + 16));
        assert_eq!(m.peek(DST, 16), pattern(32, 1)[..16].to_vec());
        assert_eq!(m.peek(DST + 16, 1), vec![0]);
        // The "handler" raises the limit; re-executing finishes the copy.
        m.st.sreg_mut(Seg::Es).limit = 0xffff_ffff;
        m.finish(2).unwrap();
        assert_eq!(m.peek(DST, 32), pattern(32, 1));
        assert_eq!((m.st.gpr[1], m.st.gpr[6], m.st.gpr[7]), (0, SRC + 32, DST + 32));

        // Word elements at a 16-bit offset of 0xffff in real mode: #GP before anything moves.
        let code = asm(16, |a| a.rep().movsw().unwrap());
        let mut m = Machine::new(TestMode::Real, &code);
        regs(&mut m, 0xfffd, 0x100, 3, false);
        assert_eq!(m.step(), Err(Fault::gp0()));
        assert_eq!((m.st.gpr[1], m.st.gpr[6], m.st.gpr[7]), (2, 0xffff, 0x102));
    }

    /// Long mode with 4 KiB pages for the first 2 MiB and a #PF handler at 0x3000 that makes the
    /// faulting page writable and returns; REP MOVSB into a read-only page faults mid-copy, the
    /// handler runs, and the instruction resumes where it stopped.
    #[test]
    fn page_fault_mid_rep_movsq_resumes_after_the_handler() {
        let code = asm(64, |a| {
            a.mov(rsi, SRC).unwrap();
            a.mov(rdi, DST + 0xf00).unwrap();
            a.mov(ecx, 0x400u32).unwrap();
            a.rep().movsq().unwrap();
        });
        let handler = asm(64, |a| {
            // The read-only pages are hit in order: make page 0x31 + r15 writable.
            a.or(qword_ptr(r15 * 8 + (0x104000 + 0x31 * 8)), 2).unwrap();
            a.mov(rax, cr2).unwrap();
            a.invlpg(byte_ptr(rax)).unwrap();
            a.inc(r15).unwrap();
            a.add(rsp, 8).unwrap();
            a.iretq().unwrap();
        });
        let (st, bus, exit) = run(TestMode::Long64, &code, |st, bus| {
            // Supervisor writes honour read-only pages.
            st.cr0 |= crate::state::cr0::WP;
            let w = |bus: &mut TestBus, a: u64, v: u64| {
                bus.ram[a as usize..a as usize + 8].copy_from_slice(&v.to_le_bytes())
            };
            // PD[0] -> page table at 0x104000 mapping 0..2 MiB with 4 KiB pages.
            w(bus, 0x102000, 0x104000 | 3);
            for i in 0..512u64 {
                let flags = if (0x31..0x33).contains(&i) { 1 } else { 3 };
                w(bus, 0x104000 + i * 8, (i << 12) | flags);
            }
            // IDT with a 64-bit interrupt gate for #PF at 0x800.
            st.idtr.base = 0x800;
            st.idtr.limit = 0xff;
            let off = 0x3000u64;
            let lo = (off & 0xffff) | (0x08 << 16) | (0x8e00u64 << 32) | ((off >> 16) << 48);
            w(bus, 0x800 + 14 * 16, lo);
            w(bus, 0x800 + 14 * 16 + 8, off >> 32);
            bus.ram[0x3000..0x3000 + handler.len()].copy_from_slice(&handler);
            for (i, b) in bus.ram[SRC as usize..SRC as usize + 0x2000].iter_mut().enumerate() {
                *b = (i * 7 + 3) as u8;
            }
        });
        assert_eq!(exit, Exit::Halted, "{}", st.dump());
        // Two read-only pages were hit: DST+0x1000 and DST+0x2000.
        assert_eq!(st.gpr[15], 2);
        assert_eq!(st.cr2, DST + 0x2000);
        assert_eq!(
            &bus.ram[DST as usize + 0xf00..DST as usize + 0x2f00],
            &bus.ram[SRC as usize..SRC as usize + 0x2000]
        );
        assert_eq!((st.gpr[1], st.gpr[6], st.gpr[7]), (0, SRC + 0x2000, DST + 0x2f00));
        assert_eq!(st.gpr[4], STACK);
    }

    #[test]
    fn rep_yields_after_max_iters_and_single_steps_with_tf() {
        let code = asm(32, |a| a.rep().stosb().unwrap());
        let mut m = Machine::new(TestMode::Prot32, &code);
        regs(&mut m, 0, DST, 10_000, false);
        let s = m.step().unwrap();
        assert!(s.stayed && s.break_block);
        assert_eq!(m.st.rip, CODE);
        assert_eq!(m.st.gpr[1], 10_000 - MAX_ITERS);
        assert_eq!(m.st.gpr[7], DST + MAX_ITERS);
        assert_eq!(m.finish(10).unwrap(), 2);
        assert_eq!(m.st.gpr[1], 0);

        // TF: one iteration per execution (hardware traps after each iteration).
        let mut m = Machine::new(TestMode::Prot32, &code);
        regs(&mut m, 0, DST, 3, false);
        m.st.rflags |= flags::TF;
        assert!(m.step().unwrap().stayed);
        assert_eq!(m.st.gpr[1], 2);
        assert!(m.step().unwrap().stayed);
        assert!(!m.step().unwrap().stayed);
        assert_eq!(m.st.gpr[1], 0);
    }

    #[test]
    fn fast_path_engages_only_where_it_is_exact() {
        use super::{Str, fast_movs, fast_stos};
        use crate::mem::Ctx;
        // Runs `f` on a fresh Long64 machine with the given RSI/RDI/DF and returns (elements done, RSI,
        // RDI).
        fn go(
            si: u64,
            di: u64,
            df: bool,
            code_page: Option<u64>,
            f: fn(&mut Ctx<'_>, &Str, u64) -> u64,
        ) -> (u64, u64, u64) {
            let mut m = Machine::new(TestMode::Long64, &[0xf3, 0xa4]);
            m.poke(SRC, &pattern(0x1000, 3));
            regs(&mut m, si, di, 0, df);
            if let Some(p) = code_page {
                m.mmu.code_pages.insert(p);
            }
            let insn = m.decode();
            let mut ctx =
                Ctx { st: &mut m.st, bus: &mut m.bus, mmu: &mut m.mmu, next_rip: 0, break_block: false };
            let s = Str::new(&ctx, &insn, 1);
            let k = f(&mut ctx, &s, 10_000);
            (k, m.st.gpr[6], m.st.gpr[7])
        }
        // A whole page in one go, up to the end of the destination page.
        assert_eq!(go(SRC, DST + 0x10, false, None, fast_movs::<1>), (0xff0, SRC + 0xff0, DST + 0x1000));
        assert_eq!(go(0, DST + 0x800, false, None, fast_stos::<1>), (0x800, 0, DST + 0x1000));
        // Not for DF = 1, a destination page holding decoded code, or MMIO.
        assert_eq!(go(SRC, DST, true, None, fast_movs::<1>).0, 0);
        assert_eq!(go(0, DST, false, Some(DST), fast_stos::<1>).0, 0);
        assert_eq!(go(0x30_0000, DST, false, None, fast_movs::<1>).0, 0);
        assert_eq!(go(0, 0x30_0000, false, None, fast_stos::<1>).0, 0);
    }

    #[test]
    fn rep_stops_after_an_mmio_access() {
        // Physical 0x300000 is beyond the test RAM: reads go through the bus (all ones) and end the
        // batch after that iteration.
        let code = asm(32, |a| a.rep().movsb().unwrap());
        let mut m = Machine::new(TestMode::Prot32, &code);
        regs(&mut m, 0x30_0000, DST, 10, false);
        let s = m.step().unwrap();
        assert!(s.stayed && s.break_block);
        assert_eq!(m.st.gpr[1], 9);
        assert_eq!(m.peek(DST, 1), vec![0xff]);
        m.finish(20).unwrap();
        assert_eq!(m.peek(DST, 10), vec![0xff; 10]);
    }

    #[test]
    fn rep_stosb_over_the_following_code_is_seen() {
        // The REP STOSB overwrites the `mov eax, 1` after it with NOPs (self-modifying code in the same
        // block): the new bytes must execute.
        let code = asm(32, |a| {
            a.rep().stosb().unwrap();
            a.mov(eax, 1).unwrap();
        });
        let len = code.len() as u64;
        let (st, _, exit) = run(TestMode::Prot32, &code, |st, _| {
            st.gpr[0] = 0x90;
            st.gpr[7] = CODE + 2;
            st.gpr[1] = len - 2;
        });
        assert_eq!(exit, Exit::Halted);
        assert_eq!(st.gpr[0], 0x90);
    }

    // ----------------------------------------------------------------- comparisons with the host CPU

    /// Runs `$ins` natively with the given RSI/RDI/RCX/RAX and DF; returns (rsi, rdi, rcx, rax, rflags).
    #[cfg(target_arch = "x86_64")]
    macro_rules! host {
        ($ins:literal, $si:expr, $di:expr, $cx:expr, $ax:expr, $df:expr) => {{
            let (mut h_si, mut h_di, mut h_cx, mut h_ax): (u64, u64, u64, u64) = ($si, $di, $cx, $ax);
            let fl: u64;
            if $df {
                // SAFETY: the string instruction reads (and for these tests never writes) memory
                // inside the buffers the caller passed through RSI/RDI, for the count in RCX; DF is
                // cleared again before the block ends, as Rust requires.
                unsafe {
                    core::arch::asm!("std", $ins, "pushfq", "pop {f}", "cld",
                        f = out(reg) fl, inout("rsi") h_si, inout("rdi") h_di, inout("rcx") h_cx, inout("rax") h_ax);
                }
            } else {
                // SAFETY: as above, with DF already clear.
                unsafe {
                    core::arch::asm!($ins, "pushfq", "pop {f}",
                        f = out(reg) fl, inout("rsi") h_si, inout("rdi") h_di, inout("rcx") h_cx, inout("rax") h_ax);
                }
            }
            (h_si, h_di, h_cx, h_ax, fl)
        }};
    }

    #[cfg(target_arch = "x86_64")]
    /// A tiny deterministic generator for test data.
    fn lcg(s: &mut u64) -> u64 {
        *s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *s >> 16
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn cmps_scas_flags_match_the_host() {
        let mut seed = 0x1234_5678u64;
        let kinds: [&str; 16] = [
            "cmpsb",
            "cmpsw",
            "cmpsd",
            "cmpsq",
            "repe cmpsb",
            "repe cmpsw",
            "repne cmpsd",
            "repne cmpsq",
            "scasb",
            "scasw",
            "scasd",
            "scasq",
            "repne scasb",
            "repe scasw",
            "repne scasd",
            "repe scasq",
        ];
        for round in 0..200 {
            let name = kinds[round % kinds.len()];
            let df = round % 3 == 0;
            // Buffers with few distinct values so REPE/REPNE see both outcomes.
            let mut a = [0u8; 128];
            let mut b = [0u8; 128];
            let pick = |s: &mut u64| [0u8, 0x7f, 0x80, 0xff, 0x10][(lcg(s) % 5) as usize];
            for i in 0..128 {
                a[i] = pick(&mut seed);
                b[i] = if lcg(&mut seed).is_multiple_of(4) { pick(&mut seed) } else { a[i] };
            }
            let count = lcg(&mut seed) % 6;
            let ax = u64::from_le_bytes(a[..8].try_into().unwrap());
            let start = if df { 64 } else { 8 };
            let (pa, pb) = (a.as_ptr() as u64 + start, b.as_ptr() as u64 + start);
            let host = match name {
                "cmpsb" => host!("cmpsb", pa, pb, count, ax, df),
                "cmpsw" => host!("cmpsw", pa, pb, count, ax, df),
                "cmpsd" => host!("cmpsd", pa, pb, count, ax, df),
                "cmpsq" => host!("cmpsq", pa, pb, count, ax, df),
                "repe cmpsb" => host!("repe cmpsb", pa, pb, count, ax, df),
                "repe cmpsw" => host!("repe cmpsw", pa, pb, count, ax, df),
                "repne cmpsd" => host!("repne cmpsd", pa, pb, count, ax, df),
                "repne cmpsq" => host!("repne cmpsq", pa, pb, count, ax, df),
                "scasb" => host!("scasb", pa, pb, count, ax, df),
                "scasw" => host!("scasw", pa, pb, count, ax, df),
                "scasd" => host!("scasd", pa, pb, count, ax, df),
                "scasq" => host!("scasq", pa, pb, count, ax, df),
                "repne scasb" => host!("repne scasb", pa, pb, count, ax, df),
                "repe scasw" => host!("repe scasw", pa, pb, count, ax, df),
                "repne scasd" => host!("repne scasd", pa, pb, count, ax, df),
                _ => host!("repe scasq", pa, pb, count, ax, df),
            };
            let code = asm(64, |c| {
                let rep_e = name.starts_with("repe ");
                let rep_ne = name.starts_with("repne ");
                let base = name.rsplit(' ').next().unwrap();
                let c = if rep_e {
                    c.repe()
                } else if rep_ne {
                    c.repne()
                } else {
                    c
                };
                match base {
                    "cmpsb" => c.cmpsb(),
                    "cmpsw" => c.cmpsw(),
                    "cmpsd" => c.cmpsd(),
                    "cmpsq" => c.cmpsq(),
                    "scasb" => c.scasb(),
                    "scasw" => c.scasw(),
                    "scasd" => c.scasd(),
                    _ => c.scasq(),
                }
                .unwrap()
            });
            let mut m = Machine::new(TestMode::Long64, &code);
            m.poke(SRC, &a);
            m.poke(DST, &b);
            regs(&mut m, SRC + start, DST + start, count, df);
            m.st.gpr[0] = ax;
            // A zero-count REP leaves the flags alone (the host's incoming flags are unknown, so only
            // check that ours did not change).
            let pre = m.st.rflags;
            m.finish(3).unwrap();
            let ctx = format!("{name} df={df} count={count}");
            if count == 0 && name.starts_with("rep") {
                assert_eq!(m.st.rflags, pre, "{ctx}");
            } else {
                assert_eq!(m.st.rflags & flags::ARITH, host.4 & flags::ARITH, "{ctx}");
            }
            assert_eq!(m.st.gpr[6].wrapping_sub(SRC), host.0.wrapping_sub(a.as_ptr() as u64), "{ctx}");
            assert_eq!(m.st.gpr[7].wrapping_sub(DST), host.1.wrapping_sub(b.as_ptr() as u64), "{ctx}");
            assert_eq!(m.st.gpr[1], host.2, "{ctx}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn address_size_32_zero_count_matches_the_host() {
        // With a 0x67 prefix and ECX = 0 in 64-bit mode, Intel CPUs still zero-extend RCX, and for
        // MOVS RSI/RDI and for STOS RDI; nothing else; AMD CPUs leave all of them alone. (No memory is
        // touched with a zero count.)
        let hi = 0xabcd_0000_0000_0000u64;
        let cases: [(&str, [u8; 3]); 5] = [
            ("movsb", [0x67, 0xf3, 0xa4]),
            ("stosd", [0x67, 0xf3, 0xab]),
            ("lodsb", [0x67, 0xf3, 0xac]),
            ("cmpsb", [0x67, 0xf3, 0xa6]),
            ("scasb", [0x67, 0xf2, 0xae]),
        ];
        for (name, bytes) in cases {
            let host = match name {
                "movsb" => host!(".byte 0x67, 0xf3, 0xa4", hi | 0x10, hi | 0x20, hi, hi | 0x55, false),
                "stosd" => host!(".byte 0x67, 0xf3, 0xab", hi | 0x10, hi | 0x20, hi, hi | 0x55, false),
                "lodsb" => host!(".byte 0x67, 0xf3, 0xac", hi | 0x10, hi | 0x20, hi, hi | 0x55, false),
                "cmpsb" => host!(".byte 0x67, 0xf3, 0xa6", hi | 0x10, hi | 0x20, hi, hi | 0x55, false),
                _ => host!(".byte 0x67, 0xf2, 0xae", hi | 0x10, hi | 0x20, hi, hi | 0x55, false),
            };
            let mut m = Machine::new(TestMode::Long64, &bytes);
            regs(&mut m, hi | 0x10, hi | 0x20, hi, false);
            m.st.gpr[0] = hi | 0x55;
            m.step().unwrap();
            assert_eq!(
                (m.st.gpr[6], m.st.gpr[7], m.st.gpr[1], m.st.gpr[0]),
                (host.0, host.1, host.2, host.3),
                "{name}"
            );
        }
    }

    /// A 32-bit protected-mode machine running `code` with ES and SS limited to 0xFFF.
    fn limited(code: &[u8], quirks: Quirks) -> Machine {
        let mut m = Machine::new(TestMode::Prot32, code);
        m.st.quirks = quirks;
        m.st.sreg_mut(Seg::Es).limit = 0xfff;
        m.st.sreg_mut(Seg::Ss).limit = 0xfff;
        m
    }

    #[test]
    fn vendor_quirks_of_rep_strings() {
        use crate::fault::vec;
        let vector = |r: Result<Stepped, Fault>| match r {
            Err(Fault::Exc { vector, .. }) => vector,
            r => panic!("no fault: {r:?}"),
        };
        // REPE CMPSB with both operands beyond their limits: Intel reads ES:EDI first (#GP), AMD the
        // SS:ESI source (#SS); any other CMPS reads ES:EDI first on both.
        for (code, amd) in
            [(&[0x36, 0xf3, 0xa6][..], vec::SS), (&[0x36, 0xf2, 0xa6], vec::GP), (&[0x36, 0xa6], vec::GP)]
        {
            for (q, want) in [(Quirks::Intel, vec::GP), (Quirks::Amd, amd)] {
                let mut m = limited(code, q);
                m.st.gpr[RSI] = 0x2000;
                m.st.gpr[RDI] = 0x2000;
                m.st.gpr[RCX] = 3;
                assert_eq!(vector(m.step()), want, "{code:02x?} {q:?}");
            }
        }
        // REPE CMPSB that faults in its second iteration: Intel reports the flags the instruction
        // started with, AMD those of the first (equal) comparison.
        for (q, zf) in [(Quirks::Intel, 0), (Quirks::Amd, flags::ZF)] {
            let mut m = limited(&[0xf3, 0xa6], q);
            m.poke(0x3000, &[7]);
            m.poke(0xfff, &[7]);
            m.st.gpr[RSI] = 0x3000;
            m.st.gpr[RDI] = 0xfff;
            m.st.gpr[RCX] = 3;
            m.st.rflags &= !flags::ARITH;
            assert_eq!(vector(m.step()), vec::GP);
            assert_eq!(m.st.rflags & flags::ZF, zf, "{q:?}");
            assert_eq!(m.st.gpr[RCX], 2, "{q:?}");
        }
    }

    #[test]
    fn vendor_quirks_of_a_faulting_first_32_bit_iteration() {
        // rep movsb with 32-bit addresses from ESI = 0x8000_0000 (not mapped: #PF): Intel has already
        // zero-extended RSI/RDI/RCX, AMD leaves them whole.
        let hi = 0xabcd_0000_0000_0000u64;
        for (q, truncated) in [(Quirks::Intel, true), (Quirks::Amd, false)] {
            let mut m = Machine::new(TestMode::Long64, &[0x67, 0xf3, 0xa4]);
            m.st.quirks = q;
            regs(&mut m, hi | 0x8000_0000, hi | 0x20, hi | 4, false);
            assert!(matches!(m.step(), Err(Fault::Exc { vector: 14, .. })), "{q:?}");
            let want = if truncated { (0x8000_0000, 0x20, 4) } else { (hi | 0x8000_0000, hi | 0x20, hi | 4) };
            assert_eq!((m.st.gpr[RSI], m.st.gpr[RDI], m.st.gpr[RCX]), want, "{q:?}");
        }
    }

    #[test]
    fn vendor_quirks_of_a_zero_count_32_bit_rep() {
        let hi = 0xabcd_0000_0000_0000u64;
        for (q, touched) in [(Quirks::Intel, true), (Quirks::Amd, false)] {
            let mut m = Machine::new(TestMode::Long64, &[0x67, 0xf3, 0xa4]);
            m.st.quirks = q;
            regs(&mut m, hi | 0x10, hi | 0x20, hi, false);
            m.step().unwrap();
            let want = if touched { (0x10, 0x20, 0) } else { (hi | 0x10, hi | 0x20, hi) };
            assert_eq!((m.st.gpr[RSI], m.st.gpr[RDI], m.st.gpr[RCX]), want, "{q:?}");
        }
    }
}
