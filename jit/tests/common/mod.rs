//! What the JIT's differential tests share.
// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

use cpu::Interpreter;
use iced_x86::code_asm::{CodeAssembler, CodeLabel};

/// A conditional jump on condition `cc % 16` (the order of the condition codes' encodings) to `l`.
pub fn jcc(a: &mut CodeAssembler, cc: u64, l: CodeLabel) {
    let r = match cc % 16 {
        0 => a.jo(l),
        1 => a.jno(l),
        2 => a.jb(l),
        3 => a.jae(l),
        4 => a.je(l),
        5 => a.jne(l),
        6 => a.jbe(l),
        7 => a.ja(l),
        8 => a.js(l),
        9 => a.jns(l),
        10 => a.jp(l),
        11 => a.jnp(l),
        12 => a.jl(l),
        13 => a.jge(l),
        14 => a.jle(l),
        _ => a.jg(l),
    };
    r.expect("jcc");
}

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

/// The tests' pseudo-random source (xorshift64): a seed gives the same programs on every host.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}
