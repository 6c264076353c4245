//! The one trait every device implements, and the context a device sees when it is called.
//!
//! Devices see offsets into their own port or MMIO window, never absolute addresses. They raise
//! interrupt lines through [`IrqLevels`] and ask the machine for board-level actions (reset, power-off,
//! A20) through [`MachineRequests`]. Time reaches them only as [`VirtTime`] in [`DeviceCtx::now`].

use crate::snapshot::Snapshot;
use crate::time::VirtTime;

/// Index of a device in the machine's device table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(pub u32);

/// Levels of the machine's interrupt input lines (GSIs 0..=23: ISA IRQs 0-15 and PCI lines 16-23).
///
/// A device sets its line's level; edge-triggered consumers (the PIC in edge mode) see the rising edge
/// when the machine propagates changes. A pulse (`pulse`) is a raise immediately followed by a lower,
/// delivered as one edge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqLevels {
    /// Current level of each line (bit n = GSI n).
    pub level: u32,
    /// Lines that saw a rising edge since the machine last collected them.
    pub rising: u32,
    /// Lines that changed in any way since the machine last collected them.
    pub changed: u32,
}

impl IrqLevels {
    /// Number of lines.
    pub const LINES: u32 = 24;

    /// Sets line `gsi` to `high`. Out-of-range lines are ignored.
    pub fn set(&mut self, gsi: u32, high: bool) {
        if gsi >= Self::LINES {
            return;
        }
        let bit = 1u32 << gsi;
        let was = self.level & bit != 0;
        if was == high {
            return;
        }
        self.changed |= bit;
        if high {
            self.level |= bit;
            self.rising |= bit;
        } else {
            self.level &= !bit;
        }
    }

    /// Raises and lowers line `gsi`: an edge for edge-triggered consumers.
    pub fn pulse(&mut self, gsi: u32) {
        if gsi >= Self::LINES {
            return;
        }
        let bit = 1u32 << gsi;
        self.level &= !bit;
        self.rising |= bit;
        self.changed |= bit;
    }

    /// Whether line `gsi` is high.
    pub fn is_high(&self, gsi: u32) -> bool {
        gsi < Self::LINES && self.level & (1 << gsi) != 0
    }
}

/// Board-level actions a device may request; the machine carries them out after the device returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineRequests {
    /// Reset the whole machine (keyboard controller pulse, port 0xCF9, ACPI reset register).
    pub reset: bool,
    /// Stop the emulator with this exit status (debug-exit device, ACPI S5 = 0).
    pub exit: Option<i32>,
    /// New state of the A20 gate, if a device changed it.
    pub a20: Option<bool>,
    /// The device changed its next deadline; the engine should stop its current slice early.
    pub reschedule: bool,
    /// Flush the CPU's TLB and decoded-code caches (pc-testdev page-flush port).
    pub flush_tlb: bool,
    /// Guest-physical ranges `start..end` that bus masters (DMA) wrote since the machine last looked: the
    /// machine drops decoded and translated code on those pages only. Kept short by
    /// [`MachineRequests::note_dma_write`].
    pub dma_written: Vec<std::ops::Range<u64>>,
}

impl MachineRequests {
    /// Most ranges [`MachineRequests::dma_written`] holds before they are merged into one covering range
    /// (a guest scattering DMA over many pages cannot grow the list without bound).
    pub const MAX_DMA_RANGES: usize = 64;

    /// Records that a bus master wrote guest-physical `range` (merged with the previous range when they
    /// touch).
    pub fn note_dma_write(&mut self, range: std::ops::Range<u64>) {
        if range.is_empty() {
            return;
        }
        let list = &mut self.dma_written;
        if let Some(last) = list.last_mut()
            && last.start <= range.end
            && range.start <= last.end
        {
            last.start = last.start.min(range.start);
            last.end = last.end.max(range.end);
            return;
        }
        list.push(range);
        if list.len() > Self::MAX_DMA_RANGES {
            let start = list.iter().map(|r| r.start).min().unwrap_or(0);
            let end = list.iter().map(|r| r.end).max().unwrap_or(0);
            list.clear();
            list.push(start..end);
        }
    }
}

/// What a device sees while it is being called.
#[derive(Debug)]
pub struct DeviceCtx<'a> {
    /// The current virtual time.
    pub now: VirtTime,
    /// The machine's interrupt lines.
    pub irq: &'a mut IrqLevels,
    /// Board-level requests.
    pub requests: &'a mut MachineRequests,
}

/// A device on the machine's buses.
///
/// Its state is saved and restored through the [`Snapshot`] supertrait, which has no defaults: a type
/// that does not implement it cannot be a `Device`, so it cannot be put on the board. Time reaches it
/// only as [`DeviceCtx::now`].
///
/// Every method has a default so a device implements only what it uses. Reads of registers a device
/// does not implement return all ones, as an unterminated ISA bus does; writes are ignored. Accesses
/// arrive with `data.len()` of 1, 2, 4 or 8 bytes; the device decides what a size it does not support
/// means (most byte-wide ISA devices see each byte as a separate access, which the machine arranges
/// when the device says so in [`Device::pio_access_width`]).
pub trait Device: Snapshot<Restored = ()> {
    /// A short, stable name ("pic-master", "uart-com1") used in diagnostics and snapshots.
    fn name(&self) -> &str;

    /// Widest port access the device decodes natively; wider accesses are split into this width.
    fn pio_access_width(&self) -> usize {
        4
    }

    /// A port read at `offset` within the device's port window.
    fn pio_read(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &mut [u8]) {
        let _ = (ctx, offset);
        data.fill(0xff);
    }

    /// A port write at `offset` within the device's port window.
    fn pio_write(&mut self, ctx: &mut DeviceCtx<'_>, offset: u16, data: &[u8]) {
        let _ = (ctx, offset, data);
    }

    /// An MMIO read at `offset` within the device's MMIO window.
    fn mmio_read(&mut self, ctx: &mut DeviceCtx<'_>, offset: u64, data: &mut [u8]) {
        let _ = (ctx, offset);
        data.fill(0xff);
    }

    /// An MMIO write at `offset` within the device's MMIO window.
    fn mmio_write(&mut self, ctx: &mut DeviceCtx<'_>, offset: u64, data: &[u8]) {
        let _ = (ctx, offset, data);
    }

    /// Returns the device to its power-on state (machine reset).
    fn reset(&mut self) {}

    /// The next virtual time at which the device needs [`Device::advance`] called, if any.
    ///
    /// A function of the device's own state only (not of the current time, nor of anything shared
    /// outside it): the board caches the earliest deadline and asks again only after the device was
    /// called (an access, host input, an advance that ran, reset or restore).
    fn next_deadline(&self) -> Option<VirtTime> {
        None
    }

    /// Brings the device up to `ctx.now`: fire timers whose deadline has passed, raise interrupts.
    fn advance(&mut self, ctx: &mut DeviceCtx<'_>) {
        let _ = ctx;
    }

    /// Host input arrived for this device (console bytes); called through the machine's input port so
    /// that record/replay can log it.
    fn host_input(&mut self, ctx: &mut DeviceCtx<'_>, data: &[u8]) {
        let _ = (ctx, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irq_levels_track_edges() {
        let mut l = IrqLevels::default();
        l.set(4, true);
        assert!(l.is_high(4));
        assert_eq!(l.rising, 1 << 4);
        l.rising = 0;
        l.set(4, true);
        assert_eq!(l.rising, 0, "no edge when level unchanged");
        l.set(4, false);
        assert!(!l.is_high(4));
        l.pulse(0);
        assert_eq!(l.rising, 1);
        assert!(!l.is_high(0));
        l.set(99, true);
        assert!(!l.is_high(99));
    }

    #[test]
    fn dma_write_ranges_merge_and_stay_bounded() {
        let mut r = MachineRequests::default();
        r.note_dma_write(0x1000..0x1800);
        r.note_dma_write(0x1800..0x2000);
        r.note_dma_write(0x1100..0x1200);
        r.note_dma_write(5..5);
        assert_eq!(r.dma_written, vec![0x1000..0x2000], "touching and contained ranges merge, empty dropped");
        r.note_dma_write(0x9000..0x9004);
        assert_eq!(r.dma_written, vec![0x1000..0x2000, 0x9000..0x9004]);
        for i in 0..200u64 {
            r.note_dma_write(0x10_0000 + i * 0x2000..0x10_0000 + i * 0x2000 + 4);
            assert!(r.dma_written.len() <= MachineRequests::MAX_DMA_RANGES);
        }
        // Whatever was merged, every written byte is still covered.
        for a in [0x1000u64, 0x1fff, 0x9003, 0x10_0000, 0x10_0000 + 199 * 0x2000 + 3] {
            assert!(r.dma_written.iter().any(|x| x.contains(&a)), "{a:#x} lost");
        }
    }
}
