//! Ferrite's legacy PC devices, each modelled register by register from its datasheet and driven only by
//! virtual time ([`vmcore::VirtTime`]): no device reads the host clock, schedules per-tick events or panics on
//! guest input.
//!
//! Every device implements [`vmcore::Device`]. Port devices see *offsets* into their window: the machine
//! registers a port range and passes `offset = port - range_start + offset_base`. The offsets each device
//! expects are listed below (and in each module's docs); the simplest wiring is to register every range
//! with the `offset_base` given here.
//!
//! | Device | Type | Ports / window | Offsets | IRQ |
//! |---|---|---|---|---|
//! | 16550A UART | [`Uart16550`] | COM1 0x3F8-0x3FF, COM2 0x2F8-0x2FF | 0-7 | 4 / 3 (constructor) |
//! | 8259A PIC pair | [`DualPic`] | 0x20-0x21, 0xA0-0xA1, ELCR 0x4D0-0x4D1 | `port - 0x20`: 0-1, 0x80-0x81, 0x4B0-0x4B1 | INTR output via [`DualPic::has_interrupt`] |
//! | 8254 PIT | [`Pit8254`] | 0x40-0x43, port B 0x61 | `port - 0x40`: 0-3, 0x21 | 0 (OUT0) |
//! | MC146818 RTC/CMOS | [`Rtc`] | 0x70-0x71 | 0-1 | 8 |
//! | 8042 keyboard controller | [`I8042`] | 0x60, 0x64 | `port - 0x60`: 0, 4 | 1, 12 |
//! | System control port A | [`Port92`] | 0x92 | 0 | - |
//! | Bochs/QEMU debug console | [`DebugConsole`] | 0xE9 | 0 | - |
//! | isa-debug-exit | [`DebugExit`] | 0xF4 | 0 (any width) | - |
//! | 82093AA I/O APIC | [`IoApic`] | MMIO 0xFEC0_0000, 4 KiB | 0x00, 0x10, 0x40 | messages via [`IoApic::take_messages`] |
//! | Local APIC | [`LocalApic`] | MMIO 0xFEE0_0000, 4 KiB, and x2APIC MSRs 0x800-0x8FF | 0x000-0xFF0 | vectors via [`LocalApic::has_interrupt`] |
//! | PCI configuration mechanism #1, bus 0 | [`PciBus`] (i440FX, PIIX3, PIIX3 IDE, PIIX4 PM functions in [`pci`]) | 0xCF8-0xCFF | `port - 0xCF8`: 0 (dword), 4-7 | PCI INTx on GSIs 16-19 (see [`pci`]) |
//! | PIIX reset control | [`ResetControl`] | 0xCF9 (byte) | 0 | - |
//! | PIIX4 ACPI PM block | [`PmDevice`] | PMBA (0x600 on this board), 64 ports | 0x00-0x0F | 9 (SCI, level) |
//! | QEMU `edu` (PCI 1234:11e8, see [`edu`]) | [`Edu`], a [`pci::PciFunction`] serving its own BAR | BAR0: 1 MiB MMIO | 0x00-0x9F | INTA# or MSI ([`msi`]) |
//! | QEMU fw_cfg (with DMA) | [`FwCfg`] | 0x510-0x51B | 0-1 (selector, data), 4-11 (DMA address) | - (DMA through [`DmaMemory`]) |
//! | QEMU pc-testdev | [`TestDev`] | 0xE0-0xE7, 0x2000-0x2017, MMIO 0xFF00_0000 64 KiB | 0-7, 0x100-0x117; MMIO 0-0xFFFF | ISA 0-15, as written |
//! | Bochs shutdown port | [`ShutdownPort`] | 0x8900 | 0 | - |
//!
//! # Interrupt flow
//!
//! Devices drive lines in [`vmcore::IrqLevels`] (`ctx.irq`). The machine propagates those levels to the
//! interrupt controllers: [`DualPic::set_irq_levels`] (ISA lines 0-15) and [`IoApic::set_irq_levels`]
//! (GSIs 0-23). The PIC's INTR output is [`DualPic::has_interrupt`]; the CPU's INTA cycle is
//! [`DualPic::acknowledge`]. The I/O APIC produces [`IoApicMessage`]s that the machine hands to
//! [`LocalApic::accept`]; the CPU takes vectors with [`LocalApic::has_interrupt`] /
//! [`LocalApic::acknowledge`], and EOIs of level-triggered vectors come back out of
//! [`LocalApic::take_eois`] for [`IoApic::eoi`].
//!
//! # Timers
//!
//! Timing devices (PIT, RTC, UART receive timeout, local APIC timer) compute their counters from
//! `ctx.now` and report the next instant they need attention through [`vmcore::Device::next_deadline`]; the
//! machine calls [`vmcore::Device::advance`] once that instant has passed. Whenever a guest access moves a
//! device's deadline earlier, the device sets `ctx.requests.reschedule`.
#![deny(missing_docs)]

pub mod acpi;
pub mod debug;
pub mod edu;
pub mod fw_cfg;
pub mod i8042;
pub mod ioapic;
pub mod lapic;
pub mod msi;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod port92;
pub mod rtc;
pub mod testdev;
pub mod uart;
pub mod vga;

pub use acpi::{PmDevice, ResetControl};
pub use debug::{DebugConsole, DebugExit};
pub use edu::Edu;
pub use fw_cfg::{DmaMemory, FwCfg};
pub use i8042::I8042;
pub use ioapic::{IoApic, IoApicMessage};
pub use lapic::{IpiMessage, LocalApic};
pub use msi::{MsiCapability, MsiMessage};
pub use pci::PciBus;
pub use pic::DualPic;
pub use pit::Pit8254;
pub use port92::Port92;
pub use rtc::{CmosConfig, Rtc};
pub use testdev::{ShutdownPort, TestDev};
pub use uart::Uart16550;

/// Where a device sends the bytes it outputs (UART transmitter, debug console).
pub type ByteSink = Box<dyn FnMut(u8) + Send>;

use vmcore::{DeviceCtx, VirtTime};

/// Sets `ctx.requests.reschedule` if `after` is earlier than `before` (a guest access armed a timer).
pub(crate) fn note_deadline(ctx: &mut DeviceCtx<'_>, before: Option<VirtTime>, after: Option<VirtTime>) {
    let earlier = match (before, after) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(b), Some(a)) => a < b,
    };
    if earlier {
        ctx.requests.reschedule = true;
    }
}

/// Little-endian value of up to 8 bytes of `data`.
pub(crate) fn le_value(data: &[u8]) -> u64 {
    data.iter().take(8).enumerate().fold(0u64, |acc, (i, b)| acc | (u64::from(*b) << (8 * i)))
}

/// Fills `data` with the little-endian bytes of `value` (bytes beyond 8 get 0xFF).
pub(crate) fn put_le(data: &mut [u8], value: u64) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = if i < 8 { (value >> (8 * i)) as u8 } else { 0xff };
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A fake machine for register-level device tests.
    use vmcore::{Device, DeviceCtx, IrqLevels, MachineRequests, SnapshotReader, SnapshotWriter, VirtTime};

    /// Interrupt lines and requests a device under test writes to.
    #[derive(Default)]
    pub struct Bus {
        pub irq: IrqLevels,
        pub req: MachineRequests,
    }

    impl Bus {
        pub fn new() -> Self {
            Self::default()
        }
        pub fn ctx(&mut self, ns: u64) -> DeviceCtx<'_> {
            DeviceCtx { now: VirtTime(ns), irq: &mut self.irq, requests: &mut self.req }
        }
        pub fn rd(&mut self, d: &mut dyn Device, ns: u64, off: u16) -> u8 {
            let mut b = [0u8];
            d.pio_read(&mut self.ctx(ns), off, &mut b);
            b[0]
        }
        pub fn wr(&mut self, d: &mut dyn Device, ns: u64, off: u16, v: u8) {
            d.pio_write(&mut self.ctx(ns), off, &[v]);
        }
        pub fn advance(&mut self, d: &mut dyn Device, ns: u64) {
            d.advance(&mut self.ctx(ns));
        }
        pub fn high(&self, line: u32) -> bool {
            self.irq.is_high(line)
        }
        /// Whether `line` saw a rising edge since the last call; clears the record.
        pub fn took_edge(&mut self, line: u32) -> bool {
            let e = self.irq.rising & (1 << line) != 0;
            self.irq.rising &= !(1 << line);
            e
        }
    }

    /// Saves `d` and restores into `fresh`; returns the bytes for comparison.
    pub fn roundtrip(d: &dyn Device, fresh: &mut dyn Device) -> Vec<u8> {
        let mut w = SnapshotWriter::new();
        d.save(&mut w);
        let buf = w.finish();
        fresh.restore(&mut SnapshotReader::new(&buf)).expect("restore");
        let mut w2 = SnapshotWriter::new();
        fresh.save(&mut w2);
        assert_eq!(w2.finish(), buf, "state differs after restore");
        // Truncated snapshots are errors, never panics.
        for cut in 0..buf.len() {
            let _ = fresh.restore(&mut SnapshotReader::new(&buf[..cut]));
        }
        buf
    }

    /// Throws a pseudo-random stream of hostile accesses at `d`; it must not panic.
    pub fn hammer(d: &mut dyn Device, port_offsets: &[u16], mmio: bool, seed: u64) {
        let mut bus = Bus::new();
        let mut x = seed | 1;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut now = 0u64;
        for _ in 0..20_000 {
            let r = next();
            now = now.wrapping_add(r % 5_000_000).min(u64::MAX / 2);
            let size = [1usize, 2, 4, 8, 3, 0][(r >> 8) as usize % 6];
            let val = next();
            let mut buf = val.to_le_bytes();
            let buf = &mut buf[..size];
            let off = if port_offsets.is_empty() || r & 0x1_0000 != 0 {
                (next() % 0x1100) as u16
            } else {
                port_offsets[(next() % port_offsets.len() as u64) as usize]
            };
            let mut ctx = bus.ctx(now);
            match (r >> 20) % 8 {
                0 | 1 => d.pio_write(&mut ctx, off, buf),
                2 | 3 => d.pio_read(&mut ctx, off, buf),
                4 if mmio => d.mmio_write(&mut ctx, u64::from(off) & 0xfff | (val & 0xf0), buf),
                5 if mmio => d.mmio_read(&mut ctx, u64::from(off), buf),
                6 => d.host_input(&mut ctx, buf),
                _ => {
                    if let Some(t) = d.next_deadline() {
                        now = now.max(t.0.min(u64::MAX / 2));
                    }
                    d.advance(&mut bus.ctx(now));
                }
            }
            if r % 5000 == 0 {
                d.reset();
            }
        }
    }
}
