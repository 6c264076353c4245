//! Helpers for unit tests: a flat-RAM bus and a CPU set up directly in real, protected or long mode
//! (descriptor caches and page tables written without running a mode switch).
#![allow(missing_docs)]

use crate::bus::CpuBus;
use crate::interp::{Exit, Interpreter};
use crate::state::{CpuState, Seg, Segment, attr, cr0, cr4, efer};
use std::ptr::NonNull;

/// RAM size of the test machine (2 MiB).
pub const RAM: usize = 2 << 20;
/// Where test code is placed.
pub const CODE: u64 = 0x1000;
/// Where the stack top is.
pub const STACK: u64 = 0x8000;
/// A data area tests may use.
pub const DATA: u64 = 0x10000;
/// Page tables for long mode (identity map of the first 1 GiB with 2 MiB pages).
const PML4: u64 = 0x100000;
/// The long-mode page directory under [`PML4`] (entry 0 maps linear 0..2 MiB); a test may point an
/// entry at a 4 KiB page table of its own.
pub const PD: u64 = PML4 + 0x2000;

/// A bus with flat RAM, a port log, and an external interrupt and an NMI a test can raise.
pub struct TestBus {
    pub ram: Vec<u8>,
    pub outs: Vec<(u16, u8, u32)>,
    pub in_value: u32,
    pub tsc: u64,
    /// A pending external interrupt: its vector, taken by `acknowledge_interrupt`.
    pub irq: Option<u8>,
    /// A pending NMI, taken by `take_nmi`.
    pub nmi: bool,
}

impl Default for TestBus {
    fn default() -> Self {
        TestBus { ram: vec![0; RAM], outs: Vec::new(), in_value: 0xffff_ffff, tsc: 0, irq: None, nmi: false }
    }
}

impl CpuBus for TestBus {
    fn ram_page(&mut self, page: u64, _write: bool) -> Option<NonNull<u8>> {
        if (page as usize) < self.ram.len() {
            NonNull::new(self.ram[page as usize..].as_mut_ptr())
        } else {
            None
        }
    }
    fn read_phys(&mut self, addr: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = *self.ram.get(addr as usize + i).unwrap_or(&0xff);
        }
    }
    fn write_phys(&mut self, addr: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(r) = self.ram.get_mut(addr as usize + i) {
                *r = *b;
            }
        }
    }
    fn io_in(&mut self, _port: u16, size: u8) -> u32 {
        self.in_value & (if size == 4 { u32::MAX } else { (1 << (size * 8)) - 1 })
    }
    fn io_out(&mut self, port: u16, size: u8, value: u32) {
        self.outs.push((port, size, value));
    }
    fn interrupt_pending(&mut self) -> bool {
        self.irq.is_some()
    }
    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        self.irq.take()
    }
    fn nmi_pending(&mut self) -> bool {
        self.nmi
    }
    fn take_nmi(&mut self) {
        self.nmi = false;
    }
    fn tsc(&mut self, icount: u64) -> u64 {
        self.tsc + icount
    }
}

/// The three test setups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestMode {
    /// Real mode, all segments 0.
    Real,
    /// 32-bit flat protected mode, CPL 0, no paging.
    Prot32,
    /// 64-bit long mode, CPL 0, identity-mapped first GiB.
    Long64,
}

/// A CPU in `mode` with RIP at [`CODE`] and RSP at [`STACK`].
pub fn cpu_in(mode: TestMode, bus: &mut TestBus) -> CpuState {
    // The host's CPU is the oracle of the native tests: follow its vendor where results are undefined.
    // The model is `max`, so every implemented instruction exists (a test of another model sets it).
    let mut st = CpuState {
        rip: CODE,
        quirks: crate::state::Quirks::host(),
        model: crate::model::CpuModel::max(),
        ..CpuState::default()
    };
    st.gpr[4] = STACK;
    match mode {
        TestMode::Real => {
            for s in Seg::ALL {
                *st.sreg_mut(s) = Segment::real(0);
            }
            st.sreg_mut(Seg::Cs).attr |= attr::CODE;
        }
        TestMode::Prot32 | TestMode::Long64 => {
            st.cr0 = cr0::PE | cr0::ET;
            let data = Segment {
                selector: 0x10,
                attr: attr::P | attr::S | attr::RW | attr::ACCESSED | attr::DB | attr::G,
                limit: 0xffff_ffff,
                base: 0,
            };
            for s in Seg::ALL {
                *st.sreg_mut(s) = data;
            }
            let mut cs = data;
            cs.selector = 0x08;
            cs.attr |= attr::CODE;
            if mode == TestMode::Long64 {
                cs.attr = (cs.attr & !attr::DB) | attr::L;
                st.cr0 |= cr0::PG;
                st.cr4 |= cr4::PAE;
                st.efer = efer::LME | efer::LMA;
                st.cr3 = PML4;
                let w = |bus: &mut TestBus, a: u64, v: u64| {
                    bus.ram[a as usize..a as usize + 8].copy_from_slice(&v.to_le_bytes())
                };
                w(bus, PML4, (PML4 + 0x1000) | 3);
                w(bus, PML4 + 0x1000, PD | 3);
                for i in 0..512u64 {
                    w(bus, PD + i * 8, (i << 21) | 0x83);
                }
            }
            *st.sreg_mut(Seg::Cs) = cs;
            // A GDT matching the caches, for instructions that reload segments.
            st.gdtr.base = 0x500;
            st.gdtr.limit = 0x2f;
            let gdt: [u64; 4] = [
                0,
                if mode == TestMode::Long64 { 0x00af_9b00_0000_ffff } else { 0x00cf_9b00_0000_ffff },
                0x00cf_9300_0000_ffff,
                0,
            ];
            for (i, d) in gdt.iter().enumerate() {
                bus.ram[0x500 + i * 8..0x508 + i * 8].copy_from_slice(&d.to_le_bytes());
            }
        }
    }
    st
}

/// Runs `code` in `mode` until it executes HLT (append 0xF4) or `max` instructions retire.
pub fn run(
    mode: TestMode,
    code: &[u8],
    setup: impl FnOnce(&mut CpuState, &mut TestBus),
) -> (CpuState, TestBus, Exit) {
    let mut bus = TestBus::default();
    let mut st = cpu_in(mode, &mut bus);
    bus.ram[CODE as usize..CODE as usize + code.len()].copy_from_slice(code);
    bus.ram[CODE as usize + code.len()] = 0xf4;
    setup(&mut st, &mut bus);
    let mut it = Interpreter::new();
    let exit = it.run(&mut st, &mut bus, 100_000);
    (st, bus, exit)
}

/// Assembles with iced's code assembler at [`CODE`] for `bits`.
pub fn asm(bits: u32, f: impl FnOnce(&mut iced_x86::code_asm::CodeAssembler)) -> Vec<u8> {
    let mut a = iced_x86::code_asm::CodeAssembler::new(bits).expect("bitness");
    f(&mut a);
    a.assemble(CODE).expect("assemble")
}
