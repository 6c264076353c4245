//! The PC's fixed physical addresses, in one place (the i440FX/PIIX layout QEMU's `pc` machine and
//! SeaBIOS use).

/// End of conventional memory: RAM below this address is "low memory".
pub const LOW_RAM_END: u64 = 0xA_0000;
/// Start of the legacy VGA window (0xA0000-0xBFFFF), unassigned until a VGA device claims it.
pub const VGA_WINDOW: u64 = 0xA_0000;
/// Start of the option-ROM area (0xC0000-0xDFFFF), backed by RAM.
pub const OPTION_ROM_AREA: u64 = 0xC_0000;
/// Start of the high 128 KiB below 1 MiB where the last 128 KiB of the BIOS image is also visible.
pub const BIOS_LOW_WINDOW: u64 = 0xE_0000;
/// Size of that window.
pub const BIOS_LOW_WINDOW_SIZE: u64 = 0x2_0000;
/// 1 MiB: start of extended memory.
pub const HIGH_MEMORY: u64 = 0x10_0000;
/// 4 GiB: where RAM that does not fit below the PCI hole continues.
pub const FOUR_GIB: u64 = 0x1_0000_0000;
/// Guest RAM below this size fits wholly below the PCI hole.
pub const PCI_HOLE_THRESHOLD: u64 = 0xE000_0000;
/// Where low RAM ends when RAM is at least [`PCI_HOLE_THRESHOLD`] (gigabyte-aligned, as QEMU does).
pub const PCI_HOLE_START_LARGE: u64 = 0xC000_0000;
/// I/O APIC MMIO base.
pub const IOAPIC_BASE: u64 = 0xFEC0_0000;
/// HPET MMIO base.
pub const HPET_BASE: u64 = 0xFED0_0000;
/// Local APIC MMIO base (default IA32_APIC_BASE).
pub const LAPIC_BASE: u64 = 0xFEE0_0000;
/// Largest firmware image accepted with `--rom` (it ends at 4 GiB).
pub const MAX_BIOS_SIZE: u64 = 16 << 20;
/// The x86 reset vector: CS base 0xFFFF0000, IP 0xFFF0.
pub const RESET_VECTOR: u64 = 0xFFFF_FFF0;

/// How `ram_size` bytes of RAM split around the PC's holes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamLayout {
    /// Bytes of RAM mapped from physical address 0 (minus the 640K-1M legacy window).
    pub below_4g: u64,
    /// Bytes of RAM mapped from 4 GiB.
    pub above_4g: u64,
}

impl RamLayout {
    /// The split for `ram_size` bytes, following QEMU's i440FX rule: everything below 4 GiB if it
    /// fits under 3.5 GiB; otherwise 3 GiB below and the rest from 4 GiB.
    pub fn for_size(ram_size: u64) -> RamLayout {
        let below = if ram_size >= PCI_HOLE_THRESHOLD { PCI_HOLE_START_LARGE } else { ram_size };
        RamLayout { below_4g: below, above_4g: ram_size - below }
    }

    /// The RAM ranges as (physical start, size, RAM offset), skipping 0xA0000-0xFFFFF, whose RAM the
    /// legacy devices and ROM shadow; the option-ROM area 0xC0000-0xDFFFF is listed as RAM.
    pub fn ram_ranges(&self) -> Vec<(u64, u64, u64)> {
        let mut v = Vec::new();
        let low = self.below_4g.min(LOW_RAM_END);
        v.push((0, low, 0));
        if self.below_4g > OPTION_ROM_AREA {
            let end = self.below_4g.min(BIOS_LOW_WINDOW);
            v.push((OPTION_ROM_AREA, end - OPTION_ROM_AREA, OPTION_ROM_AREA));
        }
        if self.below_4g > HIGH_MEMORY {
            v.push((HIGH_MEMORY, self.below_4g - HIGH_MEMORY, HIGH_MEMORY));
        }
        if self.above_4g > 0 {
            v.push((FOUR_GIB, self.above_4g, self.below_4g));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_memory_all_below_4g() {
        let l = RamLayout::for_size(512 << 20);
        assert_eq!(l, RamLayout { below_4g: 512 << 20, above_4g: 0 });
        let r = l.ram_ranges();
        assert_eq!(r[0], (0, 0xa0000, 0));
        assert_eq!(r[1], (0xc0000, 0x20000, 0xc0000));
        assert_eq!(r[2], (0x100000, (512 << 20) - 0x100000, 0x100000));
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn large_memory_splits_at_3g() {
        let l = RamLayout::for_size(6 << 30);
        assert_eq!(l.below_4g, 3 << 30);
        assert_eq!(l.above_4g, 3 << 30);
        assert_eq!(*l.ram_ranges().last().unwrap(), (FOUR_GIB, 3 << 30, 3 << 30));
    }

    #[test]
    fn tiny_memory() {
        let l = RamLayout::for_size(256 << 10);
        assert_eq!(l.ram_ranges(), vec![(0, 256 << 10, 0)]);
    }
}
