//! What the JIT's differential tests share.

use cpu::Interpreter;

/// The software TLB's valid entries (table, slot, tag, whether it has a host page): the JIT must
/// leave exactly the interpreter's, as the state hash of a machine covers them (an inline
/// read-modify-write that filled the read TLB only under the interpreter parted a Linux replay).
pub fn tlb_tags(it: &Interpreter) -> Vec<(usize, usize, u64, bool)> {
    let t = &it.mmu.tlb;
    [&t.read, &t.write, &t.exec]
        .iter()
        .enumerate()
        .flat_map(|(n, tab)| {
            tab.iter().enumerate().filter(|(_, e)| e.tag != 0).map(move |(k, e)| (n, k, e.tag, e.host != 0))
        })
        .collect()
}
