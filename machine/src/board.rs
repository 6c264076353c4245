//! The board: guest RAM, the physical address map, the port I/O space, the devices and the interrupt
//! wiring. It implements [`cpu::CpuBus`], so the CPU reaches devices only through it.

use crate::clock::Clock;
use chipset::{DualPic, IoApic, LocalApic};
use cpu::CpuBus;
use mmu::{
    AddressMap, Device, DeviceCtx, DeviceId, GuestRam, IrqLevels, MachineRequests, RegionKind, VirtTime,
};
use std::ptr::NonNull;

/// Device id standing for the I/O APIC in the address map.
pub const IOAPIC_DEV: DeviceId = DeviceId(u32::MAX - 1);
/// Device id standing for the local APIC in the address map.
pub const LAPIC_DEV: DeviceId = DeviceId(u32::MAX - 2);
/// The local APIC's TSC and timer input clock: 1 GHz, the TSC's rate (one tick per virtual ns).
const APIC_HZ: u64 = 1_000_000_000;

fn new_lapic() -> LocalApic {
    let mut l = LocalApic::new(0, APIC_HZ, APIC_HZ);
    // The BSP's LINT0 starts in ExtINT mode (virtual-wire), as QEMU does, so that a guest that never
    // touches the APIC gets the 8259's interrupts.
    l.write_reg(VirtTime::ZERO, 0x35, 0x700);
    l
}

/// Who answers a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PortOwner {
    /// Nobody: reads all ones, writes dropped.
    None,
    /// The PIC pair (a typed device, since the CPU also acknowledges interrupts through it).
    Pic,
    /// A device in the table.
    Dev(u32),
}

#[derive(Clone, Copy, Debug)]
struct PortRange {
    owner: PortOwner,
    start: u16,
    offset_base: u16,
}

/// The board.
pub struct Board {
    /// Guest RAM.
    pub ram: GuestRam,
    /// Physical address map.
    pub map: AddressMap,
    /// Devices on the ISA/PCI buses (indexed by `DeviceId`).
    pub devices: Vec<Box<dyn Device>>,
    /// The 8259A pair.
    pub pic: DualPic,
    /// The I/O APIC (MMIO at 0xFEC00000).
    pub ioapic: IoApic,
    /// CPU 0's local APIC (MMIO at 0xFEE00000, x2APIC MSRs).
    pub lapic: LocalApic,
    /// Interrupt line levels.
    pub irq: IrqLevels,
    /// Requests from devices (reset, exit, A20...).
    pub requests: MachineRequests,
    /// The virtual clock.
    pub clock: Clock,
    /// The CPU's instruction count at the last sync (for device time).
    pub icount: u64,
    /// An NMI taken from the local APIC, waiting for the CPU.
    nmi_latched: bool,
    ports: Box<[u16]>,
    port_ranges: Vec<PortRange>,
}

impl Board {
    /// A board with `ram` and an empty map.
    pub fn new(ram: GuestRam, map: AddressMap, clock: Clock) -> Board {
        Board {
            ram,
            map,
            devices: Vec::new(),
            pic: DualPic::new(),
            ioapic: IoApic::new(0),
            lapic: new_lapic(),
            irq: IrqLevels::default(),
            requests: MachineRequests::default(),
            clock,
            icount: 0,
            nmi_latched: false,
            ports: vec![0u16; 65536].into_boxed_slice(),
            port_ranges: vec![PortRange { owner: PortOwner::None, start: 0, offset_base: 0 }],
        }
    }

    /// Adds a device and returns its id.
    pub fn add_device(&mut self, d: Box<dyn Device>) -> DeviceId {
        self.devices.push(d);
        DeviceId(self.devices.len() as u32 - 1)
    }

    fn claim_ports(&mut self, start: u16, len: u16, owner: PortOwner, offset_base: u16) {
        self.port_ranges.push(PortRange { owner, start, offset_base });
        let idx = (self.port_ranges.len() - 1) as u16;
        for p in start as usize..(start as usize + len as usize).min(65536) {
            self.ports[p] = idx;
        }
    }

    /// Routes ports `start..start+len` to device `id`, which sees `port - start + offset_base`.
    pub fn map_ports(&mut self, id: DeviceId, start: u16, len: u16, offset_base: u16) {
        self.claim_ports(start, len, PortOwner::Dev(id.0), offset_base);
    }

    /// Routes the PIC's ports (0x20-0x21, 0xA0-0xA1, ELCR 0x4D0-0x4D1) to the PIC pair.
    pub fn map_pic_ports(&mut self) {
        // Offsets are `port - 0x20` (see the PIC's module docs).
        for (start, len) in [(0x20u16, 2u16), (0xa0, 2), (0x4d0, 2)] {
            self.claim_ports(start, len, PortOwner::Pic, start - 0x20);
        }
    }

    /// Maps MMIO `start..start+size` to device `id`.
    pub fn map_mmio(&mut self, id: DeviceId, start: u64, size: u64) -> Result<(), mmu::map::OverlapError> {
        self.map.add(start, size, RegionKind::Mmio { device: id })
    }

    /// Current virtual time.
    pub fn now(&self) -> VirtTime {
        self.clock.now(self.icount)
    }

    /// Propagates changed interrupt lines to the interrupt controllers.
    fn propagate_irqs(&mut self) {
        if self.irq.changed != 0 || self.irq.rising != 0 {
            self.pic.set_irq_levels(&self.irq);
            // ISA IRQ0 (the PIT) is wired to I/O APIC pin 2, as on every PC with an I/O APIC (and as the
            // MADT's interrupt source override says); the other ISA lines map 1:1.
            let mut io = self.irq;
            for f in [&mut io.level, &mut io.rising, &mut io.changed] {
                let irq0 = *f & 1;
                *f = (*f & !0b101) | (irq0 << 2);
            }
            self.ioapic.set_irq_levels(&io);
            self.irq.changed = 0;
            self.irq.rising = 0;
        }
        // I/O APIC messages to the local APIC, and level-triggered EOIs back (which may re-deliver).
        for _ in 0..4 {
            let msgs = self.ioapic.take_messages();
            for m in &msgs {
                match m.delivery_mode {
                    0 | 1 => self.lapic.accept(m.vector, m.trigger_level),
                    4 => self.lapic.accept_nmi(),
                    // ExtINT through the I/O APIC, SMI, INIT: not used by this board's guests.
                    _ => {}
                }
            }
            let eois = self.lapic.take_eois();
            for v in &eois {
                self.ioapic.eoi(*v);
            }
            if eois.is_empty() && !self.ioapic.has_messages() {
                break;
            }
        }
        let intr = self.pic.has_interrupt();
        self.lapic.set_lint(0, intr);
    }

    fn apic_mmio(&mut self, dev: DeviceId, off: u64, data: &mut [u8], write: bool) {
        let now = self.now();
        let Board { ioapic, lapic, irq, requests, .. } = self;
        let mut ctx = DeviceCtx { now, irq, requests };
        let d: &mut dyn Device = if dev == IOAPIC_DEV { ioapic } else { lapic };
        if write {
            d.mmio_write(&mut ctx, off, data);
        } else {
            d.mmio_read(&mut ctx, off, data);
        }
        self.propagate_irqs();
    }

    fn with_device<R>(
        &mut self,
        idx: u32,
        f: impl FnOnce(&mut dyn Device, &mut DeviceCtx<'_>) -> R,
    ) -> Option<R> {
        let now = self.now();
        let Board { devices, irq, requests, .. } = self;
        let dev = devices.get_mut(idx as usize)?;
        let mut ctx = DeviceCtx { now, irq, requests };
        let r = f(dev.as_mut(), &mut ctx);
        self.propagate_irqs();
        Some(r)
    }

    /// Calls `advance` on every device whose deadline has passed, and propagates interrupts.
    pub fn advance_devices(&mut self) {
        let now = self.now();
        let Board { devices, irq, requests, pic, .. } = self;
        for d in devices.iter_mut() {
            if d.next_deadline().is_some_and(|t| t <= now) {
                let mut ctx = DeviceCtx { now, irq, requests };
                d.advance(&mut ctx);
            }
        }
        let mut ctx = DeviceCtx { now, irq, requests };
        if pic.next_deadline().is_some_and(|t| t <= now) {
            pic.advance(&mut ctx);
        }
        if self.lapic.next_deadline().is_some_and(|t| t <= now) {
            let Board { lapic, irq, requests, .. } = self;
            let mut ctx = DeviceCtx { now, irq, requests };
            lapic.advance(&mut ctx);
        }
        self.propagate_irqs();
    }

    /// The earliest device deadline.
    pub fn next_deadline(&self) -> VirtTime {
        self.devices
            .iter()
            .filter_map(|d| d.next_deadline())
            .chain(self.lapic.next_deadline())
            .min()
            .unwrap_or(VirtTime::NEVER)
    }

    /// Host input for device `id` (console bytes), through the machine's one input port.
    pub fn host_input(&mut self, id: DeviceId, data: &[u8]) {
        self.with_device(id.0, |d, ctx| d.host_input(ctx, data));
    }

    /// Resets every device.
    pub fn reset_devices(&mut self) {
        for d in self.devices.iter_mut() {
            d.reset();
        }
        self.pic.reset();
        self.ioapic.reset();
        self.lapic = new_lapic();
        self.irq = IrqLevels::default();
    }

    fn port_io(&mut self, port: u16, data: &mut [u8], write: bool) {
        let r = self.port_ranges[self.ports[port as usize] as usize];
        let off = port.wrapping_sub(r.start).wrapping_add(r.offset_base);
        match r.owner {
            PortOwner::None => {
                if !write {
                    data.fill(0xff);
                }
            }
            PortOwner::Pic => {
                let now = self.now();
                let Board { pic, irq, requests, .. } = self;
                let mut ctx = DeviceCtx { now, irq, requests };
                // The PIC decodes bytes: split wider accesses.
                for (i, b) in data.iter_mut().enumerate() {
                    let o = off.wrapping_add(i as u16);
                    if write {
                        pic.pio_write(&mut ctx, o, std::slice::from_ref(b));
                    } else {
                        pic.pio_read(&mut ctx, o, std::slice::from_mut(b));
                    }
                }
                self.propagate_irqs();
            }
            PortOwner::Dev(i) => {
                self.with_device(i, |d, ctx| {
                    let w = d.pio_access_width().max(1);
                    for (k, chunk) in data.chunks_mut(w).enumerate() {
                        let o = off.wrapping_add((k * w) as u16);
                        if write {
                            d.pio_write(ctx, o, chunk);
                        } else {
                            d.pio_read(ctx, o, chunk);
                        }
                    }
                });
            }
        }
    }

    fn phys_access(&mut self, addr: u64, data: &mut [u8], write: bool) {
        let Some(region) = self.map.lookup(addr).copied() else {
            if !write {
                data.fill(0xff);
            }
            return;
        };
        let off = addr - region.start;
        // Accesses never cross a page, but may cross a region end: clip to the region.
        let avail = (region.size - off).min(data.len() as u64) as usize;
        let (head, tail) = data.split_at_mut(avail);
        match region.kind {
            RegionKind::Ram { offset } => {
                if write {
                    self.ram.write(offset + off, head);
                } else {
                    self.ram.read(offset + off, head);
                }
            }
            RegionKind::Rom { rom, offset } => {
                if !write {
                    match self.map.rom_image(rom) {
                        Some(img) => {
                            let s = (offset + off) as usize;
                            for (i, b) in head.iter_mut().enumerate() {
                                *b = *img.get(s + i).unwrap_or(&0xff);
                            }
                        }
                        None => head.fill(0xff),
                    }
                }
            }
            RegionKind::Mmio { device } if device == IOAPIC_DEV || device == LAPIC_DEV => {
                self.apic_mmio(device, off, head, write);
            }
            RegionKind::Mmio { device } => {
                self.with_device(device.0, |d, ctx| {
                    if write {
                        d.mmio_write(ctx, off, head);
                    } else {
                        d.mmio_read(ctx, off, head);
                    }
                });
            }
        }
        if !tail.is_empty() {
            self.phys_access(addr + avail as u64, tail, write);
        }
    }
}

impl CpuBus for Board {
    fn ram_page(&mut self, page: u64, write: bool) -> Option<NonNull<u8>> {
        let r = self.map.lookup(page)?;
        if page + 0x1000 > r.end() && r.end() != u64::MAX {
            return None;
        }
        match r.kind {
            RegionKind::Ram { offset } => {
                let o = offset + (page - r.start);
                if o + 0x1000 > self.ram.len() {
                    return None;
                }
                // SAFETY: `o + 4096 <= ram.len()` was just checked, so the pointer stays inside the
                // mapping, which lives as long as the board.
                NonNull::new(unsafe { self.ram.as_ptr().add(o as usize) })
            }
            RegionKind::Rom { rom, offset } if !write => {
                let img = self.map.rom_image(rom)?;
                let o = (offset + (page - r.start)) as usize;
                if o + 0x1000 > img.len() {
                    return None;
                }
                // The CPU only reads through read-TLB entries; ROM pages never get write entries.
                NonNull::new(img[o..].as_ptr() as *mut u8)
            }
            _ => None,
        }
    }

    fn read_phys(&mut self, addr: u64, data: &mut [u8]) {
        self.phys_access(addr, data, false);
    }

    fn write_phys(&mut self, addr: u64, data: &[u8]) {
        let mut buf = [0u8; 16];
        let n = data.len().min(16);
        buf[..n].copy_from_slice(&data[..n]);
        self.phys_access(addr, &mut buf[..n], true);
    }

    fn io_in(&mut self, port: u16, size: u8) -> u32 {
        let mut b = [0u8; 4];
        let n = (size as usize).clamp(1, 4);
        self.port_io(port, &mut b[..n], false);
        u32::from_le_bytes(b)
    }

    fn io_out(&mut self, port: u16, size: u8, value: u32) {
        let mut b = value.to_le_bytes();
        let n = (size as usize).clamp(1, 4);
        self.port_io(port, &mut b[..n], true);
    }

    fn interrupt_pending(&mut self) -> bool {
        (self.lapic.accepts_pic_interrupts() && self.pic.has_interrupt())
            || self.lapic.has_interrupt().is_some()
    }

    fn acknowledge_interrupt(&mut self) -> Option<u8> {
        let v = if self.lapic.accepts_pic_interrupts() && self.pic.has_interrupt() {
            self.pic.acknowledge()
        } else if self.lapic.has_interrupt().is_some() {
            self.lapic.acknowledge()
        } else {
            return None;
        };
        self.propagate_irqs();
        Some(v)
    }

    fn nmi_pending(&mut self) -> bool {
        if self.lapic.take_nmi() {
            self.nmi_latched = true;
        }
        self.nmi_latched
    }

    fn take_nmi(&mut self) {
        self.nmi_latched = false;
    }

    fn read_msr(&mut self, msr: u32) -> Option<u64> {
        let now = self.now();
        match msr {
            0x6e0 => Some(self.lapic.tsc_deadline()),
            0x800..=0x8ff => self.lapic.read_reg(now, msr - 0x800),
            _ => None,
        }
    }

    fn write_msr(&mut self, msr: u32, value: u64) -> bool {
        let now = self.now();
        let ok = match msr {
            0x1b => {
                self.lapic.set_hw_enabled(value & (1 << 11) != 0);
                self.lapic.set_x2apic_mode(value & (1 << 10) != 0);
                true
            }
            0x6e0 => {
                self.lapic.set_tsc_deadline(value);
                self.requests.reschedule = true;
                true
            }
            0x800..=0x8ff => self.lapic.write_reg(now, msr - 0x800, value),
            _ => false,
        };
        self.propagate_irqs();
        ok
    }

    fn tsc(&mut self, icount: u64) -> u64 {
        self.clock.tsc(icount)
    }

    fn sync(&mut self, icount: u64) {
        self.icount = icount;
    }

    fn stop_requested(&self) -> bool {
        self.requests.reset
            || self.requests.exit.is_some()
            || self.requests.reschedule
            || self.requests.a20.is_some()
            || self.requests.flush_tlb
    }
}
