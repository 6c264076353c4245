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
//! # Interrupt routing
//!
//! A PCI device drives INTx through GSI `16 + pirq` on `ctx.irq`, where `pirq` is given by
//! [`pirq_of`] (the i440FX/PIIX slot swizzle). The I/O APIC sees PIRQA-D on pins 16-19 directly; the
//! board also feeds each PIRQ to the 8259 input selected by the PIIX3's PIRQRC registers 0x60-0x63
//! ([`Piix3Isa::pirq_route`]).

use mmu::{Device, DeviceCtx, SnapshotError, SnapshotReader, SnapshotWriter, VirtTime};

use crate::fw_cfg::DmaMemory;
use crate::msi::MsiMessage;
use crate::{le_value, put_le};

/// Window index of the first chipset-specific window (after the six BARs).
pub const FIRST_CHIPSET_WINDOW: u8 = 6;

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
fn window_base(kind: BarKind, base: u64, size: u64, enabled: bool) -> Option<u64> {
    let limit: u64 = match kind {
        BarKind::Io => 1 << 16,
        BarKind::Mem32 => 1 << 32,
        BarKind::Mem64 => 1 << 52,
    };
    (enabled && base != 0 && base.checked_add(size).is_some_and(|e| e <= limit)).then_some(base)
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

/// One function on bus 0: a configuration space plus whatever chipset registers it decodes.
pub trait PciFunction {
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

    /// Writes the function's state.
    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        self.config().save(w);
    }

    /// Restores [`PciFunction::save`]; returns the windows that moved.
    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Vec<BarChange>, SnapshotError> {
        r.tag(self.name())?;
        self.config_mut().restore(r)
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
}

/// Bus 0 and the configuration mechanism #1 ports.
pub struct PciBus {
    /// CONFIG_ADDRESS.
    address: u32,
    functions: Vec<Option<Box<dyn PciFunction>>>,
    events: Vec<PciBarEvent>,
}

impl Default for PciBus {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PciBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<(u8, &str)> = self
            .functions
            .iter()
            .enumerate()
            .filter_map(|(i, f)| Some((i as u8, f.as_ref()?.name())))
            .collect();
        f.debug_struct("PciBus").field("address", &self.address).field("functions", &names).finish()
    }
}

impl PciBus {
    /// An empty bus.
    pub fn new() -> Self {
        PciBus { address: 0, functions: (0..256).map(|_| None).collect(), events: Vec::new() }
    }

    /// Puts `f` at `devfn` (device << 3 | function), replacing what was there.
    pub fn add(&mut self, devfn: u8, f: Box<dyn PciFunction>) {
        self.functions[usize::from(devfn)] = Some(f);
    }

    /// The function at `devfn`.
    pub fn function(&self, devfn: u8) -> Option<&dyn PciFunction> {
        self.functions[usize::from(devfn)].as_deref()
    }

    /// The function at `devfn`, mutable.
    pub fn function_mut(&mut self, devfn: u8) -> Option<&mut (dyn PciFunction + 'static)> {
        self.functions[usize::from(devfn)].as_deref_mut()
    }

    /// The devfns with a function, in order.
    pub fn devfns(&self) -> impl Iterator<Item = u8> + '_ {
        self.functions.iter().enumerate().filter(|(_, f)| f.is_some()).map(|(i, _)| i as u8)
    }

    /// Calls `f` with every function on the bus, in devfn order.
    pub fn for_each_function(&mut self, mut f: impl FnMut(u8, &mut dyn PciFunction)) {
        for (i, func) in self.functions.iter_mut().enumerate() {
            if let Some(func) = func {
                f(i as u8, func.as_mut());
            }
        }
    }

    /// Calls `f` with every function on the bus, in devfn order, read-only.
    pub fn for_each_function_ref(&self, mut f: impl FnMut(u8, &dyn PciFunction)) {
        for (i, func) in self.functions.iter().enumerate() {
            if let Some(func) = func {
                f(i as u8, func.as_ref());
            }
        }
    }

    /// Host-side configuration read (for the board and firmware set-up); all ones if absent.
    pub fn read_config(&mut self, devfn: u8, off: usize, data: &mut [u8]) {
        match self.functions[usize::from(devfn)].as_mut() {
            Some(f) => f.config_read(off, data),
            None => data.fill(0xFF),
        }
    }

    /// Host-side configuration write; queues the resulting window changes like a guest write.
    pub fn write_config(&mut self, devfn: u8, off: usize, data: &[u8]) {
        if let Some(f) = self.functions[usize::from(devfn)].as_mut() {
            let ch = f.config_write(off, data);
            self.events.extend(ch.into_iter().map(|change| PciBarEvent { devfn, change }));
        }
    }

    /// Window changes since the last call, in order.
    pub fn take_events(&mut self) -> Vec<PciBarEvent> {
        std::mem::take(&mut self.events)
    }

    /// Whether window changes are waiting.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The configuration register the current CONFIG_ADDRESS selects: (devfn, dword offset), if the
    /// enable bit is set and bus 0 is selected.
    fn selected(&self) -> Option<(u8, usize)> {
        let a = self.address;
        if a & 0x8000_0000 == 0 || (a >> 16) & 0xFF != 0 {
            return None;
        }
        Some(((a >> 8) as u8, (a & 0xFC) as usize))
    }
}

impl Device for PciBus {
    fn name(&self) -> &str {
        "pci-bus"
    }

    fn pio_read(&mut self, _ctx: &mut DeviceCtx<'_>, offset: u16, data: &mut [u8]) {
        data.fill(0xFF);
        match offset {
            0 if data.len() == 4 => put_le(data, u64::from(self.address)),
            4..=7 => {
                let Some((devfn, reg)) = self.selected() else { return };
                let o = usize::from(offset - 4);
                let n = data.len().min(4 - o);
                self.read_config(devfn, reg + o, &mut data[..n]);
            }
            _ => {}
        }
    }

    fn pio_write(&mut self, _ctx: &mut DeviceCtx<'_>, offset: u16, data: &[u8]) {
        match offset {
            // Bits 1:0 and 30:24 are reserved and read as zero.
            0 if data.len() == 4 => self.address = (le_value(data) as u32) & 0x80FF_FFFC,
            4..=7 => {
                let Some((devfn, reg)) = self.selected() else { return };
                let o = usize::from(offset - 4);
                let n = data.len().min(4 - o);
                self.write_config(devfn, reg + o, &data[..n]);
            }
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.address = 0;
        for (devfn, f) in self.functions.iter_mut().enumerate() {
            if let Some(f) = f {
                let ch = f.reset();
                self.events.extend(ch.into_iter().map(|change| PciBarEvent { devfn: devfn as u8, change }));
            }
        }
    }

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        w.u32(self.address);
        for f in self.functions.iter().flatten() {
            f.save(w);
        }
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<(), SnapshotError> {
        r.tag("pci-bus")?;
        self.address = r.u32()? & 0x80FF_FFFC;
        for (devfn, f) in self.functions.iter_mut().enumerate() {
            if let Some(f) = f {
                let ch = f.restore(r)?;
                self.events.extend(ch.into_iter().map(|change| PciBarEvent { devfn: devfn as u8, change }));
            }
        }
        Ok(())
    }
}

/// The i440FX PCI and memory controller (PMC), host bridge 00:00.0 (8086:1237).
///
/// Registers 0x50-0x7F (PMCCFG, DRAM control and timing, PAM0-6 at 0x59-0x5F, DRB0-7, SMRAM at 0x72)
/// accept writes and read back. The PAM attributes are stored only: the BIOS area is read-only
/// firmware on this board and is not shadowed into RAM.
#[derive(Clone, Debug)]
pub struct I440fx {
    cfg: ConfigSpace,
}

impl Default for I440fx {
    fn default() -> Self {
        Self::new()
    }
}

impl I440fx {
    /// The host bridge in its power-on state.
    pub fn new() -> Self {
        let mut cfg = ConfigSpace::new(0x8086, 0x1237, 0x06_00_00, 0x02, 0x00);
        cfg.set_u16(reg::COMMAND, CMD_MEM | CMD_MASTER);
        cfg.set_u16(reg::STATUS, 0x0280);
        cfg.set_writable(0x50..0x80);
        cfg.set_bytes(0x50, &[0x80]); // PMCCFG
        cfg.set_bytes(0x72, &[0x02]); // SMRAM: C_BASE_SEG = 010
        I440fx { cfg }
    }
}

impl PciFunction for I440fx {
    fn name(&self) -> &str {
        "i440fx"
    }
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }
}

/// The PIIX3 PCI-to-ISA bridge, 00:01.0 (8086:7000), multi-function.
///
/// PIRQRC[A:D] at 0x60-0x63: bit 7 set disables the route, bits 3:0 select the ISA IRQ (3-7, 9-12, 14,
/// 15 are valid; others are reserved and route nowhere). Power-on value 0x80 each. Also read/write:
/// IORT 0x4C, XBCS 0x4E-0x4F, TOM 0x69, MSTAT 0x6A-0x6B, MBIRQ 0x70-0x71, MBDMA 0x76-0x77, APICBASE
/// 0x80, DLC 0x82, SMI/clock registers 0xA0-0xAF.
#[derive(Clone, Debug)]
pub struct Piix3Isa {
    cfg: ConfigSpace,
}

impl Default for Piix3Isa {
    fn default() -> Self {
        Self::new()
    }
}

/// Offset of PIRQRC[A].
pub const PIRQRC: usize = 0x60;

impl Piix3Isa {
    /// The bridge in its power-on state.
    pub fn new() -> Self {
        let mut cfg = ConfigSpace::new(0x8086, 0x7000, 0x06_01_00, 0x00, 0x80);
        cfg.set_u16(reg::COMMAND, 0x0007);
        cfg.set_u16(reg::STATUS, 0x0200);
        for r in
            [0x4C..0x50, 0x60..0x64, 0x69..0x6C, 0x70..0x72, 0x76..0x78, 0x80..0x81, 0x82..0x83, 0xA0..0xB0]
        {
            cfg.set_writable(r);
        }
        cfg.set_bytes(0x4C, &[0x4D, 0x00, 0x03, 0x00]);
        cfg.set_bytes(PIRQRC, &[0x80; 4]);
        cfg.set_bytes(0x69, &[0x02]);
        cfg.set_bytes(0x70, &[0x80, 0x80]);
        cfg.set_bytes(0x76, &[0x0C, 0x0C]);
        Piix3Isa { cfg }
    }

    /// Decodes a PIRQRC value: the ISA IRQ it routes to, if enabled and valid.
    pub fn decode_route(v: u8) -> Option<u8> {
        let irq = v & 0x0F;
        (v & 0x80 == 0 && matches!(irq, 3..=7 | 9..=12 | 14 | 15)).then_some(irq)
    }

    /// The ISA IRQ PIRQ `n` (0 = A) is routed to.
    pub fn pirq_route(&self, n: usize) -> Option<u8> {
        Self::decode_route(self.cfg.u8(PIRQRC + n))
    }
}

impl PciFunction for Piix3Isa {
    fn name(&self) -> &str {
        "piix3-isa"
    }
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }
}

/// The PIIX3 IDE function, 00:01.1 (8086:7010), legacy mode only: the command/control blocks stay at
/// the ISA addresses; BAR4 is the 16-byte bus-master IDE I/O block, served by [`BusMasterIde`].
#[derive(Clone, Debug)]
pub struct Piix3Ide {
    cfg: ConfigSpace,
}

impl Default for Piix3Ide {
    fn default() -> Self {
        Self::new()
    }
}

impl Piix3Ide {
    /// The function in its power-on state (BAR4 at 0, I/O decode off).
    pub fn new() -> Self {
        let mut cfg = ConfigSpace::new(0x8086, 0x7010, 0x01_01_80, 0x00, 0x00);
        cfg.set_u16(reg::STATUS, 0x0280);
        cfg.add_bar(4, BarDef { kind: BarKind::Io, size: 16, prefetchable: false });
        cfg.set_writable(0x40..0x45); // IDETIM primary/secondary, SIDETIM
        Piix3Ide { cfg }
    }
}

impl PciFunction for Piix3Ide {
    fn name(&self) -> &str {
        "piix3-ide"
    }
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }
}

/// The bus-master IDE register block behind [`Piix3Ide`]'s BAR4 (offsets 0-15: per channel at +0/+8
/// the command byte (bits 0 and 3), status byte (bits 5-6 read/write, 1-2 write-one-to-clear) and the
/// descriptor table pointer dword (bits 31:2)). No drives are attached, so no transfer ever starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BusMasterIde {
    cmd: [u8; 2],
    status: [u8; 2],
    prd: [u32; 2],
}

impl BusMasterIde {
    /// The block in its power-on state.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Device for BusMasterIde {
    fn name(&self) -> &str {
        "piix3-bmide"
    }

    fn pio_read(&mut self, _ctx: &mut DeviceCtx<'_>, offset: u16, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let o = usize::from(offset) + i;
            let ch = (o >> 3) & 1;
            *b = match o & 7 {
                _ if o >= 16 => 0xFF,
                0 => self.cmd[ch],
                2 => self.status[ch],
                4..=7 => (self.prd[ch] >> (8 * (o & 3))) as u8,
                _ => 0,
            };
        }
    }

    fn pio_write(&mut self, _ctx: &mut DeviceCtx<'_>, offset: u16, data: &[u8]) {
        for (i, v) in data.iter().enumerate() {
            let o = usize::from(offset) + i;
            if o >= 16 {
                break;
            }
            let ch = (o >> 3) & 1;
            match o & 7 {
                0 => self.cmd[ch] = v & 0x09,
                2 => self.status[ch] = (self.status[ch] & !0x60 & !(v & 0x06)) | (v & 0x60),
                4..=7 => {
                    let sh = 8 * (o & 3);
                    let p = (self.prd[ch] & !(0xFF << sh)) | (u32::from(*v) << sh);
                    self.prd[ch] = p & !3;
                }
                _ => {}
            }
        }
    }

    fn reset(&mut self) {
        *self = Self::default();
    }

    fn save(&self, w: &mut SnapshotWriter) {
        w.tag(self.name());
        for ch in 0..2 {
            w.u8(self.cmd[ch]);
            w.u8(self.status[ch]);
            w.u32(self.prd[ch]);
        }
    }

    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<(), SnapshotError> {
        r.tag("piix3-bmide")?;
        for ch in 0..2 {
            self.cmd[ch] = r.u8()? & 0x09;
            self.status[ch] = r.u8()?;
            self.prd[ch] = r.u32()? & !3;
        }
        Ok(())
    }
}

/// Window index of the PIIX4 power-management I/O block (PMBA).
pub const PM_WINDOW: u8 = FIRST_CHIPSET_WINDOW;
/// Window index of the PIIX4 SMBus I/O block (SMBBA).
pub const SMB_WINDOW: u8 = FIRST_CHIPSET_WINDOW + 1;
/// Size of the PIIX4 PM I/O block.
pub const PM_IO_SIZE: u64 = 64;

/// The PIIX4 power-management function, 00:01.3 (8086:7113), as QEMU's `pc` machine has it next to the
/// PIIX3.
///
/// PMBA at 0x40 (bits 15:6 read/write, bit 0 reads 1) places the 64-byte PM I/O block, decoded when
/// PMREGMISC (0x80) bit 0 is set; SMBBA at 0x90 (bits 15:4, bit 0 reads 1) places the 16-byte SMBus block,
/// decoded when SMBHSTCFG (0xD2) bit 0 and the command register's I/O enable are set. Both report their
/// windows as [`PM_WINDOW`] and [`SMB_WINDOW`]. The PM block itself is [`crate::acpi::PmDevice`].
#[derive(Clone, Debug)]
pub struct Piix4Pm {
    cfg: ConfigSpace,
    pm_mapped: Option<u64>,
    smb_mapped: Option<u64>,
}

impl Default for Piix4Pm {
    fn default() -> Self {
        Self::new()
    }
}

impl Piix4Pm {
    /// The function in its power-on state (PMBA 0, decode off).
    pub fn new() -> Self {
        let mut cfg = ConfigSpace::new(0x8086, 0x7113, 0x06_80_00, 0x03, 0x00);
        cfg.set_u16(reg::STATUS, 0x0280);
        cfg.set_bytes(reg::INTERRUPT_PIN, &[1]);
        cfg.set_bytes(reg::INTERRUPT_LINE, &[9]);
        cfg.set_u32(0x40, 1);
        cfg.set_wmask(0x40, 0xC0);
        cfg.set_wmask(0x41, 0xFF);
        cfg.set_u32(0x90, 1);
        cfg.set_wmask(0x90, 0xF0);
        cfg.set_wmask(0x91, 0xFF);
        cfg.set_wmask(0x80, 0x01);
        cfg.set_wmask(0xD2, 0x0F);
        cfg.set_writable(0x44..0x4C); // CNTA, CNTB
        cfg.set_writable(0x4C..0x80); // GPICTL, DEVRESD..DEVRESJ, DEVACTA/B
        Piix4Pm { cfg, pm_mapped: None, smb_mapped: None }
    }

    /// Where the PM block is decoded.
    pub fn pm_base(&self) -> Option<u64> {
        let base = u64::from(self.cfg.u32(0x40) & 0xFFC0);
        window_base(BarKind::Io, base, PM_IO_SIZE, self.cfg.u8(0x80) & 1 != 0)
    }

    fn smb_base(&self) -> Option<u64> {
        let base = u64::from(self.cfg.u32(0x90) & 0xFFF0);
        let en = self.cfg.u8(0xD2) & 1 != 0 && self.cfg.u16(reg::COMMAND) & CMD_IO != 0;
        window_base(BarKind::Io, base, 16, en)
    }

    fn update(&mut self) -> Vec<BarChange> {
        let mut out = Vec::new();
        let pm = self.pm_base();
        if pm != self.pm_mapped {
            out.push(BarChange {
                window: PM_WINDOW,
                kind: BarKind::Io,
                size: PM_IO_SIZE,
                old: self.pm_mapped,
                new: pm,
            });
            self.pm_mapped = pm;
        }
        let smb = self.smb_base();
        if smb != self.smb_mapped {
            out.push(BarChange {
                window: SMB_WINDOW,
                kind: BarKind::Io,
                size: 16,
                old: self.smb_mapped,
                new: smb,
            });
            self.smb_mapped = smb;
        }
        out
    }
}

impl PciFunction for Piix4Pm {
    fn name(&self) -> &str {
        "piix4-pm"
    }
    fn config(&self) -> &ConfigSpace {
        &self.cfg
    }
    fn config_mut(&mut self) -> &mut ConfigSpace {
        &mut self.cfg
    }
    fn config_write(&mut self, off: usize, data: &[u8]) -> Vec<BarChange> {
        let mut ch = self.cfg.write(off, data);
        ch.extend(self.update());
        ch
    }
    fn reset(&mut self) -> Vec<BarChange> {
        let mut ch = self.cfg.reset();
        ch.extend(self.update());
        ch
    }
    fn restore(&mut self, r: &mut SnapshotReader<'_>) -> Result<Vec<BarChange>, SnapshotError> {
        r.tag("piix4-pm")?;
        let mut ch = self.cfg.restore(r)?;
        ch.extend(self.update());
        Ok(ch)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msi::MsiCapability;
    use crate::testutil::{Bus, hammer, roundtrip};

    fn pc_bus() -> PciBus {
        let mut b = PciBus::new();
        b.add(DEVFN_HOST, Box::new(I440fx::new()));
        b.add(DEVFN_ISA, Box::new(Piix3Isa::new()));
        b.add(DEVFN_IDE, Box::new(Piix3Ide::new()));
        b.add(DEVFN_PM, Box::new(Piix4Pm::new()));
        b
    }

    fn addr(devfn: u8, reg: u8) -> u32 {
        0x8000_0000 | (u32::from(devfn) << 8) | u32::from(reg)
    }

    fn rd(bus: &mut Bus, p: &mut PciBus, devfn: u8, reg: u8, size: usize) -> u32 {
        p.pio_write(&mut bus.ctx(0), 0, &addr(devfn, reg & 0xFC).to_le_bytes());
        let mut d = [0u8; 4];
        p.pio_read(&mut bus.ctx(0), 4 + u16::from(reg & 3), &mut d[..size]);
        u32::from_le_bytes(d)
    }

    fn wr(bus: &mut Bus, p: &mut PciBus, devfn: u8, reg: u8, size: usize, v: u32) {
        p.pio_write(&mut bus.ctx(0), 0, &addr(devfn, reg & 0xFC).to_le_bytes());
        p.pio_write(&mut bus.ctx(0), 4 + u16::from(reg & 3), &v.to_le_bytes()[..size]);
    }

    #[test]
    fn mechanism_1_address_register() {
        let mut b = Bus::new();
        let mut p = pc_bus();
        p.pio_write(&mut b.ctx(0), 0, &0xFFFF_FFFFu32.to_le_bytes());
        let mut d = [0u8; 4];
        p.pio_read(&mut b.ctx(0), 0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x80FF_FFFC, "reserved bits read zero");
        // Byte and word accesses do not reach CONFIG_ADDRESS.
        p.pio_write(&mut b.ctx(0), 0, &[0]);
        p.pio_write(&mut b.ctx(0), 2, &[0, 0]);
        p.pio_read(&mut b.ctx(0), 0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x80FF_FFFC);
        // Enable bit clear: data reads all ones.
        p.pio_write(&mut b.ctx(0), 0, &0u32.to_le_bytes());
        p.pio_read(&mut b.ctx(0), 4, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0xFFFF_FFFF);
    }

    #[test]
    fn enumerates_the_pc_functions() {
        let mut b = Bus::new();
        let mut p = pc_bus();
        assert_eq!(rd(&mut b, &mut p, DEVFN_HOST, 0, 4), 0x1237_8086);
        assert_eq!(rd(&mut b, &mut p, DEVFN_HOST, 0x08, 4), 0x0600_0002);
        assert_eq!(rd(&mut b, &mut p, DEVFN_ISA, 0, 4), 0x7000_8086);
        assert_eq!(rd(&mut b, &mut p, DEVFN_ISA, 0x0A, 2), 0x0601);
        assert_eq!(rd(&mut b, &mut p, DEVFN_ISA, 0x0E, 1), 0x80, "multi-function");
        assert_eq!(rd(&mut b, &mut p, DEVFN_IDE, 0, 4), 0x7010_8086);
        assert_eq!(rd(&mut b, &mut p, DEVFN_PM, 0, 4), 0x7113_8086);
        // Byte and word reads at every lane.
        assert_eq!(rd(&mut b, &mut p, DEVFN_HOST, 1, 1), 0x80);
        assert_eq!(rd(&mut b, &mut p, DEVFN_HOST, 2, 2), 0x1237);
        assert_eq!(rd(&mut b, &mut p, DEVFN_HOST, 3, 1), 0x12);
        // Absent device, other bus.
        assert_eq!(rd(&mut b, &mut p, 0x10, 0, 4), 0xFFFF_FFFF);
        p.pio_write(&mut b.ctx(0), 0, &0x8001_0000u32.to_le_bytes());
        let mut d = [0u8; 4];
        p.pio_read(&mut b.ctx(0), 4, &mut d);
        assert_eq!(d, [0xFF; 4]);
    }

    #[test]
    fn read_only_and_write_masked_registers() {
        let mut b = Bus::new();
        let mut p = pc_bus();
        wr(&mut b, &mut p, DEVFN_HOST, 0, 4, 0);
        assert_eq!(rd(&mut b, &mut p, DEVFN_HOST, 0, 4), 0x1237_8086, "IDs are read-only");
        wr(&mut b, &mut p, DEVFN_HOST, 0x59, 1, 0x33);
        wr(&mut b, &mut p, DEVFN_HOST, 0x5A, 2, 0x1133);
        assert_eq!(rd(&mut b, &mut p, DEVFN_HOST, 0x58, 4) >> 8, 0x11_3333, "PAM registers read back");
        wr(&mut b, &mut p, DEVFN_IDE, 0x04, 2, 0xFFFF);
        assert_eq!(rd(&mut b, &mut p, DEVFN_IDE, 0x04, 2), 0x0547, "command register mask");
        // Status: write one to clear the error bits, others read-only.
        p.functions[usize::from(DEVFN_IDE)].as_mut().unwrap().config_mut().set_u16(reg::STATUS, 0xF290);
        wr(&mut b, &mut p, DEVFN_IDE, 0x06, 2, 0x8000);
        assert_eq!(rd(&mut b, &mut p, DEVFN_IDE, 0x06, 2), 0x7290);
        wr(&mut b, &mut p, DEVFN_IDE, 0x3C, 1, 11);
        assert_eq!(rd(&mut b, &mut p, DEVFN_IDE, 0x3C, 1), 11);
    }

    #[test]
    fn io_bar_sizing_and_mapping_events() {
        let mut b = Bus::new();
        let mut p = pc_bus();
        assert_eq!(rd(&mut b, &mut p, DEVFN_IDE, 0x20, 4), 1, "BAR4: I/O, unassigned");
        wr(&mut b, &mut p, DEVFN_IDE, 0x20, 4, 0xFFFF_FFFF);
        assert_eq!(rd(&mut b, &mut p, DEVFN_IDE, 0x20, 4), 0xFFFF_FFF1, "16-byte I/O BAR");
        assert!(p.take_events().is_empty(), "decode is off");
        wr(&mut b, &mut p, DEVFN_IDE, 0x20, 4, 0xC000);
        wr(&mut b, &mut p, DEVFN_IDE, 0x04, 2, 1);
        let ev = p.take_events();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].devfn, DEVFN_IDE);
        assert_eq!(
            ev[0].change,
            BarChange { window: 4, kind: BarKind::Io, size: 16, old: None, new: Some(0xC000) }
        );
        wr(&mut b, &mut p, DEVFN_IDE, 0x20, 4, 0xC041);
        let ev = p.take_events();
        assert_eq!((ev[0].change.old, ev[0].change.new), (Some(0xC000), Some(0xC040)));
        wr(&mut b, &mut p, DEVFN_IDE, 0x04, 2, 0);
        let ev = p.take_events();
        assert_eq!((ev[0].change.old, ev[0].change.new), (Some(0xC040), None));
        // Reset unmaps.
        wr(&mut b, &mut p, DEVFN_IDE, 0x04, 2, 1);
        p.take_events();
        p.reset();
        let ev = p.take_events();
        assert_eq!((ev[0].change.old, ev[0].change.new), (Some(0xC040), None));
        assert_eq!(rd(&mut b, &mut p, DEVFN_IDE, 0x20, 4), 1);
    }

    struct TestDev {
        cfg: ConfigSpace,
    }
    impl PciFunction for TestDev {
        fn name(&self) -> &str {
            "test"
        }
        fn config(&self) -> &ConfigSpace {
            &self.cfg
        }
        fn config_mut(&mut self) -> &mut ConfigSpace {
            &mut self.cfg
        }
    }

    #[test]
    fn memory_bar_sizing_32_and_64_bit() {
        let mut cfg = ConfigSpace::new(0x1234, 0x5678, 0xFF_00_00, 0, 0);
        cfg.add_bar(0, BarDef { kind: BarKind::Mem32, size: 0x1000, prefetchable: false });
        cfg.add_bar(2, BarDef { kind: BarKind::Mem64, size: 0x2_0000_0000, prefetchable: true });
        cfg.add_bar(5, BarDef { kind: BarKind::Mem64, size: 0x1000, prefetchable: false }); // no room: ignored
        let msi = MsiCapability::add(&mut cfg, 2, true, false).unwrap();
        let mut p = PciBus::new();
        p.add(0x18, Box::new(TestDev { cfg }));
        let mut b = Bus::new();
        wr(&mut b, &mut p, 0x18, 0x10, 4, 0xFFFF_FFFF);
        assert_eq!(rd(&mut b, &mut p, 0x18, 0x10, 4), 0xFFFF_F000);
        wr(&mut b, &mut p, 0x18, 0x18, 4, 0xFFFF_FFFF);
        wr(&mut b, &mut p, 0x18, 0x1C, 4, 0xFFFF_FFFF);
        assert_eq!(rd(&mut b, &mut p, 0x18, 0x18, 4), 0x0000_000C, "64-bit prefetchable, 8 GiB");
        assert_eq!(rd(&mut b, &mut p, 0x18, 0x1C, 4), 0xFFFF_FFFE);
        assert_eq!(rd(&mut b, &mut p, 0x18, 0x24, 4), 0, "BAR5 not implemented");
        wr(&mut b, &mut p, 0x18, 0x10, 4, 0xFEB0_0000);
        wr(&mut b, &mut p, 0x18, 0x18, 4, 0);
        wr(&mut b, &mut p, 0x18, 0x1C, 4, 0x4);
        p.take_events();
        wr(&mut b, &mut p, 0x18, 0x04, 2, u32::from(CMD_MEM));
        let ev = p.take_events();
        assert_eq!(ev.len(), 2);
        assert_eq!((ev[0].change.window, ev[0].change.new), (0, Some(0xFEB0_0000)));
        assert_eq!(
            (ev[1].change.window, ev[1].change.kind, ev[1].change.new),
            (2, BarKind::Mem64, Some(0x4_0000_0000))
        );
        // Capability list: status bit, pointer, MSI structure.
        assert_eq!(rd(&mut b, &mut p, 0x18, 0x06, 2) & 0x10, 0x10);
        let cap = rd(&mut b, &mut p, 0x18, 0x34, 1) as u8;
        assert_eq!(usize::from(cap), msi.offset);
        assert_eq!(rd(&mut b, &mut p, 0x18, cap, 4) & 0xFFFF_00FF, 0x0084_0005, "MSI, 64-bit, 4 vectors");
        assert_eq!(p.function(0x18).unwrap().config().find_capability(5), Some(msi.offset));
        wr(&mut b, &mut p, 0x18, cap + 4, 4, 0xFEE0_0003);
        wr(&mut b, &mut p, 0x18, cap + 12, 2, 0x4041);
        assert_eq!(msi.message(p.function(0x18).unwrap().config(), 0), None, "disabled");
        wr(&mut b, &mut p, 0x18, cap + 2, 2, 0x0021);
        assert_eq!(
            rd(&mut b, &mut p, 0x18, cap + 2, 2),
            0x00A5,
            "MME=2, enable; MMC and 64-bit bits read-only"
        );
        assert_eq!(
            msi.message(p.function(0x18).unwrap().config(), 3),
            Some(MsiMessage { address: 0xFEE0_0000, data: 0x4043 })
        );
    }

    #[test]
    fn pirq_routing_registers() {
        let mut b = Bus::new();
        let mut p = pc_bus();
        assert_eq!(rd(&mut b, &mut p, DEVFN_ISA, 0x60, 4), 0x8080_8080);
        wr(&mut b, &mut p, DEVFN_ISA, 0x60, 4, 0x800B_0A0B);
        assert_eq!(rd(&mut b, &mut p, DEVFN_ISA, 0x60, 4), 0x800B_0A0B);
        assert_eq!(Piix3Isa::decode_route(0x0B), Some(11));
        assert_eq!(Piix3Isa::decode_route(0x80 | 0x0B), None);
        assert_eq!(Piix3Isa::decode_route(0x08), None, "IRQ 8 is reserved");
        assert_eq!(Piix3Isa::decode_route(0x02), None);
        assert_eq!(pirq_of(1, 1), 0, "slot 1 INTA# -> PIRQA");
        assert_eq!(pirq_of(2, 1), 1);
        assert_eq!(pirq_of(3, 2), 3);
        assert_eq!(pirq_of(0, 1), 3);
    }

    #[test]
    fn piix4_pm_base_window() {
        let mut b = Bus::new();
        let mut p = pc_bus();
        assert_eq!(rd(&mut b, &mut p, DEVFN_PM, 0x40, 4), 1);
        wr(&mut b, &mut p, DEVFN_PM, 0x40, 4, 0x0601);
        assert_eq!(rd(&mut b, &mut p, DEVFN_PM, 0x40, 4), 0x0601);
        assert!(p.take_events().is_empty());
        wr(&mut b, &mut p, DEVFN_PM, 0x80, 1, 1);
        let ev = p.take_events();
        assert_eq!(
            ev[0].change,
            BarChange { window: PM_WINDOW, kind: BarKind::Io, size: 64, old: None, new: Some(0x600) }
        );
        wr(&mut b, &mut p, DEVFN_PM, 0x40, 4, 0xB001);
        let ev = p.take_events();
        assert_eq!((ev[0].change.old, ev[0].change.new), (Some(0x600), Some(0xB000)));
        wr(&mut b, &mut p, DEVFN_PM, 0x90, 4, 0xB101);
        wr(&mut b, &mut p, DEVFN_PM, 0xD2, 1, 1);
        assert!(p.take_events().is_empty(), "SMBus also needs the I/O enable");
        wr(&mut b, &mut p, DEVFN_PM, 0x04, 2, 1);
        let ev = p.take_events();
        assert_eq!((ev[0].change.window, ev[0].change.new), (SMB_WINDOW, Some(0xB100)));
    }

    #[test]
    fn bus_master_ide_registers() {
        let mut b = Bus::new();
        let mut d = BusMasterIde::new();
        d.pio_write(&mut b.ctx(0), 4, &0x1234_5677u32.to_le_bytes());
        let mut v = [0u8; 4];
        d.pio_read(&mut b.ctx(0), 4, &mut v);
        assert_eq!(u32::from_le_bytes(v), 0x1234_5674);
        b.wr(&mut d, 0, 8, 0xFF);
        assert_eq!(b.rd(&mut d, 0, 8), 0x09);
        b.wr(&mut d, 0, 0xA, 0x66);
        assert_eq!(b.rd(&mut d, 0, 0xA), 0x60);
        let mut fresh = BusMasterIde::new();
        roundtrip(&d, &mut fresh);
        assert_eq!(fresh, d);
        hammer(&mut d, &[0, 2, 4, 8, 10, 12], false, 7);
    }

    #[test]
    fn snapshot_restore_and_hostile_input() {
        let mut b = Bus::new();
        let mut p = pc_bus();
        wr(&mut b, &mut p, DEVFN_IDE, 0x20, 4, 0xC000);
        wr(&mut b, &mut p, DEVFN_IDE, 0x04, 2, 1);
        wr(&mut b, &mut p, DEVFN_ISA, 0x60, 1, 0x0A);
        p.take_events();
        let mut fresh = pc_bus();
        roundtrip(&p, &mut fresh);
        assert_eq!(rd(&mut b, &mut fresh, DEVFN_ISA, 0x60, 1), 0x0A);
        assert!(fresh.take_events().iter().any(|e| e.change.new == Some(0xC000)), "restore re-maps windows");
        hammer(&mut p, &[0, 4, 5, 6, 7], false, 3);
    }
}
