//! PCI configuration space: the 256-byte header with write masks, BAR sizing and decode windows,
//! capabilities; the window changes a write causes.

use super::*;

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// I/O space (bit 0 = 1).
    Io,
    /// 32-bit memory space.
    Mem32,
    /// 64-bit memory space (uses the next BAR for the upper half).
    Mem64,
}

impl BarKind {
    /// Whether the window is in port space.
    pub fn is_io(self) -> bool {
        self == BarKind::Io
    }
}

/// A BAR's definition: what it decodes and how big it is (a power of two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarDef {
    /// Space.
    pub kind: BarKind,
    /// Size in bytes: a power of two, at least 4 for I/O and 16 for memory.
    pub size: u64,
    /// Memory BARs: the prefetchable bit.
    pub prefetchable: bool,
}

/// A change of one decode window of one function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarChange {
    /// Window index: 0-5 for BARs, [`FIRST_CHIPSET_WINDOW`] and up for chipset windows.
    pub window: u8,
    /// Port or memory window.
    pub kind: BarKind,
    /// Size in bytes.
    pub size: u64,
    /// Base the window was decoded at before (None: not decoded).
    pub old: Option<u64>,
    /// Base it is decoded at now (None: not decoded).
    pub new: Option<u64>,
}

/// A [`BarChange`] of the function at `devfn` on bus 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciBarEvent {
    /// Device number << 3 | function number.
    pub devfn: u8,
    /// The change.
    pub change: BarChange,
}

/// The PIRQ line (0 = PIRQA) that INTx pin `pin` (1 = INTA#) of device `slot` drives on the
/// i440FX/PIIX board: `(slot + pin - 2) mod 4`, as QEMU's `pc` machine and the MP/ACPI tables here say.
pub fn pirq_of(slot: u8, pin: u8) -> u8 {
    (slot.wrapping_add(pin).wrapping_sub(2)) & 3
}

/// Where a window lies, if decoded: its base.
pub(crate) fn window_base(kind: BarKind, base: u64, size: u64, enabled: bool) -> Option<u64> {
    let limit: u64 = match kind {
        BarKind::Io => 1 << 16,
        BarKind::Mem32 => 1 << 32,
        BarKind::Mem64 => 1 << 52,
    };
    (enabled && base != 0 && base.checked_add(size).is_some_and(|e| e <= limit)).then_some(base)
}

/// Largest expansion ROM a function takes (the ROM BAR could decode up to 2 GiB; no real option ROM
/// comes near this).
pub const MAX_ROM_SIZE: u64 = 16 << 20;

/// Smallest window the ROM BAR decodes: its address field starts at bit 11 (PCI 3.0, 6.2.5.2).
pub const MIN_ROM_SIZE: u64 = 2 << 10;

/// Expansion ROM BAR bit 0: address decode enable.
pub const ROM_ENABLE: u32 = 1;

/// The contents of a function's expansion ROM: host data (like a BIOS image), not guest state, so it is
/// shared between copies and left out of snapshots.
#[derive(Clone, PartialEq, Eq)]
pub struct ExpansionRom {
    image: std::sync::Arc<[u8]>,
    size: u64,
}

impl std::fmt::Debug for ExpansionRom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ExpansionRom({} bytes in a {:#x}-byte window)", self.image.len(), self.size)
    }
}

impl ExpansionRom {
    /// The window for `image`: its length rounded up to a power of two, at least [`MIN_ROM_SIZE`].
    /// `None` for an empty image (no ROM) or one larger than [`MAX_ROM_SIZE`].
    pub fn new(image: Vec<u8>) -> Option<ExpansionRom> {
        let len = image.len() as u64;
        if len == 0 || len > MAX_ROM_SIZE {
            return None;
        }
        Some(ExpansionRom { size: len.next_power_of_two().max(MIN_ROM_SIZE), image: image.into() })
    }

    /// The size of the window the ROM BAR decodes (a power of two).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The image.
    pub fn image(&self) -> &[u8] {
        &self.image
    }
}

/// A function's 256-byte configuration space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigSpace {
    data: [u8; 256],
    /// Bits software may write.
    wmask: [u8; 256],
    /// Bits cleared by writing one.
    w1c: [u8; 256],
    /// Power-on contents.
    initial: [u8; 256],
    bars: [Option<BarDef>; 6],
    /// Base each BAR is decoded at now.
    mapped: [Option<u64>; 6],
    /// The expansion ROM behind the ROM BAR (offset 0x30), if the function has one.
    rom: Option<ExpansionRom>,
    /// Base the expansion ROM is decoded at now.
    rom_mapped: Option<u64>,
    /// Next free byte for a capability.
    next_cap: usize,
    /// Offset of the last capability added (its next pointer is at +1).
    last_cap: Option<usize>,
}

impl ConfigSpace {
    /// A type-0 header: IDs, class code (`base << 16 | sub << 8 | prog_if`), revision, header type.
    /// The command register's I/O, memory, bus-master, parity, SERR and interrupt-disable bits are
    /// writable, the status register's error bits are write-one-to-clear, cache line size, latency
    /// timer and interrupt line are read/write.
    pub fn new(vendor: u16, device: u16, class: u32, revision: u8, header_type: u8) -> Self {
        let mut c = ConfigSpace {
            data: [0; 256],
            wmask: [0; 256],
            w1c: [0; 256],
            initial: [0; 256],
            bars: [None; 6],
            mapped: [None; 6],
            rom: None,
            rom_mapped: None,
            next_cap: 0x40,
            last_cap: None,
        };
        c.set_u16(reg::VENDOR_ID, vendor);
        c.set_u16(reg::DEVICE_ID, device);
        c.data[reg::REVISION] = revision;
        c.data[0x09] = class as u8;
        c.data[0x0A] = (class >> 8) as u8;
        c.data[0x0B] = (class >> 16) as u8;
        c.data[reg::HEADER_TYPE] = header_type;
        c.set_wmask_u16(reg::COMMAND, CMD_IO | CMD_MEM | CMD_MASTER | (1 << 6) | (1 << 8) | CMD_INTX_DISABLE);
        c.w1c[reg::STATUS + 1] = 0xF9; // bits 15:11 and 8
        c.wmask[0x0C] = 0xFF;
        c.wmask[0x0D] = 0xFF;
        c.wmask[reg::INTERRUPT_LINE] = 0xFF;
        c.initial = c.data;
        c
    }

    /// Sets a 16-bit register's value (device side; also the power-on value).
    pub fn set_u16(&mut self, off: usize, v: u16) {
        self.set_bytes(off, &v.to_le_bytes());
    }

    /// Sets a 32-bit register's value (device side; also the power-on value).
    pub fn set_u32(&mut self, off: usize, v: u32) {
        self.set_bytes(off, &v.to_le_bytes());
    }

    /// Sets bytes (device side; also the power-on value). Out-of-range bytes are dropped.
    pub fn set_bytes(&mut self, off: usize, v: &[u8]) {
        for (i, b) in v.iter().enumerate() {
            if let Some(d) = self.data.get_mut(off + i) {
                *d = *b;
                self.initial[off + i] = *b;
            }
        }
    }

    /// Device-side update of a 16-bit register (status bits a function reports): unlike
    /// [`ConfigSpace::set_u16`] the power-on value stays.
    pub fn update_u16(&mut self, off: usize, v: u16) {
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            if let Some(d) = self.data.get_mut(off + i) {
                *d = *b;
            }
        }
    }

    /// Device-side update of a 32-bit register; the power-on value stays.
    pub fn update_u32(&mut self, off: usize, v: u32) {
        self.update_u16(off, v as u16);
        self.update_u16(off + 2, (v >> 16) as u16);
    }

    /// Makes `mask` of the 16-bit register at `off` writable.
    pub fn set_wmask_u16(&mut self, off: usize, mask: u16) {
        self.wmask[off] = mask as u8;
        self.wmask[off + 1] = (mask >> 8) as u8;
    }

    /// Makes bytes `range` fully writable.
    pub fn set_writable(&mut self, range: std::ops::Range<usize>) {
        for i in range.filter(|i| *i < 256) {
            self.wmask[i] = 0xFF;
        }
    }

    /// Sets the write mask of one byte.
    pub fn set_wmask(&mut self, off: usize, mask: u8) {
        if let Some(m) = self.wmask.get_mut(off) {
            *m = mask;
        }
    }

    /// Declares BAR `index` (a 64-bit BAR also takes `index + 1`). Invalid definitions (index out of
    /// range, size not a power of two or too small) are ignored.
    pub fn add_bar(&mut self, index: usize, def: BarDef) {
        let min = if def.kind.is_io() { 4 } else { 16 };
        let slots = if def.kind == BarKind::Mem64 { 2 } else { 1 };
        if index + slots > 6
            || !def.size.is_power_of_two()
            || def.size < min
            || (def.kind.is_io() && def.size > 256)
        {
            return;
        }
        let off = reg::BAR0 + 4 * index;
        let low_type: u32 = match def.kind {
            BarKind::Io => 1,
            BarKind::Mem32 => u32::from(def.prefetchable) << 3,
            BarKind::Mem64 => 0b100 | u32::from(def.prefetchable) << 3,
        };
        let type_bits = if def.kind.is_io() { 3 } else { 0xF };
        let mask = !(def.size - 1);
        self.set_u32(off, low_type);
        let low_mask = (mask as u32) & !type_bits;
        self.wmask[off..off + 4].copy_from_slice(&low_mask.to_le_bytes());
        if def.kind == BarKind::Mem64 {
            self.set_u32(off + 4, 0);
            self.wmask[off + 4..off + 8].copy_from_slice(&((mask >> 32) as u32).to_le_bytes());
        }
        self.bars[index] = Some(def);
    }

    /// The BAR definition at `index`.
    pub fn bar(&self, index: usize) -> Option<BarDef> {
        self.bars.get(index).copied().flatten()
    }

    /// The address programmed into BAR `index` (type bits removed), whether or not it is decoded.
    pub fn bar_address(&self, index: usize) -> Option<u64> {
        let def = self.bar(index)?;
        let off = reg::BAR0 + 4 * index;
        let low = u64::from(self.u32(off));
        Some(match def.kind {
            BarKind::Io => low & !3,
            BarKind::Mem32 => low & !0xF,
            BarKind::Mem64 => (low & !0xF) | (u64::from(self.u32(off + 4)) << 32),
        })
    }

    /// Where BAR `index` is decoded now, if anywhere.
    pub fn bar_window(&self, index: usize) -> Option<u64> {
        let def = self.bar(index)?;
        let cmd = self.u16(reg::COMMAND);
        let en = if def.kind.is_io() { cmd & CMD_IO != 0 } else { cmd & CMD_MEM != 0 };
        window_base(def.kind, self.bar_address(index)?, def.size, en)
    }

    /// Gives the function an expansion ROM (`Some`), or takes it away (`None`), as QEMU's `romfile=`
    /// does (an empty file name: no ROM). With a ROM, the ROM BAR at 0x30 sizes like a 32-bit memory BAR
    /// (bits 31:11 hold the address, those below the ROM's size read as zero) and bit 0 enables decode;
    /// without one the register is read-only zero, which tells software there is no ROM. Device side;
    /// returns the windows that moved (the ROM's, if it was decoded).
    pub fn set_rom(&mut self, rom: Option<ExpansionRom>) -> Vec<BarChange> {
        let mask = match &rom {
            Some(r) => (!(r.size as u32 - 1) & 0xFFFF_F800) | ROM_ENABLE,
            None => 0,
        };
        self.rom = rom;
        self.wmask[reg::ROM_ADDRESS..reg::ROM_ADDRESS + 4].copy_from_slice(&mask.to_le_bytes());
        self.set_u32(reg::ROM_ADDRESS, 0);
        self.update_windows()
    }

    /// The expansion ROM, if the function has one.
    pub fn rom(&self) -> Option<&ExpansionRom> {
        self.rom.as_ref()
    }

    /// Where the expansion ROM is decoded now, if anywhere: the function has a ROM, the ROM BAR's enable
    /// bit and the command register's memory space enable are both set (PCI 3.0, 6.2.5.2), and the
    /// address is not zero.
    pub fn rom_window(&self) -> Option<u64> {
        let rom = self.rom.as_ref()?;
        let bar = self.u32(reg::ROM_ADDRESS);
        let en = bar & ROM_ENABLE != 0 && self.u16(reg::COMMAND) & CMD_MEM != 0;
        window_base(BarKind::Mem32, u64::from(bar & 0xFFFF_F800), rom.size, en)
    }

    /// A read of `data.len()` bytes at offset `off` of the ROM window: the image, zeros after its end
    /// (the window is a power of two), all ones outside the window or without a ROM.
    pub fn rom_read(&self, off: u64, data: &mut [u8]) {
        let Some(rom) = &self.rom else {
            data.fill(0xFF);
            return;
        };
        for (i, b) in data.iter_mut().enumerate() {
            let o = off.saturating_add(i as u64);
            *b = if o >= rom.size {
                0xFF
            } else {
                usize::try_from(o).ok().and_then(|o| rom.image.get(o)).copied().unwrap_or(0)
            };
        }
    }

    /// Adds a capability with `id` and `body` (the bytes after ID and next pointer), `wmask` giving
    /// the writable bits of the body (same length or shorter). Returns its offset, or None if the
    /// space is full.
    pub fn add_capability(&mut self, id: u8, body: &[u8], wmask: &[u8]) -> Option<usize> {
        let off = self.next_cap.next_multiple_of(4);
        let end = off + 2 + body.len();
        if end > 256 {
            return None;
        }
        self.set_bytes(off, &[id, 0]);
        self.set_bytes(off + 2, body);
        for (i, m) in wmask.iter().enumerate().take(body.len()) {
            self.wmask[off + 2 + i] = *m;
        }
        match self.last_cap {
            Some(prev) => self.set_bytes(prev + 1, &[off as u8]),
            None => self.set_bytes(reg::CAP_PTR, &[off as u8]),
        }
        let st = self.u16(reg::STATUS) | STATUS_CAP_LIST;
        self.set_u16(reg::STATUS, st);
        self.last_cap = Some(off);
        self.next_cap = end;
        Some(off)
    }

    /// Offset of the first capability with `id`, walking the list (at most 48 entries, so a
    /// looped list cannot hang).
    pub fn find_capability(&self, id: u8) -> Option<usize> {
        if self.u16(reg::STATUS) & STATUS_CAP_LIST == 0 {
            return None;
        }
        let mut p = usize::from(self.data[reg::CAP_PTR] & 0xFC);
        for _ in 0..48 {
            if p < 0x40 {
                return None;
            }
            if self.data[p] == id {
                return Some(p);
            }
            p = usize::from(self.data[p + 1] & 0xFC);
        }
        None
    }

    /// A byte.
    pub fn u8(&self, off: usize) -> u8 {
        self.data.get(off).copied().unwrap_or(0xFF)
    }

    /// A little-endian 16-bit value.
    pub fn u16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.u8(off), self.u8(off + 1)])
    }

    /// A little-endian 32-bit value.
    pub fn u32(&self, off: usize) -> u32 {
        u32::from_le_bytes([self.u8(off), self.u8(off + 1), self.u8(off + 2), self.u8(off + 3)])
    }

    /// A guest read of `data.len()` bytes at `off`.
    pub fn read(&self, off: usize, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.u8(off + i);
        }
    }

    /// A guest write: applies the write and write-one-to-clear masks, then reports BAR windows that
    /// moved.
    pub fn write(&mut self, off: usize, data: &[u8]) -> Vec<BarChange> {
        for (i, v) in data.iter().enumerate() {
            let o = off + i;
            if o >= 256 {
                break;
            }
            let m = self.wmask[o];
            let mut n = (self.data[o] & !m) | (v & m);
            n &= !(v & self.w1c[o]);
            self.data[o] = n;
        }
        self.update_windows()
    }

    /// Recomputes the BAR windows and reports the ones that changed.
    pub fn update_windows(&mut self) -> Vec<BarChange> {
        let mut out = Vec::new();
        for i in 0..6 {
            let Some(def) = self.bars[i] else { continue };
            let new = self.bar_window(i);
            if new != self.mapped[i] {
                out.push(BarChange {
                    window: i as u8,
                    kind: def.kind,
                    size: def.size,
                    old: self.mapped[i],
                    new,
                });
                self.mapped[i] = new;
            }
        }
        if let Some(rom) = &self.rom {
            let new = self.rom_window();
            if new != self.rom_mapped {
                out.push(BarChange {
                    window: ROM_WINDOW,
                    kind: BarKind::Mem32,
                    size: rom.size,
                    old: self.rom_mapped,
                    new,
                });
                self.rom_mapped = new;
            }
        } else if let Some(old) = self.rom_mapped.take() {
            // The ROM went away while it was decoded: its window goes too.
            out.push(BarChange {
                window: ROM_WINDOW,
                kind: BarKind::Mem32,
                size: 0,
                old: Some(old),
                new: None,
            });
        }
        out
    }

    /// Back to the power-on contents; reports the windows that stop being decoded.
    pub fn reset(&mut self) -> Vec<BarChange> {
        self.data = self.initial;
        self.update_windows()
    }

    /// Writes the contents and decode state.
    pub fn save(&self, w: &mut SnapshotWriter) {
        w.bytes(&self.data);
    }

    /// Restores [`ConfigSpace::save`]; reports the windows that moved.
    pub fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Vec<BarChange>, SnapshotError> {
        let b = r.bytes()?;
        if b.len() != 256 {
            return Err(SnapshotError::Invalid("pci config space size".into()));
        }
        self.data.copy_from_slice(b);
        Ok(self.update_windows())
    }
}
