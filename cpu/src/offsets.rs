//! Byte offsets into [`CpuState`] that generated code (the Cranelift JIT) uses. Named in one place and
//! checked against `offset_of!` so a layout change cannot silently break the JIT (wasmtime's vmoffsets
//! habit).

/// Offset of GPR `n` (0 = RAX ... 15 = R15).
pub const fn gpr(n: usize) -> usize {
    GPR0 + n * 8
}

/// Offset of `gpr[0]`.
pub const GPR0: usize = 0;
/// Offset of `rip`.
pub const RIP: usize = 128;
/// Offset of `rflags`.
pub const RFLAGS: usize = 136;
/// Offset of `icount`.
pub const ICOUNT: usize = 144;
/// Offset of `seg[0]` (ES); each segment is [`SEGMENT_SIZE`] bytes: selector u16, attr u16, limit u32,
/// base u64.
pub const SEG0: usize = 152;
/// Offset of `lazy` (the JIT's lazy flag state, `crate::lazyflags::LazyFlags`; its fields at
/// `crate::lazyflags::field`).
pub const LAZY: usize = std::mem::offset_of!(crate::state::CpuState, lazy);
/// Size of one segment register record.
pub const SEGMENT_SIZE: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::CpuState;
    use std::mem::offset_of;

    #[test]
    fn offsets_match_layout() {
        assert_eq!(offset_of!(CpuState, gpr), GPR0);
        assert_eq!(offset_of!(CpuState, rip), RIP);
        assert_eq!(offset_of!(CpuState, rflags), RFLAGS);
        assert_eq!(offset_of!(CpuState, icount), ICOUNT);
        assert_eq!(offset_of!(CpuState, seg), SEG0);
        assert_eq!(std::mem::size_of::<crate::state::Segment>(), SEGMENT_SIZE);
        assert_eq!(gpr(15), 120);
        use crate::lazyflags::{LazyFlags, field};
        assert_eq!(offset_of!(LazyFlags, kind), field::KIND);
        assert_eq!(offset_of!(LazyFlags, a), field::A);
        assert_eq!(offset_of!(LazyFlags, b), field::B);
        assert_eq!(offset_of!(LazyFlags, r), field::R);
    }
}
