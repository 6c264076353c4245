//! Guest memory as a bus master sees it: the DMA path of fw_cfg and of PCI functions. It moves bytes
//! between devices and guest RAM, turns writes into the MSI window into interrupt messages, and records
//! the RAM ranges it wrote so that the machine drops decoded code on those pages only.

use chipset::DmaMemory;
use chipset::msi::{MSI_WINDOW_BASE, MSI_WINDOW_SIZE, MsiMessage};
use vmcore::{AddressMap, GuestRam, RegionKind};

/// Most interrupt messages one DMA transfer may carry (a 4 KiB burst into the MSI window is 1024).
pub(crate) const MAX_DMA_MSI: usize = 4096;

/// Guest memory as a bus master (fw_cfg's DMA engine, PCI devices) sees it: the RAM regions of the
/// address map, and the MSI window 0xFEE00000-0xFEEFFFFF, where each aligned dword written is an interrupt
/// message (collected in `msi`, at most [`MAX_DMA_MSI`] per transfer; the bytes of a partial dword are
/// dropped). A read of anything but RAM, or a write touching ROM, MMIO or unassigned space, fails and
/// moves nothing (fw_cfg then sets its error bit). The RAM ranges written are kept in `written`, so that
/// only decoded code on those pages is dropped.
pub(crate) struct RamDma<'a> {
    pub(crate) ram: &'a mut GuestRam,
    pub(crate) map: &'a AddressMap,
    /// Interrupt messages written into the MSI window, in order.
    pub(crate) msi: Vec<MsiMessage>,
    /// Guest-physical RAM ranges written, in order (for per-page code invalidation).
    pub(crate) written: Vec<std::ops::Range<u64>>,
}

/// The part of `addr..addr+len` that lies in the MSI window from `addr` on (0 if `addr` is outside).
fn msi_window_run(addr: u64, len: usize) -> usize {
    if (MSI_WINDOW_BASE..MSI_WINDOW_BASE + MSI_WINDOW_SIZE).contains(&addr) {
        ((MSI_WINDOW_BASE + MSI_WINDOW_SIZE - addr) as usize).min(len)
    } else {
        0
    }
}

impl<'a> RamDma<'a> {
    pub(crate) fn new(ram: &'a mut GuestRam, map: &'a AddressMap) -> Self {
        RamDma { ram, map, msi: Vec::new(), written: Vec::new() }
    }

    /// Calls `f(ram offset, range within the buffer)` for each RAM piece of `addr..addr+len`; false if
    /// any byte is not RAM.
    fn walk(&self, addr: u64, len: usize, mut f: impl FnMut(u64, std::ops::Range<usize>) -> bool) -> bool {
        let mut done = 0usize;
        while done < len {
            let Some(a) = addr.checked_add(done as u64) else { return false };
            let Some(r) = self.map.lookup(a) else { return false };
            let RegionKind::Ram { offset } = r.kind else { return false };
            let n = ((r.end() - a) as usize).min(len - done);
            if n == 0 || !f(offset + (a - r.start), done..done + n) {
                return false;
            }
            done += n;
        }
        true
    }
}

impl DmaMemory for RamDma<'_> {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> bool {
        let ram = &*self.ram;
        let len = buf.len();
        let mut pieces = Vec::new();
        let ok = self.walk(addr, len, |o, r| {
            pieces.push((o, r));
            true
        });
        ok && pieces.into_iter().all(|(o, r)| ram.read(o, &mut buf[r]))
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> bool {
        // Split into RAM pieces and MSI-window pieces; check all before writing any.
        let mut ram_pieces = Vec::new();
        let mut msi_pieces = Vec::new();
        let mut guest_ranges = Vec::new();
        let mut done = 0usize;
        while done < data.len() {
            let Some(a) = addr.checked_add(done as u64) else { return false };
            let left = data.len() - done;
            let n = msi_window_run(a, left);
            if n > 0 {
                msi_pieces.push((a, done..done + n));
                done += n;
                continue;
            }
            // RAM up to the next MSI window byte, if the window lies ahead.
            let until = if a < MSI_WINDOW_BASE { ((MSI_WINDOW_BASE - a) as usize).min(left) } else { left };
            let base = done;
            if !self.walk(a, until, |o, r| {
                ram_pieces.push((o, base + r.start..base + r.end));
                true
            }) {
                return false;
            }
            if until > 0 {
                guest_ranges.push(a..a + until as u64);
            }
            done += until;
        }
        if !ram_pieces.into_iter().all(|(o, r)| self.ram.write(o, &data[r])) {
            return false;
        }
        self.written.extend(guest_ranges);
        for (a, r) in msi_pieces {
            let bytes = &data[r];
            let skip = ((4 - (a & 3)) & 3) as usize;
            for (k, dw) in bytes.get(skip..).unwrap_or_default().chunks_exact(4).enumerate() {
                if self.msi.len() >= MAX_DMA_MSI {
                    break;
                }
                let address = a + (skip + 4 * k) as u64;
                self.msi.push(MsiMessage { address, data: u32::from_le_bytes([dw[0], dw[1], dw[2], dw[3]]) });
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmcore::DeviceId;

    /// 64 KiB of RAM at 0, the local APIC page in the MSI window, RAM again right after the window.
    fn ram_and_map() -> (GuestRam, AddressMap) {
        let ram = GuestRam::new(0x2_0000).unwrap();
        let mut map = AddressMap::new();
        map.add(0, 0x1_0000, RegionKind::Ram { offset: 0 }).unwrap();
        map.add(MSI_WINDOW_BASE, 0x1000, RegionKind::Mmio { device: DeviceId(0) }).unwrap();
        map.add(MSI_WINDOW_BASE + MSI_WINDOW_SIZE, 0x1_0000, RegionKind::Ram { offset: 0x1_0000 }).unwrap();
        (ram, map)
    }

    #[test]
    fn dma_writes_into_the_msi_window_are_interrupt_messages() {
        let (mut ram, map) = ram_and_map();
        let mut mem = RamDma::new(&mut ram, &map);
        let data: Vec<u8> = [0x61u32, 0x4062, 0x0000_0400].iter().flat_map(|d| d.to_le_bytes()).collect();
        assert!(mem.write(MSI_WINDOW_BASE + 0x1000, &data));
        assert_eq!(
            mem.msi,
            vec![
                MsiMessage { address: 0xFEE0_1000, data: 0x61 },
                MsiMessage { address: 0xFEE0_1004, data: 0x4062 },
                MsiMessage { address: 0xFEE0_1008, data: 0x400 },
            ]
        );
        // A write that straddles the end of the window: one whole dword in it, the rest to RAM.
        mem.msi.clear();
        assert!(mem.write(MSI_WINDOW_BASE + MSI_WINDOW_SIZE - 6, &[1, 2, 3, 4, 5, 6, 7, 8]));
        assert_eq!(
            mem.msi,
            vec![MsiMessage { address: 0xFEEF_FFFC, data: 0x0605_0403 }],
            "partial dword dropped"
        );
        let mut back = [0u8; 2];
        assert!(mem.read(MSI_WINDOW_BASE + MSI_WINDOW_SIZE, &mut back));
        assert_eq!(back, [7, 8]);
        // Reads of the window and writes that touch unassigned space fail and move nothing.
        mem.msi.clear();
        assert!(!mem.read(MSI_WINDOW_BASE, &mut [0u8; 4]));
        assert!(!mem.write(0xFFFC, &[9; 8]), "runs past RAM into unassigned space");
        let mut b = [0u8; 4];
        assert!(mem.read(0xFFFC, &mut b));
        assert_eq!(b, [0; 4]);
        assert!(!mem.write(MSI_WINDOW_BASE - 4, &[9; 8]), "unassigned space before the window");
        assert!(mem.msi.is_empty());
        assert!(!mem.write(u64::MAX - 1, &[0; 4]), "address wrap");
        // A long burst is bounded.
        let burst = vec![0x30u8; 64 * 1024];
        assert!(mem.write(MSI_WINDOW_BASE, &burst));
        assert_eq!(mem.msi.len(), MAX_DMA_MSI.min(burst.len() / 4));
    }
}
