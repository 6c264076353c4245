//! PCI bus 0: configuration mechanism #1, configuration spaces with write masks, BAR sizing and
//! decode windows, and the i440FX/PIIX3 functions of a PC.
//!
//! # Offsets
//!
//! [`PciBus`] is the host side of configuration mechanism #1 (PCI Local Bus 3.0, 3.2.2.3.2):
//!
//! | Port | Offset | Register |
//! |---|---|---|
//! | 0xCF8-0xCFB | 0-3 | CONFIG_ADDRESS: only dword accesses at 0xCF8 reach it (bit 31 enable, bus 23:16, device 15:11, function 10:8, register 7:2) |
//! | 0xCFC-0xCFF | 4-7 | CONFIG_DATA: byte, word and dword accesses at `register + (port & 3)` |
//!
//! Byte port 0xCF9 is the PIIX reset control register, a different device
//! ([`crate::acpi::ResetControl`]); the board maps that one port over this window.
//! With the enable bit clear, or for a bus other than 0 or an absent function, reads return all ones
//! and writes are dropped (a master abort).
//!
//! # Functions and windows
//!
//! Each function implements [`PciFunction`] on top of a [`ConfigSpace`], which holds the 256 bytes, a
//! write mask, a write-one-to-clear mask and up to six BAR definitions. The BAR sizing protocol falls out
//! of the write mask: the address bits below the BAR's size are read-only zeros, the type bits read-only.
//! Whenever a config write changes what a function decodes (command register I/O / memory enable, a BAR,
//! or a chipset register like the PIIX4 PMBA), [`PciBus`] queues a [`PciBarEvent`] with the window's old
//! and new base; the board drains them with [`PciBus::take_events`] and maps or unmaps the window. A
//! window is decoded when its enable bit is set, its base is not zero and it lies entirely inside the
//! address space (64 KiB of ports, 4 GiB for 32-bit memory BARs, 2^52 for 64-bit ones). Window indices
//! 0-5 are the BARs; functions number chipset windows from [`FIRST_CHIPSET_WINDOW`] on.
//!
//! A function may also have an expansion ROM ([`ConfigSpace::set_rom`]; QEMU's `romfile=`): the ROM BAR
//! at 0x30 sizes like a memory BAR (bits 31:11), its bit 0 enables decode, and the ROM is decoded only
//! while that bit and the command register's memory enable are both set (PCI 3.0, 6.2.5.2). Its window
//! is [`ROM_WINDOW`]; reads return the image (zeros up to the power-of-two window), writes are dropped.
//! Without a ROM the register reads as zero and ignores writes, so software sees no ROM.
//!
//! # Interrupt routing
//!
//! A PCI device drives INTx through GSI `16 + pirq` on `ctx.irq`, where `pirq` is given by
//! [`pirq_of`] (the i440FX/PIIX slot swizzle). The I/O APIC sees PIRQA-D on pins 16-19 directly; the
//! board also feeds each PIRQ to the 8259 input selected by the PIIX3's PIRQRC registers 0x60-0x63
//! ([`Piix3Isa::pirq_route`]).

use vmcore::{Device, DeviceCtx, Snapshot, SnapshotError, SnapshotReader, SnapshotWriter, VirtTime};

use crate::fw_cfg::DmaMemory;
use crate::msi::MsiMessage;
use crate::{le_value, put_le};

/// Window index of the first chipset-specific window (after the six BARs).
pub const FIRST_CHIPSET_WINDOW: u8 = 6;

/// Window index of the expansion ROM (the ROM BAR at 0x30), apart from the BARs and chipset windows. The
/// board serves it from [`ConfigSpace::rom_read`] for every function, so devices need no code for it.
pub const ROM_WINDOW: u8 = 0x30;

/// Standard register offsets.
pub mod reg {
    /// Vendor ID (16 bits).
    pub const VENDOR_ID: usize = 0x00;
    /// Device ID (16 bits).
    pub const DEVICE_ID: usize = 0x02;
    /// Command (16 bits).
    pub const COMMAND: usize = 0x04;
    /// Status (16 bits).
    pub const STATUS: usize = 0x06;
    /// Revision ID.
    pub const REVISION: usize = 0x08;
    /// Programming interface, subclass, base class (bytes 0x09-0x0B).
    pub const CLASS: usize = 0x09;
    /// Header type (bit 7: multi-function).
    pub const HEADER_TYPE: usize = 0x0E;
    /// BAR 0.
    pub const BAR0: usize = 0x10;
    /// Expansion ROM base address (type-0 header).
    pub const ROM_ADDRESS: usize = 0x30;
    /// Capabilities pointer.
    pub const CAP_PTR: usize = 0x34;
    /// Interrupt line.
    pub const INTERRUPT_LINE: usize = 0x3C;
    /// Interrupt pin (1 = INTA#).
    pub const INTERRUPT_PIN: usize = 0x3D;
}

/// Command register: I/O space enable.
pub const CMD_IO: u16 = 1 << 0;
/// Command register: memory space enable.
pub const CMD_MEM: u16 = 1 << 1;
/// Command register: bus master enable.
pub const CMD_MASTER: u16 = 1 << 2;
/// Command register: interrupt disable.
pub const CMD_INTX_DISABLE: u16 = 1 << 10;
/// Status register: capabilities list present.
pub const STATUS_CAP_LIST: u16 = 1 << 4;

mod bus;
mod config;
mod i440fx;
mod piix3;
mod piix4;
#[cfg(test)]
mod tests;

pub use bus::PciBus;
pub use config::*;
pub use i440fx::{I440fx, PAM0, PamAttr, pam_segments};
pub use piix3::{PIRQRC, Piix3Ide, Piix3Isa};
pub use piix4::{PM_IO_SIZE, PM_WINDOW, Piix4Pm, SMB_WINDOW};

/// One function on bus 0: a configuration space plus whatever chipset registers it decodes.
///
/// Its state (configuration space included) is saved and restored through the [`Snapshot`]
/// supertrait, whose restore reports the decode windows that moved.
pub trait PciFunction: Snapshot<Restored = Vec<BarChange>> {
    /// A short, stable name ("i440fx").
    fn name(&self) -> &str;
    /// The configuration space.
    fn config(&self) -> &ConfigSpace;
    /// The configuration space, mutable.
    fn config_mut(&mut self) -> &mut ConfigSpace;

    /// A guest configuration read.
    fn config_read(&mut self, off: usize, data: &mut [u8]) {
        self.config().read(off, data);
    }

    /// A guest configuration write; returns the windows that moved.
    fn config_write(&mut self, off: usize, data: &[u8]) -> Vec<BarChange> {
        self.config_mut().write(off, data)
    }

    /// Machine reset; returns the windows that stop being decoded.
    fn reset(&mut self) -> Vec<BarChange> {
        self.config_mut().reset()
    }

    // A function that serves its own BARs (added with `Board::add_pci_device`) implements the rest.

    /// A guest read of `data.len()` bytes at offset `off` of decode window `window` (BAR n). Only
    /// called while the window is decoded.
    fn bar_read(&mut self, _ctx: &mut DeviceCtx<'_>, _window: u8, _off: u64, data: &mut [u8]) {
        data.fill(0xFF);
    }

    /// A guest write at offset `off` of decode window `window`.
    fn bar_write(&mut self, _ctx: &mut DeviceCtx<'_>, _window: u8, _off: u64, _data: &[u8]) {}

    /// The level of the function's INTx# pin now (asserted = true). The board ORs the functions
    /// sharing a PIRQ line ([`pirq_of`] of the slot and the interrupt pin register).
    fn intx(&self) -> bool {
        false
    }

    /// Whether a bus-master transfer is waiting: the board then calls [`PciFunction::run_dma`] before
    /// the guest's next instruction. The function never touches memory itself.
    fn dma_pending(&self) -> bool {
        false
    }

    /// Runs the waiting transfer over `mem` (guest memory as the function sees it as bus master).
    fn run_dma(&mut self, _mem: &mut dyn DmaMemory) {}

    /// The message-signalled interrupts (memory writes) the function issued since the last call, in
    /// order. The board carries each out as a bus-master dword write.
    fn take_msi(&mut self) -> Vec<MsiMessage> {
        Vec::new()
    }

    /// The next virtual time at which the function needs [`PciFunction::advance`] (a command that
    /// completes later, a timer), if any. The machine runs the CPU exactly up to it, so the event lands
    /// on the same instruction in every run. A guest access that moves it earlier sets
    /// `ctx.requests.reschedule`.
    fn next_deadline(&self) -> Option<VirtTime> {
        None
    }

    /// Brings the function up to `ctx.now` once its deadline has passed: complete what is due, raise
    /// INTx# or queue MSIs and transfers (the board services them right after, as after an access).
    fn advance(&mut self, _ctx: &mut DeviceCtx<'_>) {}

    /// The function as `Any`, for the host side to reach its own interface (the display of the VGA);
    /// `None` for functions that offer none.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// Devfn of the i440FX host bridge.
pub const DEVFN_HOST: u8 = 0x00;
/// Devfn of the PIIX3 ISA bridge.
pub const DEVFN_ISA: u8 = 0x08;
/// Devfn of the PIIX3 IDE function.
pub const DEVFN_IDE: u8 = 0x09;
/// Devfn of the PIIX4 PM function.
pub const DEVFN_PM: u8 = 0x0B;
