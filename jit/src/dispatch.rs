//! The indirect-branch target cache: how a translated block that ends in RET, or in a JMP or CALL
//! through a register or memory, goes on into the translation of the block at its (run-time)
//! target without returning to the interpreter's loop.
//!
//! A block's own two [`Link`] slots hold the last two successors it was chained to: enough for a
//! conditional branch, not for a RET that returns to many call sites (glibc's string functions) or
//! an indirect call with many callees. The cache is one direct-mapped table of links shared by
//! every translation, indexed by a hash of the target RIP ([`slot_of`]); generated code probes it
//! after the block's own slots miss (`emit_links_with`). An entry is a [`Link`] (followed under
//! exactly the checks a link is: the RIP, the link epoch, the fetch-TLB entry of the target's
//! linear page still mapping the same physical page for the current privilege, and the
//! interpreter's budget check `icount + len <= until`, the one compare between blocks) plus the
//! rest of the interpreter's block key that a shared entry cannot take from its source block: the
//! CS base and the code size. So an entry is followed only where the interpreter's lookup
//! (`block_at`, key physical address + RIP + CS base + code size) would find the same block, and
//! the epoch raised by every drop of decoded blocks (SMC, DMA, flushes, the cache bound, eviction,
//! a region placed) makes every entry stale at once: no entry can reach freed or outdated code.
//!
//! A hit is followed exactly as a block's own link is (`emit_slot`): by a tail call of the
//! successor's code, or a return to `JitBlock::run` when region selection watches the link.
//!
//! Entries are written where direct links are, when the interpreter's chaining loop runs a block
//! after a translated one ([`Ibtc::fill`] from `JitBlock::link_into`).

use crate::Link;
use cranelift_codegen::ir::{self, InstBuilder};
use cranelift_frontend::FunctionBuilder;
use std::cell::Cell;

/// Entries in the cache (a power of two).
pub(crate) const ENTRIES: usize = 2048;

/// One entry: a link, and the mode half of the interpreter's block key.
#[repr(C)]
#[derive(Default)]
pub(crate) struct IbEntry {
    /// The target's link (checked like a block's own slot).
    pub(crate) link: Link,
    /// The CS base the target block was found with.
    pub(crate) cs_base: Cell<u64>,
    /// Its code size (16, 32, 64; 0 in an entry never written).
    pub(crate) bits: Cell<u64>,
}

/// The cache, at a fixed address for the life of the JIT (generated code finds it through
/// `Outcome::ibtc`).
pub(crate) struct Ibtc {
    table: Box<[IbEntry]>,
    /// Entries written (statistics).
    pub(crate) fills: Cell<u64>,
    /// Links followed by generated code, a block's own or the cache's (statistics).
    pub(crate) followed: Cell<u64>,
    /// Of those, the ones followed by a tail call, without returning to `JitBlock::run`.
    pub(crate) tail: Cell<u64>,
    /// Runs of translations started by the interpreter (`JitBlock::run`; statistics): with
    /// `followed`, how many block transitions stayed in generated code.
    pub(crate) entries: Cell<u64>,
    /// Runs that left generated code at a memory form's slow path (`ST_RESUME`) and finished
    /// their block in the interpreter's loop (statistics).
    pub(crate) resumes: Cell<u64>,
}

impl Default for Ibtc {
    fn default() -> Self {
        Ibtc {
            table: (0..ENTRIES).map(|_| IbEntry::default()).collect(),
            fills: Cell::default(),
            followed: Cell::default(),
            tail: Cell::default(),
            entries: Cell::default(),
            resumes: Cell::default(),
        }
    }
}

/// The slot of target RIP `rip`. Generated code computes the same ([`emit_slot_offset`]).
#[inline]
pub(crate) fn slot_of(rip: u64) -> usize {
    ((rip ^ (rip >> 11)) as usize) & (ENTRIES - 1)
}

/// Emits the byte offset of the entry of `rip` in the table ([`slot_of`] times the entry's size).
pub(crate) fn emit_slot_offset(b: &mut FunctionBuilder<'_>, rip: ir::Value) -> ir::Value {
    let hi = b.ins().ushr_imm_u(rip, 11);
    let h = b.ins().bxor(rip, hi);
    let idx = b.ins().band_imm_u(h, (ENTRIES - 1) as i64);
    b.ins().imul_imm_u(idx, std::mem::size_of::<IbEntry>() as i64)
}

/// The code size to key the cache probe with when the block `insns` ends in an indirect near
/// transfer (RET, JMP/CALL through a register or memory), else `None` (its two slots suffice).
pub(crate) fn indirect_end(insns: &[cpu::exec::Insn]) -> Option<u32> {
    use iced_x86::{CodeSize, FlowControl as F};
    let i = &insns.last()?.i;
    if !matches!(i.flow_control(), F::Return | F::IndirectBranch | F::IndirectCall) {
        return None;
    }
    match i.code_size() {
        CodeSize::Code16 => Some(16),
        CodeSize::Code32 => Some(32),
        CodeSize::Code64 => Some(64),
        CodeSize::Unknown => None,
    }
}

/// The code size to key a region's cache probe with: its members' common one (a region's exits
/// probe the cache after its two slots whatever their kind, since a region leaves through the
/// exits of all its members: a RET of one, a loop exit of another...), else `None`.
pub(crate) fn region_end(members: &[&[cpu::exec::Insn]]) -> Option<u32> {
    use iced_x86::CodeSize;
    let bits = |m: &&[cpu::exec::Insn]| match m.last()?.i.code_size() {
        CodeSize::Code16 => Some(16),
        CodeSize::Code32 => Some(32),
        CodeSize::Code64 => Some(64),
        CodeSize::Unknown => None,
    };
    let first = bits(members.first()?)?;
    members.iter().all(|m| bits(m) == Some(first)).then_some(first)
}

/// Whether translations probe the cache (`FERRITE_JIT_IBTC=0` turns it off; for blocks,
/// `Jit::set_indirect_cache` overrides it).
pub(crate) fn enabled_by_env() -> bool {
    std::env::var_os("FERRITE_JIT_IBTC").is_none_or(|v| v != "0")
}

impl Ibtc {
    /// The table's address (for `Outcome::ibtc`).
    pub(crate) fn as_ptr(&self) -> usize {
        self.table.as_ptr() as usize
    }

    /// The entry for a block at `rip` found with CS base `cs_base` in `bits`-bit code, for the
    /// caller to fill as a [`Link`]; its mode half is written here.
    pub(crate) fn entry(&self, rip: u64, cs_base: u64, bits: u32) -> &Link {
        let e = &self.table[slot_of(rip)];
        e.cs_base.set(cs_base);
        e.bits.set(bits as u64);
        self.fills.set(self.fills.get() + 1);
        &e.link
    }
}

#[cfg(test)]
mod tests {
    use super::region_end;
    use cpu::exec::Insn;

    fn decode(bits: u32, bytes: &[u8]) -> Vec<Insn> {
        let mut dec = iced_x86::Decoder::with_ip(bits, bytes, 0x1000, iced_x86::DecoderOptions::NONE);
        dec.iter().map(|i| Insn::new(i, cpu::exec::handler_for(i.code()), 8, i.next_ip())).collect()
    }

    #[test]
    fn a_region_probes_the_cache_with_its_members_common_code_size() {
        // ADD EAX, 1; RET and DEC ECX; JNZ: a RET exit and a loop exit.
        let ret64 = decode(64, &[0x83, 0xc0, 0x01, 0xc3]);
        let jnz64 = decode(64, &[0xff, 0xc9, 0x75, 0xfc]);
        let jnz32 = decode(32, &[0x49, 0x75, 0xfd]);
        assert_eq!(region_end(&[&ret64, &jnz64]), Some(64));
        assert_eq!(region_end(&[&jnz32]), Some(32));
        // Members of two code sizes (never formed): no probe rather than a wrong key.
        assert_eq!(region_end(&[&ret64, &jnz32]), None);
        assert_eq!(region_end(&[]), None);
    }
}
