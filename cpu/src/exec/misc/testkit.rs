//! Test kit of the integer families (shift, muldiv, bits, bcd, misc): a native oracle that runs
//! instruction bytes on this host CPU, an interpreter harness that runs the same bytes through their
//! handler, a generator of random register-form instructions from iced `Code`s, and a deterministic PRNG.
//!
//! The native side works in 64-bit mode: the bytes go into an executable page (mapped with a raw
//! `mmap` syscall, so the crate needs no libc) followed by `ret`, and a small `asm!` stub loads all
//! general registers and RFLAGS from a [`NRegs`], calls the page, and stores them back. Everything but
//! RSP can be an operand. Memory operands point a base register at a host buffer natively and at
//! [`DATA`] in the interpreter, and the two buffers are compared afterwards.
//!
//! For code that only runs outside 64-bit mode (BCD, SALC, BOUND), [`Native::run32`] far-returns into
//! the host kernel's 32-bit user code segment (selector 0x23 on Linux) on a page below 4 GiB.
#![allow(dead_code)]

use crate::exec::{Insn, handler_for};
use crate::fault::Fault;
use crate::mem::{Ctx, Mmu};
use crate::regs::size_mask;
use crate::state::{CpuState, flags};
use crate::testutil::{CODE, DATA, TestBus, TestMode, cpu_in};
use iced_x86::{
    Code, Decoder, DecoderOptions, Encoder, Instruction, OpCodeOperandKind as K, OpKind, Register,
};
use std::arch::asm;

// ------------------------------------------------------------------------------------------- PRNG

/// SplitMix64: small, fast, deterministic.
pub struct Rng(pub u64);

impl Rng {
    /// Next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A random element of `s`.
    pub fn pick<T: Copy>(&mut self, s: &[T]) -> T {
        s[self.below(s.len() as u64) as usize]
    }

    /// An "interesting" 64-bit value: edge values of every width (0, 1, -1, sign boundaries), small
    /// counts, single bits, or random bits; often with random garbage above a random width.
    pub fn value(&mut self) -> u64 {
        let w = self.pick(&[8u32, 16, 32, 64]);
        let m = size_mask(w / 8);
        let sign = 1u64 << (w - 1);
        let v = match self.below(10) {
            0 => self.pick(&[0u64, 1, 2, m, m - 1, sign, sign - 1, sign + 1]),
            1 => self.below(70),
            2 => 1u64 << self.below(64),
            3 => !(1u64 << self.below(64)),
            4 => self.next() & 0x0f0f_0f0f_0f0f_0f0f,
            5 => self.pick(&[0x99u64, 0x9a, 0xa0, 0x0f, 0xf0, 0xff, 0x100, 0x10, 0x09, 0x0a]),
            _ => self.next(),
        } & m;
        if w < 64 && self.below(2) == 0 { v | (self.next() & !m) } else { v }
    }

    /// Random arithmetic flags (with the always-one bit and IF, as a host POPF would see them).
    pub fn flags(&mut self) -> u64 {
        (self.next() & flags::ARITH) | flags::FIXED1 | flags::IF
    }
}

// ------------------------------------------------------------------------------------------- native

/// Register file exchanged with the native stub: RAX..R15 (RSP ignored), RFLAGS, code address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NRegs {
    /// General registers in encoding order.
    pub gpr: [u64; 16],
    /// RFLAGS in and out.
    pub rflags: u64,
    /// Address the stub calls.
    pub target: u64,
}

const PAGE: usize = 0x2000;

/// A fresh anonymous RWX mapping of `len` bytes (below 4 GiB when `low`), through the raw syscall.
pub fn mmap(len: usize, low: bool) -> *mut u8 {
    const PROT_RWX: u64 = 7;
    const MAP_PRIVATE_ANON: u64 = 0x22;
    const MAP_32BIT: u64 = 0x40;
    let fl = MAP_PRIVATE_ANON | if low { MAP_32BIT } else { 0 };
    let ret: i64;
    // SAFETY: the raw Linux mmap syscall (9) for a fresh anonymous private mapping touches no existing
    // memory; the syscall clobbers RCX and R11, declared as such.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") 9i64 => ret,
            in("rdi") 0u64,
            in("rsi") len,
            in("rdx") PROT_RWX,
            in("r10") fl,
            in("r8") -1i64,
            in("r9") 0u64,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    assert!(ret > 0 && ret & 0xfff == 0, "mmap failed: {ret}");
    ret as *mut u8
}

/// Unmaps a mapping made by [`mmap`].
pub fn munmap(p: *mut u8, len: usize) {
    // SAFETY: unmaps a mapping this module created with `mmap` and no longer references.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") 11i64 => _,
            in("rdi") p,
            in("rsi") len,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
}

/// The native oracle: an executable page (below 4 GiB, so the 32-bit path can use it too).
pub struct Native {
    page: *mut u8,
}

impl Default for Native {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        munmap(self.page, PAGE);
    }
}

/// Layout of the low page: 64-bit code under test at 0, the 32-bit machinery at 0x400.., a save area at
/// 0x800, the 32-bit register file at 0x900, the 32-bit code at 0x1000, a scratch buffer at 0x1800,
/// a stack that grows down from 0x1ff0.
const SAVE_RSP: usize = 0x800;
const REGS32: usize = 0x900;
const LOW_STACK: usize = 0x1ff0;
const ENTER32: usize = 0x400;
const BACK64: usize = 0x600;
const CODE32: usize = 0x1000;
const LOW_BUF: usize = 0x1800;

impl Native {
    /// Maps the page.
    pub fn new() -> Native {
        Native { page: mmap(PAGE, true) }
    }

    /// Runs `code` (64-bit, must not touch RSP or fault) with `r`; returns the registers afterwards.
    pub fn run(&mut self, code: &[u8], r: &NRegs) -> NRegs {
        assert!(code.len() < 0x3f0);
        // SAFETY: `page` is a live RWX mapping of PAGE bytes; the code plus `ret` fits in its first 1 KiB.
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), self.page, code.len());
            *self.page.add(code.len()) = 0xc3;
        }
        let mut regs = *r;
        regs.target = self.page as u64;
        regs.rflags = (regs.rflags & flags::ARITH) | flags::FIXED1 | flags::IF;
        call_stub(&mut regs);
        regs
    }

    /// Runs `code` (32-bit, assembled for address 0) in the host's 32-bit compatibility mode with the
    /// eight 32-bit registers and EFLAGS from `r` (ESP ignored). DS/ES are loaded with the user data
    /// selector meanwhile, so memory operands may address the low 4 GiB; [`Native::low_buf`] is a
    /// 1 KiB scratch area there.
    pub fn run32(&mut self, code: &[u8], r: &NRegs) -> NRegs {
        assert!(code.len() < 0x400);
        let base = self.page as u64;
        assert!(base + PAGE as u64 <= 1 << 32);
        let enter = enter32_code(base);
        let back = back64_code(base);
        let c32 = code32_wrapper(base, code);
        // SAFETY: all writes are within the live RWX page of PAGE bytes, at the offsets of the layout
        // above (the wrappers are checked to fit).
        unsafe {
            assert!(enter.len() < BACK64 - ENTER32 && back.len() < SAVE_RSP - BACK64);
            assert!(c32.len() < LOW_BUF - CODE32);
            std::ptr::copy_nonoverlapping(enter.as_ptr(), self.page.add(ENTER32), enter.len());
            std::ptr::copy_nonoverlapping(back.as_ptr(), self.page.add(BACK64), back.len());
            std::ptr::copy_nonoverlapping(c32.as_ptr(), self.page.add(CODE32), c32.len());
            let regs32 = self.page.add(REGS32) as *mut u32;
            for i in 0..8 {
                regs32.add(i).write_unaligned(r.gpr[i] as u32);
            }
            regs32.add(8).write_unaligned(((r.rflags & flags::ARITH) | flags::FIXED1 | flags::IF) as u32);
        }
        let mut regs = NRegs { target: base + ENTER32 as u64, rflags: flags::FIXED1 | flags::IF, ..*r };
        call_stub(&mut regs);
        let mut out = *r;
        // SAFETY: reads the register file the 32-bit code stored within the live page.
        unsafe {
            let regs32 = self.page.add(REGS32) as *const u32;
            for i in 0..8 {
                out.gpr[i] = regs32.add(i).read_unaligned() as u64;
            }
            out.rflags = regs32.add(8).read_unaligned() as u64;
        }
        out
    }

    /// A 1 KiB scratch buffer below 4 GiB (for 32-bit memory operands): its address and contents.
    pub fn low_buf(&mut self) -> (u32, &mut [u8]) {
        // SAFETY: bytes LOW_BUF..LOW_BUF+0x400 of the live page, used by nothing else: the 32-bit code
        // wrapper is asserted to end before LOW_BUF and the low stack (top 0x1ff0) uses a few dozen bytes.
        let s = unsafe { std::slice::from_raw_parts_mut(self.page.add(LOW_BUF), 0x400) };
        (self.page as u32 + LOW_BUF as u32, s)
    }
}

fn call_stub(regs: &mut NRegs) {
    let p: *mut NRegs = regs;
    // SAFETY: `p` points to a live NRegs. The stub saves RBX/RBP (not allowed as asm operands) on the
    // stack and declares every other general register clobbered; it pushes (no `nostack`), sets only
    // the arithmetic flags, IF and bit 1 through POPFQ (DF stays clear), calls `target` (an executable
    // page holding the caller's instruction followed by RET, which must not touch RSP), and writes the
    // register file back through `p`.
    unsafe {
        asm!(
            "push rbp",
            "push rbx",
            "push rdi",
            "push qword ptr [rdi + 136]",
            "push qword ptr [rdi + 128]",
            "popfq",
            "mov rax, [rdi]",
            "mov rcx, [rdi + 8]",
            "mov rdx, [rdi + 16]",
            "mov rbx, [rdi + 24]",
            "mov rbp, [rdi + 40]",
            "mov rsi, [rdi + 48]",
            "mov r8, [rdi + 64]",
            "mov r9, [rdi + 72]",
            "mov r10, [rdi + 80]",
            "mov r11, [rdi + 88]",
            "mov r12, [rdi + 96]",
            "mov r13, [rdi + 104]",
            "mov r14, [rdi + 112]",
            "mov r15, [rdi + 120]",
            "mov rdi, [rdi + 56]",
            "call qword ptr [rsp]",
            "push rdi",
            "mov rdi, [rsp + 16]",
            "pushfq",
            "pop qword ptr [rdi + 128]",
            "mov [rdi], rax",
            "mov [rdi + 8], rcx",
            "mov [rdi + 16], rdx",
            "mov [rdi + 24], rbx",
            "mov [rdi + 40], rbp",
            "mov [rdi + 48], rsi",
            "mov [rdi + 64], r8",
            "mov [rdi + 72], r9",
            "mov [rdi + 80], r10",
            "mov [rdi + 88], r11",
            "mov [rdi + 96], r12",
            "mov [rdi + 104], r13",
            "mov [rdi + 112], r14",
            "mov [rdi + 120], r15",
            "pop qword ptr [rdi + 56]",
            "add rsp, 16",
            "pop rbx",
            "pop rbp",
            inout("rdi") p => _,
            out("rax") _,
            out("rcx") _,
            out("rdx") _,
            out("rsi") _,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
            out("r12") _,
            out("r13") _,
            out("r14") _,
            out("r15") _,
        );
    }
}

/// 64-bit code at ENTER32 (called by the stub): saves RSP, switches to the low stack, far-returns to
/// the 32-bit code segment at CODE32.
fn enter32_code(base: u64) -> Vec<u8> {
    use iced_x86::code_asm::*;
    let mut a = CodeAssembler::new(64).expect("bitness");
    a.mov(rax, base + SAVE_RSP as u64).unwrap();
    a.mov(qword_ptr(rax), rsp).unwrap();
    a.mov(rsp, base + LOW_STACK as u64).unwrap();
    a.push(0x23).unwrap();
    a.mov(rax, base + CODE32 as u64).unwrap();
    a.push(rax).unwrap();
    a.db(&[0x48, 0xcb]).unwrap(); // retfq
    a.assemble(base + ENTER32 as u64).expect("assemble")
}

/// 64-bit code at BACK64 (reached by a 32-bit far return): restores DS/ES to null and the saved RSP,
/// and returns to the stub.
fn back64_code(base: u64) -> Vec<u8> {
    use iced_x86::code_asm::*;
    let mut a = CodeAssembler::new(64).expect("bitness");
    a.xor(eax, eax).unwrap();
    a.mov(ds, ax).unwrap();
    a.mov(es, ax).unwrap();
    a.mov(rax, base + SAVE_RSP as u64).unwrap();
    a.mov(rsp, qword_ptr(rax)).unwrap();
    a.ret().unwrap();
    a.assemble(base + BACK64 as u64).expect("assemble")
}

/// 32-bit code at CODE32: loads DS/ES from SS, the registers from REGS32, runs `code`, stores them,
/// and far-returns to BACK64 in the 64-bit code segment (0x33).
fn code32_wrapper(base: u64, code: &[u8]) -> Vec<u8> {
    use iced_x86::code_asm::*;
    let regs = (base + REGS32 as u64) as u32;
    let mut a = CodeAssembler::new(32).expect("bitness");
    a.mov(ax, ss).unwrap();
    a.mov(ds, ax).unwrap();
    a.mov(es, ax).unwrap();
    a.push(dword_ptr(regs + 32)).unwrap();
    a.popfd().unwrap();
    a.mov(eax, dword_ptr(regs)).unwrap();
    a.mov(ecx, dword_ptr(regs + 4)).unwrap();
    a.mov(edx, dword_ptr(regs + 8)).unwrap();
    a.mov(ebx, dword_ptr(regs + 12)).unwrap();
    a.mov(ebp, dword_ptr(regs + 20)).unwrap();
    a.mov(esi, dword_ptr(regs + 24)).unwrap();
    a.mov(edi, dword_ptr(regs + 28)).unwrap();
    let head = a.assemble(base + CODE32 as u64).expect("assemble");
    let mut b = CodeAssembler::new(32).expect("bitness");
    b.pushfd().unwrap();
    b.pop(dword_ptr(regs + 32)).unwrap();
    b.mov(dword_ptr(regs), eax).unwrap();
    b.mov(dword_ptr(regs + 4), ecx).unwrap();
    b.mov(dword_ptr(regs + 8), edx).unwrap();
    b.mov(dword_ptr(regs + 12), ebx).unwrap();
    b.mov(dword_ptr(regs + 20), ebp).unwrap();
    b.mov(dword_ptr(regs + 24), esi).unwrap();
    b.mov(dword_ptr(regs + 28), edi).unwrap();
    b.push(0x33).unwrap();
    b.push((base + BACK64 as u64) as u32).unwrap();
    b.retf().unwrap();
    let tail = b.assemble(0).expect("assemble");
    let mut out = head;
    out.extend_from_slice(code);
    out.extend_from_slice(&tail);
    out
}

// ------------------------------------------------------------------------------------ interpreter

/// The interpreter side: a test machine that executes one instruction at a time through its handler.
pub struct Emu {
    /// The bus (flat RAM).
    pub bus: TestBus,
    /// TLB.
    pub mmu: Mmu,
    /// CPU state.
    pub st: CpuState,
    bits: u32,
}

impl Emu {
    /// A machine in `mode`.
    pub fn new(mode: TestMode) -> Emu {
        let mut bus = TestBus::default();
        let st = cpu_in(mode, &mut bus);
        let bits = match mode {
            TestMode::Real => 16,
            TestMode::Prot32 => 32,
            TestMode::Long64 => 64,
        };
        Emu { bus, mmu: Mmu::default(), st, bits }
    }

    /// Executes the single instruction `code` at [`CODE`] through its handler (RIP advanced on success).
    pub fn exec(&mut self, code: &[u8]) -> Result<(), Fault> {
        let mut dec = Decoder::with_ip(self.bits, code, CODE, DecoderOptions::NONE);
        let i = dec.decode();
        assert!(!i.is_invalid() || self.bits == 64, "undecodable {code:02x?}");
        let handler = handler_for(if i.is_invalid() { Code::INVALID } else { i.code() });
        let has67 =
            code.iter().take_while(|b| matches!(b, 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3)).any(|&b| b == 0x67);
        let asize = match (self.bits, has67) {
            (16, false) | (32, true) => 2,
            (32, false) | (16, true) | (64, true) => 4,
            _ => 8,
        };
        let next_rip = CODE + i.len() as u64;
        let insn = Insn::new(i, handler, asize, next_rip);
        self.st.rip = CODE;
        let mut ctx =
            Ctx { st: &mut self.st, bus: &mut self.bus, mmu: &mut self.mmu, next_rip, break_block: false };
        (insn.handler)(&mut ctx, &insn)?;
        self.st.rip = ctx.next_rip;
        Ok(())
    }
}

// --------------------------------------------------------------------------------- comparison

/// A memory operand for [`Oracle::compare`]: register `base` points at a buffer holding `init`.
#[derive(Clone, Copy)]
pub struct MemArg<'a> {
    /// Index of the base register.
    pub base: usize,
    /// Initial contents (at most 256 bytes).
    pub init: &'a [u8],
    /// Offset of the operand within the buffer (the base register points there).
    pub at: usize,
}

/// What happened to one case.
#[derive(Debug)]
pub enum Outcome {
    /// Interpreter and host agree.
    Same,
    /// The interpreter raised a fault; the host was not run.
    Fault(Fault),
}

/// Native oracle plus interpreter, with counters.
pub struct Oracle {
    /// Host side.
    pub native: Native,
    /// Interpreter side.
    pub emu: Emu,
    /// Cases compared.
    pub cases: u64,
    /// Mismatches found (each also recorded in `report`, up to a limit).
    pub mismatches: u64,
    /// Descriptions of the first mismatches.
    pub report: Vec<String>,
    /// Mismatch counts per iced `Code`.
    pub by_code: Vec<(String, u64)>,
    buf: Vec<u8>,
}

impl Default for Oracle {
    fn default() -> Self {
        Self::new()
    }
}

impl Oracle {
    /// A fresh oracle (64-bit interpreter machine).
    pub fn new() -> Oracle {
        Oracle {
            native: Native::new(),
            emu: Emu::new(TestMode::Long64),
            cases: 0,
            mismatches: 0,
            report: Vec::new(),
            by_code: Vec::new(),
            buf: vec![0; 256 + 16],
        }
    }

    /// Runs 64-bit `code` with `gpr`/`rflags` on both sides and compares all registers (but RSP and the
    /// memory base), the six arithmetic flags and the memory buffer. Records a mismatch in `report`.
    pub fn compare(&mut self, code: &[u8], gpr: [u64; 16], rflags: u64, mem: Option<MemArg<'_>>) -> Outcome {
        let rflags = (rflags & flags::ARITH) | flags::FIXED1 | flags::IF;
        self.emu.st.gpr = gpr;
        self.emu.st.rflags = rflags;
        let mut ngpr = gpr;
        if let Some(m) = mem {
            let d = DATA as usize;
            self.emu.bus.ram[d..d + 256].fill(0);
            self.emu.bus.ram[d..d + m.init.len()].copy_from_slice(m.init);
            self.emu.st.gpr[m.base] = DATA + m.at as u64;
            let buf = self.host_buf();
            buf.fill(0);
            buf[..m.init.len()].copy_from_slice(m.init);
            ngpr[m.base] = buf.as_ptr() as u64 + m.at as u64;
        }
        let ein = self.emu.st.gpr;
        if let Err(f) = self.emu.exec(code) {
            return Outcome::Fault(f);
        }
        self.cases += 1;
        let n = self.native.run(code, &NRegs { gpr: ngpr, rflags, target: 0 });
        let mut diffs = String::new();
        for k in 0..16 {
            if k == 4 || mem.is_some_and(|m| m.base == k) {
                continue;
            }
            if self.emu.st.gpr[k] != n.gpr[k] {
                diffs += &format!(" r{k}: emu {:#x} host {:#x};", self.emu.st.gpr[k], n.gpr[k]);
            }
        }
        let (ef, nf) = (self.emu.st.rflags & flags::ARITH, n.rflags & flags::ARITH);
        if ef != nf {
            diffs += &format!(" flags: emu {} host {};", flag_str(ef), flag_str(nf));
        }
        if self.emu.st.rflags & !flags::ARITH != rflags & !flags::ARITH {
            diffs += &format!(" non-arith flags changed: {:#x};", self.emu.st.rflags);
        }
        if let Some(m) = mem {
            let d = DATA as usize;
            let host = self.host_buf().to_vec();
            if self.emu.bus.ram[d..d + 256] != host[..] {
                diffs += &format!(
                    " memory: emu {:02x?} host {:02x?};",
                    &self.emu.bus.ram[d..d + m.init.len()],
                    &host[..m.init.len()]
                );
            }
        }
        if !diffs.is_empty() {
            self.mismatch(64, code, &ein, rflags, &diffs);
        }
        Outcome::Same
    }

    /// Runs 32-bit `code` in the interpreter (32-bit protected mode) and natively in compatibility mode,
    /// comparing the eight 32-bit registers (but ESP) and the arithmetic flags. An optional memory
    /// operand: register `mem.base` points into a buffer (natively the low scratch area, in the
    /// interpreter [`DATA`]); the buffers are compared afterwards.
    pub fn compare32(
        &mut self,
        emu32: &mut Emu,
        code: &[u8],
        gpr: [u32; 8],
        rflags: u64,
        mem: Option<MemArg<'_>>,
    ) -> Outcome {
        let rflags = (rflags & flags::ARITH) | flags::FIXED1 | flags::IF;
        let mut ngpr = [0u64; 16];
        for k in 0..8 {
            emu32.st.gpr[k] = gpr[k] as u64;
            ngpr[k] = gpr[k] as u64;
        }
        emu32.st.gpr[4] = crate::testutil::STACK;
        emu32.st.rflags = rflags;
        if let Some(m) = mem {
            let d = DATA as usize;
            emu32.bus.ram[d..d + 256].fill(0);
            emu32.bus.ram[d..d + m.init.len()].copy_from_slice(m.init);
            emu32.st.gpr[m.base] = DATA + m.at as u64;
            let (addr, buf) = self.native.low_buf();
            buf[..256].fill(0);
            buf[..m.init.len()].copy_from_slice(m.init);
            ngpr[m.base] = addr as u64 + m.at as u64;
        }
        let ein = emu32.st.gpr;
        if let Err(f) = emu32.exec(code) {
            return Outcome::Fault(f);
        }
        self.cases += 1;
        let n = self.native.run32(code, &NRegs { gpr: ngpr, rflags, target: 0 });
        let mut diffs = String::new();
        for k in 0..8 {
            if k == 4 || mem.is_some_and(|m| m.base == k) {
                continue;
            }
            if emu32.st.gpr[k] != n.gpr[k] {
                diffs += &format!(" r{k}: emu {:#x} host {:#x};", emu32.st.gpr[k], n.gpr[k]);
            }
        }
        let (ef, nf) = (emu32.st.rflags & flags::ARITH, n.rflags & flags::ARITH);
        if ef != nf {
            diffs += &format!(" flags: emu {} host {};", flag_str(ef), flag_str(nf));
        }
        if let Some(m) = mem {
            let d = DATA as usize;
            let e = emu32.bus.ram[d..d + 256].to_vec();
            let (_, buf) = self.native.low_buf();
            if e[..] != buf[..256] {
                diffs +=
                    &format!(" memory: emu {:02x?} host {:02x?};", &e[..m.init.len()], &buf[..m.init.len()]);
            }
        }
        if !diffs.is_empty() {
            self.mismatch(32, code, &ein, rflags, &diffs);
        }
        Outcome::Same
    }

    /// The 16-byte aligned 256-byte host buffer for memory operands.
    fn host_buf(&mut self) -> &mut [u8] {
        let pad = (16 - (self.buf.as_ptr() as usize & 15)) & 15;
        &mut self.buf[pad..pad + 256]
    }

    fn mismatch(&mut self, bits: u32, code: &[u8], gpr: &[u64; 16], rflags: u64, diffs: &str) {
        self.mismatches += 1;
        let mut dec = Decoder::with_ip(bits, code, 0, DecoderOptions::NONE);
        let ins = dec.decode();
        let key = format!("{:?}", ins.code());
        let seen = self.by_code.iter_mut().find(|(k, _)| *k == key);
        let n = match seen {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.by_code.push((key, 1));
                1
            }
        };
        if self.report.len() < 60 && n <= 4 {
            let text = ins.to_string();
            self.report.push(format!(
                "{text} [{code:02x?}] gpr={gpr:x?} flags={}:{diffs}",
                flag_str(rflags & flags::ARITH)
            ));
        }
    }

    /// Panics with the report if anything mismatched; prints the figures otherwise.
    pub fn finish(&self, what: &str) {
        assert!(
            self.mismatches == 0,
            "{what}: {} mismatches in {} cases, by code {:?}:\n{}",
            self.mismatches,
            self.cases,
            self.by_code,
            self.report.join("\n")
        );
        assert!(self.cases > 0, "{what}: no cases ran");
        println!("native oracle {what}: {} cases, 0 mismatches", self.cases);
    }
}

/// "ODSZAPC"-style rendering of arithmetic flags.
pub fn flag_str(f: u64) -> String {
    [
        (flags::OF, 'O'),
        (flags::SF, 'S'),
        (flags::ZF, 'Z'),
        (flags::AF, 'A'),
        (flags::PF, 'P'),
        (flags::CF, 'C'),
    ]
    .iter()
    .map(|&(b, c)| if f & b != 0 { c } else { '.' })
    .collect()
}

// ------------------------------------------------------------------------------- instruction gen

const R8: [Register; 19] = [
    Register::AL,
    Register::CL,
    Register::DL,
    Register::BL,
    Register::AH,
    Register::CH,
    Register::DH,
    Register::BH,
    Register::BPL,
    Register::SIL,
    Register::DIL,
    Register::R8L,
    Register::R9L,
    Register::R10L,
    Register::R11L,
    Register::R12L,
    Register::R13L,
    Register::R14L,
    Register::R15L,
];

/// Encodes `code` (64-bit mode) with random register operands (never RSP) and immediates; `imm`
/// overrides the value of an 8-bit immediate. With `mem`, the `r/m` (or memory-only) operand is `[rsi]`
/// and no other operand uses RSI. Returns `None` if the code has an operand kind this generator does
/// not build, or (without `mem`) a memory-only operand, or the random choice cannot be encoded (AH
/// with REX).
pub fn gen_form(code: Code, rng: &mut Rng, imm: Option<u64>, mem: bool) -> Option<Vec<u8>> {
    let oc = code.op_code();
    let avoid = if mem { 6 } else { 4 };
    let pick = |rng: &mut Rng, first: Register| loop {
        let k = rng.below(16) as usize;
        if k != 4 && k != avoid {
            return Register::values().nth(first as usize + k).unwrap_or(Register::None);
        }
    };
    for _ in 0..20 {
        let mut i = Instruction::default();
        i.set_code(code);
        let mut ok = true;
        let mut used_mem = false;
        for n in 0..oc.op_count() {
            let reg = |i: &mut Instruction, r: Register| {
                i.set_op_kind(n, OpKind::Register);
                i.set_op_register(n, r);
            };
            let kind = oc.op_kind(n);
            let rm = matches!(kind, K::r8_or_mem | K::r16_or_mem | K::r32_or_mem | K::r64_or_mem);
            if (mem && rm && !used_mem) || kind == K::mem {
                if !mem {
                    return None;
                }
                used_mem = true;
                i.set_op_kind(n, OpKind::Memory);
                i.set_memory_base(Register::RSI);
                i.set_memory_index(Register::None);
                i.set_memory_index_scale(1);
                i.set_memory_displ_size(0);
                i.set_memory_displacement64(0);
                continue;
            }
            let imm8 = imm.unwrap_or_else(|| rng.value()) as u8;
            match kind {
                K::r8_or_mem | K::r8_reg | K::r8_opcode => loop {
                    let r = rng.pick(&R8);
                    if !(mem && r == Register::SIL) {
                        reg(&mut i, r);
                        break;
                    }
                },
                K::r16_or_mem | K::r16_reg | K::r16_rm | K::r16_opcode => {
                    let r = pick(rng, Register::AX);
                    reg(&mut i, r)
                }
                K::r32_or_mem | K::r32_reg | K::r32_rm | K::r32_opcode | K::r32_vvvv => {
                    let r = pick(rng, Register::EAX);
                    reg(&mut i, r)
                }
                K::r64_or_mem | K::r64_reg | K::r64_rm | K::r64_opcode | K::r64_vvvv => {
                    let r = pick(rng, Register::RAX);
                    reg(&mut i, r)
                }
                K::al => reg(&mut i, Register::AL),
                K::cl => reg(&mut i, Register::CL),
                K::ax => reg(&mut i, Register::AX),
                K::eax => reg(&mut i, Register::EAX),
                K::rax => reg(&mut i, Register::RAX),
                K::imm8 => {
                    i.set_op_kind(n, OpKind::Immediate8);
                    i.set_immediate8(imm8);
                }
                K::imm8_const_1 => {
                    i.set_op_kind(n, OpKind::Immediate8);
                    i.set_immediate8(1);
                }
                K::imm8sex16 => {
                    i.set_op_kind(n, OpKind::Immediate8to16);
                    i.set_immediate8to16(imm8 as i8 as i16);
                }
                K::imm8sex32 => {
                    i.set_op_kind(n, OpKind::Immediate8to32);
                    i.set_immediate8to32(imm8 as i8 as i32);
                }
                K::imm8sex64 => {
                    i.set_op_kind(n, OpKind::Immediate8to64);
                    i.set_immediate8to64(imm8 as i8 as i64);
                }
                K::imm16 => {
                    i.set_op_kind(n, OpKind::Immediate16);
                    i.set_immediate16(rng.value() as u16);
                }
                K::imm32 => {
                    i.set_op_kind(n, OpKind::Immediate32);
                    i.set_immediate32(rng.value() as u32);
                }
                K::imm32sex64 => {
                    i.set_op_kind(n, OpKind::Immediate32to64);
                    i.set_immediate32to64(rng.value() as i32 as i64);
                }
                K::imm64 => {
                    i.set_op_kind(n, OpKind::Immediate64);
                    i.set_immediate64(rng.value());
                }
                _ => ok = false,
            }
        }
        if !ok || (mem && !used_mem) {
            return None;
        }
        let mut e = Encoder::new(64);
        if e.encode(&i, CODE).is_ok() {
            return Some(e.take_buffer());
        }
    }
    None
}

/// [`gen_form`] with register operands only.
pub fn gen_reg_form(code: Code, rng: &mut Rng, imm: Option<u64>) -> Option<Vec<u8>> {
    gen_form(code, rng, imm, false)
}

/// Every 64-bit-mode `Code` of the given mnemonics and encoding whose operands are all registers or
/// immediates in some form (memory-capable `r/m` operands count: the generator picks registers).
pub fn codes_of(mnemonics: &[iced_x86::Mnemonic], vex: bool) -> Vec<Code> {
    let want = if vex { iced_x86::EncodingKind::VEX } else { iced_x86::EncodingKind::Legacy };
    Code::values()
        .filter(|c| mnemonics.contains(&c.mnemonic()))
        .filter(|c| c.op_code().encoding() == want && c.op_code().mode64())
        .collect()
}

/// Random register file for a case.
pub fn random_gpr(rng: &mut Rng) -> [u64; 16] {
    let mut g = [0u64; 16];
    for v in g.iter_mut() {
        *v = rng.value();
    }
    g[4] = crate::testutil::STACK;
    g
}

/// Runs `per_code` random cases for every code, plus every 8-bit immediate in `imm_sweep` for codes
/// with an imm8 operand, comparing with the host. Faults (reported by the interpreter) are passed to
/// `on_fault`, which must check they are expected.
pub fn sweep(
    o: &mut Oracle,
    rng: &mut Rng,
    codes: &[Code],
    per_code: usize,
    imm_sweep: &[u64],
    mut on_fault: impl FnMut(&[u8], &[u64; 16], &Fault),
) {
    for &c in codes {
        let has_imm8 = (0..c.op_code().op_count()).any(|n| c.op_code().op_kind(n) == K::imm8);
        let imms: Vec<Option<u64>> = if has_imm8 && !imm_sweep.is_empty() {
            imm_sweep.iter().map(|&v| Some(v)).collect()
        } else {
            vec![None]
        };
        for imm in imms {
            for _ in 0..per_code {
                let Some(code) = gen_reg_form(c, rng, imm) else { continue };
                let gpr = random_gpr(rng);
                let fl = rng.flags();
                if let Outcome::Fault(f) = o.compare(&code, gpr, fl, None) {
                    on_fault(&code, &gpr, &f);
                }
            }
        }
    }
}

/// Like [`sweep`] with the `r/m` operand in memory at `[rsi]` (a 256-byte buffer of random bytes, RSI
/// pointing at its middle). `fixup` may adjust the registers and the buffer of each case (for operands
/// that address memory, such as BT bit offsets, which must stay within the buffer).
pub fn sweep_mem(
    o: &mut Oracle,
    rng: &mut Rng,
    codes: &[Code],
    per_code: usize,
    mut fixup: impl FnMut(&Instruction, &mut Rng, &mut [u64; 16], &mut [u8]),
) {
    let mut init = [0u8; 256];
    for &c in codes {
        for _ in 0..per_code {
            let Some(code) = gen_form(c, rng, None, true) else { break };
            let mut g = random_gpr(rng);
            for b in init.iter_mut() {
                *b = rng.value() as u8;
            }
            let ins = Decoder::with_ip(64, &code, CODE, DecoderOptions::NONE).decode();
            fixup(&ins, rng, &mut g, &mut init);
            let fl = rng.flags();
            if let Outcome::Fault(f) = o.compare(&code, g, fl, Some(MemArg { base: 6, init: &init, at: 128 }))
            {
                panic!("{ins}: unexpected {f:?}");
            }
        }
    }
}
