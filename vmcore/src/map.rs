//! The physical address map: sorted, non-overlapping regions of RAM, ROM and MMIO. Anything not
//! covered is unassigned: reads return all ones, writes are dropped (as on a PC's open bus).

use crate::device::DeviceId;

/// What a physical range is backed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Guest RAM, starting at `offset` within [`crate::GuestRam`].
    Ram {
        /// Offset into guest RAM of the region's first byte.
        offset: u64,
    },
    /// RAM that reads but ignores writes (a shadowed BIOS area write-protected by the chipset's PAM
    /// registers), starting at `offset` within [`crate::GuestRam`].
    RamReadOnly {
        /// Offset into guest RAM of the region's first byte.
        offset: u64,
    },
    /// Read-only memory: image `rom` of the map's ROM images, starting at `offset` in it.
    Rom {
        /// Index of the ROM image (see [`AddressMap::add_rom_image`]).
        rom: usize,
        /// Offset into the image of the region's first byte.
        offset: u64,
    },
    /// Memory-mapped I/O of a device; the device sees offsets from the region's start.
    Mmio {
        /// The device.
        device: DeviceId,
    },
}

/// One region of the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First physical address.
    pub start: u64,
    /// Size in bytes (non-zero).
    pub size: u64,
    /// Backing.
    pub kind: RegionKind,
}

impl Region {
    /// One past the last address (saturating at `u64::MAX`).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }

    /// The last address in the region.
    pub fn last(&self) -> u64 {
        self.start.saturating_add(self.size - 1)
    }

    /// Whether `addr` lies in the region.
    #[inline]
    pub fn contains(&self, addr: u64) -> bool {
        addr >= self.start && addr - self.start < self.size
    }
}

/// Error adding a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlapError {
    /// The region that could not be added.
    pub new: Region,
    /// The region it overlaps.
    pub existing: Region,
}

impl std::fmt::Display for OverlapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "region {:#x}+{:#x} overlaps {:#x}+{:#x}",
            self.new.start, self.new.size, self.existing.start, self.existing.size
        )
    }
}

impl std::error::Error for OverlapError {}

/// The physical address map.
#[derive(Default, Debug)]
pub struct AddressMap {
    regions: Vec<Region>,
    roms: Vec<Box<[u8]>>,
}

impl AddressMap {
    /// An empty map (everything unassigned).
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a ROM image and returns its index for [`RegionKind::Rom`].
    pub fn add_rom_image(&mut self, data: Vec<u8>) -> usize {
        self.roms.push(data.into_boxed_slice());
        self.roms.len() - 1
    }

    /// ROM image `index`.
    pub fn rom_image(&self, index: usize) -> Option<&[u8]> {
        self.roms.get(index).map(|b| &b[..])
    }

    /// Adds a region; it must not overlap an existing one. Zero-sized regions are ignored.
    pub fn add(&mut self, start: u64, size: u64, kind: RegionKind) -> Result<(), OverlapError> {
        if size == 0 {
            return Ok(());
        }
        let new = Region { start, size, kind };
        let pos = self.regions.partition_point(|r| r.start < start);
        if let Some(prev) = pos.checked_sub(1).and_then(|i| self.regions.get(i))
            && prev.last() >= start
        {
            return Err(OverlapError { new, existing: *prev });
        }
        if let Some(next) = self.regions.get(pos)
            && new.last() >= next.start
        {
            return Err(OverlapError { new, existing: *next });
        }
        self.regions.insert(pos, new);
        Ok(())
    }

    /// Removes every region that lies wholly inside `start..start+size` (a range being remapped).
    pub fn remove_within(&mut self, start: u64, size: u64) {
        let end = start.saturating_add(size);
        self.regions.retain(|r| !(r.start >= start && r.end() <= end));
    }

    /// Removes the region starting at `start`, returning it.
    pub fn remove(&mut self, start: u64) -> Option<Region> {
        let pos = self.regions.iter().position(|r| r.start == start)?;
        Some(self.regions.remove(pos))
    }

    /// The region containing `addr`, if any.
    #[inline]
    pub fn lookup(&self, addr: u64) -> Option<&Region> {
        let pos = self.regions.partition_point(|r| r.start <= addr);
        let r = self.regions.get(pos.checked_sub(1)?)?;
        r.contains(addr).then_some(r)
    }

    /// All regions, sorted by start.
    pub fn regions(&self) -> &[Region] {
        &self.regions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_and_overlap() {
        let mut m = AddressMap::new();
        m.add(0, 0xa0000, RegionKind::Ram { offset: 0 }).unwrap();
        m.add(0x100000, 0x100000, RegionKind::Ram { offset: 0x100000 }).unwrap();
        m.add(0xfee0_0000, 0x1000, RegionKind::Mmio { device: DeviceId(3) }).unwrap();
        assert!(m.add(0x9f000, 0x2000, RegionKind::Ram { offset: 0 }).is_err());
        assert!(m.add(0xff000, 0x2000, RegionKind::Ram { offset: 0 }).is_err());
        assert_eq!(m.lookup(0x9ffff).unwrap().start, 0);
        assert!(m.lookup(0xa0000).is_none());
        assert_eq!(m.lookup(0x1fffff).unwrap().start, 0x100000);
        assert!(m.lookup(0x200000).is_none());
        assert!(matches!(m.lookup(0xfee0_0fff).unwrap().kind, RegionKind::Mmio { .. }));
        assert!(m.lookup(u64::MAX).is_none());
        assert!(m.remove(0x100000).is_some());
        assert!(m.lookup(0x100000).is_none());
    }

    #[test]
    fn region_at_top_of_address_space() {
        let mut m = AddressMap::new();
        m.add(u64::MAX - 0xfff, 0x1000, RegionKind::Ram { offset: 0 }).unwrap();
        assert!(m.lookup(u64::MAX).is_some());
    }
}
